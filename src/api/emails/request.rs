//! The body of `POST /v1/emails` (and each item of the batch), and its validation into a
//! row to insert. Every problem is reported with the field it is in; nothing is inserted
//! unless every field is valid.

use std::str::FromStr;

use chrono::{DateTime, FixedOffset, Utc};
use serde::{Deserialize, Deserializer, de};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::api::error::FieldError;
use crate::config::AppSettings;
use crate::queue::{EmailPriority, EmailType, NewEmail};

/// Most recipients in `cc` or `bcc`, and most tags.
pub(super) const MAX_LIST: usize = 50;

/// An email to send: either rendered content (`subject` with `html` and/or `text`) or a
/// template (`template`, optional `locale`, `data`). Its OpenAPI schema, which says all that
/// [`validate`] checks, is in `schema.rs`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnqueueRequest {
    pub to: Recipient,
    #[serde(default)]
    pub cc: Vec<String>,
    #[serde(default)]
    pub bcc: Vec<String>,
    pub reply_to: Option<String>,
    /// Defaults to the configured `app.from_email` / `app.from_name`; its domain must be on
    /// `api.allowed_sender_domains`.
    pub from: Option<Recipient>,
    pub subject: Option<String>,
    pub html: Option<String>,
    pub text: Option<String>,
    /// Template name (email_templates.name); rendered at enqueue to validate `data`, and
    /// again by the worker at send time, at the version pinned now.
    pub template: Option<String>,
    pub locale: Option<String>,
    /// Template variables (an object).
    pub data: Option<Value>,
    /// Decides which opt-outs apply: marketing and notification mail honours unsubscribes.
    /// Required.
    #[serde(rename = "type")]
    pub email_type: Option<EmailType>,
    /// Default `normal`.
    pub priority: Option<EmailPriority>,
    /// RFC 3339 with an offset; stored in UTC. Absent: as soon as possible.
    #[serde(default, deserialize_with = "with_offset")]
    pub scheduled_for: Option<DateTime<FixedOffset>>,
    #[serde(default)]
    pub tags: Vec<String>,
    /// A JSON object (or null); anything else is refused, as the worker refuses it in a row.
    pub metadata: Option<Value>,
    /// The platform user this email is for (their preferences apply): a current user whose
    /// email is `to`.
    pub user_id: Option<Uuid>,
    /// 0 to 20; default 3.
    #[serde(default, deserialize_with = "whole_number")]
    pub max_retries: Option<i32>,
    pub campaign_id: Option<String>,
}

/// A whole number as JSON Schema's `integer` means it: `3` and `3.0` alike.
fn whole_number<'a, D: Deserializer<'a>>(d: D) -> Result<Option<i32>, D::Error> {
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    let whole = n.as_i64().or_else(|| {
        n.as_f64()
            .filter(|f| f.fract() == 0.0 && f.abs() <= f64::from(i32::MAX))
            .map(|f| f as i64)
    });
    whole
        .and_then(|v| i32::try_from(v).ok())
        .map(Some)
        .ok_or_else(|| de::Error::custom(format!("expected a whole number (i32), got {n}")))
}

/// A date-time with its UTC offset. A local time without one (`2026-12-01T10:00:00`) is
/// refused saying that the offset is required: it names no instant.
fn with_offset<'a, D: Deserializer<'a>>(d: D) -> Result<Option<DateTime<FixedOffset>>, D::Error> {
    let Some(s) = Option::<String>::deserialize(d)? else {
        return Ok(None);
    };
    if let Ok(t) = s.parse::<DateTime<FixedOffset>>() {
        return Ok(Some(t));
    }
    let local = [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
    ]
    .iter()
    .any(|f| chrono::NaiveDateTime::parse_from_str(&s, f).is_ok());
    Err(de::Error::custom(if local {
        format!(
            "{s:?} has no UTC offset, which is required: add Z (UTC) or ±hh:mm, \
             e.g. 2026-12-01T10:00:00Z"
        )
    } else {
        format!(
            "{s:?} is not an RFC 3339 date-time with a UTC offset (required), \
             e.g. 2026-12-01T10:00:00Z"
        )
    }))
}

