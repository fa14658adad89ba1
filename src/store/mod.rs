//! The instance store: create, read, update, find and delete status records
//! of one task hub, each in the fewest requests it can.
//!
//! - [`create`](InstanceStore::create) and the read helpers: `create.rs`, `read.rs`;
//! - writes of the custom status and state changes: `write.rs`;
//! - the one conflict-retry loop and the "was it my write" checks: `conflict.rs`;
//! - listings and counts: `query.rs`, with the parallel scan of the key
//!   space they and purges share: `scan.rs`;
//! - purges: `purge.rs`; waits: `wait.rs`.

mod conflict;
mod create;
mod large;
mod purge;
mod query;
mod read;
mod scan;
mod wait;
mod write;

pub use create::{Created, NewInstance};
pub use large::LARGE_PAYLOAD_CONCURRENCY;
pub use purge::{PurgeFilter, PurgeProgress, DEFAULT_PURGE_CONCURRENCY, MAX_PURGE_CONCURRENCY};
pub use query::{InstancePage, InstanceQuery, StatusCounts, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE};
pub use read::{ReadOptions, GET_MANY_CONCURRENCY};
pub use wait::{CustomStatusUpdate, MIN_POLL_INTERVAL};

use crate::config::{StorageConfig, StoreOptions};
use crate::error::Result;
use crate::format::keys;
use crate::format::large::container_name;
use crate::table::{BlobContainer, TableClient};

/// The status records of one task hub, in its `{TaskHub}Instances` table.
///
/// Cheap to clone: clones share one connection pool.
#[derive(Debug, Clone)]
pub struct InstanceStore {
    client: TableClient,
    task_hub: String,
    options: StoreOptions,
    /// The task hub's large-message container, when the blob endpoint is
    /// known (and the hub's name short enough for a container).
    blobs: Option<BlobContainer>,
    blob_endpoint: Option<String>,
}

impl InstanceStore {
    /// Opens the store of `task_hub` with default options, creating its
    /// Instances table when missing.
    pub async fn connect(config: &StorageConfig, task_hub: &str) -> Result<Self> {
        Self::connect_with(config, task_hub, StoreOptions::default()).await
    }

    /// Opens the store with options, creating its table when missing; an
    /// option out of range (a custom status limit above 64 KiB) is refused
    /// before any request.
    pub async fn connect_with(
        config: &StorageConfig,
        task_hub: &str,
        options: StoreOptions,
    ) -> Result<Self> {
        let store = Self::open(config, task_hub, options)?;
        store.client.create_table_if_missing().await?;
        Ok(store)
    }

    /// Opens the store of `task_hub` without creating its table or sending
    /// anything: reads of a task hub that does not exist find nothing, and
    /// writes answer [`Error::TableNotFound`](crate::Error::TableNotFound).
    pub fn open(config: &StorageConfig, task_hub: &str, options: StoreOptions) -> Result<Self> {
        keys::validate_task_hub(task_hub)?;
        options.validate()?;
        let client = TableClient::new(config, &keys::instances_table(task_hub), &options)?;
        let blob_endpoint = config.blob_endpoint.clone();
        Ok(InstanceStore {
            blobs: large_messages(&client, blob_endpoint.as_deref(), task_hub),
            client,
            task_hub: task_hub.to_owned(),
            options,
            blob_endpoint,
        })
    }

    /// The store of another task hub of the same account, sharing this
    /// one's connection pool and options. Sends nothing; the table is not
    /// created.
    pub fn task_hub_store(&self, task_hub: &str) -> Result<Self> {
        keys::validate_task_hub(task_hub)?;
        let client = self.client.sibling(&keys::instances_table(task_hub));
        Ok(InstanceStore {
            blobs: large_messages(&client, self.blob_endpoint.as_deref(), task_hub),
            client,
            task_hub: task_hub.to_owned(),
            options: self.options.clone(),
            blob_endpoint: self.blob_endpoint.clone(),
        })
    }

    /// The task hub's name.
    pub fn task_hub(&self) -> &str {
        &self.task_hub
    }

    /// The options in force.
    pub fn options(&self) -> &StoreOptions {
        &self.options
    }
}

/// The large-message container of `task_hub` at `endpoint`; none without an
/// endpoint, or for a hub whose name is too long for a container (its
/// payloads over 60 KiB are then refused, as without blobs).
fn large_messages(
    client: &TableClient,
    endpoint: Option<&str>,
    task_hub: &str,
) -> Option<BlobContainer> {
    let name = container_name(task_hub).ok()?;
    Some(client.blob_container(endpoint?, &name))
}
