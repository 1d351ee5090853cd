//! The saved plan's file format (round trip, refusals by name, line and
//! column), the record states captured from a snapshot, the pure comparison
//! with the platform as re-read, and the guards at apply.

use std::path::Path;

use chrono::{DateTime, TimeZone, Utc};

use super::apply::{guards, only};
use super::records::capture;
use super::verify::{compare, Current, Reads};
use super::*;
use crate::config::{Budget, Policy};
use crate::directory::Origin;
use crate::model::{CustomerHoldings, PlatformCustomer, PlatformId, PlatformUser, Snapshot};
use crate::plan::{
    Conflict, CustomerCreate, DeleteReason, FieldChange, Kept, Operation, Scope, UserCreate,
};

fn at(secs: i64) -> Option<DateTime<Utc>> {
    Utc.timestamp_opt(1_700_000_000 + secs, 123_456_000)
        .single()
}

fn role(id: &str, name: &str) -> Role {
    Role {
        id: PlatformId::from(id),
        name: name.to_owned(),
    }
}

fn pcustomer(id: &str, x: &str, name: &str) -> PlatformCustomer {
    PlatformCustomer {
        id: PlatformId::from(id),
        external_id: Some(x.to_owned()),
        name: name.to_owned(),
        description: String::new(),
        labels: vec!["gold".to_owned()],
        updated_at: at(0),
    }
}

fn puser(id: &str, x: &str, customer: &PlatformCustomer) -> PlatformUser {
    PlatformUser {
        id: PlatformId::from(id),
        external_id: Some(x.to_owned()),
        email: format!("{x}@example.com"),
        name: format!("User {x}"),
        phone: String::new(),
        role: role("R1", "Member").into(),
        customer_id: customer.id.clone(),
        customer_external_id: customer.external_id.clone(),
        updated_at: at(1),
    }
}

/// The platform the plan below was made from: `acme` (with user `u1`) and
/// `old` (to delete, holding 2 users).
fn snapshot() -> Snapshot {
    let acme = pcustomer("C1", "acme", "Acme");
    let old = pcustomer("C2", "old", "Old Co");
    let u1 = puser("U1", "u1", &acme);
    let mut s = Snapshot {
        users: vec![u1],
        customers: vec![acme, old],
        roles: vec![role("R1", "Member"), role("R2", "Admin")],
        ..Snapshot::default()
    };
    s.holdings.insert(
        PlatformId::from("C2"),
        CustomerHoldings {
            users: 2,
            instances: 0,
        },
    );
    s
}

/// One operation of each shape the states distinguish.
fn plan() -> Plan {
    Plan {
        operations: vec![
            Operation::CreateCustomer(CustomerCreate {
                external_id: "new".to_owned(),
                name: "New Co".to_owned(),
                description: None,
                labels: None,
            }),
            Operation::UpdateCustomer {
                id: PlatformId::from("C1"),
                external_id: "acme".to_owned(),
                changes: vec![FieldChange {
                    field: "name".into(),
                    before: "Acme".to_owned(),
                    after: "Acme Rockets".to_owned(),
                }],
                patch: crate::model::CustomerChanges {
                    name: Some("Acme Rockets".to_owned()),
                    ..Default::default()
                },
            },
            Operation::CreateUser(UserCreate {
                external_id: "u2".to_owned(),
                customer_external_id: "acme".to_owned(),
                email: "u2@example.com".to_owned(),
                name: None,
                phone: None,
                role: "Admin".to_owned(),
                role_id: PlatformId::from("R2"),
            }),
            Operation::DeleteUser {
                id: PlatformId::from("U1"),
                external_id: "u1".to_owned(),
                email: "u1@example.com".to_owned(),
                customer_external_id: Some("acme".to_owned()),
                why: DeleteReason::Absent,
            },
            Operation::DeleteCustomer {
                id: PlatformId::from("C2"),
                external_id: "old".to_owned(),
                name: "Old Co".to_owned(),
                users: 2,
                instances: 0,
                why: DeleteReason::Absent,
            },
        ],
        kept: vec![Kept {
            kind: "customer",
            external_id: "keep".to_owned(),
            reason: "holds a marketplace user".to_owned(),
        }],
        conflicts: vec![Conflict {
            kind: "user",
            external_id: "dup".to_owned(),
            reason: "more than one".to_owned(),
        }],
        scope: Scope {
            managed_customers: 2,
            managed_users: 3,
            directory_customers: 2,
            directory_users: 2,
        },
        ..Plan::default()
    }
}

