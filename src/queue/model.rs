//! The `email_queue` row as the worker sees it, and the seed's enums.

use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Deepest JSON nesting a claimed row's `template_data`/`metadata` may have (the claim
/// statement's `'strict $.**{64 to last}'` must match it).
pub const MAX_JSON_DEPTH: usize = 64;

/// `email_type_enum`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[sqlx(type_name = "email_type_enum", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum EmailType {
    Transactional,
    Notification,
    Marketing,
    System,
}

impl EmailType {
    pub fn as_str(self) -> &'static str {
        match self {
            EmailType::Transactional => "transactional",
            EmailType::Notification => "notification",
            EmailType::Marketing => "marketing",
            EmailType::System => "system",
        }
    }

    /// Marketing and notification mail honours unsubscribes; the rest always goes.
    pub fn is_optional(self) -> bool {
        matches!(self, EmailType::Marketing | EmailType::Notification)
    }
}

/// `email_priority_enum`; declared low..urgent, so `ORDER BY priority DESC` is urgent first.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    sqlx::Type,
    utoipa::ToSchema,
)]
#[sqlx(type_name = "email_priority_enum", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum EmailPriority {
    Low,
    Normal,
    High,
    Urgent,
}

impl EmailPriority {
    pub fn as_str(self) -> &'static str {
        match self {
            EmailPriority::Low => "low",
            EmailPriority::Normal => "normal",
            EmailPriority::High => "high",
            EmailPriority::Urgent => "urgent",
        }
    }
}

/// `email_status_enum`: the states of a row's life (see DESIGN.md).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[sqlx(type_name = "email_status_enum", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum EmailStatus {
    Queued,
    Sending,
    Sent,
    Delivered,
    Opened,
    Clicked,
    Failed,
    Bounced,
    Unsubscribed,
}

impl EmailStatus {
    pub const ALL: [EmailStatus; 9] = [
        EmailStatus::Queued,
        EmailStatus::Sending,
        EmailStatus::Sent,
        EmailStatus::Delivered,
        EmailStatus::Opened,
        EmailStatus::Clicked,
        EmailStatus::Failed,
        EmailStatus::Bounced,
        EmailStatus::Unsubscribed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EmailStatus::Queued => "queued",
            EmailStatus::Sending => "sending",
            EmailStatus::Sent => "sent",
            EmailStatus::Delivered => "delivered",
            EmailStatus::Opened => "opened",
            EmailStatus::Clicked => "clicked",
            EmailStatus::Failed => "failed",
            EmailStatus::Bounced => "bounced",
            EmailStatus::Unsubscribed => "unsubscribed",
        }
    }
}

/// A row this process has claimed (`status = 'sending'`). `claimed_at` is the
/// `last_attempt_at` the claim wrote: every later transition is fenced on it, so a worker
/// whose lease was taken over cannot overwrite a newer attempt's result.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClaimedEmail {
    pub email_id: Uuid,
    pub template_id: Option<Uuid>,
    pub from_email: String,
    pub from_name: Option<String>,
    pub to_email: String,
    pub to_name: Option<String>,
    pub cc_emails: Option<Vec<String>>,
    pub bcc_emails: Option<Vec<String>>,
    pub reply_to_email: Option<String>,
    pub subject: String,
    pub html_content: String,
    pub text_content: Option<String>,
    pub template_data: Option<serde_json::Value>,
    #[sqlx(rename = "type")]
    pub email_type: EmailType,
    pub priority: EmailPriority,
    pub max_retries: Option<i32>,
    pub current_retries: Option<i32>,
    #[sqlx(rename = "last_attempt_at")]
    pub claimed_at: NaiveDateTime,
    pub metadata: Option<serde_json::Value>,
    pub campaign_id: Option<String>,
    pub user_id: Option<Uuid>,
    pub created_at: Option<NaiveDateTime>,
    pub tags: Option<Vec<String>>,
    /// The JSON column nested deeper than [`MAX_JSON_DEPTH`] levels, if any: the claim
    /// returns it as NULL (serde_json refuses such depth, and one undecodable row would
    /// fail the whole batch) and the row fails with this as its reason.
    #[sqlx(default)]
    pub json_too_deep: Option<String>,
    /// The recipient's preferences, joined by the claim.
    #[sqlx(flatten)]
    pub recipient: crate::preferences::RecipientPrefs,
    /// This process's clock when it sent the claim statement (never after the claim
    /// itself): the row's lease runs from here. `None` for a row built by hand.
    #[sqlx(skip)]
    pub claim_sent_at: Option<std::time::Instant>,
}

impl ClaimedEmail {
    /// Retries already scheduled (NULL counts as 0).
    pub fn retries(&self) -> i32 {
        self.current_retries.unwrap_or(0)
    }
}
