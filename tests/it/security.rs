//! Security tests: each one fails if the protection it names is removed. Rows are inserted
//! with plain SQL, as another service (or an attacker with a foothold in one) would.

use std::path::Path;
use std::time::Duration;

use adopt_worker::tracking::{TokenError, sign_click, sign_open, verify_click, verify_open};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::*;

const INJECTION: &str = "x\r\nBcc: evil@attacker.example\r\nX-Injected: yes";

/// Inserts a row with `column` set to `expr` (SQL with `value` bound to `$1`).
async fn insert_with(pool: &PgPool, column: &str, value: &str, expr: &str) -> Uuid {
    let id = NewEmail::to("maya@example.com").insert(pool).await;
    let sql = format!("UPDATE email_queue SET {column} = {expr} WHERE email_id = $2");
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(value)
        .bind(id)
        .execute(pool)
        .await
        .unwrap();
    id
}

#[tokio::test]
async fn header_injection_through_any_header_field_fails_the_row_and_sends_nothing() {
    let db = TestDb::new().await;
    let smtp = TestSmtp::start().await;
    let injected = format!("maya@example.com{INJECTION}");
    let cases: Vec<(&str, Uuid)> = vec![
        (
            "subject",
            insert_with(&db.pool, "subject", INJECTION, "$1").await,
        ),
        (
            "to_name",
            insert_with(&db.pool, "to_name", INJECTION, "$1").await,
        ),
        (
            "from_name",
            insert_with(&db.pool, "from_name", INJECTION, "$1").await,
        ),
        (
            "to",
            insert_with(&db.pool, "to_email", &injected, "$1").await,
        ),
        (
            "from",
            insert_with(&db.pool, "from_email", &injected, "$1").await,
        ),
        (
            "reply-to",
            insert_with(&db.pool, "reply_to_email", &injected, "$1").await,
        ),
        (
            "cc",
            insert_with(&db.pool, "cc_emails", &injected, "ARRAY[$1]").await,
        ),
        (
            "bcc",
            insert_with(&db.pool, "bcc_emails", &injected, "ARRAY[$1]").await,
        ),
    ];
    // The List-Unsubscribe URL carries the recipient's unsubscribe token.
    let user = insert_user(&db.pool, "lee@example.com").await;
    sqlx::query(
        "INSERT INTO email_preferences (user_id, digest_frequency, unsubscribe_token)
         VALUES ($1, 'immediate', $2)",
    )
    .bind(user)
    .bind(format!("tok{INJECTION}"))
    .execute(&db.pool)
    .await
    .unwrap();
    let mut m = NewEmail::to("lee@example.com");
    m.email_type = "marketing";
    let unsub = m.insert(&db.pool).await;

    let app = app(settings(
        &db,
        Some(&smtp.url()),
        None,
        &[("ADOPT__HTTP__PUBLIC_URL", "https://mail.adoptdontshop.com")],
    ));
    app.drain().await.unwrap();

    for (field, id) in cases {
        let r = row(&db.pool, id).await;
        assert_eq!(r.status, "failed", "{field}: {r:?}");
        let reason = r.failure_reason.unwrap();
        assert!(
            reason.contains(field) && reason.contains("line break"),
            "{field}: readable reason, got {reason:?}"
        );
        assert!(!reason.contains(['\r', '\n']), "{reason:?}");
    }
    // A token with a line break (written by another service) is percent-encoded into the
    // link: the email goes, and the header stays one valid line.
    assert_eq!(row(&db.pool, unsub).await.status, "sent");
    let messages = smtp.messages();
    assert_eq!(
        messages.len(),
        1,
        "only the unsubscribe row reached the relay"
    );
    let header = messages[0].header("List-Unsubscribe").unwrap();
    assert!(header.contains("%0D%0A"), "{header}");
    let raw = String::from_utf8_lossy(&messages[0].data).into_owned();
    assert!(
        !raw.lines()
            .any(|l| l.starts_with("Bcc:") || l.starts_with("X-Injected")),
        "no header was injected: {raw}"
    );
}

