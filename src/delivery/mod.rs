//! Delivering one claimed row: build the message, hand it to the transport, classify what
//! happened and record the row's next state. The outcome type is the row's state machine
//! seen from the sender's side.

pub mod classify;
pub mod message;
pub mod retry;
pub mod transport;

use std::time::Duration;

use serde_json::json;
use sqlx::PgPool;
use tracing::{Instrument, info_span, warn};

use crate::queue::{self, ClaimedEmail, EmailStatus, Recorded, RenderedContent};
use crate::templates::Templates;
use classify::{FailureClass, SendFailure};
use message::{BodyFormat, Content};
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
}

/// Sends claimed rows and records their results. Cheap to clone; shared by every task.
#[derive(Clone)]
pub struct Deliverer {
    pool: PgPool,
    transport: Transport,
    policy: DeliveryPolicy,
    templates: Templates,
}

impl Deliverer {
    pub fn new(
        pool: PgPool,
        transport: Transport,
        policy: DeliveryPolicy,
        templates: Templates,
    ) -> Deliverer {
        Deliverer {
            pool,
            transport,
            policy,
            templates,
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
        let rendered = match self.render_content(email).await {
            Ok(r) => r,
            Err(failure) => return (self.classify(email, failure), None),
        };
        // Pre-rendered rows are tracked for sending only; their stored HTML stays as given.
        let tracked = match rendered {
            None => self.templates.track_prerendered(email),
            Some(_) => None,
        };
        let content = match &rendered {
            Some(r) => Content {
                subject: &r.subject,
                html: &r.html_content,
                text: r.text_content.as_deref(),
            },
            None => Content {
                subject: &email.subject,
                html: tracked.as_deref().unwrap_or(&email.html_content),
                text: email.text_content.as_deref(),
            },
        };
        let msg = match message::build(email, &content, BodyFormat::Multipart, None) {
            Ok(m) => m,
            Err(e) => {
                return (
                    Outcome::Failed {
                        reason: e.to_string(),
                    },
                    rendered,
                );
            }
        };
        let message_id = message::message_id(email);
        let outcome = match self.transport.send(email.email_id, &msg, &message_id).await {
            Ok(accepted) => Outcome::Sent(accepted),
            Err(failure) => self.classify(email, failure),
        };
        (outcome, rendered)
    }

    /// Template rows (`template_id` set, `html_content` empty) are rendered here, tracking
    /// included; what is returned is sent and written back to the row. `None`: the row
    /// carries its own content. A render problem fails the row with a reason naming it
    /// (e.g. a missing variable); a database error during the render is retried.
    async fn render_content(
        &self,
        email: &ClaimedEmail,
    ) -> Result<Option<RenderedContent>, SendFailure> {
        if email.template_id.is_none() || !email.html_content.trim().is_empty() {
            return Ok(None);
        }
        // The unsubscribe URL comes with the preferences module; until then, none.
        match self.templates.render_for_email(email, None).await {
            Ok(r) => Ok(Some(r)),
            Err(e) if e.is_transient() => Err(SendFailure::transient(e.to_string())),
            Err(e) => Err(SendFailure::permanent(e.to_string())),
        }
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
        // A rendered template row keeps what was rendered whatever the outcome (sent rows
        // get it in the same statement as the transition).
        if let (Some(r), false) = (rendered, matches!(outcome, Outcome::Sent(_))) {
            queue::keep_rendered(pool, email, r).await?;
        }
        match outcome {
            Outcome::Sent(a) => {
                queue::mark_sent(
                    pool,
                    email,
                    &a.provider_id,
                    a.provider_message_id.as_deref(),
                    rendered,
                )
                .await
            }
            Outcome::Retry { failure, delay } => {
                queue::schedule_retry(
                    pool,
                    email,
                    self.policy.retry.default_max_retries,
                    *delay,
                    &failure.reason,
                )
                .await
            }
            Outcome::Bounced(failure) => {
                let code = failure.reply.as_ref().map(|r| r.code);
                let bounce = json!({
                    "bouncedAt": chrono::Utc::now().to_rfc3339(),
                    "bounceType": "hard",
                    "bounceCode": code,
                    "bounceReason": failure.reason,
                });
                queue::mark_bounced(pool, email, &failure.reason, bounce).await
            }
            Outcome::Failed { reason } => queue::mark_failed(pool, email, reason).await,
            Outcome::Unsubscribed { reason } => queue::mark_unsubscribed(pool, email, reason).await,
        }
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
