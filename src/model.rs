//! The status record and its parts, independent of how they are stored.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::Serialize;
use time::OffsetDateTime;

use std::borrow::Cow;

use crate::error::{Error, Result};
use crate::format::json;
use crate::format::limits::{self, utf16_bytes};

/// The runtime status of an orchestration instance, with the names and
/// numeric codes the Durable Task clients use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RuntimeStatus {
    /// Stored text that is not a known status name.
    Unknown,
    /// Running.
    Running,
    /// Completed with an output.
    Completed,
    /// Restarted itself with new input (continue-as-new).
    ContinuedAsNew,
    /// Failed with an error.
    Failed,
    /// Canceled (an old, rarely used terminal state).
    Canceled,
    /// Terminated from outside.
    Terminated,
    /// Created, not started yet.
    Pending,
    /// Suspended from outside; can be resumed.
    Suspended,
}

impl RuntimeStatus {
    /// Every known status, Unknown excluded, in numeric-code order.
    pub const ALL: [RuntimeStatus; 8] = [
        RuntimeStatus::Running,
        RuntimeStatus::Completed,
        RuntimeStatus::ContinuedAsNew,
        RuntimeStatus::Failed,
        RuntimeStatus::Canceled,
        RuntimeStatus::Terminated,
        RuntimeStatus::Pending,
        RuntimeStatus::Suspended,
    ];

    /// The terminal statuses: the instance will not change by itself again.
    pub const TERMINAL: [RuntimeStatus; 4] = [
        RuntimeStatus::Completed,
        RuntimeStatus::Failed,
        RuntimeStatus::Canceled,
        RuntimeStatus::Terminated,
    ];

    /// The name stored in the table and used by the HTTP API.
    pub fn name(self) -> &'static str {
        match self {
            RuntimeStatus::Unknown => "Unknown",
            RuntimeStatus::Running => "Running",
            RuntimeStatus::Completed => "Completed",
            RuntimeStatus::ContinuedAsNew => "ContinuedAsNew",
            RuntimeStatus::Failed => "Failed",
            RuntimeStatus::Canceled => "Canceled",
            RuntimeStatus::Terminated => "Terminated",
            RuntimeStatus::Pending => "Pending",
            RuntimeStatus::Suspended => "Suspended",
        }
    }

    /// The numeric code the durable clients use (`OrchestrationRuntimeStatus`).
    pub fn code(self) -> i32 {
        match self {
            RuntimeStatus::Unknown => -1,
            RuntimeStatus::Running => 0,
            RuntimeStatus::Completed => 1,
            RuntimeStatus::ContinuedAsNew => 2,
            RuntimeStatus::Failed => 3,
            RuntimeStatus::Canceled => 4,
            RuntimeStatus::Terminated => 5,
            RuntimeStatus::Pending => 6,
            RuntimeStatus::Suspended => 7,
        }
    }

    /// The status with this numeric code, if any.
    pub fn from_code(code: i32) -> Option<Self> {
        std::iter::once(RuntimeStatus::Unknown)
            .chain(RuntimeStatus::ALL)
            .find(|status| status.code() == code)
    }

    /// Completed, Failed, Canceled or Terminated.
    pub fn is_terminal(self) -> bool {
        RuntimeStatus::TERMINAL.contains(&self)
    }

    /// Reads a stored status name; text that is not a known name is `Unknown`
    /// rather than an error, so rows written by newer tools stay readable.
    pub fn from_stored(text: &str) -> Self {
        text.parse().unwrap_or(RuntimeStatus::Unknown)
    }
}

impl fmt::Display for RuntimeStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for RuntimeStatus {
    type Err = Error;

    /// Parses a status name, ignoring ASCII case as the durable clients do.
    fn from_str(text: &str) -> Result<Self> {
        std::iter::once(RuntimeStatus::Unknown)
            .chain(RuntimeStatus::ALL)
            .find(|status| status.name().eq_ignore_ascii_case(text.trim()))
            .ok_or_else(|| {
                let valid: Vec<&str> = RuntimeStatus::ALL.iter().map(|s| s.name()).collect();
                Error::invalid(
                    "runtime status",
                    format!("'{text}' is not one of {}", valid.join(", ")),
                )
            })
    }
}

