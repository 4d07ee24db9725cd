//! The `templates/` directory: `layout.html` and one directory per template holding
//! `template.toml` (attributes and `[[variables]]`), `subject.txt`, `body.html` and, optionally,
//! `body.txt`. Loading reports every problem with its file and line; nothing here touches the
//! database.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

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
/// `email_templates.locale` is VARCHAR(10).
pub const MAX_LOCALE_CHARS: usize = 10;
pub use crate::config::DEFAULT_MAX_SOURCE_BYTES;

/// What loading a directory needs from the configuration.
#[derive(Debug, Clone)]
pub struct Rules {
    /// The locale of a template whose manifest names none.
    pub default_locale: String,
    /// Largest source file accepted (`templates.max_source_bytes`).
    pub max_source_bytes: usize,
}

impl From<&crate::config::TemplateSettings> for Rules {
    fn from(s: &crate::config::TemplateSettings) -> Rules {
        Rules {
            default_locale: s.default_locale.clone(),
            max_source_bytes: s.max_source_bytes,
        }
    }
}

impl Rules {
    pub fn new(default_locale: &str) -> Rules {
        Rules {
            default_locale: default_locale.to_string(),
            max_source_bytes: DEFAULT_MAX_SOURCE_BYTES,
        }
    }
}

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
    /// Where each variable's example starts in `template.toml` (name, line, column), so a
    /// problem with an example points at it.
    pub example_at: Vec<(String, usize, usize)>,
    pub subject: String,
    pub html: String,
    pub text: Option<String>,
}

impl TemplateFile {
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// The problem located at the example of variable `name` in `template.toml`.
    pub fn example_problem(&self, name: &str, message: String) -> Problem {
        let p = Problem::new(self.path(MANIFEST), message);
        match self.example_at.iter().find(|(n, _, _)| n == name) {
            Some((_, line, col)) => p.at(*line, *col),
            None => p,
        }
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
    name: Spanned<String>,
    description: Option<String>,
    #[serde(rename = "type")]
    template_type: Spanned<String>,
    category: Spanned<String>,
    locale: Option<Spanned<String>>,
    #[serde(default)]
    is_default: bool,
    #[serde(default)]
    priority: i32,
    #[serde(default)]
    tags: Vec<String>,
    status: Option<Spanned<String>>,
    parent: Option<Spanned<String>>,
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
    name: Spanned<String>,
    #[serde(rename = "type")]
    var_type: Spanned<String>,
    #[serde(default)]
    required: bool,
    description: Option<String>,
    example: Option<Spanned<toml::Value>>,
}

/// Loads every template directory under `root` (sorted by name).
pub fn load_dir(root: &Path, rules: &Rules) -> SourceDir {
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
    dirs.retain(|d| {
        let linked = std::fs::symlink_metadata(d).is_ok_and(|m| m.file_type().is_symlink());
        if linked {
            out.problems.push(Problem::new(
                d,
                "is a symbolic link; template directories must be real directories inside the templates directory",
            ));
        }
        !linked
    });
    dirs.sort();
    let layout_path = root.join(LAYOUT);
    if layout_path.exists() {
        out.layout = read(&layout_path, rules, &mut out.problems);
    }
    if dirs.is_empty() {
        out.problems.push(Problem::new(
            root,
            format!("no template directories (each needs a {MANIFEST})"),
        ));
    }
    for dir in dirs {
        if let Some(t) = load_one(&dir, rules, &mut out.problems) {
            out.templates.push(t);
        }
    }
    check_names(&mut out);
    check_defaults(&mut out);
    check_parents(&mut out);
    out
}

/// Reads a source file: at most `rules.max_source_bytes`, UTF-8 (an invalid byte is reported
/// with its line, column and byte offset).
fn read(path: &Path, rules: &Rules, problems: &mut Vec<Problem>) -> Option<String> {
    // A link could bring in any file of the machine (and its content would be stored and
    // sent): template files are regular files of the directory.
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        problems.push(Problem::new(
            path,
            "is a symbolic link; template files must be regular files inside the templates directory",
        ).at(1, 1));
        return None;
    }
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            problems.push(Problem::new(path, format!("cannot read: {e}")));
            return None;
        }
    };
    if bytes.len() > rules.max_source_bytes {
        problems.push(
            Problem::new(
                path,
                format!(
                    "{} bytes; a template file may have at most {} (templates.max_source_bytes)",
                    bytes.len(),
                    rules.max_source_bytes
                ),
            )
            .at(1, 1),
        );
        return None;
    }
    match String::from_utf8(bytes) {
        // An editor's byte-order mark is not content (it would start the subject).
        Ok(s) => Some(match s.strip_prefix('\u{feff}') {
            Some(rest) => rest.to_string(),
            None => s,
        }),
        Err(e) => {
            let offset = e.utf8_error().valid_up_to();
            let valid = std::str::from_utf8(&e.as_bytes()[..offset]).unwrap_or_default();
            let (line, col) = line_col(valid, offset);
            problems.push(
                Problem::new(
                    path,
                    format!("not UTF-8: invalid byte 0x{:02x} at byte offset {offset}; save the file as UTF-8",
                        e.as_bytes()[offset]),
                )
                .at(line, col),
            );
            None
        }
    }
}

