//! Where messages go: a pooled SMTP relay, or the local outbox of `.eml` files when no
//! SMTP is configured (the embedded default).

mod data;
mod relay;
mod tls;

pub use relay::Refused;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use super::classify::SendFailure;
use super::message::Outgoing;
use crate::config::{OutboxSettings, SmtpSettings, redact_url};

/// `provider_id` written for emails that went to the outbox.
pub const OUTBOX_PROVIDER_ID: &str = "outbox";

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("invalid SMTP URL {url}: {problem}")]
    BadUrl { url: String, problem: String },
    #[error("smtp.ca_file {}: {problem}", path.display())]
    CaFile { path: PathBuf, problem: String },
    #[error("cannot create outbox directory {dir}: {source}")]
    Outbox {
        dir: PathBuf,
        source: std::io::Error,
    },
}

/// What the receiving side said when it took the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub provider_id: String,
    /// The relay's queue id when its 250 reply names one ("queued as X"), else the
    /// Message-ID, so a relay's webhook can find the row either way.
    pub provider_message_id: Option<String>,
    /// Cc/Bcc recipients the relay refused; the message went to the others.
    pub refused: Vec<Refused>,
    /// The final reply as the relay gave it ("250 2.0.0 Ok: queued as 4F7C21A0B3"), or
    /// where the outbox wrote the message.
    pub reply: String,
}

