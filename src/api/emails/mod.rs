//! `/v1/emails`: enqueue (one, or a batch in one transaction), read one, list, retry.

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod props;
mod request;
mod schema;
mod template;
mod view;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

pub use request::{
    EnqueueRequest, NamedRecipient, Recipient, TemplateRef, Validated, validate_recipient,
};
pub use template::{TemplateUseError, resolve_for_enqueue};
pub(in crate::api) use template::{invalid, render_problem, undeclared_keys};
pub use view::{EmailList, EmailView};

use super::ApiState;
use super::auth::{Authed, Enqueue, EnqueueOrAdmin, Principal, Read};
use super::error::{
    ApiError, ApiPath, ApiQuery, ErrorBody, FieldError, RawBody, parse_json, require_json,
};
use super::idempotency;
use super::tokens::Scope;
use crate::preferences;
use crate::queue::{self, EmailStatus, ListAfter, ListFilter, RetryResult};

/// Most emails in one batch.
pub const MAX_BATCH: usize = 500;

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Enqueued {
    pub id: Uuid,
    pub status: EmailStatus,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BatchEnqueued {
    pub ids: Vec<Uuid>,
}

/// The batch body: `{"emails": [...]}`, 1 to 500 items, each like `POST /v1/emails`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    #[schema(value_type = Vec<EnqueueRequest>, min_items = 1, max_items = 500)]
    pub emails: Vec<Value>,
}

/// Enqueue one email.
#[utoipa::path(post, path = "/v1/emails", tag = "emails",
    security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255,
        pattern = "^[!-~]+$",
        description = "Repeat-safe: the same key with the same body returns the first response for 24 h")),
    request_body = EnqueueRequest,
    responses(
        (status = 202, description = "Queued", body = Enqueued),
        (status = 400, description = "Malformed JSON or Idempotency-Key", body = ErrorBody),
        (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
        (status = 403, description = "Token lacks the enqueue scope", body = ErrorBody),
        (status = 409, description = "Idempotency-Key reused with another body", body = ErrorBody),
        (status = 413, description = "Body over 1 MiB", body = ErrorBody),
        (status = 415, description = "Not application/json", body = ErrorBody),
        (status = 422, description = "Invalid fields, unknown template or missing template variable", body = ErrorBody)))]
pub async fn enqueue_one(
    State(state): State<ApiState>,
    Authed(principal, ..): Authed<Enqueue>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    enqueue(state, principal, headers, body, "/v1/emails", Batch::No).await
}

/// Enqueue up to 500 emails, all or nothing.
#[utoipa::path(post, path = "/v1/emails/batch", tag = "emails",
    security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255,
        pattern = "^[!-~]+$",
        description = "Repeat-safe: the same key with the same body returns the first response for 24 h")),
    request_body = BatchRequest,
    responses(
        (status = 202, description = "All queued", body = BatchEnqueued),
        (status = 400, description = "Malformed JSON or Idempotency-Key", body = ErrorBody),
        (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
        (status = 403, description = "Token lacks the enqueue scope", body = ErrorBody),
        (status = 409, description = "Idempotency-Key reused with another body", body = ErrorBody),
        (status = 413, description = "Body over 5 MiB", body = ErrorBody),
        (status = 415, description = "Not application/json", body = ErrorBody),
        (status = 422, description = "Invalid items (details.errors[].index says which); nothing queued", body = ErrorBody)))]
pub async fn enqueue_batch(
    State(state): State<ApiState>,
    Authed(principal, ..): Authed<Enqueue>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    enqueue(
        state,
        principal,
        headers,
        body,
        "/v1/emails/batch",
        Batch::Yes,
    )
    .await
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Batch {
    No,
    Yes,
}

async fn enqueue(
    state: ApiState,
    principal: Principal,
    headers: HeaderMap,
    body: axum::body::Bytes,
    path: &str,
    batch: Batch,
) -> Result<Response, ApiError> {
    require_json(&headers)?;
    let key = idempotency::key_from(&headers)?;
    let token_id = match &principal {
        Principal::Service { token_id, .. } => Some(*token_id),
        Principal::Admin { .. } => None,
    };
    let idem = match (key, token_id) {
        (Some(k), Some(t)) => Some((k, t, idempotency::request_hash("POST", path, &body))),
        _ => None,
    };
    if let Some((key, token_id, hash)) = &idem
        && let Some(stored) = idempotency::lookup(state.pool(), *token_id, key).await?
    {
        return Ok(stored.replay(key, hash));
    }

    let items = match batch {
        Batch::No => vec![parse_json::<EnqueueRequest>(&body)?],
        Batch::Yes => parse_batch(&body)?,
    };
    let mut errors = Vec::new();
    let mut rows = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let index = (batch == Batch::Yes).then_some(i);
        match prepare(&state, item).await {
            Ok(v) => rows.push(v),
            Err(TemplateUseError::Invalid(errs)) => errors.extend(errs.into_iter().map(|mut e| {
                e.index = index;
                e
            })),
            Err(e) => return Err(e.into()),
        }
    }
    check_users(&state, &rows, batch, &mut errors).await?;
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    // Which token queued the row: a service may retry its own failed emails.
    if let Some(token_id) = token_id {
        for row in &mut rows {
            if let Some(m) = row.metadata.as_object_mut() {
                m.insert(
                    queue::ENQUEUED_BY_TOKEN.to_string(),
                    json!(token_id.to_string()),
                );
            }
        }
    }

    // The common case, one email without an idempotency key, is one statement in its own
    // implicit transaction: two round trips fewer than BEGIN ... COMMIT.
    if let ([email], None, Batch::No) = (rows.as_slice(), &idem, batch) {
        let id = queue::enqueue(state.pool(), email).await?;
        state.sweep_expired();
        return Ok((
            StatusCode::ACCEPTED,
            Json(json!(Enqueued {
                id,
                status: EmailStatus::Queued
            })),
        )
            .into_response());
    }
    let mut tx = state.pool().begin().await?;
    let mut ids = Vec::with_capacity(rows.len());
    for email in &rows {
        ids.push(queue::enqueue(&mut *tx, email).await?);
    }
    let response = match batch {
        Batch::No => json!(Enqueued {
            id: ids[0],
            status: EmailStatus::Queued
        }),
        Batch::Yes => json!(BatchEnqueued { ids }),
    };
    if let Some((key, token_id, hash)) = &idem
        && let Some(first) = idempotency::store(
            &mut tx,
            *token_id,
            key,
            hash.as_stored(),
            StatusCode::ACCEPTED,
            &response,
        )
        .await?
    {
        tx.rollback().await?;
        return Ok(first.replay(key, hash));
    }
    tx.commit().await?;
    state.sweep_expired();
    Ok((StatusCode::ACCEPTED, Json(response)).into_response())
}

