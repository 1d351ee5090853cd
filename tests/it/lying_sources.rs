//! Sources that do not say what they seem to: a CSV cut short or still being
//! written, rows that name nobody, role typos, values no platform field
//! should hold. Each test is named after what broke (issue 10, "Lose
//! nothing"); all read real files and talk to the emulator over HTTP on
//! 127.0.0.1, the first two through the real binary.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, SystemTime};

use dirsync::apply::Quiet;
use dirsync::config::Config;
use dirsync::emulator::RunningEmulator;
use dirsync::guard::BlockReason;
use dirsync::run::{reconcile, Connection, Mode, Reconcile, RunError};

use crate::support::*;

/// The last column is a user's own field (a cut there parses cleanly).
const HEADER: &str = "employee_id,customer_id,customer_name,tier,email,role,full_name";

/// `E{i}` in customer `c{i % 4}`, role staff, name `User {i}`.
fn row(i: usize) -> String {
    let c = i % 4;
    format!("E{i},c{c},Customer {c},gold,user{i}@x.example,staff,User {i}")
}

fn users_csv(rows: impl IntoIterator<Item = String>) -> String {
    let mut text = format!("{HEADER}\n");
    for r in rows {
        text.push_str(&r);
        text.push('\n');
    }
    text
}

const MAPPING: &str = "mapping:
  customer:
    external_id: customer_id
    name: customer_name
    labels: [tier]
  user:
    external_id: employee_id
    customer: customer_id
    email: email
    name: full_name
    role: role
  roles:
    map: { admin: Admin, staff: Member }
    default: Member
";

// ---- through the real binary, with the built-in emulator and its state file ----

