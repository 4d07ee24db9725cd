//! `POST /v1/webhooks/sendgrid`: SendGrid's Event Webhook with its signature (docs/bounces.md "Bounces
//! and complaints"). SendGrid signs `timestamp + raw body` with ECDSA P-256 / SHA-256 and
//! sends the base64 DER signature and the timestamp in `X-Twilio-Email-Event-Webhook-Signature`
//! and `X-Twilio-Email-Event-Webhook-Timestamp`; the key is `auth.sendgrid_public_key`. The
//! timestamp must be within `auth.webhook_tolerance_secs`, and a request is applied once
//! (the digest of what was signed is its replay key: ECDSA signatures are malleable, so the
//! signature itself cannot be one).
//!
//! The email is found by an `email_id` custom argument, else `smtp-id` (the Message-ID we
//! set), else `sg_message_id` (or the id before its `.filter…` suffix, which is what
//! SendGrid's SMTP reply "queued as" gave us as `provider_message_id`).

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use base64::Engine;
use ring::signature::{ECDSA_P256_SHA256_ASN1, UnparsedPublicKey};
use serde_json::Value;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};

use super::effects::{Effect, Scope};
use super::provider::{
    self, ProviderEvent, ProviderResponse, RowRef, bad_signature, check_window, disabled, refused,
    text,
};
use crate::api::ApiState;
use crate::api::error::{ApiError, ErrorBody, FieldError, parse_json, require_json};
use crate::config::P256PublicKey;
use crate::metrics::{Provider, ProviderRefusal};
use crate::preferences::BounceKind;

const PROVIDER: Provider = Provider::Sendgrid;
pub const SIGNATURE_HEADER: &str = "x-twilio-email-event-webhook-signature";
pub const TIMESTAMP_HEADER: &str = "x-twilio-email-event-webhook-timestamp";

/// The documented body: an array of SendGrid events.
pub struct SendgridBody;

impl PartialSchema for SendgridBody {
    fn schema() -> RefOr<Schema> {
        let event = ObjectBuilder::new()
            .property("event", ObjectBuilder::new().schema_type(Type::String))
            .required("event")
            .description(Some(
                "One SendGrid event (processed, delivered, deferred, bounce, dropped, \
                 spamreport, open, click, unsubscribe, group_unsubscribe ...), as SendGrid \
                 documents it: `email`, `timestamp`, `smtp-id`, `sg_message_id`, `reason`, \
                 `status`, `type`, `bounce_classification` and custom arguments are read where \
                 they mean something to us, leniently.",
            ));
        ArrayBuilder::new().items(event).into()
    }
}

impl ToSchema for SendgridBody {}

/// SendGrid Event Webhook, signed with SendGrid's ECDSA key.
#[utoipa::path(post, path = "/v1/webhooks/sendgrid", tag = "webhooks",
    security(("sendgrid_signature" = [])),
    params(
        ("X-Twilio-Email-Event-Webhook-Timestamp" = String, Header, description = "Unix seconds; within auth.webhook_tolerance_secs of now"),
        ("X-Twilio-Email-Event-Webhook-Signature" = String, Header, description = "base64 DER ECDSA P-256 SHA-256 signature of timestamp + raw body")),
    request_body(content = SendgridBody, description = "An array of SendGrid events"),
    responses(
        (status = 200, description = "Applied (all events in one transaction)", body = ProviderResponse),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "Missing or wrong signature, or timestamp out of range", body = ErrorBody),
        (status = 409, description = "This request was already received", body = ErrorBody),
        (status = 413, description = "Body over 1 MiB", body = ErrorBody),
        (status = 415, description = "Not application/json", body = ErrorBody),
        (status = 422, description = "Not an array of events", body = ErrorBody),
        (status = 503, description = "No verification key configured (auth.sendgrid_public_key)", body = ErrorBody)))]
pub async fn sendgrid(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<ProviderResponse>, ApiError> {
    let auth = &state.settings().auth;
    let Some(key) = &auth.sendgrid_public_key else {
        return Err(disabled(PROVIDER, "auth.sendgrid_public_key"));
    };
    let timestamp = verify(key, &headers, &body)?;
    check_window(PROVIDER, timestamp, auth.webhook_tolerance_secs)?;
    require_json(&headers).map_err(|e| refused(PROVIDER, ProviderRefusal::Malformed, e))?;
    let raw: Value =
        parse_json(&body).map_err(|e| refused(PROVIDER, ProviderRefusal::Malformed, e))?;
    let Value::Array(items) = raw else {
        return Err(refused(
            PROVIDER,
            ProviderRefusal::Malformed,
            ApiError::validation(vec![FieldError::new("body", "must be an array of events")]),
        ));
    };
    let errors: Vec<FieldError> = items
        .iter()
        .enumerate()
        .filter(|(_, e)| !e.get("event").is_some_and(Value::is_string))
        .map(|(i, _)| FieldError {
            index: Some(i),
            field: "event".into(),
            message: "each event is an object with its `event` name".into(),
        })
        .collect();
    if !errors.is_empty() {
        return Err(refused(
            PROVIDER,
            ProviderRefusal::Malformed,
            ApiError::validation(errors),
        ));
    }
    let events: Vec<ProviderEvent> = items.iter().map(event_of).collect();
    let replay = provider::replay_key(PROVIDER, &[timestamp.to_string().as_bytes(), &body]);
    let results = provider::apply_once(&state, PROVIDER, &replay, &events).await?;
    Ok(Json(ProviderResponse {
        results,
        note: None,
    }))
}

/// Checks the signature over `timestamp + body`; returns the timestamp.
fn verify(key: &P256PublicKey, headers: &HeaderMap, body: &[u8]) -> Result<i64, ApiError> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let (Some(ts), Some(sig)) = (header(TIMESTAMP_HEADER), header(SIGNATURE_HEADER)) else {
        return Err(bad_signature(
            PROVIDER,
            "X-Twilio-Email-Event-Webhook-Timestamp and X-Twilio-Email-Event-Webhook-Signature are required",
        ));
    };
    let sig = base64::engine::general_purpose::STANDARD
        .decode(sig)
        .map_err(|_| bad_signature(PROVIDER, "the signature is not base64"))?;
    let mut signed = Vec::with_capacity(ts.len() + body.len());
    signed.extend_from_slice(ts.as_bytes());
    signed.extend_from_slice(body);
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, key.point())
        .verify(&signed, &sig)
        .map_err(|_| bad_signature(PROVIDER, "signature does not match"))?;
    ts.parse().map_err(|_| {
        refused(
            PROVIDER,
            ProviderRefusal::Stale,
            super::unauthorized("invalid_timestamp", "the timestamp must be unix seconds"),
        )
    })
}

