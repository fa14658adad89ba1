//! Where the table service is and how to sign in: connection strings,
//! account keys, SAS tokens, Microsoft Entra ID identities (and the
//! identity-based settings of a Functions app). Secrets never show in
//! `Debug` output or errors.

mod functions;
pub(crate) mod identity;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

pub use identity::{
    DeveloperSignIn, Identity, ManagedIdentity, ManagedIdentityEndpoint, ManagedIdentityId,
    ServicePrincipal, ServicePrincipalProof, IDENTITY_ENDPOINT_VARIABLE, IDENTITY_HEADER_VARIABLE,
    IMDS_ENDPOINT, PUBLIC_AUTHORITY_HOST,
};

use crate::error::{Error, Result};
use crate::format::limits::{DEFAULT_CUSTOM_STATUS_LIMIT, MAX_CUSTOM_STATUS_LIMIT};

/// The account name of the storage emulator.
pub const EMULATOR_ACCOUNT: &str = "devstoreaccount1";
/// The emulator's well-known, public account key.
pub const EMULATOR_ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// The environment variables of a connection string that
/// [`StorageConfig::from_env`] reads, in order (see there for the
/// identity-based settings between them).
pub const CONNECTION_STRING_VARIABLES: [&str; 2] =
    ["AzureWebJobsStorage", "AZURE_STORAGE_CONNECTION_STRING"];

/// A secret string (an account key, a SAS token). Its `Debug` output is
/// redacted, and it has no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself; call only to hand it to the signer.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// How requests are authorized.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Credentials {
    /// Shared Key: the account name and one of its keys.
    AccountKey {
        /// The storage account name.
        account: String,
        /// The account key (base64).
        key: Secret,
    },
    /// A shared access signature (the query string, with or without `?`).
    SharedAccessSignature(Secret),
    /// Microsoft Entra ID: a bearer token of this identity on every request
    /// (HTTPS only, but on loopback). The identity needs a data role on
    /// the account: Storage Table Data Contributor for the tables, Storage
    /// Blob Data Contributor for the large-payload blobs (the Reader roles
    /// for reading only).
    Token(Identity),
}

/// Where the table service is and how to sign in.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StorageConfig {
    /// The table service endpoint, e.g. `https://acct.table.core.windows.net`
    /// or `http://127.0.0.1:10002/devstoreaccount1`, without a trailing `/`.
    pub table_endpoint: String,
    /// The account name (for Shared Key signing, and for display).
    pub account: String,
    /// How requests are authorized.
    pub credentials: Credentials,
    /// The blob service endpoint, where a task hub keeps payloads too large
    /// for a table column (`{taskhub}-largemessages`), e.g.
    /// `https://acct.blob.core.windows.net`; `None` when unknown (a
    /// connection string that names a TableEndpoint and no BlobEndpoint).
    pub blob_endpoint: Option<String>,
}

impl StorageConfig {
    /// The local emulator at its default addresses: tables on
    /// `127.0.0.1:10002`, blobs on `127.0.0.1:10000`.
    pub fn development_storage() -> Self {
        Self::emulator_at("http://127.0.0.1:10002")
            .with_blob_endpoint(format!("http://127.0.0.1:10000/{EMULATOR_ACCOUNT}"))
    }

    /// An emulator's table service at `base` (scheme, host and port), with
    /// the well-known development account; no blob endpoint (see
    /// [`StorageConfig::with_blob_endpoint`]).
    pub fn emulator_at(base: &str) -> Self {
        StorageConfig {
            table_endpoint: format!("{}/{EMULATOR_ACCOUNT}", base.trim_end_matches('/')),
            account: EMULATOR_ACCOUNT.into(),
            credentials: Credentials::AccountKey {
                account: EMULATOR_ACCOUNT.into(),
                key: Secret::new(EMULATOR_ACCOUNT_KEY),
            },
            blob_endpoint: None,
        }
    }

    /// A public-cloud account with an access key.
    pub fn account_key(account: impl Into<String>, key: impl Into<String>) -> Result<Self> {
        let account = account.into();
        validate_account(&account)?;
        Ok(StorageConfig {
            table_endpoint: format!("https://{account}.table.core.windows.net"),
            blob_endpoint: Some(format!("https://{account}.blob.core.windows.net")),
            credentials: Credentials::AccountKey {
                account: account.clone(),
                key: Secret::new(key),
            },
            account,
        })
    }

