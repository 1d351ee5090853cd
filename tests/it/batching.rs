//! Batching (issue 13, part 2) against the emulator over HTTP: several
//! mutations or pages in one aliased document, each operation still
//! reported alone, a document over the platform's limit halved, a lost
//! batched answer recovered without duplicates.

use dirsync::apply::{Outcome, Quiet};
use dirsync::config::Config;
use dirsync::emulator::{Faults, Seed, SeedOrgUser};
use dirsync::run::{reconcile, Connection, Mode, Reconcile};

use crate::support::*;
use crate::sync::{rows, Scenario};

const APPLY: Mode = Mode::Apply {
    allow_deletes: false,
};

fn batched_config(s: &Scenario, batch: &str) -> Config {
    let text = s.config_text("  apply_concurrency: 4\n").replacen(
        "  requests_per_second: 1000\n",
        &format!("  requests_per_second: 1000\n  batch: {batch}\n"),
        1,
    );
    let path = s.dir.path().join("dirsync.yaml");
    std::fs::write(&path, text).unwrap();
    Config::load(&path).unwrap()
}

async fn run(config: &Config, mode: Mode) -> Reconcile {
    let connection = Connection::open(&config.platform).await.unwrap();
    let out = reconcile(config, &connection, mode, &Quiet).await.unwrap();
    connection.close().await.unwrap();
    out
}

fn outcomes(r: &Reconcile) -> Vec<&Outcome> {
    r.report
        .as_ref()
        .expect("applied")
        .operations
        .iter()
        .map(|o| &o.outcome)
        .collect()
}

fn managed_users(s: &Scenario) -> usize {
    s.emu
        .handle
        .state()
        .users
        .values()
        .filter(|u| u.external_id.is_some() && u.customer_id.is_some())
        .count()
}

#[tokio::test]
async fn mutations_go_twenty_to_a_request_and_each_is_reported_alone() {
    let s = Scenario::new(None).await;
    s.write_users(&rows(200, 5));
    let config = batched_config(&s, "{ mutations: 20 }");
    let r = run(&config, APPLY).await;
    let outcomes = outcomes(&r);
    assert_eq!(outcomes.len(), 205);
    assert!(
        outcomes.iter().all(|o| **o == Outcome::Applied),
        "{outcomes:?}"
    );
    let stats = s.emu.handle.stats();
    assert_eq!(stats.operation("createCustomerUser"), 200);
    assert_eq!(stats.operation("createCustomer"), 5);
    // 5 customers in one document, 200 users in about ten.
    assert!(
        stats.mutations <= 15,
        "{} mutation documents for 205 mutations",
        stats.mutations
    );
    assert_eq!(managed_users(&s), 200);
}

#[tokio::test]
async fn the_default_sends_one_mutation_per_request() {
    let s = Scenario::new(None).await;
    s.write_users(&rows(20, 2));
    let config = batched_config(&s, "{ pages: 1 }");
    run(&config, APPLY).await;
    let stats = s.emu.handle.stats();
    assert_eq!(stats.mutations, 22);
}

#[tokio::test]
async fn a_document_over_the_platforms_limit_is_halved_once_logged_and_the_run_goes_on() {
    let s = Scenario::new(None).await;
    s.write_users(&rows(60, 3));
    s.emu.handle.set_faults(Faults {
        max_root_fields: Some(6),
        ..Faults::default()
    });
    let config = batched_config(&s, "{ mutations: 20 }");
    let (logs, _guard) = capture_logs();
    let r = run(&config, APPLY).await;
    let outcomes = outcomes(&r);
    assert!(
        outcomes.iter().all(|o| **o == Outcome::Applied),
        "{outcomes:?}"
    );
    assert_eq!(managed_users(&s), 60);
    let stats = s.emu.handle.stats();
    assert!(stats.too_large >= 1, "{stats:?}");
    let text = logs.text();
    assert_eq!(
        text.matches("The platform refused a document of").count(),
        1,
        "{text}"
    );
    // After the halving (20 → 10 → 5) no document is refused any more:
    // 60 users in documents of 5 is 12, plus the refusals and the customers.
    assert!(stats.mutations <= 12 + stats.too_large + 3, "{stats:?}");
}

#[tokio::test]
async fn a_lost_batched_answer_is_recovered_by_external_id_without_duplicates() {
    let s = Scenario::new(None).await;
    s.write_users(&rows(30, 3));
    let config = batched_config(&s, "{ mutations: 10 }");
    // Customers first, unbatched-looking (3 in one document); then the
    // first users' document runs but its answer is lost.
    s.emu.handle.set_faults(Faults {
        lose_next_mutation_responses: 2,
        ..Faults::default()
    });
    let r = run(&config, APPLY).await;
    let outcomes = outcomes(&r);
    assert!(outcomes.iter().all(|o| o.succeeded()), "{outcomes:?}");
    assert!(
        outcomes
            .iter()
            .any(|o| matches!(o, Outcome::AlreadyDone { .. })),
        "the retried document's creates were found by externalId: {outcomes:?}"
    );
    assert_eq!(managed_users(&s), 30);
    let again = run(&config, APPLY).await;
    assert!(again.plan.is_empty(), "{:?}", again.plan.operations);
}

