//! The storage settings of a Functions app, read as the Functions host
//! reads them: a connection string, or an identity-based connection of
//! `AzureWebJobsStorage__*` settings.
//!
//! Keys are case-insensitive and `:` separates sections as `__` does
//! (.NET configuration). In order:
//!
//! 1. `ConnectionStrings:AzureWebJobsStorage`, a connection string;
//! 2. `AzureWebJobsStorage`, a connection string (it wins over the
//!    prefixed settings, as in Functions);
//! 3. `AzureWebJobsStorage__*`: an identity-based connection;
//! 4. `AZURE_STORAGE_CONNECTION_STRING`, a connection string.

use std::collections::HashMap;

use super::identity::{
    DeveloperSignIn, Identity, ManagedIdentity, ManagedIdentityEndpoint, ManagedIdentityId,
    ServicePrincipal, ServicePrincipalProof, AUTHORITY_HOST_VARIABLE, CLIENT_ID_VARIABLE,
    FEDERATED_TOKEN_FILE_VARIABLE, TENANT_ID_VARIABLE,
};
use super::{
    account_from_endpoint, checked_endpoint, validate_account, Credentials, Secret, StorageConfig,
};
use crate::error::{Error, Result};

/// The section of the host's storage connection.
pub(super) const SECTION: &str = "AzureWebJobsStorage";

/// The settings of an identity-based connection, as Functions names them
/// (after `AzureWebJobsStorage__`).
pub(super) const IDENTITY_SETTINGS: [&str; 12] = [
    "accountName",
    "tableServiceUri",
    "blobServiceUri",
    "queueServiceUri",
    "credential",
    "clientId",
    "managedIdentityClientId",
    "managedIdentityResourceId",
    "managedIdentityObjectId",
    "tenantId",
    "clientSecret",
    "tokenFilePath",
];

/// Every name [`StorageConfig::from_variables`] asks its lookup for, in
/// their usual spelling (with `__`, and with `:`).
pub(super) fn known_names() -> Vec<String> {
    let mut names = vec![
        "ConnectionStrings:AzureWebJobsStorage".to_owned(),
        "ConnectionStrings__AzureWebJobsStorage".to_owned(),
        SECTION.to_owned(),
    ];
    for setting in IDENTITY_SETTINGS {
        names.push(format!("{SECTION}__{setting}"));
        names.push(format!("{SECTION}:{setting}"));
    }
    names.extend(
        [
            "AZURE_STORAGE_CONNECTION_STRING",
            super::identity::IDENTITY_ENDPOINT_VARIABLE,
            super::identity::IDENTITY_HEADER_VARIABLE,
            super::identity::TENANT_ID_VARIABLE,
            super::identity::CLIENT_ID_VARIABLE,
            super::identity::CLIENT_SECRET_VARIABLE,
            super::identity::FEDERATED_TOKEN_FILE_VARIABLE,
            AUTHORITY_HOST_VARIABLE,
        ]
        .map(String::from),
    );
    names
}

/// Settings by key, case-insensitive, `:` read as `__`; blank values
/// count as unset.
pub(super) struct Settings(HashMap<String, String>);

impl Settings {
    pub(super) fn new<K: AsRef<str>, V: Into<String>>(
        settings: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Settings(
            settings
                .into_iter()
                .map(|(k, v)| (normalized(k.as_ref()), v.into()))
                .filter(|(_, v)| !v.trim().is_empty())
                .collect(),
        )
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(&normalized(name)).map(String::as_str)
    }

    /// A setting of the host's section.
    fn section(&self, setting: &str) -> Option<&str> {
        self.get(&format!("{SECTION}__{setting}"))
    }

    /// Whether any `AzureWebJobsStorage__` setting is set.
    fn has_section(&self) -> bool {
        let prefix = normalized(&format!("{SECTION}__"));
        self.0.keys().any(|k| k.starts_with(&prefix))
    }

    fn lookup(&self) -> impl Fn(&str) -> Option<String> + '_ {
        |name| self.get(name).map(str::to_owned)
    }
}

fn normalized(key: &str) -> String {
    key.trim().replace(':', "__").to_ascii_lowercase()
}

