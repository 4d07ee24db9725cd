//! Private CAs: a relay and a PostgreSQL server whose certificates come from a CA made here,
//! trusted through `smtp.ca_file`, the system store (`SSL_CERT_FILE`) or `sslrootcert`,
//! and refused without them.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::helpers::*;

/// A CA made for one test, and a server certificate for `localhost` it issued.
struct PrivateCa {
    _dir: tempfile::TempDir,
    /// The CA's certificate, PEM.
    ca_pem: PathBuf,
    server: Arc<ServerConfig>,
}

impl PrivateCa {
    fn new() -> PrivateCa {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "adopt-worker test CA");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);

        let key = KeyPair::generate().unwrap();
        let mut leaf = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        leaf.distinguished_name
            .push(DnType::CommonName, "localhost");
        let leaf_cert = leaf.signed_by(&key, &issuer).unwrap();

        let dir = tempfile::tempdir().unwrap();
        let ca_pem = dir.path().join("private-ca.pem");
        std::fs::write(&ca_pem, ca_cert.pem()).unwrap();
        let server = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf_cert.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .unwrap();
        PrivateCa {
            _dir: dir,
            ca_pem,
            server: Arc::new(server),
        }
    }

    fn ca_file(&self) -> String {
        self.ca_pem.display().to_string()
    }
}

/// STARTTLS required, to the name on the certificate.
fn relay_url(smtp: &TestSmtp) -> String {
    format!("smtp://localhost:{}?tls=required", smtp.port())
}

#[tokio::test]
async fn a_relay_with_a_private_ca_is_trusted_through_smtp_ca_file_and_only_so() {
    let ca = PrivateCa::new();
    let db = TestDb::new().await;
    let smtp = TestSmtp::start_with_starttls(ca.server.clone()).await;
    let id = NewEmail::to("maya@example.com").insert(&db.pool).await;

    // Without the CA: the bundled and system roots do not know it, so the handshake fails,
    // transiently, saying why; nothing reaches the relay.
    app(settings(&db, Some(&relay_url(&smtp)), None, &[]))
        .drain()
        .await
        .unwrap();
    let r = row(&db.pool, id).await;
    assert_eq!(
        (r.status.as_str(), r.current_retries),
        ("queued", Some(1)),
        "a TLS failure is transient: {:?}",
        r.failure_reason
    );
    let reason = r.failure_reason.unwrap_or_default();
    assert!(
        reason.starts_with(
            "tls handshake with localhost failed: invalid peer certificate: UnknownIssuer"
        ),
        "{reason}"
    );
    assert!(
        reason.contains("smtp.ca_file"),
        "the reason says what to do: {reason}"
    );
    assert_eq!(smtp.message_count(), 0);
    assert_eq!(smtp.commands(Command::StartTls), 1);
    assert!(
        eventually(Duration::from_secs(5), || async {
            smtp.tls_failures().len() == 1
        })
        .await,
        "the server saw the client give up the handshake: {:?}",
        smtp.tls_failures()
    );

    // With smtp.ca_file naming the CA, the same row goes out over TLS.
    make_all_due(&db.pool).await;
    app(settings(
        &db,
        Some(&relay_url(&smtp)),
        None,
        &[("ADOPT__SMTP__CA_FILE", &ca.ca_file())],
    ))
    .drain()
    .await
    .unwrap();
    let r = row(&db.pool, id).await;
    assert_eq!(r.status, "sent", "{:?}", r.failure_reason);
    let messages = smtp.messages();
    assert_eq!(messages.len(), 1);
    assert!(messages[0].tls, "the message came inside TLS");
    assert_eq!(messages[0].rcpt_to, ["maya@example.com"]);
}

#[tokio::test]
async fn a_relay_with_a_ca_in_the_system_store_is_trusted() {
    // SSL_CERT_FILE stands in for the system store (it is read instead of /etc/ssl/certs),
    // in a process of its own: the environment of this one is shared by every test.
    let ca = PrivateCa::new();
    let db = TestDb::new().await;
    let smtp = TestSmtp::start_with_starttls(ca.server.clone()).await;
    let id = NewEmail::to("maya@example.com").insert(&db.pool).await;
    // tokio's Command: the relay runs on this test's runtime while the binary waits on it.
    let out = tokio::process::Command::from(bin())
        .arg("drain")
        .env("DATABASE_URL", &db.url)
        .env("SMTP_URL", relay_url(&smtp))
        .env("SSL_CERT_FILE", &ca.ca_pem)
        .env_remove("SSL_CERT_DIR")
        .env_remove("ADOPT__SMTP__CA_FILE")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("sent=1"), "{stdout}\n{stderr}");
    assert_eq!(row(&db.pool, id).await.status, "sent");
    assert!(smtp.messages()[0].tls);
}

