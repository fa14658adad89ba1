//! Deleting instances safely: one by id, or every instance that matches a
//! filter, concurrently with a bound.
//!
//! A purge by filter needs a created-time range, purges terminal instances
//! unless told otherwise, and deletes nothing of an instance that is not at
//! the version it read: an instance that changed in between is skipped.
//!
//! # A purge finishes what it started
//!
//! An instance is its row in `{hub}Instances` and its partition in
//! `{hub}History`, and no transaction spans two tables. The row is what a
//! purge by filter finds, so it goes last: whatever stops a purge (a kill, a
//! lost connection, between any two requests), an instance it did not finish
//! still has its row at the version read, and running the purge again finds
//! it and finishes it. For each instance read at ETag `E`:
//!
//! 1. a snapshot of its History partition: each row's RowKey and ETag;
//! 2. before each batch of at most 100 of those rows, one read of the
//!    instance row's PartitionKey: not at `E` any more (a new run with the
//!    same id, a rewind, any write), the instance is skipped and nothing more
//!    of it is deleted;
//! 3. the batch, each delete conditional on its row's snapshot ETag. A row
//!    gone already (404: another purge, or this batch's own retry) takes a
//!    new snapshot (five at most); a row at another version (412) stops as
//!    in 2;
//! 4. the row, conditional on `E`.
//!
//! Why only the run that was read loses rows: an ETag never comes back, so
//! a row at `E` at the scan and at a check was at `E` throughout, and a new
//! run writes its row before its History (as the Durable Task provider does):
//! every snapshot row a batch deletes was written before the check that
//! precedes it. Rows a new run adds after a check are in no snapshot; a row
//! it rewrites has another ETag, and Table Storage rolls the batch back (the
//! Azurite emulator does not check `If-Match` inside batches). Checking
//! before every batch, not once, bounds what a change during a long History
//! can cost to one batch, and costs nothing more for histories of up to 100
//! rows. Not chosen: marking the row "being purged" first (a write that
//! readers would see and other writers would trip on), or telling runs
//! apart by the ExecutionId column of History rows (not every writer sets
//! it, and continue-as-new keeps the partition).
//!
//! Cost of a purged instance with `h` History rows: one query per 1,000
//! rows, a read and a batch per 100 rows, and the delete: 4 requests for a
//! few rows (3 before this order), 2 with none, 1 on a task hub without a
//! History table.

use futures::stream::FuturesUnordered;
use futures::{Stream, StreamExt, TryStreamExt};
use time::OffsetDateTime;

use super::query::{InstanceQuery, MAX_PAGE_SIZE};
use super::InstanceStore;
use crate::error::{Error, Result};
use crate::format::columns::{INSTANCE_ROW_KEY, PARTITION_KEY, ROW_KEY, RUNTIME_STATUS};
use crate::format::entity::{row_partition_key, row_status};
use crate::format::filter;
use crate::format::keys::{history_table, partition_key, unescape_key};
use crate::format::limits::MAX_BATCH_OPERATIONS;
use crate::model::{ETag, RuntimeStatus, WriteCondition};
use crate::table::{PageRequest, TableClient};

/// Deletes in flight at once unless set.
pub const DEFAULT_PURGE_CONCURRENCY: usize = 32;
/// The most deletes in flight a purge allows.
pub const MAX_PURGE_CONCURRENCY: usize = 256;

/// Which instances a purge deletes.
#[derive(Debug, Clone, PartialEq)]
pub struct PurgeFilter {
    created_from: OffsetDateTime,
    created_to: Option<OffsetDateTime>,
    statuses: Option<Vec<RuntimeStatus>>,
    allow_non_terminal: bool,
    instance_id_prefix: Option<String>,
    concurrency: usize,
    include_history: bool,
}

impl PurgeFilter {
    /// Terminal instances (Completed, Failed, Canceled, Terminated) created
    /// at or after `from` and up to now.
    pub fn created_from(from: OffsetDateTime) -> Self {
        PurgeFilter {
            created_from: from,
            created_to: None,
            statuses: None,
            allow_non_terminal: false,
            instance_id_prefix: None,
            concurrency: DEFAULT_PURGE_CONCURRENCY,
            include_history: true,
        }
    }

