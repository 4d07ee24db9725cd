//! Operating it: `/metrics` through promtool, `/readyz`, the queue sampler, the Grafana
//! dashboard, the alert rules, the operator docs and the logs, checked against the code.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use adopt_worker::api::{self, ApiState};
use adopt_worker::metrics::{self, CATALOGUE, Kind};
use adopt_worker::startup::Parts;
use tokio::sync::{oneshot, watch};

use crate::helpers::*;

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// `promtool` when installed (`scripts/install-deps --promtool`), else `None` with a note.
fn promtool() -> Option<&'static str> {
    let found = std::process::Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!(
            "SKIPPED promtool checks: promtool is not installed (scripts/install-deps --promtool installs it; scripts/test does)"
        );
    }
    found.then_some("promtool")
}

/// Runs `promtool <args>` with `stdin`, failing the test with its output on a complaint.
fn promtool_check(args: &[&str], stdin: &str) {
    let Some(bin) = promtool() else { return };
    let mut child = std::process::Command::new(bin)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{said}");
    // `check metrics` prints lint problems but may still exit 0 for some of them.
    assert!(
        !said.contains(" should ") && !said.contains("error"),
        "promtool {args:?} complained:\n{said}"
    );
}

/// Every `adopt_worker_...` name in `text`.
fn metric_names_in(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("adopt_worker_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

/// Names in `used` that no catalogued metric exports.
fn unexported(used: &BTreeSet<String>) -> Vec<String> {
    used.difference(&exported_names()).cloned().collect()
}

/// Names a query may use: the catalogue, plus `_bucket/_sum/_count` of its histograms.
fn exported_names() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for def in CATALOGUE {
        names.insert(def.name.to_string());
        if def.kind == Kind::Histogram {
            for suffix in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{}{suffix}", def.name));
            }
        }
    }
    names
}

/// The value of the sample line `series` (name with its labels, as rendered), if present.
fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

