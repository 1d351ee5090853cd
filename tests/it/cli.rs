//! The real `dirsync` binary: the quickstart flow, exit codes, JSON output,
//! config errors, and a sync killed part-way that the next run converges.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

#[test]
fn the_quickstart_creates_then_reports_no_changes_then_shows_exactly_an_edit() {
    let (dir, config) = quickstart();
    let c = config.to_str().unwrap();
    let state = dir.path().join(".dirsync-state/emulator.json");

    let first = dirsync(&["sync", "-c", c], dir.path());
    assert_eq!(
        first.status.code(),
        Some(0),
        "{}{}",
        stdout(&first),
        stderr(&first)
    );
    assert!(
        stdout(&first).contains("Plan: 24 to create, 0 to update, 0 to delete."),
        "{}",
        stdout(&first)
    );
    assert!(state.exists(), "the emulator state is persisted");

    let second = dirsync(&["sync", "-c", c], dir.path());
    assert_eq!(second.status.code(), Some(0));
    assert!(
        stdout(&second).contains("No changes. The platform matches the directory."),
        "{}",
        stdout(&second)
    );

    let plan = dirsync(&["plan", "-c", c], dir.path());
    assert_eq!(plan.status.code(), Some(0), "in sync: exit 0");

    // Edit one phone number in the CSV: the plan shows exactly that.
    let csv = dir.path().join("config/example-users.csv");
    let text = std::fs::read_to_string(&csv)
        .unwrap()
        .replace("+1 555 0102", "+1 555 9999");
    std::fs::write(&csv, text).unwrap();
    let before = std::fs::read(&state).unwrap();
    let plan = dirsync(&["plan", "-c", c], dir.path());
    assert_eq!(plan.status.code(), Some(2), "changes pending: exit 2");
    let shown = stdout(&plan);
    assert!(shown.contains("  ~ user E1002  charles.babbage@acme.example\n      phone: \"+1 555 0102\" -> \"+1 555 9999\"\n"), "{shown}");
    assert!(
        shown.contains("Plan: 0 to create, 1 to update, 0 to delete."),
        "{shown}"
    );

    let dry = dirsync(&["sync", "--dry-run", "-c", c], dir.path());
    assert_eq!(dry.status.code(), Some(2));
    assert_eq!(
        std::fs::read(&state).unwrap(),
        before,
        "plan and --dry-run send no mutation"
    );

    let apply = dirsync(&["sync", "-c", c, "--output", "json"], dir.path());
    assert_eq!(apply.status.code(), Some(0), "{}", stderr(&apply));
    let json: serde_json::Value = serde_json::from_str(&stdout(&apply)).unwrap();
    assert_eq!(json["schemaVersion"], 1);
    assert_eq!(json["mode"], "sync");
    assert_eq!(json["counts"], serde_json::json!({"user": {"update": 1}}));
    assert_eq!(
        json["outcomes"],
        serde_json::json!({"user": {"update": {"applied": 1}}})
    );
    assert_eq!(json["report"]["operations"][0]["outcome"], "applied");
    assert_eq!(
        json["report"]["operations"][0]["operation"]["action"],
        "updateUser"
    );
    assert_eq!(json["plan"]["operations"][0]["externalId"], "E1002");
    assert_eq!(
        dirsync(&["plan", "-c", c], dir.path()).status.code(),
        Some(0)
    );
}

#[test]
fn check_config_names_the_key_and_line_of_a_mistake() {
    let (dir, config) = quickstart();
    let ok = dirsync(
        &["check-config", "-c", config.to_str().unwrap()],
        dir.path(),
    );
    assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("  adopt: false", "  adpot: false");
    std::fs::write(&config, text).unwrap();
    let bad = dirsync(
        &["check-config", "-c", config.to_str().unwrap()],
        dir.path(),
    );
    assert_eq!(bad.status.code(), Some(1));
    let err = stderr(&bad);
    assert!(
        err.contains("example.yaml:") && err.contains(": policy.adpot: unknown field `adpot`"),
        "{err}"
    );
}

