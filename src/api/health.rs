//! `/healthz` (the process answers), `/readyz` (it can do its job: database reachable,
//! migrations current, not shutting down), `/metrics` and `/openapi.json`.

use std::sync::LazyLock;
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

use super::ApiState;
use crate::db;
use tracing::warn;

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

/// How long a readiness probe waits for the database before calling it unreachable.
const READY_DB_TIMEOUT: Duration = Duration::from_secs(3);

/// What `/readyz` checked.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// `ready` or `not_ready`.
    pub status: &'static str,
    /// Each check and its result: `database` (ok, unreachable, timeout), `migrations` (ok,
    /// pending, unknown), `shutdown` (ok, shutting_down).
    #[schema(value_type = Object)]
    pub checks: serde_json::Map<String, serde_json::Value>,
    /// The checks that are not ok.
    pub failed: Vec<&'static str>,
}

/// Readiness: 200 when the database answers, every migration this binary knows is applied
/// and the process is not shutting down; 503 naming the failed checks otherwise. (A probe
/// answer, so its body is the same shape either way rather than the error shape.)
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses(
        (status = 200, description = "Ready to serve", body = Readiness),
        (status = 503, description = "Not ready; `failed` says why", body = Readiness)))]
pub async fn readyz(State(state): State<ApiState>) -> (StatusCode, axum::Json<Readiness>) {
    let pool = state.pool();
    // The pool keeps trying to connect for its own acquire timeout (longer than the
    // probe's), so a database that is down would only ever read "timeout". A direct
    // connection attempt, started when the pool is not quick, tells "down" from "slow".
    let direct = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let options = pool.connect_options();
        <sqlx::postgres::PgConnection as sqlx::Connection>::connect_with(&options).await
    };
    let database = tokio::select! {
        r = sqlx::query("SELECT 1").execute(pool) => match r {
            Ok(_) => "ok",
            Err(e) => {
                warn!(error = %e, "readiness: database unreachable");
                "unreachable"
            }
        },
        Err(e) = direct => {
            warn!(error = %e, "readiness: database unreachable");
            "unreachable"
        }
        _ = tokio::time::sleep(READY_DB_TIMEOUT) => "timeout",
    };
    let migrations = if database != "ok" {
        "unknown"
    } else {
        match db::migrations_current(pool).await {
            Ok(true) => "ok",
            Ok(false) => "pending",
            Err(e) => {
                warn!(error = %e, "readiness: cannot read applied migrations");
                "unknown"
            }
        }
    };
    let shutdown = if state.is_stopping() {
        "shutting_down"
    } else {
        "ok"
    };
    let checks = [
        ("database", database),
        ("migrations", migrations),
        ("shutdown", shutdown),
    ];
    let failed: Vec<&'static str> = checks
        .iter()
        .filter(|(_, v)| *v != "ok")
        .map(|(k, _)| *k)
        .collect();
    let status = if failed.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Readiness {
        status: if failed.is_empty() {
            "ready"
        } else {
            "not_ready"
        },
        checks: checks
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect(),
        failed,
    };
    (status, axum::Json(body))
}

/// Prometheus metrics of this process (the catalogue in `src/metrics.rs`).
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Prometheus text exposition format",
        content_type = "text/plain; version=0.0.4"),
        (status = 404, description = "Served on `http.metrics_addr` instead", body = super::error::ErrorBody)))]
pub async fn metrics(State(state): State<ApiState>) -> axum::response::Response {
    if state.settings().http.metrics_addr.is_some() {
        return super::error::ApiError::new(
            StatusCode::NOT_FOUND,
            "route_not_found",
            "no such route",
        )
        .into_response();
    }
    exposition(&state).into_response()
}

/// `/metrics` on the operations listener (`http.metrics_addr`, or `http.addr` in a process
/// without the API).
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Prometheus text exposition format",
        content_type = "text/plain; version=0.0.4")))]
pub async fn ops_metrics(State(state): State<ApiState>) -> axum::response::Response {
    exposition(&state).into_response()
}

fn exposition(state: &ApiState) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.prometheus().render(),
    )
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
