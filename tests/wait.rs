//! Waiting for an instance, against a real table service.
//!
//! No test here orders events by sleeping. Where something must happen while
//! a wait is under way, the waiter alone goes through a counting proxy, and
//! the test makes the change only once the proxy has seen the waiter poll
//! (see [`polls_sent`]); deadlines are failure guards only.

mod common;

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::Result;
use common::proxy::Proxy;
use durable_status::{
    CustomStatus, Error, InstanceStore, JsonText, NewInstance, RuntimeStatus, StoreOptions,
};
use serde_json::json;

const POLL: Duration = Duration::from_millis(50);
/// The waits' timeout where none is meant to happen: a failure guard.
const LONG: Duration = Duration::from_secs(60);
/// How long [`polls_sent`] waits for the polls it expects: a failure guard,
/// shorter than [`LONG`] so that a waiter that stops polling is reported as
/// such rather than as a timeout of the wait.
const GUARD: Duration = Duration::from_secs(30);

/// A store of a new task hub on the bundled emulator, the same task hub
/// reached through a proxy, and the proxy. The waiter is to use the second
/// store, the test's own writes the first: every request the proxy counts is
/// then the waiter's.
async fn store_and_waiter() -> (InstanceStore, InstanceStore, Proxy) {
    let store = common::emulator_store().await;
    let (waiter, proxy) = common::through_proxy(&store, StoreOptions::default()).await;
    (store, waiter, proxy)
}

/// Waits until the waiter behind `proxy` has sent `n` polls since this call
/// began (counted with `take_requests`, so `take_lines` stays whole).
///
/// The proxy counts a request before it passes it on, so each of these polls
/// reached the service after everything the test did before this call. And a
/// waiter sends a poll only once the one before is answered and judged, so
/// the first `n - 1` of them were answered, and the waiter went on waiting
/// after each.
async fn polls_sent(proxy: &Proxy, n: usize) {
    proxy.take_requests();
    let deadline = Instant::now() + GUARD;
    let mut sent = 0;
    loop {
        sent += proxy.take_requests();
        if sent >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the waiter sent {sent} of the {n} polls expected within {GUARD:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Runs `wait` with `events` beside it, in this task, and returns what `wait`
/// returned. A panic in `events` fails the test at once, as itself. If `wait`
/// ends first, `events` is dropped: a wait that ends too early is caught by
/// the caller's assertions on what it returned.
async fn wait_while<T>(wait: impl Future<Output = T>, events: impl Future<Output = ()>) -> T {
    tokio::pin!(wait, events);
    let mut events_done = false;
    loop {
        tokio::select! {
            out = &mut wait => return out,
            () = &mut events, if !events_done => events_done = true,
        }
    }
}

#[tokio::test]
async fn waits_until_the_instance_is_terminal() -> Result<()> {
    let (store, waiter, proxy) = store_and_waiter().await;
    store
        .create(NewInstance::new("w", "Orch").status(RuntimeStatus::Running))
        .await?;
    let status = wait_while(waiter.wait_for_completion("w", LONG, POLL), async {
        // The waiter saw it running and went on waiting.
        polls_sent(&proxy, 2).await;
        store
            .complete("w", Some(JsonText::from_value(&"result").unwrap()))
            .await
            .unwrap();
    })
    .await?;
    assert_eq!(status.runtime_status, RuntimeStatus::Completed);
    assert_eq!(
        status.output.as_deref(),
        Some("\"result\""),
        "the final read is whole"
    );
    Ok(())
}

#[tokio::test]
async fn waiting_times_out() -> Result<()> {
    let store = common::store().await;
    store.create(NewInstance::new("slow", "Orch")).await?;
    let started = Instant::now();
    let err = store
        .wait_for_completion("slow", Duration::from_millis(300), POLL)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Timeout(d) if d == Duration::from_millis(300)),
        "{err}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "not before the timeout: {:?}",
        started.elapsed()
    );
    let started = Instant::now();
    let err = store
        .wait_for_custom_status_change("slow", None, Duration::from_millis(200), POLL)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout(_)), "{err}");
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "not before the timeout: {:?}",
        started.elapsed()
    );
    Ok(())
}

#[tokio::test]
async fn waiting_for_a_missing_instance_is_not_found() -> Result<()> {
    let store = common::store().await;
    assert!(matches!(
        store.wait_for_completion("none", LONG, POLL).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        store
            .wait_for_custom_status_change("none", None, LONG, POLL)
            .await,
        Err(Error::NotFound { .. })
    ));
    Ok(())
}

