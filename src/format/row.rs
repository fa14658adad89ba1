//! Rows as queries and reads return them, decoded straight into the
//! columns the store reads.
//!
//! A listing page holds up to 1,000 rows; decoding each into a map of
//! property names (then copying its strings out) cost more client CPU than
//! anything else in a scan. [`InstanceRow`] takes each column it knows as it
//! is parsed, moves its strings into the [`InstanceStatus`] and skips the
//! rest (type annotations, columns of other tools) without keeping them.

use std::fmt;

use serde::de::{DeserializeOwned, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::format::columns::{get_str, Entity, NO_CUSTOM_STATUS, PARTITION_KEY};
use crate::format::keys::unescape_key;
use crate::format::time::parse_time;
use crate::model::{CustomStatus, ETag, InstanceStatus, RuntimeStatus};

/// The property in which a query sends each row's ETag.
const ODATA_ETAG: &str = "odata.etag";

/// A row type the pager decodes query responses into.
pub(crate) trait StoredRow: DeserializeOwned + Send + Sync + 'static {
    /// Takes the row's ETag out of it (each row of a query carries one,
    /// unless the response asked for no metadata).
    fn take_etag(&mut self) -> Option<ETag>;

    /// The row's partition key, when the query read it.
    fn partition_key(&self) -> Option<&str>;
}

impl StoredRow for Entity {
    fn take_etag(&mut self) -> Option<ETag> {
        let etag = self
            .remove(ODATA_ETAG)
            .and_then(|v| v.as_str().map(ETag::new));
        self.retain(|name, _| !name.starts_with("odata."));
        etag
    }

    fn partition_key(&self) -> Option<&str> {
        get_str(self, PARTITION_KEY)
    }
}

/// An Instances row, as read. Columns that are absent, or hold a value of
/// another type than the provider writes (rows written by other tools),
/// read as `None`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct InstanceRow {
    #[serde(default, deserialize_with = "text")]
    pub partition_key: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub version: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub execution_id: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub input: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub output: Option<String>,
    /// The relative name of the blob holding the input, when the provider
    /// left Input empty.
    #[serde(default, deserialize_with = "text")]
    pub input_blob_name: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub custom_status: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub runtime_status: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub created_time: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub last_updated_time: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub completed_time: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub scheduled_start_time: Option<String>,
    #[serde(default, deserialize_with = "integer")]
    pub generation: Option<i64>,
    #[serde(default, deserialize_with = "text")]
    pub tags: Option<String>,
    #[serde(rename = "odata.etag", default, deserialize_with = "text")]
    pub etag: Option<String>,
}

impl StoredRow for InstanceRow {
    fn take_etag(&mut self) -> Option<ETag> {
        self.etag.take().map(ETag::new)
    }

    fn partition_key(&self) -> Option<&str> {
        self.partition_key.as_deref()
    }
}

impl InstanceRow {
    /// The row's runtime status; absent or unknown text reads as `Unknown`.
    pub(crate) fn status(&self) -> RuntimeStatus {
        self.runtime_status
            .as_deref()
            .map_or(RuntimeStatus::Unknown, RuntimeStatus::from_stored)
    }

    /// Decodes the row. Only a missing partition key is an error: other
    /// columns that are absent or malformed take their empty value, and
    /// unknown status text reads as `Unknown`.
    pub(crate) fn decode(self, etag: ETag) -> Result<InstanceStatus> {
        let runtime_status = self.status();
        let instance_id = self
            .partition_key
            .as_deref()
            .map(unescape_key)
            .ok_or_else(|| Error::Decode {
                instance_id: String::new(),
                reason: "the row has no PartitionKey".into(),
            })?;
        let time = |text: &Option<String>| text.as_deref().and_then(parse_time);
        let created_time = time(&self.created_time).unwrap_or(OffsetDateTime::UNIX_EPOCH);
        Ok(InstanceStatus {
            name: self.name.unwrap_or_default(),
            version: self.version.unwrap_or_default(),
            execution_id: self.execution_id.unwrap_or_default(),
            runtime_status,
            input: self.input,
            output: self.output,
            custom_status: self
                .custom_status
                .filter(|text| text != NO_CUSTOM_STATUS && !text.is_empty())
                .map(CustomStatus::from_stored),
            created_time,
            last_updated_time: time(&self.last_updated_time).unwrap_or(created_time),
            completed_time: time(&self.completed_time),
            scheduled_start_time: time(&self.scheduled_start_time),
            generation: self
                .generation
                .and_then(|n| i32::try_from(n).ok())
                .unwrap_or(0),
            tags: self
                .tags
                .as_deref()
                .and_then(|text| serde_json::from_str(text).ok())
                .unwrap_or_default(),
            etag,
            instance_id,
        })
    }
}

