//! One integration-test binary (one link step): every test gets its own database.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../support/smtp_server.rs"]
mod smtp_server;

mod helpers;

mod api;
mod architecture;
mod bounces;
mod cli;
mod delivery;
mod dkim;
mod foundation;
mod integrating;
mod jobs;
mod ops;
mod poison;
mod properties;
mod security;
mod templates;
mod tls;
