//! Typed, layered settings: the embedded `config/default.toml` < an optional file <
//! `ADOPT__SECTION__KEY` env vars < `DATABASE_URL` / `SMTP_URL` / `HTTP_ADDR`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Format, Toml};
use serde::Deserialize;

pub(crate) mod dkim;
mod jobs;
mod retry;
mod verp;
pub use dkim::{DkimKeySettings, DkimSettings};
pub use jobs::{JobName, JobSchedule, JobSettings};
pub(crate) use retry::MAX_SECS;
pub use retry::{MIN_HINT, RetryPolicy};
pub use verp::ReturnPath;

pub use crate::db::{DatabaseSettings, redact_url};

/// The defaults, compiled in so the binary runs with no file at all.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {0} does not exist")]
    MissingFile(PathBuf),
    #[error("invalid configuration: {0}")]
    Parse(String),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub app: AppSettings,
    pub database: DatabaseSettings,
    pub smtp: SmtpSettings,
    pub outbox: OutboxSettings,
    pub worker: WorkerSettings,
    pub retry: RetryPolicy,
    pub bounce: BounceSettings,
    pub http: HttpSettings,
    pub api: ApiSettings,
    pub log: LogSettings,
    pub auth: AuthSettings,
    pub jobs: JobSettings,
    pub metrics: MetricsSettings,
    pub templates: TemplateSettings,
    pub tracking: TrackingSettings,
    pub dkim: DkimSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppSettings {
    pub name: String,
    pub base_url: String,
    pub support_email: String,
    pub from_email: String,
    pub from_name: String,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpSettings {
    pub url: String,
    pub timeout_secs: u64,
    pub pool_size: u32,
    pub helo_name: String,
    pub provider_id: String,
    /// A PEM file of extra CA certificates trusted for the relay; empty: none. See
    /// [`SmtpSettings::ca_file`].
    pub ca_file: String,
}

impl std::fmt::Debug for SmtpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpSettings")
            .field("url", &redact_url(&self.url))
            .field("timeout_secs", &self.timeout_secs)
            .field("pool_size", &self.pool_size)
            .field("helo_name", &self.helo_name)
            .field("provider_id", &self.provider_id)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

impl SmtpSettings {
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }

    /// `smtp.ca_file`, unless empty: CA certificates trusted for the relay on top of the
    /// bundled and system roots (read and checked by `Transport::from_settings`).
    pub fn ca_file(&self) -> Option<&Path> {
        let path = self.ca_file.trim();
        (!path.is_empty()).then(|| Path::new(path))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxSettings {
    pub dir: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSettings {
    pub batch_size: u32,
    pub concurrency: u32,
    pub poll_interval_ms: u64,
    pub lease_secs: u64,
    pub shutdown_grace_secs: u64,
    pub rate_limit_per_sec: u32,
}

impl WorkerSettings {
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }
    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.lease_secs)
    }
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BounceSettings {
    pub soft_bounce_threshold: i32,
    /// VERP envelope sender template (`bounces+{email_id}@bounces.example.org`); empty:
    /// the envelope sender is the From address. See [`BounceSettings::return_path`].
    pub return_path: String,
}

impl BounceSettings {
    /// `bounce.return_path`, checked at load: `None` when empty.
    pub fn return_path(&self) -> Option<ReturnPath> {
        ReturnPath::parse(&self.return_path).ok().flatten()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    pub addr: SocketAddr,
    pub public_url: String,
    /// Connections served at once; further clients wait in the kernel's backlog.
    pub max_connections: usize,
    /// A client must send a request's headers within this, seconds.
    pub header_read_timeout_secs: u64,
    /// An idle connection (keep-alive, or a client that stopped reading or writing) is
    /// closed after this, seconds.
    pub idle_timeout_secs: u64,
    /// Requests per minute to the public `/u/` and `/t/` routes per client address; 0: off.
    pub public_rate_per_minute: u32,
    /// A separate (typically private) address for `/metrics`, `/readyz` and `/healthz`;
    /// `None` (empty): they are served on `addr`. A process without the API serves them
    /// here, or on `addr` when this is empty.
    #[serde(default, deserialize_with = "empty_as_none")]
    pub metrics_addr: Option<SocketAddr>,
}

/// An address, or `None` for an empty value.
fn empty_as_none<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let text = String::deserialize(d)?;
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|e| {
        serde::de::Error::custom(format!(
            "{text:?} is not an address like 127.0.0.1:9090: {e}"
        ))
    })
}

impl HttpSettings {
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_secs(self.header_read_timeout_secs)
    }
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }
}

fn yes() -> bool {
    true
}

