//! The SMTP relay's connections: at most `pool_size` open at once, reused message after
//! message, with `TCP_NODELAY` set.
//!
//! Why not lettre's own pool (measured in bench/results, docs/performance.md "Performance"):
//! - its sockets keep Nagle's algorithm on, so the final `\r\n.\r\n` of every message, a
//!   separate small write, waits for the server's delayed ACK: about 40 ms per message on
//!   Linux, whatever the server's speed;
//! - it sends NOOP before every reuse, one more round trip per message;
//! - `max_size` bounds only the idle connections: with more sends in flight than that,
//!   extra connections are opened and closed (QUIT) after each message.
//!
//! Here a connection idle for less than [`CHECK_AFTER_IDLE`] is used as it is; one idle
//! longer is checked with NOOP first, and one idle past [`IDLE_TIMEOUT`] is closed. A
//! connection that saw any error is never reused (lettre closes it). Implicit TLS
//! (`smtps://`) connections are opened by lettre and so keep Nagle on.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use lettre::transport::smtp::authentication::{Credentials, DEFAULT_MECHANISMS};
use lettre::transport::smtp::client::{AsyncSmtpConnection, Tls};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt, Rset};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
use lettre::transport::smtp::response::Response;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::super::classify::SendFailure;
use super::super::message::Outgoing;
use super::data::DataContent;
use super::tls::{self, ExtraRoots};

/// A pooled connection idle longer than this is checked with NOOP before use.
const CHECK_AFTER_IDLE: Duration = Duration::from_secs(5);
/// How long a QUIT may wait for the server's reply.
const QUIT_TIMEOUT: Duration = Duration::from_secs(2);
/// A pooled connection idle longer than this is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Where and how to connect, from the relay URL.
#[derive(Clone)]
pub(super) struct Server {
    host: String,
    port: u16,
    tls: Tls,
    credentials: Option<Credentials>,
    hello: ClientId,
}

impl Server {
    /// Reads an URL already passed through `secure_by_default`, as lettre's `from_url`
    /// does: `smtp://` plain (port 25), `?tls=required|opportunistic` STARTTLS (587),
    /// `smtps://` implicit TLS (465), user and password as credentials, a path as the
    /// EHLO name. `helo_name`, when not empty, wins over the path. With TLS, the relay's
    /// certificate must chain to the bundled roots, the system store or `roots`.
    pub(super) fn from_url(
        raw: &str,
        helo_name: &str,
        roots: &ExtraRoots,
    ) -> Result<Server, String> {
        let url = url::Url::parse(raw).map_err(|e| e.to_string())?;
        let host = url
            .host_str()
            .ok_or("the URL names no host")?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let tls_param = url
            .query_pairs()
            .find(|(k, _)| k == "tls")
            .map(|(_, v)| v.into_owned());
        let params = || roots.parameters(&host);
        let (tls, default_port) = match (url.scheme(), tls_param.as_deref()) {
            ("smtp", None) => (Tls::None, 25),
            ("smtp", Some("required")) => (Tls::Required(params()?), 587),
            ("smtp", Some("opportunistic")) => (Tls::Opportunistic(params()?), 587),
            ("smtps", _) => (Tls::Wrapper(params()?), 465),
            (scheme, tls) => {
                return Err(format!(
                    "unknown scheme {scheme:?} or tls parameter {tls:?}"
                ));
            }
        };
        let credentials = match url.password() {
            Some(password) => Some(Credentials::new(
                percent_decode(url.username())?,
                percent_decode(password)?,
            )),
            None => None,
        };
        let path = url.path().trim_matches('/');
        let hello = if !helo_name.is_empty() {
            ClientId::Domain(helo_name.to_string())
        } else if !path.is_empty() {
            ClientId::Domain(path.to_string())
        } else {
            ClientId::default()
        };
        Ok(Server {
            host,
            port: url.port().unwrap_or(default_port),
            tls,
            credentials,
            hello,
        })
    }
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = s.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "the URL's user or password is not UTF-8".to_string())
}

