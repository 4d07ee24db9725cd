//! Amazon SNS message signatures, as SNS documents them ("Verifying the signatures of Amazon
//! SNS messages"): the canonical string of the message's fields, signed with SHA1withRSA
//! (`SignatureVersion` 1) or SHA256withRSA (2) by the certificate at `SigningCertURL`.
//!
//! That URL must be `https://sns.<region>.amazonaws.com[.cn]/SimpleNotificationService-<id>.pem`,
//! checked before anything is fetched, so a forged message cannot make us fetch from elsewhere
//! (or trust a key from elsewhere). Certificates are fetched through [`SnsHttp`] (HTTPS in production; tests
//! serve their own certificate through the same trait, the host check unchanged) and their
//! keys cached by URL until the certificate expires.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use chrono::Utc;
use futures::future::BoxFuture;
use ring::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use serde::Deserialize;
use url::Url;

/// Largest certificate or confirmation answer read.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Certificates kept at most (SNS uses one per region at a time; a full cache is emptied).
const MAX_CACHED: usize = 32;
/// rsaEncryption (RFC 8017).
const RSA_ENCRYPTION: &str = "1.2.840.113549.1.1.1";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SnsError {
    /// A URL in the message is not an SNS host over HTTPS: nothing was fetched.
    #[error("{0}")]
    NotSns(String),
    /// The message does not verify (wrong signature, unknown version or type, bad fields).
    #[error("{0}")]
    Signature(String),
    /// The certificate or the confirmation could not be fetched or read.
    #[error("{0}")]
    Unavailable(String),
}

/// An SNS HTTP(S) message: a notification or a (un)subscription confirmation.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SnsMessage {
    #[serde(rename = "Type")]
    pub kind: String,
    pub message_id: String,
    pub topic_arn: String,
    pub subject: Option<String>,
    pub message: String,
    pub timestamp: String,
    pub signature_version: String,
    pub signature: String,
    #[serde(rename = "SigningCertURL")]
    pub signing_cert_url: String,
    #[serde(rename = "SubscribeURL")]
    pub subscribe_url: Option<String>,
    pub token: Option<String>,
}

impl SnsMessage {
    /// The string SNS signs: each field's name and value on their own lines, in this order,
    /// `Subject` only when the notification has one.
    pub fn canonical(&self) -> Result<String, SnsError> {
        let mut out = String::new();
        let mut field = |name: &str, value: &str| {
            out.push_str(name);
            out.push('\n');
            out.push_str(value);
            out.push('\n');
        };
        let missing = |name: &str| SnsError::Signature(format!("{} without {name}", self.kind));
        match self.kind.as_str() {
            "Notification" => {
                field("Message", &self.message);
                field("MessageId", &self.message_id);
                if let Some(subject) = &self.subject {
                    field("Subject", subject);
                }
                field("Timestamp", &self.timestamp);
                field("TopicArn", &self.topic_arn);
                field("Type", &self.kind);
            }
            "SubscriptionConfirmation" | "UnsubscribeConfirmation" => {
                let url = self
                    .subscribe_url
                    .as_deref()
                    .ok_or_else(|| missing("SubscribeURL"))?;
                let token = self.token.as_deref().ok_or_else(|| missing("Token"))?;
                field("Message", &self.message);
                field("MessageId", &self.message_id);
                field("SubscribeURL", url);
                field("Timestamp", &self.timestamp);
                field("Token", token);
                field("TopicArn", &self.topic_arn);
                field("Type", &self.kind);
            }
            other => {
                return Err(SnsError::Signature(format!(
                    "unknown SNS message type {other:?}"
                )));
            }
        }
        Ok(out)
    }
}

