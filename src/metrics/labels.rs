//! The label values of the catalogue: small closed sets, so no call site can mint a series.

use crate::queue::EmailStatus;

/// A closed set of label values, with every member listed (for pre-registration).
macro_rules! label_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $value:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }
        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $value),+ }
            }
        }
    };
}

label_enum!(
    /// How an attempt ended, as written to the row (`status` of [`super::EMAILS_FINISHED`]).
    Outcome {
        Sent => "sent",
        Failed => "failed",
        Bounced => "bounced",
        Unsubscribed => "unsubscribed",
        RetryScheduled => "retry_scheduled",
    }
);

impl Outcome {
    /// The outcome for the status a transition wrote: `queued` after an attempt means a
    /// retry was scheduled. `None` for statuses an attempt never writes.
    pub fn from_status(status: EmailStatus) -> Option<Outcome> {
        match status {
            EmailStatus::Sent => Some(Outcome::Sent),
            EmailStatus::Failed => Some(Outcome::Failed),
            EmailStatus::Bounced => Some(Outcome::Bounced),
            EmailStatus::Unsubscribed => Some(Outcome::Unsubscribed),
            EmailStatus::Queued => Some(Outcome::RetryScheduled),
            EmailStatus::Sending
            | EmailStatus::Delivered
            | EmailStatus::Opened
            | EmailStatus::Clicked => None,
        }
    }
}

label_enum!(
    /// What the server said to one attempt (`class` of [`super::SEND_ATTEMPTS`]).
    SendClass {
        Accepted => "2xx",
        Transient => "4xx",
        Permanent => "5xx",
        Connection => "connection",
        Timeout => "timeout",
        Invalid => "invalid",
    }
);

label_enum!(
    /// `kind` of [`super::BOUNCES`].
    BounceKind { Hard => "hard", Soft => "soft" }
);

label_enum!(
    /// `reason` of [`super::SUPPRESSIONS`].
    SuppressionReason {
        Blacklisted => "blacklisted",
        Unsubscribed => "unsubscribed",
        Category => "category",
        Never => "never",
    }
);

label_enum!(
    /// `job` of the job metrics; the names are the CLI's (`adopt-worker jobs run <name>`).
    Job {
        Digest => "digest",
        ExpireApplications => "expire-applications",
        ExpireModeration => "expire-moderation",
        AuditPartitions => "audit-partitions",
        Reclaim => "reclaim",
        Retention => "retention",
    }
);

label_enum!(
    /// `outcome` of [`super::JOB_RUNS`]; the same words as `worker_job_runs.outcome`.
    JobOutcome { Succeeded => "succeeded", Failed => "failed", Skipped => "skipped" }
);

label_enum!(
    /// `event` of [`super::TRACKING_EVENTS`].
    TrackingEvent { Open => "open", Click => "click" }
);

label_enum!(
    /// `via` of [`super::UNSUBSCRIBES`].
    UnsubscribeVia { Page => "page", OneClick => "one_click", Provider => "provider" }
);

label_enum!(
    /// `provider` of the provider webhook metrics.
    Provider { Ses => "ses", Sendgrid => "sendgrid", Postmark => "postmark", Mailgun => "mailgun" }
);

label_enum!(
    /// `outcome` of [`super::PROVIDER_EVENTS`]: what one event of a provider's webhook did.
    ProviderOutcome { Applied => "applied", Ignored => "ignored", NotFound => "not_found" }
);

label_enum!(
    /// `reason` of [`super::PROVIDER_REFUSED`]: why a provider webhook request was refused.
    ProviderRefusal {
        Disabled => "disabled",
        Unauthorized => "unauthorized",
        Stale => "stale",
        Replayed => "replayed",
        Malformed => "malformed",
        CertificateUnavailable => "certificate_unavailable",
    }
);

label_enum!(
    /// `state` of [`super::QUEUE_DEPTH`].
    QueueState { Due => "due", Scheduled => "scheduled", Sending => "sending" }
);

label_enum!(
    /// `result` of [`super::DSN_INGESTED`]: what one message sent to the bounce address came
    /// to (docs/bounces.md "Bounces and complaints").
    DsnResult {
        HardBounce => "hard_bounce",
        SoftBounce => "soft_bounce",
        Failed => "failed",
        Delivered => "delivered",
        Delayed => "delayed",
        Complaint => "complaint",
        Duplicate => "duplicate",
        Ignored => "ignored",
        Unmatched => "unmatched",
    }
);
