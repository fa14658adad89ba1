//! Sending requests without writing secrets to the log.
//!
//! The Azure crates' own transport logs every request at debug level:
//! `azure_core` 0.21 prints the whole request, with its URL (a SAS token's
//! signature is in the query) and its headers, where its redaction is
//! inverted (it hides every header but `Authorization`, so a bearer token
//! or a Shared Key signature is printed); its `reqwest` client prints the
//! URL again. A user who turns on debug logs would find them there. Here
//! the last policy of every pipeline sends the request itself, through a
//! client that logs nothing of it, so the crates' transport never sees it.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;

use azure_core::error::{ErrorKind, ResultExt};
use azure_core::headers::{HeaderName, HeaderValue, Headers};
use std::pin::Pin;

use azure_core::{Body, Context, HttpClient, Policy, PolicyResult, Request};
use bytes::Bytes;
use futures::{Stream, TryStreamExt};

/// A response body, as `azure_core::Response::new` takes it.
type BodyStream = Pin<Box<dyn Stream<Item = azure_core::Result<Bytes>> + Send + Sync>>;

/// The connection pool, as the Azure crates' `HttpClient`: it sends what
/// it is given and logs none of it.
#[derive(Debug, Clone)]
pub(crate) struct Http(pub reqwest::Client);

#[async_trait::async_trait]
impl HttpClient for Http {
    async fn execute_request(&self, request: &Request) -> azure_core::Result<azure_core::Response> {
        let method = reqwest::Method::from_str(request.method().as_ref())
            .map_kind(ErrorKind::DataConversion)?;
        let mut builder = self.0.request(method, request.url().clone());
        for (name, value) in request.headers().iter() {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let built = match request.body().clone() {
            Body::Bytes(bytes) => builder.body(bytes).build(),
            Body::SeekableStream(stream) => {
                builder.body(reqwest::Body::wrap_stream(stream)).build()
            }
        }
        .context(ErrorKind::Other, "cannot build the HTTP request")?;
        let response = self
            .0
            .execute(built)
            .await
            .context(ErrorKind::Io, "the HTTP request failed")?;
        let status =
            azure_core::StatusCode::try_from(response.status().as_u16()).map_err(|_| {
                azure_core::Error::with_message(ErrorKind::DataConversion, || {
                    format!("invalid status code {}", response.status())
                })
            })?;
        // Headers that are not text are of no use to the Azure crates.
        let headers: HashMap<HeaderName, HeaderValue> = response
            .headers()
            .iter()
            .filter_map(|(name, value)| {
                let value = value.to_str().ok()?;
                Some((
                    HeaderName::from(name.as_str().to_owned()),
                    HeaderValue::from(value.to_owned()),
                ))
            })
            .collect();
        let body: BodyStream = Box::pin(response.bytes_stream().map_err(|error| {
            azure_core::Error::full(ErrorKind::Io, error, "cannot read the HTTP response")
        }));
        Ok(azure_core::Response::new(
            status,
            Headers::from(headers),
            body,
        ))
    }
}

/// The last policy of a pipeline: sends the request through `client` and
/// never passes it on to the Azure crates' transport policy, which would
/// log it with its credentials.
#[derive(Debug)]
pub(crate) struct Transport(pub Arc<dyn HttpClient>);

#[async_trait::async_trait]
impl Policy for Transport {
    async fn send(
        &self,
        _ctx: &Context,
        request: &mut Request,
        _next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        self.0.execute_request(request).await
    }
}
