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
//! (`odata=nometadata` would drop `odata.etag` too, and the crate's response
//! types require the `odata.metadata` URL that it leaves out.)

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use azure_core::headers::ACCEPT;
use azure_core::{Context, Method, Policy, PolicyResult, Request};

/// What the crate asks for on reads.
const FULL_METADATA: &str = "application/json;odata=fullmetadata";
/// What this module asks for instead.
pub(super) const MINIMAL_METADATA: &str = "application/json;odata=minimalmetadata";

/// Rewrites the Accept header of GET requests (queries, point reads) that
/// ask full metadata. Writes and batches go as the crate sends them.
#[derive(Debug, Default)]
pub(super) struct MinimalMetadata;

impl Policy for MinimalMetadata {
    // `async_trait`'s form, written out (the crate is not a dependency here).
    fn send<'a, 'b, 'c, 'd, 'f>(
        &'a self,
        ctx: &'b Context,
        request: &'c mut Request,
        next: &'d [Arc<dyn Policy>],
    ) -> Pin<Box<dyn Future<Output = PolicyResult> + Send + 'f>>
    where
        'a: 'f,
        'b: 'f,
        'c: 'f,
        'd: 'f,
        Self: 'f,
    {
        Box::pin(async move {
            ask_minimal_metadata(request);
            next[0].send(ctx, request, &next[1..]).await
        })
    }
}

fn ask_minimal_metadata(request: &mut Request) {
    if *request.method() == Method::Get
        && request.headers().get_optional_str(&ACCEPT) == Some(FULL_METADATA)
    {
        request.insert_header(ACCEPT, MINIMAL_METADATA);
    }
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
    fn reads_ask_minimal_metadata() {
        let mut get = request(Method::Get, FULL_METADATA);
        ask_minimal_metadata(&mut get);
        assert_eq!(accept(&get), Some(MINIMAL_METADATA));
    }

    #[test]
    fn other_requests_go_as_sent() {
        let mut post = request(Method::Post, FULL_METADATA);
        ask_minimal_metadata(&mut post);
        assert_eq!(accept(&post), Some(FULL_METADATA));
        let mut xml = request(Method::Get, "application/xml");
        ask_minimal_metadata(&mut xml);
        assert_eq!(accept(&xml), Some("application/xml"));
    }
}
