//! Microsoft Entra ID sign-in against the real emulator, over HTTPS with
//! bearer tokens checked (`--oauth basic`), with the token endpoints on
//! loopback: nothing leaves this machine. A binary of its own: the tests
//! that need environment variables (`PATH` for a stub `az`,
//! `SSL_CERT_FILE`) set them on a child process, never on this one.

#[path = "common/identity.rs"]
mod rig;

use std::process::{Command, Stdio};
use std::time::Duration;

use durable_status::credential::{
    async_trait, AccessToken, CredentialError, CustomCredential, TokenCredential, TokenSecret,
};
use durable_status::{
    Error, Identity, InstanceStore, JsonText, NewInstance, RuntimeStatus, StorageConfig,
    StoreOptions,
};
use rig::{Recorded, TokenServer};

/// Names what a child process of this binary is to do.
const CHILD_VARIABLE: &str = "DURABLE_STATUS_TEST_SIGN_IN_CHILD";

fn hub() -> String {
    let suffix: String = std::iter::repeat_with(fastrand::alphanumeric)
        .take(12)
        .collect();
    format!("t{suffix}")
}

/// The store's options: the test's certificate trusted, short retries.
fn options() -> StoreOptions {
    StoreOptions::default()
        .extra_root_certificate(&rig::tls().certificate)
        .retry_budget(Duration::from_secs(2))
}

/// The settings of a Functions app whose storage is the HTTPS emulator,
/// reached with a managed identity served by `server`.
fn managed_identity_settings(server: &TokenServer, extra: &[(&str, &str)]) -> StorageConfig {
    let azurite = rig::secure_azurite();
    let mut settings = vec![
        (
            "AzureWebJobsStorage__tableServiceUri".to_owned(),
            azurite.table_endpoint(),
        ),
        (
            "AzureWebJobsStorage__blobServiceUri".to_owned(),
            azurite.blob_endpoint(),
        ),
        (
            "AzureWebJobsStorage__credential".to_owned(),
            "managedidentity".to_owned(),
        ),
        ("IDENTITY_ENDPOINT".to_owned(), server.url("/msi/token")),
        ("IDENTITY_HEADER".to_owned(), IDENTITY_HEADER.to_owned()),
    ];
    settings.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    StorageConfig::from_settings(settings)
        .unwrap()
        .expect("a configuration")
}

const IDENTITY_HEADER: &str = "identity-header-secret-4c1d";

/// Creates, reads and changes an instance: three kinds of request.
async fn round_trip(store: &InstanceStore) -> Result<(), Error> {
    store
        .create(NewInstance::new("signed-1", "Orchestrator").input(JsonText::from_value(&1)?))
        .await?;
    store.start("signed-1").await?;
    let status = store.get("signed-1").await?.expect("the instance");
    assert_eq!(status.runtime_status, RuntimeStatus::Running);
    Ok(())
}

#[tokio::test]
async fn a_user_assigned_managed_identity_signs_in_and_its_token_is_kept() {
    let token = rig::storage_token();
    let server = TokenServer::managed_identity(token.clone());
    let config =
        managed_identity_settings(&server, &[("AzureWebJobsStorage__clientId", "client-id-7")]);
    let store = InstanceStore::connect_with(&config, &hub(), options())
        .await
        .expect("signed in with the managed identity");
    round_trip(&store).await.expect("signed requests");

    let requests = server.requests();
    assert_eq!(
        requests.len(),
        1,
        "one token for every request: {requests:?}"
    );
    let request = &requests[0];
    assert_eq!(
        (request.method.as_str(), request.path()),
        ("GET", "/msi/token")
    );
    assert_eq!(request.header("x-identity-header"), Some(IDENTITY_HEADER));
    let query = request.query();
    assert_eq!(query["api-version"], "2019-08-01");
    assert_eq!(query["resource"], "https://storage.azure.com");
    assert_eq!(query["client_id"], "client-id-7");
    assert_eq!(query.len(), 3, "{query:?}");

    // The secrets are nowhere in what a program shows.
    let shown = format!("{config:?} {store:?}");
    assert!(
        !shown.contains(IDENTITY_HEADER) && !shown.contains(&token),
        "{shown}"
    );
}

