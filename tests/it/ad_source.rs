//! The LDAP source against Active Directory as it ships (issue 11): the
//! Samba AD DC of tests/it/samba.rs, read by the real dirsync binary in the
//! DC's network namespace. A base at the domain root (the domain-scope
//! control; continuation references to the Configuration partition),
//! LDAPS and StartTLS with Samba's own certificate (no subjectAltName)
//! pinned by its SHA-256, the Global Catalog, ranged retrieval of a group
//! of more than 1,500 members, and users in no customer left out.

use serde_json::Value;

use crate::plan_json::{creates, refused};
use crate::samba::*;

/// A config for the shared DC.
struct Ad {
    url: String,
    kind: &'static str,
    /// `tls:` / `allow_insecure` / `ca_file` lines (4 spaces in).
    tls: String,
    users_base: String,
    users_filter: String,
    /// The `customers:` block's lines (6 spaces in, the first without).
    customers: String,
    customer_name: &'static str,
    /// More `source.ldap` lines (4 spaces in).
    extra: String,
}

impl Ad {
    /// LDAPS on 636 by address, Samba's certificate pinned; users from the
    /// domain root; one customer per OU under OU=Customers.
    fn domain_root(dc: &SambaDc) -> Ad {
        Ad {
            url: dc.ldaps_url(),
            kind: "active_directory",
            tls: pin(dc),
            users_base: BASE_DN.to_owned(),
            users_filter: PERSON_FILTER.to_owned(),
            customers: format!("strategy: ancestor\n      base: {CUSTOMERS_BASE}"),
            customer_name: "ou",
            extra: String::new(),
        }
    }

    /// The same with one group per customer under OU=Customer Groups.
    fn groups(dc: &SambaDc, use_member_of: bool) -> Ad {
        Ad {
            customers: format!(
                "strategy: group\n      base: {CUSTOMER_GROUPS_BASE}\n      filter: \"(objectClass=group)\"\n      use_member_of: {use_member_of}"
            ),
            customer_name: "cn",
            ..Ad::domain_root(dc)
        }
    }

    fn yaml(&self) -> String {
        format!(
            r#"platform:
  emulator: {{ state: state.json }}
  requests_per_second: 1000
state_dir: state
source:
  ldap:
    url: {url}
    kind: {kind}
{tls}    bind_dn: {READER_DN}
    bind_password: {{ file: ldap-password }}
    page_size: 500
    users:
      base: {users_base}
      filter: "{users_filter}"
    customers:
      {customers}
    disabled:
      ad_account_disable: true
{extra}mapping:
  customer:
    external_id: objectGUID
    name: {name}
    description: description
  user:
    external_id: objectGUID
    customer: customer
    email: mail
    name: displayName
    phone: telephoneNumber
  roles:
    default: Member
policy:
  max_shrink_percent: 100
"#,
            url = self.url,
            kind = self.kind,
            tls = self.tls,
            users_base = self.users_base,
            users_filter = self.users_filter,
            customers = self.customers,
            extra = self.extra,
            name = self.customer_name,
        )
    }

    /// `dirsync plan --output json`: exit 2 (changes pending against the
    /// empty emulator), the JSON and stderr (the log).
    fn plan(&self, dc: &SambaDc) -> (Value, String) {
        let run = self.run(dc);
        assert_eq!(
            run.code(),
            Some(2),
            "dirsync plan: changes pending\nconfig:\n{}\nstdout:\n{}\nstderr:\n{}",
            self.yaml(),
            run.stdout(),
            run.stderr()
        );
        (run.json(), run.stderr())
    }

    fn run(&self, dc: &SambaDc) -> DirsyncRun {
        dc.dirsync(&self.yaml(), &["plan", "--output", "json"])
    }
}

/// `tls: { pin_sha256: ... }` for Samba's certificate.
fn pin(dc: &SambaDc) -> String {
    format!(
        "    tls: {{ pin_sha256: \"{}\" }}\n",
        dc.cert_sha256_colons()
    )
}

