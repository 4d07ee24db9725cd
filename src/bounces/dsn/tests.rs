//! Reports shaped like what Postfix, Exim, qmail, Exchange Online, Gmail and Yahoo send,
//! written for these tests (addresses, hosts and ids are made up), including mis-formed
//! ones. `samples::ORIGINAL_ID` is the email they are about.

use super::*;

pub(crate) mod samples {
    /// The email every sample is about; its Message-ID is `<ORIGINAL_ID@adoptdontshop.com>`.
    pub const ORIGINAL_ID: &str = "0b7f1c2e-4d5a-4f3b-9c8d-1e2f3a4b5c6d";

    /// Postfix: a hard bounce after the relay accepted the mail (its own remote said 5.1.1),
    /// the original returned whole.
    pub const POSTFIX_HARD: &str = "\
Return-Path: <>
Delivered-To: bounces+0b7f1c2e-4d5a-4f3b-9c8d-1e2f3a4b5c6d@bounces.example.org
Received: by relay.example.org (Postfix) id 4XyZ1k2Lm3z9sT; Tue,  4 Mar 2025 10:15:02 +0000 (UTC)
Date: Tue,  4 Mar 2025 10:15:02 +0000 (UTC)
From: MAILER-DAEMON@relay.example.org (Mail Delivery System)
Subject: Undelivered Mail Returned to Sender
To: bounces+0b7f1c2e-4d5a-4f3b-9c8d-1e2f3a4b5c6d@bounces.example.org
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
\tboundary=\"4XyZ1k2Lm3z9sT.1741083302/relay.example.org\"
Content-Transfer-Encoding: 8bit
Message-Id: <20250304101502.4XyZ1k2Lm3z9sT@relay.example.org>

This is a MIME-encapsulated message.

--4XyZ1k2Lm3z9sT.1741083302/relay.example.org
Content-Description: Notification
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

This is the mail system at host relay.example.org.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients. It's attached below.

                   The mail system

<maya.okafor@example.net>: host mx1.example.net[192.0.2.25] said: 550 5.1.1
    <maya.okafor@example.net>: Recipient address rejected: User unknown in
    virtual mailbox table (in reply to RCPT TO command)

--4XyZ1k2Lm3z9sT.1741083302/relay.example.org
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; relay.example.org
X-Postfix-Queue-ID: 4XyZ1k2Lm3z9sT
X-Postfix-Sender: rfc822; bounces+0b7f1c2e-4d5a-4f3b-9c8d-1e2f3a4b5c6d@bounces.example.org
Arrival-Date: Tue,  4 Mar 2025 10:15:01 +0000 (UTC)

Final-Recipient: rfc822; maya.okafor@example.net
Original-Recipient: rfc822;maya.okafor@example.net
Action: failed
Status: 5.1.1
Remote-MTA: dns; mx1.example.net
Diagnostic-Code: smtp; 550 5.1.1 <maya.okafor@example.net>: Recipient address
    rejected: User unknown in virtual mailbox table

--4XyZ1k2Lm3z9sT.1741083302/relay.example.org
Content-Description: Undelivered Message
Content-Type: message/rfc822
Content-Transfer-Encoding: 8bit

Return-Path: <bounces+0b7f1c2e-4d5a-4f3b-9c8d-1e2f3a4b5c6d@bounces.example.org>
Received: from worker.example.org (worker.example.org [192.0.2.5])
\tby relay.example.org (Postfix) with ESMTP id 4XyZ1k2Lm3z9sT
\tfor <maya.okafor@example.net>; Tue,  4 Mar 2025 10:15:01 +0000 (UTC)
From: Happy Paws Rescue <rescues@adoptdontshop.com>
To: Maya Okafor <maya.okafor@example.net>
Subject: Your application for Biscuit
Message-ID: <0b7f1c2e-4d5a-4f3b-9c8d-1e2f3a4b5c6d@adoptdontshop.com>
Date: Tue, 04 Mar 2025 10:15:00 +0000
MIME-Version: 1.0
Content-Type: text/plain; charset=us-ascii

Hello Maya, see https://adoptdontshop.com/applications/1

--4XyZ1k2Lm3z9sT.1741083302/relay.example.org--
";

