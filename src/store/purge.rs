//! Deleting instances safely: one by id, or every instance that matches a
//! filter, concurrently with a bound.
//!
//! A purge by filter needs a created-time range, purges terminal instances
//! unless told otherwise, and deletes each row only at the version it read:
//! an instance that changed in between is skipped, never deleted.

use futures::stream::FuturesUnordered;
use futures::{Stream, StreamExt, TryStreamExt};
use time::OffsetDateTime;

use super::query::{InstanceQuery, MAX_PAGE_SIZE};
use super::InstanceStore;
use crate::error::{Error, Result};
use crate::format::columns::{PARTITION_KEY, ROW_KEY, RUNTIME_STATUS};
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

/// What became of one instance a purge tried to delete.
enum Deletion {
    Deleted {
        history_rows: u64,
    },
    /// Changed or gone since it was read (a row gone still has its History
    /// deleted).
    Skipped {
        history_rows: u64,
    },
    /// The row is gone; some of its History rows are not.
    HistoryFailed {
        row_deleted: bool,
        history_rows: u64,
        error: Error,
    },
    Failed(Error),
}

impl InstanceStore {
    /// Deletes one instance whatever its status: `Ok(true)` when it was
    /// deleted, `Ok(false)` when there was nothing to delete. Either way it
    /// is gone. Its rows in the task hub's History table are deleted too.
    pub async fn purge_instance(&self, instance_id: &str) -> Result<bool> {
        let pk = partition_key(instance_id)?;
        let deleted = self
            .delete_row(instance_id, &pk, &WriteCondition::Unconditional)
            .await?;
        // Its History too, also when the row was gone already: a re-run
        // finishes a purge that stopped between the two.
        self.purge_history_of_one(&pk).await?;
        Ok(deleted)
    }

    /// Deletes one instance only if it is terminal, at the version read: a
    /// run that is still going is never purged. `Ok(false)` when there was
    /// nothing to delete; [`Error::NotTerminal`] when it is not terminal.
    pub async fn purge_terminal_instance(&self, instance_id: &str) -> Result<bool> {
        let pk = partition_key(instance_id)?;
        let deleted = self
            .retry_on_conflict(|| async {
                let found = match self.read(&pk, Some(&[RUNTIME_STATUS])).await {
                    Ok(Some(found)) => found,
                    Ok(None) | Err(Error::TableNotFound { .. }) => return Ok(false),
                    Err(e) => return Err(e),
                };
                if !found.runtime_status.is_terminal() {
                    return Err(Error::NotTerminal {
                        instance_id: instance_id.to_owned(),
                        status: found.runtime_status,
                    });
                }
                self.delete_row(instance_id, &pk, &WriteCondition::IfMatch(found.etag))
                    .await
            })
            .await?;
        self.purge_history_of_one(&pk).await?;
        Ok(deleted)
    }

    /// Deletes every instance that matches the filter, reporting progress
    /// after each delete. See [`InstanceStore::purge_with_progress`].
    pub async fn purge(&self, filter: &PurgeFilter) -> Result<PurgeProgress> {
        self.purge_with_progress(filter, |_| {}).await
    }

