//! Shared test helpers: an emulator on 127.0.0.1, clients pointed at it,
//! seeds of any size, log capture, and a CA for TLS endpoints.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dirsync::emulator::{
    self, EmulatorOptions, RunningEmulator, Seed, SeedCustomer, SeedOrgUser, SeedUser,
};
use dirsync::platform::{AuthMethod, PlatformClient, PlatformConfig, RetryPolicy, SecretSource};
use secrecy::SecretString;

pub const TOKEN: &str = "test-token-5f0c";

pub async fn start_emulator(seed: Option<Seed>) -> RunningEmulator {
    let mut options = EmulatorOptions::local(TOKEN);
    options.seed = seed;
    emulator::start(options).await.expect("emulator starts")
}

/// Retries that do not slow tests down.
pub fn quick_retries(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        initial_interval: Duration::from_millis(5),
        max_interval: Duration::from_millis(20),
        ..RetryPolicy::default()
    }
}

pub fn config_for(url: &str, token: &str) -> PlatformConfig {
    let mut config = PlatformConfig::new(
        url.parse().unwrap(),
        AuthMethod::StaticToken(SecretSource::Value(SecretString::from(token.to_owned()))),
    );
    config.retry = quick_retries(4);
    config.requests_per_second = std::num::NonZeroU32::new(1000).unwrap();
    config
}

pub fn client_for(emu: &RunningEmulator) -> PlatformClient {
    PlatformClient::new(config_for(&emu.url(), TOKEN)).unwrap()
}

/// `customers` customers `c-0..`, `users` users `u-0..` spread over them
/// round-robin, plus what dirsync must never touch: a customer without an
/// externalId, an embedded marketplace user and an organization user.
pub fn seed(customers: usize, users: usize) -> Seed {
    let mut seed = Seed {
        customers: (0..customers)
            .map(|i| SeedCustomer {
                name: format!("Customer {i}"),
                external_id: Some(format!("c-{i}")),
                description: String::new(),
                labels: vec!["seeded".to_owned()],
                system: false,
                instances: Vec::new(),
            })
            .collect(),
        users: (0..users)
            .map(|i| SeedUser {
                email: format!("user{i}@example.com"),
                name: format!("User {i}"),
                phone: String::new(),
                external_id: Some(format!("u-{i}")),
                customer: format!("c-{}", i % customers.max(1)),
                role: "Member".to_owned(),
                marketplace: false,
            })
            .collect(),
        organization_users: vec![SeedOrgUser {
            email: "dev@vendor.example".to_owned(),
            name: "Vendor Dev".to_owned(),
            external_id: Some("org-dev".to_owned()),
        }],
        seeded_at: None,
    };
    seed.customers.push(SeedCustomer {
        name: "Unmanaged Co".to_owned(),
        external_id: None,
        description: "created by hand".to_owned(),
        labels: vec![],
        system: false,
        instances: Vec::new(),
    });
    seed.users.push(SeedUser {
        email: "embedded-7f3a".to_owned(),
        name: "Embedded".to_owned(),
        phone: String::new(),
        external_id: Some("mkt-1".to_owned()),
        customer: "Unmanaged Co".to_owned(),
        role: "Marketplace User".to_owned(),
        marketplace: true,
    });
    seed
}

/// Log lines written while `f` runs on this thread (every level).
#[derive(Clone, Default)]
pub struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl CapturedLogs {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for CapturedLogs {
    type Writer = CapturedLogs;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Installs a TRACE-level subscriber for this thread; keep the guard alive.
pub fn capture_logs() -> (CapturedLogs, tracing::subscriber::DefaultGuard) {
    let logs = CapturedLogs::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(logs.clone())
        .with_ansi(false)
        .finish();
    let guard = tracing::subscriber::set_default(subscriber);
    (logs, guard)
}

/// A CA made at test time and a certificate it signed for localhost/127.0.0.1.
pub struct TestPki {
    pub ca_pem: String,
    pub leaf_der: Vec<u8>,
    pub leaf_key_der: Vec<u8>,
}

pub fn test_pki() -> TestPki {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "dirsync test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &ca, &ca_key)
        .unwrap();
    TestPki {
        ca_pem: ca.pem(),
        leaf_der: leaf.der().to_vec(),
        leaf_key_der: leaf_key.serialize_der(),
    }
}

/// Serves `app` over HTTPS on a free loopback port with the PKI's leaf certificate.
pub fn serve_tls(app: axum::Router, pki: &TestPki) -> std::net::SocketAddr {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![CertificateDer::from(pki.leaf_der.clone())],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.leaf_key_der.clone())),
    )
    .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let server = axum_server::from_tcp_rustls(
        listener,
        axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(config)),
    );
    tokio::spawn(async move {
        server.serve(app.into_make_service()).await.unwrap();
    });
    addr
}

/// A `dirsync emulator` process (the real binary), killed on drop.
pub struct EmulatorProcess {
    pub child: std::process::Child,
    pub url: String,
}

impl Drop for EmulatorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `dirsync emulator` on a free port with `extra` flags and waits
/// (with a deadline) for its "listening on" line.
pub fn spawn_emulator(extra: &[&str]) -> EmulatorProcess {
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_dirsync"))
        .args(["emulator", "--listen", "127.0.0.1:0", "--token", TOKEN])
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("the dirsync binary runs");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(url) = line.strip_prefix("dirsync emulator listening on ") {
                let _ = tx.send(url.to_owned());
            }
        }
    });
    let url = rx
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("the emulator prints its URL within 20 s");
    EmulatorProcess { child, url }
}

/// Managed customer users in an emulator state file (`emulator.json` in
/// `dir`): externalId -> the value of `field` (`name`, `email`, ...).
pub fn stored_users_by(
    dir: &std::path::Path,
    field: &str,
) -> std::collections::BTreeMap<String, String> {
    let text = std::fs::read_to_string(dir.join("emulator.json")).unwrap();
    let state: serde_json::Value = serde_json::from_str(&text).unwrap();
    state["users"]
        .as_object()
        .unwrap()
        .values()
        .filter(|u| !u["customerId"].is_null())
        .filter_map(|u| {
            Some((
                u["externalId"].as_str()?.to_owned(),
                u[field].as_str()?.to_owned(),
            ))
        })
        .collect()
}

/// Runs the real binary in `cwd` (logs at WARN), standard input closed.
pub fn dirsync(args: &[&str], cwd: &std::path::Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_dirsync"))
        .args(args)
        .current_dir(cwd)
        .env("DIRSYNC_LOG", "warn")
        .output()
        .expect("dirsync runs")
}

pub fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A copy of the quickstart (config/example.yaml, which runs the built-in
/// emulator, and its CSV) in a temp dir; returns the dir and the config.
pub fn quickstart() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("config");
    std::fs::create_dir(&conf).unwrap();
    for f in ["example.yaml", "example-users.csv"] {
        std::fs::copy(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("config")
                .join(f),
            conf.join(f),
        )
        .unwrap();
    }
    let config = conf.join("example.yaml");
    (dir, config)
}
