//! `dirsync run`, the real binary: systemd's notification socket (READY=1,
//! STATUS=, STOPPING=1), SIGTERM before and during an apply, SIGHUP with a
//! broken and then a good config, the state directory's lock against a
//! one-shot sync, the metrics endpoint, and the order secrets are read in.
//! Also, in-process: a cancelled apply skips what has not started.
//!
//! Every wait polls with a deadline; nothing sleeps to wait.

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use dirsync::apply::{Outcome, Quiet, SHUTTING_DOWN};
use dirsync::config::Config;
use dirsync::emulator::Faults;
use dirsync::run::{reconcile, reconcile_cancellable, Connection, Mode};
use rustix::process::{kill_process, Pid, Signal};
use tokio_util::sync::CancellationToken;

use crate::support::*;

const TOKEN_VAR: &str = "DIRSYNC_TEST_DAEMON_TOKEN";
const DEADLINE: Duration = Duration::from_secs(60);

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dirsync"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `dirsync ARGS` in `dir`, with the emulator's token in the environment.
fn dirsync(args: &[&str], dir: &Path) -> Output {
    bin()
        .args(args)
        .current_dir(dir)
        .env("DIRSYNC_LOG", "warn")
        .env(TOKEN_VAR, TOKEN)
        .env_remove("NOTIFY_SOCKET")
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .expect("dirsync runs")
}

fn signal(pid: u32, sig: Signal) {
    let pid = Pid::from_raw(pid as i32).expect("a pid");
    kill_process(pid, sig).expect("the signal is sent");
}

// ---------------------------------------------------------------- emulator

