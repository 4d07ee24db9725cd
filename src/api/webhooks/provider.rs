//! What the provider webhooks share (docs/bounces.md "Bounces and complaints"): an event in our terms
//! ([`ProviderEvent`]), finding the email it is about, applying a request's events in one
//! transaction with its replay key, the response, and the refusals (each counted in
//! `adopt_worker_provider_webhooks_refused_total`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::PgConnection;
use utoipa::ToSchema;
use uuid::Uuid;

use super::effects::{self, Effect, Report};
use super::{EventOutcome, unauthorized};
use crate::api::ApiState;
use crate::api::error::ApiError;
use crate::bounces::ingest::email_id_of_message_id;
use crate::metrics::{self, Provider, ProviderOutcome, ProviderRefusal};
use crate::queue::tracking;

/// How a provider's event names the email, tried in order until one names a row of ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowRef {
    /// Our `email_id`, echoed back in the provider's metadata.
    EmailId(Uuid),
    /// The `Message-ID` header we set (`<email_id@domain>`), with or without its brackets.
    MessageId(String),
    /// The provider's own message id, as the relay's reply gave it (`provider_message_id`).
    ProviderMessageId(String),
}

/// One event of a provider, in our terms.
#[derive(Debug, Clone)]
pub struct ProviderEvent {
    /// The provider's name for the event (`bounce`, `Delivery`, `failed` ...).
    pub event: String,
    pub refs: Vec<RowRef>,
    /// The address the event is about.
    pub recipient: Option<String>,
    /// None: an event we do not act on (`processed`, `accepted`, a SES `Send` ...).
    pub effect: Option<Effect>,
    pub at: DateTime<Utc>,
}

impl ProviderEvent {
    /// An event about the email `refs` names, for `recipient`; `at` defaults to now.
    pub fn new(event: impl Into<String>, refs: Vec<RowRef>) -> ProviderEvent {
        ProviderEvent {
            event: event.into(),
            refs,
            recipient: None,
            effect: None,
            at: Utc::now(),
        }
    }
}

/// What one event came to.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProviderEventResult {
    pub index: usize,
    /// The provider's name for the event.
    pub event: String,
    pub email_id: Option<Uuid>,
    pub outcome: EventOutcome,
}

/// The answer to a provider's webhook request.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProviderResponse {
    /// One per event, in the order received (an SNS message about several recipients
    /// gives one per recipient).
    pub results: Vec<ProviderEventResult>,
    /// What was done with a message that carries no event (an SNS subscription
    /// confirmation).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The route is off: 503 naming the key that turns it on.
pub fn disabled(provider: Provider, key: &str) -> ApiError {
    metrics::provider_refused(provider, ProviderRefusal::Disabled);
    ApiError::new(
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        "webhook_disabled",
        format!(
            "the {} webhook is off until {key} is configured",
            provider.as_str()
        ),
    )
}

/// Counts a refusal and returns its error.
pub fn refused(provider: Provider, reason: ProviderRefusal, error: ApiError) -> ApiError {
    metrics::provider_refused(provider, reason);
    error
}

/// 401 `invalid_signature`, counted.
pub fn bad_signature(provider: Provider, message: &str) -> ApiError {
    refused(
        provider,
        ProviderRefusal::Unauthorized,
        unauthorized("invalid_signature", message),
    )
}

/// `timestamp` (unix seconds) is within `tolerance_secs` of now, else 401
/// `invalid_timestamp`, counted.
pub fn check_window(
    provider: Provider,
    timestamp: i64,
    tolerance_secs: u64,
) -> Result<(), ApiError> {
    let skew = (Utc::now().timestamp() - timestamp).unsigned_abs();
    if skew > tolerance_secs {
        return Err(refused(
            provider,
            ProviderRefusal::Stale,
            unauthorized(
                "invalid_timestamp",
                &format!("the timestamp is {skew} s from now; at most {tolerance_secs} s allowed"),
            ),
        ));
    }
    Ok(())
}

/// The replay key of a request: the provider's name and a digest of what identifies it (a
/// token, a message id, the signed bytes), kept in `api_webhook_signatures` beside our own.
pub fn replay_key(provider: Provider, parts: &[&[u8]]) -> Vec<u8> {
    let mut digest = Sha256::new();
    for part in parts {
        digest.update((part.len() as u64).to_be_bytes());
        digest.update(part);
    }
    let mut key = format!("{}:", provider.as_str()).into_bytes();
    key.extend_from_slice(&digest.finalize());
    key
}

