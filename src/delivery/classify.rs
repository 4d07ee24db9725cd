//! One place that turns every send outcome into a [`SendFailure`]: transient (retry later,
//! maybe a soft bounce), hard bounce (the recipient can never receive: blacklist), or
//! permanent (give up, but the recipient is not to blame).
//!
//! Order of evidence, per RFC 3463 / RFC 5321 and common relay practice:
//! 1. the basic reply code decides the *severity* (4xx retry, 5xx give up) — it is what
//!    RFC 5321 clients act on, and what lettre itself classifies by. An enhanced code whose
//!    class disagrees ("550 4.7.1", "450 5.1.1": invalid per RFC 3463 §3.1) is read with its
//!    class replaced by the basic one, so its subject/detail still refine the decision;
//! 2. the enhanced status subject/detail decides *whose fault* (5.1.1 hard bounce, 5.7.1 policy);
//!    an undefined "X.0.0" carries no information and is ignored;
//! 3. only for a reply without (useful) enhanced code, the text: a few unambiguous phrases
//!    ("user unknown", "no such user", ...). RFC 5321's generic 550 text "mailbox unavailable"
//!    also covers policy rejections, so it is deliberately *not* a hard bounce: we never
//!    blacklist on a guess.
//!
//! lettre (0.11) only carries the reply code and the joined reply lines of a negative reply:
//! `Error::status()` is the code and `Error::source()` displays the text. It does not say
//! which command (MAIL/RCPT/DATA) was answered. Its async transport's `timeout` only bounds the
//! TCP connect, so callers bound a whole send with `tokio::time::timeout` and report the
//! elapsed case with [`SendFailure::timed_out`].

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::time::Duration;

/// Longest `reason` we produce, in bytes (it lands in `email_queue.failure_reason`).
pub const MAX_REASON_BYTES: usize = 1000;

/// Longest delay [`parse_retry_hint`] returns; the retry policy caps further.
pub const MAX_RETRY_HINT: Duration = Duration::from_secs(24 * 60 * 60);

/// An RFC 3463 enhanced status code, `class.subject.detail` (e.g. `5.1.1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EnhancedStatus {
    pub class: u8,
    pub subject: u16,
    pub detail: u16,
}

impl EnhancedStatus {
    /// Parses one word such as `5.1.1`, `#5.1.0` or `4.7.1:`. Class must be 2, 4 or 5; subject
    /// and detail have 1–3 digits (RFC 3463 §2).
    pub fn parse(word: &str) -> Option<EnhancedStatus> {
        let word = word.strip_prefix('#').unwrap_or(word);
        let word = word.trim_end_matches([':', ',', ';']);
        let mut parts = word.split('.');
        let (class, subject, detail) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || class.len() != 1 {
            return None;
        }
        let number = |part: &str| {
            ((1..=3).contains(&part.len()) && part.bytes().all(|b| b.is_ascii_digit()))
                .then(|| part.parse::<u16>().ok())
                .flatten()
        };
        let class = u8::try_from(number(class)?)
            .ok()
            .filter(|c| matches!(c, 2 | 4 | 5))?;
        Some(EnhancedStatus {
            class,
            subject: number(subject)?,
            detail: number(detail)?,
        })
    }
}

impl fmt::Display for EnhancedStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

/// A parsed SMTP reply: basic code, optional RFC 3463 enhanced status, text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpReply {
    pub code: u16,
    pub enhanced: Option<EnhancedStatus>,
    /// The reply text without the code and the leading enhanced status; lines joined with
    /// single spaces; no control characters.
    pub text: String,
}

impl SmtpReply {
    /// Parses a reply as read from the wire or a log: `550 5.1.1 <bob@x>: user unknown`,
    /// `550-5.1.1 ...` (a continuation line), several lines separated by CRLF/LF (repeated
    /// status codes on later lines are dropped), or a code alone. `None` when the first line
    /// does not start with a 2xx–5xx code.
    pub fn parse(line: &str) -> Option<SmtpReply> {
        let mut lines = line.lines().map(str::trim).filter(|l| !l.is_empty());
        let (code, first) = split_code(lines.next()?)?;
        let mut text = first.to_owned();
        for next in lines {
            // Later lines repeat the code; a line without one is a wrapped continuation.
            let rest = split_code(next).map_or(next, |(_, rest)| rest);
            text.push(' ');
            text.push_str(rest);
        }
        Some(SmtpReply::from_parts(code, &text))
    }

    /// Builds a reply from a code and its (joined) text, taking the enhanced status from the
    /// text's first word and dropping its repetitions (as in "5.1.1 a 5.1.1 b").
    pub fn from_parts(code: u16, text: &str) -> SmtpReply {
        let text = collapse_whitespace(text);
        let (enhanced, rest) = match text.split_once(' ') {
            Some((word, rest)) => (EnhancedStatus::parse(word), rest),
            None => (EnhancedStatus::parse(&text), ""),
        };
        let Some(status) = enhanced else {
            return SmtpReply {
                code,
                enhanced: None,
                text,
            };
        };
        let repeated = format!(" {status} ");
        let text = format!(" {rest} ").replace(&repeated, " ");
        SmtpReply {
            code,
            enhanced: Some(status),
            text: text.trim().to_owned(),
        }
    }
}

impl fmt::Display for SmtpReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some(status) = self.enhanced {
            write!(f, " {status}")?;
        }
        if !self.text.is_empty() {
            write!(f, " {}", self.text)?;
        }
        Ok(())
    }
}

/// What to do with the row after a failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailureClass {
    /// Try again later: 4xx, connection refused/reset, TLS, timeouts, 421.
    /// `soft_bounce`: the recipient's mailbox is the problem (X.2.2 mailbox full, 4.2.1
    /// mailbox temporarily disabled); counts toward the soft-bounce threshold.
    Transient { soft_bounce: bool },
    /// The recipient does not exist / cannot ever receive (5.1.x, 5.2.1, null MX, ...).
    HardBounce,
    /// Permanent, but not the recipient's fault: policy, content, size, auth, protocol.
    Permanent,
}

