//! The status page in a real headless browser: Chromium driven through
//! ChromeDriver (Debian's `chromium` and `chromium-driver` packages).
//!
//! Without them the test is skipped, with a `SKIPPED:` notice on standard
//! error, unless `DURABLE_STATUS_REQUIRE_BROWSER` is set (as CI does): then
//! it fails.

mod common;

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use durable_status::http::HttpApi;
use durable_status::{CustomStatus, NewInstance, RuntimeStatus};
use serde_json::{json, Value};

const CHROMEDRIVER_VARIABLE: &str = "DURABLE_STATUS_CHROMEDRIVER";
const CHROMIUM_VARIABLE: &str = "DURABLE_STATUS_CHROMIUM";
/// Set (to anything but empty or `0`), a missing browser fails the test
/// instead of skipping it.
const REQUIRE_VARIABLE: &str = "DURABLE_STATUS_REQUIRE_BROWSER";

/// A program the test needs.
struct Needed {
    /// What it is, in messages.
    what: &'static str,
    /// The variable that names it, when set.
    variable: &'static str,
    /// Its name on PATH otherwise.
    name: &'static str,
}

const CHROMEDRIVER: Needed = Needed {
    what: "ChromeDriver",
    variable: CHROMEDRIVER_VARIABLE,
    name: "chromedriver",
};
const CHROMIUM: Needed = Needed {
    what: "Chromium",
    variable: CHROMIUM_VARIABLE,
    name: "chromium",
};

/// The two programs, found.
#[derive(Debug)]
struct Browser {
    chromedriver: PathBuf,
    chromium: PathBuf,
}

/// Where `program` is, as the shell would find it: itself if it names a
/// path (has a `/`), otherwise the first match in the directories of `path`
/// (the value of PATH). Only an executable file counts.
fn locate(program: &OsStr, path: Option<&OsStr>) -> Option<PathBuf> {
    fn executable(file: &Path) -> bool {
        std::fs::metadata(file).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    }
    if program.is_empty() {
        return None;
    }
    if program.as_bytes().contains(&b'/') {
        let file = PathBuf::from(program);
        return executable(&file).then_some(file);
    }
    std::env::split_paths(path?)
        .map(|dir| dir.join(program))
        .find(|file| executable(file))
}

/// Finds ChromeDriver and Chromium, each named by its variable (`var`) or
/// else looked up by name in `path`; or says what is missing and what to
/// install.
fn find_browser(
    var: impl Fn(&str) -> Option<OsString>,
    path: Option<&OsStr>,
) -> Result<Browser, String> {
    let mut missing = Vec::new();
    let mut find = |needed: &Needed| {
        let named = var(needed.variable).filter(|v| !v.is_empty());
        let program = named.clone().unwrap_or_else(|| needed.name.into());
        let found = locate(&program, path);
        if found.is_none() {
            missing.push(match named {
                Some(value) => format!(
                    "{} (`{}`, from {}, is no executable file{})",
                    needed.what,
                    value.to_string_lossy(),
                    needed.variable,
                    if value.as_bytes().contains(&b'/') {
                        ""
                    } else {
                        " on PATH"
                    }
                ),
                None => format!("{} (no `{}` on PATH)", needed.what, needed.name),
            });
        }
        found
    };
    let (chromedriver, chromium) = (find(&CHROMEDRIVER), find(&CHROMIUM));
    match (chromedriver, chromium) {
        (Some(chromedriver), Some(chromium)) => Ok(Browser {
            chromedriver,
            chromium,
        }),
        _ => Err(format!(
            "the status page test needs ChromeDriver and Chromium, and finds no {}. \
             Install Debian's `chromium` and `chromium-driver` \
             (apt-get install chromium chromium-driver), or set \
             {CHROMEDRIVER_VARIABLE} and {CHROMIUM_VARIABLE} to the two programs.",
            missing.join(" and no ")
        )),
    }
}

/// Whether the value of [`REQUIRE_VARIABLE`] requires the browser.
fn required(value: Option<&OsStr>) -> bool {
    value.is_some_and(|v| !v.is_empty() && v != "0")
}

