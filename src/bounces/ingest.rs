//! Applying one message sent to the bounce address (docs/bounces.md "Bounces and complaints"): find
//! the email it is about, then do what the relay webhook does for the same event, in one
//! transaction. Every effect is guarded by the row's state, so the same report ingested
//! twice changes nothing the second time (`duplicate`).

use std::fmt;

use chrono::{SecondsFormat, Utc};
use serde_json::json;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::ReturnPath;
use super::dsn::{self, RecipientStatus, Report, ReportKind, Verdict};
use crate::delivery::message::ascii_domain;
use crate::metrics::DsnResult;
use crate::preferences::{self, BounceKind};
use crate::queue::tracking;

/// Who reported it, in `failure_reason`.
const REPORTED_BY: &str = "a delivery status notification";

/// What the ingest needs from the settings.
#[derive(Debug, Clone)]
pub struct IngestSettings {
    /// `bounce.return_path`: VERP addresses are recognised only when it is set.
    pub return_path: Option<ReturnPath>,
    /// `bounce.soft_bounce_threshold`.
    pub soft_bounce_threshold: i32,
}

impl IngestSettings {
    pub fn from_settings(settings: &crate::config::Settings) -> IngestSettings {
        IngestSettings {
            return_path: settings.bounce.return_path(),
            soft_bounce_threshold: settings.bounce.soft_bounce_threshold,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The database could not be reached or refused a statement: nothing was applied, and
    /// the MTA should try again later (EX_TEMPFAIL).
    #[error("database error, nothing applied: {0}")]
    Database(#[from] sqlx::Error),
}

/// How the email was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchedBy {
    /// The VERP address the report was sent to (or that it quotes as the original sender).
    ReturnPath,
    /// The original's Message-ID (`<email_id@domain>`).
    MessageId,
    /// The relay's queue id (`X-Postfix-Queue-ID` = `provider_message_id`).
    QueueId,
}

impl MatchedBy {
    /// For people: "its VERP address".
    pub fn describe(self) -> &'static str {
        match self {
            MatchedBy::ReturnPath => "its VERP address",
            MatchedBy::MessageId => "the original's Message-ID",
            MatchedBy::QueueId => "the relay's queue id",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MatchedBy::ReturnPath => "return_path",
            MatchedBy::MessageId => "message_id",
            MatchedBy::QueueId => "queue_id",
        }
    }
}

/// What one message came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ingested {
    pub result: DsnResult,
    pub email_id: Option<Uuid>,
    pub matched_by: Option<MatchedBy>,
    /// One line for people: what was found and done.
    pub detail: String,
}

impl fmt::Display for Ingested {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.result.as_str())?;
        if let Some(id) = self.email_id {
            write!(f, "email {id}")?;
            if let Some(by) = self.matched_by {
                write!(f, " (found by {})", by.describe())?;
            }
            write!(f, ": ")?;
        }
        f.write_str(&self.detail)
    }
}

/// Parses `raw` and applies it in one transaction of its own.
pub async fn ingest(
    pool: &PgPool,
    settings: &IngestSettings,
    raw: &[u8],
    recipient: Option<&str>,
) -> Result<Ingested, IngestError> {
    let report = dsn::parse(raw);
    let mut tx = pool.begin().await?;
    let ingested = apply(&mut tx, settings, &report, recipient).await?;
    tx.commit().await?;
    Ok(ingested)
}

/// Applies a parsed report inside the caller's transaction (the HTTP route adds its replay
/// protection to the same one) and counts its result in `worker_dsn_ingest_counts`.
pub async fn apply(
    conn: &mut PgConnection,
    settings: &IngestSettings,
    report: &Report,
    recipient: Option<&str>,
) -> Result<Ingested, IngestError> {
    let ingested = decide_and_apply(conn, settings, report, recipient).await?;
    sqlx::query(
        "INSERT INTO worker_dsn_ingest_counts AS c (result, total, last_at) VALUES ($1, 1, now())
         ON CONFLICT (result) DO UPDATE SET total = c.total + 1, last_at = now()",
    )
    .bind(ingested.result.as_str())
    .execute(&mut *conn)
    .await?;
    Ok(ingested)
}

/// The row a report is about, locked for the transaction.
#[derive(Debug, sqlx::FromRow)]
struct Target {
    email_id: Uuid,
    status: String,
    to_email: String,
    cc_emails: Option<Vec<String>>,
    bcc_emails: Option<Vec<String>>,
    delivered: bool,
    complained: bool,
    refused: Option<serde_json::Value>,
}

impl Target {
    fn sent_like(&self) -> bool {
        matches!(
            self.status.as_str(),
            "sent" | "delivered" | "opened" | "clicked"
        )
    }

