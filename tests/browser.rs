//! The status page in a real headless browser: Chromium driven through
//! ChromeDriver (Debian's `chromium` and `chromium-driver` packages).

mod common;

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use durable_status::http::HttpApi;
use durable_status::{CustomStatus, NewInstance, RuntimeStatus};
use serde_json::{json, Value};

const CHROMEDRIVER_VARIABLE: &str = "DURABLE_STATUS_CHROMEDRIVER";
const CHROMIUM_VARIABLE: &str = "DURABLE_STATUS_CHROMIUM";

/// A ChromeDriver process, killed when dropped.
struct Driver {
    child: Child,
    base: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        // ChromeDriver leads its own process group, Chromium included: kill
        // them all, so that a failing test leaves no browser behind.
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    async fn start() -> Driver {
        let program =
            std::env::var(CHROMEDRIVER_VARIABLE).unwrap_or_else(|_| "chromedriver".into());
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(&program)
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "the page test needs ChromeDriver and Chromium ({program}: {e}); install Debian's \
                     `chromium` and `chromium-driver`, or set {CHROMEDRIVER_VARIABLE} and {CHROMIUM_VARIABLE}"
                )
            });
        let driver = Driver {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while reqwest::get(format!("{}/status", driver.base))
            .await
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "ChromeDriver did not start on port {port}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        driver
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = reqwest::Client::new().request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let response = request.send().await.expect("ChromeDriver answers");
        let status = response.status();
        let value: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
        assert!(status.is_success(), "WebDriver {path}: {status} {value}");
        value["value"].clone()
    }

    async fn session(&self, profile: &std::path::Path) -> Session<'_> {
        let chromium =
            std::env::var(CHROMIUM_VARIABLE).unwrap_or_else(|_| "/usr/bin/chromium".into());
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,800",
        ]
        .iter()
        .map(|a| a.to_string())
        .chain([format!("--user-data-dir={}", profile.display())])
        .collect::<Vec<_>>();
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args}
        }}});
        let value = self
            .call(reqwest::Method::POST, "/session", Some(capabilities))
            .await;
        Session {
            driver: self,
            id: value["sessionId"]
                .as_str()
                .expect("a session id")
                .to_owned(),
        }
    }
}

struct Session<'a> {
    driver: &'a Driver,
    id: String,
}

impl Session<'_> {
    async fn open(&self, url: &str) {
        self.driver
            .call(
                reqwest::Method::POST,
                &format!("/session/{}/url", self.id),
                Some(json!({"url": url})),
            )
            .await;
    }

    async fn eval(&self, script: &str) -> Value {
        let body = json!({"script": script, "args": []});
        self.driver
            .call(
                reqwest::Method::POST,
                &format!("/session/{}/execute/sync", self.id),
                Some(body),
            )
            .await
    }

    /// Evaluates `script` until it returns `expected`.
    async fn wait_for(&self, script: &str, expected: Value) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let value = self.eval(script).await;
            if value == expected {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{script} is {value}, expected {expected}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn close(self) {
        self.driver
            .call(
                reqwest::Method::DELETE,
                &format!("/session/{}", self.id),
                None,
            )
            .await;
    }
}

#[tokio::test]
async fn the_page_shows_a_running_instance_and_its_progress_moves() {
    let store = common::store().await;
    store
        .create(NewInstance::new("browser-job", "EncodeVideo").status(RuntimeStatus::Running))
        .await
        .unwrap();
    store
        .create(NewInstance::new("other-job", "ImportCustomers"))
        .await
        .unwrap();
    let progress = |value: Value| CustomStatus::from_value(&value).unwrap();
    store
        .set_custom_status(
            "browser-job",
            Some(&progress(json!({"progress": 0.2, "stage": "encoding"}))),
        )
        .await
        .unwrap();

    let api = HttpApi::new(store.clone(), vec![]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(durable_status::http::serve(
        listener,
        api,
        std::future::pending(),
    ));

    let driver = Driver::start().await;
    let profile =
        std::env::temp_dir().join(format!("durable-status-chromium-{}", std::process::id()));
    let session = driver.session(&profile).await;
    session.open(&format!("{base}/?instance=browser-job")).await;

    // It loads, lists both instances, and shows the running one.
    session
        .wait_for("return document.title", json!("durable-status"))
        .await;
    session
        .wait_for(
            "return document.querySelectorAll('#instances tbody tr').length",
            json!(2),
        )
        .await;
    session
        .wait_for(
            "return document.getElementById('detail-status').textContent",
            json!("Running"),
        )
        .await;
    session
        .wait_for(
            "return document.getElementById('progress').getAttribute('aria-valuenow')",
            json!("20"),
        )
        .await;
    session
        .wait_for(
            "return document.getElementById('progress-text').textContent",
            json!("20%"),
        )
        .await;

    // The bar moves when the custom status changes.
    store
        .set_custom_status(
            "browser-job",
            Some(&progress(json!({"progress": 0.75, "stage": "encoding"}))),
        )
        .await
        .unwrap();
    session
        .wait_for(
            "return document.getElementById('progress').getAttribute('aria-valuenow')",
            json!("75"),
        )
        .await;
    session
        .wait_for(
            "return document.querySelector('#progress .fill').style.width",
            json!("75%"),
        )
        .await;

    // done/total is a progress too.
    store
        .set_custom_status(
            "browser-job",
            Some(&progress(json!({"done": 9, "total": 10}))),
        )
        .await
        .unwrap();
    session
        .wait_for(
            "return document.getElementById('progress').getAttribute('aria-valuenow')",
            json!("90"),
        )
        .await;

    // A custom status with no progress shows as raw JSON, without a bar.
    store
        .set_custom_status(
            "browser-job",
            Some(&progress(json!({"nextActions": ["A", "B", "C"], "foo": 2}))),
        )
        .await
        .unwrap();
    session
        .wait_for(
            "return document.getElementById('progress-block').hidden",
            json!(true),
        )
        .await;
    session
        .wait_for("return JSON.parse(document.getElementById('custom-status').textContent).nextActions.join()", json!("A,B,C"))
        .await;

    // Completion shows too.
    store.complete("browser-job", None).await.unwrap();
    session
        .wait_for(
            "return document.getElementById('detail-status').textContent",
            json!("Completed"),
        )
        .await;

    session.close().await;
    let _ = std::fs::remove_dir_all(profile);
}
