//! Email templates: the `templates/` sources (check, sync into `email_templates` with
//! versions), lookup with locale fallback, and rendering at send time.
//!
//! [`Templates`] is the handle the rest of the crate uses (cheap to clone). At send time only
//! the database matters: a lookup (template + locale → row and current version) is cached
//! for `templates.lookup_ttl_ms`, so a new version reaches every process within that time
//! without a restart; compiled templates are cached by `template_id@version` (and the row's
//! `updated_at` for the current version, so an edit without a version bump is seen too).
//! Rendering runs on the blocking pool: it is CPU work (Tera, CSS inlining, link rewriting).

mod admin;
mod cache;
mod check;
pub mod files;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod golden;
mod lookup;
mod preinline;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod props;
mod render;
mod store;
mod sync;
pub mod text;
pub mod vars;

use std::path::Path;
use std::sync::Arc;

use chrono::{Datelike, NaiveDateTime};
use serde_json::{Map, Value};
use sqlx::PgPool;
use tracing::{info, warn};
use uuid::Uuid;

use crate::config::{Settings, TemplateSettings};
use crate::queue::{ClaimedEmail, EmailType, RenderedContent};
use crate::tracking::Tracker;
use cache::{Caches, CompileResult, CompiledTemplate, LookupKey};

pub use admin::{
    TemplateContract, TemplateSummary, count_test_send, list_templates, template_contract,
    type_and_examples,
};
pub use check::{CheckReport, SampleApp, example_data};
pub use files::Problem;
pub use lookup::{Candidate, Mode, Step, normalize_locale};
#[doc(hidden)]
pub use render::inline_css;
pub use render::{EMBEDDED_LAYOUT, Parts};
pub use store::{SYSTEM_USER_EMAIL, SYSTEM_USER_ID};
pub use sync::{Force, SyncEntry, SyncOutcome, SyncReport};

/// A template as a caller names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TemplateRef<'a> {
    Id(Uuid),
    Name(&'a str),
}

impl std::fmt::Display for TemplateRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TemplateRef::Id(id) => write!(f, "{id}"),
            TemplateRef::Name(n) => write!(f, "{n}"),
        }
    }
}

/// The row a lookup chose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub template_id: Uuid,
    pub name: String,
    pub locale: Option<String>,
    pub current_version: i32,
    pub updated_at: Option<NaiveDateTime>,
    pub step: Step,
}

/// Why a lookup found nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("template {0}: not found")]
    NotFound(String),
    #[error(
        "template {template} is {state}: nothing renders it for locale {locale} (no active locale variant or parent either)"
    )]
    NoActive {
        template: String,
        state: String,
        locale: String,
    },
}

/// Why an email could not be rendered. All but [`RenderError::Db`] are permanent: the row
/// fails with this text as its reason.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("template email has no template_id")]
    NoTemplate,
    #[error("template_data must be a JSON object, got {0}")]
    DataNotObject(&'static str),
    #[error("template_data is larger than the {limit}-byte limit (templates.max_data_bytes)")]
    DataTooLarge { limit: usize },
    #[error("metadata.templateVersion must be a positive integer")]
    BadPinnedVersion,
    #[error(transparent)]
    Lookup(#[from] LookupError),
    #[error(
        "template {name}: version {version} is not in its history (current version is {current})"
    )]
    UnknownVersion {
        name: String,
        version: i32,
        current: i32,
    },
    #[error("template {name} v{version}: {problem}")]
    Template {
        name: String,
        version: i32,
        problem: String,
    },
    #[error("database error while rendering: {0}")]
    Db(#[from] sqlx::Error),
}

impl RenderError {
    /// A database hiccup: the email should be retried, not failed.
    pub fn is_transient(&self) -> bool {
        matches!(self, RenderError::Db(_))
    }
}

/// Why sync wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("{} problem(s) in the templates; nothing was written", .0.problems.len())]
    Invalid(CheckReport),
    #[error("--force names no template of the directory: {0}; nothing was written")]
    UnknownForced(String),
    #[error("{0}\nnothing was written")]
    DefaultTaken(String),
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
}

/// The template a test send was made of (`metadata.testOf`, written by the test-send
/// routes), or `None` for a real email.
pub fn test_of(email: &ClaimedEmail) -> Option<&str> {
    let meta = email.metadata.as_ref()?;
    (meta.get("test") == Some(&Value::Bool(true)))
        .then(|| meta.get("testOf").and_then(Value::as_str))
        .flatten()
}

