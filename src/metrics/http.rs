//! HTTP request metrics: a middleware for the axum router that labels each request with its
//! matched route template (`/v1/emails/{id}`, never the concrete path), so the number of
//! series stays bounded however many ids are requested.

use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use metrics::{counter, histogram};
use tracing::{Instrument, info_span};

use super::{HTTP_DURATION, HTTP_REQUESTS};

/// The `route` label of requests that matched no route (404s from the fallback).
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Records [`HTTP_REQUESTS`] and [`HTTP_DURATION`] for every request, and runs the request
/// in an `http{route, method}` span so its log lines say which route they belong to. Add it
/// with `Router::layer(axum::middleware::from_fn(track_http))` so the matched path is known.
pub async fn track_http(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| UNMATCHED_ROUTE.to_owned(), |p| p.as_str().to_owned());
    let method = method_label(req.method());
    let span = info_span!("http", route = %route, method);
    let response = next.run(req).instrument(span).await;
    record(route, method, response.status(), started.elapsed());
    response
}

pub(super) fn record(route: String, method: &'static str, status: StatusCode, elapsed: Duration) {
    counter!(HTTP_REQUESTS.name, "route" => route.clone(), "method" => method,
        "status" => status.as_str().to_owned())
    .increment(1);
    histogram!(HTTP_DURATION.name, "route" => route, "method" => method).record(elapsed);
}

/// Standard methods by name; anything else is `other`, so clients cannot mint series.
fn method_label(method: &Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    }
}