struct Idle {
    conn: AsyncSmtpConnection,
    since: Instant,
}

/// The relay's connections. Every send holds one of `pool_size` permits for its whole
/// duration, so no more connections than that are ever open.
pub(super) struct Connections {
    server: Server,
    permits: Arc<Semaphore>,
    idle: Mutex<Vec<Idle>>,
    reaper: std::sync::OnceLock<()>,
    /// The last connection opened announced 8BITMIME.
    eight_bit: AtomicBool,
}

impl Connections {
    pub(super) fn new(server: Server, pool_size: u32) -> Arc<Connections> {
        Arc::new(Connections {
            server,
            permits: Arc::new(Semaphore::new(pool_size.max(1) as usize)),
            idle: Mutex::new(Vec::new()),
            reaper: std::sync::OnceLock::new(),
            eight_bit: AtomicBool::new(false),
        })
    }

    pub(super) fn takes_8bit(&self) -> bool {
        self.eight_bit.load(Ordering::Relaxed)
    }

    /// Waits for one of the `pool_size` send permits. It is taken before the send's
    /// timeout starts: the timeout bounds the SMTP conversation, not the queue for a
    /// connection, so a message is never cut off (and delivered again) for having waited.
    pub(super) async fn reserve(&self) -> Result<OwnedSemaphorePermit, SendFailure> {
        self.permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| SendFailure::transient("smtp transport shut down"))
    }

    /// Sends one message on a pooled (or new) connection and returns the server's final
    /// reply with the envelope recipients it refused; `_permit` (from
    /// [`Connections::reserve`]) is held until it is done. Not bounded in time here: the
    /// caller wraps it in its timeout, and a send cut short drops its connection with it.
    ///
    /// `primary` is the row's To address: only its refusal fails the send. A Cc or Bcc the
    /// server refuses is returned in [`Delivered::refused`] and the message goes to the
    /// recipients it accepted (lettre's own `send` gives up on the first refused RCPT).
    pub(super) async fn send(
        self: &Arc<Self>,
        _permit: OwnedSemaphorePermit,
        message: &Outgoing,
        primary: &str,
    ) -> Result<Delivered, SendFailure> {
        self.reaper.get_or_init(|| {
            tokio::spawn(close_idle(Arc::downgrade(self)));
        });
        let mut conn = self.checkout().await?;
        let bytes = &message.bytes;
        let envelope = &message.envelope;
        let mut mail_options = Vec::new();
        // An IDN domain is already punycode (message::ascii_domain); what is left is a
        // non-ASCII local part, which only an SMTPUTF8 server can take. Checked before the
        // 8bit test: its header is what makes the message 8bit, and no retry cures it.
        let non_ascii = |a: &lettre::Address| !AsRef::<str>::as_ref(a).is_ascii();
        if envelope.to().iter().chain(envelope.from()).any(non_ascii) {
            if !conn.server_info().supports_feature(Extension::SmtpUtfEight) {
                self.checkin(conn);
                let who = envelope
                    .to()
                    .iter()
                    .chain(envelope.from())
                    .find(|a| non_ascii(a))
                    .map(|a| a.to_string())
                    .unwrap_or_default();
                return Err(SendFailure::permanent(format!(
                    "the address {who} has a non-ASCII local part and the relay does not offer SMTPUTF8"
                )));
            }
            mail_options.push(MailParameter::SmtpUtfEight);
        }
        if !bytes.is_ascii() {
            // Built as 8bit for a relay that announced 8BITMIME, but this connection's
            // server does not: retried, and built 7bit-safe then.
            if !conn.server_info().supports_feature(Extension::EightBitMime) {
                self.eight_bit.store(false, Ordering::Relaxed);
                self.checkin(conn);
                return Err(SendFailure::transient(
                    "the relay stopped announcing 8BITMIME; the email is retried encoded for 7bit",
                ));
            }
            mail_options.push(MailParameter::Body(MailBodyParameter::EightBitMime));
        }
        match transaction(&mut conn, envelope, bytes, primary, mail_options).await {
            Ok(delivered) => {
                self.checkin(conn);
                Ok(delivered)
            }
            Err((e, Connection::Usable)) => {
                // The server refused in words and still listens: reset its transaction and
                // keep the connection.
                if conn.command(Rset).await.is_ok() {
                    self.checkin(conn);
                } else {
                    conn.abort().await;
                }
                Err(e)
            }
            Err((e, Connection::Broken)) => {
                conn.abort().await;
                Err(e)
            }
        }
    }

    fn take_idle(&self) -> Option<Idle> {
        match self.idle.lock() {
            Ok(mut idle) => idle.pop(),
            Err(poisoned) => poisoned.into_inner().pop(),
        }
    }

    fn checkin(&self, conn: AsyncSmtpConnection) {
        if conn.has_broken() {
            return;
        }
        let idle = Idle {
            conn,
            since: Instant::now(),
        };
        match self.idle.lock() {
            Ok(mut list) => list.push(idle),
            Err(poisoned) => poisoned.into_inner().push(idle),
        }
    }

    async fn checkout(&self) -> Result<AsyncSmtpConnection, SendFailure> {
        while let Some(Idle { mut conn, since }) = self.take_idle() {
            let idle_for = since.elapsed();
            if idle_for > IDLE_TIMEOUT {
                conn.abort().await;
            } else if idle_for < CHECK_AFTER_IDLE || conn.test_connected().await {
                return Ok(conn);
            }
        }
        self.connect().await
    }

    async fn connect(&self) -> Result<AsyncSmtpConnection, SendFailure> {
        let s = &self.server;
        let smtp_err = |e: lettre::transport::smtp::Error| {
            tls::handshake_failure(&e, &s.host).unwrap_or_else(|| SendFailure::from_smtp_error(&e))
        };
        let mut conn = if let Tls::Wrapper(params) = &s.tls {
            AsyncSmtpConnection::connect_tokio1(
                (s.host.as_str(), s.port),
                None,
                &s.hello,
                Some(params.clone()),
                None,
            )
            .await
            .map_err(smtp_err)?
        } else {
            let tcp = tokio::net::TcpStream::connect((s.host.as_str(), s.port))
                .await
                .map_err(|e| SendFailure::from_io(&e, true))?;
            // The point of this module: see its documentation.
            tcp.set_nodelay(true)
                .map_err(|e| SendFailure::from_io(&e, true))?;
            let mut conn = AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &s.hello)
                .await
                .map_err(smtp_err)?;
            match &s.tls {
                Tls::Required(params) => conn
                    .starttls(params.clone(), &s.hello)
                    .await
                    .map_err(smtp_err)?,
                Tls::Opportunistic(params) if conn.can_starttls() => conn
                    .starttls(params.clone(), &s.hello)
                    .await
                    .map_err(smtp_err)?,
                _ => {}
            }
            conn
        };
        self.eight_bit.store(
            conn.server_info().supports_feature(Extension::EightBitMime),
            Ordering::Relaxed,
        );
        if let Some(credentials) = &s.credentials {
            conn.auth(DEFAULT_MECHANISMS, credentials)
                .await
                .map_err(smtp_err)?;
        }
        Ok(conn)
    }

    /// Closes every idle connection (QUIT). Sends in flight keep theirs.
    pub(super) async fn close_idle_now(&self, older_than: Duration) {
        let stale: Vec<Idle> = {
            let mut guard = match self.idle.lock() {
                Ok(g) => g,
                Err(poisoned) => poisoned.into_inner(),
            };
            let (stale, keep) = guard
                .drain(..)
                .partition(|i| i.since.elapsed() >= older_than);
            *guard = keep;
            stale
        };
        for mut i in stale {
            // QUIT and its reply, as a polite client does, but never waiting long on a
            // server that stopped answering; the connection closes when dropped.
            if tokio::time::timeout(QUIT_TIMEOUT, i.conn.quit())
                .await
                .is_err()
            {
                tracing::debug!("the relay did not answer QUIT in time; connection dropped");
            }
        }
    }
}

