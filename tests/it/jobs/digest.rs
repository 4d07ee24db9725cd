//! The digest: timing per time zone and DST, exactly once, held rows, sections, bad input.

use std::collections::BTreeMap;

use super::*;

// ---------------------------------------------------------------- digest

#[tokio::test]
async fn digest_arrives_once_at_each_users_own_nine_oclock_across_both_dst_changes() {
    let db = TestDb::new().await;
    digest_template(&db.pool).await;
    let zones = [
        ("utc@example.com", "UTC"),
        ("ny@example.com", "America/New_York"),
        ("kolkata@example.com", "Asia/Kolkata"),
    ];
    let mut users = Vec::new();
    for (email, zone) in zones {
        let id = user(&db.pool, email, "Maya").await;
        prefs(&db.pool, id, "daily", zone, None).await;
        users.push((id, email));
    }
    let jobs = jobs(&db);
    // Two weekends: clocks go forward on 8 March 2026 and back on 1 November 2026 in New York.
    for (last_sent, from) in [
        ("2026-03-06T23:00:00Z", "2026-03-07T00:00:00Z"),
        ("2026-10-30T23:00:00Z", "2026-10-31T00:00:00Z"),
    ] {
        sqlx::query("UPDATE email_preferences SET last_digest_sent = $1")
            .bind(naive(last_sent))
            .execute(&db.pool)
            .await
            .unwrap();
        // Every half hour for two days, with something to say each time.
        let mut now = at(from);
        for _ in 0..96 {
            for (id, _) in &users {
                if held_count(&db.pool, *id).await == 0 {
                    held(&db.pool, *id, "Something happened").await;
                }
            }
            run(&jobs, JobName::Digest, &now.to_rfc3339()).await;
            now += chrono::Duration::minutes(30);
        }
    }
    let mut sent: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for d in digests(&db.pool).await {
        let email = users.iter().find(|(id, _)| *id == d.user_id).unwrap().1;
        sent.entry(email)
            .or_default()
            .push(d.window_end().to_string());
    }
    let expect = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        sent["utc@example.com"],
        expect(&[
            "2026-03-07T09:00:00Z",
            "2026-03-08T09:00:00Z",
            "2026-10-31T09:00:00Z",
            "2026-11-01T09:00:00Z"
        ])
    );
    assert_eq!(
        sent["ny@example.com"],
        expect(&[
            "2026-03-07T14:00:00Z", // 09:00 EST
            "2026-03-08T13:00:00Z", // 09:00 EDT, the day clocks went forward
            "2026-10-31T13:00:00Z", // 09:00 EDT
            "2026-11-01T14:00:00Z"  // 09:00 EST, the day clocks went back
        ])
    );
    assert_eq!(
        sent["kolkata@example.com"],
        expect(&[
            "2026-03-07T03:30:00Z",
            "2026-03-08T03:30:00Z",
            "2026-10-31T03:30:00Z",
            "2026-11-01T03:30:00Z"
        ])
    );
}

