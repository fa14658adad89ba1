//! The Durable Functions instance status HTTP API, served from the store,
//! and a status page.
//!
//! Both base paths of the original route to the same handlers:
//! `/runtime/webhooks/durabletask` and `/admin/extensions/DurableTaskExtension`.
//! No history is kept, so `showHistory` is accepted and answered without
//! `historyEvents`. Starting orchestrations, raising events, rewinding and
//! restarting need an orchestration engine: they answer 501.
//!
//! Every error, the framework's and the connection's included, is
//! `{"Message": "..."}` with `content-type: application/json`.

mod handlers;
mod page;
mod params;
mod push;
mod reads;
mod server;

pub use handlers::{CONTINUATION_HEADER, LISTING_BYTES, MAX_BATCH_IDS};
pub use push::{
    DEFAULT_MAX_PUSH_VIEWERS, DEFAULT_MAX_WATCHED_INSTANCES, DEFAULT_PUSH_HEARTBEAT,
    DEFAULT_PUSH_POLL_INTERVAL,
};
pub use reads::{DEFAULT_READ_WINDOW, MAX_READ_WINDOW};

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use http_body_util::{BodyExt, LengthLimitError, Limited};

use crate::config::Secret;
use crate::error::Error;
use crate::store::InstanceStore;

/// The current base path of the API.
pub const BASE_PATH: &str = "/runtime/webhooks/durabletask";
/// The base path of Functions 1.x, still used by older clients.
pub const LEGACY_BASE_PATH: &str = "/admin/extensions/DurableTaskExtension";
/// The largest request body accepted, chunked or not.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// The header that carries a key, besides the `code` query parameter.
pub const KEY_HEADER: &str = "x-functions-key";
/// The environment variable read by the command line for keys (comma separated).
pub const KEYS_VARIABLE: &str = "DURABLE_STATUS_KEYS";
/// How long a client has, by default, to send a request's headers (on a new
/// connection, or on an idle kept-alive one) before it is disconnected.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client has, by default, to send a request's body once its
/// headers are in.
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How many connections are served at once by default; past them, a
/// connection is answered 503 and closed.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;
/// How long, by default, an answer may wait to be written (the client reads
/// nothing, its buffers are full) before the connection is closed.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long, by default, a connection is served before it is asked to close
/// (after the answer in flight, if any).
pub const DEFAULT_MAX_CONNECTION_AGE: Duration = Duration::from_secs(10 * 60);
/// How long, by default, the connections in flight have to finish once
/// [`serve`] is told to stop (or once a connection is past its age) before
/// they are dropped.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// What the HTTP API serves: the store of the default task hub, the means to
/// open others (`taskHub=`), the keys it accepts, the public URL it hands
/// out, and the limits of its connections.
///
/// # Keys
///
/// With keys configured, every API request needs one, compared in constant
/// time. The rule is the Functions host's: when the request has an
/// `x-functions-key` header, that header is the key presented (even if it
/// is wrong, empty or not text, and whatever `code` says); only a request
/// without the header presents its `code` query parameter. Without keys,
/// [`serve`] listens on loopback only, and only requests addressed to a
/// loopback host name and not sent by a page of another origin are
/// answered.
///
/// # URLs
///
/// The `Location` of a 202 is built on the [public URL](Self::public_url)
/// when one is configured, and is relative (path and query) otherwise:
/// never from the request's `Host` or forwarded headers. It never carries
/// the `code` parameter: a key in a URL ends up in logs and browser history.
///
/// # Limits
///
/// Request bodies, chunked ones included, are limited to [`MAX_BODY_BYTES`]
/// (413) and must arrive within the [body-read
/// timeout](Self::body_read_timeout) (408). [`serve`] closes a connection
/// whose request headers take longer than the [header-read
/// timeout](Self::header_read_timeout) (or that stays idle that long), and
/// serves at most [`max_connections`](Self::max_connections) at once: one
/// past them is answered 503 with `Retry-After` and closed. A connection
/// whose client reads nothing for the [write timeout](Self::write_timeout)
/// while an answer waits to be written (refusals and parse errors included)
/// is closed, and one older than the [max connection
/// age](Self::max_connection_age) is asked to close after its answer in
/// flight, and dropped if it has not within the [shutdown
/// grace](Self::shutdown_grace). Once told to stop, [`serve`] gives the
/// connections in flight the shutdown grace to finish, then drops them.
#[derive(Clone)]
pub struct HttpApi {
    inner: Arc<Inner>,
    /// Scheme, authority and path, without a trailing slash.
    public_url: Option<Arc<str>>,
    limits: Limits,
    /// How long a status answer is served again without a read.
    read_window: Duration,
    push: push::PushLimits,
}

