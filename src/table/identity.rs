//! Microsoft Entra ID sign-in: the token credentials built from an
//! [`Identity`], all on the account's one HTTP client.
//!
//! - [`ManagedIdentityCredential`] is our own: the App Service and Functions
//!   protocol (`IDENTITY_ENDPOINT`, `X-IDENTITY-HEADER`, API 2019-08-01),
//!   user-assigned identities by client, resource or object id, and a
//!   virtual machine's metadata endpoint only when asked for. The 0.21
//!   crate's managed identity credentials are system-assigned only and read
//!   their secret from the process environment.
//! - The developer chain uses the 0.21 crate's service principal
//!   credentials and our own Azure CLI one (the crate's leaves `az` running
//!   when it does not answer), and never the crate's virtual machine
//!   credential (its `DefaultAzureCredential` always calls 169.254.169.254).
//!
//! Failures are [`SignInError`]s inside the client crate's error, which
//! `errors::map_error` turns into the crate's own errors. No secret, header
//! or token is ever part of one, nor of a `Debug` output.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use azure_core::error::ErrorKind;
use azure_identity::{ClientSecretCredential, WorkloadIdentityCredential};
use serde_json::Value;
use time::OffsetDateTime;

pub use async_trait::async_trait;
pub use azure_core::auth::{AccessToken, Secret as TokenSecret, TokenCredential};
pub use azure_core::error::ErrorKind as CredentialErrorKind;
pub use azure_core::Error as CredentialError;

use crate::config::identity::{
    AUTHORITY_HOST_VARIABLE, CLIENT_ID_VARIABLE, CLIENT_SECRET_VARIABLE,
    FEDERATED_TOKEN_FILE_VARIABLE, TENANT_ID_VARIABLE,
};
use crate::config::{
    DeveloperSignIn, Identity, ManagedIdentity, ManagedIdentityEndpoint, ManagedIdentityId,
    ServicePrincipal, ServicePrincipalProof, StoreOptions, IDENTITY_ENDPOINT_VARIABLE,
    IDENTITY_HEADER_VARIABLE, IMDS_ENDPOINT, PUBLIC_AUTHORITY_HOST,
};
use crate::error::{chain_text, Error, Result};

/// How long a managed identity endpoint may take to answer.
pub const MANAGED_IDENTITY_TIMEOUT: Duration = Duration::from_secs(5);
/// A token is fetched again once it has less than this left to live.
pub const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(5 * 60);
/// How long the Azure CLI may take to hand out a token.
pub const AZURE_CLI_TIMEOUT: Duration = Duration::from_secs(60);
/// The App Service protocol's version.
const APP_SERVICE_API_VERSION: &str = "2019-08-01";
/// The instance metadata endpoint's version.
const IMDS_API_VERSION: &str = "2018-02-01";

/// The credential of [`Identity`], on `http` (the account's client).
pub(crate) fn token_credential(
    identity: &Identity,
    http: &reqwest::Client,
) -> Result<Arc<dyn TokenCredential>> {
    Ok(match identity {
        Identity::ManagedIdentity(identity) => Arc::new(ManagedIdentityCredential::with_client(
            identity,
            http.clone(),
        )?),
        Identity::Developer(sign_in) => Arc::new(DeveloperCredential::new(sign_in, http)?),
        Identity::Custom(custom) => Arc::clone(&custom.0),
    })
}

/// A credential of the caller's, for [`Identity::Custom`]: any
/// [`TokenCredential`] of the 0.21 Azure crates (`azure_identity` 0.21's
/// `DefaultAzureCredential`, or one of your own). Its `Debug` output shows
/// nothing of it; two are equal when they share the same credential.
#[derive(Clone)]
pub struct CustomCredential(Arc<dyn TokenCredential>);

impl CustomCredential {
    /// Wraps a credential.
    pub fn new(credential: impl TokenCredential + 'static) -> Self {
        CustomCredential(Arc::new(credential))
    }

    /// Wraps a shared credential.
    pub fn from_arc(credential: Arc<dyn TokenCredential>) -> Self {
        CustomCredential(credential)
    }
}

impl fmt::Debug for CustomCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CustomCredential(..)")
    }
}

impl PartialEq for CustomCredential {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::addr_eq(Arc::as_ptr(&self.0), Arc::as_ptr(&other.0))
    }
}

impl Eq for CustomCredential {}

/// Why no token came: carried inside the client crate's error and mapped
/// into [`Error::NoIdentity`] or [`Error::SignIn`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SignInError {
    /// Nothing to sign in with: what was looked for.
    NoIdentity { tried: Vec<String> },
    /// A token was asked for and not given.
    Refused {
        /// Who was asked.
        credential: String,
        /// The HTTP status of the answer, when there was one.
        status: Option<u16>,
        /// What it said (never a secret).
        message: String,
        /// Whether asking again later may succeed.
        transient: bool,
    },
}

impl fmt::Display for SignInError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&Error::from(self.clone()).to_string())
    }
}

