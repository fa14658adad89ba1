//! Installs and starts the Azurite emulator (its table and blob services),
//! for tests, benchmarks and the demo.
//!
//! # Where it installs
//!
//! The recipe (`package.json`, `package-lock.json`, `service.js` and
//! `table-server.js` from the repository's `azurite/` folder) is embedded in the binary, so a
//! program built on one machine needs nothing from that machine's source
//! tree. On first use it is written to a per-user cache folder and installed
//! there with `npm ci`:
//!
//! 1. `$DURABLE_STATUS_AZURITE_DIR` when set ([`AZURITE_DIR_VARIABLE`]), used
//!    as is: files it already has are kept, missing ones are written;
//! 2. else `$XDG_CACHE_HOME/durable-status/azurite-<hash>`;
//! 3. else `$HOME/.cache/durable-status/azurite-<hash>`,
//!
//! where `<hash>` is a short hash of the embedded `package-lock.json`. The
//! cache is shared by every checkout, build and test binary of the user, and
//! keyed by the pin: a new pin installs in a folder of its own and never
//! runs an old install, and binaries of different pins can run side by side.
//! [`Azurite::install_dir`] tells which folder that is, and
//! [`Azurite::start_in`] uses a folder of the caller's choice instead.
//!
//! Installs need Node.js 20 or later and npm on `PATH`, and the npm registry
//! (or npm's own cache) on first use. Concurrent callers (test binaries run
//! in parallel) take turns with an OS file lock in the folder, which the
//! kernel releases when its holder dies. An install counts only once npm has
//! finished it, and only for the `package-lock.json` it was made from: a
//! folder whose lock file changes is installed again.
//!
//! # Its lifetime
//!
//! Each service runs in a Node.js process of its own on a free loopback
//! port, in memory, and exits when the [`Azurite`] value is dropped or the
//! process that started it ends in any way (it watches its standard input,
//! which only this process holds).

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::{Error, Result, StorageConfig};

/// The environment variable that names the folder to install Azurite in,
/// instead of the per-user cache folder. The folder is used as is: files of
/// the recipe that it already holds are kept (a caller may pin another
/// Azurite there), missing ones are written.
pub const AZURITE_DIR_VARIABLE: &str = "DURABLE_STATUS_AZURITE_DIR";

/// The install recipe, embedded at build time: (file name, contents).
const RECIPE: [(&str, &str); 4] = [
    ("package.json", include_str!("../azurite/package.json")),
    (LOCK_FILE, PINNED_LOCK),
    (SERVER_SCRIPT, include_str!("../azurite/service.js")),
    (
        "table-server.js",
        include_str!("../azurite/table-server.js"),
    ),
];
const LOCK_FILE: &str = "package-lock.json";
/// The embedded `package-lock.json`: the pin, whose hash names the cache folder.
const PINNED_LOCK: &str = include_str!("../azurite/package-lock.json");
/// Runs one of Azurite's services in a Node.js process; a flag chooses it.
const SERVER_SCRIPT: &str = "service.js";
/// Written into `node_modules` once `npm ci` has succeeded: the hash of the
/// `package-lock.json` it installed.
const INSTALL_STAMP: &str = "node_modules/.durable-status-install";
/// The subfolder of the user's cache folder.
const CACHE_SUBDIR: &str = "durable-status";
/// What an install needs, said in every error about running node or npm.
const NODE_REQUIREMENT: &str = "Node.js 20 or later and npm on PATH";

const START_TIMEOUT: Duration = Duration::from_secs(30);
const INSTALL_TIMEOUT: Duration = Duration::from_secs(300);
const PORT_ATTEMPTS: usize = 5;

/// A running Azurite: its table service and its blob service.
#[derive(Debug)]
pub struct Azurite {
    table: Service,
    blob: Service,
    /// `http` or `https`.
    scheme: &'static str,
}

