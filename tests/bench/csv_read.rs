//! `cargo bench --bench csv_read`: time and peak heap of
//! `dirsync::source::read_directory` on a 1M-row users CSV (50k customers),
//! with the mapping of config/example.yaml.

#[path = "support.rs"]
mod support;

use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use dirsync::config::Config;
use dirsync::source::read_directory;
use support::{
    current_bytes, load_average, mib, min_median, ms, peak_bytes, reset_peak, CountingAlloc,
};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

const ROWS: usize = 1_000_000;
const CUSTOMERS: usize = 50_000;
const ITERATIONS: usize = 3;

const FIRST: [&str; 8] = [
    "Ada", "Alan", "Barbara", "Charles", "Grace", "Ken", "Radia", "Tony",
];
const LAST: [&str; 8] = [
    "Hopper", "Knuth", "Lamport", "Liskov", "Lovelace", "Ritchie", "Turing", "Wirth",
];
const TIERS: [&str; 3] = ["gold", "silver", "bronze"];

/// Writes the users file: the columns of config/example-users.csv, one
/// customer per 20 users (rows in employee order, customers interleaved),
/// a third of the phones empty, one admin in ten.
fn write_csv(path: &Path) -> std::io::Result<u64> {
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    writeln!(
        out,
        "employee_id,email,full_name,phone,role,customer_id,customer_name,customer_tier"
    )?;
    for i in 0..ROWS {
        let c = i % CUSTOMERS;
        let (first, last) = (FIRST[i % 8], LAST[(i / 8) % 8]);
        let phone = if i % 3 == 0 {
            String::new()
        } else {
            format!("+1 555 {:07}", i)
        };
        let role = match i % 10 {
            0 => "admin",
            5 => "manager",
            _ => "staff",
        };
        writeln!(
            out,
            "E{i:07},{}.{}{i}@cust{c:05}.example,{first} {last},{phone},{role},cust-{c:05},Customer {c:05} Ltd,{}",
            first.to_lowercase(),
            last.to_lowercase(),
            TIERS[c % 3]
        )?;
    }
    out.flush()?;
    Ok(std::fs::metadata(path)?.len())
}

const CONFIG: &str = "\
platform:
  emulator:
    state: state/emulator.json
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
";

fn main() {
    println!("load average at start: {}", load_average());
    let dir = tempfile::tempdir().expect("temp dir");
    let csv = dir.path().join("users.csv");
    let started = Instant::now();
    let size = write_csv(&csv).expect("write the CSV");
    println!(
        "wrote {ROWS} rows ({CUSTOMERS} customers, {}) in {}",
        mib(size as usize),
        ms(started.elapsed())
    );
    let config_path = dir.path().join("dirsync.yaml");
    let config = Config::parse(CONFIG, &config_path).expect("config");
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");

    let mut times: Vec<Duration> = Vec::with_capacity(ITERATIONS);
    let mut peak = 0;
    let mut retained = 0;
    for n in 0..ITERATIONS {
        let base = current_bytes();
        reset_peak();
        let started = Instant::now();
        let directory = runtime
            .block_on(read_directory(&config))
            .expect("read_directory");
        let took = started.elapsed();
        peak = peak.max(peak_bytes() - base);
        retained = current_bytes() - base;
        if directory.users.len() != ROWS
            || directory.customers.len() != CUSTOMERS
            || !directory.refused.is_empty()
        {
            eprintln!(
                "unexpected directory: {} users, {} customers, {} refused",
                directory.users.len(),
                directory.customers.len(),
                directory.refused.len()
            );
            std::process::exit(1);
        }
        println!(
            "iteration {}: {} ({:.0} rows/s)",
            n + 1,
            ms(took),
            ROWS as f64 / took.as_secs_f64()
        );
        times.push(took);
        drop(directory);
    }
    let (min, median) = min_median(&times);

    println!();
    println!("| rows | customers | file | first run | min | median | rows/s (median) | iterations | peak heap during read | directory retained |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {ROWS} | {CUSTOMERS} | {} | {} | {} | {} | {:.0} | {ITERATIONS} | {} | {} |",
        mib(size as usize),
        ms(times[0]),
        ms(min),
        ms(median),
        ROWS as f64 / median.as_secs_f64(),
        mib(peak),
        mib(retained)
    );
    println!("load average at end: {}", load_average());
}