impl std::error::Error for SignInError {}

impl From<SignInError> for Error {
    fn from(error: SignInError) -> Self {
        match error {
            SignInError::NoIdentity { tried } => Error::NoIdentity { tried },
            SignInError::Refused {
                credential,
                status,
                message,
                transient,
            } => Error::SignIn {
                credential,
                status,
                message,
                transient,
            },
        }
    }
}

impl SignInError {
    fn into_azure(self) -> azure_core::Error {
        azure_core::Error::new(ErrorKind::Credential, self)
    }
}

/// The storage resource of a token request's scopes (one scope, with or
/// without `/.default`).
fn resource_of(scopes: &[&str]) -> azure_core::Result<String> {
    match scopes {
        [scope] => Ok(scope.strip_suffix("/.default").unwrap_or(scope).to_owned()),
        _ => Err(azure_core::Error::message(
            ErrorKind::Credential,
            "a managed identity token is asked for exactly one scope",
        )),
    }
}

/// Tokens by resource, fetched again [`REFRESH_BEFORE_EXPIRY`] before they
/// expire; one fetch at a time.
#[derive(Default)]
struct TokenCache(tokio::sync::Mutex<HashMap<String, AccessToken>>);

impl TokenCache {
    async fn get<F, Fut>(&self, resource: &str, fetch: F) -> azure_core::Result<AccessToken>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = azure_core::Result<AccessToken>>,
    {
        let mut tokens = self.0.lock().await;
        if let Some(token) = tokens.get(resource) {
            if fresh(token, OffsetDateTime::now_utc()) {
                return Ok(token.clone());
            }
        }
        let token = fetch().await?;
        tokens.insert(resource.to_owned(), token.clone());
        Ok(token)
    }

    async fn clear(&self) {
        self.0.lock().await.clear();
    }
}

/// Whether a token may still be sent at `now`: more than
/// [`REFRESH_BEFORE_EXPIRY`] left.
fn fresh(token: &AccessToken, now: OffsetDateTime) -> bool {
    token.expires_on - now > REFRESH_BEFORE_EXPIRY
}

/// A managed identity's tokens, from the App Service and Functions
/// endpoint (`IDENTITY_ENDPOINT` with the `IDENTITY_HEADER` secret, API
/// version 2019-08-01) or, when asked for, a virtual machine's metadata
/// endpoint (169.254.169.254, API version 2018-02-01); system-assigned, or
/// user-assigned by client id (`client_id=`), resource id (`mi_res_id=`;
/// `msi_res_id=` on a VM) or object id (`principal_id=`; `object_id=` on a
/// VM).
///
/// Each request may take [`MANAGED_IDENTITY_TIMEOUT`]; tokens are kept
/// until [`REFRESH_BEFORE_EXPIRY`] before they expire. The answer's
/// `expires_on` may be a number or a string of Unix seconds (`expires_in`
/// when it is missing). Its `Debug` output shows the endpoint, never the
/// secret or a token.
pub struct ManagedIdentityCredential {
    endpoint: ManagedIdentityEndpoint,
    id: ManagedIdentityId,
    http: reqwest::Client,
    cache: TokenCache,
}

