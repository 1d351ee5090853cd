//! The platform client against the emulator over real HTTP on 127.0.0.1:
//! paging, every mutation, payload errors, throttling, 5xx, bounded
//! attempts, authentication failures and secrets kept out of logs. (The
//! rate found under the cap, and pages read at once: `rate.rs`.)

use std::time::{Duration, Instant};

use dirsync::emulator::Faults;
use dirsync::model::{CustomerChanges, NewCustomer, NewCustomerUser, PlatformId, UserChanges};
use dirsync::platform::{PlatformClient, PlatformError};

use crate::support::*;

#[tokio::test]
async fn reads_every_page_of_260_customers_and_260_users_and_nothing_unmanaged_by_kind() {
    let emu = start_emulator(Some(seed(260, 260))).await;
    let client = client_for(&emu);
    let snapshot = client.snapshot().await.unwrap();

    // 260 seeded + "Unmanaged Co" (no externalId, still listed); the system customer is not.
    assert_eq!(snapshot.customers.len(), 261);
    assert!(snapshot.customers.iter().all(|c| c.name != "System"));
    // 260 customer users; the organization users and the marketplace user are not listed.
    assert_eq!(snapshot.users.len(), 260);
    assert!(snapshot.users.iter().all(|u| u.email.contains('@')));
    let mut ids: Vec<_> = snapshot
        .users
        .iter()
        .map(|u| u.external_id.clone().unwrap())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 260);
    let names: Vec<_> = snapshot.roles.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        ["Admin", "Member", "Marketplace Admin", "Marketplace User"]
    );

    // Three pages each (100 + 100 + 61/60), one roles query: nothing more.
    // The first page of each and the roles share one request.
    let stats = emu.handle.stats();
    assert_eq!(stats.operation("customers"), 3);
    assert_eq!(stats.operation("users"), 3);
    assert_eq!(stats.operation("customerRoles"), 1);
    assert_eq!(stats.requests, 5);
    assert_eq!(stats.mutations, 0);
}

#[tokio::test]
async fn a_small_page_size_reads_every_offset() {
    let emu = start_emulator(Some(seed(30, 45))).await;
    let mut config = config_for(&emu.url(), TOKEN);
    config.page_size = 7;
    let client = PlatformClient::new(config).unwrap();
    assert_eq!(client.list_customers().await.unwrap().len(), 31);
    assert_eq!(client.list_customer_users().await.unwrap().len(), 45);
    let stats = emu.handle.stats();
    assert_eq!(stats.operation("customers"), 5); // ceil(31 / 7)
    assert_eq!(stats.operation("users"), 7); // ceil(45 / 7)
}

