//! The recipient of a claimed row as the claim reads it: the user the address belongs to
//! and their `email_preferences` and suppression, joined in the claim statement (one
//! statement per claim; the preferences module judges what was read).

use serde_json::Value;
use uuid::Uuid;

/// What the claim statement joins for a row's recipient. All optional: the recipient may
/// not be a user, or a user without a preferences row yet.
#[derive(Debug, Clone, Default, sqlx::FromRow)]
pub struct RecipientPrefs {
    /// `user_id` of the row when it is the recipient (their email is `to_email`), else the
    /// user whose email matches `to_email`.
    pub recipient_user_id: Option<Uuid>,
    pub has_preferences: bool,
    pub is_email_enabled: Option<bool>,
    pub global_unsubscribe: Option<bool>,
    /// `preferences` (per-category opt-outs), read leniently: see [`crate::db::lenient`].
    pub category_prefs: Option<crate::db::lenient::JsonText>,
    pub email_format: Option<String>,
    pub digest_frequency: Option<String>,
    pub unsubscribe_token: Option<String>,
    pub is_blacklisted: Option<bool>,
    pub blacklist_reason: Option<String>,
    pub language: Option<String>,
    /// Blacklisted in `email_suppressions` (recipients without a user row).
    pub suppressed_reason: Option<String>,
}

impl RecipientPrefs {
    /// The per-category opt-outs, when they could be read.
    pub fn category_prefs(&self) -> Option<&Value> {
        self.category_prefs.as_ref().and_then(|j| j.value())
    }

    /// Why `preferences` could not be read, if it could not.
    pub fn category_prefs_problem(&self) -> Option<&str> {
        self.category_prefs.as_ref().and_then(|j| j.problem())
    }
}

/// SQL fragment joined onto the claimed rows (alias `c`) by the claim statement. The
/// recipient is the row's `user_id` only when that user is current and their address is the
/// row's `to_email`; otherwise the user whose address it is: the live one, else the most
/// recently deleted one (a deleted user's address is still theirs, so it is gated as theirs).
/// A row naming another user's id never borrows that user's preferences or unsubscribe
/// token.
pub(super) const RECIPIENT_JOIN: &str = "
    LEFT JOIN LATERAL (
        SELECT COALESCE(
            (SELECT u.user_id FROM users u
             WHERE u.user_id = c.user_id AND lower(u.email) = lower(c.to_email)
               AND u.deleted_at IS NULL),
            (SELECT u.user_id FROM users u
             WHERE lower(u.email) = lower(c.to_email)
             ORDER BY u.deleted_at IS NOT NULL, u.deleted_at DESC LIMIT 1)) AS uid
    ) r ON true
    LEFT JOIN email_preferences p ON p.user_id = r.uid
    LEFT JOIN email_suppressions s ON s.email = lower(c.to_email) AND s.is_blacklisted";

/// Columns of [`RecipientPrefs`] selected by the claim statement.
pub(super) const RECIPIENT_COLUMNS: &str = "
    r.uid AS recipient_user_id, (p.preference_id IS NOT NULL) AS has_preferences,
    p.is_email_enabled, p.global_unsubscribe, p.preferences::text AS category_prefs,
    p.email_format::text AS email_format, p.digest_frequency::text AS digest_frequency,
    p.unsubscribe_token, p.is_blacklisted, p.blacklist_reason, p.language,
    s.blacklist_reason AS suppressed_reason";
