//! Unsubscribe links (`/u/{token}`) and complaints: the writes to `email_preferences` and
//! `email_suppressions` that a recipient causes.

use chrono::NaiveDateTime;
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

use super::new_unsubscribe_token;

/// What an unsubscribe page shows about the token's owner.
#[derive(Debug, Clone)]
pub struct UnsubscribeTarget {
    /// The address, masked (`m***@example.com`): enough to recognise, not to harvest.
    pub masked_email: String,
    /// Already unsubscribed from what the link is for.
    pub already: bool,
}

/// A preference category as links carry it: 1-64 of `[A-Za-z0-9_]`.
pub fn valid_category(c: &str) -> bool {
    !c.is_empty() && c.len() <= 64 && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn mask(email: &str) -> String {
    match email.split_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        None => "***".to_string(),
    }
}

/// The owner of `token`, or None. Always one indexed lookup, whatever the token looks like,
/// so a wrong token and an unknown one cost the same.
pub async fn find_by_token(
    pool: &PgPool,
    token: &str,
    category: Option<&str>,
) -> Result<Option<UnsubscribeTarget>, sqlx::Error> {
    let row: Option<(String, bool)> = sqlx::query_as(
        "SELECT u.email,
                CASE WHEN $2::text IS NULL THEN COALESCE(p.global_unsubscribe, false)
                     ELSE jsonb_typeof(p.preferences) = 'array' AND EXISTS (
                         SELECT 1 FROM jsonb_array_elements(p.preferences) e
                         WHERE e->>'type' = $2 AND e->'enabled' = 'false'::jsonb) END
         FROM email_preferences p JOIN users u ON u.user_id = p.user_id
         WHERE p.unsubscribe_token = $1",
    )
    .bind(token)
    .bind(category)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(email, already)| UnsubscribeTarget {
        masked_email: mask(&email),
        already,
    }))
}

/// The UPDATE of an unsubscribe, for the preferences row `WHERE $where = $1`: with `$2` a
/// category, that entry of `preferences` gets `enabled: false` (other fields of an existing
/// entry kept); with `$2` NULL, `global_unsubscribe`.
macro_rules! unsubscribe_sql {
    ($where:literal) => {
        concat!(
            "UPDATE email_preferences p SET
                 global_unsubscribe = CASE WHEN $2::text IS NULL THEN true ELSE p.global_unsubscribe END,
                 preferences = CASE
                     WHEN $2::text IS NULL THEN p.preferences
                     WHEN jsonb_typeof(p.preferences) = 'array' AND EXISTS (
                         SELECT 1 FROM jsonb_array_elements(p.preferences) e WHERE e->>'type' = $2)
                     THEN (SELECT jsonb_agg(CASE WHEN x.e->>'type' = $2
                                                 THEN x.e || '{\"enabled\": false}'::jsonb
                                                 ELSE x.e END ORDER BY x.i)
                           FROM jsonb_array_elements(p.preferences) WITH ORDINALITY AS x(e, i))
                     ELSE (CASE WHEN jsonb_typeof(p.preferences) = 'array' THEN p.preferences
                                ELSE '[]'::jsonb END)
                          || jsonb_build_array(jsonb_build_object('type', $2::text, 'enabled', false,
                                'frequency', 'never', 'channels', jsonb_build_array('email')))
                     END,
                 updated_at = now() AT TIME ZONE 'UTC'
             WHERE p.",
            $where,
            " = $1"
        )
    };
}

