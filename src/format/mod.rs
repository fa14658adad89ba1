//! The formats this crate speaks, as pure functions: nothing here does I/O,
//! so the exact bytes sent and the exact JSON served are unit-tested.
//!
//! - [`keys`]: instance ids as partition keys, task hub and table names.
//! - `columns`: the columns of an Instances row.
//! - `entity`: the rows and merges this crate writes.
//! - `row`: rows as queries and reads return them, decoded into their columns.
//! - `filter`: OData filters, every value quoted.
//! - [`limits`]: Table Storage's and Durable Functions' limits, checked before sending.
//! - [`time`]: DateTime text as the table holds it and as the HTTP API shows it.
//! - `digest`: a short, stable hash of bytes (FNV-1a).
//! - `json`: the compact form in which JSON is measured and stored.
//! - [`large`]: payloads too large for a column, kept in blobs as the provider keeps them.
//! - [`status_object`]: the status object of the Durable Functions HTTP API.

pub(crate) mod columns;
#[cfg(any(feature = "http", feature = "emulator", test))]
pub(crate) mod digest;
pub(crate) mod entity;
pub(crate) mod filter;
pub(crate) mod json;
pub mod keys;
pub mod large;
pub mod limits;
pub(crate) mod row;
pub mod status_object;
pub mod time;
