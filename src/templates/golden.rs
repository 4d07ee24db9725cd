//! Golden files of the text part made from HTML (`tests/golden/text/NAME.txt`): every shipped
//! template rendered with its examples, and the benchmark's bring-your-own-HTML newsletter
//! (`bench_fixture`) in its template. The shipped templates all have a `body.txt`, which is
//! what their emails carry; their files show what the converter makes of their HTML (an
//! HTML-only template, or a pre-rendered row without text, gets exactly that).
//!
//! `UPDATE_GOLDEN=1 cargo test --lib golden` rewrites the files; review them with `git diff`.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use super::render::{self, Common, Compiled, Sources};
use super::text::html_to_text;
use super::{EMBEDDED_LAYOUT, example_data, files};
use crate::bench_fixture;

const DIR: &str = "tests/golden/text";

fn common() -> Common<'static> {
    Common {
        app_name: "Adopt Don't Shop",
        app_base_url: "https://adoptdontshop.com",
        app_support_email: "support@adoptdontshop.com",
        recipient_email: "maya@example.com",
        recipient_name: Some("Maya Okafor"),
        unsubscribe_url: "https://api.adoptdontshop.com/u/t0k3n",
        year: 2026,
    }
}

/// (name, rendered parts, whether the template has a body.txt) for every golden file.
fn cases() -> Vec<(String, render::Parts, bool)> {
    let dir = files::load_dir(Path::new("templates"), &files::Rules::new("en-US"));
    assert!(dir.problems.is_empty(), "{:?}", dir.problems);
    let mut out = Vec::new();
    for t in &dir.templates {
        let c = Compiled::new(
            Sources {
                subject: &t.subject,
                html: &t.html,
                text: t.text.as_deref(),
            },
            EMBEDDED_LAYOUT,
            t.variables.clone(),
        )
        .unwrap();
        let data = example_data(t);
        let parts = c.render(data.as_object().unwrap(), &common()).unwrap();
        out.push((t.name.clone(), parts, t.text.is_some()));
    }
    out.push((
        bench_fixture::BYO_TEMPLATE.to_string(),
        render_byo(&bench_fixture::byo_newsletter_html()),
        false,
    ));
    out
}

/// The bring-your-own-HTML template as the benchmark syncs it, rendered with `body`.
pub(super) fn render_byo(body: &str) -> render::Parts {
    let variables = serde_json::from_value(json!([
        {"name": "subject", "type": "string", "required": true},
        {"name": "body", "type": "string", "required": true},
    ]))
    .unwrap();
    let c = Compiled::new(
        Sources {
            subject: bench_fixture::BYO_TEMPLATE_SUBJECT,
            html: bench_fixture::BYO_TEMPLATE_HTML,
            text: None,
        },
        EMBEDDED_LAYOUT,
        variables,
    )
    .unwrap();
    let mut data = Map::new();
    data.insert("subject".into(), Value::from(bench_fixture::BYO_SUBJECT));
    data.insert("body".into(), Value::from(body));
    c.render(&data, &common()).unwrap()
}

fn path(name: &str) -> PathBuf {
    Path::new(DIR).join(format!("{name}.txt"))
}

/// Lines fit 78 columns unless they are one unbreakable word (after any list or quote
/// prefix); no trailing whitespace; no box-drawing characters (the old converter drew data
/// and layout tables as ASCII-art boxes).
fn check_shape(name: &str, text: &str) {
    assert!(!text.trim().is_empty(), "{name}: empty text part");
    for (i, line) in text.lines().enumerate() {
        assert_eq!(
            line,
            line.trim_end(),
            "{name}:{}: trailing whitespace",
            i + 1
        );
        assert!(
            !line.chars().any(|c| ('\u{2500}'..='\u{257F}').contains(&c)),
            "{name}:{}: box-drawing character in {line:?}",
            i + 1
        );
        let body = line.trim_start_matches(['>', ' ', '*', '-']);
        let body = body.trim_start_matches(|c: char| c.is_ascii_digit() || c == '.');
        assert!(
            line.chars().count() <= super::text::WIDTH || !body.trim().contains(' '),
            "{name}:{}: {} columns: {line:?}",
            i + 1,
            line.chars().count()
        );
    }
    assert!(!text.contains("\n\n\n"), "{name}: more than one blank line");
}

#[test]
fn text_parts_match_their_golden_files() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1");
    let mut failures = Vec::new();
    for (name, parts, _) in cases() {
        let text = html_to_text(&parts.html);
        check_shape(&name, &text);
        let file = path(&name);
        if update {
            std::fs::create_dir_all(DIR).unwrap();
            std::fs::write(&file, format!("{text}\n")).unwrap();
            continue;
        }
        match std::fs::read_to_string(&file) {
            Ok(want) if want.strip_suffix('\n').unwrap_or(&want) == text => {}
            Ok(want) => failures.push(format!(
                "{}: differs (UPDATE_GOLDEN=1 to accept)\n--- golden\n{want}\n--- now\n{text}",
                file.display()
            )),
            Err(e) => failures.push(format!(
                "{}: {e} (UPDATE_GOLDEN=1 writes it)",
                file.display()
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Every file in the golden directory belongs to a case (a renamed template leaves none behind).
#[test]
fn every_golden_file_has_a_case() {
    let names: Vec<String> = cases().into_iter().map(|(n, _, _)| n).collect();
    for entry in std::fs::read_dir(DIR).unwrap() {
        let file = entry.unwrap().path();
        let stem = file.file_stem().unwrap().to_string_lossy().to_string();
        assert!(names.contains(&stem), "{} has no template", file.display());
    }
}

/// `body.txt` still wins where a template has one; the others get the converter's text.
#[test]
fn body_txt_wins_over_the_converted_html() {
    for (name, parts, has_text) in cases() {
        let converted = html_to_text(&parts.html);
        if has_text {
            assert_ne!(parts.text, converted, "{name}");
        } else {
            assert_eq!(parts.text, converted.trim(), "{name}");
        }
    }
}

/// What the text part of the bring-your-own-HTML newsletter must say, whatever the golden.
#[test]
fn the_bench_newsletter_reads_well() {
    let parts = render_byo(&bench_fixture::byo_newsletter_html());
    let text = html_to_text(&parts.html);
    // Every URL of the HTML is in the text (the layout's and the newsletter's).
    let mut rest = parts.html.as_str();
    while let Some(i) = rest.find("href=\"") {
        rest = &rest[i + 6..];
        let end = rest.find('"').unwrap();
        let url = crate::tracking::decode_attr(&rest[..end]).to_string();
        let url = url.strip_prefix("mailto:").unwrap_or(&url);
        assert!(
            text.contains(url),
            "{url} is missing from the text part:\n{text}"
        );
    }
    for hidden in [
        "nl-col",
        "@media",
        "Eight animals hoping",
        "\u{200c}",
        "&nbsp;",
        "&rsquo;",
    ] {
        assert!(!text.contains(hidden), "{hidden:?} leaked into:\n{text}");
    }
    assert!(text.contains("Dogs | £175 | Vaccinations"), "{text}");
    assert!(
        text.contains("> \u{201c}We couldn\u{2019}t imagine"),
        "{text}"
    );
    assert!(text.contains("1. Find an animal"), "{text}");
    assert!(
        text.contains("\nhttps://www.adoptdontshop.com/volunteer/apply?source=newsletter-spring-2026&ref=body\n"),
        "a link whose text is its URL is printed once, alone on its line if too long:\n{text}"
    );
}
