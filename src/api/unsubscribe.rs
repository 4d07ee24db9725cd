//! `/u/{token}`: the unsubscribe page (GET, changes nothing: link scanners prefetch GETs)
//! and the unsubscribe itself (POST): RFC 8058 one-click as mail providers send it
//! (`List-Unsubscribe=One-Click`, form-encoded) and the page's own button, which posts the
//! same body. `?category=` limits it to one preference category; without it the recipient
//! leaves all optional (marketing and notification) email. An unknown token, or any other
//! problem with the link, gets one and the same 404 page.

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};

use super::ApiState;
use super::error::{ApiError, ErrorBody};
use crate::metrics::{self, UnsubscribeVia};
use crate::preferences;

/// The parts of a link: its token and its optional category (None also when malformed).
struct Link {
    token: String,
    category: Option<String>,
    valid: bool,
}

fn link(token: String, query: Option<String>) -> Link {
    // No text column holds NUL: such a token matches nothing, and is never bound to a query.
    let (token, nul) = if token.contains('\0') {
        (String::new(), true)
    } else {
        (token, false)
    };
    let category = query.as_deref().and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "category")
            .map(|(_, v)| v.into_owned())
    });
    let valid = category.as_deref().is_none_or(preferences::valid_category)
        && !nul
        && !token.is_empty()
        && token.len() <= 255;
    Link {
        token,
        category: category.filter(|c| preferences::valid_category(c)),
        valid,
    }
}

/// The documented body of the unsubscribe: `List-Unsubscribe=One-Click` (RFC 8058), and
/// `via=page` from the page's own button. Anything else is 400.
pub struct OneClickForm;

impl PartialSchema for OneClickForm {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .property(
                "List-Unsubscribe",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(["One-Click"])),
            )
            .required("List-Unsubscribe")
            .property(
                "via",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .description(Some("`page` when sent by the page's button (for metrics)")),
            )
            .into()
    }
}

impl ToSchema for OneClickForm {}

/// The confirmation page: what the link unsubscribes from, and a button that does it.
#[utoipa::path(get, path = "/u/{token}", tag = "unsubscribe",
    params(("token" = String, Path, description = "The recipient's unsubscribe token", min_length = 1, max_length = 255),
        ("category" = Option<String>, Query, description = "Only this preference category", pattern = "^[A-Za-z0-9_]{1,64}$")),
    responses(
        (status = 200, description = "Confirmation page", content_type = "text/html"),
        (status = 404, description = "Not a valid link", content_type = "text/html"),
        (status = 429, description = "Too many requests from this client address (http.public_rate_per_minute); see Retry-After", body = ErrorBody)))]
pub async fn page(
    State(state): State<ApiState>,
    axum::extract::Path(token): axum::extract::Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let link = link(token, query);
    // Looked up even for a malformed link, so every failure costs the same.
    let target = preferences::find_by_token(state.pool(), &link.token, link.category.as_deref())
        .await?
        .filter(|_| link.valid);
    let app = &state.settings().app.name;
    let Some(target) = target else {
        return Ok(not_found(app));
    };
    let what = subject(link.category.as_deref());
    let body = if target.already {
        format!(
            "<h1>You are already unsubscribed</h1><p><strong>{}</strong> no longer receives {what}.</p>",
            escape(&target.masked_email)
        )
    } else {
        format!(
            "<h1>Unsubscribe?</h1>\
             <p><strong>{}</strong> will no longer receive {what} from {}.</p>\
             <p>Account and security emails (password resets, adoption updates you must act on) \
             still arrive.</p>\
             <form method=\"post\"><input type=\"hidden\" name=\"List-Unsubscribe\" value=\"One-Click\">\
             <input type=\"hidden\" name=\"via\" value=\"page\">\
             <button type=\"submit\">Unsubscribe</button></form>",
            escape(&target.masked_email),
            escape(app)
        )
    };
    Ok(page_response(StatusCode::OK, app, &body))
}

