-- adopt-worker: find a user by email address regardless of case.
--
-- The worker matches email_queue.to_email to users with
--   WHERE lower(email) = lower($1)
-- users.email is unique as written (uk_users_email), so this index does not
-- make addresses unique case-insensitively; it only makes the lookup fast.

CREATE INDEX idx_users_email_lower ON users (lower(email));
