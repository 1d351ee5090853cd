//! The command line: subcommands and their flags (clap), and what each one
//! runs. `main.rs` only sets up logging and maps the outcome to an exit code.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, DEFAULT_CONFIG_PATH};
use crate::confirm::{self, Answer};
use crate::daemon::{self, StateLock};
use crate::emulator::{self, AuthMeta, EmulatorOptions, Faults, Seed};
use crate::plan::render;
use crate::report::{self, ApplyProgress};
use crate::run::{prepare, Connection, Mode};
use crate::saved_plan;

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
    /// Show what a sync would change, and change nothing.
    /// Exit 0 in sync, 2 changes pending, 3 blocked by a safety limit, 1 error,
    /// 5 stopped by SIGTERM/SIGINT.
    Plan(PlanArgs),
    /// Apply the changes. Exit 0 applied (or nothing to do), 3 blocked,
    /// 4 some operations failed, 1 error, 5 stopped by SIGTERM/SIGINT (the
    /// operations in flight finished, the rest were skipped).
    Sync(SyncArgs),
    /// Apply a plan saved by `dirsync plan --out FILE`: exactly its
    /// operations, or nothing. Never plans. Refuses (exit 6, nothing sent)
    /// when the config changed or any record the plan would touch changed
    /// on the platform since the plan was made. Exit 0 applied, 3 blocked,
    /// 4 some operations failed, 6 stale plan, 1 error, 5 stopped by
    /// SIGTERM/SIGINT.
    Apply(ApplyArgs),
    /// Run as a service: reconcile on the config's schedule until SIGTERM.
    /// Reloads the config on SIGHUP; talks to systemd (Type=notify).
    Run(ConfigArg),
    /// Validate a config file without touching the network or the source.
    /// Secrets are named in the config, not read: a run reads them when it connects.
    CheckConfig(ConfigArg),
    /// Check both sides before trusting a config: connect to the platform,
    /// check the token, resolve the role names, read the source and show
    /// counts and sample records. Sends no mutation. Exit 0 or 1.
    Test(ConfigArg),
    /// Show who changed what, and when: every operation that sync, apply and
    /// the service's runs applied (or tried), oldest first, from the state
    /// directory's store (state_dir/dirsync.sqlite3). Changes nothing. Exit 0
    /// (also when nothing is recorded yet), 1 error.
    History(HistoryArgs),
    /// Serve a local stand-in for the platform's GraphQL API.
    Emulator(EmulatorArgs),
    /// Write the man pages and shell completions the package ships into DIR.
    #[command(hide = true)]
    GenerateAssets { dir: PathBuf },
}

#[derive(Debug, Args)]
pub struct ConfigArg {
    /// The YAML config file. Without -c: $DIRSYNC_CONFIG, else /etc/dirsync/config.yaml.
    #[arg(
        short,
        long,
        value_name = "FILE",
        env = "DIRSYNC_CONFIG",
        default_value = DEFAULT_CONFIG_PATH
    )]
    pub config: PathBuf,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Show what --allow-deletes would do: the plan with the delete budgets lifted.
    /// With --out, the approval is recorded: `dirsync apply` lifts the budgets for that plan.
    #[arg(long)]
    pub allow_deletes: bool,
    /// Also save the plan to FILE (JSON) for `dirsync apply -c CONFIG FILE`.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The plan file `dirsync plan --out` wrote.
    #[arg(value_name = "PLAN_FILE")]
    pub plan: PathBuf,
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Plan only: behaves exactly like `dirsync plan` (with --allow-deletes:
    /// shows what the flag would do).
    #[arg(long)]
    pub dry_run: bool,
    /// Lift the delete budgets for this one run (never the source checks).
    #[arg(long)]
    pub allow_deletes: bool,
    /// Apply without asking. On a terminal, sync shows the plan and asks
    /// first (only 'yes' applies); off a terminal it never asks.
    #[arg(short = 'y', long)]
    pub yes: bool,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Only the operations on this externalId (a user's or a customer's; exact).
    #[arg(long, value_name = "ID")]
    pub external_id: Option<String>,
    /// Only operations since WHEN: an RFC 3339 time (2026-12-01T10:00:00Z),
    /// a date (2026-12-01, UTC) or a span back from now (24h, 7d).
    #[arg(long, value_name = "WHEN", value_parser = crate::state::history::parse_since)]
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
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
    /// The most operations (root fields, aliased or not) one document may
    /// carry; a larger one is refused whole with HTTP 400, standing in for
    /// the platform's cost limits.
    #[arg(long)]
    pub max_root_fields: Option<u32>,
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
        Command::Plan(args) => match &args.out {
            Some(out) => run_saved_plan(&args, out).await,
            None => {
                let mode = Mode::plan(args.allow_deletes);
                run_reconcile(&args.config.config, args.output, mode, true).await
            }
        },
        Command::Sync(args) => {
            let mode = if args.dry_run {
                Mode::plan(args.allow_deletes)
            } else {
                Mode::Apply {
                    allow_deletes: args.allow_deletes,
                }
            };
            run_reconcile(&args.config.config, args.output, mode, args.yes).await
        }
        Command::Apply(args) => run_apply(&args).await,
        Command::Test(args) => {
            let config = Config::load(&args.config)?;
            let report = crate::connection_test::test_config(&config).await;
            write_stdout(&report.text);
            Ok(if report.ok {
                report::exit::OK
            } else {
                report::exit::ERROR
            })
        }
        Command::CheckConfig(args) => {
            Config::load(&args.config)?;
            write_stdout(&format!(
                "{}: OK\n(secrets are not read here: plan, sync and run read them when they connect)\n",
                args.config.display()
            ));
            Ok(report::exit::OK)
        }
        Command::Run(args) => {
            daemon::run(&args.config).await?;
            Ok(report::exit::OK)
        }
        Command::History(args) => run_history(&args),
        Command::Emulator(args) => run_emulator(args).await,
        Command::GenerateAssets { dir } => {
            for file in daemon::assets::generate(&dir)? {
                write_stdout(&format!("{}\n", file.display()));
            }
            Ok(report::exit::OK)
        }
    }
}

