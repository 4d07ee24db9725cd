//! `audit-partitions`: monthly `audit_logs_yYYYYmMM` partitions exist for the current month
//! and `jobs.audit_partitions_months_ahead` more, and ours older than
//! `jobs.audit_retention_months` are dropped (only tables named exactly like ours).
//!
//! PostgreSQL refuses to create a partition while the default partition holds rows for its
//! range, so a new month is built as a plain table, the default's rows for that month are
//! moved into it, and it is then attached; all in one transaction. DDL runs under a
//! transaction-scoped advisory lock (concurrent runs queue, then find the work done) and a
//! lock timeout (a busy audit_logs makes this run fail, not stall the writers behind it).

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use sqlx::{PgConnection, PgPool};
use tracing::{info, warn};

use super::support;
use super::{Done, JobError, Jobs};

/// Key of the advisory lock every DDL transaction of this job takes.
const LOCK: &str = "adopt-worker:audit-partitions";
const PREFIX: &str = "audit_logs_y";

#[derive(Debug, thiserror::Error)]
enum PartitionError {
    #[error("table {0} exists but is not a partition of audit_logs; attach or rename it")]
    NotAPartition(String),
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
}

/// A calendar month (UTC, as `audit_logs."timestamp"` is).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Month {
    year: i32,
    month: u32,
}

impl Month {
    fn of(t: DateTime<Utc>) -> Month {
        Month {
            year: t.year(),
            month: t.month(),
        }
    }

    fn plus(self, months: i32) -> Month {
        let index = self.year * 12 + self.month as i32 - 1 + months;
        Month {
            year: index.div_euclid(12),
            month: index.rem_euclid(12) as u32 + 1,
        }
    }

    fn start(self) -> Option<NaiveDate> {
        NaiveDate::from_ymd_opt(self.year, self.month, 1)
    }

    fn name(self) -> String {
        format!("{PREFIX}{:04}m{:02}", self.year, self.month)
    }

    /// The month of a table named exactly like ours, else `None`.
    fn parse(name: &str) -> Option<Month> {
        let rest = name.strip_prefix(PREFIX)?;
        let (year, month) = rest.split_once('m')?;
        if year.len() != 4 || month.len() != 2 {
            return None;
        }
        if !year
            .bytes()
            .chain(month.bytes())
            .all(|b| b.is_ascii_digit())
        {
            return None;
        }
        let m = Month {
            year: year.parse().ok()?,
            month: month.parse().ok()?,
        };
        (1..=12).contains(&m.month).then_some(m)
    }
}

pub(super) async fn run(jobs: &Jobs, now: DateTime<Utc>) -> Result<Done, JobError> {
    let pool = jobs.pool();
    let current = Month::of(now);
    let ahead = jobs.settings().audit_partitions_months_ahead as i32;
    let mut created = Vec::new();
    let mut moved = 0;
    let mut problems = Vec::new();
    for i in 0..=ahead {
        let month = current.plus(i);
        match ensure(pool, month).await {
            Ok(Some(n)) => {
                info!(partition = %month.name(), moved_from_default = n, "audit_logs partition created");
                created.push(month.name());
                moved += n;
            }
            Ok(None) => {}
            Err(e) => {
                warn!(partition = %month.name(), error = %e, "could not create audit_logs partition");
                problems.push(format!("{}: {e}", month.name()));
            }
        }
    }
    // Kept: the retention's months before the current one; older ones go.
    let oldest_kept = current.plus(-(jobs.settings().audit_retention_months as i32));
    let mut dropped = Vec::new();
    for name in partitions(pool).await? {
        let Some(month) = Month::parse(&name) else {
            continue;
        };
        if month >= oldest_kept {
            continue;
        }
        match drop_partition(pool, &name).await {
            Ok(false) => {}
            Ok(true) => {
                info!(partition = %name, "expired audit_logs partition dropped");
                dropped.push(name);
            }
            Err(e) => {
                warn!(partition = %name, error = %e, "could not drop audit_logs partition");
                problems.push(format!("{name}: {e}"));
            }
        }
    }
    let notes = [
        list("created", &created),
        support::counts(&[("rows_moved_from_default", moved)]),
        list("dropped", &dropped),
        list("problems", &problems),
    ];
    Ok(Done {
        rows_affected: created.len() as u64 + dropped.len() as u64 + moved,
        detail: support::detail(notes),
        failed: !problems.is_empty(),
    })
}

fn list(label: &str, items: &[String]) -> String {
    if items.is_empty() {
        String::new()
    } else {
        format!("{label}: {}", items.join(", "))
    }
}

