//! Scheduled jobs, driven with `--now` time travel against a real database: digests per
//! user time zone (DST included), exactly once across runs and processes; application and
//! moderator-action expiry; audit_logs partitions; the scheduler itself.

use std::collections::BTreeMap;
use std::time::Duration;

use adopt_worker::jobs::{JobName, Jobs, RunOutcome, RunReport, parse_now};
use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::*;

// ---------------------------------------------------------------- fixtures

fn at(s: &str) -> DateTime<Utc> {
    parse_now(s).unwrap()
}

fn naive(s: &str) -> NaiveDateTime {
    at(s).naive_utc()
}

fn jobs(db: &TestDb) -> Jobs {
    Jobs::new(db.pool.clone(), &settings(db, None, None, &[]))
}

async fn run(jobs: &Jobs, job: JobName, now: &str) -> RunReport {
    let report = jobs.run_once(job, at(now)).await.unwrap();
    assert_ne!(report.outcome, RunOutcome::Failed, "{report}");
    report
}

/// A user with a name of their own (the helper's users are all called Maya).
async fn user(pool: &PgPool, email: &str, first_name: &str) -> Uuid {
    let id = insert_user(pool, email).await;
    sqlx::query("UPDATE users SET first_name = $2 WHERE user_id = $1")
        .bind(id)
        .bind(first_name)
        .execute(pool)
        .await
        .unwrap();
    id
}

/// Inserts an active template with the given name, as `templates sync` would.
async fn template(pool: &PgPool, name: &str, kind: &str, category: &str) -> Uuid {
    let author = match sqlx::query_scalar::<_, Uuid>(
        "SELECT user_id FROM users WHERE email = 'system@adoptdontshop.com'",
    )
    .fetch_optional(pool)
    .await
    .unwrap()
    {
        Some(id) => id,
        None => insert_user(pool, "system@adoptdontshop.com").await,
    };
    sqlx::query_scalar(
        "INSERT INTO email_templates (name, type, category, status, subject, html_content, created_by, is_default)
         VALUES ($1, $2::template_type_enum, $3::template_category_enum, 'active', 'subject', '<p>body</p>', $4, true)
         RETURNING template_id",
    )
    .bind(name)
    .bind(kind)
    .bind(category)
    .bind(author)
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn digest_template(pool: &PgPool) -> Uuid {
    template(
        pool,
        "notification_digest",
        "notification",
        "notification_digest",
    )
    .await
}

/// Digest preferences: frequency, zone, local time, and when the last digest went.
async fn prefs(
    pool: &PgPool,
    user: Uuid,
    frequency: &str,
    timezone: &str,
    last_sent: Option<&str>,
) {
    sqlx::query(
        "INSERT INTO email_preferences (user_id, digest_frequency, timezone, digest_time, last_digest_sent, language)
         VALUES ($1, $2::digest_frequency_enum, $3, '09:00', $4, 'en-GB')",
    )
    .bind(user)
    .bind(frequency)
    .bind(timezone)
    .bind(last_sent.map(naive))
    .execute(pool)
    .await
    .unwrap();
}

/// A notification already held for the user's digest (what the worker's gate does).
async fn held(pool: &PgPool, user: Uuid, subject: &str) -> Uuid {
    sqlx::query_scalar(
        "INSERT INTO email_queue (from_email, to_email, subject, html_content, text_content, type, user_id,
                                  scheduled_for, metadata)
         SELECT 'noreply@adoptdontshop.com', u.email, $2, '<p>' || $2 || '</p>', $2 || ' (details)',
                'notification', u.user_id, '9999-12-31 00:00:00',
                jsonb_build_object('digestHold', jsonb_build_object('heldAt', '2026-01-01T00:00:00Z'))
         FROM users u WHERE u.user_id = $1
         RETURNING email_id",
    )
    .bind(user)
    .bind(subject)
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn held_count(pool: &PgPool, user: Uuid) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM email_queue WHERE user_id = $1 AND status = 'queued' AND metadata ? 'digestHold'",
    )
    .bind(user)
    .fetch_one(pool)
    .await
    .unwrap()
}

#[derive(Debug, sqlx::FromRow)]
struct Digest {
    email_id: Uuid,
    user_id: Uuid,
    template_data: Value,
    metadata: Value,
}

impl Digest {
    fn window_end(&self) -> &str {
        self.metadata["digest"]["windowEnd"].as_str().unwrap()
    }
}

