//! The metric catalogue: every metric adopt-worker exports is defined once here (name, help
//! text, unit, labels, histogram buckets), described at start-up, and recorded through the
//! small typed functions below, so a call site is one line and cannot invent a name or a
//! label value. `GET /metrics` serves them (see `startup`); docs/operations.md explains
//! what to watch and alert on.
//!
//! Conventions: every name starts with `adopt_worker_`; counters end in `_total`, durations
//! are histograms in `_seconds`; labels are small closed sets (enums here, or the matched
//! route template), never an address, an email id or a user id.
//! Totals of sent/failed mail are counters incremented by the sender, not `count(*)` over
//! `email_queue`: counting finished rows would scan a table that only grows. Queue depth and
//! the oldest due row come from the database (see `sampler`) because every process, and
//! the other services inserting rows, change them.

mod http;
mod labels;
mod sampler;

use std::sync::OnceLock;
use std::time::Duration;

use chrono::NaiveDateTime;
use metrics::{Unit, counter, gauge, histogram};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

use crate::queue::{EmailPriority, EmailType};

pub use http::{UNMATCHED_ROUTE, track_http};
pub use labels::{
    BounceKind, DsnResult, Job, JobOutcome, Outcome, Provider, ProviderOutcome, ProviderRefusal,
    QueueState, SendClass, SuppressionReason, TrackingEvent, UnsubscribeVia,
};
pub use sampler::{
    AheadWarning, CREATED_AHEAD_MARGIN_SECS, CREATED_AHEAD_RECENT_SECS, CREATED_AHEAD_WARN_EVERY,
    PriorityDepth, QUEUE_SAMPLE_SQL, format_lead, run_sampler, sample_queue,
};

/// What kind of Prometheus metric a catalogue entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    /// The word Prometheus uses in `# TYPE` lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// One exported metric.
#[derive(Debug)]
pub struct MetricDef {
    pub name: &'static str,
    pub kind: Kind,
    pub unit: Unit,
    /// Label keys every series of this metric carries, in this order.
    pub labels: &'static [&'static str],
    pub help: &'static str,
    /// Histogram bucket upper bounds (seconds); empty for counters and gauges.
    pub buckets: &'static [f64],
}

/// One SMTP command round trip is milliseconds; a slow relay, seconds; the timeout, 30 s.
const SEND_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];
/// A template renders in well under a millisecond to a few hundred for a large digest.
const RENDER_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];
/// From enqueue to sent: a second when healthy, minutes to hours through retries.
const LATENCY_BUCKETS: &[f64] = &[
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0,
    21600.0, 86400.0,
];
/// Scheduled jobs: from a no-op UPDATE to a digest run over many users.
const JOB_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];
/// HTTP API: enqueue is one INSERT; a template preview renders.
const HTTP_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

const fn def(
    name: &'static str,
    kind: Kind,
    unit: Unit,
    labels: &'static [&'static str],
    help: &'static str,
    buckets: &'static [f64],
) -> MetricDef {
    MetricDef {
        name,
        kind,
        unit,
        labels,
        help,
        buckets,
    }
}

use Kind::{Counter, Gauge, Histogram};