    /// Postfix: a warning that delivery is delayed (headers only returned).
    pub const POSTFIX_DELAYED: &str = "\
From: MAILER-DAEMON@relay.example.org (Mail Delivery System)
Subject: Delayed Mail (still being retried)
To: bounces+0b7f1c2e-4d5a-4f3b-9c8d-1e2f3a4b5c6d@bounces.example.org
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary=\"B1\"

--B1
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

This is the mail system at host relay.example.org.

####################################################################
# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #
####################################################################

--B1
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; relay.example.org
X-Postfix-Queue-ID: 4XyZ1k2Lm3z9sT

Final-Recipient: rfc822; maya.okafor@example.net
Original-Recipient: rfc822;maya.okafor@example.net
Action: delayed
Status: 4.4.1
Diagnostic-Code: X-Postfix; connect to mx1.example.net[192.0.2.25]:25: Connection
    timed out
Will-Retry-Until: Sun, 9 Mar 2025 10:15:01 +0000 (UTC)

--B1
Content-Description: Undelivered Message Headers
Content-Type: text/rfc822-headers

From: Happy Paws Rescue <rescues@adoptdontshop.com>
To: Maya Okafor <maya.okafor@example.net>
Subject: Your application for Biscuit
Message-ID: <0b7f1c2e-4d5a-4f3b-9c8d-1e2f3a4b5c6d@adoptdontshop.com>

--B1--
";

    /// Postfix, mis-formed by a filter on the way: no Original-Recipient, no VERP address
    /// in the headers (only the returned Message-ID names the email), mailbox full.
    pub const POSTFIX_FULL_NO_ORIGINAL_RECIPIENT: &str = "\
From: MAILER-DAEMON@relay.example.org (Mail Delivery System)
Subject: Undelivered Mail Returned to Sender
To: postmaster@example.org
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary=\"B2\"

--B2
Content-Type: text/plain

The mail system

--B2
Content-Type: message/delivery-status

Reporting-MTA: dns; relay.example.org
X-Postfix-Queue-ID: 3Fq9Wd0Yz1z2Bx

Final-Recipient: rfc822; maya.okafor@example.net
Action: failed
Status: 5.2.2
Diagnostic-Code: smtp; 552 5.2.2 <maya.okafor@example.net>: Mailbox full

--B2
Content-Type: text/rfc822-headers

Message-ID: <0b7f1c2e-4d5a-4f3b-9c8d-1e2f3a4b5c6d@adoptdontshop.com>
Subject: Your application for Biscuit

--B2--
";

    /// Postfix: a success notification (NOTIFY=SUCCESS), relayed to a server without DSN.
    pub const POSTFIX_RELAYED: &str = "\
From: MAILER-DAEMON@relay.example.org (Mail Delivery System)
Subject: Successful Mail Delivery Report
To: bounces+0b7f1c2e-4d5a-4f3b-9c8d-1e2f3a4b5c6d@bounces.example.org
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary=\"B3\"

--B3
Content-Type: message/delivery-status

Reporting-MTA: dns; relay.example.org

Final-Recipient: rfc822; maya.okafor@example.net
Original-Recipient: rfc822;maya.okafor@example.net
Action: relayed
Status: 2.0.0
Remote-MTA: dns; mx1.example.net
Diagnostic-Code: smtp; 250 2.0.0 Ok: queued as 9AB12C

--B3--
";

    /// Exim's classic text bounce (no DSN part): the copy of the message follows.
    pub const EXIM_TEXT: &str = "\
Return-path: <>
Envelope-to: bounces+0b7f1c2e-4d5a-4f3b-9c8d-1e2f3a4b5c6d@bounces.example.org
From: Mail Delivery System <Mailer-Daemon@mail.example.com>
To: bounces+0b7f1c2e-4d5a-4f3b-9c8d-1e2f3a4b5c6d@bounces.example.org
Subject: Mail delivery failed: returning message to sender
Message-Id: <E1tpQ2x-0004aB-7K@mail.example.com>
Date: Tue, 04 Mar 2025 10:20:11 +0000

This message was created automatically by mail delivery software.

A message that you sent could not be delivered to one or more of its
recipients. This is a permanent error. The following address(es) failed:

