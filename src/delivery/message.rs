//! Builds the RFC 5322 message for a row: addresses, headers and MIME structure.
//! Everything a row can get wrong is caught here with a reason a person can read.

use lettre::Message;
use lettre::message::header::{Header, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};

use crate::queue::ClaimedEmail;

/// Why a row cannot become a message. Permanent: retrying would not help.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum InvalidEmail {
    #[error("invalid {field} address {value:?}: {problem}")]
    Address {
        field: &'static str,
        value: String,
        problem: String,
    },
    #[error("{field} contains a line break (CR/LF), which could inject mail headers")]
    HeaderInjection { field: &'static str },
    #[error("email has no body: html_content and text_content are both empty")]
    EmptyBody,
    #[error("email has an empty subject")]
    EmptySubject,
    #[error("message could not be built: {0}")]
    Build(String),
}

/// Which parts the recipient gets (`email_preferences.email_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BodyFormat {
    /// multipart/alternative: text and HTML (`html` and `both`).
    #[default]
    Multipart,
    /// text/plain only (`text`).
    TextOnly,
}

/// The content to send; for template emails this is what the renderer produced.
#[derive(Debug, Clone)]
pub struct Content<'a> {
    pub subject: &'a str,
    pub html: &'a str,
    pub text: Option<&'a str>,
}

/// RFC 8058 headers for marketing and notification mail.
#[derive(Debug, Clone)]
pub struct ListUnsubscribe {
    pub url: String,
}

/// The `Message-ID` of an email: derived from `email_id`, so every attempt carries the same
/// one and receivers can drop a duplicate after an at-least-once retry.
pub fn message_id(email: &ClaimedEmail) -> String {
    let domain = email
        .from_email
        .rsplit_once('@')
        .map(|(_, d)| d.trim())
        .filter(|d| {
            !d.is_empty()
                && d.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        })
        .unwrap_or("adopt-worker.invalid");
    format!("<{}@{}>", email.email_id, domain)
}

pub fn build(
    email: &ClaimedEmail,
    content: &Content<'_>,
    format: BodyFormat,
    unsubscribe: Option<&ListUnsubscribe>,
) -> Result<Message, InvalidEmail> {
    let subject = single_line("subject", content.subject)?;
    if subject.trim().is_empty() {
        return Err(InvalidEmail::EmptySubject);
    }
    let from = mailbox("from", email.from_name.as_deref(), &email.from_email)?;
    let to = mailbox("to", email.to_name.as_deref(), &email.to_email)?;

    let mut builder = Message::builder()
        .from(from)
        .to(to)
        .subject(subject)
        .message_id(Some(message_id(email)))
        .date_now();
    for cc in email.cc_emails.iter().flatten() {
        builder = builder.cc(mailbox("cc", None, cc)?);
    }
    for bcc in email.bcc_emails.iter().flatten() {
        builder = builder.bcc(mailbox("bcc", None, bcc)?);
    }
    if let Some(reply_to) = email
        .reply_to_email
        .as_deref()
        .filter(|r| !r.trim().is_empty())
    {
        builder = builder.reply_to(mailbox("reply-to", None, reply_to)?);
    }
    if let Some(unsub) = unsubscribe {
        single_line("List-Unsubscribe URL", &unsub.url)?;
        builder = builder
            .header(ListUnsubscribeHeader(format!("<{}>", unsub.url)))
            .header(ListUnsubscribePost);
    }

    let html = content.html.trim();
    let text = content.text.map(str::trim).filter(|t| !t.is_empty());
    if html.is_empty() && text.is_none() {
        return Err(InvalidEmail::EmptyBody);
    }
    let text_body = match text {
        Some(t) => t.to_string(),
        None => html_to_text(html),
    };
    let built = match (format, html.is_empty()) {
        (BodyFormat::TextOnly, _) | (_, true) => builder.singlepart(SinglePart::plain(text_body)),
        (BodyFormat::Multipart, false) => builder.multipart(MultiPart::alternative_plain_html(
            text_body,
            html.to_string(),
        )),
    };
    built.map_err(|e| InvalidEmail::Build(e.to_string()))
}

/// A text part for HTML-only mail, by a real HTML-to-text converter (links kept as
/// footnotes), not a tag stripper.
pub fn html_to_text(html: &str) -> String {
    html2text::from_read(html.as_bytes(), 78).unwrap_or_else(|_| String::new())
}

fn single_line<'a>(field: &'static str, value: &'a str) -> Result<&'a str, InvalidEmail> {
    if value.contains(['\r', '\n']) {
        Err(InvalidEmail::HeaderInjection { field })
    } else {
        Ok(value)
    }
}

fn mailbox(
    field: &'static str,
    name: Option<&str>,
    address: &str,
) -> Result<Mailbox, InvalidEmail> {
    single_line(field, address)?;
    let name = match name {
        Some(n) => {
            // Name the column the operator has to fix: `to_name`, `from_name`.
            let name_field = match field {
                "to" => "to_name",
                "from" => "from_name",
                other => other,
            };
            Some(single_line(name_field, n)?.trim().to_string()).filter(|n| !n.is_empty())
        }
        None => None,
    };
    let address = address.trim();
    let parsed = address
        .parse()
        .map_err(|e: lettre::address::AddressError| InvalidEmail::Address {
            field,
            value: address.to_string(),
            problem: e.to_string(),
        })?;
    Ok(Mailbox::new(name, parsed))
}

#[derive(Debug, Clone)]
struct ListUnsubscribeHeader(String);

impl Header for ListUnsubscribeHeader {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("List-Unsubscribe")
    }
    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self(s.to_string()))
    }
    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), self.0.clone())
    }
}

#[derive(Debug, Clone)]
struct ListUnsubscribePost;

impl Header for ListUnsubscribePost {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("List-Unsubscribe-Post")
    }
    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self)
    }
    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), "List-Unsubscribe=One-Click".to_string())
    }
}
