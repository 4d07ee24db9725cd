-- Seed schema, part 8: audit_logs, partitioned by month.
--
-- The seed creates audit_logs as a plain table and then a partition of it,
-- which fails ("audit_logs" is not partitioned). The table is declared
-- PARTITION BY RANGE ("timestamp"), as the partition implies. PostgreSQL then
-- requires the partition key in the primary key and rows to carry a key value,
-- so the primary key is (id, "timestamp") and "timestamp" is NOT NULL
-- (its default, CURRENT_TIMESTAMP, is unchanged). id stays a BIGSERIAL and is
-- still unique in practice.
--
-- The seed's January 2024 partition is kept. audit_logs_default receives every
-- row that no monthly partition covers, so an insert never fails for want of a
-- partition. Monthly partitions audit_logs_yYYYYmMM are created ahead of time
-- by the worker's audit-partitions job.

CREATE TABLE audit_logs (
    id BIGSERIAL,
    service VARCHAR(100) NOT NULL,
    user_id UUID REFERENCES users(user_id),
    action VARCHAR(100) NOT NULL,
    level audit_level_enum NOT NULL DEFAULT 'INFO',
    "timestamp" TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    metadata JSONB,
    category VARCHAR(100) NOT NULL,
    ip_address INET,
    user_agent TEXT,
    session_id VARCHAR(255),
    request_id VARCHAR(255),
    duration_ms INTEGER,
    success BOOLEAN DEFAULT TRUE,
    error_message TEXT,
    PRIMARY KEY (id, "timestamp")
) PARTITION BY RANGE ("timestamp");

CREATE INDEX idx_audit_logs_user ON audit_logs(user_id);
CREATE INDEX idx_audit_logs_action ON audit_logs(action);
CREATE INDEX idx_audit_logs_timestamp ON audit_logs("timestamp");
CREATE INDEX idx_audit_logs_category ON audit_logs(category);
CREATE INDEX idx_audit_logs_level ON audit_logs(level);

-- Partitioning by month for performance
CREATE TABLE audit_logs_y2024m01 PARTITION OF audit_logs
    FOR VALUES FROM ('2024-01-01') TO ('2024-02-01');

CREATE TABLE audit_logs_default PARTITION OF audit_logs DEFAULT;
