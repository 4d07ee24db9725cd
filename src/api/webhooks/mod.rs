//! `POST /v1/webhooks/events`: delivery, bounce, complaint and open events from the mail
//! relay; `POST /v1/webhooks/dsn`: a bounce message itself (see [`crate::bounces`]).
//! Signed: `X-Adopt-Signature: sha256=<hex HMAC-SHA256(secret, "{ts}.{raw body}")>` with `X-Adopt-Timestamp: <unix seconds>`; a timestamp more than
//! `auth.webhook_tolerance_secs` from now is refused, and so is a signature already seen
//! (remembered in `api_webhook_signatures`, in the same transaction as the events' effects,
//! so it holds across processes and a request that failed can be sent again).
//!
//! The providers' webhooks live beside it, one module each ([`ses`] with [`sns`],
//! [`sendgrid`], [`postmark`], [`mailgun`]), sharing [`provider`] (matching, replay, refusals)
//! and, with our own events, [`effects`] (what an event does to the row and the recipient).

pub mod effects;
pub mod mailgun;
pub mod postmark;
pub mod provider;
pub mod sendgrid;
pub mod ses;
pub mod sns;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, FixedOffset, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Sha256;
use sqlx::PgConnection;
use utoipa::openapi::schema::{
    AllOfBuilder, AnyOfBuilder, ArrayBuilder, KnownFormat, ObjectBuilder, OneOfBuilder,
    SchemaFormat, SchemaType, Type,
};
use utoipa::openapi::{Ref, RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};
use uuid::Uuid;

use super::ApiState;
use super::error::{ApiError, ErrorBody, FieldError, parse_json, require_json};
use crate::preferences::BounceKind;
use crate::queue::tracking;
use effects::{Effect, Report};

pub const SIGNATURE_HEADER: &str = "x-adopt-signature";
pub const TIMESTAMP_HEADER: &str = "x-adopt-timestamp";
/// Most events in one request.
pub const MAX_EVENTS: usize = 1000;

#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Delivered,
    Bounced,
    Complained,
    Opened,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BounceType {
    Hard,
    Soft,
}

/// One event. The row is found by `email_id` or else `provider_message_id`. The body is one
/// event or an array of up to 1000.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookEvent {
    #[serde(rename = "type")]
    pub kind: EventKind,
    pub email_id: Option<Uuid>,
    pub provider_message_id: Option<String>,
    /// Required for `bounced`.
    pub bounce_type: Option<BounceType>,
    /// The remote server's words (bounces).
    pub reason: Option<String>,
    /// SMTP status, e.g. `550 5.1.1`.
    pub code: Option<String>,
    /// When it happened (RFC 3339); default: now.
    pub occurred_at: Option<DateTime<FixedOffset>>,
}

/// The documented body: one event, or an array of 1 to [`MAX_EVENTS`]. Each event names its
/// row (`email_id` or `provider_message_id`), and a bounce says its `bounce_type`, as
/// `parse_events` requires.
pub struct EventsBody;

impl PartialSchema for EventsBody {
    fn schema() -> RefOr<Schema> {
        let constraint = || ObjectBuilder::new().schema_type(SchemaType::AnyValue);
        let names_row = AnyOfBuilder::new()
            .item(
                constraint().required("email_id").property(
                    "email_id",
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid))),
                ),
            )
            .item(constraint().required("provider_message_id").property(
                "provider_message_id",
                ObjectBuilder::new().schema_type(Type::String),
            ));
        let bounce_has_type = AnyOfBuilder::new()
            .item(
                constraint().property(
                    "type",
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .enum_values(Some(["delivered", "complained", "opened"])),
                ),
            )
            .item(
                constraint()
                    .required("bounce_type")
                    .property("bounce_type", Ref::from_schema_name(BounceType::name())),
            );
        let event: RefOr<Schema> = AllOfBuilder::new()
            .item(Ref::from_schema_name(WebhookEvent::name()))
            .item(names_row)
            .item(bounce_has_type)
            .into();
        OneOfBuilder::new()
            .item(event.clone())
            .item(
                ArrayBuilder::new()
                    .items(event)
                    .min_items(Some(1))
                    .max_items(Some(MAX_EVENTS)),
            )
            .into()
    }
}

