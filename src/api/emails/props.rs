//! Fuzz target `fuzz_enqueue_body` (a property test, run by `scripts/fuzz`): any request
//! body, parsed and validated as `POST /api/v1/emails` does, never panics, and an accepted
//! body never carries a line break into a field that becomes a mail header.

use proptest::prelude::*;
use serde_json::{Map, Value};

use super::request::{EnqueueRequest, validate};
use crate::config::AppSettings;

fn app() -> AppSettings {
    AppSettings {
        name: "Adopt Don't Shop".into(),
        base_url: "https://adoptdontshop.com".into(),
        support_email: "support@adoptdontshop.com".into(),
        from_email: "noreply@adoptdontshop.com".into(),
        from_name: "Adopt Don't Shop".into(),
    }
}

fn text() -> impl Strategy<Value = Value> {
    prop_oneof![
        "[a-z]{1,8}@[a-z]{1,8}\\.com".prop_map(Value::from),
        "[a-z]{1,8}@[a-z]{1,8}\\.com(\r\nBcc: e@x.com|\n| <e@x.com>)".prop_map(Value::from),
        "[ -~]{0,30}".prop_map(Value::from),
        Just(Value::from("Hi\r\nX-Injected: yes")),
        any::<String>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        Just(Value::Null),
        Just(Value::from("2026-11-25T18:00:00Z")),
        Just(Value::from("marketing")),
        Just(Value::from("urgent")),
    ]
}

fn field_value() -> impl Strategy<Value = Value> {
    text().prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("email".to_string()),
                    Just("name".to_string()),
                    "[a-z]{1,6}"
                ],
                inner,
                0..3
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

const FIELDS: [&str; 18] = [
    "to",
    "cc",
    "bcc",
    "reply_to",
    "from",
    "subject",
    "html",
    "text",
    "template",
    "locale",
    "data",
    "type",
    "priority",
    "scheduled_for",
    "tags",
    "metadata",
    "user_id",
    "max_retries",
];

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(256);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn fuzz_enqueue_body(
        fields in prop::collection::vec((0usize..FIELDS.len(), field_value()), 0..10),
        raw in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut body: Map<String, Value> =
            fields.into_iter().map(|(i, v)| (FIELDS[i].to_string(), v)).collect();
        body.entry("to").or_insert_with(|| Value::from("maya@example.com"));
        body.entry("subject").or_insert_with(|| Value::from("Hello"));
        body.entry("html").or_insert_with(|| Value::from("<p>Hi</p>"));
        body.entry("type").or_insert_with(|| Value::from("transactional"));
        let bytes = serde_json::to_vec(&body).unwrap();
        for input in [bytes.as_slice(), raw.as_slice()] {
            let Ok(req) = serde_json::from_slice::<EnqueueRequest>(input) else {
                continue;
            };
            let Ok(v) = validate(req, &app()) else {
                continue;
            };
            let e = &v.email;
            let headers = [Some(&e.to_email), e.to_name.as_ref(), Some(&e.from_email),
                e.from_name.as_ref(), e.reply_to_email.as_ref(), Some(&e.subject)];
            for h in headers.into_iter().flatten().chain(&e.cc_emails).chain(&e.bcc_emails) {
                prop_assert!(!h.contains(['\r', '\n']), "accepted {h:?} from {input:?}");
            }
        }
    }
}