pub const EMAILS_FINISHED: MetricDef = def(
    "adopt_worker_emails_finished_total",
    Counter,
    Unit::Count,
    &["status", "type", "priority"],
    "Delivery attempts whose result was written to the row, by the row's new status (sent, failed, bounced, unsubscribed, retry_scheduled), email type and priority.",
    &[],
);
pub const SEND_ATTEMPTS: MetricDef = def(
    "adopt_worker_send_attempts_total",
    Counter,
    Unit::Count,
    &["class"],
    "Send attempts by what the server said: 2xx, 4xx, 5xx, connection (no reply), timeout, invalid (message rejected before it left).",
    &[],
);
pub const SEND_DURATION: MetricDef = def(
    "adopt_worker_send_duration_seconds",
    Histogram,
    Unit::Seconds,
    &["class"],
    "Time of one send attempt (connect or pool checkout to the final reply), by reply class.",
    SEND_BUCKETS,
);
pub const RETRIES_SCHEDULED: MetricDef = def(
    "adopt_worker_retries_scheduled_total",
    Counter,
    Unit::Count,
    &[],
    "Failed attempts put back in the queue with a later scheduled_for.",
    &[],
);
pub const BOUNCES: MetricDef = def(
    "adopt_worker_bounces_total",
    Counter,
    Unit::Count,
    &["kind"],
    "Bounces recorded, hard (recipient does not exist: blacklisted at once) or soft (mailbox full and the like).",
    &[],
);
pub const SUPPRESSIONS: MetricDef = def(
    "adopt_worker_suppressions_total",
    Counter,
    Unit::Count,
    &["reason"],
    "Emails not sent because of the recipient's preferences: blacklisted, unsubscribed, category (opted out of it), never (digest frequency never).",
    &[],
);
pub const RENDER_DURATION: MetricDef = def(
    "adopt_worker_render_duration_seconds",
    Histogram,
    Unit::Seconds,
    &[],
    "Time to render one templated email (subject, HTML, text, tracking).",
    RENDER_BUCKETS,
);
pub const ENQUEUE_TO_SENT: MetricDef = def(
    "adopt_worker_enqueue_to_sent_seconds",
    Histogram,
    Unit::Seconds,
    &["priority"],
    "Time from the row's created_at to the server accepting it, including retries and any scheduled_for delay.",
    LATENCY_BUCKETS,
);
pub const SENDS_IN_FLIGHT: MetricDef = def(
    "adopt_worker_sends_in_flight",
    Gauge,
    Unit::Count,
    &[],
    "Sends this process has in progress right now.",
    &[],
);
pub const SMTP_POOL_MAX: MetricDef = def(
    "adopt_worker_smtp_pool_max_connections",
    Gauge,
    Unit::Count,
    &[],
    "Configured size of this process's SMTP connection pool (smtp.pool_size); 0 when mail goes to the outbox.",
    &[],
);
pub const QUEUE_DEPTH: MetricDef = def(
    "adopt_worker_queue_depth",
    Gauge,
    Unit::Count,
    &["state", "priority"],
    "email_queue rows waiting or in progress, sampled from the database: state due (queued, due now), scheduled (queued for later, including retries) or sending.",
    &[],
);
pub const QUEUE_OLDEST_DUE_AGE: MetricDef = def(
    "adopt_worker_queue_oldest_due_age_seconds",
    Gauge,
    Unit::Seconds,
    &["priority"],
    "How long the oldest due queued row has been due (0 when none is due), sampled from the database.",
    &[],
);
pub const QUEUE_CREATED_AHEAD: MetricDef = def(
    "adopt_worker_queue_created_ahead",
    Gauge,
    Unit::Count,
    &[],
    "email_queue rows whose created_at lies more than 2 minutes ahead of the database's UTC clock, still queued or attempted in the last 10 minutes: a service inserts rows from a session whose TimeZone is not UTC (docs/integrating.md, Times). Sampled from the database; 0 when every inserter writes UTC.",
    &[],
);
pub const QUEUE_SAMPLE_FAILURES: MetricDef = def(
    "adopt_worker_queue_sample_failures_total",
    Counter,
    Unit::Count,
    &[],
    "Queue samples that failed (database unreachable or slow); the queue gauges keep their last value meanwhile.",
    &[],
);
pub const LEASE_RECLAIMS: MetricDef = def(
    "adopt_worker_lease_reclaims_total",
    Counter,
    Unit::Count,
    &[],
    "Rows taken back from 'sending' after their worker's lease expired (a worker died or hung mid-send).",
    &[],
);
pub const JOB_RUNS: MetricDef = def(
    "adopt_worker_job_runs_total",
    Counter,
    Unit::Count,
    &["task", "outcome"],
    "Scheduled job runs by job (`task`) and outcome (succeeded, failed, skipped: another process owned the slot).",
    &[],
);
pub const JOB_DURATION: MetricDef = def(
    "adopt_worker_job_duration_seconds",
    Histogram,
    Unit::Seconds,
    &["task"],
    "Duration of scheduled job runs.",
    JOB_BUCKETS,
);
pub const JOB_LAST_SUCCESS: MetricDef = def(
    "adopt_worker_job_last_success_timestamp_seconds",
    Gauge,
    Unit::Seconds,
    &["task"],
    "Unix time of the job's last successful run in this process (absent until the first one).",
    &[],
);
pub const JOB_INTERVAL: MetricDef = def(
    "adopt_worker_job_interval_seconds",
    Gauge,
    Unit::Seconds,
    &["task"],
    "The longest time between two runs of a scheduled job, from its schedule: staleness alerts compare the last success with it.",
    &[],
);
pub const HTTP_REQUESTS: MetricDef = def(
    "adopt_worker_http_requests_total",
    Counter,
    Unit::Count,
    &["route", "method", "status"],
    "HTTP requests by matched route template, method and response status code.",
    &[],
);
pub const HTTP_DURATION: MetricDef = def(
    "adopt_worker_http_request_duration_seconds",
    Histogram,
    Unit::Seconds,
    &["route", "method"],
    "HTTP request duration by matched route template and method.",
    HTTP_BUCKETS,
);
pub const TRACKING_EVENTS: MetricDef = def(
    "adopt_worker_tracking_events_total",
    Counter,
    Unit::Count,
    &["event"],
    "Tracking events recorded: open (pixel) and click (signed link).",
    &[],
);
pub const UNSUBSCRIBES: MetricDef = def(
    "adopt_worker_unsubscribes_total",
    Counter,
    Unit::Count,
    &["via"],
    "Unsubscribes recorded, via the unsubscribe page or the RFC 8058 one-click POST.",
    &[],
);
pub const DSN_INGESTED: MetricDef = def(
    "adopt_worker_dsn_ingested_total",
    Counter,
    Unit::Count,
    &["result"],
    "Messages sent to the bounce address that were ingested (adopt-worker bounces ingest, POST /v1/webhooks/dsn), by result: hard_bounce, soft_bounce, failed, delivered, delayed, complaint, duplicate (already applied), ignored (not a report), unmatched (names no email of ours). Counted in the database (worker_dsn_ingest_counts) and sampled: the same value in every process.",
    &[],
);
pub const PROVIDER_EVENTS: MetricDef = def(
    "adopt_worker_provider_events_total",
    Counter,
    Unit::Count,
    &["provider", "outcome"],
    "Events of the provider webhooks (ses, sendgrid, postmark, mailgun) by what they did: applied (the row or the recipient changed), ignored (nothing to change: already applied, or an event we do not act on), not_found (names no email of ours).",
    &[],
);
pub const PROVIDER_REFUSED: MetricDef = def(
    "adopt_worker_provider_webhooks_refused_total",
    Counter,
    Unit::Count,
    &["provider", "reason"],
    "Provider webhook requests refused: disabled (no key configured), unauthorized (bad signature or credentials, or an SNS topic or certificate URL not allowed), stale (timestamp out of the window), replayed (already accepted), malformed (not the provider's JSON), certificate_unavailable (the SNS signing certificate could not be fetched).",
    &[],
);
pub const DB_POOL_CONNECTIONS: MetricDef = def(
    "adopt_worker_db_pool_connections",
    Gauge,
    Unit::Count,
    &["state"],
    "Open connections of this process's PostgreSQL pool, idle or in_use (sampled).",
    &[],
);
pub const DB_POOL_MAX: MetricDef = def(
    "adopt_worker_db_pool_max_connections",
    Gauge,
    Unit::Count,
    &[],
    "Configured maximum of this process's PostgreSQL pool (database.max_connections).",
    &[],
);
pub const BUILD_INFO: MetricDef = def(
    "adopt_worker_build_info",
    Gauge,
    Unit::Count,
    &["version"],
    "Always 1; the version label says which adopt-worker this process runs.",
    &[],
);

