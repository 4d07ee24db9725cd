-- Worker addition: an edit of a template's content, status or place in its family that
-- leaves `updated_at` as it was (an admin tool, a hand-written UPDATE) still moves it, so
-- every worker process, whose compiled-template cache is keyed on `updated_at`, renders
-- the new content within `templates.lookup_ttl_ms`. Writes that touch nothing rendered
-- (usage counts) leave `updated_at` alone.
CREATE FUNCTION adopt_worker_touch_email_template()
RETURNS TRIGGER
LANGUAGE plpgsql
AS $$
BEGIN
    IF NEW.updated_at IS NOT DISTINCT FROM OLD.updated_at
       AND (NEW.subject, NEW.html_content, NEW.text_content, NEW.variables, NEW.status,
            NEW.deleted_at, NEW.current_version, NEW.versions, NEW.locale,
            NEW.parent_template_id, NEW.is_default, NEW.priority, NEW.category, NEW.type)
           IS DISTINCT FROM
           (OLD.subject, OLD.html_content, OLD.text_content, OLD.variables, OLD.status,
            OLD.deleted_at, OLD.current_version, OLD.versions, OLD.locale,
            OLD.parent_template_id, OLD.is_default, OLD.priority, OLD.category, OLD.type)
    THEN
        -- Strictly later than before, even within one clock tick.
        NEW.updated_at := GREATEST(clock_timestamp() AT TIME ZONE 'UTC',
                                   OLD.updated_at + interval '1 microsecond');
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER adopt_worker_touch_email_template
    BEFORE UPDATE ON email_templates
    FOR EACH ROW EXECUTE FUNCTION adopt_worker_touch_email_template();
