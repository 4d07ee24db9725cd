//! The `templates/` directory: `layout.html` and one directory per template holding
//! `template.toml` (attributes and `[[variables]]`), `subject.txt`, `body.html` and, optionally,
//! `body.txt`. Loading reports every problem with its file and line; nothing here touches the
//! database.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::vars::{VarType, VariableDecl};

pub const MANIFEST: &str = "template.toml";
pub const SUBJECT: &str = "subject.txt";
pub const HTML: &str = "body.html";
pub const TEXT: &str = "body.txt";
pub const LAYOUT: &str = "layout.html";

/// `template_type_enum`.
pub const TEMPLATE_TYPES: [&str; 5] = [
    "transactional",
    "notification",
    "marketing",
    "system",
    "administrative",
];
/// `template_category_enum`.
pub const CATEGORIES: [&str; 12] = [
    "welcome",
    "password_reset",
    "email_verification",
    "application_update",
    "adoption_confirmation",
    "rescue_verification",
    "staff_invitation",
    "notification_digest",
    "reminder",
    "announcement",
    "newsletter",
    "system_alert",
];
/// `template_status_enum`.
pub const STATUSES: [&str; 4] = ["draft", "active", "inactive", "archived"];
/// Variables every email gets; templates may not declare them.
pub const COMMON_VARIABLES: [&str; 4] = ["app", "recipient", "unsubscribe_url", "year"];
/// `email_templates.subject` is VARCHAR(500).
pub const MAX_SUBJECT_CHARS: usize = 500;

/// Something wrong in a source file, located as `path:line:col` when the line is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: PathBuf,
    pub line: Option<usize>,
    pub col: Option<usize>,
    pub message: String,
    /// The offending source line with a caret, when known.
    pub snippet: Option<String>,
}

impl Problem {
    pub fn new(path: impl Into<PathBuf>, message: impl Into<String>) -> Problem {
        Problem {
            path: path.into(),
            line: None,
            col: None,
            message: message.into(),
            snippet: None,
        }
    }

    pub fn at(mut self, line: usize, col: usize) -> Problem {
        self.line = Some(line);
        self.col = Some(col);
        self
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.col {
                write!(f, ":{col}")?;
            }
        }
        write!(f, ": {}", self.message)?;
        if let Some(s) = &self.snippet {
            write!(f, "\n{s}")?;
        }
        Ok(())
    }
}

/// One template as written in its directory, already validated field by field.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateFile {
    pub dir: PathBuf,
    pub name: String,
    pub description: Option<String>,
    pub template_type: String,
    pub category: String,
    pub locale: String,
    pub is_default: bool,
    pub priority: i32,
    pub tags: Vec<String>,
    pub status: String,
    /// Name of the template this one is a variant of (sets `parent_template_id`).
    pub parent: Option<String>,
    /// `body.html` must extend `layout.html` (footer, unsubscribe link) unless the manifest
    /// says `layout = false`.
    pub layout: bool,
    pub variables: Vec<VariableDecl>,
    pub subject: String,
    pub html: String,
    pub text: Option<String>,
}

impl TemplateFile {
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }
}

/// The whole directory: what loaded, and every problem found on the way.
#[derive(Debug, Default)]
pub struct SourceDir {
    pub root: PathBuf,
    /// `layout.html` from the directory, when it has one.
    pub layout: Option<String>,
    pub templates: Vec<TemplateFile>,
    pub problems: Vec<Problem>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    name: String,
    description: Option<String>,
    #[serde(rename = "type")]
    template_type: String,
    category: String,
    locale: Option<String>,
    #[serde(default)]
    is_default: bool,
    #[serde(default)]
    priority: i32,
    #[serde(default)]
    tags: Vec<String>,
    status: Option<String>,
    parent: Option<String>,
    #[serde(default = "uses_layout")]
    layout: bool,
    #[serde(default)]
    variables: Vec<ManifestVar>,
}

fn uses_layout() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestVar {
    name: String,
    #[serde(rename = "type")]
    var_type: String,
    #[serde(default)]
    required: bool,
    description: Option<String>,
    example: Option<toml::Value>,
}

