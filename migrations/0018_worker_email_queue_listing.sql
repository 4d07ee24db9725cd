-- adopt-worker: the API's email listing (GET /v1/emails), newest first.
--
-- The list is keyset-paginated on (created_at, email_id) descending, with
-- NULL created_at sorting as -infinity:
--   ORDER BY COALESCE(created_at, '-infinity'), email_id DESC
--   WHERE (COALESCE(created_at, '-infinity'), email_id) < (cursor)
-- Without this index every page is a full scan plus a top-N sort of the whole
-- table (EXPLAIN on 300k rows: parallel seq scan, 73 ms, growing with the
-- table); with it a page is a short backward index walk that stops after
-- `limit` rows. A status filter on a rare status (failed) is answered by the
-- seed's idx_email_queue_status instead; on a common one by this index.
CREATE INDEX idx_email_queue_listing
    ON email_queue ((COALESCE(created_at, '-infinity'::timestamp)), email_id);
