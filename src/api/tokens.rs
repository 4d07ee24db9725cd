//! The `api_tokens` table: service tokens for the HTTP API. A token is `adw_` + 43 URL-safe
//! base64 characters (32 random bytes); only its SHA-256 is stored, so a database dump
//! reveals no usable credential. Revoked rows are kept so past use stays attributable.

use base64::Engine;
use chrono::{DateTime, Utc};
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use subtle::ConstantTimeEq;
use uuid::Uuid;

/// Every service token starts with this, so leaked tokens are recognisable (secret scanners).
pub const TOKEN_PREFIX: &str = "adw_";

/// What a token may do. Explicit: no scope implies another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// `POST /v1/emails`, `POST /v1/emails/batch`.
    Enqueue,
    /// `GET /v1/emails/{id}`, `GET /v1/emails`.
    Read,
    /// Retry, templates, test sends.
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Enqueue, Scope::Read, Scope::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Enqueue => "enqueue",
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|x| x.as_str() == s.trim())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("invalid token name {0:?}: use 1-64 characters from letters, digits, '.', '_' and '-'")]
    BadName(String),
    #[error("unknown scope {0:?}; scopes are enqueue, read, admin")]
    BadScope(String),
    #[error("a token needs at least one scope (enqueue, read, admin)")]
    NoScopes,
    #[error("a token named {0:?} already exists (names stay taken after revocation)")]
    NameTaken(String),
    #[error("no token named {0:?}")]
    UnknownName(String),
    #[error("token {0:?} is already revoked")]
    AlreadyRevoked(String),
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
}

/// A token as `tokens list` shows it (never the secret, never the hash).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TokenInfo {
    pub name: String,
    pub scopes: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A token found by its secret.
#[derive(Debug, Clone)]
pub struct StoredToken {
    pub token_id: Uuid,
    pub name: String,
    pub scopes: Vec<Scope>,
    pub revoked: bool,
}

/// SHA-256 of the whole token string.
pub fn hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// True when `s` has the shape of a service token (prefix, 43 base64url characters).
pub fn looks_like_token(s: &str) -> bool {
    s.strip_prefix(TOKEN_PREFIX).is_some_and(|rest| {
        rest.len() == 43
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

fn check_name(name: &str) -> Result<(), TokenError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(TokenError::BadName(name.to_string()))
    }
}

/// Parses `enqueue,read` style scope lists (already split on commas by clap).
pub fn parse_scopes(raw: &[String]) -> Result<Vec<Scope>, TokenError> {
    let mut scopes = Vec::new();
    for s in raw.iter().flat_map(|s| s.split(',')) {
        if s.trim().is_empty() {
            continue;
        }
        let scope = Scope::parse(s).ok_or_else(|| TokenError::BadScope(s.to_string()))?;
        if !scopes.contains(&scope) {
            scopes.push(scope);
        }
    }
    if scopes.is_empty() {
        return Err(TokenError::NoScopes);
    }
    scopes.sort();
    Ok(scopes)
}

/// Creates a token and returns its secret: the only time it exists outside the caller.
pub async fn create(pool: &PgPool, name: &str, scopes: &[Scope]) -> Result<String, TokenError> {
    check_name(name)?;
    if scopes.is_empty() {
        return Err(TokenError::NoScopes);
    }
    let secret = new_secret();
    let names: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
    let inserted = sqlx::query(
        "INSERT INTO api_tokens (name, token_hash, scopes) VALUES ($1, $2, $3)
         ON CONFLICT (name) DO NOTHING",
    )
    .bind(name)
    .bind(hash(&secret).as_slice())
    .bind(&names)
    .execute(pool)
    .await?;
    if inserted.rows_affected() == 0 {
        return Err(TokenError::NameTaken(name.to_string()));
    }
    Ok(secret)
}

pub async fn list(pool: &PgPool) -> Result<Vec<TokenInfo>, sqlx::Error> {
    sqlx::query_as(
        "SELECT name, scopes, created_at, last_used_at, revoked_at FROM api_tokens ORDER BY created_at, name",
    )
    .fetch_all(pool)
    .await
}

pub async fn revoke(pool: &PgPool, name: &str) -> Result<(), TokenError> {
    let revoked: Option<bool> = sqlx::query_scalar(
        "WITH t AS (SELECT token_id, revoked_at IS NOT NULL AS was FROM api_tokens WHERE name = $1),
              u AS (UPDATE api_tokens SET revoked_at = now()
                    WHERE token_id IN (SELECT token_id FROM t WHERE NOT was))
         SELECT was FROM t",
    )
    .bind(name)
    .fetch_optional(pool)
    .await?;
    match revoked {
        None => Err(TokenError::UnknownName(name.to_string())),
        Some(true) => Err(TokenError::AlreadyRevoked(name.to_string())),
        Some(false) => Ok(()),
    }
}

/// Finds the token whose hash matches `secret`, and notes its use (at most once a minute, so
/// a busy client does not write on every request).
pub async fn find(pool: &PgPool, secret: &str) -> Result<Option<StoredToken>, sqlx::Error> {
    let digest = hash(secret);
    #[derive(sqlx::FromRow)]
    struct Row {
        token_id: Uuid,
        name: String,
        token_hash: Vec<u8>,
        scopes: Vec<String>,
        revoked: bool,
    }
    // One round trip: the lookup and the (rare) note of its use.
    let row: Option<Row> = sqlx::query_as(
        "WITH t AS (SELECT token_id, name, token_hash, scopes, revoked_at IS NOT NULL AS revoked
                    FROM api_tokens WHERE token_hash = $1),
              used AS (UPDATE api_tokens a SET last_used_at = now() FROM t
                       WHERE a.token_id = t.token_id AND NOT t.revoked
                         AND (a.last_used_at IS NULL OR a.last_used_at < now() - interval '1 minute'))
         SELECT token_id, name, token_hash, scopes, revoked FROM t",
    )
    .bind(digest.as_slice())
    .fetch_optional(pool)
    .await?;
    // The lookup is by hash; comparing again in constant time costs nothing and keeps the
    // check honest if the lookup ever changes (e.g. to a prefix index).
    let Some(Row {
        token_id,
        name,
        token_hash,
        scopes,
        revoked,
    }) = row
    else {
        return Ok(None);
    };
    if !bool::from(token_hash.as_slice().ct_eq(digest.as_slice())) {
        return Ok(None);
    }
    Ok(Some(StoredToken {
        token_id,
        name,
        scopes: scopes.iter().filter_map(|s| Scope::parse(s)).collect(),
        revoked,
    }))
}

