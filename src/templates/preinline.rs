//! CSS inlined once per template version instead of once per email.
//!
//! Inlining parses and re-serialises the whole document, which is most of a render's cost
//! (docs/performance.md "Performance"). For the templates it can prove safe, this module builds, once, a
//! standalone Tera source in which the layout and the child's blocks are flattened into one
//! document and the `<style>` rules are already written into `style` attributes; each email
//! then only runs Tera.
//!
//! The Tera code is protected while the document goes through the inliner: every tag in
//! text becomes an HTML comment (which the HTML parser keeps in place, even inside tables),
//! every tag inside an attribute value or `<title>` becomes a private-use-character token.
//! A template is refused (and keeps per-email inlining) when the result could depend on the
//! data: Tera code inside a tag other than in an attribute value, in a `class` or `id`
//! value, in `<style>` or `<script>`; an `if`/`for` whose branches open and close different
//! numbers of elements; output marked `safe` or other HTML-producing filters; includes,
//! macros, `raw`, `filter` sections, `super()`; selectors whose match depends on siblings or
//! attributes (`:`, `[`, `+`, `~`). [`Compiled`](super::render::Compiled) then checks the
//! result against per-email inlining on the template's examples before using it.

use std::collections::HashMap;

/// Why a template keeps per-email inlining.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unsupported(pub String);

