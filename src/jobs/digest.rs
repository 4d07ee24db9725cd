//! `digest`: one `notification_digest` email per user and period, at the user's
//! `digest_time` in their time zone (weekly: Mondays, monthly: the 1st), carrying the
//! notifications held for them, unread chat messages, application status changes and
//! changes to favourited pets. Also, every run: held rows of users now on `immediate` are
//! released, those of users on `never` end `unsubscribed`, those of users the send-time gate
//! would refuse end as it would end them, and users who left the digest (or cannot get one)
//! lose their window, so the first run that sees them on it again only records a baseline.
//!
//! Exactly once per user and period: the user is claimed with
//! `UPDATE email_preferences SET last_digest_sent = <now> WHERE ... last_digest_sent < <slot>`
//! in the same transaction that enqueues the digest and marks the held rows it carries, so
//! concurrent runs send one digest and a held row rides in one digest only.

mod content;
mod slot;

use chrono::{DateTime, NaiveDateTime, NaiveTime, Utc};
use chrono_tz::Tz;
use serde_json::{Value, json};
use sqlx::{FromRow, PgPool, Row};
use tracing::{debug, info, warn};
use uuid::Uuid;

use super::support::{self, TemplateIds, rfc3339, user_zone};
use super::{Done, JobError, Jobs};
use crate::queue::{self, EmailType, NewEmail};
use content::Window;
use slot::{Period, latest_slot};

const TEMPLATE: &str = "notification_digest";
/// Consecutive per-user database errors after which the run stops (the database is
/// probably unreachable; the next run catches up).
const MAX_CONSECUTIVE_ERRORS: u32 = 5;

/// A user on a digest schedule whose preferences allow optional email.
#[derive(Debug, sqlx::FromRow)]
struct Candidate {
    user_id: Uuid,
    email: String,
    first_name: String,
    last_name: String,
    frequency: String,
    digest_time: Option<NaiveTime>,
    timezone: Option<String>,
    language: Option<String>,
    last_digest_sent: Option<NaiveDateTime>,
    /// `users.status = 'ACTIVE'` and not deleted.
    active: bool,
}

/// Preferences that let a user receive a digest (alias `p`). Users outside it, or not
/// active, have no digest window: [`close_windows`] clears their `last_digest_sent`.
const ELIGIBLE: &str = "p.digest_frequency IN ('daily', 'weekly', 'monthly')
    AND COALESCE(p.is_email_enabled, true)
    AND NOT COALESCE(p.global_unsubscribe, false)
    AND NOT COALESCE(p.is_blacklisted, false)
    AND NOT (COALESCE(p.preferences, '[]') @> '[{\"type\": \"notification_digest\", \"enabled\": false}]')";

#[derive(Debug, Default)]
struct Tally {
    sent: u64,
    empty: u64,
    raced: u64,
    held: u64,
    released: u64,
    unsubscribed: u64,
    suppressed: u64,
    baselines: u64,
    unreadable: u64,
    invalid_timezones: u64,
    inactive_users: u64,
    no_template: u64,
    errors: u64,
}

/// Held rows that could not be read ended `failed` either way (`unreadable`).
enum Sent {
    Digest {
        held: u64,
        unreadable: u64,
    },
    Empty {
        unreadable: u64,
    },
    /// Another run claimed this user's slot first.
    Raced,
}

pub(super) async fn run(jobs: &Jobs, now: DateTime<Utc>) -> Result<Done, JobError> {
    let pool = jobs.pool();
    let ended = queue::end_held_for_ineligible(pool, now.naive_utc()).await?;
    let mut t = Tally {
        released: queue::release_held_for_immediate(pool, now.naive_utc()).await?,
        unsubscribed: ended.unsubscribed
            + queue::unsubscribe_held_for_never(pool, now.naive_utc()).await?,
        suppressed: ended.suppressed,
        ..Tally::default()
    };
    close_windows(pool).await?;
    let template = TemplateIds::default().get(pool, TEMPLATE).await?;
    let page_size = i64::from(jobs.settings().batch_size);
    let mut after = Uuid::nil();
    let mut consecutive_errors = 0;
    let mut aborted = None;
    'pages: loop {
        let page = candidates(pool, after, page_size).await?;
        let Some(last) = page.last() else { break };
        after = last.0;
        for (user_id, decoded) in &page {
            let c = match decoded {
                Ok(c) => c,
                Err(e) => {
                    warn!(%user_id, error = %e, "preferences of this user cannot be read; no digest");
                    t.unreadable += 1;
                    continue;
                }
            };
            match process(jobs, c, template, now, &mut t).await {
                Ok(()) => consecutive_errors = 0,
                Err(e) => {
                    warn!(user_id = %c.user_id, error = %e, "digest for this user failed; the next run retries");
                    t.errors += 1;
                    consecutive_errors += 1;
                    if consecutive_errors >= MAX_CONSECUTIVE_ERRORS {
                        aborted = Some(format!(
                            "stopped after {consecutive_errors} consecutive errors, last: {e}"
                        ));
                        break 'pages;
                    }
                }
            }
        }
    }
    let notes = [
        support::counts(&[
            ("digests", t.sent),
            ("empty", t.empty),
            ("held_included", t.held),
            ("released", t.released),
            ("unsubscribed", t.unsubscribed),
            ("suppressed", t.suppressed),
            ("baselines", t.baselines),
            ("unreadable", t.unreadable),
            ("raced", t.raced),
            ("invalid_timezones", t.invalid_timezones),
            ("inactive_users", t.inactive_users),
            ("errors", t.errors),
        ]),
        if t.no_template > 0 {
            format!(
                "template {TEMPLATE} not found: {} due digest(s) skipped",
                t.no_template
            )
        } else {
            String::new()
        },
        aborted.unwrap_or_default(),
    ];
    Ok(Done {
        rows_affected: t.sent + t.held + t.released + t.unsubscribed + t.suppressed + t.unreadable,
        detail: support::detail(notes),
        failed: t.errors > 0,
    })
}

