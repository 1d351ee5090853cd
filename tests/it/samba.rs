//! A real Samba Active Directory domain controller (Debian's `samba`) for
//! the Active Directory tests, and the tests of that harness.
//!
//! Samba's ports are fixed (389, 636, 3268, 3269), so the DC runs inside a
//! private network namespace made for it, never on the machine's ports:
//! a holder process (`unshare -n -m ... sleep infinity`) owns the network
//! namespace and a mount namespace whose /etc/hosts names the DC
//! (`dc1.test.lan`, 127.0.0.1), `lo` is brought up in it, and
//! `samba -i -M single` runs there under `nsenter`. Everything that talks to
//! the DC (ldapsearch, the real dirsync binary) runs there too:
//! [`SambaDc::run_in_namespace`], [`SambaDc::dirsync`].
//!
//! Each [`SambaDc`] has a fresh temp directory: `samba-tool domain provision`
//! (realm TEST.LAN, domain TEST, host DC1, `--dns-backend=NONE`), then one
//! LDIF loaded offline with `ldbadd` into `private/sam.ldb` before Samba
//! starts (tests/data/ad/base.ldif, a service account, 1,600 bulk users,
//! tests/data/ad/groups.ldif and the 1,603-member Acme group), then Samba.
//! Samba makes its own TLS certificate at start (`private/tls/cert.pem`,
//! signed by `private/tls/ca.pem`): it names the host in its CN only, with
//! no subjectAltName.
//!
//! ```ignore
//! let dc = SambaDc::shared(); // started once per test binary, on first use
//! let run = dc.dirsync(&config_yaml, &["plan", "--output", "json"]);
//! // dc.ldap_url(), dc.gc_url(), dc.reader_bind(), dc.cert_sha256(), ...
//! ```
//!
//! Nothing outlives the test binary: the holder and Samba get SIGKILL when
//! the thread that started them ends (`PR_SET_PDEATHSIG`; that thread lives
//! as long as the DC, so for `shared()` as long as the process), Samba also
//! stops when its stdin pipe closes (what `-i` does), and `Drop` kills both
//! and removes the directory. Every run uses a new directory and namespace;
//! the directory of `shared()`, a static that is never dropped, is removed
//! by the next run once its test process has ended.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub const REALM: &str = "TEST.LAN";
pub const DOMAIN: &str = "TEST";
/// The DC's host name; the certificate's CN is `DC1.test.lan`.
pub const HOST_NAME: &str = "DC1";
pub const BASE_DN: &str = "DC=test,DC=lan";
pub const ADMIN_DN: &str = "CN=Administrator,CN=Users,DC=test,DC=lan";
/// Meets AD's default complexity rules.
pub const ADMIN_PASSWORD: &str = "Admin-Pass-7c1e";
/// The service account dirsync binds as (made by the harness, with this password).
pub const READER_DN: &str = "CN=svc-dirsync,OU=Service Accounts,DC=test,DC=lan";
pub const READER_PASSWORD: &str = "Reader-Pass-5f0c";

/// One OU per customer directly under it (plus OU=Sales inside Acme).
pub const CUSTOMERS_BASE: &str = "OU=Customers,DC=test,DC=lan";
/// One group per customer, named like the OU.
pub const CUSTOMER_GROUPS_BASE: &str = "OU=Customer Groups,DC=test,DC=lan";
pub const ACME_GROUP_DN: &str = "CN=Acme,OU=Customer Groups,DC=test,DC=lan";
pub const CUSTOMERS: [&str; 3] = ["Acme", "Globex", "Initech"];
/// Users, not computers (a computer is a `user` too).
pub const PERSON_FILTER: &str = "(&(objectCategory=person)(objectClass=user))";

/// Bulk users `CN=Acme User NNNN,OU=Acme,...` (sAMAccountName acmeNNNN,
/// mail acmeNNNN@acme.example), all in the Acme group.
pub const BULK_USERS: usize = 1600;
/// Every 40th bulk user (0, 40, 80, ...) is disabled: 514 when N % 80 is 0,
/// else 66050.
pub const BULK_DISABLED_EVERY: usize = 40;

/// The counts of the default data (BULK_USERS bulk users). Persons under
/// OU=Customers: the bulk users and 9 of base.ldif (not the computer WS01).
pub const CUSTOMER_PERSONS: usize = BULK_USERS + 9;
/// Disabled among them: 40 bulk users, Carol (514) and Erin (66050).
pub const CUSTOMER_PERSONS_DISABLED: usize = BULK_USERS / BULK_DISABLED_EVERY + 2;
/// Enabled persons inside a customer OU (Oscar Orphan sits directly under
/// OU=Customers): Acme 1,562, Globex 2 (Dave, José), Initech 2 (Frank, Grace).
pub const CUSTOMER_USERS: usize = CUSTOMER_PERSONS - CUSTOMER_PERSONS_DISABLED - 1;
pub const ACME_USERS: usize = BULK_USERS - BULK_USERS / BULK_DISABLED_EVERY + 2;
/// The Acme group's members: every bulk user, Alice, Bob and Carol (more
/// than AD's MaxValRange of 1,500).
pub const ACME_GROUP_MEMBERS: usize = BULK_USERS + 3;

/// How long provisioning, the load, a start or a stop may take, each.
const DEADLINE: Duration = Duration::from_secs(120);
/// How long a command run in the namespace may take.
const COMMAND_DEADLINE: Duration = Duration::from_secs(300);
const POLL: Duration = Duration::from_millis(20);
/// A backstop: Samba ends itself after this long whatever happens.
const MAXIMUM_RUNTIME_SECS: u32 = 4 * 3600;

/// A file under tests/data/ad/.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/ad")
        .join(name)
}

// ---------------------------------------------------------------------------
// The programs

struct Tools {
    samba: PathBuf,
    samba_tool: PathBuf,
    ldbadd: PathBuf,
    unshare: PathBuf,
    nsenter: PathBuf,
    ip: PathBuf,
    sh: PathBuf,
    mount: PathBuf,
    env: PathBuf,
    sleep: PathBuf,
    ldapsearch: PathBuf,
}