/// Loads every template directory under `root` (sorted by name).
pub fn load_dir(root: &Path, default_locale: &str) -> SourceDir {
    let mut out = SourceDir {
        root: root.to_path_buf(),
        ..SourceDir::default()
    };
    let entries = match std::fs::read_dir(root) {
        Ok(e) => e,
        Err(e) => {
            out.problems.push(Problem::new(
                root,
                format!("cannot read the directory: {e}"),
            ));
            return out;
        }
    };
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir() && p.join(MANIFEST).exists())
        .collect();
    dirs.sort();
    let layout_path = root.join(LAYOUT);
    if layout_path.exists() {
        match std::fs::read_to_string(&layout_path) {
            Ok(s) => out.layout = Some(s),
            Err(e) => out
                .problems
                .push(Problem::new(layout_path, format!("cannot read: {e}"))),
        }
    }
    if dirs.is_empty() {
        out.problems.push(Problem::new(
            root,
            format!("no template directories (each needs a {MANIFEST})"),
        ));
    }
    for dir in dirs {
        if let Some(t) = load_one(&dir, default_locale, &mut out.problems) {
            out.templates.push(t);
        }
    }
    check_parents(&mut out);
    out
}

fn read(path: &Path, problems: &mut Vec<Problem>) -> Option<String> {
    match std::fs::read_to_string(path) {
        Ok(s) => Some(s),
        Err(e) => {
            problems.push(Problem::new(path, format!("cannot read: {e}")));
            None
        }
    }
}

fn load_one(dir: &Path, default_locale: &str, problems: &mut Vec<Problem>) -> Option<TemplateFile> {
    let manifest_path = dir.join(MANIFEST);
    let raw = read(&manifest_path, problems)?;
    let manifest: Manifest = match toml::from_str(&raw) {
        Ok(m) => m,
        Err(e) => {
            let mut p = Problem::new(&manifest_path, e.message().to_string());
            if let Some(span) = e.span() {
                let (line, col) = line_col(&raw, span.start);
                p = p.at(line, col);
            }
            problems.push(p);
            return None;
        }
    };
    let before = problems.len();
    let mut bad = |message: String| problems.push(Problem::new(&manifest_path, message));
    let dir_name = dir.file_name().map(|n| n.to_string_lossy().into_owned());
    if dir_name.as_deref() != Some(manifest.name.as_str()) {
        bad(format!(
            "name {:?} must match the directory name {:?}",
            manifest.name,
            dir_name.unwrap_or_default()
        ));
    }
    if manifest.name.is_empty()
        || manifest.name.len() > 255
        || !manifest
            .name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-".contains(c))
    {
        bad(format!(
            "name {:?} must be 1-255 characters of a-z, 0-9, '_', '.', '-'",
            manifest.name
        ));
    }
    if !TEMPLATE_TYPES.contains(&manifest.template_type.as_str()) {
        bad(format!(
            "type {:?} is not one of {}",
            manifest.template_type,
            TEMPLATE_TYPES.join(", ")
        ));
    }
    if !CATEGORIES.contains(&manifest.category.as_str()) {
        bad(format!(
            "category {:?} is not one of {}",
            manifest.category,
            CATEGORIES.join(", ")
        ));
    }
    let status = manifest.status.unwrap_or_else(|| "active".to_string());
    if !STATUSES.contains(&status.as_str()) {
        bad(format!(
            "status {status:?} is not one of {}",
            STATUSES.join(", ")
        ));
    }
    let locale = manifest
        .locale
        .unwrap_or_else(|| default_locale.to_string());
    if !is_locale(&locale) {
        bad(format!(
            "locale {locale:?} is not a locale such as en or en-US"
        ));
    }
    let mut variables = Vec::with_capacity(manifest.variables.len());
    for v in manifest.variables {
        let var_type: VarType = match serde_json::from_value(serde_json::Value::String(v.var_type))
        {
            Ok(t) => t,
            Err(e) => {
                bad(format!("variable {:?}: {e}", v.name));
                continue;
            }
        };
        if let VarType::Other(t) = &var_type {
            bad(format!(
                "variable {:?}: type {t:?} is not one of string, number, boolean, object, array, url, email, datetime",
                v.name
            ));
        }
        if !is_identifier(&v.name) {
            bad(format!("variable {:?} is not a valid name", v.name));
        }
        if COMMON_VARIABLES.contains(&v.name.as_str()) {
            bad(format!(
                "variable {:?} is given to every email and cannot be declared",
                v.name
            ));
        }
        if variables.iter().any(|d: &VariableDecl| d.name == v.name) {
            bad(format!("variable {:?} is declared twice", v.name));
        }
        let example = match v.example.map(serde_json::to_value).transpose() {
            Ok(e) => e,
            Err(e) => {
                bad(format!("variable {:?}: example: {e}", v.name));
                None
            }
        };
        if v.required && example.is_none() {
            bad(format!(
                "variable {:?} is required and needs an example (check renders every template with its examples)",
                v.name
            ));
        }
        variables.push(VariableDecl {
            name: v.name,
            var_type,
            required: v.required,
            description: v.description,
            example,
        });
    }
    let subject = read(&dir.join(SUBJECT), problems);
    let html = read(&dir.join(HTML), problems);
    let text_path = dir.join(TEXT);
    let text = if text_path.exists() {
        read(&text_path, problems)
    } else {
        None
    };
    if let Some(s) = &subject {
        if s.trim().is_empty() {
            problems.push(Problem::new(dir.join(SUBJECT), "the subject is empty"));
        }
        let n = s.chars().count();
        if n > MAX_SUBJECT_CHARS {
            problems.push(Problem::new(
                dir.join(SUBJECT),
                format!(
                    "{n} characters; email_templates.subject holds at most {MAX_SUBJECT_CHARS}"
                ),
            ));
        }
    }
    if problems.len() > before {
        return None;
    }
    Some(TemplateFile {
        dir: dir.to_path_buf(),
        name: manifest.name,
        description: manifest.description,
        template_type: manifest.template_type,
        category: manifest.category,
        locale,
        is_default: manifest.is_default,
        priority: manifest.priority,
        tags: manifest.tags,
        status,
        parent: manifest.parent,
        layout: manifest.layout,
        variables,
        subject: subject?,
        html: html?,
        text: text.filter(|t| !t.trim().is_empty()),
    })
}

