//! Regression tests for what `scripts/api-fuzz` (schemathesis against `/openapi.json`) found:
//! server errors, answers the document did not describe, and a document that said less (or
//! something else) than the server checks.

use std::path::Path;

use adopt_worker::api::tokens::Scope;
use reqwest::{Method, StatusCode};

use super::*;

/// The served document.
async fn document(api: &Api) -> Value {
    api.http
        .get(api.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Asserts the document lists `status` among the responses of `method path`.
fn assert_documented(doc: &Value, method: &str, path: &str, status: u16) {
    let responses = &doc["paths"][path][method]["responses"];
    assert!(
        responses.get(status.to_string()).is_some(),
        "{method} {path} answered {status}, which its responses do not list: {responses}"
    );
}

/// The API with the shipped templates synced.
async fn with_templates() -> Api {
    let api = Api::start().await;
    app(api.settings.clone())
        .templates
        .sync(Path::new("templates"), &Default::default())
        .await
        .expect("the shipped templates sync");
    api
}

fn param<'a>(doc: &'a Value, method: &str, path: &str, name: &str) -> &'a Value {
    doc["paths"][path][method]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("{method} {path}: no parameter {name}"))
}

fn schema<'a>(doc: &'a Value, name: &str) -> &'a Value {
    &doc["components"]["schemas"][name]
}

/// The query parameters of the list and the preview were documented as required *path*
/// parameters (utoipa's default when it cannot see a `Query` extractor), so no client built
/// from the document could send them.
#[tokio::test]
async fn query_parameters_are_documented_in_the_query() {
    let api = Api::start().await;
    let doc = document(&api).await;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            for p in op["parameters"].as_array().into_iter().flatten() {
                if p["in"] == "path" {
                    let name = p["name"].as_str().unwrap();
                    assert!(
                        path.contains(&format!("{{{name}}}")),
                        "{method} {path}: path parameter {name} is not in the path"
                    );
                }
            }
        }
    }
    for (path, names) in [
        ("/v1/emails", &["status", "to", "limit", "cursor"][..]),
        (
            "/v1/templates/{name}/preview",
            &["locale", "version", "format"],
        ),
    ] {
        for name in names {
            let p = param(&doc, "get", path, name);
            assert_eq!(p["in"], "query", "{path} {name}");
            assert_ne!(p["required"], true, "{path} {name}");
        }
    }
    let limit = &param(&doc, "get", "/v1/emails", "limit")["schema"];
    assert_eq!(
        (limit["minimum"].as_i64(), limit["maximum"].as_i64()),
        (Some(1), Some(200))
    );
    let format = &param(&doc, "get", "/v1/templates/{name}/preview", "format")["schema"];
    assert!(
        format.to_string().contains(r#"["html","json"]"#),
        "format is documented inline as html or json: {format}"
    );

    let admin = api.admin().await.1;
    let r = api.get("/v1/emails?limit=201", &admin).await;
    assert_eq!(error_code(r, 400).await.0, "invalid_query");
    let r = api
        .get("/v1/templates/welcome/preview?format=xml", &admin)
        .await;
    assert_eq!(error_code(r, 400).await.0, "invalid_query");
}

