//! The integration harness: one Azurite per test binary, started on first
//! use and gone when the binary exits (however it exits); or, when
//! `DURABLE_STATUS_TEST_CONNECTION_STRING` is set, that account instead.
//! Each test works in a task hub of its own.
#![allow(dead_code)] // each test binary uses a part of it

use std::sync::OnceLock;

use durable_status::emulator::Azurite;
use durable_status::{InstanceStore, StorageConfig, StoreOptions};

/// Points the suite at another table endpoint (a real account, an
/// emulator started by hand) instead of starting Azurite.
pub const CONNECTION_STRING_VARIABLE: &str = "DURABLE_STATUS_TEST_CONNECTION_STRING";

pub mod proxy;

/// The table service under test: the endpoint of
/// `DURABLE_STATUS_TEST_CONNECTION_STRING`, or the bundled emulator.
pub fn storage() -> StorageConfig {
    if let Ok(text) = std::env::var(CONNECTION_STRING_VARIABLE) {
        return StorageConfig::from_connection_string(&text)
            .unwrap_or_else(|e| panic!("{CONNECTION_STRING_VARIABLE} is unusable: {e}"));
    }
    emulator()
}

/// The bundled emulator, whatever the environment says: for tests that put
/// a proxy on loopback in front of the service.
pub fn emulator() -> StorageConfig {
    static AZURITE: OnceLock<Result<Azurite, String>> = OnceLock::new();
    match AZURITE.get_or_init(|| Azurite::start().map_err(|e| e.to_string())) {
        Ok(azurite) => azurite.config(),
        Err(why) => panic!(
            "the integration tests need the Azurite emulator, and it could not start: {why}\n\
             (or set {CONNECTION_STRING_VARIABLE} to use another endpoint)"
        ),
    }
}

/// A store of a new task hub on the bundled emulator, reached through a proxy.
pub async fn proxied_store(options: StoreOptions) -> (InstanceStore, proxy::Proxy) {
    let behind = emulator();
    let proxy = proxy::Proxy::start(&behind);
    let store = InstanceStore::connect_with(&proxy.config(&behind), &unique_hub(), options)
        .await
        .expect("the store connects through the proxy");
    proxy.take_requests();
    proxy.take_lines();
    (store, proxy)
}

/// A task hub name no other test uses.
pub fn unique_hub() -> String {
    let suffix: String = std::iter::repeat_with(fastrand::alphanumeric)
        .take(12)
        .collect();
    format!("t{suffix}")
}

/// A store of a new task hub on the service under test, whose tables are
/// deleted when it is dropped if that service is a real account (the
/// emulator keeps everything in memory and exits with the tests).
pub struct TestStore {
    store: InstanceStore,
}

impl std::ops::Deref for TestStore {
    type Target = InstanceStore;

    fn deref(&self) -> &InstanceStore {
        &self.store
    }
}

impl Drop for TestStore {
    fn drop(&mut self) {
        if std::env::var_os(CONNECTION_STRING_VARIABLE).is_some() {
            delete_tables(self.store.task_hub());
        }
    }
}

/// Deletes a task hub's tables (Instances and History), waiting for it:
/// from a thread of its own, so that it works inside and outside a runtime.
pub fn delete_tables(task_hub: &str) {
    let task_hub = task_hub.to_owned();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async {
            for table in [format!("{task_hub}Instances"), format!("{task_hub}History")] {
                // A table that was never created is fine.
                let _ = azure_table(&table).delete().await;
            }
        });
    })
    .join()
    .expect("the cleanup thread finishes");
}

pub async fn store() -> TestStore {
    store_with(StoreOptions::default()).await
}

pub async fn store_with(options: StoreOptions) -> TestStore {
    let store = InstanceStore::connect_with(&storage(), &unique_hub(), options)
        .await
        .expect("the store connects");
    TestStore { store }
}

/// A table client of the Azure crate, standing for another tool (the Durable
/// Task provider, Storage Explorer) that reads and writes the same table.
pub fn other_tool(store: &InstanceStore) -> azure_data_tables::prelude::TableClient {
    azure_table(&format!("{}Instances", store.task_hub()))
}

