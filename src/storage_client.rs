//! The one module that talks to the Azure client crates.
//!
//! It wraps `azure_data_tables` 0.21 and mends its known defects: keys are
//! quoted for URLs here (the crate does not double `'`), batch responses are
//! checked operation by operation (the crate returns `Ok` for a failed
//! batch), batch rules and the Table Storage limits that the emulator does not
//! enforce are checked before sending, the retry budget is seconds rather
//! than minutes, and connections are pooled. Every error is mapped into the
//! crate's [`Error`] here.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use azure_core::error::ErrorKind;
use azure_core::{ExponentialRetryOptions, RetryOptions, TransportOptions};
use azure_data_tables::clients::TableServiceClientBuilder;
use azure_data_tables::operations::QueryEntityResponse;
use azure_data_tables::prelude::{IfMatchCondition, Select};
use azure_storage::{CloudLocation, StorageCredentials};
use futures::StreamExt;
use serde_json::Value;

use crate::config::{Credentials, StorageConfig, StoreOptions};
use crate::error::{Error, Result, SizeUnit};
use crate::model::{utf16_units, ETag, WriteCondition};
use crate::wire::{Entity, MAX_KEY_UTF16_UNITS, MAX_STRING_UTF16_UNITS, PARTITION_KEY, ROW_KEY};

/// Table Storage's limit on an entity: 1 MiB.
pub(crate) const MAX_ENTITY_BYTES: usize = 1024 * 1024;
/// Table Storage's limit on properties per entity, besides the system ones.
pub(crate) const MAX_PROPERTIES: usize = 252;
/// Table Storage's limit on operations in one batch.
pub(crate) const MAX_BATCH_OPERATIONS: usize = 100;

/// How long a pooled connection may idle: under the emulator's 5 s
/// keep-alive, so a request never lands on a connection the server is closing.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(4);

/// A client for one table.
#[derive(Clone)]
pub(crate) struct TableClient {
    service: azure_data_tables::prelude::TableServiceClient,
    table: azure_data_tables::prelude::TableClient,
    endpoint: Arc<str>,
}

impl fmt::Debug for TableClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TableClient")
            .field("endpoint", &self.endpoint)
            .field("table", &self.table.table_name())
            .finish()
    }
}

/// Where a query resumes: the service's NextPartitionKey and NextRowKey.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Continuation {
    pub next_partition_key: String,
    pub next_row_key: Option<String>,
}

/// One page of a query.
#[derive(Debug)]
pub(crate) struct Page {
    /// Each row with its ETag (absent only if the service sent none).
    pub entities: Vec<(Entity, Option<ETag>)>,
    pub continuation: Option<Continuation>,
}

/// How an update writes an existing entity.
#[derive(Debug, Clone, Copy)]
enum Update {
    Merge,
    Replace,
}

/// One operation of an entity-group transaction.
#[derive(Debug, Clone)]
pub(crate) enum BatchOperation {
    /// Inserts are batched by the tests only.
    #[cfg(test)]
    Insert(Entity),
    Delete {
        row_key: String,
        condition: WriteCondition,
    },
}

impl TableClient {
    pub(crate) fn new(
        config: &StorageConfig,
        table_name: &str,
        options: &StoreOptions,
    ) -> Result<Self> {
        let credentials = match &config.credentials {
            Credentials::AccountKey { account, key } => StorageCredentials::access_key(
                account.clone(),
                azure_core::auth::Secret::new(key.expose().to_owned()),
            ),
            Credentials::SharedAccessSignature(sas) => StorageCredentials::sas_token(sas.expose())
                .map_err(|_| {
                    Error::Config("the shared access signature is not a valid query string".into())
                })?,
        };
        let http = reqwest::Client::builder()
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .timeout(options.request_timeout)
            .build()
            .map_err(|e| Error::Config(format!("cannot build the HTTP client: {e}")))?;
        let retry = RetryOptions::exponential(
            ExponentialRetryOptions::default()
                .initial_delay(Duration::from_millis(100))
                .max_delay(Duration::from_secs(2))
                .max_retries(5u32)
                .max_total_elapsed(options.retry_budget),
        );
        let location = CloudLocation::Custom {
            account: config.account.clone(),
            uri: config.table_endpoint.clone(),
        };
        let service = TableServiceClientBuilder::with_location(location, credentials)
            .transport(TransportOptions::new(Arc::new(http)))
            .retry(retry)
            .build();
        Ok(TableClient {
            table: service.table_client(table_name),
            service,
            endpoint: config.table_endpoint.as_str().into(),
        })
    }

