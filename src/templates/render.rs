//! Rendering one template version: Tera 2 compiles the subject, HTML and text sources
//! together with the layout; a render checks the data against the declared variables, fills
//! in the common variables, renders the three parts, keeps the subject on one line, inlines
//! the CSS and makes a text part from the HTML when the template has none.
//!
//! Autoescaping follows the template names: `body.html` and `layout.html` are escaped,
//! `subject.txt` and `body.txt` are not.

use serde_json::{Map, Value};
use tera::{Context, ErrorKind, Tera};

use super::files;
use super::preinline;
use super::vars::{self, VarProblem, VariableDecl};

/// The shared layout, compiled into the binary: every renderer registers it as
/// `layout.html`, which is what the stored child templates `{% extends %}`.
pub const EMBEDDED_LAYOUT: &str = include_str!("../../templates/layout.html");

/// The sources of one template version.
#[derive(Debug, Clone, Copy)]
pub struct Sources<'a> {
    pub subject: &'a str,
    pub html: &'a str,
    pub text: Option<&'a str>,
}

/// A located template error (`file` is `subject.txt`, `body.html`, `body.txt` or
/// `layout.html`; `line` and `col` are 1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateIssue {
    pub file: String,
    pub line: Option<usize>,
    pub col: Option<usize>,
    pub message: String,
    /// The variable path, for "is not defined" errors.
    pub undefined: Option<String>,
    /// Tera's report: the source line with a caret.
    pub snippet: Option<String>,
}

impl TemplateIssue {
    /// `file:line:col` (or just the file).
    pub fn location(&self) -> String {
        match (self.line, self.col) {
            (Some(l), Some(c)) => format!("{}:{l}:{c}", self.file),
            (Some(l), None) => format!("{}:{l}", self.file),
            _ => self.file.clone(),
        }
    }
}

impl std::fmt::Display for TemplateIssue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.undefined {
            Some(v) => write!(f, "undefined variable \"{v}\" ({})", self.location()),
            None => write!(f, "{}: {}", self.location(), self.message),
        }
    }
}

/// Why a render produced nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderProblem {
    #[error(transparent)]
    Variables(#[from] VarProblem),
    #[error("{0}")]
    Template(Box<TemplateIssue>),
    #[error("CSS inlining failed: {0}")]
    Css(String),
    #[error("the rendered subject is {0} characters; email_queue.subject holds at most 500")]
    SubjectTooLong(usize),
}

/// What a render produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parts {
    /// One line: CR/LF removed.
    pub subject: String,
    /// CSS inlined.
    pub html: String,
    /// The rendered `body.txt`, or text made from the HTML.
    pub text: String,
}

/// The common variables every email gets, whatever its data says.
#[derive(Debug, Clone)]
pub struct Common<'a> {
    pub app_name: &'a str,
    pub app_base_url: &'a str,
    pub app_support_email: &'a str,
    pub recipient_email: &'a str,
    pub recipient_name: Option<&'a str>,
    /// Empty for transactional and system email.
    pub unsubscribe_url: &'a str,
    pub year: i32,
}

/// The name of the flattened, CSS-inlined HTML template, when there is one.
const PREINLINED: &str = "body.preinlined.html";

/// What a tracked link's (decoded) URL becomes in one email, or `None` to leave it.
pub type LinkRewrite<'a> = dyn Fn(&str) -> Option<String> + 'a;

/// A compiled template version, ready to render any number of times.
pub struct Compiled {
    pub(super) tera: Tera,
    has_text: bool,
    /// Whether [`PREINLINED`] holds the HTML with its CSS already inlined (see
    /// `preinline`), checked against per-email inlining on the examples.
    preinlined: bool,
    /// Per-email inlining's results by document, the recipient's values masked (see
    /// [`Masked`]): HTML passed through the data (`{{ body | safe }}`) is usually the same
    /// for every recipient of a campaign.
    css_cache: CssCache,
    /// Sources by file name, to quote expressions in errors.
    sources: Vec<(&'static str, String)>,
    pub variables: Vec<VariableDecl>,
    /// See [`Compiled::reads_only_declared`].
    reads_only_declared: bool,
}

impl std::fmt::Debug for Compiled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compiled")
            .field("has_text", &self.has_text)
            .field("preinlined", &self.preinlined)
            .field("variables", &self.variables.len())
            .finish_non_exhaustive()
    }
}

impl Compiled {
    /// Parses and links the sources with `layout`; every syntax error, unknown filter or
    /// missing block is reported with its file and line.
    pub fn new(
        src: Sources<'_>,
        layout: &str,
        variables: Vec<VariableDecl>,
    ) -> Result<Compiled, Vec<TemplateIssue>> {
        let text = src.text.filter(|t| !t.trim().is_empty());
        let mut sources = vec![
            (files::LAYOUT, layout.to_string()),
            (files::SUBJECT, src.subject.to_string()),
            (files::HTML, src.html.to_string()),
        ];
        if let Some(t) = text {
            sources.push((files::TEXT, t.to_string()));
        }
        let mut tera = Tera::new();
        tera.register_filter("datetime", datetime_filter);
        if let Err(e) = tera.add_raw_templates(sources.iter().map(|(n, s)| (*n, s.as_str()))) {
            return Err(issues_from(&e, &sources));
        }
        let mut compiled = Compiled {
            tera,
            has_text: text.is_some(),
            preinlined: false,
            css_cache: CssCache::default(),
            sources,
            variables,
            reads_only_declared: false,
        };
        compiled.reads_only_declared = compiled.find_reads_only_declared();
        match preinline::build(layout, src.html, inline_css) {
            Ok(source) => {
                if compiled.tera.add_raw_template(PREINLINED, &source).is_ok() {
                    compiled.preinlined = compiled.preinlined_matches();
                }
            }
            Err(why) => tracing::debug!(%why, "CSS inlined per email"),
        }
        Ok(compiled)
    }

