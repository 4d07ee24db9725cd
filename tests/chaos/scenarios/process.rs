//! Worker processes: none failing (the control), SIGKILLed, SIGTERMed.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::harness::Run;
use crate::report::secs;
use crate::smtp_server::{Command, Rule};

const ROWS: usize = 10_000;

/// No fault: the baseline. Three processes, every row exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "chaos suite: run with scripts/chaos"]
async fn control_no_faults() {
    let run = Run::start("control", ROWS, 3).await;
    run.until_delivered(1.0, Duration::from_secs(120)).await;
    run.finish(None).await.save_and_assert();
}

/// Twelve rounds of SIGKILL spread over the drain: eleven kill one process in turn, the
/// last kills all three at once; each killed process is restarted at once (14 kills). A
/// killed process's claimed rows stay `sending` until the 3 s lease runs out; the rows it
/// had handed to SMTP may have been delivered already, so they may come twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "chaos suite: run with scripts/chaos"]
async fn sigkill_workers_repeatedly() {
    const ROUNDS: usize = 12;
    let mut run = Run::start("sigkill", ROWS, 3).await;
    let mut kills = 0;
    for k in 0..ROUNDS {
        if !run
            .progress_to(0.05 + 0.70 * k as f64 / ROUNDS as f64)
            .await
        {
            break;
        }
        let victims: Vec<usize> = if k + 1 == ROUNDS {
            (0..run.fleet.len()).collect()
        } else {
            vec![k % run.fleet.len()]
        };
        let at = Instant::now();
        let (at_db, mut in_flight) = run.sending().await;
        for &v in &victims {
            run.fleet.kill(v).await;
        }
        kills += victims.len();
        // Rows claimed between the first snapshot and the kill.
        in_flight.extend(run.sending().await.1);
        for &v in &victims {
            run.fleet.respawn(v);
        }
        run.fault(
            format!("SIGKILL worker(s) {victims:?}, restarted"),
            at,
            Instant::now(),
            at_db,
            in_flight,
        );
    }
    run.notes.push(format!("{kills} processes killed"));
    run.finish(None).await.save_and_assert();
}

/// SIGTERM mid-drain: first all three processes at once, while every send takes 200 ms so
/// dozens are in flight (each process must exit 0 and leave nothing `sending`; every
/// message the server accepted is recorded `sent`), then a rolling restart, one process at
/// a time. A graceful stop finishes or releases every claimed row, so it explains no
/// duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "chaos suite: run with scripts/chaos"]
async fn sigterm_during_drain() {
    let mut run = Run::start("sigterm", ROWS, 3).await;
    let mut slowest = Duration::ZERO;
    if run.progress_to(0.2).await {
        run.smtp
            .add_rule(Rule::delay(Command::DataEnd, Duration::from_millis(200)));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let at = Instant::now();
        let (at_db, sending) = run.sending().await;
        let accepted = run.delivered();
        let exits = run.fleet.stop_all(Duration::from_secs(40)).await;
        run.smtp.clear_rules();
        run.notes.push(format!(
            "{} rows sending at the SIGTERM to all, {} messages accepted during the grace period",
            sending.len(),
            run.delivered() - accepted
        ));
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
