//! `cargo bench --bench csv_read`: reading a 1M-row users CSV (50k
//! customers, the mapping of config/example.yaml), side by side in one run:
//!
//! - `bare ByteRecord`: a `csv::Reader` over the file, one reused
//!   `csv::ByteRecord`, nothing kept (the parser's own cost);
//! - `owned strings`: the same pass, each row turned into a `Vec<String>`
//!   (UTF-8 checked) and every row kept until the pass ends: the least a
//!   reader that hands on owned values holds;
//! - `dirsync read_directory`: the CSV source as dirsync runs it, checked to
//!   hold 1M users, 50k customers and no refusals.
//!
//! The three take turns in each iteration, so load on the machine falls on
//! all of them alike. Each row of the table gives time and peak heap (the
//! counting allocator in support.rs, above the level before the pass), and
//! the ratio to the owned-strings reader.
//!
//! Then the whole process: the real binary (`dirsync plan`, built with the
//! bench profile) against a platform in this process that holds exactly the
//! CSV's 50k customers and 1M users (so the plan is empty), and its peak RSS
//! from `getrusage(RUSAGE_CHILDREN)` once it exited; its `VmRSS` is sampled
//! every half second on the way, to show where the peak is (the read, the
//! platform's snapshot, the plan).
//!
//! Arguments: `read` or `plan` runs only that part (both by default);
//! `small` (CI) reads 20k rows of 1k customers once, to show the bench runs.

#[path = "support.rs"]
mod support;

use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dirsync::config::Config;
use dirsync::source::{read_directory, whole_file};
use support::{
    children_max_rss_bytes, current_bytes, load_average, mib, min_median, ms, peak_bytes,
    reset_peak, CountingAlloc,
};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// Set by `-- small` (CI): a fiftieth of the rows and customers, one iteration.
static SMALL: AtomicBool = AtomicBool::new(false);

/// Whether each pass starts from a settled heap (`settle_heap`).
static SETTLE: AtomicBool = AtomicBool::new(true);

fn small() -> bool {
    SMALL.load(Ordering::Relaxed)
}

/// Rows in the users file: 1M (20k with `small`).
fn rows() -> usize {
    if small() {
        20_000
    } else {
        1_000_000
    }
}

/// Customers the rows are spread over: 50k (1k with `small`).
fn customers() -> usize {
    rows() / 20
}

fn iterations() -> usize {
    if small() {
        1
    } else {
        5
    }
}

const FIRST: [&str; 8] = [
    "Ada", "Alan", "Barbara", "Charles", "Grace", "Ken", "Radia", "Tony",
];
const LAST: [&str; 8] = [
    "Hopper", "Knuth", "Lamport", "Liskov", "Lovelace", "Ritchie", "Turing", "Wirth",
];
const TIERS: [&str; 3] = ["gold", "silver", "bronze"];

/// One row of the users file, and what the platform holds for it.
struct Person {
    employee_id: String,
    email: String,
    name: String,
    phone: String,
    /// The source value and the platform role it maps to.
    role: (&'static str, &'static str),
    customer: usize,
}

/// Row `i`: one customer per 20 users (customers interleaved), a third of
/// the phones empty, one admin and one manager in ten.
fn person(i: usize) -> Person {
    let (first, last) = (FIRST[i % 8], LAST[(i / 8) % 8]);
    let c = i % customers();
    Person {
        employee_id: format!("E{i:07}"),
        email: format!(
            "{}.{}{i}@cust{c:05}.example",
            first.to_lowercase(),
            last.to_lowercase()
        ),
        name: format!("{first} {last}"),
        phone: if i % 3 == 0 {
            String::new()
        } else {
            format!("+1 555 {i:07}")
        },
        role: match i % 10 {
            0 => ("admin", "Admin"),
            5 => ("manager", "Admin"),
            _ => ("staff", "Member"),
        },
        customer: c,
    }
}

fn customer_key(c: usize) -> String {
    format!("cust-{c:05}")
}

fn customer_name(c: usize) -> String {
    format!("Customer {c:05} Ltd")
}

/// Writes the users file (the columns of config/example-users.csv).
fn write_csv(path: &Path) -> std::io::Result<u64> {
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    writeln!(
        out,
        "employee_id,email,full_name,phone,role,customer_id,customer_name,customer_tier"
    )?;
    for i in 0..rows() {
        let p = person(i);
        writeln!(
            out,
            "{},{},{},{},{},{},{},{}",
            p.employee_id,
            p.email,
            p.name,
            p.phone,
            p.role.0,
            customer_key(p.customer),
            customer_name(p.customer),
            TIERS[p.customer % 3]
        )?;
    }
    out.flush()?;
    Ok(std::fs::metadata(path)?.len())
}