/// `plan` and `sync`. The plan is shown before anything is sent; on a
/// terminal, without `yes`, `sync` asks first.
async fn run_reconcile(
    path: &std::path::Path,
    output: Output,
    mode: Mode,
    yes: bool,
) -> anyhow::Result<i32> {
    let config = Config::load(path)?;
    // Never beside the daemon or another sync: held until this returns.
    let _lock = if mode.applies() {
        Some(StateLock::acquire(&config.state_dir)?)
    } else {
        None
    };
    if mode.allow_deletes() {
        let what = if mode.applies() {
            "for this run"
        } else {
            "in this preview"
        };
        tracing::warn!("--allow-deletes: the delete budgets are lifted {what}; the source checks (empty, shrunken, withheld deletes) still hold.");
        eprintln!("dirsync: WARNING: --allow-deletes lifts the delete budgets {what}.");
    }
    // SIGTERM or SIGINT, as for the daemon: no new request leaves, those in
    // flight finish, the rest are skipped, and the report is printed.
    let cancel = CancellationToken::new();
    let signals =
        stop_on_signals(cancel.clone()).context("cannot listen for SIGTERM and SIGINT")?;
    // metrics.textfile: this run, added to the counters of the runs before.
    let textfile = daemon::textfile::SyncMetrics::start(&config, mode);
    let connection = match Connection::open(&config.platform).await {
        Ok(c) => c,
        Err(e) => {
            if let Some(t) = textfile {
                t.failed(&e);
            }
            return Err(e.into());
        }
    };
    let result = decide_and_apply(&config, &connection, mode, output, yes, &cancel).await;
    if let Some(t) = textfile {
        t.finish(&result.as_ref().map(|(r, _)| r), cancel.is_cancelled());
    }
    if let (true, Ok((r, _))) = (mode.applies(), &result) {
        crate::state::record_run(&config, crate::state::RunMode::Sync, r);
    }
    connection.close().await?;
    let (outcome, declined) = match result {
        Err(e) if e.is_interrupted() => {
            signals.abort();
            eprintln!("dirsync: {e}");
            return Ok(report::exit::INTERRUPTED);
        }
        other => other?,
    };
    match output {
        Output::Text => write_stdout(&report::outcome_text(&outcome)),
        Output::Json => write_stdout(&format!("{}\n", report::json(&outcome, mode.name()))),
    }
    let code = match declined {
        Some(code) => code,
        None if mode.applies() => report::sync_exit_code(&outcome),
        None => report::plan_exit_code(&outcome),
    };
    tracing::info!(
        mode = mode.name(),
        operations = outcome.plan.operations.len(),
        user_deletes = outcome.plan.user_deletes(),
        blocked = !outcome.blocked.is_empty(),
        refused = outcome.plan.refused.len(),
        platform_read = outcome.platform_read.as_ref().map_or("", |r| r.label()),
        failed = outcome.report.as_ref().map_or(0, |r| r.failed()),
        requests = outcome.requests.sent,
        throttled = outcome.requests.throttled,
        duration_ms = outcome.duration_ms,
        exit_code = code,
        "Run finished."
    );
    signals.abort();
    Ok(code)
}

/// Plans, shows the plan (text goes out now, before any mutation), asks
/// when it should, then applies. Returns the reconcile and, when the
/// question was not answered `yes`, the exit code that says so.
async fn decide_and_apply(
    config: &Config,
    connection: &Connection,
    mode: Mode,
    output: Output,
    yes: bool,
    cancel: &CancellationToken,
) -> Result<(crate::run::Reconcile, Option<i32>), crate::run::RunError> {
    let prepared = prepare(config, connection, mode.allow_deletes(), cancel).await?;
    if output == Output::Text {
        write_stdout(&report::plan_text_styled(
            &prepared.plan,
            &prepared.blocked,
            render::TextStyle::for_stdout(),
        ));
    }
    if !mode.applies() {
        return Ok((prepared.without_apply(connection), None));
    }
    if prepared.has_sendable() && confirm::should_ask(yes) {
        let what = prepared
            .sendable()
            .map(|p| render::summary_line(&p))
            .unwrap_or_default();
        match confirm::ask(&what, cancel).await {
            Answer::Yes => {}
            Answer::No => {
                eprintln!("dirsync: apply cancelled; nothing was changed.");
                return Ok((
                    prepared.without_apply(connection),
                    Some(report::exit::CHANGES_PENDING),
                ));
            }
            Answer::Interrupted => {
                eprintln!("dirsync: stopped at the question; nothing was changed.");
                return Ok((
                    prepared.without_apply(connection),
                    Some(report::exit::INTERRUPTED),
                ));
            }
        }
    }
    let progress = ApplyProgress::default();
    let outcome = prepared.apply(config, connection, &progress, cancel).await;
    progress.finish();
    Ok((outcome, None))
}

