//! What only the database knows, sampled on an interval: queue depth by state and priority,
//! the age of the oldest due row, and this process's pool use. Also runs the exporter's
//! upkeep on the same tick.
//!
//! One statement per sample. For each priority it range-scans `idx_email_queue_claim` (only
//! `queued` rows are in it, keyed by priority then due time), counting due and scheduled
//! rows and taking the oldest due time in the same pass, and counts `sending` rows through
//! `idx_email_queue_sending`. Sent, failed and other finished rows are never read, so the
//! cost follows the backlog, not the table's history. Every process serving `/metrics`
//! samples (the values are the same everywhere): aggregate with `max`, not `sum`.

use std::time::Duration;

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
}

/// The sample statement (public so tests can EXPLAIN it). The COALESCE is written exactly
/// as in `idx_email_queue_claim` so the index matches.
pub const QUEUE_SAMPLE_SQL: &str = "WITH clock AS (SELECT now() AT TIME ZONE 'UTC' AS now_utc)
    SELECT p.priority,
           q.due,
           q.scheduled,
           COALESCE(s.sending, 0) AS sending,
           COALESCE(EXTRACT(EPOCH FROM clock.now_utc - q.oldest_due)::float8, 0) AS oldest_due_age_secs
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
    LEFT JOIN (
        SELECT e.priority, count(*) AS sending FROM email_queue e
        WHERE e.status = 'sending' GROUP BY e.priority
    ) s ON s.priority = p.priority
    ORDER BY p.priority DESC";

/// Samples the queue (see the module docs for why this is cheap).
pub async fn sample_queue(pool: &PgPool) -> Result<Vec<PriorityDepth>, sqlx::Error> {
    sqlx::query_as(QUEUE_SAMPLE_SQL).fetch_all(pool).await
}

/// Samples every `every` until `stop` turns true: exporter upkeep, pool gauges, then the
/// queue (bounded by `every`, so a slow database cannot pile samples up).
pub async fn run_sampler(
    pool: PgPool,
    handle: PrometheusHandle,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut healthy = true;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|stopping| *stopping) => return,
        }
        handle.run_upkeep();
        let max = pool.options().get_max_connections();
        super::db_pool(pool.size(), pool.num_idle(), max);
        let failure = match tokio::time::timeout(every, sample_queue(&pool)).await {
            Ok(Ok(rows)) => {
                super::queue_sampled(&rows);
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
