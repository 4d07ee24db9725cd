//! `/v1/templates` for admins (list, preview, test send) and services (a template's
//! contract), and the test send shared with `adopt-worker send-test`.

use std::str::FromStr;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::PgPool;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::ApiState;
use super::auth::{Admin, Authed, Read};
use super::emails::{
    Enqueued, Recipient, TemplateRef, TemplateUseError, invalid, render_problem,
    resolve_for_enqueue, undeclared_keys, validate_recipient,
};
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody, FieldError};
use crate::config::Settings;
use crate::queue::{self, EmailPriority, EmailStatus, EmailType, NewEmail};
use crate::templates::{self, LookupError, RenderError, RenderRequest, Templates};

/// For the routes that name the template in their path: a template or version that does
/// not exist is a missing resource (404), not an invalid field; anything else as in
/// [`render_problem`].
fn path_problem(e: RenderError) -> ApiError {
    match e {
        RenderError::Lookup(LookupError::NotFound(name)) => {
            ApiError::not_found(format!("no template named {name:?}"))
        }
        e @ RenderError::UnknownVersion { .. } => ApiError::not_found(e.to_string()),
        e => render_problem(e).into(),
    }
}

/// A test send: to whom, which template (none: a plain test message), with what data
/// (none: the template's examples), by whom.
#[derive(Debug, Clone)]
pub struct TestSend {
    pub to: String,
    pub to_name: Option<String>,
    pub template: Option<String>,
    pub locale: Option<String>,
    pub data: Option<Value>,
    pub created_by: Option<Uuid>,
}

/// Queues a test email through the real pipeline: `urgent`, type `system` (so the
/// recipient's opt-outs do not swallow it; a blacklisted address still does), tagged
/// `test`, and counted in `test_emails_sent` of the template it names once it is delivered
/// (never in `usage_count`). Returns its id.
pub async fn send_test(
    pool: &PgPool,
    templates: &Templates,
    settings: &Settings,
    req: TestSend,
) -> Result<Uuid, TemplateUseError> {
    let email = test_email(pool, templates, settings, req).await?;
    let (id, _) = insert_test(pool, &email, false).await?;
    Ok(id)
}

/// The test email for `req`, checked and (for a template) resolved, not yet inserted.
async fn test_email(
    pool: &PgPool,
    templates: &Templates,
    settings: &Settings,
    req: TestSend,
) -> Result<NewEmail, TemplateUseError> {
    let to = req.to.trim().to_string();
    let valid =
        lettre::Address::from_str(&to).is_ok() && email_address::EmailAddress::is_valid(&to);
    if !valid {
        return Err(invalid(
            "to",
            format!("{to:?} is not a valid email address"),
        ));
    }
    let app = &settings.app;
    let mut email = NewEmail {
        from_email: app.from_email.clone(),
        from_name: Some(app.from_name.clone()),
        to_email: to.clone(),
        to_name: req.to_name.clone(),
        cc_emails: Vec::new(),
        bcc_emails: Vec::new(),
        reply_to_email: None,
        subject: format!("Test email from {}", app.name),
        html_content: format!(
            "<p>This is a test email from adopt-worker for {}.</p><p>If you can read it, delivery works.</p>",
            super::unsubscribe::escape(&app.name)
        ),
        text_content: Some(format!(
            "This is a test email from adopt-worker for {}.\nIf you can read it, delivery works.",
            app.name
        )),
        template_id: None,
        template_data: None,
        email_type: EmailType::System,
        priority: EmailPriority::Urgent,
        scheduled_for: None,
        max_retries: None,
        metadata: json!({"test": true}),
        campaign_id: None,
        user_id: None,
        created_by: req.created_by,
        tags: vec!["test".to_string()],
    };
    if let Some(name) = &req.template {
        // Counted in this template's test_emails_sent once delivered (see delivery).
        email.metadata = json!({"test": true, "testOf": name});
        let data = match req.data {
            Some(d @ Value::Object(_)) => d,
            Some(_) => return Err(invalid("data", "must be an object of template variables")),
            None => {
                let resolved = templates
                    .lookup(
                        templates::TemplateRef::Name(name),
                        req.locale
                            .as_deref()
                            .unwrap_or(&settings.templates.default_locale),
                    )
                    .await
                    .map_err(render_problem)?;
                templates::type_and_examples(pool, resolved.template_id, None)
                    .await?
                    .map(|(_, examples)| examples)
                    .unwrap_or_else(|| json!({}))
            }
        };
        email = resolve_for_enqueue(
            templates,
            email,
            TemplateRef {
                name: name.clone(),
                locale: req.locale.clone(),
                data,
            },
        )
        .await?;
    }
    Ok(email)
}

