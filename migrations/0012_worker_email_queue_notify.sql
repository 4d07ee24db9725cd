-- adopt-worker: wake idle workers when an email becomes due.
--
-- A row that is inserted as, or set back to, 'queued' and is due now sends a
-- NOTIFY on channel adopt_worker_email_queue. Workers LISTEN on it and claim
-- at once; rows scheduled for later are found by the workers' poll.
-- * The payload is empty, so PostgreSQL folds all notifications of one
--   transaction into one, however many rows it inserts.
-- * NOTIFY is delivered at commit, so workers never wake for a row they
--   cannot see yet.
-- * email_queue times are TIMESTAMP without time zone, written in UTC, so
--   "now" is taken in UTC explicitly, whatever the inserting session's
--   TimeZone. clock_timestamp() rather than now() so a row scheduled for
--   "now" late in a long transaction still counts as due.

CREATE FUNCTION adopt_worker_notify_email_queue()
RETURNS TRIGGER
LANGUAGE plpgsql
AS $$
BEGIN
    IF NEW.scheduled_for IS NULL
       OR NEW.scheduled_for <= (clock_timestamp() AT TIME ZONE 'UTC') THEN
        PERFORM pg_notify('adopt_worker_email_queue', '');
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER adopt_worker_notify_email_queue
    AFTER INSERT OR UPDATE OF status ON email_queue
    FOR EACH ROW
    WHEN (NEW.status = 'queued')
    EXECUTE FUNCTION adopt_worker_notify_email_queue();