async fn admin(url: &str, what: &str) -> serde_json::Value {
    reqwest::Client::new()
        .get(format!("{url}/admin/{what}"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("the emulator answers")
        .json()
        .await
        .expect("JSON")
}

async fn mutations(url: &str) -> u64 {
    admin(url, "stats").await["mutations"].as_u64().unwrap_or(0)
}

/// Managed users and customers in the emulator's state.
async fn managed(url: &str) -> (usize, usize) {
    let state = admin(url, "state").await;
    let users = state["users"].as_object().map_or(0, |u| {
        u.values().filter(|u| !u["customerId"].is_null()).count()
    });
    let customers = state["customers"].as_object().map_or(0, |c| {
        c.values().filter(|c| !c["externalId"].is_null()).count()
    });
    (users, customers)
}

// ---------------------------------------------------------------- scenario

/// A temp folder with users.csv and a config for `dirsync run` against `url`.
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new(url: &str, users: usize, schedule: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let setup = Setup { dir };
        setup.write_users(users, "");
        setup.write_config(url, schedule);
        setup
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn config(&self) -> &str {
        "dirsync.yaml"
    }

    fn write_users(&self, n: usize, name_suffix: &str) {
        let mut csv = String::from("id,email,name,customer\n");
        for i in 0..n {
            csv.push_str(&format!(
                "u{i},user{i}@x.example,User {i}{name_suffix},c{}\n",
                i % 3
            ));
        }
        std::fs::write(self.path("users.csv"), csv).unwrap();
    }

    fn config_text(url: &str, schedule: &str) -> String {
        format!(
            "platform:\n  url: {url}\n  token: {{ env: {TOKEN_VAR} }}\n  requests_per_second: 1000\n\
             source:\n  csv:\n    users_file: users.csv\n\
             mapping:\n  customer: {{ external_id: customer, name: customer }}\n  user: {{ external_id: id, customer: customer, email: email, name: name }}\n\
             state_dir: state\n\
             schedule:\n{schedule}\n\
             metrics:\n  listen: 127.0.0.1:0\n"
        )
    }

    fn write_config(&self, url: &str, schedule: &str) {
        use std::os::unix::fs::PermissionsExt;
        let path = self.path(self.config());
        std::fs::write(&path, Setup::config_text(url, schedule)).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}

/// Runs once at start, then once a year: one run to look at.
const ONCE: &str = "  cron: \"0 0 1 1 *\"\n  run_at_start: true\n  stop_timeout_secs: 30";
/// Every second (the six-field form), from the start.
const EVERY_SECOND: &str = "  cron: \"* * * * * *\"\n  run_at_start: true";

// ------------------------------------------------------------------ daemon

/// A `dirsync run` child with its notification socket and its log lines.
struct Daemon {
    pid: u32,
    socket: UnixDatagram,
    messages: Vec<String>,
    /// Log lines so far, and a signal for each new one.
    logs: Arc<(Mutex<Vec<String>>, Condvar)>,
    exit: mpsc::Receiver<ExitStatus>,
    exited: Option<ExitStatus>,
    _socket_dir: tempfile::TempDir,
}

impl Daemon {
    fn start(dir: &Path, config: &str) -> Daemon {
        let socket_dir = tempfile::tempdir().unwrap();
        let socket_path = socket_dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&socket_path).unwrap();
        let mut child = bin()
            .args(["--log-json", "run", "-c", config])
            .current_dir(dir)
            .env("DIRSYNC_LOG", "info")
            .env("NOTIFY_SOCKET", &socket_path)
            .env(TOKEN_VAR, TOKEN)
            .env_remove("WATCHDOG_USEC")
            .env_remove("CREDENTIALS_DIRECTORY")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("dirsync run starts");
        let pid = child.id();
        let stderr = child.stderr.take().expect("stderr");
        let logs = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let sink = Arc::clone(&logs);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.0.lock().unwrap().push(line);
                sink.1.notify_all();
            }
        });
        let (tx, exit) = mpsc::channel();
        std::thread::spawn(move || {
            if let Ok(status) = child.wait() {
                let _ = tx.send(status);
            }
        });
        Daemon {
            pid,
            socket,
            messages: Vec::new(),
            logs,
            exit,
            exited: None,
            _socket_dir: socket_dir,
        }
    }

    fn logs(&self) -> String {
        self.logs.0.lock().unwrap().join("\n")
    }

    /// Reads notifications until one satisfies `want` (returned), or fails
    /// at the deadline showing what came and the logs.
    fn expect_message(&mut self, what: &str, want: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        let mut buf = vec![0u8; 8192];
        loop {
            let left = DEADLINE.checked_sub(start.elapsed()).unwrap_or_else(|| {
                panic!(
                    "no {what} within {DEADLINE:?}; got {:#?}\nlogs:\n{}",
                    self.messages,
                    self.logs()
                )
            });
            // Short reads, so an early exit is noticed at once; messages
            // already queued are read before the exit is looked at.
            self.socket
                .set_read_timeout(Some(
                    left.clamp(Duration::from_millis(1), Duration::from_millis(200)),
                ))
                .unwrap();
            match self.socket.recv(&mut buf) {
                Ok(n) => {
                    let m = text(&buf[..n]);
                    self.messages.push(m.clone());
                    if want(&m) {
                        return m;
                    }
                }
                Err(_) => {
                    if let Ok(status) = self.exit.try_recv() {
                        self.exited = Some(status);
                    }
                    if let Some(status) = self.exited {
                        // Whatever it sent before exiting is still queued.
                        self.socket.set_nonblocking(true).unwrap();
                        while let Ok(n) = self.socket.recv(&mut buf) {
                            let m = text(&buf[..n]);
                            self.messages.push(m.clone());
                            if want(&m) {
                                self.socket.set_nonblocking(false).unwrap();
                                return m;
                            }
                        }
                        panic!(
                            "dirsync run exited ({status}) before {what}; got {:#?}\nlogs:\n{}",
                            self.messages,
                            self.logs()
                        );
                    }
                }
            }
        }
    }

    fn expect_ready(&mut self) {
        self.expect_message("READY=1", |m| m.lines().any(|l| l == "READY=1"));
    }

    /// The STATUS= sent after the next run ends; returns it.
    fn expect_run_status(&mut self) -> String {
        self.expect_message("a STATUS= after a run", |m| {
            m.starts_with("STATUS=") && m.contains("; last run ") && !m.contains("Running since")
        })
    }

    /// Waits (up to the deadline) for a log line containing `needle`.
    fn expect_log(&self, needle: &str) -> String {
        let (lines, arrived) = &*self.logs;
        let (lines, _) = arrived
            .wait_timeout_while(lines.lock().unwrap(), DEADLINE, |lines| {
                !lines.iter().any(|l| l.contains(needle))
            })
            .unwrap();
        match lines.iter().find(|l| l.contains(needle)) {
            Some(line) => line.clone(),
            None => panic!("no log line with {needle:?}; logs:\n{}", lines.join("\n")),
        }
    }

    fn signal(&self, sig: Signal) {
        signal(self.pid, sig);
    }

    /// SIGTERM, then STOPPING=1 and the exit status.
    fn terminate(&mut self) -> ExitStatus {
        self.signal(Signal::TERM);
        self.expect_message("STOPPING=1", |m| m.lines().any(|l| l == "STOPPING=1"));
        self.wait()
    }

    fn wait(&mut self) -> ExitStatus {
        if let Some(s) = self.exited {
            return s;
        }
        let status = self.exit.recv_timeout(DEADLINE).unwrap_or_else(|_| {
            panic!(
                "dirsync run did not exit within {DEADLINE:?}; logs:\n{}",
                self.logs()
            )
        });
        self.exited = Some(status);
        status
    }

    /// The metrics address from the "Serving metrics" log line.
    fn metrics_address(&self) -> String {
        let line = self.expect_log("Serving metrics");
        let json: serde_json::Value = serde_json::from_str(&line).expect("a JSON log line");
        json["fields"]["address"]
            .as_str()
            .expect("an address field")
            .to_owned()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.exited.is_none() && self.exit.try_recv().is_err() {
            let _ = kill_process(Pid::from_raw(self.pid as i32).expect("a pid"), Signal::KILL);
        }
    }
}

