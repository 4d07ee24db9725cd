//! adopt-worker: the background job and email delivery worker of the Adopt Don't Shop
//! platform. See README.md for the tour and docs/ for the behaviour contract; docs/integrating.md for
//! services that queue email.

pub mod api;
#[doc(hidden)]
pub mod bench_fixture;
pub mod bounces;
pub mod cli;
pub mod config;
pub mod db;
pub mod delivery;
pub mod jobs;
pub mod metrics;
pub mod preferences;
pub mod queue;
pub mod startup;
pub mod telemetry;
pub mod templates;
pub mod tracking;
pub mod worker;
