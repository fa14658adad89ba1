//! The sign-in options: a storage account reached with Microsoft Entra ID
//! instead of a connection string, said as a Functions app says it.

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use durable_status::{Credentials, Identity, ManagedIdentityEndpoint, StorageConfig};

/// What the options are translated into: the settings of a Functions app.
const SECTION: &str = "AzureWebJobsStorage__";

/// Who signs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CredentialKind {
    /// The managed identity of the App Service or Functions app
    /// (IDENTITY_ENDPOINT, IDENTITY_HEADER); with --imds, a virtual
    /// machine's
    #[value(name = "managedidentity")]
    ManagedIdentity,
    /// Workload identity (AKS, Container Apps): the app registration of
    /// AZURE_TENANT_ID and --client-id (or AZURE_CLIENT_ID) with the
    /// federated token in AZURE_FEDERATED_TOKEN_FILE
    #[value(name = "workloadidentity")]
    WorkloadIdentity,
    /// AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET or
    /// AZURE_FEDERATED_TOKEN_FILE; else the App Service managed identity;
    /// else the Azure CLI (az login)
    Developer,
}

/// Sign-in with Microsoft Entra ID. Each option stands for a setting of a
/// Functions app, which the environment may hold instead.
// The docs are the help text, which shows URLs as they are.
#[allow(rustdoc::bare_urls)]
#[derive(Args, Debug, Default)]
#[command(next_help_heading = "Sign-in with Microsoft Entra ID (instead of a connection string)")]
pub struct SignIn {
    /// The storage account: endpoints https://NAME.table.core.windows.net
    /// and https://NAME.blob.core.windows.net [also: $AzureWebJobsStorage__accountName]
    #[arg(long, global = true, value_name = "NAME")]
    account_name: Option<String>,

    /// The table service's URL, for other clouds, private endpoints and
    /// emulators [also: $AzureWebJobsStorage__tableServiceUri]
    #[arg(long, global = true, value_name = "URL")]
    table_endpoint: Option<String>,

    /// The blob service's URL [also: $AzureWebJobsStorage__blobServiceUri]
    #[arg(long, global = true, value_name = "URL")]
    blob_endpoint: Option<String>,

    /// Who signs in [default: developer; also: $AzureWebJobsStorage__credential]
    #[arg(long, global = true, value_enum, value_name = "KIND")]
    credential: Option<CredentialKind>,

    /// The client id of a user-assigned managed identity [default: the
    /// system-assigned one], or of workload identity's app registration
    /// [also: $AzureWebJobsStorage__clientId]
    #[arg(long, global = true, value_name = "ID")]
    client_id: Option<String>,

    /// Ask a virtual machine's metadata endpoint (169.254.169.254) for the
    /// managed identity's token, where IDENTITY_ENDPOINT is not set
    #[arg(long, global = true)]
    imds: bool,
}

impl SignIn {
    /// Whether any option was given.
    pub fn given(&self) -> bool {
        self.account_name.is_some()
            || self.table_endpoint.is_some()
            || self.blob_endpoint.is_some()
            || self.credential.is_some()
            || self.client_id.is_some()
            || self.imds
    }

