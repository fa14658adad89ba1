#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub mod config;
pub mod credential;
#[cfg(feature = "emulator")]
pub mod emulator;
mod error;
pub mod format;
#[cfg(feature = "http")]
pub mod http;
mod model;
mod store;
mod table;

pub use config::{
    Credentials, DeveloperSignIn, Identity, ManagedIdentity, ManagedIdentityEndpoint,
    ManagedIdentityId, Secret, StorageConfig, StoreOptions, DEFAULT_SCAN_CONCURRENCY,
    MAX_SCAN_CONCURRENCY,
};
pub use error::{Cause, Error, Result, SizeUnit, TransportKind};
pub use format::entity::StateChange;
pub use format::limits::{
    utf16_bytes, utf16_units, DEFAULT_CUSTOM_STATUS_LIMIT, MAX_CUSTOM_STATUS_LIMIT,
};
pub use format::status_object::StatusPayload;
pub use model::{
    CustomStatus, ETag, InstanceStatus, JsonText, RuntimeStatus, Tags, WriteCondition,
    MAX_JSON_DEPTH,
};
pub use store::{
    Created, CustomStatusUpdate, InstancePage, InstanceQuery, InstanceStore, NewInstance,
    PurgeFilter, PurgeProgress, ReadOptions, StatusCounts, DEFAULT_PAGE_SIZE,
    DEFAULT_PURGE_CONCURRENCY, GET_MANY_CONCURRENCY, LARGE_PAYLOAD_CONCURRENCY, MAX_PAGE_SIZE,
    MAX_PURGE_CONCURRENCY, MIN_POLL_INTERVAL,
};
