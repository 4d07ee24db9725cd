//! `POST /v1/webhooks/ses`: Amazon SES notifications delivered by SNS over HTTPS (docs/bounces.md
//! "Bounces and complaints"). The SNS message must come from a topic of
//! `auth.ses_topic_arns`, be within `auth.webhook_tolerance_secs` of now, and carry a valid
//! SNS signature ([`super::sns`]); a notification is applied once (its SNS `MessageId` is the
//! replay key). A subscription confirmation is logged with its URL, and confirmed when
//! `auth.ses_auto_confirm` is on.
//!
//! Both SES formats are read: notifications (`notificationType`: Bounce, Complaint,
//! Delivery) and event publishing (`eventType`: also DeliveryDelay, Open, Click, Reject,
//! Rendering Failure, Subscription, Send). The email is found by `mail.tags.email_id`, else
//! the Message-ID we set (`mail.commonHeaders.messageId`, or `Message-ID` in `mail.headers`),
//! else SES's `mail.messageId` as `provider_message_id`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::DateTime;
use serde_json::Value;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};

use super::effects::{Effect, Scope};
use super::provider::{
    self, ProviderEvent, ProviderResponse, RowRef, check_window, disabled, refused, text, time,
};
use super::sns::{SnsError, SnsMessage};
use crate::api::ApiState;
use crate::api::error::{ApiError, ErrorBody, FieldError, parse_json};
use crate::metrics::{Provider, ProviderRefusal};
use crate::preferences::BounceKind;

const PROVIDER: Provider = Provider::Ses;

/// The documented body: an SNS message (SNS posts it as `text/plain`).
pub struct SnsBody;

impl PartialSchema for SnsBody {
    fn schema() -> RefOr<Schema> {
        let string = || ObjectBuilder::new().schema_type(Type::String);
        let mut body = ObjectBuilder::new().description(Some(
            "An Amazon SNS HTTP(S) message: `Notification` (its `Message` is the SES \
             notification as JSON text), `SubscriptionConfirmation` or \
             `UnsubscribeConfirmation`, signed by SNS.",
        ));
        for field in [
            "Type",
            "MessageId",
            "TopicArn",
            "Message",
            "Timestamp",
            "SignatureVersion",
            "Signature",
            "SigningCertURL",
        ] {
            body = body.property(field, string()).required(field);
        }
        for field in ["Subject", "SubscribeURL", "Token", "UnsubscribeURL"] {
            body = body.property(field, string());
        }
        body.into()
    }
}

impl ToSchema for SnsBody {}

/// Amazon SES notifications through SNS, verified with SNS's signature.
#[utoipa::path(post, path = "/v1/webhooks/ses", tag = "webhooks",
    request_body(description = "An SNS message, as JSON text (SNS sends `Content-Type: text/plain`; any type is read as JSON)",
        content((SnsBody = "text/plain"), (SnsBody = "application/json"))),
    responses(
        (status = 200, description = "Applied (all events in one transaction), or a subscription confirmation handled", body = ProviderResponse),
        (status = 400, description = "Not JSON", body = ErrorBody),
        (status = 401, description = "Bad signature, a certificate URL that is not SNS's, or a timestamp out of range", body = ErrorBody),
        (status = 403, description = "A topic not in auth.ses_topic_arns", body = ErrorBody),
        (status = 409, description = "This notification was already received", body = ErrorBody),
        (status = 413, description = "Body over 1 MiB", body = ErrorBody),
        (status = 422, description = "Not an SNS message", body = ErrorBody),
        (status = 502, description = "The subscription could not be confirmed (SNS sends the confirmation again)", body = ErrorBody),
        (status = 503, description = "No SNS topic configured (auth.ses_topic_arns), or the signing certificate could not be fetched", body = ErrorBody)))]