/// One page of digest users, each decoded on its own (a row that cannot be read is that
/// user's problem only). `last_digest_sent` that is not finite reads as none: no window.
async fn candidates(
    pool: &PgPool,
    after: Uuid,
    limit: i64,
) -> Result<Vec<(Uuid, Result<Candidate, sqlx::Error>)>, sqlx::Error> {
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "SELECT u.user_id, u.email, u.first_name, u.last_name, p.digest_frequency::text AS frequency,
                p.digest_time, p.timezone, p.language,
                CASE WHEN isfinite(p.last_digest_sent) THEN p.last_digest_sent END AS last_digest_sent,
                (u.status = 'ACTIVE' AND u.deleted_at IS NULL) AS active
         FROM email_preferences p
         JOIN users u ON u.user_id = p.user_id
         WHERE {ELIGIBLE}
           AND p.user_id > $1
         ORDER BY p.user_id
         LIMIT $2"
        )
    });
    let rows = sqlx::query(sqlx::AssertSqlSafe(SQL.as_str()))
        .bind(after)
        .bind(limit)
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|row| Ok((row.try_get("user_id")?, Candidate::from_row(row))))
        .collect()
}

/// Users who cannot get a digest now (another frequency, opted out, blacklisted, not active
/// or deleted) have no window: the first run that sees them on a digest again records a
/// baseline instead of sending one that reaches back to their old `last_digest_sent`.
async fn close_windows(pool: &PgPool) -> Result<u64, sqlx::Error> {
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "UPDATE email_preferences p SET last_digest_sent = NULL
         FROM users u
         WHERE u.user_id = p.user_id AND p.last_digest_sent IS NOT NULL
           AND NOT COALESCE({ELIGIBLE} AND u.status = 'ACTIVE' AND u.deleted_at IS NULL, false)"
        )
    });
    let done = sqlx::query(sqlx::AssertSqlSafe(SQL.as_str()))
        .execute(pool)
        .await?;
    Ok(done.rows_affected())
}

/// The first run that sees a user on a digest records `now` as the start of their first
/// window (also over a `last_digest_sent` that is not finite). False when another run did.
async fn record_baseline(
    pool: &PgPool,
    user_id: Uuid,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE email_preferences SET last_digest_sent = $2, updated_at = $2
         WHERE user_id = $1 AND (last_digest_sent IS NULL OR NOT isfinite(last_digest_sent))",
    )
    .bind(user_id)
    .bind(now.naive_utc())
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Decides whether `c` is due and, if so, sends their digest.
async fn process(
    jobs: &Jobs,
    c: &Candidate,
    template: Option<Uuid>,
    now: DateTime<Utc>,
    t: &mut Tally,
) -> Result<(), sqlx::Error> {
    let Some(period) = Period::parse(&c.frequency) else {
        return Ok(());
    };
    let (zone, bad_zone) = match user_zone(c.timezone.as_deref()) {
        Ok(z) => (z, None),
        Err(name) => {
            t.invalid_timezones += 1;
            (Tz::UTC, Some(name))
        }
    };
    let at = c
        .digest_time
        .unwrap_or(NaiveTime::from_hms_opt(9, 0, 0).unwrap_or(NaiveTime::MIN));
    let Some(slot) = latest_slot(period, at, zone, now) else {
        warn!(user_id = %c.user_id, "no digest slot could be computed; skipped");
        return Ok(());
    };
    let due = c
        .last_digest_sent
        .is_none_or(|last| last < slot.naive_utc());
    if !due {
        return Ok(());
    }
    if let Some(name) = bad_zone {
        warn!(user_id = %c.user_id, timezone = %name, "unknown time zone; digest timed in UTC");
    }
    if !c.active {
        debug!(user_id = %c.user_id, "user deleted or not active; no digest");
        t.inactive_users += 1;
        return Ok(());
    }
    if c.last_digest_sent.is_none() {
        if record_baseline(jobs.pool(), c.user_id, now).await? {
            debug!(user_id = %c.user_id, "first run on a digest: baseline recorded");
            t.baselines += 1;
        }
        return Ok(());
    }
    let Some(template_id) = template else {
        info!(user_id = %c.user_id, "template {TEMPLATE} not found; digest skipped");
        t.no_template += 1;
        return Ok(());
    };
    match send(jobs, c, period, zone, slot, template_id, now).await? {
        Sent::Digest { held, unreadable } => {
            t.sent += 1;
            t.held += held;
            t.unreadable += unreadable;
        }
        Sent::Empty { unreadable } => {
            t.empty += 1;
            t.unreadable += unreadable;
        }
        Sent::Raced => t.raced += 1,
    }
    Ok(())
}

