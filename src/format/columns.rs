//! The columns of an Instances row, as the Durable Task provider names them.

use serde_json::{Map, Value};

/// An entity as sent to or read from the table service: property name to
/// JSON value, with `@odata.type` annotations beside typed values.
pub(crate) type Entity = Map<String, Value>;

pub(crate) const PARTITION_KEY: &str = "PartitionKey";
pub(crate) const ROW_KEY: &str = "RowKey";
pub(crate) const NAME: &str = "Name";
pub(crate) const VERSION: &str = "Version";
pub(crate) const EXECUTION_ID: &str = "ExecutionId";
pub(crate) const INPUT: &str = "Input";
pub(crate) const OUTPUT: &str = "Output";
/// The relative name of the blob that holds the input of a new instance
/// whose Input column the provider left empty.
pub(crate) const INPUT_BLOB_NAME: &str = "InputBlobName";
pub(crate) const CUSTOM_STATUS: &str = "CustomStatus";
pub(crate) const RUNTIME_STATUS: &str = "RuntimeStatus";
pub(crate) const CREATED_TIME: &str = "CreatedTime";
pub(crate) const LAST_UPDATED_TIME: &str = "LastUpdatedTime";
pub(crate) const COMPLETED_TIME: &str = "CompletedTime";
pub(crate) const SCHEDULED_START_TIME: &str = "ScheduledStartTime";
pub(crate) const GENERATION: &str = "Generation";
pub(crate) const TAGS: &str = "Tags";
pub(crate) const TASK_HUB_NAME: &str = "TaskHubName";

/// The one row key of every Instances row.
pub(crate) const INSTANCE_ROW_KEY: &str = "";

/// The text the provider stores for "no custom status": a merge cannot
/// remove a property, so clearing writes this instead.
pub(crate) const NO_CUSTOM_STATUS: &str = "null";

/// The columns a status is read from, but the payloads (Input, its
/// InputBlobName, Output): the `$select` of a read that leaves them out.
/// RowKey (always empty), TaskHubName and Timestamp are never decoded, so
/// no read asks for them.
pub(crate) const COLUMNS_WITHOUT_PAYLOADS: &[&str] = &[
    PARTITION_KEY,
    NAME,
    VERSION,
    EXECUTION_ID,
    CUSTOM_STATUS,
    RUNTIME_STATUS,
    CREATED_TIME,
    LAST_UPDATED_TIME,
    COMPLETED_TIME,
    SCHEDULED_START_TIME,
    GENERATION,
    TAGS,
];

/// A string column of a row, if present and a string.
pub(crate) fn get_str<'a>(entity: &'a Entity, name: &str) -> Option<&'a str> {
    entity.get(name).and_then(Value::as_str)
}
