//! `email_preferences` (and `email_suppressions` for recipients who are not users): who gets
//! what, bounce bookkeeping, unsubscribe tokens. The recipient's preferences arrive with
//! each claimed row (joined by the claim statement), so the gate costs no extra round trip.

mod unsubscribe;

pub use unsubscribe::{
    UnsubscribeTarget, find_by_token, gating_user, record_complaint, unsubscribe, unsubscribe_user,
    user_for_address, valid_category,
};

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::NaiveDateTime;
use rand::RngCore;
use serde_json::Value;
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

pub use crate::queue::RecipientPrefs;
use crate::queue::{ClaimedEmail, EmailType};

/// Which parts the recipient gets (`email_preferences.email_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BodyFormat {
    /// multipart/alternative: text and HTML (`html` and `both`).
    #[default]
    Multipart,
    /// text/plain only (`text`).
    TextOnly,
}

/// The gate's columns of `email_preferences`, in the order [`ColumnDefaults::load`] reads
/// their defaults.
const GATE_COLUMNS: [&str; 7] = [
    "is_email_enabled",
    "global_unsubscribe",
    "preferences",
    "email_format",
    "digest_frequency",
    "language",
    "is_blacklisted",
];

/// What a user without an `email_preferences` row gets: each gate column's default as the
/// database's catalogue states it (`pg_attrdef`), evaluated. A row created later (on first
/// need) takes the same defaults, so creating it never changes what the user receives; a
/// platform that changes a default is followed by both.
#[derive(Debug, Clone, Default, sqlx::FromRow)]
pub struct ColumnDefaults {
    pub is_email_enabled: Option<bool>,
    pub global_unsubscribe: Option<bool>,
    pub category_prefs: Option<crate::db::lenient::JsonText>,
    pub email_format: Option<String>,
    pub digest_frequency: Option<String>,
    pub language: Option<String>,
    pub is_blacklisted: Option<bool>,
}

impl ColumnDefaults {
    /// Reads the defaults from the catalogue and evaluates them (a column without one is
    /// NULL, as an INSERT would leave it).
    pub async fn load(pool: &PgPool) -> Result<ColumnDefaults, sqlx::Error> {
        let exprs: Vec<(String, Option<String>)> = sqlx::query_as(
            "SELECT a.attname::text, pg_get_expr(d.adbin, d.adrelid)
             FROM pg_attribute a
             LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
             WHERE a.attrelid = to_regclass('email_preferences') AND a.attname = ANY($1)
               AND NOT a.attisdropped",
        )
        .bind(&GATE_COLUMNS[..])
        .fetch_all(pool)
        .await?;
        let expr = |column: &str| {
            exprs
                .iter()
                .find(|(c, _)| c == column)
                .and_then(|(_, e)| e.clone())
                .unwrap_or_else(|| "NULL".to_string())
        };
        // The expressions are the table's own defaults, as the database prints them.
        let sql = format!(
            "SELECT ({})::boolean AS is_email_enabled, ({})::boolean AS global_unsubscribe,
                    ({})::text AS category_prefs, ({})::text AS email_format,
                    ({})::text AS digest_frequency, ({})::text AS language,
                    ({})::boolean AS is_blacklisted",
            expr(GATE_COLUMNS[0]),
            expr(GATE_COLUMNS[1]),
            expr(GATE_COLUMNS[2]),
            expr(GATE_COLUMNS[3]),
            expr(GATE_COLUMNS[4]),
            expr(GATE_COLUMNS[5]),
            expr(GATE_COLUMNS[6]),
        );
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .fetch_one(pool)
            .await
    }
}

/// [`ColumnDefaults`] read at most once a minute per process (per pool), so the gate costs
/// no query for rows to users without a preferences row, and a changed default is followed
/// within a minute.
#[derive(Clone, Default)]
pub struct DefaultsCache {
    cached: Arc<Mutex<Option<ReadAt>>>,
}

/// Defaults as read, and when.
type ReadAt = (Instant, Arc<ColumnDefaults>);

impl DefaultsCache {
    const TTL: Duration = Duration::from_secs(60);

    pub async fn get(&self, pool: &PgPool) -> Result<Arc<ColumnDefaults>, sqlx::Error> {
        if let Ok(guard) = self.cached.lock()
            && let Some((at, d)) = guard.as_ref()
            && at.elapsed() < Self::TTL
        {
            return Ok(d.clone());
        }
        let fresh = Arc::new(ColumnDefaults::load(pool).await?);
        if let Ok(mut guard) = self.cached.lock() {
            *guard = Some((Instant::now(), fresh.clone()));
        }
        Ok(fresh)
    }
}

