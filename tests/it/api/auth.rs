//! Every way a caller can fail to authenticate (401) or be refused (403).

use adopt_worker::api::tokens::{self, Scope};
use reqwest::StatusCode;
use uuid::Uuid;

use super::*;

/// A route that needs `read`: a made-up id is 404 once auth passes.
fn read_path() -> String {
    format!("/v1/emails/{}", Uuid::new_v4())
}

async fn status_of(api: &Api, auth: Option<&str>) -> reqwest::Response {
    let mut req = api.http.get(api.url(&read_path()));
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    req.send().await.unwrap()
}

async fn assert_401(r: reqwest::Response, code: &str) {
    let challenge = r.headers().get("www-authenticate").cloned();
    let (got, body) = error_code(r, 401).await;
    assert_eq!(got, code, "{body}");
    assert!(
        challenge.unwrap().to_str().unwrap().starts_with("Bearer"),
        "401 carries WWW-Authenticate: Bearer"
    );
}

#[tokio::test]
async fn service_token_failures_are_401_and_missing_scope_is_403() {
    let api = Api::start().await;
    assert_401(status_of(&api, None).await, "missing_credentials").await;
    assert_401(
        status_of(&api, Some("Basic dXNlcjpwYXNz")).await,
        "invalid_credentials",
    )
    .await;
    assert_401(status_of(&api, Some("Bearer")).await, "invalid_credentials").await;
    assert_401(
        status_of(&api, Some("Bearer adw_short")).await,
        "invalid_credentials",
    )
    .await;
    let unknown = format!("Bearer adw_{}", "A".repeat(43));
    assert_401(status_of(&api, Some(&unknown)).await, "invalid_credentials").await;

    let read = api.token(&[Scope::Read]).await;
    let r = status_of(&api, Some(&format!("Bearer {read}"))).await;
    assert_eq!(
        r.status(),
        StatusCode::NOT_FOUND,
        "valid token reaches the handler"
    );
    let last_used: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT last_used_at FROM api_tokens WHERE token_hash = $1")
            .bind(tokens::hash(&read).as_slice())
            .fetch_one(&api.db.pool)
            .await
            .unwrap();
    assert!(last_used.is_some(), "use is recorded");

    let enqueue_only = api.token(&[Scope::Enqueue]).await;
    let r = status_of(&api, Some(&format!("Bearer {enqueue_only}"))).await;
    let challenge = r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(error_code(r, 403).await.0, "insufficient_scope");
    assert!(challenge.contains("insufficient_scope"), "{challenge}");

    let r = api
        .post_json(&format!("{}/retry", read_path()), &read, &json!({}))
        .await;
    assert_eq!(
        error_code(r, 403).await.0,
        "insufficient_scope",
        "read is not admin"
    );

    sqlx::query("UPDATE api_tokens SET revoked_at = now() WHERE token_hash = $1")
        .bind(tokens::hash(&read).as_slice())
        .execute(&api.db.pool)
        .await
        .unwrap();
    let (code, body) =
        error_code(status_of(&api, Some(&format!("Bearer {read}"))).await, 401).await;
    assert_eq!(code, "invalid_credentials");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("revoked")
    );
}

#[tokio::test]
async fn admin_jwt_is_checked_against_the_users_table() {
    let api = Api::start().await;
    let (admin_id, good) = api.admin().await;
    let retry = format!("{}/retry", read_path());
    let r = api.post_json(&retry, &good, &json!({})).await;
    assert_eq!(
        r.status(),
        StatusCode::NOT_FOUND,
        "an active admin gets through"
    );
    let r = status_of(&api, Some(&format!("Bearer {good}"))).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "admins may read");
    let r = api
        .post_json("/v1/emails", &good, &email("a@example.com"))
        .await;
    assert_eq!(
        error_code(r, 403).await.0,
        "insufficient_scope",
        "enqueue is for services"
    );

    let bad_sig = jwt(
        &admin_id.to_string(),
        3600,
        "another-secret-another-secret-another",
    );
    assert_401(
        api.post_json(&retry, &bad_sig, &json!({})).await,
        "invalid_credentials",
    )
    .await;
    // Someone else's claims under this token's signature.
    let (other_admin, other) = api.admin().await;
    assert_ne!(other_admin, admin_id);
    let g: Vec<&str> = good.split('.').collect();
    let o: Vec<&str> = other.split('.').collect();
    let tampered = format!("{}.{}.{}", g[0], o[1], g[2]);
    assert_401(
        api.post_json(&retry, &tampered, &json!({})).await,
        "invalid_credentials",
    )
    .await;

    let expired = jwt(&admin_id.to_string(), -3600, JWT_SECRET);
    assert_401(
        api.post_json(&retry, &expired, &json!({})).await,
        "expired_credentials",
    )
    .await;

    let unknown = jwt(&Uuid::new_v4().to_string(), 3600, JWT_SECRET);
    assert_401(
        api.post_json(&retry, &unknown, &json!({})).await,
        "invalid_credentials",
    )
    .await;
    let not_a_uuid = jwt("admin", 3600, JWT_SECRET);
    assert_401(
        api.post_json(&retry, &not_a_uuid, &json!({})).await,
        "invalid_credentials",
    )
    .await;

    let adopter = insert_user(&api.db.pool, "adopter@example.com").await;
    let t = jwt(&adopter.to_string(), 3600, JWT_SECRET);
    let r = api.post_json(&retry, &t, &json!({})).await;
    assert_eq!(error_code(r, 403).await.0, "not_admin");

    let (suspended, t) = api.admin().await;
    sqlx::query("UPDATE users SET status = 'SUSPENDED' WHERE user_id = $1")
        .bind(suspended)
        .execute(&api.db.pool)
        .await
        .unwrap();
    let r = api.post_json(&retry, &t, &json!({})).await;
    assert_eq!(error_code(r, 403).await.0, "account_inactive");

    let (deleted, t) = api.admin().await;
    sqlx::query("UPDATE users SET deleted_at = now() WHERE user_id = $1")
        .bind(deleted)
        .execute(&api.db.pool)
        .await
        .unwrap();
    assert_401(
        api.post_json(&retry, &t, &json!({})).await,
        "invalid_credentials",
    )
    .await;
}

