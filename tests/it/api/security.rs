//! Defences of the internet-facing listener (README "Security"): each test fails when its
//! defence is removed.

use reqwest::StatusCode;

use super::*;

const ONE_CLICK: &str = "List-Unsubscribe=One-Click";

#[tokio::test]
async fn an_invalid_unsubscribe_link_writes_nothing() {
    let api = Api::start().await;
    // A platform user whose token is the empty string: any write with '' would hit them.
    let user = insert_user(&api.db.pool, "maya@example.com").await;
    sqlx::query(
        "INSERT INTO email_preferences (user_id, unsubscribe_token, updated_at)
         VALUES ($1, '', '2026-01-01 00:00:00')",
    )
    .bind(user)
    .execute(&api.db.pool)
    .await
    .unwrap();
    let too_long = "a".repeat(300);
    for path in [
        format!("/u/{too_long}"),
        format!("/u/{too_long}?category=newsletter"),
        "/u/sometoken?category=not%20valid".to_string(),
        "/u/%00".to_string(),
    ] {
        let r = api
            .http
            .post(api.url(&path))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(ONE_CLICK)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
    }
    let (global, prefs, updated): (Option<bool>, Value, chrono::NaiveDateTime) = sqlx::query_as(
        "SELECT global_unsubscribe, preferences, updated_at FROM email_preferences WHERE user_id = $1",
    )
    .bind(user)
    .fetch_one(&api.db.pool)
    .await
    .unwrap();
    assert_eq!(global, Some(false), "not unsubscribed");
    assert!(!prefs.to_string().contains("newsletter"), "{prefs}");
    assert_eq!(
        updated.to_string(),
        "2026-01-01 00:00:00",
        "the row was not written at all"
    );
}

#[tokio::test]
async fn html_responses_are_nosniff_no_referrer_and_the_preview_is_sandboxed() {
    let api = super::templates::start(&[]).await;
    let (_, admin) = api.admin().await;
    let r = api.get("/v1/templates/welcome/preview", &admin).await;
    assert_eq!(r.status(), StatusCode::OK);
    let csp = r.headers()["content-security-policy"].to_str().unwrap();
    for directive in [
        "sandbox",
        "form-action 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
        "default-src 'none'",
    ] {
        assert!(csp.contains(directive), "{directive} in {csp}");
    }
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    assert_eq!(r.headers()["referrer-policy"], "no-referrer");

    // The unsubscribe page (404 for an unknown token: still HTML) keeps its own form.
    let r = api.http.get(api.url("/u/unknown")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let csp = r.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("form-action 'self'"), "{csp}");
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    assert_eq!(r.headers()["referrer-policy"], "no-referrer");

    // The click page for a bad token, and JSON answers too.
    let r = api.http.get(api.url("/t/c/nope")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    assert_eq!(r.headers()["referrer-policy"], "no-referrer");
    let r = api.http.get(api.url("/healthz")).send().await.unwrap();
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
}
