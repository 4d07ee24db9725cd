//! Scheduled jobs: per-user digests, application and moderator-action expiry, audit_logs
//! partitions and the lease reaper.
//!
//! Exactly once across processes: apalis-cron fires every schedule in every process, so a
//! run first claims its `(job, slot)` row in `worker_job_runs` (`INSERT ... ON CONFLICT DO
//! NOTHING`; one row inserted means this process owns the slot). The row is then the run
//! log. Each job's own SQL is also idempotent (claim-by-UPDATE with the condition re-checked
//! under the row lock), so runs of different slots that overlap, or an operator's manual
//! run, never do the same work twice. Every job takes its "now" as a parameter: the cron tick
//! or the CLI's `--now`.

mod audit_partitions;
mod digest;
mod expire_applications;
mod expire_moderation;
mod reclaim;
mod retention;
mod support;

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use apalis::prelude::{BoxDynError, Monitor, WorkerBuilder};
use apalis_cron::{CronScheduler, Tick};
use chrono::{DateTime, SubsecRound, Utc};
use sqlx::PgPool;
use tracing::{Instrument, error, info, info_span, warn};

use crate::config::{AppSettings, Settings};
pub use crate::config::{JobName, JobSchedule, JobSettings};
use crate::metrics;

impl FromStr for JobName {
    type Err = JobError;
    fn from_str(s: &str) -> Result<JobName, JobError> {
        JobName::ALL
            .into_iter()
            .find(|j| j.as_str() == s)
            .ok_or_else(|| JobError::UnknownJob(s.to_string()))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("unknown job {0:?}; valid jobs: {names}", names = JobName::valid_names())]
    UnknownJob(String),
    #[error("invalid --now {0:?}: expected an RFC 3339 time such as 2026-03-09T09:00:00Z")]
    InvalidNow(String),
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
}

/// A run's "now": told (the CLI's `--now`, tests' time travel) or this host's clock (a cron
/// tick, the CLI without `--now`), which a job may replace with the database's.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Now {
    Told(DateTime<Utc>),
    Host(DateTime<Utc>),
}

impl Now {
    fn time(self) -> DateTime<Utc> {
        match self {
            Now::Told(t) | Now::Host(t) => t,
        }
    }
}

/// Parses the CLI's `--now` (RFC 3339, any offset).
pub fn parse_now(text: &str) -> Result<DateTime<Utc>, JobError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| JobError::InvalidNow(text.to_string()))
}

/// How a run ended (`worker_job_runs.outcome`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    Succeeded,
    Failed,
    /// The slot was already claimed (by another process, or an earlier run); nothing done.
    Skipped,
}

impl RunOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            RunOutcome::Succeeded => "succeeded",
            RunOutcome::Failed => "failed",
            RunOutcome::Skipped => "skipped",
        }
    }
}

/// What one run did; printed by `adopt-worker jobs run`.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub job: JobName,
    pub slot: DateTime<Utc>,
    pub outcome: RunOutcome,
    pub rows_affected: u64,
    pub detail: String,
}

impl fmt::Display for RunReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} slot={} outcome={} rows_affected={}",
            self.job,
            self.slot
                .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            self.outcome.as_str(),
            self.rows_affected
        )?;
        if !self.detail.is_empty() {
            write!(f, " {}", self.detail)?;
        }
        Ok(())
    }
}

/// What a job reports when it finishes. `failed` is set when some items failed but the
/// run went on; the run is then recorded `failed` with its detail.
#[derive(Debug, Default)]
struct Done {
    rows_affected: u64,
    detail: String,
    failed: bool,
}

/// Everything the jobs need. Cheap to clone.
#[derive(Clone)]
pub struct Jobs {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    settings: JobSettings,
    app: AppSettings,
    lease: Duration,
    default_max_retries: i32,
    claimed_by: String,
    /// One run of a job at a time in this process (cron path).
    running: HashMap<JobName, tokio::sync::Mutex<()>>,
}

impl Jobs {
    pub fn new(pool: PgPool, settings: &Settings) -> Jobs {
        let host = hostname::get()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default();
        Jobs {
            inner: Arc::new(Inner {
                pool,
                settings: settings.jobs.clone(),
                app: settings.app.clone(),
                lease: settings.worker.lease(),
                default_max_retries: settings.retry.default_max_retries,
                claimed_by: format!("{host}-{}", std::process::id()),
                running: JobName::ALL
                    .into_iter()
                    .map(|j| (j, tokio::sync::Mutex::new(())))
                    .collect(),
            }),
        }
    }

    fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    fn settings(&self) -> &JobSettings {
        &self.inner.settings
    }

    fn app(&self) -> &AppSettings {
        &self.inner.app
    }

    /// Runs `job` once for the slot `now` (the CLI: an operator can always run a job, as long
    /// as that exact slot has not run yet). Errors are database errors of the run log itself;
    /// a job that fails is reported with outcome `failed`.
    pub async fn run_once(&self, job: JobName, now: DateTime<Utc>) -> Result<RunReport, JobError> {
        // The slot is stored with PostgreSQL's microsecond precision; keep the report equal.
        let now = now.trunc_subsecs(6);
        self.run_slot(job, now, Now::Told(now)).await
    }

