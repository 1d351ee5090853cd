//! `cargo bench --bench plan`: time and peak heap of `dirsync::plan::plan` on
//! 100k users in 5k customers and 1M users in 50k customers.
//!
//! The directory and the snapshot are built in memory so that the plan has a
//! realistic mix: per 200 users, 196 unchanged, 2 updated (phone, role),
//! 1 created, 1 deleted (half of the deleted users sit in customers that
//! leave the directory); per 100 customers, 1 updated (labels); plus 0.5%
//! new customers (holding half the created users) and 0.5% customers that
//! left (customer deletes enabled). Each size runs twice: externalIds in
//! hire order, and externalIds unrelated to it (see `Order`).

#[path = "support.rs"]
mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use dirsync::config::{Budget, Policy, RoleTable};
use dirsync::directory::{DesiredCustomer, DesiredUser, Directory, Origin, UserParts, Users};
use dirsync::model::{
    CustomerHoldings, PlatformCustomer, PlatformId, PlatformUser, Role, Snapshot,
};
use dirsync::plan::{plan, Plan};
use support::{
    current_bytes, load_average, mib, min_median, ms, peak_bytes, reset_peak, CountingAlloc,
};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

const TIERS: [&str; 3] = ["gold", "silver", "bronze"];
const FIRST: [&str; 16] = [
    "Ada", "Alan", "Barbara", "Charles", "Dennis", "Edsger", "Frances", "Grace", "John", "Ken",
    "Leslie", "Margaret", "Niklaus", "Radia", "Shafi", "Tony",
];
const LAST: [&str; 16] = [
    "Allen",
    "Backus",
    "Babbage",
    "Dijkstra",
    "Goldwasser",
    "Hamilton",
    "Hoare",
    "Hopper",
    "Knuth",
    "Lamport",
    "Liskov",
    "Lovelace",
    "Perlman",
    "Ritchie",
    "Turing",
    "Wirth",
];

/// How the "hire order" (CSV row order, the platform's creation order, and
/// so the order in which records sit in memory) relates to externalIds.
/// Emails and platform ids are unrelated to it either way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Order {
    /// ExternalIds grow with hire order (`E0000001`, `E0000002`, ...).
    ExternalId,
    /// ExternalIds unrelated to hire order (GUIDs, ids from another system).
    Shuffled,
}

fn roles() -> Vec<Role> {
    ["Admin", "Member", "Marketplace Admin", "Marketplace User"]
        .iter()
        .enumerate()
        .map(|(i, name)| Role {
            id: PlatformId::from(format!("Q3VzdG9tZXJSb2xlOj{i:031x}")),
            name: (*name).to_owned(),
        })
        .collect()
}

