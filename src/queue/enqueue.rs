//! Inserting rows into `email_queue`, for adopt-worker's own emails (jobs, API, test sends).
//! Other services insert with plain SQL; this is the same INSERT.

use chrono::NaiveDateTime;
use serde_json::Value;
use sqlx::PgExecutor;
use uuid::Uuid;

use super::{EmailPriority, EmailType};

/// A row to enqueue. Either rendered content (`html_content` non-empty) or a template
/// (`template_id` + `template_data`, empty subject and HTML: rendered at send time).
#[derive(Debug, Clone)]
pub struct NewEmail {
    pub from_email: String,
    pub from_name: Option<String>,
    pub to_email: String,
    pub to_name: Option<String>,
    pub cc_emails: Vec<String>,
    pub bcc_emails: Vec<String>,
    pub reply_to_email: Option<String>,
    pub subject: String,
    pub html_content: String,
    pub text_content: Option<String>,
    pub template_id: Option<Uuid>,
    pub template_data: Option<Value>,
    pub email_type: EmailType,
    pub priority: EmailPriority,
    pub scheduled_for: Option<NaiveDateTime>,
    pub max_retries: Option<i32>,
    pub metadata: Value,
    pub campaign_id: Option<String>,
    pub user_id: Option<Uuid>,
    pub created_by: Option<Uuid>,
    pub tags: Vec<String>,
}

impl NewEmail {
    /// A template email with everything else defaulted.
    pub fn from_template(
        from_email: &str,
        from_name: Option<&str>,
        to_email: &str,
        template_id: Uuid,
        data: Value,
        email_type: EmailType,
    ) -> NewEmail {
        NewEmail {
            from_email: from_email.to_string(),
            from_name: from_name.map(str::to_string),
            to_email: to_email.to_string(),
            to_name: None,
            cc_emails: Vec::new(),
            bcc_emails: Vec::new(),
            reply_to_email: None,
            subject: String::new(),
            html_content: String::new(),
            text_content: None,
            template_id: Some(template_id),
            template_data: Some(data),
            email_type,
            priority: EmailPriority::Normal,
            scheduled_for: None,
            max_retries: None,
            metadata: Value::Object(Default::default()),
            campaign_id: None,
            user_id: None,
            created_by: None,
            tags: Vec::new(),
        }
    }
}

/// Inserts one row (status `queued`) and returns its `email_id`. The NOTIFY trigger wakes
/// the workers at commit.
pub async fn enqueue<'e>(exec: impl PgExecutor<'e>, e: &NewEmail) -> Result<Uuid, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO email_queue (from_email, from_name, to_email, to_name, cc_emails, bcc_emails,
             reply_to_email, subject, html_content, text_content, template_id, template_data, type,
             priority, scheduled_for, max_retries, current_retries, metadata, campaign_id, user_id,
             created_by, tags, created_at, updated_at)
         VALUES ($1, $2, $3, $4, NULLIF($5, '{}'::text[]), NULLIF($6, '{}'::text[]), $7, $8, $9, $10,
             $11, $12, $13, $14, $15, $16, 0, $17, $18, $19, $20, NULLIF($21, '{}'::text[]),
             now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC')
         RETURNING email_id",
    )
    .bind(&e.from_email)
    .bind(&e.from_name)
    .bind(&e.to_email)
    .bind(&e.to_name)
    .bind(&e.cc_emails)
    .bind(&e.bcc_emails)
    .bind(&e.reply_to_email)
    .bind(&e.subject)
    .bind(&e.html_content)
    .bind(&e.text_content)
    .bind(e.template_id)
    .bind(&e.template_data)
    .bind(e.email_type)
    .bind(e.priority)
    .bind(e.scheduled_for)
    .bind(e.max_retries)
    .bind(&e.metadata)
    .bind(&e.campaign_id)
    .bind(e.user_id)
    .bind(e.created_by)
    .bind(&e.tags)
    .fetch_one(exec)
    .await
}
