//! A real OpenLDAP server (Debian's `slapd`) for the LDAP source's tests, and
//! the tests of that harness (with the OpenLDAP command-line tools only).
//!
//! Each [`Slapd`] has its own temp directory: a `slapd.conf` converted to
//! `slapd.d` (cn=config) by `slaptest`, an MDB database, the ppolicy overlay
//! (so `pwdAccountLockedTime` exists), the memberof overlay (each member of
//! a groupOfNames gets `memberOf`, as Active Directory keeps it, when the
//! group is added or changed over LDAP: not with `slapadd`), optional TLS
//! files made at test time, and slapd in the foreground on free loopback
//! ports, killed in `Drop`.
//!
//! ```ignore
//! let ldap = Slapd::builder().size_limit(1000).tls().start();
//! ldap.load_base(); // tests/data/ldap/base.ldif
//! ldap.add_users(2500); // bulk users under ou=people
//! // ldap.url(), ldap.ldaps_url(), ldap.ca_file(), ldap.reader_dn(), ...
//! ```
//!
//! The rootdn (`bind_dn()`) is never subject to size or time limits: to see
//! them, bind as the service account from base.ldif (`reader_dn()`).
//! Anonymous clients may read the root DSE and the schema, not the data.
//! Set `DIRSYNC_SLAPD_DEBUG` (a `slapd -d` level such as `stats`) to get more
//! in the server log that failure messages quote.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const BASE_DN: &str = "dc=example,dc=com";
/// The password of both rootdns: ROOT_DN and CONFIG_ROOT_DN.
pub const ROOT_PASSWORD: &str = "admin-secret-7c1e";
pub const ROOT_DN: &str = "cn=admin,dc=example,dc=com";
pub const CONFIG_ROOT_DN: &str = "cn=admin,cn=config";
/// The service account in base.ldif: what dirsync binds as.
pub const READER_DN: &str = "cn=dirsync,ou=services,dc=example,dc=com";
pub const READER_PASSWORD: &str = "dirsync-reader-pw";
/// The customer keys of base.ldif (and of the bulk users' departmentNumber).
pub const CUSTOMERS: [&str; 3] = ["Acme", "Globex", "Initech"];
/// inetOrgPerson entries in base.ldif.
pub const BASE_USERS: usize = 12;

const SCHEMA_DIR: &str = "/etc/ldap/schema";
const MODULE_DIR: &str = "/usr/lib/ldap";
const SCHEMAS: [&str; 4] = ["core", "cosine", "inetorgperson", "nis"];
const DEFAULT_POLICY_DN: &str = "cn=default,ou=policies,dc=example,dc=com";
/// How long slapd may take to answer (start) or to exit (stop).
const DEADLINE: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(10);

/// A file under tests/data/ldap/.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/ldap")
        .join(name)
}

// ---------------------------------------------------------------------------
// The OpenLDAP programs

struct Tools {
    slapd: PathBuf,
    slaptest: PathBuf,
    slapadd: PathBuf,
}

/// The server programs; panics (never skips) when they are missing.
fn tools() -> &'static Tools {
    static TOOLS: OnceLock<Tools> = OnceLock::new();
    TOOLS.get_or_init(|| {
        for dir in [SCHEMA_DIR, MODULE_DIR] {
            if !Path::new(dir).is_dir() {
                missing(dir);
            }
        }
        // The client tools too: a missing ldap-utils fails every test at its
        // start, not half-way through.
        for tool in ["ldapadd", "ldapsearch", "ldapmodify", "ldapwhoami"] {
            find_tool(tool);
        }
        Tools {
            slapd: find_tool("slapd"),
            slaptest: find_tool("slaptest"),
            slapadd: find_tool("slapadd"),
        }
    })
}

/// `/usr/sbin/NAME`, `/usr/bin/NAME` or NAME on the PATH.
fn find_tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    [PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")]
        .into_iter()
        .chain(std::env::split_paths(&path))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| missing(name))
}

fn missing(what: &str) -> ! {
    let ci = if std::env::var("CI").is_ok_and(|v| v == "true") {
        " (CI=true: the LDAP tests fail, they are never skipped)"
    } else {
        ""
    };
    panic!(
        "the LDAP tests need OpenLDAP's slapd and client tools, and `{what}` is missing \
         (looked in /usr/sbin, /usr/bin and PATH){ci}. `bash tests/run.sh` installs them; \
         by hand: `sudo apt-get install slapd ldap-utils` (Debian/Ubuntu)."
    )
}

