//! Starts the Azurite table emulator bundled in the repository's `azurite/`
//! folder, for tests, benchmarks and the demo.
//!
//! The emulator runs on a free loopback port, in memory, and exits when the
//! [`Azurite`] value is dropped or the process that started it ends in any
//! way (it watches its standard input, which only this process holds).

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::config::StorageConfig;
use crate::error::{Error, Result};

/// The variable that points at another `azurite/` folder.
pub const AZURITE_DIR_VARIABLE: &str = "DURABLE_STATUS_AZURITE_DIR";

const READY_LINE: &str = "successfully started";
const START_TIMEOUT: Duration = Duration::from_secs(30);
const INSTALL_TIMEOUT: Duration = Duration::from_secs(300);
const PORT_ATTEMPTS: usize = 5;

/// A running Azurite table service.
#[derive(Debug)]
pub struct Azurite {
    child: Child,
    // Held open for the emulator's lifetime: when it closes, the emulator exits.
    stdin: Option<ChildStdin>,
    port: u16,
}

impl Azurite {
    /// The `azurite/` folder of this source tree, or the one named by
    /// `DURABLE_STATUS_AZURITE_DIR`.
    pub fn bundled_dir() -> PathBuf {
        std::env::var_os(AZURITE_DIR_VARIABLE)
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("azurite"))
    }

    /// Installs (when missing) and starts the bundled emulator.
    pub fn start_bundled() -> Result<Self> {
        Self::start(&Self::bundled_dir())
    }

    /// Installs the pinned Azurite in `dir` when missing (with `npm ci`,
    /// saying so on stderr), then starts it on a free loopback port.
    pub fn start(dir: &Path) -> Result<Self> {
        install_if_missing(dir)?;
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port()?;
            match Self::start_on(dir, port) {
                Ok(azurite) => return Ok(azurite),
                // Another process may have taken the port meanwhile: try another.
                Err(e) if e.to_string().contains("EADDRINUSE") => last_error = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_error.unwrap_or_else(|| Error::Emulator("no free port".into())))
    }

    fn start_on(dir: &Path, port: u16) -> Result<Self> {
        let script = dir.join("table-server.js");
        let mut child = Command::new("node")
            .arg(&script)
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--exit-with-stdin",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                Error::Emulator(format!(
                    "cannot run `node {}`: {e} (Node.js 18 or later must be on PATH)",
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
                if line.contains(READY_LINE) {
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
        let mut azurite = Azurite { child, stdin, port };
        loop {
            match ready_rx.recv_timeout(Duration::from_millis(50)) {
                Ok(()) => return Ok(azurite),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                // Its stdout closed: it is exiting, and try_wait will say so.
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    std::thread::sleep(Duration::from_millis(50))
                }
            }
            if let Some(status) = azurite
                .child
                .try_wait()
                .map_err(|e| Error::Emulator(e.to_string()))?
            {
                let stderr = stderr_rx
                    .recv_timeout(Duration::from_secs(2))
                    .unwrap_or_default();
                return Err(Error::Emulator(format!(
                    "Azurite exited ({status}) before it was ready on port {port}: {}",
                    stderr.trim()
                )));
            }
            if Instant::now() > deadline {
                return Err(Error::Emulator(format!(
                    "Azurite did not get ready on port {port} within {START_TIMEOUT:?}"
                )));
            }
        }
    }

    /// The emulator's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The table endpoint, `http://127.0.0.1:PORT/devstoreaccount1`.
    pub fn table_endpoint(&self) -> String {
        self.config().table_endpoint
    }

    /// A configuration for the emulator's development account.
    pub fn config(&self) -> StorageConfig {
        StorageConfig::emulator_at(&format!("http://127.0.0.1:{}", self.port))
    }

    /// A connection string for it, for tools that take one.
    pub fn connection_string(&self) -> String {
        format!(
            "DefaultEndpointsProtocol=http;AccountName={account};AccountKey={key};TableEndpoint={endpoint};",
            account = crate::config::EMULATOR_ACCOUNT,
            key = crate::config::EMULATOR_ACCOUNT_KEY,
            endpoint = self.table_endpoint(),
        )
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .map_err(|e| Error::Emulator(format!("cannot bind a loopback port: {e}")))?;
    listener
        .local_addr()
        .map(|addr| addr.port())
        .map_err(|e| Error::Emulator(e.to_string()))
}

