//! Rows held for a recipient's digest (`status = 'queued'`, `scheduled_for` = [`HELD_UNTIL`],
//! `metadata.digestHold`): what the digest job reads and every transition out of the hold.
//! The recipient of a row is the gate's: its `user_id`, else the user whose email matches
//! `to_email`.
//!
//! [`HELD_UNTIL`]: super::HELD_UNTIL

use chrono::NaiveDateTime;
use serde_json::Value;
use sqlx::PgExecutor;

use crate::db::lenient::JsonText;
use uuid::Uuid;

/// The recipient user of a held row `q`, as the gate decides it: its `user_id` when that
/// user is current and owns `to_email`, else the user whose email matches `to_email` (a
/// live one first, else the most recently deleted one: a deleted user's address is still
/// that user's, so their rows are treated alike).
const RECIPIENT: &str = "COALESCE(
    (SELECT u.user_id FROM users u
     WHERE u.user_id = q.user_id AND lower(u.email) = lower(q.to_email) AND u.deleted_at IS NULL),
    (SELECT u.user_id FROM users u WHERE lower(u.email) = lower(q.to_email)
     ORDER BY u.deleted_at IS NOT NULL, u.deleted_at DESC LIMIT 1))";

/// A held notification, as the digest shows it.
#[derive(Debug, Clone)]
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

/// A held row as read: JSON parsed leniently ([`JsonText`]) and timestamps clamped to
/// finite values in SQL, so that one odd row decodes (or fails) on its own.
#[derive(Debug, sqlx::FromRow)]
struct HeldRow {
    email_id: Uuid,
    subject: Option<String>,
    html_content: Option<String>,
    text_content: Option<String>,
    template_data: Option<JsonText>,
    metadata: Option<JsonText>,
    created_at: Option<NaiveDateTime>,
    template_description: Option<String>,
}

/// A held row that cannot be read: it ends `failed` with `reason`, naming the column.
#[derive(Debug, Clone)]
pub struct UnreadableHeld {
    pub email_id: Uuid,
    pub reason: String,
}

impl HeldRow {
    fn decode(self) -> Result<HeldEmail, UnreadableHeld> {
        let fail = |reason: String| UnreadableHeld {
            email_id: self.email_id,
            reason,
        };
        let json = |column: &str, value: Option<JsonText>| {
            value
                .map(|j| j.0)
                .transpose()
                .map_err(|why| format!("{column} {why}"))
        };
        let template_data = json("template_data", self.template_data).map_err(fail)?;
        let metadata = json("metadata", self.metadata).map_err(fail)?;
        Ok(HeldEmail {
            email_id: self.email_id,
            subject: self.subject.unwrap_or_default(),
            html_content: self.html_content.unwrap_or_default(),
            text_content: self.text_content,
            template_data,
            metadata,
            created_at: self.created_at,
            template_description: self.template_description,
        })
    }
}

/// The user's held rows, oldest first, at most `limit`, locked until the transaction ends
/// so that a concurrent digest cannot take them too, each decoded on its own: rows that
/// cannot be read come back apart, for [`fail_unreadable_held`]. The literal is
/// [`super::HELD_UNTIL`]: it lets the scan use the `scheduled_for` index.
pub async fn held_for_user<'e>(
    exec: impl PgExecutor<'e>,
    email: &str,
    limit: i64,
) -> Result<(Vec<HeldEmail>, Vec<UnreadableHeld>), sqlx::Error> {
    let rows: Vec<HeldRow> = sqlx::query_as(
        "SELECT q.email_id, q.subject, q.html_content, q.text_content,
                q.template_data::text AS template_data, q.metadata::text AS metadata,
                CASE WHEN isfinite(q.created_at) THEN q.created_at END AS created_at,
                t.description AS template_description
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
    .await?;
    let mut held = Vec::with_capacity(rows.len());
    let mut unreadable = Vec::new();
    for row in rows {
        match row.decode() {
            Ok(h) => held.push(h),
            Err(u) => unreadable.push(u),
        }
    }
    Ok((held, unreadable))
}

/// queued (held) → **failed**: a held row the digest cannot read ends on its own, with a
/// reason naming the column, and no longer holds up the others.
pub async fn fail_unreadable_held<'e>(
    exec: impl PgExecutor<'e>,
    row: &UnreadableHeld,
    at: NaiveDateTime,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE email_queue SET status = 'failed', failure_reason = $2,
            metadata = metadata - 'digestHold', updated_at = $3
         WHERE email_id = $1 AND status = 'queued' AND metadata ? 'digestHold'",
    )
    .bind(row.email_id)
    .bind(format!(
        "held for the digest but unreadable: {}",
        row.reason
    ))
    .bind(at)
    .execute(exec)
    .await?;
    Ok(done.rows_affected())
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
            metadata = CASE WHEN jsonb_typeof(metadata) = 'object' THEN metadata ELSE '{}' END
                || jsonb_build_object('digestEmailId', $2::text),
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
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "UPDATE email_queue q SET scheduled_for = NULL, metadata = q.metadata - 'digestHold', updated_at = $1
         FROM email_preferences p
         WHERE q.scheduled_for = '9999-12-31 00:00:00' AND q.status = 'queued'
           AND q.metadata ? 'digestHold'
           AND p.user_id = {RECIPIENT}
           AND p.digest_frequency = 'immediate'"
        )
    });
    update_at(exec, SQL.as_str(), at).await
}

