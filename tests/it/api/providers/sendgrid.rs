//! `POST /v1/webhooks/sendgrid`: the Event Webhook, signed as SendGrid signs it (ECDSA P-256
//! over timestamp + body) with a key made in the test.

use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};

use super::*;

/// SendGrid as the test plays it: its signing key, and the verification key it shows.
struct SendGrid {
    key: EcdsaKeyPair,
    public_key: String,
}

impl SendGrid {
    fn new() -> SendGrid {
        use rcgen::PublicKeyData;
        let pair = rcgen::KeyPair::generate().unwrap();
        let public_key =
            base64::engine::general_purpose::STANDARD.encode(pair.subject_public_key_info());
        let key = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_ASN1_SIGNING,
            &pair.serialize_der(),
            &SystemRandom::new(),
        )
        .unwrap();
        SendGrid { key, public_key }
    }

    fn signature(&self, ts: &str, body: &str) -> String {
        let signed = format!("{ts}{body}");
        let sig = self
            .key
            .sign(&SystemRandom::new(), signed.as_bytes())
            .unwrap();
        base64::engine::general_purpose::STANDARD.encode(sig.as_ref())
    }

    async fn post_at(&self, api: &Api, body: &str, ts: i64) -> reqwest::Response {
        let ts = ts.to_string();
        api.http
            .post(api.url("/v1/webhooks/sendgrid"))
            .header("content-type", "application/json")
            .header("x-twilio-email-event-webhook-timestamp", &ts)
            .header(
                "x-twilio-email-event-webhook-signature",
                self.signature(&ts, body),
            )
            .body(body.to_string())
            .send()
            .await
            .unwrap()
    }

    async fn post(&self, api: &Api, events: &Value) -> reqwest::Response {
        self.post_at(api, &events.to_string(), chrono::Utc::now().timestamp())
            .await
    }
}

async fn start(sg: &SendGrid) -> Api {
    Api::start_with(&[("ADOPT__AUTH__SENDGRID_PUBLIC_KEY", &sg.public_key)]).await
}

/// An event as SendGrid's Event Webhook reference shows it, about email `id`.
fn event(kind: &str, id: Uuid, email: &str, extra: Value) -> Value {
    let mut e = json!({
        "email": email,
        "timestamp": chrono::Utc::now().timestamp() - 5,
        "smtp-id": message_id(id),
        "event": kind,
        "category": ["adoptions"],
        "sg_event_id": format!("sg_event_id_{}", Uuid::new_v4().simple()),
        "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0",
    });
    for (k, v) in extra.as_object().unwrap() {
        e[k] = v.clone();
    }
    e
}

#[tokio::test]
async fn sendgrid_is_off_until_a_key_is_configured() {
    let sg = SendGrid::new();
    let api = Api::start().await;
    let r = sg.post(&api, &json!([])).await;
    assert_eq!(error_code(r, 503).await.0, "webhook_disabled");
}

#[tokio::test]
async fn a_signed_batch_maps_every_event_type_onto_the_rows() {
    let sg = SendGrid::new();
    let api = start(&sg).await;
    let maya = insert_user(&api.db.pool, "maya@example.com").await;
    let lena = insert_user(&api.db.pool, "lena@example.com").await;
    let tom = insert_user(&api.db.pool, "tom@example.com").await;
    let news = sent_row(&api, "maya@example.com", "marketing", None).await;
    let hard = sent_row(&api, "lena@example.com", "transactional", None).await;
    let blocked = sent_row(&api, "tom@example.com", "transactional", None).await;
    let dropped = sent_row(&api, "drop@example.org", "transactional", None).await;
    let digest = sent_row(&api, "tom@example.com", "notification", None).await;
    // Opens and clicks carry no smtp-id: this row is found by SendGrid's message id, which
    // SendGrid's SMTP reply ("queued as 14c5d75ce93.dfd.64b469") gave as provider_message_id.
    let opened = sent_row(
        &api,
        "maya@example.com",
        "marketing",
        Some("14c5d75ce93.dfd.64b469"),
    )
    .await;

    let strip_smtp_id = |mut e: Value| {
        e.as_object_mut().unwrap().remove("smtp-id");
        e
    };
    let batch = json!([
        event(
            "processed",
            news,
            "maya@example.com",
            json!({"pool": {"name": "new_MY_test", "id": 210}})
        ),
        event(
            "deferred",
            news,
            "maya@example.com",
            json!({"response": "400 try again later", "attempt": "5"})
        ),
        event(
            "delivered",
            news,
            "maya@example.com",
            json!({"response": "250 OK"})
        ),
        strip_smtp_id(event(
            "open",
            opened,
            "maya@example.com",
            json!({"useragent": "Mozilla/4.0", "ip": "255.255.255.255"})
        )),
        strip_smtp_id(event(
            "click",
            opened,
            "maya@example.com",
            json!({"url": "https://adoptdontshop.com/pets/1", "url_offset": {"index": 0, "type": "html"}})
        )),
        event(
            "bounce",
            hard,
            "lena@example.com",
            json!({"reason": "500 unknown recipient", "status": "5.0.0", "type": "bounce", "bounce_classification": "Invalid Address"})
        ),
        event(
            "bounce",
            blocked,
            "tom@example.com",
            json!({"reason": "550 5.7.1 blocked by policy", "status": "5.0.0", "type": "blocked", "bounce_classification": "Technical"})
        ),
        event(
            "dropped",
            dropped,
            "drop@example.org",
            json!({"reason": "Bounced Address", "status": "5.0.0"})
        ),
        event("spamreport", news, "maya@example.com", json!({})),
        event("unsubscribe", news, "maya@example.com", json!({})),
        event(
            "group_unsubscribe",
            digest,
            "tom@example.com",
            json!({"asm_group_id": 10, "useragent": "Mozilla/4.0", "ip": "255.255.255.255", "url": "https://sendgrid.com?asm_group_id=10"})
        ),
        event(
            "group_resubscribe",
            digest,
            "tom@example.com",
            json!({"asm_group_id": 10})
        ),
        event(
            "delivered",
            Uuid::new_v4(),
            "who@example.com",
            json!({"sg_message_id": "unknown.filter0001"})
        ),
    ]);
    let r = sg.post(&api, &batch).await;
    assert_eq!(
        outcomes(r).await,
        [
            "ignored",
            "applied",
            "applied",
            "applied",
            "applied",
            "applied",
            "applied",
            "applied",
            "applied",
            "applied",
            "applied",
            "ignored",
            "not_found"
        ]
    );

    let r = row(&api.db.pool, news).await;
    assert_eq!(r.status, "delivered");
    let t = r.tracking.unwrap();
    assert_eq!(t["deferrals"], 1);
    assert!(t["complainedAt"].is_string());
    let p = prefs(&api, maya).await.unwrap();
    assert_eq!(
        (p.blacklisted, p.reason.as_deref(), p.global_unsubscribe),
        (true, Some("complaint"), true)
    );
    assert_eq!(row(&api.db.pool, opened).await.status, "clicked");

    let r = row(&api.db.pool, hard).await;
    assert_eq!(r.status, "bounced");
    assert!(
        r.failure_reason
            .unwrap()
            .starts_with("hard bounce reported by SendGrid")
    );
    assert!(prefs(&api, lena).await.unwrap().blacklisted);

    // "blocked" is a soft bounce: counted, not blacklisted.
    assert_eq!(row(&api.db.pool, blocked).await.status, "bounced");
    let p = prefs(&api, tom).await.unwrap();
    assert_eq!((p.blacklisted, p.bounces), (false, 1));
    // A group unsubscribe turns off the category of the email it came from.
    assert_eq!(p.categories_off, ["messages"]);
    assert!(!p.global_unsubscribe);

    let r = row(&api.db.pool, dropped).await;
    assert_eq!(r.status, "failed");
    assert!(
        r.failure_reason
            .unwrap()
            .contains("dropped by SendGrid: Bounced Address")
    );
}

