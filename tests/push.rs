//! Live status for many viewers at the cost of one: shared status reads,
//! ETags and 304s, server-sent events with one poll loop per instance, the
//! counts route, and listings bounded in memory. The store goes through a
//! counting proxy, so the table reads each case costs are counted.

mod common;

use std::time::Duration;

use anyhow::Result;
use common::proxy::Proxy;
use durable_status::http::{HttpApi, BASE_PATH, CONTINUATION_HEADER, LISTING_BYTES};
use durable_status::{CustomStatus, InstanceStore, JsonText, NewInstance, StoreOptions};
use reqwest::StatusCode;
use serde_json::{json, Value};

struct Server {
    base: String,
    proxy: Proxy,
    api: HttpApi,
    client: reqwest::Client,
}

/// A server whose store reaches the emulator through a counting proxy; the
/// test's own writes go through `direct` (not counted).
async fn server(configure: impl FnOnce(HttpApi) -> HttpApi) -> (Server, InstanceStore) {
    let direct = common::emulator_store().await;
    let (store, proxy) = common::through_proxy(&direct, StoreOptions::default()).await;
    let api = configure(HttpApi::new(store.clone(), Vec::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(durable_status::http::serve(
        listener,
        api.clone(),
        std::future::pending(),
    ));
    let server = Server {
        base: format!("http://{addr}{BASE_PATH}"),
        proxy,
        api,
        client: reqwest::Client::new(),
    };
    (server, direct)
}

async fn json_of(response: reqwest::Response) -> Value {
    serde_json::from_slice(&response.bytes().await.unwrap()).unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pollers_share_reads_and_unchanged_bodies_are_304() -> Result<()> {
    let (server, direct) = server(|api| api.read_window(Duration::from_secs(1))).await;
    direct.create(NewInstance::new("polled", "Orch")).await?;
    direct.start("polled").await?;
    server.proxy.take_requests();

    // 200 concurrent polls of one instance: a handful of table reads.
    let url = format!("{}/instances/polled", server.base);
    let polls = (0..200).map(|_| {
        let request = server.client.get(&url).send();
        async move { request.await.unwrap().status() }
    });
    let statuses = futures::future::join_all(polls).await;
    assert!(statuses.iter().all(|s| *s == StatusCode::ACCEPTED));
    let reads = server.proxy.take_requests();
    assert!(reads <= 3, "200 polls made {reads} table reads");

    // An ETag, and If-None-Match with it: 304 without a body.
    let first = server.client.get(&url).send().await?;
    let etag = first.headers()["etag"].to_str()?.to_owned();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
    let again = server
        .client
        .get(&url)
        .header("if-none-match", &etag)
        .send()
        .await?;
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(again.headers()["etag"].to_str()?, etag);
    assert!(again.bytes().await?.is_empty());
    // Another representation has another ETag.
    let without_input = server
        .client
        .get(format!("{url}?showInput=false"))
        .send()
        .await?;
    assert_ne!(without_input.headers()["etag"].to_str()?, etag);

    // A change shows after the window: a new body and a new ETag.
    let status = CustomStatus::from_value(&json!({"done": 1, "total": 3}))?;
    direct.set_custom_status("polled", Some(&status)).await?;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let changed = server
        .client
        .get(&url)
        .header("if-none-match", &etag)
        .send()
        .await?;
    assert_eq!(changed.status(), StatusCode::ACCEPTED);
    assert_ne!(changed.headers()["etag"].to_str()?, etag);
    assert_eq!(
        json_of(changed).await["customStatus"],
        json!({"done": 1, "total": 3})
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_window_still_shares_the_reads_under_way() -> Result<()> {
    let (server, direct) = server(|api| api.read_window(Duration::ZERO)).await;
    direct.create(NewInstance::new("p", "Orch")).await?;
    server.proxy.take_requests();
    for _ in 0..3 {
        let answer = server
            .client
            .get(format!("{}/instances/p", server.base))
            .send()
            .await?;
        assert_eq!(answer.status(), StatusCode::ACCEPTED);
    }
    assert_eq!(
        server.proxy.take_requests(),
        3,
        "one read per poll, one after another"
    );
    Ok(())
}

/// One parsed server-sent event.
#[derive(Debug, Default, Clone)]
struct Event {
    id: Option<String>,
    event: String,
    data: String,
}

/// Reads events (and heartbeat comments, as `event: "heartbeat"`) off an
/// SSE response.
struct Events {
    response: reqwest::Response,
    buffer: String,
}

impl Events {
    async fn open(server: &Server, id: &str, last_event_id: Option<&str>) -> reqwest::Response {
        let mut request = server
            .client
            .get(format!("{}/instances/{id}/events", server.base));
        if let Some(last) = last_event_id {
            request = request.header("last-event-id", last);
        }
        request.send().await.unwrap()
    }

    fn new(response: reqwest::Response) -> Self {
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()["content-type"].to_str().unwrap(),
            "text/event-stream; charset=utf-8"
        );
        Events {
            response,
            buffer: String::new(),
        }
    }

    /// The next event, `None` when the stream ended; fails after `limit`.
    async fn next(&mut self, limit: Duration) -> Option<Event> {
        tokio::time::timeout(limit, async {
            loop {
                if let Some(end) = self.buffer.find("\n\n") {
                    let block: String = self.buffer.drain(..end + 2).collect();
                    let mut event = Event::default();
                    for line in block.lines() {
                        if line.starts_with(':') {
                            event.event = "heartbeat".into();
                        } else if let Some(id) = line.strip_prefix("id: ") {
                            event.id = Some(id.to_owned());
                        } else if let Some(name) = line.strip_prefix("event: ") {
                            event.event = name.to_owned();
                        } else if let Some(data) = line.strip_prefix("data: ") {
                            event.data.push_str(data);
                        }
                    }
                    return Some(event);
                }
                match self.response.chunk().await.unwrap() {
                    Some(chunk) => self.buffer.push_str(std::str::from_utf8(&chunk).unwrap()),
                    None => return None,
                }
            }
        })
        .await
        .expect("an event in time")
    }

    /// The next event that is not a heartbeat.
    async fn next_event(&mut self) -> Option<Event> {
        loop {
            let event = self.next(Duration::from_secs(20)).await?;
            if event.event != "heartbeat" {
                return Some(event);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_streams_send_each_change_then_the_end() -> Result<()> {
    let (server, direct) = server(|api| {
        api.push_poll_interval(Duration::from_millis(50))
            .push_heartbeat(Duration::from_millis(200))
    })
    .await;
    direct.create(NewInstance::new("live", "Orch")).await?;
    let mut events = Events::new(Events::open(&server, "live", None).await);
    let first = events.next_event().await.unwrap();
    assert_eq!(first.event, "status");
    let data: Value = serde_json::from_str(&first.data)?;
    assert_eq!(
        (data["instanceId"].as_str(), data["runtimeStatus"].as_str()),
        (Some("live"), Some("Pending"))
    );
    let first_id = first.id.clone().unwrap();

    // Heartbeats while nothing changes.
    let beat = events.next(Duration::from_secs(5)).await.unwrap();
    assert_eq!(beat.event, "heartbeat");

    // Each change, in order.
    direct.start("live").await?;
    let running = events.next_event().await.unwrap();
    assert!(running.data.contains("\"Running\""), "{running:?}");
    let progress = CustomStatus::from_value(&json!({"nextActions": ["A", "B"]}))?;
    direct.set_custom_status("live", Some(&progress)).await?;
    let custom = events.next_event().await.unwrap();
    let data: Value = serde_json::from_str(&custom.data)?;
    assert_eq!(data["customStatus"], json!({"nextActions": ["A", "B"]}));
    assert_ne!(custom.id, running.id);

    // Resuming at the last event sends nothing until a change.
    let mut resumed = Events::new(Events::open(&server, "live", custom.id.as_deref()).await);
    let quiet = resumed.next(Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        quiet.event, "heartbeat",
        "no repeat of an unchanged status: {quiet:?}"
    );
    // Resuming at an older one sends the current status at once.
    let mut behind = Events::new(Events::open(&server, "live", Some(&first_id)).await);
    let caught_up = behind.next_event().await.unwrap();
    assert_eq!(caught_up.id, custom.id);

    // Three viewers, one poll loop.
    assert_eq!(server.api.watched_instances(), 1);

    // The terminal status ends every stream.
    direct
        .complete("live", Some(JsonText::from_value(&"shipped")?))
        .await?;
    for stream in [&mut events, &mut resumed, &mut behind] {
        let end = stream.next_event().await.unwrap();
        assert_eq!(end.event, "end", "{end:?}");
        assert!(end.data.contains("\"Completed\"") && end.data.contains("shipped"));
        assert!(stream.next_event().await.is_none(), "the stream closes");
    }

    // A missing instance: 404 before any event.
    let missing = Events::open(&server, "nobody", None).await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert!(json_of(missing).await["Message"]
        .as_str()
        .unwrap()
        .contains("nobody"));
    Ok(())
}

/// Stopping the server ends its push streams at once: a viewer left open
/// (a browser tab on the page) does not hold the stop for the whole
/// shutdown grace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_server_ends_its_push_streams() -> Result<()> {
    let store = common::emulator_store().await;
    store.create(NewInstance::new("watched", "Orch")).await?;
    let api = HttpApi::new(store.clone(), Vec::new())
        .push_poll_interval(Duration::from_millis(50))
        .push_heartbeat(Duration::from_millis(200))
        .shutdown_grace(Duration::from_secs(600));
    // Served twice with the same API: a stop ends the streams open then,
    // not those of a server started after it.
    for round in 0..2 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(durable_status::http::serve(listener, api.clone(), async {
            let _ = stopped.await;
        }));
        let url = format!("http://{addr}{BASE_PATH}/instances/watched/events");
        let mut events = Events::new(reqwest::get(url).await?);
        assert_eq!(events.next_event().await.unwrap().event, "status");
        let beat = events.next(Duration::from_secs(5)).await;
        assert_eq!(beat.unwrap().event, "heartbeat", "round {round}");

        stop.send(()).unwrap();
        // Heartbeats, then the end of the stream, and of the server.
        let ended = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(event) = events.next(Duration::from_secs(5)).await {
                assert_eq!(event.event, "heartbeat", "{event:?}");
            }
        })
        .await;
        assert!(
            ended.is_ok(),
            "round {round}: the push stream went on after the stop"
        );
        let served = tokio::time::timeout(Duration::from_secs(30), served).await;
        assert!(
            served.is_ok(),
            "round {round}: the server waited for its viewer"
        );
        served???;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_share_one_poll_loop_that_stops_with_the_last() -> Result<()> {
    let interval = Duration::from_millis(100);
    let (server, direct) = server(|api| {
        api.push_poll_interval(interval)
            .max_watched_instances(2)
            .max_push_viewers(5)
    })
    .await;
    for id in ["a", "b", "c"] {
        direct.create(NewInstance::new(id, "Orch")).await?;
    }
    let mut viewers = Vec::new();
    for _ in 0..4 {
        let mut events = Events::new(Events::open(&server, "a", None).await);
        events.next_event().await.unwrap();
        viewers.push(events);
    }
    // Four viewers of one instance: about one read per interval.
    server.proxy.take_requests();
    tokio::time::sleep(interval * 10).await;
    let reads = server.proxy.take_requests();
    // (Four loops would read about 40 times.)
    assert!((2..=15).contains(&reads), "{reads} reads in 10 intervals");

    // Limits: a fifth viewer is fine, a sixth is refused; so is a third
    // instance past two.
    let mut b = Events::new(Events::open(&server, "b", None).await);
    b.next_event().await.unwrap();
    let refused = Events::open(&server, "a", None).await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(json_of(refused).await["Message"]
        .as_str()
        .unwrap()
        .contains("5 viewers"));
    drop(b);
    tokio::time::sleep(interval * 3).await;
    assert_eq!(
        server.api.watched_instances(),
        1,
        "b's loop stopped with its viewer"
    );
    let mut c = Events::new(Events::open(&server, "c", None).await);
    c.next_event().await.unwrap();
    viewers.pop(); // room for a viewer, not for a third instance
    let third = Events::open(&server, "b", None).await;
    assert_eq!(third.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(json_of(third).await["Message"]
        .as_str()
        .unwrap()
        .contains("2 instances"));

    // The last viewer gone, no more reads.
    drop(viewers);
    drop(c);
    tokio::time::sleep(interval * 3).await;
    assert_eq!(server.api.watched_instances(), 0);
    server.proxy.take_requests();
    tokio::time::sleep(interval * 5).await;
    assert_eq!(server.proxy.take_requests(), 0, "no viewer, no poll");
    Ok(())
}

#[tokio::test]
async fn counts_per_status_for_a_filter() -> Result<()> {
    let (server, direct) = server(|api| api).await;
    for (id, complete) in [("o-1", true), ("o-2", false), ("o-3", true), ("x-1", true)] {
        direct.create(NewInstance::new(id, "Orch")).await?;
        if complete {
            direct.complete(id, None).await?;
        }
    }
    let counts = json_of(
        server
            .client
            .get(format!(
                "{}/instancecounts?instanceIdPrefix=o-",
                server.base
            ))
            .send()
            .await?,
    )
    .await;
    assert_eq!(
        counts,
        json!({"counts": {"Pending": 1, "Completed": 2}, "total": 3})
    );
    let filtered = json_of(
        server
            .client
            .get(format!(
                "{}/instancecounts?runtimeStatus=Completed",
                server.base
            ))
            .send()
            .await?,
    )
    .await;
    assert_eq!(filtered["total"], 3);
    let bad = server
        .client
        .get(format!(
            "{}/instancecounts?runtimeStatus=Sleeping",
            server.base
        ))
        .send()
        .await?;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    // An instance named like the route is still an instance.
    direct
        .create(NewInstance::new("instancecounts", "Orch"))
        .await?;
    let instance = server
        .client
        .get(format!("{}/instances/instancecounts", server.base))
        .send()
        .await?;
    assert_eq!(json_of(instance).await["instanceId"], "instancecounts");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_stay_bounded_whatever_the_outputs() -> Result<()> {
    let (server, direct) = server(|api| api).await;
    // 120 instances with 60,000-byte outputs: 7.2 MB of outputs.
    let output = JsonText::from_value(&"o".repeat(60_000 - 2))?;
    let ids: Vec<String> = (0..120).map(|i| format!("big-{i:03}")).collect();
    futures::future::try_join_all(ids.iter().map(|id| {
        let (direct, output) = (direct.clone(), output.clone());
        async move {
            direct.create(NewInstance::new(id.clone(), "Orch")).await?;
            direct.complete(id, Some(output)).await
        }
    }))
    .await?;
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    let mut answers = 0;
    loop {
        let mut request = server
            .client
            .get(format!("{}/instances?top=1000", server.base));
        if let Some(token) = &token {
            request = request.header(CONTINUATION_HEADER, token);
        }
        let response = request.send().await?;
        token = response
            .headers()
            .get(CONTINUATION_HEADER)
            .map(|v| v.to_str().unwrap().to_owned());
        let body = response.bytes().await?;
        assert!(
            body.len() <= LISTING_BYTES + 100 * 70_000,
            "an answer of {} bytes",
            body.len()
        );
        let page: Vec<Value> = serde_json::from_slice(&body)?;
        seen.extend(
            page.iter()
                .map(|i| i["instanceId"].as_str().unwrap().to_owned()),
        );
        answers += 1;
        if token.is_none() {
            break;
        }
    }
    assert!(answers >= 2, "the 7 MB listing came in {answers} answers");
    assert_eq!(seen, ids, "the tokens resume exactly");
    Ok(())
}
