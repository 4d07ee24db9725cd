//! `retention`: what a sent email keeps, and for how long. Rows finished (`sent`,
//! `delivered`, `opened`, `clicked`, `bounced`, `failed`, `unsubscribed`) more than
//! `jobs.retention_body_days` ago lose their bodies (`html_content` becomes `''`, the seed's
//! NOT NULL; `text_content` and `template_data` NULL) and keep everything else: status,
//! times, tracking and bounce fields, subject, metadata (which records `bodyRemovedAt`).
//! With `jobs.retention_row_days` above 0, rows finished longer ago than that are deleted.
//! `queued` and `sending` rows are never touched.
//!
//! Batched: `jobs.batch_size` rows per statement and transaction, taken in the listing
//! index's order (`COALESCE(created_at, '-infinity'), email_id`) with a cursor, under
//! `FOR UPDATE SKIP LOCKED`, so a table of tens of millions of rows is pruned without a
//! long lock or one huge WAL burst, and rows that other work holds are left for the next run.

use chrono::{DateTime, Duration, NaiveDateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::{Done, JobError, Jobs, support};

/// The statuses a row ends in.
const FINISHED: &str =
    "('sent', 'delivered', 'opened', 'clicked', 'bounced', 'failed', 'unsubscribed')";

pub(super) async fn run(jobs: &Jobs, now: DateTime<Utc>) -> Result<Done, JobError> {
    let settings = jobs.settings();
    let batch = i64::from(settings.batch_size.max(1));
    let now = now.naive_utc();
    let mut cleared = 0;
    let mut deleted = 0;
    if settings.retention_row_days > 0 {
        let cutoff = now - Duration::days(i64::from(settings.retention_row_days));
        deleted = in_batches(jobs.pool(), cutoff, batch, Action::Delete, now).await?;
    }
    if settings.retention_body_days > 0 {
        let cutoff = now - Duration::days(i64::from(settings.retention_body_days));
        cleared = in_batches(jobs.pool(), cutoff, batch, Action::ClearBody, now).await?;
    }
    Ok(Done {
        rows_affected: cleared + deleted,
        detail: support::detail([support::counts(&[
            ("bodies_removed", cleared),
            ("rows_deleted", deleted),
        ])]),
        failed: false,
    })
}

#[derive(Clone, Copy)]
enum Action {
    ClearBody,
    Delete,
}

/// Walks rows created before `cutoff` in index order, one batch per transaction, and
/// applies `action` to those finished before `cutoff`. Returns how many rows it changed.
async fn in_batches(
    pool: &PgPool,
    cutoff: NaiveDateTime,
    batch: i64,
    action: Action,
    now: NaiveDateTime,
) -> Result<u64, JobError> {
    // A row finishes after it is created, so a row finished before the cutoff was also
    // created before it: the index range below holds every candidate.
    let change = match action {
        Action::ClearBody => format!(
            "UPDATE email_queue e SET
                html_content = '', text_content = NULL, template_data = NULL,
                metadata = (CASE WHEN jsonb_typeof(e.metadata) = 'object' THEN e.metadata
                            ELSE '{{}}' END) || jsonb_build_object('bodyRemovedAt', $4::text)
             FROM page p
             WHERE e.email_id = p.email_id AND e.status IN {FINISHED}
               AND COALESCE(e.sent_at, e.updated_at, e.created_at) < $1
               AND (e.html_content <> '' OR e.text_content IS NOT NULL OR e.template_data IS NOT NULL)
             RETURNING e.email_id"
        ),
        Action::Delete => format!(
            "DELETE FROM email_queue e USING page p
             WHERE e.email_id = p.email_id AND e.status IN {FINISHED}
               AND COALESCE(e.sent_at, e.updated_at, e.created_at) < $1
             RETURNING e.email_id"
        ),
    };
    let sql = format!(
        "WITH page AS (
             SELECT email_id, COALESCE(created_at, '-infinity'::timestamp) AS at
             FROM email_queue
             WHERE COALESCE(created_at, '-infinity'::timestamp) < $1
               AND (COALESCE(created_at, '-infinity'::timestamp), email_id) > ($2::timestamp, $3)
             ORDER BY COALESCE(created_at, '-infinity'::timestamp), email_id
             LIMIT $5
             FOR UPDATE SKIP LOCKED),
         changed AS ({change})
         SELECT (SELECT count(*) FROM changed),
                (SELECT at::text FROM page ORDER BY at DESC, email_id DESC LIMIT 1),
                (SELECT email_id FROM page ORDER BY at DESC, email_id DESC LIMIT 1)"
    );
    let mut total = 0u64;
    // The cursor as PostgreSQL text: '-infinity' sorts before every row (chrono has no
    // value PostgreSQL can hold that low).
    let mut after: (String, Uuid) = ("-infinity".to_string(), Uuid::nil());
    loop {
        // The cursor travels as text: a row another service wrote with created_at
        // '-infinity' must not reach chrono's decoder.
        let (n, last_at, last_id): (i64, Option<String>, Option<Uuid>) =
            sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(cutoff)
                .bind(&after.0)
                .bind(after.1)
                .bind(now.and_utc().to_rfc3339())
                .bind(batch)
                .fetch_one(pool)
                .await?;
        total += u64::try_from(n).unwrap_or(0);
        match (last_at, last_id) {
            (Some(at), Some(id)) => after = (at, id),
            _ => return Ok(total),
        }
    }
}