/// An address, or an address with a display name.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Recipient {
    Address(String),
    Named(NamedRecipient),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedRecipient {
    pub email: String,
    pub name: Option<String>,
}

impl Recipient {
    fn parts(&self) -> (&str, Option<&str>) {
        match self {
            Recipient::Address(a) => (a, None),
            Recipient::Named(n) => (&n.email, n.name.as_deref()),
        }
    }
}

/// A template email still to be resolved against `email_templates`.
#[derive(Debug, Clone)]
pub struct TemplateRef {
    pub name: String,
    pub locale: Option<String>,
    pub data: Value,
}

/// A request that passed validation: the row to insert, and the template to resolve (then
/// `email.template_id` and `metadata.templateVersion` come from it).
#[derive(Debug, Clone)]
pub struct Validated {
    pub email: NewEmail,
    pub template: Option<TemplateRef>,
}

/// Collects field errors; `index` is set for batch items.
struct Check {
    errors: Vec<FieldError>,
}

impl Check {
    fn fail(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push(FieldError::new(field, message));
    }

    /// A header-bound value: no CR/LF (header injection), at most `max` characters.
    fn header_text(&mut self, field: &str, value: &str, max: usize) -> bool {
        if value.contains(['\r', '\n']) {
            self.fail(
                field,
                "contains a line break (CR/LF), which could inject mail headers",
            );
            false
        } else if value.chars().any(char::is_control) {
            self.fail(field, "contains a control character");
            false
        } else if value.chars().count() > max {
            self.fail(field, format!("is longer than {max} characters"));
            false
        } else {
            true
        }
    }

    fn address(&mut self, field: &str, value: &str) -> Option<String> {
        if !self.header_text(field, value, 254) {
            return None;
        }
        let v = value.trim();
        let lettre_ok = lettre::Address::from_str(v).is_ok();
        if v.is_empty() || !lettre_ok || !email_address::EmailAddress::is_valid(v) {
            self.fail(field, format!("{v:?} is not a valid email address"));
            return None;
        }
        Some(v.to_string())
    }

    fn recipient(&mut self, field: &str, r: &Recipient) -> Option<(String, Option<String>)> {
        let (email, name) = r.parts();
        let addr_field = match r {
            Recipient::Address(_) => field.to_string(),
            Recipient::Named(_) => format!("{field}.email"),
        };
        let address = self.address(&addr_field, email);
        let name = match name {
            Some(n) if self.header_text(&format!("{field}.name"), n, 255) => {
                Some(n.trim().to_string()).filter(|n| !n.is_empty())
            }
            Some(_) => return None,
            None => None,
        };
        address.map(|a| (a, name))
    }

    fn addresses(&mut self, field: &str, values: &[String]) -> Vec<String> {
        if values.len() > MAX_LIST {
            self.fail(field, format!("at most {MAX_LIST} addresses"));
            return Vec::new();
        }
        values
            .iter()
            .enumerate()
            .filter_map(|(i, v)| self.address(&format!("{field}[{i}]"), v))
            .collect()
    }
}

/// Validates a recipient as the `to` of an enqueue: a valid address, and a display name with
/// no control characters, at most 255 characters. Returns the address and the name (trimmed;
/// None when blank).
pub fn validate_recipient(
    field: &str,
    r: &Recipient,
) -> Result<(String, Option<String>), Vec<FieldError>> {
    let mut c = Check { errors: Vec::new() };
    match c.recipient(field, r) {
        Some(v) if c.errors.is_empty() => Ok(v),
        _ => Err(c.errors),
    }
}

