//! Open and click tracking: the signed token format shared with the HTTP API (which serves
//! `/t/o/{token}` and `/t/c/{token}`), and [`Tracker`], which rewrites an email's links and
//! adds the open pixel.
//!
//! A token is the URL-safe base64 (no padding) of
//! `version (1 byte) | kind (1 byte: 'c' click, 'o' open) | email_id (16 bytes) | url (click only, UTF-8)`
//! followed by the first 16 bytes of `HMAC-SHA256(key, CONTEXT | payload)`. The payload is
//! readable (it is not encrypted); the MAC makes it unforgeable, so the click redirect can never
//! be turned into an open redirect. Verification checks the MAC in constant time before
//! looking at anything else.

mod links;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tracing::warn;
use uuid::Uuid;

use crate::config::TrackingSettings;
use crate::queue::EmailType;

pub use links::{
    HrefSlot, RedirectHosts, decode_attr, escape_attr, href_slots, href_url, is_safe_href,
    neutralize_unsafe_hrefs, rewrite_links, tracked_target, valid_host_entry,
};

type HmacSha256 = Hmac<Sha256>;

/// Format version, first byte of every payload.
const VERSION: u8 = 1;
const KIND_CLICK: u8 = b'c';
const KIND_OPEN: u8 = b'o';
/// Bytes of the truncated HMAC-SHA256 tag (128 bits).
const MAC_LEN: usize = 16;
/// Bytes before the URL: version, kind, email id.
const HEADER_LEN: usize = 2 + 16;
/// Mixed into every MAC so these tokens can never be confused with another use of the key.
const CONTEXT: &[u8] = b"adopt-worker/tracking\0";
/// Links longer than this are left untracked (the token would make the URL unwieldy).
pub const MAX_TRACKED_URL_BYTES: usize = 2048;

/// Why a token was refused. The HTTP API answers every one of them the same way (404), so
/// the variants are for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is empty")]
    Empty,
    #[error("token is not valid base64url or is too short")]
    Malformed,
    #[error("token signature does not match")]
    BadSignature,
    #[error("token has an unknown format version")]
    UnknownVersion,
    #[error("token is of the wrong kind (open vs click)")]
    WrongKind,
    #[error("token's URL is not an http(s) URL")]
    BadUrl,
}

/// A signed click URL token for `url` in email `email_id`.
pub fn sign_click(email_id: Uuid, url: &str, key: &[u8]) -> String {
    sign(KIND_CLICK, email_id, url.as_bytes(), key)
}

/// Checks a click token; returns the email and the original URL.
pub fn verify_click(token: &str, key: &[u8]) -> Result<(Uuid, String), TokenError> {
    let (email_id, rest) = verify(token, KIND_CLICK, key)?;
    let url = String::from_utf8(rest).map_err(|_| TokenError::Malformed)?;
    if !is_http_url(&url) {
        return Err(TokenError::BadUrl);
    }
    Ok((email_id, url))
}

/// A signed open-pixel token for email `email_id`.
pub fn sign_open(email_id: Uuid, key: &[u8]) -> String {
    sign(KIND_OPEN, email_id, &[], key)
}

/// Checks an open token; returns the email.
pub fn verify_open(token: &str, key: &[u8]) -> Result<Uuid, TokenError> {
    let (email_id, rest) = verify(token, KIND_OPEN, key)?;
    if !rest.is_empty() {
        return Err(TokenError::Malformed);
    }
    Ok(email_id)
}

fn mac(key: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length; `new_from_slice` only fails for fixed-size MACs.
    let mut mac = match HmacSha256::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC-SHA256 accepts keys of any length"),
    };
    mac.update(CONTEXT);
    mac
}

fn sign(kind: u8, email_id: Uuid, rest: &[u8], key: &[u8]) -> String {
    let mut buf = Vec::with_capacity(HEADER_LEN + rest.len() + MAC_LEN);
    buf.push(VERSION);
    buf.push(kind);
    buf.extend_from_slice(email_id.as_bytes());
    buf.extend_from_slice(rest);
    let mut m = mac(key);
    m.update(&buf);
    let tag = m.finalize().into_bytes();
    buf.extend_from_slice(&tag[..MAC_LEN]);
    URL_SAFE_NO_PAD.encode(buf)
}

