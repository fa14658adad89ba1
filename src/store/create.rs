//! Creating an instance.

use serde::Serialize;
use time::OffsetDateTime;

use super::conflict::Mark;
use super::InstanceStore;
use crate::error::{Error, Result};
use crate::format::columns::{INSTANCE_ROW_KEY, RUNTIME_STATUS};
use crate::format::entity::{new_instance_entity, NewRow};
use crate::format::keys::partition_key;
use crate::model::{ETag, JsonText, RuntimeStatus, Tags, WriteCondition};

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

/// What a create wrote: what a caller needs to go on.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Created {
    /// The new row's version, for a conditional write next.
    pub etag: ETag,
    /// The execution id: the one given, or the one generated.
    pub execution_id: String,
    /// The CreatedTime stored (UTC, 100 ns resolution).
    pub created_time: OffsetDateTime,
}

impl InstanceStore {
    /// Creates an instance: one insert. [`Error::AlreadyExists`] when the id
    /// is taken (after one read, for its status), unless
    /// [`NewInstance::overwrite_terminal`] allows replacing a terminal one
    /// (then: a read of its status and an ETag-guarded replace).
    pub async fn create(&self, new: NewInstance) -> Result<Created> {
        let pk = partition_key(&new.instance_id)?;
        if !matches!(new.status, RuntimeStatus::Pending | RuntimeStatus::Running) {
            return Err(Error::invalid(
                "runtime status",
                format!("a new instance is Pending or Running, not {}", new.status),
            ));
        }
        let execution_id = new.execution_id.clone().unwrap_or_else(new_execution_id);
        // Table Storage keeps 100 ns: what is read back is this exact time.
        let now = OffsetDateTime::now_utc();
        let created_time = now
            .replace_nanosecond(now.nanosecond() / 100 * 100)
            .expect("nanosecond in range");
        let mut entity = new_instance_entity(&NewRow {
            partition_key: &pk,
            task_hub: &self.task_hub,
            name: &new.name,
            version: &new.version,
            execution_id: &execution_id,
            status: new.status,
            input: new.input.as_ref(),
            tags: &new.tags,
            scheduled_start_time: new.scheduled_start_time,
            now: created_time,
        });
        // An input over 60 KiB goes to its blob first; the row holds its URL.
        self.offload_large_payloads(&pk, &mut entity).await?;
        let mark = Mark::Created {
            execution_id: &execution_id,
            created_time,
        };
        let created = |etag| Created {
            etag,
            execution_id: execution_id.clone(),
            created_time,
        };
        let condition = WriteCondition::Unconditional;
        let inserted = self.client.insert(&entity).await;
        match self
            .settle(&new.instance_id, &pk, inserted, &condition, mark, |e| e)
            .await
        {
            Ok(etag) => return Ok(created(etag)),
            Err(Error::Storage { status: 409, .. }) => {}
            Err(other) => return Err(other),
        }
        // Taken: by a terminal instance that may be replaced, or not.
        self.retry_on_conflict(|| async {
            let Some(found) = self.read(&pk, Some(&[RUNTIME_STATUS])).await? else {
                // Deleted since: insert once more.
                let inserted = self.client.insert(&entity).await;
                return self
                    .settle(&new.instance_id, &pk, inserted, &condition, mark, |e| e)
                    .await
                    .map_err(|e| match e {
                        Error::Storage { status: 409, .. } => Error::conflict(&new.instance_id),
                        other => other,
                    });
            };
            let status = found.runtime_status;
            if !new.overwrite_terminal || !status.is_terminal() {
                return Err(Error::AlreadyExists {
                    instance_id: new.instance_id.clone(),
                    status: Some(status),
                });
            }
            let guard = WriteCondition::IfMatch(found.etag);
            let replaced = self
                .client
                .replace(&pk, INSTANCE_ROW_KEY, &entity, &guard)
                .await;
            self.settle(&new.instance_id, &pk, replaced, &guard, mark, |e| e)
                .await
                // Deleted since it was read: start over, and insert.
                .map_err(|e| match e {
                    Error::NotFound { .. } => Error::conflict(&new.instance_id),
                    other => other,
                })
        })
        .await
        .map(created)
    }
}

pub(crate) fn new_execution_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}
