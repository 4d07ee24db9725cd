//! Rows other services write that our types cannot hold, results the table refuses, and the
//! clocks that decide "due" and "expired": one odd row or host never costs another row.

use std::time::Duration;

use adopt_worker::jobs::{JobName, Jobs};
use adopt_worker::queue::{self, EmailStatus, Recorded};
use chrono::Utc;

use crate::helpers::*;

/// Inserts a plain row, then applies `set` (SQL assignments) to it, as a service writing
/// odd values by hand would.
async fn odd_row(pool: &sqlx::PgPool, to: &str, set: &str) -> uuid::Uuid {
    let id = NewEmail::to(to).insert(pool).await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE email_queue SET {set} WHERE email_id = $1"
    )))
    .bind(id)
    .execute(pool)
    .await
    .unwrap();
    id
}

#[tokio::test]
async fn an_undecodable_row_fails_alone_and_the_rest_of_its_batch_is_sent() {
    let db = TestDb::new().await;
    let smtp = TestSmtp::start().await;
    let good: Vec<_> = good_rows(&db, 5).await;
    let user = insert_user(&db.pool, "prefs@example.com").await;
    sqlx::query(
        "INSERT INTO email_preferences (user_id, preferences) VALUES ($1, '[{\"n\": 1e400}]')",
    )
    .bind(user)
    .execute(&db.pool)
    .await
    .unwrap();
    let poison = [
        (
            odd_row(&db.pool, "a@example.com", "metadata = '{\"n\": 1e400}'").await,
            "metadata",
        ),
        (
            odd_row(
                &db.pool,
                "b@example.com",
                "template_data = '{\"n\": -1e400}'",
            )
            .await,
            "template_data",
        ),
        (
            odd_row(
                &db.pool,
                "c@example.com",
                "cc_emails = ARRAY['x@example.com', NULL]",
            )
            .await,
            "cc_emails",
        ),
        (
            odd_row(
                &db.pool,
                "d@example.com",
                "bcc_emails = ARRAY[NULL]::text[]",
            )
            .await,
            "bcc_emails",
        ),
        (
            NewEmail::to("prefs@example.com").insert(&db.pool).await,
            "email_preferences.preferences",
        ),
    ];
    // Odd but harmless: sent as they are.
    let harmless = [
        odd_row(&db.pool, "e@example.com", "tags = ARRAY['x', NULL]").await,
        odd_row(&db.pool, "f@example.com", "created_at = '-infinity'").await,
    ];
    let app = app(settings(
        &db,
        Some(&smtp.url()),
        None,
        &[("ADOPT__WORKER__BATCH_SIZE", "64")],
    ));

    let tally = app
        .drain()
        .await
        .expect("drain does not stop on an odd row");
    assert_eq!(tally.get(EmailStatus::Sent), 7, "{tally}");
    for id in good.iter().chain(&harmless) {
        assert_eq!(row(&db.pool, *id).await.status, "sent");
    }
    for (id, column) in poison {
        let r = row(&db.pool, id).await;
        assert_eq!(r.status, "failed", "{column}");
        let reason = r.failure_reason.unwrap();
        assert!(reason.contains(column), "{column}: {reason}");
    }
    assert_eq!(status_counts(&db.pool).await.get("sending"), None);
}

async fn good_rows(db: &TestDb, n: usize) -> Vec<uuid::Uuid> {
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(
            NewEmail::to(&format!("good{i}@example.com"))
                .insert(&db.pool)
                .await,
        );
    }
    ids
}

#[tokio::test]
async fn a_long_sender_domain_is_sent_once_and_recorded() {
    let db = TestDb::new().await;
    let outbox = tempfile::tempdir().unwrap();
    // A valid 240-character domain: the Message-ID built from it would not fit
    // provider_message_id VARCHAR(255), and the row went out again every lease.
    let label = "a".repeat(59);
    let domain = format!("{label}.{label}.{label}.{label}.org");
    let from = format!("n@{domain}");
    let id = odd_row(
        &db.pool,
        "maya@example.com",
        &format!("from_email = '{from}'"),
    )
    .await;
    let app = app(settings(&db, None, Some(outbox.path()), &[]));

    let tally = app.drain().await.unwrap();
    assert_eq!(tally.get(EmailStatus::Sent), 1, "{tally}");
    let r = row(&db.pool, id).await;
    assert_eq!(r.status, "sent");
    let mid = r.provider_message_id.unwrap();
    assert!(mid.len() <= 255, "{mid}");
    let eml = std::fs::read_to_string(outbox.path().join(format!("{id}.eml"))).unwrap();
    assert!(eml.contains(&format!("Message-ID: {mid}")), "{eml}");
}

