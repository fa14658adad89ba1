//! What live status costs the store, in one run:
//!
//!   cargo bench --bench push
//!
//! Starts the bundled Azurite, a counting TCP proxy in front of its table
//! service, and the HTTP server in a child process (so that its memory is
//! its own). Reports the table requests per second for 200 clients polling
//! one instance (with and without the shared read window), for 1,000 push
//! viewers spread over 10 instances, the delay from a custom status write to
//! the viewers' events (p50/p99), and the server's resident memory with
//! those viewers.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use durable_status::emulator::Azurite;
use durable_status::http::{HttpApi, BASE_PATH};
use durable_status::{CustomStatus, InstanceStore, NewInstance, StorageConfig};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

const SERVER_MODE: &str = "DURABLE_STATUS_PUSH_BENCH_SERVER";
const POLLERS: usize = 200;
const VIEWERS: usize = 1_000;
const WATCHED: usize = 10;
const MEASURE: Duration = Duration::from_secs(10);
const WRITES: usize = 20;

fn main() -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if let Ok(args) = std::env::var(SERVER_MODE) {
        return runtime.block_on(serve(&args));
    }
    runtime.block_on(bench())
}

/// The child: serves the task hub of `args` (`connection string|hub|window
/// in ms`) on a loopback port it prints, until its stdin closes.
async fn serve(args: &str) -> Result<()> {
    let mut parts = args.split('|');
    let (text, hub, window) = (
        parts.next().context("a connection string")?,
        parts.next().context("a task hub")?,
        parts.next().context("a window")?.parse::<u64>()?,
    );
    let store = InstanceStore::open(
        &StorageConfig::from_connection_string(text)?,
        hub,
        Default::default(),
    )?;
    let api = HttpApi::new(store, Vec::new())
        .read_window(Duration::from_millis(window))
        .max_connections(4 * VIEWERS);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("LISTENING {}", listener.local_addr()?);
    let stop = async {
        let mut stdin = tokio::io::stdin();
        let mut buf = [0u8; 64];
        while matches!(stdin.read(&mut buf).await, Ok(n) if n > 0) {}
    };
    durable_status::http::serve(listener, api, stop).await?;
    Ok(())
}

/// A loopback TCP proxy that counts the HTTP requests sent through it.
async fn counting_proxy(target: String) -> Result<(u16, Arc<AtomicUsize>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let count = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&count);
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(&target).await else {
                continue;
            };
            let (mut client_read, mut client_write) = client.into_split();
            let (mut server_read, mut server_write) = server.into_split();
            let counted = Arc::clone(&counted);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n) = client_read.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    // Each request line ends so; bodies here are JSON.
                    let lines = buf[..n]
                        .windows(10)
                        .filter(|w| w == b"HTTP/1.1\r\n")
                        .count();
                    counted.fetch_add(lines, Ordering::Relaxed);
                    if server_write.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
            });
        }
    });
    Ok((port, count))
}

struct Child {
    process: tokio::process::Child,
    base: String,
}