#[tokio::test]
async fn every_mutation_succeeds_and_is_read_back() {
    let emu = start_emulator(None).await;
    let client = client_for(&emu);
    let roles = client.customer_roles().await.unwrap();
    let role = |name: &str| roles.iter().find(|r| r.name == name).unwrap().id.clone();

    let acme = client
        .create_customer(&NewCustomer {
            name: "Acme".to_owned(),
            description: None,
            external_id: Some("acme".to_owned()),
            labels: Some(vec!["Gold".to_owned(), "EU".to_owned()]),
        })
        .await
        .unwrap();
    // The platform lowercases labels and never returns a null description.
    assert_eq!(acme.labels, ["gold", "eu"]);
    assert_eq!(acme.description, "");

    let acme = client
        .update_customer(
            &acme.id,
            &CustomerChanges {
                name: Some("Acme Corp".to_owned()),
                description: Some("Rockets".to_owned()),
                ..CustomerChanges::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (acme.name.as_str(), acme.description.as_str()),
        ("Acme Corp", "Rockets")
    );
    assert_eq!(
        acme.labels,
        ["gold", "eu"],
        "fields not sent are not changed"
    );

    let ada = client
        .create_customer_user(&NewCustomerUser {
            customer_id: acme.id.clone(),
            email: "ada@acme.example".to_owned(),
            role_id: role("Member"),
            name: Some("Ada".to_owned()),
            phone: None,
            external_id: Some("u-ada".to_owned()),
        })
        .await
        .unwrap();
    assert_eq!(ada.customer_external_id.as_deref(), Some("acme"));
    assert_eq!(ada.phone, "");

    let ada = client
        .update_user(
            &ada.id,
            &UserChanges {
                phone: Some("+1 555 0100".to_owned()),
                role_id: Some(role("Admin")),
                ..UserChanges::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (
            ada.phone.as_str(),
            ada.role.name.as_str(),
            ada.name.as_str()
        ),
        ("+1 555 0100", "Admin", "Ada")
    );

    assert_eq!(
        client.find_customer("acme").await.unwrap().unwrap().id,
        acme.id
    );
    assert_eq!(
        client
            .find_customer_user("u-ada")
            .await
            .unwrap()
            .unwrap()
            .id,
        ada.id
    );
    assert_eq!(client.find_customer("nope").await.unwrap(), None);

    client.delete_user(&ada.id).await.unwrap();
    assert!(client.list_customer_users().await.unwrap().is_empty());
    client.delete_customer(&acme.id).await.unwrap();
    assert!(client.list_customers().await.unwrap().is_empty());

    let stats = emu.handle.stats();
    for op in [
        "createCustomer",
        "updateCustomer",
        "deleteCustomer",
        "createCustomerUser",
        "updateUser",
        "deleteUser",
    ] {
        assert_eq!(stats.operation(op), 1, "{op}");
    }
}

#[tokio::test]
async fn deleting_a_customer_takes_its_users_with_it() {
    let emu = start_emulator(Some(seed(2, 6))).await;
    let client = client_for(&emu);
    let c0 = client.find_customer("c-0").await.unwrap().unwrap();
    client.delete_customer(&c0.id).await.unwrap();
    let users = client.list_customer_users().await.unwrap();
    assert_eq!(users.len(), 3);
    assert!(users
        .iter()
        .all(|u| u.customer_external_id.as_deref() == Some("c-1")));
}

fn field_of(err: PlatformError) -> String {
    let errors = err
        .field_errors()
        .unwrap_or_else(|| panic!("expected payload errors, got {err:?}"));
    errors[0].field.clone()
}

#[tokio::test]
async fn payload_errors_reach_the_caller_with_their_field_and_are_not_retried() {
    let emu = start_emulator(Some(seed(2, 2))).await;
    let client = client_for(&emu);
    let c0 = client.find_customer("c-0").await.unwrap().unwrap();
    let member = client
        .customer_roles()
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.name == "Member")
        .unwrap()
        .id;
    emu.handle.reset_stats();

    let dup_name = NewCustomer {
        name: "Customer 1".to_owned(),
        external_id: Some("other".to_owned()),
        ..NewCustomer::default()
    };
    let err = client.create_customer(&dup_name).await.unwrap_err();
    assert!(
        err.to_string().contains("createCustomer") && err.to_string().contains("name"),
        "{err}"
    );
    assert_eq!(field_of(err), "name");

    let dup_external = NewCustomer {
        name: "New".to_owned(),
        external_id: Some("c-1".to_owned()),
        ..NewCustomer::default()
    };
    assert_eq!(
        field_of(client.create_customer(&dup_external).await.unwrap_err()),
        "externalId"
    );

    let user = |email: &str, role: &PlatformId| NewCustomerUser {
        customer_id: c0.id.clone(),
        email: email.to_owned(),
        role_id: role.clone(),
        name: None,
        phone: None,
        external_id: None,
    };
    assert_eq!(
        field_of(
            client
                .create_customer_user(&user("not-an-email", &member))
                .await
                .unwrap_err()
        ),
        "email"
    );
    assert_eq!(
        field_of(
            client
                .create_customer_user(&user("USER0@example.com", &member))
                .await
                .unwrap_err()
        ),
        "email"
    );
    assert_eq!(
        field_of(
            client
                .create_customer_user(&user(
                    "new@example.com",
                    &PlatformId::from("Um9sZTpub3BlCg==")
                ))
                .await
                .unwrap_err()
        ),
        "role"
    );
    // An unknown id is a top-level error, as the platform answers it
    // (`... matching query does not exist.`), not a payload error.
    let unknown = PlatformId::from("Q3VzdG9tZXI6bm9uZQ==");
    let not_found = |err: PlatformError| {
        assert!(err.field_errors().is_none(), "{err:?}");
        assert!(
            err.to_string().contains("matching query does not exist"),
            "{err}"
        );
    };
    not_found(
        client
            .update_customer(&unknown, &CustomerChanges::default())
            .await
            .unwrap_err(),
    );
    not_found(client.delete_customer(&unknown).await.unwrap_err());
    not_found(
        client
            .update_user(&unknown, &UserChanges::default())
            .await
            .unwrap_err(),
    );
    not_found(client.delete_user(&unknown).await.unwrap_err());

    // Nine refusals, nine requests: validation and not-found errors are final.
    assert_eq!(emu.handle.stats().requests, 9);
}

#[tokio::test]
async fn a_429_waits_for_retry_after_in_seconds_then_succeeds() {
    let emu = start_emulator(None).await;
    let client = client_for(&emu);
    emu.handle.set_faults(Faults {
        throttle_next: 1,
        retry_after_secs: Some(1),
        ..Faults::default()
    });
    let started = Instant::now();
    client.customer_roles().await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "waited only {:?}",
        started.elapsed()
    );
    let stats = emu.handle.stats();
    assert_eq!((stats.requests, stats.throttled), (2, 1));
    assert_eq!(client.stats().throttled, 1);
    assert_eq!(client.stats().requests, 2);
}

