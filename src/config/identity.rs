//! Who signs in with Microsoft Entra ID, in plain types: a managed identity,
//! the developer's own sign-in, or a credential of the caller's. The
//! credentials themselves are built from these in the table module.

use std::fmt;
use std::path::PathBuf;

use super::Secret;
use crate::table::identity::CustomCredential;

/// The variable App Service and Functions set to the address of the app's
/// managed identity endpoint.
pub const IDENTITY_ENDPOINT_VARIABLE: &str = "IDENTITY_ENDPOINT";
/// The variable App Service and Functions set to the secret that the
/// managed identity endpoint expects in its `X-IDENTITY-HEADER` header.
pub const IDENTITY_HEADER_VARIABLE: &str = "IDENTITY_HEADER";
/// The address of a virtual machine's instance metadata endpoint, which
/// hands out the VM's managed identity tokens. Used only when asked for
/// ([`ManagedIdentityEndpoint::Imds`]).
pub const IMDS_ENDPOINT: &str = "http://169.254.169.254/metadata/identity/oauth2/token";
/// The Entra ID sign-in address of the public cloud, the default of
/// [`ServicePrincipal::authority_host`].
pub const PUBLIC_AUTHORITY_HOST: &str = "https://login.microsoftonline.com";

/// How a token is obtained for Microsoft Entra ID sign-in
/// ([`crate::Credentials::Token`]). Every table and blob request then
/// carries `Authorization: Bearer <token>` for `https://storage.azure.com`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Identity {
    /// The managed identity of the App Service or Functions app this runs
    /// in (system-assigned, or a user-assigned one by its id); or, when
    /// asked for, a virtual machine's.
    ManagedIdentity(ManagedIdentity),
    /// The identities of a developer machine and of a host without
    /// explicit settings, the first one configured: a service principal
    /// from the `AZURE_*` variables (client secret or workload identity),
    /// then the App Service managed identity when its endpoint is set, then
    /// the Azure CLI's sign-in (`az login`). Never a virtual machine's
    /// metadata endpoint.
    Developer(DeveloperSignIn),
    /// A credential of the caller's: any `TokenCredential` of the 0.21
    /// Azure crates (see [`crate::credential`]).
    Custom(CustomCredential),
}

/// Which managed identity to sign in as.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ManagedIdentityId {
    /// The app's system-assigned identity.
    #[default]
    SystemAssigned,
    /// A user-assigned identity by its client (application) id.
    ClientId(String),
    /// A user-assigned identity by its Azure resource id
    /// (`/subscriptions/.../userAssignedIdentities/name`).
    ResourceId(String),
    /// A user-assigned identity by its object (principal) id.
    ObjectId(String),
}

/// Where managed identity tokens come from.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ManagedIdentityEndpoint {
    /// The App Service and Functions endpoint (`IDENTITY_ENDPOINT`, with
    /// the `IDENTITY_HEADER` secret; API version 2019-08-01).
    AppService {
        /// The endpoint's URL.
        endpoint: String,
        /// The secret sent in `X-IDENTITY-HEADER`.
        header: Secret,
    },
    /// A virtual machine's instance metadata endpoint, at the fixed
    /// address [`IMDS_ENDPOINT`] (API version 2018-02-01). Never chosen
    /// unless asked for.
    Imds,
}

impl fmt::Debug for ManagedIdentityEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ManagedIdentityEndpoint::AppService { endpoint, header } => f
                .debug_struct("AppService")
                .field("endpoint", endpoint)
                .field("header", header)
                .finish(),
            ManagedIdentityEndpoint::Imds => f.write_str("Imds"),
        }
    }
}

impl ManagedIdentityEndpoint {
    /// The App Service endpoint at `endpoint`, with its secret.
    pub fn app_service(endpoint: impl Into<String>, header: impl Into<String>) -> Self {
        ManagedIdentityEndpoint::AppService {
            endpoint: endpoint.into(),
            header: Secret::new(header),
        }
    }

    /// The App Service endpoint of `IDENTITY_ENDPOINT` and `IDENTITY_HEADER`
    /// as `lookup` finds them; `None` unless both are set.
    pub fn from_variables(lookup: impl Fn(&str) -> Option<String>) -> Option<Self> {
        let set = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        Some(Self::app_service(
            set(IDENTITY_ENDPOINT_VARIABLE)?.trim(),
            set(IDENTITY_HEADER_VARIABLE)?,
        ))
    }

    /// [`ManagedIdentityEndpoint::from_variables`] on the process environment.
    pub fn from_env() -> Option<Self> {
        Self::from_variables(|name| std::env::var(name).ok())
    }
}

/// A managed identity: which one, and where its tokens come from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ManagedIdentity {
    /// Which identity.
    pub id: ManagedIdentityId,
    /// Where its tokens come from; `None` when no endpoint was found (the
    /// store then refuses to connect, saying which settings it looked for).
    pub endpoint: Option<ManagedIdentityEndpoint>,
}

