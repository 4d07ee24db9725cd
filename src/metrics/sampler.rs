//! What only the database knows, sampled on an interval: queue depth by state and priority,
//! the age of the oldest due row, rows written with a `created_at` ahead of UTC (an
//! inserting session in another time zone), and this process's pool use. Also runs the
//! exporter's upkeep on the same tick.
//!
//! One statement per sample. For each priority it range-scans `idx_email_queue_claim` (only
//! `queued` rows are in it, keyed by priority then due time), counting due and scheduled
//! rows and taking the oldest due time in the same pass, and counts `sending` rows through
//! `idx_email_queue_sending`. Sent, failed and other finished rows are never read, so the
//! cost follows the backlog, not the table's history. Rows created "ahead" are found by a
//! range scan of the seed's `idx_email_queue_priority (priority, created_at)` above now + 2
//! minutes: empty while every inserter writes UTC, and never more than the last hours of a
//! misconfigured one (`created_at` only grows). Every process serving `/metrics` samples
//! (the values are the same everywhere): aggregate with `max`, not `sum`.

use std::time::{Duration, Instant};

use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;
use tracing::{debug, warn};

use crate::queue::EmailPriority;

/// One priority's share of the queue.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct PriorityDepth {
    pub priority: EmailPriority,
    /// `queued` and due now.
    pub due: i64,
    /// `queued` for later (scheduled sends and retries waiting out their backoff).
    pub scheduled: i64,
    pub sending: i64,
    /// Seconds the oldest due row has been due; 0 when none is.
    pub oldest_due_age_secs: f64,
    /// Rows whose `created_at` lies more than [`CREATED_AHEAD_MARGIN_SECS`] ahead of the
    /// database's UTC clock and that are still `queued` or were attempted in the last
    /// [`CREATED_AHEAD_RECENT_SECS`]: written by a session whose `TimeZone` is not UTC.
    pub created_ahead: i64,
    /// How far the furthest of those lies ahead, seconds (0 when there is none): about the
    /// inserting session's UTC offset.
    pub created_ahead_max_secs: f64,
}

/// A `created_at` this far ahead of the database's UTC clock was not written in UTC (clocks
/// of one database do not disagree by minutes). Written as a literal in [`QUEUE_SAMPLE_SQL`].
pub const CREATED_AHEAD_MARGIN_SECS: u64 = 120;
/// Rows created ahead count while `queued`, and for this long after their last attempt, so
/// that mail sent at once is still seen by a scrape (and the count falls to 0 this long
/// after the inserter is fixed). Written as a literal in [`QUEUE_SAMPLE_SQL`].
pub const CREATED_AHEAD_RECENT_SECS: u64 = 600;
/// The warning about rows created ahead is logged at most this often per process.
pub const CREATED_AHEAD_WARN_EVERY: Duration = Duration::from_secs(60);

/// The sample statement (public so tests can EXPLAIN it). The COALESCE is written exactly
/// as in `idx_email_queue_claim` so the index matches.
pub const QUEUE_SAMPLE_SQL: &str = "WITH clock AS (SELECT now() AT TIME ZONE 'UTC' AS now_utc)
    SELECT p.priority,
           q.due,
           q.scheduled,
           COALESCE(s.sending, 0) AS sending,
           COALESCE(EXTRACT(EPOCH FROM clock.now_utc - q.oldest_due)::float8, 0) AS oldest_due_age_secs,
           a.created_ahead,
           COALESCE(EXTRACT(EPOCH FROM a.furthest - clock.now_utc)::float8, 0) AS created_ahead_max_secs
    FROM unnest('{urgent,high,normal,low}'::email_priority_enum[]) AS p(priority)
    CROSS JOIN clock
    CROSS JOIN LATERAL (
        SELECT count(*) FILTER (WHERE d.due_at <= clock.now_utc) AS due,
               count(*) FILTER (WHERE d.due_at > clock.now_utc) AS scheduled,
               min(d.due_at) FILTER (WHERE d.due_at <= clock.now_utc
                                      AND d.due_at > '-infinity') AS oldest_due
        FROM (SELECT CASE WHEN e.scheduled_for IS NULL AND e.created_at > clock.now_utc
                          THEN clock.now_utc
                          ELSE COALESCE(e.scheduled_for, e.created_at, '-infinity') END AS due_at
              FROM email_queue e
              WHERE e.status = 'queued' AND e.priority = p.priority) d
    ) q
    CROSS JOIN LATERAL (
        SELECT count(*) AS created_ahead, max(e.created_at) AS furthest
        FROM email_queue e
        WHERE e.priority = p.priority
          AND e.created_at > clock.now_utc + interval '120 seconds'
          AND e.created_at < 'infinity'
          AND (e.status = 'queued' OR e.last_attempt_at >= clock.now_utc - interval '600 seconds')
    ) a
    LEFT JOIN (
        SELECT e.priority, count(*) AS sending FROM email_queue e
        WHERE e.status = 'sending' GROUP BY e.priority
    ) s ON s.priority = p.priority
    ORDER BY p.priority DESC";

