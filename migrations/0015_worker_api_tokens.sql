-- adopt-worker: service tokens for the HTTP API.
--
-- Only a hash of each token is stored. A token is refused once revoked_at is
-- set; rows are kept so past use stays attributable.

CREATE TABLE api_tokens (
    token_id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    name TEXT NOT NULL UNIQUE,
    token_hash BYTEA NOT NULL UNIQUE,
    scopes TEXT[] NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_used_at TIMESTAMPTZ,
    revoked_at TIMESTAMPTZ,
    CONSTRAINT chk_api_tokens_scopes_valid
        CHECK (scopes <@ ARRAY['enqueue', 'read', 'admin']::TEXT[])
);
