//! One scenario's run: a fresh database with the rows, the test SMTP server, the worker
//! processes, a sampler of delivered messages, and the ledger of faults. [`Run::finish`]
//! waits for the queue to settle and turns it all into a [`Report`].

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::NaiveDateTime;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::cluster::Cluster;
use crate::fleet::{Fleet, SMTP_TIMEOUT};
use crate::helpers::TestDb;
use crate::report::{Report, secs};
use crate::smtp_server::TestSmtp;

/// How long a scenario may take to settle after its last fault before it counts as hung.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(120);

/// A fault injected during the run.
pub struct Fault {
    pub what: String,
    /// When it began and when its cause was lifted (the same for instant faults).
    pub at: Instant,
    pub lifted: Instant,
    /// The database clock when it began, to compare with `sent_at`.
    pub at_db: NaiveDateTime,
    /// Rows in `sending` around the fault: sends that may have reached the server without
    /// the worker recording it.
    pub in_flight: HashSet<Uuid>,
}

/// What a scenario accepts as a final state other than `sent` (e.g. rows rejected with an
/// injected 5xx); `None` means only `sent` is acceptable.
pub type LegitFinal = Option<Box<dyn Fn(&str, &str) -> bool>>;

pub struct Run {
    pub name: &'static str,
    pub rows: usize,
    pub cluster: Cluster,
    pub db: TestDb,
    pub smtp: Arc<TestSmtp>,
    pub fleet: Fleet,
    pub faults: Vec<Fault>,
    /// Free-form lines for the report (what the scenario did, extra figures).
    pub notes: Vec<String>,
    /// Failed checks specific to the scenario.
    pub problems: Vec<String>,
    samples: Arc<Mutex<Vec<(Instant, usize)>>>,
    sampler: tokio::task::JoinHandle<()>,
    pub started: Instant,
}

