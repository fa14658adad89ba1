//! The client crate's errors, mapped into the crate's [`Error`] in one place,
//! and what each means for a retry.

use azure_core::error::ErrorKind;

use super::identity::SignInError;
use super::refusals::Refusal;
use crate::error::{chain_text, Cause, Error, TransportKind};

/// Whether a failed request may be sent again, and whether the service may
/// have applied it although no (readable) answer came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Retry {
    pub retry: bool,
    pub maybe_applied: bool,
}

impl Retry {
    /// The answer is final, and nothing was applied (or it said what was).
    pub const NO: Retry = Retry {
        retry: false,
        maybe_applied: false,
    };
    /// Retryable, and the request was certainly not applied (throttled, or
    /// no connection was made).
    pub const SAFE: Retry = Retry {
        retry: true,
        maybe_applied: false,
    };
    /// Retryable, but the request may have been applied: its answer was lost
    /// or the service failed midway.
    pub const UNCERTAIN: Retry = Retry {
        retry: true,
        maybe_applied: true,
    };
    /// Not retryable, and the request may have been applied: an answer came
    /// but could not be read.
    pub const UNREADABLE: Retry = Retry {
        retry: false,
        maybe_applied: true,
    };
}

/// Maps a client crate error, and says whether to retry it. URLs lose their
/// query string (where a SAS token would be); a service error keeps the
/// service's own message, not the client's dump of the whole response.
pub(crate) fn map_error(error: azure_core::Error, endpoint: &str) -> (Error, Retry) {
    // No token: nothing was sent to storage, so a transient failure of the
    // sign-in is safe to retry.
    if let Some(sign_in) = find::<SignInError>(&error) {
        let error = Error::from(sign_in.clone());
        let retry = if error.is_transient() {
            Retry::SAFE
        } else {
            Retry::NO
        };
        return (error, retry);
    }
    match error.kind().clone() {
        ErrorKind::HttpResponse {
            status: code,
            error_code,
        } => {
            let status = u16::from(code);
            let retry = match status {
                // Throttled: refused before any work.
                429 | 503 => Retry::SAFE,
                408 | 500 | 502 | 504 => Retry::UNCERTAIN,
                _ => Retry::NO,
            };
            // A refusal (401, 403) comes explained; other answers keep the
            // service's own message.
            let explained = find::<Refusal>(&error).map(|refusal| refusal.0.clone());
            let message = explained
                .or_else(|| {
                    error
                        .as_http_error()
                        .and_then(|e| e.error_message())
                        .map(str::to_owned)
                })
                .as_deref()
                .and_then(|m| m.lines().next())
                .filter(|m| !m.trim().is_empty())
                .map(|m| redact_urls(m.trim()))
                .unwrap_or_else(|| code.canonical_reason().to_owned());
            (
                Error::Storage {
                    status,
                    code: error_code,
                    message,
                },
                retry,
            )
        }
        ErrorKind::Io => transport(error, endpoint),
        ErrorKind::Credential => (Error::Config(redact_urls(&chain_text(&error))), Retry::NO),
        // An answer that could not be read: the request may have been applied.
        ErrorKind::DataConversion => (
            Error::Transport {
                message: redact_urls(&chain_text(&error)),
                kind: TransportKind::Other,
                source: None,
            },
            Retry::UNREADABLE,
        ),
        // A request that could not be built: nothing was sent.
        _ => (
            Error::Transport {
                message: redact_urls(&chain_text(&error)),
                kind: TransportKind::Other,
                source: None,
            },
            Retry::NO,
        ),
    }
}

