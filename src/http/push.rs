//! Server-sent events of one instance's status: every viewer of an
//! instance shares one poll loop ([`InstanceStore::watch`], reading the
//! columns of the status but Input), which stops when its last viewer
//! leaves. An event on every change of runtime status, custom status or
//! output, heartbeats while idle, a final `end` event at a terminal status.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use tokio::sync::watch;

use super::ApiError;
use crate::{InstanceStore, StatusPayload};

/// The default of [`super::HttpApi::push_poll_interval`].
pub const DEFAULT_PUSH_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// The default of [`super::HttpApi::push_heartbeat`].
pub const DEFAULT_PUSH_HEARTBEAT: Duration = Duration::from_secs(15);
/// The default of [`super::HttpApi::max_watched_instances`].
pub const DEFAULT_MAX_WATCHED_INSTANCES: usize = 1_000;
/// The default of [`super::HttpApi::max_push_viewers`].
pub const DEFAULT_MAX_PUSH_VIEWERS: usize = 10_000;

/// The settings of the push streams.
#[derive(Debug, Clone, Copy)]
pub(super) struct PushLimits {
    pub poll_interval: Duration,
    pub heartbeat: Duration,
    pub max_instances: usize,
    pub max_viewers: usize,
}

impl Default for PushLimits {
    fn default() -> Self {
        PushLimits {
            poll_interval: DEFAULT_PUSH_POLL_INTERVAL,
            heartbeat: DEFAULT_PUSH_HEARTBEAT,
            max_instances: DEFAULT_MAX_WATCHED_INSTANCES,
            max_viewers: DEFAULT_MAX_PUSH_VIEWERS,
        }
    }
}

/// What a poll loop publishes.
#[derive(Debug, Clone)]
enum Seen {
    /// The status: its event id (a hash of the data), the status object's
    /// JSON, and whether it is terminal.
    Status {
        id: String,
        data: Arc<str>,
        terminal: bool,
    },
    /// The loop stopped on an error (the instance is gone, a read failed).
    Failed(ApiError),
}

type Key = (String, String);

/// The poll loops and their viewers.
#[derive(Default)]
pub(super) struct Watches {
    loops: Mutex<HashMap<Key, watch::Sender<Option<Seen>>>>,
    viewers: Arc<AtomicUsize>,
    /// Counts the server's stops: a stream ends at the first stop after it
    /// began, so that the server need not wait its shutdown grace for
    /// viewers that would never leave (and a server started again with the
    /// same API serves streams again).
    stops: watch::Sender<u64>,
}

/// Counts a viewer for as long as it lives.
struct Viewer(Arc<AtomicUsize>);

impl Drop for Viewer {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Watches {
    /// The number of instances watched now.
    pub(super) fn watched(&self) -> usize {
        self.loops.lock().expect("not poisoned").len()
    }

    /// Ends every stream open now.
    pub(super) fn stop(&self) {
        self.stops.send_modify(|stops| *stops += 1);
    }