/// One SendGrid event in our terms.
pub fn event_of(v: &Value) -> ProviderEvent {
    let kind = text(v, "event").unwrap_or("unknown");
    let mut e = ProviderEvent::new(kind, refs_of(v));
    e.recipient = text(v, "email").map(str::to_string);
    e.at = provider::unix_time(v.get("timestamp")).unwrap_or(e.at);
    let reason = |fallback: &str| {
        text(v, "reason")
            .or_else(|| text(v, "response"))
            .unwrap_or(fallback)
            .to_string()
    };
    let code = text(v, "status").map(str::to_string);
    e.effect = match kind {
        "delivered" => Some(Effect::Delivered),
        "deferred" => Some(Effect::Deferred {
            reason: reason("deferred"),
        }),
        "bounce" => Some(bounce_effect(v, reason("bounced"), code)),
        "dropped" => Some(Effect::Failed {
            reason: format!("dropped by SendGrid: {}", reason("no reason given")),
            code,
        }),
        "spamreport" => Some(Effect::Complained),
        "open" => Some(Effect::Opened),
        "click" => Some(Effect::Clicked),
        "unsubscribe" => Some(Effect::Unsubscribed(Scope::All)),
        "group_unsubscribe" => Some(Effect::Unsubscribed(Scope::EmailCategory)),
        // processed, group_resubscribe, and anything new.
        _ => None,
    };
    e
}

/// `type: "bounce"` is a hard bounce, `type: "blocked"` a soft one; a
/// `bounce_classification` that blames the message or the sender (Content, Reputation,
/// Frequency or Volume Too High) is not the recipient's fault.
fn bounce_effect(v: &Value, reason: String, code: Option<String>) -> Effect {
    if let Some("Content" | "Reputation" | "Frequency or Volume Too High") =
        text(v, "bounce_classification")
    {
        return Effect::Failed { reason, code };
    }
    let kind = if text(v, "type") == Some("blocked") {
        BounceKind::Soft
    } else {
        BounceKind::Hard
    };
    Effect::Bounced { kind, reason, code }
}

fn refs_of(v: &Value) -> Vec<RowRef> {
    let mut refs: Vec<RowRef> = provider::email_id_in(Some(v)).into_iter().collect();
    if let Some(id) = text(v, "smtp-id") {
        refs.push(RowRef::MessageId(id.to_string()));
    }
    if let Some(id) = text(v, "sg_message_id") {
        refs.push(RowRef::ProviderMessageId(id.to_string()));
        for suffix in [".filter", ".recvd"] {
            if let Some((queued_as, _)) = id.split_once(suffix) {
                refs.push(RowRef::ProviderMessageId(queued_as.to_string()));
            }
        }
    }
    refs
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_map_as_sendgrid_documents_them() {
        let bounce = event_of(
            &json!({"event": "bounce", "type": "bounce", "status": "5.0.0",
            "reason": "500 unknown recipient", "email": "a@example.com", "timestamp": 1513299569}),
        );
        assert!(matches!(
            bounce.effect,
            Some(Effect::Bounced {
                kind: BounceKind::Hard,
                ..
            })
        ));
        assert_eq!(bounce.at.timestamp(), 1513299569);
        let blocked = event_of(&json!({"event": "bounce", "type": "blocked"}));
        assert!(matches!(
            blocked.effect,
            Some(Effect::Bounced {
                kind: BounceKind::Soft,
                ..
            })
        ));
        let reputation = event_of(
            &json!({"event": "bounce", "type": "bounce", "bounce_classification": "Reputation"}),
        );
        assert!(matches!(reputation.effect, Some(Effect::Failed { .. })));
        assert_eq!(event_of(&json!({"event": "processed"})).effect, None);
        assert_eq!(event_of(&json!({"event": 5})).effect, None);
        assert_eq!(
            event_of(&json!({"event": "group_unsubscribe", "asm_group_id": 10})).effect,
            Some(Effect::Unsubscribed(Scope::EmailCategory))
        );
    }

    #[test]
    fn the_row_is_named_by_custom_argument_smtp_id_or_message_id() {
        let e = event_of(
            &json!({"event": "open", "email_id": "9a0c6c47-2b2c-4cb1-9e5c-5d9d0f2f6b10",
            "smtp-id": "<9a0c6c47-2b2c-4cb1-9e5c-5d9d0f2f6b10@adoptdontshop.com>",
            "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0"}),
        );
        assert!(matches!(e.refs[0], RowRef::EmailId(_)));
        assert!(matches!(&e.refs[1], RowRef::MessageId(_)));
        assert_eq!(
            e.refs[3],
            RowRef::ProviderMessageId("14c5d75ce93.dfd.64b469".into())
        );
    }
}