/// A row of which only the partition key is read: a probe's.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct KeyRow {
    #[serde(rename = "PartitionKey", default, deserialize_with = "text")]
    partition_key: Option<String>,
}

impl StoredRow for KeyRow {
    fn take_etag(&mut self) -> Option<ETag> {
        None
    }

    fn partition_key(&self) -> Option<&str> {
        self.partition_key.as_deref()
    }
}

/// A string value; any other value (number, boolean, null, array, object)
/// reads as `None`.
fn text<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> std::result::Result<Option<String>, D::Error> {
    deserializer.deserialize_any(Lenient(|value| match value {
        Scalar::Text(text) => Some(text),
        _ => None,
    }))
}

/// A whole number, sent as a number or as text; anything else reads as
/// `None`.
fn integer<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> std::result::Result<Option<i64>, D::Error> {
    deserializer.deserialize_any(Lenient(|value| match value {
        Scalar::Integer(n) => Some(n),
        Scalar::Text(text) => text.parse().ok(),
        Scalar::Other => None,
    }))
}

/// What a lenient column sees of a value.
enum Scalar {
    Text(String),
    Integer(i64),
    Other,
}

/// Reads any JSON value, keeping what `keep` makes of it.
struct Lenient<F>(F);

impl<'de, T, F: FnOnce(Scalar) -> Option<T>> Visitor<'de> for Lenient<F> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_str<E>(self, value: &str) -> std::result::Result<Self::Value, E> {
        Ok((self.0)(Scalar::Text(value.to_owned())))
    }

    fn visit_string<E>(self, value: String) -> std::result::Result<Self::Value, E> {
        Ok((self.0)(Scalar::Text(value)))
    }

    fn visit_i64<E>(self, value: i64) -> std::result::Result<Self::Value, E> {
        Ok((self.0)(Scalar::Integer(value)))
    }

    fn visit_u64<E>(self, value: u64) -> std::result::Result<Self::Value, E> {
        Ok((self.0)(
            i64::try_from(value).map_or(Scalar::Other, Scalar::Integer),
        ))
    }

    fn visit_f64<E>(self, _: f64) -> std::result::Result<Self::Value, E> {
        Ok((self.0)(Scalar::Other))
    }

    fn visit_bool<E>(self, _: bool) -> std::result::Result<Self::Value, E> {
        Ok((self.0)(Scalar::Other))
    }

    fn visit_unit<E>(self) -> std::result::Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_none<E>(self) -> std::result::Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_seq<A: SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> std::result::Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok((self.0)(Scalar::Other))
    }

    fn visit_map<A: MapAccess<'de>>(
        self,
        mut map: A,
    ) -> std::result::Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok((self.0)(Scalar::Other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use time::macros::datetime;

    fn row(value: serde_json::Value) -> InstanceRow {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn decode_reads_what_other_tools_write() {
        let status = row(json!({
            "PartitionKey": "a^0b",
            "RowKey": "",
            "Name": "N",
            "RuntimeStatus": "SomethingNew",
            "CustomStatus": "null",
            "CreatedTime": "2017-10-06T18:30:24Z",
            "Generation": "7",
            "Tags": "not json"
        }))
        .decode(ETag::new("W/\"1\""))
        .unwrap();
        assert_eq!(status.instance_id, "a/b");
        assert_eq!(status.runtime_status, RuntimeStatus::Unknown);
        assert_eq!(status.custom_status, None);
        assert_eq!(status.created_time, datetime!(2017-10-06 18:30:24 UTC));
        assert_eq!(status.last_updated_time, status.created_time);
        assert_eq!(status.generation, 7);
        assert!(status.tags.is_empty());
        assert_eq!(status.input, None);
        assert!(InstanceRow::default().decode(ETag::new("x")).is_err());
    }

    #[test]
    fn a_query_row_decodes_with_its_etag_and_annotations_skipped() {
        let mut stored = row(json!({
            "odata.etag": "W/\"datetime'2017-10-06T18%3A30%3A24.1234567Z'\"",
            "PartitionKey": "order-1",
            "RowKey": "",
            "Name": "ProcessOrder",
            "Version": "1.0",
            "ExecutionId": "e1",
            "Input": "{\"order\":1}",
            "Output": "42",
            "CustomStatus": "{\"nextActions\":[\"A\"]}",
            "RuntimeStatus": "Completed",
            "CreatedTime@odata.type": "Edm.DateTime",
            "CreatedTime": "2017-10-06T18:30:24.1234567Z",
            "LastUpdatedTime@odata.type": "Edm.DateTime",
            "LastUpdatedTime": "2017-10-06T18:30:25Z",
            "CompletedTime@odata.type": "Edm.DateTime",
            "CompletedTime": "2017-10-06T18:30:26Z",
            "Generation": 2,
            "Tags": "{\"team\":\"a\"}",
            "TaskHubName": "Hub",
            "SomeOtherColumn": {"nested": [1, 2, {"x": null}]}
        }));
        let etag = stored.take_etag().unwrap();
        assert_eq!(
            etag.as_str(),
            "W/\"datetime'2017-10-06T18%3A30%3A24.1234567Z'\""
        );
        assert_eq!(stored.partition_key(), Some("order-1"));
        assert_eq!(stored.status(), RuntimeStatus::Completed);
        let status = stored.decode(etag.clone()).unwrap();
        assert_eq!(status.instance_id, "order-1");
        assert_eq!(status.name, "ProcessOrder");
        assert_eq!(status.version, "1.0");
        assert_eq!(status.execution_id, "e1");
        assert_eq!(status.input.as_deref(), Some("{\"order\":1}"));
        assert_eq!(status.output.as_deref(), Some("42"));
        assert_eq!(
            status.custom_status.unwrap().as_str(),
            "{\"nextActions\":[\"A\"]}"
        );
        assert_eq!(
            status.created_time,
            datetime!(2017-10-06 18:30:24.1234567 UTC)
        );
        assert_eq!(status.last_updated_time, datetime!(2017-10-06 18:30:25 UTC));
        assert_eq!(
            status.completed_time,
            Some(datetime!(2017-10-06 18:30:26 UTC))
        );
        assert_eq!(status.generation, 2);
        assert_eq!(status.tags.get("team").map(String::as_str), Some("a"));
        assert_eq!(status.etag, etag);
    }

    #[test]
    fn columns_of_other_types_read_as_absent() {
        let stored = row(json!({
            "PartitionKey": "k",
            "Name": 5,
            "Input": null,
            "Output": ["x"],
            "RuntimeStatus": true,
            "CreatedTime": 1.5,
            "Generation": 4_294_967_296_i64,
            "Tags": {"team": "a"}
        }));
        assert_eq!(stored.name, None);
        assert_eq!(stored.input, None);
        assert_eq!(stored.output, None);
        assert_eq!(stored.status(), RuntimeStatus::Unknown);
        let status = stored.decode(ETag::new("")).unwrap();
        assert_eq!(status.created_time, OffsetDateTime::UNIX_EPOCH);
        // Out of an i32's range: the provider's Generation is an Int32.
        assert_eq!(status.generation, 0);
        assert!(status.tags.is_empty());
        let negative = row(json!({"PartitionKey": "k", "Generation": -3}));
        assert_eq!(negative.generation, Some(-3));
        let huge = row(json!({"PartitionKey": "k", "Generation": u64::MAX}));
        assert_eq!(huge.generation, None);
    }

    #[test]
    fn maps_keep_their_etag_apart_and_drop_other_annotations() {
        let mut entity: Entity = serde_json::from_value(json!({
            "odata.etag": "W/\"1\"",
            "odata.id": "x",
            "PartitionKey": "p",
            "A": "b"
        }))
        .unwrap();
        assert_eq!(entity.take_etag(), Some(ETag::new("W/\"1\"")));
        assert_eq!(StoredRow::partition_key(&entity), Some("p"));
        assert_eq!(
            serde_json::Value::Object(entity),
            json!({"PartitionKey": "p", "A": "b"})
        );
        let key: KeyRow =
            serde_json::from_value(json!({"PartitionKey": "p", "RowKey": ""})).unwrap();
        assert_eq!(key.partition_key(), Some("p"));
    }
}
