//! Bounces and complaints that come back by mail (README "Bounces and complaints"): the VERP
//! envelope sender that names each email ([`verp`]), the reading of delivery status
//! notifications and abuse reports ([`dsn`]), and applying them to the rows ([`ingest`]).

pub mod verp;

pub use verp::ReturnPath;
pub mod dsn;
