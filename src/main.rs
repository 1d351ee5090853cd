//! The `dirsync` binary: parse the command line, set up logging, run, and
//! turn the outcome into an exit code. Everything else is in the library.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use dirsync::cli::{self, Cli};

fn init_logging(json: bool) {
    let filter = EnvFilter::try_from_env("DIRSYNC_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.with_ansi(std::io::stderr().is_terminal()).init();
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_json);
    match cli::run(cli).await {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("dirsync: {}", error_chain(&e));
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
