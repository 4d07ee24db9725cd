//! The scenarios, by what fails: worker processes, PostgreSQL, the SMTP server.

mod postgres;
mod process;
mod rows;
mod smtp;