#[derive(Clone)]
pub enum Transport {
    Smtp(Arc<SmtpRelay>),
    Outbox { dir: PathBuf },
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Transport {
    pub fn from_settings(
        smtp: &SmtpSettings,
        outbox: &OutboxSettings,
    ) -> Result<Transport, TransportError> {
        // Checked even when mail goes to the outbox: a file named but unusable is a mistake
        // better found now than when a relay is configured.
        let roots = match smtp.ca_file() {
            Some(path) => {
                let roots = tls::ExtraRoots::from_pem_file(path).map_err(|problem| {
                    TransportError::CaFile {
                        path: path.to_path_buf(),
                        problem,
                    }
                })?;
                tracing::info!(
                    ca_file = %path.display(),
                    certificates = roots.len(),
                    "smtp: trusting the CA certificates of smtp.ca_file"
                );
                roots
            }
            None => tls::ExtraRoots::default(),
        };
        if smtp.url.trim().is_empty() {
            std::fs::create_dir_all(&outbox.dir).map_err(|source| TransportError::Outbox {
                dir: outbox.dir.clone(),
                source,
            })?;
            return Ok(Transport::Outbox {
                dir: outbox.dir.clone(),
            });
        }
        let url = secure_by_default(&smtp.url)?;
        let server = relay::Server::from_url(&url, &smtp.helo_name, &roots).map_err(|problem| {
            TransportError::BadUrl {
                url: redact_url(&smtp.url),
                problem,
            }
        })?;
        Ok(Transport::Smtp(Arc::new(SmtpRelay {
            connections: relay::Connections::new(server, smtp.pool_size),
            timeout: smtp.timeout(),
            provider_id: smtp.provider_id.clone(),
            description: format!("smtp {}", redact_url(&url)),
        })))
    }

    /// Closes every idle relay connection with QUIT (end of `drain`, shutdown, `send-test`):
    /// the relay logs a clean end instead of a lost connection. Sends in flight keep theirs.
    pub async fn close(&self) {
        if let Transport::Smtp(relay) = self {
            relay.connections.close_idle_now(Duration::ZERO).await;
        }
    }

    /// For logs: the relay URL without its password, or the outbox path.
    pub fn describe(&self) -> String {
        match self {
            Transport::Smtp(relay) => relay.description.clone(),
            Transport::Outbox { dir } => format!("outbox {}", dir.display()),
        }
    }

    /// Whether a message may carry 8bit text: the outbox always; the relay once a connection
    /// to it has announced 8BITMIME (until one that does not).
    pub fn takes_8bit(&self) -> bool {
        match self {
            Transport::Smtp(relay) => relay.connections.takes_8bit(),
            Transport::Outbox { .. } => true,
        }
    }

    /// The longest a send may take before it is cut (zero for the outbox: a local write).
    pub fn timeout(&self) -> Duration {
        match self {
            Transport::Smtp(relay) => relay.timeout,
            Transport::Outbox { .. } => Duration::ZERO,
        }
    }

    /// Waits for a free send slot: one of `smtp.pool_size` relay connections (the outbox
    /// has no limit). Taken before the send, so time spent queueing for a connection is
    /// neither counted against `smtp.timeout_secs` nor unknown to the lease check.
    pub async fn reserve(&self) -> Result<Slot, SendFailure> {
        match self {
            Transport::Smtp(relay) => Ok(Slot(Some(relay.connections.reserve().await?))),
            Transport::Outbox { .. } => Ok(Slot(None)),
        }
    }

    pub async fn send(
        &self,
        slot: Slot,
        email_id: Uuid,
        message: &Outgoing,
        message_id: &str,
        to: &str,
    ) -> Result<Accepted, SendFailure> {
        match self {
            Transport::Smtp(relay) => relay.send(slot, message, message_id, to).await,
            Transport::Outbox { dir } => {
                write_eml(dir, email_id, &message.bytes)
                    .await
                    .map_err(|e| {
                        SendFailure::transient(format!(
                            "outbox write failed in {}: {e}",
                            dir.display()
                        ))
                    })?;
                Ok(Accepted {
                    provider_id: OUTBOX_PROVIDER_ID.to_string(),
                    provider_message_id: Some(message_id.to_string()),
                    refused: Vec::new(),
                    reply: format!(
                        "written to {}",
                        dir.join(format!("{email_id}.eml")).display()
                    ),
                })
            }
        }
    }
}

/// A reserved send slot (see [`Transport::reserve`]); dropping it frees the slot.
pub struct Slot(Option<tokio::sync::OwnedSemaphorePermit>);

/// The SMTP relay: pooled connections (see `relay`), every send bounded by `timeout`. A
/// send cut short drops its connection, which was left mid-command.
pub struct SmtpRelay {
    connections: Arc<relay::Connections>,
    timeout: Duration,
    provider_id: String,
    description: String,
}

impl SmtpRelay {
    async fn send(
        &self,
        slot: Slot,
        message: &Outgoing,
        message_id: &str,
        to: &str,
    ) -> Result<Accepted, SendFailure> {
        let permit = match slot.0 {
            Some(p) => p,
            None => self.connections.reserve().await?,
        };
        let delivered = match tokio::time::timeout(
            self.timeout,
            self.connections.send(permit, message, to),
        )
        .await
        {
            Ok(result) => result?,
            Err(_) => {
                return Err(SendFailure::transient(format!(
                    "timed out after {}s waiting for the SMTP server; the message may have been delivered",
                    self.timeout.as_secs()
                )));
            }
        };
        let text = delivered.response.message().collect::<Vec<_>>().join(" ");
        Ok(Accepted {
            provider_id: self.provider_id.clone(),
            provider_message_id: Some(queue_id(&text).unwrap_or_else(|| message_id.to_string())),
            refused: delivered.refused,
            reply: format!("{} {text}", delivered.response.code()),
        })
    }
}

/// `smtp://` to anything but loopback means STARTTLS is required unless the URL says
/// otherwise (`?tls=none|opportunistic`), so credentials never cross a network in clear.
fn secure_by_default(raw: &str) -> Result<String, TransportError> {
    let mut url = url::Url::parse(raw).map_err(|e| TransportError::BadUrl {
        url: redact_url(raw),
        problem: e.to_string(),
    })?;
    let tls = url
        .query_pairs()
        .find(|(k, _)| k == "tls")
        .map(|(_, v)| v.into_owned());
    match (url.scheme(), tls.as_deref()) {
        ("smtp", Some("none")) => {
            // lettre's spelling of "plain" is no tls parameter at all.
            let rest: Vec<(String, String)> = url
                .query_pairs()
                .filter(|(k, _)| k != "tls")
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            url.set_query(None);
            if !rest.is_empty() {
                url.query_pairs_mut().extend_pairs(rest);
            }
        }
        ("smtp", None) => {
            let loopback = matches!(
                url.host_str(),
                Some("localhost" | "127.0.0.1" | "[::1]" | "::1")
            ) || url.host_str().is_some_and(|h| h.starts_with("127."));
            if !loopback {
                url.query_pairs_mut().append_pair("tls", "required");
            }
        }
        ("smtp" | "smtps", _) => {}
        (other, _) => {
            return Err(TransportError::BadUrl {
                url: redact_url(raw),
                problem: format!("scheme {other:?} is not smtp or smtps"),
            });
        }
    }
    Ok(url.to_string())
}

/// "250 2.0.0 Ok: queued as 4F7C21A0B3" → "4F7C21A0B3".
fn queue_id(reply: &str) -> Option<String> {
    let lower = reply.to_ascii_lowercase();
    let at = lower.find("queued as ")? + "queued as ".len();
    let id: String = reply[at..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@' | '<' | '>'))
        .collect();
    (!id.is_empty()).then_some(id)
}

/// Writes `<email_id>.eml` atomically (temp file, then rename): a reader never sees half a
/// message, and a retry overwrites rather than duplicates.
async fn write_eml(dir: &Path, email_id: Uuid, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{email_id}.eml.tmp"));
    let path = dir.join(format!("{email_id}.eml"));
    tokio::fs::write(&tmp, bytes).await?;
    tokio::fs::rename(&tmp, &path).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_id_is_taken_from_the_reply() {
        assert_eq!(
            queue_id("2.0.0 Ok: queued as 4F7C21A0B3").as_deref(),
            Some("4F7C21A0B3")
        );
        assert_eq!(queue_id("OK id=1abc"), None);
    }

    #[test]
    fn remote_plain_smtp_requires_starttls() {
        assert!(
            secure_by_default("smtp://u:p@relay.example:587")
                .unwrap()
                .contains("tls=required")
        );
        assert!(
            !secure_by_default("smtp://127.0.0.1:2525")
                .unwrap()
                .contains("tls")
        );
        assert!(
            !secure_by_default("smtp://relay.example:25?tls=none")
                .unwrap()
                .contains("tls")
        );
        assert!(secure_by_default("http://x").is_err());
    }
}