/// Inserts the test email (counted on its template) and, with `claim`, claims it in the same
/// transaction: `send-test` then delivers it itself, and a running worker never sees it
/// `queued` (it would race the command for the row).
async fn insert_test(
    pool: &PgPool,
    email: &NewEmail,
    claim: bool,
) -> Result<(Uuid, Option<queue::ClaimedEmail>), TemplateUseError> {
    let mut tx = pool.begin().await?;
    let id = queue::enqueue(&mut *tx, email).await?;
    let claimed = if claim {
        queue::claim_one(&mut *tx, id).await?
    } else {
        None
    };
    tx.commit().await?;
    Ok((id, claimed))
}

/// [`send_test`] for `adopt-worker send-test`: the row is inserted already claimed, for the
/// command to deliver at once.
pub async fn send_test_claimed(
    pool: &PgPool,
    templates: &Templates,
    settings: &Settings,
    req: TestSend,
) -> Result<(Uuid, Option<queue::ClaimedEmail>), TemplateUseError> {
    let email = test_email(pool, templates, settings, req).await?;
    insert_test(pool, &email, true).await
}

/// A template as admins see it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TemplateView {
    pub id: Uuid,
    pub name: String,
    pub description: Option<String>,
    /// template_type_enum
    #[serde(rename = "type")]
    pub template_type: String,
    pub category: String,
    pub status: String,
    pub locale: Option<String>,
    pub current_version: Option<i32>,
    pub is_default: bool,
    pub usage_count: i32,
    pub test_emails_sent: i32,
    pub last_used_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TemplateList {
    pub templates: Vec<TemplateView>,
}

/// Every template (not deleted), by name and locale.
#[utoipa::path(get, path = "/v1/templates", tag = "templates",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The templates", body = TemplateList),
        (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
        (status = 403, description = "Lacks the read scope", body = ErrorBody)))]
pub async fn list(
    State(state): State<ApiState>,
    _: Authed<Read>,
) -> Result<Json<TemplateList>, ApiError> {
    let rows = templates::list_templates(state.pool()).await?;
    let templates = rows
        .into_iter()
        .map(|t| TemplateView {
            id: t.template_id,
            name: t.name,
            description: t.description,
            template_type: t.template_type,
            category: t.category,
            status: t.status,
            locale: t.locale,
            current_version: t.current_version,
            is_default: t.is_default.unwrap_or(false),
            usage_count: t.usage_count.unwrap_or(0),
            test_emails_sent: t.test_emails_sent.unwrap_or(0),
            last_used_at: t.last_used_at.map(|t| t.and_utc()),
            updated_at: t.updated_at.map(|t| t.and_utc()),
        })
        .collect();
    Ok(Json(TemplateList { templates }))
}

/// One declared variable of a template.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct VariableView {
    pub name: String,
    /// string, number, boolean, object, array, url (absolute http/https), email, datetime
    #[serde(rename = "type")]
    pub var_type: String,
    pub required: bool,
    pub description: Option<String>,
    /// Any JSON value of the variable's type.
    #[schema(value_type = Option<Value>)]
    pub example: Option<Value>,
    /// For an object: the fields its example has, with their JSON types.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub fields: Vec<FieldView>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FieldView {
    pub name: String,
    #[serde(rename = "type")]
    pub field_type: String,
}

/// What a service needs to enqueue a template: the row a name and locale resolve to, its
/// declared variables, and a JSON Schema of `template_data`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TemplateDescription {
    pub id: Uuid,
    pub name: String,
    pub description: Option<String>,
    #[serde(rename = "type")]
    pub template_type: String,
    pub category: String,
    pub locale: Option<String>,
    pub current_version: Option<i32>,
    pub variables: Vec<VariableView>,
    /// JSON Schema (2020-12) of `data` in `POST /v1/emails` for this template.
    #[schema(value_type = Object)]
    pub data_schema: Value,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DescribeQuery {
    /// Locale to resolve (falls back like a real send); default the configured locale.
    pub locale: Option<String>,
}

/// A template's declared variables and a JSON Schema of its data, for services that
/// enqueue it (`read` scope).
#[utoipa::path(get, path = "/v1/templates/{name}", tag = "templates",
    security(("bearer" = [])),
    params(("name" = String, Path, description = "Template name"), DescribeQuery),
    responses(
        (status = 200, description = "The template's contract", body = TemplateDescription),
        (status = 400, description = "Bad query", body = ErrorBody),
        (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
        (status = 403, description = "Lacks the read scope", body = ErrorBody),
        (status = 404, description = "No such template", body = ErrorBody),
        (status = 422, description = "The template is not active", body = ErrorBody)))]