struct Inner {
    default_store: InstanceStore,
    keys: Vec<Secret>,
    /// Purges by filter run one at a time: each already keeps 32 deletes
    /// in flight.
    purges: tokio::sync::Mutex<()>,
    /// Status reads shared by concurrent pollers.
    reads: reads::SharedReads,
    /// The push streams' poll loops.
    watches: Arc<push::Watches>,
}

/// The limits of the server's connections and requests.
#[derive(Clone, Copy, Debug)]
struct Limits {
    header_read_timeout: Duration,
    body_read_timeout: Duration,
    max_connections: usize,
    write_timeout: Duration,
    max_connection_age: Duration,
    shutdown_grace: Duration,
}

impl std::fmt::Debug for HttpApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpApi")
            .field("task_hub", &self.inner.default_store.task_hub())
            .field("keys", &self.inner.keys.len())
            .field("public_url", &self.public_url)
            .field("limits", &self.limits)
            .finish()
    }
}

impl HttpApi {
    /// Serves `store`'s task hub; a `taskHub` parameter reads another one of
    /// the same account. With `keys` empty, requests need no key (serve on
    /// loopback only: see [`check_listen_address`]).
    pub fn new(store: InstanceStore, keys: Vec<Secret>) -> Self {
        HttpApi {
            inner: Arc::new(Inner {
                default_store: store,
                purges: tokio::sync::Mutex::new(()),
                reads: reads::SharedReads::default(),
                watches: Arc::default(),
                keys: keys
                    .into_iter()
                    .filter(|k| !k.expose().is_empty())
                    .collect(),
            }),
            public_url: None,
            limits: Limits {
                header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
                body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
                max_connections: DEFAULT_MAX_CONNECTIONS,
                write_timeout: DEFAULT_WRITE_TIMEOUT,
                max_connection_age: DEFAULT_MAX_CONNECTION_AGE,
                shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            },
            read_window: DEFAULT_READ_WINDOW,
            push: push::PushLimits::default(),
        }
    }

    /// How long a status answer (`GET /instances/{id}`) is served again to
    /// other pollers of the same instance and representation without a
    /// table read: default 1 s, at most 10 s; zero only shares the reads
    /// under way. Requests that arrive while a read is under way always
    /// share it.
    pub fn read_window(mut self, window: Duration) -> Self {
        self.read_window = window.min(MAX_READ_WINDOW);
        self
    }

    /// How often the push streams' shared poll loop reads a watched
    /// instance (default 1 s; at least 10 ms).
    pub fn push_poll_interval(mut self, interval: Duration) -> Self {
        self.push.poll_interval = interval.max(crate::MIN_POLL_INTERVAL);
        self
    }

    /// How often a push stream sends a heartbeat comment while nothing
    /// changes (default 15 s).
    pub fn push_heartbeat(mut self, every: Duration) -> Self {
        self.push.heartbeat = every.max(Duration::from_millis(10));
        self
    }

    /// How many instances the push streams watch at once (default 1,000);
    /// a viewer of one more is answered 503.
    pub fn max_watched_instances(mut self, max: usize) -> Self {
        self.push.max_instances = max;
        self
    }

    /// How many instances the push streams watch now: one shared poll loop
    /// each, stopped when its last viewer leaves.
    pub fn watched_instances(&self) -> usize {
        self.inner.watches.watched()
    }

    /// How many push viewers are served at once (default 10,000); one more
    /// is answered 503. Each viewer holds a connection: see
    /// [`HttpApi::max_connections`].
    pub fn max_push_viewers(mut self, max: usize) -> Self {
        self.push.max_viewers = max;
        self
    }

    /// The URL clients reach this server at (`https://status.example.com`,
    /// or with a path prefix, `https://example.com/durable`): `Location`
    /// headers are absolute on it. Without one they are relative. An
    /// `http` or `https` URL with a host, and no user, query or fragment;
    /// [`Error::Config`] otherwise.
    pub fn public_url(mut self, url: &str) -> crate::Result<Self> {
        self.public_url = Some(parse_public_url(url)?.into());
        Ok(self)
    }

