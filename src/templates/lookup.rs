//! Which `email_templates` row renders a request for (template, locale). The seed's unique
//! index is on `name` alone, so a locale variant is its own row (its own name, e.g.
//! `welcome.fr-FR`) whose `parent_template_id` points at the template it translates.
//! Given the requested row R, the order is:
//!
//! 1. R or one of its variants whose locale is exactly the requested one;
//! 2. R or a variant in the requested language (`en` for `en-GB`);
//! 3. R's parent (nearest first): its family by exact locale, then by language, then the
//!    parent itself;
//! 4. R's family (and its parents') in the default locale;
//! 5. R itself.
//!
//! Only rows with `status = 'active'` and `deleted_at IS NULL` are chosen. Ties go to the
//! requested row itself, then `is_default`, then higher `priority`. Nothing outside R's
//! family is ever chosen: when nothing in it is usable the lookup fails, naming R's state,
//! rather than another template of the category rendering a different email. Two
//! [`Mode`]s bypass the order: a pinned version renders R itself (whatever its state: the
//! version is the content that was enqueued), and a locale variant named by id keeps its
//! own locale unless the locale was named too.

use chrono::NaiveDateTime;
use uuid::Uuid;

/// A row that may be chosen, as the candidate query returns it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Candidate {
    pub template_id: Uuid,
    pub name: String,
    pub locale: Option<String>,
    pub parent_template_id: Option<Uuid>,
    pub category: String,
    pub is_default: bool,
    pub priority: i32,
    /// `status = 'active' AND deleted_at IS NULL`.
    pub usable: bool,
    /// `deleted`, else the status (`active`, `inactive`, `draft`, `archived`).
    pub state: String,
    pub current_version: i32,
    pub updated_at: Option<NaiveDateTime>,
    /// Distance from the requested row up its parent chain (0 = the requested row), or
    /// NULL for rows that are only variants or category defaults.
    pub depth: Option<i32>,
}

/// Which step of the fallback chose the row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    ExactLocale,
    Language,
    Parent,
    DefaultLocale,
    Requested,
}

/// How the locale of a lookup was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Named by the caller (`metadata.locale`, the API's `locale`).
    Named,
    /// A guess (the recipient's language, the default locale): a locale variant named by
    /// id renders in its own locale.
    Guessed,
    /// A version is pinned: R itself renders, at that version.
    Pinned,
}

/// `en_gb` → `en-GB`; used for comparisons and in reasons.
pub fn normalize_locale(locale: &str) -> String {
    let mut parts = locale.trim().split(['-', '_']);
    let mut out = parts.next().unwrap_or("").to_ascii_lowercase();
    for p in parts {
        out.push('-');
        if p.len() == 2 {
            out.push_str(&p.to_ascii_uppercase());
        } else {
            out.push_str(p);
        }
    }
    out
}

fn language(locale: &str) -> &str {
    locale.split(['-', '_']).next().unwrap_or(locale)
}

fn same_locale(a: Option<&str>, b: &str) -> bool {
    a.is_some_and(|a| normalize_locale(a).eq_ignore_ascii_case(b))
}

fn same_language(a: Option<&str>, b: &str) -> bool {
    a.is_some_and(|a| language(a).eq_ignore_ascii_case(language(b)))
}

/// Picks the row to render; `None` when no usable row fits (or R is not among `cands`).
pub fn choose(
    cands: &[Candidate],
    locale: &str,
    default_locale: &str,
    mode: Mode,
) -> Option<(usize, Step)> {
    let requested = requested(cands)?;
    let r = &cands[requested];
    match mode {
        Mode::Pinned => return Some((requested, Step::Requested)),
        Mode::Guessed if r.usable && r.parent_template_id.is_some() && r.locale.is_some() => {
            return Some((requested, Step::ExactLocale));
        }
        _ => {}
    }
    let locale = normalize_locale(locale);
    let default_locale = normalize_locale(default_locale);
    let mut chain: Vec<(i32, usize)> = cands
        .iter()
        .enumerate()
        .filter_map(|(i, c)| c.depth.map(|d| (d, i)))
        .collect();
    chain.sort_unstable();
    let (&(0, requested), ancestors) = chain.split_first()? else {
        return None;
    };
    // A level's family: the row and its direct variants, usable ones, the row itself first.
    let family = |level: usize| -> Vec<usize> {
        let id = cands[level].template_id;
        let mut f: Vec<usize> = (0..cands.len())
            .filter(|&i| cands[i].usable && (i == level || cands[i].parent_template_id == Some(id)))
            .collect();
        f.sort_by_key(|&i| rank(&cands[i], i == level));
        f
    };
    let pick = |members: &[usize], pred: &dyn Fn(&Candidate) -> bool| {
        members.iter().copied().find(|&i| pred(&cands[i]))
    };
    let exact = |c: &Candidate| same_locale(c.locale.as_deref(), &locale);
    // Within a language, a row in the bare language (`en`) beats a sibling region.
    let lang_only = |c: &Candidate| same_locale(c.locale.as_deref(), language(&locale));
    let lang = |c: &Candidate| same_language(c.locale.as_deref(), &locale);

    let own = family(requested);
    if let Some(i) = pick(&own, &exact) {
        return Some((i, Step::ExactLocale));
    }
    if let Some(i) = pick(&own, &lang_only).or_else(|| pick(&own, &lang)) {
        return Some((i, Step::Language));
    }
    for &(_, level) in ancestors {
        let fam = family(level);
        if let Some(i) = pick(&fam, &exact)
            .or_else(|| pick(&fam, &lang_only))
            .or_else(|| pick(&fam, &lang))
        {
            return Some((i, Step::Parent));
        }
        if cands[level].usable {
            return Some((level, Step::Parent));
        }
    }
    let is_default_locale = |c: &Candidate| same_locale(c.locale.as_deref(), &default_locale);
    for &(_, level) in &chain {
        if let Some(i) = pick(&family(level), &is_default_locale) {
            return Some((i, Step::DefaultLocale));
        }
    }
    cands[requested]
        .usable
        .then_some((requested, Step::Requested))
}