    /// A client for another table of the same account, sharing this one's
    /// connection pool and settings.
    pub(crate) fn sibling(&self, table_name: &str) -> TableClient {
        TableClient {
            table: self.service.table_client(table_name),
            service: self.service.clone(),
            endpoint: Arc::clone(&self.endpoint),
        }
    }

    /// Creates the table; an existing table is fine.
    pub(crate) async fn create_table_if_missing(&self) -> Result<()> {
        match self.table.create().await {
            Ok(_) => Ok(()),
            Err(e) => match map_error(e) {
                Error::Storage { status: 409, .. } => Ok(()),
                other => Err(other),
            },
        }
    }

    /// Inserts a new entity; 409 `EntityAlreadyExists` when it exists.
    pub(crate) async fn insert(&self, entity: &Entity) -> Result<ETag> {
        let (pk, rk) = keys_of(entity)?;
        check_entity(pk, rk, entity)?;
        let response: azure_data_tables::operations::InsertEntityResponse<Value> = self
            .table
            .insert(entity)
            .map_err(map_error)?
            .await
            .map_err(map_error)?;
        Ok(ETag::new(response.etag.to_string()))
    }

    /// Reads one entity, optionally only some columns. `None` when absent.
    pub(crate) async fn get(
        &self,
        pk: &str,
        rk: &str,
        select: Option<&[&str]>,
    ) -> Result<Option<(Entity, ETag)>> {
        let mut request = self.entity(pk, rk).get::<Entity>();
        if let Some(columns) = select {
            request = request.select(Select::new(columns.join(",")));
        }
        match request.await {
            Ok(response) => Ok(Some((
                response.entity,
                ETag::new(response.etag.to_string()),
            ))),
            Err(e) => match map_error(e) {
                Error::Storage { status: 404, .. } => Ok(None),
                other => Err(other),
            },
        }
    }

    /// Merges properties into an existing entity (404 when absent).
    pub(crate) async fn merge(
        &self,
        pk: &str,
        rk: &str,
        entity: &Entity,
        condition: &WriteCondition,
    ) -> Result<ETag> {
        self.update(pk, rk, entity, condition, Update::Merge).await
    }

    /// Replaces an existing entity whole (404 when absent).
    pub(crate) async fn replace(
        &self,
        pk: &str,
        rk: &str,
        entity: &Entity,
        condition: &WriteCondition,
    ) -> Result<ETag> {
        self.update(pk, rk, entity, condition, Update::Replace)
            .await
    }

    async fn update(
        &self,
        pk: &str,
        rk: &str,
        entity: &Entity,
        condition: &WriteCondition,
        how: Update,
    ) -> Result<ETag> {
        check_entity(pk, rk, entity)?;
        let client = self.entity(pk, rk);
        let request = match how {
            Update::Merge => client.merge(entity, if_match(condition)),
            Update::Replace => client.update(entity, if_match(condition)),
        };
        let response = request.map_err(map_error)?.await.map_err(map_error)?;
        Ok(ETag::new(response.etag.to_string()))
    }

    /// Deletes an entity. `Ok(false)` when it did not exist.
    pub(crate) async fn delete(
        &self,
        pk: &str,
        rk: &str,
        condition: &WriteCondition,
    ) -> Result<bool> {
        match self
            .entity(pk, rk)
            .delete()
            .if_match(if_match(condition))
            .await
        {
            Ok(_) => Ok(true),
            Err(e) => match map_error(e) {
                Error::Storage { status: 404, .. } => Ok(false),
                other => Err(other),
            },
        }
    }