#[test]
fn forged_truncated_and_altered_tracking_tokens_never_verify() {
    let key = b"tracking-key-of-the-worker";
    let id = Uuid::new_v4();
    let url = "https://adoptdontshop.com/pets/42";
    let click = sign_click(id, url, key);
    let open = sign_open(id, key);
    assert_eq!(verify_click(&click, key), Ok((id, url.to_string())));
    assert_eq!(verify_open(&open, key), Ok(id));

    // Forged: signed with another key, or the payload with a made-up tag.
    assert_eq!(
        verify_click(&sign_click(id, "https://evil.example", b"guess"), key),
        Err(TokenError::BadSignature)
    );
    assert_eq!(
        verify_open(&sign_open(id, b""), key),
        Err(TokenError::BadSignature)
    );
    let mut raw = URL_SAFE_NO_PAD.decode(&click).unwrap();
    let n = raw.len();
    raw[n - 16..].fill(0);
    assert!(verify_click(&URL_SAFE_NO_PAD.encode(&raw), key).is_err());
    // A valid payload for another URL with the original tag (open redirect attempt).
    let mut raw = URL_SAFE_NO_PAD.decode(&click).unwrap();
    let tag = raw.split_off(raw.len() - 16);
    raw.truncate(18);
    raw.extend_from_slice(b"https://evil.example/phish");
    raw.extend_from_slice(&tag);
    assert_eq!(
        verify_click(&URL_SAFE_NO_PAD.encode(&raw), key),
        Err(TokenError::BadSignature)
    );

    // Truncated at every length, and with a character dropped anywhere.
    for token in [&click, &open] {
        for len in 0..token.len() {
            assert!(verify_click(&token[..len], key).is_err(), "{len}");
            assert!(verify_open(&token[..len], key).is_err(), "{len}");
        }
    }
    // Every byte of the decoded token altered.
    for token in [&click, &open] {
        let raw = URL_SAFE_NO_PAD.decode(token).unwrap();
        for i in 0..raw.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut altered = raw.clone();
                altered[i] ^= flip;
                let altered = URL_SAFE_NO_PAD.encode(&altered);
                assert!(verify_click(&altered, key).is_err(), "byte {i}");
                assert!(verify_open(&altered, key).is_err(), "byte {i}");
            }
        }
    }
    // Wrong kind, padding/garbage appended, not base64.
    assert_eq!(verify_open(&click, key), Err(TokenError::WrongKind));
    assert_eq!(verify_click(&open, key), Err(TokenError::WrongKind));
    for bad in [
        format!("{click}="),
        format!("{click}A"),
        format!("{open}.."),
        "%00".into(),
    ] {
        assert!(verify_click(&bad, key).is_err(), "{bad}");
        assert!(verify_open(&bad, key).is_err(), "{bad}");
    }
    // Even correctly signed, a non-http(s) target is never redirected to.
    for target in ["javascript:alert(1)", "//evil.example", "data:text/html,x"] {
        assert_eq!(
            verify_click(&sign_click(id, target, key), key),
            Err(TokenError::BadUrl)
        );
    }
}

const METACHARACTERS: [&str; 6] = [
    "'; DROP TABLE email_queue; --",
    "$1 $2 ${x} %s %n",
    "back\\slash \\' \\\\ \\x00",
    "\" OR 1=1 --",
    "{{ app.name }} {% raw %}",
    "Robert'); DELETE FROM email_queue WHERE ('1'='1",
];

