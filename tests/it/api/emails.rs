//! `/v1/emails`: enqueue (one, batch, idempotent), read, list, retry; and bad input.

use std::collections::HashSet;

use adopt_worker::api::tokens::Scope;
use reqwest::StatusCode;

use super::*;

#[tokio::test]
async fn enqueued_email_is_stored_as_given_and_delivered() {
    let api = Api::start().await;
    let token = api.token(&[Scope::Enqueue, Scope::Read]).await;
    let user = insert_user(&api.db.pool, "maya@example.com").await;
    let body = json!({
        "to": {"email": "maya@example.com", "name": "Maya Okafor"},
        "cc": ["partner@example.com"], "bcc": ["audit@adoptdontshop.com"],
        "reply_to": "coordinator@happypaws.org",
        "subject": "Biscuit is waiting", "html": "<p>Hello <b>Maya</b></p>", "text": "Hello Maya",
        "type": "transactional", "priority": "high", "tags": ["application"],
        "metadata": {"applicationId": "a-1"}, "user_id": user, "max_retries": 5,
        "campaign_id": "spring"
    });
    let r = api.post_json("/v1/emails", &token, &body).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let created: Value = r.json().await.unwrap();
    assert_eq!(created["status"], "queued");
    let id: Uuid = created["id"].as_str().unwrap().parse().unwrap();

    let (from, from_name, priority, user_id, tags, max): (
        String,
        Option<String>,
        String,
        Option<Uuid>,
        Vec<String>,
        i32,
    ) = sqlx::query_as(
        "SELECT from_email, from_name, priority::text, user_id, tags, max_retries
         FROM email_queue WHERE email_id = $1",
    )
    .bind(id)
    .fetch_one(&api.db.pool)
    .await
    .unwrap();
    assert_eq!(
        from, "noreply@adoptdontshop.com",
        "sender defaults to the config"
    );
    assert_eq!(from_name.as_deref(), Some("Adopt Don't Shop"));
    assert_eq!((priority.as_str(), user_id, max), ("high", Some(user), 5));
    assert_eq!(tags, vec!["application"]);

    api.drain().await;
    let msgs = api.smtp.messages();
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].header("Subject").unwrap(), "Biscuit is waiting");
    assert_eq!(msgs[0].rcpt_to.len(), 3);

    let view: Value = api
        .get(&format!("/v1/emails/{id}"), &token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(view["status"], "sent");
    assert_eq!(view["attempts"], 0);
    assert_eq!(view["max_retries"], 5);
    assert_eq!(view["provider_id"], "smtp");
    assert!(view["provider_message_id"].is_string());
    assert!(view["sent_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(view["metadata"]["applicationId"], "a-1");
}

#[tokio::test]
async fn scheduled_for_is_stored_in_utc() {
    let api = Api::start().await;
    let token = api.token(&[Scope::Enqueue]).await;
    let mut body = email("maya@example.com");
    body["scheduled_for"] = json!("2030-01-15T09:30:00+02:00");
    let r = api.post_json("/v1/emails", &token, &body).await;
    let id: Uuid = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        row(&api.db.pool, id)
            .await
            .scheduled_for
            .unwrap()
            .to_string(),
        "2030-01-15 07:30:00"
    );
}

#[tokio::test]
async fn idempotency_key_replays_the_first_response_and_refuses_another_body() {
    let api = Api::start().await;
    let token = api.token(&[Scope::Enqueue]).await;
    let send = |body: Value, key: &'static str, token: String| {
        let http = api.http.clone();
        let url = api.url("/v1/emails");
        async move {
            http.post(url)
                .bearer_auth(token)
                .header("idempotency-key", key)
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };
    let first = send(email("a@example.com"), "order-42", token.clone()).await;
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: Value = first.json().await.unwrap();

    let again = send(email("a@example.com"), "order-42", token.clone()).await;
    assert_eq!(again.status(), StatusCode::ACCEPTED, "same status");
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.json::<Value>().await.unwrap(), first, "same body");
    assert_eq!(api.queue_count().await, 1, "nothing inserted twice");

    let other = send(email("b@example.com"), "order-42", token.clone()).await;
    assert_eq!(error_code(other, 409).await.0, "idempotency_key_reused");

    let other_token = api.token(&[Scope::Enqueue]).await;
    let r = send(email("a@example.com"), "order-42", other_token).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert!(
        r.headers().get("idempotent-replayed").is_none(),
        "keys are per token"
    );
    assert_eq!(api.queue_count().await, 2);

    // Concurrent first requests with one key: exactly one row, every caller the same answer.
    let racers: Vec<_> = (0..8)
        .map(|_| tokio::spawn(send(email("c@example.com"), "race-1", token.clone())))
        .collect();
    let mut bodies = HashSet::new();
    for r in racers {
        let r = r.await.unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        bodies.insert(r.text().await.unwrap());
    }
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    assert_eq!(api.queue_count().await, 3);

    // Expired keys are forgotten after 24 h.
    sqlx::query("UPDATE api_idempotency_keys SET created_at = now() - interval '25 hours'")
        .execute(&api.db.pool)
        .await
        .unwrap();
    let r = send(email("b@example.com"), "order-42", token.clone()).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(api.queue_count().await, 4);

    let r = api
        .http
        .post(api.url("/v1/emails"))
        .bearer_auth(&token)
        .header("idempotency-key", "")
        .json(&email("a@example.com"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 400).await.0, "invalid_idempotency_key");
}