#[tokio::test]
async fn a_token_close_to_its_expiry_is_fetched_again_and_expires_on_may_be_a_number() {
    let token = rig::storage_token();
    // Two minutes left: inside the five minutes before expiry.
    let server = TokenServer::start(move |_| {
        (
            200,
            serde_json::json!({"access_token": token, "expires_on": rig::now() + 120}).to_string(),
        )
    });
    let config = managed_identity_settings(
        &server,
        &[("AzureWebJobsStorage__managedIdentityObjectId", "object-9")],
    );
    let store = InstanceStore::connect_with(&config, &hub(), options())
        .await
        .expect("signed in");
    let before = server.requests().len();
    round_trip(&store).await.expect("signed requests");
    let requests = server.requests();
    assert!(
        requests.len() >= before + 4,
        "a token about to expire is asked for again before each request: {} then {}",
        before,
        requests.len()
    );
    assert_eq!(requests[0].query()["principal_id"], "object-9");
}

/// The error of a store that signs in with a managed identity handing out
/// `token`, on `azurite`.
async fn refusal_of(token: String, endpoint: &str) -> Error {
    let server = TokenServer::managed_identity(token);
    let config = StorageConfig::from_settings([
        ("AzureWebJobsStorage__tableServiceUri", endpoint),
        ("AzureWebJobsStorage__credential", "managedidentity"),
        ("IDENTITY_ENDPOINT", &server.url("/msi/token")),
        ("IDENTITY_HEADER", IDENTITY_HEADER),
    ])
    .unwrap()
    .unwrap();
    InstanceStore::connect_with(&config, &hub(), options())
        .await
        .expect_err("the emulator refuses the token")
}

fn assert_refused(error: &Error, reason: &str) {
    match error {
        Error::Storage {
            status: 403,
            code: Some(code),
            message,
        } if code == "AuthenticationFailed" => assert_eq!(
            message,
            &format!("the storage service refused the token: {reason}")
        ),
        other => panic!("not a refused token: {other:?}"),
    }
}

#[tokio::test]
async fn an_expired_token_is_refused_with_the_reason() {
    let endpoint = rig::secure_azurite().table_endpoint();
    let error = refusal_of(rig::jwt(rig::STORAGE_AUDIENCE, -600), &endpoint).await;
    assert_refused(&error, "Lifetime validation failed. The token is expired.");
    assert!(!error.is_transient());
}

#[tokio::test]
async fn a_token_for_another_audience_is_refused_with_the_reason() {
    let endpoint = rig::secure_azurite().table_endpoint();
    let error = refusal_of(rig::jwt("https://management.azure.com", 3600), &endpoint).await;
    assert_refused(&error, "Invalid token audience.");
    let text = error.to_string();
    assert!(text.contains("HTTP 403 (AuthenticationFailed)"), "{text}");
}

#[tokio::test]
async fn a_token_over_plain_http_is_refused_by_the_emulator() {
    let endpoint = rig::plain_oauth_azurite().table_endpoint();
    assert!(endpoint.starts_with("http://127.0.0.1:"), "{endpoint}");
    let error = refusal_of(rig::storage_token(), &endpoint).await;
    assert_refused(
        &error,
        "Authentication scheme Bearer is not allowed with HTTP.",
    );
}