    fn copies(&self) -> impl Iterator<Item = &String> {
        self.cc_emails
            .iter()
            .flatten()
            .chain(self.bcc_emails.iter().flatten())
    }

    /// A Cc/Bcc refusal already recorded for `address`.
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

fn same_address(a: &str, b: &str) -> bool {
    ascii_domain(a.trim()).eq_ignore_ascii_case(&ascii_domain(b.trim()))
}

async fn lock(conn: &mut PgConnection, email_id: Uuid) -> Result<Option<Target>, sqlx::Error> {
    sqlx::query_as(
        "SELECT email_id, status::text AS status, to_email, cc_emails, bcc_emails,
                COALESCE(jsonb_typeof(tracking) = 'object' AND tracking ? 'deliveredAt', false) AS delivered,
                COALESCE(jsonb_typeof(tracking) = 'object' AND tracking ? 'complainedAt', false) AS complained,
                CASE WHEN jsonb_typeof(tracking->'refusedRecipients') = 'array'
                     THEN tracking->'refusedRecipients' END AS refused
         FROM email_queue WHERE email_id = $1 FOR UPDATE",
    )
    .bind(email_id)
    .fetch_optional(&mut *conn)
    .await
}

/// Our Message-IDs are `<email_id@domain>`.
pub fn email_id_of_message_id(message_id: &str) -> Option<Uuid> {
    let (local, _) = message_id.split_once('@')?;
    let local = local.trim().trim_start_matches('<');
    (local.len() == 36)
        .then(|| Uuid::parse_str(local).ok())
        .flatten()
}

/// The email the report is about: by VERP address (the recipient the MTA gave, the headers
/// it was delivered to, the original's envelope sender), else by the original's Message-ID,
/// else by the relay's queue id. The first that names an existing row wins.
async fn find(
    conn: &mut PgConnection,
    settings: &IngestSettings,
    report: &Report,
    recipient: Option<&str>,
) -> Result<Option<(Target, MatchedBy)>, sqlx::Error> {
    let mut candidates: Vec<(Uuid, MatchedBy)> = Vec::new();
    if let Some(rp) = &settings.return_path {
        let addresses = recipient
            .into_iter()
            .chain(report.addressed_to.iter().map(String::as_str))
            .chain(report.original_senders.iter().map(String::as_str));
        for address in addresses {
            if let Some(id) = rp.email_id_of(address) {
                candidates.push((id, MatchedBy::ReturnPath));
            }
        }
    }
    if let Some(id) = report
        .original_message_id
        .as_deref()
        .and_then(email_id_of_message_id)
    {
        candidates.push((id, MatchedBy::MessageId));
    }
    let mut tried = Vec::new();
    for (id, by) in candidates {
        if tried.contains(&id) {
            continue;
        }
        tried.push(id);
        if let Some(target) = lock(conn, id).await? {
            return Ok(Some((target, by)));
        }
    }
    if let Some(queue_id) = &report.queue_id
        && let Some(id) = tracking::find_by_provider_message_id(&mut *conn, queue_id).await?
        && let Some(target) = lock(conn, id).await?
    {
        return Ok(Some((target, MatchedBy::QueueId)));
    }
    Ok(None)
}

/// A short description of the report, for the unmatched and ignored lines.
fn describe(report: &Report) -> String {
    match &report.kind {
        ReportKind::Delivery { recipients, .. } => {
            let parts: Vec<String> = recipients
                .iter()
                .map(|r| {
                    format!(
                        "{} for {} ({})",
                        r.action.as_str(),
                        r.recipient().unwrap_or("an unnamed recipient"),
                        r.reply()
                    )
                })
                .collect();
            format!("a delivery report: {}", parts.join("; "))
        }
        ReportKind::Complaint { feedback_type, .. } => {
            format!("an abuse report ({feedback_type})")
        }
        ReportKind::NotAReport(why) => why.clone(),
    }
}

async fn decide_and_apply(
    conn: &mut PgConnection,
    settings: &IngestSettings,
    report: &Report,
    recipient: Option<&str>,
) -> Result<Ingested, IngestError> {
    if let ReportKind::NotAReport(why) = &report.kind {
        return Ok(Ingested {
            result: DsnResult::Ignored,
            email_id: None,
            matched_by: None,
            detail: format!("not a bounce or complaint: {why}"),
        });
    }
    let Some((target, by)) = find(conn, settings, report, recipient).await? else {
        return Ok(Ingested {
            result: DsnResult::Unmatched,
            email_id: None,
            matched_by: None,
            detail: format!(
                "{} names no email of ours (no known VERP address, Message-ID or queue id)",
                describe(report)
            ),
        });
    };
    let (result, detail) = match &report.kind {
        ReportKind::Delivery { recipients, .. } => {
            let mut outcome: Option<(DsnResult, String)> = None;
            for status in recipients {
                let (result, detail) = apply_status(conn, settings, &target, status).await?;
                // The strongest effect of the message is its result.
                if outcome
                    .as_ref()
                    .is_none_or(|(r, _)| rank(result) < rank(*r))
                {
                    outcome = Some((result, detail));
                }
            }
            outcome.unwrap_or((DsnResult::Ignored, "a report without recipients".into()))
        }
        ReportKind::Complaint { .. } => apply_complaint(conn, &target).await?,
        ReportKind::NotAReport(why) => (DsnResult::Ignored, why.clone()),
    };
    Ok(Ingested {
        result,
        email_id: Some(target.email_id),
        matched_by: Some(by),
        detail,
    })
}

fn rank(result: DsnResult) -> usize {
    use DsnResult::*;
    [
        HardBounce, SoftBounce, Failed, Complaint, Delivered, Delayed, Duplicate, Ignored,
        Unmatched,
    ]
    .iter()
    .position(|r| *r == result)
    .unwrap_or(usize::MAX)
}

/// Which of the email's recipients a status is about.
enum Whom {
    To,
    Copy(String),
    Stranger(String),
}

fn whom(target: &Target, status: &RecipientStatus) -> Whom {
    let named: Vec<&str> = [
        status.original_recipient.as_deref(),
        status.final_recipient.as_deref(),
    ]
    .into_iter()
    .flatten()
    .collect();
    if named.is_empty() || named.iter().any(|a| same_address(a, &target.to_email)) {
        return Whom::To;
    }
    if let Some(copy) = target
        .copies()
        .find(|c| named.iter().any(|a| same_address(a, c)))
    {
        return Whom::Copy(copy.clone());
    }
    // An address the report names but we never sent to: a forwarding or an alias of the
    // To when there is no one else; otherwise we cannot tell whose it is.
    if target.copies().next().is_none() {
        Whom::To
    } else {
        Whom::Stranger(named[0].to_string())
    }
}

async fn apply_status(
    conn: &mut PgConnection,
    settings: &IngestSettings,
    target: &Target,
    status: &RecipientStatus,
) -> Result<(DsnResult, String), sqlx::Error> {
    let verdict = status.verdict();
    let reply = status.reply();
    let reason = reply.to_string();
    let code = match reply.enhanced {
        Some(s) => format!("{} {s}", reply.code),
        None => reply.code.to_string(),
    };
    let now = Utc::now();
    let at = now.to_rfc3339_opts(SecondsFormat::Millis, true);
    let id = target.email_id;
    let kind = match verdict {
        Verdict::HardBounce => Some(BounceKind::Hard),
        Verdict::SoftBounce => Some(BounceKind::Soft),
        _ => None,
    };
    let result_of = |kind: BounceKind| match kind {
        BounceKind::Hard => DsnResult::HardBounce,
        BounceKind::Soft => DsnResult::SoftBounce,
    };
    match whom(target, status) {
        Whom::Stranger(address) => Ok((
            DsnResult::Ignored,
            format!(
                "the report is about {address}, not a recipient of this email ({})",
                verdict_word(verdict)
            ),
        )),
        Whom::Copy(address) => {
            let Some(kind) = kind else {
                return Ok((
                    if verdict == Verdict::Delayed {
                        DsnResult::Delayed
                    } else {
                        DsnResult::Ignored
                    },
                    format!(
                        "{} for Cc/Bcc {address}: nothing to record",
                        verdict_word(verdict)
                    ),
                ));
            };
            if target.refused_already(&address) {
                return Ok((
                    DsnResult::Duplicate,
                    format!("the bounce of Cc/Bcc {address} is already recorded"),
                ));
            }
            let refused = json!([{
                "address": address, "code": code, "reason": reason, "at": at, "via": "dsn",
            }]);
            tracking::record_refused_recipients(&mut *conn, id, refused).await?;
            let user = preferences::user_for_address(&mut *conn, &address).await?;
            let record = preferences::record_bounce(
                &mut *conn,
                user,
                &address,
                kind,
                &reason,
                settings.soft_bounce_threshold,
                now.naive_utc(),
            )
            .await?;
            Ok((
                result_of(kind),
                format!(
                    "{} bounce of Cc/Bcc {address} recorded ({reason}){}; the email keeps its status",
                    kind.as_str(),
                    blacklisted_note(&address, record.blacklisted)
                ),
            ))
        }
        Whom::To => match verdict {
            Verdict::HardBounce | Verdict::SoftBounce => {
                let kind = kind.unwrap_or(BounceKind::Soft);
                let row = tracking::mark_bounced_async(
                    &mut *conn,
                    id,
                    kind.as_str(),
                    &reason,
                    Some(&code),
                    &at,
                    REPORTED_BY,
                )
                .await?;
                let Some(row) = row else {
                    return Ok(already(target, "bounce"));
                };
                let user = preferences::recipient_user(conn, row.user_id, &row.to_email).await?;
                let record = preferences::record_bounce(
                    &mut *conn,
                    user,
                    &row.to_email,
                    kind,
                    &reason,
                    settings.soft_bounce_threshold,
                    now.naive_utc(),
                )
                .await?;
                Ok((
                    result_of(kind),
                    format!(
                        "bounced ({} bounce: {reason}){}",
                        kind.as_str(),
                        blacklisted_note(&row.to_email, record.blacklisted)
                    ),
                ))
            }
            Verdict::Failed => {
                if tracking::mark_failed_async(
                    &mut *conn,
                    id,
                    &reason,
                    Some(&code),
                    &at,
                    REPORTED_BY,
                )
                .await?
                {
                    Ok((
                        DsnResult::Failed,
                        format!(
                            "failed ({reason}); not the recipient's fault, so not counted against them"
                        ),
                    ))
                } else {
                    Ok(already(target, "failure"))
                }
            }
            Verdict::Delivered => {
                if !target.sent_like() || target.delivered {
                    return Ok(already(target, "delivery"));
                }
                tracking::mark_delivered(&mut *conn, id, &at).await?;
                Ok((DsnResult::Delivered, format!("delivered ({reason})")))
            }
            Verdict::Delayed => Ok((
                DsnResult::Delayed,
                format!("delivery delayed ({reason}); nothing recorded, the relay keeps trying"),
            )),
        },
    }
}

fn verdict_word(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::HardBounce => "a hard bounce",
        Verdict::SoftBounce => "a soft bounce",
        Verdict::Failed => "a failure",
        Verdict::Delivered => "a delivery",
        Verdict::Delayed => "a delay",
    }
}

