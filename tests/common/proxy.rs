//! A loopback TCP pass-through in front of the table service (or of any
//! HTTP/1.1 server on this machine, such as the HTTP API). The requests
//! are real; the proxy only counts them, records their request lines, counts
//! connections, and on demand cuts every connection after some number of
//! requests (a storage outage in the middle of an operation).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use durable_status::StorageConfig;

#[derive(Default)]
struct State {
    requests: AtomicUsize,
    connections: AtomicUsize,
    lines: Mutex<Vec<String>>,
    /// Requests still let through; usize::MAX for no limit.
    budget: AtomicUsize,
    /// The method of the next request whose response is to be lost.
    lose_response_to: Mutex<Option<String>>,
    /// The next request with this method waits at the proxy, before it
    /// reaches the service, until the test releases it.
    hold_request: Mutex<Option<(String, Stop)>>,
    /// The next request with this method whose (percent-decoded) request
    /// line contains this text waits likewise.
    hold_matching: Mutex<Option<(String, String, Stop)>>,
    /// When the next lost response arrives, the proxy holds the connection
    /// open (the client still waits) until the test releases it.
    hold_lost: Mutex<Option<Stop>>,
    /// The request that makes this count (from when it was set) is held.
    hold_nth: Mutex<Option<(usize, Stop)>>,
    /// Bytes sent from the service to the client (status lines, headers,
    /// bodies), lost responses excepted.
    response_bytes: AtomicUsize,
    /// The head of each request (its line and headers), in order.
    heads: Mutex<Vec<RequestHead>>,
}

/// A request's line and headers, as the client sent them.
#[derive(Debug, Clone)]
pub struct RequestHead {
    /// `GET /path?query` (not percent-decoded).
    pub line: String,
    /// Each header's name (lower case) and value.
    pub headers: Vec<(String, String)>,
}

impl RequestHead {
    /// The value of a header, by name in any case.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The proxy's side of a [`Gate`].
struct Stop {
    reached: tokio::sync::oneshot::Sender<()>,
    release: Receiver<()>,
}

impl Stop {
    fn wait(self) {
        let _ = self.reached.send(());
        // A bound, so that a test that fails before releasing frees the thread.
        let _ = self.release.recv_timeout(Duration::from_secs(60));
    }
}

/// The test's side of a held request: wait until the proxy holds it, act,
/// then release it.
pub struct Gate {
    reached: Option<tokio::sync::oneshot::Receiver<()>>,
    release: Sender<()>,
}

impl Gate {
    fn new() -> (Gate, Stop) {
        let (reached_tx, reached_rx) = tokio::sync::oneshot::channel();
        let (release_tx, release_rx) = channel();
        (
            Gate {
                reached: Some(reached_rx),
                release: release_tx,
            },
            Stop {
                reached: reached_tx,
                release: release_rx,
            },
        )
    }

    /// Waits until the proxy holds the request (a minute at most: a
    /// failure guard, not a timing).
    pub async fn reached(&mut self) {
        let reached = self.reached.take().expect("waited for once");
        tokio::time::timeout(Duration::from_secs(60), reached)
            .await
            .expect("the proxy holds the request in time")
            .expect("the proxy holds the request");
    }

    /// Lets the held request go on.
    pub fn release(&self) {
        let _ = self.release.send(());
    }
}

pub struct Proxy {
    port: u16,
    state: Arc<State>,
}

impl Proxy {
    /// Starts a proxy in front of the table service of `config` (an http
    /// endpoint on this machine).
    pub fn start(config: &StorageConfig) -> Proxy {
        let authority = config
            .table_endpoint
            .strip_prefix("http://")
            .and_then(|rest| rest.split('/').next())
            .expect("the proxy fronts an http endpoint")
            .to_owned();
        Proxy::in_front_of(authority)
    }

