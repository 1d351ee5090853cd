//! The LDAP source against a real Active Directory: the Samba AD DC of
//! tests/it/samba.rs (shared by these tests, started once per run), read by
//! the real dirsync binary inside the DC's network namespace, with the
//! in-process emulator as the platform.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::plan_json::{creates, refused};
use crate::samba::*;

/// Where a test's config points and how it finds customers.
struct Ad {
    url: String,
    users_base: String,
    users_filter: Option<String>,
    /// The `customers:` block (its lines, indented for it).
    customers: String,
    /// The customer entry attribute that names the customer.
    customer_name: &'static str,
    /// More `source.ldap` lines (4 spaces in).
    extra: String,
}

impl Ad {
    /// OU=Customers over plain ldap:// (`allow_insecure`: rustls refuses
    /// Samba's CN-only certificate, on LDAPS as on StartTLS), persons only,
    /// the ancestor strategy, disabled accounts left out.
    fn ancestor(dc: &SambaDc) -> Ad {
        Ad {
            url: dc.ldap_url(),
            users_base: CUSTOMERS_BASE.to_owned(),
            users_filter: Some(PERSON_FILTER.to_owned()),
            customers: format!("strategy: ancestor\n      base: {CUSTOMERS_BASE}"),
            customer_name: "ou",
            extra: String::new(),
        }
    }

    /// One group per customer under OU=Customer Groups: by the groups'
    /// `member`, or by each user's `memberOf`.
    fn group(dc: &SambaDc, use_member_of: bool) -> Ad {
        Ad {
            customers: format!(
                "strategy: group\n      base: {CUSTOMER_GROUPS_BASE}\n      filter: \"(objectClass=group)\"\n      use_member_of: {use_member_of}"
            ),
            customer_name: "cn",
            ..Ad::ancestor(dc)
        }
    }

    fn yaml(&self) -> String {
        let filter = self
            .users_filter
            .as_ref()
            .map(|f| format!("      filter: \"{f}\"\n"))
            .unwrap_or_default();
        format!(
            r#"platform:
  emulator: {{ state: state.json }}
  requests_per_second: 1000
state_dir: state
source:
  ldap:
    url: {url}
    kind: active_directory
    allow_insecure: true
    bind_dn: {READER_DN}
    bind_password: {{ file: ldap-password }}
    page_size: 500
    users:
      base: {users_base}
{filter}    customers:
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
            users_base = self.users_base,
            customers = self.customers,
            extra = self.extra,
            name = self.customer_name,
        )
    }

    /// `dirsync plan --output json` in the DC's namespace; exit 2 (changes
    /// pending against the empty emulator) and the JSON.
    fn plan(&self, dc: &SambaDc) -> Value {
        let run = dc.dirsync(&self.yaml(), &["plan", "--output", "json"]);
        assert_eq!(
            run.code(),
            Some(2),
            "dirsync plan: changes pending\nstdout:\n{}\nstderr:\n{}",
            run.stdout(),
            run.stderr()
        );
        run.json()
    }
}

/// An objectGUID as the canonical UUID text, lowercase with hyphens.
fn assert_guid_shaped(id: &str) {
    let parsed = uuid::Uuid::parse_str(id).unwrap_or_else(|e| panic!("{id}: {e}"));
    assert_eq!(parsed.hyphenated().to_string(), id, "canonical form");
}

/// The objectGUID of the entry `filter` finds, read with ldapsearch (base64
/// of the 16 bytes, first three fields little endian) and rendered as a UUID.
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

fn email_set(emails: &[&str]) -> BTreeSet<String> {
    emails.iter().map(|e| (*e).to_owned()).collect()
}

