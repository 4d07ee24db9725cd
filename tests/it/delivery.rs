//! Delivery that never loses or doubles mail: retries, bounces, preferences, leases,
//! wake-ups, priority, shutdown (docs/delivery.md "How a row is delivered": the email_queue state machine).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::helpers::*;

#[tokio::test]
async fn transient_4xx_requeues_with_backoff_until_retries_run_out() {
    let db = TestDb::new().await;
    let smtp = TestSmtp::start().await;
    smtp.add_rule(Rule::reply(
        Command::Rcpt,
        451,
        "4.3.0 mailbox temporarily unavailable",
    ));
    let id = NewEmail::to("maya@example.com").insert(&db.pool).await; // max_retries = 3
    let app = app(settings(&db, Some(&smtp.url()), None, &[]));

    app.drain().await.unwrap();
    let r = row(&db.pool, id).await;
    assert_eq!(r.status, "queued");
    assert_eq!(r.current_retries, Some(1));
    let wait = r.scheduled_for.unwrap() - r.last_attempt_at.unwrap();
    assert!(
        (59..=61).contains(&wait.num_seconds()),
        "first retry after ~60s, got {wait}"
    );
    assert_eq!(
        r.failure_reason.as_deref(),
        Some("smtp 451 4.3.0 mailbox temporarily unavailable")
    );

    for expected in [2, 3] {
        make_all_due(&db.pool).await;
        app.drain().await.unwrap();
        let r = row(&db.pool, id).await;
        assert_eq!(
            (r.status.as_str(), r.current_retries),
            ("queued", Some(expected))
        );
    }
    let r = row(&db.pool, id).await;
    let wait = r.scheduled_for.unwrap() - r.last_attempt_at.unwrap();
    assert!(
        (239..=241).contains(&wait.num_seconds()),
        "third retry after ~240s, got {wait}"
    );

    make_all_due(&db.pool).await;
    app.drain().await.unwrap();
    let r = row(&db.pool, id).await;
    assert_eq!(r.status, "failed");
    assert_eq!(
        r.current_retries,
        Some(3),
        "current_retries never passes max_retries"
    );
    assert!(
        r.failure_reason
            .unwrap()
            .contains("gave up after 3 retries")
    );
    assert_eq!(
        smtp.commands(Command::Rcpt),
        4,
        "one first attempt + three retries"
    );
}

#[tokio::test]
async fn null_max_retries_uses_the_configured_default_and_zero_means_no_retry() {
    let db = TestDb::new().await;
    let smtp = TestSmtp::start().await;
    smtp.add_rule(Rule::reply(Command::Rcpt, 451, "4.3.0 try later"));
    let mut e = NewEmail::to("a@example.com");
    e.max_retries = None;
    let default = e.insert(&db.pool).await;
    let mut e = NewEmail::to("b@example.com");
    e.max_retries = Some(0);
    let none = e.insert(&db.pool).await;
    let app = app(settings(
        &db,
        Some(&smtp.url()),
        None,
        &[("ADOPT__RETRY__DEFAULT_MAX_RETRIES", "1")],
    ));
    app.drain().await.unwrap();
    assert_eq!(row(&db.pool, none).await.status, "failed");
    assert_eq!(row(&db.pool, default).await.current_retries, Some(1));
    make_all_due(&db.pool).await;
    app.drain().await.unwrap();
    let r = row(&db.pool, default).await;
    assert_eq!((r.status.as_str(), r.current_retries), ("failed", Some(1)));
}

#[tokio::test]
async fn a_retry_hint_in_the_reply_is_honoured() {
    let db = TestDb::new().await;
    let smtp = TestSmtp::start().await;
    smtp.add_rule(Rule::reply(
        Command::Rcpt,
        451,
        "4.7.1 greylisted, please try again in 300 seconds",
    ));
    let id = NewEmail::to("maya@example.com").insert(&db.pool).await;
    app(settings(&db, Some(&smtp.url()), None, &[]))
        .drain()
        .await
        .unwrap();
    let r = row(&db.pool, id).await;
    let wait = r.scheduled_for.unwrap() - r.last_attempt_at.unwrap();
    assert!((299..=301).contains(&wait.num_seconds()), "got {wait}");
}

#[tokio::test]
async fn hard_bounce_blacklists_and_the_next_email_is_suppressed_without_smtp() {
    let db = TestDb::new().await;
    let smtp = TestSmtp::start().await;
    let user = insert_user(&db.pool, "gone@example.com").await;
    smtp.add_rule(Rule::reply(
        Command::Rcpt,
        550,
        "5.1.1 <gone@example.com>: Recipient address rejected: User unknown",
    ));
    let first = NewEmail::to("gone@example.com").insert(&db.pool).await;
    let app = app(settings(&db, Some(&smtp.url()), None, &[]));
    app.drain().await.unwrap();

    let r = row(&db.pool, first).await;
    assert_eq!(r.status, "bounced");
    let tracking = r.tracking.unwrap();
    assert_eq!(tracking["bounceType"], "hard");
    assert_eq!(tracking["bounceCode"], 550);
    assert!(tracking["bouncedAt"].is_string());
    let (count, blacklisted, reason, at): (i32, bool, String, Option<chrono::NaiveDateTime>) = sqlx::query_as(
        "SELECT bounce_count, is_blacklisted, blacklist_reason, blacklisted_at FROM email_preferences WHERE user_id = $1",
    )
    .bind(user)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!((count, blacklisted), (1, true));
    assert!(reason.contains("550 5.1.1"), "{reason}");
    assert!(at.is_some());

    smtp.clear_rules();
    let rcpts_before = smtp.commands(Command::Rcpt);
    let second = NewEmail::to("Gone@Example.com").insert(&db.pool).await;
    app.drain().await.unwrap();
    let r = row(&db.pool, second).await;
    assert_eq!(r.status, "failed");
    assert!(r.failure_reason.unwrap().starts_with("suppressed"));
    assert_eq!(
        smtp.commands(Command::Rcpt),
        rcpts_before,
        "no SMTP traffic for a suppressed recipient"
    );
}

