//! Saved plans, applied exactly: `dirsync plan --out FILE` then `dirsync
//! apply -c CONFIG FILE`, the real binary against a `dirsync emulator`
//! process over HTTP. Only the saved operations are sent; a plan whose
//! records changed on the platform, or whose config changed, is refused
//! (exit 6) with nothing sent; `--allow-deletes` on `plan --out` is the
//! approval `apply` honours.

use std::path::Path;
use std::process::Output;

use serde_json::{json, Value};

use crate::support::*;

/// Runs dirsync and checks its exit code, showing both streams when it differs.
fn expect(code: i32, args: &[&str], cwd: &Path) -> Output {
    let out = dirsync(args, cwd);
    assert_eq!(
        out.status.code(),
        Some(code),
        "dirsync {}:\n{}{}",
        args.join(" "),
        stdout(&out),
        stderr(&out)
    );
    out
}

/// CSV rows `id,email,name,customer` for users `ids`, all in customer `c1`
/// unless the id says otherwise (`c2:u9` puts u9 in c2).
fn csv(ids: &[&str]) -> String {
    let mut text = String::from("id,email,name,customer\n");
    for entry in ids {
        let (customer, id) = entry.split_once(':').unwrap_or(("c1", entry));
        text.push_str(&format!("{id},{id}@x.example,User {id},{customer}\n"));
    }
    text
}

/// A work folder: the token file, the CSV and `dirsync.yaml` pointing at a
/// fresh emulator process (its policy `policy`, YAML, may be empty).
fn setup(users: &[&str], policy: &str) -> (tempfile::TempDir, EmulatorProcess) {
    let dir = tempfile::tempdir().unwrap();
    let emu = spawn_emulator(&[]);
    std::fs::write(dir.path().join("token"), TOKEN).unwrap();
    std::fs::write(dir.path().join("users.csv"), csv(users)).unwrap();
    std::fs::write(
        dir.path().join("dirsync.yaml"),
        format!(
            "platform:\n  url: {}\n  token: {{ file: token }}\n  requests_per_second: 1000\nsource:\n  csv:\n    users_file: users.csv\nmapping:\n  customer: {{ external_id: customer, name: customer }}\n  user: {{ external_id: id, customer: customer, email: email, name: name }}\n{policy}",
            emu.url
        ),
    )
    .unwrap();
    (dir, emu)
}

