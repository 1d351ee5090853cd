//! The real `dirsync emulator` binary: it prints its URL, serves the API,
//! keeps its state across a restart (even after SIGKILL), applies a seed
//! once, and hides embedded marketplace users unless asked.

use dirsync::model::NewCustomer;
use dirsync::platform::PlatformClient;

use crate::support::*;

async fn graphql(url: &str, query: &str) -> serde_json::Value {
    reqwest::Client::new()
        .post(format!("{url}/api"))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({ "query": query }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_emulator_keeps_its_state_across_a_kill_and_applies_the_seed_once() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let seed_file = dir.path().join("seed.yaml");
    std::fs::write(
        &seed_file,
        "customers:\n  - { name: Acme, externalId: acme }\nusers:\n  - { email: ada@acme.example, name: Ada, customer: acme, role: Admin, externalId: u-1 }\n",
    )
    .unwrap();
    let args = [
        "--state",
        state.to_str().unwrap(),
        "--seed",
        seed_file.to_str().unwrap(),
    ];

    let first = spawn_emulator(&args);
    let client = PlatformClient::new(config_for(&first.url, TOKEN)).unwrap();
    client
        .create_customer(&NewCustomer {
            name: "Globex".to_owned(),
            external_id: Some("globex".to_owned()),
            ..NewCustomer::default()
        })
        .await
        .unwrap();
    drop(first); // SIGKILL: no chance to flush anything at exit.

    let second = spawn_emulator(&args);
    let client = PlatformClient::new(config_for(&second.url, TOKEN)).unwrap();
    let mut names: Vec<_> = client
        .list_customers()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.name)
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["Acme", "Globex"],
        "state survived and the seed was not applied twice"
    );
    assert_eq!(client.list_customer_users().await.unwrap().len(), 1);
}

#[tokio::test]
async fn embedded_marketplace_users_are_listed_only_when_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let seed_file = dir.path().join("seed.yaml");
    std::fs::write(
        &seed_file,
        "customers:\n  - { name: Acme, externalId: acme }\nusers:\n  - { email: ada@acme.example, customer: acme, role: Admin }\n  - { email: 4f1c-embedded, customer: acme, role: Marketplace User, marketplace: true }\norganizationUsers:\n  - { email: dev@vendor.example }\n",
    )
    .unwrap();
    let emu = spawn_emulator(&["--seed", seed_file.to_str().unwrap()]);
    let count = |v: serde_json::Value| v["data"]["users"]["totalCount"].as_i64().unwrap();
    assert_eq!(
        count(graphql(&emu.url, "{ users(customer_Isnull: false) { totalCount } }").await),
        1
    );
    assert_eq!(
        count(
            graphql(
                &emu.url,
                "{ users(customer_Isnull: false, includeMarketplaceUsers: true) { totalCount } }"
            )
            .await
        ),
        2
    );
    // Organization users: the seeded one and the token's owner.
    assert_eq!(
        count(graphql(&emu.url, "{ users(customer_Isnull: true) { totalCount } }").await),
        2
    );
    // System customers are listed unless isSystem: false is passed.
    let all = graphql(
        &emu.url,
        "{ customers { totalCount } c: customers(isSystem: false) { totalCount } }",
    )
    .await;
    assert_eq!(
        (
            all["data"]["customers"]["totalCount"].as_i64(),
            all["data"]["c"]["totalCount"].as_i64()
        ),
        (Some(2), Some(1))
    );
}

#[tokio::test]
async fn pages_hold_at_most_100_nodes_and_a_bad_cursor_is_a_top_level_error() {
    let emu = start_emulator(Some(seed(150, 0))).await;
    let page = graphql(&emu.url(), "{ customers(first: 500, isSystem: false) { totalCount nodes { id } edges { cursor } pageInfo { hasNextPage endCursor } } }").await;
    let conn = &page["data"]["customers"];
    assert_eq!(conn["nodes"].as_array().unwrap().len(), 100);
    assert_eq!(conn["edges"].as_array().unwrap().len(), 100);
    assert_eq!(conn["totalCount"], 151);
    assert_eq!(conn["pageInfo"]["hasNextPage"], true);
    let after = conn["pageInfo"]["endCursor"].as_str().unwrap();
    let rest = graphql(&emu.url(), &format!("{{ customers(after: \"{after}\", isSystem: false) {{ nodes {{ id }} pageInfo {{ hasNextPage }} }} }}")).await;
    assert_eq!(
        rest["data"]["customers"]["nodes"].as_array().unwrap().len(),
        51
    );
    assert_eq!(rest["data"]["customers"]["pageInfo"]["hasNextPage"], false);
    let bad = graphql(
        &emu.url(),
        "{ customers(after: \"bm9wZQ==\") { totalCount } }",
    )
    .await;
    assert!(
        bad["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("Invalid cursor"),
        "{bad}"
    );
}

#[tokio::test]
async fn requests_without_the_token_get_401() {
    let emu = start_emulator(None).await;
    let response = reqwest::Client::new()
        .post(format!("{}/api", emu.url()))
        .bearer_auth("wrong")
        .json(&serde_json::json!({"query": "{ customerRoles { id } }"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let admin = reqwest::Client::new()
        .get(format!("{}/admin/stats", emu.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(admin.status(), 401);
}

#[tokio::test]
async fn faults_can_be_set_and_stats_read_over_the_admin_endpoint() {
    let emu = start_emulator(None).await;
    let http = reqwest::Client::new();
    let put = http
        .put(format!("{}/admin/faults", emu.url()))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"throttleNext": 1, "retryAfterSecs": 7}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    let throttled = http
        .post(format!("{}/api", emu.url()))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"query": "{ customerRoles { id } }"}))
        .send()
        .await
        .unwrap();
    assert_eq!(throttled.status(), 429);
    assert_eq!(throttled.headers()["retry-after"], "7");
    let stats: serde_json::Value = http
        .get(format!("{}/admin/stats", emu.url()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["throttled"], 1);
    assert_eq!(stats["requests"], 1);
    let bad = http
        .put(format!("{}/admin/faults", emu.url()))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"errorRate": 2.0}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
}