/// One render, fully described.
#[derive(Debug, Clone)]
pub struct RenderRequest<'a> {
    pub template: TemplateRef<'a>,
    /// Requested locale; the default locale when `None`.
    pub locale: Option<&'a str>,
    /// `locale` is a guess (the recipient's language), not named for this email: a locale
    /// variant named as the template keeps its own locale. Also the case when `locale` is
    /// `None`.
    pub locale_is_guess: bool,
    /// A pinned version; the current one when `None`.
    pub version: Option<i32>,
    /// Must be a JSON object (or absent).
    pub data: Option<&'a Value>,
    pub recipient_email: &'a str,
    pub recipient_name: Option<&'a str>,
    pub email_type: EmailType,
    /// Given to marketing/notification emails as `unsubscribe_url`; others get "".
    pub unsubscribe_url: Option<&'a str>,
    /// The email id for tracking tokens; tracking applies when set and enabled for the type.
    pub track_as: Option<Uuid>,
    /// Counts in the template's `usage_count`: only the worker's render of a real email
    /// (not the check at enqueue, a preview or a test send).
    pub count_use: bool,
}

/// What a render produced.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub template_id: Uuid,
    pub name: String,
    pub version: i32,
    pub subject: String,
    /// CSS inlined, tracked when tracking applied.
    pub html: String,
    pub text: String,
    pub tracked: bool,
    /// Keys of the data the template does not declare (empty when it declares nothing):
    /// the API refuses them (`templates.strict_data`), since a misspelt key is a variable
    /// silently left out.
    pub undeclared: Vec<String>,
    /// The declared variable names, to suggest the one an undeclared key was meant to be.
    pub declared: Vec<String>,
}

/// What [`Templates::check_data`] found.
#[derive(Debug, Clone)]
pub struct Checked {
    pub template_id: Uuid,
    pub name: String,
    pub version: i32,
    /// As in [`Rendered::undeclared`].
    pub undeclared: Vec<String>,
    pub declared: Vec<String>,
}

struct Inner {
    pool: PgPool,
    settings: TemplateSettings,
    app: SampleApp,
    tracker: Option<Tracker>,
    caches: Caches,
    /// Held while a version is fetched and compiled, so the many sends that miss the cache
    /// together (the first batch of a campaign) wait for one compile instead of each
    /// running their own. Compiles are rare: once per version and process.
    compiling: tokio::sync::Mutex<()>,
    /// Renders are CPU work on blocking threads: no more run at once than there are cores,
    /// so a burst of sends does not start a thread (and a malloc arena, and a document's
    /// worth of memory) per email in flight.
    rendering: tokio::sync::Semaphore,
}

/// The templates handle: lookup, render, sync, check. Cheap to clone.
#[derive(Clone)]
pub struct Templates {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates")
            .field("tracker", &self.inner.tracker)
            .finish_non_exhaustive()
    }
}

/// The common `app` variables from the settings.
fn sample_app(settings: &Settings) -> SampleApp {
    SampleApp {
        name: settings.app.name.clone(),
        base_url: settings.app.base_url.trim_end_matches('/').to_string(),
        support_email: settings.app.support_email.clone(),
    }
}

/// `templates check` on a directory, without a database.
pub fn check(dir: &Path, settings: &Settings) -> CheckReport {
    check::check_dir(
        dir,
        &files::Rules::from(&settings.templates),
        &sample_app(settings),
    )
    .1
}

impl Templates {
    /// Builds the handle; warns once when tracking is on but cannot sign links.
    pub fn new(pool: PgPool, settings: &Settings) -> Templates {
        let tracker = Tracker::from_settings(&settings.tracking, &settings.http.public_url);
        Templates::with_tracker(pool, settings, tracker)
    }

    /// Like [`Templates::new`] with an explicit tracker (tests, tools).
    pub fn with_tracker(pool: PgPool, settings: &Settings, tracker: Option<Tracker>) -> Templates {
        Templates {
            inner: Arc::new(Inner {
                pool,
                settings: settings.templates.clone(),
                app: sample_app(settings),
                tracker,
                caches: Caches::default(),
                compiling: tokio::sync::Mutex::new(()),
                rendering: tokio::sync::Semaphore::new(
                    std::thread::available_parallelism().map_or(2, std::num::NonZero::get),
                ),
            }),
        }
    }

    pub fn tracker(&self) -> Option<&Tracker> {
        self.inner.tracker.as_ref()
    }

    /// Checks the directory (see [`check`]).
    pub fn check(&self, dir: &Path) -> CheckReport {
        check::check_dir(
            dir,
            &files::Rules::from(&self.inner.settings),
            &self.inner.app,
        )
        .1
    }

    /// Checks the directory, then syncs it into `email_templates` in one transaction; with
    /// any problem nothing is written. Returns what happened and the check's warnings.
    pub async fn sync(
        &self,
        dir: &Path,
        force: &Force,
    ) -> Result<(SyncReport, CheckReport), SyncError> {
        let (source, report) = check::check_dir(
            dir,
            &files::Rules::from(&self.inner.settings),
            &self.inner.app,
        );
        if !report.is_ok() {
            return Err(SyncError::Invalid(report));
        }
        if let Force::Names(names) = force {
            let unknown: Vec<&str> = names
                .iter()
                .filter(|n| !source.templates.iter().any(|t| &t.name == *n))
                .map(String::as_str)
                .collect();
            if !unknown.is_empty() {
                return Err(SyncError::UnknownForced(unknown.join(", ")));
            }
        }
        let synced = sync::sync_templates(&self.inner.pool, &source.templates, force).await?;
        self.inner.caches.clear_lookups();
        Ok((synced, report))
    }