    /// A public-cloud account (`https://{account}.table.core.windows.net`,
    /// and `.blob.`) reached with a Microsoft Entra ID identity.
    pub fn token(account: impl Into<String>, identity: Identity) -> Result<Self> {
        let account = account.into();
        validate_account(&account)?;
        Ok(StorageConfig {
            table_endpoint: format!("https://{account}.table.core.windows.net"),
            blob_endpoint: Some(format!("https://{account}.blob.core.windows.net")),
            credentials: Credentials::Token(identity),
            account,
        })
    }

    /// Parses a storage connection string. Accepted forms:
    /// - `UseDevelopmentStorage=true` (optionally with `DevelopmentStorageProxyUri`);
    /// - `DefaultEndpointsProtocol=https;AccountName=..;AccountKey=..;EndpointSuffix=..`;
    /// - `AccountName=..;AccountKey=..;TableEndpoint=..` (e.g. an emulator elsewhere);
    /// - `TableEndpoint=..;SharedAccessSignature=..`.
    ///
    /// The blob endpoint is `BlobEndpoint` when given, else derived like the
    /// table endpoint from AccountName and EndpointSuffix (or port 10000 of
    /// the development storage); with a TableEndpoint and no BlobEndpoint it
    /// is unknown.
    ///
    /// Errors name the missing or malformed setting, never a secret.
    pub fn from_connection_string(text: &str) -> Result<Self> {
        let settings = parse_settings(text)?;
        let get = |name: &str| {
            settings
                .iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(name))
                .map(|(_, value)| value.as_str())
        };

        if get("UseDevelopmentStorage").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return Ok(match get("DevelopmentStorageProxyUri") {
                Some(proxy) => {
                    // The proxy's scheme and host, with the table port.
                    let proxy = proxy.trim_end_matches('/');
                    let (scheme, host) = proxy.split_once("://").unwrap_or(("http", proxy));
                    let host = host.split(['/', ':']).next().unwrap_or(host);
                    Self::emulator_at(&format!("{scheme}://{host}:10002"))
                        .with_blob_endpoint(format!("{scheme}://{host}:10000/{EMULATOR_ACCOUNT}"))
                }
                None => Self::development_storage(),
            });
        }

        let account = get("AccountName").map(str::to_owned);
        let explicit_blob_endpoint = get("BlobEndpoint")
            .map(|endpoint| checked_endpoint("BlobEndpoint", endpoint))
            .transpose()?;
        let mut derived_blob_endpoint = None;
        let table_endpoint = match get("TableEndpoint") {
            Some(endpoint) => checked_endpoint("TableEndpoint", endpoint)?,
            None => {
                let account = account.as_deref().ok_or_else(|| {
                    Error::Config(
                        "the connection string has neither TableEndpoint nor AccountName".into(),
                    )
                })?;
                validate_account(account)?;
                let protocol = get("DefaultEndpointsProtocol").unwrap_or("https");
                if !matches!(protocol, "https" | "http") {
                    return Err(Error::Config(format!(
                        "DefaultEndpointsProtocol must be https or http, got '{protocol}'"
                    )));
                }
                let suffix = get("EndpointSuffix").unwrap_or("core.windows.net");
                derived_blob_endpoint = Some(format!("{protocol}://{account}.blob.{suffix}"));
                format!("{protocol}://{account}.table.{suffix}")
            }
        };
        let blob_endpoint = explicit_blob_endpoint.or(derived_blob_endpoint);

        let credentials = match (get("AccountKey"), get("SharedAccessSignature")) {
            (Some(key), _) => Credentials::AccountKey {
                account: account.clone().ok_or_else(|| {
                    Error::Config("AccountKey is set but AccountName is missing".into())
                })?,
                key: Secret::new(key),
            },
            (None, Some(sas)) => {
                Credentials::SharedAccessSignature(Secret::new(sas.trim_start_matches('?')))
            }
            (None, None) => {
                return Err(Error::Config(
                    "the connection string has neither AccountKey nor SharedAccessSignature".into(),
                ))
            }
        };
        let account = account.unwrap_or_else(|| account_from_endpoint(&table_endpoint));
        Ok(StorageConfig {
            table_endpoint,
            account,
            credentials,
            blob_endpoint,
        })
    }

    /// The same account and credentials with this blob endpoint (where
    /// large payloads are kept).
    pub fn with_blob_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.blob_endpoint = Some(endpoint.into().trim_end_matches('/').to_owned());
        self
    }

    /// The same account and credentials at another table endpoint (a
    /// proxy, a private endpoint).
    pub fn with_table_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.table_endpoint = endpoint.into().trim_end_matches('/').to_owned();
        self
    }

    /// The storage settings of the process environment, read as a
    /// Functions app reads them (see [`StorageConfig::from_settings`]).
    /// `Ok(None)` when none is set.
    pub fn from_env() -> Result<Option<Self>> {
        Self::from_settings(
            std::env::vars_os().filter_map(|(key, value)| {
                Some((key.into_string().ok()?, value.into_string().ok()?))
            }),
        )
    }

    /// [`StorageConfig::from_settings`] with the settings looked up by
    /// `lookup`, which is asked for each name in its usual spelling
    /// (`AzureWebJobsStorage__accountName`, then
    /// `AzureWebJobsStorage:accountName`, ...); `from_settings` takes keys
    /// in any case.
    pub fn from_variables(lookup: impl Fn(&str) -> Option<String>) -> Result<Option<Self>> {
        Self::from_settings(
            functions::known_names()
                .into_iter()
                .filter_map(|name| lookup(&name).map(|value| (name, value))),
        )
    }

    /// The storage connection that settings (environment variables, app
    /// settings) describe, as the Functions host reads `AzureWebJobsStorage`.
    /// Keys are case-insensitive, and `:` separates sections as `__` does;
    /// blank values count as unset. In order:
    ///
    /// 1. `ConnectionStrings:AzureWebJobsStorage`, then `AzureWebJobsStorage`:
    ///    a connection string (it wins over the settings below);
    /// 2. an identity-based connection, when any `AzureWebJobsStorage__`
    ///    setting is set:
    ///    - `__accountName`: the account, with the public cloud's endpoints
    ///      (`https://{name}.table.core.windows.net`, and `.blob.`);
    ///    - `__tableServiceUri`, `__blobServiceUri`: explicit endpoints
    ///      (other clouds, private endpoints, an emulator), each winning
    ///      over the one derived from the account name;
    ///    - `__credential` = `managedidentity`: the app's managed identity
    ///      (`IDENTITY_ENDPOINT` and `IDENTITY_HEADER`, set by App Service
    ///      and Functions); system-assigned, or user-assigned by
    ///      `__clientId` (or `__managedIdentityClientId`),
    ///      `__managedIdentityResourceId` or `__managedIdentityObjectId`:
    ///      naming more than one is [`Error::AmbiguousIdentity`];
    ///    - without `__credential`: [`Identity::Developer`], a service
    ///      principal (`__tenantId`, `__clientId` and `__clientSecret`, or
    ///      the `AZURE_*` variables), else the App Service managed identity
    ///      (user-assigned when `__clientId` or another id names one), else
    ///      the Azure CLI's sign-in;
    /// 3. `AZURE_STORAGE_CONNECTION_STRING`, a connection string.
    ///
    /// `Ok(None)` when none of them is set. Errors name the setting at
    /// fault, never a secret.
    pub fn from_settings<K: AsRef<str>, V: Into<String>>(
        settings: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Option<Self>> {
        functions::storage_config(&functions::Settings::new(settings))
    }
}

