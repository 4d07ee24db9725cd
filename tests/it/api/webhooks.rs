//! `POST /v1/webhooks/events`: signed relay events, replay and window checks, and what each
//! event does to the row and the recipient.

use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use sha2::Sha256;

use super::*;

fn sign(secret: &str, ts: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{ts}.{body}").as_bytes());
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

async fn post_signed(api: &Api, body: &Value, ts: i64, secret: &str) -> reqwest::Response {
    let raw = body.to_string();
    api.http
        .post(api.url("/v1/webhooks/events"))
        .header("content-type", "application/json")
        .header("x-adopt-timestamp", ts.to_string())
        .header("x-adopt-signature", sign(secret, ts, &raw))
        .body(raw)
        .send()
        .await
        .unwrap()
}

async fn post(api: &Api, body: &Value) -> Value {
    let r = post_signed(api, body, chrono::Utc::now().timestamp(), WEBHOOK_SECRET).await;
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.unwrap()
}

/// A row the relay accepted: `sent`, with its relay message id.
async fn sent_row(api: &Api, to: &str, user: Option<Uuid>, relay_id: &str) -> Uuid {
    let mut e = NewEmail::to(to);
    e.user_id = user;
    let id = e.insert(&api.db.pool).await;
    sqlx::query("UPDATE email_queue SET status = 'sent', sent_at = now(), provider_message_id = $2 WHERE email_id = $1")
        .bind(id)
        .bind(relay_id)
        .execute(&api.db.pool)
        .await
        .unwrap();
    id
}

async fn blacklist(api: &Api, user: Uuid) -> (Option<bool>, Option<String>, Option<i32>) {
    sqlx::query_as("SELECT is_blacklisted, blacklist_reason, bounce_count FROM email_preferences WHERE user_id = $1")
        .bind(user)
        .fetch_one(&api.db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn unsigned_forged_stale_and_replayed_requests_are_refused() {
    let api = Api::start().await;
    let id = sent_row(&api, "maya@example.com", None, "relay-1").await;
    let body = json!({"type": "delivered", "email_id": id});
    let now = chrono::Utc::now().timestamp();

    let r = api
        .http
        .post(api.url("/v1/webhooks/events"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 401).await.0, "invalid_signature");
    let r = post_signed(&api, &body, now, "the-wrong-secret-0123456789").await;
    assert_eq!(error_code(r, 401).await.0, "invalid_signature");
    let r = post_signed(&api, &body, now - 301, WEBHOOK_SECRET).await;
    assert_eq!(error_code(r, 401).await.0, "invalid_timestamp");
    let r = post_signed(&api, &body, now + 301, WEBHOOK_SECRET).await;
    assert_eq!(error_code(r, 401).await.0, "invalid_timestamp");
    // A valid signature over a different body than the one sent.
    let r = api
        .http
        .post(api.url("/v1/webhooks/events"))
        .header("content-type", "application/json")
        .header("x-adopt-timestamp", now.to_string())
        .header(
            "x-adopt-signature",
            sign(WEBHOOK_SECRET, now, &body.to_string()),
        )
        .body(json!({"type": "bounced", "bounce_type": "hard", "email_id": id}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 401).await.0, "invalid_signature");
    assert_eq!(
        row(&api.db.pool, id).await.status,
        "sent",
        "nothing applied"
    );

    let r = post_signed(&api, &body, now, WEBHOOK_SECRET).await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = post_signed(&api, &body, now, WEBHOOK_SECRET).await;
    assert_eq!(error_code(r, 409).await.0, "replayed_request");
}

#[tokio::test]
async fn webhook_is_off_without_a_secret() {
    let api = Api::start_with(&[("ADOPT__AUTH__WEBHOOK_SECRET", "")]).await;
    let body = json!({"type": "delivered", "email_id": Uuid::new_v4()});
    let r = post_signed(&api, &body, chrono::Utc::now().timestamp(), "").await;
    assert_eq!(error_code(r, 503).await.0, "webhook_disabled");
}

#[tokio::test]
async fn delivered_and_opened_move_the_status_forward_only() {
    let api = Api::start().await;
    let a = sent_row(&api, "a@example.com", None, "relay-a").await;
    let res = post(
        &api,
        &json!({"type": "delivered", "provider_message_id": "relay-a"}),
    )
    .await;
    assert_eq!(res["results"][0]["outcome"], "applied");
    assert_eq!(res["results"][0]["email_id"], a.to_string());
    let r = row(&api.db.pool, a).await;
    assert_eq!(r.status, "delivered");
    assert!(r.tracking.unwrap()["deliveredAt"].is_string());

    post(
        &api,
        &json!([{"type": "opened", "email_id": a}, {"type": "opened", "email_id": a}]),
    )
    .await;
    let r = row(&api.db.pool, a).await;
    assert_eq!(r.status, "opened");
    let t = r.tracking.unwrap();
    assert_eq!(t["opens"], 2);
    assert!(t["firstOpenedAt"].is_string() && t["lastOpenedAt"].is_string());

    // A late delivery report does not move an opened row back.
    post(&api, &json!({"type": "delivered", "email_id": a})).await;
    assert_eq!(row(&api.db.pool, a).await.status, "opened");

    let failed = NewEmail::to("b@example.com").insert(&api.db.pool).await;
    sqlx::query("UPDATE email_queue SET status = 'failed' WHERE email_id = $1")
        .bind(failed)
        .execute(&api.db.pool)
        .await
        .unwrap();
    let res = post(
        &api,
        &json!([{"type": "opened", "email_id": failed}, {"type": "delivered", "email_id": Uuid::new_v4()},
                {"type": "delivered", "provider_message_id": "nobody"}]),
    )
    .await;
    assert_eq!(res["results"][0]["outcome"], "ignored");
    assert_eq!(res["results"][1]["outcome"], "not_found");
    assert_eq!(res["results"][2]["outcome"], "not_found");
    let r = row(&api.db.pool, failed).await;
    assert_eq!(r.status, "failed", "never over failed");
    assert_eq!(r.tracking, Some(json!({})));
}

#[tokio::test]
async fn hard_bounce_blacklists_once_and_the_next_email_is_suppressed() {
    let api = Api::start().await;
    let user = insert_user(&api.db.pool, "maya@example.com").await;
    let id = sent_row(&api, "maya@example.com", None, "relay-1").await;
    let bounce = json!({"type": "bounced", "bounce_type": "hard", "provider_message_id": "relay-1",
        "reason": "550 5.1.1 user unknown", "code": "5.1.1"});
    let res = post(&api, &bounce).await;
    assert_eq!(res["results"][0]["outcome"], "applied");
    let r = row(&api.db.pool, id).await;
    assert_eq!(r.status, "bounced");
    let t = r.tracking.unwrap();
    assert_eq!(t["bounceType"], "hard");
    assert_eq!(t["bounceReason"], "550 5.1.1 user unknown");
    assert!(r.failure_reason.unwrap().contains("hard bounce"));
    // The recipient is found by address (the row had no user_id), as the delivery gate does.
    let (black, reason, count) = blacklist(&api, user).await;
    assert_eq!((black, count), (Some(true), Some(1)));
    assert!(reason.unwrap().contains("hard bounce"));

    // The relay reports it again (a new request, so a new signature): not counted twice.
    let r = post_signed(
        &api,
        &bounce,
        chrono::Utc::now().timestamp() - 5,
        WEBHOOK_SECRET,
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let res: Value = r.json().await.unwrap();
    assert_eq!(res["results"][0]["outcome"], "ignored");
    assert_eq!(blacklist(&api, user).await.2, Some(1));

    let next = NewEmail::to("maya@example.com").insert(&api.db.pool).await;
    api.drain().await;
    let r = row(&api.db.pool, next).await;
    assert_eq!(r.status, "failed");
    assert!(r.failure_reason.unwrap().starts_with("suppressed"));
    assert_eq!(api.smtp.message_count(), 0);
}

#[tokio::test]
async fn soft_bounces_count_and_complaints_blacklist() {
    let api = Api::start().await;
    let user = insert_user(&api.db.pool, "maya@example.com").await;
    let id = sent_row(&api, "maya@example.com", Some(user), "relay-1").await;
    post(&api, &json!({"type": "bounced", "bounce_type": "soft", "email_id": id, "reason": "mailbox full"})).await;
    assert_eq!(row(&api.db.pool, id).await.status, "bounced");
    assert_eq!(blacklist(&api, user).await, (Some(false), None, Some(1)));

    let other = sent_row(&api, "maya@example.com", Some(user), "relay-2").await;
    post(&api, &json!({"type": "complained", "email_id": other})).await;
    let (black, reason, _) = blacklist(&api, user).await;
    assert_eq!((black, reason.as_deref()), (Some(true), Some("complaint")));
    let r = row(&api.db.pool, other).await;
    assert_eq!(r.status, "sent", "a complaint changes no status");
    assert!(r.tracking.unwrap()["complainedAt"].is_string());

    // Recipients who are not users are suppressed by address.
    let stranger = sent_row(&api, "Volunteer@Example.org", None, "relay-3").await;
    post(&api, &json!({"type": "complained", "email_id": stranger})).await;
    let reason: String = sqlx::query_scalar(
        "SELECT blacklist_reason FROM email_suppressions WHERE email = 'volunteer@example.org' AND is_blacklisted",
    )
    .fetch_one(&api.db.pool)
    .await
    .unwrap();
    assert_eq!(reason, "complaint");
}

#[tokio::test]
async fn invalid_events_apply_nothing() {
    let api = Api::start().await;
    let id = sent_row(&api, "a@example.com", None, "relay-1").await;
    let body = json!([
        {"type": "delivered", "email_id": id},
        {"type": "bounced", "email_id": id},
        {"type": "exploded", "email_id": id},
        {"type": "opened"}
    ]);
    let r = post_signed(&api, &body, chrono::Utc::now().timestamp(), WEBHOOK_SECRET).await;
    let (code, err) = error_code(r, 422).await;
    assert_eq!(code, "validation_failed");
    let errors = err["error"]["details"]["errors"].as_array().unwrap();
    let named: Vec<(u64, &str)> = errors
        .iter()
        .map(|e| (e["index"].as_u64().unwrap(), e["field"].as_str().unwrap()))
        .collect();
    assert_eq!(
        named,
        vec![(1, "bounce_type"), (2, "type"), (3, "email_id")]
    );
    assert_eq!(row(&api.db.pool, id).await.status, "sent");

    let r = post_signed(
        &api,
        &json!("hello"),
        chrono::Utc::now().timestamp(),
        WEBHOOK_SECRET,
    )
    .await;
    assert_eq!(error_code(r, 422).await.0, "validation_failed");
}

/// `POST /v1/webhooks/dsn`: the raw bounce message, signed like the events; applied as
/// `adopt-worker bounces ingest` applies it, in one transaction with its replay check.
#[tokio::test]
async fn a_signed_dsn_is_applied_once_and_checked_like_the_events() {
    let api = Api::start_with(&[(
        "ADOPT__BOUNCE__RETURN_PATH",
        "bounces+{email_id}@bounces.example.org",
    )])
    .await;
    let user = insert_user(&api.db.pool, "maya.okafor@example.net").await;
    let id = sent_row(
        &api,
        "maya.okafor@example.net",
        Some(user),
        "4XyZ1k2Lm3z9sT",
    )
    .await;
    let raw = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/bounces/postfix_hard.eml"),
    )
    .unwrap()
    .replace("0b7f1c2e-4d5a-4f3b-9c8d-1e2f3a4b5c6d", &id.to_string());
    let post = |body: String, ts: i64, secret: &str, content_type: &str| {
        let sig = sign(secret, ts, &body);
        api.http
            .post(api.url("/v1/webhooks/dsn"))
            .header("content-type", content_type)
            .header("x-adopt-timestamp", ts.to_string())
            .header("x-adopt-signature", sig)
            .body(body)
            .send()
    };
    let now = chrono::Utc::now().timestamp();

    let r = post(
        raw.clone(),
        now,
        "the-wrong-secret-0123456789",
        "message/rfc822",
    )
    .await
    .unwrap();
    assert_eq!(error_code(r, 401).await.0, "invalid_signature");
    let r = post(raw.clone(), now, WEBHOOK_SECRET, "application/json")
        .await
        .unwrap();
    assert_eq!(error_code(r, 415).await.0, "unsupported_media_type");
    assert_eq!(
        row(&api.db.pool, id).await.status,
        "sent",
        "nothing applied"
    );

    let r = post(raw.clone(), now, WEBHOOK_SECRET, "message/rfc822")
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["result"], "hard_bounce", "{body}");
    assert_eq!(body["email_id"], id.to_string());
    assert_eq!(body["matched_by"], "return_path");
    assert_eq!(row(&api.db.pool, id).await.status, "bounced");
    assert_eq!(blacklist(&api, user).await.0, Some(true));

    let r = post(raw.clone(), now, WEBHOOK_SECRET, "message/rfc822")
        .await
        .unwrap();
    assert_eq!(error_code(r, 409).await.0, "replayed_request");
    // Sent again as a new request: read, and already applied.
    let r = post(
        raw.clone(),
        now + 1,
        WEBHOOK_SECRET,
        "text/plain; charset=utf-8",
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["result"], "duplicate", "{body}");

    // Not a report at all: 200, ignored.
    let r = post(
        "From: someone@example.com\nSubject: hello\n\nhi".into(),
        now,
        WEBHOOK_SECRET,
        "message/rfc822",
    )
    .await
    .unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["result"], "ignored", "{body}");
}