fn verify(token: &str, kind: u8, key: &[u8]) -> Result<(Uuid, Vec<u8>), TokenError> {
    if token.is_empty() {
        return Err(TokenError::Empty);
    }
    let raw = URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| TokenError::Malformed)?;
    if raw.len() < HEADER_LEN + MAC_LEN {
        return Err(TokenError::Malformed);
    }
    let (payload, tag) = raw.split_at(raw.len() - MAC_LEN);
    let mut m = mac(key);
    m.update(payload);
    m.verify_truncated_left(tag)
        .map_err(|_| TokenError::BadSignature)?;
    if payload[0] != VERSION {
        return Err(TokenError::UnknownVersion);
    }
    if payload[1] != kind {
        return Err(TokenError::WrongKind);
    }
    let id = Uuid::from_slice(&payload[2..HEADER_LEN]).map_err(|_| TokenError::Malformed)?;
    Ok((id, payload[HEADER_LEN..].to_vec()))
}

/// `http://` or `https://` (any case), the only links that are tracked or redirected to.
pub fn is_http_url(url: &str) -> bool {
    let lower = |n: usize| url.get(..n).map(str::to_ascii_lowercase);
    lower(7).as_deref() == Some("http://") || lower(8).as_deref() == Some("https://")
}

/// Tracking as configured: the key, where the tracking endpoints live and which email types
/// are tracked. Built only when tracking is on and a secret is set.
#[derive(Clone)]
pub struct Tracker {
    key: std::sync::Arc<[u8]>,
    /// `{http.public_url}/t/`, without a doubled slash.
    prefix: String,
    types: Vec<EmailType>,
    /// Hosts whose links are rewritten: a click URL is a 302 on our domain, so only to ours.
    redirect_hosts: std::sync::Arc<RedirectHosts>,
}

impl std::fmt::Debug for Tracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracker")
            .field("prefix", &self.prefix)
            .field("types", &self.types)
            .field("redirect_hosts", &self.redirect_hosts)
            .finish_non_exhaustive()
    }
}

impl Tracker {
    /// `None` when tracking is off, or on without a secret (then with a warning: links that
    /// cannot be signed are not rewritten at all).
    pub fn from_settings(settings: &TrackingSettings, public_url: &str) -> Option<Tracker> {
        if !settings.enabled {
            return None;
        }
        if settings.secret.is_empty() {
            warn!(
                "tracking.enabled is true but tracking.secret is empty: links cannot be signed, so open/click tracking is off (set ADOPT__TRACKING__SECRET)"
            );
            return None;
        }
        Some(
            Tracker::new(
                settings.secret.as_bytes(),
                public_url,
                settings.types.clone(),
            )
            .with_redirect_hosts(RedirectHosts::new(&settings.redirect_hosts)),
        )
    }