    /// The configuration of the options over the environment's settings
    /// (its connection strings aside: the options ask for sign-in).
    pub fn config(&self) -> Result<StorageConfig> {
        self.config_over(
            std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))),
        )
    }

    fn config_over(
        &self,
        environment: impl Iterator<Item = (String, String)>,
    ) -> Result<StorageConfig> {
        let normalized = |key: &str| key.replace(':', "__").to_ascii_lowercase();
        let connection_strings = [
            "azurewebjobsstorage",
            "connectionstrings__azurewebjobsstorage",
            "azure_storage_connection_string",
        ];
        let mut settings: Vec<(String, String)> = environment
            .filter(|(key, _)| !connection_strings.contains(&normalized(key).as_str()))
            .collect();
        let mut set = |setting: &str, value: Option<&str>| {
            let key = format!("{SECTION}{setting}");
            settings.retain(|(k, _)| normalized(k) != normalized(&key));
            if let Some(value) = value {
                settings.push((key, value.to_owned()));
            }
        };
        if let Some(account) = &self.account_name {
            set("accountName", Some(account));
        }
        if let Some(endpoint) = &self.table_endpoint {
            set("tableServiceUri", Some(endpoint));
        }
        if let Some(endpoint) = &self.blob_endpoint {
            set("blobServiceUri", Some(endpoint));
        }
        match self.credential {
            Some(CredentialKind::ManagedIdentity) => set("credential", Some("managedidentity")),
            Some(CredentialKind::WorkloadIdentity) => set("credential", Some("workloadidentity")),
            Some(CredentialKind::Developer) => set("credential", None),
            None => {}
        }
        if let Some(id) = &self.client_id {
            for other in [
                "managedIdentityClientId",
                "managedIdentityResourceId",
                "managedIdentityObjectId",
            ] {
                set(other, None);
            }
            set("clientId", Some(id));
        }
        let has = |setting: &str| {
            let key = normalized(&format!("{SECTION}{setting}"));
            settings
                .iter()
                .any(|(k, v)| normalized(k) == key && !v.trim().is_empty())
        };
        if !has("accountName") && !has("tableServiceUri") {
            bail!(
                "signing in needs the storage account: give --account-name or --table-endpoint \
                 (or set AzureWebJobsStorage__accountName or AzureWebJobsStorage__tableServiceUri)"
            );
        }
        let mut config = StorageConfig::from_settings(settings)
            .context("the sign-in options")?
            .context("the sign-in options describe no storage account")?;
        if self.imds {
            match &mut config.credentials {
                Credentials::Token(Identity::ManagedIdentity(identity)) => {
                    identity.endpoint = Some(ManagedIdentityEndpoint::Imds);
                }
                _ => bail!("--imds: it applies to --credential managedidentity only"),
            }
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use durable_status::{ManagedIdentity, ManagedIdentityId};

    #[derive(Parser)]
    struct Test {
        #[command(flatten)]
        sign_in: SignIn,
    }

    fn config(args: &[&str], environment: &[(&str, &str)]) -> Result<StorageConfig> {
        let test = Test::try_parse_from(std::iter::once("test").chain(args.iter().copied()))?;
        test.sign_in.config_over(
            environment
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    fn identity(config: &StorageConfig) -> &Identity {
        match &config.credentials {
            Credentials::Token(identity) => identity,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn options_stand_for_the_functions_settings_and_win_over_them() {
        let environment = [
            ("AzureWebJobsStorage", "UseDevelopmentStorage=true"),
            ("AzureWebJobsStorage__accountName", "fromenv"),
            ("AzureWebJobsStorage__managedIdentityResourceId", "/r"),
            ("IDENTITY_ENDPOINT", "http://127.0.0.1:1/msi/token"),
            ("IDENTITY_HEADER", "h"),
        ];
        let config = config(
            &[
                "--account-name",
                "fromflag",
                "--credential",
                "managedidentity",
                "--client-id",
                "c",
            ],
            &environment,
        )
        .unwrap();
        assert_eq!(
            config.account, "fromflag",
            "the connection string is set aside"
        );
        assert_eq!(
            identity(&config),
            &Identity::ManagedIdentity(ManagedIdentity::new(
                ManagedIdentityId::ClientId("c".into()),
                ManagedIdentityEndpoint::app_service("http://127.0.0.1:1/msi/token", "h"),
            ))
        );
        // The environment's account, the developer's sign-in.
        let config = self::config(&["--credential", "developer"], &environment).unwrap();
        assert_eq!(config.account, "fromenv");
        assert!(matches!(identity(&config), Identity::Developer(_)));
    }

    #[test]
    fn imds_is_asked_for_explicitly_and_only_for_a_managed_identity() {
        let config = config(
            &[
                "--account-name",
                "a",
                "--credential",
                "managedidentity",
                "--imds",
            ],
            &[],
        )
        .unwrap();
        let Identity::ManagedIdentity(identity) = identity(&config) else {
            panic!("{config:?}");
        };
        assert_eq!(identity.endpoint, Some(ManagedIdentityEndpoint::Imds));
        let without = self::config(
            &["--account-name", "a", "--credential", "managedidentity"],
            &[],
        )
        .unwrap();
        let Identity::ManagedIdentity(identity) = self::identity(&without) else {
            panic!("{without:?}");
        };
        assert_eq!(identity.endpoint, None, "never on its own");
        let err = self::config(&["--account-name", "a", "--imds"], &[]).unwrap_err();
        assert!(err.to_string().contains("--imds"), "{err}");
    }

    #[test]
    fn workload_identity_takes_the_client_id_and_the_webhook_variables() {
        let config = config(
            &[
                "--account-name",
                "a",
                "--credential",
                "workloadidentity",
                "--client-id",
                "aks-app",
            ],
            &[
                ("AZURE_TENANT_ID", "tenant-1"),
                ("AZURE_CLIENT_ID", "from-webhook"),
                ("AZURE_FEDERATED_TOKEN_FILE", "/var/run/token"),
            ],
        )
        .unwrap();
        let Identity::Developer(sign_in) = identity(&config) else {
            panic!("{config:?}");
        };
        let principal = sign_in.service_principal.as_ref().expect("a principal");
        assert_eq!(
            (principal.tenant_id.as_str(), principal.client_id.as_str()),
            ("tenant-1", "aks-app")
        );
        assert!(sign_in.managed_identity.is_none() && !sign_in.azure_cli);
    }

    #[test]
    fn an_account_is_needed() {
        let err = config(&["--credential", "developer"], &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--account-name") && err.contains("--table-endpoint"),
            "{err}"
        );
    }
}
