//! End-to-end reconciles from a real CSV file into the emulator over HTTP on
//! 127.0.0.1, counting what was sent through the emulator's statistics.

use std::path::PathBuf;

use dirsync::apply::{Outcome, Quiet};
use dirsync::config::Config;
use dirsync::emulator::{Faults, RunningEmulator, Seed, SeedCustomer, SeedOrgUser, SeedUser};
use dirsync::guard::BlockReason;
use dirsync::plan::{DriftKind, Operation};
use dirsync::run::{reconcile, Connection, Mode, Reconcile};

use crate::support::*;

const HEADER: &str = "employee_id,email,full_name,phone,role,customer_id,customer_name,tier";

/// A temp folder with a token file, a users.csv and a config pointing at an emulator.
pub struct Scenario {
    pub dir: tempfile::TempDir,
    pub emu: RunningEmulator,
}

/// `n` users spread over customers c0..c{customers}: `E{i},user{i}@x.example,User {i},,staff,c{i%k},Customer {i%k},gold`.
pub fn rows(n: usize, customers: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let c = i % customers;
            format!("E{i},user{i}@x.example,User {i},,staff,c{c},Customer {c},gold")
        })
        .collect()
}

impl Scenario {
    pub async fn new(seed: Option<Seed>) -> Scenario {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), TOKEN).unwrap();
        Scenario {
            emu: start_emulator(seed).await,
            dir,
        }
    }

    pub fn write_users(&self, rows: &[String]) {
        let mut text = format!("{HEADER}\n");
        for r in rows {
            text.push_str(r);
            text.push('\n');
        }
        std::fs::write(self.dir.path().join("users.csv"), text).unwrap();
    }

    pub fn config_text(&self, policy: &str) -> String {
        let url = self.emu.url();
        format!(
            r#"platform:
  url: {url}
  token: {{ file: token }}
  requests_per_second: 1000
source:
  csv:
    users_file: users.csv
mapping:
  customer:
    external_id: customer_id
    name: customer_name
    labels: [tier]
  user:
    external_id: employee_id
    customer: customer_id
    email: email
    name: full_name
    phone: phone
    role: role
  roles:
    map: {{ admin: Admin, staff: Member }}
    default: Member
policy:
{policy}"#
        )
    }

    pub fn config(&self, policy: &str) -> Config {
        let path: PathBuf = self.dir.path().join("dirsync.yaml");
        std::fs::write(&path, self.config_text(policy)).unwrap();
        Config::load(&path).unwrap()
    }

    pub async fn run(&self, policy: &str, mode: Mode) -> Reconcile {
        reconcile_config(&self.config(policy), mode, &Quiet)
            .await
            .unwrap()
    }

    pub async fn sync(&self, policy: &str) -> Reconcile {
        self.run(
            policy,
            Mode::Apply {
                allow_deletes: false,
            },
        )
        .await
    }

    pub fn mutations(&self) -> u64 {
        self.emu.handle.stats().mutations
    }
}

/// Apply, without --allow-deletes.
const APPLY: Mode = Mode::Apply {
    allow_deletes: false,
};

/// One reconcile of `config` over a fresh connection.
async fn reconcile_config(
    config: &Config,
    mode: Mode,
    progress: &dyn dirsync::apply::Progress,
) -> Result<Reconcile, dirsync::run::RunError> {
    let connection = Connection::open(&config.platform).await.unwrap();
    reconcile(config, &connection, mode, progress).await
}

const DEFAULT_POLICY: &str = "  apply_concurrency: 4\n";

fn all_applied(r: &Reconcile) {
    let report = r.report.as_ref().expect("applied");
    for op in &report.operations {
        assert!(op.outcome.succeeded(), "{op:?}");
    }
}

