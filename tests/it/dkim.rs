//! DKIM signing (docs/delivery.md "DKIM signing"). Every signature is checked by an independent
//! verifier, dkimpy (`scripts/dkim-verify`), against the TXT record built by the function
//! `adopt-worker dkim record` prints; the keys are made now with openssl, as operators do.

use std::path::{Path, PathBuf};
use std::process::{Command as Process, Stdio};
use std::time::{Duration, Instant};

use adopt_worker::delivery::dkim::Signer;
use base64::Engine;

use crate::helpers::*;

/// The From domain of [`NewEmail`] rows (`rescues@adoptdontshop.com`).
const DOMAIN: &str = "adoptdontshop.com";
/// A subdomain with a key of its own: a key covers its exact domain only.
const NEWS: &str = "news.adoptdontshop.com";

/// Keys and a configuration file in a temporary directory.
struct Keys {
    dir: tempfile::TempDir,
}

impl Keys {
    fn new() -> Keys {
        Keys {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `openssl genpkey` with `args`, into `name`.
    fn generate(&self, name: &str, args: &[&str]) -> PathBuf {
        let path = self.path(name);
        let mut all = vec!["genpkey"];
        all.extend_from_slice(args);
        all.extend(["-out", path.to_str().unwrap()]);
        openssl(&all);
        path
    }

    fn rsa(&self, name: &str, bits: u32) -> PathBuf {
        let bits = format!("rsa_keygen_bits:{bits}");
        self.generate(name, &["-algorithm", "RSA", "-pkeyopt", &bits])
    }

    fn ed25519(&self, name: &str) -> PathBuf {
        self.generate(name, &["-algorithm", "ed25519"])
    }

    /// A configuration file with one `[[dkim.keys]]` per `(domain, selector, key_file)`.
    fn config(&self, keys: &[(&str, &str, &Path)]) -> PathBuf {
        let mut text = String::new();
        for (domain, selector, file) in keys {
            text.push_str(&format!(
                "[[dkim.keys]]\ndomain = {domain:?}\nselector = {selector:?}\nkey_file = {:?}\n",
                file.display().to_string()
            ));
        }
        let path = self.path("adopt-worker.toml");
        std::fs::write(&path, text).unwrap();
        path
    }
}

fn openssl(args: &[&str]) -> Vec<u8> {
    let out = Process::new("openssl")
        .args(args)
        .output()
        .expect("openssl runs (scripts/install-deps --dkim)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The record `adopt-worker dkim record --domain <domain>` prints for these settings.
fn record(settings: &adopt_worker::config::Settings, domain: &str) -> String {
    Signer::from_settings(&settings.dkim)
        .unwrap()
        .dns_record(domain)
        .unwrap()
        .to_string()
}

/// dkimpy's verdict on `message` with `record` as the only DNS answer: its `pass ...` line,
/// or its `FAIL ...` line.
fn verify(record: &str, message: &[u8]) -> Result<String, String> {
    use std::io::Write;
    let mut child = Process::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/dkim-verify"))
        .arg(record)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("scripts/dkim-verify runs");
    child.stdin.take().unwrap().write_all(message).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(text)
    }
}

/// The `h=` tag of the message's signature, lowercased, as a list.
fn signed_headers(msg: &ReceivedMessage) -> Vec<String> {
    let signature = msg.header("DKIM-Signature").expect("a DKIM-Signature");
    let tag = signature
        .split(';')
        .map(|t| t.split_whitespace().collect::<String>())
        .find_map(|t| t.strip_prefix("h=").map(str::to_string))
        .expect("an h= tag");
    tag.split(':').map(|h| h.to_ascii_lowercase()).collect()
}

fn replace_once(bytes: &[u8], from: &str, to: &str) -> Vec<u8> {
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    assert!(text.contains(from), "{from:?} in the message");
    text.replacen(from, to, 1).into_bytes()
}

#[tokio::test]
async fn rsa_and_ed25519_signatures_verify_against_the_published_records() {
    let db = TestDb::new().await;
    let smtp = TestSmtp::start().await;
    let keys = Keys::new();
    let rsa = keys.rsa("rsa.pem", 2048);
    let ed = keys.ed25519("ed25519.pem");
    let config = keys.config(&[(DOMAIN, "s2026", &rsa), (NEWS, "ed1", &ed)]);
    let settings = settings_with_file(&db, Some(&smtp.url()), None, Some(&config), &[]);

    // Marketing to a platform user: List-Unsubscribe; a Cc, a Reply-To, 8bit text.
    insert_user(&db.pool, "maya@example.com").await;
    let mut m = NewEmail::to("maya@example.com");
    m.email_type = "marketing";
    m.subject = "Grüße from the shelter · new arrivals".into();
    m.html = "<p>Biscuit — 3 years old, loves walks.</p>\n<p>Ünd more   spaces  </p>".into();
    m.text = None;
    m.cc = Some(vec!["foster@example.com".into()]);
    m.reply_to = Some("team@adoptdontshop.com".into());
    let marketing = m.insert(&db.pool).await;
    let news = NewEmail::to("bob@example.com").insert(&db.pool).await;
    sqlx::query("UPDATE email_queue SET from_email = $1 WHERE email_id = $2")
        .bind(format!("digest@{NEWS}"))
        .bind(news)
        .execute(&db.pool)
        .await
        .unwrap();

    app(settings.clone()).drain().await.unwrap();
    assert_eq!(row(&db.pool, marketing).await.status, "sent");
    assert_eq!(row(&db.pool, news).await.status, "sent");
    let messages = smtp.messages();
    let by_rcpt = |to: &str| {
        messages
            .iter()
            .find(|m| m.rcpt_to.contains(&to.to_string()))
            .unwrap_or_else(|| panic!("a message to {to}"))
            .clone()
    };

    let rsa_msg = by_rcpt("maya@example.com");
    let rsa_record = record(&settings, DOMAIN);
    assert!(
        rsa_record.starts_with("s2026._domainkey.adoptdontshop.com. IN TXT \"v=DKIM1; k=rsa; p=")
    );
    let pass = verify(&rsa_record, &rsa_msg.data).unwrap();
    assert!(
        pass.contains("d=adoptdontshop.com s=s2026 a=rsa-sha256 c=relaxed/relaxed"),
        "{pass}"
    );
    let h = signed_headers(&rsa_msg);
    for header in [
        "from",
        "reply-to",
        "to",
        "cc",
        "subject",
        "date",
        "message-id",
        "mime-version",
        "content-type",
        "list-unsubscribe",
        "list-unsubscribe-post",
    ] {
        assert!(h.contains(&header.to_string()), "{header} is signed: {h:?}");
    }
    // The verifier checks what it is given: a changed header or body fails.
    let forged = replace_once(
        &rsa_msg.data,
        "List-Unsubscribe-Post: List-Unsubscribe=One-Click",
        "List-Unsubscribe-Post: List-Unsubscribe=One-Clicks",
    );
    assert!(verify(&rsa_record, &forged).is_err());
    let forged = replace_once(&rsa_msg.data, "loves walks", "loves cats");
    assert!(verify(&rsa_record, &forged).unwrap_err().contains("FAIL"));

    let ed_msg = by_rcpt("bob@example.com");
    let ed_record = record(&settings, NEWS);
    assert!(ed_record.contains("v=DKIM1; k=ed25519; p="), "{ed_record}");
    let pass = verify(&ed_record, &ed_msg.data).unwrap();
    assert!(
        pass.contains(&format!("d={NEWS} s=ed1 a=ed25519-sha256")),
        "{pass}"
    );
    assert!(
        verify(&rsa_record, &ed_msg.data).is_err(),
        "signed with the key of its own From domain"
    );
    let forged = replace_once(
        &ed_msg.data,
        "Subject: Your application",
        "Subject: Your applications",
    );
    assert!(verify(&ed_record, &forged).is_err());
}

#[tokio::test]
async fn the_outbox_gets_the_signed_bytes_too() {
    let db = TestDb::new().await;
    let outbox = tempfile::tempdir().unwrap();
    let keys = Keys::new();
    let ed = keys.ed25519("ed25519.pem");
    let config = keys.config(&[(DOMAIN, "ed1", &ed)]);
    let settings = settings_with_file(&db, None, Some(outbox.path()), Some(&config), &[]);
    let id = NewEmail::to("maya@example.com").insert(&db.pool).await;
    app(settings.clone()).drain().await.unwrap();
    assert_eq!(row(&db.pool, id).await.status, "sent");
    let eml = std::fs::read(outbox.path().join(format!("{id}.eml"))).unwrap();
    assert!(eml.starts_with(b"DKIM-Signature: v=1; a=ed25519-sha256;"));
    verify(&record(&settings, DOMAIN), &eml).unwrap();
}

#[tokio::test]
async fn mail_from_a_domain_without_a_key_goes_unsigned() {
    let db = TestDb::new().await;
    let smtp = TestSmtp::start().await;
    let keys = Keys::new();
    let ed = keys.ed25519("ed25519.pem");
    // A key for the subdomain only: mail from the parent domain is not covered.
    let config = keys.config(&[(NEWS, "ed1", &ed)]);
    let settings = settings_with_file(&db, Some(&smtp.url()), None, Some(&config), &[]);
    let id = NewEmail::to("maya@example.com").insert(&db.pool).await;
    app(settings.clone()).drain().await.unwrap();
    assert_eq!(row(&db.pool, id).await.status, "sent");
    let msg = &smtp.messages()[0];
    assert_eq!(msg.header("DKIM-Signature"), None, "{}", msg.text());
    assert!(
        verify(&record(&settings, NEWS), &msg.data)
            .unwrap_err()
            .contains("no DKIM-Signature")
    );
}

#[tokio::test]
async fn an_unusable_key_stops_start_up_naming_the_file() {
    let db = TestDb::new().await;
    let keys = Keys::new();
    let small = keys.rsa("rsa-1024.pem", 1024);
    let not_pem = keys.path("not-a-key.pem");
    std::fs::write(&not_pem, "not a key\n").unwrap();
    let missing = keys.path("missing.pem");
    for (file, problem) in [
        (&small, "the RSA key is smaller than 2048 bits"),
        (&not_pem, "holds no PEM private key"),
        (&missing, "cannot be read"),
    ] {
        let config = keys.config(&[(DOMAIN, "s1", file)]);
        let settings = settings_with_file(&db, None, None, Some(&config), &[]);
        let e = adopt_worker::startup::App::build(settings)
            .err()
            .unwrap_or_else(|| panic!("{} was accepted", file.display()))
            .to_string();
        assert!(
            e.starts_with(&format!("dkim key_file {}: {problem}", file.display())),
            "{e}"
        );
    }

    // As an operator sees it: `run` exits at once with one line.
    let config = keys.config(&[(DOMAIN, "s1", &small)]);
    let mut child = bin()
        .args(["--config", config.to_str().unwrap(), "run", "--no-api"])
        .env("DATABASE_URL", &db.url)
        .env("ADOPT__HTTP__METRICS_ADDR", "127.0.0.1:0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(30) {
            child.kill().unwrap();
            panic!("adopt-worker run started with a 1024-bit key");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "adopt-worker: dkim key_file {}: the RSA key is smaller than 2048 bits",
            small.display()
        )),
        "{stderr}"
    );
}

#[test]
fn dkim_record_prints_the_txt_record_and_refuses_a_domain_without_a_key() {
    let keys = Keys::new();
    let rsa = keys.rsa("rsa.pem", 2048);
    // PKCS#1 ("BEGIN RSA PRIVATE KEY") as older tools write it.
    let pkcs1 = keys.path("rsa-pkcs1.pem");
    openssl(&[
        "pkey",
        "-in",
        rsa.to_str().unwrap(),
        "-traditional",
        "-out",
        pkcs1.to_str().unwrap(),
    ]);
    let ed = keys.ed25519("ed25519.pem");
    let config = keys.config(&[
        (DOMAIN, "s2026", &rsa),
        (NEWS, "ed1", &ed),
        ("pkcs1.example", "old", &pkcs1),
    ]);
    let run = |domain: &str| {
        bin()
            .args([
                "--config",
                config.to_str().unwrap(),
                "dkim",
                "record",
                "--domain",
                domain,
            ])
            .output()
            .unwrap()
    };
    // The public key as openssl derives it: SubjectPublicKeyInfo for RSA, the raw 32 bytes
    // (the end of it) for Ed25519.
    let public = |key: &Path| {
        openssl(&[
            "pkey",
            "-in",
            key.to_str().unwrap(),
            "-pubout",
            "-outform",
            "DER",
        ])
    };
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let settings = adopt_worker::config::Settings::load_from(Some(&config), Vec::new()).unwrap();
    for (domain, selector, k, p) in [
        (DOMAIN, "s2026", "rsa", b64(&public(&rsa))),
        ("pkcs1.example", "old", "rsa", b64(&public(&rsa))),
        (NEWS, "ed1", "ed25519", b64(&public(&ed)[12..])),
    ] {
        let out = run(domain);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert_eq!(stdout, format!("{}\n", record(&settings, domain)));
        assert!(
            stdout.starts_with(&format!(
                "{selector}._domainkey.{domain}. IN TXT \"v=DKIM1; k={k}; p="
            )),
            "{stdout}"
        );
        let value: String = stdout.split('"').skip(1).step_by(2).collect();
        assert_eq!(value, format!("v=DKIM1; k={k}; p={p}"));
    }
    let out = run("other.example");
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("no DKIM key for other.example: [[dkim.keys]] has adoptdontshop.com, news.adoptdontshop.com, pkcs1.example"),
        "{stderr}"
    );
}