struct Running {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn start(db: &TestDb, smtp: &TestSmtp, parts: Parts) -> Running {
        let settings = settings(
            db,
            Some(&smtp.url()),
            None,
            &[("ADOPT__METRICS__SAMPLE_INTERVAL_SECS", "1")],
        );
        let app = app(settings);
        let listener = app.bind().await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            app.run_until_stopped(Some(listener), parts, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        Running {
            addr,
            stop: Some(stop),
            task,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Sends the shutdown signal without waiting for the app to stop.
    fn signal_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    async fn stop(mut self) {
        self.signal_stop();
        tokio::time::timeout(Duration::from_secs(20), &mut self.task)
            .await
            .expect("app stops within 20 s")
            .unwrap();
    }
}

async fn wait_until_nothing_is_due(db: &TestDb) {
    for _ in 0..200 {
        let counts = status_counts(&db.pool).await;
        if !counts.contains_key("sending") && !counts.contains_key("queued") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("queue did not settle: {:?}", status_counts(&db.pool).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_passes_promtool_and_exports_the_whole_catalogue() {
    let db = TestDb::new().await;
    let smtp = TestSmtp::start().await;
    smtp.add_rule(Rule::reply(Command::Rcpt, 550, "5.1.1 user unknown").matching("nobody@"));
    for to in [
        "maya@example.com",
        "sam@example.com",
        "nobody@example.com",
        "not an address",
    ] {
        NewEmail::to(to).insert(&db.pool).await;
    }
    let app = Running::start(&db, &smtp, Parts::default()).await;
    wait_until_nothing_is_due(&db).await;

    let http = reqwest::Client::new();
    let health = http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let missing = http.get(app.url("/no/such/route")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    let ready = http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["status"], "ready", "{body}");

    // The sampler runs every second; wait for one sample after the queue settled.
    let mut text = String::new();
    for _ in 0..50 {
        let resp = http.get(app.url("/metrics")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let content_type = resp.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(content_type.starts_with("text/plain"), "{content_type}");
        text = resp.text().await.unwrap();
        if sample(
            &text,
            r#"adopt_worker_queue_depth{state="due",priority="normal"}"#,
        )
        .is_some()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.stop().await;

    promtool_check(&["check", "metrics"], &text);
    for def in CATALOGUE {
        assert!(
            text.contains(&format!("# TYPE {} {}", def.name, def.kind.as_str())),
            "{} missing from /metrics",
            def.name
        );
    }
    let at_least_one = |series: &str| {
        let v = sample(&text, series).unwrap_or_else(|| panic!("no {series} in\n{text}"));
        assert!(v >= 1.0, "{series} = {v}");
    };
    at_least_one(r#"adopt_worker_http_requests_total{route="/healthz",method="GET",status="200"}"#);
    at_least_one(
        r#"adopt_worker_http_requests_total{route="unmatched",method="GET",status="404"}"#,
    );
    at_least_one(
        r#"adopt_worker_http_request_duration_seconds_count{route="/readyz",method="GET"}"#,
    );
    at_least_one(r#"adopt_worker_job_runs_total{task="reclaim",outcome="succeeded"}"#);
    at_least_one(r#"adopt_worker_build_info{version="0.1.0"}"#);
    assert_eq!(
        sample(&text, "adopt_worker_smtp_pool_max_connections"),
        Some(8.0)
    );
    assert_eq!(
        sample(&text, "adopt_worker_db_pool_max_connections"),
        Some(10.0)
    );
    let counts = status_counts(&db.pool).await;
    let expected = [("bounced", 1), ("failed", 1), ("sent", 2)];
    assert_eq!(
        counts,
        expected.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        "{counts:?}"
    );
}

#[tokio::test]
async fn queue_sample_counts_due_scheduled_and_sending_rows_by_priority() {
    let db = TestDb::new().await;
    let old = NewEmail::to("a@example.com").insert(&db.pool).await;
    NewEmail::to("b@example.com").insert(&db.pool).await;
    let mut urgent = NewEmail::to("c@example.com");
    urgent.priority = "urgent";
    let later = urgent.insert(&db.pool).await;
    let mut high = NewEmail::to("d@example.com");
    high.priority = "high";
    let sending = high.insert(&db.pool).await;
    let done = NewEmail::to("e@example.com").insert(&db.pool).await;
    sqlx::query("UPDATE email_queue SET created_at = created_at - interval '90 seconds' WHERE email_id = $1")
        .bind(old).execute(&db.pool).await.unwrap();
    sqlx::query(
        "UPDATE email_queue SET scheduled_for = now() + interval '1 hour' WHERE email_id = $1",
    )
    .bind(later)
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query(
        "UPDATE email_queue SET status = 'sending', last_attempt_at = now() WHERE email_id = $1",
    )
    .bind(sending)
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query("UPDATE email_queue SET status = 'sent', sent_at = now() WHERE email_id = $1")
        .bind(done)
        .execute(&db.pool)
        .await
        .unwrap();

    let rows = metrics::sample_queue(&db.pool).await.unwrap();
    let by = |p: &str| {
        rows.iter()
            .find(|r| r.priority.as_str() == p)
            .unwrap_or_else(|| panic!("no {p} in {rows:?}"))
    };
    assert_eq!(rows.len(), 4, "every priority is reported, even empty ones");
    let normal = by("normal");
    assert_eq!((normal.due, normal.scheduled, normal.sending), (2, 0, 0));
    assert!(
        (89.0..200.0).contains(&normal.oldest_due_age_secs),
        "{normal:?}"
    );
    let urgent = by("urgent");
    assert_eq!(
        (urgent.due, urgent.scheduled, urgent.oldest_due_age_secs),
        (0, 1, 0.0)
    );
    assert_eq!(by("high").sending, 1);
    assert_eq!(by("low").due, 0);
}

#[tokio::test]
async fn queue_sample_reads_queued_rows_through_the_claim_index() {
    let db = TestDb::new().await;
    let mut tx = db.pool.begin().await.unwrap();
    // On an empty table any plan is cheapest; forbid sequential scans to see which index
    // the statement can use. A changed COALESCE would no longer match the claim index.
    sqlx::query("SET LOCAL enable_seqscan = off")
        .execute(&mut *tx)
        .await
        .unwrap();
    let plan: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "EXPLAIN {}",
        metrics::QUEUE_SAMPLE_SQL
    )))
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    let plan = plan.join("\n");
    assert!(plan.contains("idx_email_queue_claim"), "{plan}");
    assert!(plan.contains("idx_email_queue_sending"), "{plan}");
    assert!(!plan.contains("Seq Scan on email_queue"), "{plan}");
}

#[tokio::test]
async fn readyz_names_the_check_that_failed() {
    let db = TestDb::new().await;
    let smtp = TestSmtp::start().await;
    let app = Running::start(
        &db,
        &smtp,
        Parts {
            workers: false,
            api: true,
        },
    )
    .await;
    let http = reqwest::Client::new();
    let ready = http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);

    sqlx::query(
        "DELETE FROM _sqlx_migrations WHERE version = (SELECT max(version) FROM _sqlx_migrations)",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let behind = http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(behind.status(), 503);
    let body: serde_json::Value = behind.json().await.unwrap();
    assert_eq!(body["failed"], serde_json::json!(["migrations"]), "{body}");
    assert_eq!(body["checks"]["migrations"], "pending");
    // A database that was never migrated has nothing applied: pending, not unknown.
    sqlx::query("DROP TABLE _sqlx_migrations")
        .execute(&db.pool)
        .await
        .unwrap();
    let never: serde_json::Value = http
        .get(app.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(never["checks"]["migrations"], "pending", "{never}");
    app.stop().await;

    // A process that is shutting down, and a database that is gone.
    let (_tx, stop) = watch::channel(true);
    let unreachable = db_pool_to_nowhere();
    let state = ApiState::new(
        &settings(&db, None, None, &[]),
        unreachable,
        stop,
        metrics::install().unwrap(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        axum::serve(listener, api::router(state)).await.unwrap();
    });
    let asked = std::time::Instant::now();
    let resp = http
        .get(format!("http://{addr}/readyz"))
        .send()
        .await
        .unwrap();
    assert!(
        asked.elapsed() < Duration::from_millis(2500),
        "a database that refuses connections is reported at once, not after the pool's timeout: {:?}",
        asked.elapsed()
    );
    assert_eq!(resp.status(), 503);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(
        body["failed"],
        serde_json::json!(["database", "migrations", "shutdown"]),
        "{body}"
    );
    assert_eq!(body["checks"]["database"], "unreachable");
    assert_eq!(body["checks"]["shutdown"], "shutting_down");
    server.abort();
}

#[tokio::test]
async fn http_metrics_label_requests_with_the_route_template_not_the_path() {
    let handle = metrics::install().unwrap();
    let router = axum::Router::new()
        .route(
            "/v1/emails/{id}",
            axum::routing::get(|| async { "an email" }),
        )
        .layer(axum::middleware::from_fn(metrics::track_http));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let http = reqwest::Client::new();
    for id in ["0b5e", "7f31", "c2aa"] {
        let resp = http
            .get(format!("http://{addr}/v1/emails/{id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let resp = http
        .request(
            reqwest::Method::from_bytes(b"BREW").unwrap(),
            format!("http://{addr}/v1/emails/1"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    server.abort();
    let text = handle.render();
    let count = sample(
        &text,
        r#"adopt_worker_http_requests_total{route="/v1/emails/{id}",method="GET",status="200"}"#,
    );
    assert!(count.is_some_and(|n| n >= 3.0), "{count:?}");
    assert!(
        !text.contains("/v1/emails/0b5e"),
        "a concrete path became a label"
    );
    assert!(!text.contains("BREW"), "an unknown method became a label");
    assert!(text.contains(r#"method="other",status="405""#));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_sends_drain_at_shutdown_readyz_says_shutting_down_and_metrics_still_answer() {
    let db = TestDb::new().await;
    let smtp = TestSmtp::start().await;
    smtp.add_rule(Rule::delay(Command::DataEnd, Duration::from_secs(2)));
    let id = NewEmail::to("maya@example.com").insert(&db.pool).await;
    let mut app = Running::start(&db, &smtp, Parts::default()).await;
    smtp.wait_for_commands(Command::Data, 1, Duration::from_secs(10))
        .await;

    app.signal_stop();
    let http = reqwest::Client::new();
    let mut ready = http.get(app.url("/readyz")).send().await.unwrap();
    for _ in 0..50 {
        if ready.status() != 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        ready = http.get(app.url("/readyz")).send().await.unwrap();
    }
    assert_eq!(ready.status(), 503);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["failed"], serde_json::json!(["shutdown"]), "{body}");
    let scrape = http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(scrape.status(), 200);

    app.stop().await;
    assert_eq!(row(&db.pool, id).await.status, "sent");
}

/// A pool whose database refuses connections, with the default acquire timeout (10 s, longer
/// than a readiness probe waits).
fn db_pool_to_nowhere() -> sqlx::PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(Duration::from_secs(10))
        .connect_lazy("postgres://postgres@127.0.0.1:1/nowhere")
        .unwrap()
}

#[test]
fn alert_rules_pass_promtool_and_use_only_exported_metrics() {
    let path = repo_file("deploy/prometheus/alerts.yml");
    let rules = std::fs::read_to_string(&path).unwrap();
    let used = metric_names_in(&rules);
    assert!(used.len() >= 8, "alerts use few metrics: {used:?}");
    let unknown = unexported(&used);
    assert!(
        unknown.is_empty(),
        "alerts.yml uses unexported metrics: {unknown:?}"
    );
    if promtool().is_some() {
        // The example Prometheus configuration loads these rules, so checking it checks both.
        let config = repo_file("deploy/prometheus/prometheus.yml");
        for (what, file) in [("rules", &path), ("config", &config)] {
            let out = std::process::Command::new("promtool")
                .args(["check", what])
                .arg(file)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

fn collect_exprs(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr" | "query" | "definition", serde_json::Value::String(s)) => {
                        out.push(s.clone())
                    }
                    _ => collect_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

#[test]
fn grafana_dashboard_uses_only_exported_metrics() {
    let text = std::fs::read_to_string(repo_file("deploy/grafana/adopt-worker.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut exprs = Vec::new();
    collect_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() >= 10, "dashboard has few queries: {exprs:?}");
    let used: BTreeSet<String> = exprs.iter().flat_map(|e| metric_names_in(e)).collect();
    let unknown = unexported(&used);
    assert!(
        unknown.is_empty(),
        "dashboard uses unexported metrics: {unknown:?}"
    );
    // Nothing outside a query names a metric either (a typo in a link or a description).
    let anywhere = metric_names_in(&text);
    let unknown = unexported(&anywhere);
    assert!(
        unknown.is_empty(),
        "dashboard mentions unexported metrics: {unknown:?}"
    );
    // The datasource is a variable, so the dashboard imports into any Grafana.
    let vars = dashboard["templating"]["list"].as_array().unwrap();
    assert!(vars.iter().any(|v| v["type"] == "datasource"), "{vars:?}");
    let mut uids = Vec::new();
    collect_datasource_uids(&dashboard, &mut uids);
    assert!(!uids.is_empty());
    assert!(uids.iter().all(|u| u == "${datasource}"), "{uids:?}");

    // Every panel query parses as PromQL: promtool checks them as recording rules.
    // (Variables use Grafana's label_values(), which is not PromQL.)
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, e) in exprs
        .iter()
        .filter(|e| e.contains('(') && !e.starts_with("label_values("))
        .enumerate()
    {
        let promql = e
            .replace("$__rate_interval", "5m")
            .replace("$instance", ".*");
        rules.push_str(&format!(
            "      - record: dashboard:query{i}\n        expr: {}\n",
            serde_json::to_string(&promql).unwrap()
        ));
    }
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), rules).unwrap();
    promtool_check(&["check", "rules", &file.path().display().to_string()], "");
}

fn collect_datasource_uids(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            if let Some(uid) = map.get("datasource").and_then(|d| d["uid"].as_str()) {
                out.push(uid.to_string());
            }
            map.values().for_each(|v| collect_datasource_uids(v, out));
        }
        serde_json::Value::Array(items) => {
            items.iter().for_each(|v| collect_datasource_uids(v, out))
        }
        _ => {}
    }
}

/// `section.key` for every key of config/default.toml.
fn default_config_keys() -> BTreeSet<String> {
    let text = std::fs::read_to_string(repo_file("config/default.toml")).unwrap();
    let mut section = String::new();
    let mut keys = BTreeSet::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
        } else if let Some((key, _)) = line.split_once('=') {
            keys.insert(format!("{section}.{}", key.trim()));
        }
    }
    keys
}

#[test]
fn operations_doc_documents_every_config_key_and_only_those() {
    let doc = std::fs::read_to_string(repo_file("docs/operations.md")).unwrap();
    let reference = doc
        .split("<!-- config-reference:start -->")
        .nth(1)
        .and_then(|rest| rest.split("<!-- config-reference:end -->").next())
        .expect("docs/operations.md has the config-reference markers");
    let documented: BTreeSet<String> = reference
        .lines()
        .filter_map(|l| {
            l.strip_prefix("| `")?
                .split_once('`')
                .map(|(k, _)| k.to_string())
        })
        .collect();
    let keys = default_config_keys();
    assert!(keys.len() > 20, "{keys:?}");
    let undocumented: Vec<_> = keys.difference(&documented).collect();
    let stale: Vec<_> = documented.difference(&keys).collect();
    assert!(
        undocumented.is_empty() && stale.is_empty(),
        "config keys missing from docs/operations.md: {undocumented:?}; documented but not in config/default.toml: {stale:?}"
    );
    for def in CATALOGUE {
        assert!(
            doc.contains(&format!("`{}`", def.name)),
            "{} is not described in docs/operations.md",
            def.name
        );
    }
    // Env var names in the table follow the ADOPT__SECTION__KEY rule.
    for key in &keys {
        let (section, name) = key.split_once('.').unwrap();
        let env = format!("ADOPT__{}__{}", section.to_uppercase(), name.to_uppercase());
        assert!(reference.contains(&env), "{env} missing for {key}");
    }
}

#[tokio::test]
async fn logs_never_show_smtp_or_database_passwords() {
    const DB_SECRET: &str = "Db-s3cret-pw";
    const SMTP_SECRET: &str = "Smtp-s3cret-pw";
    let db = TestDb::new().await;
    let smtp = TestSmtp::start().await;
    let bad = NewEmail::to("not an address").insert(&db.pool).await;
    NewEmail::to("maya@example.com").insert(&db.pool).await;
    let mut db_url = url::Url::parse(&db.url).unwrap();
    db_url.set_password(Some(DB_SECRET)).unwrap();
    let smtp_url = format!("smtp://mailer:{SMTP_SECRET}@{}", smtp.addr());

    for format in ["human", "json"] {
        sqlx::query(
            "UPDATE email_queue SET status = 'queued', scheduled_for = NULL, current_retries = 0",
        )
        .execute(&db.pool)
        .await
        .unwrap();
        let out = bin()
            .arg("drain")
            .env("DATABASE_URL", db_url.as_str())
            .env("SMTP_URL", &smtp_url)
            .env("RUST_LOG", "debug")
            .env("ADOPT__LOG__FORMAT", format)
            .env("ADOPT__SMTP__TIMEOUT_SECS", "1")
            .env("ADOPT__WORKER__LEASE_SECS", "30")
            .output()
            .unwrap();
        let logs = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{logs}");
        assert!(logs.contains("drain: processed=2"), "{logs}");
        // The span of each delivery names its email (span coverage, at debug level).
        assert!(
            logs.contains(&bad.to_string()),
            "no span names {bad}:\n{logs}"
        );
        for secret in [DB_SECRET, SMTP_SECRET] {
            assert!(
                !logs.contains(secret),
                "{format} logs show a password:\n{logs}"
            );
        }
        // AUTH PLAIN would carry base64("\0mailer\0<password>").
        assert!(!logs.contains("AUTH"), "{logs}");
    }
}

/// A Prometheus tool (`promtool`, `prometheus`) or, outside CI, `None` with a note. In CI
/// (`CI` set) it must be there: scripts/test installs it.
fn prometheus_tool(name: &'static str) -> Option<&'static str> {
    let found = std::process::Command::new(name)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found || std::env::var_os("CI").is_none(),
        "{name} is not installed (scripts/install-deps --promtool installs it)"
    );
    if !found {
        eprintln!("SKIPPED: {name} is not installed (scripts/install-deps --promtool)");
    }
    found.then_some(name)
}

#[test]
fn no_metric_uses_a_label_prometheus_takes_for_itself() {
    // The scrape sets `job` and `instance`: a metric's own label of that name would be
    // renamed `exported_job`/`exported_instance`, and every rule on it would miss.
    for def in CATALOGUE {
        for label in def.labels {
            assert!(
                !matches!(*label, "job" | "instance") && !label.starts_with("__"),
                "{} has the label {label:?}, which Prometheus takes over",
                def.name
            );
        }
    }
}

#[test]
fn every_alert_fires_in_its_promtool_unit_test() {
    let rules = std::fs::read_to_string(repo_file("deploy/prometheus/alerts.yml")).unwrap();
    let tests = std::fs::read_to_string(repo_file("deploy/prometheus/alerts.test.yml")).unwrap();
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert!(alerts.len() >= 10, "{alerts:?}");
    for alert in &alerts {
        // A case for the alert that expects it to fire (exp_alerts with labels).
        let fires = tests.split("alertname: ").skip(1).any(|case| {
            case.starts_with(&format!("{alert}\n"))
                && case
                    .lines()
                    .nth(1)
                    .is_some_and(|l| l.trim() == "exp_alerts:")
        });
        assert!(fires, "{alert} has no promtool case in which it fires");
    }
    let Some(promtool) = prometheus_tool("promtool") else {
        return;
    };
    let out = std::process::Command::new(promtool)
        .args(["test", "rules", "alerts.test.yml"])
        .current_dir(repo_file("deploy/prometheus"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits for Prometheus at `base` to answer `query` with at least one series.
async fn prometheus_query(
    http: &reqwest::Client,
    base: &str,
    query: &str,
) -> Vec<serde_json::Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let found = match http
            .get(format!("{base}/api/v1/query"))
            .query(&[("query", query)])
            .send()
            .await
        {
            Ok(r) => r
                .json::<serde_json::Value>()
                .await
                .ok()
                .and_then(|v| v["data"]["result"].as_array().cloned())
                .unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        if !found.is_empty() || std::time::Instant::now() > deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
async fn a_real_prometheus_with_the_shipped_config_sees_every_job_on_its_own() {
    let Some(prometheus) = prometheus_tool("prometheus") else {
        return;
    };
    let db = TestDb::new().await;
    let smtp = TestSmtp::start().await;
    // A process without the API, as in a split deployment: it must be scrapable too.
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let mut s = settings(
        &db,
        Some(&smtp.url()),
        None,
        &[("ADOPT__METRICS__SAMPLE_INTERVAL_SECS", "1")],
    );
    s.http.addr = metrics_addr.parse().unwrap();
    let app = app(s);
    let (stop, stopped) = oneshot::channel::<()>();
    let parts = Parts {
        workers: true,
        api: false,
    };
    let task = tokio::spawn(async move {
        app.run_until_stopped(None, parts, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });

    // The shipped configuration, with only the target and the rule file's path changed.
    let dir = tempfile::tempdir().unwrap();
    let shipped = std::fs::read_to_string(repo_file("deploy/prometheus/prometheus.yml")).unwrap();
    assert!(shipped.contains("\"worker:8080\""), "{shipped}");
    let config = shipped
        .replace("\"worker:8080\"", &format!("\"{metrics_addr}\""))
        .replace("scrape_interval: 15s", "scrape_interval: 1s")
        .replace(
            "  - alerts.yml",
            &format!(
                "  - {}",
                repo_file("deploy/prometheus/alerts.yml").display()
            ),
        );
    let config_path = dir.path().join("prometheus.yml");
    std::fs::write(&config_path, config).unwrap();
    let web_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = std::process::Command::new(prometheus)
        .arg(format!("--config.file={}", config_path.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{web_port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{web_port}");
    let http = reqwest::Client::new();

    let runs = prometheus_query(&http, &base, "adopt_worker_job_runs_total").await;
    let intervals = prometheus_query(&http, &base, "adopt_worker_job_interval_seconds").await;
    let rules: serde_json::Value = http
        .get(format!("{base}/api/v1/rules"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let _ = server.kill();
    let _ = server.wait();
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(20), task).await;

    assert!(
        !runs.is_empty(),
        "Prometheus scraped nothing from {metrics_addr}"
    );
    let mut tasks = BTreeSet::new();
    for series in &runs {
        let labels = &series["metric"];
        assert_eq!(labels["job"], "adopt-worker", "{labels}");
        assert!(labels.get("exported_job").is_none(), "{labels}");
        tasks.insert(labels["task"].as_str().unwrap().to_string());
    }
    let expected: BTreeSet<String> = metrics::Job::ALL
        .iter()
        .map(|j| j.as_str().to_string())
        .collect();
    assert_eq!(tasks, expected, "one series set per scheduled job");
    let scheduled: BTreeSet<String> = intervals
        .iter()
        .map(|s| s["metric"]["task"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        scheduled, expected,
        "every scheduled job exports its interval"
    );
    let loaded: Vec<&str> = rules["data"]["groups"][0]["rules"]
        .as_array()
        .map(|r| r.iter().filter_map(|r| r["name"].as_str()).collect())
        .unwrap_or_default();
    assert!(loaded.contains(&"AdoptWorkerJobStale"), "{rules}");
}

#[tokio::test]
async fn metrics_addr_keeps_metrics_off_the_public_listener() {
    let db = TestDb::new().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let ops = format!("http://127.0.0.1:{port}");
    let mut s = settings(&db, None, None, &[]);
    s.http.metrics_addr = Some(format!("127.0.0.1:{port}").parse().unwrap());
    let running = crate::helpers::Running::start_api_only(s).await;
    let http = reqwest::Client::new();

    let public = http.get(running.url("/metrics")).send().await.unwrap();
    assert_eq!(
        public.status(),
        404,
        "/metrics is not on the public listener"
    );
    let ok = eventually(Duration::from_secs(10), || async {
        http.get(format!("{ops}/metrics"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert!(ok, "/metrics on http.metrics_addr");
    let body = http
        .get(format!("{ops}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.contains("adopt_worker_build_info"), "{body}");
    let ready = http.get(format!("{ops}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let api = http.get(format!("{ops}/v1/emails")).send().await.unwrap();
    assert_eq!(
        api.status(),
        404,
        "the API is not on the operations listener"
    );
    running.stop().await;
}

#[test]
fn the_dockerfile_builder_copies_every_file_the_build_reads() {
    // Checked statically, so that `cargo test` says it without a container engine
    // (scripts/image-check builds the image): every path the compiler reads outside src/
    // (include_str!, include_bytes!, sqlx::migrate!) lies under a directory the builder
    // stage copies before `cargo build`.
    let dockerfile = std::fs::read_to_string(repo_file("Dockerfile")).unwrap();
    let builder = dockerfile
        .split("\nFROM ")
        .find(|stage| {
            stage
                .lines()
                .next()
                .is_some_and(|l| l.ends_with(" AS builder"))
        })
        .expect("a builder stage");
    let copied: Vec<String> = builder
        .lines()
        .filter_map(|l| l.strip_prefix("COPY "))
        .flat_map(|l| {
            let parts: Vec<&str> = l.split_whitespace().collect();
            parts[..parts.len() - 1]
                .iter()
                .map(|p| p.trim_end_matches('/').to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    let mut read = Vec::new();
    let src = repo_file("src");
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for macro_name in ["include_str!(\"", "include_bytes!(\"", "migrate!(\""] {
                for rest in text.split(macro_name).skip(1) {
                    let arg = rest.split('"').next().unwrap();
                    // include_* are relative to the file, migrate! to the crate root.
                    let target = if macro_name == "migrate!(\"" {
                        repo_file(arg)
                    } else {
                        path.parent().unwrap().join(arg)
                    };
                    let target = target.canonicalize().unwrap_or(target);
                    let root = repo_file("").canonicalize().unwrap();
                    let relative = target
                        .strip_prefix(&root)
                        .unwrap_or(&target)
                        .to_string_lossy()
                        .into_owned();
                    read.push(relative);
                }
            }
        }
    }
    assert!(
        read.iter().any(|r| r.starts_with("templates/")),
        "the scan finds the embedded layout: {read:?}"
    );
    for path in &read {
        assert!(
            copied
                .iter()
                .any(|c| path == c || path.starts_with(&format!("{c}/"))),
            "the build reads {path}, which the Dockerfile's builder stage does not copy (copied: {copied:?})"
        );
    }
}

/// The last migration released before this rule: those up to it keep their checksums (they
/// are applied in running databases) and their lock times are documented instead.
const LAST_MIGRATION_BEFORE_CONCURRENT_INDEXES: u32 = 22;

#[test]
fn new_indexes_on_shared_tables_are_built_concurrently_outside_a_transaction() {
    // Tables the platform's other services write to (the seed schema's); the worker's own
    // tables (worker_*, api_*, email_suppressions) may be locked briefly.
    let seed = std::fs::read_dir(repo_file("migrations"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().contains("_seed_"))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect::<Vec<_>>()
        .join("\n");
    let shared: Vec<String> = seed
        .split("CREATE TABLE ")
        .skip(1)
        .filter_map(|rest| rest.split_whitespace().next())
        .map(|t| t.trim_end_matches('(').to_ascii_lowercase())
        .collect();
    assert!(shared.iter().any(|t| t == "email_queue"), "{shared:?}");
    for entry in std::fs::read_dir(repo_file("migrations")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let number: u32 = name.split('_').next().unwrap().parse().unwrap();
        if number <= LAST_MIGRATION_BEFORE_CONCURRENT_INDEXES {
            continue;
        }
        let sql = std::fs::read_to_string(&path).unwrap();
        let upper = sql.to_ascii_uppercase();
        for statement in upper.split(';') {
            let Some(at) = statement.find(" ON ") else {
                continue;
            };
            if !statement.contains("CREATE INDEX") && !statement.contains("CREATE UNIQUE INDEX") {
                continue;
            }
            let table = statement[at + 4..]
                .split_whitespace()
                .next()
                .unwrap_or("")
                .trim_start_matches("ONLY")
                .to_ascii_lowercase();
            if shared.contains(&table) {
                assert!(
                    statement.contains("CONCURRENTLY"),
                    "{name}: an index on the shared table {table} must be built CONCURRENTLY"
                );
                assert!(
                    sql.starts_with("-- no-transaction"),
                    "{name}: CREATE INDEX CONCURRENTLY needs the migration to start with `-- no-transaction`"
                );
            }
        }
    }
}

/// Issue 19: a session that is not in UTC and leaves `created_at` to the seed's
/// `DEFAULT CURRENT_TIMESTAMP` gets it stored in UTC (migration 0023); a client that writes
/// its own local time explicitly is counted in `adopt_worker_queue_created_ahead`, warned
/// about once (not on every 1 s sample), and its row is still sent at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_created_by_a_session_in_berlin_are_counted_logged_once_and_sent_at_once() {
    use sqlx::{Connection, Executor};
    let db = TestDb::new().await;
    let smtp = TestSmtp::start().await;

    // A session in Berlin with created_at left to the seed's default: the worker's trigger
    // (migration 0023) stores the same instant in UTC, so it is neither early nor late.
    let mut berlin = sqlx::PgConnection::connect(&db.url).await.unwrap();
    berlin
        .execute("SET TimeZone = 'Europe/Berlin'")
        .await
        .unwrap();
    let (defaulted, ahead): (uuid::Uuid, f64) = sqlx::query_as(
        "INSERT INTO email_queue (from_email, to_email, subject, html_content, type)
         VALUES ('rescues@adoptdontshop.com', 'lena@example.com', 'Biscuit says hello',
                 '<p>Hello Lena</p>', 'transactional')
         RETURNING email_id,
                   EXTRACT(EPOCH FROM created_at - (now() AT TIME ZONE 'UTC'))::float8",
    )
    .fetch_one(&mut berlin)
    .await
    .unwrap();
    assert!(
        ahead.abs() < 1.0,
        "a defaulted created_at is UTC: {ahead} s off"
    );
    // The mistake that remains possible: a client that writes its own local wall-clock time
    // explicitly (node-postgres sends a Date as local time). Counted.
    let (id, ahead): (uuid::Uuid, f64) = sqlx::query_as(
        "INSERT INTO email_queue (from_email, to_email, subject, html_content, type, created_at)
         VALUES ('rescues@adoptdontshop.com', 'maya@example.com', 'Biscuit says hello',
                 '<p>Hello Maya</p>', 'transactional', now() AT TIME ZONE 'Europe/Berlin')
         RETURNING email_id,
                   EXTRACT(EPOCH FROM created_at - (now() AT TIME ZONE 'UTC'))::float8",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(
        (3500.0..7300.0).contains(&ahead),
        "Berlin is 1 or 2 hours ahead of UTC: created_at is {ahead} s ahead"
    );
    let _ = defaulted;
    // A service in UTC: not counted.
    let utc = NewEmail::to("sam@example.com").insert(&db.pool).await;

    let sampled = metrics::sample_queue(&db.pool).await.unwrap();
    let count: i64 = sampled.iter().map(|r| r.created_ahead).sum();
    assert_eq!(count, 1, "{sampled:?}");
    let normal = sampled
        .iter()
        .find(|r| r.priority.as_str() == "normal")
        .unwrap();
    assert!(
        (3400.0..7300.0).contains(&normal.created_ahead_max_secs),
        "{normal:?}"
    );

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = tokio::process::Command::from(bin())
        .args(["run", "--no-api"])
        .env("DATABASE_URL", &db.url)
        .env("SMTP_URL", smtp.url())
        .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("ADOPT__METRICS__SAMPLE_INTERVAL_SECS", "1")
        .env("ADOPT__JOBS__ENABLED", "false")
        .env("RUST_LOG", "warn")
        .env("ADOPT__LOG__FORMAT", "human")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let reader = tokio::spawn({
        let lines = lines.clone();
        async move {
            use tokio::io::AsyncBufReadExt;
            let mut stderr = tokio::io::BufReader::new(stderr).lines();
            while let Ok(Some(line)) = stderr.next_line().await {
                lines.lock().unwrap().push(line);
            }
        }
    });
    const WARNING: &str = "created_at more than 2 minutes ahead of UTC";
    let warnings = || {
        lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(WARNING))
            .cloned()
            .collect::<Vec<_>>()
    };

    // Sent at once: created_at only orders rows.
    let sent = eventually(Duration::from_secs(15), || async {
        row(&db.pool, id).await.status == "sent"
    })
    .await;
    assert!(
        sent,
        "the Berlin row is sent at once: {:?}",
        row(&db.pool, id).await
    );
    assert_eq!(row(&db.pool, utc).await.status, "sent");

    // The gauge, scraped from the process: still 1 after the row was sent.
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/metrics");
    let mut seen = None;
    for _ in 0..100 {
        if let Ok(resp) = http.get(&url).send().await {
            let text = resp.text().await.unwrap_or_default();
            seen = sample(&text, "adopt_worker_queue_created_ahead");
            if seen == Some(1.0) {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seen, Some(1.0), "adopt_worker_queue_created_ahead");

    // Logged with the count, and at most once a minute: three more samples add no line.
    assert!(
        eventually(Duration::from_secs(10), || async { !warnings().is_empty() }).await,
        "no warning in {:?}",
        lines.lock().unwrap()
    );
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let logged = warnings();
    assert_eq!(logged.len(), 1, "{logged:#?}");
    assert!(logged[0].contains("WARN"), "{}", logged[0]);
    assert!(logged[0].contains("rows=1"), "{}", logged[0]);
    assert!(
        logged[0].contains("ahead_by=1h") || logged[0].contains("ahead_by=2h"),
        "{}",
        logged[0]
    );

    let pid = child.id().unwrap().to_string();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status();
    let _ = tokio::time::timeout(Duration::from_secs(20), child.wait()).await;
    reader.abort();

    // Ten minutes after its attempt, the row no longer counts: the gauge falls back to 0
    // once the inserter is fixed, without waiting for the clock to pass created_at.
    sqlx::query(
        "UPDATE email_queue SET last_attempt_at = last_attempt_at - interval '11 minutes'
         WHERE email_id = $1",
    )
    .bind(id)
    .execute(&db.pool)
    .await
    .unwrap();
    let sampled = metrics::sample_queue(&db.pool).await.unwrap();
    assert_eq!(
        sampled.iter().map(|r| r.created_ahead).sum::<i64>(),
        0,
        "{sampled:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_delivery_outcome_is_one_log_line_naming_the_domain_not_the_address() {
    let db = TestDb::new().await;
    let smtp = TestSmtp::start().await;
    smtp.add_rule(Rule::reply(Command::Rcpt, 550, "5.1.1 user unknown").matching("gone@"));
    let sent = NewEmail::to("maya@shelter.example").insert(&db.pool).await;
    let bounced = NewEmail::to("gone@old.example").insert(&db.pool).await;
    let drain = |addresses: &'static str| {
        let (url, smtp_url) = (db.url.clone(), smtp.url());
        async move {
            let out = tokio::process::Command::from(bin())
                .arg("drain")
                .env("DATABASE_URL", url)
                .env("SMTP_URL", smtp_url)
                .env("ADOPT__LOG__FORMAT", "json")
                .env("ADOPT__LOG__RECIPIENT_ADDRESSES", addresses)
                .env_remove("RUST_LOG")
                .output()
                .await
                .unwrap();
            assert!(out.status.success());
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter(|v| v["fields"]["message"] == "delivery")
                .collect::<Vec<_>>()
        }
    };
    let lines = drain("false").await;
    assert_eq!(lines.len(), 2, "one line per outcome: {lines:?}");
    let line_for = |id: uuid::Uuid| {
        lines
            .iter()
            .find(|l| l.to_string().contains(&id.to_string()))
            .unwrap_or_else(|| panic!("no delivery line names {id}: {lines:?}"))
            .clone()
    };
    let ok = line_for(sent);
    assert_eq!(ok["fields"]["outcome"], "sent", "{ok}");
    assert_eq!(ok["fields"]["to"], "shelter.example", "{ok}");
    assert_eq!(ok["fields"]["code"], "250", "{ok}");
    assert_eq!(
        ok["fields"]["queue_id"],
        smtp.messages()[0].queue_id,
        "{ok}"
    );
    assert_eq!(ok["fields"]["type"], "transactional", "{ok}");
    assert!(ok["fields"]["ms"].is_u64(), "{ok}");
    let bad = line_for(bounced);
    assert_eq!(bad["fields"]["outcome"], "bounced", "{bad}");
    assert_eq!(bad["level"], "WARN", "{bad}");
    assert!(
        !bad.to_string().contains("gone@"),
        "no address by default: {bad}"
    );

    sqlx::query("UPDATE email_queue SET status = 'queued' WHERE email_id = $1")
        .bind(sent)
        .execute(&db.pool)
        .await
        .unwrap();
    let lines = drain("true").await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["fields"]["to"], "maya@shelter.example");
}