#[tokio::test]
async fn a_sent_result_the_table_refuses_costs_its_own_row_and_is_not_sent_again() {
    let db = TestDb::new().await;
    let smtp = TestSmtp::start().await;
    let ids = good_rows(&db, 6).await;
    let refused = ids[2];
    // A value the table refuses for one row's result (as a too-long provider_message_id
    // was): the statement fails with SQLSTATE 22001.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE FUNCTION refuse_one() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           IF NEW.email_id = '{refused}' AND NEW.status = 'sent' AND NEW.provider_message_id IS NOT NULL THEN
             RAISE EXCEPTION 'value too long' USING ERRCODE = '22001';
           END IF;
           RETURN NEW;
         END $$;
         CREATE TRIGGER refuse_one BEFORE UPDATE ON email_queue
           FOR EACH ROW EXECUTE FUNCTION refuse_one();"
    )))
    .execute(&db.pool)
    .await
    .unwrap();
    let app = app(settings(&db, Some(&smtp.url()), None, &[]));

    let tally = app.drain().await.unwrap();
    assert_eq!(tally.get(EmailStatus::Sent), 6, "{tally}");
    for id in &ids {
        assert_eq!(row(&db.pool, *id).await.status, "sent");
    }
    assert_eq!(row(&db.pool, refused).await.provider_message_id, None);
    assert_eq!(smtp.messages().len(), 6, "each email went exactly once");
    // Nothing is left for the reaper to send again.
    let later = Utc::now().naive_utc() + chrono::Duration::hours(1);
    assert_eq!(
        queue::reclaim_expired_at(&db.pool, later, Duration::from_secs(30), 3)
            .await
            .unwrap(),
        0
    );
}

#[tokio::test]
async fn an_immediate_row_is_due_whatever_the_inserting_sessions_time_zone() {
    let db = TestDb::new().await;
    let smtp = TestSmtp::start().await;
    // Services insert with the seed's DEFAULT CURRENT_TIMESTAMP from their own session:
    // Berlin writes local time, an hour or two ahead of UTC.
    let mut conn = db.pool.acquire().await.unwrap();
    sqlx::query("SET TimeZone = 'Asia/Tokyo'")
        .execute(&mut *conn)
        .await
        .unwrap();
    let tokyo: uuid::Uuid = sqlx::query_scalar(
        "INSERT INTO email_queue (from_email, to_email, subject, html_content, type)
         VALUES ('noreply@adoptdontshop.com', 'tokyo@example.com', 'Hi', '<p>Hi</p>', 'transactional')
         RETURNING email_id",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    sqlx::query("RESET TimeZone")
        .execute(&mut *conn)
        .await
        .unwrap();
    drop(conn);
    // A row scheduled for later stays, whatever its created_at.
    let later = odd_row(
        &db.pool,
        "later@example.com",
        "scheduled_for = (now() AT TIME ZONE 'UTC') + interval '1 hour', created_at = '2020-01-01'",
    )
    .await;
    let app = app(settings(&db, Some(&smtp.url()), None, &[]));

    app.drain().await.unwrap();
    assert_eq!(row(&db.pool, tokyo).await.status, "sent");
    assert_eq!(row(&db.pool, later).await.status, "queued");
}

#[tokio::test]
async fn the_scheduled_reaper_uses_the_database_clock_not_the_hosts() {
    let db = TestDb::new().await;
    let id = NewEmail::to("maya@example.com").insert(&db.pool).await;
    queue::claim_due(&db.pool, 10).await.unwrap();
    let jobs = Jobs::new(db.pool.clone(), &settings(&db, None, None, &[]));
    // A host whose clock runs ten minutes ahead ticks: the row is mid-send by the
    // database's clock and stays with its worker.
    let ahead = Utc::now() + chrono::Duration::minutes(10);
    let report = jobs.run_tick(JobName::Reclaim, ahead).await.unwrap();
    assert_eq!(report.rows_affected, 0, "{report}");
    assert_eq!(row(&db.pool, id).await.status, "sending");
    // `--now` still travels in time, for tests and operators (another slot: each runs once).
    let told = ahead + chrono::Duration::seconds(1);
    let report = jobs.run_once(JobName::Reclaim, told).await.unwrap();
    assert_eq!(report.rows_affected, 1, "{report}");
}

#[tokio::test]
async fn a_250_after_the_reaper_gave_up_ends_the_row_sent() {
    let db = TestDb::new().await;
    let mut e = NewEmail::to("maya@example.com");
    e.max_retries = Some(0);
    let id = e.insert(&db.pool).await;
    let claimed = queue::claim_due(&db.pool, 10).await.unwrap();
    let later = Utc::now().naive_utc() + chrono::Duration::minutes(5);
    queue::reclaim_expired_at(&db.pool, later, Duration::from_secs(30), 3)
        .await
        .unwrap();
    assert_eq!(row(&db.pool, id).await.status, "failed");

    let r = queue::mark_sent(&db.pool, &claimed[0], "smtp", Some("<q1>"), None)
        .await
        .unwrap();
    assert_eq!(r, Recorded::Written(EmailStatus::Sent));
    let r = row(&db.pool, id).await;
    assert_eq!(r.status, "sent", "an admin retry would have sent it again");
    assert_eq!(r.failure_reason, None);
}

#[tokio::test]
async fn a_send_that_would_leave_no_time_to_record_its_result_is_not_started() {
    let db = TestDb::new().await;
    let smtp = TestSmtp::start().await;
    let id = NewEmail::to("maya@example.com").insert(&db.pool).await;
    // Lease 8 s, SMTP timeout 5 s: the result needs 1.5 s of the 3 s left.
    let app = app(settings(
        &db,
        Some(&smtp.url()),
        None,
        &[("ADOPT__WORKER__LEASE_SECS", "8")],
    ));
    let mut claimed = queue::claim_due(&db.pool, 1).await.unwrap();
    // 2 s after the claim, a send bounded by 5 s would end before the lease (7 < 8) but
    // leave its result write racing the reaper.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let r = app.deliverer.deliver(claimed.remove(0)).await;
    assert_eq!(r, Recorded::Written(EmailStatus::Queued));
    assert_eq!(smtp.message_count(), 0);
    assert_eq!(row(&db.pool, id).await.current_retries, Some(0));
}
