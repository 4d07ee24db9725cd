//! The text part of an HTML email, made in one streaming pass over the HTML with `lol_html`
//! (Cloudflare's streaming rewriter: it tokenizes; no DOM, no layout engine).
//!
//! What a reader of the text part gets:
//! - layout tables (`role="presentation"` or `role="none"`) flattened into blocks: one per
//!   cell, a blank line around each table; other tables are data: one row per line, cells
//!   separated by ` | ` (a cell holding blocks still breaks the line);
//! - headings (`h1` underlined with `=`, `h2` with `-`), paragraphs, lists (`*`, or numbers
//!   for `ol`), `<br>`, blockquotes (`> `), `<pre>` kept as written, `<hr>`;
//! - links as `text (url)`; once when the text is the URL (`https://`, `mailto:` and a
//!   trailing `/` aside); a link with no text gives its image's `alt`, or the URL alone; a link
//!   to the URL of the link just before it (a card's image, name and button) gives its text
//!   only, since the URL was just printed. `javascript:` and other unsafe links give their text;
//! - nothing of `<head>`, `<style>`, `<script>`, comments, or hidden elements (`display:none`,
//!   `visibility:hidden`, the `hidden` attribute, `class="preheader"`);
//! - character references decoded; zero-width characters dropped; no trailing whitespace;
//!   lines wrapped at 78 columns, except a single word or URL longer than that.
//!
//! The HTML tokenizer's implied end tags that matter here (`<li>`, `<td>`, `<tr>`, `<p>` closed
//! by the next one or by their parent's end) are applied to the stack of open elements kept
//! here, since `lol_html` reports only the end tags that are written.

use std::cell::RefCell;
use std::rc::Rc;

use lol_html::html_content::Element;
use lol_html::{DocumentContentHandlers, ElementContentHandlers, HtmlRewriter, Selector, Settings};

/// Column at which lines are wrapped.
pub const WIDTH: usize = 78;

/// The text part for `html`: see the module documentation.
pub fn html_to_text(html: &str) -> String {
    html_to_text_doc(html)
        .lay_out(&|s| s.to_string())
        .unwrap_or_default()
}

/// The text part for `html` before line wrapping (see [`TextDoc`]).
pub fn html_to_text_doc(html: &str) -> TextDoc {
    convert(
        html,
        Options {
            width: WIDTH,
            links: true,
            underline: true,
        },
    )
}

/// The words of `html` without link URLs or wrapping (paragraphs still on their own lines),
/// for one-line previews.
pub fn html_to_words(html: &str) -> String {
    convert(
        html,
        Options {
            width: usize::MAX,
            links: false,
            underline: false,
        },
    )
    .lay_out(&|s| s.to_string())
    .unwrap_or_default()
}

#[derive(Debug, Clone, Copy)]
struct Options {
    width: usize,
    /// Link URLs printed after their text.
    links: bool,
    /// `h1`/`h2` underlined.
    underline: bool,
}

fn convert(html: &str, options: Options) -> TextDoc {
    let state = Rc::new(RefCell::new(State::new(options)));
    if let Err(e) = rewrite(html, &state) {
        // Whatever was read until then is kept; the HTML part is sent as it is anyway.
        tracing::debug!(error = %e, "HTML could not be read to the end for the text part");
    }
    let mut state = state.borrow_mut();
    state.finish()
}

fn rewrite(html: &str, state: &Rc<RefCell<State>>) -> Result<(), Box<dyn std::error::Error>> {
    let any: Selector = "*".parse()?;
    let on_element = {
        let state = Rc::clone(state);
        move |el: &mut Element<'_, '_>| {
            let id = state.borrow_mut().start(el);
            if let Some(id) = id {
                let state = Rc::clone(&state);
                el.on_end_tag(Box::new(move |_| {
                    state.borrow_mut().end(id);
                    Ok(())
                }))?;
            }
            Ok(())
        }
    };
    let on_text = {
        let state = Rc::clone(state);
        move |t: &mut lol_html::html_content::TextChunk<'_>| {
            state
                .borrow_mut()
                .text_chunk(t.as_str(), t.last_in_text_node());
            Ok(())
        }
    };
    let settings = Settings::new()
        .with_strict(false)
        .append_element_content_handler((
            std::borrow::Cow::Owned(any),
            ElementContentHandlers::default().element(on_element),
        ))
        .append_document_content_handler(DocumentContentHandlers::default().text(on_text));
    let mut rewriter = HtmlRewriter::new(settings, |_: &[u8]| {});
    rewriter.write(html.as_bytes())?;
    rewriter.end()?;
    Ok(())
}

/// What an open element does to the text, undone or finished at its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Tracked for the implied end tags only.
    Plain,
    /// Its content is not shown.
    Skip,
    Block(Break),
    Heading(u8),
    List,
    Item,
    Quote,
    Pre,
    Table,
    Row,
    Cell,
    Link,
}