impl Run {
    /// A database with `rows` queued rows (a mix of types and priorities, NULL
    /// `max_retries` so `retry.default_max_retries` applies), the SMTP server, and `procs`
    /// worker processes started.
    pub async fn start(name: &'static str, rows: usize, procs: usize) -> Run {
        let cluster = Cluster::private().await;
        let db = TestDb::new().await;
        insert_rows(&db, rows).await;
        let smtp = Arc::new(TestSmtp::start().await);
        let mut fleet = Fleet::new(name, &db.url, &smtp.url(), out_dir().join("logs"));
        let samples: Arc<Mutex<Vec<(Instant, usize)>>> = Arc::default();
        let sampler = {
            let smtp = smtp.clone();
            let samples = samples.clone();
            tokio::spawn(async move {
                loop {
                    let n = smtp.message_count();
                    samples.lock().unwrap().push((Instant::now(), n));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
        };
        let started = Instant::now();
        fleet.start(procs);
        println!("[{name}] {rows} rows, {procs} worker processes");
        Run {
            name,
            rows,
            cluster,
            db,
            smtp,
            fleet,
            faults: Vec::new(),
            notes: Vec::new(),
            problems: Vec::new(),
            samples,
            sampler,
            started,
        }
    }

    /// Messages the SMTP server has accepted so far (duplicates included).
    pub fn delivered(&self) -> usize {
        self.smtp.message_count()
    }

    /// Waits until the server accepted `fraction` of the rows; false after `timeout`.
    pub async fn until_delivered(&self, fraction: f64, timeout: Duration) -> bool {
        let want = (self.rows as f64 * fraction).ceil() as usize;
        let deadline = Instant::now() + timeout;
        while self.delivered() < want {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    /// Waits for `fraction` of the rows, or records a problem (the drain stalled).
    pub async fn progress_to(&mut self, fraction: f64) -> bool {
        if self
            .until_delivered(fraction, Duration::from_secs(90))
            .await
        {
            return true;
        }
        self.problems.push(format!(
            "stalled: {} of {} delivered while waiting for {:.0}%",
            self.delivered(),
            self.rows,
            fraction * 100.0
        ));
        false
    }

    /// The database clock and the rows in `sending`, on the test's own pool.
    pub async fn sending(&self) -> (NaiveDateTime, HashSet<Uuid>) {
        let mut conn = self.connect_retrying().await;
        sending_on(&mut conn).await
    }

    /// A connection of the test's own, retried while the server restarts.
    pub async fn connect_retrying(&self) -> PgConnection {
        self.cluster
            .connect_retrying(&self.db.name, Duration::from_secs(60))
            .await
    }

    pub fn fault(
        &mut self,
        what: impl Into<String>,
        at: Instant,
        lifted: Instant,
        at_db: NaiveDateTime,
        in_flight: HashSet<Uuid>,
    ) {
        let what = what.into();
        println!(
            "[{}] t={:>5.1}s fault: {what} ({} in flight, {} delivered)",
            self.name,
            at.duration_since(self.started).as_secs_f64(),
            in_flight.len(),
            self.delivered(),
        );
        self.faults.push(Fault {
            what,
            at,
            lifted,
            at_db,
            in_flight,
        });
    }

    /// Waits until no row is `queued` or `sending`, stops the workers with SIGTERM
    /// (each must exit 0), and checks every row: lost, duplicates, explanations.
    pub async fn finish(mut self, legit_final: LegitFinal) -> Report {
        let drained_at = self.settle().await;
        let exits = self.fleet.stop_all(Duration::from_secs(40)).await;
        for (i, exit) in exits.iter().enumerate() {
            match exit {
                Some((status, _)) if status.success() => {}
                Some((status, _)) => self
                    .problems
                    .push(format!("worker {i} exited with {status} after SIGTERM")),
                None => self
                    .problems
                    .push(format!("worker {i} did not exit within 40 s of SIGTERM")),
            }
        }
        self.sampler.abort();
        let mut conn = self.connect_retrying().await;
        let rows: Vec<(Uuid, String, Option<String>)> = sqlx::query_as(
            "SELECT email_id, status::text, failure_reason FROM email_queue ORDER BY created_at",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap();
        let mut received: HashMap<Uuid, usize> = HashMap::new();
        for m in self.smtp.messages() {
            match m.header("Message-ID").as_deref().and_then(email_id) {
                Some(id) => *received.entry(id).or_default() += 1,
                None => self
                    .problems
                    .push(format!("a message without a usable Message-ID: {m:?}")),
            }
        }
        // Each copy the server accepted without the worker seeing its 250 in time explains
        // one extra copy. A 250 held back for less than the workers' SMTP timeout reached a
        // worker still waiting for it: that is no excuse for sending the message again.
        let mut unconfirmed: HashMap<Uuid, usize> = HashMap::new();
        for u in self.smtp.unconfirmed() {
            if u.reply_delay.is_none_or(|d| d >= SMTP_TIMEOUT)
                && let Some(id) = u.message.header("Message-ID").as_deref().and_then(email_id)
            {
                *unconfirmed.entry(id).or_default() += 1;
            }
        }

        let mut report = Report::new(self.name, rows.len());
        report.faults = self.faults.len();
        let mut finals: HashMap<String, usize> = HashMap::new();
        for (id, status, reason) in &rows {
            let reason = reason.as_deref().unwrap_or("");
            let ok = match status.as_str() {
                "sent" => received.contains_key(id),
                other => legit_final.as_ref().is_some_and(|f| f(other, reason)),
            };
            if !ok {
                report.lost += 1;
                if report.lost <= 5 {
                    self.problems.push(format!(
                        "lost: {id} ended {status} ({reason}), received {} time(s)",
                        received.get(id).copied().unwrap_or(0)
                    ));
                }
            } else if status != "sent" {
                report.legit_final += 1;
                *finals.entry(status.clone()).or_default() += 1;
            }
        }
        if !finals.is_empty() {
            let mut f: Vec<_> = finals.into_iter().collect();
            f.sort();
            let f: Vec<String> = f.iter().map(|(s, n)| format!("{n} {s}")).collect();
            self.notes
                .push(format!("legitimately final: {}", f.join(", ")));
        }
        let known: HashSet<Uuid> = rows.iter().map(|r| r.0).collect();
        for id in received.keys().filter(|id| !known.contains(id)) {
            self.problems
                .push(format!("received a message for unknown row {id}"));
        }

        // Each fault a row was in flight at explains one extra copy of it.
        let mut in_flight: HashMap<Uuid, usize> = HashMap::new();
        for id in self.faults.iter().flat_map(|f| f.in_flight.iter()) {
            *in_flight.entry(*id).or_default() += 1;
        }
        let mut unexplained = Vec::new();
        for (id, n) in &received {
            if *n < 2 {
                continue;
            }
            report.duplicates += 1;
            report.extra_copies += n - 1;
            let excuses =
                in_flight.get(id).copied().unwrap_or(0) + unconfirmed.get(id).copied().unwrap_or(0);
            if n - 1 <= excuses {
                report.explained += 1;
            } else {
                unexplained.push((*id, *n, excuses));
            }
        }
        for (id, n, excuses) in unexplained.iter().take(5) {
            self.problems.push(format!(
                "unexplained duplicate: {id} received {n} times, but in flight at a fault or \
                 unconfirmed by the server only {excuses} time(s)"
            ));
        }
        if !unconfirmed.is_empty() {
            self.notes.push(format!(
                "{} messages accepted with the 250 withheld or later than the SMTP timeout; {} of them delivered again",
                unconfirmed.values().sum::<usize>(),
                unconfirmed
                    .keys()
                    .filter(|id| received.get(id).copied().unwrap_or(0) > 1)
                    .count()
            ));
        }

        let samples = self.samples.lock().unwrap().clone();
        let end = drained_at.unwrap_or_else(Instant::now);
        for f in &self.faults {
            let r = recovery(&samples, f, end, self.started);
            report.recovery_max = report.recovery_max.max(r);
            let settled = if f.in_flight.is_empty() {
                Duration::ZERO
            } else {
                in_flight_settled(&mut conn, f).await
            };
            report.settled_max = report.settled_max.max(settled);
            println!(
                "[{}] t={:>5.1}s {}: throughput back after {}, its {} in-flight rows final after {}",
                self.name,
                f.at.duration_since(self.started).as_secs_f64(),
                f.what,
                secs(r),
                f.in_flight.len(),
                secs(settled),
            );
        }
        report.drained_in = drained_at.map(|t| t.duration_since(self.started));
        report.processes = self.fleet.spawned();
        report.notes = std::mem::take(&mut self.notes);
        report.problems = std::mem::take(&mut self.problems);
        report
    }

    /// Waits until no row is `queued` or `sending`; `None` if that did not happen in time.
    async fn settle(&mut self) -> Option<Instant> {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        loop {
            let mut conn = self.connect_retrying().await;
            let open: Vec<(String, i64)> = sqlx::query_as(
                "SELECT status::text, count(*) FROM email_queue
                 WHERE status IN ('queued', 'sending') GROUP BY 1",
            )
            .fetch_all(&mut conn)
            .await
            .unwrap_or_else(|_| vec![("unknown".into(), 1)]);
            if open.is_empty() {
                return Some(Instant::now());
            }
            if Instant::now() >= deadline {
                self.problems.push(format!(
                    "hung: {open:?} still open {}s after the drain should have ended",
                    SETTLE_TIMEOUT.as_secs()
                ));
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The database clock and the rows in `sending`, in one statement.
pub async fn sending_on(conn: &mut PgConnection) -> (NaiveDateTime, HashSet<Uuid>) {
    let (now, ids): (NaiveDateTime, Vec<Uuid>) = sqlx::query_as(
        "SELECT clock_timestamp() AT TIME ZONE 'UTC',
                ARRAY(SELECT email_id FROM email_queue WHERE status = 'sending')",
    )
    .fetch_one(conn)
    .await
    .unwrap();
    (now, ids.into_iter().collect())
}

/// `<3f6c...@adoptdontshop.com>` → the row's `email_id`.
fn email_id(message_id: &str) -> Option<Uuid> {
    let inner = message_id.trim().strip_prefix('<')?;
    let (id, _) = inner.split_once('@')?;
    Uuid::parse_str(id).ok()
}

/// Time from the fault being lifted until delivery ran again at half the rate it had in
/// the two seconds before the fault (measured over 500 ms windows), or until the queue
/// drained if that came first.
fn recovery(samples: &[(Instant, usize)], f: &Fault, end: Instant, started: Instant) -> Duration {
    let count_at = |t: Instant| {
        samples
            .iter()
            .take_while(|(at, _)| *at <= t)
            .last()
            .map_or(0, |(_, n)| *n)
    };
    let window = Duration::from_millis(500);
    let before = f.at.checked_sub(Duration::from_secs(2)).unwrap_or(started);
    let span = f.at.duration_since(before).as_secs_f64();
    let mut rate = if span >= 0.5 {
        (count_at(f.at) - count_at(before)) as f64 / span
    } else {
        0.0
    };
    if rate <= 0.0 {
        // A fault right at the start: compare with the whole run's average instead.
        let total = samples.last().map_or(0, |s| s.1) as f64;
        rate = total / end.duration_since(started).as_secs_f64().max(0.001);
    }
    let need = rate * 0.5 * window.as_secs_f64();
    for (i, (t, n)) in samples.iter().enumerate() {
        if *t < f.lifted {
            continue;
        }
        if *t + window > end {
            break;
        }
        if let Some((_, m)) = samples[i..].iter().find(|(u, _)| *u >= *t + window)
            && (m - n) as f64 >= need
        {
            return t.duration_since(f.lifted);
        }
    }
    end.saturating_duration_since(f.lifted)
}

/// Time from the fault until the last row in flight at it reached a final state.
async fn in_flight_settled(conn: &mut PgConnection, f: &Fault) -> Duration {
    let ids: Vec<Uuid> = f.in_flight.iter().copied().collect();
    let last: Option<NaiveDateTime> = sqlx::query_scalar(
        "SELECT max(COALESCE(sent_at, updated_at)) FROM email_queue WHERE email_id = ANY($1)",
    )
    .bind(&ids)
    .fetch_one(conn)
    .await
    .unwrap();
    last.and_then(|t| (t - f.at_db).to_std().ok())
        .unwrap_or_default()
}

/// `rows` rows as other services insert them: plain SQL, distinct recipients, every type
/// and priority, NULL `max_retries`.
async fn insert_rows(db: &TestDb, rows: usize) {
    sqlx::query(
        "INSERT INTO email_queue (from_email, from_name, to_email, to_name, subject, html_content,
             text_content, type, priority, max_retries)
         SELECT 'noreply@adoptdontshop.com', 'Adopt Don''t Shop',
                'adopter' || i || '@example.com', 'Adopter ' || i,
                'Update on your application #' || i,
                '<p>Hello, there is news about application <b>#' || i || '</b>.</p>',
                'Hello, there is news about application #' || i || '.',
                (ARRAY['transactional','notification','marketing','system'])[1 + i % 4]::email_type_enum,
                (ARRAY['low','normal','normal','high','urgent'])[1 + i % 5]::email_priority_enum,
                NULL
         FROM generate_series(1, $1) AS i",
    )
    .bind(rows as i64)
    .execute(&db.pool)
    .await
    .unwrap();
}

/// Where logs, result rows and the table go: `CHAOS_OUT`, else `target/chaos`.
pub fn out_dir() -> PathBuf {
    std::env::var_os("CHAOS_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/chaos"))
}
