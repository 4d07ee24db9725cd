//! `reclaim`: the lease reaper as a scheduled job (every `worker.lease_secs / 3` by default).
//! Rows left `sending` by a worker that died go back to the queue; see
//! [`crate::queue::reclaim_expired_at`].

use tracing::warn;

use super::{Done, JobError, Jobs, Now};
use crate::{metrics, queue};

/// The lease runs on the database's clock (the claim writes `last_attempt_at` with it): a
/// host whose clock runs ahead must not take back rows still being sent. Only a time told
/// explicitly (`--now`) replaces it.
pub(super) async fn run(jobs: &Jobs, clock: Now) -> Result<Done, JobError> {
    let (lease, max) = (jobs.inner.lease, jobs.inner.default_max_retries);
    let n = match clock {
        Now::Told(now) => {
            queue::reclaim_expired_at(jobs.pool(), now.naive_utc(), lease, max).await?
        }
        Now::Host(_) => queue::reclaim_expired(jobs.pool(), lease, max).await?,
    };
    metrics::lease_reclaims(n);
    if n > 0 {
        warn!(
            reclaimed = n,
            "took back rows whose worker stopped mid-send"
        );
    }
    Ok(Done {
        rows_affected: n,
        detail: if n > 0 {
            format!("reclaimed={n}")
        } else {
            String::new()
        },
        failed: false,
    })
}
