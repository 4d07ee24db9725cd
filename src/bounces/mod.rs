//! Bounces and complaints that come back by mail (docs/bounces.md "Bounces and complaints"): the VERP
//! envelope sender that names each email ([`ReturnPath`]), the reading of delivery status
//! notifications and abuse reports ([`dsn`]), and applying them to the rows ([`ingest`]),
//! from `adopt-worker bounces ingest` (an MTA's pipe) or `POST /v1/webhooks/dsn`.

pub mod dsn;
pub mod ingest;

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

pub use crate::config::ReturnPath;
pub use ingest::{IngestError, IngestSettings, Ingested, MatchedBy};

use crate::config::Settings;

/// Largest message read; the rest is read and dropped (a DSN's own fields come first, and
/// MTAs return at most the original's first part by default).
pub const MAX_MESSAGE_BYTES: u64 = 16 * 1024 * 1024;

/// sysexits.h: the MTA keeps the message and tries again later.
pub const EX_TEMPFAIL: u8 = 75;
/// sysexits.h: the input file could not be opened.
pub const EX_NOINPUT: u8 = 66;

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read {path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot read standard input: {0}")]
    Stdin(std::io::Error),
}

/// The message: `file`, or standard input. At most [`MAX_MESSAGE_BYTES`] are kept, but the
/// input is read to its end, so the MTA never sees a broken pipe.
pub fn read_message(file: Option<&Path>) -> Result<Vec<u8>, ReadError> {
    fn read_capped(mut input: impl Read) -> std::io::Result<Vec<u8>> {
        let mut kept = Vec::new();
        (&mut input)
            .take(MAX_MESSAGE_BYTES)
            .read_to_end(&mut kept)?;
        std::io::copy(&mut input, &mut std::io::sink())?;
        Ok(kept)
    }
    match file {
        Some(path) => std::fs::File::open(path)
            .and_then(read_capped)
            .map_err(|source| ReadError::File {
                path: path.display().to_string(),
                source,
            }),
        None => read_capped(std::io::stdin().lock()).map_err(ReadError::Stdin),
    }
}

/// `adopt-worker bounces ingest [FILE] [--recipient ADDR]`, for an MTA's pipe: one line on
/// stderr saying what happened; exit 0 when the message was applied, ignored or matched no
/// email (never a reason for the MTA to bounce the bounce), 75 (EX_TEMPFAIL) when the
/// database cannot be reached or the configuration cannot be read (the MTA keeps the
/// message and retries), 66 when FILE cannot be read.
pub async fn run_ingest(
    config: Option<&Path>,
    file: Option<&Path>,
    recipient: Option<&str>,
) -> ExitCode {
    let say = |line: &str| eprintln!("bounces ingest: {line}");
    let raw = match read_message(file) {
        Ok(raw) => raw,
        Err(e @ ReadError::File { .. }) => {
            say(&e.to_string());
            return ExitCode::from(EX_NOINPUT);
        }
        Err(e) => {
            say(&format!("{e}; try again later"));
            return ExitCode::from(EX_TEMPFAIL);
        }
    };
    let settings = match Settings::load(config) {
        Ok(s) => s,
        Err(e) => {
            say(&format!("{e}; nothing applied, try again later"));
            return ExitCode::from(EX_TEMPFAIL);
        }
    };
    let pool = match crate::db::connect(&settings.database).await {
        Ok(pool) => pool,
        Err(e) => {
            say(&format!("{e}; nothing applied, try again later"));
            return ExitCode::from(EX_TEMPFAIL);
        }
    };
    let ingest_settings = IngestSettings::from_settings(&settings);
    let recipient = recipient.map(str::trim).filter(|r| !r.is_empty());
    let outcome = ingest::ingest(&pool, &ingest_settings, &raw, recipient).await;
    pool.close().await;
    match outcome {
        Ok(done) => {
            say(&done.to_string());
            ExitCode::SUCCESS
        }
        Err(e) => {
            say(&format!("{e}; try again later"));
            ExitCode::from(EX_TEMPFAIL)
        }
    }
}