/// `http.public_url` as config/default.toml sets it.
pub fn default_public_url() -> String {
    Figment::from(Toml::string(DEFAULT_TOML))
        .extract_inner::<String>("http.public_url")
        .unwrap_or_default()
}

/// A list of names: a TOML array in a file, or `a,b,c` from the environment.
fn list_or_commas<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        List(Vec<String>),
        Text(String),
    }
    Ok(match Either::deserialize(d)? {
        Either::List(items) => items,
        Either::Text(text) => text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
    })
}

/// `[api]`: what the enqueue API accepts from service tokens.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSettings {
    /// Domains an enqueue's `from` may use (`*.domain` for subdomains). Empty in the file
    /// means the domain of `app.from_email`; filled in at load.
    #[serde(deserialize_with = "list_or_commas")]
    pub allowed_sender_domains: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: String,
    /// Delivery log lines name the whole recipient address, not only its domain.
    #[serde(default)]
    pub recipient_addresses: bool,
}

/// HTTP API credentials other than service tokens (those live in `api_tokens`).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// HS256 secret of the platform's admin JWTs; empty disables JWT auth.
    pub jwt_secret: String,
    /// Required `iss` claim; empty means not checked.
    pub jwt_issuer: String,
    /// Required `aud` claim; empty means not checked.
    pub jwt_audience: String,
    /// Clock skew allowed on `exp` and `nbf`, seconds.
    pub jwt_leeway_secs: u64,
    /// Longest accepted JWT lifetime (`exp - iat`, or `exp - now` without `iat`), seconds.
    pub jwt_max_lifetime_secs: u64,
    /// HMAC-SHA256 secret shared with the mail relay; empty disables the webhook.
    pub webhook_secret: String,
    /// How far a webhook's timestamp may be from now, seconds.
    pub webhook_tolerance_secs: u64,
    /// Template test sends each admin may make per minute.
    pub test_sends_per_minute: u32,
    /// SNS topics whose SES notifications `POST /v1/webhooks/ses` accepts; empty disables it.
    #[serde(deserialize_with = "list_or_commas")]
    pub ses_topic_arns: Vec<String>,
    /// Confirm an SNS subscription to one of those topics by fetching its SubscribeURL.
    pub ses_auto_confirm: bool,
    /// SendGrid's Event Webhook verification key; None (empty) disables the route.
    #[serde(deserialize_with = "p256_public_key")]
    pub sendgrid_public_key: Option<P256PublicKey>,
    /// Basic-auth user name of the Postmark webhooks.
    pub postmark_username: String,
    /// Basic-auth password of the Postmark webhooks; empty disables the route.
    pub postmark_password: String,
    /// Mailgun's HTTP webhook signing key; empty disables the route.
    pub mailgun_signing_key: String,
}

/// An ECDSA P-256 public key, configured as base64 of its DER SubjectPublicKeyInfo (as
/// SendGrid shows its verification key). Holds the uncompressed point, as `ring` takes it.
#[derive(Clone, PartialEq, Eq)]
pub struct P256PublicKey(Vec<u8>);

impl P256PublicKey {
    /// id-ecPublicKey and prime256v1 (RFC 5480).
    const EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
    const PRIME256V1: &str = "1.2.840.10045.3.1.7";

    pub fn parse(base64_der: &str) -> Result<P256PublicKey, String> {
        use base64::Engine;
        use x509_parser::prelude::FromDer;
        let compact: String = base64_der.split_whitespace().collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(compact.as_bytes())
            .map_err(|e| format!("not base64: {e}"))?;
        let (rest, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(&der)
            .map_err(|e| format!("not a DER SubjectPublicKeyInfo: {e}"))?;
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .map(|o| o.to_id_string());
        let point = spki.subject_public_key.data.to_vec();
        if !rest.is_empty()
            || spki.algorithm.algorithm.to_id_string() != Self::EC_PUBLIC_KEY
            || curve.as_deref() != Some(Self::PRIME256V1)
            || point.len() != 65
            || point[0] != 4
        {
            return Err("not an uncompressed ECDSA P-256 public key".into());
        }
        Ok(P256PublicKey(point))
    }

    /// The uncompressed point (65 bytes, `04 || x || y`).
    pub fn point(&self) -> &[u8] {
        &self.0
    }
}

fn p256_public_key<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<P256PublicKey>, D::Error> {
    let text = String::deserialize(d)?;
    if text.trim().is_empty() {
        return Ok(None);
    }
    P256PublicKey::parse(&text)
        .map(Some)
        .map_err(|e| serde::de::Error::custom(format!("auth.sendgrid_public_key: {e}")))
}

impl std::fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = |s: &str| if s.is_empty() { "<empty>" } else { "***" };
        f.debug_struct("AuthSettings")
            .field("jwt_secret", &set(&self.jwt_secret))
            .field("jwt_issuer", &self.jwt_issuer)
            .field("jwt_audience", &self.jwt_audience)
            .field("jwt_leeway_secs", &self.jwt_leeway_secs)
            .field("jwt_max_lifetime_secs", &self.jwt_max_lifetime_secs)
            .field("webhook_secret", &set(&self.webhook_secret))
            .field("webhook_tolerance_secs", &self.webhook_tolerance_secs)
            .field("test_sends_per_minute", &self.test_sends_per_minute)
            .field("ses_topic_arns", &self.ses_topic_arns)
            .field("ses_auto_confirm", &self.ses_auto_confirm)
            .field(
                "sendgrid_public_key",
                &if self.sendgrid_public_key.is_some() {
                    "set"
                } else {
                    "<empty>"
                },
            )
            .field("postmark_username", &set(&self.postmark_username))
            .field("postmark_password", &set(&self.postmark_password))
            .field("mailgun_signing_key", &set(&self.mailgun_signing_key))
            .finish()
    }
}