impl ToSchema for EventsBody {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((WebhookEvent::name().into(), WebhookEvent::schema()));
        schemas.push((BounceType::name().into(), BounceType::schema()));
        <WebhookEvent as ToSchema>::schemas(schemas);
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum EventOutcome {
    /// The row changed.
    Applied,
    /// The row exists but the event does not apply to its status (e.g. a bounce for a row
    /// already bounced, or an open of a row never sent).
    Ignored,
    /// No such row.
    NotFound,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EventResult {
    pub index: usize,
    pub email_id: Option<Uuid>,
    pub outcome: EventOutcome,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EventsResponse {
    pub results: Vec<EventResult>,
}

/// Relay events, signed with the shared secret.
#[utoipa::path(post, path = "/v1/webhooks/events", tag = "webhooks",
    security(("webhook_signature" = [])),
    params(
        ("X-Adopt-Timestamp" = i64, Header, description = "Unix seconds; within 5 minutes of now"),
        ("X-Adopt-Signature" = String, Header, description = "sha256=<hex HMAC-SHA256 of \"{timestamp}.{raw body}\">")),
    request_body(content = EventsBody, description = "One event, or an array of 1 to 1000 events"),
    responses(
        (status = 200, description = "Applied (all events in one transaction)", body = EventsResponse),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "Missing or wrong signature, or timestamp out of range", body = ErrorBody),
        (status = 409, description = "This exact request was already received", body = ErrorBody),
        (status = 413, description = "Body over 1 MiB", body = ErrorBody),
        (status = 415, description = "Not application/json", body = ErrorBody),
        (status = 422, description = "Invalid events; nothing applied", body = ErrorBody),
        (status = 503, description = "No webhook secret configured", body = ErrorBody)))]
pub async fn events(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<EventsResponse>, ApiError> {
    let signature = verified(&state, &headers, &body)?;
    require_json(&headers)?;
    let events = parse_events(&body)?;

    let mut tx = begin_once(&state, &signature).await?;
    let threshold = state.settings().bounce.soft_bounce_threshold;
    let mut results = Vec::with_capacity(events.len());
    for (index, event) in events.iter().enumerate() {
        let (email_id, outcome) = apply(&mut tx, event, threshold).await?;
        results.push(EventResult {
            index,
            email_id,
            outcome,
        });
    }
    tx.commit().await?;
    state.sweep_expired();
    Ok(Json(EventsResponse { results }))
}

/// The webhook is configured and the request is signed within the window; returns the
/// signature.
fn verified(state: &ApiState, headers: &HeaderMap, body: &[u8]) -> Result<Vec<u8>, ApiError> {
    let auth = &state.settings().auth;
    if auth.webhook_secret.is_empty() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "webhook_disabled",
            "no webhook secret is configured (auth.webhook_secret)",
        ));
    }
    verify(
        headers,
        body,
        auth.webhook_secret.as_bytes(),
        auth.webhook_tolerance_secs,
    )
}

/// A transaction that has remembered `signature`, or 409 when it was already received: the
/// request's effects commit together with it.
pub(crate) async fn begin_once(
    state: &ApiState,
    signature: &[u8],
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, ApiError> {
    let mut tx = state.pool().begin().await?;
    let fresh = sqlx::query(
        "INSERT INTO api_webhook_signatures (signature) VALUES ($1) ON CONFLICT DO NOTHING",
    )
    .bind(signature)
    .execute(&mut *tx)
    .await?;
    if fresh.rows_affected() == 0 {
        return Err(ApiError::conflict(
            "replayed_request",
            "this webhook request was already received",
        ));
    }
    Ok(tx)
}

/// What one message sent to `POST /v1/webhooks/dsn` came to.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DsnResponse {
    /// `hard_bounce`, `soft_bounce`, `failed` (refused for a reason that is not the
    /// recipient's), `delivered`, `delayed`, `complaint`, `duplicate` (already applied:
    /// nothing changed), `ignored` (not a report: an auto-reply, spam ...), `unmatched`
    /// (names no email of ours).
    pub result: String,
    /// The email the message is about, when found.
    pub email_id: Option<Uuid>,
    /// How it was found: `return_path` (VERP), `message_id`, `queue_id`.
    pub matched_by: Option<String>,
    /// One line saying what was found and done.
    pub detail: String,
}

/// The raw message, as `message/rfc822` (or `text/plain`).
pub struct RawMessage;

impl PartialSchema for RawMessage {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(
                "One whole message (headers and body) as it arrived at the bounce address: a \
                 DSN, an ARF abuse report, or anything else (ignored). Add a Delivered-To header \
                 with the address it was sent to when the message lacks it.",
            ))
            .into()
    }
}

impl ToSchema for RawMessage {}

