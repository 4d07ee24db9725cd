//! The template side of `POST /v1/emails`: `data` checked against the template (rendered
//! only when its declarations cannot tell), the version pinned, and a failure as the
//! request's problem naming its field.

use serde_json::{Value, json};

use super::TemplateRef;
use crate::api::error::{ApiError, FieldError};
use crate::queue::NewEmail;
use crate::templates::{self, LookupError, RenderError, Templates};

/// Why a template could not be used: problems of the request (422, each naming its field)
/// or an internal failure.
#[derive(Debug, thiserror::Error)]
pub enum TemplateUseError {
    #[error("{}", .0.iter().map(|e| format!("{}: {}", e.field, e.message)).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<FieldError>),
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
}

impl From<TemplateUseError> for ApiError {
    fn from(e: TemplateUseError) -> ApiError {
        match e {
            TemplateUseError::Invalid(errors) => ApiError::validation(errors),
            TemplateUseError::Db(e) => ApiError::internal(&e),
        }
    }
}

pub(in crate::api) fn invalid(field: &str, message: impl Into<String>) -> TemplateUseError {
    TemplateUseError::Invalid(vec![FieldError::new(field, message)])
}

/// A render failure as the caller's problem (naming `template`, `data` or `version`) or ours.
pub(in crate::api) fn render_problem(e: RenderError) -> TemplateUseError {
    match e {
        RenderError::Db(e) => TemplateUseError::Db(e),
        RenderError::Lookup(LookupError::NotFound(name)) => {
            invalid("template", format!("no template named {name:?}"))
        }
        e @ RenderError::Lookup(LookupError::NoActive { .. }) => invalid("template", e.to_string()),
        e @ (RenderError::DataNotObject(_) | RenderError::DataTooLarge { .. }) => {
            invalid("data", e.to_string())
        }
        e @ RenderError::UnknownVersion { .. } => invalid("version", e.to_string()),
        RenderError::Template { problem, .. } if problem.contains("variable") => {
            invalid("data", problem)
        }
        e => invalid("template", e.to_string()),
    }
}

/// A template email at enqueue: `data` checked against the template's declarations (a
/// missing variable is a 422 naming it; rendered once only for a template that reads
/// variables it does not declare, see [`Templates::check_data`]), then stored as template_id + template_data with empty subject and HTML,
/// its version pinned in `metadata.templateVersion` (and the locale in `metadata.locale`);
/// the worker renders it at send time.
pub async fn resolve_for_enqueue(
    templates: &Templates,
    mut email: NewEmail,
    t: TemplateRef,
) -> Result<NewEmail, TemplateUseError> {
    let r = templates
        .check_data(
            templates::TemplateRef::Name(&t.name),
            t.locale.as_deref(),
            &t.data,
            email.email_type,
            &email.to_email,
        )
        .await
        .map_err(render_problem)?;
    if templates.strict_data() && !r.undeclared.is_empty() {
        return Err(TemplateUseError::Invalid(undeclared_keys(
            &r.name,
            &r.undeclared,
            &r.declared,
        )));
    }
    email.template_id = Some(r.template_id);
    email.template_data = Some(t.data);
    email.subject = String::new();
    email.html_content = String::new();
    email.text_content = None;
    if let Value::Object(m) = &mut email.metadata {
        m.insert("templateVersion".into(), json!(r.version));
        if let Some(l) = t.locale {
            m.insert("locale".into(), json!(l));
        }
    }
    Ok(email)
}

/// `templates.strict_data`: each `data` key the template does not declare, named with the
/// declared one it was probably meant to be.
pub(in crate::api) fn undeclared_keys(
    template: &str,
    undeclared: &[String],
    declared: &[String],
) -> Vec<FieldError> {
    undeclared
        .iter()
        .map(|key| {
            let nearest = declared
                .iter()
                .map(|d| (strsim::jaro_winkler(key, d), d))
                .filter(|(score, _)| *score >= 0.8)
                .max_by(|a, b| a.0.total_cmp(&b.0))
                .map(|(_, d)| format!("; did you mean \"{d}\"?"))
                .unwrap_or_default();
            FieldError::new(
                format!("data.{key}"),
                format!(
                    "\"{key}\" is not a variable of template {template}: it declares {}{nearest}",
                    declared.join(", ")
                ),
            )
        })
        .collect()
}
