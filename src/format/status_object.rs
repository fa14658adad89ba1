//! The instance status object of the Durable Functions HTTP API (the body
//! of `GET /instances/{id}`), for any program that serves or prints it:
//! it needs no HTTP server.

use serde::Serialize;
use serde_json::Value;

use crate::format::time::api_time;
use crate::model::InstanceStatus;

/// The JSON object that Durable Functions clients read, with exactly the
/// names and order of the original.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct StatusPayload {
    /// The orchestrator's name.
    pub name: String,
    /// The instance id.
    pub instance_id: String,
    /// The runtime status by name.
    pub runtime_status: &'static str,
    /// The input, as a JSON value (raw text when it is not JSON); null when
    /// absent or when the caller asked not to see it, as the original does.
    pub input: Value,
    /// The custom status, as a JSON value, or null.
    pub custom_status: Value,
    /// The output, as a JSON value, or null.
    pub output: Value,
    /// Creation time, UTC, second precision.
    pub created_time: String,
    /// Last update time, UTC, second precision.
    pub last_updated_time: String,
}

impl StatusPayload {
    /// Builds the payload of a record; `show_input` false shows the input as null.
    pub fn new(status: &InstanceStatus, show_input: bool) -> Self {
        StatusPayload {
            name: status.name.clone(),
            instance_id: status.instance_id.clone(),
            runtime_status: status.runtime_status.name(),
            input: if show_input {
                embed(status.input.as_deref())
            } else {
                Value::Null
            },
            custom_status: embed(status.custom_status.as_ref().map(|c| c.as_str())),
            output: embed(status.output.as_deref()),
            created_time: api_time(status.created_time),
            last_updated_time: api_time(status.last_updated_time),
        }
    }
}

/// Stored text as a JSON value: parsed when it is JSON, the raw string when
/// it is not, null when absent.
pub fn embed(text: Option<&str>) -> Value {
    match text {
        None => Value::Null,
        Some(text) => serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CustomStatus, ETag, RuntimeStatus};
    use serde_json::json;
    use time::macros::datetime;

    fn record() -> InstanceStatus {
        InstanceStatus {
            instance_id: "instance123".into(),
            name: "ProcessOrder".into(),
            version: String::new(),
            execution_id: "e".into(),
            runtime_status: RuntimeStatus::Running,
            input: None,
            output: None,
            custom_status: Some(
                CustomStatus::from_json(r#"{"nextActions":["A","B","C"],"foo":2}"#).unwrap(),
            ),
            created_time: datetime!(2017-10-06 18:30:24.9876543 UTC),
            last_updated_time: datetime!(2017-10-06 21:40:30 +2),
            completed_time: None,
            scheduled_start_time: None,
            generation: 0,
            tags: Default::default(),
            etag: ETag::new("x"),
        }
    }

    #[test]
    fn matches_the_contract_example_exactly() {
        let text = serde_json::to_string(&StatusPayload::new(&record(), true)).unwrap();
        assert_eq!(
            text,
            r#"{"name":"ProcessOrder","instanceId":"instance123","runtimeStatus":"Running","input":null,"customStatus":{"nextActions":["A","B","C"],"foo":2},"output":null,"createdTime":"2017-10-06T18:30:24Z","lastUpdatedTime":"2017-10-06T19:40:30Z"}"#
        );
    }

    #[test]
    fn payloads_are_embedded_as_json_or_raw_text() {
        let mut status = record();
        status.input = Some("{\"a\":1}".into());
        status.output = Some("not json".into());
        let payload = StatusPayload::new(&status, true);
        assert_eq!(payload.input, json!({"a": 1}));
        assert_eq!(payload.output, json!("not json"));
        let hidden = serde_json::to_value(StatusPayload::new(&status, false)).unwrap();
        assert_eq!(hidden["input"], Value::Null, "present, as null");
    }
}
