//! The incremental read (issue 13, part 3) against the emulator over HTTP:
//! a run that plans from the stored snapshot plus the platform's changes
//! must make exactly the plan a full read would, whatever was edited on the
//! platform outside dirsync in between; a steady state costs one request.

use std::time::Duration;

use dirsync::apply::Quiet;
use dirsync::config::Config;
use dirsync::emulator::{Seed, SeedCustomer, SeedUser};
use dirsync::model::{CustomerChanges, NewCustomer, NewCustomerUser, PlatformId, UserChanges};
use dirsync::platform::PlatformClient;
use dirsync::platform_view::{FullReason, PlatformRead};
use dirsync::run::{reconcile, Connection, Mode, Reconcile};
use proptest::prelude::*;

use crate::support::*;
use crate::sync::{rows, Scenario};

const USERS: usize = 30;
const CUSTOMERS: usize = 5;

/// Deletes allowed, so that the plans compared hold deletes too.
const POLICY: &str = "  max_shrink_percent: 100\n  delete_users: { max_count: 1000, max_percent: 100 }\n  delete_customers: { enabled: true, max_count: 10, max_percent: 100 }\n";

/// The platform as `rows(USERS, CUSTOMERS)` describes it, seeded a day ago
/// (older than the read margin, as a long-lived platform's records are).
fn aged_seed() -> Seed {
    Seed {
        customers: (0..CUSTOMERS)
            .map(|c| SeedCustomer {
                name: format!("Customer {c}"),
                external_id: Some(format!("c{c}")),
                description: String::new(),
                labels: vec!["gold".to_owned()],
                system: false,
                instances: Vec::new(),
            })
            .collect(),
        users: (0..USERS)
            .map(|i| SeedUser {
                email: format!("user{i}@x.example"),
                name: format!("User {i}"),
                phone: String::new(),
                external_id: Some(format!("E{i}")),
                customer: format!("c{}", i % CUSTOMERS),
                role: "Member".to_owned(),
                marketplace: false,
            })
            .collect(),
        seeded_at: Some(chrono::Utc::now() - chrono::TimeDelta::days(1)),
        ..Seed::default()
    }
}

/// One edit made on the platform outside dirsync; indexes are taken modulo
/// what exists.
#[derive(Clone, Debug)]
enum Edit {
    RenameUser(usize),
    PhoneUser(usize),
    PromoteUser(usize),
    ReKeyUser(usize),
    DeleteUser(usize),
    /// A user without an externalId whose email is a directory user's (adoption).
    CreateLookalike(usize, usize),
    /// A managed-looking user the directory does not have.
    CreateStranger(usize, usize),
    RenameCustomer(usize),
    RelabelCustomer(usize),
    ReKeyCustomer(usize),
    DeleteCustomer(usize),
    CreateCustomer(usize),
}

impl Edit {
    fn deletes(&self) -> bool {
        matches!(self, Edit::DeleteUser(_) | Edit::DeleteCustomer(_))
    }
}

fn edit() -> impl Strategy<Value = Edit> {
    let i = 0..64usize;
    prop_oneof![
        i.clone().prop_map(Edit::RenameUser),
        i.clone().prop_map(Edit::PhoneUser),
        i.clone().prop_map(Edit::PromoteUser),
        i.clone().prop_map(Edit::ReKeyUser),
        i.clone().prop_map(Edit::DeleteUser),
        (i.clone(), i.clone()).prop_map(|(c, u)| Edit::CreateLookalike(c, u)),
        (i.clone(), i.clone()).prop_map(|(c, n)| Edit::CreateStranger(c, n)),
        i.clone().prop_map(Edit::RenameCustomer),
        i.clone().prop_map(Edit::RelabelCustomer),
        i.clone().prop_map(Edit::ReKeyCustomer),
        i.clone().prop_map(Edit::DeleteCustomer),
        i.prop_map(Edit::CreateCustomer),
    ]
}

