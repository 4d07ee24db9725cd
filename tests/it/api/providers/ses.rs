//! `POST /v1/webhooks/ses`: SES notifications through SNS, signed as SNS signs them
//! (SignatureVersion 1: SHA1withRSA; 2: SHA256withRSA) by a certificate made in the test and
//! served through the verifier's fetcher, never the network.

use std::sync::{Arc, Mutex};

use adopt_worker::api::webhooks::sns::{SnsHttp, SnsVerifier};
use base64::Engine;
use futures::future::BoxFuture;
use reqwest::StatusCode;
use rsa::pkcs8::DecodePrivateKey;
use rsa::{Pkcs1v15Sign, RsaPrivateKey};
use sha2::{Digest, Sha256};

use super::*;

const TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:ses-events";
const CERT_URL: &str = "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-test.pem";

/// An RSA key made for these tests (`openssl genpkey -algorithm RSA`); it signs nothing
/// outside them.
const TEST_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQDyh5ckGrWdIyP7
EZORYJaZ3YqGqvuVL/Y05IGwP7k7/bp8XmWFLhmpq3J1W1ign5OSoECKlrOuonvT
KvX/W96AkJ/ltZKv7fY2YF1axb1K5XGFEQIgxnTOQl3nQ8vwWPqZcmqWfbX6Mqb4
v1VRqh/+XN+5tbHgdVTPl9AMr64CFlk6jahAkqn5v1JxoFl0XPSoTVBJdvRHEUbE
bji/B2FioueM9MZVscHQOCCUw7/fxoRH1X99XZlhMoSq+CWVriy3BGiMmKoiMb/g
FuYDUfSsASJp7GDrIr/q3O5ZJQKlCPnTGWjKd+meAt34I/cQ26mNCZuIzW9G6aTv
0cn6zDN1AgMBAAECggEABeWhGaoil1cG5XBod6TzFHusBhk7M8XuRRv3QUtTXC+P
rL1413OnARafmlXlwkYPBwYpe5UtekYOH7TQNWzM7LBXivTOw8NT9L+EFZRwRVVt
3K/srtJUfb1kXh6qY0YulbOP/ufAmHxJzguM7gbmbz9f2zqdQBlqPf/xeZV99CP9
2kn7hstEScxAasJ8oMr1T3OvESchGW4M/dxtjngEy5IvrUxWxfeG/DiZv6kzDITD
yKYH89hCdEkWPKa1Is89DKVs/F8hPsHqToyMyoIFbP8Rf9DCX3ycBAX5VXfaPvyk
W7EI7gQYUbgccmHT205EcQzBURslGJk3NzOdp+yqIwKBgQD7Ub2AGpfwf/UZ6TmM
Y/e56NLevfJynvVgVOANwsRYeKMlH4MzyRb4Yeuzsa/rfZgSXIf/FjXI+VfVjG18
c/sTEggPvr8/Tns04KXeFvVbhmIitf7jmqd0CcS7CxD9niClb4brzIewGlsM09xz
fZSsTQW3SF2sqQ9/4/K84S5hLwKBgQD3C/EzWYB0Yn0nQsYqmWsTpLsF2ob0wTod
jcVdhvksKbNo3by/FMov4yjYe3b/uYasz/DzDG7a10KfatxOcMLJVjCJrNELatyG
6Ct+ecQmRwmsQzA13WB3jjMNZnerkbq6q82CNHnZom6EgvCkkWjtdIRa1e4UwFek
8G1AbA9kmwKBgFIs3w6lI2tDG6yWQvfxtA244EJuz3jFGyyddAlr1vGquIWp8Sec
qAMdWYmPHxucHH5cfSdeZsXJKfwsh5w6/Cy3J6WmVDhp/AVFM1cUILQFk88PvUFE
z14013vlWW/kJX6SogY2AWQGqiDeoWWt+VABe037vo13VhcWPMefxZ+HAoGBANQt
lpByu2e6OyFgMVDfCV8KqXJCmIxX9LDzVWKZjSJIAoX7g6NdmLV+VVNw3uiNkESW
J6ynrgIYxWij3+ki4bkIZJGqMrSqqBLaDpkGvdfeRUmFPz/UDYlBQUmuCvP5KrYu
3keJCGpKHr+Csmm1VbgzzYUyndOGyv+nWz3sUWAnAoGAWFW2hrFxTYEdFLzeZaES
qS7mdEFBMGlNIo6DG6+91uzdNDLRmT7Mvi2pjZ7uQqcbc1jOvDW7NZJygmIJa1XW
7OEG2S9tCohzpz74PftH12pSoKxQAZcYgGQRBjIg72kSxhZdZrHoySH6h2we9bpT
dFzVggMCsyJKZNtOqS7bf94=
-----END PRIVATE KEY-----
";

