//! Every statement on `email_templates` (and the system user that owns synced templates).

use chrono::NaiveDateTime;
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::lookup::Candidate;

/// The well-known user that `templates sync` records as `created_by`/`last_modified_by`
/// (the column is NOT NULL and must reference a user). It is an ADMIN so that admin-only
/// listings show its templates, INACTIVE so that it can never sign in, and its password
/// hash is a marker no password hashes to.
pub const SYSTEM_USER_ID: Uuid = Uuid::from_u128(0x00000000_0000_4000_8000_000000000001);
pub const SYSTEM_USER_EMAIL: &str = "system@adoptdontshop.invalid";
const SYSTEM_USER_PASSWORD_HASH: &str = "!unusable: adopt-worker system account, cannot sign in";

/// Creates the system user when missing. Fails when its address belongs to someone else.
pub async fn ensure_system_user(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO users (user_id, email, password_hash, first_name, last_name, user_type, status,
                            email_verified, created_at, updated_at)
         VALUES ($1, $2, $3, 'Adopt Don''t Shop', 'System', 'ADMIN', 'INACTIVE', false,
                 now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC')
         ON CONFLICT DO NOTHING",
    )
    .bind(SYSTEM_USER_ID)
    .bind(SYSTEM_USER_EMAIL)
    .bind(SYSTEM_USER_PASSWORD_HASH)
    .execute(&mut *conn)
    .await?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users WHERE user_id = $1)")
        .bind(SYSTEM_USER_ID)
        .fetch_one(&mut *conn)
        .await?;
    if exists {
        Ok(())
    } else {
        Err(sqlx::Error::Protocol(format!(
            "cannot create the system user {SYSTEM_USER_ID}: {SYSTEM_USER_EMAIL} belongs to another user"
        )))
    }
}

/// Serialises concurrent syncs (held until the transaction ends).
pub async fn lock_for_sync(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(724062)")
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// A stored template as sync compares it with its files.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredTemplate {
    pub template_id: Uuid,
    pub name: String,
    pub description: Option<String>,
    pub template_type: String,
    pub category: String,
    pub status: String,
    pub subject: String,
    pub html_content: String,
    pub text_content: Option<String>,
    pub variables: Option<Value>,
    pub metadata: Option<Value>,
    pub locale: Option<String>,
    pub parent_name: Option<String>,
    pub current_version: i32,
    pub is_default: Option<bool>,
    pub priority: Option<i32>,
    pub tags: Option<Vec<String>>,
    /// Soft-deleted by an admin: sync leaves it (and creates nothing in its place) unless
    /// its name is forced.
    pub deleted: bool,
}

/// The rows with these names, locked until the transaction ends: per name the live row,
/// else the most recently deleted one.
pub async fn rows_for_sync(
    conn: &mut PgConnection,
    names: &[String],
) -> Result<Vec<StoredTemplate>, sqlx::Error> {
    sqlx::query_as(
        "SELECT t.template_id, t.name, t.description, t.type::text AS template_type,
                t.category::text AS category, t.status::text AS status, t.subject, t.html_content,
                t.text_content, t.variables, t.metadata, t.locale, p.name AS parent_name,
                COALESCE(t.current_version, 1) AS current_version, t.is_default, t.priority, t.tags,
                (t.deleted_at IS NOT NULL) AS deleted
         FROM email_templates t
         LEFT JOIN email_templates p ON p.template_id = t.parent_template_id
         WHERE lower(t.name) = ANY(SELECT lower(n) FROM unnest($1::text[]) AS n)
         ORDER BY t.name, t.deleted_at IS NOT NULL, t.deleted_at DESC
         FOR UPDATE OF t",
    )
    .bind(names)
    .fetch_all(&mut *conn)
    .await
}

/// A live row that is not one of `names` (compared case-insensitively).
#[derive(Debug, sqlx::FromRow)]
pub struct OtherTemplate {
    pub name: String,
    pub category: String,
    pub locale: String,
    pub is_default: bool,
    /// SHA-256 (hex) of subject, U+001F and HTML, to spot a directory that was renamed.
    pub content_sha256: String,
}

/// The live (active, not deleted) rows whose names are not among `names`: their defaults
/// must not be doubled, and one with the same content as a new name was probably renamed.
pub async fn live_rows_except(
    conn: &mut PgConnection,
    names: &[String],
) -> Result<Vec<OtherTemplate>, sqlx::Error> {
    sqlx::query_as(
        "SELECT name, category::text AS category, COALESCE(locale, '') AS locale,
                COALESCE(is_default, false) AS is_default,
                encode(sha256(convert_to(COALESCE(subject, '') || chr(31) || COALESCE(html_content, ''), 'UTF8')), 'hex') AS content_sha256
         FROM email_templates
         WHERE status = 'active' AND deleted_at IS NULL
           AND lower(name) <> ALL(SELECT lower(n) FROM unnest($1::text[]) AS n)
         ORDER BY name",
    )
    .bind(names)
    .fetch_all(&mut *conn)
    .await
}

