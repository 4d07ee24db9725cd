//! Bounces that come back by mail: the VERP envelope sender (`bounce.return_path`), and
//! `adopt-worker bounces ingest` / `POST /v1/webhooks/dsn` applying DSNs and abuse reports
//! to the rows over real SQL (docs/bounces.md "Bounces and complaints").

use crate::helpers::*;

const RETURN_PATH: &str = "bounces+{email_id}@bounces.example.org";

#[tokio::test]
async fn verp_sets_the_envelope_sender_per_email_and_leaves_from_alone() {
    let db = TestDb::new().await;
    let smtp = TestSmtp::start().await;
    let mut e = NewEmail::to("maya@example.com");
    e.cc = Some(vec!["foster@example.com".into()]);
    e.bcc = Some(vec!["audit@example.com".into()]);
    let id = e.insert(&db.pool).await;
    let app = app(settings(
        &db,
        Some(&smtp.url()),
        None,
        &[("ADOPT__BOUNCE__RETURN_PATH", RETURN_PATH)],
    ));
    app.drain().await.unwrap();
    assert_eq!(row(&db.pool, id).await.status, "sent");
    let m = &smtp.messages()[0];
    assert_eq!(m.mail_from, format!("bounces+{id}@bounces.example.org"));
    assert_eq!(
        m.rcpt_to,
        [
            "maya@example.com",
            "foster@example.com",
            "audit@example.com"
        ],
        "every recipient is still in the envelope"
    );
    let from = m.header("From").unwrap();
    assert!(from.contains("rescues@adoptdontshop.com"), "{from}");
    assert_eq!(m.header("Bcc"), None, "Bcc stays out of the headers");
    assert_eq!(m.header("Return-Path"), None, "the receiving MTA adds that");

    // Without it, the envelope sender is the From address, as before.
    let db2 = TestDb::new().await;
    let smtp2 = TestSmtp::start().await;
    NewEmail::to("maya@example.com").insert(&db2.pool).await;
    app_default(&db2, &smtp2).await;
    assert_eq!(smtp2.messages()[0].mail_from, "rescues@adoptdontshop.com");
}

async fn app_default(db: &TestDb, smtp: &TestSmtp) {
    app(settings(db, Some(&smtp.url()), None, &[]))
        .drain()
        .await
        .unwrap();
}

// ---------------------------------------------------------------------------------------
// Ingest: every effect over real SQL, idempotence, matching, exit codes.
// ---------------------------------------------------------------------------------------

use adopt_worker::bounces::{IngestSettings, Ingested, MatchedBy, ReturnPath, ingest};
use adopt_worker::metrics::DsnResult;
use uuid::Uuid;

/// The id the sample files are written about (src/bounces/dsn/tests.rs).
const SAMPLE_ID: &str = "0b7f1c2e-4d5a-4f3b-9c8d-1e2f3a4b5c6d";

/// A sample from tests/data/bounces, about the email `id`.
fn sample(name: &str, id: Uuid) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/bounces")
        .join(format!("{name}.eml"));
    std::fs::read_to_string(path)
        .unwrap()
        .replace(SAMPLE_ID, &id.to_string())
        .into_bytes()
}

fn ingest_settings(threshold: i32) -> IngestSettings {
    IngestSettings {
        return_path: ReturnPath::parse(RETURN_PATH).unwrap(),
        soft_bounce_threshold: threshold,
    }
}

async fn run_ingest(db: &TestDb, raw: &[u8], recipient: Option<&str>) -> Ingested {
    ingest::ingest(&db.pool, &ingest_settings(5), raw, recipient)
        .await
        .unwrap()
}