    /// Finds the row that renders `template` in `locale` (see the `lookup` module for the
    /// fallback order), through the short-lived lookup cache.
    pub async fn lookup(
        &self,
        template: TemplateRef<'_>,
        locale: &str,
    ) -> Result<Resolved, RenderError> {
        self.lookup_as(template, locale, Mode::Named).await
    }

    /// [`Templates::lookup`] with the locale given as `mode` says.
    pub async fn lookup_as(
        &self,
        template: TemplateRef<'_>,
        locale: &str,
        mode: Mode,
    ) -> Result<Resolved, RenderError> {
        let locale = normalize_locale(locale);
        let key = LookupKey::new(template, &format!("{locale}/{mode:?}"));
        let ttl = self.inner.settings.lookup_ttl();
        if let Some(hit) = self.inner.caches.lookup(&key, ttl) {
            return Ok(hit?);
        }
        let (id, name) = match template {
            TemplateRef::Id(id) => (Some(id), None),
            TemplateRef::Name(n) => (None, Some(n)),
        };
        let cands = store::lookup_candidates(&self.inner.pool, id, name).await?;
        let default_locale = &self.inner.settings.default_locale;
        let result = match lookup::choose(&cands, &locale, default_locale, mode) {
            Some((i, step)) => {
                let c = &cands[i];
                if mode == Mode::Pinned
                    && let Some((other, _)) =
                        lookup::choose(&cands, &locale, default_locale, Mode::Named)
                    && other != i
                {
                    info!(
                        template = %c.name, variant = %cands[other].name, %locale,
                        "a pinned version is a version of the template the email named: rendered instead of its locale variant"
                    );
                }
                Ok(Resolved {
                    template_id: c.template_id,
                    name: c.name.clone(),
                    locale: c.locale.clone(),
                    current_version: c.current_version,
                    updated_at: c.updated_at,
                    step,
                })
            }
            None => match lookup::requested(&cands) {
                Some(r) => Err(LookupError::NoActive {
                    template: cands[r].name.clone(),
                    state: cands[r].state.clone(),
                    locale,
                }),
                None => Err(LookupError::NotFound(template.to_string())),
            },
        };
        self.inner.caches.store_lookup(key, ttl, result.clone());
        Ok(result?)
    }

