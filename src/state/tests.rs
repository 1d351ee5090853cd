//! The state store on real files: snapshots saved and read back (thousands
//! of users), identities, changes on top, damaged and newer files, a writer
//! killed with SIGKILL, and the history with its filters.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::{DateTime, TimeZone, Utc};

use super::history::{parse_since, RunRecord};
use super::snapshot::load_or_warn;
use super::*;
use crate::apply::{ApplyReport, OperationReport, Outcome};
use crate::model::{PlatformCustomer, PlatformId, PlatformUser, Role, Snapshot};
use crate::plan::{DeleteReason, FieldChange, Operation, Plan, UserCreate};
use crate::run::{Reconcile, Requests};

fn identity(platform: &str) -> Identity {
    Identity {
        platform: platform.to_owned(),
        scope: None,
    }
}

fn at(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_796_000_000 + secs, 0).unwrap()
}

/// `customers` customers and `users` users spread over them, with every
/// optional field both set and unset somewhere.
fn snapshot(customers: usize, users: usize) -> Snapshot {
    let roles = vec![
        Role {
            id: PlatformId::from("Role:admin"),
            name: "Admin".into(),
        },
        Role {
            id: PlatformId::from("Role:member"),
            name: "Member".into(),
        },
    ];
    let shared: Vec<Arc<Role>> = roles.iter().cloned().map(Arc::new).collect();
    let customers: Vec<PlatformCustomer> = (0..customers)
        .map(|i| PlatformCustomer {
            id: PlatformId::from(format!("Customer:{i:05}")),
            external_id: (i % 7 != 0).then(|| format!("c{i}")),
            name: format!("Customer {i} “quoted” ünïcode"),
            description: if i % 2 == 0 {
                String::new()
            } else {
                format!("desc {i}")
            },
            labels: (0..i % 3).map(|l| format!("label-{l}")).collect(),
            updated_at: (i % 5 != 0).then(|| {
                Utc.timestamp_opt(1_790_000_000 + i as i64, (i as u32 * 7919) % 1_000_000_000)
                    .unwrap()
            }),
        })
        .collect();
    let users = (0..users)
        .map(|i| {
            let c = &customers[i % customers.len()];
            PlatformUser {
                id: PlatformId::from(format!("User:{i:06}")),
                external_id: (i % 11 != 0).then(|| format!("u{i}")),
                email: format!("user{i}@x.example"),
                name: format!("User {i}"),
                phone: if i % 3 == 0 {
                    String::new()
                } else {
                    format!("+1 555 {i:04}")
                },
                role: Arc::clone(&shared[i % 2]),
                customer_id: c.id.clone(),
                customer_external_id: c.external_id.clone(),
                updated_at: (i % 4 != 0).then(|| {
                    Utc.timestamp_opt(1_790_000_000 + i as i64, 123_456_789)
                        .unwrap()
                }),
            }
        })
        .collect();
    Snapshot {
        customers,
        users,
        roles,
        holdings: Default::default(),
    }
}