fn no<T>(why: impl Into<String>) -> Result<T, Unsupported> {
    Err(Unsupported(why.into()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Expr,
    Stmt,
    Comment,
}

#[derive(Debug, Clone, Copy)]
enum Token<'a> {
    Text(&'a str),
    /// `raw` is the whole tag as written; `inner` its content without delimiters, `-`
    /// markers and surrounding blanks.
    Tera {
        kind: Kind,
        raw: &'a str,
        inner: &'a str,
    },
}

/// Splits a Tera source into text and tags.
fn tokenize(src: &str) -> Result<Vec<Token<'_>>, Unsupported> {
    let mut out = Vec::new();
    let mut rest = src;
    while let Some(start) = rest.find('{') {
        let (kind, close) = match rest.as_bytes().get(start + 1) {
            Some(b'{') => (Kind::Expr, "}}"),
            Some(b'%') => (Kind::Stmt, "%}"),
            Some(b'#') => (Kind::Comment, "#}"),
            _ => {
                // A lone brace is text.
                let (text, tail) = rest.split_at(start + 1);
                out.push(Token::Text(text));
                rest = tail;
                continue;
            }
        };
        if start > 0 {
            out.push(Token::Text(&rest[..start]));
        }
        let Some(len) = rest[start + 2..].find(close) else {
            return no("an unterminated Tera tag");
        };
        let raw = &rest[start..start + 2 + len + 2];
        let inner = raw[2..raw.len() - 2].trim_matches('-').trim();
        out.push(Token::Tera { kind, raw, inner });
        rest = &rest[start + raw.len()..];
    }
    if !rest.is_empty() {
        out.push(Token::Text(rest));
    }
    Ok(out)
}

fn keyword(inner: &str) -> &str {
    inner.split_whitespace().next().unwrap_or("")
}

/// A flattened source as owned pieces: text and Tera tags.
#[derive(Debug, Clone)]
enum Piece {
    Text(String),
    Tera { kind: Kind, raw: String },
}

/// The child's blocks by name; the child must be `{% extends "layout.html" %}` followed by
/// top-level blocks only.
fn child_blocks(child: &str) -> Result<HashMap<String, Vec<Piece>>, Unsupported> {
    let tokens = tokenize(child)?;
    let mut blocks = HashMap::new();
    let mut i = 0;
    let mut extended = false;
    while i < tokens.len() {
        match tokens[i] {
            Token::Text(t) if t.trim().is_empty() => i += 1,
            Token::Tera {
                kind: Kind::Comment,
                ..
            } => i += 1,
            Token::Tera {
                kind: Kind::Stmt,
                inner,
                raw,
            } if keyword(inner) == "extends" && !extended => {
                if !inner.contains("\"layout.html\"") && !inner.contains("'layout.html'") {
                    return no(format!(
                        "it extends something other than layout.html: {raw}"
                    ));
                }
                extended = true;
                i += 1;
            }
            Token::Tera {
                kind: Kind::Stmt,
                inner,
                raw,
            } if keyword(inner) == "block" && extended => {
                let name = inner.split_whitespace().nth(1).unwrap_or("").to_string();
                let (mut content, next) = block_content(&tokens, i + 1)?;
                // `-%}` trims the whitespace the block starts with.
                if raw.ends_with("-%}")
                    && let Some(Piece::Text(first)) = content.first_mut()
                {
                    *first = first.trim_start().to_string();
                }
                blocks.insert(name, content);
                i = next;
            }
            Token::Text(_) | Token::Tera { .. } => {
                return no("content outside blocks, or no {% extends \"layout.html\" %}");
            }
        }
    }
    if !extended {
        return no("it does not extend layout.html");
    }
    Ok(blocks)
}

/// The tokens from `from` to the matching `endblock`, and the index after it.
fn block_content(tokens: &[Token<'_>], from: usize) -> Result<(Vec<Piece>, usize), Unsupported> {
    let mut content = Vec::new();
    for (j, t) in tokens.iter().enumerate().skip(from) {
        match *t {
            Token::Tera {
                kind: Kind::Stmt,
                inner,
                raw,
            } => match keyword(inner) {
                "endblock" => {
                    if raw.ends_with("-%}") {
                        return no("whitespace control after an endblock");
                    }
                    // `{%-` trims the whitespace the block ends with.
                    if raw.starts_with("{%-")
                        && let Some(Piece::Text(last)) = content.last_mut()
                    {
                        *last = last.trim_end().to_string();
                    }
                    return Ok((content, j + 1));
                }
                "block" => return no("nested blocks"),
                _ => content.push(Piece::Tera {
                    kind: Kind::Stmt,
                    raw: raw.to_string(),
                }),
            },
            Token::Tera { kind, raw, .. } => content.push(Piece::Tera {
                kind,
                raw: raw.to_string(),
            }),
            Token::Text(s) => content.push(Piece::Text(s.to_string())),
        }
    }
    no("a block without endblock")
}

fn barrier() -> Piece {
    Piece::Tera {
        kind: Kind::Comment,
        raw: "{# #}".to_string(),
    }
}

/// The layout with each block replaced by the child's (or the layout's default) content.
fn flatten(layout: &str, child: &str) -> Result<Vec<Piece>, Unsupported> {
    let mut blocks = child_blocks(child)?;
    let tokens = tokenize(layout)?;
    let mut out = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        match tokens[i] {
            Token::Tera {
                kind: Kind::Stmt,
                inner,
                raw,
            } if keyword(inner) == "block" => {
                if raw.starts_with("{%-") || raw.ends_with("-%}") {
                    return no("whitespace control on a layout block tag");
                }
                let name = inner.split_whitespace().nth(1).unwrap_or("");
                let (default, next) = block_content(&tokens, i + 1)?;
                // Whitespace control inside a block never reaches the text around it: an
                // empty Tera comment on each side stops it, as the block's edges did.
                out.push(barrier());
                out.extend(blocks.remove(name).unwrap_or(default));
                out.push(barrier());
                i = next;
            }
            Token::Tera { kind, raw, .. } => {
                out.push(Piece::Tera {
                    kind,
                    raw: raw.to_string(),
                });
                i += 1;
            }
            Token::Text(s) => {
                out.push(Piece::Text(s.to_string()));
                i += 1;
            }
        }
    }
    if let Some(name) = blocks.keys().next() {
        return no(format!("block {name:?} is not in the layout"));
    }
    Ok(out)
}

/// Statements whose output is the text between them, unchanged.
const PLAIN_STATEMENTS: [&str; 11] = [
    "if",
    "elif",
    "else",
    "endif",
    "for",
    "endfor",
    "set",
    "set_global",
    "break",
    "continue",
    "extends",
];
/// Filters and functions whose output may hold HTML elements.
const HTML_OUTPUT: [&str; 4] = ["safe", "linebreaksbr", "markdown", "super("];

/// Where the HTML scanner is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Html {
    Data,
    /// Inside `<name ...>`.
    Tag,
    AttrValue(u8),
    Comment,
    /// Inside `<title>` (RCDATA) or `<style>`/`<script>` (raw text): the element's name.
    Raw(&'static str),
}

struct Scanner {
    state: Html,
    /// The open element count, for the balance of `if`/`for` branches.
    depth: i64,
    /// The tag name being read and the last attribute name seen.
    tag_name: String,
    attr_name: String,
    closing: bool,
    in_name: bool,
    in_attr_name: bool,
}

const VOID: [&str; 14] = [
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source",
    "track", "wbr",
];

impl Scanner {
    fn new() -> Scanner {
        Scanner {
            state: Html::Data,
            depth: 0,
            tag_name: String::new(),
            attr_name: String::new(),
            closing: false,
            in_name: false,
            in_attr_name: false,
        }
    }

    fn text(&mut self, s: &str) {
        let b = s.as_bytes();
        let mut i = 0;
        while i < b.len() {
            let c = b[i];
            match self.state {
                Html::Data => {
                    if b[i..].starts_with(b"<!--") {
                        self.state = Html::Comment;
                        i += 4;
                        continue;
                    }
                    if c == b'<' {
                        let next = b.get(i + 1).copied().unwrap_or(b' ');
                        if next.is_ascii_alphabetic() || next == b'/' {
                            self.state = Html::Tag;
                            self.closing = next == b'/';
                            self.tag_name.clear();
                            self.attr_name.clear();
                            self.in_name = true;
                            self.in_attr_name = false;
                            i += if self.closing { 2 } else { 1 };
                            continue;
                        }
                    }
                }
                Html::Comment => {
                    if b[i..].starts_with(b"-->") {
                        self.state = Html::Data;
                        i += 3;
                        continue;
                    }
                }
                Html::Raw(name) => {
                    if b[i] == b'<'
                        && b.get(i + 1) == Some(&b'/')
                        && s[i + 2..]
                            .get(..name.len())
                            .is_some_and(|n| n.eq_ignore_ascii_case(name))
                    {
                        self.state = Html::Tag;
                        self.closing = true;
                        self.tag_name = name.to_string();
                        self.in_name = false;
                        i += 2 + name.len();
                        continue;
                    }
                }
                Html::AttrValue(q) => {
                    if c == q {
                        self.state = Html::Tag;
                    }
                }
                Html::Tag => match c {
                    b'>' => self.end_tag(b.get(i.wrapping_sub(1)) == Some(&b'/')),
                    b'"' | b'\'' => self.state = Html::AttrValue(c),
                    b'=' => {
                        self.in_name = false;
                        self.in_attr_name = false;
                    }
                    c if c.is_ascii_whitespace() => {
                        self.in_name = false;
                        self.in_attr_name = false;
                    }
                    c => {
                        if self.in_name {
                            self.tag_name.push(c.to_ascii_lowercase() as char);
                        } else if !self.in_attr_name {
                            self.attr_name.clear();
                            self.in_attr_name = true;
                            self.attr_name.push(c.to_ascii_lowercase() as char);
                        } else {
                            self.attr_name.push(c.to_ascii_lowercase() as char);
                        }
                    }
                },
            }
            i += 1;
        }
    }

    fn end_tag(&mut self, self_closing: bool) {
        self.state = Html::Data;
        let name = self.tag_name.as_str();
        if self.closing {
            self.depth -= 1;
            return;
        }
        if !self_closing && !VOID.contains(&name) {
            self.depth += 1;
        }
        self.state = match name {
            "title" => Html::Raw("title"),
            "style" => Html::Raw("style"),
            "script" => Html::Raw("script"),
            "textarea" => Html::Raw("textarea"),
            _ => Html::Data,
        };
    }
}

/// The comment a Tera tag in text stands in for while inlining.
fn comment_mark(n: usize) -> String {
    format!("<!--adopt-tera:{n}-->")
}
/// The token a Tera tag in an attribute value or `<title>` stands in for.
fn text_mark(n: usize) -> String {
    format!("\u{E000}{n}\u{E001}")
}

/// Replaces Tera code with marks, checking that the result cannot depend on the data.
/// Returns the marked HTML and the tags by mark number.
fn protect(pieces: &[Piece]) -> Result<(String, Vec<String>), Unsupported> {
    let mut html = String::new();
    let mut tags = Vec::new();
    let mut scanner = Scanner::new();
    // Element depth at each open `if`/`for`, to compare with each branch's end.
    let mut flow: Vec<i64> = Vec::new();
    for piece in pieces {
        let (kind, raw) = match piece {
            Piece::Text(s) => {
                scanner.text(s);
                html.push_str(s);
                continue;
            }
            Piece::Tera { kind, raw } => (*kind, raw.as_str()),
        };
        let inner = raw[2..raw.len() - 2].trim_matches('-').trim();
        if kind != Kind::Comment && HTML_OUTPUT.iter().any(|f| inner.contains(f)) {
            return no(format!("{raw} may output HTML"));
        }
        if kind == Kind::Stmt {
            let kw = keyword(inner);
            if !PLAIN_STATEMENTS.contains(&kw) {
                return no(format!("the statement {raw}"));
            }
            let unbalanced = || {
                no(format!(
                    "the branches at {raw} open and close different elements"
                ))
            };
            match kw {
                "if" | "for" => flow.push(scanner.depth),
                "elif" | "else" if flow.last() != Some(&scanner.depth) => return unbalanced(),
                "endif" | "endfor" if flow.pop() != Some(scanner.depth) => return unbalanced(),
                _ => {}
            }
        }
        let n = tags.len();
        match scanner.state {
            Html::Data => html.push_str(&comment_mark(n)),
            // A Tera comment outputs nothing, wherever it is.
            Html::AttrValue(_) | Html::Raw(_) | Html::Comment if kind == Kind::Comment => {
                html.push_str(&text_mark(n))
            }
            Html::AttrValue(_)
                if !matches!(scanner.attr_name.as_str(), "class" | "id" | "style") =>
            {
                html.push_str(&text_mark(n))
            }
            Html::Raw("title") => html.push_str(&text_mark(n)),
            _ => {
                return no(format!(
                    "{raw} where its value could change which rules apply"
                ));
            }
        }
        tags.push(raw.to_string());
    }
    if !flow.is_empty() {
        return no("an if/for without its end");
    }
    Ok((html, tags))
}

/// The selectors of the `<style>` rules are of kinds whose match depends only on an
/// element's name, classes, id and ancestors. At-rules are skipped: they stay in `<style>`.
fn selectors_are_structural_free(html: &str) -> Result<(), Unsupported> {
    let lower = html.to_ascii_lowercase();
    let mut rest = lower.as_str();
    while let Some(open) = rest.find("<style") {
        let after = &rest[open..];
        let Some(body_start) = after.find('>') else {
            return no("an unterminated <style>");
        };
        let Some(end) = after.find("</style") else {
            return no("an unterminated <style>");
        };
        check_rules(&after[body_start + 1..end])?;
        rest = &after[end..];
    }
    Ok(())
}

fn check_rules(css: &str) -> Result<(), Unsupported> {
    let mut depth = 0usize;
    let mut prelude = String::new();
    let mut skip_depth: Option<usize> = None;
    for c in css.chars() {
        match c {
            '{' => {
                if depth == 0 {
                    let p = prelude.trim();
                    if p.starts_with('@') {
                        skip_depth = Some(0);
                    } else if p.contains([':', '[', '+', '~']) || p.contains("tbody") {
                        return no(format!("the selector {p:?}"));
                    }
                }
                depth += 1;
                prelude.clear();
            }
            '}' => {
                depth = depth.saturating_sub(1);
                if skip_depth == Some(depth) {
                    skip_depth = None;
                }
                prelude.clear();
            }
            c if depth == 0 => prelude.push(c),
            _ => {}
        }
    }
    Ok(())
}

/// Whether every occurrence of `mark` (a string of private-use characters standing in for a
/// recipient's value, see `render::Masked`) in the rendered `html` is where its value cannot
/// change which CSS rules apply or how it is serialised: in text, in a comment, in `<title>`,
/// or in an attribute value other than `class`, `id` and `style`; and whether the `<style>`
/// rules have no attribute selector (`[href^=...]` could match the value). Not in
/// `<style>`/`<script>`/`<textarea>`, nor in a tag or attribute name.
pub(super) fn masks_are_inert(html: &str, mark: &str) -> bool {
    let mut scanner = Scanner::new();
    let mut rest = html;
    while let Some(at) = rest.find(mark) {
        scanner.text(&rest[..at]);
        let inert = match scanner.state {
            Html::Data | Html::Comment | Html::Raw("title") => true,
            Html::AttrValue(_) => !matches!(scanner.attr_name.as_str(), "class" | "id" | "style"),
            Html::Tag | Html::Raw(_) => false,
        };
        if !inert {
            return false;
        }
        rest = &rest[at + mark.len()..];
    }
    if rest.len() == html.len() {
        // No mark: the document is the same for every recipient.
        return true;
    }
    !style_rules(html).any(|css| rule_preludes(css).any(|p| p.contains('[')))
}

/// The text of each `<style>` element (any letter case).
fn style_rules(html: &str) -> impl Iterator<Item = &str> {
    let mut rest = html;
    std::iter::from_fn(move || {
        loop {
            let open = find_ignore_case(rest, "<style")?;
            let after = &rest[open + 6..];
            if !after
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_whitespace() || b == b'>' || b == b'/')
            {
                rest = after;
                continue;
            }
            let body_start = after.find('>')? + 1;
            let body = &after[body_start..];
            let end = find_ignore_case(body, "</style").unwrap_or(body.len());
            rest = &body[end..];
            return Some(&body[..end]);
        }
    })
}