/// A template's `parent` must be another template of the directory, without cycles; they
/// are then ordered parents first, so sync can resolve `parent_template_id` as it goes.
fn check_parents(dir: &mut SourceDir) {
    let names: Vec<String> = dir.templates.iter().map(|t| t.name.clone()).collect();
    let parent_of = |name: &str, templates: &[TemplateFile]| {
        templates
            .iter()
            .find(|t| t.name == name)
            .and_then(|t| t.parent.clone())
    };
    let mut depth = Vec::with_capacity(names.len());
    let mut broken = Vec::new();
    for t in &dir.templates {
        let mut d = 0;
        let mut cur = t.parent.clone();
        while let Some(p) = cur {
            if !names.contains(&p) {
                broken.push((
                    t.path(MANIFEST),
                    format!("parent {p:?} is not a template of this directory"),
                ));
                break;
            }
            d += 1;
            if d > names.len() {
                broken.push((
                    t.path(MANIFEST),
                    "parent chain loops back on itself".to_string(),
                ));
                break;
            }
            cur = parent_of(&p, &dir.templates);
        }
        depth.push(d);
    }
    let broken_dirs: Vec<PathBuf> = broken.iter().map(|(p, _)| p.clone()).collect();
    for (path, message) in broken {
        dir.problems.push(Problem::new(path, message));
    }
    let mut order: Vec<usize> = (0..dir.templates.len())
        .filter(|&i| !broken_dirs.contains(&dir.templates[i].path(MANIFEST)))
        .collect();
    order.sort_by_key(|&i| (depth[i], dir.templates[i].name.clone()));
    let mut sorted: Vec<Option<TemplateFile>> = std::mem::take(&mut dir.templates)
        .into_iter()
        .map(Some)
        .collect();
    dir.templates = order.into_iter().filter_map(|i| sorted[i].take()).collect();
}

/// `en`, `en-US`, `zh-Hant`, `en_GB`.
pub fn is_locale(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 10
        && s.split(['-', '_'])
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric()))
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// 1-based line and column of a byte offset.
pub fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let before = source.get(..offset).unwrap_or(source);
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map_or(before.chars().count(), |nl| {
        before[nl + 1..].chars().count()
    }) + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, rel: &str, content: &str) {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }

    const OK: &str = r#"