    /// The top-level variables the part `file` (and the layout it extends) reads, guarded
    /// or not; loop and `set` variables are left out.
    pub fn variables_read(&self, file: &str) -> Vec<&str> {
        self.tera
            .get_template_variables(file)
            .map(|v| {
                v.into_iter()
                    .filter(|n| !n.starts_with("__tera_"))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether every variable the parts read is declared (or common): then checking data
    /// against the declarations tells what a render would about the variables' presence and
    /// types, without rendering.
    pub fn reads_only_declared(&self) -> bool {
        self.reads_only_declared
    }

    fn find_reads_only_declared(&self) -> bool {
        !self.variables.is_empty()
            && self.sources.iter().all(|(file, _)| {
                self.variables_read(file).into_iter().all(|v| {
                    v == "loop"
                        || files::COMMON_VARIABLES.contains(&v)
                        || self.variables.iter().any(|d| d.name == v)
                })
            })
    }

    /// Checks `data` against the declarations, as a render does first.
    pub fn validate(&self, data: &Map<String, Value>) -> Result<(), RenderProblem> {
        Ok(vars::validate(&self.variables, data)?)
    }

    /// Whether the CSS is inlined once for the version rather than once per email.
    #[cfg(test)]
    pub fn css_preinlined(&self) -> bool {
        self.preinlined
    }

    /// The pre-inlined HTML gives, after normalisation, what per-email inlining gives, for
    /// the examples (all of them, then only the required ones). Without an example for
    /// every required variable nothing can be compared, and per-email inlining stays.
    fn preinlined_matches(&self) -> bool {
        let (all, required) = vars::examples(&self.variables);
        let common = Common {
            app_name: "Adopt Don't Shop",
            app_base_url: "https://example.org",
            app_support_email: "support@example.org",
            recipient_email: "someone@example.org",
            recipient_name: Some("Some One"),
            unsubscribe_url: "https://example.org/unsubscribe/t",
            year: 2026,
        };
        [all, required].iter().all(|data| {
            if vars::validate(&self.variables, data).is_err() {
                return false;
            }
            let ctx = context(data, &common);
            let normalised = |name: &str| {
                let html = self.tera.render(name, &ctx).ok()?;
                inline_css(&html).ok()
            };
            match (normalised(files::HTML), normalised(PREINLINED)) {
                (Some(a), Some(b)) => preinline::same_document(&a, &b),
                _ => false,
            }
        })
    }

    /// Validates `data`, then renders subject, HTML (CSS inlined) and text.
    pub fn render(
        &self,
        data: &Map<String, Value>,
        common: &Common<'_>,
    ) -> Result<Parts, RenderProblem> {
        self.render_tracked(data, common, None)
            .map(|(parts, _)| parts)
    }

    /// [`Compiled::render`], and with `track` (the link rewrite of
    /// [`Tracker::tracked_link`](crate::tracking::Tracker::tracked_link) for this email) the
    /// links rewritten in the same pass when the document is a cached one: `true` then, and
    /// only the open pixel is left to add. `false`: the caller tracks the HTML as usual.
    pub fn render_tracked(
        &self,
        data: &Map<String, Value>,
        common: &Common<'_>,
        track: Option<&LinkRewrite<'_>>,
    ) -> Result<(Parts, bool), RenderProblem> {
        let mut tracked = false;
        vars::validate(&self.variables, data)?;
        let ctx = context(data, common);
        let render = |name: &str| {
            self.tera.render(name, &ctx).map_err(|e| {
                let mut issues = issues_from(&e, &self.sources);
                RenderProblem::Template(Box::new(issues.swap_remove(0)))
            })
        };
        let subject = one_line(&render(files::SUBJECT)?);
        let n = subject.chars().count();
        if n > files::MAX_SUBJECT_CHARS {
            return Err(RenderProblem::SubjectTooLong(n));
        }
        let mut cached = None;
        let mut neutralized = false;
        let html = match self.preinlined {
            // An error is reported from the original sources, whose lines the author knows.
            true => match self.tera.render(PREINLINED, &ctx) {
                Ok(html) => html,
                Err(_) => inline_css(&render(files::HTML)?).map_err(RenderProblem::Css)?,
            },
            false => match self.inline_cached(data, common)? {
                // Seen once so far: this email goes the per-email way from the shared
                // inlining (its links, text and tracking from its own HTML).
                Some((entry, true, masked)) => masked.substitute(entry.doc()),
                // The shared links and text part hold for this email only when its values
                // leave every link holding a mark as safe as the masked one was.
                Some((entry, false, masked)) => match (entry.neutralized_for(&masked), track) {
                    (Some(doc), Some(track)) => {
                        neutralized = true;
                        tracked = true;
                        let html = entry.tracked(doc, &masked, track);
                        cached = Some((entry, masked));
                        html
                    }
                    (Some(doc), None) => {
                        neutralized = true;
                        let html = masked.substitute(doc);
                        cached = Some((entry, masked));
                        html
                    }
                    (None, _) => masked.substitute(entry.doc()),
                },
                None => inline_css(&render(files::HTML)?).map_err(RenderProblem::Css)?,
            },
        };
        // Whatever the data held, no `javascript:`/`data:` link reaches a reader (nor the
        // text part made from this HTML).
        let html = match neutralized {
            true => html,
            false => match crate::tracking::neutralize_unsafe_hrefs(&html) {
                std::borrow::Cow::Borrowed(_) => html,
                std::borrow::Cow::Owned(safe) => safe,
            },
        };
        let text = if self.has_text {
            render(files::TEXT)?.trim().to_string()
        } else {
            // From the cached document's text, laid out with this recipient's values (what
            // this email's HTML gives, line for line), else from this email's HTML.
            let laid_out = cached
                .as_ref()
                .and_then(|(entry, masked)| entry.text().lay_out(&|s| masked.substitute(s)));
            match (laid_out, &cached) {
                (Some(text), _) => text,
                // The HTML is tracked already: the text is made from it untracked.
                (None, Some((entry, masked))) if tracked => {
                    let doc = entry.derived().neutralized.as_deref().unwrap_or_default();
                    let untracked = masked.substitute(doc);
                    super::text::html_to_text(&untracked)
                }
                (None, _) => super::text::html_to_text(&html),
            }
            .trim()
            .to_string()
        };
        Ok((
            Parts {
                subject,
                html,
                text,
            },
            tracked,
        ))
    }
}

impl Compiled {
    /// The CSS-inlined HTML from the cache of per-email inlining, when the document is the
    /// same as an earlier one but for the recipient's values (or is new and can be cached):
    /// `None` means inline this email's HTML on its own.
    fn inline_cached<'a>(
        &self,
        data: &Map<String, Value>,
        common: &Common<'a>,
    ) -> Result<Option<(std::sync::Arc<CacheEntry>, bool, Masked<'a>)>, RenderProblem> {
        let Some(masked) = Masked::new(common) else {
            return Ok(None);
        };
        let Ok(masked_html) = self
            .tera
            .render(files::HTML, &context(data, &masked.common()))
        else {
            return Ok(None);
        };
        let entry = self.css_cache.inlined(&masked_html, &masked.mark)?;
        Ok(entry.map(|(e, first)| (e, first, masked)))
    }
}

/// The recipient's values in a render (`recipient.email`, `recipient.name`,
/// `unsubscribe_url`) replaced by marks of private-use characters with a per-process random
/// part, so that the HTML of a campaign's emails is one document whatever the recipient, and
/// is inlined once. Only values that inlining leaves as they are, in text and in attribute
/// values alike, are masked (none of `& < > "`, CR, NUL, U+00A0, which the parser or the
/// serialiser would change); an empty value stays empty, so `{% if unsubscribe_url %}` takes
/// the same branch. After inlining, each mark is replaced by its value.
struct Masked<'a> {
    original: Common<'a>,
    /// The marks' common prefix.
    mark: String,
    email: String,
    name: String,
    unsubscribe: String,
}

/// Starts every mark: a private-use character that no value may hold (the text part knows
/// a block holding it depends on a recipient's value).
const MARK: char = super::text::MASK;
const MARK_END: char = '\u{E011}';

fn mark_prefix() -> &'static str {
    static PREFIX: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| format!("{MARK}{}", super::text::nonce()));
    &PREFIX
}