#[test]
fn a_blocked_sync_exits_3_prints_the_staged_deletes_and_sends_nothing() {
    let (dir, config) = quickstart();
    let c = config.to_str().unwrap();
    assert_eq!(
        dirsync(&["sync", "-c", c], dir.path()).status.code(),
        Some(0)
    );
    let csv = dir.path().join("config/example-users.csv");
    let kept: Vec<String> = std::fs::read_to_string(&csv)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("E1004") && !l.starts_with("E1005"))
        .map(str::to_owned)
        .collect();
    std::fs::write(&csv, kept.join("\n") + "\n").unwrap();
    let state = dir.path().join(".dirsync-state/emulator.json");
    let before = std::fs::read(&state).unwrap();

    let blocked = dirsync(&["sync", "-c", c], dir.path()); // 2 of 20 = 10%: the default budget is reached
    assert_eq!(blocked.status.code(), Some(3), "{}", stdout(&blocked));
    let shown = stdout(&blocked);
    assert!(
        shown.contains("  - user E1004  alan.turing@acme.example in customer acme"),
        "{shown}"
    );
    assert!(
        shown.contains("BLOCKED: nothing was sent")
            && shown.contains("2 user deletes of 20 managed users reach the budget"),
        "{shown}"
    );
    assert_eq!(std::fs::read(&state).unwrap(), before);
    assert_eq!(
        dirsync(&["plan", "-c", c], dir.path()).status.code(),
        Some(3)
    );

    let allowed = dirsync(&["sync", "-c", c, "--allow-deletes"], dir.path());
    assert_eq!(allowed.status.code(), Some(0), "{}", stdout(&allowed));
    assert!(
        stderr(&allowed).contains("--allow-deletes lifts the delete budgets"),
        "{}",
        stderr(&allowed)
    );
    assert_eq!(
        dirsync(&["plan", "-c", c], dir.path()).status.code(),
        Some(0)
    );
}

#[test]
fn a_bad_csv_is_an_error_naming_the_file_and_line() {
    let (dir, config) = quickstart();
    let csv = dir.path().join("config/example-users.csv");
    let mut text = std::fs::read_to_string(&csv).unwrap();
    text.push_str("E9999,broken,row\n");
    std::fs::write(&csv, text).unwrap();
    let out = dirsync(&["plan", "-c", config.to_str().unwrap()], dir.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("example-users.csv:22: the row has 3 fields but the header has 8"),
        "{}",
        stderr(&out)
    );
}

async fn admin(url: &str, what: &str) -> serde_json::Value {
    let response = reqwest::Client::new()
        .get(format!("{url}/admin/{what}"))
        .bearer_auth(TOKEN)
        .send()
        .await;
    match response {
        Ok(r) => r.json().await.unwrap_or_default(),
        Err(_) => serde_json::Value::Null,
    }
}