// ---------------------------------------------------------------------------
// TLS material

/// A CA made at test time and the PEM of its certificate.
pub struct TestCa {
    pub cert_pem: String,
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        TestCa {
            cert_pem: cert.pem(),
            cert,
            key,
        }
    }

    /// A server certificate for localhost and 127.0.0.1: (certificate PEM,
    /// PKCS#8 key PEM, which GnuTLS reads).
    pub fn server_cert(&self) -> (String, String) {
        self.server_cert_for(&["localhost".to_owned(), "127.0.0.1".to_owned()])
    }

    /// A server certificate for `names` (CN=localhost; no subjectAltName
    /// at all when `names` is empty).
    pub fn server_cert_for(&self, names: &[String]) -> (String, String) {
        use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair};
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(names.to_vec()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

// ---------------------------------------------------------------------------
// The server

/// Options; `start()` makes the server.
#[derive(Clone, Debug, Default)]
pub struct SlapdBuilder {
    size_limit: Option<u32>,
    max_page_size: Option<u32>,
    time_limit: Option<u32>,
    tls: bool,
    /// Most entries a paged search may return in all.
    paged_total_limit: Option<u32>,
    /// Names in the server certificate (default: localhost and 127.0.0.1).
    tls_names: Option<Vec<String>>,
    /// A server certificate naming the host in its CN only, with no
    /// subjectAltName (like Samba's own).
    tls_cn_only: bool,
    /// slapd's default referral: what a search outside every suffix answers.
    default_referral: Option<String>,
}

impl SlapdBuilder {
    /// Like Active Directory's MaxPageSize: a search (by anyone but the
    /// rootdn) returning more entries ends with sizeLimitExceeded (4) after
    /// `n` entries; a paged search may return any total. Unset: unlimited.
    pub fn size_limit(mut self, n: u32) -> Self {
        self.size_limit = Some(n);
        self
    }

    /// Largest page a paged search may ask for; a bigger one is refused with
    /// adminLimitExceeded (11) (AD would serve smaller pages instead).
    /// Unset: any page size.
    pub fn max_page_size(mut self, n: u32) -> Self {
        self.max_page_size = Some(n);
        self
    }

    /// Most entries a search may return in all, paged or not (by anyone but
    /// the rootdn): past it, sizeLimitExceeded (4).
    pub fn paged_total_limit(mut self, n: u32) -> Self {
        self.paged_total_limit = Some(n);
        self
    }

    /// Seconds a search (by anyone but the rootdn) may take; slapd's default
    /// is 3600.
    pub fn time_limit(mut self, seconds: u32) -> Self {
        self.time_limit = Some(seconds);
        self
    }

    /// StartTLS on `url()` and LDAPS on `ldaps_url()`, with a certificate
    /// for localhost and 127.0.0.1 from a fresh CA (`ca_file()`).
    pub fn tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// Like `tls()`, with a certificate naming only `names` (to test host
    /// name verification).
    pub fn tls_for(mut self, names: &[&str]) -> Self {
        self.tls = true;
        self.tls_names = Some(names.iter().map(|n| (*n).to_owned()).collect());
        self
    }

    /// Like `tls()`, with a certificate for CN=localhost and no
    /// subjectAltName at all (like Samba's own, or older AD CS templates):
    /// rustls, which reads names from the subjectAltName only, accepts it
    /// for no host name.
    pub fn tls_cn_only(mut self) -> Self {
        self.tls = true;
        self.tls_cn_only = true;
        self
    }

    /// A search whose base is outside the server's suffix answers a
    /// referral result (10) to `url` (slapd's `referral` directive).
    pub fn default_referral(mut self, url: &str) -> Self {
        self.default_referral = Some(url.to_owned());
        self
    }

    pub fn start(self) -> Slapd {
        Slapd::start_with(self)
    }
}

/// A running slapd; stopped (killed) and its files removed on drop.
pub struct Slapd {
    dir: tempfile::TempDir,
    child: Option<Child>,
    port: u16,
    tls_port: Option<u16>,
    ca_file: Option<PathBuf>,
}

impl Slapd {
    pub fn builder() -> SlapdBuilder {
        SlapdBuilder::default()
    }

    /// No limits, no TLS.
    pub fn start() -> Slapd {
        Slapd::builder().start()
    }

    fn start_with(options: SlapdBuilder) -> Slapd {
        let tools = tools();
        let dir = tempfile::Builder::new()
            .prefix("dirsync-slapd-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        fs::create_dir(d.join("db")).unwrap();
        fs::create_dir(d.join("slapd.d")).unwrap();
        let ca_file = options.tls.then(|| {
            let ca = TestCa::new("dirsync slapd test CA");
            let (cert, key) = match &options.tls_names {
                _ if options.tls_cn_only => ca.server_cert_for(&[]),
                Some(names) => ca.server_cert_for(names),
                None => ca.server_cert(),
            };
            fs::write(d.join("ca.pem"), &ca.cert_pem).unwrap();
            fs::write(d.join("server.pem"), cert).unwrap();
            fs::write(d.join("server.key"), key).unwrap();
            d.join("ca.pem")
        });
        fs::write(d.join("slapd.conf"), slapd_conf(d, &options)).unwrap();
        // `-n 0`: convert and check the config database only; without it
        // slaptest opens the (not yet created) MDB database read-only and fails.
        run(Command::new(&tools.slaptest)
            .arg("-f")
            .arg(d.join("slapd.conf"))
            .arg("-F")
            .arg(d.join("slapd.d"))
            .args(["-n", "0", "-Q"]));

        let mut slapd = Slapd {
            dir,
            child: None,
            port: 0,
            tls_port: None,
            ca_file,
        };
        // A free port can be taken between our probe and slapd's bind.
        for attempt in 1.. {
            slapd.port = free_port();
            slapd.tls_port = options.tls.then(free_port);
            match slapd.spawn() {
                Ok(()) => break,
                Err(log) if attempt < 5 && log.contains("Address already in use") => continue,
                Err(log) => panic!("slapd did not start:\n{log}"),
            }
        }
        slapd
    }

    /// Starts slapd on the chosen ports and waits until it answers.
    fn spawn(&mut self) -> Result<(), String> {
        let d = self.dir.path();
        let mut urls = format!("ldap://127.0.0.1:{}/", self.port);
        if let Some(p) = self.tls_port {
            write!(urls, " ldaps://127.0.0.1:{p}/").unwrap();
        }
        let log = File::options()
            .create(true)
            .append(true)
            .open(d.join("slapd.log"))
            .unwrap();
        let debug = std::env::var("DIRSYNC_SLAPD_DEBUG").unwrap_or_else(|_| "none".to_owned());
        // `-d` keeps slapd in the foreground; level `none` still logs errors
        // (`-d 0` logs nothing at all, not even why it stopped).
        let mut child = Command::new(&tools().slapd)
            .arg("-F")
            .arg(d.join("slapd.d"))
            .args(["-h", &urls, "-d", &debug])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("slapd runs");
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return Err(format!("slapd exited ({status}); log:\n{}", self.log()));
            }
            // The pid file tells our slapd from another one that took the
            // port first (then ours is about to exit: "Address already in use").
            if self.pid_file() == Some(child.id()) && self.answers() {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "slapd did not answer on {urls} within {DEADLINE:?}; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// What slapd wrote to its pid file (once it has started up).
    fn pid_file(&self) -> Option<u32> {
        let text = fs::read_to_string(self.dir.path().join("slapd.pid")).ok()?;
        text.trim().parse().ok()
    }

    /// The root DSE can be read (anonymously) and the LDAPS port is open.
    fn answers(&self) -> bool {
        let ok = self
            .tool("ldapsearch")
            .args(["-x", "-H", &self.url(), "-b", "", "-s", "base"])
            .args(["-o", "nettimeout=2", "1.1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success();
        ok && self
            .tls_port
            .is_none_or(|p| TcpStream::connect(("127.0.0.1", p)).is_ok())
    }

    /// Stops slapd (SIGTERM, waiting for it to exit), keeping its files.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // std has no SIGTERM; without kill(1) (procps), SIGKILL is safe too:
        // MDB survives it and slapd wrote nothing outside the page cache.
        let term = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        if !term.is_ok_and(|s| s.success()) {
            let _ = child.kill();
        }
        let deadline = Instant::now() + DEADLINE;
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(POLL);
        }
        let _ = child.wait();
    }

    /// Starts a stopped slapd again, on the same ports.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn()
            .unwrap_or_else(|log| panic!("slapd did not restart:\n{log}"));
    }

    /// `ldap://127.0.0.1:PORT` (StartTLS there too with `tls()`).
    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    /// `ldaps://127.0.0.1:PORT2`; the server needs `tls()`.
    pub fn ldaps_url(&self) -> String {
        let port = self
            .tls_port
            .expect("ldaps_url() needs Slapd::builder().tls()");
        format!("ldaps://127.0.0.1:{port}")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The PEM file of the CA that signed the server's certificate; the
    /// server needs `tls()`.
    pub fn ca_file(&self) -> &Path {
        self.ca_file
            .as_deref()
            .expect("ca_file() needs Slapd::builder().tls()")
    }

    pub fn base_dn(&self) -> &'static str {
        BASE_DN
    }

    /// The rootdn: may do anything, and no limit applies to it.
    pub fn bind_dn(&self) -> &'static str {
        ROOT_DN
    }

    pub fn bind_password(&self) -> &'static str {
        ROOT_PASSWORD
    }

    /// The service account of base.ldif (exists after `load_base()`); size
    /// and time limits apply to it.
    pub fn reader_dn(&self) -> &'static str {
        READER_DN
    }

    pub fn reader_password(&self) -> &'static str {
        READER_PASSWORD
    }

    /// SHA-256 of the server certificate's DER, as `openssl x509
    /// -fingerprint -sha256` prints it (`AB:CD:...`); the server needs `tls()`.
    pub fn cert_sha256(&self) -> String {
        use rustls::pki_types::pem::PemObject as _;
        use rustls::pki_types::CertificateDer;
        let der = CertificateDer::from_pem_file(self.dir.path().join("server.pem"))
            .expect("cert_sha256() needs Slapd::builder().tls()");
        dirsync::source::ldap::colon_hex(&dirsync::source::ldap::sha256(der.as_ref()).unwrap())
    }

    /// The server's directory (slapd.conf, slapd.d, db, slapd.log, PEM files).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// What slapd wrote to stderr (errors; more with DIRSYNC_SLAPD_DEBUG).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("slapd.log")).unwrap_or_default()
    }

    /// An OpenLDAP client tool (`ldapsearch`, `ldapmodify`, ...) set up to
    /// trust this server's CA (LDAPTLS_CACERT) and to check certificates
    /// whatever ldap.conf says; add the URL, bind and arguments.
    pub fn tool(&self, name: &str) -> Command {
        let mut cmd = Command::new(find_tool(name));
        cmd.env("LDAPTLS_REQCERT", "demand");
        if let Some(ca) = &self.ca_file {
            cmd.env("LDAPTLS_CACERT", ca);
        }
        cmd
    }

    /// `ldapsearch -x -LLL -o ldif-wrap=no -H url -D dn -w password ARGS`;
    /// the exit status is the LDAP result code (4: size limit exceeded).
    pub fn ldapsearch(&self, url: &str, (dn, password): (&str, &str), args: &[&str]) -> Output {
        self.tool("ldapsearch")
            .args(["-x", "-LLL", "-o", "ldif-wrap=no", "-H", url])
            .args(["-D", dn, "-w", password])
            .args(args)
            .output()
            .expect("ldapsearch runs")
    }

    /// Adds the records of an LDIF file with `ldapadd` as the rootdn (so
    /// `changetype: add` records work); panics on the first error.
    pub fn load_ldif(&self, path: &Path) {
        let out = self
            .tool("ldapadd")
            .args(["-x", "-H", &self.url(), "-D", ROOT_DN, "-w", ROOT_PASSWORD])
            .arg("-f")
            .arg(path)
            .output()
            .expect("ldapadd runs");
        if !out.status.success() {
            panic!(
                "ldapadd -f {} failed ({}):\n{}{}",
                path.display(),
                out.status,
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .last()
                    .unwrap_or_default(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    /// `load_ldif` for LDIF text.
    pub fn load_ldif_str(&self, ldif: &str) {
        let path = self.scratch_file("ldif");
        fs::write(&path, ldif).unwrap();
        self.load_ldif(&path);
    }

    /// tests/data/ldap/base.ldif: the customers, users, groups, the password
    /// policy and the service account.
    pub fn load_base(&self) {
        self.load_ldif(&fixture("base.ldif"));
    }

    /// Adds `count` users (see [`bulk_users_ldif`]) with one `ldapadd`;
    /// needs `load_base()` first. About 0.5 s for 2,500.
    pub fn add_users(&self, count: usize) {
        self.load_ldif_str(&bulk_users_ldif(0, count));
    }

    /// Loads LDIF (plain entries, no `changetype`) with `slapadd -q` while
    /// slapd is stopped, then starts it again on the same ports: the way to
    /// load 100,000 entries. Parents must exist (in the file or already).
    pub fn slapadd_ldif(&mut self, path: &Path) {
        self.stop();
        run(Command::new(&tools().slapadd)
            .arg("-F")
            .arg(self.dir.path().join("slapd.d"))
            .args(["-b", BASE_DN, "-q", "-l"])
            .arg(path));
        self.restart();
    }

    fn scratch_file(&self, ext: &str) -> PathBuf {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        self.dir.path().join(format!("scratch-{n}.{ext}"))
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `count` inetOrgPerson entries `uid=userNNNNNN,ou=people,dc=example,dc=com`
/// numbered from `first`: cn "User N", mail userN@<customer>.example,
/// employeeNumber BNNNNNN, departmentNumber Acme/Globex/Initech in turn.
/// Plain entries: good for `ldapadd` and for `slapadd`.
pub fn bulk_users_ldif(first: usize, count: usize) -> String {
    let mut ldif = String::with_capacity(count * 260);
    for i in first..first + count {
        let customer = CUSTOMERS[i % CUSTOMERS.len()];
        writeln!(
            ldif,
            "dn: uid=user{i:06},ou=people,{BASE_DN}\n\
             objectClass: inetOrgPerson\n\
             uid: user{i:06}\n\
             cn: User {i}\n\
             sn: User\n\
             givenName: Bulk\n\
             mail: user{i:06}@{domain}.example\n\
             employeeNumber: B{i:06}\n\
             departmentNumber: {customer}\n",
            domain = customer.to_lowercase(),
        )
        .unwrap();
    }
    ldif
}

fn slapd_conf(dir: &Path, o: &SlapdBuilder) -> String {
    let d = dir.display();
    let mut conf = String::from("# Made by tests/it/slapd.rs.\n");
    for schema in SCHEMAS {
        writeln!(conf, "include {SCHEMA_DIR}/{schema}.schema").unwrap();
    }
    // ppolicy's schema (pwdPolicy, pwdAccountLockedTime) is built into the
    // module in OpenLDAP 2.5: there is no ppolicy.schema to include.
    writeln!(
        conf,
        "modulepath {MODULE_DIR}\n\
         moduleload back_mdb\n\
         moduleload ppolicy\n\
         moduleload memberof\n\
         pidfile {d}/slapd.pid\n\
         argsfile {d}/slapd.args"
    )
    .unwrap();
    if let Some(url) = &o.default_referral {
        writeln!(conf, "referral {url}").unwrap();
    }
    if o.tls {
        writeln!(
            conf,
            "TLSCACertificateFile {d}/ca.pem\n\
             TLSCertificateFile {d}/server.pem\n\
             TLSCertificateKeyFile {d}/server.key\n\
             TLSVerifyClient never"
        )
        .unwrap();
    }
    writeln!(
        conf,
        "\ndatabase config\n\
         rootdn \"{CONFIG_ROOT_DN}\"\n\
         rootpw {ROOT_PASSWORD}\n\
         \n\
         database mdb\n\
         maxsize 4294967296\n\
         suffix \"{BASE_DN}\"\n\
         rootdn \"{ROOT_DN}\"\n\
         rootpw {ROOT_PASSWORD}\n\
         directory {d}/db\n\
         dbnosync\n\
         index objectClass eq\n\
         index uid,mail,employeeNumber,departmentNumber,member eq\n\
         access to attrs=userPassword\n  by self write\n  by anonymous auth\n  by * none\n\
         access to *\n  by users read\n  by * none"
    )
    .unwrap();
    let mut limits = match (o.size_limit, o.paged_total_limit) {
        // prtotal: what a paged search may return in all (by default, any total).
        (Some(n), None) => format!("size.soft={n} size.hard={n} size.prtotal=unlimited"),
        (Some(n), Some(t)) => format!("size.soft={n} size.hard={n} size.prtotal={t}"),
        (None, Some(t)) => format!("size.soft={t} size.hard={t} size.prtotal={t}"),
        (None, None) => "size.soft=unlimited size.hard=unlimited".to_owned(),
    };
    if let Some(n) = o.max_page_size {
        write!(limits, " size.pr={n}").unwrap();
    }
    if let Some(t) = o.time_limit {
        write!(limits, " time.soft={t} time.hard={t}").unwrap();
    }
    writeln!(
        conf,
        "limits * {limits}\n\
         overlay ppolicy\n\
         ppolicy_default \"{DEFAULT_POLICY_DN}\"\n\
         overlay memberof"
    )
    .unwrap();
    conf
}

/// A port nobody listens on now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs a command to the end; panics with its output when it fails.
fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{cmd:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
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

fn code(out: &Output) -> Option<i32> {
    out.status.code()
}

#[test]
fn slapd_starts_answers_and_stops_on_drop() {
    let ldap = Slapd::builder().size_limit(50).time_limit(7).start();
    let root = (ldap.bind_dn(), ldap.bind_password());
    let dse = ldap.ldapsearch(
        &ldap.url(),
        ("", ""),
        &["-b", "", "-s", "base", "namingContexts", "supportedControl"],
    );
    assert!(dse.status.success(), "{}", stderr(&dse));
    let dse = stdout(&dse);
    assert!(dse.contains("namingContexts: dc=example,dc=com"), "{dse}");
    assert!(
        dse.contains("supportedControl: 1.2.840.113556.1.4.319"),
        "paged results: {dse}"
    );

    // ppolicy's schema is there.
    let schema = ldap.ldapsearch(
        &ldap.url(),
        root,
        &["-b", "cn=Subschema", "-s", "base", "attributeTypes"],
    );
    assert!(
        stdout(&schema).contains("NAME 'pwdAccountLockedTime'"),
        "{}",
        stderr(&schema)
    );

    // The limits as slapd took them (cn=config, readable by its rootdn).
    let config = ldap.ldapsearch(
        &ldap.url(),
        (CONFIG_ROOT_DN, ROOT_PASSWORD),
        &[
            "-b",
            "cn=config",
            "(olcSuffix=dc=example,dc=com)",
            "olcLimits",
        ],
    );
    let config = stdout(&config);
    for limit in [
        "size.soft=50",
        "size.hard=50",
        "size.prtotal=unlimited",
        "time.soft=7",
    ] {
        assert!(config.contains(limit), "{limit} in {config}");
    }

    let port = ldap.port();
    let dir = ldap.dir().to_owned();
    drop(ldap);
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "slapd still listens"
    );
    assert!(!dir.exists(), "temp dir left behind");
}

#[test]
fn base_fixture_loads() {
    let ldap = Slapd::start();
    ldap.load_base();
    let url = ldap.url();
    let reader = (ldap.reader_dn(), ldap.reader_password());
    let search = |filter: &str, attrs: &[&str]| {
        let mut args = vec!["-b", ldap.base_dn(), filter];
        args.extend_from_slice(attrs);
        let out = ldap.ldapsearch(&url, reader, &args);
        assert!(out.status.success(), "{filter}: {}", stderr(&out));
        out
    };

    let people = search("(objectClass=inetOrgPerson)", &["1.1"]);
    assert_eq!(entries(&people), BASE_USERS, "{}", stdout(&people));
    assert_eq!(entries(&search("(objectClass=groupOfNames)", &["1.1"])), 3);
    let customers = search("(objectClass=organizationalUnit)", &["1.1"]);
    for ou in CUSTOMERS {
        assert!(
            stdout(&customers).contains(&format!("dn: ou={ou},ou=customers,{BASE_DN}")),
            "{}",
            stdout(&customers)
        );
    }

    // Spaces after the commas are gone from DNs, not from values.
    let bob = stdout(&search("(uid=bob.baker)", &["cn"]));
    assert!(
        bob.contains("dn: uid=bob.baker,ou=Acme,ou=customers,dc=example,dc=com"),
        "{bob}"
    );
    assert!(
        bob.contains("cn:: Qm9iIEJha2VyICA="),
        "cn \"Bob Baker  \": {bob}"
    );
    // Member DNs keep their case.
    let acme = stdout(&search("(cn=Acme)", &["member"]));
    assert!(
        acme.contains("member: uid=Frank.Foster,ou=People,dc=example,dc=com"),
        "{acme}"
    );

    // The memberof overlay: each member of a group has its memberOf, in
    // the group DN's own spelling (a member DN written in another case and
    // spacing too); judy.jones is in two groups.
    let frank = stdout(&search("(uid=frank.foster)", &["memberOf"]));
    assert!(
        frank.contains("memberOf: cn=Acme,ou=groups,dc=example,dc=com"),
        "{frank}"
    );
    let judy = stdout(&search("(uid=judy.jones)", &["memberOf"]));
    assert_eq!(judy.matches("memberOf: ").count(), 2, "{judy}");
    assert!(!stdout(&search("(uid=frank.foster)", &["*"])).contains("memberOf"));

    // Non-ASCII and RFC 4515 escaping.
    assert_eq!(entries(&search("(cn=José Müller)", &["1.1"])), 1);
    assert_eq!(entries(&search(r"(cn=Smith \28admin\29\2a)", &["1.1"])), 1);
    assert_eq!(entries(&search(r"(cn=Doe, Jane)", &["1.1"])), 1);
    let bad = ldap.ldapsearch(&url, reader, &["-b", BASE_DN, "(cn=Smith (admin)*)"]);
    assert!(!bad.status.success(), "an unescaped filter is refused");

    // The locked account: the attribute is operational (ask for it), and
    // ppolicy refuses its bind.
    assert_eq!(
        entries(&search("(uid=erin.evans)", &["pwdAccountLockedTime"])),
        1
    );
    let locked = stdout(&search(
        "(pwdAccountLockedTime=*)",
        &["pwdAccountLockedTime"],
    ));
    assert!(locked.contains("dn: uid=erin.evans,ou=Initech,ou=customers,dc=example,dc=com"));
    assert!(
        locked.contains("pwdAccountLockedTime: 000001010000Z"),
        "{locked}"
    );
    assert!(!stdout(&search("(uid=erin.evans)", &["*"])).contains("pwdAccountLockedTime"));
    let whoami = |dn: &str, pw: &str| {
        ldap.tool("ldapwhoami")
            .args(["-x", "-H", &url, "-D", dn, "-w", pw])
            .output()
            .unwrap()
    };
    let alice = whoami(
        "uid=alice.anders,ou=Acme,ou=customers,dc=example,dc=com",
        "alice-pw",
    );
    assert!(alice.status.success(), "{}", stderr(&alice));
    let erin = whoami(
        "uid=erin.evans,ou=Initech,ou=customers,dc=example,dc=com",
        "erin-pw",
    );
    assert_eq!(
        code(&erin),
        Some(49),
        "locked: invalid credentials; {}",
        stderr(&erin)
    );

    // Anonymous clients see no data; nobody reads passwords.
    let anon = ldap.ldapsearch(&url, ("", ""), &["-b", BASE_DN, "(objectClass=*)", "1.1"]);
    assert_eq!(entries(&anon), 0);
    assert!(!stdout(&search("(uid=alice.anders)", &["userPassword"])).contains("userPassword"));
}

#[test]
fn size_limit_refuses_plain_searches_and_paging_reads_everything() {
    let ldap = Slapd::builder()
        .size_limit(1000)
        .max_page_size(1000)
        .start();
    ldap.load_base();
    ldap.add_users(2500);
    let url = ldap.url();
    let reader = (ldap.reader_dn(), ldap.reader_password());
    let bulk = [
        "-b",
        "ou=people,dc=example,dc=com",
        "(employeeNumber=B*)",
        "1.1",
    ];
    let with = |extra: [&'static str; 2]| [&extra[..], &bulk[..]].concat();

    let plain = ldap.ldapsearch(&url, reader, &bulk);
    assert_eq!(code(&plain), Some(4), "{}", stderr(&plain));
    assert!(
        stderr(&plain).contains("Size limit exceeded"),
        "{}",
        stderr(&plain)
    );
    assert_eq!(entries(&plain), 1000);

    for page in ["pr=500/noprompt", "pr=1000/noprompt"] {
        let paged = ldap.ldapsearch(&url, reader, &with(["-E", page]));
        assert!(paged.status.success(), "{page}: {}", stderr(&paged));
        assert_eq!(entries(&paged), 2500, "{page}");
    }
    let too_big = ldap.ldapsearch(&url, reader, &with(["-E", "pr=1500/noprompt"]));
    assert_eq!(code(&too_big), Some(11), "{}", stderr(&too_big));
    assert!(stderr(&too_big).contains("Administrative limit exceeded"));

    // The rootdn is above every limit.
    let root = ldap.ldapsearch(&url, (ldap.bind_dn(), ldap.bind_password()), &bulk);
    assert!(root.status.success(), "{}", stderr(&root));
    assert_eq!(entries(&root), 2500);
}

#[test]
fn starttls_and_ldaps_trust_the_test_ca_only() {
    let ldap = Slapd::builder().tls().start();
    let dse = ["-b", "", "-s", "base", "namingContexts"];
    let ok = |out: Output| {
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(stdout(&out).contains("dc=example,dc=com"));
    };
    ok(ldap.ldapsearch(&ldap.url(), ("", ""), &[&["-ZZ"], &dse[..]].concat()));
    ok(ldap.ldapsearch(&ldap.ldaps_url(), ("", ""), &dse));
    // (Not `ldaps://localhost:PORT` with these tools: libldap replaces the
    // host name "localhost" by the reverse lookup of the peer address before
    // checking the certificate, which gives whatever /etc/hosts says.)
    let root = (ldap.bind_dn(), ldap.bind_password());
    ok(ldap.ldapsearch(&ldap.ldaps_url(), root, &dse));
    assert!(fs::read_to_string(ldap.ca_file())
        .unwrap()
        .starts_with("-----BEGIN CERTIFICATE-----"));

    // Another CA, or the system's, is not trusted.
    let other = ldap.dir().join("other-ca.pem");
    fs::write(&other, TestCa::new("some other CA").cert_pem).unwrap();
    for ca in [
        other.as_path(),
        Path::new("/etc/ssl/certs/ca-certificates.crt"),
    ] {
        for (url, starttls) in [(ldap.url(), true), (ldap.ldaps_url(), false)] {
            let mut cmd = ldap.tool("ldapsearch");
            cmd.env("LDAPTLS_CACERT", ca).args(["-x", "-H", &url]);
            if starttls {
                cmd.arg("-ZZ");
            }
            let out = cmd.args(dse).output().unwrap();
            assert!(!out.status.success(), "{url} trusted with {}", ca.display());
            assert!(
                stderr(&out).contains("Can't contact LDAP server")
                    || stderr(&out).contains("Connect error"),
                "{}",
                stderr(&out)
            );
        }
    }
}

#[test]
fn slapadd_loads_entries_while_stopped() {
    let mut ldap = Slapd::start();
    ldap.load_base();
    let url = ldap.url();
    let path = ldap.dir().join("bulk.ldif");
    fs::write(&path, bulk_users_ldif(0, 3000)).unwrap();
    ldap.slapadd_ldif(&path);
    assert_eq!(ldap.url(), url);
    let reader = (ldap.reader_dn(), ldap.reader_password());
    let all = ldap.ldapsearch(
        &url,
        reader,
        &["-b", BASE_DN, "(objectClass=inetOrgPerson)", "1.1"],
    );
    assert!(all.status.success(), "{}", stderr(&all));
    assert_eq!(entries(&all), BASE_USERS + 3000);
    // ...and ldapadd still works after the restart.
    ldap.load_ldif_str(&bulk_users_ldif(3000, 1));
    let one = ldap.ldapsearch(
        &url,
        reader,
        &["-b", BASE_DN, "(uid=user003000)", "entryUUID"],
    );
    assert!(stdout(&one).contains("entryUUID: "), "{}", stdout(&one));
}