impl RecipientPrefs {
    /// True when the recipient is a user who has no preferences row yet: the gate then
    /// applies [`ColumnDefaults`] (see [`RecipientPrefs::assume_defaults`]).
    pub fn lacks_row(&self) -> bool {
        self.recipient_user_id.is_some() && !self.has_preferences
    }

    /// A user without a preferences row is treated as the row the table would create for
    /// them: every gate column takes its default.
    pub fn assume_defaults(&mut self, d: &ColumnDefaults) {
        if !self.lacks_row() {
            return;
        }
        self.is_email_enabled = d.is_email_enabled;
        self.global_unsubscribe = d.global_unsubscribe;
        self.category_prefs = d.category_prefs.clone();
        self.email_format = d.email_format.clone();
        self.digest_frequency = d.digest_frequency.clone();
        self.language = d.language.clone();
        self.is_blacklisted = d.is_blacklisted;
    }
}

/// The gate's verdict for one row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Send {
        format: BodyFormat,
        /// Set for marketing and notification mail: the List-Unsubscribe target.
        unsubscribe: Option<Unsubscribe>,
    },
    /// Blacklisted: the row ends `failed` with a reason starting `suppressed`.
    Suppressed(String),
    /// Opted out: the row ends `unsubscribed`.
    OptedOut(OptOut, String),
    /// A notification for a user on a digest schedule: kept for the digest job.
    HoldForDigest,
}

/// Which preference opted the recipient out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptOut {
    /// `is_email_enabled = false` or `global_unsubscribe`.
    Unsubscribed,
    /// The email's category is disabled in the `preferences` array.
    Category,
    /// `digest_frequency = 'never'` (notification email).
    Never,
}

/// Where an unsubscribe link points: the user's token and, for a per-category link, the
/// category.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    pub token: String,
    pub category: Option<String>,
}

impl Unsubscribe {
    /// `{public_url}/u/{token}` (+ `?category=...`): the page and the RFC 8058 POST target.
    /// The one-click link. Token and category are percent-encoded: both may come from
    /// another service (a token written by SQL, a category from the row's metadata), and
    /// the link goes into a header, where a raw space, `>` or line break would break it.
    pub fn url(&self, public_url: &str) -> String {
        let base = public_url.trim_end_matches('/');
        let token = url::form_urlencoded::byte_serialize(self.token.as_bytes()).collect::<String>();
        // Spaces as %20 in a path, not form encoding's `+`.
        let token = token.replace('+', "%20");
        match &self.category {
            Some(c) => format!(
                "{base}/u/{token}?{}",
                url::form_urlencoded::Serializer::new(String::new())
                    .append_pair("category", c)
                    .finish()
            ),
            None => format!("{base}/u/{token}"),
        }
    }
}

#[cfg(test)]
mod url_tests {
    use super::Unsubscribe;

    #[test]
    fn links_built_from_odd_tokens_and_categories_are_valid_urls() {
        let u = Unsubscribe {
            token: "a b>c\r\nX-Evil: 1".into(),
            category: Some("news & offers\r\n".into()),
        };
        let link = u.url("https://adoptdontshop.com/");
        assert!(link.bytes().all(|b| b.is_ascii_graphic()), "{link}");
        assert_eq!(
            link,
            "https://adoptdontshop.com/u/a%20b%3Ec%0D%0AX-Evil%3A%201?category=news+%26+offers%0D%0A"
        );
        let plain = Unsubscribe {
            token: "AbC-123_x".into(),
            category: None,
        };
        assert_eq!(plain.url("http://h"), "http://h/u/AbC-123_x");
    }
}

/// The preference category an email belongs to, for per-category opt-outs:
/// `metadata.category` when the sender names one, else by type (the platform's mapping:
/// notification → `messages`, marketing → `marketing`).
pub fn category(email: &ClaimedEmail) -> Option<String> {
    category_of(email.metadata.as_ref(), email.email_type)
}