/// Whether `from` is an address at one of `domains` (exact, or `*.domain` for subdomains).
pub fn sender_allowed(from: &str, domains: &[String]) -> bool {
    let Some((_, domain)) = from.rsplit_once('@') else {
        return false;
    };
    crate::tracking::RedirectHosts::new(domains).allows(&domain.to_ascii_lowercase())
}

/// Validates a request into a row. `app` gives the default sender.
pub fn validate(req: EnqueueRequest, app: &AppSettings) -> Result<Validated, Vec<FieldError>> {
    let mut c = Check { errors: Vec::new() };
    let to = c.recipient("to", &req.to);
    let from = match &req.from {
        Some(f) => c.recipient("from", f),
        None => Some((app.from_email.clone(), Some(app.from_name.clone()))),
    };
    let cc = c.addresses("cc", &req.cc);
    let bcc = c.addresses("bcc", &req.bcc);
    let reply_to = req
        .reply_to
        .as_deref()
        .and_then(|r| c.address("reply_to", r));

    let rendered = req.subject.is_some() || req.html.is_some() || req.text.is_some();
    let template = match (&req.template, rendered) {
        (Some(_), true) => {
            c.fail("template", crate::queue::CONTENT_OR_TEMPLATE);
            None
        }
        (Some(name), false) => {
            if name.trim().is_empty() || name.chars().count() > 255 {
                c.fail("template", "must be a template name");
            }
            let data = match &req.data {
                None => Value::Object(Map::new()),
                Some(d @ Value::Object(_)) => d.clone(),
                Some(_) => {
                    c.fail("data", "must be an object of template variables");
                    Value::Null
                }
            };
            if let Some(l) = &req.locale {
                c.header_text("locale", l, 10);
            }
            Some(TemplateRef {
                name: name.trim().to_string(),
                locale: req.locale.clone(),
                data,
            })
        }
        (None, _) => {
            for (field, given) in [
                ("data", req.data.is_some()),
                ("locale", req.locale.is_some()),
            ] {
                if given {
                    c.fail(field, "only with a template");
                }
            }
            match req.subject.as_deref() {
                None => c.fail(
                    "subject",
                    "required (or send a template instead of rendered content)",
                ),
                Some(s) if s.trim().is_empty() => c.fail("subject", "must not be empty"),
                Some(s) => {
                    c.header_text("subject", s, 500);
                }
            }
            let has_body = [&req.html, &req.text]
                .iter()
                .any(|b| b.as_deref().is_some_and(|b| !b.trim().is_empty()));
            if !has_body {
                c.fail("html", "html and/or text is required and must not be empty");
            }
            None
        }
    };
    if req.email_type.is_none() {
        c.fail(
            "type",
            "required: transactional, notification, marketing or system (it decides which opt-outs apply)",
        );
    }
    if let Some(m) = req.max_retries
        && !(0..=20).contains(&m)
    {
        c.fail("max_retries", "must be between 0 and 20");
    }
    if req.tags.len() > MAX_LIST {
        c.fail("tags", format!("at most {MAX_LIST} tags"));
    }
    for (i, t) in req.tags.iter().enumerate() {
        if t.trim().is_empty() || t.chars().count() > 100 || t.chars().any(char::is_control) {
            c.fail(
                format!("tags[{i}]"),
                "must be 1 to 100 characters without control characters",
            );
        }
    }
    if let Some(id) = &req.campaign_id {
        c.header_text("campaign_id", id, 255);
    }
    let metadata = match req.metadata {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m,
        Some(other) => {
            if let Some(why) = crate::queue::metadata_problem(&other) {
                c.fail("metadata", why);
            }
            Map::new()
        }
    };
    let (Some((to_email, to_name)), Some((from_email, from_name)), true) =
        (to, from, c.errors.is_empty())
    else {
        return Err(c.errors);
    };
    let email = NewEmail {
        from_email,
        from_name,
        to_email,
        to_name,
        cc_emails: cc,
        bcc_emails: bcc,
        reply_to_email: reply_to,
        subject: req.subject.unwrap_or_default(),
        html_content: req.html.unwrap_or_default(),
        text_content: req.text.filter(|t| !t.trim().is_empty()),
        template_id: None,
        template_data: template.as_ref().map(|t| t.data.clone()),
        email_type: req.email_type.unwrap_or(EmailType::Transactional),
        priority: req.priority.unwrap_or(EmailPriority::Normal),
        scheduled_for: req.scheduled_for.map(|t| t.with_timezone(&Utc).naive_utc()),
        max_retries: Some(req.max_retries.unwrap_or(3)),
        metadata: Value::Object(metadata),
        campaign_id: req.campaign_id,
        user_id: req.user_id,
        created_by: None,
        tags: req.tags,
    };
    Ok(Validated { email, template })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app() -> AppSettings {
        AppSettings {
            name: "Adopt".into(),
            base_url: "https://adoptdontshop.com".into(),
            support_email: "support@adoptdontshop.com".into(),
            from_email: "noreply@adoptdontshop.com".into(),
            from_name: "Adopt Don't Shop".into(),
        }
    }

    fn req(v: serde_json::Value) -> EnqueueRequest {
        serde_json::from_value(v).unwrap()
    }

    fn fields(v: serde_json::Value) -> Vec<String> {
        validate(req(v), &app())
            .unwrap_err()
            .into_iter()
            .map(|e| e.field)
            .collect()
    }

    #[test]
    fn rendered_email_gets_defaults_and_utc_schedule() {
        let v = validate(
            req(
                serde_json::json!({"to": {"email": "maya@example.com", "name": "Maya"},
                "subject": "Hi", "html": "<p>x</p>", "type": "marketing",
                "scheduled_for": "2026-12-01T10:00:00+02:00"}),
            ),
            &app(),
        )
        .unwrap();
        assert_eq!(v.email.from_email, "noreply@adoptdontshop.com");
        assert_eq!(v.email.to_name.as_deref(), Some("Maya"));
        assert_eq!(
            v.email.scheduled_for.unwrap().to_string(),
            "2026-12-01 08:00:00"
        );
        assert_eq!(v.email.max_retries, Some(3));
    }

    #[test]
    fn max_retries_is_any_whole_json_number() {
        let with = |n: &str| {
            serde_json::from_str::<EnqueueRequest>(&format!(
                r#"{{"to": "a@example.com", "max_retries": {n}}}"#
            ))
            .map(|r| r.max_retries)
        };
        assert_eq!(with("5").unwrap(), Some(5));
        assert_eq!(with("20.0").unwrap(), Some(20));
        assert_eq!(
            with("-1").unwrap(),
            Some(-1),
            "range is validate's business"
        );
        assert_eq!(with("null").unwrap(), None);
        assert!(with("2.5").is_err());
        assert!(with("1e10").is_err());
        assert!(with("\"3\"").is_err());
    }

    #[test]
    fn each_problem_names_its_field() {
        let f = fields(
            serde_json::json!({"to": "nope", "cc": ["a@example.com", "bad"],
            "subject": "Hi\r\nBcc: x@example.com", "type": "system", "text": "t",
            "from": {"email": "a@example.com", "name": "A\nB"}, "max_retries": 21}),
        );
        assert_eq!(
            f,
            vec!["to", "from.name", "cc[1]", "subject", "max_retries"]
        );
        let f = fields(serde_json::json!({"to": "a@example.com", "subject": "s"}));
        assert_eq!(f, vec!["html", "type"]);
        let f = fields(
            serde_json::json!({"to": "a@example.com", "template": "welcome",
            "html": "x", "type": "system"}),
        );
        assert_eq!(f, vec!["template"]);
        let f = fields(
            serde_json::json!({"to": "a@example.com", "template": "welcome",
            "data": [1]}),
        );
        assert_eq!(f, vec!["data", "type"]);
    }
}
