//! Finding and rewriting `<a href>` values in HTML without a full parser: a scanner that
//! follows the HTML tokenizer's rules where they matter here. It skips comments (including
//! Outlook's `<!--[if mso]>` blocks), doctypes and processing instructions, and the raw text
//! of `<script>`, `<style>`, `<textarea>` and `<title>`. It reads attributes double-quoted,
//! single-quoted or unquoted, in any letter case, and decodes character references in the
//! value before handing over the URL. Everything it does not rewrite is copied byte for byte.
//!
//! (A streaming rewriter such as `lol_html` would also do; it would add a second copy of
//! `cssparser`/`selectors` beside css-inline's, for one attribute.)

use std::borrow::Cow;

/// Calls `rewrite` with the decoded URL of every `<a href>` not marked `data-notrack`; where
/// it returns a new URL, that replaces the attribute's value (double-quoted, escaped).
pub fn rewrite_links(html: &str, mut rewrite: impl FnMut(&str) -> Option<String>) -> String {
    let bytes = html.as_bytes();
    let mut out = String::with_capacity(html.len() + html.len() / 8);
    let mut copied = 0;
    let mut i = 0;
    while let Some(off) = html[i..].find('<') {
        let p = i + off;
        let rest = &bytes[p..];
        if rest.starts_with(b"<!--") {
            i = find_from(html, p + 4, "-->").map_or(bytes.len(), |e| e + 3);
        } else if rest.len() > 1 && matches!(rest[1], b'!' | b'?' | b'/') {
            i = find_from(html, p + 1, ">").map_or(bytes.len(), |e| e + 1);
        } else if rest.len() > 1 && rest[1].is_ascii_alphabetic() {
            let tag = scan_start_tag(bytes, p);
            let href = tag
                .name
                .eq_ignore_ascii_case(b"a")
                .then(|| href_to_rewrite(html, &tag))
                .flatten();
            if let Some((region, value)) = href {
                let url = decode_attr(value);
                if let Some(new) = rewrite(url.trim_matches(is_html_space)) {
                    out.push_str(&html[copied..region.0]);
                    out.push('"');
                    out.push_str(&escape_attr(&new));
                    out.push('"');
                    copied = region.1;
                }
            }
            i = tag.end;
            let raw_text = [&b"script"[..], b"style", b"textarea", b"title"]
                .into_iter()
                .find(|n| tag.name.eq_ignore_ascii_case(n));
            if let Some(name) = raw_text {
                i = find_end_tag(bytes, i, name).unwrap_or(bytes.len());
            }
        } else {
            i = p + 1;
        }
        if i >= bytes.len() {
            break;
        }
    }
    out.push_str(&html[copied..]);
    out
}

/// Inserts `snippet` just before the last `</body>` (any case), or appends it.
pub fn insert_before_body_end(html: &mut String, snippet: &str) {
    let mut end = html.len();
    while let Some(p) = html[..end].rfind("</") {
        if html
            .get(p + 2..p + 6)
            .is_some_and(|n| n.eq_ignore_ascii_case("body"))
        {
            html.insert_str(p, snippet);
            return;
        }
        end = p;
    }
    html.push_str(snippet);
}

/// Escapes a value for a double-quoted attribute.
pub fn escape_attr(value: &str) -> Cow<'_, str> {
    if !value.contains(['&', '"', '<', '>']) {
        return Cow::Borrowed(value);
    }
    let mut s = String::with_capacity(value.len() + 16);
    for c in value.chars() {
        match c {
            '&' => s.push_str("&amp;"),
            '"' => s.push_str("&quot;"),
            '<' => s.push_str("&lt;"),
            '>' => s.push_str("&gt;"),
            c => s.push(c),
        }
    }
    Cow::Owned(s)
}

struct Attr {
    name: (usize, usize),
    /// Value bytes, and whether they were quoted.
    value: Option<(usize, usize, bool)>,
}

struct StartTag<'a> {
    name: &'a [u8],
    attrs: Vec<Attr>,
    /// Just past the closing `>` (or the end of the input).
    end: usize,
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | b'\x0c')
}

fn is_html_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0c')
}