#[tokio::test]
async fn an_identity_endpoint_that_refuses_is_a_sign_in_error_without_the_secret() {
    let server = TokenServer::start(|_| {
        (
            400,
            r#"{"error":"invalid_request","error_description":"Identity not found"}"#.to_owned(),
        )
    });
    let config = managed_identity_settings(&server, &[("AzureWebJobsStorage__clientId", "nobody")]);
    let error = InstanceStore::connect_with(&config, &hub(), options())
        .await
        .expect_err("no token");
    match &error {
        Error::SignIn {
            credential,
            status: Some(400),
            message,
            transient: false,
        } => {
            assert_eq!(message, "Identity not found");
            assert!(
                credential.contains(&server.url("/msi/token")) && credential.contains("nobody"),
                "{credential}"
            );
        }
        other => panic!("{other:?}"),
    }
    let text = format!("{error} {error:?}");
    assert!(!text.contains(IDENTITY_HEADER), "{text}");
    assert_eq!(server.requests().len(), 1, "a refusal is not retried");
}

#[tokio::test]
async fn a_managed_identity_without_its_endpoint_names_the_settings() {
    let config = StorageConfig::from_settings([
        ("AzureWebJobsStorage__accountName", "myaccount"),
        ("AzureWebJobsStorage__credential", "managedidentity"),
    ])
    .unwrap()
    .unwrap();
    let error = InstanceStore::open(&config, &hub(), options()).expect_err("no endpoint");
    let Error::NoIdentity { tried } = &error else {
        panic!("{error:?}");
    };
    let text = tried.join("; ");
    assert!(
        text.contains("IDENTITY_ENDPOINT") && text.contains("IDENTITY_HEADER"),
        "{text}"
    );
}

#[tokio::test]
async fn a_service_principal_signs_in_with_its_secret() {
    const SECRET: &str = "client-secret-value-93ab";
    let token = rig::storage_token();
    let server = TokenServer::start(move |_| {
        (
            200,
            serde_json::json!({"token_type": "Bearer", "expires_in": 3600, "access_token": token})
                .to_string(),
        )
    });
    let azurite = rig::secure_azurite();
    let config = StorageConfig::from_settings([
        (
            "AzureWebJobsStorage__tableServiceUri",
            azurite.table_endpoint(),
        ),
        ("AZURE_TENANT_ID", rig::TENANT.to_owned()),
        ("AZURE_CLIENT_ID", "app-id-5".to_owned()),
        ("AZURE_CLIENT_SECRET", SECRET.to_owned()),
        ("AZURE_AUTHORITY_HOST", server.url("")),
    ])
    .unwrap()
    .unwrap();
    assert!(matches!(
        &config.credentials,
        durable_status::Credentials::Token(Identity::Developer(_))
    ));
    assert!(!format!("{config:?}").contains(SECRET));
    let store = InstanceStore::connect_with(&config, &hub(), options())
        .await
        .expect("signed in as the service principal");
    round_trip(&store).await.expect("signed requests");

    let requests = server.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    let request: &Recorded = &requests[0];
    assert_eq!(
        (request.method.as_str(), request.path()),
        (
            "POST",
            format!("/{}/oauth2/v2.0/token", rig::TENANT).as_str()
        )
    );
    let form = request.form();
    assert_eq!(form["client_id"], "app-id-5");
    assert_eq!(form["client_secret"], SECRET);
    assert_eq!(form["grant_type"], "client_credentials");
    assert_eq!(form["scope"], "https://storage.azure.com/.default");
}

#[tokio::test]
async fn a_refused_client_secret_is_a_sign_in_error_without_the_secret() {
    const SECRET: &str = "wrong-secret-value-17fe";
    let server = TokenServer::start(|_| {
        (
            401,
            r#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided."}"#
                .to_owned(),
        )
    });
    let config = StorageConfig::from_settings([
        (
            "AzureWebJobsStorage__tableServiceUri",
            rig::secure_azurite().table_endpoint(),
        ),
        ("AzureWebJobsStorage__tenantId", rig::TENANT.to_owned()),
        ("AzureWebJobsStorage__clientId", "app-id-6".to_owned()),
        ("AzureWebJobsStorage__clientSecret", SECRET.to_owned()),
        ("AZURE_AUTHORITY_HOST", server.url("")),
    ])
    .unwrap()
    .unwrap();
    let error = InstanceStore::connect_with(&config, &hub(), options())
        .await
        .expect_err("refused");
    let Error::SignIn {
        credential,
        message,
        ..
    } = &error
    else {
        panic!("{error:?}");
    };
    assert!(credential.contains("app-id-6"), "{credential}");
    assert_eq!(
        message,
        "invalid_client: AADSTS7000215: Invalid client secret provided."
    );
    let text = format!("{error} {error:?}");
    assert!(!text.contains(SECRET), "{text}");
}