#[test]
fn a_snapshot_of_thousands_of_users_comes_back_exactly_in_order() {
    // DIRSYNC_STATE_USERS=100000 cargo test --release --lib state -- --nocapture
    // measures the size the throughput work is about.
    let users: usize = std::env::var("DIRSYNC_STATE_USERS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(5_000);
    let dir = tempfile::tempdir().unwrap();
    let snap = snapshot((users / 25).max(1), users);
    let id = identity("https://example.prismatic.io/api");

    let mut store = StateStore::open(dir.path(), &id).unwrap();
    assert!(
        store.load_snapshot().unwrap().is_none(),
        "a new store holds none"
    );
    assert_eq!(store.last_full_read_at().unwrap(), None);
    let started = Instant::now();
    store.save_snapshot(&snap, at(0)).unwrap();
    let saved_in = started.elapsed();
    drop(store);

    let store = StateStore::open(dir.path(), &id).unwrap();
    let started = Instant::now();
    let loaded = store.load_snapshot().unwrap().expect("a snapshot");
    let loaded_in = started.elapsed();
    println!(
        "state store: {users} users, {} customers: saved in {saved_in:?}, loaded in {loaded_in:?}, file {} bytes",
        snap.customers.len(),
        std::fs::metadata(store.path()).unwrap().len()
            + std::fs::metadata(store.path().with_file_name("dirsync.sqlite3-wal"))
                .map_or(0, |m| m.len())
    );
    assert_eq!(loaded.snapshot, snap);
    assert_eq!(loaded.taken_at, at(0));
    assert_eq!(loaded.last_full_read_at, at(0));
    assert_eq!(store.last_full_read_at().unwrap(), Some(at(0)));
    let customers = loaded.snapshot.customers.len();
    let (first, twin) = (&loaded.snapshot.users[0], &loaded.snapshot.users[customers]);
    assert!(
        Arc::ptr_eq(&first.customer_id.0, &loaded.snapshot.customers[0].id.0)
            && Arc::ptr_eq(&first.customer_id.0, &twin.customer_id.0)
            && Arc::ptr_eq(&first.role, &loaded.snapshot.users[2].role),
        "loaded users share their customer's id and their role, as a read's do"
    );
    // Users with one role share one allocation, as the client builds them.
    let admins: Vec<&PlatformUser> = loaded
        .snapshot
        .users
        .iter()
        .filter(|u| u.role.name == "Admin")
        .collect();
    assert!(admins
        .windows(2)
        .all(|w| Arc::ptr_eq(&w[0].role, &w[1].role)));

    // A full save over a stored snapshot (every run after the first), and
    // a hundred changed users on top of it.
    drop(store);
    let mut store = StateStore::open(dir.path(), &id).unwrap();
    let started = Instant::now();
    store.save_snapshot(&snap, at(30)).unwrap();
    let resaved_in = started.elapsed();
    let changed: Vec<PlatformUser> = snap
        .users
        .iter()
        .step_by((users / 100).max(1))
        .map(|u| PlatformUser {
            phone: "+1 555 0000".into(),
            ..u.clone()
        })
        .collect();
    let started = Instant::now();
    assert!(store.apply_changes(&[], &changed, &[], at(40)).unwrap());
    let changed_in = started.elapsed();
    println!(
        "state store: {users} users: saved again over the stored snapshot in {resaved_in:?}, {} changed users applied in {changed_in:?}",
        changed.len()
    );
    assert_eq!(store.load_snapshot().unwrap().unwrap().taken_at, at(40));

    // A smaller full save replaces the bigger one whole.
    let smaller = snapshot(3, 10);
    store.save_snapshot(&smaller, at(60)).unwrap();
    let loaded = store.load_snapshot().unwrap().unwrap();
    assert_eq!(loaded.snapshot, smaller);
    assert_eq!(loaded.taken_at, at(60));
}

#[test]
fn the_file_is_private_and_in_wal_mode() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state/nested");
    let store = StateStore::open(&state, &identity("emulator:/x")).unwrap();
    assert_eq!(store.path(), state.join("dirsync.sqlite3"));
    let mode = std::fs::metadata(store.path())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    let journal: String = store
        .conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(journal, "wal");
    let version: i64 = store
        .conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, schema::VERSION);
}