fn scan_start_tag(b: &[u8], p: usize) -> StartTag<'_> {
    let mut j = p + 1;
    while j < b.len() && !is_space(b[j]) && b[j] != b'/' && b[j] != b'>' {
        j += 1;
    }
    let name = &b[p + 1..j];
    let mut attrs = Vec::new();
    loop {
        while j < b.len() && (is_space(b[j]) || b[j] == b'/') {
            j += 1;
        }
        if j >= b.len() {
            break;
        }
        if b[j] == b'>' {
            j += 1;
            break;
        }
        let name_start = j;
        j += 1; // a first '=' belongs to the name, as in the tokenizer
        while j < b.len() && !is_space(b[j]) && !matches!(b[j], b'/' | b'>' | b'=') {
            j += 1;
        }
        let name = (name_start, j);
        while j < b.len() && is_space(b[j]) {
            j += 1;
        }
        let mut value = None;
        if j < b.len() && b[j] == b'=' {
            j += 1;
            while j < b.len() && is_space(b[j]) {
                j += 1;
            }
            if j < b.len() && (b[j] == b'"' || b[j] == b'\'') {
                let q = b[j];
                let start = j + 1;
                let end = b[start..]
                    .iter()
                    .position(|&c| c == q)
                    .map_or(b.len(), |e| start + e);
                value = Some((start, end, true));
                j = (end + 1).min(b.len());
            } else {
                let start = j;
                while j < b.len() && !is_space(b[j]) && b[j] != b'>' {
                    j += 1;
                }
                value = Some((start, j, false));
            }
        }
        attrs.push(Attr { name, value });
    }
    StartTag {
        name,
        attrs,
        end: j,
    }
}

/// The region to replace (with quotes) and the raw value of the tag's first `href`, unless
/// the tag carries `data-notrack`.
fn href_to_rewrite<'a>(html: &'a str, tag: &StartTag<'_>) -> Option<((usize, usize), &'a str)> {
    let attr_name = |a: &Attr| &html.as_bytes()[a.name.0..a.name.1];
    if tag
        .attrs
        .iter()
        .any(|a| attr_name(a).eq_ignore_ascii_case(b"data-notrack"))
    {
        return None;
    }
    let href = tag
        .attrs
        .iter()
        .find(|a| attr_name(a).eq_ignore_ascii_case(b"href"))?;
    let (start, end, quoted) = href.value?;
    let region = if quoted {
        (start - 1, (end + 1).min(html.len()))
    } else {
        (start, end)
    };
    Some((region, html.get(start..end)?))
}

fn find_from(html: &str, from: usize, needle: &str) -> Option<usize> {
    html.get(from..)?.find(needle).map(|e| from + e)
}

/// Start of the next `</name` (any case) at or after `from`.
fn find_end_tag(b: &[u8], from: usize, name: &[u8]) -> Option<usize> {
    let mut i = from;
    while i + 2 + name.len() <= b.len() {
        let off = b[i..].windows(2).position(|w| w == b"</")?;
        let p = i + off;
        let candidate = b.get(p + 2..p + 2 + name.len())?;
        if candidate.eq_ignore_ascii_case(name) {
            return Some(p);
        }
        i = p + 2;
    }
    None
}