#[derive(Debug)]
struct Open {
    id: u32,
    name: String,
    role: Role,
}

#[derive(Debug)]
struct List {
    ordered: bool,
    next: i64,
}

#[derive(Debug)]
struct Table {
    /// A data table (not `role="presentation"`/`"none"`): one row per line.
    data: bool,
    cells_in_row: usize,
}

#[derive(Debug)]
struct Link {
    href: String,
    alt: Option<String>,
}

#[derive(Debug)]
struct State {
    w: Writer,
    stack: Vec<Open>,
    next_id: u32,
    /// Open elements whose content is hidden.
    skip: usize,
    /// The current text node, until its last chunk (a character reference may be split).
    raw: String,
    lists: Vec<List>,
    tables: Vec<Table>,
    links: Vec<Link>,
    /// The URL printed for the last link.
    last_url: Option<String>,
}

/// Elements whose content never shows.
fn never_shown(name: &str) -> bool {
    matches!(
        name,
        "head"
            | "title"
            | "style"
            | "script"
            | "template"
            | "noscript"
            | "svg"
            | "math"
            | "select"
            | "iframe"
            | "textarea"
            | "object"
    )
}

fn hidden(el: &Element<'_, '_>) -> bool {
    if el.has_attribute("hidden") {
        return true;
    }
    if el.get_attribute("style").is_some_and(|s| hides(&s)) {
        return true;
    }
    el.get_attribute("class").is_some_and(|c| {
        c.split_ascii_whitespace()
            .any(|t| t.eq_ignore_ascii_case("preheader"))
    })
}

/// Whether a `style` attribute has `display: none` or `visibility: hidden` (any case,
/// spacing, `!important`). Without allocating: after inlining, nearly every element has one.
fn hides(style: &str) -> bool {
    style.split(';').any(|decl| {
        let Some((name, value)) = decl.split_once(':') else {
            return false;
        };
        let (name, value) = (name.trim(), value.trim());
        let first = |word: &str| {
            value
                .get(..word.len())
                .is_some_and(|v| v.eq_ignore_ascii_case(word))
                && value[word.len()..]
                    .chars()
                    .next()
                    .is_none_or(|c| c.is_ascii_whitespace() || c == '!')
        };
        (name.eq_ignore_ascii_case("display") && first("none"))
            || (name.eq_ignore_ascii_case("visibility") && first("hidden"))
    })
}

/// Elements the implied end tags look for or stop at: tracked even without a role.
fn structural(name: &str) -> bool {
    matches!(
        name,
        "p" | "li"
            | "dt"
            | "dd"
            | "tr"
            | "td"
            | "th"
            | "thead"
            | "tbody"
            | "tfoot"
            | "table"
            | "caption"
            | "ul"
            | "ol"
            | "dl"
            | "a"
            | "button"
    )
}

/// Elements whose start closes an open `<p>`.
fn closes_p(name: &str) -> bool {
    matches!(
        name,
        "address"
            | "article"
            | "aside"
            | "blockquote"
            | "center"
            | "details"
            | "div"
            | "dl"
            | "fieldset"
            | "figcaption"
            | "figure"
            | "footer"
            | "form"
            | "h1"
            | "h2"
            | "h3"
            | "h4"
            | "h5"
            | "h6"
            | "header"
            | "hr"
            | "main"
            | "nav"
            | "ol"
            | "p"
            | "pre"
            | "section"
            | "summary"
            | "table"
            | "ul"
    )
}

fn decode_attr(value: &str) -> String {
    htmlize::unescape_attribute(value).trim().to_string()
}

impl State {
    fn new(options: Options) -> State {
        State {
            w: Writer::new(options),
            stack: Vec::new(),
            next_id: 0,
            skip: 0,
            raw: String::new(),
            lists: Vec::new(),
            tables: Vec::new(),
            links: Vec::new(),
            last_url: None,
        }
    }

    /// A start tag. Returns the id to report its end tag with, when it is tracked.
    fn start(&mut self, el: &Element<'_, '_>) -> Option<u32> {
        let name = el.tag_name();
        self.close_implied(&name);
        if !el.can_have_content() {
            if self.skip == 0 {
                self.void(&name, el);
            }
            return None;
        }
        let role = if never_shown(&name) || hidden(el) {
            Role::Skip
        } else if self.skip > 0 {
            Role::Plain
        } else {
            self.open(&name, el)
        };
        if role == Role::Skip {
            self.skip += 1;
        }
        if role == Role::Plain && !structural(&name) {
            return None;
        }
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        self.stack.push(Open { id, name, role });
        Some(id)
    }

    /// An end tag written in the HTML: closes its element and any left open inside it.
    fn end(&mut self, id: u32) {
        if let Some(i) = self.stack.iter().rposition(|o| o.id == id) {
            self.pop_to(i);
        }
    }

    fn pop_to(&mut self, i: usize) {
        while self.stack.len() > i {
            if let Some(open) = self.stack.pop() {
                self.close(open.role);
            }
        }
    }