/// Sends a GraphQL document to the emulator with the token, as another
/// client of the platform would.
async fn graphql(url: &str, query: &str, variables: Value) -> Value {
    let answer: Value = reqwest::Client::new()
        .post(format!("{url}/api"))
        .bearer_auth(TOKEN)
        .json(&json!({ "query": query, "variables": variables }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(answer["errors"].is_null(), "{answer}");
    answer["data"].clone()
}

/// Mutations the emulator has executed so far.
async fn mutations(url: &str) -> u64 {
    let stats: Value = reqwest::Client::new()
        .get(format!("{url}/admin/stats"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    stats["mutations"].as_u64().unwrap()
}

/// The emulator's managed customer users: externalId -> name.
async fn users(url: &str) -> std::collections::BTreeMap<String, String> {
    let data = graphql(
        url,
        "{ users(first: 100, customer_Isnull: false) { nodes { externalId name } } }",
        json!({}),
    )
    .await;
    data["users"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|u| {
            Some((
                u["externalId"].as_str()?.to_owned(),
                u["name"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

async fn user_id(url: &str, external_id: &str) -> String {
    let data = graphql(
        url,
        "query($x: String!) { users(first: 2, externalId: $x) { nodes { id } } }",
        json!({ "x": external_id }),
    )
    .await;
    data["users"]["nodes"][0]["id"].as_str().unwrap().to_owned()
}

fn summary(out: &Output) -> String {
    stdout(out)
        .lines()
        .find(|l| l.starts_with("Plan: ") || l.starts_with("No changes"))
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn a_saved_plan_is_applied_exactly() {
    let (dir, emu) = setup(&["u1", "u2"], "");
    let cwd = dir.path();
    let planned = expect(
        2,
        &["plan", "-c", "dirsync.yaml", "--out", "plan.json"],
        cwd,
    );
    assert_eq!(
        summary(&planned),
        "Plan: 3 to create, 0 to update, 0 to delete."
    );
    assert!(
        stdout(&planned).contains("Saved the plan to plan.json"),
        "{}",
        stdout(&planned)
    );
    assert_eq!(mutations(&emu.url).await, 0, "plan --out sends nothing");

    let text = std::fs::read_to_string(cwd.join("plan.json")).unwrap();
    assert!(
        !text.contains(TOKEN),
        "the token never reaches the plan file"
    );
    let file: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(file["format"], "dirsync-plan");
    assert_eq!(file["version"], 1);
    assert_eq!(file["allowDeletes"], false);
    assert_eq!(file["configPath"], "dirsync.yaml");
    let config = std::fs::read(cwd.join("dirsync.yaml")).unwrap();
    assert_eq!(
        file["configDigest"].as_str().unwrap(),
        dirsync::saved_plan::digest(&config)
    );
    assert_eq!(file["plan"]["operations"].as_array().unwrap().len(), 3);
    assert_eq!(file["records"].as_array().unwrap().len(), 3);
    assert_eq!(file["records"][0]["basis"], "noCustomer");
    assert_eq!(file["records"][1]["basis"], "noUser");

    // The directory moves on after the review: a new row. It is not applied.
    std::fs::write(cwd.join("users.csv"), csv(&["u1", "u2", "u3"])).unwrap();
    let applied = expect(0, &["apply", "-c", "dirsync.yaml", "plan.json"], cwd);
    assert!(
        stdout(&applied).contains("Applied: 3 applied."),
        "{}",
        stdout(&applied)
    );
    assert_eq!(mutations(&emu.url).await, 3, "exactly the saved operations");
    let now = users(&emu.url).await;
    assert_eq!(
        now.keys().map(String::as_str).collect::<Vec<_>>(),
        vec!["u1", "u2"],
        "the row added after planning is not created"
    );

    let next = expect(2, &["plan", "-c", "dirsync.yaml"], cwd);
    assert_eq!(
        summary(&next),
        "Plan: 1 to create, 0 to update, 0 to delete."
    );
    assert!(stdout(&next).contains("u3"), "{}", stdout(&next));

    // A plan with nothing in it applies as nothing.
    expect(0, &["sync", "-c", "dirsync.yaml"], cwd);
    expect(
        0,
        &["plan", "-c", "dirsync.yaml", "--out", "empty.json"],
        cwd,
    );
    let nothing = expect(0, &["apply", "-c", "dirsync.yaml", "empty.json"], cwd);
    assert_eq!(stdout(&nothing), "nothing to apply\n");
}

#[tokio::test]
async fn a_stale_saved_plan_is_refused_when_a_record_changed_after_planning() {
    let (dir, emu) = setup(&["u1", "u2"], "");
    let cwd = dir.path();
    expect(0, &["sync", "-c", "dirsync.yaml"], cwd);
    // The directory renames u1: the plan updates it.
    std::fs::write(
        cwd.join("users.csv"),
        csv(&["u1", "u2"]).replace("User u1", "Ada"),
    )
    .unwrap();
    let planned = expect(
        2,
        &["plan", "-c", "dirsync.yaml", "--out", "plan.json"],
        cwd,
    );
    assert_eq!(
        summary(&planned),
        "Plan: 0 to create, 1 to update, 0 to delete."
    );

    // Someone renames u1 on the platform after the review.
    let id = user_id(&emu.url, "u1").await;
    graphql(
        &emu.url,
        "mutation($id: ID!) { updateUser(input: { id: $id, name: \"Renamed Elsewhere\" }) { user { id } errors { field messages } } }",
        json!({ "id": id }),
    )
    .await;
    let sent = mutations(&emu.url).await;

    let refused = expect(6, &["apply", "-c", "dirsync.yaml", "plan.json"], cwd);
    let err = stderr(&refused);
    assert!(
        err.contains("the platform changed since the plan was made, so nothing was sent"),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "user u1 (id {id}): name \"User u1\" -> \"Renamed Elsewhere\"; updatedAt "
        )),
        "{err}"
    );
    assert!(err.contains("run dirsync plan --out again"), "{err}");
    assert_eq!(mutations(&emu.url).await, sent, "nothing was sent");
    assert_eq!(users(&emu.url).await["u1"], "Renamed Elsewhere");
}

#[tokio::test]
async fn a_saved_plan_is_refused_when_the_config_changed() {
    let (dir, emu) = setup(&["u1"], "");
    let cwd = dir.path();
    expect(
        2,
        &["plan", "-c", "dirsync.yaml", "--out", "plan.json"],
        cwd,
    );
    let config = cwd.join("dirsync.yaml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("# an edit after the review\n");
    std::fs::write(&config, text).unwrap();
    let refused = expect(6, &["apply", "-c", "dirsync.yaml", "plan.json"], cwd);
    let err = stderr(&refused);
    assert!(
        err.contains("the config changed since the plan was made: dirsync.yaml now has SHA-256"),
        "{err}"
    );
    assert!(err.contains("run dirsync plan --out again"), "{err}");
    assert_eq!(mutations(&emu.url).await, 0);
}

#[tokio::test]
async fn allow_deletes_on_plan_out_is_recorded_and_lifts_the_budget_at_apply() {
    let policy =
        "policy:\n  delete_users: { max_count: 2, max_percent: 100 }\n  max_shrink_percent: 100\n";
    let (dir, emu) = setup(&["u1", "u2", "u3", "u4", "u5"], policy);
    let cwd = dir.path();
    expect(0, &["sync", "-c", "dirsync.yaml"], cwd);
    std::fs::write(cwd.join("users.csv"), csv(&["u1", "u2"])).unwrap();
    let sent = mutations(&emu.url).await;

    // Three deletes reach the budget of two: the plan is saved blocked, and
    // applying it sends nothing.
    let blocked = expect(
        3,
        &["plan", "-c", "dirsync.yaml", "--out", "plan.json"],
        cwd,
    );
    assert!(stdout(&blocked).contains("BLOCKED"), "{}", stdout(&blocked));
    let refused = expect(3, &["apply", "-c", "dirsync.yaml", "plan.json"], cwd);
    assert!(
        stdout(&refused).contains("3 user deletes of 5 managed users reach the budget"),
        "{}",
        stdout(&refused)
    );
    assert_eq!(
        mutations(&emu.url).await,
        sent,
        "a blocked plan sends nothing"
    );

    // Approved at plan time: recorded in the file, honoured by apply.
    let approved = expect(
        2,
        &[
            "plan",
            "-c",
            "dirsync.yaml",
            "--out",
            "approved.json",
            "--allow-deletes",
        ],
        cwd,
    );
    assert_eq!(
        summary(&approved),
        "Plan: 0 to create, 0 to update, 3 to delete."
    );
    let file: Value =
        serde_json::from_str(&std::fs::read_to_string(cwd.join("approved.json")).unwrap()).unwrap();
    assert_eq!(file["allowDeletes"], true);
    let applied = expect(
        0,
        &[
            "apply",
            "-c",
            "dirsync.yaml",
            "approved.json",
            "--output",
            "json",
        ],
        cwd,
    );
    let report: Value = serde_json::from_str(&stdout(&applied)).unwrap();
    assert_eq!(report["mode"], "apply");
    assert_eq!(report["allowDeletes"], true);
    assert_eq!(report["outcomes"]["user"]["delete"]["applied"], 3);
    assert_eq!(
        users(&emu.url)
            .await
            .keys()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        vec!["u1", "u2"]
    );
    expect(0, &["plan", "-c", "dirsync.yaml"], cwd);
}

#[tokio::test]
async fn a_create_whose_external_id_appeared_meanwhile_is_refused() {
    let (dir, emu) = setup(&["u1"], "");
    let cwd = dir.path();
    expect(0, &["sync", "-c", "dirsync.yaml"], cwd);
    // A new customer c2 with one user: two creates.
    std::fs::write(cwd.join("users.csv"), csv(&["u1", "c2:u2"])).unwrap();
    let planned = expect(
        2,
        &["plan", "-c", "dirsync.yaml", "--out", "plan.json"],
        cwd,
    );
    assert_eq!(
        summary(&planned),
        "Plan: 2 to create, 0 to update, 0 to delete."
    );

    // Someone else creates c2 first.
    let data = graphql(
        &emu.url,
        "mutation { createCustomer(input: { name: \"Someone Else\", externalId: \"c2\" }) { customer { id } errors { field messages } } }",
        json!({}),
    )
    .await;
    let id = data["createCustomer"]["customer"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let sent = mutations(&emu.url).await;

    let refused = expect(6, &["apply", "-c", "dirsync.yaml", "plan.json"], cwd);
    let err = stderr(&refused);
    assert!(
        err.contains(&format!(
            "customer c2 (id {id}): a customer with this externalId now exists (\"Someone Else\")"
        )),
        "{err}"
    );
    assert_eq!(mutations(&emu.url).await, sent, "nothing was sent");
    assert!(!users(&emu.url).await.contains_key("u2"));
}

#[tokio::test]
async fn a_plan_file_that_is_not_one_is_refused_by_name() {
    let (dir, emu) = setup(&["u1"], "");
    let cwd = dir.path();
    std::fs::write(
        cwd.join("other.json"),
        "{\"format\": \"tfplan\", \"version\": 1}",
    )
    .unwrap();
    let out = expect(1, &["apply", "-c", "dirsync.yaml", "other.json"], cwd);
    assert!(
        stderr(&out).contains("other.json: not a dirsync plan file: format \"tfplan\""),
        "{}",
        stderr(&out)
    );
    std::fs::write(
        cwd.join("broken.json"),
        "{\n  \"format\": \"dirsync-plan\",\n",
    )
    .unwrap();
    let out = expect(1, &["apply", "-c", "dirsync.yaml", "broken.json"], cwd);
    assert!(
        stderr(&out).contains("broken.json:3:"),
        "line and column: {}",
        stderr(&out)
    );
    assert_eq!(mutations(&emu.url).await, 0);
}
