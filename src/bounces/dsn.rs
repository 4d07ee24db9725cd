//! Reading what comes back to the bounce address: a delivery status notification (RFC 3464,
//! `multipart/report; report-type=delivery-status`), an abuse report (RFC 5965 ARF,
//! `report-type=feedback-report`), a bounce written as plain text by an MTA that sends no
//! DSN (a recognisable status line such as `550 5.1.1`), or anything else (auto-replies,
//! out-of-office notes, spam), which is not a report.
//!
//! The MIME structure is left to `mail-parser`; only the `message/delivery-status` and
//! `message/feedback-report` bodies, whose fields look like headers, are read here line by
//! line. Nothing in here fails or panics on input: what cannot be read is
//! [`ReportKind::NotAReport`], with the reason.

use mail_parser::{Message, MessageParser, MimeHeaders, PartType};

use crate::delivery::classify::{EnhancedStatus, FailureClass, SendFailure, SmtpReply};

/// Longest reason kept from a report (it ends in `failure_reason` and `tracking`).
const MAX_TEXT: usize = 500;

/// What one message turned out to be, and what it says about the original email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub kind: ReportKind,
    /// Where the report was sent, most specific first (`Delivered-To`, `X-Original-To`,
    /// `To`): the VERP address, when the MTA kept it.
    pub addressed_to: Vec<String>,
    /// The envelope sender of the original as the report quotes it (an ARF
    /// `Original-Mail-From`, the `Return-Path` of the returned message): the VERP address too.
    pub original_senders: Vec<String>,
    /// The original's Message-ID, without angle brackets, from the returned message or its
    /// headers (`message/rfc822`, `text/rfc822-headers`), or a `Message-ID:` line of a
    /// plain-text bounce.
    pub original_message_id: Option<String>,
    /// The reporting relay's queue id of the original (`X-Postfix-Queue-ID`), which is the
    /// row's `provider_message_id` when that relay is ours.
    pub queue_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportKind {
    /// A DSN, or a plain-text bounce read as one: one entry per recipient.
    Delivery {
        recipients: Vec<RecipientStatus>,
        /// Read from free text rather than a `message/delivery-status` part.
        from_text: bool,
    },
    /// An abuse report (a spam complaint).
    Complaint {
        feedback_type: String,
        /// `Original-Rcpt-To`: who complained.
        recipient: Option<String>,
    },
    /// Not a report: ignored.
    NotAReport(String),
}

/// RFC 3464 `Action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Failed,
    Delayed,
    Delivered,
    Relayed,
    Expanded,
}

impl Action {
    fn parse(value: &str) -> Option<Action> {
        let word = value.split_whitespace().next()?.to_ascii_lowercase();
        Some(match word.as_str() {
            "failed" => Action::Failed,
            "delayed" => Action::Delayed,
            "delivered" => Action::Delivered,
            "relayed" => Action::Relayed,
            "expanded" => Action::Expanded,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Failed => "failed",
            Action::Delayed => "delayed",
            Action::Delivered => "delivered",
            Action::Relayed => "relayed",
            Action::Expanded => "expanded",
        }
    }
}

/// One recipient of a DSN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientStatus {
    pub action: Action,
    /// `Status` (RFC 3463), or the enhanced code of the diagnostic when `Status` is absent.
    pub status: Option<EnhancedStatus>,
    /// `Diagnostic-Code` without its type (`smtp; `), whitespace collapsed.
    pub diagnostic: Option<String>,
    /// `Final-Recipient`, without its type (`rfc822;`).
    pub final_recipient: Option<String>,
    /// `Original-Recipient`, without its type; often absent.
    pub original_recipient: Option<String>,
}

/// What a recipient's status means for the email.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The address does not exist (5.1.1, 5.1.10, 5.2.1, "user unknown", ...): blacklist.
    HardBounce,
    /// Failed for the mailbox's sake (full, 4.x.x given up on): counts toward the threshold.
    SoftBounce,
    /// Failed for a reason that is not the recipient's (5.7.x policy, content, ...).
    Failed,
    Delivered,
    Delayed,
}