    /// One cron tick's run, as the scheduler makes it: `slot` is this host's clock at the
    /// tick (jobs whose safety depends on the clock take the database's instead).
    pub async fn run_tick(&self, job: JobName, slot: DateTime<Utc>) -> Result<RunReport, JobError> {
        self.run_slot(job, slot, Now::Host(slot)).await
    }

    /// [`Jobs::run_once`] at this host's "now", for the CLI without `--now`: jobs whose
    /// safety depends on the clock (the lease reaper) take the database's instead.
    pub async fn run_once_now(&self, job: JobName) -> Result<RunReport, JobError> {
        let now = Utc::now().trunc_subsecs(6);
        self.run_slot(job, now, Now::Host(now)).await
    }

    /// Claims and runs one slot inside a `job` span, and records the run's metrics (a slot
    /// owned elsewhere counts as `skipped`; a run-log error as `failed`).
    async fn run_slot(
        &self,
        job: JobName,
        slot: DateTime<Utc>,
        now: Now,
    ) -> Result<RunReport, JobError> {
        let started = Instant::now();
        let result = self
            .claim_and_run(job, slot, now)
            .instrument(info_span!("job", job = job.as_str(), %slot))
            .await;
        let outcome = result.as_ref().map_or(RunOutcome::Failed, |r| r.outcome);
        record_job_metrics(job, outcome, started.elapsed());
        result
    }

    async fn claim_and_run(
        &self,
        job: JobName,
        slot: DateTime<Utc>,
        clock: Now,
    ) -> Result<RunReport, JobError> {
        let now = clock.time();
        let mut report = RunReport {
            job,
            slot,
            outcome: RunOutcome::Skipped,
            rows_affected: 0,
            detail: String::new(),
        };
        if !claim_slot(self.pool(), job, slot, &self.inner.claimed_by).await? {
            report.detail = match slot_owner(self.pool(), job, slot).await? {
                Some((by, outcome)) => format!("already claimed by {by} ({outcome})"),
                None => "already claimed".to_string(),
            };
            return Ok(report);
        }
        let result = self.dispatch(job, clock).await;
        let (outcome, rows, detail) = match result {
            Ok(done) if done.failed => (RunOutcome::Failed, done.rows_affected, done.detail),
            Ok(done) => (RunOutcome::Succeeded, done.rows_affected, done.detail),
            Err(e) => (RunOutcome::Failed, 0, format!("error: {e}")),
        };
        finish_run(self.pool(), job, slot, outcome, rows, &detail).await?;
        prune_runs(self.pool(), job, now, self.settings().runs_retention_days).await?;
        report.outcome = outcome;
        report.rows_affected = rows;
        report.detail = detail;
        Ok(report)
    }

    async fn dispatch(&self, job: JobName, clock: Now) -> Result<Done, JobError> {
        let now = clock.time();
        match job {
            JobName::Digest => digest::run(self, now).await,
            JobName::ExpireApplications => expire_applications::run(self, now).await,
            JobName::ExpireModeration => expire_moderation::run(self, now).await,
            JobName::AuditPartitions => audit_partitions::run(self, now).await,
            JobName::Reclaim => reclaim::run(self, clock).await,
            JobName::Retention => retention::run(self, now).await,
        }
    }

    /// One cron tick: the tick's time is both the slot and "now". A tick that arrives while
    /// this process still runs the previous one is left to the other processes.
    async fn on_tick(&self, job: JobName, tick: Tick) {
        let Some(slot) = i64::try_from(tick.get_timestamp())
            .ok()
            .and_then(|s| DateTime::<Utc>::from_timestamp(s, 0))
        else {
            warn!(%job, tick = tick.get_timestamp(), "cron tick out of range; skipped");
            return;
        };
        let Some(lock) = self.inner.running.get(&job) else {
            return;
        };
        let Ok(_guard) = lock.try_lock() else {
            info!(%job, %slot, "previous run still in progress in this process; tick skipped");
            return;
        };
        match self.run_tick(job, slot).await {
            Ok(r) if r.outcome == RunOutcome::Failed => warn!(report = %r, "scheduled job failed"),
            Ok(r) if r.outcome == RunOutcome::Skipped => {
                tracing::debug!(report = %r, "slot run elsewhere")
            }
            // A run that found nothing to do (the reaper every 30 s, most expiry runs) is
            // not news.
            Ok(r) if r.rows_affected == 0 => {
                tracing::debug!(report = %r, "scheduled job finished; nothing to do")
            }
            Ok(r) => info!(report = %r, "scheduled job finished"),
            Err(e) => error!(%job, %slot, error = %e, "scheduled job could not be run"),
        }
    }
}