/// Parses `{"emails": [...]}` item by item, so an error names its item's index.
fn parse_batch(body: &[u8]) -> Result<Vec<EnqueueRequest>, ApiError> {
    let batch: BatchRequest = parse_json(body)?;
    if batch.emails.is_empty() || batch.emails.len() > MAX_BATCH {
        return Err(ApiError::validation(vec![FieldError::new(
            "emails",
            format!("must hold 1 to {MAX_BATCH} emails"),
        )]));
    }
    let mut items = Vec::with_capacity(batch.emails.len());
    let mut errors = Vec::new();
    for (i, v) in batch.emails.into_iter().enumerate() {
        match serde_path_to_error::deserialize::<_, EnqueueRequest>(v) {
            Ok(r) => items.push(r),
            Err(e) => {
                let path = e.path().to_string();
                let message = e.into_inner().to_string();
                errors.push(FieldError {
                    index: Some(i),
                    field: super::error::field_of(&path, &message),
                    message,
                });
            }
        }
    }
    if errors.is_empty() {
        Ok(items)
    } else {
        Err(ApiError::validation(errors))
    }
}

/// Validates one item and resolves its template, if any.
async fn prepare(
    state: &ApiState,
    req: EnqueueRequest,
) -> Result<queue::NewEmail, TemplateUseError> {
    let v = request::validate(req, &state.settings().app).map_err(TemplateUseError::Invalid)?;
    let senders = &state.settings().api.allowed_sender_domains;
    if !request::sender_allowed(&v.email.from_email, senders) {
        return Err(TemplateUseError::Invalid(vec![FieldError::new(
            "from",
            format!(
                "the sender's domain is not one this API may send from ({}; api.allowed_sender_domains)",
                senders.join(", ")
            ),
        )]));
    }
    match v.template {
        None => Ok(v.email),
        Some(t) => resolve_for_enqueue(state.templates(), v.email, t).await,
    }
}

/// `user_id` must name a current user whose address is the email's `to` (case-insensitive):
/// the preferences gate and the unsubscribe link are that user's, so nobody may borrow
/// another user's. Say which item's does not.
async fn check_users(
    state: &ApiState,
    rows: &[queue::NewEmail],
    batch: Batch,
    errors: &mut Vec<FieldError>,
) -> Result<(), ApiError> {
    let wanted: Vec<Uuid> = rows.iter().filter_map(|r| r.user_id).collect();
    if wanted.is_empty() {
        return Ok(());
    }
    let known = preferences::user_addresses(state.pool(), &wanted).await?;
    for (i, r) in rows.iter().enumerate() {
        let Some(u) = r.user_id else { continue };
        let message = match known.iter().find(|k| k.user_id == u) {
            None => format!("no user with id {u}"),
            Some(k) if k.deleted => format!("user {u} is deleted"),
            Some(k) if !k.email.eq_ignore_ascii_case(&r.to_email) => format!(
                "user {u} is not the recipient: their address is not the email's \"to\" \
                 (a user_id must be the recipient's own)"
            ),
            Some(_) => continue,
        };
        errors.push(FieldError {
            index: (batch == Batch::Yes).then_some(i),
            field: "user_id".into(),
            message,
        });
    }
    Ok(())
}

