//! Purging instances safely, against a real table service.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use durable_status::{
    Error, InstanceQuery, InstanceStore, NewInstance, PurgeFilter, RuntimeStatus, StoreOptions,
};
use futures::{StreamExt, TryStreamExt};
use serde_json::json;
use time::macros::datetime;
use time::OffsetDateTime;

fn an_hour_ago() -> OffsetDateTime {
    OffsetDateTime::now_utc() - time::Duration::hours(1)
}

async fn remaining(store: &InstanceStore) -> Result<Vec<String>> {
    let mut ids: Vec<String> = store
        .query(
            &InstanceQuery::new()
                .include_input(false)
                .include_output(false),
        )
        .map_ok(|i| i.instance_id)
        .try_collect()
        .await?;
    ids.sort();
    Ok(ids)
}

/// Creates instances and moves each to its status.
async fn instances(store: &InstanceStore, plan: &[(&str, RuntimeStatus)]) -> Result<()> {
    for (id, status) in plan {
        store.create(NewInstance::new(*id, "Orch")).await?;
        match status {
            RuntimeStatus::Pending => {}
            RuntimeStatus::Running => drop(store.start(id).await?),
            RuntimeStatus::Suspended => drop(store.suspend(id).await?),
            RuntimeStatus::ContinuedAsNew => drop(store.continue_as_new(id, None).await?),
            RuntimeStatus::Completed => drop(store.complete(id, None).await?),
            RuntimeStatus::Failed => drop(store.fail(id, "boom").await?),
            RuntimeStatus::Terminated => drop(store.terminate(id, "stop").await?),
            other => panic!("not planned: {other}"),
        }
    }
    Ok(())
}