/// SNS as the verifier sees it: serves the test certificate for any `.pem` URL and answers
/// a subscription confirmation, recording every URL it was asked for.
struct FakeSns {
    cert_pem: String,
    asked: Mutex<Vec<String>>,
}

impl SnsHttp for FakeSns {
    fn get<'a>(&'a self, url: &'a url::Url) -> BoxFuture<'a, Result<Vec<u8>, String>> {
        self.asked.lock().unwrap().push(url.to_string());
        let answer = if url.path().ends_with(".pem") {
            self.cert_pem.clone().into_bytes()
        } else {
            b"<ConfirmSubscriptionResponse/>".to_vec()
        };
        Box::pin(std::future::ready(Ok(answer)))
    }
}

/// The test's SNS: its signing key, and what was fetched through the verifier.
struct Sns {
    key: RsaPrivateKey,
    fake: Arc<FakeSns>,
}

/// The DER DigestInfo prefixes of PKCS#1 v1.5 signatures (RFC 8017, section 9.2).
const SHA1_PREFIX: [u8; 15] = [
    0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00, 0x04, 0x14,
];
const SHA256_PREFIX: [u8; 19] = [
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];

impl Sns {
    fn new() -> Sns {
        let cert_key =
            rcgen::KeyPair::from_pem_and_sign_algo(TEST_KEY, &rcgen::PKCS_RSA_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["sns.amazonaws.com".to_string()])
            .unwrap()
            .self_signed(&cert_key)
            .unwrap();
        Sns {
            key: RsaPrivateKey::from_pkcs8_pem(TEST_KEY).unwrap(),
            fake: Arc::new(FakeSns {
                cert_pem: cert.pem(),
                asked: Mutex::new(Vec::new()),
            }),
        }
    }

    fn asked(&self) -> Vec<String> {
        self.fake.asked.lock().unwrap().clone()
    }

    /// Signs `m` in place as SNS does: the canonical string of its type, `SignatureVersion`
    /// choosing SHA1 (1) or SHA256 (2).
    fn sign(&self, m: &mut Value) {
        let fields: &[&str] = if m["Type"] == "Notification" {
            &[
                "Message",
                "MessageId",
                "Subject",
                "Timestamp",
                "TopicArn",
                "Type",
            ]
        } else {
            &[
                "Message",
                "MessageId",
                "SubscribeURL",
                "Timestamp",
                "Token",
                "TopicArn",
                "Type",
            ]
        };
        let mut canonical = String::new();
        for f in fields {
            if let Some(v) = m[*f].as_str() {
                canonical.push_str(&format!("{f}\n{v}\n"));
            }
        }
        // SHA1withRSA or SHA256withRSA: the digest, prefixed with its DigestInfo, padded.
        let digest_info = if m["SignatureVersion"] == "1" {
            let hash = ring::digest::digest(
                &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
                canonical.as_bytes(),
            );
            [&SHA1_PREFIX[..], hash.as_ref()].concat()
        } else {
            [&SHA256_PREFIX[..], &Sha256::digest(canonical.as_bytes())].concat()
        };
        let sig = self
            .key
            .sign(Pkcs1v15Sign::new_unprefixed(), &digest_info)
            .unwrap();
        m["Signature"] = json!(base64::engine::general_purpose::STANDARD.encode(sig));
    }

    /// An SNS Notification carrying `ses` (an SES notification), signed.
    fn notification(&self, ses: &Value, version: &str) -> Value {
        let mut m = json!({
            "Type": "Notification",
            "MessageId": Uuid::new_v4().to_string(),
            "TopicArn": TOPIC,
            "Message": ses.to_string(),
            "Timestamp": now_rfc3339(0),
            "SignatureVersion": version,
            "SigningCertURL": CERT_URL,
            "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe&SubscriptionArn=arn:aws:sns:us-east-1:123456789012:ses-events:0",
        });
        self.sign(&mut m);
        m
    }
}

fn now_rfc3339(offset_secs: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::seconds(offset_secs))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