/// A table of the account under test, through the Azure crate.
pub fn azure_table(name: &str) -> azure_data_tables::prelude::TableClient {
    azure_table_on(&storage(), name)
}

/// A table of the account of `config`, through the Azure crate.
pub fn azure_table_on(
    config: &StorageConfig,
    name: &str,
) -> azure_data_tables::prelude::TableClient {
    use azure_data_tables::clients::TableServiceClientBuilder;
    use azure_storage::CloudLocation;
    let credentials = credentials_of(config);
    let location = CloudLocation::Custom {
        account: config.account.clone(),
        uri: config.table_endpoint.clone(),
    };
    TableServiceClientBuilder::with_location(location, credentials)
        .retry(azure_core::RetryOptions::none())
        .build()
        .table_client(name)
}

/// Reads a row as another tool sees it, with full metadata (type annotations).
pub async fn raw_row(
    store: &InstanceStore,
    partition_key: &str,
) -> serde_json::Map<String, serde_json::Value> {
    let response = other_tool(store)
        .partition_key_client(partition_key.replace('\'', "''"))
        .entity_client("")
        .get::<serde_json::Map<String, serde_json::Value>>()
        .await
        .expect("the raw row reads");
    response.entity
}

/// Writes a row as another tool would.
pub async fn write_raw_row(store: &InstanceStore, row: serde_json::Value) {
    let _: azure_data_tables::operations::InsertEntityResponse<serde_json::Value> =
        other_tool(store)
            .insert(&row)
            .expect("serializes")
            .await
            .expect("the raw row is written");
}

/// The same task hub as `store`, on the bundled emulator through a new proxy.
pub async fn through_proxy(
    store: &InstanceStore,
    options: StoreOptions,
) -> (InstanceStore, proxy::Proxy) {
    let behind = emulator();
    let proxy = proxy::Proxy::start(&behind);
    let proxied = InstanceStore::connect_with(&proxy.config(&behind), store.task_hub(), options)
        .await
        .expect("the store connects through the proxy");
    proxy.take_requests();
    proxy.take_lines();
    (proxied, proxy)
}

/// A store on the bundled emulator (for tests that also go through a proxy).
pub async fn emulator_store() -> InstanceStore {
    InstanceStore::connect(&emulator(), &unique_hub())
        .await
        .expect("the store connects")
}

/// A connection string for the service under test, for tools that take one.
pub fn connection_string() -> String {
    if let Ok(text) = std::env::var(CONNECTION_STRING_VARIABLE) {
        return text;
    }
    connection_string_for(&emulator())
}

/// A connection string for an endpoint that signs with an account key (the
/// emulator, or a proxy in front of it).
pub fn connection_string_for(config: &StorageConfig) -> String {
    match &config.credentials {
        durable_status::Credentials::AccountKey { account, key } => format!(
            "DefaultEndpointsProtocol=http;AccountName={account};AccountKey={};TableEndpoint={};{}",
            key.expose(),
            config.table_endpoint,
            config
                .blob_endpoint
                .as_ref()
                .map(|blob| format!("BlobEndpoint={blob};"))
                .unwrap_or_default()
        ),
        _ => panic!("a connection string is built for account-key endpoints only"),
    }
}

/// The task hub's History table as the Durable Task provider keeps it:
/// created, and filled with `rows` events for each (escaped) partition key.
pub async fn provider_history(
    store: &InstanceStore,
    partitions: &[(&str, usize)],
) -> azure_data_tables::prelude::TableClient {
    provider_history_on(&storage(), store.task_hub(), partitions).await
}