#[tokio::test]
async fn a_429_with_an_http_date_retry_after_is_honoured() {
    let emu = start_emulator(None).await;
    let client = client_for(&emu);
    emu.handle.set_faults(Faults {
        throttle_next: 1,
        retry_after_secs: Some(2),
        retry_after_as_date: true,
        ..Faults::default()
    });
    let started = Instant::now();
    client.customer_roles().await.unwrap();
    // An HTTP-date has whole seconds: "now + 2 s" is at least 1 s away.
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "waited only {:?}",
        started.elapsed()
    );
    assert_eq!(emu.handle.stats().throttled, 1);
}

#[tokio::test]
async fn server_errors_are_retried_then_succeed() {
    let emu = start_emulator(None).await;
    let client = client_for(&emu);
    emu.handle.set_faults(Faults {
        fail_next: 2,
        retry_after_secs: Some(0),
        error_status: Some(500),
        ..Faults::default()
    });
    assert_eq!(client.customer_roles().await.unwrap().len(), 4);
    let stats = emu.handle.stats();
    assert_eq!((stats.requests, stats.server_errors), (3, 2));
}

#[tokio::test]
async fn attempts_are_bounded() {
    let emu = start_emulator(None).await;
    let mut config = config_for(&emu.url(), TOKEN);
    config.retry = quick_retries(3);
    let client = PlatformClient::new(config).unwrap();
    emu.handle.set_faults(Faults {
        error_rate: 1.0,
        retry_after_secs: Some(0),
        ..Faults::default()
    });
    let err = client.customer_roles().await.unwrap_err();
    assert!(
        matches!(err, PlatformError::RetriesExhausted { attempts: 3, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("503"), "{err}");
    assert_eq!(emu.handle.stats().requests, 3);
}

#[tokio::test]
async fn a_401_fails_at_once_without_retrying() {
    let emu = start_emulator(None).await;
    let client = PlatformClient::new(config_for(&emu.url(), "wrong-token")).unwrap();
    let err = client.snapshot().await.unwrap_err();
    assert!(err.is_auth(), "{err:?}");
    assert!(
        err.to_string().contains("authentication failed (HTTP 401)"),
        "{err}"
    );
    // try_join! stops at the first failure; none of the three was retried.
    let stats = emu.handle.stats();
    assert!(
        stats.requests <= 3 && stats.requests == stats.unauthorized,
        "{stats:?}"
    );
}

#[tokio::test]
async fn the_request_timeout_ends_a_slow_request() {
    let emu = start_emulator(None).await;
    emu.handle.set_faults(Faults {
        latency_ms: 3_000,
        ..Faults::default()
    });
    let mut config = config_for(&emu.url(), TOKEN);
    config.request_timeout = Duration::from_millis(200);
    config.retry = quick_retries(1);
    let client = PlatformClient::new(config).unwrap();
    let err = client.customer_roles().await.unwrap_err();
    assert!(
        matches!(err, PlatformError::RetriesExhausted { ref last, .. } if matches!(**last, PlatformError::Timeout { .. })),
        "{err:?}"
    );
}

#[tokio::test]
async fn the_concurrency_cap_holds_across_a_whole_run() {
    let emu = start_emulator(Some(seed(5, 5))).await;
    // Each answer takes longer than the pacer's spacing (20 ms at the
    // starting 50 req/s): without the cap all eight would be in flight, so
    // the cap, not the timing, is what holds it at 2.
    emu.handle.set_faults(Faults {
        latency_ms: 250,
        ..Faults::default()
    });
    let mut config = config_for(&emu.url(), TOKEN);
    config.max_concurrency = 2;
    let client = PlatformClient::new(config).unwrap();
    let calls: Vec<_> = (0..8).map(|_| client.customer_roles()).collect();
    for r in futures::future::join_all(calls).await {
        r.unwrap();
    }
    assert_eq!(emu.handle.stats().max_in_flight, 2);
}

#[tokio::test]
async fn the_request_rate_cap_spaces_requests() {
    let emu = start_emulator(None).await;
    let mut config = config_for(&emu.url(), TOKEN);
    config.requests_per_second = std::num::NonZeroU32::new(20).unwrap();
    let client = PlatformClient::new(config).unwrap();
    let started = Instant::now();
    for _ in 0..30 {
        client.customer_roles().await.unwrap();
    }
    // No burst: never closer than 1/20 s, whatever the rate found.
    assert!(
        started.elapsed() >= Duration::from_millis(29 * 50),
        "took only {:?}",
        started.elapsed()
    );
    assert!(
        (client.current_rate() - 19.4).abs() < 1e-9,
        "the rate is just under the cap (97%): {}",
        client.current_rate()
    );
}

#[tokio::test]
async fn a_top_level_graphql_error_keeps_its_message_and_is_not_retried() {
    use axum::routing::post;
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counter = hits.clone();
    let app = axum::Router::new().route(
        "/api",
        post(move || {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async { axum::Json(serde_json::json!({"data": null, "errors": [{"message": "You do not have permission", "path": ["customerRoles"]}]})) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let client = PlatformClient::new(config_for(&url, TOKEN)).unwrap();
    let err = client.customer_roles().await.unwrap_err();
    assert!(matches!(err, PlatformError::GraphQl { .. }), "{err:?}");
    assert!(
        err.to_string().contains("You do not have permission"),
        "{err}"
    );
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn plain_http_is_refused_except_on_loopback() {
    let config = config_for("http://platform.example.com", TOKEN);
    let err = PlatformClient::new(config).unwrap_err();
    assert!(err.to_string().contains("must use https"), "{err}");
    assert!(PlatformClient::new(config_for("http://localhost:1", TOKEN)).is_ok());
    assert!(PlatformClient::new(config_for("https://app.prismatic.io", TOKEN)).is_ok());
}

#[tokio::test]
async fn a_canary_token_never_appears_in_logs_errors_or_debug_output() {
    const CANARY: &str = "canary-4b9e1d7c-token";
    let (logs, _guard) = capture_logs();
    let emu = start_emulator(Some(seed(3, 3))).await;
    emu.handle.accept_token(CANARY);
    let mut texts = Vec::new();

    let client = PlatformClient::new(config_for(&emu.url(), CANARY)).unwrap();
    texts.push(format!("{client:?}"));
    client.snapshot().await.unwrap();
    // A retried failure (logged as a warning) and a refused mutation.
    emu.handle.set_faults(Faults {
        fail_next: 1,
        retry_after_secs: Some(0),
        ..Faults::default()
    });
    client.customer_roles().await.unwrap();
    let err = client
        .create_customer(&NewCustomer {
            name: "Customer 0".to_owned(),
            ..NewCustomer::default()
        })
        .await
        .unwrap_err();
    texts.push(format!("{err} {err:?}"));

    // The same canary as a wrong token: the 401 error must not carry it either.
    let other = start_emulator(None).await;
    let rejected = PlatformClient::new(config_for(&other.url(), CANARY)).unwrap();
    let err = rejected.customer_roles().await.unwrap_err();
    texts.push(format!("{err} {err:?}"));
    tracing::warn!(error = %err, "Captured for the canary check.");

    let logs = logs.text();
    assert!(
        logs.contains("Request failed; retrying."),
        "the log capture works: {logs}"
    );
    assert!(!logs.contains(CANARY), "token in logs:\n{logs}");
    for t in texts {
        assert!(!t.contains(CANARY), "token in {t}");
    }
}

#[tokio::test]
async fn no_request_waiting_on_the_rate_limiter_leaves_after_a_401() {
    let emu = start_emulator(None).await;
    let mut config = config_for(&emu.url(), "wrong-token");
    // One request a second: nine of the ten wait on the limiter.
    config.requests_per_second = std::num::NonZeroU32::new(1).unwrap();
    let client = PlatformClient::new(config).unwrap();
    let started = Instant::now();
    let calls: Vec<_> = (0..10).map(|_| client.customer_roles()).collect();
    let results = futures::future::join_all(calls).await;
    for r in &results {
        let err = r.as_ref().unwrap_err();
        assert!(err.is_auth(), "{err:?}");
    }
    let stopped = results
        .iter()
        .filter(|r| matches!(r, Err(PlatformError::Stopped { .. })))
        .count();
    assert_eq!(stopped, 9, "{results:?}");
    let stats = emu.handle.stats();
    assert_eq!(
        (stats.requests, stats.unauthorized),
        (1, 1),
        "one 401, then nothing"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "the waiters did not wait: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn no_request_waiting_on_the_concurrency_cap_leaves_after_a_403() {
    use axum::routing::post;
    // A platform that answers 403 slowly: the others queue at the cap meanwhile.
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counter = hits.clone();
    let app = axum::Router::new().route(
        "/api",
        post(move || {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async {
                tokio::time::sleep(Duration::from_millis(100)).await;
                axum::http::StatusCode::FORBIDDEN
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let mut config = config_for(&url, TOKEN);
    config.max_concurrency = 1;
    let client = PlatformClient::new(config).unwrap();
    let calls: Vec<_> = (0..6).map(|_| client.customer_roles()).collect();
    for r in futures::future::join_all(calls).await {
        assert!(r.unwrap_err().is_auth());
    }
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
    // The client stays stopped: nothing more leaves it.
    assert!(matches!(
        client.customer_roles().await,
        Err(PlatformError::Stopped { .. })
    ));
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_429_pauses_every_request_for_its_retry_after() {
    let emu = start_emulator(None).await;
    // One at a time, so that no request is on its way while the 429 comes
    // back: the other 29 wait at the cap, not in the network.
    let mut config = config_for(&emu.url(), TOKEN);
    config.max_concurrency = 1;
    let client = PlatformClient::new(config).unwrap();
    emu.handle.set_faults(Faults {
        throttle_next: 1,
        retry_after_secs: Some(2),
        ..Faults::default()
    });
    let calls = {
        let client = client.clone();
        tokio::spawn(async move {
            let calls: Vec<_> = (0..30).map(|_| client.customer_roles()).collect();
            futures::future::join_all(calls).await
        })
    };
    // The moment the client has seen the 429 (it pauses before counting it).
    let start = Instant::now();
    while client.stats().throttled == 0 {
        assert!(start.elapsed() < Duration::from_secs(20), "no 429 seen");
        tokio::task::yield_now().await;
    }
    let seen = Instant::now();
    let arrived = emu.handle.stats().requests;
    // The next request to reach the emulator comes only after the Retry-After.
    while emu.handle.stats().requests == arrived {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "nothing came after the pause"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let quiet = seen.elapsed();
    for r in calls.await.unwrap() {
        r.unwrap();
    }
    assert!(
        quiet >= Duration::from_millis(1800),
        "a request reached the platform {quiet:?} into a 2 s Retry-After ({arrived} had arrived)"
    );
    let stats = emu.handle.stats();
    assert_eq!(stats.throttled, 1);
    assert_eq!(stats.requests, 31, "30 calls and one retry");
}

#[tokio::test]
async fn a_429_is_not_a_failed_attempt() {
    let emu = start_emulator(None).await;
    let mut config = config_for(&emu.url(), TOKEN);
    config.retry = quick_retries(2);
    let client = PlatformClient::new(config).unwrap();
    // More 429s in a row than the request has attempts: it still succeeds.
    emu.handle.set_faults(Faults {
        throttle_next: 4,
        retry_after_secs: Some(0),
        ..Faults::default()
    });
    client.customer_roles().await.unwrap();
    let stats = emu.handle.stats();
    assert_eq!((stats.requests, stats.throttled), (5, 4));
}