/// How [`Azurite::start_with`] runs the emulator: over HTTP with Shared Key
/// and SAS by default.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct AzuriteOptions {
    /// Serve HTTPS with this certificate and key (PEM files) instead of
    /// HTTP. The certificate must name `127.0.0.1` (an IP SAN) and must not
    /// be a CA certificate.
    pub https: Option<(PathBuf, PathBuf)>,
    /// Accept bearer tokens too (Azurite's `--oauth basic`): it checks
    /// their lifetime, issuer and audience, not their signature, and only
    /// over HTTPS.
    pub oauth: bool,
}

impl AzuriteOptions {
    /// Serves HTTPS with this certificate and key (PEM files).
    pub fn https(mut self, certificate: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.https = Some((certificate.into(), key.into()));
        self
    }

    /// Accepts bearer tokens (`--oauth basic`).
    pub fn oauth(mut self, oauth: bool) -> Self {
        self.oauth = oauth;
        self
    }

    /// Azurite's own flags for these options.
    fn azurite_flags(&self) -> Vec<std::ffi::OsString> {
        let mut flags = Vec::new();
        if self.oauth {
            flags.extend(["--oauth".into(), "basic".into()]);
        }
        if let Some((certificate, key)) = &self.https {
            flags.extend([
                "--cert".into(),
                certificate.clone().into_os_string(),
                "--key".into(),
                key.clone().into_os_string(),
            ]);
        }
        flags
    }
}

/// One of Azurite's services, in a process of its own.
#[derive(Debug)]
struct Service {
    child: Child,
    // Held open for the service's lifetime: when it closes, the service exits.
    stdin: Option<ChildStdin>,
    port: u16,
}

/// Azurite's services this launcher runs: the name its script takes and the
/// line it prints once it listens.
#[derive(Debug, Clone, Copy)]
enum ServiceKind {
    Table,
    Blob,
}

impl ServiceKind {
    fn name(self) -> &'static str {
        match self {
            ServiceKind::Table => "table",
            ServiceKind::Blob => "blob",
        }
    }

    fn ready_line(self) -> &'static str {
        match self {
            ServiceKind::Table => "Table service successfully started",
            ServiceKind::Blob => "Blob service successfully listens",
        }
    }
}

impl Azurite {
    /// The folder [`Azurite::start`] installs in: `$DURABLE_STATUS_AZURITE_DIR`,
    /// else `$XDG_CACHE_HOME/durable-status/azurite-<hash>`, else
    /// `$HOME/.cache/durable-status/azurite-<hash>` (`<hash>`: a short hash of
    /// the pinned `package-lock.json`). Empty variables count as unset, and
    /// so do relative `XDG_CACHE_HOME` and `HOME`.
    ///
    /// # Errors
    ///
    /// [`Error::Emulator`] when none of the three variables is usable.
    pub fn install_dir() -> Result<PathBuf> {
        install_location().map(|(dir, _)| dir)
    }

    /// Writes the pinned recipe to [`Azurite::install_dir`] (files missing or
    /// different there; under `$DURABLE_STATUS_AZURITE_DIR` only missing
    /// ones), installs it with `npm ci` unless it is installed (saying so on
    /// stderr), then starts the emulator on a free loopback port.
    ///
    /// # Errors
    ///
    /// [`Error::Emulator`] when no folder can be chosen or written, npm or
    /// node cannot run or fail, or the emulator does not get ready in time.
    pub fn start() -> Result<Self> {
        let (dir, existing) = install_location()?;
        Self::prepare_and_start(&dir, existing, &AzuriteOptions::default())
    }

    /// Like [`Azurite::start`], with these options: over HTTPS, with bearer
    /// tokens accepted.
    ///
    /// # Errors
    ///
    /// As for [`Azurite::start`].
    pub fn start_with(options: AzuriteOptions) -> Result<Self> {
        let (dir, existing) = install_location()?;
        Self::prepare_and_start(&dir, existing, &options)
    }

    /// Like [`Azurite::start`], in the caller's folder `dir` (created when
    /// missing). Files of the recipe that `dir` already holds are kept, so a
    /// caller may pin another Azurite there; missing ones are written.
    ///
    /// # Errors
    ///
    /// As for [`Azurite::start`].
    pub fn start_in(dir: &Path) -> Result<Self> {
        Self::prepare_and_start(dir, Existing::Keep, &AzuriteOptions::default())
    }

