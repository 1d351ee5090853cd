//! The planner on its own: golden plans (text and JSON) for hand-built
//! directories and snapshots, and property tests over random ones
//! (determinism, deletes only of managed records, convergence after an
//! apply simulated the way the platform behaves).

use std::collections::{BTreeMap, BTreeSet};

use dirsync::config::{Budget, ChangePolicy, Policy, RoleTable};
use dirsync::directory::{
    normalise_labels, DesiredCustomer, DesiredUser, Directory, Origin, RefusedRecord, Unknown,
    UserParts,
};
use dirsync::model::{
    CustomerChanges, CustomerHoldings, PlatformCustomer, PlatformId, PlatformUser, Role, Snapshot,
    UserChanges,
};
use dirsync::plan::{
    customers_to_inspect, plan, render, CustomerCreate, Operation, Plan, PlanError, UserCreate,
};

// ------------------------------------------------------------------ helpers

fn origin(line: u64) -> Origin {
    Origin::Line {
        file: std::path::Path::new("users.csv").into(),
        line,
    }
}

/// A directory customer with only the required fields mapped.
fn customer(x: &str, name: &str) -> DesiredCustomer {
    DesiredCustomer {
        external_id: x.to_owned(),
        name: name.to_owned(),
        description: None,
        labels: None,
        origin: origin(2),
    }
}

/// Labels as the mapping produces them (normalised).
fn labels(values: &[&str]) -> Option<BTreeSet<String>> {
    Some(normalise_labels(values.iter().copied()))
}

/// A directory user with only the required fields mapped.
fn user(x: &str, customer: &str, email: &str) -> DesiredUser {
    DesiredUser::new(UserParts {
        external_id: x,
        customer_external_id: customer.into(),
        email,
        name: None,
        phone: None,
        role: None,
        origin: origin(2),
    })
}

/// `u` with a name, a phone and a role mapped.
fn with_fields(
    u: DesiredUser,
    name: Option<&str>,
    phone: Option<&str>,
    role: Option<&str>,
) -> DesiredUser {
    DesiredUser::new(UserParts {
        name,
        phone,
        role: role.map(Into::into),
        ..u.to_parts()
    })
}

fn directory(customers: Vec<DesiredCustomer>, users: Vec<DesiredUser>) -> Directory {
    Directory {
        customers: customers
            .into_iter()
            .map(|c| (c.external_id.clone(), c))
            .collect(),
        users: users.into_iter().collect(),
        ..Directory::default()
    }
}

fn id(s: &str) -> PlatformId {
    PlatformId::from(s.to_owned())
}

fn role(name: &str) -> Role {
    Role {
        id: PlatformId::from(format!("R-{}", name.to_lowercase())),
        name: name.to_owned(),
    }
}

/// The platform's customer roles.
fn platform_roles() -> Vec<Role> {
    vec![role("Admin"), role("Member")]
}

/// A platform customer with no description and no labels.
fn pcustomer(pid: &str, x: Option<&str>, name: &str) -> PlatformCustomer {
    PlatformCustomer {
        id: id(pid),
        external_id: x.map(str::to_owned),
        name: name.to_owned(),
        description: String::new(),
        labels: Vec::new(),
        updated_at: None,
    }
}

/// A platform user (no name, no phone, role Member) of `customer`.
fn puser(pid: &str, x: Option<&str>, email: &str, customer: &PlatformCustomer) -> PlatformUser {
    PlatformUser {
        id: id(pid),
        external_id: x.map(str::to_owned),
        email: email.to_owned(),
        name: String::new(),
        phone: String::new(),
        role: role("Member").into(),
        customer_id: customer.id.clone(),
        customer_external_id: customer.external_id.clone(),
        updated_at: None,
    }
}

fn snapshot(customers: Vec<PlatformCustomer>, users: Vec<PlatformUser>) -> Snapshot {
    with_holdings(Snapshot {
        customers,
        users,
        roles: platform_roles(),
        ..Snapshot::default()
    })
}

/// What each customer holds as a platform with no hidden users and no
/// instances would report it: the listed users, no instances. (The cascade
/// tests set holdings of their own.)
fn with_holdings(mut s: Snapshot) -> Snapshot {
    s.holdings = s
        .customers
        .iter()
        .map(|c| {
            let users = s.users.iter().filter(|u| u.customer_id == c.id).count();
            let holdings = CustomerHoldings {
                users: users as u64,
                instances: 0,
            };
            (c.id.clone(), holdings)
        })
        .collect();
    s
}

/// Source values `admin`/`member` to the platform roles, default Member.
fn role_table() -> RoleTable {
    RoleTable {
        map: BTreeMap::from([
            ("admin".to_owned(), "Admin".to_owned()),
            ("member".to_owned(), "Member".to_owned()),
        ]),
        default: "Member".to_owned(),
    }
}

fn delete_customers_enabled() -> Option<Budget> {
    Some(Budget {
        max_count: 2,
        max_percent: 2.0,
    })
}

fn make_plan(d: &Directory, s: &Snapshot, p: &Policy) -> Plan {
    plan(d, s, p, &role_table()).expect("the plan is made")
}

/// Compares a rendered plan with its golden text, printing both on a difference.
#[track_caller]
fn assert_golden(actual: &str, expected: &str) {
    assert!(
        actual == expected,
        "plan text differs from the golden text\n--- actual ---\n{actual}--- expected ---\n{expected}--- end ---"
    );
}

fn text(d: &Directory, s: &Snapshot, p: &Policy) -> String {
    render::text(&make_plan(d, s, p))
}

// ------------------------------------------------------------ golden tests

#[test]
fn golden_creates_a_customer_and_its_users_from_empty() {
    let mut acme = customer("acme", "Acme Corp");
    acme.description = Some("Anvils".to_owned());
    acme.labels = labels(&["Gold", "EU"]);
    let ada = with_fields(
        user("ada", "acme", "ada@acme.test"),
        Some("Ada"),
        Some("555-0100"),
        Some("Admin"),
    );
    let bob = user("bob", "acme", "bob@acme.test");
    let d = directory(vec![acme], vec![ada, bob]);
    let s = snapshot(vec![], vec![]);
    let p = make_plan(&d, &s, &Policy::default());
    assert_golden(
        &render::text(&p),
        "\
Directory: 1 customers, 2 users. Managed on the platform: 0 customers, 0 users.

  + customer acme  \"Acme Corp\"
      description: \"Anvils\"
      labels: [eu, gold]
  + user ada  ada@acme.test in customer acme, role Admin
      name: \"Ada\"
      phone: \"555-0100\"
  + user bob  bob@acme.test in customer acme, role Member

Plan: 3 to create, 0 to update, 0 to delete.
",
    );
    // An unmapped role takes the role table's default, with the platform's id.
    let role_ids: Vec<(&str, &str)> = p
        .operations
        .iter()
        .filter_map(|op| match op {
            Operation::CreateUser(u) => Some((u.external_id.as_str(), u.role_id.as_str())),
            _ => None,
        })
        .collect();
    assert_eq!(role_ids, [("ada", "R-admin"), ("bob", "R-member")]);
}

#[test]
fn golden_updates_customer_name_description_and_labels() {
    let mut acme = customer("acme", "Acme Corp");
    acme.description = Some("new".to_owned());
    acme.labels = labels(&["gold", "EU"]);
    let d = directory(vec![acme], vec![]);
    let mut c1 = pcustomer("C1", Some("acme"), "Acme");
    c1.description = "old".to_owned();
    c1.labels = vec!["gold".to_owned()];
    let s = snapshot(vec![c1], vec![]);
    let p = make_plan(&d, &s, &Policy::default());
    assert_golden(
        &render::text(&p),
        "\
Directory: 1 customers, 0 users. Managed on the platform: 1 customers, 0 users.

  ~ customer acme
      name: \"Acme\" -> \"Acme Corp\"
      description: \"old\" -> \"new\"
      labels: \"gold\" -> \"eu, gold\"

Plan: 0 to create, 1 to update, 0 to delete.
",
    );
    let Operation::UpdateCustomer { id, patch, .. } = &p.operations[0] else {
        panic!("expected an update: {:?}", p.operations);
    };
    assert_eq!(id.as_str(), "C1");
    assert_eq!(
        *patch,
        CustomerChanges {
            name: Some("Acme Corp".to_owned()),
            description: Some("new".to_owned()),
            external_id: None,
            labels: Some(vec!["eu".to_owned(), "gold".to_owned()]),
        }
    );
}

