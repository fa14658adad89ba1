//! Scanning a big task hub's Instances table, one page after another and in
//! parallel key ranges, under a latency model of a real storage account:
//!
//!   cargo bench --bench scan
//!
//! Starts bundled Azurite emulators and puts a proxy in front of them that
//! delivers each response no earlier than the model says a real account
//! would: a round trip, a service time per request, and a cost per row the
//! query walked through (see `Model`). Loads 100,000 instances with
//! GUID-like ids, half of them Completed, then counts them by status, lists
//! them without input and purges the completed half, each with
//! `scan_concurrency(1)` and with the default; checks that both ways give
//! the same answer, and prints wall time, requests per kind (as the proxy
//! saw them), peak heap and CPU time. Counts and listings over two other id
//! shapes (`order-1` ... `order-N`, and ids sharing a long prefix) show how
//! the split adapts.
//!
//! One emulator walks its whole table for every query, so at 100,000 rows
//! its own time per page exceeds the model's: the bench measures that on
//! one emulator first, then spreads the table over several by key range,
//! as the real service spreads a table over partition servers.
//!
//! Environment (all optional): `DURABLE_STATUS_SCAN_BENCH_ROWS` (100,000),
//! `DURABLE_STATUS_SCAN_BENCH_SHAPE_ROWS` (20,000),
//! `DURABLE_STATUS_SCAN_BENCH_EMULATORS` (16),
//! `DURABLE_STATUS_SCAN_BENCH_ONLY` (a comma-separated choice of `single`,
//! `count`, `list`, `purge` and `shapes`; all of them when unset),
//! `DURABLE_STATUS_SCAN_BENCH_TIMELINE` (set: print every request of every
//! measured run, when it arrived and when its response left, in ms from the
//! run's start), and the model's
//! `DURABLE_STATUS_SCAN_BENCH_ROUND_TRIP_MS` (5),
//! `DURABLE_STATUS_SCAN_BENCH_SERVICE_MS` (3) and
//! `DURABLE_STATUS_SCAN_BENCH_ROW_US` (92).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::ops::Bound;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use azure_core::TransportOptions;
use azure_data_tables::clients::TableServiceClientBuilder;
use azure_data_tables::prelude::TableClient;
use azure_storage::{CloudLocation, StorageCredentials};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use durable_status::emulator::Azurite;
use durable_status::format::keys::escape_key;
use durable_status::{
    Credentials, CustomStatus, InstanceQuery, InstanceStore, JsonText, NewInstance, PurgeFilter,
    RuntimeStatus, StatusCounts, StorageConfig, StoreOptions, DEFAULT_PURGE_CONCURRENCY,
    DEFAULT_SCAN_CONCURRENCY,
};
use futures::{StreamExt, TryStreamExt};
use serde_json::{json, Map, Value};
use time::OffsetDateTime;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

// ---------------------------------------------------------------------------
// Heap accounting

/// Counts live heap bytes and their peak, leaving out the proxy's thread:
/// the proxy stands for the network and the service, not the client.
struct CountingAllocator;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);

thread_local! {
    static UNCOUNTED: Cell<bool> = const { Cell::new(false) };
}

fn counted() -> bool {
    !UNCOUNTED.try_with(Cell::get).unwrap_or(false)
}

unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() && counted() {
            let size = layout.size() as isize;
            let live = LIVE.fetch_add(size, Ordering::Relaxed) + size;
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        if counted() {
            LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Starts a peak measurement; returns the live level it is measured above.
fn reset_peak() -> isize {
    let live = LIVE.load(Ordering::Relaxed);
    PEAK.store(live, Ordering::Relaxed);
    live
}

fn peak_mib_since(base: isize) -> f64 {
    (PEAK.load(Ordering::Relaxed) - base).max(0) as f64 / (1024.0 * 1024.0)
}

// ---------------------------------------------------------------------------
// The latency model

/// What a request to a real account costs, as seen by a client in the same
/// region (sources and reasoning in BENCHMARKS.md). The model does not
/// throttle: a real account's targets (20,000 requests/s, 2,000 entities/s
/// per partition) are not enforced.
#[derive(Debug, Clone, Copy)]
struct Model {
    round_trip: Duration,
    service: Duration,
    per_row: Duration,
}

/// Table Storage stops a query page after five seconds of work.
const MAX_PAGE_WORK: Duration = Duration::from_secs(5);

impl Model {
    fn from_env() -> Result<Model> {
        Ok(Model {
            round_trip: env_duration("DURABLE_STATUS_SCAN_BENCH_ROUND_TRIP_MS", 5.0, 1e-3)?,
            service: env_duration("DURABLE_STATUS_SCAN_BENCH_SERVICE_MS", 3.0, 1e-3)?,
            per_row: env_duration("DURABLE_STATUS_SCAN_BENCH_ROW_US", 92.0, 1e-6)?,
        })
    }

    /// The earliest a response may arrive after its request did.
    fn delay(&self, rows_scanned: u64) -> Duration {
        let work = self
            .per_row
            .saturating_mul(rows_scanned.min(u32::MAX as u64) as u32);
        self.round_trip + self.service + work.min(MAX_PAGE_WORK)
    }
}

fn env_duration(name: &str, default: f64, unit_seconds: f64) -> Result<Duration> {
    let value = match std::env::var(name) {
        Ok(text) => text
            .trim()
            .parse::<f64>()
            .with_context(|| format!("{name}={text}"))?,
        Err(_) => default,
    };
    if !(value >= 0.0 && value.is_finite()) {
        bail!("{name} must be a number of at least 0, got {value}");
    }
    Ok(Duration::from_secs_f64(value * unit_seconds))
}

/// The parts of the bench to run.
struct Parts(Vec<String>);

impl Parts {
    const ALL: [&'static str; 5] = ["single", "count", "list", "purge", "shapes"];

    fn from_env() -> Result<Parts> {
        let chosen = std::env::var("DURABLE_STATUS_SCAN_BENCH_ONLY").unwrap_or_default();
        if chosen.trim().is_empty() {
            return Ok(Parts(Self::ALL.iter().map(|p| p.to_string()).collect()));
        }
        let parts: Vec<String> = chosen.split(',').map(|p| p.trim().to_owned()).collect();
        if let Some(unknown) = parts.iter().find(|p| !Self::ALL.contains(&p.as_str())) {
            bail!(
                "DURABLE_STATUS_SCAN_BENCH_ONLY: unknown part {unknown:?}; the parts are {}",
                Self::ALL.join(", ")
            );
        }
        Ok(Parts(parts))
    }

    fn has(&self, part: &str) -> bool {
        self.0.iter().any(|p| p == part)
    }
}

fn env_count(name: &str, default: usize, least: usize) -> Result<usize> {
    match std::env::var(name) {
        Ok(text) => {
            let n = text
                .trim()
                .replace(['_', ','], "")
                .parse::<usize>()
                .with_context(|| format!("{name}={text}"))?;
            if n < least {
                bail!("{name} must be at least {least}, got {n}");
            }
            Ok(n)
        }
        Err(_) => Ok(default),
    }
}

// ---------------------------------------------------------------------------
// The latency-model proxy

/// What the proxy saw of one kind of request.
#[derive(Debug, Clone, Copy, Default)]
struct KindStats {
    requests: u64,
    /// Rows the service walked through (queries only, from the key ranges).
    rows_scanned: u64,
    /// Rows the responses held (queries only).
    rows_returned: u64,
    /// Query responses with no row.
    empty: u64,
    /// Bytes of the responses, head and body.
    response_bytes: u64,
    /// Time the emulator took, from forwarding the request to the end of
    /// its response.
    upstream: Duration,
    /// The model's delays, summed.
    modeled: Duration,
}

type Stats = BTreeMap<&'static str, KindStats>;

/// One request as the proxy served it, for the timeline.
struct Served {
    arrival: Instant,
    /// The emulator's own time.
    upstream: Duration,
    delivered: Instant,
    kind: &'static str,
    scanned: u64,
    returned: u64,
    emulator: usize,
}

const QUERY_PAGE: &str = "query page";
const QUERY_PROBE: &str = "query probe ($top=1)";

/// A table the proxy knows the keys of.
#[derive(Default)]
struct KnownTable {
    /// Its PartitionKeys: registered by the loader, and kept up to date
    /// with the inserts and deletes that pass through.
    keys: BTreeSet<String>,
    /// The first key of each emulator but the first: emulator `i` holds the
    /// keys from `boundaries[i - 1]` (inclusive) to `boundaries[i]`.
    boundaries: Vec<String>,
}

struct ProxyState {
    model: Model,
    /// The proxy thread's id, for its CPU time.
    thread_id: std::sync::OnceLock<String>,
    emulators: Vec<SocketAddr>,
    tables: Mutex<HashMap<String, KnownTable>>,
    stats: Mutex<Stats>,
    /// Every request served, when the timeline is asked for.
    timeline: Option<Mutex<Vec<Served>>>,
}

/// An HTTP/1.1 proxy on loopback in front of the emulators. Each request is
/// forwarded at once to the emulator that holds its keys; its response is
/// held until `arrival + model delay`, or sent when it comes if the
/// emulator took longer: the emulator's own time is hidden below the
/// model's, never added to it.
///
/// A table may be spread over several emulators by key range, as the real
/// service spreads a table over partition servers: one emulator walks its
/// whole table for every query (see BENCHMARKS.md). A query page then ends
/// at the end of its emulator's range with a continuation to the next one,
/// as the real service's does at a partition server's boundary.
struct Proxy {
    port: u16,
    state: Arc<ProxyState>,
    /// The emulators' processes (table and blob services), for their CPU time.
    emulator_pids: Vec<u32>,
}

/// CPU seconds (user and system) used so far, from `/proc`.
#[derive(Debug, Clone, Copy, Default)]
struct Cpu {
    /// The bench process but the proxy's thread: the library under test.
    client: f64,
    /// The proxy's thread.
    proxy: f64,
    /// The emulators' processes.
    emulators: f64,
}

impl std::ops::Sub for Cpu {
    type Output = Cpu;
    fn sub(self, earlier: Cpu) -> Cpu {
        Cpu {
            client: self.client - earlier.client,
            proxy: self.proxy - earlier.proxy,
            emulators: self.emulators - earlier.emulators,
        }
    }
}

/// The user and system CPU seconds of a `/proc/.../stat` file; 0 when it
/// cannot be read (a process that is gone).
fn cpu_seconds(stat: &str) -> f64 {
    // Linux reports these in USER_HZ, which is 100 on every architecture
    // the bench runs on.
    const TICKS_PER_SECOND: f64 = 100.0;
    let Ok(text) = std::fs::read_to_string(stat) else {
        return 0.0;
    };
    // The command name, in parentheses, may hold spaces: count from after it.
    let Some((_, after_name)) = text.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // After the name: state is field 3 of stat(5), utime 14 and stime 15.
    (ticks(11) + ticks(12)) / TICKS_PER_SECOND
}

impl Proxy {
    fn start(emulators: Vec<SocketAddr>, emulator_pids: Vec<u32>, model: Model) -> Result<Proxy> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let state = Arc::new(ProxyState {
            model,
            thread_id: std::sync::OnceLock::new(),
            emulators,
            tables: Mutex::default(),
            stats: Mutex::default(),
            timeline: std::env::var_os("DURABLE_STATUS_SCAN_BENCH_TIMELINE")
                .map(|_| Mutex::default()),
        });
        let shared = Arc::clone(&state);
        std::thread::Builder::new()
            .name("latency-model-proxy".into())
            .spawn(move || {
                UNCOUNTED.with(|u| u.set(true));
                if let Ok(link) = std::fs::read_link("/proc/thread-self") {
                    let tid = link.file_name().map(|t| t.to_string_lossy().into_owned());
                    let _ = shared.thread_id.set(tid.unwrap_or_default());
                }
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime for the proxy");
                runtime.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("the proxy's listener");
                    while let Ok((client, _)) = listener.accept().await {
                        tokio::spawn(serve(client, Arc::clone(&shared)));
                    }
                });
            })?;
        Ok(Proxy {
            port,
            state,
            emulator_pids,
        })
    }

    /// The CPU time used so far by the client, the proxy and the emulators.
    fn cpu(&self) -> Cpu {
        let process = cpu_seconds("/proc/self/stat");
        let proxy = self.state.thread_id.get().map_or(0.0, |tid| {
            cpu_seconds(&format!("/proc/self/task/{tid}/stat"))
        });
        let emulators = self
            .emulator_pids
            .iter()
            .map(|pid| cpu_seconds(&format!("/proc/{pid}/stat")))
            .sum();
        Cpu {
            client: process - proxy,
            proxy,
            emulators,
        }
    }

    /// `config` with its table endpoint moved behind the proxy.
    fn config(&self, config: &StorageConfig) -> StorageConfig {
        let rest = config
            .table_endpoint
            .split_once("://")
            .map_or(config.table_endpoint.as_str(), |(_, rest)| rest);
        let path = rest.split_once('/').map_or("", |(_, path)| path);
        config
            .clone()
            .with_table_endpoint(format!("http://127.0.0.1:{}/{path}", self.port))
    }

    /// Makes `keys` known in `table`, spread over the first `emulators`
    /// emulators in equal key ranges (set once, on the first call); returns
    /// the boundaries between them.
    fn register(
        &self,
        table: &str,
        keys: impl IntoIterator<Item = String>,
        emulators: usize,
    ) -> Vec<String> {
        let mut tables = self.state.tables.lock().unwrap();
        let known = tables.entry(table.to_owned()).or_default();
        let fresh = known.keys.is_empty();
        known.keys.extend(keys);
        if fresh && emulators > 1 {
            let keys: Vec<&String> = known.keys.iter().collect();
            known.boundaries = (1..emulators)
                .map(|i| keys[i * keys.len() / emulators].clone())
                .collect();
        }
        known.boundaries.clone()
    }

    fn take_stats(&self) -> Stats {
        std::mem::take(&mut *self.state.stats.lock().unwrap())
    }
}