/// An objectGUID read with ldapsearch, as the canonical UUID.
fn object_guid(dc: &SambaDc, filter: &str) -> String {
    use base64::Engine as _;
    let out = dc.ldapsearch(
        &dc.ldap_url(),
        dc.reader_bind(),
        &["-b", BASE_DN, filter, "objectGUID"],
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let b64 = text
        .lines()
        .find_map(|l| l.strip_prefix("objectGUID:: "))
        .unwrap_or_else(|| panic!("no objectGUID for {filter}: {text}"));
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    let bytes: [u8; 16] = bytes.try_into().unwrap();
    uuid::Uuid::from_bytes_le(bytes).hyphenated().to_string()
}

/// The `key=value` of the "LDAP read complete." log line.
fn read_log(stderr: &str, key: &str) -> Option<u64> {
    let line = stderr.lines().find(|l| l.contains("LDAP read complete."))?;
    let at = line.find(&format!("{key}="))? + key.len() + 1;
    line[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

fn acme_enabled_bulk() -> impl Iterator<Item = usize> {
    (0..BULK_USERS).filter(|i| !bulk_user_disabled(*i))
}

/// Issue 11: "A base DN at the domain root never reads": a subtree search
/// there answers continuation references to CN=Configuration, which failed
/// every run.
#[test]
fn a_base_at_the_domain_root_reads_the_domain_with_the_domain_scope_control() {
    let dc = SambaDc::shared();

    // What dirsync met before: without the control (kind: openldap sends
    // none), Samba refers to the other partitions...
    let mut plain = Ad::domain_root(dc);
    plain.kind = "openldap";
    let run = plain.run(dc);
    assert_eq!(run.code(), Some(1), "{}", run.stderr());
    assert!(
        run.stderr().contains(&format!(
            "search of {BASE_DN} returned continuation references (referrals) to ldaps://test.lan/CN=Configuration,DC=test,DC=lan"
        )),
        "{}",
        run.stderr()
    );
    // ...which `references: ignore` leaves out.
    plain.extra = "    references: ignore\n".to_owned();
    let (json, log) = plain.plan(dc);
    assert!(read_log(&log, "references_ignored").unwrap() >= 1, "{log}");
    let via_ignore = json["plan"]["scope"].clone();

    // kind: active_directory sends the domain-scope control: no references
    // at all, even with `references: fail`.
    let mut ad = Ad::domain_root(dc);
    ad.extra = "    references: fail\n".to_owned();
    let (json, log) = ad.plan(dc);
    assert_eq!(read_log(&log, "references_ignored"), Some(0), "{log}");
    assert_eq!(json["plan"]["scope"], via_ignore);
    assert_eq!(json["plan"]["scope"]["directoryUsers"], CUSTOMER_USERS);
    assert_eq!(json["plan"]["scope"]["directoryCustomers"], 3);

    // Sam Staff (OU=Staff), Oscar Orphan (directly under OU=Customers) and
    // the domain's own enabled accounts (Administrator, dns-DC1,
    // svc-dirsync) are in no customer: not in the directory, not refused.
    let c = creates(&json);
    assert!(refused(&json).is_empty(), "{:?}", refused(&json));
    for gone in [
        "sam.staff@vendor.example",
        "oscar.orphan@example.com",
        // Disabled: 514 and 66050.
        "carol.clark@acme.example",
        "erin.evans@globex.example",
    ] {
        assert!(!c.users.contains_key(gone), "{gone}");
    }
    assert_eq!(read_log(&log, "unassigned_absent"), Some(5), "{log}");
    // And Guest and krbtgt are disabled.
    assert_eq!(
        read_log(&log, "skipped_disabled"),
        Some(CUSTOMER_PERSONS_DISABLED as u64 + 2),
        "{log}"
    );
}

#[test]
fn objectguid_is_the_external_id_and_accounts_disabled_by_514_and_66050_are_absent() {
    let dc = SambaDc::shared();
    let (json, _) = Ad::domain_root(dc).plan(dc);
    let c = creates(&json);
    for i in 0..BULK_USERS {
        assert_eq!(
            c.users.contains_key(&bulk_user_mail(i)),
            !bulk_user_disabled(i),
            "{} (514 when {i} % 80 is 0, 66050 for the other disabled)",
            bulk_user_dn(i)
        );
    }
    let alice = &c.users["alice.adams@acme.example"];
    assert_eq!(
        alice["externalId"],
        object_guid(dc, "(sAMAccountName=alice.adams)")
    );
    let acme = object_guid(dc, "(&(objectClass=organizationalUnit)(ou=Acme))");
    assert_eq!(alice["customerExternalId"], acme.as_str());
    assert_eq!(c.customers[&acme]["name"], "Acme");
    for u in c.users.values() {
        let id = u["externalId"].as_str().unwrap();
        let parsed = uuid::Uuid::parse_str(id).unwrap_or_else(|e| panic!("{id}: {e}"));
        assert_eq!(parsed.hyphenated().to_string(), id);
    }
    assert_eq!(c.users["dave.doe@globex.example"]["name"], "Doe, Dave");
    assert_eq!(
        c.users["jose.mueller@globex.example"]["name"],
        "José Müller"
    );
}

/// Samba's own certificate names the DC in its CN only: rustls accepts it
/// for no host name. Pinned by its SHA-256, LDAPS and StartTLS read; through
/// the CA, the refusal names the option and the fingerprint.
#[test]
fn samba_s_own_certificate_is_accepted_by_its_pin_on_ldaps_and_starttls() {
    let dc = SambaDc::shared();
    let fingerprint = dc.cert_sha256_colons();
    for url in [dc.ldaps_url(), dc.ldap_url(), dc.ldaps_host_url()] {
        let mut ad = Ad::domain_root(dc);
        ad.url = url.clone();
        let (json, _) = ad.plan(dc);
        assert_eq!(
            json["plan"]["scope"]["directoryUsers"], CUSTOMER_USERS,
            "{url}"
        );

        // Samba's CA instead: NotValidForName (by name too: the CN is not read).
        ad.tls = "    ca_file: samba-ca.pem\n".to_owned();
        let run = ad.run(dc);
        assert_eq!(run.code(), Some(1), "{url}: {}", run.stdout());
        let err = run.stderr();
        assert!(
            err.contains("its certificate was refused")
                && err.contains("NotValidForName")
                && err.contains(&format!("SHA-256 fingerprint {fingerprint}"))
                && err.contains("source.ldap.tls.pin_sha256"),
            "{url}: {err}"
        );
    }
    // Another certificate's pin: refused, naming Samba's fingerprint.
    let mut ad = Ad::domain_root(dc);
    ad.tls = format!("    tls: {{ pin_sha256: \"{}\" }}\n", "00".repeat(32));
    let run = ad.run(dc);
    assert_eq!(run.code(), Some(1));
    assert!(
        run.stderr()
            .contains("it is not the certificate source.ldap.tls.pin_sha256 names (00:00:")
            && run
                .stderr()
                .contains(&format!("SHA-256 fingerprint {fingerprint}")),
        "{}",
        run.stderr()
    );
}

#[test]
fn the_global_catalog_reads_the_forest_over_starttls_and_ldaps_with_the_pin() {
    let dc = SambaDc::shared();
    for url in [dc.gc_url(), dc.gcs_url()] {
        let mut ad = Ad::domain_root(dc);
        ad.url = url.clone();
        let (json, log) = ad.plan(dc);
        assert_eq!(
            json["plan"]["scope"]["directoryUsers"], CUSTOMER_USERS,
            "{url}"
        );
        assert_eq!(read_log(&log, "references_ignored"), Some(0), "{log}");
        let c = creates(&json);
        assert_eq!(
            c.users["alice.adams@acme.example"]["externalId"],
            object_guid(dc, "(sAMAccountName=alice.adams)"),
            "{url}: the Global Catalog's objectGUID is the domain's"
        );
    }
}

#[test]
fn the_group_strategy_through_member_of_leaves_users_in_no_group_out() {
    let dc = SambaDc::shared();
    let (json, log) = Ad::groups(dc, true).plan(dc);
    let c = creates(&json);
    let placement = c.placement();
    assert_eq!(placement["Acme"].len(), acme_enabled_bulk().count() + 2);
    assert!(placement["Acme"].contains("alice.adams@acme.example"));
    assert_eq!(placement["Initech"].len(), 1, "Grace is in two groups");
    let refused = &json["plan"]["refused"];
    assert_eq!(refused.as_array().map(Vec::len), Some(1), "{refused}");
    assert_eq!(
        refused[0]["origin"]["dn"],
        "CN=Grace Green,OU=Initech,OU=Customers,DC=test,DC=lan"
    );
    // DNs as AD writes them, not normalised.
    let message = refused[0]["message"].as_str().unwrap();
    assert!(
        message.starts_with("matches 2 customer entries: ")
            && message.contains("CN=Globex,OU=Customer Groups,DC=test,DC=lan")
            && message.contains("CN=Initech,OU=Customer Groups,DC=test,DC=lan"),
        "{message}"
    );
    // Sam Staff (in a group that is no customer), Oscar (in none), and the
    // domain's own accounts.
    assert_eq!(read_log(&log, "unassigned_absent"), Some(5), "{log}");
}

/// A group with more than 1,500 members, read range by range. Samba, unlike
/// Windows, has no MaxValRange and would send all 1,603 at once, so
/// `range_size` makes dirsync ask 500 at a time: the follow-up requests
/// (`member;range=500-999`, ...) run against a real server.
#[test]
fn a_group_of_more_than_1500_members_is_read_in_full_range_by_range() {
    let dc = SambaDc::shared();
    for (range_size, follow_ups) in [(None, 0), (Some(500), 3), (Some(1500), 1)] {
        let mut ad = Ad::groups(dc, false);
        if let Some(n) = range_size {
            ad.extra = format!("    range_size: {n}\n");
        }
        let (json, log) = ad.plan(dc);
        assert_eq!(
            read_log(&log, "range_requests"),
            Some(follow_ups),
            "range_size {range_size:?}: {log}"
        );
        let placement = creates(&json).placement();
        for i in acme_enabled_bulk() {
            assert!(
                placement["Acme"].contains(&bulk_user_mail(i)),
                "range_size {range_size:?}: {}",
                bulk_user_dn(i)
            );
        }
        assert_eq!(placement["Acme"].len(), acme_enabled_bulk().count() + 2);
        assert_eq!(refused(&json).len(), 1, "{:?}", refused(&json));
    }
    // memberOf in ranges too, one value at a time (under OU=Customers: the
    // domain's Administrator is in many groups).
    let mut ad = Ad::groups(dc, true);
    ad.users_base = CUSTOMERS_BASE.to_owned();
    ad.extra = "    range_size: 1\n".to_owned();
    let (json, log) = ad.plan(dc);
    assert_eq!(
        creates(&json).placement()["Acme"].len(),
        acme_enabled_bulk().count() + 2
    );
    // Alice, Grace: two groups each, asked one value at a time.
    assert_eq!(read_log(&log, "range_requests"), Some(2), "{log}");
}
