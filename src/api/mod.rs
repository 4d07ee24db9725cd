//! The HTTP API (docs/api.md "HTTP API"): enqueue, read, retry, templates for admins, open
//! pixel and click redirect, unsubscribe, relay webhooks, health and the OpenAPI document.
//!
//! [`routes`] is the single list of routes: each goes in through utoipa-axum's `routes!`,
//! which registers the handler with axum and its `#[utoipa::path]` in the OpenAPI document
//! at once, so the document cannot miss a route (a test also checks every documented path
//! answers, and that no route is added any other way).

pub mod auth;
pub mod emails;
pub mod error;
pub mod health;
pub mod idempotency;
pub mod ratelimit;
pub mod security;
pub mod server;
pub mod templates;
pub mod tokens;
pub mod tracking;
pub mod unsubscribe;
pub mod webhooks;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::StatusCode;
use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use tracing::info_span;
use utoipa::OpenApi;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

use crate::config::Settings;
use crate::templates::Templates;
use auth::JwtVerifier;
use error::ApiError;

/// Largest request body, except the batch enqueue.
pub const BODY_LIMIT: usize = 1024 * 1024;
/// Largest batch enqueue body, and largest message posted to `/v1/webhooks/dsn`.
pub const BATCH_BODY_LIMIT: usize = 5 * 1024 * 1024;
/// A request still running after this is abandoned with 503 `timeout`.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What handlers share. Cheap to clone.
#[derive(Clone)]
pub struct ApiState(Arc<Inner>);

struct Inner {
    pool: PgPool,
    templates: Templates,
    prometheus: PrometheusHandle,
    settings: Settings,
    stopping: watch::Receiver<bool>,
    jwt: Option<JwtVerifier>,
    public_limiter: Option<ratelimit::PublicLimiter>,
    sns: Arc<webhooks::sns::SnsVerifier>,
    /// Unix seconds of the last sweep of expired idempotency keys and webhook signatures.
    last_sweep: AtomicI64,
}

impl ApiState {
    /// `stopping` turns true when the process begins to shut down (readiness then fails);
    /// `prometheus` renders `/metrics`.
    pub fn new(
        settings: &Settings,
        pool: PgPool,
        stopping: watch::Receiver<bool>,
        prometheus: PrometheusHandle,
    ) -> ApiState {
        let sns = Arc::new(webhooks::sns::SnsVerifier::https());
        ApiState::with_sns(settings, pool, stopping, prometheus, sns)
    }

    /// [`ApiState::new`] with the SNS verifier given: its certificate cache is shared by
    /// every state made with it, and tests give one that serves their own certificate.
    pub fn with_sns(
        settings: &Settings,
        pool: PgPool,
        stopping: watch::Receiver<bool>,
        prometheus: PrometheusHandle,
        sns: Arc<webhooks::sns::SnsVerifier>,
    ) -> ApiState {
        ApiState(Arc::new(Inner {
            sns,
            // A handle of its own: renders that only validate must not count as template
            // usage (the worker's handle counts what is sent), and never track (no tracker,
            // so no second warning about a missing tracking secret either).
            templates: Templates::with_tracker(pool.clone(), settings, None),
            pool,
            prometheus,
            jwt: JwtVerifier::from_settings(&settings.auth),
            settings: settings.clone(),
            stopping,
            public_limiter: ratelimit::PublicLimiter::new(settings.http.public_rate_per_minute),
            last_sweep: AtomicI64::new(0),
        }))
    }

    pub fn pool(&self) -> &PgPool {
        &self.0.pool
    }

    pub fn templates(&self) -> &Templates {
        &self.0.templates
    }

    pub fn prometheus(&self) -> &PrometheusHandle {
        &self.0.prometheus
    }

    pub fn settings(&self) -> &Settings {
        &self.0.settings
    }

    pub(crate) fn sns(&self) -> &webhooks::sns::SnsVerifier {
        &self.0.sns
    }

    pub(crate) fn jwt(&self) -> Option<&JwtVerifier> {
        self.0.jwt.as_ref()
    }

    pub fn is_stopping(&self) -> bool {
        *self.0.stopping.borrow()
    }

    pub(crate) fn public_limiter(&self) -> Option<&ratelimit::PublicLimiter> {
        self.0.public_limiter.as_ref()
    }

    /// Deletes what has expired in the API's tables that only grow on their own
    /// (idempotency keys, webhook signatures seen, rate-limit windows): at most every ten
    /// minutes per process, off the request path, after requests that write them.
    pub(crate) fn sweep_expired(&self) {
        if !self.sweep_due(Duration::from_secs(600)) {
            return;
        }
        let pool = self.pool().clone();
        let tolerance = self.settings().auth.webhook_tolerance_secs;
        tokio::spawn(async move {
            if let Err(e) = idempotency::sweep(&pool).await {
                tracing::warn!(error = %e, "could not delete expired idempotency keys");
            }
            if let Err(e) = webhooks::sweep_seen(&pool, tolerance).await {
                tracing::warn!(error = %e, "could not delete old webhook signatures");
            }
            if let Err(e) = ratelimit::sweep(&pool).await {
                tracing::warn!(error = %e, "could not delete past rate-limit windows");
            }
        });
    }