/// Decodes the character references that occur in URLs: `&amp;` and friends, and numeric
/// ones. Anything else is kept as written.
pub fn decode_attr(value: &str) -> Cow<'_, str> {
    if !value.contains('&') {
        return Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(p) = rest.find('&') {
        out.push_str(&rest[..p]);
        rest = &rest[p..];
        let decoded = rest.find(';').filter(|&e| e <= 10).and_then(|e| {
            let c = match &rest[1..e] {
                "amp" | "AMP" => Some('&'),
                "quot" | "QUOT" => Some('"'),
                "apos" => Some('\''),
                "lt" | "LT" => Some('<'),
                "gt" | "GT" => Some('>'),
                n if n.starts_with("#x") || n.starts_with("#X") => u32::from_str_radix(&n[2..], 16)
                    .ok()
                    .and_then(char::from_u32),
                n if n.starts_with('#') => n[1..].parse().ok().and_then(char::from_u32),
                _ => None,
            };
            c.map(|c| (c, e + 1))
        });
        match decoded {
            Some((c, len)) => {
                out.push(c);
                rest = &rest[len..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(html: &str) -> (String, Vec<String>) {
        let mut seen = Vec::new();
        let out = rewrite_links(html, |u| {
            seen.push(u.to_string());
            Some(format!("T[{u}]"))
        });
        (out, seen)
    }

    #[test]
    fn rewrites_double_single_and_unquoted_values() {
        let (out, seen) = mark(
            r#"<p><a href="https://a.example/1">1</a> <A class=x HREF='https://a.example/2'>2</A> <a href=https://a.example/3>3</a></p>"#,
        );
        assert_eq!(
            seen,
            [
                "https://a.example/1",
                "https://a.example/2",
                "https://a.example/3"
            ]
        );
        assert_eq!(
            out,
            r#"<p><a href="T[https://a.example/1]">1</a> <A class=x HREF="T[https://a.example/2]">2</A> <a href="T[https://a.example/3]">3</a></p>"#
        );
    }

    #[test]
    fn decodes_entities_and_trims_whitespace() {
        let (_, seen) =
            mark(r#"<a href="  https://a.example/?a=1&amp;b=2&#38;c=&#x33;&foo;  ">x</a>"#);
        assert_eq!(seen, ["https://a.example/?a=1&b=2&c=3&foo;"]);
    }

    #[test]
    fn skips_comments_mso_blocks_scripts_styles_and_other_tags() {
        let html = r#"<!-- <a href="https://c.example/comment"> -->
<!--[if mso]><a href="https://c.example/mso">x</a><![endif]-->
<script>var s = '<a href="https://c.example/script">';</script>
<STYLE>a[href="https://c.example/style"] { color: red }</STYLE>
<title><a href="https://c.example/title"></title>
<link href="https://c.example/link" rel="stylesheet"><area href="https://c.example/area">
<abbr href="https://c.example/abbr">x</abbr>
<a title="1 > 0" href="https://c.example/ok">ok</a>"#;
        let (out, seen) = mark(html);
        assert_eq!(seen, ["https://c.example/ok"]);
        assert_eq!(
            out,
            html.replace("\"https://c.example/ok\"", "\"T[https://c.example/ok]\"")
        );
    }

    #[test]
    fn data_notrack_and_missing_or_empty_href_are_left_alone() {
        let html = r#"<a data-notrack href="https://a.example/secret">s</a><a DATA-NOTRACK="" href='https://a.example/s2'>s</a><a name="top">t</a><a href>e</a>"#;
        let (out, seen) = mark(html);
        assert!(seen.is_empty(), "{seen:?}");
        assert_eq!(out, html);
    }

    #[test]
    fn declining_a_link_copies_it_unchanged() {
        let html =
            r#"<a href='mailto:x@y.example'>m</a> <a href="https://a.example/?a&amp;b">k</a>"#;
        let out = rewrite_links(html, |_| None);
        assert_eq!(out, html);
    }

    #[test]
    fn truncated_input_does_not_panic() {
        for html in [
            "<a href=\"https://a.example",
            "<a href=",
            "<a",
            "<",
            "<!--",
            "<script>",
            "<a href='x'",
            "é<a href=é>é",
        ] {
            let _ = mark(html);
        }
    }

    #[test]
    fn new_value_is_escaped() {
        let out = rewrite_links(r#"<a href="https://a.example/">x</a>"#, |_| {
            Some("https://t.example/?a=\"1\"&b".into())
        });
        assert_eq!(
            out,
            r#"<a href="https://t.example/?a=&quot;1&quot;&amp;b">x</a>"#
        );
    }

    #[test]
    fn pixel_goes_before_the_last_body_end_tag_or_at_the_end() {
        let mut s = "<html><BODY><p>x</p></Body></html>".to_string();
        insert_before_body_end(&mut s, "<img>");
        assert_eq!(s, "<html><BODY><p>x</p><img></Body></html>");
        let mut s = "<p>fragment</p>".to_string();
        insert_before_body_end(&mut s, "<img>");
        assert_eq!(s, "<p>fragment</p><img>");
    }
}
