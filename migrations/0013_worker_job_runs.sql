-- adopt-worker: one row per scheduled job run.
--
-- A worker runs a job for a time slot only if its
--   INSERT INTO worker_job_runs (job_name, slot, claimed_by) ... ON CONFLICT DO NOTHING
-- inserts a row, so each (job, slot) runs exactly once however many worker
-- processes are up. The table is also the run log operators query.

CREATE TABLE worker_job_runs (
    job_name TEXT NOT NULL,
    slot TIMESTAMPTZ NOT NULL,
    claimed_by TEXT NOT NULL,
    started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at TIMESTAMPTZ,
    outcome TEXT CONSTRAINT chk_worker_job_runs_outcome
        CHECK (outcome IN ('running', 'succeeded', 'failed', 'skipped')),
    rows_affected BIGINT,
    detail TEXT,
    PRIMARY KEY (job_name, slot)
);

-- "Latest runs of job X".
CREATE INDEX idx_worker_job_runs_job_started ON worker_job_runs (job_name, started_at DESC);
