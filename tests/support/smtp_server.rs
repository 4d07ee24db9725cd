//! A real, in-process SMTP server for integration tests.
//!
//! [`TestSmtp::start`] binds `127.0.0.1:0` and speaks enough ESMTP for lettre's
//! SMTP client (greeting, `EHLO`/`HELO`, `MAIL`, `RCPT`, `DATA`, `RSET`, `NOOP`,
//! `QUIT`), with several messages per connection and any number of concurrent
//! connections. Every accepted message is recorded as a [`ReceivedMessage`].
//!
//! Faults are injected at run time with [`Rule`]s:
//!
//! ```ignore
//! let smtp = TestSmtp::start().await;
//! smtp.add_rule(Rule::reply(Command::Rcpt, 451, "4.7.1 greylisted").matching("bob@").times(2));
//! smtp.add_rule(Rule::drop(Command::DataEnd).once());
//! smtp.add_rule(Rule::delay(Command::Mail, Duration::from_secs(5)));
//! ```
//!
//! [`TestSmtp::start_with_starttls`] also offers `STARTTLS` (RFC 3207) with the given
//! rustls server configuration; the session starts over inside TLS, and every message
//! records whether it came over TLS.
//!
//! Self-contained: uses only `std`, `tokio`, `tokio-rustls` and `uuid` (v4).
#![allow(dead_code)]

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;

/// Value advertised with the `SIZE` extension; bigger messages get `552`.
pub const MAX_MESSAGE_SIZE: usize = 50 * 1024 * 1024;

/// Name the server uses for itself in the greeting and the `EHLO` reply.
const SERVER_NAME: &str = "test-smtp.localhost";

// ---------------------------------------------------------------------------
// Public types
// ---------------------------------------------------------------------------

/// An SMTP protocol step that can be counted and that rules can target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    /// A new session, before the `220` greeting. Rule argument: the peer address.
    Connect,
    /// `EHLO` or `HELO`. Rule argument: the client's hostname.
    Ehlo,
    /// `MAIL FROM:`. Rule argument: everything after the verb, e.g. `FROM:<a@x> BODY=8BITMIME`.
    Mail,
    /// `RCPT TO:`. Rule argument: everything after the verb, e.g. `TO:<bob@x>`.
    Rcpt,
    /// `DATA` (the `354` step). Rule argument: the envelope, `"<from> <rcpt1> <rcpt2>..."`.
    Data,
    /// The final `.` ending the message. Rule argument: the message text.
    DataEnd,
    /// `RSET`.
    Rset,
    /// `NOOP`.
    Noop,
    /// `QUIT`.
    Quit,
    /// `STARTTLS` (offered only by [`TestSmtp::start_with_starttls`]; answered with `502`
    /// otherwise, and once TLS is on). Rule argument: empty.
    StartTls,
    /// Any other verb (answered with `500`). Rule argument: the whole line.
    Unknown,
}

impl Command {
    fn from_verb(verb: &str) -> Command {
        match verb.to_ascii_uppercase().as_str() {
            "EHLO" | "HELO" => Command::Ehlo,
            "MAIL" => Command::Mail,
            "RCPT" => Command::Rcpt,
            "DATA" => Command::Data,
            "RSET" => Command::Rset,
            "NOOP" => Command::Noop,
            "QUIT" => Command::Quit,
            "STARTTLS" => Command::StartTls,
            _ => Command::Unknown,
        }
    }
}

/// What a matching [`Rule`] does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send this reply instead of the normal one. `text` may contain `\n` for a
    /// multi-line reply. A code below 400 keeps the command's normal effect
    /// (e.g. `Reply(250, ..)` on `DataEnd` still records the message); 4xx/5xx
    /// rejects it (on `DataEnd` the message is not recorded; on `Connect` the
    /// greeting is sent and the connection closed, like a refusing server).
    Reply(u16, String),
    /// Stall this long, then go on as normal (or with the outcome of another
    /// matching rule). On `DataEnd` the message is recorded after the stall,
    /// whether or not the client is still waiting.
    Delay(Duration),
    /// Close the TCP connection without replying. On `DataEnd` the message is
    /// not recorded.
    Drop,
    /// `DataEnd` only: record the message, then close the connection without
    /// sending the `250` (the reply to the final dot is lost). On any other
    /// command it behaves like [`Action::Drop`].
    AcceptThenDrop,
}

