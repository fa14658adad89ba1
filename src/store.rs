//! The instance store: create, read, update and delete status records of one
//! task hub, each in the fewest requests it can.

use std::time::Duration;

use serde::Serialize;
use time::OffsetDateTime;

use crate::config::{StorageConfig, StoreOptions};
use crate::error::{Error, Result};
use crate::model::{
    CustomStatus, ETag, InstanceStatus, JsonText, RuntimeStatus, Tags, WriteCondition,
};
use crate::storage_client::TableClient;
use crate::wire::{self, StateChange, INSTANCE_ROW_KEY};

/// A new instance to create.
#[derive(Debug, Clone)]
pub struct NewInstance {
    instance_id: String,
    name: String,
    version: String,
    input: Option<JsonText>,
    tags: Tags,
    status: RuntimeStatus,
    execution_id: Option<String>,
    scheduled_start_time: Option<OffsetDateTime>,
    overwrite_terminal: bool,
}

impl NewInstance {
    /// A Pending instance of orchestrator `name`, with no input.
    pub fn new(instance_id: impl Into<String>, name: impl Into<String>) -> Self {
        NewInstance {
            instance_id: instance_id.into(),
            name: name.into(),
            version: String::new(),
            input: None,
            tags: Tags::new(),
            status: RuntimeStatus::Pending,
            execution_id: None,
            scheduled_start_time: None,
            overwrite_terminal: false,
        }
    }

    /// Sets the orchestration version.
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = version.into();
        self
    }

    /// Sets the input, already serialized.
    pub fn input(mut self, input: JsonText) -> Self {
        self.input = Some(input);
        self
    }

    /// Serializes a value as the input.
    pub fn input_value<T: Serialize + ?Sized>(self, input: &T) -> Result<Self> {
        Ok(self.input(JsonText::from_value(input)?))
    }

    /// Adds a tag.
    pub fn tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.tags.insert(key.into(), value.into());
        self
    }

    /// Creates it Running rather than Pending. Only these two are accepted.
    pub fn status(mut self, status: RuntimeStatus) -> Self {
        self.status = status;
        self
    }

    /// Sets the execution id; a random one (32 hex digits) otherwise.
    pub fn execution_id(mut self, execution_id: impl Into<String>) -> Self {
        self.execution_id = Some(execution_id.into());
        self
    }

    /// Records a delayed start time.
    pub fn scheduled_start_time(mut self, at: OffsetDateTime) -> Self {
        self.scheduled_start_time = Some(at);
        self
    }

    /// Lets the create replace an existing instance with this id, but only
    /// when that one is terminal (Completed, Failed, Canceled, Terminated).
    pub fn overwrite_terminal(mut self, overwrite: bool) -> Self {
        self.overwrite_terminal = overwrite;
        self
    }
}

/// What a read returns of the payload columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadOptions {
    /// Read the Input column.
    pub include_input: bool,
    /// Read the Output column.
    pub include_output: bool,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            include_input: true,
            include_output: true,
        }
    }
}

impl ReadOptions {
    /// Leaves input and output out: a `$select` of the other columns.
    pub fn without_payloads() -> Self {
        ReadOptions {
            include_input: false,
            include_output: false,
        }
    }

    pub(crate) fn select(&self) -> Option<Vec<&'static str>> {
        if self.include_input && self.include_output {
            return None;
        }
        let mut columns = wire::COLUMNS_WITHOUT_PAYLOADS.to_vec();
        if self.include_input {
            columns.push(wire::INPUT);
        }
        if self.include_output {
            columns.push(wire::OUTPUT);
        }
        Some(columns)
    }
}

/// The status records of one task hub, in its `{TaskHub}Instances` table.
///
/// Cheap to clone: clones share one connection pool.
#[derive(Debug, Clone)]
pub struct InstanceStore {
    pub(crate) client: TableClient,
    pub(crate) task_hub: String,
    pub(crate) options: StoreOptions,
}

impl InstanceStore {
    /// Opens the store of `task_hub` with default options, creating its
    /// Instances table when missing.
    pub async fn connect(config: &StorageConfig, task_hub: &str) -> Result<Self> {
        Self::connect_with(config, task_hub, StoreOptions::default()).await
    }

    /// Opens the store with options; an option out of range (a custom status
    /// limit above 64 KiB) is refused before any request.
    pub async fn connect_with(
        config: &StorageConfig,
        task_hub: &str,
        options: StoreOptions,
    ) -> Result<Self> {
        wire::validate_task_hub(task_hub)?;
        options.validate()?;
        let client = TableClient::new(config, &wire::instances_table(task_hub), &options)?;
        client.create_table_if_missing().await?;
        Ok(InstanceStore {
            client,
            task_hub: task_hub.to_owned(),
            options,
        })
    }

