//! The `email_queue` table: claiming due rows and every state transition of a row's life.
//! Nothing else in the crate writes this table's status; each transition is one UPDATE
//! fenced on the claim (`status = 'sending' AND last_attempt_at = claimed_at`).

mod batch;
mod enqueue;
mod held;
mod model;
mod read;
mod recipient;
pub mod tracking;

use std::sync::LazyLock;
use std::time::Duration;

use chrono::NaiveDateTime;
use serde_json::Value;
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

pub use batch::SentBatcher;
pub use enqueue::{NewEmail, enqueue};
pub use held::{
    EndedHeld, HeldEmail, UnreadableHeld, end_held_for_ineligible, fail_unreadable_held,
    held_for_user, mark_sent_via_digest, release_held_for_immediate, unsubscribe_held_for_never,
};
pub use model::{
    CONTENT_OR_TEMPLATE, ClaimedEmail, EmailPriority, EmailStatus, EmailType, MAX_JSON_DEPTH,
    metadata_problem,
};
pub use read::{
    EmailRecord, ListAfter, ListFilter, RetryResult, find_email, list_emails, retry_failed,
};
pub use recipient::RecipientPrefs;

/// `scheduled_for` of rows held for a digest: never due on its own. A far-future date
/// rather than `'infinity'`, which many clients (sqlx/chrono among them) cannot decode.
/// `metadata` key the worker sets (true) when it writes a rendered template back to the row:
/// such a row is resent as rendered; other template rows with content of their own fail.
pub const RENDERED_BY_WORKER: &str = "renderedByWorker";

/// `metadata` key naming the service token (its `token_id`) that queued a row through the
/// API: that token may retry the row.
pub const ENQUEUED_BY_TOKEN: &str = "enqueuedByToken";

pub const HELD_UNTIL: &str = "9999-12-31 00:00:00";

/// PostgreSQL's NOTIFY channel that the queue trigger signals when a due row appears.
pub const NOTIFY_CHANNEL: &str = "adopt_worker_email_queue";

/// Columns returned for a claimed row (matches `model::ClaimedRow`): every one decodable
/// whatever another service wrote into it.
macro_rules! claimed_columns {
    ($p:literal) => {
        concat!(
            $p,
            "email_id, ",
            $p,
            "template_id, ",
            $p,
            "from_email, ",
            $p,
            "from_name, ",
            $p,
            "to_email, ",
            $p,
            "to_name, ",
            $p,
            "cc_emails, ",
            $p,
            "bcc_emails, ",
            $p,
            "reply_to_email, ",
            $p,
            "subject, ",
            $p,
            "html_content, ",
            $p,
            "text_content, ",
            $p,
            "template_data::text AS template_data, ",
            $p,
            "type, ",
            $p,
            "priority, ",
            $p,
            "max_retries, ",
            $p,
            "current_retries, ",
            $p,
            "last_attempt_at, ",
            $p,
            "metadata::text AS metadata, ",
            $p,
            "campaign_id, ",
            $p,
            "user_id, ",
            "CASE WHEN isfinite(",
            $p,
            "created_at) THEN ",
            $p,
            "created_at END AS created_at, ",
            $p,
            "tags"
        )
    };
}

