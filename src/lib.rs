#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub mod config;
pub mod emulator;
mod error;
mod model;
mod storage_client;
mod store;
pub mod wire;

pub use config::{Credentials, Secret, StorageConfig, StoreOptions};
pub use error::{Error, Result, SizeUnit};
pub use model::{
    utf16_bytes, utf16_units, CustomStatus, ETag, InstanceStatus, JsonText, RuntimeStatus, Tags,
    WriteCondition, DEFAULT_CUSTOM_STATUS_LIMIT, MAX_CUSTOM_STATUS_LIMIT,
};
pub use store::{InstanceStore, NewInstance, ReadOptions};
pub use wire::StateChange;
