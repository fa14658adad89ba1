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
//! it and finishes it. Any History request that fails stops the instance
//! before its row, a 403 too (credentials that reach the Instances table
//! only): deleting rows without their History is the caller's choice
//! ([`PurgeFilter::include_history`], `--keep-history`), never a fallback,
//! since nothing could find that History once its row is gone.
//!
//! For each instance read at ETag `E`, where its row has ExecutionId `X`
//! and Timestamp `T`:
//!
//! 1. one page of its History partition (at most 1,000 rows: each row's
//!    RowKey, ExecutionId, Timestamp and ETag), and of it the rows of the
//!    run read (see below);
//! 2. before each batch of at most 100 of those rows, one read of the
//!    instance row's PartitionKey: not at `E` any more (a new run's row, a
//!    rewind, any write), the instance is skipped and nothing more of it is
//!    deleted;
//! 3. the batch, each delete conditional on its row's ETag as read. A row
//!    gone already (404: another purge, or this batch's own retry after its
//!    answer was lost) has the page read again (five times at most); a row
//!    at another version (412) stops as in 2;
//! 4. the next page, and so on to the end of the partition; then the row,
//!    conditional on `E`.
//!
//! An ETag never comes back, so a row at `E` at the scan and at a check was
//! at `E` throughout. Checking before every batch, not once, bounds what a
//! change during a long History can cost to one batch, and costs nothing
//! more for histories of up to 100 rows.
//!
//! # Which History rows are the run's
//!
//! The Durable Task provider commits a run's History *before* it updates
//! the run's row (`AzureTableTrackingStore.UpdateStateAsync`), and a new
//! run reusing the id can be started before its row replaces the old one:
//! a new run may write History while the row is still at `E`, which the
//! check of 2 cannot see. What the rows carry tells them apart. A History
//! row is deleted only if
//!
//! - its ExecutionId is `X`: the run read; or
//! - its Timestamp is not after `T`: it was written no later than the
//!   row's last write, the one that left it at `E`. This takes rows without
//!   ExecutionId, and the earlier generations of a continue-as-new chain,
//!   which share the partition under ExecutionIds of their own.
//!
//! A new run's rows carry a new ExecutionId and are written after the old
//! run's last write, so they stay; when the new run's row replaces `E`, the
//! delete at `E` fails and the instance is skipped with its row. A row that
//! a new run rewrites between the page and the batch has another ETag, and
//! Table Storage rolls the batch back (the Azurite emulator does not check
//! `If-Match` inside batches).
//!
//! The one risk left is two clocks: `T` is stamped by the server of the
//! Instances partition, a History row's Timestamp by the server of the
//! History partition. A new run's row written after the old run's last
//! write by less than the skew between those clocks could read as not
//! after `T`, and be deleted (and a row without ExecutionId written that
//! little before, as after `T`, and be left). Between the two writes lies
//! at least a queue message (the new run's start) and the provider's
//! History write, normally far more than the service's clock skew; but it
//! is a comparison of two clocks, not a version. (The rule also takes `T`
//! as the old run's last write: another writer touching the terminal row,
//! a custom status set after completion, between a new run's first History
//! write and its row's would move `T` past that History.)
//!
//! Not chosen: marking the row "being purged" first (a write that readers
//! would see and other writers would trip on); ExecutionId alone (not every
//! writer sets it, and a continue-as-new chain has several); Timestamp
//! alone (the clocks above, for every row rather than a new run's first).
//!
//! # One instance
//!
//! [`InstanceStore::purge_terminal_instance`] reads the row (its status and
//! `E`, `X`, `T`) and does the same, refusing an instance that is not
//! terminal; with no row it deletes nothing, not even History (a first run
//! writes History before its row: History without a row may be a run just
//! started). [`InstanceStore::purge_instance`] skips only the status check;
//! with no row it deletes the whole partition, each batch while there is
//! still no row: with no row there is nothing to tell runs apart by. When
//! the row changes under them, both read it again and act on what it has
//! become.
//!
//! # Cost
//!
//! A purged instance with `h` History rows of its run: one query per 1,000
//! rows (at least one), a read and a batch per 100 rows, and the delete: 4
//! requests for a few rows, 2 with none, 1 on a task hub without a History
//! table (one look at the start of a purge by filter tells; a table that
//! exists counts even empty, as a run may write into it meanwhile); a
//! single purge reads the row first (one more). At most one page (1,000
//! rows' keys, ExecutionIds and ETags) per instance in flight is held in
//! memory.

