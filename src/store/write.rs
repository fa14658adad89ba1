//! Writes of an existing instance: the custom status, state changes and
//! deletes.

use time::OffsetDateTime;

use super::conflict::Mark;
use super::create::new_execution_id;
use super::InstanceStore;
use crate::error::{Error, Result};
use crate::format::columns::{
    Entity, CUSTOM_STATUS, GENERATION, INPUT, INSTANCE_ROW_KEY, OUTPUT, RUNTIME_STATUS,
};
use crate::format::entity::{
    custom_status_merge, sent_last_updated_time, state_change_merge, NewExecution, StateChange,
};
use crate::format::keys::partition_key;
use crate::model::{CustomStatus, ETag, JsonText, WriteCondition};

impl InstanceStore {
    /// Sets the custom status (or clears it, with `None`): one merge,
    /// whatever the row's version. The size of its compact form is checked
    /// against the store's limit before anything is sent.
    pub async fn set_custom_status(
        &self,
        instance_id: &str,
        status: Option<&CustomStatus>,
    ) -> Result<ETag> {
        self.write_custom_status(instance_id, status, &WriteCondition::Unconditional)
            .await
    }

    /// Sets the custom status only if the row is still at `etag`: one merge;
    /// [`Error::Conflict`] when another write came first.
    pub async fn set_custom_status_if_match(
        &self,
        instance_id: &str,
        status: Option<&CustomStatus>,
        etag: &ETag,
    ) -> Result<ETag> {
        self.write_custom_status(instance_id, status, &WriteCondition::IfMatch(etag.clone()))
            .await
    }

    /// Read-modify-write of the custom status, retried on conflict: reads the
    /// current custom status (that column only), calls `update` with it, and
    /// writes the result conditionally on the version read. When another
    /// writer came first it waits a random, growing moment and starts over,
    /// up to [`StoreOptions::conflict_retries`](crate::StoreOptions) times.
    /// `update` may be called more than once; an error from it stops the
    /// loop and is returned.
    ///
    /// The change is applied at most once: when a write's answer was lost
    /// and another writer changed the row before the store could look, it
    /// answers [`Error::OutcomeUnknown`] instead of writing again.
    pub async fn update_custom_status<F>(&self, instance_id: &str, mut update: F) -> Result<ETag>
    where
        F: FnMut(Option<&CustomStatus>) -> Result<Option<CustomStatus>>,
    {
        let pk = partition_key(instance_id)?;
        // Each attempt calls `update` once, between its read and its write.
        let update = std::sync::Mutex::new(&mut update);
        self.retry_on_conflict(|| async {
            let current = self
                .read_existing(instance_id, &pk, &[CUSTOM_STATUS])
                .await?;
            let next = (update.lock().expect("not poisoned"))(current.custom_status.as_ref())?;
            let condition = WriteCondition::IfMatch(current.etag);
            self.write_custom_status(instance_id, next.as_ref(), &condition)
                .await
        })
        .await
    }

    /// Applies a state change unless the instance is terminal: reads its
    /// status (and generation, for continue-as-new), then writes on the ETag
    /// read, retried when another writer came first. A terminal instance is
    /// never changed, also when it became terminal between the read and the
    /// write: [`Error::Terminal`], and the row is as it was.
    /// [`Error::NotFound`] when absent. Two requests.
    pub async fn change_state(&self, instance_id: &str, change: &StateChange) -> Result<ETag> {
        let pk = partition_key(instance_id)?;
        change.validate()?;
        // Large payloads go to their blobs once, whatever the retries.
        let payloads = self.offloaded_payloads(&pk, change).await?;
        let execution_id = new_execution_id();
        let columns: &[&'static str] = match change {
            StateChange::ContinueAsNew { .. } => &[RUNTIME_STATUS, GENERATION],
            _ => &[RUNTIME_STATUS],
        };
        self.retry_on_conflict(|| async {
            let current = self.read_existing(instance_id, &pk, columns).await?;
            if current.runtime_status.is_terminal() {
                return Err(Error::Terminal {
                    instance_id: instance_id.to_owned(),
                    status: current.runtime_status,
                });
            }
            let generation = match next_generation(change) {
                Some(given) => given,
                None => current
                    .generation
                    .checked_add(1)
                    .ok_or_else(|| Error::Decode {
                        instance_id: instance_id.to_owned(),
                        reason: format!("Generation {} cannot count one more", current.generation),
                    })?,
            };
            let execution = NewExecution {
                execution_id: &execution_id,
                generation,
            };
            let mut entity =
                state_change_merge(change, Some(&execution), OffsetDateTime::now_utc());
            entity.extend(payloads.clone());
            let condition = WriteCondition::IfMatch(current.etag);
            self.merge_row(instance_id, &pk, &entity, &condition).await
        })
        .await
    }

    /// Applies a state change if the row is still at `etag` (read by the
    /// caller): one merge, [`Error::Conflict`] otherwise. A continue-as-new
    /// must name its generation.
    pub async fn change_state_if_match(
        &self,
        instance_id: &str,
        change: &StateChange,
        etag: &ETag,
    ) -> Result<ETag> {
        self.change_state_in_one_request(instance_id, change, WriteCondition::IfMatch(etag.clone()))
            .await
    }

    /// Applies a state change whatever the instance's status and version:
    /// one merge, for an engine that owns the instance and knows its state.
    /// It can turn a finished run back into another state; prefer
    /// [`InstanceStore::change_state`]. A continue-as-new must name its
    /// generation.
    pub async fn change_state_unchecked(
        &self,
        instance_id: &str,
        change: &StateChange,
    ) -> Result<ETag> {
        self.change_state_in_one_request(instance_id, change, WriteCondition::Unconditional)
            .await
    }