    /// The end tags HTML implies before this start tag.
    fn close_implied(&mut self, name: &str) {
        let (targets, boundaries): (&[&str], &[&str]) = match name {
            "li" => (&["li"], &["ul", "ol", "table", "td", "th"]),
            "dt" | "dd" => (&["dt", "dd"], &["dl", "table", "td", "th"]),
            "tr" => (&["tr"], &["table"]),
            "td" | "th" => (&["td", "th"], &["tr", "table"]),
            "thead" | "tbody" | "tfoot" => (&["thead", "tbody", "tfoot"], &["table"]),
            "a" => (&["a"], &["table", "td", "th", "button"]),
            n if closes_p(n) => (&["p"], &["table", "td", "th", "caption", "button"]),
            _ => return,
        };
        for i in (0..self.stack.len()).rev() {
            let open = self.stack[i].name.as_str();
            if targets.contains(&open) {
                self.pop_to(i);
                return;
            }
            if boundaries.contains(&open) {
                return;
            }
        }
    }

    /// A void element (`<br>`, `<img>`, `<hr>`, ...), outside hidden content.
    fn void(&mut self, name: &str, el: &Element<'_, '_>) {
        match name {
            "br" => self.w.hard_break(),
            "hr" => {
                self.w.block(Break::Para);
                self.w.text("----------");
                self.w.block(Break::Para);
            }
            "img" => {
                if let Some(link) = self.links.last_mut()
                    && link.alt.is_none()
                    && let Some(alt) = el.get_attribute("alt")
                {
                    let alt = decode_attr(&alt);
                    if !alt.is_empty() {
                        link.alt = Some(alt);
                    }
                }
            }
            _ => {}
        }
    }

    /// The role of a shown element, its start applied.
    fn open(&mut self, name: &str, el: &Element<'_, '_>) -> Role {
        let w = &mut self.w;
        match name {
            "p" | "dl" => {
                w.block(Break::Para);
                Role::Block(Break::Para)
            }
            "h1" | "h2" | "h3" | "h4" | "h5" | "h6" => {
                w.block(Break::Para);
                Role::Heading(name.as_bytes()[1] - b'0')
            }
            "div" | "section" | "article" | "header" | "footer" | "main" | "nav" | "aside"
            | "address" | "center" | "form" | "fieldset" | "figure" | "figcaption" | "caption"
            | "details" | "summary" | "dt" | "dd" | "legend" => {
                w.block(Break::Line);
                Role::Block(Break::Line)
            }
            "blockquote" => {
                w.block(Break::Para);
                w.quote += 1;
                Role::Quote
            }
            "pre" => {
                w.block(Break::Para);
                w.pre += 1;
                Role::Pre
            }
            "ul" | "ol" => {
                w.block(if self.lists.is_empty() {
                    Break::Para
                } else {
                    Break::Line
                });
                let start = el
                    .get_attribute("start")
                    .and_then(|s| s.trim().parse().ok())
                    .unwrap_or(1);
                self.lists.push(List {
                    ordered: name == "ol",
                    next: start,
                });
                Role::List
            }
            "li" => {
                w.block(Break::Line);
                let marker = match self.lists.last_mut() {
                    Some(l) if l.ordered => {
                        let m = format!("{}. ", l.next);
                        l.next += 1;
                        m
                    }
                    _ => "* ".to_string(),
                };
                w.indents.push(marker.chars().count());
                w.marker = Some(marker);
                Role::Item
            }
            "table" => {
                let data = !el.get_attribute("role").is_some_and(|r| {
                    let r = r.trim();
                    r.eq_ignore_ascii_case("presentation") || r.eq_ignore_ascii_case("none")
                });
                w.block(Break::Para);
                self.tables.push(Table {
                    data,
                    cells_in_row: 0,
                });
                Role::Table
            }
            "tr" => {
                w.block(Break::Line);
                if let Some(t) = self.tables.last_mut() {
                    t.cells_in_row = 0;
                }
                Role::Row
            }
            "td" | "th" => {
                match self.tables.last_mut() {
                    Some(t) if t.data => {
                        if t.cells_in_row > 0 {
                            w.separate(" | ");
                        }
                        t.cells_in_row += 1;
                    }
                    _ => w.block(Break::Line),
                }
                Role::Cell
            }
            "a" => match el.get_attribute("href") {
                Some(href) => {
                    w.capture = Some(String::new());
                    w.capture_broken = false;
                    self.links.push(Link {
                        href: decode_attr(&href),
                        alt: None,
                    });
                    Role::Link
                }
                None => Role::Plain,
            },
            _ => Role::Plain,
        }
    }

