//! The one module that talks to Azure: nothing outside it names a type of
//! the Azure client crates.
//!
//! It wraps `azure_data_tables` 0.21 and mends its known defects: keys are
//! quoted for URLs here (the crate does not double `'`), batch responses are
//! checked operation by operation (the crate returns `Ok` for a failed
//! batch), the Table Storage limits that the emulator does not enforce are
//! checked before sending, connections are pooled, and retries are this
//! module's own: one loop with a budget of seconds, which knows whether a
//! write it sent again may have been applied already (see [`Written`]).

mod batch;
mod blobs;
mod errors;
pub(crate) mod identity;
mod metadata;
mod pager;
mod refusals;
mod transport;

pub(crate) use blobs::BlobContainer;
pub(crate) use metadata::ResponseFormat;
pub(crate) use pager::{Continuation, Page, PageRequest};
#[allow(unused_imports)] // the blob service's clients use it
pub(crate) use refusals::{DataService, Refusals};

use std::ffi::OsString;
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use azure_core::{ClientOptions, RetryOptions, TransportOptions};
use azure_data_tables::clients::TableServiceClientBuilder;
use azure_data_tables::prelude::{IfMatchCondition, Select};
use azure_storage::{CloudLocation, StorageCredentials};
use serde_json::Value;
use tokio::time::Instant;

use crate::config::{Credentials, StorageConfig, StoreOptions};
use crate::error::{Error, Result};
use crate::format::columns::{Entity, PARTITION_KEY, ROW_KEY};
use crate::format::limits::check_entity;
use crate::format::row::StoredRow;
use crate::model::{ETag, WriteCondition};
use errors::map_error;

/// How long a pooled connection may idle: under the emulator's 5 s
/// keep-alive, so a request never lands on a connection the server is closing.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(4);
/// The first pause before a retry; it doubles up to [`MAX_RETRY_DELAY`].
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(100);
const MAX_RETRY_DELAY: Duration = Duration::from_secs(2);

/// A client for one table.
#[derive(Clone)]
pub(crate) struct TableClient {
    service: azure_data_tables::prelude::TableServiceClient,
    table: azure_data_tables::prelude::TableClient,
    endpoint: Arc<str>,
    retry_budget: Duration,
    /// What a blob container of the same account is built from.
    account: Arc<str>,
    credentials: StorageCredentials,
    http: Arc<dyn azure_core::HttpClient>,
}

impl fmt::Debug for TableClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TableClient")
            .field("endpoint", &errors::redact_urls(&self.endpoint))
            .field("table", &self.table.table_name())
            .finish()
    }
}

/// The variable that names a PEM file of certificates to trust besides the
/// built-in roots.
pub(crate) const SSL_CERT_FILE: &str = "SSL_CERT_FILE";

/// The credentials that sign every request of `config`'s account, table
/// and blob alike; a token credential asks for its tokens on `http`.
pub(crate) fn storage_credentials(
    config: &StorageConfig,
    http: &reqwest::Client,
) -> Result<StorageCredentials> {
    Ok(match &config.credentials {
        Credentials::AccountKey { account, key } => StorageCredentials::access_key(
            account.clone(),
            azure_core::auth::Secret::new(key.expose().to_owned()),
        ),
        Credentials::SharedAccessSignature(sas) => StorageCredentials::sas_token(sas.expose())
            .map_err(|_| {
                Error::Config("the shared access signature is not a valid query string".into())
            })?,
        Credentials::Token(identity) => {
            for endpoint in std::iter::once(&config.table_endpoint).chain(&config.blob_endpoint) {
                refuse_plain_http(endpoint)?;
            }
            StorageCredentials::token_credential(identity::token_credential(identity, http)?)
        }
    })
}

/// A token goes over HTTPS only, or to this machine (an emulator, which
/// refuses it over HTTP itself and says so).
fn refuse_plain_http(endpoint: &str) -> Result<()> {
    if endpoint.starts_with("http://") && !errors::is_loopback(endpoint) {
        return Err(Error::Config(format!(
            "{} is plain HTTP, and a sign-in token is sent over HTTPS only",
            errors::redact_urls(endpoint)
        )));
    }
    Ok(())
}