/// What the server did with a message it took.
#[derive(Debug)]
pub(super) struct Delivered {
    /// The reply to the end of DATA.
    pub(super) response: Response,
    /// Cc/Bcc recipients refused at RCPT; the message went to the others.
    pub(super) refused: Vec<Refused>,
}

/// An envelope recipient the server refused, with its reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub address: String,
    pub failure: SendFailure,
}

/// Whether a connection may be used again after a failed transaction.
enum Connection {
    Usable,
    Broken,
}

/// MAIL, one RCPT per recipient, DATA. A refusal of `primary` (or of MAIL or DATA) fails
/// the transaction; a refused other recipient is noted and skipped.
async fn transaction(
    conn: &mut AsyncSmtpConnection,
    envelope: &lettre::address::Envelope,
    bytes: &[u8],
    primary: &str,
    mail_options: Vec<MailParameter>,
) -> Result<Delivered, (SendFailure, Connection)> {
    // A negative reply leaves the connection usable; anything else (I/O, a reply that does
    // not parse) leaves it mid-command.
    let fail = |e: lettre::transport::smtp::Error| {
        let state = if e.is_transient() || e.is_permanent() {
            Connection::Usable
        } else {
            Connection::Broken
        };
        (SendFailure::from_smtp_error(&e), state)
    };
    conn.command(Mail::new(envelope.from().cloned(), mail_options))
        .await
        .map_err(fail)?;
    let mut refused = Vec::new();
    for rcpt in envelope.to() {
        match conn.command(Rcpt::new(rcpt.clone(), vec![])).await {
            Ok(_) => {}
            Err(e) if AsRef::<str>::as_ref(rcpt).eq_ignore_ascii_case(primary) => {
                return Err(fail(e));
            }
            Err(e) if e.is_transient() || e.is_permanent() => refused.push(Refused {
                address: rcpt.to_string(),
                failure: SendFailure::from_smtp_error(&e),
            }),
            Err(e) => return Err(fail(e)),
        }
    }
    if refused.len() == envelope.to().len() {
        // Only reachable when no envelope recipient is `primary`: nothing to send to.
        let first = refused.swap_remove(0);
        return Err((first.failure, Connection::Usable));
    }
    conn.command(Data).await.map_err(fail)?;
    let response = match DataContent::new(bytes) {
        Some(content) => conn.command(content).await,
        None => conn.message(bytes).await,
    }
    .map_err(fail)?;
    Ok(Delivered { response, refused })
}