// ------------------------------------------------------------------- tests

#[test]
fn the_quickstart_runs_as_a_daemon_notifies_systemd_and_stops_on_sigterm_with_exit_0() {
    // config/example.yaml as shipped: the built-in emulator, a schedule with
    // run_at_start, the state under .dirsync-state/.
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("config");
    std::fs::create_dir(&conf).unwrap();
    for f in ["example.yaml", "example-users.csv"] {
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("config").join(f),
            conf.join(f),
        )
        .unwrap();
    }
    let mut daemon = Daemon::start(dir.path(), "config/example.yaml");
    daemon.expect_ready();
    let status = daemon.expect_run_status();
    assert!(
        status.contains(": ok: 24 create in "),
        "the first run creates 4 customers and 20 users: {status}"
    );
    assert!(status.contains("; next run "), "{status}");
    assert!(
        dir.path().join(".dirsync-state/dirsync.lock").exists(),
        "the lock is in the quickstart's state folder"
    );
    let summary = daemon.expect_log("Run finished.");
    let json: serde_json::Value = serde_json::from_str(&summary).unwrap();
    assert_eq!(json["fields"]["result"], "ok");
    assert_eq!(json["fields"]["create"], 24);
    assert_eq!(json["fields"]["failed"], 0);
    assert!(json["fields"]["requests"].as_u64().unwrap() > 0);
    daemon.expect_log("Next run scheduled.");

    let exit = daemon.terminate();
    assert_eq!(exit.code(), Some(0), "{}", daemon.logs());
    let plan = dirsync(&["plan", "-c", "config/example.yaml"], dir.path());
    assert_eq!(
        plan.status.code(),
        Some(0),
        "converged: {}",
        text(&plan.stdout)
    );
}

#[tokio::test]
async fn sigterm_during_an_apply_finishes_what_is_in_flight_exits_0_and_the_next_sync_converges() {
    let emu = spawn_emulator(&["--latency-ms", "150"]);
    let setup = Setup::new(&emu.url, 60, ONCE);
    let mut daemon = Daemon::start(setup.dir.path(), setup.config());
    daemon.expect_ready();
    let start = Instant::now();
    while mutations(&emu.url).await < 5 {
        assert!(
            start.elapsed() < DEADLINE,
            "the apply never started; logs:\n{}",
            daemon.logs()
        );
        tokio::task::yield_now().await;
    }
    let exit = daemon.terminate();
    assert_eq!(exit.code(), Some(0), "{}", daemon.logs());
    let sent = mutations(&emu.url).await;
    assert!(sent < 63, "stopped part-way ({sent} of 63 mutations)");
    let summary = daemon.expect_log("Run finished with problems.");
    assert!(summary.contains("\"result\":\"interrupted\""), "{summary}");
    assert!(summary.contains(SHUTTING_DOWN), "{summary}");

    let sync = dirsync(&["sync", "-c", setup.config()], setup.dir.path());
    assert_eq!(
        sync.status.code(),
        Some(0),
        "{}{}",
        text(&sync.stdout),
        text(&sync.stderr)
    );
    let plan = dirsync(&["plan", "-c", setup.config()], setup.dir.path());
    assert_eq!(
        plan.status.code(),
        Some(0),
        "converged: {}",
        text(&plan.stdout)
    );
    assert_eq!(managed(&emu.url).await, (60, 3), "no duplicates");
}