/// The emulator of `boundaries` that holds `key`.
fn emulator_of(boundaries: &[String], key: &str) -> usize {
    boundaries.partition_point(|b| b.as_str() <= key)
}

/// One HTTP message as it went over the wire, and what it carried.
struct Message {
    /// The bytes to forward, unchanged.
    raw: Vec<u8>,
    /// The length of the head (start line and headers) in `raw`.
    head_len: usize,
    /// The request line or status line.
    start: String,
    headers: Vec<(String, String)>,
    /// The body, without chunked framing.
    body: Vec<u8>,
}

impl Message {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }

    fn status(&self) -> u16 {
        self.start
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or(0)
    }

    /// Adds a header to a message read off the wire.
    fn add_header(&mut self, name: &str, value: &str) {
        let line = format!("{name}: {value}\r\n");
        // Before the blank line that ends the head.
        let at = self.head_len - 2;
        self.raw.splice(at..at, line.bytes());
        self.head_len += line.len();
        self.headers
            .push((name.to_ascii_lowercase(), value.to_owned()));
    }
}

/// What a request asks, as far as routing and accounting need.
struct Target {
    method: String,
    /// The table (or `Tables`, `$batch`).
    table: String,
    /// What follows the table name's `(`: `)` for a query,
    /// `PartitionKey='..',RowKey='..')` for one row.
    key_part: String,
    params: HashMap<String, String>,
}

impl Target {
    fn of(request: &Message) -> Target {
        let mut parts = request.start.split(' ');
        let method = parts.next().unwrap_or_default().to_owned();
        let target = parts.next().unwrap_or_default();
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let path = percent_decode(path, false);
        let resource = path.rsplit('/').next().unwrap_or_default();
        let (table, key_part) = resource.split_once('(').unwrap_or((resource, ""));
        Target {
            table: table.to_owned(),
            key_part: key_part.to_owned(),
            params: query_params(query),
            method,
        }
    }

    fn is_query(&self) -> bool {
        self.method == "GET" && self.key_part == ")"
    }

    /// The key range a query reads from where it starts: its filter's key
    /// bounds and the NextPartitionKey it resumes at.
    fn key_bounds(&self) -> (Bound<String>, Bound<String>) {
        let mut lower: Bound<String> = Bound::Unbounded;
        let mut upper: Bound<String> = Bound::Unbounded;
        if let Some(filter) = self.params.get("$filter") {
            for (op, value) in key_comparisons(filter) {
                match op {
                    "ge" => lower = tighter_lower(lower, Bound::Included(value)),
                    "gt" => lower = tighter_lower(lower, Bound::Excluded(value)),
                    "lt" => upper = tighter_upper(upper, Bound::Excluded(value)),
                    "le" => upper = tighter_upper(upper, Bound::Included(value)),
                    "eq" => {
                        lower = tighter_lower(lower, Bound::Included(value.clone()));
                        upper = tighter_upper(upper, Bound::Included(value));
                    }
                    _ => {}
                }
            }
        }
        if let Some(resume) = self
            .params
            .get("NextPartitionKey")
            .and_then(|k| decode_key(k))
        {
            lower = tighter_lower(lower, Bound::Included(resume));
        }
        (lower, upper)
    }

    /// The PartitionKey of a request about one row.
    fn row_key(&self, request: &Message) -> Option<String> {
        match self.method.as_str() {
            "POST" if self.table == "$batch" => {
                // The first operation's key: a batch holds one partition.
                let body = String::from_utf8_lossy(&request.body);
                let at = body.find("PartitionKey=")?;
                let path = body[at..].split([' ', '\r', '\n']).next()?;
                key_in_path(&percent_decode(path, false))
            }
            "POST" => serde_json::from_slice::<Value>(&request.body)
                .ok()
                .and_then(|row| row["PartitionKey"].as_str().map(str::to_owned)),
            _ => key_in_path(&self.key_part),
        }
    }
}

/// Where a request goes, and where a query page that ends its emulator's
/// range goes on.
struct Route {
    emulator: usize,
    next_emulator_starts: Option<String>,
}

impl ProxyState {
    fn route(&self, target: &Target, request: &Message) -> Route {
        let tables = self.tables.lock().unwrap();
        let Some(known) = tables
            .get(&target.table)
            .filter(|t| !t.boundaries.is_empty())
        else {
            return Route {
                emulator: 0,
                next_emulator_starts: None,
            };
        };
        let boundaries = &known.boundaries;
        if !target.is_query() {
            let emulator = target
                .row_key(request)
                .map_or(0, |key| emulator_of(boundaries, &key));
            return Route {
                emulator,
                next_emulator_starts: None,
            };
        }
        let (lower, upper) = target.key_bounds();
        let emulator = match &lower {
            Bound::Included(key) | Bound::Excluded(key) => emulator_of(boundaries, key),
            Bound::Unbounded => 0,
        };
        let next_emulator_starts = boundaries.get(emulator).filter(|next| match &upper {
            Bound::Unbounded => true,
            Bound::Excluded(end) => end > *next,
            Bound::Included(end) => end >= *next,
        });
        Route {
            emulator,
            next_emulator_starts: next_emulator_starts.cloned(),
        }
    }

    /// The request's kind, the rows it scanned and the rows it returned;
    /// keeps the key sets up to date with inserts and deletes.
    fn account(
        &self,
        target: &Target,
        request: &Message,
        response: &Message,
    ) -> (&'static str, u64, u64) {
        let success = response.status() / 100 == 2;
        let mut tables = self.tables.lock().unwrap();
        let known = tables.get_mut(&target.table);
        if target.is_query() {
            let returned = rows_in(&response.body);
            let Some(known) = known else {
                return ("query of another table", returned, returned);
            };
            let top = target
                .params
                .get("$top")
                .and_then(|t| t.parse::<u32>().ok());
            let kind = if top.is_some_and(|t| t <= 1) {
                QUERY_PROBE
            } else {
                QUERY_PAGE
            };
            // From where the page started to where the next one starts.
            let (lower, mut upper) = target.key_bounds();
            if let Some(next) = response
                .header("x-ms-continuation-nextpartitionkey")
                .and_then(decode_key)
            {
                upper = tighter_upper(upper, Bound::Excluded(next));
            }
            return (kind, count_in(&known.keys, lower, upper), returned);
        }
        let kind = match (target.method.as_str(), target.table.as_str()) {
            ("GET", "Tables") => "table lookup",
            ("GET", _) => "point read",
            ("POST", "$batch") => "batch",
            ("POST", "Tables") => "create table",
            ("POST", _) => "insert",
            ("DELETE", "Tables") => "delete table",
            ("DELETE", _) => "delete",
            ("MERGE" | "PATCH", _) => "merge",
            ("PUT", _) => "replace",
            _ => "other",
        };
        if let (true, Some(known), Some(key)) = (success, known, target.row_key(request)) {
            match kind {
                "insert" => {
                    known.keys.insert(key);
                }
                "delete" => {
                    known.keys.remove(&key);
                }
                _ => {}
            }
        }
        (kind, 0, 0)
    }
}