  jordan@example.com
    host mx.example.com [198.51.100.7]
    SMTP error from remote mail server after RCPT TO:<jordan@example.com>:
    550 5.1.1 <jordan@example.com>: Recipient address rejected: User unknown

------ This is a copy of the message, including all the headers. ------

Return-path: <bounces+0b7f1c2e-4d5a-4f3b-9c8d-1e2f3a4b5c6d@bounces.example.org>
From: Happy Paws Rescue <rescues@adoptdontshop.com>
To: jordan@example.com
Subject: Your application for Biscuit
Message-ID: <0b7f1c2e-4d5a-4f3b-9c8d-1e2f3a4b5c6d@adoptdontshop.com>

Hello Jordan, ask us about our 550 adoptable pets.
";

    /// Exim with DSN: multipart/report, a policy refusal that is not the recipient's fault.
    pub const EXIM_DSN_POLICY: &str = "\
From: Mail Delivery System <Mailer-Daemon@mail.example.com>
To: bounces+0b7f1c2e-4d5a-4f3b-9c8d-1e2f3a4b5c6d@bounces.example.org
Subject: Mail delivery failed: returning message to sender
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary=1741083611-eximdsn-1804289383

--1741083611-eximdsn-1804289383
Content-type: text/plain; charset=us-ascii

This message was created automatically by mail delivery software.

--1741083611-eximdsn-1804289383
Content-type: message/delivery-status

Reporting-MTA: dns; mail.example.com

Action: failed
Final-Recipient: rfc822;jordan@example.com
Status: 5.7.1
Remote-MTA: dns; mx.example.com
Diagnostic-Code: smtp; 550 5.7.1 Message rejected as spam by Content Filtering

--1741083611-eximdsn-1804289383
Content-type: message/rfc822

From: Happy Paws Rescue <rescues@adoptdontshop.com>
Message-ID: <0b7f1c2e-4d5a-4f3b-9c8d-1e2f3a4b5c6d@adoptdontshop.com>
Subject: Your application for Biscuit

Hello

--1741083611-eximdsn-1804289383--
";

    /// Exchange Online's NDR: an HTML human part, lower-case field names, `RFC822;`, 5.1.10.
    pub const EXCHANGE_NDR: &str = "\
From: postmaster@contoso.onmicrosoft.com
To: <bounces+0b7f1c2e-4d5a-4f3b-9c8d-1e2f3a4b5c6d@bounces.example.org>
Subject: Undeliverable: Your application for Biscuit
Content-Type: multipart/report; report-type=delivery-status;
\tboundary=\"_000_5e0b6a72c1d04f7b9b1b2a5f3d4e8c11AM0PR01MB1234eurprd_\"
MIME-Version: 1.0
X-MS-Exchange-Message-Is-Ndr:

--_000_5e0b6a72c1d04f7b9b1b2a5f3d4e8c11AM0PR01MB1234eurprd_
Content-Type: multipart/alternative;
\tboundary=\"_002_5e0b6a72c1d04f7b9b1b2a5f3d4e8c11AM0PR01MB1234eurprd_\"

--_002_5e0b6a72c1d04f7b9b1b2a5f3d4e8c11AM0PR01MB1234eurprd_
Content-Type: text/plain; charset=\"us-ascii\"

Your message to sam@contoso.com couldn't be delivered.
sam wasn't found at contoso.com.

--_002_5e0b6a72c1d04f7b9b1b2a5f3d4e8c11AM0PR01MB1234eurprd_
Content-Type: text/html; charset=\"us-ascii\"

<html><body><p>Your message to sam@contoso.com couldn't be delivered.</p></body></html>

--_002_5e0b6a72c1d04f7b9b1b2a5f3d4e8c11AM0PR01MB1234eurprd_--

--_000_5e0b6a72c1d04f7b9b1b2a5f3d4e8c11AM0PR01MB1234eurprd_
Content-Type: message/delivery-status

Reporting-MTA: dns;AM0PR01MB1234.eurprd01.prod.exchangelabs.com
Received-From-MTA: dns;relay.example.org
Arrival-Date: Tue, 4 Mar 2025 10:25:40 +0000

Final-recipient: RFC822; sam@contoso.com
Action: failed
Status: 5.1.10
Diagnostic-code: smtp;550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup
X-Display-Name: Sam Rivera

--_000_5e0b6a72c1d04f7b9b1b2a5f3d4e8c11AM0PR01MB1234eurprd_
Content-Type: text/rfc822-headers

Return-Path: <bounces+0b7f1c2e-4d5a-4f3b-9c8d-1e2f3a4b5c6d@bounces.example.org>
From: Happy Paws Rescue <rescues@adoptdontshop.com>
To: Sam Rivera <sam@contoso.com>
Subject: Your application for Biscuit
Message-ID: <0b7f1c2e-4d5a-4f3b-9c8d-1e2f3a4b5c6d@adoptdontshop.com>

--_000_5e0b6a72c1d04f7b9b1b2a5f3d4e8c11AM0PR01MB1234eurprd_--
";