#[tokio::test]
async fn sql_metacharacters_in_every_string_column_are_plain_data() {
    let db = TestDb::new().await;
    let smtp = TestSmtp::start().await;
    let mut sent = Vec::new();
    for meta in METACHARACTERS {
        let id: Uuid = sqlx::query_scalar(
            "INSERT INTO email_queue (from_email, from_name, to_email, to_name, subject, html_content,
                 text_content, type, campaign_id, tags, metadata, template_data)
             VALUES ('rescues@adoptdontshop.com', $1, 'maya@example.com', $1, $1, '<p>' || $1 || '</p>',
                 $1, 'transactional', $1, ARRAY[$1], jsonb_build_object('note', $1, $1, 1),
                 jsonb_build_object('x', $1))
             RETURNING email_id",
        )
        .bind(meta)
        .fetch_one(&db.pool)
        .await
        .unwrap();
        sent.push((meta, id));
    }
    // The same strings in address columns: not addresses, so the rows fail, readably.
    let mut failed = Vec::new();
    for meta in METACHARACTERS {
        for column in ["to_email", "from_email", "reply_to_email"] {
            failed.push((column, insert_with(&db.pool, column, meta, "$1").await));
        }
        failed.push((
            "cc",
            insert_with(&db.pool, "cc_emails", meta, "ARRAY[$1]").await,
        ));
    }
    // PostgreSQL itself refuses NUL in text and in jsonb: the sender gets the error, no row.
    let before = status_counts(&db.pool).await;
    let nul = NewEmail {
        subject: "nul \0 byte".into(),
        ..NewEmail::to("maya@example.com")
    };
    let err = sqlx::query("INSERT INTO email_queue (from_email, to_email, subject, html_content, type) VALUES ('a@b.c', 'maya@example.com', $1, 'x', 'transactional')")
        .bind(&nul.subject)
        .execute(&db.pool)
        .await;
    assert!(err.is_err(), "PostgreSQL refuses NUL in text");
    let err = sqlx::query("INSERT INTO email_queue (from_email, to_email, subject, html_content, type, metadata) VALUES ('a@b.c', 'maya@example.com', 's', 'x', 'transactional', '{\"a\":\"\\u0000\"}'::jsonb)")
        .execute(&db.pool)
        .await;
    assert!(err.is_err(), "PostgreSQL refuses \\u0000 in jsonb");
    assert_eq!(status_counts(&db.pool).await, before);

    app(settings(&db, Some(&smtp.url()), None, &[]))
        .drain()
        .await
        .unwrap();

    let messages = smtp.messages();
    for (meta, id) in sent {
        assert_eq!(row(&db.pool, id).await.status, "sent", "{meta}");
        assert!(
            messages
                .iter()
                .any(|m| m.header("Subject").as_deref() == Some(meta)),
            "subject {meta:?} arrives as written"
        );
    }
    for (column, id) in failed {
        let r = row(&db.pool, id).await;
        assert_eq!(r.status, "failed", "{column}: {r:?}");
        assert!(r.failure_reason.unwrap().contains("invalid"), "{column}");
    }
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM email_queue")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        total,
        6 + 6 * 4,
        "the table is intact, every row still there"
    );
}