/// Statuses the server gave that the document did not list.
#[tokio::test]
async fn every_error_status_the_fuzzer_met_is_documented() {
    let api = Api::start().await;
    let doc = document(&api).await;
    let token = api.token(&[Scope::Admin]).await;

    let r = api
        .http
        .post(api.url("/v1/emails/null,null/retry"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 400).await.0, "invalid_path");
    assert_documented(&doc, "post", "/v1/emails/{id}/retry", 400);

    let r = api
        .http
        .post(api.url("/v1/templates/welcome/test"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 415).await.0, "unsupported_media_type");
    assert_documented(&doc, "post", "/v1/templates/{name}/test", 415);
    let r = api
        .http
        .post(api.url("/v1/templates/welcome/test"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{\"to\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 400).await.0, "malformed_json");
    assert_documented(&doc, "post", "/v1/templates/{name}/test", 400);

    // Correctly signed, but not JSON (415), or not well-formed JSON (400).
    for (content_type, body, status) in [
        (None, r#"{"type":"delivered","email_id":null}"#, 415),
        (Some("application/json"), "[{", 400),
    ] {
        let ts = chrono::Utc::now().timestamp();
        let mut req = api
            .http
            .post(api.url("/v1/webhooks/events"))
            .header("x-adopt-timestamp", ts.to_string())
            .header("x-adopt-signature", webhook_signature(ts, body));
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let r = req.body(body).send().await.unwrap();
        assert_eq!(r.status().as_u16(), status);
        assert_documented(&doc, "post", "/v1/webhooks/events", status);
    }
}

fn webhook_signature(ts: i64, body: &str) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(WEBHOOK_SECRET.as_bytes()).unwrap();
    mac.update(format!("{ts}.{body}").as_bytes());
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

/// A template named by the path is the resource: a missing one is 404, as a missing email
/// is (it was 422, an answer for an invalid field of a body).
#[tokio::test]
async fn a_missing_template_in_the_path_is_404() {
    let api = Api::start().await;
    let doc = document(&api).await;
    let admin = api.admin().await.1;
    let r = api
        .post_json(
            "/v1/templates/no_such/test",
            &admin,
            &json!({"to": "qa@example.com"}),
        )
        .await;
    assert_eq!(error_code(r, 404).await.0, "not_found");
    assert_documented(&doc, "post", "/v1/templates/{name}/test", 404);
    let r = api.get("/v1/templates/no_such/preview", &admin).await;
    assert_eq!(error_code(r, 404).await.0, "not_found");
    assert_documented(&doc, "get", "/v1/templates/{name}/preview", 404);
    assert_eq!(api.queue_count().await, 0);
}

/// NUL (`\u0000`) reached PostgreSQL, which refuses it in text and jsonb: a 500 for the
/// caller. Now every place it can come in refuses it with a 4xx, and nothing is stored.
#[tokio::test]
async fn nul_characters_are_refused_before_the_database() {
    let api = Api::start().await;
    let token = api
        .token(&[Scope::Enqueue, Scope::Read, Scope::Admin])
        .await;
    let with = |field: &str, value: Value| {
        let mut e = email("maya@example.com");
        e[field] = value;
        e
    };
    for (path, body, field) in [
        ("/v1/emails", with("html", json!("<p>a\u{0}b</p>")), "html"),
        ("/v1/emails", with("text", json!("a\u{0}")), "text"),
        (
            "/v1/emails",
            with("metadata", json!({"k": ["\u{0}"]})),
            "metadata.k[0]",
        ),
        (
            "/v1/emails",
            with("metadata", json!({"\u{0}": 1})),
            "metadata.\u{0}",
        ),
        (
            "/v1/emails",
            json!({"to": "maya@example.com", "type": "system", "template": "welcome",
                   "data": {"user": {"first_name": "M\u{0}"}}}),
            "data.user.first_name",
        ),
        (
            "/v1/emails/batch",
            json!({"emails": [email("a@example.com"), with("text", json!("\u{0}"))]}),
            "emails[1].text",
        ),
        (
            "/v1/templates/welcome/test",
            json!({"to": "qa@example.com", "data": {"user": {"first_name": "\u{0}"}}}),
            "data.user.first_name",
        ),
    ] {
        let r = api.post_json(path, &token, &body).await;
        let (code, err) = error_code(r, 422).await;
        assert_eq!(code, "validation_failed", "{path} {body}");
        assert_eq!(
            err["error"]["details"]["errors"][0]["field"], field,
            "{path}: {err}"
        );
    }
    let body =
        r#"{"type":"bounced","bounce_type":"hard","provider_message_id":"x","reason":"a\u0000b"}"#;
    let ts = chrono::Utc::now().timestamp();
    let r = api
        .http
        .post(api.url("/v1/webhooks/events"))
        .header("content-type", "application/json")
        .header("x-adopt-timestamp", ts.to_string())
        .header("x-adopt-signature", webhook_signature(ts, body))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 422).await.0, "validation_failed");

    for (path, code) in [
        ("/v1/emails?to=a%00b", "invalid_query"),
        (
            "/v1/templates/welcome/preview?locale=en%00",
            "invalid_query",
        ),
        ("/v1/templates/wel%00come/preview", "invalid_path"),
    ] {
        let r = api.get(path, &token).await;
        assert_eq!(error_code(r, 400).await.0, code, "{path}");
    }
    for method in [Method::GET, Method::POST] {
        let r = api
            .http
            .request(method.clone(), api.url("/u/tok%00en"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("List-Unsubscribe=One-Click")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{method} /u/");
    }
    assert_eq!(api.queue_count().await, 0, "nothing was stored");

    // The text `\u0000` (an escaped backslash, then "u0000") is no NUL.
    let r = api
        .post_json("/v1/emails", &token, &with("text", json!("\\u0000")))
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
}

/// A number close to the largest double in `metadata` was accepted, but PostgreSQL prints it
/// back as a 309-digit integer that serde_json's fast float parser rounded to infinity: the
/// row could never be read again. GET of it and the whole list answered 500, and every claim
/// that picked it up failed, so the worker delivered nothing at all.
#[tokio::test]
async fn a_number_near_the_largest_double_survives_postgresql() {
    let api = Api::start().await;
    let token = api.token(&[Scope::Enqueue, Scope::Read]).await;
    let metadata = json!({"max": f64::MAX, "min": -f64::MAX, "tiny": 5e-324, "big": 1e300});
    let mut body = email("maya@example.com");
    body["metadata"] = metadata.clone();
    let r = api.post_json("/v1/emails", &token, &body).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();

    let r = api.get(&format!("/v1/emails/{id}"), &token).await;
    assert_eq!(r.status(), StatusCode::OK);
    let mut got = r.json::<Value>().await.unwrap()["metadata"].clone();
    // The one key the API adds: the token that queued the row.
    got.as_object_mut().unwrap().remove("enqueuedByToken");
    assert_eq!(got, metadata);
    let r = api.get("/v1/emails", &token).await;
    assert_eq!(r.status(), StatusCode::OK);

    api.drain().await;
    let status: String =
        sqlx::query_scalar("SELECT status::text FROM email_queue WHERE email_id = $1::uuid")
            .bind(&id)
            .fetch_one(&api.db.pool)
            .await
            .unwrap();
    assert_eq!(status, "sent");
}

/// What the document says of the enqueue body is what `validate` checks, so data the
/// document calls valid is accepted and data it calls invalid is refused.
#[tokio::test]
async fn the_enqueue_schema_says_what_the_server_checks() {
    let api = Api::start().await;
    let doc = document(&api).await;
    let variants = schema(&doc, "EnqueueRequest")["oneOf"].as_array().unwrap();
    assert_eq!(variants.len(), 3, "rendered with html, text only, template");
    for v in variants {
        let required: Vec<&str> = v["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap())
            .collect();
        assert!(
            required.contains(&"to") && required.contains(&"type"),
            "{v}"
        );
        assert_eq!(v["additionalProperties"], false);
        let max_retries = &v["properties"]["max_retries"];
        assert_eq!(
            (
                max_retries["minimum"].as_i64(),
                max_retries["maximum"].as_i64()
            ),
            (Some(0), Some(20))
        );
        assert_eq!(v["properties"]["cc"]["maxItems"], 50);
    }
    assert_eq!(schema(&doc, "Address")["maxLength"], 254);
    assert_eq!(schema(&doc, "Address")["format"], "email");
    let emails = &schema(&doc, "BatchRequest")["properties"]["emails"];
    assert_eq!(
        (emails["minItems"].as_i64(), emails["maxItems"].as_i64()),
        (Some(1), Some(500))
    );
    let key = &param(&doc, "post", "/v1/emails", "Idempotency-Key")["schema"];
    assert_eq!(
        (key["minLength"].as_i64(), key["maxLength"].as_i64()),
        (Some(1), Some(255))
    );
    let events = schema(&doc, "EventsBody");
    let shapes = events["oneOf"].as_array().unwrap();
    assert_eq!(
        shapes[1]["type"], "array",
        "one event, or an array: {events}"
    );
    assert_eq!(
        (
            shapes[1]["minItems"].as_i64(),
            shapes[1]["maxItems"].as_i64()
        ),
        (Some(1), Some(1000))
    );
    let content = &doc["paths"]["/u/{token}"]["post"]["requestBody"]["content"];
    for media in ["application/x-www-form-urlencoded", "multipart/form-data"] {
        assert_eq!(
            content[media]["schema"]["$ref"], "#/components/schemas/OneClickForm",
            "{content}"
        );
    }
    let form = schema(&doc, "OneClickForm");
    assert_eq!(
        form["properties"]["List-Unsubscribe"]["enum"],
        json!(["One-Click"])
    );
    assert_eq!(form["required"], json!(["List-Unsubscribe"]));

    // JSON Schema's integer includes 20.0; serde's i32 did not.
    let token = api.token(&[Scope::Enqueue]).await;
    let mut body = email("maya@example.com");
    body["max_retries"] = json!(20.0);
    let r = api.post_json("/v1/emails", &token, &body).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    body["max_retries"] = json!(2.5);
    let r = api.post_json("/v1/emails", &token, &body).await;
    assert_eq!(error_code(r, 422).await.0, "validation_failed");
}

/// A test send's recipient was checked only for CR/LF: control characters and names of any
/// length went into the To header. It follows the enqueue's rules now, as documented.
#[tokio::test]
async fn a_test_send_recipient_follows_the_enqueue_rules() {
    let api = with_templates().await;
    let admin = api.admin().await.1;
    for (to, field) in [
        (
            json!({"email": "qa@example.com", "name": "Q\u{1}A"}),
            "to.name",
        ),
        (
            json!({"email": "qa@example.com", "name": "n".repeat(256)}),
            "to.name",
        ),
        (json!("qa\u{7}@example.com"), "to"),
    ] {
        let r = api
            .post_json("/v1/templates/welcome/test", &admin, &json!({"to": to}))
            .await;
        assert_eq!(
            error_code(r, 422).await.1["error"]["details"]["errors"][0]["field"],
            field
        );
    }
    let r = api
        .post_json(
            "/v1/templates/welcome/test",
            &admin,
            &json!({"to": {"email": " qa@example.com ", "name": "Q A"}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
}
