//! Templates through the API: enqueue by template, list, preview, test sends (and the
//! `send-test` command), and the open pixel and click redirect.

use std::path::Path;

use adopt_worker::api::tokens::Scope;
use adopt_worker::tracking::{sign_click, sign_open};
use reqwest::StatusCode;

use super::*;

const TRACKING_SECRET: &str = "tracking-secret-0123456789";

pub(super) async fn start(extra: &[(&str, &str)]) -> Api {
    let mut o = vec![
        ("ADOPT__TEMPLATES__LOOKUP_TTL_MS", "0"),
        ("ADOPT__TRACKING__SECRET", TRACKING_SECRET),
    ];
    o.extend_from_slice(extra);
    let api = Api::start_with(&o).await;
    app(api.settings.clone())
        .templates
        .sync(Path::new("templates"), &Default::default())
        .await
        .expect("the shipped templates sync");
    api
}

fn welcome(to: &str) -> Value {
    json!({"to": to, "template": "welcome", "data": {"user": {"first_name": "Maya"}},
           "type": "transactional"})
}

#[tokio::test]
async fn a_template_email_is_validated_pinned_and_rendered_by_the_worker() {
    let api = start(&[]).await;
    let token = api.token(&[Scope::Enqueue]).await;
    let r = api
        .post_json("/v1/emails", &token, &welcome("maya@example.com"))
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let id: Uuid = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();

    let (template, subject, html, data, meta): (Option<Uuid>, String, String, Value, Value) =
        sqlx::query_as(
            "SELECT template_id, subject, html_content, template_data, metadata FROM email_queue
             WHERE email_id = $1",
        )
        .bind(id)
        .fetch_one(&api.db.pool)
        .await
        .unwrap();
    assert!(template.is_some());
    assert_eq!(
        (subject.as_str(), html.as_str()),
        ("", ""),
        "the worker renders at send time"
    );
    assert_eq!(data, json!({"user": {"first_name": "Maya"}}));
    assert_eq!(meta["templateVersion"], 1, "the version is pinned");

    api.drain().await;
    assert_eq!(row(&api.db.pool, id).await.status, "sent");
    let msgs = api.smtp.messages();
    assert_eq!(
        msgs[0].header("Subject").unwrap(),
        "Welcome to Adopt Don't Shop, Maya!"
    );
}

#[tokio::test]
async fn template_problems_name_the_field_and_insert_nothing() {
    let api = start(&[]).await;
    let token = api.token(&[Scope::Enqueue]).await;
    let cases = [
        (
            json!({"to": "a@example.com", "template": "welcome", "type": "transactional"}),
            "data",
            "user",
        ),
        (
            json!({"to": "a@example.com", "template": "welcome", "data": {"user": "Maya"}, "type": "transactional"}),
            "data",
            "user",
        ),
        (
            json!({"to": "a@example.com", "template": "no_such", "type": "system"}),
            "template",
            "no_such",
        ),
    ];
    for (body, field, mentions) in cases {
        let (code, err) = error_code(api.post_json("/v1/emails", &token, &body).await, 422).await;
        assert_eq!(code, "validation_failed");
        let e = &err["error"]["details"]["errors"][0];
        assert_eq!(e["field"], field, "{err}");
        assert!(e["message"].as_str().unwrap().contains(mentions), "{err}");
    }
    // One bad item fails the whole batch, with its index.
    let batch = json!({"emails": [welcome("a@example.com"),
        {"to": "b@example.com", "template": "welcome", "type": "transactional"}]});
    let (_, err) = error_code(api.post_json("/v1/emails/batch", &token, &batch).await, 422).await;
    assert_eq!(err["error"]["details"]["errors"][0]["index"], 1);
    assert_eq!(api.queue_count().await, 0);
}

