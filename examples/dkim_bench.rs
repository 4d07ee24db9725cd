//! What DKIM signing costs per email: the ~20 KB bring-your-own-HTML newsletter of
//! `adopt_worker::bench_fixture` as a multipart message, its final bytes made unsigned
//! (`none`), or made and signed with an RSA-2048 (`rsa`) or an Ed25519 (`ed25519`) key, the
//! keys made now with openssl.
//!
//!   cargo run --release --example dkim_bench -- [none|rsa|ed25519] [N]
//!
//! Prints the CPU time per email; the cost of signing is the difference from `none`. Under
//! callgrind, count only the measured loop:
//!
//!   valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*measured*' \
//!       target/release/examples/dkim_bench rsa 100

use std::time::Instant;

use adopt_worker::bench_fixture as byo;
use adopt_worker::delivery::dkim::{DkimKeySettings, DkimSettings, Signer};
use lettre::Message;
use lettre::message::MultiPart;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let what = args.first().map_or("rsa", String::as_str).to_string();
    let n: usize = match args.get(1) {
        Some(v) => v.parse()?,
        None => 1000,
    };
    let dir = tempfile_dir()?;
    let signer = match what.as_str() {
        "none" => Signer::default(),
        "rsa" => signer(
            &dir,
            &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
        )?,
        "ed25519" => signer(&dir, &["-algorithm", "ed25519"])?,
        other => anyhow::bail!("unknown mode {other:?}: none, rsa or ed25519"),
    };
    let html = byo::byo_newsletter_html();
    let text = adopt_worker::delivery::message::html_to_text(&html);
    let message = Message::builder()
        .from("Adopt Don't Shop <news@adoptdontshop.com>".parse()?)
        .to("Maya Okafor <maya@example.com>".parse()?)
        .subject(byo::BYO_SUBJECT)
        .message_id(Some("<bench@adoptdontshop.com>".into()))
        .date_now()
        .multipart(MultiPart::alternative_plain_html(text, html))?;

    let result = measured(&signer, &message, n);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

#[inline(never)]
fn measured(signer: &Signer, message: &Message, n: usize) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut bytes = 0;
    for _ in 0..n {
        bytes += signer.sign(message)?.bytes.len();
    }
    let per = started.elapsed() / n as u32;
    println!(
        "dkim_bench: {} emails of {} bytes: {:.3} ms per email (message bytes made, and signed if a key is set)",
        n,
        bytes / n.max(1),
        per.as_secs_f64() * 1000.0
    );
    Ok(())
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("dkim_bench.{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn signer(dir: &std::path::Path, args: &[&str]) -> anyhow::Result<Signer> {
    let key = dir.join("key.pem");
    let status = std::process::Command::new("openssl")
        .arg("genpkey")
        .args(args)
        .arg("-out")
        .arg(&key)
        .stderr(std::process::Stdio::null())
        .status()?;
    anyhow::ensure!(status.success(), "openssl genpkey failed");
    Ok(Signer::from_settings(&DkimSettings {
        keys: vec![DkimKeySettings {
            domain: "adoptdontshop.com".into(),
            selector: "bench".into(),
            key_file: key,
        }],
    })?)
}