const MAPPING: &str = "\
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

// ---------------------------------------------------------------------------
// The read, three ways.

/// What one pass gave: how long, the peak heap above the level before it,
/// and what it still held when it ended (before its result was dropped).
struct Pass {
    took: Duration,
    peak: usize,
    held: usize,
}

/// glibc keeps small freed chunks aside, in the arena of the thread that
/// allocated them, and merges them at that arena's next large request. A
/// pass would pay for what an earlier pass freed: the directory's reading
/// threads for the million users the directory before them freed, the
/// owned pass's successor on the main thread for its 8 million strings.
/// `malloc_trim` merges every arena's now (and gives free memory back, so
/// every pass starts from the same cold heap).
fn settle_heap() {
    // SAFETY: `malloc_trim` only reorganises glibc's free lists; it takes
    // and returns plain integers, and no allocation is in flight.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Runs `pass`, measuring it; `check` looks at its result (exit 1 when wrong).
///
/// First the allocator settles what the passes before freed (`settle_heap`).
fn measure<T>(pass: impl FnOnce() -> T, check: impl FnOnce(&T)) -> Pass {
    if SETTLE.load(Ordering::Relaxed) {
        settle_heap();
    }
    let base = current_bytes();
    reset_peak();
    let started = Instant::now();
    let result = pass();
    let took = started.elapsed();
    let measured = Pass {
        took,
        peak: peak_bytes().saturating_sub(base),
        held: current_bytes().saturating_sub(base),
    };
    check(&result);
    drop(result);
    measured
}

fn bare_pass(path: &Path) -> (usize, usize) {
    let mut reader = csv::Reader::from_path(path).expect("open the CSV");
    let mut record = csv::ByteRecord::new();
    let (mut rows, mut fields) = (0, 0);
    while reader.read_byte_record(&mut record).expect("a row") {
        rows += 1;
        fields += record.len();
    }
    (rows, fields)
}

fn owned_pass(path: &Path) -> Vec<Vec<String>> {
    let mut reader = csv::Reader::from_path(path).expect("open the CSV");
    let mut record = csv::ByteRecord::new();
    let mut rows = Vec::new();
    while reader.read_byte_record(&mut record).expect("a row") {
        let row = record
            .iter()
            .map(|f| std::str::from_utf8(f).expect("UTF-8").to_owned())
            .collect::<Vec<String>>();
        rows.push(row);
    }
    rows
}

fn fail(what: &str) -> ! {
    eprintln!("csv_read: {what}");
    std::process::exit(1);
}

/// The three readers' passes, in turns.
#[derive(Default)]
struct Passes {
    bare: Vec<Pass>,
    owned: Vec<Pass>,
    dirsync: Vec<Pass>,
}

fn read_passes(csv: &Path, config: &Config) -> Passes {
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let mut passes = Passes::default();
    for n in 0..iterations() {
        passes.bare.push(measure(
            || bare_pass(csv),
            |(read, fields)| {
                if *read != rows() || *fields != rows() * 8 {
                    fail(&format!("bare pass: {read} rows, {fields} fields"));
                }
            },
        ));
        passes.owned.push(measure(
            || owned_pass(csv),
            |read| {
                if read.len() != rows() {
                    fail(&format!("owned pass: {} rows", read.len()));
                }
            },
        ));
        passes.dirsync.push(measure(
            || runtime.block_on(read_directory(config)),
            |d| match d {
                Ok(d)
                    if d.users.len() == rows()
                        && d.customers.len() == customers()
                        && d.refused.is_empty() => {}
                Ok(d) => fail(&format!(
                    "unexpected directory: {} users, {} customers, {} refused",
                    d.users.len(),
                    d.customers.len(),
                    d.refused.len()
                )),
                Err(e) => fail(&format!("read_directory: {e}")),
            },
        ));
        // A large file's bytes are in a mapping of their own
        // (`source::whole_file`), outside the heap the allocator counts;
        // they are held from the read's start to its end.
        let size = std::fs::metadata(csv).map_or(0, |m| m.len());
        if size >= whole_file::MAPPED_FROM {
            if let Some(last) = passes.dirsync.last_mut() {
                last.peak += size as usize;
            }
        }
        println!(
            "iteration {}: bare {}, owned strings {}, read_directory {} (load {})",
            n + 1,
            ms(passes.bare[n].took),
            ms(passes.owned[n].took),
            ms(passes.dirsync[n].took),
            load_average()
        );
    }
    passes
}

fn print_reads(passes: &Passes, size: u64) {
    let (_, owned_median) = min_median(&times(&passes.owned));
    println!();
    println!("| reader | first run | min | median | rows/s (median) | × owned strings (median) | peak heap | × file | held at the end |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for (name, runs) in [
        ("bare `csv::ByteRecord`", &passes.bare),
        ("owned strings (`Vec<String>` per row, kept)", &passes.owned),
        ("dirsync `read_directory`", &passes.dirsync),
    ] {
        let (min, median) = min_median(&times(runs));
        let peak = runs.iter().map(|p| p.peak).max().unwrap_or(0);
        println!(
            "| {name} | {} | {} | {} | {:.0} | {:.2} | {} | {:.2} | {} |",
            ms(runs[0].took),
            ms(min),
            ms(median),
            rows() as f64 / median.as_secs_f64(),
            median.as_secs_f64() / owned_median.as_secs_f64(),
            mib(peak),
            peak as f64 / size as f64,
            mib(runs[0].held)
        );
    }
}

fn times(runs: &[Pass]) -> Vec<Duration> {
    runs.iter().map(|p| p.took).collect()
}

// ---------------------------------------------------------------------------
// The whole process: `dirsync plan` against a platform holding the CSV's records.

const TOKEN_VAR: &str = "DIRSYNC_BENCH_TOKEN";
const TOKEN: &str = "csv-read-bench-token";
const UPDATED_AT: &str = "2026-01-01T00:00:00+00:00";

/// A Relay-style global id, as long as the platform's (base64 of `Type:uuid`).
fn global_id(kind: &str, n: usize) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .encode(format!("{kind}:{n:08x}-0000-4000-8000-{n:012x}"))
}

