//! The PostgreSQL pool and migrations. Every connection runs in UTC because the seed's
//! timestamps carry no time zone.

use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use sqlx::migrate::{MigrateDatabase, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode};
use sqlx::{PgPool, Postgres};

pub mod lenient;

/// The project's migrations: the seed schema, then the worker's own additions.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("invalid database URL {url}: {source}")]
    BadUrl { url: String, source: sqlx::Error },
    #[error("cannot reach the database at {url}: {source}")]
    Unreachable { url: String, source: sqlx::Error },
    #[error("cannot create database at {url}: {source}")]
    Create { url: String, source: sqlx::Error },
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
}

fn connect_options(url: &str) -> Result<PgConnectOptions, DbError> {
    let opts = PgConnectOptions::from_str(url).map_err(|source| DbError::BadUrl {
        url: redact_url(url),
        source,
    })?;
    let opts = if loopback_without_sslmode(url) {
        opts.ssl_mode(PgSslMode::Disable)
    } else {
        opts
    };
    Ok(opts
        .options([("TimeZone", "UTC")])
        .application_name("adopt-worker"))
}

/// A server on this host, reached over TCP, with no `sslmode` chosen (in the URL or
/// `PGSSLMODE`): sqlx's default `prefer` would encrypt loopback traffic, which protects
/// nothing and was the drain's largest cost once rendering was cheap (writing a batch of
/// rendered emails back took 46 ms with TLS, 17 without: docs/performance.md "Performance").
fn loopback_without_sslmode(url: &str) -> bool {
    if std::env::var_os("PGSSLMODE").is_some() {
        return false;
    }
    let Ok(parsed) = url::Url::parse(url) else {
        return false;
    };
    if parsed
        .query_pairs()
        .any(|(k, _)| k == "sslmode" || k == "ssl-mode")
    {
        return false;
    }
    match parsed.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        // `postgres:` is not a special scheme: an IPv4 address comes as an opaque host.
        Some(url::Host::Domain(d)) => {
            d.eq_ignore_ascii_case("localhost")
                || d.parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        None => false,
    }
}

/// A lazily connecting pool: the process starts even while the database is down, and
/// every use reconnects.
pub fn pool(settings: &DatabaseSettings) -> Result<PgPool, DbError> {
    Ok(PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(Duration::from_secs(settings.acquire_timeout_secs))
        .connect_lazy_with(connect_options(&settings.url)?))
}

/// Connects now, failing with one readable error when the server is unreachable.
pub async fn connect(settings: &DatabaseSettings) -> Result<PgPool, DbError> {
    let pool = pool(settings)?;
    sqlx::query("SELECT 1")
        .execute(&pool)
        .await
        .map_err(|source| DbError::Unreachable {
            url: redact_url(&settings.url),
            source,
        })?;
    Ok(pool)
}

/// `adopt-worker migrate`: create the database if missing, then apply migrations.
pub async fn create_and_migrate(settings: &DatabaseSettings) -> Result<MigrateReport, DbError> {
    let url = &settings.url;
    connect_options(url)?;
    let exists = Postgres::database_exists(url)
        .await
        .map_err(|source| DbError::Unreachable {
            url: redact_url(url),
            source,
        })?;
    if !exists {
        Postgres::create_database(url)
            .await
            .map_err(|source| DbError::Create {
                url: redact_url(url),
                source,
            })?;
    }
    let pool = connect(settings).await?;
    let before = applied_migrations(&pool).await.unwrap_or(0);
    MIGRATOR.run(&pool).await?;
    let after = applied_migrations(&pool).await?;
    let location = pets_location_kind(&pool).await?;
    pool.close().await;
    Ok(MigrateReport {
        created_database: !exists,
        applied: after.saturating_sub(before),
        total: after,
        pets_location: location,
    })
}

#[derive(Debug, Clone)]
pub struct MigrateReport {
    pub created_database: bool,
    pub applied: i64,
    pub total: i64,
    /// Which column type `pets.location` got: PostGIS geography or the documented fallback.
    pub pets_location: String,
}

async fn applied_migrations(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(pool)
        .await
}

/// `geography` when PostGIS was available at migration time, else `point` (fallback).
pub async fn pets_location_kind(pool: &PgPool) -> Result<String, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
         WHERE a.attrelid = 'pets'::regclass AND a.attname = 'location'",
    )
    .fetch_one(pool)
    .await
}

/// True when every migration this binary knows has been applied (readiness).
pub async fn migrations_current(pool: &PgPool) -> Result<bool, sqlx::Error> {
    let latest = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
    // A database never migrated has no bookkeeping table: every migration is pending.
    let tracked: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(pool)
        .await?;
    if !tracked {
        return Ok(latest == 0);
    }
    let applied: Option<i64> =
        sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations WHERE success")
            .fetch_one(pool)
            .await?;
    Ok(applied.unwrap_or(0) >= latest)
}

/// `[database]` in the configuration.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    pub url: String,
    pub max_connections: u32,
    pub acquire_timeout_secs: u64,
}

impl std::fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseSettings")
            .field("url", &redact_url(&self.url))
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout_secs", &self.acquire_timeout_secs)
            .finish()
    }
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`, for logs.
pub fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        Err(_) if raw.is_empty() => String::new(),
        Err(_) => "<unparseable url>".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_is_skipped_only_for_loopback_without_an_explicit_sslmode() {
        if std::env::var_os("PGSSLMODE").is_some() {
            return;
        }
        assert!(loopback_without_sslmode("postgres://u@127.0.0.1:5432/db"));
        assert!(loopback_without_sslmode("postgres://u@localhost/db"));
        assert!(loopback_without_sslmode("postgres://u@[::1]:5432/db"));
        assert!(!loopback_without_sslmode(
            "postgres://u@127.0.0.1/db?sslmode=require"
        ));
        assert!(!loopback_without_sslmode(
            "postgres://u@db.internal:5432/db"
        ));
        assert!(!loopback_without_sslmode("postgres://u@10.0.0.5/db"));
        let opts = connect_options("postgres://u@127.0.0.1/db").unwrap();
        assert!(matches!(opts.get_ssl_mode(), PgSslMode::Disable));
        let opts = connect_options("postgres://u@127.0.0.1/db?sslmode=require").unwrap();
        assert!(matches!(opts.get_ssl_mode(), PgSslMode::Require));
    }
}
