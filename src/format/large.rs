//! Payloads too large for a table column, as the Durable Task Azure Storage
//! provider keeps them: gzip-compressed UTF-8 in a blob of the task hub's
//! `{taskhub}-largemessages` container, the column holding the blob's
//! absolute URL (each path segment percent-escaped, no SAS).
//!
//! - A property is offloaded when its UTF-16 size is over 60 KiB
//!   ([`COLUMN_LIMIT_BYTES`]).
//! - The blob of an Instances row's property is named
//!   `{escaped id}/history--{Property}-{8 upper-case hex}-{Property}.json.gz`;
//!   a normal checkpoint points the row at its History row's blob instead
//!   (`history-{seq}-ExecutionStarted-..-Input.json.gz`,
//!   `..-ExecutionCompleted-..-Result.json.gz`), and a start message too large
//!   for a queue leaves `{raw id}/message-{32 hex}-ExecutionStarted.json.gz`,
//!   whose input is the JSON string at `TaskMessage.Event.Input`.
//! - A new instance's row may hold an empty Input and the relative blob name
//!   in `InputBlobName`.
//!
//! Rows written before provider 2.2.0 hold the URL unescaped: a reference is
//! recognised by its container URL prefix and decoded leniently.

use std::io::{Read, Write};

use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::error::{Error, Result};

/// The most UTF-16 bytes a property keeps in its column; above, the
/// provider moves it to a blob.
pub const COLUMN_LIMIT_BYTES: usize = 60 * 1024;

/// The longest container name Blob Storage accepts.
const MAX_CONTAINER_NAME: usize = 63;

/// What `Uri.EscapeDataString` leaves alone: RFC 3986's unreserved set.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Whether `text` is over the size a column keeps (UTF-16 bytes).
pub(crate) fn exceeds_column_limit(text: &str) -> bool {
    text.encode_utf16().count() * 2 > COLUMN_LIMIT_BYTES
}

/// The task hub's large-message container: its name lower-cased, then
/// `-largemessages`.
pub(crate) fn container_name(task_hub: &str) -> Result<String> {
    let name = format!("{}-largemessages", task_hub.to_ascii_lowercase());
    if name.len() > MAX_CONTAINER_NAME {
        return Err(Error::invalid(
            "task hub",
            format!(
                "'{task_hub}' is too long for its large-message container '{name}' \
                 ({} characters, the limit is {MAX_CONTAINER_NAME}): task hubs that \
                 keep large payloads have at most 49 characters",
                name.len()
            ),
        ));
    }
    Ok(name)
}

/// The blob name of an Instances row's property, as the provider names it.
pub(crate) fn instance_blob_name(partition_key: &str, property: &str, random: u32) -> String {
    format!("{partition_key}/history--{property}-{random:08X}-{property}.json.gz")
}

/// The absolute URL of a blob of the container at `container_url`, each
/// path segment escaped.
pub(crate) fn blob_url(container_url: &str, name: &str) -> String {
    let path: Vec<String> = name
        .split('/')
        .map(|segment| utf8_percent_encode(segment, SEGMENT).to_string())
        .collect();
    format!("{}/{}", container_url.trim_end_matches('/'), path.join("/"))
}

/// A payload kept in a blob of the task hub's container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BlobReference {
    /// The blob's name in the container.
    pub name: String,
    /// Whether it is a start message, whose input is a field inside it.
    pub start_message: bool,
}

impl BlobReference {
    /// A relative name (the `InputBlobName` column).
    pub(crate) fn named(name: &str) -> BlobReference {
        BlobReference {
            name: name.to_owned(),
            start_message: name.ends_with("ExecutionStarted.json.gz") && is_message_name(name),
        }
    }
}

fn is_message_name(name: &str) -> bool {
    name.rsplit('/')
        .next()
        .is_some_and(|file| file.starts_with("message-"))
}

/// The blob a column's value refers to: an absolute URL under
/// `container_url` (escaped, or unescaped as older providers wrote it).
/// Anything else, a URL of another host or container included, is a plain
/// payload: no request ever follows it.
pub(crate) fn parse_reference(value: &str, container_url: &str) -> Option<BlobReference> {
    let container_url = container_url.trim_end_matches('/');
    if value.len() <= container_url.len() + 1
        || value.chars().any(char::is_whitespace)
        || !value.is_char_boundary(container_url.len())
        || !value[..container_url.len()].eq_ignore_ascii_case(container_url)
        || value.as_bytes()[container_url.len()] != b'/'
    {
        return None;
    }
    let path = &value[container_url.len() + 1..];
    let name = percent_decode_str(path).decode_utf8().ok()?.into_owned();
    Some(BlobReference {
        start_message: path.ends_with("ExecutionStarted.json.gz"),
        name,
    })
}