    /// Deletes every instance that matches the filter, reporting progress
    /// after each delete.
    ///
    /// The filter is checked before any request ([`Error::Invalid`]).
    /// Matching rows are read 1,000 a page (only their key and status), and
    /// deleted with the ETag read, at most `concurrency` at once. A row that
    /// changed or vanished in between is counted as skipped. When a request
    /// fails the purge stops taking new rows, lets the deletes in flight
    /// finish, and answers [`Error::PurgeInterrupted`] with how far it came;
    /// running it again finishes the job.
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
                        Deletion::Failed(Error::transport(format!("a delete task failed: {e}")))
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
                        Deletion::HistoryFailed { row_deleted, history_rows, error } => {
                            // The row is gone: counted, and the purge stops
                            // (a re-run deletes the rest of its History).
                            done.deleted += u64::from(row_deleted);
                            done.skipped += u64::from(!row_deleted);
                            done.history_rows_deleted += history_rows;
                            failure.get_or_insert(error);
                        }
                        Deletion::Failed(e) => {
                            failure.get_or_insert(e);
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
                            // a dropped HTTP request) cannot split a row's
                            // delete from its History's.
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

    /// Deletes an instance's row at the version read, then its History rows.
    /// A row gone already (deleted by someone else) still has its History
    /// deleted, so that a re-run finishes the job.
    async fn delete_at_version(
        &self,
        partition_key: String,
        etag: ETag,
        with_history: bool,
    ) -> Deletion {
        let instance_id = unescape_key(&partition_key);
        let deleted = self
            .delete_row(&instance_id, &partition_key, &WriteCondition::IfMatch(etag))
            .await;
        let row_deleted = match deleted {
            Ok(deleted) => deleted,
            // Changed since it was read: neither the row nor its History.
            Err(Error::Conflict { .. }) => return Deletion::Skipped { history_rows: 0 },
            // Maybe deleted, maybe not (the service could not be asked):
            // the purge stops on what stopped it, and a re-run finds out
            // (running a purge again is always safe).
            Err(Error::OutcomeUnknown { source, .. }) => return Deletion::Failed(*source),
            Err(e) => return Deletion::Failed(e),
        };
        let (history_rows, history) = if with_history {
            self.purge_history(&partition_key).await
        } else {
            (0, Ok(()))
        };
        match (row_deleted, history) {
            (true, Ok(())) => Deletion::Deleted { history_rows },
            (false, Ok(())) => Deletion::Skipped { history_rows },
            (row_deleted, Err(error)) => {
                tracing::warn!(
                    %instance_id,
                    %error,
                    "the instance row is gone but not all its History rows"
                );
                Deletion::HistoryFailed {
                    row_deleted,
                    history_rows,
                    error,
                }
            }
        }
    }

    fn history(&self) -> TableClient {
        self.client.sibling(&history_table(&self.task_hub))
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
                tracing::warn!(task_hub = %self.task_hub, "no access to the History table: purges leave its rows");
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// The History purge of a single-instance purge: no access to the table
    /// is a warning, not a failure (the instance row is gone already).
    async fn purge_history_of_one(&self, partition_key: &str) -> Result<u64> {
        match self.purge_history(partition_key).await {
            (rows, Ok(())) => Ok(rows),
            (rows, Err(Error::Storage { status: 403, .. })) => {
                tracing::warn!(task_hub = %self.task_hub, "no access to the History table: its rows stay");
                Ok(rows)
            }
            (_, Err(e)) => Err(e),
        }
    }

    /// Deletes an instance's History partition, a page at a time, in
    /// batches of 100. Returns the rows deleted, also when it stops on an
    /// error. A missing table is no history; a batch that meets a row gone
    /// already (another purge, or this batch retried) reads the partition
    /// again.
    pub(crate) async fn purge_history(&self, partition_key: &str) -> (u64, Result<()>) {
        const REREADS: u32 = 5;
        let history = self.history();
        let request = PageRequest {
            filter: Some(filter::partition(partition_key)),
            select: Some(vec![ROW_KEY]),
            top: Some(MAX_PAGE_SIZE),
        };
        let mut deleted = 0u64;
        let mut rereads = 0;
        'scan: loop {
            let mut pages = std::pin::pin!(history.pages(request.clone(), None));
            while let Some(page) = pages.next().await {
                let page = match page {
                    Ok(page) => page,
                    Err(e) => return (deleted, Err(e)),
                };
                let row_keys: Vec<String> = page
                    .rows
                    .iter()
                    .filter_map(|(row, _)| row.get(ROW_KEY)?.as_str().map(str::to_owned))
                    .collect();
                for chunk in row_keys.chunks(MAX_BATCH_OPERATIONS) {
                    match history.delete_batch(partition_key, chunk).await {
                        Ok(()) => deleted += chunk.len() as u64,
                        Err(Error::Storage { status: 404, .. }) if rereads < REREADS => {
                            rereads += 1;
                            continue 'scan;
                        }
                        Err(e) => return (deleted, Err(e)),
                    }
                }
            }
            return (deleted, Ok(()));
        }
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