#[tokio::test]
async fn jwt_auth_is_off_without_a_secret() {
    let api = Api::start_with(&[("ADOPT__AUTH__JWT_SECRET", "")]).await;
    let (_, t) = api.admin().await;
    assert_401(
        status_of(&api, Some(&format!("Bearer {t}"))).await,
        "invalid_credentials",
    )
    .await;
}

#[tokio::test]
async fn a_jwt_with_another_algorithm_is_refused() {
    let api = Api::start().await;
    let (admin_id, _) = api.admin().await;
    let now = chrono::Utc::now().timestamp();
    let claims = json!({"sub": admin_id.to_string(), "exp": now + 3600});
    let hs512 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS512),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap();
    assert_401(
        status_of(&api, Some(&format!("Bearer {hs512}"))).await,
        "invalid_credentials",
    )
    .await;
    use base64::Engine;
    let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let none = format!(
        "{}.{}.",
        b64(json!({"alg": "none", "typ": "JWT"})),
        b64(claims)
    );
    assert_401(
        status_of(&api, Some(&format!("Bearer {none}"))).await,
        "invalid_credentials",
    )
    .await;
}

/// An HS256 JWT with exactly these claims.
fn signed(claims: &Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn configured_jwt_claims_are_required_and_lifetime_is_bounded() {
    let api = Api::start_with(&[
        ("ADOPT__AUTH__JWT_ISSUER", "https://auth.adoptdontshop.com"),
        ("ADOPT__AUTH__JWT_AUDIENCE", "adopt-worker"),
        ("ADOPT__AUTH__JWT_MAX_LIFETIME_SECS", "3600"),
    ])
    .await;
    let (admin_id, _) = api.admin().await;
    let sub = admin_id.to_string();
    let now = chrono::Utc::now().timestamp();
    let (iss, aud) = ("https://auth.adoptdontshop.com", "adopt-worker");
    let call = |t: String| {
        let api = &api;
        async move { status_of(api, Some(&format!("Bearer {t}"))).await }
    };

    let good = signed(&json!({"sub": sub, "iss": iss, "aud": aud, "iat": now, "exp": now + 600}));
    assert_eq!(call(good).await.status(), StatusCode::NOT_FOUND, "accepted");

    let no_iss = signed(&json!({"sub": sub, "aud": aud, "iat": now, "exp": now + 600}));
    let (_, body) = error_code(call(no_iss).await, 401).await;
    assert!(body.to_string().contains("iss"), "{body}");
    let no_aud = signed(&json!({"sub": sub, "iss": iss, "iat": now, "exp": now + 600}));
    let (_, body) = error_code(call(no_aud).await, 401).await;
    assert!(body.to_string().contains("aud"), "{body}");
    let wrong_iss = signed(&json!({"sub": sub, "iss": "x", "aud": aud, "exp": now + 600}));
    assert_401(call(wrong_iss).await, "invalid_credentials").await;

    let not_yet = signed(
        &json!({"sub": sub, "iss": iss, "aud": aud, "iat": now, "nbf": now + 300, "exp": now + 900}),
    );
    let (_, body) = error_code(call(not_yet).await, 401).await;
    assert!(body.to_string().contains("nbf"), "{body}");

    // Lifetime from iat, and from now when there is no iat.
    let long = signed(&json!({"sub": sub, "iss": iss, "aud": aud, "iat": now, "exp": now + 7200}));
    let (_, body) = error_code(call(long).await, 401).await;
    assert!(body.to_string().contains("jwt_max_lifetime_secs"), "{body}");
    let long_no_iat = signed(&json!({"sub": sub, "iss": iss, "aud": aud, "exp": now + 7200}));
    assert_401(call(long_no_iat).await, "invalid_credentials").await;
    let ok_no_iat = signed(&json!({"sub": sub, "iss": iss, "aud": aud, "exp": now + 3000}));
    assert_eq!(call(ok_no_iat).await.status(), StatusCode::NOT_FOUND);
    // An old iat with a far exp is long-lived however little of it is left.
    let backdated = signed(
        &json!({"sub": sub, "iss": iss, "aud": aud, "iat": now - 86_400 * 30, "exp": now + 600}),
    );
    assert_401(call(backdated).await, "invalid_credentials").await;
}

#[tokio::test]
async fn default_jwt_lifetime_limit_is_a_day() {
    let api = Api::start().await;
    let (admin_id, _) = api.admin().await;
    let now = chrono::Utc::now().timestamp();
    let year = signed(&json!({"sub": admin_id.to_string(), "iat": now, "exp": now + 365 * 86_400}));
    assert_401(
        status_of(&api, Some(&format!("Bearer {year}"))).await,
        "invalid_credentials",
    )
    .await;
    let day = signed(&json!({"sub": admin_id.to_string(), "iat": now, "exp": now + 86_000}));
    let r = status_of(&api, Some(&format!("Bearer {day}"))).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}