#[tokio::test]
async fn create_from_empty_then_a_steady_state_run_sends_no_mutation() {
    let s = Scenario::new(None).await;
    s.write_users(&rows(30, 3));
    let r = s.sync(DEFAULT_POLICY).await;
    all_applied(&r);
    assert_eq!(r.plan.operations.len(), 33);
    assert_eq!(s.mutations(), 33);
    let state = s.emu.handle.state();
    let managed: Vec<_> = state
        .users
        .values()
        .filter(|u| u.external_id.is_some() && u.customer_id.is_some())
        .collect();
    assert_eq!(managed.len(), 30);
    assert!(state
        .customers
        .values()
        .any(|c| c.external_id.as_deref() == Some("c1") && c.labels == ["gold"]));

    s.emu.handle.reset_stats();
    let again = s.sync(DEFAULT_POLICY).await;
    assert!(again.plan.is_empty(), "{:?}", again.plan.operations);
    let stats = s.emu.handle.stats();
    assert_eq!(stats.mutations, 0);
    // The stored snapshot and the changes since (the first sync's own
    // creates, a page of each), the counts and the roles: one request.
    assert_eq!(stats.requests, 1);
    assert_eq!(again.requests.sent, 1);
}

#[tokio::test]
async fn changed_fields_become_updates_of_only_those_fields() {
    let s = Scenario::new(None).await;
    let mut users = rows(6, 2);
    s.write_users(&users);
    s.sync(DEFAULT_POLICY).await;
    users[0] = "E0,user0@x.example,User Zero,+1 555,admin,c0,Customer 0,gold".to_owned();
    // Every row of c1 carries the new name and label (rows that disagree would refuse the file).
    for (i, row) in users.iter_mut().enumerate().filter(|(i, _)| i % 2 == 1) {
        *row = format!("E{i},user{i}@x.example,User {i},,staff,c1,Customer 1 Renamed,Silver");
    }
    users[1] = users[1].replace("user1@x.example", "USER1@X.EXAMPLE");
    s.write_users(&users);
    s.emu.handle.reset_stats();
    let r = s.sync(DEFAULT_POLICY).await;
    all_applied(&r);
    let text = dirsync::plan::render::text(&r.plan);
    assert!(text.contains("  ~ user E0  user0@x.example\n      name: \"User 0\" -> \"User Zero\"\n      phone: \"\" -> \"+1 555\"\n      role: \"Member\" -> \"Admin\"\n"), "{text}");
    assert!(text.contains("  ~ customer c1\n      name: \"Customer 1\" -> \"Customer 1 Renamed\"\n      labels: \"gold\" -> \"silver\"\n"), "{text}");
    // E1's email differs only by case: no change.
    let stats = s.emu.handle.stats();
    assert_eq!(
        (
            stats.operation("updateUser"),
            stats.operation("updateCustomer"),
            stats.mutations
        ),
        (1, 1, 2)
    );
    assert!(s.sync(DEFAULT_POLICY).await.plan.is_empty());
}

#[tokio::test]
async fn deletes_within_the_budget_are_applied() {
    let s = Scenario::new(None).await;
    let users = rows(20, 2);
    s.write_users(&users);
    s.sync(DEFAULT_POLICY).await;
    s.write_users(&users[1..]);
    let r = s.sync(DEFAULT_POLICY).await; // 1 of 20 = 5% < 10%
    assert!(r.blocked.is_empty());
    all_applied(&r);
    assert_eq!(s.emu.handle.stats().operation("deleteUser"), 1);
}

#[tokio::test]
async fn a_delete_budget_blocks_at_its_limit_with_zero_mutations_and_not_just_below() {
    let s = Scenario::new(None).await;
    let users = rows(40, 2);
    s.write_users(&users);
    s.sync(DEFAULT_POLICY).await;
    let policy = "  delete_users: { max_count: 3, max_percent: 100 }\n";

    s.write_users(&users[3..]); // 3 deletes: at the limit
    let before = s.mutations();
    let r = s.sync(policy).await;
    assert!(
        matches!(
            r.blocked[..],
            [BlockReason::UserDeleteBudget { deletes: 3, .. }]
        ),
        "{:?}",
        r.blocked
    );
    assert!(r.report.is_none());
    assert_eq!(s.mutations(), before, "a blocked plan sends zero mutations");

    s.write_users(&users[2..]); // 2 deletes: just below
    let r = s.sync(policy).await;
    assert!(r.blocked.is_empty());
    all_applied(&r);
    assert_eq!(s.mutations(), before + 2);
}

