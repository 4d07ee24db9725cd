//! The digest as users change: first windows, switching in and out, ineligible recipients,
//! held rows that cannot be read.

use super::*;

async fn last_digest_sent(pool: &PgPool, user: Uuid) -> Option<NaiveDateTime> {
    sqlx::query_scalar("SELECT last_digest_sent FROM email_preferences WHERE user_id = $1")
        .bind(user)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn set_frequency(pool: &PgPool, user: Uuid, frequency: &str) {
    sqlx::query(
        "UPDATE email_preferences SET digest_frequency = $2::digest_frequency_enum WHERE user_id = $1",
    )
    .bind(user)
    .bind(frequency)
    .execute(pool)
    .await
    .unwrap();
}

async fn exec(pool: &PgPool, sql: &str, user: Uuid) {
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(user)
        .execute(pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn switching_into_a_digest_starts_a_new_window_at_the_switch() {
    let db = TestDb::new().await;
    digest_template(&db.pool).await;
    let maya = user(&db.pool, "maya@example.com", "Maya").await;
    // On daily until 20 days ago, then immediate: the old last_digest_sent is still there.
    prefs(
        &db.pool,
        maya,
        "immediate",
        "Europe/Berlin",
        Some("2026-02-17T08:00:00Z"),
    )
    .await;
    let jobs = jobs(&db);
    run(&jobs, JobName::Digest, "2026-03-08T12:00:00Z").await;
    assert_eq!(
        last_digest_sent(&db.pool, maya).await,
        None,
        "no window on immediate"
    );
    // An application update she saw by email before the switch.
    let tails = rescue(&db.pool, "Happy Tails Rescue").await;
    let biscuit = pet(&db.pool, tails, "Biscuit").await;
    let app_id = application(&db.pool, maya, biscuit, tails, "interview_scheduled", None).await;
    sqlx::query(
        "UPDATE applications SET updated_at = '2026-03-09 08:30:00' WHERE application_id = $1",
    )
    .bind(app_id)
    .execute(&db.pool)
    .await
    .unwrap();

    // 10:00 in Berlin (09:00 UTC): she switches to daily.
    set_frequency(&db.pool, maya, "daily").await;
    let report = run(&jobs, JobName::Digest, "2026-03-09T09:00:00Z").await;
    assert!(report.detail.contains("baselines=1"), "{report}");
    held(&db.pool, maya, "After the switch").await;
    run(&jobs, JobName::Digest, "2026-03-09T09:05:00Z").await;
    assert!(digests(&db.pool).await.is_empty(), "nothing at 10:05");
    // The next 09:00 in Berlin (08:00 UTC) covers the switch to the slot only.
    run(&jobs, JobName::Digest, "2026-03-10T08:00:00Z").await;
    let sent = digests(&db.pool).await;
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0].metadata["digest"]["windowStart"],
        "2026-03-09T09:00:00Z"
    );
    assert_eq!(
        sent[0].metadata["digest"]["windowEnd"],
        "2026-03-10T08:00:00Z"
    );
    assert_eq!(
        sent[0].template_data["application_updates"],
        Value::Array(vec![])
    );
    let held_items = sent[0].template_data["held_notifications"]
        .as_array()
        .unwrap();
    assert_eq!(held_items.len(), 1);
}

#[tokio::test]
async fn first_digest_and_reinstated_users_get_a_baseline_not_a_digest() {
    let db = TestDb::new().await;
    digest_template(&db.pool).await;
    let fresh = user(&db.pool, "fresh@example.com", "Fay").await;
    let suspended = user(&db.pool, "suspended@example.com", "Sue").await;
    let odd = user(&db.pool, "odd@example.com", "Odd").await;
    prefs(&db.pool, fresh, "daily", "UTC", None).await;
    prefs(
        &db.pool,
        suspended,
        "daily",
        "UTC",
        Some("2026-02-01T09:00:00Z"),
    )
    .await;
    prefs(&db.pool, odd, "daily", "UTC", None).await;
    exec(
        &db.pool,
        "UPDATE users SET status = 'SUSPENDED' WHERE user_id = $1",
        suspended,
    )
    .await;
    // A value other services can write and chrono cannot represent.
    exec(
        &db.pool,
        "UPDATE email_preferences SET last_digest_sent = '-infinity' WHERE user_id = $1",
        odd,
    )
    .await;
    let jobs = jobs(&db);
    let report = run(&jobs, JobName::Digest, "2026-03-09T10:00:00Z").await;
    assert!(report.detail.contains("baselines=2"), "{report}");
    assert!(digests(&db.pool).await.is_empty());
    assert_eq!(
        last_digest_sent(&db.pool, fresh).await,
        Some(naive("2026-03-09T10:00:00Z"))
    );
    assert_eq!(
        last_digest_sent(&db.pool, odd).await,
        Some(naive("2026-03-09T10:00:00Z"))
    );
    assert_eq!(
        last_digest_sent(&db.pool, suspended).await,
        None,
        "window closed"
    );

    // Reinstated at 11:00: the next run records her baseline; no digest reaching back.
    exec(
        &db.pool,
        "UPDATE users SET status = 'ACTIVE' WHERE user_id = $1",
        suspended,
    )
    .await;
    run(&jobs, JobName::Digest, "2026-03-09T11:00:00Z").await;
    assert_eq!(
        last_digest_sent(&db.pool, suspended).await,
        Some(naive("2026-03-09T11:00:00Z"))
    );
    for u in [fresh, suspended, odd] {
        held(&db.pool, u, "Something happened").await;
    }
    run(&jobs, JobName::Digest, "2026-03-10T09:00:00Z").await;
    let sent = digests(&db.pool).await;
    let starts: Vec<(Uuid, &str)> = sent
        .iter()
        .map(|d| {
            (
                d.user_id,
                d.metadata["digest"]["windowStart"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(starts.len(), 3, "{starts:?}");
    assert!(starts.contains(&(fresh, "2026-03-09T10:00:00Z")));
    assert!(starts.contains(&(odd, "2026-03-09T10:00:00Z")));
    assert!(starts.contains(&(suspended, "2026-03-09T11:00:00Z")));
}

#[tokio::test]
async fn held_rows_of_recipients_who_became_ineligible_end_as_the_gate_would_end_them() {
    let db = TestDb::new().await;
    digest_template(&db.pool).await;
    let cases = [
        (
            "blacklisted@example.com",
            "UPDATE email_preferences SET is_blacklisted = true, blacklist_reason = 'hard bounce' WHERE user_id = $1",
        ),
        (
            "disabled@example.com",
            "UPDATE email_preferences SET is_email_enabled = false WHERE user_id = $1",
        ),
        (
            "global@example.com",
            "UPDATE email_preferences SET global_unsubscribe = true WHERE user_id = $1",
        ),
        (
            "category@example.com",
            "UPDATE email_preferences SET preferences = '[{\"type\": \"messages\", \"enabled\": false}]' WHERE user_id = $1",
        ),
        (
            "nodigest@example.com",
            "UPDATE email_preferences SET preferences = '[{\"type\": \"notification_digest\", \"enabled\": false}]' WHERE user_id = $1",
        ),
        (
            "deleted@example.com",
            "UPDATE users SET deleted_at = '2026-03-01' WHERE user_id = $1",
        ),
        (
            "suspended@example.com",
            "UPDATE users SET status = 'SUSPENDED' WHERE user_id = $1",
        ),
        ("fine@example.com", "SELECT $1"),
    ];
    let mut rows = Vec::new();
    for (email, change) in cases {
        let id = user(&db.pool, email, "Sam").await;
        prefs(&db.pool, id, "daily", "UTC", Some("2026-03-09T09:00:00Z")).await;
        let held_id = held(&db.pool, id, "Something happened").await;
        exec(&db.pool, change, id).await;
        rows.push((email, held_id));
    }
    // A recipient without a user row, blacklisted after a bounce.
    let stranger = user(&db.pool, "stranger@example.com", "Sam").await;
    prefs(
        &db.pool,
        stranger,
        "daily",
        "UTC",
        Some("2026-03-09T09:00:00Z"),
    )
    .await;
    let stranger_row = held(&db.pool, stranger, "For a stranger").await;
    sqlx::query("INSERT INTO email_suppressions (email, is_blacklisted, blacklist_reason) VALUES ('stranger@example.com', true, 'complaint')")
        .execute(&db.pool)
        .await
        .unwrap();

    let report = run(&jobs(&db), JobName::Digest, "2026-03-09T12:00:00Z").await;
    assert!(
        report.detail.contains("suppressed=4") && report.detail.contains("unsubscribed=4"),
        "{report}"
    );
    let mut ended = Vec::new();
    for (email, id) in rows.iter().chain([&("stranger@example.com", stranger_row)]) {
        let r = row(&db.pool, *id).await;
        let hold: bool = sqlx::query_scalar(
            "SELECT metadata ? 'digestHold' FROM email_queue WHERE email_id = $1",
        )
        .bind(id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
        assert_eq!(
            hold,
            r.status == "queued",
            "{email}: marker only while held"
        );
        ended.push((*email, r.status, r.failure_reason.unwrap_or_default()));
    }
    let expect = [
        (
            "blacklisted@example.com",
            "failed",
            "suppressed: recipient is blacklisted (hard bounce)",
        ),
        (
            "disabled@example.com",
            "unsubscribed",
            "recipient has email disabled (is_email_enabled = false)",
        ),
        (
            "global@example.com",
            "unsubscribed",
            "recipient unsubscribed from all optional email (global_unsubscribe)",
        ),
        (
            "category@example.com",
            "unsubscribed",
            "recipient opted out of \"messages\" email",
        ),
        (
            "nodigest@example.com",
            "unsubscribed",
            "recipient unsubscribed from the notification digest",
        ),
        (
            "deleted@example.com",
            "failed",
            "suppressed: recipient user is deleted",
        ),
        (
            "suspended@example.com",
            "failed",
            "suppressed: recipient user is SUSPENDED",
        ),
        ("fine@example.com", "queued", ""),
        (
            "stranger@example.com",
            "failed",
            "suppressed: recipient is blacklisted (complaint)",
        ),
    ];
    let got: Vec<(&str, &str, &str)> = ended
        .iter()
        .map(|(e, s, r)| (*e, s.as_str(), r.as_str()))
        .collect();
    assert_eq!(got, expect);
}

#[tokio::test]
async fn a_deleted_users_address_is_held_like_their_user_id_rows_then_suppressed() {
    let db = TestDb::new().await;
    let gone = user(&db.pool, "gone@example.com", "Gus").await;
    prefs(&db.pool, gone, "daily", "UTC", Some("2026-03-09T09:00:00Z")).await;
    exec(
        &db.pool,
        "UPDATE users SET deleted_at = '2026-03-01' WHERE user_id = $1",
        gone,
    )
    .await;
    let mut by_id = NewEmail::to("gone@example.com");
    by_id.email_type = "notification";
    by_id.user_id = Some(gone);
    let by_id = by_id.insert(&db.pool).await;
    let mut by_address = NewEmail::to("Gone@example.com");
    by_address.email_type = "notification";
    let by_address = by_address.insert(&db.pool).await;
    let outbox = tempfile::tempdir().unwrap();
    app(settings(&db, None, Some(outbox.path()), &[]))
        .drain()
        .await
        .unwrap();
    assert_eq!(row(&db.pool, by_id).await.status, "queued");
    assert_eq!(
        row(&db.pool, by_address).await.status,
        "queued",
        "held too, not sent"
    );
    assert_eq!(
        std::fs::read_dir(outbox.path())
            .map(|d| d.count())
            .unwrap_or(0),
        0
    );

    run(&jobs(&db), JobName::Digest, "2026-03-09T12:00:00Z").await;
    for id in [by_id, by_address] {
        let r = row(&db.pool, id).await;
        assert_eq!(
            (r.status.as_str(), r.failure_reason.as_deref()),
            ("failed", Some("suppressed: recipient user is deleted"))
        );
    }
}

/// JSON `null` metadata is no metadata: held and carried. Any other value that is not an
/// object is refused as the API refuses it (issue 19 item 4), before any hold.
#[tokio::test]
async fn notifications_with_null_metadata_are_held_and_carried_other_non_objects_fail() {
    let db = TestDb::new().await;
    digest_template(&db.pool).await;
    let maya = user(&db.pool, "maya@example.com", "Maya").await;
    prefs(&db.pool, maya, "daily", "UTC", Some("2026-03-08T09:00:00Z")).await;
    let mut ids = Vec::new();
    for metadata in ["null", "[1, 2]", "\"text\""] {
        let mut n = NewEmail::to("maya@example.com");
        n.email_type = "notification";
        n.user_id = Some(maya);
        let id = n.insert(&db.pool).await;
        sqlx::query("UPDATE email_queue SET metadata = $2::jsonb WHERE email_id = $1")
            .bind(id)
            .bind(metadata)
            .execute(&db.pool)
            .await
            .unwrap();
        ids.push(id);
    }
    app(settings(
        &db,
        None,
        Some(tempfile::tempdir().unwrap().path()),
        &[],
    ))
    .drain()
    .await
    .unwrap();
    assert_eq!(held_count(&db.pool, maya).await, 1);
    for (id, kind) in [(ids[1], "an array"), (ids[2], "a string")] {
        let r = row(&db.pool, id).await;
        assert_eq!(
            (r.status.as_str(), r.failure_reason.as_deref()),
            (
                "failed",
                Some(
                    format!(
                        "the row cannot be sent as stored: metadata must be a JSON object, got {kind}"
                    )
                    .as_str()
                )
            )
        );
    }
    let report = run(&jobs(&db), JobName::Digest, "2026-03-09T09:00:00Z").await;
    assert!(report.detail.contains("held_included=1"), "{report}");
    let r = row(&db.pool, ids[0]).await;
    assert_eq!(
        (r.status.as_str(), r.provider_id.as_deref()),
        ("sent", Some("digest"))
    );
}

#[tokio::test]
async fn a_held_row_that_cannot_be_read_ends_alone_and_the_digest_goes_on() {
    let db = TestDb::new().await;
    digest_template(&db.pool).await;
    let maya = user(&db.pool, "maya@example.com", "Maya").await;
    prefs(&db.pool, maya, "daily", "UTC", Some("2026-03-08T09:00:00Z")).await;
    let good = held(&db.pool, maya, "Readable").await;
    let huge_meta = held(&db.pool, maya, "Huge metadata").await;
    let huge_data = held(&db.pool, maya, "Huge data").await;
    let deep = held(&db.pool, maya, "Deep data").await;
    let forever = held(&db.pool, maya, "Created at minus infinity").await;
    let set = |id: Uuid, sql: &'static str| {
        let pool = db.pool.clone();
        async move {
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(id)
                .execute(&pool)
                .await
                .unwrap();
        }
    };
    set(
        huge_meta,
        "UPDATE email_queue SET metadata = metadata || '{\"n\": 1e400}' WHERE email_id = $1",
    )
    .await;
    set(
        huge_data,
        "UPDATE email_queue SET template_data = '{\"n\": 1e400}' WHERE email_id = $1",
    )
    .await;
    set(
        deep,
        "UPDATE email_queue SET template_data = (repeat('[', 100) || repeat(']', 100))::jsonb WHERE email_id = $1",
    )
    .await;
    set(
        forever,
        "UPDATE email_queue SET created_at = '-infinity' WHERE email_id = $1",
    )
    .await;

    let report = run(&jobs(&db), JobName::Digest, "2026-03-09T09:00:00Z").await;
    assert!(
        report.detail.contains("held_included=2") && report.detail.contains("unreadable=3"),
        "{report}"
    );
    for (id, column) in [
        (huge_meta, "metadata"),
        (huge_data, "template_data"),
        (deep, "template_data"),
    ] {
        let r = row(&db.pool, id).await;
        let reason = r.failure_reason.unwrap_or_default();
        assert_eq!(r.status, "failed");
        assert!(
            reason.starts_with(&format!("held for the digest but unreadable: {column} ")),
            "{reason}"
        );
    }
    for id in [good, forever] {
        assert_eq!(row(&db.pool, id).await.status, "sent");
    }
}
