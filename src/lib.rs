#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub mod config;
pub mod emulator;
mod error;
#[cfg(feature = "http")]
pub mod http;
mod model;
mod purge;
mod query;
mod storage_client;
mod store;
mod wait;
pub mod wire;

pub use config::{Credentials, Secret, StorageConfig, StoreOptions};
pub use error::{Error, Result, SizeUnit};
pub use model::{
    utf16_bytes, utf16_units, CustomStatus, ETag, InstanceStatus, JsonText, RuntimeStatus, Tags,
    WriteCondition, DEFAULT_CUSTOM_STATUS_LIMIT, MAX_CUSTOM_STATUS_LIMIT,
};
pub use purge::{
    PurgeFilter, PurgeInterrupted, PurgeProgress, DEFAULT_PURGE_CONCURRENCY, MAX_PURGE_CONCURRENCY,
};
pub use query::{InstancePage, InstanceQuery, StatusCounts, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE};
pub use store::{InstanceStore, NewInstance, ReadOptions};
pub use wait::{CustomStatusUpdate, MIN_POLL_INTERVAL};
pub use wire::StateChange;