/// How many of `keys` lie between the bounds.
fn count_in(keys: &BTreeSet<String>, lower: Bound<String>, upper: Bound<String>) -> u64 {
    if let (Bound::Included(l) | Bound::Excluded(l), Bound::Included(u) | Bound::Excluded(u)) =
        (&lower, &upper)
    {
        let both_inclusive = matches!((&lower, &upper), (Bound::Included(_), Bound::Included(_)));
        if l > u || (l == u && !both_inclusive) {
            return 0;
        }
    }
    keys.range::<String, _>((lower, upper)).count() as u64
}

type Upstream = (BufReader<OwnedReadHalf>, OwnedWriteHalf);

async fn serve(client: TcpStream, state: Arc<ProxyState>) {
    let _ = client.set_nodelay(true);
    let (client_read, mut client_write) = client.into_split();
    let mut client_read = BufReader::with_capacity(64 * 1024, client_read);
    let mut upstreams: Vec<Option<Upstream>> = state.emulators.iter().map(|_| None).collect();
    loop {
        let request = match read_message(&mut client_read, None).await {
            Ok(Some(request)) => request,
            _ => return,
        };
        let arrival = tokio::time::Instant::now();
        let target = Target::of(&request);
        let route = state.route(&target, &request);
        let upstream = &mut upstreams[route.emulator];
        // A kept-alive upstream connection may have been closed by the
        // emulator while idle; such a request never reached it, so send it
        // again on a fresh connection, once.
        let mut forwarded = None;
        for _attempt in 0..2 {
            if upstream.is_none() {
                let Ok(stream) = TcpStream::connect(state.emulators[route.emulator]).await else {
                    return;
                };
                let _ = stream.set_nodelay(true);
                let (read, write) = stream.into_split();
                *upstream = Some((BufReader::with_capacity(64 * 1024, read), write));
            }
            let (up_read, up_write) = upstream.as_mut().expect("connected");
            let sent = tokio::time::Instant::now();
            let exchanged = async {
                up_write.write_all(&request.raw).await?;
                read_message(up_read, Some(&target.method)).await
            }
            .await;
            match exchanged {
                Ok(Some(response)) => {
                    forwarded = Some((response, sent.elapsed()));
                    break;
                }
                _ => *upstream = None,
            }
        }
        let Some((mut response, upstream_time)) = forwarded else {
            return;
        };
        if let Some(next) = &route.next_emulator_starts {
            if response.status() == 200
                && response
                    .header("x-ms-continuation-nextpartitionkey")
                    .is_none()
            {
                // The rest of the range is the next emulator's: go on there,
                // as the emulator itself says where a page stops.
                response.add_header("x-ms-continuation-NextPartitionKey", &STANDARD.encode(next));
                response.add_header("x-ms-continuation-NextRowKey", &STANDARD.encode(""));
            }
        }
        let (kind, scanned, returned) = state.account(&target, &request, &response);
        let delay = state.model.delay(scanned);
        {
            let mut stats = state.stats.lock().unwrap();
            let entry = stats.entry(kind).or_default();
            entry.requests += 1;
            entry.rows_scanned += scanned;
            entry.rows_returned += returned;
            entry.empty += u64::from(target.is_query() && returned == 0);
            entry.response_bytes += response.raw.len() as u64;
            entry.upstream += upstream_time;
            entry.modeled += delay;
        }
        tokio::time::sleep_until(arrival + delay).await;
        if let Some(timeline) = &state.timeline {
            timeline.lock().unwrap().push(Served {
                arrival: arrival.into_std(),
                upstream: upstream_time,
                delivered: Instant::now(),
                kind,
                scanned,
                returned,
                emulator: route.emulator,
            });
        }
        if client_write.write_all(&response.raw).await.is_err() {
            return;
        }
        if request.closes() || response.closes() {
            let _ = client_write.shutdown().await;
            return;
        }
    }
}

/// Reads one message; `Ok(None)` when the connection closed before it
/// began. `request_method` is set when reading a response.
async fn read_message<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    request_method: Option<&str>,
) -> io::Result<Option<Message>> {
    let mut raw = Vec::new();
    let mut lines = Vec::new();
    loop {
        let from = raw.len();
        if reader.read_until(b'\n', &mut raw).await? == 0 {
            return if raw.is_empty() {
                Ok(None)
            } else {
                Err(io::ErrorKind::UnexpectedEof.into())
            };
        }
        let line = String::from_utf8_lossy(&raw[from..])
            .trim_end_matches(['\r', '\n'])
            .to_owned();
        if line.is_empty() {
            if lines.is_empty() {
                // A stray line break between messages.
                raw.clear();
                continue;
            }
            break;
        }
        lines.push(line);
    }
    let start = lines.remove(0);
    let headers = lines
        .iter()
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let mut message = Message {
        head_len: raw.len(),
        raw,
        start,
        headers,
        body: Vec::new(),
    };
    let bodiless = request_method.is_some_and(|method| {
        let status = message.status();
        method == "HEAD" || status / 100 == 1 || status == 204 || status == 304
    });
    let chunked = message
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let length = message
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok());
    if bodiless {
        return Ok(Some(message));
    }
    if chunked {
        loop {
            let from = message.raw.len();
            if reader.read_until(b'\n', &mut message.raw).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let line = String::from_utf8_lossy(&message.raw[from..]).into_owned();
            let size_text = line.trim().split(';').next().unwrap_or_default();
            let size = usize::from_str_radix(size_text, 16)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "a bad chunk size"))?;
            if size == 0 {
                // Trailers, up to a blank line.
                loop {
                    let from = message.raw.len();
                    if reader.read_until(b'\n', &mut message.raw).await? == 0 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                    if message.raw[from..]
                        .iter()
                        .all(|b| matches!(b, b'\r' | b'\n'))
                    {
                        break;
                    }
                }
                break;
            }
            let from = message.raw.len();
            message.raw.resize(from + size + 2, 0);
            reader.read_exact(&mut message.raw[from..]).await?;
            message
                .body
                .extend_from_slice(&message.raw[from..from + size]);
        }
    } else if let Some(length) = length {
        let from = message.raw.len();
        message.raw.resize(from + length, 0);
        reader.read_exact(&mut message.raw[from..]).await?;
        message.body = message.raw[from..].to_vec();
    } else if request_method.is_some() {
        // A response without a length ends when the connection does.
        let from = message.raw.len();
        reader.read_to_end(&mut message.raw).await?;
        message.body = message.raw[from..].to_vec();
        message.headers.push(("connection".into(), "close".into()));
    }
    Ok(Some(message))
}

fn tighter_lower(a: Bound<String>, b: Bound<String>) -> Bound<String> {
    match (&a, &b) {
        (Bound::Unbounded, _) => b,
        (_, Bound::Unbounded) => a,
        (Bound::Included(x) | Bound::Excluded(x), Bound::Included(y) | Bound::Excluded(y)) => {
            match x.cmp(y) {
                std::cmp::Ordering::Less => b,
                std::cmp::Ordering::Greater => a,
                std::cmp::Ordering::Equal if matches!(a, Bound::Excluded(_)) => a,
                std::cmp::Ordering::Equal => b,
            }
        }
    }
}