#[tokio::test]
async fn a_sync_killed_part_way_is_converged_by_the_next_run_without_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), TOKEN).unwrap();
    // A slow emulator in its own process, so killing the sync does not kill it.
    let emu = spawn_emulator(&["--latency-ms", "30"]);
    let url = emu.url.clone();
    let mut csv = String::from("id,email,name,customer\n");
    for i in 0..60 {
        csv.push_str(&format!("u{i},user{i}@x.example,User {i},c{}\n", i % 3));
    }
    std::fs::write(dir.path().join("users.csv"), csv).unwrap();
    std::fs::write(
        dir.path().join("dirsync.yaml"),
        format!(
            "platform:\n  url: {url}\n  token: {{ file: token }}\n  requests_per_second: 1000\nsource:\n  csv:\n    users_file: users.csv\nmapping:\n  customer: {{ external_id: customer, name: customer }}\n  user: {{ external_id: id, customer: customer, email: email, name: name }}\n"
        ),
    )
    .unwrap();
    let mutations = || async {
        admin(&url, "stats").await["mutations"]
            .as_u64()
            .unwrap_or(0)
    };

    let mut sync = Command::new(env!("CARGO_BIN_EXE_dirsync"))
        .args(["sync", "-c", "dirsync.yaml"])
        .current_dir(dir.path())
        .env("DIRSYNC_LOG", "off")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Poll (with a deadline) until the sync is part-way through its apply.
    let start = Instant::now();
    while mutations().await < 10 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the sync never reached 10 mutations"
        );
        tokio::task::yield_now().await;
    }
    sync.kill().unwrap(); // SIGKILL, mid-apply
    sync.wait().unwrap();
    let sent = mutations().await;
    assert!(sent < 63, "killed before the end ({sent} of 63 mutations)");

    let rerun = dirsync(&["sync", "-c", "dirsync.yaml"], dir.path());
    assert_eq!(
        rerun.status.code(),
        Some(0),
        "{}{}",
        stdout(&rerun),
        stderr(&rerun)
    );
    let again = dirsync(&["plan", "-c", "dirsync.yaml"], dir.path());
    assert_eq!(
        again.status.code(),
        Some(0),
        "converged: {}",
        stdout(&again)
    );

    let state = admin(&url, "state").await;
    let users: Vec<&serde_json::Value> = state["users"]
        .as_object()
        .unwrap()
        .values()
        .filter(|u| !u["customerId"].is_null())
        .collect();
    let customers: Vec<&serde_json::Value> = state["customers"]
        .as_object()
        .unwrap()
        .values()
        .filter(|c| !c["externalId"].is_null())
        .collect();
    assert_eq!(users.len(), 60, "no duplicate users");
    assert_eq!(customers.len(), 3, "no duplicate customers");
    drop(emu);
}

