//! DKIM signing (RFC 6376): every message whose From domain has a key in `[[dkim.keys]]` is
//! signed over its final bytes, relaxed/relaxed, with rsa-sha256 or ed25519-sha256 (RFC 8463).
//! Keys are read and parsed once, at start-up; a message from a domain without a key goes
//! unsigned. The signing is Stalwart's mail-auth over ring.

mod key;

use std::path::PathBuf;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use lettre::Message;
use lettre::message::Mailboxes;
use lettre::message::header::From as FromHeader;
use mail_auth::common::headers::HeaderWriter;

use super::message::Outgoing;
use crate::config::dkim::ascii_domain;
pub use crate::config::{DkimKeySettings, DkimSettings};
use key::{KeySigner, PrivateKey};

/// The headers a signature covers: who and what (From, Reply-To, To, Cc, Subject, Date,
/// Message-ID), how the body reads (the MIME headers) and the one-click unsubscribe, which
/// receivers honour only when it is signed (RFC 8058). A listed header the message lacks is
/// signed as absent, so it cannot be added on the way without breaking the signature.
pub const SIGNED_HEADERS: [&str; 12] = [
    "From",
    "Reply-To",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
];

/// Smallest RSA key accepted, in bits (RFC 8301 requires 1024 of verifiers and recommends
/// 2048; ring signs with nothing smaller).
pub const MIN_RSA_BITS: usize = 2048;

#[derive(Debug, thiserror::Error)]
pub enum DkimError {
    /// A key that cannot be used: start-up stops, naming the file.
    #[error("dkim key_file {}: {problem}", path.display())]
    KeyFile { path: PathBuf, problem: String },
    #[error("no DKIM key for {domain}: {configured}")]
    NoKey { domain: String, configured: String },
    #[error("DKIM signing failed for {domain}: {problem}")]
    Sign { domain: String, problem: String },
}

/// The configured keys, parsed; cheap to clone. Empty: nothing is signed.
#[derive(Clone, Default)]
pub struct Signer {
    keys: Arc<[DomainKey]>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(
                self.keys
                    .iter()
                    .map(|k| format!("{} ({})", k.record_name(), k.description)),
            )
            .finish()
    }
}

struct DomainKey {
    /// Lowercase ASCII.
    domain: String,
    selector: String,
    signer: KeySigner,
    /// The record's `k=` and `p=`.
    algorithm: &'static str,
    public_key: Vec<u8>,
    /// For logs: `rsa 2048 bits`.
    description: String,
}

impl DomainKey {
    /// Reads and parses `entry.key_file`, once.
    fn load(entry: &DkimKeySettings) -> Result<DomainKey, DkimError> {
        let key = PrivateKey::read_pem(&entry.key_file).map_err(|problem| DkimError::KeyFile {
            path: entry.key_file.clone(),
            problem,
        })?;
        let domain =
            ascii_domain(&entry.domain).unwrap_or_else(|| entry.domain.to_ascii_lowercase());
        Ok(DomainKey {
            algorithm: key.algorithm(),
            public_key: key.public_key(),
            description: key.describe(),
            signer: KeySigner::new(key, &domain, &entry.selector),
            domain,
            selector: entry.selector.clone(),
        })
    }

    fn record_name(&self) -> String {
        format!("{}._domainkey.{}", self.selector, self.domain)
    }
}

/// The TXT record that publishes a key's public half.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsRecord {
    /// `<selector>._domainkey.<domain>`
    pub name: String,
    /// `v=DKIM1; k=rsa; p=<base64>` (or `k=ed25519`)
    pub value: String,
}

impl std::fmt::Display for DnsRecord {
    /// A zone-file line; the value is cut into strings of at most 255 characters, the most
    /// one TXT string holds (a 2048-bit RSA key needs two), which resolvers join.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}. IN TXT", self.name)?;
        for chunk in self.value.as_bytes().chunks(255) {
            write!(f, " \"{}\"", String::from_utf8_lossy(chunk))?;
        }
        Ok(())
    }
}

