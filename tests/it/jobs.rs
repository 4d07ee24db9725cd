//! Scheduled jobs, driven with `--now` time travel against a real database. This file holds
//! the fixtures and the CLI and scheduler tests; each job's tests are in `jobs/`.

mod digest;
mod digest_switch;
mod expiry;
mod partitions;
mod retention;

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
        "adopt-worker: unknown job \"digests\"; valid jobs: digest, expire-applications, expire-moderation, audit-partitions, reclaim, retention"
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