#[test]
fn an_error_names_its_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let out = dirsync(&["check-config", "-c", "missing.yaml"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
    assert!(
        err.starts_with("dirsync: cannot read missing.yaml: No such file or directory"),
        "{err}"
    );
}

#[test]
fn without_dash_c_the_config_comes_from_dirsync_config_then_etc() {
    let (dir, config) = quickstart();
    let from_env = Command::new(env!("CARGO_BIN_EXE_dirsync"))
        .arg("check-config")
        .env("DIRSYNC_CONFIG", &config)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(from_env.status.code(), Some(0), "{}", stderr(&from_env));
    assert!(
        stdout(&from_env).starts_with(&format!("{}: OK", config.display())),
        "{}",
        stdout(&from_env)
    );
    let fallback = Command::new(env!("CARGO_BIN_EXE_dirsync"))
        .arg("check-config")
        .env_remove("DIRSYNC_CONFIG")
        .current_dir(dir.path())
        .output()
        .unwrap();
    let said = format!("{}{}", stdout(&fallback), stderr(&fallback));
    assert!(said.contains("/etc/dirsync/config.yaml"), "{said}");
    let help = dirsync(&["check-config", "--help"], dir.path());
    let help = stdout(&help);
    assert!(
        help.contains("DIRSYNC_CONFIG") && help.contains("/etc/dirsync/config.yaml"),
        "{help}"
    );
}

#[test]
fn check_config_reads_no_secret_for_the_default_or_a_named_token() {
    let (dir, config) = quickstart();
    let text = std::fs::read_to_string(&config).unwrap();
    let url = text.replace(
        "  emulator:\n    state: ../.dirsync-state/emulator.json\n",
        "  url: https://app.prismatic.io\n",
    );
    assert_ne!(url, text, "the quickstart names the emulator");
    for (name, body) in [
        ("default-token.yaml", url.clone()),
        (
            "named-token.yaml",
            url.replace(
                "  url: https://app.prismatic.io\n",
                "  url: https://app.prismatic.io\n  token: { env: DIRSYNC_TEST_UNSET_TOKEN }\n",
            ),
        ),
    ] {
        let path = config.with_file_name(name);
        std::fs::write(&path, body).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_dirsync"))
            .args(["check-config", "-c", path.to_str().unwrap()])
            .env_remove("PRISMATIC_API_KEY")
            .env_remove("PRISM_ACCESS_TOKEN")
            .env_remove("PRISM_REFRESH_TOKEN")
            .env_remove("DIRSYNC_TEST_UNSET_TOKEN")
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{name}: {}", stderr(&out));
        assert!(stdout(&out).contains("secrets are not read"), "{name}");
    }
}

#[test]
fn an_inline_secret_in_the_config_is_named_by_key_and_never_echoed() {
    const CANARY: &str = "canary-7f3a2c91-secret";
    let mapping = "mapping:\n  customer: { external_id: c, name: c }\n  user: { external_id: id, customer: c, email: mail }\n";
    let emulator = "platform:\n  emulator: { state: state.json }\n";
    let url = "platform:\n  url: https://app.prismatic.io\n";
    let ldap = |bind: &str| {
        format!("{emulator}source:\n  ldap:\n    url: ldaps://dc.example\n    bind_dn: cn=dirsync\n    {bind}\n    users: {{ base: 'dc=example' }}\n    customers: {{ strategy: ancestor, base: 'dc=example' }}\n{mapping}")
    };
    let http = |auth: &str| {
        format!("{emulator}source:\n  http:\n    users: {{ url: https://hr.example/users }}\n    {auth}\n{mapping}")
    };
    let csv =
        |platform: &str| format!("{platform}source:\n  csv: {{ users_file: u.csv }}\n{mapping}");
    let cases = [
        (
            "source.ldap.bind_password",
            ldap(&format!("bind_password: {CANARY}")),
        ),
        (
            "source.ldap.bind_password.env",
            ldap(&format!("bind_password: {{ env: {CANARY} }}")),
        ),
        (
            "source.http.auth.bearer",
            http(&format!("auth: {{ bearer: {CANARY} }}")),
        ),
        ("source.http.auth", http(&format!("auth: {CANARY}"))),
        (
            "source.http.auth.basic.password",
            http(&format!(
                "auth: {{ basic: {{ username: u, password: {CANARY} }} }}"
            )),
        ),
        (
            "source.http.auth.api_key.value",
            http(&format!(
                "auth: {{ api_key: {{ header: X-Key, value: {CANARY} }} }}"
            )),
        ),
        (
            "source.http.headers.X-Key",
            http(&format!("headers: {{ X-Key: [{CANARY}] }}")),
        ),
        ("platform.token", csv(&format!("{url}  token: {CANARY}\n"))),
        (
            "platform.token.env",
            csv(&format!("{url}  token: {{ env: {CANARY} }}\n")),
        ),
        (
            "platform.refresh_token",
            csv(&format!("{url}  refresh_token: {CANARY}\n")),
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (key, text) in cases {
        let path = dir.path().join("dirsync.yaml");
        std::fs::write(&path, &text).unwrap();
        let out = dirsync(&["check-config", "-c", "dirsync.yaml"], dir.path());
        let said = format!("{}{}", stdout(&out), stderr(&out));
        assert_eq!(out.status.code(), Some(1), "{key}: {said}\n{text}");
        assert!(
            !said.contains(CANARY),
            "{key}: the secret was echoed: {said}"
        );
        assert!(said.contains(&format!(": {key}: ")), "{key}: {said}");
    }
}

/// Measured: `dirsync plan ... | head -c 10` exited 101 with a panic message
/// once the reader had gone.
#[test]
fn a_closed_stdout_does_not_panic() {
    let (dir, config) = quickstart();
    for args in [
        vec!["plan", "-c", config.to_str().unwrap()],
        vec!["plan", "--output", "json", "-c", config.to_str().unwrap()],
        vec!["check-config", "-c", config.to_str().unwrap()],
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_dirsync"))
            .args(&args)
            .current_dir(dir.path())
            .env("DIRSYNC_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // The reader goes away before anything is written: every write fails.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let err = stderr(&out);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(
            matches!(out.status.code(), Some(0 | 2)),
            "{args:?}: {:?} {err}",
            out.status
        );
    }
}

#[test]
fn dirsync_test_checks_both_sides_and_changes_nothing() {
    let (dir, config) = quickstart();
    let c = config.to_str().unwrap();
    let state = dir.path().join(".dirsync-state/emulator.json");
    let out = dirsync(&["test", "-c", c], dir.path());
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    for expected in [
        "+ platform: the token works, signed in as",
        "+ platform: every role the mapping names exists",
        "+ source: ",
        "    user ",
        "Nothing was changed.",
    ] {
        assert!(text.contains(expected), "{expected}: {text}");
    }
    let before = std::fs::read(&state).ok();
    // A sync would create everything; the test sent no mutation.
    let plan = dirsync(&["plan", "-c", c], dir.path());
    assert_eq!(plan.status.code(), Some(2), "{}", stdout(&plan));
    assert_eq!(std::fs::read(&state).ok(), before);

    // A role the platform does not have: exit 1, the source still checked.
    let text = std::fs::read_to_string(&config).unwrap();
    let bad = config.with_file_name("bad-role.yaml");
    std::fs::write(
        &bad,
        text.replacen("    default: Member", "    default: Overlord", 1),
    )
    .unwrap();
    let out = dirsync(&["test", "-c", bad.to_str().unwrap()], dir.path());
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}{}", stderr(&out));
    assert!(
        text.contains("x platform: ") && text.contains("Overlord"),
        "{text}"
    );
    assert!(text.contains("+ source: "), "{text}");
    assert!(text.contains("FAILED"), "{text}");
}

/// The quickstart synced once, then `remove` of its CSV rows taken out.
fn synced_quickstart_without(remove: &[&str]) -> (tempfile::TempDir, PathBuf) {
    let (dir, config) = quickstart();
    let c = config.to_str().unwrap();
    let first = dirsync(&["sync", "-c", c], dir.path());
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let csv = dir.path().join("config/example-users.csv");
    let text: String = std::fs::read_to_string(&csv)
        .unwrap()
        .lines()
        .filter(|l| !remove.iter().any(|id| l.starts_with(&format!("{id},"))))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&csv, text).unwrap();
    (dir, config)
}

#[test]
fn dry_run_with_allow_deletes_previews_what_the_flag_would_let_through() {
    // 3 of 20 users gone: 15%, over the 10% delete budget.
    let (dir, config) = synced_quickstart_without(&["E1001", "E1002", "E1003"]);
    let c = config.to_str().unwrap();
    let state = dir.path().join(".dirsync-state/emulator.json");
    let before = std::fs::read(&state).unwrap();

    let blocked = dirsync(&["sync", "--dry-run", "-c", c], dir.path());
    assert_eq!(blocked.status.code(), Some(3), "{}", stdout(&blocked));
    assert!(
        stdout(&blocked)
            .contains("to lift: review the user deletes, then run once with --allow-deletes"),
        "{}",
        stdout(&blocked)
    );

    for args in [
        &["sync", "--dry-run", "--allow-deletes", "-c", c][..],
        &["plan", "--allow-deletes", "-c", c][..],
    ] {
        let preview = dirsync(args, dir.path());
        let shown = stdout(&preview);
        assert_eq!(preview.status.code(), Some(2), "{args:?}: {shown}");
        assert!(!shown.contains("BLOCKED"), "{args:?}: {shown}");
        assert!(
            shown.contains("  - user E1001  ada.lovelace@acme.example in customer acme  (absent from the directory)"),
            "{shown}"
        );
        assert!(
            stderr(&preview).contains("lifts the delete budgets in this preview"),
            "{}",
            stderr(&preview)
        );
    }
    assert_eq!(
        std::fs::read(&state).unwrap(),
        before,
        "a preview sends nothing"
    );
}

#[test]
fn a_shrink_block_never_advises_allow_deletes_when_it_was_given() {
    // 5 of 20 users gone: a shrink of 25%, over max_shrink_percent (20).
    let (dir, config) = synced_quickstart_without(&["E1001", "E1002", "E1003", "E1004", "E1005"]);
    let c = config.to_str().unwrap();
    let run = dirsync(&["sync", "--allow-deletes", "-c", c], dir.path());
    let shown = stdout(&run);
    assert_eq!(run.status.code(), Some(3), "{shown}");
    assert!(shown.contains("policy.max_shrink_percent (20%)"), "{shown}");
    assert!(
        shown.contains("to lift: if the directory really shrank, raise policy.max_shrink_percent to at least 25"),
        "{shown}"
    );
    assert!(
        !shown.contains("run once with --allow-deletes"),
        "the flag was given and does not lift a shrink: {shown}"
    );
    assert!(
        !stderr(&run).contains("every planned delete will be sent"),
        "{}",
        stderr(&run)
    );
}

#[test]
fn a_refused_record_is_warned_about_and_counted_though_the_sync_succeeds() {
    let (dir, config) = quickstart();
    let c = config.to_str().unwrap();
    let csv = dir.path().join("config/example-users.csv");
    let text = std::fs::read_to_string(&csv)
        .unwrap()
        .replace("grace.hopper@acme.example", "grace.hopper-at-acme");
    std::fs::write(&csv, text).unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_dirsync"))
        .args(["sync", "-c", c])
        .current_dir(dir.path())
        .env("DIRSYNC_LOG", "info")
        .output()
        .unwrap();
    let (out, err) = (stdout(&run), stderr(&run));
    assert_eq!(run.status.code(), Some(0), "{out}{err}");
    // Line 4 of the file holds E1003 (the header is line 1).
    let warning = err
        .lines()
        .find(|l| l.contains("WARN") && l.contains("Record refused"))
        .unwrap_or_else(|| panic!("no WARN line for the refused record: {err}"));
    assert!(warning.contains("example-users.csv:4"), "{warning}");
    assert!(
        out.contains("Refused records (what they name is neither updated nor deleted):"),
        "{out}"
    );
    assert!(
        out.contains("Plan: 23 to create, 0 to update, 0 to delete; 1 refused record (see above)."),
        "{out}"
    );
    let summary = err
        .lines()
        .find(|l| l.contains("Run finished."))
        .unwrap_or_else(|| panic!("no summary line: {err}"));
    assert!(summary.contains("refused=1"), "{summary}");

    let json = dirsync(&["plan", "-c", c, "--output", "json"], dir.path());
    let json: serde_json::Value = serde_json::from_str(&stdout(&json)).unwrap();
    assert_eq!(json["plan"]["refused"].as_array().map(Vec::len), Some(1));
    assert_eq!(json["refusedRecords"], 1);
}

#[test]
fn refused_record_warnings_stop_at_the_cap_and_count_the_rest() {
    let (dir, config) = quickstart();
    let c = config.to_str().unwrap();
    // 25 users with bad emails in customer acme; the refused-records cap is
    // raised so that the run goes on.
    let csv = dir.path().join("config/example-users.csv");
    let mut text = std::fs::read_to_string(&csv).unwrap();
    for i in 0..25 {
        text.push_str(&format!(
            "X{i},bad-{i},Bad {i},,staff,acme,Acme Rockets,gold\n"
        ));
    }
    std::fs::write(&csv, text).unwrap();
    let yaml = std::fs::read_to_string(&config)
        .unwrap()
        .replace("    max_count: 10\n", "    max_count: 100\n")
        .replace("    max_percent: 1\n", "    max_percent: 100\n");
    std::fs::write(&config, yaml).unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_dirsync"))
        .args(["plan", "-c", c])
        .current_dir(dir.path())
        .env("DIRSYNC_LOG", "warn")
        .output()
        .unwrap();
    let err = stderr(&run);
    assert_eq!(run.status.code(), Some(2), "{err}");
    let one_by_one = err.lines().filter(|l| l.contains("Record refused")).count();
    assert_eq!(one_by_one, 20, "{err}");
    assert!(
        err.contains("5 more records refused (not logged one by one)"),
        "{err}"
    );
}
