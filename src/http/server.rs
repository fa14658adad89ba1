//! The connections: HTTP/1.1 on hyper, with a header-read timeout, a write
//! timeout, a cap on connections served at once, a connection age, graceful
//! shutdown bounded by a grace period, and JSON answers to requests hyper
//! cannot parse.

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
use hyper_util::server::graceful::GracefulConnection;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};

use super::{ApiError, HttpApi, Limits};

/// Connections past the cap answered 503 at once; past these too, a
/// connection is closed without an answer.
const MAX_REFUSALS: usize = 64;

/// Serves until `shutdown` completes, then gives the connections in flight
/// the shutdown grace to finish (idle ones close at once) and drops the
/// rest. Dropping this future drops every connection.
pub(super) async fn run(
    listener: TcpListener,
    api: HttpApi,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let limits = api.limits;
    let streams = api.clone();
    let service = TowerToHyperService::new(api.router());
    let serving = serving_builder(&limits);
    let refusing = refusing_builder(&limits);
    let refusal: Arc<str> = format!(
        "the server is busy: too many connections (at most {} at once); try again later",
        limits.max_connections
    )
    .into();
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS));
    // Every connection's task: aborted (its connection dropped) when this
    // set is, past the grace or when this future is dropped.
    let mut tasks = JoinSet::new();
    let (stop, stopping) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => break,
            Some(ended) = tasks.join_next(), if !tasks.is_empty() => {
                if let Err(error) = ended {
                    if error.is_panic() {
                        tracing::warn!(%error, "a connection's task panicked");
                    }
                }
                continue;
            }
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
        let io = connection_io(stream, limits.write_timeout);
        if let Ok(permit) = connections.clone().try_acquire_owned() {
            let connection = serving.serve_connection(io, service.clone());
            let stopping = stopping.clone();
            tasks.spawn(async move {
                if let Err(error) = drive(connection, &limits, stopping).await {
                    tracing::debug!(%error, "connection ended");
                }
                drop(permit);
            });
        } else if let Ok(permit) = refusals.clone().try_acquire_owned() {
            tracing::debug!("connection refused: too many connections");
            let connection = refuse(&refusing, io, refusal.clone());
            let stopping = stopping.clone();
            tasks.spawn(async move {
                let _ = drive(connection, &limits, stopping).await;
                drop(permit);
            });
        } else {
            drop(io);
        }
    }
    drop(listener);
    let _ = stop.send(true);
    // Push streams last until their instance ends: end them now, or every
    // open viewer would hold the stop for the whole grace.
    streams.stop_push_streams();
    let drained = tokio::time::timeout(limits.shutdown_grace, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            connections = tasks.len(),
            "stopping: connections still open after the shutdown grace of {} ms are dropped",
            limits.shutdown_grace.as_millis()
        );
        tasks.shutdown().await;
    }
    Ok(())
}

/// The connections served.
fn serving_builder(limits: &Limits) -> http1::Builder {
    let mut serving = http1::Builder::new();
    serving
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    serving
}

/// The connections past the cap: one answer, then closed.
fn refusing_builder(limits: &Limits) -> http1::Builder {
    let mut refusing = serving_builder(limits);
    refusing.keep_alive(false);
    refusing
}

/// The IO of every connection, answered or refused: writes bounded by the
/// write timeout, under the rewriting of hyper's own error answers (so that
/// their writes are bounded too).
fn connection_io<S>(
    stream: S,
    write_timeout: Duration,
) -> JsonParseErrors<WriteDeadline<TokioIo<S>>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    JsonParseErrors::new(WriteDeadline::new(TokioIo::new(stream), write_timeout))
}

/// A connection past the cap: answered 503 (whatever it asks) and closed.
fn refuse<I>(
    refusing: &http1::Builder,
    io: I,
    message: Arc<str>,
) -> impl GracefulConnection<Error = hyper::Error> + Send + 'static
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let busy = hyper::service::service_fn(move |_| {
        let answer = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, &*message);
        async move { Ok::<_, Infallible>(answer.into_response()) }
    });
    refusing.serve_connection(io, busy)
}

/// Runs a connection to its end: until it closes, or until the server stops
/// or the connection is past its age; then it is asked to close, and is
/// dropped if it has not within the shutdown grace.
async fn drive<C: GracefulConnection>(
    connection: C,
    limits: &Limits,
    mut stopping: watch::Receiver<bool>,
) -> Result<(), C::Error> {
    let mut connection = std::pin::pin!(connection);
    let why = tokio::select! {
        ended = connection.as_mut() => return ended,
        // (An error: the server is gone. Stop too.)
        _ = stopping.wait_for(|&stop| stop) => "the server is stopping",
        () = tokio::time::sleep(limits.max_connection_age) => "the connection is past its age",
    };
    connection.as_mut().graceful_shutdown();
    match tokio::time::timeout(limits.shutdown_grace, connection).await {
        Ok(ended) => ended,
        Err(_) => {
            tracing::debug!(
                why,
                "connection dropped: not closed within the shutdown grace"
            );
            Ok(())
        }
    }
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

/// Bounds the writes to a connection: a write, flush or shutdown that stays
/// pending (the client reads nothing, the buffers are full) for longer than
/// the timeout fails with [`io::ErrorKind::TimedOut`], which ends the
/// connection. hyper's own timer runs only while it reads a request's head:
/// without this, a client that sends requests and never reads the answers
/// would hold its connection forever.
struct WriteDeadline<T> {
    inner: T,
    timeout: Duration,
    /// Since when a write has been pending, by when it must progress.
    stalled: Option<Pin<Box<Sleep>>>,
    /// Whether `stalled` is running (it is kept to be reset, not allocated
    /// again).
    armed: bool,
}

impl<T> WriteDeadline<T> {
    fn new(inner: T, timeout: Duration) -> Self {
        WriteDeadline {
            inner,
            timeout,
            stalled: None,
            armed: false,
        }
    }

    /// What a write (flush, shutdown) polled: progress disarms the
    /// deadline; pending arms it, or fails once it has passed.
    fn check<R>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        if polled.is_ready() {
            self.armed = false;
            return polled;
        }
        if !self.armed {
            // (A timeout too large for a deadline never runs out.)
            let Some(deadline) = Instant::now().checked_add(self.timeout) else {
                return Poll::Pending;
            };
            match &mut self.stalled {
                Some(sleep) => sleep.as_mut().reset(deadline),
                None => self.stalled = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
            self.armed = true;
        }
        let sleep = self.stalled.as_mut().expect("armed");
        ready!(sleep.as_mut().poll(cx));
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "the client took nothing written for {} ms",
                self.timeout.as_millis()
            ),
        )))
    }
}

