//! Request limits: per caller across every process (in `api_rate_limits`, migration
//! `0021`), and per client address in this process for the public routes.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sqlx::PgPool;

use super::ApiState;
use super::error::ApiError;

/// Takes one request from `key`'s bucket (`per_minute` requests, refilled continuously);
/// `Ok(Err(seconds))` when it is empty, with the seconds until a request is allowed again.
/// One statement under the row's lock, so requests on several processes count exactly.
pub async fn hit(
    pool: &PgPool,
    key: &str,
    per_minute: u32,
) -> Result<Result<(), u64>, sqlx::Error> {
    let (allowed, tokens): (bool, f64) = sqlx::query_as(
        "WITH rate AS (SELECT $2::float8 AS n)
         INSERT INTO api_rate_limits AS b (key, tokens, allowed, updated_at)
         SELECT $1, n - 1, true, now() FROM rate
         ON CONFLICT (key) DO UPDATE SET
             tokens = (SELECT CASE WHEN r.refill >= 1 THEN r.refill - 1 ELSE r.refill END
                       FROM (SELECT LEAST($2::float8, b.tokens + GREATEST(0,
                                 EXTRACT(EPOCH FROM now() - b.updated_at)) * $2::float8 / 60)
                             AS refill) r),
             allowed = (SELECT LEAST($2::float8, b.tokens + GREATEST(0,
                            EXTRACT(EPOCH FROM now() - b.updated_at)) * $2::float8 / 60) >= 1),
             updated_at = GREATEST(now(), b.updated_at)
         RETURNING b.allowed, b.tokens",
    )
    .bind(key)
    .bind(f64::from(per_minute))
    .fetch_one(pool)
    .await?;
    if allowed {
        return Ok(Ok(()));
    }
    let wait = (1.0 - tokens) * 60.0 / f64::from(per_minute.max(1));
    Ok(Err(wait.ceil().max(1.0) as u64))
}

/// Deletes buckets unused for an hour (full again by then).
pub async fn sweep(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let done =
        sqlx::query("DELETE FROM api_rate_limits WHERE updated_at < now() - interval '1 hour'")
            .execute(pool)
            .await?;
    Ok(done.rows_affected())
}

/// 429 `rate_limited` with `Retry-After`.
pub fn too_many(message: String, wait: u64) -> ApiError {
    ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message)
        .with_header(header::RETRY_AFTER, &wait.to_string())
}

/// Per client address limit of the public routes, in this process.
pub struct PublicLimiter {
    limiter: governor::DefaultKeyedRateLimiter<IpAddr>,
    per_minute: u32,
    checks: AtomicU64,
}

impl PublicLimiter {
    /// None when the limit is off (0).
    pub fn new(per_minute: u32) -> Option<PublicLimiter> {
        let n = NonZeroU32::new(per_minute)?;
        Some(PublicLimiter {
            limiter: governor::DefaultKeyedRateLimiter::keyed(governor::Quota::per_minute(n)),
            per_minute,
            checks: AtomicU64::new(0),
        })
    }

    fn check(&self, ip: IpAddr) -> Result<(), u64> {
        use governor::clock::{Clock, DefaultClock};
        // Forget addresses whose allowance has refilled, now and then, so memory stays bounded.
        if self.checks.fetch_add(1, Ordering::Relaxed) % 4096 == 4095 {
            self.limiter.retain_recent();
        }
        self.limiter.check_key(&ip).map_err(|not_until| {
            not_until
                .wait_time_from(DefaultClock::default().now())
                .as_secs()
                + 1
        })
    }
}

/// Whether `path` is one of the unauthenticated routes a mail reader fetches.
fn is_public(path: &str) -> bool {
    path.starts_with("/u/") || path.starts_with("/t/")
}

/// Middleware: `http.public_rate_per_minute` requests per client address to `/u/` and `/t/`.
pub async fn limit_public(State(state): State<ApiState>, req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    if let (Some(limiter), Some(ip), true) =
        (state.public_limiter(), peer, is_public(req.uri().path()))
        && let Err(wait) = limiter.check(ip)
    {
        return too_many(
            format!(
                "at most {} requests a minute from one address; try again in {wait} s",
                limiter.per_minute
            ),
            wait,
        )
        .into_response();
    }
    next.run(req).await
}