    /// Renders a template email claimed from the queue: locale from `metadata.locale`, else
    /// the recipient's `email_preferences.language` (when the row has a `user_id`; the
    /// column's default when the user has no row yet), else the default; version from `metadata.templateVersion`, else the current one. The
    /// result is what is sent and written back to the row.
    pub async fn render_for_email(
        &self,
        email: &ClaimedEmail,
        unsubscribe_url: Option<String>,
    ) -> Result<RenderedContent, RenderError> {
        let template_id = email.template_id.ok_or(RenderError::NoTemplate)?;
        let meta = email.metadata.as_ref();
        let version = match meta.and_then(|m| m.get("templateVersion")) {
            None | Some(Value::Null) => None,
            Some(v) => Some(pinned_version(v).ok_or(RenderError::BadPinnedVersion)?),
        };
        let meta_locale = meta
            .and_then(|m| m.get("locale"))
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|l| files::is_locale(l));
        let locale = match (meta_locale, email.recipient.recipient_user_id) {
            (Some(l), _) => Some(l.to_string()),
            // A user without a preferences row: the column's default, as the gate assumed.
            (None, Some(user)) => {
                store::user_language(&self.inner.pool, user)
                    .await?
                    .or_else(|| {
                        (!email.recipient.has_preferences)
                            .then(|| email.recipient.language.clone())
                            .flatten()
                    })
            }
            (None, None) => None,
        };
        let locale_is_guess = meta_locale.is_none();
        let r = self
            .render(RenderRequest {
                template: TemplateRef::Id(template_id),
                locale: locale.as_deref(),
                locale_is_guess,
                version,
                data: email.template_data.as_ref(),
                recipient_email: &email.to_email,
                recipient_name: email.to_name.as_deref(),
                email_type: email.email_type,
                unsubscribe_url: unsubscribe_url.as_deref(),
                track_as: Some(email.email_id),
                count_use: test_of(email).is_none(),
            })
            .await?;
        Ok(RenderedContent {
            subject: r.subject,
            html_content: r.html,
            text_content: Some(r.text),
            template_version: Some(r.version),
        })
    }

    /// `templates.strict_data`: the API refuses undeclared `data` keys.
    pub fn strict_data(&self) -> bool {
        self.inner.settings.strict_data
    }

    /// The HTML of an already rendered email with tracking applied, when tracking is on for
    /// its type; `None` means send it as it is.
    pub fn track_prerendered(&self, email: &ClaimedEmail) -> Option<String> {
        let tracker = self.inner.tracker.as_ref()?;
        (tracker.tracks(email.email_type) && !email.html_content.trim().is_empty())
            .then(|| tracker.inject(email.email_id, &email.html_content, None))
    }

    /// Renders one template: the data is checked (an object, within the size bound, fitting
    /// the declared variables), the row chosen by [`Templates::lookup`], the version compiled
    /// (or taken from the cache) and rendered on the blocking pool.
    pub async fn render(&self, req: RenderRequest<'_>) -> Result<Rendered, RenderError> {
        let data = match req.data {
            None | Some(Value::Null) => Map::new(),
            Some(v @ Value::Object(m)) => {
                let limit = self.inner.settings.max_data_bytes;
                if vars::exceeds_size(v, limit) {
                    return Err(RenderError::DataTooLarge { limit });
                }
                m.clone()
            }
            Some(other) => return Err(RenderError::DataNotObject(vars::json_kind(other))),
        };
        let locale = req
            .locale
            .unwrap_or(&self.inner.settings.default_locale)
            .to_string();
        let mode = if req.version.is_some() {
            Mode::Pinned
        } else if req.locale_is_guess || req.locale.is_none() {
            Mode::Guessed
        } else {
            Mode::Named
        };
        let resolved = self.lookup_as(req.template, &locale, mode).await?;
        let compiled = self.compiled(&resolved, req.version).await?;
        let declared: Vec<String> = compiled
            .compiled
            .variables
            .iter()
            .map(|v| v.name.clone())
            .collect();
        let undeclared: Vec<String> = if declared.is_empty() {
            Vec::new()
        } else {
            data.keys()
                .filter(|k| !declared.contains(k))
                .cloned()
                .collect()
        };
        let unsubscribe = if req.email_type.is_optional() {
            req.unsubscribe_url.unwrap_or("").to_string()
        } else {
            String::new()
        };
        let tracker = req
            .track_as
            .zip(self.inner.tracker.clone())
            .filter(|(_, t)| t.tracks(req.email_type));
        let tracked = tracker.is_some();
        let job = RenderJob {
            inner: self.inner.clone(),
            compiled: compiled.clone(),
            data,
            recipient_email: req.recipient_email.to_string(),
            recipient_name: req.recipient_name.map(str::to_string),
            unsubscribe,
            tracker,
        };
        let failed = |problem: String| RenderError::Template {
            name: compiled.name.clone(),
            version: compiled.version,
            problem,
        };
        let permit = self.inner.rendering.acquire().await;
        let parts = tokio::task::spawn_blocking(move || job.run())
            .await
            .map_err(|e| failed(format!("rendering panicked: {e}")))?
            .map_err(|p| failed(p.to_string()))?;
        drop(permit);
        if req.count_use {
            self.inner
                .caches
                .record_use(resolved.template_id, chrono::Utc::now().naive_utc());
        }
        Ok(Rendered {
            template_id: resolved.template_id,
            name: compiled.name.clone(),
            version: compiled.version,
            subject: parts.subject,
            html: parts.html,
            text: parts.text,
            tracked,
            undeclared,
            declared,
        })
    }

    /// What an enqueue needs to know of `data` for a template: the data checked against
    /// the current version's declarations without rendering when the template reads only
    /// declared variables, all of them scalars (strings, numbers, booleans, urls, emails,
    /// datetimes), else by rendering it once (what an object must hold only a render tells).
    pub async fn check_data(
        &self,
        template: TemplateRef<'_>,
        locale: Option<&str>,
        data: &Value,
        email_type: crate::queue::EmailType,
        recipient_email: &str,
    ) -> Result<Checked, RenderError> {
        let map = match data {
            Value::Object(m) => {
                let limit = self.inner.settings.max_data_bytes;
                if vars::exceeds_size(data, limit) {
                    return Err(RenderError::DataTooLarge { limit });
                }
                m
            }
            Value::Null => &Map::new(),
            other => return Err(RenderError::DataNotObject(vars::json_kind(other))),
        };
        let locale_s = locale
            .unwrap_or(&self.inner.settings.default_locale)
            .to_string();
        let mode = if locale.is_none() {
            Mode::Guessed
        } else {
            Mode::Named
        };
        let resolved = self.lookup_as(template, &locale_s, mode).await?;
        let compiled = self.compiled(&resolved, None).await?;
        // The declarations tell presence and type, not what an object or array must hold
        // (`user.first_name`): only a template of scalar variables is checked without a
        // render.
        let scalars_only = compiled.compiled.variables.iter().all(|v| {
            !matches!(
                v.var_type,
                vars::VarType::Object | vars::VarType::Array | vars::VarType::Other(_)
            )
        });
        if !(compiled.compiled.reads_only_declared() && scalars_only) {
            let r = self
                .render(RenderRequest {
                    template,
                    locale,
                    locale_is_guess: false,
                    version: None,
                    data: Some(data),
                    recipient_email,
                    recipient_name: None,
                    email_type,
                    unsubscribe_url: None,
                    track_as: None,
                    count_use: false,
                })
                .await?;
            return Ok(Checked {
                template_id: r.template_id,
                name: r.name,
                version: r.version,
                undeclared: r.undeclared,
                declared: r.declared,
            });
        }
        compiled
            .compiled
            .validate(map)
            .map_err(|p| RenderError::Template {
                name: compiled.name.clone(),
                version: compiled.version,
                problem: p.to_string(),
            })?;
        let declared: Vec<String> = compiled
            .compiled
            .variables
            .iter()
            .map(|v| v.name.clone())
            .collect();
        let undeclared = map
            .keys()
            .filter(|k| !declared.contains(k))
            .cloned()
            .collect();
        Ok(Checked {
            template_id: resolved.template_id,
            name: compiled.name.clone(),
            version: compiled.version,
            undeclared,
            declared,
        })
    }

    /// The compiled version to render: from the cache, or fetched and compiled once.
    async fn compiled(
        &self,
        r: &Resolved,
        pinned: Option<i32>,
    ) -> Result<Arc<CompiledTemplate>, RenderError> {
        let want = pinned.unwrap_or(r.current_version);
        let current = want == r.current_version;
        let key = (
            r.template_id,
            want,
            if current { r.updated_at } else { None },
        );
        let cached = || {
            self.inner.caches.compiled(&key).map(|hit| {
                hit.map_err(|problem| RenderError::Template {
                    name: r.name.clone(),
                    version: want,
                    problem,
                })
            })
        };
        if let Some(hit) = cached() {
            return hit;
        }
        let _compiling = self.inner.compiling.lock().await;
        if let Some(hit) = cached() {
            return hit;
        }
        let pool = &self.inner.pool;
        let mut fetched = None;
        if current
            && let Some((c, v, stamp)) = store::current_content(pool, r.template_id).await?
            // The row may have moved on since the lookup; that is the current one then,
            // unless a version was pinned.
            && (v == want || pinned.is_none())
        {
            fetched = Some((c, v, stamp));
        }
        if fetched.is_none() {
            let c = store::archived_content(pool, r.template_id, want)
                .await?
                .ok_or_else(|| RenderError::UnknownVersion {
                    name: r.name.clone(),
                    version: want,
                    current: r.current_version,
                })?;
            fetched = Some((c, want, None));
        }
        let Some((content, version, stamp)) = fetched else {
            return Err(LookupError::NotFound(r.template_id.to_string()).into());
        };
        let name = content.name.clone();
        let built = tokio::task::spawn_blocking(move || compile(content, version))
            .await
            .unwrap_or_else(|e| Err(format!("compiling panicked: {e}")));
        self.inner
            .caches
            .store_compiled((r.template_id, version, stamp), built.clone());
        built.map_err(|problem| RenderError::Template {
            name,
            version,
            problem,
        })
    }

    /// Writes the uses counted since the last flush (`usage_count`, `last_used_at`) in one
    /// statement. Called every `templates.usage_flush_ms` while running, after a drain and
    /// at shutdown; on a database error the counts are kept for the next flush.
    pub async fn flush_usage(&self) -> Result<u64, sqlx::Error> {
        let pending = self.inner.caches.take_usage();
        if pending.is_empty() {
            return Ok(0);
        }
        let ids: Vec<Uuid> = pending.iter().map(|p| p.0).collect();
        let counts: Vec<i32> = pending.iter().map(|p| p.1).collect();
        let last: Vec<NaiveDateTime> = pending.iter().map(|p| p.2).collect();
        let written = store::add_usage(&self.inner.pool, &ids, &counts, &last).await;
        if written.is_err() {
            self.inner.caches.restore_usage(pending);
        }
        written
    }

    /// Flushes usage every `templates.usage_flush_ms` until `stop` flips to true, then once more.
    pub async fn flush_usage_periodically(&self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.inner.settings.usage_flush_interval());
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|s| *s) => break,
            }
            if let Err(e) = self.flush_usage().await {
                warn!(error = %e, "writing template usage counts failed; will retry");
            }
        }
        if let Err(e) = self.flush_usage().await {
            warn!(error = %e, "writing template usage counts at shutdown failed");
        }
    }
}