fn find_ignore_case(haystack: &str, needle: &str) -> Option<usize> {
    let n = needle.as_bytes();
    haystack
        .as_bytes()
        .windows(n.len())
        .position(|w| w.eq_ignore_ascii_case(n))
}

/// The preludes (selectors, or at-rule heads) of a stylesheet's rules, nested ones included.
fn rule_preludes(css: &str) -> impl Iterator<Item = &str> {
    let mut start = 0;
    css.char_indices().filter_map(move |(i, c)| match c {
        '{' => {
            let p = &css[start..i];
            start = i + 1;
            Some(p)
        }
        '}' | ';' => {
            start = i + 1;
            None
        }
        _ => None,
    })
}

/// The standalone, CSS-inlined Tera source of `child` (a `body.html`) in `layout`, or why
/// it cannot be built. `inline` is the same inliner per-email rendering uses.
pub(super) fn build(
    layout: &str,
    child: &str,
    inline: impl Fn(&str) -> Result<String, String>,
) -> Result<String, Unsupported> {
    let pieces = flatten(layout, child)?;
    let (marked, tags) = protect(&pieces)?;
    selectors_are_structural_free(&marked)?;
    let inlined = inline(&marked).map_err(|e| Unsupported(format!("inlining failed: {e}")))?;
    let restored = restore(&inlined, &tags)?;
    // The parser puts a `<tbody>` around rows written straight into a `<table>`; left in,
    // a loop over rows would repeat it. No rule styles it (checked above), so it goes.
    Ok(if marked.to_ascii_lowercase().contains("<tbody") {
        restored
    } else {
        restored.replace("<tbody>", "").replace("</tbody>", "")
    })
}