/// Unsubscribes the owner of `token`: from `category` (its `preferences` entry gets
/// `enabled: false`, other fields of an existing entry kept) or, without one, from all
/// optional email (`global_unsubscribe`). Returns false when no one has this token.
pub async fn unsubscribe(
    pool: &PgPool,
    token: &str,
    category: Option<&str>,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(unsubscribe_sql!("unsubscribe_token"))
        .bind(token)
        .bind(category)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// What [`unsubscribe`] does to a token's owner, done to `user_id` (a provider reported the
/// unsubscribe with the address rather than our link). Their preferences row is created
/// first if missing, with the table's defaults, as on any first need.
pub async fn unsubscribe_user(
    conn: &mut sqlx::PgConnection,
    user_id: Uuid,
    category: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO email_preferences (user_id, unsubscribe_token) VALUES ($1, $2)
         ON CONFLICT (user_id) DO NOTHING",
    )
    .bind(user_id)
    .bind(new_unsubscribe_token())
    .execute(&mut *conn)
    .await?;
    sqlx::query(unsubscribe_sql!("user_id"))
        .bind(user_id)
        .bind(category)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The user whose preferences gate a row (as the claim's `RECIPIENT_JOIN` chooses): the
/// row's `user_id` when that user is current and `address` is theirs, else the current user
/// with that address.
pub async fn gating_user<'e>(
    exec: impl PgExecutor<'e>,
    user_id: Option<Uuid>,
    address: &str,
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT COALESCE(
             (SELECT u.user_id FROM users u
              WHERE u.user_id = $1 AND lower(u.email) = lower($2) AND u.deleted_at IS NULL),
             (SELECT u.user_id FROM users u
              WHERE lower(u.email) = lower($2) AND u.deleted_at IS NULL LIMIT 1))",
    )
    .bind(user_id)
    .bind(address)
    .fetch_one(exec)
    .await
}

/// The user whose address this is (case-insensitive), if any.
pub async fn user_for_address<'e>(
    exec: impl PgExecutor<'e>,
    address: &str,
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT user_id FROM users WHERE lower(email) = lower($1) AND deleted_at IS NULL LIMIT 1",
    )
    .bind(address)
    .fetch_optional(exec)
    .await
}

/// A spam complaint: the recipient is blacklisted at once (reason `complaint`, unless they
/// already were for another reason), in `email_preferences` for users, else
/// `email_suppressions`.
pub async fn record_complaint<'e>(
    exec: impl PgExecutor<'e>,
    user_id: Option<Uuid>,
    address: &str,
    at: NaiveDateTime,
) -> Result<(), sqlx::Error> {
    match user_id {
        Some(uid) => {
            sqlx::query(
                "INSERT INTO email_preferences AS p (user_id, unsubscribe_token, is_blacklisted,
                     blacklist_reason, blacklisted_at)
                 VALUES ($1, $2, true, 'complaint', $3)
                 ON CONFLICT (user_id) DO UPDATE SET
                     is_blacklisted = true,
                     blacklist_reason = CASE WHEN COALESCE(p.is_blacklisted, false)
                                             THEN p.blacklist_reason ELSE 'complaint' END,
                     blacklisted_at = CASE WHEN COALESCE(p.is_blacklisted, false)
                                           THEN p.blacklisted_at ELSE $3 END,
                     updated_at = $3",
            )
            .bind(uid)
            .bind(new_unsubscribe_token())
            .bind(at)
            .execute(exec)
            .await?;
        }
        None => {
            sqlx::query(
                "INSERT INTO email_suppressions AS s (email, is_blacklisted, blacklist_reason,
                     blacklisted_at, updated_at)
                 SELECT lower(f), true, 'complaint', $2, $2 FROM unnest($1::text[]) AS f
                 ON CONFLICT (email) DO UPDATE SET
                     is_blacklisted = true,
                     blacklist_reason = CASE WHEN s.is_blacklisted THEN s.blacklist_reason
                                             ELSE 'complaint' END,
                     blacklisted_at = CASE WHEN s.is_blacklisted THEN s.blacklisted_at ELSE $2 END,
                     updated_at = $2",
            )
            .bind(super::address_forms(address))
            .bind(at)
            .execute(exec)
            .await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_and_masks() {
        assert!(valid_category("application_updates"));
        assert!(!valid_category("a b") && !valid_category("") && !valid_category("x;drop"));
        assert_eq!(mask("maya@example.com"), "m***@example.com");
    }
}