impl Child {
    async fn start(connection: &str, hub: &str, window_ms: u64) -> Result<Child> {
        let mut process = tokio::process::Command::new(std::env::current_exe()?)
            .env(SERVER_MODE, format!("{connection}|{hub}|{window_ms}"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = process.stdout.take().context("stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            let line = lines
                .next_line()
                .await?
                .context("the server printed its address")?;
            if let Some(addr) = line.strip_prefix("LISTENING ") {
                break addr.to_owned();
            }
        };
        Ok(Child {
            process,
            base: format!("http://{addr}{BASE_PATH}"),
        })
    }

    /// The child's resident memory, in MiB.
    fn rss_mib(&self) -> f64 {
        let pid = self.process.id().unwrap_or_default();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    }
}

async fn bench() -> Result<()> {
    let azurite = Azurite::start()?;
    let config = azurite.config();
    let target = config
        .table_endpoint
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let (port, requests) = counting_proxy(target).await?;
    let proxied = config
        .clone()
        .with_table_endpoint(format!("http://127.0.0.1:{port}/devstoreaccount1"));
    let connection = azurite
        .connection_string()
        .replace(&config.table_endpoint, &proxied.table_endpoint);
    let hub = format!("PushBench{}", std::process::id());
    let writer = InstanceStore::connect(&config, &hub).await?;
    for i in 0..WATCHED {
        writer
            .create(NewInstance::new(format!("w-{i}"), "Orch"))
            .await?;
        writer.start(&format!("w-{i}")).await?;
    }
    println!(
        "durable-status push benchmark ({} s a measurement)\n",
        MEASURE.as_secs()
    );

    // 200 pollers of one instance, as fast as each is answered.
    println!("| {POLLERS} clients polling one instance | polls/s | table requests/s |");
    println!("|---|---:|---:|");
    for (label, window) in [
        ("no read window (0 s)", 0),
        ("read window 1 s (default)", 1000),
    ] {
        let server = Child::start(&connection, &hub, window).await?;
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(POLLERS)
            .build()?;
        let url = format!("{}/instances/w-0", server.base);
        let polls = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let tasks: Vec<_> = (0..POLLERS)
            .map(|_| {
                let (client, url, polls, stop) =
                    (client.clone(), url.clone(), polls.clone(), stop.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        if let Ok(response) = client.get(&url).send().await {
                            let _ = response.bytes().await;
                            polls.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (p0, r0, t0) = (
            polls.load(Ordering::Relaxed),
            requests.load(Ordering::Relaxed),
            Instant::now(),
        );
        tokio::time::sleep(MEASURE).await;
        let seconds = t0.elapsed().as_secs_f64();
        let (p1, r1) = (
            polls.load(Ordering::Relaxed),
            requests.load(Ordering::Relaxed),
        );
        stop.store(true, Ordering::Relaxed);
        for task in tasks {
            let _ = task.await;
        }
        println!(
            "| {label} | {:.0} | {:.1} |",
            (p1 - p0) as f64 / seconds,
            (r1 - r0) as f64 / seconds
        );
        drop(server);
    }

    // 1,000 push viewers over 10 instances, a custom status write every
    // 500 ms to one of them in turn.
    let server = Child::start(&connection, &hub, 1000).await?;
    let idle_rss = server.rss_mib();
    let delays = Arc::new(std::sync::Mutex::new(Vec::<f64>::new()));
    let connected = Arc::new(AtomicUsize::new(0));
    let mut viewers = Vec::new();
    for v in 0..VIEWERS {
        let url = format!("{}/instances/w-{}/events", server.base, v % WATCHED);
        let (delays, connected) = (delays.clone(), connected.clone());
        viewers.push(tokio::spawn(
            async move { view(url, delays, connected).await },
        ));
        if v % 100 == 99 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    while connected.load(Ordering::Relaxed) < VIEWERS {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let r0 = requests.load(Ordering::Relaxed);
    let t0 = Instant::now();
    for w in 0..WRITES {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos() as u64;
        let status = CustomStatus::from_value(&json!({"sentAt": t, "step": w}))?;
        writer
            .set_custom_status(&format!("w-{}", w % WATCHED), Some(&status))
            .await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let seconds = t0.elapsed().as_secs_f64();
    let reads = requests.load(Ordering::Relaxed) - r0;
    let viewers_rss = server.rss_mib();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut delays = delays.lock().unwrap().clone();
    delays.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pct = |p: f64| delays[((delays.len() as f64 - 1.0) * p) as usize];
    println!(
        "\n| {VIEWERS} push viewers of {WATCHED} instances | value |\n|---|---:|\n\
         | table requests/s (one poll loop per instance, 1 s interval) | {:.1} |\n\
         | events received (of {}) | {} |\n\
         | write-to-event delay p50 (ms) | {:.0} |\n\
         | write-to-event delay p99 (ms) | {:.0} |\n\
         | server resident memory, idle / with the viewers (MiB) | {idle_rss:.1} / {viewers_rss:.1} |",
        reads as f64 / seconds,
        WRITES * VIEWERS / WATCHED,
        delays.len(),
        pct(0.5),
        pct(0.99),
    );
    for viewer in viewers {
        viewer.abort();
    }
    drop(server);
    Ok(())
}

/// One viewer on a raw connection (the least client memory): reads events
/// and records the delay of each custom status carrying `sentAt`.
async fn view(
    url: String,
    delays: Arc<std::sync::Mutex<Vec<f64>>>,
    connected: Arc<AtomicUsize>,
) -> Result<()> {
    let rest = url.trim_start_matches("http://");
    let (authority, path) = rest.split_once('/').context("a path")?;
    let mut stream = tokio::net::TcpStream::connect(authority).await?;
    stream
        .write_all(format!("GET /{path} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes())
        .await?;
    let mut lines = BufReader::new(stream).lines();
    let mut counted = false;
    while let Some(line) = lines.next_line().await? {
        if let Some(data) = line.strip_prefix("data: ") {
            if !counted {
                counted = true;
                connected.fetch_add(1, Ordering::Relaxed);
            }
            let value: serde_json::Value = serde_json::from_str(data).unwrap_or_default();
            if let Some(sent) = value["customStatus"]["sentAt"].as_u64() {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)?
                    .as_nanos() as u64;
                delays
                    .lock()
                    .unwrap()
                    .push(now.saturating_sub(sent) as f64 / 1e6);
            }
        }
    }
    Ok(())
}