#[tokio::test]
async fn digest_is_sent_once_however_often_and_from_however_many_processes_it_runs() {
    let db = TestDb::new().await;
    digest_template(&db.pool).await;
    let mut users = Vec::new();
    for i in 0..20 {
        let id = user(&db.pool, &format!("adopter{i}@example.com"), "Sam").await;
        prefs(&db.pool, id, "daily", "UTC", Some("2026-03-08T09:00:00Z")).await;
        held(&db.pool, id, "New dogs at Happy Tails").await;
        held(&db.pool, id, "Reminder: finish your application").await;
        users.push(id);
    }
    let spawn = |now: &str| {
        let mut cmd = tokio::process::Command::from(bin());
        cmd.args(["jobs", "run", "digest", "--now", now])
            .env("DATABASE_URL", &db.url)
            .env("RUST_LOG", "warn");
        cmd.output()
    };
    // Three processes, three slots a second apart: all three run, racing per user.
    let (a, b, c) = tokio::join!(
        spawn("2026-03-09T09:00:01Z"),
        spawn("2026-03-09T09:00:02Z"),
        spawn("2026-03-09T09:00:03Z")
    );
    for out in [a.unwrap(), b.unwrap(), c.unwrap()] {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Three processes, one slot: one runs it, the others see it claimed.
    let (a, b, c) = tokio::join!(
        spawn("2026-03-09T09:00:10Z"),
        spawn("2026-03-09T09:00:10Z"),
        spawn("2026-03-09T09:00:10Z")
    );
    let outputs: Vec<String> = [a.unwrap(), b.unwrap(), c.unwrap()]
        .iter()
        .map(|o| {
            assert!(o.status.success());
            String::from_utf8_lossy(&o.stdout).to_string()
        })
        .collect();
    let skipped = outputs
        .iter()
        .filter(|o| o.contains("outcome=skipped") && o.contains("already claimed by"))
        .count();
    assert_eq!(skipped, 2, "{outputs:?}");
    // And five more runs in this process.
    let jobs = jobs(&db);
    for minute in 1..=5 {
        run(
            &jobs,
            JobName::Digest,
            &format!("2026-03-09T09:0{minute}:00Z"),
        )
        .await;
    }

    let sent = digests(&db.pool).await;
    assert_eq!(sent.len(), 20, "one digest per user");
    for u in &users {
        let mine: Vec<&Digest> = sent.iter().filter(|d| d.user_id == *u).collect();
        assert_eq!(mine.len(), 1);
        assert_eq!(
            mine[0].template_data["held_notifications"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
        let carried: Vec<(String, Option<String>, Value)> = sqlx::query_as(
            "SELECT status::text, provider_id, metadata->'digestEmailId' FROM email_queue
             WHERE user_id = $1 AND NOT metadata ? 'digest'",
        )
        .bind(u)
        .fetch_all(&db.pool)
        .await
        .unwrap();
        for (status, provider, digest_id) in carried {
            assert_eq!(
                (status.as_str(), provider.as_deref()),
                ("sent", Some("digest"))
            );
            assert_eq!(digest_id, Value::String(mine[0].email_id.to_string()));
        }
    }
    let runs = run_log(&db.pool, "digest").await;
    assert_eq!(runs.len(), 3 + 1 + 5, "one run-log row per slot");
    assert!(
        runs.iter()
            .all(|(o, _, _, finished)| o == "succeeded" && *finished),
        "{runs:?}"
    );
    let digests_in_log: usize = runs
        .iter()
        .filter_map(|(_, _, detail, _)| detail.as_deref())
        .filter_map(|d| d.split(' ').find_map(|kv| kv.strip_prefix("digests=")))
        .map(|n| n.trim_end_matches(';').parse::<usize>().unwrap())
        .sum();
    assert_eq!(digests_in_log, 20, "{runs:?}");
}

#[tokio::test]
async fn held_notifications_ride_in_one_digest_and_are_never_sent_twice() {
    let db = TestDb::new().await;
    digest_template(&db.pool).await;
    let maya = user(&db.pool, "maya@example.com", "Maya").await;
    prefs(&db.pool, maya, "daily", "UTC", Some("2026-03-08T09:00:00Z")).await;
    // Two notifications inserted as another service would, one addressed only by email.
    let mut first = NewEmail::to("maya@example.com");
    first.email_type = "notification";
    first.subject = "New at Happy Tails: 3 dogs looking for homes".into();
    first.user_id = Some(maya);
    let first = first.insert(&db.pool).await;
    let mut second = NewEmail::to("MAYA@example.com");
    second.email_type = "notification";
    second.subject = "Reminder: finish your application for Luna".into();
    let second = second.insert(&db.pool).await;
    let outbox = tempfile::tempdir().unwrap();
    let worker = app(settings(&db, None, Some(outbox.path()), &[]));
    worker.drain().await.unwrap();
    assert_eq!(held_count(&db.pool, maya).await, 1);
    assert_eq!(row(&db.pool, second).await.status, "queued");

    let jobs = jobs(&db);
    let report = run(&jobs, JobName::Digest, "2026-03-09T09:00:00Z").await;
    assert!(report.detail.contains("held_included=2"), "{report}");
    let sent = digests(&db.pool).await;
    assert_eq!(sent.len(), 1);
    let d = &sent[0];
    let items = d.template_data["held_notifications"].as_array().unwrap();
    let subjects: Vec<&str> = items
        .iter()
        .map(|i| i["subject"].as_str().unwrap())
        .collect();
    assert_eq!(
        subjects,
        [
            "New at Happy Tails: 3 dogs looking for homes",
            "Reminder: finish your application for Luna"
        ]
    );
    assert!(items[0]["created_at"].as_str().unwrap().contains(" at "));
    assert_eq!(
        items[0]["summary"],
        "Hello Maya, see https://adoptdontshop.com/applications/1"
    );
    assert_eq!(d.template_data["period"], "daily");
    assert_eq!(d.template_data["user"]["first_name"], "Maya");
    assert_eq!(d.metadata["locale"], "en-GB");
    assert_eq!(d.metadata["digest"]["period"], "daily");
    assert_eq!(d.metadata["digest"]["windowStart"], "2026-03-08T09:00:00Z");
    for id in [first, second] {
        let r = row(&db.pool, id).await;
        assert_eq!(
            (r.status.as_str(), r.provider_id.as_deref()),
            ("sent", Some("digest"))
        );
        assert_eq!(r.sent_at, Some(naive("2026-03-09T09:00:00Z")));
    }

    // The worker never sends them again, and the next digest does not carry them.
    let before = outbox_files(outbox.path());
    worker.drain().await.unwrap();
    let sent_again: Vec<String> = outbox_files(outbox.path())
        .into_iter()
        .filter(|f| !before.contains(f))
        .collect();
    assert!(
        sent_again
            .iter()
            .all(|f| !f.contains(&first.to_string()) && !f.contains(&second.to_string())),
        "{sent_again:?}"
    );
    let report = run(&jobs, JobName::Digest, "2026-03-10T09:00:00Z").await;
    assert!(report.detail.contains("empty=1"), "{report}");
    assert_eq!(digests(&db.pool).await.len(), 1, "nothing new: no digest");
    let last: Option<NaiveDateTime> =
        sqlx::query_scalar("SELECT last_digest_sent FROM email_preferences WHERE user_id = $1")
            .bind(maya)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        last,
        Some(naive("2026-03-10T09:00:00Z")),
        "empty digest still advances"
    );
}

fn outbox_files(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn switching_to_immediate_releases_held_rows_and_never_unsubscribes_them() {
    let db = TestDb::new().await;
    let now_user = user(&db.pool, "now@example.com", "Ana").await;
    let never_user = user(&db.pool, "never@example.com", "Bo").await;
    let daily_user = user(&db.pool, "daily@example.com", "Cy").await;
    prefs(&db.pool, now_user, "immediate", "UTC", None).await;
    prefs(&db.pool, never_user, "never", "UTC", None).await;
    prefs(
        &db.pool,
        daily_user,
        "daily",
        "UTC",
        Some("2026-03-09T09:00:00Z"),
    )
    .await;
    let released = held(&db.pool, now_user, "Released").await;
    let dropped = held(&db.pool, never_user, "Dropped").await;
    let kept = held(&db.pool, daily_user, "Kept").await;

    let report = run(&jobs(&db), JobName::Digest, "2026-03-09T12:00:00Z").await;
    assert!(
        report.detail.contains("released=1") && report.detail.contains("unsubscribed=1"),
        "{report}"
    );
    let (scheduled, hold): (Option<NaiveDateTime>, bool) = sqlx::query_as(
        "SELECT scheduled_for, metadata ? 'digestHold' FROM email_queue WHERE email_id = $1",
    )
    .bind(released)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        (scheduled, hold),
        (None, false),
        "due at once, no longer held"
    );
    assert_eq!(row(&db.pool, released).await.status, "queued");
    assert_eq!(row(&db.pool, dropped).await.status, "unsubscribed");
    assert_eq!(row(&db.pool, kept).await.status, "queued");
    assert_eq!(
        held_count(&db.pool, daily_user).await,
        1,
        "not due yet: kept"
    );

    // The released row goes out on its own.
    let outbox = tempfile::tempdir().unwrap();
    app(settings(&db, None, Some(outbox.path()), &[]))
        .drain()
        .await
        .unwrap();
    assert_eq!(row(&db.pool, released).await.status, "sent");
}

#[tokio::test]
async fn digest_sections_cover_unread_chats_application_changes_and_favourites() {
    let db = TestDb::new().await;
    digest_template(&db.pool).await;
    let maya = user(&db.pool, "maya@example.com", "Maya").await;
    prefs(
        &db.pool,
        maya,
        "weekly",
        "Europe/London",
        Some("2026-03-02T09:00:00Z"),
    )
    .await;
    let jo = user(&db.pool, "jo@happytails.example", "Jo").await;
    let tails = rescue(&db.pool, "Happy Tails Rescue").await;
    let biscuit = pet(&db.pool, tails, "Biscuit").await;
    let clover = pet(&db.pool, tails, "Clover").await;
    let rosie = pet(&db.pool, tails, "Rosie").await;
    let app_id = application(&db.pool, maya, biscuit, tails, "interview_scheduled", None).await;
    sqlx::query(
        "UPDATE applications SET updated_at = '2026-03-05 15:30:00' WHERE application_id = $1",
    )
    .bind(app_id)
    .execute(&db.pool)
    .await
    .unwrap();
    // A favourite adopted this week, another still available, one changed last week.
    for p in [clover, rosie, biscuit] {
        sqlx::query("INSERT INTO user_favorites (user_id, pet_id) VALUES ($1, $2)")
            .bind(maya)
            .bind(p)
            .execute(&db.pool)
            .await
            .unwrap();
    }
    sqlx::query(
        "UPDATE pets SET status = 'ADOPTED', updated_at = '2026-03-06 12:00:00' WHERE pet_id = $1",
    )
    .bind(clover)
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query(
        "UPDATE pets SET status = 'PENDING', updated_at = '2026-02-20 12:00:00' WHERE pet_id = $1",
    )
    .bind(rosie)
    .execute(&db.pool)
    .await
    .unwrap();
    // A chat: one message read, two unread from Jo (the latest in markdown), one of Maya's own.
    let chat: Uuid = sqlx::query_scalar(
        "INSERT INTO chats (rescue_id, application_id) VALUES ($1, $2) RETURNING chat_id",
    )
    .bind(tails)
    .bind(app_id)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO chat_participants (chat_id, participant_id, role, last_read_at)
         VALUES ($1, $2, 'user', '2026-03-04 10:00:00'), ($1, $3, 'rescue', '2026-03-06 10:00:00')",
    )
    .bind(chat)
    .bind(maya)
    .bind(jo)
    .execute(&db.pool)
    .await
    .unwrap();
    for (sender, content, format, at) in [
        (jo, "Read already", "plain", "2026-03-04 09:00:00"),
        (
            jo,
            "Are you free on Saturday?",
            "plain",
            "2026-03-05 11:00:00",
        ),
        (maya, "My own message", "plain", "2026-03-05 12:00:00"),
        (
            jo,
            "**Great!** See [the map](https://maps.example/x) for <b>directions</b>",
            "markdown",
            "2026-03-05 16:05:00",
        ),
    ] {
        sqlx::query(
            "INSERT INTO messages (chat_id, sender_id, content, content_format, created_at)
             VALUES ($1, $2, $3, $4::message_format_enum, $5)",
        )
        .bind(chat)
        .bind(sender)
        .bind(content)
        .bind(format)
        .bind(naive(&format!("{}Z", at.replace(' ', "T"))))
        .execute(&db.pool)
        .await
        .unwrap();
    }

    // 2026-03-09 is a Monday; 09:00 in London is 09:00 UTC in March.
    let jobs = jobs(&db);
    let report = run(&jobs, JobName::Digest, "2026-03-09T08:59:00Z").await;
    assert!(!report.detail.contains("digests="), "not yet: {report}");
    run(&jobs, JobName::Digest, "2026-03-09T09:00:00Z").await;
    let sent = digests(&db.pool).await;
    assert_eq!(sent.len(), 1);
    let data = &sent[0].template_data;
    assert_eq!(data["period"], "weekly");
    let chats = data["unread_chats"].as_array().unwrap();
    assert_eq!(chats.len(), 1, "{data}");
    assert_eq!(chats[0]["count"], 2);
    assert_eq!(chats[0]["sender_name"], "Jo");
    assert_eq!(chats[0]["rescue_name"], "Happy Tails Rescue");
    assert_eq!(chats[0]["preview"], "Great! See the map for directions");
    assert_eq!(
        chats[0]["chat_url"],
        format!("https://adoptdontshop.com/chats/{chat}")
    );
    assert_eq!(
        chats[0]["last_message_at"],
        "Thursday 5 March 2026 at 16:05"
    );
    let apps = data["application_updates"].as_array().unwrap();
    assert_eq!(apps.len(), 1);
    assert_eq!(apps[0]["pet_name"], "Biscuit");
    assert_eq!(apps[0]["status"], "interview_scheduled");
    assert_eq!(apps[0]["status_label"], "Interview booked");
    let favs = data["favourite_changes"].as_array().unwrap();
    assert_eq!(favs.len(), 1, "{data}");
    assert_eq!(favs[0]["pet_name"], "Clover");
    assert_eq!(favs[0]["status_label"], "Adopted");
    assert_eq!(data["held_notifications"], Value::Array(vec![]));
}

#[tokio::test]
async fn bad_input_is_skipped_and_the_rest_of_the_batch_goes_on() {
    let db = TestDb::new().await;
    let mars = user(&db.pool, "mars@example.com", "Mo").await;
    let gone = user(&db.pool, "gone@example.com", "Gus").await;
    let suspended = user(&db.pool, "suspended@example.com", "Sue").await;
    let fine = user(&db.pool, "fine@example.com", "Fay").await;
    for u in [mars, gone, suspended, fine] {
        prefs(&db.pool, u, "daily", "UTC", Some("2026-03-08T09:00:00Z")).await;
        held(&db.pool, u, "Something happened").await;
    }
    sqlx::query("UPDATE email_preferences SET timezone = 'Mars/Olympus' WHERE user_id = $1")
        .bind(mars)
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query("UPDATE users SET deleted_at = '2026-03-01' WHERE user_id = $1")
        .bind(gone)
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query("UPDATE users SET status = 'SUSPENDED' WHERE user_id = $1")
        .bind(suspended)
        .execute(&db.pool)
        .await
        .unwrap();
    let jobs = jobs(&db);

    // No template yet: nothing is claimed, and the run says why.
    let report = run(&jobs, JobName::Digest, "2026-03-09T09:00:00Z").await;
    assert!(
        report
            .detail
            .contains("template notification_digest not found"),
        "{report}"
    );
    assert!(digests(&db.pool).await.is_empty());
    let unchanged: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM email_preferences WHERE last_digest_sent = '2026-03-08 09:00:00'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    // Deleted and suspended users cannot get a digest: their windows are closed.
    assert_eq!(unchanged, 2);

    digest_template(&db.pool).await;
    let report = run(&jobs, JobName::Digest, "2026-03-09T09:05:00Z").await;
    assert_eq!(report.outcome, RunOutcome::Succeeded);
    assert!(
        report.detail.contains("digests=2")
            && report.detail.contains("invalid_timezones=1")
            && report.detail.contains("inactive_users=2"),
        "{report}"
    );
    let to: Vec<Uuid> = digests(&db.pool).await.iter().map(|d| d.user_id).collect();
    assert!(
        to.contains(&mars) && to.contains(&fine) && to.len() == 2,
        "{to:?}"
    );
    // Their held rows ended as the gate would end them (suppressed), never sent.
    assert_eq!(held_count(&db.pool, gone).await, 0);
    assert_eq!(held_count(&db.pool, suspended).await, 0);
}

#[tokio::test]
async fn after_downtime_one_catch_up_digest_is_sent_not_one_per_missed_day() {
    let db = TestDb::new().await;
    digest_template(&db.pool).await;
    let maya = user(&db.pool, "maya@example.com", "Maya").await;
    // Last digest five days ago; the worker was down since.
    prefs(&db.pool, maya, "daily", "UTC", Some("2026-03-04T09:00:00Z")).await;
    held(&db.pool, maya, "Held during the outage").await;
    let jobs = jobs(&db);
    run(&jobs, JobName::Digest, "2026-03-09T11:40:00Z").await;
    held(&db.pool, maya, "Arrived after the catch-up").await;
    for now in ["2026-03-09T11:45:00Z", "2026-03-09T23:59:59Z"] {
        run(&jobs, JobName::Digest, now).await;
    }
    let sent = digests(&db.pool).await;
    assert_eq!(sent.len(), 1, "one catch-up digest");
    assert_eq!(
        sent[0].metadata["digest"]["windowStart"],
        "2026-03-04T09:00:00Z"
    );
    assert_eq!(sent[0].metadata["digest"]["slot"], "2026-03-09T09:00:00Z");
    // Back on schedule the next morning.
    run(&jobs, JobName::Digest, "2026-03-10T09:00:00Z").await;
    let sent = digests(&db.pool).await;
    assert_eq!(sent.len(), 2);
    assert_eq!(
        sent[1].metadata["digest"]["windowStart"],
        "2026-03-09T11:40:00Z"
    );
}
