//! Template variables: their declarations (`[[variables]]` in template.toml, the `variables`
//! column) and the check of an email's `template_data` against them before anything renders.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The declared type of a variable. Unknown names (e.g. written by another tool into the
/// database) are kept and not checked; `template.toml` may only use the known ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VarType {
    String,
    Number,
    Boolean,
    Object,
    Array,
    /// An absolute `http(s)` URL.
    Url,
    Email,
    /// A date/time: an RFC 3339 string the template formats with the `datetime` filter, or a
    /// string already formatted for the reader.
    Datetime,
    Other(String),
}

impl VarType {
    pub fn as_str(&self) -> &str {
        match self {
            VarType::String => "string",
            VarType::Number => "number",
            VarType::Boolean => "boolean",
            VarType::Object => "object",
            VarType::Array => "array",
            VarType::Url => "url",
            VarType::Email => "email",
            VarType::Datetime => "datetime",
            VarType::Other(s) => s,
        }
    }

    fn parse(s: &str) -> VarType {
        match s {
            "string" => VarType::String,
            "number" => VarType::Number,
            "boolean" | "bool" => VarType::Boolean,
            "object" => VarType::Object,
            "array" => VarType::Array,
            "url" => VarType::Url,
            "email" => VarType::Email,
            "datetime" | "date" => VarType::Datetime,
            other => VarType::Other(other.to_string()),
        }
    }

    /// Whether `value` has this type; `Other` accepts anything.
    fn accepts(&self, value: &Value) -> bool {
        match self {
            VarType::String | VarType::Datetime => value.is_string(),
            VarType::Number => value.is_number(),
            VarType::Boolean => value.is_boolean(),
            VarType::Object => value.is_object(),
            VarType::Array => value.is_array(),
            VarType::Url => value.as_str().is_some_and(is_absolute_http_url),
            VarType::Email => value
                .as_str()
                .is_some_and(email_address::EmailAddress::is_valid),
            VarType::Other(_) => true,
        }
    }

    /// "an object", "a url (absolute http or https)"...
    fn described(&self) -> String {
        match self {
            VarType::Object | VarType::Array | VarType::Email => format!("an {}", self.as_str()),
            VarType::Url => "a url (absolute http or https)".into(),
            VarType::Datetime => {
                "a datetime (an RFC 3339 string such as 2026-03-14T10:30:00Z, or one already formatted)".into()
            }
            other => format!("a {}", other.as_str()),
        }
    }
}

impl Serialize for VarType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for VarType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(VarType::parse(&String::deserialize(d)?))
    }
}

fn is_absolute_http_url(s: &str) -> bool {
    url::Url::parse(s).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
}

/// One `[[variables]]` entry. Stored as JSON in `email_templates.variables` (and in each
/// `versions` entry); extra keys written by other tools are ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VariableDecl {
    pub name: String,
    #[serde(rename = "type")]
    pub var_type: VarType,
    #[serde(default)]
    pub required: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub example: Option<Value>,
}

/// A JSON Schema (draft 2020-12) of `template_data` for these declarations, for services
/// that generate or check their requests: each variable's JSON type (`url` and `email` as
/// formatted strings), `required` as declared, the description and example. Keys the
/// template does not declare are allowed (`additionalProperties`), as the API allows them.
pub fn json_schema(decls: &[VariableDecl]) -> Value {
    let mut properties = Map::new();
    for d in decls {
        let mut p = match &d.var_type {
            VarType::String | VarType::Datetime => serde_json::json!({"type": "string"}),
            VarType::Number => serde_json::json!({"type": "number"}),
            VarType::Boolean => serde_json::json!({"type": "boolean"}),
            VarType::Object => serde_json::json!({"type": "object"}),
            VarType::Array => serde_json::json!({"type": "array"}),
            VarType::Url => {
                serde_json::json!({"type": "string", "format": "uri", "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://"})
            }
            VarType::Email => serde_json::json!({"type": "string", "format": "email"}),
            VarType::Other(_) => serde_json::json!({}),
        };
        if let (Some(obj), Some(Value::Object(example))) = (p.as_object_mut(), &d.example)
            && d.var_type == VarType::Object
        {
            let fields: Map<String, Value> = example
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::json!({"type": schema_type(v)})))
                .collect();
            obj.insert("properties".into(), Value::Object(fields));
        }
        if let Some(obj) = p.as_object_mut() {
            if let Some(desc) = &d.description {
                obj.insert("description".into(), Value::String(desc.clone()));
            }
            if let Some(example) = &d.example {
                obj.insert("examples".into(), Value::Array(vec![example.clone()]));
            }
        }
        properties.insert(d.name.clone(), p);
    }
    let required: Vec<Value> = decls
        .iter()
        .filter(|d| d.required)
        .map(|d| Value::String(d.name.clone()))
        .collect();
    serde_json::json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": true,
    })
}

