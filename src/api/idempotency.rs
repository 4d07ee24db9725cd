//! `Idempotency-Key` for the enqueue routes (table `api_idempotency_keys`).
//!
//! Keys are per service token and live 24 hours. The first request with a key that
//! succeeds stores its response in the same transaction as the rows it inserted; a repeat
//! with the same method, path and JSON body (the parsed value, compared by the SHA-256 of
//! a canonical form: key order and spacing do not count) gets that response again, with
//! `Idempotent-Replayed: true`, and inserts nothing; a repeat with a different request is
//! 409 `idempotency_key_reused`. Failed requests store nothing (they changed nothing, so a
//! retry is safe). Two concurrent requests with one key cannot both insert: the second
//! waits on the key's unique index, finds the first's response and returns it, and its own
//! transaction is rolled back.

use axum::Json;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use super::error::ApiError;

pub const HEADER: &str = "idempotency-key";

/// How long a key is remembered.
pub const TTL_HOURS: i32 = 24;

/// A stored first response.
#[derive(Debug, Clone)]
pub struct Stored {
    request_hash: Vec<u8>,
    status: u16,
    body: Value,
}

/// The key of this request, if it sent one; 400 when it is not 1-255 visible ASCII chars.
pub fn key_from(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get(HEADER) else {
        return Ok(None);
    };
    let bad = || {
        ApiError::bad_request(
            "invalid_idempotency_key",
            "Idempotency-Key must be 1 to 255 visible ASCII characters",
        )
    };
    let s = v.to_str().map_err(|_| bad())?;
    if s.is_empty() || s.len() > 255 || !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad());
    }
    Ok(Some(s.to_string()))
}

/// What makes two requests "the same": method, path and the body's JSON value, so a
/// client that serialises the same body again (keys in another order, other spacing) gets
/// the replay. A body that is not JSON (refused, so never stored) counts by its bytes.
#[derive(Debug, Clone)]
pub struct RequestHash {
    /// SHA-256 of method, path and the body's JSON in a canonical form: what is stored.
    canonical: Vec<u8>,
    /// SHA-256 of method, path and the exact body bytes: what was stored before, still
    /// matched so that keys stored then replay.
    exact: Vec<u8>,
}

impl RequestHash {
    pub fn as_stored(&self) -> &[u8] {
        &self.canonical
    }

    fn matches(&self, stored: &[u8]) -> bool {
        bool::from(stored.ct_eq(&self.canonical)) || bool::from(stored.ct_eq(&self.exact))
    }
}

pub fn request_hash(method: &str, path: &str, body: &[u8]) -> RequestHash {
    let digest = |bytes: &[u8]| {
        let mut h = Sha256::new();
        h.update(method.as_bytes());
        h.update(b" ");
        h.update(path.as_bytes());
        h.update(b"\n");
        h.update(bytes);
        h.finalize().to_vec()
    };
    let exact = digest(body);
    let canonical = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| serde_json::to_vec(&sorted(v)).ok())
        .map_or_else(|| exact.clone(), |c| digest(&c));
    RequestHash { canonical, exact }
}

/// The value with every object's keys in sorted order (whatever order `serde_json::Map`
/// keeps), so equal JSON values serialise to equal bytes.
fn sorted(v: Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut entries: Vec<(String, Value)> = m.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

impl Stored {
    /// The stored response for a request with `hash`, or 409 if the key was used for another.
    pub fn replay(self, key: &str, hash: &RequestHash) -> Response {
        if !hash.matches(&self.request_hash) {
            return ApiError::conflict(
                "idempotency_key_reused",
                format!(
                    "Idempotency-Key {key:?} was already used in the last {TTL_HOURS} h for a different request"
                ),
            )
            .into_response();
        }
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::OK);
        let mut response = (status, Json(self.body)).into_response();
        response.headers_mut().insert(
            "idempotent-replayed",
            axum::http::HeaderValue::from_static("true"),
        );
        response
    }
}

/// The live (unexpired) response stored under this key, if any.
pub async fn lookup(
    pool: &PgPool,
    token_id: Uuid,
    key: &str,
) -> Result<Option<Stored>, sqlx::Error> {
    let row: Option<(Vec<u8>, i32, Value)> = sqlx::query_as(
        "SELECT request_hash, status_code, response FROM api_idempotency_keys
         WHERE token_id = $1 AND idempotency_key = $2
           AND created_at > now() - make_interval(hours => $3)",
    )
    .bind(token_id)
    .bind(key)
    .bind(TTL_HOURS)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(request_hash, status, body)| Stored {
        request_hash,
        status: u16::try_from(status).unwrap_or(200),
        body,
    }))
}

/// Stores the response inside the request's transaction. `Ok(None)`: stored. `Ok(Some(s))`:
/// another request with this key committed first; the caller rolls back and replays `s`.
pub async fn store(
    tx: &mut PgConnection,
    token_id: Uuid,
    key: &str,
    hash: &[u8],
    status: StatusCode,
    body: &Value,
) -> Result<Option<Stored>, sqlx::Error> {
    // An expired row under the same key is overwritten; a live one is left and returned.
    let stored = sqlx::query(
        "INSERT INTO api_idempotency_keys (token_id, idempotency_key, request_hash, response, status_code)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (token_id, idempotency_key) DO UPDATE
             SET request_hash = EXCLUDED.request_hash, response = EXCLUDED.response,
                 status_code = EXCLUDED.status_code, created_at = now()
             WHERE api_idempotency_keys.created_at <= now() - make_interval(hours => $6)",
    )
    .bind(token_id)
    .bind(key)
    .bind(hash)
    .bind(body)
    .bind(i32::from(status.as_u16()))
    .bind(TTL_HOURS)
    .execute(&mut *tx)
    .await?;
    if stored.rows_affected() == 1 {
        return Ok(None);
    }
    let row: (Vec<u8>, i32, Value) = sqlx::query_as(
        "SELECT request_hash, status_code, response FROM api_idempotency_keys
         WHERE token_id = $1 AND idempotency_key = $2",
    )
    .bind(token_id)
    .bind(key)
    .fetch_one(&mut *tx)
    .await?;
    Ok(Some(Stored {
        request_hash: row.0,
        status: u16::try_from(row.1).unwrap_or(200),
        body: row.2,
    }))
}

/// Deletes the keys past their time to live (run by [`super::ApiState::sweep_expired`]).
pub async fn sweep(pool: &sqlx::PgPool) -> Result<(), sqlx::Error> {
    sqlx::query(
        "DELETE FROM api_idempotency_keys WHERE created_at <= now() - make_interval(hours => $1)",
    )
    .bind(TTL_HOURS)
    .execute(pool)
    .await?;
    Ok(())
}
