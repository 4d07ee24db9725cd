//! Templates: sync into email_templates (versions, admin edits), lookup fallback, rendering
//! at send time (variables, pinned versions, CSS, tracking) and `templates check`.

use std::path::{Path, PathBuf};

use adopt_worker::templates::{
    Force, LookupError, RenderError, SYSTEM_USER_ID, Step, SyncOutcome, SyncReport, TemplateRef,
};
use adopt_worker::tracking;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::*;

mod lifecycle;

const SECRET: &str = "test-tracking-secret-0123456789";
const PUBLIC_URL: &str = "https://api.adoptdontshop.test";

fn shipped_templates() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("templates")
}

/// A copy of templates/ that a test may edit.
fn copy_templates() -> tempfile::TempDir {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            let dest = to.join(e.file_name());
            if e.path().is_dir() {
                copy(&e.path(), &dest);
            } else {
                std::fs::copy(e.path(), dest).unwrap();
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    copy(&shipped_templates(), dir.path());
    dir
}

fn edit(path: PathBuf, from: &str, to: &str) {
    let src = std::fs::read_to_string(&path).unwrap();
    assert!(src.contains(from), "{} has no {from:?}", path.display());
    std::fs::write(&path, src.replacen(from, to, 1)).unwrap();
}

/// Settings for template tests: tracking on with a secret, lookups never cached (so a
/// version synced by another handle is seen at once), plus `extra`.
fn tsettings(
    db: &TestDb,
    smtp: Option<&TestSmtp>,
    dir: &Path,
    extra: &[(&str, &str)],
) -> adopt_worker::config::Settings {
    let dir = dir.display().to_string();
    let mut o: Vec<(&str, &str)> = vec![
        ("ADOPT__TEMPLATES__DIR", &dir),
        ("ADOPT__TEMPLATES__LOOKUP_TTL_MS", "0"),
        ("ADOPT__TRACKING__SECRET", SECRET),
        ("ADOPT__HTTP__PUBLIC_URL", PUBLIC_URL),
    ];
    o.extend_from_slice(extra);
    let url = smtp.map(TestSmtp::url);
    let outbox = tempfile::tempdir().unwrap().keep();
    settings(db, url.as_deref(), Some(&outbox), &o)
}

async fn sync(db: &TestDb, dir: &Path, force: bool) -> SyncReport {
    let app = app(tsettings(db, None, dir, &[]));
    let force = if force { Force::All } else { Force::None };
    app.templates.sync(dir, &force).await.expect("sync").0
}

/// `adopt-worker templates sync` on `dir`, as an operator runs it.
fn sync_cli(db: &TestDb, dir: &Path) -> std::process::Output {
    bin()
        .args(["templates", "sync"])
        .env("DATABASE_URL", &db.url)
        .env("ADOPT__TEMPLATES__DIR", dir)
        .output()
        .unwrap()
}

fn outcome<'a>(r: &'a SyncReport, name: &str) -> &'a SyncOutcome {
    &r.entries.iter().find(|e| e.name == name).unwrap().outcome
}

async fn template_id(pool: &PgPool, name: &str) -> Uuid {
    sqlx::query_scalar(
        "SELECT template_id FROM email_templates WHERE name = $1 AND deleted_at IS NULL",
    )
    .bind(name)
    .fetch_one(pool)
    .await
    .unwrap()
}

#[derive(Debug, sqlx::FromRow)]
struct TemplateRow {
    subject: String,
    html_content: String,
    text_content: Option<String>,
    current_version: Option<i32>,
    versions: Option<Value>,
    metadata: Option<Value>,
    updated_at: Option<chrono::NaiveDateTime>,
    usage_count: Option<i32>,
    last_used_at: Option<chrono::NaiveDateTime>,
}

async fn template_row(pool: &PgPool, name: &str) -> TemplateRow {
    sqlx::query_as(
        "SELECT subject, html_content, text_content, current_version, versions, metadata, updated_at,
                usage_count, last_used_at
         FROM email_templates WHERE name = $1 AND deleted_at IS NULL",
    )
    .bind(name)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// A row as another service enqueues a template email: template_id + template_data, empty
/// subject and html_content.
async fn enqueue(
    pool: &PgPool,
    template: Uuid,
    data: Value,
    email_type: &str,
    metadata: Value,
    user_id: Option<Uuid>,
) -> Uuid {
    sqlx::query_scalar(
        "INSERT INTO email_queue (template_id, template_data, from_email, from_name, to_email, to_name,
             subject, html_content, type, metadata, user_id)
         VALUES ($1, $2, 'noreply@adoptdontshop.com', 'Adopt Don''t Shop', 'maya@example.com',
             'Maya Okafor', '', '', $3::email_type_enum, $4, $5)
         RETURNING email_id",
    )
    .bind(template)
    .bind(data)
    .bind(email_type)
    .bind(metadata)
    .bind(user_id)
    .fetch_one(pool)
    .await
    .unwrap()
}

