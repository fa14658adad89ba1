//! The rows and merges this crate writes to the Instances table, and how
//! stored rows read back.

use serde_json::Value;
use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::format::columns::*;
use crate::format::time::{format_time, parse_time};
use crate::model::{CustomStatus, JsonText, RuntimeStatus, Tags};

fn put_string(entity: &mut Entity, name: &str, value: impl Into<String>) {
    entity.insert(name.to_owned(), Value::String(value.into()));
}

fn put_time(entity: &mut Entity, name: &str, time: OffsetDateTime) {
    entity.insert(name.to_owned(), Value::String(format_time(time)));
    entity.insert(
        format!("{name}@odata.type"),
        Value::String("Edm.DateTime".into()),
    );
}

/// What a new row holds. Keys and sizes have been validated by the caller.
pub(crate) struct NewRow<'a> {
    pub partition_key: &'a str,
    pub task_hub: &'a str,
    pub name: &'a str,
    pub version: &'a str,
    pub execution_id: &'a str,
    pub status: RuntimeStatus,
    pub input: Option<&'a JsonText>,
    pub tags: &'a Tags,
    pub scheduled_start_time: Option<OffsetDateTime>,
    pub now: OffsetDateTime,
}

/// The full row of a new instance, for an insert or a replace.
pub(crate) fn new_instance_entity(row: &NewRow<'_>) -> Entity {
    let mut entity = Entity::new();
    put_string(&mut entity, PARTITION_KEY, row.partition_key);
    put_string(&mut entity, ROW_KEY, INSTANCE_ROW_KEY);
    put_string(&mut entity, NAME, row.name);
    put_string(&mut entity, VERSION, row.version);
    put_string(&mut entity, EXECUTION_ID, row.execution_id);
    if let Some(input) = row.input {
        put_string(&mut entity, INPUT, input.as_str());
    }
    put_string(&mut entity, CUSTOM_STATUS, NO_CUSTOM_STATUS);
    put_string(&mut entity, RUNTIME_STATUS, row.status.name());
    put_time(&mut entity, CREATED_TIME, row.now);
    put_time(&mut entity, LAST_UPDATED_TIME, row.now);
    if let Some(at) = row.scheduled_start_time {
        put_time(&mut entity, SCHEDULED_START_TIME, at);
    }
    entity.insert(GENERATION.to_owned(), Value::from(0));
    if !row.tags.is_empty() {
        let tags = serde_json::to_string(row.tags).expect("string map serializes");
        put_string(&mut entity, TAGS, tags);
    }
    put_string(&mut entity, TASK_HUB_NAME, row.task_hub);
    entity
}

/// The merge that sets (or, with `None`, clears) the custom status.
pub(crate) fn custom_status_merge(status: Option<&CustomStatus>, now: OffsetDateTime) -> Entity {
    let mut entity = Entity::new();
    put_string(
        &mut entity,
        CUSTOM_STATUS,
        status.map_or(NO_CUSTOM_STATUS, CustomStatus::as_str),
    );
    put_time(&mut entity, LAST_UPDATED_TIME, now);
    entity
}

/// A change of runtime status.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum StateChange {
    /// Pending (or ContinuedAsNew) to Running.
    Start,
    /// Running to Suspended.
    Suspend,
    /// Suspended to Running.
    Resume,
    /// A new execution with new input: ContinuedAsNew, a new execution id,
    /// and the next generation.
    ContinueAsNew {
        /// The new execution's input.
        input: Option<JsonText>,
        /// The new generation. `None`: the stored one plus one, which the
        /// guarded change reads; an unchecked change needs it given.
        generation: Option<i32>,
    },
    /// Completed, with an output.
    Complete {
        /// The orchestration's output.
        output: Option<JsonText>,
    },
    /// Failed, with the error stored as the output (a JSON string).
    Fail {
        /// What went wrong.
        error: String,
    },
    /// Terminated, with the reason stored as the output (a JSON string).
    Terminate {
        /// Why it was terminated.
        reason: String,
    },
}

