//! The Instances table format of the Durable Task Azure Storage provider:
//! table names, key escaping, and the entity bodies this crate sends and
//! reads. Pure functions: nothing here does I/O, so the exact bytes sent are
//! unit-tested.

use serde_json::{Map, Value};
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, UtcOffset};

use crate::error::{Error, Result, SizeUnit};
use crate::model::{
    preview, utf16_units, CustomStatus, ETag, InstanceStatus, JsonText, RuntimeStatus, Tags,
};

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

/// Every column but Input and Output: the `$select` of a read that leaves
/// the payloads out.
pub(crate) const COLUMNS_WITHOUT_PAYLOADS: &[&str] = &[
    PARTITION_KEY,
    ROW_KEY,
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
    TASK_HUB_NAME,
];

/// Table Storage's limit on a key: 1 KiB, i.e. 512 UTF-16 code units.
pub const MAX_KEY_UTF16_UNITS: usize = 512;

/// Table Storage's limit on a string property: 64 KiB, i.e. 32,768 UTF-16
/// code units.
pub const MAX_STRING_UTF16_UNITS: usize = 32 * 1024;

/// A task hub's name must fit in `{hub}Instances`, a table name of at most
/// 63 characters.
pub const MAX_TASK_HUB_LEN: usize = 63 - INSTANCES_SUFFIX.len();
const MIN_TASK_HUB_LEN: usize = 3;
const INSTANCES_SUFFIX: &str = "Instances";

/// Checks a task hub name against the table name rules: letters and digits
/// only, starting with a letter, 3 to 54 characters (so that the
/// `{hub}Instances` table name stays within 63).
pub fn validate_task_hub(task_hub: &str) -> Result<()> {
    let len = task_hub.chars().count();
    let well_formed = task_hub.chars().all(|c| c.is_ascii_alphanumeric())
        && task_hub.starts_with(|c: char| c.is_ascii_alphabetic());
    if !well_formed || !(MIN_TASK_HUB_LEN..=MAX_TASK_HUB_LEN).contains(&len) {
        return Err(Error::invalid(
            "task hub",
            format!(
                "{} must be {MIN_TASK_HUB_LEN} to {MAX_TASK_HUB_LEN} ASCII letters and digits, \
                 starting with a letter (it has {len} characters)",
                preview(task_hub)
            ),
        ));
    }
    Ok(())
}

/// The History table of a task hub (written by the Durable Task provider).
pub(crate) fn history_table(task_hub: &str) -> String {
    format!("{task_hub}History")
}

/// The Instances table of a task hub.
pub(crate) fn instances_table(task_hub: &str) -> String {
    format!("{task_hub}{INSTANCES_SUFFIX}")
}

/// Escapes an instance id into a partition key the way the provider does:
/// `^` and the characters Table Storage forbids in keys (`/ \ # ?` and
/// control characters) become `^`-sequences; everything else is kept.
pub fn escape_key(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for c in id.chars() {
        match c {
            '^' => out.push_str("^^"),
            '/' => out.push_str("^0"),
            '\\' => out.push_str("^1"),
            '#' => out.push_str("^2"),
            '?' => out.push_str("^3"),
            c if is_key_control(c) => {
                out.push('^');
                out.push(char::from_u32(c as u32 + 0xC0).expect("control + 0xC0 is a scalar"));
            }
            c => out.push(c),
        }
    }
    out
}

/// Reverses [`escape_key`]. A `^` that starts no known sequence is kept.
pub fn unescape_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    let mut chars = key.chars();
    while let Some(c) = chars.next() {
        if c != '^' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('^') => out.push('^'),
            Some('0') => out.push('/'),
            Some('1') => out.push('\\'),
            Some('2') => out.push('#'),
            Some('3') => out.push('?'),
            Some(next) if next as u32 >= 0xC0 => {
                match char::from_u32(next as u32 - 0xC0).filter(|c| is_key_control(*c)) {
                    Some(control) => out.push(control),
                    None => {
                        out.push('^');
                        out.push(next);
                    }
                }
            }
            Some(next) => {
                out.push('^');
                out.push(next);
            }
            None => out.push('^'),
        }
    }
    out
}

fn is_key_control(c: char) -> bool {
    matches!(c as u32, 0x00..=0x1F | 0x7F..=0x9F)
}

