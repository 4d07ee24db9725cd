//! The `[jobs]` configuration section: the scheduled jobs' names and each one's schedule.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use apalis_cron::Tick;
use chrono::Utc;
use serde::Deserialize;

/// The scheduled jobs. Their names are a contract (CLI, `worker_job_runs.job_name`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobName {
    Digest,
    ExpireApplications,
    ExpireModeration,
    AuditPartitions,
    Reclaim,
    Retention,
}

impl JobName {
    pub const ALL: [JobName; 6] = [
        JobName::Digest,
        JobName::ExpireApplications,
        JobName::ExpireModeration,
        JobName::AuditPartitions,
        JobName::Reclaim,
        JobName::Retention,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobName::Digest => "digest",
            JobName::ExpireApplications => "expire-applications",
            JobName::ExpireModeration => "expire-moderation",
            JobName::AuditPartitions => "audit-partitions",
            JobName::Reclaim => "reclaim",
            JobName::Retention => "retention",
        }
    }

    pub(crate) fn valid_names() -> String {
        Self::ALL.map(JobName::as_str).join(", ")
    }
}

impl fmt::Display for JobName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[jobs]` in the configuration (see `config/default.toml` for every key's meaning).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSettings {
    /// Runs the platform jobs (digest, expiries, audit partitions) in `adopt-worker run`.
    /// The `reclaim` job is part of delivery and runs wherever workers run.
    pub enabled: bool,
    pub digest_schedule: String,
    pub expire_applications_schedule: String,
    pub expire_moderation_schedule: String,
    pub audit_partitions_schedule: String,
    /// Empty: every `worker.lease_secs / 3` seconds.
    pub reclaim_schedule: String,
    pub retention_schedule: String,
    /// Finished rows older than this many days lose their bodies; 0 keeps them.
    pub retention_body_days: u32,
    /// Finished rows older than this many days are deleted; 0 keeps them.
    pub retention_row_days: u32,
    pub audit_partitions_months_ahead: u32,
    pub audit_retention_months: u32,
    /// Rows changed per statement (and per transaction) by the expiry jobs; the digest's
    /// page of users.
    pub batch_size: u32,
    /// Most held notifications one digest carries; the rest wait for the next one.
    pub digest_max_held: u32,
    /// `worker_job_runs` rows older than this many days are deleted.
    pub runs_retention_days: u32,
}

/// The value that switches one job's schedule off.
const OFF: &str = "off";

impl JobSettings {
    fn schedule_key(job: JobName) -> &'static str {
        match job {
            JobName::Digest => "digest_schedule",
            JobName::ExpireApplications => "expire_applications_schedule",
            JobName::ExpireModeration => "expire_moderation_schedule",
            JobName::AuditPartitions => "audit_partitions_schedule",
            JobName::Reclaim => "reclaim_schedule",
            JobName::Retention => "retention_schedule",
        }
    }

    fn schedule_text(&self, job: JobName) -> &str {
        match job {
            JobName::Digest => &self.digest_schedule,
            JobName::ExpireApplications => &self.expire_applications_schedule,
            JobName::ExpireModeration => &self.expire_moderation_schedule,
            JobName::AuditPartitions => &self.audit_partitions_schedule,
            JobName::Reclaim => &self.reclaim_schedule,
            JobName::Retention => &self.retention_schedule,
        }
    }

    /// The job's schedule, or `None` when it is switched off (`"off"`). An empty
    /// `reclaim_schedule` means every third of the lease, aligned to the epoch so that
    /// every process computes the same slots.
    pub fn schedule(&self, job: JobName, lease: Duration) -> Result<Option<JobSchedule>, String> {
        let text = self.schedule_text(job).trim();
        if text.eq_ignore_ascii_case(OFF) {
            return Ok(None);
        }
        if text.is_empty() && job == JobName::Reclaim {
            return Ok(Some(JobSchedule::Every(
                (lease / 3).max(Duration::from_secs(1)),
            )));
        }
        cron::Schedule::from_str(text)
            .map(|s| Some(JobSchedule::Cron(Box::new(s))))
            .map_err(|e| {
                format!(
                    "jobs.{} = {text:?} is not a cron expression (6 fields, seconds first, e.g. \"0 */5 * * * *\"): {e}",
                    Self::schedule_key(job)
                )
            })
    }

    /// Checks every key; called by [`crate::config::Settings`] at load.
    pub fn validate(&self, lease: Duration) -> Result<(), String> {
        for job in JobName::ALL {
            self.schedule(job, lease)?;
        }
        if self.audit_retention_months == 0 {
            return Err("jobs.audit_retention_months must be at least 1".into());
        }
        if self.audit_partitions_months_ahead > 120 {
            return Err("jobs.audit_partitions_months_ahead must be at most 120".into());
        }
        if self.batch_size == 0 || self.digest_max_held == 0 {
            return Err("jobs.batch_size and jobs.digest_max_held must be at least 1".into());
        }
        if self.runs_retention_days == 0 {
            return Err("jobs.runs_retention_days must be at least 1".into());
        }
        Ok(())
    }
}

/// When a job fires: a cron expression (UTC) or a fixed interval aligned to the epoch.
#[derive(Debug, Clone)]
pub enum JobSchedule {
    Cron(Box<cron::Schedule>),
    Every(Duration),
}

impl JobSchedule {
    /// The slot "now" falls in: the last aligned tick for an interval (shared by every
    /// process), the current second for a cron expression.
    pub fn current_slot(&self) -> u64 {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        match self {
            JobSchedule::Every(every) => {
                let step = every.as_secs().max(1);
                now / step * step
            }
            JobSchedule::Cron(_) => now,
        }
    }

    /// The longest time between two runs: the interval, or for a cron expression the
    /// widest gap among its next 64 fires (a weekday schedule's weekend, say). What a
    /// staleness alert compares the last success with.
    pub fn interval(&self) -> Duration {
        match self {
            JobSchedule::Every(every) => *every,
            JobSchedule::Cron(s) => {
                let fires: Vec<_> = s.upcoming(Utc).take(65).collect();
                fires
                    .windows(2)
                    .filter_map(|w| (w[1] - w[0]).to_std().ok())
                    .max()
                    .unwrap_or(Duration::from_secs(24 * 3600))
            }
        }
    }
}

impl apalis_cron::Schedule<Utc> for JobSchedule {
    fn next_tick(&mut self, tz: &Utc) -> Option<Tick<Utc>> {
        match self {
            JobSchedule::Cron(s) => s
                .upcoming(*tz)
                .next()
                .and_then(|t| u64::try_from(t.timestamp()).ok())
                .map(Tick::new),
            JobSchedule::Every(every) => {
                let step = every.as_secs().max(1);
                let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
                Some(Tick::new((now / step + 1) * step))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use apalis_cron::Schedule as _;

    fn settings() -> JobSettings {
        JobSettings {
            enabled: true,
            digest_schedule: "0 */5 * * * *".into(),
            expire_applications_schedule: "off".into(),
            expire_moderation_schedule: "0 * * * * *".into(),
            audit_partitions_schedule: "0 7 * * * *".into(),
            reclaim_schedule: String::new(),
            retention_schedule: "0 30 3 * * *".into(),
            retention_body_days: 30,
            retention_row_days: 0,
            audit_partitions_months_ahead: 3,
            audit_retention_months: 24,
            batch_size: 500,
            digest_max_held: 100,
            runs_retention_days: 30,
        }
    }

    #[test]
    fn schedules_parse_switch_off_and_derive_reclaim_from_the_lease() {
        let s = settings();
        let lease = Duration::from_secs(90);
        assert!(s.validate(lease).is_ok());
        assert!(
            s.schedule(JobName::ExpireApplications, lease)
                .unwrap()
                .is_none()
        );
        match s.schedule(JobName::Reclaim, lease).unwrap() {
            Some(JobSchedule::Every(d)) => assert_eq!(d, Duration::from_secs(30)),
            other => panic!("{other:?}"),
        }
        let mut bad = settings();
        bad.digest_schedule = "*/5 * * * *".into();
        let err = bad.validate(lease).unwrap_err();
        assert!(err.contains("jobs.digest_schedule"), "{err}");
    }

    #[test]
    fn a_schedule_knows_its_longest_gap() {
        let every = JobSchedule::Every(Duration::from_secs(300));
        assert_eq!(every.interval(), Duration::from_secs(300));
        let cron =
            |text: &str| JobSchedule::Cron(Box::new(cron::Schedule::from_str(text).unwrap()));
        assert_eq!(cron("0 */15 * * * *").interval(), Duration::from_secs(900));
        // Weekdays at 09:00: the weekend is the widest gap.
        assert_eq!(
            cron("0 0 9 * * Mon-Fri").interval(),
            Duration::from_secs(3 * 24 * 3600)
        );
    }

    #[test]
    fn interval_ticks_are_aligned_so_every_process_shares_them() {
        let mut every = JobSchedule::Every(Duration::from_secs(30));
        let tick = every.next_tick(&Utc).unwrap().get_timestamp();
        assert_eq!(tick % 30, 0);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(tick > now && tick <= now + 30);
    }
}
