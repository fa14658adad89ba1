//! Throughput of the store against a table service, in one run:
//!
//!   cargo bench --bench store
//!
//! Starts the bundled Azurite unless `DURABLE_STATUS_BENCH_CONNECTION_STRING`
//! names another endpoint. Reports point reads/s and custom status updates/s
//! through the store and made directly with azure_data_tables, listing rows/s
//! and peak heap with and without 4 KiB inputs, and purge time with the
//! bounded concurrent purge and one delete at a time.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use azure_data_tables::clients::TableServiceClientBuilder;
use azure_data_tables::prelude::IfMatchCondition;
use azure_storage::{CloudLocation, StorageCredentials};
use durable_status::emulator::Azurite;
use durable_status::{
    Credentials, CustomStatus, InstanceQuery, InstanceStore, JsonText, NewInstance, PurgeFilter,
    StorageConfig,
};
use futures::{StreamExt, TryStreamExt};
use serde_json::{json, Map, Value};

/// Counts live heap bytes and their peak, to show that listings stream.
struct CountingAllocator;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Peak heap above the level when it was called, in MiB.
fn reset_peak() -> usize {
    let live = LIVE.load(Ordering::Relaxed);
    PEAK.store(live, Ordering::Relaxed);
    live
}

fn peak_mib_since(base: usize) -> f64 {
    (PEAK.load(Ordering::Relaxed).saturating_sub(base)) as f64 / (1024.0 * 1024.0)
}

const IN_FLIGHT: usize = 16;
const POINT_OPS: usize = 4_000;
const ROUNDS: usize = 3;
const LISTED: usize = 10_000;
const PURGED: usize = 2_000;
const IN_FLIGHT_PURGE: usize = durable_status::DEFAULT_PURGE_CONCURRENCY;
/// Added each way by the latency proxy: 4 ms round trips, about what a
/// client in the same Azure region sees.
const ONE_WAY_DELAY: Duration = Duration::from_millis(2);

/// A loopback TCP proxy in front of `config`'s endpoint that delivers every
/// chunk `delay` after it was read, in each direction: latency without a
/// bandwidth limit. Returns the configuration that goes through it.
async fn latency_proxy(config: &StorageConfig, delay: Duration) -> Result<StorageConfig> {
    let rest = config
        .table_endpoint
        .strip_prefix("http://")
        .expect("an http endpoint on this machine");
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let authority = authority.to_owned();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(&authority).await else {
                continue;
            };
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            tokio::spawn(delayed_copy(client_read, server_write, delay));
            tokio::spawn(delayed_copy(server_read, client_write, delay));
        }
    });
    Ok(config
        .clone()
        .with_table_endpoint(format!("http://127.0.0.1:{port}/{path}")))
}

async fn delayed_copy(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let writer = tokio::spawn(async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    });
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0
            || tx
                .send((tokio::time::Instant::now() + delay, buf[..n].to_vec()))
                .is_err()
        {
            break;
        }
    }
    drop(tx);
    let _ = writer.await;
}

fn direct_client(config: &StorageConfig, table: &str) -> azure_data_tables::prelude::TableClient {
    let credentials = match &config.credentials {
        Credentials::AccountKey { account, key } => StorageCredentials::access_key(
            account.clone(),
            azure_core::auth::Secret::new(key.expose().to_owned()),
        ),
        Credentials::SharedAccessSignature(sas) => {
            StorageCredentials::sas_token(sas.expose()).expect("a SAS")
        }
        _ => unreachable!("no other credentials"),
    };
    let location = CloudLocation::Custom {
        account: config.account.clone(),
        uri: config.table_endpoint.clone(),
    };
    TableServiceClientBuilder::with_location(location, credentials)
        .build()
        .table_client(table)
}

/// Runs `op(i)` for i in 0..n with `IN_FLIGHT` at once; returns ops/s.
async fn rate<F, Fut>(n: usize, op: F) -> Result<f64>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let started = Instant::now();
    futures::stream::iter(0..n)
        .map(op)
        .buffer_unordered(IN_FLIGHT)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn hub(name: &str) -> String {
    let suffix: String = std::iter::repeat_with(fastrand::alphanumeric)
        .take(8)
        .collect();
    format!("{name}{suffix}")
}