/// Issue 19 item 7: a replay is decided on the parsed JSON, not its bytes: a client that
/// serialises the same body again with its keys in another order gets the replay.
#[tokio::test]
async fn idempotency_key_replays_the_same_json_with_keys_in_another_order() {
    let api = Api::start().await;
    let token = api.token(&[Scope::Enqueue]).await;
    let send = |body: &'static str| {
        api.http
            .post(api.url("/v1/emails"))
            .bearer_auth(&token)
            .header("idempotency-key", "order-7")
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let first = send(
        r#"{"to":{"email":"a@example.com","name":"Maya"},"subject":"Hi","html":"<p>x</p>","type":"transactional","metadata":{"a":1,"b":[{"x":1,"y":2}]}}"#,
    )
    .await
    .unwrap();
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    let first: Value = first.json().await.unwrap();
    let again = send(
        r#"{ "type": "transactional", "metadata": {"b": [{"y": 2, "x": 1}], "a": 1},
            "html": "<p>x</p>", "subject": "Hi", "to": {"name": "Maya", "email": "a@example.com"} }"#,
    )
    .await
    .unwrap();
    assert_eq!(again.status(), StatusCode::ACCEPTED);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.json::<Value>().await.unwrap(), first);
    assert_eq!(api.queue_count().await, 1);
    // Another value is still another request.
    let other = send(
        r#"{"to":{"email":"a@example.com","name":"Maya"},"subject":"Hi!","html":"<p>x</p>","type":"transactional","metadata":{"a":1,"b":[{"x":1,"y":2}]}}"#,
    )
    .await
    .unwrap();
    assert_eq!(error_code(other, 409).await.0, "idempotency_key_reused");
}

/// Issue 19 item 7: a `scheduled_for` without a UTC offset names no instant; the 422 says
/// the offset is required (it said "premature end of input").
#[tokio::test]
async fn scheduled_for_without_an_offset_is_refused_saying_the_offset_is_required() {
    let api = Api::start().await;
    let token = api.token(&[Scope::Enqueue]).await;
    for local in ["2030-01-15T09:30:00", "2030-01-15 09:30:00.250"] {
        let mut body = email("maya@example.com");
        body["scheduled_for"] = json!(local);
        let r = api.post_json("/v1/emails", &token, &body).await;
        let (code, err) = error_code(r, 422).await;
        assert_eq!(code, "validation_failed");
        let e = &err["error"]["details"]["errors"][0];
        assert_eq!(e["field"], "scheduled_for", "{err}");
        let message = e["message"].as_str().unwrap();
        assert!(
            message.contains("no UTC offset, which is required") && message.contains(local),
            "{message}"
        );
    }
    let mut body = email("maya@example.com");
    body["scheduled_for"] = json!("2030-01-15T09:30:00Z");
    let r = api.post_json("/v1/emails", &token, &body).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(api.queue_count().await, 1);
}

