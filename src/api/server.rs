//! The HTTP listener, hardened for the internet (mail readers reach `/t/` and `/u/`):
//! at most `http.max_connections` connections at once (the rest wait in the kernel's
//! backlog, so file descriptors are never exhausted and `accept` keeps working), a deadline
//! for a request's headers (`http.header_read_timeout_secs`), idle connections closed
//! (`http.idle_timeout_secs`), and a shutdown bounded by `worker.shutdown_grace_secs`:
//! connections still open at the deadline are dropped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Request};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::ServiceExt;
use tracing::{debug, info, warn};

use crate::config::HttpSettings;

/// How the listener is bounded.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    /// From the first shutdown signal, how long until open connections are dropped.
    pub shutdown_grace: Duration,
}

impl Limits {
    pub fn new(http: &HttpSettings, shutdown_grace: Duration) -> Limits {
        Limits {
            max_connections: http.max_connections.max(1),
            header_read_timeout: http.header_read_timeout(),
            idle_timeout: http.idle_timeout(),
            shutdown_grace,
        }
    }
}

/// When a connection last finished a request, and how many it is serving now.
struct Activity {
    started: Instant,
    last_ms: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    fn touch(&self) {
        let ms = self.started.elapsed().as_millis();
        self.last_ms
            .store(u64::try_from(ms).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Resolves once the connection has served nothing for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let last = self.started + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            if self.in_flight.load(Ordering::Relaxed) == 0 && last.elapsed() >= idle {
                return;
            }
            tokio::time::sleep_until(
                (last + idle).max(Instant::now() + Duration::from_millis(100)),
            )
            .await;
        }
    }
}

/// Serves `router` on `listener` until `stop` turns true. `stopping` (which turns true
/// first, when the process begins to shut down) starts the grace period; once `stop` turns
/// true no connection is accepted, idle ones close, and any left at the end of the grace
/// period are dropped.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    mut stopping: watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let (closing_tx, closing) = watch::channel(false);
    let mut conns = JoinSet::new();
    let mut deadline: Option<Instant> = None;
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p,
            _ = turned_true(&mut stop) => break,
            _ = turned_true(&mut stopping), if deadline.is_none() => {
                deadline = Some(Instant::now() + limits.shutdown_grace);
                continue;
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        let Ok(permit) = permit else { break };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE and the like: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = turned_true(&mut stop) => break,
            _ = turned_true(&mut stopping), if deadline.is_none() => {
                deadline = Some(Instant::now() + limits.shutdown_grace);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let limits = limits.clone();
        let closing = closing.clone();
        conns.spawn(async move {
            serve_connection(stream, peer, router, &limits, closing).await;
            drop(permit);
        });
    }
    drop(listener);
    let _ = closing_tx.send(true);
    let deadline = deadline.unwrap_or_else(|| Instant::now() + limits.shutdown_grace);
    let open = conns.len();
    if open > 0 {
        debug!(open, "HTTP: waiting for open connections");
    }
    let drained = tokio::time::timeout_at(deadline, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        info!(
            dropped = conns.len(),
            "HTTP: connections still open at the end of the shutdown grace period were dropped"
        );
        conns.abort_all();
        while conns.join_next().await.is_some() {}
    }
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    limits: &Limits,
    mut closing: watch::Receiver<bool>,
) {
    let activity = Arc::new(Activity {
        started: Instant::now(),
        last_ms: AtomicU64::new(0),
        in_flight: AtomicUsize::new(0),
    });
    let tracked = activity.clone();
    let service = tower::service_fn(move |mut req: Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        let router = router.clone();
        let tracked = tracked.clone();
        tracked.in_flight.fetch_add(1, Ordering::Relaxed);
        async move {
            let response = router.oneshot(req.map(axum::body::Body::new)).await;
            tracked.in_flight.fetch_sub(1, Ordering::Relaxed);
            tracked.touch();
            response
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
    tokio::pin!(conn);
    let idle = activity.idle_for(limits.idle_timeout);
    tokio::pin!(idle);
    let mut shutting_down = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    debug!(error = %e, "HTTP connection ended with an error");
                }
                return;
            }
            _ = &mut idle => {
                debug!("HTTP connection idle; closed");
                return;
            }
            _ = turned_true(&mut closing), if !shutting_down => {
                shutting_down = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Resolves once `rx` holds true (or its sender is gone), holding no borrow of the value.
async fn turned_true(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}