#[tokio::test]
async fn workload_identity_reads_its_token_file_for_every_new_token() {
    let token = rig::storage_token();
    // Two minutes left: each request asks for a new token.
    let server = TokenServer::start(move |_| {
        (
            200,
            serde_json::json!({
                "token_type": "Bearer",
                "expires_in": 120,
                "ext_expires_in": 120,
                "access_token": token,
            })
            .to_string(),
        )
    });
    let dir = rig::scratch("federated");
    let file = dir.join("token");
    std::fs::write(&file, "federated-assertion-1\n").unwrap();
    let config = StorageConfig::from_settings([
        (
            "AzureWebJobsStorage__tableServiceUri",
            rig::secure_azurite().table_endpoint(),
        ),
        ("AZURE_TENANT_ID", rig::TENANT.to_owned()),
        ("AZURE_CLIENT_ID", "workload-app".to_owned()),
        ("AZURE_FEDERATED_TOKEN_FILE", file.display().to_string()),
        ("AZURE_AUTHORITY_HOST", server.url("")),
    ])
    .unwrap()
    .unwrap();
    let store = InstanceStore::connect_with(&config, &hub(), options())
        .await
        .expect("signed in with workload identity");
    // The platform rotates the projected token.
    std::fs::write(&file, "federated-assertion-2\n").unwrap();
    assert!(store.get("absent").await.unwrap().is_none());
    let assertions: Vec<String> = server
        .requests()
        .iter()
        .map(|r| r.form()["client_assertion"].clone())
        .collect();
    assert_eq!(
        (
            assertions.first().map(String::as_str),
            assertions.last().map(String::as_str)
        ),
        (Some("federated-assertion-1"), Some("federated-assertion-2")),
        "{assertions:?}"
    );
}

/// `AzureWebJobsStorage__credential` = `workloadidentity`, as AKS and
/// Container Apps configure Functions: the section's tenant, client and
/// token file sign in, and nothing else is tried.
#[tokio::test]
async fn workload_identity_settings_of_functions_sign_in() {
    let token = rig::storage_token();
    let server = TokenServer::start(move |_| {
        (
            200,
            serde_json::json!({
                "token_type": "Bearer",
                "expires_in": 3600,
                "ext_expires_in": 3600,
                "access_token": token,
            })
            .to_string(),
        )
    });
    let dir = rig::scratch("workload-settings");
    let file = dir.join("token");
    std::fs::write(&file, "federated-assertion-7\n").unwrap();
    let config = StorageConfig::from_settings([
        (
            "AzureWebJobsStorage__tableServiceUri",
            rig::secure_azurite().table_endpoint(),
        ),
        (
            "AzureWebJobsStorage__credential",
            "workloadidentity".to_owned(),
        ),
        ("AzureWebJobsStorage__tenantId", rig::TENANT.to_owned()),
        ("AzureWebJobsStorage__clientId", "aks-app".to_owned()),
        (
            "AzureWebJobsStorage__tokenFilePath",
            file.display().to_string(),
        ),
        ("AZURE_AUTHORITY_HOST", server.url("")),
        // A managed identity endpoint that is never asked.
        (
            "IDENTITY_ENDPOINT",
            "http://127.0.0.1:9/msi/token".to_owned(),
        ),
        ("IDENTITY_HEADER", IDENTITY_HEADER.to_owned()),
    ])
    .unwrap()
    .unwrap();
    let store = InstanceStore::connect_with(&config, &hub(), options())
        .await
        .expect("signed in with workload identity");
    round_trip(&store).await.expect("signed requests");
    let requests = server.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    let form = requests[0].form();
    assert_eq!(form["client_assertion"], "federated-assertion-7");
    assert_eq!(form["client_id"], "aks-app");
    assert!(
        requests[0]
            .path()
            .starts_with(&format!("/{}/", rig::TENANT)),
        "{}",
        requests[0].path()
    );
}