    /// How long a client may take to send a request's headers, on a new
    /// connection or an idle kept-alive one, before [`serve`] closes the
    /// connection (default [`DEFAULT_HEADER_READ_TIMEOUT`]; at least 1 ms).
    /// Sending slowly does not extend it.
    pub fn header_read_timeout(mut self, timeout: Duration) -> Self {
        self.limits.header_read_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// How long a client may take to send a request's body once its
    /// headers are in; 408 after that (default
    /// [`DEFAULT_BODY_READ_TIMEOUT`]; at least 1 ms).
    pub fn body_read_timeout(mut self, timeout: Duration) -> Self {
        self.limits.body_read_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// How many connections [`serve`] serves at once (default
    /// [`DEFAULT_MAX_CONNECTIONS`]; at least 1). A connection past them is
    /// answered 503 with `Retry-After` and closed.
    pub fn max_connections(mut self, max: usize) -> Self {
        self.limits.max_connections = max.max(1);
        self
    }

    /// How long [`serve`] waits for a client to take an answer: when a
    /// write to the connection makes no progress for this long (the client
    /// reads nothing and the buffers are full), the connection is closed
    /// (default [`DEFAULT_WRITE_TIMEOUT`]; at least 1 ms). Every write is
    /// bounded so: answers, 503 refusals past the connection cap, and the
    /// answers to requests that are not valid HTTP. A client that reads
    /// slowly but steadily is bounded by the [max connection
    /// age](Self::max_connection_age) instead.
    pub fn write_timeout(mut self, timeout: Duration) -> Self {
        self.limits.write_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// How long [`serve`] serves one connection: past this, it is asked to
    /// close (at once when idle, after its answer in flight otherwise,
    /// which then says `connection: close`), and dropped if it has not
    /// within the [shutdown grace](Self::shutdown_grace) (default
    /// [`DEFAULT_MAX_CONNECTION_AGE`]; at least 1 ms).
    pub fn max_connection_age(mut self, age: Duration) -> Self {
        self.limits.max_connection_age = age.max(Duration::from_millis(1));
        self
    }

    /// How long the connections in flight have to finish once [`serve`] is
    /// told to stop, or once a connection is past its [max
    /// age](Self::max_connection_age): then they are dropped, and `serve`
    /// returns (default [`DEFAULT_SHUTDOWN_GRACE`]; zero drops them at
    /// once).
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.limits.shutdown_grace = grace;
        self
    }

    /// The routes: the API under both base paths, the page at `/`. Bodies
    /// are limited and every error is JSON here already; the limits of
    /// connections are [`serve`]'s.
    pub fn router(self) -> Router {
        let api =
            handlers::routes().layer(middleware::from_fn_with_state(self.clone(), require_key));
        Router::new()
            .nest(BASE_PATH, api.clone())
            .nest(LEGACY_BASE_PATH, api)
            .merge(page::routes())
            .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such route") })
            .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
            .layer(middleware::from_fn_with_state(self.clone(), limit_body))
            .layer(middleware::from_fn(json_errors))
            .with_state(self)
    }

    /// Ends every push stream: the server is stopping.
    pub(crate) fn stop_push_streams(&self) {
        self.inner.watches.stop();
    }

    /// The URL of what `uri` asked for, to hand back to the client: on the
    /// public URL, or relative; without the `code` parameter.
    pub(crate) fn url_of(&self, uri: &Uri) -> String {
        let mut url = String::from(self.public_url.as_deref().unwrap_or(""));
        push_visible(&mut url, uri.path());
        let kept: Vec<&str> = uri
            .query()
            .unwrap_or("")
            .split('&')
            .filter(|pair| !pair.is_empty() && !is_key_parameter(pair))
            .collect();
        if !kept.is_empty() {
            url.push('?');
            push_visible(&mut url, &kept.join("&"));
        }
        url
    }

    /// The store of the `taskHub` parameter: another table of the same
    /// account, on the same connection pool (nothing is cached or created).
    fn store_for(&self, task_hub: Option<&str>) -> Result<InstanceStore, ApiError> {
        let default = &self.inner.default_store;
        match task_hub.filter(|hub| !hub.eq_ignore_ascii_case(default.task_hub())) {
            None => Ok(default.clone()),
            Some(hub) => Ok(default.task_hub_store(hub)?),
        }
    }

    pub(crate) async fn one_purge_at_a_time(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.inner.purges.lock().await
    }

    fn key_matches(&self, presented: Option<&[u8]>) -> bool {
        if self.inner.keys.is_empty() {
            return true;
        }
        let Some(presented) = presented else {
            return false;
        };
        // Compare with every key, in time that does not depend on where
        // they differ, nor on which key matched.
        self.inner.keys.iter().fold(false, |found, key| {
            found | constant_time_eq(key.expose().as_bytes(), presented)
        })
    }
}

/// `http[s]://host[:port][/prefix]`, checked, without a trailing slash.
fn parse_public_url(text: &str) -> crate::Result<String> {
    let invalid = |why: String| Error::Config(format!("public URL '{text}': {why}"));
    let trimmed = text.trim();
    if trimmed.contains(['?', '#']) {
        return Err(invalid("must have no query and no fragment".into()));
    }
    let uri: Uri = trimmed
        .parse()
        .map_err(|e| invalid(format!("not a URL ({e})")))?;
    let scheme = match uri.scheme_str() {
        Some(scheme @ ("http" | "https")) => scheme,
        _ => return Err(invalid("must start with https:// or http://".into())),
    };
    let authority = uri
        .authority()
        .filter(|a| !a.host().is_empty())
        .ok_or_else(|| invalid("has no host".into()))?;
    if authority.as_str().contains('@') {
        return Err(invalid("must have no user information".into()));
    }
    let path = uri.path().trim_end_matches('/');
    Ok(format!("{scheme}://{authority}{path}"))
}

/// Whether a query pair is the key (`code`, in any case or encoding).
fn is_key_parameter(pair: &str) -> bool {
    let name = pair.split_once('=').map_or(pair, |(name, _)| name);
    form_urlencoded::parse(name.as_bytes())
        .next()
        .is_some_and(|(name, _)| name.eq_ignore_ascii_case("code"))
}

/// Appends `text`, percent-encoding the bytes a header value cannot hold.
fn push_visible(url: &mut String, text: &str) {
    for byte in text.bytes() {
        if byte.is_ascii_graphic() {
            url.push(char::from(byte));
        } else {
            url.push_str(&format!("%{byte:02X}"));
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The key a request presents, as the Functions host reads it: its
/// `x-functions-key` header when it has one, whatever it holds; else its
/// `code` parameter.
fn presented_key(request: &Request) -> Option<Vec<u8>> {
    match request.headers().get(KEY_HEADER) {
        Some(header) => Some(header.as_bytes().to_vec()),
        None => params::Params::parse(request.uri().query())
            .get("code")
            .map(|code| code.as_bytes().to_vec()),
    }
}

async fn require_key(State(api): State<HttpApi>, request: Request, next: Next) -> Response {
    if api.inner.keys.is_empty() {
        // No key: the server listens on loopback, but a web page the user
        // visits can still reach it. Refuse other host names (DNS
        // rebinding) and cross-origin requests (forged terminates, purges).
        if let Err(refusal) = same_machine_only(request.headers()) {
            return refusal.into_response();
        }
        return next.run(request).await;
    }
    if api.key_matches(presented_key(&request).as_deref()) {
        next.run(request).await
    } else {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            format!(
                "a valid key is required: the {KEY_HEADER} header, or (without that header) the `code` query parameter"
            ),
        )
        .into_response()
    }
}

/// Without a key, only requests addressed to a loopback name, and not sent
/// by a page of another origin, are served.
fn same_machine_only(headers: &HeaderMap) -> Result<(), ApiError> {
    // A request with no Host (HTTP/1.0) comes from no browser: no page can
    // send one, so it needs no guarding here.
    let Some(host) = headers.get(axum::http::header::HOST) else {
        return Ok(());
    };
    let host = host.to_str().unwrap_or("");
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    let loopback = name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.to_canonical().is_loopback());
    if !loopback {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("without a key this server answers only to loopback host names, not '{host}'; configure a key"),
        ));
    }
    if let Some(origin) = headers
        .get(axum::http::header::ORIGIN)
        .and_then(|v| v.to_str().ok())
    {
        let same = origin.split_once("://").is_some_and(|(scheme, authority)| {
            matches!(scheme, "http" | "https") && authority.eq_ignore_ascii_case(host)
        });
        if !same {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!("without a key this server refuses requests from other origins ('{origin}'); configure a key"),
            ));
        }
    }
    Ok(())
}

