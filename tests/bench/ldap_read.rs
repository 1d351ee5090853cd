//! `cargo bench --bench ldap_read`: time and peak heap of
//! `dirsync::source::read_directory` reading 100k users from a local slapd
//! (the test harness's server: TLS with a CA made at start, LDAPS, paged
//! searches of 500, the attribute customer strategy).
//!
//! Needs slapd and ldap-utils (`bash tests/run.sh` installs them).

#[path = "support.rs"]
mod support;

#[allow(dead_code)]
#[path = "../it/slapd.rs"]
mod slapd;

use std::time::{Duration, Instant};

use dirsync::config::Config;
use dirsync::source::read_directory;
use slapd::{bulk_users_ldif, Slapd, READER_DN, READER_PASSWORD};
use support::{
    current_bytes, load_average, mib, min_median, ms, peak_bytes, reset_peak, CountingAlloc,
};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

const USERS: usize = 100_000;
const ITERATIONS: usize = 3;

fn main() {
    println!("load average at start: {}", load_average());
    let dir = tempfile::tempdir().expect("temp dir");
    let mut ldap = Slapd::builder().tls().start();
    ldap.load_base();
    let ldif = dir.path().join("users.ldif");
    std::fs::write(&ldif, bulk_users_ldif(0, USERS)).expect("write LDIF");
    let loading = Instant::now();
    ldap.slapadd_ldif(&ldif);
    println!(
        "slapadd of {USERS} users and restart: {}",
        ms(loading.elapsed())
    );

    std::fs::write(dir.path().join("pw"), READER_PASSWORD).expect("write password");
    let yaml = format!(
        r#"platform:
  emulator:
    state: state.json
source:
  ldap:
    url: {url}
    ca_file: {ca}
    bind_dn: {READER_DN}
    bind_password: {{ file: pw }}
    page_size: 500
    users:
      base: ou=people,dc=example,dc=com
    customers:
      strategy: attribute
      base: ou=customers,dc=example,dc=com
      user_attribute: departmentNumber
      key_attribute: ou
mapping:
  customer:
    external_id: entryUUID
    name: ou
  user:
    external_id: entryUUID
    customer: customer
    email: mail
    name: cn
    phone: telephoneNumber
"#,
        url = ldap.ldaps_url(),
        ca = ldap.ca_file().display(),
    );
    let path = dir.path().join("dirsync.yaml");
    std::fs::write(&path, &yaml).expect("write config");
    let config = Config::load(&path).expect("config");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");

    let mut times: Vec<Duration> = Vec::new();
    let mut peak = 0usize;
    let mut users = 0usize;
    for i in 0..ITERATIONS {
        let before = current_bytes();
        reset_peak();
        let start = Instant::now();
        let directory = runtime.block_on(read_directory(&config)).expect("read");
        let took = start.elapsed();
        peak = peak.max(peak_bytes().saturating_sub(before));
        users = directory.users.len();
        println!("iteration {i}: {} users in {}", users, ms(took));
        times.push(took);
    }
    let (min, median) = min_median(&times);
    println!();
    println!("| users read (ou=people) | users in the directory | min | median | entries/s | peak heap during read |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| {} | {users} | {} | {} | {:.0}k | {} |",
        USERS + 6,
        ms(min),
        ms(median),
        (USERS as f64) / median.as_secs_f64() / 1000.0,
        mib(peak)
    );
    println!("load average at end: {}", load_average());
    assert!(users >= USERS, "every bulk user was read ({users})");
}
