//! The `durable-status` binary, run as a user runs it.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_durable-status");

struct Hub {
    name: String,
    connection: String,
}

impl Drop for Hub {
    /// On a real account, the tables a test's commands created go with it.
    fn drop(&mut self) {
        if std::env::var_os(common::CONNECTION_STRING_VARIABLE).is_some() {
            common::delete_tables(&self.name);
        }
    }
}

impl Hub {
    fn new() -> Self {
        Hub {
            name: common::unique_hub(),
            connection: common::connection_string(),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(BIN);
        command
            .args([
                "--connection-string",
                &self.connection,
                "--task-hub",
                &self.name,
            ])
            .args(args)
            .env_remove("AzureWebJobsStorage")
            .env_remove("AZURE_STORAGE_CONNECTION_STRING")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("the binary runs")
    }

    /// Runs and expects success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "{args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// Runs and expects failure; returns stderr, which must be one line.
    fn fails(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            !output.status.success(),
            "{args:?} succeeded: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
        stderr.trim_end().to_owned()
    }

    fn status(&self, id: &str) -> Value {
        serde_json::from_str(&self.ok(&["get", id])).unwrap()
    }
}

#[test]
fn create_get_and_change_state() {
    let hub = Hub::new();
    assert_eq!(
        hub.ok(&[
            "create",
            "cli-1",
            "--name",
            "ProcessOrder",
            "--input",
            r#"{"order":1}"#
        ])
        .trim(),
        "created instance 'cli-1' (Pending)"
    );
    let status = hub.status("cli-1");
    assert_eq!(
        (
            status["runtimeStatus"].as_str(),
            status["input"]["order"].as_i64()
        ),
        (Some("Pending"), Some(1))
    );
    assert_eq!(status["name"], "ProcessOrder");
    let no_input: Value = serde_json::from_str(&hub.ok(&["get", "cli-1", "--no-input"])).unwrap();
    assert_eq!(no_input["input"], Value::Null);

    hub.ok(&["suspend", "cli-1"]);
    assert_eq!(hub.status("cli-1")["runtimeStatus"], "Suspended");
    hub.ok(&["resume", "cli-1"]);
    assert_eq!(hub.status("cli-1")["runtimeStatus"], "Running");
    hub.ok(&["complete", "cli-1", "--output", "[1,2,3]"]);
    let done = hub.status("cli-1");
    assert_eq!(
        (done["runtimeStatus"].as_str(), done["output"].clone()),
        (Some("Completed"), serde_json::json!([1, 2, 3]))
    );

    let err = hub.fails(&["terminate", "cli-1", "--reason", "late"]);
    assert_eq!(err, "error: instance 'cli-1' is already Completed");

    hub.ok(&["create", "cli-2", "--name", "X"]);
    hub.ok(&["fail", "cli-2", "--error", "it broke"]);
    assert_eq!(hub.status("cli-2")["output"], "it broke");
    hub.ok(&["create", "cli-3", "--name", "X"]);
    hub.ok(&["terminate", "cli-3", "--reason", "not needed"]);
    assert_eq!(hub.status("cli-3")["runtimeStatus"], "Terminated");
}

/// An input over 60 KiB goes to a blob of the task hub's large-message
/// container, and `get` prints it back; `purge` deletes the blob too.
#[test]
fn large_inputs_go_to_blobs_and_come_back() {
    let hub = Hub::new();
    let input = serde_json::json!({"lines": "l".repeat(40_000)}).to_string();
    hub.ok(&["create", "big/1", "--name", "X", "--input", &input]);
    let status = hub.status("big/1");
    assert!(status["input"] == serde_json::from_str::<Value>(&input).unwrap());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let blobs = runtime.block_on(async {
        use futures::StreamExt;
        let container = common::large_messages(&hub.name);
        let mut pages = container.list_blobs().into_stream();
        let mut names = Vec::new();
        while let Some(Ok(page)) = pages.next().await {
            names.extend(page.blobs.blobs().map(|b| b.name.clone()));
        }
        names
    });
    assert_eq!(blobs.len(), 1, "{blobs:?}");
    assert!(blobs[0].contains("/history--Input-"), "{blobs:?}");
    hub.ok(&["complete", "big/1"]);
    hub.ok(&["purge", "big/1"]);
    let left = runtime.block_on(async {
        use futures::StreamExt;
        let container = common::large_messages(&hub.name);
        let mut pages = container.list_blobs().into_stream();
        let mut count = 0;
        while let Some(Ok(page)) = pages.next().await {
            count += page.blobs.blobs().count();
        }
        count
    });
    assert_eq!(left, 0, "the purge deleted the blob");
}

#[test]
fn a_missing_instance_exits_1() {
    let hub = Hub::new();
    let output = hub.run(&["get", "nobody"]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr).trim(),
        "error: instance 'nobody' was not found"
    );
    assert!(output.stdout.is_empty());
}

