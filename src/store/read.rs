//! Reading one instance: the one read helper every operation uses.

use std::collections::HashMap;

use futures::{StreamExt, TryStreamExt};

use super::conflict::with_partition_key;
use super::InstanceStore;
use crate::error::{Error, Result};
use crate::format::columns::{self, INSTANCE_ROW_KEY};
use crate::format::keys::partition_key;
use crate::format::row::InstanceRow;
use crate::model::{preview, InstanceStatus};

/// How many reads [`InstanceStore::get_many`] keeps in flight.
pub const GET_MANY_CONCURRENCY: usize = 32;

/// What a read returns of the payload columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReadOptions {
    /// Read the Input column.
    pub include_input: bool,
    /// Read the Output column.
    pub include_output: bool,
    /// Read a payload kept in a blob (too large for its column): `true`
    /// returns the payload, `false` the reference stored in the column (the
    /// blob's URL), for a caller that does not want megabytes.
    pub fetch_large_payloads: bool,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            include_input: true,
            include_output: true,
            fetch_large_payloads: true,
        }
    }
}

impl ReadOptions {
    /// Leaves input and output out: a `$select` of the other columns.
    pub fn without_payloads() -> Self {
        ReadOptions {
            include_input: false,
            include_output: false,
            ..ReadOptions::default()
        }
    }

    /// Whether to read the Input column.
    pub fn include_input(mut self, include: bool) -> Self {
        self.include_input = include;
        self
    }

    /// Whether to read the Output column.
    pub fn include_output(mut self, include: bool) -> Self {
        self.include_output = include;
        self
    }

    /// Whether to return payloads kept in blobs (default) or the blob URL
    /// the column holds.
    pub fn fetch_large_payloads(mut self, fetch: bool) -> Self {
        self.fetch_large_payloads = fetch;
        self
    }

    /// The `$select` of these options: the columns a status is decoded
    /// from, the payloads only when asked for.
    pub(crate) fn select(&self) -> Vec<&'static str> {
        let mut columns = columns::COLUMNS_WITHOUT_PAYLOADS.to_vec();
        if self.include_input {
            columns.push(columns::INPUT);
            columns.push(columns::INPUT_BLOB_NAME);
        }
        if self.include_output {
            columns.push(columns::OUTPUT);
        }
        columns
    }
}

impl InstanceStore {
    /// Reads one instance: one request. `Ok(None)` when it does not exist.
    pub async fn get(&self, instance_id: &str) -> Result<Option<InstanceStatus>> {
        self.get_with(instance_id, ReadOptions::default()).await
    }

    /// Reads one instance, leaving out the payload columns the options say.
    /// An instance of a task hub whose table does not exist is absent too.
    pub async fn get_with(
        &self,
        instance_id: &str,
        options: ReadOptions,
    ) -> Result<Option<InstanceStatus>> {
        let pk = partition_key(instance_id)?;
        match self
            .read_with(&pk, Some(&options.select()), options.fetch_large_payloads)
            .await
        {
            Err(Error::TableNotFound { .. }) => Ok(None),
            other => other,
        }
    }

    /// Reads many instances: one request per distinct id, at most
    /// [`GET_MANY_CONCURRENCY`] in flight. The answer has one entry per id
    /// asked, in the order asked: `None` for an instance that does not
    /// exist (or whose task hub's table does not exist). An id given twice
    /// is read once and answered at each of its positions.
    ///
    /// Every id is checked before anything is sent: an invalid one (empty,
    /// too long once escaped) is an [`Error::Invalid`] (also when alone
    /// [`get`](Self::get) would answer `TooLarge`) that names the id and
    /// its position (from 0). The first request that fails fails the
    /// whole call, and the reads still in flight are dropped.
    pub async fn get_many<I, S>(
        &self,
        instance_ids: I,
        options: ReadOptions,
    ) -> Result<Vec<Option<InstanceStatus>>>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        // Position of each id's answer among the distinct keys.
        let mut slots = Vec::new();
        let mut keys: Vec<String> = Vec::new();
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (position, id) in instance_ids.into_iter().enumerate() {
            let id = id.as_ref();
            let pk = partition_key(id).map_err(|e| {
                let reason = match e {
                    Error::Invalid { reason, .. } => reason,
                    Error::TooLarge {
                        actual,
                        limit,
                        unit,
                        ..
                    } => format!("is {actual} {unit} once escaped, the limit is {limit} {unit}"),
                    other => other.to_string(),
                };
                Error::invalid(
                    "instance id",
                    format!("{} (at position {position}) {reason}", preview(id)),
                )
            })?;
            let slot = *seen.entry(pk.clone()).or_insert_with(|| {
                keys.push(pk);
                keys.len() - 1
            });
            slots.push(slot);
        }
        let select = options.select();
        let read: Vec<Option<InstanceStatus>> = futures::stream::iter(keys)
            .map(|pk| {
                let select = Some(select.as_slice());
                async move {
                    match self
                        .read_with(&pk, select, options.fetch_large_payloads)
                        .await
                    {
                        Err(Error::TableNotFound { .. }) => Ok(None),
                        other => other,
                    }
                }
            })
            .buffered(GET_MANY_CONCURRENCY)
            .try_collect()
            .await?;
        Ok(slots.into_iter().map(|slot| read[slot].clone()).collect())
    }

    /// Reads and decodes a row: all columns, or the partition key and
    /// `columns`. `None` when absent; [`Error::TableNotFound`] when its
    /// table is.
    pub(crate) async fn read(
        &self,
        pk: &str,
        columns: Option<&[&'static str]>,
    ) -> Result<Option<InstanceStatus>> {
        self.read_with(pk, columns, true).await
    }

    /// [`InstanceStore::read`], returning the blob references of payloads
    /// kept in blobs as stored unless `fetch_large_payloads`.
    async fn read_with(
        &self,
        pk: &str,
        columns: Option<&[&'static str]>,
        fetch_large_payloads: bool,
    ) -> Result<Option<InstanceStatus>> {
        let select = columns.map(with_partition_key);
        match self
            .client
            .get::<InstanceRow>(pk, INSTANCE_ROW_KEY, select.as_deref())
            .await?
        {
            Some((mut row, etag)) => {
                if fetch_large_payloads {
                    self.fetch_large_payloads(&mut row).await?;
                }
                row.decode(etag).map(Some)
            }
            None => Ok(None),
        }
    }

    /// [`InstanceStore::read`] of a row that must exist.
    pub(crate) async fn read_existing(
        &self,
        instance_id: &str,
        pk: &str,
        columns: &[&'static str],
    ) -> Result<InstanceStatus> {
        self.read(pk, Some(columns))
            .await?
            .ok_or_else(|| Error::not_found(instance_id))
    }
}