    fn prepare_and_start(dir: &Path, existing: Existing, options: &AzuriteOptions) -> Result<Self> {
        write_recipe(dir, existing)?;
        install_if_missing(dir)?;
        let flags = options.azurite_flags();
        Ok(Azurite {
            table: Service::start(dir, ServiceKind::Table, &flags)?,
            blob: Service::start(dir, ServiceKind::Blob, &flags)?,
            scheme: if options.https.is_some() {
                "https"
            } else {
                "http"
            },
        })
    }

    /// The table service's process id.
    pub fn pid(&self) -> u32 {
        self.table.child.id()
    }

    /// The process ids of every service.
    pub fn pids(&self) -> Vec<u32> {
        vec![self.table.child.id(), self.blob.child.id()]
    }

    /// The port the table service listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.table.port
    }

    /// The port the blob service listens on (127.0.0.1).
    pub fn blob_port(&self) -> u16 {
        self.blob.port
    }

    /// The table endpoint, `http://127.0.0.1:PORT/devstoreaccount1`.
    pub fn table_endpoint(&self) -> String {
        self.config().table_endpoint
    }

    /// The blob endpoint, `http://127.0.0.1:PORT/devstoreaccount1` (`https`
    /// when started so).
    pub fn blob_endpoint(&self) -> String {
        format!(
            "{}://127.0.0.1:{}/{}",
            self.scheme,
            self.blob.port,
            crate::config::EMULATOR_ACCOUNT
        )
    }

    /// A configuration for the emulator's development account, both services.
    pub fn config(&self) -> StorageConfig {
        StorageConfig::emulator_at(&format!("{}://127.0.0.1:{}", self.scheme, self.table.port))
            .with_blob_endpoint(self.blob_endpoint())
    }

    /// A connection string for it, for tools that take one.
    pub fn connection_string(&self) -> String {
        format!(
            "DefaultEndpointsProtocol={scheme};AccountName={account};AccountKey={key};\
             TableEndpoint={table};BlobEndpoint={blob};",
            scheme = self.scheme,
            account = crate::config::EMULATOR_ACCOUNT,
            key = crate::config::EMULATOR_ACCOUNT_KEY,
            table = self.table_endpoint(),
            blob = self.blob_endpoint(),
        )
    }
}

impl Service {
    /// Starts a service on a free port (another, should another process
    /// take the port first).
    fn start(dir: &Path, kind: ServiceKind, flags: &[std::ffi::OsString]) -> Result<Self> {
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port()?;
            match Self::start_on(dir, kind, port, flags) {
                Ok(service) => return Ok(service),
                Err(e) if e.to_string().contains("EADDRINUSE") => last_error = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_error.unwrap_or_else(|| Error::Emulator("no free port".into())))
    }