use futures::stream::FuturesUnordered;
use futures::{Stream, StreamExt, TryStreamExt};
use time::OffsetDateTime;

use super::query::{InstanceQuery, MAX_PAGE_SIZE};
use super::scan::{scan, ScanRequest};
use super::InstanceStore;
use crate::error::{Error, Result};
use crate::format::columns::{
    get_str, Entity, EXECUTION_ID, INSTANCE_ROW_KEY, PARTITION_KEY, ROW_KEY, RUNTIME_STATUS,
};
use crate::format::filter;
use crate::format::keys::{history_table, partition_key, unescape_key};
use crate::format::limits::MAX_BATCH_OPERATIONS;
use crate::format::row::{KeyRow, StoredRow};
use crate::format::time::parse_time;
use crate::model::{ETag, RuntimeStatus, WriteCondition};
use crate::table::{Continuation, PageRequest, ResponseFormat, TableClient};

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
    names: Vec<String>,
    concurrency: usize,
    include_history: bool,
    page_size: u32,
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
            names: Vec::new(),
            concurrency: DEFAULT_PURGE_CONCURRENCY,
            include_history: true,
            page_size: MAX_PAGE_SIZE,
        }
    }

    /// Whether to delete each purged instance's rows in the task hub's
    /// History table too (default yes, as Durable Functions does; a task hub
    /// without a History table costs one request). Off, the purge deletes
    /// Instances rows only and leaves their History for good: for
    /// credentials that cannot reach the History table, which otherwise
    /// stop the purge (a 403) before it deletes any row.
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

    /// Only instances of this orchestrator (added to a set, or-ed; an exact,
    /// case-sensitive match on the Name column).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.names.push(name.into());
        self
    }

    /// Deletes in flight at once, 1 to 256 (default 32).
    pub fn concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency;
        self
    }

    /// Rows of the scan per page, 1 to 1000 (default 1000: the fewest
    /// requests). The scan reads the key space in parallel ranges (see
    /// [`StoreOptions::scan_concurrency`](crate::StoreOptions::scan_concurrency)).
    pub fn page_size(mut self, page_size: u32) -> Self {
        self.page_size = page_size;
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
            .page_size(self.page_size);
        if !self.names.is_empty() {
            query = query.names(self.names.clone());
        }
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
    /// Rows this purge deleted from the task hub's History table, whatever
    /// became of their instance: deleted, skipped (it changed after some of
    /// its run's History was deleted) or not finished (a request failed).
    /// Rows of a batch whose answer was lost count when a read of the
    /// partition finds them gone (another purge deleting the same rows at
    /// that moment would have them counted twice, once by each).
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

/// The system property that says when the service last wrote a row.
const TIMESTAMP: &str = "Timestamp";

/// The run a purge read: the instance row at `etag`, and the ExecutionId
/// and Timestamp it had there.
#[derive(Debug, Clone, PartialEq)]
struct ReadRun {
    etag: ETag,
    /// `None` when the row has none (or an empty one).
    execution_id: Option<String>,
    timestamp: OffsetDateTime,
}

impl ReadRun {
    /// The run of a row read with its ExecutionId and Timestamp; `None`
    /// without a Timestamp (the service always sends it when asked).
    fn of_row(row: &Entity, etag: ETag) -> Option<ReadRun> {
        Some(ReadRun {
            etag,
            execution_id: execution_id(row),
            timestamp: get_str(row, TIMESTAMP).and_then(parse_time)?,
        })
    }

    /// Whether a History row is this run's: it carries the run's
    /// ExecutionId, or it was written no later than the row's write that
    /// this run was read at (see the module documentation).
    fn wrote(&self, row: &HistoryRow) -> bool {
        let same_run = matches!(
            (&self.execution_id, &row.execution_id),
            (Some(run), Some(row)) if run == row
        );
        same_run || row.timestamp <= self.timestamp
    }
}

/// A row's runtime status; absent or unknown text reads as `Unknown`.
fn status_of(row: &Entity) -> RuntimeStatus {
    get_str(row, RUNTIME_STATUS).map_or(RuntimeStatus::Unknown, RuntimeStatus::from_stored)
}

fn execution_id(row: &Entity) -> Option<String> {
    get_str(row, EXECUTION_ID)
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
}

/// A History row as a purge reads it.
struct HistoryRow {
    row_key: String,
    etag: ETag,
    execution_id: Option<String>,
    timestamp: OffsetDateTime,
}

/// Which of an instance's History rows a purge may delete.
#[derive(Clone, Copy)]
enum Guard<'a> {
    /// The rows of the run read, each batch only while the instance row is
    /// at the version read.
    Run(&'a ReadRun),
    /// Every row, each batch only while there is still no instance row: an
    /// unconditional purge of an instance without one.
    NoRow,
}

impl Guard<'_> {
    /// The version the instance row must be at (`None`: absent).
    fn etag(&self) -> Option<&ETag> {
        match self {
            Guard::Run(run) => Some(&run.etag),
            Guard::NoRow => None,
        }
    }

    fn takes(&self, row: &HistoryRow) -> bool {
        match self {
            Guard::Run(run) => run.wrote(row),
            Guard::NoRow => true,
        }
    }
}