/// Samba's programs and the namespace tools; panics (never skips) when one is missing.
fn tools() -> &'static Tools {
    static TOOLS: OnceLock<Tools> = OnceLock::new();
    TOOLS.get_or_init(|| Tools {
        samba: find_tool("samba"),
        samba_tool: find_tool("samba-tool"),
        ldbadd: find_tool("ldbadd"),
        unshare: find_tool("unshare"),
        nsenter: find_tool("nsenter"),
        ip: find_tool("ip"),
        sh: find_tool("sh"),
        mount: find_tool("mount"),
        env: find_tool("env"),
        sleep: find_tool("sleep"),
        ldapsearch: find_tool("ldapsearch"),
    })
}

/// `/usr/sbin/NAME`, `/usr/bin/NAME`, `/bin/NAME` or NAME on the PATH.
fn find_tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .into_iter()
        .map(PathBuf::from)
        .chain(std::env::split_paths(&path))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| missing(name))
}

fn missing(what: &str) -> ! {
    let ci = if std::env::var("CI").is_ok_and(|v| v == "true") {
        " (CI=true: the Active Directory tests fail, they are never skipped)"
    } else {
        ""
    };
    panic!(
        "the Active Directory tests need a Samba AD DC, ldb-tools, ldap-utils, util-linux \
         (unshare, nsenter) and iproute2 (ip), and `{what}` is missing (looked in /usr/sbin, \
         /usr/bin, /sbin, /bin and PATH){ci}. `bash tests/run.sh` installs them; by hand: \
         `sudo apt-get install samba samba-ad-dc samba-ad-provision samba-dsdb-modules \
         ldb-tools ldap-utils util-linux iproute2 openssl` (Debian/Ubuntu). They run as root \
         (a network namespace)."
    )
}

// ---------------------------------------------------------------------------
// The data

/// The LDIF loaded before Samba starts: base.ldif, the service account,
/// `bulk_users` bulk users in OU=Acme, groups.ldif and the Acme group.
pub fn domain_ldif(bulk_users: usize) -> String {
    let mut ldif = String::with_capacity(bulk_users * 400 + 64 * 1024);
    let base = fs::read_to_string(fixture("base.ldif")).expect("tests/data/ad/base.ldif");
    ldif.push_str(base.trim_end());
    ldif.push_str("\n\n");
    ldif.push_str(&service_account_ldif());
    ldif.push_str(&bulk_users_ldif(bulk_users));
    let groups = fs::read_to_string(fixture("groups.ldif")).expect("tests/data/ad/groups.ldif");
    ldif.push_str(groups.trim_end());
    ldif.push_str("\n\n");
    ldif.push_str(&acme_group_ldif(bulk_users));
    ldif
}

/// The DN of bulk user `i`.
pub fn bulk_user_dn(i: usize) -> String {
    format!("CN=Acme User {i:04},OU=Acme,{CUSTOMERS_BASE}")
}

/// The mail of bulk user `i`.
pub fn bulk_user_mail(i: usize) -> String {
    format!("acme{i:04}@acme.example")
}

/// Is bulk user `i` disabled?
pub fn bulk_user_disabled(i: usize) -> bool {
    i % BULK_DISABLED_EVERY == 0
}

/// The password as AD takes it: the UTF-16LE of the quoted text.
fn unicode_pwd(password: &str) -> String {
    use base64::Engine as _;
    let quoted: Vec<u8> = format!("\"{password}\"")
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    base64::engine::general_purpose::STANDARD.encode(quoted)
}

fn service_account_ldif() -> String {
    format!(
        "dn: {READER_DN}\n\
         objectClass: user\n\
         sAMAccountName: svc-dirsync\n\
         userPrincipalName: svc-dirsync@test.lan\n\
         description: What dirsync binds as\n\
         userAccountControl: 66048\n\
         unicodePwd:: {}\n\n",
        unicode_pwd(READER_PASSWORD)
    )
}

fn bulk_users_ldif(count: usize) -> String {
    let mut ldif = String::with_capacity(count * 400);
    for i in 0..count {
        let uac = match (bulk_user_disabled(i), i % (2 * BULK_DISABLED_EVERY) == 0) {
            (false, _) => 512,
            (true, true) => 514,
            (true, false) => 66050,
        };
        let _ = write!(
            ldif,
            "dn: {dn}\n\
             objectClass: user\n\
             sAMAccountName: acme{i:04}\n\
             userPrincipalName: acme{i:04}@test.lan\n\
             givenName: Acme\n\
             sn: User {i:04}\n\
             displayName: Acme User {i:04}\n\
             mail: {mail}\n\
             telephoneNumber: +1 555 {phone:04}\n\
             userAccountControl: {uac}\n\n",
            dn = bulk_user_dn(i),
            mail = bulk_user_mail(i),
            phone = 2000 + i,
        );
    }
    ldif
}

fn acme_group_ldif(bulk_users: usize) -> String {
    let mut ldif = format!(
        "dn: {ACME_GROUP_DN}\n\
         objectClass: group\n\
         sAMAccountName: customer-acme\n\
         description: Acme Corporation\n\
         member: CN=Alice Adams,OU=Acme,{CUSTOMERS_BASE}\n\
         member: CN=Bob Baker,OU=Sales,OU=Acme,{CUSTOMERS_BASE}\n\
         member: CN=Carol Clark,OU=Acme,{CUSTOMERS_BASE}\n"
    );
    for i in 0..bulk_users {
        let _ = writeln!(ldif, "member: {}", bulk_user_dn(i));
    }
    ldif.push('\n');
    ldif
}

