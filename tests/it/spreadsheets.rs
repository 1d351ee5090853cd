//! Spreadsheets as HR exports them (issue 11): the corpus in
//! `tests/data/csv/` (see its README) read through the real binary, with the
//! built-in emulator and its state file. Each test is named after what broke:
//! inactive rows planned as users, line numbers one too low in CRLF files and
//! after blank lines, a duplicate externalId naming the header line.

use crate::support::{dirsync, stored_users_by};
use std::path::Path;
use std::process::Output;

use serde_json::Value;

/// The BambooHR-style columns (`Employee #` quoted: in YAML, ` #` starts a comment).
const MAPPING: &str = "mapping:
  customer:
    external_id: Department
    name: Department
  user:
    external_id: \"Employee #\"
    customer: Department
    email: Work Email
    name: First Name
";

const ABSENT_WHEN: &str = "    absent_when:
      - { column: Status, in: [Inactive, Terminated] }
      - { column: Termination Date, not_empty: true }
";

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/csv")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A folder with `dirsync.yaml` (the built-in emulator, state in
/// `emulator.json`; `csv_settings` and `rest` added to `source.csv` and
/// after the source) and the fixture copied to `users.csv`.
fn setup(fixture_name: &str, csv_settings: &str, rest: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("dirsync.yaml"),
        format!(
            "platform:\n  emulator:\n    state: emulator.json\n  requests_per_second: 1000\nsource:\n  csv:\n    users_file: users.csv\n{csv_settings}{rest}"
        ),
    )
    .unwrap();
    std::fs::write(dir.path().join("users.csv"), fixture(fixture_name)).unwrap();
    dir
}

fn shown(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `dirsync plan --output json`, with its exit code.
fn plan_json(dir: &Path) -> (Option<i32>, Value) {
    let out = dirsync(&["plan", "-c", "dirsync.yaml", "--output", "json"], dir);
    let json = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", shown(&out)));
    (out.status.code(), json)
}

/// The plan's operations as `action externalId`, in plan order.
fn operations(json: &Value) -> Vec<String> {
    json["plan"]["operations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|op| {
            format!(
                "{} {}",
                op["action"].as_str().unwrap(),
                op["externalId"].as_str().unwrap_or("-")
            )
        })
        .collect()
}

/// The refused records as `line: field: message`.
fn refused(json: &Value) -> Vec<String> {
    json["plan"]["refused"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(r["origin"]["kind"], "line", "{r}");
            assert_eq!(r["origin"]["file"], "users.csv", "{r}");
            format!(
                "{}: {}: {}",
                r["origin"]["line"],
                r["field"].as_str().unwrap_or("-"),
                r["message"].as_str().unwrap()
            )
        })
        .collect()
}

/// Managed customer users in the emulator's state file: externalId -> email.
fn stored_users(dir: &Path) -> std::collections::BTreeMap<String, String> {
    stored_users_by(dir, "email")
}

/// The BambooHR-style export: BOM, CRLF, a quoted newline (lines 3-4), a
/// blank line (5), a bad email (6), an Inactive row (7), a Terminated row
/// with a bad email (8), an Active row with a termination date (9), a
/// " active " row (10), three empty rows (11-13).
#[test]
fn inactive_rows_are_absent_not_users() {
    let dir = setup("bamboohr.csv", ABSENT_WHEN, MAPPING);
    let (code, json) = plan_json(dir.path());
    assert_eq!(code, Some(2), "changes pending: {json}");
    assert_eq!(
        operations(&json),
        [
            "createCustomer Engineering",
            "createCustomer Sales",
            "createUser 1001",
            "createUser 1002",
            "createUser 1007",
        ]
    );
    // 1005 is Terminated and has a bad email: absent, not refused. The
    // trailing empty rows are not refused either.
    assert_eq!(
        refused(&json),
        ["6: email (column Work Email): invalid email \"alan.turing(at)acme.example\""]
    );
    assert_eq!(json["plan"]["scope"]["directoryUsers"], 3);
    assert_eq!(json["blocked"], serde_json::json!([]));

    // Without the rules, the same export plans every row as a user.
    let dir = setup("bamboohr.csv", "", MAPPING);
    let (_, json) = plan_json(dir.path());
    let users = operations(&json)
        .iter()
        .filter(|op| op.starts_with("createUser"))
        .count();
    assert_eq!(users, 5, "1001, 1002, 1004, 1006, 1007: {json}");
    assert_eq!(refused(&json).len(), 2, "lines 6 and 8: {json}");
}