#[tokio::test]
async fn the_percent_budget_counts_the_users_of_deleted_customers() {
    let s = Scenario::new(None).await;
    let users = rows(30, 3); // 10 users per customer
    s.write_users(&users);
    s.sync(DEFAULT_POLICY).await;
    let keep: Vec<String> = users
        .iter()
        .filter(|r| !r.contains(",c2,"))
        .cloned()
        .collect();
    s.write_users(&keep);
    let policy = "  max_shrink_percent: 50\n  delete_users: { max_count: 100, max_percent: 50 }\n  delete_customers: { enabled: true, max_count: 5, max_percent: 50 }\n";
    let r = s.run(policy, Mode::Plan).await;
    assert!(
        matches!(
            r.plan.operations[..],
            [Operation::DeleteCustomer { users: 10, .. }]
        ),
        "{:?}",
        r.plan.operations
    );
    assert_eq!(r.plan.user_deletes(), 10);
    let tight = "  max_shrink_percent: 50\n  delete_users: { max_count: 10, max_percent: 50 }\n  delete_customers: { enabled: true, max_count: 5, max_percent: 50 }\n";
    let r = s.sync(tight).await;
    assert!(
        matches!(
            r.blocked[..],
            [BlockReason::UserDeleteBudget { deletes: 10, .. }]
        ),
        "{:?}",
        r.blocked
    );
    let r = s.sync(policy).await;
    all_applied(&r);
    let stats = s.emu.handle.stats();
    assert_eq!(
        (
            stats.operation("deleteCustomer"),
            stats.operation("deleteUser")
        ),
        (1, 0)
    );
    assert_eq!(
        s.emu
            .handle
            .state()
            .users
            .values()
            .filter(|u| u.customer_id.is_some())
            .count(),
        20
    );
}

#[tokio::test]
async fn an_empty_source_and_a_shrunken_source_delete_nothing() {
    let s = Scenario::new(None).await;
    let users = rows(20, 2);
    s.write_users(&users);
    s.sync(DEFAULT_POLICY).await;
    let before = s.mutations();

    s.write_users(&[]);
    let r = s
        .run(
            DEFAULT_POLICY,
            Mode::Apply {
                allow_deletes: true,
            },
        )
        .await;
    assert_eq!(r.blocked, vec![BlockReason::EmptySource]);

    s.write_users(&users[..15]); // a 25% shrink, over the default 20%, even with --allow-deletes
    let r = s
        .run(
            DEFAULT_POLICY,
            Mode::Apply {
                allow_deletes: true,
            },
        )
        .await;
    assert!(
        matches!(
            r.blocked[..],
            [BlockReason::Shrink {
                managed: 20,
                directory: 15,
                ..
            }]
        ),
        "{:?}",
        r.blocked
    );
    assert_eq!(s.mutations(), before);
}

#[tokio::test]
async fn an_email_change_is_reported_by_default_and_recreated_when_asked() {
    let s = Scenario::new(None).await;
    let mut users = rows(20, 2);
    s.write_users(&users);
    s.sync(DEFAULT_POLICY).await;
    users[4] = "E4,new.address@x.example,User 4,,staff,c0,Customer 0,gold".to_owned();
    s.write_users(&users);
    let before = s.mutations();

    let r = s.sync(DEFAULT_POLICY).await;
    assert_eq!(r.plan.drift.len(), 1);
    assert_eq!(r.plan.drift[0].what, DriftKind::EmailChanged);
    assert!(r.plan.operations.is_empty());
    assert_eq!(s.mutations(), before, "report only");

    let r = s.sync("  email_change: recreate\n").await;
    assert!(matches!(
        r.plan.operations[..],
        [Operation::RecreateUser { .. }]
    ));
    assert!(dirsync::plan::render::text(&r.plan).contains("-/+ user E4  email changed from user4@x.example to new.address@x.example: delete, then create"));
    all_applied(&r);
    let stats = s.emu.handle.stats();
    assert_eq!(
        (
            stats.operation("deleteUser"),
            stats.operation("createCustomerUser")
        ),
        (1, 21)
    );
    assert!(s
        .emu
        .handle
        .state()
        .users
        .values()
        .any(|u| u.email == "new.address@x.example" && u.external_id.as_deref() == Some("E4")));
    assert!(s.sync("  email_change: recreate\n").await.plan.is_empty());
}