/// Azurite's entry point is there, and npm finished the install (it writes
/// its hidden lockfile last): an interrupted install does not count.
fn installed(dir: &Path) -> bool {
    dir.join("node_modules/azurite/dist/src/table/main.js")
        .is_file()
        && dir.join("node_modules/.package-lock.json").is_file()
}

/// Runs `npm ci` in `dir` unless Azurite is there; concurrent callers (test
/// binaries run in parallel) wait for the one that holds the lock.
fn install_if_missing(dir: &Path) -> Result<()> {
    if installed(dir) {
        return Ok(());
    }
    if !dir.join("package-lock.json").is_file() {
        return Err(Error::Emulator(format!(
            "{} holds no package-lock.json to install Azurite from",
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
            if Instant::now() > deadline {
                return Err(Error::Emulator(format!(
                    "waited {timeout:?} for another install of Azurite (it holds {})",
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
                "cannot run npm: {e} (Node.js and npm must be on PATH)"
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
                "`npm ci` in {} did not finish within {INSTALL_TIMEOUT:?}",
                dir.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let errors = errors.join().unwrap_or_default();
    if !status.success() || !installed(dir) {
        let tail: String = errors
            .lines()
            .rev()
            .take(20)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        return Err(Error::Emulator(format!(
            "`npm ci` in {} failed ({status}): {}",
            dir.display(),
            tail.trim()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("durable-status-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_lock_dies_with_its_holder() {
        let dir = scratch("dead-holder");
        // Another process holds the lock, then is killed (as by Ctrl-C).
        // --no-fork: the killed process is the one holding the lock.
        let mut holder = Command::new("flock")
            .arg("--no-fork")
            .arg(dir.join(".install.lock"))
            .args(["sleep", "60"])
            .spawn()
            .expect("util-linux flock runs");
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            InstallLock::acquire(&dir, Duration::from_millis(300), || false).is_err(),
            "held"
        );
        holder.kill().unwrap();
        holder.wait().unwrap();
        assert!(InstallLock::acquire(&dir, Duration::from_secs(5), || false)
            .unwrap()
            .is_some());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_live_lock_is_waited_for() {
        let dir = scratch("live-lock");
        let held = InstallLock::acquire(&dir, Duration::from_secs(1), || false)
            .unwrap()
            .unwrap();
        let started = Instant::now();
        let err = InstallLock::acquire(&dir, Duration::from_millis(500), || false)
            .err()
            .expect("times out");
        assert!(err.to_string().contains("waited"), "{err}");
        assert!(started.elapsed() >= Duration::from_millis(500));
        // Someone else finishing the install ends the wait.
        assert!(InstallLock::acquire(&dir, Duration::from_secs(5), || true)
            .unwrap()
            .is_none());
        drop(held);
        assert!(
            InstallLock::acquire(&dir, Duration::from_secs(1), || false)
                .unwrap()
                .is_some(),
            "released"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn an_interrupted_install_does_not_count() {
        let dir = scratch("partial");
        let main = dir.join("node_modules/azurite/dist/src/table");
        std::fs::create_dir_all(&main).unwrap();
        std::fs::write(main.join("main.js"), "").unwrap();
        assert!(!installed(&dir), "npm did not finish");
        std::fs::write(dir.join("node_modules/.package-lock.json"), "{}").unwrap();
        assert!(installed(&dir));
        let _ = std::fs::remove_dir_all(dir);
    }
}