/// Synced shipped templates and a row of `welcome` with the given `template_data` (JSON text).
async fn template_row(db: &TestDb, data_json: &str) -> Uuid {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("templates");
    let a = app(settings(
        db,
        None,
        None,
        &[("ADOPT__TEMPLATES__DIR", &dir.display().to_string())],
    ));
    a.templates.sync(&dir, &Default::default()).await.unwrap();
    sqlx::query_scalar(
        "INSERT INTO email_queue (template_id, template_data, from_email, to_email, subject,
             html_content, type)
         SELECT template_id, $1::text::jsonb, 'noreply@adoptdontshop.com', 'maya@example.com', '', '',
             'transactional'
         FROM email_templates WHERE name = 'welcome' AND deleted_at IS NULL
         RETURNING email_id",
    )
    .bind(data_json)
    .fetch_one(&db.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn oversized_and_deeply_nested_template_data_fail_the_row_cleanly() {
    let db = TestDb::new().await;
    let smtp = TestSmtp::start().await;
    let big = format!(
        "{{\"first_name\": \"Maya\", \"blob\": \"{}\"}}",
        "x".repeat(300_000)
    );
    let oversized = template_row(&db, &big).await;
    let depth = 10_000;
    let deep = format!(
        "{{\"first_name\": \"Maya\", \"deep\": {}1{}}}",
        "[".repeat(depth),
        "]".repeat(depth)
    );
    let nested = template_row(&db, &deep).await;
    let deep_metadata = NewEmail::to("kim@example.com").insert(&db.pool).await;
    sqlx::query("UPDATE email_queue SET metadata = $1::text::jsonb WHERE email_id = $2")
        .bind(&deep)
        .bind(deep_metadata)
        .execute(&db.pool)
        .await
        .unwrap();
    let fine = NewEmail::to("lee@example.com").insert(&db.pool).await;

    let a = app(settings(&db, Some(&smtp.url()), None, &[]));
    tokio::time::timeout(Duration::from_secs(60), a.drain())
        .await
        .expect("drain finishes")
        .unwrap();

    for (what, column, id) in [
        ("oversized", "template_data", oversized),
        ("nested", "template_data", nested),
        ("nested", "metadata", deep_metadata),
    ] {
        let r = row(&db.pool, id).await;
        assert_eq!(r.status, "failed", "{what} {column}: {r:?}");
        let reason = r.failure_reason.unwrap();
        assert!(reason.contains(column), "{what} {column}: {reason}");
    }
    assert_eq!(
        row(&db.pool, fine).await.status,
        "sent",
        "the queue goes on"
    );
}

#[tokio::test]
async fn secrets_never_appear_in_trace_logs_or_error_output() {
    let db = TestDb::new().await;
    let smtp = TestSmtp::start().await;
    NewEmail::to("maya@example.com").insert(&db.pool).await;
    let db_secret = "Db-Pw-5ecret-9f3";
    let smtp_secret = "Smtp-Pw-5ecret-7a1";
    let tracking_secret = "Tracking-5ecret-c44-0123456789abcdef";
    // Trust authentication ignores the password, so the URL still connects.
    let db_url = db
        .url
        .replacen("://postgres@", &format!("://postgres:{db_secret}@"), 1);
    assert!(
        db_url.contains(db_secret),
        "test URL has a user part: {}",
        db.url
    );
    let smtp_url = smtp
        .url()
        .replacen("smtp://", &format!("smtp://mailer:{smtp_secret}@"), 1);
    let secrets = [db_secret, smtp_secret, tracking_secret];

    let out = bin()
        .arg("drain")
        .env("RUST_LOG", "trace")
        .env("DATABASE_URL", &db_url)
        .env("SMTP_URL", &smtp_url)
        .env("ADOPT__TRACKING__SECRET", tracking_secret)
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(all.len() > 1000, "trace logging ran: {all}");
    for s in secrets {
        assert!(!all.contains(s), "secret {s} leaked in drain output");
    }

    // Error paths: unreachable database, bad SMTP URL.
    let unreachable = format!("postgres://postgres:{db_secret}@127.0.0.1:9/none");
    for (db, smtp) in [
        (unreachable.as_str(), smtp_url.as_str()),
        (
            db_url.as_str(),
            &*format!("smtp://mailer:{smtp_secret}@relay.example:587?tls=bogus"),
        ),
    ] {
        let out = bin()
            .arg("drain")
            .env("RUST_LOG", "trace")
            .env("DATABASE_URL", db)
            .env("SMTP_URL", smtp)
            .env("ADOPT__TRACKING__SECRET", tracking_secret)
            .env("ADOPT__DATABASE__ACQUIRE_TIMEOUT_SECS", "2")
            .output()
            .unwrap();
        assert!(!out.status.success());
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        for s in secrets {
            assert!(!all.contains(s), "secret {s} leaked in error output: {all}");
        }
    }
}
