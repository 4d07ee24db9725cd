//! Test harness: a fresh PostgreSQL database per test (cloned from a migrated template, so
//! it is fast), the real app wired to it, and the SMTP server written for the tests.

use std::sync::OnceLock;

use adopt_worker::config::Settings;
use adopt_worker::db::MIGRATOR;
use adopt_worker::startup::App;
use sha2::{Digest, Sha256};
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, Executor, PgConnection, PgPool};
use uuid::Uuid;

#[allow(unused_imports)]
pub use crate::smtp_server::{Command, ReceivedMessage, Rule, TestSmtp};

/// Server part of the test database URL: `ADOPT_TEST_PG` or the local default.
pub fn server_url() -> String {
    std::env::var("ADOPT_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_string())
}

fn template_name() -> &'static str {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| {
        let mut h = Sha256::new();
        for m in MIGRATOR.iter() {
            h.update(m.version.to_le_bytes());
            h.update(&*m.checksum);
        }
        let digest = h.finalize();
        let hex: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
        format!("adopt_test_tpl_{hex}")
    })
}

/// A database of its own for one test, dropped (with FORCE) when the value is dropped.
pub struct TestDb {
    pub name: String,
    pub url: String,
    pub pool: PgPool,
}

impl TestDb {
    pub async fn new() -> TestDb {
        let server = server_url();
        let mut admin = PgConnection::connect(&format!("{server}/postgres"))
            .await
            .expect("connect to test PostgreSQL");
        ensure_template(&mut admin, &server).await;
        let name = format!("adopt_test_{}", Uuid::new_v4().simple());
        admin
            .execute(sqlx::AssertSqlSafe(format!(
                r#"CREATE DATABASE "{name}" TEMPLATE "{}""#,
                template_name()
            )))
            .await
            .expect("create test database");
        admin.close().await.ok();
        let url = format!("{server}/{name}");
        let pool = PgPoolOptions::new()
            .max_connections(20)
            .connect_with(
                url.parse::<sqlx::postgres::PgConnectOptions>()
                    .unwrap()
                    .options([("TimeZone", "UTC")]),
            )
            .await
            .expect("connect to test database");
        TestDb { name, url, pool }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        let server = server_url();
        // Async work cannot run in Drop on the test's runtime: use a thread of our own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                if let Ok(mut admin) = PgConnection::connect(&format!("{server}/postgres")).await {
                    let _ = admin
                        .execute(sqlx::AssertSqlSafe(format!(
                            r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#
                        )))
                        .await;
                }
            });
        })
        .join();
    }
}

/// Creates the migrated template database once per migration set, across test processes
/// (nextest runs each test in its own), serialised by an advisory lock.
async fn ensure_template(admin: &mut PgConnection, server: &str) {
    let tpl = template_name();
    admin
        .execute("SELECT pg_advisory_lock(724061)")
        .await
        .unwrap();
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(tpl)
            .fetch_one(&mut *admin)
            .await
            .unwrap();
    if !exists {
        // Templates of other migration sets are left alone: another checkout's tests may be
        // cloning from them right now.
        let building = format!("{tpl}_building");
        let _ = admin
            .execute(sqlx::AssertSqlSafe(format!(
                r#"DROP DATABASE IF EXISTS "{building}" WITH (FORCE)"#
            )))
            .await;
        admin
            .execute(sqlx::AssertSqlSafe(format!(
                r#"CREATE DATABASE "{building}""#
            )))
            .await
            .unwrap();
        {
            let pool = PgPoolOptions::new()
                .max_connections(1)
                .connect(&format!("{server}/{building}"))
                .await
                .unwrap();
            MIGRATOR
                .run(&pool)
                .await
                .expect("migrations apply to a fresh database");
            pool.close().await;
        }
        admin
            .execute(sqlx::AssertSqlSafe(format!(
                r#"ALTER DATABASE "{building}" RENAME TO "{tpl}""#
            )))
            .await
            .unwrap();
    }
    admin
        .execute("SELECT pg_advisory_unlock(724061)")
        .await
        .unwrap();
}

