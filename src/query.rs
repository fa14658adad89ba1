//! Finding instances: combinable filters, pages with opaque continuation
//! tokens, a lazy stream, and counts per runtime status.
//!
//! Rows are decoded leniently: a row written by another tool with missing or
//! malformed columns is returned with what could be read (empty text, the
//! Unix epoch for a missing time, `Unknown` for status text this crate does
//! not know), so one odd row never fails a page.

use std::collections::BTreeMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::model::{preview, ETag, InstanceStatus, RuntimeStatus};
use crate::storage_client::{odata_string, Continuation};
use crate::store::{InstanceStore, ReadOptions};
use crate::wire;

/// The page size of a query unless set: the HTTP API's default `top`.
pub const DEFAULT_PAGE_SIZE: u32 = 100;
/// The largest page Table Storage returns.
pub const MAX_PAGE_SIZE: u32 = 1000;

/// Which instances to find and what to read of them. Filters combine with
/// "and"; the statuses of the set combine with "or".
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceQuery {
    pub(crate) statuses: Vec<RuntimeStatus>,
    pub(crate) created_from: Option<OffsetDateTime>,
    pub(crate) created_to: Option<OffsetDateTime>,
    pub(crate) instance_id_prefix: Option<String>,
    pub(crate) task_hub_name: Option<String>,
    pub(crate) read: ReadOptions,
    pub(crate) page_size: u32,
}

impl Default for InstanceQuery {
    fn default() -> Self {
        InstanceQuery {
            statuses: Vec::new(),
            created_from: None,
            created_to: None,
            instance_id_prefix: None,
            task_hub_name: None,
            read: ReadOptions::default(),
            page_size: DEFAULT_PAGE_SIZE,
        }
    }
}

impl InstanceQuery {
    /// Every instance, 100 a page, with input and output.
    pub fn new() -> Self {
        Self::default()
    }

    /// Only instances in one of these statuses (an empty set: any status).
    pub fn statuses(mut self, statuses: impl IntoIterator<Item = RuntimeStatus>) -> Self {
        self.statuses = statuses.into_iter().collect();
        self.statuses.sort();
        self.statuses.dedup();
        self
    }

    /// Only instances created at or after this time (any offset; compared in UTC).
    pub fn created_from(mut self, from: OffsetDateTime) -> Self {
        self.created_from = Some(from);
        self
    }

    /// Only instances created at or before this time (any offset; compared in UTC).
    pub fn created_to(mut self, to: OffsetDateTime) -> Self {
        self.created_to = Some(to);
        self
    }

    /// Only instances whose id starts with this text. It is a key range on
    /// the escaped id, so it reads only the matching rows.
    pub fn instance_id_prefix(mut self, prefix: impl Into<String>) -> Self {
        let prefix = prefix.into();
        self.instance_id_prefix = (!prefix.is_empty()).then_some(prefix);
        self
    }

    /// Only rows whose TaskHubName column holds this name (rows written
    /// without the column do not match).
    pub fn task_hub_name(mut self, name: impl Into<String>) -> Self {
        self.task_hub_name = Some(name.into());
        self
    }

    /// Whether to read the Input column (default yes).
    pub fn include_input(mut self, include: bool) -> Self {
        self.read.include_input = include;
        self
    }

    /// Whether to read the Output column (default yes).
    pub fn include_output(mut self, include: bool) -> Self {
        self.read.include_output = include;
        self
    }

