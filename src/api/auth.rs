//! Who is calling: a service token (`Authorization: Bearer adw_...`, scopes from
//! `api_tokens`) or an admin of the platform (`Authorization: Bearer <JWT>`, HS256, whose
//! `sub` must be a user that exists, is not deleted, is `ACTIVE` and `ADMIN`).
//!
//! 401 (with `WWW-Authenticate: Bearer`) when the credentials are missing, malformed,
//! unknown, revoked, expired or forged, or name no user; 403 when they are valid but may not
//! do this (a missing scope, a user who is not an admin or not active).

use std::marker::PhantomData;

use axum::extract::FromRequestParts;
use axum::http::{StatusCode, header, request::Parts};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use uuid::Uuid;

use super::ApiState;
use super::error::ApiError;
use super::tokens::{self, Scope};
use crate::config::AuthSettings;

/// The authenticated caller.
#[derive(Debug, Clone)]
pub enum Principal {
    Service {
        token_id: Uuid,
        name: String,
        scopes: Vec<Scope>,
    },
    Admin {
        user_id: Uuid,
    },
}

impl Principal {
    /// Admin users may read and administer; enqueueing is for services.
    pub fn has(&self, scope: Scope) -> bool {
        match self {
            Principal::Service { scopes, .. } => scopes.contains(&scope),
            Principal::Admin { .. } => matches!(scope, Scope::Read | Scope::Admin),
        }
    }

    /// The platform user behind the call (admins), for `created_by`.
    pub fn user_id(&self) -> Option<Uuid> {
        match self {
            Principal::Admin { user_id } => Some(*user_id),
            Principal::Service { .. } => None,
        }
    }

    /// A stable key for per-caller limits and logs.
    pub fn key(&self) -> String {
        match self {
            Principal::Service { name, .. } => format!("token:{name}"),
            Principal::Admin { user_id } => format!("user:{user_id}"),
        }
    }
}

/// Marks the scope a route needs: `Authed<Enqueue>`, `Authed<Read>`, `Authed<Admin>`.
pub trait RequiredScope: Send + Sync + 'static {
    const SCOPE: Scope;
    /// A second scope that also admits the caller.
    const OR: Option<Scope> = None;
}

pub struct Enqueue;
pub struct Read;
pub struct Admin;
/// `enqueue` or `admin` (retrying: a service its own emails, an admin any).
pub struct EnqueueOrAdmin;

impl RequiredScope for Enqueue {
    const SCOPE: Scope = Scope::Enqueue;
}
impl RequiredScope for Read {
    const SCOPE: Scope = Scope::Read;
}
impl RequiredScope for Admin {
    const SCOPE: Scope = Scope::Admin;
}
impl RequiredScope for EnqueueOrAdmin {
    const SCOPE: Scope = Scope::Admin;
    const OR: Option<Scope> = Some(Scope::Enqueue);
}

/// Extractor: the caller, authenticated and holding scope `S`.
pub struct Authed<S: RequiredScope>(pub Principal, pub PhantomData<S>);

impl<S: RequiredScope> FromRequestParts<ApiState> for Authed<S> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ApiState,
    ) -> Result<Self, Self::Rejection> {
        let principal = authenticate(parts, state).await?;
        if !principal.has(S::SCOPE) && !S::OR.is_some_and(|s| principal.has(s)) {
            let scope = S::SCOPE.as_str();
            let message = match &principal {
                Principal::Service { name, .. } => {
                    format!("token {name:?} lacks the {scope:?} scope")
                }
                Principal::Admin { .. } => {
                    format!("admin users cannot use {scope:?} routes; use a service token")
                }
            };
            return Err(
                ApiError::new(StatusCode::FORBIDDEN, "insufficient_scope", message).with_header(
                    header::WWW_AUTHENTICATE,
                    &format!(r#"Bearer realm="adopt-worker", error="insufficient_scope", scope="{scope}""#),
                ),
            );
        }
        Ok(Authed(principal, PhantomData))
    }
}

fn unauthorized(code: &'static str, message: &str) -> ApiError {
    let challenge = if code == "missing_credentials" {
        r#"Bearer realm="adopt-worker""#.to_string()
    } else {
        format!(
            r#"Bearer realm="adopt-worker", error="invalid_token", error_description="{message}""#
        )
    };
    ApiError::new(StatusCode::UNAUTHORIZED, code, message)
        .with_header(header::WWW_AUTHENTICATE, &challenge)
}

fn invalid(message: &str) -> ApiError {
    unauthorized("invalid_credentials", message)
}