/// Reads the body, whatever its framing, up to the limit and within the
/// body-read timeout, before anything else runs: a body over the limit is a
/// 413, and nothing is done. (No route takes a body, so an extractor's own
/// limit would never apply.)
async fn limit_body(State(api): State<HttpApi>, request: Request, next: Next) -> Response {
    let too_large = |size: String| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body: {size} bytes, the limit is {MAX_BODY_BYTES} bytes"),
        )
        .into_response()
    };
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(length) = declared.filter(|&length| length > MAX_BODY_BYTES as u64) {
        return too_large(length.to_string());
    }
    let (parts, body) = request.into_parts();
    let timeout = api.limits.body_read_timeout;
    let read = tokio::time::timeout(timeout, Limited::new(body, MAX_BODY_BYTES).collect()).await;
    let body = match read {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(error)) if error.downcast_ref::<LengthLimitError>().is_some() => {
            return too_large(format!("more than {MAX_BODY_BYTES}"));
        }
        Ok(Err(error)) => {
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("request body: cannot be read: {error}"),
            )
            .into_response();
        }
        Err(_) => {
            return ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "request body: not received within {} ms",
                    timeout.as_millis()
                ),
            )
            .into_response();
        }
    };
    next.run(Request::from_parts(parts, Body::from(body))).await
}