/// A bounce, complaint or other message that came back to the bounce address, posted
/// whole by the relay and signed like `/v1/webhooks/events`. Applied exactly as
/// `adopt-worker bounces ingest` applies it (docs/bounces.md "Bounces and complaints").
#[utoipa::path(post, path = "/v1/webhooks/dsn", tag = "webhooks",
    security(("webhook_signature" = [])),
    params(
        ("X-Adopt-Timestamp" = i64, Header, description = "Unix seconds; within 5 minutes of now"),
        ("X-Adopt-Signature" = String, Header, description = "sha256=<hex HMAC-SHA256 of \"{timestamp}.{raw body}\">")),
    request_body(content = RawMessage, content_type = "message/rfc822",
        description = "The raw message (Content-Type message/rfc822 or text/plain), at most 5 MiB"),
    responses(
        (status = 200, description = "Read and applied, ignored or unmatched (one transaction)", body = DsnResponse),
        (status = 401, description = "Missing or wrong signature, or timestamp out of range", body = ErrorBody),
        (status = 409, description = "This exact request was already received", body = ErrorBody),
        (status = 413, description = "Body over 5 MiB", body = ErrorBody),
        (status = 415, description = "Not message/rfc822 or text/plain", body = ErrorBody),
        (status = 503, description = "No webhook secret is configured", body = ErrorBody)))]
pub async fn dsn(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<DsnResponse>, ApiError> {
    let signature = verified(&state, &headers, &body)?;
    require_message(&headers)?;
    let report = crate::bounces::dsn::parse(&body);
    let settings = crate::bounces::IngestSettings::from_settings(state.settings());
    let mut tx = begin_once(&state, &signature).await?;
    let done = crate::bounces::ingest::apply(&mut tx, &settings, &report, None)
        .await
        .map_err(|crate::bounces::IngestError::Database(e)| ApiError::from(e))?;
    tx.commit().await?;
    state.sweep_expired();
    Ok(Json(DsnResponse {
        result: done.result.as_str().to_string(),
        email_id: done.email_id,
        matched_by: done.matched_by.map(|m| m.as_str().to_string()),
        detail: done.detail,
    }))
}

fn require_message(headers: &HeaderMap) -> Result<(), ApiError> {
    let ct = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if matches!(mime.as_str(), "message/rfc822" | "text/plain") {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        format!(
            "expected Content-Type: message/rfc822 or text/plain, got {:?}",
            if ct.is_empty() { "nothing" } else { ct }
        ),
    ))
}

pub(crate) fn unauthorized(code: &'static str, message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, code, message)
}