    /// Rows per page, 1 to 1000 (default 100).
    pub fn page_size(mut self, page_size: u32) -> Self {
        self.page_size = page_size;
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        for (field, time) in [
            ("created time from", self.created_from),
            ("created time to", self.created_to),
        ] {
            if let Some(time) = time {
                if wire::to_utc(time).is_none() {
                    return Err(Error::invalid(
                        field,
                        format!("{time} is outside years 1 to 9999 in UTC"),
                    ));
                }
            }
        }
        if !(1..=MAX_PAGE_SIZE).contains(&self.page_size) {
            return Err(Error::invalid(
                "page size",
                format!("{} is outside 1..={MAX_PAGE_SIZE}", self.page_size),
            ));
        }
        if let (Some(from), Some(to)) = (self.created_from, self.created_to) {
            if from > to {
                return Err(Error::invalid(
                    "created time range",
                    format!(
                        "from {} is after to {}",
                        wire::format_time(from),
                        wire::format_time(to)
                    ),
                ));
            }
        }
        if let Some(prefix) = &self.instance_id_prefix {
            wire::partition_key(prefix).map_err(|e| match e {
                Error::TooLarge {
                    actual,
                    limit,
                    unit,
                    ..
                } => Error::TooLarge {
                    field: "instance id prefix",
                    actual,
                    limit,
                    unit,
                },
                other => other,
            })?;
        }
        Ok(())
    }

    /// The OData filter, every value quoted so that no value can change its
    /// meaning; `None` for every row.
    pub(crate) fn filter(&self) -> Option<String> {
        let mut parts = Vec::new();
        if let Some(prefix) = &self.instance_id_prefix {
            let low = wire::escape_key(prefix);
            parts.push(format!("PartitionKey ge {}", odata_string(&low)));
            if let Some(high) = prefix_upper_bound(&low) {
                parts.push(format!("PartitionKey lt {}", odata_string(&high)));
            }
        }
        if let Some(from) = self.created_from {
            parts.push(format!(
                "CreatedTime ge datetime'{}'",
                wire::format_time(from)
            ));
        }
        if let Some(to) = self.created_to {
            parts.push(format!(
                "CreatedTime le datetime'{}'",
                wire::format_time(to)
            ));
        }
        if !self.statuses.is_empty() {
            let any: Vec<String> = self
                .statuses
                .iter()
                .map(|s| format!("RuntimeStatus eq {}", odata_string(s.name())))
                .collect();
            parts.push(format!("({})", any.join(" or ")));
        }
        if let Some(hub) = &self.task_hub_name {
            parts.push(format!("TaskHubName eq {}", odata_string(hub)));
        }
        (!parts.is_empty()).then(|| parts.join(" and "))
    }

    /// Whether a decoded row matches what the key range is meant to select.
    fn keeps(&self, instance: &InstanceStatus) -> bool {
        self.instance_id_prefix
            .as_deref()
            .is_none_or(|prefix| instance.instance_id.starts_with(prefix))
    }

    /// The same check on a raw row, by its (escaped) partition key.
    pub(crate) fn keeps_row(&self, row: &wire::Entity) -> bool {
        self.instance_id_prefix.as_deref().is_none_or(|prefix| {
            wire::row_partition_key(row)
                .is_some_and(|key| wire::unescape_key(key).starts_with(prefix))
        })
    }
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

/// Encodes where a listing resumes as a string a web client can carry in a
/// header. The same position always gives the same token.
pub(crate) fn encode_token(continuation: &Continuation) -> String {
    let mut token = format!(
        "1.{}",
        URL_SAFE_NO_PAD.encode(&continuation.next_partition_key)
    );
    if let Some(row_key) = &continuation.next_row_key {
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(row_key));
    }
    token
}

/// Decodes a token of [`encode_token`]; anything else is an error, never a
/// restart from the beginning.
pub(crate) fn decode_token(token: &str) -> Result<Continuation> {
    let malformed = || {
        Error::invalid(
            "continuation token",
            format!("{} is not a token this service issued", preview(token)),
        )
    };
    let decode = |part: &str| {
        URL_SAFE_NO_PAD
            .decode(part)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or_else(malformed)
    };
    let mut parts = token.trim().split('.');
    if parts.next() != Some("1") {
        return Err(malformed());
    }
    let next_partition_key = decode(parts.next().ok_or_else(malformed)?)?;
    let next_row_key = parts.next().map(decode).transpose()?;
    if next_partition_key.is_empty() || parts.next().is_some() {
        return Err(malformed());
    }
    Ok(Continuation {
        next_partition_key,
        next_row_key,
    })
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq)]
pub struct InstancePage {
    /// The instances of this page; it may be empty while more follow.
    pub instances: Vec<InstanceStatus>,
    /// Where the next page starts; `None` at the end. A token always decodes
    /// to a position (never to `null`); the page it leads to may be empty.
    pub continuation_token: Option<String>,
}

