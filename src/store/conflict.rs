//! The one conflict-retry loop, and how a write whose answer was lost is
//! told apart from a write that lost a race.

use std::future::Future;
use std::time::Duration;

use time::OffsetDateTime;

use super::InstanceStore;
use crate::error::{Error, Result};
use crate::format::columns::{PARTITION_KEY, ROW_KEY};
use crate::model::{ETag, InstanceStatus, WriteCondition};
use crate::table::Written;

impl InstanceStore {
    /// Runs `attempt` (a read, a decision and a write at the version read)
    /// until it does not lose a race: on [`Error::Conflict`] it waits a
    /// random, growing moment and starts over, up to
    /// [`StoreOptions::conflict_retries`](crate::StoreOptions) times.
    pub(crate) async fn retry_on_conflict<T, F, Fut>(&self, mut attempt: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut tries = 0;
        loop {
            match attempt().await {
                Err(Error::Conflict { .. }) if tries < self.options.conflict_retries => {
                    tries += 1;
                    tokio::time::sleep(conflict_backoff(tries)).await;
                }
                other => return other,
            }
        }
    }

    /// What a failed or uncertain write of an instance's row means.
    ///
    /// When an attempt may have been applied although its answer was lost,
    /// one read of `mark` (a column this write set to a value that names it)
    /// tells whether the row holds this very write: then it succeeded. When
    /// the row holds another writer's change instead, the store cannot tell
    /// whether this write landed before it: a conditional write then answers
    /// [`Error::OutcomeUnknown`] rather than guess (a retry of the caller's
    /// could apply it twice). When the row is still at the version the write
    /// was conditional on, the write certainly did not land, and its error
    /// stands.
    pub(crate) async fn settle<T>(
        &self,
        instance_id: &str,
        pk: &str,
        written: Written<T>,
        condition: &WriteCondition,
        mark: Mark<'_>,
        mine: impl FnOnce(ETag) -> T,
    ) -> Result<T> {
        let error = match written.result {
            Ok(value) => return Ok(value),
            Err(error) => error,
        };
        if !written.uncertain {
            return Err(self.write_error(error, instance_id));
        }
        let found = self.read(pk, Some(mark.columns())).await;
        match &found {
            Ok(Some(row)) if mark.matches(row) => return Ok(mine(row.etag.clone())),
            Ok(None) if matches!(mark, Mark::Deleted) => return Ok(mine(ETag::new(""))),
            _ => {}
        }
        // Certainly not applied: the row is still at the version the write
        // was conditional on, or a deleted row is still there.
        let not_applied = match (&found, condition) {
            (Ok(Some(row)), WriteCondition::IfMatch(etag)) => row.etag == *etag,
            (Ok(Some(_)), _) => matches!(mark, Mark::Deleted),
            _ => false,
        };
        let conditional = matches!(condition, WriteCondition::IfMatch(_));
        let unknown = conditional
            && !not_applied
            && (matches!(error.http_status(), Some(409 | 412)) || error.is_transient());
        if unknown {
            return Err(Error::OutcomeUnknown {
                instance_id: instance_id.to_owned(),
                source: Box::new(self.write_error(error, instance_id)),
            });
        }
        // An unconditional write found someone else's row: a create's id was
        // taken before it (its own first attempt met the same row).
        Err(self.write_error(error, instance_id))
    }

    /// Names the instance in the errors a write of an existing row can meet.
    pub(crate) fn write_error(&self, error: Error, instance_id: &str) -> Error {
        match error {
            Error::Storage { status: 404, .. } => Error::not_found(instance_id),
            Error::Storage { status: 412, .. } => Error::conflict(instance_id),
            other => other,
        }
    }
}

/// What identifies a write in the row it wrote.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Mark<'a> {
    /// A merge: the LastUpdatedTime it sent (100 ns resolution).
    LastUpdated(OffsetDateTime),
    /// A create: the ExecutionId and CreatedTime it sent.
    Created {
        execution_id: &'a str,
        created_time: OffsetDateTime,
    },
    /// A delete: the row is gone.
    Deleted,
}

impl Mark<'_> {
    fn columns(&self) -> &'static [&'static str] {
        use crate::format::columns::{CREATED_TIME, EXECUTION_ID, LAST_UPDATED_TIME};
        match self {
            Mark::LastUpdated(_) => &[LAST_UPDATED_TIME],
            Mark::Created { .. } => &[EXECUTION_ID, CREATED_TIME],
            Mark::Deleted => &[ROW_KEY],
        }
    }

    fn matches(&self, found: &InstanceStatus) -> bool {
        use crate::format::time::format_time;
        match self {
            Mark::LastUpdated(sent) => found.last_updated_time == *sent,
            Mark::Created {
                execution_id,
                created_time,
            } => {
                found.execution_id == *execution_id
                    && format_time(found.created_time) == format_time(*created_time)
            }
            Mark::Deleted => false,
        }
    }
}

/// Keeps the column list of a read in the order the store sends it.
pub(crate) fn with_partition_key(columns: &[&'static str]) -> Vec<&'static str> {
    let mut select = vec![PARTITION_KEY];
    select.extend(columns.iter().filter(|c| **c != PARTITION_KEY));
    select
}

/// A random wait under a ceiling that doubles per attempt, from 8 ms (the
/// first retry) to 256 ms: spreads competing writers apart so one of them wins each round.
pub(crate) fn conflict_backoff(attempt: u32) -> Duration {
    let ceiling_ms = 4u64 << attempt.min(6);
    Duration::from_millis(fastrand::u64(1..=ceiling_ms))
}