/// smb.conf for an LDAP-only DC whose every path is under `dir`.
fn smb_conf(dir: &Path) -> String {
    let d = dir.display();
    format!(
        "# Made by tests/it/samba.rs.\n\
         [global]\n\
         \tnetbios name = {HOST_NAME}\n\
         \trealm = {REALM}\n\
         \tworkgroup = {DOMAIN}\n\
         \tserver role = active directory domain controller\n\
         \tserver services = ldap\n\
         \tidmap_ldb:use rfc2307 = yes\n\
         \t# Simple binds on plain ldap:// too (the default refuses them: strongerAuthRequired).\n\
         \tldap server require strong auth = no\n\
         \tprivate dir = {d}/private\n\
         \tbinddns dir = {d}/bind-dns\n\
         \tstate directory = {d}/state\n\
         \tcache directory = {d}/cache\n\
         \tlock directory = {d}\n\
         \tpid directory = {d}/run\n\
         \tncalrpc dir = {d}/run/ncalrpc\n\
         \twinbindd socket directory = {d}/run/winbindd\n\
         \tntp signd socket directory = {d}/run/ntp_signd\n\
         \tlog file = {d}/log.%m\n"
    )
}

// ---------------------------------------------------------------------------
// The server

/// How long each step of the last start took.
#[derive(Clone, Copy, Debug)]
pub struct Timings {
    pub provision: Duration,
    pub load: Duration,
    /// From spawning Samba until 389, 636, 3268 and 3269 answer.
    pub start_to_ready: Duration,
    pub total: Duration,
}

/// Options; `start()` makes the DC.
#[derive(Clone, Debug)]
pub struct SambaBuilder {
    bulk_users: usize,
}

impl SambaBuilder {
    /// Bulk users in OU=Acme (default BULK_USERS; the count constants hold
    /// for the default only).
    pub fn bulk_users(mut self, n: usize) -> Self {
        self.bulk_users = n;
        self
    }

    pub fn start(self) -> SambaDc {
        SambaDc::start_with(&self).unwrap_or_else(|e| panic!("{e}"))
    }
}

/// The holder and Samba, owned by the thread that spawned them.
struct Processes {
    holder: Child,
    samba: Child,
    /// Samba stops when this closes.
    _samba_stdin: ChildStdin,
}

/// A running Samba AD DC; stopped (killed), with its namespace and files,
/// on drop.
pub struct SambaDc {
    dir: tempfile::TempDir,
    holder_pid: u32,
    samba_pid: u32,
    processes: Arc<Mutex<Option<Processes>>>,
    stop: Option<mpsc::Sender<()>>,
    keeper: Option<JoinHandle<()>>,
    cert_sha256: String,
    bulk_users: usize,
    timings: Timings,
}

impl SambaDc {
    pub fn builder() -> SambaBuilder {
        SambaBuilder {
            bulk_users: BULK_USERS,
        }
    }

