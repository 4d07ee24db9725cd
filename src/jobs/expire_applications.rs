//! `expire-applications`: non-final applications past `expires_at` become `expired`, the
//! applicant gets an `application_update` email (the `expired` variant) and an audit_logs
//! row records each one. Batches of `jobs.batch_size`, one transaction per batch, rows
//! taken with `FOR UPDATE SKIP LOCKED` and re-checked by the UPDATE, so concurrent runs
//! split the work and a second run finds nothing. `decision_at` and `actioned_*` are left
//! alone (they record decisions by people).

use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::{Map, Value, json};
use sqlx::PgConnection;
use tracing::info;
use uuid::Uuid;

use super::support::{self, AuditEntry, TemplateIds, format_date, insert_audit, user_zone};
use super::{Done, JobError, Jobs};
use crate::queue::{self, EmailType, NewEmail};

const TEMPLATE: &str = "application_update";

#[derive(Debug, sqlx::FromRow)]
struct Expired {
    application_id: Uuid,
    user_id: Uuid,
    pet_id: Uuid,
    rescue_id: Uuid,
    previous_status: String,
    expires_at: Option<NaiveDateTime>,
    submitted_at: Option<NaiveDateTime>,
    email: String,
    first_name: String,
    last_name: String,
    user_deleted: bool,
    pet_name: String,
    pet_type: String,
    breed: Option<String>,
    age_years: Option<i32>,
    age_months: Option<i32>,
    image_url: Option<String>,
    pet_deleted: bool,
    rescue_name: String,
    rescue_email: Option<String>,
    rescue_phone: Option<String>,
    language: Option<String>,
    timezone: Option<String>,
}

#[derive(Debug, Default)]
struct Tally {
    expired: u64,
    emails: u64,
    user_deleted: u64,
    pet_deleted: u64,
    no_template: u64,
}

pub(super) async fn run(jobs: &Jobs, now: DateTime<Utc>) -> Result<Done, JobError> {
    let mut t = Tally::default();
    let mut templates = TemplateIds::default();
    let batch = i64::from(jobs.settings().batch_size);
    loop {
        let mut tx = jobs.pool().begin().await?;
        let rows = expire_batch(&mut tx, now.naive_utc(), batch).await?;
        let template = templates.get(&mut *tx, TEMPLATE).await?;
        for row in &rows {
            record(&mut tx, jobs, row, template, now, &mut t).await?;
        }
        tx.commit().await?;
        t.expired += rows.len() as u64;
        if (rows.len() as i64) < batch {
            break;
        }
    }
    let notes = [
        support::counts(&[
            ("expired", t.expired),
            ("emails", t.emails),
            ("no_email_user_deleted", t.user_deleted),
            ("no_email_pet_deleted", t.pet_deleted),
        ]),
        if t.no_template > 0 {
            format!(
                "template {TEMPLATE} not found: {} email(s) skipped",
                t.no_template
            )
        } else {
            String::new()
        },
    ];
    Ok(Done {
        rows_affected: t.expired,
        detail: support::detail(notes),
        failed: false,
    })
}