/// An email's status, attempts, failure reason, tracking and timestamps.
#[utoipa::path(get, path = "/v1/emails/{id}", tag = "emails",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "email_id")),
    responses(
        (status = 200, description = "The email", body = EmailView),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
        (status = 403, description = "Lacks the read scope", body = ErrorBody),
        (status = 404, description = "No such email", body = ErrorBody)))]
pub async fn get_email(
    State(state): State<ApiState>,
    _: Authed<Read>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<EmailView>, ApiError> {
    match queue::find_email(state.pool(), id).await? {
        Some(r) => Ok(Json(EmailView::from(r))),
        None => Err(ApiError::not_found(format!("no email with id {id}"))),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only emails in this status.
    pub status: Option<EmailStatus>,
    /// Only emails to this address (case-insensitive).
    pub to: Option<String>,
    /// 1 to 200, default 50.
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[param(min_length = 1)]
    pub cursor: Option<String>,
}

/// Emails, newest first, a page at a time.
#[utoipa::path(get, path = "/v1/emails", tag = "emails",
    security(("bearer" = [])),
    params(ListQuery),
    responses(
        (status = 200, description = "A page; `next_cursor` is null on the last", body = EmailList),
        (status = 400, description = "Bad query or cursor", body = ErrorBody),
        (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
        (status = 403, description = "Lacks the read scope", body = ErrorBody)))]
pub async fn list_emails(
    State(state): State<ApiState>,
    _: Authed<Read>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<EmailList>, ApiError> {
    let limit = q.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_query",
            "limit must be between 1 and 200",
        ));
    }
    let after = q.cursor.as_deref().map(decode_cursor).transpose()?;
    let filter = ListFilter {
        status: q.status,
        to: q.to.map(|t| t.trim().to_string()),
        after,
        limit: limit + 1,
    };
    let mut rows = queue::list_emails(state.pool(), &filter).await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next_cursor = if more {
        rows.last().map(|(_, after)| encode_cursor(after))
    } else {
        None
    };
    Ok(Json(EmailList {
        emails: rows.into_iter().map(|(r, _)| EmailView::from(r)).collect(),
        next_cursor,
    }))
}

/// The cursor is opaque to clients: base64url of `{"k": sort key, "id": email_id}`.
fn encode_cursor(after: &ListAfter) -> String {
    let raw = json!({"k": after.created_at, "id": after.email_id}).to_string();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

fn decode_cursor(s: &str) -> Result<ListAfter, ApiError> {
    let bad = || ApiError::bad_request("invalid_cursor", "cursor is not one this API returned");
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| bad())?;
    #[derive(Deserialize)]
    struct Cursor {
        k: String,
        id: Uuid,
    }
    let c: Cursor = serde_json::from_slice(&raw).map_err(|_| bad())?;
    // The key is bound as a timestamp: only accept what PostgreSQL printed.
    let valid = c.k == "-infinity"
        || chrono::NaiveDateTime::parse_from_str(&c.k, "%Y-%m-%d %H:%M:%S%.f").is_ok();
    if !valid {
        return Err(bad());
    }
    Ok(ListAfter {
        created_at: c.k,
        email_id: c.id,
    })
}

/// Put a failed email back in the queue: due now, fresh retries, reason cleared.
#[utoipa::path(post, path = "/v1/emails/{id}/retry", tag = "emails",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "email_id")),
    responses(
        (status = 202, description = "Queued again", body = Enqueued),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
        (status = 403, description = "Neither an admin nor the service token that queued it", body = ErrorBody),
        (status = 404, description = "No such email", body = ErrorBody),
        (status = 409, description = "Not failed (bounced and unsubscribed emails are never re-sent)", body = ErrorBody)))]
pub async fn retry_email(
    State(state): State<ApiState>,
    Authed(principal, ..): Authed<EnqueueOrAdmin>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<(StatusCode, Json<Enqueued>), ApiError> {
    // Admins retry any email; a service only the ones its own token queued.
    let owner = match &principal {
        p if p.has(Scope::Admin) => None,
        Principal::Service { token_id, .. } => Some(*token_id),
        Principal::Admin { .. } => None,
    };
    match queue::retry_failed(state.pool(), id, owner).await? {
        RetryResult::Requeued => {
            tracing::info!(email_id = %id, by = %principal.key(), "failed email queued again by hand");
            Ok((
                StatusCode::ACCEPTED,
                Json(Enqueued {
                    id,
                    status: EmailStatus::Queued,
                }),
            ))
        }
        RetryResult::NotFound => Err(ApiError::not_found(format!("no email with id {id}"))),
        RetryResult::NotOwned => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "not_your_email",
            format!(
                "email {id} was not queued by this token: a service retries only its own emails (an admin may retry any)"
            ),
        )),
        RetryResult::NotFailed(status) => {
            let why = match status {
                EmailStatus::Bounced => {
                    "it bounced: the recipient's server rejected the address, so it is never re-sent"
                }
                EmailStatus::Unsubscribed => {
                    "the recipient opted out of this kind of email, so it is never re-sent"
                }
                _ => "only failed emails can be retried",
            };
            Err(ApiError::conflict(
                "not_retryable",
                format!("email {id} is {}: {why}", status.as_str()),
            )
            .with_details(json!({"status": status})))
        }
    }
}