    /// Starts a proxy in front of any HTTP/1.1 server on this machine
    /// (`127.0.0.1:PORT`): the HTTP API, to count what a browser asks it.
    pub fn in_front_of(authority: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(State {
            budget: AtomicUsize::new(usize::MAX),
            ..State::default()
        });
        let shared = Arc::clone(&state);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { break };
                shared.connections.fetch_add(1, Ordering::SeqCst);
                if shared.budget.load(Ordering::SeqCst) == 0 {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&authority) else {
                    continue;
                };
                let (client_read, server_write) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                let state = Arc::clone(&shared);
                let lose = Arc::new(AtomicBool::new(false));
                let lose_in_responses = Arc::clone(&lose);
                let state_in_responses = Arc::clone(&shared);
                std::thread::spawn(move || requests(client_read, server_write, state, lose));
                std::thread::spawn(move || {
                    responses(server, client, lose_in_responses, state_in_responses)
                });
            }
        });
        Proxy { port, state }
    }

    /// The port the proxy listens on (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The same account, reached through the proxy.
    pub fn config(&self, behind: &StorageConfig) -> StorageConfig {
        let path = behind
            .table_endpoint
            .splitn(4, '/')
            .nth(3)
            .unwrap_or_default();
        behind
            .clone()
            .with_table_endpoint(format!("http://127.0.0.1:{}/{path}", self.port))
    }

    /// Requests since the last call.
    pub fn take_requests(&self) -> usize {
        self.state.requests.swap(0, Ordering::SeqCst)
    }

    /// Request lines (`GET /path?query HTTP/1.1`, percent-decoded) since the last call.
    pub fn take_lines(&self) -> Vec<String> {
        std::mem::take(&mut *self.state.lines.lock().unwrap())
    }

    /// TCP connections opened through the proxy so far.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// The next request with this method reaches the service and is carried
    /// out, but its response is lost: the connection closes instead.
    pub fn lose_response_to(&self, method: &str) {
        *self.state.lose_response_to.lock().unwrap() = Some(method.to_owned());
    }

    /// The next request with this method is held at the proxy before it
    /// reaches the service, until the gate is released.
    pub fn hold_request(&self, method: &str) -> Gate {
        let (gate, stop) = Gate::new();
        *self.state.hold_request.lock().unwrap() = Some((method.to_owned(), stop));
        gate
    }

    /// The next request with this method whose request line
    /// (percent-decoded, as [`Proxy::take_lines`] shows it) contains `text`
    /// is held at the proxy before it reaches the service, until the gate
    /// is released. Independent of [`Proxy::hold_request`].
    pub fn hold_request_matching(&self, method: &str, text: &str) -> Gate {
        let (gate, stop) = Gate::new();
        *self.state.hold_matching.lock().unwrap() =
            Some((method.to_owned(), text.to_owned(), stop));
        gate
    }

    /// Like [`Proxy::lose_response_to`], and the lost response is held: the
    /// service has carried out the request, the client has no answer yet,
    /// and the test acts in that window before releasing the gate (then the
    /// connection closes and the client retries).
    pub fn lose_response_and_hold(&self, method: &str) -> Gate {
        let (gate, stop) = Gate::new();
        *self.state.hold_lost.lock().unwrap() = Some(stop);
        self.lose_response_to(method);
        gate
    }

    /// The `n`th request from now (1 is the next) is held at the proxy
    /// before it reaches the service, until the gate is released.
    pub fn hold_nth_request(&self, n: usize) -> Gate {
        assert!(n >= 1, "the first request is 1");
        let (gate, stop) = Gate::new();
        *self.state.hold_nth.lock().unwrap() = Some((n, stop));
        gate
    }

    /// Lets `n` more requests through, then cuts every connection.
    pub fn fail_after(&self, n: usize) {
        self.state.budget.store(n, Ordering::SeqCst);
    }

    /// Bytes the service sent to the client since the last call: every
    /// byte of the responses on the wire, status lines and headers included.
    pub fn take_response_bytes(&self) -> usize {
        self.state.response_bytes.swap(0, Ordering::SeqCst)
    }

    /// The heads (line and headers) of the requests since the last call.
    pub fn take_request_heads(&self) -> Vec<RequestHead> {
        std::mem::take(&mut *self.state.heads.lock().unwrap())
    }
}

/// Finds request heads in the bytes a client sends: a request line ending in
/// ` HTTP/1.1`, then headers up to the blank line. Bytes between heads
/// (bodies) are skipped.
#[derive(Default)]
struct HeadScanner {
    pending: Vec<u8>,
}