/// The configuration the settings describe; `None` when they describe none.
pub(super) fn storage_config(settings: &Settings) -> Result<Option<StorageConfig>> {
    let connection_string = |name: &str| {
        settings.get(name).map(|text| {
            StorageConfig::from_connection_string(text)
                .map_err(|e| Error::Config(format!("{name}: {e}")))
        })
    };
    if let Some(config) = connection_string("ConnectionStrings:AzureWebJobsStorage") {
        return config.map(Some);
    }
    if let Some(config) = connection_string(SECTION) {
        return config.map(Some);
    }
    if settings.has_section() {
        return identity_based(settings).map(Some);
    }
    connection_string("AZURE_STORAGE_CONNECTION_STRING").transpose()
}

/// `AzureWebJobsStorage__{setting}`, for messages.
fn name(setting: &str) -> String {
    format!("{SECTION}__{setting}")
}

fn identity_based(settings: &Settings) -> Result<StorageConfig> {
    let account = settings.section("accountName").map(str::trim);
    if let Some(account) = account {
        validate_account(account)
            .map_err(|e| Error::Config(format!("{}: {e}", name("accountName"))))?;
    }
    let endpoint = |setting: &str| {
        settings
            .section(setting)
            .map(|uri| checked_endpoint(&name(setting), uri.trim()))
            .transpose()
    };
    let table_endpoint = match (endpoint("tableServiceUri")?, account) {
        (Some(uri), _) => uri,
        (None, Some(account)) => format!("https://{account}.table.core.windows.net"),
        (None, None) => {
            return Err(Error::Config(format!(
                "an identity-based connection ({SECTION}__ settings) needs {} or {}",
                name("accountName"),
                name("tableServiceUri")
            )))
        }
    };
    let blob_endpoint = endpoint("blobServiceUri")?
        .or_else(|| account.map(|a| format!("https://{a}.blob.core.windows.net")));
    Ok(StorageConfig {
        account: account.map_or_else(|| account_from_endpoint(&table_endpoint), str::to_owned),
        table_endpoint,
        blob_endpoint,
        credentials: Credentials::Token(identity(settings)?),
    })
}

/// The user-assigned managed identity the settings name, if any; more than
/// one is an error.
fn managed_identity_id(settings: &Settings) -> Result<ManagedIdentityId> {
    let named: Vec<(&str, ManagedIdentityId)> = [
        ("clientId", ManagedIdentityId::ClientId as fn(String) -> _),
        ("managedIdentityClientId", ManagedIdentityId::ClientId),
        ("managedIdentityResourceId", ManagedIdentityId::ResourceId),
        ("managedIdentityObjectId", ManagedIdentityId::ObjectId),
    ]
    .into_iter()
    .filter_map(|(setting, id)| {
        settings
            .section(setting)
            .map(|value| (setting, id(value.trim().to_owned())))
    })
    .collect();
    match named.as_slice() {
        [] => Ok(ManagedIdentityId::SystemAssigned),
        [(_, id)] => Ok(id.clone()),
        _ => Err(Error::AmbiguousIdentity {
            settings: named.iter().map(|(setting, _)| name(setting)).collect(),
        }),
    }
}

/// Workload identity (AKS, Container Apps): a service principal proven by a
/// federated token in a file, from the section's `tenantId`, `clientId` and
/// `tokenFilePath`, or else from the variables the workload identity
/// webhook sets, as Microsoft.Extensions.Azure reads them.
fn workload_identity(settings: &Settings) -> Result<Identity> {
    let setting = |setting: &str, variable: &str| {
        settings
            .section(setting)
            .or_else(|| settings.get(variable))
            .map(|value| value.trim().to_owned())
            .ok_or_else(|| {
                Error::Config(format!(
                    "{} is workloadidentity, so {} (or {variable}) is needed",
                    name("credential"),
                    name(setting)
                ))
            })
    };
    let principal = ServicePrincipal {
        tenant_id: setting("tenantId", TENANT_ID_VARIABLE)?,
        client_id: setting("clientId", CLIENT_ID_VARIABLE)?,
        proof: ServicePrincipalProof::FederatedTokenFile(
            setting("tokenFilePath", FEDERATED_TOKEN_FILE_VARIABLE)?.into(),
        ),
        authority_host: settings
            .get(AUTHORITY_HOST_VARIABLE)
            .map(|h| h.trim().to_owned()),
    };
    // That identity alone: no other sign-in is tried after it.
    Ok(Identity::Developer(DeveloperSignIn {
        service_principal: Some(principal),
        managed_identity: None,
        azure_cli: false,
    }))
}