    /// Whether to delete each purged instance's rows in the task hub's
    /// History table too (default yes, as Durable Functions does; a task hub
    /// without a History table costs one request).
    pub fn include_history(mut self, include: bool) -> Self {
        self.include_history = include;
        self
    }

    /// Only instances created at or before `to` (default: when the purge starts).
    pub fn created_to(mut self, to: OffsetDateTime) -> Self {
        self.created_to = Some(to);
        self
    }

    /// Only instances in these statuses, instead of the terminal ones. An
    /// empty set is refused rather than read as "any status"; non-terminal
    /// statuses need [`PurgeFilter::allow_non_terminal`].
    pub fn statuses(mut self, statuses: impl IntoIterator<Item = RuntimeStatus>) -> Self {
        self.statuses = Some(statuses.into_iter().collect());
        self
    }

    /// Allows purging instances that are still Pending, Running, Suspended
    /// or ContinuedAsNew. Off by default.
    pub fn allow_non_terminal(mut self, allow: bool) -> Self {
        self.allow_non_terminal = allow;
        self
    }

    /// Only instances whose id starts with this text.
    pub fn instance_id_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.instance_id_prefix = Some(prefix.into());
        self
    }

    /// Deletes in flight at once, 1 to 256 (default 32).
    pub fn concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency;
        self
    }

    /// The statuses this filter purges, after the defaults and the checks.
    pub fn effective_statuses(&self) -> Result<Vec<RuntimeStatus>> {
        let statuses =
            match &self.statuses {
                None => RuntimeStatus::TERMINAL.to_vec(),
                Some(statuses) if statuses.is_empty() => return Err(Error::invalid(
                    "runtime status",
                    "an empty status set would match every instance; name the statuses to purge, \
                     or leave them out to purge terminal instances",
                )),
                Some(statuses) => statuses.clone(),
            };
        let non_terminal: Vec<&str> = statuses
            .iter()
            .filter(|s| !s.is_terminal())
            .map(|s| s.name())
            .collect();
        if !non_terminal.is_empty() && !self.allow_non_terminal {
            return Err(Error::invalid(
                "runtime status",
                format!(
                    "{} is not terminal; purging instances that may still run needs allow_non_terminal",
                    non_terminal.join(", ")
                ),
            ));
        }
        Ok(statuses)
    }

    /// The query of the instances this filter purges: the statuses after
    /// the defaults and the checks, the range (ending now unless set), the
    /// prefix. Counting it shows what a purge will delete.
    pub fn query(&self) -> Result<InstanceQuery> {
        self.validate()
    }

    fn validate(&self) -> Result<InstanceQuery> {
        let statuses = self.effective_statuses()?;
        if !(1..=MAX_PURGE_CONCURRENCY).contains(&self.concurrency) {
            return Err(Error::invalid(
                "concurrency",
                format!(
                    "{} is outside 1..={MAX_PURGE_CONCURRENCY}",
                    self.concurrency
                ),
            ));
        }
        let mut query = InstanceQuery::new()
            .statuses(statuses)
            .created_from(self.created_from)
            .created_to(self.created_to.unwrap_or_else(OffsetDateTime::now_utc))
            .page_size(MAX_PAGE_SIZE);
        if let Some(prefix) = &self.instance_id_prefix {
            query = query.instance_id_prefix(prefix.clone());
        }
        query.validate()?;
        Ok(query)
    }
}

/// How far a purge has come.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PurgeProgress {
    /// Matching rows read so far.
    pub scanned: u64,
    /// Instances deleted so far.
    pub deleted: u64,
    /// Instances left alone: changed or deleted by someone else since they
    /// were read.
    pub skipped: u64,
    /// Rows deleted from the task hub's History table, for the instances
    /// deleted.
    pub history_rows_deleted: u64,
}

/// What became of one instance a purge tried to delete. History rows
/// deleted are counted whatever became of the instance.
enum Deletion {
    Deleted {
        history_rows: u64,
    },
    /// Changed or gone since it was read: its row is left, and what is left
    /// of its History.
    Skipped {
        history_rows: u64,
    },
    /// A request failed: the row is still there (or its delete's answer was
    /// lost), so a re-run finds the instance and finishes it.
    Failed {
        history_rows: u64,
        error: Error,
    },
}

