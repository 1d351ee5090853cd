//! The command line: subcommands and their flags (clap), and what each one
//! runs. `main.rs` only sets up logging and maps the outcome to an exit code.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::emulator::{self, AuthMeta, EmulatorOptions, Faults, Seed};

#[derive(Debug, Parser)]
#[command(
    name = "dirsync",
    version,
    about = "Keeps Prismatic customers and customer users in step with your directory"
)]
pub struct Cli {
    /// Log as JSON lines instead of human text.
    #[arg(long, global = true)]
    pub log_json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve a local stand-in for the platform's GraphQL API.
    Emulator(EmulatorArgs),
}

#[derive(Debug, Args)]
pub struct EmulatorArgs {
    /// Address to listen on (port 0 picks a free port; the URL is printed).
    #[arg(long, default_value = "127.0.0.1:8787")]
    pub listen: SocketAddr,
    /// Bearer token the emulator accepts.
    #[arg(long, env = "DIRSYNC_EMULATOR_TOKEN", hide_env_values = true)]
    pub token: String,
    /// JSON state file: loaded at start, written after each change. Without it, state is in memory.
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// YAML seed (customers, users, marketplace and organization users) for a fresh state.
    #[arg(long)]
    pub seed: Option<PathBuf>,
    /// Added latency per request, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Requests per second accepted before answering 429.
    #[arg(long)]
    pub rate_limit: Option<u32>,
    /// Share of requests (0 to 1) answered with 503.
    #[arg(long, default_value_t = 0.0)]
    pub error_rate: f64,
    /// Retry-After sent with 429 and 503, in seconds.
    #[arg(long, default_value_t = 1)]
    pub retry_after_secs: u64,
    /// Serve GET /auth/meta naming this token domain (host[:port]) for the refresh-token flow.
    #[arg(long)]
    pub auth_domain: Option<String>,
    /// The clientId /auth/meta reports.
    #[arg(long, default_value = "dirsync-emulator")]
    pub auth_client_id: String,
}

pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Emulator(args) => run_emulator(args).await,
    }
}

async fn run_emulator(args: EmulatorArgs) -> anyhow::Result<i32> {
    if !(0.0..=1.0).contains(&args.error_rate) {
        anyhow::bail!(
            "--error-rate must be between 0 and 1, not {}",
            args.error_rate
        );
    }
    let seed = args
        .seed
        .as_deref()
        .map(Seed::load)
        .transpose()
        .context("cannot load the seed")?;
    let options = EmulatorOptions {
        listen: args.listen,
        tokens: vec![args.token],
        state_file: args.state,
        seed,
        faults: Faults {
            latency_ms: args.latency_ms,
            rate_limit_per_sec: args.rate_limit,
            retry_after_secs: Some(args.retry_after_secs),
            error_rate: args.error_rate,
            ..Faults::default()
        },
        auth_meta: args.auth_domain.map(|domain| AuthMeta {
            domain,
            client_id: args.auth_client_id,
            audience: "https://prismatic.io/api".to_owned(),
        }),
    };
    let running = emulator::start(options).await?;
    // The one line scripts and tests read to find the port.
    println!("dirsync emulator listening on {}", running.url());
    shutdown_signal().await;
    tracing::info!("Shutting down.");
    running.shutdown().await?;
    Ok(0)
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