/// Makes the edits through the API (as another tool would). An edit the
/// platform refuses (a duplicate email, a record already gone) is simply
/// not made.
async fn make(client: &PlatformClient, edits: &[Edit], round: usize) {
    for (k, e) in edits.iter().enumerate() {
        let snap = client.snapshot().await.unwrap();
        let user = |i: usize| snap.users.get(i % snap.users.len().max(1));
        let customer = |i: usize| snap.customers.get(i % snap.customers.len().max(1));
        let admin = snap
            .roles
            .iter()
            .find(|r| r.name == "Admin")
            .unwrap()
            .id
            .clone();
        let member = snap
            .roles
            .iter()
            .find(|r| r.name == "Member")
            .unwrap()
            .id
            .clone();
        let tag = format!("r{round}e{k}");
        let user_change = |id: &PlatformId, changes: UserChanges| {
            let id = id.clone();
            async move { drop(client.update_user(&id, &changes).await) }
        };
        match e {
            Edit::RenameUser(i) => {
                if let Some(u) = user(*i) {
                    let changes = UserChanges {
                        name: Some(format!("Outside {tag}")),
                        ..UserChanges::default()
                    };
                    user_change(&u.id, changes).await;
                }
            }
            Edit::PhoneUser(i) => {
                if let Some(u) = user(*i) {
                    let changes = UserChanges {
                        phone: Some("+1 555 0100".to_owned()),
                        ..UserChanges::default()
                    };
                    user_change(&u.id, changes).await;
                }
            }
            Edit::PromoteUser(i) => {
                if let Some(u) = user(*i) {
                    let changes = UserChanges {
                        role_id: Some(admin),
                        ..UserChanges::default()
                    };
                    user_change(&u.id, changes).await;
                }
            }
            Edit::ReKeyUser(i) => {
                if let Some(u) = user(*i) {
                    let changes = UserChanges {
                        external_id: Some(format!("X-{tag}")),
                        ..UserChanges::default()
                    };
                    user_change(&u.id, changes).await;
                }
            }
            Edit::DeleteUser(i) => {
                if let Some(u) = user(*i) {
                    drop(client.delete_user(&u.id).await);
                }
            }
            Edit::CreateLookalike(c, u) | Edit::CreateStranger(c, u) => {
                if let Some(c) = customer(*c) {
                    let (email, external_id) = match e {
                        Edit::CreateLookalike(..) => (format!("user{}@x.example", u % USERS), None),
                        _ => (
                            format!("stranger{tag}@x.example"),
                            Some(format!("E9{u}{k}")),
                        ),
                    };
                    let new = NewCustomerUser {
                        customer_id: c.id.clone(),
                        email,
                        role_id: member,
                        name: Some(format!("Created {tag}")),
                        phone: None,
                        external_id,
                    };
                    drop(client.create_customer_user(&new).await);
                }
            }
            Edit::RenameCustomer(i) | Edit::RelabelCustomer(i) | Edit::ReKeyCustomer(i) => {
                if let Some(c) = customer(*i) {
                    let mut changes = CustomerChanges::default();
                    match e {
                        Edit::RenameCustomer(_) => changes.name = Some(format!("Renamed {tag}")),
                        Edit::RelabelCustomer(_) => {
                            changes.labels = Some(vec!["silver".to_owned()])
                        }
                        _ => changes.external_id = Some(format!("moved-{tag}")),
                    }
                    drop(client.update_customer(&c.id, &changes).await);
                }
            }
            Edit::DeleteCustomer(i) => {
                if let Some(c) = customer(*i) {
                    drop(client.delete_customer(&c.id).await);
                }
            }
            Edit::CreateCustomer(n) => {
                let new = NewCustomer {
                    name: format!("New {tag}"),
                    description: None,
                    external_id: Some(format!("c{}", CUSTOMERS + n % 3)),
                    labels: None,
                };
                drop(client.create_customer(&new).await);
            }
        }
    }
}

/// Changes to the directory between runs: a row dropped or renamed.
fn edit_directory(s: &Scenario, changes: &[(usize, bool)]) {
    let mut rows = rows(USERS, CUSTOMERS);
    for (i, drop_it) in changes {
        let i = i % rows.len();
        if *drop_it {
            rows.remove(i);
        } else {
            rows[i] = rows[i].replacen(",User ", ",Renamed User ", 1);
        }
    }
    s.write_users(&rows);
}

async fn run(config: &Config, mode: Mode) -> Reconcile {
    let connection = Connection::open(&config.platform).await.unwrap();
    let out = reconcile(config, &connection, mode, &Quiet).await.unwrap();
    connection.close().await.unwrap();
    out
}

/// The plan from the store plus the changes, and the plan from a full read,
/// made one after the other with nothing in between.
async fn both_plans(config: &Config) -> (Reconcile, Reconcile) {
    let incremental = run(config, Mode::PlanAllowingDeletes).await;
    let mut full = config.clone();
    full.full_every = Duration::ZERO;
    let full = run(&full, Mode::PlanAllowingDeletes).await;
    assert!(
        matches!(
            full.platform_read,
            Some(PlatformRead::Full {
                reason: FullReason::Due { .. }
            })
        ),
        "{:?}",
        full.platform_read
    );
    (incremental, full)
}

