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

use super::scan::{scan, ScanRequest};
use super::{InstanceStore, ReadOptions};
use crate::error::{Error, Result};
use crate::format::columns::RUNTIME_STATUS;
use crate::format::filter::{InstanceFilter, KeyRange, MAX_COMPARISONS};
use crate::format::keys::{partition_key_of, unescape_key};
use crate::format::limits::utf16_units;
use crate::format::row::InstanceRow;
use crate::format::time::{format_time, to_utc};
use crate::model::{preview, ETag, InstanceStatus, RuntimeStatus};
use crate::table::{Continuation, PageRequest, ResponseFormat};

/// The page size of a query unless set: the HTTP API's default `top`.
pub const DEFAULT_PAGE_SIZE: u32 = 100;
/// The largest page Table Storage returns.
pub const MAX_PAGE_SIZE: u32 = 1000;
/// The longest orchestrator name a query takes, in UTF-16 code units (a
/// Table Storage string property's limit).
const MAX_NAME_LENGTH: usize = 32_768;

/// Which instances to find and what to read of them. Filters combine with
/// "and"; the statuses of the set combine with "or", and so do the
/// orchestrator names of the set.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InstanceQuery {
    pub(crate) statuses: Vec<RuntimeStatus>,
    pub(crate) created_from: Option<OffsetDateTime>,
    pub(crate) created_to: Option<OffsetDateTime>,
    pub(crate) instance_id_prefix: Option<String>,
    pub(crate) task_hub_name: Option<String>,
    pub(crate) names: Vec<String>,
    pub(crate) read: ReadOptions,
    /// Rows per page when set; otherwise see [`InstanceQuery::page_size`].
    pub(crate) page_size: Option<u32>,
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

    /// Only instances of this orchestrator: an exact, case-sensitive match
    /// on the Name column (no prefix, no pattern). Adds to the names given
    /// before: `.name("A").name("B")` finds instances of A or of B.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.names.push(name.into());
        self.names.sort();
        self.names.dedup();
        self
    }

    /// Only instances of one of these orchestrators (exact matches on the
    /// Name column, or-ed like statuses), replacing the names given before;
    /// an empty set: any name. An empty name is refused when the query
    /// runs, and so is a filter of more than 15 comparisons in all (Table
    /// Storage's limit: each name and each status is one, a prefix two, a
    /// time bound or the task hub name one).
    pub fn names<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.names = names.into_iter().map(Into::into).collect();
        self.names.sort();
        self.names.dedup();
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

    /// Rows per page, 1 to 1000. Unless set: 100 for
    /// [`InstanceStore::query_page`] (the HTTP API's default `top`); for the
    /// [`InstanceStore::query`] stream, 1,000 when the listing leaves Input
    /// and Output out (the fewest requests), and 100 when it reads them (a
    /// page of payloads of up to 64 KiB each stays bounded in memory).
    pub fn page_size(mut self, page_size: u32) -> Self {
        self.page_size = Some(page_size);
        self
    }

    /// The page size of a stream: the one set, or the default above.
    fn stream_page_size(&self) -> u32 {
        let payload_free = !self.read.include_input && !self.read.include_output;
        self.page_size.unwrap_or(if payload_free {
            MAX_PAGE_SIZE
        } else {
            DEFAULT_PAGE_SIZE
        })
    }

    pub(crate) fn validate(&self) -> Result<()> {
        for (field, time) in [
            ("created time from", self.created_from),
            ("created time to", self.created_to),
        ] {
            if let Some(time) = time {
                if to_utc(time).is_none() {
                    return Err(Error::invalid(
                        field,
                        format!("{time} is outside years 1 to 9999 in UTC"),
                    ));
                }
            }
        }
        if let Some(size) = self.page_size.filter(|s| !(1..=MAX_PAGE_SIZE).contains(s)) {
            return Err(Error::invalid(
                "page size",
                format!("{size} is outside 1..={MAX_PAGE_SIZE}"),
            ));
        }
        if let (Some(from), Some(to)) = (self.created_from, self.created_to) {
            if from > to {
                return Err(Error::invalid(
                    "created time range",
                    format!("from {} is after to {}", format_time(from), format_time(to)),
                ));
            }
        }
        if let Some(prefix) = &self.instance_id_prefix {
            partition_key_of("instance id prefix", prefix)?;
        }
        if self.names.iter().any(String::is_empty) {
            return Err(Error::invalid("orchestrator name", "must not be empty"));
        }
        if let Some(long) = self
            .names
            .iter()
            .find(|name| utf16_units(name) > MAX_NAME_LENGTH)
        {
            return Err(Error::invalid(
                "orchestrator name",
                format!(
                    "{} is longer than {MAX_NAME_LENGTH} UTF-16 code units",
                    preview(long)
                ),
            ));
        }
        let comparisons = self.instance_filter().comparisons();
        if !self.names.is_empty() && comparisons > MAX_COMPARISONS {
            return Err(Error::invalid(
                "orchestrator name",
                format!(
                    "{} names with the other filters make {comparisons} comparisons; \
                     Table Storage accepts at most {MAX_COMPARISONS} in one filter",
                    self.names.len()
                ),
            ));
        }
        Ok(())
    }

    /// The OData filter, every value quoted; `None` for every row.
    pub(crate) fn filter(&self) -> Option<String> {
        self.instance_filter().to_odata()
    }

    /// The OData filter of the rows of `range` that match the other filters
    /// (`range` stands for the prefix's range, and lies within it).
    pub(crate) fn filter_in(&self, range: &KeyRange) -> Option<String> {
        InstanceFilter {
            key_range: Some(range),
            ..self.instance_filter()
        }
        .to_odata()
    }

    /// The filter without its key range (for counting what a range adds).
    pub(crate) fn instance_filter_without_range(&self) -> InstanceFilter<'_> {
        InstanceFilter {
            instance_id_prefix: None,
            ..self.instance_filter()
        }
    }

    fn instance_filter(&self) -> InstanceFilter<'_> {
        InstanceFilter {
            statuses: &self.statuses,
            created_from: self.created_from,
            created_to: self.created_to,
            instance_id_prefix: self.instance_id_prefix.as_deref(),
            task_hub_name: self.task_hub_name.as_deref(),
            names: &self.names,
            key_range: None,
        }
    }

    /// The request of a scan of the matching rows, reading `select`, with
    /// the page size set or `default_size`.
    pub(crate) fn request(
        &self,
        select: Option<Vec<&'static str>>,
        default_size: u32,
    ) -> PageRequest {
        PageRequest {
            filter: self.filter(),
            select,
            top: Some(self.page_size.unwrap_or(default_size)),
            format: ResponseFormat::MinimalMetadata,
        }
    }

    /// Whether a row with partition key `key` matches what the key range is
    /// meant to select: the range is exact on the escaped ids, and this
    /// check keeps it so whatever a service's key order.
    pub(crate) fn keeps_key(&self, key: Option<&str>) -> bool {
        self.instance_id_prefix
            .as_deref()
            .is_none_or(|prefix| key.is_some_and(|key| unescape_key(key).starts_with(prefix)))
    }
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
#[non_exhaustive]
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
        let page = self
            .client
            .query_page(
                &query.request(Some(query.read.select()), DEFAULT_PAGE_SIZE),
                resume.as_ref(),
            )
            .await?;
        let continuation_token = page.continuation.as_ref().map(encode_token);
        Ok(InstancePage {
            instances: self.decode_rows(query, page.rows).await?,
            continuation_token,
        })
    }

    /// Every matching instance, as a lazy stream that fetches the next page
    /// only when the previous one has been consumed.
    pub fn query(&self, query: &InstanceQuery) -> BoxStream<'static, Result<InstanceStatus>> {
        if let Err(e) = query.validate() {
            return futures::stream::once(async { Err(e) }).boxed();
        }
        let query = query.clone();
        let store = self.clone();
        self.client
            .pages(
                query.request(Some(query.read.select()), query.stream_page_size()),
                None,
            )
            .and_then(move |page| {
                let (store, query) = (store.clone(), query.clone());
                async move { store.decode_rows(&query, page.rows).await }
            })
            .map_ok(|instances| futures::stream::iter(instances.into_iter().map(Ok)))
            .try_flatten()
            .boxed()
    }

    /// Every matching instance, as a lazy stream in no particular order:
    /// the key space is read in ranges, up to
    /// [`StoreOptions::scan_concurrency`](crate::StoreOptions::scan_concurrency)
    /// pages at once (see [`InstanceStore::query`] for page sizes). The
    /// same instances as [`InstanceStore::query`], each once, much sooner
    /// on a big task hub; memory stays bounded by the pages in flight. A
    /// hub of one page costs one request, as the ordered stream does.
    pub fn query_unordered(
        &self,
        query: &InstanceQuery,
    ) -> BoxStream<'static, Result<InstanceStatus>> {
        if let Err(e) = query.validate() {
            return futures::stream::once(async { Err(e) }).boxed();
        }
        let request = ScanRequest {
            query: query.clone(),
            columns: Some(query.read.select()),
            page_size: query.stream_page_size(),
            format: ResponseFormat::MinimalMetadata,
        };
        let (store, query) = (self.clone(), query.clone());
        scan(self.client.clone(), request, self.options.scan_concurrency)
            .and_then(move |rows| {
                let (store, query) = (store.clone(), query.clone());
                async move { store.decode_rows(&query, rows).await }
            })
            .map_ok(|instances| futures::stream::iter(instances.into_iter().map(Ok)))
            .try_flatten()
            .boxed()
    }

    /// Counts the matching instances per runtime status, reading only the
    /// key and the RuntimeStatus column with no metadata, 1,000 rows a page
    /// unless the query sets a page size, in parallel ranges as
    /// [`InstanceStore::query_unordered`] reads them (memory stays bounded).
    pub async fn count_by_status(&self, query: &InstanceQuery) -> Result<StatusCounts> {
        query.validate()?;
        let request = ScanRequest {
            query: query.clone(),
            columns: Some(vec![RUNTIME_STATUS]),
            page_size: query.page_size.unwrap_or(MAX_PAGE_SIZE),
            format: ResponseFormat::NoMetadata,
        };
        scan(self.client.clone(), request, self.options.scan_concurrency)
            .try_fold(StatusCounts::default(), |mut counts, rows| {
                for (row, _) in &rows {
                    *counts.0.entry(InstanceRow::status(row)).or_default() += 1;
                }
                futures::future::ready(Ok(counts))
            })
            .await
    }
}