/// Settings for a test: the test database, SMTP if given (else an outbox in `outbox`),
/// fast polling and no retry jitter, plus any `ADOPT__...` overrides.
pub fn settings(
    db: &TestDb,
    smtp_url: Option<&str>,
    outbox: Option<&std::path::Path>,
    overrides: &[(&str, &str)],
) -> Settings {
    settings_with_file(db, smtp_url, outbox, None, overrides)
}

/// [`settings`] with a configuration file layered under the environment, for what only a
/// file can give (lists of tables such as `[[dkim.keys]]`).
pub fn settings_with_file(
    db: &TestDb,
    smtp_url: Option<&str>,
    outbox: Option<&std::path::Path>,
    file: Option<&std::path::Path>,
    overrides: &[(&str, &str)],
) -> Settings {
    let mut env: Vec<(String, String)> = vec![
        ("DATABASE_URL".into(), db.url.clone()),
        ("ADOPT__WORKER__POLL_INTERVAL_MS".into(), "100".into()),
        ("ADOPT__RETRY__JITTER".into(), "0".into()),
        ("ADOPT__SMTP__TIMEOUT_SECS".into(), "5".into()),
        ("ADOPT__WORKER__LEASE_SECS".into(), "30".into()),
        ("HTTP_ADDR".into(), "127.0.0.1:0".into()),
    ];
    if let Some(url) = smtp_url {
        env.push(("SMTP_URL".into(), url.to_string()));
    }
    if let Some(dir) = outbox {
        env.push(("ADOPT__OUTBOX__DIR".into(), dir.display().to_string()));
    }
    for (k, v) in overrides {
        env.push((k.to_string(), v.to_string()));
    }
    Settings::load_from(file, env).expect("test settings are valid")
}

pub fn app(settings: Settings) -> App {
    App::build(settings).expect("app builds")
}

/// A queued row as another service would insert it: plain SQL, rendered content.
pub struct NewEmail {
    pub to: String,
    pub to_name: Option<String>,
    pub subject: String,
    pub html: String,
    pub text: Option<String>,
    pub email_type: &'static str,
    pub priority: &'static str,
    pub cc: Option<Vec<String>>,
    pub bcc: Option<Vec<String>>,
    pub reply_to: Option<String>,
    pub max_retries: Option<i32>,
    pub user_id: Option<Uuid>,
}

impl NewEmail {
    pub fn to(addr: &str) -> NewEmail {
        NewEmail {
            to: addr.to_string(),
            to_name: Some("Maya Okafor".into()),
            subject: "Your application for Biscuit".into(),
            html: "<p>Hello <b>Maya</b>, <a href=\"https://adoptdontshop.com/applications/1\">see it</a>.</p>".into(),
            text: Some("Hello Maya, see https://adoptdontshop.com/applications/1".into()),
            email_type: "transactional",
            priority: "normal",
            cc: None,
            bcc: None,
            reply_to: None,
            max_retries: Some(3),
            user_id: None,
        }
    }

    pub async fn insert(&self, pool: &PgPool) -> Uuid {
        sqlx::query_scalar(
            "INSERT INTO email_queue (from_email, from_name, to_email, to_name, subject, html_content,
                 text_content, type, priority, cc_emails, bcc_emails, reply_to_email, max_retries, user_id)
             VALUES ('rescues@adoptdontshop.com', 'Happy Paws Rescue', $1, $2, $3, $4, $5,
                 $6::email_type_enum, $7::email_priority_enum, $8, $9, $10, $11, $12)
             RETURNING email_id",
        )
        .bind(&self.to)
        .bind(&self.to_name)
        .bind(&self.subject)
        .bind(&self.html)
        .bind(&self.text)
        .bind(self.email_type)
        .bind(self.priority)
        .bind(&self.cc)
        .bind(&self.bcc)
        .bind(&self.reply_to)
        .bind(self.max_retries)
        .bind(self.user_id)
        .fetch_one(pool)
        .await
        .expect("insert email_queue row")
    }
}