/// Just enough of the platform's GraphQL API for a plan: the preflight,
/// the roles and the two lists (cursors are offsets), answered from the
/// generator, so what it holds costs this process nothing.
mod platform {
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::post;
    use axum::{Json, Router};
    use serde_json::{json, Value};

    use super::{customer_key, customer_name, customers, global_id, person, rows};
    use super::{TIERS, TOKEN, UPDATED_AT};

    fn role(name: &str) -> Value {
        json!({ "id": global_id("Role", usize::from(name == "Admin")), "name": name })
    }

    fn customer(c: usize) -> Value {
        json!({
            "id": global_id("Customer", c),
            "externalId": customer_key(c),
            "name": customer_name(c),
            "description": "",
            "labels": ["dirsync", TIERS[c % 3]],
            "updatedAt": UPDATED_AT,
        })
    }

    fn user(i: usize) -> Value {
        let p = person(i);
        json!({
            "id": global_id("User", i),
            "externalId": p.employee_id,
            "email": p.email,
            "name": p.name,
            "phone": p.phone,
            "role": role(p.role.1),
            "customer": { "id": global_id("Customer", p.customer), "externalId": customer_key(p.customer) },
            "updatedAt": UPDATED_AT,
        })
    }

    /// One page of `total` nodes: from `offset`, or after the `after`
    /// cursor (the client has asked both ways).
    fn page(variables: &Value, total: usize, node: fn(usize) -> Value) -> Value {
        let after = variables["after"]
            .as_str()
            .and_then(|a| a.parse::<usize>().ok())
            .map(|a| a + 1);
        let offset = variables["offset"].as_u64().map(|o| o as usize);
        let start = offset.or(after).unwrap_or(0);
        let first = variables["first"].as_u64().unwrap_or(100) as usize;
        let end = (start + first).min(total);
        json!({
            "nodes": (start..end).map(node).collect::<Vec<_>>(),
            "pageInfo": { "hasNextPage": end < total, "endCursor": end.checked_sub(1).map(|e| e.to_string()) },
            "totalCount": total,
        })
    }

    async fn api(headers: HeaderMap, Json(body): Json<Value>) -> Result<Json<Value>, StatusCode> {
        let bearer = format!("Bearer {TOKEN}");
        if headers.get("authorization").and_then(|h| h.to_str().ok()) != Some(bearer.as_str()) {
            return Err(StatusCode::UNAUTHORIZED);
        }
        let variables = &body["variables"];
        let data = match body["operationName"].as_str() {
            Some("AuthenticatedUser") => json!({ "authenticatedUser": {
                "id": global_id("User", usize::MAX >> 8), "email": "owner@vendor.example",
                "name": "Owner", "customer": null } }),
            Some("CustomerRoles") => json!({ "customerRoles": [role("Admin"), role("Member")] }),
            Some("ListCustomers") => json!({ "customers": page(variables, customers(), customer) }),
            Some("ListCustomerUsers") => json!({ "users": page(variables, rows(), user) }),
            other => {
                eprintln!("csv_read platform: unexpected operation {other:?}");
                return Err(StatusCode::BAD_REQUEST);
            }
        };
        Ok(Json(json!({ "data": data })))
    }

