//! `POST /v1/webhooks/mailgun`: Mailgun's webhooks, signed as Mailgun signs them
//! (HMAC-SHA256 of timestamp + token with the signing key).

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::*;

const SIGNING_KEY: &str = "key-3ax6xnjp29jd6fds4gc373sgvjxteol0";

fn signature(key: &str, ts: i64, token: &str) -> Value {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(format!("{ts}{token}").as_bytes());
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    json!({"timestamp": ts.to_string(), "token": token, "signature": hex})
}

/// A webhook body as Mailgun documents it: `signature` and `event-data`.
fn signed(data: &Value, ts: i64, token: &str) -> Value {
    json!({"signature": signature(SIGNING_KEY, ts, token), "event-data": data})
}

fn token() -> String {
    Uuid::new_v4().simple().to_string() + "a8ce0edb2dd8301dee6c24052355"
}

async fn start() -> Api {
    Api::start_with(&[("ADOPT__AUTH__MAILGUN_SIGNING_KEY", SIGNING_KEY)]).await
}

async fn post_raw(api: &Api, body: String) -> reqwest::Response {
    api.http
        .post(api.url("/v1/webhooks/mailgun"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn post(api: &Api, data: &Value) -> reqwest::Response {
    let body = signed(data, chrono::Utc::now().timestamp(), &token());
    post_raw(api, body.to_string()).await
}

/// `event-data` of email `id` as Mailgun's event reference shows it.
fn data(event: &str, id: Uuid, recipient: &str, extra: Value) -> Value {
    let mut d = json!({
        "event": event,
        "id": "G9Bn5sl1TC6nu79C8C0bwg",
        "timestamp": chrono::Utc::now().timestamp() as f64 - 2.5,
        "log-level": "info",
        "recipient": recipient,
        "recipient-domain": "example.com",
        "tags": ["adoptions"],
        "campaigns": [],
        "user-variables": {},
        "flags": {"is-routed": false, "is-authenticated": true, "is-system-test": false, "is-test-mode": false},
        "envelope": {"transport": "smtp", "sender": "bounces@adoptdontshop.com", "sending-ip": "209.61.154.250", "targets": recipient},
        "message": {
            "headers": {
                "to": recipient,
                // Mailgun reports the Message-ID without its brackets.
                "message-id": message_id(id).trim_matches(|c| c == '<' || c == '>'),
                "from": "Happy Paws Rescue <rescues@adoptdontshop.com>",
                "subject": "Your application for Biscuit"
            },
            "attachments": [],
            "size": 111
        }
    });
    for (k, v) in extra.as_object().unwrap() {
        d[k] = v.clone();
    }
    d
}

#[tokio::test]
async fn mailgun_is_off_until_a_signing_key_is_configured() {
    let api = Api::start().await;
    let r = post(&api, &json!({"event": "delivered"})).await;
    assert_eq!(error_code(r, 503).await.0, "webhook_disabled");
}

#[tokio::test]
async fn every_event_type_maps_onto_the_rows() {
    let api = start().await;
    let maya = insert_user(&api.db.pool, "maya@example.com").await;
    let lena = insert_user(&api.db.pool, "lena@example.com").await;
    let news = sent_row(&api, "maya@example.com", "marketing", None).await;
    let hard = sent_row(&api, "lena@example.com", "transactional", None).await;
    let old = sent_row(&api, "maya@example.com", "transactional", None).await;

    let temporary = data(
        "failed",
        news,
        "maya@example.com",
        json!({"severity": "temporary", "reason": "generic",
        "delivery-status": {"attempt-no": 1, "code": 452, "message": "4.2.2 The email account is over quota",
            "description": "", "session-seconds": 0.1, "retry-seconds": 600}}),
    );
    assert_eq!(outcomes(post(&api, &temporary).await).await, ["applied"]);
    let r = row(&api.db.pool, news).await;
    assert_eq!(r.status, "sent", "Mailgun keeps trying");
    assert_eq!(r.tracking.unwrap()["deferrals"], 1);

    let delivered = data(
        "delivered",
        news,
        "maya@example.com",
        json!({"delivery-status": {
        "tls": true, "mx-host": "smtp-in.example.com", "code": 250, "description": "",
        "session-seconds": 0.43, "utf8": true, "attempt-no": 2, "message": "OK", "certificate-verified": true}}),
    );
    assert_eq!(outcomes(post(&api, &delivered).await).await, ["applied"]);
    let opened = data(
        "opened",
        news,
        "maya@example.com",
        json!({"ip": "50.56.129.169",
        "geolocation": {"country": "US", "region": "CA", "city": "San Francisco"},
        "client-info": {"client-os": "Linux", "device-type": "desktop", "client-name": "Chrome", "client-type": "browser", "user-agent": "Mozilla/5.0"}}),
    );
    assert_eq!(outcomes(post(&api, &opened).await).await, ["applied"]);
    let clicked = data(
        "clicked",
        news,
        "maya@example.com",
        json!({"url": "https://adoptdontshop.com/pets/1", "ip": "50.56.129.169"}),
    );
    assert_eq!(outcomes(post(&api, &clicked).await).await, ["applied"]);
    assert_eq!(row(&api.db.pool, news).await.status, "clicked");

    let bounced = data(
        "failed",
        hard,
        "lena@example.com",
        json!({"severity": "permanent", "reason": "bounce",
        "delivery-status": {"attempt-no": 1, "code": 550, "message": "",
            "description": "5.1.1 The email account that you tried to reach does not exist.", "session-seconds": 0}}),
    );
    assert_eq!(outcomes(post(&api, &bounced).await).await, ["applied"]);
    let r = row(&api.db.pool, hard).await;
    assert_eq!(r.status, "bounced");
    assert_eq!(r.tracking.unwrap()["bounceCode"], "550");
    assert!(prefs(&api, lena).await.unwrap().blacklisted);

    // Given up after retrying: a soft bounce, counted but not blacklisted.
    let gave_up = data(
        "failed",
        old,
        "maya@example.com",
        json!({"severity": "permanent", "reason": "old",
        "delivery-status": {"code": 452, "message": "4.2.2 over quota"}}),
    );
    assert_eq!(outcomes(post(&api, &gave_up).await).await, ["applied"]);
    assert_eq!(row(&api.db.pool, old).await.status, "bounced");
    let p = prefs(&api, maya).await.unwrap();
    assert_eq!((p.blacklisted, p.bounces), (false, 1));

    let unsubscribed = data(
        "unsubscribed",
        news,
        "maya@example.com",
        json!({"ip": "50.56.129.169"}),
    );
    assert_eq!(outcomes(post(&api, &unsubscribed).await).await, ["applied"]);
    assert!(prefs(&api, maya).await.unwrap().global_unsubscribe);
    let complained = data("complained", news, "maya@example.com", json!({}));
    assert_eq!(outcomes(post(&api, &complained).await).await, ["applied"]);
    let p = prefs(&api, maya).await.unwrap();
    assert_eq!(
        (p.blacklisted, p.reason.as_deref()),
        (true, Some("complaint"))
    );

    // Found by user-variables alone (an X-Mailgun-Variables header).
    let accepted = json!({"event": "accepted", "timestamp": 1521472262.908181, "user-variables": {"email_id": hard.to_string()}});
    assert_eq!(outcomes(post(&api, &accepted).await).await, ["ignored"]);
    let unknown = data("delivered", Uuid::new_v4(), "x@example.com", json!({}));
    assert_eq!(outcomes(post(&api, &unknown).await).await, ["not_found"]);
}

#[tokio::test]
async fn forged_stale_replayed_and_malformed_requests_are_refused() {
    let api = start().await;
    let id = sent_row(&api, "maya@example.com", "transactional", None).await;
    let d = data("delivered", id, "maya@example.com", json!({}));
    let now = chrono::Utc::now().timestamp();

    let forged = json!({"signature": signature("key-another-account-0123456789", now, "tok-1"), "event-data": d});
    assert_eq!(
        error_code(post_raw(&api, forged.to_string()).await, 401)
            .await
            .0,
        "invalid_signature"
    );
    let mut swapped = signed(&d, now, "tok-2");
    swapped["signature"]["token"] = json!("tok-3");
    assert_eq!(
        error_code(post_raw(&api, swapped.to_string()).await, 401)
            .await
            .0,
        "invalid_signature"
    );
    let unsigned = json!({"event-data": d});
    assert_eq!(
        error_code(post_raw(&api, unsigned.to_string()).await, 401)
            .await
            .0,
        "invalid_signature"
    );
    let stale = signed(&d, now - 301, "tok-4");
    assert_eq!(
        error_code(post_raw(&api, stale.to_string()).await, 401)
            .await
            .0,
        "invalid_timestamp"
    );
    assert_eq!(
        row(&api.db.pool, id).await.status,
        "sent",
        "nothing applied"
    );

    let good = signed(&d, now, "tok-5").to_string();
    assert_eq!(
        outcomes(post_raw(&api, good.clone()).await).await,
        ["applied"]
    );
    assert_eq!(
        error_code(post_raw(&api, good).await, 409).await.0,
        "replayed_request"
    );
    // The same token with another event is the same replayed token.
    let other = signed(
        &data("opened", id, "maya@example.com", json!({})),
        now,
        "tok-5",
    );
    assert_eq!(
        error_code(post_raw(&api, other.to_string()).await, 409)
            .await
            .0,
        "replayed_request"
    );

    assert_eq!(
        error_code(post_raw(&api, "{\"signature\":".into()).await, 400)
            .await
            .0,
        "malformed_json"
    );
    let no_event = json!({"signature": signature(SIGNING_KEY, now, "tok-6")});
    assert_eq!(
        error_code(post_raw(&api, no_event.to_string()).await, 422)
            .await
            .0,
        "validation_failed"
    );
    let r = api
        .http
        .post(api.url("/v1/webhooks/mailgun"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("event=delivered")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 415).await.0, "unsupported_media_type");
}