/// Inserts `n` plain rows in one statement.
pub async fn insert_many(pool: &PgPool, n: i64) {
    sqlx::query(
        "INSERT INTO email_queue (from_email, to_email, subject, html_content, text_content, type)
         SELECT 'noreply@adoptdontshop.com', 'adopter' || i || '@example.com', 'Hello ' || i,
                '<p>Message ' || i || '</p>', 'Message ' || i, 'transactional'
         FROM generate_series(1, $1) AS i",
    )
    .bind(n)
    .execute(pool)
    .await
    .unwrap();
}

/// The columns tests assert on. Not every test reads every field.
#[allow(dead_code)]
#[derive(Debug, sqlx::FromRow)]
pub struct Row {
    pub status: String,
    pub sent_at: Option<chrono::NaiveDateTime>,
    pub provider_id: Option<String>,
    pub provider_message_id: Option<String>,
    pub failure_reason: Option<String>,
    pub current_retries: Option<i32>,
    pub max_retries: Option<i32>,
    pub scheduled_for: Option<chrono::NaiveDateTime>,
    pub last_attempt_at: Option<chrono::NaiveDateTime>,
    pub updated_at: Option<chrono::NaiveDateTime>,
    pub tracking: Option<serde_json::Value>,
}

pub async fn row(pool: &PgPool, id: Uuid) -> Row {
    sqlx::query_as(
        "SELECT status::text, sent_at, provider_id, provider_message_id, failure_reason, current_retries,
                max_retries, scheduled_for, last_attempt_at, updated_at, tracking
         FROM email_queue WHERE email_id = $1",
    )
    .bind(id)
    .fetch_one(pool)
    .await
    .unwrap()
}

pub async fn status_counts(pool: &PgPool) -> std::collections::BTreeMap<String, i64> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT status::text, count(*) FROM email_queue GROUP BY 1")
            .fetch_all(pool)
            .await
            .unwrap();
    rows.into_iter().collect()
}

/// The binary under test, for tests that run it as a user would.
pub fn bin() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_adopt-worker"))
}

/// A platform user, as the user service would create one.
pub async fn insert_user(pool: &PgPool, email: &str) -> Uuid {
    sqlx::query_scalar(
        "INSERT INTO users (email, password_hash, first_name, last_name)
         VALUES ($1, 'x', 'Maya', 'Okafor') RETURNING user_id",
    )
    .bind(email)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Makes every queued row due now (instead of waiting out a retry delay).
pub async fn make_all_due(pool: &PgPool) {
    sqlx::query("UPDATE email_queue SET scheduled_for = NULL WHERE status = 'queued' AND scheduled_for < '9999-01-01'")
        .execute(pool)
        .await
        .unwrap();
}

/// The app running in this process (workers + API) until the returned handle is stopped.
#[allow(dead_code)] // the API address is used by the API tests
pub struct Running {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    pub addr: std::net::SocketAddr,
}

impl Running {
    pub async fn start(settings: Settings) -> Running {
        Running::start_parts(settings, adopt_worker::startup::Parts::default()).await
    }

    /// The HTTP API alone (no workers): tests then deliver deterministically with `drain`.
    #[allow(dead_code)]
    pub async fn start_api_only(settings: Settings) -> Running {
        let parts = adopt_worker::startup::Parts {
            workers: false,
            api: true,
        };
        Running::start_parts(settings, parts).await
    }

    async fn start_parts(settings: Settings, parts: adopt_worker::startup::Parts) -> Running {
        Running::start_app(app(settings), parts).await
    }

    /// An app built (and adjusted) by the test.
    pub async fn start_app(app: App, parts: adopt_worker::startup::Parts) -> Running {
        let listener = app.bind().await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            app.run_until_stopped(Some(listener), parts, async move {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        Running {
            stop: Some(tx),
            task,
            addr,
        }
    }

    #[allow(dead_code)]
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
    }
}

/// Polls `check` every 20 ms until it holds or `timeout` passes; returns whether it held.
pub async fn eventually<F, Fut>(timeout: std::time::Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