async fn completed_instances(store: &InstanceStore, n: usize) -> Result<()> {
    futures::stream::iter(0..n)
        .map(|i| async move {
            let id = format!("done-{i:04}");
            store.create(NewInstance::new(id.clone(), "Orch")).await?;
            store.complete(&id, None).await
        })
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

#[tokio::test]
async fn purging_one_instance_is_clear_either_way() -> Result<()> {
    let store = common::store().await;
    store.create(NewInstance::new("one", "Orch")).await?;
    assert!(store.purge_instance("one").await?, "deleted");
    assert!(
        !store.purge_instance("one").await?,
        "not found is not an error"
    );
    assert!(store.get("one").await?.is_none());
    Ok(())
}

#[tokio::test]
async fn by_default_only_terminal_instances_in_the_range_go() -> Result<()> {
    let store = common::store().await;
    instances(
        &store,
        &[
            ("c", RuntimeStatus::Completed),
            ("f", RuntimeStatus::Failed),
            ("t", RuntimeStatus::Terminated),
            ("r", RuntimeStatus::Running),
            ("p", RuntimeStatus::Pending),
            ("s", RuntimeStatus::Suspended),
            ("n", RuntimeStatus::ContinuedAsNew),
        ],
    )
    .await?;
    let old = json!({"PartitionKey": "old", "RowKey": "", "RuntimeStatus": "Completed",
        "CreatedTime": "2020-01-01T00:00:00Z", "CreatedTime@odata.type": "Edm.DateTime"});
    common::write_raw_row(&store, old).await;
    let canceled = json!({"PartitionKey": "x", "RowKey": "", "RuntimeStatus": "Canceled",
        "CreatedTime": "2099-01-01T00:00:00Z", "CreatedTime@odata.type": "Edm.DateTime"});
    common::write_raw_row(&store, canceled).await;

    let done = store
        .purge(&PurgeFilter::created_from(an_hour_ago()))
        .await?;
    assert_eq!((done.deleted, done.skipped), (3, 0));
    assert_eq!(
        remaining(&store).await?,
        ["n", "old", "p", "r", "s", "x"],
        "the range ends now by default"
    );

    let canceled_too = PurgeFilter::created_from(datetime!(2000-01-01 0:00 UTC))
        .created_to(datetime!(2100-01-01 0:00 UTC));
    assert_eq!(
        store.purge(&canceled_too).await?.deleted,
        2,
        "old and the canceled one"
    );
    Ok(())
}

#[tokio::test]
async fn non_terminal_instances_need_the_flag() -> Result<()> {
    let store = common::emulator_store().await;
    instances(
        &store,
        &[
            ("r", RuntimeStatus::Running),
            ("c", RuntimeStatus::Completed),
        ],
    )
    .await?;
    let (proxied, proxy) = common::through_proxy(&store, StoreOptions::default()).await;

    let running = PurgeFilter::created_from(an_hour_ago()).statuses([RuntimeStatus::Running]);
    let err = proxied.purge(&running).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Invalid {
                field: "runtime status",
                ..
            }
        ),
        "bad input is Invalid, not an interrupted purge: {err}"
    );

    let empty = PurgeFilter::created_from(an_hour_ago())
        .statuses([])
        .allow_non_terminal(true);
    let err = proxied.purge(&empty).await.unwrap_err();
    assert!(err.to_string().contains("empty status set"), "{err}");
    assert_eq!(proxy.take_requests(), 0, "refused before any request");
    assert_eq!(remaining(&store).await?, ["c", "r"]);

    let done = proxied.purge(&running.allow_non_terminal(true)).await?;
    assert_eq!(done.deleted, 1);
    assert_eq!(remaining(&store).await?, ["c"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_changed_after_it_was_read_is_skipped() -> Result<()> {
    let store = common::store().await;
    instances(
        &store,
        &[
            ("a", RuntimeStatus::Completed),
            ("b", RuntimeStatus::Completed),
            ("y", RuntimeStatus::Completed),
            ("z", RuntimeStatus::Failed),
        ],
    )
    .await?;
    let writer = store.clone();
    let mut changed = false;
    // After the first delete, while the page read before is being worked
    // through: "y" is rewritten as a new run, and "z" gets a custom status.
    let filter = PurgeFilter::created_from(an_hour_ago()).concurrency(1);
    let done = store
        .purge_with_progress(&filter, |_| {
            if !changed {
                changed = true;
                tokio::task::block_in_place(|| {
                    tokio::runtime::Handle::current().block_on(async {
                        let rerun = NewInstance::new("y", "Orch")
                            .status(RuntimeStatus::Running)
                            .overwrite_terminal(true);
                        writer.create(rerun).await.unwrap();
                        let status = durable_status::CustomStatus::from_value(&"late").unwrap();
                        writer.set_custom_status("z", Some(&status)).await.unwrap();
                    })
                });
            }
        })
        .await?;
    assert_eq!((done.deleted, done.skipped, done.scanned), (2, 2, 4));
    assert_eq!(remaining(&store).await?, ["y", "z"]);
    assert_eq!(
        store.get("y").await?.unwrap().runtime_status,
        RuntimeStatus::Running
    );
    Ok(())
}

#[tokio::test]
async fn an_outage_midway_reports_how_far_it_came_and_a_rerun_finishes() -> Result<()> {
    let store = common::emulator_store().await;
    completed_instances(&store, 300).await?;
    // No retries: the outage surfaces at once.
    let no_retry = StoreOptions::default().retry_budget(Duration::ZERO);
    let (proxied, proxy) = common::through_proxy(&store, no_retry).await;
    proxy.fail_after(1 + 120); // the first page, then 120 deletes

    let filter = PurgeFilter::created_from(an_hour_ago()).concurrency(8);
    let err = proxied.purge(&filter).await.unwrap_err();
    let Error::PurgeInterrupted { progress, source } = &err else {
        panic!("expected an interrupted purge: {err}");
    };
    let deleted = progress.deleted;
    assert!(
        (100..=120).contains(&deleted),
        "deleted {deleted} before the outage"
    );
    assert!(
        err.to_string()
            .starts_with(&format!("purge stopped after deleting {deleted} instances")),
        "{err}"
    );
    assert!(source.is_transient(), "{source}");
    let left = remaining(&store).await?.len() as u64;
    assert_eq!(left, 300 - deleted, "the count reported is what is gone");

    let rest = store.purge(&filter).await?;
    assert_eq!(rest.deleted, left);
    assert!(remaining(&store).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn progress_is_reported_as_it_goes() -> Result<()> {
    let store = common::store().await;
    completed_instances(&store, 120).await?;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    let done = store
        .purge_with_progress(&PurgeFilter::created_from(an_hour_ago()), move |p| {
            record.lock().unwrap().push(p)
        })
        .await?;
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 120, "one report per delete");
    assert!(seen
        .windows(2)
        .all(|w| w[0].deleted <= w[1].deleted && w[0].scanned <= w[1].scanned));
    assert_eq!(*seen.last().unwrap(), done);
    assert_eq!(done.deleted, 120);
    Ok(())
}

#[tokio::test]
async fn deletes_run_concurrently_within_the_bound() -> Result<()> {
    for (concurrency, most_connections) in [(1, 2), (4, 5)] {
        let store = common::emulator_store().await;
        completed_instances(&store, 200).await?;
        let (proxied, proxy) = common::through_proxy(&store, StoreOptions::default()).await;
        let connections_before = proxy.connections();
        let filter = PurgeFilter::created_from(an_hour_ago()).concurrency(concurrency);
        assert_eq!(proxied.purge(&filter).await?.deleted, 200);
        let used = proxy.connections() - connections_before;
        assert!(
            used <= most_connections,
            "concurrency {concurrency} used {used} connections"
        );
        if concurrency > 1 {
            assert!(
                used >= 2,
                "concurrency {concurrency} ran deletes one at a time"
            );
        }
    }
    Ok(())
}

#[tokio::test]
async fn purging_one_terminal_instance_refuses_a_running_one() -> Result<()> {
    let store = common::store().await;
    instances(
        &store,
        &[
            ("done", RuntimeStatus::Completed),
            ("busy", RuntimeStatus::Running),
        ],
    )
    .await?;
    assert!(store.purge_terminal_instance("done").await?);
    assert!(
        !store.purge_terminal_instance("done").await?,
        "nothing left to delete"
    );
    let err = store.purge_terminal_instance("busy").await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::NotTerminal {
                status: RuntimeStatus::Running,
                ..
            }
        ),
        "{err}"
    );
    assert!(store.get("busy").await?.is_some());
    Ok(())
}

#[tokio::test]
async fn purging_deletes_the_instances_history_rows_too() -> Result<()> {
    let store = common::store().await;
    instances(
        &store,
        &[
            ("done/a", RuntimeStatus::Completed),
            ("it's-b", RuntimeStatus::Failed),
            ("busy", RuntimeStatus::Running),
            ("one", RuntimeStatus::Completed),
        ],
    )
    .await?;
    // Partition keys are the escaped ids, as the provider writes them.
    let history = common::provider_history(
        &store,
        &[("done^0a", 250), ("it's-b", 3), ("busy", 5), ("one", 2)],
    )
    .await;

    assert!(store.purge_terminal_instance("one").await?);
    assert_eq!(
        common::history_rows(&history, "one").await,
        0,
        "a single purge deletes the history too"
    );

    let done = store
        .purge(&PurgeFilter::created_from(an_hour_ago()))
        .await?;
    assert_eq!((done.deleted, done.history_rows_deleted), (2, 253));
    assert_eq!(common::history_rows(&history, "done^0a").await, 0);
    assert_eq!(common::history_rows(&history, "it's-b").await, 0);
    assert_eq!(
        common::history_rows(&history, "busy").await,
        5,
        "a running instance keeps its history"
    );

    // Without a History table nothing is asked of it beyond one look.
    let plain = common::store().await;
    instances(&plain, &[("x", RuntimeStatus::Completed)]).await?;
    let done = plain
        .purge(&PurgeFilter::created_from(an_hour_ago()))
        .await?;
    assert_eq!((done.deleted, done.history_rows_deleted), (1, 0));
    Ok(())
}

#[tokio::test]
async fn a_rerun_deletes_the_history_of_a_row_already_gone() -> Result<()> {
    let store = common::store().await;
    instances(&store, &[("half", RuntimeStatus::Completed)]).await?;
    let history = common::provider_history(&store, &[("half", 4)]).await;
    // An earlier purge deleted the row and stopped before the History.
    assert!(store.delete("half").await?);
    assert_eq!(common::history_rows(&history, "half").await, 4);
    assert!(!store.purge_instance("half").await?, "no row to delete");
    assert_eq!(
        common::history_rows(&history, "half").await,
        0,
        "but its History is gone now"
    );
    Ok(())
}

#[tokio::test]
async fn history_can_be_kept() -> Result<()> {
    let store = common::store().await;
    instances(&store, &[("kept", RuntimeStatus::Completed)]).await?;
    let history = common::provider_history(&store, &[("kept", 3)]).await;
    let done = store
        .purge(&PurgeFilter::created_from(an_hour_ago()).include_history(false))
        .await?;
    assert_eq!((done.deleted, done.history_rows_deleted), (1, 0));
    assert_eq!(common::history_rows(&history, "kept").await, 3);
    Ok(())
}

#[tokio::test]
async fn a_hub_without_history_costs_one_look_per_purge() -> Result<()> {
    let store = common::emulator_store().await;
    completed_instances(&store, 10).await?;
    let (proxied, proxy) = common::through_proxy(&store, StoreOptions::default()).await;
    let done = proxied
        .purge(&PurgeFilter::created_from(an_hour_ago()))
        .await?;
    assert_eq!(done.deleted, 10);
    let lines = proxy.take_lines();
    let history_requests = lines.iter().filter(|l| l.contains("History")).count();
    assert_eq!(history_requests, 1, "{lines:?}");
    assert_eq!(
        lines.len(),
        1 + 1 + 10,
        "the look, one page, ten deletes: {lines:?}"
    );
    Ok(())
}
