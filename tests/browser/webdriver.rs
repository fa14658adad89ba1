//! ChromeDriver's WebDriver protocol, spoken directly: finding the browser
//! (or skipping loudly without it), a session, clicks, keys, scripts,
//! screenshots, and a PNG reader to tell a rendered page from an empty one.

use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

pub const CHROMEDRIVER_VARIABLE: &str = "DURABLE_STATUS_CHROMEDRIVER";
pub const CHROMIUM_VARIABLE: &str = "DURABLE_STATUS_CHROMIUM";
/// Set (to anything but empty or `0`), a missing browser fails the test
/// instead of skipping it.
pub const REQUIRE_VARIABLE: &str = "DURABLE_STATUS_REQUIRE_BROWSER";

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
pub struct Browser {
    pub chromedriver: PathBuf,
    pub chromium: PathBuf,
}

/// Where `program` is, as the shell would find it: itself if it names a
/// path (has a `/`), otherwise the first match in the directories of `path`
/// (the value of PATH). Only an executable file counts.
pub fn locate(program: &OsStr, path: Option<&OsStr>) -> Option<PathBuf> {
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
pub fn find_browser(
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
pub fn required(value: Option<&OsStr>) -> bool {
    value.is_some_and(|v| !v.is_empty() && v != "0")
}

/// The browser, or `None` when it is missing and the test is to pass
/// without it: then a `SKIPPED:` notice goes to standard error, written
/// there directly, since libtest keeps what a passing test prints with
/// `eprintln!` to itself. Panics when the browser is missing and
/// [`REQUIRE_VARIABLE`] requires it.
pub fn browser_or_skip(test: &str) -> Option<Browser> {
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
pub struct Driver {
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

/// How the browser is started.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    pub width: u32,
    pub height: u32,
    /// The system's colour scheme is dark (`prefers-color-scheme: dark`).
    pub dark: bool,
}

impl Window {
    pub const DESKTOP: Window = Window {
        width: 1280,
        height: 800,
        dark: false,
    };
}

/// Chromium's windows are at least this wide; narrower viewports are
/// emulated.
const MIN_WINDOW_WIDTH: u32 = 500;

impl Driver {
    pub async fn start(program: &Path) -> Driver {
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

    /// A session of a new Chromium, with a profile of its own in `profile`.
    pub async fn session(&self, chromium: &Path, profile: &Path, window: Window) -> Session {
        let mut args: Vec<String> = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        args.push(format!("--window-size={},{}", window.width, window.height));
        args.push(format!("--user-data-dir={}", profile.display()));
        // Blink's preferred colour scheme: 0 is dark, 1 is light.
        args.push(format!(
            "--blink-settings=preferredColorScheme={}",
            if window.dark { 0 } else { 1 }
        ));
        if window.dark {
            args.push("--force-dark-mode".into());
        }
        let mut options = json!({"binary": chromium.to_string_lossy(), "args": args});
        if window.width < MIN_WINDOW_WIDTH {
            // Narrower than a window can be: a phone's screen, emulated.
            options["mobileEmulation"] = json!({"deviceMetrics": {
                "width": window.width,
                "height": window.height,
                "pixelRatio": 1.0,
                "mobile": true,
                "touch": true,
            }});
        }
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": options,
        }}});
        let value = call(
            &self.base,
            reqwest::Method::POST,
            "/session",
            Some(capabilities),
        )
        .await;
        let session = Session {
            base: format!(
                "{}/session/{}",
                self.base,
                value["sessionId"].as_str().expect("a session id")
            ),
        };
        // The viewport is the size asked for, whatever the window's frame.
        let (inner_width, inner_height) = session.viewport().await;
        if window.width >= MIN_WINDOW_WIDTH
            && (inner_width, inner_height) != (window.width, window.height)
        {
            let rect = json!({
                "width": 2 * window.width - inner_width,
                "height": 2 * window.height - inner_height,
            });
            session.post("/window/rect", rect).await;
        }
        session
    }
}

