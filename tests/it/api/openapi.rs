//! `/openapi.json` is valid and matches the router: every documented operation is routed,
//! and no route is added outside the documented list.

use std::collections::BTreeSet;
use std::path::Path;

use reqwest::{Method, StatusCode};

use super::*;

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

fn collect_refs(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                if k == "$ref" {
                    out.insert(v.as_str().unwrap().to_string());
                } else {
                    collect_refs(v, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn the_document_is_openapi_3_with_every_ref_resolvable() {
    let api = Api::start().await;
    let r = api.http.get(api.url("/openapi.json")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let doc: Value = r.json().await.unwrap();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        doc["openapi"]
    );
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 14, "{:?}", paths.keys());
    for (path, item) in paths {
        assert!(path.starts_with('/'), "{path}");
        let ops: Vec<&String> = item
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| METHODS.contains(&k.as_str()))
            .collect();
        assert!(!ops.is_empty(), "{path} has no operation");
        for m in ops {
            let op = &item[m];
            assert!(
                op["responses"].as_object().is_some_and(|r| !r.is_empty()),
                "{m} {path}"
            );
            // Every {param} in the path is declared.
            for seg in path.split('/').filter(|s| s.starts_with('{')) {
                let name = seg.trim_matches(|c| c == '{' || c == '}');
                let declared = op["parameters"]
                    .as_array()
                    .is_some_and(|ps| ps.iter().any(|p| p["name"] == name && p["in"] == "path"));
                assert!(declared, "{m} {path}: path parameter {name} not declared");
            }
        }
    }
    let mut refs = BTreeSet::new();
    collect_refs(&doc, &mut refs);
    assert!(!refs.is_empty());
    for r in refs {
        let pointer = r
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("external ref {r}"));
        assert!(doc.pointer(pointer).is_some(), "unresolvable $ref {r}");
    }
    for scheme in ["bearer", "webhook_signature"] {
        assert!(
            doc["components"]["securitySchemes"][scheme].is_object(),
            "{scheme}"
        );
    }
}

/// Every documented operation reaches a handler: never the router's 404 or 405.
#[tokio::test]
async fn every_documented_operation_is_routed() {
    let api = Api::start().await;
    let doc = serde_json::to_value(adopt_worker::api::openapi()).unwrap();
    for (path, item) in doc["paths"].as_object().unwrap() {
        let concrete = path
            .replace("{id}", &Uuid::new_v4().to_string())
            .replace("{token}", "some-token")
            .replace("{name}", "some-template");
        assert!(!concrete.contains('{'), "unknown parameter in {path}");
        for m in item
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| METHODS.contains(&k.as_str()))
        {
            let method = Method::from_bytes(m.to_uppercase().as_bytes()).unwrap();
            let r = api
                .http
                .request(method, api.url(&concrete))
                .send()
                .await
                .unwrap();
            assert_ne!(r.status(), StatusCode::METHOD_NOT_ALLOWED, "{m} {path}");
            if r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json")
            {
                let body: Value = r.json().await.unwrap();
                assert_ne!(
                    body["error"]["code"], "route_not_found",
                    "{m} {path} is not routed"
                );
            }
        }
    }
}

/// Routes are only added through `api::routes()` with utoipa-axum's `routes!`, which
/// documents them; any other way to add one would escape the document.
#[test]
fn no_route_is_added_outside_the_documented_list() {
    fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                rust_files(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    rust_files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    let forbidden = [
        ".route(",
        ".route_service(",
        ".nest(",
        ".nest_service(",
        "Router::new(",
    ];
    let mut found = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if forbidden.iter().any(|p| code.contains(p)) {
                found.push(format!("{}:{}: {}", f.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "add routes with `.routes(routes!(handler))` in api::routes() so they are documented:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_document_states_what_tokens_and_cursors_look_like() {
    let doc = serde_json::to_value(adopt_worker::api::openapi()).unwrap();
    let param = |path: &str, method: &str, name: &str| {
        doc["paths"][path][method]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{method} {path} has no parameter {name}"))["schema"]
            .clone()
    };
    // The click redirect refuses what does not look like a token; the pixel answers any
    // value with the image, so it declares no pattern.
    let click = param("/t/c/{token}", "get", "token");
    assert_eq!(click["pattern"], "^[A-Za-z0-9_-]+$", "{click}");
    assert_eq!(click["minLength"], 46, "{click}");
    let unsub = param("/u/{token}", "get", "token");
    assert_eq!(
        (unsub["minLength"].clone(), unsub["maxLength"].clone()),
        (serde_json::json!(1), serde_json::json!(255))
    );
    let cursor = param("/v1/emails", "get", "cursor");
    assert_eq!(cursor["minLength"], 1, "{cursor}");
}