    /// Gmail: a hard bounce whose diagnostic is folded over several `550-5.1.1` lines.
    pub const GMAIL_HARD: &str = "\
Delivered-To: bounces+0b7f1c2e-4d5a-4f3b-9c8d-1e2f3a4b5c6d@bounces.example.org
From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>
To: bounces+0b7f1c2e-4d5a-4f3b-9c8d-1e2f3a4b5c6d@bounces.example.org
Auto-Submitted: auto-replied
Subject: Delivery Status Notification (Failure)
MIME-Version: 1.0
Content-Type: multipart/report; boundary=\"000000000000a1b2c3\"; report-type=delivery-status

--000000000000a1b2c3
Content-Type: multipart/related; boundary=\"000000000000a1b2c4\"

--000000000000a1b2c4
Content-Type: multipart/alternative; boundary=\"000000000000a1b2c5\"

--000000000000a1b2c5
Content-Type: text/plain; charset=\"UTF-8\"


** Address not found **

Your message wasn't delivered to ana.silva@gmail.com because the address couldn't be found, or is unable to receive mail.

--000000000000a1b2c5--

--000000000000a1b2c4--

--000000000000a1b2c3
Content-Type: message/delivery-status

Reporting-MTA: dns; googlemail.com
Received-From-MTA: dns; relay.example.org
Arrival-Date: Tue, 04 Mar 2025 02:31:07 -0800 (PST)
X-Original-Message-ID: <0b7f1c2e-4d5a-4f3b-9c8d-1e2f3a4b5c6d@adoptdontshop.com>

Final-Recipient: rfc822; ana.silva@gmail.com
Action: failed
Status: 5.1.1
Remote-MTA: dns; gmail-smtp-in.l.google.com. (2a00:1450:400c:c0b::1a, the server
 for the domain gmail.com.)
Diagnostic-Code: smtp; 550-5.1.1 The email account that you tried to reach does
 not exist. Please try
 550-5.1.1 double-checking the recipient's email address for typos or
 550-5.1.1 unnecessary spaces. For more information, go to
 550 5.1.1  https://support.google.com/mail/?p=NoSuchUser a1si123456wrb.7 - gsmtp
Last-Attempt-Date: Tue, 04 Mar 2025 02:31:08 -0800 (PST)

--000000000000a1b2c3
Content-Type: message/rfc822

Return-Path: <bounces+0b7f1c2e-4d5a-4f3b-9c8d-1e2f3a4b5c6d@bounces.example.org>
From: Happy Paws Rescue <rescues@adoptdontshop.com>
To: ana.silva@gmail.com
Subject: Your application for Biscuit
Message-ID: <0b7f1c2e-4d5a-4f3b-9c8d-1e2f3a4b5c6d@adoptdontshop.com>

Hello Ana

--000000000000a1b2c3--
";

    /// Gmail: the recipient's storage is full (a soft bounce).
    pub const GMAIL_OVER_QUOTA: &str = "\
From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>
To: bounces+0b7f1c2e-4d5a-4f3b-9c8d-1e2f3a4b5c6d@bounces.example.org
Subject: Delivery Status Notification (Failure)
MIME-Version: 1.0
Content-Type: multipart/report; boundary=\"g2\"; report-type=delivery-status

--g2
Content-Type: message/delivery-status

Reporting-MTA: dns; googlemail.com

Final-Recipient: rfc822; ana.silva@gmail.com
Action: failed
Status: 5.2.2
Diagnostic-Code: smtp; 552-5.2.2 The recipient's inbox is out of storage space.
 552 5.2.2 Please direct the recipient to https://support.google.com/mail/?p=OverQuotaPerm - gsmtp

--g2--
";