impl HeadScanner {
    fn feed(&mut self, bytes: &[u8], state: &State) {
        const LINE_END: &[u8] = b" HTTP/1.1\r\n";
        const HEAD_END: &[u8] = b"\r\n\r\n";
        self.pending.extend_from_slice(bytes);
        loop {
            let Some(at) = find(&self.pending, LINE_END) else {
                // Keep what may be the start of a line end.
                let keep = self.pending.len().min(LINE_END.len());
                self.pending.drain(..self.pending.len() - keep);
                return;
            };
            let headers_start = at + LINE_END.len();
            let Some(end) = find(&self.pending[headers_start - 2..], HEAD_END) else {
                // The head is not complete yet; keep it from its line's start.
                let start = self.pending[..at]
                    .iter()
                    .rposition(|b| *b == b'\n')
                    .map_or(0, |i| i + 1);
                self.pending.drain(..start);
                return;
            };
            let head_end = headers_start - 2 + end;
            let text = String::from_utf8_lossy(&self.pending[..at]).into_owned();
            let line = METHODS
                .iter()
                .filter_map(|m| text.rfind(&format!("{m} /")))
                .max()
                .map_or(text.clone(), |i| text[i..].to_owned());
            let headers = String::from_utf8_lossy(
                self.pending
                    .get(headers_start..head_end)
                    .unwrap_or_default(),
            )
            .split("\r\n")
            .filter_map(|h| h.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
            state
                .heads
                .lock()
                .unwrap()
                .push(RequestHead { line, headers });
            self.pending.drain(..head_end + HEAD_END.len());
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

const METHODS: [&str; 7] = ["GET", "POST", "PUT", "MERGE", "DELETE", "PATCH", "HEAD"];

fn requests(mut from: TcpStream, mut to: TcpStream, state: Arc<State>, lose: Arc<AtomicBool>) {
    const LINE_END: &[u8] = b" HTTP/1.1\r\n";
    let mut buf = [0u8; 16 * 1024];
    let mut pending: Vec<u8> = Vec::new();
    let mut heads = HeadScanner::default();
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        heads.feed(&buf[..n], &state);
        pending.extend_from_slice(&buf[..n]);
        while let Some(at) = pending.windows(LINE_END.len()).position(|w| w == LINE_END) {
            let start = pending[..at]
                .iter()
                .rposition(|b| *b == b'\n')
                .map_or(0, |i| i + 1);
            let text =
                String::from_utf8_lossy(&pending[start..at + LINE_END.len() - 2]).into_owned();
            // A body need not end in a newline: the line starts at its method.
            let line = METHODS
                .iter()
                .filter_map(|m| text.find(&format!("{m} /")))
                .min()
                .map_or(text.clone(), |i| text[i..].to_owned());
            let allowed = state
                .budget
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| match b {
                    0 => None,
                    usize::MAX => Some(usize::MAX),
                    b => Some(b - 1),
                })
                .is_ok();
            if !allowed {
                let _ = from.shutdown(Shutdown::Both);
                let _ = to.shutdown(Shutdown::Both);
                return;
            }
            state.requests.fetch_add(1, Ordering::SeqCst);
            {
                let mut target = state.lose_response_to.lock().unwrap();
                if target
                    .as_deref()
                    .is_some_and(|method| line.starts_with(&format!("{method} ")))
                {
                    *target = None;
                    lose.store(true, Ordering::SeqCst);
                }
            }
            let decoded = percent_decode(&line);
            state.lines.lock().unwrap().push(decoded.clone());
            pending.drain(..at + LINE_END.len());
            let held_matching = {
                let mut hold = state.hold_matching.lock().unwrap();
                match hold.take() {
                    Some((method, text, stop))
                        if line.starts_with(&format!("{method} ")) && decoded.contains(&text) =>
                    {
                        Some(stop)
                    }
                    other => {
                        *hold = other;
                        None
                    }
                }
            };
            if let Some(stop) = held_matching {
                stop.wait();
            }
            let held_nth = {
                let mut hold = state.hold_nth.lock().unwrap();
                match hold.take() {
                    Some((1, stop)) => Some(stop),
                    Some((n, stop)) => {
                        *hold = Some((n - 1, stop));
                        None
                    }
                    None => None,
                }
            };
            if let Some(stop) = held_nth {
                stop.wait();
            }
            let held = {
                let mut hold = state.hold_request.lock().unwrap();
                match hold.take() {
                    Some((method, stop)) if line.starts_with(&format!("{method} ")) => Some(stop),
                    other => {
                        *hold = other;
                        None
                    }
                }
            };
            if let Some(stop) = held {
                stop.wait();
            }
        }
        // Bodies can be large; a request line is never longer than this.
        if pending.len() > 16 * 1024 {
            pending.drain(..pending.len() - 8 * 1024);
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

fn responses(mut from: TcpStream, mut to: TcpStream, lose: Arc<AtomicBool>, state: Arc<State>) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if lose.load(Ordering::SeqCst) {
            let _ = from.shutdown(Shutdown::Both);
            if let Some(stop) = state.hold_lost.lock().unwrap().take() {
                stop.wait();
            }
            break;
        }
        state.response_bytes.fetch_add(n, Ordering::SeqCst);
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&text[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
