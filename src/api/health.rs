//! `/healthz` (the process answers), `/readyz` (it can do its job: database reachable,
//! migrations current, not shutting down) and `/openapi.json`.

use std::sync::LazyLock;
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

use super::ApiState;
use super::error::{ApiError, ErrorBody};
use crate::db;

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    pub status: &'static str,
}

/// Liveness: 200 while the process serves HTTP. Touches nothing else.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "The process is up", body = Health)))]
pub async fn healthz() -> axum::Json<Health> {
    axum::Json(Health { status: "ok" })
}

/// Readiness: 200 when the database answers within 2 s, every migration this binary knows is
/// applied, and the process is not shutting down; 503 `not_ready` otherwise.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses(
        (status = 200, description = "Ready to serve", body = Health),
        (status = 503, description = "Not ready; details say why", body = ErrorBody)))]
pub async fn readyz(State(state): State<ApiState>) -> Result<axum::Json<Health>, ApiError> {
    let stopping = state.is_stopping();
    let migrations =
        tokio::time::timeout(Duration::from_secs(2), db::migrations_current(state.pool())).await;
    let (database, current) = match migrations {
        Ok(Ok(current)) => ("ok", current),
        Ok(Err(_)) => ("unreachable", false),
        Err(_) => ("timeout", false),
    };
    if stopping || database != "ok" || !current {
        let message = if stopping {
            "shutting down"
        } else if database != "ok" {
            "database not reachable"
        } else {
            "migrations are not current; run `adopt-worker migrate`"
        };
        return Err(
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", message).with_details(
                json!({"database": database, "migrations_current": current, "shutting_down": stopping}),
            ),
        );
    }
    Ok(axum::Json(Health { status: "ready" }))
}

static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
    serde_json::to_string_pretty(&super::openapi()).unwrap_or_else(|_| "{}".to_string())
});

/// This API's OpenAPI 3.1 document, generated from the code.
#[utoipa::path(get, path = "/openapi.json", tag = "health",
    responses((status = 200, description = "OpenAPI document", content_type = "application/json")))]
pub async fn openapi_json() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        DOCUMENT.as_str(),
    )
}