    /// The DC shared by every test of this binary: started on first use
    /// (10 to 20 s on 2 cores), with the default data. Tests must not change its data.
    /// A failed start fails every test that asks, with the same message.
    pub fn shared() -> &'static SambaDc {
        static SHARED: OnceLock<Result<SambaDc, String>> = OnceLock::new();
        match SHARED.get_or_init(|| SambaDc::start_with(&SambaDc::builder())) {
            Ok(dc) => dc,
            Err(e) => panic!("the shared Samba DC did not start: {e}"),
        }
    }

    fn start_with(options: &SambaBuilder) -> Result<SambaDc, String> {
        let tools = tools();
        let started = Instant::now();
        remove_stale_dirs();
        let dir = tempfile::Builder::new()
            .prefix(DIR_PREFIX)
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let d = dir.path().to_owned();
        fs::write(d.join(OWNER_FILE), this_process()).map_err(|e| format!("owner file: {e}"))?;

        // Provision (offline, no network needed), from an empty config:
        // not the machine's /etc/samba/smb.conf.
        let empty = d.join("empty.conf");
        fs::write(&empty, "").map_err(|e| format!("{}: {e}", empty.display()))?;
        run_checked(
            Command::new(&tools.samba_tool)
                .args(["domain", "provision"])
                .arg(format!("--targetdir={}", d.display()))
                .args(["--use-rfc2307", "--server-role=dc", "--dns-backend=NONE"])
                .arg(format!("--realm={REALM}"))
                .arg(format!("--domain={DOMAIN}"))
                .arg(format!("--host-name={HOST_NAME}"))
                .arg(format!("--adminpass={ADMIN_PASSWORD}"))
                .arg(format!("--configfile={}", empty.display())),
            DEADLINE,
        )?;
        let provision = started.elapsed();
        // Replace the generated smb.conf: only the LDAP server, every path
        // (pid files, sockets, logs) under the temp dir.
        for sub in ["run", "cache"] {
            fs::create_dir_all(d.join(sub)).map_err(|e| format!("{sub}: {e}"))?;
        }
        fs::write(smb_conf_path(&d), smb_conf(&d)).map_err(|e| format!("smb.conf: {e}"))?;

        // Load the data offline: one transaction, Samba's modules fill in
        // objectGUID, objectSid, memberOf and the rest.
        let load_started = Instant::now();
        let ldif = d.join("domain.ldif");
        fs::write(&ldif, domain_ldif(options.bulk_users)).map_err(|e| format!("LDIF: {e}"))?;
        run_checked(
            Command::new(&tools.ldbadd)
                .arg(format!("--configfile={}", smb_conf_path(&d).display()))
                .arg("-H")
                .arg(d.join("private/sam.ldb"))
                .arg(&ldif),
            DEADLINE,
        )?;
        let load = load_started.elapsed();

        // The namespace and Samba, owned by a thread that lives as long as
        // the DC (PR_SET_PDEATHSIG follows the spawning thread).
        let ready_started = Instant::now();
        let processes = Arc::new(Mutex::new(None));
        let (stop, stopped) = mpsc::channel::<()>();
        let (report, spawned) = mpsc::channel::<Result<(u32, u32), String>>();
        let keeper = {
            let processes = processes.clone();
            let d = d.clone();
            std::thread::Builder::new()
                .name("samba-dc-keeper".to_owned())
                .spawn(move || keep(&d, &processes, &report, &stopped))
                .map_err(|e| format!("keeper thread: {e}"))?
        };
        let pids = spawned
            .recv()
            .map_err(|_| "the keeper thread ended before starting Samba".to_owned())
            .and_then(|r| r);
        let mut dc = SambaDc {
            dir,
            holder_pid: 0,
            samba_pid: 0,
            processes,
            stop: Some(stop),
            keeper: Some(keeper),
            cert_sha256: String::new(),
            bulk_users: options.bulk_users,
            timings: Timings {
                provision,
                load,
                start_to_ready: Duration::ZERO,
                total: Duration::ZERO,
            },
        };
        // From here a failure drops `dc`, which stops what was started.
        let (holder_pid, samba_pid) = pids?;
        dc.holder_pid = holder_pid;
        dc.samba_pid = samba_pid;
        dc.wait_until_ready()?;
        dc.timings.start_to_ready = ready_started.elapsed();
        dc.cert_sha256 = sha256_hex(&cert_der(&dc.cert_pem_path())?);
        dc.timings.total = started.elapsed();
        eprintln!(
            "samba.rs: Samba AD DC ready in {:?} ({} bulk users; provision {:?}, load {:?}, start to ready {:?}) in {}",
            dc.timings.total,
            dc.bulk_users,
            dc.timings.provision,
            dc.timings.load,
            dc.timings.start_to_ready,
            dc.dir().display()
        );
        Ok(dc)
    }

    /// Polls (with a deadline) until every LDAP port answers a root DSE
    /// read; fails at once when Samba has exited.
    fn wait_until_ready(&self) -> Result<(), String> {
        let deadline = Instant::now() + DEADLINE;
        let urls = [
            self.ldap_url(),
            self.ldaps_url(),
            self.gc_url(),
            self.gcs_url(),
        ];
        let mut ready = 0;
        loop {
            if let Some(status) = self.samba_exit_status() {
                return Err(format!("samba exited ({status}); log:\n{}", self.log()));
            }
            while ready < urls.len() && self.answers(&urls[ready]) {
                ready += 1;
            }
            if ready == urls.len() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "Samba did not answer on {} within {DEADLINE:?}; log:\n{}",
                    urls[ready],
                    self.log()
                ));
            }
            std::thread::sleep(POLL);
        }
    }

    /// An anonymous root DSE read at `url` works (certificates not checked:
    /// this is about the port).
    fn answers(&self, url: &str) -> bool {
        let mut cmd = self.command(&tools().ldapsearch);
        cmd.args(["-x", "-H", url, "-b", "", "-s", "base"])
            .args(["-o", "nettimeout=2", "1.1"])
            .env("LDAPTLS_REQCERT", "never")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd.status().is_ok_and(|s| s.success())
    }

    /// Samba's exit status, once it has exited.
    pub fn samba_exit_status(&self) -> Option<ExitStatus> {
        let mut guard = self.processes.lock().unwrap_or_else(|e| e.into_inner());
        guard
            .as_mut()
            .and_then(|p| p.samba.try_wait().ok().flatten())
    }

    /// `ldap://127.0.0.1` (389): plain simple binds are allowed here
    /// (`allow_insecure: true`); StartTLS works too, with the same certificate
    /// as LDAPS (Samba does not list it in supportedExtension).
    pub fn ldap_url(&self) -> String {
        "ldap://127.0.0.1".to_owned()
    }

    /// `ldaps://127.0.0.1` (636), with Samba's own certificate.
    pub fn ldaps_url(&self) -> String {
        "ldaps://127.0.0.1".to_owned()
    }

    /// The Global Catalog, `ldap://127.0.0.1:3268`.
    pub fn gc_url(&self) -> String {
        "ldap://127.0.0.1:3268".to_owned()
    }

    /// The Global Catalog over TLS, `ldaps://127.0.0.1:3269`.
    pub fn gcs_url(&self) -> String {
        "ldaps://127.0.0.1:3269".to_owned()
    }

    /// The DC's DNS name, `dc1.test.lan`: its certificate's CN (in another
    /// case: `DC1.test.lan`). Inside the namespaces it is 127.0.0.1 (and so is
    /// `test.lan`, the name referrals give).
    pub fn host_name(&self) -> String {
        format!("{HOST_NAME}.test.lan").to_lowercase()
    }

    /// `ldaps://dc1.test.lan` (636): LDAPS by the name the certificate's CN
    /// gives, as a client of a real AD would connect.
    pub fn ldaps_host_url(&self) -> String {
        format!("ldaps://{}", self.host_name())
    }

    pub fn base_dn(&self) -> &'static str {
        BASE_DN
    }

    /// The domain's Administrator: (DN, password).
    pub fn admin_bind(&self) -> (&'static str, &'static str) {
        (ADMIN_DN, ADMIN_PASSWORD)
    }

    /// The service account dirsync binds as: (DN, password).
    pub fn reader_bind(&self) -> (&'static str, &'static str) {
        (READER_DN, READER_PASSWORD)
    }

    /// Bulk users in OU=Acme.
    pub fn bulk_users(&self) -> usize {
        self.bulk_users
    }

    /// The server certificate Samba made (PEM): CN=DC1.test.lan, no
    /// subjectAltName, signed by `ca_pem_path()`.
    pub fn cert_pem_path(&self) -> PathBuf {
        self.dir.path().join("private/tls/cert.pem")
    }

    /// The CA certificate Samba made (PEM).
    pub fn ca_pem_path(&self) -> PathBuf {
        self.dir.path().join("private/tls/ca.pem")
    }

    /// SHA-256 of the server certificate's DER: 64 lowercase hex digits.
    pub fn cert_sha256(&self) -> &str {
        &self.cert_sha256
    }

    /// The same as `openssl x509 -fingerprint -sha256` prints it: `AB:CD:...`.
    pub fn cert_sha256_colons(&self) -> String {
        self.cert_sha256
            .as_bytes()
            .chunks(2)
            .map(|c| String::from_utf8_lossy(c).to_uppercase())
            .collect::<Vec<_>>()
            .join(":")
    }

    /// The pid of the process holding the network namespace (`nsenter -t`).
    pub fn namespace_pid(&self) -> u32 {
        self.holder_pid
    }

    pub fn samba_pid(&self) -> u32 {
        self.samba_pid
    }

    /// The DC's directory (etc/smb.conf, private/, samba.log, domain.ldif).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn timings(&self) -> Timings {
        self.timings
    }

    /// What Samba wrote to stdout and stderr.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("samba.log")).unwrap_or_default()
    }

    /// `program` to be run inside the DC's namespaces (through `nsenter`),
    /// in this process's current directory; add its arguments. (Entering
    /// the mount namespace resets the directory: give another one with
    /// `run_in_namespace` and `Command::current_dir`, not on this command.)
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        nsenter(self.holder_pid, &cwd, program.as_ref())
    }

    /// Runs `cmd` (program, arguments, environment and directory) inside
    /// the DC's namespaces to its end, or kills it after 300 s.
    pub fn run_in_namespace(&self, cmd: &mut Command) -> Output {
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        let wd = cmd.get_current_dir().map_or(cwd.clone(), |d| cwd.join(d));
        let mut wrapped = nsenter(self.holder_pid, &wd, cmd.get_program());
        wrapped.args(cmd.get_args());
        for (key, value) in cmd.get_envs() {
            match value {
                Some(v) => wrapped.env(key, v),
                None => wrapped.env_remove(key),
            };
        }
        output_within(&mut wrapped, COMMAND_DEADLINE).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `ldapsearch -x -LLL -o ldif-wrap=no -H url -D dn -w password ARGS` in
    /// the namespaces, with Samba's CA, going on whatever the certificate
    /// (`LDAPTLS_REQCERT=allow`: its CN does not match 127.0.0.1).
    pub fn ldapsearch(&self, url: &str, (dn, password): (&str, &str), args: &[&str]) -> Output {
        self.run_in_namespace(
            Command::new(&tools().ldapsearch)
                .args(["-x", "-LLL", "-o", "ldif-wrap=no", "-H", url])
                .args(["-D", dn, "-w", password])
                .args(args)
                .env("LDAPTLS_CACERT", self.ca_pem_path())
                .env("LDAPTLS_REQCERT", "allow"),
        )
    }

    /// Runs the real dirsync binary in the namespace: writes `config` as
    /// `dirsync.yaml` in a fresh directory, beside `ldap-password` (the
    /// reader's), `admin-password`, `samba-ca.pem` and `samba-cert.pem`
    /// (copies of Samba's), then runs `dirsync ARGS -c dirsync.yaml` there.
    /// Use `platform: { emulator: { state: state.json } }`: the in-process
    /// emulator needs no network outside the namespace.
    pub fn dirsync(&self, config: &str, args: &[&str]) -> DirsyncRun {
        let dir = tempfile::Builder::new()
            .prefix("dirsync-ad-run-")
            .tempdir()
            .expect("temp dir");
        let output = self.dirsync_in(dir.path(), config, args);
        DirsyncRun { output, _dir: dir }
    }

    /// `dirsync()` in a directory of the caller's (to run again beside the
    /// emulator state a first run left).
    pub fn dirsync_in(&self, p: &Path, config: &str, args: &[&str]) -> Output {
        fs::write(p.join("dirsync.yaml"), config).expect("config");
        fs::write(p.join("ldap-password"), READER_PASSWORD).expect("password file");
        fs::write(p.join("admin-password"), ADMIN_PASSWORD).expect("password file");
        fs::copy(self.ca_pem_path(), p.join("samba-ca.pem")).expect("CA copy");
        fs::copy(self.cert_pem_path(), p.join("samba-cert.pem")).expect("cert copy");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dirsync"));
        cmd.args(args)
            .args(["-c", "dirsync.yaml"])
            .current_dir(p)
            .env_remove("DIRSYNC_CONFIG")
            .env_remove("DIRSYNC_LOG");
        self.run_in_namespace(&mut cmd)
    }

    /// Stops Samba and the namespace holder and waits for both.
    fn stop(&mut self) {
        // Closing the channel wakes the keeper, which kills and reaps.
        self.stop.take();
        if let Some(keeper) = self.keeper.take() {
            let _ = keeper.join();
        }
    }
}

