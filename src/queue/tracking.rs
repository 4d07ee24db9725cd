//! What happens to a row after it was sent: delivery, opens, clicks, asynchronous bounces and
//! complaints, from the open pixel, the click redirect and the relay's webhook. Each is one
//! UPDATE whose status CASE only moves forward (sent → delivered → opened → clicked) and
//! never touches a row that is not sent-like (never over bounced, failed, unsubscribed).
//! `tracking` keeps counts and first/last times; no IP address or user agent is stored.

use serde_json::json;
use sqlx::PgExecutor;
use uuid::Uuid;

/// `tracking` as an object whatever it held before (NULL, or a non-object from elsewhere).
macro_rules! tracking_object {
    () => {
        "(CASE WHEN jsonb_typeof(tracking) = 'object' THEN tracking ELSE '{}'::jsonb END)"
    };
}

/// `tracking->'<key>'` as a count (older rows may hold an array of events there).
macro_rules! count_of {
    ($key:literal) => {
        concat!(
            "(CASE jsonb_typeof(tracking->'",
            $key,
            "') WHEN 'number' THEN (tracking->>'",
            $key,
            "')::numeric::int WHEN 'array' THEN jsonb_array_length(tracking->'",
            $key,
            "') ELSE 0 END)"
        )
    };
}

/// The row an event applied to, for the recipient's bookkeeping.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TrackedRow {
    pub email_id: Uuid,
    pub user_id: Option<Uuid>,
    pub to_email: String,
}

/// An open (pixel or relay): `opens + 1`, first/last open times; sent/delivered → opened.
/// `at` is RFC 3339. False when the row is unknown or not sent-like.
pub async fn record_open<'e>(
    exec: impl PgExecutor<'e>,
    email_id: Uuid,
    at: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(concat!(
        "UPDATE email_queue SET tracking = ",
        tracking_object!(),
        " || jsonb_build_object('opens', ",
        count_of!("opens"),
        " + 1,
            'firstOpenedAt', COALESCE(tracking->'firstOpenedAt', to_jsonb($2::text)),
            'lastOpenedAt', $2::text),
         status = CASE WHEN status IN ('sent', 'delivered') THEN 'opened'::email_status_enum
                       ELSE status END,
         updated_at = now() AT TIME ZONE 'UTC'
         WHERE email_id = $1 AND status IN ('sent', 'delivered', 'opened', 'clicked')"
    ))
    .bind(email_id)
    .bind(at)
    .execute(exec)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Cc/Bcc recipients the relay refused while it took the message for the others: appended
/// to `tracking.refusedRecipients` (`[{address, code, reason, at}]`). The row keeps its
/// status: only a refused To bounces an email.
pub async fn record_refused_recipients<'e>(
    exec: impl PgExecutor<'e>,
    email_id: Uuid,
    refused: serde_json::Value,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(concat!(
        "UPDATE email_queue SET tracking = ",
        tracking_object!(),
        " || jsonb_build_object('refusedRecipients',
            (CASE WHEN jsonb_typeof(tracking->'refusedRecipients') = 'array'
                  THEN tracking->'refusedRecipients' ELSE '[]'::jsonb END) || $2::jsonb),
         updated_at = now() AT TIME ZONE 'UTC'
         WHERE email_id = $1"
    ))
    .bind(email_id)
    .bind(refused)
    .execute(exec)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Cc/Bcc addresses left out because they are blacklisted: `tracking.suppressedRecipients`
/// (the list of this attempt; a retry writes it again).
pub async fn record_suppressed_recipients<'e>(
    exec: impl PgExecutor<'e>,
    email_id: Uuid,
    addresses: &[String],
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(concat!(
        "UPDATE email_queue SET tracking = ",
        tracking_object!(),
        " || jsonb_build_object('suppressedRecipients', to_jsonb($2::text[]))
         WHERE email_id = $1"
    ))
    .bind(email_id)
    .bind(addresses)
    .execute(exec)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// A click through a signed link: `clicks + 1`, first/last click times;
/// sent/delivered/opened → clicked.
pub async fn record_click<'e>(
    exec: impl PgExecutor<'e>,
    email_id: Uuid,
    at: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(concat!(
        "UPDATE email_queue SET tracking = ",
        tracking_object!(),
        " || jsonb_build_object('clicks', ",
        count_of!("clicks"),
        " + 1,
            'firstClickedAt', COALESCE(tracking->'firstClickedAt', to_jsonb($2::text)),
            'lastClickedAt', $2::text),
         status = CASE WHEN status IN ('sent', 'delivered', 'opened') THEN 'clicked'::email_status_enum
                       ELSE status END,
         updated_at = now() AT TIME ZONE 'UTC'
         WHERE email_id = $1 AND status IN ('sent', 'delivered', 'opened', 'clicked')"
    ))
    .bind(email_id)
    .bind(at)
    .execute(exec)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// The relay delivered it: `deliveredAt` (the first report wins); sent → delivered.