async fn start(sns: &Sns, extra: &[(&str, &str)]) -> Api {
    let mut overrides = vec![("ADOPT__AUTH__SES_TOPIC_ARNS", TOPIC)];
    overrides.extend_from_slice(extra);
    let fake: Arc<dyn SnsHttp> = sns.fake.clone();
    Api::start_adjusted(&overrides, |app| {
        app.sns = Arc::new(SnsVerifier::new(fake));
    })
    .await
}

/// SNS posts its messages as `text/plain`.
async fn post(api: &Api, body: &Value) -> reqwest::Response {
    post_raw(api, body.to_string()).await
}

async fn post_raw(api: &Api, body: String) -> reqwest::Response {
    api.http
        .post(api.url("/v1/webhooks/ses"))
        .header("content-type", "text/plain; charset=UTF-8")
        .header("x-amz-sns-message-type", "Notification")
        .body(body)
        .send()
        .await
        .unwrap()
}

/// The `mail` object of SES notifications, as SES documents it, for email `id`.
fn mail(id: Uuid, to: &str) -> Value {
    json!({
        "timestamp": "2026-11-25T12:00:00.000Z",
        "source": "Happy Paws Rescue <rescues@adoptdontshop.com>",
        "sourceArn": "arn:aws:ses:us-east-1:123456789012:identity/adoptdontshop.com",
        "sendingAccountId": "123456789012",
        "messageId": "0100019a1b2c3d4e-5f6a7b8c-9d0e-1f2a-3b4c-5d6e7f8a9b0c-000000",
        "destination": [to],
        "headersTruncated": false,
        "headers": [
            {"name": "From", "value": "Happy Paws Rescue <rescues@adoptdontshop.com>"},
            {"name": "To", "value": to},
            {"name": "Message-ID", "value": message_id(id)},
            {"name": "Subject", "value": "Your application for Biscuit"}
        ],
        "commonHeaders": {
            "from": ["Happy Paws Rescue <rescues@adoptdontshop.com>"],
            "to": [to],
            "messageId": message_id(id),
            "subject": "Your application for Biscuit"
        }
    })
}

#[tokio::test]
async fn ses_is_off_until_a_topic_is_configured() {
    let sns = Sns::new();
    let api = Api::start().await;
    let body = sns.notification(&json!({"notificationType": "Delivery"}), "1");
    let (code, err) = error_code(post(&api, &body).await, 503).await;
    assert_eq!(code, "webhook_disabled");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("auth.ses_topic_arns")
    );
}

#[tokio::test]
async fn a_signed_hard_bounce_ends_the_row_blacklists_and_is_applied_once() {
    let sns = Sns::new();
    let api = start(&sns, &[]).await;
    let user = insert_user(&api.db.pool, "maya@example.com").await;
    let id = sent_row(&api, "maya@example.com", "transactional", None).await;
    // "Bounce" notification, as the SES developer guide shows it.
    let bounce = json!({
        "notificationType": "Bounce",
        "bounce": {
            "bounceType": "Permanent",
            "bounceSubType": "General",
            "bouncedRecipients": [{
                "emailAddress": "maya@example.com",
                "action": "failed",
                "status": "5.1.1",
                "diagnosticCode": "smtp; 550 5.1.1 user unknown"
            }],
            "timestamp": now_rfc3339(-2),
            "feedbackId": "0100019a1b2c3d4e-00000000-0000-0000-0000-000000000000-000000",
            "remoteMtaIp": "192.0.2.10",
            "reportingMTA": "dsn; a8-70.smtp-out.amazonses.com"
        },
        "mail": mail(id, "maya@example.com")
    });
    let message = sns.notification(&bounce, "1");
    let r = post(&api, &message).await;
    assert_eq!(outcomes(r).await, ["applied"]);
    let r = row(&api.db.pool, id).await;
    assert_eq!(r.status, "bounced");
    let t = r.tracking.unwrap();
    assert_eq!(
        (t["bounceType"].as_str(), t["bounceCode"].as_str()),
        (Some("hard"), Some("5.1.1"))
    );
    assert!(
        r.failure_reason
            .unwrap()
            .starts_with("hard bounce reported by Amazon SES: smtp; 550 5.1.1")
    );
    let p = prefs(&api, user).await.unwrap();
    assert!(p.blacklisted && p.bounces == 1, "{p:?}");

    // SNS delivers the same message again: refused, nothing counted twice.
    let (code, _) = error_code(post(&api, &message).await, 409).await;
    assert_eq!(code, "replayed_request");
    assert_eq!(prefs(&api, user).await.unwrap().bounces, 1);
    // The certificate was fetched once, from the URL the message names.
    assert_eq!(sns.asked(), [CERT_URL]);

    // A complaint, signed with SHA256withRSA (SignatureVersion 2).
    let other = sent_row(&api, "maya@example.com", "marketing", None).await;
    let complaint = json!({
        "notificationType": "Complaint",
        "complaint": {
            "userAgent": "ExampleCorp Feedback Loop (V0.01)",
            "complainedRecipients": [{"emailAddress": "maya@example.com"}],
            "complaintFeedbackType": "abuse",
            "arrivalDate": now_rfc3339(-60),
            "timestamp": now_rfc3339(-1),
            "feedbackId": "0100019a1b2c3d4e-11111111-0000-0000-0000-000000000000-000000"
        },
        "mail": mail(other, "maya@example.com")
    });
    let r = post(&api, &sns.notification(&complaint, "2")).await;
    assert_eq!(outcomes(r).await, ["applied"]);
    let t = row(&api.db.pool, other).await.tracking.unwrap();
    assert!(t["complainedAt"].is_string());
    assert_eq!(sns.asked().len(), 1, "the certificate is cached");
}

