//! `[dkim]`: the signing keys by domain, as configured (read and parsed at start-up by
//! `delivery::dkim`).

use std::path::PathBuf;

use serde::Deserialize;

/// `[dkim]`: one `[[dkim.keys]]` table per signing domain.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DkimSettings {
    #[serde(deserialize_with = "tables_only")]
    pub keys: Vec<DkimKeySettings>,
}

/// One signing domain: mail whose From address is at `domain` is signed with the key in
/// `key_file` (PEM: RSA of 2048 bits or more, PKCS#1 or PKCS#8, or Ed25519, PKCS#8), whose
/// public half is published under `<selector>._domainkey.<domain>`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DkimKeySettings {
    pub domain: String,
    pub selector: String,
    pub key_file: PathBuf,
}

/// A list of tables has no environment form: say so rather than "expected a sequence".
fn tables_only<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<DkimKeySettings>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Tables(Vec<DkimKeySettings>),
        Other(serde::de::IgnoredAny),
    }
    match Either::deserialize(d)? {
        Either::Tables(keys) => Ok(keys),
        Either::Other(_) => Err(serde::de::Error::custom(
            "dkim.keys is a list of [[dkim.keys]] tables (domain, selector, key_file), \
             which only a configuration file can give",
        )),
    }
}

impl DkimSettings {
    /// Checks what can be checked without reading the key files (start-up reads them).
    pub(crate) fn validate(&self) -> Result<(), String> {
        let mut seen: Vec<String> = Vec::new();
        for (i, key) in self.keys.iter().enumerate() {
            let at = format!("dkim.keys[{i}]");
            let domain = ascii_domain(&key.domain)
                .ok_or_else(|| format!("{at}.domain {:?} is not a domain name", key.domain))?;
            if seen.contains(&domain) {
                return Err(format!(
                    "{at}.domain {domain} has a key already: one key per signing domain"
                ));
            }
            seen.push(domain);
            if !is_dns_name(&key.selector) {
                return Err(format!(
                    "{at}.selector {:?} is not a selector (letters, digits, hyphens, dots)",
                    key.selector
                ));
            }
            if key.key_file.as_os_str().is_empty() {
                return Err(format!("{at}.key_file is empty"));
            }
        }
        Ok(())
    }
}

/// A domain in its lowercase ASCII form (`München.de` → `xn--mnchen-3ya.de`), as a From
/// address goes out; `None` when it is not a domain name.
pub(crate) fn ascii_domain(domain: &str) -> Option<String> {
    let ascii = idna::domain_to_ascii(domain.trim().trim_end_matches('.')).ok()?;
    is_dns_name(&ascii).then_some(ascii)
}

fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}
