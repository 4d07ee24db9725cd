//! Which certificate authorities the relay's certificate may chain to: the Mozilla roots
//! bundled with lettre (webpki-roots), the system store, and `smtp.ca_file`.
//!
//! lettre's own choice is one or the other (its `rustls-native-certs` feature replaces the
//! bundled roots with the system store), so the bundled roots are kept and the system's and
//! the file's certificates are added to them. The system store is read the way OpenSSL
//! does (`/etc/ssl/certs` and the like on Linux; `SSL_CERT_FILE` / `SSL_CERT_DIR` instead
//! when set), once per transport, only when the relay URL asks for TLS.

use std::path::Path;

use super::super::classify::SendFailure;
use lettre::transport::smtp::client::{Certificate, CertificateStore, TlsParameters};
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::{PemObject, SectionKind};

/// Certificate authorities trusted for the relay besides the bundled and system roots.
#[derive(Clone, Debug, Default)]
pub(super) struct ExtraRoots {
    certs: Vec<CertificateDer<'static>>,
}

impl ExtraRoots {
    /// Reads `smtp.ca_file`. The error says what is wrong with the file (its path is added
    /// by the caller): unreadable, not PEM, no certificate, or a certificate rustls cannot
    /// use as a trust anchor.
    pub(super) fn from_pem_file(path: &Path) -> Result<ExtraRoots, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("cannot be read: {e}"))?;
        let mut certs = Vec::new();
        let mut other = 0;
        for item in <(SectionKind, Vec<u8>)>::pem_slice_iter(&bytes) {
            match item.map_err(|e| format!("is not valid PEM: {e}"))? {
                (SectionKind::Certificate, der) => certs.push(CertificateDer::from(der)),
                _ => other += 1,
            }
        }
        if certs.is_empty() {
            return Err(if other > 0 || contains(&bytes, b"-----BEGIN ") {
                "holds no certificate: it has no -----BEGIN CERTIFICATE----- section".into()
            } else {
                "is not PEM: it has no -----BEGIN CERTIFICATE----- section (a DER file \
                 converts with `openssl x509 -inform der -in FILE -out FILE.pem`)"
                    .into()
            });
        }
        let total = certs.len();
        for (i, cert) in certs.iter().enumerate() {
            RootCertStore::empty()
                .add(cert.clone())
                .map_err(|e| format!("certificate {} of {total} cannot be used: {e}", i + 1))?;
        }
        Ok(ExtraRoots { certs })
    }

    pub(super) fn len(&self) -> usize {
        self.certs.len()
    }

    /// TLS parameters for a relay named `host`: the bundled roots, the system store and
    /// these certificates.
    pub(super) fn parameters(&self, host: &str) -> Result<TlsParameters, String> {
        let mut builder = TlsParameters::builder(host.to_string())
            .certificate_store(CertificateStore::WebpkiRoots);
        for der in system_roots().iter().chain(&self.certs) {
            let cert = Certificate::from_der(der.to_vec()).map_err(|e| e.to_string())?;
            builder = builder.add_root_certificate(cert);
        }
        builder.build().map_err(|e| e.to_string())
    }
}

/// The system store's certificates that rustls can use (an unusable one would make lettre
/// refuse the whole set; it is skipped, as rustls's own loaders do).
fn system_roots() -> Vec<CertificateDer<'static>> {
    let loaded = rustls_native_certs::load_native_certs();
    for e in &loaded.errors {
        tracing::warn!(error = %e, "smtp: a certificate of the system store could not be read");
    }
    let total = loaded.certs.len();
    let usable: Vec<_> = loaded
        .certs
        .into_iter()
        .filter(|cert| RootCertStore::empty().add(cert.clone()).is_ok())
        .collect();
    if usable.len() < total {
        tracing::warn!(
            skipped = total - usable.len(),
            "smtp: certificates of the system store that rustls cannot use were skipped"
        );
    }
    tracing::debug!(
        certificates = usable.len(),
        "smtp: trusting the system store"
    );
    usable
}

/// A TLS handshake that failed (the relay's certificate was not trusted, or no common
/// protocol), worded for the operator; `None` for any other error. lettre reports these as
/// connection errors, which would read as a network problem.
pub(super) fn handshake_failure(
    err: &lettre::transport::smtp::Error,
    host: &str,
) -> Option<SendFailure> {
    let mut source = std::error::Error::source(err);
    while let Some(e) = source {
        let tls = e.downcast_ref::<rustls::Error>().or_else(|| {
            e.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if let Some(tls) = tls {
            let hint = match tls {
                rustls::Error::InvalidCertificate(_) => {
                    "; the relay's certificate must chain to a CA in smtp.ca_file, the system \
                     store or the bundled Mozilla roots"
                }
                _ => "",
            };
            return Some(SendFailure::transient(format!(
                "tls handshake with {host} failed: {tls}{hint}"
            )));
        }
        source = e.source();
    }
    None
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &[u8]) -> Result<ExtraRoots, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, text).unwrap();
        ExtraRoots::from_pem_file(&path)
    }

    #[test]
    fn a_bad_ca_file_is_refused_saying_why() {
        let missing = ExtraRoots::from_pem_file(Path::new("/nonexistent/ca.pem")).unwrap_err();
        assert!(missing.starts_with("cannot be read: "), "{missing}");

        let der = read(&[0x30, 0x82, 0x01, 0x0a, 0x02, 0x82]).unwrap_err();
        assert!(der.starts_with("is not PEM"), "{der}");

        let key =
            read(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n").unwrap_err();
        assert!(key.starts_with("holds no certificate"), "{key}");

        let cut = read(b"-----BEGIN CERTIFICATE-----\nAAAA\n").unwrap_err();
        assert!(cut.starts_with("is not valid PEM"), "{cut}");

        let junk =
            read(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").unwrap_err();
        assert!(
            junk.starts_with("certificate 1 of 1 cannot be used"),
            "{junk}"
        );
    }

    #[test]
    fn without_a_ca_file_the_parameters_build() {
        let params = ExtraRoots::default().parameters("relay.example").unwrap();
        assert_eq!(params.domain(), "relay.example");
    }
}