/// The claim statement exactly as [`claim_due`] runs it (`$1` = batch size), for
/// `EXPLAIN` in the benchmark and for operators.
pub fn claim_statement() -> &'static str {
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "WITH clock AS (SELECT now() AT TIME ZONE 'UTC' AS now_utc),
            scheduled AS (
                SELECT c.email_id, p.priority, c.due_at
                FROM unnest('{{urgent,high,normal,low}}'::email_priority_enum[]) AS p(priority)
                CROSS JOIN clock
                CROSS JOIN LATERAL (
                    SELECT q.email_id, COALESCE(q.scheduled_for, q.created_at, '-infinity') AS due_at
                    FROM email_queue q
                    WHERE q.status = 'queued' AND q.priority = p.priority
                      AND COALESCE(q.scheduled_for, q.created_at, '-infinity') <= clock.now_utc
                    ORDER BY COALESCE(q.scheduled_for, q.created_at, '-infinity')
                    LIMIT $1
                    FOR UPDATE OF q SKIP LOCKED
                ) c
                LIMIT $1
            ),
            created_ahead AS (
                SELECT c.email_id, p.priority, c.due_at
                FROM unnest('{{urgent,high,normal,low}}'::email_priority_enum[]) AS p(priority)
                CROSS JOIN clock
                CROSS JOIN LATERAL (
                    SELECT q.email_id, q.created_at AS due_at
                    FROM email_queue q
                    WHERE q.priority = p.priority AND q.created_at > clock.now_utc
                      AND q.status = 'queued' AND q.scheduled_for IS NULL
                    ORDER BY q.created_at
                    LIMIT $1
                    FOR UPDATE OF q SKIP LOCKED
                ) c
                LIMIT $1
            ),
            due AS (
                SELECT email_id FROM (
                    SELECT * FROM scheduled UNION ALL SELECT * FROM created_ahead
                ) d
                ORDER BY d.priority DESC, d.due_at
                LIMIT $1
            ),
            claimed AS (
                UPDATE email_queue e
                SET status = 'sending',
                    last_attempt_at = clock_timestamp() AT TIME ZONE 'UTC',
                    updated_at = clock_timestamp() AT TIME ZONE 'UTC'
                WHERE e.email_id = ANY(ARRAY(SELECT email_id FROM due))
                RETURNING e.*
            )
            SELECT {}, {}
            FROM claimed c {}",
            claimed_columns!("c."),
            recipient::RECIPIENT_COLUMNS,
            recipient::RECIPIENT_JOIN,
        )
    });
    SQL.as_str()
}

/// Claims up to `limit` due rows, highest priority first and oldest due time first within
/// a priority, and marks them `sending`. **Due** means `scheduled_for` is NULL or past:
/// `created_at` only orders rows, because a client may write its own local time there, which
/// may lie hours ahead of UTC (a *defaulted* value is stored in UTC by migration 0023's
/// trigger, whatever the inserting session's TimeZone).
/// One statement: per priority value, an index range scan on `idx_email_queue_claim` that
/// stops at the first row not yet due, so rows scheduled in the future cost nothing however
/// many there are, plus a range scan of the seed's `idx_email_queue_priority (priority,
/// created_at)` over rows created "in the future" (only ever the last hours of a
/// misconfigured inserter, since `created_at` only grows), which are due when unscheduled; the nested loop walks the
/// priorities in array order and the outer LIMIT stops it as soon as the batch is full.
/// `SKIP LOCKED` lets any number of processes claim at once without ever taking the same
/// row. The recipient's preferences are joined in the same statement, so the preference
/// gate costs no extra round trip. The claimed ids are handed to the UPDATE as an array, so
/// it finds them by primary key in the generic plan too (joined to the CTE, the generic plan
/// seq-scanned the table: 21 ms instead of 1.5 ms on 20,000 rows).
pub async fn claim_due(pool: &PgPool, limit: u32) -> Result<Vec<ClaimedEmail>, sqlx::Error> {
    let sent_at = std::time::Instant::now();
    let rows: Vec<model::ClaimedRow> = sqlx::query_as(sqlx::AssertSqlSafe(claim_statement()))
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await?;
    let mut rows: Vec<ClaimedEmail> = rows.into_iter().map(ClaimedEmail::from).collect();
    for row in &mut rows {
        row.claim_sent_at = Some(sent_at);
    }
    rows.sort_by(|a, b| {
        b.priority
            .cmp(&a.priority)
            .then_with(|| a.created_at.cmp(&b.created_at))
    });
    Ok(rows)
}

/// Claims the one row `email_id` if it is `queued` (whatever its due time), as the claim
/// does: `send-test` delivers the row it just wrote without waiting for a worker. `None`
/// when it is not queued (a running worker took it first).
pub async fn claim_one<'e>(
    exec: impl sqlx::PgExecutor<'e>,
    email_id: Uuid,
) -> Result<Option<ClaimedEmail>, sqlx::Error> {
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "WITH claimed AS (
                UPDATE email_queue e
                SET status = 'sending',
                    last_attempt_at = clock_timestamp() AT TIME ZONE 'UTC',
                    updated_at = clock_timestamp() AT TIME ZONE 'UTC'
                WHERE e.email_id = $1 AND e.status = 'queued'
                RETURNING e.*
            )
            SELECT {}, {}
            FROM claimed c {}",
            claimed_columns!("c."),
            recipient::RECIPIENT_COLUMNS,
            recipient::RECIPIENT_JOIN,
        )
    });
    let sent_at = std::time::Instant::now();
    let row: Option<model::ClaimedRow> = sqlx::query_as(sqlx::AssertSqlSafe(SQL.as_str()))
        .bind(email_id)
        .fetch_optional(exec)
        .await?;
    Ok(row.map(|r| {
        let mut email = ClaimedEmail::from(r);
        email.claim_sent_at = Some(sent_at);
        email
    }))
}