/// A classified failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendFailure {
    pub class: FailureClass,
    /// For people and for `failure_reason`: one line, at most [`MAX_REASON_BYTES`] bytes.
    pub reason: String,
    pub reply: Option<SmtpReply>,
    /// A delay the server asked for (transient failures only), see [`parse_retry_hint`].
    pub retry_after: Option<Duration>,
}

impl SendFailure {
    /// Classifies a negative SMTP reply (see the module docs for the order of evidence).
    pub fn from_reply(reply: SmtpReply) -> SendFailure {
        let class = classify_reply(&reply);
        let retry_after = match class {
            FailureClass::Transient { .. } => parse_retry_hint(&reply.text),
            _ => None,
        };
        SendFailure {
            class,
            reason: sanitize_reason(&format!("smtp {reply}")),
            reply: Some(reply),
            retry_after,
        }
    }

    /// Classifies a lettre SMTP error.
    ///
    /// - A 4xx/5xx reply: [`SendFailure::from_reply`] on the code and text lettre kept.
    /// - Connection, network, TLS, timeout, malformed or truncated replies, transport shut
    ///   down: transient — the server or the path to it may be fine on the next attempt.
    /// - Client-side errors: the message needs SMTPUTF8/8BITMIME the server lacks → permanent
    ///   (it will never pass this relay); anything else (no STARTTLS, no usable AUTH
    ///   mechanism, ...) is the relay configuration, not this email → transient, so fixing
    ///   the configuration rescues the queue instead of failing every row at once.
    pub fn from_smtp_error(err: &lettre::transport::smtp::Error) -> SendFailure {
        if let Some(code) = err.status() {
            let text = err.source().map(ToString::to_string).unwrap_or_default();
            return SendFailure::from_reply(SmtpReply::from_parts(u16::from(code), &text));
        }
        let detail = err.source().map(ToString::to_string).unwrap_or_default();
        if err.is_client() {
            let message_specific = detail.contains("non-ascii");
            let reason = format!("smtp client error: {detail}");
            return if message_specific {
                SendFailure::permanent(reason)
            } else {
                SendFailure::transient(reason)
            };
        }
        if err.is_tls() {
            return SendFailure::transient(format!("tls error: {detail}"));
        }
        if err.is_transport_shutdown() {
            return SendFailure::transient("smtp transport shut down");
        }
        if err.is_response() {
            if detail == "incomplete response" {
                return SendFailure::transient("connection closed by the server before it replied");
            }
            return SendFailure::transient(format!("invalid smtp reply: {detail}"));
        }
        // lettre has no `is_connection()`; its Display names the kind ("Connection error: ..."
        // while connecting, "network error: ..." mid-session). Only the wording depends on it.
        let connecting = err.to_string().starts_with("Connection error");
        let reason = match io_error_kind(err).and_then(|kind| describe_io(kind, connecting)) {
            Some(what) => what.to_owned(),
            None if connecting => format!("connection error: {detail}"),
            None => format!("network error: {detail}"),
        };
        SendFailure::transient(reason)
    }

    /// An I/O error on a socket we opened ourselves (connecting to the relay), worded as
    /// lettre's own connection errors are.
    pub fn from_io(err: &io::Error, connecting: bool) -> SendFailure {
        let reason = match describe_io(err.kind(), connecting) {
            Some(what) => what.to_owned(),
            None if connecting => format!("connection error: {err}"),
            None => format!("network error: {err}"),
        };
        SendFailure::transient(reason)
    }

    /// The whole send did not finish within `after` (lettre's async transport only bounds
    /// the TCP connect, so the caller wraps the send in `tokio::time::timeout`).
    pub fn timed_out(after: Duration) -> SendFailure {
        SendFailure::transient(format!(
            "timed out after {} waiting for the server",
            human(after)
        ))
    }

    /// A local failure worth retrying (e.g. the outbox disk is full).
    pub fn transient(reason: impl Into<String>) -> SendFailure {
        SendFailure::plain(
            FailureClass::Transient { soft_bounce: false },
            reason.into(),
        )
    }

    /// Bad input detected before sending (bad address, header injection, empty body).
    pub fn permanent(reason: impl Into<String>) -> SendFailure {
        SendFailure::plain(FailureClass::Permanent, reason.into())
    }

    /// Appends which server was being talked to: "connection refused (127.0.0.1:2525)".
    pub fn with_server(mut self, server: impl fmt::Display) -> SendFailure {
        self.reason = sanitize_reason(&format!("{} ({server})", self.reason));
        self
    }

    /// Worth another attempt later (includes soft bounces).
    pub fn is_transient(&self) -> bool {
        matches!(self.class, FailureClass::Transient { .. })
    }

    /// The recipient can never receive: bounce the row and blacklist the address.
    pub fn is_hard_bounce(&self) -> bool {
        self.class == FailureClass::HardBounce
    }

    /// Transient, and the recipient's mailbox is the problem (counts toward the threshold).
    pub fn is_soft_bounce(&self) -> bool {
        self.class == FailureClass::Transient { soft_bounce: true }
    }

    fn plain(class: FailureClass, reason: String) -> SendFailure {
        SendFailure {
            class,
            reason: sanitize_reason(&reason),
            reply: None,
            retry_after: None,
        }
    }
}

impl fmt::Display for SendFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl StdError for SendFailure {}

const TRANSIENT: FailureClass = FailureClass::Transient { soft_bounce: false };
const SOFT_BOUNCE: FailureClass = FailureClass::Transient { soft_bounce: true };