/// Registers one apalis-cron worker per scheduled job on `monitor`: the platform jobs when
/// `jobs.enabled`, and `reclaim` always (it is part of delivery). Schedules were checked
/// when the configuration loaded; one that still does not parse is logged and left out.
pub fn register(mut monitor: Monitor, jobs: &Jobs) -> Monitor {
    for job in JobName::ALL {
        if job != JobName::Reclaim && !jobs.settings().enabled {
            continue;
        }
        let schedule = match jobs.settings().schedule(job, jobs.inner.lease) {
            Ok(Some(s)) => s,
            Ok(None) => {
                info!(%job, "scheduled job switched off");
                continue;
            }
            Err(e) => {
                error!(%job, error = %e, "scheduled job not started");
                continue;
            }
        };
        metrics::job_interval(metric_job(job), schedule.interval());
        if job == JobName::Reclaim {
            // As the reaper always did: once at start, so rows a crashed predecessor left
            // `sending` come back without waiting for the first tick.
            let jobs = jobs.clone();
            let tick = Tick::new(schedule.current_slot());
            tokio::spawn(async move { jobs.on_tick(job, tick).await });
        }
        let jobs = jobs.clone();
        monitor = monitor.register(move |_run| {
            let jobs = jobs.clone();
            WorkerBuilder::new(format!("job:{job}"))
                .backend(CronScheduler::new(schedule.clone()))
                .build(move |tick: Tick| {
                    let jobs = jobs.clone();
                    async move {
                        jobs.on_tick(job, tick).await;
                        Ok::<(), BoxDynError>(())
                    }
                })
        });
    }
    monitor
}

/// Claims `(job, slot)`: true when this process inserted the row and so owns the run.
async fn claim_slot(
    pool: &PgPool,
    job: JobName,
    slot: DateTime<Utc>,
    claimed_by: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO worker_job_runs (job_name, slot, claimed_by, started_at, outcome)
         VALUES ($1, $2, $3, clock_timestamp(), 'running')
         ON CONFLICT (job_name, slot) DO NOTHING",
    )
    .bind(job.as_str())
    .bind(slot)
    .bind(claimed_by)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

async fn slot_owner(
    pool: &PgPool,
    job: JobName,
    slot: DateTime<Utc>,
) -> Result<Option<(String, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT claimed_by, COALESCE(outcome, 'running') FROM worker_job_runs
         WHERE job_name = $1 AND slot = $2",
    )
    .bind(job.as_str())
    .bind(slot)
    .fetch_optional(pool)
    .await
}

async fn finish_run(
    pool: &PgPool,
    job: JobName,
    slot: DateTime<Utc>,
    outcome: RunOutcome,
    rows_affected: u64,
    detail: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE worker_job_runs
         SET finished_at = clock_timestamp(), outcome = $3, rows_affected = $4, detail = $5
         WHERE job_name = $1 AND slot = $2",
    )
    .bind(job.as_str())
    .bind(slot)
    .bind(outcome.as_str())
    .bind(i64::try_from(rows_affected).unwrap_or(i64::MAX))
    .bind(detail)
    .execute(pool)
    .await?;
    Ok(())
}

/// Keeps the run log bounded: the reaper alone writes a row every few seconds.
async fn prune_runs(
    pool: &PgPool,
    job: JobName,
    now: DateTime<Utc>,
    retention_days: u32,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM worker_job_runs WHERE job_name = $1 AND slot < $2")
        .bind(job.as_str())
        .bind(now - chrono::Duration::days(i64::from(retention_days)))
        .execute(pool)
        .await?;
    Ok(())
}

/// Per-run metrics (`adopt_worker_job_runs_total`, `adopt_worker_job_duration_seconds`,
/// `adopt_worker_job_last_success_timestamp_seconds`). Without a recorder (the CLI) they go
/// nowhere.
fn record_job_metrics(job: JobName, outcome: RunOutcome, duration: Duration) {
    let job = metric_job(job);
    let outcome = match outcome {
        RunOutcome::Succeeded => metrics::JobOutcome::Succeeded,
        RunOutcome::Failed => metrics::JobOutcome::Failed,
        RunOutcome::Skipped => metrics::JobOutcome::Skipped,
    };
    metrics::job_run(job, outcome, duration);
}

fn metric_job(job: JobName) -> metrics::Job {
    match job {
        JobName::Digest => metrics::Job::Digest,
        JobName::ExpireApplications => metrics::Job::ExpireApplications,
        JobName::ExpireModeration => metrics::Job::ExpireModeration,
        JobName::AuditPartitions => metrics::Job::AuditPartitions,
        JobName::Reclaim => metrics::Job::Reclaim,
        JobName::Retention => metrics::Job::Retention,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_list_the_valid_ones() {
        for job in JobName::ALL {
            assert_eq!(job.as_str().parse::<JobName>().unwrap(), job);
        }
        let err = "digests".parse::<JobName>().unwrap_err().to_string();
        assert_eq!(
            err,
            "unknown job \"digests\"; valid jobs: digest, expire-applications, expire-moderation, audit-partitions, reclaim, retention"
        );
    }

    #[test]
    fn now_accepts_rfc3339_with_any_offset() {
        let t = parse_now("2026-03-08T09:00:00-05:00").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-03-08T14:00:00+00:00");
        assert!(parse_now("yesterday").is_err());
    }
}
