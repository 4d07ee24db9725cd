//! The email_queue worker: an apalis worker over a custom backend whose fetch stream claims
//! due rows with the queue's claim statement, woken at once by LISTEN/NOTIFY and by a poll
//! interval for scheduled rows and missed notifications. Also `drain`, the same delivery
//! path run until nothing is due.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apalis::prelude::*;
use futures::stream::{self, BoxStream, StreamExt};
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::delivery::{Deliverer, Tally};
use crate::queue::{self, ClaimedEmail};

/// How the fetch stream claims.
#[derive(Debug, Clone)]
pub struct ClaimSettings {
    pub batch_size: u32,
    pub poll_interval: Duration,
}

/// Rows claimed by this process but not yet handed to a send task. Shared with startup so
/// that on shutdown they go straight back to `queued` instead of waiting out the lease.
#[derive(Clone, Default)]
pub struct ClaimBuffer {
    rows: Arc<Mutex<VecDeque<ClaimedEmail>>>,
    /// Held while a claim runs; `true` once shutdown has taken the buffer (no more claims).
    claiming: Arc<tokio::sync::Mutex<bool>>,
}

impl ClaimBuffer {
    fn pop(&self) -> Option<ClaimedEmail> {
        self.rows.lock().ok().and_then(|mut b| b.pop_front())
    }
    fn extend(&self, rows: Vec<ClaimedEmail>) {
        if let Ok(mut b) = self.rows.lock() {
            b.extend(rows);
        }
    }

    /// Claims up to `limit` due rows into the buffer and returns how many. The claim runs
    /// in a task of its own: once the statement is sent it may commit whatever happens to
    /// the caller, and apalis drops the fetch stream mid-claim at shutdown, so the rows must
    /// land here regardless, where shutdown releases them.
    async fn claim(&self, pool: &PgPool, limit: u32) -> Result<usize, sqlx::Error> {
        let (buffer, pool) = (self.clone(), pool.clone());
        let claim = tokio::spawn(async move {
            let closed = buffer.claiming.lock().await;
            if *closed {
                return Ok(0);
            }
            let rows = queue::claim_due(&pool, limit).await?;
            let n = rows.len();
            buffer.extend(rows);
            Ok(n)
        });
        claim
            .await
            .unwrap_or_else(|e| Err(sqlx::Error::Protocol(format!("claim task failed: {e}"))))
    }

    /// Takes every buffered row (shutdown), after waiting for a claim in flight to land;
    /// no claim starts afterwards.
    pub async fn take_all(&self) -> Vec<ClaimedEmail> {
        let mut closed = self.claiming.lock().await;
        *closed = true;
        self.rows
            .lock()
            .map(|mut b| b.drain(..).collect())
            .unwrap_or_default()
    }
}

/// A counter bumped on every NOTIFY; streams compare it before and after an empty claim so
/// a notification that lands between the claim and the wait is never missed.
#[derive(Clone)]
pub struct Wakeups {
    rx: watch::Receiver<u64>,
}

impl Wakeups {
    /// Starts one LISTEN connection for this process. It reconnects by itself, and after a
    /// reconnect wakes everyone, since notifications sent meanwhile are lost.
    pub fn listen(pool: PgPool) -> Wakeups {
        let (tx, rx) = watch::channel(0u64);
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(200);
            loop {
                match listen_once(&pool, &tx).await {
                    Ok(()) => return, // every receiver is gone
                    Err(e) => {
                        warn!(error = %e, "queue LISTEN connection lost; reconnecting");
                        tx.send_modify(|n| *n += 1);
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(10));
                    }
                }
            }
        });
        Wakeups { rx }
    }

    /// Wakeups that only ever come from the poll interval (tests, `drain`).
    pub fn none() -> Wakeups {
        let (tx, rx) = watch::channel(0u64);
        std::mem::forget(tx);
        Wakeups { rx }
    }

    fn seen(&self) -> u64 {
        *self.rx.borrow()
    }

    /// Waits for a notification newer than `seen`, or `timeout`.
    async fn wait(&mut self, seen: u64, timeout: Duration) {
        let rx = &mut self.rx;
        let _ = tokio::time::timeout(timeout, rx.wait_for(|n| *n != seen)).await;
    }
}

