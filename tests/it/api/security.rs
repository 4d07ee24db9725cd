//! Defences of the internet-facing listener (docs/api.md "Security"): each test fails when its
//! defence is removed.

use adopt_worker::api::tokens::Scope;
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

const TRACKING: &str = "tracking-secret-0123456789";

async fn global_unsubscribe(api: &Api, user: Uuid) {
    sqlx::query(
        "INSERT INTO email_preferences (user_id, unsubscribe_token, global_unsubscribe)
         VALUES ($1, $2, true)",
    )
    .bind(user)
    .bind(format!("tok-{}", user.simple()))
    .execute(&api.db.pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn a_user_id_that_is_not_the_recipient_is_refused_by_the_api() {
    let api = Api::start().await;
    let token = api.token(&[Scope::Enqueue]).await;
    let victim = insert_user(&api.db.pool, "victim@example.com").await;
    let mut body = email("someone-else@example.com");
    body["type"] = json!("marketing");
    body["user_id"] = json!(victim);
    let (code, err) = error_code(api.post_json("/v1/emails", &token, &body).await, 422).await;
    assert_eq!(code, "validation_failed");
    let e = &err["error"]["details"]["errors"][0];
    assert_eq!(e["field"], "user_id", "{err}");
    assert!(
        e["message"].as_str().unwrap().contains("not the recipient"),
        "{err}"
    );

    // Deleted users are not recipients either; the owner, in any letter case, is.
    let deleted = insert_user(&api.db.pool, "gone@example.com").await;
    sqlx::query("UPDATE users SET deleted_at = now() WHERE user_id = $1")
        .bind(deleted)
        .execute(&api.db.pool)
        .await
        .unwrap();
    let mut body = email("gone@example.com");
    body["user_id"] = json!(deleted);
    let (_, err) = error_code(api.post_json("/v1/emails", &token, &body).await, 422).await;
    assert!(err.to_string().contains("deleted"), "{err}");
    let mut body = email("Victim@Example.com");
    body["user_id"] = json!(victim);
    let r = api.post_json("/v1/emails", &token, &body).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(api.queue_count().await, 1);
}

#[tokio::test]
async fn a_sql_row_with_a_borrowed_user_id_is_gated_by_its_address() {
    let api = Api::start().await;
    let unsubscribed = insert_user(&api.db.pool, "left@example.com").await;
    global_unsubscribe(&api, unsubscribed).await;
    let other = insert_user(&api.db.pool, "other@example.com").await;
    sqlx::query("INSERT INTO email_preferences (user_id, unsubscribe_token) VALUES ($1, 'other-token-0123456789')")
        .bind(other)
        .execute(&api.db.pool)
        .await
        .unwrap();

    // To an unsubscribed address, borrowing a subscribed user's id: still not sent.
    let mut e = NewEmail::to("left@example.com");
    e.email_type = "marketing";
    e.user_id = Some(other);
    let borrowed = e.insert(&api.db.pool).await;
    // To an address that is no user's: the named user's token must not be in the mail.
    let mut e = NewEmail::to("stranger@example.com");
    e.email_type = "marketing";
    e.user_id = Some(other);
    let stranger = e.insert(&api.db.pool).await;
    api.drain().await;

    assert_eq!(row(&api.db.pool, borrowed).await.status, "unsubscribed");
    assert_eq!(row(&api.db.pool, stranger).await.status, "sent");
    let msgs = api.smtp.messages();
    assert_eq!(msgs.len(), 1);
    let unsubscribe = msgs[0].header("List-Unsubscribe").unwrap_or_default();
    assert!(!unsubscribe.contains("other-token"), "{unsubscribe}");
    let other_prefs: Option<bool> =
        sqlx::query_scalar("SELECT global_unsubscribe FROM email_preferences WHERE user_id = $1")
            .bind(other)
            .fetch_one(&api.db.pool)
            .await
            .unwrap();
    assert_eq!(other_prefs, Some(false));
}

#[tokio::test]
async fn an_enqueue_from_a_foreign_domain_is_refused() {
    let api = Api::start().await;
    let token = api.token(&[Scope::Enqueue]).await;
    let mut body = email("maya@example.com");
    body["from"] = json!({"email": "security@bank.example", "name": "Your Bank"});
    let (_, err) = error_code(api.post_json("/v1/emails", &token, &body).await, 422).await;
    assert_eq!(
        err["error"]["details"]["errors"][0]["field"], "from",
        "{err}"
    );
    body["from"] = json!("rescues@AdoptDontShop.com");
    let r = api.post_json("/v1/emails", &token, &body).await;
    assert_eq!(
        r.status(),
        StatusCode::ACCEPTED,
        "the default sender's domain"
    );
    assert_eq!(api.queue_count().await, 1);

    let api = Api::start_with(&[(
        "ADOPT__API__ALLOWED_SENDER_DOMAINS",
        "adoptdontshop.com, *.shelters.example",
    )])
    .await;
    let token = api.token(&[Scope::Enqueue]).await;
    let mut body = email("maya@example.com");
    body["from"] = json!("news@happy-tails.shelters.example");
    let r = api.post_json("/v1/emails", &token, &body).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    body["from"] = json!("news@shelters.example.evil.example");
    error_code(api.post_json("/v1/emails", &token, &body).await, 422).await;
}

#[tokio::test]
async fn click_tracking_redirects_only_to_our_hosts_and_where_the_browser_would_go() {
    let api = Api::start_with(&[("ADOPT__TRACKING__SECRET", TRACKING)]).await;
    let mut e = NewEmail::to("maya@example.com");
    e.email_type = "marketing";
    e.html = r#"<p><a href="https://adoptdontshop.com/caf&eacute;?a=1&amp;b=2">ours</a>
<a href="https://evil.example/login">theirs</a>
<a href="https://adoptdontshop.com@evil.example/">userinfo</a></p>"#
        .into();
    let id = e.insert(&api.db.pool).await;
    api.drain().await;
    assert_eq!(row(&api.db.pool, id).await.status, "sent");
    let raw = api.smtp.messages()[0].data.clone();
    let parsed = mail_parser::MessageParser::default().parse(&raw).unwrap();
    let html = parsed.body_html(0).unwrap().into_owned();
    assert!(
        html.contains("https://evil.example/login"),
        "left as it is: {html}"
    );
    assert!(
        html.contains("https://adoptdontshop.com@evil.example/"),
        "{html}"
    );
    let start = html.find("/t/c/").expect("our link is tracked") + 5;
    let end = start
        + html[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
            .unwrap();
    let click_token = html[start..end].to_string();
    assert_eq!(html.matches("/t/c/").count(), 1, "{html}");
    let r = api
        .http
        .get(api.url(&format!("/t/c/{click_token}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    assert_eq!(
        r.headers()["location"],
        "https://adoptdontshop.com/caf%C3%A9?a=1&b=2"
    );
}

#[tokio::test]
async fn a_url_nested_in_template_data_must_be_http() {
    let api = super::templates::start(&[]).await;
    let token = api.token(&[Scope::Enqueue]).await;
    let body = json!({"to": "maya@example.com", "template": "reminder", "type": "notification",
        "data": {"user": {"first_name": "Maya"},
                 "reminder": {"title": "Hi", "body": "b", "action_url": "javascript:alert(1)"}}});
    let (_, err) = error_code(api.post_json("/v1/emails", &token, &body).await, 422).await;
    assert!(err.to_string().contains("reminder.action_url"), "{err}");
    assert_eq!(api.queue_count().await, 0);
}

#[tokio::test]
async fn public_routes_are_rate_limited_per_client_address() {
    let api = Api::start_with(&[("ADOPT__HTTP__PUBLIC_RATE_PER_MINUTE", "3")]).await;
    for _ in 0..3 {
        let r = api.http.get(api.url("/u/some-token")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    }
    let r = api.http.get(api.url("/t/o/anything")).send().await.unwrap();
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    assert_eq!(error_code(r, 429).await.0, "rate_limited");
    // Authenticated and operational routes are not counted.
    let r = api.http.get(api.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_test_send_limit_holds_across_processes() {
    let api = super::templates::start(&[("ADOPT__AUTH__TEST_SENDS_PER_MINUTE", "2")]).await;
    let second = Running::start_api_only(api.settings.clone()).await;
    let (_, admin) = api.admin().await;
    let send = |url: String| {
        let api = &api;
        let admin = admin.clone();
        async move {
            api.http
                .post(url)
                .bearer_auth(admin)
                .json(&json!({"to": "qa@example.com"}))
                .send()
                .await
                .unwrap()
        }
    };
    let path = "/v1/templates/welcome/test";
    assert_eq!(send(api.url(path)).await.status(), StatusCode::ACCEPTED);
    assert_eq!(send(second.url(path)).await.status(), StatusCode::ACCEPTED);
    let r = send(api.url(path)).await;
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(error_code(r, 429).await.0, "rate_limited");
    assert_eq!(
        error_code(send(second.url(path)).await, 429).await.0,
        "rate_limited"
    );
    second.stop().await;
}

/// Opens `n` connections that send half a request and then nothing.
fn slow_clients(addr: std::net::SocketAddr, n: usize, partial: &[u8]) -> Vec<std::net::TcpStream> {
    use std::io::Write;
    (0..n)
        .filter_map(|_| {
            let mut s =
                std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(2))
                    .ok()?;
            let _ = s.write_all(partial);
            Some(s)
        })
        .collect()
}

#[tokio::test]
async fn slow_clients_neither_starve_the_server_nor_hold_up_sigterm() {
    let db = TestDb::new().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let grace = std::time::Duration::from_secs(3);
    // Few file descriptors, as on a small container: without a connection cap, 200 half-sent
    // requests would take them all and accept() would fail.
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg("ulimit -n 160 && exec \"$0\" run --api-only")
        .arg(env!("CARGO_BIN_EXE_adopt-worker"))
        .env("DATABASE_URL", &db.url)
        .env("HTTP_ADDR", addr.to_string())
        .env("ADOPT__HTTP__MAX_CONNECTIONS", "64")
        .env("ADOPT__HTTP__HEADER_READ_TIMEOUT_SECS", "1")
        .env(
            "ADOPT__WORKER__SHUTDOWN_GRACE_SECS",
            grace.as_secs().to_string(),
        )
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // A new connection per request, as a mail reader fetching a pixel makes: a pooled one
    // would have been closed by the server's idle timeout while the slow clients connect.
    let http = Client::builder()
        .timeout(std::time::Duration::from_secs(15))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let healthz = format!("http://{addr}/healthz");
    let up = eventually(std::time::Duration::from_secs(30), || async {
        http.get(&healthz)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;
    assert!(up, "the server started");

    let held = slow_clients(addr, 200, b"GET /healthz HTTP/1.1\r\nHost: a\r\n");
    assert!(held.len() >= 150, "{} connections", held.len());
    let started = std::time::Instant::now();
    let r = http.get(&healthz).send().await.expect("/healthz answers");
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );

    // At SIGTERM: requests whose body never comes (served, waiting; only the end of the grace
    // period ends them) and fresh half-sent requests.
    drop(held);
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let mut held = slow_clients(
        addr,
        20,
        b"POST /u/token HTTP/1.1\r\nHost: a\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\nList-",
    );
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    held.extend(slow_clients(
        addr,
        150,
        b"GET /healthz HTTP/1.1\r\nHost: a\r\n",
    ));
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let signalled = std::time::Instant::now();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if signalled.elapsed() > grace * 4 {
            let _ = child.kill();
            panic!("still running {:?} after SIGTERM", signalled.elapsed());
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let took = signalled.elapsed();
    assert!(status.success(), "{status:?}");
    assert!(
        took < grace + std::time::Duration::from_millis(1500),
        "exited {took:?} after SIGTERM (grace {grace:?})"
    );
    drop(held);
}