pub async fn mark_delivered<'e>(
    exec: impl PgExecutor<'e>,
    email_id: Uuid,
    at: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(concat!(
        "UPDATE email_queue SET tracking = ",
        tracking_object!(),
        " || jsonb_build_object('deliveredAt', COALESCE(tracking->'deliveredAt', to_jsonb($2::text))),
         status = CASE WHEN status = 'sent' THEN 'delivered'::email_status_enum ELSE status END,
         updated_at = now() AT TIME ZONE 'UTC'
         WHERE email_id = $1 AND status IN ('sent', 'delivered', 'opened', 'clicked')"
    ))
    .bind(email_id)
    .bind(at)
    .execute(exec)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// The provider could not deliver yet and keeps trying: `deferrals + 1`, `lastDeferredAt`,
/// `lastDeferralReason`. The status stays (sent-like rows only).
pub async fn record_deferral<'e>(
    exec: impl PgExecutor<'e>,
    email_id: Uuid,
    reason: &str,
    at: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(concat!(
        "UPDATE email_queue SET tracking = ",
        tracking_object!(),
        " || jsonb_build_object('deferrals', ",
        count_of!("deferrals"),
        " + 1, 'lastDeferredAt', $2::text, 'lastDeferralReason', $3::text),
         updated_at = now() AT TIME ZONE 'UTC'
         WHERE email_id = $1 AND status IN ('sent', 'delivered', 'opened', 'clicked')"
    ))
    .bind(email_id)
    .bind(at)
    .bind(reason)
    .execute(exec)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// An asynchronous bounce (the relay accepted the mail, the recipient's server did not):
/// sent/delivered/opened/clicked → **bounced** with `bouncedAt`, `bounceType`,
/// `bounceReason`, `bounceCode` in tracking. None when the row is unknown or not sent-like
/// (so a repeated report is not counted twice). `reported_by` ends up in `failure_reason`
/// ("hard bounce reported by the relay: ...").
pub async fn mark_bounced_async<'e>(
    exec: impl PgExecutor<'e>,
    email_id: Uuid,
    kind: &str,
    reason: &str,
    code: Option<&str>,
    at: &str,
    reported_by: &str,
) -> Result<Option<TrackedRow>, sqlx::Error> {
    let bounce = json!({
        "bouncedAt": at,
        "bounceType": kind,
        "bounceReason": reason,
        "bounceCode": code,
    });
    sqlx::query_as(concat!(
        "UPDATE email_queue SET status = 'bounced', failure_reason = $3,
         tracking = ",
        tracking_object!(),
        " || $2::jsonb,
         updated_at = now() AT TIME ZONE 'UTC'
         WHERE email_id = $1 AND status IN ('sent', 'delivered', 'opened', 'clicked')
         RETURNING email_id, user_id, to_email"
    ))
    .bind(email_id)
    .bind(bounce)
    .bind(format!("{kind} bounce reported by {reported_by}: {reason}"))
    .fetch_optional(exec)
    .await
}

/// A delivery that failed after the relay accepted the mail, for a reason that is not the
/// recipient's (a DSN with 5.7.x policy, content, size ...): sent-like → **failed**, with
/// `bouncedAt`, `bounceType: "permanent"`, `bounceReason`, `bounceCode` in tracking, as the
/// worker ends a row refused that way at send time. No bookkeeping against the recipient.
/// False when the row is unknown or not sent-like.
pub async fn mark_failed_async<'e>(
    exec: impl PgExecutor<'e>,
    email_id: Uuid,
    reason: &str,
    code: Option<&str>,
    at: &str,
    reported_by: &str,
) -> Result<bool, sqlx::Error> {
    let failure = json!({
        "bouncedAt": at,
        "bounceType": "permanent",
        "bounceReason": reason,
        "bounceCode": code,
    });
    let done = sqlx::query(concat!(
        "UPDATE email_queue SET status = 'failed', failure_reason = $3,
         tracking = ",
        tracking_object!(),
        " || $2::jsonb,
         updated_at = now() AT TIME ZONE 'UTC'
         WHERE email_id = $1 AND status IN ('sent', 'delivered', 'opened', 'clicked')"
    ))
    .bind(email_id)
    .bind(failure)
    .bind(format!(
        "delivery failed after the relay accepted it, reported by {reported_by}: {reason}"
    ))
    .execute(exec)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// A spam complaint: `complainedAt` in tracking; the status stays.
pub async fn mark_complained<'e>(
    exec: impl PgExecutor<'e>,
    email_id: Uuid,
    at: &str,
) -> Result<Option<TrackedRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        "UPDATE email_queue SET tracking = ",
        tracking_object!(),
        " || jsonb_build_object('complainedAt', COALESCE(tracking->'complainedAt', to_jsonb($2::text))),
         updated_at = now() AT TIME ZONE 'UTC'
         WHERE email_id = $1
         RETURNING email_id, user_id, to_email"
    ))
    .bind(email_id)
    .bind(at)
    .fetch_optional(exec)
    .await
}

/// The row a relay means by its message id (the newest, should two share one).
pub async fn find_by_provider_message_id<'e>(
    exec: impl PgExecutor<'e>,
    provider_message_id: &str,
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT email_id FROM email_queue WHERE provider_message_id = $1
         ORDER BY created_at DESC NULLS LAST LIMIT 1",
    )
    .bind(provider_message_id)
    .fetch_optional(exec)
    .await
}