async fn populate(
    store: &InstanceStore,
    n: usize,
    input: Option<&JsonText>,
    complete: bool,
) -> Result<()> {
    futures::stream::iter(0..n)
        .map(|i| async move {
            let id = format!("inst-{i:06}");
            let mut new = NewInstance::new(id.clone(), "BenchOrchestration");
            if let Some(input) = input {
                new = new.input(input.clone());
            }
            store.create(new).await?;
            if complete {
                store.complete(&id, None).await?;
            }
            Ok::<_, durable_status::Error>(())
        })
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    // `cargo bench` passes `--bench`; nothing else is expected.
    let (_azurite, config) = match std::env::var("DURABLE_STATUS_BENCH_CONNECTION_STRING") {
        Ok(text) => (None, StorageConfig::from_connection_string(&text)?),
        Err(_) => {
            let azurite = Azurite::start()?;
            let config = azurite.config();
            (Some(azurite), config)
        }
    };
    println!("durable-status benchmark against {}", config.table_endpoint);
    println!(
        "{IN_FLIGHT} requests in flight; median of {ROUNDS} rounds of {POINT_OPS} operations\n"
    );

    // Point reads and custom status updates: the store vs the client crate.
    let store = InstanceStore::connect(&config, &hub("Point")).await?;
    populate(&store, 1_000, None, false).await?;
    let direct = direct_client(&config, &format!("{}Instances", store.task_hub()));
    let id = |i: usize| format!("inst-{:06}", (i * 7919) % 1_000);

    let (mut store_reads, mut direct_reads, mut store_updates, mut direct_updates) =
        (vec![], vec![], vec![], vec![]);
    for _ in 0..ROUNDS {
        store_reads.push(
            rate(POINT_OPS, |i| {
                let store = &store;
                async move {
                    store.get(&id(i)).await?.expect("exists");
                    Ok(())
                }
            })
            .await?,
        );
        direct_reads.push(
            rate(POINT_OPS, |i| {
                let direct = &direct;
                async move {
                    let response = direct
                        .partition_key_client(id(i))
                        .entity_client("")
                        .get::<Map<String, Value>>()
                        .await?;
                    assert!(response.entity.contains_key("Name"));
                    Ok(())
                }
            })
            .await?,
        );
        store_updates.push(
            rate(POINT_OPS, |i| {
                let store = &store;
                async move {
                    let status = CustomStatus::from_value(
                        &json!({"progress": i as f64 / POINT_OPS as f64}),
                    )?;
                    store.set_custom_status(&id(i), Some(&status)).await?;
                    Ok(())
                }
            })
            .await?,
        );
        direct_updates.push(
            rate(POINT_OPS, |i| {
                let direct = &direct;
                async move {
                    let status = json!({"progress": i as f64 / POINT_OPS as f64}).to_string();
                    let body = json!({
                        "CustomStatus": status,
                        "LastUpdatedTime": time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339)?,
                        "LastUpdatedTime@odata.type": "Edm.DateTime",
                    });
                    direct.partition_key_client(id(i)).entity_client("").merge(&body, IfMatchCondition::Any)?.await?;
                    Ok(())
                }
            })
            .await?,
        );
    }
    let (sr, dr, su, du) = (
        median(store_reads),
        median(direct_reads),
        median(store_updates),
        median(direct_updates),
    );
    println!("| operation | store (ops/s) | azure_data_tables directly (ops/s) | store / direct |");
    println!("|---|---:|---:|---:|");
    println!("| point read | {sr:.0} | {dr:.0} | {:.2} |", sr / dr);
    println!(
        "| custom status update | {su:.0} | {du:.0} | {:.2} |",
        su / du
    );

    // Listing 10,000 instances with 4 KiB inputs.
    let store = InstanceStore::connect(&config, &hub("List")).await?;
    let input = JsonText::from_value(&"x".repeat(4 * 1024 - 2))?;
    let started = Instant::now();
    populate(&store, LISTED, Some(&input), false).await?;
    let setup = started.elapsed();
    println!(
        "\n{LISTED} instances with 4 KiB inputs created in {:.1} s (32 in flight)\n",
        setup.as_secs_f64()
    );
    println!(
        "| listing {LISTED} instances (page size 1000) | rows/s | peak heap while listing (MiB) |"
    );
    println!("|---|---:|---:|");
    for (label, query) in [
        ("with input", InstanceQuery::new().page_size(1000)),
        (
            "without input (`$select`)",
            InstanceQuery::new().page_size(1000).include_input(false),
        ),
    ] {
        let mut rates = Vec::new();
        let mut peaks = Vec::new();
        for _ in 0..ROUNDS {
            let base = reset_peak();
            let started = Instant::now();
            let mut rows = 0usize;
            let mut stream = store.query(&query);
            while let Some(instance) = stream.next().await {
                instance?;
                rows += 1;
            }
            assert_eq!(rows, LISTED);
            rates.push(rows as f64 / started.elapsed().as_secs_f64());
            peaks.push(peak_mib_since(base));
        }
        println!("| {label} | {:.0} | {:.1} |", median(rates), median(peaks));
    }

    // Purging 2,000 completed instances: on loopback, and with a network
    // round trip like a real account's.
    println!("\n| purge {PURGED} completed instances | {IN_FLIGHT_PURGE} in flight (s) | one at a time (s) | speed-up |");
    println!("|---|---:|---:|---:|");
    let delayed = latency_proxy(&config, ONE_WAY_DELAY).await?;
    for (label, target) in [
        ("loopback, no added latency".to_string(), config.clone()),
        (
            format!("{} ms round trip added", 2 * ONE_WAY_DELAY.as_millis()),
            delayed,
        ),
    ] {
        let mut times = Vec::new();
        for concurrency in [IN_FLIGHT_PURGE, 1] {
            let store = InstanceStore::connect(&target, &hub("Purge")).await?;
            populate(&store, PURGED, None, true).await?;
            let filter = PurgeFilter::created_from(
                time::OffsetDateTime::now_utc() - time::Duration::hours(1),
            )
            .concurrency(concurrency);
            let started = Instant::now();
            let done = store.purge(&filter).await?;
            times.push(started.elapsed().as_secs_f64());
            assert_eq!(done.deleted, PURGED as u64);
        }
        println!(
            "| {label} | {:.2} | {:.2} | {:.1}x |",
            times[0],
            times[1],
            times[1] / times[0]
        );
    }
    Ok(())
}