#[test]
fn golden_updates_user_name_phone_and_role() {
    let ada = with_fields(
        user("ada", "acme", "ada@acme.test"),
        Some("Ada Lovelace"),
        Some("555"),
        Some("Admin"),
    );
    let d = directory(vec![customer("acme", "Acme")], vec![ada]);
    let c1 = pcustomer("C1", Some("acme"), "Acme");
    let mut u1 = puser("U1", Some("ada"), "ada@acme.test", &c1);
    u1.name = "Ada".to_owned();
    let s = snapshot(vec![c1], vec![u1]);
    let p = make_plan(&d, &s, &Policy::default());
    assert_golden(
        &render::text(&p),
        "\
Directory: 1 customers, 1 users. Managed on the platform: 1 customers, 1 users.

  ~ user ada  ada@acme.test
      name: \"Ada\" -> \"Ada Lovelace\"
      phone: \"\" -> \"555\"
      role: \"Member\" -> \"Admin\"

Plan: 0 to create, 1 to update, 0 to delete.
",
    );
    let Operation::UpdateUser {
        id: target, patch, ..
    } = &p.operations[0]
    else {
        panic!("expected an update: {:?}", p.operations);
    };
    assert_eq!(target.as_str(), "U1");
    assert_eq!(
        *patch,
        UserChanges {
            name: Some("Ada Lovelace".to_owned()),
            phone: Some("555".to_owned()),
            role_id: Some(id("R-admin")),
            external_id: None,
        }
    );
}

#[test]
fn golden_labels_compare_lowercase_unordered_and_deduplicated() {
    let mut acme = customer("acme", "Acme");
    acme.labels = labels(&["EU", "Gold", "gold "]);
    let d = directory(vec![acme], vec![]);
    let mut c1 = pcustomer("C1", Some("acme"), "Acme");
    c1.labels = vec!["gold".to_owned(), "eu".to_owned()];
    let s = snapshot(vec![c1], vec![]);
    assert_golden(
        &text(&d, &s, &Policy::default()),
        "\
Directory: 1 customers, 0 users. Managed on the platform: 1 customers, 0 users.

No changes. The platform matches the directory.
",
    );
}

#[test]
fn golden_unmapped_fields_are_never_compared() {
    // description, labels, name, phone and role are not mapped (None): the
    // platform's values, whatever they are, stay as they are.
    let d = directory(
        vec![customer("acme", "Acme")],
        vec![user("ada", "acme", "ada@acme.test")],
    );
    let mut c1 = pcustomer("C1", Some("acme"), "Acme");
    c1.description = "set by hand".to_owned();
    c1.labels = vec!["beta".to_owned()];
    let mut u1 = puser("U1", Some("ada"), "ada@acme.test", &c1);
    u1.name = "Ada".to_owned();
    u1.phone = "555".to_owned();
    u1.role = role("Admin").into();
    let s = snapshot(vec![c1], vec![u1]);
    assert_golden(
        &text(&d, &s, &Policy::default()),
        "\
Directory: 1 customers, 1 users. Managed on the platform: 1 customers, 1 users.

No changes. The platform matches the directory.
",
    );
}

#[test]
fn golden_a_user_missing_from_the_directory_is_deleted() {
    let d = directory(
        vec![customer("acme", "Acme")],
        vec![user("ada", "acme", "ada@acme.test")],
    );
    let c1 = pcustomer("C1", Some("acme"), "Acme");
    let c2 = pcustomer("C2", None, "Legacy");
    let users = vec![
        puser("U1", Some("ada"), "ada@acme.test", &c1),
        puser("U2", Some("old"), "old@acme.test", &c1),
        // A user with an externalId in a customer dirsync does not manage
        // is not dirsync's: it is neither counted nor deleted.
        puser("U3", Some("stray"), "stray@legacy.test", &c2),
    ];
    let s = snapshot(vec![c1, c2], users);
    let p = make_plan(&d, &s, &Policy::default());
    assert_golden(
        &render::text(&p),
        "\
Directory: 1 customers, 1 users. Managed on the platform: 1 customers, 2 users.

  - user old  old@acme.test in customer acme  (absent from the directory)

Plan: 0 to create, 0 to update, 1 to delete.
",
    );
    assert_eq!(p.user_deletes(), 1);
}

/// acme (in the directory, with ada); globex (gus, gil: managed) and
/// initech (ike managed, ivy not) are not in the directory.
fn two_leaving_customers() -> (Directory, Snapshot) {
    let d = directory(
        vec![customer("acme", "Acme")],
        vec![user("ada", "acme", "ada@acme.test")],
    );
    let acme = pcustomer("C1", Some("acme"), "Acme");
    let globex = pcustomer("C2", Some("globex"), "Globex");
    let initech = pcustomer("C3", Some("initech"), "Initech");
    let users = vec![
        puser("U1", Some("ada"), "ada@acme.test", &acme),
        puser("U2", Some("gus"), "gus@globex.test", &globex),
        puser("U3", Some("gil"), "gil@globex.test", &globex),
        puser("U4", Some("ike"), "ike@initech.test", &initech),
        puser("U5", None, "ivy@initech.test", &initech),
    ];
    (d, snapshot(vec![acme, globex, initech], users))
}

#[test]
fn golden_a_customer_missing_from_the_directory_is_kept_when_customer_deletes_are_disabled() {
    let (d, s) = two_leaving_customers();
    let p = make_plan(&d, &s, &Policy::default());
    assert_golden(
        &render::text(&p),
        "\
Directory: 1 customers, 1 users. Managed on the platform: 3 customers, 4 users.

  - user gil  gil@globex.test in customer globex  (absent from the directory)
  - user gus  gus@globex.test in customer globex  (absent from the directory)
  - user ike  ike@initech.test in customer initech  (absent from the directory)

Kept (not deleted):
  = customer globex: not in the directory, but customer deletes are disabled (policy.delete_customers.enabled)
  = customer initech: not in the directory, but customer deletes are disabled (policy.delete_customers.enabled)

Plan: 0 to create, 0 to update, 3 to delete.
",
    );
    assert_eq!(p.customer_deletes(), 0);
}

#[test]
fn golden_a_customer_missing_from_the_directory_is_deleted_with_its_users_when_enabled() {
    let (d, s) = two_leaving_customers();
    let policy = Policy {
        delete_customers: delete_customers_enabled(),
        ..Policy::default()
    };
    let p = make_plan(&d, &s, &policy);
    // globex goes with its two users (no DeleteUser of its own for them);
    // initech holds an unmanaged user, so it stays and only ike goes.
    assert_golden(
        &render::text(&p),
        "\
Directory: 1 customers, 1 users. Managed on the platform: 3 customers, 4 users.

  - user ike  ike@initech.test in customer initech  (absent from the directory)
  - customer globex  \"Globex\"  (absent from the directory)  PERMANENT: also deletes its 2 user(s) and 0 instance(s)

Kept (not deleted):
  = customer initech: not in the directory, but it holds 1 user(s) that dirsync does not manage (embedded marketplace users, or users without an externalId in scope); deleting it would delete them

Plan: 0 to create, 0 to update, 2 to delete.
",
    );
    assert_eq!(p.customer_deletes(), 1);
    assert_eq!(p.user_deletes(), 3, "globex's 2 users and ike");
}

/// ada's email changed in the directory.
fn email_changed() -> (Directory, Snapshot) {
    let d = directory(
        vec![customer("acme", "Acme")],
        vec![user("ada", "acme", "ada@new.test")],
    );
    let c1 = pcustomer("C1", Some("acme"), "Acme");
    let u1 = puser("U1", Some("ada"), "ada@old.test", &c1);
    (d, snapshot(vec![c1], vec![u1]))
}

#[test]
fn golden_an_email_change_is_drift_without_an_operation_under_report() {
    let (d, s) = email_changed();
    let p = make_plan(&d, &s, &Policy::default());
    assert_golden(
        &render::text(&p),
        "\
Directory: 1 customers, 1 users. Managed on the platform: 1 customers, 1 users.

Drift the platform cannot update in place:
  ! user ada: email changed: ada@old.test -> ada@new.test (reported only; set policy.email_change: recreate to delete and re-create it)

No changes to send; 1 drift item to look at (see above).
",
    );
    assert!(p.operations.is_empty());
}

#[test]
fn golden_an_email_change_recreates_the_user_under_recreate() {
    let (d, s) = email_changed();
    let policy = Policy {
        email_change: ChangePolicy::Recreate,
        ..Policy::default()
    };
    let p = make_plan(&d, &s, &policy);
    assert_golden(
        &render::text(&p),
        "\
Directory: 1 customers, 1 users. Managed on the platform: 1 customers, 1 users.

-/+ user ada  email changed from ada@old.test to ada@new.test: delete, then create in customer acme (new id, new confirmation email)

Drift the platform cannot update in place:
  ! user ada: email changed: ada@old.test -> ada@new.test (recreated (see -/+ above))

Plan: 1 to create, 0 to update, 1 to delete; 1 drift item (see above).
",
    );
    let Operation::RecreateUser { old_id, create, .. } = &p.operations[0] else {
        panic!("expected a recreate: {:?}", p.operations);
    };
    assert_eq!(old_id.as_str(), "U1");
    assert_eq!(create.email, "ada@new.test");
    assert_eq!(create.role_id.as_str(), "R-member");
    assert_eq!(p.user_deletes(), 1);
}

