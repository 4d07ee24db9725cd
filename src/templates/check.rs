//! `templates check`: every template of the directory is compiled and rendered with its
//! examples (all of them, then only the required ones, so templates must cope with optional
//! variables being absent), and every problem is reported as `file:line:col: message`.
//! `templates sync` runs the same check first and writes nothing unless it passes.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::files::{self, Problem, SourceDir, TemplateFile};
use super::render::{Common, Compiled, EMBEDDED_LAYOUT, RenderProblem, Sources, TemplateIssue};
use super::vars;

/// The common variables used for check renders.
#[derive(Debug, Clone)]
pub struct SampleApp {
    pub name: String,
    pub base_url: String,
    pub support_email: String,
}

/// What `check` found.
#[derive(Debug, Default)]
pub struct CheckReport {
    /// Templates that loaded (whether or not they then had problems).
    pub checked: Vec<String>,
    pub problems: Vec<Problem>,
    pub warnings: Vec<String>,
}

impl CheckReport {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Loads and checks `dir`. The loaded directory is returned too, for sync.
pub fn check_dir(dir: &Path, rules: &files::Rules, app: &SampleApp) -> (SourceDir, CheckReport) {
    let mut source = files::load_dir(dir, rules);
    let mut report = CheckReport {
        problems: std::mem::take(&mut source.problems),
        ..CheckReport::default()
    };
    let layout_path = dir.join(files::LAYOUT);
    let layout = match &source.layout {
        Some(l) => {
            if l != EMBEDDED_LAYOUT {
                report.warnings.push(format!(
                    "{} differs from the layout compiled into this binary; emails are rendered with the compiled one until adopt-worker is rebuilt",
                    layout_path.display()
                ));
            }
            l.as_str()
        }
        None => EMBEDDED_LAYOUT,
    };
    let layout_file = if source.layout.is_some() {
        layout_path
    } else {
        PathBuf::from("<layout.html compiled into adopt-worker>")
    };
    for t in &source.templates {
        report.checked.push(t.name.clone());
        report
            .problems
            .extend(check_template(t, layout, &layout_file, app));
    }
    // A broken layout breaks every template the same way: say it once.
    let mut seen = std::collections::HashSet::new();
    report.problems.retain(|p| seen.insert(p.to_string()));
    (source, report)
}

fn check_template(
    t: &TemplateFile,
    layout: &str,
    layout_file: &Path,
    app: &SampleApp,
) -> Vec<Problem> {
    let locate = |issue: &TemplateIssue, what: &str| {
        let path = if issue.file == files::LAYOUT {
            layout_file.to_path_buf()
        } else {
            t.path(&issue.file)
        };
        let message = match &issue.undefined {
            Some(v) => format!("{what}undefined variable \"{v}\""),
            None => format!("{what}{}", issue.message),
        };
        Problem {
            path,
            line: issue.line,
            col: issue.col,
            message,
            snippet: issue.snippet.clone(),
        }
    };
    let sources = Sources {
        subject: &t.subject,
        html: &t.html,
        text: t.text.as_deref(),
    };
    if t.layout && !extends_layout(&t.html) {
        // Another parent is named at its quoted name; no extends at all, at the start.
        let other = t.html.find("extends").and_then(|at| {
            let rest = &t.html[at + "extends".len()..];
            let quote = rest.find(['"', '\''])?;
            let name_at = at + "extends".len() + quote;
            let q = t.html[name_at..].chars().next()?;
            let end = t.html[name_at + 1..].find(q)?;
            Some((name_at, &t.html[name_at + 1..name_at + 1 + end]))
        });
        let problem = match other {
            Some((at, name)) => {
                let (line, col) = files::line_col(&t.html, at);
                Problem::new(
                    t.path(files::HTML),
                    format!("extends {name:?}, but a template extends \"layout.html\" (the footer and unsubscribe link); set layout = false in template.toml to use no shared layout"),
                )
                .at(line, col)
            }
            None => Problem::new(
                t.path(files::HTML),
                "does not start with {% extends \"layout.html\" %}: the email would go out without the footer and unsubscribe link (set layout = false in template.toml if that is meant)",
            )
            .at(1, 1),
        };
        return vec![problem];
    }
    let compiled = match Compiled::new(sources, layout, t.variables.clone()) {
        Ok(c) => c,
        Err(issues) => return issues.iter().map(|i| locate(i, "")).collect(),
    };
    let (full, required) = vars::examples(&t.variables);
    if let Err(e) = vars::validate(&t.variables, &full) {
        return vec![t.example_problem(e.variable(), format!("example: {e}"))];
    }
    let mut problems = Vec::new();
    let unsubscribe = if matches!(t.template_type.as_str(), "marketing" | "notification") {
        format!("{}/unsubscribe/example-token", app.base_url)
    } else {
        String::new()
    };
    let common = Common {
        app_name: &app.name,
        app_base_url: &app.base_url,
        app_support_email: &app.support_email,
        recipient_email: "maya.okafor@example.com",
        recipient_name: Some("Maya Okafor"),
        unsubscribe_url: &unsubscribe,
        year: 2026,
    };
    for (label, data) in [
        ("all examples", &full),
        ("only the required examples", &required),
    ] {
        let what = format!("rendering with {label}: ");
        match compiled.render(data, &common) {
            Ok(parts) => {
                for (file, out, source) in [
                    (files::SUBJECT, &parts.subject, Some(t.subject.as_str())),
                    (files::HTML, &parts.html, Some(t.html.as_str())),
                    (files::TEXT, &parts.text, t.text.as_deref()),
                ] {
                    if let Some(p) = leftover_delimiters(&t.path(file), out, source, &what) {
                        problems.push(p);
                    }
                }
                if !unsubscribe.is_empty() && !parts.html.contains(unsubscribe.as_str()) {
                    problems.push(Problem::new(
                        t.path(files::HTML),
                        format!(
                            "{what}a {} email must link to unsubscribe_url; the HTML has no such link",
                            t.template_type
                        ),
                    ));
                }
                if parts.subject.is_empty() {
                    problems.push(Problem::new(
                        t.path(files::SUBJECT),
                        format!("{what}the subject is empty"),
                    ));
                }
            }
            Err(RenderProblem::Template(issue)) => problems.push(locate(&issue, &what)),
            Err(e) => problems.push(Problem::new(t.path(files::MANIFEST), format!("{what}{e}"))),
        }
    }
    // Undeclared variables the renders did not already trip over (guarded ones).
    for p in undeclared_variables(t, &compiled, layout, layout_file) {
        let name = p.message.split('"').nth(1).unwrap_or_default();
        let tripped = problems.iter().any(|q| {
            q.message
                .contains(&format!("undefined variable \"{name}\""))
                || q.message.contains(&format!("undefined variable \"{name}."))
        });
        if !tripped {
            problems.push(p);
        }
    }
    problems.dedup_by(|a, b| a.path == b.path && a.line == b.line && a.col == b.col);
    problems
}

/// A `{{` or `{%` left in a rendered part, located where the source writes the same text
/// (a `{% raw %}` block, say), else where the output has it.
fn leftover_delimiters(
    path: &Path,
    out: &str,
    source: Option<&str>,
    what: &str,
) -> Option<Problem> {
    let at = [out.find("{{"), out.find("{%")]
        .into_iter()
        .flatten()
        .min()?;
    // The delimiter and what follows it on its line, up to its closing delimiter.
    let rest = &out[at..];
    let end = rest
        .find(['\n', '\r'])
        .unwrap_or(rest.len())
        .min(rest.find("}}").map_or(usize::MAX, |e| e + 2))
        .min(rest.find("%}").map_or(usize::MAX, |e| e + 2));
    let quoted = &rest[..end];
    let in_source = source.and_then(|s| s.find(quoted).map(|i| files::line_col(s, i)));
    let (line, col, whose) = match in_source {
        Some((line, col)) => (line, col, "written here"),
        None => {
            let (line, col) = files::line_col(out, at);
            (
                line,
                col,
                "at this line and column of the rendered output; it came from the data or a variable's example",
            )
        }
    };
    Some(
        Problem::new(
            path,
            format!("{what}the output still contains template delimiters {quoted:?} ({whose})"),
        )
        .at(line, col),
    )
}

/// Every variable a part reads that is neither declared nor common, even when guarded
/// (`{% if nickname %}`, `nickname | default(...)`): rendering with the examples cannot find
/// those, since a guard hides them.
fn undeclared_variables(
    t: &TemplateFile,
    compiled: &Compiled,
    layout: &str,
    layout_file: &Path,
) -> Vec<Problem> {
    let declared = |v: &str| {
        t.variables.iter().any(|d| d.name == v)
            || files::COMMON_VARIABLES.contains(&v)
            || v == "loop"
    };
    let mut problems = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (file, source) in [
        (files::SUBJECT, Some(t.subject.as_str())),
        (files::HTML, Some(t.html.as_str())),
        (files::TEXT, t.text.as_deref()),
    ] {
        let Some(source) = source else { continue };
        let mut names: Vec<&str> = compiled
            .variables_read(file)
            .into_iter()
            .filter(|v| !declared(v))
            .collect();
        names.sort_unstable();
        for name in names {
            if !seen.insert(name.to_string()) {
                continue;
            }
            let (path, at) = match find_variable(source, name) {
                Some(at) => (t.path(file), Some(at)),
                // Read by the layout this part extends, not by the part itself.
                None => (layout_file.to_path_buf(), find_variable(layout, name)),
            };
            let mut p = Problem::new(
                path,
                format!(
                    "reads variable \"{name}\", which template.toml does not declare (add it to [[variables]], required = false if it may be absent)"
                ),
            );
            if let Some((line, col)) = at {
                p = p.at(line, col);
            }
            problems.push(p);
        }
    }
    problems
}

/// Line and column of the first whole-word `name` inside a `{{ }}` or `{% %}` tag.
fn find_variable(source: &str, name: &str) -> Option<(usize, usize)> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut from = 0;
    while let Some(open) = source[from..].find(['{']).map(|i| from + i) {
        let tag_start = source[open..]
            .strip_prefix("{{")
            .or(source[open..].strip_prefix("{%"));
        if tag_start.is_none() {
            from = open + 1;
            continue;
        }
        let close = source[open + 2..]
            .find(['}', '%'])
            .map_or(source.len(), |i| open + 2 + i);
        let tag = &source[open..close];
        let mut search = 0;
        while let Some(i) = tag[search..].find(name).map(|i| search + i) {
            let before = tag[..i].chars().next_back();
            let after = tag[i + name.len()..].chars().next();
            if !before.is_some_and(|c| word(c) || c == '.' || c == '"' || c == '\'')
                && !after.is_some_and(word)
            {
                return Some(files::line_col(source, open + i));
            }
            search = i + name.len();
        }
        from = close.max(open + 2);
    }
    None
}