/// A row the relay accepted, to `to`, `status` (sent, delivered, ...).
async fn sent_row(db: &TestDb, to: &str, user: Option<Uuid>, status: &str) -> Uuid {
    let mut e = NewEmail::to(to);
    e.user_id = user;
    let id = e.insert(&db.pool).await;
    sqlx::query(
        "UPDATE email_queue SET status = $2::email_status_enum, sent_at = now(),
             provider_id = 'smtp', provider_message_id = '3Fq9Wd0Yz1z2Bx'
         WHERE email_id = $1",
    )
    .bind(id)
    .bind(status)
    .execute(&db.pool)
    .await
    .unwrap();
    id
}

/// Everything an ingest could change, to compare before and after.
async fn snapshot(db: &TestDb) -> String {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT concat_ws('|', email_id, status, failure_reason, tracking::text, updated_at)
         FROM email_queue ORDER BY email_id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let prefs: Vec<(String,)> = sqlx::query_as(
        "SELECT concat_ws('|', user_id, bounce_count, is_blacklisted, blacklist_reason, updated_at)
         FROM email_preferences ORDER BY user_id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let sups: Vec<(String,)> = sqlx::query_as(
        "SELECT concat_ws('|', email, bounce_count, is_blacklisted, blacklist_reason, updated_at)
         FROM email_suppressions ORDER BY email",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    format!("{rows:?}\n{prefs:?}\n{sups:?}")
}

async fn prefs(db: &TestDb, user: Uuid) -> (Option<bool>, Option<String>, Option<i32>) {
    sqlx::query_as(
        "SELECT is_blacklisted, blacklist_reason, bounce_count FROM email_preferences WHERE user_id = $1",
    )
    .bind(user)
    .fetch_one(&db.pool)
    .await
    .unwrap()
}

async fn suppression(db: &TestDb, address: &str) -> Option<(bool, Option<String>, i32)> {
    sqlx::query_as(
        "SELECT is_blacklisted, blacklist_reason, bounce_count FROM email_suppressions WHERE email = $1",
    )
    .bind(address)
    .fetch_optional(&db.pool)
    .await
    .unwrap()
}

async fn counts(db: &TestDb) -> std::collections::BTreeMap<String, i64> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT result, total FROM worker_dsn_ingest_counts")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    rows.into_iter().collect()
}

fn verp(id: Uuid) -> String {
    format!("bounces+{id}@bounces.example.org")
}

#[tokio::test]
async fn a_postfix_hard_bounce_bounces_the_row_blacklists_and_suppresses_the_next_email() {
    let db = TestDb::new().await;
    let user = insert_user(&db.pool, "maya.okafor@example.net").await;
    let id = sent_row(&db, "maya.okafor@example.net", Some(user), "sent").await;

    let done = run_ingest(&db, &sample("postfix_hard", id), Some(&verp(id))).await;
    assert_eq!(done.result, DsnResult::HardBounce, "{done}");
    assert_eq!(done.email_id, Some(id));
    assert_eq!(done.matched_by, Some(MatchedBy::ReturnPath));
    let r = row(&db.pool, id).await;
    assert_eq!(r.status, "bounced");
    let reason = r.failure_reason.unwrap();
    assert!(
        reason.starts_with("hard bounce reported by a delivery status notification: 550 5.1.1"),
        "{reason}"
    );
    let t = r.tracking.unwrap();
    assert_eq!(t["bounceType"], "hard");
    assert_eq!(t["bounceCode"], "550 5.1.1");
    assert!(t["bounceReason"].as_str().unwrap().contains("User unknown"));
    assert!(t["bouncedAt"].is_string());
    let (blacklisted, why, count) = prefs(&db, user).await;
    assert_eq!((blacklisted, count), (Some(true), Some(1)));
    assert!(why.unwrap().starts_with("hard bounce: 550 5.1.1"));

    // The same DSN again changes nothing.
    let before = snapshot(&db).await;
    let again = run_ingest(&db, &sample("postfix_hard", id), Some(&verp(id))).await;
    assert_eq!(again.result, DsnResult::Duplicate, "{again}");
    assert_eq!(snapshot(&db).await, before);

    // The next email to them is not sent.
    let mut next = NewEmail::to("maya.okafor@example.net");
    next.user_id = Some(user);
    let next = next.insert(&db.pool).await;
    let outbox = tempfile::tempdir().unwrap();
    app(settings(&db, None, Some(outbox.path()), &[]))
        .drain()
        .await
        .unwrap();
    let r = row(&db.pool, next).await;
    assert_eq!(r.status, "failed");
    assert!(r.failure_reason.unwrap().starts_with("suppressed:"));

    assert_eq!(
        counts(&db).await,
        [("duplicate".to_string(), 1), ("hard_bounce".to_string(), 1)].into()
    );
}

#[tokio::test]
async fn hard_bounces_from_every_shape_bounce_delivered_rows_of_non_users_too() {
    let db = TestDb::new().await;
    for (name, to) in [
        ("gmail_hard", "ana.silva@gmail.com"),
        ("exchange_ndr", "sam@contoso.com"),
        ("exim_text", "jordan@example.com"),
        ("yahoo_text", "lee.parker@yahoo.com"),
        ("qmail_text", "kai@example.net"),
    ] {
        let id = sent_row(&db, to, None, "delivered").await;
        // No --recipient: the headers name the VERP address.
        let done = run_ingest(&db, &sample(name, id), None).await;
        assert_eq!(done.result, DsnResult::HardBounce, "{name}: {done}");
        assert_eq!(done.email_id, Some(id), "{name}");
        assert_eq!(row(&db.pool, id).await.status, "bounced", "{name}");
        let (blacklisted, why, _) = suppression(&db, to).await.unwrap();
        assert!(blacklisted, "{name}");
        assert!(why.unwrap().starts_with("hard bounce"), "{name}");
    }
}

#[tokio::test]
async fn soft_bounces_count_toward_the_threshold_once_each() {
    let db = TestDb::new().await;
    let settings = ingest_settings(2);
    let first = sent_row(&db, "ana.silva@gmail.com", None, "sent").await;
    let second = sent_row(&db, "ana.silva@gmail.com", None, "opened").await;

    let done = ingest::ingest(
        &db.pool,
        &settings,
        &sample("gmail_over_quota", first),
        None,
    )
    .await
    .unwrap();
    assert_eq!(done.result, DsnResult::SoftBounce, "{done}");
    let r = row(&db.pool, first).await;
    assert_eq!(r.status, "bounced");
    assert_eq!(r.tracking.unwrap()["bounceType"], "soft");
    assert_eq!(
        suppression(&db, "ana.silva@gmail.com").await,
        Some((false, None, 1))
    );
    // Again: no second count.
    let done = ingest::ingest(
        &db.pool,
        &settings,
        &sample("gmail_over_quota", first),
        None,
    )
    .await
    .unwrap();
    assert_eq!(done.result, DsnResult::Duplicate);
    assert_eq!(suppression(&db, "ana.silva@gmail.com").await.unwrap().2, 1);

    ingest::ingest(
        &db.pool,
        &settings,
        &sample("gmail_over_quota", second),
        None,
    )
    .await
    .unwrap();
    let (blacklisted, why, count) = suppression(&db, "ana.silva@gmail.com").await.unwrap();
    assert_eq!((blacklisted, count), (true, 2), "the threshold is 2");
    assert!(why.unwrap().starts_with("too many soft bounces"));
}

#[tokio::test]
async fn the_email_is_found_by_message_id_or_queue_id_or_not_at_all() {
    let db = TestDb::new().await;
    let id = sent_row(&db, "maya.okafor@example.net", None, "sent").await;
    // No VERP address anywhere: the returned headers' Message-ID names it.
    let raw = sample("postfix_full_no_original_recipient", id);
    let done = run_ingest(&db, &raw, None).await;
    assert_eq!(
        (done.result, done.matched_by),
        (DsnResult::SoftBounce, Some(MatchedBy::MessageId)),
        "{done}"
    );

    // Without the Message-ID either: the relay's queue id (provider_message_id).
    let id2 = sent_row(&db, "maya.okafor@example.net", None, "sent").await;
    sqlx::query("UPDATE email_queue SET provider_message_id = NULL WHERE email_id = $1")
        .bind(id)
        .execute(&db.pool)
        .await
        .unwrap();
    let text = String::from_utf8(raw).unwrap();
    let no_id = text.replace(&format!("Message-ID: <{id}@adoptdontshop.com>\n"), "");
    let done = run_ingest(&db, no_id.as_bytes(), None).await;
    assert_eq!(
        (done.result, done.email_id, done.matched_by),
        (DsnResult::SoftBounce, Some(id2), Some(MatchedBy::QueueId)),
        "{done}"
    );

    // Nothing names an email of ours.
    let nothing = no_id.replace("3Fq9Wd0Yz1z2Bx", "0000000000000");
    let before = snapshot(&db).await;
    let done = run_ingest(&db, nothing.as_bytes(), None).await;
    assert_eq!(done.result, DsnResult::Unmatched, "{done}");
    assert!(done.detail.contains("maya.okafor@example.net"), "{done}");
    assert_eq!(snapshot(&db).await, before);
    // A VERP address of an email that does not exist is unmatched too.
    let done = run_ingest(&db, nothing.as_bytes(), Some(&verp(Uuid::new_v4()))).await;
    assert_eq!(done.result, DsnResult::Unmatched);
}

#[tokio::test]
async fn delivered_and_delayed_reports() {
    let db = TestDb::new().await;
    let id = sent_row(&db, "maya.okafor@example.net", None, "sent").await;
    let done = run_ingest(&db, &sample("postfix_relayed", id), None).await;
    assert_eq!(done.result, DsnResult::Delivered, "{done}");
    let r = row(&db.pool, id).await;
    assert_eq!(r.status, "delivered");
    assert!(r.tracking.unwrap()["deliveredAt"].is_string());
    let before = snapshot(&db).await;
    let again = run_ingest(&db, &sample("postfix_relayed", id), None).await;
    assert_eq!(again.result, DsnResult::Duplicate);
    assert_eq!(snapshot(&db).await, before);

    let id = sent_row(&db, "maya.okafor@example.net", None, "sent").await;
    let before = snapshot(&db).await;
    let done = run_ingest(&db, &sample("postfix_delayed", id), None).await;
    assert_eq!(done.result, DsnResult::Delayed, "{done}");
    assert_eq!(snapshot(&db).await, before, "a delay changes no row");
    assert_eq!(counts(&db).await["delayed"], 1);
}

#[tokio::test]
async fn a_policy_refusal_fails_the_row_without_blaming_the_recipient() {
    let db = TestDb::new().await;
    let id = sent_row(&db, "jordan@example.com", None, "sent").await;
    let done = run_ingest(&db, &sample("exim_dsn_policy", id), None).await;
    assert_eq!(done.result, DsnResult::Failed, "{done}");
    let r = row(&db.pool, id).await;
    assert_eq!(r.status, "failed");
    assert_eq!(r.tracking.unwrap()["bounceType"], "permanent");
    assert!(r.failure_reason.unwrap().contains("5.7.1"));
    assert_eq!(suppression(&db, "jordan@example.com").await, None);
    let again = run_ingest(&db, &sample("exim_dsn_policy", id), None).await;
    assert_eq!(again.result, DsnResult::Duplicate);
}

#[tokio::test]
async fn a_complaint_blacklists_as_the_complained_event_does() {
    let db = TestDb::new().await;
    let user = insert_user(&db.pool, "lee.parker@yahoo.com").await;
    let id = sent_row(&db, "lee.parker@yahoo.com", Some(user), "opened").await;
    let done = run_ingest(&db, &sample("yahoo_arf", id), None).await;
    assert_eq!(
        (done.result, done.matched_by),
        (DsnResult::Complaint, Some(MatchedBy::ReturnPath)),
        "{done}"
    );
    let r = row(&db.pool, id).await;
    assert_eq!(r.status, "opened", "the status stays");
    assert!(r.tracking.unwrap()["complainedAt"].is_string());
    let (blacklisted, why, _) = prefs(&db, user).await;
    assert_eq!(
        (blacklisted, why.as_deref()),
        (Some(true), Some("complaint"))
    );
    let before = snapshot(&db).await;
    let again = run_ingest(&db, &sample("yahoo_arf", id), None).await;
    assert_eq!(again.result, DsnResult::Duplicate);
    assert_eq!(snapshot(&db).await, before);
}

#[tokio::test]
async fn auto_replies_and_spam_are_ignored_and_counted() {
    let db = TestDb::new().await;
    let id = sent_row(&db, "sam@contoso.com", None, "sent").await;
    let before = snapshot(&db).await;
    for name in ["out_of_office", "spam"] {
        let done = run_ingest(&db, &sample(name, id), Some(&verp(id))).await;
        assert_eq!(done.result, DsnResult::Ignored, "{name}: {done}");
    }
    let done = run_ingest(&db, b"", None).await;
    assert_eq!(done.result, DsnResult::Ignored, "{done}");
    assert_eq!(snapshot(&db).await, before);
    assert_eq!(counts(&db).await, [("ignored".to_string(), 3)].into());
}

#[tokio::test]
async fn a_bounced_cc_is_counted_against_the_cc_only() {
    let db = TestDb::new().await;
    let mut e = NewEmail::to("maya@example.com");
    e.cc = Some(vec!["Sam@Contoso.com".into()]);
    let id = e.insert(&db.pool).await;
    sqlx::query("UPDATE email_queue SET status = 'sent' WHERE email_id = $1")
        .bind(id)
        .execute(&db.pool)
        .await
        .unwrap();
    let done = run_ingest(&db, &sample("exchange_ndr", id), None).await;
    assert_eq!(done.result, DsnResult::HardBounce, "{done}");
    let r = row(&db.pool, id).await;
    assert_eq!(r.status, "sent", "only the To bounces an email");
    let refused = &r.tracking.unwrap()["refusedRecipients"];
    assert_eq!(refused[0]["address"], "Sam@Contoso.com");
    assert_eq!(refused[0]["via"], "dsn");
    assert!(suppression(&db, "sam@contoso.com").await.unwrap().0);
    assert_eq!(suppression(&db, "maya@example.com").await, None);
    let before = snapshot(&db).await;
    let again = run_ingest(&db, &sample("exchange_ndr", id), None).await;
    assert_eq!(again.result, DsnResult::Duplicate, "{again}");
    assert_eq!(snapshot(&db).await, before);
}

#[tokio::test]
async fn a_report_for_a_row_never_sent_changes_nothing() {
    let db = TestDb::new().await;
    let id = NewEmail::to("maya.okafor@example.net")
        .insert(&db.pool)
        .await; // queued
    let before = snapshot(&db).await;
    let done = run_ingest(&db, &sample("postfix_hard", id), None).await;
    assert_eq!(done.result, DsnResult::Ignored, "{done}");
    assert_eq!(snapshot(&db).await, before);
}

/// The binary as Postfix's pipe runs it: one line on stderr, exit 0 whatever the message
/// (applied, ignored, unmatched), 75 when the database is down, 66 for a missing FILE.
#[tokio::test]
async fn the_command_exits_as_an_mta_expects() {
    let db = TestDb::new().await;
    let id = sent_row(&db, "maya.okafor@example.net", None, "sent").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dsn.eml");
    std::fs::write(&file, sample("postfix_hard", id)).unwrap();
    let run = |db_url: &str, args: &[&str], stdin: Option<Vec<u8>>| {
        use std::io::Write;
        let mut child = bin()
            .args(["bounces", "ingest"])
            .args(args)
            .env("DATABASE_URL", db_url)
            .env("ADOPT__BOUNCE__RETURN_PATH", RETURN_PATH)
            .env("ADOPT__DATABASE__ACQUIRE_TIMEOUT_SECS", "2")
            .env("RUST_LOG", "debug")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        input.write_all(&stdin.unwrap_or_default()).unwrap();
        drop(input);
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.stdout.is_empty(), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        (out.status.code(), stderr)
    };
    let recipient = verp(id);

    let (code, line) = run(
        &db.url,
        &[file.to_str().unwrap(), "--recipient", &recipient],
        None,
    );
    assert_eq!(code, Some(0), "{line}");
    assert!(
        line.starts_with(&format!("bounces ingest: hard_bounce: email {id}")),
        "{line}"
    );
    assert_eq!(row(&db.pool, id).await.status, "bounced");

    // From standard input, the same DSN: already applied.
    let (code, line) = run(
        &db.url,
        &["--recipient", &recipient],
        Some(sample("postfix_hard", id)),
    );
    assert_eq!(code, Some(0), "{line}");
    assert!(line.starts_with("bounces ingest: duplicate:"), "{line}");

    let (code, line) = run(&db.url, &[], Some(sample("out_of_office", id)));
    assert_eq!(
        (code, line.starts_with("bounces ingest: ignored:")),
        (Some(0), true),
        "{line}"
    );
    let (code, line) = run(
        &db.url,
        &["--recipient", &verp(Uuid::new_v4())],
        Some(b"From: MAILER-DAEMON@x.example\nSubject: Undelivered Mail\n\n550 5.1.1 <x@y.example>: User unknown\n".to_vec()),
    );
    assert_eq!(
        (code, line.starts_with("bounces ingest: unmatched:")),
        (Some(0), true),
        "{line}"
    );

    // A closed port: the MTA keeps the message and retries.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let (code, line) = run(
        &format!("postgres://postgres@127.0.0.1:{port}/nowhere"),
        &["--recipient", &recipient],
        Some(sample("postfix_hard", id)),
    );
    assert_eq!(code, Some(75), "{line}");
    assert!(line.contains("try again later"), "{line}");

    let (code, line) = run(&db.url, &["/nonexistent/dsn.eml"], None);
    assert_eq!(code, Some(66), "{line}");
}