/// A fault-injection rule; see [`TestSmtp::add_rule`].
///
/// Rules are checked in the order they were added. All matching `Delay` rules
/// add up; the first matching rule with another action decides the outcome.
/// Every rule that takes effect uses up one of its `times`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub on: Command,
    /// Substring (ASCII case-insensitive) the command's argument must contain;
    /// see [`Command`] for what the argument is for each step.
    pub matching: Option<String>,
    pub action: Action,
    /// `None`: always. `Some(n)`: the first `n` matches, then the rule is spent.
    pub times: Option<u32>,
}

impl Rule {
    pub fn new(on: Command, action: Action) -> Rule {
        Rule {
            on,
            matching: None,
            action,
            times: None,
        }
    }

    /// `Rule::reply(Command::Rcpt, 451, "4.7.1 greylisted, try again in 60 seconds")`
    pub fn reply(on: Command, code: u16, text: impl Into<String>) -> Rule {
        Rule::new(on, Action::Reply(code, text.into()))
    }

    /// Close the connection without replying.
    pub fn drop(on: Command) -> Rule {
        Rule::new(on, Action::Drop)
    }

    /// Stall before the normal reply.
    pub fn delay(on: Command, duration: Duration) -> Rule {
        Rule::new(on, Action::Delay(duration))
    }

    /// On `DataEnd`: record the message, then close without the `250`.
    pub fn accept_then_drop() -> Rule {
        Rule::new(Command::DataEnd, Action::AcceptThenDrop)
    }

    /// Only apply when the command's argument contains `needle` (ASCII case-insensitive).
    pub fn matching(mut self, needle: impl Into<String>) -> Rule {
        self.matching = Some(needle.into());
        self
    }

    /// Apply to the first `n` matches only.
    pub fn times(mut self, n: u32) -> Rule {
        self.times = Some(n);
        self
    }

    /// Same as `.times(1)`.
    pub fn once(self) -> Rule {
        self.times(1)
    }

    fn is_spent(&self) -> bool {
        self.times == Some(0)
    }

    fn matches(&self, on: Command, argument_lower: &str) -> bool {
        self.on == on
            && !self.is_spent()
            && self
                .matching
                .as_ref()
                .is_none_or(|needle| argument_lower.contains(&needle.to_ascii_lowercase()))
    }

    fn use_once(&mut self) {
        if let Some(n) = self.times.as_mut() {
            *n = n.saturating_sub(1);
        }
    }
}

/// A message the server accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    /// Reverse path from `MAIL FROM:<..>`, without the brackets (`""` for `<>`).
    pub mail_from: String,
    /// Forward paths from each accepted `RCPT TO:<..>`, without the brackets.
    pub rcpt_to: Vec<String>,
    /// The raw RFC 5322 message as received, with dot-stuffing undone and line
    /// endings as sent (everything before the terminating `.` line).
    pub data: Vec<u8>,
    /// The id sent back in `250 2.0.0 Ok: queued as <ID>`.
    pub queue_id: String,
    pub received_at: Instant,
    /// The message came inside TLS (after `STARTTLS`).
    pub tls: bool,
}

impl ReceivedMessage {
    /// First header called `name` (case-insensitive), unfolded and trimmed.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers()
            .into_iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// All headers called `name` (case-insensitive), unfolded and trimmed.
    pub fn header_all(&self, name: &str) -> Vec<String> {
        self.headers()
            .into_iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
            .collect()
    }

    /// All headers in order as `(name, unfolded value)`.
    pub fn headers(&self) -> Vec<(String, String)> {
        let text = self.text();
        let mut headers: Vec<(String, String)> = Vec::new();
        for line in text.split('\n') {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.is_empty() {
                break;
            }
            if line.starts_with([' ', '\t']) {
                // Continuation line: unfolding removes only the line break.
                if let Some((_, value)) = headers.last_mut() {
                    value.push_str(line);
                }
            } else if let Some((name, value)) = line.split_once(':') {
                headers.push((name.trim().to_owned(), value.to_owned()));
            }
        }
        for (_, value) in &mut headers {
            *value = value.trim().to_owned();
        }
        headers
    }

    /// The whole message as (lossy) UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }

    /// Everything after the blank line ending the header section (lossy UTF-8).
    pub fn body(&self) -> String {
        let text = self.text();
        let crlf = text.find("\r\n\r\n").map(|i| i + 4);
        let lf = text.find("\n\n").map(|i| i + 2);
        match (crlf, lf) {
            (Some(a), Some(b)) => text[a.min(b)..].to_owned(),
            (Some(start), None) | (None, Some(start)) => text[start..].to_owned(),
            (None, None) => String::new(),
        }
    }
}

/// An accepted message whose `250` the client may not have seen; see
/// [`TestSmtp::unconfirmed`].
#[derive(Debug, Clone)]
pub struct Unconfirmed {
    pub message: ReceivedMessage,
    /// How long the `250` was held back after the final dot; `None` when it was never
    /// sent (withheld, or the connection was gone).
    pub reply_delay: Option<Duration>,
}

/// The test SMTP server. Dropping it stops the server: the listening socket
/// is closed and every open session is cut.
pub struct TestSmtp {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept_task: JoinHandle<()>,
}

impl TestSmtp {
    /// Bind `127.0.0.1:0` and start serving.
    pub async fn start() -> TestSmtp {
        TestSmtp::serve(None).await
    }

    /// Like [`TestSmtp::start`], and offers `STARTTLS` with this certificate configuration.
    /// A failed handshake ends the connection and is noted in [`TestSmtp::tls_failures`].
    pub async fn start_with_starttls(config: Arc<ServerConfig>) -> TestSmtp {
        TestSmtp::serve(Some(TlsAcceptor::from(config))).await
    }

    async fn serve(tls: Option<TlsAcceptor>) -> TestSmtp {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .unwrap_or_else(|e| panic!("test SMTP server: cannot bind 127.0.0.1:0: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("test SMTP server: no local address: {e}"));
        let shared = Arc::new(Shared {
            tls,
            ..Shared::default()
        });
        let accept_task = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        TestSmtp {
            addr,
            shared,
            accept_task,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `smtp://127.0.0.1:PORT` (plain SMTP, no TLS, for lettre's `from_url`).
    pub fn url(&self) -> String {
        format!("smtp://{}", self.addr)
    }

    pub fn add_rule(&self, rule: Rule) {
        self.shared.lock().rules.push(rule);
    }

    pub fn clear_rules(&self) {
        self.shared.lock().rules.clear();
    }

    /// The rules not used up yet (a rule with `times(n)` leaves after its `n`th match).
    pub fn pending_rules(&self) -> Vec<Rule> {
        self.shared.lock().rules.clone()
    }

    /// While on, every accepted TCP connection is closed at once, without a greeting.
    pub fn set_refuse_connections(&self, on: bool) {
        self.shared.refuse.store(on, Ordering::SeqCst);
    }

    /// All messages accepted so far, in order.
    pub fn messages(&self) -> Vec<ReceivedMessage> {
        self.shared.lock().messages.clone()
    }

    pub fn message_count(&self) -> usize {
        self.shared.lock().messages.len()
    }

    /// TCP connections accepted, including the ones closed by
    /// `set_refuse_connections(true)` (those are not counted as `Command::Connect`).
    pub fn connections(&self) -> usize {
        self.shared.lock().connections
    }

    /// How many times `verb` was seen (`Connect`: sessions started; `DataEnd`:
    /// message bodies fully received, whatever the outcome).
    pub fn commands(&self, verb: Command) -> usize {
        self.shared.lock().commands.get(&verb).copied().unwrap_or(0)
    }

    /// Wait until at least `n` messages were accepted or `timeout` passed;
    /// returns all messages accepted by then (check the length).
    pub async fn wait_for_messages(&self, n: usize, timeout: Duration) -> Vec<ReceivedMessage> {
        self.wait_until(timeout, |state| state.messages.len() >= n)
            .await;
        self.messages()
    }

    /// Wait until `verb` was seen at least `n` times or `timeout` passed;
    /// returns the count by then.
    pub async fn wait_for_commands(&self, verb: Command, n: usize, timeout: Duration) -> usize {
        self.wait_until(timeout, |state| {
            state.commands.get(&verb).copied().unwrap_or(0) >= n
        })
        .await;
        self.commands(verb)
    }

    /// Accepted messages whose `250` the client may never have seen: the reply was
    /// withheld ([`Action::AcceptThenDrop`]), delayed by a `DataEnd` rule (the client may
    /// have timed out meanwhile), or could not be written. A client that retries these
    /// sends a duplicate; every other accepted message was confirmed at once.
    pub fn unconfirmed(&self) -> Vec<Unconfirmed> {
        self.shared.lock().unconfirmed.clone()
    }

    /// Why each failed TLS handshake failed, as the server saw it, in order.
    pub fn tls_failures(&self) -> Vec<String> {
        self.shared.lock().tls_failures.clone()
    }

    /// Forget the recorded messages (counters and rules are kept).
    pub fn clear_messages(&self) {
        let mut state = self.shared.lock();
        state.messages.clear();
        state.unconfirmed.clear();
    }

    async fn wait_until(&self, timeout: Duration, done: impl Fn(&State) -> bool) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.changed.notified();
            let mut notified = std::pin::pin!(notified);
            // Register before checking so a change in between is not missed.
            notified.as_mut().enable();
            if done(&self.shared.lock()) {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return;
            }
        }
    }
}

impl Drop for TestSmtp {
    fn drop(&mut self) {
        // The accept task owns the listener and the JoinSet of sessions, so
        // aborting it closes the port and cuts every session.
        self.accept_task.abort();
    }
}

impl std::fmt::Debug for TestSmtp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestSmtp")
            .field("addr", &self.addr)
            .finish()
    }
}

// ---------------------------------------------------------------------------
// Shared state
// ---------------------------------------------------------------------------

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// Woken on every new message and every counted command.
    changed: Notify,
    refuse: AtomicBool,
    /// Set: `STARTTLS` is offered.
    tls: Option<TlsAcceptor>,
}