    fn close(&mut self, role: Role) {
        let w = &mut self.w;
        match role {
            Role::Plain => {}
            Role::Skip => self.skip = self.skip.saturating_sub(1),
            Role::Block(b) => w.block(b),
            Role::Heading(level) => {
                if w.flush() && w.options.underline && level <= 2 {
                    w.underline(if level == 1 { '=' } else { '-' });
                }
                w.block(Break::Para);
            }
            Role::List => {
                self.lists.pop();
                w.block(if self.lists.is_empty() {
                    Break::Para
                } else {
                    Break::Line
                });
            }
            Role::Item => {
                w.block(Break::Line);
                w.indents.pop();
                w.marker = None;
            }
            Role::Quote => {
                w.block(Break::Para);
                w.quote = w.quote.saturating_sub(1);
            }
            Role::Pre => {
                w.block(Break::Para);
                w.pre = w.pre.saturating_sub(1);
            }
            Role::Table => {
                self.tables.pop();
                w.block(Break::Para);
            }
            Role::Row => w.block(Break::Line),
            Role::Cell => {
                if !self.tables.last().is_some_and(|t| t.data) {
                    w.block(Break::Line);
                }
            }
            Role::Link => self.close_link(),
        }
    }

    fn close_link(&mut self) {
        let Some(link) = self.links.pop() else {
            return;
        };
        let w = &mut self.w;
        let text = w.capture.take().unwrap_or_default();
        let broken = w.capture_broken;
        let prev = self.last_url.replace(link.href.clone());
        if !w.options.links {
            return;
        }
        let alone = text.is_empty() && !broken;
        w.link(Deferred {
            text,
            url: link.href,
            prev,
            broken,
            alt: link.alt.filter(|_| alone),
            alone,
            lead: " ",
        });
    }

    fn text_chunk(&mut self, chunk: &str, last: bool) {
        if self.skip > 0 {
            self.raw.clear();
            return;
        }
        if !last {
            self.raw.push_str(chunk);
            return;
        }
        if self.raw.is_empty() {
            if chunk.contains('&') {
                let decoded = htmlize::unescape(chunk);
                self.w.text(&decoded);
            } else {
                self.w.text(chunk);
            }
        } else {
            self.raw.push_str(chunk);
            let raw = std::mem::take(&mut self.raw);
            let decoded = htmlize::unescape(raw.as_str());
            self.w.text(&decoded);
            self.raw = raw;
            self.raw.clear();
        }
    }

    fn finish(&mut self) -> TextDoc {
        self.pop_to(0);
        self.w.finish()
    }
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    s.get(..prefix.len())
        .filter(|p| p.eq_ignore_ascii_case(prefix))
        .map(|_| &s[prefix.len()..])
}

/// Whether a link's text says its URL already (`www.example.org` for
/// `https://www.example.org/`, `a@b.example` for `mailto:a@b.example`).
fn same_as_url(text: &str, url: &str) -> bool {
    fn bare(s: &str) -> &str {
        let s = s.trim();
        let s = ["https://", "http://", "mailto:"]
            .iter()
            .find_map(|p| strip_prefix_ignore_case(s, p))
            .unwrap_or(s);
        s.trim_end_matches('/')
    }
    let (t, u) = (bare(text), bare(url));
    !t.is_empty() && t.eq_ignore_ascii_case(u)
}

/// Breaks between blocks: the larger one asked for wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Break {
    None,
    Line,
    Para,
}

/// A text part before line wrapping: blocks of words with their prefixes, in order.
/// [`TextDoc::lay_out`] wraps them. Made from a document whose recipient values are masks
/// (`templates::render`), it is laid out for each recipient with the values put back first, so
/// lines wrap exactly as for a text part made from that recipient's HTML.
#[derive(Debug, Clone)]
pub struct TextDoc {
    width: usize,
    ops: Vec<Op>,
    /// Links whose output depends on a masked value, decided when laid out.
    deferred: Vec<Deferred>,
}

#[derive(Debug, Clone)]
enum Op {
    /// A block: the break before it (the larger of those asked for since the last block),
    /// the prefix of the blank line of a paragraph break before it and of one inside it
    /// (a quote's `>`), the prefixes of its first and following lines, and its words (`\n`
    /// for `<br>`).
    Block {
        brk: Break,
        sep_blank: String,
        blank: String,
        first: String,
        rest: String,
        para: String,
        pre: bool,
    },
    /// Underlines the block before (`h1`, `h2`) with `c`, after `rest`.
    Underline { c: char, rest: String },
}

/// A link's output decided when laid out, from its text, URL and the previous link's URL with
/// the masks replaced by their values.
#[derive(Debug, Clone)]
struct Deferred {
    text: String,
    url: String,
    prev: Option<String>,
    broken: bool,
    alt: Option<String>,
    /// The link gives its own words (image `alt` or URL) rather than a `(url)` suffix.
    alone: bool,
    /// The space before a `(url)` suffix (not at the start of a line).
    lead: &'static str,
}