#[test]
fn a_user_whose_row_turns_inactive_is_planned_as_a_delete() {
    let policy =
        "policy:\n  delete_users: { max_count: 10, max_percent: 50 }\n  max_shrink_percent: 50\n";
    let dir = setup("bamboohr.csv", ABSENT_WHEN, &format!("{MAPPING}{policy}"));
    let first = dirsync(&["sync", "-c", "dirsync.yaml"], dir.path());
    assert_eq!(first.status.code(), Some(0), "{}", shown(&first));
    let stored = stored_users(dir.path());
    assert_eq!(
        stored.keys().collect::<Vec<_>>(),
        ["1001", "1002", "1007"],
        "the inactive rows were never created"
    );

    // Tony Hoare leaves: HR sets his status to Inactive.
    let text = String::from_utf8(fixture("bamboohr.csv")).unwrap();
    assert_eq!(text.matches(", active ,").count(), 1);
    std::fs::write(
        dir.path().join("users.csv"),
        text.replace(", active ,", ",Inactive,"),
    )
    .unwrap();
    let (code, json) = plan_json(dir.path());
    assert_eq!(code, Some(2), "{json}");
    assert_eq!(operations(&json), ["deleteUser 1007"]);
    assert_eq!(json["blocked"], serde_json::json!([]), "{json}");

    let sync = dirsync(&["sync", "-c", "dirsync.yaml"], dir.path());
    assert_eq!(sync.status.code(), Some(0), "{}", shown(&sync));
    assert_eq!(
        stored_users(dir.path()).keys().collect::<Vec<_>>(),
        ["1001", "1002"]
    );
    // Under the default policy (user delete budget 10%, shrink 20%), the
    // same delete is blocked, not sent.
    let dir = setup("bamboohr.csv", ABSENT_WHEN, MAPPING);
    let first = dirsync(&["sync", "-c", "dirsync.yaml"], dir.path());
    assert_eq!(first.status.code(), Some(0), "{}", shown(&first));
    std::fs::write(
        dir.path().join("users.csv"),
        text.replace(", active ,", ",Inactive,"),
    )
    .unwrap();
    let (code, json) = plan_json(dir.path());
    assert_eq!(code, Some(3), "{json}");
    assert_eq!(operations(&json), ["deleteUser 1007"]);
    let reasons: Vec<&str> = json["blocked"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b["reason"].as_str())
        .collect();
    assert_eq!(reasons, ["shrink", "userDeleteBudget"], "{json}");
    let sync = dirsync(&["sync", "-c", "dirsync.yaml"], dir.path());
    assert_eq!(sync.status.code(), Some(3), "{}", shown(&sync));
    assert!(stored_users(dir.path()).contains_key("1007"), "not deleted");
}