fn inert(value: &str) -> bool {
    !value.contains(['&', '<', '>', '"', '\r', '\0', '\u{A0}', MARK, MARK_END])
        // The text part collapses whitespace and drops zero-width characters: a value it
        // would change is not masked either.
        && !value.contains(['\t', '\n', '\x0c', '\u{200B}', '\u{200C}', '\u{200D}'])
        && !value.contains(['\u{2060}', '\u{FEFF}', '\u{034F}', '\u{00AD}'])
        && !value.starts_with(' ')
        && !value.ends_with(' ')
        && !value.contains("  ")
}

impl<'a> Masked<'a> {
    fn new(c: &Common<'a>) -> Option<Masked<'a>> {
        let name = c.recipient_name.unwrap_or("");
        if ![c.recipient_email, name, c.unsubscribe_url]
            .iter()
            .all(|v| inert(v))
        {
            return None;
        }
        let mark = mark_prefix().to_string();
        let masked = |v: &str, k: char| {
            if v.is_empty() {
                String::new()
            } else {
                format!("{mark}{k}{MARK_END}")
            }
        };
        Some(Masked {
            original: c.clone(),
            email: masked(c.recipient_email, 'e'),
            name: masked(name, 'n'),
            unsubscribe: masked(c.unsubscribe_url, 'u'),
            mark,
        })
    }

    fn common(&self) -> Common<'_> {
        Common {
            recipient_email: &self.email,
            recipient_name: self.original.recipient_name.map(|_| self.name.as_str()),
            unsubscribe_url: &self.unsubscribe,
            ..self.original.clone()
        }
    }

    /// The inlined document with each mark replaced by its value.
    fn substitute(&self, doc: &str) -> String {
        let mut out = String::with_capacity(doc.len() + 256);
        self.substitute_into(&mut out, doc);
        out
    }

    fn substitute_into(&self, out: &mut String, doc: &str) {
        let mut rest = doc;
        while let Some(at) = rest.find(self.mark.as_str()) {
            out.push_str(&rest[..at]);
            let after = &rest[at + self.mark.len()..];
            let mut kinds = after.chars();
            let value = match (kinds.next(), kinds.next()) {
                (Some('e'), Some(MARK_END)) => self.original.recipient_email,
                (Some('n'), Some(MARK_END)) => self.original.recipient_name.unwrap_or(""),
                (Some('u'), Some(MARK_END)) => self.original.unsubscribe_url,
                // Not a mark of ours (cannot happen: the cache checked every mark survived).
                _ => {
                    out.push_str(&self.mark);
                    rest = after;
                    continue;
                }
            };
            out.push_str(value);
            rest = &after[1 + MARK_END.len_utf8()..];
        }
        out.push_str(rest);
    }
}

/// How many documents each template version keeps (a campaign or two at a time).
const CSS_CACHE_ENTRIES: usize = 4;

/// Inlined documents by their masked HTML; see [`Masked`].
#[derive(Default)]
struct CssCache {
    entries: std::sync::Mutex<Vec<std::sync::Arc<CacheEntry>>>,
}

struct CacheEntry {
    hash: u64,
    masked_html: String,
    /// `None`: a mark is where its value could change the result (see
    /// `preinline::masks_are_inert`), so each email is inlined on its own.
    inlined: Option<String>,
    mark: String,
    /// Made when the document comes a second time (a document seen once costs no more than
    /// inlining it): its unsafe links neutralised and the places of its links.
    derived: std::sync::OnceLock<Derived>,
    /// The text part of the neutralised document, before wrapping.
    text: std::sync::OnceLock<super::text::TextDoc>,
}

struct Derived {
    /// The document with its unsafe links neutralised, when no link holding a mark was unsafe
    /// with the marks in place; the raw values of the links holding a mark, to check with
    /// each recipient's values.
    neutralized: Option<String>,
    mark_hrefs: Vec<String>,
    /// The links of `neutralized`, for tracking in the pass that puts the values in.
    slots: Vec<crate::tracking::HrefSlot>,
}