/// What the transition did. `Fenced` means another attempt owns the row now (its lease
/// expired and it was taken back), so this attempt's result was not written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    Written(EmailStatus),
    Fenced,
}

fn recorded(status: Option<EmailStatus>) -> Recorded {
    status.map_or(Recorded::Fenced, Recorded::Written)
}

/// What the worker rendered for a template email, stored with the result so the row holds
/// exactly what was sent.
#[derive(Debug, Clone, Default)]
pub struct RenderedContent {
    pub subject: String,
    pub html_content: String,
    pub text_content: Option<String>,
    pub template_version: Option<i32>,
}

/// queued → sending → **sent**. Also accepted while the row sits `queued` after a lease
/// reclaim that no newer attempt has picked up yet, or `failed` because the reaper gave up
/// on it (its last attempt): the mail did go, so say so rather than let a retry send it
/// twice. The fence (`last_attempt_at`) still refuses it once a newer attempt claimed it.
pub async fn mark_sent(
    pool: &PgPool,
    email: &ClaimedEmail,
    provider_id: &str,
    provider_message_id: Option<&str>,
    rendered: Option<&RenderedContent>,
) -> Result<Recorded, sqlx::Error> {
    let status: Option<EmailStatus> = sqlx::query_scalar(
        "UPDATE email_queue SET
            status = 'sent',
            sent_at = now() AT TIME ZONE 'UTC',
            provider_id = left($3, 255),
            provider_message_id = left($4, 255),
            failure_reason = NULL,
            subject = left(COALESCE($5, subject), 500),
            html_content = COALESCE($6, html_content),
            text_content = CASE WHEN $5 IS NULL THEN text_content ELSE $7 END,
            metadata = CASE WHEN $8::int IS NULL THEN metadata
                       ELSE (CASE WHEN jsonb_typeof(metadata) = 'object' THEN metadata ELSE '{}' END)
                            || jsonb_build_object('templateVersion', $8::int, 'renderedByWorker', true) END,
            updated_at = now() AT TIME ZONE 'UTC'
         WHERE email_id = $1 AND last_attempt_at = $2 AND status IN ('sending', 'queued', 'failed')
         RETURNING status",
    )
    .bind(email.email_id)
    .bind(email.claimed_at)
    .bind(provider_id)
    .bind(provider_message_id)
    .bind(rendered.map(|r| r.subject.as_str()))
    .bind(rendered.map(|r| r.html_content.as_str()))
    .bind(rendered.and_then(|r| r.text_content.as_deref()))
    .bind(rendered.and_then(|r| r.template_version))
    .fetch_optional(pool)
    .await?;
    Ok(recorded(status))
}

/// sending → **queued** again with `current_retries + 1` and `scheduled_for = now + delay`,
/// or → **failed** when the row has no retries left. The CASE keeps the seed's check
/// `current_retries <= max_retries` true in every branch; NULL `max_retries` means
/// `default_max_retries`.
pub async fn schedule_retry<'e>(
    pool: impl PgExecutor<'e>,
    email: &ClaimedEmail,
    default_max_retries: i32,
    delay: Duration,
    reason: &str,
) -> Result<Recorded, sqlx::Error> {
    let status: Option<EmailStatus> = sqlx::query_scalar(
        "UPDATE email_queue SET
            status = CASE WHEN COALESCE(current_retries, 0) < COALESCE(max_retries, $3)
                          THEN 'queued' ELSE 'failed' END::email_status_enum,
            scheduled_for = CASE WHEN COALESCE(current_retries, 0) < COALESCE(max_retries, $3)
                          THEN (now() AT TIME ZONE 'UTC') + make_interval(secs => $4)
                          ELSE scheduled_for END,
            failure_reason = CASE WHEN COALESCE(current_retries, 0) < COALESCE(max_retries, $3)
                          THEN $5
                          ELSE $5 || ' (gave up after ' || COALESCE(current_retries, 0) || ' retries)' END,
            current_retries = CASE WHEN COALESCE(current_retries, 0) < COALESCE(max_retries, $3)
                          THEN COALESCE(current_retries, 0) + 1 ELSE current_retries END,
            updated_at = now() AT TIME ZONE 'UTC'
         WHERE email_id = $1 AND last_attempt_at = $2 AND status = 'sending'
         RETURNING status",
    )
    .bind(email.email_id)
    .bind(email.claimed_at)
    .bind(default_max_retries)
    .bind(delay.as_secs_f64())
    .bind(reason)
    .fetch_optional(pool)
    .await?;
    Ok(recorded(status))
}