impl fmt::Debug for ManagedIdentityCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManagedIdentityCredential")
            .field("endpoint", &self.endpoint)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl ManagedIdentityCredential {
    /// The identity `id` through the App Service endpoint `endpoint`, with
    /// its secret `header`, on an HTTP client of its own (with the roots of
    /// `SSL_CERT_FILE`).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when `endpoint` is not an http(s) URL or
    /// `SSL_CERT_FILE` cannot be read.
    pub fn app_service(
        endpoint: &str,
        header: impl Into<String>,
        id: ManagedIdentityId,
    ) -> Result<Self> {
        Self::new(ManagedIdentity::new(
            id,
            ManagedIdentityEndpoint::app_service(endpoint, header),
        ))
    }

    /// The identity `id` through the endpoint of `IDENTITY_ENDPOINT` and
    /// `IDENTITY_HEADER`.
    ///
    /// # Errors
    ///
    /// [`Error::NoIdentity`] when they are not set; otherwise as
    /// [`ManagedIdentityCredential::app_service`].
    pub fn from_env(id: ManagedIdentityId) -> Result<Self> {
        Self::new(ManagedIdentity::from_env(id))
    }

    /// The identity `id` through a virtual machine's instance metadata
    /// endpoint, 169.254.169.254.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when `SSL_CERT_FILE` cannot be read.
    pub fn imds(id: ManagedIdentityId) -> Result<Self> {
        Self::new(ManagedIdentity::new(id, ManagedIdentityEndpoint::Imds))
    }

    /// The credential of `identity`, on an HTTP client of its own.
    ///
    /// # Errors
    ///
    /// [`Error::NoIdentity`] when it has no endpoint, [`Error::Config`]
    /// when its endpoint is not an http(s) URL or `SSL_CERT_FILE` cannot
    /// be read.
    pub fn new(identity: ManagedIdentity) -> Result<Self> {
        Self::with_client(&identity, super::http_client(&StoreOptions::default())?)
    }

    pub(crate) fn with_client(identity: &ManagedIdentity, http: reqwest::Client) -> Result<Self> {
        let Some(endpoint) = identity.endpoint.clone() else {
            return Err(Error::NoIdentity {
                tried: vec![no_managed_identity_endpoint()],
            });
        };
        if let ManagedIdentityEndpoint::AppService { endpoint: url, .. } = &endpoint {
            let parsed = reqwest::Url::parse(url).ok();
            if !parsed.is_some_and(|u| matches!(u.scheme(), "http" | "https")) {
                return Err(Error::Config(format!(
                    "{IDENTITY_ENDPOINT_VARIABLE} must be an http(s) URL, got '{}'",
                    super::errors::redact_urls(url)
                )));
            }
        }
        Ok(ManagedIdentityCredential {
            endpoint,
            id: identity.id.clone(),
            http,
            cache: TokenCache::default(),
        })
    }

    /// Who is asked, for errors: the endpoint without its query string.
    fn describe(&self) -> String {
        let which = match &self.id {
            ManagedIdentityId::SystemAssigned => "system-assigned".to_owned(),
            ManagedIdentityId::ClientId(id) => format!("client id {id}"),
            ManagedIdentityId::ResourceId(id) => format!("resource id {id}"),
            ManagedIdentityId::ObjectId(id) => format!("object id {id}"),
        };
        let endpoint = match &self.endpoint {
            ManagedIdentityEndpoint::AppService { endpoint, .. } => {
                super::errors::redact_urls(endpoint)
            }
            ManagedIdentityEndpoint::Imds => IMDS_ENDPOINT.to_owned(),
        };
        format!("the managed identity endpoint {endpoint} ({which})")
    }

    /// The token request's URL and secret header, if any.
    fn request(&self, resource: &str) -> (reqwest::Url, Option<&str>) {
        let (endpoint, version, header) = match &self.endpoint {
            ManagedIdentityEndpoint::AppService { endpoint, header } => (
                endpoint.as_str(),
                APP_SERVICE_API_VERSION,
                Some(header.expose()),
            ),
            ManagedIdentityEndpoint::Imds => (IMDS_ENDPOINT, IMDS_API_VERSION, None),
        };
        let app_service = header.is_some();
        // Checked when built.
        let mut url = reqwest::Url::parse(endpoint).expect("an http(s) URL");
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair("api-version", version)
                .append_pair("resource", resource);
            match &self.id {
                ManagedIdentityId::SystemAssigned => {}
                ManagedIdentityId::ClientId(id) => {
                    query.append_pair("client_id", id);
                }
                ManagedIdentityId::ResourceId(id) => {
                    query.append_pair(
                        if app_service {
                            "mi_res_id"
                        } else {
                            "msi_res_id"
                        },
                        id,
                    );
                }
                ManagedIdentityId::ObjectId(id) => {
                    query.append_pair(
                        if app_service {
                            "principal_id"
                        } else {
                            "object_id"
                        },
                        id,
                    );
                }
            }
        }
        (url, header)
    }

    async fn fetch(&self, resource: &str) -> std::result::Result<AccessToken, SignInError> {
        let refused =
            |status: Option<u16>, message: String, transient: bool| SignInError::Refused {
                credential: self.describe(),
                status,
                message,
                transient,
            };
        let (url, header) = self.request(resource);
        let mut request = self
            .http
            .get(url)
            .timeout(MANAGED_IDENTITY_TIMEOUT)
            .header("Metadata", "true");
        if let Some(header) = header {
            request = request.header("X-IDENTITY-HEADER", header);
        }
        let response = request.send().await.map_err(|e| {
            let (message, transient) = if e.is_timeout() {
                (
                    format!("no answer within {} s", MANAGED_IDENTITY_TIMEOUT.as_secs()),
                    true,
                )
            } else if e.is_connect() && chain_text(&e).contains("certificate") {
                (
                    "its TLS certificate is not trusted (for a certificate of your own CA, \
                     name a PEM file of the CA in SSL_CERT_FILE)"
                        .to_owned(),
                    false,
                )
            } else if e.is_connect() {
                ("it cannot be reached".to_owned(), false)
            } else {
                (
                    format!("the request failed: {}", chain_text(&e.without_url())),
                    true,
                )
            };
            refused(None, message, transient)
        })?;
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(|e| {
            refused(
                Some(status),
                format!("its answer broke off: {}", chain_text(&e.without_url())),
                true,
            )
        })?;
        if !(200..300).contains(&status) {
            let mut message = answer_message(&body);
            if let Some(header) = header {
                message = message.replace(header, "<redacted>");
            }
            return Err(refused(
                Some(status),
                message,
                matches!(status, 429 | 500 | 502 | 503 | 504),
            ));
        }
        parse_token(&body, OffsetDateTime::now_utc())
            .map_err(|why| refused(Some(status), why.to_owned(), false))
    }
}