/// Which of an instance's History rows a purge may delete.
#[derive(Clone, Copy)]
enum Guard<'a> {
    /// Whatever is there: an unconditional purge.
    Any,
    /// Only while the instance row is at this version (`None`: absent), each
    /// History row at the version its snapshot read.
    Version(Option<&'a ETag>),
}

/// How far the History purge of one instance came.
enum HistoryPurged {
    /// Every row of the snapshot is gone.
    Done,
    /// The instance changed: its row left the version read, or a History
    /// row did. Nothing more of it was deleted.
    Changed,
}

/// Re-reads of a History partition after a batch met a row gone already.
const HISTORY_REREADS: u32 = 5;

impl InstanceStore {
    /// Deletes one instance whatever its status: `Ok(true)` when its row was
    /// deleted, `Ok(false)` when there was no row. Its History rows go first,
    /// also when the row is gone (an earlier purge of it may have stopped
    /// midway), then the row: stopped at any point, running it again
    /// finishes the job.
    pub async fn purge_instance(&self, instance_id: &str) -> Result<bool> {
        let pk = partition_key(instance_id)?;
        match self.purge_history(&pk, Guard::Any).await {
            (_, Ok(_)) => {}
            (_, Err(Error::Storage { status: 403, .. })) => self.warn_no_history_access(),
            (_, Err(e)) => return Err(e),
        }
        self.delete_row(instance_id, &pk, &WriteCondition::Unconditional)
            .await
    }

    /// Deletes one instance only if it is terminal, at the version read: a
    /// run that is still going is never purged. `Ok(false)` when there was
    /// no row to delete (History rows left without one are deleted, at the
    /// version read); [`Error::NotTerminal`] when it is not terminal.
    ///
    /// As a purge by filter: its History first, each batch only while the
    /// row is still at the version read, then the row. An instance that
    /// changes meanwhile (a new run with the same id) is read again, and
    /// then purged or refused on what it has become.
    pub async fn purge_terminal_instance(&self, instance_id: &str) -> Result<bool> {
        let pk = partition_key(instance_id)?;
        self.retry_on_conflict(|| async {
            let etag = match self.read(&pk, Some(&[RUNTIME_STATUS])).await {
                Ok(Some(found)) if !found.runtime_status.is_terminal() => {
                    return Err(Error::NotTerminal {
                        instance_id: instance_id.to_owned(),
                        status: found.runtime_status,
                    })
                }
                Ok(Some(found)) => Some(found.etag),
                Ok(None) | Err(Error::TableNotFound { .. }) => None,
                Err(e) => return Err(e),
            };
            match self.purge_history(&pk, Guard::Version(etag.as_ref())).await {
                (_, Ok(HistoryPurged::Done)) => {}
                (_, Ok(HistoryPurged::Changed)) => return Err(Error::conflict(instance_id)),
                (_, Err(Error::Storage { status: 403, .. })) => self.warn_no_history_access(),
                (_, Err(e)) => return Err(e),
            }
            match etag {
                Some(etag) => {
                    self.delete_row(instance_id, &pk, &WriteCondition::IfMatch(etag))
                        .await
                }
                None => Ok(false),
            }
        })
        .await
    }

    /// Deletes every instance that matches the filter, reporting progress
    /// after each delete. See [`InstanceStore::purge_with_progress`].
    pub async fn purge(&self, filter: &PurgeFilter) -> Result<PurgeProgress> {
        self.purge_with_progress(filter, |_| {}).await
    }