/// The CPU part of a render, run on the blocking pool: Tera, CSS inlining, tracking.
struct RenderJob {
    inner: Arc<Inner>,
    compiled: Arc<CompiledTemplate>,
    data: Map<String, Value>,
    recipient_email: String,
    recipient_name: Option<String>,
    unsubscribe: String,
    tracker: Option<(Uuid, Tracker)>,
}

impl RenderJob {
    fn run(self) -> Result<Parts, render::RenderProblem> {
        let app = &self.inner.app;
        let common = render::Common {
            app_name: &app.name,
            app_base_url: &app.base_url,
            app_support_email: &app.support_email,
            recipient_email: &self.recipient_email,
            recipient_name: self.recipient_name.as_deref(),
            unsubscribe_url: &self.unsubscribe,
            year: chrono::Utc::now().year(),
        };
        render_and_track(
            &self.compiled.compiled,
            &self.data,
            &common,
            self.tracker.as_ref().map(|(id, t)| (*id, t)),
        )
    }
}

/// Renders, then tracks the HTML when `tracker` is given: links in the pass that puts the
/// recipient's values into a cached document where there is one (see `render`), else by
/// [`Tracker::inject`] over the rendered HTML.
fn render_and_track(
    compiled: &render::Compiled,
    data: &Map<String, Value>,
    common: &render::Common<'_>,
    tracker: Option<(Uuid, &Tracker)>,
) -> Result<Parts, render::RenderProblem> {
    let Some((email_id, t)) = tracker else {
        return compiled.render(data, common);
    };
    let unsubscribe = Some(common.unsubscribe_url).filter(|u| !u.is_empty());
    let link = |url: &str| t.tracked_link(email_id, url, unsubscribe);
    let (mut parts, links_tracked) = compiled.render_tracked(data, common, Some(&link))?;
    if links_tracked {
        t.add_pixel(email_id, &mut parts.html);
    } else {
        parts.html = t.inject(email_id, &parts.html, unsubscribe);
    }
    Ok(parts)
}

