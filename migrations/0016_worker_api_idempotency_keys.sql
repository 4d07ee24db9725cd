-- adopt-worker: Idempotency-Key replay for the HTTP API.
--
-- The first request with a given key stores its response; a repeat with the
-- same request_hash gets the stored response, a repeat with a different body
-- is refused. Old keys are deleted by created_at.

CREATE TABLE api_idempotency_keys (
    token_id UUID NOT NULL REFERENCES api_tokens(token_id) ON DELETE CASCADE,
    idempotency_key TEXT NOT NULL,
    request_hash BYTEA NOT NULL,
    response JSONB NOT NULL,
    status_code INTEGER NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (token_id, idempotency_key)
);

CREATE INDEX idx_api_idempotency_keys_created_at ON api_idempotency_keys (created_at);