impl ManagedIdentity {
    /// The identity `id` through the App Service endpoint of the process
    /// environment (`IDENTITY_ENDPOINT`, `IDENTITY_HEADER`), when set.
    pub fn from_env(id: ManagedIdentityId) -> Self {
        ManagedIdentity {
            id,
            endpoint: ManagedIdentityEndpoint::from_env(),
        }
    }

    /// The identity `id` through the given endpoint.
    pub fn new(id: ManagedIdentityId, endpoint: ManagedIdentityEndpoint) -> Self {
        ManagedIdentity {
            id,
            endpoint: Some(endpoint),
        }
    }
}

/// How a service principal proves who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServicePrincipalProof {
    /// A client secret (`AZURE_CLIENT_SECRET`).
    Secret(Secret),
    /// A federated token in a file (`AZURE_FEDERATED_TOKEN_FILE`, as AKS
    /// workload identity projects it), read again for every new token.
    FederatedTokenFile(PathBuf),
}

/// A service principal (an app registration) signing in to Entra ID.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServicePrincipal {
    /// The directory (tenant) id.
    pub tenant_id: String,
    /// The application (client) id.
    pub client_id: String,
    /// Its secret or federated token.
    pub proof: ServicePrincipalProof,
    /// The sign-in address (`AZURE_AUTHORITY_HOST`); the public cloud's
    /// [`PUBLIC_AUTHORITY_HOST`] when `None`.
    pub authority_host: Option<String>,
}

/// The developer sign-in chain ([`Identity::Developer`]): what it found
/// configured. The first present of `service_principal`,
/// `managed_identity` and `azure_cli` signs in.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct DeveloperSignIn {
    /// A service principal (`AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, and
    /// `AZURE_CLIENT_SECRET` or `AZURE_FEDERATED_TOKEN_FILE`).
    pub service_principal: Option<ServicePrincipal>,
    /// The App Service managed identity, when its endpoint is set.
    pub managed_identity: Option<ManagedIdentity>,
    /// Whether to ask the Azure CLI (`az account get-access-token`) last.
    pub azure_cli: bool,
}

/// The variables of a service principal, as Azure's SDKs read them.
pub(crate) const TENANT_ID_VARIABLE: &str = "AZURE_TENANT_ID";
pub(crate) const CLIENT_ID_VARIABLE: &str = "AZURE_CLIENT_ID";
pub(crate) const CLIENT_SECRET_VARIABLE: &str = "AZURE_CLIENT_SECRET";
pub(crate) const FEDERATED_TOKEN_FILE_VARIABLE: &str = "AZURE_FEDERATED_TOKEN_FILE";
pub(crate) const AUTHORITY_HOST_VARIABLE: &str = "AZURE_AUTHORITY_HOST";

impl DeveloperSignIn {
    /// The chain as `lookup` configures it: a service principal of
    /// `AZURE_TENANT_ID`, `AZURE_CLIENT_ID` and `AZURE_FEDERATED_TOKEN_FILE`
    /// (workload identity) or `AZURE_CLIENT_SECRET`, with
    /// `AZURE_AUTHORITY_HOST`; the system-assigned managed identity of
    /// `IDENTITY_ENDPOINT` and `IDENTITY_HEADER`; and the Azure CLI.
    pub fn from_variables(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let set = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let service_principal = (|| {
            let proof = match set(FEDERATED_TOKEN_FILE_VARIABLE) {
                Some(file) => ServicePrincipalProof::FederatedTokenFile(file.into()),
                None => ServicePrincipalProof::Secret(Secret::new(set(CLIENT_SECRET_VARIABLE)?)),
            };
            Some(ServicePrincipal {
                tenant_id: set(TENANT_ID_VARIABLE)?.trim().to_owned(),
                client_id: set(CLIENT_ID_VARIABLE)?.trim().to_owned(),
                proof,
                authority_host: set(AUTHORITY_HOST_VARIABLE).map(|h| h.trim().to_owned()),
            })
        })();
        let managed_identity =
            ManagedIdentityEndpoint::from_variables(&lookup).map(|endpoint| ManagedIdentity {
                id: ManagedIdentityId::SystemAssigned,
                endpoint: Some(endpoint),
            });
        DeveloperSignIn {
            service_principal,
            managed_identity,
            azure_cli: true,
        }
    }

    /// [`DeveloperSignIn::from_variables`] on the process environment.
    pub fn from_env() -> Self {
        Self::from_variables(|name| std::env::var(name).ok())
    }

    /// The Azure CLI's sign-in alone.
    pub fn azure_cli() -> Self {
        DeveloperSignIn {
            azure_cli: true,
            ..Default::default()
        }
    }
}