impl Serialize for RuntimeStatus {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

/// An entity tag: the version of a stored row, for optimistic concurrency.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ETag(String);

impl ETag {
    /// Wraps an ETag value as the service sent it.
    pub fn new(value: impl Into<String>) -> Self {
        ETag(value.into())
    }

    /// The value as the service sent it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ETag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ETag({})", self.0)
    }
}

impl fmt::Display for ETag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// When a write may go ahead.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum WriteCondition {
    /// Whatever the row's current version.
    #[default]
    Unconditional,
    /// Only if the row is still at this version; otherwise [`Error::Conflict`].
    IfMatch(ETag),
}

/// Text that is known to be one JSON value (input, output), in its compact
/// form: what Durable Functions measures and stores.
///
/// The compact form has no insignificant whitespace, characters as
/// themselves rather than `\u` escapes (but for `"`, `\` and control
/// characters), numbers exactly as written and keys in their order. Text that
/// could not be read back as the same JSON (a lone surrogate, nesting deeper
/// than [`MAX_JSON_DEPTH`]) is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonText(String);

/// The deepest nesting of arrays and objects a JSON value may have.
pub const MAX_JSON_DEPTH: usize = json::MAX_DEPTH;

impl JsonText {
    /// Serializes a value.
    pub fn from_value<T: Serialize + ?Sized>(value: &T) -> Result<Self> {
        Self::from_value_as("JSON value", value)
    }

    fn from_value_as<T: Serialize + ?Sized>(field: &'static str, value: &T) -> Result<Self> {
        let text =
            serde_json::to_string(value).map_err(|e| Error::invalid(field, e.to_string()))?;
        // serde_json writes the compact form already; this checks the depth.
        Self::parse(field, text)
    }

    /// Takes text that must be one JSON value, and keeps its compact form;
    /// `field` names it in the error.
    pub fn parse(field: &'static str, text: impl Into<String>) -> Result<Self> {
        let text = text.into();
        let compact = match json::compact(&text) {
            // The text itself, or the value without surrounding whitespace.
            Ok(Cow::Borrowed(value)) if value.len() == text.len() => text,
            Ok(Cow::Borrowed(value)) => value.to_owned(),
            Ok(Cow::Owned(compact)) => compact,
            Err(problem) => {
                return Err(Error::invalid(
                    field,
                    format!("not JSON ({problem}): {}", preview(&text)),
                ))
            }
        };
        // What is stored must read back as the same value: a number beyond
        // the range of a double is valid JSON that readers refuse.
        if let Err(e) = serde_json::from_str::<serde_json::Value>(&compact) {
            return Err(Error::invalid(
                field,
                format!("cannot be read back ({e}): {}", preview(&compact)),
            ));
        }
        Ok(JsonText(compact))
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The JSON text, owned.
    pub fn into_string(self) -> String {
        self.0
    }

    /// The parsed value.
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::from_str(&self.0).expect("JsonText holds JSON that serde_json reads")
    }
}

/// A custom status: one JSON value an orchestration publishes for its clients.
///
/// Kept in its compact form (see [`JsonText`]), and measured there as
/// Durable Functions measures it: in bytes of the JSON text encoded as UTF-16
/// (two bytes per code unit, four for characters outside the BMP). The store
/// checks it against its limit before sending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomStatus(JsonText);

impl CustomStatus {
    /// Serializes any value as the custom status.
    pub fn from_value<T: Serialize + ?Sized>(value: &T) -> Result<Self> {
        JsonText::from_value_as("custom status", value).map(CustomStatus)
    }

    /// Takes JSON text, in any layout; its compact form is kept. Text that
    /// does not parse as JSON is an error.
    pub fn from_json(text: impl Into<String>) -> Result<Self> {
        JsonText::parse("custom status", text).map(CustomStatus)
    }

    /// Wraps text read from storage, as it is: it may have been written by
    /// another tool and is neither parsed nor size-checked.
    pub(crate) fn from_stored(text: String) -> Self {
        CustomStatus(JsonText(text))
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The parsed value; stored text that is not JSON comes back as a JSON
    /// string holding that text.
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::from_str(self.as_str())
            .unwrap_or_else(|_| serde_json::Value::String(self.as_str().to_owned()))
    }

