//! Finding and rewriting `<a href>` values in HTML without a full parser: a scanner that
//! follows the HTML tokenizer's rules where they matter here. It skips comments (including
//! Outlook's `<!--[if mso]>` blocks), doctypes and processing instructions, and the raw text
//! of `<script>`, `<style>`, `<textarea>` and `<title>`. It reads attributes double-quoted,
//! single-quoted or unquoted, in any letter case, and decodes character references in the
//! value before handing over the URL. Everything it does not rewrite is copied byte for byte.
//!
//! (`lol_html`, which makes the text part, could do this too; this scanner copies what it does
//! not rewrite byte for byte, which tests and the CSS cache rely on.)

use std::borrow::Cow;

/// Calls `rewrite` with the decoded URL of every `<a href>` not marked `data-notrack`; where
/// it returns a new URL, that replaces the attribute's value (double-quoted, escaped).
pub fn rewrite_links(html: &str, rewrite: impl FnMut(&str) -> Option<String>) -> String {
    rewrite_links_with(html, false, rewrite)
}

/// [`rewrite_links`], optionally also offering links marked `data-notrack`.
fn rewrite_links_with(
    html: &str,
    include_notrack: bool,
    mut rewrite: impl FnMut(&str) -> Option<String>,
) -> String {
    let mut out = String::with_capacity(html.len() + html.len() / 8);
    let mut copied = 0;
    for_each_href(html, |region, value, notrack| {
        if notrack && !include_notrack {
            return;
        }
        if let Some(new) = rewrite(&href_url(value)) {
            out.push_str(&html[copied..region.0]);
            out.push('"');
            out.push_str(&escape_attr(&new));
            out.push('"');
            copied = region.1;
        }
    });
    out.push_str(&html[copied..]);
    out
}

/// The URL of a raw `href` value as the rewrites see it: references decoded, HTML spaces
/// trimmed.
pub fn href_url(raw: &str) -> Cow<'_, str> {
    match decode_attr(raw) {
        Cow::Borrowed(url) => Cow::Borrowed(url.trim_matches(is_html_space)),
        Cow::Owned(url) => Cow::Owned(url.trim_matches(is_html_space).to_string()),
    }
}

/// Where an `<a href>` is: the region [`rewrite_links`] replaces (with its quotes), the raw
/// value's bytes, and whether the link is marked `data-notrack`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HrefSlot {
    pub region: (usize, usize),
    pub value: (usize, usize),
    pub notrack: bool,
}

/// Every `<a href>` of `html`, in order, as the rewrites find them.
pub fn href_slots(html: &str) -> Vec<HrefSlot> {
    let mut slots = Vec::new();
    for_each_href(html, |region, value, notrack| {
        let start = value.as_ptr() as usize - html.as_ptr() as usize;
        slots.push(HrefSlot {
            region,
            value: (start, start + value.len()),
            notrack,
        });
    });
    slots
}

/// Calls `f` with the region to replace (with its quotes), the raw value and the
/// `data-notrack` mark of every `<a href>`, in order.
fn for_each_href<'a>(html: &'a str, mut f: impl FnMut((usize, usize), &'a str, bool)) {
    let bytes = html.as_bytes();
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
            if let Some((region, value, notrack)) = href {
                f(region, value, notrack);
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

/// The region to replace (with quotes) and the raw value of the tag's first `href`, and
/// whether the tag carries `data-notrack`.
fn href_to_rewrite<'a>(
    html: &'a str,
    tag: &StartTag<'_>,
) -> Option<((usize, usize), &'a str, bool)> {
    let attr_name = |a: &Attr| &html.as_bytes()[a.name.0..a.name.1];
    let notrack = tag
        .attrs
        .iter()
        .any(|a| attr_name(a).eq_ignore_ascii_case(b"data-notrack"));
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
    Some((region, html.get(start..end)?, notrack))
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

/// Decodes character references in an attribute value as a browser does (every named
/// reference of HTML, numeric ones, and the attribute-context rule that `&amp` followed by
/// `=` or an alphanumeric stays as written), so a link is signed for the URL the browser
/// would have followed (`caf&eacute;` is `café`).
pub fn decode_attr(value: &str) -> Cow<'_, str> {
    if !value.contains('&') {
        return Cow::Borrowed(value);
    }
    htmlize::unescape_attribute(value)
}

/// Schemes an `href` may carry in mail we send. `javascript:`, `data:`, `vbscript:`,
/// `file:` and the rest never reach a reader.
const SAFE_SCHEMES: [&str; 4] = ["http", "https", "mailto", "tel"];

/// Whether a (decoded) link may stay in an `href`: a relative link or fragment, or an
/// absolute URL with a scheme of [`SAFE_SCHEMES`]. Parsed as browsers parse (WHATWG, via the
/// `url` crate), so `java&#9;script:` or ` JavaScript:` cannot slip past a prefix test.
pub fn is_safe_href(url: &str) -> bool {
    match url::Url::parse(url.trim_matches(is_html_space)) {
        Ok(u) => SAFE_SCHEMES.contains(&u.scheme()),
        Err(url::ParseError::RelativeUrlWithoutBase) => true,
        Err(_) => false,
    }
}

/// What an unsafe `href` is replaced with.
pub const NEUTRALIZED_HREF: &str = "#";

/// The HTML with every `<a href>` whose decoded URL fails [`is_safe_href`] replaced by
/// [`NEUTRALIZED_HREF`] (links marked `data-notrack` included: the mark is about tracking,
/// not safety). Borrowed when nothing had to change.
pub fn neutralize_unsafe_hrefs(html: &str) -> Cow<'_, str> {
    let mut changed = false;
    let out = rewrite_links_with(html, true, |url| {
        (!is_safe_href(url)).then(|| {
            changed = true;
            NEUTRALIZED_HREF.to_string()
        })
    });
    if changed {
        Cow::Owned(out)
    } else {
        Cow::Borrowed(html)
    }
}