#[tokio::test]
async fn sighup_with_a_broken_config_keeps_the_daemon_running_on_the_old_one() {
    let emu = spawn_emulator(&[]);
    let setup = Setup::new(&emu.url, 6, EVERY_SECOND);
    let mut daemon = Daemon::start(setup.dir.path(), setup.config());
    daemon.expect_ready();
    daemon.expect_run_status();

    std::fs::write(
        setup.path(setup.config()),
        Setup::config_text(&emu.url, "  cron: \"every day at noon\"")
            .replace("state_dir", "stat_dir"),
    )
    .unwrap();
    daemon.signal(Signal::HUP);
    let why = daemon.expect_log("Configuration reload failed");
    assert!(why.contains("stat_dir"), "the log says why: {why}");
    daemon.expect_message("a STATUS= saying the reload failed", |m| {
        m.starts_with("STATUS=Reload failed, running on the previous configuration")
    });
    // Still running, on the old config: more runs follow.
    daemon.expect_run_status();
    daemon.expect_run_status();

    // A good config is taken: its users file names one user more.
    setup.write_config(&emu.url, EVERY_SECOND);
    setup.write_users(7, "");
    daemon.signal(Signal::HUP);
    daemon.expect_log("Configuration reloaded.");
    let start = Instant::now();
    while managed(&emu.url).await.0 < 7 {
        assert!(start.elapsed() < DEADLINE, "{}", daemon.logs());
        tokio::task::yield_now().await;
    }
    assert_eq!(daemon.terminate().code(), Some(0), "{}", daemon.logs());
}

#[tokio::test]
async fn a_sync_beside_the_running_daemon_is_refused_as_locked_and_sends_no_mutation() {
    let emu = spawn_emulator(&[]);
    let setup = Setup::new(&emu.url, 6, ONCE);
    let mut daemon = Daemon::start(setup.dir.path(), setup.config());
    daemon.expect_ready();
    assert!(daemon.expect_run_status().contains(": ok: 9 create"));

    setup.write_users(6, " Renamed");
    let before = mutations(&emu.url).await;
    let sync = dirsync(&["sync", "-c", setup.config()], setup.dir.path());
    assert_eq!(sync.status.code(), Some(1));
    let err = text(&sync.stderr);
    assert!(
        err.contains("dirsync: locked: ") && err.contains("nothing was sent"),
        "{err}"
    );
    assert!(
        err.contains(&format!("(pid {})", daemon.pid)),
        "names the daemon: {err}"
    );
    assert_eq!(mutations(&emu.url).await, before, "no mutation was sent");
    let second = dirsync(&["run", "-c", setup.config()], setup.dir.path());
    assert_eq!(second.status.code(), Some(1), "nor a second daemon");
    assert!(text(&second.stderr).contains("locked"));
    let plan = dirsync(&["plan", "-c", setup.config()], setup.dir.path());
    assert_eq!(plan.status.code(), Some(2), "plan needs no lock");

    assert_eq!(daemon.terminate().code(), Some(0), "{}", daemon.logs());
    let sync = dirsync(&["sync", "-c", setup.config()], setup.dir.path());
    assert_eq!(sync.status.code(), Some(0), "{}", text(&sync.stderr));
    assert_eq!(
        mutations(&emu.url).await,
        before + 6,
        "the lock was released"
    );
}