pub async fn ses(
    State(state): State<ApiState>,
    body: Bytes,
) -> Result<Json<ProviderResponse>, ApiError> {
    let auth = &state.settings().auth;
    if auth.ses_topic_arns.is_empty() {
        return Err(disabled(PROVIDER, "auth.ses_topic_arns"));
    }
    let message: SnsMessage =
        parse_json(&body).map_err(|e| refused(PROVIDER, ProviderRefusal::Malformed, e))?;
    if !auth.ses_topic_arns.contains(&message.topic_arn) {
        return Err(refused(
            PROVIDER,
            ProviderRefusal::Unauthorized,
            ApiError::new(
                StatusCode::FORBIDDEN,
                "topic_not_allowed",
                format!(
                    "topic {:?} is not in auth.ses_topic_arns",
                    message.topic_arn
                ),
            ),
        ));
    }
    let sent_at = DateTime::parse_from_rfc3339(&message.timestamp).map_err(|_| {
        refused(
            PROVIDER,
            ProviderRefusal::Stale,
            super::unauthorized("invalid_timestamp", "Timestamp is not an RFC 3339 time"),
        )
    })?;
    check_window(PROVIDER, sent_at.timestamp(), auth.webhook_tolerance_secs)?;
    state.sns().verify(&message).await.map_err(sns_refusal)?;

    match message.kind.as_str() {
        "SubscriptionConfirmation" => confirm(&state, &message).await,
        "UnsubscribeConfirmation" => {
            tracing::warn!(topic = %message.topic_arn, "SNS says this endpoint was unsubscribed from the topic");
            Ok(Json(ProviderResponse {
                results: Vec::new(),
                note: Some("unsubscribe confirmation logged".into()),
            }))
        }
        _ => {
            let notification: Value = parse_json(message.message.as_bytes())
                .map_err(|e| refused(PROVIDER, ProviderRefusal::Malformed, e))?;
            if !notification.is_object() {
                return Err(refused(
                    PROVIDER,
                    ProviderRefusal::Malformed,
                    ApiError::validation(vec![FieldError::new(
                        "Message",
                        "must be an SES notification (a JSON object)",
                    )]),
                ));
            }
            let events = events_of(&notification);
            let key = provider::replay_key(
                PROVIDER,
                &[message.topic_arn.as_bytes(), message.message_id.as_bytes()],
            );
            let results = provider::apply_once(&state, PROVIDER, &key, &events).await?;
            Ok(Json(ProviderResponse {
                results,
                note: None,
            }))
        }
    }
}

fn sns_refusal(e: SnsError) -> ApiError {
    match e {
        SnsError::NotSns(why) | SnsError::Signature(why) => provider::bad_signature(PROVIDER, &why),
        SnsError::Unavailable(why) => {
            tracing::warn!(error = %why, "SNS signing certificate unavailable");
            refused(
                PROVIDER,
                ProviderRefusal::CertificateUnavailable,
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "certificate_unavailable",
                    "the SNS signing certificate could not be fetched; SNS will retry",
                ),
            )
        }
    }
}

async fn confirm(
    state: &ApiState,
    message: &SnsMessage,
) -> Result<Json<ProviderResponse>, ApiError> {
    let url = message.subscribe_url.as_deref().unwrap_or_default();
    if !state.settings().auth.ses_auto_confirm {
        tracing::warn!(
            topic = %message.topic_arn,
            subscribe_url = url,
            "SNS subscription confirmation received: open SubscribeURL to confirm it (or set auth.ses_auto_confirm)"
        );
        return Ok(Json(ProviderResponse {
            results: Vec::new(),
            note: Some(
                "subscription confirmation logged with its SubscribeURL; not confirmed (auth.ses_auto_confirm is off)"
                    .into(),
            ),
        }));
    }
    match state.sns().confirm(url).await {
        Ok(()) => {
            tracing::info!(topic = %message.topic_arn, "SNS subscription confirmed");
            Ok(Json(ProviderResponse {
                results: Vec::new(),
                note: Some("subscription confirmed".into()),
            }))
        }
        Err(SnsError::NotSns(why)) => Err(provider::bad_signature(PROVIDER, &why)),
        Err(e) => {
            tracing::warn!(topic = %message.topic_arn, subscribe_url = url, error = %e, "SNS subscription could not be confirmed");
            Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                "subscription_not_confirmed",
                "the subscription could not be confirmed; SNS sends the confirmation again",
            ))
        }
    }
}

