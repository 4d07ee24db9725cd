//! `/u/{token}`: the page, RFC 8058 one-click as Gmail sends it, per-category links, and
//! links that are not valid.

use adopt_worker::api::tokens::Scope;
use adopt_worker::preferences;
use reqwest::StatusCode;

use super::*;

const ONE_CLICK: &str = "List-Unsubscribe=One-Click";

async fn prefs(api: &Api, user: Uuid) -> (Option<bool>, Value) {
    sqlx::query_as(
        "SELECT global_unsubscribe, preferences FROM email_preferences WHERE user_id = $1",
    )
    .bind(user)
    .fetch_one(&api.db.pool)
    .await
    .unwrap()
}

async fn one_click(api: &Api, path: &str) -> reqwest::Response {
    // What Gmail sends: a form-encoded POST with exactly this body, no cookies, no auth.
    api.http
        .post(api.url(path))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(ONE_CLICK)
        .send()
        .await
        .unwrap()
}

async fn enqueue(api: &Api, token: &str, user: Uuid, kind: &str) -> Uuid {
    let mut body = email("maya@example.com");
    body["type"] = json!(kind);
    body["user_id"] = json!(user);
    let r = api.post_json("/v1/emails", token, &body).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn gmail_one_click_unsubscribes_and_the_next_marketing_email_is_not_sent() {
    let api = Api::start().await;
    let token = api.token(&[Scope::Enqueue]).await;
    let user = insert_user(&api.db.pool, "maya@example.com").await;

    // The first marketing email carries the List-Unsubscribe link the mail client will use.
    let first = enqueue(&api, &token, user, "marketing").await;
    api.drain().await;
    assert_eq!(row(&api.db.pool, first).await.status, "sent");
    let msg = &api.smtp.messages()[0];
    assert_eq!(msg.header("List-Unsubscribe-Post").unwrap(), ONE_CLICK);
    let link = msg.header("List-Unsubscribe").unwrap();
    let url = link.trim_matches(|c| c == '<' || c == '>');
    let path = &url[url.find("/u/").unwrap()..];

    let r = one_click(&api, path).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.text().await.unwrap().contains("You are unsubscribed"));

    let second = enqueue(&api, &token, user, "marketing").await;
    let receipt = enqueue(&api, &token, user, "transactional").await;
    api.drain().await;
    let r = row(&api.db.pool, second).await;
    assert_eq!(r.status, "unsubscribed", "{:?}", r.failure_reason);
    assert_eq!(
        row(&api.db.pool, receipt).await.status,
        "sent",
        "transactional still goes"
    );
    assert_eq!(
        api.smtp.message_count(),
        2,
        "no SMTP traffic for the unsubscribed email"
    );
}

#[tokio::test]
async fn the_page_explains_and_its_button_unsubscribes() {
    let api = Api::start().await;
    let user = insert_user(&api.db.pool, "maya@example.com").await;
    let t = preferences::ensure_unsubscribe_token(&api.db.pool, user)
        .await
        .unwrap();

    let r = api
        .http
        .get(api.url(&format!("/u/{t}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert_eq!(r.headers()["cache-control"], "no-store");
    let html = r.text().await.unwrap();
    assert!(html.contains("m***@example.com"), "{html}");
    assert!(!html.contains("maya@example.com"), "the address is masked");
    assert!(
        html.contains("<form method=\"post\">")
            && html.contains(r#"name="List-Unsubscribe" value="One-Click""#)
    );
    assert_eq!(
        prefs(&api, user).await.0,
        Some(false),
        "GET changes nothing"
    );

    // The button posts the form's hidden field.
    let r = api
        .http
        .post(api.url(&format!("/u/{t}")))
        .form(&[("List-Unsubscribe", "One-Click")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(prefs(&api, user).await.0, Some(true));
    let html = api
        .http
        .get(api.url(&format!("/u/{t}")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("already unsubscribed"), "{html}");
}

#[tokio::test]
async fn a_category_link_turns_off_only_that_category() {
    let api = Api::start().await;
    let token = api.token(&[Scope::Enqueue]).await;
    let user = insert_user(&api.db.pool, "maya@example.com").await;
    let t = preferences::ensure_unsubscribe_token(&api.db.pool, user)
        .await
        .unwrap();
    sqlx::query(
        r#"UPDATE email_preferences SET digest_frequency = 'immediate', preferences =
             '[{"type": "messages", "enabled": true, "frequency": "immediate", "channels": ["email", "push"]}]'
           WHERE user_id = $1"#,
    )
    .bind(user)
    .execute(&api.db.pool)
    .await
    .unwrap();

    let r = one_click(&api, &format!("/u/{t}?category=marketing")).await;
    assert_eq!(r.status(), StatusCode::OK);
    let (global, list) = prefs(&api, user).await;
    assert_eq!(global, Some(false), "not a global unsubscribe");
    assert_eq!(
        list,
        json!([
            {"type": "messages", "enabled": true, "frequency": "immediate", "channels": ["email", "push"]},
            {"type": "marketing", "enabled": false, "frequency": "never", "channels": ["email"]}
        ])
    );
    let r = one_click(&api, &format!("/u/{t}?category=messages")).await;
    assert_eq!(r.status(), StatusCode::OK);
    let (_, list) = prefs(&api, user).await;
    assert_eq!(
        list[0],
        json!({"type": "messages", "enabled": false, "frequency": "immediate", "channels": ["email", "push"]}),
        "an existing entry keeps its other fields"
    );
    assert_eq!(list.as_array().unwrap().len(), 2, "no duplicate entries");

    let marketing = enqueue(&api, &token, user, "marketing").await;
    api.drain().await;
    assert_eq!(row(&api.db.pool, marketing).await.status, "unsubscribed");
    assert_eq!(api.smtp.message_count(), 0);
}

#[tokio::test]
async fn invalid_links_get_one_404_page_and_change_nothing() {
    let api = Api::start().await;
    let user = insert_user(&api.db.pool, "maya@example.com").await;
    let t = preferences::ensure_unsubscribe_token(&api.db.pool, user)
        .await
        .unwrap();
    let before = prefs(&api, user).await;

    let mut altered = t.clone();
    altered.replace_range(0..1, if t.starts_with('A') { "B" } else { "A" });
    let mut pages = Vec::new();
    for path in [
        "/u/not-a-token".to_string(),
        format!("/u/{altered}"),
        format!("/u/{t}?category=no%20such%3Bthing"),
        format!("/u/{}", "x".repeat(300)),
    ] {
        let r = api.http.get(api.url(&path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
        pages.push(r.text().await.unwrap());
        let r = one_click(&api, &path).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
        pages.push(r.text().await.unwrap());
    }
    assert!(
        pages.windows(2).all(|w| w[0] == w[1]),
        "one page whatever the reason"
    );
    assert!(!pages[0].contains("example.com"));

    let r = api
        .http
        .post(api.url(&format!("/u/{t}")))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=Yes-Please")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(prefs(&api, user).await, before, "no row changed");
}
