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
pub fn check_dir(dir: &Path, default_locale: &str, app: &SampleApp) -> (SourceDir, CheckReport) {
    let mut source = files::load_dir(dir, default_locale);
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
        return vec![Problem::new(
            t.path(files::HTML),
            "does not start with {% extends \"layout.html\" %}: the email would go out without the footer and unsubscribe link (set layout = false in template.toml if that is meant)",
        )];
    }
    let compiled = match Compiled::new(sources, layout, t.variables.clone()) {
        Ok(c) => c,
        Err(issues) => return issues.iter().map(|i| locate(i, "")).collect(),
    };
    let (full, required) = vars::examples(&t.variables);
    if let Err(e) = vars::validate(&t.variables, &full) {
        return vec![Problem::new(
            t.path(files::MANIFEST),
            format!("examples: {e}"),
        )];
    }
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
    let mut problems = Vec::new();
    for (label, data) in [
        ("all examples", &full),
        ("only the required examples", &required),
    ] {
        let what = format!("rendering with {label}: ");
        match compiled.render(data, &common) {
            Ok(parts) => {
                for (file, out) in [
                    (files::SUBJECT, &parts.subject),
                    (files::HTML, &parts.html),
                    (files::TEXT, &parts.text),
                ] {
                    if out.contains("{{") || out.contains("{%") {
                        problems.push(Problem::new(
                            t.path(file),
                            format!("{what}the output still contains template delimiters"),
                        ));
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
    problems.dedup_by(|a, b| a.path == b.path && a.line == b.line && a.col == b.col);
    problems
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
        let (dir, report) = check_dir(Path::new("templates"), "en-US", &app());
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
        let (_, report) = check_dir(tmp.path(), "en-US", &app());
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
        let (_, report) = check_dir(tmp.path(), "en-US", &app());
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
        let (_, report) = check_dir(tmp.path(), "en-US", &app());
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
        let (_, report) = check_dir(tmp.path(), "en-US", &app());
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
        let (_, report) = check_dir(tmp.path(), "en-US", &app());
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
        let (_, report) = check_dir(tmp.path(), "en-US", &app());
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
        let (_, report) = check_dir(tmp.path(), "en-US", &app());
        assert!(!report.is_ok());
        assert!(
            report.problems.iter().all(|p| p.path == layout),
            "{:?}",
            report.problems
        );
        assert_eq!(report.warnings.len(), 1);
    }
}