/// The JSON Schema type name of a value.
pub fn schema_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The declared examples as data: all of them, and only those of required variables
/// (templates must render with optional variables absent).
pub fn examples(variables: &[VariableDecl]) -> (Map<String, Value>, Map<String, Value>) {
    let mut all = Map::new();
    let mut required = Map::new();
    for v in variables {
        if let Some(example) = &v.example {
            all.insert(v.name.clone(), example.clone());
            if v.required {
                required.insert(v.name.clone(), example.clone());
            }
        }
    }
    (all, required)
}

/// Why `template_data` does not fit the declarations. Displayed in `failure_reason`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VarProblem {
    #[error("missing required variable \"{0}\"")]
    Missing(String),
    #[error("variable \"{name}\" must be {expected}, got {found}")]
    WrongType {
        name: String,
        expected: String,
        found: String,
    },
}

impl VarProblem {
    /// The variable the problem is about.
    pub fn variable(&self) -> &str {
        match self {
            VarProblem::Missing(name) | VarProblem::WrongType { name, .. } => name,
        }
    }
}

/// Checks every declared variable: required ones present (and not null), present ones of
/// their declared type. Undeclared keys are allowed.
pub fn validate(decls: &[VariableDecl], data: &Map<String, Value>) -> Result<(), VarProblem> {
    for d in decls {
        match data.get(&d.name) {
            None | Some(Value::Null) if d.required => {
                return Err(VarProblem::Missing(d.name.clone()));
            }
            None | Some(Value::Null) => {}
            Some(v) if !d.var_type.accepts(v) => {
                return Err(VarProblem::WrongType {
                    name: d.name.clone(),
                    expected: d.var_type.described(),
                    found: if v.is_string() && matches!(d.var_type, VarType::Url | VarType::Email) {
                        "a string that is not one".to_string()
                    } else {
                        json_kind(v).to_string()
                    },
                });
            }
            Some(_) => {}
        }
    }
    for (name, value) in data {
        nested_urls(name, value)?;
    }
    Ok(())
}

/// Declarations describe only the top level, so a URL inside an object or array
/// (`reminder.action_url`, `pets[0].url`) is known by its key: `url` or ending in `_url`. Such
/// a string must be an absolute http(s) URL like a declared one: a `javascript:` or `data:`
/// link must not reach an `href` or the text part.
fn nested_urls(path: &str, value: &Value) -> Result<(), VarProblem> {
    let bad = |name: String| VarProblem::WrongType {
        name,
        expected: VarType::Url.described(),
        found: "a string that is not one".into(),
    };
    match value {
        Value::Object(m) => {
            for (k, v) in m {
                let here = format!("{path}.{k}");
                let is_url_key =
                    k.eq_ignore_ascii_case("url") || k.to_ascii_lowercase().ends_with("_url");
                if is_url_key && v.as_str().is_some_and(|s| !is_absolute_http_url(s)) {
                    return Err(bad(here));
                }
                nested_urls(&here, v)?;
            }
        }
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                nested_urls(&format!("{path}[{i}]"), v)?;
            }
        }
        _ => {}
    }
    Ok(())
}

pub use crate::db::lenient::json_kind;

/// Whether the JSON text of `v` would exceed `limit` bytes, computed without serialising
/// (an estimate within a few percent: escapes are counted as one byte) and stopping early.
pub fn exceeds_size(v: &Value, limit: usize) -> bool {
    fn walk(v: &Value, budget: &mut isize) -> bool {
        *budget -= match v {
            Value::Null | Value::Bool(_) => 5,
            Value::Number(_) => 8,
            Value::String(s) => s.len() as isize + 2,
            Value::Array(a) => {
                *budget -= a.len() as isize + 2;
                for x in a {
                    if walk(x, budget) {
                        return true;
                    }
                }
                0
            }
            Value::Object(m) => {
                *budget -= 2;
                for (k, x) in m {
                    *budget -= k.len() as isize + 4;
                    if walk(x, budget) {
                        return true;
                    }
                }
                0
            }
        };
        *budget < 0
    }
    let mut budget = isize::try_from(limit).unwrap_or(isize::MAX);
    walk(v, &mut budget)
}

#[cfg(test)]
mod schema_tests {
    use super::*;