#[tokio::test]
async fn the_metrics_endpoint_answers_with_the_expected_series_after_a_run() {
    let emu = spawn_emulator(&[]);
    let setup = Setup::new(&emu.url, 6, ONCE);
    let mut daemon = Daemon::start(setup.dir.path(), setup.config());
    daemon.expect_ready();
    daemon.expect_run_status();
    let address = daemon.metrics_address();
    let http = reqwest::Client::new();
    let page = http
        .get(format!("http://{address}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let body = page.text().await.unwrap();
    for line in [
        "dirsync_runs_total{result=\"ok\"} 1\n",
        "dirsync_runs_total{result=\"blocked\"} 0\n",
        "dirsync_runs_total{result=\"failed\"} 0\n",
        "dirsync_operations_total{kind=\"customer\",action=\"create\",outcome=\"applied\"} 3\n",
        "dirsync_operations_total{kind=\"user\",action=\"create\",outcome=\"applied\"} 6\n",
        "dirsync_requests_throttled_total 0\n",
        "dirsync_drift 0\n",
        "dirsync_running 0\n",
        "dirsync_auth_backoff 0\n",
        "# TYPE dirsync_last_run_duration_seconds gauge\n",
    ] {
        assert!(body.contains(line), "{line:?} missing from\n{body}");
    }
    for series in [
        "dirsync_last_run_start_timestamp_seconds ",
        "dirsync_last_run_end_timestamp_seconds ",
        "dirsync_last_success_timestamp_seconds ",
        "dirsync_last_run_duration_seconds ",
        "dirsync_next_run_timestamp_seconds ",
        "dirsync_requests_total ",
    ] {
        let value: f64 = body
            .lines()
            .find_map(|l| l.strip_prefix(series))
            .unwrap_or_else(|| panic!("{series} missing from\n{body}"))
            .parse()
            .unwrap();
        assert!(value > 0.0, "{series}{value}");
    }
    let health = http
        .get(format!("http://{address}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert!(health
        .text()
        .await
        .unwrap()
        .starts_with("ok: the last successful run was"));
    assert_eq!(daemon.terminate().code(), Some(0), "{}", daemon.logs());
}

#[test]
fn run_without_a_schedule_says_what_to_add() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("users.csv"), "id,email,name,customer\n").unwrap();
    let config = Setup::config_text("http://127.0.0.1:9", EVERY_SECOND);
    let no_schedule = config.replace("schedule:\n", "").replace(EVERY_SECOND, "");
    let no_schedule: String = no_schedule
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(dir.path().join("dirsync.yaml"), no_schedule).unwrap();
    let out = dirsync(&["run", "-c", "dirsync.yaml"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("dirsync.yaml: schedule: is required by dirsync run"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test]
async fn secrets_are_read_from_the_credentials_directory_then_the_file_then_the_environment() {
    let emu = spawn_emulator(&[]);
    let dir = tempfile::tempdir().unwrap();
    let creds = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("users.csv"),
        "id,email,name,customer\nu1,a@x.example,A,c1\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("dirsync.yaml"),
        format!(
            "platform:\n  url: {}\n  token: {{ credential: prismatic-token, file: token, env: {TOKEN_VAR} }}\n\
             source:\n  csv:\n    users_file: users.csv\n\
             mapping:\n  customer: {{ external_id: customer, name: customer }}\n  user: {{ external_id: id, customer: customer, email: email, name: name }}\n",
            emu.url
        ),
    )
    .unwrap();
    let wrong = "wrong-token-9d2b";
    let plan = |credential: Option<&str>, file: Option<&str>, env: Option<&str>| {
        let _ = std::fs::remove_file(creds.path().join("prismatic-token"));
        let _ = std::fs::remove_file(dir.path().join("token"));
        let mut cmd = bin();
        cmd.args(["plan", "-c", "dirsync.yaml"])
            .current_dir(dir.path())
            .env("DIRSYNC_LOG", "warn")
            .env_remove(TOKEN_VAR)
            .env_remove("CREDENTIALS_DIRECTORY");
        if let Some(c) = credential {
            std::fs::write(creds.path().join("prismatic-token"), c).unwrap();
            cmd.env("CREDENTIALS_DIRECTORY", creds.path());
        }
        if let Some(f) = file {
            std::fs::write(dir.path().join("token"), f).unwrap();
        }
        if let Some(e) = env {
            cmd.env(TOKEN_VAR, e);
        }
        let out = cmd.output().unwrap();
        let shown = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert!(
            !shown.contains(TOKEN) && !shown.contains(wrong),
            "a token was shown: {shown}"
        );
        (out.status.code(), shown)
    };
    // Exit 2: the plan ran (changes pending), so the token was accepted.
    assert_eq!(
        plan(Some(TOKEN), Some(wrong), Some(wrong)).0,
        Some(2),
        "the credential first"
    );
    let (code, shown) = plan(Some(wrong), Some(TOKEN), Some(TOKEN));
    assert_eq!(
        code,
        Some(1),
        "a present credential wins over the file: {shown}"
    );
    assert_eq!(
        plan(None, Some(TOKEN), Some(wrong)).0,
        Some(2),
        "then the file"
    );
    assert_eq!(
        plan(None, None, Some(TOKEN)).0,
        Some(2),
        "then the environment"
    );
    let (code, shown) = plan(None, None, None);
    assert_eq!(code, Some(1));
    assert!(
        shown.contains("no token found in systemd credential prismatic-token, then file ")
            && shown.contains(&format!("then environment variable {TOKEN_VAR}")),
        "{shown}"
    );
}

#[tokio::test]
async fn a_cancelled_apply_finishes_the_operations_in_flight_and_skips_the_rest_as_shutting_down() {
    let scenario = crate::sync::Scenario::new(None).await;
    scenario.write_users(&crate::sync::rows(40, 2));
    let config: Config = scenario.config("  apply_concurrency: 4\n");
    scenario.emu.handle.set_faults(Faults {
        latency_ms: 50,
        ..Faults::default()
    });
    let connection = Connection::open(&config.platform).await.unwrap();
    let cancel = CancellationToken::new();
    let run = {
        let (config, cancel) = (config.clone(), cancel.clone());
        tokio::spawn(async move {
            let connection = Connection::open(&config.platform).await.unwrap();
            let mode = Mode::Apply {
                allow_deletes: false,
            };
            reconcile_cancellable(&config, &connection, mode, &Quiet, &cancel).await
        })
    };
    let start = Instant::now();
    while scenario.emu.handle.stats().mutations < 5 {
        assert!(start.elapsed() < DEADLINE, "the apply never started");
        tokio::task::yield_now().await;
    }
    cancel.cancel();
    let r = run.await.unwrap().unwrap();
    let report = r.report.expect("applied");
    assert_eq!(report.stopped.as_deref(), Some(SHUTTING_DOWN));
    let applied = report
        .operations
        .iter()
        .filter(|o| o.outcome.succeeded())
        .count();
    let skipped = report
        .operations
        .iter()
        .filter(|o| {
            o.outcome
                == Outcome::Skipped {
                    reason: SHUTTING_DOWN.to_owned(),
                }
        })
        .count();
    assert!(applied >= 5, "what was in flight finished: {applied}");
    assert!(skipped > 0, "the rest was skipped");
    assert_eq!(applied + skipped, report.operations.len(), "nothing failed");
    assert_eq!(
        scenario.emu.handle.stats().mutations as usize,
        applied,
        "skipped operations sent nothing"
    );

    scenario.emu.handle.set_faults(Faults::default());
    let mode = Mode::Apply {
        allow_deletes: false,
    };
    reconcile(&config, &connection, mode, &Quiet).await.unwrap();
    let again = reconcile(&config, &connection, Mode::Plan, &Quiet)
        .await
        .unwrap();
    assert!(again.plan.is_empty(), "converged");
}

#[test]
fn a_failed_preflight_exits_1_naming_its_cause_once() {
    // A port nothing listens on (bound, then closed).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let setup = Setup::new(&format!("http://127.0.0.1:{port}"), 1, EVERY_SECOND);
    let text_config = std::fs::read_to_string(setup.path(setup.config()))
        .unwrap()
        .replace(
            "requests_per_second: 1000",
            "requests_per_second: 1000\n  max_attempts: 1",
        );
    std::fs::write(setup.path(setup.config()), text_config).unwrap();
    let out = dirsync(&["run", "-c", setup.config()], setup.dir.path());
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("dirsync: preflight against the platform failed: platform: "),
        "{err}"
    );
    assert_eq!(
        err.matches("preflight against the platform failed").count(),
        1,
        "{err}"
    );
    assert_eq!(err.matches("checking the token").count(), 1, "{err}");
    assert!(!err.contains("AuthenticatedUser"), "{err}");
}