#[tokio::test]
async fn a_bad_smtp_ca_file_stops_start_up_naming_the_file_and_the_problem() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let missing = dir.path().join("missing.pem");
    let der = write("ca.der", &[0x30, 0x82, 0x03, 0x1f, 0x30, 0x82, 0x02, 0x07]);
    let key = write(
        "key.pem",
        b"-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n",
    );
    let cases: [(&Path, &str); 3] = [
        (&missing, "cannot be read: No such file or directory"),
        (&der, "is not PEM"),
        (&key, "holds no certificate"),
    ];
    for (path, problem) in cases {
        let settings = settings(
            &db,
            Some("smtp://localhost:2525?tls=required"),
            None,
            &[("ADOPT__SMTP__CA_FILE", &path.display().to_string())],
        );
        let err = match adopt_worker::startup::App::build(settings) {
            Ok(_) => panic!("{} was accepted", path.display()),
            Err(e) => e.to_string(),
        };
        let expected = format!("smtp.ca_file {}: {problem}", path.display());
        assert!(err.contains(&expected), "{err}\nexpected: {expected}");
    }

    // `run` says so and exits non-zero at once, before it reaches for the database.
    let run = tokio::process::Command::from(bin())
        .args(["run", "--no-api"])
        .env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/nowhere")
        .env("HTTP_ADDR", "127.0.0.1:0")
        .env("SMTP_URL", "smtp://localhost:2525?tls=required")
        .env("ADOPT__SMTP__CA_FILE", &der)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("a bad smtp.ca_file stops start-up")
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("smtp.ca_file {}: is not PEM", der.display())),
        "{err}"
    );
}

/// A PostgreSQL server as far as TLS goes: it accepts the SSLRequest, completes the
/// handshake with `config`, and answers the startup message with a FATAL error naming
/// itself, so a client that gets that error has trusted the certificate.
async fn tls_postgres_peer(config: Arc<ServerConfig>) -> (u16, Arc<Mutex<Vec<String>>>) {
    const SAYS: &str = "tls test peer: handshake completed";
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let failures = Arc::new(Mutex::new(Vec::new()));
    let noted = failures.clone();
    let acceptor = TlsAcceptor::from(config);
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let noted = noted.clone();
            tokio::spawn(async move {
                let mut request = [0u8; 8];
                tcp.read_exact(&mut request).await?;
                assert_eq!(request, [0, 0, 0, 8, 4, 210, 22, 47], "an SSLRequest");
                tcp.write_all(b"S").await?;
                let mut tls = match acceptor.accept(tcp).await {
                    Ok(tls) => tls,
                    Err(e) => {
                        noted.lock().unwrap().push(e.to_string());
                        return Ok(());
                    }
                };
                let len = tls.read_i32().await?;
                let mut startup = vec![0u8; usize::try_from(len - 4).unwrap_or(0)];
                tls.read_exact(&mut startup).await?;
                let mut fields = Vec::new();
                for (code, value) in [
                    (b'S', "FATAL"),
                    (b'V', "FATAL"),
                    (b'C', "28000"),
                    (b'M', SAYS),
                ] {
                    fields.push(code);
                    fields.extend_from_slice(value.as_bytes());
                    fields.push(0);
                }
                fields.push(0);
                let mut reply = vec![b'E'];
                reply.extend_from_slice(&(fields.len() as i32 + 4).to_be_bytes());
                reply.extend_from_slice(&fields);
                tls.write_all(&reply).await?;
                tls.shutdown().await?;
                Ok::<_, std::io::Error>(())
            });
        }
    });
    (port, failures)
}

fn database_settings(url: String) -> adopt_worker::config::DatabaseSettings {
    let db = adopt_worker::config::Settings::load_from(None, [("DATABASE_URL".into(), url)])
        .unwrap()
        .database;
    adopt_worker::config::DatabaseSettings {
        acquire_timeout_secs: 5,
        ..db
    }
}

#[tokio::test]
async fn a_database_with_a_private_ca_is_verified_through_sslrootcert_or_the_system_store() {
    let ca = PrivateCa::new();
    let (port, failures) = tls_postgres_peer(ca.server.clone()).await;
    let url = format!("postgres://adopt@localhost:{port}/adopt?sslmode=verify-full");

    // verify-full without the CA: refused at the handshake, naming the problem.
    let err = adopt_worker::db::connect(&database_settings(url.clone()))
        .await
        .expect_err("an unknown CA is refused")
        .to_string();
    assert!(err.contains("UnknownIssuer"), "{err}");
    assert!(
        eventually(Duration::from_secs(5), || async {
            failures.lock().unwrap().len() == 1
        })
        .await
    );

    // sslrootcert names the CA: the handshake completes and the peer's own error comes back.
    let with_root = format!("{url}&sslrootcert={}", ca.ca_file());
    let err = adopt_worker::db::connect(&database_settings(with_root))
        .await
        .expect_err("the peer refuses every login")
        .to_string();
    assert!(err.contains("tls test peer: handshake completed"), "{err}");

    // The CA in the system store (SSL_CERT_FILE, in a process of its own) does as well.
    let out = tokio::process::Command::from(bin())
        .arg("migrate")
        .env("DATABASE_URL", &url)
        .env("SSL_CERT_FILE", &ca.ca_pem)
        .env_remove("SSL_CERT_DIR")
        .env_remove("PGSSLROOTCERT")
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("tls test peer: handshake completed"), "{err}");
    assert_eq!(
        failures.lock().unwrap().len(),
        1,
        "only the first connection failed its handshake"
    );
}