/// `raw` as a URL of SNS itself: `https`, host `sns.<region>.amazonaws.com` or
/// `sns.<region>.amazonaws.com.cn`, no credentials, the default port.
pub fn sns_url(raw: &str) -> Result<Url, SnsError> {
    let refuse = |why: &str| SnsError::NotSns(format!("{why}: {raw:?} is not an SNS URL"));
    let url = Url::parse(raw.trim()).map_err(|_| refuse("not a URL"))?;
    if url.scheme() != "https" {
        return Err(refuse("not https"));
    }
    if !url.username().is_empty() || url.password().is_some() || url.port().is_some() {
        return Err(refuse("credentials or a port"));
    }
    let host = match url.host() {
        Some(url::Host::Domain(d)) => d.to_ascii_lowercase(),
        _ => return Err(refuse("no host name")),
    };
    let labels: Vec<&str> = host.split('.').collect();
    let region_ok = |r: &str| {
        r.len() <= 32
            && r.starts_with(|c: char| c.is_ascii_lowercase())
            && r.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    let sns = match labels.as_slice() {
        ["sns", region, "amazonaws", "com"] | ["sns", region, "amazonaws", "com", "cn"] => {
            region_ok(region)
        }
        _ => false,
    };
    if !sns {
        return Err(refuse("not sns.<region>.amazonaws.com"));
    }
    Ok(url)
}

/// The HTTP GET that the verifier needs: a signing certificate, a subscription confirmation.
/// Only ever called with a URL [`sns_url`] accepted.
pub trait SnsHttp: Send + Sync {
    fn get<'a>(&'a self, url: &'a Url) -> BoxFuture<'a, Result<Vec<u8>, String>>;
}

/// [`SnsHttp`] over HTTPS (rustls, the Mozilla roots), no redirects, 10 s per request.
pub struct HttpsClient(reqwest::Client);

impl HttpsClient {
    pub fn new() -> Result<HttpsClient, reqwest::Error> {
        reqwest::Client::builder()
            .https_only(true)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .map(HttpsClient)
    }
}

impl SnsHttp for HttpsClient {
    fn get<'a>(&'a self, url: &'a Url) -> BoxFuture<'a, Result<Vec<u8>, String>> {
        Box::pin(async move {
            let mut response = self
                .0
                .get(url.clone())
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if !response.status().is_success() {
                return Err(format!("HTTP {}", response.status()));
            }
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
                if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                    return Err(format!("answer over {MAX_RESPONSE_BYTES} bytes"));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(body)
        })
    }
}

/// [`HttpsClient`] built on first use: most processes never receive an SNS message.
#[derive(Default)]
pub struct LazyHttps(std::sync::OnceLock<Result<HttpsClient, String>>);

impl SnsHttp for LazyHttps {
    fn get<'a>(&'a self, url: &'a Url) -> BoxFuture<'a, Result<Vec<u8>, String>> {
        match self
            .0
            .get_or_init(|| HttpsClient::new().map_err(|e| format!("no HTTPS client: {e}")))
        {
            Ok(client) => client.get(url),
            Err(e) => Box::pin(std::future::ready(Err(e.clone()))),
        }
    }
}

/// An RSA public key from a signing certificate, and when the certificate expires.
struct CachedKey {
    pkcs1: Vec<u8>,
    not_after: i64,
}

/// Verifies SNS messages; caches the signing keys by certificate URL. Shared by every
/// request of a process.
pub struct SnsVerifier {
    http: Arc<dyn SnsHttp>,
    keys: Mutex<HashMap<String, Arc<CachedKey>>>,
}

impl SnsVerifier {
    pub fn new(http: Arc<dyn SnsHttp>) -> SnsVerifier {
        SnsVerifier {
            http,
            keys: Mutex::new(HashMap::new()),
        }
    }

    /// Fetching over HTTPS.
    pub fn https() -> SnsVerifier {
        SnsVerifier::new(Arc::new(LazyHttps::default()))
    }

    /// Checks `message`'s signature with the certificate its `SigningCertURL` names.
    pub async fn verify(&self, message: &SnsMessage) -> Result<(), SnsError> {
        let url = sns_url(&message.signing_cert_url)?;
        // SNS's certificates are `/SimpleNotificationService-<id>.pem`: anything else on an
        // SNS host is no certificate, and is not fetched (nor can it fill the cache).
        let name = url.path().strip_prefix("/SimpleNotificationService-");
        if url.query().is_some()
            || !name.is_some_and(|n| {
                n.strip_suffix(".pem").is_some_and(|id| {
                    !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                })
            })
        {
            return Err(SnsError::NotSns(format!(
                "SigningCertURL {:?} does not name an SNS certificate (/SimpleNotificationService-<id>.pem)",
                message.signing_cert_url
            )));
        }
        let algorithm: &dyn VerificationAlgorithm = match message.signature_version.as_str() {
            "1" => &signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
            "2" => &signature::RSA_PKCS1_2048_8192_SHA256,
            other => {
                return Err(SnsError::Signature(format!(
                    "unknown SignatureVersion {other:?} (1 or 2)"
                )));
            }
        };
        let canonical = message.canonical()?;
        let signature = base64::engine::general_purpose::STANDARD
            .decode(message.signature.trim())
            .map_err(|_| SnsError::Signature("Signature is not base64".into()))?;
        let key = self.key(&url).await?;
        UnparsedPublicKey::new(algorithm, &key.pkcs1)
            .verify(canonical.as_bytes(), &signature)
            .map_err(|_| SnsError::Signature("the signature does not match".into()))
    }

    /// Confirms a subscription: GET its `SubscribeURL`, which must be SNS's.
    pub async fn confirm(&self, subscribe_url: &str) -> Result<(), SnsError> {
        let url = sns_url(subscribe_url)?;
        self.http
            .get(&url)
            .await
            .map(|_| ())
            .map_err(|e| SnsError::Unavailable(format!("confirming the subscription: {e}")))
    }

    async fn key(&self, url: &Url) -> Result<Arc<CachedKey>, SnsError> {
        let now = Utc::now().timestamp();
        if let Ok(keys) = self.keys.lock()
            && let Some(key) = keys.get(url.as_str())
            && key.not_after > now
        {
            return Ok(key.clone());
        }
        let pem = self.http.get(url).await.map_err(|e| {
            SnsError::Unavailable(format!("fetching the signing certificate {url}: {e}"))
        })?;
        let key = Arc::new(rsa_key_of(&pem)?);
        if let Ok(mut keys) = self.keys.lock() {
            if keys.len() >= MAX_CACHED {
                keys.clear();
            }
            keys.insert(url.to_string(), key.clone());
        }
        Ok(key)
    }
}

/// The RSA key of a PEM certificate that is valid now.
fn rsa_key_of(pem: &[u8]) -> Result<CachedKey, SnsError> {
    let bad = |why: String| SnsError::Unavailable(format!("the signing certificate {why}"));
    let (_, pem) =
        x509_parser::pem::parse_x509_pem(pem).map_err(|e| bad(format!("is not PEM: {e}")))?;
    let cert = pem
        .parse_x509()
        .map_err(|e| bad(format!("is not X.509: {e}")))?;
    if !cert.validity().is_valid() {
        return Err(SnsError::Signature(
            "the signing certificate is expired or not yet valid".into(),
        ));
    }
    let spki = cert.public_key();
    if spki.algorithm.algorithm.to_id_string() != RSA_ENCRYPTION {
        return Err(bad("holds no RSA key".into()));
    }
    Ok(CachedKey {
        pkcs1: spki.subject_public_key.data.to_vec(),
        not_after: cert.validity().not_after.timestamp(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sns_hosts_over_https_pass() {
        for ok in [
            "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",
            "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&Token=x",
            "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-abc.pem",
            "https://SNS.us-gov-west-1.AMAZONAWS.com/x.pem",
        ] {
            assert!(sns_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://sns.us-east-1.amazonaws.com/x.pem",
            "https://sns.us-east-1.amazonaws.com.evil.example/x.pem",
            "https://evil.example/sns.us-east-1.amazonaws.com/x.pem",
            "https://sns.us-east-1.amazonaws.com:8443/x.pem",
            "https://user@sns.us-east-1.amazonaws.com/x.pem",
            "https://s3.us-east-1.amazonaws.com/x.pem",
            "https://sns.amazonaws.com/x.pem",
            "https://sns.a.b.amazonaws.com/x.pem",
            "https://sns.us_east.amazonaws.com/x.pem",
            "https://54.239.28.85/x.pem",
            "not a url",
        ] {
            assert!(
                matches!(sns_url(bad), Err(SnsError::NotSns(_))),
                "{bad} passed"
            );
        }
    }

    fn message(kind: &str) -> SnsMessage {
        SnsMessage {
            kind: kind.into(),
            message_id: "id".into(),
            topic_arn: "arn:aws:sns:us-east-1:123456789012:t".into(),
            subject: None,
            message: "m".into(),
            timestamp: "2026-01-01T00:00:00.000Z".into(),
            signature_version: "1".into(),
            signature: String::new(),
            signing_cert_url: String::new(),
            subscribe_url: Some("https://sns.us-east-1.amazonaws.com/?a=b".into()),
            token: Some("tok".into()),
        }
    }

    #[test]
    fn the_canonical_string_follows_the_documented_order() {
        let mut n = message("Notification");
        assert_eq!(
            n.canonical().unwrap(),
            "Message\nm\nMessageId\nid\nTimestamp\n2026-01-01T00:00:00.000Z\nTopicArn\narn:aws:sns:us-east-1:123456789012:t\nType\nNotification\n"
        );
        n.subject = Some("s".into());
        assert!(
            n.canonical()
                .unwrap()
                .contains("MessageId\nid\nSubject\ns\nTimestamp\n")
        );
        let c = message("SubscriptionConfirmation");
        assert_eq!(
            c.canonical().unwrap(),
            "Message\nm\nMessageId\nid\nSubscribeURL\nhttps://sns.us-east-1.amazonaws.com/?a=b\nTimestamp\n2026-01-01T00:00:00.000Z\nToken\ntok\nTopicArn\narn:aws:sns:us-east-1:123456789012:t\nType\nSubscriptionConfirmation\n"
        );
        let mut u = message("UnsubscribeConfirmation");
        u.token = None;
        assert!(u.canonical().is_err());
        assert!(message("Other").canonical().is_err());
    }
}