#[tokio::test]
async fn every_ses_event_type_maps_onto_the_row() {
    let sns = Sns::new();
    let api = start(&sns, &[]).await;
    let user = insert_user(&api.db.pool, "lena@example.com").await;
    let send = |ses: Value| {
        let body = sns.notification(&ses, "2");
        let api = &api;
        async move { outcomes(post(api, &body).await).await }
    };

    // Event publishing: delivery, a delay, an open and a click of one email.
    let id = sent_row(&api, "lena@example.com", "marketing", None).await;
    let m = mail(id, "lena@example.com");
    let delay = json!({"eventType": "DeliveryDelay", "mail": m, "deliveryDelay": {
        "timestamp": now_rfc3339(-30), "delayType": "TransientCommunicationFailure",
        "expirationTime": now_rfc3339(3600), "reportingMTA": "a8-70.smtp-out.amazonses.com",
        "delayedRecipients": [{"emailAddress": "lena@example.com", "status": "4.4.1",
            "diagnosticCode": "smtp; 421 4.4.1 Unable to connect"}]}});
    assert_eq!(send(delay).await, ["applied"]);
    let t = row(&api.db.pool, id).await.tracking.unwrap();
    assert_eq!(t["deferrals"], 1);
    assert_eq!(t["lastDeferralReason"], "smtp; 421 4.4.1 Unable to connect");
    let delivery = json!({"eventType": "Delivery", "mail": m, "delivery": {
        "timestamp": now_rfc3339(-20), "processingTimeMillis": 546,
        "recipients": ["lena@example.com"], "smtpResponse": "250 2.6.0 Message received",
        "reportingMTA": "a8-70.smtp-out.amazonses.com"}});
    assert_eq!(send(delivery).await, ["applied"]);
    assert_eq!(row(&api.db.pool, id).await.status, "delivered");
    let open = json!({"eventType": "Open", "mail": m, "open": {
        "ipAddress": "192.0.2.1", "timestamp": now_rfc3339(-10), "userAgent": "Mozilla/5.0"}});
    assert_eq!(send(open).await, ["applied"]);
    let click = json!({"eventType": "Click", "mail": m, "click": {
        "ipAddress": "192.0.2.1", "timestamp": now_rfc3339(-5), "userAgent": "Mozilla/5.0",
        "link": "https://adoptdontshop.com/pets/1", "linkTags": {}}});
    assert_eq!(send(click).await, ["applied"]);
    let r = row(&api.db.pool, id).await;
    assert_eq!(r.status, "clicked");
    let t = r.tracking.unwrap();
    assert_eq!(
        (t["opens"].as_i64(), t["clicks"].as_i64()),
        (Some(1), Some(1))
    );

    // A soft bounce ends the row but does not blacklist (one of bounce.soft_bounce_threshold).
    let soft = sent_row(&api, "lena@example.com", "transactional", None).await;
    let bounce = json!({"eventType": "Bounce", "mail": mail(soft, "lena@example.com"), "bounce": {
        "bounceType": "Transient", "bounceSubType": "MailboxFull", "timestamp": now_rfc3339(-1),
        "bouncedRecipients": [{"emailAddress": "lena@example.com", "status": "4.2.2",
            "diagnosticCode": "smtp; 452 4.2.2 mailbox full"}]}});
    assert_eq!(send(bounce).await, ["applied"]);
    assert_eq!(row(&api.db.pool, soft).await.status, "bounced");
    let p = prefs(&api, user).await.unwrap();
    assert_eq!((p.blacklisted, p.bounces), (false, 1));

    // Rejected by SES (a virus): failed, not the recipient's fault.
    let rejected = sent_row(&api, "lena@example.com", "transactional", None).await;
    let reject = json!({"eventType": "Reject", "mail": mail(rejected, "lena@example.com"),
        "reject": {"reason": "Bad content"}});
    assert_eq!(send(reject).await, ["applied"]);
    let r = row(&api.db.pool, rejected).await;
    assert_eq!(r.status, "failed");
    assert!(r.failure_reason.unwrap().contains("Bad content"));

    // Subscription management: a topic opt-out turns off the email's category; found by
    // SES's own message id here (no Message-ID header reported).
    let news = sent_row(&api, "lena@example.com", "marketing", Some("ses-msg-42")).await;
    let unsub = json!({"eventType": "Subscription", "mail": {"messageId": "ses-msg-42",
        "destination": ["lena@example.com"]}, "subscription": {
        "contactList": "adopters", "timestamp": now_rfc3339(0), "source": "UnsubscribeHeader",
        "newTopicPreferences": {"unsubscribeAll": false, "topicSubscriptionStatus": [
            {"topicName": "news", "subscriptionStatus": "OptOut"}]},
        "oldTopicPreferences": {"unsubscribeAll": false, "topicSubscriptionStatus": [
            {"topicName": "news", "subscriptionStatus": "OptIn"}]}}});
    assert_eq!(send(unsub).await, ["applied"]);
    let p = prefs(&api, user).await.unwrap();
    assert_eq!(
        (p.global_unsubscribe, p.categories_off),
        (false, vec!["marketing".to_string()])
    );
    assert_eq!(row(&api.db.pool, news).await.status, "sent");

    // Sending events we do not act on, and an email that is not ours.
    let sent = json!({"eventType": "Send", "mail": mail(id, "lena@example.com"), "send": {}});
    assert_eq!(send(sent).await, ["ignored"]);
    let stranger = json!({"notificationType": "Delivery", "mail": mail(Uuid::new_v4(), "x@example.com"),
        "delivery": {"timestamp": now_rfc3339(0), "recipients": ["x@example.com"]}});
    assert_eq!(send(stranger).await, ["not_found"]);
}