fn blacklisted_note(address: &str, blacklisted: bool) -> String {
    if blacklisted {
        format!("; {address} is blacklisted")
    } else {
        String::new()
    }
}

/// The row no longer takes this report: it was applied before, or the row is in a state
/// the report cannot change (e.g. never sent).
fn already(target: &Target, what: &str) -> (DsnResult, String) {
    if target.sent_like() || matches!(target.status.as_str(), "bounced" | "failed") {
        (
            DsnResult::Duplicate,
            format!(
                "the row is already {}; this {what} report changes nothing",
                target.status
            ),
        )
    } else {
        (
            DsnResult::Ignored,
            format!(
                "the row is {}, never sent; a {what} report does not apply",
                target.status
            ),
        )
    }
}

async fn apply_complaint(
    conn: &mut PgConnection,
    target: &Target,
) -> Result<(DsnResult, String), sqlx::Error> {
    if target.complained {
        return Ok((
            DsnResult::Duplicate,
            "the complaint is already recorded".into(),
        ));
    }
    let now = Utc::now();
    let at = now.to_rfc3339_opts(SecondsFormat::Millis, true);
    let Some(row) = tracking::mark_complained(&mut *conn, target.email_id, &at).await? else {
        return Ok((DsnResult::Ignored, "the row is gone".into()));
    };
    let user = preferences::recipient_user(conn, row.user_id, &row.to_email).await?;
    preferences::record_complaint(&mut *conn, user, &row.to_email, now.naive_utc()).await?;
    Ok((
        DsnResult::Complaint,
        format!("spam complaint recorded; {} is blacklisted", row.to_email),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_message_ids_name_the_email() {
        let id = Uuid::new_v4();
        assert_eq!(
            email_id_of_message_id(&format!("{id}@adoptdontshop.com")),
            Some(id)
        );
        assert_eq!(
            email_id_of_message_id(&format!("<{id}@adopt-worker.invalid>")),
            Some(id)
        );
        assert_eq!(
            email_id_of_message_id("20250304.4XyZ@relay.example.org"),
            None
        );
        assert_eq!(email_id_of_message_id("no at sign"), None);
    }

    #[test]
    fn the_strongest_effect_is_the_result() {
        assert!(rank(DsnResult::HardBounce) < rank(DsnResult::Delayed));
        assert!(rank(DsnResult::Complaint) < rank(DsnResult::Duplicate));
        assert!(DsnResult::ALL.iter().all(|r| rank(*r) < usize::MAX));
    }
}
