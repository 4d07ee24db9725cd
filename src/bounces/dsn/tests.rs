//! Reports shaped like what Postfix, Exim, qmail, Exchange Online, Gmail and Yahoo send,
//! written for these tests (addresses, hosts and ids are made up), including mis-formed
//! ones, kept in `tests/data/bounces/` (the ingest's integration tests use them too).
//! `ORIGINAL_ID` is the email they are about.

use super::*;

/// The email every sample is about; its Message-ID is `<ORIGINAL_ID@adoptdontshop.com>`.
const ORIGINAL_ID: &str = "0b7f1c2e-4d5a-4f3b-9c8d-1e2f3a4b5c6d";

/// A sample of `tests/data/bounces/` (read at run time: the samples are test data, not part
/// of the build):
/// - `postfix_hard`: Postfix: a hard bounce after the relay accepted the mail (its own
///   remote said 5.1.1), the original returned whole.
/// - `postfix_delayed`: Postfix: a warning that delivery is delayed (headers only returned).
/// - `postfix_full_no_original_recipient`: Postfix, mis-formed by a filter on the way: no
///   Original-Recipient, no VERP address in the headers (only the returned Message-ID names
///   the email), mailbox full.
/// - `postfix_relayed`: Postfix: a success notification (NOTIFY=SUCCESS), relayed to a
///   server without DSN.
/// - `exim_dsn_policy`: Exim with DSN: a policy refusal that is not the recipient's fault.
/// - `gmail_over_quota`: Gmail: the recipient's storage is full (a soft bounce).
/// - `appliance_no_action`: a small appliance's DSN: no blank line between the message and
///   recipient fields, no Action, no report-type, CRLF line ends.
/// - `exim_text`: Exim's classic text bounce (no DSN part): the copy of the message
///   follows.
/// - `exchange_ndr`: Exchange Online's NDR: an HTML human part, lower-case field names,
///   `RFC822;`, 5.1.10.
/// - `gmail_hard`: Gmail: a hard bounce whose diagnostic is folded over several `550-5.1.1`
///   lines.
/// - `yahoo_text`: Yahoo's text bounce: `554:` and no enhanced code.
/// - `yahoo_arf`: Yahoo's feedback loop: an ARF abuse report, the original attached.
/// - `out_of_office`: Outlook's out-of-office reply, which happens to quote a status-like
///   number.
/// - `spam`: Spam that reached the bounce address.
/// - `qmail_text`: qmail's text bounce.
fn sample(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/bounces")
        .join(format!("{name}.eml"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn delivery(report: &Report) -> &[RecipientStatus] {
    match &report.kind {
        ReportKind::Delivery { recipients, .. } => recipients,
        other => panic!("not a delivery report: {other:?}"),
    }
}

fn original_id() -> Option<String> {
    Some(format!("{ORIGINAL_ID}@adoptdontshop.com"))
}

fn verp() -> String {
    format!("bounces+{ORIGINAL_ID}@bounces.example.org")
}

#[test]
fn postfix_hard_bounce() {
    let r = parse(&sample("postfix_hard"));
    let rs = delivery(&r);
    assert_eq!(rs.len(), 1);
    let s = &rs[0];
    assert_eq!(s.action, Action::Failed);
    assert_eq!(s.status.map(|s| s.to_string()).as_deref(), Some("5.1.1"));
    assert_eq!(
        s.original_recipient.as_deref(),
        Some("maya.okafor@example.net")
    );
    assert_eq!(
        s.final_recipient.as_deref(),
        Some("maya.okafor@example.net")
    );
    assert_eq!(s.verdict(), Verdict::HardBounce);
    assert_eq!(
        s.reply().to_string(),
        "550 5.1.1 <maya.okafor@example.net>: Recipient address rejected: User unknown in virtual mailbox table"
    );
    assert_eq!(r.addressed_to, [verp()]);
    assert_eq!(r.original_senders, [verp()]);
    assert_eq!(r.original_message_id, original_id());
    assert_eq!(r.queue_id.as_deref(), Some("4XyZ1k2Lm3z9sT"));
}

#[test]
fn postfix_delay_warning_is_delayed() {
    let r = parse(&sample("postfix_delayed"));
    let s = &delivery(&r)[0];
    assert_eq!(s.action, Action::Delayed);
    assert_eq!(s.verdict(), Verdict::Delayed);
    assert_eq!(
        r.original_message_id,
        original_id(),
        "from text/rfc822-headers"
    );
    assert!(s.diagnostic.as_deref().unwrap().contains("Connection"));
}

#[test]
fn a_full_mailbox_without_original_recipient_is_soft() {
    let r = parse(&sample("postfix_full_no_original_recipient"));
    let s = &delivery(&r)[0];
    assert_eq!(s.original_recipient, None);
    assert_eq!(
        s.recipient(),
        Some("maya.okafor@example.net"),
        "the final one"
    );
    assert_eq!(s.verdict(), Verdict::SoftBounce);
    assert_eq!(r.addressed_to, ["postmaster@example.org"], "no VERP here");
    assert_eq!(r.original_message_id, original_id());
    assert_eq!(s.reply().code, 552);
}

#[test]
fn a_relayed_success_report_is_delivered() {
    let r = parse(&sample("postfix_relayed"));
    let s = &delivery(&r)[0];
    assert_eq!(s.action, Action::Relayed);
    assert_eq!(s.verdict(), Verdict::Delivered);
    assert_eq!(r.original_message_id, None);
}

#[test]
fn exim_text_bounce_is_read_from_its_status_line() {
    let r = parse(&sample("exim_text"));
    let ReportKind::Delivery {
        recipients,
        from_text,
    } = &r.kind
    else {
        panic!("{:?}", r.kind);
    };
    assert!(from_text);
    let s = &recipients[0];
    assert_eq!(s.final_recipient.as_deref(), Some("jordan@example.com"));
    assert_eq!(s.verdict(), Verdict::HardBounce);
    assert_eq!(s.reply().code, 550);
    assert_eq!(
        r.original_message_id,
        original_id(),
        "from the copy of the headers"
    );
    assert_eq!(r.addressed_to, [verp()]);
}

#[test]
fn exim_policy_refusal_is_a_failure_not_a_bounce() {
    let r = parse(&sample("exim_dsn_policy"));
    let s = &delivery(&r)[0];
    assert_eq!(s.final_recipient.as_deref(), Some("jordan@example.com"));
    assert_eq!(
        s.verdict(),
        Verdict::Failed,
        "5.7.1 is not the recipient's fault"
    );
    assert_eq!(r.original_message_id, original_id());
}

#[test]
fn exchange_ndr_with_lower_case_fields_is_a_hard_bounce() {
    let r = parse(&sample("exchange_ndr"));
    let s = &delivery(&r)[0];
    assert_eq!(s.final_recipient.as_deref(), Some("sam@contoso.com"));
    assert_eq!(s.status.map(|s| s.to_string()).as_deref(), Some("5.1.10"));
    assert_eq!(s.verdict(), Verdict::HardBounce);
    assert_eq!(r.original_message_id, original_id());
    assert_eq!(r.original_senders, [verp()]);
    assert_eq!(r.addressed_to, [verp()]);
}

#[test]
fn gmail_folded_diagnostic_reads_as_one_reply() {
    let r = parse(&sample("gmail_hard"));
    let s = &delivery(&r)[0];
    assert_eq!(s.verdict(), Verdict::HardBounce);
    let reply = s.reply().to_string();
    assert!(
        reply.starts_with("550 5.1.1 The email account that you tried to reach does not exist."),
        "{reply}"
    );
    assert!(!reply.contains("550-"), "{reply}");
    assert_eq!(r.original_message_id, original_id());
    assert_eq!(r.addressed_to, [verp()], "Delivered-To and To, once");
}

#[test]
fn gmail_over_quota_is_soft() {
    let r = parse(&sample("gmail_over_quota"));
    assert_eq!(delivery(&r)[0].verdict(), Verdict::SoftBounce);
}

#[test]
fn yahoo_text_bounce_without_enhanced_code_is_hard_by_its_words() {
    let r = parse(&sample("yahoo_text"));
    let s = &delivery(&r)[0];
    assert_eq!(s.final_recipient.as_deref(), Some("lee.parker@yahoo.com"));
    assert_eq!(s.reply().code, 554);
    assert_eq!(s.verdict(), Verdict::HardBounce);
    assert_eq!(r.original_message_id, original_id());
}

#[test]
fn yahoo_feedback_loop_report_is_a_complaint() {
    let r = parse(&sample("yahoo_arf"));
    assert_eq!(
        r.kind,
        ReportKind::Complaint {
            feedback_type: "abuse".into(),
            recipient: Some("lee.parker@yahoo.com".into())
        }
    );
    assert_eq!(r.original_senders, [verp()], "Original-Mail-From");
    assert_eq!(r.original_message_id, original_id());
    assert_eq!(r.addressed_to, ["fbl@example.org"]);
}

#[test]
fn other_feedback_types_are_not_complaints() {
    let not_spam = String::from_utf8(sample("yahoo_arf"))
        .unwrap()
        .replace("Feedback-Type: abuse", "Feedback-Type: not-spam");
    assert!(matches!(
        parse(not_spam.as_bytes()).kind,
        ReportKind::NotAReport(why) if why.contains("not-spam")
    ));
}

#[test]
fn qmail_text_bounce() {
    let r = parse(&sample("qmail_text"));
    let s = &delivery(&r)[0];
    assert_eq!(s.final_recipient.as_deref(), Some("kai@example.net"));
    assert_eq!(s.verdict(), Verdict::HardBounce);
}

#[test]
fn an_appliance_dsn_without_action_or_blank_line_is_read_from_its_status() {
    let r = parse(&sample("appliance_no_action"));
    let s = &delivery(&r)[0];
    assert_eq!(s.action, Action::Failed);
    assert_eq!(s.final_recipient.as_deref(), Some("noor@example.com"));
    assert_eq!(s.verdict(), Verdict::HardBounce);
}

#[test]
fn auto_replies_and_spam_are_not_reports() {
    for name in ["out_of_office", "spam"] {
        assert!(
            matches!(parse(&sample(name)).kind, ReportKind::NotAReport(_)),
            "{name}"
        );
    }
    assert_eq!(
        parse(&sample("out_of_office")).kind,
        ReportKind::NotAReport("an auto-reply".into())
    );
}

#[test]
fn a_bounce_without_a_status_line_is_not_a_report() {
    let raw = "From: MAILER-DAEMON@x.example\nSubject: Undeliverable\n\nSomething went wrong.\n";
    assert!(matches!(
        parse(raw.as_bytes()).kind,
        ReportKind::NotAReport(why) if why.contains("status line")
    ));
}

#[test]
fn garbage_never_panics() {
    let inputs: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"\n\n\n".to_vec(),
        b"not a message at all".to_vec(),
        vec![0xff; 4096],
        b"Content-Type: multipart/report; boundary=\"x\"\n\n--x\nContent-Type: message/delivery-status\n\nAction: failed\nStatus: 9.9.9.9\nDiagnostic-Code: smtp; \xff\xfe 550-\n--x".to_vec(),
        b"From: MAILER-DAEMON@x\nSubject: failure notice\n\n\xc3\x28 550 5.\xe2\x82\n#5.1.1 smtp;550".to_vec(),
        format!("From: mailer-daemon@x.example\nSubject: Returned mail\n\n{}", "550 ".repeat(10_000)).into_bytes(),
    ];
    for raw in inputs {
        let _ = parse(&raw);
    }
    // Every cut of real samples.
    for name in [
        "postfix_hard",
        "gmail_hard",
        "yahoo_arf",
        "exim_text",
        "exchange_ndr",
    ] {
        let bytes = sample(name);
        for cut in (0..bytes.len()).step_by(37) {
            let _ = parse(&bytes[..cut]);
        }
    }
}