impl Drop for SambaDc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The keeper thread: makes the namespace and starts Samba in it, reports
/// the pids, then waits until the DC is dropped (or the process ends).
fn keep(
    dir: &Path,
    processes: &Mutex<Option<Processes>>,
    report: &mpsc::Sender<Result<(u32, u32), String>>,
    stopped: &mpsc::Receiver<()>,
) {
    match spawn_processes(dir) {
        Ok(spawned) => {
            let pids = (spawned.holder.id(), spawned.samba.id());
            *processes.lock().unwrap_or_else(|e| e.into_inner()) = Some(spawned);
            let _ = report.send(Ok(pids));
        }
        Err(e) => {
            let _ = report.send(Err(e));
            return;
        }
    }
    // Blocks until the SambaDc is dropped: its Sender closes.
    let _ = stopped.recv();
    if let Some(mut p) = processes.lock().unwrap_or_else(|e| e.into_inner()).take() {
        let _ = p.samba.kill();
        let _ = p.samba.wait();
        let _ = p.holder.kill();
        let _ = p.holder.wait();
    }
}

/// A command whose process gets SIGKILL when the spawning thread ends.
fn dies_with_this_thread(cmd: &mut Command) -> &mut Command {
    // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches no
    // memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
                .map_err(std::io::Error::from)
        })
    }
}

/// `nsenter` into the namespaces of `pid` (network and mount), running
/// `program` in `wd`. `env -C` changes directory inside the mount
/// namespace: nsenter's own `--wd` keeps a directory of the old one, and a
/// rename from there to an absolute path fails with EXDEV.
fn nsenter(pid: u32, wd: &Path, program: &std::ffi::OsStr) -> Command {
    let mut cmd = Command::new(&tools().nsenter);
    cmd.arg("-t")
        .arg(pid.to_string())
        .args(["-n", "-m", "--"])
        .arg(&tools().env)
        .arg("-C")
        .arg(wd)
        .arg("--")
        .arg(program);
    cmd
}

