//! Delivering one claimed row: build the message, hand it to the transport, classify what
//! happened and record the row's next state. The outcome type is the row's state machine
//! seen from the sender's side.

pub mod classify;
pub mod dkim;
pub mod message;
pub mod retry;
pub mod transport;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::json;
use sqlx::PgPool;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::metrics::{
    self, BounceKind as MetricBounce, Outcome as MetricOutcome, SendClass, SuppressionReason,
};
use crate::preferences::{self, BounceKind, OptOut, Unsubscribe, Verdict};
use crate::queue::{self, ClaimedEmail, EmailStatus, Recorded, RenderedContent, SentBatcher};
use crate::templates::Templates;
use classify::{FailureClass, SendFailure};
use message::{Content, ListUnsubscribe};
use retry::RetryPolicy;
use transport::{Accepted, Refused, Transport};

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
    /// Claimed too long ago for a send to end within the lease: back to the queue, not an
    /// attempt; a fresh claim sends it.
    Released,
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
    /// `worker.lease_secs`: every send must end before its row's lease runs out.
    pub lease: Duration,
    /// `log.recipient_addresses`: delivery log lines carry the whole address, not only its
    /// domain.
    pub log_recipient_addresses: bool,
    /// `app.from_name`: the sender's name for rows without `from_name`, as the API gives
    /// its rows.
    pub from_name: String,
    /// `bounce.return_path`: the VERP envelope sender; `None`: the From address.
    pub return_path: Option<crate::config::ReturnPath>,
    /// `[[dkim.keys]]`, parsed at start-up: signs every message whose From domain has a key.
    pub dkim: dkim::Signer,
    /// The provider whose SMTP relay `smtp.url` names (its webhooks' matching header).
    pub relay_provider: Option<message::RelayProvider>,
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
    templates: Templates,
    /// Turns true when the process begins to shut down: a row not yet handed to SMTP is
    /// released at once rather than waiting for a send slot.
    stopping: Arc<tokio::sync::watch::Sender<bool>>,
    /// What the gate assumes for a user without an `email_preferences` row.
    prefs_defaults: preferences::DefaultsCache,
}

impl Deliverer {
    pub fn new(
        pool: PgPool,
        transport: Transport,
        policy: DeliveryPolicy,
        templates: Templates,
    ) -> Deliverer {
        let limiter = NonZeroU32::new(policy.rate_limit_per_sec)
            .map(|n| Arc::new(RateLimiter::direct(governor::Quota::per_second(n))));
        Deliverer {
            sent: SentBatcher::new(pool.clone()),
            pool,
            transport,
            policy: Arc::new(policy),
            limiter,
            templates,
            stopping: Arc::new(tokio::sync::watch::channel(false).0),
            prefs_defaults: preferences::DefaultsCache::default(),
        }
    }

    /// Shutdown has begun: rows not yet handed to SMTP go back to the queue from now on
    /// (sends already talking to the relay finish).
    pub fn begin_shutdown(&self) {
        self.stopping.send_replace(true);
    }

    async fn shutting_down(&self) {
        let mut rx = self.stopping.subscribe();
        let _ = rx.wait_for(|stop| *stop).await;
    }

    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// Delivers one claimed row and records the result. Never fails: a row-level problem
    /// ends the row, and a database error while recording is retried until the row's
    /// lease would run out (after that the reaper takes it back).
    pub async fn deliver(&self, email: ClaimedEmail) -> Recorded {
        self.deliver_reporting(email).await.1
    }

    /// [`Deliverer::deliver`], also returning what the attempt came to (for `send-test`,
    /// which prints the relay's reply or the failure).
    pub async fn deliver_reporting(&self, mut email: ClaimedEmail) -> (Outcome, Recorded) {
        let span = info_span!("deliver", email_id = %email.email_id, attempt = email.retries() + 1);
        async {
            let _in_flight = metrics::in_flight_guard();
            let started = Instant::now();
            let (outcome, rendered) = self.attempt(&mut email).await;
            let recorded = self.record(&email, &outcome, rendered.as_ref()).await;
            if let (Recorded::Written(_), Outcome::Sent(accepted)) = (&recorded, &outcome)
                && !accepted.refused.is_empty()
            {
                self.record_refused(&email, &accepted.refused).await;
            }
            if let Recorded::Written(status) = recorded {
                observe(&email, &outcome, status);
                log_outcome(
                    &email,
                    &outcome,
                    started.elapsed(),
                    self.policy.log_recipient_addresses,
                );
            }
            (outcome, recorded)
        }
        .instrument(span)
        .await
    }

