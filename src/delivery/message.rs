//! Builds the RFC 5322 message for a row: addresses, headers and MIME structure.
//! Everything a row can get wrong is caught here with a reason a person can read.

mod headers;
mod qp;

pub use crate::templates::text::{WIDTH as TEXT_WIDTH, html_to_text, html_to_words};

use lettre::address::Envelope;
use lettre::message::header::{ContentTransferEncoding, Header, HeaderName, HeaderValue};
use lettre::message::{Body, Mailbox, Mailboxes, MultiPart, SinglePart};
use lettre::{Address, Message};

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

pub use crate::preferences::BodyFormat;

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

/// Longest Message-ID kept: it is stored in `provider_message_id VARCHAR(255)` and
/// looked up there by bounce and webhook handlers, so it must fit whole.
pub const MAX_MESSAGE_ID: usize = 255;

/// The `Message-ID` of an email: derived from `email_id`, so every attempt carries the same
/// one and receivers can drop a duplicate after an at-least-once retry. The sender's
/// domain when it is plain ASCII and the whole id fits [`MAX_MESSAGE_ID`].
pub fn message_id(email: &ClaimedEmail) -> String {
    // `<` + 36-character UUID + `@` + domain + `>`
    let room = MAX_MESSAGE_ID - 39;
    let domain = email
        .from_email
        .rsplit_once('@')
        .map(|(_, d)| d.trim())
        .filter(|d| {
            !d.is_empty()
                && d.len() <= room
                && d.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        })
        .unwrap_or("adopt-worker.invalid");
    format!("<{}@{}>", email.email_id, domain)
}

/// The mail provider whose SMTP relay `smtp.url` names: its webhooks report on the email by
/// a value the worker sets in a header only that provider reads, so every event (opens and
/// clicks too, which carry no Message-ID) finds its row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayProvider {
    /// `email-smtp.<region>.amazonaws.com`: `X-SES-MESSAGE-TAGS: email_id=<id>`
    /// (`mail.tags.email_id` in SES's events).
    Ses,
    /// `smtp.sendgrid.net`: `X-SMTPAPI` unique argument `email_id` (a custom argument of
    /// every event).
    SendGrid,
    /// `*.postmarkapp.com`: `X-PM-Metadata-email_id` (`Metadata.email_id`).
    Postmark,
    /// `*.mailgun.org`: `X-Mailgun-Variables` (`user-variables.email_id`).
    Mailgun,
}

impl RelayProvider {
    /// The provider whose relay `smtp_url` names, if any.
    pub fn of_smtp_url(smtp_url: &str) -> Option<RelayProvider> {
        let url = url::Url::parse(smtp_url).ok()?;
        let host = url.host_str()?.trim_end_matches('.').to_ascii_lowercase();
        let under = |domain: &str| host == domain || host.ends_with(&format!(".{domain}"));
        if host.starts_with("email-smtp.") && (under("amazonaws.com") || under("amazonaws.com.cn"))
        {
            Some(RelayProvider::Ses)
        } else if under("sendgrid.net") {
            Some(RelayProvider::SendGrid)
        } else if under("postmarkapp.com") {
            Some(RelayProvider::Postmark)
        } else if under("mailgun.org") {
            Some(RelayProvider::Mailgun)
        } else {
            None
        }
    }