/// The fields sync writes, as they go into the row.
#[derive(Debug, Clone)]
pub struct TemplateWrite<'a> {
    pub name: &'a str,
    pub description: Option<&'a str>,
    pub template_type: &'a str,
    pub category: &'a str,
    pub status: &'a str,
    pub subject: &'a str,
    pub html_content: &'a str,
    pub text_content: Option<&'a str>,
    pub variables: Value,
    pub locale: &'a str,
    pub parent: Option<&'a str>,
    pub is_default: bool,
    pub priority: i32,
    pub tags: &'a [String],
}

/// Inserts a new template at version 1 with `metadata = {"sync": sync}`.
pub async fn insert_template(
    conn: &mut PgConnection,
    t: &TemplateWrite<'_>,
    sync: &Value,
) -> Result<Uuid, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO email_templates (name, description, type, category, status, subject,
             html_content, text_content, variables, metadata, locale, parent_template_id, versions,
             current_version, is_default, priority, tags, created_by, last_modified_by,
             created_at, updated_at)
         VALUES ($1, $2, $3::template_type_enum, $4::template_category_enum,
             $5::template_status_enum, $6, $7, $8, $9, jsonb_build_object('sync', $10::jsonb), $11,
             (SELECT template_id FROM email_templates WHERE lower(name) = lower($12) AND deleted_at IS NULL
              ORDER BY (name = $12) DESC LIMIT 1),
             '[]'::jsonb, 1, $13, $14, $15, $16, $16,
             now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC')
         RETURNING template_id",
    )
    .bind(t.name)
    .bind(t.description)
    .bind(t.template_type)
    .bind(t.category)
    .bind(t.status)
    .bind(t.subject)
    .bind(t.html_content)
    .bind(t.text_content)
    .bind(&t.variables)
    .bind(sync)
    .bind(t.locale)
    .bind(t.parent)
    .bind(t.is_default)
    .bind(t.priority)
    .bind(t.tags)
    .bind(SYSTEM_USER_ID)
    .fetch_one(&mut *conn)
    .await
}

/// Overwrites a template with `t`. With `new_version`, the row's current content first goes
/// into `versions` (`{version, subject, html_content, text_content, variables, created_at,
/// created_by, change_notes}`) and `current_version` goes up by one; without it (only
/// attributes changed) the version stays. `metadata.sync` is replaced, other metadata kept.
/// Returns the row's version afterwards.
pub async fn update_template(
    conn: &mut PgConnection,
    id: Uuid,
    t: &TemplateWrite<'_>,
    new_version: bool,
    old_version_notes: &str,
    sync: &Value,
) -> Result<i32, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE email_templates SET
            versions = CASE WHEN $2 THEN
                (CASE WHEN jsonb_typeof(versions) = 'array' THEN versions ELSE '[]'::jsonb END)
                || jsonb_build_array(jsonb_build_object(
                    'version', COALESCE(current_version, 1),
                    'subject', subject,
                    'html_content', html_content,
                    'text_content', text_content,
                    'variables', COALESCE(variables, '[]'::jsonb),
                    'created_at', to_char(COALESCE(updated_at, created_at), 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),
                    'created_by', COALESCE(last_modified_by, created_by),
                    'change_notes', $3::text))
                ELSE versions END,
            current_version = COALESCE(current_version, 1) + CASE WHEN $2 THEN 1 ELSE 0 END,
            description = $4,
            type = $5::template_type_enum,
            category = $6::template_category_enum,
            status = $7::template_status_enum,
            subject = $8,
            html_content = $9,
            text_content = $10,
            variables = $11,
            locale = $12,
            parent_template_id = (SELECT p.template_id FROM email_templates p
                                  WHERE lower(p.name) = lower($13) AND p.deleted_at IS NULL
                                  ORDER BY (p.name = $13) DESC LIMIT 1),
            is_default = $14,
            priority = $15,
            tags = $16,
            metadata = CASE WHEN jsonb_typeof(metadata) = 'object' THEN metadata ELSE '{}'::jsonb END
                || jsonb_build_object('sync', $17::jsonb),
            last_modified_by = $18,
            deleted_at = NULL,
            updated_at = now() AT TIME ZONE 'UTC'
         WHERE template_id = $1
         RETURNING current_version",
    )
    .bind(id)
    .bind(new_version)
    .bind(old_version_notes)
    .bind(t.description)
    .bind(t.template_type)
    .bind(t.category)
    .bind(t.status)
    .bind(t.subject)
    .bind(t.html_content)
    .bind(t.text_content)
    .bind(&t.variables)
    .bind(t.locale)
    .bind(t.parent)
    .bind(t.is_default)
    .bind(t.priority)
    .bind(t.tags)
    .bind(sync)
    .bind(SYSTEM_USER_ID)
    .fetch_one(&mut *conn)
    .await
}

