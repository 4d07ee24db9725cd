-- adopt-worker: bounce bookkeeping for recipients who are not users.
--
-- email_preferences holds bounce counts and the blacklist only for rows of
-- users. Mail to any other address (rescue contacts, invitations) keeps the
-- same fields here, keyed by the lower-cased address.

CREATE TABLE email_suppressions (
    email TEXT PRIMARY KEY,
    bounce_count INTEGER NOT NULL DEFAULT 0,
    last_bounce_at TIMESTAMP,
    is_blacklisted BOOLEAN NOT NULL DEFAULT false,
    blacklist_reason TEXT,
    blacklisted_at TIMESTAMP,
    created_at TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    updated_at TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    CONSTRAINT chk_email_suppressions_email_lower CHECK (email = lower(email))
);