impl AuthSettings {
    /// Shortest accepted provider secret (Postmark password, Mailgun signing key).
    const MIN_PROVIDER_SECRET: usize = 16;

    fn validate_providers(&self) -> Result<(), String> {
        for arn in &self.ses_topic_arns {
            // arn:partition:sns:region:account:topic
            let parts: Vec<&str> = arn.split(':').collect();
            if parts.len() != 6
                || parts[0] != "arn"
                || !parts[1].starts_with("aws")
                || parts[2] != "sns"
                || parts.iter().any(|p| p.is_empty())
            {
                return Err(format!(
                    "auth.ses_topic_arns: {arn:?} is not an SNS topic ARN (arn:aws:sns:REGION:ACCOUNT:TOPIC)"
                ));
            }
        }
        if self.postmark_username.is_empty() != self.postmark_password.is_empty() {
            return Err(
                "auth.postmark_username and auth.postmark_password are set together, or both left empty"
                    .into(),
            );
        }
        if self.postmark_username.contains(':') {
            return Err("auth.postmark_username cannot hold ':' (HTTP basic auth)".into());
        }
        for (key, value) in [
            ("auth.postmark_password", &self.postmark_password),
            ("auth.mailgun_signing_key", &self.mailgun_signing_key),
        ] {
            if !value.is_empty() && value.len() < Self::MIN_PROVIDER_SECRET {
                return Err(format!(
                    "{key} must be at least {} bytes, or empty to disable its webhook",
                    Self::MIN_PROVIDER_SECRET
                ));
            }
        }
        Ok(())
    }
}

/// `/metrics`: how often the database-backed gauges are sampled.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSettings {
    pub sample_interval_secs: u64,
}

impl MetricsSettings {
    pub fn sample_interval(&self) -> Duration {
        Duration::from_secs(self.sample_interval_secs)
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

impl Settings {
    /// Loads every layer. `file` is the `--config` / `ADOPT_CONFIG` path, if any.
    pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
        Self::load_from(file, std::env::vars())
    }

    /// Like [`Settings::load`], with the environment given explicitly (tests).
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, ConfigError> {
        let env: Vec<(String, String)> = env.into_iter().collect();
        let mut figment = Figment::from(Toml::string(DEFAULT_TOML));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::MissingFile(path.to_path_buf()));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        // Built by hand rather than with figment's Env provider so tests can pass an
        // environment without touching the process-global one.
        let mut nested = figment::value::Dict::new();
        for (key, value) in &env {
            if let Some(rest) = key.strip_prefix("ADOPT__") {
                let path = rest.to_ascii_lowercase().replace("__", ".");
                nested.insert(path, figment::value::Value::from(value.clone()));
            }
        }
        for (name, path) in [
            ("DATABASE_URL", "database.url"),
            ("SMTP_URL", "smtp.url"),
            ("HTTP_ADDR", "http.addr"),
        ] {
            if let Some((_, value)) = env.iter().find(|(k, _)| k == name) {
                nested.insert(path.to_string(), figment::value::Value::from(value.clone()));
            }
        }
        let defaults = Figment::from(Toml::string(DEFAULT_TOML));
        for (path, value) in nested {
            // A key whose default is text takes any value as text (`provider_id = 123`,
            // `from_name = true`); secrets stay strings whatever they look like.
            let text = path.ends_with("secret")
                || matches!(
                    defaults.find_value(&path),
                    Ok(figment::value::Value::String(..))
                );
            let value = if text { value } else { parse_env_value(value) };
            figment = figment.merge((path.as_str(), value));
        }
        let mut settings: Settings = figment
            .extract()
            .map_err(|e| ConfigError::Parse(e.to_string()))?;
        settings.validate()?;
        settings.fill_derived_defaults();
        Ok(settings)
    }