fn check_round(edits: &[Edit], incremental: &Reconcile, full: &Reconcile) {
    assert_eq!(
        incremental.plan, full.plan,
        "the incremental plan differs from the full one after {edits:?} ({:?})",
        incremental.platform_read
    );
    if !edits.iter().any(Edit::deletes) {
        assert!(
            matches!(
                incremental.platform_read,
                Some(PlatformRead::Incremental { .. })
            ),
            "without outside deletes the counts add up, so the read is incremental: {:?}",
            incremental.platform_read
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, failure_persistence: None, ..ProptestConfig::default() })]

    /// Two rounds: outside edits, both plans compared; a sync (which builds
    /// on the store and writes to it, its deletes included); directory and
    /// outside edits again, both plans compared.
    #[test]
    fn an_incremental_plan_equals_the_full_plan_after_random_outside_edits(
        first in proptest::collection::vec(edit(), 0..6),
        second in proptest::collection::vec(edit(), 0..6),
        directory in proptest::collection::vec((0..64usize, any::<bool>()), 0..4),
    ) {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let s = Scenario::new(Some(aged_seed())).await;
            s.write_users(&rows(USERS, CUSTOMERS));
            let config = s.config(POLICY);
            let apply = Mode::Apply { allow_deletes: true };
            let first_sync = run(&config, apply).await;
            assert!(matches!(
                first_sync.platform_read,
                Some(PlatformRead::Full { reason: FullReason::NoSnapshot })
            ));
            let client = client_for(&s.emu);

            make(&client, &first, 1).await;
            let (incremental, full) = both_plans(&config).await;
            check_round(&first, &incremental, &full);

            run(&config, apply).await;
            edit_directory(&s, &directory);
            make(&client, &second, 2).await;
            let (incremental, full) = both_plans(&config).await;
            check_round(&second, &incremental, &full);
        });
    }
}

/// Measured: a steady-state run read every page (ceil(C/100) + ceil(U/100)
/// requests, 1,052 at 5,000 / 100,000). From the store it is one request.
#[tokio::test]
async fn a_steady_state_run_from_the_store_costs_one_request() {
    let s = Scenario::new(Some(aged_seed())).await;
    s.write_users(&rows(USERS, CUSTOMERS));
    let config = s.config(POLICY);
    let apply = Mode::Apply {
        allow_deletes: false,
    };
    let first = run(&config, apply).await;
    assert!(
        matches!(first.platform_read, Some(PlatformRead::Full { .. })),
        "{:?}",
        first.platform_read
    );
    s.emu.handle.reset_stats();
    let steady = run(&config, apply).await;
    assert!(steady.plan.operations.is_empty(), "{:?}", steady.plan);
    assert!(
        matches!(
            steady.platform_read,
            Some(PlatformRead::Incremental {
                changed_customers: 0,
                changed_users: 0,
                ..
            })
        ),
        "{:?}",
        steady.platform_read
    );
    assert_eq!(steady.requests.sent, 1);
    assert_eq!(s.emu.handle.stats().requests, 1);
}

/// An outside delete leaves no `updatedAt` to find: the counts give it
/// away, and the run reads in full and plans the re-create.
#[tokio::test]
async fn an_outside_delete_is_found_by_the_counts_and_read_in_full() {
    let s = Scenario::new(Some(aged_seed())).await;
    s.write_users(&rows(USERS, CUSTOMERS));
    let config = s.config(POLICY);
    let apply = Mode::Apply {
        allow_deletes: false,
    };
    run(&config, apply).await;
    let client = client_for(&s.emu);
    let victim = client.snapshot().await.unwrap().users[3].clone();
    client.delete_user(&victim.id).await.unwrap();
    let plan = run(&config, Mode::Plan).await;
    match &plan.platform_read {
        Some(PlatformRead::Full {
            reason: FullReason::CountsDiffer(m),
        }) => assert_eq!((m.list, m.platform, m.merged), ("users", 29, 30)),
        other => panic!("{other:?}"),
    }
    assert_eq!(plan.plan.operations.len(), 1, "{:?}", plan.plan);
}

/// A `plan` reads the store but leaves none behind.
#[tokio::test]
async fn a_plan_writes_no_store() {
    let s = Scenario::new(Some(aged_seed())).await;
    s.write_users(&rows(USERS, CUSTOMERS));
    let config = s.config(POLICY);
    run(&config, Mode::Plan).await;
    assert!(!config.state_dir.join("dirsync.sqlite3").exists());
}

/// A platform that refuses the incremental read's document (here: it
/// carries five operations and the emulator takes four) is read in full,
/// with a warning; the run does not fail.
#[tokio::test]
async fn an_incremental_read_the_platform_refuses_falls_back_to_a_full_read() {
    let s = Scenario::new(Some(aged_seed())).await;
    s.write_users(&rows(USERS, CUSTOMERS));
    let config = s.config(POLICY);
    run(
        &config,
        Mode::Apply {
            allow_deletes: false,
        },
    )
    .await;
    s.emu.handle.set_faults(dirsync::emulator::Faults {
        max_root_fields: Some(4),
        ..dirsync::emulator::Faults::default()
    });
    let (logs, _guard) = capture_logs();
    let plan = run(&config, Mode::Plan).await;
    match &plan.platform_read {
        Some(PlatformRead::Full {
            reason: FullReason::ChangesRefused { error },
        }) => assert!(error.contains("HTTP 400"), "{error}"),
        other => panic!("{other:?}"),
    }
    assert!(plan.plan.is_empty(), "{:?}", plan.plan);
    assert!(
        logs.text().contains("did not answer the incremental read"),
        "{}",
        logs.text()
    );
}
