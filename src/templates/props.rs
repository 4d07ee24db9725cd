//! Fuzz target `fuzz_template_data` (a property test; see `tests/it/properties.rs` for the
//! others and `scripts/fuzz`): every shipped template rendered with arbitrary JSON in place of
//! parts of its example data never panics, and what it renders never keeps template syntax
//! nor a line break in the subject.

use std::path::Path;
use std::sync::OnceLock;

use proptest::prelude::*;
use serde_json::{Map, Value};

use super::check::example_data;
use super::files::{self, TemplateFile};
use super::render::{Common, Compiled, EMBEDDED_LAYOUT, Sources};

fn shipped() -> &'static [(TemplateFile, Compiled)] {
    static SHIPPED: OnceLock<Vec<(TemplateFile, Compiled)>> = OnceLock::new();
    SHIPPED.get_or_init(|| {
        let dir = files::load_dir(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("templates"),
            &files::Rules::new("en"),
        );
        assert!(dir.problems.is_empty(), "{:?}", dir.problems);
        let layout = dir.layout.clone().unwrap_or_else(|| EMBEDDED_LAYOUT.into());
        dir.templates
            .into_iter()
            .map(|t| {
                let src = Sources {
                    subject: &t.subject,
                    html: &t.html,
                    text: t.text.as_deref(),
                };
                let compiled = Compiled::new(src, &layout, t.variables.clone()).unwrap();
                (t, compiled)
            })
            .collect()
    })
}

fn common() -> Common<'static> {
    Common {
        app_name: "Adopt Don't Shop",
        app_base_url: "https://adoptdontshop.com",
        app_support_email: "support@adoptdontshop.com",
        recipient_email: "maya@example.com",
        recipient_name: Some("Maya"),
        unsubscribe_url: "https://adoptdontshop.com/unsubscribe/t",
        year: 2026,
    }
}

fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "https?://[a-z.]{1,12}/[ -~]{0,20}".prop_map(Value::from),
        "[a-z]{1,8}@[a-z]{1,8}\\.com".prop_map(Value::from),
        "[ -~]{0,30}".prop_map(Value::from),
        Just(Value::from(
            "{{ app.name }}{% if true %}x{% endif %}\r\n<script>"
        )),
        any::<String>().prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map("[a-z_]{1,10}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Every place in `v` a value could be replaced: object fields and the first array item.
fn paths(v: &Value, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                prefix.push(k.clone());
                out.push(prefix.clone());
                paths(x, prefix, out);
                prefix.pop();
            }
        }
        Value::Array(a) if !a.is_empty() => {
            prefix.push("0".into());
            out.push(prefix.clone());
            paths(&a[0], prefix, out);
            prefix.pop();
        }
        _ => {}
    }
}

fn set(v: &mut Value, path: &[String], new: Value) {
    let Some((first, rest)) = path.split_first() else {
        *v = new;
        return;
    };
    let child = match v {
        Value::Object(m) => m.get_mut(first),
        Value::Array(a) => first.parse::<usize>().ok().and_then(|i| a.get_mut(i)),
        _ => None,
    };
    if let Some(child) = child {
        set(child, rest, new);
    }
}

fn mentions_syntax(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('{'),
        Value::Array(a) => a.iter().any(mentions_syntax),
        Value::Object(m) => m.iter().any(|(k, x)| k.contains('{') || mentions_syntax(x)),
        _ => false,
    }
}

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(64);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn fuzz_template_data(
        which in any::<usize>(),
        edits in prop::collection::vec((any::<usize>(), json()), 0..4),
        extra in proptest::option::of(("[a-z_]{1,10}", json())),
        whole in proptest::option::of(json()),
    ) {
        let (file, compiled) = &shipped()[which % shipped().len()];
        let mut data = example_data(file);
        for (at, value) in edits {
            let mut all = Vec::new();
            paths(&data, &mut Vec::new(), &mut all);
            if let Some(path) = all.get(at % all.len().max(1)) {
                set(&mut data, path, value);
            }
        }
        if let (Some((k, v)), Value::Object(m)) = (extra, &mut data) {
            m.insert(k, v);
        }
        let data: Map<String, Value> = match whole {
            Some(Value::Object(m)) => m,
            _ => data.as_object().cloned().unwrap_or_default(),
        };
        let Ok(parts) = compiled.render(&data, &common()) else {
            return Ok(());
        };
        prop_assert!(!parts.subject.contains(['\r', '\n']), "{:?}", parts.subject);
        if !mentions_syntax(&Value::Object(data)) {
            for out in [&parts.subject, &parts.html, &parts.text] {
                prop_assert!(!out.contains("{{") && !out.contains("{%"), "{}: {out}", file.name);
            }
        }
    }
}