/// Template sources compiled with the embedded layout and rendered without a database, as a
/// send renders them (CSS inlined, text part made when there is no `body.txt`): for
/// `examples/render_bench.rs` and other measurements.
#[doc(hidden)]
pub struct Standalone(render::Compiled);

#[doc(hidden)]
impl Standalone {
    /// `variables`: the `[[variables]]` declarations as JSON.
    pub fn new(
        subject: &str,
        html: &str,
        text: Option<&str>,
        variables: Value,
    ) -> Result<Standalone, String> {
        let variables = serde_json::from_value(variables).map_err(|e| e.to_string())?;
        let src = render::Sources {
            subject,
            html,
            text,
        };
        render::Compiled::new(src, EMBEDDED_LAYOUT, variables)
            .map(Standalone)
            .map_err(|issues| {
                issues
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            })
    }

    fn common<'a>(recipient_email: &'a str, unsubscribe_url: &'a str) -> render::Common<'a> {
        render::Common {
            app_name: "Adopt Don't Shop",
            app_base_url: "https://adoptdontshop.com",
            app_support_email: "support@adoptdontshop.com",
            recipient_email,
            recipient_name: None,
            unsubscribe_url,
            year: 2026,
        }
    }

    pub fn render(
        &self,
        data: &Map<String, Value>,
        recipient_email: &str,
        unsubscribe_url: &str,
    ) -> Result<Parts, String> {
        let common = Self::common(recipient_email, unsubscribe_url);
        self.0.render(data, &common).map_err(|e| e.to_string())
    }

    /// [`Standalone::render`] and tracking, as the worker renders a tracked email.
    pub fn render_tracked(
        &self,
        data: &Map<String, Value>,
        recipient_email: &str,
        unsubscribe_url: &str,
        tracker: &Tracker,
        email_id: Uuid,
    ) -> Result<Parts, String> {
        let common = Self::common(recipient_email, unsubscribe_url);
        render_and_track(&self.0, data, &common, Some((email_id, tracker)))
            .map_err(|e| e.to_string())
    }

    /// The HTML as Tera makes it, before CSS inlining.
    pub fn tera_html(
        &self,
        data: &Map<String, Value>,
        recipient_email: &str,
        unsubscribe_url: &str,
    ) -> Result<String, String> {
        let ctx = render::context(data, &Self::common(recipient_email, unsubscribe_url));
        self.0
            .tera
            .render(files::HTML, &ctx)
            .map_err(|e| e.to_string())
    }
}

/// `metadata.templateVersion`: a positive integer, or a string of one.
fn pinned_version(v: &Value) -> Option<i32> {
    let n = match v {
        Value::Number(n) => n.as_i64()?,
        Value::String(s) => s.trim().parse().ok()?,
        _ => return None,
    };
    i32::try_from(n).ok().filter(|n| *n >= 1)
}