#[tokio::test]
async fn one_refused_mutation_in_a_document_fails_alone() {
    // user3's email belongs to a member of the vendor's own team: the
    // platform refuses that create, and only that one.
    let seed = Seed {
        organization_users: vec![SeedOrgUser {
            email: "user3@x.example".to_owned(),
            name: "Vendor".to_owned(),
            external_id: None,
        }],
        ..Seed::default()
    };
    let s = Scenario::new(Some(seed)).await;
    s.write_users(&rows(20, 2));
    let config = batched_config(&s, "{ mutations: 20 }");
    let r = run(&config, APPLY).await;
    let report = r.report.as_ref().unwrap();
    let failed: Vec<_> = report
        .operations
        .iter()
        .filter(|o| !o.outcome.succeeded())
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].operation.external_id(), "E3");
    match &failed[0].outcome {
        Outcome::Failed { error } => assert!(error.contains("email"), "{error}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(managed_users(&s), 19);
}

#[tokio::test]
async fn pages_read_several_to_a_request_give_the_same_snapshot() {
    let s = Scenario::new(Some(seed(20, 950))).await;
    s.write_users(&rows(0, 1));
    let plain = client_for(&s.emu).snapshot().await.unwrap();
    s.emu.handle.reset_stats();
    let mut config = config_for(&s.emu.url(), TOKEN);
    config.batch_pages = 5;
    let batched = dirsync::platform::PlatformClient::new(config).unwrap();
    let snapshot = batched.snapshot().await.unwrap();
    assert_eq!(snapshot, plain);
    let stats = s.emu.handle.stats();
    // users: the first page, then 9 more in documents of 5 (2); customers
    // 1; roles 1. Pages counted one by one all the same.
    assert_eq!(stats.operation("users"), 10);
    assert!(stats.requests <= 6, "{stats:?}");
}

/// Measured: with 50 ms answers behind a 20/s ceiling, batches of 20 came
/// out 1.4 mutations a document on average (1,480 documents for 2,050
/// mutations): the batcher took whatever had trickled in. It now waits
/// until a document's worth is queued, or the queue stops growing. (Several
/// worker threads, as the binary runs: on one, the batcher only ran once
/// the apply had queued everything.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_stay_full_when_answers_take_time_behind_a_ceiling() {
    let s = Scenario::new(None).await;
    s.write_users(&rows(400, 5));
    s.emu.handle.set_faults(Faults {
        latency_ms: 50,
        rate_limit_per_sec: Some(20),
        ..Faults::default()
    });
    let config = batched_config(&s, "{ mutations: 20 }");
    let r = run(&config, APPLY).await;
    assert!(outcomes(&r).iter().all(|o| o.succeeded()));
    let stats = s.emu.handle.stats();
    assert_eq!(stats.operation("createCustomerUser"), 400);
    // 5 customers in one document, 400 users in 20; a few partial ones.
    // With the linger taken out (what broke: the batcher took what had
    // trickled in) it makes 208. With a linger of 2 ms alone, an apply
    // descheduled that long on a loaded machine made 22 to 26 (a CI run,
    // its tests in parallel on 2 cores); waiting for the pacer's slot, 21.
    assert!(
        stats.mutations <= 25,
        "{} mutation documents for 405 mutations",
        stats.mutations
    );
}

/// Measured: on a loaded CI machine, 400 creates in batches of 20 went in 26
/// documents, not 21: the apply was descheduled for more than the 2 ms
/// linger, and a part-filled document left though it could not be sent
/// before the pacer's next slot. What is queued by that slot now rides in it.
#[tokio::test]
async fn operations_queued_before_the_pacers_next_slot_ride_in_one_document() {
    let emu = start_emulator(None).await;
    let mut config = config_for(&emu.url(), TOKEN);
    // A slot about every half second.
    config.requests_per_second = std::num::NonZeroU32::new(2).unwrap();
    config.batch_mutations = 20;
    let client = dirsync::platform::PlatformClient::new(config).unwrap();
    let customer = |i: usize| dirsync::model::NewCustomer {
        name: format!("Customer {i}"),
        description: None,
        external_id: Some(format!("c-{i}")),
        labels: None,
    };
    client.create_customer(&customer(0)).await.unwrap();
    // Two waves, 20 ms apart (ten lingers), both well before the next slot.
    let wave = |from: usize| {
        (from..from + 5)
            .map(|i| {
                let client = client.clone();
                let new = customer(i);
                tokio::spawn(async move { client.create_customer(&new).await })
            })
            .collect::<Vec<_>>()
    };
    let first = wave(1);
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let second = wave(6);
    for task in first.into_iter().chain(second) {
        task.await.unwrap().unwrap();
    }
    let stats = emu.handle.stats();
    assert_eq!(stats.operation("createCustomer"), 11);
    assert_eq!(stats.mutations, 2, "{stats:?}");
}