#[test]
fn golden_a_move_to_another_customer_is_drift_or_a_recreate() {
    let d = directory(
        vec![customer("acme", "Acme"), customer("globex", "Globex")],
        vec![user("ada", "globex", "ada@acme.test")],
    );
    let c1 = pcustomer("C1", Some("acme"), "Acme");
    let c2 = pcustomer("C2", Some("globex"), "Globex");
    let u1 = puser("U1", Some("ada"), "ada@acme.test", &c1);
    let s = snapshot(vec![c1, c2], vec![u1]);
    assert_golden(
        &text(&d, &s, &Policy::default()),
        "\
Directory: 2 customers, 1 users. Managed on the platform: 2 customers, 1 users.

Drift the platform cannot update in place:
  ! user ada: moved to another customer: acme -> globex (reported only; set policy.email_change: recreate to delete and re-create it)

No changes to send; 1 drift item to look at (see above).
",
    );
    let recreate = Policy {
        email_change: ChangePolicy::Recreate,
        ..Policy::default()
    };
    assert_golden(
        &text(&d, &s, &recreate),
        "\
Directory: 2 customers, 1 users. Managed on the platform: 2 customers, 1 users.

-/+ user ada  customer changed from acme to globex: delete, then create in customer globex (new id, new confirmation email)

Drift the platform cannot update in place:
  ! user ada: moved to another customer: acme -> globex (recreated (see -/+ above))

Plan: 1 to create, 0 to update, 1 to delete; 1 drift item (see above).
",
    );
}

/// Regression: under `email_change: recreate` a user whose new email belongs
/// to another platform user was planned as a RecreateUser; applying it
/// deleted the user and then had its create refused (the email is taken),
/// so the user was lost. It is a conflict now, and nothing is sent for it.
#[test]
fn regression_recreate_into_a_taken_email_is_a_conflict_not_a_lost_user() {
    let d = directory(
        vec![customer("acme", "Acme")],
        vec![user("ada", "acme", "new@acme.test")],
    );
    let c1 = pcustomer("C1", Some("acme"), "Acme");
    let u1 = puser("U1", Some("ada"), "ada@acme.test", &c1);
    let unmanaged = puser("U2", None, "New@Acme.test", &c1);
    let policy = Policy {
        email_change: ChangePolicy::Recreate,
        ..Policy::default()
    };
    let s = snapshot(vec![c1.clone()], vec![u1.clone(), unmanaged]);
    assert_golden(
        &text(&d, &s, &policy),
        "\
Directory: 1 customers, 1 users. Managed on the platform: 1 customers, 1 users.

Conflicts (nothing is sent for these):
  ! user ada: cannot recreate it with email new@acme.test: that email belongs to a user that dirsync does not manage

No changes to send; 1 conflict to look at (see above).
",
    );
    // The owner is managed and leaving: it goes this run, ada is recreated
    // on the next one (apply runs user changes before user deletes).
    let leaving = puser("U3", Some("bob"), "new@acme.test", &c1);
    let s = snapshot(vec![c1], vec![u1, leaving]);
    let p = make_plan(&d, &s, &policy);
    assert_golden(
        &render::text(&p),
        "\
Directory: 1 customers, 1 users. Managed on the platform: 1 customers, 2 users.

  - user bob  new@acme.test in customer acme  (absent from the directory)

Conflicts (nothing is sent for these):
  ! user ada: cannot recreate it with email new@acme.test: that email belongs to user \"bob\"

Plan: 0 to create, 0 to update, 1 to delete; 1 conflict (see above).
",
    );
    let after = simulate_apply(&p, &s);
    let next = make_plan(&d, &after, &policy);
    assert!(
        matches!(next.operations.as_slice(), [Operation::RecreateUser { old_id, .. }] if old_id.as_str() == "U1"),
        "{}",
        render::text(&next)
    );
    assert!(next.conflicts.is_empty(), "{:?}", next.conflicts);
}

/// A customer and a user on the platform without externalIds, named and
/// addressed as the directory's (the email in another case).
fn adoptable() -> (Directory, Snapshot) {
    let ada = with_fields(
        user("ada", "acme", "Ada@Acme.test"),
        Some("Ada"),
        None,
        None,
    );
    let d = directory(vec![customer("acme", "Acme")], vec![ada]);
    let c1 = pcustomer("C1", None, "Acme");
    let u1 = puser("U1", None, "ada@acme.test", &c1);
    (d, snapshot(vec![c1], vec![u1]))
}

