//! Reading `email_queue` rows for the API (one row, a keyset-paginated list) and the one
//! transition an operator starts by hand: retrying a failed row.

use chrono::NaiveDateTime;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use super::{EmailPriority, EmailStatus, EmailType};

/// A row as the API shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EmailRecord {
    pub email_id: Uuid,
    pub status: EmailStatus,
    #[sqlx(rename = "type")]
    pub email_type: EmailType,
    pub priority: EmailPriority,
    pub from_email: String,
    pub from_name: Option<String>,
    pub to_email: String,
    pub to_name: Option<String>,
    pub subject: String,
    pub template_id: Option<Uuid>,
    pub current_retries: Option<i32>,
    pub max_retries: Option<i32>,
    pub failure_reason: Option<String>,
    pub tracking: Option<Value>,
    pub metadata: Option<Value>,
    pub tags: Option<Vec<String>>,
    pub campaign_id: Option<String>,
    pub user_id: Option<Uuid>,
    pub provider_id: Option<String>,
    pub provider_message_id: Option<String>,
    pub scheduled_for: Option<NaiveDateTime>,
    pub last_attempt_at: Option<NaiveDateTime>,
    pub sent_at: Option<NaiveDateTime>,
    pub created_at: Option<NaiveDateTime>,
    pub updated_at: Option<NaiveDateTime>,
}

const COLUMNS: &str = "email_id, status, type, priority, from_email, from_name, to_email, to_name,
    subject, template_id, current_retries, max_retries, failure_reason, tracking, metadata, tags,
    campaign_id, user_id, provider_id, provider_message_id, scheduled_for, last_attempt_at,
    sent_at, created_at, updated_at";

pub async fn find_email(pool: &PgPool, email_id: Uuid) -> Result<Option<EmailRecord>, sqlx::Error> {
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!("SELECT {COLUMNS} FROM email_queue WHERE email_id = $1")
    });
    sqlx::query_as(sqlx::AssertSqlSafe(SQL.as_str()))
        .bind(email_id)
        .fetch_optional(pool)
        .await
}

/// Where a page starts: after the row with this sort key (`created_at` as PostgreSQL prints
/// it, `-infinity` for a NULL) and id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListAfter {
    pub created_at: String,
    pub email_id: Uuid,
}

#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub status: Option<EmailStatus>,
    /// Exact recipient address, case-insensitive.
    pub to: Option<String>,
    pub after: Option<ListAfter>,
    pub limit: i64,
}

/// Newest first: `ORDER BY (created_at, email_id) DESC`, keyset-paginated, answered by the
/// index of migration 0018 (a walk down the index that stops after `limit` matches). The
/// first page compares against (`infinity`, max uuid) rather than skipping the comparison,
/// so that a cached generic plan still uses the key as an index condition on deep pages.
/// Returns each row with the key to continue after it.
pub async fn list_emails(
    pool: &PgPool,
    filter: &ListFilter,
) -> Result<Vec<(EmailRecord, ListAfter)>, sqlx::Error> {
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "SELECT {COLUMNS}, COALESCE(created_at, '-infinity'::timestamp)::text AS sort_key
             FROM email_queue
             WHERE ($1::email_status_enum IS NULL OR status = $1)
               AND ($2::text IS NULL OR lower(to_email) = lower($2))
               AND (COALESCE(created_at, '-infinity'::timestamp), email_id) < ($3::timestamp, $4::uuid)
             ORDER BY COALESCE(created_at, '-infinity'::timestamp) DESC, email_id DESC
             LIMIT $5"
        )
    });
    let rows: Vec<ListedRow> = sqlx::query_as(sqlx::AssertSqlSafe(SQL.as_str()))
        .bind(filter.status)
        .bind(&filter.to)
        .bind(
            filter
                .after
                .as_ref()
                .map_or("infinity", |a| a.created_at.as_str()),
        )
        .bind(filter.after.as_ref().map_or(Uuid::max(), |a| a.email_id))
        .bind(filter.limit)
        .fetch_all(pool)
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let after = ListAfter {
                created_at: r.sort_key,
                email_id: r.record.email_id,
            };
            (r.record, after)
        })
        .collect())
}

#[derive(sqlx::FromRow)]
struct ListedRow {
    #[sqlx(flatten)]
    record: EmailRecord,
    sort_key: String,
}

/// What [`retry_failed`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryResult {
    /// failed → queued, due now, `current_retries` 0, `failure_reason` cleared.
    Requeued,
    /// The row is not `failed` (bounced and unsubscribed rows are never re-sent).
    NotFailed(EmailStatus),
    NotFound,
    /// A service asked, and the row was not queued by its token.
    NotOwned,
}

/// failed → **queued** by an operator: due now, a fresh retry budget, the old reason cleared.
/// `owner`: a service token's id, which must be the one that queued the row
/// (`metadata.enqueuedByToken`); `None` for an admin, who may retry any row.
/// Only `failed` rows: a bounced address or an opted-out recipient must not get the mail.
pub async fn retry_failed(
    pool: &PgPool,
    email_id: Uuid,
    owner: Option<Uuid>,
) -> Result<RetryResult, sqlx::Error> {
    let row: Option<(EmailStatus, bool, bool)> = sqlx::query_as(
        "WITH target AS (
             SELECT email_id, status,
                    $2::uuid IS NULL
                      OR COALESCE(jsonb_typeof(metadata) = 'object'
                                  AND metadata->>'enqueuedByToken' = $2::uuid::text, false) AS owned
             FROM email_queue WHERE email_id = $1),
         requeued AS (
             UPDATE email_queue e SET
                 status = 'queued',
                 scheduled_for = now() AT TIME ZONE 'UTC',
                 current_retries = 0,
                 failure_reason = NULL,
                 updated_at = now() AT TIME ZONE 'UTC'
             FROM target t
             WHERE e.email_id = t.email_id AND e.status = 'failed' AND t.owned
             RETURNING e.email_id)
         SELECT t.status, EXISTS (SELECT 1 FROM requeued), t.owned FROM target t",
    )
    .bind(email_id)
    .bind(owner)
    .fetch_optional(pool)
    .await?;
    Ok(match row {
        None => RetryResult::NotFound,
        Some((_, true, _)) => RetryResult::Requeued,
        Some((_, false, false)) => RetryResult::NotOwned,
        Some((status, false, true)) => RetryResult::NotFailed(status),
    })
}
