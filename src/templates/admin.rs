//! What the admin API reads and counts on `email_templates`: the listing, one template's
//! type and example data (for previews and test sends), and `test_emails_sent`.

use chrono::NaiveDateTime;
use serde_json::{Map, Value};
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

use crate::queue::EmailType;

/// One row of `GET /v1/templates`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TemplateSummary {
    pub template_id: Uuid,
    pub name: String,
    pub description: Option<String>,
    pub template_type: String,
    pub category: String,
    pub status: String,
    pub locale: Option<String>,
    pub current_version: Option<i32>,
    pub is_default: Option<bool>,
    pub usage_count: Option<i32>,
    pub test_emails_sent: Option<i32>,
    pub last_used_at: Option<NaiveDateTime>,
    pub updated_at: Option<NaiveDateTime>,
}

/// Every template that is not deleted, by name and locale.
pub async fn list_templates(pool: &PgPool) -> Result<Vec<TemplateSummary>, sqlx::Error> {
    sqlx::query_as(
        "SELECT template_id, name, description, type::text AS template_type,
                category::text AS category, status::text AS status, locale, current_version,
                is_default, usage_count, test_emails_sent, last_used_at, updated_at
         FROM email_templates WHERE deleted_at IS NULL ORDER BY name, locale",
    )
    .fetch_all(pool)
    .await
}

/// A template's email type (`administrative` sends as `system`) and the example data its
/// declared variables carry (`{name: example}` for each variable with one): the current
/// version's, or with `version` that version's own (from `versions`).
pub async fn type_and_examples(
    pool: &PgPool,
    template_id: Uuid,
    version: Option<i32>,
) -> Result<Option<(EmailType, Value)>, sqlx::Error> {
    let row: Option<(String, Option<Value>)> = sqlx::query_as(
        "SELECT type::text,
                CASE WHEN $2::int IS NULL OR $2 = COALESCE(current_version, 1)
                          OR jsonb_typeof(versions) IS DISTINCT FROM 'array' THEN variables
                     ELSE COALESCE((SELECT v->'variables' FROM jsonb_array_elements(versions) AS v
                                    WHERE v->'version' = to_jsonb($2::int) LIMIT 1), variables)
                END
         FROM email_templates WHERE template_id = $1",
    )
    .bind(template_id)
    .bind(version)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(kind, vars)| {
        let email_type = match kind.as_str() {
            "transactional" => EmailType::Transactional,
            "notification" => EmailType::Notification,
            "marketing" => EmailType::Marketing,
            _ => EmailType::System,
        };
        let examples: Map<String, Value> = vars
            .as_ref()
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|v| {
                Some((
                    v.get("name")?.as_str()?.to_string(),
                    v.get("example")?.clone(),
                ))
            })
            .collect();
        (email_type, Value::Object(examples))
    }))
}

/// One more test email of the template named `name` was delivered.
pub async fn count_test_send<'e>(exec: impl PgExecutor<'e>, name: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE email_templates SET test_emails_sent = COALESCE(test_emails_sent, 0) + 1
         WHERE lower(name) = lower($1) AND deleted_at IS NULL",
    )
    .bind(name)
    .execute(exec)
    .await?;
    Ok(())
}

/// What a service needs to fill a template in: the row chosen for a name and locale, with
/// its declared variables.
#[derive(Debug, sqlx::FromRow)]
pub struct TemplateContract {
    pub template_id: Uuid,
    pub name: String,
    pub description: Option<String>,
    pub template_type: String,
    pub category: String,
    pub locale: Option<String>,
    pub current_version: Option<i32>,
    pub variables: Option<Value>,
}

pub async fn template_contract(
    pool: &PgPool,
    template_id: Uuid,
) -> Result<Option<TemplateContract>, sqlx::Error> {
    sqlx::query_as(
        "SELECT template_id, name, description, type::text AS template_type,
                category::text AS category, locale, current_version, variables
         FROM email_templates WHERE template_id = $1",
    )
    .bind(template_id)
    .fetch_optional(pool)
    .await
}