fn tighter_upper(a: Bound<String>, b: Bound<String>) -> Bound<String> {
    match (&a, &b) {
        (Bound::Unbounded, _) => b,
        (_, Bound::Unbounded) => a,
        (Bound::Included(x) | Bound::Excluded(x), Bound::Included(y) | Bound::Excluded(y)) => {
            match x.cmp(y) {
                std::cmp::Ordering::Less => a,
                std::cmp::Ordering::Greater => b,
                std::cmp::Ordering::Equal if matches!(a, Bound::Excluded(_)) => a,
                std::cmp::Ordering::Equal => b,
            }
        }
    }
}

/// Each `PartitionKey <op> '<value>'` of an OData filter, the quotes
/// undone. The scans and-combine their key bounds with the other filters,
/// so the tightest bounds are the page's.
fn key_comparisons(filter: &str) -> Vec<(&'static str, String)> {
    let mut found = Vec::new();
    let mut rest = filter;
    while let Some(at) = rest.find("PartitionKey") {
        rest = rest[at + "PartitionKey".len()..].trim_start();
        let Some(op) = ["ge", "gt", "le", "lt", "eq"]
            .into_iter()
            .find(|op| rest.starts_with(op))
        else {
            continue;
        };
        rest = rest[2..].trim_start();
        let Some(quoted) = rest.strip_prefix('\'') else {
            continue;
        };
        let mut value = String::new();
        let mut chars = quoted.char_indices().peekable();
        let mut end = quoted.len();
        while let Some((i, c)) = chars.next() {
            if c == '\'' {
                if chars.peek().is_some_and(|&(_, next)| next == '\'') {
                    chars.next();
                    value.push('\'');
                    continue;
                }
                end = i + 1;
                break;
            }
            value.push(c);
        }
        found.push((op, value));
        rest = &quoted[end.min(quoted.len())..];
    }
    found
}

/// The emulator's continuation keys: the raw key in standard base64.
fn decode_key(text: &str) -> Option<String> {
    STANDARD
        .decode(text.trim())
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
}

/// The PartitionKey of `PartitionKey='...',RowKey='...')`.
fn key_in_path(key_part: &str) -> Option<String> {
    let quoted = key_part.strip_prefix("PartitionKey='")?;
    let end = quoted.find("',RowKey=")?;
    Some(quoted[..end].replace("''", "'"))
}

/// The rows of a query response: the objects of its `value` array, counted
/// by one pass over the bytes (a JSON parser costs the proxy, which shares
/// the cores with the client and the emulators, several times more); a
/// body in another shape is parsed.
fn rows_in(body: &[u8]) -> u64 {
    const VALUE: &[u8] = b"\"value\":[";
    let Some(start) = body.windows(VALUE.len()).position(|w| w == VALUE) else {
        #[derive(serde::Deserialize)]
        struct Rows {
            value: Vec<serde::de::IgnoredAny>,
        }
        return serde_json::from_slice::<Rows>(body).map_or(0, |rows| rows.value.len() as u64);
    };
    let (mut rows, mut depth, mut in_string, mut escaped) = (0, 0u32, false, false);
    for &byte in &body[start + VALUE.len()..] {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'{' | b'[' => {
                rows += u64::from(depth == 0 && byte == b'{');
                depth += 1;
            }
            b']' if depth == 0 => break,
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    rows
}

fn query_params(query: &str) -> HashMap<String, String> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(name, true), percent_decode(value, true))
        })
        .collect()
}

/// Undoes %-escapes (and `+` for a space in a query string).
fn percent_decode(text: &str, plus_is_space: bool) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
                continue;
            }
            (b'+', _) if plus_is_space => out.push(b' '),
            (byte, _) => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---------------------------------------------------------------------------
// Loading

/// Instances created at once while loading.
const LOAD_IN_FLIGHT: usize = 64;

/// A client of one table that keeps its connections alive (the client
/// crate's default HTTP client opens one per request), for loading rows
/// directly: one insert each, as each instance is its own partition and no
/// batch can span two.
fn direct_table(config: &StorageConfig, table: &str) -> Result<TableClient> {
    let credentials = match &config.credentials {
        Credentials::AccountKey { account, key } => StorageCredentials::access_key(
            account.clone(),
            azure_core::auth::Secret::new(key.expose().to_owned()),
        ),
        Credentials::SharedAccessSignature(sas) => StorageCredentials::sas_token(sas.expose())?,
        _ => bail!("unknown credentials"),
    };
    let http = reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_secs(4))
        .build()?;
    let location = CloudLocation::Custom {
        account: config.account.clone(),
        uri: config.table_endpoint.clone(),
    };
    Ok(
        TableServiceClientBuilder::with_location(location, credentials)
            .transport(TransportOptions::new(Arc::new(http)))
            .build()
            .table_client(table),
    )
}

/// A ~1 KiB orchestration input (as in `tests/bytes.rs`).
fn input(i: usize) -> JsonText {
    let items: Vec<_> = (0..18)
        .map(|n| json!({ "sku": format!("SKU-{i:05}-{n:02}"), "quantity": n + 1, "price": 19.99 }))
        .collect();
    let input =
        json!({ "orderId": format!("order-{i:05}"), "customer": "Contoso Ltd.", "items": items });
    JsonText::from_value(&input).expect("a valid input")
}

/// Rows exactly as the store writes them, to copy: one Running with a
/// custom status and one Completed with an output, made in a scratch task
/// hub through the store and read back raw.
struct Templates {
    running: Map<String, Value>,
    completed: Map<String, Value>,
}

impl Templates {
    async fn make(config: &StorageConfig) -> Result<Templates> {
        let hub = hub("Template");
        let store = InstanceStore::connect(config, &hub).await?;
        let direct = direct_table(config, &format!("{hub}Instances"))?;
        let status = CustomStatus::from_value(&json!({ "step": "charged", "attempt": 1 }))?;
        let mut rows = Vec::new();
        for (id, complete) in [("running", false), ("completed", true)] {
            store
                .create(NewInstance::new(id, "ProcessOrder").input(input(0)))
                .await?;
            store.start(id).await?;
            store.set_custom_status(id, Some(&status)).await?;
            if complete {
                let output = json!({ "shipped": true, "trackingId": "TRK00000000" });
                store
                    .complete(id, Some(JsonText::from_value(&output)?))
                    .await?;
            }
            let mut row = direct
                .partition_key_client(escape_key(id))
                .entity_client("")
                .get::<Map<String, Value>>()
                .await?
                .entity;
            // The service's own properties: metadata, and the Timestamp it sets.
            row.retain(|name, _| !name.starts_with("odata.") && !name.starts_with("Timestamp"));
            rows.push(row);
        }
        let completed = rows.pop().expect("two rows");
        let running = rows.pop().expect("two rows");
        Ok(Templates { running, completed })
    }