/// How far the History purge of one instance came.
enum HistoryPurged {
    /// Every row of the run read is gone.
    Done,
    /// The instance changed: its row left the version read, or a History
    /// row did. Nothing more of it was deleted.
    Changed,
}

/// Re-reads of a History page after a batch met a row gone already.
const HISTORY_REREADS: u32 = 5;

impl InstanceStore {
    /// Deletes one instance whatever its status: `Ok(true)` when its row was
    /// deleted, `Ok(false)` when there was no row.
    ///
    /// Its row is read first (its version, ExecutionId and Timestamp); then,
    /// as a purge by filter does, the History rows of that run, each batch
    /// only while the row is still at that version, then the row at that
    /// version. A new run's History rows (written before its row, as the
    /// provider does) are left. With no row, the whole History partition is
    /// deleted, each batch while there is still no row (an earlier purge of
    /// it may have stopped midway): without a row nothing tells runs apart.
    /// When the row changes meanwhile it is read again and purged as it is
    /// then. Stopped at any point, running it again finishes the job; a
    /// History table it cannot reach (a 403) fails it before the row.
    pub async fn purge_instance(&self, instance_id: &str) -> Result<bool> {
        self.purge_one(instance_id, false).await
    }

    /// Deletes one instance only if it is terminal, at the version read: a
    /// run that is still going is never purged. `Ok(false)` when there is no
    /// row, and then nothing is deleted, not even History rows (a first run
    /// writes History before its row); [`Error::NotTerminal`] when it is not
    /// terminal.
    ///
    /// As a purge by filter: the History rows of the run read, each batch
    /// only while the row is still at the version read, then the row. An
    /// instance that changes meanwhile (a new run with the same id) is read
    /// again, and then purged or refused on what it has become. A History
    /// table it cannot reach (a 403) fails it before the row.
    pub async fn purge_terminal_instance(&self, instance_id: &str) -> Result<bool> {
        self.purge_one(instance_id, true).await
    }