#[test]
fn objectguid_is_the_external_id_and_disabled_accounts_are_absent() {
    let dc = SambaDc::shared();
    let json = Ad::ancestor(dc).plan(dc);
    assert_eq!(
        json["counts"],
        serde_json::json!({"customer": {"create": 3}, "user": {"create": CUSTOMER_USERS}})
    );
    assert_eq!(json["plan"]["scope"]["directoryUsers"], CUSTOMER_USERS);
    assert_eq!(json["plan"]["scope"]["directoryCustomers"], 3);
    let c = creates(&json);

    // One customer per OU directly under OU=Customers; a nested OU is not one.
    let placement = c.placement();
    assert_eq!(
        placement.keys().map(String::as_str).collect::<Vec<_>>(),
        CUSTOMERS
    );
    assert_eq!(
        placement["Acme"].len(),
        ACME_USERS,
        "Bob's nested OU counts"
    );
    assert!(placement["Acme"].contains("bob.baker@acme.example"));
    assert_eq!(
        placement["Globex"],
        email_set(&["dave.doe@globex.example", "jose.mueller@globex.example"])
    );
    assert_eq!(
        placement["Initech"],
        email_set(&[
            "frank.foster@initech.example",
            "grace.green@initech.example"
        ])
    );

    // Disabled accounts (514 and 66050) are absent, every other one is there.
    for i in 0..BULK_USERS {
        assert_eq!(
            c.users.contains_key(&bulk_user_mail(i)),
            !bulk_user_disabled(i),
            "{}",
            bulk_user_dn(i)
        );
    }
    for gone in ["carol.clark@acme.example", "erin.evans@globex.example"] {
        assert!(!c.users.contains_key(gone), "{gone} is disabled");
    }

    // Every externalId is an objectGUID as UUID text, never a DN.
    let mut ids = BTreeSet::new();
    for u in c.users.values() {
        let id = u["externalId"].as_str().unwrap();
        assert_guid_shaped(id);
        assert!(ids.insert(id.to_owned()), "duplicate externalId {id}");
    }
    for id in c.customers.keys() {
        assert_guid_shaped(id);
    }
    // ... and it is the entry's own objectGUID, in AD's byte order.
    let alice = &c.users["alice.adams@acme.example"];
    assert_eq!(
        alice["externalId"],
        object_guid(dc, "(sAMAccountName=alice.adams)")
    );
    assert_eq!(alice["name"], "Alice Adams");
    assert_eq!(alice["phone"], "+1 555 0101");
    assert_eq!(alice["role"], "Member");
    let acme_id = object_guid(dc, "(&(objectClass=organizationalUnit)(ou=Acme))");
    assert_eq!(alice["customerExternalId"], acme_id.as_str());
    assert_eq!(c.customers[&acme_id]["name"], "Acme");
    assert_eq!(c.customers[&acme_id]["description"], "Acme Corporation");
    assert_eq!(
        c.users["jose.mueller@globex.example"]["name"],
        "José Müller"
    );
    assert_eq!(c.users["dave.doe@globex.example"]["name"], "Doe, Dave");

    // The one enabled person outside every customer OU is in no customer:
    // absent from the directory, not a refused record (issue 11, item 6).
    let refused = refused(&json);
    assert!(refused.is_empty(), "{refused:?}");
    assert!(!c.users.contains_key("oscar.orphan@example.com"));
}

#[test]
fn the_global_catalog_port_reads_the_forest() {
    let dc = SambaDc::shared();
    // From the forest's root: on 389 a subtree search there answers with a
    // continuation reference to CN=Configuration; the Global Catalog
    // answers for every partition itself.
    let mut ad = Ad::ancestor(dc);
    ad.url = dc.gc_url();
    ad.users_base = BASE_DN.to_owned();
    ad.users_filter = Some("(&(objectCategory=person)(objectClass=user)(mail=*))".to_owned());
    let json = ad.plan(dc);
    assert_eq!(
        json["counts"],
        serde_json::json!({"customer": {"create": 3}, "user": {"create": CUSTOMER_USERS}})
    );
    let c = creates(&json);
    assert_eq!(c.placement()["Acme"].len(), ACME_USERS);
    for u in c.users.values() {
        assert_guid_shaped(u["externalId"].as_str().unwrap());
    }
    assert_eq!(
        c.users["alice.adams@acme.example"]["externalId"],
        object_guid(dc, "(sAMAccountName=alice.adams)"),
        "the Global Catalog's objectGUID is the domain's"
    );
    // The people with a mail outside every customer OU are in no customer:
    // absent, not refused.
    let refused = refused(&json);
    assert!(refused.is_empty(), "{refused:?}");
}

/// The group strategy through each user's memberOf, which Samba maintains.
#[test]
fn the_group_strategy_reads_memberof_and_refuses_users_in_two_groups() {
    let dc = SambaDc::shared();
    let json = Ad::group(dc, true).plan(dc);
    let c = creates(&json);
    let placement = c.placement();
    assert_eq!(placement["Acme"].len(), ACME_USERS);
    assert_eq!(
        placement["Globex"],
        email_set(&["dave.doe@globex.example", "jose.mueller@globex.example"])
    );
    assert_eq!(
        placement["Initech"],
        email_set(&["frank.foster@initech.example"])
    );
    // Grace, in two customer groups, stays refused; Oscar, in none, is absent.
    let refused = refused(&json);
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(
        refused[0].contains("CN=Grace Green,OU=Initech,OU=Customers,DC=test,DC=lan")
            && refused[0].contains("matches 2 customer entries"),
        "{refused:?}"
    );
    // The non-customer group in Alice's memberOf does not matter.
    assert!(placement["Acme"].contains("alice.adams@acme.example"));
}