/// Claims the user's slot, gathers the sections and, when any has items, enqueues the
/// digest and marks the held rows it carries: one transaction.
async fn send(
    jobs: &Jobs,
    c: &Candidate,
    period: Period,
    zone: Tz,
    slot: DateTime<Utc>,
    template_id: Uuid,
    now: DateTime<Utc>,
) -> Result<Sent, sqlx::Error> {
    let mut tx = jobs.pool().begin().await?;
    let claimed: Option<(NaiveDateTime,)> = sqlx::query_as(
        "WITH old AS (
             SELECT user_id, last_digest_sent FROM email_preferences WHERE user_id = $1 FOR UPDATE
         )
         UPDATE email_preferences p SET last_digest_sent = $2, updated_at = $2
         FROM old
         WHERE p.user_id = old.user_id
           AND isfinite(p.last_digest_sent) AND p.last_digest_sent < $3
         RETURNING old.last_digest_sent",
    )
    .bind(c.user_id)
    .bind(now.naive_utc())
    .bind(slot.naive_utc())
    .fetch_optional(&mut *tx)
    .await?;
    let Some((previous,)) = claimed else {
        return Ok(Sent::Raced);
    };
    let w = Window {
        user_id: c.user_id,
        start: previous,
        end: now.naive_utc(),
        zone,
        base_url: &jobs.app().base_url,
    };
    let limit = i64::from(jobs.settings().digest_max_held);
    let (held, unreadable) = queue::held_for_user(&mut *tx, &c.email, limit).await?;
    for bad in &unreadable {
        warn!(email_id = %bad.email_id, reason = %bad.reason, "held row cannot be read; it ends failed");
        queue::fail_unreadable_held(&mut *tx, bad, now.naive_utc()).await?;
    }
    let held_items: Vec<Value> = held.iter().map(|h| content::held_item(h, &w)).collect();
    let chats = content::unread_chats(&mut tx, &w).await?;
    let applications = content::application_updates(&mut tx, &w).await?;
    let favourites = content::favourite_changes(&mut tx, &w).await?;
    if held_items.is_empty() && chats.is_empty() && applications.is_empty() && favourites.is_empty()
    {
        tx.commit().await?;
        return Ok(Sent::Empty {
            unreadable: unreadable.len() as u64,
        });
    }
    let data = json!({
        "user": { "first_name": c.first_name },
        "period": period.as_str(),
        "held_notifications": held_items,
        "unread_chats": chats,
        "application_updates": applications,
        "favourite_changes": favourites,
    });
    let app = jobs.app();
    let mut email = NewEmail::from_template(
        &app.from_email,
        Some(&app.from_name),
        &c.email,
        template_id,
        data,
        EmailType::Notification,
    );
    email.to_name = Some(
        format!("{} {}", c.first_name, c.last_name)
            .trim()
            .to_string(),
    );
    email.user_id = Some(c.user_id);
    email.tags = vec!["digest".to_string()];
    // `digest` marks the row so the worker's gate never holds it for the next digest; the
    // category is the digest's own, so opting out of one kind of notification does not
    // silence the digest that carries the others (decision Q4).
    email.metadata = json!({
        "locale": c.language.as_deref().unwrap_or("en-US"),
        "category": crate::preferences::DIGEST_CATEGORY,
        "digest": {
            "period": period.as_str(),
            "windowStart": rfc3339(w.start),
            "windowEnd": rfc3339(w.end),
            "slot": slot.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        },
    });
    let digest_id = queue::enqueue(&mut *tx, &email).await?;
    let ids: Vec<Uuid> = held.iter().map(|h| h.email_id).collect();
    let marked = queue::mark_sent_via_digest(&mut *tx, &ids, digest_id, now.naive_utc()).await?;
    tx.commit().await?;
    debug!(user_id = %c.user_id, %digest_id, held = marked, "digest enqueued");
    Ok(Sent::Digest {
        held: marked,
        unreadable: unreadable.len() as u64,
    })
}
