//! VERP (variable envelope return path): every email leaves with its own envelope sender,
//! `bounce.return_path` with `{email_id}` filled in (`bounces+<email_id>@bounces.example.org`),
//! so a bounce names the email it is about in the address it is sent to, whatever the
//! remote server quotes of the original.

use lettre::Address;
use uuid::Uuid;

/// The placeholder `bounce.return_path` must hold exactly once.
pub const PLACEHOLDER: &str = "{email_id}";

/// Longest local part RFC 5321 allows (4.5.3.1.1).
const MAX_LOCAL_PART: usize = 64;

/// A checked `bounce.return_path` template: the text before and after `{email_id}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReturnPath {
    prefix: String,
    suffix: String,
}

impl ReturnPath {
    /// Parses `bounce.return_path`. Empty means no VERP (`Ok(None)`); otherwise it must hold
    /// `{email_id}` exactly once, in the local part, and be a valid ASCII address once
    /// filled in. The error says what is wrong, naming the key.
    pub fn parse(template: &str) -> Result<Option<ReturnPath>, String> {
        let template = template.trim();
        if template.is_empty() {
            return Ok(None);
        }
        let problem = |why: &str| {
            Err(format!(
                "bounce.return_path {template:?} {why}; expected a template such as \"bounces+{PLACEHOLDER}@bounces.example.org\""
            ))
        };
        let count = template.matches(PLACEHOLDER).count();
        if count != 1 {
            return problem(&format!(
                "must contain {PLACEHOLDER} exactly once (found {count})"
            ));
        }
        let Some((prefix, suffix)) = template.split_once(PLACEHOLDER) else {
            return problem(&format!("must contain {PLACEHOLDER}"));
        };
        if prefix.contains(['{', '}']) || suffix.contains(['{', '}']) {
            return problem(&format!("has braces other than {PLACEHOLDER}"));
        }
        if !template.is_ascii() {
            return problem("must be ASCII (an envelope sender without SMTPUTF8)");
        }
        if prefix.contains('@') || !suffix.contains('@') {
            return problem(&format!(
                "must have {PLACEHOLDER} in the local part, before the @"
            ));
        }
        let path = ReturnPath {
            prefix: prefix.to_string(),
            suffix: suffix.to_string(),
        };
        let sample = path.fill(Uuid::nil());
        if let Some((local, _)) = sample.rsplit_once('@')
            && local.len() > MAX_LOCAL_PART
        {
            return problem(&format!(
                "has a local part of {} characters once filled in; at most {MAX_LOCAL_PART} are allowed",
                local.len()
            ));
        }
        if let Err(e) = sample.parse::<Address>() {
            return problem(&format!(
                "is not a valid address once filled in ({sample}): {e}"
            ));
        }
        Ok(Some(path))
    }

    fn fill(&self, email_id: Uuid) -> String {
        format!("{}{}{}", self.prefix, email_id.hyphenated(), self.suffix)
    }

    /// The envelope sender of the email `email_id`.
    pub fn address(&self, email_id: Uuid) -> Result<Address, lettre::address::AddressError> {
        self.fill(email_id).parse()
    }

    /// The email a bounce address names, when it is one of ours (`<...>`, case and
    /// surrounding spaces ignored).
    pub fn email_id_of(&self, address: &str) -> Option<Uuid> {
        let address = address
            .trim()
            .trim_start_matches('<')
            .trim_end_matches('>')
            .trim()
            .to_ascii_lowercase();
        let rest = address.strip_prefix(&self.prefix.to_ascii_lowercase())?;
        let id = rest.strip_suffix(&self.suffix.to_ascii_lowercase())?;
        // Hyphenated only: that is what we send, and it keeps a crafted address short.
        (id.len() == 36).then(|| Uuid::parse_str(id).ok()).flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_template_fills_in_and_reads_back() {
        let rp = ReturnPath::parse("bounces+{email_id}@bounces.example.org")
            .unwrap()
            .unwrap();
        let id = Uuid::new_v4();
        let address = rp.address(id).unwrap();
        assert_eq!(
            address.to_string(),
            format!("bounces+{id}@bounces.example.org")
        );
        assert_eq!(rp.email_id_of(address.as_ref()), Some(id));
        let shouted = format!(
            "<BOUNCES+{}@Bounces.Example.ORG>",
            id.to_string().to_uppercase()
        );
        assert_eq!(rp.email_id_of(&shouted), Some(id));
        assert_eq!(rp.email_id_of("bounces+nope@bounces.example.org"), None);
        assert_eq!(
            rp.email_id_of(&format!("bounces+{id}@elsewhere.example.org")),
            None
        );
        assert_eq!(rp.email_id_of(&format!("x{id}@bounces.example.org")), None);
    }

    #[test]
    fn empty_means_no_verp() {
        assert_eq!(ReturnPath::parse("").unwrap(), None);
        assert_eq!(ReturnPath::parse("  ").unwrap(), None);
    }

    #[test]
    fn bad_templates_are_refused_with_the_reason() {
        for (template, why) in [
            ("bounces@bounces.example.org", "exactly once (found 0)"),
            (
                "b+{email_id}+{email_id}@bounces.example.org",
                "exactly once (found 2)",
            ),
            ("bounces+{id}@bounces.example.org", "exactly once (found 0)"),
            ("bounces+{email_id}{x}@b.example.org", "braces"),
            ("bounces@{email_id}.example.org", "in the local part"),
            ("bounces+{email_id}", "in the local part"),
            ("bö+{email_id}@b.example.org", "ASCII"),
            ("bounces+{email_id}@", "not a valid address"),
            ("b o+{email_id}@b.example.org", "not a valid address"),
            (
                "a-very-long-prefix-for-bounces+{email_id}@b.example.org",
                "local part of",
            ),
        ] {
            let e = ReturnPath::parse(template).unwrap_err();
            assert!(
                e.contains("bounce.return_path") && e.contains(why),
                "{template}: {e}"
            );
        }
    }
}