impl Derived {
    fn new(doc: &str, mark: &str) -> Derived {
        let marked: Vec<&str> = crate::tracking::href_slots(doc)
            .iter()
            .map(|slot| &doc[slot.value.0..slot.value.1])
            .filter(|h| h.contains(mark))
            .collect();
        let safe_masked = marked
            .iter()
            .all(|raw| crate::tracking::is_safe_href(&crate::tracking::decode_attr(raw)));
        if !safe_masked {
            return Derived {
                neutralized: None,
                mark_hrefs: Vec::new(),
                slots: Vec::new(),
            };
        }
        let safe = crate::tracking::neutralize_unsafe_hrefs(doc).into_owned();
        Derived {
            slots: crate::tracking::href_slots(&safe),
            neutralized: Some(safe),
            mark_hrefs: marked.into_iter().map(str::to_string).collect(),
        }
    }
}

impl CacheEntry {
    fn doc(&self) -> &str {
        self.inlined.as_deref().unwrap_or_default()
    }

    fn derived(&self) -> &Derived {
        self.derived
            .get_or_init(|| Derived::new(self.doc(), &self.mark))
    }

    /// Only for an email [`CacheEntry::neutralized_for`] accepted.
    fn text(&self) -> &super::text::TextDoc {
        self.text.get_or_init(|| match &self.derived().neutralized {
            Some(doc) => super::text::html_to_text_doc(doc),
            None => {
                let doc = crate::tracking::neutralize_unsafe_hrefs(self.doc());
                super::text::html_to_text_doc(&doc)
            }
        })
    }

    /// The neutralised document with this recipient's values in place and every link tracking
    /// asks for rewritten, in one pass: what [`Tracker::inject`](crate::tracking::Tracker)
    /// makes of the email's HTML but the open pixel, which the caller adds. Only for a
    /// document [`CacheEntry::neutralized_for`] gave.
    fn tracked(&self, doc: &str, masked: &Masked<'_>, track: &LinkRewrite<'_>) -> String {
        let mut out = String::with_capacity(doc.len() + doc.len() / 8);
        let mut at = 0;
        for slot in self.derived().slots.iter().filter(|s| !s.notrack) {
            let raw = &doc[slot.value.0..slot.value.1];
            let real;
            let raw = if raw.contains(masked.mark.as_str()) {
                real = masked.substitute(raw);
                real.as_str()
            } else {
                raw
            };
            if let Some(new) = track(&crate::tracking::href_url(raw)) {
                masked.substitute_into(&mut out, &doc[at..slot.region.0]);
                out.push('"');
                out.push_str(&crate::tracking::escape_attr(&new));
                out.push('"');
                at = slot.region.1;
            }
        }
        masked.substitute_into(&mut out, &doc[at..]);
        out
    }

    /// The neutralised document, when this recipient's values leave every link holding a mark
    /// safe: then it is, values put in, what neutralising this email's HTML gives.
    fn neutralized_for(&self, masked: &Masked<'_>) -> Option<&str> {
        let derived = self.derived();
        let doc = derived.neutralized.as_deref()?;
        derived
            .mark_hrefs
            .iter()
            .all(|raw| {
                let real = masked.substitute(raw);
                crate::tracking::is_safe_href(&crate::tracking::decode_attr(&real))
            })
            .then_some(doc)
    }
}

impl CssCache {
    /// The entry for this document, inlined now if new (then `true`: seen for the first
    /// time); `None` when it cannot be shared.
    fn inlined(
        &self,
        masked_html: &str,
        mark: &str,
    ) -> Result<Option<(std::sync::Arc<CacheEntry>, bool)>, RenderProblem> {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        masked_html.hash(&mut hasher);
        let hash = hasher.finish();
        {
            let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(i) = entries
                .iter()
                .position(|e| e.hash == hash && e.masked_html == masked_html)
            {
                let entry = entries.remove(i);
                entries.push(entry.clone());
                return Ok(entry.inlined.is_some().then_some((entry, false)));
            }
        }
        let inlined = if preinline::masks_are_inert(masked_html, mark) {
            let doc = inline_css(masked_html).map_err(RenderProblem::Css)?;
            // Every mark came through the parser and serialiser whole.
            (doc.matches(mark).count() == masked_html.matches(mark).count()).then_some(doc)
        } else {
            None
        };
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= CSS_CACHE_ENTRIES {
            entries.remove(0);
        }
        let entry = std::sync::Arc::new(CacheEntry {
            hash,
            masked_html: masked_html.to_string(),
            inlined,
            mark: mark.to_string(),
            derived: std::sync::OnceLock::new(),
            text: std::sync::OnceLock::new(),
        });
        entries.push(entry.clone());
        Ok(entry.inlined.is_some().then_some((entry, true)))
    }
}

/// The render context: the email's data, then the common variables over it.
/// Default of the `datetime` filter: "Saturday 14 March 2026 at 10:30".
pub const DATETIME_FORMAT: &str = "%A %-d %B %Y at %H:%M";

/// `{{ when | datetime }}`, `{{ when | datetime(format="%d/%m/%Y", timezone="Europe/London") }}`:
/// an RFC 3339 value (what services send for a `datetime` variable, e.g.
/// `2026-03-14T10:30:00Z`) formatted for a reader (chrono's strftime, default
/// [`DATETIME_FORMAT`]) in `timezone` (an IANA name, default UTC). Any other string is
/// taken as already formatted and printed as it is, so older preformatted data still renders.
fn datetime_filter(
    value: tera::Value,
    kwargs: tera::Kwargs,
    _: &tera::State,
) -> tera::TeraResult<String> {
    let text = match value.as_str() {
        Some(t) => t.to_string(),
        None => value.to_string(),
    };
    let Ok(at) = chrono::DateTime::parse_from_rfc3339(text.trim()) else {
        return Ok(text);
    };
    let format = kwargs.get::<&str>("format")?.unwrap_or(DATETIME_FORMAT);
    let zone = kwargs.get::<&str>("timezone")?.unwrap_or("UTC");
    let tz: chrono_tz::Tz = zone
        .parse()
        .map_err(|_| tera::Error::message(format!("datetime: unknown timezone {zone:?}")))?;
    let mut out = String::new();
    use std::fmt::Write as _;
    write!(out, "{}", at.with_timezone(&tz).format(format))
        .map_err(|_| tera::Error::message(format!("datetime: bad format {format:?}")))?;
    Ok(out)
}

