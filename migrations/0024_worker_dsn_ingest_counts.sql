-- adopt-worker: how many messages sent to the bounce address (DSNs, abuse reports, anything
-- else) `adopt-worker bounces ingest` and POST /v1/webhooks/dsn handled, by result.
--
-- The ingest usually runs as a short-lived process per message (an MTA's pipe), so its
-- counts cannot live in a process: they are kept here, incremented in the same transaction
-- as the message's effects, and every process serving /metrics exports them as
-- adopt_worker_dsn_ingested_total{result}. A new table: no lock on any shared table.

CREATE TABLE worker_dsn_ingest_counts (
    result TEXT PRIMARY KEY,
    total BIGINT NOT NULL DEFAULT 0,
    last_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
