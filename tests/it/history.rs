//! The audit history on the real binary: `dirsync history` over what `sync`,
//! `apply` (a saved plan) and `run` recorded in `state_dir/dirsync.sqlite3`,
//! against the quickstart's built-in emulator; and a sync killed with
//! SIGKILL mid-apply, which leaves a store that reads and goes on.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::support::*;

/// Runs dirsync and checks its exit code; returns its standard output.
fn expect(code: i32, args: &[&str], cwd: &Path) -> String {
    let out = dirsync(args, cwd);
    assert_eq!(
        out.status.code(),
        Some(code),
        "dirsync {args:?}\n{}{}",
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

fn edit_csv(dir: &Path, from: &str, to: &str) {
    let csv = dir.join("config/example-users.csv");
    let text = std::fs::read_to_string(&csv).unwrap();
    assert!(text.contains(from), "{from} is in the quickstart's CSV");
    std::fs::write(&csv, text.replace(from, to)).unwrap();
}

fn history_json(args: &[&str], cwd: &Path) -> Vec<serde_json::Value> {
    let mut all = vec!["history", "-c", "config/example.yaml", "--output", "json"];
    all.extend_from_slice(args);
    let out = expect(0, &all, cwd);
    serde_json::from_str::<serde_json::Value>(&out)
        .unwrap_or_else(|e| panic!("JSON: {e}\n{out}"))
        .as_array()
        .expect("an array")
        .clone()
}

/// `2026-12-01T10:00:00Z  sync   run 3f2a9c1b…  <what>`: the time, the
/// mode, the run id's first 8 characters, and the rest.
fn split_line(line: &str) -> (DateTime<Utc>, &str, &str, &str) {
    let (time, rest) = line.split_once("  ").unwrap_or_else(|| panic!("{line}"));
    let time = DateTime::parse_from_rfc3339(time)
        .unwrap_or_else(|e| panic!("{e}: {line}"))
        .with_timezone(&Utc);
    let (mode, rest) = rest
        .split_once("  run ")
        .unwrap_or_else(|| panic!("{line}"));
    let (run, what) = rest.split_once("…  ").unwrap_or_else(|| panic!("{line}"));
    assert_eq!(run.len(), 8, "{line}");
    assert!(run.chars().all(|c| c.is_ascii_hexdigit()), "{line}");
    (time, mode.trim_end(), run, what)
}

#[test]
fn history_says_who_changed_a_user_and_when_across_syncs_and_a_saved_plan() {
    let (dir, _) = quickstart();
    let cwd = dir.path();
    let c = "config/example.yaml";

    let none = expect(0, &["history", "-c", c], cwd);
    assert_eq!(
        none,
        "no history yet (config/../.dirsync-state/dirsync.sqlite3 does not exist)\n"
    );
    assert_eq!(history_json(&[], cwd).len(), 0);
    expect(2, &["plan", "-c", c], cwd);
    expect(2, &["sync", "-c", c, "--dry-run"], cwd);
    assert!(
        !cwd.join(".dirsync-state/dirsync.sqlite3").exists(),
        "a plan records nothing"
    );

    let first = expect(0, &["sync", "-c", c], cwd);
    assert!(first.contains("Plan: 24 to create"), "{first}");
    edit_csv(cwd, "+1 555 0102", "+1 555 9999");
    let second = expect(0, &["sync", "-c", c], cwd);
    assert!(
        second.contains("Plan: 0 to create, 1 to update"),
        "{second}"
    );
    // In sync: a run with nothing to send records nothing.
    expect(0, &["sync", "-c", c], cwd);

    let text = expect(0, &["history", "-c", c, "--external-id", "E1002"], cwd);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "the create, then the update: {text}");
    let (created_at, mode, create_run, what) = split_line(lines[0]);
    assert_eq!(mode, "sync");
    assert_eq!(
        what,
        "create user E1002 <charles.babbage@acme.example> in customer acme: applied"
    );
    let (updated_at, mode, update_run, what) = split_line(lines[1]);
    assert_eq!(mode, "sync");
    assert_eq!(
        what,
        "update user E1002 <charles.babbage@acme.example> in customer acme: applied; phone: \"+1 555 0102\" -> \"+1 555 9999\""
    );
    assert_ne!(create_run, update_run, "two runs");
    assert!(created_at <= updated_at, "newest last");
    let now = Utc::now();
    assert!(
        (now - created_at).num_minutes() < 10,
        "UTC, now: {created_at}"
    );

    let json = history_json(&["--external-id", "E1002"], cwd);
    assert_eq!(json.len(), 2);
    assert_eq!(json[0]["action"], "create");
    assert_eq!(json[0]["kind"], "user");
    assert_eq!(json[0]["outcome"], "applied");
    assert_eq!(json[0]["platformId"], serde_json::Value::Null);
    assert_eq!(json[1]["action"], "update");
    assert_eq!(json[1]["mode"], "sync");
    assert_eq!(json[1]["email"], "charles.babbage@acme.example");
    assert_eq!(json[1]["customerExternalId"], "acme");
    assert!(json[1]["platformId"].is_string(), "{}", json[1]);
    assert_eq!(
        json[1]["changes"],
        serde_json::json!([{"field": "phone", "before": "+1 555 0102", "after": "+1 555 9999"}])
    );
    let run_ids: Vec<&str> = json.iter().map(|e| e["runId"].as_str().unwrap()).collect();
    for id in &run_ids {
        assert!(uuid::Uuid::parse_str(id).is_ok(), "a UUID: {id}");
    }
    assert!(run_ids[0].starts_with(create_run) && run_ids[1].starts_with(update_run));

    // Everything: 4 customers and 20 users created, then the update.
    let all = history_json(&[], cwd);
    assert_eq!(all.len(), 25);
    assert!(all[..24].iter().all(|e| e["runId"] == run_ids[0]));
    // --since: the update's own time lets through just it.
    let since = json[1]["at"].as_str().unwrap();
    let recent = history_json(&["--since", since], cwd);
    assert_eq!(recent.len(), 1, "{recent:?}");
    assert_eq!(recent[0]["runId"], run_ids[1]);
    let today = now.format("%Y-%m-%d").to_string();
    assert_eq!(history_json(&["--since", &today], cwd).len(), 25);
    assert_eq!(history_json(&["--since", "24h"], cwd).len(), 25);
    assert_eq!(
        expect(0, &["history", "-c", c, "--since", "2999-01-01"], cwd),
        "no recorded operations match\n"
    );
    let bad = dirsync(&["history", "-c", c, "--since", "last tuesday"], cwd);
    assert_eq!(bad.status.code(), Some(2), "a usage error");
    assert!(stderr(&bad).contains("RFC 3339"), "{}", stderr(&bad));

    // A saved plan applied later is recorded as `apply`.
    edit_csv(cwd, "+1 555 9999", "+1 555 7777");
    expect(2, &["plan", "-c", c, "--out", "plan.json"], cwd);
    expect(0, &["apply", "-c", c, "plan.json"], cwd);
    let json = history_json(&["--external-id", "E1002"], cwd);
    assert_eq!(json.len(), 3);
    assert_eq!(json[2]["mode"], "apply");
    assert_eq!(json[2]["changes"][0]["after"], "+1 555 7777");
    assert_ne!(json[2]["runId"], json[1]["runId"]);
}

#[test]
fn the_services_runs_are_recorded_as_run() {
    let (dir, _) = quickstart();
    let cwd = dir.path();
    // The quickstart's schedule runs once at start-up.
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_dirsync"))
        .args(["--log-json", "run", "-c", "config/example.yaml"])
        .current_dir(cwd)
        .env("DIRSYNC_LOG", "info")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = daemon.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if line.contains("Run finished") || line.contains("Run failed") {
                let _ = tx.send(line);
            }
        }
    });
    let finished = rx.recv_timeout(Duration::from_secs(60));
    let pid = rustix::process::Pid::from_raw(daemon.id() as i32).expect("a pid");
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let status = daemon.wait().unwrap();
    let finished = finished.expect("the first run ends within 60 s");
    assert!(finished.contains("Run finished"), "{finished}");
    assert_eq!(status.code(), Some(0));

    let json = history_json(&["--external-id", "E1002"], cwd);
    assert_eq!(json.len(), 1, "{json:?}");
    assert_eq!(json[0]["mode"], "run");
    assert_eq!(json[0]["action"], "create");
    let text = expect(
        0,
        &[
            "history",
            "-c",
            "config/example.yaml",
            "--external-id",
            "acme",
        ],
        cwd,
    );
    let (_, mode, _, what) = split_line(text.trim_end());
    assert_eq!(mode, "run");
    assert_eq!(what, "create customer acme \"Acme Rockets\": applied");
}