/// What a link adds to the text: `None` when nothing (an unsafe or empty link).
fn link_output(d: &Deferred) -> Option<String> {
    let url = d.url.as_str();
    if url.is_empty() || url.starts_with('#') || !crate::tracking::is_safe_href(url) {
        return None;
    }
    let shown = strip_prefix_ignore_case(url, "mailto:").unwrap_or(url);
    let repeated = d.prev.as_deref() == Some(url);
    if d.alone {
        let alt = d.alt.as_deref().map(normalize).filter(|a| !a.is_empty());
        return Some(match alt {
            Some(alt) if same_as_url(&alt, url) || repeated => alt,
            Some(alt) => format!("{alt} ({shown})"),
            None => url.to_string(),
        });
    }
    if (!d.broken && same_as_url(&d.text, url)) || repeated {
        return None;
    }
    Some(format!("{}({shown})", d.lead))
}

/// Text as the writer would lay it out: whitespace collapsed, zero-width characters dropped.
fn normalize(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for word in s.split(html_space) {
        let word: String = word.chars().filter(|c| !zero_width(*c)).collect();
        if word.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(&word);
    }
    out
}

/// Starts a deferred link's place in a block: `TOKEN`, the process's random part, its index,
/// `TOKEN_END`. Private-use characters with a random part: no text can hold one by chance.
const TOKEN: char = '\u{E012}';
const TOKEN_END: char = '\u{E013}';

/// The first character of a masked value (`templates::render`): text holding it may depend on
/// a recipient's value.
pub const MASK: char = '\u{E010}';

/// A random part for this process's masks and tokens.
pub fn nonce() -> &'static str {
    static NONCE: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| format!("{:016x}", rand::random::<u64>()));
    &NONCE
}

impl TextDoc {
    /// The text, wrapped, with `subst` putting the recipient's values in place of the masks.
    /// `None` when a masked link turns out to give nothing where it already started a line:
    /// then the caller makes the text from that recipient's HTML.
    pub fn lay_out(&self, subst: &dyn Fn(&str) -> String) -> Option<String> {
        let mut out = String::new();
        let mut widest = 0;
        for op in &self.ops {
            match op {
                Op::Block {
                    brk,
                    sep_blank,
                    blank,
                    first,
                    rest,
                    para,
                    pre,
                } => {
                    let resolved;
                    let para = if self.deferred.is_empty() && !para.contains(MASK) {
                        para.as_str()
                    } else {
                        resolved = subst(&self.resolve(para, subst)?);
                        resolved.as_str()
                    };
                    if !out.is_empty() {
                        out.push('\n');
                        if *brk == Break::Para {
                            out.push_str(sep_blank);
                            out.push('\n');
                        }
                    }
                    widest = if *pre {
                        write_pre(&mut out, para, first, rest)
                    } else {
                        write_wrapped(&mut out, para, first, rest, blank, self.width)
                    };
                }
                Op::Underline { c, rest } => {
                    if widest > 0 {
                        out.push('\n');
                        out.push_str(rest);
                        let room = self.width.saturating_sub(rest.chars().count());
                        for _ in 0..widest.min(room) {
                            out.push(*c);
                        }
                    }
                }
            }
        }
        Some(collapse_blank_lines(&out))
    }

    /// The block's words with each deferred link's output in place of its token.
    fn resolve(&self, para: &str, subst: &dyn Fn(&str) -> String) -> Option<String> {
        let prefix = format!("{TOKEN}{}", nonce());
        let mut out = String::with_capacity(para.len() + 64);
        let mut rest = para;
        while let Some(at) = rest.find(&prefix) {
            out.push_str(&rest[..at]);
            let after = &rest[at + prefix.len()..];
            let Some(end) = after.find(TOKEN_END) else {
                out.push_str(&prefix);
                rest = after;
                continue;
            };
            let Some(d) = after[..end]
                .parse::<usize>()
                .ok()
                .and_then(|i| self.deferred.get(i))
            else {
                out.push_str(&prefix);
                rest = after;
                continue;
            };
            let real = Deferred {
                text: subst(&d.text),
                url: subst(&d.url),
                prev: d.prev.as_deref().map(subst),
                alt: d.alt.as_deref().map(subst),
                ..d.clone()
            };
            match link_output(&real) {
                Some(words) => out.push_str(&words),
                // Its words already started a line or took a separator: lay out anew.
                None if d.alone => return None,
                None => {}
            }
            rest = &after[end + TOKEN_END.len_utf8()..];
        }
        out.push_str(rest);
        Some(out)
    }
}

/// Lines trimmed, one blank line at most between blocks, none at the ends.
fn collapse_blank_lines(out: &str) -> String {
    let mut text = String::with_capacity(out.len());
    let mut blank = true;
    for line in out.lines() {
        let line = line.trim_end();
        if line.is_empty() {
            if !blank {
                blank = true;
                text.push('\n');
            }
            continue;
        }
        blank = false;
        text.push_str(line);
        text.push('\n');
    }
    while text.ends_with('\n') {
        text.pop();
    }
    text
}

