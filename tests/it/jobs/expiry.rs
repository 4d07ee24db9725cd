//! Application and moderator-action expiry.

use std::collections::BTreeMap;

use super::*;

// ---------------------------------------------------------------- application expiry

#[tokio::test]
async fn expired_applications_change_exactly_the_right_rows_once() {
    let db = TestDb::new().await;
    let template_id = template(
        &db.pool,
        "application_update",
        "transactional",
        "application_update",
    )
    .await;
    let tails = rescue(&db.pool, "Happy Tails Rescue").await;
    let maya = user(&db.pool, "maya@example.com", "Maya").await;
    sqlx::query(
        "INSERT INTO email_preferences (user_id, timezone, language) VALUES ($1, 'America/New_York', 'en-US')",
    )
    .bind(maya)
    .execute(&db.pool)
    .await
    .unwrap();
    let past = Some("2026-03-01T03:00:00Z");
    let future = Some("2026-04-01T00:00:00Z");
    let mut ids = BTreeMap::new();
    for (label, status, expires) in [
        ("submitted_past", "submitted", past),
        ("conditional_past", "conditionally_approved", past),
        ("review_future", "under_review", future),
        ("approved_past", "approved", past),
        ("rejected_past", "rejected", past),
        ("draft_no_expiry", "draft", None),
        ("deleted_past", "submitted", past),
        ("pet_deleted_past", "home_visit_scheduled", past),
    ] {
        let p = pet(&db.pool, tails, label).await;
        ids.insert(
            label,
            application(&db.pool, maya, p, tails, status, expires).await,
        );
    }
    sqlx::query("UPDATE applications SET deleted_at = '2026-02-15' WHERE application_id = $1")
        .bind(ids["deleted_past"])
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE pets SET deleted_at = '2026-02-20' WHERE pet_id =
             (SELECT pet_id FROM applications WHERE application_id = $1)",
    )
    .bind(ids["pet_deleted_past"])
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query(
        "UPDATE applications SET decision_at = '2026-02-10 10:00:00' WHERE application_id = $1",
    )
    .bind(ids["conditional_past"])
    .execute(&db.pool)
    .await
    .unwrap();

    let jobs = jobs(&db);
    let report = run(&jobs, JobName::ExpireApplications, "2026-03-09T12:00:00Z").await;
    assert_eq!(report.rows_affected, 3, "{report}");
    assert!(report.detail.contains("no_email_pet_deleted=1"), "{report}");

    let state = |id: Uuid| {
        let pool = db.pool.clone();
        async move {
            sqlx::query_as::<_, (String, Option<NaiveDateTime>, Option<NaiveDateTime>)>(
                "SELECT status::text, updated_at, decision_at FROM applications WHERE application_id = $1",
            )
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    let now = naive("2026-03-09T12:00:00Z");
    for label in ["submitted_past", "conditional_past", "pet_deleted_past"] {
        let (status, updated, _) = state(ids[label]).await;
        assert_eq!(
            (status.as_str(), updated),
            ("expired", Some(now)),
            "{label}"
        );
    }
    assert_eq!(
        state(ids["conditional_past"]).await.2,
        Some(naive("2026-02-10T10:00:00Z")),
        "decision_at untouched"
    );
    for (label, status) in [
        ("review_future", "under_review"),
        ("approved_past", "approved"),
        ("rejected_past", "rejected"),
        ("draft_no_expiry", "draft"),
        ("deleted_past", "submitted"),
    ] {
        assert_eq!(state(ids[label]).await.0, status, "{label}");
    }

    let emails: Vec<Queued> = sqlx::query_as(
        "SELECT template_id, template_data, metadata, type::text AS kind, user_id FROM email_queue
         ORDER BY template_data->'pet'->>'name'",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        emails.len(),
        2,
        "no email for the application whose pet was deleted"
    );
    let Queued {
        template_id: tid,
        template_data: data,
        metadata: meta,
        kind,
        user_id: uid,
    } = &emails[1];
    assert_eq!(*tid, Some(template_id));
    assert_eq!((kind.as_str(), *uid), ("transactional", Some(maya)));
    assert_eq!(meta["locale"], "en-US");
    assert_eq!(data["application"]["status"], "expired");
    assert_eq!(data["application"]["id"], ids["submitted_past"].to_string());
    // 03:00 UTC on 1 March is still 28 February in New York.
    assert_eq!(
        data["application"]["expires_at"],
        "Saturday 28 February 2026"
    );
    assert_eq!(data["applicant"]["first_name"], "Maya");
    assert_eq!(data["pet"]["name"], "submitted_past");
    assert_eq!(data["pet"]["age"], "3 years");
    assert_eq!(data["rescue"]["name"], "Happy Tails Rescue");

    let audits: Vec<(String, String, String, Option<Uuid>, Value, NaiveDateTime)> = sqlx::query_as(
        "SELECT service, action, category, user_id, metadata, \"timestamp\" FROM audit_logs ORDER BY metadata->>'previousStatus'",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(audits.len(), 3);
    for (service, action, category, uid, meta, ts) in &audits {
        assert_eq!(
            (service.as_str(), action.as_str(), category.as_str()),
            ("adopt-worker", "APPLICATION_EXPIRED", "application")
        );
        assert_eq!((*uid, *ts), (Some(maya), now));
        assert!(
            ids.values()
                .any(|id| meta["applicationId"] == id.to_string())
        );
        assert_eq!(meta["rescueId"], tails.to_string());
    }

    // Running again, later, changes nothing more.
    let again = run(&jobs, JobName::ExpireApplications, "2026-03-09T13:00:00Z").await;
    assert_eq!(again.rows_affected, 0, "{again}");
    let counts: (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM email_queue), (SELECT count(*) FROM audit_logs)",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(counts, (2, 3));
    let log = run_log(&db.pool, "expire-applications").await;
    assert_eq!(log.len(), 2);
    assert_eq!(log[0].0, "succeeded");
    assert_eq!(log[0].1, Some(3));
}

#[tokio::test]
async fn applications_expire_in_batches_and_without_a_template_still_expire() {
    let db = TestDb::new().await;
    let tails = rescue(&db.pool, "Happy Tails Rescue").await;
    let maya = user(&db.pool, "maya@example.com", "Maya").await;
    for i in 0..7 {
        let p = pet(&db.pool, tails, &format!("Pet {i}")).await;
        application(
            &db.pool,
            maya,
            p,
            tails,
            "submitted",
            Some("2026-03-01T00:00:00Z"),
        )
        .await;
    }
    let jobs = Jobs::new(
        db.pool.clone(),
        &settings(&db, None, None, &[("ADOPT__JOBS__BATCH_SIZE", "3")]),
    );
    let report = run(&jobs, JobName::ExpireApplications, "2026-03-09T12:00:00Z").await;
    assert_eq!(report.rows_affected, 7);
    assert!(
        report
            .detail
            .contains("template application_update not found: 7 email(s) skipped"),
        "{report}"
    );
    let expired: i64 =
        sqlx::query_scalar("SELECT count(*) FROM applications WHERE status = 'expired'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(expired, 7);
}

#[tokio::test]
async fn an_application_expires_at_its_expires_at_like_a_moderator_action() {
    let db = TestDb::new().await;
    let tails = rescue(&db.pool, "Happy Tails Rescue").await;
    let maya = user(&db.pool, "maya@example.com", "Maya").await;
    let p = pet(&db.pool, tails, "Biscuit").await;
    let id = application(
        &db.pool,
        maya,
        p,
        tails,
        "submitted",
        Some("2026-03-09T12:00:00Z"),
    )
    .await;
    let status = || async {
        sqlx::query_scalar::<_, String>(
            "SELECT status::text FROM applications WHERE application_id = $1",
        )
        .bind(id)
        .fetch_one(&db.pool)
        .await
        .unwrap()
    };
    let jobs = jobs(&db);
    run(&jobs, JobName::ExpireApplications, "2026-03-09T11:59:59Z").await;
    assert_eq!(status().await, "submitted");
    // expires_at <= now, the same boundary as expire-moderation.
    run(&jobs, JobName::ExpireApplications, "2026-03-09T12:00:00Z").await;
    assert_eq!(status().await, "expired");
}

// ---------------------------------------------------------------- moderation expiry

#[tokio::test]
async fn moderator_actions_expire_and_users_are_reinstated_only_when_nothing_else_holds() {
    let db = TestDb::new().await;
    let template_id = template(&db.pool, "account_reinstated", "system", "system_alert").await;
    let moderator = user(&db.pool, "mod@adoptdontshop.com", "Mod").await;
    let free = user(&db.pool, "free@example.com", "Fran").await;
    let still_banned = user(&db.pool, "banned@example.com", "Ben").await;
    let forever = user(&db.pool, "forever@example.com", "Flo").await;
    let warned = user(&db.pool, "warned@example.com", "Wes").await;
    for u in [free, still_banned, forever] {
        sqlx::query("UPDATE users SET status = 'SUSPENDED' WHERE user_id = $1")
            .bind(u)
            .execute(&db.pool)
            .await
            .unwrap();
    }
    let past = Some("2026-03-09T08:00:00Z");
    let free_suspension = action(&db.pool, moderator, free, "user_suspended", past).await;
    let free_old_ban = action(
        &db.pool,
        moderator,
        free,
        "user_banned",
        Some("2026-03-08T00:00:00Z"),
    )
    .await;
    let banned_suspension = action(&db.pool, moderator, still_banned, "user_suspended", past).await;
    let banned_ban = action(
        &db.pool,
        moderator,
        still_banned,
        "user_banned",
        Some("2026-04-01T00:00:00Z"),
    )
    .await;
    let forever_suspension = action(&db.pool, moderator, forever, "user_suspended", past).await;
    let forever_ban = action(&db.pool, moderator, forever, "user_banned", None).await;
    let warning = action(&db.pool, moderator, warned, "warning_issued", past).await;

    let jobs = jobs(&db);
    let report = run(&jobs, JobName::ExpireModeration, "2026-03-09T09:00:00Z").await;
    assert!(
        report.detail.contains("actions_expired=5") && report.detail.contains("users_reinstated=1"),
        "{report}"
    );
    let active = |id: Uuid| {
        let pool = db.pool.clone();
        async move {
            sqlx::query_scalar::<_, Option<bool>>(
                "SELECT is_active FROM moderator_actions WHERE action_id = $1",
            )
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    for id in [
        free_suspension,
        free_old_ban,
        banned_suspension,
        forever_suspension,
        warning,
    ] {
        assert_eq!(active(id).await, Some(false));
    }
    for id in [banned_ban, forever_ban] {
        assert_eq!(active(id).await, Some(true));
    }
    let status = |id: Uuid| {
        let pool = db.pool.clone();
        async move {
            sqlx::query_scalar::<_, String>("SELECT status::text FROM users WHERE user_id = $1")
                .bind(id)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    assert_eq!(status(free).await, "ACTIVE");
    assert_eq!(status(still_banned).await, "SUSPENDED");
    assert_eq!(status(forever).await, "SUSPENDED");
    assert_eq!(status(warned).await, "ACTIVE");

    let emails: Vec<(Option<Uuid>, Option<Uuid>, Value, String)> =
        sqlx::query_as("SELECT template_id, user_id, template_data, type::text FROM email_queue")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(emails.len(), 1);
    assert_eq!(
        (emails[0].0, emails[0].1, emails[0].3.as_str()),
        (Some(template_id), Some(free), "system")
    );
    assert_eq!(emails[0].2["action"]["type_label"], "Suspension");
    assert_eq!(
        emails[0].2["action"]["expired_at"],
        "Monday 9 March 2026 at 08:00"
    );
    assert_eq!(emails[0].2["user"]["first_name"], "Fran");

    let audits: Vec<(String, Option<Uuid>)> =
        sqlx::query_as("SELECT action, user_id FROM audit_logs ORDER BY action, user_id")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    let expired_rows = audits
        .iter()
        .filter(|(a, _)| a == "MODERATION_ACTION_EXPIRED")
        .count();
    assert_eq!(expired_rows, 5);
    let reinstated: Vec<_> = audits
        .iter()
        .filter(|(a, _)| a == "USER_REINSTATED")
        .collect();
    assert_eq!(
        reinstated,
        vec![&("USER_REINSTATED".to_string(), Some(free))]
    );

    // Nothing more on a second run; the ban ending later reinstates Ben then.
    let again = run(&jobs, JobName::ExpireModeration, "2026-03-09T09:01:00Z").await;
    assert_eq!(again.rows_affected, 0, "{again}");
    run(&jobs, JobName::ExpireModeration, "2026-04-01T00:00:00Z").await;
    assert_eq!(status(still_banned).await, "ACTIVE");
    assert_eq!(status(forever).await, "SUSPENDED");
}