/// Every exported metric. Dashboards, alerts and tests are checked against this list.
pub const CATALOGUE: &[&MetricDef] = &[
    &EMAILS_FINISHED,
    &SEND_ATTEMPTS,
    &SEND_DURATION,
    &RETRIES_SCHEDULED,
    &BOUNCES,
    &SUPPRESSIONS,
    &RENDER_DURATION,
    &ENQUEUE_TO_SENT,
    &SENDS_IN_FLIGHT,
    &SMTP_POOL_MAX,
    &QUEUE_DEPTH,
    &QUEUE_OLDEST_DUE_AGE,
    &QUEUE_CREATED_AHEAD,
    &QUEUE_SAMPLE_FAILURES,
    &LEASE_RECLAIMS,
    &JOB_RUNS,
    &JOB_DURATION,
    &JOB_LAST_SUCCESS,
    &JOB_INTERVAL,
    &HTTP_REQUESTS,
    &HTTP_DURATION,
    &TRACKING_EVENTS,
    &UNSUBSCRIBES,
    &DSN_INGESTED,
    &PROVIDER_EVENTS,
    &PROVIDER_REFUSED,
    &DB_POOL_CONNECTIONS,
    &DB_POOL_MAX,
    &BUILD_INFO,
];

const PRIORITIES: [EmailPriority; 4] = [
    EmailPriority::Urgent,
    EmailPriority::High,
    EmailPriority::Normal,
    EmailPriority::Low,
];
const TYPES: [EmailType; 4] = [
    EmailType::Transactional,
    EmailType::Notification,
    EmailType::Marketing,
    EmailType::System,
];