    async fn purge_one(&self, instance_id: &str, terminal_only: bool) -> Result<bool> {
        let pk = partition_key(instance_id)?;
        self.retry_on_conflict(|| async {
            let run = match self.read_run(&pk).await? {
                Some((status, _)) if terminal_only && !status.is_terminal() => {
                    return Err(Error::NotTerminal {
                        instance_id: instance_id.to_owned(),
                        status,
                    })
                }
                Some((_, run)) => Some(run),
                None if terminal_only => return Ok(false),
                None => None,
            };
            let guard = run.as_ref().map_or(Guard::NoRow, Guard::Run);
            match self.purge_history(&pk, guard).await {
                (_, Ok(HistoryPurged::Done)) => {}
                (_, Ok(HistoryPurged::Changed)) => return Err(Error::conflict(instance_id)),
                (_, Err(e)) => return Err(e),
            }
            let etag = run.as_ref().map(|run| &run.etag);
            if !self.purge_large_payloads(&pk, etag).await? {
                return Err(Error::conflict(instance_id));
            }
            match run {
                Some(run) => {
                    self.delete_row(instance_id, &pk, &WriteCondition::IfMatch(run.etag))
                        .await
                }
                None => Ok(false),
            }
        })
        .await
    }

    /// The instance row's status and run, `None` when there is no row (or
    /// no table).
    async fn read_run(&self, pk: &str) -> Result<Option<(RuntimeStatus, ReadRun)>> {
        let columns = [PARTITION_KEY, RUNTIME_STATUS, EXECUTION_ID, TIMESTAMP];
        let found = match self
            .client
            .get::<Entity>(pk, INSTANCE_ROW_KEY, Some(&columns))
            .await
        {
            Ok(found) => found,
            Err(Error::TableNotFound { .. }) => None,
            Err(e) => return Err(e),
        };
        let Some((row, etag)) = found else {
            return Ok(None);
        };
        let run = ReadRun::of_row(&row, etag).ok_or_else(|| Error::Decode {
            instance_id: unescape_key(pk),
            reason: "the row came without its Timestamp".into(),
        })?;
        Ok(Some((status_of(&row), run)))
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
    /// Matching rows are read 1,000 a page (their key, status, ExecutionId
    /// and Timestamp, and the ETag that comes with each), and purged at most
    /// `concurrency` at once: each instance's History rows of the run read
    /// first, each batch only while its row is still at the version read,
    /// then the row at that version (see the module documentation). An
    /// instance that changed or vanished in between is counted as skipped.
    /// When a request fails (a History table the credentials cannot reach
    /// too, unless [`PurgeFilter::include_history`] is off) the purge stops
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
        // One look decides whether there is a History table to delete from.
        let with_history = filter.include_history
            && self
                .history_table_exists()
                .await
                .map_err(|e| interrupted(done, e))?;
        // And one whether there is a large-message container: a hub without
        // one costs no blob request per instance.
        let with_blobs = self
            .large_messages_exist()
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
                    Some(Ok((partition_key, status, run))) => {
                        done.scanned += 1;
                        // Without an ETag the row could not be deleted at the
                        // version read, without a Timestamp its run's History
                        // not told from a newer run's: leave it.
                        if let (true, Some(run)) = (statuses.contains(&status), run) {
                            // A task of its own: a caller that gives up (Ctrl-C,
                            // a dropped HTTP request) does not stop an
                            // instance's purge between two of its requests.
                            let store = self.clone();
                            in_flight.push(tokio::spawn(async move {
                                store
                                    .delete_at_version(partition_key, run, with_history, with_blobs)
                                    .await
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

    /// Purges one instance read as `run`: its run's History (each batch
    /// only while the row is still at the version read), then its row at
    /// that version.
    async fn delete_at_version(
        &self,
        partition_key: String,
        run: ReadRun,
        with_history: bool,
        with_blobs: bool,
    ) -> Deletion {
        let instance_id = unescape_key(&partition_key);
        let (history_rows, history) = if with_history {
            self.purge_history(&partition_key, Guard::Run(&run)).await
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
        // Its large payloads next, still before the row: a purge stopped
        // here leaves the row, and a re-run finds the rest.
        let blobs = match with_blobs {
            true => {
                self.purge_large_payloads(&partition_key, Some(&run.etag))
                    .await
            }
            false => Ok(true),
        };
        match blobs {
            Ok(true) => {}
            Ok(false) => return Deletion::Skipped { history_rows },
            Err(error) => {
                return Deletion::Failed {
                    history_rows,
                    error,
                }
            }
        }
        let deleted = self
            .delete_row(
                &instance_id,
                &partition_key,
                &WriteCondition::IfMatch(run.etag),
            )
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

    /// Deletes the instance's large-message blobs, if any, while its row is
    /// still at `etag` (a look at the row first; without an ETag, the id's
    /// blobs whatever the row). `false` when the row changed: nothing was
    /// deleted. No blobs, no look.
    async fn purge_large_payloads(&self, pk: &str, etag: Option<&ETag>) -> Result<bool> {
        let names = self.large_payload_blobs(pk).await?;
        if names.is_empty() {
            return Ok(true);
        }
        if etag.is_some() && !self.row_is_at(pk, etag).await? {
            return Ok(false);
        }
        self.delete_blobs(&names).await?;
        Ok(true)
    }

    fn history(&self) -> TableClient {
        self.client.sibling(&history_table(&self.task_hub))
    }

    /// The error of a History request, a 403 explained: the purge stops
    /// there rather than delete rows whose History it cannot.
    fn history_error(&self, error: Error) -> Error {
        match error {
            Error::Storage {
                status: 403,
                code,
                message,
            } => Error::Storage {
                status: 403,
                code,
                message: format!(
                    "the credentials cannot reach table '{}' ({message}); a purge deletes an \
                     instance's History before its row and stops rather than leave History \
                     behind; to delete the Instances rows only, purge by filter with \
                     include_history(false) (command line: --keep-history)",
                    history_table(&self.task_hub)
                ),
            },
            other => other,
        }
    }

    /// Whether the task hub has a History table (one request), empty or
    /// not: an instance completed after this look may have History in a
    /// table that was empty at it.
    async fn history_table_exists(&self) -> Result<bool> {
        let one_key = PageRequest {
            filter: None,
            select: Some(vec![PARTITION_KEY]),
            top: Some(1),
            format: ResponseFormat::NoMetadata,
        };
        match self
            .history()
            .query_existing_page::<KeyRow>(&one_key, None)
            .await
        {
            Ok(_) => Ok(true),
            Err(Error::TableNotFound { .. }) => Ok(false),
            Err(e) => Err(self.history_error(e)),
        }
    }

    /// Deletes an instance's History rows as the guard allows, a page of
    /// at most 1,000 rows at a time: the page read (RowKey, ExecutionId,
    /// Timestamp and ETag of each row), its rows that the guard takes
    /// deleted in batches of 100, each after a look at the instance row
    /// (see the module documentation), then the next page. Returns the
    /// rows deleted, also when it stops on an error. A missing table is no
    /// history; a batch that meets a row gone already (another purge, or
    /// this batch's own retry after a lost answer) has the page read again.
    async fn purge_history(
        &self,
        partition_key: &str,
        guard: Guard<'_>,
    ) -> (u64, Result<HistoryPurged>) {
        let mut deleted = 0;
        let result = self
            .purge_history_pages(partition_key, guard, &mut deleted)
            .await;
        (deleted, result.map_err(|e| self.history_error(e)))
    }

    async fn purge_history_pages(
        &self,
        partition_key: &str,
        guard: Guard<'_>,
        deleted: &mut u64,
    ) -> Result<HistoryPurged> {
        let history = self.history();
        let request = PageRequest {
            filter: Some(filter::partition(partition_key)),
            select: Some(vec![ROW_KEY, EXECUTION_ID, TIMESTAMP]),
            top: Some(MAX_PAGE_SIZE),
            format: ResponseFormat::MinimalMetadata,
        };
        let mut resume: Option<Continuation> = None;
        let mut rereads = 0;
        // Rows of batches that met a row gone already: a batch's first
        // attempt, whose answer was lost, may have deleted them. Counted
        // when a page that covers them finds them gone.
        let mut unsure: Vec<String> = Vec::new();
        'page: loop {
            let page = history.query_page(&request, resume.as_ref()).await?;
            let rows = history_rows(partition_key, page.rows)?;
            unsure.retain(|row_key| {
                if rows.iter().any(|row| row.row_key == *row_key) {
                    false
                } else if covers(page.continuation.as_ref(), partition_key, row_key) {
                    *deleted += 1;
                    false
                } else {
                    true
                }
            });
            let doomed: Vec<(String, ETag)> = rows
                .into_iter()
                .filter(|row| guard.takes(row))
                .map(|row| (row.row_key, row.etag))
                .collect();
            for chunk in doomed.chunks(MAX_BATCH_OPERATIONS) {
                if !self.row_is_at(partition_key, guard.etag()).await? {
                    return Ok(HistoryPurged::Changed);
                }
                match history.delete_batch_if_match(partition_key, chunk).await {
                    Ok(()) => *deleted += chunk.len() as u64,
                    Err(Error::Storage { status: 404, .. }) if rereads < HISTORY_REREADS => {
                        rereads += 1;
                        unsure.extend(chunk.iter().map(|(row_key, _)| row_key.clone()));
                        continue 'page;
                    }
                    // A row at another version than the page's: the
                    // instance is being written again (Table Storage; the
                    // emulator does not check).
                    Err(Error::Storage { status: 412, .. }) => return Ok(HistoryPurged::Changed),
                    Err(e) => return Err(e),
                }
            }
            match page.continuation {
                Some(next) => resume = Some(next),
                None => return Ok(HistoryPurged::Done),
            }
        }
    }

    /// Whether the instance row is at `etag` (`None`: absent), by one read
    /// of its PartitionKey.
    async fn row_is_at(&self, partition_key: &str, etag: Option<&ETag>) -> Result<bool> {
        let found = match self
            .client
            .get::<KeyRow>(partition_key, INSTANCE_ROW_KEY, Some(&[PARTITION_KEY]))
            .await
        {
            Ok(found) => found,
            Err(Error::TableNotFound { .. }) => None,
            Err(e) => return Err(e),
        };
        Ok(found.as_ref().map(|(_, found)| found) == etag)
    }

    /// The matching rows' keys and statuses, and the run each was read at
    /// (`None` without an ETag or a Timestamp), read in parallel ranges.
    fn purge_candidates(
        &self,
        query: InstanceQuery,
    ) -> impl Stream<Item = Result<(String, RuntimeStatus, Option<ReadRun>)>> + Send + 'static {
        let request = ScanRequest {
            columns: Some(vec![PARTITION_KEY, RUNTIME_STATUS, EXECUTION_ID, TIMESTAMP]),
            page_size: query.page_size.unwrap_or(MAX_PAGE_SIZE),
            format: ResponseFormat::MinimalMetadata,
            query,
        };
        scan::<Entity>(self.client.clone(), request, self.options.scan_concurrency)
            .map_ok(|rows| {
                let rows: Vec<Result<_>> = rows
                    .into_iter()
                    .filter_map(|(row, etag)| {
                        let key = row.partition_key()?.to_owned();
                        let run = etag.and_then(|etag| ReadRun::of_row(&row, etag));
                        Some(Ok((key, status_of(&row), run)))
                    })
                    .collect();
                futures::stream::iter(rows)
            })
            .try_flatten()
    }
}

/// The History rows of a page, each with its RowKey, ETag and Timestamp.
fn history_rows(partition_key: &str, rows: Vec<(Entity, Option<ETag>)>) -> Result<Vec<HistoryRow>> {
    rows.into_iter()
        .map(|(row, etag)| {
            let row_key = get_str(&row, ROW_KEY);
            let timestamp = get_str(&row, TIMESTAMP).and_then(parse_time);
            match (row_key, etag, timestamp) {
                (Some(row_key), Some(etag), Some(timestamp)) => Ok(HistoryRow {
                    row_key: row_key.to_owned(),
                    etag,
                    execution_id: execution_id(&row),
                    timestamp,
                }),
                _ => Err(Error::Decode {
                    instance_id: unescape_key(partition_key),
                    reason: "a History row came without its RowKey, ETag or Timestamp".into(),
                }),
            }
        })
        .collect()
}

/// Whether a page of partition `partition_key` that ended with `next` read
/// every row up to `row_key` (the rows of a partition come in key order).
fn covers(next: Option<&Continuation>, partition_key: &str, row_key: &str) -> bool {
    match next {
        None => true,
        Some(next) if next.next_partition_key != partition_key => true,
        Some(next) => next
            .next_row_key
            .as_deref()
            .is_some_and(|next_row_key| row_key < next_row_key),
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

    fn history_row(execution_id: Option<&str>, timestamp: OffsetDateTime) -> HistoryRow {
        HistoryRow {
            row_key: "0".into(),
            etag: ETag::new("W/\"x\""),
            execution_id: execution_id.map(str::to_owned),
            timestamp,
        }
    }

    #[test]
    fn a_run_takes_its_own_rows_and_older_ones_never_a_newer_runs() {
        let at = datetime!(2024-05-01 10:00:00.5 UTC);
        let before = at - time::Duration::milliseconds(1);
        let after = at + time::Duration::milliseconds(1);
        let run = ReadRun {
            etag: ETag::new("W/\"e\""),
            execution_id: Some("e1".into()),
            timestamp: at,
        };
        // Its own rows, whenever written (a run still going writes more).
        assert!(run.wrote(&history_row(Some("e1"), after)));
        // Written no later than the row's last write: earlier generations,
        // rows without ExecutionId.
        assert!(run.wrote(&history_row(Some("g0"), before)));
        assert!(run.wrote(&history_row(Some("g0"), at)));
        assert!(run.wrote(&history_row(None, before)));
        // A newer run's, or anything else's written since: never.
        assert!(!run.wrote(&history_row(Some("e2"), after)));
        assert!(!run.wrote(&history_row(None, after)));
        // A row without ExecutionId matches none of another.
        let untagged = ReadRun {
            execution_id: None,
            ..run
        };
        assert!(!untagged.wrote(&history_row(None, after)));
        assert!(untagged.wrote(&history_row(Some("e1"), at)));
    }

    #[test]
    fn a_run_is_read_with_its_timestamp_or_not_at_all() {
        let row: Entity = serde_json::from_value(serde_json::json!({
            "PartitionKey": "p",
            "ExecutionId": "",
            "Timestamp": "2024-05-01T10:00:00.1234567Z",
            "Timestamp@odata.type": "Edm.DateTime",
        }))
        .unwrap();
        let run = ReadRun::of_row(&row, ETag::new("1")).unwrap();
        assert_eq!(run.execution_id, None, "an empty ExecutionId is none");
        assert_eq!(run.timestamp, datetime!(2024-05-01 10:00:00.1234567 UTC));
        let mut no_time = row.clone();
        no_time.remove("Timestamp");
        assert_eq!(ReadRun::of_row(&no_time, ETag::new("1")), None);
    }

    #[test]
    fn a_page_covers_the_keys_before_where_the_next_starts() {
        let next = |pk: &str, rk: Option<&str>| Continuation {
            next_partition_key: pk.into(),
            next_row_key: rk.map(str::to_owned),
        };
        assert!(covers(None, "p", "z"), "the last page covers the rest");
        assert!(covers(Some(&next("q", Some("a"))), "p", "z"));
        assert!(covers(Some(&next("p", Some("m"))), "p", "a"));
        assert!(!covers(Some(&next("p", Some("m"))), "p", "m"));
        assert!(!covers(Some(&next("p", Some("m"))), "p", "z"));
        assert!(!covers(Some(&next("p", None)), "p", "a"));
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