/// The events of one SES notification: one per recipient it names (bounces, complaints,
/// deliveries, delays), else one about the email.
pub fn events_of(n: &Value) -> Vec<ProviderEvent> {
    let kind = text(n, "eventType")
        .or_else(|| text(n, "notificationType"))
        .unwrap_or("unknown");
    let mail = n.get("mail").unwrap_or(&Value::Null);
    let refs = refs_of(mail);
    let one = |effect: Option<Effect>, detail: &Value| {
        let mut e = ProviderEvent::new(kind, refs.clone());
        e.effect = effect;
        e.at = time(detail, "timestamp").unwrap_or(e.at);
        vec![e]
    };
    let per_recipient = |detail: &Value, list: &str, effect: &dyn Fn(&Value) -> Option<Effect>| {
        let recipients = detail.get(list).and_then(Value::as_array);
        let mut events: Vec<ProviderEvent> = recipients
            .into_iter()
            .flatten()
            .map(|r| {
                let mut e = ProviderEvent::new(kind, refs.clone());
                // Delivery lists addresses; the others, objects with `emailAddress`.
                e.recipient = r
                    .as_str()
                    .or_else(|| text(r, "emailAddress"))
                    .map(str::to_string);
                e.effect = effect(r);
                e.at = time(detail, "timestamp").unwrap_or(e.at);
                e
            })
            .collect();
        if events.is_empty() {
            events = one(effect(&Value::Null), detail);
        }
        events
    };
    let detail = |key: &str| n.get(key).unwrap_or(&Value::Null);
    match kind {
        "Bounce" => {
            let b = detail("bounce");
            per_recipient(b, "bouncedRecipients", &|r| Some(bounce_effect(b, r)))
        }
        "Complaint" => {
            let c = detail("complaint");
            // A recipient's "this is not spam" feedback is no complaint.
            let effect = (text(c, "complaintFeedbackType") != Some("not-spam"))
                .then_some(Effect::Complained);
            per_recipient(c, "complainedRecipients", &|_| effect.clone())
        }
        "Delivery" => per_recipient(detail("delivery"), "recipients", &|_| {
            Some(Effect::Delivered)
        }),
        "DeliveryDelay" => {
            let d = detail("deliveryDelay");
            per_recipient(d, "delayedRecipients", &|r| {
                Some(Effect::Deferred {
                    reason: text(r, "diagnosticCode")
                        .or_else(|| text(d, "delayType"))
                        .unwrap_or("delayed")
                        .to_string(),
                })
            })
        }
        "Open" => one(Some(Effect::Opened), detail("open")),
        "Click" => one(Some(Effect::Clicked), detail("click")),
        "Reject" => {
            let reason = text(detail("reject"), "reason").unwrap_or("no reason given");
            one(
                Some(Effect::Failed {
                    reason: format!("rejected by SES: {reason}"),
                    code: None,
                }),
                &Value::Null,
            )
        }
        "Rendering Failure" => {
            let reason = text(detail("failure"), "errorMessage").unwrap_or("no reason given");
            one(
                Some(Effect::Failed {
                    reason: format!("SES could not render the template: {reason}"),
                    code: None,
                }),
                &Value::Null,
            )
        }
        "Subscription" => {
            let s = detail("subscription");
            let mut events = one(subscription_effect(s), s);
            // The contact is the email's recipient.
            events[0].recipient = mail
                .get("destination")
                .and_then(Value::as_array)
                .and_then(|d| d.first())
                .and_then(Value::as_str)
                .map(str::to_string);
            events
        }
        _ => one(None, &Value::Null),
    }
}

/// SES bounce types (`bounceType` / `bounceSubType`): Permanent is the recipient's (hard),
/// Transient and Undetermined soft, except the transient refusals of the message itself
/// (size, content, attachment), which are not the recipient's fault.
fn bounce_effect(bounce: &Value, recipient: &Value) -> Effect {
    let kind = text(bounce, "bounceType").unwrap_or("Undetermined");
    let sub = text(bounce, "bounceSubType").unwrap_or("Undetermined");
    let reason = text(recipient, "diagnosticCode")
        .map(str::to_string)
        .unwrap_or_else(|| format!("{kind} bounce ({sub})"));
    let code = text(recipient, "status").map(str::to_string);
    match (kind, sub) {
        ("Transient", "MessageTooLarge" | "ContentRejected" | "AttachmentRejected") => {
            Effect::Failed { reason, code }
        }
        ("Permanent", _) => Effect::Bounced {
            kind: BounceKind::Hard,
            reason,
            code,
        },
        _ => Effect::Bounced {
            kind: BounceKind::Soft,
            reason,
            code,
        },
    }
}

/// SES subscription management: opting out of everything, or of a topic (our category of
/// the email it came from).
fn subscription_effect(s: &Value) -> Option<Effect> {
    let prefs = s.get("newTopicPreferences")?;
    if prefs.get("unsubscribeAll") == Some(&Value::Bool(true)) {
        return Some(Effect::Unsubscribed(Scope::All));
    }
    let opted_out = prefs
        .get("topicSubscriptionStatus")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|t| text(t, "subscriptionStatus") == Some("OptOut"));
    opted_out.then_some(Effect::Unsubscribed(Scope::EmailCategory))
}