/// The host names inside the namespaces: the DC's (its certificate's CN)
/// and the domain's (referrals name it) are 127.0.0.1 there.
fn hosts_file() -> String {
    let dc = format!("{HOST_NAME}.test.lan").to_lowercase();
    format!("127.0.0.1\tlocalhost\n::1\tlocalhost\n127.0.0.1\t{dc} dc1 test.lan\n")
}

fn spawn_processes(dir: &Path) -> Result<Processes, String> {
    let tools = tools();
    let hosts = dir.join("hosts");
    fs::write(&hosts, hosts_file()).map_err(|e| format!("hosts: {e}"))?;
    // A network namespace, and a mount namespace whose /etc/hosts is ours
    // (private: the machine's mounts do not change).
    let mut holder = dies_with_this_thread(
        Command::new(&tools.unshare)
            .args(["-n", "-m", "--propagation", "private", "--"])
            .arg(&tools.sh)
            .arg("-c")
            .arg(r#""$1" --bind "$2" /etc/hosts && exec "$3" infinity"#)
            .arg("sh")
            .arg(&tools.mount)
            .arg(&hosts)
            .arg(&tools.sleep)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    )
    .spawn()
    .map_err(|e| format!("unshare -n -m: {e}"))?;
    let stop_holder = |holder: &mut Child, why: String| {
        let _ = holder.kill();
        let _ = holder.wait();
        why
    };
    // nsenter before unshare(2) has run would enter our own namespace, and
    // Samba would take the machine's ports: wait until the holder runs
    // sleep (after the mount) in a namespace of its own.
    let ours = fs::read_link("/proc/self/ns/net").map_err(|e| format!("/proc/self/ns/net: {e}"))?;
    let sleep = fs::canonicalize(&tools.sleep).map_err(|e| format!("sleep: {e}"))?;
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Ok(Some(status)) = holder.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = holder.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            return Err(format!(
                "`unshare -n -m` exited ({status}): {err}(namespaces need root)"
            ));
        }
        let pid = holder.id();
        let theirs = fs::read_link(format!("/proc/{pid}/ns/net"));
        let exe = fs::read_link(format!("/proc/{pid}/exe"));
        match (theirs, exe) {
            (Ok(theirs), Ok(exe)) if theirs != ours && exe == sleep => break,
            _ if Instant::now() > deadline => {
                return Err(stop_holder(
                    &mut holder,
                    "the namespace holder did not get its namespaces in time".to_owned(),
                ))
            }
            _ => std::thread::sleep(POLL),
        }
    }
    let pid = holder.id();
    let lo = nsenter(pid, dir, tools.ip.as_os_str())
        .args(["link", "set", "lo", "up"])
        .output();
    match lo {
        Ok(out) if out.status.success() => {}
        Ok(out) => {
            return Err(stop_holder(
                &mut holder,
                format!(
                    "ip link set lo up failed ({}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                ),
            ))
        }
        Err(e) => return Err(stop_holder(&mut holder, format!("nsenter: {e}"))),
    }

    let log = File::create(dir.join("samba.log")).map_err(|e| format!("samba.log: {e}"))?;
    let log2 = log.try_clone().map_err(|e| format!("samba.log: {e}"))?;
    let samba = dies_with_this_thread(
        nsenter(pid, dir, tools.samba.as_os_str())
            // -i: foreground, log to stdout, and stop when stdin (a pipe) closes.
            .args(["-i", "-M", "single", "--debug-stdout", "-d", "1"])
            .arg(format!("--maximum-runtime={MAXIMUM_RUNTIME_SECS}"))
            .arg("-s")
            .arg(smb_conf_path(dir))
            .stdin(Stdio::piped())
            .stdout(log)
            .stderr(log2),
    )
    .spawn();
    let mut samba = match samba {
        Ok(s) => s,
        Err(e) => return Err(stop_holder(&mut holder, format!("samba: {e}"))),
    };
    let Some(stdin) = samba.stdin.take() else {
        let _ = samba.kill();
        let _ = samba.wait();
        return Err(stop_holder(&mut holder, "samba: no stdin pipe".to_owned()));
    };
    Ok(Processes {
        holder,
        samba,
        _samba_stdin: stdin,
    })
}

/// The temp directories of DCs start with this.
const DIR_PREFIX: &str = "dirsync-samba-";
/// In each: the pid and start time of the test process that made it.
const OWNER_FILE: &str = "owner";

/// This process as `PID STARTTIME` (the start time tells a pid taken again).
fn this_process() -> String {
    let pid = std::process::id();
    format!("{pid} {}", start_time(pid).unwrap_or_default())
}

/// Field 22 of /proc/PID/stat, when the process is alive (not a zombie).
fn start_time(pid: u32) -> Option<String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (the state), so field 22 is fields[19].
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(19).map(|s| (*s).to_owned())
}

/// Removes what DCs of test processes that have ended left: the DC that
/// `shared()` keeps in a static is never dropped, so its directory outlives
/// the process (its processes do not: PR_SET_PDEATHSIG). A directory whose
/// owner still runs (a concurrent `cargo test`) is left alone.
fn remove_stale_dirs() {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(DIR_PREFIX) {
            continue;
        }
        let path = entry.path();
        let stale = match fs::read_to_string(path.join(OWNER_FILE)) {
            Ok(owner) => {
                let mut parts = owner.split_whitespace();
                let pid = parts.next().and_then(|p| p.parse::<u32>().ok());
                let started = parts.next().map(str::to_owned);
                pid.is_none_or(|pid| start_time(pid) != started)
            }
            // No owner yet: being made right now, or left long ago.
            Err(_) => entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > Duration::from_secs(3600)),
        };
        if stale {
            let _ = fs::remove_dir_all(&path);
        }
    }
}