fn load_one(dir: &Path, rules: &Rules, problems: &mut Vec<Problem>) -> Option<TemplateFile> {
    let manifest_path = dir.join(MANIFEST);
    let raw = read(&manifest_path, rules, problems)?;
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
    let mut bad = |at: Option<std::ops::Range<usize>>, message: String| {
        let mut p = Problem::new(&manifest_path, message);
        if let Some(span) = at {
            let (line, col) = line_col(&raw, span.start);
            p = p.at(line, col);
        }
        problems.push(p);
    };
    let name_span = Some(manifest.name.span());
    let name = manifest.name.into_inner();
    let dir_name = dir.file_name().map(|n| n.to_string_lossy().into_owned());
    if dir_name.as_deref() != Some(name.as_str()) {
        bad(
            name_span.clone(),
            format!(
                "name {name:?} must match the directory name {:?}",
                dir_name.unwrap_or_default()
            ),
        );
    }
    if name.is_empty()
        || name.len() > 255
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
    {
        bad(
            name_span,
            format!("name {name:?} must be 1-255 characters of a-z, A-Z, 0-9, '_', '.', '-'"),
        );
    }
    let template_type = manifest.template_type.as_ref().clone();
    if !TEMPLATE_TYPES.contains(&template_type.as_str()) {
        bad(
            Some(manifest.template_type.span()),
            format!(
                "type {template_type:?} is not one of {}",
                TEMPLATE_TYPES.join(", ")
            ),
        );
    }
    let category = manifest.category.as_ref().clone();
    if !CATEGORIES.contains(&category.as_str()) {
        bad(
            Some(manifest.category.span()),
            format!(
                "category {category:?} is not one of {}",
                CATEGORIES.join(", ")
            ),
        );
    }
    let (status, status_span) = match manifest.status {
        Some(s) => (s.as_ref().clone(), Some(s.span())),
        None => ("active".to_string(), None),
    };
    if !STATUSES.contains(&status.as_str()) {
        bad(
            status_span,
            format!("status {status:?} is not one of {}", STATUSES.join(", ")),
        );
    }
    let (locale, locale_span) = match manifest.locale {
        Some(l) => (l.as_ref().clone(), Some(l.span())),
        None => (rules.default_locale.clone(), None),
    };
    if let Err(why) = check_language_tag(&locale) {
        bad(locale_span, format!("locale {locale:?} {why}"));
    }
    let mut variables = Vec::with_capacity(manifest.variables.len());
    let mut example_at = Vec::new();
    for v in manifest.variables {
        let name_span = Some(v.name.span());
        let var_name = v.name.into_inner();
        let type_span = Some(v.var_type.span());
        let var_type: VarType =
            match serde_json::from_value(serde_json::Value::String(v.var_type.into_inner())) {
                Ok(t) => t,
                Err(e) => {
                    bad(type_span, format!("variable {var_name:?}: {e}"));
                    continue;
                }
            };
        if let VarType::Other(t) = &var_type {
            bad(
                type_span,
                format!(
                    "variable {var_name:?}: type {t:?} is not one of string, number, boolean, object, array, url, email, datetime"
                ),
            );
        }
        if !is_identifier(&var_name) {
            bad(
                name_span.clone(),
                format!("variable {var_name:?} is not a valid name"),
            );
        }
        if COMMON_VARIABLES.contains(&var_name.as_str()) {
            bad(
                name_span.clone(),
                format!("variable {var_name:?} is given to every email and cannot be declared"),
            );
        }
        if variables.iter().any(|d: &VariableDecl| d.name == var_name) {
            bad(
                name_span.clone(),
                format!("variable {var_name:?} is declared twice"),
            );
        }
        let example = match v.example {
            None => None,
            Some(e) => {
                let (line, col) = line_col(&raw, e.span().start);
                example_at.push((var_name.clone(), line, col));
                let span = e.span();
                match serde_json::to_value(e.into_inner()) {
                    Ok(e) => Some(e),
                    Err(e) => {
                        bad(Some(span), format!("variable {var_name:?}: example: {e}"));
                        None
                    }
                }
            }
        };
        if v.required && example.is_none() {
            bad(
                name_span,
                format!(
                    "variable {var_name:?} is required and needs an example (check renders every template with its examples)"
                ),
            );
        }
        variables.push(VariableDecl {
            name: var_name,
            var_type,
            required: v.required,
            description: v.description,
            example,
        });
    }
    let subject = read(&dir.join(SUBJECT), rules, problems);
    let html = read(&dir.join(HTML), rules, problems);
    let text_path = dir.join(TEXT);
    let text = if text_path.exists() {
        read(&text_path, rules, problems)
    } else {
        None
    };
    if let Some(s) = &subject {
        if s.trim().is_empty() {
            problems.push(Problem::new(dir.join(SUBJECT), "the subject is empty").at(1, 1));
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
        name,
        description: manifest.description,
        template_type,
        category,
        locale,
        is_default: manifest.is_default,
        priority: manifest.priority,
        tags: manifest.tags,
        status,
        parent: manifest.parent.map(Spanned::into_inner),
        layout: manifest.layout,
        variables,
        example_at,
        subject: subject?,
        html: html?,
        text: text.filter(|t| !t.trim().is_empty()),
    })
}