/// sending → **failed** (permanent: bad input, policy rejection, suppressed recipient).
pub async fn mark_failed(
    pool: &PgPool,
    email: &ClaimedEmail,
    reason: &str,
) -> Result<Recorded, sqlx::Error> {
    finish(pool, email, EmailStatus::Failed, reason, None).await
}

/// sending → **unsubscribed** (the recipient opted out; nothing was sent).
pub async fn mark_unsubscribed(
    pool: &PgPool,
    email: &ClaimedEmail,
    reason: &str,
) -> Result<Recorded, sqlx::Error> {
    finish(pool, email, EmailStatus::Unsubscribed, reason, None).await
}

/// sending → **queued**, held for the recipient's digest: never due on its own
/// (`scheduled_for` = [`HELD_UNTIL`]), marked `metadata.digestHold`. The digest job picks held
/// rows up; switching the user to `immediate` releases them.
pub async fn hold_for_digest(pool: &PgPool, email: &ClaimedEmail) -> Result<Recorded, sqlx::Error> {
    let status: Option<EmailStatus> = sqlx::query_scalar(
        "UPDATE email_queue SET
            status = 'queued',
            scheduled_for = '9999-12-31 00:00:00',
            metadata = CASE WHEN jsonb_typeof(metadata) = 'object' THEN metadata ELSE '{}' END
                || jsonb_build_object('digestHold',
                jsonb_build_object('heldAt', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'))),
            updated_at = now() AT TIME ZONE 'UTC'
         WHERE email_id = $1 AND last_attempt_at = $2 AND status = 'sending'
         RETURNING status",
    )
    .bind(email.email_id)
    .bind(email.claimed_at)
    .fetch_optional(pool)
    .await?;
    Ok(recorded(status))
}

/// sending → **bounced** (recipient rejected permanently). `bounce` is merged into
/// `tracking` (`bouncedAt`, `bounceType`, `bounceCode`, `bounceReason`).
pub async fn mark_bounced<'e>(
    pool: impl PgExecutor<'e>,
    email: &ClaimedEmail,
    reason: &str,
    bounce: Value,
) -> Result<Recorded, sqlx::Error> {
    finish(pool, email, EmailStatus::Bounced, reason, Some(bounce)).await
}

async fn finish<'e>(
    pool: impl PgExecutor<'e>,
    email: &ClaimedEmail,
    status: EmailStatus,
    reason: &str,
    tracking_patch: Option<Value>,
) -> Result<Recorded, sqlx::Error> {
    let status: Option<EmailStatus> = sqlx::query_scalar(
        "UPDATE email_queue SET
            status = $3,
            failure_reason = $4,
            tracking = CASE WHEN $5::jsonb IS NULL THEN tracking
                       ELSE (CASE WHEN jsonb_typeof(tracking) = 'object' THEN tracking ELSE '{}' END)
                            || $5::jsonb END,
            updated_at = now() AT TIME ZONE 'UTC'
         WHERE email_id = $1 AND last_attempt_at = $2 AND status = 'sending'
         RETURNING status",
    )
    .bind(email.email_id)
    .bind(email.claimed_at)
    .bind(status)
    .bind(reason)
    .bind(tracking_patch)
    .fetch_optional(pool)
    .await?;
    Ok(recorded(status))
}

