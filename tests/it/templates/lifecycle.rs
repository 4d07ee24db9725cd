//! Templates as authors and admins change them: deleted rows, forced names, inactive
//! templates, locale variants named by id, pinned versions of a family.

use super::*;

async fn rows_named(pool: &PgPool, name: &str) -> Vec<(Uuid, bool)> {
    sqlx::query_as(
        "SELECT template_id, deleted_at IS NOT NULL FROM email_templates WHERE name = $1 ORDER BY created_at",
    )
    .bind(name)
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn sync_forcing(db: &TestDb, dir: &Path, names: &[&str]) -> SyncReport {
    let app = app(tsettings(db, None, dir, &[]));
    let force = Force::Names(names.iter().map(|n| n.to_string()).collect());
    app.templates.sync(dir, &force).await.expect("sync").0
}

async fn exec(pool: &PgPool, sql: &'static str) {
    sqlx::query(sql).execute(pool).await.unwrap();
}

#[tokio::test]
async fn sync_never_resurrects_a_deleted_template_and_force_by_name_restores_it() {
    let db = TestDb::new().await;
    let dir = copy_templates();
    sync(&db, dir.path(), false).await;
    let id = template_id(&db.pool, "announcement").await;
    exec(
        &db.pool,
        "UPDATE email_templates SET deleted_at = now() WHERE name = 'announcement'",
    )
    .await;

    for force in [false, true] {
        let report = sync(&db, dir.path(), force).await;
        match outcome(&report, "announcement") {
            SyncOutcome::Skipped { reason } => assert!(
                reason.contains("deleted in the database")
                    && reason.contains("use --force announcement to restore it"),
                "{reason}"
            ),
            other => panic!("{other:?}"),
        }
        assert_eq!(rows_named(&db.pool, "announcement").await, vec![(id, true)]);
    }

    let report = sync_forcing(&db, dir.path(), &["announcement"]).await;
    assert_eq!(
        outcome(&report, "announcement"),
        &SyncOutcome::AttributesUpdated { version: 1 }
    );
    assert_eq!(
        rows_named(&db.pool, "announcement").await,
        vec![(id, false)]
    );
    // Restored as the files say: the next plain sync has nothing to do.
    let report = sync(&db, dir.path(), false).await;
    assert_eq!(
        outcome(&report, "announcement"),
        &SyncOutcome::Unchanged { version: 1 }
    );
    // A name that is not a template of the directory writes nothing.
    let app = app(tsettings(&db, None, dir.path(), &[]));
    let err = app
        .templates
        .sync(dir.path(), &Force::Names(vec!["anouncement".into()]))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("anouncement"), "{err}");
}