    /// Deletes every instance that matches the filter, reporting progress
    /// after each instance.
    ///
    /// The filter is checked before any request ([`Error::Invalid`]).
    /// Matching rows are read 1,000 a page (only their key and status, and
    /// the ETag that comes with each), and purged at most `concurrency` at
    /// once: each instance's History rows first, each batch only while its
    /// row is still at the version read, then the row at that version (see
    /// the module documentation). An instance that changed or vanished in
    /// between is counted as skipped. When a request fails the purge stops
    /// taking new rows, lets the instances in flight finish, and answers
    /// [`Error::PurgeInterrupted`] with how far it came. However a purge
    /// stops, every instance it did not finish still has its row, so running
    /// it again finishes the job.
    pub async fn purge_with_progress(
        &self,
        filter: &PurgeFilter,
        mut progress: impl FnMut(PurgeProgress) + Send,
    ) -> Result<PurgeProgress> {
        let query = filter.validate()?;
        let statuses = query.statuses.clone();
        let mut done = PurgeProgress::default();
        let interrupted = |progress, error| Error::PurgeInterrupted {
            progress,
            source: Box::new(error),
        };
        // One look decides whether there is any history to delete.
        let with_history = filter.include_history
            && self
                .history_exists()
                .await
                .map_err(|e| interrupted(done, e))?;

        let mut rows = std::pin::pin!(self.purge_candidates(query));
        let mut in_flight: FuturesUnordered<tokio::task::JoinHandle<Deletion>> =
            FuturesUnordered::new();
        let mut exhausted = false;
        let mut failure = None;
        loop {
            let may_take = !exhausted && failure.is_none() && in_flight.len() < filter.concurrency;
            // Deletes in flight keep going while the next page is fetched.
            tokio::select! {
                biased;
                Some(joined) = in_flight.next(), if !in_flight.is_empty() => {
                    let result = joined.unwrap_or_else(|e: tokio::task::JoinError| {
                        Deletion::Failed {
                            history_rows: 0,
                            error: Error::transport(format!("a delete task failed: {e}")),
                        }
                    });
                    match result {
                        Deletion::Deleted { history_rows } => {
                            done.deleted += 1;
                            done.history_rows_deleted += history_rows;
                        }
                        Deletion::Skipped { history_rows } => {
                            done.skipped += 1;
                            done.history_rows_deleted += history_rows;
                        }
                        Deletion::Failed { history_rows, error } => {
                            // The row is still there: a re-run finishes it.
                            done.history_rows_deleted += history_rows;
                            failure.get_or_insert(error);
                        }
                    }
                    progress(done);
                }
                row = rows.next(), if may_take => match row {
                    Some(Ok((partition_key, status, etag))) => {
                        done.scanned += 1;
                        // Without an ETag the row could not be deleted at the
                        // version read: leave it.
                        if let (true, Some(etag)) = (statuses.contains(&status), etag) {
                            // A task of its own: a caller that gives up (Ctrl-C,
                            // a dropped HTTP request) does not stop an
                            // instance's purge between two of its requests.
                            let store = self.clone();
                            in_flight.push(tokio::spawn(async move {
                                store.delete_at_version(partition_key, etag, with_history).await
                            }));
                        } else {
                            done.skipped += 1;
                        }
                    }
                    Some(Err(e)) => {
                        failure.get_or_insert(e);
                    }
                    None => exhausted = true,
                },
                else => break,
            }
        }
        match failure {
            Some(error) => Err(interrupted(done, error)),
            None => Ok(done),
        }
    }

    /// Purges one instance read at `etag`: its History (each batch only
    /// while the row is still at `etag`), then its row at `etag`.
    async fn delete_at_version(
        &self,
        partition_key: String,
        etag: ETag,
        with_history: bool,
    ) -> Deletion {
        let instance_id = unescape_key(&partition_key);
        let (history_rows, history) = if with_history {
            self.purge_history(&partition_key, Guard::Version(Some(&etag)))
                .await
        } else {
            (0, Ok(HistoryPurged::Done))
        };
        match history {
            Ok(HistoryPurged::Done) => {}
            // Changed since it was read: nothing more of it.
            Ok(HistoryPurged::Changed) => return Deletion::Skipped { history_rows },
            Err(error) => {
                return Deletion::Failed {
                    history_rows,
                    error,
                }
            }
        }
        let deleted = self
            .delete_row(&instance_id, &partition_key, &WriteCondition::IfMatch(etag))
            .await;
        match deleted {
            Ok(true) => Deletion::Deleted { history_rows },
            // Changed or deleted since the last look: left as it is.
            Ok(false) | Err(Error::Conflict { .. }) => Deletion::Skipped { history_rows },
            // Maybe deleted, maybe not (the service could not be asked):
            // the purge stops on what stopped it, and a re-run finds out
            // (running a purge again is always safe).
            Err(Error::OutcomeUnknown { source, .. }) => Deletion::Failed {
                history_rows,
                error: *source,
            },
            Err(error) => Deletion::Failed {
                history_rows,
                error,
            },
        }
    }

