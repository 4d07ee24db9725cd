-- adopt-worker: replay protection for the relay webhook (POST /v1/webhooks/events).
--
-- Each accepted webhook request's HMAC signature is remembered here, inserted in
-- the same transaction as the events it applied, so a captured request sent
-- again inside the timestamp window is refused, by whichever process gets it.
-- Rows older than twice the window can no longer match a fresh request and are
-- deleted opportunistically by the API.

CREATE TABLE api_webhook_signatures (
    signature BYTEA PRIMARY KEY,
    received_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX idx_api_webhook_signatures_received_at ON api_webhook_signatures (received_at);