impl RecipientStatus {
    /// The SMTP reply this status amounts to: the diagnostic's code when it agrees with the
    /// status's class, else `x50` of that class; the status as the enhanced code.
    pub fn reply(&self) -> SmtpReply {
        let diagnostic = self.diagnostic.as_deref().unwrap_or("");
        let parsed = SmtpReply::parse(diagnostic);
        let status = self
            .status
            .or_else(|| parsed.as_ref().and_then(|r| r.enhanced));
        let class = status
            .map(|s| u16::from(s.class))
            .or_else(|| parsed.as_ref().map(|r| r.code / 100))
            .filter(|c| matches!(c, 2 | 4 | 5))
            .unwrap_or(match self.action {
                Action::Failed => 5,
                Action::Delayed => 4,
                _ => 2,
            });
        let code = parsed
            .as_ref()
            .map(|r| r.code)
            .filter(|c| c / 100 == class)
            .unwrap_or(class * 100 + 50);
        let text = match &parsed {
            Some(r) => r.text.clone(),
            None => diagnostic.to_string(),
        };
        let text = match status {
            Some(s) => format!("{s} {text}"),
            None => text,
        };
        SmtpReply::from_parts(code, &text)
    }

    /// docs/bounces.md "Bounces and complaints": the project's classifier on the status and the
    /// diagnostic, for a failed recipient.
    pub fn verdict(&self) -> Verdict {
        match self.action {
            Action::Delivered | Action::Relayed | Action::Expanded => Verdict::Delivered,
            Action::Delayed => Verdict::Delayed,
            Action::Failed => {
                let reply = self.reply();
                match reply.code / 100 {
                    // Given up on a temporary failure (e.g. 4.4.1 after days of retries).
                    4 => Verdict::SoftBounce,
                    5 => match SendFailure::from_reply(reply).class {
                        FailureClass::HardBounce => Verdict::HardBounce,
                        FailureClass::Transient { .. } => Verdict::SoftBounce,
                        FailureClass::Permanent => Verdict::Failed,
                    },
                    _ => Verdict::Failed,
                }
            }
        }
    }

    /// The recipient the report is about: the original one when given (what we sent to),
    /// else the final one.
    pub fn recipient(&self) -> Option<&str> {
        self.original_recipient
            .as_deref()
            .or(self.final_recipient.as_deref())
    }
}

/// Reads one message as the MTA handed it over. Never fails: what is not a report says why.
pub fn parse(raw: &[u8]) -> Report {
    let mut report = Report {
        kind: ReportKind::NotAReport(String::new()),
        addressed_to: Vec::new(),
        original_senders: Vec::new(),
        original_message_id: None,
        queue_id: None,
    };
    let Some(message) = MessageParser::default().parse(raw) else {
        report.kind = ReportKind::NotAReport("not a mail message (no headers)".into());
        return report;
    };
    // Most specific first, whatever order the headers came in.
    for name in ["delivered-to", "x-original-to", "to"] {
        for (_, value) in message
            .headers_raw()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            for address in addresses_in(value) {
                push_unique(&mut report.addressed_to, address);
            }
        }
    }

    let mut delivery_status: Option<String> = None;
    let mut feedback: Option<String> = None;
    for part in &message.parts {
        let Some(ct) = part.content_type() else {
            continue;
        };
        let ctype = ct.ctype().to_ascii_lowercase();
        let subtype = ct.subtype().unwrap_or("").to_ascii_lowercase();
        match (ctype.as_str(), subtype.as_str()) {
            ("message", "delivery-status" | "global-delivery-status")
                if delivery_status.is_none() =>
            {
                delivery_status = Some(String::from_utf8_lossy(part.contents()).into_owned());
            }
            ("message", "feedback-report") if feedback.is_none() => {
                feedback = Some(String::from_utf8_lossy(part.contents()).into_owned());
            }
            ("message", "rfc822" | "global") => {
                if let PartType::Message(original) = &part.body {
                    note_original(&mut report, original);
                }
            }
            ("text", "rfc822-headers") | ("message", "global-headers") => {
                if let Some(original) = MessageParser::default().parse_headers(part.contents()) {
                    note_original(&mut report, &original);
                }
            }
            _ => {}
        }
    }

    if let Some(fields) = feedback {
        report.kind = read_feedback(&fields, &mut report);
        return report;
    }
    if let Some(fields) = delivery_status {
        let (recipients, queue_id) = read_delivery_status(&fields);
        report.queue_id = queue_id;
        report.kind = if recipients.is_empty() {
            ReportKind::NotAReport("a delivery-status part without any recipient".into())
        } else {
            ReportKind::Delivery {
                recipients,
                from_text: false,
            }
        };
        return report;
    }
    report.kind = read_text_bounce(&message, &mut report);
    report
}