fn parse_settings(text: &str) -> Result<Vec<(String, String)>> {
    let mut settings = Vec::new();
    for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        // A SAS or a key may hold '=': split at the first one only.
        let (key, value) = part.split_once('=').ok_or_else(|| {
            let name: String = part
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect();
            Error::Config(format!(
                "setting '{name}' in the connection string has no '='"
            ))
        })?;
        settings.push((key.trim().to_owned(), value.trim().to_owned()));
    }
    if settings.is_empty() {
        return Err(Error::Config("the connection string is empty".into()));
    }
    Ok(settings)
}

/// A service endpoint of a connection string: an http(s) URL without a
/// query string, without its trailing `/`.
fn checked_endpoint(setting: &str, endpoint: &str) -> Result<String> {
    let endpoint = endpoint.trim_end_matches('/');
    if endpoint.contains('?') {
        // Never quoted: a query string here is likely a SAS.
        return Err(Error::Config(format!(
            "{setting} must not hold a query string; give a SAS as SharedAccessSignature"
        )));
    }
    if !(endpoint.starts_with("https://") || endpoint.starts_with("http://")) {
        return Err(Error::Config(format!(
            "{setting} must be an http(s) URL, got '{endpoint}'"
        )));
    }
    Ok(endpoint.to_owned())
}

fn validate_account(account: &str) -> Result<()> {
    if account.is_empty() || !account.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(Error::Config(format!(
            "AccountName must be letters and digits, got '{account}'"
        )));
    }
    Ok(())
}

