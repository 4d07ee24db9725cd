//! The `email_queue` row as the worker sees it, and the seed's enums.

use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use crate::db::lenient::MAX_JSON_DEPTH;
use crate::db::lenient::{JsonText, TextArray, without_nulls};

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

/// `email_status_enum`: the states of a row's life (see docs/integrating.md, "States").
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

/// Refused alike by the API (`template` with `subject`/`html`/`text`) and by the worker (a
/// row with `template_id` and its own `subject`, `html_content` or `text_content`).
pub const CONTENT_OR_TEMPLATE: &str =
    "give either rendered content (subject, html, text) or a template, not both";

/// Why a `metadata` value cannot be used, in the words the API and the worker share:
/// it must be a JSON object (or null, or absent).
pub fn metadata_problem(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::Object(_) | serde_json::Value::Null => None,
        other => Some(format!(
            "must be a JSON object, got {}",
            crate::db::lenient::json_kind(other)
        )),
    }
}

/// What is wrong with a row's content as the API would see it: a template row that also
/// carries content of its own, or a row with neither content nor a template. A template
/// row the worker rendered before (a retry: `html_content` written together with
/// `metadata.renderedByWorker = true`) is sent as rendered; a service's own `templateVersion`
/// pin does not make its content the worker's.
fn content_problem(
    template_id: Option<Uuid>,
    subject: &str,
    html: &str,
    text: Option<&str>,
    template_data: bool,
    metadata: Option<&serde_json::Value>,
) -> Option<String> {
    let given = |v: &str| !v.trim().is_empty();
    let own: Vec<&str> = [
        ("subject", given(subject)),
        ("html_content", given(html)),
        ("text_content", text.is_some_and(given)),
    ]
    .into_iter()
    .filter_map(|(column, set)| set.then_some(column))
    .collect();
    match template_id {
        Some(_) => {
            let rendered_before = given(html)
                && metadata.is_some_and(|m| {
                    m.get(super::RENDERED_BY_WORKER) == Some(&serde_json::Value::Bool(true))
                });
            (!own.is_empty() && !rendered_before).then(|| {
                format!(
                    "{CONTENT_OR_TEMPLATE}: template_id is set, and so is {}",
                    own.join(" and ")
                )
            })
        }
        None if own.is_empty() => Some(format!(
            "the row has neither content nor a template: subject, html_content and \
             text_content are empty and template_id is NULL{}",
            if template_data {
                " although template_data is set (did the template's name match no row?)"
            } else {
                ""
            }
        )),
        // Rendered content of its own: what the API asks of the same content, in its words.
        None if !given(subject) => Some("subject: must not be empty".to_string()),
        None if !given(html) && !text.is_some_and(given) => {
            Some("html: html and/or text is required and must not be empty".to_string())
        }
        None => None,
    }
}

/// A row this process has claimed (`status = 'sending'`). `claimed_at` is the
/// `last_attempt_at` the claim wrote: every later transition is fenced on it, so a worker
/// whose lease was taken over cannot overwrite a newer attempt's result.
#[derive(Debug, Clone)]
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
    pub email_type: EmailType,
    pub priority: EmailPriority,
    pub max_retries: Option<i32>,
    pub current_retries: Option<i32>,
    pub claimed_at: NaiveDateTime,
    pub metadata: Option<serde_json::Value>,
    pub campaign_id: Option<String>,
    pub user_id: Option<Uuid>,
    /// NULL, or not finite (`'-infinity'`) in the row.
    pub created_at: Option<NaiveDateTime>,
    pub tags: Option<Vec<String>>,
    /// Why the row cannot be sent as stored, naming the column (a JSON number out of range,
    /// JSON nested deeper than [`MAX_JSON_DEPTH`], a NULL Cc/Bcc address): the claim reads
    /// every column leniently so that such a row fails alone, with this as its reason.
    pub undecodable: Option<String>,
    /// The recipient's preferences, joined by the claim.
    pub recipient: super::recipient::RecipientPrefs,
    /// This process's clock when it sent the claim statement (never after the claim
    /// itself): the row's lease runs from here. `None` for a row built by hand.
    pub claim_sent_at: Option<std::time::Instant>,
}

