//! The direction of imports (docs/architecture.md "Layers"): no two top-level modules of
//! `src/`, and no two modules of `src/api/`, name each other outside their tests.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(rust_files(&p));
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    out
}

/// The code of a file without its `#[cfg(test)]` part, or nothing for a tests file.
fn code_of(path: &Path) -> String {
    if path.file_name().is_some_and(|n| n == "tests.rs") {
        return String::new();
    }
    let text = std::fs::read_to_string(path).unwrap();
    let end = text.find("#[cfg(test)]").unwrap_or(text.len());
    text[..end].to_string()
}

/// Names after each `prefix` in `code`.
fn named_after<'a>(code: &'a str, prefix: &str) -> impl Iterator<Item = &'a str> {
    code.match_indices(prefix).map(move |(at, _)| {
        let rest = &code[at + prefix.len()..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        &rest[..end]
    })
}

/// For each module of `dir` (a `x.rs` file or an `x/` directory), the sibling modules its
/// code names with one of `prefixes`.
fn graph(dir: &Path, prefixes: &[&str], skip: &[&str]) -> BTreeMap<String, BTreeSet<String>> {
    let mut modules = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_stem().unwrap().to_string_lossy().into_owned();
        if skip.contains(&name.as_str()) {
            continue;
        }
        let files = if p.is_dir() {
            rust_files(&p)
        } else {
            vec![p.clone()]
        };
        modules.entry(name).or_insert_with(Vec::new).extend(files);
    }
    let names: BTreeSet<String> = modules.keys().cloned().collect();
    modules
        .iter()
        .map(|(m, files)| {
            let mut uses = BTreeSet::new();
            for f in files {
                let code = code_of(f);
                for prefix in prefixes {
                    for n in named_after(&code, prefix) {
                        if n != m && names.contains(n) {
                            uses.insert(n.to_string());
                        }
                    }
                }
            }
            (m.clone(), uses)
        })
        .collect()
}

fn mutual(g: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut pairs = Vec::new();
    for (a, uses) in g {
        for b in uses {
            if a < b && g.get(b).is_some_and(|u| u.contains(a)) {
                pairs.push(format!("{a} <-> {b}"));
            }
        }
    }
    pairs
}

#[test]
fn no_two_modules_import_each_other() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let top = graph(&src, &["crate::"], &["main", "lib"]);
    assert!(
        top.contains_key("queue") && top["delivery"].contains("queue"),
        "{top:?}"
    );
    assert_eq!(
        mutual(&top),
        Vec::<String>::new(),
        "top-level modules: {top:#?}"
    );
    let api = graph(&src.join("api"), &["super::", "crate::api::"], &["mod"]);
    assert!(api.contains_key("webhooks"), "{api:?}");
    assert_eq!(mutual(&api), Vec::<String>::new(), "api modules: {api:#?}");
}
