//! The command line signing in with Microsoft Entra ID, against Azurite
//! over HTTPS with bearer tokens checked, with the token endpoints on
//! loopback. Every run gets only the environment the test gives it.

#[path = "../../tests/common/identity.rs"]
mod rig;

use std::process::{Command, Output, Stdio};

use rig::TokenServer;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_durable-status");
const IDENTITY_HEADER: &str = "cli-identity-header-secret-77";

fn hub() -> String {
    let suffix: String = std::iter::repeat_with(fastrand::alphanumeric)
        .take(12)
        .collect();
    format!("t{suffix}")
}

/// The binary with `args` and only the variables given (and
/// SSL_CERT_FILE naming the test's certificate), logging everything.
fn run(args: &[&str], variables: &[(&str, String)]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_clear()
        .env("SSL_CERT_FILE", &rig::tls().certificate)
        .env("RUST_LOG", "trace")
        .envs(variables.iter().map(|(k, v)| (*k, v)))
        .stdin(Stdio::null())
        .output()
        .expect("the binary runs")
}

fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// The one `error:` line of a failed run.
fn error_line(output: Output) -> String {
    assert!(!output.status.success(), "succeeded");
    let stderr = String::from_utf8(output.stderr).unwrap();
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(errors.len(), 1, "one error line: {stderr}");
    errors[0].to_owned()
}

fn identity_endpoint(server: &TokenServer) -> Vec<(&'static str, String)> {
    vec![
        ("IDENTITY_ENDPOINT", server.url("/msi/token")),
        ("IDENTITY_HEADER", IDENTITY_HEADER.to_owned()),
    ]
}

#[test]
fn a_managed_identity_signs_in_through_the_options_and_no_secret_is_logged() {
    let azurite = rig::secure_azurite();
    let token = rig::storage_token();
    let server = TokenServer::managed_identity(token.clone());
    let hub = hub();
    let table = azurite.table_endpoint();
    let sign_in = [
        "--table-endpoint",
        table.as_str(),
        "--credential",
        "managedidentity",
        "--client-id",
        "cli-client",
        "--task-hub",
        hub.as_str(),
    ];
    let variables = identity_endpoint(&server);
    let created = run(
        &[&sign_in[..], &["create", "mi-1", "--name", "Flow"]].concat(),
        &variables,
    );
    let stderr = String::from_utf8_lossy(&created.stderr).into_owned();
    assert!(
        !stderr.contains(IDENTITY_HEADER) && !stderr.contains(&token),
        "secrets in the logs: {stderr}"
    );
    assert!(stderr.contains("TRACE"), "everything is logged: {stderr}");
    assert_eq!(ok(created).trim(), "created instance 'mi-1' (Pending)");
    let got: Value = serde_json::from_str(&ok(run(
        &[&sign_in[..], &["get", "mi-1"]].concat(),
        &variables,
    )))
    .unwrap();
    assert_eq!(got["runtimeStatus"], "Pending");
    let requests = server.requests();
    assert!(!requests.is_empty());
    for request in requests {
        assert_eq!(request.header("x-identity-header"), Some(IDENTITY_HEADER));
        assert_eq!(request.query()["client_id"], "cli-client");
    }
}

#[test]
fn a_managed_identity_signs_in_through_the_functions_settings() {
    let azurite = rig::secure_azurite();
    let server = TokenServer::managed_identity(rig::storage_token());
    let hub = hub();
    let mut variables = identity_endpoint(&server);
    variables.extend([
        (
            "AzureWebJobsStorage__tableServiceUri",
            azurite.table_endpoint(),
        ),
        (
            "AzureWebJobsStorage__blobServiceUri",
            azurite.blob_endpoint(),
        ),
        (
            "AzureWebJobsStorage__credential",
            "managedidentity".to_owned(),
        ),
        (
            "AzureWebJobsStorage__managedIdentityResourceId",
            "/subscriptions/s/x".to_owned(),
        ),
    ]);
    ok(run(
        &["--task-hub", &hub, "create", "fx-1", "--name", "Flow"],
        &variables,
    ));
    let listed = ok(run(&["--task-hub", &hub, "list", "--json"], &variables));
    assert!(listed.contains("\"fx-1\""), "{listed}");
    assert_eq!(
        server.requests()[0].query()["mi_res_id"],
        "/subscriptions/s/x"
    );
}

