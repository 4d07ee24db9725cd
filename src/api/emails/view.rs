//! How an `email_queue` row is shown by `GET /v1/emails[/{id}]`.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::queue::{EmailPriority, EmailRecord, EmailStatus, EmailType};

/// One email. Times are RFC 3339 UTC.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EmailView {
    pub id: Uuid,
    pub status: EmailStatus,
    #[serde(rename = "type")]
    pub email_type: EmailType,
    pub priority: EmailPriority,
    pub to: String,
    pub to_name: Option<String>,
    pub from: String,
    pub subject: String,
    pub template_id: Option<Uuid>,
    /// Failed attempts so far (`current_retries`).
    pub attempts: i32,
    pub max_retries: Option<i32>,
    pub failure_reason: Option<String>,
    /// Opens, clicks, delivery and bounce details.
    #[schema(value_type = Object)]
    pub tracking: Value,
    #[schema(value_type = Object)]
    pub metadata: Value,
    pub tags: Vec<String>,
    pub campaign_id: Option<String>,
    pub user_id: Option<Uuid>,
    pub provider_id: Option<String>,
    pub provider_message_id: Option<String>,
    pub scheduled_for: Option<DateTime<Utc>>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    pub sent_at: Option<DateTime<Utc>>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
}

/// A page of emails.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EmailList {
    pub emails: Vec<EmailView>,
    /// Pass as `cursor` for the next page; null when this is the last.
    pub next_cursor: Option<String>,
}

/// The document promises objects: a column another service filled with something else
/// (such a row ends `failed`, its `failure_reason` saying what) is shown as `{}`.
fn object(v: Option<Value>) -> Value {
    match v {
        Some(v @ Value::Object(_)) => v,
        _ => Value::Object(Default::default()),
    }
}

fn utc(t: Option<NaiveDateTime>) -> Option<DateTime<Utc>> {
    t.map(|t| t.and_utc())
}

impl From<EmailRecord> for EmailView {
    fn from(r: EmailRecord) -> EmailView {
        EmailView {
            id: r.email_id,
            status: r.status,
            email_type: r.email_type,
            priority: r.priority,
            to: r.to_email,
            to_name: r.to_name,
            from: r.from_email,
            subject: r.subject,
            template_id: r.template_id,
            attempts: r.current_retries.unwrap_or(0),
            max_retries: r.max_retries,
            failure_reason: r.failure_reason,
            tracking: object(r.tracking),
            metadata: object(r.metadata),
            tags: r.tags.unwrap_or_default(),
            campaign_id: r.campaign_id,
            user_id: r.user_id,
            provider_id: r.provider_id,
            provider_message_id: r.provider_message_id,
            scheduled_for: utc(r.scheduled_for),
            last_attempt_at: utc(r.last_attempt_at),
            sent_at: utc(r.sent_at),
            created_at: utc(r.created_at),
            updated_at: utc(r.updated_at),
        }
    }
}