/// What `tokens create` prints: the secret alone on the last line.
pub fn created_report(name: &str, scopes: &[Scope], secret: &str) -> String {
    let list: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
    format!(
        "created token {name:?} with scopes {}\nstore it now; it is not shown again (only its SHA-256 is kept):\n{secret}\n",
        list.join(",")
    )
}

/// What `tokens list` prints: one line per token, never a secret.
pub fn list_report(tokens: &[TokenInfo]) -> String {
    if tokens.is_empty() {
        return "no tokens; create one with `adopt-worker tokens create --name NAME --scopes enqueue,read`\n".into();
    }
    let when = |t: Option<DateTime<Utc>>| {
        t.map_or("-".to_string(), |t| {
            t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
        })
    };
    let mut out = format!(
        "{:<24} {:<20} {:<20} {:<20} {}\n",
        "NAME", "SCOPES", "CREATED", "LAST USED", "REVOKED"
    );
    for t in tokens {
        out.push_str(&format!(
            "{:<24} {:<20} {:<20} {:<20} {}\n",
            t.name,
            t.scopes.join(","),
            when(Some(t.created_at)),
            when(t.last_used_at),
            when(t.revoked_at),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_have_the_prefix_and_shape() {
        let s = new_secret();
        assert!(looks_like_token(&s), "{s}");
        assert!(!looks_like_token("adw_short"));
        assert!(!looks_like_token(&s.replacen("adw_", "xyz_", 1)));
        assert_ne!(new_secret(), s);
    }

    #[test]
    fn scopes_parse_and_reject_unknown_ones() {
        let s = parse_scopes(&["read,enqueue".into(), "read".into()]).unwrap();
        assert_eq!(s, vec![Scope::Enqueue, Scope::Read]);
        assert!(matches!(
            parse_scopes(&["reed".into()]),
            Err(TokenError::BadScope(_))
        ));
        assert!(matches!(parse_scopes(&[]), Err(TokenError::NoScopes)));
    }
}