#[test]
fn golden_adoption_takes_over_a_customer_by_name_and_a_user_by_email() {
    let (d, s) = adoptable();
    let policy = Policy {
        adopt: true,
        ..Policy::default()
    };
    let p = make_plan(&d, &s, &policy);
    assert_golden(
        &render::text(&p),
        "\
Directory: 1 customers, 1 users. Managed on the platform: 0 customers, 0 users.

  ~ customer acme  adopt existing \"Acme\" (it has no externalId)
      externalId: \"\" -> \"acme\"
  ~ user ada  adopt existing ada@acme.test (it has no externalId)
      externalId: \"\" -> \"ada\"
      name: \"\" -> \"Ada\"

Plan: 0 to create, 2 to update, 0 to delete.
",
    );
    let patches: Vec<Option<&str>> = p
        .operations
        .iter()
        .map(|op| match op {
            Operation::AdoptCustomer { id, patch, .. } => {
                assert_eq!(id.as_str(), "C1");
                patch.external_id.as_deref()
            }
            Operation::AdoptUser { id, patch, .. } => {
                assert_eq!(id.as_str(), "U1");
                patch.external_id.as_deref()
            }
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(patches, [Some("acme"), Some("ada")]);
}

#[test]
fn golden_without_adoption_unmanaged_look_alikes_are_conflicts() {
    let (d, s) = adoptable();
    assert_golden(
        &text(&d, &s, &Policy::default()),
        "\
Directory: 1 customers, 1 users. Managed on the platform: 0 customers, 0 users.

Conflicts (nothing is sent for these):
  ! customer acme: a customer named \"Acme\" exists without an externalId; set policy.adopt: true to take it over, or rename one of them
  ! user ada: its customer \"acme\" cannot be created or changed (see its conflict)

No changes to send; 2 conflicts to look at (see above).
",
    );
    // The customer already managed: only the user is a conflict.
    let mut s = s;
    s.customers[0].external_id = Some("acme".to_owned());
    s.users[0].customer_external_id = Some("acme".to_owned());
    assert_golden(
        &text(&d, &s, &Policy::default()),
        "\
Directory: 1 customers, 1 users. Managed on the platform: 1 customers, 0 users.

Conflicts (nothing is sent for these):
  ! user ada: a user with email Ada@Acme.test exists without an externalId; set policy.adopt: true to take it over

No changes to send; 1 conflict to look at (see above).
",
    );
}

#[test]
fn golden_unmanaged_records_are_never_updated_or_deleted() {
    // Nothing in the directory, customer deletes on: only the managed user goes.
    let d = directory(vec![], vec![]);
    let legacy = pcustomer("C1", None, "Legacy");
    let globex = pcustomer("C2", Some("globex"), "Globex");
    let users = vec![
        puser("U1", None, "lou@legacy.test", &legacy),
        puser("U2", None, "gia@globex.test", &globex),
        puser("U3", Some("gus"), "gus@globex.test", &globex),
    ];
    let s = snapshot(vec![legacy, globex], users);
    let policy = Policy {
        delete_customers: delete_customers_enabled(),
        adopt: true,
        email_change: ChangePolicy::Recreate,
        ..Policy::default()
    };
    let p = make_plan(&d, &s, &policy);
    assert_golden(
        &render::text(&p),
        "\
Directory: 0 customers, 0 users. Managed on the platform: 1 customers, 1 users.

  - user gus  gus@globex.test in customer globex  (absent from the directory)

Kept (not deleted):
  = customer globex: not in the directory, but it holds 1 user(s) that dirsync does not manage (embedded marketplace users, or users without an externalId in scope); deleting it would delete them

Plan: 0 to create, 0 to update, 1 to delete.
",
    );
    // Unmanaged records are not updated either, whatever the directory says
    // about records of the same name or email under other externalIds.
    let mut acme = customer("acme", "Acme");
    acme.description = Some("new".to_owned());
    let d = directory(vec![acme], vec![user("lou", "acme", "lou2@legacy.test")]);
    let p = make_plan(&d, &s, &policy);
    for op in &p.operations {
        let target = match op {
            Operation::UpdateCustomer { id, .. }
            | Operation::UpdateUser { id, .. }
            | Operation::DeleteUser { id, .. }
            | Operation::DeleteCustomer { id, .. }
            | Operation::RecreateUser { old_id: id, .. } => Some(id.as_str()),
            _ => None,
        };
        assert!(
            !matches!(target, Some("C1" | "U1" | "U2")),
            "an unmanaged record is touched: {op:?}"
        );
    }
}

#[test]
fn golden_the_external_id_prefix_limits_what_is_managed() {
    let d = directory(vec![], vec![]);
    let hr = pcustomer("C1", Some("hr-acme"), "Acme");
    let crm = pcustomer("C2", Some("crm-globex"), "Globex");
    let users = vec![
        puser("U1", Some("hr-ada"), "ada@acme.test", &hr),
        puser("U2", Some("crm-bob"), "bob@acme.test", &hr),
        puser("U3", Some("crm-gus"), "gus@globex.test", &crm),
    ];
    let s = snapshot(vec![hr, crm], users);
    let prefixed = Policy {
        external_id_prefix: Some("hr-".to_owned()),
        delete_customers: delete_customers_enabled(),
        ..Policy::default()
    };
    assert_golden(
        &text(&d, &s, &prefixed),
        "\
Directory: 0 customers, 0 users. Managed on the platform: 1 customers, 1 users.

  - user hr-ada  ada@acme.test in customer hr-acme  (absent from the directory)

Kept (not deleted):
  = customer hr-acme: not in the directory, but it holds 1 user(s) that dirsync does not manage (embedded marketplace users, or users without an externalId in scope); deleting it would delete them

Plan: 0 to create, 0 to update, 1 to delete.
",
    );
    // Without the prefix everything with an externalId is dirsync's.
    let unprefixed = Policy {
        external_id_prefix: None,
        ..prefixed
    };
    assert_golden(
        &text(&d, &s, &unprefixed),
        "\
Directory: 0 customers, 0 users. Managed on the platform: 2 customers, 3 users.

  - customer crm-globex  \"Globex\"  (absent from the directory)  PERMANENT: also deletes its 1 user(s) and 0 instance(s)
  - customer hr-acme  \"Acme\"  (absent from the directory)  PERMANENT: also deletes its 2 user(s) and 0 instance(s)

Plan: 0 to create, 0 to update, 2 to delete.
",
    );
}

#[test]
fn golden_refused_records_protect_what_they_name_from_deletion() {
    let mut d = directory(vec![customer("acme", "Acme")], vec![]);
    d.refused = vec![
        RefusedRecord {
            origin: origin(3),
            field: Some("email (column email)".to_owned()),
            message: "invalid email \"ada@\"".to_owned(),
        },
        RefusedRecord {
            origin: origin(4),
            field: Some("externalId (column id)".to_owned()),
            message: "missing required value".to_owned(),
        },
    ];
    d.unknown = Unknown {
        customer_external_ids: BTreeSet::from(["globex".to_owned()]),
        user_external_ids: BTreeSet::from(["ada".to_owned()]),
        user_emails: BTreeSet::from(["bob@acme.test".to_owned()]),
    };
    let acme = pcustomer("C1", Some("acme"), "Acme");
    let globex = pcustomer("C2", Some("globex"), "Globex");
    let users = vec![
        puser("U1", Some("ada"), "ada@acme.test", &acme),
        puser("U2", Some("bob"), "Bob@Acme.test", &acme),
        puser("U3", Some("cy"), "cy@acme.test", &acme),
    ];
    let s = snapshot(vec![acme, globex], users);
    let policy = Policy {
        delete_customers: delete_customers_enabled(),
        ..Policy::default()
    };
    assert_golden(
        &text(&d, &s, &policy),
        "\
Directory: 1 customers, 0 users. Managed on the platform: 2 customers, 3 users.

  - user cy  cy@acme.test in customer acme  (absent from the directory)

Kept (not deleted):
  = customer globex: a refused record names it; its state in the directory is unknown
  = user ada: a refused record names it; its state in the directory is unknown
  = user bob: a refused record names it; its state in the directory is unknown

Refused records (what they name is neither updated nor deleted):
  ! users.csv:3: email (column email): invalid email \"ada@\"
  ! users.csv:4: externalId (column id): missing required value

Plan: 0 to create, 0 to update, 1 to delete; 2 refused records (see above).
",
    );
}

#[test]
fn a_delete_says_disabled_when_the_directory_holds_the_account_disabled() {
    use dirsync::plan::DeleteReason;
    // old is disabled in the directory, gone is not in it at all; bob is
    // disabled too but a refused record names him; ada is disabled in one
    // record and enabled in another (the mapping leaves such a user out of
    // `disabled_users`; were it there, her live record still wins).
    let mut d = directory(
        vec![customer("acme", "Acme")],
        vec![user("ada", "acme", "ada@acme.test")],
    );
    d.disabled_users = ["ada", "bob", "gil", "old"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    d.unknown.user_external_ids.insert("bob".to_owned());
    let acme = pcustomer("C1", Some("acme"), "Acme");
    let globex = pcustomer("C2", Some("globex"), "Globex");
    let users = vec![
        puser("U1", Some("ada"), "ada@acme.test", &acme),
        puser("U2", Some("old"), "old@acme.test", &acme),
        puser("U3", Some("gone"), "gone@acme.test", &acme),
        puser("U4", Some("bob"), "bob@acme.test", &acme),
        puser("U5", Some("gil"), "gil@globex.test", &globex),
    ];
    let s = snapshot(vec![acme, globex], users);
    let policy = Policy {
        delete_customers: delete_customers_enabled(),
        ..Policy::default()
    };
    let p = make_plan(&d, &s, &policy);
    assert_golden(
        &render::text(&p),
        "\
Directory: 1 customers, 1 users. Managed on the platform: 2 customers, 5 users.

  - user gone  gone@acme.test in customer acme  (absent from the directory)
  - user old  old@acme.test in customer acme  (disabled in the directory)
  - customer globex  \"Globex\"  (absent from the directory)  PERMANENT: also deletes its 1 user(s) and 0 instance(s)

Kept (not deleted):
  = user bob: a refused record names it; its state in the directory is unknown

Plan: 0 to create, 0 to update, 3 to delete.
",
    );
    let why: Vec<(&str, DeleteReason)> = p
        .operations
        .iter()
        .filter_map(|op| match op {
            Operation::DeleteUser {
                external_id, why, ..
            }
            | Operation::DeleteCustomer {
                external_id, why, ..
            } => Some((external_id.as_str(), *why)),
            _ => None,
        })
        .collect();
    assert_eq!(
        why,
        [
            ("gone", DeleteReason::Absent),
            ("old", DeleteReason::Disabled),
            ("globex", DeleteReason::Absent),
        ],
        "gil goes with globex: a customer's delete says nothing of its users"
    );
    let json = serde_json::to_value(&p).unwrap();
    assert_eq!(json["operations"][1]["why"], "disabled", "{json}");
    assert_eq!(json["operations"][0]["why"], "absent", "{json}");
    // Pure: the same inputs, the same plan.
    assert_eq!(make_plan(&d, &s, &policy), p);

    // Without the disabled set, every delete is an absence, as before.
    d.disabled_users.clear();
    let again = make_plan(&d, &s, &policy);
    assert!(again.operations.iter().all(|op| matches!(
        op,
        Operation::DeleteUser {
            why: DeleteReason::Absent,
            ..
        } | Operation::DeleteCustomer {
            why: DeleteReason::Absent,
            ..
        }
    )));
}

#[test]
fn an_unknown_role_name_is_an_error() {
    let d = directory(
        vec![customer("acme", "Acme")],
        vec![user("ada", "acme", "ada@acme.test")],
    );
    let s = snapshot(vec![], vec![]);
    let mut roles = role_table();
    roles.map.insert("owner".to_owned(), "Owner".to_owned());
    let err = plan(&d, &s, &Policy::default(), &roles).unwrap_err();
    assert_eq!(
        err,
        PlanError::UnknownRole {
            role: "Owner".to_owned(),
            available: vec!["Admin".to_owned(), "Member".to_owned()],
        }
    );
    assert_eq!(
        err.to_string(),
        "mapping.roles: role \"Owner\" does not exist on the platform (customer roles there: Admin, Member)"
    );
    // The default role is checked too.
    let roles = RoleTable {
        map: BTreeMap::new(),
        default: "Viewer".to_owned(),
    };
    assert!(matches!(
        plan(&d, &s, &Policy::default(), &roles),
        Err(PlanError::UnknownRole { role, .. }) if role == "Viewer"
    ));
}

#[test]
fn golden_plan_json() {
    let mut globex = customer("globex", "Globex");
    globex.labels = labels(&["Gold"]);
    let ada = with_fields(
        user("ada", "acme", "ada@acme.test"),
        None,
        None,
        Some("Admin"),
    );
    let d = directory(vec![customer("acme", "Acme"), globex], vec![ada]);
    let c1 = pcustomer("C1", Some("acme"), "Acme");
    let u1 = puser("U1", Some("ada"), "ada@acme.test", &c1);
    let s = snapshot(vec![c1], vec![u1]);
    let p = make_plan(&d, &s, &Policy::default());
    let json = serde_json::to_string_pretty(&p).unwrap();
    assert_golden(
        &format!("{json}\n"),
        r#"{
  "operations": [
    {
      "action": "createCustomer",
      "externalId": "globex",
      "name": "Globex",
      "description": null,
      "labels": [
        "gold"
      ]
    },
    {
      "action": "updateUser",
      "id": "U1",
      "externalId": "ada",
      "email": "ada@acme.test",
      "customerExternalId": "acme",
      "changes": [
        {
          "field": "role",
          "before": "Member",
          "after": "Admin"
        }
      ],
      "patch": {
        "name": null,
        "phone": null,
        "roleId": "R-admin",
        "externalId": null
      }
    }
  ],
  "drift": [],
  "kept": [],
  "conflicts": [],
  "refused": [],
  "scope": {
    "managedCustomers": 1,
    "managedUsers": 1,
    "directoryCustomers": 2,
    "directoryUsers": 1
  }
}
"#,
    );
}

// ------------------------------------------- the cascade and the user scope

/// `gone` (not in the directory) with one managed user; customer deletes on.
fn one_leaving_customer() -> (Directory, Snapshot, Policy, PlatformId) {
    let d = directory(vec![customer("acme", "Acme")], vec![]);
    let acme = pcustomer("C1", Some("acme"), "Acme");
    let gone = pcustomer("C2", Some("gone"), "Gone");
    let users = vec![puser("U1", Some("gus"), "gus@gone.test", &gone)];
    let id = gone.id.clone();
    let s = snapshot(vec![acme, gone], users);
    let policy = Policy {
        delete_customers: delete_customers_enabled(),
        ..Policy::default()
    };
    (d, s, policy, id)
}

fn kept_reason(p: &Plan, x: &str) -> String {
    p.kept
        .iter()
        .find(|k| k.external_id == x)
        .map(|k| k.reason.clone())
        .unwrap_or_else(|| panic!("{x} is not kept: {:?}", p.operations))
}

#[test]
fn a_customer_holding_a_marketplace_user_is_kept() {
    let (d, mut s, policy, gone) = one_leaving_customer();
    // The listing shows one user; the platform holds two (one embedded).
    s.holdings.insert(
        gone,
        CustomerHoldings {
            users: 2,
            instances: 0,
        },
    );
    let p = make_plan(&d, &s, &policy);
    assert_eq!(p.customer_deletes(), 0);
    // The customer stays; its managed user, absent from the directory, goes
    // on its own, as with any kept customer.
    assert!(
        matches!(p.operations.as_slice(), [Operation::DeleteUser { external_id, .. }] if external_id == "gus"),
        "{:?}",
        p.operations
    );
    assert!(
        kept_reason(&p, "gone").contains("1 user(s) that dirsync does not manage"),
        "{:?}",
        p.kept
    );
}

#[test]
fn a_customer_with_instances_is_kept_unless_the_policy_allows_it() {
    let (d, mut s, policy, gone) = one_leaving_customer();
    s.holdings.insert(
        gone,
        CustomerHoldings {
            users: 1,
            instances: 3,
        },
    );
    let p = make_plan(&d, &s, &policy);
    assert_eq!(p.customer_deletes(), 0);
    assert!(
        kept_reason(&p, "gone").contains("3 deployed instance(s)"),
        "{:?}",
        p.kept
    );
    let allowed = Policy {
        delete_customers_with_instances: true,
        ..policy
    };
    let p = make_plan(&d, &s, &allowed);
    assert!(
        matches!(
            p.operations.as_slice(),
            [Operation::DeleteCustomer {
                users: 1,
                instances: 3,
                ..
            }]
        ),
        "{:?}",
        p.operations
    );
    assert!(render::text(&p).contains("also deletes its 1 user(s) and 3 instance(s)"));
    let json = serde_json::to_value(&p).unwrap();
    assert_eq!(json["operations"][0]["instances"], 3);
    assert_eq!(json["operations"][0]["users"], 1);
}

#[test]
fn a_customer_whose_holdings_were_not_read_is_kept() {
    let (d, mut s, policy, _) = one_leaving_customer();
    s.holdings.clear();
    let p = make_plan(&d, &s, &policy);
    assert_eq!(p.customer_deletes(), 0);
    assert!(kept_reason(&p, "gone").contains("was not read"));
}

#[test]
fn the_user_budget_counts_every_user_a_customer_delete_takes() {
    let (d, mut s, policy, gone) = one_leaving_customer();
    let extra = puser("U9", Some("gil"), "gil@gone.test", &s.customers[1]);
    s.users.push(extra);
    s.holdings.insert(
        gone,
        CustomerHoldings {
            users: 2,
            instances: 0,
        },
    );
    let p = make_plan(&d, &s, &policy);
    assert_eq!(p.customer_deletes(), 1);
    assert_eq!(p.user_deletes(), 2);
}

#[test]
fn the_customers_to_inspect_are_the_managed_ones_leaving_when_deletes_are_on() {
    let (d, s, policy, gone) = one_leaving_customer();
    assert_eq!(customers_to_inspect(&d, &s, &policy), vec![gone]);
    assert!(customers_to_inspect(&d, &s, &Policy::default()).is_empty());
}

#[test]
fn users_outside_managed_customers_are_never_deleted() {
    let d = directory(vec![customer("hr-acme", "Acme")], vec![]);
    let acme = pcustomer("C1", Some("hr-acme"), "Acme");
    let legacy = pcustomer("C2", None, "Legacy");
    let crm = pcustomer("C3", Some("crm-globex"), "Globex");
    // The system customer is never listed (`isSystem: false`), so its
    // users name a customer the snapshot does not hold.
    let system = pcustomer("C0", Some("hr-system"), "System");
    let users = vec![
        puser("U1", Some("hr-ada"), "ada@legacy.test", &legacy),
        puser("U2", Some("hr-bob"), "bob@globex.test", &crm),
        puser("U3", Some("hr-sys"), "sys@system.test", &system),
        puser("U4", Some("hr-old"), "old@acme.test", &acme),
    ];
    let s = snapshot(vec![acme, legacy, crm], users);
    let policy = Policy {
        external_id_prefix: Some("hr-".to_owned()),
        ..Policy::default()
    };
    let p = make_plan(&d, &s, &policy);
    let deleted: Vec<&str> = p
        .operations
        .iter()
        .filter_map(|op| match op {
            Operation::DeleteUser { external_id, .. } => Some(external_id.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(deleted, ["hr-old"], "{:?}", p.operations);
    assert_eq!(p.scope.managed_users, 1);
}

// ------------------------------------------------- the platform, simulated

/// Applies `plan` to a copy of `before` the way the platform would, in the
/// plan's order: fresh ids `new-1`, `new-2`, ...; names trimmed and unique;
/// customer externalIds unique; emails unique (case-insensitively); labels
/// stored lowercase; roles by id; deleting a customer deletes its users.
///
/// Panics, naming the operation, where the platform would refuse it: a plan
/// that fails when applied is a planner bug, whatever the next run does.
fn simulate_apply(plan: &Plan, before: &Snapshot) -> Snapshot {
    let mut s = before.clone();
    let mut next = 0;
    let mut fresh = |kind: &str| {
        next += 1;
        PlatformId::from(format!("new-{kind}-{next}"))
    };
    for op in &plan.operations {
        match op {
            Operation::CreateCustomer(c) => {
                let pid = fresh("c");
                create_customer(&mut s, c, pid);
            }
            Operation::UpdateCustomer { id, patch, .. }
            | Operation::AdoptCustomer { id, patch, .. } => update_customer(&mut s, id, patch),
            Operation::CreateUser(u) => {
                let pid = fresh("u");
                create_user(&mut s, u, pid);
            }
            Operation::UpdateUser { id, patch, .. } | Operation::AdoptUser { id, patch, .. } => {
                update_user(&mut s, id, patch)
            }
            Operation::RecreateUser { old_id, create, .. } => {
                delete_user(&mut s, old_id);
                let pid = fresh("u");
                create_user(&mut s, create, pid);
            }
            Operation::DeleteUser { id, .. } => delete_user(&mut s, id),
            Operation::DeleteCustomer { id, .. } => {
                let i = customer_index(&s, id);
                s.customers.remove(i);
                s.users.retain(|u| u.customer_id != *id);
            }
        }
    }
    with_holdings(s)
}

fn customer_index(s: &Snapshot, id: &PlatformId) -> usize {
    s.customers
        .iter()
        .position(|c| c.id == *id)
        .unwrap_or_else(|| panic!("platform: no customer {id}"))
}

fn user_index(s: &Snapshot, id: &PlatformId) -> usize {
    s.users
        .iter()
        .position(|u| u.id == *id)
        .unwrap_or_else(|| panic!("platform: no user {id}"))
}

fn lowercase(labels: &[String]) -> Vec<String> {
    labels.iter().map(|l| l.to_lowercase()).collect()
}

fn check_customer_unique(s: &Snapshot, me: Option<&PlatformId>, name: &str, x: Option<&str>) {
    for c in s.customers.iter().filter(|c| Some(&c.id) != me) {
        assert!(
            c.name != name,
            "platform refuses: customer name {name:?} already exists ({})",
            c.id
        );
        assert!(
            x.is_none() || c.external_id.as_deref() != x,
            "platform refuses: customer externalId {x:?} already exists ({})",
            c.id
        );
    }
}

fn create_customer(s: &mut Snapshot, c: &CustomerCreate, pid: PlatformId) {
    let name = c.name.trim().to_owned();
    check_customer_unique(s, None, &name, Some(&c.external_id));
    s.customers.push(PlatformCustomer {
        id: pid,
        external_id: Some(c.external_id.clone()),
        name,
        description: c.description.clone().unwrap_or_default(),
        labels: lowercase(c.labels.as_deref().unwrap_or_default()),
        updated_at: None,
    });
}

fn update_customer(s: &mut Snapshot, pid: &PlatformId, patch: &CustomerChanges) {
    let i = customer_index(s, pid);
    let mut c = s.customers[i].clone();
    if let Some(name) = &patch.name {
        c.name = name.trim().to_owned();
    }
    if let Some(x) = &patch.external_id {
        c.external_id = Some(x.clone()).filter(|x| !x.is_empty());
    }
    if let Some(d) = &patch.description {
        c.description = d.clone();
    }
    if let Some(l) = &patch.labels {
        c.labels = lowercase(l);
    }
    check_customer_unique(s, Some(pid), &c.name, c.external_id.as_deref());
    for u in s.users.iter_mut().filter(|u| u.customer_id == *pid) {
        u.customer_external_id = c.external_id.clone();
    }
    s.customers[i] = c;
}

fn platform_role(s: &Snapshot, role_id: &PlatformId) -> Role {
    s.roles
        .iter()
        .find(|r| r.id == *role_id)
        .cloned()
        .unwrap_or_else(|| panic!("platform refuses: no role {role_id}"))
}

fn create_user(s: &mut Snapshot, u: &UserCreate, pid: PlatformId) {
    let customer = s
        .customers
        .iter()
        .find(|c| c.external_id.as_deref() == Some(u.customer_external_id.as_str()))
        .unwrap_or_else(|| {
            panic!(
                "apply: no customer {} for user {}",
                u.customer_external_id, u.external_id
            )
        })
        .clone();
    let email = u.email.trim().to_owned();
    if let Some(other) = s
        .users
        .iter()
        .find(|o| o.email.to_lowercase() == email.to_lowercase())
    {
        panic!(
            "platform refuses: create user {}: email {email} already exists ({} {:?})",
            u.external_id, other.id, other.external_id
        );
    }
    let role = platform_role(s, &u.role_id);
    s.users.push(PlatformUser {
        id: pid,
        external_id: Some(u.external_id.clone()),
        email,
        name: u.name.clone().unwrap_or_default(),
        phone: u.phone.clone().unwrap_or_default(),
        role: role.into(),
        customer_id: customer.id,
        customer_external_id: customer.external_id,
        updated_at: None,
    });
}

fn update_user(s: &mut Snapshot, pid: &PlatformId, patch: &UserChanges) {
    let i = user_index(s, pid);
    if let Some(role_id) = &patch.role_id {
        s.users[i].role = platform_role(s, role_id).into();
    }
    let u = &mut s.users[i];
    if let Some(name) = &patch.name {
        u.name = name.clone();
    }
    if let Some(phone) = &patch.phone {
        u.phone = phone.clone();
    }
    if let Some(x) = &patch.external_id {
        u.external_id = Some(x.clone()).filter(|x| !x.is_empty());
    }
}

fn delete_user(s: &mut Snapshot, pid: &PlatformId) {
    let i = user_index(s, pid);
    s.users.remove(i);
}

#[test]
fn simulate_apply_applies_the_adoption_golden_plan() {
    // The simulation itself, checked once by hand.
    let (d, s) = adoptable();
    let policy = Policy {
        adopt: true,
        ..Policy::default()
    };
    let after = simulate_apply(&make_plan(&d, &s, &policy), &s);
    assert_eq!(after.customers[0].external_id.as_deref(), Some("acme"));
    assert_eq!(after.users[0].external_id.as_deref(), Some("ada"));
    assert_eq!(after.users[0].customer_external_id.as_deref(), Some("acme"));
    assert_eq!(after.users[0].name, "Ada");
    assert!(make_plan(&d, &after, &policy).operations.is_empty());
}

// ------------------------------------------------------- property tests

mod properties {
    use super::*;

    use proptest::prelude::*;
    use proptest::test_runner::Config as ProptestConfig;

    const NAMES: [&str; 7] = [
        "Acme", "Globex", "Initech", "Umbrella", "Hooli", "Vandelay", "Wayne",
    ];
    /// Emails are compared case-insensitively; `upper` variants test that.
    const EMAILS: [&str; 10] = [
        "ada@x.io", "bob@x.io", "cy@x.io", "dee@x.io", "eve@x.io", "fay@x.io", "gus@x.io",
        "hal@x.io", "ivy@x.io", "jo@x.io",
    ];
    /// Directory customers are `hr-c0..hr-c5`; the platform also has `crm-*`
    /// (out of scope under the prefix `hr-`).
    const CUSTOMER_XS: [&str; 8] = [
        "hr-c0", "hr-c1", "hr-c2", "hr-c3", "hr-c4", "hr-c5", "crm-c0", "crm-c1",
    ];
    const DIRECTORY_CUSTOMERS: usize = 6;
    const USER_XS: [&str; 15] = [
        "hr-u0", "hr-u1", "hr-u2", "hr-u3", "hr-u4", "hr-u5", "hr-u6", "hr-u7", "hr-u8", "hr-u9",
        "hr-u10", "hr-u11", "hr-u12", "crm-u0", "crm-u1",
    ];
    const DIRECTORY_USERS: usize = 13;
    const LABELS: [&str; 4] = ["gold", "EU", "eu", "beta"];
    const TEXTS: [&str; 3] = ["", "vip", "trial"];
    const ROLES: [&str; 2] = ["Admin", "Member"];

    #[derive(Clone, Debug)]
    struct RawPlatformCustomer {
        managed: bool,
        x: usize,
        name: usize,
        description: usize,
        labels: Vec<usize>,
    }

    #[derive(Clone, Debug)]
    struct RawPlatformUser {
        managed: bool,
        x: usize,
        /// Allowed to repeat an externalId already used (ambiguous).
        dup: bool,
        customer: usize,
        email: usize,
        upper: bool,
        name: usize,
        phone: usize,
        role: usize,
    }

    #[derive(Clone, Debug)]
    struct RawDirectoryCustomer {
        present: bool,
        /// None: the name the platform customer with this externalId has (else a name of its own, `New <i>`).
        name: Option<usize>,
        description: Option<usize>,
        labels: Option<Vec<usize>>,
        /// Some, for an externalId the platform does not have: the name of
        /// the n-th platform customer without an externalId (adoption).
        claim: Option<usize>,
    }

    #[derive(Clone, Debug)]
    struct RawDirectoryUser {
        present: bool,
        /// None: the customer the platform user with this externalId is in (if any).
        customer: Option<usize>,
        /// None: the email the platform user with this externalId has (else an email of its own, `new<j>@x.io`).
        email: Option<(usize, bool)>,
        name: Option<usize>,
        phone: Option<usize>,
        role: Option<usize>,
        /// Some: takes the email (and, where the directory has it, the
        /// customer) of the n-th platform user without an externalId, the
        /// way a directory meets a platform filled by hand (adoption).
        claim: Option<usize>,
    }

    /// One generated input: a directory, a snapshot and a policy.
    #[derive(Clone, Debug)]
    struct Case {
        directory: Directory,
        snapshot: Snapshot,
        policy: Policy,
    }

    fn cased(email: &str, upper: bool) -> String {
        if upper {
            let mut c = email.chars();
            let first = c.next().map(|f| f.to_ascii_uppercase());
            first.into_iter().chain(c).collect()
        } else {
            email.to_owned()
        }
    }

    fn raw_platform_customer() -> impl Strategy<Value = RawPlatformCustomer> {
        (
            proptest::bool::weighted(0.8),
            0..CUSTOMER_XS.len(),
            0..NAMES.len(),
            0..TEXTS.len(),
            proptest::collection::vec(0..LABELS.len(), 0..3),
        )
            .prop_map(
                |(managed, x, name, description, labels)| RawPlatformCustomer {
                    managed,
                    x,
                    name,
                    description,
                    labels,
                },
            )
    }

    fn raw_platform_user() -> impl Strategy<Value = RawPlatformUser> {
        (
            (
                proptest::bool::weighted(0.8),
                0..USER_XS.len(),
                proptest::bool::weighted(0.15),
            ),
            any::<usize>(),
            (0..EMAILS.len(), proptest::bool::weighted(0.2)),
            (0..TEXTS.len(), 0..TEXTS.len(), 0..ROLES.len()),
        )
            .prop_map(
                |((managed, x, dup), customer, (email, upper), (name, phone, role))| {
                    RawPlatformUser {
                        managed,
                        x,
                        dup,
                        customer,
                        email,
                        upper,
                        name,
                        phone,
                        role,
                    }
                },
            )
    }

    fn raw_directory_customer() -> impl Strategy<Value = RawDirectoryCustomer> {
        (
            proptest::bool::weighted(0.7),
            proptest::option::weighted(0.3, 0..NAMES.len()),
            proptest::option::of(0..TEXTS.len()),
            proptest::option::of(proptest::collection::vec(0..LABELS.len(), 0..3)),
            proptest::option::weighted(0.25, any::<usize>()),
        )
            .prop_map(
                |(present, name, description, labels, claim)| RawDirectoryCustomer {
                    present,
                    name,
                    description,
                    labels,
                    claim,
                },
            )
    }

    fn raw_directory_user() -> impl Strategy<Value = RawDirectoryUser> {
        (
            proptest::bool::weighted(0.6),
            proptest::option::weighted(0.3, any::<usize>()),
            proptest::option::weighted(0.3, (0..EMAILS.len(), proptest::bool::weighted(0.2))),
            (
                proptest::option::of(0..TEXTS.len()),
                proptest::option::of(0..TEXTS.len()),
                proptest::option::of(0..ROLES.len()),
            ),
            proptest::option::weighted(0.15, any::<usize>()),
        )
            .prop_map(|(present, customer, email, (name, phone, role), claim)| {
                RawDirectoryUser {
                    present,
                    customer,
                    email,
                    name,
                    phone,
                    role,
                    claim,
                }
            })
    }

    /// Refused records: (0 customer externalId, 1 user externalId, 2 email, index).
    fn raw_unknown() -> impl Strategy<Value = Vec<(u8, usize)>> {
        prop_oneof![
            4 => Just(Vec::new()),
            1 => proptest::collection::vec((0u8..3, any::<usize>()), 1..3),
        ]
    }

    fn raw_policy() -> impl Strategy<Value = Policy> {
        (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()).prop_map(
            |(adopt, recreate, delete_customers, prefix)| Policy {
                external_id_prefix: prefix.then(|| "hr-".to_owned()),
                email_change: if recreate {
                    ChangePolicy::Recreate
                } else {
                    ChangePolicy::Report
                },
                adopt,
                delete_customers: if delete_customers {
                    delete_customers_enabled()
                } else {
                    None
                },
                ..Policy::default()
            },
        )
    }

    fn case() -> impl Strategy<Value = Case> {
        (
            proptest::collection::vec(raw_platform_customer(), 0..=7),
            proptest::collection::vec(raw_platform_user(), 0..=10),
            proptest::collection::vec(raw_directory_customer(), DIRECTORY_CUSTOMERS),
            proptest::collection::vec(raw_directory_user(), DIRECTORY_USERS),
            raw_unknown(),
            raw_policy(),
        )
            .prop_map(|(pc, pu, dc, du, unknown, policy)| {
                build_case(&pc, &pu, &dc, &du, &unknown, policy)
            })
    }

    /// Turns raw choices into inputs that hold what the platform and the
    /// mapping guarantee: platform customer names and externalIds unique,
    /// platform emails unique (users' externalIds may repeat, rarely);
    /// directory names and emails unique, every directory user's customer in
    /// the directory, every directory externalId in scope.
    fn build_case(
        pc: &[RawPlatformCustomer],
        pu: &[RawPlatformUser],
        dc: &[RawDirectoryCustomer],
        du: &[RawDirectoryUser],
        unknown: &[(u8, usize)],
        policy: Policy,
    ) -> Case {
        let mut snap = Snapshot {
            roles: platform_roles(),
            ..Snapshot::default()
        };
        for (i, r) in pc.iter().enumerate() {
            let x = r.managed.then(|| CUSTOMER_XS[r.x].to_owned());
            let name = NAMES[r.name];
            if snap
                .customers
                .iter()
                .any(|c| c.name == name || (x.is_some() && c.external_id == x))
            {
                continue;
            }
            snap.customers.push(PlatformCustomer {
                id: PlatformId::from(format!("C{i}")),
                external_id: x,
                name: name.to_owned(),
                description: TEXTS[r.description].to_owned(),
                labels: r.labels.iter().map(|l| LABELS[*l].to_lowercase()).collect(),
                updated_at: None,
            });
        }
        if !snap.customers.is_empty() {
            for (i, r) in pu.iter().enumerate() {
                let x = r.managed.then(|| USER_XS[r.x].to_owned());
                let email = cased(EMAILS[r.email], r.upper);
                let taken_x = x.is_some() && snap.users.iter().any(|u| u.external_id == x);
                if (taken_x && !r.dup)
                    || snap
                        .users
                        .iter()
                        .any(|u| u.email.eq_ignore_ascii_case(&email))
                {
                    continue;
                }
                let c = &snap.customers[r.customer % snap.customers.len()];
                let user = PlatformUser {
                    id: PlatformId::from(format!("U{i}")),
                    external_id: x,
                    email,
                    name: TEXTS[r.name].to_owned(),
                    phone: TEXTS[r.phone].to_owned(),
                    role: role(ROLES[r.role]).into(),
                    customer_id: c.id.clone(),
                    customer_external_id: c.external_id.clone(),
                    updated_at: None,
                };
                snap.users.push(user);
            }
        }

        let mut d = Directory::default();
        for (i, r) in dc.iter().enumerate() {
            let x = CUSTOMER_XS[i];
            let on_platform = snap
                .customers
                .iter()
                .find(|c| c.external_id.as_deref() == Some(x));
            let unmanaged: Vec<&PlatformCustomer> = snap
                .customers
                .iter()
                .filter(|c| c.external_id.is_none())
                .collect();
            let claimed = r
                .claim
                .filter(|_| on_platform.is_none() && !unmanaged.is_empty())
                .map(|k| unmanaged[k % unmanaged.len()]);
            let name = match (r.name, on_platform.or(claimed)) {
                (Some(n), _) if claimed.is_none() => NAMES[n].to_owned(),
                (_, Some(c)) => c.name.clone(),
                (_, None) => format!("New {i}"),
            };
            if !r.present || d.customers.values().any(|c| c.name == name) {
                continue;
            }
            d.customers.insert(
                x.to_owned(),
                DesiredCustomer {
                    external_id: x.to_owned(),
                    name,
                    description: r.description.map(|t| TEXTS[t].to_owned()),
                    labels: r
                        .labels
                        .as_ref()
                        .map(|ls| normalise_labels(ls.iter().map(|l| LABELS[*l]))),
                    origin: origin(i as u64 + 2),
                },
            );
        }
        let present: Vec<String> = d.customers.keys().cloned().collect();
        if !present.is_empty() {
            for (j, r) in du.iter().enumerate() {
                let x = USER_XS[j];
                let on_platform = snap
                    .users
                    .iter()
                    .find(|u| u.external_id.as_deref() == Some(x));
                let unmanaged: Vec<&PlatformUser> = snap
                    .users
                    .iter()
                    .filter(|u| u.external_id.is_none())
                    .collect();
                let claimed = r
                    .claim
                    .filter(|_| !unmanaged.is_empty())
                    .map(|k| unmanaged[k % unmanaged.len()]);
                // The directory customer that is (or adopts) a platform customer.
                let directory_customer_of = |pid: &PlatformId| {
                    let c = snap.customers.iter().find(|c| c.id == *pid)?;
                    d.customers
                        .values()
                        .find(|dc| match &c.external_id {
                            Some(cx) => dc.external_id == *cx,
                            None => dc.name == c.name,
                        })
                        .map(|dc| dc.external_id.clone())
                };
                let home = on_platform
                    .or(claimed)
                    .and_then(|u| directory_customer_of(&u.customer_id));
                let customer = match (r.customer, home) {
                    (Some(k), _) if claimed.is_none() => present[k % present.len()].clone(),
                    (_, Some(c)) => c,
                    (_, None) => present[j % present.len()].clone(),
                };
                let email = match (r.email, claimed.or(on_platform)) {
                    (Some((e, upper)), _) if claimed.is_none() => cased(EMAILS[e], upper),
                    (_, Some(u)) => u.email.clone(),
                    (_, None) => format!("new{j}@x.io"),
                };
                if !r.present
                    || d.users
                        .values()
                        .any(|u| u.email().eq_ignore_ascii_case(&email))
                {
                    continue;
                }
                d.users.insert(DesiredUser::new(UserParts {
                    external_id: x,
                    customer_external_id: customer.into(),
                    email: &email,
                    name: r.name.map(|t| TEXTS[t]),
                    phone: r.phone.map(|t| TEXTS[t]),
                    role: r.role.map(|t| ROLES[t].into()),
                    origin: origin(j as u64 + 2),
                }));
            }
        }
        for (n, (kind, k)) in unknown.iter().enumerate() {
            match kind {
                0 => {
                    d.unknown
                        .customer_external_ids
                        .insert(CUSTOMER_XS[k % DIRECTORY_CUSTOMERS].to_owned());
                }
                1 => {
                    d.unknown
                        .user_external_ids
                        .insert(USER_XS[k % DIRECTORY_USERS].to_owned());
                }
                _ => {
                    d.unknown
                        .user_emails
                        .insert(EMAILS[k % EMAILS.len()].to_owned());
                }
            }
            d.refused.push(RefusedRecord {
                origin: origin(100 + n as u64),
                field: None,
                message: "refused".to_owned(),
            });
        }
        Case {
            directory: d,
            snapshot: with_holdings(snap),
            policy,
        }
    }

    fn plan_of(case: &Case, snapshot: &Snapshot) -> Plan {
        plan(&case.directory, snapshot, &case.policy, &role_table()).expect("roles exist")
    }

    /// The plan with each phase's operations in reverse: apply runs a
    /// phase's operations concurrently, so no order within a phase is promised.
    fn reversed_within_phases(p: &Plan) -> Plan {
        let mut ops: Vec<Operation> = p.operations.iter().rev().cloned().collect();
        ops.sort_by_key(Operation::phase);
        Plan {
            operations: ops,
            ..p.clone()
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 64,
            // Keep the tree clean: no proptest-regressions/ files next to the tests.
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// (a) Same inputs, same plan, byte for byte; and the order the
        /// platform lists records in does not matter either.
        #[test]
        fn planning_is_deterministic(case in case()) {
            let first = plan_of(&case, &case.snapshot);
            let second = plan_of(&case, &case.snapshot);
            prop_assert_eq!(&first, &second);
            prop_assert_eq!(
                serde_json::to_string(&first).unwrap(),
                serde_json::to_string(&second).unwrap()
            );
            prop_assert_eq!(render::text(&first), render::text(&second));
            let mut shuffled = case.snapshot.clone();
            shuffled.customers.reverse();
            shuffled.users.reverse();
            let third = plan_of(&case, &shuffled);
            prop_assert_eq!(
                serde_json::to_string(&first).unwrap(),
                serde_json::to_string(&third).unwrap()
            );
        }

        /// (b) Deletes (DeleteUser, DeleteCustomer and the users it takes
        /// along, RecreateUser's old user) and updates only ever target
        /// managed records (an externalId in scope), adoptions only records
        /// without an externalId, and no platform record is the target of two
        /// operations.
        #[test]
        fn only_managed_records_are_deleted_or_updated(case in case()) {
            let p = plan_of(&case, &case.snapshot);
            let s = &case.snapshot;
            let policy = &case.policy;
            let find_user = |pid: &PlatformId| s.users.iter().find(|u| u.id == *pid)
                .unwrap_or_else(|| panic!("no platform user {pid}"));
            let find_customer = |pid: &PlatformId| s.customers.iter().find(|c| c.id == *pid)
                .unwrap_or_else(|| panic!("no platform customer {pid}"));
            let mut targets: Vec<&PlatformId> = Vec::new();
            let mut deleted_customers: Vec<&PlatformId> = Vec::new();
            for op in &p.operations {
                match op {
                    Operation::DeleteUser { id, external_id, .. }
                    | Operation::UpdateUser { id, external_id, .. } => {
                        let u = find_user(id);
                        prop_assert_eq!(u.external_id.as_deref(), Some(external_id.as_str()));
                        prop_assert!(policy.in_scope(u.external_id.as_deref()), "{:?}", op);
                        targets.push(id);
                    }
                    Operation::RecreateUser { old_id, create, .. } => {
                        let u = find_user(old_id);
                        prop_assert_eq!(u.external_id.as_deref(), Some(create.external_id.as_str()));
                        prop_assert!(policy.in_scope(u.external_id.as_deref()), "{:?}", op);
                        targets.push(old_id);
                    }
                    Operation::UpdateCustomer { id, external_id, .. } => {
                        let c = find_customer(id);
                        prop_assert_eq!(c.external_id.as_deref(), Some(external_id.as_str()));
                        prop_assert!(policy.in_scope(c.external_id.as_deref()), "{:?}", op);
                        targets.push(id);
                    }
                    Operation::DeleteCustomer { id, external_id, users, .. } => {
                        let c = find_customer(id);
                        prop_assert_eq!(c.external_id.as_deref(), Some(external_id.as_str()));
                        prop_assert!(policy.in_scope(c.external_id.as_deref()), "{:?}", op);
                        let members: Vec<&PlatformUser> =
                            s.users.iter().filter(|u| u.customer_id == *id).collect();
                        prop_assert_eq!(members.len(), *users);
                        for m in members {
                            prop_assert!(
                                policy.in_scope(m.external_id.as_deref()),
                                "{:?} takes along the unmanaged user {:?}", op, m
                            );
                            targets.push(&m.id);
                        }
                        targets.push(id);
                        deleted_customers.push(id);
                    }
                    Operation::AdoptCustomer { id, .. } => {
                        prop_assert_eq!(find_customer(id).external_id.as_deref(), None);
                        targets.push(id);
                    }
                    Operation::AdoptUser { id, .. } => {
                        prop_assert_eq!(find_user(id).external_id.as_deref(), None);
                        targets.push(id);
                    }
                    Operation::CreateCustomer(_) | Operation::CreateUser(_) => {}
                }
            }
            let distinct: BTreeSet<&PlatformId> = targets.iter().copied().collect();
            prop_assert_eq!(distinct.len(), targets.len(), "a record is targeted twice: {:?}", p.operations);
            prop_assert_eq!(p.customer_deletes(), deleted_customers.len());
        }

        /// (c) Convergence: applying the plan (as the platform would, in the
        /// plan's order and with each phase reversed, since apply runs a
        /// phase's operations concurrently) and planning again with the same
        /// directory gives a plan with no operations.
        ///
        /// Excluded: first plans with conflicts (`prop_assume!`). A conflict
        /// is a record the planner knowingly leaves for later (a name or email
        /// held by another record, a look-alike without adoption, an
        /// ambiguous externalId, and, by design, a create or recreate whose
        /// email a leaving or recreated user frees only during this run), so
        /// the next plan may legitimately act on it. Drift under
        /// `email_change: report` is not excluded: it is not an operation, so
        /// the next plan still has none.
        ///
        /// One known two-run case is allowed, and only it: a customer that
        /// leaves the directory while a user it holds is recreated in another
        /// customer is kept this run (the directory still lists that user) and
        /// deleted on the next; the run after that must have nothing to do.
        #[test]
        fn applying_the_plan_converges(case in case()) {
            let first = plan_of(&case, &case.snapshot);
            prop_assume!(first.conflicts.is_empty());
            let moved_out_of: BTreeSet<String> = first
                .operations
                .iter()
                .filter_map(|op| match op {
                    Operation::RecreateUser { old_id, .. } => case
                        .snapshot
                        .users
                        .iter()
                        .find(|u| u.id == *old_id)
                        .and_then(|u| u.customer_external_id.clone()),
                    _ => None,
                })
                .collect();
            for order in [first.clone(), reversed_within_phases(&first)] {
                let after = simulate_apply(&order, &case.snapshot);
                let second = plan_of(&case, &after);
                let unexpected = second.operations.iter().any(|op| match op {
                    Operation::DeleteCustomer { external_id, .. } => {
                        !moved_out_of.contains(external_id)
                            || !first.kept.iter().any(|k| k.kind == "customer" && k.external_id == *external_id)
                    }
                    _ => true,
                });
                prop_assert!(
                    !unexpected,
                    "not converged; first plan:\n{}\nsecond plan:\n{}",
                    render::text(&first),
                    render::text(&second)
                );
                let third = plan_of(&case, &simulate_apply(&second, &after));
                prop_assert!(
                    third.operations.is_empty(),
                    "not converged in two runs; second plan:\n{}\nthird plan:\n{}",
                    render::text(&second),
                    render::text(&third)
                );
            }
        }
    }

    /// The generator makes the inputs the properties are about: without
    /// this, a generator that drifted into only trivial or only conflicting
    /// cases would pass every property vacuously.
    #[test]
    fn the_generator_covers_the_interesting_cases() {
        use proptest::strategy::ValueTree;
        use proptest::test_runner::TestRunner;
        let mut runner = TestRunner::deterministic();
        let strategy = case();
        let mut seen: BTreeMap<&'static str, usize> = BTreeMap::new();
        for _ in 0..400 {
            let case = strategy.new_tree(&mut runner).unwrap().current();
            let p = plan_of(&case, &case.snapshot);
            let mut note = |what: &'static str, yes: bool| {
                if yes {
                    *seen.entry(what).or_default() += 1;
                }
            };
            let convergent = p.conflicts.is_empty();
            note("no conflicts", convergent);
            for op in &p.operations {
                let what = match op {
                    Operation::CreateCustomer(_) => "createCustomer",
                    Operation::UpdateCustomer { .. } => "updateCustomer",
                    Operation::AdoptCustomer { .. } => "adoptCustomer",
                    Operation::CreateUser(_) => "createUser",
                    Operation::UpdateUser { .. } => "updateUser",
                    Operation::AdoptUser { .. } => "adoptUser",
                    Operation::RecreateUser { .. } => "recreateUser",
                    Operation::DeleteUser { .. } => "deleteUser",
                    Operation::DeleteCustomer { .. } => "deleteCustomer",
                };
                note(what, convergent);
            }
            note("drift", !p.drift.is_empty());
            note("kept", !p.kept.is_empty());
            note(
                "ambiguous",
                p.conflicts
                    .iter()
                    .any(|c| c.reason.contains("more than one")),
            );
            note(
                "unmanaged",
                case.snapshot.users.iter().any(|u| u.external_id.is_none()),
            );
        }
        for what in [
            "no conflicts",
            "createCustomer",
            "updateCustomer",
            "adoptCustomer",
            "createUser",
            "updateUser",
            "adoptUser",
            "recreateUser",
            "deleteUser",
            "deleteCustomer",
            "drift",
            "kept",
            "ambiguous",
            "unmanaged",
        ] {
            assert!(
                seen.get(what).copied().unwrap_or(0) >= 3,
                "the generator rarely makes {what:?} (in conflict-free plans, for operations): {seen:?}"
            );
        }
    }
}