/// The pipe's process lives for one message: its counts reach /metrics of the running
/// processes through the database.
#[tokio::test]
async fn ingest_counts_reach_metrics_through_the_database() {
    let db = TestDb::new().await;
    let id = sent_row(&db, "maya.okafor@example.net", None, "sent").await;
    run_ingest(&db, &sample("postfix_hard", id), None).await;
    run_ingest(&db, &sample("spam", id), None).await;
    let running = Running::start_api_only(settings(
        &db,
        None,
        None,
        &[("ADOPT__METRICS__SAMPLE_INTERVAL_SECS", "1")],
    ))
    .await;
    let http = reqwest::Client::new();
    let mut text = String::new();
    let mut seen = false;
    for _ in 0..100 {
        text = http
            .get(running.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        seen = value(&text, "hard_bounce").is_some_and(|v| v >= 1.0);
        if seen {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    running.stop().await;
    // (The recorder is shared by every test of this binary: at least, not exactly.)
    assert!(seen, "{text}");
    assert!(value(&text, "ignored").is_some_and(|v| v >= 1.0), "{text}");
    assert!(
        value(&text, "unmatched").is_some(),
        "every result is exported: {text}"
    );
}

/// The value of `adopt_worker_dsn_ingested_total{result="..."}` in a /metrics text.
fn value(text: &str, result: &str) -> Option<f64> {
    let prefix = format!("adopt_worker_dsn_ingested_total{{result=\"{result}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}