/// [`category`] of a row given its `metadata` and type (for a row read outside the claim).
pub fn category_of(metadata: Option<&Value>, email_type: EmailType) -> Option<String> {
    if let Some(c) = metadata
        .and_then(|m| m.get("category"))
        .and_then(Value::as_str)
        .filter(|c| {
            !c.is_empty()
                && c.len() <= 64
                && c.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
        })
    {
        return Some(c.to_string());
    }
    match email_type {
        EmailType::Notification => Some("messages".to_string()),
        EmailType::Marketing => Some("marketing".to_string()),
        EmailType::Transactional | EmailType::System => None,
    }
}

/// The category of the digest email itself (its one-click unsubscribe turns this off).
pub const DIGEST_CATEGORY: &str = "notification_digest";

/// docs/delivery.md "Who gets what", as one pure function of the row and its recipient.
pub fn decide(email: &ClaimedEmail) -> Verdict {
    let p = &email.recipient;
    if p.is_blacklisted == Some(true) {
        let why = p.blacklist_reason.as_deref().unwrap_or("blacklisted");
        return Verdict::Suppressed(format!("suppressed: recipient is blacklisted ({why})"));
    }
    if let Some(why) = &p.suppressed_reason {
        return Verdict::Suppressed(format!("suppressed: recipient is blacklisted ({why})"));
    }
    let format = match p.email_format.as_deref() {
        Some("text") => BodyFormat::TextOnly,
        _ => BodyFormat::Multipart,
    };
    if !email.email_type.is_optional() {
        return Verdict::Send {
            format,
            unsubscribe: None,
        };
    }
    if p.is_email_enabled == Some(false) {
        return Verdict::OptedOut(
            OptOut::Unsubscribed,
            "recipient has email disabled (is_email_enabled = false)".into(),
        );
    }
    if p.global_unsubscribe == Some(true) {
        return Verdict::OptedOut(
            OptOut::Unsubscribed,
            "recipient unsubscribed from all optional email (global_unsubscribe)".into(),
        );
    }
    let category = category(email);
    if let Some(c) = &category
        && category_disabled(p.category_prefs(), c)
    {
        return Verdict::OptedOut(
            OptOut::Category,
            format!("recipient opted out of {c:?} email"),
        );
    }
    if email.email_type == EmailType::Notification && !is_digest(email) {
        match p.digest_frequency.as_deref() {
            Some("never") => {
                return Verdict::OptedOut(
                    OptOut::Never,
                    "recipient receives no notification email (digest_frequency = never)".into(),
                );
            }
            // Held for a digest the recipient unsubscribed from, it would wait forever.
            Some("daily" | "weekly" | "monthly")
                if category_disabled(p.category_prefs(), DIGEST_CATEGORY) =>
            {
                return Verdict::OptedOut(
                    OptOut::Category,
                    "recipient unsubscribed from the notification digest".into(),
                );
            }
            Some("daily" | "weekly" | "monthly") => return Verdict::HoldForDigest,
            _ => {}
        }
    }
    let unsubscribe = p
        .unsubscribe_token
        .clone()
        .map(|token| Unsubscribe { token, category });
    Verdict::Send {
        format,
        unsubscribe,
    }
}

/// The digest itself is a notification email and must not be held for the next digest.
fn is_digest(email: &ClaimedEmail) -> bool {
    email
        .metadata
        .as_ref()
        .and_then(|m| m.get("digest"))
        .is_some()
}

/// `preferences` is an array of `{type, enabled, ...}`; an entry with `enabled: false`
/// opts out. A type that is absent is allowed (the platform's old "absent = disabled" was a
/// bug that blocked everyone with an empty array).
fn category_disabled(prefs: Option<&Value>, category: &str) -> bool {
    prefs
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|e| {
            e.get("type").and_then(Value::as_str) == Some(category)
                && e.get("enabled") == Some(&Value::Bool(false))
        })
}

/// Those of `addresses` that are blacklisted: in `email_suppressions`, or a current user's
/// `email_preferences`. Copies (Cc/Bcc) to them are dropped before sending: mail to a known
/// bad address hurts the sender's reputation like any bounce.
pub async fn blacklisted_among(
    pool: &PgPool,
    addresses: &[String],
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT a FROM unnest($1::text[]) AS a
         WHERE EXISTS (SELECT 1 FROM email_suppressions s
                       WHERE s.email = lower(trim(a)) AND s.is_blacklisted)
            OR EXISTS (SELECT 1 FROM users u JOIN email_preferences p ON p.user_id = u.user_id
                       WHERE lower(u.email) = lower(trim(a)) AND u.deleted_at IS NULL
                         AND COALESCE(p.is_blacklisted, false))",
    )
    .bind(addresses)
    .fetch_all(pool)
    .await
}

