//! Rows other services write that our types cannot hold, mixed into a normal drain: each
//! must fail alone, and not one good row may be lost, failed or delayed past the drain.

use std::time::Duration;

use crate::harness::{LegitFinal, Run};

const ROWS: usize = 10_000;

/// What a poison row's `failure_reason` starts with (delivery's per-row decoding check).
const POISON_REASON: &str = "the row cannot be sent as stored";

/// 10,000 good rows and 200 poison rows inserted while three processes drain them, so that
/// poison lands in most claim batches: JSON numbers out of range in `metadata` and
/// `template_data`, NULL Cc/Bcc addresses, and harmless oddities that must still be sent
/// (a NULL tag, `created_at = '-infinity'`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "chaos suite: run with scripts/chaos"]
async fn poison_rows_mixed_into_the_queue() {
    let mut run = Run::start("poison_rows", ROWS, 3).await;
    let mut conn = run.connect_retrying().await;
    let poison: u64 = sqlx::query(
        "INSERT INTO email_queue (from_email, to_email, subject, html_content, type, priority,
                                  metadata, template_data, cc_emails, bcc_emails)
         SELECT 'noreply@adoptdontshop.com', 'poison' || i || '@example.com', 'Poison ' || i,
                '<p>Poison</p>', 'transactional', 'normal',
                CASE WHEN i % 4 = 0 THEN '{\"n\": 1e400}'::jsonb ELSE '{}'::jsonb END,
                CASE WHEN i % 4 = 1 THEN '{\"n\": -1e400}'::jsonb END,
                CASE WHEN i % 4 = 2 THEN ARRAY['cc@example.com', NULL] END,
                CASE WHEN i % 4 = 3 THEN ARRAY[NULL]::text[] END
         FROM generate_series(1, 200) AS i",
    )
    .execute(&mut conn)
    .await
    .unwrap()
    .rows_affected();
    let harmless: u64 = sqlx::query(
        "INSERT INTO email_queue (from_email, to_email, subject, html_content, type, tags, created_at)
         SELECT 'noreply@adoptdontshop.com', 'odd' || i || '@example.com', 'Odd ' || i,
                '<p>Odd</p>', 'transactional',
                CASE WHEN i % 2 = 0 THEN ARRAY['x', NULL] END,
                CASE WHEN i % 2 = 1 THEN '-infinity'::timestamp ELSE now() AT TIME ZONE 'UTC' END
         FROM generate_series(1, 100) AS i",
    )
    .execute(&mut conn)
    .await
    .unwrap()
    .rows_affected();
    run.notes.push(format!(
        "{poison} poison rows and {harmless} odd but sendable rows inserted during the drain"
    ));
    run.until_delivered(1.0, Duration::from_secs(180)).await;
    let failed_poison: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM email_queue WHERE status = 'failed' AND failure_reason LIKE $1",
    )
    .bind(format!("{POISON_REASON}%"))
    .fetch_one(&mut conn)
    .await
    .unwrap();
    if failed_poison != poison as i64 {
        run.problems.push(format!(
            "{failed_poison} of {poison} poison rows ended failed with the decoding reason"
        ));
    }
    let legit: LegitFinal = Some(Box::new(|status: &str, reason: &str| {
        status == "failed" && reason.starts_with(POISON_REASON)
    }));
    run.finish(legit).await.save_and_assert();
}