/// Hosts that click tracking may redirect to: exact names, and `*.domain` for any subdomain
/// of `domain` (not `domain` itself, which is listed on its own when wanted). Lower case.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedirectHosts(Vec<String>);

impl RedirectHosts {
    pub fn new<S: AsRef<str>>(entries: &[S]) -> RedirectHosts {
        RedirectHosts(
            entries
                .iter()
                .map(|e| e.as_ref().trim().trim_end_matches('.').to_ascii_lowercase())
                .filter(|e| !e.is_empty())
                .collect(),
        )
    }

    /// Whether `host` (as the `url` crate gives it: lower case, punycode) is on the list.
    pub fn allows(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.');
        self.0.iter().any(|entry| match entry.strip_prefix("*.") {
            Some(domain) => host
                .strip_suffix(domain)
                .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
            None => host == entry,
        })
    }
}

pub use crate::config::valid_host_entry;

/// The URL a click token is signed for, or None when the link is not to be rewritten: only
/// absolute `http(s)` URLs whose host is on `hosts`. The URL is returned serialised as the
/// `url` crate (WHATWG) parses it: where the browser would have gone, with non-ASCII
/// characters percent-encoded, so it fits a `Location` header.
pub fn tracked_target(url: &str, hosts: &RedirectHosts) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return None;
    }
    let host = parsed.host_str()?;
    hosts.allows(host).then(|| parsed.into())
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

    #[test]
    fn named_character_references_are_decoded_like_a_browser() {
        let (_, seen) = mark(
            r#"<a href="https://a.example/caf&eacute;?x=1&amp;y=&Eacute;">x</a><a href="https://a.example/?a=1&copy=2&notin">y</a>"#,
        );
        // In an attribute, `&copy=` stays as written (the HTML attribute rule).
        assert_eq!(
            seen,
            [
                "https://a.example/café?x=1&y=É",
                "https://a.example/?a=1&copy=2&notin"
            ]
        );
    }

    #[test]
    fn only_http_mailto_tel_and_relative_hrefs_are_safe() {
        for ok in [
            "https://a.example/",
            "HTTP://a.example",
            "mailto:a@b.example",
            "tel:+441234",
            "/relative",
            "#top",
            "page.html",
        ] {
            assert!(is_safe_href(ok), "{ok}");
        }
        for bad in [
            "javascript:alert(1)",
            " JavaScript:alert(1)",
            "java\tscript:alert(1)",
            "java\nscript:alert(1)",
            "data:text/html;base64,PHNjcmlwdD4=",
            "vbscript:msgbox",
            "file:///etc/passwd",
        ] {
            assert!(!is_safe_href(bad), "{bad:?}");
        }
    }

    #[test]
    fn unsafe_hrefs_are_neutralized_even_when_encoded_or_marked_notrack() {
        let html = r#"<a href="&#106;avascript:alert(1)">a</a><a data-notrack href='data:text/html,x'>b</a><a href="https://a.example/">c</a>"#;
        let out = neutralize_unsafe_hrefs(html);
        assert_eq!(
            out,
            r##"<a href="#">a</a><a data-notrack href="#">b</a><a href="https://a.example/">c</a>"##
        );
        let clean = r#"<a href="https://a.example/">c</a>"#;
        assert!(matches!(neutralize_unsafe_hrefs(clean), Cow::Borrowed(_)));
    }

    #[test]
    fn redirect_hosts_match_exact_names_and_explicit_subdomain_wildcards() {
        let hosts = RedirectHosts::new(&["AdoptDontShop.com", "*.adoptdontshop.org"]);
        assert!(hosts.allows("adoptdontshop.com"));
        assert!(
            !hosts.allows("www.adoptdontshop.com"),
            "no implicit subdomains"
        );
        assert!(hosts.allows("www.adoptdontshop.org"));
        assert!(hosts.allows("a.b.adoptdontshop.org"));
        assert!(
            !hosts.allows("adoptdontshop.org"),
            "the wildcard is for subdomains"
        );
        assert!(!hosts.allows("evil-adoptdontshop.org"));
        assert!(!hosts.allows("adoptdontshop.com.evil.example"));
        assert!(valid_host_entry("*.adoptdontshop.org") && valid_host_entry("127.0.0.1"));
        for bad in [
            "",
            "*",
            "*.",
            "a*.example",
            "https://a.example",
            "a b",
            "a.example/x",
        ] {
            assert!(!valid_host_entry(bad), "{bad:?}");
        }
    }

    #[test]
    fn tracked_target_keeps_only_allowed_http_hosts_and_normalises() {
        let hosts = RedirectHosts::new(&["adoptdontshop.com"]);
        assert_eq!(
            tracked_target("https://adoptdontshop.com/café", &hosts).as_deref(),
            Some("https://adoptdontshop.com/caf%C3%A9")
        );
        assert_eq!(tracked_target("https://evil.example/", &hosts), None);
        // Userinfo that looks like our host does not make the link ours.
        assert_eq!(
            tracked_target("https://adoptdontshop.com@evil.example/", &hosts),
            None
        );
        assert_eq!(tracked_target("mailto:a@adoptdontshop.com", &hosts), None);
        assert_eq!(tracked_target("/relative", &hosts), None);
    }
}