/// The group strategy through the groups' member lists: the Acme group has
/// 1,603 members. Samba (4.17) returns all of them for `member`; Active
/// Directory stops at MaxValRange (1,500) and answers `member;range=0-1499`,
/// which this test cannot show.
#[test]
fn the_group_strategy_reads_every_member_of_a_group_of_more_than_1500() {
    let dc = SambaDc::shared();
    let json = Ad::group(dc, false).plan(dc);
    let c = creates(&json);
    let placement = c.placement();
    assert_eq!(placement["Acme"].len(), ACME_USERS);
    for i in (0..BULK_USERS).filter(|i| !bulk_user_disabled(*i)) {
        assert!(
            placement["Acme"].contains(&bulk_user_mail(i)),
            "{}",
            bulk_user_dn(i)
        );
    }
    assert_eq!(placement["Globex"].len(), 2);
    assert_eq!(placement["Initech"].len(), 1);
    let refused = refused(&json);
    assert_eq!(
        refused.len(),
        1,
        "Grace (two groups); Oscar (none) is absent: {refused:?}"
    );
}

#[test]
fn a_sync_from_active_directory_converges_and_then_reports_no_changes() {
    let dc = SambaDc::shared();
    // Globex's users only: few creates, all three customers.
    let mut ad = Ad::ancestor(dc);
    ad.users_base = format!("OU=Globex,{CUSTOMERS_BASE}");
    let config = ad.yaml();
    let dir = tempfile::tempdir().unwrap();
    let check = dc.dirsync_in(dir.path(), &config, &["check-config"]);
    assert_eq!(check.status.code(), Some(0), "{check:?}");
    let sync = dc.dirsync_in(dir.path(), &config, &["sync", "--output", "json"]);
    let text = String::from_utf8_lossy(&sync.stdout);
    assert_eq!(
        sync.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&sync.stderr)
    );
    let json: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        json["outcomes"],
        serde_json::json!({"customer": {"create": {"applied": 3}}, "user": {"create": {"applied": 2}}})
    );
    let again = dc.dirsync_in(dir.path(), &config, &["plan"]);
    let text = String::from_utf8_lossy(&again.stdout);
    assert_eq!(
        again.status.code(),
        Some(0),
        "in sync: {text}{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert!(text.contains("No changes."), "{text}");
}

#[test]
fn a_delete_of_an_account_disabled_by_user_account_control_says_disabled() {
    let dc = SambaDc::shared();
    // Globex: Dave and José enabled, Erin disabled (66050). A first sync
    // that does not read userAccountControl puts Erin on the platform too.
    let mut ad = Ad::ancestor(dc);
    ad.users_base = format!("OU=Globex,{CUSTOMERS_BASE}");
    let config = ad.yaml().replace(
        "policy:\n  max_shrink_percent: 100\n",
        "policy:\n  max_shrink_percent: 100\n  delete_users: { max_count: 10, max_percent: 100 }\n",
    );
    let unread = config.replace(
        "      ad_account_disable: true\n",
        "      ad_account_disable: false\n",
    );
    assert_ne!(unread, config);
    let dir = tempfile::tempdir().unwrap();
    let sync = dc.dirsync_in(dir.path(), &unread, &["sync", "--output", "json"]);
    let text = String::from_utf8_lossy(&sync.stdout);
    assert_eq!(
        sync.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&sync.stderr)
    );
    let json: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        json["outcomes"]["user"],
        serde_json::json!({"create": {"applied": 3}}),
        "{json}"
    );

    let erin = object_guid(dc, "(sAMAccountName=erin.evans)");
    let plan = dc.dirsync_in(dir.path(), &config, &["plan", "--output", "json"]);
    let text = String::from_utf8_lossy(&plan.stdout);
    assert_eq!(plan.status.code(), Some(2), "{text}");
    let json: Value = serde_json::from_str(&text).unwrap();
    let ops = json["plan"]["operations"].as_array().unwrap();
    assert_eq!(ops.len(), 1, "{json}");
    assert_eq!(ops[0]["action"], "deleteUser");
    assert_eq!(ops[0]["externalId"], erin.as_str());
    assert_eq!(ops[0]["email"], "erin.evans@globex.example");
    assert_eq!(ops[0]["why"], "disabled", "{json}");

    let plan = dc.dirsync_in(dir.path(), &config, &["plan"]);
    let text = String::from_utf8_lossy(&plan.stdout);
    assert!(
        text.contains(&format!(
            "  - user {erin}  erin.evans@globex.example in customer "
        )) && text.contains("(disabled in the directory)"),
        "{text}"
    );
}
