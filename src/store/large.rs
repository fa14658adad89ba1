//! Payloads too large for a column, kept in the task hub's large-message
//! container as the Durable Task provider keeps them (see `format::large`):
//! read back wherever a row refers to one, written there when an input or
//! output is over 60 KiB, and deleted with their instance.

use futures::{StreamExt, TryStreamExt};

use super::InstanceStore;
use crate::error::{Error, Result, SizeUnit};
use crate::format::columns::{Entity, INPUT, INPUT_BLOB_NAME, OUTPUT};
use crate::format::entity::row_partition_key;
use crate::format::keys::unescape_key;
use crate::format::large::{
    blob_url, exceeds_column_limit, gunzip, gzip, instance_blob_name, is_instance_blob,
    parse_reference, start_message_input, BlobReference, COLUMN_LIMIT_BYTES,
};
use crate::format::limits::{at_most, utf16_bytes};
use crate::table::BlobContainer;

/// Blobs read at once for the rows of one page.
pub const LARGE_PAYLOAD_CONCURRENCY: usize = 8;

/// The payload columns, the name the provider gives each in a blob name,
/// and the column that may name its blob instead.
const PAYLOADS: [(&str, &str, Option<&str>); 2] = [
    (INPUT, "Input", Some(INPUT_BLOB_NAME)),
    (OUTPUT, "Output", None),
];

impl InstanceStore {
    /// Replaces each payload column of `row` that refers to a blob of the
    /// task hub's container with the payload the blob holds.
    pub(crate) async fn fetch_large_payloads(&self, row: &mut Entity) -> Result<()> {
        let Some(blobs) = &self.blobs else {
            return Ok(());
        };
        for (column, _, name_column) in PAYLOADS {
            let Some(reference) = reference_of(row, column, name_column, blobs) else {
                continue;
            };
            let instance_id = row_partition_key(row).map(unescape_key).unwrap_or_default();
            let payload = self
                .read_blob(blobs, &reference, &instance_id, column)
                .await?;
            row.insert(column.to_owned(), serde_json::Value::String(payload));
        }
        Ok(())
    }

    /// [`InstanceStore::fetch_large_payloads`] of many rows, a few blobs at
    /// once, the rows in their order. Rows without a reference cost nothing.
    pub(crate) async fn fetch_large_payloads_of<T: Send>(
        &self,
        rows: Vec<(Entity, T)>,
    ) -> Result<Vec<(Entity, T)>> {
        let Some(blobs) = &self.blobs else {
            return Ok(rows);
        };
        let refers = |row: &Entity| {
            PAYLOADS
                .iter()
                .any(|(column, _, name)| reference_of(row, column, *name, blobs).is_some())
        };
        if !rows.iter().any(|(row, _)| refers(row)) {
            return Ok(rows);
        }
        futures::stream::iter(rows)
            .map(|(mut row, extra)| async move {
                self.fetch_large_payloads(&mut row).await?;
                Ok::<_, Error>((row, extra))
            })
            .buffered(LARGE_PAYLOAD_CONCURRENCY)
            .try_collect()
            .await
    }

    async fn read_blob(
        &self,
        blobs: &BlobContainer,
        reference: &BlobReference,
        instance_id: &str,
        column: &'static str,
    ) -> Result<String> {
        let fail = |reason: String| Error::LargePayload {
            instance_id: instance_id.to_owned(),
            column,
            blob: reference.name.clone(),
            reason,
        };
        let bytes = blobs
            .get(&reference.name)
            .await?
            .ok_or_else(|| fail("does not exist".into()))?;
        let text = gunzip(&bytes, self.options.large_payload_limit)
            .map_err(|problem| fail(format!("cannot be read: {problem}")))?;
        if reference.start_message {
            start_message_input(&text).map_err(|problem| fail(format!("cannot be read: {problem}")))
        } else {
            Ok(text)
        }
    }

    /// Moves each payload column of `entity` (a row or merge of the
    /// instance with partition key `pk`) that is over 60 KiB to a gzip blob,
    /// leaving the blob's URL in the column, as the provider does. A payload
    /// over the store's large payload limit, or any over 60 KiB when no blob
    /// endpoint is configured, is refused before anything is written.
    pub(crate) async fn offload_large_payloads(&self, pk: &str, entity: &mut Entity) -> Result<()> {
        let mut large = Vec::new();
        for (column, property, _) in PAYLOADS {
            let Some(text) = entity.get(column).and_then(|v| v.as_str()) else {
                continue;
            };
            if !exceeds_column_limit(text) {
                continue;
            }
            let field = if column == INPUT { "input" } else { "output" };
            let limit = match &self.blobs {
                Some(_) => self.options.large_payload_limit,
                // Without blobs, what one column keeps.
                None => COLUMN_LIMIT_BYTES,
            };
            // Without blobs, a payload may be as large as a column keeps.
            at_most(field, utf16_bytes(text), limit, SizeUnit::Utf16Bytes)?;
            large.push((column, property, text.to_owned()));
        }
        let Some(blobs) = &self.blobs else {
            return Ok(());
        };
        for (column, property, text) in large {
            let name = instance_blob_name(pk, property, fastrand::u32(..));
            blobs.put(&name, gzip(&text)).await?;
            entity.insert(
                column.to_owned(),
                serde_json::Value::String(blob_url(blobs.url(), &name)),
            );
        }
        Ok(())
    }

    /// The large-message blobs of one instance: its property blobs (under
    /// its escaped id) and its message blobs (under its raw id), and no
    /// other instance's. None on a hub without the container (and without
    /// a request when no blob endpoint is known).
    pub(crate) async fn large_payload_blobs(&self, pk: &str) -> Result<Vec<String>> {
        let Some(blobs) = &self.blobs else {
            return Ok(Vec::new());
        };
        // The provider names message blobs by the raw id, in which Blob
        // Storage reads `\` as `/`.
        let folder = unescape_key(pk).replace('\\', "/");
        let mut names = blobs.list(&format!("{pk}/")).await?;
        if folder != pk {
            names.extend(blobs.list(&format!("{folder}/")).await?);
        }
        names.retain(|name| is_instance_blob(name, pk, &folder));
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// Whether the task hub has a large-message container (one request; none
    /// when no blob endpoint is known).
    pub(crate) async fn large_messages_exist(&self) -> Result<bool> {
        match &self.blobs {
            Some(blobs) => blobs.exists().await,
            None => Ok(false),
        }
    }

    /// Deletes blobs of the large-message container (gone already is fine).
    pub(crate) async fn delete_blobs(&self, names: &[String]) -> Result<()> {
        if let Some(blobs) = &self.blobs {
            for name in names {
                blobs.delete(name).await?;
            }
        }
        Ok(())
    }
}

/// The blob a payload column refers to: its URL, or, when the column is
/// empty, the relative name in `name_column`.
fn reference_of(
    row: &Entity,
    column: &str,
    name_column: Option<&str>,
    blobs: &BlobContainer,
) -> Option<BlobReference> {
    let value = row.get(column).and_then(|v| v.as_str()).unwrap_or_default();
    if !value.is_empty() {
        return parse_reference(value, blobs.url());
    }
    let name = row.get(name_column?)?.as_str()?;
    (!name.is_empty()).then(|| BlobReference::named(name))
}
