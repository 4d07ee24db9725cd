//! Small pieces the jobs share: template ids, audit rows, user time zones and the wording
//! of dates and statuses in emails.

use std::collections::HashMap;

use chrono::{NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde_json::Value;
use sqlx::PgExecutor;
use uuid::Uuid;

/// Template ids by name, looked up once per run.
#[derive(Debug, Default)]
pub(super) struct TemplateIds {
    cache: HashMap<&'static str, Option<Uuid>>,
}

impl TemplateIds {
    /// The active template called `name`, or `None` when there is none (the caller skips
    /// that email and says so in the run's detail).
    pub(super) async fn get<'e>(
        &mut self,
        exec: impl PgExecutor<'e>,
        name: &'static str,
    ) -> Result<Option<Uuid>, sqlx::Error> {
        if let Some(id) = self.cache.get(name) {
            return Ok(*id);
        }
        // Only the base template is needed here, inside the job's transaction: the worker
        // resolves the recipient's locale (`metadata.locale`) from it at render time.
        let id: Option<Uuid> = sqlx::query_scalar(
            "SELECT template_id FROM email_templates
             WHERE name = $1 AND status = 'active' AND deleted_at IS NULL
             ORDER BY is_default DESC, priority DESC LIMIT 1",
        )
        .bind(name)
        .fetch_optional(exec)
        .await?;
        self.cache.insert(name, id);
        Ok(id)
    }
}

/// One `audit_logs` row written by a job (`service = 'adopt-worker'`, level INFO).
pub(super) struct AuditEntry<'a> {
    pub user_id: Option<Uuid>,
    pub action: &'a str,
    pub category: &'a str,
    pub at: NaiveDateTime,
    pub metadata: Value,
}

pub(super) async fn insert_audit<'e>(
    exec: impl PgExecutor<'e>,
    entry: &AuditEntry<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO audit_logs (service, user_id, action, level, \"timestamp\", metadata, category, success)
         VALUES ('adopt-worker', $1, $2, 'INFO', $3, $4, $5, true)",
    )
    .bind(entry.user_id)
    .bind(entry.action)
    .bind(entry.at)
    .bind(&entry.metadata)
    .bind(entry.category)
    .execute(exec)
    .await?;
    Ok(())
}

/// A user's time zone. `None` (no preference) is UTC; an unknown name is an error the
/// caller logs and counts, and then also uses UTC.
pub(super) fn user_zone(name: Option<&str>) -> Result<Tz, String> {
    match name.map(str::trim).filter(|n| !n.is_empty()) {
        None => Ok(Tz::UTC),
        Some(n) => n.parse::<Tz>().map_err(|_| n.to_string()),
    }
}

/// "Friday 13 March 2026 at 09:12" in the user's zone (`at` is UTC, as stored).
pub(super) fn format_datetime(at: NaiveDateTime, zone: Tz) -> String {
    zone.from_utc_datetime(&at)
        .format("%A %-d %B %Y at %H:%M")
        .to_string()
}

/// "Wednesday 1 April 2026" in the user's zone.
pub(super) fn format_date(at: NaiveDateTime, zone: Tz) -> String {
    zone.from_utc_datetime(&at)
        .format("%A %-d %B %Y")
        .to_string()
}

/// `at` as an RFC 3339 UTC string, for metadata.
pub(super) fn rfc3339(at: NaiveDateTime) -> String {
    Utc.from_utc_datetime(&at)
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// `{base_url}/{path}`.
pub(super) fn link(base_url: &str, path: &str) -> String {
    format!("{}/{path}", base_url.trim_end_matches('/'))
}

/// Human wording of `application_status_enum`.
pub(super) fn application_status_label(status: &str) -> String {
    match status {
        "draft" => "Draft",
        "submitted" => "Received",
        "under_review" => "Under review",
        "pending_references" => "Waiting for references",
        "reference_check" => "Checking references",
        "interview_scheduled" => "Interview booked",
        "interview_completed" => "Interview done",
        "home_visit_scheduled" => "Home visit booked",
        "home_visit_completed" => "Home visit done",
        "approved" => "Approved",
        "conditionally_approved" => "Approved with conditions",
        "rejected" => "Not successful",
        "withdrawn" => "Withdrawn",
        "expired" => "Expired",
        other => return other.replace('_', " "),
    }
    .to_string()
}

/// Human wording of `pet_status_enum`.
pub(super) fn pet_status_label(status: &str) -> String {
    match status {
        "AVAILABLE" => "Available",
        "PENDING" => "Adoption pending",
        "ADOPTED" => "Adopted",
        "FOSTER" => "In foster care",
        "MEDICAL_HOLD" => "On medical hold",
        "BEHAVIORAL_HOLD" => "On behavioural hold",
        // Said gently: the digest is not the place to learn a favourite has died.
        "NOT_AVAILABLE" | "DECEASED" => "No longer available",
        other => return other.to_lowercase().replace('_', " "),
    }
    .to_string()
}

/// A short `key=value` list for a run's detail, skipping zero counts.
pub(super) fn counts(pairs: &[(&str, u64)]) -> String {
    pairs
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| format!("{k}={n}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Joins the non-empty parts of a run's detail with "; ".
pub(super) fn detail(parts: impl IntoIterator<Item = String>) -> String {
    parts
        .into_iter()
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zones_dates_and_labels() {
        assert_eq!(user_zone(None).unwrap(), Tz::UTC);
        assert_eq!(user_zone(Some("Asia/Kolkata")).unwrap(), Tz::Asia__Kolkata);
        assert_eq!(user_zone(Some("Mars/Olympus")).unwrap_err(), "Mars/Olympus");
        let at = chrono::NaiveDate::from_ymd_opt(2026, 3, 13)
            .unwrap()
            .and_hms_opt(14, 12, 0)
            .unwrap();
        assert_eq!(
            format_datetime(at, Tz::America__New_York),
            "Friday 13 March 2026 at 10:12"
        );
        assert_eq!(format_date(at, Tz::UTC), "Friday 13 March 2026");
        assert_eq!(rfc3339(at), "2026-03-13T14:12:00Z");
        assert_eq!(
            application_status_label("interview_scheduled"),
            "Interview booked"
        );
        assert_eq!(pet_status_label("ADOPTED"), "Adopted");
        assert_eq!(counts(&[("a", 1), ("b", 0), ("c", 2)]), "a=1 c=2");
        assert_eq!(link("https://x.org/", "pets/1"), "https://x.org/pets/1");
    }
}