name = "welcome"
type = "transactional"
category = "welcome"
[[variables]]
name = "user"
type = "object"
required = true
example = { first_name = "Maya" }
"#;

    #[test]
    fn the_shipped_directory_loads_without_problems() {
        let d = load_dir(Path::new("templates"), "en-US");
        assert!(d.problems.is_empty(), "{:#?}", d.problems);
        assert_eq!(d.templates.len(), 13);
        assert!(d.layout.is_some());
        let cats: std::collections::BTreeSet<_> =
            d.templates.iter().map(|t| t.category.as_str()).collect();
        assert_eq!(cats.len(), 12);
    }

    #[test]
    fn a_minimal_template_loads_with_defaults() {
        let tmp = tempfile::tempdir().unwrap();
        write(tmp.path(), "welcome/template.toml", OK);
        write(tmp.path(), "welcome/subject.txt", "Hi");
        write(tmp.path(), "welcome/body.html", "<p>Hi</p>");
        let d = load_dir(tmp.path(), "en-GB");
        assert!(d.problems.is_empty(), "{:#?}", d.problems);
        let t = &d.templates[0];
        assert_eq!((t.locale.as_str(), t.status.as_str()), ("en-GB", "active"));
        assert_eq!(t.text, None);
        assert_eq!(
            t.variables[0].example,
            Some(serde_json::json!({"first_name": "Maya"}))
        );
    }

    #[test]
    fn manifest_errors_are_located() {
        let tmp = tempfile::tempdir().unwrap();
        write(
            tmp.path(),
            "welcome/template.toml",
            "name = \"welcome\"\ntype = \"transactional\"\ncategory = \"welcome\"\nbogus = 1\n",
        );
        let d = load_dir(tmp.path(), "en-US");
        let p = &d.problems[0];
        assert!(p.path.ends_with("welcome/template.toml"), "{p}");
        assert_eq!(p.line, Some(4), "{p}");
        assert!(p.message.contains("bogus"), "{p}");
    }

    #[test]
    fn bad_values_are_each_reported() {
        let tmp = tempfile::tempdir().unwrap();
        write(
            tmp.path(),
            "x/template.toml",
            r#"name = "y"
type = "spam"
category = "nope"
locale = "en US"
parent = "ghost"
[[variables]]
name = "app"
type = "object"
[[variables]]
name = "n"
type = "integer"
required = true
"#,
        );
        write(tmp.path(), "x/subject.txt", &"s".repeat(501));
        write(tmp.path(), "x/body.html", "x");
        let d = load_dir(tmp.path(), "en-US");
        let all = d
            .problems
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n");
        for needle in [
            "must match the directory name",
            "type \"spam\"",
            "category \"nope\"",
            "locale \"en US\"",
            "\"app\" is given to every email",
            "type \"integer\"",
            "needs an example",
            "at most 500",
        ] {
            assert!(all.contains(needle), "{needle} missing from:\n{all}");
        }
        assert!(d.templates.is_empty());
    }

    #[test]
    fn parents_must_exist_and_come_first() {
        let tmp = tempfile::tempdir().unwrap();
        for (name, parent) in [("a.fr", Some("a")), ("a", None), ("b", Some("ghost"))] {
            let mut toml =
                format!("name = \"{name}\"\ntype = \"transactional\"\ncategory = \"welcome\"\n");
            if let Some(p) = parent {
                toml.push_str(&format!("parent = \"{p}\"\n"));
            }
            write(tmp.path(), &format!("{name}/template.toml"), &toml);
            write(tmp.path(), &format!("{name}/subject.txt"), "s");
            write(tmp.path(), &format!("{name}/body.html"), "h");
        }
        let d = load_dir(tmp.path(), "en-US");
        let names: Vec<_> = d.templates.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["a", "a.fr"]);
        assert_eq!(d.problems.len(), 1, "{:?}", d.problems);
        assert!(d.problems[0].message.contains("ghost"));
    }

    #[test]
    fn line_col_is_one_based() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
        assert_eq!(line_col("ab\n", 99), (2, 1));
    }
}
