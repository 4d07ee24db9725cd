//! Bounces that come back by mail: the VERP envelope sender (`bounce.return_path`), and
//! `adopt-worker bounces ingest` / `POST /v1/webhooks/dsn` applying DSNs and abuse reports
//! to the rows over real SQL (README "Bounces and complaints").

use crate::helpers::*;

const RETURN_PATH: &str = "bounces+{email_id}@bounces.example.org";

#[tokio::test]
async fn verp_sets_the_envelope_sender_per_email_and_leaves_from_alone() {
    let db = TestDb::new().await;
    let smtp = TestSmtp::start().await;
    let mut e = NewEmail::to("maya@example.com");
    e.cc = Some(vec!["foster@example.com".into()]);
    e.bcc = Some(vec!["audit@example.com".into()]);
    let id = e.insert(&db.pool).await;
    let app = app(settings(
        &db,
        Some(&smtp.url()),
        None,
        &[("ADOPT__BOUNCE__RETURN_PATH", RETURN_PATH)],
    ));
    app.drain().await.unwrap();
    assert_eq!(row(&db.pool, id).await.status, "sent");
    let m = &smtp.messages()[0];
    assert_eq!(m.mail_from, format!("bounces+{id}@bounces.example.org"));
    assert_eq!(
        m.rcpt_to,
        [
            "maya@example.com",
            "foster@example.com",
            "audit@example.com"
        ],
        "every recipient is still in the envelope"
    );
    let from = m.header("From").unwrap();
    assert!(from.contains("rescues@adoptdontshop.com"), "{from}");
    assert_eq!(m.header("Bcc"), None, "Bcc stays out of the headers");
    assert_eq!(m.header("Return-Path"), None, "the receiving MTA adds that");

    // Without it, the envelope sender is the From address, as before.
    let db2 = TestDb::new().await;
    let smtp2 = TestSmtp::start().await;
    NewEmail::to("maya@example.com").insert(&db2.pool).await;
    app_default(&db2, &smtp2).await;
    assert_eq!(smtp2.messages()[0].mail_from, "rescues@adoptdontshop.com");
}

async fn app_default(db: &TestDb, smtp: &TestSmtp) {
    app(settings(db, Some(&smtp.url()), None, &[]))
        .drain()
        .await
        .unwrap();
}