/// A claimed row as the claim statement returns it: JSON as text, arrays with nullable
/// elements, timestamps finite or NULL, so that decoding never fails (see
/// [`crate::db::lenient`]); [`ClaimedEmail::from`] finds what is wrong with it.
#[derive(sqlx::FromRow)]
pub(super) struct ClaimedRow {
    email_id: Uuid,
    template_id: Option<Uuid>,
    from_email: String,
    from_name: Option<String>,
    to_email: String,
    to_name: Option<String>,
    cc_emails: Option<TextArray>,
    bcc_emails: Option<TextArray>,
    reply_to_email: Option<String>,
    subject: String,
    html_content: String,
    text_content: Option<String>,
    template_data: Option<JsonText>,
    #[sqlx(rename = "type")]
    email_type: EmailType,
    priority: EmailPriority,
    max_retries: Option<i32>,
    current_retries: Option<i32>,
    last_attempt_at: NaiveDateTime,
    metadata: Option<JsonText>,
    campaign_id: Option<String>,
    user_id: Option<Uuid>,
    created_at: Option<NaiveDateTime>,
    tags: Option<TextArray>,
    #[sqlx(flatten)]
    recipient: super::recipient::RecipientPrefs,
}

impl From<ClaimedRow> for ClaimedEmail {
    fn from(row: ClaimedRow) -> ClaimedEmail {
        let mut problems: Vec<String> = Vec::new();
        let mut json = |column: &str, value: Option<JsonText>| match value.map(|j| j.0) {
            None => None,
            Some(Ok(v)) => Some(v),
            Some(Err(why)) => {
                problems.push(format!("{column} {why}"));
                None
            }
        };
        let template_data = json("template_data", row.template_data);
        let metadata = json("metadata", row.metadata);
        if let Some(why) = metadata.as_ref().and_then(metadata_problem) {
            problems.push(format!("metadata {why}"));
        }
        if let Some(why) = content_problem(
            row.template_id,
            &row.subject,
            &row.html_content,
            row.text_content.as_deref(),
            template_data.as_ref().is_some_and(|d| !d.is_null()),
            metadata.as_ref(),
        ) {
            problems.push(why);
        }
        if let Some(why) = row.recipient.category_prefs_problem() {
            problems.push(format!(
                "the recipient's email_preferences.preferences {why}"
            ));
        }
        let (cc_emails, cc_null) = without_nulls(row.cc_emails);
        let (bcc_emails, bcc_null) = without_nulls(row.bcc_emails);
        for (column, had_null) in [("cc_emails", cc_null), ("bcc_emails", bcc_null)] {
            if had_null {
                problems.push(format!("{column} holds a NULL address"));
            }
        }
        // A NULL tag changes nothing that is sent: dropped.
        let (tags, _) = without_nulls(row.tags);
        ClaimedEmail {
            email_id: row.email_id,
            template_id: row.template_id,
            from_email: row.from_email,
            from_name: row.from_name,
            to_email: row.to_email,
            to_name: row.to_name,
            cc_emails,
            bcc_emails,
            reply_to_email: row.reply_to_email,
            subject: row.subject,
            html_content: row.html_content,
            text_content: row.text_content,
            template_data,
            email_type: row.email_type,
            priority: row.priority,
            max_retries: row.max_retries,
            current_retries: row.current_retries,
            claimed_at: row.last_attempt_at,
            metadata,
            campaign_id: row.campaign_id,
            user_id: row.user_id,
            created_at: row.created_at,
            tags,
            undecodable: (!problems.is_empty()).then(|| problems.join("; ")),
            recipient: row.recipient,
            claim_sent_at: None,
        }
    }
}

impl ClaimedEmail {
    /// Retries already scheduled (NULL counts as 0).
    pub fn retries(&self) -> i32 {
        self.current_retries.unwrap_or(0)
    }
}