#[derive(Debug, sqlx::FromRow)]
struct Stored {
    status: String,
    failure_reason: Option<String>,
    subject: String,
    html_content: String,
    text_content: Option<String>,
    metadata: Option<Value>,
}

async fn stored(pool: &PgPool, id: Uuid) -> Stored {
    sqlx::query_as(
        "SELECT status::text, failure_reason, subject, html_content, text_content, metadata
         FROM email_queue WHERE email_id = $1",
    )
    .bind(id)
    .fetch_one(pool)
    .await
    .unwrap()
}

fn example(dir: &Path, name: &str) -> Value {
    let d = adopt_worker::templates::files::load_dir(
        dir,
        &adopt_worker::templates::files::Rules::new("en-US"),
    );
    let t = d.templates.iter().find(|t| t.name == name).unwrap();
    adopt_worker::templates::example_data(t)
}

/// Every `{PUBLIC_URL}/t/{kind}/<token>` in `html`.
fn tokens(html: &str, kind: char) -> Vec<String> {
    let prefix = format!("{PUBLIC_URL}/t/{kind}/");
    html.match_indices(&prefix)
        .map(|(i, _)| {
            let rest = &html[i + prefix.len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
                .unwrap_or(rest.len());
            rest[..end].to_string()
        })
        .collect()
}

#[tokio::test]
async fn sync_on_a_fresh_database_creates_one_active_template_per_category() {
    let db = TestDb::new().await;
    let out = sync_cli(&db, &shipped_templates());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("created application_update (v1)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("templates sync: 13 created, 0 new version(s)"),
        "{stdout}"
    );

    let by_category: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT category::text, count(*) FILTER (WHERE status = 'active'),
                count(*) FILTER (WHERE status = 'active' AND is_default)
         FROM email_templates GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(by_category.len(), 12, "{by_category:?}");
    for (category, active, defaults) in &by_category {
        assert_eq!(*defaults, 1, "{category}: exactly one active default");
        let expected = if category == "system_alert" { 2 } else { 1 };
        assert_eq!(*active, expected, "{category}");
    }
    let (is_default, created_by, versions, version, variables, sync): (
        bool,
        Uuid,
        Value,
        i32,
        Value,
        Value,
    ) = sqlx::query_as(
        "SELECT is_default, created_by, versions, current_version, variables, metadata->'sync'
             FROM email_templates WHERE name = 'account_reinstated'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(!is_default);
    assert_eq!(created_by, SYSTEM_USER_ID);
    assert_eq!((versions, version), (json!([]), 1));
    assert_eq!(variables[0]["name"], "user");
    assert_eq!(variables[0]["example"], json!({"first_name": "Maya"}));
    assert_eq!(sync["synced_version"], 1);
    assert_eq!(sync["source_hash"].as_str().unwrap().len(), 64);

    // The system user: an admin that cannot sign in.
    let (email, kind, status, hash): (String, String, String, String) = sqlx::query_as(
        "SELECT email, user_type::text, status::text, password_hash FROM users WHERE user_id = $1",
    )
    .bind(SYSTEM_USER_ID)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(email, "system@adoptdontshop.invalid");
    assert_eq!((kind.as_str(), status.as_str()), ("ADMIN", "INACTIVE"));
    assert!(!hash.starts_with("$2"), "not a usable bcrypt hash: {hash}");

    // html_content is the child template source; the layout is not stored.
    let r = template_row(&db.pool, "welcome").await;
    assert!(r.html_content.starts_with("{% extends \"layout.html\" %}"));
}

#[tokio::test]
async fn editing_a_file_makes_a_new_version_and_unchanged_files_change_nothing() {
    let db = TestDb::new().await;
    let dir = copy_templates();
    sync(&db, dir.path(), false).await;
    let before = template_row(&db.pool, "welcome").await;
    let other_before = template_row(&db.pool, "newsletter").await;

    edit(
        dir.path().join("welcome/body.html"),
        "Happy searching,",
        "Happy hunting,",
    );
    edit(
        dir.path().join("welcome/subject.txt"),
        "Welcome to",
        "A warm welcome to",
    );
    let report = sync(&db, dir.path(), false).await;
    assert_eq!(
        outcome(&report, "welcome"),
        &SyncOutcome::NewVersion { from: 1, to: 2 }
    );
    assert_eq!(
        outcome(&report, "newsletter"),
        &SyncOutcome::Unchanged { version: 1 }
    );

    let after = template_row(&db.pool, "welcome").await;
    assert_eq!(after.current_version, Some(2));
    assert!(after.html_content.contains("Happy hunting,"));
    assert!(after.subject.starts_with("A warm welcome to"));
    let versions = after.versions.unwrap();
    assert_eq!(versions.as_array().unwrap().len(), 1);
    let v1 = &versions[0];
    assert_eq!(v1["version"], 1);
    assert_eq!(v1["subject"], json!(before.subject));
    assert_eq!(v1["html_content"], json!(before.html_content));
    assert_eq!(v1["text_content"], json!(before.text_content));
    assert_eq!(v1["variables"][0]["name"], "user");
    assert_eq!(v1["created_by"], json!(SYSTEM_USER_ID));
    assert!(v1["created_at"].is_string());
    assert!(
        v1["change_notes"]
            .as_str()
            .unwrap()
            .contains("templates sync")
    );
    assert_eq!(after.metadata.unwrap()["sync"]["synced_version"], 2);
    assert_eq!(
        template_row(&db.pool, "newsletter").await.updated_at,
        other_before.updated_at
    );

    // Once more with nothing changed: nothing is written at all.
    let report = sync(&db, dir.path(), false).await;
    assert_eq!(
        report.count(|o| matches!(o, SyncOutcome::Unchanged { .. })),
        13,
        "{report}"
    );
    let again = template_row(&db.pool, "welcome").await;
    assert_eq!(again.updated_at, after.updated_at);
    assert_eq!(again.current_version, Some(2));
}

#[tokio::test]
async fn an_admin_edited_template_is_kept_unless_forced() {
    let db = TestDb::new().await;
    let dir = copy_templates();
    sync(&db, dir.path(), false).await;
    let admin_html = "{% extends \"layout.html\" %}{% block content %}<p>Edited by an admin, {{ user.first_name }}</p>{% endblock content %}";
    sqlx::query(
        "UPDATE email_templates SET html_content = $1, updated_at = now() AT TIME ZONE 'UTC' WHERE name = 'welcome'",
    )
    .bind(admin_html)
    .execute(&db.pool)
    .await
    .unwrap();

    // Files unchanged: the admin's edit is not reverted.
    let report = sync(&db, dir.path(), false).await;
    match outcome(&report, "welcome") {
        SyncOutcome::Skipped { reason } => {
            assert!(reason.contains("edited in the database"), "{reason}");
            assert!(
                reason.contains("html_content") && reason.contains("--force"),
                "{reason}"
            );
        }
        other => panic!("{other:?}"),
    }
    // Files changed too: still kept, and the CLI says so.
    edit(
        dir.path().join("welcome/body.html"),
        "Happy searching,",
        "Happy hunting,",
    );
    let out = sync_cli(&db, dir.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("skipped welcome: it was edited in the database"),
        "{stdout}"
    );
    assert_eq!(
        template_row(&db.pool, "welcome").await.html_content,
        admin_html
    );

    // --force overwrites, keeping the admin's version in the history.
    let report = sync(&db, dir.path(), true).await;
    assert_eq!(
        outcome(&report, "welcome"),
        &SyncOutcome::NewVersion { from: 1, to: 2 }
    );
    let r = template_row(&db.pool, "welcome").await;
    assert!(r.html_content.contains("Happy hunting,"));
    let v1 = &r.versions.unwrap()[0];
    assert_eq!(v1["html_content"], json!(admin_html));
    assert!(
        v1["change_notes"]
            .as_str()
            .unwrap()
            .contains("edited in the database")
    );
    // And it is in sync again: the next plain sync leaves it alone.
    let report = sync(&db, dir.path(), false).await;
    assert_eq!(
        outcome(&report, "welcome"),
        &SyncOutcome::Unchanged { version: 2 }
    );
}

#[tokio::test]
async fn a_template_row_is_rendered_inlined_tracked_and_stored_as_sent() {
    let db = TestDb::new().await;
    let smtp = TestSmtp::start().await;
    let dir = shipped_templates();
    sync(&db, &dir, false).await;
    let newsletter = template_id(&db.pool, "newsletter").await;
    let id = enqueue(
        &db.pool,
        newsletter,
        example(&dir, "newsletter"),
        "marketing",
        json!({}),
        None,
    )
    .await;

    let app = app(tsettings(&db, Some(&smtp), &dir, &[]));
    let tally = app.drain().await.unwrap();
    assert_eq!(
        tally.get(adopt_worker::queue::EmailStatus::Sent),
        1,
        "{tally}"
    );

    let msgs = smtp.messages();
    let parsed = mail_parser::MessageParser::default()
        .parse(&msgs[0].data)
        .unwrap();
    let subject = parsed.subject().unwrap().to_string();
    assert_eq!(
        subject,
        "March 2026: meet Pepper and more pets looking for a home"
    );
    // SMTP carries CRLF line ends; the row keeps the rendered LF ones.
    let html = parsed.body_html(0).unwrap().replace("\r\n", "\n");
    let text = parsed.body_text(0).unwrap().replace("\r\n", "\n");
    for part in [&subject, &html, &text] {
        assert!(!part.contains("{{") && !part.contains("{%"), "{part}");
    }
    assert!(
        text.contains("Pepper") && text.contains("Border Collie mix"),
        "{text}"
    );
    // CSS inlined; the media queries kept in a <style>.
    assert!(
        html.contains(r#"class="content" style=""#),
        "inlined: {html}"
    );
    assert!(html.contains("@media only screen"));
    assert!(!html.contains(".wrapper {"));

    // Every web link is a signed click URL that verifies to the original; mailto stays.
    let clicks = tokens(&html, 'c');
    assert!(clicks.len() >= 5, "{html}");
    let urls: Vec<String> = clicks
        .iter()
        .map(|t| {
            let (email, url) = tracking::verify_click(t, SECRET.as_bytes()).unwrap();
            assert_eq!(email, id);
            url
        })
        .collect();
    assert!(
        urls.contains(
            &"https://adoptdontshop.com/pets/1f2e3d4c-5b6a-4798-8a7b-6c5d4e3f2a1b".to_string()
        ),
        "{urls:?}"
    );
    assert!(
        urls.contains(&"https://adoptdontshop.com/account/email-preferences".to_string()),
        "{urls:?}"
    );
    assert!(
        !html.contains(r#"href="https://adoptdontshop.com"#),
        "an untracked web link is left: {html}"
    );
    assert!(html.contains("mailto:support@adoptdontshop.com"));
    let opens = tokens(&html, 'o');
    assert_eq!(opens.len(), 1);
    assert_eq!(tracking::verify_open(&opens[0], SECRET.as_bytes()), Ok(id));
    assert!(html.contains(r#"width="1" height="1" alt="" style="display:none""#));

    // The row holds what was sent.
    let s = stored(&db.pool, id).await;
    assert_eq!(s.status, "sent");
    assert_eq!(s.subject, subject);
    assert_eq!(s.html_content.trim(), html.trim());
    assert_eq!(s.text_content.as_deref().map(str::trim), Some(text.trim()));
    assert_eq!(s.metadata.unwrap()["templateVersion"], 1);

    // Usage counted, in one statement after the drain.
    let t = template_row(&db.pool, "newsletter").await;
    assert_eq!(t.usage_count, Some(1));
    assert!(t.last_used_at.is_some());
}

#[tokio::test]
async fn tracking_applies_only_to_tracked_types_and_never_rewrites_a_prerendered_row() {
    let db = TestDb::new().await;
    let smtp = TestSmtp::start().await;
    let dir = shipped_templates();
    sync(&db, &dir, false).await;
    // application_update is transactional: not tracked.
    let update = template_id(&db.pool, "application_update").await;
    let untracked = enqueue(
        &db.pool,
        update,
        example(&dir, "application_update"),
        "transactional",
        json!({}),
        None,
    )
    .await;
    // A pre-rendered marketing row: tracked when sent, stored as given.
    let mut pre = NewEmail::to("maya@example.com");
    pre.email_type = "marketing";
    pre.html = r#"<html><body><p><a href="https://adoptdontshop.com/pets">Pets</a> <a href="https://adoptdontshop.com/unsubscribe/abc">Unsubscribe</a></p></body></html>"#.into();
    let pre_html = pre.html.clone();
    let pre_id = pre.insert(&db.pool).await;

    app(tsettings(&db, Some(&smtp), &dir, &[]))
        .drain()
        .await
        .unwrap();
    let msgs = smtp.messages();
    assert_eq!(msgs.len(), 2);
    for m in &msgs {
        let parsed = mail_parser::MessageParser::default()
            .parse(&m.data)
            .unwrap();
        let html = parsed.body_html(0).unwrap().to_string();
        if m.header("Message-ID")
            .unwrap()
            .contains(&pre_id.to_string())
        {
            let clicks = tokens(&html, 'c');
            assert_eq!(clicks.len(), 1, "{html}");
            let (_, url) = tracking::verify_click(&clicks[0], SECRET.as_bytes()).unwrap();
            assert_eq!(url, "https://adoptdontshop.com/pets");
            assert!(html.contains(r#"href="https://adoptdontshop.com/unsubscribe/abc""#));
            assert_eq!(tokens(&html, 'o').len(), 1);
        } else {
            assert!(!html.contains("/t/c/") && !html.contains("/t/o/"), "{html}");
        }
    }
    assert_eq!(stored(&db.pool, pre_id).await.html_content, pre_html);
    assert_eq!(stored(&db.pool, untracked).await.status, "sent");
}

#[tokio::test]
async fn an_email_pinned_to_version_1_renders_version_1_after_version_2_is_synced() {
    let db = TestDb::new().await;
    let smtp = TestSmtp::start().await;
    let dir = copy_templates();
    sync(&db, dir.path(), false).await;
    let welcome = template_id(&db.pool, "welcome").await;
    let data = json!({"user": {"first_name": "Maya"}});
    // This process renders (and caches) version 1 first.
    let worker = app(tsettings(&db, Some(&smtp), dir.path(), &[]));
    let first = enqueue(
        &db.pool,
        welcome,
        data.clone(),
        "transactional",
        json!({}),
        None,
    )
    .await;
    worker.drain().await.unwrap();
    assert_eq!(
        stored(&db.pool, first).await.subject,
        "Welcome to Adopt Don't Shop, Maya!"
    );

    // Another process syncs version 2.
    edit(
        dir.path().join("welcome/subject.txt"),
        "Welcome to",
        "Version two: welcome to",
    );
    let report = sync(&db, dir.path(), false).await;
    assert_eq!(
        outcome(&report, "welcome"),
        &SyncOutcome::NewVersion { from: 1, to: 2 }
    );

    let pinned = enqueue(
        &db.pool,
        welcome,
        data.clone(),
        "transactional",
        json!({"templateVersion": 1}),
        None,
    )
    .await;
    let current = enqueue(
        &db.pool,
        welcome,
        data.clone(),
        "transactional",
        json!({}),
        None,
    )
    .await;
    let pinned_str = enqueue(
        &db.pool,
        welcome,
        data,
        "transactional",
        json!({"templateVersion": "2"}),
        None,
    )
    .await;
    worker.drain().await.unwrap();

    let p = stored(&db.pool, pinned).await;
    assert_eq!(
        (p.status.as_str(), p.subject.as_str()),
        ("sent", "Welcome to Adopt Don't Shop, Maya!")
    );
    assert_eq!(p.metadata.unwrap()["templateVersion"], 1);
    let c = stored(&db.pool, current).await;
    assert_eq!(c.subject, "Version two: welcome to Adopt Don't Shop, Maya!");
    assert_eq!(c.metadata.unwrap()["templateVersion"], 2);
    assert_eq!(stored(&db.pool, pinned_str).await.subject, c.subject);

    // A version that never existed fails the row, saying so.
    let ghost = enqueue(
        &db.pool,
        welcome,
        json!({"user": {"first_name": "Maya"}}),
        "transactional",
        json!({"templateVersion": 7}),
        None,
    )
    .await;
    worker.drain().await.unwrap();
    let g = stored(&db.pool, ghost).await;
    assert_eq!(g.status, "failed");
    assert_eq!(
        g.failure_reason.as_deref(),
        Some("template welcome: version 7 is not in its history (current version is 2)")
    );
}

#[tokio::test]
async fn bad_template_data_fails_the_row_naming_the_variable() {
    let db = TestDb::new().await;
    let smtp = TestSmtp::start().await;
    let dir = shipped_templates();
    sync(&db, &dir, false).await;
    let update = template_id(&db.pool, "application_update").await;
    let welcome = template_id(&db.pool, "welcome").await;
    let mut no_pet = example(&dir, "application_update");
    no_pet.as_object_mut().unwrap().remove("pet");
    let mut pet_string = example(&dir, "application_update");
    pet_string["pet"] = json!("Biscuit");
    let mut bad_url = example(&dir, "password_reset");
    bad_url["reset_url"] = json!("javascript:alert(1)");
    let reset = template_id(&db.pool, "password_reset").await;

    let cases = [
        (update, no_pet, r#"template application_update v1: missing required variable "pet""#.to_string()),
        (update, pet_string, r#"template application_update v1: variable "pet" must be an object, got a string"#.to_string()),
        (reset, bad_url, r#"template password_reset v1: variable "reset_url" must be a url (absolute http or https), got a string that is not one"#.to_string()),
        (welcome, json!({"user": {"name": "Maya"}}), r#"template welcome v1: undefined variable "user.first_name" (subject.txt:1:"#.to_string()),
        (welcome, json!([{"user": {}}]), "template_data must be a JSON object, got an array".to_string()),
        (welcome, json!("hello"), "template_data must be a JSON object, got a string".to_string()),
        (welcome, json!({"user": {"first_name": "x".repeat(300 * 1024)}}), "template_data is larger than the 262144-byte limit".to_string()),
    ];
    let mut ids = Vec::new();
    for (template, data, _) in &cases {
        ids.push(
            enqueue(
                &db.pool,
                *template,
                data.clone(),
                "transactional",
                json!({}),
                None,
            )
            .await,
        );
    }
    app(tsettings(&db, Some(&smtp), &dir, &[]))
        .drain()
        .await
        .unwrap();
    assert_eq!(smtp.message_count(), 0);
    for (id, (_, _, reason)) in ids.iter().zip(&cases) {
        let s = stored(&db.pool, *id).await;
        assert_eq!(s.status, "failed", "{reason}");
        let got = s.failure_reason.unwrap();
        assert!(
            got.starts_with(reason.as_str()),
            "expected {reason:?}, got {got:?}"
        );
        // Never half-rendered: nothing was written into the row.
        assert_eq!((s.subject.as_str(), s.html_content.as_str()), ("", ""));
    }
}

/// maya@example.com, a user whose preferences say `language`.
async fn user_speaking(pool: &PgPool, language: &str) -> Uuid {
    let user = insert_user(pool, "maya@example.com").await;
    sqlx::query("INSERT INTO email_preferences (user_id, language) VALUES ($1, $2)")
        .bind(user)
        .bind(language)
        .execute(pool)
        .await
        .unwrap();
    user
}

/// Variant rows as an admin tool would add them: own names, `parent_template_id` set.
async fn add_template(
    pool: &PgPool,
    name: &str,
    locale: &str,
    parent: Option<&str>,
    category: &str,
    subject: &str,
) -> Uuid {
    sqlx::query_scalar(
        "INSERT INTO email_templates (name, type, category, status, subject, html_content, locale,
             parent_template_id, created_by)
         VALUES ($1, 'transactional', $2::template_category_enum, 'active', $3, '<p>{{ app.name }}</p>', $4,
             (SELECT template_id FROM email_templates WHERE name = $5), $6)
         RETURNING template_id",
    )
    .bind(name)
    .bind(category)
    .bind(subject)
    .bind(locale)
    .bind(parent)
    .bind(SYSTEM_USER_ID)
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn lookup_falls_back_exact_language_parent_default_locale_itself_category() {
    let db = TestDb::new().await;
    let dir = shipped_templates();
    sync(&db, &dir, false).await;
    let pool = &db.pool;
    add_template(
        pool,
        "welcome.fr-FR",
        "fr-FR",
        Some("welcome"),
        "welcome",
        "Bienvenue",
    )
    .await;
    add_template(
        pool,
        "welcome.en-GB",
        "en-GB",
        Some("welcome"),
        "welcome",
        "Welcome (GB)",
    )
    .await;
    add_template(pool, "promo.fr", "fr-FR", None, "announcement", "Promo").await;
    add_template(
        pool,
        "promo.us",
        "en-US",
        Some("promo.fr"),
        "announcement",
        "Promo US",
    )
    .await;
    add_template(pool, "solo", "fr-FR", None, "announcement", "Solo").await;
    let app = app(tsettings(&db, None, &dir, &[]));
    let t = &app.templates;
    let find = |name: &'static str, locale: &'static str| async move {
        let r = t.lookup(TemplateRef::Name(name), locale).await.unwrap();
        (r.name, r.step)
    };

    assert_eq!(
        find("welcome", "fr-FR").await,
        ("welcome.fr-FR".into(), Step::ExactLocale)
    );
    assert_eq!(
        find("welcome", "en_gb").await,
        ("welcome.en-GB".into(), Step::ExactLocale)
    );
    assert_eq!(
        find("welcome", "fr-CA").await,
        ("welcome.fr-FR".into(), Step::Language)
    );
    assert_eq!(
        find("welcome", "en-AU").await,
        ("welcome".into(), Step::Language)
    );
    assert_eq!(
        find("welcome.fr-FR", "de-DE").await,
        ("welcome".into(), Step::Parent)
    );
    assert_eq!(
        find("welcome.fr-FR", "en-GB").await,
        ("welcome.en-GB".into(), Step::Parent)
    );
    assert_eq!(
        find("promo.fr", "de-DE").await,
        ("promo.us".into(), Step::DefaultLocale)
    );
    assert_eq!(
        find("solo", "de-DE").await,
        ("solo".into(), Step::Requested)
    );
    let by_id = t
        .lookup(TemplateRef::Id(template_id(pool, "welcome").await), "fr-FR")
        .await
        .unwrap();
    assert_eq!(by_id.name, "welcome.fr-FR");

    // Inactive or deleted rows are never chosen.
    sqlx::query("UPDATE email_templates SET status = 'inactive' WHERE name = 'solo'")
        .execute(pool)
        .await
        .unwrap();
    // Never another template of the category: the reason names the state.
    let err = t
        .lookup(TemplateRef::Name("solo"), "de-DE")
        .await
        .unwrap_err();
    assert!(
        err.to_string().starts_with("template solo is inactive: "),
        "{err}"
    );
    sqlx::query("UPDATE email_templates SET deleted_at = now() WHERE name = 'welcome.fr-FR'")
        .execute(pool)
        .await
        .unwrap();
    assert_eq!(
        find("welcome", "fr-FR").await,
        ("welcome".into(), Step::DefaultLocale)
    );
    sqlx::query("UPDATE email_templates SET status = 'archived' WHERE category = 'announcement'")
        .execute(pool)
        .await
        .unwrap();
    assert!(matches!(
        t.lookup(TemplateRef::Name("solo"), "fr-FR").await,
        Err(RenderError::Lookup(LookupError::NoActive { .. }))
    ));
    assert!(matches!(
        t.lookup(TemplateRef::Name("nope"), "en-US").await,
        Err(RenderError::Lookup(LookupError::NotFound(_)))
    ));
}

#[tokio::test]
async fn locale_comes_from_metadata_then_the_recipients_language() {
    let db = TestDb::new().await;
    let smtp = TestSmtp::start().await;
    let dir = shipped_templates();
    sync(&db, &dir, false).await;
    let pool = &db.pool;
    add_template(
        pool,
        "welcome.fr-FR",
        "fr-FR",
        Some("welcome"),
        "welcome",
        "Bienvenue {{ user.first_name }}",
    )
    .await;
    add_template(
        pool,
        "welcome.de",
        "de",
        Some("welcome"),
        "welcome",
        "Willkommen {{ user.first_name }}",
    )
    .await;
    let user = user_speaking(pool, "fr-FR").await;
    let welcome = template_id(pool, "welcome").await;
    let data = json!({"user": {"first_name": "Maya"}});
    let by_pref = enqueue(
        pool,
        welcome,
        data.clone(),
        "transactional",
        json!({}),
        Some(user),
    )
    .await;
    let by_meta = enqueue(
        pool,
        welcome,
        data.clone(),
        "transactional",
        json!({"locale": "de-AT"}),
        Some(user),
    )
    .await;
    let no_user = enqueue(pool, welcome, data, "transactional", json!({}), None).await;
    // An address no user owns: the template's default locale (an address a user owns is
    // that user's, with or without `user_id`).
    sqlx::query("UPDATE email_queue SET to_email = 'guest@example.com' WHERE email_id = $1")
        .bind(no_user)
        .execute(pool)
        .await
        .unwrap();
    app(tsettings(&db, Some(&smtp), &dir, &[]))
        .drain()
        .await
        .unwrap();
    assert_eq!(stored(pool, by_pref).await.subject, "Bienvenue Maya");
    assert_eq!(stored(pool, by_meta).await.subject, "Willkommen Maya");
    assert_eq!(
        stored(pool, no_user).await.subject,
        "Welcome to Adopt Don't Shop, Maya!"
    );
}

#[tokio::test]
async fn check_reports_file_and_line_and_sync_with_an_error_writes_nothing() {
    let db = TestDb::new().await;
    let dir = copy_templates();
    edit(
        dir.path().join("welcome/body.html"),
        "{{ user.first_name }}!</h1>",
        "{{ user.first_name }!</h1>",
    );
    let broken = dir.path().join("welcome/body.html");

    let out = bin()
        .args(["templates", "check"])
        .env("ADOPT__TEMPLATES__DIR", dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!("{}:5:", broken.display())),
        "{stderr}"
    );
    assert!(stderr.contains("1 problem(s)"), "{stderr}");

    let out = sync_cli(&db, dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!("{}:5:", broken.display())),
        "{stderr}"
    );
    assert!(stderr.contains("nothing was written"), "{stderr}");
    let (templates, users): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM email_templates), (SELECT count(*) FROM users)",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!((templates, users), (0, 0));

    // The shipped directory checks clean.
    let out = bin()
        .args(["templates", "check"])
        .env("ADOPT__TEMPLATES__DIR", shipped_templates())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn a_retried_template_row_keeps_what_was_rendered_and_sends_it_again_unchanged() {
    let db = TestDb::new().await;
    let smtp = TestSmtp::start().await;
    let dir = copy_templates();
    sync(&db, dir.path(), false).await;
    let announcement = template_id(&db.pool, "announcement").await;
    let id = enqueue(
        &db.pool,
        announcement,
        example(dir.path(), "announcement"),
        "marketing",
        json!({}),
        None,
    )
    .await;
    smtp.add_rule(Rule::reply(Command::DataEnd, 451, "4.7.1 greylisted").once());
    let worker = app(tsettings(&db, Some(&smtp), dir.path(), &[]));
    worker.drain().await.unwrap();
    let first = stored(&db.pool, id).await;
    assert_eq!(first.status, "queued", "{:?}", first.failure_reason);
    assert!(first.html_content.contains("/t/c/"));
    assert_eq!(first.metadata.as_ref().unwrap()["templateVersion"], 1);

    // A new version meanwhile does not change what this email says.
    edit(
        dir.path().join("announcement/subject.txt"),
        "{{ announcement.headline }}",
        "New: {{ announcement.headline }}",
    );
    sync(&db, dir.path(), false).await;
    sqlx::query("UPDATE email_queue SET scheduled_for = NULL WHERE email_id = $1")
        .bind(id)
        .execute(&db.pool)
        .await
        .unwrap();
    worker.drain().await.unwrap();
    let second = stored(&db.pool, id).await;
    assert_eq!(second.status, "sent");
    assert_eq!(second.subject, first.subject);
    assert_eq!(second.html_content, first.html_content);
    let sent = smtp.messages();
    let parsed = mail_parser::MessageParser::default()
        .parse(&sent.last().unwrap().data)
        .unwrap();
    let html = parsed.body_html(0).unwrap().replace("\r\n", "\n");
    assert_eq!(html.trim(), first.html_content.trim());
    assert_eq!(tokens(&html, 'o').len(), 1, "one open pixel, not two");
}

#[tokio::test]
async fn a_renamed_directory_is_reported_and_names_match_whatever_their_case() {
    let db = TestDb::new().await;
    let dir = copy_templates();
    sync(&db, dir.path(), false).await;
    let reset_id = template_id(&db.pool, "password_reset").await;

    // The directory is renamed: the old row is still the category's active default, so the
    // new name cannot also be it, and nothing is written.
    let renamed = dir.path().join("password_reset_v2");
    std::fs::rename(dir.path().join("password_reset"), &renamed).unwrap();
    edit(
        renamed.join("template.toml"),
        "name = \"password_reset\"",
        "name = \"password_reset_v2\"",
    );
    let out = sync_cli(&db, dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("\"password_reset\" (not in this directory: was the directory renamed?) is already the active default of category password_reset")
            && stderr.contains("nothing was written"),
        "{stderr}"
    );
    let n: i64 =
        sqlx::query_scalar("SELECT count(*) FROM email_templates WHERE name = 'password_reset_v2'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(n, 0);

    // Not a default: created, with a note that the old name has the same content.
    edit(
        renamed.join("template.toml"),
        "is_default = true",
        "is_default = false",
    );
    let out = sync_cli(&db, dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("note: password_reset_v2 is new, but \"password_reset\" has the same subject and HTML and is not in this directory"),
        "{stderr}"
    );

    // A name differing only in case is the same template: no second row.
    let upper = dir.path().join("Welcome");
    std::fs::rename(dir.path().join("welcome"), &upper).unwrap();
    edit(
        upper.join("template.toml"),
        "name = \"welcome\"",
        "name = \"Welcome\"",
    );
    edit(upper.join("subject.txt"), "Welcome", "Welcome aboard");
    let report = sync(&db, dir.path(), false).await;
    assert!(
        matches!(
            outcome(&report, "Welcome"),
            SyncOutcome::NewVersion { from: 1, to: 2 }
        ),
        "{:?}",
        report.entries
    );
    let rows: Vec<String> =
        sqlx::query_scalar("SELECT name FROM email_templates WHERE lower(name) = 'welcome'")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(rows, ["welcome"]);
    assert_eq!(template_id(&db.pool, "password_reset").await, reset_id);
}

#[tokio::test]
async fn a_variant_of_a_deleted_parent_is_skipped_not_orphaned() {
    let db = TestDb::new().await;
    let dir = copy_templates();
    sync(&db, dir.path(), false).await;
    sqlx::query("UPDATE email_templates SET deleted_at = now() WHERE name = 'welcome'")
        .execute(&db.pool)
        .await
        .unwrap();
    let variant = dir.path().join("welcome.de-DE");
    std::fs::create_dir(&variant).unwrap();
    for f in ["subject.txt", "body.html"] {
        std::fs::copy(dir.path().join("welcome").join(f), variant.join(f)).unwrap();
    }
    let manifest = std::fs::read_to_string(dir.path().join("welcome/template.toml")).unwrap();
    std::fs::write(
        variant.join("template.toml"),
        manifest
            .replace(
                "name = \"welcome\"",
                "name = \"welcome.de-DE\"\nparent = \"welcome\"",
            )
            .replace("locale = \"en-US\"", "locale = \"de-DE\"")
            .replace("is_default = true", "is_default = false"),
    )
    .unwrap();
    let report = sync(&db, dir.path(), false).await;
    assert!(
        matches!(outcome(&report, "welcome.de-DE"), SyncOutcome::Skipped { reason } if reason.contains("its parent welcome is deleted")),
        "{:?}",
        report.entries
    );
    let n: i64 =
        sqlx::query_scalar("SELECT count(*) FROM email_templates WHERE name = 'welcome.de-DE'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(n, 0);
}
