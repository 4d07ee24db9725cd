//! `POST /v1/webhooks/postmark`: Postmark's Bounce, Delivery, Spam Complaint, Open, Click and
//! Subscription Change webhooks (docs/bounces.md "Bounces and complaints"). Postmark signs nothing: it
//! sends the HTTP basic-auth credentials written in the webhook URL, checked here in constant
//! time against `auth.postmark_username` / `auth.postmark_password`. Its records carry no
//! request timestamp, so there is no window; a body already accepted within the replay
//! window is refused (409).
//!
//! Postmark's webhooks do not carry the Message-ID we set: the email is found by
//! `Metadata.email_id` (Postmark fills `Metadata` from `X-PM-Metadata-*` headers), else
//! Postmark's `MessageID` as `provider_message_id`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use base64::Engine;
use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};

use super::effects::{Effect, Scope};
use super::provider::{
    self, ProviderEvent, ProviderResponse, RowRef, disabled, refused, text, time,
};
use crate::api::ApiState;
use crate::api::error::{ApiError, ErrorBody, FieldError, parse_json, require_json};
use crate::config::AuthSettings;
use crate::metrics::{Provider, ProviderRefusal};
use crate::preferences::BounceKind;

const PROVIDER: Provider = Provider::Postmark;

/// The documented body: one Postmark webhook record.
pub struct PostmarkBody;

impl PartialSchema for PostmarkBody {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .property(
                "RecordType",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .description(Some(
                        "Bounce, Delivery, SpamComplaint, Open, Click or SubscriptionChange",
                    )),
            )
            .required("RecordType")
            .description(Some(
                "One Postmark webhook record as Postmark documents it: `MessageID`, \
                 `Metadata`, `Type`, `Email`/`Recipient`, the record's time and the like are \
                 read where they mean something to us, leniently.",
            ))
            .into()
    }
}

impl ToSchema for PostmarkBody {}

/// Postmark webhooks, authenticated with HTTP basic auth.
#[utoipa::path(post, path = "/v1/webhooks/postmark", tag = "webhooks",
    security(("postmark_basic" = [])),
    request_body(content = PostmarkBody, description = "One Postmark webhook record"),
    responses(
        (status = 200, description = "Applied (one transaction)", body = ProviderResponse),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "Missing or wrong credentials", body = ErrorBody),
        (status = 409, description = "This exact record was already received", body = ErrorBody),
        (status = 413, description = "Body over 1 MiB", body = ErrorBody),
        (status = 415, description = "Not application/json", body = ErrorBody),
        (status = 422, description = "Not a Postmark record", body = ErrorBody),
        (status = 503, description = "No credentials configured (auth.postmark_password)", body = ErrorBody)))]
pub async fn postmark(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<ProviderResponse>, ApiError> {
    let auth = &state.settings().auth;
    if auth.postmark_password.is_empty() {
        return Err(disabled(PROVIDER, "auth.postmark_password"));
    }
    if !authorized(auth, &headers) {
        return Err(refused(
            PROVIDER,
            ProviderRefusal::Unauthorized,
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_credentials",
                "HTTP basic auth with the configured Postmark credentials is required",
            )
            .with_header(header::WWW_AUTHENTICATE, "Basic realm=\"postmark\""),
        ));
    }
    require_json(&headers).map_err(|e| refused(PROVIDER, ProviderRefusal::Malformed, e))?;
    let record: Value =
        parse_json(&body).map_err(|e| refused(PROVIDER, ProviderRefusal::Malformed, e))?;
    if !record.get("RecordType").is_some_and(Value::is_string) {
        return Err(refused(
            PROVIDER,
            ProviderRefusal::Malformed,
            ApiError::validation(vec![FieldError::new(
                "RecordType",
                "required: a Postmark webhook record",
            )]),
        ));
    }
    let events = [event_of(&record)];
    let replay = provider::replay_key(PROVIDER, &[&body]);
    let results = provider::apply_once(&state, PROVIDER, &replay, &events).await?;
    Ok(Json(ProviderResponse {
        results,
        note: None,
    }))
}

/// `Authorization: Basic` with the configured user and password. Both sides are hashed
/// before the constant-time comparison, so neither length nor content leaks.
fn authorized(auth: &AuthSettings, headers: &HeaderMap) -> bool {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
        .and_then(|(_, b64)| {
            base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .ok()
        })
        .unwrap_or_default();
    let expected = format!("{}:{}", auth.postmark_username, auth.postmark_password);
    let a = Sha256::digest(&given);
    let b = Sha256::digest(expected.as_bytes());
    bool::from(a.ct_eq(&b))
}

