//! The one error type of the HTTP API: every failure is JSON
//! `{"error": {"code", "message", "details"?}}` with a stable snake_case `code` (listed in
//! docs/api.md "HTTP API"), and the request extractors that turn axum's plain-text rejections into
//! it.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tracing::error;
use utoipa::ToSchema;

/// An API failure: status, stable code, a message a person can act on, optional details.
#[derive(Debug, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Option<Value>,
    headers: Vec<(header::HeaderName, HeaderValue)>,
}

/// The JSON body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, snake_case; clients branch on this, never on the message.
    #[schema(example = "validation_failed")]
    pub code: String,
    pub message: String,
    /// Machine-readable specifics (e.g. `{"errors": [{"field": "to", "message": ...}]}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            details: None,
            headers: Vec::new(),
        }
    }

    pub fn with_details(mut self, details: Value) -> ApiError {
        self.details = Some(details);
        self
    }

    pub fn with_header(mut self, name: header::HeaderName, value: &str) -> ApiError {
        if let Ok(v) = HeaderValue::from_str(value) {
            self.headers.push((name, v));
        }
        self
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, code, message)
    }

    /// 422 naming the offending field(s): `details.errors = [{field, message}]`.
    pub fn validation(errors: Vec<FieldError>) -> ApiError {
        let message = match errors.as_slice() {
            [one] => format!("{}: {}", one.field, one.message),
            many => format!("{} fields are invalid", many.len()),
        };
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            message,
        )
        .with_details(json!({ "errors": errors }))
    }

    /// 500 with an opaque message; the cause is logged with its chain, never returned.
    pub fn internal(cause: &(dyn std::error::Error + 'static)) -> ApiError {
        let mut chain = cause.to_string();
        let mut source = cause.source();
        while let Some(s) = source {
            chain.push_str(": ");
            chain.push_str(&s.to_string());
            source = s.source();
        }
        error!(error = %chain, "request failed");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "internal error; the request id in x-request-id identifies it in the logs",
        )
    }
}

/// One invalid field of a request body. `index` is set for batch items.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FieldError {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError {
            index: None,
            field: field.into(),
            message: message.into(),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> ApiError {
        ApiError::internal(&e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
                details: self.details,
            },
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        for (name, value) in self.headers {
            response.headers_mut().insert(name, value);
        }
        response
    }
}

/// The error for a status that a layer (not a handler) produced with no JSON body: 405 from
/// the method router, 408/503 from the timeout, 413 from the body limit.
pub fn for_status(status: StatusCode) -> ApiError {
    let (code, message) = match status {
        StatusCode::METHOD_NOT_ALLOWED => (
            "method_not_allowed",
            "this route does not accept that method",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => ("payload_too_large", "request body is too large"),
        StatusCode::REQUEST_TIMEOUT | StatusCode::SERVICE_UNAVAILABLE => {
            ("timeout", "the request took too long and was abandoned")
        }
        StatusCode::NOT_FOUND => ("route_not_found", "no such route"),
        s if s.is_client_error() => ("bad_request", "the request was refused"),
        _ => ("internal_error", "internal error"),
    };
    ApiError::new(status, code, message)
}

/// Rewrites bodiless or plain-text error responses produced by layers into the JSON shape.
/// Responses that are already JSON or HTML (the unsubscribe and click pages) pass untouched.
pub async fn json_errors(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if content_type.starts_with("application/json") || content_type.starts_with("text/html") {
        return response;
    }
    let allow = response.headers().get(header::ALLOW).cloned();
    let mut rewritten = for_status(status).into_response();
    if let Some(allow) = allow {
        rewritten.headers_mut().insert(header::ALLOW, allow);
    }
    rewritten
}

fn bytes_rejection(r: BytesRejection) -> ApiError {
    if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
        for_status(StatusCode::PAYLOAD_TOO_LARGE)
    } else {
        ApiError::bad_request("bad_request", format!("could not read the body: {r}"))
    }
}

/// The raw body, with axum's size limit (see `api::router`) reported as JSON 413.
pub struct RawBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        Bytes::from_request(req, state)
            .await
            .map(RawBody)
            .map_err(bytes_rejection)
    }
}

/// Checks that the request says it is JSON.
pub fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json")) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "expected Content-Type: application/json, got {:?}",
                if ct.is_empty() { "nothing" } else { ct }
            ),
        ))
    }
}

