//! Column types that never fail a whole result set. Other services write the shared tables
//! with SQL, and PostgreSQL accepts values that our types cannot hold: a JSON number out of
//! range (`1e400`), JSON nested too deep, a NULL inside a `TEXT[]`, `'-infinity'` in a
//! timestamp. sqlx fails the whole query on the first such value, so one odd row would
//! strand every row read with it. These types decode anything and say per value what was
//! wrong, so the caller ends only the row that holds it.

use serde_json::Value;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgTypeInfo, PgValueRef};
use sqlx::{Decode, Postgres, Type};

/// "a string", "an object"...: what a JSON value is, never what it holds (reasons are shown
/// to operators and must not leak tokens from the data).
pub fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Deepest JSON nesting accepted in a row's JSON columns (rendering and the gate walk it
/// recursively).
pub const MAX_JSON_DEPTH: usize = 64;

/// A JSON column selected as `column::text`, parsed here: `Err` holds why it cannot be used.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonText(pub Result<Value, String>);

impl JsonText {
    /// Parses JSON text; numbers out of `f64` range and nesting deeper than
    /// [`MAX_JSON_DEPTH`] are errors.
    pub fn parse(text: &str) -> JsonText {
        let parsed = serde_json::from_str::<Value>(text)
            .map_err(|e| {
                if e.to_string().contains("recursion limit") {
                    format!("is nested deeper than {MAX_JSON_DEPTH} levels")
                } else {
                    format!("is not usable JSON ({e})")
                }
            })
            .and_then(|v| {
                if depth(&v) > MAX_JSON_DEPTH {
                    Err(format!("is nested deeper than {MAX_JSON_DEPTH} levels"))
                } else {
                    Ok(v)
                }
            });
        JsonText(parsed)
    }

    pub fn value(&self) -> Option<&Value> {
        self.0.as_ref().ok()
    }

    pub fn problem(&self) -> Option<&str> {
        self.0.as_ref().err().map(String::as_str)
    }
}

/// Nesting depth of a JSON value (a scalar is 0, `[1]` is 1), without recursion.
pub fn depth(v: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(v, 0usize)];
    while let Some((v, d)) = stack.pop() {
        deepest = deepest.max(d);
        match v {
            Value::Array(items) => stack.extend(items.iter().map(|i| (i, d + 1))),
            Value::Object(map) => stack.extend(map.values().map(|i| (i, d + 1))),
            _ => {}
        }
    }
    deepest
}

impl Type<Postgres> for JsonText {
    fn type_info() -> PgTypeInfo {
        <String as Type<Postgres>>::type_info()
    }
    fn compatible(ty: &PgTypeInfo) -> bool {
        <String as Type<Postgres>>::compatible(ty)
    }
}

impl<'r> Decode<'r, Postgres> for JsonText {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        let text = <&str as Decode<Postgres>>::decode(value)?;
        Ok(JsonText::parse(text))
    }
}

/// A `TEXT[]` whose elements may be NULL (`ARRAY['a', NULL]`).
pub type TextArray = Vec<Option<String>>;

/// The array without its NULL elements, and whether it had any.
pub fn without_nulls(items: Option<TextArray>) -> (Option<Vec<String>>, bool) {
    match items {
        None => (None, false),
        Some(items) => {
            let had_null = items.iter().any(Option::is_none);
            (Some(items.into_iter().flatten().collect()), had_null)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_numbers_and_depth_are_problems_not_panics() {
        assert!(JsonText::parse(r#"{"n":1e400}"#).problem().is_some());
        assert_eq!(
            JsonText::parse(r#"{"n":1}"#).value(),
            Some(&serde_json::json!({"n":1}))
        );
        let deep = format!("{}1{}", "[".repeat(65), "]".repeat(65));
        assert!(JsonText::parse(&deep).problem().unwrap().contains("deeper"));
        let deeper = format!("{}1{}", "[".repeat(500), "]".repeat(500));
        assert!(
            JsonText::parse(&deeper)
                .problem()
                .unwrap()
                .contains("deeper")
        );
        let ok = format!("{}1{}", "[".repeat(64), "]".repeat(64));
        assert!(JsonText::parse(&ok).value().is_some());
    }

    #[test]
    fn null_elements_are_dropped_and_reported() {
        let (v, had) = without_nulls(Some(vec![Some("a".into()), None]));
        assert_eq!(v, Some(vec!["a".to_string()]));
        assert!(had);
        assert_eq!(without_nulls(None), (None, false));
    }
}