fn role_table() -> RoleTable {
    RoleTable {
        map: [
            ("admin", "Admin"),
            ("manager", "Admin"),
            ("staff", "Member"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
        default: "Member".to_owned(),
    }
}

fn policy() -> Policy {
    Policy {
        delete_customers: Some(Budget {
            max_count: 2,
            max_percent: 2.0,
        }),
        ..Policy::default()
    }
}

/// A deterministic 64-bit mix (splitmix64), for ids and shuffles.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The shape of a Relay global id (base64 of `Customer:<uuid>`): a common
/// prefix, then 44 random-looking characters.
fn global_id(prefix: &str, key: u64) -> PlatformId {
    let (a, b, c) = (mix(key), mix(key ^ 0x5555), mix(key ^ 0xaaaa));
    PlatformId::from(format!(
        "{prefix}{a:016x}{b:016x}{:012x}",
        c & 0xffff_ffff_ffff
    ))
}

fn customer_id(key: &str) -> PlatformId {
    let h = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    global_id("Q3VzdG9tZXI6", h)
}

fn user_id(i: usize) -> PlatformId {
    global_id("VXNlcjo", i as u64)
}

/// A deterministic permutation.
fn shuffle<T>(items: &mut [T], seed: u64) {
    for i in (1..items.len()).rev() {
        let j = (mix(seed ^ i as u64) % (i as u64 + 1)) as usize;
        items.swap(i, j);
    }
}

fn labels(tier: &str) -> BTreeSet<String> {
    ["dirsync", tier].iter().map(|l| (*l).to_owned()).collect()
}

fn origin(file: &std::sync::Arc<Path>, line: u64) -> Origin {
    Origin::Line {
        file: file.clone(),
        line,
    }
}

/// Counts of what the inputs should make the plan do.
#[derive(Default, Debug)]
struct Expected {
    update_customers: usize,
    create_customers: usize,
    delete_customers: usize,
    update_users: usize,
    create_users: usize,
    delete_users: usize,
}

/// A directory and a snapshot for `users` users in `customers` customers.
fn inputs(customers: usize, users: usize, order: Order) -> (Directory, Snapshot, Expected) {
    // Shared as the CSV source and the platform client share them.
    let file: std::sync::Arc<Path> = std::sync::Arc::from(Path::new("/srv/hr/export/users.csv"));
    let roles = roles();
    let shared_roles: Vec<std::sync::Arc<Role>> =
        roles.iter().cloned().map(std::sync::Arc::new).collect();
    let mut dir = Directory::default();
    let mut snap = Snapshot {
        roles: roles.clone(),
        ..Snapshot::default()
    };
    let mut want = Expected::default();

    // Customers: base ones on both sides, new ones only in the directory,
    // gone ones only on the platform.
    let mut line = 2u64;
    let extra = (customers / 200).max(1);
    // Records are generated (and so allocated) in "hire order": the CSV row
    // order and the platform's creation order. With `Order::Shuffled` that
    // order has nothing to do with the externalId order.
    let permutation = |n: usize, seed: u64| {
        let mut v: Vec<usize> = (0..n).collect();
        if order == Order::Shuffled {
            shuffle(&mut v, seed);
        }
        v
    };
    for j in permutation(customers, 1) {
        let x = format!("cust-{j:06}");
        let name = format!("Customer {j:06} Ltd");
        let tier = TIERS[j % 3];
        let changed = j % 100 == 0;
        if changed {
            want.update_customers += 1;
        }
        dir.customers.insert(
            x.clone(),
            DesiredCustomer {
                external_id: x.clone(),
                name: name.clone(),
                description: None,
                labels: Some(labels(tier)),
                origin: origin(&file, line + j as u64),
            },
        );
        snap.customers.push(PlatformCustomer {
            id: customer_id(&x),
            external_id: Some(x),
            name,
            description: String::new(),
            labels: labels(if changed { "trial" } else { tier })
                .into_iter()
                .collect(),
            updated_at: None,
        });
    }
    for k in 0..extra {
        let x = format!("cust-new-{k:06}");
        dir.customers.insert(
            x.clone(),
            DesiredCustomer {
                external_id: x.clone(),
                name: format!("New Customer {k:06}"),
                description: None,
                labels: Some(labels("bronze")),
                origin: origin(&file, line),
            },
        );
        want.create_customers += 1;
        let x = format!("cust-old-{k:06}");
        snap.customers.push(PlatformCustomer {
            id: customer_id(&x),
            name: format!("Old Customer {k:06}"),
            external_id: Some(x),
            description: String::new(),
            labels: vec!["dirsync".to_owned(), "bronze".to_owned()],
            updated_at: None,
        });
        want.delete_customers += 1;
    }

    // Each user's customer id is its customer's, shared, as a read shares them.
    let ids: std::collections::HashMap<String, PlatformId> = snap
        .customers
        .iter()
        .filter_map(|c| Some((c.external_id.clone()?, c.id.clone())))
        .collect();
    let mut dir_users = Vec::with_capacity(users);
    for i in permutation(users, 2) {
        line += 1;
        let x = format!("E{i:07}");
        let class = i % 200;
        let round = i / 200;
        let home = i % customers;
        let customer = match class {
            198 if round % 2 == 0 => format!("cust-new-{:06}", (round / 2) % extra),
            199 if round % 2 == 0 => format!("cust-old-{:06}", (round / 2) % extra),
            _ => format!("cust-{home:06}"),
        };
        let h = mix(i as u64);
        let (first, last) = (FIRST[(h % 16) as usize], LAST[((h >> 8) % 16) as usize]);
        let email = format!(
            "{}.{}{i}@{customer}.example",
            first.to_lowercase(),
            last.to_lowercase()
        );
        let name = format!("{first} {last}");
        let phone = format!("+1 555 {:07}", i % 10_000_000);
        let role = if i % 10 == 0 { "Admin" } else { "Member" };
        let desired = DesiredUser::new(UserParts {
            external_id: &x,
            customer_external_id: customer.as_str().into(),
            email: &email,
            name: Some(&name),
            phone: Some(&phone),
            role: Some(role.into()),
            origin: origin(&file, line),
        });
        let (in_dir, on_platform) = match class {
            198 => (true, false),
            199 => (false, true),
            _ => (true, true),
        };
        match class {
            196 | 197 => want.update_users += 1,
            198 => want.create_users += 1,
            199 if round % 2 == 1 => want.delete_users += 1,
            _ => {}
        }
        if on_platform {
            let platform_role = match (class, role) {
                (197, "Admin") => "Member",
                (197, _) => "Admin",
                _ => role,
            };
            snap.users.push(PlatformUser {
                id: user_id(i),
                external_id: Some(x.clone()),
                email,
                name,
                phone: if class == 196 {
                    format!("+44 20 {:07}", i % 10_000_000)
                } else {
                    phone
                },
                role: shared_roles
                    .iter()
                    .find(|r| r.name == platform_role)
                    .cloned()
                    .expect("role"),
                customer_id: ids
                    .get(customer.as_str())
                    .cloned()
                    .unwrap_or_else(|| customer_id(&customer)),
                customer_external_id: Some(customer),
                updated_at: None,
            });
        }
        if in_dir {
            dir_users.push(desired);
        }
    }
    dir.users = Users::from_distinct(dir_users);
    // What each leaving customer holds, as `run` reads it for the customers
    // a plan would delete (without it, no customer is deleted).
    let leaving: std::collections::HashSet<&PlatformId> = snap
        .customers
        .iter()
        .filter(|c| {
            c.external_id.is_none()
                || !dir
                    .customers
                    .contains_key(c.external_id.as_deref().unwrap_or_default())
        })
        .map(|c| &c.id)
        .collect();
    let mut holdings = std::collections::BTreeMap::new();
    for id in &leaving {
        holdings.insert((*id).clone(), CustomerHoldings::default());
    }
    for u in &snap.users {
        if let Some(h) = holdings.get_mut(&u.customer_id) {
            h.users += 1;
        }
    }
    snap.holdings = holdings;
    (dir, snap, want)
}

struct Row {
    label: String,
    dir_users: usize,
    snap_users: usize,
    input_bytes: usize,
    operations: usize,
    first: Duration,
    min: Duration,
    median: Duration,
    iterations: usize,
    peak: usize,
    retained: usize,
}

fn check(plan: &Plan, want: &Expected) -> Result<(), String> {
    let counts = plan.counts();
    let got = |kind: &'static str, action: &'static str| {
        counts.get(&(kind, action)).copied().unwrap_or(0)
    };
    let pairs = [
        ("customer", "update", want.update_customers),
        ("customer", "create", want.create_customers),
        ("customer", "delete", want.delete_customers),
        ("user", "update", want.update_users),
        ("user", "create", want.create_users),
        ("user", "delete", want.delete_users),
    ];
    for (kind, action, n) in pairs {
        if got(kind, action) != n {
            return Err(format!(
                "{kind} {action}: expected {n}, the plan has {} (counts: {counts:?})",
                got(kind, action)
            ));
        }
    }
    if !plan.conflicts.is_empty() || !plan.drift.is_empty() {
        return Err(format!(
            "unexpected conflicts ({}) or drift ({})",
            plan.conflicts.len(),
            plan.drift.len()
        ));
    }
    Ok(())
}

fn run(label: &str, customers: usize, users: usize, order: Order, iterations: usize) -> Row {
    let before = current_bytes();
    let built = Instant::now();
    let (dir, snap, want) = inputs(customers, users, order);
    let input_bytes = current_bytes() - before;
    let built = built.elapsed();
    let policy = policy();
    let roles = role_table();
    println!(
        "{label}: inputs built in {} ({} directory users, {} platform users, {} + {} customers, {} on the heap)",
        ms(built),
        dir.users.len(),
        snap.users.len(),
        dir.customers.len(),
        snap.customers.len(),
        mib(input_bytes)
    );

    let mut times = Vec::with_capacity(iterations);
    let mut peak = 0;
    let mut retained = 0;
    let mut operations = 0;
    for n in 0..iterations {
        let base = current_bytes();
        reset_peak();
        let started = Instant::now();
        let p = plan(&dir, &snap, &policy, &roles).expect("plan");
        let took = started.elapsed();
        let top = peak_bytes();
        peak = peak.max(top - base);
        retained = current_bytes() - base;
        if n == 0 {
            if let Err(e) = check(&p, &want) {
                eprintln!("{label}: the plan is not what the inputs call for: {e}");
                std::process::exit(1);
            }
            operations = p.operations.len();
            println!("{label}: plan counts {:?}", p.counts());
        }
        println!("{label}: iteration {} took {}", n + 1, ms(took));
        times.push(took);
        drop(p);
    }
    let (min, median) = min_median(&times);
    let (dir_users, snap_users) = (dir.users.len(), snap.users.len());
    let before_drop = current_bytes();
    drop(snap);
    let snapshot_bytes = before_drop - current_bytes();
    println!(
        "{label}: of the inputs, the snapshot holds {} and the directory {}",
        mib(snapshot_bytes),
        mib(input_bytes - snapshot_bytes)
    );
    drop(dir);
    Row {
        label: label.to_owned(),
        dir_users,
        snap_users,
        input_bytes,
        operations,
        first: times[0],
        min,
        median,
        iterations,
        peak,
        retained,
    }
}

fn main() {
    // `cargo bench --bench plan -- 1M` runs only the cases whose label holds
    // "1M"; `-- small` (CI) the small case, which checks the plan all the same.
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    println!("load average at start: {}", load_average());
    let cases = [
        (
            "small: 10k users / 500 customers, shuffled",
            500,
            10_000,
            Order::Shuffled,
            3,
        ),
        (
            "100k users / 5k customers, externalId order",
            5_000,
            100_000,
            Order::ExternalId,
            10,
        ),
        (
            "100k users / 5k customers, shuffled",
            5_000,
            100_000,
            Order::Shuffled,
            10,
        ),
        (
            "1M users / 50k customers, externalId order",
            50_000,
            1_000_000,
            Order::ExternalId,
            5,
        ),
        (
            "1M users / 50k customers, shuffled",
            50_000,
            1_000_000,
            Order::Shuffled,
            4,
        ),
    ];
    let mut rows = Vec::new();
    for (label, customers, users, order, iterations) in cases {
        if filter.as_deref().is_some_and(|f| !label.contains(f)) {
            continue;
        }
        rows.push(run(label, customers, users, order, iterations));
    }

    println!();
    println!("| case | dir users | platform users | operations | inputs (heap) | first run | min | median | iterations | peak heap during plan | plan retained |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.label,
            r.dir_users,
            r.snap_users,
            r.operations,
            mib(r.input_bytes),
            ms(r.first),
            ms(r.min),
            ms(r.median),
            r.iterations,
            mib(r.peak),
            mib(r.retained)
        );
    }
    println!("load average at end: {}", load_average());
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    let two_s = Duration::from_secs(2);
    println!();
    for big in rows.iter().filter(|r| r.dir_users >= 900_000) {
        println!(
            "goal, 1M users planned in < 2 s ({}): median {} ({}), first run {} ({})",
            big.label,
            ms(big.median),
            verdict(big.median < two_s),
            ms(big.first),
            verdict(big.first < two_s)
        );
        println!(
            "goal, < 1 GiB ({}): peak heap during planning {} ({}); inputs plus that peak {} ({})",
            big.label,
            mib(big.peak),
            verdict(big.peak < 1 << 30),
            mib(big.peak + big.input_bytes),
            verdict(big.peak + big.input_bytes < 1 << 30)
        );
    }
}
