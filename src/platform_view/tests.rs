use super::*;

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

fn role(id: &str, name: &str) -> Role {
    Role {
        id: PlatformId::from(id),
        name: name.to_owned(),
    }
}

fn customer(id: &str, external_id: &str) -> PlatformCustomer {
    PlatformCustomer {
        id: PlatformId::from(id),
        external_id: Some(external_id.to_owned()),
        name: format!("Customer {id}"),
        description: String::new(),
        labels: Vec::new(),
        updated_at: None,
    }
}

fn user(id: &str, customer: &str, customer_external_id: &str) -> PlatformUser {
    PlatformUser {
        id: PlatformId::from(id),
        external_id: Some(format!("x-{id}")),
        email: format!("{id}@example.com"),
        name: format!("User {id}"),
        phone: String::new(),
        role: Arc::new(role("r1", "Member")),
        customer_id: PlatformId::from(customer),
        customer_external_id: Some(customer_external_id.to_owned()),
        updated_at: None,
    }
}

fn stored() -> Snapshot {
    Snapshot {
        customers: vec![customer("c1", "ext-1"), customer("c2", "ext-2")],
        users: vec![user("u1", "c1", "ext-1"), user("u2", "c2", "ext-2")],
        roles: vec![role("r1", "Member")],
        holdings: Default::default(),
    }
}

fn changes(
    customers: Vec<PlatformCustomer>,
    users: Vec<PlatformUser>,
    counts: (u64, u64),
) -> Changes {
    Changes {
        customer_count: counts.0,
        user_count: counts.1,
        customers,
        users,
        roles: vec![role("r1", "Member"), role("r2", "Admin")],
    }
}

#[test]
fn a_changed_record_keeps_its_place_and_a_new_one_comes_last() {
    let mut renamed = user("u1", "c1", "ext-1");
    renamed.name = "Renamed".to_owned();
    let merged = merge(
        stored(),
        changes(vec![], vec![renamed, user("u3", "c1", "ext-1")], (2, 3)),
    )
    .unwrap();
    let ids: Vec<&str> = merged.users.iter().map(|u| u.id.as_str()).collect();
    assert_eq!(ids, ["u1", "u2", "u3"]);
    assert_eq!(merged.users[0].name, "Renamed");
    assert_eq!(merged.roles.len(), 2, "the roles are the ones read now");
}

#[test]
fn a_count_below_the_merged_snapshot_is_a_delete_outside_what_was_seen() {
    let err = merge(stored(), changes(vec![], vec![], (2, 1))).unwrap_err();
    assert_eq!(
        err,
        CountMismatch {
            list: "users",
            platform: 1,
            merged: 2
        }
    );
    let err = merge(stored(), changes(vec![], vec![], (1, 2))).unwrap_err();
    assert_eq!(err.list, "customers");
}

#[test]
fn a_delete_and_a_create_that_cancel_out_in_the_count_are_still_caught() {
    // u2 deleted, u3 created: the platform counts 2, the merge holds 3.
    let err = merge(
        stored(),
        changes(vec![], vec![user("u3", "c1", "ext-1")], (2, 2)),
    )
    .unwrap_err();
    assert_eq!((err.platform, err.merged), (2, 3));
}

#[test]
fn a_customer_externalid_change_reaches_its_unchanged_users() {
    let mut moved = customer("c2", "ext-2b");
    moved.name = "Customer c2".to_owned();
    let merged = merge(stored(), changes(vec![moved], vec![], (2, 2))).unwrap();
    assert_eq!(
        merged.users[1].customer_external_id.as_deref(),
        Some("ext-2b")
    );
    assert_eq!(
        merged.users[0].customer_external_id.as_deref(),
        Some("ext-1")
    );
}

#[test]
fn a_renamed_role_reaches_the_stored_users() {
    let mut c = changes(vec![], vec![], (2, 2));
    c.roles = vec![role("r1", "Member (renamed)")];
    let merged = merge(stored(), c).unwrap();
    assert!(merged
        .users
        .iter()
        .all(|u| u.role.name == "Member (renamed)"));
}

fn stored_at(taken_at: &str, last_full: &str) -> StoredSnapshot {
    StoredSnapshot {
        snapshot: stored(),
        taken_at: at(taken_at),
        last_full_read_at: at(last_full),
    }
}

#[test]
fn changes_are_asked_for_from_the_last_read_less_the_margin() {
    let s = stored_at("2026-12-01T10:15:00Z", "2026-12-01T10:00:00Z");
    let since = decide(
        Some(&s),
        Duration::from_secs(3600),
        at("2026-12-01T10:30:00Z"),
    )
    .unwrap();
    assert_eq!(since, at("2026-12-01T10:10:00Z"));
}

#[test]
fn a_full_read_is_due_without_a_snapshot_after_full_every_and_when_full_every_is_zero() {
    let hour = Duration::from_secs(3600);
    assert_eq!(
        decide(None, hour, at("2026-12-01T10:30:00Z")),
        Err(FullReason::NoSnapshot)
    );
    let s = stored_at("2026-12-01T10:45:00Z", "2026-12-01T10:00:00Z");
    assert!(decide(Some(&s), hour, at("2026-12-01T10:59:59Z")).is_ok());
    assert_eq!(
        decide(Some(&s), hour, at("2026-12-01T11:00:00Z")),
        Err(FullReason::Due {
            last_full_read_at: at("2026-12-01T10:00:00Z")
        })
    );
    assert!(matches!(
        decide(Some(&s), Duration::ZERO, at("2026-12-01T10:46:00Z")),
        Err(FullReason::Due { .. })
    ));
}