    /// Lists whose default depends on other keys: `tracking.redirect_hosts` (the hosts of
    /// `app.base_url` and `http.public_url`) and `api.allowed_sender_domains` (the domain of
    /// `app.from_email`).
    fn fill_derived_defaults(&mut self) {
        if self.tracking.redirect_hosts.is_empty() {
            let host = |u: &str| {
                url::Url::parse(u)
                    .ok()
                    .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
            };
            let mut hosts: Vec<String> = [&self.app.base_url, &self.http.public_url]
                .into_iter()
                .filter_map(|u| host(u))
                .collect();
            hosts.dedup();
            self.tracking.redirect_hosts = hosts;
        }
        if self.api.allowed_sender_domains.is_empty()
            && let Some((_, domain)) = self.app.from_email.rsplit_once('@')
        {
            self.api.allowed_sender_domains = vec![domain.to_ascii_lowercase()];
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let w = &self.worker;
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if let Err(problem) = check_log_level(&self.log.level) {
            return invalid(problem);
        }
        if w.batch_size == 0 || w.concurrency == 0 {
            return invalid("worker.batch_size and worker.concurrency must be at least 1".into());
        }
        if w.poll_interval_ms == 0 {
            return invalid("worker.poll_interval_ms must be at least 1".into());
        }
        if w.lease_secs <= self.smtp.timeout_secs {
            return invalid(format!(
                "worker.lease_secs ({}) must exceed smtp.timeout_secs ({}), or live sends would be taken over",
                w.lease_secs, self.smtp.timeout_secs
            ));
        }
        if self.database.max_connections < 2 {
            return invalid("database.max_connections must be at least 2".into());
        }
        if self.smtp.pool_size == 0 {
            return invalid("smtp.pool_size must be at least 1".into());
        }
        if self.metrics.sample_interval_secs == 0 {
            return invalid("metrics.sample_interval_secs must be at least 1".into());
        }
        if self.bounce.soft_bounce_threshold < 1 {
            return invalid("bounce.soft_bounce_threshold must be at least 1".into());
        }
        ReturnPath::parse(&self.bounce.return_path).map_err(ConfigError::Invalid)?;
        self.retry.validate().map_err(ConfigError::Invalid)?;
        let a = &self.auth;
        if !a.jwt_secret.is_empty() && a.jwt_secret.len() < 32 {
            return invalid(
                "auth.jwt_secret must be at least 32 bytes (HS256 needs a 256-bit key), or empty to disable JWT auth"
                    .into(),
            );
        }
        if !a.webhook_secret.is_empty() && a.webhook_secret.len() < 16 {
            return invalid(
                "auth.webhook_secret must be at least 16 bytes, or empty to disable the webhook"
                    .into(),
            );
        }
        a.validate_providers().map_err(ConfigError::Invalid)?;
        if a.jwt_max_lifetime_secs == 0 {
            return invalid("auth.jwt_max_lifetime_secs must be at least 1".into());
        }
        if a.webhook_tolerance_secs == 0 || a.test_sends_per_minute == 0 {
            return invalid(
                "auth.webhook_tolerance_secs and auth.test_sends_per_minute must be at least 1"
                    .into(),
            );
        }
        self.jobs
            .validate(self.worker.lease())
            .map_err(ConfigError::Invalid)?;
        if url::Url::parse(&self.app.base_url).is_err() {
            return invalid(format!(
                "app.base_url is not a URL: {:?}",
                self.app.base_url
            ));
        }
        if url::Url::parse(&self.http.public_url).is_err() {
            return invalid(format!(
                "http.public_url is not a URL: {:?}",
                self.http.public_url
            ));
        }
        self.templates.validate().map_err(ConfigError::Invalid)?;
        self.tracking.validate().map_err(ConfigError::Invalid)?;
        self.dkim.validate().map_err(ConfigError::Invalid)?;
        self.validate_http()?;
        for d in &self.api.allowed_sender_domains {
            if !valid_host_entry(d) {
                return invalid(format!(
                    "api.allowed_sender_domains: {d:?} is not a domain (or *.domain)"
                ));
            }
        }
        Ok(())
    }

    fn validate_http(&self) -> Result<(), ConfigError> {
        let h = &self.http;
        for (key, value) in [
            ("http.max_connections", h.max_connections as u64),
            ("http.header_read_timeout_secs", h.header_read_timeout_secs),
            ("http.idle_timeout_secs", h.idle_timeout_secs),
        ] {
            if value == 0 {
                return Err(ConfigError::Invalid(format!("{key} must be at least 1")));
            }
        }
        Ok(())
    }
}

/// `[templates]`: where the sources live (check/sync) and how rendering is bounded and cached.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateSettings {
    pub dir: PathBuf,
    pub default_locale: String,
    pub lookup_ttl_ms: u64,
    pub max_data_bytes: usize,
    /// Largest template source file `templates check`/`sync` accept.
    #[serde(default = "default_max_source_bytes")]
    pub max_source_bytes: usize,
    pub usage_flush_ms: u64,
    /// The API refuses `data` keys a template does not declare.
    #[serde(default = "yes")]
    pub strict_data: bool,
}