async fn listen_once(pool: &PgPool, tx: &watch::Sender<u64>) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(queue::NOTIFY_CHANNEL).await?;
    // Rows may have arrived while we were not listening.
    tx.send_modify(|n| *n += 1);
    loop {
        if tx.is_closed() {
            return Ok(());
        }
        let _ = listener.recv().await?;
        tx.send_modify(|n| *n += 1);
    }
}

/// The fetch stream: never ends and never yields an error or `None` (apalis treats either
/// as the end of the worker). Empty claims and database errors are waited out inside it.
fn claim_stream(
    pool: PgPool,
    settings: ClaimSettings,
    buffer: ClaimBuffer,
    wakeups: Wakeups,
) -> BoxStream<'static, Result<Option<Task<ClaimedEmail>>, BoxDynError>> {
    let state = (pool, settings, buffer, wakeups, Duration::ZERO);
    stream::unfold(
        state,
        |(pool, settings, buffer, mut wakeups, mut err_wait)| async move {
            loop {
                if let Some(row) = buffer.pop() {
                    let task = Task::new(row);
                    return Some((Ok(Some(task)), (pool, settings, buffer, wakeups, err_wait)));
                }
                let seen = wakeups.seen();
                match buffer.claim(&pool, settings.batch_size).await {
                    Ok(n) if n > 0 => {
                        err_wait = Duration::ZERO;
                        debug!(claimed = n, "claimed due rows");
                    }
                    Ok(_) => wakeups.wait(seen, settings.poll_interval).await,
                    Err(e) => {
                        err_wait = (err_wait * 2)
                            .clamp(Duration::from_millis(250), Duration::from_secs(10));
                        warn!(error = %e, retry_in = ?err_wait, "claiming due rows failed");
                        tokio::time::sleep(err_wait).await;
                    }
                }
            }
        },
    )
    .boxed()
}

async fn deliver_task(email: ClaimedEmail, deliverer: Data<Deliverer>) -> Result<(), BoxDynError> {
    deliverer.deliver(email).await;
    Ok(())
}

/// The backend's push side is unused: rows arrive by INSERT, so pushes are refused.
type RejectingSink =
    std::pin::Pin<Box<dyn futures::Sink<Task<ClaimedEmail>, Error = BoxDynError> + Send>>;

/// Everything the email worker needs; [`EmailWorker::register`] puts it on a Monitor.
#[derive(Clone)]
pub struct EmailWorker {
    pub name: String,
    pub pool: PgPool,
    pub deliverer: Deliverer,
    pub claim: ClaimSettings,
    pub concurrency: usize,
    /// Shared with startup, which releases what is left in it at shutdown.
    pub buffer: ClaimBuffer,
    pub wakeups: Wakeups,
}