pub async fn describe(
    State(state): State<ApiState>,
    _: Authed<Read>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<DescribeQuery>,
) -> Result<Json<TemplateDescription>, ApiError> {
    let locale = q
        .locale
        .as_deref()
        .unwrap_or(&state.settings().templates.default_locale);
    let resolved = state
        .templates()
        .lookup(templates::TemplateRef::Name(&name), locale)
        .await
        .map_err(path_problem)?;
    let t = templates::template_contract(state.pool(), resolved.template_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no template named {name:?}")))?;
    let decls: Vec<templates::vars::VariableDecl> = t
        .variables
        .clone()
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default();
    let variables = decls
        .iter()
        .map(|d| VariableView {
            name: d.name.clone(),
            var_type: d.var_type.as_str().to_string(),
            required: d.required,
            description: d.description.clone(),
            example: d.example.clone(),
            fields: match &d.example {
                Some(Value::Object(fields)) => fields
                    .iter()
                    .map(|(k, v)| FieldView {
                        name: k.clone(),
                        field_type: templates::vars::schema_type(v).to_string(),
                    })
                    .collect(),
                _ => Vec::new(),
            },
        })
        .collect();
    Ok(Json(TemplateDescription {
        id: t.template_id,
        name: t.name,
        description: t.description,
        template_type: t.template_type,
        category: t.category,
        locale: t.locale,
        current_version: t.current_version,
        variables,
        data_schema: templates::vars::json_schema(&decls),
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PreviewQuery {
    /// Locale to render (falls back like a real send); default the configured locale.
    pub locale: Option<String>,
    /// A version from the template's history; default the current one.
    pub version: Option<i32>,
    /// `html` (default: the HTML part, viewable in a browser) or `json` (subject, html, text).
    #[param(inline)]
    pub format: Option<PreviewFormat>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PreviewFormat {
    Html,
    Json,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Preview {
    pub name: String,
    pub version: i32,
    pub subject: String,
    pub html: String,
    pub text: String,
    /// The example data it was rendered with.
    #[schema(value_type = Object)]
    pub data: Value,
}

/// The template rendered with its example data. Nothing is sent or counted.
#[utoipa::path(get, path = "/v1/templates/{name}/preview", tag = "templates",
    security(("bearer" = [])),
    params(("name" = String, Path, description = "Template name"), PreviewQuery),
    responses(
        (status = 200, description = "The rendered HTML (or JSON with format=json)",
            content((String = "text/html"), (Preview = "application/json"))),
        (status = 400, description = "Bad query", body = ErrorBody),
        (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, description = "No such template, or no such version of it", body = ErrorBody),
        (status = 422, description = "Nothing active to render, or its examples do not render", body = ErrorBody)))]
pub async fn preview(
    State(state): State<ApiState>,
    _: Authed<Admin>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<PreviewQuery>,
) -> Result<Response, ApiError> {
    render_preview(&state, &name, q, None).await
}

/// What to preview a template with.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreviewBody {
    /// Template variables, checked like an enqueue's; default the examples of the version
    /// previewed.
    #[schema(value_type = Option<Object>)]
    pub data: Option<Value>,
}

/// The template rendered with the data given (or its examples). Nothing is sent or counted.
#[utoipa::path(post, path = "/v1/templates/{name}/preview", tag = "templates",
    security(("bearer" = [])),
    params(("name" = String, Path, description = "Template name"), PreviewQuery),
    request_body = PreviewBody,
    responses(
        (status = 200, description = "The rendered HTML (or JSON with format=json)",
            content((String = "text/html"), (Preview = "application/json"))),
        (status = 400, description = "Bad query or malformed JSON", body = ErrorBody),
        (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, description = "No such template, or no such version of it", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not application/json", body = ErrorBody),
        (status = 422, description = "Nothing active to render, or the data does not fit it", body = ErrorBody)))]
pub async fn preview_with_data(
    State(state): State<ApiState>,
    _: Authed<Admin>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<PreviewQuery>,
    ApiJson(body): ApiJson<PreviewBody>,
) -> Result<Response, ApiError> {
    if let Some(d) = &body.data
        && !d.is_object()
    {
        return Err(ApiError::validation(vec![FieldError::new(
            "data",
            "must be an object of template variables",
        )]));
    }
    render_preview(&state, &name, q, Some(body)).await
}

async fn render_preview(
    state: &ApiState,
    name: &str,
    q: PreviewQuery,
    body: Option<PreviewBody>,
) -> Result<Response, ApiError> {
    let name = name.to_string();
    let json_format = q.format == Some(PreviewFormat::Json);
    let settings = state.settings();
    let templates = state.templates();
    let locale = q
        .locale
        .as_deref()
        .unwrap_or(&settings.templates.default_locale);
    let resolved = templates
        .lookup(templates::TemplateRef::Name(&name), locale)
        .await
        .map_err(path_problem)?;
    let (email_type, examples) =
        templates::type_and_examples(state.pool(), resolved.template_id, q.version)
            .await?
            .unwrap_or((EmailType::System, json!({})));
    let (data, given) = match body {
        Some(PreviewBody { data: Some(d) }) => (d, true),
        _ => (examples, false),
    };
    let unsubscribe = format!(
        "{}/u/preview",
        settings.http.public_url.trim_end_matches('/')
    );
    let r = templates
        .render(RenderRequest {
            template: templates::TemplateRef::Name(&name),
            locale: Some(locale),
            locale_is_guess: false,
            version: q.version,
            data: Some(&data),
            recipient_email: "preview@example.com",
            recipient_name: Some("Preview Recipient"),
            email_type,
            unsubscribe_url: Some(&unsubscribe),
            track_as: None,
            count_use: false,
        })
        .await
        .map_err(path_problem)?;
    // Data given is checked as an enqueue's would be.
    if given && templates.strict_data() && !r.undeclared.is_empty() {
        return Err(ApiError::validation(undeclared_keys(
            &r.name,
            &r.undeclared,
            &r.declared,
        )));
    }
    if json_format {
        return Ok(Json(Preview {
            name: r.name,
            version: r.version,
            subject: r.subject,
            html: r.html,
            text: r.text,
            data,
        })
        .into_response());
    }
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    // The template's own HTML, shown as is: no scripts, no outside loads but images, and a
    // sandbox (a unique origin: no cookies, no forms, no framing, no <base> redirection).
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(
            "default-src 'none'; img-src * data:; style-src 'unsafe-inline'; sandbox; \
             form-action 'none'; base-uri 'none'; frame-ancestors 'none'",
        ),
    );
    Ok((headers, Html(r.html)).into_response())
}

/// A test send request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestRequest {
    pub to: Recipient,
    /// Template variables; default the template's examples.
    #[schema(value_type = Option<Object>)]
    pub data: Option<Value>,
    pub locale: Option<String>,
}

/// Send this template to an address through the real pipeline (urgent, tagged `test`).
/// At most `auth.test_sends_per_minute` per admin.
#[utoipa::path(post, path = "/v1/templates/{name}/test", tag = "templates",
    security(("bearer" = [])),
    params(("name" = String, Path, description = "Template name")),
    request_body = TestRequest,
    responses(
        (status = 202, description = "Queued", body = Enqueued),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, description = "No such template", body = ErrorBody),
        (status = 413, description = "Body over 1 MiB", body = ErrorBody),
        (status = 415, description = "Not application/json", body = ErrorBody),
        (status = 422, description = "Invalid address, or data that does not render", body = ErrorBody),
        (status = 429, description = "Too many test sends; Retry-After says when to try again", body = ErrorBody)))]