    /// True at most once per `every` across this process: gates opportunistic cleanups.
    fn sweep_due(&self, every: Duration) -> bool {
        let now = chrono::Utc::now().timestamp();
        let last = self.0.last_sweep.load(Ordering::Relaxed);
        now - last >= every.as_secs() as i64
            && self
                .0
                .last_sweep
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "adopt-worker",
        description = "Email delivery API of the Adopt Don't Shop platform. Errors are always \
            `{\"error\": {\"code\", \"message\", \"details\"?}}`; see docs/api.md \"HTTP API\" in the repository for the codes. \
            No string of a request may hold NUL (U+0000): PostgreSQL cannot store it, so it is \
            refused, in a body with 422 naming the field, in a query or path with 400."
    ),
    modifiers(&SecuritySchemes),
    components(schemas(error::ErrorBody, error::ErrorDetail, error::FieldError))
)]
struct ApiDoc;

struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A service token (`adw_...`, scopes enqueue/read/admin) or a platform \
                         admin's HS256 JWT.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "sendgrid_signature",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Twilio-Email-Event-Webhook-Signature",
                "base64 DER ECDSA P-256 SHA-256 signature of \"{X-Twilio-Email-Event-Webhook-Timestamp}{raw body}\", verified with auth.sendgrid_public_key",
            ))),
        );
        components.add_security_scheme(
            "postmark_basic",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Basic)
                    .description(Some(
                        "auth.postmark_username and auth.postmark_password, as written in the \
                         Postmark webhook URL",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "webhook_signature",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Adopt-Signature",
                "sha256=<hex HMAC-SHA256 of \"{X-Adopt-Timestamp}.{raw body}\">",
            ))),
        );
    }
}

/// Every route of the API, each registered together with its OpenAPI description.
pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(health::metrics))
        .routes(routes!(health::openapi_json))
        .routes(routes!(emails::enqueue_one, emails::list_emails))
        .routes(routes!(emails::enqueue_batch).layer(DefaultBodyLimit::max(BATCH_BODY_LIMIT)))
        .routes(routes!(emails::get_email))
        .routes(routes!(emails::retry_email))
        .routes(routes!(templates::list))
        .routes(routes!(templates::describe))
        .routes(routes!(templates::preview, templates::preview_with_data))
        .routes(routes!(templates::test_send))
        .routes(routes!(tracking::open_pixel))
        .routes(routes!(tracking::click))
        .routes(routes!(unsubscribe::page, unsubscribe::unsubscribe))
        .routes(routes!(webhooks::events))
        .routes(routes!(webhooks::dsn).layer(DefaultBodyLimit::max(BATCH_BODY_LIMIT)))
        .routes(routes!(webhooks::ses::ses))
        .routes(routes!(webhooks::sendgrid::sendgrid))
        .routes(routes!(webhooks::postmark::postmark))
        .routes(routes!(webhooks::mailgun::mailgun))
}

/// The OpenAPI document, generated from [`routes`].
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes().into_openapi()
}

/// The whole HTTP application: routes, JSON 404/405/413/timeout errors, body limits, a
/// per-request timeout, request ids (`x-request-id`, generated when absent, echoed back and
/// recorded on the request's log span), and HTTP metrics per route pattern.
pub fn router(state: ApiState) -> Router {
    let (router, _) = routes().split_for_parts();
    router
        .fallback(fallback)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            ratelimit::limit_public,
        ))
        .with_state(state)
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(TraceLayer::new_for_http().make_span_with(request_span))
                .layer(PropagateRequestIdLayer::x_request_id())
                .layer(axum::middleware::from_fn(crate::metrics::track_http))
                .layer(axum::middleware::map_response(error::json_errors))
                .layer(axum::middleware::map_response(security::security_headers))
                .layer(TimeoutLayer::with_status_code(
                    StatusCode::SERVICE_UNAVAILABLE,
                    REQUEST_TIMEOUT,
                )),
        )
}

/// The outer log span of a request: its id. (`metrics::track_http` adds the route pattern,
/// never the path: paths carry unsubscribe and tracking tokens, which do not belong in logs.)
fn request_span(req: &Request) -> tracing::Span {
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    info_span!("request", request_id)
}

async fn fallback() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "route_not_found", "no such route")
}

/// The operations listener's routes: `/metrics`, `/readyz`, `/healthz`, nothing else.
pub fn ops_router(state: ApiState) -> Router {
    let (router, _) = OpenApiRouter::<ApiState>::new()
        .routes(routes!(health::ops_metrics))
        .routes(routes!(health::readyz))
        .routes(routes!(health::healthz))
        .split_for_parts();
    router
        .fallback(fallback)
        .with_state(state)
        .layer(axum::middleware::map_response(error::json_errors))
}

/// Serves [`ops_router`] on `listener` until `stop` turns true, bounded like the API.
pub async fn serve_ops(
    listener: TcpListener,
    state: ApiState,
    stopping: watch::Receiver<bool>,
    stop: watch::Receiver<bool>,
) {
    let settings = state.settings();
    let limits = server::Limits::new(&settings.http, settings.worker.shutdown_grace());
    server::serve(listener, ops_router(state), limits, stopping, stop).await;
}

/// Serves the API on `listener` (bounded as [`server`] describes) until `stop` turns true;
/// `stopping` turning true starts the shutdown grace period.
pub async fn serve(
    listener: TcpListener,
    state: ApiState,
    stopping: watch::Receiver<bool>,
    stop: watch::Receiver<bool>,
) {
    let settings = state.settings();
    let limits = server::Limits::new(&settings.http, settings.worker.shutdown_grace());
    server::serve(listener, router(state), limits, stopping, stop).await;
}