    fn row(&self, id: &str, i: usize, completed: bool) -> Map<String, Value> {
        let mut row = if completed {
            self.completed.clone()
        } else {
            self.running.clone()
        };
        row.insert("PartitionKey".into(), escape_key(id).into());
        row.insert(
            "ExecutionId".into(),
            format!("{:032x}", fastrand::u128(..)).into(),
        );
        row.insert("Input".into(), input(i).as_str().into());
        row
    }
}

/// Every other instance is Completed (by its position in `ids`, so the
/// completed half is spread over the whole key space), the rest Running.
fn is_completed(i: usize) -> bool {
    i.is_multiple_of(2)
}

/// A task hub's Instances table on the emulators, loaded directly.
struct Hub {
    name: String,
    table: String,
    /// One client per emulator holding part of the table.
    clients: Vec<TableClient>,
    boundaries: Vec<String>,
}

impl Hub {
    /// Creates the table on the first `spread` emulators and tells the
    /// proxy its keys.
    async fn create(
        name: &str,
        configs: &[StorageConfig],
        spread: usize,
        proxy: &Proxy,
        ids: &[String],
    ) -> Result<Hub> {
        let name = hub(name);
        let table = format!("{name}Instances");
        let mut clients = Vec::new();
        for config in &configs[..spread] {
            InstanceStore::connect(config, &name).await?;
            clients.push(direct_table(config, &table)?);
        }
        let boundaries = proxy.register(&table, ids.iter().map(|id| escape_key(id)), spread);
        Ok(Hub {
            name,
            table,
            clients,
            boundaries,
        })
    }

    /// Deletes the table from every emulator that holds part of it.
    async fn delete(&self) -> Result<()> {
        for client in &self.clients {
            client.delete().await?;
        }
        Ok(())
    }

    /// Inserts the instances `ids[i]` for the `i` in `which`, each in the
    /// emulator that holds its key; returns rows/s.
    async fn load(
        &self,
        templates: &Templates,
        ids: &[String],
        which: impl Iterator<Item = usize>,
    ) -> Result<f64> {
        let started = Instant::now();
        let loaded = futures::stream::iter(which)
            .map(|i| async move {
                let row = templates.row(&ids[i], i, is_completed(i));
                let client = &self.clients[emulator_of(&self.boundaries, &escape_key(&ids[i]))];
                client.insert::<_, Value>(&row)?.await?;
                anyhow::Ok(())
            })
            .buffer_unordered(LOAD_IN_FLIGHT)
            .try_fold(0usize, |n, ()| futures::future::ready(Ok(n + 1)))
            .await?;
        Ok(loaded as f64 / started.elapsed().as_secs_f64())
    }
}

/// 32-digit hex ids, as Durable Functions makes them (random GUIDs);
/// seeded, so that every run loads the same ones.
fn guid_ids(n: usize, seed: u64) -> Vec<String> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..n).map(|_| format!("{:032x}", rng.u128(..))).collect()
}

fn hub(name: &str) -> String {
    let suffix: String = std::iter::repeat_with(fastrand::alphanumeric)
        .take(8)
        .collect();
    format!("{name}{suffix}")
}

// ---------------------------------------------------------------------------
// Measuring

/// The ids of a listing, as a count and two order-free hashes: equal for
/// the same set of ids, without holding 100,000 ids in memory.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct IdSet {
    count: u64,
    sum: u64,
    xor: u64,
}

impl IdSet {
    fn add(&mut self, id: &str) {
        let hash = |salt: u8| {
            let mut hasher = DefaultHasher::new();
            (salt, id).hash(&mut hasher);
            hasher.finish()
        };
        self.count += 1;
        self.sum = self.sum.wrapping_add(hash(0));
        self.xor ^= hash(1);
    }
}

/// One operation at one scan concurrency.
struct Run {
    operation: String,
    concurrency: usize,
    wall: Duration,
    peak_mib: f64,
    stats: Stats,
    cpu: Cpu,
}

impl Run {
    fn requests(&self) -> u64 {
        self.stats.values().map(|s| s.requests).sum()
    }

    fn kind(&self, kind: &str) -> KindStats {
        self.stats.get(kind).copied().unwrap_or_default()
    }

    /// The model's delays of the scan's requests, summed: what a sequential
    /// scan takes under the model alone.
    fn modeled_scan(&self) -> Duration {
        self.kind(QUERY_PAGE).modeled + self.kind(QUERY_PROBE).modeled
    }

    /// The least the model allows with `in_flight` scan requests at once:
    /// the scan spread over them, or a purge's deletes spread over its
    /// delete concurrency, whichever is longer (they overlap).
    fn model_floor(&self, in_flight: usize) -> Duration {
        let deletes = self.kind("delete").modeled / DEFAULT_PURGE_CONCURRENCY as u32;
        (self.modeled_scan() / in_flight as u32).max(deletes)
    }
}

/// Runs `op` with the proxy's counts and the heap peak taken around it.
async fn measure<T, Fut>(
    proxy: &Proxy,
    operation: &str,
    concurrency: usize,
    op: impl FnOnce() -> Fut,
) -> Result<(T, Run)>
where
    Fut: std::future::Future<Output = Result<T>>,
{
    proxy.take_stats();
    let base = reset_peak();
    let cpu_before = proxy.cpu();
    let started = Instant::now();
    let value = op().await?;
    let wall = started.elapsed();
    let cpu = proxy.cpu() - cpu_before;
    if let Some(timeline) = &proxy.state.timeline {
        let ms = |at: Instant| at.saturating_duration_since(started).as_secs_f64() * 1e3;
        let mut served = std::mem::take(&mut *timeline.lock().unwrap());
        served.sort_by_key(|s| s.arrival);
        for s in served.iter().filter(|s| s.arrival >= started) {
            eprintln!(
                "    {operation}, {concurrency}: {:8.1} -> {:8.1} ms, emulator {:2} {:6.1} ms, \
                 {}, {} rows scanned, {} returned",
                ms(s.arrival),
                ms(s.delivered),
                s.emulator,
                s.upstream.as_secs_f64() * 1e3,
                s.kind,
                s.scanned,
                s.returned,
            );
        }
    }
    let run = Run {
        cpu,
        operation: operation.to_owned(),
        concurrency,
        wall,
        peak_mib: peak_mib_since(base),
        stats: proxy.take_stats(),
    };
    eprintln!(
        "  {operation}, scan_concurrency {concurrency}: {:.2} s, {} requests; CPU s: client \
         {:.2}, proxy {:.2}, emulators {:.2}",
        wall.as_secs_f64(),
        run.requests(),
        cpu.client,
        cpu.proxy,
        cpu.emulators,
    );
    Ok((value, run))
}

fn store(config: &StorageConfig, hub: &str, concurrency: usize) -> Result<InstanceStore> {
    let options = StoreOptions::default().scan_concurrency(concurrency);
    Ok(InstanceStore::open(config, hub, options)?)
}