#[derive(Default)]
struct State {
    rules: Vec<Rule>,
    messages: Vec<ReceivedMessage>,
    unconfirmed: Vec<Unconfirmed>,
    connections: usize,
    commands: HashMap<Command, usize>,
    tls_failures: Vec<String>,
}

/// What the rules decided for one step.
enum Outcome {
    Normal,
    Reply(Reply),
    Drop,
    AcceptThenDrop,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn count(&self, cmd: Command) {
        *self.lock().commands.entry(cmd).or_insert(0) += 1;
        self.changed.notify_waiters();
    }

    fn count_connection(&self) {
        self.lock().connections += 1;
        self.changed.notify_waiters();
    }

    fn record(&self, message: ReceivedMessage) {
        self.lock().messages.push(message);
        self.changed.notify_waiters();
    }

    fn record_tls_failure(&self, why: String) {
        self.lock().tls_failures.push(why);
        self.changed.notify_waiters();
    }

    fn record_unconfirmed(&self, message: ReceivedMessage, reply_delay: Option<Duration>) {
        self.lock().unconfirmed.push(Unconfirmed {
            message,
            reply_delay,
        });
    }

    /// Apply the rules for one step: total delay and the outcome.
    fn evaluate(&self, cmd: Command, argument: &str) -> (Duration, Outcome) {
        let argument_lower = argument.to_ascii_lowercase();
        let mut state = self.lock();
        if !state.rules.iter().any(|r| r.on == cmd) {
            return (Duration::ZERO, Outcome::Normal);
        }
        let mut delay = Duration::ZERO;
        let mut outcome = Outcome::Normal;
        for rule in state.rules.iter_mut() {
            if !rule.matches(cmd, &argument_lower) {
                continue;
            }
            match &rule.action {
                Action::Delay(d) => delay += *d,
                _ if !matches!(outcome, Outcome::Normal) => continue,
                Action::Reply(code, text) => outcome = Outcome::Reply(Reply::custom(*code, text)),
                Action::Drop => outcome = Outcome::Drop,
                Action::AcceptThenDrop => outcome = Outcome::AcceptThenDrop,
            }
            rule.use_once();
        }
        state.rules.retain(|r| !r.is_spent());
        (delay, outcome)
    }
}

// ---------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut sessions = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    shared.count_connection();
                    if shared.refuse.load(Ordering::SeqCst) {
                        drop(stream);
                        continue;
                    }
                    let shared = Arc::clone(&shared);
                    sessions.spawn(async move {
                        // I/O errors just end the session (the client went away).
                        let _ = session(shared, stream, peer).await;
                    });
                }
                // E.g. out of file descriptors: back off instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
        }
    }
}