    async fn change_state_in_one_request(
        &self,
        instance_id: &str,
        change: &StateChange,
        condition: WriteCondition,
    ) -> Result<ETag> {
        let pk = partition_key(instance_id)?;
        change.validate()?;
        let execution_id = new_execution_id();
        let execution = match change {
            StateChange::ContinueAsNew { .. } => Some(NewExecution {
                execution_id: &execution_id,
                generation: next_generation(change).ok_or_else(|| {
                    Error::invalid(
                        "generation",
                        "a continue-as-new in one request cannot read the current generation: \
                         give the new one, or use change_state",
                    )
                })?,
            }),
            _ => None,
        };
        let mut entity = state_change_merge(change, execution.as_ref(), OffsetDateTime::now_utc());
        self.offload_large_payloads(&pk, &mut entity).await?;
        self.merge_row(instance_id, &pk, &entity, &condition).await
    }

    /// The payload columns of a change's merge, each over 60 KiB moved to
    /// its blob (the column then holds the blob's URL).
    async fn offloaded_payloads(&self, pk: &str, change: &StateChange) -> Result<Entity> {
        let merge = state_change_merge(change, None, OffsetDateTime::now_utc());
        let mut payloads: Entity = merge
            .into_iter()
            .filter(|(column, _)| column == INPUT || column == OUTPUT)
            .collect();
        self.offload_large_payloads(pk, &mut payloads).await?;
        Ok(payloads)
    }

    /// Pending to Running, unless terminal.
    pub async fn start(&self, instance_id: &str) -> Result<ETag> {
        self.change_state(instance_id, &StateChange::Start).await
    }

    /// To Suspended, unless terminal.
    pub async fn suspend(&self, instance_id: &str) -> Result<ETag> {
        self.change_state(instance_id, &StateChange::Suspend).await
    }

    /// Suspended to Running, unless terminal.
    pub async fn resume(&self, instance_id: &str) -> Result<ETag> {
        self.change_state(instance_id, &StateChange::Resume).await
    }

    /// A new execution, unless terminal: ContinuedAsNew with a new execution
    /// id, the next generation, and new input.
    pub async fn continue_as_new(
        &self,
        instance_id: &str,
        input: Option<JsonText>,
    ) -> Result<ETag> {
        let change = StateChange::ContinueAsNew {
            input,
            generation: None,
        };
        self.change_state(instance_id, &change).await
    }

    /// Completed, with an output, unless terminal already; sets CompletedTime.
    pub async fn complete(&self, instance_id: &str, output: Option<JsonText>) -> Result<ETag> {
        self.change_state(instance_id, &StateChange::Complete { output })
            .await
    }

    /// Failed, with the error as the output, unless terminal already; sets
    /// CompletedTime.
    pub async fn fail(&self, instance_id: &str, error: &str) -> Result<ETag> {
        let change = StateChange::Fail {
            error: error.to_owned(),
        };
        self.change_state(instance_id, &change).await
    }

    /// Terminated, with the reason as the output, unless terminal already;
    /// sets CompletedTime.
    pub async fn terminate(&self, instance_id: &str, reason: &str) -> Result<ETag> {
        let change = StateChange::Terminate {
            reason: reason.to_owned(),
        };
        self.change_state(instance_id, &change).await
    }

    /// Deletes an instance's row: one request. `Ok(false)` when it did not
    /// exist. (A purge deletes its History too.)
    pub async fn delete(&self, instance_id: &str) -> Result<bool> {
        self.delete_with(instance_id, &WriteCondition::Unconditional)
            .await
    }

    /// Deletes an instance's row if the condition holds; [`Error::Conflict`]
    /// when the row changed since `etag` was read.
    pub async fn delete_with(&self, instance_id: &str, condition: &WriteCondition) -> Result<bool> {
        let pk = partition_key(instance_id)?;
        self.delete_row(instance_id, &pk, condition).await
    }

    /// One delete of an instance's row. Retried after a lost answer, it
    /// finds the row gone: that is this delete's own work.
    pub(crate) async fn delete_row(
        &self,
        instance_id: &str,
        pk: &str,
        condition: &WriteCondition,
    ) -> Result<bool> {
        let written = self.client.delete(pk, INSTANCE_ROW_KEY, condition).await;
        let written = crate::table::Written {
            result: match written.result {
                Ok(false) if written.uncertain => Ok(true),
                other => other,
            },
            uncertain: written.uncertain,
        };
        self.settle(instance_id, pk, written, condition, Mark::Deleted, |_| true)
            .await
    }

    async fn write_custom_status(
        &self,
        instance_id: &str,
        status: Option<&CustomStatus>,
        condition: &WriteCondition,
    ) -> Result<ETag> {
        let pk = partition_key(instance_id)?;
        if let Some(status) = status {
            status.check_size(self.options.custom_status_limit)?;
        }
        let entity = custom_status_merge(status, OffsetDateTime::now_utc());
        self.merge_row(instance_id, &pk, &entity, condition).await
    }

    /// One merge into an instance's row, settled: a merge whose answer was
    /// lost is recognised by the LastUpdatedTime it sent.
    async fn merge_row(
        &self,
        instance_id: &str,
        pk: &str,
        entity: &Entity,
        condition: &WriteCondition,
    ) -> Result<ETag> {
        let sent = sent_last_updated_time(entity).expect("every merge sets LastUpdatedTime");
        let written = self
            .client
            .merge(pk, INSTANCE_ROW_KEY, entity, condition)
            .await;
        self.settle(
            instance_id,
            pk,
            written,
            condition,
            Mark::LastUpdated(sent),
            |etag| etag,
        )
        .await
    }
}

fn next_generation(change: &StateChange) -> Option<i32> {
    match change {
        StateChange::ContinueAsNew { generation, .. } => *generation,
        _ => None,
    }
}