/// The browser, or `None` when it is missing and the test is to pass
/// without it: then a `SKIPPED:` notice goes to standard error, written
/// there directly, since libtest keeps what a passing test prints with
/// `eprintln!` to itself. Panics when the browser is missing and
/// [`REQUIRE_VARIABLE`] requires it.
fn browser_or_skip(test: &str) -> Option<Browser> {
    let why = match find_browser(
        |name| std::env::var_os(name),
        std::env::var_os("PATH").as_deref(),
    ) {
        Ok(browser) => return Some(browser),
        Err(why) => why,
    };
    if required(std::env::var_os(REQUIRE_VARIABLE).as_deref()) {
        panic!("{why}\n({REQUIRE_VARIABLE} is set: the test may not be skipped.)");
    }
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(
        stderr,
        "\n\
         SKIPPED: {test}: {why}\n\
         SKIPPED: it passes without running; set {REQUIRE_VARIABLE}=1 to make a missing browser fail it.\n"
    );
    let _ = stderr.flush();
    None
}

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
    async fn start(program: &Path) -> Driver {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(program)
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "ChromeDriver ({}) does not start: {e}; install Debian's `chromium` and \
                     `chromium-driver`, or set {CHROMEDRIVER_VARIABLE} and {CHROMIUM_VARIABLE}",
                    program.display()
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

    async fn session(&self, chromium: &Path, profile: &Path) -> Session<'_> {
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
            "goog:chromeOptions": {"binary": chromium.to_string_lossy(), "args": args}
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
    let Some(browser) = browser_or_skip("the_page_shows_a_running_instance_and_its_progress_moves")
    else {
        return;
    };
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

    let driver = Driver::start(&browser.chromedriver).await;
    let profile =
        std::env::temp_dir().join(format!("durable-status-chromium-{}", std::process::id()));
    let session = driver.session(&browser.chromium, &profile).await;
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

/// A directory of its own under the system's, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!(
            "durable-status-browser-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    /// A file in it, executable or not.
    fn file(&self, name: &str, executable: bool) -> PathBuf {
        let file = self.0.join(name);
        std::fs::write(&file, "#!/bin/sh\n").unwrap();
        let mode = if executable { 0o755 } else { 0o644 };
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
        file
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn programs_are_found_on_path_only_as_executable_files() {
    let first = Scratch::new("path-first");
    let second = Scratch::new("path-second");
    first.file("tool", false);
    std::fs::create_dir(first.0.join("dir")).unwrap();
    let tool = second.file("tool", true);
    let elsewhere = second.file("elsewhere", true);
    let path = std::env::join_paths([&first.0, &second.0]).unwrap();
    let path = Some(path.as_os_str());

    // Past a file that is not executable, to the next directory.
    assert_eq!(locate("tool".as_ref(), path), Some(tool));
    assert_eq!(locate("dir".as_ref(), path), None);
    assert_eq!(locate("absent".as_ref(), path), None);
    assert_eq!(locate("".as_ref(), path), None);
    assert_eq!(locate("tool".as_ref(), None), None);
    // A path is taken as it is, not looked up.
    assert_eq!(locate(elsewhere.as_os_str(), None), Some(elsewhere.clone()));
    assert_eq!(locate(first.0.join("tool").as_os_str(), path), None);
}

#[test]
fn a_missing_browser_is_named_with_what_to_install() {
    let bin = Scratch::new("find");
    let chromedriver = bin.file("chromedriver", true);
    let path = bin.0.clone().into_os_string();
    let no_variables = |_: &str| None;

    let why = find_browser(no_variables, Some(&path)).unwrap_err();
    assert!(why.contains("Chromium (no `chromium` on PATH)"), "{why}");
    assert!(!why.contains("ChromeDriver ("), "{why}");
    for advice in [
        "`chromium` and `chromium-driver`",
        CHROMEDRIVER_VARIABLE,
        CHROMIUM_VARIABLE,
    ] {
        assert!(why.contains(advice), "{why}");
    }

    // The variables name the programs, as paths or as names on PATH.
    let chromium = bin.file("my-chromium", true);
    let variables = |name: &str| match name {
        CHROMIUM_VARIABLE => Some(chromium.clone().into_os_string()),
        _ => None,
    };
    let browser = find_browser(variables, Some(&path)).unwrap();
    assert_eq!(
        (browser.chromedriver, browser.chromium),
        (chromedriver.clone(), chromium.clone())
    );
    let variables = |name: &str| match name {
        CHROMIUM_VARIABLE => Some("my-chromium".into()),
        _ => None,
    };
    assert_eq!(
        find_browser(variables, Some(&path)).unwrap().chromium,
        chromium
    );

    // A variable that names nothing is not passed over for PATH.
    bin.file("chromium", true);
    let variables = |name: &str| match name {
        CHROMEDRIVER_VARIABLE => Some("/nonexistent".into()),
        _ => None,
    };
    let why = find_browser(variables, Some(&path)).unwrap_err();
    assert!(
        why.contains("ChromeDriver (`/nonexistent`, from DURABLE_STATUS_CHROMEDRIVER"),
        "{why}"
    );
    assert!(!why.contains("Chromium ("), "{why}");
    assert!(find_browser(no_variables, Some(&path)).is_ok());
    assert!(find_browser(no_variables, None).is_err());
}

#[test]
fn only_an_empty_or_zero_value_leaves_the_browser_optional() {
    assert!(!required(None));
    assert!(!required(Some("".as_ref())));
    assert!(!required(Some("0".as_ref())));
    assert!(required(Some("1".as_ref())));
    assert!(required(Some("yes".as_ref())));
}