/// Whether `entry` is a valid `tracking.redirect_hosts` entry: a host name (or IP address),
/// optionally prefixed by `*.`.
pub fn valid_host_entry(entry: &str) -> bool {
    let host = entry.strip_prefix("*.").unwrap_or(entry);
    !host.is_empty()
        && !host.contains('*')
        && url::Host::parse(host).is_ok()
        && url::Url::parse(&format!("http://{host}/"))
            .is_ok_and(|u| u.host_str().is_some_and(|h| h.eq_ignore_ascii_case(host)))
}

/// `templates.max_source_bytes` when the file does not set it.
pub const DEFAULT_MAX_SOURCE_BYTES: usize = 256 * 1024;

fn default_max_source_bytes() -> usize {
    DEFAULT_MAX_SOURCE_BYTES
}

impl TemplateSettings {
    pub fn lookup_ttl(&self) -> Duration {
        Duration::from_millis(self.lookup_ttl_ms)
    }
    pub fn usage_flush_interval(&self) -> Duration {
        Duration::from_millis(self.usage_flush_ms.max(100))
    }
    fn validate(&self) -> Result<(), String> {
        let l = &self.default_locale;
        if l.is_empty()
            || l.len() > 10
            || !l
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(format!(
                "templates.default_locale is not a locale such as en-US: {l:?}"
            ));
        }
        if self.max_data_bytes == 0 || self.max_source_bytes == 0 {
            return Err(
                "templates.max_data_bytes and templates.max_source_bytes must be at least 1".into(),
            );
        }
        Ok(())
    }
}

/// `[tracking]`: open/click tracking. The secret never appears in logs or `Debug` output.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackingSettings {
    pub enabled: bool,
    pub types: Vec<crate::queue::EmailType>,
    pub secret: String,
    /// Hosts whose links are rewritten to click redirects (`*.domain` for subdomains).
    /// Empty in the file means the hosts of `app.base_url` and `http.public_url`; filled in
    /// at load.
    #[serde(deserialize_with = "list_or_commas")]
    pub redirect_hosts: Vec<String>,
}

impl std::fmt::Debug for TrackingSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrackingSettings")
            .field("enabled", &self.enabled)
            .field("types", &self.types)
            .field("secret", &if self.secret.is_empty() { "" } else { "***" })
            .field("redirect_hosts", &self.redirect_hosts)
            .finish()
    }
}

impl TrackingSettings {
    /// Minimum length of a non-empty secret, in bytes.
    pub const MIN_SECRET_BYTES: usize = 16;

    fn validate(&self) -> Result<(), String> {
        if !self.secret.is_empty() && self.secret.len() < Self::MIN_SECRET_BYTES {
            return Err(format!(
                "tracking.secret must be at least {} characters (or empty to turn tracking off)",
                Self::MIN_SECRET_BYTES
            ));
        }
        for h in &self.redirect_hosts {
            if !valid_host_entry(h) {
                return Err(format!(
                    "tracking.redirect_hosts: {h:?} is not a host name (or *.domain)"
                ));
            }
        }
        Ok(())
    }
}

/// Env values are strings; let numbers and booleans through as such so typed fields parse.
/// `log.level` as tracing's filter reads it, refusing what would silently log nothing: a
/// bare word is a level (`trace`, `debug`, `info`, `warn`, `error`, `off`), never a target
/// (`verbose` or `warning` would otherwise be taken as a module name and hide every log,
/// WARN included); `target=level` directives are checked by the filter's own parser.
fn check_log_level(level: &str) -> Result<(), String> {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    let refuse = |why: String| {
        Err(format!(
            "log.level {level:?}: {why}; use one of {} or target=level directives such as \"info,adopt_worker=debug\"",
            LEVELS.join(", ")
        ))
    };
    if level.trim().is_empty() {
        return refuse("it is empty".into());
    }
    for directive in level.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        match directive.split_once('=') {
            None if !LEVELS.contains(&directive.to_ascii_lowercase().as_str()) => {
                return refuse(format!("{directive:?} is not a level"));
            }
            None => {}
            Some((_, lvl)) if !LEVELS.contains(&lvl.trim().to_ascii_lowercase().as_str()) => {
                return refuse(format!("{lvl:?} in {directive:?} is not a level"));
            }
            Some(_) => {
                if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(directive) {
                    return refuse(format!("{directive:?} does not parse: {e}"));
                }
            }
        }
    }
    Ok(())
}