/// `acct` from `https://acct.table.core.windows.net`, or the first path
/// segment of an emulator URL (`http://127.0.0.1:10002/devstoreaccount1`).
fn account_from_endpoint(endpoint: &str) -> String {
    let rest = endpoint
        .split_once("://")
        .map_or(endpoint, |(_, rest)| rest);
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let first_label = host.split('.').next().unwrap_or_default();
    if host.contains(".table.") {
        first_label.to_owned()
    } else {
        path.split('/').next().unwrap_or_default().to_owned()
    }
}

/// How a store behaves, beyond where it stores. Build it from the default
/// with the setters: `StoreOptions::default().retry_budget(Duration::from_secs(2))`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreOptions {
    /// The custom status limit in bytes of UTF-16 JSON text. Default 16,384
    /// (Durable Functions' limit); at most 65,536.
    pub custom_status_limit: usize,
    /// The total time the client may spend retrying one request on
    /// throttling, server errors and broken connections.
    pub retry_budget: Duration,
    /// How long one HTTP request may take.
    pub request_timeout: Duration,
    /// Retries of a guarded or read-modify-write change on a lost race.
    pub conflict_retries: u32,
    /// The most pages in flight at once when a count, a listing stream in
    /// no particular order, or a purge by filter scans the key space in
    /// parallel ranges. 1 reads one page after another. Default 16.
    pub scan_concurrency: usize,
    /// The largest input or output written, in bytes of UTF-16: a payload
    /// over 60 KiB goes to a gzip blob, as Durable Functions does, up to this
    /// size; reads of blobs stop at it too. Default 16 MiB.
    pub large_payload_limit: usize,
    /// PEM files of certificates to trust besides the built-in roots (and
    /// those of `SSL_CERT_FILE`, always read): the CA of a TLS-inspecting
    /// proxy, an emulator's own certificate.
    pub extra_root_certificates: Vec<PathBuf>,
}

/// The default of [`StoreOptions::large_payload_limit`].
pub const DEFAULT_LARGE_PAYLOAD_LIMIT: usize = 16 * 1024 * 1024;

/// The default of [`StoreOptions::scan_concurrency`].
pub const DEFAULT_SCAN_CONCURRENCY: usize = 16;
/// The most [`StoreOptions::scan_concurrency`] accepts.
pub const MAX_SCAN_CONCURRENCY: usize = 64;

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            custom_status_limit: DEFAULT_CUSTOM_STATUS_LIMIT,
            retry_budget: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            conflict_retries: 200,
            scan_concurrency: DEFAULT_SCAN_CONCURRENCY,
            large_payload_limit: DEFAULT_LARGE_PAYLOAD_LIMIT,
            extra_root_certificates: Vec::new(),
        }
    }
}

impl StoreOptions {
    /// Sets the custom status limit, in bytes of UTF-16 (at most 65,536).
    pub fn custom_status_limit(mut self, bytes: usize) -> Self {
        self.custom_status_limit = bytes;
        self
    }

    /// Sets the time one request may spend on retries (zero: no retry).
    pub fn retry_budget(mut self, budget: Duration) -> Self {
        self.retry_budget = budget;
        self
    }

    /// Sets how long one HTTP request may take.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Sets how often a guarded change retries a lost race.
    pub fn conflict_retries(mut self, retries: u32) -> Self {
        self.conflict_retries = retries;
        self
    }

    /// Sets how many pages a parallel scan keeps in flight (1 to 64; 1
    /// scans one page after another).
    pub fn scan_concurrency(mut self, concurrency: usize) -> Self {
        self.scan_concurrency = concurrency;
        self
    }

    /// Sets the largest input or output written to (or read from) a blob,
    /// in bytes of UTF-16 (at least 61,440: what a column keeps).
    pub fn large_payload_limit(mut self, bytes: usize) -> Self {
        self.large_payload_limit = bytes;
        self
    }

    /// Trusts the certificates of a PEM file besides the built-in roots,
    /// for the account's requests and its sign-in.
    pub fn extra_root_certificate(mut self, pem_file: impl Into<PathBuf>) -> Self {
        self.extra_root_certificates.push(pem_file.into());
        self
    }

