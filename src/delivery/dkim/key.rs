//! Signing keys: a PEM file read into a ring key pair once, at start-up, and handed to
//! mail-auth's signer through its `SigningKey` trait.
//!
//! mail-auth's own ring keys hash the canonical body one byte per digest update, which was
//! 0.3 ms of a 30 KB newsletter's signing (examples/dkim_bench.rs); these feed the digest in
//! blocks, and parse each key once.

use std::path::Path;

use mail_auth::common::crypto::{Algorithm, HashOutput, Sha256, SigningKey};
use mail_auth::common::headers::{Writable, Writer};
use mail_auth::dkim::{Canonicalization, DkimSigner, Done, Signature};
use ring::digest::{Context, SHA256};
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair, RSA_PKCS1_SHA256, RsaKeyPair};
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;

use super::{MIN_RSA_BITS, SIGNED_HEADERS};

/// A private key, parsed.
pub(super) enum PrivateKey {
    Rsa(RsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

impl PrivateKey {
    /// Reads a PEM file: RSA in PKCS#1 (`BEGIN RSA PRIVATE KEY`) or PKCS#8 (`BEGIN PRIVATE
    /// KEY`, what `openssl genpkey` writes), or Ed25519 in PKCS#8. The error says what is
    /// wrong with the file, for a message that names it.
    pub(super) fn read_pem(path: &Path) -> Result<PrivateKey, String> {
        let pem = std::fs::read(path).map_err(|e| format!("cannot be read: {e}"))?;
        let der = PrivateKeyDer::from_pem_slice(&pem)
            .map_err(|e| format!("holds no PEM private key ({e})"))?;
        match &der {
            PrivateKeyDer::Pkcs1(pkcs1) => RsaKeyPair::from_der(pkcs1.secret_pkcs1_der())
                .map(PrivateKey::Rsa)
                .map_err(rsa_problem),
            PrivateKeyDer::Pkcs8(pkcs8) => {
                let bytes = pkcs8.secret_pkcs8_der();
                match Ed25519KeyPair::from_pkcs8_maybe_unchecked(bytes) {
                    Ok(pair) => Ok(PrivateKey::Ed25519(pair)),
                    // Not Ed25519: RSA in PKCS#8, or another kind of key.
                    Err(e) if e.to_string() == "WrongAlgorithm" => RsaKeyPair::from_pkcs8(bytes)
                        .map(PrivateKey::Rsa)
                        .map_err(rsa_problem),
                    Err(e) => Err(format!("not a usable Ed25519 key ({e})")),
                }
            }
            _ => Err(format!(
                "not an RSA or Ed25519 private key; DKIM signs with RSA of {MIN_RSA_BITS} bits or more, or Ed25519"
            )),
        }
    }

    /// The record's `k=`.
    pub(super) fn algorithm(&self) -> &'static str {
        match self {
            PrivateKey::Rsa(_) => "rsa",
            PrivateKey::Ed25519(_) => "ed25519",
        }
    }

    /// For logs: `rsa 2048 bits`, `ed25519`.
    pub(super) fn describe(&self) -> String {
        match self {
            PrivateKey::Rsa(pair) => format!("rsa {} bits", pair.public().modulus_len() * 8),
            PrivateKey::Ed25519(_) => "ed25519".to_string(),
        }
    }

    /// The record's `p=`: for RSA the SubjectPublicKeyInfo DER (what `openssl pkey -pubout`
    /// writes, and what verifiers such as OpenDKIM and dkimpy parse), for Ed25519 the 32 raw
    /// bytes (RFC 8463).
    pub(super) fn public_key(&self) -> Vec<u8> {
        match self {
            PrivateKey::Rsa(pair) => rsa_subject_public_key_info(pair.public().as_ref()),
            PrivateKey::Ed25519(pair) => pair.public_key().as_ref().to_vec(),
        }
    }
}

fn rsa_problem(rejected: ring::error::KeyRejected) -> String {
    match rejected.to_string().as_str() {
        "TooSmall" => format!(
            "the RSA key is smaller than {MIN_RSA_BITS} bits; DKIM keys need at least {MIN_RSA_BITS} (generate one with `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048`)"
        ),
        "TooLarge" => "RSA keys over 4096 bits are not supported".to_string(),
        other => format!("not a usable RSA key ({other})"),
    }
}

/// mail-auth's signer for one domain: relaxed/relaxed over [`SIGNED_HEADERS`].
pub(super) enum KeySigner {
    Rsa(DkimSigner<RsaKey, Done>),
    Ed25519(DkimSigner<Ed25519Key, Done>),
}

impl KeySigner {
    pub(super) fn new(key: PrivateKey, domain: &str, selector: &str) -> KeySigner {
        match key {
            PrivateKey::Rsa(pair) => KeySigner::Rsa(configure(
                RsaKey {
                    pair,
                    rng: SystemRandom::new(),
                },
                domain,
                selector,
            )),
            PrivateKey::Ed25519(pair) => {
                KeySigner::Ed25519(configure(Ed25519Key { pair }, domain, selector))
            }
        }
    }

