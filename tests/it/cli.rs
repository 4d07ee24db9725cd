//! The binary as scripts use it.

use crate::helpers::*;

#[tokio::test]
async fn migrate_creates_the_whole_seed_schema_and_is_then_a_no_op() {
    let name = format!("adopt_test_migrate_{}", uuid::Uuid::new_v4().simple());
    let url = format!("{}/{name}", server_url());
    let out = bin()
        .arg("migrate")
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(first.contains("created database"), "{first}");

    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let seed_tables = [
        "users",
        "rescues",
        "pets",
        "applications",
        "application_questions",
        "chats",
        "chat_participants",
        "messages",
        "email_templates",
        "email_queue",
        "email_preferences",
        "reports",
        "moderator_actions",
        "audit_logs",
        "feature_flags",
        "user_favorites",
    ];
    for t in seed_tables {
        let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(t)
            .fetch_one(&pool)
            .await
            .unwrap();
        assert!(exists, "table {t} exists");
    }
    let enums: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
         WHERE t.typtype = 'e' AND n.nspname = 'public'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(enums, 34);
    pool.close().await;

    let out = bin()
        .arg("migrate")
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(out.status.success());
    let second = String::from_utf8_lossy(&out.stdout);
    assert!(
        second.contains("applied 0 migration(s)") && !second.contains("created"),
        "{second}"
    );

    let mut admin =
        <sqlx::PgConnection as sqlx::Connection>::connect(&format!("{}/postgres", server_url()))
            .await
            .unwrap();
    sqlx::Executor::execute(
        &mut admin,
        sqlx::AssertSqlSafe(format!(r#"DROP DATABASE "{name}" WITH (FORCE)"#)),
    )
    .await
    .unwrap();
}

#[test]
fn migrate_against_an_unreachable_database_says_so_in_one_line() {
    let out = bin()
        .arg("migrate")
        .env(
            "DATABASE_URL",
            "postgres://postgres:s3cret@127.0.0.1:1/nowhere",
        )
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<_> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0]
            .contains("cannot reach the database at postgres://postgres:***@127.0.0.1:1/nowhere"),
        "{err}"
    );
    assert!(!err.contains("s3cret"));
}

#[test]
fn bad_configuration_is_named() {
    let out = bin()
        .arg("drain")
        .env("ADOPT__WORKER__BATCH_SIZE", "lots")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("batch_size"), "{err}");
}

/// Starts `run --api-only` with `env`, reads its log for a few seconds, and stops it.
async fn startup_log(db: &TestDb, env: &[(&str, &str)]) -> String {
    use tokio::io::AsyncReadExt;
    let mut cmd = tokio::process::Command::from(bin());
    cmd.args(["run", "--api-only"])
        .env("DATABASE_URL", &db.url)
        .env("HTTP_ADDR", "127.0.0.1:0")
        .env("ADOPT__LOG__FORMAT", "json")
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let mut log = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(3);
    while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, stderr.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        log.extend_from_slice(&buf[..n]);
    }
    let _ = child.kill().await;
    String::from_utf8_lossy(&log).into_owned()
}

#[tokio::test]
async fn a_default_public_url_with_the_api_elsewhere_is_warned_about_at_start() {
    let db = TestDb::new().await;
    let log = startup_log(&db, &[]).await;
    assert!(
        log.contains("http.public_url is still the default"),
        "links would be dead, and the log says so:\n{log}"
    );
    let log = startup_log(
        &db,
        &[("ADOPT__HTTP__PUBLIC_URL", "https://mail.adoptdontshop.com")],
    )
    .await;
    assert!(log.contains("adopt-worker starting"), "{log}");
    assert!(
        !log.contains("http.public_url is still the default"),
        "{log}"
    );
}
