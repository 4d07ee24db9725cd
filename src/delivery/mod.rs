//! Delivering one claimed row: build the message, hand it to the transport, classify what
//! happened and record the row's next state. The outcome type is the row's state machine
//! seen from the sender's side.

pub mod classify;
pub mod message;
pub mod retry;
pub mod transport;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::json;
use sqlx::PgPool;
use tracing::{Instrument, info_span, warn};

use crate::preferences::{self, BounceKind, Unsubscribe, Verdict};
use crate::queue::{self, ClaimedEmail, EmailStatus, Recorded, RenderedContent, SentBatcher};
use classify::{FailureClass, SendFailure};
use message::{Content, ListUnsubscribe};
use retry::RetryPolicy;
use transport::{Accepted, Transport};

/// What became of one attempt, before it is written to the row.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The server took the message (250).
    Sent(Accepted),
    /// Try again later (4xx, connection trouble); `soft_bounce` counts toward blacklisting.
    Retry {
        failure: SendFailure,
        delay: Duration,
    },
    /// The recipient does not exist: no retry, the recipient is blacklisted.
    Bounced(SendFailure),
    /// A notification kept for the recipient's digest (not sent on its own).
    HeldForDigest,
    /// Permanent and not the recipient's fault, or a row that can never be sent.
    Failed { reason: String },
    /// Blocked by the recipient's preferences (opted out); nothing was sent.
    Unsubscribed { reason: String },
}

/// Settings the deliverer needs, cut from [`crate::config::Settings`].
#[derive(Debug, Clone)]
pub struct DeliveryPolicy {
    pub retry: RetryPolicy,
    pub soft_bounce_threshold: i32,
    /// Public URL of the HTTP API, for List-Unsubscribe links.
    pub public_url: String,
    /// Emails per second this process may send; 0 means unlimited.
    pub rate_limit_per_sec: u32,
}

type RateLimiter = governor::DefaultDirectRateLimiter;

/// Sends claimed rows and records their results. Cheap to clone; shared by every task.
#[derive(Clone)]
pub struct Deliverer {
    pool: PgPool,
    /// `sent` results are written in batches: most of the database's work under load.
    sent: SentBatcher,
    transport: Transport,
    policy: Arc<DeliveryPolicy>,
    limiter: Option<Arc<RateLimiter>>,
}

impl Deliverer {
    pub fn new(pool: PgPool, transport: Transport, policy: DeliveryPolicy) -> Deliverer {
        let limiter = NonZeroU32::new(policy.rate_limit_per_sec)
            .map(|n| Arc::new(RateLimiter::direct(governor::Quota::per_second(n))));
        Deliverer {
            sent: SentBatcher::new(pool.clone()),
            pool,
            transport,
            policy: Arc::new(policy),
            limiter,
        }
    }

    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// Delivers one claimed row and records the result. Never fails: a row-level problem
    /// ends the row, and a database error while recording is retried until the row's
    /// lease would run out (after that the reaper takes it back).
    pub async fn deliver(&self, email: ClaimedEmail) -> Recorded {
        let span = info_span!("deliver", email_id = %email.email_id, attempt = email.retries() + 1);
        async {
            let (outcome, rendered) = self.attempt(&email).await;
            self.record(&email, &outcome, rendered.as_ref()).await
        }
        .instrument(span)
        .await
    }

    async fn attempt(&self, email: &ClaimedEmail) -> (Outcome, Option<RenderedContent>) {
        let (format, unsubscribe) = match preferences::decide(email) {
            Verdict::Send {
                format,
                unsubscribe,
            } => (format, unsubscribe),
            Verdict::Suppressed(reason) => return (Outcome::Failed { reason }, None),
            Verdict::OptedOut(reason) => return (Outcome::Unsubscribed { reason }, None),
            Verdict::HoldForDigest => return (Outcome::HeldForDigest, None),
        };
        let unsubscribe = match self.unsubscribe_link(email, unsubscribe).await {
            Ok(u) => u,
            Err(failure) => return (self.classify(email, failure), None),
        };
        let content = Content {
            subject: &email.subject,
            html: &email.html_content,
            text: email.text_content.as_deref(),
        };
        let msg = match message::build(email, &content, format, unsubscribe.as_ref()) {
            Ok(m) => m,
            Err(e) => {
                return (
                    Outcome::Failed {
                        reason: e.to_string(),
                    },
                    None,
                );
            }
        };
        if let Some(limiter) = &self.limiter {
            limiter.until_ready().await;
        }
        let message_id = message::message_id(email);
        let outcome = match self.transport.send(email.email_id, &msg, &message_id).await {
            Ok(accepted) => Outcome::Sent(accepted),
            Err(failure) => self.classify(email, failure),
        };
        (outcome, None)
    }

