//! The status page, embedded in the binary: no file or CDN is needed. Plain
//! HTML, CSS and JavaScript modules, served as they are (no build step).

use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use super::HttpApi;

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// Each file of the page: its path, content type and text.
const ASSETS: [(&str, &str, &str); 6] = [
    ("/", HTML, include_str!("page/index.html")),
    ("/app.js", JS, include_str!("page/app.js")),
    ("/api.js", JS, include_str!("page/api.js")),
    ("/format.js", JS, include_str!("page/format.js")),
    ("/sse.js", JS, include_str!("page/sse.js")),
    ("/app.css", CSS, include_str!("page/app.css")),
];

/// Scripts, styles and connections to this server only.
const POLICY: &str = "default-src 'self'; img-src 'self' data:; object-src 'none'; \
                      base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

pub(super) fn routes() -> Router<HttpApi> {
    ASSETS
        .iter()
        .fold(Router::new(), |router, &(path, content_type, body)| {
            router.route(path, get(move || async move { asset(content_type, body) }))
        })
}

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (CONTENT_TYPE, content_type),
            (CONTENT_SECURITY_POLICY, POLICY),
            (CACHE_CONTROL, "no-cache"),
            (X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
}