    pub(super) fn sign(&self, message: &[u8]) -> mail_auth::Result<Signature> {
        match self {
            KeySigner::Rsa(s) => s.sign(message),
            KeySigner::Ed25519(s) => s.sign(message),
        }
    }
}

fn configure<T: SigningKey>(key: T, domain: &str, selector: &str) -> DkimSigner<T, Done> {
    DkimSigner::from_key(key)
        .domain(domain)
        .selector(selector)
        .headers(SIGNED_HEADERS)
        .header_canonicalization(Canonicalization::Relaxed)
        .body_canonicalization(Canonicalization::Relaxed)
}

/// rsa-sha256: PKCS#1 v1.5 over SHA-256 of the canonical headers (ring blinds the private-key
/// operation with `rng`).
pub(super) struct RsaKey {
    pair: RsaKeyPair,
    rng: SystemRandom,
}

impl SigningKey for RsaKey {
    type Hasher = Sha256;

    fn sign(&self, input: impl Writable) -> mail_auth::Result<Vec<u8>> {
        let mut headers = Vec::with_capacity(2048);
        input.write(&mut headers);
        let mut signature = vec![0; self.pair.public().modulus_len()];
        self.pair
            .sign(&RSA_PKCS1_SHA256, &self.rng, &headers, &mut signature)
            .map_err(|e| mail_auth::Error::CryptoError(e.to_string()))?;
        Ok(signature)
    }

    fn hash(&self, data: impl Writable) -> HashOutput {
        sha256(data)
    }

    fn algorithm(&self) -> Algorithm {
        Algorithm::RsaSha256
    }
}

/// ed25519-sha256 (RFC 8463): Ed25519 over the SHA-256 of the canonical headers.
pub(super) struct Ed25519Key {
    pair: Ed25519KeyPair,
}

impl SigningKey for Ed25519Key {
    type Hasher = Sha256;

    fn sign(&self, input: impl Writable) -> mail_auth::Result<Vec<u8>> {
        let HashOutput::Ring(digest) = sha256(input) else {
            return Err(mail_auth::Error::CryptoError("no ring digest".into()));
        };
        Ok(self.pair.sign(digest.as_ref()).as_ref().to_vec())
    }

    fn hash(&self, data: impl Writable) -> HashOutput {
        sha256(data)
    }

    fn algorithm(&self) -> Algorithm {
        Algorithm::Ed25519Sha256
    }
}

fn sha256(data: impl Writable) -> HashOutput {
    let mut hasher = BlockHasher {
        context: Context::new(&SHA256),
        block: Vec::with_capacity(BLOCK),
    };
    data.write(&mut hasher);
    if !hasher.block.is_empty() {
        hasher.context.update(&hasher.block);
    }
    HashOutput::Ring(hasher.context.finish())
}

const BLOCK: usize = 8192;

/// SHA-256 fed in blocks: mail-auth writes the canonical body a byte or a few at a time.
struct BlockHasher {
    context: Context,
    block: Vec<u8>,
}

impl Writer for BlockHasher {
    fn write(&mut self, buf: &[u8]) {
        if self.block.len() + buf.len() > BLOCK {
            self.context.update(&self.block);
            self.block.clear();
        }
        if buf.len() >= BLOCK {
            self.context.update(buf);
        } else {
            self.block.extend_from_slice(buf);
        }
    }
}

/// An RSAPublicKey (PKCS#1 DER, as ring gives it) wrapped in a SubjectPublicKeyInfo.
fn rsa_subject_public_key_info(rsa_public_key: &[u8]) -> Vec<u8> {
    // SEQUENCE { OID 1.2.840.113549.1.1.1 (rsaEncryption), NULL }
    const ALGORITHM: [u8; 15] = [
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    let mut bit_string = Vec::with_capacity(rsa_public_key.len() + 1);
    bit_string.push(0); // no unused bits
    bit_string.extend_from_slice(rsa_public_key);
    let mut body = ALGORITHM.to_vec();
    body.extend(der(0x03, &bit_string));
    der(0x30, &body)
}

/// One DER tag-length-value.
fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_lengths_take_the_short_and_long_forms() {
        assert_eq!(der(0x04, &[1, 2]), [0x04, 2, 1, 2]);
        let long = der(0x04, &[0; 300]);
        assert_eq!(&long[..4], [0x04, 0x82, 0x01, 0x2c]);
        assert_eq!(long.len(), 304);
    }

    #[test]
    fn the_block_hasher_hashes_what_one_update_would() {
        struct Pieces<'a>(&'a [&'a [u8]]);
        impl Writable for Pieces<'_> {
            fn write(self, writer: &mut impl Writer) {
                for piece in self.0 {
                    writer.write(piece);
                }
            }
        }
        let big = vec![b'x'; BLOCK + 10];
        let small: Vec<u8> = (0..=255).collect();
        let pieces: [&[u8]; 5] = [b"a", &small, &big, b"\r\n", &small[..3]];
        let whole = pieces.concat();
        let HashOutput::Ring(ours) = sha256(Pieces(&pieces)) else {
            panic!("a ring digest")
        };
        assert_eq!(
            ours.as_ref(),
            ring::digest::digest(&SHA256, &whole).as_ref()
        );
    }
}