fn write_pre(out: &mut String, para: &str, first: &str, rest: &str) -> usize {
    let mut widest = 0;
    for (i, line) in para.trim_end_matches('\n').split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let start = out.len();
        out.push_str(if i == 0 { first } else { rest });
        out.push_str(line);
        let trimmed = out[start..].trim_end().len();
        out.truncate(start + trimmed);
        widest = widest.max(line.trim_end().chars().count());
    }
    widest
}

/// Greedy wrapping at `width` columns; a word longer than the room stays whole on its line.
fn write_wrapped(
    out: &mut String,
    para: &str,
    first_prefix: &str,
    rest_prefix: &str,
    blank_line: &str,
    width: usize,
) -> usize {
    let mut widest = 0;
    let mut first = true;
    let mut blank = false;
    let rest_len = rest_prefix.chars().count();
    for hard in para.trim_end_matches('\n').split('\n') {
        if hard.trim().is_empty() {
            // `<br><br>`: one blank line, however many.
            if !blank && !first {
                out.push('\n');
                out.push_str(blank_line);
                blank = true;
            }
            continue;
        }
        blank = false;
        if !first {
            out.push('\n');
        }
        let prefix = if first { first_prefix } else { rest_prefix };
        first = false;
        let mut col = prefix.chars().count();
        let mut line_start = out.len();
        out.push_str(prefix);
        let mut empty = true;
        let mut line_width = 0;
        for w in hard.split(' ').filter(|w| !w.is_empty()) {
            let wl = w.chars().count();
            if !empty && col + 1 + wl > width {
                widest = widest.max(line_width);
                let trimmed = out[line_start..].trim_end().len();
                out.truncate(line_start + trimmed);
                out.push('\n');
                line_start = out.len();
                out.push_str(rest_prefix);
                col = rest_len;
                line_width = 0;
                empty = true;
            }
            if !empty {
                out.push(' ');
                col += 1;
                line_width += 1;
            }
            out.push_str(w);
            col += wl;
            line_width += wl;
            empty = false;
        }
        widest = widest.max(line_width);
        let trimmed = out[line_start..].trim_end().len();
        out.truncate(line_start + trimmed);
    }
    widest
}

/// Gathers inline content per block; a block's words, prefixes and break before it become an
/// [`Op::Block`] when it ends.
#[derive(Debug)]
struct Writer {
    options: Options,
    ops: Vec<Op>,
    deferred: Vec<Deferred>,
    /// Inline content of the current block: words separated by one space, `<br>` as `\n`.
    para: String,
    /// Whitespace seen since the last character of `para`.
    space: bool,
    /// A table cell separator to put before the next text on the same line.
    sep: Option<&'static str>,
    pending: Break,
    /// The shallowest quote depth a pending break was asked at: the blank line before a
    /// quote is not part of it.
    pending_quote: usize,
    quote: usize,
    /// Marker widths of the open list items.
    indents: Vec<usize>,
    /// The marker of a list item whose first line is not written yet.
    marker: Option<String>,
    pre: usize,
    /// The block's break, blank line before it and prefixes, fixed when its first word comes.
    brk: Break,
    sep_blank: String,
    first_prefix: String,
    rest_prefix: String,
    para_pre: bool,
    /// Text of the open link, to compare with its URL.
    capture: Option<String>,
    /// The open link's text was split over blocks.
    capture_broken: bool,
}

fn zero_width(c: char) -> bool {
    matches!(
        c,
        '\u{200B}'..='\u{200D}' | '\u{2060}' | '\u{FEFF}' | '\u{034F}' | '\u{00AD}'
    )
}

fn html_space(c: char) -> bool {
    // U+00A0 (&nbsp;) too: spacing tricks in email HTML, not meaning.
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0c' | '\u{00A0}')
}

impl Writer {
    fn new(options: Options) -> Writer {
        Writer {
            options,
            ops: Vec::new(),
            deferred: Vec::new(),
            para: String::new(),
            space: false,
            sep: None,
            pending: Break::None,
            pending_quote: 0,
            quote: 0,
            indents: Vec::new(),
            marker: None,
            pre: 0,
            brk: Break::None,
            sep_blank: String::new(),
            first_prefix: String::new(),
            rest_prefix: String::new(),
            para_pre: false,
            capture: None,
            capture_broken: false,
        }
    }

    fn quote_prefix(&self) -> String {
        "> ".repeat(self.quote)
    }

    /// Starts a block: its break and prefixes.
    fn start_para(&mut self) {
        self.brk = self.pending;
        let depth = self.pending_quote.min(self.quote);
        self.sep_blank = "> ".repeat(depth).trim_end().to_string();
        self.pending = Break::None;
        self.pending_quote = usize::MAX;
        let quote = self.quote_prefix();
        let indent: usize = self.indents.iter().sum();
        self.rest_prefix = format!("{quote}{}", " ".repeat(indent));
        self.first_prefix = match self.marker.take() {
            Some(m) => format!(
                "{quote}{}{m}",
                " ".repeat(indent.saturating_sub(m.chars().count()))
            ),
            None => self.rest_prefix.clone(),
        };
        self.para_pre = self.pre > 0;
    }