#[tokio::test]
async fn unsigned_forged_stale_replayed_and_malformed_requests_are_refused() {
    let sg = SendGrid::new();
    let api = start(&sg).await;
    let id = sent_row(&api, "maya@example.com", "transactional", None).await;
    let body = json!([event("delivered", id, "maya@example.com", json!({}))]).to_string();
    let now = chrono::Utc::now().timestamp();

    let r = api
        .http
        .post(api.url("/v1/webhooks/sendgrid"))
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 401).await.0, "invalid_signature");
    // Signed by another key; a valid signature over another body.
    let other = SendGrid::new();
    assert_eq!(
        error_code(other.post_at(&api, &body, now).await, 401)
            .await
            .0,
        "invalid_signature"
    );
    let r = api
        .http
        .post(api.url("/v1/webhooks/sendgrid"))
        .header("content-type", "application/json")
        .header("x-twilio-email-event-webhook-timestamp", now.to_string())
        .header(
            "x-twilio-email-event-webhook-signature",
            sg.signature(&now.to_string(), "[]"),
        )
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 401).await.0, "invalid_signature");
    let r = sg.post_at(&api, &body, now - 301).await;
    assert_eq!(error_code(r, 401).await.0, "invalid_timestamp");
    assert_eq!(
        row(&api.db.pool, id).await.status,
        "sent",
        "nothing applied"
    );

    assert_eq!(
        outcomes(sg.post_at(&api, &body, now).await).await,
        ["applied"]
    );
    let r = sg.post_at(&api, &body, now).await;
    assert_eq!(error_code(r, 409).await.0, "replayed_request");

    let r = sg.post_at(&api, "[{\"event\": ", now).await;
    assert_eq!(error_code(r, 400).await.0, "malformed_json");
    let r = sg.post_at(&api, "{\"event\": \"delivered\"}", now).await;
    assert_eq!(error_code(r, 422).await.0, "validation_failed");
    let r = sg.post_at(&api, "\"\\u0000\"", now).await;
    assert_eq!(error_code(r, 422).await.0, "validation_failed");
    let ts = now.to_string();
    let r = api
        .http
        .post(api.url("/v1/webhooks/sendgrid"))
        .header("content-type", "text/plain")
        .header("x-twilio-email-event-webhook-timestamp", &ts)
        .header(
            "x-twilio-email-event-webhook-signature",
            sg.signature(&ts, "[]"),
        )
        .body("[]")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 415).await.0, "unsupported_media_type");
    // An event without its name is refused, naming it; other fields are read leniently.
    let r = sg
        .post(&api, &json!([{"event": "open"}, {"event": 7}, {}]))
        .await;
    let (_, err) = error_code(r, 422).await;
    let named: Vec<u64> = err["error"]["details"]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["index"].as_u64().unwrap())
        .collect();
    assert_eq!(named, [1, 2]);
    let odd = json!([{"event": "bounce", "smtp-id": 5, "timestamp": "soon", "type": []}]);
    assert_eq!(outcomes(sg.post(&api, &odd).await).await, ["not_found"]);
}