/// Validates an instance id and returns its partition key.
pub(crate) fn partition_key(instance_id: &str) -> Result<String> {
    if instance_id.is_empty() {
        return Err(Error::invalid("instance id", "must not be empty"));
    }
    let key = escape_key(instance_id);
    let units = utf16_units(&key);
    if units > MAX_KEY_UTF16_UNITS {
        return Err(Error::TooLarge {
            field: "instance id",
            actual: units,
            limit: MAX_KEY_UTF16_UNITS,
            unit: SizeUnit::Utf16Units,
        });
    }
    Ok(key)
}

/// Checks that a payload column fits in one string property.
pub(crate) fn check_payload(field: &'static str, text: &str) -> Result<()> {
    let units = utf16_units(text);
    if units > MAX_STRING_UTF16_UNITS {
        return Err(Error::TooLarge {
            field,
            actual: units,
            limit: MAX_STRING_UTF16_UNITS,
            unit: SizeUnit::Utf16Units,
        });
    }
    Ok(())
}

/// Formats a time as Table Storage's DateTime text: RFC 3339 in UTC with
/// seven fractional digits (its 100 ns resolution).
///
/// The time must be representable in UTC ([`to_utc`] checks it).
pub(crate) fn format_time(time: OffsetDateTime) -> String {
    let utc = to_utc(time).unwrap_or(time);
    let utc = utc
        .replace_nanosecond(utc.nanosecond() / 100 * 100)
        .expect("nanosecond in range");
    utc.format(format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:7]Z"
    ))
    .expect("a UTC time formats")
}

pub(crate) fn parse_time(text: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(text, &Rfc3339).ok().and_then(to_utc)
}

/// The same instant in UTC, if it falls in years 1 to 9999 there (what Table
/// Storage's DateTime holds); `None` otherwise.
pub(crate) fn to_utc(time: OffsetDateTime) -> Option<OffsetDateTime> {
    time.checked_to_offset(UtcOffset::UTC)
        .filter(|t| (1..=9999).contains(&t.year()))
}

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

/// A change of runtime status, written as one merge.
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
    /// and the generation when the caller knows it.
    ContinueAsNew {
        /// The new execution's input.
        input: Option<JsonText>,
        /// The new generation, if the caller keeps count.
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
        match self {
            StateChange::ContinueAsNew {
                input: Some(input), ..
            } => check_payload("input", input.as_str()),
            StateChange::Complete {
                output: Some(output),
            } => check_payload("output", output.as_str()),
            StateChange::Fail { error } => check_payload("error", &json_string(error)),
            StateChange::Terminate { reason } => check_payload("reason", &json_string(reason)),
            _ => Ok(()),
        }
    }
}

fn json_string(text: &str) -> String {
    serde_json::to_string(text).expect("a string serializes")
}