    /// The List-Unsubscribe target for optional mail. A user who has no preferences row
    /// (or no token) gets one now: the first need.
    async fn unsubscribe_link(
        &self,
        email: &ClaimedEmail,
        known: Option<Unsubscribe>,
    ) -> Result<Option<ListUnsubscribe>, SendFailure> {
        let unsubscribe = match (known, email.recipient.recipient_user_id) {
            (Some(u), _) => Some(u),
            (None, Some(user_id)) if email.email_type.is_optional() => {
                let token = preferences::ensure_unsubscribe_token(&self.pool, user_id)
                    .await
                    .map_err(|e| {
                        SendFailure::transient(format!("could not create unsubscribe token: {e}"))
                    })?;
                Some(Unsubscribe {
                    token,
                    category: preferences::category(email),
                })
            }
            (None, _) => None,
        };
        Ok(unsubscribe.map(|u| ListUnsubscribe {
            url: u.url(&self.policy.public_url),
        }))
    }

    fn classify(&self, email: &ClaimedEmail, failure: SendFailure) -> Outcome {
        match failure.class {
            FailureClass::Transient { .. } => {
                let retry = u32::try_from(email.retries())
                    .unwrap_or(0)
                    .saturating_add(1);
                let delay = retry::retry_delay(&self.policy.retry, retry, failure.retry_after);
                Outcome::Retry { failure, delay }
            }
            FailureClass::HardBounce => Outcome::Bounced(failure),
            FailureClass::Permanent => Outcome::Failed {
                reason: failure.reason,
            },
        }
    }

    async fn record(
        &self,
        email: &ClaimedEmail,
        outcome: &Outcome,
        rendered: Option<&RenderedContent>,
    ) -> Recorded {
        let mut wait = Duration::from_millis(100);
        let mut tries = 0;
        loop {
            match self.write(email, outcome, rendered).await {
                Ok(r) => {
                    if r == Recorded::Fenced {
                        warn!(
                            "row was taken over by a newer attempt; this attempt's result was not written"
                        );
                    }
                    return r;
                }
                Err(e) if tries < 12 => {
                    warn!(error = %e, "recording the result failed; retrying");
                    tries += 1;
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
                Err(e) => {
                    warn!(error = %e, "giving up recording the result; the lease reaper will take the row back");
                    return Recorded::Fenced;
                }
            }
        }
    }

    async fn write(
        &self,
        email: &ClaimedEmail,
        outcome: &Outcome,
        rendered: Option<&RenderedContent>,
    ) -> Result<Recorded, sqlx::Error> {
        let pool = &self.pool;
        let max = self.policy.retry.default_max_retries;
        match outcome {
            Outcome::Sent(a) => {
                self.sent
                    .mark_sent(
                        email,
                        &a.provider_id,
                        a.provider_message_id.as_deref(),
                        rendered,
                    )
                    .await
            }
            Outcome::Retry { failure, delay } if failure.is_soft_bounce() => {
                let mut tx = pool.begin().await?;
                let r =
                    queue::schedule_retry(&mut *tx, email, max, *delay, &failure.reason).await?;
                if r != Recorded::Fenced {
                    self.count_bounce(&mut tx, email, BounceKind::Soft, &failure.reason)
                        .await?;
                }
                tx.commit().await?;
                Ok(r)
            }
            Outcome::Retry { failure, delay } => {
                queue::schedule_retry(pool, email, max, *delay, &failure.reason).await
            }
            Outcome::Bounced(failure) => {
                let bounce = json!({
                    "bouncedAt": Utc::now().to_rfc3339(),
                    "bounceType": BounceKind::Hard.as_str(),
                    "bounceCode": failure.reply.as_ref().map(|r| r.code),
                    "bounceReason": failure.reason,
                });
                let mut tx = pool.begin().await?;
                let r = queue::mark_bounced(&mut *tx, email, &failure.reason, bounce).await?;
                if r != Recorded::Fenced {
                    self.count_bounce(&mut tx, email, BounceKind::Hard, &failure.reason)
                        .await?;
                }
                tx.commit().await?;
                Ok(r)
            }
            Outcome::Failed { reason } => queue::mark_failed(pool, email, reason).await,
            Outcome::Unsubscribed { reason } => queue::mark_unsubscribed(pool, email, reason).await,
            Outcome::HeldForDigest => queue::hold_for_digest(pool, email).await,
        }
    }

    async fn count_bounce(
        &self,
        tx: &mut sqlx::PgConnection,
        email: &ClaimedEmail,
        kind: BounceKind,
        reason: &str,
    ) -> Result<(), sqlx::Error> {
        let record = preferences::record_bounce(
            tx,
            email.recipient.recipient_user_id,
            &email.to_email,
            kind,
            reason,
            self.policy.soft_bounce_threshold,
            Utc::now().naive_utc(),
        )
        .await?;
        if record.blacklisted {
            warn!(
                bounces = record.bounce_count,
                kind = kind.as_str(),
                "recipient blacklisted after bounce"
            );
        }
        Ok(())
    }
}

/// Final statuses of a run, for the `drain` summary line.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub counts: std::collections::BTreeMap<&'static str, u64>,
}

impl Tally {
    pub fn add(&mut self, r: Recorded) {
        let key = match r {
            Recorded::Written(s) => s.as_str(),
            Recorded::Fenced => "taken_over",
        };
        *self.counts.entry(key).or_default() += 1;
    }

    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    pub fn get(&self, status: EmailStatus) -> u64 {
        self.counts.get(status.as_str()).copied().unwrap_or(0)
    }
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "processed={}", self.total())?;
        for (k, v) in &self.counts {
            write!(f, " {k}={v}")?;
        }
        Ok(())
    }
}