#[tokio::test]
async fn forged_stale_foreign_and_malformed_messages_are_refused() {
    let sns = Sns::new();
    let api = start(&sns, &[]).await;
    let id = sent_row(&api, "maya@example.com", "transactional", None).await;
    let delivery = json!({"notificationType": "Delivery", "mail": mail(id, "maya@example.com"),
        "delivery": {"timestamp": now_rfc3339(0), "recipients": ["maya@example.com"]}});
    let good = sns.notification(&delivery, "1");

    let refused =
        "adopt_worker_provider_webhooks_refused_total{provider=\"ses\",reason=\"unauthorized\"}";
    let refused_before = metric(&api, refused).await;

    // A certificate URL that is not SNS's is refused before anything is fetched.
    for url in [
        "https://evil.example/SimpleNotificationService-test.pem",
        "https://sns.us-east-1.amazonaws.com.evil.example/x.pem",
        "http://sns.us-east-1.amazonaws.com/SimpleNotificationService-test.pem",
        "https://sns.us-east-1.amazonaws.com/not-a-certificate",
        "https://sns.us-east-1.amazonaws.com/other/SimpleNotificationService-test.pem",
        "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-test.pem?x=1",
    ] {
        let mut m = good.clone();
        m["SigningCertURL"] = json!(url);
        sns.sign(&mut m);
        let (code, _) = error_code(post(&api, &m).await, 401).await;
        assert_eq!(code, "invalid_signature", "{url}");
    }
    assert!(sns.asked().is_empty(), "fetched {:?}", sns.asked());
    assert!(metric(&api, refused).await >= refused_before + 6.0);

    // A changed message, a signature by another key, an unknown version.
    let mut m = good.clone();
    m["Message"] = json!(
        json!({"notificationType": "Bounce", "bounce": {"bounceType": "Permanent"},
        "mail": mail(id, "maya@example.com")})
        .to_string()
    );
    assert_eq!(
        error_code(post(&api, &m).await, 401).await.0,
        "invalid_signature"
    );
    let mut m = good.clone();
    m["Signature"] = json!(base64::engine::general_purpose::STANDARD.encode([7u8; 256]));
    assert_eq!(
        error_code(post(&api, &m).await, 401).await.0,
        "invalid_signature"
    );
    let mut m = good.clone();
    m["SignatureVersion"] = json!("3");
    assert_eq!(
        error_code(post(&api, &m).await, 401).await.0,
        "invalid_signature"
    );

    // Another topic (signed, so only the allow-list refuses it).
    let mut m = good.clone();
    m["TopicArn"] = json!("arn:aws:sns:us-east-1:123456789012:someone-elses");
    sns.sign(&mut m);
    assert_eq!(
        error_code(post(&api, &m).await, 403).await.0,
        "topic_not_allowed"
    );

    // Published outside the window.
    let mut m = good.clone();
    m["Timestamp"] = json!(now_rfc3339(-301));
    sns.sign(&mut m);
    assert_eq!(
        error_code(post(&api, &m).await, 401).await.0,
        "invalid_timestamp"
    );

    // Not JSON; JSON but no SNS message; a signed notification whose Message is not SES's.
    assert_eq!(
        error_code(post_raw(&api, "{\"Type\": ".into()).await, 400)
            .await
            .0,
        "malformed_json"
    );
    assert_eq!(
        error_code(post(&api, &json!({"Type": "Notification"})).await, 422)
            .await
            .0,
        "validation_failed"
    );
    assert_eq!(
        error_code(post(&api, &json!([1, 2])).await, 422).await.0,
        "validation_failed"
    );
    let mut m = good.clone();
    m["Message"] = json!("this is not JSON");
    sns.sign(&mut m);
    assert_eq!(
        error_code(post(&api, &m).await, 400).await.0,
        "malformed_json"
    );
    assert_eq!(
        row(&api.db.pool, id).await.status,
        "sent",
        "nothing applied"
    );

    // The genuine one still goes through.
    assert_eq!(outcomes(post(&api, &good).await).await, ["applied"]);
    assert_eq!(row(&api.db.pool, id).await.status, "delivered");
}