/// The rows a lookup may choose from: the requested row (by id, or by name among live rows)
/// and its parent chain (with `depth`), their locale variants, and the active default
/// templates of the requested row's category.
pub async fn lookup_candidates(
    pool: &PgPool,
    id: Option<Uuid>,
    name: Option<&str>,
) -> Result<Vec<Candidate>, sqlx::Error> {
    sqlx::query_as(
        "WITH RECURSIVE root AS (
             SELECT template_id, category FROM email_templates
             WHERE ($1::uuid IS NOT NULL AND template_id = $1)
                OR ($1::uuid IS NULL AND lower(name) = lower($2) AND deleted_at IS NULL)
             -- Names are compared case-insensitively; the exact spelling first.
             ORDER BY (name = $2) DESC
             LIMIT 1
         ), chain AS (
             SELECT t.template_id, t.parent_template_id, 0 AS depth
             FROM email_templates t JOIN root r ON r.template_id = t.template_id
             UNION ALL
             SELECT p.template_id, p.parent_template_id, c.depth + 1
             FROM chain c JOIN email_templates p ON p.template_id = c.parent_template_id
             WHERE c.depth < 8
         )
         SELECT t.template_id, t.name, t.locale, t.parent_template_id,
                t.category::text AS category,
                COALESCE(t.is_default, false) AS is_default,
                COALESCE(t.priority, 0) AS priority,
                (t.status = 'active' AND t.deleted_at IS NULL) AS usable,
                CASE WHEN t.deleted_at IS NOT NULL THEN 'deleted' ELSE t.status::text END AS state,
                COALESCE(t.current_version, 1) AS current_version,
                t.updated_at,
                (SELECT min(c.depth) FROM chain c WHERE c.template_id = t.template_id) AS depth
         FROM email_templates t
         WHERE t.template_id IN (SELECT template_id FROM chain)
            OR t.parent_template_id IN (SELECT template_id FROM chain)",
    )
    .bind(id)
    .bind(name)
    .fetch_all(pool)
    .await
}

/// One version's sources, as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct VersionContent {
    pub name: String,
    pub subject: Option<String>,
    pub html_content: Option<String>,
    pub text_content: Option<String>,
    pub variables: Option<Value>,
}

/// The current content of a template, with its version and `updated_at`.
pub async fn current_content(
    pool: &PgPool,
    id: Uuid,
) -> Result<Option<(VersionContent, i32, Option<NaiveDateTime>)>, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Row {
        #[sqlx(flatten)]
        content: VersionContent,
        current_version: i32,
        updated_at: Option<NaiveDateTime>,
    }
    let row: Option<Row> = sqlx::query_as(
        "SELECT name, subject, html_content, text_content, variables,
                COALESCE(current_version, 1) AS current_version, updated_at
         FROM email_templates WHERE template_id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| (r.content, r.current_version, r.updated_at)))
}

/// An earlier version from `versions`. Entries written by other tools with camelCase keys
/// (`htmlContent`, `textContent`) are read too.
pub async fn archived_content(
    pool: &PgPool,
    id: Uuid,
    version: i32,
) -> Result<Option<VersionContent>, sqlx::Error> {
    sqlx::query_as(
        "SELECT t.name, v->>'subject' AS subject,
                COALESCE(v->>'html_content', v->>'htmlContent') AS html_content,
                COALESCE(v->>'text_content', v->>'textContent') AS text_content,
                COALESCE(v->'variables', '[]'::jsonb) AS variables
         FROM email_templates t
         CROSS JOIN LATERAL jsonb_array_elements(
             CASE WHEN jsonb_typeof(t.versions) = 'array' THEN t.versions ELSE '[]'::jsonb END) v
         WHERE t.template_id = $1 AND v->>'version' = $2::text
         LIMIT 1",
    )
    .bind(id)
    .bind(version)
    .fetch_optional(pool)
    .await
}

/// The recipient's `email_preferences.language`, when they have preferences.
pub async fn user_language(pool: &PgPool, user_id: Uuid) -> Result<Option<String>, sqlx::Error> {
    let lang: Option<Option<String>> =
        sqlx::query_scalar("SELECT language FROM email_preferences WHERE user_id = $1")
            .bind(user_id)
            .fetch_optional(pool)
            .await?;
    Ok(lang.flatten().filter(|l| !l.trim().is_empty()))
}

/// Adds `counts[i]` uses at `last_used[i]` to template `ids[i]`, for all of them in one
/// statement. `updated_at` is not touched: being used is not an edit.
pub async fn add_usage(
    pool: &PgPool,
    ids: &[Uuid],
    counts: &[i32],
    last_used: &[NaiveDateTime],
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE email_templates t SET
            usage_count = COALESCE(t.usage_count, 0) + u.n,
            last_used_at = GREATEST(t.last_used_at, u.last)
         FROM unnest($1::uuid[], $2::int[], $3::timestamp[]) AS u(id, n, last)
         WHERE t.template_id = u.id",
    )
    .bind(ids)
    .bind(counts)
    .bind(last_used)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}
