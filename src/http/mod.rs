//! The Durable Functions instance status HTTP API, served from the store,
//! and a status page.
//!
//! Both base paths of the original route to the same handlers:
//! `/runtime/webhooks/durabletask` and `/admin/extensions/DurableTaskExtension`.
//! No history is kept, so `showHistory` is accepted and answered without
//! `historyEvents`. Starting orchestrations, raising events, rewinding and
//! restarting need an orchestration engine: they answer 501.

mod handlers;
mod page;
mod params;

pub use handlers::CONTINUATION_HEADER;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};

use crate::config::Secret;
use crate::error::Error;
use crate::store::InstanceStore;

/// The current base path of the API.
pub const BASE_PATH: &str = "/runtime/webhooks/durabletask";
/// The base path of Functions 1.x, still used by older clients.
pub const LEGACY_BASE_PATH: &str = "/admin/extensions/DurableTaskExtension";
/// The largest request body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// The header that carries a key, besides the `code` query parameter.
pub const KEY_HEADER: &str = "x-functions-key";
/// The environment variable read by the command line for keys (comma separated).
pub const KEYS_VARIABLE: &str = "DURABLE_STATUS_KEYS";

/// What the HTTP API serves: the store of the default task hub, the means to
/// open others (`taskHub=`), and the keys it accepts.
#[derive(Clone)]
pub struct HttpApi {
    inner: Arc<Inner>,
}

struct Inner {
    default_store: InstanceStore,
    keys: Vec<Secret>,
    /// Purges by filter run one at a time: each already keeps 32 deletes
    /// in flight.
    purges: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for HttpApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpApi")
            .field("task_hub", &self.inner.default_store.task_hub())
            .field("keys", &self.inner.keys.len())
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
                keys: keys
                    .into_iter()
                    .filter(|k| !k.expose().is_empty())
                    .collect(),
            }),
        }
    }

    /// The routes: the API under both base paths, the page at `/`.
    pub fn router(self) -> Router {
        let api = handlers::routes()
            .layer(middleware::from_fn_with_state(self.clone(), require_key))
            .layer(middleware::from_fn(limit_body))
            .layer(DefaultBodyLimit::max(MAX_BODY_BYTES));
        Router::new()
            .nest(BASE_PATH, api.clone())
            .nest(LEGACY_BASE_PATH, api)
            .merge(page::routes())
            .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such route") })
            .with_state(self)
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

    fn key_matches(&self, presented: Option<&str>) -> bool {
        if self.inner.keys.is_empty() {
            return true;
        }
        let Some(presented) = presented else {
            return false;
        };
        // Compare with every key, in time that does not depend on where
        // they differ, nor on which key matched.
        self.inner.keys.iter().fold(false, |found, key| {
            found | constant_time_eq(key.expose().as_bytes(), presented.as_bytes())
        })
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn require_key(State(api): State<HttpApi>, request: Request, next: Next) -> Response {
    let from_header = request
        .headers()
        .get(KEY_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let from_query = params::Params::parse(request.uri().query())
        .get("code")
        .map(str::to_owned);
    let presented = from_header.or(from_query);
    if api.inner.keys.is_empty() {
        // No key: the server listens on loopback, but a web page the user
        // visits can still reach it. Refuse other host names (DNS
        // rebinding) and cross-origin requests (forged terminates, purges).
        if let Err(refusal) = same_machine_only(request.headers()) {
            return refusal.into_response();
        }
        return next.run(request).await;
    }
    if api.key_matches(presented.as_deref()) {
        next.run(request).await
    } else {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            format!(
                "a valid key is required: the `code` query parameter or the {KEY_HEADER} header"
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

/// Refuses a declared body over the limit before anything else runs (no
/// route reads a body, so the extractor's own limit would never apply).
async fn limit_body(request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    match declared {
        Some(length) if length > MAX_BODY_BYTES => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body: {length} bytes, the limit is {MAX_BODY_BYTES} bytes"),
        )
        .into_response(),
        _ => next.run(request).await,
    }
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

/// Serves the API on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    api: HttpApi,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    check_listen_address(&addr, !api.inner.keys.is_empty()).map_err(std::io::Error::other)?;
    axum::serve(listener, api.router())
        .with_graceful_shutdown(shutdown)
        .await
}

/// An error answer: a status code and `{"Message": "..."}`, the shape of the
/// original's errors.
#[derive(Debug)]
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
            headers.insert("retry-after", "5".parse().expect("a valid header"));
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
