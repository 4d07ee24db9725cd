//! The retention job: bodies of finished emails cleared after `retention_body_days`, rows
//! deleted after `retention_row_days`, nothing else touched.

use super::*;

/// A row in `status`, created and finished `days_ago` days before 2026-06-01.
async fn aged(pool: &PgPool, status: &str, days_ago: i64) -> Uuid {
    let id = NewEmail::to("maya@example.com").insert(pool).await;
    let when = naive("2026-06-01T00:00:00Z") - chrono::Duration::days(days_ago);
    sqlx::query(
        "UPDATE email_queue SET status = $2::email_status_enum, created_at = $3,
             sent_at = CASE WHEN $2 IN ('sent', 'delivered', 'opened', 'clicked') THEN $3 END,
             updated_at = $3, template_data = '{\"pet\": \"Biscuit\"}',
             tracking = '{\"opens\": 2}', metadata = '{\"campaign\": \"spring\"}'
         WHERE email_id = $1",
    )
    .bind(id)
    .bind(status)
    .bind(when)
    .execute(pool)
    .await
    .unwrap();
    id
}

#[derive(Debug, sqlx::FromRow)]
struct Kept {
    status: String,
    subject: String,
    html_content: String,
    text_content: Option<String>,
    template_data: Option<Value>,
    tracking: Option<Value>,
    metadata: Option<Value>,
}

async fn kept(pool: &PgPool, id: Uuid) -> Option<Kept> {
    sqlx::query_as(
        "SELECT status::text, subject, html_content, text_content, template_data, tracking, metadata
         FROM email_queue WHERE email_id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn finished_emails_lose_their_bodies_then_their_rows_and_nothing_else_is_touched() {
    let db = TestDb::new().await;
    let old_sent = aged(&db.pool, "sent", 40).await;
    let old_bounced = aged(&db.pool, "bounced", 45).await;
    let recent = aged(&db.pool, "sent", 10).await;
    let old_queued = aged(&db.pool, "queued", 90).await;
    let ancient = aged(&db.pool, "failed", 400).await;
    // Small batches, so the cursor walks several of them.
    let mut s = settings(&db, None, None, &[("ADOPT__JOBS__BATCH_SIZE", "2")]);
    s.jobs.retention_row_days = 365;
    let jobs = Jobs::new(db.pool.clone(), &s);
    let report = run(&jobs, JobName::Retention, "2026-06-01T00:00:00Z").await;
    assert_eq!(report.rows_affected, 3, "{report}");
    assert!(report.detail.contains("bodies_removed=2"), "{report}");
    assert!(report.detail.contains("rows_deleted=1"), "{report}");

    for id in [old_sent, old_bounced] {
        let k = kept(&db.pool, id).await.unwrap();
        assert_eq!(k.html_content, "");
        assert_eq!((k.text_content, k.template_data), (None, None));
        assert!(!k.subject.is_empty(), "the subject stays");
        assert_eq!(k.tracking.unwrap()["opens"], 2, "tracking stays");
        let m = k.metadata.unwrap();
        assert_eq!(m["campaign"], "spring");
        assert!(m["bodyRemovedAt"].is_string());
        assert_ne!(k.status, "queued");
    }
    for id in [recent, old_queued] {
        let k = kept(&db.pool, id).await.unwrap();
        assert!(!k.html_content.is_empty(), "{k:?}");
        assert!(k.template_data.is_some());
    }
    assert!(
        kept(&db.pool, ancient).await.is_none(),
        "deleted after a year"
    );

    // A second run finds nothing left to do.
    let again = run(&jobs, JobName::Retention, "2026-06-01T00:05:00Z").await;
    assert_eq!(again.rows_affected, 0, "{again}");
}

#[tokio::test]
async fn rows_with_infinite_times_do_not_stop_retention() {
    let db = TestDb::new().await;
    let odd = aged(&db.pool, "sent", 40).await;
    sqlx::query("UPDATE email_queue SET created_at = '-infinity', sent_at = '-infinity' WHERE email_id = $1")
        .bind(odd)
        .execute(&db.pool)
        .await
        .unwrap();
    let normal = aged(&db.pool, "sent", 40).await;
    let report = run(&jobs(&db), JobName::Retention, "2026-06-01T00:00:00Z").await;
    assert_eq!(report.rows_affected, 2, "{report}");
    assert_eq!(kept(&db.pool, normal).await.unwrap().html_content, "");
}