pub(super) fn context(data: &Map<String, Value>, c: &Common<'_>) -> Context {
    let mut ctx = Context::new();
    for (k, v) in data {
        ctx.insert(k.clone(), v);
    }
    ctx.insert(
        "app",
        &serde_json::json!({
            "name": c.app_name,
            "base_url": c.app_base_url,
            "support_email": c.app_support_email,
        }),
    );
    ctx.insert(
        "recipient",
        &serde_json::json!({
            "email": c.recipient_email,
            "name": c.recipient_name.unwrap_or(""),
        }),
    );
    ctx.insert("unsubscribe_url", c.unsubscribe_url);
    ctx.insert("year", &c.year);
    ctx
}

/// Subjects never carry CR/LF: each line is trimmed and the non-empty ones joined by a space.
pub fn one_line(s: &str) -> String {
    s.split(['\r', '\n'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Inlines `<style>` rules into `style` attributes for mail clients that drop `<style>`;
/// at-rules (the `@media` queries) stay in a `<style>` element for those that keep it.
/// Remote stylesheets are never fetched (the crate is built without that feature).
///
/// Only HTML with a `<style>` element (in any letter case) is parsed at all: without one there
/// is nothing to inline, and the parse and serialisation are most of the cost. css-inline
/// (0.17) takes no parsed stylesheet: each call parses its `<style>` text and each selector
/// again (`InlineOptions::cache` keeps remote stylesheets' text only), so there is no parsed
/// result to reuse across emails (docs/performance.md "Performance").
pub fn inline_css(html: &str) -> Result<String, String> {
    if !has_style_element(html) {
        return Ok(html.to_string());
    }
    css_inline::CSSInliner::options()
        .keep_style_tags(false)
        .keep_at_rules(true)
        .load_remote_stylesheets(false)
        // The document's nodes, roughly (tags and the text between them), so the tree is
        // not grown by doubling from css-inline's default of 32.
        .preallocate_node_capacity(html.len() / 24)
        .build()
        .inline(html)
        .map_err(|e| e.to_string())
}

/// Whether `html` has a `<style` tag, in any letter case (`<Style>` too).
fn has_style_element(html: &str) -> bool {
    let bytes = html.as_bytes();
    let mut from = 0;
    while let Some(off) = html.get(from..).and_then(|rest| rest.find('<')) {
        let at = from + off;
        let name = bytes.get(at + 1..at + 6);
        let after = bytes.get(at + 6).copied();
        if name.is_some_and(|n| n.eq_ignore_ascii_case(b"style"))
            && after.is_none_or(|b| b.is_ascii_whitespace() || b == b'>' || b == b'/')
        {
            return true;
        }
        from = at + 1;
    }
    false
}

/// Turns a Tera error into located issues. Syntax and render errors carry their span;
/// link-time errors (unknown filter, missing block) come as report text, which is parsed.
fn issues_from(e: &tera::Error, sources: &[(&'static str, String)]) -> Vec<TemplateIssue> {
    match e.kind() {
        ErrorKind::SyntaxError(r) | ErrorKind::RenderingError(r) => {
            let span = r.span();
            let source = sources
                .iter()
                .find(|(n, _)| *n == r.filename())
                .map(|(_, s)| s.as_str());
            let report = e.to_string();
            vec![TemplateIssue {
                file: r.filename().to_string(),
                line: Some(span.start_line),
                col: Some(span.start_col + 1),
                message: first_sentence(r.message()),
                undefined: undefined_path(r.message(), source, span.range.clone()),
                snippet: snippet_of(&report),
            }]
        }
        ErrorKind::MissingParent { current, parent } => {
            // Located at the quoted name in the extends tag.
            let at = sources
                .iter()
                .find(|(n, _)| n == current)
                .and_then(|(_, s)| {
                    s.find(&format!("\"{parent}\""))
                        .or_else(|| s.find(&format!("'{parent}'")))
                        .map(|i| files::line_col(s, i))
                });
            vec![TemplateIssue {
                file: current.clone(),
                line: Some(at.map_or(1, |(l, _)| l)),
                col: at.map(|(_, c)| c),
                message: format!(
                    "extends {parent:?}, which is not a template here (the layout is \"layout.html\")"
                ),
                undefined: None,
                snippet: None,
            }]
        }
        _ => parse_reports(&e.to_string()),
    }
}

/// "Variable `x` is not defined. Available variables: ..." → "Variable `x` is not defined."
fn first_sentence(message: &str) -> String {
    match message.find(". ") {
        Some(i) => message[..=i].to_string(),
        None => message.to_string(),
    }
}

/// The full path of an undefined variable: Tera names the variable, or for a field only the
/// field, so the path is read back from the source just before the span's end.
fn undefined_path(
    message: &str,
    source: Option<&str>,
    range: std::ops::Range<usize>,
) -> Option<String> {
    let quoted = message.split('`').nth(1)?;
    if message.starts_with("Variable `") {
        return Some(quoted.to_string());
    }
    if !message.starts_with("Field `") {
        return None;
    }
    let source = source?;
    let end = range.end.min(source.len());
    let head = source.get(..end)?;
    let start = head
        .char_indices()
        .rev()
        .take_while(|(_, c)| c.is_ascii_alphanumeric() || *c == '_' || *c == '.')
        .last()
        .map_or(end, |(i, _)| i);
    let path = &head[start..];
    Some(if path.ends_with(quoted) {
        path.to_string()
    } else {
        quoted.to_string()
    })
}

/// The lines of a Tera report after its first line (the source line with the caret).
fn snippet_of(report: &str) -> Option<String> {
    let rest: Vec<&str> = report.lines().skip(2).collect();
    (!rest.is_empty()).then(|| rest.join("\n"))
}

/// Parses report text: blocks of `error: MESSAGE` then ` --> name:line:col`.
fn parse_reports(text: &str) -> Vec<TemplateIssue> {
    let mut issues = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let Some(message) = line.strip_prefix("error: ") else {
            continue;
        };
        let loc = lines
            .get(i + 1)
            .and_then(|l| l.trim_start().strip_prefix("--> "));
        let (file, line_no, col) = match loc.map(|l| l.rsplitn(3, ':').collect::<Vec<_>>()) {
            Some(parts) if parts.len() == 3 => (
                parts[2].to_string(),
                parts[1].parse().ok(),
                parts[0].parse().ok(),
            ),
            _ => (String::from("template"), None, None),
        };
        let snippet: Vec<&str> = lines
            .iter()
            .skip(i + 2)
            .take_while(|l| !l.starts_with("error: ") && !l.trim().is_empty())
            .copied()
            .collect();
        issues.push(TemplateIssue {
            file,
            line: line_no,
            col,
            message: message.to_string(),
            undefined: None,
            snippet: (!snippet.is_empty()).then(|| snippet.join("\n")),
        });
    }
    if issues.is_empty() {
        issues.push(TemplateIssue {
            file: "template".into(),
            line: None,
            col: None,
            message: text
                .lines()
                .next()
                .unwrap_or("invalid template")
                .to_string(),
            undefined: None,
            snippet: None,
        });
    }
    issues
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn common() -> Common<'static> {
        Common {
            app_name: "Adopt Don't Shop",
            app_base_url: "https://adoptdontshop.com",
            app_support_email: "support@adoptdontshop.com",
            recipient_email: "maya@example.com",
            recipient_name: Some("Maya"),
            unsubscribe_url: "",
            year: 2026,
        }
    }

    fn compile(
        subject: &str,
        html: &str,
        text: Option<&str>,
    ) -> Result<Compiled, Vec<TemplateIssue>> {
        let decls =
            serde_json::from_value(json!([{"name": "pet", "type": "object", "required": true}]))
                .unwrap();
        Compiled::new(
            Sources {
                subject,
                html,
                text,
            },
            EMBEDDED_LAYOUT,
            decls,
        )
    }

    fn data(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn renders_escaped_html_unescaped_text_and_a_one_line_subject() {
        let c = compile(
            "Meet {{ pet.name }}\r\n  & friends",
            "{% extends \"layout.html\" %}{% block content %}<p class=\"muted\">{{ pet.name }}</p>{% endblock content %}",
            Some("Hi {{ recipient.name }}, {{ pet.name }}"),
        )
        .unwrap();
        let p = c
            .render(&data(json!({"pet": {"name": "<Rex & Co>"}})), &common())
            .unwrap();
        assert_eq!(p.subject, "Meet <Rex & Co> & friends");
        assert!(p.html.contains("&lt;Rex &amp; Co&gt;"), "{}", p.html);
        assert_eq!(p.text, "Hi Maya, <Rex & Co>");
        // CSS inlined, media queries kept in a style element.
        assert!(p.html.contains(r#"<p class="muted" style="#), "{}", p.html);
        assert!(p.html.contains("@media"));
        assert!(
            !p.html.contains(".card {"),
            "plain rules are inlined, not kept"
        );
    }

    #[test]
    fn text_part_is_made_from_html_when_missing() {
        let c = compile(
            "s",
            "<h1>Hello {{ pet.name }}</h1><p>Visit <a href=\"https://a.example/x\">us</a></p>",
            None,
        )
        .unwrap();
        let p = c
            .render(&data(json!({"pet": {"name": "Rex"}})), &common())
            .unwrap();
        assert!(p.text.contains("Hello Rex"), "{}", p.text);
        assert!(p.text.contains("https://a.example/x"), "{}", p.text);
    }

    #[test]
    fn unsafe_links_from_data_reach_neither_the_html_nor_the_text_part() {
        let c = compile(
            "s",
            "<p><a href=\"{{ pet.website }}\">site</a> <a href=\"https://a.example/ok\">ok</a></p>",
            None,
        )
        .unwrap();
        for bad in [
            "javascript:alert(1)",
            "data:text/html,<b>x</b>",
            " JaVaScRiPt:alert(1)",
        ] {
            let p = c
                .render(&data(json!({"pet": {"website": bad}})), &common())
                .unwrap();
            let lower = |s: &str| s.to_ascii_lowercase();
            for part in [&p.html, &p.text] {
                assert!(
                    !lower(part).contains("javascript:") && !lower(part).contains("data:"),
                    "{part}"
                );
            }
            assert!(
                p.html.contains(r#"href="https://a.example/ok""#),
                "{}",
                p.html
            );
        }
    }

    #[test]
    fn syntax_errors_are_located() {
        let err = compile("ok", "<p>\n{{ pet.name }</p>", None).unwrap_err();
        assert_eq!(err[0].file, "body.html");
        assert_eq!(err[0].line, Some(2));
        assert!(err[0].to_string().starts_with("body.html:2:"), "{}", err[0]);
    }

    #[test]
    fn unknown_filters_are_located() {
        let err = compile("{{ pet.name | shout }}", "x", None).unwrap_err();
        assert_eq!(err[0].file, "subject.txt");
        assert_eq!(err[0].line, Some(1));
        assert!(err[0].message.contains("shout"), "{:?}", err[0]);
    }

    #[test]
    fn missing_parent_is_reported() {
        let err = compile("s", "{% extends \"base.html\" %}", None).unwrap_err();
        assert_eq!(err[0].file, "body.html");
        assert!(err[0].message.contains("base.html"));
    }

    #[test]
    fn undefined_variables_and_fields_are_named_with_their_location() {
        let c = compile("s", "<p>\n  {{ pet.nme }}</p>", Some("{{ owner }}")).unwrap();
        let err = c
            .render(&data(json!({"pet": {"name": "Rex"}})), &common())
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "undefined variable \"pet.nme\" (body.html:2:10)"
        );
        let c = compile("s", "x", Some("a\n{{ owner.name }}")).unwrap();
        let err = c.render(&data(json!({"pet": {}})), &common()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "undefined variable \"owner\" (body.txt:2:4)"
        );
    }

    #[test]
    fn variables_are_checked_before_rendering() {
        let c = compile("s", "x", None).unwrap();
        let err = c.render(&data(json!({})), &common()).unwrap_err();
        assert_eq!(err.to_string(), "missing required variable \"pet\"");
    }

    #[test]
    fn common_variables_win_over_data() {
        let c = compile("{{ unsubscribe_url }}|{{ app.name }}|{{ year }}", "x", None).unwrap();
        let p = c
            .render(
                &data(json!({"pet": {}, "unsubscribe_url": "https://evil.example", "app": {"name": "x"}})),
                &common(),
            )
            .unwrap();
        assert_eq!(p.subject, "|Adopt Don't Shop|2026");
    }

    #[test]
    fn html_without_styles_is_left_as_rendered() {
        let html = "<p class=\"x\">Hi</p>";
        assert_eq!(inline_css(html).unwrap(), html);
        let not_style = "<p><styles>not an element</styles> <stylex> a < b</p>";
        assert_eq!(inline_css(not_style).unwrap(), not_style);
    }

    #[test]
    fn a_style_element_in_any_case_is_inlined() {
        for tag in [
            "<style>",
            "<STYLE>",
            "<Style type=\"text/css\">",
            "<style\n>",
        ] {
            let html = format!(
                "<html><head>{tag}p {{ color: red }}</style></head><body><p>x</p></body></html>"
            );
            assert!(has_style_element(&html), "{tag}");
            let out = inline_css(&html).unwrap();
            assert!(
                out.contains(r#"<p style="color: red;">x</p>"#),
                "{tag}: {out}"
            );
        }
    }

    fn compile_body(html: &str) -> Compiled {
        let decls =
            serde_json::from_value(json!([{"name": "body", "type": "string", "required": true}]))
                .unwrap();
        Compiled::new(
            Sources {
                subject: "s",
                html,
                text: None,
            },
            EMBEDDED_LAYOUT,
            decls,
        )
        .unwrap()
    }

    /// What per-email inlining makes of this email, for comparison with the cache.
    fn inlined_alone(c: &Compiled, data: &Map<String, Value>, common: &Common<'_>) -> String {
        let html = c.tera.render(files::HTML, &context(data, common)).unwrap();
        inline_css(&html).unwrap()
    }

    /// The text part made from this email's own HTML.
    fn text_alone(html: &str) -> String {
        let html = crate::tracking::neutralize_unsafe_hrefs(html);
        crate::templates::text::html_to_text(&html)
            .trim()
            .to_string()
    }

    fn cached_entries(c: &Compiled) -> Vec<bool> {
        c.css_cache
            .entries
            .lock()
            .unwrap()
            .iter()
            .map(|e| e.inlined.is_some())
            .collect()
    }

    const BYO: &str =
        "{% extends \"layout.html\" %}{% block content %}{{ body | safe }}{% endblock content %}";

    #[test]
    fn html_from_the_data_is_inlined_once_per_document_and_is_what_inlining_each_email_gives() {
        let c = compile_body(BYO);
        assert!(!c.css_preinlined());
        let body = crate::bench_fixture::byo_newsletter_html();
        let d = data(json!({ "body": body }));
        let recipients = [
            ("maya@example.com", Some("Maya"), "https://api.example/u/t1"),
            ("o'brien+news@example.org", None, ""),
            (
                "søren@exämple.dk",
                Some("Søren Ødegård"),
                "https://api.example/u/t2?x=y",
            ),
            ("a@b.example", Some(""), "https://api.example/u/t3"),
        ];
        for (email, name, unsubscribe) in recipients {
            let common = Common {
                recipient_email: email,
                recipient_name: name,
                unsubscribe_url: unsubscribe,
                ..common()
            };
            for _ in 0..2 {
                let p = c.render(&d, &common).unwrap();
                assert_eq!(p.html, inlined_alone(&c, &d, &common), "{email}");
                assert_eq!(p.text, text_alone(&p.html), "{email}");
                assert!(p.html.contains(email));
            }
        }
        // One document with an unsubscribe link, one without.
        assert_eq!(cached_entries(&c), [true, true]);
        // Values the parser or serialiser would change are never substituted.
        let odd = Common {
            recipient_email: "tom&jerry@example.com",
            recipient_name: Some("Tom \"TJ\" <Jerry>"),
            ..common()
        };
        let p = c.render(&d, &odd).unwrap();
        assert_eq!(p.html, inlined_alone(&c, &d, &odd));
        assert_eq!(p.text, text_alone(&p.html));
        assert_eq!(cached_entries(&c).len(), 2);
    }

    /// The text part laid out from the shared document with each recipient's values wraps,
    /// prints and dedups links exactly as the text made from that recipient's HTML.
    #[test]
    fn the_text_part_of_a_shared_document_is_each_recipients_own() {
        let c = compile_body(
            "{% extends \"layout.html\" %}{% block content %}<style>p { color: #333 }</style>\
             <p>Dear {{ recipient.name }}, this paragraph is long enough that the name decides where its lines wrap, as it should.</p>\
             <p>Write to <a href=\"mailto:{{ recipient.email }}\">{{ recipient.email }}</a> or \
             <a href=\"mailto:{{ recipient.email }}\">to yourself</a>; {{ body | safe }}</p>\
             <ul><li><a href=\"{{ unsubscribe_url }}\"><img src=\"x.png\" alt=\"{{ recipient.name }}\"></a></li>\
             <li><a href=\"{{ unsubscribe_url }}\"><img src=\"x.png\"></a> after</li></ul>{% endblock content %}",
        );
        let bodies = [
            "<a href=\"https://adoptdontshop.com/x\">https://adoptdontshop.com/x</a>",
            // A literal equal to a recipient's value: the decision is that recipient's.
            "<a href=\"mailto:maya@example.com\">maya@example.com</a> <a href=\"https://api.example/u/t1\">stop</a>",
        ];
        let long_name = "Maximiliana Wolfeschlegelsteinhausenbergerdorff-Okafor de la Cruz";
        let recipients = [
            ("maya@example.com", Some("Maya"), "https://api.example/u/t1"),
            (
                "a-very-long-address.with.many.parts@subdomain.example.org",
                Some(long_name),
                "https://api.example/u/t2",
            ),
            ("x@y.example", None, ""),
            (
                "maya@example.com",
                Some("javascript:alert(1)"),
                "javascript:alert(1)",
            ),
        ];
        for body in bodies {
            let d = data(json!({ "body": body }));
            for (email, name, unsubscribe) in recipients {
                let common = Common {
                    recipient_email: email,
                    recipient_name: name,
                    unsubscribe_url: unsubscribe,
                    ..common()
                };
                // The first email of a document, then one with the shared text and links.
                for _ in 0..2 {
                    let p = c.render(&d, &common).unwrap();
                    assert_eq!(
                        p.html,
                        crate::tracking::neutralize_unsafe_hrefs(&inlined_alone(&c, &d, &common)),
                        "{email}"
                    );
                    assert_eq!(p.text, text_alone(&p.html), "{body} / {email}");
                }
            }
        }
        assert!(cached_entries(&c).iter().all(|ok| *ok));
    }

    /// A link unsafe with the marks in place but safe with the values (a value in the host):
    /// that email's links and text part come from its own HTML.
    #[test]
    fn a_link_the_marks_make_unsafe_is_checked_on_each_email() {
        let c = compile_body(
            "{% extends \"layout.html\" %}{% block content %}<style>p { color: red }</style>\
             <p><a href=\"https://{{ recipient.name }}.example/p\">site</a> {{ body }}</p>{% endblock content %}",
        );
        let d = data(json!({ "body": "hi" }));
        for _ in 0..2 {
            let p = c.render(&d, &common()).unwrap();
            assert_eq!(p.html, inlined_alone(&c, &d, &common()));
            assert_eq!(p.text, text_alone(&p.html));
            assert!(
                p.text.contains("site (https://Maya.example/p)"),
                "{}",
                p.text
            );
        }
    }

    /// Links tracked in the pass that puts the values in are what tracking the rendered HTML
    /// gives, `data-notrack` and the unsubscribe link left alone; the text part is untracked.
    #[test]
    fn links_tracked_with_the_values_are_what_tracking_the_html_gives() {
        use crate::tracking::{RedirectHosts, Tracker};
        let tracker =
            Tracker::new(b"0123456789abcdef", "https://t.example", vec![]).with_redirect_hosts(
                RedirectHosts::new(&["adoptdontshop.com", "*.adoptdontshop.com", "api.example"]),
            );
        let c = compile_body(BYO);
        let body = format!(
            "{}<p><a href=\"https://www.adoptdontshop.com/kept\" data-notrack>kept</a> \
             <a href='https://www.adoptdontshop.com/q?a=1&amp;b=2'>quoted</a></p>",
            crate::bench_fixture::byo_newsletter_html()
        );
        let d = data(json!({ "body": body }));
        for (email, unsubscribe) in [
            ("maya@example.com", "https://api.example/u/t1"),
            ("o'brien@example.org", ""),
        ] {
            let common = Common {
                recipient_email: email,
                unsubscribe_url: unsubscribe,
                ..common()
            };
            let id = uuid::Uuid::from_u128(9);
            let unsub = Some(unsubscribe).filter(|u| !u.is_empty());
            let link = |url: &str| tracker.tracked_link(id, url, unsub);
            let (_, tracked) = c.render_tracked(&d, &common, Some(&link)).unwrap();
            assert!(!tracked, "a document seen once goes the per-email way");
            let (mut parts, tracked) = c.render_tracked(&d, &common, Some(&link)).unwrap();
            assert!(tracked, "a cached document is tracked in the same pass");
            tracker.add_pixel(id, &mut parts.html);
            let plain = c.render(&d, &common).unwrap();
            assert_eq!(
                parts.html,
                tracker.inject(id, &plain.html, unsub),
                "{email}"
            );
            assert_eq!(parts.text, plain.text);
            assert!(parts.html.contains("https://t.example/t/c/"));
            assert!(!parts.text.contains("https://t.example/"));
        }
    }

    #[test]
    fn a_value_that_could_change_which_rules_apply_is_never_cached() {
        let c = compile_body(BYO);
        for body in [
            // The value in a class, then a rule that matches on an attribute.
            "<style>.x { color: red }</style><p class=\"{{ recipient.email }}\">x</p>",
            "<style>a[href*=\"unsubscribe\"] { color: red }</style><p>x</p>",
        ] {
            // `{{ }}` in the data is not Tera: put the mark where the layout would.
            let body = body.replace("{{ recipient.email }}", "maya@example.com");
            let d = data(json!({ "body": body }));
            let p = c.render(&d, &common()).unwrap();
            assert_eq!(p.html, inlined_alone(&c, &d, &common()));
        }
        let templated = compile_body(
            "{% extends \"layout.html\" %}{% block content %}<style>.maya { color: red }</style><p class=\"{{ recipient.name | lower }}\">{{ body }}</p>{% endblock content %}",
        );
        let d = data(json!({ "body": "hi" }));
        let p = templated.render(&d, &common()).unwrap();
        assert_eq!(p.html, inlined_alone(&templated, &d, &common()));
        assert!(
            p.html
                .contains(r#"<p class="maya" style="margin: 0 0 16px 0;color: red;">"#),
            "{}",
            p.html
        );
        assert_eq!(cached_entries(&templated), [false]);
        // The attribute selector (the body's) against the layout's unsubscribe link.
        let c = compile_body(BYO);
        let d = data(json!({ "body": "<style>a[href*=\"/u/\"] { color: red }</style>" }));
        let with_link = Common {
            unsubscribe_url: "https://api.example/u/t",
            ..common()
        };
        let p = c.render(&d, &with_link).unwrap();
        assert_eq!(p.html, inlined_alone(&c, &d, &with_link));
        assert_eq!(cached_entries(&c), [false]);
    }

    #[test]
    fn one_line_strips_line_breaks() {
        assert_eq!(one_line("a\r\nb\n\n c \r"), "a b c");
        assert_eq!(one_line("\n\n"), "");
    }
}