/// Gzip of the UTF-8 text.
pub(crate) fn gzip(text: &str) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder
        .write_all(text.as_bytes())
        .expect("writing to memory");
    encoder.finish().expect("writing to memory")
}

/// The text of a gzip blob, at most `limit` bytes of it.
pub(crate) fn gunzip(bytes: &[u8], limit: usize) -> std::result::Result<String, String> {
    let mut text = Vec::new();
    GzDecoder::new(bytes)
        .take(limit as u64 + 1)
        .read_to_end(&mut text)
        .map_err(|e| format!("not gzip: {e}"))?;
    if text.len() > limit {
        return Err(format!(
            "it holds more than {limit} bytes once decompressed"
        ));
    }
    String::from_utf8(text).map_err(|_| "it is not UTF-8 text".to_owned())
}

/// The input of a start message blob: the JSON string at
/// `TaskMessage.Event.Input`.
pub(crate) fn start_message_input(text: &str) -> std::result::Result<String, String> {
    let message: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("the start message is not JSON: {e}"))?;
    match message.pointer("/TaskMessage/Event/Input") {
        Some(serde_json::Value::String(input)) => Ok(input.clone()),
        Some(serde_json::Value::Null) | None => Ok(String::new()),
        Some(_) => Err("the start message's TaskMessage.Event.Input is not a string".into()),
    }
}

/// Whether the blob `name` belongs to the instance of `partition_key`
/// (escaped id) and `instance_id` (raw id): a property blob right in the
/// escaped id's folder, or a message blob right in the raw id's folder.
/// An id that is a prefix of another's never matches the other's blobs.
pub(crate) fn is_instance_blob(name: &str, partition_key: &str, instance_id: &str) -> bool {
    let in_folder = |folder: &str, pattern: fn(&str) -> bool| {
        name.strip_prefix(folder)
            .and_then(|rest| rest.strip_prefix('/'))
            .is_some_and(pattern)
    };
    in_folder(partition_key, is_property_file) || in_folder(instance_id, is_message_file)
}

/// `history-*.json.gz`, with no folder in between.
fn is_property_file(file: &str) -> bool {
    file.starts_with("history-") && file.ends_with(".json.gz") && !file.contains('/')
}