/// Names are compared case-insensitively (`welcome.fr-FR` is `welcome.fr-fr`), so two
/// directories may not differ only in case.
fn check_names(dir: &mut SourceDir) {
    let mut clash = Vec::new();
    for (i, t) in dir.templates.iter().enumerate() {
        if let Some(other) = dir.templates[..i]
            .iter()
            .find(|o| o.name.eq_ignore_ascii_case(&t.name))
        {
            clash.push((
                t.path(MANIFEST),
                format!(
                    "name {:?} differs from {:?} only in case; template names are compared case-insensitively",
                    t.name, other.name
                ),
            ));
        }
    }
    for (path, message) in clash {
        dir.problems.push(Problem::new(&path, message));
        dir.templates.retain(|t| t.path(MANIFEST) != path);
    }
}

/// At most one active default per category and locale: the category's fallback must be one
/// template.
fn check_defaults(dir: &mut SourceDir) {
    let mut problems = Vec::new();
    for (i, t) in dir.templates.iter().enumerate() {
        if !t.is_default || t.status != "active" {
            continue;
        }
        if let Some(other) = dir.templates[..i].iter().find(|o| {
            o.is_default
                && o.status == "active"
                && o.category == t.category
                && o.locale.eq_ignore_ascii_case(&t.locale)
        }) {
            problems.push(Problem::new(
                t.path(MANIFEST),
                format!(
                    "is_default = true, but {:?} is already the default of category {} in locale {}; a category has one default per locale",
                    other.name, t.category, t.locale
                ),
            ));
        }
    }
    dir.problems.extend(problems);
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

/// A BCP 47 language tag that fits `email_templates.locale`: a 2-3 letter language, then
/// optionally a 4-letter script, a region (2 letters or 3 digits) and variants, joined by
/// `-` (`en`, `en-US`, `zh-Hant-TW`, `es-419`). Says what is wrong otherwise.
pub fn check_language_tag(tag: &str) -> Result<(), String> {
    let n = tag.chars().count();
    if n > MAX_LOCALE_CHARS {
        return Err(format!(
            "is {n} characters long; email_templates.locale holds at most {MAX_LOCALE_CHARS}"
        ));
    }
    if tag.contains('_') {
        return Err(format!(
            "is not a BCP 47 language tag: subtags are joined with '-' ({:?})",
            tag.replace('_', "-")
        ));
    }
    let mut parts = tag.split('-');
    let language = parts.next().unwrap_or_default();
    if !(2..=3).contains(&language.len()) || !language.chars().all(|c| c.is_ascii_alphabetic()) {
        return Err(
            "is not a BCP 47 language tag such as en or en-US: it must start with a 2 or 3 letter language code"
                .into(),
        );
    }
    let mut stage = 0; // 1 script seen, 2 region seen
    for part in parts {
        let alpha = part.chars().all(|c| c.is_ascii_alphabetic());
        let digits = part.chars().all(|c| c.is_ascii_digit());
        let alnum = part.chars().all(|c| c.is_ascii_alphanumeric());
        if stage < 1 && part.len() == 4 && alpha {
            stage = 1;
        } else if stage < 2 && ((part.len() == 2 && alpha) || (part.len() == 3 && digits)) {
            stage = 2;
        } else if alnum
            && ((5..=8).contains(&part.len())
                || (part.len() == 4 && part.starts_with(|c: char| c.is_ascii_digit())))
        {
            stage = 3;
        } else {
            return Err(format!(
                "is not a BCP 47 language tag such as en or en-US: subtag {part:?} is not a script, region or variant"
            ));
        }
    }
    Ok(())
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
        let d = load_dir(Path::new("templates"), &Rules::new("en-US"));
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
        let d = load_dir(tmp.path(), &Rules::new("en-GB"));
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
        let d = load_dir(tmp.path(), &Rules::new("en-US"));
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
        let d = load_dir(tmp.path(), &Rules::new("en-US"));
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
        let d = load_dir(tmp.path(), &Rules::new("en-US"));
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
    fn template(root: &Path, name: &str, extra: &str) {
        write(
            root,
            &format!("{name}/template.toml"),
            &format!(
                "name = \"{name}\"\ntype = \"transactional\"\ncategory = \"welcome\"\n{extra}"
            ),
        );
        write(root, &format!("{name}/subject.txt"), "Hi");
        write(root, &format!("{name}/body.html"), "<p>Hi</p>");
    }

    fn all(d: &SourceDir) -> String {
        d.problems
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn locales_are_language_tags_that_fit_the_column() {
        for ok in ["en", "en-US", "fr-FR", "zh-Hant-TW", "es-419", "de-CH-1901"] {
            assert_eq!(check_language_tag(ok), Ok(()), "{ok}");
        }
        let why = |t: &str| check_language_tag(t).unwrap_err();
        assert!(
            why("french").contains("2 or 3 letter language"),
            "{}",
            why("french")
        );
        assert!(
            why("en-US-x-twain").contains("is 13 characters long"),
            "{}",
            why("en-US-x-twain")
        );
        assert!(why("en_GB").contains("\"en-GB\""), "{}", why("en_GB"));
        assert!(
            why("en-USA").contains("subtag \"USA\""),
            "{}",
            why("en-USA")
        );

        let tmp = tempfile::tempdir().unwrap();
        template(tmp.path(), "welcome", "locale = \"french\"\n");
        let d = load_dir(tmp.path(), &Rules::new("en-US"));
        let p = &d.problems[0];
        assert_eq!((p.line, p.col), (Some(4), Some(10)), "{p}");
        assert!(p.message.contains("locale \"french\""), "{p}");
    }

    #[test]
    fn a_variant_may_be_named_as_the_readme_shows_and_names_differ_by_more_than_case() {
        let tmp = tempfile::tempdir().unwrap();
        template(tmp.path(), "welcome", "is_default = true\n");
        template(
            tmp.path(),
            "welcome.fr-FR",
            "locale = \"fr-FR\"\nparent = \"welcome\"\n",
        );
        let d = load_dir(tmp.path(), &Rules::new("en-US"));
        assert!(d.problems.is_empty(), "{}", all(&d));
        let names: Vec<_> = d.templates.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["welcome", "welcome.fr-FR"]);

        template(tmp.path(), "Welcome", "");
        let d = load_dir(tmp.path(), &Rules::new("en-US"));
        assert!(
            all(&d).contains("differs from \"Welcome\" only in case")
                || all(&d).contains("differs from \"welcome\" only in case"),
            "{}",
            all(&d)
        );
    }

    #[test]
    fn a_category_has_one_default_per_locale() {
        let tmp = tempfile::tempdir().unwrap();
        template(tmp.path(), "welcome", "is_default = true\n");
        template(tmp.path(), "welcome2", "is_default = true\n");
        template(
            tmp.path(),
            "welcome.de",
            "is_default = true\nlocale = \"de\"\n",
        );
        let d = load_dir(tmp.path(), &Rules::new("en-US"));
        assert_eq!(d.problems.len(), 1, "{}", all(&d));
        assert!(
            d.problems[0].path.ends_with("welcome2/template.toml")
                && d.problems[0]
                    .message
                    .contains("\"welcome\" is already the default of category welcome"),
            "{}",
            all(&d)
        );
    }

    #[test]
    fn a_file_that_is_not_utf8_is_located_by_byte_offset() {
        let tmp = tempfile::tempdir().unwrap();
        template(tmp.path(), "welcome", "");
        let html = tmp.path().join("welcome/body.html");
        std::fs::write(&html, b"<p>Hi</p>\n<p>Caf\xe9</p>").unwrap();
        let d = load_dir(tmp.path(), &Rules::new("en-US"));
        let p = &d.problems[0];
        assert_eq!((p.line, p.col), (Some(2), Some(7)), "{p}");
        assert!(p.message.contains("byte offset 16"), "{p}");
        assert!(p.message.contains("0xe9"), "{p}");
    }

    #[test]
    fn a_file_over_the_size_limit_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        template(tmp.path(), "welcome", "");
        write(tmp.path(), "welcome/body.html", &"x".repeat(2001));
        let rules = Rules {
            max_source_bytes: 2000,
            ..Rules::new("en-US")
        };
        let d = load_dir(tmp.path(), &rules);
        assert!(
            all(&d).contains(
                "2001 bytes; a template file may have at most 2000 (templates.max_source_bytes)"
            ),
            "{}",
            all(&d)
        );
        assert!(d.templates.is_empty());
        assert!(
            load_dir(tmp.path(), &Rules::new("en-US"))
                .problems
                .is_empty()
        );
    }

    #[test]
    fn manifest_value_problems_point_at_the_value() {
        let tmp = tempfile::tempdir().unwrap();
        write(
            tmp.path(),
            "welcome/template.toml",
            "name = \"welcome\"\ntype = \"transactional\"\ncategory = \"welcom\"\n",
        );
        write(tmp.path(), "welcome/subject.txt", "s");
        write(tmp.path(), "welcome/body.html", "h");
        let d = load_dir(tmp.path(), &Rules::new("en-US"));
        let p = &d.problems[0];
        assert_eq!((p.line, p.col), (Some(3), Some(12)), "{p}");
    }

    #[test]
    fn links_are_refused_and_a_byte_order_mark_is_not_content() {
        let tmp = tempfile::tempdir().unwrap();
        template(tmp.path(), "welcome", "");
        write(tmp.path(), "welcome/subject.txt", "\u{feff}Welcome");
        let d = load_dir(tmp.path(), &Rules::new("en-US"));
        assert!(d.problems.is_empty(), "{}", all(&d));
        assert_eq!(d.templates[0].subject, "Welcome");

        let outside = tmp.path().join("secret.txt");
        std::fs::write(&outside, "root:x:0:0").unwrap();
        std::os::unix::fs::symlink(&outside, tmp.path().join("welcome/body.txt")).unwrap();
        let d = load_dir(tmp.path(), &Rules::new("en-US"));
        assert!(
            all(&d).contains("body.txt:1:1: is a symbolic link"),
            "{}",
            all(&d)
        );
        assert!(d.templates.is_empty());
    }
}