#[tokio::test]
async fn admins_list_and_preview_templates() {
    let api = start(&[]).await;
    let (_, admin) = api.admin().await;
    let list: Value = api.get("/v1/templates", &admin).await.json().await.unwrap();
    let names: Vec<&str> = list["templates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"welcome") && names.contains(&"newsletter"),
        "{names:?}"
    );
    let reader = api.token(&[Scope::Read]).await;
    let r = api.get("/v1/templates", &reader).await;
    assert_eq!(r.status(), StatusCode::OK, "listing needs only read");
    let r = api.get("/v1/templates/welcome/preview", &reader).await;
    assert_eq!(error_code(r, 403).await.0, "insufficient_scope");

    let r = api.get("/v1/templates/welcome/preview", &admin).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = r.text().await.unwrap();
    assert!(
        html.contains("Welcome, Maya!"),
        "rendered with the examples"
    );

    let p: Value = api
        .get(
            "/v1/templates/newsletter/preview?format=json&locale=en-US",
            &admin,
        )
        .await
        .json()
        .await
        .unwrap();
    assert!(p["subject"].as_str().unwrap().contains("March 2026"), "{p}");
    assert!(
        p["html"].as_str().unwrap().contains("/u/preview"),
        "marketing shows its unsubscribe link"
    );
    assert_eq!(p["version"], 1);

    // The template (and version) named by the path is the resource: missing is 404.
    let r = api.get("/v1/templates/no_such/preview", &admin).await;
    assert_eq!(error_code(r, 404).await.0, "not_found");
    let r = api
        .get("/v1/templates/welcome/preview?version=99", &admin)
        .await;
    assert_eq!(error_code(r, 404).await.0, "not_found");
    let r = api
        .get("/v1/templates/welcome/preview?format=xml", &admin)
        .await;
    assert_eq!(error_code(r, 400).await.0, "invalid_query");
}