    /// Fetches one page of a query. `filter` must have been built with
    /// [`odata_string`] for every value it holds.
    pub(crate) async fn query_page(
        &self,
        filter: Option<&str>,
        select: Option<&[&str]>,
        top: Option<u32>,
        resume: Option<&Continuation>,
    ) -> Result<Page> {
        let mut query = self.table.query();
        if let Some(filter) = filter {
            query = query.filter(filter.to_owned());
        }
        if let Some(columns) = select {
            query = query.select(Select::new(columns.join(",")));
        }
        if let Some(top) = top {
            query = query.top(top);
        }
        if let Some(resume) = resume {
            query = query.initial_partition_key(resume.next_partition_key.clone());
            if let Some(row_key) = &resume.next_row_key {
                query = query.initial_row_key(row_key.clone());
            }
        }
        let mut pages = query.into_stream::<Entity>();
        let page: QueryEntityResponse<Entity> = match pages.next().await {
            Some(Ok(page)) => page,
            // The table does not exist (yet): nothing matches. (Any other
            // 404, a wrong endpoint path, stays an error.)
            Some(Err(e)) => match map_error(e) {
                Error::Storage {
                    status: 404,
                    code: Some(code),
                    ..
                } if code == "TableNotFound" => {
                    return Ok(Page {
                        entities: Vec::new(),
                        continuation: None,
                    })
                }
                other => return Err(other),
            },
            None => return Err(Error::Transport("the query returned no page".into())),
        };
        let continuation =
            azure_core::Continuable::continuation(&page).map(|(pk, rk)| Continuation {
                next_partition_key: pk,
                next_row_key: rk,
            });
        let entities = page
            .entities
            .into_iter()
            .map(|mut entity| {
                let etag = entity
                    .remove("odata.etag")
                    .and_then(|v| v.as_str().map(ETag::new));
                entity.retain(|name, _| !name.starts_with("odata."));
                (entity, etag)
            })
            .collect();
        Ok(Page {
            entities,
            continuation,
        })
    }

    /// Runs an entity-group transaction on one partition: all operations
    /// succeed or none does. Returns the new ETag of each operation that
    /// writes one.
    pub(crate) async fn batch(
        &self,
        pk: &str,
        operations: &[BatchOperation],
    ) -> Result<Vec<Option<ETag>>> {
        check_batch(pk, operations)?;
        let mut transaction = self.table.partition_key_client(odata_key(pk)).transaction();
        for operation in operations {
            transaction = match operation {
                #[cfg(test)]
                BatchOperation::Insert(entity) => transaction.insert(entity),
                BatchOperation::Delete { row_key, condition } => {
                    transaction.delete(odata_key(row_key), Some(if_match(condition)))
                }
            }
            .map_err(map_error)?;
        }
        let response = transaction.await.map_err(map_error)?;
        // The crate answers Ok for a failed batch: the failure is in the
        // operation responses (a failed changeset has one, for the culprit).
        if let Some(failed) = response
            .operation_responses
            .iter()
            .find(|r| !r.status_code.is_success())
        {
            return Err(Error::Storage {
                status: u16::from(failed.status_code),
                code: None,
                message: format!(
                    "the batch of {} operations on one partition was rolled back",
                    operations.len()
                ),
            });
        }
        if response.operation_responses.len() != operations.len() {
            return Err(Error::Transport(format!(
                "the batch answered {} operation results for {} operations",
                response.operation_responses.len(),
                operations.len()
            )));
        }
        Ok(response
            .operation_responses
            .into_iter()
            .map(|r| r.etag.map(|etag| ETag::new(etag.to_string())))
            .collect())
    }

    fn entity(&self, pk: &str, rk: &str) -> azure_data_tables::prelude::EntityClient {
        self.table
            .partition_key_client(odata_key(pk))
            .entity_client(odata_key(rk))
    }
}

/// A key as it goes inside `PartitionKey='...'` in a URL: quotes doubled.
/// (The client crate does not do it: `a'b` would address key `a`.)
fn odata_key(key: &str) -> String {
    key.replace('\'', "''")
}