fn parse_env_value(value: figment::value::Value) -> figment::value::Value {
    use figment::value::Value;
    let Value::String(tag, s) = &value else {
        return value;
    };
    if let Ok(i) = s.parse::<i64>() {
        return Value::from(i);
    }
    if let Ok(f) = s.parse::<f64>() {
        return Value::from(f);
    }
    match s.as_str() {
        "true" => Value::Bool(*tag, true),
        "false" => Value::Bool(*tag, false),
        _ => value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_load_without_any_file_or_env() {
        let s = Settings::load_from(None, env(&[])).unwrap();
        assert_eq!(s.smtp.url, "");
        assert_eq!(s.worker.batch_size, 32);
        assert_eq!(s.log.format, LogFormat::Human);
    }

    #[test]
    fn text_keys_take_any_value_from_the_environment() {
        let s = Settings::load_from(
            None,
            env(&[
                ("ADOPT__SMTP__PROVIDER_ID", "123"),
                ("ADOPT__AUTH__JWT_AUDIENCE", "12345"),
                ("ADOPT__APP__FROM_NAME", "true"),
                ("ADOPT__WORKER__BATCH_SIZE", "7"),
            ]),
        )
        .unwrap();
        assert_eq!(s.smtp.provider_id, "123");
        assert_eq!(s.auth.jwt_audience, "12345");
        assert_eq!(s.app.from_name, "true");
        assert_eq!(s.worker.batch_size, 7, "numbers stay numbers");
    }

    #[test]
    fn a_log_level_that_would_hide_every_log_is_refused_by_name() {
        for bad in ["verbose", "warning", "info,adopt_worker=loud", ""] {
            let e = Settings::load_from(None, env(&[("ADOPT__LOG__LEVEL", bad)]))
                .err()
                .unwrap_or_else(|| panic!("{bad:?} was accepted"))
                .to_string();
            assert!(e.contains("log.level"), "{e}");
        }
        for good in [
            "warn",
            "INFO",
            "info,adopt_worker=debug",
            "off",
            "info,sqlx=warn",
        ] {
            Settings::load_from(None, env(&[("ADOPT__LOG__LEVEL", good)]))
                .unwrap_or_else(|e| panic!("{good:?}: {e}"));
        }
    }

    #[test]
    fn env_layers_override_in_order() {
        let s = Settings::load_from(
            None,
            env(&[
                ("ADOPT__WORKER__BATCH_SIZE", "7"),
                ("ADOPT__DATABASE__URL", "postgres://a@h/x"),
                ("DATABASE_URL", "postgres://b@h/y"),
                ("SMTP_URL", "smtp://127.0.0.1:2525"),
                ("HTTP_ADDR", "127.0.0.1:9999"),
                ("ADOPT__RETRY__JITTER", "0"),
            ]),
        )
        .unwrap();
        assert_eq!(s.worker.batch_size, 7);
        assert_eq!(s.database.url, "postgres://b@h/y");
        assert_eq!(s.smtp.url, "smtp://127.0.0.1:2525");
        assert_eq!(s.http.addr.port(), 9999);
        assert_eq!(s.retry.jitter, 0.0);
    }

    #[test]
    fn file_layer_sits_between_defaults_and_env() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[worker]\nbatch_size = 3\nconcurrency = 2\n").unwrap();
        let s =
            Settings::load_from(Some(&path), env(&[("ADOPT__WORKER__CONCURRENCY", "5")])).unwrap();
        assert_eq!(s.worker.batch_size, 3);
        assert_eq!(s.worker.concurrency, 5);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let err = Settings::load_from(None, env(&[("ADOPT__WORKER__BATCH_SIZ", "3")])).unwrap_err();
        assert!(err.to_string().contains("batch_siz"), "{err}");
        let err =
            Settings::load_from(None, env(&[("ADOPT__WORKER__LEASE_SECS", "5")])).unwrap_err();
        assert!(err.to_string().contains("lease_secs"), "{err}");
        let err = Settings::load_from(Some(Path::new("/nonexistent.toml")), env(&[])).unwrap_err();
        assert!(err.to_string().contains("/nonexistent.toml"), "{err}");
    }

    #[test]
    fn secrets_are_redacted_in_debug_output() {
        let s = Settings::load_from(
            None,
            env(&[
                ("SMTP_URL", "smtp://user:hunter2@relay.example:587"),
                ("DATABASE_URL", "postgres://u:pw@h/d"),
                (
                    "ADOPT__AUTH__JWT_SECRET",
                    "jwt-secret-jwt-secret-jwt-secret-0123",
                ),
                ("ADOPT__AUTH__WEBHOOK_SECRET", "hook-secret-hook-secret"),
                ("ADOPT__TRACKING__SECRET", "tracking-secret-value-1"),
                ("ADOPT__AUTH__POSTMARK_USERNAME", "postmark-user"),
                ("ADOPT__AUTH__POSTMARK_PASSWORD", "postmark-password-0123"),
                ("ADOPT__AUTH__MAILGUN_SIGNING_KEY", "mailgun-key-0123456789"),
            ]),
        )
        .unwrap();
        let dbg = format!("{s:?}");
        assert!(
            !dbg.contains("postmark-") && !dbg.contains("mailgun-key"),
            "{dbg}"
        );
        assert!(!dbg.contains("hunter2") && !dbg.contains(":pw@"), "{dbg}");
        assert!(
            !dbg.contains("jwt-secret") && !dbg.contains("hook-secret"),
            "{dbg}"
        );
        assert!(!dbg.contains("tracking-secret-value-1"), "{dbg}");
    }

    /// SendGrid's verification key as SendGrid shows it (a P-256 key made for this test).
    const SENDGRID_KEY: &str = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEa2vMn15qNX9QoGLErRUFMZBCgqMvB23MVthbaY71li+1jBhZMD7YA3qtRbu7bf7UDtLZZxyh6SsEUh3EkoleGw==";

    #[test]
    fn provider_webhooks_are_off_until_configured_and_their_keys_are_checked() {
        let s = Settings::load_from(None, env(&[])).unwrap();
        let a = &s.auth;
        assert!(a.ses_topic_arns.is_empty() && !a.ses_auto_confirm);
        assert!(a.sendgrid_public_key.is_none());
        assert!(a.postmark_password.is_empty() && a.mailgun_signing_key.is_empty());

        let s = Settings::load_from(
            None,
            env(&[
                (
                    "ADOPT__AUTH__SES_TOPIC_ARNS",
                    "arn:aws:sns:eu-west-1:123456789012:ses, arn:aws-cn:sns:cn-north-1:123456789012:b",
                ),
                ("ADOPT__AUTH__SES_AUTO_CONFIRM", "true"),
                ("ADOPT__AUTH__SENDGRID_PUBLIC_KEY", SENDGRID_KEY),
            ]),
        )
        .unwrap();
        assert_eq!(s.auth.ses_topic_arns.len(), 2);
        assert!(s.auth.ses_auto_confirm);
        let point = s.auth.sendgrid_public_key.as_ref().unwrap().point();
        assert_eq!((point.len(), point[0]), (65, 4));

        for (key, value, named) in [
            (
                "ADOPT__AUTH__SES_TOPIC_ARNS",
                "my-topic",
                "auth.ses_topic_arns",
            ),
            (
                "ADOPT__AUTH__SES_TOPIC_ARNS",
                "arn:aws:sqs:eu-west-1:123456789012:q",
                "auth.ses_topic_arns",
            ),
            (
                "ADOPT__AUTH__SENDGRID_PUBLIC_KEY",
                "not base64!",
                "sendgrid_public_key",
            ),
            // A P-384 key.
            (
                "ADOPT__AUTH__SENDGRID_PUBLIC_KEY",
                "MHYwEAYHKoZIzj0CAQYFK4EEACIDYgAEkYUnrZH07i2UwihmzW4/nGXulK+Mu4x6fz3jSRkBzLluiqFHOwHmV7N8/wgCDgHvlqoJp3Hhp1+am37LGKSMQrY1G2FCd+HhvW9Ty//wQenGhUAE7x74UT1CXaY6md2C",
                "P-256",
            ),
            (
                "ADOPT__AUTH__POSTMARK_PASSWORD",
                "password-without-a-user",
                "auth.postmark_username",
            ),
            (
                "ADOPT__AUTH__MAILGUN_SIGNING_KEY",
                "short",
                "auth.mailgun_signing_key",
            ),
        ] {
            let err = Settings::load_from(None, env(&[(key, value)])).unwrap_err();
            assert!(err.to_string().contains(named), "{key}={value}: {err}");
        }
        let err = Settings::load_from(
            None,
            env(&[
                ("ADOPT__AUTH__POSTMARK_USERNAME", "pm"),
                ("ADOPT__AUTH__POSTMARK_PASSWORD", "short"),
            ]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("auth.postmark_password"), "{err}");
        assert!(!err.to_string().contains("short"), "{err}");
    }

    #[test]
    fn tracking_and_templates_defaults_and_overrides() {
        use crate::queue::EmailType;
        let s = Settings::load_from(None, env(&[])).unwrap();
        assert!(s.tracking.enabled);
        assert_eq!(s.tracking.secret, "");
        assert_eq!(
            s.tracking.types,
            vec![EmailType::Marketing, EmailType::Notification]
        );
        assert_eq!(s.templates.dir, PathBuf::from("templates"));
        assert_eq!(s.templates.default_locale, "en-US");
        assert_eq!(s.templates.max_data_bytes, 256 * 1024);

        // An all-digit secret from the environment is still a string.
        let s = Settings::load_from(
            None,
            env(&[("ADOPT__TRACKING__SECRET", "012345678901234567890")]),
        )
        .unwrap();
        assert_eq!(s.tracking.secret, "012345678901234567890");

        let err =
            Settings::load_from(None, env(&[("ADOPT__TRACKING__SECRET", "short")])).unwrap_err();
        assert!(err.to_string().contains("tracking.secret"), "{err}");
        assert!(!err.to_string().contains("short"), "{err}");
    }

    #[test]
    fn a_bad_return_path_stops_start_up_naming_the_key() {
        let s = Settings::load_from(None, env(&[])).unwrap();
        assert_eq!(s.bounce.return_path(), None, "no VERP by default");
        let s = Settings::load_from(
            None,
            env(&[(
                "ADOPT__BOUNCE__RETURN_PATH",
                "bounces+{email_id}@bounces.example.org",
            )]),
        )
        .unwrap();
        assert!(s.bounce.return_path().is_some());
        for bad in [
            "bounces@bounces.example.org",
            "b+{email_id}@",
            "{email_id}{email_id}@x.org",
        ] {
            let e = Settings::load_from(None, env(&[("ADOPT__BOUNCE__RETURN_PATH", bad)]))
                .unwrap_err()
                .to_string();
            assert!(e.contains("bounce.return_path"), "{bad}: {e}");
        }
    }

    #[test]
    fn dkim_keys_come_from_a_file_only() {
        let s = Settings::load_from(None, env(&[])).unwrap();
        assert!(s.dkim.keys.is_empty(), "nothing is signed by default");
        let err = Settings::load_from(None, env(&[("ADOPT__DKIM__KEYS", "x")])).unwrap_err();
        assert!(
            err.to_string().contains("only a configuration file"),
            "{err}"
        );

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[[dkim.keys]]\ndomain = \"adoptdontshop.com\"\nselector = \"s1\"\nkey_file = \"/k.pem\"\n",
        )
        .unwrap();
        let s = Settings::load_from(Some(&path), env(&[])).unwrap();
        assert_eq!(s.dkim.keys.len(), 1);
        assert_eq!(s.dkim.keys[0].selector, "s1");
        std::fs::write(
            &path,
            "[[dkim.keys]]\ndomain = \"adoptdontshop.com\"\nselector = \"s 1\"\nkey_file = \"/k.pem\"\n",
        )
        .unwrap();
        let err = Settings::load_from(Some(&path), env(&[])).unwrap_err();
        assert!(err.to_string().contains("dkim.keys[0].selector"), "{err}");
    }

    #[test]
    fn redirect_hosts_and_sender_domains_default_from_other_keys() {
        let s = Settings::load_from(
            None,
            env(&[
                ("ADOPT__HTTP__PUBLIC_URL", "https://mail.adoptdontshop.com"),
                ("ADOPT__APP__FROM_EMAIL", "noreply@News.AdoptDontShop.com"),
            ]),
        )
        .unwrap();
        assert_eq!(
            s.tracking.redirect_hosts,
            ["adoptdontshop.com", "mail.adoptdontshop.com"]
        );
        assert_eq!(s.api.allowed_sender_domains, ["news.adoptdontshop.com"]);
        assert_eq!(s.http.max_connections, 1024);
        assert_eq!(s.http.public_rate_per_minute, 300);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[tracking]\nredirect_hosts = [\"https://x\"]\n").unwrap();
        let err = Settings::load_from(Some(&path), env(&[])).unwrap_err();
        assert!(err.to_string().contains("tracking.redirect_hosts"), "{err}");
        std::fs::write(&path, "[api]\nallowed_sender_domains = [\"a b\"]\n").unwrap();
        let err = Settings::load_from(Some(&path), env(&[])).unwrap_err();
        assert!(
            err.to_string().contains("api.allowed_sender_domains"),
            "{err}"
        );
        let err =
            Settings::load_from(None, env(&[("ADOPT__HTTP__MAX_CONNECTIONS", "0")])).unwrap_err();
        assert!(err.to_string().contains("http.max_connections"), "{err}");
    }
}