/// Every class of bad input: a 4xx JSON error that names the problem, and no row.
#[tokio::test]
async fn bad_input_is_refused_with_the_field_named_and_nothing_inserted() {
    let api = Api::start().await;
    let token = api.token(&[Scope::Enqueue]).await;
    let with = |patch: Value| {
        let mut b = email("maya@example.com");
        for (k, v) in patch.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    let cases: Vec<(Value, &str)> = vec![
        (with(json!({"to": "not an address"})), "to"),
        (
            with(json!({"to": "maya@example.com\r\nBcc: victim@example.com"})),
            "to",
        ),
        (
            with(json!({"to": {"email": "maya@example.com", "name": "Maya\nX-Evil: 1"}})),
            "to.name",
        ),
        (
            with(json!({"subject": "Hi\r\nBcc: victim@example.com"})),
            "subject",
        ),
        (
            with(json!({"cc": ["ok@example.com", "x@example.com\nBcc: y@example.com"]})),
            "cc[1]",
        ),
        (with(json!({"bcc": ["@nope"]})), "bcc[0]"),
        (with(json!({"reply_to": "a@example.com\r\n"})), "reply_to"),
        (
            with(json!({"from": {"email": "x@example.com", "name": "A\rB"}})),
            "from.name",
        ),
        (with(json!({"max_retries": 21})), "max_retries"),
        (with(json!({"max_retries": "three"})), "max_retries"),
        (with(json!({"type": "spam"})), "type"),
        (with(json!({"scheduled_for": "tomorrow"})), "scheduled_for"),
        (with(json!({"metadata": [1, 2]})), "metadata"),
        (with(json!({"user_id": Uuid::new_v4()})), "user_id"),
        (with(json!({"bogus": true})), "bogus"),
        (with(json!({"html": "", "text": null})), "html"),
        (with(json!({"template": "welcome"})), "template"),
        (
            json!({"to": "a@example.com", "template": "welcome", "data": [1], "type": "system"}),
            "data",
        ),
        (
            json!({"to": "a@example.com", "template": "no-such-template", "type": "system"}),
            "template",
        ),
    ];
    for (body, field) in cases {
        let r = api.post_json("/v1/emails", &token, &body).await;
        let (code, err) = error_code(r, 422).await;
        assert_eq!(code, "validation_failed", "{body}");
        let named: Vec<&str> = err["error"]["details"]["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap())
            .collect();
        assert!(
            named.iter().any(|f| f.contains(field)),
            "{field} not named for {body}: {err}"
        );
    }

    let raw = |body: Vec<u8>, ct: &'static str| {
        api.http
            .post(api.url("/v1/emails"))
            .bearer_auth(&token)
            .header("content-type", ct)
            .body(body)
            .send()
    };
    let r = raw(b"{\"to\": ".to_vec(), "application/json")
        .await
        .unwrap();
    assert_eq!(error_code(r, 400).await.0, "malformed_json");
    let r = raw(
        email("a@example.com").to_string().into_bytes(),
        "text/plain",
    )
    .await
    .unwrap();
    assert_eq!(error_code(r, 415).await.0, "unsupported_media_type");
    let mut big = email("a@example.com");
    big["html"] = json!("x".repeat(1024 * 1024 + 1));
    let r = raw(big.to_string().into_bytes(), "application/json")
        .await
        .unwrap();
    assert_eq!(error_code(r, 413).await.0, "payload_too_large");

    assert_eq!(api.queue_count().await, 0, "nothing inserted");
}

#[tokio::test]
async fn batch_is_all_or_nothing_with_errors_by_index() {
    let api = Api::start().await;
    let token = api.token(&[Scope::Enqueue]).await;
    let bad = json!({"emails": [email("a@example.com"), email("nope"), email("c@example.com"),
        {"to": "d@example.com", "subject": "x", "html": "y", "type": "system", "extra": 1}]});
    let r = api.post_json("/v1/emails/batch", &token, &bad).await;
    let (code, err) = error_code(r, 422).await;
    assert_eq!(code, "validation_failed");
    let errors = err["error"]["details"]["errors"].as_array().unwrap();
    let indexes: Vec<u64> = errors
        .iter()
        .map(|e| e["index"].as_u64().unwrap())
        .collect();
    assert!(indexes.contains(&3), "{err}");
    assert_eq!(api.queue_count().await, 0);

    let bad = json!({"emails": [email("a@example.com"), email("nope")]});
    let (_, err) = error_code(api.post_json("/v1/emails/batch", &token, &bad).await, 422).await;
    assert_eq!(err["error"]["details"]["errors"][0]["index"], 1);
    assert_eq!(err["error"]["details"]["errors"][0]["field"], "to");
    assert_eq!(api.queue_count().await, 0);

    // A 2 MiB batch is fine (the batch limit is 5 MiB, the single one 1 MiB).
    let mut item = email("a@example.com");
    item["html"] = json!("x".repeat(4 * 1024));
    let items: Vec<Value> = (0..500).map(|_| item.clone()).collect();
    let r = api
        .post_json("/v1/emails/batch", &token, &json!({"emails": items}))
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let ids = r.json::<Value>().await.unwrap()["ids"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(ids, 500);
    assert_eq!(api.queue_count().await, 500);

    let items: Vec<Value> = (0..501).map(|_| email("a@example.com")).collect();
    let r = api
        .post_json("/v1/emails/batch", &token, &json!({"emails": items}))
        .await;
    assert_eq!(error_code(r, 422).await.0, "validation_failed");
    let r = api
        .post_json("/v1/emails/batch", &token, &json!({"emails": []}))
        .await;
    assert_eq!(error_code(r, 422).await.0, "validation_failed");
    let mut huge = email("a@example.com");
    huge["html"] = json!("x".repeat(6 * 1024 * 1024));
    let r = api
        .post_json("/v1/emails/batch", &token, &json!({"emails": [huge]}))
        .await;
    assert_eq!(error_code(r, 413).await.0, "payload_too_large");
    assert_eq!(api.queue_count().await, 500);
}

#[tokio::test]
async fn get_email_404s_unknown_ids_and_400s_malformed_ones() {
    let api = Api::start().await;
    let token = api.token(&[Scope::Read]).await;
    let r = api
        .get(&format!("/v1/emails/{}", Uuid::new_v4()), &token)
        .await;
    assert_eq!(error_code(r, 404).await.0, "not_found");
    let r = api.get("/v1/emails/not-a-uuid", &token).await;
    assert_eq!(error_code(r, 400).await.0, "invalid_path");
}

#[tokio::test]
async fn list_pages_newest_first_without_gaps_or_repeats() {
    let api = Api::start().await;
    let token = api.token(&[Scope::Read]).await;
    let mut ids = Vec::new();
    for i in 0..7 {
        let mut e = NewEmail::to(&format!("user{}@example.com", i % 2));
        e.subject = format!("n{i}");
        ids.push(e.insert(&api.db.pool).await);
    }
    // Two rows share a created_at: the id breaks the tie.
    sqlx::query(
        "UPDATE email_queue SET created_at = '2026-01-01'::timestamp + (CASE WHEN subject IN ('n3','n4') THEN 3
             ELSE substr(subject, 2)::int END) * interval '1 minute'",
    )
    .execute(&api.db.pool)
    .await
    .unwrap();
    sqlx::query("UPDATE email_queue SET status = 'failed' WHERE subject IN ('n1', 'n5')")
        .execute(&api.db.pool)
        .await
        .unwrap();

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/emails?limit=3&cursor={c}"),
            None => "/v1/emails?limit=3".to_string(),
        };
        let page: Value = api.get(&path, &token).await.json().await.unwrap();
        let emails = page["emails"].as_array().unwrap();
        assert!(emails.len() <= 3);
        seen.extend(
            emails
                .iter()
                .map(|e| e["subject"].as_str().unwrap().to_string()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 7, "{seen:?}");
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 7, "no repeats");
    assert_eq!(seen[..2], ["n6", "n5"]);
    let tied: HashSet<&str> = seen[2..4].iter().map(String::as_str).collect();
    assert_eq!(tied, HashSet::from(["n3", "n4"]));
    assert_eq!(seen[4..], ["n2", "n1", "n0"]);

    let failed: Value = api
        .get("/v1/emails?status=failed", &token)
        .await
        .json()
        .await
        .unwrap();
    let subjects: Vec<&str> = failed["emails"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["subject"].as_str().unwrap())
        .collect();
    assert_eq!(subjects, vec!["n5", "n1"]);
    let to: Value = api
        .get("/v1/emails?to=USER1@example.com", &token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(to["emails"].as_array().unwrap().len(), 3);

    for bad in [
        "/v1/emails?limit=0",
        "/v1/emails?limit=201",
        "/v1/emails?status=lost",
    ] {
        assert_eq!(
            error_code(api.get(bad, &token).await, 400).await.0,
            "invalid_query",
            "{bad}"
        );
    }
    let r = api.get("/v1/emails?cursor=bm90IGEgY3Vyc29y", &token).await;
    assert_eq!(error_code(r, 400).await.0, "invalid_cursor");
}

#[tokio::test]
async fn retry_requeues_failed_rows_only() {
    let api = Api::start().await;
    let admin = api.token(&[Scope::Admin]).await;
    let mut by_status = Vec::new();
    for status in ["failed", "bounced", "unsubscribed", "sent", "queued"] {
        let id = NewEmail::to("maya@example.com").insert(&api.db.pool).await;
        sqlx::query(
            "UPDATE email_queue SET status = $2::email_status_enum, current_retries = 3,
                 failure_reason = 'smtp 451 greylisted', scheduled_for = '2020-01-01' WHERE email_id = $1",
        )
        .bind(id)
        .bind(status)
        .execute(&api.db.pool)
        .await
        .unwrap();
        by_status.push((status, id));
    }
    for (status, id) in &by_status[1..] {
        let r = api
            .post_json(&format!("/v1/emails/{id}/retry"), &admin, &json!({}))
            .await;
        let (code, body) = error_code(r, 409).await;
        assert_eq!(code, "not_retryable");
        assert_eq!(body["error"]["details"]["status"], *status);
        assert_eq!(row(&api.db.pool, *id).await.status, *status, "unchanged");
    }
    let (_, failed) = by_status[0];
    let r = api
        .post_json(&format!("/v1/emails/{failed}/retry"), &admin, &json!({}))
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = row(&api.db.pool, failed).await;
    assert_eq!(r.status, "queued");
    assert_eq!(r.current_retries, Some(0));
    assert_eq!(r.failure_reason, None);
    assert!(
        r.scheduled_for.unwrap() > chrono::Utc::now().naive_utc() - chrono::Duration::minutes(1)
    );
    api.drain().await;
    assert_eq!(row(&api.db.pool, failed).await.status, "sent", "due now");

    let r = api
        .post_json(
            &format!("/v1/emails/{}/retry", Uuid::new_v4()),
            &admin,
            &json!({}),
        )
        .await;
    assert_eq!(error_code(r, 404).await.0, "not_found");
}

#[tokio::test]
async fn a_service_retries_its_own_failed_emails_and_no_one_else_s() {
    let api = Api::start().await;
    let mine = api.token(&[Scope::Enqueue]).await;
    let other = api.token(&[Scope::Enqueue]).await;
    let admin = api.token(&[Scope::Admin]).await;
    let enqueue = |token: String| {
        let api = &api;
        async move {
            let r = api
                .post_json("/v1/emails", &token, &email("maya@example.com"))
                .await;
            assert_eq!(r.status(), StatusCode::ACCEPTED);
            let id: Uuid = r.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap();
            sqlx::query("UPDATE email_queue SET status = 'failed', failure_reason = 'smtp 554 x' WHERE email_id = $1")
                .bind(id)
                .execute(&api.db.pool)
                .await
                .unwrap();
            id
        }
    };
    let own = enqueue(mine.clone()).await;
    let theirs = enqueue(other.clone()).await;
    let by_sql = NewEmail::to("maya@example.com").insert(&api.db.pool).await;
    sqlx::query("UPDATE email_queue SET status = 'failed' WHERE email_id = $1")
        .bind(by_sql)
        .execute(&api.db.pool)
        .await
        .unwrap();

    let r = api
        .post_json(&format!("/v1/emails/{own}/retry"), &mine, &json!({}))
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED, "its own email");
    assert_eq!(row(&api.db.pool, own).await.status, "queued");
    for id in [theirs, by_sql] {
        let r = api
            .post_json(&format!("/v1/emails/{id}/retry"), &mine, &json!({}))
            .await;
        let (code, body) = error_code(r, 403).await;
        assert_eq!(code, "not_your_email", "{body}");
        assert_eq!(row(&api.db.pool, id).await.status, "failed", "untouched");
    }
    let r = api
        .post_json(&format!("/v1/emails/{theirs}/retry"), &admin, &json!({}))
        .await;
    assert_eq!(
        r.status(),
        StatusCode::ACCEPTED,
        "an admin retries any email"
    );
}