    /// Opens the store of `task_hub` without creating its table or sending
    /// anything: reads of a task hub that does not exist find nothing.
    pub fn open(config: &StorageConfig, task_hub: &str, options: StoreOptions) -> Result<Self> {
        wire::validate_task_hub(task_hub)?;
        options.validate()?;
        let client = TableClient::new(config, &wire::instances_table(task_hub), &options)?;
        Ok(InstanceStore {
            client,
            task_hub: task_hub.to_owned(),
            options,
        })
    }

    /// The store of another task hub of the same account, sharing this
    /// one's connection pool and options. Sends nothing; the table is not
    /// created.
    pub fn task_hub_store(&self, task_hub: &str) -> Result<Self> {
        wire::validate_task_hub(task_hub)?;
        Ok(InstanceStore {
            client: self.client.sibling(&wire::instances_table(task_hub)),
            task_hub: task_hub.to_owned(),
            options: self.options.clone(),
        })
    }

    /// The task hub's name.
    pub fn task_hub(&self) -> &str {
        &self.task_hub
    }

    /// The options in force.
    pub fn options(&self) -> &StoreOptions {
        &self.options
    }

    /// Creates an instance: one insert. [`Error::AlreadyExists`] when the id
    /// is taken, unless [`NewInstance::overwrite_terminal`] allows replacing
    /// a terminal one (then: a read of its status and an ETag-guarded replace).
    pub async fn create(&self, new: NewInstance) -> Result<ETag> {
        let pk = wire::partition_key(&new.instance_id)?;
        if !matches!(new.status, RuntimeStatus::Pending | RuntimeStatus::Running) {
            return Err(Error::invalid(
                "runtime status",
                format!("a new instance is Pending or Running, not {}", new.status),
            ));
        }
        if let Some(input) = &new.input {
            wire::check_payload("input", input.as_str())?;
        }
        let execution_id = new.execution_id.clone().unwrap_or_else(new_execution_id);
        let now = OffsetDateTime::now_utc();
        let entity = wire::new_instance_entity(&wire::NewRow {
            partition_key: &pk,
            task_hub: &self.task_hub,
            name: &new.name,
            version: &new.version,
            execution_id: &execution_id,
            status: new.status,
            input: new.input.as_ref(),
            tags: &new.tags,
            scheduled_start_time: new.scheduled_start_time,
            now,
        });
        let already_exists = |status| Error::AlreadyExists {
            instance_id: new.instance_id.clone(),
            status,
        };
        let columns = [
            wire::PARTITION_KEY,
            wire::RUNTIME_STATUS,
            wire::EXECUTION_ID,
            wire::CREATED_TIME,
        ];
        let mut attempt = 0;
        let mut written = self.client.insert(&entity).await;
        loop {
            match written {
                Ok(etag) => return Ok(etag),
                // Taken, or changed since it was read: look at the row.
                Err(Error::Storage {
                    status: 409 | 412, ..
                }) => {}
                Err(e) => return Err(self.write_error(e, &new.instance_id)),
            }
            if attempt >= self.options.conflict_retries {
                return Err(Error::Conflict {
                    instance_id: new.instance_id.clone(),
                });
            }
            attempt += 1;
            written = match self
                .client
                .get(&pk, INSTANCE_ROW_KEY, Some(&columns))
                .await?
            {
                Some((row, etag)) => {
                    let found = wire::decode_instance(&row, etag.clone())?;
                    // This very write, retried after its response was lost.
                    if found.execution_id == execution_id
                        && wire::format_time(found.created_time) == wire::format_time(now)
                    {
                        return Ok(etag);
                    }
                    let status = found.runtime_status;
                    if !new.overwrite_terminal || !status.is_terminal() {
                        return Err(already_exists(Some(status)));
                    }
                    self.client
                        .replace(
                            &pk,
                            INSTANCE_ROW_KEY,
                            &entity,
                            &WriteCondition::IfMatch(etag),
                        )
                        .await
                }
                // Deleted since: insert once more.
                None => self.client.insert(&entity).await,
            };
        }
    }

    /// Reads one instance: one request. `Ok(None)` when it does not exist.
    pub async fn get(&self, instance_id: &str) -> Result<Option<InstanceStatus>> {
        self.get_with(instance_id, ReadOptions::default()).await
    }