/// The spellings under which an address without a user is kept in `email_suppressions`:
/// an internationalised domain both as written (Unicode) and as sent (punycode), so a
/// bounce recorded for `maya@xn--mnchen-3ya.de` (the envelope) also suppresses a row written
/// to `maya@münchen.de`, and the other way round. Lower-cased in SQL.
pub fn address_forms(address: &str) -> Vec<String> {
    let address = address.trim();
    let mut forms = vec![address.to_string()];
    if let Some((local, domain)) = address.rsplit_once('@') {
        let ascii = idna::domain_to_ascii(domain).ok();
        let (unicode, ok) = idna::domain_to_unicode(domain);
        for d in ascii.into_iter().chain(ok.is_ok().then_some(unicode)) {
            let form = format!("{local}@{d}");
            if !forms
                .iter()
                .any(|f| f.to_lowercase() == form.to_lowercase())
            {
                forms.push(form);
            }
        }
    }
    forms
}

#[cfg(test)]
mod forms_tests {
    #[test]
    fn an_idn_address_is_kept_in_both_spellings() {
        let mut a = super::address_forms("Maya@münchen.de");
        a.sort();
        assert_eq!(a, ["Maya@münchen.de", "Maya@xn--mnchen-3ya.de"]);
        let mut b = super::address_forms("lena@xn--mnchen-3ya.de");
        b.sort();
        assert_eq!(b, ["lena@münchen.de", "lena@xn--mnchen-3ya.de"]);
        assert_eq!(
            super::address_forms("maya@example.com"),
            ["maya@example.com"]
        );
    }
}

/// A user as the enqueue API checks a `user_id` against the recipient.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserAddress {
    pub user_id: Uuid,
    pub email: String,
    pub deleted: bool,
}

/// The address and deletion state of each of `ids` that exists.
pub async fn user_addresses(pool: &PgPool, ids: &[Uuid]) -> Result<Vec<UserAddress>, sqlx::Error> {
    sqlx::query_as(
        "SELECT user_id, email, deleted_at IS NOT NULL AS deleted FROM users WHERE user_id = ANY($1)",
    )
    .bind(ids)
    .fetch_all(pool)
    .await
}

/// A fresh unsubscribe token: 32 random bytes, URL-safe base64 (unguessable, 43 chars).
pub fn new_unsubscribe_token() -> String {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Creates the user's preferences row if missing (first need) and returns its unsubscribe
/// token, creating one if the row has none.
pub async fn ensure_unsubscribe_token(pool: &PgPool, user_id: Uuid) -> Result<String, sqlx::Error> {
    let token: Option<String> = sqlx::query_scalar(
        "INSERT INTO email_preferences (user_id, unsubscribe_token) VALUES ($1, $2)
         ON CONFLICT (user_id) DO UPDATE
             SET unsubscribe_token = COALESCE(email_preferences.unsubscribe_token, EXCLUDED.unsubscribe_token),
                 updated_at = CASE WHEN email_preferences.unsubscribe_token IS NULL
                                   THEN now() AT TIME ZONE 'UTC' ELSE email_preferences.updated_at END
         RETURNING unsubscribe_token",
    )
    .bind(user_id)
    .bind(new_unsubscribe_token())
    .fetch_one(pool)
    .await?;
    Ok(token.unwrap_or_default())
}

/// Whose bounce or complaint a row's report is: the row's user, or else the user with its
/// address (the webhook and the bounce ingest both count it there).
pub async fn recipient_user(
    conn: &mut sqlx::PgConnection,
    user_id: Option<Uuid>,
    address: &str,
) -> Result<Option<Uuid>, sqlx::Error> {
    match user_id {
        Some(u) => Ok(Some(u)),
        None => user_for_address(&mut *conn, address).await,
    }
}

/// Hard (recipient does not exist) or soft (mailbox full) bounce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BounceKind {
    Hard,
    Soft,
}

impl BounceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BounceKind::Hard => "hard",
            BounceKind::Soft => "soft",
        }
    }
}

/// What bounce bookkeeping did to the recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BounceRecord {
    pub bounce_count: i32,
    pub blacklisted: bool,
}

