//! Entity-group transactions: many deletes of one partition in one request.

use azure_data_tables::prelude::IfMatchCondition;

use super::{odata_key, TableClient};
use crate::error::{Error, Result};
use crate::format::limits::check_batch;
use crate::model::ETag;

impl TableClient {
    /// Deletes rows of one partition, whatever their version, in one
    /// entity-group transaction: all of them or none. A row already gone
    /// fails the whole batch with a 404. (Tests only: a purge deletes each
    /// row at the version it read, [`TableClient::delete_batch_if_match`].)
    #[cfg(test)]
    pub(crate) async fn delete_batch(&self, pk: &str, row_keys: &[String]) -> Result<()> {
        let operations = row_keys
            .iter()
            .map(|row_key| (row_key.as_str(), IfMatchCondition::Any));
        self.send_delete_batch(pk, operations.collect()).await
    }

    /// Deletes rows of one partition, each only at the version given (its
    /// own `If-Match` in the batch), in one entity-group transaction: all of
    /// them or none. A row already gone fails the whole batch with a 404; a
    /// row at another version fails it with a 412 on Table Storage (the
    /// Azurite emulator does not check `If-Match` inside batches).
    pub(crate) async fn delete_batch_if_match(
        &self,
        pk: &str,
        rows: &[(String, ETag)],
    ) -> Result<()> {
        let operations = rows.iter().map(|(row_key, etag)| {
            let condition = IfMatchCondition::Etag(etag.as_str().into());
            (row_key.as_str(), condition)
        });
        self.send_delete_batch(pk, operations.collect()).await
    }

    async fn send_delete_batch(
        &self,
        pk: &str,
        operations: Vec<(&str, IfMatchCondition)>,
    ) -> Result<()> {
        check_batch(pk, operations.iter().map(|(row_key, _)| *row_key))?;
        let response = self
            .send(|| async {
                let mut transaction = self.table.partition_key_client(odata_key(pk)).transaction();
                for (row_key, condition) in &operations {
                    transaction =
                        transaction.delete(odata_key(row_key), Some(condition.clone()))?;
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
                    operations.len()
                ),
            });
        }
        if response.operation_responses.len() != operations.len() {
            return Err(Error::transport(format!(
                "the batch answered {} operation results for {} operations",
                response.operation_responses.len(),
                operations.len()
            )));
        }
        Ok(())
    }
}