/// What the settings lack for a managed identity.
fn no_managed_identity_endpoint() -> String {
    format!(
        "a managed identity: {IDENTITY_ENDPOINT_VARIABLE} and {IDENTITY_HEADER_VARIABLE} are not \
         set (App Service and Functions set them; on a virtual machine, ask for its metadata \
         endpoint: ManagedIdentityEndpoint::Imds, or --imds on the command line)"
    )
}

/// The message of an error answer: the JSON's `error_description`,
/// `message` or `error`, else its first line of text.
fn answer_message(body: &[u8]) -> String {
    if let Ok(json) = serde_json::from_slice::<Value>(body) {
        let text = |v: &Value| v.as_str().map(str::to_owned);
        let found = ["error_description", "message", "Message"]
            .iter()
            .find_map(|k| json.get(k).and_then(text))
            .or_else(|| json.pointer("/error/message").and_then(text))
            .or_else(|| json.get("error").and_then(text));
        if let Some(found) = found {
            return found.lines().next().unwrap_or_default().trim().to_owned();
        }
    }
    let text = String::from_utf8_lossy(body);
    let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let line: String = line.trim().chars().take(300).collect();
    if line.is_empty() {
        "no message".to_owned()
    } else {
        line
    }
}

/// The token of a managed identity answer: `access_token`, and
/// `expires_on` as a number or a string of Unix seconds (or `expires_in`).
/// Errors say what is missing, never what the answer holds.
fn parse_token(body: &[u8], now: OffsetDateTime) -> std::result::Result<AccessToken, &'static str> {
    let json: Value = serde_json::from_slice(body).map_err(|_| "its answer is not JSON")?;
    let token = json
        .get("access_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or("its answer has no access_token")?;
    let seconds = |v: &Value| match v {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    };
    let expires_on = match (json.get("expires_on"), json.get("expires_in")) {
        (Some(on), _) => seconds(on)
            .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
            .ok_or("its expires_on is not Unix seconds")?,
        (None, Some(within)) => {
            now + Duration::from_secs(
                seconds(within)
                    .and_then(|s| u64::try_from(s).ok())
                    .ok_or("its expires_in is not a number of seconds")?,
            )
        }
        (None, None) => return Err("its answer has neither expires_on nor expires_in"),
    };
    Ok(AccessToken::new(
        TokenSecret::new(token.to_owned()),
        expires_on,
    ))
}

#[async_trait::async_trait]
impl TokenCredential for ManagedIdentityCredential {
    async fn get_token(&self, scopes: &[&str]) -> azure_core::Result<AccessToken> {
        let resource = resource_of(scopes)?;
        self.cache
            .get(&resource, || async {
                self.fetch(&resource).await.map_err(SignInError::into_azure)
            })
            .await
    }

    async fn clear_cache(&self) -> azure_core::Result<()> {
        self.cache.clear().await;
        Ok(())
    }
}

/// The developer chain, resolved when built: the first of a service
/// principal, the App Service managed identity and the Azure CLI that is
/// configured signs in; what was looked for before it is named when none
/// can.
struct DeveloperCredential {
    source: Option<Source>,
    /// What was looked for and not found, in order.
    tried: Vec<String>,
}

enum Source {
    ServicePrincipal {
        credential: Arc<dyn TokenCredential>,
        describe: String,
        secret: Option<String>,
    },
    ManagedIdentity(ManagedIdentityCredential),
    AzureCli(AzureCli),
}

impl fmt::Debug for DeveloperCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = match &self.source {
            Some(Source::ServicePrincipal { describe, .. }) => describe.clone(),
            Some(Source::ManagedIdentity(credential)) => credential.describe(),
            Some(Source::AzureCli(_)) => "the Azure CLI".to_owned(),
            None => "nothing".to_owned(),
        };
        f.debug_struct("DeveloperCredential")
            .field("source", &source)
            .finish_non_exhaustive()
    }
}

impl DeveloperCredential {
    fn new(sign_in: &DeveloperSignIn, http: &reqwest::Client) -> Result<Self> {
        let mut tried = Vec::new();
        if let Some(principal) = &sign_in.service_principal {
            return Ok(DeveloperCredential {
                source: Some(service_principal(principal, http)?),
                tried,
            });
        }
        tried.push(format!(
            "a service principal: {TENANT_ID_VARIABLE}, {CLIENT_ID_VARIABLE}, and \
             {CLIENT_SECRET_VARIABLE} or {FEDERATED_TOKEN_FILE_VARIABLE}, are not all set"
        ));
        match &sign_in.managed_identity {
            Some(identity) if identity.endpoint.is_some() => {
                return Ok(DeveloperCredential {
                    source: Some(Source::ManagedIdentity(
                        ManagedIdentityCredential::with_client(identity, http.clone())?,
                    )),
                    tried,
                });
            }
            _ => tried.push(format!(
                "the App Service managed identity: {IDENTITY_ENDPOINT_VARIABLE} and \
                 {IDENTITY_HEADER_VARIABLE} are not set"
            )),
        }
        if sign_in.azure_cli {
            return Ok(DeveloperCredential {
                source: Some(Source::AzureCli(AzureCli::new())),
                tried,
            });
        }
        Ok(DeveloperCredential {
            source: None,
            tried,
        })
    }

