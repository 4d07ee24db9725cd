//! audit_logs partitions.

use super::*;

// ---------------------------------------------------------------- audit partitions

/// The names listed after `label` in a `jobs run` line ("created: a, b; ...").
fn listed(out: &str, label: &str) -> Vec<String> {
    out.split("; ")
        .flat_map(|part| part.split_once(label).map(|(_, rest)| rest.trim()))
        .flat_map(|rest| rest.split(", "))
        .map(str::to_string)
        .collect()
}

async fn partition_of(pool: &PgPool, action: &str) -> String {
    sqlx::query_scalar("SELECT tableoid::regclass::text FROM audit_logs WHERE action = $1")
        .bind(action)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn audit_partitions(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = 'audit_logs'::regclass ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn audit_row(pool: &PgPool, action: &str, ts: &str) {
    sqlx::query(
        "INSERT INTO audit_logs (service, action, category, \"timestamp\") VALUES ('test', $1, 'test', $2)",
    )
    .bind(action)
    .bind(naive(ts))
    .execute(pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn audit_partitions_are_created_ahead_old_ones_dropped_and_default_rows_moved() {
    let db = TestDb::new().await;
    // Rows that arrived before their month's partition existed sit in the default.
    audit_row(&db.pool, "EARLY_MAY", "2026-05-03T10:00:00Z").await;
    audit_row(&db.pool, "FAR_FUTURE", "2027-01-01T00:00:00Z").await;
    assert_eq!(
        partition_of(&db.pool, "EARLY_MAY").await,
        "audit_logs_default"
    );
    // Old partitions, one named like ours, one not, and one within the retention.
    for ddl in [
        "CREATE TABLE audit_logs_y2023m06 PARTITION OF audit_logs FOR VALUES FROM ('2023-06-01') TO ('2023-07-01')",
        "CREATE TABLE audit_logs_archive_2022 PARTITION OF audit_logs FOR VALUES FROM ('2022-01-01') TO ('2023-01-01')",
        "CREATE TABLE audit_logs_y2024m05 PARTITION OF audit_logs FOR VALUES FROM ('2024-05-01') TO ('2024-06-01')",
    ] {
        sqlx::query(ddl).execute(&db.pool).await.unwrap();
    }
    audit_row(&db.pool, "OLD", "2023-06-15T00:00:00Z").await;

    // Three processes at once, different slots: the advisory lock serialises them.
    let spawn = |now: &str| {
        let mut cmd = tokio::process::Command::from(bin());
        cmd.args(["jobs", "run", "audit-partitions", "--now", now])
            .env("DATABASE_URL", &db.url)
            .env("RUST_LOG", "warn");
        cmd.output()
    };
    let (a, b, c) = tokio::join!(
        spawn("2026-03-15T12:00:00Z"),
        spawn("2026-03-15T12:00:01Z"),
        spawn("2026-03-15T12:00:02Z")
    );
    let outs: Vec<String> = [a.unwrap(), b.unwrap(), c.unwrap()]
        .iter()
        .map(|o| {
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            String::from_utf8_lossy(&o.stdout).to_string()
        })
        .collect();
    // Each month is created once, by whichever process got the lock first.
    let mut created: Vec<String> = outs.iter().flat_map(|o| listed(o, "created: ")).collect();
    created.sort();
    assert_eq!(
        created,
        [
            "audit_logs_y2026m03",
            "audit_logs_y2026m04",
            "audit_logs_y2026m05",
            "audit_logs_y2026m06"
        ],
        "{outs:?}"
    );
    let mut dropped: Vec<String> = outs.iter().flat_map(|o| listed(o, "dropped: ")).collect();
    dropped.sort();
    assert_eq!(
        dropped,
        ["audit_logs_y2023m06", "audit_logs_y2024m01"],
        "past the 24 months, named like ours: {outs:?}"
    );
    assert_eq!(
        outs.iter()
            .filter(|o| o.contains("rows_moved_from_default=1"))
            .count(),
        1
    );
    assert_eq!(
        audit_partitions(&db.pool).await,
        [
            "audit_logs_archive_2022",
            "audit_logs_default",
            "audit_logs_y2024m05",
            "audit_logs_y2026m03",
            "audit_logs_y2026m04",
            "audit_logs_y2026m05",
            "audit_logs_y2026m06",
        ],
        "current + 3 months exist; only our names are dropped"
    );
    assert_eq!(
        partition_of(&db.pool, "EARLY_MAY").await,
        "audit_logs_y2026m05"
    );
    assert_eq!(
        partition_of(&db.pool, "FAR_FUTURE").await,
        "audit_logs_default"
    );
    let old: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_logs WHERE action = 'OLD'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(old, 0, "dropped with its partition");

    // A new row for next month lands in its own partition; the indexes came along.
    audit_row(&db.pool, "NEXT_MONTH", "2026-04-02T08:00:00Z").await;
    assert_eq!(
        partition_of(&db.pool, "NEXT_MONTH").await,
        "audit_logs_y2026m04"
    );
    let indexes: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_indexes WHERE tablename = 'audit_logs_y2026m04'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(indexes, 6, "primary key + the five audit_logs indexes");

    // A month later, one more partition; nothing else changes.
    let report = run(&jobs(&db), JobName::AuditPartitions, "2026-04-01T00:00:00Z").await;
    assert_eq!(report.detail, "created: audit_logs_y2026m07", "{report}");
}
