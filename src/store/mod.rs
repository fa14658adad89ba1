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
mod purge;
mod query;
mod read;
mod scan;
mod wait;
mod write;

pub use create::{Created, NewInstance};
pub use purge::{PurgeFilter, PurgeProgress, DEFAULT_PURGE_CONCURRENCY, MAX_PURGE_CONCURRENCY};
pub use query::{InstancePage, InstanceQuery, StatusCounts, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE};
pub use read::{ReadOptions, GET_MANY_CONCURRENCY};
pub use wait::{CustomStatusUpdate, MIN_POLL_INTERVAL};

use crate::config::{StorageConfig, StoreOptions};
use crate::error::Result;
use crate::format::keys;
use crate::table::TableClient;

/// The status records of one task hub, in its `{TaskHub}Instances` table.
///
/// Cheap to clone: clones share one connection pool.
#[derive(Debug, Clone)]
pub struct InstanceStore {
    client: TableClient,
    task_hub: String,
    options: StoreOptions,
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
        Ok(InstanceStore {
            client,
            task_hub: task_hub.to_owned(),
            options,
        })
    }

    /// The store of another task hub of the same account, sharing this
    /// one's connection pool and options. Sends nothing; the table is not
    /// created.
    pub fn task_hub_store(&self, task_hub: &str) -> Result<Self> {
        keys::validate_task_hub(task_hub)?;
        Ok(InstanceStore {
            client: self.client.sibling(&keys::instances_table(task_hub)),
            task_hub: task_hub.to_owned(),
            options: self.options.clone(),
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