/// A credential of the caller's, handing out one token.
#[derive(Debug)]
struct Handed(String);

#[async_trait]
impl TokenCredential for Handed {
    async fn get_token(&self, scopes: &[&str]) -> Result<AccessToken, CredentialError> {
        assert_eq!(scopes, ["https://storage.azure.com/.default"]);
        let expires = time::OffsetDateTime::now_utc() + Duration::from_secs(3600);
        Ok(AccessToken::new(TokenSecret::new(self.0.clone()), expires))
    }

    async fn clear_cache(&self) -> Result<(), CredentialError> {
        Ok(())
    }
}

#[tokio::test]
async fn a_credential_of_the_callers_signs_in() {
    let azurite = rig::secure_azurite();
    let config = StorageConfig::token(
        "devstoreaccount1",
        Identity::Custom(CustomCredential::new(Handed(rig::storage_token()))),
    )
    .unwrap()
    .with_table_endpoint(azurite.table_endpoint());
    let store = InstanceStore::connect_with(&config, &hub(), options())
        .await
        .expect("signed in with the caller's credential");
    round_trip(&store).await.expect("signed requests");
}

#[tokio::test]
async fn an_untrusted_certificate_says_how_to_trust_it() {
    let server = TokenServer::managed_identity(rig::storage_token());
    let config = managed_identity_settings(&server, &[]);
    // SSL_CERT_FILE is not set for this process (see `child`).
    let error = InstanceStore::connect_with(
        &config,
        &hub(),
        StoreOptions::default().retry_budget(Duration::from_secs(2)),
    )
    .await
    .expect_err("the certificate is not trusted");
    let text = error.to_string();
    assert!(
        matches!(error, Error::Transport { .. })
            && text.contains("not trusted")
            && text.contains("SSL_CERT_FILE"),
        "{text}"
    );
}