#[tokio::test]
async fn a_move_to_another_customer_is_drift_then_a_recreate() {
    let s = Scenario::new(None).await;
    let mut users = rows(20, 2);
    s.write_users(&users);
    s.sync(DEFAULT_POLICY).await;
    users[0] = "E0,user0@x.example,User 0,,staff,c1,Customer 1,gold".to_owned();
    s.write_users(&users);
    let r = s.sync(DEFAULT_POLICY).await;
    assert_eq!(r.plan.drift[0].what, DriftKind::MovedCustomer);
    let r = s.sync("  email_change: recreate\n").await;
    all_applied(&r);
    assert!(s.sync("  email_change: recreate\n").await.plan.is_empty());
}

fn unmanaged_seed() -> Seed {
    Seed {
        customers: vec![
            SeedCustomer {
                name: "Customer 0".into(),
                external_id: None,
                description: String::new(),
                labels: vec!["gold".into()],
                system: false,
                instances: Vec::new(),
            },
            SeedCustomer {
                name: "Hand Made".into(),
                external_id: None,
                description: "made in the web app".into(),
                labels: vec![],
                system: false,
                instances: Vec::new(),
            },
        ],
        users: vec![
            SeedUser {
                email: "user0@x.example".into(),
                name: "User 0".into(),
                phone: String::new(),
                external_id: None,
                customer: "Customer 0".into(),
                role: "Member".into(),
                marketplace: false,
            },
            SeedUser {
                email: "hand@made.example".into(),
                name: "Hand".into(),
                phone: String::new(),
                external_id: None,
                customer: "Hand Made".into(),
                role: "Admin".into(),
                marketplace: false,
            },
            SeedUser {
                email: "3b1e-embedded".into(),
                name: "Embedded".into(),
                phone: String::new(),
                external_id: Some("mkt-9".into()),
                customer: "Hand Made".into(),
                role: "Marketplace User".into(),
                marketplace: true,
            },
        ],
        organization_users: vec![SeedOrgUser {
            email: "dev@vendor.example".into(),
            name: "Dev".into(),
            external_id: Some("E99".into()),
        }],
        seeded_at: None,
    }
}

#[tokio::test]
async fn adoption_sets_the_external_id_instead_of_creating_a_duplicate() {
    let s = Scenario::new(Some(unmanaged_seed())).await;
    s.write_users(&rows(2, 1)); // E0 in c0 "Customer 0", E1 in c0
                                // Without adoption: a conflict, nothing sent for c0 or its users.
    let r = s.sync(DEFAULT_POLICY).await;
    assert!(
        r.plan
            .conflicts
            .iter()
            .any(|c| c.external_id == "c0" && c.reason.contains("policy.adopt")),
        "{:?}",
        r.plan.conflicts
    );
    assert_eq!(s.mutations(), 0);

    let r = s.sync("  adopt: true\n").await;
    all_applied(&r);
    let stats = s.emu.handle.stats();
    assert_eq!(stats.operation("createCustomer"), 0);
    assert_eq!(stats.operation("updateCustomer"), 1);
    assert_eq!(stats.operation("updateUser"), 1, "E0 adopted by email");
    assert_eq!(stats.operation("createCustomerUser"), 1, "E1 created");
    let state = s.emu.handle.state();
    assert!(state
        .users
        .values()
        .any(|u| u.email == "user0@x.example" && u.external_id.as_deref() == Some("E0")));
    assert!(s.sync("  adopt: true\n").await.plan.is_empty());
}

#[tokio::test]
async fn unmanaged_records_are_never_touched() {
    let s = Scenario::new(Some(unmanaged_seed())).await;
    let before = s.emu.handle.state();
    // A directory that names none of the unmanaged records, with every delete allowed.
    s.write_users(&["E5,five@x.example,Five,,staff,c5,Customer 5,gold".to_owned()]);
    let policy = "  max_shrink_percent: 100\n  delete_users: { max_count: 1000, max_percent: 100 }\n  delete_customers: { enabled: true, max_count: 1000, max_percent: 100 }\n";
    let r = s.sync(policy).await;
    all_applied(&r);
    let after = s.emu.handle.state();
    for (id, c) in &before.customers {
        assert_eq!(
            after
                .customers
                .get(id)
                .map(|a| (&a.name, &a.external_id, &a.labels)),
            Some((&c.name, &c.external_id, &c.labels)),
            "customer {}",
            c.name
        );
    }
    for (id, u) in &before.users {
        let a = after
            .users
            .get(id)
            .unwrap_or_else(|| panic!("user {} was deleted", u.email));
        assert_eq!(
            (&a.email, &a.external_id, &a.name, &a.role_id),
            (&u.email, &u.external_id, &u.name, &u.role_id)
        );
    }
    assert_eq!(
        s.emu.handle.stats().mutations,
        2,
        "only c5 and E5 were created"
    );
}