    /// Deserializes the JSON into a type of the caller's.
    pub fn deserialize<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_str(self.as_str())
            .map_err(|e| Error::invalid("custom status", e.to_string()))
    }

    /// The size in bytes of the JSON text encoded as UTF-16.
    pub fn utf16_size(&self) -> usize {
        utf16_bytes(self.as_str())
    }

    /// Checks the size against `limit` bytes of UTF-16.
    pub fn check_size(&self, limit: usize) -> Result<()> {
        limits::check_custom_status(self.as_str(), limit)
    }
}

/// A short, single-line preview of a value for error messages.
pub(crate) fn preview(text: &str) -> String {
    const MAX: usize = 40;
    let mut out: String = text.chars().take(MAX).collect();
    if text.chars().nth(MAX).is_some() {
        out.push('…');
    }
    format!("{out:?}")
}

/// Tags: string labels on an instance.
pub type Tags = BTreeMap<String, String>;

/// One orchestration instance's status record.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct InstanceStatus {
    /// The instance id (unescaped).
    pub instance_id: String,
    /// The orchestrator's name.
    pub name: String,
    /// The orchestration version; often empty.
    pub version: String,
    /// The id of the current execution (changes on continue-as-new).
    pub execution_id: String,
    /// The runtime status.
    pub runtime_status: RuntimeStatus,
    /// The serialized input, as stored; `None` when absent or not read.
    ///
    /// A payload kept in a blob (over 60 KiB) is fetched, unless the read
    /// asked for the reference ([`ReadOptions::fetch_large_payloads`](crate::ReadOptions::fetch_large_payloads)):
    /// then this is the blob's URL, as stored.
    pub input: Option<String>,
    /// The serialized output (for a failure, the error; for a termination,
    /// the reason), as stored; `None` when absent or not read.
    pub output: Option<String>,
    /// The custom status; `None` when there is none (stored as `null`).
    pub custom_status: Option<CustomStatus>,
    /// When the instance was created (UTC).
    pub created_time: OffsetDateTime,
    /// When the record last changed (UTC).
    pub last_updated_time: OffsetDateTime,
    /// When the instance reached a terminal status (UTC).
    pub completed_time: Option<OffsetDateTime>,
    /// When the instance is scheduled to start, for delayed starts (UTC).
    pub scheduled_start_time: Option<OffsetDateTime>,
    /// How many times the instance has continued as new.
    pub generation: i32,
    /// Tags set when the instance was created.
    pub tags: Tags,
    /// The row's version, for conditional writes.
    pub etag: ETag,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::limits::DEFAULT_CUSTOM_STATUS_LIMIT;

    #[test]
    fn names_and_codes_match_the_durable_clients() {
        let expected = [
            (RuntimeStatus::Unknown, "Unknown", -1),
            (RuntimeStatus::Running, "Running", 0),
            (RuntimeStatus::Completed, "Completed", 1),
            (RuntimeStatus::ContinuedAsNew, "ContinuedAsNew", 2),
            (RuntimeStatus::Failed, "Failed", 3),
            (RuntimeStatus::Canceled, "Canceled", 4),
            (RuntimeStatus::Terminated, "Terminated", 5),
            (RuntimeStatus::Pending, "Pending", 6),
            (RuntimeStatus::Suspended, "Suspended", 7),
        ];
        for (status, name, code) in expected {
            assert_eq!((status.name(), status.code()), (name, code));
            assert_eq!(status.to_string(), name);
            assert_eq!(RuntimeStatus::from_code(code), Some(status));
            assert_eq!(name.parse::<RuntimeStatus>().unwrap(), status);
            assert_eq!(
                serde_json::to_string(&status).unwrap(),
                format!("\"{name}\"")
            );
        }
        assert_eq!(RuntimeStatus::from_code(8), None);
    }

    #[test]
    fn parsing_ignores_case_and_names_the_valid_values() {
        assert_eq!(
            "running".parse::<RuntimeStatus>().unwrap(),
            RuntimeStatus::Running
        );
        assert_eq!(
            " COMPLETED ".parse::<RuntimeStatus>().unwrap(),
            RuntimeStatus::Completed
        );
        let err = "Done".parse::<RuntimeStatus>().unwrap_err().to_string();
        assert!(
            err.contains("'Done'") && err.contains("Running, Completed, ContinuedAsNew"),
            "{err}"
        );
        assert_eq!(RuntimeStatus::from_stored("Done"), RuntimeStatus::Unknown);
        assert_eq!(RuntimeStatus::from_stored("Failed"), RuntimeStatus::Failed);
    }

    #[test]
    fn terminal_statuses() {
        let terminal: Vec<_> = RuntimeStatus::ALL
            .into_iter()
            .filter(|s| s.is_terminal())
            .collect();
        assert_eq!(terminal, RuntimeStatus::TERMINAL);
        assert!(!RuntimeStatus::Unknown.is_terminal());
    }

    #[test]
    fn custom_status_size_counts_utf16_bytes() {
        assert_eq!(CustomStatus::from_json("1").unwrap().utf16_size(), 2);
        assert_eq!(CustomStatus::from_value("é").unwrap().utf16_size(), 6); // "é": 3 units
        assert_eq!(CustomStatus::from_value("😀").unwrap().utf16_size(), 8); // quotes + a surrogate pair
        let exact = CustomStatus::from_json(format!("\"{}\"", "a".repeat(8_190))).unwrap();
        assert!(exact.check_size(DEFAULT_CUSTOM_STATUS_LIMIT).is_ok());
        let over = CustomStatus::from_json(format!("\"{}\"", "a".repeat(8_191))).unwrap();
        assert!(over.check_size(DEFAULT_CUSTOM_STATUS_LIMIT).is_err());
    }

    #[test]
    fn custom_status_keeps_its_compact_form_and_parses() {
        let status =
            CustomStatus::from_json("{\n  \"progress\": 0.5,\n  \"stage\": \"\\u00e9t\\u00e9\"\n}")
                .unwrap();
        assert_eq!(
            status.as_str(),
            r#"{"progress":0.5,"stage":"été"}"#,
            "whitespace and \\u escapes are not part of the value"
        );
        assert_eq!(status.utf16_size(), 60);
        assert_eq!(status.to_value()["progress"], 0.5);
        #[derive(serde::Deserialize)]
        struct Progress {
            progress: f64,
        }
        assert_eq!(status.deserialize::<Progress>().unwrap().progress, 0.5);
        // Stored text from another tool that is not JSON reads as a string.
        assert_eq!(
            CustomStatus::from_stored("plain".into()).to_value(),
            "plain"
        );
    }

    #[test]
    fn surrounding_whitespace_is_not_part_of_the_value() {
        assert_eq!(
            JsonText::parse("input", "{\"a\":1}\n").unwrap().as_str(),
            "{\"a\":1}"
        );
        assert_eq!(
            CustomStatus::from_json("  [1,2] ").unwrap().as_str(),
            "[1,2]"
        );
        assert_eq!(
            CustomStatus::from_json("  [1,2] ").unwrap().utf16_size(),
            10
        );
    }

    #[test]
    fn numbers_are_kept_exactly_as_written() {
        let text =
            r#"{"big":123456789012345678901234567890,"exact":0.10000000000000000001,"e":1E+5}"#;
        assert_eq!(JsonText::parse("input", text).unwrap().as_str(), text);
        assert_eq!(CustomStatus::from_json(text).unwrap().as_str(), text);
    }

    #[test]
    fn values_that_could_not_be_read_back_are_refused() {
        let deep = format!(
            "{}{}",
            "[".repeat(MAX_JSON_DEPTH + 1),
            "]".repeat(MAX_JSON_DEPTH + 1)
        );
        assert!(CustomStatus::from_json(deep).is_err());
        assert!(
            JsonText::parse("input", "[1e400]").is_err(),
            "beyond a double"
        );
        let err = CustomStatus::from_json(r#""\ud800""#).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Invalid {
                    field: "custom status",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn json_text_must_parse() {
        assert!(JsonText::parse("input", "[1, 2]").is_ok());
        let err = JsonText::parse("input", "{oops").unwrap_err().to_string();
        assert!(err.starts_with("invalid input: not JSON"), "{err}");
        assert!(err.contains("\"{oops\""), "quotes the value: {err}");
        assert!(
            JsonText::parse("input", "1 2").is_err(),
            "one value, not two"
        );
    }
}
