-- adopt-worker: request limits per caller, shared by every process.
--
-- The admin template test send (POST /v1/templates/{name}/test) is limited per
-- admin across all API processes: each caller has a token bucket here (capacity
-- and refill per minute from the configuration), taken from in one
-- INSERT ... ON CONFLICT DO UPDATE, which the row lock serialises. Rows unused
-- for an hour are full again and are deleted opportunistically by the API.

CREATE TABLE api_rate_limits (
    key TEXT PRIMARY KEY,
    tokens DOUBLE PRECISION NOT NULL,
    allowed BOOLEAN NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);

CREATE INDEX idx_api_rate_limits_updated_at ON api_rate_limits (updated_at);