/// Loses the response of the mutation that follows the n-th finished operation.
struct LoseAfter {
    handle: dirsync::emulator::EmulatorHandle,
    after: usize,
    seen: std::sync::atomic::AtomicUsize,
}

impl dirsync::apply::Progress for LoseAfter {
    fn finished(&self, _: &dirsync::apply::OperationReport) {
        if self.seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == self.after {
            self.handle.set_faults(Faults {
                lose_next_mutation_responses: 1,
                retry_after_secs: Some(0),
                ..Faults::default()
            });
        }
    }
}

#[tokio::test]
async fn a_lost_create_response_is_recovered_by_external_id_without_duplicates() {
    let s = Scenario::new(None).await;
    s.write_users(&rows(4, 2));
    // The first customer create is carried out but its answer is lost; so is
    // the first user create (the third operation, after the two customers).
    s.emu.handle.set_faults(Faults {
        lose_next_mutation_responses: 1,
        retry_after_secs: Some(0),
        ..Faults::default()
    });
    let config = s.config("  apply_concurrency: 1\n");
    let progress = LoseAfter {
        handle: s.emu.handle.clone(),
        after: 2,
        seen: Default::default(),
    };
    let r = reconcile_config(&config, APPLY, &progress).await.unwrap();
    let report = r.report.unwrap();
    let outcomes: Vec<_> = report
        .operations
        .iter()
        .map(|o| (o.operation.external_id().to_owned(), o.outcome.label()))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("c0", "alreadyDone"),
            ("c1", "applied"),
            ("E0", "alreadyDone"),
            ("E1", "applied"),
            ("E2", "applied"),
            ("E3", "applied")
        ]
        .map(|(x, o)| (x.to_owned(), o))
    );
    let state = s.emu.handle.state();
    assert_eq!(
        state
            .customers
            .values()
            .filter(|c| c.external_id.is_some())
            .count(),
        2
    );
    assert_eq!(
        state
            .users
            .values()
            .filter(|u| u.external_id.is_some())
            .count(),
        4
    );
    assert!(s.sync(DEFAULT_POLICY).await.plan.is_empty());
}

#[tokio::test]
async fn users_of_a_customer_that_failed_to_be_created_are_skipped_and_reported() {
    let s = Scenario::new(None).await;
    s.write_users(&rows(4, 2));
    let mut config = s.config("  apply_concurrency: 1\n");
    config.platform.retry.max_attempts = 1;
    let handle = s.emu.handle.clone();
    // The first customer create (c0) fails once the plan is made.
    let progress = OnStart(move || {
        handle.set_faults(Faults {
            fail_next: 1,
            retry_after_secs: Some(0),
            ..Faults::default()
        })
    });
    let r = reconcile_config(&config, APPLY, &progress).await.unwrap();
    let outcomes: Vec<_> = r
        .report
        .as_ref()
        .unwrap()
        .operations
        .iter()
        .map(|o| (o.operation.external_id().to_owned(), o.outcome.label()))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("c0", "failed"),
            ("c1", "applied"),
            ("E0", "skipped"),
            ("E1", "applied"),
            ("E2", "skipped"),
            ("E3", "applied")
        ]
        .map(|(x, o)| (x.to_owned(), o))
    );
    let text = dirsync::report::text(&r);
    assert!(
        text.contains("  ! create user E0: skipped: its customer c0 was not created or adopted"),
        "{text}"
    );
    assert_eq!(
        dirsync::report::sync_exit_code(&r),
        dirsync::report::exit::PARTIAL_FAILURE
    );
    // The next run finishes the job.
    let again = s.sync(DEFAULT_POLICY).await;
    all_applied(&again);
    assert_eq!(again.plan.operations.len(), 3);
}

