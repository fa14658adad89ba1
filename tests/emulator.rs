//! The bundled emulator starts on demand and never outlives its user.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use durable_status::emulator::Azurite;
use durable_status::{InstanceStore, NewInstance};

const CHILD_MODE: &str = "DURABLE_STATUS_EMULATOR_CHILD";

fn process_exists(pid: u32) -> bool {
    // A zombie has exited; only its parent's wait is missing.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

fn wait_gone(pid: u32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if !process_exists(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[tokio::test]
async fn the_emulator_serves_and_stops_when_dropped() {
    let azurite = Azurite::start_bundled().expect("Azurite starts");
    let pid = azurite.pid();
    let store = InstanceStore::connect(&azurite.config(), "EmulatorHub")
        .await
        .unwrap();
    store.create(NewInstance::new("one", "Orch")).await.unwrap();
    assert!(store.get("one").await.unwrap().is_some());
    assert!(process_exists(pid));
    drop(azurite);
    assert!(wait_gone(pid), "Azurite (pid {pid}) outlived its handle");
}

#[test]
fn the_emulator_exits_when_its_parent_dies() {
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "start_emulator_then_abort",
            "--ignored",
            "--nocapture",
        ])
        .env(CHILD_MODE, "1")
        .output()
        .unwrap();
    assert!(!output.status.success(), "the child process aborts");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let pid: u32 = stdout
        .lines()
        .find_map(|line| line.strip_prefix("AZURITE_PID="))
        .unwrap_or_else(|| panic!("the child printed no pid: {stdout}"))
        .parse()
        .unwrap();
    assert!(
        wait_gone(pid),
        "Azurite (pid {pid}) outlived the process that started it"
    );
}

/// Run by `the_emulator_exits_when_its_parent_dies` in a child process: starts
/// the emulator and aborts, so no destructor runs.
#[test]
#[ignore = "a helper that the_emulator_exits_when_its_parent_dies runs in a child process"]
fn start_emulator_then_abort() {
    assert_eq!(
        std::env::var(CHILD_MODE).as_deref(),
        Ok("1"),
        "run only as a child process"
    );
    let azurite = Azurite::start_bundled().expect("Azurite starts");
    println!("AZURITE_PID={}", azurite.pid());
    std::process::abort();
}

#[test]
fn a_folder_without_azurite_is_a_clear_error() {
    let err = Azurite::start(Path::new("no/such/folder"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no/such/folder") && err.contains("package-lock.json"),
        "{err}"
    );
}
