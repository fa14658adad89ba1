//! Payloads too large for a column, kept in the task hub's large-message
//! container as the Durable Task provider keeps them (see `format::large`):
//! read back wherever a row refers to one, written there when an input or
//! output is over 60 KiB, and deleted with their instance.

use futures::{StreamExt, TryStreamExt};

use super::InstanceStore;
use crate::error::{Error, Result, SizeUnit};
use crate::format::columns::{Entity, INPUT, OUTPUT};
use crate::format::keys::unescape_key;
use crate::format::large::{
    blob_url, exceeds_column_limit, gunzip, gzip, instance_blob_name, is_instance_blob,
    parse_reference, start_message_input, BlobReference, COLUMN_LIMIT_BYTES,
};
use crate::format::limits::{at_most, utf16_bytes};
use crate::format::row::InstanceRow;
use crate::table::BlobContainer;

/// Blobs read at once for the rows of one page.
pub const LARGE_PAYLOAD_CONCURRENCY: usize = 8;

/// The payload columns, and the name the provider gives each in a blob
/// name.
const PAYLOADS: [(&str, &str); 2] = [(INPUT, "Input"), (OUTPUT, "Output")];

impl InstanceStore {
    /// Replaces each payload column of `row` that refers to a blob of the
    /// task hub's container with the payload the blob holds.
    pub(crate) async fn fetch_large_payloads(&self, row: &mut InstanceRow) -> Result<()> {
        let Some(blobs) = &self.blobs else {
            return Ok(());
        };
        let instance_id = row
            .partition_key
            .as_deref()
            .map(unescape_key)
            .unwrap_or_default();
        let [input, output] = references_of(row, blobs);
        if let Some(reference) = input {
            let text = self
                .read_blob(blobs, &reference, &instance_id, INPUT)
                .await?;
            row.input = Some(text);
        }
        if let Some(reference) = output {
            let text = self
                .read_blob(blobs, &reference, &instance_id, OUTPUT)
                .await?;
            row.output = Some(text);
        }
        Ok(())
    }

    /// [`InstanceStore::fetch_large_payloads`] of many rows, a few blobs at
    /// once, the rows in their order. Rows without a reference cost nothing.
    pub(crate) async fn fetch_large_payloads_of<T: Send>(
        &self,
        rows: Vec<(InstanceRow, T)>,
    ) -> Result<Vec<(InstanceRow, T)>> {
        let Some(blobs) = &self.blobs else {
            return Ok(rows);
        };
        let refers = |row: &InstanceRow| references_of(row, blobs).iter().any(Option::is_some);
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
        for (column, property) in PAYLOADS {
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

/// The blobs the input and the output of `row` refer to.
fn references_of(row: &InstanceRow, blobs: &BlobContainer) -> [Option<BlobReference>; 2] {
    [
        reference_of(row.input.as_deref(), row.input_blob_name.as_deref(), blobs),
        reference_of(row.output.as_deref(), None, blobs),
    ]
}

/// The blob a payload column refers to: its URL, or, when the column is
/// empty, the relative name `blob_name` (the input's `InputBlobName`).
fn reference_of(
    value: Option<&str>,
    blob_name: Option<&str>,
    blobs: &BlobContainer,
) -> Option<BlobReference> {
    let value = value.unwrap_or_default();
    if !value.is_empty() {
        return parse_reference(value, blobs.url());
    }
    let name = blob_name?;
    (!name.is_empty()).then(|| BlobReference::named(name))
}