/// Runs this binary's `child` test in a process of its own, with only the
/// variables given (and `mode` telling it what to do); returns its stdout.
fn run_child(mode: &str, variables: &[(&str, String)]) -> String {
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env_clear()
        .env(CHILD_VARIABLE, mode)
        .envs(variables.iter().map(|(k, v)| (*k, v)))
        .stdin(Stdio::null())
        .output()
        .expect("the child runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "the child failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// What a child reports on stdout.
const SIGNED_IN: &str = "child: signed in";
const FAILED: &str = "child: failed: ";

/// Run by the tests below in a child process, whose environment they set:
/// reads the storage settings from the environment, trusts what
/// `SSL_CERT_FILE` names (nothing else), and reports what happened.
#[test]
#[ignore = "a helper that the sign-in tests run in a child process"]
fn child() {
    if std::env::var_os(CHILD_VARIABLE).is_none() {
        return;
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let config = StorageConfig::from_env()
            .expect("the settings read")
            .expect("settings are set");
        let options = StoreOptions::default().retry_budget(Duration::from_secs(2));
        let result = async {
            let store = InstanceStore::connect_with(&config, &hub(), options).await?;
            round_trip(&store).await
        }
        .await;
        match result {
            Ok(()) => println!("{SIGNED_IN}"),
            Err(error) => println!("{FAILED}{error}"),
        }
    });
}

#[test]
fn the_azure_cli_signs_developers_in_and_ssl_cert_file_is_trusted() {
    let azurite = rig::secure_azurite();
    let dir = rig::scratch("az");
    rig::stub_az(&dir, &rig::storage_token());
    let stdout = run_child(
        "azure-cli",
        &[
            ("PATH", dir.display().to_string()),
            (
                "SSL_CERT_FILE",
                rig::tls().certificate.display().to_string(),
            ),
            (
                "AzureWebJobsStorage__tableServiceUri",
                azurite.table_endpoint(),
            ),
        ],
    );
    assert!(stdout.contains(SIGNED_IN), "{stdout}");
    let arguments = rig::az_arguments(&dir);
    assert!(!arguments.is_empty(), "az ran");
    assert!(
        arguments.iter().all(|a| a
            == "account get-access-token --output json --scope https://storage.azure.com/.default"),
        "{arguments:?}"
    );
}

#[test]
fn without_any_identity_the_error_names_what_was_tried() {
    let azurite = rig::secure_azurite();
    let empty = rig::scratch("no-az");
    let stdout = run_child(
        "no-identity",
        &[
            ("PATH", empty.display().to_string()),
            (
                "SSL_CERT_FILE",
                rig::tls().certificate.display().to_string(),
            ),
            (
                "AzureWebJobsStorage__tableServiceUri",
                azurite.table_endpoint(),
            ),
        ],
    );
    let line = stdout
        .lines()
        .find_map(|l| l.split_once(FAILED).map(|(_, error)| error))
        .unwrap_or_else(|| panic!("the child should fail: {stdout}"));
    for named in [
        "no identity to sign in to storage with",
        "AZURE_TENANT_ID",
        "AZURE_CLIENT_SECRET",
        "AZURE_FEDERATED_TOKEN_FILE",
        "IDENTITY_ENDPOINT",
        "az was not found on PATH",
    ] {
        assert!(line.contains(named), "{named}: {line}");
    }
}

#[tokio::test]
async fn sign_in_requests_go_through_the_stores_client_and_its_roots() {
    // Both token endpoints over HTTPS with the test's certificate: only a
    // client that trusts it (the store's) can reach them.
    let token = rig::storage_token();
    let managed = TokenServer::start_tls({
        let token = token.clone();
        move |_| (200, rig::managed_identity_answer(&token, 3600))
    });
    let config = StorageConfig::from_settings([
        (
            "AzureWebJobsStorage__tableServiceUri",
            rig::secure_azurite().table_endpoint(),
        ),
        (
            "AzureWebJobsStorage__credential",
            "managedidentity".to_owned(),
        ),
        ("IDENTITY_ENDPOINT", managed.url("/msi/token")),
        ("IDENTITY_HEADER", IDENTITY_HEADER.to_owned()),
    ])
    .unwrap()
    .unwrap();
    assert!(managed.url("").starts_with("https://"));
    InstanceStore::connect_with(&config, &hub(), options())
        .await
        .expect("the managed identity endpoint is reached over HTTPS");
    assert_eq!(managed.requests().len(), 1);

    let entra = TokenServer::start_tls(move |_| {
        (
            200,
            serde_json::json!({"token_type": "Bearer", "expires_in": 3600, "access_token": token})
                .to_string(),
        )
    });
    let config = StorageConfig::from_settings([
        (
            "AzureWebJobsStorage__tableServiceUri",
            rig::secure_azurite().table_endpoint(),
        ),
        ("AZURE_TENANT_ID", rig::TENANT.to_owned()),
        ("AZURE_CLIENT_ID", "app".to_owned()),
        ("AZURE_CLIENT_SECRET", "client-secret-for-https".to_owned()),
        ("AZURE_AUTHORITY_HOST", entra.url("")),
    ])
    .unwrap()
    .unwrap();
    InstanceStore::connect_with(&config, &hub(), options())
        .await
        .expect("Entra ID is reached over HTTPS");
    assert_eq!(entra.requests().len(), 1);
}

#[tokio::test]
async fn an_accepted_token_without_a_data_role_names_the_role() {
    // A table service standing for a real account that knows the token but
    // finds no role assignment for it.
    let account = TokenServer::start(|_| {
        (
            403,
            r#"{"odata.error":{"code":"AuthorizationPermissionMismatch","message":{"lang":"en-US","value":"This request is not authorized to perform this operation using this permission.\nRequestId:1\nTime:2025-01-01T00:00:00Z"}}}"#
                .to_owned(),
        )
    });
    let identity = TokenServer::managed_identity(rig::storage_token());
    let config = StorageConfig::from_settings([
        (
            "AzureWebJobsStorage__tableServiceUri",
            account.url("/myaccount"),
        ),
        (
            "AzureWebJobsStorage__credential",
            "managedidentity".to_owned(),
        ),
        ("IDENTITY_ENDPOINT", identity.url("/msi/token")),
        ("IDENTITY_HEADER", IDENTITY_HEADER.to_owned()),
    ])
    .unwrap()
    .unwrap();
    let error = InstanceStore::connect_with(&config, &hub(), options())
        .await
        .expect_err("no role");
    match &error {
        Error::Storage {
            status: 403,
            code: Some(code),
            message,
        } if code == "AuthorizationPermissionMismatch" => assert!(
            message.contains("no data role")
                && message.contains("Storage Table Data Contributor")
                && message.contains("Storage Table Data Reader")
                && message.contains("using this permission"),
            "{message}"
        ),
        other => panic!("{other:?}"),
    }
    let sent = account.requests();
    assert_eq!(
        sent[0]
            .header("authorization")
            .map(|a| a.starts_with("Bearer ey")),
        Some(true),
        "the token went to the account: {sent:?}"
    );
}

#[tokio::test]
async fn an_identity_endpoint_that_does_not_answer_fails_after_five_seconds() {
    let server = TokenServer::start(|_| {
        std::thread::sleep(Duration::from_secs(8));
        (200, "{}".to_owned())
    });
    let config = managed_identity_settings(&server, &[]);
    let started = std::time::Instant::now();
    let error =
        InstanceStore::connect_with(&config, &hub(), options().retry_budget(Duration::ZERO))
            .await
            .expect_err("no answer");
    let waited = started.elapsed();
    assert!(
        (Duration::from_secs(5)..Duration::from_secs(7)).contains(&waited),
        "{waited:?}"
    );
    match &error {
        Error::SignIn {
            status: None,
            message,
            transient: true,
            ..
        } => assert_eq!(message, "no answer within 5 s"),
        other => panic!("{other:?}"),
    }
    assert!(error.is_transient());
}

/// Large payloads go to blobs signed with the same token: written, read
/// back and purged over HTTPS with a managed identity.
#[tokio::test]
async fn large_payloads_go_to_blobs_with_the_same_token() {
    let token = rig::storage_token();
    let server = TokenServer::managed_identity(token);
    let config = managed_identity_settings(&server, &[]);
    let store = InstanceStore::connect_with(&config, &hub(), options())
        .await
        .expect("signed in with the managed identity");
    let input = JsonText::from_value(&"x".repeat(40_000)).unwrap();
    store
        .create(NewInstance::new("large-1", "Orchestrator").input(input.clone()))
        .await
        .expect("the input goes to its blob, signed");
    let read = store.get("large-1").await.unwrap().expect("the instance");
    assert_eq!(read.input.as_deref(), Some(input.as_str()));
    let reference = store
        .get_with(
            "large-1",
            durable_status::ReadOptions::default().fetch_large_payloads(false),
        )
        .await
        .unwrap()
        .unwrap()
        .input
        .unwrap();
    assert!(reference.starts_with("https://"), "{reference}");
    store.terminate("large-1", "done").await.unwrap();
    assert!(store.purge_instance("large-1").await.unwrap());
    assert_eq!(server.requests().len(), 1, "one token for tables and blobs");
}
