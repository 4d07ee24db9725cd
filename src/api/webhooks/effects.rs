//! What one event does to its row and its recipient, whoever reported it: our relay's events
//! (`/v1/webhooks/events`) and the providers' webhooks (SES, SendGrid, Postmark, Mailgun)
//! share these effects, so a bounce ends the row and counts against the recipient the same
//! way from every source. Every effect is guarded by the row's state: the same report twice
//! changes nothing the second time (opens and clicks aside, which count).

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use super::EventOutcome;
use crate::delivery::message::ascii_domain;
use crate::metrics::{self, UnsubscribeVia};
use crate::preferences::{self, BounceKind};
use crate::queue::{EmailType, tracking};

/// What happened to an email, in our words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// The receiving server took it: sent → delivered.
    Delivered,
    /// Not delivered yet; the provider keeps trying. Noted in `tracking`, the status stays.
    Deferred {
        reason: String,
    },
    /// The recipient's server refused it: the row ends `bounced`, the recipient is counted
    /// (hard: blacklisted at once; soft: toward `bounce.soft_bounce_threshold`).
    Bounced {
        kind: BounceKind,
        reason: String,
        code: Option<String>,
    },
    /// Not delivered for a reason that is not the recipient's (policy, content, the
    /// provider's own suppression list): the row ends `failed`, the recipient is not counted.
    Failed {
        reason: String,
        code: Option<String>,
    },
    /// A spam complaint: `complainedAt`, the recipient blacklisted.
    Complained,
    Opened,
    Clicked,
    /// The recipient unsubscribed through the provider: what our one-click link does.
    Unsubscribed(Scope),
}

/// What an unsubscribe is from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// All optional email (`global_unsubscribe`).
    All,
    /// The preference category of the email it came from (a provider's group or stream
    /// unsubscribe), or all optional email when the email has none.
    EmailCategory,
}

/// One event about one email.
#[derive(Debug, Clone)]
pub struct Report<'a> {
    pub effect: Effect,
    pub at: DateTime<Utc>,
    /// The address the event is about, when the reporter names one: a Cc or Bcc is counted
    /// against that address and the row keeps its status.
    pub recipient: Option<&'a str>,
    /// Who reported it, for `failure_reason` ("hard bounce reported by SendGrid: ...").
    pub reported_by: &'a str,
    /// `via` of a Cc/Bcc refusal in `tracking.refusedRecipients`.
    pub via: &'a str,
}

/// The row an event applies to, locked for the transaction.
#[derive(Debug, sqlx::FromRow)]
struct Row {
    user_id: Option<Uuid>,
    to_email: String,
    cc_emails: Option<Vec<String>>,
    bcc_emails: Option<Vec<String>>,
    email_type: EmailType,
    metadata: Option<serde_json::Value>,
    refused: Option<serde_json::Value>,
}

/// Whom of the email's recipients an event is about.
enum Whom {
    To,
    Copy(String),
    Stranger,
}

impl Row {
    fn copies(&self) -> impl Iterator<Item = &String> {
        self.cc_emails
            .iter()
            .flatten()
            .chain(self.bcc_emails.iter().flatten())
    }

    fn whom(&self, recipient: Option<&str>) -> Whom {
        let Some(named) = recipient.filter(|r| !r.trim().is_empty()) else {
            return Whom::To;
        };
        if same_address(named, &self.to_email) {
            return Whom::To;
        }
        if let Some(copy) = self.copies().find(|c| same_address(named, c)) {
            return Whom::Copy(copy.clone());
        }
        // An address we never sent to: a forwarding or an alias of the To when there is no
        // one else; otherwise we cannot tell whose it is.
        if self.copies().next().is_none() {
            Whom::To
        } else {
            Whom::Stranger
        }
    }

    fn refused_already(&self, address: &str) -> bool {
        self.refused
            .as_ref()
            .and_then(|v| v.as_array())
            .into_iter()
            .flatten()
            .filter_map(|r| r.get("address").and_then(|a| a.as_str()))
            .any(|a| same_address(a, address))
    }
}

/// Addresses compare case-insensitively, an internationalised domain in either form.
pub fn same_address(a: &str, b: &str) -> bool {
    ascii_domain(a.trim()).eq_ignore_ascii_case(&ascii_domain(b.trim()))
}

async fn lock(conn: &mut PgConnection, email_id: Uuid) -> Result<Option<Row>, sqlx::Error> {
    sqlx::query_as(
        "SELECT user_id, to_email, cc_emails, bcc_emails, type AS email_type,
                CASE WHEN jsonb_typeof(metadata) = 'object' THEN metadata END AS metadata,
                CASE WHEN jsonb_typeof(tracking->'refusedRecipients') = 'array'
                     THEN tracking->'refusedRecipients' END AS refused
         FROM email_queue WHERE email_id = $1 FOR UPDATE",
    )
    .bind(email_id)
    .fetch_optional(&mut *conn)
    .await
}

/// Applies `report` to the email `email_id` inside the caller's transaction.
pub async fn apply(
    conn: &mut PgConnection,
    email_id: Uuid,
    report: &Report<'_>,
    soft_threshold: i32,
) -> Result<EventOutcome, sqlx::Error> {
    let Some(row) = lock(conn, email_id).await? else {
        return Ok(EventOutcome::NotFound);
    };
    let applied = match row.whom(report.recipient) {
        Whom::To => apply_to_row(conn, email_id, &row, report, soft_threshold).await?,
        Whom::Copy(address) => {
            apply_to_copy(conn, email_id, &row, &address, report, soft_threshold).await?
        }
        Whom::Stranger => false,
    };
    Ok(if applied {
        EventOutcome::Applied
    } else {
        EventOutcome::Ignored
    })
}

