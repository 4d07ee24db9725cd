//! Rows held for a recipient's digest (`status = 'queued'`, `scheduled_for` = [`HELD_UNTIL`],
//! `metadata.digestHold`): what the digest job reads and every transition out of the hold.
//! The recipient of a row is the gate's: its `user_id`, else the user whose email matches
//! `to_email`.
//!
//! [`HELD_UNTIL`]: super::HELD_UNTIL

use chrono::NaiveDateTime;
use serde_json::Value;
use sqlx::PgExecutor;
use uuid::Uuid;

/// A held notification, as the digest shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct HeldEmail {
    pub email_id: Uuid,
    pub subject: String,
    pub html_content: String,
    pub text_content: Option<String>,
    pub template_data: Option<Value>,
    pub metadata: Option<Value>,
    pub created_at: Option<NaiveDateTime>,
    /// The template's description, for template rows not rendered yet (empty subject).
    pub template_description: Option<String>,
}

/// The user's held rows (those sent to their address: a row's `user_id` does not make it
/// anyone else's), oldest first, at most `limit`, locked until the transaction ends
/// so that a concurrent digest cannot take them too. The literal is [`super::HELD_UNTIL`]:
/// it lets the scan use the `scheduled_for` index.
pub async fn held_for_user<'e>(
    exec: impl PgExecutor<'e>,
    _user_id: Uuid,
    email: &str,
    limit: i64,
) -> Result<Vec<HeldEmail>, sqlx::Error> {
    sqlx::query_as(
        "SELECT q.email_id, q.subject, q.html_content, q.text_content, q.template_data, q.metadata,
                q.created_at, t.description AS template_description
         FROM email_queue q
         LEFT JOIN email_templates t ON t.template_id = q.template_id
         WHERE q.scheduled_for = '9999-12-31 00:00:00' AND q.status = 'queued'
           AND q.metadata ? 'digestHold'
           AND lower(q.to_email) = lower($1)
         ORDER BY q.created_at, q.email_id
         LIMIT $2
         FOR UPDATE OF q",
    )
    .bind(email)
    .bind(limit)
    .fetch_all(exec)
    .await
}

/// queued (held) → **sent**, delivered inside the digest `digest_email_id`:
/// `provider_id = 'digest'`, `metadata.digestEmailId`. Only rows still held change, so a row
/// is never carried by two digests.
pub async fn mark_sent_via_digest<'e>(
    exec: impl PgExecutor<'e>,
    email_ids: &[Uuid],
    digest_email_id: Uuid,
    at: NaiveDateTime,
) -> Result<u64, sqlx::Error> {
    if email_ids.is_empty() {
        return Ok(0);
    }
    let done = sqlx::query(
        "UPDATE email_queue SET
            status = 'sent',
            sent_at = $3,
            provider_id = 'digest',
            provider_message_id = NULL,
            scheduled_for = NULL,
            metadata = COALESCE(metadata, '{}') || jsonb_build_object('digestEmailId', $2::text),
            updated_at = $3
         WHERE email_id = ANY($1) AND status = 'queued' AND metadata ? 'digestHold'",
    )
    .bind(email_ids)
    .bind(digest_email_id)
    .bind(at)
    .execute(exec)
    .await?;
    Ok(done.rows_affected())
}

/// Held rows of recipients now on `immediate` are released: due at once, `digestHold`
/// removed, so the worker sends each on its own.
pub async fn release_held_for_immediate<'e>(
    exec: impl PgExecutor<'e>,
    at: NaiveDateTime,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE email_queue q SET scheduled_for = NULL, metadata = q.metadata - 'digestHold', updated_at = $1
         FROM email_preferences p
         WHERE q.scheduled_for = '9999-12-31 00:00:00' AND q.status = 'queued'
           AND q.metadata ? 'digestHold'
           AND p.user_id = (SELECT u.user_id FROM users u
                 WHERE lower(u.email) = lower(q.to_email) AND u.deleted_at IS NULL
                 ORDER BY u.user_id = q.user_id DESC LIMIT 1)
           AND p.digest_frequency = 'immediate'",
    )
    .bind(at)
    .execute(exec)
    .await?;
    Ok(done.rows_affected())
}

/// Held rows of recipients now on `never` end **unsubscribed**, as the gate would have
/// ended them.
pub async fn unsubscribe_held_for_never<'e>(
    exec: impl PgExecutor<'e>,
    at: NaiveDateTime,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE email_queue q SET status = 'unsubscribed',
            failure_reason = 'recipient receives no notification email (digest_frequency = never)',
            updated_at = $1
         FROM email_preferences p
         WHERE q.scheduled_for = '9999-12-31 00:00:00' AND q.status = 'queued'
           AND q.metadata ? 'digestHold'
           AND p.user_id = (SELECT u.user_id FROM users u
                 WHERE lower(u.email) = lower(q.to_email) AND u.deleted_at IS NULL
                 ORDER BY u.user_id = q.user_id DESC LIMIT 1)
           AND p.digest_frequency = 'never'",
    )
    .bind(at)
    .execute(exec)
    .await?;
    Ok(done.rows_affected())
}