/// A request that got no answer. The cause is the HTTP client's error with
/// its URL removed.
fn transport(error: azure_core::Error, endpoint: &str) -> (Error, Retry) {
    let http = find::<reqwest::Error>(&error);
    let kind = match http {
        Some(e) if e.is_connect() => TransportKind::Connect,
        Some(e) if e.is_timeout() => TransportKind::Timeout,
        _ => TransportKind::Interrupted,
    };
    let refused_on_loopback = kind == TransportKind::Connect
        && is_loopback(endpoint)
        && find::<std::io::Error>(&error)
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused);
    let untrusted = kind == TransportKind::Connect
        && causes(&error).any(|e| e.to_string().contains("certificate"));
    let endpoint = redact_urls(endpoint);
    let message = match kind {
        TransportKind::Connect if untrusted => format!(
            "cannot connect to {endpoint}: its TLS certificate is not trusted (for a certificate \
             of your own CA, name a PEM file of the CA in SSL_CERT_FILE)"
        ),
        TransportKind::Connect => format!("cannot connect to {endpoint}"),
        TransportKind::Timeout => format!("{endpoint} did not answer in time"),
        _ => format!("the connection to {endpoint} broke before the answer came"),
    };
    let retry = match kind {
        // Nothing listens on this machine's port: an emulator that is not
        // running will not start within a retry budget. Say so at once.
        TransportKind::Connect if refused_on_loopback || untrusted => Retry::NO,
        TransportKind::Connect => Retry::SAFE,
        _ => Retry::UNCERTAIN,
    };
    let source: Cause = match error.into_inner() {
        Ok(inner) => match inner.downcast::<reqwest::Error>() {
            Ok(http) => Box::new(http.without_url()),
            Err(other) => Box::new(Redacted(redact_urls(&chain_text(other.as_ref())))),
        },
        Err(error) => Box::new(Redacted(redact_urls(&chain_text(&error)))),
    };
    (
        Error::Transport {
            message,
            kind,
            source: Some(source),
        },
        retry,
    )
}

pub(super) fn is_loopback(endpoint: &str) -> bool {
    let host = endpoint
        .split_once("://")
        .map_or(endpoint, |(_, rest)| rest)
        .split('/')
        .next()
        .unwrap_or_default();
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The error and its causes, outermost first.
fn causes(error: &azure_core::Error) -> impl Iterator<Item = &(dyn std::error::Error + 'static)> {
    std::iter::successors(Some(error as &(dyn std::error::Error + 'static)), |e| {
        e.source()
    })
}

fn find<T: std::error::Error + 'static>(error: &azure_core::Error) -> Option<&T> {
    causes(error).find_map(|e| e.downcast_ref::<T>())
}

/// An error known only by its (redacted) text.
#[derive(Debug)]
struct Redacted(String);

impl std::fmt::Display for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Redacted {}

/// Drops the query string of every URL in `text` (up to the next space,
/// quote or closing parenthesis; encoded query values hold none of them).
pub(crate) fn redact_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("://") {
        let url_end = rest[start..]
            .find(char::is_whitespace)
            .map_or(rest.len(), |i| start + i);
        match rest[start..url_end].find('?') {
            Some(q) => {
                let query_start = start + q;
                let query_end = rest[query_start..]
                    .find(|c: char| c.is_whitespace() || matches!(c, ')' | '"' | '\'' | '>'))
                    .map_or(rest.len(), |i| query_start + i);
                out.push_str(&rest[..query_start]);
                out.push_str("?<redacted>");
                rest = &rest[query_end..];
            }
            None => {
                out.push_str(&rest[..url_end]);
                rest = &rest[url_end..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_in_errors_lose_their_query_string() {
        let text = "error sending request for url (https://a.table.core.windows.net/T()?sv=1&sig=SECRET): refused";
        let redacted = redact_urls(text);
        assert!(!redacted.contains("SECRET"), "{redacted}");
        assert_eq!(redacted, "error sending request for url (https://a.table.core.windows.net/T()?<redacted>): refused");
        assert_eq!(redact_urls("no url here"), "no url here");
    }

    #[test]
    fn loopback_endpoints() {
        for endpoint in [
            "http://127.0.0.1:10002/devstoreaccount1",
            "http://localhost:1",
            "http://[::1]:10002/x",
        ] {
            assert!(is_loopback(endpoint), "{endpoint}");
        }
        for endpoint in [
            "https://acct.table.core.windows.net",
            "http://10.0.0.1:10002/devstoreaccount1",
        ] {
            assert!(!is_loopback(endpoint), "{endpoint}");
        }
    }

    #[test]
    fn service_errors_say_whether_a_retry_may_repeat_the_write() {
        let answer = |status: u16| {
            let error = azure_core::Error::new(
                ErrorKind::HttpResponse {
                    status: azure_core::StatusCode::try_from(status).unwrap(),
                    error_code: None,
                },
                Redacted("x".into()),
            );
            map_error(error, "http://127.0.0.1:1").1
        };
        assert_eq!(answer(503), Retry::SAFE);
        assert_eq!(answer(429), Retry::SAFE);
        assert_eq!(answer(500), Retry::UNCERTAIN);
        assert_eq!(answer(408), Retry::UNCERTAIN);
        assert_eq!(answer(412), Retry::NO);
        assert_eq!(answer(404), Retry::NO);
    }
}