#[tokio::test]
async fn two_directory_customers_with_one_name_are_a_conflict_not_a_doomed_create() {
    let s = Scenario::new(None).await;
    s.write_users(&[
        "E1,a@x.example,A,,staff,c1,Same Name,gold".to_owned(),
        "E2,b@x.example,B,,staff,c2,Same Name,gold".to_owned(),
    ]);
    let r = s.sync(DEFAULT_POLICY).await;
    let conflicts: Vec<_> = r
        .plan
        .conflicts
        .iter()
        .map(|c| (c.kind, c.external_id.as_str()))
        .collect();
    assert_eq!(conflicts, [("customer", "c2"), ("user", "E2")]);
    all_applied(&r);
    assert_eq!(s.mutations(), 2, "c1 and E1 only");
    assert_eq!(
        dirsync::report::sync_exit_code(&r),
        dirsync::report::exit::PARTIAL_FAILURE
    );
}

#[tokio::test]
async fn a_refused_row_protects_its_user_from_deletion() {
    let s = Scenario::new(None).await;
    let mut users = rows(20, 2);
    s.write_users(&users);
    s.sync(DEFAULT_POLICY).await;
    users[3] = "E3,not-an-email,User 3,,staff,c1,Customer 1,gold".to_owned();
    s.write_users(&users);
    let r = s.sync(DEFAULT_POLICY).await;
    assert!(r.plan.operations.is_empty(), "{:?}", r.plan.operations);
    assert_eq!(r.plan.refused.len(), 1);
    let shown = r.plan.refused[0].to_string();
    assert!(
        shown.ends_with("users.csv:5: email (column email): invalid email \"not-an-email\""),
        "{shown}"
    );
    assert!(r.plan.kept.iter().any(|k| k.external_id == "E3"));
}

#[tokio::test]
async fn too_many_refused_rows_refuse_the_whole_file() {
    let s = Scenario::new(None).await;
    let mut users = rows(20, 2);
    for row in users.iter_mut().take(11) {
        *row = row.replace("@x.example", "");
    }
    s.write_users(&users);
    let config = s.config(DEFAULT_POLICY);
    let err = reconcile_config(&config, APPLY, &Quiet).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("11 of 20 records were refused, more than the cap of 10"),
        "{err}"
    );
    assert_eq!(s.mutations(), 0);
}

#[tokio::test]
async fn a_duplicate_external_id_with_other_data_names_both_lines() {
    let s = Scenario::new(None).await;
    let mut users = rows(5, 1);
    users.push("E2,other@x.example,Other,,staff,c0,Customer 0,gold".to_owned());
    s.write_users(&users);
    let config = s.config(DEFAULT_POLICY);
    let err = reconcile_config(&config, Mode::Plan, &Quiet)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("user externalId \"E2\" appears twice with different data")
            && text.contains("users.csv:4 and")
            && text.contains("users.csv:7"),
        "{text}"
    );
}

/// Runs `at_start` when the apply starts (after the plan was made).
struct OnStart<F: Fn() + Sync>(F);

impl<F: Fn() + Sync> dirsync::apply::Progress for OnStart<F> {
    fn started(&self, _: usize) {
        (self.0)()
    }
    fn finished(&self, _: &dirsync::apply::OperationReport) {}
}

#[tokio::test]
async fn an_authentication_failure_stops_the_apply() {
    let s = Scenario::new(None).await;
    s.write_users(&rows(10, 2));
    let config = s.config("  apply_concurrency: 1\n");
    let handle = s.emu.handle.clone();
    let progress = OnStart(move || handle.revoke_all_tokens());
    let r = reconcile_config(&config, APPLY, &progress).await.unwrap();
    let report = r.report.as_ref().unwrap();
    assert!(
        report
            .stopped
            .as_deref()
            .unwrap()
            .starts_with("authentication failed"),
        "{:?}",
        report.stopped
    );
    assert!(matches!(
        report.operations[0].outcome,
        Outcome::Failed { .. }
    ));
    assert!(
        report.operations[1..]
            .iter()
            .all(|o| matches!(o.outcome, Outcome::Skipped { .. })),
        "{report:?}"
    );
    // One attempt, then nothing more: 401 is never retried.
    assert_eq!(s.emu.handle.stats().unauthorized, 1);
}

