//! The emulator installs where it says, starts on demand, never outlives its
//! user, and says clearly why it cannot start.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use durable_status::emulator::{Azurite, AZURITE_DIR_VARIABLE};
use durable_status::{InstanceStore, NewInstance};

/// Tells a helper test that it runs as a child process, and what to do.
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

/// A fresh, empty folder of this test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "durable-status-emulator-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs the `#[ignore]`d helper test `helper` of this binary in a child
/// process, with `mode` in `CHILD_MODE`; `env` changes its environment.
fn run_helper(helper: &str, mode: &str, env: impl FnOnce(&mut Command)) -> Output {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(["--exact", helper, "--ignored", "--nocapture"])
        .env(CHILD_MODE, mode);
    env(&mut command);
    command.output().unwrap()
}

/// The value after `KEY=` on a line of the child's stdout, if any.
fn try_printed(output: &Output, key: &str) -> Option<String> {
    let prefix = format!("{key}=");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| line.strip_prefix(&prefix).map(str::to_string))
}

/// The value after `KEY=` on a line of the child's stdout.
fn printed(output: &Output, key: &str) -> String {
    try_printed(output, key).unwrap_or_else(|| {
        let stdout = String::from_utf8_lossy(&output.stdout);
        panic!(
            "the child printed no {key}: {stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

#[tokio::test]
async fn the_emulator_serves_and_stops_when_dropped() {
    let azurite = Azurite::start().expect("Azurite starts");
    let pids = azurite.pids();
    assert_eq!(pids.len(), 2, "a table and a blob service");
    // It installed where it says.
    let dir = Azurite::install_dir().expect("a folder to install in");
    for file in [
        "package.json",
        "package-lock.json",
        "service.js",
        "table-server.js",
    ] {
        assert!(dir.join(file).is_file(), "{} holds {file}", dir.display());
    }
    assert!(dir.join("node_modules/azurite").is_dir());
    let store = InstanceStore::connect(&azurite.config(), "EmulatorHub")
        .await
        .unwrap();
    store.create(NewInstance::new("one", "Orch")).await.unwrap();
    assert!(store.get("one").await.unwrap().is_some());
    // The blob service answers at its endpoint (an unsigned request: 403).
    let blob = reqwest::get(format!("{}?comp=list", azurite.blob_endpoint()))
        .await
        .expect("the blob service answers");
    assert_eq!(blob.status(), 403, "{:?}", blob.headers());
    assert!(azurite
        .connection_string()
        .contains("BlobEndpoint=http://127.0.0.1:"));
    for pid in &pids {
        assert!(process_exists(*pid));
    }
    drop(azurite);
    for pid in pids {
        assert!(wait_gone(pid), "Azurite (pid {pid}) outlived its handle");
    }
}

#[test]
fn the_emulator_exits_when_its_parent_dies() {
    let output = run_helper("start_emulator_then_abort", "abort", |_| {});
    assert!(!output.status.success(), "the child process aborts");
    for pid in printed(&output, "AZURITE_PIDS").split(',') {
        let pid: u32 = pid.parse().unwrap();
        assert!(
            wait_gone(pid),
            "Azurite (pid {pid}) outlived the process that started it"
        );
    }
}

/// Run by `the_emulator_exits_when_its_parent_dies` in a child process: starts
/// the emulator and aborts, so no destructor runs.
#[test]
#[ignore = "a helper that the_emulator_exits_when_its_parent_dies runs in a child process"]
fn start_emulator_then_abort() {
    assert_eq!(
        std::env::var(CHILD_MODE).as_deref(),
        Ok("abort"),
        "run only as a child process"
    );
    let azurite = Azurite::start().expect("Azurite starts");
    let pids: Vec<String> = azurite.pids().iter().map(u32::to_string).collect();
    println!("AZURITE_PIDS={}", pids.join(","));
    std::process::abort();
}

/// Run by the tests below in a child process, whose environment they set:
/// prints what `Azurite::install_dir` says, or what `Azurite::start_in` of
/// the folder in `DURABLE_STATUS_TEST_FOLDER` says.
#[test]
#[ignore = "a helper that other tests run in a child process"]
fn report_from_a_child() {
    match std::env::var(CHILD_MODE).as_deref() {
        Ok("install-dir") => match Azurite::install_dir() {
            Ok(dir) => println!("DIR={}", dir.display()),
            Err(e) => println!("ERROR={e}"),
        },
        Ok("start-in") => {
            let dir = std::env::var_os("DURABLE_STATUS_TEST_FOLDER").expect("a folder");
            match Azurite::start_in(Path::new(&dir)) {
                Ok(_) => println!("STARTED=yes"),
                Err(e) => println!("ERROR={}", e.to_string().replace('\n', " ")),
            }
        }
        Err(_) => {} // not run as a child process: nothing to report
        Ok(other) => panic!("unknown {CHILD_MODE}: {other}"),
    }
}

#[test]
fn the_install_folder_follows_the_environment() {
    let install_dir = |vars: &[(&str, Option<&str>)]| {
        let output = run_helper("report_from_a_child", "install-dir", |command| {
            for (name, value) in vars {
                match value {
                    Some(value) => command.env(name, value),
                    None => command.env_remove(name),
                };
            }
        });
        assert!(output.status.success(), "{output:?}");
        try_printed(&output, "DIR")
            .map(PathBuf::from)
            .ok_or_else(|| printed(&output, "ERROR"))
    };
    let mine = "/tmp/my-azurite";
    assert_eq!(
        install_dir(&[(AZURITE_DIR_VARIABLE, Some(mine))]),
        Ok(PathBuf::from(mine))
    );
    let xdg = install_dir(&[
        (AZURITE_DIR_VARIABLE, None),
        ("XDG_CACHE_HOME", Some("/tmp/xdg")),
        ("HOME", Some("/tmp/home")),
    ])
    .unwrap();
    let home = install_dir(&[
        (AZURITE_DIR_VARIABLE, None),
        ("XDG_CACHE_HOME", None),
        ("HOME", Some("/tmp/home")),
    ])
    .unwrap();
    let version = xdg.file_name().unwrap().to_string_lossy().into_owned();
    assert!(version.starts_with("azurite-"), "{}", xdg.display());
    assert_eq!(xdg, Path::new("/tmp/xdg/durable-status").join(&version));
    assert_eq!(
        home,
        Path::new("/tmp/home/.cache/durable-status").join(&version)
    );
}

#[test]
fn no_folder_to_install_in_is_a_clear_error() {
    let output = run_helper("report_from_a_child", "install-dir", |command| {
        command
            .env_remove(AZURITE_DIR_VARIABLE)
            .env_remove("XDG_CACHE_HOME")
            .env_remove("HOME");
    });
    let err = printed(&output, "ERROR");
    assert!(
        err.contains(AZURITE_DIR_VARIABLE) && err.contains("HOME"),
        "{err}"
    );
}

#[test]
fn a_folder_where_npm_cannot_run_is_a_clear_error() {
    // A fresh folder is given the pinned recipe; with no npm on PATH (in a
    // child process, so that this process keeps its PATH), the install
    // cannot run, and the error names the folder and what it needs.
    let root = scratch("no-npm");
    let dir = root.join("azurite");
    let empty_path = root.join("bin");
    std::fs::create_dir_all(&empty_path).unwrap();
    let output = run_helper("report_from_a_child", "start-in", |command| {
        command
            .env("PATH", &empty_path)
            .env("DURABLE_STATUS_TEST_FOLDER", &dir);
    });
    let err = printed(&output, "ERROR");
    assert!(
        err.contains(&dir.display().to_string())
            && err.contains("npm")
            && err.contains("Node.js")
            && err.contains("PATH"),
        "{err}"
    );
    for file in [
        "package.json",
        "package-lock.json",
        "service.js",
        "table-server.js",
    ] {
        assert!(dir.join(file).is_file(), "{file} was written");
    }
    let _ = std::fs::remove_dir_all(root);
}

#[test]
fn a_folder_of_the_caller_keeps_its_files() {
    // The caller's own (here broken) lock file is kept, not replaced by the
    // pinned one, and npm's complaint about it is passed on.
    let dir = scratch("own-lock");
    std::fs::write(dir.join("package-lock.json"), "not json").unwrap();
    let err = Azurite::start_in(&dir).unwrap_err().to_string();
    assert!(
        err.contains(&dir.display().to_string()) && err.contains("npm ci"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("package-lock.json")).unwrap(),
        "not json"
    );
    assert!(
        dir.join("table-server.js").is_file(),
        "a missing file is written"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_file_is_no_folder() {
    let dir = scratch("a-file");
    let file = dir.join("azurite");
    std::fs::write(&file, "").unwrap();
    let err = Azurite::start_in(&file).unwrap_err().to_string();
    assert!(
        err.contains(&file.display().to_string()) && err.contains(AZURITE_DIR_VARIABLE),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