    /// A tracker that rewrites links to the host of `public_url` only; see
    /// [`Tracker::with_redirect_hosts`].
    pub fn new(key: &[u8], public_url: &str, types: Vec<EmailType>) -> Tracker {
        let own_host = url::Url::parse(public_url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string));
        Tracker {
            key: key.into(),
            prefix: format!("{}/t/", public_url.trim_end_matches('/')),
            types,
            redirect_hosts: std::sync::Arc::new(RedirectHosts::new(&Vec::from_iter(own_host))),
        }
    }

    /// Rewrites links to these hosts (and only these).
    pub fn with_redirect_hosts(mut self, hosts: RedirectHosts) -> Tracker {
        self.redirect_hosts = std::sync::Arc::new(hosts);
        self
    }

    /// Whether emails of this type are tracked.
    pub fn tracks(&self, email_type: EmailType) -> bool {
        self.types.contains(&email_type)
    }

    pub fn click_url(&self, email_id: Uuid, url: &str) -> String {
        format!("{}c/{}", self.prefix, sign_click(email_id, url, &self.key))
    }

    pub fn open_url(&self, email_id: Uuid) -> String {
        format!("{}o/{}", self.prefix, sign_open(email_id, &self.key))
    }

    /// The HTML with every `http(s)` link to a host on the redirect list rewritten to a
    /// signed click URL (signed for the URL as the browser would follow it: character
    /// references decoded, see [`tracked_target`]) and the open pixel added before
    /// `</body>`. Left alone: links to other hosts (still counted by the pixel), `mailto:`
    /// and other schemes, the unsubscribe link (`unsubscribe_url`, and any URL containing
    /// "unsubscribe" in pre-rendered mail), links marked `data-notrack`, links already
    /// pointing at the tracking endpoints (so tracking a second time, e.g. on a retry,
    /// changes nothing) and very long URLs.
    pub fn inject(&self, email_id: Uuid, html: &str, unsubscribe_url: Option<&str>) -> String {
        let mut out = rewrite_links(html, |url| {
            self.tracked_link(email_id, url, unsubscribe_url)
        });
        self.add_pixel(email_id, &mut out);
        out
    }

    /// The signed click URL that replaces the (decoded) link `url` in this email, or `None`
    /// to leave it: see [`Tracker::inject`]. Links marked `data-notrack` are the caller's.
    pub fn tracked_link(
        &self,
        email_id: Uuid,
        url: &str,
        unsubscribe_url: Option<&str>,
    ) -> Option<String> {
        let skip = !is_http_url(url)
            || url.starts_with(&self.prefix)
            || unsubscribe_url.is_some_and(|u| !u.is_empty() && u == url)
            || url.to_ascii_lowercase().contains("unsubscribe")
            || url.len() > MAX_TRACKED_URL_BYTES;
        if skip {
            return None;
        }
        let target = tracked_target(url, &self.redirect_hosts)?;
        Some(self.click_url(email_id, &target))
    }

    /// The open pixel before `</body>`, unless the HTML already has one: see
    /// [`Tracker::inject`].
    pub fn add_pixel(&self, email_id: Uuid, html: &mut String) {
        let open_prefix = format!("{}o/", self.prefix);
        if !html.contains(&open_prefix) {
            let pixel = format!(
                r#"<img src="{}" width="1" height="1" alt="" style="display:none">"#,
                links::escape_attr(&self.open_url(email_id))
            );
            links::insert_before_body_end(html, &pixel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef-test-key";

    fn id() -> Uuid {
        Uuid::parse_str("6f1c2a3b-4d5e-4f60-8a71-92b3c4d5e6f7").unwrap()
    }

    #[test]
    fn click_token_roundtrips() {
        let url = "https://adoptdontshop.com/pets/7?ref=mail&x=é";
        let t = sign_click(id(), url, KEY);
        assert!(
            t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{t}"
        );
        assert_eq!(verify_click(&t, KEY), Ok((id(), url.to_string())));
    }

    #[test]
    fn open_token_roundtrips() {
        let t = sign_open(id(), KEY);
        assert_eq!(verify_open(&t, KEY), Ok(id()));
    }

    #[test]
    fn altered_payload_is_refused() {
        let t = sign_click(id(), "https://adoptdontshop.com/a", KEY);
        let mut raw = URL_SAFE_NO_PAD.decode(&t).unwrap();
        let last_url_byte = raw.len() - MAC_LEN - 1;
        raw[last_url_byte] = b'b';
        let forged = URL_SAFE_NO_PAD.encode(&raw);
        assert_eq!(verify_click(&forged, KEY), Err(TokenError::BadSignature));
        // Another email id with the same MAC.
        let mut raw = URL_SAFE_NO_PAD.decode(&t).unwrap();
        raw[5] ^= 1;
        assert_eq!(
            verify_click(&URL_SAFE_NO_PAD.encode(&raw), KEY),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn altered_mac_is_refused() {
        let t = sign_open(id(), KEY);
        let mut raw = URL_SAFE_NO_PAD.decode(&t).unwrap();
        let n = raw.len();
        raw[n - 1] ^= 0x80;
        assert_eq!(
            verify_open(&URL_SAFE_NO_PAD.encode(&raw), KEY),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn wrong_key_is_refused() {
        let t = sign_open(id(), KEY);
        assert_eq!(
            verify_open(&t, b"another-key-of-some-length"),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn truncated_token_is_refused() {
        let t = sign_click(id(), "https://adoptdontshop.com/a", KEY);
        for cut in [1, 4, 10, t.len() / 2, t.len() - 2] {
            let short = &t[..t.len() - cut];
            assert!(verify_click(short, KEY).is_err(), "cut {cut}");
        }
        let o = sign_open(id(), KEY);
        assert_eq!(verify_open(&o[..20], KEY), Err(TokenError::Malformed));
    }

    #[test]
    fn wrong_kind_is_refused() {
        let open = sign_open(id(), KEY);
        assert_eq!(verify_click(&open, KEY), Err(TokenError::WrongKind));
        let click = sign_click(id(), "https://adoptdontshop.com/", KEY);
        assert_eq!(verify_open(&click, KEY), Err(TokenError::WrongKind));
    }

    #[test]
    fn garbage_and_empty_are_refused() {
        assert_eq!(verify_click("", KEY), Err(TokenError::Empty));
        assert_eq!(verify_open("", KEY), Err(TokenError::Empty));
        for g in [
            "not a token",
            "%%%%",
            "AAAA",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "../../etc/passwd",
        ] {
            assert!(verify_click(g, KEY).is_err(), "{g}");
            assert!(verify_open(g, KEY).is_err(), "{g}");
        }
        // Standard base64 with padding is not the format.
        let t = sign_open(id(), KEY);
        assert!(verify_open(&format!("{t}="), KEY).is_err());
    }

    #[test]
    fn signed_non_http_url_is_refused_at_verification() {
        let t = sign_click(id(), "javascript:alert(1)", KEY);
        assert_eq!(verify_click(&t, KEY), Err(TokenError::BadUrl));
    }

    #[test]
    fn tracking_needs_to_be_enabled_and_have_a_secret() {
        let mut settings = TrackingSettings {
            enabled: true,
            types: vec![EmailType::Marketing],
            secret: String::new(),
            redirect_hosts: vec!["adoptdontshop.com".into()],
        };
        assert!(Tracker::from_settings(&settings, "https://api.example").is_none());
        settings.secret = "0123456789abcdef".into();
        let t = Tracker::from_settings(&settings, "https://api.example").unwrap();
        assert!(t.tracks(EmailType::Marketing) && !t.tracks(EmailType::Transactional));
        assert!(!format!("{t:?}").contains("0123456789abcdef"));
        settings.enabled = false;
        assert!(Tracker::from_settings(&settings, "https://api.example").is_none());
    }

    #[test]
    fn inject_rewrites_links_and_adds_one_pixel() {
        let tr = Tracker::new(KEY, "https://api.example/", vec![EmailType::Marketing])
            .with_redirect_hosts(RedirectHosts::new(&["adoptdontshop.com"]));
        let html = r#"<html><body><a href="https://adoptdontshop.com/pets?a=1&amp;b=2">Pets</a>
<a href="mailto:help@adoptdontshop.com">Mail</a>
<a href="https://adoptdontshop.com/u/123">Unsubscribe</a>
<a data-notrack href="https://adoptdontshop.com/reset?token=x">Reset</a>
</body></html>"#;
        let out = tr.inject(id(), html, Some("https://adoptdontshop.com/u/123"));
        assert!(out.contains("mailto:help@adoptdontshop.com"));
        assert!(out.contains(r#"href="https://adoptdontshop.com/u/123""#));
        assert!(out.contains(r#"href="https://adoptdontshop.com/reset?token=x""#));
        let start =
            out.find("https://api.example/t/c/").unwrap() + "https://api.example/t/c/".len();
        let end = start + out[start..].find('"').unwrap();
        assert_eq!(
            verify_click(&out[start..end], KEY).unwrap(),
            (id(), "https://adoptdontshop.com/pets?a=1&b=2".to_string())
        );
        assert_eq!(out.matches("/t/o/").count(), 1);
        assert!(out.contains(r#"width="1" height="1" alt="" style="display:none"></body>"#));
        // Idempotent: a second pass changes nothing.
        assert_eq!(
            tr.inject(id(), &out, Some("https://adoptdontshop.com/u/123")),
            out
        );
    }

    #[test]
    fn inject_rewrites_only_links_to_allowed_hosts() {
        let tr = Tracker::new(KEY, "https://api.example/", vec![EmailType::Marketing])
            .with_redirect_hosts(RedirectHosts::new(&[
                "adoptdontshop.com",
                "*.adoptdontshop.com",
            ]));
        let html = r#"<a href="https://evil.example/phish">a</a><a href="https://www.adoptdontshop.com/caf&eacute;">b</a><a href="https://adoptdontshop.com.evil.example/">c</a>"#;
        let out = tr.inject(id(), html, None);
        assert!(
            out.contains(r#"href="https://evil.example/phish""#),
            "{out}"
        );
        assert!(
            out.contains(r#"href="https://adoptdontshop.com.evil.example/""#),
            "{out}"
        );
        assert_eq!(out.matches("/t/c/").count(), 1, "{out}");
        let start = out.find("/t/c/").unwrap() + 5;
        let end = start + out[start..].find('"').unwrap();
        assert_eq!(
            verify_click(&out[start..end], KEY).unwrap().1,
            "https://www.adoptdontshop.com/caf%C3%A9",
            "signed for where the browser goes"
        );
        // Without a list, only the API's own host.
        let own = Tracker::new(KEY, "https://api.example/", vec![]);
        let out = own.inject(id(), r#"<a href="https://adoptdontshop.com/">x</a>"#, None);
        assert!(!out.contains("/t/c/"), "{out}");
    }
}
