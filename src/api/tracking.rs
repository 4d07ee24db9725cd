//! `/t/o/{token}` (open pixel) and `/t/c/{token}` (click redirect), with the signed tokens
//! of `crate::tracking`. The pixel always answers with the GIF, whatever the token (a mail
//! client shows nothing either way, and a forger learns nothing); only a verified token
//! changes a row. The redirect goes only to the URL signed into the token at send time:
//! anything else is 400, never a redirect (no open redirect).

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use chrono::{SecondsFormat, Utc};
use tracing::warn;

use super::ApiState;
use super::error::ErrorBody;
use crate::metrics::{self, TrackingEvent};
use crate::queue::tracking as track;
use crate::tracking::{verify_click, verify_open};

/// A transparent 1×1 GIF89a.
pub const PIXEL: [u8; 43] = [
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
];

const NO_CACHE: &str = "no-store, no-cache, must-revalidate, private, max-age=0";

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Open pixel: counts an open of the email in a valid token; always the GIF, never cached.
#[utoipa::path(get, path = "/t/o/{token}", tag = "tracking",
    params(("token" = String, Path, description = "Signed open token (base64url); any value gets the pixel, so a mail reader never shows a broken image")),
    responses((status = 200, description = "A 1x1 transparent GIF, whatever the token", content_type = "image/gif"),
        (status = 429, description = "Too many requests from this client address (http.public_rate_per_minute); see Retry-After", body = ErrorBody)))]
pub async fn open_pixel(State(state): State<ApiState>, Path(token): Path<String>) -> Response {
    let key = state.settings().tracking.secret.as_bytes();
    // Tokens are looked at only when a key is configured: an empty key signs nothing.
    if !key.is_empty()
        && let Ok(email_id) = verify_open(&token, key)
    {
        match track::record_open(state.pool(), email_id, &now()).await {
            Ok(true) => metrics::tracking_event(TrackingEvent::Open),
            Ok(false) => {}
            Err(e) => warn!(error = %e, "could not record an open"),
        }
    }
    (
        [
            (header::CONTENT_TYPE, "image/gif"),
            (header::CACHE_CONTROL, NO_CACHE),
            (header::PRAGMA, "no-cache"),
            (header::EXPIRES, "0"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        PIXEL,
    )
        .into_response()
}

/// Click redirect: 302 to the URL signed into the token, counting the click.
#[utoipa::path(get, path = "/t/c/{token}", tag = "tracking",
    params(("token" = String, Path, description = "Signed click token (base64url)", pattern = "^[A-Za-z0-9_-]+$", min_length = 46)),
    responses(
        (status = 302, description = "Redirect to the link's original URL"),
        (status = 400, description = "Not a valid tracking link (never redirected)", content_type = "text/html"),
        (status = 429, description = "Too many requests from this client address (http.public_rate_per_minute); see Retry-After", body = ErrorBody)))]
pub async fn click(State(state): State<ApiState>, Path(token): Path<String>) -> Response {
    let key = state.settings().tracking.secret.as_bytes();
    let verified = if key.is_empty() {
        None
    } else {
        verify_click(&token, key).ok()
    };
    let Some((email_id, url)) = verified else {
        return (
            StatusCode::BAD_REQUEST,
            [(header::CACHE_CONTROL, NO_CACHE)],
            Html(
                "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Invalid link</title></head>\
                 <body><h1>This link is not valid</h1><p>It may have been copied incompletely. \
                 Open it again from the email.</p></body></html>",
            ),
        )
            .into_response();
    };
    match track::record_click(state.pool(), email_id, &now()).await {
        Ok(true) => metrics::tracking_event(TrackingEvent::Click),
        Ok(false) => {}
        // The person still gets where they were going.
        Err(e) => warn!(error = %e, "could not record a click"),
    }
    let Ok(location) = header::HeaderValue::from_str(&url) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    (
        StatusCode::FOUND,
        [
            (header::LOCATION, location),
            (
                header::CACHE_CONTROL,
                header::HeaderValue::from_static(NO_CACHE),
            ),
            (
                header::REFERRER_POLICY,
                header::HeaderValue::from_static("no-referrer"),
            ),
        ],
    )
        .into_response()
}