#[tokio::test]
async fn waits_until_the_custom_status_changes() -> Result<()> {
    let (store, waiter, proxy) = store_and_waiter().await;
    store
        .create(NewInstance::new("c", "Orch").status(RuntimeStatus::Running))
        .await?;
    let first = CustomStatus::from_value(&json!({"progress": 0.25}))?;
    store.set_custom_status("c", Some(&first)).await?;

    // Seen something else already: returns at once with what is there.
    let now = store
        .wait_for_custom_status_change("c", None, LONG, POLL)
        .await?;
    assert_eq!(now.custom_status.as_ref(), Some(&first));

    let next = wait_while(
        waiter.wait_for_custom_status_change("c", Some(&first), LONG, POLL),
        async {
            // The waiter saw the first value and went on waiting.
            polls_sent(&proxy, 2).await;
            // The same value again is no change: the waiter reads it, and
            // goes on waiting.
            store
                .set_custom_status(
                    "c",
                    Some(&CustomStatus::from_value(&json!({"progress": 0.25})).unwrap()),
                )
                .await
                .unwrap();
            polls_sent(&proxy, 2).await;
            // A new one is.
            store
                .set_custom_status(
                    "c",
                    Some(&CustomStatus::from_value(&json!({"progress": 0.5})).unwrap()),
                )
                .await
                .unwrap();
        },
    )
    .await?;
    assert_eq!(
        next.custom_status.unwrap().to_value(),
        json!({"progress": 0.5})
    );
    assert_eq!(next.runtime_status, RuntimeStatus::Running);
    Ok(())
}

#[tokio::test]
async fn a_terminal_instance_ends_the_wait_for_a_change() -> Result<()> {
    let (store, waiter, proxy) = store_and_waiter().await;
    store.create(NewInstance::new("t", "Orch")).await?;
    let update = wait_while(
        waiter.wait_for_custom_status_change("t", None, LONG, POLL),
        async {
            // The waiter saw no change and went on waiting.
            polls_sent(&proxy, 2).await;
            store.terminate("t", "stop").await.unwrap();
        },
    )
    .await?;
    assert_eq!(
        (update.custom_status, update.runtime_status),
        (None, RuntimeStatus::Terminated)
    );
    Ok(())
}

#[tokio::test]
async fn polls_read_only_the_columns_they_need() -> Result<()> {
    let (store, waiter, proxy) = store_and_waiter().await;
    store
        .create(NewInstance::new("q", "Orch").status(RuntimeStatus::Running))
        .await?;
    proxy.take_lines();
    wait_while(waiter.wait_for_completion("q", LONG, POLL), async {
        // Two polls, the first answered "running": neither is the final read.
        polls_sent(&proxy, 2).await;
        store.complete("q", None).await.unwrap();
    })
    .await?;
    let lines: Vec<String> = proxy
        .take_lines()
        .into_iter()
        .filter(|l| l.starts_with("GET"))
        .collect();
    let (last, polls) = lines.split_last().unwrap();
    assert!(polls.len() >= 2, "{lines:?}");
    assert!(
        polls
            .iter()
            .all(|l| l.contains("?$select=PartitionKey,RuntimeStatus ")),
        "{lines:?}"
    );
    assert!(
        last.contains("Input,InputBlobName,Output"),
        "the final read has the payloads: {last}"
    );

    store
        .set_custom_status("q", Some(&CustomStatus::from_value(&1)?))
        .await?;
    proxy.take_lines();
    waiter
        .wait_for_custom_status_change("q", None, LONG, POLL)
        .await?;
    let lines = proxy.take_lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("?$select=PartitionKey,CustomStatus,RuntimeStatus "),
        "{lines:?}"
    );
    Ok(())
}

/// A watch yields the status as it is, then each change of custom status,
/// runtime status or output (not the polls that saw nothing new), and ends
/// after the terminal status.
#[tokio::test]
async fn a_watch_yields_each_change_then_ends() -> Result<()> {
    use futures::StreamExt;
    let (store, watcher, proxy) = store_and_waiter().await;
    store.create(NewInstance::new("watched", "Orch")).await?;
    // Read on a task of its own, so that it polls while the test writes.
    let (tx, mut changes) = tokio::sync::mpsc::unbounded_channel();
    let mut stream = watcher.watch("watched", POLL);
    tokio::spawn(async move {
        while let Some(item) = stream.next().await {
            let _ = tx.send(item);
        }
    });
    let first = changes.recv().await.unwrap()?;
    assert_eq!(first.runtime_status, RuntimeStatus::Pending);
    assert_eq!(first.input, None, "a watch leaves the input out");

    // Polls that see nothing new yield nothing.
    let quiet = tokio::time::timeout(Duration::from_millis(300), changes.recv()).await;
    assert!(quiet.is_err(), "no change, no item: {quiet:?}");

    store.start("watched").await?;
    let started = changes.recv().await.unwrap()?;
    assert_eq!(started.runtime_status, RuntimeStatus::Running);
    for step in 1..=2 {
        polls_sent(&proxy, 1).await;
        let status = CustomStatus::from_value(&json!({"done": step, "total": 2}))?;
        store.set_custom_status("watched", Some(&status)).await?;
        let seen = changes.recv().await.unwrap()?;
        assert_eq!(seen.custom_status, Some(status));
    }
    store
        .complete("watched", Some(JsonText::from_value(&"all done")?))
        .await?;
    let last = changes.recv().await.unwrap()?;
    assert_eq!(last.runtime_status, RuntimeStatus::Completed);
    assert_eq!(last.output.as_deref(), Some("\"all done\""));
    assert!(
        changes.recv().await.is_none(),
        "the stream ends after the terminal status"
    );

    let mut missing = watcher.watch("nobody", POLL);
    assert!(matches!(
        missing.next().await,
        Some(Err(Error::NotFound { .. }))
    ));
    assert!(missing.next().await.is_none());
    Ok(())
}
