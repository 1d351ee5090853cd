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

/// An unsigned JWT whose `exp` is `secs` from now (the client reads `exp`
/// only to know when to refresh; the platform verifies the signature).
fn jwt(secs: u64) -> String {
    use base64::Engine;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    format!(
        "{}.{}.c2ln",
        b64(r#"{"alg":"RS256","typ":"JWT"}"#),
        b64(&format!(r#"{{"sub":"cli-user","exp":{}}}"#, now + secs))
    )
}

impl Setup {
    /// A client holding both CLI tokens, as `PRISM_ACCESS_TOKEN` and
    /// `PRISM_REFRESH_TOKEN` give them.
    fn client_with_access(&self, access: &str) -> PlatformClient {
        let mut config: PlatformConfig = config_for(&self.emu.url(), "unused");
        config.auth = AuthMethod::AccessAndRefresh {
            access_token: SecretSource::Value(SecretString::from(access.to_owned())),
            refresh_token: SecretSource::Value(SecretString::from(REFRESH_TOKEN.to_owned())),
            tenant_id: None,
            refresh_margin: Duration::from_secs(300),
        };
        config.ca_file = Some(self.ca_file.path().to_path_buf());
        PlatformClient::new(config).unwrap()
    }
}

#[tokio::test]
async fn both_cli_tokens_use_the_access_token_and_refresh_it() {
    // An hour of life: the access token serves every request, no refresh.
    let setup = Setup::new(3600, false).await;
    let access = jwt(3600);
    setup.emu.handle.accept_token(&access);
    let client = setup.client_with_access(&access);
    for _ in 0..3 {
        client.customer_roles().await.unwrap();
    }
    assert_eq!(setup.refreshes(), 0, "the access token was used as it is");
    let stats = setup.emu.handle.stats();
    assert_eq!((stats.requests, stats.unauthorized), (3, 0));

    // Inside the 5-minute margin: refreshed before first use (the platform
    // would refuse it soon; here it is not even accepted).
    let setup = Setup::new(3600, false).await;
    let client = setup.client_with_access(&jwt(200));
    client.customer_roles().await.unwrap();
    assert_eq!(setup.refreshes(), 1);
    assert_eq!(setup.emu.handle.stats().unauthorized, 0);

    // 302 s of life: used now, refreshed once fewer than 300 s remain
    // (within 2 s), then the refreshed token is used.
    let setup = Setup::new(3600, false).await;
    let access = jwt(302);
    setup.emu.handle.accept_token(&access);
    let client = setup.client_with_access(&access);
    client.customer_roles().await.unwrap();
    assert_eq!(setup.refreshes(), 0, "the access token is used first");
    let start = std::time::Instant::now();
    while setup.refreshes() == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "never refreshed ahead of expiry"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        client.customer_roles().await.unwrap();
    }
    setup.emu.handle.revoke_all_tokens();
    setup.emu.handle.accept_token("access-1");
    client.customer_roles().await.unwrap();
    assert_eq!(setup.refreshes(), 1, "one refresh, then its token is kept");
    assert_eq!(setup.emu.handle.stats().unauthorized, 0);
}

#[tokio::test]
async fn the_binary_reads_both_cli_variables_like_the_official_cli() {
    let setup = Setup::new(3600, false).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("users.csv"),
        "id,email,name,customer\nu1,a@x.example,A,c1\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("dirsync.yaml"),
        format!(
            "platform:\n  url: {}\n  ca_file: {}\n\
             source:\n  csv:\n    users_file: users.csv\n\
             mapping:\n  customer: {{ external_id: customer, name: customer }}\n  user: {{ external_id: id, customer: customer, email: email, name: name }}\n",
            setup.emu.url(),
            setup.ca_file.path().display()
        ),
    )
    .unwrap();
    // The emulator and the token endpoint run on this test's runtime: the
    // binary is waited for on a blocking thread.
    let workdir = dir.path().to_path_buf();
    let plan = |access: String| {
        let workdir = workdir.clone();
        async move {
            let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_dirsync"));
            cmd.args(["plan", "-c", "dirsync.yaml"])
                .current_dir(&workdir)
                .env("DIRSYNC_LOG", "info")
                .env_remove("PRISMATIC_API_KEY")
                .env("PRISM_ACCESS_TOKEN", &access)
                .env("PRISM_REFRESH_TOKEN", REFRESH_TOKEN);
            let out = tokio::task::spawn_blocking(move || cmd.output())
                .await
                .unwrap()
                .unwrap();
            let shown = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                !shown.contains(&access) && !shown.contains(REFRESH_TOKEN),
                "a token was shown: {shown}"
            );
            (out.status.code(), shown)
        }
    };
    let long_lived = jwt(3600);
    setup.emu.handle.accept_token(&long_lived);
    let (code, shown) = plan(long_lived).await;
    assert_eq!(code, Some(2), "the plan ran: {shown}");
    assert_eq!(setup.refreshes(), 0, "the access token was used: {shown}");

    let (code, shown) = plan(jwt(60)).await;
    assert_eq!(code, Some(2), "the plan ran: {shown}");
    assert_eq!(setup.refreshes(), 1, "refreshed before use: {shown}");
    assert_eq!(setup.emu.handle.stats().unauthorized, 0);
}
