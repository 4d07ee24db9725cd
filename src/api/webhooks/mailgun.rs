//! `POST /v1/webhooks/mailgun`: Mailgun's webhooks (docs/bounces.md "Bounces and complaints"). Each
//! body carries `signature: {timestamp, token, signature}`, the hex HMAC-SHA256 of
//! `timestamp + token` with `auth.mailgun_signing_key`, checked in constant time; the
//! timestamp must be within `auth.webhook_tolerance_secs`, and a token is accepted once (as
//! Mailgun advises, remembered with our own replay keys).
//!
//! The email is found by `user-variables.email_id` (from an `X-Mailgun-Variables` header),
//! else the Message-ID we set (`message.headers.message-id`, which Mailgun reports without
//! brackets).

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};

use super::effects::{Effect, Scope};
use super::provider::{
    self, ProviderEvent, ProviderResponse, RowRef, bad_signature, check_window, disabled, refused,
    text,
};
use crate::api::ApiState;
use crate::api::error::{ApiError, ErrorBody, FieldError, parse_json, require_json};
use crate::delivery::classify::{FailureClass, SendFailure, SmtpReply};
use crate::metrics::{Provider, ProviderRefusal};
use crate::preferences::BounceKind;

const PROVIDER: Provider = Provider::Mailgun;

/// The documented body: a Mailgun webhook with its signature.
pub struct MailgunBody;

impl PartialSchema for MailgunBody {
    fn schema() -> RefOr<Schema> {
        let string = || ObjectBuilder::new().schema_type(Type::String);
        ObjectBuilder::new()
            .property(
                "signature",
                ObjectBuilder::new()
                    .property("timestamp", string())
                    .property("token", string())
                    .property(
                        "signature",
                        string().description(Some(
                            "hex HMAC-SHA256 of timestamp + token with the signing key",
                        )),
                    )
                    .required("timestamp")
                    .required("token")
                    .required("signature"),
            )
            .required("signature")
            .property(
                "event-data",
                ObjectBuilder::new().description(Some(
                    "The event as Mailgun documents it (delivered, failed, opened, clicked, \
                     unsubscribed, complained, ...)",
                )),
            )
            .required("event-data")
            .into()
    }
}

impl ToSchema for MailgunBody {}

/// Mailgun webhooks, signed with the Mailgun signing key.
#[utoipa::path(post, path = "/v1/webhooks/mailgun", tag = "webhooks",
    request_body(content = MailgunBody, description = "One Mailgun event with its signature"),
    responses(
        (status = 200, description = "Applied (one transaction)", body = ProviderResponse),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "Missing or wrong signature, or timestamp out of range", body = ErrorBody),
        (status = 409, description = "This token was already received", body = ErrorBody),
        (status = 413, description = "Body over 1 MiB", body = ErrorBody),
        (status = 415, description = "Not application/json", body = ErrorBody),
        (status = 422, description = "No event-data object", body = ErrorBody),
        (status = 503, description = "No signing key configured (auth.mailgun_signing_key)", body = ErrorBody)))]