#[tokio::test]
async fn more_than_40_percent_failures_among_20_operations_stop_the_run() {
    // The customer exists already: the plan is 40 user creates.
    let mut seed = seed(0, 0);
    seed.customers = vec![SeedCustomer {
        name: "Customer 0".into(),
        external_id: Some("c0".into()),
        description: String::new(),
        labels: vec!["gold".into()],
        system: false,
        instances: Vec::new(),
    }];
    seed.users.clear();
    let s = Scenario::new(Some(seed)).await;
    s.write_users(&rows(40, 1));
    let mut config = s.config("  apply_concurrency: 1\n");
    config.platform.retry.max_attempts = 1;
    let handle = s.emu.handle.clone();
    // Every user create fails (503) once the plan is made.
    let progress = OnStart(move || {
        handle.set_faults(Faults {
            error_rate: 1.0,
            retry_after_secs: Some(0),
            ..Faults::default()
        })
    });
    let r = reconcile_config(&config, APPLY, &progress).await.unwrap();
    let report = r.report.as_ref().unwrap();
    let stopped = report.stopped.as_deref().unwrap();
    assert_eq!(stopped, "20 of 20 operations failed (more than 40%)");
    let skipped = report
        .operations
        .iter()
        .filter(|o| matches!(o.outcome, Outcome::Skipped { .. }))
        .count();
    assert_eq!(skipped, 20, "40 operations, 20 tried");
    assert_eq!(s.emu.handle.stats().server_errors, 20);
}

#[tokio::test]
async fn an_unknown_role_name_is_a_config_error_before_anything_is_planned() {
    let s = Scenario::new(None).await;
    s.write_users(&rows(2, 1));
    let text = s
        .config_text("  adopt: false\n")
        .replace("admin: Admin", "admin: Owner");
    let path = s.dir.path().join("dirsync.yaml");
    std::fs::write(&path, text).unwrap();
    let config = Config::load(&path).unwrap();
    let err = reconcile_config(&config, Mode::Plan, &Quiet)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "config: mapping.roles: role \"Owner\" does not exist on the platform (customer roles there: Admin, Member, Marketplace Admin, Marketplace User)"
    );
}

#[tokio::test]
async fn customers_from_their_own_file_with_a_semicolon_delimiter() {
    let s = Scenario::new(None).await;
    std::fs::write(
        s.dir.path().join("customers.csv"),
        "\u{feff}id;title;notes;tier\nacme;Acme;Rockets;Gold\nglobex;Globex;;silver\n",
    )
    .unwrap();
    std::fs::write(
        s.dir.path().join("users.csv"),
        "employee;mail;org\nu1;ada@acme.example;acme\nu2;bob@globex.example;globex\nu3;eve@nowhere.example;initech\n",
    )
    .unwrap();
    let url = s.emu.url();
    let text = format!(
        "platform:\n  url: {url}\n  token: {{ file: token }}\nsource:\n  csv:\n    users_file: users.csv\n    customers_file: customers.csv\n    delimiter: \";\"\nmapping:\n  customer:\n    external_id: id\n    name: title\n    description: notes\n    labels: [tier]\n  user:\n    external_id: employee\n    customer: org\n    email: mail\n"
    );
    let path = s.dir.path().join("dirsync.yaml");
    std::fs::write(&path, text).unwrap();
    let config = Config::load(&path).unwrap();
    let r = reconcile_config(&config, APPLY, &Quiet).await.unwrap();
    all_applied(&r);
    assert_eq!(r.plan.operations.len(), 4);
    assert_eq!(r.plan.refused.len(), 1);
    assert!(
        r.plan.refused[0].to_string().ends_with(
            "users.csv:4: customer (column org): customer \"initech\" is not in the customers file"
        ),
        "{}",
        r.plan.refused[0]
    );
    let state = s.emu.handle.state();
    let acme = state
        .customers
        .values()
        .find(|c| c.external_id.as_deref() == Some("acme"))
        .unwrap();
    assert_eq!(
        (acme.description.as_str(), acme.labels.clone()),
        ("Rockets", vec!["gold".to_owned()])
    );
}