/// Turns an error answer that is not JSON (the framework's: a 405 of method
/// routing, an extractor's rejection) into `{"Message": "..."}`, keeping its
/// status and its other headers (`Allow`).
async fn json_errors(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let message = if status == StatusCode::METHOD_NOT_ALLOWED {
        // (The router adds the Allow header after this.)
        format!(
            "method {method} is not allowed on this route: the Allow header lists those that are"
        )
    } else {
        Limited::new(body, 4096)
            .collect()
            .await
            .ok()
            .and_then(|text| String::from_utf8(text.to_bytes().to_vec()).ok())
            .map(|text| text.trim().to_owned())
            .filter(|text| !text.is_empty())
            .unwrap_or_else(|| {
                status
                    .canonical_reason()
                    .unwrap_or("error")
                    .to_ascii_lowercase()
            })
    };
    let mut answer = ApiError::new(status, message).into_response();
    let own: Vec<_> = answer.headers().keys().cloned().collect();
    for (name, value) in &parts.headers {
        let framing = [CONTENT_TYPE, CONTENT_LENGTH, TRANSFER_ENCODING].contains(name);
        if !framing && !own.contains(name) {
            answer.headers_mut().append(name.clone(), value.clone());
        }
    }
    answer
}

/// Refuses to serve without a key anywhere but on loopback.
pub fn check_listen_address(addr: &SocketAddr, has_keys: bool) -> crate::Result<()> {
    if !has_keys && !addr.ip().is_loopback() {
        return Err(Error::Config(format!(
            "refusing to serve on {addr} without a key: anyone who can reach it could read and purge \
             instances. Give a key (--key, or {KEYS_VARIABLE}), or listen on 127.0.0.1"
        )));
    }
    Ok(())
}

/// Serves the API on `listener` until `shutdown` completes, then waits for
/// the requests in flight, at most the [shutdown
/// grace](HttpApi::shutdown_grace), and drops the connections left:
/// HTTP/1.1, with the timeouts, the connection cap and the connection age
/// of `api` (see [`HttpApi`]). Refuses a listener off loopback when `api`
/// has no key. Dropping the returned future drops every connection at once.
pub async fn serve(
    listener: tokio::net::TcpListener,
    api: HttpApi,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    check_listen_address(&addr, !api.inner.keys.is_empty()).map_err(std::io::Error::other)?;
    server::run(listener, api, shutdown).await
}