/// Starts a DDL transaction: the job's advisory lock and a lock timeout.
async fn begin_ddl(
    pool: &PgPool,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET LOCAL lock_timeout = '10s'")
        .execute(&mut *tx)
        .await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
        .bind(LOCK)
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

/// Creates `month`'s partition if missing. `Some(rows moved from the default partition)`
/// when it was created, `None` when it already existed.
async fn ensure(pool: &PgPool, month: Month) -> Result<Option<u64>, PartitionError> {
    let (Some(start), Some(end)) = (month.start(), month.plus(1).start()) else {
        return Ok(None);
    };
    let name = month.name();
    let mut tx = begin_ddl(pool).await?;
    if partitions(&mut *tx).await?.contains(&name) {
        return Ok(None);
    }
    let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(&name)
        .fetch_one(&mut *tx)
        .await?;
    if exists {
        return Err(PartitionError::NotAPartition(name));
    }
    // `name` is built from two integers and the dates are chrono's: safe to splice.
    let ddl = [
        format!("CREATE TABLE {name} (LIKE audit_logs INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"),
        // Lets ATTACH skip scanning the new table.
        format!(
            "ALTER TABLE {name} ADD CONSTRAINT {name}_range
             CHECK (\"timestamp\" IS NOT NULL AND \"timestamp\" >= '{start}' AND \"timestamp\" < '{end}')"
        ),
    ];
    for statement in ddl {
        sqlx::query(sqlx::AssertSqlSafe(statement))
            .execute(&mut *tx)
            .await?;
    }
    let moved = move_from_default(&mut tx, &name, start, end).await?;
    for statement in [
        format!(
            "ALTER TABLE audit_logs ATTACH PARTITION {name} FOR VALUES FROM ('{start}') TO ('{end}')"
        ),
        format!("ALTER TABLE {name} DROP CONSTRAINT {name}_range"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(statement))
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(Some(moved))
}

/// Moves the default partition's rows of `[start, end)` into the (not yet attached) table
/// `name`; PostgreSQL would otherwise refuse the attach.
async fn move_from_default(
    conn: &mut PgConnection,
    name: &str,
    start: NaiveDate,
    end: NaiveDate,
) -> Result<u64, sqlx::Error> {
    let default: Option<String> = sqlx::query_scalar(
        "SELECT partdefid::regclass::text FROM pg_partitioned_table
         WHERE partrelid = 'audit_logs'::regclass AND partdefid <> 0",
    )
    .fetch_optional(&mut *conn)
    .await?;
    let Some(default) = default else {
        return Ok(0);
    };
    // `default` comes from regclass output (quoted as needed); `name` is ours.
    let statement = format!(
        "WITH moved AS (
             DELETE FROM {default} WHERE \"timestamp\" >= $1 AND \"timestamp\" < $2 RETURNING *
         )
         INSERT INTO {name} SELECT * FROM moved"
    );
    let done = sqlx::query(sqlx::AssertSqlSafe(statement))
        .bind(start.and_time(chrono::NaiveTime::MIN))
        .bind(end.and_time(chrono::NaiveTime::MIN))
        .execute(conn)
        .await?;
    Ok(done.rows_affected())
}

/// Drops one of our partitions; false when a concurrent run already did.
async fn drop_partition(pool: &PgPool, name: &str) -> Result<bool, sqlx::Error> {
    let Some(month) = Month::parse(name) else {
        return Ok(false);
    };
    let mut tx = begin_ddl(pool).await?;
    // Re-checked under the lock: a concurrent run may have dropped it already.
    if !partitions(&mut *tx).await?.contains(&month.name()) {
        return Ok(false);
    }
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE {}", month.name())))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(true)
}

/// Names of audit_logs' partitions.
async fn partitions<'e>(exec: impl sqlx::PgExecutor<'e>) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = 'audit_logs'::regclass ORDER BY 1",
    )
    .fetch_all(exec)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_name_parse_and_step_across_years() {
        let m = Month {
            year: 2026,
            month: 11,
        };
        assert_eq!(m.name(), "audit_logs_y2026m11");
        assert_eq!(m.plus(3).name(), "audit_logs_y2027m02");
        assert_eq!(m.plus(-24).name(), "audit_logs_y2024m11");
        assert_eq!(
            Month::parse("audit_logs_y2024m01"),
            Some(Month {
                year: 2024,
                month: 1
            })
        );
        for not_ours in [
            "audit_logs_default",
            "audit_logs_y2024m13",
            "audit_logs_y2024m1",
            "audit_logs_y2024m01_old",
            "audit_logs_y20x4m01",
            "audit_logs_archive",
        ] {
            assert_eq!(Month::parse(not_ours), None, "{not_ours}");
        }
    }
}