    fn start_on(
        dir: &Path,
        kind: ServiceKind,
        port: u16,
        flags: &[std::ffi::OsString],
    ) -> Result<Self> {
        let script = dir.join(SERVER_SCRIPT);
        let ready_line = kind.ready_line();
        let mut child = Command::new("node")
            .arg(&script)
            .args(server_args(kind, port))
            .args(if flags.is_empty() { None } else { Some("--") })
            .args(flags)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                Error::Emulator(format!(
                    "cannot run `node {}`: {e} (it needs {NODE_REQUIREMENT})",
                    script.display()
                ))
            })?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut stderr = child.stderr.take().expect("stderr is piped");

        // Read stdout on a thread until the ready line, then keep draining it.
        let (ready_tx, ready_rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut ready_tx = Some(ready_tx);
            for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
                if line.contains(ready_line) {
                    if let Some(tx) = ready_tx.take() {
                        let _ = tx.send(());
                    }
                }
            }
        });
        // Keep only the end of stderr: enough to say why it failed to start,
        // bounded however long the emulator runs.
        let (stderr_tx, stderr_rx) = mpsc::channel();
        std::thread::spawn(move || {
            const KEEP: usize = 8 * 1024;
            let mut tail: Vec<u8> = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                tail.extend_from_slice(&buf[..n]);
                if tail.len() > 2 * KEEP {
                    tail.drain(..tail.len() - KEEP);
                }
            }
            let _ = stderr_tx.send(String::from_utf8_lossy(&tail).into_owned());
        });

        let deadline = Instant::now() + START_TIMEOUT;
        let mut service = Service { child, stdin, port };
        loop {
            match ready_rx.recv_timeout(Duration::from_millis(50)) {
                Ok(()) => return Ok(service),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                // Its stdout closed: it is exiting, and try_wait will say so.
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    std::thread::sleep(Duration::from_millis(50))
                }
            }
            if let Some(status) = service
                .child
                .try_wait()
                .map_err(|e| Error::Emulator(e.to_string()))?
            {
                let stderr = stderr_rx
                    .recv_timeout(Duration::from_secs(2))
                    .unwrap_or_default();
                return Err(Error::Emulator(format!(
                    "Azurite's {} service in {} exited ({status}) before it was ready on port {port}: {}",
                    kind.name(),
                    dir.display(),
                    stderr.trim()
                )));
            }
            if Instant::now() > deadline {
                return Err(Error::Emulator(format!(
                    "Azurite's {} service in {} did not get ready on port {port} within {START_TIMEOUT:?}",
                    kind.name(),
                    dir.display()
                )));
            }
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The flags of the server script: which service, where, and that it exits
/// with its standard input.
fn server_args(kind: ServiceKind, port: u16) -> Vec<String> {
    [
        "--service",
        kind.name(),
        "--host",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--exit-with-stdin",
    ]
    .map(String::from)
    .to_vec()
}

fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .map_err(|e| Error::Emulator(format!("cannot bind a loopback port: {e}")))?;
    listener
        .local_addr()
        .map(|addr| addr.port())
        .map_err(|e| Error::Emulator(e.to_string()))
}

/// What to do with a file of the recipe that the folder holds with other
/// contents than the embedded one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Existing {
    /// Rewrite it: the folder is ours (the version-keyed cache folder).
    Replace,
    /// Keep it: the folder is the caller's.
    Keep,
}

/// The install folder from the environment, and how to treat its files.
fn install_location() -> Result<(PathBuf, Existing)> {
    choose_install_dir(
        std::env::var_os(AZURITE_DIR_VARIABLE).as_deref(),
        std::env::var_os("XDG_CACHE_HOME").as_deref(),
        std::env::var_os("HOME").as_deref(),
    )
}

/// The install folder given the values of `DURABLE_STATUS_AZURITE_DIR`,
/// `XDG_CACHE_HOME` and `HOME`.
fn choose_install_dir(
    azurite_dir: Option<&OsStr>,
    xdg_cache_home: Option<&OsStr>,
    home: Option<&OsStr>,
) -> Result<(PathBuf, Existing)> {
    if let Some(dir) = azurite_dir.filter(|v| !v.is_empty()) {
        return Ok((PathBuf::from(dir), Existing::Keep));
    }
    // The XDG spec: an empty or relative XDG_CACHE_HOME is to be ignored.
    let absolute = |v: &&OsStr| Path::new(v).is_absolute();
    let cache = match (xdg_cache_home.filter(absolute), home.filter(absolute)) {
        (Some(xdg), _) => PathBuf::from(xdg),
        (None, Some(home)) => Path::new(home).join(".cache"),
        (None, None) => {
            return Err(Error::Emulator(format!(
                "cannot choose a folder to install Azurite in: none of \
                 {AZURITE_DIR_VARIABLE}, XDG_CACHE_HOME (absolute) or HOME (absolute) is set; \
                 set {AZURITE_DIR_VARIABLE} to a writable folder"
            )))
        }
    };
    Ok((
        cache.join(CACHE_SUBDIR).join(versioned_name()),
        Existing::Replace,
    ))
}

/// `azurite-<hash>`: the cache folder's name for the embedded pin.
fn versioned_name() -> String {
    format!("azurite-{}", short_hash(PINNED_LOCK.as_bytes()))
}