/// Unsubscribes at once (RFC 8058 one-click, or the page's button). Body:
/// `List-Unsubscribe=One-Click`, `application/x-www-form-urlencoded` or `multipart/form-data`.
#[utoipa::path(post, path = "/u/{token}", tag = "unsubscribe",
    params(("token" = String, Path, description = "The recipient's unsubscribe token", min_length = 1, max_length = 255),
        ("category" = Option<String>, Query, description = "Only this preference category", pattern = "^[A-Za-z0-9_]{1,64}$")),
    request_body(description = "List-Unsubscribe=One-Click",
        content((OneClickForm = "application/x-www-form-urlencoded"), (OneClickForm = "multipart/form-data"))),
    responses(
        (status = 200, description = "Unsubscribed; a page saying so", content_type = "text/html"),
        (status = 400, description = "The body is not List-Unsubscribe=One-Click", content_type = "text/html"),
        (status = 404, description = "Not a valid link", content_type = "text/html"),
        (status = 429, description = "Too many requests from this client address (http.public_rate_per_minute); see Retry-After", body = ErrorBody),
        (status = 413, description = "Body over 1 MiB", body = ErrorBody)))]
pub async fn unsubscribe(
    State(state): State<ApiState>,
    axum::extract::Path(token): axum::extract::Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let app = &state.settings().app.name;
    let link = link(token, query);
    if !is_one_click(&headers, &body) {
        let body = "<h1>Nothing was changed</h1><p>This request is not a valid unsubscribe \
                    request. Open the link from your email and use the button.</p>";
        return Ok(page_response(StatusCode::BAD_REQUEST, app, body));
    }
    if !link.valid {
        // Validated before any write: a malformed link never reaches the UPDATE (a stored
        // empty token would match it). The read keeps the failure's cost near a real one's.
        preferences::find_by_token(state.pool(), "", None).await?;
        return Ok(not_found(app));
    }
    let category = link.category.as_deref();
    if !preferences::unsubscribe(state.pool(), &link.token, category).await? {
        return Ok(not_found(app));
    }
    let via = if url::form_urlencoded::parse(&body).any(|(k, v)| k == "via" && v == "page") {
        UnsubscribeVia::Page
    } else {
        UnsubscribeVia::OneClick
    };
    metrics::unsubscribed(via);
    tracing::info!(
        category = category.unwrap_or("all"),
        via = via.as_str(),
        "recipient unsubscribed"
    );
    let body = format!(
        "<h1>You are unsubscribed</h1><p>You will no longer receive {} from {}.</p>",
        subject(category),
        escape(app)
    );
    Ok(page_response(StatusCode::OK, app, &body))
}

/// RFC 8058: the POST body holds `List-Unsubscribe=One-Click`.
fn is_one_click(headers: &HeaderMap, body: &[u8]) -> bool {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if ct.starts_with("multipart/form-data") {
        let text = String::from_utf8_lossy(body);
        return text.contains("name=\"List-Unsubscribe\"") && text.contains("One-Click");
    }
    url::form_urlencoded::parse(body).any(|(k, v)| k == "List-Unsubscribe" && v == "One-Click")
}

fn subject(category: Option<&str>) -> String {
    match category {
        Some(c) => format!("<strong>{}</strong> emails", escape(&c.replace('_', " "))),
        None => "marketing or notification emails".to_string(),
    }
}

fn not_found(app: &str) -> Response {
    page_response(
        StatusCode::NOT_FOUND,
        app,
        "<h1>This link is not valid</h1><p>It may be incomplete or out of date. Use the \
         unsubscribe link in your most recent email, or change your email settings in your \
         account.</p>",
    )
}

fn page_response(status: StatusCode, app: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"robots\" content=\"noindex\"><title>{app} — email preferences</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:32rem;margin:3rem auto;\
         padding:0 1rem;line-height:1.5;color:#222}}button{{font-size:1rem;padding:.6rem 1.2rem;\
         border:0;border-radius:.4rem;background:#2d6a4f;color:#fff;cursor:pointer}}</style>\
         </head><body>{body}</body></html>",
        app = escape(app)
    );
    (
        status,
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::REFERRER_POLICY, "no-referrer"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; \
                 base-uri 'none'; frame-ancestors 'none'",
            ),
        ],
        Html(html),
    )
        .into_response()
}

/// Escapes text for HTML.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}
