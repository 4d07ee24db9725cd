//! `reclaim`: the lease reaper as a scheduled job (every `worker.lease_secs / 3` by default).
//! Rows left `sending` by a worker that died go back to the queue; see
//! [`crate::queue::reclaim_expired_at`].

use chrono::{DateTime, Utc};
use tracing::warn;

use super::{Done, JobError, Jobs};
use crate::{metrics, queue};

pub(super) async fn run(jobs: &Jobs, now: DateTime<Utc>) -> Result<Done, JobError> {
    let n = queue::reclaim_expired_at(
        jobs.pool(),
        now.naive_utc(),
        jobs.inner.lease,
        jobs.inner.default_max_retries,
    )
    .await?;
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
