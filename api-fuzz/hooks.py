"""Schemathesis hooks for scripts/api-fuzz: real webhook signatures, and the values of a
valid request that only the database knows.

1. `POST /v1/webhooks/events` and `/v1/webhooks/dsn` are authenticated by an HMAC-SHA256 of
"{X-Adopt-Timestamp}.{raw body}" (README "Webhook"), which no static header can carry.
schemathesis.toml gives the `webhook_signature` scheme the placeholder value below; when a
request still carries it, the request is signed here, on the exact bytes about to be sent,
with the timestamp set to now. A request whose headers were generated as invalid on purpose,
or whose signature was removed or replaced (the ignored_auth check's probes), is sent as it
is, so the server must refuse it.

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
import time

import requests
import schemathesis
from schemathesis.core.parameters import ParameterLocation

PLACEHOLDER = "sign-me"
SECRET = os.environ["ADOPT_FUZZ_WEBHOOK_SECRET"].encode()
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


@schemathesis.serializer("message/rfc822")
def _rfc822(ctx, value):
    """The raw message of POST /v1/webhooks/dsn: generated text sent as its UTF-8 bytes."""
    return value if isinstance(value, bytes) else str(value).encode()


@schemathesis.hook
def before_call(context, case, kwargs):
    if case.operation.path not in ("/v1/webhooks/events", "/v1/webhooks/dsn"):
        return
    meta = case.meta
    if meta is not None and meta.is_negative_at(ParameterLocation.HEADER):
        return
    kwargs["auth"] = _Sign()


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
    elif op in (("POST", "/v1/templates/{name}/test"), ("POST", "/v1/templates/{name}/preview")) and valid(
        ParameterLocation.BODY
    ):
        name = (case.path_parameters or {}).get("name")
        if isinstance(case.body, dict) and case.body.get("data") is not None and name in EXAMPLES:
            case.body["data"] = EXAMPLES[name]
    return case