/// A row `absent_when` matches still says whose row it is: the delete of
/// Tony Hoare (set Inactive) says he is disabled, the delete of Ada Lovelace
/// (her row removed) that she is absent.
#[test]
fn the_plan_says_a_user_whose_row_turns_inactive_is_disabled_and_one_whose_row_went_absent() {
    let policy =
        "policy:\n  delete_users: { max_count: 10, max_percent: 100 }\n  max_shrink_percent: 100\n";
    let dir = setup("bamboohr.csv", ABSENT_WHEN, &format!("{MAPPING}{policy}"));
    let first = dirsync(&["sync", "-c", "dirsync.yaml"], dir.path());
    assert_eq!(first.status.code(), Some(0), "{}", shown(&first));

    let text = String::from_utf8(fixture("bamboohr.csv")).unwrap();
    let ada = "1001,Ada,Lovelace,ada.lovelace@acme.example,Engineering,Active,2019-03-01,\r\n";
    assert_eq!(text.matches(ada).count(), 1);
    assert_eq!(text.matches(", active ,").count(), 1);
    let edited = text.replace(ada, "").replace(", active ,", ",Inactive,");
    std::fs::write(dir.path().join("users.csv"), edited).unwrap();

    let out = dirsync(&["plan", "-c", "dirsync.yaml"], dir.path());
    let shown_text = shown(&out);
    assert_eq!(out.status.code(), Some(2), "{shown_text}");
    assert!(
        shown_text.contains(
            "  - user 1001  ada.lovelace@acme.example in customer Engineering  (absent from the directory)\n"
        ),
        "{shown_text}"
    );
    assert!(
        shown_text.contains(
            "  - user 1007  tony.hoare@acme.example in customer Sales  (disabled in the directory)\n"
        ),
        "{shown_text}"
    );
    // Barbara (1004) and Ken (1005) are inactive too, but were never on
    // the platform: nothing to say about them.
    assert!(!shown_text.contains("1004"), "{shown_text}");

    let (_, json) = plan_json(dir.path());
    assert_eq!(operations(&json), ["deleteUser 1001", "deleteUser 1007"]);
    let why: Vec<&str> = json["plan"]["operations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|op| op["why"].as_str().unwrap())
        .collect();
    assert_eq!(why, ["absent", "disabled"], "{json}");

    // A disabled row is no record: Tony stays out even with a bad email, and
    // a disabled row of an externalId that has an enabled row is not his.
    let both = text.replace(ada, "").replace(
        "1007,Tony,Hoare,tony.hoare@acme.example,Sales, active ,2022-11-07,",
        "1007,Tony,Hoare,tony.hoare@acme.example,Sales, active ,2022-11-07,\r\n1007,Tony,Hoare,tony(at)acme.example,Sales,Inactive,2022-11-07,",
    );
    std::fs::write(dir.path().join("users.csv"), both).unwrap();
    let (_, json) = plan_json(dir.path());
    assert_eq!(operations(&json), ["deleteUser 1001"], "{json}");
    assert_eq!(refused(&json).len(), 1, "only line 6's bad email: {json}");
}

#[test]
fn line_numbers_are_exact_for_crlf_blank_lines_and_quoted_newlines() {
    // BOM + CRLF: the bad email after a quoted newline and a blank line is on line 6.
    let dir = setup("bamboohr.csv", ABSENT_WHEN, MAPPING);
    let (_, json) = plan_json(dir.path());
    assert_eq!(json["plan"]["refused"][0]["origin"]["line"], 6, "{json}");
    let text = dirsync(&["plan", "-c", "dirsync.yaml"], dir.path());
    assert!(
        shown(&text).contains("users.csv:6: email (column Work Email): invalid email"),
        "{}",
        shown(&text)
    );

    // Old Mac line ends (a lone CR), with a quoted one and a blank line: line 5.
    let dir = setup("old_mac.csv", "", MAPPING);
    let (_, json) = plan_json(dir.path());
    assert_eq!(
        refused(&json),
        ["5: email (column Work Email): invalid email \"grace.hopper@@acme.example\""]
    );
    assert_eq!(
        operations(&json)
            .iter()
            .filter(|op| op.starts_with("createUser"))
            .count(),
        2
    );

    // Cut short after a quoted newline in a CRLF file: the withheld-deletes
    // reason names the last row's own line (10).
    let dir = setup("bamboohr.csv", ABSENT_WHEN, MAPPING);
    let first = dirsync(&["sync", "-c", "dirsync.yaml"], dir.path());
    assert_eq!(first.status.code(), Some(0), "{}", shown(&first));
    let text = String::from_utf8(fixture("bamboohr.csv")).unwrap();
    let end = ",2022-11-07,";
    let cut = &text[..text.find(end).unwrap() + end.len()];
    let cut = cut.replace("1001,Ada,Lovelace", "9001,Ada,Lovelace");
    std::fs::write(dir.path().join("users.csv"), cut).unwrap();
    let (code, json) = plan_json(dir.path());
    assert_eq!(code, Some(3), "{json}");
    assert_eq!(json["blocked"][0]["reason"], "deletesWithheld", "{json}");
    assert_eq!(json["blocked"][0]["origin"]["line"], 10, "{json}");
    assert!(
        refused(&json).contains(
            &"10: -: the row may be cut short: the last line has no line terminator".to_owned()
        ),
        "{json}"
    );
}

#[test]
fn a_duplicate_external_id_names_both_lines_not_the_header() {
    let dir = setup("duplicate_external_id.csv", "", MAPPING);
    let out = dirsync(&["plan", "-c", "dirsync.yaml"], dir.path());
    let text = shown(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(
            "user externalId \"1001\" appears twice with different data: users.csv:2 and users.csv:6"
        ),
        "{text}"
    );
    assert!(
        !dir.path().join("emulator.json").exists() || stored_users(dir.path()).is_empty(),
        "nothing sent"
    );
}

#[test]
fn ragged_rows_name_their_own_line() {
    let dir = setup("ragged.csv", "", MAPPING);
    let out = dirsync(&["plan", "-c", "dirsync.yaml"], dir.path());
    let text = shown(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("users.csv:7: the row has 7 fields but the header has 8"),
        "{text}"
    );
}

#[test]
fn a_semicolon_export_is_read_with_its_delimiter() {
    let mapping = "mapping:
  customer:
    external_id: Abteilung
    name: Abteilung
  user:
    external_id: Personalnummer
    customer: Abteilung
    email: E-Mail
    name: Vorname
";
    let settings =
        "    delimiter: \";\"\n    absent_when:\n      - { column: Status, equals: Inaktiv }\n";
    let dir = setup("semicolon.csv", settings, mapping);
    let (code, json) = plan_json(dir.path());
    assert_eq!(code, Some(2), "{json}");
    assert_eq!(
        operations(&json),
        [
            "createCustomer Einkauf",
            "createCustomer Vertrieb, Nord",
            "createUser 2001",
            "createUser 2002",
            "createUser 2005",
        ]
    );
    let names: Vec<&str> = json["plan"]["operations"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|op| op["name"].as_str())
        .collect();
    assert!(
        names.contains(&"Jürgen") && names.contains(&"Anna; Maria"),
        "{names:?}"
    );
    assert_eq!(
        refused(&json),
        ["5: email (column E-Mail): invalid email \"lars.hansen@beispiel\""]
    );

    // Read with the default comma, the header is one column: the mapping's are missing.
    let dir = setup("semicolon.csv", "", mapping);
    let out = dirsync(&["plan", "-c", "dirsync.yaml"], dir.path());
    let text = shown(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(
            "users.csv:1: column \"Personalnummer\" named in the mapping is not in the header"
        ),
        "{text}"
    );
}

#[test]
fn trailing_empty_rows_are_not_refused() {
    let dir = setup("trailing_empty_rows.csv", "", MAPPING);
    let (code, json) = plan_json(dir.path());
    assert_eq!(code, Some(2), "{json}");
    assert_eq!(refused(&json), Vec::<String>::new());
    assert_eq!(json["plan"]["scope"]["directoryUsers"], 5);
    assert_eq!(json["blocked"], serde_json::json!([]));
    let sync = dirsync(&["sync", "-c", "dirsync.yaml"], dir.path());
    assert_eq!(sync.status.code(), Some(0), "{}", shown(&sync));
    assert_eq!(stored_users(dir.path()).len(), 5);
}

#[test]
fn an_absent_when_column_missing_from_the_header_is_an_error_naming_file_line_and_column() {
    let settings = "    absent_when:\n      - { column: Status, equals: Inactive }\n      - { column: Terminated On, not_empty: true }\n";
    let dir = setup("bamboohr.csv", settings, MAPPING);
    let out = dirsync(&["plan", "-c", "dirsync.yaml"], dir.path());
    let text = shown(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("users.csv:1: column \"Terminated On\" named in source.csv.absent_when[1] is not in the header (columns: Employee #, First Name, Last Name, Work Email, Department, Status, Hire Date, Termination Date)"),
        "{text}"
    );
    assert!(
        !dir.path().join("emulator.json").exists() || stored_users(dir.path()).is_empty(),
        "nothing sent"
    );
}

#[test]
fn a_bad_absent_when_rule_is_refused_by_check_config_at_its_key() {
    let settings = "    absent_when:\n      - { column: Status, equals: Inactive }\n      - { column: Status, equals: Inactive, not_empty: true }\n";
    let dir = setup("bamboohr.csv", settings, MAPPING);
    let out = dirsync(&["check-config", "-c", "dirsync.yaml"], dir.path());
    let text = shown(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("dirsync.yaml:10:56: source.csv.absent_when[1].not_empty: one test per rule (equals and not_empty given)"),
        "{text}"
    );
}