    /// Yahoo's text bounce: `554:` and no enhanced code.
    pub const YAHOO_TEXT: &str = "\
From: MAILER-DAEMON@yahoo.com
To: bounces+0b7f1c2e-4d5a-4f3b-9c8d-1e2f3a4b5c6d@bounces.example.org
Subject: Failure Notice

Sorry, we were unable to deliver your message to the following address.

<lee.parker@yahoo.com>:
554: delivery error: dd This user doesn't have a yahoo.com account (lee.parker@yahoo.com) [0] - mta1234.mail.gq1.yahoo.com

--- Below this line is a copy of the message.

From: Happy Paws Rescue <rescues@adoptdontshop.com>
Message-ID: <0b7f1c2e-4d5a-4f3b-9c8d-1e2f3a4b5c6d@adoptdontshop.com>
Subject: Your application for Biscuit
";

    /// Yahoo's feedback loop: an ARF abuse report, the original attached.
    pub const YAHOO_ARF: &str = "\
From: feedback@arf.mail.yahoo.com
To: fbl@example.org
Subject: FW: Your application for Biscuit
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary=\"----=_Part_1\"

------=_Part_1
Content-Type: text/plain; charset=us-ascii

This is an email abuse report for an email message received from IP 192.0.2.5 on Tue, 04 Mar 2025 10:15:02 +0000.

------=_Part_1
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: Yahoo!-Mail-Feedback/2.0
Version: 1
Original-Mail-From: <bounces+0b7f1c2e-4d5a-4f3b-9c8d-1e2f3a4b5c6d@bounces.example.org>
Original-Rcpt-To: lee.parker@yahoo.com
Arrival-Date: Tue, 04 Mar 2025 10:15:02 +0000
Reported-Domain: adoptdontshop.com
Authentication-Results: mta1234.mail.gq1.yahoo.com  dkim=pass header.d=adoptdontshop.com

------=_Part_1
Content-Type: message/rfc822

From: Happy Paws Rescue <rescues@adoptdontshop.com>
To: redacted@yahoo.com
Subject: Your application for Biscuit
Message-ID: <0b7f1c2e-4d5a-4f3b-9c8d-1e2f3a4b5c6d@adoptdontshop.com>

Hello

------=_Part_1--
";

    /// Outlook's out-of-office reply, which happens to quote a status-like number.
    pub const OUT_OF_OFFICE: &str = "\
From: Sam Rivera <sam@contoso.com>
To: bounces+0b7f1c2e-4d5a-4f3b-9c8d-1e2f3a4b5c6d@bounces.example.org
Subject: Automatic reply: Your application for Biscuit
Auto-Submitted: auto-replied
X-Auto-Response-Suppress: All
In-Reply-To: <0b7f1c2e-4d5a-4f3b-9c8d-1e2f3a4b5c6d@adoptdontshop.com>

I am out of the office until 10 March with limited access to email.
Please call 550 5.1.1 for nothing in particular.
";

    /// Spam that reached the bounce address.
    pub const SPAM: &str = "\
From: \"Prize Center\" <win@lottery.example>
To: bounces+0b7f1c2e-4d5a-4f3b-9c8d-1e2f3a4b5c6d@bounces.example.org
Subject: You have WON 5.000.000!!!

Claim your prize at 550 Main St now.
";

    /// qmail's text bounce.
    pub const QMAIL_TEXT: &str = "\
From: MAILER-DAEMON@mx.example.net
To: bounces+0b7f1c2e-4d5a-4f3b-9c8d-1e2f3a4b5c6d@bounces.example.org
Subject: failure notice

Hi. This is the qmail-send program at mx.example.net.
I'm afraid I wasn't able to deliver your message to the following addresses.
This is a permanent error; I've given up. Sorry it didn't work out.

<kai@example.net>:
192.0.2.7 does not like recipient.
Remote host said: 550 5.1.1 <kai@example.net>... User unknown
Giving up on 192.0.2.7.
";