/// A string literal for an OData filter: quoted, with quotes doubled, so no
/// value can change the filter's meaning.
pub(crate) fn odata_string(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

fn if_match(condition: &WriteCondition) -> IfMatchCondition {
    match condition {
        WriteCondition::Unconditional => IfMatchCondition::Any,
        WriteCondition::IfMatch(etag) => IfMatchCondition::Etag(etag.as_str().into()),
    }
}

fn keys_of(entity: &Entity) -> Result<(&str, &str)> {
    let key = |name: &str| {
        entity
            .get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| Error::invalid("entity", format!("{name} is missing")))
    };
    Ok((key(PARTITION_KEY)?, key(ROW_KEY)?))
}

/// Checks the Table Storage limits that the emulator does not enforce.
pub(crate) fn check_entity(pk: &str, rk: &str, entity: &Entity) -> Result<()> {
    for (field, key) in [("partition key", pk), ("row key", rk)] {
        let units = utf16_units(key);
        if units > MAX_KEY_UTF16_UNITS {
            return Err(Error::TooLarge {
                field,
                actual: units,
                limit: MAX_KEY_UTF16_UNITS,
                unit: SizeUnit::Utf16Units,
            });
        }
    }
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
            let units = utf16_units(text);
            if units > MAX_STRING_UTF16_UNITS {
                return Err(Error::invalid(
                    "entity",
                    format!(
                        "property {name} holds {units} UTF-16 code units, the limit is {MAX_STRING_UTF16_UNITS}"
                    ),
                ));
            }
        }
    }
    if properties > MAX_PROPERTIES {
        return Err(Error::TooLarge {
            field: "entity",
            actual: properties,
            limit: MAX_PROPERTIES,
            unit: SizeUnit::Properties,
        });
    }
    if size > MAX_ENTITY_BYTES {
        return Err(Error::TooLarge {
            field: "entity",
            actual: size,
            limit: MAX_ENTITY_BYTES,
            unit: SizeUnit::EntityBytes,
        });
    }
    Ok(())
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

fn check_batch(pk: &str, operations: &[BatchOperation]) -> Result<()> {
    if operations.is_empty() {
        return Err(Error::invalid("batch", "has no operations"));
    }
    if operations.len() > MAX_BATCH_OPERATIONS {
        return Err(Error::TooLarge {
            field: "batch",
            actual: operations.len(),
            limit: MAX_BATCH_OPERATIONS,
            unit: SizeUnit::Operations,
        });
    }
    let mut row_keys = std::collections::HashSet::new();
    for operation in operations {
        let row_key = match operation {
            #[cfg(test)]
            BatchOperation::Insert(entity) => {
                let (entity_pk, rk) = keys_of(entity)?;
                if entity_pk != pk {
                    return Err(Error::invalid(
                        "batch",
                        format!("all operations must share one partition key: found '{entity_pk}' beside '{pk}'"),
                    ));
                }
                check_entity(entity_pk, rk, entity)?;
                rk
            }
            BatchOperation::Delete { row_key, .. } => {
                check_entity(pk, row_key, &Entity::new())?;
                row_key
            }
        };
        if !row_keys.insert(row_key) {
            return Err(Error::invalid(
                "batch",
                format!("row key '{row_key}' appears twice; a batch touches an entity once"),
            ));
        }
    }
    Ok(())
}