fn shown(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A folder with `dirsync.yaml` (the built-in emulator, state in
/// `emulator.json`) and `users.csv`.
fn binary_setup(csv_settings: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("dirsync.yaml"),
        format!(
            "platform:\n  emulator:\n    state: emulator.json\n  requests_per_second: 1000\nsource:\n  csv:\n    users_file: users.csv\n{csv_settings}{MAPPING}"
        ),
    )
    .unwrap();
    dir
}

/// Managed customer users in the emulator's state file: externalId -> name.
fn stored_users(dir: &Path) -> std::collections::BTreeMap<String, String> {
    stored_users_by(dir, "name")
}

#[test]
fn a_csv_cut_mid_row_deletes_nobody() {
    let dir = binary_setup("");
    const ROWS: usize = 150;
    let full = users_csv((0..ROWS).map(row));
    let csv = dir.path().join("users.csv");
    std::fs::write(&csv, &full).unwrap();
    let first = dirsync(&["sync", "-c", "dirsync.yaml"], dir.path());
    assert_eq!(first.status.code(), Some(0), "{}", shown(&first));
    let before = stored_users(dir.path());
    assert_eq!(before.len(), ROWS);
    let state_before = std::fs::read(dir.path().join("emulator.json")).unwrap();

    let mut last_line = 0;
    for percent in [95, 97, 99] {
        // Cut at that share of the bytes, moved into the last column of the
        // row it falls in ("User 96" becomes "User 9"): the row parses cleanly.
        let at = full.len() * percent / 100;
        let row_end = at + full[at..].find('\n').unwrap();
        let cut = &full[..row_end - 1];
        std::fs::write(&csv, cut).unwrap();
        // The header, the complete rows and the cut one.
        last_line = cut.lines().count();
        let absent = ROWS + 1 - last_line;
        assert!(
            absent >= 1,
            "{percent}%: the default policy would let {absent} deletes through"
        );

        let out = dirsync(&["sync", "-c", "dirsync.yaml"], dir.path());
        let text = shown(&out);
        assert_eq!(out.status.code(), Some(3), "{percent}%: {text}");
        assert!(
            text.contains("users.csv:") && text.contains(": the last line has no line terminator (the file may be truncated or still being written; write it elsewhere and rename it into place): deletes withheld this run"),
            "{percent}%: {text}"
        );
        assert!(
            text.contains("the row may be cut short: the last line has no line terminator"),
            "{percent}%: the cut row is refused: {text}"
        );
        assert_eq!(
            stored_users(dir.path()),
            before,
            "{percent}%: nobody deleted, no name cut"
        );
        assert_eq!(
            std::fs::read(dir.path().join("emulator.json")).unwrap(),
            state_before,
            "{percent}%: nothing sent"
        );
    }

    let json = dirsync(
        &["plan", "-c", "dirsync.yaml", "--output", "json"],
        dir.path(),
    );
    assert_eq!(json.status.code(), Some(3), "{}", shown(&json));
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(json["blocked"][0]["reason"], "deletesWithheld", "{json}");
    assert_eq!(json["blocked"][0]["origin"]["line"], last_line);

    // The whole file again: in step, nothing to do.
    std::fs::write(&csv, &full).unwrap();
    let again = dirsync(&["plan", "-c", "dirsync.yaml"], dir.path());
    assert_eq!(again.status.code(), Some(0), "{}", shown(&again));
}

/// The issue: deletes withheld by a cut file must not hold back creates and
/// updates ("creates and updates may go on").
#[test]
fn a_cut_csv_withholds_deletes_but_creates_and_updates_go_on() {
    let dir = binary_setup("");
    let csv = dir.path().join("users.csv");
    std::fs::write(&csv, users_csv((0..20).map(row))).unwrap();
    let first = dirsync(&["sync", "-c", "dirsync.yaml"], dir.path());
    assert_eq!(first.status.code(), Some(0), "{}", shown(&first));
    // E0 renamed, E20 new, E18 and E19 gone, and the file cut in its last row.
    let mut rows: Vec<String> = (1..18).map(row).collect();
    rows.insert(0, row(0).replace("User 0", "Renamed 0"));
    rows.push(row(20));
    rows.push(row(17));
    let text = users_csv(rows);
    std::fs::write(&csv, &text[..text.len() - 2]).unwrap();
    let out = dirsync(&["sync", "-c", "dirsync.yaml"], dir.path());
    let said = shown(&out);
    assert_eq!(out.status.code(), Some(3), "{said}");
    assert!(said.contains("DELETES WITHHELD"), "{said}");
    let stored = stored_users(dir.path());
    assert_eq!(
        stored.get("E0").map(String::as_str),
        Some("Renamed 0"),
        "{said}"
    );
    assert!(stored.contains_key("E20"), "the create went on: {said}");
    assert!(
        stored.contains_key("E18") && stored.contains_key("E19"),
        "no delete was sent: {said}"
    );
}

#[test]
fn a_csv_younger_than_min_age_is_refused() {
    let dir = binary_setup("    min_age_secs: 3600\n");
    let csv = dir.path().join("users.csv");
    std::fs::write(&csv, users_csv((0..3).map(row))).unwrap();

    let out = dirsync(&["sync", "-c", "dirsync.yaml"], dir.path());
    let text = shown(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("users.csv: modified ")
            && text.contains("more recently than source.csv.min_age_secs (3600 s) allows"),
        "{text}"
    );
    assert!(
        !dir.path().join("emulator.json").exists() || stored_users(dir.path()).is_empty(),
        "nothing sent"
    );

    // Left alone for two hours (its time set back, not waited for): read.
    std::fs::File::options()
        .write(true)
        .open(&csv)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(7200))
        .unwrap();
    let out = dirsync(&["sync", "-c", "dirsync.yaml"], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", shown(&out));
    assert_eq!(stored_users(dir.path()).len(), 3);
}

// ---- in process, over HTTP to an emulator on 127.0.0.1 ----

struct Setup {
    dir: tempfile::TempDir,
    emu: RunningEmulator,
}

impl Setup {
    async fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), TOKEN).unwrap();
        Setup {
            dir,
            emu: start_emulator(None).await,
        }
    }

    fn write_users(&self, text: &str) {
        std::fs::write(self.dir.path().join("users.csv"), text).unwrap();
    }

    /// The config with `mapping` and `policy` sections as given.
    fn config(&self, mapping: &str, policy: &str) -> Config {
        let url = self.emu.url();
        let path: PathBuf = self.dir.path().join("dirsync.yaml");
        std::fs::write(
            &path,
            format!(
                "platform:\n  url: {url}\n  token: {{ file: token }}\n  requests_per_second: 1000\nsource:\n  csv:\n    users_file: users.csv\n{mapping}policy:\n  apply_concurrency: 4\n{policy}"
            ),
        )
        .unwrap();
        Config::load(&path).unwrap()
    }

    async fn run(&self, config: &Config, mode: Mode) -> Result<Reconcile, RunError> {
        let connection = Connection::open(&config.platform).await.unwrap();
        reconcile(config, &connection, mode, &Quiet).await
    }

    async fn sync(&self, config: &Config) -> Reconcile {
        self.run(
            config,
            Mode::Apply {
                allow_deletes: false,
            },
        )
        .await
        .unwrap()
    }

    fn mutations(&self) -> u64 {
        self.emu.handle.stats().mutations
    }

    /// Managed customer users: externalId -> (name, role name).
    fn users(&self) -> std::collections::BTreeMap<String, (String, String)> {
        let state = self.emu.handle.state();
        state
            .users
            .values()
            .filter(|u| u.customer_id.is_some())
            .filter_map(|u| {
                let role = state.roles.iter().find(|r| r.id == u.role_id)?;
                Some((u.external_id.clone()?, (u.name.clone(), role.name.clone())))
            })
            .collect()
    }
}

