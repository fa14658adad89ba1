//! Reading one instance: the one read helper every operation uses.

use super::conflict::with_partition_key;
use super::InstanceStore;
use crate::error::{Error, Result};
use crate::format::columns::{self, INSTANCE_ROW_KEY};
use crate::format::entity::decode_instance;
use crate::format::keys::partition_key;
use crate::model::InstanceStatus;

/// What a read returns of the payload columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReadOptions {
    /// Read the Input column.
    pub include_input: bool,
    /// Read the Output column.
    pub include_output: bool,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            include_input: true,
            include_output: true,
        }
    }
}

impl ReadOptions {
    /// Leaves input and output out: a `$select` of the other columns.
    pub fn without_payloads() -> Self {
        ReadOptions {
            include_input: false,
            include_output: false,
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

    /// The `$select` of these options; `None` for every column.
    pub(crate) fn select(&self) -> Option<Vec<&'static str>> {
        if self.include_input && self.include_output {
            return None;
        }
        let mut columns = columns::COLUMNS_WITHOUT_PAYLOADS.to_vec();
        if self.include_input {
            columns.push(columns::INPUT);
        }
        if self.include_output {
            columns.push(columns::OUTPUT);
        }
        Some(columns)
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
        match self.read(&pk, options.select().as_deref()).await {
            Err(Error::TableNotFound { .. }) => Ok(None),
            other => other,
        }
    }

    /// Reads and decodes a row: all columns, or the partition key and
    /// `columns`. `None` when absent; [`Error::TableNotFound`] when its
    /// table is.
    pub(crate) async fn read(
        &self,
        pk: &str,
        columns: Option<&[&'static str]>,
    ) -> Result<Option<InstanceStatus>> {
        let select = columns.map(with_partition_key);
        match self
            .client
            .get(pk, INSTANCE_ROW_KEY, select.as_deref())
            .await?
        {
            Some((row, etag)) => decode_instance(&row, etag).map(Some),
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