impl StateChange {
    /// The runtime status this change writes.
    pub fn target_status(&self) -> RuntimeStatus {
        match self {
            StateChange::Start | StateChange::Resume => RuntimeStatus::Running,
            StateChange::Suspend => RuntimeStatus::Suspended,
            StateChange::ContinueAsNew { .. } => RuntimeStatus::ContinuedAsNew,
            StateChange::Complete { .. } => RuntimeStatus::Completed,
            StateChange::Fail { .. } => RuntimeStatus::Failed,
            StateChange::Terminate { .. } => RuntimeStatus::Terminated,
        }
    }

    /// Checks the payload sizes; nothing is sent when this fails.
    pub(crate) fn validate(&self) -> Result<()> {
        // Payload sizes are the store's to check: over 60 KiB they go to a
        // blob (see `store::large`).
        match self {
            StateChange::ContinueAsNew {
                generation: Some(generation),
                ..
            } if *generation < 0 => Err(Error::invalid(
                "generation",
                format!("{generation} is negative"),
            )),
            _ => Ok(()),
        }
    }
}

fn json_string(text: &str) -> String {
    serde_json::to_string(text).expect("a string serializes")
}

/// What a continue-as-new writes besides the status: the new execution.
pub(crate) struct NewExecution<'a> {
    pub execution_id: &'a str,
    pub generation: i32,
}

/// The merge that applies a state change. `execution` is needed by
/// continue-as-new only.
pub(crate) fn state_change_merge(
    change: &StateChange,
    execution: Option<&NewExecution<'_>>,
    now: OffsetDateTime,
) -> Entity {
    let mut entity = Entity::new();
    put_string(&mut entity, RUNTIME_STATUS, change.target_status().name());
    put_time(&mut entity, LAST_UPDATED_TIME, now);
    match change {
        StateChange::Start | StateChange::Suspend | StateChange::Resume => {}
        StateChange::ContinueAsNew { input, .. } => {
            if let Some(execution) = execution {
                put_string(&mut entity, EXECUTION_ID, execution.execution_id);
                entity.insert(GENERATION.to_owned(), Value::from(execution.generation));
            }
            if let Some(input) = input {
                put_string(&mut entity, INPUT, input.as_str());
            }
        }
        StateChange::Complete { output } => {
            if let Some(output) = output {
                put_string(&mut entity, OUTPUT, output.as_str());
            }
            put_time(&mut entity, COMPLETED_TIME, now);
        }
        StateChange::Fail { error } => {
            put_string(&mut entity, OUTPUT, json_string(error));
            put_time(&mut entity, COMPLETED_TIME, now);
        }
        StateChange::Terminate { reason } => {
            put_string(&mut entity, OUTPUT, json_string(reason));
            put_time(&mut entity, COMPLETED_TIME, now);
        }
    }
    entity
}

fn get_time(entity: &Entity, name: &str) -> Option<OffsetDateTime> {
    get_str(entity, name).and_then(parse_time)
}