#[tokio::test]
async fn a_test_send_goes_through_the_pipeline_is_counted_and_rate_limited() {
    let api = start(&[("ADOPT__AUTH__TEST_SENDS_PER_MINUTE", "2")]).await;
    let (admin_id, admin) = api.admin().await;
    let r = api
        .post_json(
            "/v1/templates/welcome/test",
            &admin,
            &json!({"to": "qa@example.com"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let id: Uuid = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let (priority, tags, created_by, kind): (String, Vec<String>, Option<Uuid>, String) = sqlx::query_as(
        "SELECT priority::text, tags, created_by, type::text FROM email_queue WHERE email_id = $1",
    )
    .bind(id)
    .fetch_one(&api.db.pool)
    .await
    .unwrap();
    assert_eq!((priority.as_str(), kind.as_str()), ("urgent", "system"));
    assert_eq!(tags, vec!["test"]);
    assert_eq!(created_by, Some(admin_id));
    let sent: i32 =
        sqlx::query_scalar("SELECT test_emails_sent FROM email_templates WHERE name = 'welcome'")
            .fetch_one(&api.db.pool)
            .await
            .unwrap();
    assert_eq!(sent, 0, "counted once delivered, not when queued");
    api.drain().await;
    assert_eq!(row(&api.db.pool, id).await.status, "sent");
    let (sent, used): (i32, i32) = sqlx::query_as(
        "SELECT test_emails_sent, COALESCE(usage_count, 0) FROM email_templates WHERE name = 'welcome'",
    )
    .fetch_one(&api.db.pool)
    .await
    .unwrap();
    assert_eq!((sent, used), (1, 0), "a test send is not a use");
    assert!(
        api.smtp.messages()[0]
            .header("Subject")
            .unwrap()
            .contains("Maya")
    );

    // A service token with the admin scope: no user behind it.
    let svc = api.token(&[Scope::Admin]).await;
    let r = api
        .post_json(
            "/v1/templates/welcome/test",
            &svc,
            &json!({"to": "qa@example.com",
            "data": {"user": {"first_name": "Sam"}}}),
        )
        .await;
    let id: Uuid = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let created_by: Option<Uuid> =
        sqlx::query_scalar("SELECT created_by FROM email_queue WHERE email_id = $1")
            .bind(id)
            .fetch_one(&api.db.pool)
            .await
            .unwrap();
    assert_eq!(created_by, None);

    let r = api
        .post_json(
            "/v1/templates/welcome/test",
            &admin,
            &json!({"to": "qa@example.com"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED, "second of two a minute");
    let r = api
        .post_json(
            "/v1/templates/welcome/test",
            &admin,
            &json!({"to": "qa@example.com"}),
        )
        .await;
    let retry_after: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after));
    assert_eq!(error_code(r, 429).await.0, "rate_limited");

    let (_, other_admin) = api.admin().await;
    let r = api
        .post_json(
            "/v1/templates/welcome/test",
            &other_admin,
            &json!({"to": "not an address"}),
        )
        .await;
    assert_eq!(
        error_code(r, 422).await.1["error"]["details"]["errors"][0]["field"],
        "to"
    );
    let r = api
        .post_json(
            "/v1/templates/welcome/test",
            &other_admin,
            &json!({"to": "a@example.com", "cc": []}),
        )
        .await;
    assert_eq!(
        error_code(r, 422).await.0,
        "validation_failed",
        "unknown fields are refused"
    );
}

#[test]
fn send_test_command_queues_through_the_same_path() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _in_runtime = rt.enter();
    let db = rt.block_on(TestDb::new());
    let s = settings(&db, None, None, &[]);
    rt.block_on(
        app(s)
            .templates
            .sync(Path::new("templates"), &Default::default()),
    )
    .unwrap();
    let outbox = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = bin()
            .args(args)
            .env("DATABASE_URL", &db.url)
            .env("ADOPT__OUTBOX__DIR", outbox.path())
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, out, err) = run(&["send-test", "--queue", "--to", "qa@example.com"]);
    assert!(ok, "{err}");
    assert!(out.starts_with("send-test: queued "), "{out}");
    // Without --queue it is delivered now, here to the outbox (no SMTP configured).
    let (ok, out, err) = run(&[
        "send-test",
        "--to",
        "qa@example.com",
        "--template",
        "welcome",
    ]);
    assert!(ok, "{err}");
    assert!(out.starts_with("send-test: sent "), "{out}");
    assert!(out.contains("written to "), "{out}");
    let rows: Vec<(String, Option<Uuid>, Vec<String>, String)> = rt
        .block_on(
            sqlx::query_as(
                "SELECT priority::text, template_id, tags, status::text FROM email_queue ORDER BY created_at",
            )
            .fetch_all(&db.pool),
        )
        .unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r.0 == "urgent" && r.2 == vec!["test"]));
    assert!(rows[0].1.is_none() && rows[1].1.is_some());
    assert_eq!((rows[0].3.as_str(), rows[1].3.as_str()), ("queued", "sent"));
    assert_eq!(std::fs::read_dir(outbox.path()).unwrap().count(), 1);
    let (ok, _, err) = run(&["send-test", "--to", "nope", "--template", "welcome"]);
    assert!(!ok && err.contains("not a valid email address"), "{err}");
    let (ok, _, err) = run(&["send-test", "--to", "qa@example.com", "--template", "nope"]);
    assert!(!ok && err.contains("no template named"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn send_test_answers_whether_the_relay_takes_mail() {
    let db = TestDb::new().await;
    let smtp = TestSmtp::start().await;
    let run = |url: String| {
        let db_url = db.url.clone();
        async move {
            let out = tokio::process::Command::from(bin())
                .args(["send-test", "--to", "qa@example.com"])
                .env("DATABASE_URL", db_url)
                .env("SMTP_URL", url)
                .env("ADOPT__SMTP__TIMEOUT_SECS", "5")
                .output()
                .await
                .unwrap();
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).to_string(),
                String::from_utf8_lossy(&out.stderr).to_string(),
            )
        }
    };
    // The relay takes it: its reply and queue id are printed, the row is sent.
    let (ok, out, err) = run(smtp.url()).await;
    assert!(ok, "{out}{err}");
    let queue_id = smtp.messages()[0].queue_id.clone();
    assert!(
        out.contains(&format!("250 2.0.0 Ok: queued as {queue_id}")),
        "{out}"
    );
    // The relay refuses the recipient: non-zero, the classification and reply on stderr.
    smtp.add_rule(Rule::reply(Command::Rcpt, 554, "5.7.1 relay access denied"));
    let (ok, _, err) = run(smtp.url()).await;
    assert!(!ok);
    assert!(
        err.contains("FAILED (permanent)") && err.contains("5.7.1 relay access denied"),
        "{err}"
    );
    smtp.clear_rules();
    // Nothing listens: non-zero, a connection failure, and the row waits for its retry.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("smtp://{}", closed.local_addr().unwrap());
    drop(closed);
    let (ok, _, err) = run(dead).await;
    assert!(!ok);
    assert!(
        err.contains("FAILED (transient, class connection)"),
        "{err}"
    );
    assert!(err.contains("queued for a retry"), "{err}");
    let statuses: Vec<String> =
        sqlx::query_scalar("SELECT status::text FROM email_queue ORDER BY created_at")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(statuses, ["sent", "failed", "queued"]);

    // A worker running on the same database never takes the test email from the command:
    // it reports its own transport (here a dead one), every time.
    let worker = Running::start(settings(&db, Some(&smtp.url()), None, &[])).await;
    for _ in 0..3 {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dead = format!("smtp://{}", closed.local_addr().unwrap());
        drop(closed);
        let (ok, out, err) = run(dead).await;
        assert!(!ok, "{out}");
        assert!(
            err.contains("FAILED (transient, class connection)"),
            "{out}{err}"
        );
    }
    worker.stop().await;
}

