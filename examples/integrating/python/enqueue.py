"""Queue email for adopt-worker from Python with psycopg 3 (docs/integrating.md).

    python3 -m venv .venv && .venv/bin/pip install -r requirements.txt
    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/adopt_worker .venv/bin/python enqueue.py

Inserts four rows into email_queue, as any service of the platform may:
  1. rendered content, sent as soon as a worker sees it;
  2. a template by name (the worker renders it when it sends it);
  3. rendered content scheduled one hour from now;
  4. Cc/Bcc and tags (text[]), metadata (a JSON object), urgent priority.
Prints one line per row, then the email ids as one JSON object on the last line.
"""

import json
import os
import sys
from datetime import datetime, timedelta, timezone

import psycopg
from psycopg.types.json import Jsonb

DATABASE_URL = os.environ.get(
    "DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/adopt_worker"
)
SENDER = "rescues@adoptdontshop.com"

# The columns the worker needs (the others have defaults). subject and html_content are
# NOT NULL: a template row gives them as empty strings.
INSERT = """
    INSERT INTO email_queue (from_email, from_name, to_email, to_name, subject, html_content,
                             text_content, type, priority, scheduled_for, template_id,
                             template_data, cc_emails, bcc_emails, tags, metadata)
    VALUES (%(from_email)s, %(from_name)s, %(to_email)s, %(to_name)s, %(subject)s,
            %(html_content)s, %(text_content)s, %(type)s, %(priority)s, %(scheduled_for)s,
            %(template_id)s, %(template_data)s, %(cc_emails)s, %(bcc_emails)s, %(tags)s,
            %(metadata)s)
    RETURNING email_id
"""


def email(**fields):
    """A row with every optional column at its default."""
    row = {
        "from_email": SENDER,
        "from_name": "Happy Paws Rescue",
        "to_name": None,
        "subject": "",
        "html_content": "",
        "text_content": None,
        "type": "transactional",
        "priority": "normal",
        "scheduled_for": None,  # NULL: due now
        "template_id": None,
        "template_data": None,
        "cc_emails": None,
        "bcc_emails": None,
        "tags": None,
        "metadata": Jsonb({}),
    }
    row.update(fields)
    return row


def main() -> int:
    with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
        # The session's TimeZone decides what DEFAULT CURRENT_TIMESTAMP writes into
        # created_at and how an aware datetime is stored in a timestamp column: make it UTC,
        # whatever the server, the role, PGTZ or this machine say. (Outside a transaction,
        # so that no rollback undoes it.)
        conn.execute("SET TimeZone = 'UTC'")
        # A template is named by its id; look it up by name. No row: not synced, or deleted.
        found = conn.execute(
            "SELECT template_id FROM email_templates"
            " WHERE name = %s AND deleted_at IS NULL AND status = 'active'",
            ["welcome"],
        ).fetchone()
        if found is None:
            print("no active template 'welcome': run `adopt-worker templates sync`",
                  file=sys.stderr)
            return 1
        welcome_id = found[0]

        # Aware and in UTC. With the session in UTC it is stored as it is; a naive
        # datetime.now() would be this machine's local time.
        in_one_hour = datetime.now(timezone.utc) + timedelta(hours=1)

        rows = {
            "rendered": email(
                to_email="maya@example.com",
                to_name="Maya Okafor",
                subject="We've received your application for Biscuit",
                html_content="<p>Hi Maya, Happy Paws Rescue has your application for"
                " <b>Biscuit</b>.</p>",
                text_content="Hi Maya, Happy Paws Rescue has your application for Biscuit.",
            ),
            "template": email(
                to_email="sam@example.com",
                to_name="Sam Lee",
                template_id=welcome_id,
                template_data=Jsonb({"user": {"first_name": "Sam"}}),
            ),
            "scheduled": email(
                to_email="maya@example.com",
                subject="Reminder: meet Biscuit tomorrow",
                html_content="<p>Your visit to Happy Paws Rescue is tomorrow at 10:00.</p>",
                type="notification",
                scheduled_for=in_one_hour,
            ),
            "lists": email(
                to_email="maya@example.com",
                subject="Your adoption of Biscuit is confirmed",
                html_content="<p>Congratulations! Biscuit is going home with you.</p>",
                priority="urgent",
                cc_emails=["partner@example.com"],
                bcc_emails=["records@adoptdontshop.com"],
                tags=["adoption", "python-example"],
                metadata=Jsonb({"source": "python-example", "locale": "en-US"}),
            ),
        }
        ids = {}
        with conn.transaction():
            for label, row in rows.items():
                ids[label] = str(conn.execute(INSERT, row).fetchone()[0])

        # What the worker has done so far. Times are UTC without a zone: say so when
        # turning them into aware datetimes.
        for label, email_id in ids.items():
            status, created_at, scheduled_for = conn.execute(
                "SELECT status, created_at, scheduled_for FROM email_queue"
                " WHERE email_id = %s",
                [email_id],
            ).fetchone()
            created_at = created_at.replace(tzinfo=timezone.utc)
            due = "now" if scheduled_for is None else (
                scheduled_for.replace(tzinfo=timezone.utc).isoformat())
            print(f"{label}: {email_id} {status}, created {created_at.isoformat()},"
                  f" due {due}")
    print(json.dumps(ids))
    return 0


if __name__ == "__main__":
    sys.exit(main())