/// The LastUpdatedTime a write sends: it identifies that write when its
/// response is lost (100 ns resolution).
pub(crate) fn sent_last_updated_time(entity: &Entity) -> Option<OffsetDateTime> {
    get_time(entity, LAST_UPDATED_TIME)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2017-10-06 18:30:24.123456789 UTC);

    #[test]
    fn new_instance_body_is_exactly_the_provider_format() {
        let tags = Tags::from([("team".to_owned(), "a".to_owned())]);
        let input = JsonText::parse("input", r#"{"order":42}"#).unwrap();
        let entity = new_instance_entity(&NewRow {
            partition_key: "order^042",
            task_hub: "MyHub",
            name: "ProcessOrder",
            version: "1.0",
            execution_id: "0123456789abcdef0123456789abcdef",
            status: RuntimeStatus::Pending,
            input: Some(&input),
            tags: &tags,
            scheduled_start_time: None,
            now: NOW,
        });
        assert_eq!(
            Value::Object(entity),
            json!({
                "PartitionKey": "order^042",
                "RowKey": "",
                "Name": "ProcessOrder",
                "Version": "1.0",
                "ExecutionId": "0123456789abcdef0123456789abcdef",
                "Input": "{\"order\":42}",
                "CustomStatus": "null",
                "RuntimeStatus": "Pending",
                "CreatedTime": "2017-10-06T18:30:24.1234567Z",
                "CreatedTime@odata.type": "Edm.DateTime",
                "LastUpdatedTime": "2017-10-06T18:30:24.1234567Z",
                "LastUpdatedTime@odata.type": "Edm.DateTime",
                "Generation": 0,
                "Tags": "{\"team\":\"a\"}",
                "TaskHubName": "MyHub"
            })
        );
    }

    #[test]
    fn custom_status_merge_body() {
        let status = CustomStatus::from_json(r#"{"nextActions":["A","B","C"],"foo":2}"#).unwrap();
        assert_eq!(
            Value::Object(custom_status_merge(Some(&status), NOW)),
            json!({
                "CustomStatus": "{\"nextActions\":[\"A\",\"B\",\"C\"],\"foo\":2}",
                "LastUpdatedTime": "2017-10-06T18:30:24.1234567Z",
                "LastUpdatedTime@odata.type": "Edm.DateTime"
            })
        );
        assert_eq!(
            custom_status_merge(None, NOW)["CustomStatus"],
            json!("null")
        );
    }

    #[test]
    fn state_change_bodies() {
        let merge = |change| Value::Object(state_change_merge(&change, None, NOW));
        assert_eq!(
            merge(StateChange::Suspend),
            json!({
                "RuntimeStatus": "Suspended",
                "LastUpdatedTime": "2017-10-06T18:30:24.1234567Z",
                "LastUpdatedTime@odata.type": "Edm.DateTime"
            })
        );
        assert_eq!(merge(StateChange::Start)["RuntimeStatus"], "Running");
        assert_eq!(merge(StateChange::Resume)["RuntimeStatus"], "Running");
        let completed = merge(StateChange::Complete {
            output: Some(JsonText::from_value(&42).unwrap()),
        });
        assert_eq!(completed["RuntimeStatus"], "Completed");
        assert_eq!(completed["Output"], "42");
        assert_eq!(completed["CompletedTime"], "2017-10-06T18:30:24.1234567Z");
        assert_eq!(completed["CompletedTime@odata.type"], "Edm.DateTime");
        let failed = merge(StateChange::Fail {
            error: "boom \"x\"".into(),
        });
        assert_eq!(failed["RuntimeStatus"], "Failed");
        assert_eq!(failed["Output"], "\"boom \\\"x\\\"\"");
        let terminated = merge(StateChange::Terminate {
            reason: "stop".into(),
        });
        assert_eq!(terminated["RuntimeStatus"], "Terminated");
        assert_eq!(terminated["Output"], "\"stop\"");
        let change = StateChange::ContinueAsNew {
            input: Some(JsonText::from_value(&[1, 2]).unwrap()),
            generation: None,
        };
        let execution = NewExecution {
            execution_id: "e2",
            generation: 3,
        };
        let continued = Value::Object(state_change_merge(&change, Some(&execution), NOW));
        assert_eq!(continued["RuntimeStatus"], "ContinuedAsNew");
        assert_eq!(continued["ExecutionId"], "e2");
        assert_eq!(continued["Input"], "[1,2]");
        assert_eq!(continued["Generation"], 3);
        assert!(continued.get("CompletedTime").is_none());
    }

    #[test]
    fn changes_are_checked_before_sending() {
        // Large payloads are the store's: they go to blobs.
        assert!(StateChange::Fail {
            error: "x".repeat(40_000),
        }
        .validate()
        .is_ok());
        let err = StateChange::ContinueAsNew {
            input: Some(JsonText::from_value(&1).unwrap()),
            generation: Some(-1),
        }
        .validate()
        .unwrap_err();
        assert!(err.to_string().contains("generation"), "{err}");
    }
}