    async fn attempt(&self, email: &mut ClaimedEmail) -> (Outcome, Option<RenderedContent>) {
        if let Some(problem) = &email.undecodable {
            metrics::send_attempt(SendClass::Invalid, Duration::ZERO);
            let reason = format!("the row cannot be sent as stored: {problem}");
            return (Outcome::Failed { reason }, None);
        }
        if let Err(failure) = self.complete(email).await {
            return (self.classify(email, failure), None);
        }
        if let Err(failure) = self.drop_blacklisted_copies(email).await {
            return (self.classify(email, failure), None);
        }
        let email = &*email;
        let (format, unsubscribe) = match preferences::decide(email) {
            Verdict::Send {
                format,
                unsubscribe,
            } => (format, unsubscribe),
            Verdict::Suppressed(reason) => {
                metrics::suppressed(SuppressionReason::Blacklisted);
                return (Outcome::Failed { reason }, None);
            }
            Verdict::OptedOut(why, reason) => {
                metrics::suppressed(match why {
                    OptOut::Unsubscribed => SuppressionReason::Unsubscribed,
                    OptOut::Category => SuppressionReason::Category,
                    OptOut::Never => SuppressionReason::Never,
                });
                return (Outcome::Unsubscribed { reason }, None);
            }
            Verdict::HoldForDigest => {
                // The digest job works from preferences rows: a user held on the defaults
                // gets theirs now, with those same defaults.
                if let Some(user_id) = email.recipient.recipient_user_id
                    && !email.recipient.has_preferences
                    && let Err(e) = preferences::ensure_unsubscribe_token(&self.pool, user_id).await
                {
                    let failure = SendFailure::transient(format!(
                        "could not create the recipient's preferences row: {e}"
                    ));
                    return (self.classify(email, failure), None);
                }
                return (Outcome::HeldForDigest, None);
            }
        };
        let unsubscribe = match self.unsubscribe_link(email, unsubscribe).await {
            Ok(u) => u,
            Err(failure) => return (self.classify(email, failure), None),
        };
        let unsubscribe_url = unsubscribe.as_ref().map(|u| u.url.clone());
        let rendered = match self.render_content(email, unsubscribe_url).await {
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
        let eight_bit = self.transport.takes_8bit();
        let return_path = match &self.policy.return_path {
            Some(rp) => match rp.address(email.email_id) {
                Ok(address) => Some(address),
                Err(e) => {
                    metrics::send_attempt(SendClass::Invalid, Duration::ZERO);
                    let reason = format!("bounce.return_path gives no valid address: {e}");
                    return (Outcome::Failed { reason }, rendered);
                }
            },
            None => None,
        };
        let msg = match message::build(
            email,
            &content,
            format,
            unsubscribe.as_ref(),
            eight_bit,
            return_path,
            self.policy.relay_provider,
        ) {
            Ok(m) => m,
            Err(e) => {
                metrics::send_attempt(SendClass::Invalid, Duration::ZERO);
                return (
                    Outcome::Failed {
                        reason: e.to_string(),
                    },
                    rendered,
                );
            }
        };
        // Signed once, here, over the bytes the transport sends as they are.
        let msg = match self.policy.dkim.sign(&msg) {
            Ok(m) => m,
            Err(e) => {
                let failure = SendFailure::transient(e.to_string());
                return (self.classify(email, failure), rendered);
            }
        };
        // The connection first, then the lease check: waiting for a free connection can be
        // long when the relay is slow, and must not eat into the send's own time. Either
        // wait ends at shutdown: the row goes back to the queue unsent.
        let ready = async {
            if let Some(limiter) = &self.limiter {
                limiter.until_ready().await;
            }
            self.transport.reserve().await
        };
        let slot = tokio::select! {
            biased;
            _ = self.shutting_down() => return (Outcome::Released, None),
            r = ready => match r {
                Ok(slot) => slot,
                Err(failure) => return (self.classify(email, failure), rendered),
            },
        };
        if !self.fits_in_lease(email) {
            return (Outcome::Released, None);
        }
        let message_id = message::message_id(email);
        let to = message::ascii_domain(email.to_email.trim());
        let started = Instant::now();
        let outcome = match self
            .transport
            .send(slot, email.email_id, &msg, &message_id, &to)
            .await
        {
            Ok(accepted) => {
                metrics::send_attempt(SendClass::Accepted, started.elapsed());
                Outcome::Sent(accepted)
            }
            Err(failure) => {
                metrics::send_attempt(failure.metric_class(), started.elapsed());
                self.classify(email, failure)
            }
        };
        (outcome, rendered)
    }

    /// What the row leaves to the platform's defaults, filled in as the API fills in its
    /// rows: the sender's name (`app.from_name`), and for a user without an
    /// `email_preferences` row, the row the table would create for them (its defaults, read
    /// from the catalogue).
    async fn complete(&self, email: &mut ClaimedEmail) -> Result<(), SendFailure> {
        if email
            .from_name
            .as_deref()
            .is_none_or(|n| n.trim().is_empty())
        {
            email.from_name = Some(self.policy.from_name.clone());
        }
        if email.recipient.lacks_row() {
            let defaults = self.prefs_defaults.get(&self.pool).await.map_err(|e| {
                SendFailure::transient(format!(
                    "could not read the defaults of email_preferences: {e}"
                ))
            })?;
            email.recipient.assume_defaults(&defaults);
        }
        Ok(())
    }

    /// Template rows (`template_id` set, `html_content` empty) are rendered here, tracking
    /// included; what is returned is sent and written back to the row. `None`: the row
    /// carries its own content. A render problem fails the row with a reason naming it
    /// (e.g. a missing variable); a database error during the render is retried.
    async fn render_content(
        &self,
        email: &ClaimedEmail,
        unsubscribe_url: Option<String>,
    ) -> Result<Option<RenderedContent>, SendFailure> {
        if email.template_id.is_none() || !email.html_content.trim().is_empty() {
            return Ok(None);
        }
        let started = Instant::now();
        match self
            .templates
            .render_for_email(email, unsubscribe_url)
            .await
        {
            Ok(r) => {
                metrics::rendered(started.elapsed());
                Ok(Some(r))
            }
            Err(e) if e.is_transient() => Err(SendFailure::transient(e.to_string())),
            Err(e) => Err(SendFailure::permanent(e.to_string())),
        }
    }

    /// True when a send starting now ends, SMTP timeout included, and its result is
    /// written (see [`record_margin`]) before the row's lease runs out. A claimed row can wait long for a free send slot or for the rate limit;
    /// sent after that, its send could outlive the lease, and the reaper would hand the row
    /// to another worker while this one is still sending it: a duplicate with no fault.
    fn fits_in_lease(&self, email: &ClaimedEmail) -> bool {
        let Some(claimed) = email.claim_sent_at else {
            return true;
        };
        let age = claimed.elapsed();
        let fits = age
            + self.transport.timeout()
            + record_margin(self.policy.lease, self.transport.timeout())
            < self.policy.lease;
        if !fits {
            warn!(
                age_ms = age.as_millis() as u64,
                "claimed too long ago to finish a send within the lease; returned to the queue"
            );
        }
        fits
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
        // A rendered template row keeps what was rendered whatever the outcome (sent rows
        // get it in the same statement as the transition).
        if let (Some(r), false) = (rendered, matches!(outcome, Outcome::Sent(_))) {
            queue::keep_rendered(pool, email, r).await?;
        }
        match outcome {
            Outcome::Sent(a) => {
                let r = self
                    .sent
                    .mark_sent(
                        email,
                        &a.provider_id,
                        a.provider_message_id.as_deref(),
                        rendered,
                    )
                    .await?;
                // A delivered test send counts on the template it was made of; losing one
                // count is better than recording the send again.
                if let (Recorded::Written(EmailStatus::Sent), Some(name)) =
                    (&r, crate::templates::test_of(email))
                    && let Err(e) = crate::templates::count_test_send(pool, name).await
                {
                    warn!(error = %e, template = name, "counting the test send failed");
                }
                Ok(r)
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
            Outcome::Released => Ok(
                match queue::release(pool, std::slice::from_ref(email)).await? {
                    0 => Recorded::Fenced,
                    _ => Recorded::Written(EmailStatus::Queued),
                },
            ),
        }
    }

    /// Leaves blacklisted Cc/Bcc addresses out of this attempt (noted in
    /// `tracking.suppressedRecipients`); the To is judged by the gate.
    async fn drop_blacklisted_copies(&self, email: &mut ClaimedEmail) -> Result<(), SendFailure> {
        let copies: Vec<String> = email
            .cc_emails
            .iter()
            .chain(email.bcc_emails.iter())
            .flatten()
            .cloned()
            .collect();
        if copies.is_empty() {
            return Ok(());
        }
        let db = |e: sqlx::Error| {
            SendFailure::transient(format!("could not check Cc/Bcc suppressions: {e}"))
        };
        let blacklisted = preferences::blacklisted_among(&self.pool, &copies)
            .await
            .map_err(db)?;
        if blacklisted.is_empty() {
            return Ok(());
        }
        for list in [&mut email.cc_emails, &mut email.bcc_emails]
            .into_iter()
            .flatten()
        {
            list.retain(|a| !blacklisted.contains(a));
        }
        info!(
            left_out = blacklisted.len(),
            "blacklisted Cc/Bcc recipients left out"
        );
        queue::tracking::record_suppressed_recipients(&self.pool, email.email_id, &blacklisted)
            .await
            .map_err(db)?;
        Ok(())
    }

    /// Cc/Bcc recipients refused at RCPT while the message went to the others: noted in
    /// the row's `tracking`, and a bounce counted against each refused address (its user,
    /// or `email_suppressions`), never against the To recipient. Retried like a result;
    /// the row is already `sent`, so giving up loses only this bookkeeping (logged).
    async fn record_refused(&self, email: &ClaimedEmail, refused: &[Refused]) {
        for refusal in refused {
            warn!(
                address = %refusal.address,
                reason = %refusal.failure.reason,
                "a Cc/Bcc recipient was refused; the email went to the others"
            );
        }
        let mut wait = Duration::from_millis(100);
        for _ in 0..6 {
            match self.write_refused(email, refused).await {
                Ok(()) => return,
                Err(e) => {
                    warn!(error = %e, "recording refused recipients failed; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
            }
        }
        warn!("giving up recording refused recipients; the email itself is recorded sent");
    }

    async fn write_refused(
        &self,
        email: &ClaimedEmail,
        refused: &[Refused],
    ) -> Result<(), sqlx::Error> {
        let now = Utc::now();
        let notes: Vec<serde_json::Value> = refused
            .iter()
            .map(|r| {
                json!({
                    "address": r.address,
                    "code": r.failure.reply.as_ref().map(|reply| reply.code),
                    "reason": r.failure.reason,
                    "at": now.to_rfc3339(),
                })
            })
            .collect();
        let mut tx = self.pool.begin().await?;
        queue::tracking::record_refused_recipients(&mut *tx, email.email_id, json!(notes)).await?;
        for r in refused {
            let kind = if r.failure.is_hard_bounce() {
                BounceKind::Hard
            } else if r.failure.is_soft_bounce() {
                BounceKind::Soft
            } else {
                continue;
            };
            let user_id = preferences::user_for_address(&mut *tx, &r.address).await?;
            let record = preferences::record_bounce(
                &mut *tx,
                user_id,
                &r.address,
                kind,
                &r.failure.reason,
                self.policy.soft_bounce_threshold,
                now.naive_utc(),
            )
            .await?;
            if record.blacklisted {
                warn!(address = %r.address, bounces = record.bounce_count, "Cc/Bcc recipient blacklisted after bounce");
            }
        }
        tx.commit().await
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

/// Time kept free at the end of a lease for writing a send's result, so a slow write does
/// not race the reaper: 5 s, or half of what the lease leaves beyond the SMTP timeout when
/// that is less (configuration guarantees the lease exceeds the timeout).
pub fn record_margin(lease: Duration, smtp_timeout: Duration) -> Duration {
    Duration::from_secs(5).min(lease.saturating_sub(smtp_timeout) / 2)
}

fn observe(email: &ClaimedEmail, outcome: &Outcome, status: EmailStatus) {
    // Neither is an attempt: the row goes back to waiting, and nothing was sent.
    match outcome {
        Outcome::HeldForDigest => return debug!("held for the digest"),
        Outcome::Released => return debug!("released unsent: the lease would not cover a send"),
        _ => {}
    }
    if let Some(o) = MetricOutcome::from_status(status) {
        metrics::email_finished(email.email_type, email.priority, o);
    }
    match outcome {
        Outcome::Sent(_) => metrics::enqueue_to_sent(email.priority, email.created_at),
        Outcome::Retry { failure, .. } => {
            if status == EmailStatus::Queued {
                metrics::retry_scheduled();
            }
            if failure.is_soft_bounce() {
                metrics::bounce(MetricBounce::Soft);
            }
        }
        Outcome::Bounced(_) => metrics::bounce(MetricBounce::Hard),
        _ => {}
    }
}

/// One line per delivery outcome, as an MTA writes one: what, to which domain (the whole
/// address only with `log.recipient_addresses`: logs travel further than the database), the
/// relay's reply code and queue id, and how long the attempt took. The span adds the email
/// id and attempt number.
fn log_outcome(email: &ClaimedEmail, outcome: &Outcome, took: Duration, addresses: bool) {
    let to = email.to_email.trim();
    let recipient = if addresses {
        to
    } else {
        to.rsplit_once('@').map_or("", |(_, domain)| domain)
    };
    let (kind, priority, ms) = (
        email.email_type.as_str(),
        email.priority.as_str(),
        took.as_millis() as u64,
    );
    let code = |failure: &SendFailure| failure.reply.as_ref().map(|r| r.code);
    match outcome {
        Outcome::Sent(a) => info!(
            outcome = "sent",
            r#type = kind,
            priority,
            to = recipient,
            ms,
            code = a.reply.get(..3).unwrap_or(""),
            queue_id = a.provider_message_id.as_deref().unwrap_or(""),
            refused = a.refused.len(),
            "delivery"
        ),
        Outcome::Retry { failure, delay } => info!(
            outcome = "retry", r#type = kind, priority, to = recipient, ms, code = ?code(failure),
            retry_at = %(chrono::Utc::now() + chrono::Duration::from_std(*delay).unwrap_or_default()).format("%Y-%m-%dT%H:%M:%SZ"),
            reason = %failure.reason,
            "delivery"
        ),
        Outcome::Bounced(failure) => warn!(
            outcome = "bounced", r#type = kind, priority, to = recipient, ms, code = ?code(failure),
            reason = %failure.reason,
            "delivery"
        ),
        Outcome::Failed { reason } if reason.starts_with("suppressed") => info!(
            outcome = "suppressed", r#type = kind, priority, to = recipient, ms, %reason,
            "delivery"
        ),
        Outcome::Failed { reason } => warn!(
            outcome = "failed", r#type = kind, priority, to = recipient, ms, %reason,
            "delivery"
        ),
        Outcome::Unsubscribed { reason } => info!(
            outcome = "unsubscribed", r#type = kind, priority, to = recipient, ms, %reason,
            "delivery"
        ),
        Outcome::HeldForDigest => info!(
            outcome = "held",
            r#type = kind,
            priority,
            to = recipient,
            ms,
            "delivery"
        ),
        Outcome::Released => debug!(
            outcome = "released",
            r#type = kind,
            priority,
            ms,
            "delivery: returned to the queue unsent"
        ),
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