    /// A DSN from a small appliance: no blank line between the message and recipient
    /// fields, no Action, no report-type, CRLF line ends.
    pub const APPLIANCE_NO_ACTION: &str = "From: postmaster@gw.example.com\r
To: bounces+0b7f1c2e-4d5a-4f3b-9c8d-1e2f3a4b5c6d@bounces.example.org\r
Subject: Delivery failure\r
Content-Type: multipart/report; boundary=\"zz\"\r
\r
--zz\r
Content-Type: message/delivery-status\r
\r
Reporting-MTA: dns; gw.example.com\r
Final-Recipient: rfc822; noor@example.com\r
Status: 5.1.1\r
\r
--zz--\r
";
}

use samples::*;

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
    let r = parse(POSTFIX_HARD.as_bytes());
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
    let r = parse(POSTFIX_DELAYED.as_bytes());
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
    let r = parse(POSTFIX_FULL_NO_ORIGINAL_RECIPIENT.as_bytes());
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
    let r = parse(POSTFIX_RELAYED.as_bytes());
    let s = &delivery(&r)[0];
    assert_eq!(s.action, Action::Relayed);
    assert_eq!(s.verdict(), Verdict::Delivered);
    assert_eq!(r.original_message_id, None);
}

#[test]
fn exim_text_bounce_is_read_from_its_status_line() {
    let r = parse(EXIM_TEXT.as_bytes());
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
    let r = parse(EXIM_DSN_POLICY.as_bytes());
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
    let r = parse(EXCHANGE_NDR.as_bytes());
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
    let r = parse(GMAIL_HARD.as_bytes());
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
    let r = parse(GMAIL_OVER_QUOTA.as_bytes());
    assert_eq!(delivery(&r)[0].verdict(), Verdict::SoftBounce);
}

#[test]
fn yahoo_text_bounce_without_enhanced_code_is_hard_by_its_words() {
    let r = parse(YAHOO_TEXT.as_bytes());
    let s = &delivery(&r)[0];
    assert_eq!(s.final_recipient.as_deref(), Some("lee.parker@yahoo.com"));
    assert_eq!(s.reply().code, 554);
    assert_eq!(s.verdict(), Verdict::HardBounce);
    assert_eq!(r.original_message_id, original_id());
}

#[test]
fn yahoo_feedback_loop_report_is_a_complaint() {
    let r = parse(YAHOO_ARF.as_bytes());
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
    let not_spam = YAHOO_ARF.replace("Feedback-Type: abuse", "Feedback-Type: not-spam");
    assert!(matches!(
        parse(not_spam.as_bytes()).kind,
        ReportKind::NotAReport(why) if why.contains("not-spam")
    ));
}

#[test]
fn qmail_text_bounce() {
    let r = parse(QMAIL_TEXT.as_bytes());
    let s = &delivery(&r)[0];
    assert_eq!(s.final_recipient.as_deref(), Some("kai@example.net"));
    assert_eq!(s.verdict(), Verdict::HardBounce);
}

#[test]
fn an_appliance_dsn_without_action_or_blank_line_is_read_from_its_status() {
    let r = parse(APPLIANCE_NO_ACTION.as_bytes());
    let s = &delivery(&r)[0];
    assert_eq!(s.action, Action::Failed);
    assert_eq!(s.final_recipient.as_deref(), Some("noor@example.com"));
    assert_eq!(s.verdict(), Verdict::HardBounce);
}

#[test]
fn auto_replies_and_spam_are_not_reports() {
    for (name, raw) in [("out of office", OUT_OF_OFFICE), ("spam", SPAM)] {
        assert!(
            matches!(parse(raw.as_bytes()).kind, ReportKind::NotAReport(_)),
            "{name}"
        );
    }
    assert_eq!(
        parse(OUT_OF_OFFICE.as_bytes()).kind,
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
    for sample in [POSTFIX_HARD, GMAIL_HARD, YAHOO_ARF, EXIM_TEXT, EXCHANGE_NDR] {
        let bytes = sample.as_bytes();
        for cut in (0..bytes.len()).step_by(37) {
            let _ = parse(&bytes[..cut]);
        }
    }
}
