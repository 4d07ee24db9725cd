//! The first delivery path: a row inserted by SQL is delivered by `drain`.

use std::collections::HashSet;
use std::time::Duration;

use crate::helpers::*;

#[tokio::test]
async fn sql_inserted_row_is_delivered_with_every_header_and_field() {
    let db = TestDb::new().await;
    let smtp = TestSmtp::start().await;
    let mut email = NewEmail::to("maya@example.com");
    email.cc = Some(vec!["partner@example.com".into()]);
    email.bcc = Some(vec!["audit@adoptdontshop.com".into()]);
    email.reply_to = Some("coordinator@happypaws.org".into());
    let id = email.insert(&db.pool).await;

    let app = app(settings(&db, Some(&smtp.url()), None, &[]));
    let tally = app.drain().await.unwrap();
    assert_eq!(tally.total(), 1, "{tally}");

    let msgs = smtp.messages();
    assert_eq!(msgs.len(), 1);
    let m = &msgs[0];
    assert_eq!(m.mail_from, "rescues@adoptdontshop.com");
    let rcpts: HashSet<_> = m.rcpt_to.iter().map(String::as_str).collect();
    assert_eq!(
        rcpts,
        HashSet::from([
            "maya@example.com",
            "partner@example.com",
            "audit@adoptdontshop.com"
        ])
    );
    assert_eq!(
        m.header("From").unwrap(),
        r#""Happy Paws Rescue" <rescues@adoptdontshop.com>"#
    );
    assert_eq!(
        m.header("To").unwrap(),
        r#""Maya Okafor" <maya@example.com>"#
    );
    assert_eq!(m.header("Cc").unwrap(), "partner@example.com");
    assert!(
        m.header("Bcc").is_none(),
        "Bcc must not appear in the headers"
    );
    assert_eq!(m.header("Reply-To").unwrap(), "coordinator@happypaws.org");
    assert_eq!(m.header("Subject").unwrap(), "Your application for Biscuit");
    assert_eq!(
        m.header("Message-ID").unwrap(),
        format!("<{id}@adoptdontshop.com>")
    );
    assert!(m.header("Date").is_some());
    assert!(
        m.header("Content-Type")
            .unwrap()
            .starts_with("multipart/alternative")
    );
    let body = m.text();
    assert!(body.contains("text/plain") && body.contains("text/html"));

    let r = row(&db.pool, id).await;
    assert_eq!(r.status, "sent");
    assert!(r.sent_at.is_some());
    assert!(r.last_attempt_at.is_some());
    assert_eq!(r.provider_id.as_deref(), Some("smtp"));
    assert_eq!(r.provider_message_id.as_deref(), Some(m.queue_id.as_str()));
    assert_eq!(r.failure_reason, None);
    assert_eq!(r.current_retries, Some(0));
    assert!(r.updated_at >= r.last_attempt_at);
}

#[tokio::test]
async fn html_only_row_gets_a_generated_text_part() {
    let db = TestDb::new().await;
    let smtp = TestSmtp::start().await;
    let mut email = NewEmail::to("maya@example.com");
    email.text = None;
    email.html = "<h1>Biscuit is waiting</h1><p>Visit <a href=\"https://adoptdontshop.com/pets/7\">Biscuit</a></p>".into();
    email.insert(&db.pool).await;
    app(settings(&db, Some(&smtp.url()), None, &[]))
        .drain()
        .await
        .unwrap();
    let text = smtp.messages()[0].text();
    assert!(text.contains("text/plain"));
    assert!(text.contains("Biscuit is waiting"));
}

#[tokio::test]
async fn without_smtp_the_email_lands_in_the_outbox() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let id = NewEmail::to("maya@example.com").insert(&db.pool).await;
    let app = app(settings(&db, None, Some(dir.path()), &[]));
    app.drain().await.unwrap();

    let path = dir.path().join(format!("{id}.eml"));
    let eml = std::fs::read_to_string(&path).expect("outbox file exists");
    assert!(eml.contains(&format!("Message-ID: <{id}@adoptdontshop.com>")));
    assert!(eml.contains("Subject: Your application for Biscuit"));
    let r = row(&db.pool, id).await;
    assert_eq!(r.status, "sent");
    assert_eq!(r.provider_id.as_deref(), Some("outbox"));
}