/// Whether two documents serialised by the inliner are the same but for the order of
/// attributes (the inliner adds `style` at a different place when one is already there).
pub(super) fn same_document(a: &str, b: &str) -> bool {
    a.len() == b.len() && (a == b || sorted_attributes(a) == sorted_attributes(b))
}

/// The document with every start tag's attributes in sorted order. Serialised attributes
/// are always `name="value"` with `"` escaped, so a quote ends a value.
fn sorted_attributes(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut rest = html;
    while let Some(lt) = rest.find('<') {
        out.push_str(&rest[..lt]);
        rest = &rest[lt..];
        let starts_tag = rest.as_bytes().get(1).is_some_and(u8::is_ascii_alphabetic);
        let Some(name_end) = rest.find([' ', '>']).filter(|_| starts_tag) else {
            out.push('<');
            rest = &rest[1..];
            continue;
        };
        out.push_str(&rest[..name_end]);
        rest = &rest[name_end..];
        let mut attrs = Vec::new();
        while let Some(attr) = rest.strip_prefix(' ') {
            let end = match (attr.find('"'), attr.find([' ', '>'])) {
                // name="value": up to the closing quote.
                (Some(q), Some(stop)) if q < stop => match attr[q + 1..].find('"') {
                    Some(close) => q + 1 + close + 1,
                    None => attr.len(),
                },
                (_, Some(stop)) => stop,
                (_, None) => attr.len(),
            };
            attrs.push(&attr[..end]);
            rest = &attr[end..];
        }
        attrs.sort_unstable();
        for a in attrs {
            out.push(' ');
            out.push_str(a);
        }
    }
    out.push_str(rest);
    out
}