impl InstanceStore {
    /// The instances of a page's rows that the query keeps, their payloads
    /// kept in blobs fetched unless the query says not to.
    async fn decode_rows(
        &self,
        query: &InstanceQuery,
        rows: Vec<(InstanceRow, Option<ETag>)>,
    ) -> Result<Vec<InstanceStatus>> {
        let mut rows: Vec<_> = rows
            .into_iter()
            .filter(|(row, _)| query.keeps_key(row.partition_key.as_deref()))
            .collect();
        if query.read.fetch_large_payloads {
            rows = self.fetch_large_payloads_of(rows).await?;
        }
        rows.into_iter()
            .map(|(row, etag)| row.decode(etag.unwrap_or_else(|| ETag::new(""))))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn the_query_builds_its_filter() {
        let query = InstanceQuery::new()
            .statuses([
                RuntimeStatus::Failed,
                RuntimeStatus::Completed,
                RuntimeStatus::Failed,
            ])
            .instance_id_prefix("ord/")
            .task_hub_name("Hub");
        assert_eq!(
            query.filter().unwrap(),
            "PartitionKey ge 'ord^0' and PartitionKey lt 'ord^1' \
             and (RuntimeStatus eq 'Completed' or RuntimeStatus eq 'Failed') \
             and TaskHubName eq 'Hub'"
        );
        assert_eq!(InstanceQuery::new().filter(), None);
        assert_eq!(InstanceQuery::new().instance_id_prefix("").filter(), None);
        assert_eq!(
            InstanceQuery::new().names(Vec::<String>::new()).filter(),
            None
        );
    }

    #[test]
    fn names_are_a_set_quoted_and_checked() {
        let query = InstanceQuery::new().name("B").name("A'").name("B");
        assert_eq!(query.filter().unwrap(), "(Name eq 'A''' or Name eq 'B')");
        assert_eq!(
            query.clone().names(["C"]).filter().unwrap(),
            "(Name eq 'C')"
        );
        assert!(query.validate().is_ok());
        let empty = InstanceQuery::new()
            .names(["A", ""])
            .validate()
            .unwrap_err();
        assert!(
            matches!(
                empty,
                Error::Invalid {
                    field: "orchestrator name",
                    ..
                }
            ),
            "{empty}"
        );
        let fifteen = InstanceQuery::new()
            .statuses(RuntimeStatus::ALL)
            .names((0..7).map(|i| format!("n{i}")));
        assert!(fifteen.validate().is_ok());
        let err = fifteen.name("n7").validate().unwrap_err().to_string();
        assert!(
            err.contains("orchestrator name") && err.contains("16 comparisons"),
            "{err}"
        );
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