fn classify_reply(reply: &SmtpReply) -> FailureClass {
    let basic = reply.code / 100;
    if basic != 4 && basic != 5 {
        // Not a negative reply at all: only reachable by misuse; retrying is harmless.
        return TRANSIENT;
    }
    let text = reply.text.to_ascii_lowercase();
    let enhanced = reply.enhanced.filter(|s| (s.subject, s.detail) != (0, 0));
    match (basic, enhanced) {
        (4, Some(s)) if s.subject == 2 && matches!(s.detail, 1 | 2) => SOFT_BOUNCE,
        (4, Some(_)) => TRANSIENT,
        (4, None) if mailbox_full(&text) => SOFT_BOUNCE,
        (4, None) => TRANSIENT,
        (_, Some(s)) => classify_5xx_enhanced(s.subject, s.detail, &text),
        (_, None) => classify_5xx_basic(reply.code, &text),
    }
}

fn classify_5xx_enhanced(subject: u16, detail: u16, text: &str) -> FailureClass {
    use FailureClass::{HardBounce, Permanent};
    match (subject, detail) {
        // Bad destination mailbox/system/syntax, moved, null MX — unless it is our sender.
        (1, 1 | 2 | 3 | 6 | 10) if !about_sender(text) => HardBounce,
        (1, 0) if recipient_unknown(text) && !about_sender(text) => HardBounce,
        // 5.1.4 ambiguous, 5.1.7/5.1.8 bad sender, ...: not the recipient's fault.
        (1, _) => Permanent,
        (2, 1) => HardBounce,
        (2, 2) => SOFT_BOUNCE,
        // 5.3.1 mail system full, 5.4.5 congestion: RFC 3463 calls these "useful only as a
        // persistent transient error"; 5.5.3 too many recipients: RFC 5321 §4.5.3.1.10.
        (3, 1) | (4, 5) | (5, 3) => TRANSIENT,
        // Exchange Online's Directory-Based Edge Blocking: the recipient does not exist.
        (4, 1) if text.contains("recipient address rejected") => HardBounce,
        // 5.4.4 unroutable / 5.4.6 loop / 5.4.7 expired: the recipient's domain or its mail
        // routing, which its owner can fix; 5.2.3 size, 5.3.4, 5.5.x, 5.6.x, 5.7.x: ours.
        _ => Permanent,
    }
}

fn classify_5xx_basic(code: u16, text: &str) -> FailureClass {
    if recipient_unknown(text) && !about_sender(text) {
        return FailureClass::HardBounce;
    }
    if mailbox_full(text) {
        return SOFT_BOUNCE;
    }
    match code {
        // RFC 7504: the domain does not accept mail (null MX); RFC 5321: user not local.
        556 | 551 => FailureClass::HardBounce,
        // RFC 5321 §4.5.3.1.10: 552 is "exceeded storage allocation" and clients SHOULD treat
        // it as temporary — except when the text says the message itself is too big.
        552 if ["size", "too large", "too big"]
            .iter()
            .any(|p| text.contains(p)) =>
        {
            FailureClass::Permanent
        }
        552 => TRANSIENT,
        _ => FailureClass::Permanent,
    }
}

fn recipient_unknown(text: &str) -> bool {
    const PHRASES: &[&str] = &[
        "user unknown",
        "unknown user",
        "no such user",
        "no such recipient",
        "no such mailbox",
        "no such account",
        "recipient unknown",
        "unknown recipient",
        "recipient not found",
        "user not found",
        "mailbox not found",
        "invalid recipient",
        "invalid mailbox",
        "unrouteable address",
        "unroutable address",
        "does not exist",
        "doesn't exist",
        "not a valid mailbox",
        "mailbox is disabled",
        "account is disabled",
        "account has been disabled",
    ];
    PHRASES.iter().any(|p| text.contains(p))
        || (text.contains("doesn't have a") && text.contains("account"))
}

fn about_sender(text: &str) -> bool {
    text.contains("sender") || text.contains("mail from")
}

fn mailbox_full(text: &str) -> bool {
    const PHRASES: &[&str] = &[
        "mailbox full",
        "mailbox is full",
        "over quota",
        "overquota",
        "quota exceeded",
        "exceeded storage allocation",
        "mailbox quota",
        "exceeds quota",
    ];
    // "daily sending quota exceeded" is about us, not the recipient's mailbox.
    !text.contains("send") && PHRASES.iter().any(|p| text.contains(p))
}

fn io_error_kind(err: &(dyn StdError + 'static)) -> Option<io::ErrorKind> {
    let mut source = err.source();
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return Some(io.kind());
        }
        source = e.source();
    }
    None
}

fn describe_io(kind: io::ErrorKind, connecting: bool) -> Option<&'static str> {
    use io::ErrorKind as K;
    Some(match kind {
        K::ConnectionRefused => "connection refused",
        K::ConnectionReset => "connection reset by the server",
        K::ConnectionAborted => "connection aborted",
        K::UnexpectedEof | K::BrokenPipe => "connection closed by the server",
        K::TimedOut if connecting => "timed out connecting to the server",
        K::TimedOut => "timed out waiting for the server",
        K::NetworkUnreachable => "network unreachable",
        K::HostUnreachable => "host unreachable",
        K::AddrNotAvailable => "address not available",
        _ => return None,
    })
}

/// Finds a delay the server asked for in a reply text: "try again in 60 seconds", "retry in
/// 5 minutes", "please wait 30s", "come back in 00:05:00", "Retry-After: 120" (seconds).
/// A number counts only with a unit (or after `Retry-After:`), close after such a phrase, so
/// IPs, status codes and ticket numbers are never read as delays. Zero gives `None`; values
/// above [`MAX_RETRY_HINT`] are capped to it.
pub fn parse_retry_hint(text: &str) -> Option<Duration> {
    let lower = text.to_ascii_lowercase();
    if let Some(pos) = lower.find("retry-after") {
        let rest = lower[pos + "retry-after".len()..].trim_start_matches([':', ' ', '=']);
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if !digits.is_empty() {
            let after_number = &rest[digits.len()..];
            let secs = number_with_unit(&digits, after_number)
                .unwrap_or_else(|| saturating(&digits) as f64);
            return to_hint(secs);
        }
    }
    const TRIGGERS: &[&str] = &[
        "try again",
        "retry",
        "come back",
        "wait",
        "greylisted for",
        "deferred for",
        "resend",
        "try later",
    ];
    let mut starts: Vec<usize> = TRIGGERS
        .iter()
        .flat_map(|t| lower.match_indices(t).map(|(i, t)| i + t.len()))
        .collect();
    starts.sort_unstable();
    starts.into_iter().find_map(|start| {
        let window: String = lower[start..].chars().take(48).collect();
        find_duration(&window).and_then(to_hint)
    })
}

