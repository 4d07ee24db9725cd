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
