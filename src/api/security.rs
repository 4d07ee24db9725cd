//! Defences of an internet-facing listener that apply across routes: response headers that
//! keep browsers from reinterpreting what we serve.

use axum::http::{HeaderValue, header};
use axum::response::Response;

/// Every response: `X-Content-Type-Options: nosniff` (a browser must not run a JSON body or
/// a pixel as HTML or script) and `Referrer-Policy: no-referrer` unless the handler set one
/// (tracking and unsubscribe URLs carry tokens that must not leak to the next site).
pub async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers
        .entry(header::REFERRER_POLICY)
        .or_insert(HeaderValue::from_static("no-referrer"));
    response
}