/// The first "<number> <unit>" or "hh:mm:ss" in `window`, in seconds.
fn find_duration(window: &str) -> Option<f64> {
    let bytes = window.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let starts_number = bytes[i].is_ascii_digit()
            && (i == 0
                || !(bytes[i - 1].is_ascii_alphanumeric() || matches!(bytes[i - 1], b'.' | b':')));
        if !starts_number {
            i += 1;
            continue;
        }
        let end = i + window[i..].bytes().take_while(u8::is_ascii_digit).count();
        if let Some(secs) = clock_duration(&window[i..]) {
            return Some(secs);
        }
        let (number, rest) = match window[end..].strip_prefix('.') {
            Some(frac) if frac.starts_with(|c: char| c.is_ascii_digit()) => {
                let frac_len = frac.bytes().take_while(u8::is_ascii_digit).count();
                (&window[i..end + 1 + frac_len], &frac[frac_len..])
            }
            _ => (&window[i..end], &window[end..]),
        };
        if let Some(secs) = number_with_unit(number, rest) {
            return Some(secs);
        }
        i = end;
    }
    None
}

fn number_with_unit(number: &str, rest: &str) -> Option<f64> {
    let rest = rest.strip_prefix(' ').unwrap_or(rest);
    let unit: String = rest.chars().take_while(char::is_ascii_alphabetic).collect();
    let scale = match unit.as_str() {
        "s" | "sec" | "secs" | "second" | "seconds" => 1.0,
        "m" | "min" | "mins" | "minute" | "minutes" => 60.0,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3600.0,
        _ => return None,
    };
    let value = number
        .parse::<f64>()
        .unwrap_or_else(|_| saturating(number) as f64);
    Some(value * scale)
}

/// "hh:mm:ss" (as in Exim's "come back in 00:05:00").
fn clock_duration(s: &str) -> Option<f64> {
    let token: String = s
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == ':')
        .collect();
    let parts: Vec<&str> = token.split(':').collect();
    let [h, m, sec] = parts.as_slice() else {
        return None;
    };
    if [m, sec].iter().any(|p| p.len() != 2) || h.is_empty() || h.len() > 2 {
        return None;
    }
    Some(saturating(h) as f64 * 3600.0 + saturating(m) as f64 * 60.0 + saturating(sec) as f64)
}

fn saturating(digits: &str) -> u64 {
    digits
        .bytes()
        .filter(u8::is_ascii_digit)
        .fold(0u64, |acc, d| {
            acc.saturating_mul(10).saturating_add(u64::from(d - b'0'))
        })
}

fn to_hint(secs: f64) -> Option<Duration> {
    if secs.is_nan() || secs <= 0.0 {
        return None;
    }
    Some(Duration::try_from_secs_f64(secs).map_or(MAX_RETRY_HINT, |d| d.min(MAX_RETRY_HINT)))
}

/// One line (control characters become spaces, runs of whitespace one space), at most
/// [`MAX_REASON_BYTES`] bytes, cut on a character boundary and marked with "...".
fn sanitize_reason(reason: &str) -> String {
    let mut line = collapse_whitespace(reason);
    if line.len() > MAX_REASON_BYTES {
        let mut cut = MAX_REASON_BYTES - 3;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
        line.push_str("...");
    }
    line
}

