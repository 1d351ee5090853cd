//! `cargo bench --bench steady_state`: API requests and wall time of a
//! steady-state reconcile (`Mode::Plan`, nothing to change) against the
//! in-process emulator, seeded with exactly what the CSV directory holds.
//!
//! Checks (exit 1 when violated): the plan is empty, no mutation was sent,
//! and requests <= ceil(C/100) + ceil(U/100) + 2 (one page of 100 per list,
//! plus `authenticatedUser` and `customerRoles`).

#[path = "people.rs"]
mod people;
#[path = "support.rs"]
mod support;

use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use dirsync::config::Config;
use dirsync::emulator::{self, EmulatorOptions, Seed, Stats};
use dirsync::run::{reconcile, Connection, Mode};
use people::{person, seed_customer, seed_user, write_row, HEADER};
use support::{load_average, min_median, ms, CountingAlloc};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

const TOKEN_VAR: &str = "DIRSYNC_BENCH_TOKEN";
const TOKEN: &str = "steady-state-bench-token";
const RUNS: usize = 3;

/// The CSV directory and a seed that matches it exactly (labels included).
fn write_inputs(path: &Path, customers: usize, users: usize) -> std::io::Result<Seed> {
    let mut out = BufWriter::new(std::fs::File::create(path)?);
    writeln!(out, "{HEADER}")?;
    let mut seed = Seed::default();
    seed.customers.extend((0..customers).map(seed_customer));
    for i in 0..users {
        let p = person(i, customers);
        write_row(&mut out, &p, &p.phone)?;
        let phone = p.phone.clone();
        seed.users.push(seed_user(p, phone));
    }
    out.flush()?;
    Ok(seed)
}

fn config_text(url: &str) -> String {
    format!(
        "\
platform:
  url: {url}
  token: {{ env: {TOKEN_VAR} }}
  requests_per_second: 1000
source:
  csv:
    users_file: users.csv
mapping:
  customer:
    external_id: customer_id
    name: customer_name
    labels: [customer_tier]
    static_labels: [dirsync]
  user:
    external_id: employee_id
    customer: customer_id
    email: email
    name: full_name
    phone: phone
    role: role
  roles:
    map:
      admin: Admin
      manager: Admin
      staff: Member
    default: Member
"
    )
}

struct Row {
    customers: usize,
    users: usize,
    seed_time: Duration,
    first: Duration,
    min: Duration,
    median: Duration,
    stats: Stats,
    client_sent: u64,
    bound: u64,
}

async fn measure(customers: usize, users: usize) -> Result<Row, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let seed = write_inputs(&dir.path().join("users.csv"), customers, users)
        .map_err(|e| format!("writing the inputs: {e}"))?;
    let started = Instant::now();
    let mut options = EmulatorOptions::local(TOKEN);
    options.seed = Some(seed);
    let running = emulator::start(options)
        .await
        .map_err(|e| format!("emulator: {e}"))?;
    let seed_time = started.elapsed();
    let config = Config::parse(
        &config_text(&running.url()),
        &dir.path().join("dirsync.yaml"),
    )
    .map_err(|e| format!("config: {e}"))?;
    let connection = Connection::open(&config.platform)
        .await
        .map_err(|e| format!("connection: {e}"))?;

    let bound = customers.div_ceil(100) as u64 + users.div_ceil(100) as u64 + 2;
    let mut times = Vec::with_capacity(RUNS);
    let mut first_stats = None;
    let mut client_sent = 0;
    for n in 0..RUNS {
        running.handle.reset_stats();
        let started = Instant::now();
        let result = reconcile(&config, &connection, Mode::Plan, &dirsync::apply::Quiet)
            .await
            .map_err(|e| format!("reconcile: {e}"))?;
        let took = started.elapsed();
        let stats = running.handle.stats();
        let plan = &result.plan;
        if !plan.is_empty() || !plan.drift.is_empty() || !plan.conflicts.is_empty() {
            return Err(format!(
                "C={customers} U={users}: not a steady state: {:?} operations, {} drift, {} conflicts",
                plan.counts(),
                plan.drift.len(),
                plan.conflicts.len()
            ));
        }
        if stats.mutations != 0 {
            return Err(format!(
                "C={customers} U={users}: {} mutations sent in Mode::Plan",
                stats.mutations
            ));
        }
        if stats.requests > bound {
            return Err(format!(
                "C={customers} U={users}: {} requests, more than ceil(C/100) + ceil(U/100) + 2 = {bound} (operations: {:?})",
                stats.requests, stats.operations
            ));
        }
        println!(
            "C={customers} U={users} run {}: {} , {} requests ({} queries, {} mutations), operations {:?}",
            n + 1,
            ms(took),
            stats.requests,
            stats.queries,
            stats.mutations,
            stats.operations
        );
        times.push(took);
        if n == 0 {
            client_sent = result.requests.sent;
            first_stats = Some(stats);
        }
    }
    connection.close().await.map_err(|e| e.to_string())?;
    running.shutdown().await.map_err(|e| e.to_string())?;
    let (min, median) = min_median(&times);
    Ok(Row {
        customers,
        users,
        seed_time,
        first: times[0],
        min,
        median,
        stats: first_stats.expect("at least one run"),
        client_sent,
        bound,
    })
}

fn main() {
    // The config names the token's environment variable; set it before any
    // thread exists.
    std::env::set_var(TOKEN_VAR, TOKEN);
    println!("load average at start: {}", load_average());
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let mut rows = Vec::new();
    for (customers, users) in [(500, 5_000), (5_000, 50_000)] {
        match runtime.block_on(measure(customers, users)) {
            Ok(row) => rows.push(row),
            Err(e) => {
                eprintln!("steady_state: {e}");
                std::process::exit(1);
            }
        }
    }

    println!();
    println!("| C | U | emulator start + seed | first run | min | median | requests | bound | queries | mutations | per operation | client count |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        let ops = r
            .stats
            .operations
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ");
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.customers,
            r.users,
            ms(r.seed_time),
            ms(r.first),
            ms(r.min),
            ms(r.median),
            r.stats.requests,
            r.bound,
            r.stats.queries,
            r.stats.mutations,
            ops,
            r.client_sent
        );
    }
    println!("load average at end: {}", load_average());
    println!("checks passed: empty plan, 0 mutations, requests <= ceil(C/100) + ceil(U/100) + 2");
}