/// The HTTP client of every request to the account, and of its sign-in:
/// pooled connections, the options' timeouts, and the built-in roots with
/// the certificates of `SSL_CERT_FILE` and of the options beside them.
pub(crate) fn http_client(options: &StoreOptions) -> Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .timeout(options.request_timeout)
        .connect_timeout(options.request_timeout.min(Duration::from_secs(10)));
    for certificate in extra_roots(
        std::env::var_os(SSL_CERT_FILE),
        &options.extra_root_certificates,
    )? {
        builder = builder.add_root_certificate(certificate);
    }
    builder
        .build()
        .map_err(|e| Error::Config(format!("cannot build the HTTP client: {e}")))
}

/// The certificates of `SSL_CERT_FILE` (when set and not empty) and of
/// `files`, each file checked: readable, PEM, at least one certificate that
/// TLS can take as a root. Errors name the variable or the file.
fn extra_roots(
    ssl_cert_file: Option<OsString>,
    files: &[PathBuf],
) -> Result<Vec<reqwest::Certificate>> {
    let from_variable = ssl_cert_file.filter(|v| !v.is_empty()).map(|v| {
        (
            format!("{SSL_CERT_FILE} ({})", Path::new(&v).display()),
            PathBuf::from(v),
        )
    });
    let from_options = files.iter().map(|file| {
        (
            format!("root certificate file {}", file.display()),
            file.clone(),
        )
    });
    let mut roots = Vec::new();
    for (named, file) in from_variable.into_iter().chain(from_options) {
        let pem = std::fs::read(&file)
            .map_err(|e| Error::Config(format!("{named} cannot be read: {e}")))?;
        let certificates = reqwest::Certificate::from_pem_bundle(&pem)
            .ok()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| {
                Error::Config(format!(
                    "{named} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
                ))
            })?;
        // TLS checks a root only when a client is built: build one with them alone.
        certificates
            .iter()
            .fold(
                reqwest::Client::builder().tls_built_in_root_certs(false),
                |builder, c| builder.add_root_certificate(c.clone()),
            )
            .build()
            .map_err(|e| {
                Error::Config(format!("{named} holds a certificate TLS cannot use: {e}"))
            })?;
        roots.extend(certificates);
    }
    Ok(roots)
}

/// What became of a write, and whether an earlier attempt of it may have
/// been applied although its answer was lost (a broken connection, a
/// timeout, a server error midway). The caller decides what a 409 or 412
/// after such an attempt means: it may be this write's own first attempt.
#[derive(Debug)]
pub(crate) struct Written<T> {
    pub result: Result<T>,
    pub uncertain: bool,
}

impl TableClient {
    pub(crate) fn new(
        config: &StorageConfig,
        table_name: &str,
        options: &StoreOptions,
    ) -> Result<Self> {
        let http = http_client(options)?;
        let credentials = storage_credentials(config, &http)?;
        let http: Arc<dyn azure_core::HttpClient> = Arc::new(transport::Http(http));
        let location = CloudLocation::Custom {
            account: config.account.clone(),
            uri: config.table_endpoint.clone(),
        };
        // Reads ask the smallest response that still carries ETags (see
        // `metadata`). The client options go first: the builder's transport
        // and retry setters write into them.
        let client_options = ClientOptions::default()
            .per_call_policies(vec![Arc::new(metadata::MinimalMetadata) as Arc<_>])
            .per_retry_policies(vec![
                Arc::new(Refusals(DataService::Table)) as Arc<_>,
                Arc::new(transport::Transport(http.clone())) as Arc<_>,
            ]);
        // Retries are ours (see `send`): the crate's policy cannot tell a
        // write that may have been applied from one that was not.
        let service = TableServiceClientBuilder::with_location(location, credentials.clone())
            .client_options(client_options)
            .transport(TransportOptions::new(http.clone()))
            .retry(RetryOptions::none())
            .build();
        Ok(TableClient {
            table: service.table_client(table_name),
            service,
            endpoint: config.table_endpoint.as_str().into(),
            retry_budget: options.retry_budget,
            account: config.account.as_str().into(),
            credentials,
            http,
        })
    }

    /// A client for another table of the same account, sharing this one's
    /// connection pool and settings.
    pub(crate) fn sibling(&self, table_name: &str) -> TableClient {
        TableClient {
            table: self.service.table_client(table_name),
            service: self.service.clone(),
            endpoint: Arc::clone(&self.endpoint),
            retry_budget: self.retry_budget,
            account: Arc::clone(&self.account),
            credentials: self.credentials.clone(),
            http: Arc::clone(&self.http),
        }
    }