/// An enqueued email as the tests look at it.
#[derive(Debug, sqlx::FromRow)]
struct Queued {
    template_id: Option<Uuid>,
    template_data: Value,
    metadata: Value,
    kind: String,
    user_id: Option<Uuid>,
}

async fn digests(pool: &PgPool) -> Vec<Digest> {
    sqlx::query_as(
        "SELECT email_id, user_id, template_data, metadata FROM email_queue
         WHERE metadata ? 'digest' ORDER BY metadata->'digest'->>'windowEnd', to_email",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn rescue(pool: &PgPool, name: &str) -> Uuid {
    sqlx::query_scalar(
        "INSERT INTO rescues (name, email, address, city, state, zip_code, contact_person, phone)
         VALUES ($1, lower(replace($1, ' ', '')) || '@rescue.example', '1 Main St', 'Portland', 'OR', '97201', 'Jo', '(503) 555-0142')
         RETURNING rescue_id",
    )
    .bind(name)
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn pet(pool: &PgPool, rescue: Uuid, name: &str) -> Uuid {
    sqlx::query_scalar(
        "INSERT INTO pets (rescue_id, name, age_group, gender, type, breed, size, energy_level,
                           vaccination_status, spay_neuter_status, age_years, updated_at)
         VALUES ($1, $2, 'ADULT', 'MALE', 'DOG', 'Labrador mix', 'LARGE', 'HIGH', 'UP_TO_DATE', 'NEUTERED', 3,
                 '2026-01-01 00:00:00')
         RETURNING pet_id",
    )
    .bind(rescue)
    .bind(name)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// An application in `status`, expiring at `expires_at`, last updated long ago.
async fn application(
    pool: &PgPool,
    user: Uuid,
    pet: Uuid,
    rescue: Uuid,
    status: &str,
    expires_at: Option<&str>,
) -> Uuid {
    sqlx::query_scalar(
        "INSERT INTO applications (user_id, pet_id, rescue_id, status, expires_at, submitted_at, updated_at)
         VALUES ($1, $2, $3, $4::application_status_enum, $5, '2026-02-01 10:00:00', '2026-02-01 10:00:00')
         RETURNING application_id",
    )
    .bind(user)
    .bind(pet)
    .bind(rescue)
    .bind(status)
    .bind(expires_at.map(naive))
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn run_log(pool: &PgPool, job: &str) -> Vec<(String, Option<i64>, Option<String>, bool)> {
    sqlx::query_as(
        "SELECT outcome, rows_affected, detail, finished_at IS NOT NULL FROM worker_job_runs
         WHERE job_name = $1 ORDER BY slot",
    )
    .bind(job)
    .fetch_all(pool)
    .await
    .unwrap()
}

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
    assert_eq!(unchanged, 4);

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
    assert_eq!(held_count(&db.pool, gone).await, 1, "kept, not sent");
    assert_eq!(held_count(&db.pool, suspended).await, 1, "kept for later");
}

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

// ---------------------------------------------------------------- moderation expiry

async fn action(
    pool: &PgPool,
    moderator: Uuid,
    target: Uuid,
    kind: &str,
    expires_at: Option<&str>,
) -> Uuid {
    sqlx::query_scalar(
        "INSERT INTO moderator_actions (moderator_id, target_entity_type, target_entity_id, target_user_id,
                                        action_type, severity, reason, expires_at, is_active)
         VALUES ($1, 'user', $2, $2, $3::action_type_enum, 'high', 'Repeated messages after being asked to stop', $4, true)
         RETURNING action_id",
    )
    .bind(moderator)
    .bind(target)
    .bind(kind)
    .bind(expires_at.map(naive))
    .fetch_one(pool)
    .await
    .unwrap()
}

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

// ---------------------------------------------------------------- audit partitions

/// The names listed after `label` in a `jobs run` line ("created: a, b; ...").
fn listed(out: &str, label: &str) -> Vec<String> {
    out.split("; ")
        .flat_map(|part| part.split_once(label).map(|(_, rest)| rest.trim()))
        .flat_map(|rest| rest.split(", "))
        .map(str::to_string)
        .collect()
}

async fn partition_of(pool: &PgPool, action: &str) -> String {
    sqlx::query_scalar("SELECT tableoid::regclass::text FROM audit_logs WHERE action = $1")
        .bind(action)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn audit_partitions(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = 'audit_logs'::regclass ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn audit_row(pool: &PgPool, action: &str, ts: &str) {
    sqlx::query(
        "INSERT INTO audit_logs (service, action, category, \"timestamp\") VALUES ('test', $1, 'test', $2)",
    )
    .bind(action)
    .bind(naive(ts))
    .execute(pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn audit_partitions_are_created_ahead_old_ones_dropped_and_default_rows_moved() {
    let db = TestDb::new().await;
    // Rows that arrived before their month's partition existed sit in the default.
    audit_row(&db.pool, "EARLY_MAY", "2026-05-03T10:00:00Z").await;
    audit_row(&db.pool, "FAR_FUTURE", "2027-01-01T00:00:00Z").await;
    assert_eq!(
        partition_of(&db.pool, "EARLY_MAY").await,
        "audit_logs_default"
    );
    // Old partitions, one named like ours, one not, and one within the retention.
    for ddl in [
        "CREATE TABLE audit_logs_y2023m06 PARTITION OF audit_logs FOR VALUES FROM ('2023-06-01') TO ('2023-07-01')",
        "CREATE TABLE audit_logs_archive_2022 PARTITION OF audit_logs FOR VALUES FROM ('2022-01-01') TO ('2023-01-01')",
        "CREATE TABLE audit_logs_y2024m05 PARTITION OF audit_logs FOR VALUES FROM ('2024-05-01') TO ('2024-06-01')",
    ] {
        sqlx::query(ddl).execute(&db.pool).await.unwrap();
    }
    audit_row(&db.pool, "OLD", "2023-06-15T00:00:00Z").await;

    // Three processes at once, different slots: the advisory lock serialises them.
    let spawn = |now: &str| {
        let mut cmd = tokio::process::Command::from(bin());
        cmd.args(["jobs", "run", "audit-partitions", "--now", now])
            .env("DATABASE_URL", &db.url)
            .env("RUST_LOG", "warn");
        cmd.output()
    };
    let (a, b, c) = tokio::join!(
        spawn("2026-03-15T12:00:00Z"),
        spawn("2026-03-15T12:00:01Z"),
        spawn("2026-03-15T12:00:02Z")
    );
    let outs: Vec<String> = [a.unwrap(), b.unwrap(), c.unwrap()]
        .iter()
        .map(|o| {
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            String::from_utf8_lossy(&o.stdout).to_string()
        })
        .collect();
    // Each month is created once, by whichever process got the lock first.
    let mut created: Vec<String> = outs.iter().flat_map(|o| listed(o, "created: ")).collect();
    created.sort();
    assert_eq!(
        created,
        [
            "audit_logs_y2026m03",
            "audit_logs_y2026m04",
            "audit_logs_y2026m05",
            "audit_logs_y2026m06"
        ],
        "{outs:?}"
    );
    let mut dropped: Vec<String> = outs.iter().flat_map(|o| listed(o, "dropped: ")).collect();
    dropped.sort();
    assert_eq!(
        dropped,
        ["audit_logs_y2023m06", "audit_logs_y2024m01"],
        "past the 24 months, named like ours: {outs:?}"
    );
    assert_eq!(
        outs.iter()
            .filter(|o| o.contains("rows_moved_from_default=1"))
            .count(),
        1
    );
    assert_eq!(
        audit_partitions(&db.pool).await,
        [
            "audit_logs_archive_2022",
            "audit_logs_default",
            "audit_logs_y2024m05",
            "audit_logs_y2026m03",
            "audit_logs_y2026m04",
            "audit_logs_y2026m05",
            "audit_logs_y2026m06",
        ],
        "current + 3 months exist; only our names are dropped"
    );
    assert_eq!(
        partition_of(&db.pool, "EARLY_MAY").await,
        "audit_logs_y2026m05"
    );
    assert_eq!(
        partition_of(&db.pool, "FAR_FUTURE").await,
        "audit_logs_default"
    );
    let old: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_logs WHERE action = 'OLD'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(old, 0, "dropped with its partition");

    // A new row for next month lands in its own partition; the indexes came along.
    audit_row(&db.pool, "NEXT_MONTH", "2026-04-02T08:00:00Z").await;
    assert_eq!(
        partition_of(&db.pool, "NEXT_MONTH").await,
        "audit_logs_y2026m04"
    );
    let indexes: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_indexes WHERE tablename = 'audit_logs_y2026m04'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(indexes, 6, "primary key + the five audit_logs indexes");

    // A month later, one more partition; nothing else changes.
    let report = run(&jobs(&db), JobName::AuditPartitions, "2026-04-01T00:00:00Z").await;
    assert_eq!(report.detail, "created: audit_logs_y2026m07", "{report}");
}

// ---------------------------------------------------------------- CLI and scheduler

#[tokio::test]
async fn jobs_run_names_the_valid_jobs_and_rejects_a_bad_now() {
    let out = bin()
        .args(["jobs", "run", "digests"])
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.trim(),
        "adopt-worker: unknown job \"digests\"; valid jobs: digest, expire-applications, expire-moderation, audit-partitions, reclaim"
    );
    let out = bin()
        .args(["jobs", "run", "digest", "--now", "tomorrow"])
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid --now \"tomorrow\""));
}

#[tokio::test]
async fn reclaim_runs_as_a_job_with_the_given_now() {
    let db = TestDb::new().await;
    let id = NewEmail::to("maya@example.com").insert(&db.pool).await;
    adopt_worker::queue::claim_due(&db.pool, 10).await.unwrap();
    let jobs = jobs(&db);
    // The test settings' lease is 30 s: not yet at +10 s, taken back at +60 s.
    let soon = (Utc::now() + chrono::Duration::seconds(10)).to_rfc3339();
    assert_eq!(run(&jobs, JobName::Reclaim, &soon).await.rows_affected, 0);
    let later = (Utc::now() + chrono::Duration::seconds(60)).to_rfc3339();
    assert_eq!(run(&jobs, JobName::Reclaim, &later).await.rows_affected, 1);
    assert_eq!(row(&db.pool, id).await.status, "queued");
}

#[tokio::test]
async fn the_scheduler_runs_each_slot_once_across_processes_and_logs_it() {
    let db = TestDb::new().await;
    let moderator = user(&db.pool, "mod@adoptdontshop.com", "Mod").await;
    let target = user(&db.pool, "target@example.com", "Tia").await;
    sqlx::query("UPDATE users SET status = 'SUSPENDED' WHERE user_id = $1")
        .bind(target)
        .execute(&db.pool)
        .await
        .unwrap();
    action(
        &db.pool,
        moderator,
        target,
        "user_suspended",
        Some("2026-01-01T00:00:00Z"),
    )
    .await;
    let every_second = [
        ("ADOPT__JOBS__EXPIRE_MODERATION_SCHEDULE", "* * * * * *"),
        ("ADOPT__JOBS__DIGEST_SCHEDULE", "off"),
        ("ADOPT__JOBS__EXPIRE_APPLICATIONS_SCHEDULE", "off"),
        ("ADOPT__JOBS__AUDIT_PARTITIONS_SCHEDULE", "off"),
        ("ADOPT__WORKER__LEASE_SECS", "6"),
    ];
    let outbox = tempfile::tempdir().unwrap();
    let a = Running::start(settings(&db, None, Some(outbox.path()), &every_second)).await;
    let b = Running::start(settings(&db, None, Some(outbox.path()), &every_second)).await;
    let pool = db.pool.clone();
    let ran = eventually(Duration::from_secs(10), || {
        let pool = pool.clone();
        async move {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM worker_job_runs WHERE job_name = 'expire-moderation' AND outcome = 'succeeded'",
            )
            .fetch_one(&pool)
            .await
            .unwrap();
            let reclaims: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM worker_job_runs WHERE job_name = 'reclaim' AND outcome = 'succeeded'",
            )
            .fetch_one(&pool)
            .await
            .unwrap();
            n >= 3 && reclaims >= 1
        }
    })
    .await;
    a.stop().await;
    b.stop().await;
    assert!(ran, "{:?}", run_log(&db.pool, "expire-moderation").await);
    let slots: Vec<(DateTime<Utc>, String)> = sqlx::query_as(
        "SELECT slot, outcome FROM worker_job_runs WHERE job_name = 'expire-moderation' ORDER BY slot",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    for (slot, outcome) in &slots {
        assert_eq!(slot.timestamp_subsec_nanos(), 0, "slots are cron ticks");
        assert!(outcome == "succeeded" || outcome == "running", "{slots:?}");
    }
    let reclaim_slots: Vec<DateTime<Utc>> =
        sqlx::query_scalar("SELECT slot FROM worker_job_runs WHERE job_name = 'reclaim'")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert!(
        reclaim_slots.iter().all(|s| s.timestamp() % 2 == 0),
        "every lease/3 = 2 s, aligned"
    );
    let status: String = sqlx::query_scalar("SELECT status::text FROM users WHERE user_id = $1")
        .bind(target)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(status, "ACTIVE", "the scheduled run did the work");
    let reinstated: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_logs WHERE action = 'USER_REINSTATED'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(reinstated, 1, "once, though two processes ran every second");
}