/// Closes connections idle past [`IDLE_TIMEOUT`], so an idle worker does not hold the
/// relay's connections open; ends when the relay is dropped.
async fn close_idle(connections: Weak<Connections>) {
    loop {
        tokio::time::sleep(IDLE_TIMEOUT / 2).await;
        let Some(c) = connections.upgrade() else {
            return;
        };
        c.close_idle_now(IDLE_TIMEOUT).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_read_like_lettre_reads_them() {
        let none = ExtraRoots::default();
        let s = Server::from_url("smtp://127.0.0.1:2525", "", &none).unwrap();
        assert_eq!((s.host.as_str(), s.port), ("127.0.0.1", 2525));
        assert!(matches!(s.tls, Tls::None));
        assert!(s.credentials.is_none());

        let s = Server::from_url(
            "smtp://u%40x:p%2Fw@relay.example?tls=required",
            "me.example",
            &none,
        )
        .unwrap();
        assert_eq!(s.port, 587);
        assert!(matches!(s.tls, Tls::Required(_)));
        assert_eq!(
            s.credentials,
            Some(Credentials::new("u@x".into(), "p/w".into()))
        );
        assert_eq!(s.hello, ClientId::Domain("me.example".into()));

        let s = Server::from_url("smtps://relay.example/helo.example", "", &none).unwrap();
        assert_eq!(s.port, 465);
        assert!(matches!(s.tls, Tls::Wrapper(_)));
        assert_eq!(s.hello, ClientId::Domain("helo.example".into()));

        assert!(Server::from_url("smtp://relay.example?tls=bogus", "", &none).is_err());
    }
}