    fn history(&self) -> TableClient {
        self.client.sibling(&history_table(&self.task_hub))
    }

    fn warn_no_history_access(&self) {
        tracing::warn!(task_hub = %self.task_hub, "no access to the History table: purges leave its rows");
    }

    /// Whether the task hub's History table holds any row (one request).
    /// Without access to it (a SAS scoped to the Instances table) purges
    /// leave History alone, and say so in the log.
    async fn history_exists(&self) -> Result<bool> {
        let one_key = PageRequest {
            filter: None,
            select: Some(vec![PARTITION_KEY]),
            top: Some(1),
        };
        match self.history().query_page(&one_key, None).await {
            Ok(page) => Ok(!page.rows.is_empty() || page.continuation.is_some()),
            Err(Error::Storage { status: 403, .. }) => {
                self.warn_no_history_access();
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Deletes an instance's History partition as the guard allows: a
    /// snapshot of its rows (RowKey and ETag, 1,000 a page), then batches of
    /// 100, each after a look at the instance row when guarded (see the
    /// module documentation). Returns the rows deleted, also when it stops
    /// on an error. A missing table is no history; a batch that meets a row
    /// gone already (another purge, or this batch's own retry after a lost
    /// answer) takes a new snapshot.
    async fn purge_history(
        &self,
        partition_key: &str,
        guard: Guard<'_>,
    ) -> (u64, Result<HistoryPurged>) {
        let history = self.history();
        let mut deleted = 0u64;
        let mut rereads = 0;
        'snapshot: loop {
            let snapshot = match self.history_snapshot(&history, partition_key).await {
                Ok(snapshot) => snapshot,
                Err(e) => return (deleted, Err(e)),
            };
            for chunk in snapshot.chunks(MAX_BATCH_OPERATIONS) {
                let batch = match guard {
                    Guard::Any => {
                        let row_keys: Vec<String> =
                            chunk.iter().map(|(row_key, _)| row_key.clone()).collect();
                        history.delete_batch(partition_key, &row_keys).await
                    }
                    Guard::Version(etag) => {
                        match self.row_is_at(partition_key, etag).await {
                            Ok(true) => {}
                            Ok(false) => return (deleted, Ok(HistoryPurged::Changed)),
                            Err(e) => return (deleted, Err(e)),
                        }
                        history.delete_batch_if_match(partition_key, chunk).await
                    }
                };
                match batch {
                    Ok(()) => deleted += chunk.len() as u64,
                    Err(Error::Storage { status: 404, .. }) if rereads < HISTORY_REREADS => {
                        rereads += 1;
                        continue 'snapshot;
                    }
                    // A row at another version than the snapshot's: the
                    // instance is being written again (Table Storage; the
                    // emulator does not check).
                    Err(Error::Storage { status: 412, .. }) => {
                        return (deleted, Ok(HistoryPurged::Changed))
                    }
                    Err(e) => return (deleted, Err(e)),
                }
            }
            return (deleted, Ok(HistoryPurged::Done));
        }
    }

    /// Every row of an instance's History partition: its RowKey and ETag.
    async fn history_snapshot(
        &self,
        history: &TableClient,
        partition_key: &str,
    ) -> Result<Vec<(String, ETag)>> {
        let request = PageRequest {
            filter: Some(filter::partition(partition_key)),
            select: Some(vec![ROW_KEY]),
            top: Some(MAX_PAGE_SIZE),
        };
        let mut rows = Vec::new();
        let mut pages = std::pin::pin!(history.pages(request, None));
        while let Some(page) = pages.next().await {
            for (row, etag) in page?.rows {
                let row_key = row.get(ROW_KEY).and_then(|key| key.as_str());
                match (row_key, etag) {
                    (Some(row_key), Some(etag)) => rows.push((row_key.to_owned(), etag)),
                    _ => {
                        return Err(Error::Decode {
                            instance_id: unescape_key(partition_key),
                            reason: "a History row came without its RowKey or ETag".into(),
                        })
                    }
                }
            }
        }
        Ok(rows)
    }

    /// Whether the instance row is at `etag` (`None`: absent), by one read
    /// of its PartitionKey.
    async fn row_is_at(&self, partition_key: &str, etag: Option<&ETag>) -> Result<bool> {
        let found = match self
            .client
            .get(partition_key, INSTANCE_ROW_KEY, Some(&[PARTITION_KEY]))
            .await
        {
            Ok(found) => found,
            Err(Error::TableNotFound { .. }) => None,
            Err(e) => return Err(e),
        };
        Ok(found.as_ref().map(|(_, found)| found) == etag)
    }

    /// The matching rows' keys, statuses and ETags, a page at a time.
    fn purge_candidates(
        &self,
        query: InstanceQuery,
    ) -> impl Stream<Item = Result<(String, RuntimeStatus, Option<ETag>)>> + Send + 'static {
        let request = query.request(Some(vec![PARTITION_KEY, RUNTIME_STATUS]));
        self.client
            .pages(request, None)
            .map_ok(move |page| {
                let rows: Vec<Result<_>> = page
                    .rows
                    .into_iter()
                    .filter(|(row, _)| query.keeps_row(row))
                    .filter_map(|(row, etag)| {
                        let key = row_partition_key(&row)?.to_owned();
                        Some(Ok((key, row_status(&row), etag)))
                    })
                    .collect();
                futures::stream::iter(rows)
            })
            .try_flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const FROM: OffsetDateTime = datetime!(2024-01-01 00:00 UTC);

    #[test]
    fn terminal_statuses_by_default() {
        let statuses = PurgeFilter::created_from(FROM)
            .effective_statuses()
            .unwrap();
        assert_eq!(statuses, RuntimeStatus::TERMINAL);
    }

    #[test]
    fn an_empty_status_set_never_widens() {
        let err = PurgeFilter::created_from(FROM)
            .statuses([])
            .effective_statuses()
            .unwrap_err();
        assert!(err.to_string().contains("empty status set"), "{err}");
        let err = PurgeFilter::created_from(FROM)
            .statuses([])
            .allow_non_terminal(true)
            .effective_statuses()
            .unwrap_err();
        assert!(err.to_string().contains("empty status set"), "{err}");
    }

    #[test]
    fn non_terminal_statuses_need_the_flag() {
        let running = PurgeFilter::created_from(FROM)
            .statuses([RuntimeStatus::Completed, RuntimeStatus::Running]);
        let err = running.effective_statuses().unwrap_err().to_string();
        assert!(
            err.contains("Running is not terminal") && err.contains("allow_non_terminal"),
            "{err}"
        );
        let allowed = running
            .allow_non_terminal(true)
            .effective_statuses()
            .unwrap();
        assert_eq!(allowed, [RuntimeStatus::Completed, RuntimeStatus::Running]);
    }

    #[test]
    fn the_query_keeps_the_range_and_statuses() {
        let query = PurgeFilter::created_from(FROM)
            .created_to(datetime!(2024-02-01 00:00 UTC))
            .statuses([RuntimeStatus::Failed])
            .validate()
            .unwrap();
        assert_eq!(
            query.filter().unwrap(),
            "CreatedTime ge datetime'2024-01-01T00:00:00.0000000Z' \
             and CreatedTime le datetime'2024-02-01T00:00:00.0000000Z' \
             and (RuntimeStatus eq 'Failed')"
        );
        let to_now = PurgeFilter::created_from(FROM).validate().unwrap();
        assert!(
            to_now.created_to.unwrap() <= OffsetDateTime::now_utc(),
            "the range ends now by default"
        );
    }

    #[test]
    fn concurrency_is_bounded() {
        for bad in [0, 257] {
            let err = PurgeFilter::created_from(FROM)
                .concurrency(bad)
                .validate()
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("concurrency") && err.contains(&bad.to_string()),
                "{err}"
            );
        }
    }
}
