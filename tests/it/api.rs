//! The HTTP API over real HTTP against real PostgreSQL (docs/api.md "HTTP API").

mod auth;
mod contract;
mod emails;
mod fuzz_findings;
mod openapi;
mod providers;
mod security;
mod templates;
mod unsubscribe;
mod webhooks;

use adopt_worker::api::tokens::{self, Scope};
use adopt_worker::config::Settings;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::*;

pub const JWT_SECRET: &str = "test-jwt-secret-0123456789abcdef-0123456789";
pub const WEBHOOK_SECRET: &str = "test-webhook-secret-0123456789";

/// The API (no workers) on its own database, with SMTP captured by the test server.
pub struct Api {
    pub db: TestDb,
    pub smtp: TestSmtp,
    pub settings: Settings,
    pub running: Running,
    pub http: Client,
}

impl Api {
    pub async fn start() -> Api {
        Api::start_with(&[]).await
    }

    pub async fn start_with(overrides: &[(&str, &str)]) -> Api {
        Api::start_adjusted(overrides, |_| {}).await
    }

    /// [`Api::start_with`], the app adjusted by `adjust` before it starts.
    pub async fn start_adjusted(
        overrides: &[(&str, &str)],
        adjust: impl FnOnce(&mut adopt_worker::startup::App),
    ) -> Api {
        let db = TestDb::new().await;
        let smtp = TestSmtp::start().await;
        let mut all = vec![
            ("ADOPT__AUTH__JWT_SECRET", JWT_SECRET),
            ("ADOPT__AUTH__WEBHOOK_SECRET", WEBHOOK_SECRET),
        ];
        all.extend_from_slice(overrides);
        let settings = settings(&db, Some(&smtp.url()), None, &all);
        let mut app = app(settings.clone());
        adjust(&mut app);
        let parts = adopt_worker::startup::Parts {
            workers: false,
            api: true,
        };
        let running = Running::start_app(app, parts).await;
        Api {
            db,
            smtp,
            settings,
            running,
            http: Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        self.running.url(path)
    }

    /// A fresh service token with these scopes.
    pub async fn token(&self, scopes: &[Scope]) -> String {
        let name = format!("svc-{}", Uuid::new_v4().simple());
        tokens::create(&self.db.pool, &name, scopes).await.unwrap()
    }

    /// An ACTIVE ADMIN user and a valid JWT for them.
    pub async fn admin(&self) -> (Uuid, String) {
        let id = insert_user(
            &self.db.pool,
            &format!("admin-{}@example.com", Uuid::new_v4()),
        )
        .await;
        sqlx::query("UPDATE users SET user_type = 'ADMIN' WHERE user_id = $1")
            .bind(id)
            .execute(&self.db.pool)
            .await
            .unwrap();
        (id, jwt(&id.to_string(), 3600, JWT_SECRET))
    }

    pub async fn get(&self, path: &str, bearer: &str) -> Response {
        self.http
            .get(self.url(path))
            .bearer_auth(bearer)
            .send()
            .await
            .unwrap()
    }

    pub async fn post_json(&self, path: &str, bearer: &str, body: &Value) -> Response {
        self.http
            .post(self.url(path))
            .bearer_auth(bearer)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// Delivers what is due now through the real pipeline.
    pub async fn drain(&self) {
        app(self.settings.clone()).drain().await.unwrap();
    }

    pub async fn queue_count(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM email_queue")
            .fetch_one(&self.db.pool)
            .await
            .unwrap()
    }
}

/// An HS256 JWT for `sub`, expiring `exp_in` seconds from now (negative: already expired).
pub fn jwt(sub: &str, exp_in: i64, secret: &str) -> String {
    let now = chrono::Utc::now().timestamp();
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": sub, "iat": now, "exp": now + exp_in}),
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// The JSON error body's code, after checking the status.
pub async fn error_code(r: Response, status: u16) -> (String, Value) {
    assert_eq!(r.status().as_u16(), status, "unexpected status");
    assert!(
        r.headers()[reqwest::header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let body: Value = r.json().await.unwrap();
    let code = body["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(body["error"]["message"].is_string(), "{body}");
    (code, body)
}

/// A minimal valid rendered email.
pub fn email(to: &str) -> Value {
    json!({"to": to, "subject": "Biscuit is waiting", "html": "<p>Hello</p>", "type": "transactional"})
}

#[tokio::test]
async fn healthz_and_readyz_answer() {
    let api = Api::start().await;
    let r = api.http.get(api.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers().contains_key("x-request-id"),
        "request ids are generated"
    );
    let r = api
        .http
        .get(api.url("/readyz"))
        .header("x-request-id", "req-123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["x-request-id"], "req-123", "and propagated");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], "ready");
}

#[tokio::test]
async fn readyz_fails_when_migrations_are_behind() {
    let api = Api::start().await;
    sqlx::query(
        "DELETE FROM _sqlx_migrations WHERE version = (SELECT max(version) FROM _sqlx_migrations)",
    )
    .execute(&api.db.pool)
    .await
    .unwrap();
    let r = api.http.get(api.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["failed"], json!(["migrations"]), "{body}");
}

#[tokio::test]
async fn unknown_routes_and_methods_get_json_errors() {
    let api = Api::start().await;
    let r = api.http.get(api.url("/nope")).send().await.unwrap();
    assert_eq!(error_code(r, 404).await.0, "route_not_found");
    let r = api.http.delete(api.url("/healthz")).send().await.unwrap();
    assert_eq!(error_code(r, 405).await.0, "method_not_allowed");
}

#[test]
fn tokens_cli_creates_lists_and_revokes_without_showing_secrets() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(TestDb::new());
    let run = |args: &[&str]| {
        let out = bin()
            .args(args)
            .env("DATABASE_URL", &db.url)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, out, err) = run(&[
        "tokens",
        "create",
        "--name",
        "shelter-svc",
        "--scopes",
        "enqueue,read",
    ]);
    assert!(ok, "{err}");
    let secret = out.lines().last().unwrap().trim().to_string();
    assert!(tokens::looks_like_token(&secret), "{out}");

    let stored: Vec<u8> = rt
        .block_on(
            sqlx::query_scalar("SELECT token_hash FROM api_tokens WHERE name = 'shelter-svc'")
                .fetch_one(&db.pool),
        )
        .unwrap();
    assert_eq!(
        stored,
        tokens::hash(&secret).to_vec(),
        "only the hash is stored"
    );

    let (ok, _, err) = run(&[
        "tokens",
        "create",
        "--name",
        "shelter-svc",
        "--scopes",
        "read",
    ]);
    assert!(!ok && err.contains("already exists"), "{err}");
    let (ok, _, err) = run(&[
        "tokens",
        "create",
        "--name",
        "x",
        "--scopes",
        "enqueue,root",
    ]);
    assert!(!ok && err.contains("\"root\""), "{err}");

    let (ok, out, _) = run(&["tokens", "list"]);
    assert!(ok);
    assert!(
        out.contains("shelter-svc") && out.contains("enqueue,read"),
        "{out}"
    );
    assert!(!out.contains(&secret[4..]), "list never shows secrets");

    let (ok, out, _) = run(&["tokens", "revoke", "shelter-svc"]);
    assert!(ok, "{out}");
    let (ok, out, _) = run(&["tokens", "list"]);
    assert!(ok);
    let line = out.lines().find(|l| l.starts_with("shelter-svc")).unwrap();
    assert!(
        !line.trim_end().ends_with('-'),
        "revoked time shown: {line}"
    );
    let (ok, _, err) = run(&["tokens", "revoke", "nobody"]);
    assert!(!ok && err.contains("no token named"), "{err}");
}
