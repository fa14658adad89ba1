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

/// Creates instances and moves each to its status. Each is run `e1`, the
/// ExecutionId that `common::provider_history` writes in History rows: the
/// rows the provider wrote for that run. (A purge deletes a History row
/// when it carries the ExecutionId of the row it read, or when it was
/// written before that row; a row of another run written since is a new
/// run's, and stays.)
async fn instances(store: &InstanceStore, plan: &[(&str, RuntimeStatus)]) -> Result<()> {
    for (id, status) in plan {
        store
            .create(NewInstance::new(*id, "Orch").execution_id("e1"))
            .await?;
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

// ---------------------------------------------------------------------------
// A purge finishes what it started: cut at any request, a re-run leaves
// nothing of the purged instances, and never touches a new run of an id.
// ---------------------------------------------------------------------------

type History = azure_data_tables::prelude::TableClient;

/// Rows of a History partition as another tool reads them: RowKey and
/// ExecutionId, in key order.
async fn history_of(history: &History, partition: &str) -> Vec<(String, String)> {
    let filter = format!("PartitionKey eq '{}'", partition.replace('\'', "''"));
    let mut pages = history
        .query()
        .filter(filter)
        .into_stream::<serde_json::Value>();
    let mut rows = Vec::new();
    while let Some(page) = pages.next().await {
        for row in page.expect("the history reads").entities {
            rows.push((
                row["RowKey"].as_str().unwrap_or_default().to_owned(),
                row["ExecutionId"].as_str().unwrap_or_default().to_owned(),
            ));
        }
    }
    rows.sort();
    rows
}

/// Writes History rows `from..to` of a run, replacing rows of the same key
/// (as a new run that reuses the id and the RowKeys would).
async fn write_history(
    history: &History,
    partition: &str,
    rows: std::ops::Range<usize>,
    run: &str,
) {
    for i in rows {
        let row = json!({
            "PartitionKey": partition,
            "RowKey": format!("{i:016X}"),
            "EventType": "TaskScheduled",
            "ExecutionId": run,
        });
        let _ = history
            .partition_key_client(partition.replace('\'', "''"))
            .entity_client(format!("{i:016X}"))
            .insert_or_replace(&row)
            .expect("serializes")
            .await
            .expect("the history row is written");
    }
}

fn run_rows(rows: std::ops::Range<usize>, run: &str) -> Vec<(String, String)> {
    rows.map(|i| (format!("{i:016X}"), run.to_owned()))
        .collect()
}

/// Runs a future to its end from inside a progress callback (which is
/// synchronous), on a multi-threaded runtime.
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(future))
}

/// A task hub where a purge has work of every kind, in key order:
///
/// - `a-big`: Completed, 150 History rows (two batches);
/// - `b-rerun`: Completed with 3 History rows; once the purge has read it,
///   a new run with the same id starts (Running) and rewrites its History
///   (rows 0-2 replaced, 3-5 added, ExecutionId `e2`);
/// - `done-NN`: `done` Completed instances, 3 History rows each;
/// - `run-N`: 4 Running instances, 3 History rows each.
struct Scenario {
    store: InstanceStore,
    history: History,
    done: usize,
}

impl Scenario {
    async fn new(done: usize) -> Result<Scenario> {
        let store = common::emulator_store().await;
        let mut plan = vec![
            ("a-big".to_owned(), RuntimeStatus::Completed),
            ("b-rerun".to_owned(), RuntimeStatus::Completed),
        ];
        plan.extend((0..done).map(|i| (format!("done-{i:02}"), RuntimeStatus::Completed)));
        plan.extend((0..4).map(|i| (format!("run-{i}"), RuntimeStatus::Running)));
        let plan_refs: Vec<(&str, RuntimeStatus)> =
            plan.iter().map(|(id, s)| (id.as_str(), *s)).collect();
        futures::stream::iter(plan_refs.chunks(1))
            .map(|one| instances(&store, one))
            .buffer_unordered(16)
            .try_collect::<Vec<_>>()
            .await?;
        let mut rows: Vec<(&str, usize)> = vec![("a-big", 150), ("b-rerun", 3)];
        rows.extend(plan.iter().skip(2).map(|(id, _)| (id.as_str(), 3)));
        let history = common::provider_history(&store, &rows).await;
        Ok(Scenario {
            store,
            history,
            done,
        })
    }

