//! One behaviour for one intent (issue 19 item 4): what the API refuses, a row inserted with
//! SQL with the same content ends `failed` with the same words, instead of being sent some
//! other way; and what the API fills in for its rows, SQL rows get too.

use std::path::Path;

use adopt_worker::api::tokens::Scope;

use super::*;

/// The message of the API's error naming `field`.
async fn refusal(api: &Api, token: &str, body: &Value, field: &str) -> String {
    let r = api.post_json("/v1/emails", token, body).await;
    let (code, err) = error_code(r, 422).await;
    assert_eq!(code, "validation_failed", "{err}");
    err["error"]["details"]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["field"] == field)
        .unwrap_or_else(|| panic!("{field} not named: {err}"))["message"]
        .as_str()
        .unwrap()
        .to_string()
}

/// A plain row as another service inserts it, then `set` (SQL assignments) applied to it.
async fn sql_row(pool: &sqlx::PgPool, set: &str) -> Uuid {
    let id = NewEmail::to("maya@example.com").insert(pool).await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE email_queue SET {set} WHERE email_id = $1"
    )))
    .bind(id)
    .execute(pool)
    .await
    .unwrap();
    id
}

/// The shipped templates, synced into the API's database.
async fn sync_templates(api: &Api) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("templates");
    app(api.settings.clone())
        .templates
        .sync(&dir, &Default::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn metadata_that_is_not_an_object_is_refused_alike_by_the_api_and_in_a_row() {
    let api = Api::start().await;
    let token = api.token(&[Scope::Enqueue, Scope::Read]).await;
    let mut body = email("maya@example.com");
    body["metadata"] = json!("{\"locale\": \"fr-FR\"}"); // a JSON string, not an object
    let words = refusal(&api, &token, &body, "metadata").await;
    assert_eq!(words, "must be a JSON object, got a string");

    let id = sql_row(
        &api.db.pool,
        r#"metadata = to_jsonb('{"locale": "fr-FR"}'::text)"#,
    )
    .await;
    api.drain().await;
    let r = row(&api.db.pool, id).await;
    assert_eq!(r.status, "failed");
    assert_eq!(
        r.failure_reason.unwrap(),
        format!("the row cannot be sent as stored: metadata {words}")
    );
    assert_eq!(api.smtp.message_count(), 0);
    let view: Value = api
        .get(&format!("/v1/emails/{id}"), &token)
        .await
        .json()
        .await
        .unwrap();
    assert!(
        view["metadata"].is_object(),
        "the document promises an object: {view}"
    );
}

#[tokio::test]
async fn a_template_row_with_content_of_its_own_is_refused_alike_by_the_api_and_in_a_row() {
    let api = Api::start().await;
    let token = api.token(&[Scope::Enqueue]).await;
    sync_templates(&api).await;
    let body = json!({"to": "maya@example.com", "template": "welcome", "subject": "Hi",
        "data": {"user": {"first_name": "Maya"}}, "type": "transactional"});
    let words = refusal(&api, &token, &body, "template").await;

    let template = "template_id = (SELECT template_id FROM email_templates WHERE name = 'welcome'),
                    template_data = '{\"user\": {\"first_name\": \"Maya\"}}'";
    let with_subject = sql_row(
        &api.db.pool,
        &format!("{template}, html_content = '', text_content = NULL"),
    )
    .await;
    // Subject and HTML of its own: sent as they are today, the template ignored.
    let with_html = sql_row(&api.db.pool, &format!("{template}, text_content = NULL")).await;
    // A service pinning the version itself (as docs/integrating.md shows) does not make its
    // own content the worker's render.
    let pinned_with_html = sql_row(
        &api.db.pool,
        &format!("{template}, text_content = NULL, metadata = '{{\"templateVersion\": 1}}'"),
    )
    .await;
    // A template row the worker rendered and must retry keeps its rendered content.
    let rendered_then_retried = sql_row(
        &api.db.pool,
        &format!("{template}, subject = '', html_content = '', text_content = NULL, to_email = 'retry@example.com'"),
    )
    .await;
    api.smtp.add_rule(
        Rule::reply(Command::Rcpt, 451, "4.3.0 try again later")
            .matching("retry@example.com")
            .once(),
    );
    api.drain().await;
    for (id, column) in [
        (with_subject, "subject"),
        (with_html, "html_content"),
        (pinned_with_html, "html_content"),
    ] {
        let r = row(&api.db.pool, id).await;
        assert_eq!(r.status, "failed", "{column}");
        let reason = r.failure_reason.unwrap();
        assert!(
            reason.starts_with("the row cannot be sent as stored: ")
                && reason.contains(&words)
                && reason.contains(column),
            "{column}: {reason} (API: {words})"
        );
    }
    let r = row(&api.db.pool, rendered_then_retried).await;
    assert_eq!((r.status.as_str(), r.current_retries), ("queued", Some(1)));
    make_all_due(&api.db.pool).await;
    api.drain().await;
    assert_eq!(
        row(&api.db.pool, rendered_then_retried).await.status,
        "sent"
    );
    assert_eq!(api.smtp.message_count(), 1);
}

#[tokio::test]
async fn a_row_with_neither_content_nor_template_says_so() {
    let api = Api::start().await;
    sync_templates(&api).await;
    // The template's name misspelled: the subquery gives a NULL template_id.
    let id = sql_row(
        &api.db.pool,
        "template_id = (SELECT template_id FROM email_templates WHERE name = 'welcom'),
         template_data = '{\"user\": {\"first_name\": \"Maya\"}}',
         subject = '', html_content = '', text_content = NULL",
    )
    .await;
    api.drain().await;
    let r = row(&api.db.pool, id).await;
    assert_eq!(r.status, "failed");
    let reason = r.failure_reason.unwrap();
    assert!(
        reason.contains("neither content nor a template")
            && reason.contains("template_id is NULL")
            && reason.contains("template_data is set"),
        "{reason}"
    );
}

#[tokio::test]
async fn a_row_without_from_name_is_sent_with_the_configured_name_as_api_rows_are() {
    let api = Api::start().await;
    let token = api.token(&[Scope::Enqueue]).await;
    let r = api
        .post_json("/v1/emails", &token, &email("api@example.com"))
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    sql_row(
        &api.db.pool,
        "from_email = 'noreply@adoptdontshop.com', from_name = NULL, to_email = 'sql@example.com'",
    )
    .await;
    api.drain().await;
    let msgs = api.smtp.messages();
    assert_eq!(msgs.len(), 2);
    let from = |to: &str| {
        msgs.iter()
            .find(|m| m.header("To").unwrap().contains(to))
            .unwrap()
            .header("From")
            .unwrap()
    };
    // `Adopt Don't Shop`, RFC 2047-encoded for its apostrophe.
    assert!(
        from("api@").ends_with(" <noreply@adoptdontshop.com>"),
        "{}",
        from("api@")
    );
    assert_eq!(from("sql@"), from("api@"));
}