/// Applies `events` in one transaction with `replay_key` (409 `replayed_request` when that
/// request was already accepted), and counts each event's outcome.
pub async fn apply_once(
    state: &ApiState,
    provider: Provider,
    replay_key: &[u8],
    events: &[ProviderEvent],
) -> Result<Vec<ProviderEventResult>, ApiError> {
    let mut tx = match super::begin_once(state, replay_key).await {
        Ok(tx) => tx,
        Err(e) if e.code == "replayed_request" => {
            return Err(refused(provider, ProviderRefusal::Replayed, e));
        }
        Err(e) => return Err(e),
    };
    let threshold = state.settings().bounce.soft_bounce_threshold;
    let reported_by = reported_by(provider);
    let mut results = Vec::with_capacity(events.len());
    for (index, event) in events.iter().enumerate() {
        let email_id = find(&mut tx, &event.refs).await?;
        let outcome = match (email_id, &event.effect) {
            (None, _) => EventOutcome::NotFound,
            (Some(_), None) => EventOutcome::Ignored,
            (Some(id), Some(effect)) => {
                let report = Report {
                    effect: effect.clone(),
                    at: event.at,
                    recipient: event.recipient.as_deref(),
                    reported_by,
                    via: provider.as_str(),
                };
                effects::apply(&mut tx, id, &report, threshold).await?
            }
        };
        results.push(ProviderEventResult {
            index,
            event: event.event.clone(),
            email_id,
            outcome,
        });
    }
    tx.commit().await?;
    for r in &results {
        metrics::provider_event(
            provider,
            match r.outcome {
                EventOutcome::Applied => ProviderOutcome::Applied,
                EventOutcome::Ignored => ProviderOutcome::Ignored,
                EventOutcome::NotFound => ProviderOutcome::NotFound,
            },
        );
    }
    let unmatched = results
        .iter()
        .filter(|r| r.outcome == EventOutcome::NotFound)
        .count();
    tracing::info!(
        provider = provider.as_str(),
        events = results.len(),
        unmatched,
        "provider webhook applied"
    );
    state.sweep_expired();
    Ok(results)
}

/// Who reported it, in `failure_reason`.
fn reported_by(provider: Provider) -> &'static str {
    match provider {
        Provider::Ses => "Amazon SES",
        Provider::Sendgrid => "SendGrid",
        Provider::Postmark => "Postmark",
        Provider::Mailgun => "Mailgun",
    }
}

/// The first of `refs` that names a row of ours.
async fn find(conn: &mut PgConnection, refs: &[RowRef]) -> Result<Option<Uuid>, sqlx::Error> {
    for r in refs {
        let found = match r {
            RowRef::EmailId(id) => existing(conn, *id).await?,
            RowRef::MessageId(message_id) => {
                let bare = message_id
                    .trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>');
                match email_id_of_message_id(bare) {
                    Some(id) => existing(conn, id).await?,
                    // A relay that took our Message-ID as its id stored it with brackets.
                    None if !bare.is_empty() => {
                        tracking::find_by_provider_message_id(&mut *conn, &format!("<{bare}>"))
                            .await?
                    }
                    None => None,
                }
            }
            RowRef::ProviderMessageId(pmid) if !pmid.trim().is_empty() => {
                tracking::find_by_provider_message_id(&mut *conn, pmid.trim()).await?
            }
            RowRef::ProviderMessageId(_) => None,
        };
        if found.is_some() {
            return Ok(found);
        }
    }
    Ok(None)
}

async fn existing(conn: &mut PgConnection, id: Uuid) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar("SELECT email_id FROM email_queue WHERE email_id = $1")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await
}

/// `email_id` of a provider's custom-data object (Postmark `Metadata`, Mailgun
/// `user-variables`, SendGrid custom arguments, SES tags), when it is an id.
pub fn email_id_in(metadata: Option<&serde_json::Value>) -> Option<RowRef> {
    metadata?
        .get("email_id")?
        .as_str()
        .and_then(|s| Uuid::parse_str(s.trim()).ok())
        .map(RowRef::EmailId)
}

/// A string field of a JSON object, trimmed, when present and not empty.
pub fn text<'v>(v: &'v serde_json::Value, key: &str) -> Option<&'v str> {
    v.get(key)
        .and_then(serde_json::Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// An RFC 3339 time of a JSON object, when present and valid.
pub fn time(v: &serde_json::Value, key: &str) -> Option<DateTime<Utc>> {
    text(v, key)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// Unix seconds (integer or fractional, number or string) as a time.
pub fn unix_time(v: Option<&serde_json::Value>) -> Option<DateTime<Utc>> {
    let secs = match v? {
        serde_json::Value::Number(n) => n.as_f64()?,
        serde_json::Value::String(s) => s.trim().parse().ok()?,
        _ => return None,
    };
    if !(0.0..=1e11).contains(&secs) {
        return None;
    }
    DateTime::from_timestamp(secs.trunc() as i64, (secs.fract() * 1e9) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn replay_keys_name_the_provider_and_cannot_be_spliced() {
        let a = replay_key(Provider::Mailgun, &[b"ab", b"c"]);
        let b = replay_key(Provider::Mailgun, &[b"a", b"bc"]);
        assert_ne!(a, b);
        assert!(a.starts_with(b"mailgun:"));
        assert_ne!(a, replay_key(Provider::Sendgrid, &[b"ab", b"c"]));
    }

    #[test]
    fn times_are_read_leniently() {
        assert_eq!(
            unix_time(Some(&json!(1521472262.908181))).map(|t| t.timestamp()),
            Some(1521472262)
        );
        assert_eq!(
            unix_time(Some(&json!("1529006854"))).map(|t| t.timestamp()),
            Some(1529006854)
        );
        assert_eq!(unix_time(Some(&json!(-1))), None);
        assert_eq!(unix_time(Some(&json!(1e300))), None);
        assert_eq!(unix_time(Some(&json!({}))), None);
        let v = json!({"at": "2019-11-05T16:33:54.9070259Z", "bad": "yesterday"});
        assert_eq!(time(&v, "at").map(|t| t.timestamp()), Some(1572971634));
        assert_eq!(time(&v, "bad"), None);
    }
}