fn collapse_whitespace(s: &str) -> String {
    s.split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn split_code(line: &str) -> Option<(u16, &str)> {
    let b = line.as_bytes();
    let valid = b.len() >= 3
        && (b'2'..=b'5').contains(&b[0])
        && (b'0'..=b'5').contains(&b[1])
        && b[2].is_ascii_digit()
        && matches!(b.get(3), None | Some(b' ' | b'-'));
    if !valid {
        return None;
    }
    let code = u16::from(b[0] - b'0') * 100 + u16::from(b[1] - b'0') * 10 + u16::from(b[2] - b'0');
    Some((code, line.get(4..).unwrap_or("").trim()))
}

fn human(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

impl SendFailure {
    /// The `class` label of a failed attempt: the reply code when the server answered, else
    /// timeout or connection trouble; a permanent failure without a reply is a message
    /// that could not be sent at all (bad address, unsupported encoding).
    pub fn metric_class(&self) -> crate::metrics::SendClass {
        use crate::metrics::SendClass;
        if let Some(reply) = &self.reply {
            return match reply.code / 100 {
                2 => SendClass::Accepted,
                4 => SendClass::Transient,
                5 => SendClass::Permanent,
                _ => SendClass::Connection,
            };
        }
        match self.class {
            FailureClass::Permanent | FailureClass::HardBounce => SendClass::Invalid,
            FailureClass::Transient { .. } if self.reason.starts_with("timed out") => {
                SendClass::Timeout
            }
            FailureClass::Transient { .. } => SendClass::Connection,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use FailureClass::{HardBounce, Permanent};

    fn parsed(line: &str) -> SmtpReply {
        SmtpReply::parse(line).unwrap_or_else(|| panic!("unparsable: {line:?}"))
    }

    const SOFT: FailureClass = FailureClass::Transient { soft_bounce: true };
    const TEMP: FailureClass = FailureClass::Transient { soft_bounce: false };

    /// Real-world replies (Gmail, Outlook/Office 365, Yahoo, Postfix, Exim, SES, SendGrid,
    /// Mimecast, RFC examples) and what we do with them.
    #[rustfmt::skip]
    const TABLE: &[(&str, FailureClass)] = &[
        // Gmail
        ("550-5.1.1 The email account that you tried to reach does not exist. Please try double-checking the recipient's email address for typos", HardBounce),
        ("452 4.2.2 The email account that you tried to reach is over quota", SOFT),
        ("421 4.7.0 Try again later, closing connection.", TEMP),
        ("550-5.2.1 The email account that you tried to reach is disabled. https://support.google.com/mail/?p=DisabledUser", HardBounce),
        ("552-5.2.2 The email account that you tried to reach is over quota. Please direct the recipient to https://support.google.com/mail/?p=OverQuotaPerm", SOFT),
        ("552-5.2.3 Your message exceeded Google's message size limits.", Permanent),
        ("550-5.7.1 [1.2.3.4] Our system has detected an unusual rate of unsolicited mail originating from your IP address.", Permanent),
        ("550-5.7.26 This mail has been blocked because the sender is unauthenticated. Gmail requires all senders to authenticate with either SPF or DKIM.", Permanent),
        ("421-4.7.28 [1.2.3.4] Our system has detected an unusual rate of unsolicited mail originating from your IP address.", TEMP),
        ("450-4.2.1 The user you are trying to contact is receiving mail at a rate that prevents additional messages from being delivered.", SOFT),
        ("553-5.1.3 The recipient address <bob@x> is not a valid RFC-5321 address.", HardBounce),
        ("550-5.7.25 [1.2.3.4] The IP address sending this message does not have a PTR record setup", Permanent),
        ("550 5.4.5 Daily user sending quota exceeded.", TEMP),
        // Outlook / Office 365
        ("550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup", HardBounce),
        ("550 5.4.1 Recipient address rejected: Access denied. AS(201806281) [DM6NAM11FT012.eop-nam11.prod.protection.outlook.com]", HardBounce),
        ("550 5.7.1 Service unavailable, Client host [1.2.3.4] blocked using Spamhaus", Permanent),
        ("451 4.7.500 Server busy. Please try again later from [1.2.3.4]. (S77719)", TEMP),
        ("550 5.7.606 Access denied, banned sending IP [1.2.3.4].", Permanent),
        ("550 5.7.509 Access denied, sending domain example.com does not pass DMARC verification", Permanent),
        ("550 5.5.0 Requested action not taken: mailbox unavailable (S2017062302)", Permanent),
        ("452 4.5.3 Too many recipients", TEMP),
        // Yahoo
        ("421 4.7.0 [TSS04] Messages from 1.2.3.4 temporarily deferred due to unexpected volume or user complaints - 4.16.55.1", TEMP),
        ("554 delivery error: dd This user doesn't have a yahoo.com account (bob@yahoo.com) [0] - mta1234.mail.ne1.yahoo.com", HardBounce),
        ("554 delivery error: dd Sorry your message to bob@yahoo.com cannot be delivered. This mailbox is disabled (554.30)", HardBounce),
        ("552 1 Requested mail action aborted, mailbox not found", HardBounce),
        // Postfix
        ("550 5.1.1 <bob@example.com>: Recipient address rejected: User unknown in virtual mailbox table", HardBounce),
        ("554 5.7.1 <bob@example.org>: Relay access denied", Permanent),
        ("450 4.1.2 <bob@nonexist.example>: Recipient address rejected: Domain not found", TEMP),
        ("450 4.2.0 <bob@example.com>: Recipient address rejected: Greylisted, see http://postgrey.schweikert.ch/help/example.com.html", TEMP),
        ("553 5.1.8 <noreply@adopt.example>: Sender address rejected: Domain not found", Permanent),
        ("550 5.1.1 <noreply@adopt.example>: Sender address rejected: User unknown in local recipient table", Permanent),
        ("552 5.3.4 Message size exceeds fixed limit", Permanent),
        ("452 4.3.1 Insufficient system storage", TEMP),
        ("504 5.5.2 <bob>: Recipient address rejected: need fully-qualified address", Permanent),
        ("451 4.3.5 Server configuration problem", TEMP),
        // Exim
        ("550 Unrouteable address", HardBounce),
        ("550-Verification failed for <noreply@adopt.example>\r\n550-Unrouteable address\r\n550 Sender verify failed", Permanent),
        ("451 Temporary local problem - please try later", TEMP),
        ("550 Administrative prohibition", Permanent),
        ("451 4.7.1 Greylisted, please try again in 300 seconds", TEMP),
        ("550 No Such User Here", HardBounce),
        // Amazon SES / SendGrid / Mimecast as relays
        ("554 Message rejected: Email address is not verified. The following identities failed the check in region US-EAST-1: noreply@adopt.example", Permanent),
        ("454 Throttling failure: Maximum sending rate exceeded.", TEMP),
        ("535 Authentication Credentials Invalid", Permanent),
        ("550 The from address does not match a verified Sender Identity.", Permanent),
        ("550 Invalid Recipient - https://community.mimecast.com/docs/DOC-1369#550", HardBounce),
        // RFC examples and edge cases
        ("556 5.1.10 Recipient address has null MX", HardBounce),
        ("552 5.2.2 Mailbox full", SOFT),
        ("550 5.2.1 The email account that you tried to reach is disabled", HardBounce),
        ("550 5.4.4 Unable to route: no mail hosts for domain", Permanent),
        ("554 5.4.6 Routing loop detected", Permanent),
        ("551 5.1.6 Mailbox has moved", HardBounce),
        ("550 Requested action not taken: mailbox unavailable", Permanent),
        ("550 Message rejected", Permanent),
        ("552 Requested mail action aborted: exceeded storage allocation", SOFT),
        ("552 Too many recipients", TEMP),
        ("552 Message size exceeds maximum permitted", Permanent),
        ("550 5.0.0 <bob@example.com>... User unknown", HardBounce),
        ("550 4.2.2 mailbox full (inconsistent class)", SOFT),
        ("550 4.7.1 blocked (inconsistent class)", Permanent),
        ("450 5.1.1 try later (inconsistent class)", TEMP),
        ("421 Service not available, closing transmission channel", TEMP),
        ("530 5.7.0 Authentication required", Permanent),
        ("550 #5.1.0 Address rejected bob@example.com", Permanent),
        ("550 5.1.0 <bob@example.com>: unknown user", HardBounce),
        ("452 Mailbox full, try again later", SOFT),
    ];

    #[test]
    fn real_world_replies_are_classified_as_in_the_table() {
        let mut wrong = Vec::new();
        for (line, expected) in TABLE {
            let failure = SendFailure::from_reply(parsed(line));
            if failure.class != *expected {
                wrong.push(format!(
                    "{line}\n    expected {expected:?}, got {:?}",
                    failure.class
                ));
            }
        }
        assert!(TABLE.len() >= 30);
        assert!(wrong.is_empty(), "misclassified:\n{}", wrong.join("\n"));
    }

    #[test]
    fn parse_splits_code_enhanced_status_and_text() {
        let reply = SmtpReply::parse("550 5.1.1 <bob@x>: user unknown");
        let expected = SmtpReply {
            code: 550,
            enhanced: Some(EnhancedStatus {
                class: 5,
                subject: 1,
                detail: 1,
            }),
            text: "<bob@x>: user unknown".into(),
        };
        assert_eq!(reply, Some(expected));
    }

    #[test]
    fn parse_joins_multiline_replies_without_repeated_status() {
        let raw = "550-5.1.1 The email account that you tried to reach does not exist. Please try\r\n\
                   550-5.1.1 double-checking the recipient's email address for typos or\r\n\
                   550 5.1.1 unnecessary spaces. https://support.google.com/mail/?p=NoSuchUser\r\n";
        let reply = parsed(raw);
        assert_eq!(reply.code, 550);
        assert_eq!(reply.enhanced.map(|s| s.to_string()), Some("5.1.1".into()));
        assert_eq!(
            reply.text,
            "The email account that you tried to reach does not exist. Please try double-checking \
             the recipient's email address for typos or unnecessary spaces. https://support.google.com/mail/?p=NoSuchUser"
        );
    }

    #[test]
    fn parse_accepts_replies_without_enhanced_status_or_text() {
        let reply = parsed("550 user unknown");
        assert_eq!(
            (reply.code, reply.enhanced, reply.text.as_str()),
            (550, None, "user unknown")
        );
        let reply = parsed("421");
        assert_eq!(
            (reply.code, reply.enhanced, reply.text.as_str()),
            (421, None, "")
        );
        let reply = parsed("550 5.7.1");
        assert_eq!(reply.enhanced.map(|s| s.to_string()), Some("5.7.1".into()));
        assert_eq!(reply.text, "");
        assert_eq!(reply.to_string(), "550 5.7.1");
    }

    #[test]
    fn parse_rejects_lines_that_are_not_replies() {
        for line in [
            "",
            "hello",
            "55",
            "5501 x",
            "650 x",
            "150 x",
            "permanent error (550): x",
        ] {
            assert_eq!(SmtpReply::parse(line), None, "{line:?}");
        }
    }

    #[test]
    fn enhanced_status_rejects_lookalikes() {
        for word in [
            "1.2.3.4", "5.1", "3.1.1", "5.1234.1", "5..1", "a.b.c", "55.1.1",
        ] {
            assert_eq!(EnhancedStatus::parse(word), None, "{word:?}");
        }
        assert_eq!(
            EnhancedStatus::parse("4.7.500").map(|s| s.to_string()),
            Some("4.7.500".into())
        );
        assert_eq!(
            EnhancedStatus::parse("#5.1.0").map(|s| s.to_string()),
            Some("5.1.0".into())
        );
    }

    #[test]
    fn retry_hints_are_read_from_reply_text() {
        let cases: &[(&str, Option<u64>)] = &[
            ("Greylisted, please try again in 60 seconds", Some(60)),
            (
                "451 4.7.1 Greylisted, please try again in 300 seconds",
                Some(300),
            ),
            ("please retry in 5 minutes", Some(300)),
            ("Retry-After: 120", Some(120)),
            ("rate limited; retry-after=30", Some(30)),
            ("Try again in 1 hour", Some(3600)),
            ("please wait 30s before reconnecting", Some(30)),
            ("try again after 1.5 minutes", Some(90)),
            (
                "Greylisting in action, please come back in 00:05:00",
                Some(300),
            ),
            (
                "Please try again later (greylisted for 5 minutes)",
                Some(300),
            ),
            ("Try again later, closing connection.", None),
            (
                "Server busy. Please try again later from [1.2.3.4]. (S77719)",
                None,
            ),
            ("4.7.1 Client host [10.0.0.1] blocked 30 seconds ago", None),
            ("Please try again in 0 seconds", None),
            ("Retry-After: 0", None),
            ("try again in 99999 hours", Some(MAX_RETRY_HINT.as_secs())),
            (
                "Retry-After: 99999999999999999999999",
                Some(MAX_RETRY_HINT.as_secs()),
            ),
            ("", None),
        ];
        for (text, expected) in cases {
            let got = parse_retry_hint(text);
            assert_eq!(got, expected.map(Duration::from_secs), "{text:?}");
        }
    }

    #[test]
    fn transient_replies_carry_the_hint_and_permanent_ones_do_not() {
        let line = "451 4.7.1 Greylisted, please try again in 300 seconds";
        let failure = SendFailure::from_reply(parsed(line));
        assert_eq!(failure.retry_after, Some(Duration::from_secs(300)));
        assert_eq!(
            failure.reason,
            "smtp 451 4.7.1 Greylisted, please try again in 300 seconds"
        );
        let line = "550 5.7.1 blocked, do not try again in 60 seconds";
        let failure = SendFailure::from_reply(parsed(line));
        assert_eq!(failure.retry_after, None);
    }

    #[test]
    fn reasons_are_one_bounded_line() {
        let failure = SendFailure::transient("disk\r\nfull\n\tagain");
        assert_eq!(failure.reason, "disk full again");
        let long = format!("550 5.7.1 {}", "é".repeat(2000));
        let failure = SendFailure::from_reply(parsed(&long));
        assert!(
            failure.reason.len() <= MAX_REASON_BYTES,
            "{}",
            failure.reason.len()
        );
        assert!(failure.reason.ends_with("..."));
        assert!(!failure.reason.contains(['\r', '\n']));
        let failure = SendFailure::permanent("x".repeat(5000)).with_server("relay:25");
        assert!(failure.reason.len() <= MAX_REASON_BYTES);
        assert_eq!(
            SendFailure::timed_out(Duration::from_secs(30)).reason,
            "timed out after 30s waiting for the server"
        );
        assert_eq!(
            SendFailure::timed_out(Duration::from_millis(200)).reason,
            "timed out after 200ms waiting for the server"
        );
    }

    #[test]
    fn local_constructors_classify_as_named() {
        assert_eq!(SendFailure::transient("outbox disk full").class, TEMP);
        assert!(SendFailure::transient("x").is_transient());
        assert_eq!(
            SendFailure::permanent("header injection in subject").class,
            Permanent
        );
        assert!(!SendFailure::permanent("x").is_transient());
        assert_eq!(SendFailure::permanent("x").reply, None);
    }

    /// Real lettre errors, from a scripted SMTP server on 127.0.0.1.
    mod lettre_errors {
        use super::*;
        use lettre::message::Mailbox;
        use lettre::transport::smtp::client::Tls;
        use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        use tokio::net::{TcpListener, TcpSocket, TcpStream};

        /// Replies by command; `None` greeting means: accept, then say nothing.
        #[derive(Clone, Copy)]
        struct Script {
            greeting: Option<&'static str>,
            ehlo: &'static str,
            mail: &'static str,
            rcpt: &'static str,
            data_end: &'static str,
        }

        const OK: Script = Script {
            greeting: Some("220 test ESMTP\r\n"),
            ehlo: "250-test\r\n250 SIZE 1000000\r\n",
            mail: "250 2.1.0 Ok\r\n",
            rcpt: "250 2.1.5 Ok\r\n",
            data_end: "250 2.0.0 Ok: queued as ABC123\r\n",
        };

        async fn serve(script: Script) -> u16 {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    tokio::spawn(session(stream, script));
                }
            });
            port
        }

        async fn session(stream: TcpStream, script: Script) -> std::io::Result<()> {
            let (read, mut write) = stream.into_split();
            let Some(greeting) = script.greeting else {
                tokio::time::sleep(Duration::from_secs(30)).await;
                return Ok(());
            };
            write.write_all(greeting.as_bytes()).await?;
            let mut lines = BufReader::new(read).lines();
            let mut in_data = false;
            while let Some(line) = lines.next_line().await? {
                let reply = if in_data {
                    if line != "." {
                        continue;
                    }
                    in_data = false;
                    script.data_end
                } else {
                    match line.get(..4).map(str::to_ascii_uppercase).as_deref() {
                        Some("EHLO") => script.ehlo,
                        Some("MAIL") => script.mail,
                        Some("RCPT") => script.rcpt,
                        Some("DATA") => {
                            in_data = true;
                            "354 End data with <CR><LF>.<CR><LF>\r\n"
                        }
                        Some("QUIT") => {
                            write.write_all(b"221 2.0.0 Bye\r\n").await?;
                            return Ok(());
                        }
                        _ => "250 2.0.0 Ok\r\n",
                    }
                };
                write.write_all(reply.as_bytes()).await?;
            }
            Ok(())
        }

        fn transport(port: u16) -> AsyncSmtpTransport<Tokio1Executor> {
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
                .port(port)
                .tls(Tls::None)
                .timeout(Some(Duration::from_millis(200)))
                .build()
        }

        fn message(to: &str) -> Message {
            Message::builder()
                .from("Adopt <noreply@adopt.example>".parse::<Mailbox>().unwrap())
                .to(to.parse::<Mailbox>().unwrap())
                .subject("Hello")
                .body(String::from("Hi Bob"))
                .unwrap()
        }

        async fn send_failure(port: u16) -> SendFailure {
            match transport(port).send(message("Bob <bob@example.com>")).await {
                Ok(response) => panic!("expected a failure, got {response:?}"),
                Err(err) => SendFailure::from_smtp_error(&err),
            }
        }

        #[tokio::test]
        async fn scripted_server_accepts_a_good_send() {
            let port = serve(OK).await;
            let sent = transport(port).send(message("bob@example.com")).await;
            assert!(sent.is_ok(), "{sent:?}");
        }

        #[tokio::test]
        async fn greylisting_on_rcpt_is_transient_with_hint() {
            let rcpt = "451 4.7.1 Greylisted, please try again in 60 seconds\r\n";
            let failure = send_failure(serve(Script { rcpt, ..OK }).await).await;
            assert_eq!(failure.class, TEMP);
            assert_eq!(failure.retry_after, Some(Duration::from_secs(60)));
            assert_eq!(
                failure.reason,
                "smtp 451 4.7.1 Greylisted, please try again in 60 seconds"
            );
        }

        #[tokio::test]
        async fn unknown_user_on_rcpt_is_a_hard_bounce() {
            let rcpt = "550-5.1.1 The email account that you tried to reach does not exist. Please try\r\n\
                        550-5.1.1 double-checking the recipient's email address for typos or\r\n\
                        550 5.1.1 unnecessary spaces. https://support.google.com/mail/?p=NoSuchUser\r\n";
            let failure = send_failure(serve(Script { rcpt, ..OK }).await).await;
            assert_eq!(failure.class, HardBounce);
            let reply = failure.reply.unwrap();
            assert_eq!(
                (reply.code, reply.enhanced.map(|s| s.to_string())),
                (550, Some("5.1.1".into()))
            );
            assert!(reply.text.starts_with("The email account that you tried to reach does not exist. Please try double-checking"));
            assert!(!reply.text.contains("5.1.1"), "{}", reply.text);
        }

        #[tokio::test]
        async fn mailbox_full_after_data_is_a_soft_bounce() {
            let data_end = "552 5.2.2 Mailbox full\r\n";
            let failure = send_failure(serve(Script { data_end, ..OK }).await).await;
            assert_eq!(failure.class, SOFT);
            assert_eq!(failure.reason, "smtp 552 5.2.2 Mailbox full");
        }

        #[tokio::test]
        async fn policy_rejection_on_mail_from_is_permanent() {
            let mail = "554 5.7.1 Service unavailable; Client host [127.0.0.1] blocked using zen.spamhaus.org\r\n";
            let failure = send_failure(serve(Script { mail, ..OK }).await).await;
            assert_eq!(failure.class, Permanent);
            assert!(
                failure
                    .reason
                    .starts_with("smtp 554 5.7.1 Service unavailable"),
                "{}",
                failure.reason
            );
        }

        #[tokio::test]
        async fn service_closing_greeting_is_transient() {
            let greeting = Some("421 4.7.0 Try again later, closing connection.\r\n");
            let failure = send_failure(serve(Script { greeting, ..OK }).await).await;
            assert_eq!(failure.class, TEMP);
            assert_eq!(failure.reply.map(|r| r.code), Some(421));
        }

        #[tokio::test]
        async fn connection_refused_is_transient() {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            drop(listener);
            let failure = send_failure(port)
                .await
                .with_server(format!("127.0.0.1:{port}"));
            assert_eq!(failure.class, TEMP);
            assert_eq!(
                failure.reason,
                format!("connection refused (127.0.0.1:{port})")
            );
            assert_eq!(failure.reply, None);
        }

        #[tokio::test]
        async fn server_hanging_up_mid_session_is_transient() {
            // Greets, answers EHLO, then closes when MAIL FROM arrives.
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            tokio::spawn(async move {
                let (stream, _) = listener.accept().await.unwrap();
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read).lines();
                write.write_all(b"220 test\r\n").await.unwrap();
                lines.next_line().await.unwrap();
                write.write_all(b"250 test\r\n").await.unwrap();
                lines.next_line().await.unwrap();
            });
            let failure = send_failure(port).await;
            assert_eq!(failure.class, TEMP);
            assert_eq!(
                failure.reason,
                "connection closed by the server before it replied"
            );
        }

        #[tokio::test]
        async fn connect_timeout_is_transient() {
            // A listener with a full accept queue: further SYNs are dropped, so connect() hangs
            // until lettre's connect timeout (the only phase its async `timeout` covers).
            let socket = TcpSocket::new_v4().unwrap();
            socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
            let listener = socket.listen(0).unwrap();
            let addr = listener.local_addr().unwrap();
            let mut filler = Vec::new();
            for _ in 0..8 {
                match tokio::time::timeout(Duration::from_millis(100), TcpStream::connect(addr))
                    .await
                {
                    Ok(Ok(stream)) => filler.push(stream),
                    _ => break, // the queue is full
                }
            }
            let err = transport(addr.port())
                .send(message("bob@example.com"))
                .await
                .unwrap_err();
            assert!(err.is_timeout(), "{err:?}");
            let failure = SendFailure::from_smtp_error(&err);
            assert_eq!(failure.class, TEMP);
            assert_eq!(failure.reason, "timed out connecting to the server");
            drop(listener);
        }

        #[tokio::test]
        async fn silent_server_needs_the_callers_timeout() {
            // lettre's async transport does not time out reads: bound the send ourselves.
            let port = serve(Script {
                greeting: None,
                ..OK
            })
            .await;
            let limit = Duration::from_millis(400);
            let outcome =
                tokio::time::timeout(limit, transport(port).send(message("bob@example.com"))).await;
            assert!(
                outcome.is_err(),
                "lettre returned before the outer timeout: {outcome:?}"
            );
            let failure = SendFailure::timed_out(limit);
            assert!(failure.is_transient());
            assert_eq!(
                failure.reason,
                "timed out after 400ms waiting for the server"
            );
        }

        #[tokio::test]
        async fn non_ascii_recipient_without_smtputf8_is_permanent() {
            let port = serve(OK).await;
            let err = transport(port)
                .send(message("bøb@example.com"))
                .await
                .unwrap_err();
            assert!(err.is_client(), "{err:?}");
            let failure = SendFailure::from_smtp_error(&err);
            assert_eq!(failure.class, Permanent);
            assert!(
                failure
                    .reason
                    .starts_with("smtp client error: Envelope contains non-ascii chars"),
                "{}",
                failure.reason
            );
        }
    }

    #[test]
    fn the_metric_class_follows_the_reply_or_the_failure() {
        use crate::metrics::SendClass;
        let reply = |line: &str| SendFailure::from_reply(SmtpReply::parse(line).unwrap());
        assert_eq!(
            reply("451 4.7.1 greylisted").metric_class(),
            SendClass::Transient
        );
        assert_eq!(
            reply("550 5.1.1 user unknown").metric_class(),
            SendClass::Permanent
        );
        assert_eq!(
            SendFailure::timed_out(Duration::from_secs(30)).metric_class(),
            SendClass::Timeout
        );
        assert_eq!(
            SendFailure::transient("connection refused").metric_class(),
            SendClass::Connection
        );
        assert_eq!(
            SendFailure::permanent("invalid address").metric_class(),
            SendClass::Invalid
        );
    }
}