/// The index of R (depth 0) in `cands`.
pub fn requested(cands: &[Candidate]) -> Option<usize> {
    cands.iter().position(|c| c.depth == Some(0))
}

/// Sort key among equally fitting rows: the level row itself, defaults, higher priority,
/// then the name for a stable answer.
fn rank(c: &Candidate, is_level: bool) -> (bool, bool, i32, String) {
    (!is_level, !c.is_default, -c.priority, c.name.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    fn cand(n: u128, locale: &str, parent: Option<u128>, depth: Option<i32>) -> Candidate {
        Candidate {
            template_id: id(n),
            name: format!("t{n}"),
            locale: Some(locale.into()),
            parent_template_id: parent.map(id),
            category: "welcome".into(),
            is_default: false,
            priority: 0,
            usable: true,
            state: "active".into(),
            current_version: 1,
            updated_at: None,
            depth,
        }
    }

    fn chosen(c: &[Candidate], locale: &str) -> Option<(Uuid, Step)> {
        choose(c, locale, "en-US", Mode::Named).map(|(i, s)| (c[i].template_id, s))
    }

    /// R (1, en-US) with variants fr-FR (2), en-GB (3), en (4) and a category default (9).
    fn family() -> Vec<Candidate> {
        let mut d = cand(9, "en-US", None, None);
        d.is_default = true;
        vec![
            cand(1, "en-US", None, Some(0)),
            cand(2, "fr-FR", Some(1), None),
            cand(3, "en-GB", Some(1), None),
            cand(4, "en", Some(1), None),
            d,
        ]
    }

    #[test]
    fn exact_locale_wins_case_and_separator_insensitively() {
        assert_eq!(chosen(&family(), "fr-FR"), Some((id(2), Step::ExactLocale)));
        assert_eq!(chosen(&family(), "en_gb"), Some((id(3), Step::ExactLocale)));
        assert_eq!(chosen(&family(), "en-US"), Some((id(1), Step::ExactLocale)));
    }

    #[test]
    fn language_prefix_comes_next_preferring_the_bare_language() {
        assert_eq!(chosen(&family(), "fr-CA"), Some((id(2), Step::Language)));
        assert_eq!(chosen(&family(), "en-AU"), Some((id(4), Step::Language)));
        let mut f = family();
        f.remove(3);
        // en-US (the requested row itself) and en-GB both fit; the row itself wins.
        assert_eq!(chosen(&f, "en-AU"), Some((id(1), Step::Language)));
    }

    #[test]
    fn parent_is_next_with_its_own_variants_first() {
        // Requested: the fr-FR variant (2) asked for de-DE → its parent (1).
        let mut f = family();
        f[0].depth = Some(1);
        f[1].depth = Some(0);
        assert_eq!(chosen(&f, "de-DE"), Some((id(1), Step::Parent)));
        // Asked for en-GB from the French variant: the parent's en-GB sibling.
        assert_eq!(chosen(&f, "en-GB"), Some((id(3), Step::Parent)));
    }

    #[test]
    fn default_locale_then_the_requested_row() {
        // R in fr-FR with an en-US variant: de-DE → the en-US variant.
        let f = vec![
            cand(1, "fr-FR", None, Some(0)),
            cand(2, "en-US", Some(1), None),
        ];
        assert_eq!(chosen(&f, "de-DE"), Some((id(2), Step::DefaultLocale)));
        // No default-locale row: R itself.
        let f = vec![cand(1, "fr-FR", None, Some(0))];
        assert_eq!(chosen(&f, "de-DE"), Some((id(1), Step::Requested)));
    }

    #[test]
    fn never_another_template_when_nothing_in_the_family_is_usable() {
        let mut f = family();
        for c in &mut f[..4] {
            c.usable = false;
        }
        // The category's default (9) is another email: never chosen.
        assert_eq!(chosen(&f, "en-GB"), None);
        // A pinned version still renders R.
        assert_eq!(
            choose(&f, "en-GB", "en-US", Mode::Pinned),
            Some((0, Step::Requested))
        );
    }

    #[test]
    fn a_variant_named_by_id_keeps_its_locale_unless_one_is_named() {
        let mut f = family();
        f[0].depth = Some(1);
        f[1].depth = Some(0);
        assert_eq!(
            choose(&f, "en-US", "en-US", Mode::Guessed),
            Some((1, Step::ExactLocale))
        );
        assert_eq!(chosen(&f, "en-US"), Some((id(1), Step::Parent)));
    }

    #[test]
    fn inactive_rows_are_never_chosen() {
        let mut f = family();
        f[1].usable = false;
        assert_eq!(chosen(&f, "fr-FR"), Some((id(1), Step::DefaultLocale)));
    }

    #[test]
    fn nothing_without_the_requested_row() {
        assert_eq!(chosen(&[], "en-US"), None);
        let f = vec![cand(2, "en-US", None, None)];
        assert_eq!(chosen(&f, "en-US"), None);
    }

    #[test]
    fn normalize() {
        assert_eq!(normalize_locale("EN_gb"), "en-GB");
        assert_eq!(normalize_locale("zh-Hant"), "zh-Hant");
        assert_eq!(normalize_locale("fr"), "fr");
    }
}
