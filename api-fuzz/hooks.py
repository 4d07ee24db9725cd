"""Schemathesis hooks for scripts/api-fuzz: real webhook signatures, and the values of a
valid request that only the database knows.

1. `POST /v1/webhooks/events` and `/v1/webhooks/dsn` are authenticated by an HMAC-SHA256 of
"{X-Adopt-Timestamp}.{raw body}" (docs/bounces.md), which no static header can carry.
schemathesis.toml gives the `webhook_signature` scheme the placeholder value below; when a
request still carries it, the request is signed here, on the exact bytes about to be sent,
with the timestamp set to now. A request whose headers were generated as invalid on purpose,
or whose signature was removed or replaced (the ignored_auth check's probes), is sent as it
is, so the server must refuse it.

The provider webhooks are signed the way each provider signs them, with the keys the script
configured the server with: SendGrid's ECDSA signature of "{timestamp}{raw body}" (the
`sendgrid_signature` scheme's placeholder is replaced here, as above; api-fuzz/p256.py signs),
and a Mailgun body's `signature` object (timestamp now, a fresh token, the HMAC) when the case
is valid. Postmark's basic auth comes from schemathesis.toml. SES cannot be signed here (SNS
signs with Amazon's certificate): its cases are refused, 401 or 403, and must never be a 5xx.

2. A request generated as valid stays valid for what no schema can say: an enqueue's
`user_id` names the fuzzing admin (a user that exists) and its `to` is then that user's
address, its `from` is at the allowed sender domain, a template email names a template
that exists and gives its example data, a test send's `data` is its template's examples, and
a preview's `data` likewise, and a list's `cursor` is well-formed, as the server makes them. Requests generated as invalid are
left alone.
"""

import base64
import hashlib
import hmac
import json
import os
import sys
import time
import uuid

import requests
import schemathesis
from schemathesis.core.parameters import ParameterLocation

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import p256  # noqa: E402

PLACEHOLDER = "sign-me"
SECRET = os.environ["ADOPT_FUZZ_WEBHOOK_SECRET"].encode()
SENDGRID_KEY = p256.scalar(os.environ["ADOPT_FUZZ_SENDGRID_KEY"])
MAILGUN_KEY = os.environ["ADOPT_FUZZ_MAILGUN_KEY"].encode()
USER_ID = os.environ["ADOPT_FUZZ_USER_ID"]
USER_EMAIL = os.environ["ADOPT_FUZZ_USER_EMAIL"]
SENDER = "api-fuzz@adoptdontshop.com"
with open(os.environ["ADOPT_FUZZ_EXAMPLES"]) as f:
    EXAMPLES = json.load(f)  # template name -> its example data
NAMES = sorted(EXAMPLES)
# A cursor as the list returns it: base64url of {"k": created_at as PostgreSQL prints it, "id"}.
CURSOR = base64.urlsafe_b64encode(
    json.dumps({"k": "2026-01-01 00:00:00.000001", "id": "00000000-0000-4000-8000-000000000000"}).encode()
).rstrip(b"=").decode()


class _Sign(requests.auth.AuthBase):
    def __call__(self, request):
        if request.headers.get("X-Adopt-Signature") != PLACEHOLDER:
            return request
        timestamp = str(int(time.time()))
        request.headers["X-Adopt-Timestamp"] = timestamp
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode()
        mac = hmac.new(SECRET, timestamp.encode() + b"." + body, hashlib.sha256)
        request.headers["X-Adopt-Signature"] = "sha256=" + mac.hexdigest()
        return request


class _SignSendgrid(requests.auth.AuthBase):
    def __call__(self, request):
        if request.headers.get("X-Twilio-Email-Event-Webhook-Signature") != PLACEHOLDER:
            return request
        timestamp = str(int(time.time()))
        request.headers["X-Twilio-Email-Event-Webhook-Timestamp"] = timestamp
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode()
        request.headers["X-Twilio-Email-Event-Webhook-Signature"] = p256.sign(
            SENDGRID_KEY, timestamp.encode() + body
        )
        return request


def _sign_mailgun(body):
    """A valid Mailgun body gets a real signature: now, a fresh token, their HMAC."""
    if not isinstance(body, dict) or not isinstance(body.get("signature"), dict):
        return
    timestamp = str(int(time.time()))
    token = uuid.uuid4().hex
    mac = hmac.new(MAILGUN_KEY, (timestamp + token).encode(), hashlib.sha256)
    body["signature"].update({"timestamp": timestamp, "token": token, "signature": mac.hexdigest()})


@schemathesis.serializer("text/plain")
def _text(ctx, value):
    """SNS posts its JSON as text/plain (POST /v1/webhooks/ses)."""
    if isinstance(value, (bytes, str)):
        return value if isinstance(value, bytes) else value.encode()
    return json.dumps(value).encode()


@schemathesis.serializer("message/rfc822")
def _rfc822(ctx, value):
    """The raw message of POST /v1/webhooks/dsn: generated text sent as its UTF-8 bytes."""
    return value if isinstance(value, bytes) else str(value).encode()


@schemathesis.hook
def before_call(context, case, kwargs):
    signers = {
        "/v1/webhooks/events": _Sign,
        "/v1/webhooks/dsn": _Sign,
        "/v1/webhooks/sendgrid": _SignSendgrid,
    }
    signer = signers.get(case.operation.path)
    if signer is None:
        return
    meta = case.meta
    if meta is not None and meta.is_negative_at(ParameterLocation.HEADER):
        return
    kwargs["auth"] = signer()


def _set_address(email, field, address):
    if isinstance(email.get(field), dict):
        email[field]["email"] = address
    else:
        email[field] = address


def _valid_item(email):
    if not isinstance(email, dict):
        return
    if email.get("user_id") is not None:
        # A user_id must be the recipient's own.
        email["user_id"] = USER_ID
        _set_address(email, "to", USER_EMAIL)
    if email.get("from") is not None:
        # The sender's domain must be on api.allowed_sender_domains (app.from_email's).
        _set_address(email, "from", SENDER)
    if isinstance(email.get("template"), str) and NAMES:
        # The same generated name always maps to the same template.
        name = NAMES[int(hashlib.sha256(email["template"].encode()).hexdigest(), 16) % len(NAMES)]
        email["template"] = name
        email["data"] = EXAMPLES[name]


@schemathesis.hook
def map_case(context, case):
    meta = case.meta
    op = (case.operation.method.upper(), case.operation.path)

    def valid(location):
        return meta is None or not meta.is_negative_at(location)

    if op == ("GET", "/v1/emails") and valid(ParameterLocation.QUERY):
        if isinstance(case.query, dict) and "cursor" in case.query:
            case.query["cursor"] = CURSOR
    elif op == ("POST", "/v1/emails") and valid(ParameterLocation.BODY):
        _valid_item(case.body)
    elif op == ("POST", "/v1/emails/batch") and valid(ParameterLocation.BODY):
        if isinstance(case.body, dict) and isinstance(case.body.get("emails"), list):
            for email in case.body["emails"]:
                _valid_item(email)
    elif op == ("POST", "/v1/webhooks/mailgun") and valid(ParameterLocation.BODY):
        _sign_mailgun(case.body)
    elif op in (("POST", "/v1/templates/{name}/test"), ("POST", "/v1/templates/{name}/preview")) and valid(
        ParameterLocation.BODY
    ):
        name = (case.path_parameters or {}).get("name")
        if isinstance(case.body, dict) and case.body.get("data") is not None and name in EXAMPLES:
            case.body["data"] = EXAMPLES[name]
    return case