async fn mutations(url: &str) -> u64 {
    let response = reqwest::Client::new()
        .get(format!("{url}/admin/stats"))
        .bearer_auth(TOKEN)
        .send()
        .await;
    match response {
        Ok(r) => r.json::<serde_json::Value>().await.unwrap_or_default()["mutations"]
            .as_u64()
            .unwrap_or(0),
        Err(_) => 0,
    }
}

#[tokio::test]
async fn a_sync_killed_mid_apply_leaves_a_store_that_reads_and_records_the_next_run() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    std::fs::write(cwd.join("token"), TOKEN).unwrap();
    // A slow emulator in its own process, so killing the sync does not kill it.
    let emu = spawn_emulator(&["--latency-ms", "30"]);
    let write_users = |n: usize| {
        let mut csv = String::from("id,email,name,customer\n");
        for i in 0..n {
            csv.push_str(&format!("u{i},user{i}@x.example,User {i},c{}\n", i % 3));
        }
        std::fs::write(cwd.join("users.csv"), csv).unwrap();
    };
    std::fs::create_dir(cwd.join("config")).unwrap();
    std::fs::write(
        cwd.join("config/example.yaml"),
        format!(
            "platform:\n  url: {}\n  token: {{ file: ../token }}\n  requests_per_second: 1000\nsource:\n  csv:\n    users_file: ../users.csv\nmapping:\n  customer: {{ external_id: customer, name: customer }}\n  user: {{ external_id: id, customer: customer, email: email, name: name }}\nstate_dir: ../state\n",
            emu.url
        ),
    )
    .unwrap();
    // A first, whole run: the store has a history before the kill.
    write_users(3);
    expect(0, &["sync", "-c", "config/example.yaml"], cwd);
    let before = history_json(&[], cwd);
    assert_eq!(before.len(), 6, "3 customers, 3 users: {before:?}");

    write_users(60);
    let mut sync = Command::new(env!("CARGO_BIN_EXE_dirsync"))
        .args(["sync", "-c", "config/example.yaml"])
        .current_dir(cwd)
        .env("DIRSYNC_LOG", "off")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let at_start = mutations(&emu.url).await;
    while mutations(&emu.url).await < at_start + 10 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the sync never reached 10 mutations"
        );
        tokio::task::yield_now().await;
    }
    sync.kill().unwrap(); // SIGKILL, mid-apply
    sync.wait().unwrap();
    let sent = mutations(&emu.url).await - at_start;
    assert!(sent < 57, "killed before the end ({sent} of 57 mutations)");

    // The store reads: the first run's history is whole; the killed run,
    // which had not ended, recorded nothing.
    assert_eq!(history_json(&[], cwd), before);
    // The next run converges and is recorded.
    expect(0, &["sync", "-c", "config/example.yaml"], cwd);
    let after = history_json(&[], cwd);
    assert_eq!(after[..6], before[..]);
    let rerun = &after[6..];
    assert!(
        !rerun.is_empty() && rerun.len() < 57,
        "the rest of the creates, in one run: {rerun:?}"
    );
    assert!(rerun.iter().all(|e| e["runId"] == rerun[0]["runId"]));
    assert!(rerun.iter().all(|e| e["action"] == "create"));
    assert!(rerun
        .iter()
        .all(|e| e["outcome"] == "applied" || e["outcome"] == "alreadyDone"));
    expect(0, &["plan", "-c", "config/example.yaml"], cwd);
}