#[test]
fn a_store_of_another_platform_or_scope_yields_no_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let mine = identity("https://a.example/api");
    let mut store = StateStore::open(dir.path(), &mine).unwrap();
    store.save_snapshot(&snapshot(2, 5), at(0)).unwrap();
    drop(store);

    for other in [
        identity("https://b.example/api"),
        Identity {
            platform: "https://a.example/api".into(),
            scope: Some("hr-".into()),
        },
        Identity {
            platform: "https://a.example/api".into(),
            scope: Some(String::new()),
        },
    ] {
        let mut store = StateStore::open(dir.path(), &other).unwrap();
        assert!(store.load_snapshot().unwrap().is_none(), "{other:?}");
        assert_eq!(store.last_full_read_at().unwrap(), None);
        assert!(
            !store
                .apply_changes(&[], &[], &[PlatformId::from("User:000001")], at(5))
                .unwrap(),
            "nothing to build on"
        );
    }
    let store = StateStore::open(dir.path(), &mine).unwrap();
    assert_eq!(
        store.load_snapshot().unwrap().unwrap().snapshot,
        snapshot(2, 5),
        "looking with another identity changed nothing"
    );
}

#[test]
fn the_identity_holds_the_platform_and_scope_and_no_secret() {
    let text = format!(
        "{}policy:\n  external_id_prefix: hr-\n",
        crate::config::tests::MINIMAL.replace(
            "platform:\n  emulator:\n    state: state.json\n",
            "platform:\n  url: https://user:hunter2@acme.prismatic.io/api?token=hunter2#x\n  token: { env: PRISMATIC_API_KEY }\n",
        )
    );
    let config = Config::parse(&text, Path::new("conf/dirsync.yaml")).unwrap();
    let id = Identity::of(&config);
    assert_eq!(id.platform, "https://acme.prismatic.io/api");
    assert_eq!(id.scope.as_deref(), Some("hr-"));
    assert!(!format!("{id:?}{}", id.digest()).contains("hunter2"));

    let emulated = Config::parse(
        crate::config::tests::MINIMAL,
        Path::new("conf/dirsync.yaml"),
    )
    .unwrap();
    let id = Identity::of(&emulated);
    assert!(id.platform.starts_with("emulator:/"), "{}", id.platform);
    assert!(id.platform.ends_with("conf/state.json"), "{}", id.platform);
}

#[test]
fn changes_on_top_of_a_snapshot_keep_its_order_and_move_only_its_time() {
    let dir = tempfile::tempdir().unwrap();
    let id = identity("https://a.example/api");
    let mut store = StateStore::open(dir.path(), &id).unwrap();
    let mut expected = snapshot(3, 9);
    store.save_snapshot(&expected, at(0)).unwrap();

    // User 4 changes its phone; a new user and a new customer appear; user 2
    // goes; customer 1 goes and takes its users (1, 4 and 7).
    let mut changed = expected.users[4].clone();
    changed.phone = "+1 555 9999".into();
    let new_customer = PlatformCustomer {
        id: PlatformId::from("Customer:new"),
        external_id: Some("cnew".into()),
        name: "New".into(),
        description: String::new(),
        labels: vec!["gold".into()],
        updated_at: Some(at(30)),
    };
    let mut new_user = expected.users[0].clone();
    new_user.id = PlatformId::from("User:new");
    new_user.external_id = Some("unew".into());
    new_user.email = "new@x.example".into();
    new_user.customer_id = new_customer.id.clone();
    new_user.customer_external_id = new_customer.external_id.clone();
    let gone = [
        PlatformId::from("User:000002"),
        PlatformId::from("Customer:00001"),
    ];
    assert!(store
        .apply_changes(
            std::slice::from_ref(&new_customer),
            &[changed.clone(), new_user.clone()],
            &gone,
            at(30),
        )
        .unwrap());

    expected.users[4] = changed;
    expected.users.push(new_user);
    expected.customers.push(new_customer);
    expected
        .users
        .retain(|u| u.id.as_str() != "User:000002" && u.customer_id.as_str() != "Customer:00001");
    expected
        .customers
        .retain(|c| c.id.as_str() != "Customer:00001");

    let loaded = store.load_snapshot().unwrap().unwrap();
    assert_eq!(loaded.snapshot, expected);
    assert_eq!(loaded.taken_at, at(30));
    assert_eq!(loaded.last_full_read_at, at(0), "not a full read");
}

