use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = adopt_worker::cli::Cli::parse();
    match adopt_worker::cli::run(cli).await {
        Ok(code) => code,
        Err(e) => {
            // One line naming the problem, with its causes.
            eprintln!("adopt-worker: {e:#}");
            ExitCode::FAILURE
        }
    }
}