/// Parses a JSON body: syntax errors are 400 `malformed_json`; a wrong type, a missing or an
/// unknown field, or a NUL character (`\u0000`) anywhere, is 422 `validation_failed` naming
/// the field's path. (PostgreSQL stores no NUL in text or jsonb: such a value would fail at
/// the insert, as a 500.)
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    // A valid body is parsed once, without path tracking (which doubles the cost of
    // parsing a template's data); a refused one is parsed again to name the field.
    if let Ok(v) = serde_json::from_slice(body)
        && !has_nul_escape(body)
    {
        return Ok(v);
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    match serde_path_to_error::deserialize(de) {
        Ok(_) if has_nul_escape(body) => {
            let field = serde_json::from_slice::<Value>(body)
                .ok()
                .and_then(|v| nul_path(&v, ""))
                .unwrap_or_else(|| "body".to_string());
            Err(ApiError::validation(vec![FieldError::new(
                field,
                "contains a NUL character (\\u0000), which cannot be stored",
            )]))
        }
        Ok(v) => Ok(v),
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            match inner.classify() {
                serde_json::error::Category::Data => {
                    let message = strip_position(&inner.to_string());
                    Err(ApiError::validation(vec![FieldError::new(
                        field_of(&path, &message),
                        message,
                    )]))
                }
                _ => Err(ApiError::bad_request(
                    "malformed_json",
                    format!("request body is not valid JSON: {inner}"),
                )),
            }
        }
    }
}

/// Whether JSON text holds the escape `\u0000` (JSON strings can carry NUL no other way).
/// Escaped backslashes are skipped, so the text `\\u0000` is not one.
fn has_nul_escape(json: &[u8]) -> bool {
    let mut i = 0;
    while i < json.len() {
        if json[i] == b'\\' {
            if json[i + 1..].starts_with(b"u0000") {
                return true;
            }
            i += 2;
        } else {
            i += 1;
        }
    }
    false
}

/// The path (`metadata.k`, `emails[2].html`) of the first key or string holding NUL.
fn nul_path(v: &Value, at: &str) -> Option<String> {
    let join = |key: &str| {
        if at.is_empty() {
            key.to_string()
        } else {
            format!("{at}.{key}")
        }
    };
    match v {
        Value::String(s) if s.contains('\0') => Some(if at.is_empty() {
            "body".to_string()
        } else {
            at.to_string()
        }),
        Value::Object(m) => m.iter().find_map(|(k, v)| {
            if k.contains('\0') {
                Some(join(k))
            } else {
                nul_path(v, &join(k))
            }
        }),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .find_map(|(i, v)| nul_path(v, &format!("{at}[{i}]"))),
        _ => None,
    }
}

/// The field a deserialization error is about: its path, or for an unknown field the
/// field's own name (serde reports it at the parent's path).
pub fn field_of(path: &str, message: &str) -> String {
    let unknown = message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(name, _)| name);
    match (path, unknown) {
        (".", Some(name)) => name.to_string(),
        // Some paths already end at the unknown key.
        (p, Some(name)) if p == name || p.ends_with(&format!(".{name}")) => p.to_string(),
        (p, Some(name)) => format!("{p}.{name}"),
        (".", None) => "body".to_string(),
        (p, None) => p.to_string(),
    }
}

/// serde_json appends " at line 1 column 42"; the field path says more.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

/// `Json<T>` with our errors: 415 for a wrong content type, 400/422 for bad bodies.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        require_json(req.headers())?;
        let RawBody(bytes) = RawBody::from_request(req, state).await?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// A percent-encoded NUL: no text column can hold it, so it is refused before any lookup.
fn has_encoded_nul(s: &str) -> bool {
    s.contains("%00")
}

/// `Query<T>` with our errors (400 `invalid_query`).
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if parts.uri.query().is_some_and(has_encoded_nul) {
            return Err(ApiError::bad_request(
                "invalid_query",
                "the query contains a NUL character (%00)",
            ));
        }
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| ApiQuery(q.0))
            .map_err(|e: QueryRejection| ApiError::bad_request("invalid_query", e.body_text()))
    }
}

/// `Path<T>` with our errors (400 `invalid_path`).
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if has_encoded_nul(parts.uri.path()) {
            return Err(ApiError::bad_request(
                "invalid_path",
                "the path contains a NUL character (%00)",
            ));
        }
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| ApiPath(p.0))
            .map_err(|e: PathRejection| ApiError::bad_request("invalid_path", e.body_text()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        to: String,
        n: Option<u8>,
    }

    #[test]
    fn syntax_errors_are_malformed_json_and_data_errors_name_the_field() {
        let e = parse_json::<Body>(b"{\"to\": ").unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (400, "malformed_json"));
        let e = parse_json::<Body>(br#"{"to": "a", "n": "x"}"#).unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (422, "validation_failed"));
        assert!(e.message.starts_with("n: "), "{}", e.message);
        let e = parse_json::<Body>(br#"{"to": "a", "bogus": 1}"#).unwrap_err();
        assert!(e.message.contains("bogus"), "{}", e.message);
    }

    #[test]
    fn content_type_must_be_json() {
        let mut h = HeaderMap::new();
        assert_eq!(require_json(&h).unwrap_err().status.as_u16(), 415);
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert_eq!(require_json(&h).unwrap_err().code, "unsupported_media_type");
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        assert!(require_json(&h).is_ok());
    }
}