/// An SMTP reply: one code and one or more text lines.
#[derive(Debug, Clone)]
struct Reply {
    code: u16,
    lines: Vec<String>,
}

impl Reply {
    fn new(code: u16, text: &str) -> Reply {
        Reply {
            code,
            lines: vec![text.to_owned()],
        }
    }

    fn custom(code: u16, text: &str) -> Reply {
        Reply {
            code,
            lines: text
                .split('\n')
                .map(|l| l.strip_suffix('\r').unwrap_or(l).to_owned())
                .collect(),
        }
    }

    fn is_positive(&self) -> bool {
        self.code < 400
    }

    fn to_wire(&self) -> Vec<u8> {
        let mut out = String::new();
        let last = self.lines.len().saturating_sub(1);
        for (i, line) in self.lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            out.push_str(&format!("{}{}{}\r\n", self.code, sep, line));
        }
        out.into_bytes()
    }
}

/// Transaction and session state of one connection.
#[derive(Default)]
struct Session {
    greeted: bool,
    /// `STARTTLS` is offered: the server has a certificate and TLS is not on yet.
    tls_offered: bool,
    /// Inside TLS.
    tls: bool,
    mail_from: Option<String>,
    rcpt_to: Vec<String>,
}

impl Session {
    fn reset(&mut self) {
        self.mail_from = None;
        self.rcpt_to.clear();
    }

    fn envelope(&self) -> String {
        let mut s = format!("<{}>", self.mail_from.as_deref().unwrap_or(""));
        for r in &self.rcpt_to {
            s.push_str(&format!(" <{r}>"));
        }
        s
    }
}

/// The state change a command makes if its reply is positive.
enum Effect {
    None,
    Greet,
    SetFrom(String),
    AddRcpt(String),
    EnterData,
    Reset,
    Close,
    StartTls,
}

async fn send(wr: &mut (impl AsyncWrite + Unpin), reply: &Reply) -> io::Result<()> {
    wr.write_all(&reply.to_wire()).await?;
    wr.flush().await
}

async fn pause(delay: Duration) {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
}

async fn session(shared: Arc<Shared>, stream: TcpStream, peer: SocketAddr) -> io::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut wr = stream;

    shared.count(Command::Connect);
    let (delay, outcome) = shared.evaluate(Command::Connect, &peer.to_string());
    pause(delay).await;
    match outcome {
        Outcome::Normal => {
            send(
                &mut wr,
                &Reply::new(220, &format!("{SERVER_NAME} ESMTP test server ready")),
            )
            .await?;
        }
        Outcome::Reply(reply) => {
            send(&mut wr, &reply).await?;
            if !reply.is_positive() {
                return close(wr).await;
            }
        }
        Outcome::Drop | Outcome::AcceptThenDrop => return Ok(()),
    }

    let mut st = Session {
        tls_offered: shared.tls.is_some(),
        ..Session::default()
    };
    let Some(plain) = conversation(&shared, wr, &mut st).await? else {
        return Ok(());
    };
    // `220` to STARTTLS was sent: the handshake, then a new session (RFC 3207: the client
    // greets again and nothing from before counts).
    let Some(acceptor) = shared.tls.clone() else {
        return Ok(());
    };
    let secured = match acceptor.accept(plain).await {
        Ok(s) => s,
        Err(e) => {
            shared.record_tls_failure(e.to_string());
            return Ok(());
        }
    };
    let mut st = Session {
        tls: true,
        ..Session::default()
    };
    conversation(&shared, secured, &mut st).await?;
    Ok(())
}