fn smb_conf_path(dir: &Path) -> PathBuf {
    dir.join("etc/smb.conf")
}

/// The DER of the first certificate in a PEM file.
fn cert_der(path: &Path) -> Result<Vec<u8>, String> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::CertificateDer;
    CertificateDer::from_pem_file(path)
        .map(|c| c.as_ref().to_vec())
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// SHA-256 (ring's, through rustls) as lowercase hex.
pub fn sha256_hex(data: &[u8]) -> String {
    let suite = rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256;
    let hash = suite
        .tls13()
        .expect("a TLS 1.3 suite")
        .common
        .hash_provider
        .hash(data);
    hash.as_ref().iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Runs `cmd` with stdout and stderr in temp files (no pipe to fill), or
/// kills it at the deadline.
fn output_within(cmd: &mut Command, deadline: Duration) -> Result<Output, String> {
    let files = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    let out_path = files.path().join("stdout");
    let err_path = files.path().join("stderr");
    let out = File::create(&out_path).map_err(|e| e.to_string())?;
    let err = File::create(&err_path).map_err(|e| e.to_string())?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    let until = Instant::now() + deadline;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() > until => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{cmd:?} did not finish within {deadline:?}; stderr:\n{}",
                    fs::read_to_string(&err_path).unwrap_or_default()
                ));
            }
            Ok(None) => std::thread::sleep(POLL),
            Err(e) => return Err(format!("{cmd:?}: {e}")),
        }
    };
    Ok(Output {
        status,
        stdout: fs::read(&out_path).unwrap_or_default(),
        stderr: fs::read(&err_path).unwrap_or_default(),
    })
}

/// Runs a command to its end; an error with its output when it fails.
fn run_checked(cmd: &mut Command, deadline: Duration) -> Result<Output, String> {
    let out = output_within(cmd, deadline)?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(out)
}

/// One run of the dirsync binary.
pub struct DirsyncRun {
    pub output: Output,
    /// Where it ran (config, emulator state), removed on drop.
    _dir: tempfile::TempDir,
}

impl DirsyncRun {
    pub fn code(&self) -> Option<i32> {
        self.output.status.code()
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    /// stdout as JSON (`--output json`); panics with both streams otherwise.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.output.stdout).unwrap_or_else(|e| {
            panic!(
                "dirsync printed no JSON ({e}; exit {:?}):\nstdout:\n{}\nstderr:\n{}",
                self.code(),
                self.stdout(),
                self.stderr()
            )
        })
    }
}

// ---------------------------------------------------------------------------
// Tests of the harness (ldapsearch and friends only)

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Entries in ldapsearch output (`dn:` or base64 `dn::` lines).
fn entries(out: &Output) -> usize {
    stdout(out).lines().filter(|l| l.starts_with("dn:")).count()
}

/// Values of `attr` (exactly that description, options included) in ldapsearch output.
fn values(out: &Output, attr: &str) -> usize {
    let text = format!("{attr}:");
    stdout(out).lines().filter(|l| l.starts_with(&text)).count()
}

