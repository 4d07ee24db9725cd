//! `POST /v1/webhooks/postmark`: Postmark's webhook records, with the basic-auth credentials
//! Postmark sends from the webhook URL.

use reqwest::StatusCode;

use super::*;

const USER: &str = "postmark";
const PASSWORD: &str = "postmark-webhook-password-0123";

async fn start() -> Api {
    Api::start_with(&[
        ("ADOPT__AUTH__POSTMARK_USERNAME", USER),
        ("ADOPT__AUTH__POSTMARK_PASSWORD", PASSWORD),
    ])
    .await
}

async fn post_as(api: &Api, user: &str, password: &str, body: String) -> reqwest::Response {
    api.http
        .post(api.url("/v1/webhooks/postmark"))
        .basic_auth(user, Some(password))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn post(api: &Api, record: &Value) -> reqwest::Response {
    post_as(api, USER, PASSWORD, record.to_string()).await
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

#[tokio::test]
async fn postmark_is_off_until_credentials_are_configured() {
    let api = Api::start().await;
    let r = post(&api, &json!({"RecordType": "Delivery"})).await;
    let (code, err) = error_code(r, 503).await;
    assert_eq!(code, "webhook_disabled");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("auth.postmark_password")
    );
}

#[tokio::test]
async fn every_record_type_maps_onto_the_rows() {
    let api = start().await;
    let maya = insert_user(&api.db.pool, "maya@example.com").await;
    let lena = insert_user(&api.db.pool, "lena@example.com").await;
    // Postmark does not report our Message-ID: rows are found by Metadata.email_id, or by
    // Postmark's MessageID when the relay's reply gave it as provider_message_id.
    let welcome = sent_row(
        &api,
        "maya@example.com",
        "marketing",
        Some("883953f4-6105-42a2-a16a-77a8eac79483"),
    )
    .await;
    let hard = sent_row(&api, "lena@example.com", "transactional", None).await;
    let soft = sent_row(&api, "maya@example.com", "transactional", None).await;

    // Delivery webhook.
    let delivery = json!({"RecordType": "Delivery", "ServerID": 23, "MessageStream": "outbound",
        "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483", "Recipient": "maya@example.com",
        "Tag": "welcome-email", "DeliveredAt": now(), "Details": "Test delivery webhook details",
        "Metadata": {"a_key": "a_value"}});
    assert_eq!(outcomes(post(&api, &delivery).await).await, ["applied"]);
    assert_eq!(row(&api.db.pool, welcome).await.status, "delivered");

    // Open and Click webhooks.
    let open = json!({"RecordType": "Open", "MessageStream": "outbound", "FirstOpen": true,
        "Recipient": "maya@example.com", "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
        "ReceivedAt": now(), "Platform": "WebMail", "ReadSeconds": 5, "Tag": "welcome-email",
        "UserAgent": "Mozilla/5.0", "OS": {"Name": "OS X 10.7 Lion", "Family": "OS X", "Company": "Apple Computer, Inc."},
        "Client": {"Name": "Chrome 35.0.1916.153", "Family": "Chrome", "Company": "Google"},
        "Geo": {"IP": "188.2.95.4", "City": "Novi Sad", "Country": "Serbia"}, "Metadata": {}});
    assert_eq!(outcomes(post(&api, &open).await).await, ["applied"]);
    let click = json!({"RecordType": "Click", "MessageStream": "outbound", "ClickLocation": "HTML",
        "Recipient": "maya@example.com", "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
        "ReceivedAt": now(), "Platform": "Desktop", "OriginalLink": "https://adoptdontshop.com/pets/1",
        "Tag": "welcome-email", "UserAgent": "Mozilla/5.0", "Metadata": {}});
    assert_eq!(outcomes(post(&api, &click).await).await, ["applied"]);
    assert_eq!(row(&api.db.pool, welcome).await.status, "clicked");

    // Bounce webhook, HardBounce: found by Metadata.email_id.
    let bounce = json!({"RecordType": "Bounce", "MessageStream": "outbound", "ID": 4323372036854775807_i64,
        "Type": "HardBounce", "TypeCode": 1, "Name": "Hard bounce", "Tag": "Invitation",
        "MessageID": "00000000-0000-0000-0000-000000000001", "Metadata": {"email_id": hard.to_string()},
        "ServerID": 23, "Description": "The server was unable to deliver your message (ex: unknown user, mailbox not found).",
        "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist.",
        "Email": "lena@example.com", "From": "rescues@adoptdontshop.com", "BouncedAt": now(),
        "DumpAvailable": true, "Inactive": true, "CanActivate": true, "Subject": "Your application for Biscuit"});
    assert_eq!(outcomes(post(&api, &bounce).await).await, ["applied"]);
    let r = row(&api.db.pool, hard).await;
    assert_eq!(r.status, "bounced");
    assert!(
        r.failure_reason
            .unwrap()
            .starts_with("hard bounce reported by Postmark: HardBounce")
    );
    assert!(prefs(&api, lena).await.unwrap().blacklisted);

    // SoftBounce: the row ends, the recipient is counted, not blacklisted.
    let mut soft_bounce = bounce.clone();
    soft_bounce["Type"] = json!("SoftBounce");
    soft_bounce["TypeCode"] = json!(4096);
    soft_bounce["Email"] = json!("maya@example.com");
    soft_bounce["Metadata"] = json!({"email_id": soft.to_string()});
    assert_eq!(outcomes(post(&api, &soft_bounce).await).await, ["applied"]);
    assert_eq!(row(&api.db.pool, soft).await.status, "bounced");
    let p = prefs(&api, maya).await.unwrap();
    assert_eq!((p.blacklisted, p.bounces), (false, 1));

    // An auto-reply is not a bounce.
    let mut auto = bounce.clone();
    auto["Type"] = json!("AutoResponder");
    auto["BouncedAt"] = json!(now());
    assert_eq!(outcomes(post(&api, &auto).await).await, ["ignored"]);

    // Subscription Change: the recipient unsubscribed from the stream.
    let change = json!({"RecordType": "SubscriptionChange", "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
        "ServerID": 123456, "MessageStream": "outbound", "ChangedAt": now(), "Recipient": "maya@example.com",
        "Origin": "Recipient", "SuppressSending": true, "SuppressionReason": "ManualSuppression",
        "Tag": "welcome-email", "Metadata": {}});
    assert_eq!(outcomes(post(&api, &change).await).await, ["applied"]);
    assert_eq!(
        prefs(&api, maya).await.unwrap().categories_off,
        ["marketing"]
    );

    // Spam Complaint webhook.
    let complaint = json!({"RecordType": "SpamComplaint", "MessageStream": "outbound", "ID": 42,
        "Type": "SpamComplaint", "TypeCode": 100001, "Name": "Spam complaint", "Tag": "welcome-email",
        "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483", "Metadata": {}, "ServerID": 1234,
        "Description": "", "Details": "Test spam complaint details", "Email": "maya@example.com",
        "From": "rescues@adoptdontshop.com", "BouncedAt": now(), "DumpAvailable": true,
        "Inactive": true, "CanActivate": false, "Subject": "Test subject"});
    assert_eq!(outcomes(post(&api, &complaint).await).await, ["applied"]);
    let p = prefs(&api, maya).await.unwrap();
    assert_eq!(
        (p.blacklisted, p.reason.as_deref()),
        (true, Some("complaint"))
    );

    let nobody = json!({"RecordType": "Delivery", "MessageID": "not-ours", "Recipient": "x@example.com", "DeliveredAt": now()});
    assert_eq!(outcomes(post(&api, &nobody).await).await, ["not_found"]);
}

#[tokio::test]
async fn missing_or_wrong_credentials_replays_and_malformed_records_are_refused() {
    let api = start().await;
    let id = sent_row(&api, "maya@example.com", "transactional", None).await;
    let record = json!({"RecordType": "Delivery", "Metadata": {"email_id": id.to_string()},
        "Recipient": "maya@example.com", "DeliveredAt": now()});

    let r = api
        .http
        .post(api.url("/v1/webhooks/postmark"))
        .json(&record)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["www-authenticate"], "Basic realm=\"postmark\"");
    assert_eq!(error_code(r, 401).await.0, "invalid_credentials");
    for (user, password) in [
        (USER, "postmark-webhook-password-0124"),
        ("other", PASSWORD),
        (USER, ""),
    ] {
        let r = post_as(&api, user, password, record.to_string()).await;
        assert_eq!(
            error_code(r, 401).await.0,
            "invalid_credentials",
            "{user}:{password}"
        );
    }
    assert_eq!(
        row(&api.db.pool, id).await.status,
        "sent",
        "nothing applied"
    );

    // Postmark sends no timestamp to check; the same record again is refused.
    let r = post(&api, &record).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(row(&api.db.pool, id).await.status, "delivered");
    assert_eq!(
        error_code(post(&api, &record).await, 409).await.0,
        "replayed_request"
    );

    let r = post_as(&api, USER, PASSWORD, "{\"RecordType\": ".into()).await;
    assert_eq!(error_code(r, 400).await.0, "malformed_json");
    let r = post_as(
        &api,
        USER,
        PASSWORD,
        "[{\"RecordType\": \"Delivery\"}]".into(),
    )
    .await;
    assert_eq!(error_code(r, 422).await.0, "validation_failed");
    let r = post_as(&api, USER, PASSWORD, "{\"RecordType\": 5}".into()).await;
    assert_eq!(error_code(r, 422).await.0, "validation_failed");
    // An unknown record type is acknowledged and ignored.
    let r = post(&api, &json!({"RecordType": "Inbound", "MessageID": "x"})).await;
    assert_eq!(outcomes(r).await, ["not_found"]);
}