impl Signer {
    /// Reads and parses every key of `[[dkim.keys]]`; the first that cannot be used is the
    /// error, naming its file.
    pub fn from_settings(settings: &DkimSettings) -> Result<Signer, DkimError> {
        let keys = settings
            .keys
            .iter()
            .map(DomainKey::load)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Signer { keys: keys.into() })
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The message's final bytes, with a `DKIM-Signature` header first when a key covers its
    /// From domain. What this returns is what every transport sends, byte for byte.
    pub fn sign(&self, message: &Message) -> Result<Outgoing, DkimError> {
        let mut outgoing = Outgoing::new(message);
        let Some(key) = self.key_for(message) else {
            return Ok(outgoing);
        };
        let signature = key
            .signer
            .sign(&outgoing.bytes)
            .map_err(|e| DkimError::Sign {
                domain: key.domain.clone(),
                problem: e.to_string(),
            })?;
        let mut signed = Vec::with_capacity(outgoing.bytes.len() + 600);
        signature.write_header(&mut signed);
        signed.extend_from_slice(&outgoing.bytes);
        outgoing.bytes = signed;
        Ok(outgoing)
    }

    fn key_for(&self, message: &Message) -> Option<&DomainKey> {
        if self.keys.is_empty() {
            return None;
        }
        let from: Mailboxes = message.headers().get::<FromHeader>()?.into();
        let domain = from.iter().next()?.email.domain();
        self.keys
            .iter()
            .find(|k| k.domain.eq_ignore_ascii_case(domain))
    }

    /// The TXT record to publish for `domain`'s key (`adopt-worker dkim record`).
    pub fn dns_record(&self, domain: &str) -> Result<DnsRecord, DkimError> {
        let wanted = ascii_domain(domain).unwrap_or_else(|| domain.to_ascii_lowercase());
        let Some(key) = self.keys.iter().find(|k| k.domain == wanted) else {
            let configured: Vec<&str> = self.keys.iter().map(|k| k.domain.as_str()).collect();
            return Err(DkimError::NoKey {
                domain: domain.to_string(),
                configured: if configured.is_empty() {
                    "the configuration has no [[dkim.keys]]".to_string()
                } else {
                    format!("[[dkim.keys]] has {}", configured.join(", "))
                },
            });
        };
        Ok(DnsRecord {
            name: key.record_name(),
            value: format!(
                "v=DKIM1; k={}; p={}",
                key.algorithm,
                BASE64.encode(&key.public_key)
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(domain: &str, selector: &str, key_file: &str) -> DkimSettings {
        DkimSettings {
            keys: vec![DkimKeySettings {
                domain: domain.into(),
                selector: selector.into(),
                key_file: key_file.into(),
            }],
        }
    }

    #[test]
    fn domains_and_selectors_are_checked_before_any_file_is_read() {
        assert!(
            settings("adoptdontshop.com", "s2026", "/k.pem")
                .validate()
                .is_ok()
        );
        assert!(
            settings("München.de", "mail.s1", "/k.pem")
                .validate()
                .is_ok()
        );
        for (domain, selector, problem) in [
            ("", "s1", "dkim.keys[0].domain"),
            ("a b.com", "s1", "dkim.keys[0].domain"),
            ("example.com", "s_1", "dkim.keys[0].selector"),
            ("example.com", "", "dkim.keys[0].selector"),
        ] {
            let e = settings(domain, selector, "/k.pem").validate().unwrap_err();
            assert!(e.contains(problem), "{domain:?} {selector:?}: {e}");
        }
        let e = settings("example.com", "s1", "").validate().unwrap_err();
        assert!(e.contains("key_file"), "{e}");
        let mut twice = settings("example.com", "s1", "/a.pem");
        twice.keys.push(DkimKeySettings {
            domain: "Example.COM".into(),
            selector: "s2".into(),
            key_file: "/b.pem".into(),
        });
        let e = twice.validate().unwrap_err();
        assert!(e.contains("one key per signing domain"), "{e}");
    }

    #[test]
    fn a_record_is_cut_into_txt_strings_of_255_characters() {
        let record = DnsRecord {
            name: "s1._domainkey.example.com".into(),
            value: format!("v=DKIM1; k=rsa; p={}", "A".repeat(400)),
        };
        let line = record.to_string();
        assert!(line.starts_with("s1._domainkey.example.com. IN TXT \"v=DKIM1; k=rsa; p=AAA"));
        let strings: Vec<&str> = line.split('"').skip(1).step_by(2).collect();
        assert_eq!(strings.len(), 2);
        assert_eq!(strings[0].len(), 255);
        assert_eq!(strings.concat(), record.value);
    }
}