/// The commands of one session after the greeting. Returns the stream when the client
/// asked for `STARTTLS` and was told to go ahead; `None` when the session is over.
async fn conversation<S: AsyncRead + AsyncWrite + Unpin>(
    shared: &Shared,
    stream: S,
    st: &mut Session,
) -> io::Result<Option<S>> {
    let (rd, mut wr) = tokio::io::split(stream);
    let mut rd = BufReader::new(rd);
    let mut line = Vec::new();
    loop {
        line.clear();
        if rd.read_until(b'\n', &mut line).await? == 0 {
            return Ok(None); // client closed
        }
        let text = String::from_utf8_lossy(strip_eol(&line)).into_owned();
        let (verb, arg) = match text.split_once(' ') {
            Some((v, a)) => (v, a.trim()),
            None => (text.as_str(), ""),
        };
        let cmd = Command::from_verb(verb);
        shared.count(cmd);

        let argument = match cmd {
            Command::Data => st.envelope(),
            Command::Unknown => text.clone(),
            _ => arg.to_owned(),
        };
        let (delay, outcome) = shared.evaluate(cmd, &argument);
        pause(delay).await;

        let (normal, effect) = normal_step(st, cmd, verb, arg);
        let reply = match outcome {
            Outcome::Normal => normal,
            Outcome::Reply(custom) => custom,
            Outcome::Drop | Outcome::AcceptThenDrop => return Ok(None),
        };
        send(&mut wr, &reply).await?;
        if !reply.is_positive() {
            continue;
        }
        match effect {
            Effect::None => {}
            Effect::Greet => {
                st.greeted = true;
                st.reset();
            }
            Effect::SetFrom(from) => st.mail_from = Some(from),
            Effect::AddRcpt(rcpt) => st.rcpt_to.push(rcpt),
            Effect::Reset => st.reset(),
            Effect::Close => {
                close(wr).await?;
                return Ok(None);
            }
            Effect::StartTls => {
                // A client waits for the 220 before its handshake: nothing is buffered.
                return Ok(Some(rd.into_inner().unsplit(wr)));
            }
            Effect::EnterData => {
                let keep_going = receive_data(shared, &mut rd, &mut wr, st).await?;
                st.reset();
                if !keep_going {
                    return Ok(None);
                }
            }
        }
    }
}

/// Read the message after `354`, apply `DataEnd` rules, record, reply.
/// Returns `false` when the connection must be closed.
async fn receive_data(
    shared: &Shared,
    rd: &mut (impl AsyncBufRead + Unpin),
    wr: &mut (impl AsyncWrite + Unpin),
    st: &Session,
) -> io::Result<bool> {
    let mut data = Vec::new();
    let mut too_big = false;
    let mut line = Vec::new();
    loop {
        line.clear();
        if rd.read_until(b'\n', &mut line).await? == 0 {
            return Ok(false); // client went away mid-message
        }
        if strip_eol(&line) == b"." {
            break;
        }
        let content = line.strip_prefix(b".").unwrap_or(&line);
        if data.len() + content.len() > MAX_MESSAGE_SIZE {
            too_big = true;
        } else {
            data.extend_from_slice(content);
        }
    }

    shared.count(Command::DataEnd);
    let (delay, outcome) = shared.evaluate(Command::DataEnd, &String::from_utf8_lossy(&data));
    pause(delay).await;

    let queue_id = new_queue_id();
    let message = ReceivedMessage {
        mail_from: st.mail_from.clone().unwrap_or_default(),
        rcpt_to: st.rcpt_to.clone(),
        data,
        queue_id: queue_id.clone(),
        received_at: Instant::now(),
        tls: st.tls,
    };
    let reply = match outcome {
        Outcome::Drop => return Ok(false),
        Outcome::AcceptThenDrop => {
            shared.record_unconfirmed(message.clone(), None);
            shared.record(message);
            return Ok(false);
        }
        Outcome::Reply(custom) => custom,
        Outcome::Normal if too_big => Reply::new(552, "5.3.4 Error: message file too big"),
        Outcome::Normal => Reply::new(250, &format!("2.0.0 Ok: queued as {queue_id}")),
    };
    if !reply.is_positive() {
        send(wr, &reply).await?;
        return Ok(true);
    }
    let unconfirmed = message.clone();
    shared.record(message);
    let sent = send(wr, &reply).await;
    if sent.is_err() {
        shared.record_unconfirmed(unconfirmed, None);
    } else if !delay.is_zero() {
        shared.record_unconfirmed(unconfirmed, Some(delay));
    }
    sent?;
    Ok(true)
}