fn refused(r: &Reconcile) -> Vec<String> {
    r.plan.refused.iter().map(ToString::to_string).collect()
}

#[tokio::test]
async fn an_all_empty_row_withholds_user_deletes() {
    let s = Setup::new().await;
    let config = s.config(MAPPING, "");
    let mut rows: Vec<String> = (0..20).map(row).collect();
    s.write_users(&users_csv(rows.clone()));
    s.sync(&config).await;
    assert_eq!(s.users().len(), 20);

    // E4's row blanked in place: who was on line 6 is unknown, so who is absent is too.
    rows[4] = ",,,,,,".to_owned();
    s.write_users(&users_csv(rows));
    let before = s.mutations();
    let r = s.sync(&config).await;
    assert_eq!(
        s.mutations(),
        before,
        "nothing sent: {:?}",
        r.plan.operations
    );
    assert!(s.users().contains_key("E4"), "E4 is not deleted");
    assert_eq!(r.plan.user_deletes(), 1, "the plan staged E4's delete");
    match &r.blocked[..] {
        [BlockReason::DeletesWithheld { origin, cause, .. }] => {
            assert!(origin.to_string().ends_with("users.csv:6"), "{origin}");
            assert!(cause.contains("names no usable externalId"), "{cause}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        dirsync::report::sync_exit_code(&r),
        dirsync::report::exit::BLOCKED
    );
    let refused = refused(&r);
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(
        refused[0].ends_with("users.csv:6: every field of the row is empty; amid the data it may be a record whose values were lost"),
        "{refused:?}"
    );
    assert!(
        dirsync::report::text(&r).contains("users.csv:6: a refused record names no usable externalId, so who is absent from the directory cannot be known: deletes withheld this run (1 user delete staged; --allow-deletes does not lift this)"),
        "{}",
        dirsync::report::text(&r)
    );
}

#[tokio::test]
async fn trailing_empty_rows_are_not_refused_records() {
    let s = Setup::new().await;
    let mut text = users_csv((0..20).map(row));
    for _ in 0..15 {
        text.push_str(",,,,,,\n");
    }
    s.write_users(&text);
    let r = s.sync(&s.config(MAPPING, "")).await;
    assert!(r.plan.refused.is_empty(), "{:?}", refused(&r));
    assert!(r.blocked.is_empty(), "{:?}", r.blocked);
    assert_eq!(s.users().len(), 20);
    assert_eq!(
        dirsync::report::sync_exit_code(&r),
        dirsync::report::exit::OK
    );
}

#[tokio::test]
async fn a_row_missing_three_fields_counts_once_toward_the_cap() {
    let s = Setup::new().await;
    let mut rows: Vec<String> = (0..20).map(row).collect();
    rows.insert(5, ",c1,Customer 1,gold,,staff,Nobody Known".to_owned());
    rows.insert(6, ",,,,,staff,".to_owned());
    s.write_users(&users_csv(rows));
    let policy = "  refused_records: { max_count: 2, max_percent: 0 }\n";
    let r = s.sync(&s.config(MAPPING, policy)).await;
    let refused = refused(&r);
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert!(
        refused[0].ends_with("users.csv:7: externalId (column employee_id), email (column email): missing required values"),
        "{refused:?}"
    );
    assert!(
        refused[1].ends_with("users.csv:8: externalId (column employee_id), customer (column customer_id), email (column email): missing required values"),
        "{refused:?}"
    );
    assert_eq!(s.users().len(), 20, "the other rows are applied");
}

#[tokio::test]
async fn an_unknown_role_is_a_refused_record_not_a_demotion() {
    let s = Setup::new().await;
    let mut rows: Vec<String> = (0..20).map(row).collect();
    rows[3] = row(3).replace(",staff,", ",admin,");
    s.write_users(&users_csv(rows.clone()));
    let config = s.config(MAPPING, "");
    s.sync(&config).await;
    assert_eq!(s.users()["E3"].1, "Admin");

    rows[3] = row(3).replace(",staff,", ",Admn,");
    s.write_users(&users_csv(rows));
    let before = s.mutations();
    let r = s.sync(&config).await;
    assert_eq!(s.mutations(), before, "{:?}", r.plan.operations);
    assert_eq!(s.users()["E3"].1, "Admin", "not demoted to Member");
    assert_eq!(
        refused(&r),
        [format!(
            "{}:5: role (column role): role \"Admn\" is not in mapping.roles.map (it holds admin, staff); add it there, or set mapping.roles.unmapped: default to give such users \"Member\"",
            s.dir.path().join("users.csv").display()
        )]
    );
    assert!(r.plan.kept.iter().any(|k| k.external_id == "E3"));

    // Asked for explicitly, an unmapped value takes the default role.
    let explicit = s.config(
        &MAPPING.replace(
            "    default: Member\n",
            "    default: Member\n    unmapped: default\n",
        ),
        "",
    );
    let r = s.sync(&explicit).await;
    assert!(r.plan.refused.is_empty());
    assert_eq!(s.users()["E3"].1, "Member");
}

#[tokio::test]
async fn a_nul_or_oversized_value_is_refused_with_line_and_column() {
    let s = Setup::new().await;
    let mut rows: Vec<String> = (0..20).map(row).collect();
    rows[1] = row(1).replace("User 1", "Us\0er 1");
    rows[2] = row(2).replace("User 2", &"U".repeat(1 << 20));
    rows[3] = row(3).replace("User 3", "\"User\n3\"");
    rows[4] = row(4).replace("Customer 0", "Customer\t0");
    s.write_users(&users_csv(rows));
    let r = s.sync(&s.config(MAPPING, "")).await;
    let file = s.dir.path().join("users.csv");
    let at = |line: u64, what: &str| format!("{}:{line}: {what}", file.display());
    assert_eq!(
        refused(&r),
        [
            at(3, "name (column full_name): contains NUL (U+0000) at character 3; control characters are refused"),
            at(4, "name (column full_name): is 1048576 characters long, over the limit of 255 for this field"),
            at(5, "name (column full_name): contains a line break (U+000A) at character 5; control characters are refused"),
            at(7, "customer name (column customer_name): contains a tab (U+0009) at character 9; control characters are refused"),
        ]
    );
    let users = s.users();
    assert_eq!(users.len(), 16);
    assert!(["E1", "E2", "E3", "E4"]
        .iter()
        .all(|x| !users.contains_key(*x)));
    let state = s.emu.handle.state();
    assert!(
        state
            .users
            .values()
            .all(|u| u.name.len() <= 255 && !u.name.chars().any(char::is_control)),
        "nothing of the kind was sent"
    );
    assert!(state.customers.values().all(|c| !c.name.contains('\t')));
}

#[tokio::test]
async fn a_header_naming_a_column_twice_is_an_error() {
    let s = Setup::new().await;
    s.write_users(&format!(
        "{HEADER},email\n{}\n",
        row(0) + ",other@x.example"
    ));
    let config = s.config(MAPPING, "");
    let err = s.run(&config, Mode::Plan).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "source: {}:1: the header names column \"email\" twice (columns 5 and 8); the mapping reads it, so which one is meant is unclear: rename or remove one",
            s.dir.path().join("users.csv").display()
        )
    );
    assert_eq!(s.mutations(), 0);
}