/// Samples the queue (see the module docs for why this is cheap).
pub async fn sample_queue(pool: &PgPool) -> Result<Vec<PriorityDepth>, sqlx::Error> {
    sqlx::query_as(QUEUE_SAMPLE_SQL).fetch_all(pool).await
}

/// When to log the warning about rows created ahead: when there are some, at most once per
/// [`CREATED_AHEAD_WARN_EVERY`].
#[derive(Debug, Default)]
pub struct AheadWarning {
    last: Option<Instant>,
}

impl AheadWarning {
    /// Whether a sample that found `rows` rows created ahead at `now` is to be logged.
    pub fn due(&mut self, now: Instant, rows: i64) -> bool {
        if rows <= 0 {
            return false;
        }
        if self
            .last
            .is_some_and(|last| now.saturating_duration_since(last) < CREATED_AHEAD_WARN_EVERY)
        {
            return false;
        }
        self.last = Some(now);
        true
    }
}

/// `3600.4` → `1h 00m`, `150` → `0h 03m`: the lead of rows created ahead, to the minute
/// (an inserting session's UTC offset reads as whole hours or half hours).
pub fn format_lead(secs: f64) -> String {
    let minutes = (secs.max(0.0) / 60.0).round() as u64;
    format!("{}h {:02}m", minutes / 60, minutes % 60)
}

/// Logs, at most once a minute, that rows were written with a `created_at` ahead of UTC.
fn warn_created_ahead(rows: &[PriorityDepth], warning: &mut AheadWarning) {
    let count: i64 = rows.iter().map(|r| r.created_ahead).sum();
    if !warning.due(Instant::now(), count) {
        return;
    }
    let furthest = rows
        .iter()
        .map(|r| r.created_ahead_max_secs)
        .fold(0.0, f64::max);
    warn!(
        rows = count,
        ahead_by = %format_lead(furthest),
        "email_queue rows have a created_at more than 2 minutes ahead of UTC: a service inserts \
         them from a database session whose TimeZone is not UTC, so DEFAULT CURRENT_TIMESTAMP \
         writes its local time. They are still sent at once (created_at only orders rows), but a \
         scheduled_for written the same way is late by as much; see docs/integrating.md, \"Times\""
    );
}

/// The bounce ingest's totals (`worker_dsn_ingest_counts`), exported as
/// `adopt_worker_dsn_ingested_total`, every result (0 for one never seen). A failure (e.g.
/// migrations pending) leaves the counter as it was.
async fn sample_dsn_counts(pool: &PgPool) {
    let rows: Result<Vec<(String, i64)>, sqlx::Error> =
        sqlx::query_as("SELECT result, total FROM worker_dsn_ingest_counts")
            .fetch_all(pool)
            .await;
    match rows {
        Ok(rows) => {
            let totals: Vec<(super::DsnResult, u64)> = super::DsnResult::ALL
                .iter()
                .map(|result| {
                    let total = rows
                        .iter()
                        .find(|(r, _)| r == result.as_str())
                        .and_then(|(_, n)| u64::try_from(*n).ok())
                        .unwrap_or(0);
                    (*result, total)
                })
                .collect();
            super::dsn_ingested_totals(&totals);
        }
        Err(e) => debug!(error = %e, "reading the bounce ingest counts failed"),
    }
}

/// Samples every `every` until `stop` turns true: exporter upkeep, pool gauges, then the
/// queue (bounded by `every`, so a slow database cannot pile samples up) and the bounce
/// ingest's totals.
pub async fn run_sampler(
    pool: PgPool,
    handle: PrometheusHandle,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut healthy = true;
    let mut ahead = AheadWarning::default();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|stopping| *stopping) => return,
        }
        handle.run_upkeep();
        let max = pool.options().get_max_connections();
        super::db_pool(pool.size(), pool.num_idle(), max);
        // Before the queue, so a scrape that sees this tick's queue sample sees these too.
        let _ = tokio::time::timeout(every, sample_dsn_counts(&pool)).await;
        let failure = match tokio::time::timeout(every, sample_queue(&pool)).await {
            Ok(Ok(rows)) => {
                super::queue_sampled(&rows);
                warn_created_ahead(&rows, &mut ahead);
                if !healthy {
                    debug!("queue sampling works again");
                }
                healthy = true;
                continue;
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {}s", every.as_secs()),
        };
        super::queue_sample_failed();
        // Once per outage, not once per tick.
        if healthy {
            warn!(error = %failure, "sampling the queue for metrics failed; gauges keep their last value");
        }
        healthy = false;
    }
}