/// How many instances are in each runtime status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusCounts(BTreeMap<RuntimeStatus, u64>);

impl StatusCounts {
    /// The count of one status (0 when none).
    pub fn get(&self, status: RuntimeStatus) -> u64 {
        self.0.get(&status).copied().unwrap_or(0)
    }

    /// The count of all instances.
    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }

    /// The statuses with at least one instance, in numeric-code order.
    pub fn iter(&self) -> impl Iterator<Item = (RuntimeStatus, u64)> + '_ {
        self.0.iter().map(|(status, count)| (*status, *count))
    }
}

impl InstanceStore {
    /// Fetches one page: one request. Pass the previous page's token to go
    /// on; a malformed token is an [`Error::Invalid`].
    pub async fn query_page(
        &self,
        query: &InstanceQuery,
        continuation_token: Option<&str>,
    ) -> Result<InstancePage> {
        query.validate()?;
        let resume = continuation_token.map(decode_token).transpose()?;
        let (instances, next) = self.fetch_page(query, resume.as_ref()).await?;
        Ok(InstancePage {
            instances,
            continuation_token: next.as_ref().map(encode_token),
        })
    }

    /// Every matching instance, as a lazy stream that fetches the next page
    /// only when the previous one has been consumed.
    pub fn query(&self, query: &InstanceQuery) -> BoxStream<'static, Result<InstanceStatus>> {
        let store = self.clone();
        let query = query.clone();
        let start: Option<Option<Continuation>> = Some(None);
        futures::stream::try_unfold(start, move |state| {
            let store = store.clone();
            let query = query.clone();
            async move {
                let Some(resume) = state else { return Ok(None) };
                if resume.is_none() {
                    query.validate()?;
                }
                let (instances, next) = store.fetch_page(&query, resume.as_ref()).await?;
                // A page ends the listing only when no continuation comes back.
                let state = next.map(Some);
                Ok(Some((
                    futures::stream::iter(instances.into_iter().map(Ok)),
                    state,
                )))
            }
        })
        .try_flatten()
        .boxed()
    }

    /// Counts the matching instances per runtime status, reading only the
    /// RuntimeStatus column, a page at a time (memory stays bounded).
    pub async fn count_by_status(&self, query: &InstanceQuery) -> Result<StatusCounts> {
        query.validate()?;
        let filter = query.filter();
        let mut columns = vec![wire::RUNTIME_STATUS];
        if query.instance_id_prefix.is_some() {
            columns.push(wire::PARTITION_KEY);
        }
        let mut counts = StatusCounts::default();
        let mut resume = None;
        loop {
            let page = self
                .client
                .query_page(
                    filter.as_deref(),
                    Some(&columns),
                    Some(MAX_PAGE_SIZE),
                    resume.as_ref(),
                )
                .await?;
            for (row, _) in page.entities.iter().filter(|(row, _)| query.keeps_row(row)) {
                *counts.0.entry(wire::row_status(row)).or_default() += 1;
            }
            match page.continuation {
                Some(next) => resume = Some(next),
                None => return Ok(counts),
            }
        }
    }

    pub(crate) async fn fetch_page(
        &self,
        query: &InstanceQuery,
        resume: Option<&Continuation>,
    ) -> Result<(Vec<InstanceStatus>, Option<Continuation>)> {
        let select = query.read.select();
        let page = self
            .client
            .query_page(
                query.filter().as_deref(),
                select.as_deref(),
                Some(query.page_size),
                resume,
            )
            .await?;
        let mut instances = Vec::with_capacity(page.entities.len());
        for (row, etag) in &page.entities {
            let etag = etag.clone().unwrap_or_else(|| ETag::new(""));
            let instance = wire::decode_instance(row, etag)?;
            if query.keeps(&instance) {
                instances.push(instance);
            }
        }
        Ok((instances, page.continuation))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use time::macros::datetime;

    #[test]
    fn filters_combine_with_and_and_statuses_with_or() {
        let query = InstanceQuery::new()
            .statuses([
                RuntimeStatus::Failed,
                RuntimeStatus::Completed,
                RuntimeStatus::Failed,
            ])
            .created_from(datetime!(2024-01-01 02:00 +2))
            .created_to(datetime!(2024-02-01 00:00 UTC))
            .instance_id_prefix("ord/")
            .task_hub_name("Hub");
        assert_eq!(
            query.filter().unwrap(),
            "PartitionKey ge 'ord^0' and PartitionKey lt 'ord^1' \
             and CreatedTime ge datetime'2024-01-01T00:00:00.0000000Z' \
             and CreatedTime le datetime'2024-02-01T00:00:00.0000000Z' \
             and (RuntimeStatus eq 'Completed' or RuntimeStatus eq 'Failed') \
             and TaskHubName eq 'Hub'"
        );
        assert_eq!(InstanceQuery::new().filter(), None);
        assert_eq!(InstanceQuery::new().instance_id_prefix("").filter(), None);
    }

    #[test]
    fn values_cannot_change_the_filter() {
        let query = InstanceQuery::new()
            .instance_id_prefix("x' or 'a' eq 'a")
            .task_hub_name("h') or (1 eq 1");
        let filter = query.filter().unwrap();
        assert!(
            filter.contains("PartitionKey ge 'x'' or ''a'' eq ''a'"),
            "{filter}"
        );
        assert!(
            filter.contains("TaskHubName eq 'h'') or (1 eq 1'"),
            "{filter}"
        );
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
            let low = wire::escape_key(&prefix);
            if let Some(high) = prefix_upper_bound(&low) {
                let inside = wire::escape_key(&format!("{prefix}{rest}"));
                prop_assert!(utf16(&low) <= utf16(&inside) && utf16(&inside) < utf16(&high));
                let key = wire::escape_key(&other);
                let in_range = utf16(&low) <= utf16(&key) && utf16(&key) < utf16(&high);
                prop_assert_eq!(in_range, other.starts_with(&prefix));
            }
        }
    }

    #[test]
    fn tokens_round_trip_and_are_stable() {
        let position = Continuation {
            next_partition_key: "1!8!b3JkZXI-".into(),
            next_row_key: Some("1!0!".into()),
        };
        let token = encode_token(&position);
        assert_eq!(token, encode_token(&position));
        assert!(
            token
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
            "{token}"
        );
        assert_eq!(decode_token(&token).unwrap(), position);
        let no_row = Continuation {
            next_partition_key: "k".into(),
            next_row_key: None,
        };
        assert_eq!(decode_token(&encode_token(&no_row)).unwrap(), no_row);
    }

    #[test]
    fn malformed_tokens_are_errors() {
        for token in ["", "null", "1.", "2.aw", "1.!!", "1.aw.aw.aw", "1._w"] {
            let err = decode_token(token).unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::Invalid {
                        field: "continuation token",
                        ..
                    }
                ),
                "{token:?}: {err}"
            );
        }
    }

    #[test]
    fn page_size_and_range_are_checked() {
        for size in [0, 1001] {
            let err = InstanceQuery::new()
                .page_size(size)
                .validate()
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("page size") && err.contains(&size.to_string()),
                "{err}"
            );
        }
        assert!(InstanceQuery::new().page_size(1).validate().is_ok());
        assert!(InstanceQuery::new().page_size(1000).validate().is_ok());
        let beyond = InstanceQuery::new().created_from(datetime!(9999-12-31 23:30 -1));
        assert!(beyond
            .validate()
            .unwrap_err()
            .to_string()
            .contains("created time from"));
        let reversed = InstanceQuery::new()
            .created_from(datetime!(2024-02-01 00:00 UTC))
            .created_to(datetime!(2024-01-01 00:00 UTC));
        assert!(reversed
            .validate()
            .unwrap_err()
            .to_string()
            .contains("created time range"));
    }
}