/// Log lines written while `f` runs.
fn logs_of(f: impl FnOnce()) -> String {
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);
    impl Write for Buffer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, f);
    let bytes = buffer.0.lock().unwrap().clone();
    String::from_utf8(bytes).unwrap()
}

#[test]
fn a_damaged_file_is_reported_treated_as_missing_and_set_aside() {
    let dir = tempfile::tempdir().unwrap();
    let id = identity("https://a.example/api");
    let file = dir.path().join("dirsync.sqlite3");
    std::fs::write(
        &file,
        b"this is no database, just bytes that are long enough to be a header and then some more "
            .repeat(50),
    )
    .unwrap();

    let mut loaded = Some(None);
    let logs = logs_of(|| loaded = Some(load_or_warn(dir.path(), &id)));
    assert_eq!(loaded, Some(None));
    assert!(logs.contains("WARN"), "{logs}");
    assert!(
        logs.contains(&file.display().to_string()),
        "names the file: {logs}"
    );
    assert!(logs.contains("moved to"), "{logs}");
    let aside: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("dirsync.sqlite3.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "the damaged file is kept aside: {aside:?}");

    // A new store took its place and works.
    let mut store = StateStore::open(dir.path(), &id).unwrap();
    store.save_snapshot(&snapshot(1, 2), at(0)).unwrap();
    assert!(store.load_snapshot().unwrap().is_some());
}

#[test]
fn a_damaged_page_or_a_newer_schema_is_a_warning_and_no_snapshot_never_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let id = identity("https://a.example/api");
    let mut store = StateStore::open(dir.path(), &id).unwrap();
    store.save_snapshot(&snapshot(4, 400), at(0)).unwrap();
    drop(store);
    // Scribble over the middle of the file (the tables' pages), not the header.
    let file = dir.path().join("dirsync.sqlite3");
    let mut bytes = std::fs::read(&file).unwrap();
    assert!(bytes.len() > 16_384, "{}", bytes.len());
    for b in &mut bytes[8_192..16_384] {
        *b = 0xA5;
    }
    std::fs::write(&file, &bytes).unwrap();
    let mut loaded = Some(None);
    let logs = logs_of(|| loaded = Some(load_or_warn(dir.path(), &id)));
    assert_eq!(loaded, Some(None), "treated as missing");
    assert!(logs.contains("WARN"), "{logs}");
    assert!(logs.contains(&file.display().to_string()), "{logs}");

    // Written by a newer dirsync: reported, and left alone.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dirsync.sqlite3");
    let conn = rusqlite::Connection::open(&file).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let before = std::fs::read(&file).unwrap();
    let err = StateStore::open(dir.path(), &id).unwrap_err();
    assert!(err.to_string().contains("newer dirsync"), "{err}");
    assert!(
        err.to_string().contains(&file.display().to_string()),
        "{err}"
    );
    let logs = logs_of(|| assert_eq!(load_or_warn(dir.path(), &id), None));
    assert!(logs.contains("newer dirsync"), "{logs}");
    assert_eq!(std::fs::read(&file).unwrap(), before, "left alone");
}

