//! What the library and the Azure crates under it log, at every level down
//! to trace, holds no secret: no bearer token, no SAS signature, no Shared
//! Key signature. A binary of its own: it installs the process's log
//! subscriber and keeps everything it is given.

mod common;
#[path = "common/identity.rs"]
mod rig;

use std::io::Write;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use anyhow::Result;
use durable_status::{
    Credentials, InstanceQuery, InstanceStore, JsonText, NewInstance, StorageConfig, StoreOptions,
};
use futures::TryStreamExt;
use rig::TokenServer;

/// Everything logged since the binary started.
static LOG: Mutex<String> = Mutex::new(String::new());

struct Capture;

impl Write for Capture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        LOG.lock()
            .unwrap()
            .push_str(&String::from_utf8_lossy(bytes));
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Logs every event of every crate, at trace level, into [`LOG`].
fn capture_logs() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(|| Capture)
            .init();
    });
}

fn log() -> String {
    LOG.lock().unwrap().clone()
}

/// Writes, reads, lists, counts and purges: every kind of request.
async fn exercise(store: &InstanceStore, id: &str) -> Result<()> {
    store
        .create(NewInstance::new(id, "Orchestrator").input(JsonText::from_value(&1)?))
        .await?;
    store.start(id).await?;
    assert!(store.get(id).await?.is_some());
    let listed: Vec<_> = store
        .query_unordered(&InstanceQuery::new())
        .try_collect()
        .await?;
    assert!(!listed.is_empty());
    store.count_by_status(&InstanceQuery::new()).await?;
    Ok(())
}

/// The log holds what the Azure crates say at trace level (the capture
/// works), and none of `secrets`.
fn assert_no_secret_in_log(secrets: &[&str]) {
    let log = log();
    assert!(
        log.contains("AuthorizationPolicy"),
        "the Azure crates' trace events were not captured:\n{log}"
    );
    for secret in secrets {
        assert!(!secret.is_empty());
        if let Some(line) = log.lines().find(|line| line.contains(secret)) {
            panic!("a secret is in the log: {line}");
        }
    }
}

#[tokio::test]
async fn shared_key_signatures_stay_out_of_the_log() -> Result<()> {
    capture_logs();
    let store = common::store().await;
    exercise(&store, "shared-key-1").await?;
    // An input past what a column keeps goes to a blob: the blob service's
    // requests too.
    let large = JsonText::from_value(&"x".repeat(40_000))?;
    store
        .create(NewInstance::new("shared-key-2", "Orchestrator").input(large.clone()))
        .await?;
    assert_eq!(
        store.get("shared-key-2").await?.unwrap().input.as_deref(),
        Some(large.as_str())
    );
    assert!(store.purge_instance("shared-key-1").await?);
    assert!(store.purge_instance("shared-key-2").await?);
    let Credentials::AccountKey { account, key } = &common::emulator().credentials else {
        panic!("the emulator is reached with its account key");
    };
    // The header is `SharedKey {account}:{signature}`.
    assert_no_secret_in_log(&[key.expose(), &format!("SharedKey {account}:")]);
    Ok(())
}

#[tokio::test]
async fn sas_signatures_stay_out_of_the_log() -> Result<()> {
    capture_logs();
    let owner = common::store().await;
    let sas = common::table_sas(
        &common::emulator(),
        &format!("{}Instances", owner.task_hub()),
    );
    let Credentials::SharedAccessSignature(token) = &sas.credentials else {
        panic!("a SAS configuration");
    };
    let signature = token
        .expose()
        .split('&')
        .find_map(|pair| pair.strip_prefix("sig="))
        .expect("the SAS has a signature")
        .to_owned();
    let store = InstanceStore::open(&sas, owner.task_hub(), StoreOptions::default())?;
    exercise(&store, "sas-1").await?;
    let decoded = percent_encoding::percent_decode_str(&signature)
        .decode_utf8()?
        .into_owned();
    assert_no_secret_in_log(&[&signature, &decoded]);
    Ok(())
}

#[tokio::test]
async fn bearer_tokens_stay_out_of_the_log() -> Result<()> {
    capture_logs();
    let token = rig::storage_token();
    let server = TokenServer::managed_identity(token.clone());
    let azurite = rig::secure_azurite();
    let config = StorageConfig::from_settings([
        (
            "AzureWebJobsStorage__tableServiceUri".to_owned(),
            azurite.table_endpoint(),
        ),
        (
            "AzureWebJobsStorage__credential".to_owned(),
            "managedidentity".to_owned(),
        ),
        ("IDENTITY_ENDPOINT".to_owned(), server.url("/msi/token")),
        ("IDENTITY_HEADER".to_owned(), "header-secret-9f2".to_owned()),
    ])?
    .expect("a configuration");
    let options = StoreOptions::default()
        .extra_root_certificate(&rig::tls().certificate)
        .retry_budget(Duration::from_secs(2));
    let hub = format!("logs{}", fastrand::u32(..));
    let store = InstanceStore::connect_with(&config, &hub, options).await?;
    exercise(&store, "bearer-1").await?;
    assert!(store.purge_instance("bearer-1").await?);
    assert_no_secret_in_log(&[&token, "header-secret-9f2"]);
    Ok(())
}