    /// The table's name.
    pub(crate) fn table_name(&self) -> &str {
        self.table.table_name()
    }

    /// Sends a request, and again while the failure is transient and the
    /// retry budget lasts, pausing a random, doubling moment in between.
    /// The one retry loop of every request.
    async fn send<T, F, Fut>(&self, mut request: F) -> Written<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = azure_core::Result<T>>,
    {
        let deadline = Instant::now() + self.retry_budget;
        let mut uncertain = false;
        let mut delay = FIRST_RETRY_DELAY;
        loop {
            let error = match request().await {
                Ok(value) => {
                    return Written {
                        result: Ok(value),
                        uncertain,
                    }
                }
                Err(error) => error,
            };
            let (error, retry) = map_error(error, &self.endpoint);
            let error = match error {
                Error::Storage {
                    status: 404,
                    code: Some(code),
                    ..
                } if code == "TableNotFound" => Error::TableNotFound {
                    table: self.table_name().to_owned(),
                },
                other => other,
            };
            // Recorded before deciding to give up: the last attempt too may
            // have been applied.
            uncertain |= retry.maybe_applied;
            let pause = delay.mul_f64(0.5 + fastrand::f64() / 2.0);
            if !retry.retry || Instant::now() + pause > deadline {
                return Written {
                    result: Err(error),
                    uncertain,
                };
            }
            tracing::debug!(%error, ?pause, "retrying a table request");
            tokio::time::sleep(pause).await;
            delay = (delay * 2).min(MAX_RETRY_DELAY);
        }
    }

    /// Creates the table; an existing table is fine.
    pub(crate) async fn create_table_if_missing(&self) -> Result<()> {
        match self.send(|| self.table.create().into_future()).await.result {
            Ok(_) => Ok(()),
            Err(Error::Storage {
                status: 409,
                code: Some(code),
                ..
            }) if code == "TableAlreadyExists" => Ok(()),
            Err(other) => Err(other),
        }
    }

    /// Inserts a new entity; 409 `EntityAlreadyExists` when it exists.
    pub(crate) async fn insert(&self, entity: &Entity) -> Written<ETag> {
        if let Err(e) = keys_of(entity).and_then(|(pk, rk)| check_entity(pk, rk, entity)) {
            return Written::refused(e);
        }
        self.send(|| async {
            // `Prefer: return-no-content` (the crate's default, made explicit):
            // a 204 with the ETag header, not the entity echoed back.
            let response: azure_data_tables::operations::InsertEntityResponse<Value> =
                self.table.insert(entity)?.return_entity(false).await?;
            Ok(ETag::new(response.etag.to_string()))
        })
        .await
    }

    /// Reads one entity, optionally only some columns. `None` when absent;
    /// [`Error::TableNotFound`] when its table is.
    pub(crate) async fn get<R: StoredRow>(
        &self,
        pk: &str,
        rk: &str,
        select: Option<&[&str]>,
    ) -> Result<Option<(R, ETag)>> {
        let select = select.map(|columns| Select::new(columns.join(",")));
        let read = self
            .send(|| {
                let mut request = self.entity(pk, rk).get::<R>();
                if let Some(select) = &select {
                    request = request.select(select.clone());
                }
                request.into_future()
            })
            .await;
        match read.result {
            Ok(response) => Ok(Some((
                response.entity,
                ETag::new(response.etag.to_string()),
            ))),
            Err(Error::Storage { status: 404, .. }) => Ok(None),
            Err(other) => Err(other),
        }
    }

    /// Merges properties into an existing entity (404 when absent).
    pub(crate) async fn merge(
        &self,
        pk: &str,
        rk: &str,
        entity: &Entity,
        condition: &WriteCondition,
    ) -> Written<ETag> {
        self.update(pk, rk, entity, condition, Update::Merge).await
    }

    /// Replaces an existing entity whole (404 when absent).
    pub(crate) async fn replace(
        &self,
        pk: &str,
        rk: &str,
        entity: &Entity,
        condition: &WriteCondition,
    ) -> Written<ETag> {
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
    ) -> Written<ETag> {
        if let Err(e) = check_entity(pk, rk, entity) {
            return Written::refused(e);
        }
        self.send(|| async {
            let client = self.entity(pk, rk);
            let response = match how {
                Update::Merge => client.merge(entity, if_match(condition))?.await?,
                Update::Replace => client.update(entity, if_match(condition))?.await?,
            };
            Ok(ETag::new(response.etag.to_string()))
        })
        .await
    }