fn saved() -> SavedPlan {
    let plan = plan();
    let (records, roles) = capture(&plan, &snapshot()).expect("every record is in the snapshot");
    SavedPlan {
        format: FORMAT.to_owned(),
        version: VERSION,
        dirsync_version: "0.1.0".to_owned(),
        created_at: Utc
            .timestamp_opt(1_700_000_100, 0)
            .single()
            .expect("a time"),
        allow_deletes: false,
        config_digest: digest(b"config"),
        config_path: "dirsync.yaml".into(),
        plan,
        blocked: Vec::new(),
        records,
        roles,
    }
}

/// The platform exactly as the plan saw it, re-read.
fn unchanged(saved: &SavedPlan) -> Current {
    let s = snapshot();
    let reads = Reads::of(saved);
    let mut current = Current {
        roles: s.roles.clone(),
        ..Current::default()
    };
    for id in &reads.customers {
        let c = s.customers.iter().find(|c| &c.id == id);
        current
            .customers
            .insert(id.clone(), c.map(CustomerRecord::from));
    }
    for id in &reads.users {
        let u = s.users.iter().find(|u| &u.id == id);
        current.users.insert(id.clone(), u.map(UserRecord::from));
    }
    for id in &reads.holdings {
        current
            .holdings
            .insert(id.clone(), s.holdings.get(id).copied());
    }
    for x in &reads.customer_external_ids {
        current.customer_external_ids.insert(x.clone(), None);
    }
    for x in &reads.user_external_ids {
        current.user_external_ids.insert(x.clone(), None);
    }
    current
}

#[test]
fn every_operation_records_the_state_it_was_computed_from() {
    let s = saved();
    assert_eq!(s.records.len(), s.plan.operations.len());
    assert!(
        matches!(&s.records[0], RecordState::NoCustomer { external_id } if external_id == "new")
    );
    assert!(matches!(
        &s.records[1],
        RecordState::Customer { customer, holdings: None }
            if customer.id.as_str() == "C1" && customer.updated_at == at(0)
    ));
    assert!(matches!(
        &s.records[2],
        RecordState::NoUser { external_id, customer: Some(c) }
            if external_id == "u2" && c.id.as_str() == "C1"
    ));
    assert!(matches!(
        &s.records[3],
        RecordState::User { user, customer: None } if user.id.as_str() == "U1" && user.updated_at == at(1)
    ));
    assert!(matches!(
        &s.records[4],
        RecordState::Customer { holdings: Some(h), .. } if h.users == 2
    ));
    assert_eq!(
        s.roles,
        vec![role("R2", "Admin")],
        "only the roles it names"
    );
    let reads = Reads::of(&s);
    assert_eq!(
        reads.customers.len(),
        2,
        "acme once, though two operations name it"
    );
    assert_eq!(reads.count(), 2 + 1 + 1 + 1 + 1);
}

#[test]
fn an_operation_whose_record_is_not_in_the_snapshot_is_not_saved() {
    let mut s = snapshot();
    s.users.clear();
    let err = capture(&plan(), &s).unwrap_err();
    assert!(
        err.contains("delete user u1") && err.contains("U1"),
        "{err}"
    );
}

#[test]
fn a_saved_plan_reads_back_as_written_and_its_kinds_stay_as_they_were() {
    let s = saved();
    let text = serde_json::to_string_pretty(&s).unwrap();
    let back = SavedPlan::parse(&text, Path::new("plan.json")).unwrap();
    assert_eq!(back, s);
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["format"], "dirsync-plan");
    assert_eq!(json["version"], 1);
    assert_eq!(json["plan"]["kept"][0]["kind"], "customer");
    assert_eq!(json["plan"]["conflicts"][0]["kind"], "user");
    assert_eq!(json["records"][1]["basis"], "customer");
    assert_eq!(
        json["records"][1]["customer"]["updatedAt"],
        "2023-11-14T22:13:20.123456Z"
    );
    assert_eq!(
        serde_json::to_value(&back.plan).unwrap(),
        serde_json::to_value(plan()).unwrap(),
        "the plan's JSON is unchanged by the round trip"
    );
}

#[test]
fn the_file_is_written_atomically_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plan.json");
    std::fs::write(&path, "old").unwrap();
    saved().write(&path).unwrap();
    assert_eq!(SavedPlan::load(&path).unwrap(), saved());
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(left.len(), 1, "no temporary file is left behind");
}

