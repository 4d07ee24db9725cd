// Queue email for adopt-worker from Node.js with node-postgres (docs/integrating.md).
//
//   npm ci
//   DATABASE_URL=postgresql://postgres@127.0.0.1:5432/adopt_worker node enqueue.mjs
//
// Inserts four rows into email_queue, as any service of the platform may:
//   1. rendered content, sent as soon as a worker sees it;
//   2. a template by name (the worker renders it when it sends it);
//   3. rendered content scheduled one hour from now;
//   4. Cc/Bcc and tags (text[]), metadata (a JSON object), urgent priority.
// Prints one line per row, then the email ids as one JSON object on the last line.

import pg from 'pg';

const DATABASE_URL =
  process.env.DATABASE_URL ?? 'postgresql://postgres@127.0.0.1:5432/adopt_worker';
const SENDER = 'rescues@adoptdontshop.com';

// email_queue times are UTC `timestamp without time zone`. node-postgres reads such a
// value as this machine's local time: read it as UTC instead (1114 = timestamp).
pg.types.setTypeParser(pg.types.builtins.TIMESTAMP, (text) =>
  new Date(`${text.replace(' ', 'T')}Z`),
);

// A Date parameter goes out as local time with its offset, and PostgreSQL ignores the
// offset when it stores into a `timestamp` column: cast through timestamptz and take it
// in UTC (right whatever this machine's TZ and the session's TimeZone are). subject and
// html_content are NOT NULL: a template row gives them as empty strings. JSON columns get
// JSON.stringify(...): node-postgres would send a JS array as a PostgreSQL array.
const INSERT = `
  INSERT INTO email_queue (from_email, from_name, to_email, to_name, subject, html_content,
                           text_content, type, priority, scheduled_for, template_id,
                           template_data, cc_emails, bcc_emails, tags, metadata)
  VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::timestamptz AT TIME ZONE 'UTC', $11,
          $12, $13, $14, $15, $16)
  RETURNING email_id`;

// A row with every optional column at its default.
function email(fields) {
  const row = {
    fromEmail: SENDER,
    fromName: 'Happy Paws Rescue',
    toName: null,
    subject: '',
    html: '',
    text: null,
    type: 'transactional',
    priority: 'normal',
    scheduledFor: null, // NULL: due now
    templateId: null,
    templateData: null,
    cc: null,
    bcc: null,
    tags: null,
    metadata: {},
    ...fields,
  };
  return [
    row.fromEmail, row.fromName, row.to, row.toName, row.subject, row.html, row.text,
    row.type, row.priority, row.scheduledFor, row.templateId,
    row.templateData === null ? null : JSON.stringify(row.templateData),
    row.cc, row.bcc, row.tags, JSON.stringify(row.metadata),
  ];
}

const client = new pg.Client({ connectionString: DATABASE_URL });
await client.connect();
try {
  // The session's TimeZone decides what DEFAULT CURRENT_TIMESTAMP writes into created_at:
  // make it UTC, whatever the server, the role or PGOPTIONS say.
  await client.query("SET TimeZone = 'UTC'");

  // A template is named by its id; look it up by name. No row: not synced, or deleted.
  const found = await client.query(
    `SELECT template_id FROM email_templates
     WHERE name = $1 AND deleted_at IS NULL AND status = 'active'`,
    ['welcome'],
  );
  if (found.rows.length === 0) {
    console.error("no active template 'welcome': run `adopt-worker templates sync`");
    process.exit(1);
  }
  const welcomeId = found.rows[0].template_id;

  const inOneHour = new Date(Date.now() + 60 * 60 * 1000);
  const rows = {
    rendered: email({
      to: 'maya@example.com',
      toName: 'Maya Okafor',
      subject: "We've received your application for Biscuit",
      html: '<p>Hi Maya, Happy Paws Rescue has your application for <b>Biscuit</b>.</p>',
      text: 'Hi Maya, Happy Paws Rescue has your application for Biscuit.',
    }),
    template: email({
      to: 'sam@example.com',
      toName: 'Sam Lee',
      templateId: welcomeId,
      templateData: { user: { first_name: 'Sam' } },
    }),
    scheduled: email({
      to: 'maya@example.com',
      subject: 'Reminder: meet Biscuit tomorrow',
      html: '<p>Your visit to Happy Paws Rescue is tomorrow at 10:00.</p>',
      type: 'notification',
      scheduledFor: inOneHour,
    }),
    lists: email({
      to: 'maya@example.com',
      subject: 'Your adoption of Biscuit is confirmed',
      html: '<p>Congratulations! Biscuit is going home with you.</p>',
      priority: 'urgent',
      cc: ['partner@example.com'],
      bcc: ['records@adoptdontshop.com'],
      tags: ['adoption', 'node-example'],
      metadata: { source: 'node-example', locale: 'en-US' },
    }),
  };

  const ids = {};
  await client.query('BEGIN');
  try {
    for (const [label, params] of Object.entries(rows)) {
      ids[label] = (await client.query(INSERT, params)).rows[0].email_id;
    }
    await client.query('COMMIT');
  } catch (err) {
    await client.query('ROLLBACK');
    throw err;
  }

  // What the worker has done so far (times read as UTC by the parser above).
  for (const [label, id] of Object.entries(ids)) {
    const { rows: [r] } = await client.query(
      'SELECT status, created_at, scheduled_for FROM email_queue WHERE email_id = $1',
      [id],
    );
    const due = r.scheduled_for === null ? 'now' : r.scheduled_for.toISOString();
    console.log(`${label}: ${id} ${r.status}, created ${r.created_at.toISOString()}, due ${due}`);
  }
  console.log(JSON.stringify(ids));
} finally {
  await client.end();
}