impl EmailWorker {
    /// Registers the apalis worker that sends email on `monitor`. The Monitor rebuilds it
    /// if it ever stops; the shared buffer survives rebuilds.
    pub fn register(self, monitor: Monitor) -> Monitor {
        let EmailWorker {
            name,
            pool,
            deliverer,
            claim: settings,
            concurrency,
            buffer,
            wakeups,
        } = self;
        monitor.register(move |run| {
            if run > 0 {
                warn!(run, "email worker restarted");
            }
            let buffer = buffer.clone();
            let wakeups = wakeups.clone();
            let backend = BackendBuilder::new_with_cfg(settings.clone())
                .database(pool.clone())
                .fetcher(
                    move |pool: &mut PgPool, cfg: &ClaimSettings, _w: &WorkerContext| {
                        claim_stream(pool.clone(), cfg.clone(), buffer.clone(), wakeups.clone())
                    },
                )
                .sink(|_pool: &mut PgPool, _cfg: &ClaimSettings| {
                    let sink =
                        futures::sink::unfold((), |(), _task: Task<ClaimedEmail>| async move {
                            Err::<(), BoxDynError>(
                                "email_queue rows are enqueued by INSERT or the HTTP API".into(),
                            )
                        });
                    Box::pin(sink) as RejectingSink
                })
                .build();
            let backend = match backend {
                Ok(b) => b,
                // Only reachable if a builder call above is removed: every part is set.
                Err(e) => unreachable!("email backend is fully configured: {e}"),
            };
            WorkerBuilder::new(name.clone())
                .backend(backend)
                .concurrency(concurrency)
                .data(deliverer.clone())
                .build(deliver_task)
        })
    }
}

/// Claim statements `drain` keeps in flight at once. One claim of a batch of 20 KB rows
/// takes ~13 ms (query, commit, transfer); one at a time, that chain capped a drain at
/// ~2,500 emails/s however many sends were in flight.
const DRAIN_CLAIMS_IN_FLIGHT: usize = 2;

/// `adopt-worker drain`: claims and delivers until no row is due, `concurrency` emails at a
/// time (each its own task), with [`DRAIN_CLAIMS_IN_FLIGHT`] claims running ahead of the
/// sends. Rows scheduled in the future (including retries this run schedules) are left.
pub async fn drain(
    pool: &PgPool,
    deliverer: &Deliverer,
    batch_size: u32,
    concurrency: usize,
) -> Result<Tally, sqlx::Error> {
    let claim_error: Arc<Mutex<Option<sqlx::Error>>> = Arc::default();
    // Set by the first claim that finds nothing (or fails): no new claim starts after it,
    // but claims already running are still consumed, so no claimed row is dropped.
    let exhausted = Arc::new(AtomicBool::new(false));
    let claims = stream::unfold((), {
        let exhausted = exhausted.clone();
        let claim_error = claim_error.clone();
        move |()| {
            let more = !exhausted.load(Ordering::SeqCst);
            let claim = more.then(|| {
                let (pool, exhausted, err_slot) =
                    (pool.clone(), exhausted.clone(), claim_error.clone());
                async move {
                    match queue::claim_due(&pool, batch_size).await {
                        Ok(rows) => {
                            if rows.is_empty() {
                                exhausted.store(true, Ordering::SeqCst);
                            }
                            rows
                        }
                        Err(e) => {
                            exhausted.store(true, Ordering::SeqCst);
                            if let Ok(mut slot) = err_slot.lock() {
                                *slot = Some(e);
                            }
                            Vec::new()
                        }
                    }
                }
            });
            async move { claim.map(|c| (c, ())) }
        }
    });
    let rows = claims
        .buffered(DRAIN_CLAIMS_IN_FLIGHT)
        .flat_map(stream::iter);
    let mut tally = Tally::default();
    // Each email is its own task, so building messages and talking SMTP spread over the
    // runtime's threads instead of all being polled by this one task.
    let mut results = std::pin::pin!(
        rows.map(|row| {
            let deliverer = deliverer.clone();
            tokio::spawn(async move { deliverer.deliver(row).await })
        })
        .buffer_unordered(concurrency)
    );
    while let Some(r) = results.next().await {
        match r {
            Ok(r) => tally.add(r),
            // A send task panicked: its row stays `sending` until the lease reaper takes it.
            Err(e) => {
                warn!(error = %e, "a delivery task failed");
                tally.add(queue::Recorded::Fenced);
            }
        }
    }
    if let Some(e) = claim_error.lock().ok().and_then(|mut s| s.take()) {
        return Err(e);
    }
    info!(%tally, "drain finished");
    Ok(tally)
}