fn push_unique(list: &mut Vec<String>, item: String) {
    if !list.iter().any(|x| x.eq_ignore_ascii_case(&item)) {
        list.push(item);
    }
}

/// The Message-ID and envelope sender of the returned original.
fn note_original(report: &mut Report, original: &Message<'_>) {
    if report.original_message_id.is_none() {
        report.original_message_id = original
            .message_id()
            .map(|id| strip_angles(id).to_string())
            .filter(|id| !id.is_empty());
    }
    for (name, value) in original.headers_raw() {
        if name.eq_ignore_ascii_case("return-path") {
            for address in addresses_in(value) {
                push_unique(&mut report.original_senders, address);
            }
        }
    }
}

fn strip_angles(s: &str) -> &str {
    s.trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .trim()
}

/// Every `local@domain` in a header value or a line of text, angle brackets and
/// punctuation around it removed.
fn addresses_in(text: &str) -> Vec<String> {
    text.split(|c: char| c.is_whitespace() || matches!(c, ',' | ';' | '<' | '>' | '"' | '(' | ')'))
        .map(|w| w.trim_matches(|c: char| matches!(c, ':' | '.' | '[' | ']' | '\'')))
        .filter(|w| {
            w.len() <= 320
                && w.split_once('@')
                    .is_some_and(|(l, d)| !l.is_empty() && (d.contains('.') || d == "localhost"))
        })
        .map(str::to_string)
        .collect()
}

/// Header-like fields (`Name: value`, continuation lines start with white space), in
/// groups separated by blank lines. Names are lower-cased; continuation lines are kept on
/// their own line so a multi-line diagnostic can be read reply line by reply line.
fn field_groups(text: &str) -> Vec<Vec<(String, String)>> {
    let mut groups = Vec::new();
    let mut group: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            if !group.is_empty() {
                groups.push(std::mem::take(&mut group));
            }
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = group.last_mut() {
                value.push('\n');
                value.push_str(line.trim());
            }
            continue;
        }
        if let Some((name, value)) = line.split_once(':') {
            let name = name.trim();
            if !name.is_empty() && !name.contains(' ') {
                group.push((name.to_ascii_lowercase(), value.trim().to_string()));
            }
        }
    }
    if !group.is_empty() {
        groups.push(group);
    }
    groups
}

/// `rfc822; bob@example.com` → `bob@example.com`; `smtp; 550 ...` → `550 ...`.
fn without_type(value: &str) -> &str {
    match value.split_once(';') {
        Some((kind, rest))
            if !kind.trim().is_empty()
                && kind.trim().len() <= 16
                && kind
                    .trim()
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-') =>
        {
            rest.trim()
        }
        _ => value.trim(),
    }
}

fn address_field(value: &str) -> Option<String> {
    let a = strip_angles(without_type(value));
    (a.contains('@') && !a.contains(char::is_whitespace)).then(|| a.to_string())
}

fn shorten(text: &str) -> String {
    let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if collapsed.len() <= MAX_TEXT {
        return collapsed;
    }
    let mut end = MAX_TEXT;
    while !collapsed.is_char_boundary(end) {
        end -= 1;
    }
    collapsed[..end].to_string()
}