// ---------------------------------------------------------------------------------------
// Recording: one function per event. Without an installed recorder they do nothing.
// ---------------------------------------------------------------------------------------

/// An attempt's result was written to the row.
pub fn email_finished(email_type: EmailType, priority: EmailPriority, outcome: Outcome) {
    counter!(EMAILS_FINISHED.name, "status" => outcome.as_str(), "type" => email_type.as_str(),
        "priority" => priority.as_str())
    .increment(1);
}

/// One send attempt ended with `class` after `elapsed`.
pub fn send_attempt(class: SendClass, elapsed: Duration) {
    counter!(SEND_ATTEMPTS.name, "class" => class.as_str()).increment(1);
    histogram!(SEND_DURATION.name, "class" => class.as_str()).record(elapsed);
}

/// A failed attempt was put back in the queue for later.
pub fn retry_scheduled() {
    counter!(RETRIES_SCHEDULED.name).increment(1);
}

/// A bounce was recorded (at send time or by webhook).
pub fn bounce(kind: BounceKind) {
    counter!(BOUNCES.name, "kind" => kind.as_str()).increment(1);
}

/// An email was not sent because of the recipient's preferences.
pub fn suppressed(reason: SuppressionReason) {
    counter!(SUPPRESSIONS.name, "reason" => reason.as_str()).increment(1);
}

/// A templated email was rendered in `elapsed`.
pub fn rendered(elapsed: Duration) {
    histogram!(RENDER_DURATION.name).record(elapsed);
}

/// The server accepted an email created at `created_at` (UTC, as stored); records the time
/// since then. Rows without `created_at`, or with one in the future, are skipped.
pub fn enqueue_to_sent(priority: EmailPriority, created_at: Option<NaiveDateTime>) {
    let Some(created_at) = created_at else {
        return;
    };
    if let Ok(waited) = (chrono::Utc::now().naive_utc() - created_at).to_std() {
        histogram!(ENQUEUE_TO_SENT.name, "priority" => priority.as_str()).record(waited);
    }
}

/// Counts one send in flight until the guard is dropped.
#[must_use = "the send counts as in flight only while the guard lives"]
pub struct InFlightGuard(());

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        gauge!(SENDS_IN_FLIGHT.name).decrement(1.0);
    }
}

/// Marks a send as in flight; hold the guard across the send.
pub fn in_flight_guard() -> InFlightGuard {
    gauge!(SENDS_IN_FLIGHT.name).increment(1.0);
    InFlightGuard(())
}

/// The configured SMTP pool size (0: outbox).
pub fn smtp_pool_size(max_connections: u32) {
    gauge!(SMTP_POOL_MAX.name).set(f64::from(max_connections));
}