#[test]
fn a_developer_signs_in_with_the_azure_cli() {
    let azurite = rig::secure_azurite();
    let dir = rig::scratch("cli-az");
    rig::stub_az(&dir, &rig::storage_token());
    let hub = hub();
    let table = azurite.table_endpoint();
    let variables = [("PATH", dir.display().to_string())];
    let args = [
        "--table-endpoint",
        &table,
        "--credential",
        "developer",
        "--task-hub",
        &hub,
    ];
    ok(run(
        &[&args[..], &["create", "dev-1", "--name", "Flow"]].concat(),
        &variables,
    ));
    // Without --credential: the developer's sign-in too.
    let got: Value = serde_json::from_str(&ok(run(
        &[
            "--table-endpoint",
            &table,
            "--task-hub",
            &hub,
            "get",
            "dev-1",
        ],
        &variables,
    )))
    .unwrap();
    assert_eq!(got["name"], "Flow");
    assert!(rig::az_arguments(&dir)
        .iter()
        .all(|a| a.ends_with("--scope https://storage.azure.com/.default")));
}

#[test]
fn refusals_are_one_clear_line_without_secrets() {
    let azurite = rig::secure_azurite();
    let table = azurite.table_endpoint();
    let args = |hub: &str| {
        vec![
            "--table-endpoint".to_owned(),
            table.clone(),
            "--credential".to_owned(),
            "managedidentity".to_owned(),
            "--task-hub".to_owned(),
            hub.to_owned(),
            "create".to_owned(),
            "x".to_owned(),
            "--name".to_owned(),
            "Flow".to_owned(),
        ]
    };
    let refused = TokenServer::start(|_| {
        (
            400,
            r#"{"error":"invalid_request","error_description":"Identity not found"}"#.to_owned(),
        )
    });
    let hub = hub();
    let owned = args(&hub);
    let argv: Vec<&str> = owned.iter().map(String::as_str).collect();
    let line = error_line(run(&argv, &identity_endpoint(&refused)));
    assert!(
        line.starts_with("error: sign-in failed: the managed identity endpoint")
            && line.ends_with("gave no token (HTTP 400): Identity not found")
            && !line.contains(IDENTITY_HEADER),
        "{line}"
    );

    let expired = TokenServer::managed_identity(rig::jwt(rig::STORAGE_AUDIENCE, -600));
    let line = error_line(run(&argv, &identity_endpoint(&expired)));
    assert!(
        line.contains(
            "HTTP 403 (AuthenticationFailed): the storage service refused the token: \
             Lifetime validation failed. The token is expired."
        ),
        "{line}"
    );

    let line = error_line(run(&argv, &[]));
    assert!(
        line.contains("no identity to sign in to storage with")
            && line.contains("IDENTITY_ENDPOINT")
            && line.contains("--imds"),
        "{line}"
    );
}

#[test]
fn a_connection_string_and_sign_in_options_are_exclusive() {
    let line = error_line(run(
        &[
            "--connection-string",
            "UseDevelopmentStorage=true",
            "--account-name",
            "a",
            "list",
        ],
        &[],
    ));
    assert!(line.contains("exclusive"), "{line}");
}

#[test]
fn help_says_how_to_sign_in() {
    let output = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8(output.stdout).unwrap();
    // As one line: the text wraps at the terminal's width.
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    for expected in [
        "--account-name",
        "--table-endpoint",
        "--blob-endpoint",
        "--credential",
        "managedidentity",
        "developer",
        "--client-id",
        "--imds",
        "AzureWebJobsStorage__accountName",
        "Storage Table Data Contributor",
        "SSL_CERT_FILE",
    ] {
        assert!(help.contains(expected), "{expected}: {help}");
    }
}
