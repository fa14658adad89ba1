//! Entity-group transactions: many deletes of one partition in one request.

use super::{odata_key, TableClient};
use crate::error::{Error, Result};
use crate::format::limits::check_batch;

impl TableClient {
    /// Deletes rows of one partition, whatever their version, in one
    /// entity-group transaction: all of them or none. A row already gone
    /// fails the whole batch with a 404.
    pub(crate) async fn delete_batch(&self, pk: &str, row_keys: &[String]) -> Result<()> {
        check_batch(pk, row_keys.iter().map(String::as_str))?;
        let response = self
            .send(|| async {
                let mut transaction = self.table.partition_key_client(odata_key(pk)).transaction();
                for row_key in row_keys {
                    transaction = transaction.delete(odata_key(row_key), None)?;
                }
                transaction.await
            })
            .await
            .result?;
        // The crate answers Ok for a failed batch: the failure is in the
        // operation responses (a failed changeset has one, for the culprit).
        if let Some(failed) = response
            .operation_responses
            .iter()
            .find(|r| !r.status_code.is_success())
        {
            return Err(Error::Storage {
                status: u16::from(failed.status_code),
                code: None,
                message: format!(
                    "the batch of {} deletes on one partition was rolled back",
                    row_keys.len()
                ),
            });
        }
        if response.operation_responses.len() != row_keys.len() {
            return Err(Error::transport(format!(
                "the batch answered {} operation results for {} operations",
                response.operation_responses.len(),
                row_keys.len()
            )));
        }
        Ok(())
    }
}
