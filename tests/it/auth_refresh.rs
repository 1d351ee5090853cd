//! The refresh-token flow: `/auth/meta` on the platform (the emulator), then
//! `POST https://{domain}/oauth/token` on a local HTTPS token endpoint whose
//! certificate comes from a CA made at test time.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Form, Json, Router};
use dirsync::emulator::{self, AuthMeta, EmulatorHandle, EmulatorOptions, RunningEmulator};
use dirsync::platform::{AuthMethod, PlatformClient, PlatformConfig, SecretSource};
use secrecy::SecretString;

use crate::support::*;

const REFRESH_TOKEN: &str = "refresh-canary-91c2";
const CLIENT_ID: &str = "cli-client-id";

#[derive(Clone)]
struct TokenEndpoint {
    /// Set once the emulator is up: each issued access token is made valid there.
    emulator: Arc<OnceLock<EmulatorHandle>>,
    issued: Arc<AtomicU32>,
    expires_in: u64,
    refuse: bool,
}

#[derive(serde::Deserialize)]
struct TokenForm {
    grant_type: String,
    client_id: String,
    refresh_token: String,
}

async fn token(State(ep): State<TokenEndpoint>, Form(form): Form<TokenForm>) -> Response {
    if ep.refuse
        || form.grant_type != "refresh_token"
        || form.client_id != CLIENT_ID
        || form.refresh_token != REFRESH_TOKEN
    {
        return (
            axum::http::StatusCode::FORBIDDEN,
            Json(serde_json::json!({"error": "invalid_grant", "error_description": "Unknown or invalid refresh token."})),
        )
            .into_response();
    }
    // A slow endpoint widens the window in which concurrent requests could
    // start refreshes of their own.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let n = ep.issued.fetch_add(1, Ordering::SeqCst) + 1;
    let access = format!("access-{n}");
    ep.emulator
        .get()
        .expect("emulator started")
        .accept_token(&access);
    Json(serde_json::json!({"access_token": access, "expires_in": ep.expires_in, "token_type": "Bearer", "scope": "openid"})).into_response()
}

struct Setup {
    emu: RunningEmulator,
    issued: Arc<AtomicU32>,
    ca_file: tempfile::NamedTempFile,
}

impl Setup {
    async fn new(expires_in: u64, refuse: bool) -> Setup {
        let pki = test_pki();
        let handle = Arc::new(OnceLock::new());
        let issued = Arc::new(AtomicU32::new(0));
        let endpoint = TokenEndpoint {
            emulator: handle.clone(),
            issued: issued.clone(),
            expires_in,
            refuse,
        };
        let addr = serve_tls(
            Router::new()
                .route("/oauth/token", post(token))
                .with_state(endpoint),
            &pki,
        );
        // The emulator accepts no token until the endpoint issues one.
        let mut options = EmulatorOptions::local("");
        options.tokens.clear();
        options.auth_meta = Some(AuthMeta {
            domain: format!("localhost:{}", addr.port()),
            client_id: CLIENT_ID.to_owned(),
            audience: "https://prismatic.io/api".to_owned(),
        });
        let emu = emulator::start(options).await.unwrap();
        assert!(handle.set(emu.handle.clone()).is_ok());
        let mut ca_file = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut ca_file, pki.ca_pem.as_bytes()).unwrap();
        Setup {
            emu,
            issued,
            ca_file,
        }
    }

    fn client(&self, with_ca: bool) -> PlatformClient {
        let mut config: PlatformConfig = config_for(&self.emu.url(), "unused");
        config.auth = AuthMethod::RefreshToken {
            refresh_token: SecretSource::Value(SecretString::from(REFRESH_TOKEN.to_owned())),
            tenant_id: None,
            refresh_margin: Duration::from_secs(300),
        };
        config.max_concurrency = 16;
        if with_ca {
            config.ca_file = Some(self.ca_file.path().to_path_buf());
        }
        PlatformClient::new(config).unwrap()
    }

    fn refreshes(&self) -> u32 {
        self.issued.load(Ordering::SeqCst)
    }
}

#[tokio::test]
async fn one_refresh_serves_twenty_concurrent_requests() {
    let setup = Setup::new(3600, false).await;
    let client = setup.client(true);
    let calls: Vec<_> = (0..20).map(|_| client.customer_roles()).collect();
    for r in futures::future::join_all(calls).await {
        r.unwrap();
    }
    assert_eq!(setup.refreshes(), 1);
    assert_eq!(setup.emu.handle.stats().requests, 20);
    assert_eq!(setup.emu.handle.stats().unauthorized, 0);
}

#[tokio::test]
async fn a_token_inside_the_refresh_margin_is_refreshed_before_use() {
    // 200 s of life is inside the 5-minute margin: every request refreshes first.
    let setup = Setup::new(200, false).await;
    let client = setup.client(true);
    for _ in 0..3 {
        client.customer_roles().await.unwrap();
    }
    assert_eq!(setup.refreshes(), 3);

    // An hour of life: one refresh for many requests.
    let setup = Setup::new(3600, false).await;
    let client = setup.client(true);
    for _ in 0..3 {
        client.customer_roles().await.unwrap();
    }
    assert_eq!(setup.refreshes(), 1);
}

#[tokio::test]
async fn a_refused_refresh_is_a_final_authentication_error_that_keeps_the_token_secret() {
    let setup = Setup::new(3600, true).await;
    let client = setup.client(true);
    let err = client.customer_roles().await.unwrap_err();
    assert!(err.is_auth(), "{err:?}");
    let text = format!("{err} {err:?}");
    assert!(text.contains("invalid_grant"), "{text}");
    assert!(!text.contains(REFRESH_TOKEN), "{text}");
    // Nothing reached the platform's API.
    assert_eq!(setup.emu.handle.stats().requests, 0);
}

#[tokio::test]
async fn the_token_endpoint_certificate_is_verified() {
    let setup = Setup::new(3600, false).await;
    // Without the test CA the endpoint's certificate is unknown: refused.
    let client = setup.client(false);
    let err = client.customer_roles().await.unwrap_err();
    assert!(err.is_auth(), "{err:?}");
    assert_eq!(setup.refreshes(), 0);
    assert_eq!(setup.emu.handle.stats().requests, 0);
}