    /// What comes before the next character of the block: its start, a cell separator or
    /// the collapsed whitespace.
    fn lead(&mut self) {
        if self.para.is_empty() {
            self.start_para();
        } else if let Some(sep) = self.sep.take() {
            self.para.push_str(sep);
        } else if self.space && !self.para.ends_with('\n') {
            self.para.push(' ');
            if let Some(cap) = self.capture.as_mut().filter(|c| !c.is_empty()) {
                cap.push(' ');
            }
        }
        self.sep = None;
        self.space = false;
    }

    fn push_char(&mut self, c: char) {
        self.lead();
        self.para.push(c);
        if let Some(cap) = self.capture.as_mut() {
            cap.push(c);
        }
    }

    fn text(&mut self, s: &str) {
        if self.pre > 0 {
            let s = if self.para.is_empty() {
                s.strip_prefix('\n').unwrap_or(s)
            } else {
                s
            };
            for c in s.chars() {
                match c {
                    '\r' => {}
                    '\n' => {
                        if self.para.is_empty() {
                            self.start_para();
                        }
                        self.para.push('\n');
                    }
                    c if zero_width(c) => {}
                    c => {
                        if self.para.is_empty() {
                            self.start_para();
                        }
                        self.para.push(c);
                        if let Some(cap) = self.capture.as_mut() {
                            cap.push(c);
                        }
                    }
                }
            }
            return;
        }
        for c in s.chars() {
            if html_space(c) {
                self.space = true;
            } else if !zero_width(c) {
                self.push_char(c);
            }
        }
    }

    /// A closed link's output: decided now, or, when it depends on a masked value, a token
    /// decided when laid out.
    fn link(&mut self, mut d: Deferred) {
        d.alone = d.alone || self.para.is_empty();
        d.lead = if self.para.ends_with('\n') { "" } else { " " };
        let masked = [Some(&d.text), Some(&d.url), d.prev.as_ref(), d.alt.as_ref()]
            .into_iter()
            .flatten()
            .any(|s| s.contains(MASK));
        let words = if masked {
            let token = format!("{TOKEN}{}{}{TOKEN_END}", nonce(), self.deferred.len());
            self.deferred.push(d.clone());
            token
        } else {
            match link_output(&d) {
                Some(words) => words,
                None => return,
            }
        };
        if d.alone {
            // An image's `alt` goes where the link was, as text would; a URL as a word.
            if d.alt.is_none() {
                self.space = true;
            }
            self.lead();
        }
        self.para.push_str(&words);
    }

    fn separate(&mut self, sep: &'static str) {
        if !self.para.is_empty() {
            self.sep = Some(sep);
        }
    }

    fn hard_break(&mut self) {
        if !self.para.is_empty() {
            self.para.push('\n');
            self.space = false;
            self.sep = None;
        }
    }

    fn block(&mut self, b: Break) {
        self.flush();
        if b > self.pending {
            self.pending = b;
        }
        self.pending_quote = self.pending_quote.min(self.quote);
    }

    /// Ends the current block; whether it had any words.
    fn flush(&mut self) -> bool {
        self.space = false;
        self.sep = None;
        if self.para.is_empty() {
            return false;
        }
        if self.capture.is_some() {
            self.capture_broken = true;
        }
        self.ops.push(Op::Block {
            brk: self.brk,
            sep_blank: self.sep_blank.clone(),
            blank: self.quote_prefix().trim_end().to_string(),
            first: self.first_prefix.clone(),
            rest: self.rest_prefix.clone(),
            para: std::mem::take(&mut self.para),
            pre: self.para_pre,
        });
        true
    }

    fn underline(&mut self, c: char) {
        self.ops.push(Op::Underline {
            c,
            rest: self.rest_prefix.clone(),
        });
    }

