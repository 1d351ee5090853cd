//! The `dirsync` binary: parse the command line, set up logging, run, and
//! turn the outcome into an exit code. Everything else is in the library.

use std::process::ExitCode;

use clap::Parser;

use dirsync::cli::{self, Cli};
use dirsync::daemon::logging;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // The journal when standard error is its stream, else standard error.
    let target = logging::init(cli.log_json);
    match cli::run(cli).await {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            let message = error_chain(&e);
            match target {
                // With its priority (3), where `journalctl -p err` finds it.
                logging::LogTarget::Journal => tracing::error!("dirsync: {message}"),
                logging::LogTarget::Stderr => eprintln!("dirsync: {message}"),
            }
            ExitCode::from(1)
        }
    }
}

/// `message: cause: cause`, each cause once: many of the crate's errors
/// already name their cause in their own message, and repeating it would
/// only make the line harder to read.
fn error_chain(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}