    #[test]
    fn the_schema_says_what_the_check_accepts() {
        let decls: Vec<VariableDecl> = serde_json::from_value(serde_json::json!([
            {"name": "pet_name", "type": "string", "required": true, "description": "The pet", "example": "Biscuit"},
            {"name": "action_url", "type": "url", "required": true},
            {"name": "reminder", "type": "object", "example": {"when": "today", "count": 2}},
            {"name": "legacy", "type": "frobnicate"}
        ]))
        .unwrap();
        let schema = json_schema(&decls);
        assert_eq!(
            schema["required"],
            serde_json::json!(["pet_name", "action_url"])
        );
        assert_eq!(schema["properties"]["pet_name"]["type"], "string");
        assert_eq!(schema["properties"]["pet_name"]["examples"][0], "Biscuit");
        assert_eq!(schema["properties"]["action_url"]["format"], "uri");
        assert_eq!(
            schema["properties"]["reminder"]["properties"]["count"]["type"],
            "number"
        );
        assert_eq!(schema["properties"]["legacy"], serde_json::json!({}));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn decls() -> Vec<VariableDecl> {
        serde_json::from_value(json!([
            {"name": "pet", "type": "object", "required": true},
            {"name": "reset_url", "type": "url", "required": true},
            {"name": "hours", "type": "number", "required": false},
            {"name": "when", "type": "datetime"},
            {"name": "to", "type": "email"},
            {"name": "extra", "type": "whatever-another-tool-wrote", "defaultValue": 3}
        ]))
        .unwrap()
    }

    fn data(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn valid_data_passes_and_undeclared_keys_are_allowed() {
        let d = data(
            json!({"pet": {"name": "Rex"}, "reset_url": "https://a.example/r?t=1",
            "hours": 2, "when": "Monday", "to": "a@b.example", "extra": [1], "other": true}),
        );
        assert_eq!(validate(&decls(), &d), Ok(()));
    }

    #[test]
    fn missing_and_null_required_variables_are_named() {
        let d = data(json!({"reset_url": "https://a.example/"}));
        assert_eq!(
            validate(&decls(), &d).unwrap_err().to_string(),
            r#"missing required variable "pet""#
        );
        let d = data(json!({"pet": null, "reset_url": "https://a.example/"}));
        assert_eq!(
            validate(&decls(), &d),
            Err(VarProblem::Missing("pet".into()))
        );
    }

    #[test]
    fn wrong_types_name_the_variable_and_expected_type() {
        let d = data(json!({"pet": "Rex", "reset_url": "https://a.example/"}));
        assert_eq!(
            validate(&decls(), &d).unwrap_err().to_string(),
            r#"variable "pet" must be an object, got a string"#
        );
        let d = data(json!({"pet": {}, "reset_url": "javascript:alert(1)"}));
        assert_eq!(
            validate(&decls(), &d).unwrap_err().to_string(),
            r#"variable "reset_url" must be a url (absolute http or https), got a string that is not one"#
        );
        let d = data(json!({"pet": {}, "reset_url": "https://a.example/", "hours": "2"}));
        assert_eq!(
            validate(&decls(), &d).unwrap_err().to_string(),
            r#"variable "hours" must be a number, got a string"#
        );
        let d = data(json!({"pet": {}, "reset_url": "https://a.example/", "to": "nobody"}));
        assert!(validate(&decls(), &d).is_err());
    }

    #[test]
    fn optional_null_is_fine() {
        let d = data(json!({"pet": {}, "reset_url": "https://a.example/", "hours": null}));
        assert_eq!(validate(&decls(), &d), Ok(()));
    }

    #[test]
    fn declarations_roundtrip_through_json() {
        let d = decls();
        let v = serde_json::to_value(&d).unwrap();
        assert_eq!(v[5]["type"], "whatever-another-tool-wrote");
        let back: Vec<VariableDecl> = serde_json::from_value(v).unwrap();
        assert_eq!(back, d);
    }

    #[test]
    fn size_bound_is_close_to_the_serialised_length() {
        let v = json!({"a": "x".repeat(1000), "b": [1, 2, 3], "c": {"d": null}});
        let len = serde_json::to_string(&v).unwrap().len();
        assert!(!exceeds_size(&v, len + 64));
        assert!(exceeds_size(&v, len - 64));
        assert!(exceeds_size(&json!(["y".repeat(300_000)]), 256 * 1024));
    }

    #[test]
    fn urls_inside_objects_and_arrays_are_checked_like_declared_ones() {
        let d = data(json!({"pet": {}, "reset_url": "https://a.example/",
            "reminder": {"title": "t", "action_url": "javascript:alert(1)"}}));
        assert_eq!(
            validate(&decls(), &d).unwrap_err().to_string(),
            r#"variable "reminder.action_url" must be a url (absolute http or https), got a string that is not one"#
        );
        let d = data(json!({"pet": {}, "reset_url": "https://a.example/",
            "pets": [{"url": "https://a.example/1"}, {"url": " data:text/html,x"}]}));
        assert!(
            validate(&decls(), &d)
                .unwrap_err()
                .to_string()
                .contains(r#""pets[1].url""#)
        );
        let d = data(json!({"pet": {}, "reset_url": "https://a.example/",
            "pets": [{"url": "https://a.example/1", "image_url": null, "urls": "x"}]}));
        assert_eq!(validate(&decls(), &d), Ok(()));
    }
}