/// How the SES `mail` object names the email.
fn refs_of(mail: &Value) -> Vec<RowRef> {
    let mut refs = Vec::new();
    // Tags are lists of values: {"email_id": ["..."]}.
    let tag = mail
        .get("tags")
        .and_then(|t| t.get("email_id"))
        .and_then(Value::as_array)
        .and_then(|v| v.first())
        .map(|id| serde_json::json!({ "email_id": id }));
    refs.extend(provider::email_id_in(tag.as_ref()));
    if let Some(id) = mail.get("commonHeaders").and_then(|h| text(h, "messageId")) {
        refs.push(RowRef::MessageId(id.to_string()));
    }
    let header = mail
        .get("headers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|h| text(h, "name").is_some_and(|n| n.eq_ignore_ascii_case("message-id")))
        .and_then(|h| text(h, "value"));
    if let Some(id) = header {
        refs.push(RowRef::MessageId(id.to_string()));
    }
    if let Some(id) = text(mail, "messageId") {
        refs.push(RowRef::ProviderMessageId(id.to_string()));
    }
    refs
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bounce_types_map_as_ses_documents_them() {
        let r = json!({"emailAddress": "a@b.example", "status": "5.1.1", "diagnosticCode": "smtp; 550 5.1.1 user unknown"});
        let hard = bounce_effect(
            &json!({"bounceType": "Permanent", "bounceSubType": "General"}),
            &r,
        );
        assert!(
            matches!(hard, Effect::Bounced { kind: BounceKind::Hard, ref code, .. } if code.as_deref() == Some("5.1.1"))
        );
        let soft = bounce_effect(
            &json!({"bounceType": "Transient", "bounceSubType": "MailboxFull"}),
            &r,
        );
        assert!(matches!(
            soft,
            Effect::Bounced {
                kind: BounceKind::Soft,
                ..
            }
        ));
        let content = bounce_effect(
            &json!({"bounceType": "Transient", "bounceSubType": "ContentRejected"}),
            &r,
        );
        assert!(matches!(content, Effect::Failed { .. }));
        let unknown = bounce_effect(&json!({"bounceType": "Undetermined"}), &json!({}));
        assert!(
            matches!(unknown, Effect::Bounced { kind: BounceKind::Soft, ref reason, .. } if reason.contains("Undetermined"))
        );
    }

    #[test]
    fn every_recipient_of_a_notification_is_an_event() {
        let n = json!({
            "notificationType": "Bounce",
            "bounce": {"bounceType": "Permanent", "bounceSubType": "General",
                "timestamp": "2016-01-27T14:59:38.237Z",
                "bouncedRecipients": [{"emailAddress": "a@example.com"}, {"emailAddress": "b@example.com"}]},
            "mail": {"messageId": "0000014644fe5ef6-9a483358", "tags": {"email_id": ["9a0c6c47-2b2c-4cb1-9e5c-5d9d0f2f6b10"]},
                "commonHeaders": {"messageId": "<9a0c6c47-2b2c-4cb1-9e5c-5d9d0f2f6b10@adoptdontshop.com>"}}
        });
        let events = events_of(&n);
        assert_eq!(events.len(), 2);
        assert_eq!(events[1].recipient.as_deref(), Some("b@example.com"));
        assert_eq!(events[0].at.timestamp(), 1453906778);
        assert_eq!(events[0].refs.len(), 3);
        assert!(matches!(events[0].refs[0], RowRef::EmailId(_)));
        assert!(
            matches!(&events[0].refs[2], RowRef::ProviderMessageId(id) if id == "0000014644fe5ef6-9a483358")
        );
        let not_spam = json!({"notificationType": "Complaint", "complaint": {"complaintFeedbackType": "not-spam",
            "complainedRecipients": [{"emailAddress": "a@example.com"}]}, "mail": {}});
        assert_eq!(events_of(&not_spam)[0].effect, None);
        let send = events_of(&json!({"eventType": "Send", "mail": {}, "send": {}}));
        assert_eq!((send.len(), send[0].effect.clone()), (1, None));
    }

    #[test]
    fn subscription_preferences_become_unsubscribes() {
        let all = json!({"newTopicPreferences": {"unsubscribeAll": true}});
        assert_eq!(
            subscription_effect(&all),
            Some(Effect::Unsubscribed(Scope::All))
        );
        let topic = json!({"newTopicPreferences": {"unsubscribeAll": false,
            "topicSubscriptionStatus": [{"topicName": "news", "subscriptionStatus": "OptOut"}]}});
        assert_eq!(
            subscription_effect(&topic),
            Some(Effect::Unsubscribed(Scope::EmailCategory))
        );
        let opt_in = json!({"newTopicPreferences": {"topicSubscriptionStatus": [{"subscriptionStatus": "OptIn"}]}});
        assert_eq!(subscription_effect(&opt_in), None);
    }
}