/// The lease reaper took `rows` rows back.
pub fn lease_reclaims(rows: u64) {
    counter!(LEASE_RECLAIMS.name).increment(rows);
}

/// A scheduled job run ended. A success also stamps the job's last-success time.
pub fn job_run(job: Job, outcome: JobOutcome, elapsed: Duration) {
    counter!(JOB_RUNS.name, "task" => job.as_str(), "outcome" => outcome.as_str()).increment(1);
    histogram!(JOB_DURATION.name, "task" => job.as_str()).record(elapsed);
    if outcome == JobOutcome::Succeeded {
        let now = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
        gauge!(JOB_LAST_SUCCESS.name, "task" => job.as_str()).set(now);
    }
}

/// A scheduled job's longest gap between runs (see [`JOB_INTERVAL`]).
pub fn job_interval(job: Job, interval: Duration) {
    gauge!(JOB_INTERVAL.name, "task" => job.as_str()).set(interval.as_secs_f64());
}

/// An open pixel was fetched or a tracked link followed.
pub fn tracking_event(event: TrackingEvent) {
    counter!(TRACKING_EVENTS.name, "event" => event.as_str()).increment(1);
}

/// A recipient unsubscribed.
pub fn unsubscribed(via: UnsubscribeVia) {
    counter!(UNSUBSCRIBES.name, "via" => via.as_str()).increment(1);
}

/// One event of a provider's webhook came to `outcome`.
pub fn provider_event(provider: Provider, outcome: ProviderOutcome) {
    counter!(PROVIDER_EVENTS.name, "provider" => provider.as_str(), "outcome" => outcome.as_str())
        .increment(1);
}

/// A provider webhook request was refused.
pub fn provider_refused(provider: Provider, reason: ProviderRefusal) {
    counter!(PROVIDER_REFUSED.name, "provider" => provider.as_str(), "reason" => reason.as_str())
        .increment(1);
}

/// The database's totals of ingested bounce messages (see [`DSN_INGESTED`]).
pub fn dsn_ingested_totals(totals: &[(DsnResult, u64)]) {
    for (result, total) in totals {
        counter!(DSN_INGESTED.name, "result" => result.as_str()).absolute(*total);
    }
}

/// One database queue sample (see [`sample_queue`]).
pub fn queue_sampled(rows: &[PriorityDepth]) {
    for row in rows {
        let p = row.priority.as_str();
        for (state, n) in [
            (QueueState::Due, row.due),
            (QueueState::Scheduled, row.scheduled),
            (QueueState::Sending, row.sending),
        ] {
            gauge!(QUEUE_DEPTH.name, "state" => state.as_str(), "priority" => p).set(n as f64);
        }
        gauge!(QUEUE_OLDEST_DUE_AGE.name, "priority" => p).set(row.oldest_due_age_secs);
    }
    let ahead: i64 = rows.iter().map(|r| r.created_ahead).sum();
    gauge!(QUEUE_CREATED_AHEAD.name).set(ahead as f64);
}

/// A queue sample failed.
pub fn queue_sample_failed() {
    counter!(QUEUE_SAMPLE_FAILURES.name).increment(1);
}

/// This process's PostgreSQL pool: `open` connections of which `idle` are idle.
pub fn db_pool(open: u32, idle: usize, max: u32) {
    let idle = idle as f64;
    gauge!(DB_POOL_CONNECTIONS.name, "state" => "idle").set(idle);
    gauge!(DB_POOL_CONNECTIONS.name, "state" => "in_use").set((f64::from(open) - idle).max(0.0));
    gauge!(DB_POOL_MAX.name).set(f64::from(max));
}

// ---------------------------------------------------------------------------------------
// Installation
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, thiserror::Error)]
pub enum MetricsError {
    #[error("cannot set up Prometheus metrics: {0}")]
    Install(String),
}