/// `message-{32 hex}-{EventType}.json.gz`.
fn is_message_file(file: &str) -> bool {
    let Some(rest) = file
        .strip_prefix("message-")
        .and_then(|rest| rest.strip_suffix(".json.gz"))
    else {
        return false;
    };
    let Some((guid, event)) = rest.split_once('-') else {
        return false;
    };
    guid.len() == 32
        && guid.bytes().all(|b| b.is_ascii_hexdigit())
        && !event.is_empty()
        && event.bytes().all(|b| b.is_ascii_alphabetic())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONTAINER: &str = "http://127.0.0.1:10000/devstoreaccount1/hub-largemessages";

    #[test]
    fn the_limit_is_60_kib_of_utf16() {
        assert!(!exceeds_column_limit(&"a".repeat(30_720)));
        assert!(exceeds_column_limit(&"a".repeat(30_721)));
        // A supplementary character is two UTF-16 units.
        assert!(!exceeds_column_limit(&"😀".repeat(15_360)));
        assert!(exceeds_column_limit(&format!("{}a", "😀".repeat(15_360))));
    }

    #[test]
    fn names_and_urls_follow_the_provider() {
        assert_eq!(container_name("MyHub").unwrap(), "myhub-largemessages");
        let long = "h".repeat(50);
        let err = container_name(&long).unwrap_err().to_string();
        assert!(err.contains("64 characters") && err.contains("63"), "{err}");
        assert!(container_name(&"h".repeat(49)).is_ok());
        assert_eq!(
            instance_blob_name("a^2Fb", "Input", 0x1a2b3c),
            "a^2Fb/history--Input-001A2B3C-Input.json.gz"
        );
        // The provider's own test: each segment escaped, slashes kept.
        assert_eq!(
            blob_url(
                "http://127.0.0.1:10000/devstoreaccount1/c",
                "@entity12345/foo/bar/b@z.tar.gz"
            ),
            "http://127.0.0.1:10000/devstoreaccount1/c/%40entity12345/foo/bar/b%40z.tar.gz"
        );
        assert_eq!(
            blob_url(CONTAINER, "a b/#x"),
            format!("{CONTAINER}/a%20b/%23x")
        );
    }

    #[test]
    fn references_are_urls_of_the_container_escaped_or_not() {
        let name = "o^2F1/history--Output-0A0B0C0D-Output.json.gz";
        let escaped = blob_url(CONTAINER, name);
        assert_eq!(
            parse_reference(&escaped, CONTAINER),
            Some(BlobReference {
                name: name.into(),
                start_message: false
            })
        );
        // As providers before 2.2.0 wrote it.
        let raw = format!("{CONTAINER}/{name}");
        assert_eq!(parse_reference(&raw, CONTAINER).unwrap().name, name);
        let start = format!(
            "{CONTAINER}/o%2F1/message-{}-ExecutionStarted.json.gz",
            "a".repeat(32)
        );
        assert!(parse_reference(&start, CONTAINER).unwrap().start_message);
        for plain in [
            "\"https://example.com/x\"",
            "https://evil.example/devstoreaccount1/hub-largemessages/x",
            "http://127.0.0.1:10000/devstoreaccount1/other-largemessages/x",
            CONTAINER,
            &format!("{CONTAINER}/"),
            &format!("{CONTAINER}x/y"),
            &format!("{CONTAINER}/a b"),
            "{\"a\":1}",
            "",
        ] {
            assert_eq!(parse_reference(plain, CONTAINER), None, "{plain}");
        }
    }

    #[test]
    fn gzip_round_trips_and_is_bounded() {
        let text = "{\"big\":\"".to_owned() + &"é".repeat(50_000) + "\"}";
        let bytes = gzip(&text);
        assert!(bytes.len() < text.len() / 10);
        assert_eq!(gunzip(&bytes, text.len()).unwrap(), text);
        assert!(gunzip(&bytes, text.len() - 1)
            .unwrap_err()
            .contains("more than"));
        assert!(gunzip(b"plain", 100).unwrap_err().contains("not gzip"));
        assert!(gunzip(&gzip_bytes(&[0xff, 0xfe]), 100)
            .unwrap_err()
            .contains("UTF-8"));
    }

    fn gzip_bytes(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn a_start_message_holds_the_input_as_a_string() {
        // The shape of the provider's own test message.
        let message = r#"{"$type":"DurableTask.AzureStorage.MessageData","ActivityId":"5406d369-4369-4673-afca-2de5a8c7e3d2","TaskMessage":{"$type":"DurableTask.Core.TaskMessage","Event":{"$type":"DurableTask.Core.History.ExecutionStartedEvent","EventType":0,"Name":"Orch","Version":"2.0","Input":"{\"order\":42}"},"SequenceNumber":0},"CompressedBlobName":null,"SequenceNumber":40}"#;
        assert_eq!(start_message_input(message).unwrap(), r#"{"order":42}"#);
        assert!(start_message_input("nope").is_err());
        assert!(start_message_input(r#"{"TaskMessage":{"Event":{"Input":5}}}"#).is_err());
    }

    #[test]
    fn purge_takes_exactly_the_instances_blobs() {
        let guid = "0123456789abcdef0123456789abcdef";
        let ours = |name: &str| is_instance_blob(name, "order-1", "order-1");
        assert!(ours("order-1/history--Input-0A0B0C0D-Input.json.gz"));
        assert!(ours(
            "order-1/history-0000000000000002-ExecutionCompleted-0A0B0C0D-Result.json.gz"
        ));
        assert!(ours(&format!(
            "order-1/message-{guid}-ExecutionStarted.json.gz"
        )));
        assert!(!ours("order-10/history--Input-0A0B0C0D-Input.json.gz"));
        assert!(!ours(&format!(
            "order-10/message-{guid}-ExecutionStarted.json.gz"
        )));
        assert!(!ours("order-1/other.json.gz"));
        // An id with `/`: its message blobs live under the raw id, its
        // property blobs under the escaped one; `a`'s never take `a/b`'s.
        let a = |name: &str| is_instance_blob(name, "a", "a");
        let a_b = |name: &str| is_instance_blob(name, "a^2Fb", "a/b");
        let message = format!("a/b/message-{guid}-ExecutionStarted.json.gz");
        assert!(a_b(&message) && !a(&message));
        assert!(a_b("a^2Fb/history--Input-0A0B0C0D-Input.json.gz"));
        assert!(!a("a/b/history--Input-0A0B0C0D-Input.json.gz"));
    }
}
