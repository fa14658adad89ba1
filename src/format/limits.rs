//! The limits of Table Storage and of Durable Functions, checked before
//! anything is sent: the emulator enforces only some of them, and a refusal
//! from the service would come after the request's cost.

use std::collections::HashSet;

use serde_json::Value;

use crate::error::{Error, Result, SizeUnit};
use crate::format::columns::{Entity, PARTITION_KEY, ROW_KEY};

/// Table Storage's limit on a key: 1 KiB, i.e. 512 UTF-16 code units.
pub const MAX_KEY_UTF16_UNITS: usize = 512;

/// Table Storage's limit on a string property: 64 KiB, i.e. 32,768 UTF-16
/// code units.
pub const MAX_STRING_UTF16_UNITS: usize = 32 * 1024;

/// Table Storage's limit on an entity: 1 MiB.
pub const MAX_ENTITY_BYTES: usize = 1024 * 1024;

/// Table Storage's limit on properties per entity, besides the system ones.
pub const MAX_PROPERTIES: usize = 252;

/// Table Storage's limit on operations in one batch.
pub const MAX_BATCH_OPERATIONS: usize = 100;

/// The default custom status limit of Durable Functions: 16 KiB of UTF-16.
pub const DEFAULT_CUSTOM_STATUS_LIMIT: usize = 16 * 1024;

/// The highest custom status limit a store accepts: Table Storage's 64 KiB
/// per string property.
pub const MAX_CUSTOM_STATUS_LIMIT: usize = 64 * 1024;

/// UTF-16 code units of `text`.
pub fn utf16_units(text: &str) -> usize {
    text.chars().map(char::len_utf16).sum()
}

/// Bytes of `text` encoded as UTF-16.
pub fn utf16_bytes(text: &str) -> usize {
    2 * utf16_units(text)
}

/// Checks a key (partition or row) against the 512-unit limit.
pub(crate) fn check_key(field: &'static str, key: &str) -> Result<()> {
    at_most(
        field,
        utf16_units(key),
        MAX_KEY_UTF16_UNITS,
        SizeUnit::Utf16Units,
    )
}

/// Checks that a value fits in one string property.
pub(crate) fn check_string(field: &'static str, text: &str) -> Result<()> {
    at_most(
        field,
        utf16_units(text),
        MAX_STRING_UTF16_UNITS,
        SizeUnit::Utf16Units,
    )
}

/// Checks a custom status against a limit in bytes of UTF-16.
pub(crate) fn check_custom_status(text: &str, limit: usize) -> Result<()> {
    at_most(
        "custom status",
        utf16_bytes(text),
        limit,
        SizeUnit::Utf16Bytes,
    )
}

/// The one shape of every size check: [`Error::TooLarge`] naming the field,
/// the limit and the actual size.
pub(crate) fn at_most(
    field: &'static str,
    actual: usize,
    limit: usize,
    unit: SizeUnit,
) -> Result<()> {
    if actual > limit {
        return Err(Error::TooLarge {
            field,
            actual,
            limit,
            unit,
        });
    }
    Ok(())
}

/// Checks the Table Storage limits of a whole entity that the emulator does
/// not enforce: keys, string properties, property count and entity size.
pub(crate) fn check_entity(pk: &str, rk: &str, entity: &Entity) -> Result<()> {
    check_key("partition key", pk)?;
    check_key("row key", rk)?;
    let mut properties = 0;
    // The service's formula: 4 bytes, the keys as UTF-16, and per property
    // 8 bytes, its name as UTF-16 and its value's size.
    let mut size = 4 + 2 * (utf16_units(pk) + utf16_units(rk));
    for (name, value) in entity {
        if name.contains("@odata.") || name == PARTITION_KEY || name == ROW_KEY {
            continue;
        }
        properties += 1;
        let annotation = entity
            .get(&format!("{name}@odata.type"))
            .and_then(Value::as_str);
        size += 8 + 2 * utf16_units(name) + value_size(value, annotation);
        if let (Value::String(text), None | Some("Edm.String")) = (value, annotation) {
            check_string("string property", text)?;
        }
    }
    at_most("entity", properties, MAX_PROPERTIES, SizeUnit::Properties)?;
    at_most("entity", size, MAX_ENTITY_BYTES, SizeUnit::EntityBytes)
}

fn value_size(value: &Value, annotation: Option<&str>) -> usize {
    match (value, annotation) {
        (Value::String(text), Some("Edm.Binary")) => 4 + text.len() * 3 / 4,
        (_, Some("Edm.DateTime" | "Edm.Int64" | "Edm.Double")) => 8,
        (_, Some("Edm.Guid")) => 16,
        (Value::String(text), _) => 4 + 2 * utf16_units(text),
        (Value::Bool(_), _) => 1,
        (Value::Number(n), _) if n.is_f64() => 8,
        (Value::Number(_), _) => 4,
        _ => 0,
    }
}