    fn no_identity(&self, last: Option<String>) -> azure_core::Error {
        let mut tried = self.tried.clone();
        tried.extend(last);
        SignInError::NoIdentity { tried }.into_azure()
    }
}

fn service_principal(principal: &ServicePrincipal, http: &reqwest::Client) -> Result<Source> {
    let authority = principal
        .authority_host
        .as_deref()
        .unwrap_or(PUBLIC_AUTHORITY_HOST);
    let authority = reqwest::Url::parse(authority)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .ok_or_else(|| {
            Error::Config(format!(
                "{AUTHORITY_HOST_VARIABLE} must be an http(s) URL, got '{}'",
                super::errors::redact_urls(authority)
            ))
        })?;
    let client: Arc<dyn azure_core::HttpClient> = Arc::new(http.clone());
    let (credential, describe, secret): (Arc<dyn TokenCredential>, _, _) = match &principal.proof {
        ServicePrincipalProof::Secret(secret) => (
            Arc::new(ClientSecretCredential::new(
                client,
                authority,
                principal.tenant_id.clone(),
                principal.client_id.clone(),
                secret.expose().to_owned(),
            )),
            format!(
                "the service principal {} of tenant {} (client secret)",
                principal.client_id, principal.tenant_id
            ),
            Some(secret.expose().to_owned()),
        ),
        ServicePrincipalProof::FederatedTokenFile(file) => (
            Arc::new(FederatedTokenFile {
                http: client,
                authority,
                tenant_id: principal.tenant_id.clone(),
                client_id: principal.client_id.clone(),
                file: file.clone(),
                cache: TokenCache::default(),
            }),
            format!(
                "the service principal {} of tenant {} (workload identity, {})",
                principal.client_id,
                principal.tenant_id,
                file.display()
            ),
            None,
        ),
    };
    Ok(Source::ServicePrincipal {
        credential,
        describe,
        secret,
    })
}

#[async_trait::async_trait]
impl TokenCredential for DeveloperCredential {
    async fn get_token(&self, scopes: &[&str]) -> azure_core::Result<AccessToken> {
        match &self.source {
            None => Err(self.no_identity(None)),
            Some(Source::ManagedIdentity(credential)) => credential.get_token(scopes).await,
            Some(Source::ServicePrincipal {
                credential,
                describe,
                secret,
            }) => credential.get_token(scopes).await.map_err(|error| {
                if error.downcast_ref::<SignInError>().is_some() {
                    return error;
                }
                refused_by(describe, &error, secret.as_deref()).into_azure()
            }),
            Some(Source::AzureCli(credential)) => {
                let scope = scopes.join(" ");
                credential
                    .cache
                    .get(&scope, || async {
                        credential
                            .fetch(&scope)
                            .await
                            .map_err(|why| self.no_identity(Some(format!("the Azure CLI: {why}"))))
                    })
                    .await
            }
        }
    }

    async fn clear_cache(&self) -> azure_core::Result<()> {
        match &self.source {
            Some(Source::ServicePrincipal { credential, .. }) => credential.clear_cache().await,
            Some(Source::ManagedIdentity(credential)) => credential.clear_cache().await,
            Some(Source::AzureCli(credential)) => {
                credential.cache.clear().await;
                Ok(())
            }
            None => Ok(()),
        }
    }
}

/// A refusal of the client crate's credential, said without its secret.
fn refused_by(credential: &str, error: &azure_core::Error, secret: Option<&str>) -> SignInError {
    let status = std::iter::successors(Some(error as &(dyn std::error::Error + 'static)), |e| {
        e.source()
    })
    .find_map(|e| match e.downcast_ref::<azure_core::Error>()?.kind() {
        ErrorKind::HttpResponse { status, .. } => Some(u16::from(*status)),
        _ => None,
    });
    // Entra ID's own words, which the OAuth client keeps out of its text.
    let refusal = std::iter::successors(Some(error as &(dyn std::error::Error + 'static)), |e| {
        e.source()
    })
    .find_map(|e| e.downcast_ref::<oauth2::basic::BasicRequestTokenError<azure_core::Error>>())
    .and_then(|e| match e {
        oauth2::RequestTokenError::ServerResponse(answer) => {
            Some(match answer.error_description() {
                Some(description) => format!("{}: {description}", answer.error()),
                None => answer.error().to_string(),
            })
        }
        _ => None,
    });
    let mut message = super::errors::redact_urls(&refusal.unwrap_or_else(|| chain_text(error)));
    if let Some(secret) = secret.filter(|s| !s.is_empty()) {
        message = message.replace(secret, "<redacted>");
    }
    SignInError::Refused {
        credential: credential.to_owned(),
        status,
        message,
        transient: status.is_some_and(|s| matches!(s, 429 | 500 | 502 | 503 | 504)),
    }
}

/// The Azure CLI's token: `az account get-access-token`, with a time limit
/// at which `az` is stopped (the 0.21 crate's credential leaves it
/// running), and a cache.
struct AzureCli {
    program: std::path::PathBuf,
    timeout: Duration,
    cache: TokenCache,
}

/// A process group, killed when this is dropped (a group that has ended
/// already is not there to kill). Elsewhere than Unix only the child is
/// killed, by `kill_on_drop`.
struct ProcessGroup(Option<u32>);

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        #[cfg(unix)]
        if let Some(id) = self.0.and_then(|id| i32::try_from(id).ok()) {
            // SAFETY: kill(2) with a negative pid signals that group only.
            unsafe {
                libc::kill(-id, libc::SIGKILL);
            }
        }
    }
}