#[test]
fn custom_status_is_checked_before_it_is_sent() {
    let hub = Hub::new();
    hub.ok(&["create", "cs", "--name", "X"]);
    hub.ok(&["set-custom-status", "cs", r#"{"progress":0.5}"#]);
    assert_eq!(hub.status("cs")["customStatus"]["progress"], 0.5);

    let big = format!("\"{}\"", "x".repeat(9_000));
    let err = hub.fails(&["set-custom-status", "cs", &big]);
    assert!(
        err.contains("custom status is too large: 18004 bytes") && err.contains("(16 KiB)"),
        "{err}"
    );
    let err = hub.fails(&["set-custom-status", "cs", "{progress: half}"]);
    assert!(
        err.starts_with("error: invalid custom status: not JSON"),
        "{err}"
    );
    assert_eq!(
        hub.status("cs")["customStatus"]["progress"],
        0.5,
        "nothing changed"
    );

    hub.ok(&["set-custom-status", "cs", "null"]);
    assert_eq!(hub.status("cs")["customStatus"], Value::Null);
}

#[test]
fn list_as_a_table_as_json_and_all_pages() {
    let hub = Hub::new();
    for i in 0..5 {
        hub.ok(&["create", &format!("job-{i}"), "--name", "Job"]);
    }
    hub.ok(&["create", "other", "--name", "Other"]);
    hub.ok(&["complete", "job-0"]);

    let table = hub.ok(&["list"]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("INSTANCE ID") && lines[0].contains("STATUS"),
        "{table}"
    );
    assert_eq!(lines.len(), 7, "{table}");

    let json = hub.ok(&["list", "--json", "--prefix", "job-"]);
    let rows: Vec<Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 5);
    assert!(rows
        .iter()
        .all(|r| r["instanceId"].as_str().unwrap().starts_with("job-")));

    let completed = hub.ok(&["list", "--json", "--status", "Completed"]);
    assert_eq!(completed.lines().count(), 1);

    let output = hub.run(&["list", "--json", "--top", "2"]);
    assert_eq!(String::from_utf8_lossy(&output.stdout).lines().count(), 2);
    assert!(String::from_utf8_lossy(&output.stderr).contains("--all"));
    // Pages of 2: the parallel listing cuts ranges; both list every id once.
    let ids = |text: String| -> Vec<String> {
        text.lines()
            .map(|line| {
                let row: serde_json::Value = serde_json::from_str(line).unwrap();
                row["instanceId"].as_str().unwrap().to_owned()
            })
            .collect()
    };
    let ordered = ids(hub.ok(&["list", "--json", "--top", "2", "--all", "--ordered"]));
    assert_eq!(ordered.len(), 6);
    assert!(ordered.windows(2).all(|w| w[0] < w[1]), "{ordered:?}");
    let mut parallel = ids(hub.ok(&["list", "--json", "--top", "2", "--all"]));
    parallel.sort();
    assert_eq!(parallel, ordered);
    // A usage error: clap's message names what is missing.
    let misuse = hub.run(&["list", "--ordered"]);
    assert!(!misuse.status.success());
    assert!(String::from_utf8_lossy(&misuse.stderr).contains("--all"));

    let counts = hub.ok(&["counts"]);
    assert!(
        counts.contains("Pending") && counts.contains("Completed"),
        "{counts}"
    );
    assert!(
        counts
            .lines()
            .last()
            .unwrap()
            .split_whitespace()
            .eq(["Total", "6"]),
        "{counts}"
    );
}

#[test]
fn list_and_count_by_orchestrator_name() {
    let hub = Hub::new();
    for (id, name) in [
        ("s-1", "Ship"),
        ("s-2", "Ship"),
        ("s-3", "ShipFast"),
        ("b-1", "Bill"),
        ("q-1", "x' or Name ne 'x"),
    ] {
        hub.ok(&["create", id, "--name", name]);
    }
    hub.ok(&["complete", "s-2"]);
    let ids = |args: &[&str]| -> Vec<String> {
        let mut ids: Vec<String> = hub
            .ok(args)
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["instanceId"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(ids(&["list", "--json", "--name", "Ship"]), ["s-1", "s-2"]);
    assert_eq!(
        ids(&["list", "--json", "--name", "Ship,Bill"]),
        ["b-1", "s-1", "s-2"]
    );
    assert_eq!(
        ids(&["list", "--json", "--name", "Bill", "--name", "ShipFast"]),
        ["b-1", "s-3"]
    );
    assert_eq!(
        ids(&[
            "list",
            "--json",
            "--name",
            "Ship",
            "--status",
            "Completed",
            "--prefix",
            "s-"
        ]),
        ["s-2"]
    );
    assert_eq!(
        ids(&["list", "--json", "--name", "x' or Name ne 'x"]),
        ["q-1"]
    );
    let counts = hub.ok(&["counts", "--name", "Ship"]);
    assert!(
        counts
            .lines()
            .last()
            .unwrap()
            .split_whitespace()
            .eq(["Total", "2"]),
        "{counts}"
    );
    let err = hub.fails(&["list", "--name", ","]);
    assert!(err.starts_with("error: --name:"), "{err}");
    let many: Vec<String> = (0..16).map(|i| format!("n{i}")).collect();
    let err = hub.fails(&["counts", "--name", &many.join(",")]);
    assert!(
        err.starts_with("error: --name: invalid orchestrator name:") && err.contains("15"),
        "{err}"
    );
}

#[test]
fn get_several_ids_prints_an_array_in_order() {
    let hub = Hub::new();
    hub.ok(&["create", "g-1", "--name", "A", "--input", "1"]);
    hub.ok(&["create", "g-2", "--name", "B", "--input", "2"]);
    let all: Value =
        serde_json::from_str(&hub.ok(&["get", "g-2", "nobody", "g-1", "g-2"])).unwrap();
    let all = all.as_array().unwrap();
    assert_eq!(all.len(), 4);
    assert_eq!(
        (all[0]["instanceId"].as_str(), all[0]["input"].as_i64()),
        (Some("g-2"), Some(2))
    );
    assert_eq!(all[1], Value::Null, "an absent instance is null");
    assert_eq!(all[2]["name"], "A");
    assert_eq!(all[3]["instanceId"], "g-2");
    let slim: Value = serde_json::from_str(&hub.ok(&["get", "g-1", "g-2", "--no-input"])).unwrap();
    assert_eq!(slim[0]["input"], Value::Null);
    // One id keeps the single object.
    assert!(hub.status("g-1").is_object());
    let err = hub.fails(&["get", "g-1", ""]);
    assert!(
        err.starts_with("error: invalid instance id:") && err.contains("at position 1"),
        "{err}"
    );
}

#[test]
fn bad_arguments_are_one_line_errors() {
    let hub = Hub::new();
    let err = hub.fails(&["list", "--status", "Running,Done"]);
    assert!(
        err.starts_with("error: --status: invalid runtime status: 'Done' is not one of Running"),
        "{err}"
    );
    let err = hub.fails(&["list", "--created-from", "last week"]);
    assert!(
        err.starts_with("error: --created-from: 'last week' is not a date"),
        "{err}"
    );
    let err = hub.fails(&["list", "--top", "5000"]);
    assert!(err.contains("page size") && err.contains("5000"), "{err}");
    let err = hub.fails(&["list", "--all", "--top", "0"]);
    assert!(err.starts_with("error: invalid page size: 0"), "{err}");
    let err = hub.fails(&["create", "x", "--name", "X", "--input", "{oops"]);
    assert!(err.starts_with("error: invalid input: not JSON"), "{err}");
    let mut bad_hub = Hub::new();
    bad_hub.name = "bad-hub".into();
    let err = bad_hub.fails(&["list"]);
    assert!(err.starts_with("error: invalid task hub"), "{err}");
    let err = Hub {
        name: "Hub1".into(),
        connection: "AccountName=x".into(),
    }
    .fails(&["list"]);
    assert!(
        err.starts_with("error: --connection-string: invalid configuration"),
        "{err}"
    );
}

#[test]
fn purge_by_id_and_by_filter() {
    let hub = Hub::new();
    for id in ["p-done", "p-fail", "p-run"] {
        hub.ok(&["create", id, "--name", "X"]);
    }
    hub.ok(&["complete", "p-done"]);
    hub.ok(&["fail", "p-fail"]);
    hub.ok(&["resume", "p-run"]);

    let err = hub.fails(&["purge", "p-run"]);
    assert!(
        err.contains("only instances in a terminal state") && err.contains("--allow-non-terminal"),
        "{err}"
    );

    // Without a terminal to answer the question, and without --yes: refused.
    let err = hub.fails(&["purge", "--created-from", "2000-01-01"]);
    assert!(
        err.ends_with("refusing to purge without confirmation: pass --yes"),
        "{err}"
    );
    assert_eq!(
        hub.ok(&["list", "--json"]).lines().count(),
        3,
        "nothing deleted"
    );

    let out = hub.ok(&["purge", "--created-from", "2000-01-01", "--yes"]);
    assert!(
        out.contains("2 instances created from 2000-01-01T00:00:00Z"),
        "{out}"
    );
    assert!(
        out.contains("1 Completed") && out.contains("1 Failed"),
        "{out}"
    );
    assert!(
        out.trim_end()
            .ends_with("deleted 2 instances (0 skipped: changed or gone since they were read) and 0 History rows"),
        "{out}"
    );
    assert!(hub
        .ok(&["purge", "--created-from", "2000-01-01", "--yes"])
        .contains("nothing to purge"));

    assert!(hub
        .ok(&["purge", "p-run", "--allow-non-terminal"])
        .contains("purged instance 'p-run'"));
    assert!(hub.ok(&["purge", "p-run"]).contains("was not found"));
}

/// Reads lines of a child's stdout until one contains `needle`.
fn wait_for_line(
    lines: &mut impl Iterator<Item = std::io::Result<String>>,
    needle: &str,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.contains(needle) {
            return line;
        }
        assert!(Instant::now() < deadline, "no line with {needle:?}");
    }
    panic!("the process ended before printing {needle:?}");
}

fn interrupt(child: &std::process::Child) {
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// `http://HOST:PORT` from the line `serve` prints when it listens
/// ("Serving task hub X on http://HOST:PORT (status page at ...)").
fn served_base(line: &str) -> String {
    line.split(" on ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_owned()
}

#[tokio::test]
async fn serve_answers_and_stops_on_ctrl_c() {
    let hub = Hub::new();
    hub.ok(&["create", "served", "--name", "X"]);
    let mut child = hub
        .command(&["serve", "--addr", "127.0.0.1:0", "--key", "k1"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = wait_for_line(&mut lines, "Serving task hub");
    let base = served_base(&line);
    let client = reqwest::Client::new();
    let url = format!("{base}/runtime/webhooks/durabletask/instances/served");
    assert_eq!(client.get(&url).send().await.unwrap().status(), 401);
    assert_eq!(
        client
            .get(format!("{url}?code=k1"))
            .send()
            .await
            .unwrap()
            .status(),
        202
    );
    interrupt(&child);
    assert!(child.wait().unwrap().success());

    let err = hub.fails(&["serve", "--addr", "0.0.0.0:0"]);
    assert!(err.contains("without a key"), "{err}");
    let err = hub.fails(&["serve", "--key", "k1", "--public-url", "status.example.com"]);
    assert!(
        err.starts_with("error: --public-url: ") && err.contains("https://"),
        "{err}"
    );
}

#[tokio::test]
async fn serve_hands_out_urls_on_the_public_url_only() {
    let hub = Hub::new();
    hub.ok(&["create", "served", "--name", "X"]);
    let mut child = hub
        .command(&[
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--key",
            "k1",
            "--public-url",
            "https://status.example.com/",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = wait_for_line(&mut lines, "Serving task hub");
    assert!(
        line.ends_with("(status page at https://status.example.com/)"),
        "{line}"
    );
    let base = served_base(&line);
    let response = reqwest::Client::new()
        .get(format!(
            "{base}/runtime/webhooks/durabletask/instances/served?code=k1&showInput=false"
        ))
        .header("host", "evil.example")
        .header("x-forwarded-proto", "http")
        .header("x-forwarded-host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    assert_eq!(
        response.headers()["location"],
        "https://status.example.com/runtime/webhooks/durabletask/instances/served?showInput=false"
    );
    interrupt(&child);
    assert!(child.wait().unwrap().success());
}

#[tokio::test]
async fn a_second_ctrl_c_stops_serve_at_once() {
    let hub = Hub::new();
    let mut child = hub
        .command(&["serve", "--addr", "127.0.0.1:0", "--key", "k1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = wait_for_line(&mut lines, "Serving task hub");
    let base = served_base(&line);
    let addr = base.trim_start_matches("http://").to_owned();
    // A client that sends half a request head and waits: the server gives
    // it the header-read timeout (10 s), and the grace (10 s).
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(
        &mut slow,
        format!("GET /app.js HTTP/1.1\r\nHost: {addr}\r\n").as_bytes(),
    )
    .await
    .unwrap();
    // Accepted after it: the slow client is being served.
    let page = reqwest::get(format!("http://{addr}/app.js")).await.unwrap();
    assert_eq!(page.status(), 200);

    interrupt(&child);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "the first Ctrl-C waits for the request in flight"
    );
    interrupt(&child);
    let interrupted = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if interrupted.elapsed() > Duration::from_secs(5) {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("serve did not stop within 5 s of a second Ctrl-C");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.code(), Some(130), "{status}");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(
        stderr.contains("Ctrl-C again to stop at once") && stderr.contains("Stopped at once"),
        "{stderr}"
    );
    drop(slow);
}

const DEMO_KEY: &str = "demo-key-never-printed";

#[tokio::test]
async fn the_demo_runs_with_no_configuration_and_stops_cleanly() {
    let mut child = Command::new(BIN)
        .args(["demo", "--addr", "127.0.0.1:0", "--key", DEMO_KEY])
        // A Functions developer's exported connection string is not used:
        // only --connection-string takes the demo off its own emulator.
        .env(
            "AzureWebJobsStorage",
            "AccountName=production;AccountKey=bm90LXVzZWQ=",
        )
        .env_remove("AZURE_STORAGE_CONNECTION_STRING")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let page = wait_for_line(&mut lines, "Status page:");
    assert!(!page.contains(DEMO_KEY), "the key is never printed: {page}");
    assert!(
        page.ends_with("(it asks for the key)") && !page.contains("code="),
        "the page's URL carries no key parameter: {page}"
    );
    let base = page
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap()
        .trim_end_matches('/')
        .to_owned();
    let storage = wait_for_line(&mut lines, "Storage:");
    let emulator = storage
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap()
        .to_owned();
    let last = wait_for_line(&mut lines, "Ctrl-C");
    assert!(!last.contains(DEMO_KEY));

    let mut with_key = reqwest::header::HeaderMap::new();
    with_key.insert("x-functions-key", DEMO_KEY.parse().unwrap());
    let client = reqwest::Client::builder()
        .default_headers(with_key)
        .build()
        .unwrap();
    let html = client
        .get(format!("{base}/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("durable-status"));
    // The sample orchestrations appear and publish their custom status.
    let deadline = Instant::now() + Duration::from_secs(30);
    let order = loop {
        let response = client
            .get(format!(
                "{base}/runtime/webhooks/durabletask/instances/demo-1-order"
            ))
            .send()
            .await
            .unwrap();
        if response.status() == 202 {
            let body: Value = response.json_body().await;
            if body["customStatus"]["nextActions"].is_array() {
                break body;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the order sample never published its next actions"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(order["customStatus"]["foo"], 2);
    let list: Value = client
        .get(format!("{base}/runtime/webhooks/durabletask/instances"))
        .send()
        .await
        .unwrap()
        .json_body()
        .await;
    assert_eq!(list.as_array().unwrap().len(), 5);

    interrupt(&child);
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    // The emulator went with it.
    let gone = client
        .get(&emulator)
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    assert!(gone.is_err(), "the emulator still answers at {emulator}");
}

trait JsonBody {
    async fn json_body(self) -> Value;
}

impl JsonBody for reqwest::Response {
    async fn json_body(self) -> Value {
        serde_json::from_slice(&self.bytes().await.unwrap()).unwrap()
    }
}

/// The most permissive filters a user could type: none of them lets the
/// Azure crates log a request (its URL carries the SAS `sig=`, its
/// Authorization header the SharedKey signature).
const PERMISSIVE_FILTERS: &[&str] = &[
    "trace",
    "trace,azure_core=trace",
    "trace,azure_core::policies::transport=trace",
    "trace,azure_core::policies::transport=debug",
    "azure_storage::shared_access_signature=trace",
    "azure_core::policies::transport=trace,azure_storage=trace,azure_data_tables=trace",
    "trace,[]=trace",
    "trace,[{}]=trace",
    "trace,azure_core[]=trace",
];

#[test]
fn debug_logs_never_show_a_sas_token() {
    let emulator = common::emulator().table_endpoint;
    let secret = "TOPSECRETSIGNATURE";
    let sas = format!(
        "TableEndpoint={emulator};SharedAccessSignature=sv=2020-08-04&ss=t&srt=sco&sp=rwdlacu&se=2099-01-01T00:00:00Z&sig={secret}"
    );
    let key = durable_status::config::EMULATOR_ACCOUNT_KEY;
    let shared_key = format!(
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={key};TableEndpoint={emulator}"
    );
    let mut problems = Vec::new();
    for connection in [sas, shared_key] {
        let hub = Hub {
            name: common::unique_hub(),
            connection,
        };
        for filter in PERMISSIVE_FILTERS {
            let output = hub
                .command(&["get", "x"])
                .env("RUST_LOG", filter)
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&output.stdout);
            let stderr = String::from_utf8_lossy(&output.stderr);
            // (A filter EnvFilter rejects, `[{}]=trace`, is said so, and
            // logs warnings only.)
            let rejected = stderr.contains("RUST_LOG is not a valid filter");
            if filter.starts_with("trace") && !rejected && stderr.lines().count() <= 1 {
                problems.push(format!("{filter}: no trace logs were written: {stderr}"));
            }
            for leak in [
                secret,
                "sig=",
                key,
                "SharedKey devstoreaccount1:",
                "SharedKey",
            ] {
                if stdout.contains(leak) || stderr.contains(leak) {
                    let line = stderr.lines().find(|l| l.contains(leak)).unwrap_or("");
                    problems.push(format!(
                        "{filter}: {leak:?} in the output: {}",
                        line.chars().take(300).collect::<String>()
                    ));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[tokio::test]
async fn reading_commands_create_no_table() {
    let hub = Hub::new();
    assert!(!hub.run(&["get", "x"]).status.success());
    hub.ok(&["list"]);
    hub.ok(&["counts"]);
    let store =
        durable_status::InstanceStore::open(&common::storage(), &hub.name, Default::default())
            .unwrap();
    let tables = common::other_tool(&store)
        .query()
        .into_stream::<Value>()
        .next()
        .await
        .unwrap();
    let err = tables.expect_err("the table does not exist");
    assert!(format!("{err:?}").contains("404"), "{err:?}");
    hub.ok(&["create", "x", "--name", "X"]);
    assert!(hub.ok(&["list"]).contains("x"), "create made the table");
}

/// A loopback port where nothing listens (bound, then released).
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn nothing_listening_fails_at_once_with_one_line() {
    let port = closed_port();
    let hub = Hub {
        name: "Hub1".into(),
        connection: format!(
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={};TableEndpoint=http://127.0.0.1:{port}/devstoreaccount1",
            durable_status::config::EMULATOR_ACCOUNT_KEY
        ),
    };
    for args in [
        &["list"][..],
        &["get", "x"],
        &["create", "x", "--name", "N"],
    ] {
        let started = Instant::now();
        let err = hub.fails(args);
        // The retry budget is 10 s: only not retrying a refused loopback
        // connection ends this well before it.
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "{args:?} took {:?}",
            started.elapsed()
        );
        assert!(
            err.starts_with(&format!(
                "error: storage transport error: cannot connect to http://127.0.0.1:{port}/devstoreaccount1"
            )),
            "{args:?}: {err}"
        );
        assert!(
            !err.contains("start-table.sh"),
            "a connection string was given: no emulator hint: {err}"
        );
    }
}

#[test]
fn without_configuration_the_error_says_how_to_start_the_emulator() {
    // The default endpoint is the emulator's 127.0.0.1:10002.
    if std::net::TcpListener::bind("127.0.0.1:10002").is_err() {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: without_configuration_the_error_says_how_to_start_the_emulator: \
             something listens on 127.0.0.1:10002 (an emulator started by hand?)"
        );
        return;
    }
    let output = Command::new(BIN)
        .args(["--task-hub", "Hub1", "list"])
        .env_remove("AzureWebJobsStorage")
        .env_remove("AZURE_STORAGE_CONNECTION_STRING")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("the binary runs");
    assert!(!output.status.success());
    let err = String::from_utf8(output.stderr).unwrap();
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    for expected in [
        "error: ",
        "no connection string is configured",
        "http://127.0.0.1:10002/devstoreaccount1",
        "azurite/start-table.sh",
        "docker compose up",
        "AzureWebJobsStorage",
    ] {
        assert!(err.contains(expected), "{expected:?} in {err}");
    }
    assert!(err.starts_with("error: "), "{err}");
}

/// Instances of a new task hub on the bundled emulator: `completed` of them
/// Completed and `running` Running, each with History rows of its run
/// (ExecutionId `e1`, as `common::provider_history_on` writes them: a
/// purge deletes a History row of the run it read, or one written before
/// the row it read, never a newer run's).
async fn hub_with_history(completed: usize, running: usize) -> (String, Vec<String>, Vec<String>) {
    use durable_status::{InstanceStore, NewInstance, RuntimeStatus};
    let name = common::unique_hub();
    let store = InstanceStore::connect(&common::emulator(), &name)
        .await
        .expect("the store connects");
    let done: Vec<String> = (0..completed).map(|i| format!("done/{i:03}")).collect();
    let live: Vec<String> = (0..running).map(|i| format!("live/{i:03}")).collect();
    let create = |id: &String, finish: bool| {
        let store = store.clone();
        let id = id.clone();
        async move {
            store
                .create(
                    NewInstance::new(&id, "Orch")
                        .execution_id("e1")
                        .status(RuntimeStatus::Running),
                )
                .await?;
            if finish {
                store.complete(&id, None).await?;
            }
            Ok::<_, durable_status::Error>(())
        }
    };
    futures::future::try_join_all(done.iter().map(|id| create(id, true)))
        .await
        .unwrap();
    futures::future::try_join_all(live.iter().map(|id| create(id, false)))
        .await
        .unwrap();
    let keys: Vec<String> = done
        .iter()
        .chain(&live)
        .map(|id| durable_status::format::keys::escape_key(id))
        .collect();
    let partitions: Vec<(&str, usize)> = keys.iter().map(|k| (k.as_str(), 3)).collect();
    common::provider_history_on(&common::emulator(), &name, &partitions).await;
    (name, done, live)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_purge_process_is_finished_by_running_it_again() {
    use durable_status::{InstanceStore, StoreOptions};
    let emulator = common::emulator();
    // Kill points, counted in requests through the proxy: amid the first
    // instances' History, midway with 32 purges in flight, near the end.
    for kill_at in [3, 60, 170] {
        let (name, done, live) = hub_with_history(50, 10).await;
        let proxy = common::proxy::Proxy::start(&emulator);
        let through = proxy.config(&emulator);
        let connection = common::connection_string_for(&through);
        let args = [
            "--connection-string",
            &connection,
            "--task-hub",
            &name,
            "purge",
            "--created-from",
            "2000-01-01",
            "--yes",
        ];
        let mut gate = proxy.hold_nth_request(kill_at);
        let mut child = Command::new(BIN)
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the binary runs");
        gate.reached().await;
        // SIGKILL: no cleanup of any kind; the held request then reaches the
        // service or not, as a request in flight at a crash does.
        child.kill().expect("killed");
        child.wait().expect("reaped");
        gate.release();

        let hub = Hub {
            name: name.clone(),
            connection: common::connection_string_for(&emulator),
        };
        let out = hub.ok(&["purge", "--created-from", "2000-01-01", "--yes"]);
        assert!(
            out.contains("deleted") || out.contains("nothing to purge"),
            "{out}"
        );

        let store = InstanceStore::open(&emulator, &name, StoreOptions::default()).unwrap();
        let history = common::azure_table_on(&emulator, &format!("{name}History"));
        for id in &done {
            assert!(
                store.get(id).await.unwrap().is_none(),
                "kill at {kill_at}: {id} has its row"
            );
            let key = durable_status::format::keys::escape_key(id);
            assert_eq!(
                common::history_rows(&history, &key).await,
                0,
                "kill at {kill_at}: {id} has History rows left"
            );
        }
        for id in &live {
            assert!(
                store.get(id).await.unwrap().is_some(),
                "kill at {kill_at}: running {id} was purged"
            );
            let key = durable_status::format::keys::escape_key(id);
            assert_eq!(
                common::history_rows(&history, &key).await,
                3,
                "kill at {kill_at}: running {id} lost History"
            );
        }
    }
}

#[test]
fn purge_by_orchestrator_name() {
    let hub = Hub::new();
    for (id, name) in [("n-a", "Alpha"), ("n-b", "Beta"), ("n-c", "Alphabet")] {
        hub.ok(&["create", id, "--name", name]);
        hub.ok(&["complete", id]);
    }
    let out = hub.ok(&[
        "purge",
        "--created-from",
        "2000-01-01",
        "--name",
        "Alpha",
        "--yes",
    ]);
    assert!(out.contains("1 instances created from"), "{out}");
    assert!(out.contains("deleted 1 instances"), "{out}");
    let left = hub.ok(&["list", "--json"]);
    assert!(
        !left.contains("\"n-a\"") && left.contains("\"n-b\"") && left.contains("\"n-c\""),
        "{left}"
    );
}