    fn filter(&self, concurrency: usize) -> PurgeFilter {
        PurgeFilter::created_from(an_hour_ago()).concurrency(concurrency)
    }

    /// The new run of `b-rerun`, started after the purge read the old one.
    async fn rerun(&self) {
        let rerun = NewInstance::new("b-rerun", "Orch")
            .execution_id("e2")
            .status(RuntimeStatus::Running)
            .overwrite_terminal(true);
        self.store.create(rerun).await.expect("the new run starts");
        write_history(&self.history, "b-rerun", 0..6, "e2").await;
    }

    /// Purges through a proxy that cuts every connection after `cut`
    /// requests (no retries: the cut surfaces at once). One at a time, the
    /// new run of `b-rerun` starts at the first progress report, after the
    /// scan read the old one and before its purge starts; with more at once
    /// (b-rerun's purge may be under way then) it starts before the purge.
    /// Answers the error.
    async fn cut_purge(&self, cut: usize, concurrency: usize) -> Error {
        let no_retry = StoreOptions::default().retry_budget(Duration::ZERO);
        let (proxied, proxy) = common::through_proxy(&self.store, no_retry).await;
        let mut rerun = concurrency > 1;
        if rerun {
            self.rerun().await;
        }
        proxy.fail_after(cut);
        let result = proxied
            .purge_with_progress(&self.filter(concurrency), |_| {
                if !rerun {
                    rerun = true;
                    block_on(self.rerun());
                }
            })
            .await;
        if !rerun {
            self.rerun().await;
        }
        result.expect_err("the cut stops the purge")
    }

    /// What a finished purge leaves, whatever happened before: no row and
    /// no History row of a purged instance; the Running instances and the
    /// new run of `b-rerun` whole.
    async fn assert_finished(&self, context: &str) -> Result<()> {
        let mut expected = vec!["b-rerun".to_owned()];
        expected.extend((0..4).map(|i| format!("run-{i}")));
        assert_eq!(remaining(&self.store).await?, expected, "{context}");
        let mut purged = vec!["a-big".to_owned()];
        purged.extend((0..self.done).map(|i| format!("done-{i:02}")));
        for id in &purged {
            assert_eq!(
                common::history_rows(&self.history, id).await,
                0,
                "{context}: History of {id} left behind"
            );
        }
        for i in 0..4 {
            let id = format!("run-{i}");
            assert_eq!(
                history_of(&self.history, &id).await,
                run_rows(0..3, "e1"),
                "{context}: the History of running {id}"
            );
        }
        let rerun = self.store.get("b-rerun").await?.expect("the new run");
        assert_eq!(rerun.runtime_status, RuntimeStatus::Running, "{context}");
        assert_eq!(
            history_of(&self.history, "b-rerun").await,
            run_rows(0..6, "e2"),
            "{context}: the new run's History"
        );
        Ok(())
    }
}

fn progress_of(err: &Error) -> durable_status::PurgeProgress {
    match err {
        Error::PurgeInterrupted { progress, source } => {
            assert!(source.is_transient(), "{source}");
            *progress
        }
        other => panic!("expected an interrupted purge: {other}"),
    }
}