async fn authenticate(parts: &Parts, state: &ApiState) -> Result<Principal, ApiError> {
    let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
        return Err(unauthorized(
            "missing_credentials",
            "send Authorization: Bearer <token>",
        ));
    };
    let value = value
        .to_str()
        .map_err(|_| invalid("the Authorization header is not ASCII"))?;
    let credential = match value.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        _ => return Err(invalid("the Authorization header must be: Bearer <token>")),
    };
    if credential.starts_with(tokens::TOKEN_PREFIX) {
        return service_token(state, credential).await;
    }
    if credential.split('.').count() == 3 {
        return admin_jwt(state, credential).await;
    }
    Err(invalid(
        "the bearer credential is neither a service token nor a JWT",
    ))
}

async fn service_token(state: &ApiState, credential: &str) -> Result<Principal, ApiError> {
    if !tokens::looks_like_token(credential) {
        return Err(invalid("malformed service token"));
    }
    match tokens::find(state.pool(), credential).await? {
        None => Err(invalid("unknown service token")),
        Some(t) if t.revoked => Err(invalid("this service token has been revoked")),
        Some(t) => Ok(Principal::Service {
            token_id: t.token_id,
            name: t.name,
            scopes: t.scopes,
        }),
    }
}

/// The HS256 key and rules for the platform's admin JWTs (None when disabled).
#[derive(Clone)]
pub struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
    max_lifetime_secs: i64,
}

impl JwtVerifier {
    pub fn from_settings(auth: &AuthSettings) -> Option<JwtVerifier> {
        if auth.jwt_secret.is_empty() {
            return None;
        }
        // Only HS256: a token naming another algorithm (none, RS256 with our secret as a
        // "public key") is refused by the library before any signature check.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = auth.jwt_leeway_secs;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        // jsonwebtoken checks `iss`/`aud` only when present: a configured claim must also be
        // required, or a token that simply leaves it out passes.
        let mut required = vec!["exp", "sub"];
        if !auth.jwt_issuer.is_empty() {
            required.push("iss");
        }
        if !auth.jwt_audience.is_empty() {
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        if auth.jwt_issuer.is_empty() {
            validation.iss = None;
        } else {
            validation.set_issuer(&[auth.jwt_issuer.as_str()]);
        }
        if auth.jwt_audience.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&[auth.jwt_audience.as_str()]);
        }
        Some(JwtVerifier {
            key: DecodingKey::from_secret(auth.jwt_secret.as_bytes()),
            validation,
            max_lifetime_secs: i64::try_from(auth.jwt_max_lifetime_secs).unwrap_or(i64::MAX),
        })
    }

    /// A stolen long-lived token is a long-lived admin: refuse lifetimes past the limit,
    /// counted from `iat` when the token has one, else from now.
    fn check_lifetime(&self, claims: &Claims, now: i64) -> Result<(), String> {
        let from = claims.iat.unwrap_or(now);
        let lifetime = claims.exp.saturating_sub(from);
        if lifetime > self.max_lifetime_secs {
            return Err(format!(
                "the JWT lives {lifetime} s, more than the {} s allowed (auth.jwt_max_lifetime_secs)",
                self.max_lifetime_secs
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    exp: i64,
    iat: Option<i64>,
}

async fn admin_jwt(state: &ApiState, credential: &str) -> Result<Principal, ApiError> {
    let Some(verifier) = state.jwt() else {
        return Err(invalid("JWT authentication is not enabled on this server"));
    };
    let claims = jsonwebtoken::decode::<Claims>(credential, &verifier.key, &verifier.validation)
        .map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                unauthorized("expired_credentials", "the JWT has expired")
            }
            jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                invalid("the JWT signature is not valid")
            }
            jsonwebtoken::errors::ErrorKind::ImmatureSignature => {
                invalid("the JWT is not valid yet (nbf)")
            }
            jsonwebtoken::errors::ErrorKind::MissingRequiredClaim(claim) => {
                invalid(&format!("the JWT lacks the required {claim:?} claim"))
            }
            _ => invalid(&format!("the JWT is not valid: {e}")),
        })?
        .claims;
    verifier
        .check_lifetime(&claims, chrono::Utc::now().timestamp())
        .map_err(|m| invalid(&m))?;
    let user_id =
        Uuid::parse_str(&claims.sub).map_err(|_| invalid("the JWT subject is not a user id"))?;
    let user: Option<(String, String, bool)> = sqlx::query_as(
        "SELECT user_type::text, status::text, deleted_at IS NOT NULL FROM users WHERE user_id = $1",
    )
    .bind(user_id)
    .fetch_optional(state.pool())
    .await?;
    match user {
        None | Some((_, _, true)) => Err(invalid("the JWT names no current user")),
        Some((kind, _, _)) if kind != "ADMIN" => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "not_admin",
            "this route is for platform admins",
        )),
        Some((_, status, _)) if status != "ACTIVE" => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "account_inactive",
            format!("the admin account is {}", status.to_ascii_lowercase()),
        )),
        Some(_) => Ok(Principal::Admin { user_id }),
    }
}