/// Puts the Tera tags back, each mark exactly once and in order.
fn restore(inlined: &str, tags: &[String]) -> Result<String, Unsupported> {
    let mut out =
        String::with_capacity(inlined.len() + tags.iter().map(String::len).sum::<usize>());
    let mut rest = inlined;
    for (n, tag) in tags.iter().enumerate() {
        let comment = comment_mark(n);
        let text = text_mark(n);
        let found = [comment.as_str(), text.as_str()]
            .into_iter()
            .filter_map(|m| rest.find(m).map(|at| (at, m.len())))
            .min();
        let Some((at, len)) = found else {
            return no("the inliner moved or dropped part of the Tera code");
        };
        out.push_str(&rest[..at]);
        out.push_str(tag);
        rest = &rest[at + len..];
    }
    if rest.contains("adopt-tera:") || rest.contains('\u{E000}') {
        return no("the inliner moved part of the Tera code");
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inline(html: &str) -> Result<String, String> {
        super::super::render::inline_css(html)
    }

    const LAYOUT: &str = "<!DOCTYPE html><html><head><title>{% block title %}{{ app.name }}{% endblock title %}</title>\
<style>p { color: red; } .x td { padding: 1px; } @media (max-width: 600px) { p { color: blue !important; } }</style></head>\
<body><table class=\"x\"><tr><td>{% block content %}{% endblock content %}</td></tr></table></body></html>";

    #[test]
    fn flattens_marks_inlines_and_restores() {
        let child = "{% extends \"layout.html\" %}\n{% block title %}Hi {{ name }}{% endblock title %}\n\
{% block content %}<table>{%- for p in pets %}<tr><td><p>{{ p }}</p></td></tr>{%- endfor %}</table>{% endblock content %}";
        let out = build(LAYOUT, child, inline).unwrap();
        assert!(
            out.contains("<title>{# #}Hi {{ name }}{# #}</title>"),
            "{out}"
        );
        assert!(
            out.contains("<table>{%- for p in pets %}<tr><td style=\"padding: 1px;\"><p style=\"color: red;\">{{ p }}</p></td></tr>{%- endfor %}</table>"),
            "{out}"
        );
        assert!(out.contains("@media"), "{out}");
        assert!(!out.contains("p { color: red; }"), "{out}");
    }

    #[test]
    fn documents_compare_without_attribute_order() {
        assert!(same_document(
            "<p class=\"a\" style=\"x: 1\">t</p>",
            "<p style=\"x: 1\" class=\"a\">t</p>"
        ));
        assert!(!same_document(
            "<p class=\"a\" style=\"x: 1\">t</p>",
            "<p class=\"a\" style=\"x: 2\">t</p>"
        ));
        assert!(!same_document("<p a=\"1\">x</p>", "<p a=\"1\">y</p>"));
    }

    #[test]
    fn refuses_what_could_depend_on_the_data() {
        let cases = [
            (
                "<p class=\"{{ tone }}\">x</p>",
                "could change which rules apply",
            ),
            (
                "<p {% if a %}id=\"b\"{% endif %}>x</p>",
                "could change which rules apply",
            ),
            ("{% if a %}<div>{% endif %}", "different elements"),
            ("<style>{{ x }}</style>", "could change which rules apply"),
            ("<p>{{ x | safe }}</p>", "may output HTML"),
            ("{% include \"x\" %}", "the statement"),
            ("{% raw %}{{ x }}{% endraw %}", "the statement"),
        ];
        for (content, why) in cases {
            let child = format!(
                "{{% extends \"layout.html\" %}}{{% block content %}}{content}{{% endblock content %}}"
            );
            let e = build(LAYOUT, &child, inline).unwrap_err();
            assert!(e.0.contains(why), "{content}: {e}");
        }
        let e = build(LAYOUT, "<p>no extends</p>", inline).unwrap_err();
        assert!(e.0.contains("extends"), "{e}");
        let sibling = LAYOUT.replace("p { color: red; }", "p + p { color: red; }");
        let child =
            "{% extends \"layout.html\" %}{% block content %}<p>a</p>{% endblock content %}";
        let e = build(&sibling, child, inline).unwrap_err();
        assert!(e.0.contains("selector"), "{e}");
    }
}
