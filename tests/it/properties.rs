//! Property tests: the fuzz targets of `scripts/fuzz`, run with a small case count in the
//! normal suite (`PROPTEST_CASES` raises it). Failing inputs proptest finds are saved under
//! `proptest-regressions/` and replayed first on every run.
//!
//! Targets (test names start with `fuzz_` so `scripts/fuzz` can pick them):
//! `fuzz_smtp_reply`, `fuzz_tracking_token`, `fuzz_message_headers`; `fuzz_template_data`
//! lives next to the renderer (`src/templates/props.rs`), whose types are private.

use adopt_worker::delivery::classify::{
    MAX_REASON_BYTES, MAX_RETRY_HINT, SendFailure, SmtpReply, parse_retry_hint,
};
use adopt_worker::delivery::message::{self, BodyFormat, Content, ListUnsubscribe};
use adopt_worker::preferences::RecipientPrefs;
use adopt_worker::queue::{ClaimedEmail, EmailPriority, EmailType};
use adopt_worker::tracking::{sign_click, sign_open, verify_click, verify_open};
use proptest::prelude::*;
use uuid::Uuid;

fn config() -> ProptestConfig {
    // `PROPTEST_CASES` (read by `ProptestConfig::default`) wins over this suite default.
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(256);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

/// Strings that look like SMTP replies as often as not: codes, enhanced codes, retry phrases,
/// line breaks, control and multi-byte characters.
fn reply_text() -> impl Strategy<Value = String> {
    let word = prop_oneof![
        Just("250".to_string()),
        Just("451".to_string()),
        Just("550-".to_string()),
        Just("5.1.1".to_string()),
        Just("#4.7.1:".to_string()),
        Just("try again in".to_string()),
        Just("Retry-After:".to_string()),
        Just("00:05:00".to_string()),
        Just("99999999999999999999999".to_string()),
        Just("1.5e308 minutes".to_string()),
        Just("\r\n".to_string()),
        Just("\n451 ".to_string()),
        Just("\u{0}\u{7f}\u{85}\u{2028}é😀".to_string()),
        "[0-9 .:smh-]{0,12}",
        any::<String>(),
    ];
    prop::collection::vec(word, 0..24).prop_map(|w| w.join(" "))
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn fuzz_smtp_reply(text in reply_text(), long in 0usize..3) {
        let text = if long == 0 { text.repeat(200) } else { text };
        let hint = parse_retry_hint(&text);
        prop_assert!(hint.is_none_or(|h| !h.is_zero() && h <= MAX_RETRY_HINT));
        let mut replies: Vec<SmtpReply> = SmtpReply::parse(&text).into_iter().collect();
        replies.push(SmtpReply::from_parts(451, &text));
        replies.push(SmtpReply::from_parts(550, &text));
        for reply in replies {
            prop_assert!(!reply.text.contains(['\r', '\n']));
            let failure = SendFailure::from_reply(reply);
            prop_assert!(!failure.reason.contains(['\r', '\n']), "{:?}", failure.reason);
            prop_assert!(failure.reason.len() <= MAX_REASON_BYTES);
            let failure = failure.with_server(&text);
            prop_assert!(!failure.reason.contains(['\r', '\n']), "{:?}", failure.reason);
            prop_assert!(failure.reason.len() <= MAX_REASON_BYTES);
        }
    }

    #[test]
    fn fuzz_tracking_token(
        token in prop_oneof!["[A-Za-z0-9_-]{0,120}", any::<String>()],
        id in any::<u128>(),
        url in "https?://[a-z.]{1,20}/[ -~]{0,40}",
        flip in any::<(usize, u8)>(),
        cut in any::<usize>(),
    ) {
        let key = b"the real key, known only to the worker";
        // Arbitrary strings: never a panic, never a token without the key.
        prop_assert!(verify_click(&token, key).is_err());
        prop_assert!(verify_open(&token, key).is_err());

        let id = Uuid::from_u128(id);
        for (token, is_click) in [(sign_click(id, &url, key), true), (sign_open(id, key), false)] {
            // Round trip with the key; nothing with another key or of the other kind.
            if is_click {
                prop_assert_eq!(verify_click(&token, key), Ok((id, url.clone())));
                prop_assert!(verify_open(&token, key).is_err());
                prop_assert!(verify_click(&token, b"another key").is_err());
            } else {
                prop_assert_eq!(verify_open(&token, key), Ok(id));
                prop_assert!(verify_click(&token, key).is_err());
                prop_assert!(verify_open(&token, b"").is_err());
            }
            // Any altered byte or truncation is refused.
            let mut altered = token.clone().into_bytes();
            let at = flip.0 % altered.len();
            let replacement = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
                [usize::from(flip.1) % 64];
            if altered[at] != replacement {
                altered[at] = replacement;
                let altered = String::from_utf8(altered).unwrap();
                // The last character of unpadded base64 may carry unused bits; changing
                // only those would decode to the same bytes, which is not an alteration.
                if decoded(&altered) != decoded(&token) {
                    prop_assert!(verify_click(&altered, key).is_err());
                    prop_assert!(verify_open(&altered, key).is_err());
                }
            }
            let truncated = &token[..cut % token.len()];
            prop_assert!(verify_click(truncated, key).is_err());
            prop_assert!(verify_open(truncated, key).is_err());
        }
    }

    #[test]
    fn fuzz_message_headers(
        subject in header_text(),
        to_name in proptest::option::of(header_text()),
        from_name in proptest::option::of(header_text()),
        to in address(),
        from in address(),
        cc in proptest::option::of(prop::collection::vec(address(), 0..3)),
        reply_to in proptest::option::of(address()),
        unsubscribe in proptest::option::of(header_text()),
    ) {
        let email = claimed(&from, from_name, &to, to_name, cc, reply_to);
        let content = Content { subject: &subject, html: "<p>hello</p>", text: None };
        let unsubscribe = unsubscribe.map(|url| ListUnsubscribe { url });
        let Ok(msg) = message::build(&email, &content, BodyFormat::Multipart, unsubscribe.as_ref(), false, None, None)
        else {
            return Ok(());
        };
        let raw = String::from_utf8_lossy(&msg.formatted()).into_owned();
        let head = raw.split("\r\n\r\n").next().unwrap_or_default();
        for line in head.split("\r\n") {
            if line.starts_with([' ', '\t']) {
                continue; // a folded continuation of the previous header
            }
            let name = line.split(':').next().unwrap_or_default();
            prop_assert!(HEADERS.contains(&name), "unexpected header line {line:?} in\n{raw}");
            prop_assert!(!line.contains(['\r', '\n']));
        }
        prop_assert!(!head.contains("\nX-Injected"), "{}", raw);
        for name in HEADERS {
            let count = head
                .split("\r\n")
                .filter(|l| l.split(':').next() == Some(name))
                .count();
            prop_assert!(count <= 1, "{name} appears {count} times in\n{raw}");
        }
        // The recipients are exactly the row's: a display name never adds an address.
        let parsed = mail_parser::MessageParser::default().parse(raw.as_bytes()).unwrap();
        let to_list: Vec<_> = parsed
            .to()
            .map(|a| a.iter().filter_map(|a| a.address()).map(str::to_string).collect())
            .unwrap_or_default();
        prop_assert_eq!(to_list, vec![to.trim().to_string()], "{}", raw);
    }
}

const HEADERS: [&str; 12] = [
    "From",
    "To",
    "Cc",
    "Reply-To",
    "Subject",
    "Message-ID",
    "Date",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
];

fn decoded(token: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()
}

/// Header-ish text: plain, with injection attempts, quotes, encoded words, any Unicode.
fn header_text() -> impl Strategy<Value = String> {
    let part = prop_oneof![
        "[A-Za-z0-9 ]{0,20}",
        Just("\r\nX-Injected: yes".to_string()),
        Just("\nBcc: evil@attacker.example".to_string()),
        Just("\r".to_string()),
        Just("\"".to_string()),
        Just("<evil@attacker.example>, ".to_string()),
        Just("=?utf-8?q?=0D=0AX-Injected:_yes?=".to_string()),
        Just("\u{0}\u{b}\u{c}\u{85}\u{2028}".to_string()),
        Just("é😀".repeat(30)),
        "[ -~]{0,80}",
        any::<String>(),
    ];
    prop::collection::vec(part, 1..6).prop_map(|p| p.concat())
}

fn address() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z0-9._+-]{1,12}@[a-z0-9-]{1,12}\\.(com|org|example)",
        1 => "[a-z]{1,8}@[a-z]{1,8}\\.com(\r\nX-Injected: yes|\n|,evil@x.com| <e@x.com>)",
        1 => any::<String>(),
    ]
}

fn claimed(
    from: &str,
    from_name: Option<String>,
    to: &str,
    to_name: Option<String>,
    cc: Option<Vec<String>>,
    reply_to: Option<String>,
) -> ClaimedEmail {
    ClaimedEmail {
        email_id: Uuid::from_u128(7),
        template_id: None,
        from_email: from.to_string(),
        from_name,
        to_email: to.to_string(),
        to_name,
        cc_emails: cc,
        bcc_emails: None,
        reply_to_email: reply_to,
        subject: String::new(),
        html_content: String::new(),
        text_content: None,
        template_data: None,
        email_type: EmailType::Transactional,
        priority: EmailPriority::Normal,
        max_retries: None,
        current_retries: None,
        claimed_at: chrono::NaiveDateTime::default(),
        metadata: None,
        campaign_id: None,
        user_id: None,
        created_at: None,
        tags: None,
        undecodable: None,
        claim_sent_at: None,
        recipient: RecipientPrefs::default(),
    }
}