/// Compiles stored sources; the error is the reason a row fails with.
fn compile(content: store::VersionContent, version: i32) -> CompileResult {
    let variables: Vec<vars::VariableDecl> = match content.variables {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => serde_json::from_value(v)
            .map_err(|e| format!("its variables declaration is not valid: {e}"))?,
    };
    let (Some(subject), Some(html)) = (content.subject, content.html_content) else {
        return Err("the stored version has no subject or html_content".to_string());
    };
    let sources = render::Sources {
        subject: &subject,
        html: &html,
        text: content.text_content.as_deref(),
    };
    let compiled =
        render::Compiled::new(sources, EMBEDDED_LAYOUT, variables).map_err(|issues| {
            let more = match issues.len() {
                0 | 1 => String::new(),
                n => format!(" (and {} more)", n - 1),
            };
            let first = issues
                .first()
                .map_or_else(|| "invalid template".to_string(), ToString::to_string);
            format!("invalid template: {first}{more}")
        })?;
    Ok(Arc::new(CompiledTemplate {
        name: content.name,
        version,
        compiled,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Instant;

    /// Renders a shipped template with its examples, as `render` does (without a database).
    fn render_shipped(name: &str, unsubscribe: &str) -> Parts {
        let dir = files::load_dir(Path::new("templates"), &files::Rules::new("en-US"));
        let t = dir.templates.iter().find(|t| t.name == name).unwrap();
        let src = render::Sources {
            subject: &t.subject,
            html: &t.html,
            text: t.text.as_deref(),
        };
        let c = render::Compiled::new(src, EMBEDDED_LAYOUT, t.variables.clone()).unwrap();
        let data = example_data(t);
        let common = render::Common {
            app_name: "Adopt Don't Shop",
            app_base_url: "https://adoptdontshop.com",
            app_support_email: "support@adoptdontshop.com",
            recipient_email: "maya@example.com",
            recipient_name: None,
            unsubscribe_url: unsubscribe,
            year: 2026,
        };
        c.render(data.as_object().unwrap(), &common).unwrap()
    }

    /// The shipped templates get their CSS inlined once per version, except where it could
    /// depend on the data (`system_alert` picks its notice class from `tone`); either way an
    /// email is, once normalised, what per-email inlining makes of it, for varied data.
    #[test]
    fn shipped_templates_are_preinlined_where_safe_and_render_the_same() {
        let dir = files::load_dir(Path::new("templates"), &files::Rules::new("en-US"));
        assert!(dir.templates.len() >= 13);
        let common = render::Common {
            app_name: "Adopt & Co",
            app_base_url: "https://adoptdontshop.com",
            app_support_email: "support@adoptdontshop.com",
            recipient_email: "o'brien@example.com",
            recipient_name: Some("Dana <O'Brien>"),
            unsubscribe_url: "https://api.example/u/t?a=1&b=2",
            year: 2027,
        };
        let mut per_email = Vec::new();
        for t in &dir.templates {
            let src = render::Sources {
                subject: &t.subject,
                html: &t.html,
                text: t.text.as_deref(),
            };
            let c = render::Compiled::new(src, EMBEDDED_LAYOUT, t.variables.clone()).unwrap();
            if !c.css_preinlined() {
                per_email.push(t.name.clone());
                continue;
            }
            // Data unlike the examples: markup-like text, longer lists, optional parts absent.
            let mut data = example_data(t);
            for v in data.as_object_mut().unwrap().values_mut() {
                match v {
                    Value::String(s) => s.push_str(" <b>&amp; \"q\"</b>"),
                    Value::Array(a) if !a.is_empty() => {
                        let first = a[0].clone();
                        a.push(first);
                    }
                    _ => {}
                }
            }
            let data = data.as_object().unwrap();
            let fast = c.render(data, &common).unwrap();
            let html = c
                .tera
                .render(files::HTML, &render::context(data, &common))
                .unwrap();
            let slow = render::inline_css(&html).unwrap();
            let fast_normalised = render::inline_css(&fast.html).unwrap();
            assert!(
                preinline::same_document(&fast_normalised, &slow),
                "{}:\n{fast_normalised}\n---\n{slow}",
                t.name
            );
            assert!(!fast.html.contains("<style>\n  body"), "{}", t.name);
        }
        assert_eq!(per_email, ["system_alert"]);
    }

    #[test]
    fn secret_bearing_links_and_unsubscribe_are_never_tracked() {
        let tracker = Tracker::new(b"0123456789abcdef", "https://t.example", vec![])
            .with_redirect_hosts(crate::tracking::RedirectHosts::new(&["adoptdontshop.com"]));
        let id = Uuid::from_u128(7);
        let reset = render_shipped("password_reset", "");
        let html = tracker.inject(id, &reset.html, None);
        let reset_url =
            "https://adoptdontshop.com/reset-password?token=8f14e45fceea167a5a36dedd4bea2543";
        assert_eq!(
            html.matches(&format!("href=\"{reset_url}\"")).count(),
            2,
            "{html}"
        );
        assert!(
            html.contains("https://t.example/t/c/"),
            "other links are tracked"
        );

        let unsub = "https://api.example/u/tok123";
        let news = render_shipped("newsletter", unsub);
        let html = tracker.inject(id, &news.html, Some(unsub));
        assert!(html.contains(&format!("href=\"{unsub}\"")), "{html}");
        assert!(news.text.contains(&format!("Unsubscribe: {unsub}")));
        for (name, secret) in [
            ("email_verification", "verify-email?token="),
            ("staff_invitation", "invitations/accept?token="),
        ] {
            let p = render_shipped(name, "");
            let html = tracker.inject(id, &p.html, None);
            let direct = html
                .matches(&format!("href=\"https://adoptdontshop.com/{secret}"))
                .count();
            assert_eq!(
                direct, 2,
                "{name}: the button and the copy-paste link: {html}"
            );
        }
    }

    /// Render cost per email on the hot path, with CSS inlining and tracking:
    /// `application_update` as shipped (~10 KB of HTML) and `newsletter` with 12 featured
    /// pets (~20 KB). `cargo test --release --lib render_throughput -- --ignored --nocapture`
    #[test]
    #[ignore = "timing; run in release with --ignored --nocapture"]
    fn render_throughput() {
        let dir = files::load_dir(Path::new("templates"), &files::Rules::new("en-US"));
        for (name, pets) in [("application_update", 0), ("newsletter", 12)] {
            let t = dir.templates.iter().find(|t| t.name == name).unwrap();
            let src = render::Sources {
                subject: &t.subject,
                html: &t.html,
                text: t.text.as_deref(),
            };
            let started = Instant::now();
            let c = render::Compiled::new(src, EMBEDDED_LAYOUT, t.variables.clone()).unwrap();
            let compile = started.elapsed();
            let mut data = example_data(t);
            if pets > 0 {
                let all = data["featured_pets"].as_array().unwrap().clone();
                data["featured_pets"] =
                    Value::Array(all.iter().cycle().take(pets).cloned().collect());
            }
            let data = data.as_object().unwrap();
            let common = render::Common {
                app_name: "Adopt Don't Shop",
                app_base_url: "https://adoptdontshop.com",
                app_support_email: "support@adoptdontshop.com",
                recipient_email: "maya@example.com",
                recipient_name: Some("Maya Okafor"),
                unsubscribe_url: "https://api.adoptdontshop.com/u/token",
                year: 2026,
            };
            let tracker = Tracker::new(b"0123456789abcdef", "https://t.example", vec![])
                .with_redirect_hosts(crate::tracking::RedirectHosts::new(&["adoptdontshop.com"]));
            let n = 1000u32;
            // On-CPU time of this thread (Linux), so a busy machine does not inflate it.
            let cpu = || {
                std::fs::read_to_string("/proc/thread-self/schedstat")
                    .ok()
                    .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
                    .map(std::time::Duration::from_nanos)
            };
            let time = |f: &mut dyn FnMut()| {
                for _ in 0..50 {
                    f();
                }
                let (t0, c0) = (Instant::now(), cpu());
                for _ in 0..n {
                    f();
                }
                match (c0, cpu()) {
                    (Some(a), Some(b)) => (b - a) / n,
                    _ => t0.elapsed() / n,
                }
            };
            let ctx = render::context(data, &common);
            let raw_html = c.tera.render(files::HTML, &ctx).unwrap();
            let parts = c.render(data, &common).unwrap();
            let mut sink = 0usize;
            let full = time(&mut || {
                let p = c.render(data, &common).unwrap();
                sink += tracker
                    .inject(Uuid::nil(), &p.html, Some(common.unsubscribe_url))
                    .len();
            });
            let tera_only = time(&mut || {
                let ctx = render::context(data, &common);
                for name in [files::SUBJECT, files::HTML, files::TEXT] {
                    sink += c.tera.render(name, &ctx).unwrap().len();
                }
            });
            let css = time(&mut || sink += render::inline_css(&raw_html).unwrap().len());
            let track = time(&mut || sink += tracker.inject(Uuid::nil(), &parts.html, None).len());
            println!(
                "{name}: html {} bytes inlined ({} before), text {} bytes; compile {compile:?} once per version\n  \
                 per email (CPU time): {full:?} = {:.0} renders/s per core; of which Tera (context + 3 parts) {tera_only:?}, \
                 CSS inlining {css:?}, tracking {track:?} ({sink})",
                parts.html.len(),
                raw_html.len(),
                parts.text.len(),
                1.0 / full.as_secs_f64(),
            );
        }
    }

    #[test]
    fn pinned_versions() {
        assert_eq!(pinned_version(&json!(2)), Some(2));
        assert_eq!(pinned_version(&json!("3")), Some(3));
        assert_eq!(pinned_version(&json!(0)), None);
        assert_eq!(pinned_version(&json!("v1")), None);
        assert_eq!(pinned_version(&json!(1.5)), None);
    }
}