/// Checks an entity-group transaction's rules: 1 to 100 operations, each
/// row key once (all operations share the partition key by construction).
pub(crate) fn check_batch<'a>(
    pk: &str,
    row_keys: impl ExactSizeIterator<Item = &'a str>,
) -> Result<()> {
    if row_keys.len() == 0 {
        return Err(Error::invalid("batch", "has no operations"));
    }
    at_most(
        "batch",
        row_keys.len(),
        MAX_BATCH_OPERATIONS,
        SizeUnit::Operations,
    )?;
    check_key("partition key", pk)?;
    let mut seen = HashSet::new();
    for row_key in row_keys {
        check_key("row key", row_key)?;
        if !seen.insert(row_key) {
            return Err(Error::invalid(
                "batch",
                format!("row key '{row_key}' appears twice; a batch touches an entity once"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entity(value: Value) -> Entity {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn string_properties_are_capped_at_32768_units() {
        let ok = entity(json!({"P": "a".repeat(32_768)}));
        assert!(check_entity("pk", "", &ok).is_ok());
        let big = entity(json!({"P": "a".repeat(32_769)}));
        let err = check_entity("pk", "", &big).unwrap_err();
        assert!(
            matches!(
                err,
                Error::TooLarge {
                    field: "string property",
                    actual: 32_769,
                    limit: 32_768,
                    unit: SizeUnit::Utf16Units
                }
            ),
            "one variant for one limit: {err:?}"
        );
        assert_eq!(
            check_string("input", &"a".repeat(32_769))
                .unwrap_err()
                .to_string(),
            "input is too large: 32769 UTF-16 code units, the limit is 32768 UTF-16 code units"
        );
    }

    #[test]
    fn entities_are_capped_at_1_mib() {
        // 33 properties of 32,000 units: about 2 MB, each one within its limit.
        let big: Entity = (0..33)
            .map(|i| (format!("P{i}"), json!("a".repeat(32_000))))
            .collect();
        match check_entity("pk", "", &big) {
            Err(Error::TooLarge {
                field: "entity",
                unit: SizeUnit::EntityBytes,
                actual,
                limit,
            }) => {
                assert!(actual > limit && limit == 1_048_576);
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
        let fits: Entity = (0..15)
            .map(|i| (format!("P{i}"), json!("a".repeat(32_000))))
            .collect();
        assert!(check_entity("pk", "", &fits).is_ok());
    }

    #[test]
    fn entities_are_capped_at_252_properties() {
        let with = |n: usize| -> Entity { (0..n).map(|i| (format!("P{i}"), json!(i))).collect() };
        assert!(check_entity("pk", "", &with(252)).is_ok());
        let err = check_entity("pk", "", &with(253)).unwrap_err().to_string();
        assert_eq!(
            err,
            "entity is too large: 253 properties, the limit is 252 properties"
        );
    }

    #[test]
    fn annotations_and_keys_do_not_count_as_properties() {
        let mut e: Entity = (0..252)
            .map(|i| (format!("P{i}"), json!("2020-01-01T00:00:00Z")))
            .collect();
        for i in 0..252 {
            e.insert(format!("P{i}@odata.type"), json!("Edm.DateTime"));
        }
        e.insert("PartitionKey".into(), json!("pk"));
        e.insert("RowKey".into(), json!(""));
        assert!(check_entity("pk", "", &e).is_ok());
    }

    #[test]
    fn keys_are_capped_at_512_units() {
        let e = Entity::new();
        assert!(check_entity(&"k".repeat(512), "", &e).is_ok());
        let err = check_entity(&"k".repeat(513), "", &e)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("partition key is too large: 513"), "{err}");
        assert!(check_entity("pk", &"r".repeat(513), &e).is_err());
    }

    #[test]
    fn batches_hold_1_to_100_operations_each_row_once() {
        let keys: Vec<String> = (0..101).map(|i| i.to_string()).collect();
        let first = |n: usize| keys[..n].iter().map(String::as_str);
        assert!(check_batch("pk", first(100)).is_ok());
        assert_eq!(
            check_batch("pk", first(101)).unwrap_err().to_string(),
            "batch is too large: 101 operations, the limit is 100 operations"
        );
        assert!(check_batch("pk", first(0))
            .unwrap_err()
            .to_string()
            .contains("no operations"));
        assert!(check_batch("pk", ["1", "1"].into_iter())
            .unwrap_err()
            .to_string()
            .contains("appears twice"));
    }

    #[test]
    fn custom_status_size_counts_utf16_bytes() {
        assert!(check_custom_status(
            &format!("\"{}\"", "a".repeat(8_190)),
            DEFAULT_CUSTOM_STATUS_LIMIT
        )
        .is_ok());
        let err = check_custom_status(
            &format!("\"{}\"", "a".repeat(8_191)),
            DEFAULT_CUSTOM_STATUS_LIMIT,
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "custom status is too large: 16386 bytes of UTF-16, the limit is 16384 bytes of UTF-16 (16 KiB)"
        );
        assert_eq!(utf16_bytes("😀"), 4);
        assert_eq!(utf16_units("é"), 1);
    }
}