    /// The event stream of one instance for one viewer, who last saw the
    /// event `last_event_id` (then an unchanged status is not sent again).
    pub(super) async fn stream(
        self: &Arc<Self>,
        store: &InstanceStore,
        instance_id: &str,
        last_event_id: Option<String>,
        limits: PushLimits,
    ) -> Result<Response, ApiError> {
        let viewer = self.admit(limits)?;
        // A new receiver has seen the stops so far: it wakes at the next.
        let stops = self.stops.subscribe();
        let mut seen = self.subscribe(store, instance_id, limits)?;
        // The first status, or why there is none, before the answer starts.
        let first = loop {
            if let Some(first) = seen.borrow_and_update().clone() {
                break first;
            }
            if seen.changed().await.is_err() {
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the instance's watch stopped before its first read",
                ));
            }
        };
        if let Seen::Failed(error) = first {
            return Err(error);
        }
        let heartbeat = limits.heartbeat;
        let events = futures::stream::unfold(
            (seen, Some(first), last_event_id, false, viewer),
            move |(mut seen, pending, mut last_id, ended, viewer)| {
                let mut stops = stops.clone();
                async move {
                    if ended || stops.has_changed().unwrap_or(true) {
                        return None;
                    }
                    let next = match pending {
                        Some(next) => next,
                        None => {
                            tokio::select! {
                                changed = seen.changed() => match changed {
                                    Ok(()) => match seen.borrow_and_update().clone() {
                                        Some(next) => next,
                                        None => return None,
                                    },
                                    // The loop is gone without a terminal status.
                                    Err(_) => Seen::Failed(ApiError::new(
                                        StatusCode::SERVICE_UNAVAILABLE,
                                        "the instance's watch stopped",
                                    )),
                                },
                                () = tokio::time::sleep(heartbeat) => {
                                    let chunk = Bytes::from_static(b": heartbeat\n\n");
                                    return Some((chunk, (seen, None, last_id, false, viewer)));
                                }
                                // The server stops: the stream ends, and a
                                // browser's EventSource tries again later.
                                _ = stops.changed() => return None,
                            }
                        }
                    };
                    let (chunk, ended) = match next {
                        Seen::Status { id, data, terminal } => {
                            if !terminal && last_id.as_deref() == Some(id.as_str()) {
                                // Resumed at this status: nothing new yet.
                                return Some((Bytes::new(), (seen, None, last_id, false, viewer)));
                            }
                            let event = if terminal { "end" } else { "status" };
                            let chunk = format!("id: {id}\nevent: {event}\ndata: {data}\n\n");
                            last_id = Some(id);
                            (Bytes::from(chunk), terminal)
                        }
                        Seen::Failed(error) => {
                            let data = serde_json::json!({ "Message": error.message }).to_string();
                            (Bytes::from(format!("event: error\ndata: {data}\n\n")), true)
                        }
                    };
                    Some((chunk, (seen, None, last_id, ended, viewer)))
                }
            },
        )
        .filter(|chunk| futures::future::ready(!chunk.is_empty()))
        .map(Ok::<_, Infallible>);
        let mut headers = HeaderMap::new();
        headers.insert(
            "content-type",
            HeaderValue::from_static("text/event-stream; charset=utf-8"),
        );
        headers.insert("cache-control", HeaderValue::from_static("no-cache"));
        // No proxy in between may hold events back.
        headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
        Ok((StatusCode::OK, headers, Body::from_stream(events)).into_response())
    }

    fn admit(&self, limits: PushLimits) -> Result<Viewer, ApiError> {
        let before = self.viewers.fetch_add(1, Ordering::Relaxed);
        let viewer = Viewer(Arc::clone(&self.viewers));
        if before >= limits.max_viewers {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "this server already pushes to {} viewers, its limit; retry later",
                    limits.max_viewers
                ),
            ));
        }
        Ok(viewer)
    }

    /// The instance's poll loop, started when it has none.
    fn subscribe(
        self: &Arc<Self>,
        store: &InstanceStore,
        instance_id: &str,
        limits: PushLimits,
    ) -> Result<watch::Receiver<Option<Seen>>, ApiError> {
        let key = (store.task_hub().to_owned(), instance_id.to_owned());
        let mut loops = self.loops.lock().expect("not poisoned");
        if let Some(sender) = loops.get(&key) {
            return Ok(sender.subscribe());
        }
        if loops.len() >= limits.max_instances {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "this server already watches {} instances, its limit; retry later",
                    limits.max_instances
                ),
            ));
        }
        let (sender, receiver) = watch::channel(None);
        loops.insert(key.clone(), sender.clone());
        let watches = Arc::clone(self);
        let mut statuses = store.watch(instance_id, limits.poll_interval);
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    next = statuses.next() => next,
                    () = sender.closed() => {
                        // The last viewer left, unless one came meanwhile
                        // (viewers subscribe under the map's lock).
                        let loops = watches.loops.lock().expect("not poisoned");
                        if sender.receiver_count() > 0 {
                            continue;
                        }
                        drop(loops);
                        None
                    }
                };
                let Some(next) = next else { break };
                let seen = match next {
                    Ok(status) => {
                        let data = serde_json::to_string(&StatusPayload::new(&status, false))
                            .expect("a status object serializes");
                        Seen::Status {
                            id: event_id(&data),
                            data: data.into(),
                            terminal: status.runtime_status.is_terminal(),
                        }
                    }
                    Err(error) => Seen::Failed(ApiError::from(error)),
                };
                sender.send_replace(Some(seen));
            }
            // Gone from the map under its lock: a viewer either found this
            // loop before (and sees it end) or starts a new one after.
            let mut loops = watches.loops.lock().expect("not poisoned");
            if loops.get(&key).is_some_and(|s| s.same_channel(&sender)) {
                loops.remove(&key);
            }
        });
        Ok(receiver)
    }
}

/// An event id: a short hash of the event's data, the same for the same
/// status whichever loop or server made it.
fn event_id(data: &str) -> String {
    format!("{:016x}", crate::format::digest::fnv1a(data.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_follow_the_data() {
        assert_eq!(event_id("a"), event_id("a"));
        assert_ne!(event_id("a"), event_id("b"));
        assert_eq!(event_id("").len(), 16);
    }
}