/// An error answer: a status code and `{"Message": "..."}`, the shape of the
/// original's errors.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    status: StatusCode,
    pub(crate) message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub(crate) fn bad_parameter(name: &str, problem: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::BAD_REQUEST, format!("{name}: {problem}"))
    }
}

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        let status = match &error {
            Error::Invalid { .. } | Error::TooLarge { .. } => StatusCode::BAD_REQUEST,
            Error::NotFound { .. } | Error::TableNotFound { .. } => StatusCode::NOT_FOUND,
            Error::Terminal { .. } => StatusCode::GONE,
            Error::NotTerminal { .. } => StatusCode::PRECONDITION_FAILED,
            Error::AlreadyExists { .. } | Error::Conflict { .. } => StatusCode::CONFLICT,
            Error::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            e if e.is_transient() => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status.is_server_error() {
            tracing::warn!(%error, "request failed");
        }
        ApiError::new(status, error.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut headers = HeaderMap::new();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert("retry-after", HeaderValue::from_static("5"));
        }
        (
            self.status,
            headers,
            Json(serde_json::json!({ "Message": self.message })),
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_compare_whole() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| {
                (
                    axum::http::HeaderName::from_static(name),
                    value.parse().unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn without_a_key_only_loopback_names_and_the_same_origin() {
        for host in [
            "127.0.0.1:7071",
            "localhost:7071",
            "LOCALHOST",
            "localhost.:7071",
            "[::1]:7071",
            "[::ffff:127.0.0.1]:7071",
            "127.0.0.2",
        ] {
            assert!(
                same_machine_only(&headers(&[("host", host)])).is_ok(),
                "{host}"
            );
        }
        for host in [
            "evil.example",
            "evil.example:7071",
            "10.0.0.1:7071",
            "",
            "localhost.evil.example",
        ] {
            assert!(
                same_machine_only(&headers(&[("host", host)])).is_err(),
                "{host}"
            );
        }
        assert!(
            same_machine_only(&HeaderMap::new()).is_ok(),
            "no Host: no browser"
        );
        let same = headers(&[
            ("host", "127.0.0.1:7071"),
            ("origin", "http://127.0.0.1:7071"),
        ]);
        assert!(same_machine_only(&same).is_ok());
        let other = headers(&[
            ("host", "127.0.0.1:7071"),
            ("origin", "https://evil.example"),
        ]);
        let err = same_machine_only(&other).unwrap_err();
        assert_eq!(err.status, StatusCode::FORBIDDEN);
        assert!(err.message.contains("other origins"), "{}", err.message);
    }

    #[test]
    fn public_urls_are_checked_and_trimmed() {
        for (given, kept) in [
            ("https://status.example.com", "https://status.example.com"),
            ("https://status.example.com/", "https://status.example.com"),
            (
                "http://127.0.0.1:8080/prefix/",
                "http://127.0.0.1:8080/prefix",
            ),
            (
                " HTTPS://Status.example.com:443/a/b ",
                "https://Status.example.com:443/a/b",
            ),
        ] {
            assert_eq!(parse_public_url(given).unwrap(), kept, "{given}");
        }
        for bad in [
            "status.example.com",
            "ftp://status.example.com",
            "https://",
            "https://status.example.com/?code=x",
            "https://status.example.com/#top",
            "https://user:pass@status.example.com",
            "/relative",
            "",
        ] {
            let err = parse_public_url(bad).unwrap_err().to_string();
            assert!(err.contains("public URL"), "{bad}: {err}");
        }
    }

    #[test]
    fn the_key_is_never_in_a_url_handed_out() {
        for pair in ["code=k", "CODE=k", "c%6Fde=k", "Code", "code="] {
            assert!(is_key_parameter(pair), "{pair}");
        }
        for pair in ["codes=k", "x=code", "cod=e"] {
            assert!(!is_key_parameter(pair), "{pair}");
        }
        let uri: Uri =
            "/runtime/webhooks/durabletask/instances/a%20b?code=k&x=1&&showInput=false&Code=j"
                .parse()
                .unwrap();
        let mut url = String::new();
        push_visible(&mut url, uri.path());
        assert_eq!(url, "/runtime/webhooks/durabletask/instances/a%20b");
        let mut raw = String::new();
        push_visible(&mut raw, "/a b?é");
        assert_eq!(raw, "/a%20b?%C3%A9");
    }

    #[test]
    fn no_key_means_loopback_only() {
        let public: SocketAddr = "0.0.0.0:7071".parse().unwrap();
        let err = check_listen_address(&public, false)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("refusing to serve on 0.0.0.0:7071 without a key"),
            "{err}"
        );
        assert!(check_listen_address(&public, true).is_ok());
        assert!(check_listen_address(&"127.0.0.1:7071".parse().unwrap(), false).is_ok());
        assert!(check_listen_address(&"[::1]:7071".parse().unwrap(), false).is_ok());
    }
}