/// 12 hex digits of the 64-bit FNV-1a hash: stable across Rust versions and
/// platforms, unlike `std`'s hashers.
fn short_hash(bytes: &[u8]) -> String {
    format!("{:016x}", crate::format::digest::fnv1a(bytes))[..12].to_string()
}

/// Writes the embedded recipe into `dir` (created when missing): files that
/// are missing, and with [`Existing::Replace`] files that differ. Each is
/// written to a temporary name and renamed, so a concurrent reader sees the
/// old file or the new one, never a part. Returns the names written.
fn write_recipe(dir: &Path, existing: Existing) -> Result<Vec<&'static str>> {
    std::fs::create_dir_all(dir).map_err(|e| {
        Error::Emulator(format!(
            "cannot create the Azurite folder {}: {e} (use a writable folder: \
             {AZURITE_DIR_VARIABLE} names one)",
            dir.display()
        ))
    })?;
    let mut written = Vec::new();
    for (name, contents) in RECIPE {
        let path = dir.join(name);
        let write = match std::fs::read(&path) {
            Ok(current) => current != contents.as_bytes() && existing == Existing::Replace,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
            Err(e) => {
                return Err(Error::Emulator(format!(
                    "cannot read {}: {e} (remove it, or set {AZURITE_DIR_VARIABLE} to another \
                     folder)",
                    path.display()
                )))
            }
        };
        if write {
            write_atomically(&path, contents.as_bytes())?;
            written.push(name);
        }
    }
    Ok(written)
}

/// Writes `path` through a temporary file beside it and a rename.
fn write_atomically(path: &Path, contents: &[u8]) -> Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = path.with_file_name(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = std::fs::write(&temp, contents).and_then(|()| std::fs::rename(&temp, path));
    result.map_err(|e| {
        let _ = std::fs::remove_file(&temp);
        Error::Emulator(format!(
            "cannot write {}: {e} (use a writable folder: {AZURITE_DIR_VARIABLE} names one)",
            path.display()
        ))
    })
}

/// Azurite's entry point is there, npm finished the install (it writes its
/// hidden lockfile last: an interrupted install does not count), and the
/// install is of the folder's current `package-lock.json` (our stamp, written
/// after `npm ci` succeeded, holds its hash).
fn installed(dir: &Path) -> bool {
    dir.join("node_modules/azurite/dist/src/table/main.js")
        .is_file()
        && dir.join("node_modules/.package-lock.json").is_file()
        && match (
            std::fs::read(dir.join(LOCK_FILE)),
            std::fs::read_to_string(dir.join(INSTALL_STAMP)),
        ) {
            (Ok(lock), Ok(stamp)) => stamp.trim() == short_hash(&lock),
            _ => false,
        }
}

/// Runs `npm ci` in `dir` unless Azurite is installed there; concurrent
/// callers (test binaries run in parallel) wait for the one that holds the
/// lock.
fn install_if_missing(dir: &Path) -> Result<()> {
    if installed(dir) {
        return Ok(());
    }
    if !dir.join(LOCK_FILE).is_file() {
        return Err(Error::Emulator(format!(
            "{} holds no {LOCK_FILE} to install Azurite from",
            dir.display()
        )));
    }
    // Wait longer than an install may take, so a waiter never gives up on
    // an install that is about to finish.
    let wait = INSTALL_TIMEOUT + Duration::from_secs(60);
    let Some(lock) = InstallLock::acquire(dir, wait, || installed(dir))? else {
        return Ok(()); // another process installed it meanwhile
    };
    let result = run_npm_ci(dir);
    drop(lock);
    result
}

/// An OS lock on a file beside the install: the kernel releases it when its
/// holder exits in any way (an install interrupted by Ctrl-C included), so a
/// stale lock cannot block later runs.
struct InstallLock {
    _file: std::fs::File,
}