pub async fn test_send(
    State(state): State<ApiState>,
    Authed(principal, ..): Authed<Admin>,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<TestRequest>,
) -> Result<(StatusCode, Json<Enqueued>), ApiError> {
    // Counted in the database: the limit holds per admin across every API process.
    let per_minute = state.settings().auth.test_sends_per_minute;
    let key = format!("test_send:{}", principal.key());
    if let Err(wait) = super::ratelimit::hit(state.pool(), &key, per_minute).await? {
        return Err(super::ratelimit::too_many(
            format!("at most {per_minute} test sends a minute; try again in {wait} s"),
            wait,
        ));
    }
    let locale = req
        .locale
        .as_deref()
        .unwrap_or(&state.settings().templates.default_locale);
    state
        .templates()
        .lookup(templates::TemplateRef::Name(&name), locale)
        .await
        .map_err(path_problem)?;
    // The same rules as an enqueue's `to`: the name goes into a header.
    let (to, to_name) = validate_recipient("to", &req.to).map_err(ApiError::validation)?;
    let id = send_test(
        state.pool(),
        state.templates(),
        state.settings(),
        TestSend {
            to,
            to_name,
            template: Some(name),
            locale: req.locale,
            data: req.data,
            created_by: principal.user_id(),
        },
    )
    .await?;
    tracing::info!(email_id = %id, by = %principal.key(), "template test send queued");
    Ok((
        StatusCode::ACCEPTED,
        Json(Enqueued {
            id,
            status: EmailStatus::Queued,
        }),
    ))
}