impl<T: hyper::rt::Read + Unpin> hyper::rt::Read for WriteDeadline<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: hyper::rt::Write + Unpin> hyper::rt::Write for WriteDeadline<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.check(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.check(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        this.check(cx, polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.check(cx, polled)
    }
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
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn limits(write_timeout: Duration) -> Limits {
        Limits {
            header_read_timeout: Duration::from_secs(30),
            body_read_timeout: Duration::from_secs(30),
            max_connections: 1,
            write_timeout,
            max_connection_age: Duration::from_secs(600),
            shutdown_grace: Duration::from_secs(600),
        }
    }

    /// Runs `connection`, which must end within 10 s (a guard).
    async fn ends<C: GracefulConnection>(connection: C, limits: &Limits) -> Result<(), C::Error> {
        let (_stop, stopping) = watch::channel(false);
        tokio::time::timeout(Duration::from_secs(10), drive(connection, limits, stopping))
            .await
            .expect("the connection ends within 10 s")
    }

    /// Whether `error` comes of the write timeout.
    fn timed_out(error: &hyper::Error) -> bool {
        let mut cause = std::error::Error::source(error);
        while let Some(error) = cause {
            if let Some(io) = error.downcast_ref::<io::Error>() {
                return io.kind() == io::ErrorKind::TimedOut;
            }
            cause = error.source();
        }
        false
    }

    #[tokio::test]
    async fn a_write_nobody_takes_fails_after_the_write_timeout() {
        // 64 bytes of buffer, which the other side never reads.
        let (_client, server) = tokio::io::duplex(64);
        let mut io = WriteDeadline::new(TokioIo::new(server), Duration::from_millis(200));
        let started = std::time::Instant::now();
        let mut written = 0;
        let error = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let polled = std::future::poll_fn(|cx| {
                    hyper::rt::Write::poll_write(Pin::new(&mut io), cx, &[b'x'; 50])
                })
                .await;
                match polled {
                    Ok(n) => written += n,
                    Err(error) => return error,
                }
            }
        })
        .await
        .expect("the write fails within 10 s");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut, "{error}");
        assert_eq!(written, 64);
        assert!(started.elapsed() >= Duration::from_millis(200));
    }

    #[tokio::test]
    async fn a_write_that_progresses_is_not_cut_off() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut io = WriteDeadline::new(TokioIo::new(server), Duration::from_millis(300));
        // The reader takes 64 bytes every 100 ms: 500 bytes take well over
        // the timeout in all, but every wait is shorter.
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 64];
            let mut read = 0;
            while read < 500 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                read += client.read(&mut buf).await.unwrap();
            }
        });
        let mut written = 0;
        while written < 500 {
            written += std::future::poll_fn(|cx| {
                hyper::rt::Write::poll_write(Pin::new(&mut io), cx, &[b'x'; 100])
            })
            .await
            .expect("progress resets the deadline");
        }
        reader.await.unwrap();
    }

    #[tokio::test]
    async fn a_refused_client_that_reads_nothing_does_not_hold_its_refusal() {
        let limits = limits(Duration::from_millis(200));
        let (mut client, server) = tokio::io::duplex(64);
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let io = connection_io(server, limits.write_timeout);
        let connection = refuse(&refusing_builder(&limits), io, "busy".into());
        let error = ends(connection, &limits).await.unwrap_err();
        assert!(timed_out(&error), "{error:?}");
    }

    #[tokio::test]
    async fn a_json_error_answer_nobody_reads_does_not_hold_the_connection() {
        let limits = limits(Duration::from_millis(200));
        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(b"NOT HTTP\r\n\r\n").await.unwrap();
        let io = connection_io(server, limits.write_timeout);
        let never = hyper::service::service_fn(|_| async {
            Ok::<_, Infallible>(hyper::Response::new(String::new()))
        });
        let connection = serving_builder(&limits).serve_connection(io, never);
        let error = ends(connection, &limits).await.unwrap_err();
        assert!(timed_out(&error), "{error:?}");
        // What was written is the start of the JSON answer.
        let mut start = [0u8; 64];
        client.read_exact(&mut start).await.unwrap();
        let start = String::from_utf8_lossy(&start);
        assert!(
            start.starts_with("HTTP/1.1 400 Bad Request\r\ncontent-type: application/json"),
            "{start}"
        );
    }

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
