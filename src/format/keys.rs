//! Instance ids as partition keys, and task hub and table names.

use crate::error::{Error, Result};
use crate::format::limits::check_key;
use crate::model::preview;

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

/// The Instances table of a task hub.
pub(crate) fn instances_table(task_hub: &str) -> String {
    format!("{task_hub}{INSTANCES_SUFFIX}")
}

/// The History table of a task hub (written by the Durable Task provider).
pub(crate) fn history_table(task_hub: &str) -> String {
    format!("{task_hub}History")
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

/// Validates an instance id (`field` names it in errors: an id or a
/// prefix) and returns its partition key.
pub(crate) fn partition_key_of(field: &'static str, instance_id: &str) -> Result<String> {
    if instance_id.is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    let key = escape_key(instance_id);
    check_key(field, &key)?;
    Ok(key)
}

/// Validates an instance id and returns its partition key.
pub(crate) fn partition_key(instance_id: &str) -> Result<String> {
    partition_key_of("instance id", instance_id)
}

/// Compares two keys the way Table Storage does: by UTF-16 code units (a
/// supplementary character sorts below U+E000, unlike in `str`'s order).
pub(crate) fn compare_keys(a: &str, b: &str) -> std::cmp::Ordering {
    a.encode_utf16().cmp(b.encode_utf16())
}

/// The smallest string above every string that starts with `prefix`, in the
/// order Table Storage compares keys (UTF-16 code units); `None` when there
/// is none (a prefix of U+FFFF only).
pub(crate) fn prefix_upper_bound(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = match last as u32 {
            // Above U+D7FF come the surrogates: the next string starts with
            // the smallest supplementary character.
            0xD7FF => Some('\u{10000}'),
            // Supplementary characters sort below U+E000 in UTF-16.
            0x10FFFF => Some('\u{E000}'),
            // Nothing is above U+FFFF in its position: carry to the previous one.
            0xFFFF => None,
            code => char::from_u32(code + 1),
        };
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_compare_by_utf16_code_units() {
        use std::cmp::Ordering::*;
        assert_eq!(compare_keys("a", "b"), Less);
        assert_eq!(compare_keys("ab", "a"), Greater);
        assert_eq!(compare_keys("\u{10000}", "\u{E000}"), Less);
        assert_eq!(compare_keys("\u{D7FF}", "\u{10000}"), Less);
        assert_eq!(compare_keys("x", "x"), Equal);
    }
    use crate::error::SizeUnit;
    use proptest::prelude::*;

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
        // Quotes are legal in keys; the table client doubles them in URLs.
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
                unit: SizeUnit::Utf16Units,
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
        assert!(matches!(
            partition_key_of("instance id prefix", &"a".repeat(513)),
            Err(Error::TooLarge {
                field: "instance id prefix",
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
        assert_eq!(history_table("TestHubName"), "TestHubNameHistory");
    }

    #[test]
    fn prefix_bounds_follow_utf16_order() {
        assert_eq!(prefix_upper_bound("abc").as_deref(), Some("abd"));
        assert_eq!(prefix_upper_bound("a^").as_deref(), Some("a_"));
        assert_eq!(prefix_upper_bound("a~").as_deref(), Some("a\u{7F}"));
        assert_eq!(
            prefix_upper_bound("a\u{D7FF}").as_deref(),
            Some("a\u{10000}")
        );
        assert_eq!(prefix_upper_bound("a😀").as_deref(), Some("a😁"));
        assert_eq!(
            prefix_upper_bound("a\u{10FFFF}").as_deref(),
            Some("a\u{E000}")
        );
        assert_eq!(prefix_upper_bound("a\u{FFFF}").as_deref(), Some("b"));
        assert_eq!(
            prefix_upper_bound("a\u{FFFF}\u{FFFF}").as_deref(),
            Some("b")
        );
        assert_eq!(prefix_upper_bound("\u{FFFF}"), None);
        assert_eq!(prefix_upper_bound(""), None);
    }

    fn utf16(s: &str) -> Vec<u16> {
        s.encode_utf16().collect()
    }

    proptest! {
        #[test]
        fn the_bound_is_above_every_extension_and_below_every_other_key(
            prefix in "\\PC{1,4}", rest in "\\PC{0,4}", other in "\\PC{1,6}"
        ) {
            let low = escape_key(&prefix);
            if let Some(high) = prefix_upper_bound(&low) {
                let inside = escape_key(&format!("{prefix}{rest}"));
                prop_assert!(utf16(&low) <= utf16(&inside) && utf16(&inside) < utf16(&high));
                let key = escape_key(&other);
                let in_range = utf16(&low) <= utf16(&key) && utf16(&key) < utf16(&high);
                prop_assert_eq!(in_range, other.starts_with(&prefix));
            }
        }
    }
}