#[tokio::test]
async fn bounces_to_non_users_are_kept_in_email_suppressions() {
    let db = TestDb::new().await;
    let smtp = TestSmtp::start().await;
    smtp.add_rule(Rule::reply(Command::Rcpt, 550, "5.1.1 user unknown"));
    NewEmail::to("contact@closed-rescue.org")
        .insert(&db.pool)
        .await;
    let app = app(settings(&db, Some(&smtp.url()), None, &[]));
    app.drain().await.unwrap();
    let blacklisted: bool = sqlx::query_scalar(
        "SELECT is_blacklisted FROM email_suppressions WHERE email = 'contact@closed-rescue.org'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(blacklisted);
    smtp.clear_rules();
    let next = NewEmail::to("contact@closed-rescue.org")
        .insert(&db.pool)
        .await;
    app.drain().await.unwrap();
    assert!(
        row(&db.pool, next)
            .await
            .failure_reason
            .unwrap()
            .starts_with("suppressed")
    );
}

#[tokio::test]
async fn soft_bounces_blacklist_at_the_threshold() {
    let db = TestDb::new().await;
    let smtp = TestSmtp::start().await;
    let user = insert_user(&db.pool, "full@example.com").await;
    smtp.add_rule(Rule::reply(
        Command::Rcpt,
        452,
        "4.2.2 The email account that you tried to reach is over quota",
    ));
    let mut e = NewEmail::to("full@example.com");
    e.max_retries = Some(5);
    let id = e.insert(&db.pool).await;
    let app = app(settings(
        &db,
        Some(&smtp.url()),
        None,
        &[("ADOPT__BOUNCE__SOFT_BOUNCE_THRESHOLD", "2")],
    ));
    app.drain().await.unwrap();
    let prefs = || async {
        sqlx::query_as::<_, (i32, bool)>(
            "SELECT bounce_count, is_blacklisted FROM email_preferences WHERE user_id = $1",
        )
        .bind(user)
        .fetch_one(&db.pool)
        .await
        .unwrap()
    };
    assert_eq!(prefs().await, (1, false));
    assert_eq!(
        row(&db.pool, id).await.status,
        "queued",
        "a soft bounce is retried"
    );
    make_all_due(&db.pool).await;
    app.drain().await.unwrap();
    assert_eq!(prefs().await, (2, true));
    make_all_due(&db.pool).await;
    app.drain().await.unwrap();
    assert!(
        row(&db.pool, id)
            .await
            .failure_reason
            .unwrap()
            .starts_with("suppressed")
    );
}

#[tokio::test]
async fn preferences_gate_optional_mail_but_never_transactional_or_system() {
    let db = TestDb::new().await;
    let smtp = TestSmtp::start().await;
    let user = insert_user(&db.pool, "maya@example.com").await;
    sqlx::query(
        "INSERT INTO email_preferences (user_id, global_unsubscribe, digest_frequency, unsubscribe_token)
         VALUES ($1, true, 'immediate', 'tok')",
    )
    .bind(user)
    .execute(&db.pool)
    .await
    .unwrap();
    let mut ids = HashMap::new();
    for t in ["transactional", "system", "marketing", "notification"] {
        let mut e = NewEmail::to("maya@example.com");
        e.email_type = t;
        ids.insert(t, e.insert(&db.pool).await);
    }
    app(settings(&db, Some(&smtp.url()), None, &[]))
        .drain()
        .await
        .unwrap();
    assert_eq!(row(&db.pool, ids["transactional"]).await.status, "sent");
    assert_eq!(row(&db.pool, ids["system"]).await.status, "sent");
    for t in ["marketing", "notification"] {
        let r = row(&db.pool, ids[t]).await;
        assert_eq!(r.status, "unsubscribed", "{t}");
        assert!(r.failure_reason.unwrap().contains("global_unsubscribe"));
    }
    assert_eq!(smtp.message_count(), 2);
}

#[tokio::test]
async fn category_opt_out_text_format_and_list_unsubscribe_headers() {
    let db = TestDb::new().await;
    let smtp = TestSmtp::start().await;
    let user = insert_user(&db.pool, "maya@example.com").await;
    sqlx::query(
        "INSERT INTO email_preferences (user_id, email_format, digest_frequency, unsubscribe_token, preferences)
         VALUES ($1, 'text', 'immediate', 'tok123', '[{\"type\":\"marketing\",\"enabled\":false}]')",
    )
    .bind(user)
    .execute(&db.pool)
    .await
    .unwrap();
    let mut m = NewEmail::to("maya@example.com");
    m.email_type = "marketing";
    let marketing = m.insert(&db.pool).await;
    let mut n = NewEmail::to("maya@example.com");
    n.email_type = "notification";
    let notification = n.insert(&db.pool).await;
    let app = app(settings(
        &db,
        Some(&smtp.url()),
        None,
        &[("ADOPT__HTTP__PUBLIC_URL", "https://mail.adoptdontshop.com")],
    ));
    app.drain().await.unwrap();
    assert_eq!(row(&db.pool, marketing).await.status, "unsubscribed");
    assert_eq!(row(&db.pool, notification).await.status, "sent");
    let msg = &smtp.messages()[0];
    assert!(
        msg.header("Content-Type")
            .unwrap()
            .starts_with("text/plain"),
        "email_format = text"
    );
    assert_eq!(
        msg.header("List-Unsubscribe").unwrap(),
        "<https://mail.adoptdontshop.com/u/tok123?category=messages>"
    );
    assert_eq!(
        msg.header("List-Unsubscribe-Post").unwrap(),
        "List-Unsubscribe=One-Click"
    );
}

#[tokio::test]
async fn preferences_row_and_token_are_created_on_first_need() {
    let db = TestDb::new().await;
    let smtp = TestSmtp::start().await;
    let user = insert_user(&db.pool, "new@example.com").await;
    let mut e = NewEmail::to("new@example.com");
    e.email_type = "marketing";
    e.insert(&db.pool).await;
    app(settings(&db, Some(&smtp.url()), None, &[]))
        .drain()
        .await
        .unwrap();
    let token: String =
        sqlx::query_scalar("SELECT unsubscribe_token FROM email_preferences WHERE user_id = $1")
            .bind(user)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert!(token.len() >= 40, "random, unguessable token: {token}");
    let header = smtp.messages()[0].header("List-Unsubscribe").unwrap();
    assert!(header.contains(&token));
}

#[tokio::test]
async fn notifications_for_digest_users_are_held_and_never_suppresses_them() {
    let db = TestDb::new().await;
    let smtp = TestSmtp::start().await;
    let daily = insert_user(&db.pool, "daily@example.com").await;
    let never = insert_user(&db.pool, "never@example.com").await;
    sqlx::query("INSERT INTO email_preferences (user_id, digest_frequency) VALUES ($1, 'daily'), ($2, 'never')")
        .bind(daily)
        .bind(never)
        .execute(&db.pool)
        .await
        .unwrap();
    let mut e = NewEmail::to("daily@example.com");
    e.email_type = "notification";
    let held = e.insert(&db.pool).await;
    let mut e = NewEmail::to("never@example.com");
    e.email_type = "notification";
    let dropped = e.insert(&db.pool).await;
    app(settings(&db, Some(&smtp.url()), None, &[]))
        .drain()
        .await
        .unwrap();
    let r = row(&db.pool, held).await;
    assert_eq!(r.status, "queued");
    let infinite: bool = sqlx::query_scalar("SELECT scheduled_for = '9999-12-31' AND metadata ? 'digestHold' FROM email_queue WHERE email_id = $1")
        .bind(held)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(infinite, "held rows are never due on their own");
    assert_eq!(row(&db.pool, dropped).await.status, "unsubscribed");
    assert_eq!(smtp.message_count(), 0);

    // Unsubscribed from the digest itself (its one-click link): nothing is held for it.
    let opted = insert_user(&db.pool, "nodigest@example.com").await;
    sqlx::query(
        "INSERT INTO email_preferences (user_id, digest_frequency, preferences)
         VALUES ($1, 'weekly', '[{\"type\":\"notification_digest\",\"enabled\":false}]')",
    )
    .bind(opted)
    .execute(&db.pool)
    .await
    .unwrap();
    let mut e = NewEmail::to("nodigest@example.com");
    e.email_type = "notification";
    let not_held = e.insert(&db.pool).await;
    app(settings(&db, Some(&smtp.url()), None, &[]))
        .drain()
        .await
        .unwrap();
    let r = row(&db.pool, not_held).await;
    assert_eq!(r.status, "unsubscribed");
    assert!(r.failure_reason.unwrap().contains("digest"));
}

/// Issue 19 item 1: a user without an `email_preferences` row gets what the row created for
/// them (on first need) gives, and both follow the columns' defaults in the catalogue.
#[tokio::test]
async fn a_user_without_preferences_gets_what_the_created_row_gives() {
    let db = TestDb::new().await;
    let smtp = TestSmtp::start().await;
    let notification = |to: &str| {
        let mut e = NewEmail::to(to);
        e.email_type = "notification";
        e
    };
    let held = |id: uuid::Uuid| {
        let pool = db.pool.clone();
        async move {
            sqlx::query_scalar::<_, bool>(
                "SELECT status = 'queued' AND metadata ? 'digestHold' FROM email_queue WHERE email_id = $1",
            )
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    let frequency = |user: uuid::Uuid| {
        let pool = db.pool.clone();
        async move {
            sqlx::query_scalar::<_, String>(
                "SELECT digest_frequency::text FROM email_preferences WHERE user_id = $1",
            )
            .bind(user)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };

    // The seed's default is 'daily': the first notification is held like every later one,
    // and the row created for the digest says 'daily'.
    let user = insert_user(&db.pool, "new@example.com").await;
    let first = notification("new@example.com").insert(&db.pool).await;
    app(settings(&db, Some(&smtp.url()), None, &[]))
        .drain()
        .await
        .unwrap();
    assert!(held(first).await, "no row: the default 'daily' holds it");
    assert_eq!(frequency(user).await, "daily", "the created row agrees");
    let second = notification("new@example.com").insert(&db.pool).await;
    app(settings(&db, Some(&smtp.url()), None, &[]))
        .drain()
        .await
        .unwrap();
    assert!(held(second).await);
    assert_eq!(smtp.message_count(), 0);

    // A platform that changes the defaults is followed, row or no row.
    sqlx::query(
        "ALTER TABLE email_preferences ALTER COLUMN digest_frequency SET DEFAULT 'immediate',
                                       ALTER COLUMN email_format SET DEFAULT 'text'",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let later = insert_user(&db.pool, "later@example.com").await;
    let mut receipt = NewEmail::to("later@example.com");
    receipt.subject = "receipt".into();
    receipt.insert(&db.pool).await;
    notification("later@example.com").insert(&db.pool).await;
    app(settings(&db, Some(&smtp.url()), None, &[]))
        .drain()
        .await
        .unwrap();
    assert_eq!(frequency(later).await, "immediate");
    notification("later@example.com").insert(&db.pool).await;
    app(settings(&db, Some(&smtp.url()), None, &[]))
        .drain()
        .await
        .unwrap();
    let msgs = smtp.messages();
    assert_eq!(msgs.len(), 3, "all sent at once");
    for m in &msgs {
        assert!(
            m.header("Content-Type").unwrap().starts_with("text/plain"),
            "email_format default 'text', before and after the row exists: {:?}",
            m.header("Subject")
        );
    }
}

#[tokio::test]
async fn dropped_connection_mid_data_and_stalls_take_the_transient_path() {
    let db = TestDb::new().await;
    let smtp = TestSmtp::start().await;
    smtp.add_rule(
        Rule::drop(Command::DataEnd)
            .matching("Subject: drop")
            .once(),
    );
    smtp.add_rule(
        Rule::delay(Command::DataEnd, Duration::from_secs(3))
            .matching("Subject: stall")
            .once(),
    );
    let mut e = NewEmail::to("a@example.com");
    e.subject = "drop".into();
    let dropped = e.insert(&db.pool).await;
    let mut e = NewEmail::to("b@example.com");
    e.subject = "stall".into();
    let stalled = e.insert(&db.pool).await;
    let app = app(settings(
        &db,
        Some(&smtp.url()),
        None,
        &[("ADOPT__SMTP__TIMEOUT_SECS", "1")],
    ));
    app.drain().await.unwrap();
    for id in [dropped, stalled] {
        let r = row(&db.pool, id).await;
        assert_eq!(
            (r.status.as_str(), r.current_retries),
            ("queued", Some(1)),
            "{:?}",
            r.failure_reason
        );
    }
    assert!(
        row(&db.pool, stalled)
            .await
            .failure_reason
            .unwrap()
            .contains("timed out")
    );
    assert_eq!(
        status_counts(&db.pool).await.get("sending"),
        None,
        "nothing stuck in sending"
    );
    // Once the server behaves, both go (the pool replaced after the stall still works).
    make_all_due(&db.pool).await;
    app.drain().await.unwrap();
    assert_eq!(row(&db.pool, dropped).await.status, "sent");
    assert_eq!(row(&db.pool, stalled).await.status, "sent");
}

#[tokio::test]
async fn an_urgent_row_behind_10000_low_rows_is_sent_next() {
    let db = TestDb::new().await;
    sqlx::query(
        "INSERT INTO email_queue (from_email, to_email, subject, html_content, type, priority)
         SELECT 'noreply@adoptdontshop.com', 'low' || i || '@example.com', 'low', '<p>x</p>', 'marketing', 'low'
         FROM generate_series(1, 10000) i",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let mut e = NewEmail::to("urgent@example.com");
    e.priority = "urgent";
    e.subject = "Reset your password".into();
    e.insert(&db.pool).await;
    let claimed = adopt_worker::queue::claim_due(&db.pool, 1).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].to_email, "urgent@example.com");
}

#[tokio::test]
async fn a_new_row_is_picked_up_at_once_without_waiting_for_the_poll() {
    let db = TestDb::new().await;
    let smtp = TestSmtp::start().await;
    // A 30 s poll: only LISTEN/NOTIFY can explain a fast pickup.
    let running = Running::start(settings(
        &db,
        Some(&smtp.url()),
        None,
        &[("ADOPT__WORKER__POLL_INTERVAL_MS", "30000")],
    ))
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await; // let the worker go idle
    let mut worst = Duration::ZERO;
    for i in 0..5 {
        let start = Instant::now();
        NewEmail::to(&format!("quick{i}@example.com"))
            .insert(&db.pool)
            .await;
        let got = smtp.wait_for_messages(i + 1, Duration::from_secs(5)).await;
        assert_eq!(got.len(), i + 1);
        worst = worst.max(start.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    running.stop().await;
    assert!(
        worst < Duration::from_millis(500),
        "insert→SMTP took {worst:?}"
    );
}

#[tokio::test]
async fn rows_left_sending_by_a_dead_worker_are_reclaimed_and_fenced() {
    let db = TestDb::new().await;
    let smtp = TestSmtp::start().await;
    let id = NewEmail::to("maya@example.com").insert(&db.pool).await;
    // A worker claims the row and dies before recording anything.
    let stale = adopt_worker::queue::claim_due(&db.pool, 10)
        .await
        .unwrap()
        .remove(0);
    sqlx::query("UPDATE email_queue SET last_attempt_at = last_attempt_at - interval '10 minutes' WHERE email_id = $1")
        .bind(id)
        .execute(&db.pool)
        .await
        .unwrap();
    let mut stale = stale;
    stale.claimed_at -= chrono::Duration::minutes(10);
    let n = adopt_worker::queue::reclaim_expired(&db.pool, Duration::from_secs(90), 5)
        .await
        .unwrap();
    assert_eq!(n, 1);
    let r = row(&db.pool, id).await;
    assert_eq!((r.status.as_str(), r.current_retries), ("queued", Some(1)));
    assert!(r.failure_reason.unwrap().contains("lease expired"));
    // A new attempt claims it; the dead worker's late result must not overwrite it.
    let fresh = adopt_worker::queue::claim_due(&db.pool, 10)
        .await
        .unwrap()
        .remove(0);
    let late = adopt_worker::queue::mark_failed(&db.pool, &stale, "late")
        .await
        .unwrap();
    assert_eq!(late, adopt_worker::queue::Recorded::Fenced);
    let done = adopt_worker::queue::mark_sent(&db.pool, &fresh, "smtp", Some("q1"), None)
        .await
        .unwrap();
    assert_eq!(
        done,
        adopt_worker::queue::Recorded::Written(adopt_worker::queue::EmailStatus::Sent)
    );
    drop(smtp);
}

#[tokio::test]
async fn terminated_database_connections_are_survived() {
    let db = TestDb::new().await;
    let smtp = TestSmtp::start().await;
    let running = Running::start(settings(&db, Some(&smtp.url()), None, &[])).await;
    NewEmail::to("before@example.com").insert(&db.pool).await;
    assert_eq!(
        smtp.wait_for_messages(1, Duration::from_secs(5))
            .await
            .len(),
        1
    );
    let killed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND application_name = 'adopt-worker') t",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(
        killed >= 1,
        "the worker's connections (pool + LISTEN) were terminated"
    );
    for i in 0..20 {
        NewEmail::to(&format!("after{i}@example.com"))
            .insert(&db.pool)
            .await;
    }
    assert_eq!(
        smtp.wait_for_messages(21, Duration::from_secs(10))
            .await
            .len(),
        21
    );
    running.stop().await;
    assert_eq!(status_counts(&db.pool).await.get("sent"), Some(&21));
}

fn spawn_run(db: &TestDb, smtp: &TestSmtp, extra: &[(&str, &str)]) -> tokio::process::Child {
    let mut cmd = tokio::process::Command::from(bin());
    cmd.arg("run")
        .arg("--no-api")
        .env("HTTP_ADDR", "127.0.0.1:0")
        .env("DATABASE_URL", &db.url)
        .env("SMTP_URL", smtp.url())
        .env("RUST_LOG", "warn")
        .env("ADOPT__WORKER__POLL_INTERVAL_MS", "100")
        .stdout(std::process::Stdio::null());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd.kill_on_drop(true).spawn().unwrap()
}

fn signal(child: &tokio::process::Child, sig: &str) {
    let pid = child.id().unwrap().to_string();
    let ok = std::process::Command::new("kill")
        .args([sig, &pid])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

#[tokio::test]
async fn three_worker_processes_drain_10000_rows_exactly_once() {
    let db = TestDb::new().await;
    let smtp = TestSmtp::start().await;
    insert_many(&db.pool, 10_000).await;
    let mut workers: Vec<_> = (0..3).map(|_| spawn_run(&db, &smtp, &[])).collect();
    let got = smtp
        .wait_for_messages(10_000, Duration::from_secs(120))
        .await;
    for w in &workers {
        signal(w, "-TERM");
    }
    for w in &mut workers {
        assert!(w.wait().await.unwrap().success(), "SIGTERM exits 0");
    }
    assert_eq!(got.len(), 10_000);
    let ids: HashSet<String> = smtp
        .messages()
        .iter()
        .map(|m| m.header("Message-ID").unwrap())
        .collect();
    assert_eq!(ids.len(), 10_000, "every row exactly once");
    assert_eq!(smtp.message_count(), 10_000);
    assert_eq!(status_counts(&db.pool).await.get("sent"), Some(&10_000));
}

#[tokio::test]
async fn a_worker_killed_mid_batch_loses_nothing_and_each_duplicate_is_explained() {
    let db = TestDb::new().await;
    let smtp = TestSmtp::start().await;
    insert_many(&db.pool, 300).await;
    // Slow acceptance so the kill lands while sends are in flight.
    smtp.add_rule(Rule::delay(Command::DataEnd, Duration::from_millis(50)));
    let lease = [
        ("ADOPT__SMTP__TIMEOUT_SECS", "2"),
        ("ADOPT__WORKER__LEASE_SECS", "3"),
    ];
    let mut victim = spawn_run(&db, &smtp, &lease);
    smtp.wait_for_messages(40, Duration::from_secs(20)).await;
    signal(&victim, "-KILL");
    victim.wait().await.unwrap();
    // What was in flight at the moment of the kill.
    let in_flight: HashSet<String> = sqlx::query_scalar::<_, uuid::Uuid>(
        "SELECT email_id FROM email_queue WHERE status = 'sending'",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap()
    .into_iter()
    .map(|id| format!("<{id}@adoptdontshop.com>"))
    .collect();
    assert!(!in_flight.is_empty(), "the kill landed mid-batch");

    let mut rescuer = spawn_run(&db, &smtp, &lease);
    let pool = db.pool.clone();
    let done = eventually(Duration::from_secs(60), || {
        let pool = pool.clone();
        async move { status_counts(&pool).await.get("sent") == Some(&300) }
    })
    .await;
    signal(&rescuer, "-TERM");
    rescuer.wait().await.unwrap();
    assert!(
        done,
        "every row delivered after the lease: {:?}",
        status_counts(&db.pool).await
    );

    let mut seen: HashMap<String, usize> = HashMap::new();
    for m in smtp.messages() {
        *seen.entry(m.header("Message-ID").unwrap()).or_default() += 1;
    }
    assert_eq!(seen.len(), 300, "nothing lost");
    let duplicates: Vec<_> = seen
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, _)| id.clone())
        .collect();
    for d in &duplicates {
        assert!(
            in_flight.contains(d),
            "duplicate {d} was not in flight at the kill"
        );
    }
    assert!(seen.values().all(|n| *n <= 2));
}

#[tokio::test]
async fn sigterm_finishes_in_flight_sends_and_leaves_nothing_sending() {
    let db = TestDb::new().await;
    let smtp = TestSmtp::start().await;
    insert_many(&db.pool, 200).await;
    smtp.add_rule(Rule::delay(Command::DataEnd, Duration::from_millis(200)));
    let mut w = spawn_run(&db, &smtp, &[]);
    smtp.wait_for_messages(10, Duration::from_secs(20)).await;
    signal(&w, "-TERM");
    let status = tokio::time::timeout(Duration::from_secs(30), w.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
    let counts = status_counts(&db.pool).await;
    assert_eq!(counts.get("sending"), None, "{counts:?}");
    let sent = counts.get("sent").copied().unwrap_or(0);
    assert_eq!(
        sent as usize,
        smtp.message_count(),
        "every accepted message is recorded sent"
    );
    assert_eq!(
        sent + counts.get("queued").copied().unwrap_or(0),
        200,
        "nothing lost"
    );
}

#[tokio::test]
async fn a_claim_in_flight_at_shutdown_is_released_not_left_sending() {
    let db = TestDb::new().await;
    let smtp = TestSmtp::start().await;
    // Every claimed row costs the claim statement 500 ms, so the stop lands mid-claim.
    sqlx::raw_sql(
        "CREATE FUNCTION slow_claim() RETURNS trigger LANGUAGE plpgsql AS
             $$ BEGIN PERFORM pg_sleep(0.5); RETURN NEW; END $$;
         CREATE TRIGGER slow_claim BEFORE UPDATE ON email_queue FOR EACH ROW
             WHEN (OLD.status = 'queued' AND NEW.status = 'sending')
             EXECUTE FUNCTION slow_claim();",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let running = Running::start(settings(&db, Some(&smtp.url()), None, &[])).await;
    let id = NewEmail::to("maya@example.com").insert(&db.pool).await;
    let claim_running = || {
        let pool = db.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND wait_event = 'PgSleep'",
            )
            .fetch_one(&pool)
            .await
            .unwrap()
                > 0
        }
    };
    assert!(eventually(Duration::from_secs(5), claim_running).await);
    running.stop().await;
    // The claim commits whatever the worker does; wait for it before looking.
    assert!(eventually(Duration::from_secs(5), || async { !claim_running().await }).await);
    let r = row(&db.pool, id).await;
    assert_eq!(
        r.status, "queued",
        "a row claimed while stopping goes back at once, not after the lease"
    );
    assert_eq!(smtp.message_count(), 0);
}

#[tokio::test]
async fn a_claimed_row_too_old_to_finish_within_its_lease_is_released_not_sent() {
    let db = TestDb::new().await;
    let smtp = TestSmtp::start().await;
    // One send at a time, 0.4 s each: the tenth row of a batch would start its send 3.6 s
    // after the claim, long after its 2 s lease, while the reaper hands it to a new claim.
    smtp.add_rule(Rule::delay(Command::DataEnd, Duration::from_millis(400)));
    for i in 0..10 {
        NewEmail::to(&format!("slow{i}@example.com"))
            .insert(&db.pool)
            .await;
    }
    let running = Running::start(settings(
        &db,
        Some(&smtp.url()),
        None,
        &[
            ("ADOPT__WORKER__CONCURRENCY", "1"),
            ("ADOPT__WORKER__BATCH_SIZE", "10"),
            ("ADOPT__SMTP__TIMEOUT_SECS", "1"),
            ("ADOPT__WORKER__LEASE_SECS", "2"),
        ],
    ))
    .await;
    let pool = db.pool.clone();
    let done = eventually(Duration::from_secs(30), || {
        let pool = pool.clone();
        async move { status_counts(&pool).await.get("sent") == Some(&10) }
    })
    .await;
    running.stop().await;
    assert!(done, "{:?}", status_counts(&db.pool).await);
    let ids: Vec<String> = smtp
        .messages()
        .iter()
        .map(|m| m.header("Message-ID").unwrap())
        .collect();
    let distinct: HashSet<&String> = ids.iter().collect();
    assert_eq!((ids.len(), distinct.len()), (10, 10), "each row sent once");
    let reclaimed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM email_queue WHERE current_retries > 0 OR failure_reason IS NOT NULL",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(reclaimed, 0, "no live send was taken back by the reaper");
}

#[tokio::test]
async fn waiting_for_a_free_connection_does_not_count_against_the_smtp_timeout() {
    let db = TestDb::new().await;
    let smtp = TestSmtp::start().await;
    // One connection, 0.7 s per message, a 1 s timeout, four emails in flight: the fourth
    // waits 2.1 s for the connection. Were the wait inside the timeout, it would be cut off
    // after the server took it, and sent again.
    smtp.add_rule(Rule::delay(Command::DataEnd, Duration::from_millis(700)));
    for i in 0..4 {
        NewEmail::to(&format!("queued{i}@example.com"))
            .insert(&db.pool)
            .await;
    }
    let app = app(settings(
        &db,
        Some(&smtp.url()),
        None,
        &[
            ("ADOPT__WORKER__CONCURRENCY", "4"),
            ("ADOPT__SMTP__POOL_SIZE", "1"),
            ("ADOPT__SMTP__TIMEOUT_SECS", "1"),
        ],
    ));
    app.drain().await.unwrap();
    assert_eq!(status_counts(&db.pool).await.get("sent"), Some(&4));
    let retried: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM email_queue WHERE current_retries > 0 OR failure_reason IS NOT NULL",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(retried, 0, "no send was cut off for having waited");
    assert_eq!(smtp.messages().len(), 4, "each sent once");
}

#[tokio::test]
async fn a_refused_cc_or_bcc_neither_bounces_the_email_nor_blacklists_its_recipient() {
    let db = TestDb::new().await;
    let smtp = TestSmtp::start().await;
    let maya = insert_user(&db.pool, "maya@example.com").await;
    let colleague = insert_user(&db.pool, "left-the-shelter@example.com").await;
    smtp.add_rule(
        Rule::reply(
            Command::Rcpt,
            550,
            "5.1.1 <stale@example.com>: User unknown",
        )
        .matching("stale@"),
    );
    smtp.add_rule(
        Rule::reply(Command::Rcpt, 550, "5.1.1 mailbox disabled").matching("left-the-shelter@"),
    );
    let mut email = NewEmail::to("maya@example.com");
    email.user_id = Some(maya);
    email.cc = Some(vec![
        "stale@example.com".into(),
        "foster@example.com".into(),
    ]);
    email.bcc = Some(vec!["left-the-shelter@example.com".into()]);
    let id = email.insert(&db.pool).await;
    app(settings(&db, Some(&smtp.url()), None, &[]))
        .drain()
        .await
        .unwrap();

    let r = row(&db.pool, id).await;
    assert_eq!(r.status, "sent", "{:?}", r.failure_reason);
    let messages = smtp.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(
        messages[0].rcpt_to,
        vec![
            "maya@example.com".to_string(),
            "foster@example.com".to_string()
        ],
        "delivered to the accepted recipients"
    );
    let refused = r.tracking.unwrap()["refusedRecipients"].clone();
    let refused = refused.as_array().expect("refusedRecipients is an array");
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert_eq!(refused[0]["address"], "stale@example.com");
    assert_eq!(refused[0]["code"], 550);
    assert!(refused[0]["reason"].as_str().unwrap().contains("5.1.1"));
    assert_eq!(refused[1]["address"], "left-the-shelter@example.com");

    let maya_blacklisted: Option<bool> =
        sqlx::query_scalar("SELECT is_blacklisted FROM email_preferences WHERE user_id = $1")
            .bind(maya)
            .fetch_optional(&db.pool)
            .await
            .unwrap()
            .flatten();
    assert_ne!(
        maya_blacklisted,
        Some(true),
        "the To recipient is not blacklisted"
    );
    let (count, blacklisted): (i32, bool) = sqlx::query_as(
        "SELECT bounce_count, is_blacklisted FROM email_suppressions WHERE email = 'stale@example.com'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        (count, blacklisted),
        (1, true),
        "the refused address carries the bounce"
    );
    let colleague_blacklisted: bool =
        sqlx::query_scalar("SELECT is_blacklisted FROM email_preferences WHERE user_id = $1")
            .bind(colleague)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert!(
        colleague_blacklisted,
        "a refused Bcc user carries their own bounce"
    );

    // Nothing about the refusals holds up the next email.
    let next = NewEmail::to("maya@example.com").insert(&db.pool).await;
    app(settings(&db, Some(&smtp.url()), None, &[]))
        .drain()
        .await
        .unwrap();
    assert_eq!(row(&db.pool, next).await.status, "sent");
}

#[tokio::test]
async fn a_refused_to_still_bounces_and_the_connection_is_reset_for_the_next_email() {
    let db = TestDb::new().await;
    let smtp = TestSmtp::start().await;
    smtp.add_rule(Rule::reply(Command::Rcpt, 550, "5.1.1 user unknown").matching("gone@"));
    let mut bounced = NewEmail::to("gone@example.com");
    bounced.cc = Some(vec!["foster@example.com".into()]);
    let bounced = bounced.insert(&db.pool).await;
    let fine = NewEmail::to("maya@example.com").insert(&db.pool).await;
    let mut s = settings(&db, Some(&smtp.url()), None, &[]);
    s.smtp.pool_size = 1;
    app(s).drain().await.unwrap();
    assert_eq!(row(&db.pool, bounced).await.status, "bounced");
    assert_eq!(row(&db.pool, fine).await.status, "sent");
    assert_eq!(
        smtp.messages().len(),
        1,
        "nothing went to the Cc of a bounced email"
    );
    assert_eq!(smtp.connections(), 1, "RSET kept the connection in use");
    assert!(smtp.commands(Command::Rset) >= 1);
}

#[tokio::test]
async fn international_addresses_go_out_as_the_relay_can_take_them() {
    let db = TestDb::new().await;
    let smtp = TestSmtp::start().await;
    // An IDN domain needs no SMTPUTF8: punycode in the envelope and in the header.
    let idn = NewEmail::to("maya@münchen.de").insert(&db.pool).await;
    app(settings(&db, Some(&smtp.url()), None, &[]))
        .drain()
        .await
        .unwrap();
    assert_eq!(row(&db.pool, idn).await.status, "sent");
    let m = &smtp.messages()[0];
    assert_eq!(m.rcpt_to, vec!["maya@xn--mnchen-3ya.de".to_string()]);
    assert!(m.header("To").unwrap().contains("maya@xn--mnchen-3ya.de"));

    // A non-ASCII local part needs SMTPUTF8: a relay without it fails the row at once,
    // saying why, with no retries.
    smtp.add_rule(Rule::reply(Command::Ehlo, 250, "plain.example"));
    let utf8 = NewEmail::to("jörg@example.com").insert(&db.pool).await;
    app(settings(&db, Some(&smtp.url()), None, &[]))
        .drain()
        .await
        .unwrap();
    let r = row(&db.pool, utf8).await;
    assert_eq!(r.status, "failed", "no retry can cure it");
    assert_eq!(
        smtp.commands(Command::Mail),
        1,
        "no transaction was begun for it"
    );
    let reason = r.failure_reason.unwrap();
    assert!(
        reason.contains("non-ASCII local part") && reason.contains("SMTPUTF8"),
        "{reason}"
    );
}

#[tokio::test]
async fn at_sigterm_rows_not_yet_handed_to_smtp_go_back_at_once() {
    let db = TestDb::new().await;
    let smtp = TestSmtp::start().await;
    // One relay connection, each message held 4 s at the end of DATA: of the rows claimed,
    // one is in SMTP and the others wait for the connection (or in the claim buffer).
    smtp.add_rule(Rule::delay(Command::DataEnd, Duration::from_secs(4)));
    for i in 0..8 {
        NewEmail::to(&format!("wait{i}@example.com"))
            .insert(&db.pool)
            .await;
    }
    let mut w = spawn_run(
        &db,
        &smtp,
        &[
            ("ADOPT__SMTP__POOL_SIZE", "1"),
            ("ADOPT__WORKER__CONCURRENCY", "4"),
            ("ADOPT__WORKER__BATCH_SIZE", "8"),
            ("ADOPT__WORKER__SHUTDOWN_GRACE_SECS", "10"),
        ],
    );
    smtp.wait_for_commands(Command::Data, 1, Duration::from_secs(20))
        .await;
    signal(&w, "-TERM");
    let released = eventually(Duration::from_millis(1500), || async {
        status_counts(&db.pool).await.get("queued").copied() == Some(7)
    })
    .await;
    let counts = status_counts(&db.pool).await;
    assert!(
        released,
        "rows waiting for a connection are queued again within 1.5 s of SIGTERM, while the send in flight goes on: {counts:?}"
    );
    assert_eq!(counts.get("sending"), Some(&1), "{counts:?}");
    let status = tokio::time::timeout(Duration::from_secs(20), w.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
    let counts = status_counts(&db.pool).await;
    assert_eq!(
        (counts.get("sent"), counts.get("queued")),
        (Some(&1), Some(&7)),
        "{counts:?}"
    );
}

#[tokio::test]
async fn connections_closed_on_purpose_say_quit() {
    let db = TestDb::new().await;
    let smtp = TestSmtp::start().await;
    insert_many(&db.pool, 20).await;
    let mut s = settings(&db, Some(&smtp.url()), None, &[]);
    s.smtp.pool_size = 3;
    let app = app(s);
    app.drain().await.unwrap();
    assert_eq!(smtp.message_count(), 20);
    let opened = smtp.connections();
    assert!(opened >= 1);
    // The end of a drain closes every pooled connection with QUIT (and waits for 221).
    assert_eq!(
        smtp.wait_for_commands(Command::Quit, opened, Duration::from_secs(5))
            .await,
        opened,
        "every connection the drain opened was closed with QUIT"
    );
}

#[tokio::test]
async fn an_idn_address_refused_in_one_spelling_is_suppressed_in_the_other() {
    let db = TestDb::new().await;
    let smtp = TestSmtp::start().await;
    // The relay sees (and refuses) the punycode form.
    smtp.add_rule(
        Rule::reply(Command::Rcpt, 550, "5.1.1 user unknown").matching("maya@xn--mnchen-3ya.de"),
    );
    let mut first = NewEmail::to("w1@example.org");
    first.cc = Some(vec!["maya@münchen.de".into()]);
    let first = first.insert(&db.pool).await;
    app(settings(&db, Some(&smtp.url()), None, &[]))
        .drain()
        .await
        .unwrap();
    assert_eq!(row(&db.pool, first).await.status, "sent");
    // Written either way by another service, the address is now suppressed.
    let unicode = NewEmail::to("maya@münchen.de").insert(&db.pool).await;
    let ascii = NewEmail::to("maya@xn--mnchen-3ya.de")
        .insert(&db.pool)
        .await;
    let rcpts_before = smtp.commands(Command::Rcpt);
    app(settings(&db, Some(&smtp.url()), None, &[]))
        .drain()
        .await
        .unwrap();
    for id in [unicode, ascii] {
        let r = row(&db.pool, id).await;
        assert_eq!(r.status, "failed", "{:?}", r.failure_reason);
        assert!(r.failure_reason.unwrap().starts_with("suppressed"));
    }
    assert_eq!(
        smtp.commands(Command::Rcpt),
        rcpts_before,
        "no second bounce"
    );
}

#[tokio::test]
async fn a_blacklisted_cc_is_left_out_and_the_email_goes_to_the_others() {
    let db = TestDb::new().await;
    let smtp = TestSmtp::start().await;
    sqlx::query(
        "INSERT INTO email_suppressions (email, bounce_count, is_blacklisted, blacklist_reason, blacklisted_at, updated_at)
         VALUES ('stale@example.com', 1, true, 'hard bounce: 550 5.1.1', now(), now())",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let blocked_user = insert_user(&db.pool, "blocked@example.com").await;
    sqlx::query(
        "INSERT INTO email_preferences (user_id, unsubscribe_token, is_blacklisted) VALUES ($1, 'tok-blocked', true)",
    )
    .bind(blocked_user)
    .execute(&db.pool)
    .await
    .unwrap();
    let mut email = NewEmail::to("maya@example.com");
    email.cc = Some(vec![
        "Stale@Example.com".into(),
        "foster@example.com".into(),
    ]);
    email.bcc = Some(vec!["blocked@example.com".into()]);
    let id = email.insert(&db.pool).await;
    app(settings(&db, Some(&smtp.url()), None, &[]))
        .drain()
        .await
        .unwrap();
    let r = row(&db.pool, id).await;
    assert_eq!(r.status, "sent");
    assert_eq!(
        smtp.messages()[0].rcpt_to,
        vec![
            "maya@example.com".to_string(),
            "foster@example.com".to_string()
        ]
    );
    assert!(
        smtp.messages()[0]
            .header("Cc")
            .unwrap()
            .contains("foster@example.com")
            && !smtp.messages()[0]
                .header("Cc")
                .unwrap()
                .to_lowercase()
                .contains("stale"),
        "the header names only who got it"
    );
    assert_eq!(
        r.tracking.unwrap()["suppressedRecipients"],
        serde_json::json!(["Stale@Example.com", "blocked@example.com"])
    );
}