/// `plan --out FILE`: the plan, shown and saved (`saved_plan::save`).
async fn run_saved_plan(args: &PlanArgs, out: &std::path::Path) -> anyhow::Result<i32> {
    let cancel = CancellationToken::new();
    let signals =
        stop_on_signals(cancel.clone()).context("cannot listen for SIGTERM and SIGINT")?;
    let json = args.output == Output::Json;
    let result = saved_plan::save::plan_to_file(
        &args.config.config,
        out,
        args.allow_deletes,
        json,
        &write_stdout,
        &cancel,
    )
    .await;
    signals.abort();
    saved_plan_exit(result)
}

/// `apply -c CONFIG FILE`: the saved plan, exactly (`saved_plan::apply`).
async fn run_apply(args: &ApplyArgs) -> anyhow::Result<i32> {
    let cancel = CancellationToken::new();
    let signals =
        stop_on_signals(cancel.clone()).context("cannot listen for SIGTERM and SIGINT")?;
    let json = args.output == Output::Json;
    let result = saved_plan::apply::apply_file(
        &args.config.config,
        &args.plan,
        json,
        &write_stdout,
        &cancel,
    )
    .await;
    signals.abort();
    saved_plan_exit(result)
}

/// A stale plan (exit 6) or a stop (exit 5) is said here; other errors go
/// to `main` (exit 1).
fn saved_plan_exit(result: Result<i32, saved_plan::SavedPlanError>) -> anyhow::Result<i32> {
    match result {
        Ok(code) => Ok(code),
        Err(e) if e.exit_code() == report::exit::ERROR => Err(e.into()),
        Err(e) => {
            eprintln!("dirsync: {e}");
            Ok(e.exit_code())
        }
    }
}

/// `history`: the recorded operations, as text lines or a JSON array.
fn run_history(args: &HistoryArgs) -> anyhow::Result<i32> {
    let config = Config::load(&args.config.config)?;
    let filter = crate::state::HistoryFilter {
        external_id: args.external_id.clone(),
        since: args.since,
    };
    let Some(entries) = crate::state::history::read_history(&config.state_dir, &filter)? else {
        let path = crate::state::store_path(&config.state_dir);
        match args.output {
            Output::Text => write_stdout(&format!(
                "no history yet ({} does not exist)\n",
                path.display()
            )),
            Output::Json => {
                eprintln!(
                    "dirsync: no history yet ({} does not exist)",
                    path.display()
                );
                write_stdout("[]\n");
            }
        }
        return Ok(report::exit::OK);
    };
    match args.output {
        Output::Text if entries.is_empty() => {
            write_stdout("no recorded operations match\n");
        }
        Output::Text => {
            let mut text = String::new();
            for e in &entries {
                text.push_str(&e.text_line());
                text.push('\n');
            }
            write_stdout(&text);
        }
        Output::Json => write_stdout(&format!("{}\n", serde_json::to_string_pretty(&entries)?)),
    }
    Ok(report::exit::OK)
}

/// The first SIGTERM or SIGINT cancels `cancel`; a second one leaves at once
/// (exit 5; the next run converges).
fn stop_on_signals(cancel: CancellationToken) -> std::io::Result<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(tokio::spawn(async move {
        loop {
            let name = tokio::select! {
                Some(()) = term.recv() => "SIGTERM",
                Some(()) = int.recv() => "SIGINT",
                else => break,
            };
            if cancel.is_cancelled() {
                tracing::warn!(
                    signal = name,
                    "Second stop signal: leaving at once. The next run converges."
                );
                eprintln!("dirsync: stopped at once by a second {name}; the next run converges.");
                std::process::exit(report::exit::INTERRUPTED);
            }
            tracing::warn!(
                signal = name,
                "Stop requested: no new request is sent; the operations in flight finish."
            );
            cancel.cancel();
        }
    }))
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
            max_root_fields: args.max_root_fields,
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
    write_stdout(&format!(
        "dirsync emulator listening on {}\n",
        running.url()
    ));
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

/// Writes to stdout without panicking when it is closed (`dirsync plan |
/// head -c 10`): a reader that went away is not an error of the run, whose
/// exit code still tells the outcome. Other write errors are logged.
fn write_stdout(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(e) => tracing::warn!(error = %e, "Cannot write to standard output."),
    }
}