/// [`provider_history`] on the account of `config`.
pub async fn provider_history_on(
    config: &StorageConfig,
    task_hub: &str,
    partitions: &[(&str, usize)],
) -> azure_data_tables::prelude::TableClient {
    let history = azure_table_on(config, &format!("{task_hub}History"));
    let _ = history.create().await;
    for (partition, rows) in partitions {
        futures::future::try_join_all((0..*rows).map(|i| {
            let row = serde_json::json!({
                "PartitionKey": partition,
                "RowKey": format!("{i:016X}"),
                "EventType": "TaskScheduled",
                "ExecutionId": "e1",
            });
            let history = history.clone();
            async move {
                let _: azure_data_tables::operations::InsertEntityResponse<serde_json::Value> =
                    history.insert(&row)?.await?;
                Ok::<_, azure_core::Error>(())
            }
        }))
        .await
        .expect("history rows are written");
    }
    history
}

/// Rows of a History partition, read as another tool.
pub async fn history_rows(
    history: &azure_data_tables::prelude::TableClient,
    partition: &str,
) -> usize {
    use futures::StreamExt;
    let filter = format!("PartitionKey eq '{}'", partition.replace('\'', "''"));
    let mut pages = history
        .query()
        .filter(filter)
        .into_stream::<serde_json::Value>();
    let mut count = 0;
    while let Some(page) = pages.next().await {
        count += page.expect("the history reads").entities.len();
    }
    count
}

/// The account of `config` (which signs with an account key, as the
/// emulator does) reached with a table SAS scoped to the one table `table`:
/// read, add, update and delete its rows, and nothing of any other table
/// (requests to another table are answered 403).
pub fn table_sas(config: &StorageConfig, table: &str) -> StorageConfig {
    let durable_status::Credentials::AccountKey { account, key } = &config.credentials else {
        panic!("a table SAS is signed with an account key");
    };
    let (permissions, expiry, version) = ("raud", "2099-01-01T00:00:00Z", "2019-02-02");
    // The service SAS string to sign of versions 2018-11-09 and later:
    // permissions, start, expiry, canonical table name, policy id, IP
    // range, protocol, version, then the four key bounds.
    let canonical = format!("/table/{account}/{}", table.to_lowercase());
    let to_sign = [
        permissions,
        "",
        expiry,
        &canonical,
        "",
        "",
        "",
        version,
        "",
        "",
        "",
        "",
    ]
    .join("\n");
    let signature = azure_core::hmac::hmac_sha256(
        &to_sign,
        &azure_core::auth::Secret::new(key.expose().to_owned()),
    )
    .expect("the account key signs");
    let sas = format!(
        "sv={version}&tn={}&sp={permissions}&se={}&sig={}",
        percent_encoded(table),
        percent_encoded(expiry),
        percent_encoded(&signature)
    );
    let text = format!(
        "AccountName={account};TableEndpoint={};SharedAccessSignature={sas}",
        config.table_endpoint
    );
    StorageConfig::from_connection_string(&text).expect("a SAS connection string")
}

/// Percent-encodes a query-string value (everything but unreserved characters).
fn percent_encoded(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// The task hub's large-message container as another tool (the Durable
/// Task provider) reaches it, on the account under test.
pub fn large_messages(task_hub: &str) -> azure_storage_blobs::prelude::ContainerClient {
    use azure_storage::CloudLocation;
    let config = storage();
    let credentials = credentials_of(&config);
    let location = CloudLocation::Custom {
        account: config.account.clone(),
        uri: config
            .blob_endpoint
            .clone()
            .expect("the account under test has a blob endpoint"),
    };
    azure_storage_blobs::prelude::ClientBuilder::with_location(location, credentials)
        .retry(azure_core::RetryOptions::none())
        .container_client(format!("{}-largemessages", task_hub.to_ascii_lowercase()))
}

/// The Azure crates' credentials of `config`, for clients standing for
/// other tools.
fn credentials_of(config: &StorageConfig) -> azure_storage::StorageCredentials {
    use azure_storage::StorageCredentials;
    match &config.credentials {
        durable_status::Credentials::AccountKey { account, key } => StorageCredentials::access_key(
            account.clone(),
            azure_core::auth::Secret::new(key.expose().to_owned()),
        ),
        durable_status::Credentials::SharedAccessSignature(sas) => {
            StorageCredentials::sas_token(sas.expose()).expect("a valid SAS")
        }
        _ => panic!("unsupported credentials"),
    }
}
