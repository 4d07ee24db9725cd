//! Worker processes: none failing (the control), SIGKILLed, SIGTERMed.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::harness::Run;
use crate::report::secs;

const ROWS: usize = 10_000;

/// No fault: the baseline. Three processes, every row exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "chaos suite: run with scripts/chaos"]
async fn control_no_faults() {
    let run = Run::start("control", ROWS, 3).await;
    run.until_delivered(1.0, Duration::from_secs(120)).await;
    run.finish(None).await.save_and_assert();
}

/// Twelve SIGKILLs spread over the drain, each process in turn, each restarted at once.
/// A killed process's claimed rows stay `sending` until the 3 s lease runs out; the rows
/// it had handed to SMTP may have been delivered already, so they may come twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "chaos suite: run with scripts/chaos"]
async fn sigkill_workers_repeatedly() {
    const KILLS: usize = 12;
    let mut run = Run::start("sigkill", ROWS, 3).await;
    for k in 0..KILLS {
        if !run.progress_to(0.05 + 0.70 * k as f64 / KILLS as f64).await {
            break;
        }
        let victim = k % run.fleet.len();
        let at = Instant::now();
        let (at_db, mut in_flight) = run.sending().await;
        run.fleet.kill(victim).await;
        // Rows claimed between the first snapshot and the kill.
        in_flight.extend(run.sending().await.1);
        run.fleet.respawn(victim);
        run.fault(
            format!("SIGKILL worker {victim}, restarted"),
            at,
            Instant::now(),
            at_db,
            in_flight,
        );
    }
    run.finish(None).await.save_and_assert();
}

/// SIGTERM mid-drain: first all three processes at once (each must exit 0 and leave
/// nothing `sending`; every row the server accepted is recorded `sent`), then a rolling
/// restart, one process at a time. A graceful stop finishes or releases every claimed
/// row, so it explains no duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "chaos suite: run with scripts/chaos"]
async fn sigterm_during_drain() {
    let mut run = Run::start("sigterm", ROWS, 3).await;
    let mut slowest = Duration::ZERO;
    if run.progress_to(0.2).await {
        let at = Instant::now();
        let (at_db, _) = run.sending().await;
        let exits = run.fleet.stop_all(Duration::from_secs(40)).await;
        for (i, exit) in exits.iter().enumerate() {
            match exit {
                Some((status, took)) if status.success() => slowest = slowest.max(*took),
                other => run
                    .problems
                    .push(format!("worker {i} after SIGTERM: {other:?} (want exit 0)")),
            }
        }
        check_stopped_cleanly(&mut run).await;
        for i in 0..run.fleet.len() {
            run.fleet.respawn(i);
        }
        run.fault(
            "SIGTERM to all 3 workers, restarted",
            at,
            Instant::now(),
            at_db,
            HashSet::new(),
        );
    }
    for (k, frac) in [0.4, 0.55, 0.7].into_iter().enumerate() {
        if !run.progress_to(frac).await {
            break;
        }
        let at = Instant::now();
        let (at_db, _) = run.sending().await;
        run.fleet.terminate(k);
        match run.fleet.wait(k, Duration::from_secs(40)).await {
            Some((status, took)) if status.success() => slowest = slowest.max(took),
            other => run
                .problems
                .push(format!("worker {k} after SIGTERM: {other:?} (want exit 0)")),
        }
        run.fleet.respawn(k);
        run.fault(
            format!("SIGTERM worker {k}, restarted"),
            at,
            Instant::now(),
            at_db,
            HashSet::new(),
        );
    }
    run.notes
        .push(format!("slowest SIGTERM to exit: {}", secs(slowest)));
    run.finish(None).await.save_and_assert();
}

/// With every worker stopped: nothing `sending`, and the rows recorded `sent` are exactly
/// the messages the server accepted, each once.
async fn check_stopped_cleanly(run: &mut Run) {
    let mut conn = run.connect_retrying().await;
    let sending: i64 =
        sqlx::query_scalar("SELECT count(*) FROM email_queue WHERE status = 'sending'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    if sending > 0 {
        run.problems
            .push(format!("{sending} rows left sending after SIGTERM"));
    }
    let sent: HashSet<Uuid> =
        sqlx::query_scalar::<_, Uuid>("SELECT email_id FROM email_queue WHERE status = 'sent'")
            .fetch_all(&mut conn)
            .await
            .unwrap()
            .into_iter()
            .collect();
    let received: Vec<String> = run
        .smtp
        .messages()
        .iter()
        .filter_map(|m| m.header("Message-ID"))
        .collect();
    let unique: HashSet<&String> = received.iter().collect();
    if unique.len() != received.len() || unique.len() != sent.len() {
        run.problems.push(format!(
            "after SIGTERM: {} rows sent, {} messages accepted ({} distinct)",
            sent.len(),
            received.len(),
            unique.len()
        ));
    }
    run.notes.push(format!(
        "all 3 stopped at {} sent, {sending} sending",
        sent.len()
    ));
}
