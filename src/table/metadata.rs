//! The response format the table service is asked for. The client crate
//! asks `odata=fullmetadata` on every read; this policy asks
//! `odata=minimalmetadata` instead, which still carries what the store
//! reads: every value, `odata.etag` on each entity of a query (purges and
//! conditional writes use it), the ETag header of a point read, and the
//! `@odata.type` of every value whose type JSON cannot tell (DateTime,
//! Int64, Guid, Binary). What it leaves out per entity is `odata.type`,
//! `odata.id`, `odata.editLink` and the `@odata.type` of strings and
//! booleans, which nothing here reads: about a third of a listing without
//! inputs, and most of a count's bytes.
//!
//! A query whose rows are never written back and whose columns are all
//! strings (a count, a key probe) asks `odata=nometadata` instead, through a
//! [`ResponseFormat`] in its context: no ETag and no annotation at all, just
//! the values. The crate's response type requires the `odata.metadata` URL
//! that such a response leaves out, so this policy adds an empty one.

use std::sync::Arc;

use azure_core::headers::ACCEPT;
use azure_core::{Context, Method, Policy, PolicyResult, Request, Response};
use bytes::Bytes;

/// What the crate asks for on reads.
const FULL_METADATA: &str = "application/json;odata=fullmetadata";
/// What this module asks for instead.
pub(super) const MINIMAL_METADATA: &str = "application/json;odata=minimalmetadata";
/// What a query of [`ResponseFormat::NoMetadata`] asks for.
pub(super) const NO_METADATA: &str = "application/json;odata=nometadata";

/// The response format a query asks for, set in its request context.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum ResponseFormat {
    /// Values, each entity's `odata.etag` and the types JSON cannot tell.
    #[default]
    MinimalMetadata,
    /// Values only: for rows that are not written back, read as strings.
    NoMetadata,
}

/// Rewrites the Accept header of GET requests (queries, point reads) that
/// ask full metadata. Writes and batches go as the crate sends them.
#[derive(Debug, Default)]
pub(super) struct MinimalMetadata;

#[async_trait::async_trait]
impl Policy for MinimalMetadata {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        let format = ctx.get::<ResponseFormat>().copied().unwrap_or_default();
        let asked = ask(request, format);
        let response = next[0].send(ctx, request, &next[1..]).await?;
        if asked != Some(ResponseFormat::NoMetadata) || !response.status().is_success() {
            return Ok(response);
        }
        let (status, headers, body) = response.deconstruct();
        let body = with_metadata_field(body.collect().await?);
        Ok(Response::new(
            status,
            headers,
            Box::pin(futures::stream::once(futures::future::ready(Ok(body)))),
        ))
    }
}

/// Rewrites the Accept header of a GET that asks full metadata; answers the
/// format asked, `None` for a request left as sent.
fn ask(request: &mut Request, format: ResponseFormat) -> Option<ResponseFormat> {
    if *request.method() != Method::Get
        || request.headers().get_optional_str(&ACCEPT) != Some(FULL_METADATA)
    {
        return None;
    }
    let accept = match format {
        ResponseFormat::MinimalMetadata => MINIMAL_METADATA,
        ResponseFormat::NoMetadata => NO_METADATA,
    };
    request.insert_header(ACCEPT, accept);
    Some(format)
}

/// A `nometadata` body with the `odata.metadata` member the crate's
/// response type requires (empty: nothing reads it).
fn with_metadata_field(body: Bytes) -> Bytes {
    let text = body.as_ref();
    let Some(open) = text.iter().position(|b| !b.is_ascii_whitespace()) else {
        return body;
    };
    if text[open] != b'{' || text.windows(16).any(|w| w == b"\"odata.metadata\"") {
        return body;
    }
    let rest = &text[open + 1..];
    let empty = rest.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'}');
    let mut out = Vec::with_capacity(text.len() + 24);
    out.extend_from_slice(&text[..=open]);
    out.extend_from_slice(if empty {
        b"\"odata.metadata\":\"\""
    } else {
        b"\"odata.metadata\":\"\","
    });
    out.extend_from_slice(rest);
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: Method, accept: &str) -> Request {
        let mut request = Request::new(
            "http://127.0.0.1/devstoreaccount1/t()".parse().unwrap(),
            method,
        );
        request.insert_header(ACCEPT, accept.to_owned());
        request
    }

    fn accept(request: &Request) -> Option<&str> {
        request.headers().get_optional_str(&ACCEPT)
    }

    #[test]
    fn reads_ask_minimal_metadata_or_none() {
        let mut get = request(Method::Get, FULL_METADATA);
        assert_eq!(
            ask(&mut get, ResponseFormat::MinimalMetadata),
            Some(ResponseFormat::MinimalMetadata)
        );
        assert_eq!(accept(&get), Some(MINIMAL_METADATA));
        let mut count = request(Method::Get, FULL_METADATA);
        assert_eq!(
            ask(&mut count, ResponseFormat::NoMetadata),
            Some(ResponseFormat::NoMetadata)
        );
        assert_eq!(accept(&count), Some(NO_METADATA));
    }

    #[test]
    fn other_requests_go_as_sent() {
        let mut post = request(Method::Post, FULL_METADATA);
        assert_eq!(ask(&mut post, ResponseFormat::NoMetadata), None);
        assert_eq!(accept(&post), Some(FULL_METADATA));
        let mut xml = request(Method::Get, "application/xml");
        assert_eq!(ask(&mut xml, ResponseFormat::MinimalMetadata), None);
        assert_eq!(accept(&xml), Some("application/xml"));
    }

    #[test]
    fn a_body_without_metadata_gets_the_member_the_crate_requires() {
        let fixed = |text: &str| {
            let body = with_metadata_field(Bytes::from(text.to_owned()));
            serde_json::from_slice::<serde_json::Value>(&body).unwrap()
        };
        assert_eq!(
            fixed(r#"{"value":[{"a":"b"}]}"#),
            serde_json::json!({"odata.metadata": "", "value": [{"a": "b"}]})
        );
        assert_eq!(fixed(" { } "), serde_json::json!({"odata.metadata": ""}));
        let already = r#"{"odata.metadata":"x","value":[]}"#;
        assert_eq!(
            with_metadata_field(Bytes::from(already)),
            Bytes::from(already)
        );
    }
}