/// The normal reply to a command and the state change it makes if positive.
fn normal_step(st: &Session, cmd: Command, verb: &str, arg: &str) -> (Reply, Effect) {
    let bad_sequence = |text: &str| (Reply::new(503, text), Effect::None);
    match cmd {
        Command::Ehlo if arg.is_empty() => (
            Reply::new(
                501,
                &format!("5.5.4 Syntax: {} hostname", verb.to_ascii_uppercase()),
            ),
            Effect::None,
        ),
        Command::Ehlo if verb.eq_ignore_ascii_case("HELO") => {
            (Reply::new(250, SERVER_NAME), Effect::Greet)
        }
        Command::Ehlo => {
            let mut lines = vec![
                SERVER_NAME.to_owned(),
                "PIPELINING".to_owned(),
                format!("SIZE {MAX_MESSAGE_SIZE}"),
                "8BITMIME".to_owned(),
                "ENHANCEDSTATUSCODES".to_owned(),
                "SMTPUTF8".to_owned(),
            ];
            if st.tls_offered {
                lines.push("STARTTLS".to_owned());
            }
            (Reply { code: 250, lines }, Effect::Greet)
        }
        Command::StartTls if !st.tls_offered => (
            Reply::new(502, "5.5.1 Error: STARTTLS not offered"),
            Effect::None,
        ),
        Command::StartTls => (
            Reply::new(220, "2.0.0 Ready to start TLS"),
            Effect::StartTls,
        ),
        Command::Mail if !st.greeted => bad_sequence("5.5.1 Error: send HELO/EHLO first"),
        Command::Mail if st.mail_from.is_some() => bad_sequence("5.5.1 Error: nested MAIL command"),
        Command::Mail => match parse_path(arg, "FROM:") {
            None => (
                Reply::new(501, "5.5.4 Syntax: MAIL FROM:<address>"),
                Effect::None,
            ),
            Some((_, params)) if declared_size(params) > MAX_MESSAGE_SIZE => (
                Reply::new(552, "5.3.4 Message size exceeds fixed limit"),
                Effect::None,
            ),
            Some((from, _)) => (Reply::new(250, "2.1.0 Ok"), Effect::SetFrom(from)),
        },
        Command::Rcpt if st.mail_from.is_none() => bad_sequence("5.5.1 Error: need MAIL command"),
        Command::Rcpt => match parse_path(arg, "TO:") {
            Some((to, _)) if !to.is_empty() => (Reply::new(250, "2.1.5 Ok"), Effect::AddRcpt(to)),
            _ => (
                Reply::new(501, "5.5.4 Syntax: RCPT TO:<address>"),
                Effect::None,
            ),
        },
        Command::Data if st.mail_from.is_none() => bad_sequence("5.5.1 Error: need MAIL command"),
        Command::Data if st.rcpt_to.is_empty() => bad_sequence("5.5.1 Error: need RCPT command"),
        Command::Data => (
            Reply::new(354, "End data with <CR><LF>.<CR><LF>"),
            Effect::EnterData,
        ),
        Command::Rset => (Reply::new(250, "2.0.0 Ok"), Effect::Reset),
        Command::Noop => (Reply::new(250, "2.0.0 Ok"), Effect::None),
        Command::Quit => (Reply::new(221, "2.0.0 Bye"), Effect::Close),
        Command::Connect | Command::DataEnd | Command::Unknown => (
            Reply::new(500, "5.5.2 Error: command not recognized"),
            Effect::None,
        ),
    }
}

/// Parse `FROM:<addr> params` / `TO:<addr> params` into `(addr, params)`.
fn parse_path<'a>(arg: &'a str, prefix: &str) -> Option<(String, &'a str)> {
    let head = arg.get(..prefix.len())?;
    if !head.eq_ignore_ascii_case(prefix) {
        return None;
    }
    let rest = arg[prefix.len()..].trim_start();
    if let Some(inner) = rest.strip_prefix('<') {
        let end = inner.find('>')?;
        Some((inner[..end].to_owned(), inner[end + 1..].trim()))
    } else {
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        if end == 0 {
            return None;
        }
        Some((rest[..end].to_owned(), rest[end..].trim()))
    }
}

/// The `SIZE=` value of `MAIL` parameters, or 0.
fn declared_size(params: &str) -> usize {
    params
        .split_whitespace()
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| k.eq_ignore_ascii_case("SIZE"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

fn strip_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

async fn close(mut wr: impl AsyncWrite + Unpin) -> io::Result<()> {
    wr.shutdown().await
}

/// A fresh, unique-in-practice queue id: 16 uppercase hex digits.
fn new_queue_id() -> String {
    let bits = uuid::Uuid::new_v4().as_u128();
    format!("{:016X}", (bits as u64) ^ ((bits >> 64) as u64))
}