    /// The header that carries `email_id` to this provider's webhooks.
    fn header(self, email_id: uuid::Uuid) -> HeaderValue {
        let (name, value) = match self {
            RelayProvider::Ses => ("X-SES-MESSAGE-TAGS", format!("email_id={email_id}")),
            RelayProvider::SendGrid => (
                "X-SMTPAPI",
                format!(r#"{{"unique_args":{{"email_id":"{email_id}"}}}}"#),
            ),
            RelayProvider::Postmark => ("X-PM-Metadata-email_id", email_id.to_string()),
            RelayProvider::Mailgun => (
                "X-Mailgun-Variables",
                format!(r#"{{"email_id":"{email_id}"}}"#),
            ),
        };
        HeaderValue::new(HeaderName::new_from_ascii_str(name), value)
    }
}

/// `eight_bit`: the message will go to a relay that announced 8BITMIME (or to the outbox),
/// so text with non-ASCII characters can be sent as it is rather than quoted-printable.
/// `return_path`: the envelope sender (MAIL FROM) when it is not the From address (VERP,
/// `bounce.return_path`); the headers are the same either way. `provider`: the mail
/// provider whose relay sends it, for the header its webhooks match the email by.
pub fn build(
    email: &ClaimedEmail,
    content: &Content<'_>,
    format: BodyFormat,
    unsubscribe: Option<&ListUnsubscribe>,
    eight_bit: bool,
    return_path: Option<Address>,
    provider: Option<RelayProvider>,
) -> Result<Message, InvalidEmail> {
    let subject = single_line("subject", content.subject)?;
    if subject.trim().is_empty() {
        return Err(InvalidEmail::EmptySubject);
    }
    let from = mailbox("from", email.from_name.as_deref(), &email.from_email)?;
    let to = mailbox("to", email.to_name.as_deref(), &email.to_email)?;
    // The envelope's recipients, in the order lettre derives them from To, Cc and Bcc.
    let mut recipients = vec![to.email.clone()];

    let mut builder = Message::builder()
        .from(from)
        .to(to)
        .header(headers::Subject(subject.to_string()))
        .message_id(Some(message_id(email)))
        .date_now();
    let cc = email
        .cc_emails
        .iter()
        .flatten()
        .map(|cc| mailbox("cc", None, cc))
        .collect::<Result<Mailboxes, _>>()?;
    if cc.iter().next().is_some() {
        recipients.extend(cc.iter().map(|m| m.email.clone()));
        builder = builder.header(headers::Cc(cc));
    }
    for bcc in email.bcc_emails.iter().flatten() {
        let bcc = mailbox("bcc", None, bcc)?;
        recipients.push(bcc.email.clone());
        builder = builder.bcc(bcc);
    }
    if let Some(sender) = return_path {
        let envelope = Envelope::new(Some(sender), recipients)
            .map_err(|e| InvalidEmail::Build(e.to_string()))?;
        builder = builder.envelope(envelope);
    }
    if let Some(reply_to) = email
        .reply_to_email
        .as_deref()
        .filter(|r| !r.trim().is_empty())
    {
        builder = builder.reply_to(mailbox("reply-to", None, reply_to)?);
    }
    if let Some(p) = provider {
        builder = builder.raw_header(p.header(email.email_id));
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
        (BodyFormat::TextOnly, _) | (_, true) => {
            builder.singlepart(SinglePart::plain(encoded_body(&text_body, eight_bit)))
        }
        (BodyFormat::Multipart, false) => builder.multipart(MultiPart::alternative_plain_html(
            encoded_body(&text_body, eight_bit),
            encoded_body(html, eight_bit),
        )),
    };
    built.map_err(|e| InvalidEmail::Build(e.to_string()))
}

/// A message in its final form: the envelope and the bytes every transport sends as they are
/// (the relay's DATA, the outbox's `.eml`), signed when DKIM covers its sender
/// (`dkim::Signer::sign`, which makes these).
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub envelope: Envelope,
    pub bytes: Vec<u8>,
}

impl Outgoing {
    /// The message as lettre writes it, unsigned.
    pub fn new(message: &Message) -> Outgoing {
        Outgoing {
            envelope: message.envelope().clone(),
            bytes: message.formatted(),
        }
    }
}

/// Longest line 7bit allows (RFC 5322 2.1.1), without its CRLF.
const MAX_LINE: usize = 998;

/// A body part as lettre encodes it, without lettre's slow paths, which were most of the
/// worker's CPU for a 20 KB newsletter (bench/results/profile.txt): it turns LF into CRLF
/// by inserting one `\r` at a time (a memmove of the rest of the body per line), then
/// scans the body twice more to choose an encoding. Here line endings are converted in
/// one pass; ASCII text whose lines fit 7bit's limit of 998 is sent as 7bit, as it is;
/// mostly-ASCII text (typical HTML, a few accented letters or a `·`) is quoted-printable
/// encoded exactly as lettre would (see `qp`), only faster; the rest (NUL, mostly
/// non-ASCII, where base64 may be smaller) is left to lettre's own choice. With
/// `eight_bit`, text with non-ASCII characters whose lines fit is sent as 8bit, unencoded:
/// quoted-printable was the largest part of the worker's CPU per email once rendering was
/// cheap (docs/performance.md "Performance").
fn encoded_body(text: &str, eight_bit: bool) -> Body {
    let (crlf, shape) = crlf_line_endings(text);
    if !shape.nul && shape.longest_line <= MAX_LINE {
        if shape.non_ascii == 0 {
            return Body::dangerous_pre_encoded(
                crlf.into_bytes(),
                ContentTransferEncoding::SevenBit,
            );
        }
        if eight_bit {
            return Body::dangerous_pre_encoded(
                crlf.into_bytes(),
                ContentTransferEncoding::EightBit,
            );
        }
    }
    if shape.non_ascii * 10 < crlf.len() && !shape.nul {
        let encoded = qp::encode(crlf.as_bytes());
        return Body::dangerous_pre_encoded(encoded, ContentTransferEncoding::QuotedPrintable);
    }
    Body::new(crlf)
}

/// What decides a body's encoding, learnt while converting its line endings.
#[derive(Debug, Default, PartialEq, Eq)]
struct Shape {
    non_ascii: usize,
    nul: bool,
    /// In bytes, without the line ending.
    longest_line: usize,
}

/// Every LF not already preceded by CR becomes CRLF, in one pass (line by line, with
/// memchr-based searches).
fn crlf_line_endings(text: &str) -> (String, Shape) {
    let mut out = String::with_capacity(text.len() + text.len() / 16);
    let mut shape = Shape::default();
    let mut lines = text.split('\n').peekable();
    while let Some(segment) = lines.next() {
        let terminated = lines.peek().is_some();
        let line = if terminated {
            segment.strip_suffix('\r').unwrap_or(segment)
        } else {
            segment
        };
        if !line.is_ascii() {
            shape.non_ascii += line.bytes().filter(|b| !b.is_ascii()).count();
        }
        shape.nul |= line.contains('\0');
        // A lone CR ends a line too (old Mac text): on the wire it must be CRLF.
        let mut parts = line.split('\r').peekable();
        while let Some(part) = parts.next() {
            shape.longest_line = shape.longest_line.max(part.len());
            out.push_str(part);
            if parts.peek().is_some() {
                out.push_str("\r\n");
            }
        }
        if terminated {
            out.push_str("\r\n");
        }
    }
    (out, shape)
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
    let address = ascii_domain(address.trim());
    let address = address.as_str();
    let parsed = address
        .parse()
        .map_err(|e: lettre::address::AddressError| InvalidEmail::Address {
            field,
            value: address.to_string(),
            problem: e.to_string(),
        })?;
    Ok(Mailbox::new(name, parsed))
}

/// The address with an internationalised domain in its ASCII (punycode) form, which every
/// relay and reader takes without SMTPUTF8 (`maya@münchen.de` → `maya@xn--mnchen-3ya.de`).
/// A domain that cannot be converted is left for the address parser to refuse.
pub fn ascii_domain(address: &str) -> String {
    match address.rsplit_once('@') {
        Some((local, domain)) if !domain.is_ascii() => match idna::domain_to_ascii(domain) {
            Ok(ascii) => format!("{local}@{ascii}"),
            Err(_) => address.to_string(),
        },
        _ => address.to_string(),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_providers_relay_gets_the_header_its_webhooks_match_by() {
        let of = RelayProvider::of_smtp_url;
        assert_eq!(
            of("smtp://u:p@email-smtp.eu-west-1.amazonaws.com:587"),
            Some(RelayProvider::Ses)
        );
        assert_eq!(
            of("smtps://apikey:k@smtp.sendgrid.net:465"),
            Some(RelayProvider::SendGrid)
        );
        assert_eq!(
            of("smtp://t:t@smtp.postmarkapp.com:587"),
            Some(RelayProvider::Postmark)
        );
        assert_eq!(
            of("smtp://u:p@smtp.eu.mailgun.org:587"),
            Some(RelayProvider::Mailgun)
        );
        for other in [
            "smtp://127.0.0.1:2525",
            "smtp://relay.example.org",
            "smtp://notsendgrid.net",
            "smtp://s3.amazonaws.com",
            "",
        ] {
            assert_eq!(of(other), None, "{other}");
        }
        let id: uuid::Uuid = "9a0c6c47-2b2c-4cb1-9e5c-5d9d0f2f6b10".parse().unwrap();
        let msg = Message::builder()
            .from("a@example.org".parse().unwrap())
            .to("b@example.org".parse().unwrap())
            .raw_header(RelayProvider::Ses.header(id))
            .raw_header(RelayProvider::SendGrid.header(id))
            .raw_header(RelayProvider::Postmark.header(id))
            .raw_header(RelayProvider::Mailgun.header(id))
            .body(String::from("x"))
            .unwrap();
        let text = String::from_utf8(msg.formatted()).unwrap();
        for line in [
            format!("X-SES-MESSAGE-TAGS: email_id={id}\r\n"),
            format!("X-SMTPAPI: {{\"unique_args\":{{\"email_id\":\"{id}\"}}}}\r\n"),
            format!("X-PM-Metadata-email_id: {id}\r\n"),
            format!("X-Mailgun-Variables: {{\"email_id\":\"{id}\"}}\r\n"),
        ] {
            assert!(text.contains(&line), "{line:?} missing from:\n{text}");
        }
    }

    #[test]
    fn line_endings_become_crlf_once() {
        assert_eq!(crlf_line_endings("a\nb\r\nc\n").0, "a\r\nb\r\nc\r\n");
        assert_eq!(crlf_line_endings("\n\n").0, "\r\n\r\n");
        assert_eq!(crlf_line_endings("no newline").0, "no newline");
        let (crlf, shape) = crlf_line_endings("ab\r\nc\rd·\n12345");
        assert_eq!(crlf, "ab\r\nc\r\nd·\r\n12345", "a lone CR is a line break");
        assert_eq!(
            shape,
            Shape {
                non_ascii: 2,
                nul: false,
                longest_line: 5
            }
        );
    }

    #[test]
    fn ascii_html_with_long_lines_goes_7bit_as_it_is() {
        let html = format!("<p>{}</p>\n<p>second line</p>", "x".repeat(500));
        let body = encoded_body(&html, false);
        assert_eq!(body.encoding(), ContentTransferEncoding::SevenBit);
        assert_eq!(body.as_ref(), crlf_line_endings(&html).0.as_bytes());
    }

    #[test]
    fn quoted_printable_is_what_lettre_would_send() {
        let html = format!(
            "<p>Adopt Don't Shop · {}</p>\n<p>Grüße</p>\n",
            "x".repeat(300)
        );
        let ours = encoded_body(&html, false);
        let lettres = Body::new(html.clone());
        assert_eq!(ours.encoding(), lettres.encoding());
        assert_eq!(ours.as_ref(), lettres.as_ref());
    }

    #[test]
    fn non_ascii_goes_8bit_only_where_the_relay_takes_it_and_lines_fit() {
        let text = "Grüße aus dem Tierheim\nÇa va ?";
        let body = encoded_body(text, true);
        assert_eq!(body.encoding(), ContentTransferEncoding::EightBit);
        assert_eq!(
            body.as_ref(),
            "Grüße aus dem Tierheim\r\nÇa va ?".as_bytes()
        );
        let long = format!("{}é", "a".repeat(1000));
        assert_eq!(
            encoded_body(&long, true).encoding(),
            ContentTransferEncoding::QuotedPrintable,
            "a line over 998 bytes cannot be 8bit"
        );
        let lone_cr = encoded_body("a\rb é", true);
        assert_eq!(lone_cr.encoding(), ContentTransferEncoding::EightBit);
        assert_eq!(
            lone_cr.as_ref(),
            "a\r\nb é".as_bytes(),
            "a lone CR is a line break"
        );
    }

    #[test]
    fn anything_7bit_cannot_carry_is_left_to_lettre() {
        let too_long = "x".repeat(MAX_LINE + 1);
        assert_eq!(
            encoded_body(&too_long, false).encoding(),
            ContentTransferEncoding::QuotedPrintable
        );
        assert_eq!(
            encoded_body("Grüße aus dem Tierheim", false).encoding(),
            ContentTransferEncoding::QuotedPrintable
        );
        assert_eq!(
            encoded_body("Привет из приюта", false).encoding(),
            ContentTransferEncoding::Base64
        );
        let bare_cr = encoded_body("bare\rcarriage return", false);
        assert_eq!(bare_cr.encoding(), ContentTransferEncoding::SevenBit);
        assert_eq!(bare_cr.as_ref(), b"bare\r\ncarriage return");
    }
}