/// Expires one batch and returns each application with what its email needs.
async fn expire_batch(
    conn: &mut PgConnection,
    now: NaiveDateTime,
    limit: i64,
) -> Result<Vec<Expired>, sqlx::Error> {
    sqlx::query_as(
        "WITH batch AS (
             SELECT application_id, status AS previous_status FROM applications
             WHERE deleted_at IS NULL AND expires_at IS NOT NULL AND expires_at <= $1
               AND status NOT IN ('approved', 'rejected', 'withdrawn', 'expired')
             ORDER BY expires_at, application_id
             LIMIT $2
             FOR UPDATE SKIP LOCKED
         ),
         expired AS (
             UPDATE applications a SET status = 'expired', updated_at = $1
             FROM batch
             WHERE a.application_id = batch.application_id
               AND a.deleted_at IS NULL AND a.expires_at <= $1
               AND a.status NOT IN ('approved', 'rejected', 'withdrawn', 'expired')
             RETURNING a.application_id, a.user_id, a.pet_id, a.rescue_id, a.expires_at,
                       a.submitted_at, batch.previous_status
         )
         SELECT e.application_id, e.user_id, e.pet_id, e.rescue_id,
                e.previous_status::text AS previous_status, e.expires_at, e.submitted_at,
                u.email, u.first_name, u.last_name, (u.deleted_at IS NOT NULL) AS user_deleted,
                p.name AS pet_name, p.type::text AS pet_type, p.breed, p.age_years, p.age_months,
                CASE jsonb_typeof(p.images -> 0) WHEN 'string' THEN p.images ->> 0
                     ELSE p.images -> 0 ->> 'url' END AS image_url,
                (p.deleted_at IS NOT NULL) AS pet_deleted,
                r.name AS rescue_name, COALESCE(r.contact_email, r.email) AS rescue_email,
                COALESCE(r.contact_phone, r.phone) AS rescue_phone,
                ep.language, ep.timezone
         FROM expired e
         JOIN users u ON u.user_id = e.user_id
         JOIN pets p ON p.pet_id = e.pet_id
         JOIN rescues r ON r.rescue_id = e.rescue_id
         LEFT JOIN email_preferences ep ON ep.user_id = e.user_id
         ORDER BY e.expires_at, e.application_id",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// The audit row, and the applicant's email unless there is no one (or nothing) to tell.
async fn record(
    conn: &mut PgConnection,
    jobs: &Jobs,
    row: &Expired,
    template: Option<Uuid>,
    now: DateTime<Utc>,
    t: &mut Tally,
) -> Result<(), sqlx::Error> {
    insert_audit(
        &mut *conn,
        &AuditEntry {
            user_id: Some(row.user_id),
            action: "APPLICATION_EXPIRED",
            category: "application",
            at: now.naive_utc(),
            metadata: json!({
                "applicationId": row.application_id,
                "petId": row.pet_id,
                "rescueId": row.rescue_id,
                "previousStatus": row.previous_status,
                "expiresAt": row.expires_at.map(support::rfc3339),
            }),
        },
    )
    .await?;
    let skip = if row.user_deleted {
        t.user_deleted += 1;
        Some("the applicant's account was deleted")
    } else if row.pet_deleted {
        t.pet_deleted += 1;
        Some("the pet was deleted")
    } else if template.is_none() {
        t.no_template += 1;
        Some("template application_update not found")
    } else {
        None
    };
    if let Some(why) = skip {
        info!(application_id = %row.application_id, "application expired; no email: {why}");
        return Ok(());
    }
    let Some(template_id) = template else {
        return Ok(());
    };
    let app = jobs.app();
    let mut email = NewEmail::from_template(
        &app.from_email,
        Some(&app.from_name),
        &row.email,
        template_id,
        template_data(row),
        EmailType::Transactional,
    );
    email.to_name = Some(
        format!("{} {}", row.first_name, row.last_name)
            .trim()
            .to_string(),
    );
    email.user_id = Some(row.user_id);
    email.tags = vec!["application_expired".to_string()];
    email.metadata = json!({
        "locale": row.language.as_deref().unwrap_or("en-US"),
        "applicationId": row.application_id,
    });
    queue::enqueue(&mut *conn, &email).await?;
    t.emails += 1;
    Ok(())
}

/// The `application_update` variables for the `expired` status; optional values are left
/// out when unknown, as the template's examples do.
fn template_data(row: &Expired) -> Value {
    let zone = user_zone(row.timezone.as_deref()).unwrap_or(chrono_tz::Tz::UTC);
    let mut pet = Map::new();
    pet.insert("name".into(), json!(row.pet_name));
    pet.insert("type".into(), json!(row.pet_type));
    if let Some(b) = row.breed.as_deref().filter(|b| !b.is_empty()) {
        pet.insert("breed".into(), json!(b));
    }
    if let Some(age) = pet_age(row.age_years, row.age_months) {
        pet.insert("age".into(), json!(age));
    }
    if let Some(url) = row.image_url.as_deref().filter(|u| u.starts_with("http")) {
        pet.insert("image_url".into(), json!(url));
    }
    let mut rescue = Map::new();
    rescue.insert("name".into(), json!(row.rescue_name));
    if let Some(e) = row.rescue_email.as_deref().filter(|e| !e.is_empty()) {
        rescue.insert("email".into(), json!(e));
    }
    if let Some(p) = row.rescue_phone.as_deref().filter(|p| !p.is_empty()) {
        rescue.insert("phone".into(), json!(p));
    }
    let mut application = Map::new();
    application.insert("id".into(), json!(row.application_id.to_string()));
    application.insert("status".into(), json!("expired"));
    if let Some(at) = row.submitted_at {
        application.insert("submitted_at".into(), json!(format_date(at, zone)));
    }
    if let Some(at) = row.expires_at {
        application.insert("expires_at".into(), json!(format_date(at, zone)));
    }
    let mut applicant = Map::new();
    applicant.insert("first_name".into(), json!(row.first_name));
    if !row.last_name.is_empty() {
        applicant.insert("last_name".into(), json!(row.last_name));
    }
    json!({
        "applicant": applicant,
        "pet": pet,
        "rescue": rescue,
        "application": application,
    })
}

fn pet_age(years: Option<i32>, months: Option<i32>) -> Option<String> {
    let plural = |n: i32, one: &str| {
        if n == 1 {
            format!("1 {one}")
        } else {
            format!("{n} {one}s")
        }
    };
    match (years, months) {
        (Some(y), _) if y > 0 => Some(plural(y, "year")),
        (_, Some(m)) if m > 0 => Some(plural(m, "month")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::pet_age;

    #[test]
    fn ages_read_naturally() {
        assert_eq!(pet_age(Some(3), Some(2)).as_deref(), Some("3 years"));
        assert_eq!(pet_age(Some(1), None).as_deref(), Some("1 year"));
        assert_eq!(pet_age(Some(0), Some(5)).as_deref(), Some("5 months"));
        assert_eq!(pet_age(None, None), None);
    }
}