    pub fn router() -> Router {
        Router::new().route("/api", post(api))
    }
}

/// What one `dirsync plan` took.
struct PlanRun {
    took: Duration,
    max_rss: u64,
    /// The child's resident set, sampled every `SAMPLE` (for where the peak is).
    rss: Vec<u64>,
    exit: Option<i32>,
}

const SAMPLE: Duration = Duration::from_millis(500);

/// `VmRSS` of a running process, in bytes.
fn resident_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn plan_run(dir: &Path) -> PlanRun {
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    runtime.spawn(async move { axum::serve(listener, platform::router()).await });
    let config = format!(
        "platform:\n  url: http://{addr}\n  token: {{ env: {TOKEN_VAR} }}\n  requests_per_second: 100000\nsource:\n  csv:\n    users_file: users.csv\n{MAPPING}"
    );
    std::fs::write(dir.join("plan.yaml"), config).expect("write the config");
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_dirsync"))
        .args(["plan", "-c", "plan.yaml"])
        .current_dir(dir)
        .env(TOKEN_VAR, TOKEN)
        .env("DIRSYNC_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("run dirsync");
    let mut rss = Vec::new();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for dirsync") {
            break status;
        }
        rss.extend(resident_bytes(child.id()));
        std::thread::sleep(SAMPLE);
    };
    let took = started.elapsed();
    runtime.shutdown_background();
    PlanRun {
        took,
        max_rss: children_max_rss_bytes().unwrap_or(0),
        rss,
        exit: status.code(),
    }
}

fn print_plan(run: &PlanRun, size: u64) {
    println!();
    println!("| whole process | users / customers | file | wall time | peak RSS | × file | exit |");
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| `dirsync plan` (release binary, platform in sync) | {} / {} | {} | {} | {} | {:.2} | {} |",
        rows(),
        customers(),
        mib(size as usize),
        ms(run.took),
        mib(run.max_rss as usize),
        run.max_rss as f64 / size as f64,
        run.exit.map_or("signal".to_owned(), |c| c.to_string())
    );
    let samples: Vec<String> = run
        .rss
        .iter()
        .map(|b| format!("{:.0}", *b as f64 / (1024.0 * 1024.0)))
        .collect();
    println!(
        "resident set every {} ms (MiB): {}",
        SAMPLE.as_millis(),
        samples.join(" ")
    );
}

fn main() {
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    SMALL.store(only.iter().any(|a| a == "small"), Ordering::Relaxed);
    let parts: Vec<&String> = only.iter().filter(|a| *a != "small").collect();
    let wanted = |part: &str| parts.is_empty() || parts.iter().any(|a| *a == part);
    println!("load average at start: {}", load_average());
    let dir = tempfile::tempdir().expect("temp dir");
    let csv = dir.path().join("users.csv");
    let started = Instant::now();
    let size = write_csv(&csv).expect("write the CSV");
    println!(
        "wrote {} rows ({} customers, {}) in {}",
        rows(),
        customers(),
        mib(size as usize),
        ms(started.elapsed())
    );
    if wanted("read") {
        let text = format!(
            "platform:\n  emulator:\n    state: state/emulator.json\nsource:\n  csv:\n    users_file: users.csv\n{MAPPING}"
        );
        let config = Config::parse(&text, &dir.path().join("dirsync.yaml")).expect("config");
        for (settle, how) in [
            (
                true,
                "each pass from a settled heap (`malloc_trim` before it, untimed)",
            ),
            (false, "each pass on the heap the passes before it left"),
        ] {
            SETTLE.store(settle, Ordering::Relaxed);
            println!();
            println!("reads, {how}:");
            let passes = read_passes(&csv, &config);
            print_reads(&passes, size);
        }
    }
    if wanted("plan") {
        let run = plan_run(dir.path());
        print_plan(&run, size);
        if run.exit != Some(0) {
            fail(&format!(
                "dirsync plan exited {:?}, not 0 (in sync)",
                run.exit
            ));
        }
    }
    println!("load average at end: {}", load_average());
}