/// The request a batch sends, seen by a transport that records it (the
/// emulator does not check `If-Match` inside batches, so only the request
/// can show that each delete carries its own).
#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use azure_core::headers::Headers;
    use azure_core::{
        BytesStream, HttpClient, Request, Response, RetryOptions, StatusCode, TransportOptions,
    };
    use azure_data_tables::clients::TableServiceClientBuilder;
    use azure_storage::{CloudLocation, StorageCredentials};

    use super::*;

    /// Records each request's body and answers each with a canned batch
    /// response: every operation with `status`.
    #[derive(Debug)]
    struct Recorder {
        bodies: Mutex<Vec<String>>,
        status: u16,
    }

    impl HttpClient for Recorder {
        fn execute_request<'a, 'b, 'c>(
            &'a self,
            request: &'b Request,
        ) -> Pin<Box<dyn Future<Output = azure_core::Result<Response>> + Send + 'c>>
        where
            'a: 'c,
            'b: 'c,
            Self: 'c,
        {
            let body = match request.body() {
                azure_core::Body::Bytes(bytes) => String::from_utf8_lossy(bytes).into_owned(),
                #[allow(unreachable_patterns)]
                _ => String::from("<stream>"),
            };
            let operations = body.matches("DELETE ").count();
            self.bodies.lock().unwrap().push(body);
            let status = self.status;
            Box::pin(async move {
                // A failed changeset answers once, for the culprit.
                let answers = if status < 300 { operations } else { 1 };
                let mut text = String::from(
                    "--batchresponse_1\r\nContent-Type: multipart/mixed; boundary=changesetresponse_1\r\n\r\n",
                );
                for _ in 0..answers {
                    text.push_str(&format!(
                        "--changesetresponse_1\r\nContent-Type: application/http\r\n\
                         Content-Transfer-Encoding: binary\r\n\r\nHTTP/1.1 {status} X\r\n\r\n"
                    ));
                }
                text.push_str("--changesetresponse_1--\r\n--batchresponse_1--\r\n");
                let mut headers = Headers::new();
                headers.insert("content-type", "multipart/mixed; boundary=batchresponse_1");
                headers.insert("x-ms-request-id", "00000000-0000-0000-0000-000000000001");
                headers.insert("x-ms-version", "2019-02-02");
                headers.insert("date", "Mon, 01 Jan 2024 00:00:00 GMT");
                headers.insert("server", "recorder");
                Ok(Response::new(
                    StatusCode::Accepted,
                    headers,
                    Box::pin(BytesStream::new(text)),
                ))
            })
        }
    }

    fn client(status: u16) -> (TableClient, Arc<Recorder>) {
        let recorder = Arc::new(Recorder {
            bodies: Mutex::new(Vec::new()),
            status,
        });
        let location = CloudLocation::Custom {
            account: "devstoreaccount1".into(),
            uri: "http://127.0.0.1:9/devstoreaccount1".into(),
        };
        let credentials = StorageCredentials::access_key(
            "devstoreaccount1",
            azure_core::auth::Secret::new("a2V5"),
        );
        let transport: Arc<dyn HttpClient> = recorder.clone();
        let service = TableServiceClientBuilder::with_location(location, credentials.clone())
            .transport(TransportOptions::new(transport.clone()))
            .retry(RetryOptions::none())
            .build();
        let client = TableClient {
            table: service.table_client("HubHistory"),
            service,
            endpoint: "http://127.0.0.1:9/devstoreaccount1".into(),
            retry_budget: Duration::ZERO,
            account: "devstoreaccount1".into(),
            credentials,
            http: transport,
        };
        (client, recorder)
    }

    /// The If-Match header of each operation of a batch body, in order.
    fn if_matches(body: &str) -> Vec<(String, String)> {
        let mut found = Vec::new();
        let mut url = None;
        for line in body.lines() {
            if let Some(rest) = line.strip_prefix("DELETE ") {
                url = Some(rest.trim_end_matches(" HTTP/1.1").to_owned());
            } else if let Some((name, value)) = line.split_once(": ") {
                if name.eq_ignore_ascii_case("if-match") {
                    let url = url.take().expect("a header of an operation");
                    found.push((url, value.to_owned()));
                }
            }
        }
        found
    }

    #[tokio::test]
    async fn each_delete_carries_the_etag_of_its_row() {
        let (client, recorder) = client(204);
        let rows = vec![
            (
                "0000".to_owned(),
                ETag::new("W/\"datetime'2024-01-01T00%3A00%3A00.1Z'\""),
            ),
            (
                "it's".to_owned(),
                ETag::new("W/\"datetime'2024-01-01T00%3A00%3A00.2Z'\""),
            ),
        ];
        client.delete_batch_if_match("p'q", &rows).await.unwrap();
        let bodies = recorder.bodies.lock().unwrap();
        assert_eq!(bodies.len(), 1, "one request");
        let found = if_matches(&bodies[0]);
        assert_eq!(found.len(), 2, "{}", bodies[0]);
        assert!(
            found[0]
                .0
                .ends_with("HubHistory(PartitionKey='p''q',RowKey='0000')"),
            "{found:?}"
        );
        assert_eq!(found[0].1, "W/\"datetime'2024-01-01T00%3A00%3A00.1Z'\"");
        assert!(
            found[1]
                .0
                .ends_with("HubHistory(PartitionKey='p''q',RowKey='it''s')"),
            "{found:?}"
        );
        assert_eq!(found[1].1, "W/\"datetime'2024-01-01T00%3A00%3A00.2Z'\"");
    }

    #[tokio::test]
    async fn an_unconditional_batch_says_any_version() {
        let (client, recorder) = client(204);
        client
            .delete_batch("p", &["a".into(), "b".into()])
            .await
            .unwrap();
        let bodies = recorder.bodies.lock().unwrap();
        let found = if_matches(&bodies[0]);
        assert_eq!(
            found.iter().map(|(_, v)| v.as_str()).collect::<Vec<_>>(),
            ["*", "*"]
        );
    }

    #[tokio::test]
    async fn a_version_mismatch_rolls_the_batch_back_as_a_412() {
        let (client, _) = client(412);
        let rows = vec![("a".to_owned(), ETag::new("W/\"x\""))];
        let err = client.delete_batch_if_match("p", &rows).await.unwrap_err();
        assert!(matches!(err, Error::Storage { status: 412, .. }), "{err}");
    }

    #[tokio::test]
    async fn the_batch_rules_are_checked_before_sending() {
        let (client, recorder) = client(204);
        let twice = vec![
            ("a".to_owned(), ETag::new("1")),
            ("a".to_owned(), ETag::new("2")),
        ];
        let err = client.delete_batch_if_match("p", &twice).await.unwrap_err();
        assert!(err.to_string().contains("appears twice"), "{err}");
        let many: Vec<(String, ETag)> = (0..101).map(|i| (i.to_string(), ETag::new("1"))).collect();
        let err = client.delete_batch_if_match("p", &many).await.unwrap_err();
        assert!(err.to_string().contains("101 operations"), "{err}");
        let err = client.delete_batch_if_match("p", &[]).await.unwrap_err();
        assert!(err.to_string().contains("no operations"), "{err}");
        assert!(recorder.bodies.lock().unwrap().is_empty(), "nothing sent");
    }
}