    fn finish(&mut self) -> TextDoc {
        self.flush();
        TextDoc {
            width: self.options.width,
            ops: std::mem::take(&mut self.ops),
            deferred: std::mem::take(&mut self.deferred),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(html: &str) -> String {
        html_to_text(html)
    }

    #[test]
    fn paragraphs_headings_and_breaks() {
        assert_eq!(
            t("<h1>Hello &amp; welcome</h1><p>First   line<br>second</p><p>Next</p>"),
            "Hello & welcome\n===============\n\nFirst line\nsecond\n\nNext"
        );
        assert_eq!(t("<h3>Small</h3>text"), "Small\n\ntext");
        assert_eq!(t("<p>a</p><br><br><p>b</p>"), "a\n\nb");
        assert_eq!(t("x<br><br><br>y"), "x\n\ny");
    }

    #[test]
    fn links_keep_their_url_once() {
        assert_eq!(
            t(r#"<p>See <a href="https://a.example/x?a=1&amp;b=2">our page</a>.</p>"#),
            "See our page (https://a.example/x?a=1&b=2)."
        );
        assert_eq!(
            t(r#"<a href="https://a.example/">https://a.example</a>"#),
            "https://a.example"
        );
        assert_eq!(
            t(r#"Write to <a href="mailto:help@a.example">help@a.example</a>"#),
            "Write to help@a.example"
        );
        assert_eq!(
            t(r#"<a href="mailto:help@a.example">us</a>"#),
            "us (help@a.example)"
        );
        assert_eq!(
            t(r#"<a href="https://a.example/p"><img src="x.jpg" alt="Photo of Rex"></a>"#),
            "Photo of Rex (https://a.example/p)"
        );
        assert_eq!(
            t(r#"<a href="https://a.example/p"><img src="x.jpg"></a>"#),
            "https://a.example/p"
        );
        assert_eq!(
            t(
                r#"<a href="https://a.example/p">Rex</a><br><a href="https://a.example/p">Meet Rex</a>"#
            ),
            "Rex (https://a.example/p)\nMeet Rex",
            "the URL just printed is not repeated"
        );
        assert_eq!(t(r##"<a href="#top">Top</a> <a>plain</a>"##), "Top plain");
        assert_eq!(t(r#"<a href="javascript:alert(1)">x</a>"#), "x");
    }

    #[test]
    fn hidden_content_is_dropped() {
        let html = r#"<html><head><title>T</title><style>p { color: red }</style></head>
            <body><div style="display: none; max-height:0">preheader</div>
            <span class="preheader">also</span><p hidden>gone</p>
            <script>var x = "<p>";</script><!-- a comment -->
            <p>shown</p></body></html>"#;
        assert_eq!(t(html), "shown");
    }

    #[test]
    fn hiding_styles() {
        assert!(hides("display:none"));
        assert!(hides("color: red; DISPLAY : None !important; x: y"));
        assert!(hides("visibility:hidden"));
        assert!(!hides("text-decoration: none; border: none"));
        assert!(!hides("display: none-ish; display:block"));
        assert!(!hides("display:nonex"));
    }

    #[test]
    fn hidden_element_closed_implicitly_does_not_hide_the_rest() {
        assert_eq!(t(r#"<p style="display:none">hidden<p>shown"#), "shown");
        assert_eq!(
            t(r#"<ul><li style="display:none">a<li>b</ul>after"#),
            "* b\n\nafter"
        );
    }

    #[test]
    fn lists_nest_and_number() {
        assert_eq!(
            t(
                "<ul><li>one<li>two<ul><li>inner</li></ul></li></ul><ol start=3><li>x</li><li>y</li></ol>"
            ),
            "* one\n* two\n  * inner\n\n3. x\n4. y"
        );
    }

    #[test]
    fn blockquotes_and_pre() {
        assert_eq!(
            t("<blockquote><p>quoted</p><p>more</p></blockquote><pre>\n  a  b\n c</pre>"),
            "> quoted\n>\n> more\n\n  a  b\n c"
        );
        assert_eq!(
            t("<p>before</p><blockquote>q</blockquote>"),
            "before\n\n> q"
        );
    }

    #[test]
    fn layout_tables_flatten_and_data_tables_keep_rows() {
        let layout = r#"<table role="presentation"><tr><td><table role="presentation"><tr>
            <td>Left</td><td><p>Right</p></td></tr></table></td></tr></table>"#;
        assert_eq!(t(layout), "Left\n\nRight");
        let data = "<table><thead><tr><th>Animal</th><th>Fee</th></tr></thead>\
            <tr><td>Dog<td>&pound;175<tr><td>Cat</td><td>&pound;95</td></tr></table>";
        assert_eq!(t(data), "Animal | Fee\nDog | £175\nCat | £95");
    }

    #[test]
    fn lines_wrap_at_78_except_long_words() {
        let words = "word ".repeat(40);
        let url = format!("https://a.example/{}", "x".repeat(100));
        let out = t(&format!(
            "<p>{words}</p><p>{url}</p><ul><li>{words}</li></ul>"
        ));
        for line in out.lines() {
            assert!(
                line.chars().count() <= WIDTH || !line.trim().contains(' '),
                "{line:?}"
            );
            assert_eq!(line, line.trim_end());
        }
        assert!(out.contains(&url));
        assert!(
            out.contains("\n  word"),
            "list items continue indented: {out}"
        );
    }

    #[test]
    fn zero_width_characters_and_entities() {
        assert_eq!(t("a&zwnj;b&#8203;c &nbsp; d&rsquo;s"), "abc d\u{2019}s");
    }

    #[test]
    fn words_for_previews_have_no_urls() {
        assert_eq!(
            html_to_words(
                r#"<p>Hello <b>Maya</b> <a href="https://x">see</a><script>alert(1)</script></p>"#
            ),
            "Hello Maya see"
        );
    }
}