async fn apply_to_row(
    conn: &mut PgConnection,
    id: Uuid,
    row: &Row,
    report: &Report<'_>,
    soft_threshold: i32,
) -> Result<bool, sqlx::Error> {
    let at = report.at.to_rfc3339_opts(SecondsFormat::Millis, true);
    let when = report.at.naive_utc();
    Ok(match &report.effect {
        Effect::Delivered => tracking::mark_delivered(&mut *conn, id, &at).await?,
        Effect::Deferred { reason } => {
            tracking::record_deferral(&mut *conn, id, reason, &at).await?
        }
        Effect::Opened => tracking::record_open(&mut *conn, id, &at).await?,
        Effect::Clicked => tracking::record_click(&mut *conn, id, &at).await?,
        Effect::Bounced { kind, reason, code } => {
            let bounced = tracking::mark_bounced_async(
                &mut *conn,
                id,
                kind.as_str(),
                reason,
                code.as_deref(),
                &at,
                report.reported_by,
            )
            .await?;
            match bounced {
                Some(row) => {
                    let user =
                        preferences::recipient_user(conn, row.user_id, &row.to_email).await?;
                    preferences::record_bounce(
                        &mut *conn,
                        user,
                        &row.to_email,
                        *kind,
                        reason,
                        soft_threshold,
                        when,
                    )
                    .await?;
                    metrics::bounce(metric_kind(*kind));
                    true
                }
                None => false,
            }
        }
        Effect::Failed { reason, code } => {
            tracking::mark_failed_async(
                &mut *conn,
                id,
                reason,
                code.as_deref(),
                &at,
                report.reported_by,
            )
            .await?
        }
        Effect::Complained => match tracking::mark_complained(&mut *conn, id, &at).await? {
            Some(row) => {
                let user = preferences::recipient_user(conn, row.user_id, &row.to_email).await?;
                preferences::record_complaint(&mut *conn, user, &row.to_email, when).await?;
                true
            }
            None => false,
        },
        Effect::Unsubscribed(scope) => {
            let user = preferences::gating_user(&mut *conn, row.user_id, &row.to_email).await?;
            unsubscribe(conn, user, row, scope).await?
        }
    })
}

/// A Cc or Bcc: bounces, complaints and unsubscribes count against that address; the row
/// keeps its status. Opens and clicks are the email's, whoever made them.
async fn apply_to_copy(
    conn: &mut PgConnection,
    id: Uuid,
    row: &Row,
    address: &str,
    report: &Report<'_>,
    soft_threshold: i32,
) -> Result<bool, sqlx::Error> {
    let at = report.at.to_rfc3339_opts(SecondsFormat::Millis, true);
    let when = report.at.naive_utc();
    Ok(match &report.effect {
        Effect::Opened | Effect::Clicked => {
            apply_to_row(conn, id, row, report, soft_threshold).await?
        }
        Effect::Delivered | Effect::Deferred { .. } | Effect::Failed { .. } => false,
        Effect::Bounced { kind, reason, code } => {
            if row.refused_already(address) {
                return Ok(false);
            }
            let refused = json!([{
                "address": address, "code": code, "reason": reason, "at": at, "via": report.via,
            }]);
            tracking::record_refused_recipients(&mut *conn, id, refused).await?;
            let user = preferences::user_for_address(&mut *conn, address).await?;
            preferences::record_bounce(
                &mut *conn,
                user,
                address,
                *kind,
                reason,
                soft_threshold,
                when,
            )
            .await?;
            metrics::bounce(metric_kind(*kind));
            true
        }
        Effect::Complained => {
            let user = preferences::user_for_address(&mut *conn, address).await?;
            preferences::record_complaint(&mut *conn, user, address, when).await?;
            true
        }
        Effect::Unsubscribed(scope) => {
            let user = preferences::user_for_address(&mut *conn, address).await?;
            unsubscribe(conn, user, row, scope).await?
        }
    })
}

/// An address that is no user's has no preferences to change: nothing is done.
async fn unsubscribe(
    conn: &mut PgConnection,
    user: Option<Uuid>,
    row: &Row,
    scope: &Scope,
) -> Result<bool, sqlx::Error> {
    let Some(user) = user else {
        return Ok(false);
    };
    let category = match scope {
        Scope::All => None,
        Scope::EmailCategory => preferences::category_of(row.metadata.as_ref(), row.email_type),
    };
    preferences::unsubscribe_user(conn, user, category.as_deref()).await?;
    metrics::unsubscribed(UnsubscribeVia::Provider);
    Ok(true)
}

fn metric_kind(kind: BounceKind) -> metrics::BounceKind {
    match kind {
        BounceKind::Hard => metrics::BounceKind::Hard,
        BounceKind::Soft => metrics::BounceKind::Soft,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(to: &str, cc: &[&str]) -> Row {
        Row {
            user_id: None,
            to_email: to.into(),
            cc_emails: Some(cc.iter().map(|c| c.to_string()).collect()),
            bcc_emails: None,
            email_type: EmailType::Marketing,
            metadata: None,
            refused: None,
        }
    }

    #[test]
    fn the_named_recipient_decides_whose_event_it_is() {
        let alone = row("maya@example.com", &[]);
        assert!(matches!(alone.whom(None), Whom::To));
        assert!(matches!(alone.whom(Some("MAYA@example.com")), Whom::To));
        // A forwarding target of the only recipient is still the To.
        assert!(matches!(alone.whom(Some("maya@forward.example")), Whom::To));
        let shared = row("maya@example.com", &["lena@example.org"]);
        assert!(
            matches!(shared.whom(Some("Lena@Example.org")), Whom::Copy(a) if a == "lena@example.org")
        );
        assert!(matches!(
            shared.whom(Some("who@else.example")),
            Whom::Stranger
        ));
    }
}
