//! PostgreSQL faults: the server restarted, the workers' backends terminated, every
//! connection slot taken by another client. A send whose result cannot be written before
//! its lease runs out is taken back and may be sent again: such rows were `sending` at the
//! fault.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use futures::future::join_all;
use sqlx::{Connection, PgConnection};

use crate::cluster::max_connections;
use crate::harness::{Run, sending_on};
use crate::report::secs;

const ROWS: usize = 10_000;

/// `pg_ctl restart -m fast` twice mid-drain (every session is cut and the server is gone
/// for a second or two), then the server stopped for 6 s, twice the lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "chaos suite: run with scripts/chaos"]
async fn pg_restart_mid_drain() {
    const OUTAGE: Duration = Duration::from_secs(6);
    let mut run = Run::start("pg_restart", ROWS, 3).await;
    let mut down_max = Duration::ZERO;
    for frac in [0.2, 0.5] {
        if !run.progress_to(frac).await {
            break;
        }
        let at = Instant::now();
        let (at_db, mut in_flight) = run.sending().await;
        let cluster = run.cluster.clone();
        let down = tokio::task::spawn_blocking(move || cluster.restart())
            .await
            .unwrap();
        down_max = down_max.max(down);
        let lifted = Instant::now();
        // Rows claimed between the snapshot and the shutdown are still `sending` now.
        in_flight.extend(run.sending().await.1);
        run.fault(
            format!("PostgreSQL restarted (-m fast), {}", secs(down)),
            at,
            lifted,
            at_db,
            in_flight,
        );
    }
    // Then down for longer than the lease: results cannot be written, claims fail, and
    // when the server is back the reaper and the result writes race for the same rows.
    if run.progress_to(0.75).await {
        let at = Instant::now();
        let (at_db, mut in_flight) = run.sending().await;
        let cluster = run.cluster.clone();
        tokio::task::spawn_blocking(move || cluster.stop())
            .await
            .unwrap();
        tokio::time::sleep(OUTAGE).await;
        let cluster = run.cluster.clone();
        tokio::task::spawn_blocking(move || cluster.start())
            .await
            .unwrap();
        let lifted = Instant::now();
        in_flight.extend(run.sending().await.1);
        run.fault(
            format!("PostgreSQL stopped for {}, then started", secs(OUTAGE)),
            at,
            lifted,
            at_db,
            in_flight,
        );
    }
    run.notes
        .push(format!("pg_ctl restart took up to {}", secs(down_max)));
    run.finish(None).await.save_and_assert();
}

/// Ten times, every connection of the workers (pools and LISTEN) is terminated with
/// `pg_terminate_backend`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "chaos suite: run with scripts/chaos"]
async fn pg_terminate_backends_repeatedly() {
    const ROUNDS: usize = 10;
    let mut run = Run::start("pg_terminate", ROWS, 3).await;
    let mut conn = run.connect_retrying().await;
    let mut terminated = 0;
    for k in 0..ROUNDS {
        if !run
            .progress_to(0.05 + 0.70 * k as f64 / ROUNDS as f64)
            .await
        {
            break;
        }
        let at = Instant::now();
        let (at_db, ids, killed): (chrono::NaiveDateTime, Vec<uuid::Uuid>, i64) = sqlx::query_as(
            "SELECT clock_timestamp() AT TIME ZONE 'UTC',
                    ARRAY(SELECT email_id FROM email_queue WHERE status = 'sending'),
                    (SELECT count(*) FILTER (WHERE terminated) FROM (
                        SELECT pg_terminate_backend(pid) AS terminated FROM pg_stat_activity
                        WHERE datname = current_database() AND application_name = 'adopt-worker'
                     ) t)",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        if killed == 0 {
            run.problems
                .push(format!("round {k}: no worker connection to terminate"));
        }
        terminated += killed;
        let mut in_flight: HashSet<uuid::Uuid> = ids.into_iter().collect();
        tokio::time::sleep(Duration::from_millis(100)).await;
        in_flight.extend(sending_on(&mut conn).await.1);
        run.fault(
            format!("pg_terminate_backend on {killed} worker connections"),
            at,
            at,
            at_db,
            in_flight,
        );
    }
    run.notes.push(format!(
        "{terminated} worker connections terminated in {ROUNDS} rounds"
    ));
    run.finish(None).await.save_and_assert();
}

/// Twice, another client takes every connection slot of the server for 4 s. The workers'
/// connections are terminated at the start and every 100 ms, so their pools have to
/// reconnect into a full server ("too many clients already"); the other client grabs each
/// freed slot with several connection attempts at once, so it wins nearly every race.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "chaos suite: run with scripts/chaos"]
async fn pg_exhausted_connection_slots_taken_by_another_client() {
    const WINDOW: Duration = Duration::from_secs(4);
    let mut run = Run::start("pg_exhausted", ROWS, 3).await;
    let mut held_max = 0;
    let mut worker_conns: Vec<i64> = Vec::new();
    let mut during = Vec::new();
    for frac in [0.2, 0.5] {
        if !run.progress_to(frac).await {
            break;
        }
        let at = Instant::now();
        let mut control = run.connect_retrying().await;
        let (at_db, mut in_flight) = sending_on(&mut control).await;
        let limit = max_connections(&mut control).await;
        let mut hog: Vec<PgConnection> = Vec::new();
        let delivered_before = run.delivered();
        let until = Instant::now() + WINDOW;
        let mut next_cut = Instant::now();
        while Instant::now() < until {
            let mut attempts = 4;
            if Instant::now() >= next_cut {
                let cut = terminate_workers(&mut control).await;
                worker_conns.push(cut);
                attempts += cut as usize;
                next_cut = Instant::now() + Duration::from_millis(100);
            }
            loop {
                let got = join_all((0..attempts).map(|_| run.cluster.connect("postgres"))).await;
                let before = hog.len();
                hog.extend(got.into_iter().flatten());
                if hog.len() == before {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        held_max = held_max.max(hog.len());
        in_flight.extend(sending_on(&mut control).await.1);
        during.push(run.delivered() - delivered_before);
        for c in hog {
            let _ = c.close().await;
        }
        control.close().await.ok();
        run.fault(
            format!("all {limit} connection slots taken for {}", secs(WINDOW)),
            at,
            Instant::now(),
            at_db,
            in_flight,
        );
    }
    let cuts = worker_conns.len().max(1) as f64;
    run.notes.push(format!(
        "another client held up to {held_max} connections; the workers had {:.1} connections \
         on average when cut (every 100 ms); messages accepted during the two windows: {during:?}",
        worker_conns.iter().sum::<i64>() as f64 / cuts
    ));
    run.finish(None).await.save_and_assert();
}

async fn terminate_workers(conn: &mut PgConnection) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FILTER (WHERE terminated) FROM (
             SELECT pg_terminate_backend(pid) AS terminated FROM pg_stat_activity
             WHERE datname = current_database() AND application_name = 'adopt-worker'
         ) t",
    )
    .fetch_one(conn)
    .await
    .unwrap_or(0)
}