/// What `az account get-access-token --output json` answers (Azure CLI
/// 2.54 and later give `expires_on`, in seconds since 1970).
#[derive(serde::Deserialize)]
struct AzureCliAnswer {
    #[serde(rename = "accessToken")]
    access_token: String,
    expires_on: i64,
}

impl AzureCli {
    fn new() -> AzureCli {
        AzureCli {
            program: "az".into(),
            timeout: AZURE_CLI_TIMEOUT,
            cache: TokenCache::default(),
        }
    }

    /// A token for `scope`; why there is none, in one line and without
    /// `az`'s answer (which may hold a token).
    async fn fetch(&self, scope: &str) -> std::result::Result<AccessToken, String> {
        let mut command = if cfg!(windows) {
            // `az` is a batch file there.
            let mut command = tokio::process::Command::new("cmd");
            command.arg("/C").arg(&self.program);
            command
        } else {
            tokio::process::Command::new(&self.program)
        };
        command
            .args([
                "account",
                "get-access-token",
                "--output",
                "json",
                "--scope",
                scope,
            ])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        // `az` is a shell script that runs Python as its child: in a
        // process group of its own, the whole of it can be stopped.
        #[cfg(unix)]
        command.process_group(0);
        let child = command.spawn().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => "az was not found on PATH".to_owned(),
            _ => format!("az could not run: {e}"),
        })?;
        // At the limit, or when the caller gives up, the group is killed.
        let mut group = ProcessGroup(child.id());
        let output = tokio::time::timeout(self.timeout, child.wait_with_output())
            .await
            .map_err(|_| {
                format!(
                    "az account get-access-token did not answer within {} s",
                    self.timeout.as_secs_f64()
                )
            })?;
        // It ended: its group id may be another's soon.
        group.0 = None;
        let output = output.map_err(|e| format!("az could not run: {e}"))?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let detail = stderr
                .lines()
                .map(str::trim)
                .find(|line| !line.is_empty())
                .unwrap_or("it failed");
            return Err(format!("az account get-access-token failed: {detail}"));
        }
        let answer: AzureCliAnswer = serde_json::from_slice(&output.stdout).map_err(|_| {
            "its answer could not be read (Azure CLI 2.54 or later is needed)".to_owned()
        })?;
        let expires_on = OffsetDateTime::from_unix_timestamp(answer.expires_on)
            .map_err(|_| "its answer has an expiry out of range".to_owned())?;
        Ok(AccessToken::new(answer.access_token, expires_on))
    }
}

/// Workload identity whose federated token file is read again for every
/// new token (the 0.21 crate reads it once, and a projected token rotates).
struct FederatedTokenFile {
    http: Arc<dyn azure_core::HttpClient>,
    authority: reqwest::Url,
    tenant_id: String,
    client_id: String,
    file: std::path::PathBuf,
    cache: TokenCache,
}

