//! The task hub's large-message container: the blobs that hold payloads too
//! large for a column (see `format::large`). The only code that names the
//! blob crate; requests go through the table client's retry loop, with the
//! same credentials and connection pool.

use std::sync::Arc;

use azure_core::{ClientOptions, RetryOptions, TransportOptions};
use azure_storage::CloudLocation;
use azure_storage_blobs::prelude::{BlobServiceClient, ClientBuilder, ContainerClient};
use futures::StreamExt;

use super::{DataService, Refusals, TableClient};
use crate::error::{Error, Result};

/// A blob container of the account, reached like its tables.
#[derive(Clone)]
pub(crate) struct BlobContainer {
    container: ContainerClient,
    /// `{blob endpoint}/{container}`: the prefix of its blobs' URLs.
    url: Arc<str>,
    /// The retry loop and error mapping of the account's requests.
    client: TableClient,
}

impl std::fmt::Debug for BlobContainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobContainer")
            .field("url", &super::errors::redact_urls(&self.url))
            .finish()
    }
}

impl TableClient {
    /// The container `name` of the blob service at `endpoint`, with this
    /// client's credentials, connection pool and retry budget.
    pub(crate) fn blob_container(&self, endpoint: &str, name: &str) -> BlobContainer {
        let endpoint = endpoint.trim_end_matches('/');
        let location = CloudLocation::Custom {
            account: self.account.to_string(),
            uri: endpoint.to_owned(),
        };
        // A refused request says which data role the identity lacks.
        let client_options = ClientOptions::default().per_retry_policies(vec![
            Arc::new(Refusals(DataService::Blob)) as Arc<_>,
            Arc::new(super::transport::Transport(self.http.clone())) as Arc<_>,
        ]);
        let service: BlobServiceClient =
            ClientBuilder::with_location(location, self.credentials.clone())
                .client_options(client_options)
                .transport(TransportOptions::new(self.http.clone()))
                .retry(RetryOptions::none())
                .blob_service_client();
        BlobContainer {
            container: service.container_client(name),
            url: format!("{endpoint}/{name}").into(),
            client: self.clone(),
        }
    }
}

impl BlobContainer {
    /// `{blob endpoint}/{container}`.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// A blob's content; `None` when it or the container does not exist.
    pub(crate) async fn get(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let blob = self.container.blob_client(name);
        match self.client.send(|| blob.get_content()).await.result {
            Ok(bytes) => Ok(Some(bytes)),
            Err(Error::Storage { status: 404, .. }) => Ok(None),
            Err(other) => Err(other),
        }
    }

    /// Writes a blob whole (replacing one of that name), creating the
    /// container on first use: one request, two more the first time.
    pub(crate) async fn put(&self, name: &str, bytes: Vec<u8>) -> Result<()> {
        let blob = self.container.blob_client(name);
        // No Content-Encoding: the provider stores the gzip bytes as they are.
        let put = || async {
            self.client
                .send(|| blob.put_block_blob(bytes.clone()).into_future())
                .await
                .result
                .map(drop)
        };
        match put().await {
            Err(Error::Storage {
                status: 404,
                code: Some(code),
                ..
            }) if code == "ContainerNotFound" => {
                self.create().await?;
                put().await
            }
            other => other,
        }
    }

    /// Whether the container exists.
    pub(crate) async fn exists(&self) -> Result<bool> {
        match self
            .client
            .send(|| self.container.get_properties().into_future())
            .await
            .result
        {
            Ok(_) => Ok(true),
            Err(Error::Storage { status: 404, .. }) => Ok(false),
            Err(other) => Err(other),
        }
    }

    async fn create(&self) -> Result<()> {
        match self
            .client
            .send(|| self.container.create().into_future())
            .await
            .result
        {
            Ok(_) => Ok(()),
            Err(Error::Storage {
                status: 409,
                code: Some(code),
                ..
            }) if code == "ContainerAlreadyExists" => Ok(()),
            Err(other) => Err(other),
        }
    }

    /// The names of the blobs that start with `prefix`, every page of them;
    /// none when the container does not exist.
    pub(crate) async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let mut names = Vec::new();
        let mut marker: Option<azure_core::request_options::NextMarker> = None;
        loop {
            let page = self
                .client
                .send(|| async {
                    let mut request = self.container.list_blobs().prefix(prefix.to_owned());
                    if let Some(marker) = &marker {
                        request = request.marker(marker.clone());
                    }
                    match request.into_stream().next().await {
                        Some(page) => page.map(Some),
                        None => Ok(None),
                    }
                })
                .await
                .result;
            let page = match page {
                Ok(Some(page)) => page,
                Ok(None) => return Ok(names),
                Err(Error::Storage { status: 404, .. }) => return Ok(names),
                Err(other) => return Err(other),
            };
            names.extend(page.blobs.blobs().map(|blob| blob.name.clone()));
            match page.next_marker {
                Some(next) => marker = Some(next),
                None => return Ok(names),
            }
        }
    }

    /// Deletes a blob (and its snapshots); `false` when it was not there.
    pub(crate) async fn delete(&self, name: &str) -> Result<bool> {
        let blob = self.container.blob_client(name);
        match self
            .client
            .send(|| blob.delete().into_future())
            .await
            .result
        {
            Ok(_) => Ok(true),
            Err(Error::Storage { status: 404, .. }) => Ok(false),
            Err(other) => Err(other),
        }
    }
}