    /// Reads one instance, leaving out the payload columns the options say.
    pub async fn get_with(
        &self,
        instance_id: &str,
        options: ReadOptions,
    ) -> Result<Option<InstanceStatus>> {
        let pk = wire::partition_key(instance_id)?;
        let select = options.select();
        match self
            .client
            .get(&pk, INSTANCE_ROW_KEY, select.as_deref())
            .await?
        {
            Some((row, etag)) => wire::decode_instance(&row, etag).map(Some),
            None => Ok(None),
        }
    }

    /// Sets the custom status (or clears it, with `None`): one merge,
    /// whatever the row's version. The size is checked against the store's
    /// limit before anything is sent.
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
    /// up to [`StoreOptions::conflict_retries`] times. `update` may be called
    /// more than once; an error from it stops the loop and is returned.
    pub async fn update_custom_status<F>(&self, instance_id: &str, mut update: F) -> Result<ETag>
    where
        F: FnMut(Option<&CustomStatus>) -> Result<Option<CustomStatus>>,
    {
        let pk = wire::partition_key(instance_id)?;
        let columns = [wire::PARTITION_KEY, wire::CUSTOM_STATUS];
        let mut attempt = 0;
        loop {
            let (row, etag) = self
                .client
                .get(&pk, INSTANCE_ROW_KEY, Some(&columns))
                .await?
                .ok_or_else(|| Error::NotFound {
                    instance_id: instance_id.to_owned(),
                })?;
            let current = wire::decode_instance(&row, etag.clone())?.custom_status;
            let next = update(current.as_ref())?;
            // A 412 is checked at once for a retried write of our own (see
            // merge_row): only a write that really lost is tried again.
            match self
                .write_custom_status(instance_id, next.as_ref(), &WriteCondition::IfMatch(etag))
                .await
            {
                Err(Error::Conflict { .. }) if attempt < self.options.conflict_retries => {
                    attempt += 1;
                    tokio::time::sleep(conflict_backoff(attempt)).await;
                }
                other => return other,
            }
        }
    }

    /// Applies a state change: one merge, unconditional or on an ETag.
    pub async fn change_state(
        &self,
        instance_id: &str,
        change: &StateChange,
        condition: &WriteCondition,
    ) -> Result<ETag> {
        let pk = wire::partition_key(instance_id)?;
        change.validate()?;
        let execution_id = match change {
            StateChange::ContinueAsNew { .. } => new_execution_id(),
            _ => String::new(),
        };
        let entity = wire::state_change_merge(change, &execution_id, OffsetDateTime::now_utc());
        self.merge_row(instance_id, &pk, &entity, condition).await
    }

    /// Applies a state change unless the instance is terminal: reads its
    /// status, then writes on the ETag read, so it cannot turn a run that
    /// finished meanwhile back into another state. [`Error::Terminal`] when
    /// it is terminal, [`Error::NotFound`] when absent. Two requests.
    pub async fn change_state_unless_terminal(
        &self,
        instance_id: &str,
        change: &StateChange,
    ) -> Result<ETag> {
        let pk = wire::partition_key(instance_id)?;
        change.validate()?;
        let mut attempt = 0;
        loop {
            let (row, etag) = self
                .client
                .get(
                    &pk,
                    INSTANCE_ROW_KEY,
                    Some(&[wire::PARTITION_KEY, wire::RUNTIME_STATUS]),
                )
                .await?
                .ok_or_else(|| Error::NotFound {
                    instance_id: instance_id.to_owned(),
                })?;
            let status = wire::decode_instance(&row, etag.clone())?.runtime_status;
            if status.is_terminal() {
                return Err(Error::Terminal {
                    instance_id: instance_id.to_owned(),
                    status,
                });
            }
            match self
                .change_state(instance_id, change, &WriteCondition::IfMatch(etag))
                .await
            {
                Err(Error::Conflict { .. }) if attempt < self.options.conflict_retries => {
                    attempt += 1;
                    tokio::time::sleep(conflict_backoff(attempt)).await;
                }
                other => return other,
            }
        }
    }

    /// Pending to Running.
    pub async fn start(&self, instance_id: &str) -> Result<ETag> {
        self.change_state(
            instance_id,
            &StateChange::Start,
            &WriteCondition::Unconditional,
        )
        .await
    }

    /// To Suspended.
    pub async fn suspend(&self, instance_id: &str) -> Result<ETag> {
        self.change_state(
            instance_id,
            &StateChange::Suspend,
            &WriteCondition::Unconditional,
        )
        .await
    }

    /// Suspended to Running.
    pub async fn resume(&self, instance_id: &str) -> Result<ETag> {
        self.change_state(
            instance_id,
            &StateChange::Resume,
            &WriteCondition::Unconditional,
        )
        .await
    }

