//! Wires the application together: pool, transport, deliverer, the apalis Monitor with the
//! email worker and the scheduled jobs (the lease reaper among them), and the HTTP server;
//! runs until told to stop.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use apalis::prelude::Monitor;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::api::webhooks::sns::SnsVerifier;
use crate::config::Settings;
use crate::db::{self, DbError};
use crate::delivery::dkim::{DkimError, Signer};
use crate::delivery::transport::{Transport, TransportError};
use crate::delivery::{Deliverer, DeliveryPolicy, Tally};
use crate::jobs::{self, Jobs};
use crate::metrics::{self, MetricsError};
use crate::templates::Templates;
use crate::worker::{self, ClaimBuffer, ClaimSettings, EmailWorker, Wakeups};
use crate::{api, queue};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error(transparent)]
    Dkim(#[from] DkimError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("worker monitor failed: {0}")]
    Monitor(String),
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
    #[error(transparent)]
    Metrics(#[from] MetricsError),
}

/// Which parts `run` starts (API and workers can scale separately).
#[derive(Debug, Clone, Copy)]
pub struct Parts {
    pub workers: bool,
    pub api: bool,
}

impl Default for Parts {
    fn default() -> Self {
        Parts {
            workers: true,
            api: true,
        }
    }
}

pub struct App {
    pub settings: Settings,
    pub pool: PgPool,
    pub deliverer: Deliverer,
    pub templates: Templates,
    /// Verifies the SES webhook's SNS messages (fetching SNS certificates over HTTPS).
    pub sns: Arc<SnsVerifier>,
}

impl App {
    /// Builds everything that does not need the network yet (the pool connects lazily).
    pub fn build(settings: Settings) -> Result<App, StartupError> {
        let pool = db::pool(&settings.database)?;
        let transport = Transport::from_settings(&settings.smtp, &settings.outbox)?;
        let dkim = Signer::from_settings(&settings.dkim)?;
        if !dkim.is_empty() {
            info!(keys = ?dkim, "dkim: signing mail from the domains of these keys");
        }
        let templates = Templates::new(pool.clone(), &settings);
        let deliverer = Deliverer::new(
            pool.clone(),
            transport,
            DeliveryPolicy {
                retry: settings.retry.clone(),
                soft_bounce_threshold: settings.bounce.soft_bounce_threshold,
                public_url: settings.http.public_url.clone(),
                rate_limit_per_sec: settings.worker.rate_limit_per_sec,
                lease: settings.worker.lease(),
                log_recipient_addresses: settings.log.recipient_addresses,
                from_name: settings.app.from_name.clone(),
                return_path: settings.bounce.return_path(),
                dkim,
                relay_provider: crate::delivery::message::RelayProvider::of_smtp_url(
                    &settings.smtp.url,
                ),
            },
            templates.clone(),
        );
        Ok(App {
            settings,
            pool,
            deliverer,
            templates,
            sns: Arc::new(SnsVerifier::https()),
        })
    }

    /// `adopt-worker drain`: deliver every row due now, then return the tally.
    pub async fn drain(&self) -> Result<Tally, StartupError> {
        let w = &self.settings.worker;
        let tally = worker::drain(
            &self.pool,
            &self.deliverer,
            w.batch_size,
            w.concurrency as usize,
        )
        .await?;
        self.deliverer.transport().close().await;
        if let Err(e) = self.templates.flush_usage().await {
            warn!(error = %e, "writing template usage counts failed");
        }
        Ok(tally)
    }

    /// Binds the HTTP listener now so callers (and tests) know the port before running.
    pub async fn bind(&self) -> Result<TcpListener, StartupError> {
        let addr = self.settings.http.addr;
        TcpListener::bind(addr)
            .await
            .map_err(|source| StartupError::Bind { addr, source })
    }

    /// Runs workers, the reaper and the HTTP API until `shutdown` resolves, then stops
    /// claiming, lets in-flight sends finish within the grace period, and returns.
    pub async fn run_until_stopped(
        self,
        listener: Option<TcpListener>,
        parts: Parts,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartupError> {
        let (stop_tx, stop_rx) = watch::channel(false);
        // HTTP outlives the workers' drain, so /readyz can say "shutting_down" and /metrics
        // stays scrapable while in-flight sends finish.
        let (workers_done, http_stop) = watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
        info!(transport = %self.deliverer.transport().describe(), "adopt-worker starting");

        let prometheus = metrics::install()?;
        let smtp = &self.settings.smtp;
        metrics::smtp_pool_size(if smtp.url.trim().is_empty() {
            0
        } else {
            smtp.pool_size
        });
        // Every process serves /metrics, so every process samples the queue gauges.
        let sampler = Some(tokio::spawn(metrics::run_sampler(
            self.pool.clone(),
            prometheus.clone(),
            self.settings.metrics.sample_interval(),
            stop_rx.clone(),
        )));

        // The operations listener: `http.metrics_addr` when set, else `http.addr` in a
        // process without the API, so that every process that sends can be scraped.
        let ops_addr = match (self.settings.http.metrics_addr, parts.api) {
            (Some(addr), _) => Some(addr),
            (None, false) => Some(self.settings.http.addr),
            (None, true) => None,
        };
        let ops = match ops_addr {
            Some(addr) => {
                let listener = TcpListener::bind(addr)
                    .await
                    .map_err(|source| StartupError::Bind { addr, source })?;
                info!(%addr, "serving /metrics, /readyz and /healthz");
                let state = api::ApiState::new(
                    &self.settings,
                    self.pool.clone(),
                    stop_rx.clone(),
                    prometheus.clone(),
                );
                Some(tokio::spawn(api::serve_ops(
                    listener,
                    state,
                    stop_rx.clone(),
                    http_stop.clone(),
                )))
            }
            None => None,
        };

        let api = match (parts.api, listener) {
            (true, Some(listener)) => {
                warn_if_links_point_elsewhere(&self.settings, listener.local_addr().ok());
                let state = api::ApiState::with_sns(
                    &self.settings,
                    self.pool.clone(),
                    stop_rx.clone(),
                    prometheus,
                    self.sns.clone(),
                );
                Some(tokio::spawn(api::serve(
                    listener,
                    state,
                    stop_rx.clone(),
                    http_stop,
                )))
            }
            _ => None,
        };

        let mut monitor_failure = None;
        if parts.workers {
            let usage = tokio::spawn({
                let templates = self.templates.clone();
                let stop = stop_rx.clone();
                async move { templates.flush_usage_periodically(stop).await }
            });
            let buffer = ClaimBuffer::default();
            let w = &self.settings.worker;
            let name = format!(
                "email-sender@{}-{}",
                hostname::get()
                    .map(|h| h.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                std::process::id()
            );
            let monitor = EmailWorker {
                name,
                pool: self.pool.clone(),
                deliverer: self.deliverer.clone(),
                claim: ClaimSettings {
                    batch_size: w.batch_size,
                    poll_interval: w.poll_interval(),
                },
                concurrency: w.concurrency as usize,
                buffer: buffer.clone(),
                wakeups: Wakeups::listen(self.pool.clone()),
            }
            .register(
                Monitor::new()
                    .should_restart(|ctx, err| {
                        error!(worker = %ctx.name(), error = %err, "worker stopped; restarting");
                        true
                    })
                    .shutdown_timeout(w.shutdown_grace()),
            );
            let monitor = jobs::register(monitor, &Jobs::new(self.pool.clone(), &self.settings));
            let stop = stop_rx.clone();
            let (pool, deliverer, claimed) =
                (self.pool.clone(), self.deliverer.clone(), buffer.clone());
            let result = monitor
                .run_with_signal(async move {
                    wait_for(stop).await;
                    // Claimed but not handed to SMTP: back to the queue the moment the
                    // signal arrives, not after the sends in flight (or the lease).
                    deliverer.begin_shutdown();
                    release_unsent(&pool, &claimed).await;
                    Ok(())
                })
                .await;
            // A claim that landed while the monitor stopped.
            release_unsent(&self.pool, &buffer).await;
            self.deliverer.transport().close().await;
            let _ = usage.await;
            // Sends still in flight when the periodic flush stopped have finished now.
            if let Err(e) = self.templates.flush_usage().await {
                warn!(error = %e, "writing template usage counts at shutdown failed");
            }
            monitor_failure = result.err().map(|e| StartupError::Monitor(e.to_string()));
        } else {
            wait_for(stop_rx.clone()).await;
        }
        let _ = workers_done.send(true);
        if let Some(api) = api {
            let _ = api.await;
        }
        if let Some(ops) = ops {
            let _ = ops.await;
        }
        if let Some(sampler) = sampler {
            sampler.abort();
        }
        if let Some(failure) = monitor_failure {
            return Err(failure);
        }
        info!("adopt-worker stopped");
        Ok(())
    }
}

/// Unsubscribe and tracking links are built from `http.public_url`. Left at its default
/// (`http://127.0.0.1:8080`) while the API listens elsewhere, every link in every email would
/// be dead: say so at start-up.
fn warn_if_links_point_elsewhere(settings: &Settings, bound: Option<std::net::SocketAddr>) {
    let default_url = crate::config::default_public_url();
    let listening = bound.unwrap_or(settings.http.addr);
    let local = |addr: std::net::SocketAddr| addr.ip().is_loopback() && addr.port() == 8080;
    if settings.http.public_url.trim_end_matches('/') == default_url.trim_end_matches('/')
        && !local(listening)
    {
        warn!(
            public_url = %settings.http.public_url,
            listening = %listening,
            "http.public_url is still the default while the API listens elsewhere: unsubscribe and tracking links in emails will not reach this server; set ADOPT__HTTP__PUBLIC_URL to the address mail readers use"
        );
    }
}

/// Returns the rows claimed into `buffer` and not yet taken by a send task to `queued`.
async fn release_unsent(pool: &sqlx::PgPool, buffer: &ClaimBuffer) {
    let unsent = buffer.take_all().await;
    match queue::release(pool, &unsent).await {
        Ok(n) if n > 0 => info!(released = n, "returned unsent claimed rows to the queue"),
        Ok(_) => {}
        Err(e) => warn!(error = %e, "could not release claimed rows; the lease reaper will"),
    }
}

async fn wait_for(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => info!("SIGINT received; shutting down"),
        _ = term => info!("SIGTERM received; shutting down"),
    }
}