/// `{% extends "layout.html" %}` (or `{%- extends 'layout.html' -%}`) anywhere in `html`.
fn extends_layout(html: &str) -> bool {
    html.match_indices("extends").any(|(at, word)| {
        let before = html[..at].trim_end();
        let after = html[at + word.len()..].trim_start();
        (before.ends_with("{%") || before.ends_with("{%-"))
            && (after.starts_with("\"layout.html\"") || after.starts_with("'layout.html'"))
    })
}

/// The examples of a template as one data object (used by tests and previews).
pub fn example_data(t: &TemplateFile) -> Value {
    Value::Object(vars::examples(&t.variables).0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app() -> SampleApp {
        SampleApp {
            name: "Adopt Don't Shop".into(),
            base_url: "https://adoptdontshop.com".into(),
            support_email: "support@adoptdontshop.com".into(),
        }
    }

    fn copy_shipped(to: &Path) {
        for entry in walk(Path::new("templates")) {
            let rel = entry.strip_prefix("templates").unwrap();
            let dest = to.join(rel);
            std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
            std::fs::copy(&entry, dest).unwrap();
        }
    }

    fn walk(p: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(p).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path);
            }
        }
        out
    }

    #[test]
    fn the_shipped_templates_pass() {
        let (dir, report) = check_dir(Path::new("templates"), &files::Rules::new("en-US"), &app());
        let all: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
        assert!(report.is_ok(), "{}", all.join("\n"));
        assert!(report.warnings.is_empty(), "{:?}", report.warnings);
        assert_eq!(report.checked.len(), 13);
        assert_eq!(dir.templates.len(), 13);
    }

    #[test]
    fn a_syntax_error_is_reported_with_file_and_line() {
        let tmp = tempfile::tempdir().unwrap();
        copy_shipped(tmp.path());
        let html = tmp.path().join("welcome/body.html");
        let src = std::fs::read_to_string(&html).unwrap();
        std::fs::write(
            &html,
            src.replacen("{{ user.first_name }}", "{{ user.first_name }", 1),
        )
        .unwrap();
        let (_, report) = check_dir(tmp.path(), &files::Rules::new("en-US"), &app());
        assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
        let line = report.problems[0].to_string();
        assert!(
            line.starts_with(&format!("{}:5:", html.display())),
            "{line}"
        );
    }

    #[test]
    fn an_undefined_variable_is_reported_with_file_and_line() {
        let tmp = tempfile::tempdir().unwrap();
        copy_shipped(tmp.path());
        let txt = tmp.path().join("welcome/body.txt");
        std::fs::write(&txt, "Hi {{ user.first_name }}\n{{ pet.name }}\n").unwrap();
        let (_, report) = check_dir(tmp.path(), &files::Rules::new("en-US"), &app());
        let line = report.problems[0].to_string();
        assert!(
            line.starts_with(&format!(
                "{}:2:4: rendering with all examples: undefined variable \"pet\"",
                txt.display()
            )),
            "{line}"
        );
    }

    #[test]
    fn an_optional_variable_used_without_a_guard_is_caught() {
        let tmp = tempfile::tempdir().unwrap();
        copy_shipped(tmp.path());
        let subject = tmp.path().join("staff_invitation/subject.txt");
        std::fs::write(&subject, "{{ invitee.first_name }}, join us").unwrap();
        let (_, report) = check_dir(tmp.path(), &files::Rules::new("en-US"), &app());
        assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
        let line = report.problems[0].to_string();
        assert!(line.contains("only the required examples"), "{line}");
        assert!(line.contains("\"invitee\""), "{line}");
    }

    #[test]
    fn a_body_without_the_layout_is_refused_unless_declared() {
        let tmp = tempfile::tempdir().unwrap();
        copy_shipped(tmp.path());
        let html = tmp.path().join("newsletter/body.html");
        std::fs::write(&html, "<p>Hello {{ recipient.name }}</p>").unwrap();
        let (_, report) = check_dir(tmp.path(), &files::Rules::new("en-US"), &app());
        let lines: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].starts_with(&format!("{}:", html.display()))
                && lines[0].contains("extends \"layout.html\""),
            "{lines:?}"
        );
        // Declared: the layout is not required, but a newsletter must still unsubscribe.
        let manifest = tmp.path().join("newsletter/template.toml");
        let m = std::fs::read_to_string(&manifest).unwrap();
        std::fs::write(&manifest, format!("layout = false\n{m}")).unwrap();
        let (_, report) = check_dir(tmp.path(), &files::Rules::new("en-US"), &app());
        let lines: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
        assert!(
            !lines.is_empty()
                && lines
                    .iter()
                    .all(|l| l.contains("must link to unsubscribe_url")),
            "{lines:?}"
        );
        std::fs::write(
            &html,
            "<p>Hello</p><a href=\"{{ unsubscribe_url }}\">Unsubscribe</a>",
        )
        .unwrap();
        let (_, report) = check_dir(tmp.path(), &files::Rules::new("en-US"), &app());
        assert!(report.is_ok(), "{:?}", report.problems);
        assert!(extends_layout("{%- extends 'layout.html' -%}"));
        assert!(!extends_layout("<p>extends \"layout.html\"</p>"));
    }

    #[test]
    fn a_changed_layout_is_checked_and_warned_about() {
        let tmp = tempfile::tempdir().unwrap();
        copy_shipped(tmp.path());
        let layout = tmp.path().join("layout.html");
        std::fs::write(
            &layout,
            EMBEDDED_LAYOUT.replace("{% block content %}", "{% block content %}{{ oops }"),
        )
        .unwrap();
        let (_, report) = check_dir(tmp.path(), &files::Rules::new("en-US"), &app());
        assert!(!report.is_ok());
        assert!(
            report.problems.iter().all(|p| p.path == layout),
            "{:?}",
            report.problems
        );
        assert_eq!(report.warnings.len(), 1);
    }
    fn problems_of(dir: &Path) -> Vec<String> {
        let (_, report) = check_dir(dir, &files::Rules::new("en-US"), &app());
        report.problems.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_guarded_undeclared_variable_is_found_at_its_line_and_column() {
        let tmp = tempfile::tempdir().unwrap();
        copy_shipped(tmp.path());
        let txt = tmp.path().join("welcome/body.txt");
        std::fs::write(
            &txt,
            "Hi {{ user.first_name }}\n{% if nickname %}aka {{ nickname }}{% endif %}\n{{ title | default(value=\"friend\") }}\n{% for p in pets | default(value=[]) %}{{ p }}{{ loop.index }}{% endfor %}{% set x = 1 %}{{ x }}\n",
        )
        .unwrap();
        let lines = problems_of(tmp.path());
        let want = |name: &str, line: usize, col: usize| {
            format!(
                "{}:{line}:{col}: reads variable \"{name}\", which template.toml does not declare",
                txt.display()
            )
        };
        for (name, line, col) in [("nickname", 2, 7), ("title", 3, 4), ("pets", 4, 13)] {
            assert!(
                lines.iter().any(|l| l.starts_with(&want(name, line, col))),
                "{name} at {line}:{col} missing from {lines:#?}"
            );
        }
        assert_eq!(lines.len(), 3, "{lines:#?}");
    }

    #[test]
    fn an_example_of_the_wrong_type_points_at_the_example() {
        let tmp = tempfile::tempdir().unwrap();
        copy_shipped(tmp.path());
        let manifest = tmp.path().join("welcome/template.toml");
        let m = std::fs::read_to_string(&manifest).unwrap();
        let (before, _) = m.split_once("example = {").expect("welcome's user example");
        let line = before.matches('\n').count() + 1;
        let m = m.replacen("example = {", "example = \"Maya\"\n# was {", 1);
        std::fs::write(&manifest, m).unwrap();
        let lines = problems_of(tmp.path());
        assert_eq!(lines.len(), 1, "{lines:#?}");
        assert!(
            lines[0].starts_with(&format!(
                "{}:{line}:11: example: variable \"user\" must be an object",
                manifest.display()
            )),
            "{lines:#?}"
        );
    }

    #[test]
    fn leftover_delimiters_are_located_in_the_source() {
        let tmp = tempfile::tempdir().unwrap();
        copy_shipped(tmp.path());
        let txt = tmp.path().join("welcome/body.txt");
        std::fs::write(
            &txt,
            "Hi {{ user.first_name }}\nUse {% raw %}{{ code }}{% endraw %} here\n",
        )
        .unwrap();
        let lines = problems_of(tmp.path());
        assert!(
            lines[0].starts_with(&format!("{}:2:14: ", txt.display()))
                && lines[0].contains("still contains template delimiters \"{{ code }}\""),
            "{lines:#?}"
        );
    }

    #[test]
    fn a_missing_extends_target_has_its_column() {
        let tmp = tempfile::tempdir().unwrap();
        copy_shipped(tmp.path());
        let html = tmp.path().join("welcome/body.html");
        let manifest = tmp.path().join("welcome/template.toml");
        let m = std::fs::read_to_string(&manifest).unwrap();
        std::fs::write(&manifest, format!("layout = false\n{m}")).unwrap();
        std::fs::write(
            &html,
            "{% extends \"base.html\" %}\n{% block content %}x{% endblock %}",
        )
        .unwrap();
        let lines = problems_of(tmp.path());
        assert!(
            lines[0].starts_with(&format!("{}:1:12: extends \"base.html\"", html.display())),
            "{lines:#?}"
        );
    }

    #[test]
    fn extending_another_file_points_at_its_name() {
        let tmp = tempfile::tempdir().unwrap();
        copy_shipped(tmp.path());
        let html = tmp.path().join("welcome/body.html");
        std::fs::write(
            &html,
            "{% extends \"nolayout.html\" %}\n{% block content %}x{% endblock %}",
        )
        .unwrap();
        let lines = problems_of(tmp.path());
        assert!(
            lines[0].starts_with(&format!(
                "{}:1:12: extends \"nolayout.html\"",
                html.display()
            )),
            "{lines:#?}"
        );
    }
}