impl InstallLock {
    /// Waits up to `timeout` for the lock; `Ok(None)` when `done()` turns
    /// true meanwhile.
    fn acquire(dir: &Path, timeout: Duration, done: impl Fn() -> bool) -> Result<Option<Self>> {
        let path = dir.join(".install.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::Emulator(format!("cannot open {}: {e}", path.display())))?;
        let deadline = Instant::now() + timeout;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(Some(InstallLock { _file: file })),
                Err(std::fs::TryLockError::WouldBlock) => {}
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(Error::Emulator(format!(
                        "cannot lock {}: {e}",
                        path.display()
                    )))
                }
            }
            if done() {
                return Ok(None);
            }
            if Instant::now() >= deadline {
                return Err(Error::Emulator(format!(
                    "waited {timeout:?} for another install of Azurite in {}: a process \
                     still holds {} (a stuck `npm ci`?)",
                    dir.display(),
                    path.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn run_npm_ci(dir: &Path) -> Result<()> {
    if installed(dir) {
        return Ok(());
    }
    // The lock file this install is of, read before npm reads it: if it
    // changes meanwhile, the stamp will not match it and a later start
    // installs again.
    let lock = std::fs::read(dir.join(LOCK_FILE)).map_err(|e| {
        Error::Emulator(format!(
            "cannot read {}: {e}",
            dir.join(LOCK_FILE).display()
        ))
    })?;
    eprintln!(
        "Installing the pinned Azurite in {} (npm ci)...",
        dir.display()
    );
    let mut child = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            Error::Emulator(format!(
                "cannot run `npm ci` to install Azurite in {}: {e} (it needs {NODE_REQUIREMENT})",
                dir.display()
            ))
        })?;
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + INSTALL_TIMEOUT;
    let status = loop {
        if let Some(status) = child
            .try_wait()
            .map_err(|e| Error::Emulator(e.to_string()))?
        {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::Emulator(format!(
                "`npm ci` in {} did not finish within {INSTALL_TIMEOUT:?} \
                 (is the npm registry reachable?)",
                dir.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let errors = errors.join().unwrap_or_default();
    let finished = dir
        .join("node_modules/azurite/dist/src/table/main.js")
        .is_file()
        && dir.join("node_modules/.package-lock.json").is_file();
    if !status.success() || !finished {
        return Err(Error::Emulator(format!(
            "`npm ci` in {} failed ({status}): {} (an install needs {NODE_REQUIREMENT}, and \
             the npm registry or npm's cache)",
            dir.display(),
            npm_summary(&errors)
        )));
    }
    write_atomically(&dir.join(INSTALL_STAMP), short_hash(&lock).as_bytes())
}

/// What npm said went wrong: its error lines without the usage text it
/// appends, at most 20; else the last 20 lines.
fn npm_summary(stderr: &str) -> String {
    const MAX: usize = 20;
    let errors: Vec<&str> = stderr
        .lines()
        .filter_map(|l| {
            l.strip_prefix("npm error")
                .or_else(|| l.strip_prefix("npm ERR!"))
        })
        .map(str::trim)
        .take_while(|l| *l != "Usage:")
        .filter(|l| !l.is_empty())
        .take(MAX)
        .collect();
    if !errors.is_empty() {
        return errors.join("\n");
    }
    let lines: Vec<&str> = stderr.lines().collect();
    lines[lines.len().saturating_sub(MAX)..]
        .join("\n")
        .trim()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names the lock folder for [`hold_install_lock`], run as a child process.
    const HOLDER_DIR: &str = "DURABLE_STATUS_TEST_LOCK_HOLDER_DIR";
    /// What the holder prints once it holds the lock.
    const LOCKED: &str = "install-lock-held";

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("durable-status-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn os(s: &str) -> Option<&OsStr> {
        Some(OsStr::new(s))
    }

    #[test]
    fn the_folder_is_the_variable_then_the_xdg_cache_then_home() {
        let name = versioned_name();
        assert!(name.starts_with("azurite-") && name.len() == "azurite-".len() + 12);
        assert_eq!(
            choose_install_dir(os("/opt/az"), os("/xdg"), os("/home/u")).unwrap(),
            (PathBuf::from("/opt/az"), Existing::Keep),
            "the variable, used as is"
        );
        assert_eq!(
            choose_install_dir(os("relative/az"), None, None).unwrap(),
            (PathBuf::from("relative/az"), Existing::Keep)
        );
        assert_eq!(
            choose_install_dir(None, os("/xdg"), os("/home/u")).unwrap(),
            (
                Path::new("/xdg/durable-status").join(&name),
                Existing::Replace
            )
        );
        for xdg in [None, os(""), os("relative/cache")] {
            assert_eq!(
                choose_install_dir(os(""), xdg, os("/home/u")).unwrap(),
                (
                    Path::new("/home/u/.cache/durable-status").join(&name),
                    Existing::Replace
                ),
                "XDG_CACHE_HOME {xdg:?} is ignored"
            );
        }
        for home in [None, os(""), os("relative")] {
            let err = choose_install_dir(None, None, home)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(AZURITE_DIR_VARIABLE) && err.contains("HOME"),
                "{err}"
            );
        }
    }

    #[test]
    fn the_hash_is_stable() {
        // FNV-1a 64 test vectors: the folder name must not change with Rust.
        assert_eq!(short_hash(b""), "cbf29ce48422");
        assert_eq!(short_hash(b"a"), "af63dc4c8601");
    }

    #[test]
    fn the_recipe_is_written_once_and_rewritten_when_changed() {
        let dir = scratch("recipe").join("new/folder");
        let all = ["package.json", LOCK_FILE, SERVER_SCRIPT, "table-server.js"];
        assert_eq!(write_recipe(&dir, Existing::Replace).unwrap(), all);
        for (name, contents) in RECIPE {
            assert_eq!(std::fs::read_to_string(dir.join(name)).unwrap(), contents);
        }
        assert!(write_recipe(&dir, Existing::Replace).unwrap().is_empty());

        std::fs::write(dir.join(SERVER_SCRIPT), "changed").unwrap();
        std::fs::remove_file(dir.join("package.json")).unwrap();
        assert_eq!(
            write_recipe(&dir, Existing::Replace).unwrap(),
            ["package.json", SERVER_SCRIPT]
        );
        assert_eq!(
            std::fs::read_to_string(dir.join(SERVER_SCRIPT)).unwrap(),
            RECIPE[2].1
        );
        assert!(write_recipe(&dir, Existing::Replace).unwrap().is_empty());

        // A caller's folder keeps its own files; missing ones are written.
        std::fs::write(dir.join(LOCK_FILE), "their own pin").unwrap();
        std::fs::remove_file(dir.join(SERVER_SCRIPT)).unwrap();
        assert_eq!(write_recipe(&dir, Existing::Keep).unwrap(), [SERVER_SCRIPT]);
        assert_eq!(
            std::fs::read_to_string(dir.join(LOCK_FILE)).unwrap(),
            "their own pin"
        );
        assert!(write_recipe(&dir, Existing::Keep).unwrap().is_empty());

        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "package-lock.json",
                "package.json",
                SERVER_SCRIPT,
                "table-server.js"
            ]
        );
        let _ = std::fs::remove_dir_all(dir.parent().unwrap().parent().unwrap());
    }

    #[test]
    fn an_unwritable_folder_is_a_clear_error() {
        let dir = scratch("unwritable");
        let file = dir.join("a-file");
        std::fs::write(&file, "").unwrap();
        let err = write_recipe(&file, Existing::Replace)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&file.display().to_string()) && err.contains(AZURITE_DIR_VARIABLE),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn an_interrupted_install_does_not_count() {
        let dir = scratch("partial");
        std::fs::write(dir.join(LOCK_FILE), "pin one").unwrap();
        let main = dir.join("node_modules/azurite/dist/src/table");
        std::fs::create_dir_all(&main).unwrap();
        std::fs::write(main.join("main.js"), "").unwrap();
        assert!(!installed(&dir), "npm did not finish");
        std::fs::write(dir.join("node_modules/.package-lock.json"), "{}").unwrap();
        assert!(!installed(&dir), "npm finished, but not one we ran");
        std::fs::write(dir.join(INSTALL_STAMP), short_hash(b"pin one")).unwrap();
        assert!(installed(&dir));
        // Another pin in the folder: its install is still to do.
        std::fs::write(dir.join(LOCK_FILE), "pin two").unwrap();
        assert!(!installed(&dir));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn npm_errors_are_kept_without_the_usage_text() {
        let stderr = "npm warn Unknown user config \"nodedir\".\n\
                      npm error code EUSAGE\n\
                      npm error\n\
                      npm error The `npm ci` command can only install with an existing package-lock.json\n\
                      npm error\n\
                      npm error Usage:\n\
                      npm error npm ci\n\
                      npm error   --install-strategy\n";
        assert_eq!(
            npm_summary(stderr),
            "code EUSAGE\nThe `npm ci` command can only install with an existing package-lock.json"
        );
        let other: String = (1..=30).map(|i| format!("line {i}\n")).collect();
        let summary = npm_summary(&other);
        assert!(
            summary.starts_with("line 11\n") && summary.ends_with("line 30"),
            "{summary}"
        );
    }

    /// Run by `a_lock_dies_with_its_holder` in a child process: takes the
    /// lock in the folder named by `HOLDER_DIR`, says so, and holds it until
    /// killed (or until its standard input closes).
    #[test]
    #[ignore = "a helper that a_lock_dies_with_its_holder runs in a child process"]
    fn hold_install_lock() {
        let Some(dir) = std::env::var_os(HOLDER_DIR) else {
            return; // not run as the child process
        };
        let lock = InstallLock::acquire(Path::new(&dir), Duration::from_secs(60), || false)
            .expect("the lock")
            .expect("not done");
        {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            writeln!(out, "{LOCKED}").unwrap();
            out.flush().unwrap();
        }
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        drop(lock);
    }

    #[test]
    fn a_lock_dies_with_its_holder() {
        let dir = scratch("dead-holder");
        // Another process takes the lock, then is killed (as by Ctrl-C).
        let module = module_path!();
        let helper = format!(
            "{}::hold_install_lock",
            module.split_once("::").map_or(module, |(_, rest)| rest)
        );
        let mut holder = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", &helper, "--ignored", "--nocapture"])
            .env(HOLDER_DIR, &dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = holder.stdout.take().unwrap();
        let (lines_tx, lines_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Only a guard against a child that never says it holds the lock.
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut seen = Vec::new();
        let locked = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines_rx.recv_timeout(left) {
                Ok(line) if line.contains(LOCKED) => break true,
                Ok(line) => seen.push(line),
                Err(_) => break false,
            }
        };
        if !locked {
            let _ = holder.kill();
            let output = holder.wait_with_output().unwrap();
            panic!(
                "the holder did not take the lock: {seen:?}\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let err = InstallLock::acquire(&dir, Duration::ZERO, || false)
            .err()
            .expect("the child holds the lock");
        assert!(err.to_string().contains("waited"), "{err}");

        holder.kill().unwrap();
        holder.wait().unwrap();
        // Its lock went with it: taken at the first try (the long timeout is
        // only a guard).
        assert!(
            InstallLock::acquire(&dir, Duration::from_secs(60), || false)
                .unwrap()
                .is_some(),
            "released"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_live_lock_is_waited_for() {
        let dir = scratch("live-lock");
        let held = InstallLock::acquire(&dir, Duration::from_secs(60), || false)
            .unwrap()
            .unwrap();
        let started = Instant::now();
        let err = InstallLock::acquire(&dir, Duration::from_millis(500), || false)
            .err()
            .expect("times out");
        assert!(err.to_string().contains("waited"), "{err}");
        // It gave up no sooner than told to.
        assert!(started.elapsed() >= Duration::from_millis(500));
        // Someone else finishing the install ends the wait.
        assert!(InstallLock::acquire(&dir, Duration::from_secs(60), || true)
            .unwrap()
            .is_none());
        drop(held);
        assert!(
            InstallLock::acquire(&dir, Duration::from_secs(60), || false)
                .unwrap()
                .is_some(),
            "released"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