/// Held rows of recipients now on `never` end **unsubscribed**, as the gate would have
/// ended them, and lose their `digestHold` marker like released ones.
pub async fn unsubscribe_held_for_never<'e>(
    exec: impl PgExecutor<'e>,
    at: NaiveDateTime,
) -> Result<u64, sqlx::Error> {
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "UPDATE email_queue q SET status = 'unsubscribed',
            failure_reason = 'recipient receives no notification email (digest_frequency = never)',
            metadata = q.metadata - 'digestHold',
            updated_at = $1
         FROM email_preferences p
         WHERE q.scheduled_for = '9999-12-31 00:00:00' AND q.status = 'queued'
           AND q.metadata ? 'digestHold'
           AND p.user_id = {RECIPIENT}
           AND p.digest_frequency = 'never'"
        )
    });
    update_at(exec, SQL.as_str(), at).await
}

/// Runs one of the statements above, `$1` = `at`.
async fn update_at<'e>(
    exec: impl PgExecutor<'e>,
    sql: &'static str,
    at: NaiveDateTime,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(at)
        .execute(exec)
        .await?;
    Ok(done.rows_affected())
}

/// How many held rows [`end_held_for_ineligible`] ended, by outcome.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EndedHeld {
    /// `failed` with a `suppressed:` reason (blacklisted, user deleted or not active).
    pub suppressed: u64,
    /// `unsubscribed` (email disabled, global unsubscribe, category opted out).
    pub unsubscribed: u64,
}

/// Held rows whose recipient became ineligible end as the send-time gate would end them:
/// blacklisted (user or `email_suppressions`), user deleted or not `ACTIVE` → **failed**
/// with a `suppressed:` reason; email disabled, `global_unsubscribe`, the row's category or
/// the digest opted out → **unsubscribed**. `digestHold` is removed either way.
pub async fn end_held_for_ineligible<'e>(
    exec: impl PgExecutor<'e>,
    at: NaiveDateTime,
) -> Result<EndedHeld, sqlx::Error> {
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "WITH held AS (
             SELECT q.email_id,
                 CASE
                   WHEN p.is_blacklisted THEN 'suppressed: recipient is blacklisted ('
                        || COALESCE(p.blacklist_reason, 'blacklisted') || ')'
                   WHEN s.email IS NOT NULL THEN 'suppressed: recipient is blacklisted ('
                        || COALESCE(s.blacklist_reason, 'blacklisted') || ')'
                   WHEN u.deleted_at IS NOT NULL THEN 'suppressed: recipient user is deleted'
                   WHEN u.status IS DISTINCT FROM 'ACTIVE'
                        THEN 'suppressed: recipient user is ' || u.status::text
                 END AS suppressed,
                 CASE
                   WHEN p.is_email_enabled = false
                        THEN 'recipient has email disabled (is_email_enabled = false)'
                   WHEN p.global_unsubscribe
                        THEN 'recipient unsubscribed from all optional email (global_unsubscribe)'
                   WHEN jsonb_typeof(p.preferences) = 'array' AND p.preferences
                        @> jsonb_build_array(jsonb_build_object('type', c.category, 'enabled', false))
                        THEN 'recipient opted out of \"' || c.category || '\" email'
                   WHEN jsonb_typeof(p.preferences) = 'array' AND p.preferences
                        @> '[{{\"type\": \"notification_digest\", \"enabled\": false}}]'
                        THEN 'recipient unsubscribed from the notification digest'
                 END AS unsubscribed
             FROM email_queue q
             CROSS JOIN LATERAL (SELECT {RECIPIENT} AS uid) r
             LEFT JOIN users u ON u.user_id = r.uid
             LEFT JOIN email_preferences p ON p.user_id = r.uid
             LEFT JOIN email_suppressions s ON s.email = lower(q.to_email) AND s.is_blacklisted
             CROSS JOIN LATERAL (SELECT COALESCE(
                 CASE WHEN q.metadata->>'category' ~ '^[A-Za-z0-9_]{{1,64}}$'
                      THEN q.metadata->>'category' END,
                 'messages') AS category) c
             WHERE q.scheduled_for = '9999-12-31 00:00:00' AND q.status = 'queued'
               AND q.metadata ? 'digestHold' AND r.uid IS NOT NULL
             FOR UPDATE OF q SKIP LOCKED
         )
         UPDATE email_queue q SET
             status = CASE WHEN h.suppressed IS NOT NULL THEN 'failed' ELSE 'unsubscribed' END::email_status_enum,
             failure_reason = COALESCE(h.suppressed, h.unsubscribed),
             metadata = q.metadata - 'digestHold',
             updated_at = $1
         FROM held h
         WHERE q.email_id = h.email_id AND COALESCE(h.suppressed, h.unsubscribed) IS NOT NULL
         RETURNING (h.suppressed IS NOT NULL) AS suppressed"
        )
    });
    let ended: Vec<bool> = sqlx::query_scalar(sqlx::AssertSqlSafe(SQL.as_str()))
        .bind(at)
        .fetch_all(exec)
        .await?;
    let suppressed = ended.iter().filter(|s| **s).count() as u64;
    Ok(EndedHeld {
        suppressed,
        unsubscribed: ended.len() as u64 - suppressed,
    })
}
