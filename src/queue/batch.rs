//! `sending → sent` for many rows in one statement. Every accepted email used to be one
//! UPDATE and one commit (a WAL flush) of its own; under load that was most of
//! PostgreSQL's work. The writer takes whatever results are waiting, writes them with one
//! UPDATE over `unnest(...)`, and answers each caller. An idle queue gets no delay: a lone
//! result is written at once, and batches only form while writes are in flight.
//!
//! Up to [`WRITERS`] batches are written at once, on as many connections: one writer at a
//! time was the drain's bottleneck for template emails, whose rendered HTML and text are
//! written back with the status (docs/performance.md "Performance"). Batches hold distinct rows, so
//! concurrent writers never wait on each other's locks.

use std::sync::{Arc, OnceLock};

use chrono::NaiveDateTime;
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::{ClaimedEmail, EmailStatus, Recorded, RenderedContent};

/// Results written by one statement at most.
const MAX_BATCH: usize = 256;
/// Batches written at once (each on its own pooled connection).
const WRITERS: usize = 3;

struct Pending {
    email_id: Uuid,
    claimed_at: NaiveDateTime,
    provider_id: String,
    provider_message_id: Option<String>,
    rendered: Option<RenderedContent>,
    reply: oneshot::Sender<Result<Recorded, String>>,
}

/// Records `sent` results in batches; cheap to clone, shared by every send task. The
/// writer task starts on first use and ends when the last clone is dropped.
#[derive(Clone)]
pub struct SentBatcher {
    pool: PgPool,
    tx: Arc<OnceLock<mpsc::UnboundedSender<Pending>>>,
}

impl SentBatcher {
    pub fn new(pool: PgPool) -> SentBatcher {
        SentBatcher {
            pool,
            tx: Arc::default(),
        }
    }

    /// Same contract as [`super::mark_sent`]: fenced on the claim, also accepted while the
    /// row sits `queued` after a lease reclaim. A failed batch fails every caller in it
    /// with the database's message; callers retry as they would a single UPDATE.
    pub async fn mark_sent(
        &self,
        email: &ClaimedEmail,
        provider_id: &str,
        provider_message_id: Option<&str>,
        rendered: Option<&RenderedContent>,
    ) -> Result<Recorded, sqlx::Error> {
        let tx = self.tx.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(write_batches(self.pool.clone(), rx));
            tx
        });
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            email_id: email.email_id,
            claimed_at: email.claimed_at,
            provider_id: provider_id.to_string(),
            provider_message_id: provider_message_id.map(str::to_string),
            rendered: rendered.cloned(),
            reply,
        };
        tx.send(pending).map_err(|_| sqlx::Error::WorkerCrashed)?;
        match answer.await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(message)) => Err(sqlx::Error::Protocol(message)),
            Err(_) => Err(sqlx::Error::WorkerCrashed),
        }
    }
}

async fn write_batches(pool: PgPool, mut rx: mpsc::UnboundedReceiver<Pending>) {
    let writers = Arc::new(tokio::sync::Semaphore::new(WRITERS));
    loop {
        // A free writer first: while all are busy, results gather into the next batch.
        let Ok(permit) = writers.clone().acquire_owned().await else {
            return;
        };
        let mut batch = Vec::with_capacity(MAX_BATCH);
        if rx.recv_many(&mut batch, MAX_BATCH).await == 0 {
            return;
        }
        let pool = pool.clone();
        tokio::spawn(async move {
            let result = write_batch(&pool, &batch).await;
            if result.is_err() {
                // One value the table refuses fails the whole statement: write the rows
                // one by one, so it costs its own row and not the others.
                if let Err(e) = &result {
                    tracing::warn!(error = %e, rows = batch.len(), "writing sent results failed; writing them one by one");
                }
                for p in batch {
                    let one = write_one(&pool, &p).await;
                    let _ = p.reply.send(answer(&one, p.email_id));
                }
                drop(permit);
                return;
            }
            drop(permit);
            for p in batch {
                let _ = p.reply.send(answer(&result, p.email_id));
            }
        });
    }
}