#[tokio::test]
async fn bad_rows_fail_with_readable_reasons_and_do_not_stall_the_queue() {
    let db = TestDb::new().await;
    let smtp = TestSmtp::start().await;
    let bad_addr = NewEmail::to("not an address").insert(&db.pool).await;
    let mut crlf = NewEmail::to("maya@example.com");
    crlf.subject = "Hello\r\nBcc: victim@example.com".into();
    let crlf = crlf.insert(&db.pool).await;
    let mut crlf_name = NewEmail::to("maya@example.com");
    crlf_name.to_name = Some("Maya\nX-Injected: yes".into());
    let crlf_name = crlf_name.insert(&db.pool).await;
    let mut empty = NewEmail::to("maya@example.com");
    empty.html = "  ".into();
    empty.text = None;
    let empty = empty.insert(&db.pool).await;
    let mut bad_cc = NewEmail::to("maya@example.com");
    bad_cc.cc = Some(vec!["ok@example.com".into(), "@nope".into()]);
    let bad_cc = bad_cc.insert(&db.pool).await;
    let good = NewEmail::to("ok@example.com").insert(&db.pool).await;

    app(settings(&db, Some(&smtp.url()), None, &[]))
        .drain()
        .await
        .unwrap();

    let reason = |id| {
        let pool = db.pool.clone();
        async move {
            let r = row(&pool, id).await;
            assert_eq!(r.status, "failed", "{:?}", r.failure_reason);
            r.failure_reason.unwrap()
        }
    };
    assert!(
        reason(bad_addr)
            .await
            .contains("invalid to address \"not an address\"")
    );
    assert!(reason(crlf).await.contains("subject contains a line break"));
    assert!(
        reason(crlf_name)
            .await
            .contains("to_name contains a line break")
    );
    assert!(
        reason(empty).await.contains("html and/or text is required"),
        "the API's words for the same content"
    );
    assert!(
        reason(bad_cc)
            .await
            .contains("invalid cc address \"@nope\"")
    );
    assert_eq!(row(&db.pool, good).await.status, "sent");
    assert_eq!(smtp.message_count(), 1, "only the good row reaches SMTP");
    assert!(
        smtp.messages()
            .iter()
            .all(|m| !m.text().contains("X-Injected"))
    );
}

#[tokio::test]
async fn rows_scheduled_in_the_future_are_left_by_drain() {
    let db = TestDb::new().await;
    let smtp = TestSmtp::start().await;
    let later = NewEmail::to("later@example.com").insert(&db.pool).await;
    sqlx::query("UPDATE email_queue SET scheduled_for = (now() AT TIME ZONE 'UTC') + interval '1 hour' WHERE email_id = $1")
        .bind(later)
        .execute(&db.pool)
        .await
        .unwrap();
    let now = NewEmail::to("now@example.com").insert(&db.pool).await;
    app(settings(&db, Some(&smtp.url()), None, &[]))
        .drain()
        .await
        .unwrap();
    assert_eq!(row(&db.pool, now).await.status, "sent");
    assert_eq!(row(&db.pool, later).await.status, "queued");
}

#[tokio::test]
async fn two_drain_processes_deliver_each_of_2000_rows_exactly_once() {
    let db = TestDb::new().await;
    let smtp = TestSmtp::start().await;
    insert_many(&db.pool, 2000).await;
    let spawn = || {
        // tokio's Command: the test SMTP server runs on this test's runtime and must keep
        // running while we wait for the children.
        tokio::process::Command::from(bin())
            .arg("drain")
            .env("DATABASE_URL", &db.url)
            .env("SMTP_URL", smtp.url())
            .env("ADOPT__WORKER__BATCH_SIZE", "16")
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = tokio::join!(a.wait_with_output(), b.wait_with_output());
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(a.status.success() && b.status.success());
    let (sa, sb) = (
        String::from_utf8_lossy(&a.stdout),
        String::from_utf8_lossy(&b.stdout),
    );
    assert!(sa.starts_with("drain: processed="), "{sa}");

    let msgs = smtp.wait_for_messages(2000, Duration::from_secs(5)).await;
    assert_eq!(msgs.len(), 2000, "every row delivered");
    let ids: HashSet<String> = msgs
        .iter()
        .map(|m| m.header("Message-ID").unwrap())
        .collect();
    assert_eq!(ids.len(), 2000, "no row delivered twice");
    assert_eq!(status_counts(&db.pool).await.get("sent"), Some(&2000));
    // Both processes took part (SKIP LOCKED shares the work rather than serialising it).
    let processed = |s: &str| -> u64 {
        s.split_whitespace()
            .find_map(|w| w.strip_prefix("processed="))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    assert_eq!(processed(&sa) + processed(&sb), 2000, "{sa} / {sb}");
}