impl fmt::Debug for FederatedTokenFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FederatedTokenFile")
            .field("client_id", &self.client_id)
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl TokenCredential for FederatedTokenFile {
    async fn get_token(&self, scopes: &[&str]) -> azure_core::Result<AccessToken> {
        let key = scopes.join(" ");
        self.cache
            .get(&key, || async {
                let assertion = std::fs::read_to_string(&self.file).map_err(|e| {
                    SignInError::Refused {
                        credential: format!("workload identity ({FEDERATED_TOKEN_FILE_VARIABLE})"),
                        status: None,
                        message: format!("cannot read {}: {e}", self.file.display()),
                        transient: false,
                    }
                    .into_azure()
                })?;
                WorkloadIdentityCredential::new(
                    Arc::clone(&self.http),
                    self.authority.clone(),
                    self.tenant_id.clone(),
                    self.client_id.clone(),
                    assertion.trim().to_owned(),
                )
                .get_token(scopes)
                .await
            })
            .await
    }

    async fn clear_cache(&self) -> azure_core::Result<()> {
        self.cache.clear().await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const STORAGE_RESOURCE: &str = "https://storage.azure.com";

    const NOW: OffsetDateTime = datetime!(2025-01-01 00:00:00 UTC);

    fn credential(
        endpoint: ManagedIdentityEndpoint,
        id: ManagedIdentityId,
    ) -> ManagedIdentityCredential {
        ManagedIdentityCredential::with_client(
            &ManagedIdentity::new(id, endpoint),
            reqwest::Client::new(),
        )
        .unwrap()
    }

    #[test]
    fn app_service_requests_name_the_user_assigned_identity() {
        let endpoint =
            ManagedIdentityEndpoint::app_service("http://127.0.0.1:8081/msi/token", "s3cret");
        let url = |id| {
            let credential = credential(endpoint.clone(), id);
            let (url, header) = credential.request(STORAGE_RESOURCE);
            assert_eq!(header, Some("s3cret"));
            url.to_string()
        };
        let base = "http://127.0.0.1:8081/msi/token?api-version=2019-08-01&resource=https%3A%2F%2Fstorage.azure.com";
        assert_eq!(url(ManagedIdentityId::SystemAssigned), base);
        assert_eq!(
            url(ManagedIdentityId::ClientId("c1".into())),
            format!("{base}&client_id=c1")
        );
        assert_eq!(
            url(ManagedIdentityId::ResourceId("/subscriptions/s/r".into())),
            format!("{base}&mi_res_id=%2Fsubscriptions%2Fs%2Fr")
        );
        assert_eq!(
            url(ManagedIdentityId::ObjectId("o1".into())),
            format!("{base}&principal_id=o1")
        );
    }

    #[test]
    fn the_metadata_endpoint_is_only_the_one_asked_for() {
        let url = |id| {
            let credential = credential(ManagedIdentityEndpoint::Imds, id);
            let (url, header) = credential.request(STORAGE_RESOURCE);
            assert_eq!(header, None);
            url.to_string()
        };
        let base = "http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fstorage.azure.com";
        assert_eq!(url(ManagedIdentityId::SystemAssigned), base);
        assert_eq!(
            url(ManagedIdentityId::ResourceId("r".into())),
            format!("{base}&msi_res_id=r")
        );
        assert_eq!(
            url(ManagedIdentityId::ObjectId("o".into())),
            format!("{base}&object_id=o")
        );
    }

    #[test]
    fn expires_on_is_a_number_or_a_string() {
        let at = |body: &str| parse_token(body.as_bytes(), NOW).map(|t| t.expires_on);
        let later = NOW + Duration::from_secs(3600);
        let unix = later.unix_timestamp();
        assert_eq!(
            at(&format!(r#"{{"access_token":"t","expires_on":"{unix}"}}"#)),
            Ok(later)
        );
        assert_eq!(
            at(&format!(r#"{{"access_token":"t","expires_on":{unix}}}"#)),
            Ok(later)
        );
        assert_eq!(at(r#"{"access_token":"t","expires_in":"3600"}"#), Ok(later));
        assert_eq!(at(r#"{"access_token":"t","expires_in":3600}"#), Ok(later));
        assert!(at(r#"{"access_token":"t","expires_on":"tomorrow"}"#).is_err());
        assert!(at(r#"{"access_token":"t"}"#).is_err());
        assert!(at(r#"{"expires_on":1}"#).is_err());
        let err = at("not json, secret-token-text").unwrap_err();
        assert!(!err.contains("secret"), "{err}");
    }

    #[test]
    fn tokens_are_refreshed_five_minutes_before_they_expire() {
        let token =
            |left: u64| AccessToken::new(TokenSecret::new("t"), NOW + Duration::from_secs(left));
        assert!(fresh(&token(3600), NOW));
        assert!(fresh(&token(301), NOW));
        assert!(!fresh(&token(300), NOW));
        assert!(!fresh(&token(10), NOW));
        assert!(!fresh(
            &AccessToken::new(TokenSecret::new("t"), NOW - Duration::from_secs(1)),
            NOW
        ));
    }

    #[test]
    fn error_answers_are_read_for_their_message() {
        assert_eq!(
            answer_message(
                br#"{"error":"invalid_request","error_description":"Identity not found\nmore"}"#
            ),
            "Identity not found"
        );
        assert_eq!(
            answer_message(br#"{"statusCode":400,"message":"No MSI found"}"#),
            "No MSI found"
        );
        assert_eq!(
            answer_message(br#"{"error":{"code":"x","message":"nested"}}"#),
            "nested"
        );
        assert_eq!(answer_message(b"\n  plain text\nsecond"), "plain text");
        assert_eq!(answer_message(b""), "no message");
    }

    #[test]
    fn debug_output_shows_no_secret() {
        let credential = credential(
            ManagedIdentityEndpoint::app_service(
                "http://127.0.0.1:1/msi/token",
                "topsecret-header",
            ),
            ManagedIdentityId::ClientId("c".into()),
        );
        let debug = format!("{credential:?} {credential:#?}");
        assert!(!debug.contains("topsecret"), "{debug}");
        assert!(debug.contains("127.0.0.1:1"), "{debug}");
        let developer = DeveloperCredential::new(
            &DeveloperSignIn {
                service_principal: Some(ServicePrincipal {
                    tenant_id: "t".into(),
                    client_id: "c".into(),
                    proof: ServicePrincipalProof::Secret(crate::Secret::new("topsecret-client")),
                    authority_host: Some("http://127.0.0.1:1".into()),
                }),
                ..Default::default()
            },
            &reqwest::Client::new(),
        )
        .unwrap();
        let debug = format!("{developer:?}");
        assert!(!debug.contains("topsecret"), "{debug}");
    }

    #[test]
    fn a_managed_identity_without_endpoint_names_the_settings() {
        let err = ManagedIdentityCredential::with_client(
            &ManagedIdentity {
                id: ManagedIdentityId::SystemAssigned,
                endpoint: None,
            },
            reqwest::Client::new(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("IDENTITY_ENDPOINT")
                && err.contains("IDENTITY_HEADER")
                && err.contains("--imds"),
            "{err}"
        );
    }

    /// An `az` of the test's own: a shell script with `body`.
    #[cfg(unix)]
    fn stub_az(body: &str) -> (std::path::PathBuf, AzureCli) {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("az-stub-{}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join("az");
        std::fs::write(&script, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let cli = AzureCli {
            program: script,
            ..AzureCli::new()
        };
        (dir, cli)
    }

    /// `fetch`, again while a test thread's fork holds the fresh script
    /// open ("Text file busy").
    #[cfg(unix)]
    async fn fetch_stub(cli: &AzureCli, scope: &str) -> std::result::Result<AccessToken, String> {
        for _ in 0..20 {
            match cli.fetch(scope).await {
                Err(why) if why.contains("Text file busy") => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                other => return other,
            }
        }
        cli.fetch(scope).await
    }

    /// Whether process `pid` runs (a zombie has stopped running).
    #[cfg(unix)]
    fn runs(pid: i32) -> bool {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"));
        if let Ok(stat) = stat {
            return stat
                .rsplit(')')
                .next()
                .is_some_and(|rest| !rest.trim_start().starts_with('Z'));
        }
        // No /proc: whether it can be signalled.
        // SAFETY: signal 0 only checks that the process exists.
        unsafe { libc::kill(pid, 0) == 0 }
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn an_azure_cli_that_does_not_answer_is_stopped_at_the_limit() {
        // As the real `az`: a shell script whose child does the work.
        let (dir, mut cli) = stub_az("sleep 60 &\necho $! > \"$(dirname \"$0\")/pid\"\nwait");
        cli.timeout = Duration::from_secs(2);
        let why = fetch_stub(&cli, "https://storage.azure.com/.default")
            .await
            .unwrap_err();
        assert!(why.contains("did not answer within 2 s"), "{why}");
        let pid: i32 = std::fs::read_to_string(dir.join("pid"))
            .expect("the stub started its child")
            .trim()
            .parse()
            .unwrap();
        let mut alive = true;
        for _ in 0..50 {
            alive = runs(pid);
            if !alive {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if alive {
            // SAFETY: the test's own sleep, not to outlive the test.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        let _ = std::fs::remove_dir_all(dir);
        assert!(!alive, "az's child (pid {pid}) still runs after the limit");
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn the_azure_cli_answer_is_read_and_its_failures_named() {
        let (answering, cli) = stub_az(
            "echo '{\"accessToken\":\"tok\",\"expiresOn\":\"2099-01-01 00:00:00.000000\",\"expires_on\":4070908800,\"tokenType\":\"Bearer\"}'",
        );
        let token = fetch_stub(&cli, "https://storage.azure.com/.default")
            .await
            .unwrap();
        assert_eq!(token.token.secret(), "tok");
        assert_eq!(token.expires_on.unix_timestamp(), 4_070_908_800);

        let (failing, cli) =
            stub_az("echo 'ERROR: Please run az login to setup account.' >&2\nexit 1");
        let why = fetch_stub(&cli, "s").await.unwrap_err();
        assert_eq!(
            why,
            "az account get-access-token failed: ERROR: Please run az login to setup account."
        );

        // Before 2.54 the CLI gave only a local time: asked to update.
        let (old, cli) = stub_az(
            "echo '{\"accessToken\":\"secret-tok\",\"expiresOn\":\"2099-01-01 00:00:00.000000\"}'",
        );
        let why = fetch_stub(&cli, "s").await.unwrap_err();
        assert!(why.contains("2.54") && !why.contains("secret-tok"), "{why}");

        let missing = AzureCli {
            program: "/nonexistent/az".into(),
            ..AzureCli::new()
        };
        assert_eq!(
            missing.fetch("s").await.unwrap_err(),
            "az was not found on PATH"
        );
        for dir in [answering, failing, old] {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