/// A Prometheus builder with every catalogued histogram's buckets (a histogram without
/// buckets would be exported as a summary).
pub fn builder() -> Result<PrometheusBuilder, BuildError> {
    let mut builder = PrometheusBuilder::new();
    for def in CATALOGUE.iter().filter(|d| d.kind == Kind::Histogram) {
        builder = builder.set_buckets_for_metric(Matcher::Full(def.name.into()), def.buckets)?;
    }
    Ok(builder)
}

/// Installs the process-wide recorder once and returns its handle (serve `render()`, call
/// `run_upkeep()` periodically). Later calls return the same handle, so several apps in one
/// process (tests) share it.
pub fn install() -> Result<PrometheusHandle, MetricsError> {
    static INSTALLED: OnceLock<Result<PrometheusHandle, MetricsError>> = OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            let recorder = builder()
                .map_err(|e| MetricsError::Install(e.to_string()))?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder)
                .map_err(|e| MetricsError::Install(e.to_string()))?;
            describe();
            register_series();
            Ok(handle)
        })
        .clone()
}

/// Describes every catalogued metric to the current recorder.
pub fn describe() {
    for def in CATALOGUE {
        match def.kind {
            Kind::Counter => metrics::describe_counter!(def.name, def.unit, def.help),
            Kind::Gauge => metrics::describe_gauge!(def.name, def.unit, def.help),
            Kind::Histogram => metrics::describe_histogram!(def.name, def.unit, def.help),
        }
    }
}

/// Creates every series whose labels are known in advance at zero, so that `rate()` and
/// dashboards see a series from the first scrape instead of after the first event. Gauges
/// that mean "unknown until measured" (queue depth, job last success) are left absent, and
/// so are the bounce ingest's totals: they come from the database, and a series that began
/// at 0 and then read the stored total would look like a burst after every restart.
pub fn register_series() {
    for t in TYPES {
        for p in PRIORITIES {
            for o in Outcome::ALL {
                email_finished_counter(t, p, *o);
            }
        }
    }
    for p in PRIORITIES {
        let _ = histogram!(ENQUEUE_TO_SENT.name, "priority" => p.as_str());
    }
    for c in SendClass::ALL {
        counter!(SEND_ATTEMPTS.name, "class" => c.as_str()).increment(0);
        let _ = histogram!(SEND_DURATION.name, "class" => c.as_str());
    }
    for k in BounceKind::ALL {
        counter!(BOUNCES.name, "kind" => k.as_str()).increment(0);
    }
    for r in SuppressionReason::ALL {
        counter!(SUPPRESSIONS.name, "reason" => r.as_str()).increment(0);
    }
    for job in Job::ALL {
        for o in JobOutcome::ALL {
            counter!(JOB_RUNS.name, "task" => job.as_str(), "outcome" => o.as_str()).increment(0);
        }
        let _ = histogram!(JOB_DURATION.name, "task" => job.as_str());
    }
    for e in TrackingEvent::ALL {
        counter!(TRACKING_EVENTS.name, "event" => e.as_str()).increment(0);
    }
    for v in UnsubscribeVia::ALL {
        counter!(UNSUBSCRIBES.name, "via" => v.as_str()).increment(0);
    }
    for p in Provider::ALL {
        for o in ProviderOutcome::ALL {
            counter!(PROVIDER_EVENTS.name, "provider" => p.as_str(), "outcome" => o.as_str())
                .increment(0);
        }
        for r in ProviderRefusal::ALL {
            counter!(PROVIDER_REFUSED.name, "provider" => p.as_str(), "reason" => r.as_str())
                .increment(0);
        }
    }
    let _ = histogram!(RENDER_DURATION.name);
    counter!(RETRIES_SCHEDULED.name).increment(0);
    counter!(LEASE_RECLAIMS.name).increment(0);
    counter!(QUEUE_SAMPLE_FAILURES.name).increment(0);
    gauge!(SENDS_IN_FLIGHT.name).increment(0.0);
    gauge!(BUILD_INFO.name, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
}

fn email_finished_counter(t: EmailType, p: EmailPriority, o: Outcome) {
    counter!(EMAILS_FINISHED.name, "status" => o.as_str(), "type" => t.as_str(),
        "priority" => p.as_str())
    .increment(0);
}

#[cfg(test)]
mod tests;