fn confirmation(sns: &Sns, subscribe_url: &str) -> Value {
    let mut m = json!({
        "Type": "SubscriptionConfirmation",
        "MessageId": Uuid::new_v4().to_string(),
        "Token": "2336412f37fb687f5d51e6e2425c464de12884d6c4d5a0d7e5d5bd11d0b3b0f8",
        "TopicArn": TOPIC,
        "Message": format!("You have chosen to subscribe to the topic {TOPIC}.\nTo confirm the subscription, visit the SubscribeURL included in this message."),
        "SubscribeURL": subscribe_url,
        "Timestamp": now_rfc3339(0),
        "SignatureVersion": "1",
        "SigningCertURL": CERT_URL,
    });
    sns.sign(&mut m);
    m
}

const SUBSCRIBE_URL: &str = "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn=arn:aws:sns:us-east-1:123456789012:ses-events&Token=2336412f37fb687f5d51e6e2425c464de12884d6c4d5a0d7e5d5bd11d0b3b0f8";

#[tokio::test]
async fn a_subscription_confirmation_is_logged_unless_auto_confirm_is_on() {
    let sns = Sns::new();
    let api = start(&sns, &[]).await;
    let r = post(&api, &confirmation(&sns, SUBSCRIBE_URL)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["note"].as_str().unwrap().contains("not confirmed"),
        "{body}"
    );
    assert_eq!(sns.asked(), [CERT_URL], "the SubscribeURL is not visited");

    let sns = Sns::new();
    let api = start(&sns, &[("ADOPT__AUTH__SES_AUTO_CONFIRM", "true")]).await;
    let r = post(&api, &confirmation(&sns, SUBSCRIBE_URL)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["note"], "subscription confirmed");
    assert_eq!(sns.asked(), [CERT_URL, SUBSCRIBE_URL]);

    // A SubscribeURL elsewhere is never visited, signed or not.
    let r = post(
        &api,
        &confirmation(&sns, "https://evil.example/?Action=ConfirmSubscription"),
    )
    .await;
    assert_eq!(error_code(r, 401).await.0, "invalid_signature");
    assert_eq!(sns.asked().len(), 2);
}