async fn sent_marketing(api: &Api) -> Uuid {
    let mut e = NewEmail::to("maya@example.com");
    e.email_type = "marketing";
    let id = e.insert(&api.db.pool).await;
    sqlx::query("UPDATE email_queue SET status = 'sent', sent_at = now() WHERE email_id = $1")
        .bind(id)
        .execute(&api.db.pool)
        .await
        .unwrap();
    id
}

async fn pixel(api: &Api, token: &str) -> reqwest::Response {
    let r = api
        .http
        .get(api.url(&format!("/t/o/{token}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "image/gif");
    let cc = r.headers()["cache-control"].to_str().unwrap();
    assert!(cc.contains("no-store") && cc.contains("private"), "{cc}");
    r
}

#[tokio::test]
async fn the_open_pixel_counts_valid_tokens_only_and_always_answers_a_gif() {
    let api = start(&[]).await;
    let id = sent_marketing(&api).await;
    let good = sign_open(id, TRACKING_SECRET.as_bytes());

    let forged = sign_open(id, b"some-other-key-0123456789");
    for token in [forged.as_str(), "garbage", "AAAA"] {
        let gif = pixel(&api, token).await.bytes().await.unwrap();
        assert!(gif.starts_with(b"GIF89a") && gif.len() == 43);
    }
    let r = row(&api.db.pool, id).await;
    assert_eq!(
        (r.status.as_str(), r.tracking),
        ("sent", Some(json!({}))),
        "forged tokens change nothing"
    );

    pixel(&api, &good).await;
    pixel(&api, &good).await;
    let r = row(&api.db.pool, id).await;
    assert_eq!(r.status, "opened");
    let t = r.tracking.unwrap();
    assert_eq!(t["opens"], 2);
    assert!(t["firstOpenedAt"].is_string() && t["lastOpenedAt"].is_string());
    assert!(!t.to_string().contains("127.0.0.1"), "no IP stored");

    // Never over a bounced row.
    sqlx::query("UPDATE email_queue SET status = 'bounced' WHERE email_id = $1")
        .bind(id)
        .execute(&api.db.pool)
        .await
        .unwrap();
    pixel(&api, &good).await;
    let r = row(&api.db.pool, id).await;
    assert_eq!(
        (r.status.as_str(), r.tracking.unwrap()["opens"].clone()),
        ("bounced", json!(2))
    );
}

#[tokio::test]
async fn the_click_redirect_goes_only_where_the_token_was_signed_for() {
    let api = start(&[]).await;
    let id = sent_marketing(&api).await;
    let key = TRACKING_SECRET.as_bytes();
    let target = "https://adoptdontshop.com/pets/7?ref=email";
    let good = sign_click(id, target, key);

    let r = api
        .http
        .get(api.url(&format!("/t/c/{good}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    assert_eq!(r.headers()["location"], target);
    let r = row(&api.db.pool, id).await;
    assert_eq!(r.status, "clicked");
    assert_eq!(r.tracking.unwrap()["clicks"], 1);

    // Another URL under the same signature, a token signed with another key, an open token,
    // and junk: 400, no redirect, no change.
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut raw = b64.decode(&good).unwrap();
    let at = raw.windows(4).position(|w| w == b"adop").unwrap();
    raw[at..at + 4].copy_from_slice(b"evil");
    let altered = b64.encode(raw);
    let other_key = sign_click(id, "https://evil.example/", b"some-other-key-0123456789");
    let open = sign_open(id, key);
    for token in [altered.as_str(), other_key.as_str(), open.as_str(), "junk"] {
        let r = api
            .http
            .get(api.url(&format!("/t/c/{token}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{token}");
        assert!(r.headers().get("location").is_none());
    }
    assert_eq!(row(&api.db.pool, id).await.tracking.unwrap()["clicks"], 1);
}

#[tokio::test]
async fn a_service_discovers_a_template_s_variables_and_data_schema_with_read() {
    let api = start(&[]).await;
    let read = api.token(&[Scope::Read]).await;
    let enqueue_only = api.token(&[Scope::Enqueue]).await;

    let r = api.get("/v1/templates", &read).await;
    assert_eq!(r.status(), StatusCode::OK, "the list needs only read");
    let r = api.get("/v1/templates/account_reinstated", &read).await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["name"], "account_reinstated");
    let user = body["variables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "user")
        .unwrap()
        .clone();
    assert_eq!(user["type"], "object");
    assert_eq!(user["required"], true);
    assert_eq!(user["fields"][0]["name"], "first_name");
    assert_eq!(user["fields"][0]["type"], "string");
    let schema = &body["data_schema"];
    assert!(
        schema["required"]
            .as_array()
            .unwrap()
            .contains(&json!("user"))
    );
    assert_eq!(schema["properties"]["user"]["type"], "object");

    // The schema's example data is what the API accepts for this template.
    let data: serde_json::Map<String, Value> = body["variables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| Some((v["name"].as_str()?.to_string(), v["example"].clone())))
        .filter(|(_, e)| !e.is_null())
        .collect();
    let enqueue = api.token(&[Scope::Enqueue]).await;
    let r = api
        .post_json(
            "/v1/emails",
            &enqueue,
            &json!({"to": "maya@example.com", "type": "transactional",
                    "template": "account_reinstated", "data": data}),
        )
        .await;
    assert_eq!(
        r.status(),
        StatusCode::ACCEPTED,
        "{}",
        r.text().await.unwrap()
    );

    let r = api
        .get("/v1/templates/account_reinstated", &enqueue_only)
        .await;
    assert_eq!(error_code(r, 403).await.0, "insufficient_scope");
    let r = api.get("/v1/templates/no_such_template", &read).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_data_key_the_template_does_not_declare_is_refused_naming_the_nearest() {
    let api = start(&[]).await;
    let enqueue = api.token(&[Scope::Enqueue]).await;
    let body = json!({"to": "maya@example.com", "type": "transactional",
        "template": "account_reinstated",
        "data": {"user": {"first_name": "Maya"},
                 "action": {"type_label": "Suspension", "expired_at": "today"},
                 "acton": {"type_label": "typo"}}});
    let r = api.post_json("/v1/emails", &enqueue, &body).await;
    let (code, err) = error_code(r, 422).await;
    assert_eq!(code, "validation_failed");
    let field = &err["error"]["details"]["errors"][0];
    assert_eq!(field["field"], "data.acton", "{err}");
    assert!(
        field["message"]
            .as_str()
            .unwrap()
            .contains("did you mean \"action\""),
        "{err}"
    );
    assert_eq!(api.queue_count().await, 0, "nothing inserted");

    // Off by configuration: accepted as before.
    let lax = start(&[("ADOPT__TEMPLATES__STRICT_DATA", "false")]).await;
    let enqueue = lax.token(&[Scope::Enqueue]).await;
    let r = lax.post_json("/v1/emails", &enqueue, &body).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
}

#[tokio::test]
async fn a_datetime_sent_as_rfc_3339_is_printed_for_a_reader() {
    let api = start(&[]).await;
    let enqueue = api.token(&[Scope::Enqueue]).await;
    let data = json!({"user": {"first_name": "Maya"},
        "reset_url": "https://adoptdontshop.com/reset-password?token=abc",
        "expiry_hours": 1, "requested_at": "2026-03-14T10:30:00Z"});
    let r = api
        .post_json(
            "/v1/emails",
            &enqueue,
            &json!({"to": "maya@example.com", "type": "transactional",
                    "template": "password_reset", "data": data}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    api.drain().await;
    let m = &api.smtp.messages()[0];
    let text = m.text();
    assert!(
        text.contains("Saturday 14 March 2026 at 10:30"),
        "formatted, not the raw ISO string: {text}"
    );
    assert!(!text.contains("2026-03-14T10:30:00Z"), "{text}");
}

#[tokio::test]
async fn a_preview_takes_data_and_an_old_version_shows_with_its_own_examples() {
    let api = start(&[]).await;
    let (_, admin) = api.admin().await;
    let p: Value = api
        .post_json(
            "/v1/templates/welcome/preview?format=json",
            &admin,
            &json!({"data": {"user": {"first_name": "Robin"}}}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert!(p["subject"].as_str().unwrap().contains("Robin"), "{p}");
    assert_eq!(p["data"]["user"]["first_name"], "Robin");
    let r = api
        .post_json(
            "/v1/templates/welcome/preview",
            &admin,
            &json!({"data": {"user": "Robin"}}),
        )
        .await;
    let (_, err) = error_code(r, 422).await;
    assert!(err.to_string().contains("user"), "{err}");
    let r = api
        .post_json(
            "/v1/templates/welcome/preview",
            &admin,
            &json!({"data": [1]}),
        )
        .await;
    error_code(r, 422).await;
    // Checked as an enqueue's: a key the template does not declare is refused.
    let r = api
        .post_json(
            "/v1/templates/welcome/preview",
            &admin,
            &json!({"data": {"user": {"first_name": "Zed"}, "usr": 1}}),
        )
        .await;
    let (_, err) = error_code(r, 422).await;
    assert_eq!(
        err["error"]["details"]["errors"][0]["field"], "data.usr",
        "{err}"
    );

    // Version 2 renames the variable: version 1 previews with version 1's examples.
    sqlx::query(
        "UPDATE email_templates SET
            versions = COALESCE(versions, '[]') || jsonb_build_array(jsonb_build_object(
                'version', 1, 'subject', subject, 'html_content', html_content,
                'text_content', text_content, 'variables', variables)),
            current_version = 2,
            subject = 'Hello {{ member.first_name }}',
            html_content = replace(html_content, 'user.first_name', 'member.first_name'),
            text_content = NULL,
            variables = '[{\"name\": \"member\", \"type\": \"object\", \"required\": true, \"example\": {\"first_name\": \"Kim\"}}]',
            updated_at = now()
         WHERE name = 'welcome'",
    )
    .execute(&api.db.pool)
    .await
    .unwrap();
    let v1: Value = api
        .get(
            "/v1/templates/welcome/preview?format=json&version=1",
            &admin,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v1["version"], 1, "{v1}");
    assert!(v1["subject"].as_str().unwrap().contains("Maya"), "{v1}");
    let v2: Value = api
        .get("/v1/templates/welcome/preview?format=json", &admin)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v2["subject"], "Hello Kim", "{v2}");
}

/// Enqueue checks `data` against the declarations without rendering when the template reads
/// only what it declares; a template written by another tool that reads undeclared
/// variables is rendered once instead, so a variable it needs is still a 422.
#[tokio::test]
async fn enqueue_checks_declared_data_and_renders_what_declares_nothing() {
    let api = start(&[]).await;
    let token = api.token(&[Scope::Enqueue]).await;
    sqlx::query(
        "INSERT INTO email_templates (name, type, category, status, subject, html_content, created_by)
         VALUES ('legacy_notice', 'transactional', 'system_alert', 'active', 'Notice for {{ pet }}',
                 '<p>{{ pet }} is ready</p>', $1)",
    )
    .bind(adopt_worker::templates::SYSTEM_USER_ID)
    .execute(&api.db.pool)
    .await
    .unwrap();
    let email = |template: &str, data: Value| json!({"to": "a@example.com", "type": "transactional", "template": template, "data": data});
    let r = api
        .post_json("/v1/emails", &token, &email("legacy_notice", json!({})))
        .await;
    let (_, err) = error_code(r, 422).await;
    assert!(err.to_string().contains("pet"), "{err}");
    let r = api
        .post_json(
            "/v1/emails",
            &token,
            &email("legacy_notice", json!({"pet": "Rex"})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);

    // Declared: a missing or mistyped variable is named without a render.
    let r = api
        .post_json("/v1/emails", &token, &email("welcome", json!({})))
        .await;
    let (_, err) = error_code(r, 422).await;
    assert!(
        err.to_string()
            .contains("missing required variable \\\"user\\\""),
        "{err}"
    );
    let r = api
        .post_json(
            "/v1/emails",
            &token,
            &email("welcome", json!({"user": "Maya"})),
        )
        .await;
    let (_, err) = error_code(r, 422).await;
    assert!(err.to_string().contains("must be an object"), "{err}");
    // What an object must hold only a render tells: still a 422, not a failed row later.
    let r = api
        .post_json("/v1/emails", &token, &email("welcome", json!({"user": {}})))
        .await;
    let (_, err) = error_code(r, 422).await;
    assert!(err.to_string().contains("user.first_name"), "{err}");
    // Names are compared case-insensitively, as sync compares them.
    let r = api
        .post_json(
            "/v1/emails",
            &token,
            &email("WELCOME", json!({"user": {"first_name": "Maya"}})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    // An unknown top-level field is named once.
    let r = api
        .post_json(
            "/v1/emails",
            &token,
            &json!({"to": "a@example.com", "bogus": 1}),
        )
        .await;
    let (_, err) = error_code(r, 422).await;
    assert_eq!(
        err["error"]["details"]["errors"][0]["field"], "bogus",
        "{err}"
    );
}