    /// Checks the options; a limit above Table Storage's is refused, and so
    /// is a scan concurrency outside 1 to 64, and a large payload limit
    /// under what a column keeps.
    pub fn validate(&self) -> Result<()> {
        if self.large_payload_limit < crate::format::large::COLUMN_LIMIT_BYTES {
            return Err(Error::invalid(
                "large payload limit",
                format!(
                    "{} bytes is under {} (what a column keeps without a blob)",
                    self.large_payload_limit,
                    crate::format::large::COLUMN_LIMIT_BYTES
                ),
            ));
        }
        if !(1..=MAX_SCAN_CONCURRENCY).contains(&self.scan_concurrency) {
            return Err(Error::invalid(
                "scan concurrency",
                format!(
                    "{} is outside 1..={MAX_SCAN_CONCURRENCY}",
                    self.scan_concurrency
                ),
            ));
        }
        if self.custom_status_limit == 0 || self.custom_status_limit > MAX_CUSTOM_STATUS_LIMIT {
            return Err(Error::invalid(
                "custom status limit",
                format!(
                    "{} bytes is outside 1..={MAX_CUSTOM_STATUS_LIMIT} (Table Storage's 64 KiB property limit)",
                    self.custom_status_limit
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "c2VjcmV0LWtleS12YWx1ZQ==";

    #[test]
    fn development_storage() {
        let config = StorageConfig::from_connection_string("UseDevelopmentStorage=true").unwrap();
        assert_eq!(
            config.table_endpoint,
            "http://127.0.0.1:10002/devstoreaccount1"
        );
        assert_eq!(config.account, "devstoreaccount1");
        let proxied = StorageConfig::from_connection_string(
            "UseDevelopmentStorage=true;DevelopmentStorageProxyUri=http://10.0.0.5",
        )
        .unwrap();
        assert_eq!(
            proxied.table_endpoint,
            "http://10.0.0.5:10002/devstoreaccount1"
        );
    }

    #[test]
    fn account_key_with_suffix() {
        let config = StorageConfig::from_connection_string(&format!(
            "DefaultEndpointsProtocol=https;AccountName=myacct;AccountKey={KEY};EndpointSuffix=core.chinacloudapi.cn"
        ))
        .unwrap();
        assert_eq!(
            config.table_endpoint,
            "https://myacct.table.core.chinacloudapi.cn"
        );
        assert_eq!(
            config.credentials,
            Credentials::AccountKey {
                account: "myacct".into(),
                key: Secret::new(KEY)
            }
        );
        let default_suffix =
            StorageConfig::from_connection_string(&format!("AccountName=myacct;AccountKey={KEY}"))
                .unwrap();
        assert_eq!(
            default_suffix.table_endpoint,
            "https://myacct.table.core.windows.net"
        );
    }

    #[test]
    fn explicit_table_endpoint_with_key() {
        let config = StorageConfig::from_connection_string(&format!(
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={KEY};TableEndpoint=http://127.0.0.1:10102/devstoreaccount1/;"
        ))
        .unwrap();
        assert_eq!(
            config.table_endpoint,
            "http://127.0.0.1:10102/devstoreaccount1"
        );
    }

    #[test]
    fn blob_endpoints_are_given_derived_or_unknown() {
        let blob = |text: &str| {
            StorageConfig::from_connection_string(text)
                .unwrap()
                .blob_endpoint
        };
        assert_eq!(
            blob("UseDevelopmentStorage=true").as_deref(),
            Some("http://127.0.0.1:10000/devstoreaccount1")
        );
        assert_eq!(
            blob("UseDevelopmentStorage=true;DevelopmentStorageProxyUri=http://10.0.0.5")
                .as_deref(),
            Some("http://10.0.0.5:10000/devstoreaccount1")
        );
        assert_eq!(
            blob(&format!(
                "AccountName=myacct;AccountKey={KEY};EndpointSuffix=core.chinacloudapi.cn"
            ))
            .as_deref(),
            Some("https://myacct.blob.core.chinacloudapi.cn")
        );
        assert_eq!(
            blob(&format!(
                "AccountName=a;AccountKey={KEY};TableEndpoint=http://127.0.0.1:1/a;BlobEndpoint=http://127.0.0.1:2/a/"
            ))
            .as_deref(),
            Some("http://127.0.0.1:2/a")
        );
        assert_eq!(
            blob(&format!(
                "AccountName=a;AccountKey={KEY};TableEndpoint=http://127.0.0.1:1/a"
            )),
            None
        );
        assert_eq!(
            StorageConfig::account_key("myacct", KEY)
                .unwrap()
                .blob_endpoint
                .as_deref(),
            Some("https://myacct.blob.core.windows.net")
        );
        let err = StorageConfig::from_connection_string(&format!(
            "AccountName=a;AccountKey={KEY};BlobEndpoint=https://a.blob.core.windows.net/?sig=secret"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("BlobEndpoint") && !err.contains("secret"),
            "{err}"
        );
    }

    #[test]
    fn account_name_and_key() {
        let config = StorageConfig::account_key("myacct", KEY).unwrap();
        assert_eq!(
            config.table_endpoint,
            "https://myacct.table.core.windows.net"
        );
        assert_eq!(
            config.credentials,
            Credentials::AccountKey {
                account: "myacct".into(),
                key: Secret::new(KEY)
            }
        );
        assert!(StorageConfig::account_key("bad name", KEY).is_err());
    }

    #[test]
    fn sas_connection_string() {
        let config = StorageConfig::from_connection_string(
            "TableEndpoint=https://myacct.table.core.windows.net/;SharedAccessSignature=?sv=2022-11-02&ss=t&sig=abc%3D",
        )
        .unwrap();
        assert_eq!(config.account, "myacct");
        assert_eq!(
            config.credentials,
            Credentials::SharedAccessSignature(Secret::new("sv=2022-11-02&ss=t&sig=abc%3D"))
        );
    }

    #[test]
    fn bad_connection_strings_name_the_setting_not_the_secret() {
        for (text, expected) in [
            ("", "empty"),
            (
                "AccountName=acct",
                "neither AccountKey nor SharedAccessSignature",
            ),
            (
                &format!("AccountKey={KEY}"),
                "neither TableEndpoint nor AccountName",
            ),
            (
                &format!("AccountName=my-acct;AccountKey={KEY}"),
                "AccountName",
            ),
            (
                &format!("TableEndpoint=ftp://x;AccountName=a;AccountKey={KEY}"),
                "TableEndpoint",
            ),
            (
                &format!("AccountName=a;AccountKey={KEY};Broken"),
                "'Broken'",
            ),
            (
                &format!("TableEndpoint=https://a.table.core.windows.net/?sv=1&sig={KEY};AccountName=a;AccountKey={KEY}"),
                "must not hold a query string",
            ),
        ] {
            let err = StorageConfig::from_connection_string(text)
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{text}: {err}");
            assert!(!err.contains(KEY), "{err}");
        }
    }

    #[test]
    fn debug_output_hides_secrets() {
        let key = StorageConfig::from_connection_string(&format!("AccountName=a;AccountKey={KEY}"))
            .unwrap();
        let sas = StorageConfig::from_connection_string(
            "TableEndpoint=https://a.table.core.windows.net;SharedAccessSignature=sig=topsecret",
        )
        .unwrap();
        for config in [key, sas] {
            let debug = format!("{config:?} {config:#?}");
            assert!(
                !debug.contains(KEY) && !debug.contains("topsecret"),
                "{debug}"
            );
            assert!(debug.contains("<redacted>"), "{debug}");
        }
    }

    #[test]
    fn custom_status_limit_is_capped_at_64_kib() {
        let options = |limit| StoreOptions::default().custom_status_limit(limit);
        assert_eq!(StoreOptions::default().custom_status_limit, 16_384);
        assert!(options(65_536).validate().is_ok());
        let err = options(65_537).validate().unwrap_err().to_string();
        assert!(
            err.contains("custom status limit") && err.contains("65537"),
            "{err}"
        );
        assert!(options(0).validate().is_err());
    }

    #[test]
    fn environment_prefers_azure_web_jobs_storage() {
        // A lookup of our own: no test touches the process environment.
        let [first, second] = CONNECTION_STRING_VARIABLES;
        let with = |pairs: &[(&str, &str)]| {
            let pairs: Vec<(String, String)> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            StorageConfig::from_variables(move |name| {
                pairs
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone())
            })
        };
        assert_eq!(with(&[]).unwrap(), None);
        assert_eq!(with(&[(first, "  ")]).unwrap(), None, "blank is unset");
        let second_only = format!("AccountName=second;AccountKey={KEY}");
        assert_eq!(
            with(&[(second, &second_only)]).unwrap().unwrap().account,
            "second"
        );
        assert_eq!(
            with(&[
                (first, "UseDevelopmentStorage=true"),
                (second, &second_only)
            ])
            .unwrap()
            .unwrap()
            .account,
            EMULATOR_ACCOUNT
        );
        let err = with(&[(first, "AccountName=x")]).unwrap_err().to_string();
        assert!(
            err.contains("AzureWebJobsStorage"),
            "the error names the variable: {err}"
        );
    }
}
