//! The connections: HTTP/1.1 on hyper, with a header-read timeout, a cap on
//! connections served at once, graceful shutdown, and JSON answers to
//! requests hyper cannot parse.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::{ApiError, HttpApi};

/// Connections past the cap answered 503 at once; past these too, a
/// connection is closed without an answer.
const MAX_REFUSALS: usize = 64;

/// Serves until `shutdown` completes, then waits for the connections in
/// flight (idle ones close at once).
pub(super) async fn run(
    listener: TcpListener,
    api: HttpApi,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let limits = api.limits;
    let service = TowerToHyperService::new(api.router());
    let mut serving = http1::Builder::new();
    serving
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let mut refusing = http1::Builder::new();
    refusing
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(false);
    let refusal = format!(
        "the server is busy: too many connections (at most {} at once); try again later",
        limits.max_connections
    );
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS));
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) if is_connection_error(&error) => continue,
                Err(error) => {
                    // Out of file descriptors, say: wait, rather than spin.
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::select! {
                        () = &mut shutdown => break,
                        () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let io = JsonParseErrors::new(TokioIo::new(stream));
        if let Ok(permit) = connections.clone().try_acquire_owned() {
            let connection = graceful.watch(serving.serve_connection(io, service.clone()));
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::debug!(%error, "connection ended");
                }
                drop(permit);
            });
        } else if let Ok(permit) = refusals.clone().try_acquire_owned() {
            tracing::debug!("connection refused: too many connections");
            let message = refusal.clone();
            let busy = hyper::service::service_fn(move |_| {
                let answer = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message.clone());
                async move { Ok::<_, Infallible>(answer.into_response()) }
            });
            let connection = refusing.serve_connection(io, busy);
            tokio::spawn(async move {
                let _ = connection.await;
                drop(permit);
            });
        } else {
            drop(io);
        }
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Errors of one connection, not of the listener.
fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// hyper answers a request it cannot parse (an invalid request line, URI
/// or header; headers or a URI too large) by itself, before any service
/// sees it, with an empty body. This writes those answers in the API's JSON
/// error shape instead. They are told apart by what the service never
/// sends: a 400, 414 or 431 head with no body and no content type (every
/// error of the service is JSON). hyper closes the connection after them.
struct JsonParseErrors<T> {
    inner: T,
    /// A rewritten answer, and how much of it is written.
    pending: Option<(Vec<u8>, usize)>,
}

impl<T> JsonParseErrors<T> {
    fn new(inner: T) -> Self {
        JsonParseErrors {
            inner,
            pending: None,
        }
    }
}

impl<T: hyper::rt::Write + Unpin> JsonParseErrors<T> {
    /// Writes out a rewritten answer, if there is one.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some((bytes, written)) = &mut self.pending {
            while *written < bytes.len() {
                let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*written..]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                *written += n;
            }
        }
        self.pending = None;
        Poll::Ready(Ok(()))
    }

    /// Takes `head` as written if it is hyper's own error answer, and
    /// writes the JSON one instead.
    fn rewrite(&mut self, cx: &mut Context<'_>, head: &[u8]) -> Option<Poll<io::Result<usize>>> {
        let answer = json_answer_for(head)?;
        self.pending = Some((answer, 0));
        Some(match self.poll_pending(cx) {
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            // The rest goes out on flush.
            _ => Poll::Ready(Ok(head.len())),
        })
    }
}

impl<T: hyper::rt::Read + Unpin> hyper::rt::Read for JsonParseErrors<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: hyper::rt::Write + Unpin> hyper::rt::Write for JsonParseErrors<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        if let Some(written) = this.rewrite(cx, buf) {
            return written;
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        if let Some(first) = bufs.iter().find(|buf| !buf.is_empty()) {
            if let Some(written) = this.rewrite(cx, first) {
                return written;
            }
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

/// The JSON answer that replaces hyper's own answer `head`, if it is one.
fn json_answer_for(head: &[u8]) -> Option<Vec<u8>> {
    let rest = head
        .strip_prefix(b"HTTP/1.1 ")
        .or_else(|| head.strip_prefix(b"HTTP/1.0 "))?;
    let (status, message) = match rest.get(..4)? {
        b"400 " => (
            StatusCode::BAD_REQUEST,
            "the request is not valid HTTP: its request line, its URI (bytes that are not \
             UTF-8 text must be percent-encoded) or a header is malformed",
        ),
        b"414 " => (StatusCode::URI_TOO_LONG, "the request's URI is too long"),
        b"431 " => (
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "the request's headers are too many or too large",
        ),
        _ => return None,
    };
    // A whole head and nothing else, with no content type.
    let end = head.windows(4).position(|w| w == b"\r\n\r\n")?;
    if end + 4 != head.len() {
        return None;
    }
    let needle = b"\ncontent-type:";
    let lower = head.to_ascii_lowercase();
    if lower.windows(needle.len()).any(|w| w == needle) {
        return None;
    }
    let body = serde_json::json!({ "Message": message }).to_string();
    Some(
        format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
             connection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hyper_own_error_heads_are_rewritten() {
        let bare = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        let answer = String::from_utf8(json_answer_for(bare).unwrap()).unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "{answer}"
        );
        assert!(answer.contains("content-type: application/json\r\n"));
        let (_, body) = answer.split_once("\r\n\r\n").unwrap();
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert!(json["Message"].as_str().unwrap().contains("not valid HTTP"));
        assert!(answer.contains(&format!("content-length: {}\r\n", body.len())));
        assert!(json_answer_for(b"HTTP/1.1 431 Request Header Fields Too Large\r\n\r\n").is_some());

        for kept in [
            &b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\ncontent-length: 2\r\n\r\n"[..],
            b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n\r\n{}",
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\ncontent-len",
            b"{\"Message\": \"HTTP/1.1 400 \"}",
        ] {
            assert!(
                json_answer_for(kept).is_none(),
                "{}",
                String::from_utf8_lossy(kept)
            );
        }
    }
}