/// The merge that applies a state change. `new_execution_id` is used by
/// continue-as-new only.
pub(crate) fn state_change_merge(
    change: &StateChange,
    new_execution_id: &str,
    now: OffsetDateTime,
) -> Entity {
    let mut entity = Entity::new();
    put_string(&mut entity, RUNTIME_STATUS, change.target_status().name());
    put_time(&mut entity, LAST_UPDATED_TIME, now);
    match change {
        StateChange::Start | StateChange::Suspend | StateChange::Resume => {}
        StateChange::ContinueAsNew { input, generation } => {
            put_string(&mut entity, EXECUTION_ID, new_execution_id);
            if let Some(input) = input {
                put_string(&mut entity, INPUT, input.as_str());
            }
            if let Some(generation) = generation {
                entity.insert(GENERATION.to_owned(), Value::from(*generation));
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

fn get_str<'a>(entity: &'a Entity, name: &str) -> Option<&'a str> {
    entity.get(name).and_then(Value::as_str)
}

/// A row's partition key (the escaped instance id).
pub(crate) fn row_partition_key(row: &Entity) -> Option<&str> {
    get_str(row, PARTITION_KEY)
}

/// A row's runtime status; absent or unknown text reads as `Unknown`.
pub(crate) fn row_status(row: &Entity) -> RuntimeStatus {
    get_str(row, RUNTIME_STATUS).map_or(RuntimeStatus::Unknown, RuntimeStatus::from_stored)
}

fn get_time(entity: &Entity, name: &str) -> Option<OffsetDateTime> {
    get_str(entity, name).and_then(parse_time)
}

fn get_i32(entity: &Entity, name: &str) -> Option<i32> {
    match entity.get(name)? {
        Value::Number(n) => n.as_i64().and_then(|n| i32::try_from(n).ok()),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// Decodes a stored row. Only a missing partition key is an error: other
/// columns that are absent or malformed (rows written by other tools) take
/// their empty value, and unknown status text reads as `Unknown`.
pub(crate) fn decode_instance(entity: &Entity, etag: ETag) -> Result<InstanceStatus> {
    let instance_id = get_str(entity, PARTITION_KEY)
        .map(unescape_key)
        .ok_or_else(|| Error::Decode {
            instance_id: String::new(),
            reason: "the row has no PartitionKey".into(),
        })?;
    let text = |name| get_str(entity, name).unwrap_or_default().to_owned();
    let optional_text = |name| get_str(entity, name).map(str::to_owned);
    let created_time = get_time(entity, CREATED_TIME).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    Ok(InstanceStatus {
        name: text(NAME),
        version: text(VERSION),
        execution_id: text(EXECUTION_ID),
        runtime_status: row_status(entity),
        input: optional_text(INPUT),
        output: optional_text(OUTPUT),
        custom_status: get_str(entity, CUSTOM_STATUS)
            .filter(|text| *text != NO_CUSTOM_STATUS && !text.is_empty())
            .map(|text| CustomStatus::from_stored(text.to_owned())),
        created_time,
        last_updated_time: get_time(entity, LAST_UPDATED_TIME).unwrap_or(created_time),
        completed_time: get_time(entity, COMPLETED_TIME),
        scheduled_start_time: get_time(entity, SCHEDULED_START_TIME),
        generation: get_i32(entity, GENERATION).unwrap_or(0),
        tags: get_str(entity, TAGS)
            .and_then(|text| serde_json::from_str(text).ok())
            .unwrap_or_default(),
        etag,
        instance_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2017-10-06 18:30:24.123456789 UTC);

    #[test]
    fn reserved_characters_are_escaped() {
        assert_eq!(escape_key("a/b"), "a^0b");
        assert_eq!(escape_key("a\\b"), "a^1b");
        assert_eq!(escape_key("a#b"), "a^2b");
        assert_eq!(escape_key("a?b"), "a^3b");
        assert_eq!(escape_key("a^b"), "a^^b");
        assert_eq!(escape_key("^0"), "^^0");
        assert_eq!(escape_key("plain-id_1.2:3"), "plain-id_1.2:3");
    }

    #[test]
    fn quotes_are_kept_in_keys() {
        // Quotes are legal in keys; the storage client doubles them in URLs.
        assert_eq!(escape_key("it's \"x\""), "it's \"x\"");
    }

    #[test]
    fn every_control_character_is_escaped_by_offset_c0() {
        for code in (0x00..=0x1Fu32).chain(0x7F..=0x9F) {
            let c = char::from_u32(code).unwrap();
            let escaped = escape_key(&c.to_string());
            let expected: String = ['^', char::from_u32(code + 0xC0).unwrap()].iter().collect();
            assert_eq!(escaped, expected, "U+{code:04X}");
            assert_eq!(unescape_key(&escaped), c.to_string(), "U+{code:04X}");
        }
        // Neighbours of the control ranges are kept.
        assert_eq!(escape_key(" ~\u{A0}"), " ~\u{A0}");
        assert_eq!(escape_key("\u{0}"), "^\u{C0}");
        assert_eq!(escape_key("\t"), "^\u{C9}");
    }

    #[test]
    fn unescape_reverses_each_sequence() {
        assert_eq!(unescape_key("^^^0^1^2^3"), "^/\\#?");
        // A lone or unknown sequence is kept as it is.
        assert_eq!(unescape_key("a^"), "a^");
        assert_eq!(unescape_key("a^x"), "a^x");
    }

    proptest! {
        #[test]
        fn escape_round_trips(id in any::<String>()) {
            prop_assert_eq!(unescape_key(&escape_key(&id)), id);
        }

        #[test]
        fn escaped_keys_hold_no_forbidden_character(id in any::<String>()) {
            let key = escape_key(&id);
            prop_assert!(!key.chars().any(|c| matches!(c, '/' | '\\' | '#' | '?') || is_key_control(c)));
        }
    }

    #[test]
    fn key_length_is_checked_after_escaping() {
        assert!(partition_key(&"a".repeat(512)).is_ok());
        // 256 slashes escape to 512 units: fine; 257 do not fit.
        assert!(partition_key(&"/".repeat(256)).is_ok());
        match partition_key(&"/".repeat(257)) {
            Err(Error::TooLarge {
                field,
                actual,
                limit,
                ..
            }) => {
                assert_eq!((field, actual, limit), ("instance id", 514, 512));
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
        // Characters outside the BMP count two units each.
        assert!(partition_key(&"😀".repeat(256)).is_ok());
        assert!(partition_key(&"😀".repeat(257)).is_err());
        assert!(matches!(
            partition_key(""),
            Err(Error::Invalid {
                field: "instance id",
                ..
            })
        ));
    }

    #[test]
    fn task_hub_names_follow_table_name_rules() {
        for good in ["abc", "TestHubName", "Hub1", &"h".repeat(54)] {
            assert!(validate_task_hub(good).is_ok(), "{good}");
        }
        for bad in ["", "ab", "1hub", "my-hub", "hub_1", "hüb", &"h".repeat(55)] {
            let err = validate_task_hub(bad).unwrap_err();
            assert!(err.to_string().contains("task hub"), "{err}");
        }
        assert_eq!(instances_table("TestHubName"), "TestHubNameInstances");
    }

    #[test]
    fn times_are_rfc3339_utc_with_seven_digits() {
        assert_eq!(format_time(NOW), "2017-10-06T18:30:24.1234567Z");
        let offset = datetime!(2017-10-06 20:30:24 +2);
        assert_eq!(format_time(offset), "2017-10-06T18:30:24.0000000Z");
        assert_eq!(
            parse_time("2017-10-06T18:30:24.1234567Z")
                .map(format_time)
                .as_deref(),
            Some("2017-10-06T18:30:24.1234567Z")
        );
    }

    #[test]
    fn times_outside_table_storage_range_are_refused_not_panics() {
        assert_eq!(parse_time("9999-12-31T23:30:00-01:00"), None);
        assert_eq!(parse_time("0001-01-01T00:30:00+01:00"), None);
        assert_eq!(to_utc(datetime!(9999-12-31 23:30 -1)), None);
        assert!(to_utc(datetime!(9999-12-31 22:30 -1)).is_some());
    }

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
        let merge = |change| Value::Object(state_change_merge(&change, "e2", NOW));
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
        let continued = merge(StateChange::ContinueAsNew {
            input: Some(JsonText::from_value(&[1, 2]).unwrap()),
            generation: Some(3),
        });
        assert_eq!(continued["RuntimeStatus"], "ContinuedAsNew");
        assert_eq!(continued["ExecutionId"], "e2");
        assert_eq!(continued["Input"], "[1,2]");
        assert_eq!(continued["Generation"], 3);
        assert!(continued.get("CompletedTime").is_none());
    }

    #[test]
    fn payload_limit_is_32768_utf16_units() {
        assert!(check_payload("input", &"a".repeat(32_768)).is_ok());
        let err = check_payload("input", &"a".repeat(32_769)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "input is too large: 32769 UTF-16 code units, the limit is 32768 UTF-16 code units"
        );
        let err = StateChange::Fail {
            error: "x".repeat(40_000),
        }
        .validate()
        .unwrap_err();
        assert!(err.to_string().starts_with("error is too large"), "{err}");
    }

    #[test]
    fn decode_reads_what_other_tools_write() {
        let entity: Entity = serde_json::from_value(json!({
            "PartitionKey": "a^0b",
            "RowKey": "",
            "Name": "N",
            "RuntimeStatus": "SomethingNew",
            "CustomStatus": "null",
            "CreatedTime": "2017-10-06T18:30:24Z",
            "Generation": "7",
            "Tags": "not json"
        }))
        .unwrap();
        let status = decode_instance(&entity, ETag::new("W/\"1\"")).unwrap();
        assert_eq!(status.instance_id, "a/b");
        assert_eq!(status.runtime_status, RuntimeStatus::Unknown);
        assert_eq!(status.custom_status, None);
        assert_eq!(status.created_time, datetime!(2017-10-06 18:30:24 UTC));
        assert_eq!(status.last_updated_time, status.created_time);
        assert_eq!(status.generation, 7);
        assert!(status.tags.is_empty());
        assert_eq!(status.input, None);
        assert!(decode_instance(&Entity::new(), ETag::new("x")).is_err());
    }
}