pub async fn mailgun(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<ProviderResponse>, ApiError> {
    let auth = &state.settings().auth;
    if auth.mailgun_signing_key.is_empty() {
        return Err(disabled(PROVIDER, "auth.mailgun_signing_key"));
    }
    require_json(&headers).map_err(|e| refused(PROVIDER, ProviderRefusal::Malformed, e))?;
    let raw: Value =
        parse_json(&body).map_err(|e| refused(PROVIDER, ProviderRefusal::Malformed, e))?;
    let signature = raw.get("signature").unwrap_or(&Value::Null);
    let (timestamp, token) = verify(auth.mailgun_signing_key.as_bytes(), signature)?;
    check_window(PROVIDER, timestamp, auth.webhook_tolerance_secs)?;
    let Some(data) = raw.get("event-data").filter(|d| d.is_object()) else {
        return Err(refused(
            PROVIDER,
            ProviderRefusal::Malformed,
            ApiError::validation(vec![FieldError::new(
                "event-data",
                "required: the event, an object",
            )]),
        ));
    };
    let events = [event_of(data)];
    let replay = provider::replay_key(PROVIDER, &[token.as_bytes()]);
    let results = provider::apply_once(&state, PROVIDER, &replay, &events).await?;
    Ok(Json(ProviderResponse {
        results,
        note: None,
    }))
}

/// Checks `{timestamp, token, signature}`; returns the timestamp and the token.
fn verify(key: &[u8], signature: &Value) -> Result<(i64, String), ApiError> {
    let (Some(ts), Some(token), Some(sig)) = (
        text(signature, "timestamp"),
        text(signature, "token"),
        text(signature, "signature"),
    ) else {
        return Err(bad_signature(
            PROVIDER,
            "signature.timestamp, signature.token and signature.signature are required",
        ));
    };
    let sig = decode_hex(sig).ok_or_else(|| bad_signature(PROVIDER, "signature is not hex"))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(key)
        .map_err(|_| bad_signature(PROVIDER, "signing key unusable"))?;
    mac.update(ts.as_bytes());
    mac.update(token.as_bytes());
    // verify_slice compares in constant time.
    mac.verify_slice(&sig)
        .map_err(|_| bad_signature(PROVIDER, "signature does not match"))?;
    let ts = ts.parse().map_err(|_| {
        refused(
            PROVIDER,
            ProviderRefusal::Stale,
            super::unauthorized(
                "invalid_timestamp",
                "signature.timestamp must be unix seconds",
            ),
        )
    })?;
    Ok((ts, token.to_string()))
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

/// One Mailgun event in our terms.
pub fn event_of(d: &Value) -> ProviderEvent {
    let kind = text(d, "event").unwrap_or("unknown");
    let mut refs: Vec<RowRef> = provider::email_id_in(d.get("user-variables"))
        .into_iter()
        .collect();
    let message_id = d
        .get("message")
        .and_then(|m| m.get("headers"))
        .and_then(|h| text(h, "message-id"));
    if let Some(id) = message_id {
        refs.push(RowRef::MessageId(id.to_string()));
        refs.push(RowRef::ProviderMessageId(id.to_string()));
    }
    let mut e = ProviderEvent::new(kind, refs);
    e.recipient = text(d, "recipient").map(str::to_string);
    e.at = provider::unix_time(d.get("timestamp")).unwrap_or(e.at);
    e.effect = match kind {
        "delivered" => Some(Effect::Delivered),
        "failed" => Some(failure_effect(d)),
        "rejected" => Some(Effect::Failed {
            reason: format!(
                "rejected by Mailgun: {}",
                d.get("reject")
                    .and_then(|r| text(r, "reason"))
                    .unwrap_or("no reason given")
            ),
            code: None,
        }),
        "complained" => Some(Effect::Complained),
        "opened" => Some(Effect::Opened),
        "clicked" => Some(Effect::Clicked),
        "unsubscribed" => Some(Effect::Unsubscribed(Scope::All)),
        // accepted, stored, list events, and anything new.
        _ => None,
    };
    e
}

/// `severity: temporary` is a deferral (Mailgun retries); a permanent failure is the
/// recipient's by Mailgun's `reason` (`bounce`, `suppress-bounce`: hard; `old`, given up
/// after retrying: soft), the sender's when Mailgun did not send it (`suppress-*`), and
/// otherwise classified from the remote server's reply as our own sends are.
fn failure_effect(d: &Value) -> Effect {
    let status = d.get("delivery-status").unwrap_or(&Value::Null);
    let said = text(status, "description")
        .or_else(|| text(status, "message"))
        .unwrap_or("");
    let smtp_code = status
        .get("code")
        .and_then(|c| c.as_u64().or_else(|| c.as_str()?.trim().parse().ok()))
        .and_then(|c| u16::try_from(c).ok());
    let reason = match (smtp_code, said) {
        (Some(c), "") => c.to_string(),
        (Some(c), s) => format!("{c} {s}"),
        (None, "") => text(d, "reason").unwrap_or("failed").to_string(),
        (None, s) => s.to_string(),
    };
    let code = smtp_code.map(|c| c.to_string());
    if text(d, "severity") == Some("temporary") {
        return Effect::Deferred { reason };
    }
    let bounced = |kind| Effect::Bounced {
        kind,
        reason: reason.clone(),
        code: code.clone(),
    };
    match text(d, "reason") {
        Some("bounce" | "suppress-bounce") => bounced(BounceKind::Hard),
        Some("old") => bounced(BounceKind::Soft),
        Some(r) if r.starts_with("suppress-") => Effect::Failed {
            reason: format!("not sent by Mailgun ({r}): {reason}"),
            code,
        },
        _ => match smtp_code.map(|c| SendFailure::from_reply(SmtpReply::from_parts(c, said))) {
            Some(f) if f.class == FailureClass::HardBounce => bounced(BounceKind::Hard),
            Some(SendFailure {
                class: FailureClass::Transient { .. },
                ..
            }) => bounced(BounceKind::Soft),
            _ => Effect::Failed { reason, code },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn failures_map_by_severity_and_reason() {
        let temp = event_of(
            &json!({"event": "failed", "severity": "temporary", "reason": "generic",
            "delivery-status": {"code": 452, "message": "mailbox full"}}),
        );
        assert!(matches!(temp.effect, Some(Effect::Deferred { .. })));
        let hard = event_of(
            &json!({"event": "failed", "severity": "permanent", "reason": "bounce",
            "delivery-status": {"code": 550, "description": "5.1.1 The email account does not exist"}}),
        );
        assert!(
            matches!(hard.effect, Some(Effect::Bounced { kind: BounceKind::Hard, ref code, .. }) if code.as_deref() == Some("550"))
        );
        let old = event_of(&json!({"event": "failed", "severity": "permanent", "reason": "old"}));
        assert!(matches!(
            old.effect,
            Some(Effect::Bounced {
                kind: BounceKind::Soft,
                ..
            })
        ));
        let suppressed = event_of(
            &json!({"event": "failed", "severity": "permanent", "reason": "suppress-complaint"}),
        );
        assert!(matches!(suppressed.effect, Some(Effect::Failed { .. })));
        let policy = event_of(
            &json!({"event": "failed", "severity": "permanent", "reason": "generic",
            "delivery-status": {"code": 554, "message": "5.7.1 rejected by policy"}}),
        );
        assert!(matches!(policy.effect, Some(Effect::Failed { .. })));
        let unknown_user = event_of(
            &json!({"event": "failed", "severity": "permanent", "reason": "generic",
            "delivery-status": {"code": "550", "message": "5.1.1 user unknown"}}),
        );
        assert!(matches!(
            unknown_user.effect,
            Some(Effect::Bounced {
                kind: BounceKind::Hard,
                ..
            })
        ));
    }

    #[test]
    fn the_row_is_named_by_user_variables_or_message_id() {
        let e = event_of(&json!({"event": "opened", "timestamp": 1521243339.873676,
            "user-variables": {"email_id": "9a0c6c47-2b2c-4cb1-9e5c-5d9d0f2f6b10"},
            "message": {"headers": {"message-id": "9a0c6c47-2b2c-4cb1-9e5c-5d9d0f2f6b10@adoptdontshop.com"}}}));
        assert!(matches!(e.refs[0], RowRef::EmailId(_)));
        assert!(matches!(&e.refs[1], RowRef::MessageId(id) if id.ends_with("@adoptdontshop.com")));
        assert_eq!(e.at.timestamp(), 1521243339);
        assert_eq!(e.effect, Some(Effect::Opened));
    }

    #[test]
    fn signatures_are_checked_in_constant_time_over_timestamp_and_token() {
        let key = b"key-0123456789abcdef0123456789ab";
        let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
        mac.update(b"1529006854a8ce0edb2dd8301dee6c2405235584e45aa91d1e9f979f3de0");
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let good = json!({"timestamp": "1529006854", "token": "a8ce0edb2dd8301dee6c2405235584e45aa91d1e9f979f3de0", "signature": hex});
        assert_eq!(verify(key, &good).unwrap().0, 1529006854);
        let mut bad = good.clone();
        bad["token"] = json!("another-token");
        assert_eq!(verify(key, &bad).unwrap_err().code, "invalid_signature");
        assert_eq!(verify(key, &json!({})).unwrap_err().status, 401);
    }
}