/// The recipients of a `message/delivery-status` body, and the reporting relay's queue id.
fn read_delivery_status(text: &str) -> (Vec<RecipientStatus>, Option<String>) {
    let mut recipients = Vec::new();
    let mut queue_id = None;
    for group in field_groups(text) {
        let get = |name: &str| {
            group
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        if let Some(id) = get("x-postfix-queue-id") {
            queue_id = Some(id.trim().to_string()).filter(|s| !s.is_empty());
        }
        let final_recipient = get("final-recipient").and_then(address_field);
        let original_recipient = get("original-recipient").and_then(address_field);
        let action = get("action").and_then(Action::parse);
        let status =
            get("status").and_then(|s| s.split_whitespace().next().and_then(EnhancedStatus::parse));
        if final_recipient.is_none() && original_recipient.is_none() && action.is_none() {
            continue; // the per-message fields
        }
        let diagnostic = get("diagnostic-code")
            .map(without_type)
            .filter(|d| !d.is_empty());
        let diagnostic_status = diagnostic
            .and_then(SmtpReply::parse)
            .and_then(|r| r.enhanced);
        let status = status.or(diagnostic_status);
        // A recipient without an Action is read from its status: 5.x.x failed, 4.x.x
        // delayed, 2.x.x delivered (some MTAs leave it out).
        let action = match (action, status.map(|s| s.class)) {
            (Some(a), _) => a,
            (None, Some(5)) => Action::Failed,
            (None, Some(4)) => Action::Delayed,
            (None, Some(2)) => Action::Delivered,
            (None, _) => continue,
        };
        recipients.push(RecipientStatus {
            action,
            status,
            diagnostic: diagnostic.map(|d| {
                // One reply line per line, as SmtpReply::parse reads them; capped.
                let lines: Vec<&str> = d.lines().take(20).collect();
                let joined = lines.join("\n");
                if joined.len() > MAX_TEXT * 4 {
                    shorten(&joined)
                } else {
                    joined
                }
            }),
            final_recipient,
            original_recipient,
        });
    }
    (recipients, queue_id)
}

/// An ARF report: a complaint, unless its type says otherwise.
fn read_feedback(text: &str, report: &mut Report) -> ReportKind {
    let fields: Vec<(String, String)> = field_groups(text).into_iter().flatten().collect();
    let get = |name: &str| {
        fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let feedback_type = get("feedback-type")
        .and_then(|t| t.split_whitespace().next())
        .unwrap_or("abuse")
        .to_ascii_lowercase();
    for (name, value) in &fields {
        if name == "original-mail-from" {
            for address in addresses_in(value) {
                push_unique(&mut report.original_senders, address);
            }
        }
    }
    match feedback_type.as_str() {
        "abuse" | "fraud" => ReportKind::Complaint {
            recipient: get("original-rcpt-to").and_then(address_field),
            feedback_type,
        },
        other => ReportKind::NotAReport(format!("a feedback report of type {other:?}")),
    }
}

/// Auto-replies say so (RFC 3834 `Auto-Submitted: auto-replied`) or in the usual ways.
fn is_auto_reply(message: &Message<'_>) -> bool {
    let header = |name: &str| {
        message
            .headers_raw()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_ascii_lowercase())
    };
    if header("auto-submitted").is_some_and(|v| v.starts_with("auto-replied"))
        || header("x-autoreply").is_some()
        || header("x-autorespond").is_some()
        || header("precedence").is_some_and(|v| v.contains("auto_reply"))
    {
        return true;
    }
    let subject = message.subject().unwrap_or("").to_ascii_lowercase();
    [
        "out of office",
        "out of the office",
        "automatic reply",
        "auto-reply",
        "autoreply",
        "auto:",
        "away from",
        "vacation",
    ]
    .iter()
    .any(|p| subject.contains(p))
}

/// Sent by a mail system rather than a person: the sender or the subject says so.
fn looks_like_bounce(message: &Message<'_>) -> bool {
    let from = message
        .from()
        .and_then(|a| a.first())
        .map(|a| format!("{} {}", a.name().unwrap_or(""), a.address().unwrap_or("")))
        .unwrap_or_default()
        .to_ascii_lowercase();
    if [
        "mailer-daemon",
        "postmaster",
        "mail delivery",
        "mail system",
    ]
    .iter()
    .any(|p| from.contains(p))
    {
        return true;
    }
    let subject = message.subject().unwrap_or("").to_ascii_lowercase();
    [
        "undeliver",
        "delivery status notification",
        "delivery failure",
        "delivery failed",
        "mail delivery failed",
        "returned mail",
        "failure notice",
        "could not be delivered",
        "non-delivery",
        "delivery has failed",
    ]
    .iter()
    .any(|p| subject.contains(p))
}

/// A bounce written as text (Exim's and Yahoo's classic ones, qmail, hand-rolled MTAs):
/// found by its sender or subject and a status line.
fn read_text_bounce(message: &Message<'_>, report: &mut Report) -> ReportKind {
    if is_auto_reply(message) {
        return ReportKind::NotAReport("an auto-reply".into());
    }
    if !looks_like_bounce(message) {
        return ReportKind::NotAReport("not a delivery report or abuse report".into());
    }
    let mut text = String::new();
    for part in message.text_bodies() {
        if let Some(t) = part.text_contents() {
            text.push_str(t);
            text.push('\n');
        }
    }
    if text.trim().is_empty()
        && let Some(t) = message.body_text(0)
    {
        text.push_str(&t);
    }
    if report.original_message_id.is_none() {
        report.original_message_id = text.lines().find_map(|line| {
            let (name, value) = line.trim().split_once(':')?;
            name.eq_ignore_ascii_case("message-id")
                .then(|| strip_angles(value).to_string())
                .filter(|id| !id.is_empty() && !id.contains(char::is_whitespace))
        });
    }
    let Some((reply, recipient)) = find_status_line(&text) else {
        return ReportKind::NotAReport("a bounce without a recognisable status line".into());
    };
    let subject = message.subject().unwrap_or("").to_ascii_lowercase();
    let delayed = reply.code / 100 == 4
        && (subject.contains("delay")
            || [
                "will retry",
                "still trying",
                "continue trying",
                "will keep trying",
            ]
            .iter()
            .any(|p| text.to_ascii_lowercase().contains(p)));
    let action = if delayed {
        Action::Delayed
    } else {
        Action::Failed
    };
    ReportKind::Delivery {
        recipients: vec![RecipientStatus {
            action,
            status: reply.enhanced,
            diagnostic: Some(shorten(&reply.to_string())),
            final_recipient: recipient,
            original_recipient: None,
        }],
        from_text: true,
    }
}

/// A 4xx/5xx reply code or an RFC 3463 status at the start of a word: `550 5.1.1 ...`,
/// `550-5.1.1`, `554: delivery error`, `#5.1.1 smtp;550 ...`, `5.1.1 <bob@x>: ...`. The
/// first line with both wins, else the first with either. The recipient is an address on
/// that line, or the nearest line above it that holds only an address.
fn find_status_line(text: &str) -> Option<(SmtpReply, Option<String>)> {
    let mut best: Option<(SmtpReply, Option<String>)> = None;
    let mut last_address: Option<String> = None;
    for line in text.lines().take(2000) {
        let line = line.trim();
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.len() == 1
            && let Some(a) = addresses_in(line).into_iter().next()
        {
            last_address = Some(a);
            continue;
        }
        let Some(reply) = reply_in(line) else {
            continue;
        };
        let recipient = addresses_in(line)
            .into_iter()
            .next()
            .or(last_address.clone());
        if reply_has_both(line) {
            return Some((reply, recipient));
        }
        if best.is_none() {
            best = Some((reply, recipient));
        }
    }
    best
}

fn reply_has_both(line: &str) -> bool {
    let mut words = line.split_whitespace().map(normalise_word);
    while let Some(w) = words.next() {
        if basic_code(&w).is_some() {
            return words
                .next()
                .and_then(|n| EnhancedStatus::parse(&n))
                .is_some();
        }
    }
    false
}

/// `550-5.1.1` → `550 5.1.1`; `554:` → `554`; `smtp;550` → `550`.
fn normalise_word(word: &str) -> String {
    let word = word.rsplit(';').next().unwrap_or(word);
    let word = word.trim_end_matches([':', ',']);
    match word.split_once('-') {
        Some((code, rest)) if basic_code(code).is_some() => format!("{code} {rest}"),
        _ => word.to_string(),
    }
}

fn basic_code(word: &str) -> Option<u16> {
    (word.len() == 3 && word.bytes().all(|b| b.is_ascii_digit()))
        .then(|| word.parse::<u16>().ok())
        .flatten()
        .filter(|c| (400..600).contains(c))
}

/// The reply a line of a text bounce carries, if any.
fn reply_in(line: &str) -> Option<SmtpReply> {
    let words: Vec<String> = line
        .split_whitespace()
        .flat_map(|w| {
            normalise_word(w)
                .split(' ')
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    for (i, word) in words.iter().enumerate() {
        if let Some(code) = basic_code(word) {
            let rest = words.get(i + 1..).unwrap_or(&[]).join(" ");
            return Some(SmtpReply::from_parts(code, &rest));
        }
        if let Some(status) = EnhancedStatus::parse(word).filter(|s| s.class != 2) {
            let rest = words.get(i + 1..).unwrap_or(&[]).join(" ");
            // A status alone: its class gives the basic code, unless the next word is one.
            let code = words
                .get(i + 1)
                .and_then(|w| basic_code(w))
                .filter(|c| c / 100 == u16::from(status.class))
                .unwrap_or(u16::from(status.class) * 100 + 50);
            let rest = rest
                .strip_prefix(&code.to_string())
                .map(str::trim)
                .unwrap_or(&rest);
            return Some(SmtpReply::from_parts(code, &format!("{status} {rest}")));
        }
    }
    None
}

#[cfg(test)]
mod tests;
