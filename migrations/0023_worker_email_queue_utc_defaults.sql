-- adopt-worker: a defaulted created_at / updated_at is UTC, whatever the inserting session's
-- TimeZone.
--
-- The seed declares them `TIMESTAMP DEFAULT CURRENT_TIMESTAMP`: the default is the
-- transaction's start as the session's local wall-clock time, so a service whose session
-- runs in Berlin writes a time an hour or two ahead of UTC, and one in New York five hours
-- behind. Every email_queue time is read as UTC, so such rows looked late or early to the
-- queue's metrics ("oldest due age", enqueue-to-sent) and ordered wrongly in the claim.
--
-- A value equal to LOCALTIMESTAMP is exactly what the default (or an explicit `now()`)
-- produced in this session: it is replaced by the same instant in UTC. In a UTC session the
-- two are equal and nothing changes. An explicit value a service computed itself is kept
-- as written (a wrong one is counted in adopt_worker_queue_created_ahead).
-- CREATE TRIGGER takes a brief SHARE ROW EXCLUSIVE lock; no row is rewritten.

CREATE FUNCTION adopt_worker_email_queue_utc_defaults()
RETURNS TRIGGER
LANGUAGE plpgsql
AS $$
BEGIN
    IF NEW.created_at = LOCALTIMESTAMP THEN
        NEW.created_at := now() AT TIME ZONE 'UTC';
    END IF;
    IF NEW.updated_at = LOCALTIMESTAMP THEN
        NEW.updated_at := now() AT TIME ZONE 'UTC';
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER adopt_worker_email_queue_utc_defaults
    BEFORE INSERT ON email_queue
    FOR EACH ROW
    EXECUTE FUNCTION adopt_worker_email_queue_utc_defaults();