#[tokio::test]
async fn force_with_names_overwrites_only_those_and_the_skip_says_what_it_would_lose() {
    let db = TestDb::new().await;
    let dir = copy_templates();
    sync(&db, dir.path(), false).await;
    exec(&db.pool, "UPDATE email_templates SET html_content = html_content || ' ' WHERE name IN ('welcome', 'reminder')").await;
    exec(
        &db.pool,
        "UPDATE email_templates SET status = 'inactive' WHERE name = 'newsletter'",
    )
    .await;

    let report = sync_forcing(&db, dir.path(), &["welcome"]).await;
    assert_eq!(
        outcome(&report, "welcome"),
        &SyncOutcome::NewVersion { from: 1, to: 2 }
    );
    match outcome(&report, "reminder") {
        SyncOutcome::Skipped { reason } => assert!(
            reason.contains(
                "use --force reminder to overwrite them (its current content is kept in versions)"
            ),
            "{reason}"
        ),
        other => panic!("{other:?}"),
    }
    match outcome(&report, "newsletter") {
        SyncOutcome::Skipped { reason } => assert!(
            reason.contains("differs from the files in status")
                && reason
                    .contains("attributes keep no copy in versions; now status = \"inactive\""),
            "{reason}"
        ),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn an_inactive_template_fails_its_rows_instead_of_becoming_another_email() {
    let db = TestDb::new().await;
    let smtp = TestSmtp::start().await;
    let dir = copy_templates();
    sync(&db, dir.path(), false).await;
    let reinstated = template_id(&db.pool, "account_reinstated").await;
    let data = example(dir.path(), "account_reinstated");
    exec(
        &db.pool,
        "UPDATE email_templates SET status = 'inactive' WHERE name = 'account_reinstated'",
    )
    .await;
    let plain = enqueue(
        &db.pool,
        reinstated,
        data.clone(),
        "system",
        json!({}),
        None,
    )
    .await;
    let pinned = enqueue(
        &db.pool,
        reinstated,
        data,
        "system",
        json!({"templateVersion": 1}),
        None,
    )
    .await;
    app(tsettings(&db, Some(&smtp), dir.path(), &[]))
        .drain()
        .await
        .unwrap();
    let p = stored(&db.pool, plain).await;
    assert_eq!(p.status, "failed");
    assert!(
        p.failure_reason
            .as_deref()
            .unwrap()
            .starts_with("template account_reinstated is inactive: "),
        "{:?}",
        p.failure_reason
    );
    // The pinned version is still the content it was enqueued for.
    let q = stored(&db.pool, pinned).await;
    assert_eq!(q.status, "sent", "{:?}", q.failure_reason);
    assert_eq!(q.metadata.unwrap()["templateVersion"], 1);
}

#[tokio::test]
async fn a_variant_named_by_id_renders_in_its_locale_and_a_pin_belongs_to_the_named_family() {
    let db = TestDb::new().await;
    let smtp = TestSmtp::start().await;
    let dir = copy_templates();
    sync(&db, dir.path(), false).await;
    let pool = &db.pool;
    let fr = add_template(
        pool,
        "welcome.fr-FR",
        "fr-FR",
        Some("welcome"),
        "welcome",
        "Bienvenue {{ user.first_name }}",
    )
    .await;
    let user = user_speaking(pool, "en-US").await;
    // welcome gets a version 2; its French variant is still at 1.
    edit(
        dir.path().join("welcome/subject.txt"),
        "Welcome to",
        "Version two: welcome to",
    );
    sync(&db, dir.path(), false).await;
    let welcome = template_id(pool, "welcome").await;
    let data = json!({"user": {"first_name": "Maya"}});
    let by_variant = enqueue(pool, fr, data.clone(), "transactional", json!({}), None).await;
    let by_variant_user = enqueue(
        pool,
        fr,
        data.clone(),
        "transactional",
        json!({}),
        Some(user),
    )
    .await;
    let pinned = enqueue(
        pool,
        welcome,
        data,
        "transactional",
        json!({"locale": "fr-FR", "templateVersion": 2}),
        None,
    )
    .await;
    app(tsettings(&db, Some(&smtp), dir.path(), &[]))
        .drain()
        .await
        .unwrap();
    assert_eq!(stored(pool, by_variant).await.subject, "Bienvenue Maya");
    assert_eq!(
        stored(pool, by_variant_user).await.subject,
        "Bienvenue Maya"
    );
    let p = stored(pool, pinned).await;
    assert_eq!(
        (p.status.as_str(), p.subject.as_str()),
        ("sent", "Version two: welcome to Adopt Don't Shop, Maya!"),
        "{:?}",
        p.failure_reason
    );
}

#[tokio::test]
async fn an_edit_in_sql_that_leaves_updated_at_alone_reaches_a_running_process() {
    let db = TestDb::new().await;
    let smtp = TestSmtp::start().await;
    let dir = copy_templates();
    sync(&db, dir.path(), false).await;
    let welcome = template_id(&db.pool, "welcome").await;
    let data = json!({"user": {"first_name": "Maya"}});
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
    // An admin tool edits the subject and writes updated_at back as it was.
    exec(
        &db.pool,
        "UPDATE email_templates SET subject = 'Edited: hello {{ user.first_name }}', updated_at = updated_at
         WHERE name = 'welcome'",
    )
    .await;
    let second = enqueue(&db.pool, welcome, data, "transactional", json!({}), None).await;
    worker.drain().await.unwrap();
    assert_eq!(stored(&db.pool, second).await.subject, "Edited: hello Maya");
}