async fn call(base: &str, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
    let mut request = reqwest::Client::new().request(method, format!("{base}{path}"));
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

/// The WebDriver name of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Keys, as WebDriver names them.
pub mod key {
    pub const TAB: &str = "\u{E004}";
    pub const ENTER: &str = "\u{E007}";
    pub const ESCAPE: &str = "\u{E00C}";
    pub const HOME: &str = "\u{E011}";
    pub const UP: &str = "\u{E013}";
    pub const DOWN: &str = "\u{E015}";
    pub const END: &str = "\u{E010}";
}

pub struct Session {
    /// The driver's URL of this session.
    base: String,
}

impl Session {
    async fn post(&self, path: &str, body: Value) -> Value {
        call(&self.base, reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn open(&self, url: &str) {
        self.post("/url", json!({"url": url})).await;
    }

    pub async fn eval(&self, script: &str) -> Value {
        self.post("/execute/sync", json!({"script": script, "args": []}))
            .await
    }

    /// Runs `script` as the body of an async function and returns what it
    /// returns (a promise is awaited).
    pub async fn eval_async(&self, script: &str) -> Value {
        let wrapped = format!(
            "const done = arguments[arguments.length - 1];\n\
             (async () => {{ {script} }})().then(done, (e) => done('threw: ' + e));"
        );
        self.post("/execute/async", json!({"script": wrapped, "args": []}))
            .await
    }

    /// Evaluates `script` until it returns `expected`.
    pub async fn wait_for(&self, script: &str, expected: Value) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let value = self.eval(script).await;
            if value == expected {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{script} is {value}, expected {expected}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the text of the element `css` contains `text`.
    pub async fn wait_for_text(&self, css: &str, text: &str) {
        let script = format!(
            "const e = document.querySelector({css}); return !!e && e.textContent.includes({text});",
            css = json!(css),
            text = json!(text),
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.eval(&script).await != json!(true) {
            let now = self
                .eval(&format!(
                    "const e = document.querySelector({}); return e && e.textContent;",
                    json!(css)
                ))
                .await;
            assert!(
                Instant::now() < deadline,
                "{css} never says {text:?}; it says {now}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The element `css`, once it exists.
    pub async fn find(&self, css: &str) -> String {
        self.wait_for(
            &format!("return !!document.querySelector({});", json!(css)),
            json!(true),
        )
        .await;
        let value = self
            .post("/element", json!({"using": "css selector", "value": css}))
            .await;
        value[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("{css} is no element: {value}"))
            .to_owned()
    }

    /// Clicks the element `css` as a user does (it must be visible and
    /// enabled: WebDriver clicks at its centre).
    pub async fn click(&self, css: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let usable = format!(
            "const e = document.querySelector({}); return !!e && !e.disabled && e.getClientRects().length > 0;",
            json!(css)
        );
        while self.eval(&usable).await != json!(true) {
            assert!(Instant::now() < deadline, "{css} is never there to click");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let element = self.find(css).await;
        self.post(&format!("/element/{element}/click"), json!({}))
            .await;
    }

    /// Types `text` into the element `css`.
    pub async fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        self.post(&format!("/element/{element}/value"), json!({"text": text}))
            .await;
    }

    /// Presses keys, one after the other, wherever the focus is.
    pub async fn press(&self, keys: &[&str]) {
        let actions: Vec<Value> = keys
            .iter()
            .flat_map(|k| {
                [
                    json!({"type": "keyDown", "value": k}),
                    json!({"type": "keyUp", "value": k}),
                ]
            })
            .collect();
        self.post(
            "/actions",
            json!({"actions": [{"type": "key", "id": "keyboard", "actions": actions}]}),
        )
        .await;
    }

    /// The page's viewport: `innerWidth` and `innerHeight`.
    pub async fn viewport(&self) -> (u32, u32) {
        let size = self
            .eval("return [window.innerWidth, window.innerHeight];")
            .await;
        let side = |i: usize| size[i].as_u64().expect("a size") as u32;
        (side(0), side(1))
    }

    /// A PNG of the viewport.
    pub async fn screenshot(&self) -> Vec<u8> {
        let value = call(&self.base, reqwest::Method::GET, "/screenshot", None).await;
        base64::engine::general_purpose::STANDARD
            .decode(value.as_str().expect("base64 text"))
            .expect("a base64 PNG")
    }
}

/// An image's pixels, RGBA.
pub struct Image {
    pub width: usize,
    pub height: usize,
    pub rgba: Vec<[u8; 4]>,
}

impl Image {
    /// How many pixels differ from the commonest colour (the background),
    /// and how many colours there are.
    pub fn ink(&self) -> (usize, usize) {
        let mut seen = std::collections::HashMap::<[u8; 4], usize>::new();
        for pixel in &self.rgba {
            *seen.entry(*pixel).or_default() += 1;
        }
        let background = seen.values().copied().max().unwrap_or(0);
        (self.rgba.len() - background, seen.len())
    }

    /// The mean luminance (0 to 255) of the pixels.
    pub fn mean_luminance(&self) -> f64 {
        let sum: f64 = self
            .rgba
            .iter()
            .map(|[r, g, b, _]| 0.2126 * *r as f64 + 0.7152 * *g as f64 + 0.0722 * *b as f64)
            .sum();
        sum / self.rgba.len().max(1) as f64
    }
}

/// Decodes a PNG as Chromium writes screenshots: 8-bit RGB or RGBA, not
/// interlaced.
pub fn decode_png(bytes: &[u8]) -> Image {
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "not a PNG ({} bytes)",
        bytes.len()
    );
    let mut at = 8;
    let (mut width, mut height, mut channels) = (0usize, 0usize, 0usize);
    let mut data = Vec::new();
    while at + 8 <= bytes.len() {
        let length = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        let kind = &bytes[at + 4..at + 8];
        let body = &bytes[at + 8..at + 8 + length];
        match kind {
            b"IHDR" => {
                width = u32::from_be_bytes(body[0..4].try_into().unwrap()) as usize;
                height = u32::from_be_bytes(body[4..8].try_into().unwrap()) as usize;
                assert_eq!(body[8], 8, "8 bits a channel");
                channels = match body[9] {
                    2 => 3,
                    6 => 4,
                    other => panic!("PNG colour type {other} is not read here"),
                };
                assert_eq!(body[12], 0, "not interlaced");
            }
            b"IDAT" => data.extend_from_slice(body),
            b"IEND" => break,
            _ => {}
        }
        at += 12 + length;
    }
    let mut raw = Vec::new();
    flate2::read::ZlibDecoder::new(&data[..])
        .read_to_end(&mut raw)
        .expect("the image data inflates");
    let stride = width * channels;
    assert_eq!(raw.len(), height * (stride + 1), "the image's size");
    let mut pixels = vec![0u8; height * stride];
    for y in 0..height {
        let filter = raw[y * (stride + 1)];
        let line = &raw[y * (stride + 1) + 1..(y + 1) * (stride + 1)];
        for x in 0..stride {
            let a = if x >= channels {
                pixels[y * stride + x - channels]
            } else {
                0
            };
            let b = if y > 0 {
                pixels[(y - 1) * stride + x]
            } else {
                0
            };
            let c = if x >= channels && y > 0 {
                pixels[(y - 1) * stride + x - channels]
            } else {
                0
            };
            let predicted = match filter {
                0 => 0,
                1 => a,
                2 => b,
                3 => ((a as u16 + b as u16) / 2) as u8,
                4 => {
                    let p = a as i16 + b as i16 - c as i16;
                    let (pa, pb, pc) = (
                        (p - a as i16).abs(),
                        (p - b as i16).abs(),
                        (p - c as i16).abs(),
                    );
                    if pa <= pb && pa <= pc {
                        a
                    } else if pb <= pc {
                        b
                    } else {
                        c
                    }
                }
                other => panic!("PNG filter {other}"),
            };
            pixels[y * stride + x] = line[x].wrapping_add(predicted);
        }
    }
    let rgba = pixels
        .chunks(channels)
        .map(|p| [p[0], p[1], p[2], if channels == 4 { p[3] } else { 255 }])
        .collect();
    Image {
        width,
        height,
        rgba,
    }
}