/// Not a test of its own: with `DIRSYNC_STATE_CRASH_DIR` set, the child of
/// [`a_writer_killed_with_sigkill_leaves_the_last_whole_snapshot`] saves
/// snapshots there forever, saying "saved N" after each.
#[test]
fn crash_writer() {
    let Some(dir) = std::env::var_os("DIRSYNC_STATE_CRASH_DIR") else {
        return;
    };
    let mut store = StateStore::open(Path::new(&dir), &identity("crash")).unwrap();
    let mut out = std::io::stdout();
    for n in 1.. {
        let mut snap = snapshot(40, 2_000);
        for u in &mut snap.users {
            u.name = format!("generation {n}");
        }
        store.save_snapshot(&snap, at(n)).unwrap();
        writeln!(out, "saved {n}").unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn a_writer_killed_with_sigkill_leaves_the_last_whole_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "state::tests::crash_writer",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("DIRSYNC_STATE_CRASH_DIR", dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // Killed while its fourth save is under way (or just after it).
    let mut seen = 0;
    while seen < 3 {
        let line = lines
            .next()
            .expect("the writer says how far it got")
            .unwrap();
        if let Some(n) = line.strip_prefix("saved ") {
            seen = n.trim().parse().unwrap();
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();

    let store = StateStore::open(dir.path(), &identity("crash")).unwrap();
    let loaded = store.load_snapshot().unwrap().expect("a snapshot survives");
    let n = (loaded.taken_at - at(0)).num_seconds();
    assert!(n >= 3, "at least the third save is there: {n}");
    assert_eq!(loaded.snapshot.users.len(), 2_000, "whole, never half");
    let generation = format!("generation {n}");
    assert!(
        loaded.snapshot.users.iter().all(|u| u.name == generation),
        "every row from the save its time says"
    );
}

fn user_update(external_id: &str, before: &str, after: &str) -> Operation {
    Operation::UpdateUser {
        id: PlatformId::from(format!("User:{external_id}")),
        external_id: external_id.into(),
        email: format!("{external_id}@x.example"),
        customer_external_id: Some("acme".into()),
        changes: vec![FieldChange {
            field: "phone".into(),
            before: before.into(),
            after: after.into(),
        }],
        patch: Default::default(),
    }
}

fn user_create(external_id: &str) -> Operation {
    Operation::CreateUser(UserCreate {
        external_id: external_id.into(),
        customer_external_id: "acme".into(),
        email: format!("{external_id}@x.example"),
        name: None,
        phone: None,
        role: "Member".into(),
        role_id: PlatformId::from("Role:member"),
    })
}

fn run(id: &str, mode: RunMode, finished: DateTime<Utc>) -> RunRecord {
    RunRecord {
        run_id: id.into(),
        mode,
        started_at: finished - chrono::TimeDelta::seconds(2),
        finished_at: finished,
        platform: "https://a.example/api".into(),
        stopped: None,
    }
}

#[test]
fn the_history_lists_each_operation_with_its_run_and_filters_by_external_id_and_time() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        history::read_history(dir.path(), &HistoryFilter::default()).unwrap(),
        None,
        "no store yet"
    );
    assert!(
        !dir.path().join("dirsync.sqlite3").exists(),
        "reading creates none"
    );

    let mut store = StateStore::open(dir.path(), &identity("https://a.example/api")).unwrap();
    store
        .record_operations(
            &run("run-1", RunMode::Sync, at(100)),
            &[
                OperationReport {
                    operation: user_create("u1"),
                    outcome: Outcome::Applied,
                },
                OperationReport {
                    operation: user_create("u2"),
                    outcome: Outcome::Failed {
                        error: "email taken".into(),
                    },
                },
            ],
        )
        .unwrap();
    store
        .record_operations(
            &run("run-2", RunMode::Run, at(200)),
            &[
                OperationReport {
                    operation: user_update("u1", "+1 1", "+1 2"),
                    outcome: Outcome::Applied,
                },
                OperationReport {
                    operation: Operation::DeleteUser {
                        id: PlatformId::from("User:u2"),
                        external_id: "u2".into(),
                        email: "u2@x.example".into(),
                        customer_external_id: Some("acme".into()),
                        why: DeleteReason::Disabled,
                    },
                    outcome: Outcome::Skipped {
                        reason: "shutting down".into(),
                    },
                },
            ],
        )
        .unwrap();
    store
        .record_operations(
            &run("run-3", RunMode::Apply, at(300)),
            &[OperationReport {
                operation: Operation::DeleteCustomer {
                    id: PlatformId::from("Customer:acme"),
                    external_id: "acme".into(),
                    name: "Acme".into(),
                    users: 1,
                    instances: 0,
                    why: DeleteReason::Absent,
                },
                outcome: Outcome::AlreadyDone {
                    detail: "already gone".into(),
                },
            }],
        )
        .unwrap();
    drop(store);

    let all = history::read_history(dir.path(), &HistoryFilter::default())
        .unwrap()
        .unwrap();
    let lines: Vec<String> = all.iter().map(HistoryEntry::text_line).collect();
    let expected = [
        "2026-11-30T00:55:00Z  sync   run run-1…  create user u1 <u1@x.example> in customer acme: applied",
        "2026-11-30T00:55:00Z  sync   run run-1…  create user u2 <u2@x.example> in customer acme: failed: email taken",
        "2026-11-30T00:56:40Z  run    run run-2…  update user u1 <u1@x.example> in customer acme: applied; phone: \"+1 1\" -> \"+1 2\"",
        "2026-11-30T00:56:40Z  run    run run-2…  delete user u2 <u2@x.example> in customer acme (disabled in the directory): skipped: shutting down",
        "2026-11-30T00:58:20Z  apply  run run-3…  delete customer acme \"Acme\" (absent from the directory; with 1 users and 0 instances): alreadyDone (already gone)",
    ];
    assert_eq!(lines, expected);
    assert_eq!(all[2].platform_id.as_deref(), Some("User:u1"));
    assert_eq!(all[0].platform_id, None, "a create's id is not known");

    let u1 = history::read_history(
        dir.path(),
        &HistoryFilter {
            external_id: Some("u1".into()),
            since: None,
        },
    )
    .unwrap()
    .unwrap();
    assert_eq!(
        u1.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(),
        ["create", "update"]
    );
    assert_eq!(u1[1].run_id, "run-2");
    assert_eq!(u1[1].mode, "run");
    assert_eq!(u1[1].changes[0].after, "+1 2");

    let since = history::read_history(
        dir.path(),
        &HistoryFilter {
            external_id: None,
            since: Some(at(200)),
        },
    )
    .unwrap()
    .unwrap();
    assert_eq!(since.len(), 3, "at or after: {since:?}");
    let both = history::read_history(
        dir.path(),
        &HistoryFilter {
            external_id: Some("u2".into()),
            since: Some(at(150)),
        },
    )
    .unwrap()
    .unwrap();
    assert_eq!(both.len(), 1);
    assert_eq!(both[0].outcome.label(), "skipped");
    let none = history::read_history(
        dir.path(),
        &HistoryFilter {
            external_id: Some("U1".into()),
            since: None,
        },
    )
    .unwrap()
    .unwrap();
    assert!(none.is_empty(), "exact, case included");

    let json = serde_json::to_value(&both[0]).unwrap();
    assert_eq!(json["outcome"], "skipped");
    assert_eq!(json["reason"], "shutting down");
    assert_eq!(json["runId"], "run-2");
    assert_eq!(json["externalId"], "u2");
    assert_eq!(json["why"], "disabled in the directory");
}

fn minimal_config(state_dir: &Path) -> Config {
    let text = format!(
        "{}state_dir: {}\n",
        crate::config::tests::MINIMAL,
        state_dir.display()
    );
    Config::parse(&text, Path::new("conf/dirsync.yaml")).unwrap()
}

fn reconcile(report: Option<ApplyReport>) -> Reconcile {
    Reconcile {
        platform_read: None,
        plan: Plan::default(),
        blocked: Vec::new(),
        allow_deletes: false,
        report,
        requests: Requests {
            sent: 0,
            throttled: 0,
        },
        duration_ms: 1_500,
    }
}

#[test]
fn a_run_is_recorded_once_under_a_new_run_id_and_a_run_that_sent_nothing_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let config = minimal_config(&dir.path().join("state"));
    assert_eq!(record_run(&config, RunMode::Sync, &reconcile(None)), None);
    assert_eq!(
        record_run(
            &config,
            RunMode::Sync,
            &reconcile(Some(ApplyReport::default()))
        ),
        None
    );
    assert!(!dir.path().join("state/dirsync.sqlite3").exists());

    let report = ApplyReport {
        operations: vec![OperationReport {
            operation: user_create("u1"),
            outcome: Outcome::Applied,
        }],
        stopped: None,
    };
    let first = record_run(&config, RunMode::Sync, &reconcile(Some(report.clone()))).unwrap();
    let second = record_run(&config, RunMode::Run, &reconcile(Some(report))).unwrap();
    assert_ne!(first, second);
    assert!(uuid::Uuid::parse_str(&first).is_ok(), "{first}");
    let all = history::read_history(&config.state_dir, &HistoryFilter::default())
        .unwrap()
        .unwrap();
    assert_eq!(
        all.iter()
            .map(|e| (e.run_id.as_str(), e.mode.as_str()))
            .collect::<Vec<_>>(),
        [(first.as_str(), "sync"), (second.as_str(), "run")]
    );
    let (started, finished): (i64, i64) = StateStore::open_existing(&config.state_dir)
        .unwrap()
        .unwrap()
        .conn
        .query_row(
            "SELECT started_at, finished_at FROM runs WHERE run_id = ?1",
            [&first],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(finished - started, 1_500, "the run's duration");
}

#[test]
fn a_history_that_cannot_be_written_is_a_warning_not_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    // The state directory is a file: nothing can be created in it.
    let state = dir.path().join("state");
    std::fs::write(&state, b"not a directory").unwrap();
    let config = minimal_config(&state);
    let report = ApplyReport {
        operations: vec![OperationReport {
            operation: user_create("u1"),
            outcome: Outcome::Applied,
        }],
        stopped: None,
    };
    let mut recorded = Some(String::new());
    let logs = logs_of(|| recorded = record_run(&config, RunMode::Sync, &reconcile(Some(report))));
    assert_eq!(recorded, None);
    assert!(logs.contains("WARN"), "{logs}");
    assert!(
        logs.contains("state/dirsync.sqlite3"),
        "names the file: {logs}"
    );
}

#[test]
fn since_takes_rfc_3339_a_date_or_a_span_back() {
    assert_eq!(
        parse_since("2026-12-01T10:00:00Z").unwrap(),
        Utc.with_ymd_and_hms(2026, 12, 1, 10, 0, 0).unwrap()
    );
    assert_eq!(
        parse_since("2026-12-01T11:00:00+01:00").unwrap(),
        Utc.with_ymd_and_hms(2026, 12, 1, 10, 0, 0).unwrap()
    );
    assert_eq!(
        parse_since("2026-12-01").unwrap(),
        Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap()
    );
    let now = Utc::now();
    let day = parse_since("24h").unwrap();
    assert!(
        (now - day - chrono::TimeDelta::hours(24))
            .num_seconds()
            .abs()
            < 60
    );
    let week = parse_since("7d").unwrap();
    assert!(
        (now - week - chrono::TimeDelta::days(7))
            .num_seconds()
            .abs()
            < 60
    );
    for bad in [
        "yesterday",
        "2026-13-01",
        "h",
        "-d",
        "99999999999999999d",
        "",
    ] {
        let err = parse_since(bad).unwrap_err();
        assert!(err.contains("RFC 3339"), "{bad}: {err}");
    }
}

#[test]
fn reading_the_history_of_a_damaged_file_says_which_and_leaves_it_alone() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dirsync.sqlite3");
    let junk = b"not a database at all, not even close; ".repeat(40);
    std::fs::write(&file, &junk).unwrap();
    let err = history::read_history(dir.path(), &HistoryFilter::default()).unwrap_err();
    let message = err.to_string();
    assert!(message.contains(&file.display().to_string()), "{message}");
    assert!(message.contains("not a database"), "{message}");
    assert_eq!(std::fs::read(&file).unwrap(), junk, "left alone");
}