/// Maps a client crate error into the crate's error, never quoting a URL's
/// query string (where a SAS token would be). For a service error it keeps
/// the service's own message, not the client's dump of the whole response.
fn map_error(error: azure_core::Error) -> Error {
    match error.kind().clone() {
        ErrorKind::HttpResponse { status, error_code } => Error::Storage {
            status: u16::from(status),
            message: error
                .as_http_error()
                .and_then(|e| e.error_message())
                .and_then(|m| m.lines().next())
                .filter(|m| !m.trim().is_empty())
                .map(|m| redact_urls(m.trim()))
                .unwrap_or_else(|| status.canonical_reason().to_owned()),
            code: error_code,
        },
        ErrorKind::Io => Error::Transport(redact_urls(&error_chain(&error))),
        ErrorKind::Credential => Error::Config(redact_urls(&error_chain(&error))),
        _ => Error::Transport(redact_urls(&error_chain(&error))),
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

/// Drops the query string of every URL in `text` (up to the next space,
/// quote or closing parenthesis; encoded query values hold none of them).
fn redact_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("://") {
        let url_end = rest[start..]
            .find(char::is_whitespace)
            .map_or(rest.len(), |i| start + i);
        match rest[start..url_end].find('?') {
            Some(q) => {
                let query_start = start + q;
                let query_end = rest[query_start..]
                    .find(|c: char| c.is_whitespace() || matches!(c, ')' | '"' | '\'' | '>'))
                    .map_or(rest.len(), |i| query_start + i);
                out.push_str(&rest[..query_start]);
                out.push_str("?<redacted>");
                rest = &rest[query_end..];
            }
            None => {
                out.push_str(&rest[..url_end]);
                rest = &rest[url_end..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entity(value: Value) -> Entity {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn quotes_are_doubled_for_urls_and_filters() {
        assert_eq!(odata_key("a'b''c"), "a''b''''c");
        assert_eq!(odata_string("x' or '1' eq '1"), "'x'' or ''1'' eq ''1'");
    }

    #[test]
    fn string_properties_are_capped_at_32768_units() {
        let ok = entity(json!({"P": "a".repeat(32_768)}));
        assert!(check_entity("pk", "", &ok).is_ok());
        let big = entity(json!({"P": "a".repeat(32_769)}));
        let err = check_entity("pk", "", &big).unwrap_err().to_string();
        assert!(
            err.contains("property P holds 32769 UTF-16 code units, the limit is 32768"),
            "{err}"
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
    fn batches_hold_1_to_100_operations_of_one_partition() {
        let delete = |rk: String| BatchOperation::Delete {
            row_key: rk,
            condition: WriteCondition::Unconditional,
        };
        let hundred: Vec<_> = (0..100).map(|i| delete(i.to_string())).collect();
        assert!(check_batch("pk", &hundred).is_ok());
        let too_many: Vec<_> = (0..101).map(|i| delete(i.to_string())).collect();
        let err = check_batch("pk", &too_many).unwrap_err().to_string();
        assert_eq!(
            err,
            "batch is too large: 101 operations, the limit is 100 operations"
        );
        assert!(check_batch("pk", &[])
            .unwrap_err()
            .to_string()
            .contains("no operations"));

        let other_partition =
            BatchOperation::Insert(entity(json!({"PartitionKey": "other", "RowKey": "1"})));
        let err = check_batch("pk", &[delete("0".into()), other_partition])
            .unwrap_err()
            .to_string();
        assert!(err.contains("one partition key"), "{err}");

        let twice = [delete("1".into()), delete("1".into())];
        assert!(check_batch("pk", &twice)
            .unwrap_err()
            .to_string()
            .contains("appears twice"));
    }

    #[test]
    fn urls_in_errors_lose_their_query_string() {
        let text = "error sending request for url (https://a.table.core.windows.net/T()?sv=1&sig=SECRET): refused";
        let redacted = redact_urls(text);
        assert!(!redacted.contains("SECRET"), "{redacted}");
        assert_eq!(redacted, "error sending request for url (https://a.table.core.windows.net/T()?<redacted>): refused");
        assert_eq!(redact_urls("no url here"), "no url here");
    }
}

/// The client against a real table service: what the unit tests above
/// cannot show.
#[cfg(test)]
mod emulator_tests {
    use super::*;
    use crate::emulator::Azurite;
    use serde_json::json;
    use std::sync::OnceLock;

    fn azurite() -> &'static Azurite {
        static AZURITE: OnceLock<Azurite> = OnceLock::new();
        AZURITE.get_or_init(|| {
            Azurite::start_bundled().unwrap_or_else(|e| panic!("Azurite must start: {e}"))
        })
    }

    async fn table(name: &str) -> TableClient {
        let options = StoreOptions {
            retry_budget: Duration::ZERO,
            ..StoreOptions::default()
        };
        let client = TableClient::new(&azurite().config(), name, &options).unwrap();
        client.create_table_if_missing().await.unwrap();
        client
    }

    fn row(pk: &str, rk: &str) -> Entity {
        serde_json::from_value(json!({"PartitionKey": pk, "RowKey": rk, "N": 1})).unwrap()
    }

    #[tokio::test]
    async fn a_batch_writes_all_its_operations() {
        let client = table("BatchAll").await;
        let ops: Vec<_> = (0..100)
            .map(|i| BatchOperation::Insert(row("p'q", &i.to_string())))
            .collect();
        let etags = client.batch("p'q", &ops).await.unwrap();
        assert_eq!(etags.len(), 100);
        assert!(client.get("p'q", "99", None).await.unwrap().is_some());
        let deletes: Vec<_> = (0..100)
            .map(|i| BatchOperation::Delete {
                row_key: i.to_string(),
                condition: WriteCondition::Unconditional,
            })
            .collect();
        client.batch("p'q", &deletes).await.unwrap();
        assert!(client.get("p'q", "0", None).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_failed_batch_is_an_error_and_writes_nothing() {
        let client = table("BatchFail").await;
        client.insert(&row("p", "exists")).await.unwrap();
        let ops = [
            BatchOperation::Insert(row("p", "new")),
            BatchOperation::Insert(row("p", "exists")),
        ];
        let err = client.batch("p", &ops).await.unwrap_err();
        assert!(matches!(err, Error::Storage { status: 409, .. }), "{err}");
        assert!(
            client.get("p", "new", None).await.unwrap().is_none(),
            "the batch was rolled back"
        );
    }

    #[tokio::test]
    async fn queries_page_and_filters_with_quoted_values() {
        let client = table("QueryPages").await;
        for pk in ["a", "b'c", "d"] {
            client.insert(&row(pk, "")).await.unwrap();
        }
        let filter = format!("PartitionKey eq {}", odata_string("b'c"));
        let page = client
            .query_page(Some(&filter), None, None, None)
            .await
            .unwrap();
        assert_eq!(page.entities.len(), 1);
        assert_eq!(page.entities[0].0["PartitionKey"], "b'c");

        let injection = format!(
            "PartitionKey eq {}",
            odata_string("x' or PartitionKey ne 'x")
        );
        let page = client
            .query_page(Some(&injection), None, None, None)
            .await
            .unwrap();
        assert!(
            page.entities.is_empty(),
            "a quoted value cannot widen the filter"
        );

        let mut seen = Vec::new();
        let mut resume = None;
        loop {
            let page = client
                .query_page(None, Some(&["PartitionKey"]), Some(1), resume.as_ref())
                .await
                .unwrap();
            seen.extend(
                page.entities
                    .into_iter()
                    .map(|(e, _)| e["PartitionKey"].as_str().unwrap().to_owned()),
            );
            match page.continuation {
                Some(next) => resume = Some(next),
                None => break,
            }
        }
        assert_eq!(seen, ["a", "b'c", "d"]);
    }

    /// A server that answers every request with 503, counting them.
    fn always_unavailable() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = Arc::clone(&count);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { break };
                let mut buf = [0u8; 8192];
                let _ = stream.read(&mut buf);
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let _ = stream.write_all(
                    b"HTTP/1.1 503 Service Unavailable\r\nx-ms-error-code: ServerBusy\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                );
            }
        });
        (base, count)
    }

    #[tokio::test]
    async fn server_errors_are_retried_within_a_budget_of_seconds() {
        let (base, requests) = always_unavailable();
        let config = StorageConfig::emulator_at(&base);
        let options = StoreOptions {
            retry_budget: Duration::from_secs(1),
            ..StoreOptions::default()
        };
        let client = TableClient::new(&config, "Busy", &options).unwrap();
        let started = std::time::Instant::now();
        let err = client.get("pk", "", None).await.unwrap_err();
        let elapsed = started.elapsed();
        assert!(matches!(err, Error::Storage { status: 503, .. }), "{err}");
        assert!(err.is_transient());
        assert!(
            requests.load(std::sync::atomic::Ordering::SeqCst) > 1,
            "503 is retried"
        );
        // The crate's default policy would keep at it for over a minute.
        assert!(
            elapsed < Duration::from_secs(5),
            "gave up after {elapsed:?}"
        );
    }
}