#[test]
fn the_shared_dc_serves_the_fixture_inside_its_own_network_namespace() {
    let dc = SambaDc::shared();
    let t = dc.timings();
    println!(
        "Samba AD DC: provision {:?}, load of {} bulk users {:?}, start to ready {:?}, total {:?}",
        t.provision,
        dc.bulk_users(),
        t.load,
        t.start_to_ready,
        t.total
    );
    // Samba is in another network namespace than this process.
    let ours = fs::read_link("/proc/self/ns/net").unwrap();
    let samba = fs::read_link(format!("/proc/{}/ns/net", dc.samba_pid())).unwrap();
    assert_ne!(ours, samba, "samba runs in the test's own namespace");

    let admin = dc.admin_bind();
    let reader = dc.reader_bind();
    assert_eq!(dc.base_dn(), BASE_DN);
    let dse = dc.ldapsearch(
        &dc.ldap_url(),
        ("", ""),
        &[
            "-b",
            "",
            "-s",
            "base",
            "(objectClass=*)",
            "defaultNamingContext",
            "dnsHostName",
        ],
    );
    assert!(dse.status.success(), "{}", stderr(&dse));
    assert!(
        stdout(&dse).contains("defaultNamingContext: DC=test,DC=lan"),
        "{}",
        stdout(&dse)
    );

    // The service account binds and reads; the counts the tests rely on.
    let search = |base: &str, filter: &str, attrs: &[&str]| {
        let mut args = vec!["-E", "pr=1000/noprompt", "-b", base, filter];
        args.extend_from_slice(attrs);
        let out = dc.ldapsearch(&dc.ldap_url(), reader, &args);
        assert!(out.status.success(), "{filter}: {}", stderr(&out));
        out
    };
    assert_eq!(
        entries(&search(CUSTOMERS_BASE, PERSON_FILTER, &["1.1"])),
        CUSTOMER_PERSONS
    );
    let disabled = format!("(&{PERSON_FILTER}(userAccountControl:1.2.840.113556.1.4.803:=2))");
    assert_eq!(
        entries(&search(CUSTOMERS_BASE, &disabled, &["1.1"])),
        CUSTOMER_PERSONS_DISABLED
    );
    let ous = search(CUSTOMERS_BASE, "(objectClass=organizationalUnit)", &["ou"]);
    for customer in CUSTOMERS {
        assert!(
            stdout(&ous).contains(&format!("dn: OU={customer},{CUSTOMERS_BASE}")),
            "{}",
            stdout(&ous)
        );
    }
    // The computer is a user, not a person.
    assert_eq!(
        entries(&search(CUSTOMERS_BASE, "(objectClass=user)", &["1.1"])),
        CUSTOMER_PERSONS + 1
    );
    // Non-ASCII and an escaped comma survive.
    assert_eq!(
        entries(&search(BASE_DN, "(displayName=José Müller)", &["1.1"])),
        1
    );
    let dave = search(BASE_DN, "(sAMAccountName=dave.doe)", &["1.1"]);
    assert!(
        stdout(&dave).contains(r"dn: CN=Doe\, Dave,OU=Globex,OU=Customers,DC=test,DC=lan"),
        "{}",
        stdout(&dave)
    );

    // Samba keeps memberOf; the Acme group holds more than 1,500 members.
    let grace = search(BASE_DN, "(sAMAccountName=grace.green)", &["memberOf"]);
    assert_eq!(values(&grace, "memberOf"), 2, "{}", stdout(&grace));
    let acme = dc.ldapsearch(
        &dc.ldap_url(),
        admin,
        &[
            "-b",
            ACME_GROUP_DN,
            "-s",
            "base",
            "(objectClass=*)",
            "member;range=0-*",
        ],
    );
    assert_eq!(
        values(&acme, "member;range=0-*"),
        ACME_GROUP_MEMBERS,
        "{}",
        stderr(&acme)
    );
    let first = dc.ldapsearch(
        &dc.ldap_url(),
        admin,
        &[
            "-b",
            ACME_GROUP_DN,
            "-s",
            "base",
            "(objectClass=*)",
            "member;range=0-1499",
        ],
    );
    assert_eq!(values(&first, "member;range=0-1499"), 1500);
    let rest = dc.ldapsearch(
        &dc.ldap_url(),
        admin,
        &[
            "-b",
            ACME_GROUP_DN,
            "-s",
            "base",
            "(objectClass=*)",
            "member;range=1500-*",
        ],
    );
    assert_eq!(
        values(&rest, "member;range=1500-*"),
        ACME_GROUP_MEMBERS - 1500
    );

    // Every port answers a bind: LDAPS and both Global Catalog ports.
    for url in [dc.ldaps_url(), dc.gc_url(), dc.gcs_url()] {
        let out = dc.ldapsearch(
            &url,
            reader,
            &["-b", BASE_DN, "-s", "base", "(objectClass=*)", "1.1"],
        );
        assert!(out.status.success(), "{url}: {}", stderr(&out));
    }

    // OpenLDAP's client checks the certificate against Samba's CA and, with
    // no subjectAltName, the host name against the CN: good for
    // dc1.test.lan (which the namespace resolves), not for 127.0.0.1.
    let verified = |url: &str| {
        dc.run_in_namespace(
            Command::new(find_tool("ldapsearch"))
                .args(["-x", "-LLL", "-H", url, "-D", reader.0, "-w", reader.1])
                .args(["-b", "", "-s", "base", "(objectClass=*)", "dnsHostName"])
                .env("LDAPTLS_CACERT", dc.ca_pem_path())
                .env("LDAPTLS_REQCERT", "demand"),
        )
    };
    let by_name = verified(&dc.ldaps_host_url());
    assert!(by_name.status.success(), "{}", stderr(&by_name));
    assert!(
        stdout(&by_name)
            .to_lowercase()
            .contains(&format!("dnshostname: {}", dc.host_name())),
        "{}",
        stdout(&by_name)
    );
    let by_address = verified(&dc.ldaps_url());
    assert!(!by_address.status.success(), "{}", stdout(&by_address));

    // The certificate: CN only, no subjectAltName, and the fingerprint
    // openssl computes.
    let x509 = Command::new(find_tool("openssl"))
        .args([
            "x509",
            "-noout",
            "-subject",
            "-fingerprint",
            "-sha256",
            "-ext",
            "subjectAltName",
            "-in",
        ])
        .arg(dc.cert_pem_path())
        .output()
        .unwrap();
    let text = stdout(&x509);
    assert!(x509.status.success(), "{}", stderr(&x509));
    assert!(text.contains("CN = DC1.test.lan"), "{text}");
    assert!(!text.contains("Subject Alternative Name"), "{text}");
    assert!(
        text.contains(&format!("Fingerprint={}", dc.cert_sha256_colons())),
        "{text} vs {}",
        dc.cert_sha256()
    );
    assert_eq!(dc.cert_sha256().len(), 64);
}

#[test]
fn a_dc_stops_with_its_namespace_and_files_on_drop() {
    let dc = SambaDc::builder().bulk_users(0).start();
    let (holder, samba) = (dc.namespace_pid(), dc.samba_pid());
    let dir = dc.dir().to_owned();
    let out = dc.ldapsearch(
        &dc.ldap_url(),
        dc.reader_bind(),
        &["-b", CUSTOMERS_BASE, PERSON_FILTER, "1.1"],
    );
    assert_eq!(entries(&out), 9, "{}", stderr(&out));
    assert_eq!(
        fs::read_link(format!("/proc/{holder}/ns/net")).unwrap(),
        fs::read_link(format!("/proc/{samba}/ns/net")).unwrap(),
        "samba runs in the holder's namespace"
    );
    drop(dc);
    for pid in [holder, samba] {
        // Killed and reaped by the keeper: not even a zombie is left (a
        // pid taken again since is another program).
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        assert!(
            !cmdline.contains("samba") && !cmdline.contains("sleep"),
            "process {pid} is still there: {cmdline}"
        );
    }
    assert!(!dir.exists(), "temp dir left behind");
}

#[test]
fn directories_of_ended_test_processes_are_removed_and_live_ones_kept() {
    let tmp = std::env::temp_dir();
    let make = |owner: &str| {
        let dir = tempfile::Builder::new()
            .prefix(&format!("{DIR_PREFIX}harness-test-"))
            .tempdir_in(&tmp)
            .unwrap()
            .keep();
        fs::write(dir.join(OWNER_FILE), owner).unwrap();
        dir
    };
    let ended = make("4194304999 1"); // no such pid
    let reused = make(&format!("{} 1", std::process::id())); // our pid, another start
    let live = make(&this_process());
    remove_stale_dirs();
    assert!(!ended.exists() && !reused.exists());
    assert!(live.exists(), "the directory of a running test process");
    fs::remove_dir_all(live).unwrap();
}
