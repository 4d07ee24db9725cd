//! The chaos suite (issue 9). Real `adopt-worker run --no-api` processes drain 10,000-row
//! queues while processes are SIGKILLed and SIGTERMed, PostgreSQL is restarted, its
//! backends are terminated and its connection slots taken, and the SMTP server refuses,
//! rejects, disconnects, withholds its reply to the final dot and stalls. Each scenario
//! reports rows lost (must be 0), duplicates delivered and whether each one is explained
//! (in flight at a fault, or its 250 withheld by the server), and recovery times.
//!
//! Not part of `cargo test`: every scenario is `#[ignore]`d, and they run only on the
//! private PostgreSQL cluster that `scripts/chaos` starts (they restart it).
//! Run them all with `scripts/chaos`, one with `scripts/chaos <name>`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../support/smtp_server.rs"]
mod smtp_server;

#[allow(dead_code)]
#[path = "../it/helpers.rs"]
mod helpers;

mod cluster;
mod fleet;
mod harness;
mod report;
mod scenarios;