fn identity(settings: &Settings) -> Result<Identity> {
    match settings.section("credential").map(str::trim) {
        Some(credential) if credential.eq_ignore_ascii_case("managedidentity") => {
            Ok(Identity::ManagedIdentity(ManagedIdentity {
                id: managed_identity_id(settings)?,
                endpoint: ManagedIdentityEndpoint::from_variables(settings.lookup()),
            }))
        }
        Some(credential) if credential.eq_ignore_ascii_case("workloadidentity") => {
            workload_identity(settings)
        }
        Some(other) => Err(Error::Config(format!(
            "{} is '{other}', which is not supported: set it to managedidentity or \
             workloadidentity, or leave it out to sign in as the developer (AZURE_* variables, \
             then the Azure CLI)",
            name("credential")
        ))),
        None => {
            let mut sign_in = DeveloperSignIn::from_variables(settings.lookup());
            if let Some(secret) = settings.section("clientSecret") {
                // The section's own service principal, as Functions reads it.
                let required = |setting: &str| {
                    settings
                        .section(setting)
                        .map(|v| v.trim().to_owned())
                        .ok_or_else(|| {
                            Error::Config(format!(
                                "{} is set, so {} is needed too",
                                name("clientSecret"),
                                name(setting)
                            ))
                        })
                };
                sign_in.service_principal = Some(ServicePrincipal {
                    tenant_id: required("tenantId")?,
                    client_id: required("clientId")?,
                    proof: ServicePrincipalProof::Secret(Secret::new(secret)),
                    authority_host: settings
                        .get(AUTHORITY_HOST_VARIABLE)
                        .map(|h| h.trim().to_owned()),
                });
            } else {
                // A client id without a secret names a user-assigned
                // managed identity, as DefaultAzureCredential reads it.
                let id = managed_identity_id(settings)?;
                if let Some(identity) = &mut sign_in.managed_identity {
                    identity.id = id;
                }
            }
            Ok(Identity::Developer(sign_in))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EMULATOR_ACCOUNT;

    const KEY: &str = "c2VjcmV0LWtleS12YWx1ZQ==";

    fn read(pairs: &[(&str, &str)]) -> Result<Option<StorageConfig>> {
        StorageConfig::from_settings(pairs.iter().copied())
    }

    fn config(pairs: &[(&str, &str)]) -> StorageConfig {
        read(pairs).unwrap().expect("a configuration")
    }

    fn identity_of(config: &StorageConfig) -> &Identity {
        match &config.credentials {
            Credentials::Token(identity) => identity,
            other => panic!("not a token: {other:?}"),
        }
    }

    #[test]
    fn workload_identity_reads_the_section_then_the_webhook_variables() {
        let expected = |tenant: &str, client: &str, file: &str| {
            Identity::Developer(DeveloperSignIn {
                service_principal: Some(ServicePrincipal {
                    tenant_id: tenant.into(),
                    client_id: client.into(),
                    proof: ServicePrincipalProof::FederatedTokenFile(file.into()),
                    authority_host: None,
                }),
                managed_identity: None,
                azure_cli: false,
            })
        };
        // The section's own settings, as Microsoft.Extensions.Azure names them.
        let from_section = config(&[
            ("AzureWebJobsStorage__accountName", "myacct"),
            ("AzureWebJobsStorage__credential", "WorkloadIdentity"),
            ("AzureWebJobsStorage__tenantId", "tenant-1"),
            ("AzureWebJobsStorage__clientId", "client-1"),
            ("AzureWebJobsStorage__tokenFilePath", "/var/run/token"),
            ("AZURE_CLIENT_ID", "client-from-webhook"),
        ]);
        assert_eq!(
            identity_of(&from_section),
            &expected("tenant-1", "client-1", "/var/run/token")
        );
        // Without them, the variables the workload identity webhook sets.
        let from_webhook = config(&[
            ("AzureWebJobsStorage__accountName", "myacct"),
            ("AzureWebJobsStorage__credential", "workloadidentity"),
            ("AZURE_TENANT_ID", "tenant-2"),
            ("AZURE_CLIENT_ID", "client-2"),
            (
                "AZURE_FEDERATED_TOKEN_FILE",
                "/var/run/secrets/azure/tokens/token",
            ),
        ]);
        assert_eq!(
            identity_of(&from_webhook),
            &expected(
                "tenant-2",
                "client-2",
                "/var/run/secrets/azure/tokens/token"
            )
        );
        // Missing one: named, with its variable.
        let err = read(&[
            ("AzureWebJobsStorage__accountName", "myacct"),
            ("AzureWebJobsStorage__credential", "workloadidentity"),
            ("AzureWebJobsStorage__tenantId", "tenant-1"),
            ("AzureWebJobsStorage__clientId", "client-1"),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("AzureWebJobsStorage__tokenFilePath")
                && err.contains("AZURE_FEDERATED_TOKEN_FILE"),
            "{err}"
        );
    }

    #[test]
    fn a_managed_identity_as_functions_configures_it() {
        let config = config(&[
            ("AzureWebJobsStorage__accountName", "myacct"),
            ("AzureWebJobsStorage__credential", "managedidentity"),
            ("AzureWebJobsStorage__clientId", "11111111-2222"),
            ("IDENTITY_ENDPOINT", "http://127.0.0.1:41000/msi/token"),
            ("IDENTITY_HEADER", "header-secret"),
        ]);
        assert_eq!(config.account, "myacct");
        assert_eq!(
            config.table_endpoint,
            "https://myacct.table.core.windows.net"
        );
        assert_eq!(
            config.blob_endpoint.as_deref(),
            Some("https://myacct.blob.core.windows.net")
        );
        assert_eq!(
            identity_of(&config),
            &Identity::ManagedIdentity(ManagedIdentity::new(
                ManagedIdentityId::ClientId("11111111-2222".into()),
                ManagedIdentityEndpoint::app_service(
                    "http://127.0.0.1:41000/msi/token",
                    "header-secret"
                ),
            ))
        );
        // Without the endpoint's variables: known to be missing, said at connect.
        let config = self::config(&[
            ("AzureWebJobsStorage__accountName", "myacct"),
            ("AzureWebJobsStorage__credential", "ManagedIdentity"),
        ]);
        assert_eq!(
            identity_of(&config),
            &Identity::ManagedIdentity(ManagedIdentity {
                id: ManagedIdentityId::SystemAssigned,
                endpoint: None
            })
        );
    }

    #[test]
    fn keys_are_case_insensitive_and_colons_separate_too() {
        let config = config(&[
            ("AZUREWEBJOBSSTORAGE:ACCOUNTNAME", "myacct"),
            ("azurewebjobsstorage__Credential", "MANAGEDIDENTITY"),
            (
                "AzureWebJobsStorage:managedIdentityResourceId",
                "/subscriptions/s/ids/x",
            ),
            ("identity_endpoint", "http://127.0.0.1:1/msi/token"),
            ("Identity_Header", "h"),
        ]);
        assert_eq!(config.account, "myacct");
        let Identity::ManagedIdentity(identity) = identity_of(&config) else {
            panic!("{config:?}");
        };
        assert_eq!(
            identity.id,
            ManagedIdentityId::ResourceId("/subscriptions/s/ids/x".into())
        );
        assert!(identity.endpoint.is_some());
    }

    #[test]
    fn explicit_service_uris_win_over_the_account_name() {
        let config = config(&[
            ("AzureWebJobsStorage__accountName", "myacct"),
            (
                "AzureWebJobsStorage__tableServiceUri",
                "https://myacct.table.core.chinacloudapi.cn/",
            ),
            ("AzureWebJobsStorage__credential", "managedidentity"),
        ]);
        assert_eq!(
            config.table_endpoint,
            "https://myacct.table.core.chinacloudapi.cn"
        );
        assert_eq!(
            config.blob_endpoint.as_deref(),
            Some("https://myacct.blob.core.windows.net"),
            "each service on its own"
        );
        // An emulator's URIs, the account from the path.
        let config = self::config(&[
            (
                "AzureWebJobsStorage__tableServiceUri",
                "https://127.0.0.1:10102/devstoreaccount1",
            ),
            (
                "AzureWebJobsStorage__blobServiceUri",
                "https://127.0.0.1:10100/devstoreaccount1",
            ),
            ("AzureWebJobsStorage__credential", "managedidentity"),
        ]);
        assert_eq!(config.account, EMULATOR_ACCOUNT);
        assert_eq!(
            config.blob_endpoint.as_deref(),
            Some("https://127.0.0.1:10100/devstoreaccount1")
        );
        // Without a blob URI or an account name, the blob endpoint is unknown.
        let config = self::config(&[
            (
                "AzureWebJobsStorage__tableServiceUri",
                "https://x.table.core.windows.net",
            ),
            ("AzureWebJobsStorage__credential", "managedidentity"),
        ]);
        assert_eq!((config.account.as_str(), config.blob_endpoint), ("x", None));
    }

    #[test]
    fn a_connection_string_wins_as_in_functions() {
        let identity = [
            ("AzureWebJobsStorage__accountName", "identityacct"),
            ("AzureWebJobsStorage__credential", "managedidentity"),
        ];
        let other = format!("AccountName=other;AccountKey={KEY}");
        let with = |extra: &[(&str, &str)]| {
            let mut pairs = identity.to_vec();
            pairs.extend_from_slice(extra);
            config(&pairs).account
        };
        assert_eq!(with(&[]), "identityacct");
        assert_eq!(
            with(&[("AzureWebJobsStorage", "UseDevelopmentStorage=true")]),
            EMULATOR_ACCOUNT
        );
        assert_eq!(
            with(&[
                ("AzureWebJobsStorage", "UseDevelopmentStorage=true"),
                ("ConnectionStrings:AzureWebJobsStorage", &other)
            ]),
            "other"
        );
        assert_eq!(
            with(&[("AzureWebJobsStorage", "  ")]),
            "identityacct",
            "blank is unset"
        );
        assert_eq!(
            with(&[("AZURE_STORAGE_CONNECTION_STRING", &other)]),
            "identityacct",
            "the section comes before the generic variable"
        );
        assert_eq!(
            config(&[("AZURE_STORAGE_CONNECTION_STRING", &other)]).account,
            "other"
        );
        assert!(read(&[("IDENTITY_ENDPOINT", "http://127.0.0.1:1")])
            .unwrap()
            .is_none());
    }

    #[test]
    fn more_than_one_managed_identity_is_an_error() {
        for credential in [Some("managedidentity"), None] {
            let mut pairs = vec![
                ("AzureWebJobsStorage__accountName", "a"),
                ("AzureWebJobsStorage__clientId", "c"),
                ("AzureWebJobsStorage__managedIdentityObjectId", "o"),
                ("IDENTITY_ENDPOINT", "http://127.0.0.1:1/msi/token"),
                ("IDENTITY_HEADER", "h"),
            ];
            pairs.extend(credential.map(|c| ("AzureWebJobsStorage__credential", c)));
            match read(&pairs) {
                Err(Error::AmbiguousIdentity { settings }) => assert_eq!(
                    settings,
                    [
                        "AzureWebJobsStorage__clientId",
                        "AzureWebJobsStorage__managedIdentityObjectId"
                    ]
                ),
                other => panic!("{credential:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn without_a_credential_setting_the_developer_chain_signs_in() {
        let config = config(&[
            ("AzureWebJobsStorage__accountName", "a"),
            ("AZURE_TENANT_ID", "tenant"),
            ("AZURE_CLIENT_ID", "app"),
            ("AZURE_CLIENT_SECRET", "client-secret"),
            ("AZURE_AUTHORITY_HOST", "http://127.0.0.1:9"),
        ]);
        let Identity::Developer(sign_in) = identity_of(&config) else {
            panic!("{config:?}");
        };
        assert_eq!(
            sign_in.service_principal,
            Some(ServicePrincipal {
                tenant_id: "tenant".into(),
                client_id: "app".into(),
                proof: ServicePrincipalProof::Secret(Secret::new("client-secret")),
                authority_host: Some("http://127.0.0.1:9".into()),
            })
        );
        assert!(sign_in.azure_cli && sign_in.managed_identity.is_none());

        // Workload identity: the token file wins over a secret.
        let config = self::config(&[
            ("AzureWebJobsStorage__accountName", "a"),
            ("AZURE_TENANT_ID", "tenant"),
            ("AZURE_CLIENT_ID", "app"),
            ("AZURE_CLIENT_SECRET", "client-secret"),
            ("AZURE_FEDERATED_TOKEN_FILE", "/var/run/token"),
        ]);
        let Identity::Developer(sign_in) = identity_of(&config) else {
            panic!("{config:?}");
        };
        assert_eq!(
            sign_in.service_principal.as_ref().map(|p| &p.proof),
            Some(&ServicePrincipalProof::FederatedTokenFile(
                "/var/run/token".into()
            ))
        );

        // In App Service: its managed identity, user-assigned by the client id.
        let config = self::config(&[
            ("AzureWebJobsStorage__accountName", "a"),
            ("AzureWebJobsStorage__clientId", "c"),
            ("IDENTITY_ENDPOINT", "http://127.0.0.1:1/msi/token"),
            ("IDENTITY_HEADER", "h"),
        ]);
        let Identity::Developer(sign_in) = identity_of(&config) else {
            panic!("{config:?}");
        };
        assert_eq!(sign_in.service_principal, None);
        assert_eq!(
            sign_in.managed_identity.as_ref().map(|m| &m.id),
            Some(&ManagedIdentityId::ClientId("c".into()))
        );

        // The section's own service principal.
        let config = self::config(&[
            ("AzureWebJobsStorage__accountName", "a"),
            ("AzureWebJobsStorage__tenantId", "t"),
            ("AzureWebJobsStorage__clientId", "c"),
            ("AzureWebJobsStorage__clientSecret", "section-secret"),
            ("AZURE_CLIENT_SECRET", "environment-secret"),
        ]);
        let Identity::Developer(sign_in) = identity_of(&config) else {
            panic!("{config:?}");
        };
        let principal = sign_in.service_principal.as_ref().unwrap();
        assert_eq!(
            (
                principal.tenant_id.as_str(),
                principal.client_id.as_str(),
                &principal.proof
            ),
            (
                "t",
                "c",
                &ServicePrincipalProof::Secret(Secret::new("section-secret"))
            )
        );
    }

    #[test]
    fn errors_name_the_setting_and_never_a_secret() {
        for (pairs, expected) in [
            (
                vec![("AzureWebJobsStorage__credential", "managedidentity")],
                "AzureWebJobsStorage__accountName or AzureWebJobsStorage__tableServiceUri",
            ),
            (
                vec![(
                    "AzureWebJobsStorage__tableServiceUri",
                    "https://a.table.core.windows.net/?sig=topsecret",
                )],
                "AzureWebJobsStorage__tableServiceUri must not hold a query string",
            ),
            (
                vec![("AzureWebJobsStorage__accountName", "bad-name")],
                "AzureWebJobsStorage__accountName",
            ),
            (
                vec![
                    ("AzureWebJobsStorage__accountName", "a"),
                    ("AzureWebJobsStorage__credential", "clientcertificate"),
                ],
                "AzureWebJobsStorage__credential is 'clientcertificate', which is not supported",
            ),
            (
                vec![
                    ("AzureWebJobsStorage__accountName", "a"),
                    ("AzureWebJobsStorage__clientSecret", "topsecret"),
                    ("AzureWebJobsStorage__clientId", "c"),
                ],
                "AzureWebJobsStorage__tenantId",
            ),
            (
                vec![("AzureWebJobsStorage", "AccountName=a;AccountKey")],
                "AzureWebJobsStorage: ",
            ),
        ] {
            let err = read(&pairs).unwrap_err().to_string();
            assert!(err.contains(expected), "{pairs:?}: {err}");
            assert!(!err.contains("topsecret"), "{err}");
        }
    }

    #[test]
    fn debug_output_shows_no_secret() {
        let config = config(&[
            ("AzureWebJobsStorage__accountName", "a"),
            ("AzureWebJobsStorage__tenantId", "t"),
            ("AzureWebJobsStorage__clientId", "c"),
            ("AzureWebJobsStorage__clientSecret", "topsecret-client"),
            ("IDENTITY_ENDPOINT", "http://127.0.0.1:1/msi/token"),
            ("IDENTITY_HEADER", "topsecret-header"),
        ]);
        let managed = self::config(&[
            ("AzureWebJobsStorage__accountName", "a"),
            ("AzureWebJobsStorage__credential", "managedidentity"),
            ("IDENTITY_ENDPOINT", "http://127.0.0.1:1/msi/token"),
            ("IDENTITY_HEADER", "topsecret-header"),
        ]);
        for config in [config, managed] {
            let debug = format!("{config:?} {config:#?}");
            assert!(!debug.contains("topsecret"), "{debug}");
            assert!(debug.contains("<redacted>"), "{debug}");
        }
    }

    #[test]
    fn a_lookup_is_asked_for_the_usual_spellings() {
        let config = StorageConfig::from_variables(|name| match name {
            "AzureWebJobsStorage__accountName" => Some("viaLookup1".to_owned()),
            "AzureWebJobsStorage:credential" => Some("managedidentity".to_owned()),
            "IDENTITY_ENDPOINT" => Some("http://127.0.0.1:1/msi/token".to_owned()),
            "IDENTITY_HEADER" => Some("h".to_owned()),
            _ => None,
        })
        .unwrap()
        .unwrap();
        assert_eq!(config.account, "viaLookup1");
        assert!(matches!(
            identity_of(&config),
            Identity::ManagedIdentity(ManagedIdentity {
                endpoint: Some(_),
                ..
            })
        ));
    }
}
