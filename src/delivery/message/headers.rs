//! Header values lettre would write in a form some readers misread: a subject typed to
//! look like an RFC 2047 encoded word or holding control characters (sent raw, a reader
//! decodes or shows something else), and address lists (one unfolded line however many
//! addresses, past RFC 5322's 998-byte limit).

use std::fmt::Write as _;

use email_encoding::headers::writer::EmailWriter;
use lettre::message::header::{Header, HeaderName, HeaderValue};
use lettre::message::{Mailbox, Mailboxes};

/// Where header lines are folded (RFC 5322 2.1.1's recommended limit).
const FOLD_AT: usize = 78;

/// A word of a header may go out as it is: visible ASCII only, and not something a reader
/// would take for an encoded word.
fn plain_word(word: &str) -> bool {
    word.bytes().all(|b| (0x21..=0x7e).contains(&b)) && !word.contains("=?")
}

/// `Subject`, RFC 2047-encoding every word that is not plain (see [`plain_word`]).
#[derive(Debug, Clone)]
pub(super) struct Subject(pub String);

impl Header for Subject {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("Subject")
    }
    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self(s.to_string()))
    }
    fn display(&self) -> HeaderValue {
        let mut encoded = String::with_capacity(self.0.len());
        encode_text("Subject", &self.0, &mut encoded);
        HeaderValue::dangerous_new_pre_encoded(Self::name(), self.0.clone(), encoded)
    }
}

/// Unstructured text as lettre's own encoder writes it (plain words folded at spaces, runs
/// of other words as one encoded word), with the stricter [`plain_word`].
fn encode_text(name: &str, text: &str, out: &mut String) {
    let mut w = EmailWriter::new(out, name.len() + 2, 0, false);
    let mut pending = String::new();
    for word in text.split_inclusive(' ') {
        let bare = word.trim_end_matches(' ');
        if !bare.is_empty() && plain_word(bare) {
            flush(&mut pending, &mut w);
            let _ = w.folding().write_str(word);
        } else {
            pending.push_str(word);
        }
    }
    flush(&mut pending, &mut w);
}

fn flush(pending: &mut String, w: &mut EmailWriter<'_>) {
    if pending.is_empty() {
        return;
    }
    let text = pending.trim_end_matches(' ');
    if !text.is_empty() {
        let _ = email_encoding::headers::rfc2047::encode(text, w);
    }
    for _ in 0..pending.len() - text.len() {
        w.space();
    }
    pending.clear();
}

/// `Cc`, folded between addresses so no line passes [`FOLD_AT`] unless one address alone
/// does. The raw value is lettre's, so the envelope lettre derives from it is unchanged.
#[derive(Debug, Clone)]
pub(super) struct Cc(pub Mailboxes);

impl Header for Cc {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("Cc")
    }
    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self(s.parse()?))
    }
    fn display(&self) -> HeaderValue {
        HeaderValue::dangerous_new_pre_encoded(
            Self::name(),
            self.0.to_string(),
            folded_list("Cc", &self.0),
        )
    }
}

fn folded_list(name: &str, list: &Mailboxes) -> String {
    let mut out = String::new();
    let mut w = EmailWriter::new(&mut out, name.len() + 2, 0, false);
    for (i, mailbox) in list.iter().enumerate() {
        let one = encoded_mailbox(mailbox);
        if i > 0 {
            let _ = w.write_char(',');
            let first_line = one.split("\r\n").next().map_or(0, str::len);
            if w.line_len() + 1 + first_line > FOLD_AT {
                let _ = w.new_line();
            }
            w.space();
        }
        let _ = w.write_str(&one);
    }
    drop(w);
    out
}

/// One mailbox as lettre encodes it in a header (display name quoted or RFC 2047-encoded).
fn encoded_mailbox(mailbox: &Mailbox) -> String {
    let mut out = String::new();
    let value = lettre::message::header::Cc::from(Mailboxes::from(mailbox.clone())).display();
    // lettre keeps the encoded form private; a one-address list's encoding is found in the
    // formatted header line.
    let mut headers = lettre::message::header::Headers::new();
    headers.insert_raw(value);
    let line = headers.to_string();
    out.push_str(
        line.strip_prefix("Cc: ")
            .unwrap_or(&line)
            .trim_end_matches("\r\n"),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn formatted<H: Header>(h: H) -> String {
        let mut headers = lettre::message::header::Headers::new();
        headers.set(h);
        headers.to_string()
    }

    #[test]
    fn typed_encoded_words_and_control_characters_are_encoded() {
        let line = formatted(Subject("=?utf-8?b?SGk=?= from us".into()));
        assert!(!line.contains("=?utf-8?b?SGk=?= "), "{line}");
        assert!(line.starts_with("Subject: =?utf-8?b?"), "{line}");
        let line = formatted(Subject("bell\u{7} here".into()));
        assert!(!line.contains('\u{7}'), "{line}");
        assert_eq!(
            formatted(Subject("Your application for Biscuit".into())),
            "Subject: Your application for Biscuit\r\n"
        );
    }

    #[test]
    fn long_address_lists_fold_at_78() {
        let list: Mailboxes = (0..80)
            .map(|i| {
                format!("adopter{i}@example.com")
                    .parse::<Mailbox>()
                    .unwrap()
            })
            .collect();
        let line = formatted(Cc(list.clone()));
        assert!(line.split("\r\n").all(|l| l.len() <= FOLD_AT), "{line}");
        let parsed: Mailboxes = line
            .trim_start_matches("Cc: ")
            .replace("\r\n", "")
            .trim()
            .parse()
            .unwrap();
        assert_eq!(parsed.iter().count(), 80);
    }
}