/// Checks the timestamp window and the signature; returns the signature's bytes.
fn verify(
    headers: &HeaderMap,
    body: &[u8],
    secret: &[u8],
    tolerance_secs: u64,
) -> Result<Vec<u8>, ApiError> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(ts), Some(sig)) = (header(TIMESTAMP_HEADER), header(SIGNATURE_HEADER)) else {
        return Err(unauthorized(
            "invalid_signature",
            "X-Adopt-Timestamp and X-Adopt-Signature are required",
        ));
    };
    let sig = sig
        .trim()
        .strip_prefix("sha256=")
        .and_then(decode_hex)
        .ok_or_else(|| {
            unauthorized(
                "invalid_signature",
                "X-Adopt-Signature must be sha256=<hex>",
            )
        })?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret)
        .map_err(|_| unauthorized("invalid_signature", "webhook secret unusable"))?;
    mac.update(ts.trim().as_bytes());
    mac.update(b".");
    mac.update(body);
    // verify_slice compares in constant time.
    mac.verify_slice(&sig)
        .map_err(|_| unauthorized("invalid_signature", "signature does not match"))?;
    let ts: i64 = ts.trim().parse().map_err(|_| {
        unauthorized(
            "invalid_timestamp",
            "X-Adopt-Timestamp must be unix seconds",
        )
    })?;
    let skew = (Utc::now().timestamp() - ts).unsigned_abs();
    if skew > tolerance_secs {
        return Err(unauthorized(
            "invalid_timestamp",
            &format!("X-Adopt-Timestamp is {skew} s from now; at most {tolerance_secs} s allowed"),
        ));
    }
    Ok(sig)
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() != 64 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn parse_events(body: &[u8]) -> Result<Vec<WebhookEvent>, ApiError> {
    let raw: Value = parse_json(body)?;
    let items = match raw {
        Value::Array(items) => items,
        one @ Value::Object(_) => vec![one],
        _ => {
            return Err(ApiError::validation(vec![FieldError::new(
                "body",
                "must be an event object or an array of events",
            )]));
        }
    };
    if items.is_empty() || items.len() > MAX_EVENTS {
        return Err(ApiError::validation(vec![FieldError::new(
            "body",
            format!("must hold 1 to {MAX_EVENTS} events"),
        )]));
    }
    let mut events = Vec::with_capacity(items.len());
    let mut errors = Vec::new();
    for (i, v) in items.into_iter().enumerate() {
        let mut fail = |field: String, message: String| {
            errors.push(FieldError {
                index: Some(i),
                field,
                message,
            })
        };
        match serde_path_to_error::deserialize::<_, WebhookEvent>(v) {
            Err(e) => {
                let path = e.path().to_string();
                let message = e.into_inner().to_string();
                fail(super::error::field_of(&path, &message), message);
            }
            Ok(ev) => {
                if ev.email_id.is_none() && ev.provider_message_id.is_none() {
                    fail(
                        "email_id".into(),
                        "email_id or provider_message_id is required".into(),
                    );
                } else if ev.kind == EventKind::Bounced && ev.bounce_type.is_none() {
                    fail(
                        "bounce_type".into(),
                        "required for bounced events: hard or soft".into(),
                    );
                } else {
                    events.push(ev);
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(events)
    } else {
        Err(ApiError::validation(errors))
    }
}

async fn apply(
    tx: &mut PgConnection,
    event: &WebhookEvent,
    soft_threshold: i32,
) -> Result<(Option<Uuid>, EventOutcome), sqlx::Error> {
    let email_id = match (event.email_id, &event.provider_message_id) {
        (Some(id), _) => Some(id),
        (None, Some(pmid)) => tracking::find_by_provider_message_id(&mut *tx, pmid).await?,
        (None, None) => None,
    };
    let Some(id) = email_id else {
        return Ok((None, EventOutcome::NotFound));
    };
    let reason = || {
        event
            .reason
            .clone()
            .unwrap_or_else(|| "no reason given".into())
    };
    let effect = match event.kind {
        EventKind::Delivered => Effect::Delivered,
        EventKind::Opened => Effect::Opened,
        EventKind::Complained => Effect::Complained,
        EventKind::Bounced => Effect::Bounced {
            kind: match event.bounce_type {
                Some(BounceType::Soft) => BounceKind::Soft,
                _ => BounceKind::Hard,
            },
            reason: reason(),
            code: event.code.clone(),
        },
    };
    let report = Report {
        effect,
        at: event
            .occurred_at
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_else(Utc::now),
        recipient: None,
        reported_by: "the relay",
        via: "webhook",
    };
    let outcome = effects::apply(tx, id, &report, soft_threshold).await?;
    Ok(match outcome {
        EventOutcome::NotFound => (None, outcome),
        _ => (Some(id), outcome),
    })
}

/// Forgets signatures too old to match a request inside the window (twice the largest
/// tolerance we could be configured with is far more than needed; one day is plenty).
pub async fn sweep_seen(pool: &sqlx::PgPool, tolerance_secs: u64) -> Result<(), sqlx::Error> {
    let keep = (tolerance_secs.saturating_mul(2) + 60) as f64;
    sqlx::query(
        "DELETE FROM api_webhook_signatures WHERE received_at < now() - make_interval(secs => $1)",
    )
    .bind(keep)
    .execute(pool)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed(secret: &[u8], ts: i64, body: &[u8]) -> HeaderMap {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
        mac.update(format!("{ts}.").as_bytes());
        mac.update(body);
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let mut h = HeaderMap::new();
        h.insert(TIMESTAMP_HEADER, ts.to_string().parse().unwrap());
        h.insert(SIGNATURE_HEADER, format!("sha256={hex}").parse().unwrap());
        h
    }

    #[test]
    fn signature_and_window_are_checked() {
        let now = Utc::now().timestamp();
        let body = br#"{"type":"delivered","email_id":"0"}"#;
        assert!(verify(&signed(b"secret", now, body), body, b"secret", 300).is_ok());
        let e = verify(&signed(b"other", now, body), body, b"secret", 300).unwrap_err();
        assert_eq!(e.code, "invalid_signature");
        let e = verify(&signed(b"secret", now, body), b"{}", b"secret", 300).unwrap_err();
        assert_eq!(e.code, "invalid_signature");
        let e = verify(&signed(b"secret", now - 301, body), body, b"secret", 300).unwrap_err();
        assert_eq!(e.code, "invalid_timestamp");
        let e = verify(&signed(b"secret", now + 301, body), body, b"secret", 300).unwrap_err();
        assert_eq!(e.code, "invalid_timestamp");
        assert_eq!(
            verify(&HeaderMap::new(), body, b"secret", 300)
                .unwrap_err()
                .status,
            401
        );
    }
}