/// sending → **queued**, not counted as an attempt: rows claimed but never handed to SMTP
/// (shutdown, or a batch this process could not start).
pub async fn release(pool: &PgPool, emails: &[ClaimedEmail]) -> Result<u64, sqlx::Error> {
    if emails.is_empty() {
        return Ok(0);
    }
    let ids: Vec<Uuid> = emails.iter().map(|e| e.email_id).collect();
    let fences: Vec<NaiveDateTime> = emails.iter().map(|e| e.claimed_at).collect();
    let done = sqlx::query(
        "UPDATE email_queue e SET status = 'queued', updated_at = now() AT TIME ZONE 'UTC'
         FROM unnest($1::uuid[], $2::timestamp[]) AS r(email_id, fence)
         WHERE e.email_id = r.email_id AND e.last_attempt_at = r.fence AND e.status = 'sending'",
    )
    .bind(ids)
    .bind(fences)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// The lease reaper: rows left `sending` longer than `lease` (their worker died) go back to
/// `queued`, due at once, counting as a failed attempt, or to `failed` when out of retries.
/// Delivery may already have happened: the Message-ID is stable, so receivers can dedupe.
/// "Now" is the database's clock, the one the claim wrote `last_attempt_at` with, so a
/// host whose clock runs ahead never takes back a row mid-send.
pub async fn reclaim_expired(
    pool: &PgPool,
    lease: Duration,
    default_max_retries: i32,
) -> Result<u64, sqlx::Error> {
    reclaim(pool, None, lease, default_max_retries).await
}

/// [`reclaim_expired`] with "now" given (UTC; `--now`, tests): rows whose claim is older
/// than `now - lease`. Reclaimed rows are due at once (the database's clock).
pub async fn reclaim_expired_at(
    pool: &PgPool,
    now: NaiveDateTime,
    lease: Duration,
    default_max_retries: i32,
) -> Result<u64, sqlx::Error> {
    reclaim(pool, Some(now), lease, default_max_retries).await
}

async fn reclaim(
    pool: &PgPool,
    now: Option<NaiveDateTime>,
    lease: Duration,
    default_max_retries: i32,
) -> Result<u64, sqlx::Error> {
    let reason = format!(
        "worker lease expired after {}s in 'sending' (worker stopped mid-send); the message may have been delivered",
        lease.as_secs()
    );
    let done = sqlx::query(
        "UPDATE email_queue SET
            status = CASE WHEN COALESCE(current_retries, 0) < COALESCE(max_retries, $2)
                          THEN 'queued' ELSE 'failed' END::email_status_enum,
            current_retries = CASE WHEN COALESCE(current_retries, 0) < COALESCE(max_retries, $2)
                          THEN COALESCE(current_retries, 0) + 1 ELSE current_retries END,
            scheduled_for = CASE WHEN COALESCE(current_retries, 0) < COALESCE(max_retries, $2)
                          THEN now() AT TIME ZONE 'UTC' ELSE scheduled_for END,
            failure_reason = $3,
            updated_at = now() AT TIME ZONE 'UTC'
         WHERE status = 'sending'
           AND last_attempt_at < COALESCE($4, now() AT TIME ZONE 'UTC') - make_interval(secs => $1)",
    )
    .bind(lease.as_secs_f64())
    .bind(default_max_retries)
    .bind(reason)
    .bind(now)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Stores what the worker rendered for a template row that is not being marked sent (a
/// retry keeps it, so the next attempt sends the same version; a failure shows what was
/// tried). Fenced on the claim like every transition; the transition itself follows.
pub async fn keep_rendered(
    pool: &PgPool,
    email: &ClaimedEmail,
    rendered: &RenderedContent,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE email_queue SET
            subject = left($3, 500),
            html_content = $4,
            text_content = $5,
            metadata = CASE WHEN $6::int IS NULL THEN metadata
                       ELSE (CASE WHEN jsonb_typeof(metadata) = 'object' THEN metadata ELSE '{}' END)
                            || jsonb_build_object('templateVersion', $6::int, 'renderedByWorker', true) END
         WHERE email_id = $1 AND last_attempt_at = $2 AND status = 'sending'",
    )
    .bind(email.email_id)
    .bind(email.claimed_at)
    .bind(&rendered.subject)
    .bind(&rendered.html_content)
    .bind(rendered.text_content.as_deref())
    .bind(rendered.template_version)
    .execute(pool)
    .await?;
    Ok(())
}