    /// A new execution: ContinuedAsNew with a new execution id and input.
    pub async fn continue_as_new(
        &self,
        instance_id: &str,
        input: Option<JsonText>,
    ) -> Result<ETag> {
        let change = StateChange::ContinueAsNew {
            input,
            generation: None,
        };
        self.change_state(instance_id, &change, &WriteCondition::Unconditional)
            .await
    }

    /// Completed, with an output; sets CompletedTime.
    pub async fn complete(&self, instance_id: &str, output: Option<JsonText>) -> Result<ETag> {
        self.change_state(
            instance_id,
            &StateChange::Complete { output },
            &WriteCondition::Unconditional,
        )
        .await
    }

    /// Failed, with the error as the output; sets CompletedTime.
    pub async fn fail(&self, instance_id: &str, error: &str) -> Result<ETag> {
        let change = StateChange::Fail {
            error: error.to_owned(),
        };
        self.change_state(instance_id, &change, &WriteCondition::Unconditional)
            .await
    }

    /// Terminated, with the reason as the output; sets CompletedTime.
    pub async fn terminate(&self, instance_id: &str, reason: &str) -> Result<ETag> {
        let change = StateChange::Terminate {
            reason: reason.to_owned(),
        };
        self.change_state(instance_id, &change, &WriteCondition::Unconditional)
            .await
    }

    /// Deletes an instance's row: one request. `Ok(false)` when it did not
    /// exist.
    pub async fn delete(&self, instance_id: &str) -> Result<bool> {
        self.delete_with(instance_id, &WriteCondition::Unconditional)
            .await
    }

    /// Deletes an instance's row if the condition holds; [`Error::Conflict`]
    /// when the row changed since `etag` was read.
    pub async fn delete_with(&self, instance_id: &str, condition: &WriteCondition) -> Result<bool> {
        let pk = wire::partition_key(instance_id)?;
        self.client
            .delete(&pk, INSTANCE_ROW_KEY, condition)
            .await
            .map_err(|e| self.write_error(e, instance_id))
    }

    async fn write_custom_status(
        &self,
        instance_id: &str,
        status: Option<&CustomStatus>,
        condition: &WriteCondition,
    ) -> Result<ETag> {
        let pk = wire::partition_key(instance_id)?;
        if let Some(status) = status {
            status.check_size(self.options.custom_status_limit)?;
        }
        let entity = wire::custom_status_merge(status, OffsetDateTime::now_utc());
        self.merge_row(instance_id, &pk, &entity, condition).await
    }

    /// One merge into an instance's row. When a conditional merge answers
    /// 412, one read tells whether the winning write was this very one: a
    /// request retried after its response was lost finds its own write
    /// there. The LastUpdatedTime it sent (100 ns resolution) identifies it.
    async fn merge_row(
        &self,
        instance_id: &str,
        pk: &str,
        entity: &wire::Entity,
        condition: &WriteCondition,
    ) -> Result<ETag> {
        match self
            .client
            .merge(pk, INSTANCE_ROW_KEY, entity, condition)
            .await
        {
            Err(Error::Storage { status: 412, .. }) => {
                let sent = entity
                    .get(wire::LAST_UPDATED_TIME)
                    .and_then(|v| v.as_str())
                    .and_then(wire::parse_time);
                let columns = [wire::PARTITION_KEY, wire::LAST_UPDATED_TIME];
                if let (Some(sent), Some((row, etag))) = (
                    sent,
                    self.client
                        .get(pk, INSTANCE_ROW_KEY, Some(&columns))
                        .await?,
                ) {
                    if wire::decode_instance(&row, etag.clone())?.last_updated_time == sent {
                        return Ok(etag);
                    }
                }
                Err(Error::Conflict {
                    instance_id: instance_id.to_owned(),
                })
            }
            other => other.map_err(|e| self.write_error(e, instance_id)),
        }
    }

    /// Names the instance in the errors a write of an existing row can meet.
    fn write_error(&self, error: Error, instance_id: &str) -> Error {
        match error {
            Error::Storage { status: 404, .. } => Error::NotFound {
                instance_id: instance_id.to_owned(),
            },
            Error::Storage { status: 412, .. } => Error::Conflict {
                instance_id: instance_id.to_owned(),
            },
            other => other,
        }
    }
}

fn new_execution_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// A random wait under a ceiling that doubles per attempt, from 4 ms to
/// 256 ms: spreads competing writers apart so one of them wins each round.
pub(crate) fn conflict_backoff(attempt: u32) -> Duration {
    let ceiling_ms = 4u64 << attempt.min(6);
    Duration::from_millis(fastrand::u64(1..=ceiling_ms))
}