#[test]
fn bad_files_are_refused_by_name_with_line_and_column() {
    let p = Path::new("plan.json");
    let err = SavedPlan::parse("{\n  \"format\": \"dirsync-plan\",\n  oops\n}", p).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("plan.json:3:3: not a valid dirsync plan file"),
        "{err}"
    );
    let err = SavedPlan::parse(r#"{"format": "terraform", "version": 1}"#, p).unwrap_err();
    assert_eq!(
        err.to_string(),
        "plan.json: not a dirsync plan file: format \"terraform\", where a saved plan says \"dirsync-plan\""
    );
    let err = SavedPlan::parse(r#"{"version": 1}"#, p).unwrap_err();
    assert!(err.to_string().contains("format missing"), "{err}");
    let err = SavedPlan::parse(r#"{"format": "dirsync-plan", "version": 2}"#, p).unwrap_err();
    assert!(
        err.to_string().starts_with(
            "plan.json: plan file version 2 is not one this dirsync reads (version 1)"
        ),
        "{err}"
    );
    // The right header, a field of the wrong type: its path and place.
    let mut json = serde_json::to_value(saved()).unwrap();
    json["allowDeletes"] = serde_json::json!("yes");
    let text = serde_json::to_string_pretty(&json).unwrap();
    let err = SavedPlan::parse(&text, p).unwrap_err();
    assert!(
        matches!(&err, SavedPlanError::Json { message, line, .. } if message.starts_with("allowDeletes: invalid type") && *line > 1),
        "{err}"
    );
    // Parts that do not fit together: an edited file.
    let mut s = saved();
    s.records.swap(0, 1);
    let text = serde_json::to_string(&s).unwrap();
    let err = SavedPlan::parse(&text, p).unwrap_err();
    assert!(
        err.to_string()
            .contains("record state 0 does not belong to operation 0 (create customer new)"),
        "{err}"
    );
    let mut s = saved();
    s.roles.clear();
    let err = SavedPlan::parse(&serde_json::to_string(&s).unwrap(), p).unwrap_err();
    assert!(err.to_string().contains("role id R2"), "{err}");
}

#[test]
fn the_config_digest_is_the_sha256_of_its_bytes_and_a_change_is_refused() {
    assert_eq!(
        digest(b"abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    let s = saved();
    let config = Path::new("dirsync.yaml");
    let plan = Path::new("plan.json");
    assert!(s.check_config(&digest(b"config"), config, plan).is_ok());
    let err = s
        .check_config(&digest(b"config\n"), config, plan)
        .unwrap_err();
    assert_eq!(err.exit_code(), exit::STALE_PLAN);
    let text = err.to_string();
    assert!(
        text.starts_with("the config changed since the plan was made: dirsync.yaml")
            && text.ends_with("run dirsync plan --out again"),
        "{text}"
    );
}

#[test]
fn an_unchanged_platform_leaves_the_plan_standing() {
    let s = saved();
    assert_eq!(compare(&s, &unchanged(&s)), Vec::<Stale>::new());
}

#[test]
fn a_changed_field_and_updated_at_are_named_with_before_and_after() {
    let s = saved();
    let mut current = unchanged(&s);
    let acme = current
        .customers
        .get_mut(&PlatformId::from("C1"))
        .and_then(Option::as_mut)
        .unwrap();
    acme.name = "Acme Inc".to_owned();
    acme.updated_at = at(60);
    let stale = compare(&s, &current);
    assert_eq!(
        stale.len(),
        1,
        "acme once, though two operations name it: {stale:?}"
    );
    assert_eq!(
        stale[0].to_string(),
        "customer acme (id C1): name \"Acme\" -> \"Acme Inc\"; updatedAt 2023-11-14T22:13:20.123456Z -> 2023-11-14T22:14:20.123456Z"
    );
}

#[test]
fn a_moved_updated_at_alone_is_stale() {
    let s = saved();
    let mut current = unchanged(&s);
    if let Some(Some(u)) = current.users.get_mut(&PlatformId::from("U1")) {
        u.updated_at = at(2);
    }
    let stale = compare(&s, &current);
    assert_eq!(stale.len(), 1);
    assert_eq!(stale[0].kind, "user");
    assert_eq!(stale[0].name, "u1");
    assert!(stale[0].changes[0].starts_with("updatedAt "), "{stale:?}");
}

#[test]
fn a_record_gone_a_create_taken_changed_holdings_and_a_renamed_role_are_all_named() {
    let s = saved();
    let mut current = unchanged(&s);
    current.users.insert(PlatformId::from("U1"), None);
    current.customer_external_ids.insert(
        "new".to_owned(),
        Some(CustomerRecord::from(&pcustomer(
            "C9",
            "new",
            "Someone Else",
        ))),
    );
    current.holdings.insert(
        PlatformId::from("C2"),
        Some(CustomerHoldings {
            users: 3,
            instances: 1,
        }),
    );
    current.roles = vec![role("R1", "Member"), role("R2", "Administrator")];
    let text: Vec<String> = compare(&s, &current)
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(
        text,
        vec![
            "customer new (id C9): a customer with this externalId now exists (\"Someone Else\"), where the plan creates one",
            "user u1 (id U1): gone from the platform",
            "customer old (id C2): users it holds 2 -> 3; instances it holds 0 -> 1",
            "role Admin (id R2): name \"Admin\" -> \"Administrator\"",
        ]
    );
}

#[test]
fn a_user_create_is_stale_when_its_external_id_appeared_or_its_customer_went() {
    let s = saved();
    let mut current = unchanged(&s);
    let acme = pcustomer("C1", "acme", "Acme");
    current.user_external_ids.insert(
        "u2".to_owned(),
        Some(UserRecord::from(&puser("U7", "u2", &acme))),
    );
    current.customers.insert(PlatformId::from("C1"), None);
    let text: Vec<String> = compare(&s, &current)
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(
        text,
        vec![
            "customer acme (id C1): gone from the platform",
            "user u2 (id U7): a user with this externalId now exists (u2@example.com), where the plan creates one",
        ]
    );
}

#[test]
fn a_record_that_was_not_re_read_is_never_taken_as_unchanged() {
    let s = saved();
    let mut current = unchanged(&s);
    current.holdings.clear();
    let stale = compare(&s, &current);
    assert_eq!(stale.len(), 1);
    assert_eq!(stale[0].changes, vec!["not re-read"]);
}

fn delete_budget(max_count: usize) -> Policy {
    Policy {
        delete_users: Budget {
            max_count,
            max_percent: 100.0,
        },
        delete_customers: Some(Budget {
            max_count: 100,
            max_percent: 100.0,
        }),
        max_shrink_percent: 100.0,
        ..Policy::default()
    }
}

#[test]
fn the_recorded_allow_deletes_lifts_the_budgets_at_apply_and_withheld_deletes_stay() {
    let mut s = saved();
    // Three user deletes (u1, and the two users of `old`) reach a budget of 2.
    let blocked = guards(&s, &delete_budget(2));
    assert!(
        matches!(
            blocked[..],
            [BlockReason::UserDeleteBudget { deletes: 3, .. }]
        ),
        "{blocked:?}"
    );
    s.allow_deletes = true;
    assert!(guards(&s, &delete_budget(2)).is_empty());
    // Withheld deletes come from the source read at plan time: kept.
    s.blocked = vec![BlockReason::DeletesWithheld {
        origin: Origin::File {
            file: Path::new("users.csv").into(),
        },
        cause: "the file changed while it was read".to_owned(),
        user_deletes: 3,
        customer_deletes: 1,
    }];
    s.allow_deletes = false;
    let blocked = guards(&s, &delete_budget(2));
    assert_eq!(blocked, s.blocked, "the budgets have nothing to weigh");
    assert_eq!(
        crate::guard::sendable(&s.plan, &blocked).map(|p| p.operations.len()),
        Some(3),
        "creates and updates go on"
    );
}

#[test]
fn only_what_is_sent_is_checked_when_deletes_are_withheld() {
    let s = saved();
    let withheld = vec![BlockReason::DeletesWithheld {
        origin: Origin::File {
            file: Path::new("users.csv").into(),
        },
        cause: "cut short".to_owned(),
        user_deletes: 3,
        customer_deletes: 1,
    }];
    let send = crate::guard::sendable(&s.plan, &withheld).unwrap();
    let checked = only(&s, &send);
    assert_eq!(checked.plan.operations.len(), 3);
    assert_eq!(checked.records, s.records[..3].to_vec());
    assert_eq!(checked.roles, s.roles, "the user create still names R2");
    // A delete that is not sent is not checked: its record may have moved.
    let mut current = unchanged(&checked);
    current.users.clear();
    current.holdings.clear();
    assert!(compare(&checked, &current).is_empty());
    assert_eq!(compare(&s, &current).len(), 2);
}
