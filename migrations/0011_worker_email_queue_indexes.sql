-- adopt-worker: indexes for the email_queue claim, lease reaper and webhooks.

-- The claim takes, for each priority, the due queued rows oldest first:
--   WHERE status = 'queued' AND priority = $p
--     AND COALESCE(scheduled_for, created_at, '-infinity') <= (now() AT TIME ZONE 'UTC')
--   ORDER BY COALESCE(scheduled_for, created_at, '-infinity') LIMIT n FOR UPDATE SKIP LOCKED
-- ('-infinity' so a row inserted with both times NULL is due at once, never stranded.)
-- This index answers that as one ordered range scan per priority and holds
-- only queued rows, so it stays small however many sent rows accumulate.
CREATE INDEX idx_email_queue_claim
    ON email_queue (priority, (COALESCE(scheduled_for, created_at, '-infinity'::timestamp)))
    WHERE status = 'queued';

-- The lease reaper looks for rows left in 'sending' by a worker that died.
CREATE INDEX idx_email_queue_sending
    ON email_queue (last_attempt_at)
    WHERE status = 'sending';

-- Delivery, bounce, open and click webhooks find their row by the provider's message id.
CREATE INDEX idx_email_queue_provider_message_id
    ON email_queue (provider_message_id)
    WHERE provider_message_id IS NOT NULL;