/// One Postmark record in our terms.
pub fn event_of(r: &Value) -> ProviderEvent {
    let kind = text(r, "RecordType").unwrap_or("unknown");
    let mut refs: Vec<RowRef> = provider::email_id_in(r.get("Metadata"))
        .into_iter()
        .collect();
    if let Some(id) = text(r, "MessageID") {
        refs.push(RowRef::ProviderMessageId(id.to_string()));
    }
    let mut e = ProviderEvent::new(kind, refs);
    e.recipient = text(r, "Recipient")
        .or_else(|| text(r, "Email"))
        .map(str::to_string);
    let at = ["DeliveredAt", "BouncedAt", "ReceivedAt", "ChangedAt"]
        .iter()
        .find_map(|k| time(r, k));
    e.at = at.unwrap_or(e.at);
    e.effect = match kind {
        "Delivery" => Some(Effect::Delivered),
        "Bounce" => bounce_effect(r),
        "SpamComplaint" => Some(Effect::Complained),
        "Open" => Some(Effect::Opened),
        "Click" => Some(Effect::Clicked),
        "SubscriptionChange" => subscription_effect(r),
        _ => None,
    };
    e
}

/// Postmark's bounce types ("Bounce webhook", `Type`): the recipient's (hard or soft), the
/// message's or sender's (failed), a complaint or unsubscribe, or no bounce at all
/// (auto-replies, address changes, ...: ignored).
fn bounce_effect(r: &Value) -> Option<Effect> {
    let kind = text(r, "Type").unwrap_or("Unknown");
    let details = text(r, "Details")
        .or_else(|| text(r, "Description"))
        .unwrap_or("no details");
    let reason = format!("{kind}: {details}");
    let bounced = |kind| {
        Some(Effect::Bounced {
            kind,
            reason: reason.clone(),
            code: None,
        })
    };
    match kind {
        "HardBounce" | "BadEmailAddress" => bounced(BounceKind::Hard),
        "SoftBounce" | "Transient" | "DnsError" => bounced(BounceKind::Soft),
        "SpamComplaint" => Some(Effect::Complained),
        "Unsubscribe" => Some(Effect::Unsubscribed(Scope::All)),
        "Blocked"
        | "DMARCPolicy"
        | "SMTPApiError"
        | "TemplateRenderingFailed"
        | "VirusNotification"
        | "ChallengeVerification" => Some(Effect::Failed { reason, code: None }),
        // AutoResponder, AddressChange, Subscribe, SpamNotification (delivered, then
        // filtered), OpenRelayTest, ManuallyDeactivated, Unconfirmed, InboundError, Unknown.
        _ => None,
    }
}

/// A suppression Postmark added (`SuppressSending: true`): the recipient's unsubscribe
/// from the stream (`ManualSuppression`), a hard bounce or a complaint. A reactivation is
/// not acted on: a blacklist is lifted by people, not by a provider.
fn subscription_effect(r: &Value) -> Option<Effect> {
    if r.get("SuppressSending") != Some(&Value::Bool(true)) {
        return None;
    }
    match text(r, "SuppressionReason") {
        Some("ManualSuppression") => Some(Effect::Unsubscribed(Scope::EmailCategory)),
        Some("HardBounce") => Some(Effect::Bounced {
            kind: BounceKind::Hard,
            reason: "HardBounce: the address was suppressed by Postmark".into(),
            code: None,
        }),
        Some("SpamComplaint") => Some(Effect::Complained),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn records_map_as_postmark_documents_them() {
        let hard = event_of(
            &json!({"RecordType": "Bounce", "Type": "HardBounce", "TypeCode": 1,
            "Email": "john@example.com", "BouncedAt": "2019-11-05T16:33:54.9070259Z",
            "Details": "Test bounce details", "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
            "Metadata": {"email_id": "9a0c6c47-2b2c-4cb1-9e5c-5d9d0f2f6b10"}}),
        );
        assert!(matches!(
            hard.effect,
            Some(Effect::Bounced {
                kind: BounceKind::Hard,
                ..
            })
        ));
        assert_eq!(hard.recipient.as_deref(), Some("john@example.com"));
        assert_eq!(hard.at.timestamp(), 1572971634);
        assert!(matches!(hard.refs[0], RowRef::EmailId(_)));
        let soft = event_of(&json!({"RecordType": "Bounce", "Type": "SoftBounce"}));
        assert!(matches!(
            soft.effect,
            Some(Effect::Bounced {
                kind: BounceKind::Soft,
                ..
            })
        ));
        let auto = event_of(&json!({"RecordType": "Bounce", "Type": "AutoResponder"}));
        assert_eq!(auto.effect, None);
        let blocked = event_of(&json!({"RecordType": "Bounce", "Type": "Blocked"}));
        assert!(matches!(blocked.effect, Some(Effect::Failed { .. })));
        let unsub = event_of(
            &json!({"RecordType": "SubscriptionChange", "SuppressSending": true,
            "SuppressionReason": "ManualSuppression", "Origin": "Recipient"}),
        );
        assert_eq!(
            unsub.effect,
            Some(Effect::Unsubscribed(Scope::EmailCategory))
        );
        let back = event_of(&json!({"RecordType": "SubscriptionChange", "SuppressSending": false}));
        assert_eq!(back.effect, None);
    }
}
