-- adopt-worker: faster compression for the queue's large columns.
--
-- A row's rendered HTML and text (tens of KB for a newsletter) are written back when it is
-- sent, and template_data arrives with it: with the default pglz, compressing them is a
-- large share of PostgreSQL's CPU per email (README "Performance"). lz4 compresses several
-- times faster at a similar ratio. Only values written from now on use it; existing values
-- stay readable. A server built without lz4 keeps pglz (a notice says so).
DO $$
BEGIN
    ALTER TABLE email_queue
        ALTER COLUMN html_content SET COMPRESSION lz4,
        ALTER COLUMN text_content SET COMPRESSION lz4,
        ALTER COLUMN template_data SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'email_queue: lz4 is not available on this server; pglz stays';
END
$$;