/// Counts a bounce against the recipient: `bounce_count + 1`, `last_bounce_at`, and the
/// blacklist at once for a hard bounce, or once `bounce_count` reaches `soft_threshold`.
/// Users keep this in `email_preferences` (created if missing); other addresses in
/// `email_suppressions`, so mail to rescue contacts or invitees is protected the same way.
pub async fn record_bounce<'e>(
    exec: impl PgExecutor<'e>,
    user_id: Option<Uuid>,
    address: &str,
    kind: BounceKind,
    reason: &str,
    soft_threshold: i32,
    at: NaiveDateTime,
) -> Result<BounceRecord, sqlx::Error> {
    let hard = kind == BounceKind::Hard;
    let row: (i32, bool) = match user_id {
        Some(uid) => {
            sqlx::query_as(
                "INSERT INTO email_preferences AS p (user_id, unsubscribe_token, bounce_count, last_bounce_at,
                     is_blacklisted, blacklist_reason, blacklisted_at)
                 VALUES ($1, $2, 1, $3, $4 OR 1 >= $6, CASE WHEN $4 OR 1 >= $6 THEN $5 END,
                         CASE WHEN $4 OR 1 >= $6 THEN $3 END)
                 ON CONFLICT (user_id) DO UPDATE SET
                     bounce_count = COALESCE(p.bounce_count, 0) + 1,
                     last_bounce_at = $3,
                     is_blacklisted = COALESCE(p.is_blacklisted, false) OR $4 OR COALESCE(p.bounce_count, 0) + 1 >= $6,
                     blacklist_reason = CASE WHEN COALESCE(p.is_blacklisted, false) THEN p.blacklist_reason
                                             WHEN $4 OR COALESCE(p.bounce_count, 0) + 1 >= $6 THEN $5
                                             ELSE p.blacklist_reason END,
                     blacklisted_at = CASE WHEN COALESCE(p.is_blacklisted, false) THEN p.blacklisted_at
                                           WHEN $4 OR COALESCE(p.bounce_count, 0) + 1 >= $6 THEN $3
                                           ELSE p.blacklisted_at END,
                     updated_at = $3
                 RETURNING p.bounce_count, COALESCE(p.is_blacklisted, false)",
            )
            .bind(uid)
            .bind(new_unsubscribe_token())
            .bind(at)
            .bind(hard)
            .bind(blacklist_reason(kind, reason))
            .bind(soft_threshold)
            .fetch_one(exec)
            .await?
        }
        None => {
            sqlx::query_as(
                "INSERT INTO email_suppressions AS s (email, bounce_count, last_bounce_at, is_blacklisted,
                     blacklist_reason, blacklisted_at, updated_at)
                 SELECT lower(f), 1, $2, $3 OR 1 >= $5, CASE WHEN $3 OR 1 >= $5 THEN $4 END,
                         CASE WHEN $3 OR 1 >= $5 THEN $2 END, $2
                 FROM unnest($1::text[]) AS f
                 ON CONFLICT (email) DO UPDATE SET
                     bounce_count = s.bounce_count + 1,
                     last_bounce_at = $2,
                     is_blacklisted = s.is_blacklisted OR $3 OR s.bounce_count + 1 >= $5,
                     blacklist_reason = CASE WHEN s.is_blacklisted THEN s.blacklist_reason
                                             WHEN $3 OR s.bounce_count + 1 >= $5 THEN $4
                                             ELSE s.blacklist_reason END,
                     blacklisted_at = CASE WHEN s.is_blacklisted THEN s.blacklisted_at
                                           WHEN $3 OR s.bounce_count + 1 >= $5 THEN $2
                                           ELSE s.blacklisted_at END,
                     updated_at = $2
                 RETURNING s.bounce_count, s.is_blacklisted",
            )
            .bind(address_forms(address))
            .bind(at)
            .bind(hard)
            .bind(blacklist_reason(kind, reason))
            .bind(soft_threshold)
            .fetch_all(exec)
            .await?
            .into_iter()
            .next()
            .unwrap_or((1, hard))
        }
    };
    Ok(BounceRecord {
        bounce_count: row.0,
        blacklisted: row.1,
    })
}

fn blacklist_reason(kind: BounceKind, reason: &str) -> String {
    match kind {
        BounceKind::Hard => format!("hard bounce: {reason}"),
        BounceKind::Soft => format!("too many soft bounces; last: {reason}"),
    }
}