async fn count(store: &InstanceStore) -> Result<StatusCounts> {
    Ok(store.count_by_status(&InstanceQuery::new()).await?)
}

async fn list_without_input(store: &InstanceStore) -> Result<IdSet> {
    let query = InstanceQuery::new()
        .include_input(false)
        .include_output(false);
    let mut instances = store.query_unordered(&query);
    let mut ids = IdSet::default();
    while let Some(instance) = instances.try_next().await? {
        ids.add(&instance.instance_id);
    }
    Ok(ids)
}

fn purge_filter() -> PurgeFilter {
    PurgeFilter::created_from(OffsetDateTime::UNIX_EPOCH).statuses([RuntimeStatus::Completed])
}

fn counts_text(counts: &StatusCounts) -> String {
    counts
        .iter()
        .map(|(status, n)| format!("{status} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Runs come in pairs: sequential, then parallel.
fn print_runs(title: &str, runs: &[Run]) {
    println!("\n{title}\n");
    println!(
        "| operation | scan_concurrency | wall (s) | speed-up | requests | query pages | probes | rows returned | peak heap (MiB) | CPU s: client / proxy / emulators |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for pair in runs.chunks(2) {
        let sequential = pair[0].wall.as_secs_f64();
        for run in pair {
            let pages = run.kind(QUERY_PAGE);
            let probes = run.kind(QUERY_PROBE);
            println!(
                "| {} | {} | {:.2} | {:.1}x | {} | {} | {} | {} | {:.1} | {:.2} / {:.2} / {:.2} |",
                run.operation,
                run.concurrency,
                run.wall.as_secs_f64(),
                sequential / run.wall.as_secs_f64(),
                thousands(run.requests()),
                thousands(pages.requests),
                thousands(probes.requests),
                thousands(pages.rows_returned + probes.rows_returned),
                run.peak_mib,
                run.cpu.client,
                run.cpu.proxy,
                run.cpu.emulators,
            );
        }
    }
}

fn print_kinds(runs: &[Run]) {
    println!(
        "\nRequests per kind, as the proxy saw them (emulator ms: the emulator's own mean time \
         per request, queueing included)\n"
    );
    println!(
        "| operation | scan_concurrency | kind | requests | rows scanned | rows returned | empty | \
         response bytes per row | emulator ms |"
    );
    println!("|---|---:|---|---:|---:|---:|---:|---:|---:|");
    for run in runs {
        for (kind, s) in &run.stats {
            println!(
                "| {} | {} | {kind} | {} | {} | {} | {} | {} | {:.1} |",
                run.operation,
                run.concurrency,
                thousands(s.requests),
                thousands(s.rows_scanned),
                thousands(s.rows_returned),
                thousands(s.empty),
                if s.rows_returned > 0 {
                    format!("{:.1}", s.response_bytes as f64 / s.rows_returned as f64)
                } else {
                    format!(
                        "{:.0} a request",
                        s.response_bytes as f64 / s.requests.max(1) as f64
                    )
                },
                s.upstream.as_secs_f64() * 1e3 / s.requests.max(1) as f64,
            );
        }
    }
}

fn address_of(config: &StorageConfig) -> Result<SocketAddr> {
    let Some(rest) = config.table_endpoint.strip_prefix("http://") else {
        bail!("the proxy needs an http endpoint on this machine");
    };
    let authority = rest.split('/').next().unwrap_or(rest);
    authority
        .to_socket_addrs()?
        .next()
        .with_context(|| format!("no address for {authority}"))
}

#[tokio::main]
async fn main() -> Result<()> {
    // `cargo bench` passes `--bench`; nothing else is expected.
    let rows = env_count("DURABLE_STATUS_SCAN_BENCH_ROWS", 100_000, 2)?;
    let shape_rows = env_count("DURABLE_STATUS_SCAN_BENCH_SHAPE_ROWS", 20_000, 2)?;
    let spread = env_count("DURABLE_STATUS_SCAN_BENCH_EMULATORS", 16, 1)?;
    let model = Model::from_env()?;
    let parts = Parts::from_env()?;
    // The proxy's row count, on a body with what could mislead it.
    let tricky = br#"{"odata.metadata":"x","value":[{"A":"}{\"[","B@odata.type":"Edm.Int64"},{"C":"\\"},{}]}"#;
    assert_eq!(rows_in(tricky), 3);
    assert_eq!(rows_in(br#"{"value": [{"A": 1}]}"#), 1);
    let parallel = DEFAULT_SCAN_CONCURRENCY;
    let emulators = (0..spread)
        .map(|_| Azurite::start())
        .collect::<durable_status::Result<Vec<_>>>()?;
    let configs: Vec<StorageConfig> = emulators.iter().map(Azurite::config).collect();
    let proxy = Proxy::start(
        configs.iter().map(address_of).collect::<Result<_>>()?,
        emulators.iter().flat_map(Azurite::pids).collect(),
        model,
    )?;
    let modeled = proxy.config(&configs[0]);
    println!(
        "durable-status scan benchmark: {} instances, {spread} emulators, default \
         scan_concurrency {parallel}",
        thousands(rows as u64)
    );
    println!(
        "model: {} ms round trip + {} ms per request + {} us per row scanned \
         (a sequential 1,000-row page: {} ms); no throttling",
        model.round_trip.as_secs_f64() * 1e3,
        model.service.as_secs_f64() * 1e3,
        model.per_row.as_secs_f64() * 1e6,
        model.delay(1000).as_millis(),
    );
    let templates = Templates::make(&configs[0]).await?;
    let ids = guid_ids(rows, 42);
    let completed = (0..rows).filter(|&i| is_completed(i)).count() as u64;
    let mut expected_ids = IdSet::default();
    ids.iter().for_each(|id| expected_ids.add(id));

    let mut single_runs = Vec::new();
    if parts.has("single") {
        // One emulator holding the whole table: its own time per page, and
        // what it does to the comparison.
        let single = Hub::create("Single", &configs, 1, &proxy, &ids).await?;
        let rate = single.load(&templates, &ids, 0..rows).await?;
        println!(
            "\nOne emulator: {} instances loaded at {rate:.0}/s ({LOAD_IN_FLIGHT} inserts in flight)",
            thousands(rows as u64)
        );
        let mut alone = Vec::new();
        for concurrency in [1, parallel] {
            let started = Instant::now();
            let counts = count(&store(&configs[0], &single.name, concurrency)?).await?;
            assert_eq!(counts.total(), rows as u64);
            alone.push(started.elapsed().as_secs_f64());
        }
        println!(
            "count_by_status on the emulator alone (no proxy): {:.2} s sequential, {:.0} ms a \
             1,000-row page; {:.2} s at scan_concurrency {parallel}",
            alone[0],
            alone[0] * 1e3 / rows.div_ceil(1000) as f64,
            alone[1],
        );
        for concurrency in [1, parallel] {
            let store = store(&modeled, &single.name, concurrency)?;
            let (counts, run) =
                measure(&proxy, "count_by_status, one emulator", concurrency, || {
                    count(&store)
                })
                .await?;
            assert_eq!(counts.get(RuntimeStatus::Completed), completed);
            single_runs.push(run);
        }
        print_runs(
            &format!(
                "{} instances on one emulator, under the model",
                thousands(rows as u64)
            ),
            &single_runs,
        );
        let own = single_runs[0].kind(QUERY_PAGE);
        println!(
            "\nThe emulator's own time per 1,000-row page, sequential: {:.0} ms (the model's: {:.0} ms)",
            own.upstream.as_secs_f64() * 1e3 / own.requests.max(1) as f64,
            own.modeled.as_secs_f64() * 1e3 / own.requests.max(1) as f64,
        );
        // Gone before the main hub is measured: the first emulator would
        // otherwise hold 16 times the others' rows in its heap, and
        // collect its garbage the slower for it.
        single.delete().await?;
    }

    // The main task hub, spread over the emulators by key range.
    let mut runs = Vec::new();
    if ["count", "list", "purge"]
        .iter()
        .any(|part| parts.has(part))
    {
        let main_hub = Hub::create("Scan", &configs, spread, &proxy, &ids).await?;
        let rate = main_hub.load(&templates, &ids, 0..rows).await?;
        println!(
            "\n{spread} emulators: {} instances loaded at {rate:.0}/s",
            thousands(rows as u64)
        );
        let mut answers = Vec::new();
        for concurrency in [1, parallel] {
            if !parts.has("count") {
                break;
            }
            let store = store(&modeled, &main_hub.name, concurrency)?;
            let (counts, run) =
                measure(&proxy, "count_by_status", concurrency, || count(&store)).await?;
            assert_eq!(counts.total(), rows as u64, "{}", counts_text(&counts));
            assert_eq!(counts.get(RuntimeStatus::Completed), completed);
            answers.push(counts_text(&counts));
            runs.push(run);
        }
        if let [sequential, parallel] = &answers[..] {
            assert_eq!(sequential, parallel, "the counts differ");
        }
        for concurrency in [1, parallel] {
            if !parts.has("list") {
                break;
            }
            let store = store(&modeled, &main_hub.name, concurrency)?;
            let (listed, run) = measure(&proxy, "list without input", concurrency, || {
                list_without_input(&store)
            })
            .await?;
            assert_eq!(
                listed, expected_ids,
                "the listing's ids differ from the loaded ones"
            );
            runs.push(run);
        }
        for concurrency in [1, parallel] {
            if !parts.has("purge") {
                break;
            }
            if concurrency != 1 {
                // The completed half again, for the second purge.
                let half = (0..rows).filter(|&i| is_completed(i));
                proxy.register(
                    &main_hub.table,
                    half.clone().map(|i| escape_key(&ids[i])),
                    spread,
                );
                let rate = main_hub.load(&templates, &ids, half).await?;
                eprintln!("  completed half loaded again at {rate:.0}/s");
            }
            let store = store(&modeled, &main_hub.name, concurrency)?;
            let (purged, run) = measure(&proxy, "purge completed half", concurrency, || async {
                Ok(store.purge(&purge_filter()).await?)
            })
            .await?;
            assert_eq!(purged.deleted, completed, "{purged:?}");
            assert_eq!(purged.skipped, 0, "{purged:?}");
            runs.push(run);
            let left = count(&store).await?;
            assert_eq!(
                left.total(),
                rows as u64 - completed,
                "{}",
                counts_text(&left)
            );
            assert_eq!(left.get(RuntimeStatus::Completed), 0);
        }
        let mut same = Vec::new();
        if let Some(counts) = answers.first() {
            same.push(format!("counts {counts}"));
        }
        if parts.has("list") {
            same.push(format!(
                "the listing's {} ids hash alike and match the loaded ones",
                thousands(rows as u64)
            ));
        }
        if parts.has("purge") {
            same.push(format!(
                "each purge deleted {} instances, skipped none, and left no Completed one",
                thousands(completed)
            ));
        }
        println!("\nSame answers both ways: {}.", same.join("; "));
        print_runs(
            &format!(
                "{} instances, GUID-like ids, half Completed, under the model",
                thousands(rows as u64)
            ),
            &runs,
        );

        // Extrapolated: the model's cost of a page is per row, so ten times the
        // rows is ten times the pages, at the same concurrency.
        let scale = 1_000_000.0 / rows as f64;
        println!("\nExtrapolated to 1,000,000 instances (x{scale:.0} the pages)\n");
        println!(
            "| operation | sequential (s) | scan_concurrency {parallel} (s) | model's floor, sequential (s) | model's floor, {parallel} in flight (s) |"
        );
        println!("|---|---:|---:|---:|---:|");
        for pair in runs.chunks(2) {
            println!(
                "| {} | {:.0} | {:.0} | {:.0} | {:.1} |",
                pair[0].operation,
                pair[0].wall.as_secs_f64() * scale,
                pair[1].wall.as_secs_f64() * scale,
                pair[0].model_floor(1).as_secs_f64() * scale,
                pair[0].model_floor(parallel).as_secs_f64() * scale,
            );
        }
    }

    // Other id shapes, counted: the split must find where the keys differ.
    let mut shape_runs = Vec::new();
    let shapes: [(&str, Vec<String>); 2] = [
        (
            "order-1 ... order-N",
            (1..=shape_rows).map(|i| format!("order-{i}")).collect(),
        ),
        (
            "tenant-42/job-<hex>",
            guid_ids(shape_rows, 7)
                .into_iter()
                .map(|hex| format!("tenant-42/job-{hex}"))
                .collect(),
        ),
    ];
    for (label, ids) in &shapes {
        if !parts.has("shapes") {
            break;
        }
        let shape_hub = Hub::create("Shape", &configs, spread, &proxy, ids).await?;
        shape_hub.load(&templates, ids, 0..ids.len()).await?;
        let mut answers = Vec::new();
        for concurrency in [1, parallel] {
            let store = store(&modeled, &shape_hub.name, concurrency)?;
            let (counts, run) = measure(&proxy, &format!("count, {label}"), concurrency, || {
                count(&store)
            })
            .await?;
            assert_eq!(counts.total(), ids.len() as u64);
            answers.push(counts_text(&counts));
            shape_runs.push(run);
        }
        assert_eq!(answers[0], answers[1], "{label}: the counts differ");
        let mut expected = IdSet::default();
        ids.iter().for_each(|id| expected.add(id));
        for concurrency in [1, parallel] {
            let store = store(&modeled, &shape_hub.name, concurrency)?;
            let (listed, run) = measure(&proxy, &format!("list, {label}"), concurrency, || {
                list_without_input(&store)
            })
            .await?;
            assert_eq!(listed, expected, "{label}: the listing's ids differ");
            shape_runs.push(run);
        }
    }
    print_runs(
        &format!(
            "Counts and listings without input over {} instances of other id shapes, under the model",
            thousands(shape_rows as u64)
        ),
        &shape_runs,
    );
    let mut all = single_runs;
    all.extend(runs);
    all.extend(shape_runs);
    print_kinds(&all);
    Ok(())
}