/// Requests of a purge run one at a time (concurrency 1) on the scenario:
/// the History look and the first page (2); `a-big`, 150 rows: its
/// History page, a check and a batch twice, its row (6, so 8); `b-rerun`,
/// changed since the scan: its History page, which holds only the new
/// run's rows (ExecutionId `e2`, written after the row was read), so no
/// check and no batch, and its row's delete at the old version, refused
/// (2, so 10; before History rows were told apart by run, the page and a
/// check that found the change); each `done-NN`: page, check, batch, row
/// (4: 14, 18, ...).
const B_RERUN_DONE: usize = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_cut_amid_an_instances_history_is_finished_by_a_rerun() -> Result<()> {
    let scenario = Scenario::new(3).await?;
    // The look, the page, a-big's History page, check, first batch: the second
    // check is cut.
    let err = scenario.cut_purge(5, 1).await;
    let progress = progress_of(&err);
    assert_eq!((progress.deleted, progress.history_rows_deleted), (0, 100));
    assert_eq!(
        common::history_rows(&scenario.history, "a-big").await,
        50,
        "half its History is gone"
    );
    assert!(
        scenario.store.get("a-big").await?.is_some(),
        "its row stays until its History is gone: a re-run finds it"
    );

    let rest = scenario.store.purge(&scenario.filter(1)).await?;
    assert_eq!(
        (rest.deleted, rest.skipped, rest.history_rows_deleted),
        (4, 0, 50 + 3 * 3)
    );
    scenario.assert_finished("cut amid a-big's History").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_cut_between_the_history_and_the_row_is_finished_by_a_rerun() -> Result<()> {
    let scenario = Scenario::new(3).await?;
    // done-01: its History page, check and batch go through; its row delete is cut.
    let err = scenario.cut_purge(B_RERUN_DONE + 4 + 3, 1).await;
    let progress = progress_of(&err);
    assert_eq!(
        (progress.deleted, progress.skipped),
        (2, 1),
        "a-big and done-00 deleted, b-rerun skipped (a new run)"
    );
    assert_eq!(common::history_rows(&scenario.history, "done-01").await, 0);
    assert!(scenario.store.get("done-01").await?.is_some());

    let no_retry = StoreOptions::default().retry_budget(Duration::ZERO);
    let (proxied, proxy) = common::through_proxy(&scenario.store, no_retry).await;
    let rest = proxied.purge(&scenario.filter(1)).await?;
    assert_eq!((rest.deleted, rest.history_rows_deleted), (2, 3));
    assert_eq!(
        proxy.take_requests(),
        2 + 2 + 4,
        "the look and the page; done-01: an empty History page and its row; done-02 whole"
    );
    scenario.assert_finished("cut before done-01's row").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_cut_midway_with_purges_in_flight_is_finished_by_a_rerun() -> Result<()> {
    let scenario = Scenario::new(40).await?;
    // Eight instances at once, each at some step of its own when the
    // connections go: many done, some halfway, the scan not over.
    let err = scenario.cut_purge(90, 8).await;
    let progress = progress_of(&err);
    assert!(
        (10..40).contains(&progress.deleted),
        "cut midway: {progress:?}"
    );
    assert!(progress.scanned < 1 + 40, "the scan not over: {progress:?}");
    let left = remaining(&scenario.store).await?.len() as u64;
    assert_eq!(
        left,
        2 + 40 + 4 - progress.deleted,
        "the count reported is what is gone"
    );

    let rest = scenario.store.purge(&scenario.filter(8)).await?;
    assert_eq!(rest.deleted + progress.deleted, 1 + 40);
    scenario.assert_finished("cut midway").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_cut_at_any_request_is_finished_by_a_rerun() -> Result<()> {
    // Every request of a purge, one at a time, through done-01: the look,
    // the page, each History page, check, batch and row delete, and a skip.
    for cut in 0..B_RERUN_DONE + 2 * 4 {
        let scenario = Scenario::new(2).await?;
        let err = scenario.cut_purge(cut, 1).await;
        progress_of(&err);
        scenario.store.purge(&scenario.filter(1)).await?;
        scenario
            .assert_finished(&format!("cut after {cut} requests"))
            .await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_whose_runtime_dies_is_finished_by_a_rerun() -> Result<()> {
    // The nearest thing to a killed process in one: the runtime that runs
    // the purge is dropped, its tasks wherever they are, requests in flight
    // cut (a response lost, a batch half sent).
    for after in [1, 5, 12] {
        let scenario = Scenario::new(30).await?;
        scenario.rerun().await;
        let (reached_tx, reached_rx) = std::sync::mpsc::channel();
        let store = scenario.store.clone();
        let filter = scenario.filter(8);
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a runtime");
            let purge = runtime.spawn(async move {
                let mut reports = 0;
                let _ = store
                    .purge_with_progress(&filter, move |_| {
                        reports += 1;
                        if reports == after {
                            let _ = reached_tx.send(());
                        }
                    })
                    .await;
            });
            let _ = reached_rx.recv_timeout(Duration::from_secs(60));
            runtime.shutdown_background();
            drop(purge);
        });
        tokio::task::spawn_blocking(move || thread.join().expect("the purge thread ends")).await?;
        let purged_before = 1 + 30 - (remaining(&scenario.store).await?.len() - 5);
        assert!(purged_before < 31, "killed before the end (after {after})");
        scenario.store.purge(&scenario.filter(8)).await?;
        scenario
            .assert_finished(&format!("runtime dropped after {after} instances"))
            .await?;
    }
    Ok(())
}

#[tokio::test]
async fn a_lost_batch_answer_is_sent_again_and_the_history_read_again() -> Result<()> {
    let store = common::emulator_store().await;
    instances(&store, &[("big", RuntimeStatus::Completed)]).await?;
    let history = common::provider_history(&store, &[("big", 150)]).await;
    let (proxied, proxy) = common::through_proxy(&store, StoreOptions::default()).await;
    // The first batch is carried out, its answer lost; its retry meets rows
    // gone (404), and the purge reads the partition again.
    proxy.lose_response_to("POST");
    let done = proxied
        .purge(&PurgeFilter::created_from(an_hour_ago()))
        .await?;
    assert_eq!(done.deleted, 1);
    assert_eq!(
        done.history_rows_deleted, 150,
        "the rows of the batch whose answer was lost are counted: gone when read again"
    );
    assert_eq!(common::history_rows(&history, "big").await, 0);
    let lines = proxy.take_lines();
    let snapshots = lines
        .iter()
        .filter(|l| l.contains("History()") && l.contains("$filter"))
        .count();
    assert_eq!(snapshots, 2, "read again after the 404: {lines:#?}");
    Ok(())
}

#[tokio::test]
async fn a_single_purge_cut_at_any_request_is_finished_by_a_rerun() -> Result<()> {
    // Either form: the read of the row, a page of its History, the check,
    // the batch, the row (5). (purge_instance took 3 before it read the
    // row first: a page, a batch at any version, the row at any version.)
    for terminal in [false, true] {
        for cut in 0..5 {
            let store = common::emulator_store().await;
            instances(&store, &[("one", RuntimeStatus::Completed)]).await?;
            let history = common::provider_history(&store, &[("one", 3)]).await;
            let no_retry = StoreOptions::default().retry_budget(Duration::ZERO);
            let (proxied, proxy) = common::through_proxy(&store, no_retry).await;
            proxy.fail_after(cut);
            let purge = |store: InstanceStore| async move {
                if terminal {
                    store.purge_terminal_instance("one").await
                } else {
                    store.purge_instance("one").await
                }
            };
            assert!(purge(proxied).await.is_err(), "cut {cut}");
            assert!(
                store.get("one").await?.is_some(),
                "the row goes last (cut {cut}, terminal {terminal})"
            );
            assert!(purge(store.clone()).await?, "the re-run deletes it");
            assert_eq!(common::history_rows(&history, "one").await, 0);
        }
    }
    Ok(())
}

/// The "new run" tests: `old` is Completed with 3 History rows of run
/// `e1`; the purge goes through a proxy that holds one of its requests,
/// while a new run with the same id starts.
async fn new_run_scenario() -> Result<(InstanceStore, History, InstanceStore, common::proxy::Proxy)>
{
    let store = common::emulator_store().await;
    instances(&store, &[("old", RuntimeStatus::Completed)]).await?;
    let history = common::provider_history(&store, &[("old", 3)]).await;
    let (proxied, proxy) = common::through_proxy(&store, StoreOptions::default()).await;
    Ok((store, history, proxied, proxy))
}

async fn start_new_run(store: &InstanceStore) -> Result<String> {
    let rerun = NewInstance::new("old", "Orch")
        .execution_id("e2")
        .status(RuntimeStatus::Running)
        .overwrite_terminal(true);
    store.create(rerun).await?;
    Ok(store.get("old").await?.expect("the new run").execution_id)
}

#[tokio::test]
async fn a_new_run_started_while_the_history_is_read_is_never_touched() -> Result<()> {
    let (store, history, proxied, proxy) = new_run_scenario().await?;
    let mut gate = proxy.hold_request_matching("GET", "History()?$filter");
    let filter = PurgeFilter::created_from(an_hour_ago());
    let purge = tokio::spawn(async move { proxied.purge(&filter).await });
    gate.reached().await;
    // The new run rewrites the old run's RowKeys and adds its own.
    let execution_id = start_new_run(&store).await?;
    write_history(&history, "old", 0..6, "e2").await;
    gate.release();
    let done = purge.await??;
    assert_eq!(
        (done.deleted, done.skipped, done.history_rows_deleted),
        (0, 1, 0)
    );
    assert_eq!(store.get("old").await?.unwrap().execution_id, execution_id);
    assert_eq!(history_of(&history, "old").await, run_rows(0..6, "e2"));
    Ok(())
}

#[tokio::test]
async fn a_new_run_started_before_the_check_is_never_touched() -> Result<()> {
    let (store, history, proxied, proxy) = new_run_scenario().await?;
    // The History page is read (the old run's 3 rows); the check is held.
    let mut gate = proxy.hold_request_matching("GET", "Instances(PartitionKey='old'");
    let filter = PurgeFilter::created_from(an_hour_ago());
    let purge = tokio::spawn(async move { proxied.purge(&filter).await });
    gate.reached().await;
    let execution_id = start_new_run(&store).await?;
    write_history(&history, "old", 0..6, "e2").await;
    gate.release();
    let done = purge.await??;
    assert_eq!(
        (done.deleted, done.skipped, done.history_rows_deleted),
        (0, 1, 0)
    );
    assert_eq!(store.get("old").await?.unwrap().execution_id, execution_id);
    assert_eq!(
        history_of(&history, "old").await,
        run_rows(0..6, "e2"),
        "the rewritten rows and the new ones"
    );
    Ok(())
}

#[tokio::test]
async fn a_new_run_started_after_the_check_keeps_its_row_and_new_history() -> Result<()> {
    let (store, history, proxied, proxy) = new_run_scenario().await?;
    // The History page is read and the check passed; the batch is held.
    let mut gate = proxy.hold_request_matching("POST", "$batch");
    let filter = PurgeFilter::created_from(an_hour_ago());
    let purge = tokio::spawn(async move { proxied.purge(&filter).await });
    gate.reached().await;
    let execution_id = start_new_run(&store).await?;
    // Rows the page read does not hold. (A rewritten row 0-2 would be kept
    // by its new ETag on Table Storage, which rolls the batch back; Azurite
    // ignores If-Match inside batches, so that part is shown by the unit
    // test of the batch request instead.)
    write_history(&history, "old", 3..6, "e2").await;
    gate.release();
    let done = purge.await??;
    assert_eq!(
        (done.deleted, done.skipped, done.history_rows_deleted),
        (0, 1, 3),
        "the old run's History went, its row did not: it is the new run's"
    );
    assert_eq!(store.get("old").await?.unwrap().execution_id, execution_id);
    assert_eq!(history_of(&history, "old").await, run_rows(3..6, "e2"));
    Ok(())
}

#[tokio::test]
async fn purging_one_terminal_instance_reads_a_new_run_again_and_refuses_it() -> Result<()> {
    let (store, history, proxied, proxy) = new_run_scenario().await?;
    let mut gate = proxy.hold_request_matching("GET", "History()?$filter");
    let purge = tokio::spawn(async move { proxied.purge_terminal_instance("old").await });
    gate.reached().await;
    let execution_id = start_new_run(&store).await?;
    write_history(&history, "old", 0..6, "e2").await;
    gate.release();
    let err = purge.await?.unwrap_err();
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
    assert_eq!(store.get("old").await?.unwrap().execution_id, execution_id);
    assert_eq!(history_of(&history, "old").await, run_rows(0..6, "e2"));
    Ok(())
}

// ---------------------------------------------------------------------------
// History the purge cannot reach, a new run that writes its History before
// its row, and the single purges' guards.
// ---------------------------------------------------------------------------

/// A pause after which what the emulator writes carries a later Timestamp
/// than what it wrote before (its clock counts milliseconds).
async fn later() {
    tokio::time::sleep(Duration::from_millis(20)).await;
}

/// Writes one History row, replacing a row of the same key; without an
/// ExecutionId when `run` is `None` (as some writers leave it out).
async fn put_history(history: &History, partition: &str, row_key: &str, run: Option<&str>) {
    let mut row = json!({
        "PartitionKey": partition,
        "RowKey": row_key,
        "EventType": "TaskScheduled",
    });
    if let Some(run) = run {
        row["ExecutionId"] = json!(run);
    }
    let _ = history
        .partition_key_client(partition.replace('\'', "''"))
        .entity_client(row_key.replace('\'', "''"))
        .insert_or_replace(&row)
        .expect("serializes")
        .await
        .expect("the history row is written");
}

/// A store of the task hub of `store` whose credentials reach its Instances
/// table only: a table SAS, as a tool given access to the status rows alone
/// would hold.
fn instances_only(store: &InstanceStore) -> Result<InstanceStore> {
    let sas = common::table_sas(
        &common::emulator(),
        &format!("{}Instances", store.task_hub()),
    );
    Ok(InstanceStore::open(
        &sas,
        store.task_hub(),
        StoreOptions::default(),
    )?)
}

/// What a purge that cannot reach the History table must say.
fn assert_history_out_of_reach(store: &InstanceStore, err: &Error) {
    let text = durable_status_chain(err);
    assert!(
        text.contains("HTTP 403")
            && text.contains(&format!("'{}History'", store.task_hub()))
            && text.contains("include_history(false)")
            && text.contains("--keep-history"),
        "{text}"
    );
}

/// An error and its causes on one line.
fn durable_status_chain(err: &Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[tokio::test]
async fn a_purge_that_cannot_reach_the_history_stops_and_keeps_the_rows() -> Result<()> {
    let store = common::emulator_store().await;
    instances(&store, &[("done", RuntimeStatus::Completed)]).await?;
    let history =
        common::provider_history_on(&common::emulator(), store.task_hub(), &[("done", 3)]).await;
    let scoped = instances_only(&store)?;
    assert!(
        scoped.get("done").await?.is_some(),
        "the SAS reaches the Instances table"
    );

    let filter = PurgeFilter::created_from(an_hour_ago());
    let err = scoped.purge(&filter).await.unwrap_err();
    let Error::PurgeInterrupted { progress, source } = &err else {
        panic!("expected an interrupted purge: {err}");
    };
    assert!(
        matches!(**source, Error::Storage { status: 403, .. }),
        "{source}"
    );
    assert_history_out_of_reach(&store, &err);
    assert_eq!((progress.deleted, progress.history_rows_deleted), (0, 0));
    assert!(
        store.get("done").await?.is_some(),
        "the row stays, so that a purge that can reach the History finds it"
    );
    assert_eq!(common::history_rows(&history, "done").await, 3);

    // Rows only, when the caller says so.
    let done = scoped.purge(&filter.include_history(false)).await?;
    assert_eq!((done.deleted, done.history_rows_deleted), (1, 0));
    assert_eq!(common::history_rows(&history, "done").await, 3);
    Ok(())
}

#[tokio::test]
async fn a_single_purge_that_cannot_reach_the_history_fails_and_keeps_the_row() -> Result<()> {
    for terminal in [false, true] {
        let store = common::emulator_store().await;
        instances(&store, &[("one", RuntimeStatus::Completed)]).await?;
        let history =
            common::provider_history_on(&common::emulator(), store.task_hub(), &[("one", 3)]).await;
        let scoped = instances_only(&store)?;
        let err = if terminal {
            scoped.purge_terminal_instance("one").await
        } else {
            scoped.purge_instance("one").await
        }
        .unwrap_err();
        assert!(
            matches!(err, Error::Storage { status: 403, .. }),
            "terminal {terminal}: {err}"
        );
        assert_history_out_of_reach(&store, &err);
        assert!(store.get("one").await?.is_some(), "terminal {terminal}");
        assert_eq!(common::history_rows(&history, "one").await, 3);
    }
    Ok(())
}

/// `old`: run `e1` wrote its History (rows 0-2 and its sentinel), then its
/// row reached Completed (the ETag a purge reads). Then a new run, `e2`,
/// wrote its History before its row, as the provider does: row 2 and the
/// sentinel rewritten, rows 3-4 added. The row is still the old run's.
async fn new_run_history_first() -> Result<(InstanceStore, History)> {
    let store = common::emulator_store().await;
    let start = NewInstance::new("old", "Orch")
        .execution_id("e1")
        .status(RuntimeStatus::Running);
    store.create(start).await?;
    let history = common::provider_history_on(&common::emulator(), store.task_hub(), &[]).await;
    write_history(&history, "old", 0..3, "e1").await;
    put_history(&history, "old", "sentinel", Some("e1")).await;
    later().await;
    store.complete("old", None).await?;
    later().await;
    write_history(&history, "old", 2..5, "e2").await;
    put_history(&history, "old", "sentinel", Some("e2")).await;
    Ok((store, history))
}

/// What the new run of [`new_run_history_first`] wrote.
fn new_run_rows() -> Vec<(String, String)> {
    let mut rows = run_rows(2..5, "e2");
    rows.push(("sentinel".into(), "e2".into()));
    rows
}

#[tokio::test]
async fn a_new_run_that_writes_its_history_before_its_row_keeps_it() -> Result<()> {
    let (store, history) = new_run_history_first().await?;
    let (proxied, proxy) = common::through_proxy(&store, StoreOptions::default()).await;
    // The History is purged; the row's delete (at the old run's ETag) is
    // held while the new run writes its row.
    let mut gate = proxy.hold_request_matching("DELETE", "Instances(PartitionKey='old'");
    let filter = PurgeFilter::created_from(an_hour_ago());
    let purge = tokio::spawn(async move { proxied.purge(&filter).await });
    gate.reached().await;
    assert_eq!(
        history_of(&history, "old").await,
        new_run_rows(),
        "only the old run's rows went"
    );
    let execution_id = start_new_run(&store).await?;
    gate.release();
    let done = purge.await??;
    assert_eq!(
        (done.deleted, done.skipped, done.history_rows_deleted),
        (0, 1, 2),
        "rows 0 and 1 were the old run's; its row is the new run's now"
    );
    assert_eq!(store.get("old").await?.unwrap().execution_id, execution_id);
    assert_eq!(history_of(&history, "old").await, new_run_rows());
    Ok(())
}

#[tokio::test]
async fn a_continue_as_new_chain_is_purged_whole() -> Result<()> {
    let store = common::emulator_store().await;
    // Generations g1 and g2 continued as new; g3 completed. The partition
    // holds all three, and a row without ExecutionId, all written before
    // the row's last write.
    let start = NewInstance::new("chain", "Orch")
        .execution_id("g3")
        .status(RuntimeStatus::Running);
    store.create(start).await?;
    let history = common::provider_history_on(&common::emulator(), store.task_hub(), &[]).await;
    write_history(&history, "chain", 0..2, "g1").await;
    write_history(&history, "chain", 2..4, "g2").await;
    write_history(&history, "chain", 4..6, "g3").await;
    put_history(&history, "chain", "untagged", None).await;
    put_history(&history, "chain", "sentinel", Some("g3")).await;
    later().await;
    store.complete("chain", None).await?;
    let done = store
        .purge(&PurgeFilter::created_from(an_hour_ago()))
        .await?;
    assert_eq!((done.deleted, done.history_rows_deleted), (1, 8));
    assert_eq!(history_of(&history, "chain").await, []);
    Ok(())
}

#[tokio::test]
async fn purging_one_instance_keeps_the_history_of_a_new_run() -> Result<()> {
    for terminal in [false, true] {
        let (store, history) = new_run_history_first().await?;
        let purged = if terminal {
            store.purge_terminal_instance("old").await?
        } else {
            store.purge_instance("old").await?
        };
        assert!(purged, "the old run's row is deleted (terminal {terminal})");
        assert_eq!(
            history_of(&history, "old").await,
            new_run_rows(),
            "terminal {terminal}: only the old run's History went"
        );
        // The new run writes its row: all of it is there.
        let execution_id = start_new_run(&store).await?;
        assert_eq!(execution_id, "e2");
        assert_eq!(history_of(&history, "old").await, new_run_rows());
    }
    Ok(())
}

#[tokio::test]
async fn purging_one_terminal_instance_without_a_row_leaves_its_history() -> Result<()> {
    // A first run has written History, not yet its row.
    let store = common::emulator_store().await;
    let history =
        common::provider_history_on(&common::emulator(), store.task_hub(), &[("first", 3)]).await;
    assert!(!store.purge_terminal_instance("first").await?);
    assert_eq!(
        common::history_rows(&history, "first").await,
        3,
        "nothing says whether that History is of a terminal run"
    );
    // Whatever its status: with no row, the whole partition.
    assert!(!store.purge_instance("first").await?);
    assert_eq!(common::history_rows(&history, "first").await, 0);
    Ok(())
}

#[tokio::test]
async fn a_long_history_is_deleted_a_page_at_a_time() -> Result<()> {
    let store = common::emulator_store().await;
    instances(&store, &[("long", RuntimeStatus::Completed)]).await?;
    let history =
        common::provider_history_on(&common::emulator(), store.task_hub(), &[("long", 1_050)])
            .await;
    let (proxied, proxy) = common::through_proxy(&store, StoreOptions::default()).await;
    let done = proxied
        .purge(&PurgeFilter::created_from(an_hour_ago()))
        .await?;
    assert_eq!((done.deleted, done.history_rows_deleted), (1, 1_050));
    assert_eq!(common::history_rows(&history, "long").await, 0);
    let lines = proxy.take_lines();
    let at = |what: &dyn Fn(&String) -> bool| -> Vec<usize> {
        (0..lines.len()).filter(|&i| what(&lines[i])).collect()
    };
    let pages = at(&|l| l.contains("History()") && l.contains("$filter"));
    let batches = at(&|l| l.starts_with("POST"));
    assert_eq!((pages.len(), batches.len()), (2, 11), "{lines:#?}");
    assert!(
        batches[0] < pages[1],
        "the first page is deleted before the second is read: {lines:#?}"
    );
    // The look, the scan; two pages, a check and a batch per 100 rows, the row.
    assert_eq!(lines.len(), 2 + 2 + 2 * 11 + 1, "{lines:#?}");
    Ok(())
}

#[tokio::test]
async fn a_purge_by_orchestrator_name_deletes_only_that_orchestrators_instances() -> Result<()> {
    let store = common::store().await;
    for (id, name) in [
        ("a1", "Alpha"),
        ("a2", "Alpha"),
        ("b1", "Beta"),
        ("x1", "Alphabet"),
    ] {
        store
            .create(NewInstance::new(id, name).status(RuntimeStatus::Running))
            .await?;
        store.complete(id, None).await?;
    }
    let alpha = PurgeFilter::created_from(an_hour_ago()).name("Alpha");
    let counts = store.count_by_status(&alpha.query()?).await?;
    assert_eq!(
        counts.total(),
        2,
        "the preview counts what the purge deletes"
    );
    let done = store.purge(&alpha).await?;
    assert_eq!(done.deleted, 2);
    let mut left = remaining(&store).await?;
    left.sort();
    assert_eq!(left, ["b1", "x1"], "an exact match: Alphabet stays");
    Ok(())
}