    /// Deletes an entity: `true` when deleted, `false` when it was not there.
    pub(crate) async fn delete(
        &self,
        pk: &str,
        rk: &str,
        condition: &WriteCondition,
    ) -> Written<bool> {
        let sent = self
            .send(|| {
                self.entity(pk, rk)
                    .delete()
                    .if_match(if_match(condition))
                    .into_future()
            })
            .await;
        Written {
            result: match sent.result {
                Ok(_) => Ok(true),
                // Nothing to delete: no row, or no table.
                Err(Error::Storage { status: 404, .. } | Error::TableNotFound { .. }) => Ok(false),
                Err(other) => Err(other),
            },
            uncertain: sent.uncertain,
        }
    }

    fn entity(&self, pk: &str, rk: &str) -> azure_data_tables::prelude::EntityClient {
        self.table
            .partition_key_client(odata_key(pk))
            .entity_client(odata_key(rk))
    }
}

/// How an update writes an existing entity.
#[derive(Debug, Clone, Copy)]
enum Update {
    Merge,
    Replace,
}

impl<T> Written<T> {
    /// A write refused before sending.
    fn refused(error: Error) -> Self {
        Written {
            result: Err(error),
            uncertain: false,
        }
    }
}

/// A key as it goes inside `PartitionKey='...'` in a URL: quotes doubled.
/// (The client crate does not do it: `a'b` would address key `a`.)
fn odata_key(key: &str) -> String {
    key.replace('\'', "''")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_are_doubled_for_urls() {
        assert_eq!(odata_key("a'b''c"), "a''b''''c");
    }

    #[test]
    fn root_certificates_are_read_and_checked_and_errors_name_their_source() {
        let dir = std::env::temp_dir().join(format!("durable-status-roots-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.pem");
        let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
        std::fs::write(&good, certified.cert.pem()).unwrap();
        let not_pem = dir.join("not.pem");
        std::fs::write(&not_pem, "hello").unwrap();
        let bad_der = dir.join("bad.pem");
        std::fs::write(
            &bad_der,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let missing = dir.join("missing.pem");

        assert_eq!(extra_roots(None, &[]).unwrap().len(), 0);
        assert_eq!(
            extra_roots(Some("".into()), &[]).unwrap().len(),
            0,
            "empty is unset"
        );
        assert_eq!(
            extra_roots(Some(good.clone().into()), std::slice::from_ref(&good))
                .unwrap()
                .len(),
            2
        );
        for (file, why) in [
            (&missing, "cannot be read"),
            (&not_pem, "holds no PEM certificate"),
            (&bad_der, "TLS cannot use"),
        ] {
            let err = extra_roots(Some(file.clone().into()), &[]).unwrap_err();
            assert!(matches!(err, Error::Config(_)), "{err:?}");
            let text = err.to_string();
            assert!(
                text.contains("SSL_CERT_FILE")
                    && text.contains(&file.display().to_string())
                    && text.contains(why),
                "{text}"
            );
            let text = extra_roots(None, std::slice::from_ref(file))
                .unwrap_err()
                .to_string();
            assert!(
                text.contains(&file.display().to_string()) && text.contains(why),
                "{text}"
            );
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_token_goes_over_https_or_to_loopback_only() {
        assert!(refuse_plain_http("https://a.table.core.windows.net").is_ok());
        assert!(refuse_plain_http("http://127.0.0.1:10002/devstoreaccount1").is_ok());
        let err = refuse_plain_http("http://a.table.core.windows.net")
            .unwrap_err()
            .to_string();
        assert!(err.contains("plain HTTP") && err.contains("HTTPS"), "{err}");
        let config = StorageConfig::token(
            "acct",
            crate::Identity::Developer(crate::DeveloperSignIn::default()),
        )
        .unwrap()
        .with_blob_endpoint("http://acct.blob.core.windows.net");
        let err = storage_credentials(&config, &reqwest::Client::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("http://acct.blob.core.windows.net"), "{err}");
    }
}

/// The client against a real table service: what the unit tests cannot show.
#[cfg(all(test, feature = "emulator"))]
mod emulator_tests;