/// One row's result. The message went: a value the table refuses (SQLSTATE class 22 "data
/// exception" or 23 "integrity constraint violation", e.g. a constraint another service
/// added) must not leave the row `sending` for the reaper to send again, so the bare
/// transition is written without the rendered content and the provider's id.
async fn write_one(
    pool: &PgPool,
    p: &Pending,
) -> Result<std::collections::HashSet<Uuid>, sqlx::Error> {
    match write_batch(pool, std::slice::from_ref(p)).await {
        Err(sqlx::Error::Database(db))
            if db
                .code()
                .is_some_and(|c| c.starts_with("22") || c.starts_with("23")) =>
        {
            tracing::warn!(email_id = %p.email_id, error = %db, "the sent result holds a value the table refuses; recording the status alone");
            let written: Vec<Uuid> = sqlx::query_scalar(
                "UPDATE email_queue SET
                    status = 'sent',
                    sent_at = now() AT TIME ZONE 'UTC',
                    provider_id = left($3, 255),
                    failure_reason = NULL,
                    updated_at = now() AT TIME ZONE 'UTC'
                 WHERE email_id = $1 AND last_attempt_at = $2
                   AND status IN ('sending', 'queued', 'failed')
                 RETURNING email_id",
            )
            .bind(p.email_id)
            .bind(p.claimed_at)
            .bind(&p.provider_id)
            .fetch_all(pool)
            .await?;
            Ok(written.into_iter().collect())
        }
        other => other,
    }
}

fn answer(
    result: &Result<std::collections::HashSet<Uuid>, sqlx::Error>,
    email_id: Uuid,
) -> Result<Recorded, String> {
    match result {
        Ok(written) if written.contains(&email_id) => Ok(Recorded::Written(EmailStatus::Sent)),
        Ok(_) => Ok(Recorded::Fenced),
        Err(e) => Err(e.to_string()),
    }
}

async fn write_batch(
    pool: &PgPool,
    batch: &[Pending],
) -> Result<std::collections::HashSet<Uuid>, sqlx::Error> {
    let ids: Vec<Uuid> = batch.iter().map(|p| p.email_id).collect();
    let fences: Vec<NaiveDateTime> = batch.iter().map(|p| p.claimed_at).collect();
    let providers: Vec<&str> = batch.iter().map(|p| p.provider_id.as_str()).collect();
    let message_ids: Vec<Option<&str>> = batch
        .iter()
        .map(|p| p.provider_message_id.as_deref())
        .collect();
    let rendered = |f: fn(&RenderedContent) -> Option<&str>| -> Vec<Option<&str>> {
        batch
            .iter()
            .map(|p| p.rendered.as_ref().and_then(f))
            .collect()
    };
    let subjects = rendered(|r| Some(r.subject.as_str()));
    let htmls = rendered(|r| Some(r.html_content.as_str()));
    let texts = rendered(|r| r.text_content.as_deref());
    let versions: Vec<Option<i32>> = batch
        .iter()
        .map(|p| p.rendered.as_ref().and_then(|r| r.template_version))
        .collect();
    let written: Vec<Uuid> = sqlx::query_scalar(
        "UPDATE email_queue e SET
            status = 'sent',
            sent_at = now() AT TIME ZONE 'UTC',
            provider_id = left(r.provider_id, 255),
            provider_message_id = left(r.provider_message_id, 255),
            failure_reason = NULL,
            subject = left(COALESCE(r.subject, e.subject), 500),
            html_content = COALESCE(r.html_content, e.html_content),
            text_content = CASE WHEN r.subject IS NULL THEN e.text_content ELSE r.text_content END,
            metadata = CASE WHEN r.template_version IS NULL THEN e.metadata
                       ELSE (CASE WHEN jsonb_typeof(e.metadata) = 'object' THEN e.metadata ELSE '{}' END)
                            || jsonb_build_object('templateVersion', r.template_version, 'renderedByWorker', true) END,
            updated_at = now() AT TIME ZONE 'UTC'
         FROM unnest($1::uuid[], $2::timestamp[], $3::text[], $4::text[], $5::text[], $6::text[],
                     $7::text[], $8::int[])
              AS r(email_id, fence, provider_id, provider_message_id, subject, html_content,
                   text_content, template_version)
         WHERE e.email_id = r.email_id AND e.last_attempt_at = r.fence
           AND e.status IN ('sending', 'queued', 'failed')
         RETURNING e.email_id",
    )
    .bind(ids)
    .bind(fences)
    .bind(providers)
    .bind(message_ids)
    .bind(subjects)
    .bind(htmls)
    .bind(texts)
    .bind(versions)
    .fetch_all(pool)
    .await?;
    Ok(written.into_iter().collect())
}
