//! The LDAP source against a real slapd (tests/it/slapd.rs) and the emulator:
//! each customer strategy, disabled accounts, paging past a size limit,
//! failures that must delete nothing, TLS (StartTLS, LDAPS, wrong CA, wrong
//! host name, plain ldap:// refused), filter injection, and a full sync.

use std::collections::BTreeMap;

use dirsync::apply::Quiet;
use dirsync::config::Config;
use dirsync::plan::Operation;
use dirsync::run::{reconcile, Connection, Mode, Reconcile, RunError};

use crate::slapd::*;
use crate::support::*;

/// Where a test's config points: the server, TLS, the strategy block.
struct Setup<'a> {
    url: String,
    ca_file: Option<&'a std::path::Path>,
    allow_insecure: bool,
    page_size: u32,
    users_base: &'a str,
    customers: &'a str,
    customer_name: &'a str,
    extra: &'a str,
}

impl<'a> Setup<'a> {
    /// The ancestor strategy over `ldap.url()` (StartTLS), trusting the test CA.
    fn new(ldap: &'a Slapd) -> Setup<'a> {
        Setup {
            ca_file: Some(ldap.ca_file()),
            ..Setup::new_without_tls(ldap)
        }
    }

    /// The same without a CA file (for a server with no TLS at all).
    fn new_without_tls(ldap: &'a Slapd) -> Setup<'a> {
        Setup {
            url: ldap.url(),
            ca_file: None,
            allow_insecure: false,
            page_size: 500,
            users_base: "ou=customers,dc=example,dc=com",
            customers: "strategy: ancestor\n      base: ou=customers,dc=example,dc=com",
            customer_name: "ou",
            extra: "",
        }
    }

    fn config(&self, dir: &std::path::Path, emulator_url: &str) -> Config {
        std::fs::write(dir.join("token"), TOKEN).unwrap();
        std::fs::write(dir.join("ldap-password"), READER_PASSWORD).unwrap();
        let ca = self
            .ca_file
            .map(|p| format!("    ca_file: {}\n", p.display()))
            .unwrap_or_default();
        let text = format!(
            r#"platform:
  url: {emulator_url}
  token: {{ file: token }}
  requests_per_second: 1000
source:
  ldap:
    url: {url}
{ca}    allow_insecure: {insecure}
    bind_dn: {READER_DN}
    bind_password: {{ file: ldap-password }}
    page_size: {page}
    users:
      base: {users_base}
    customers:
      {customers}
    disabled:
      attribute_present: pwdAccountLockedTime
{extra}mapping:
  customer:
    external_id: entryUUID
    name: {name}
    description: description
  user:
    external_id: entryUUID
    customer: customer
    email: mail
    name: cn
    phone: telephoneNumber
    role: title
  roles:
    map: {{ admin: Admin }}
    default: Member
policy:
  max_shrink_percent: 100
"#,
            url = self.url,
            insecure = self.allow_insecure,
            page = self.page_size,
            users_base = self.users_base,
            customers = self.customers,
            name = self.customer_name,
            extra = self.extra,
        );
        let path = dir.join("dirsync.yaml");
        std::fs::write(&path, text).unwrap();
        Config::load(&path).unwrap()
    }
}

async fn run(
    setup: &Setup<'_>,
    mode: Mode,
) -> (
    Result<Reconcile, RunError>,
    dirsync::emulator::RunningEmulator,
) {
    let emu = start_emulator(None).await;
    let r = run_against(setup, &emu, mode).await;
    (r, emu)
}

async fn run_against(
    setup: &Setup<'_>,
    emu: &dirsync::emulator::RunningEmulator,
    mode: Mode,
) -> Result<Reconcile, RunError> {
    let dir = tempfile::tempdir().unwrap();
    let config = setup.config(dir.path(), &emu.url());
    let connection = Connection::open(&config.platform).await.unwrap();
    reconcile(&config, &connection, mode, &Quiet).await
}

/// User email -> customer name, from the plan's creates.
fn placement(r: &Reconcile) -> BTreeMap<String, String> {
    let names: BTreeMap<&str, &str> = r
        .plan
        .operations
        .iter()
        .filter_map(|op| match op {
            Operation::CreateCustomer(c) => Some((c.external_id.as_str(), c.name.as_str())),
            _ => None,
        })
        .collect();
    r.plan
        .operations
        .iter()
        .filter_map(|op| match op {
            Operation::CreateUser(u) => Some((
                u.email.clone(),
                names[u.customer_external_id.as_str()].to_owned(),
            )),
            _ => None,
        })
        .collect()
}

/// A first sync that must apply everything.
async fn sync_cleanly(setup: &Setup<'_>, emu: &dirsync::emulator::RunningEmulator) {
    let r = run_against(
        setup,
        emu,
        Mode::Apply {
            allow_deletes: false,
        },
    )
    .await
    .unwrap();
    assert_eq!(r.report.unwrap().failed(), 0);
}

fn tls_server() -> Slapd {
    let ldap = Slapd::builder().tls().start();
    ldap.load_base();
    ldap
}

#[tokio::test]
async fn the_ancestor_strategy_maps_each_ou_to_a_customer_and_leaves_disabled_accounts_out() {
    let ldap = tls_server();
    let setup = Setup::new(&ldap);
    let (r, _emu) = run(&setup, Mode::Plan).await;
    let r = r.unwrap();
    let expected: BTreeMap<String, String> = [
        ("alice.anders@acme.example", "Acme"),
        ("bob.baker@acme.example", "Acme"),
        ("Carol.Chen@Globex.example", "Globex"),
        ("jose.muller@globex.example", "Globex"),
        ("smith.admin@initech.example", "Initech"),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_owned(), b.to_owned()))
    .collect();
    assert_eq!(placement(&r), expected, "erin.evans is locked and absent");
    let jose = r.plan.operations.iter().find_map(|op| match op {
        Operation::CreateUser(u) if u.email.starts_with("jose") => Some(u.clone()),
        _ => None,
    });
    assert_eq!(
        jose.unwrap().name.as_deref(),
        Some("José Müller"),
        "non-ASCII names survive"
    );
    let alice = r.plan.operations.iter().find_map(|op| match op {
        Operation::CreateUser(u) if u.email.starts_with("alice") => Some(u.clone()),
        _ => None,
    });
    let alice = alice.unwrap();
    assert_eq!(alice.role, "Admin");
    assert_eq!(
        alice.phone.as_deref(),
        Some("+1 555 0101"),
        "the first of several values"
    );
    // The externalId is the entryUUID, never the DN.
    assert!(
        uuid::Uuid::parse_str(&alice.external_id).is_ok(),
        "{}",
        alice.external_id
    );
}

#[tokio::test]
async fn the_attribute_strategy_matches_a_user_attribute_to_a_customer_key() {
    let ldap = tls_server();
    let mut setup = Setup::new(&ldap);
    setup.users_base = "ou=people,dc=example,dc=com";
    setup.customers = "strategy: attribute\n      base: ou=customers,dc=example,dc=com\n      user_attribute: departmentNumber\n      key_attribute: ou";
    setup.extra = "    prefer_suffix: { mail: \"@initech.example\" }\n";
    let (r, _emu) = run(&setup, Mode::Plan).await;
    let r = r.unwrap();
    let got = placement(&r);
    assert_eq!(
        got.get("frank.foster@acme.example").map(String::as_str),
        Some("Acme")
    );
    assert_eq!(
        got.get("grace.green@globex.example").map(String::as_str),
        Some("Globex"),
        "a trailing space does not matter"
    );
    assert_eq!(
        got.get("jane.doe@globex.example").map(String::as_str),
        Some("Globex")
    );
    assert_eq!(
        got.get("judy.jones@acme.example").map(String::as_str),
        Some("Acme")
    );
    assert!(got.contains_key("heidi.hall@initech.example"));
    assert_eq!(got.len(), 5);
    assert_eq!(r.plan.refused.len(), 1);
    let refused = r.plan.refused[0].to_string();
    assert!(
        refused.starts_with(
            "entry uid=ivan.ivanov,ou=people,dc=example,dc=com: matches no customer entry"
        ),
        "{refused}"
    );
}

#[tokio::test]
async fn the_group_strategy_uses_member_lists_and_refuses_users_in_two_groups() {
    let ldap = tls_server();
    let mut setup = Setup::new(&ldap);
    setup.users_base = "dc=example,dc=com";
    setup.customers = "strategy: group\n      base: ou=groups,dc=example,dc=com";
    setup.customer_name = "cn";
    let (r, _emu) = run(&setup, Mode::Plan).await;
    let r = r.unwrap();
    let got = placement(&r);
    assert_eq!(
        got.get("frank.foster@acme.example").map(String::as_str),
        Some("Acme"),
        "member DNs compare normalised"
    );
    assert_eq!(
        got.get("jane.doe@globex.example").map(String::as_str),
        Some("Globex"),
        "an escaped comma in a DN"
    );
    assert_eq!(
        got.get("ivan.ivanov@initech.example").map(String::as_str),
        Some("Initech")
    );
    assert_eq!(got.len(), 10, "{got:?}");
    assert_eq!(r.plan.refused.len(), 1);
    let refused = r.plan.refused[0].to_string();
    assert!(
        refused.contains("uid=judy.jones,ou=people,dc=example,dc=com: matches 2 customer entries"),
        "{refused}"
    );
}

#[tokio::test]
async fn paging_reads_2500_users_past_a_size_limit_of_1000() {
    let ldap = Slapd::builder().tls().size_limit(1000).start();
    ldap.load_base();
    ldap.add_users(2500);
    let mut setup = Setup::new(&ldap);
    setup.users_base = "ou=people,dc=example,dc=com";
    setup.customers = "strategy: attribute\n      base: ou=customers,dc=example,dc=com\n      user_attribute: departmentNumber\n      key_attribute: ou";
    let (r, _emu) = run(&setup, Mode::Plan).await;
    let r = r.unwrap();
    assert_eq!(
        r.plan.scope.directory_users, 2505,
        "2,500 bulk users and the 5 fixture users of ou=people with a department"
    );
}

#[tokio::test]
async fn a_failed_read_deletes_nothing() {
    let ldap = Slapd::builder().tls().max_page_size(100).start();
    ldap.load_base();
    let setup = Setup::new(&ldap);
    let emu = start_emulator(None).await;
    let mut small_pages = Setup::new(&ldap);
    small_pages.page_size = 100;
    // A first sync puts the directory on the platform.
    sync_cleanly(&small_pages, &emu).await;
    let before = emu.handle.stats().mutations;
    // Pages of 500 are over the server's limit: adminLimitExceeded ends the read.
    let err = run_against(
        &setup,
        &emu,
        Mode::Apply {
            allow_deletes: true,
        },
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("adminLimitExceeded (11)"), "{err}");
    assert_eq!(
        emu.handle.stats().mutations,
        before,
        "a failed read sends nothing"
    );
}

#[tokio::test]
async fn a_size_limit_on_the_whole_paged_search_fails_the_read() {
    // The service account may read 200 entries in all, paged or not.
    let ldap = Slapd::builder().tls().paged_total_limit(200).start();
    ldap.load_base();
    ldap.add_users(300);
    let mut setup = Setup::new(&ldap);
    setup.users_base = "ou=people,dc=example,dc=com";
    setup.page_size = 100;
    setup.customers = "strategy: attribute\n      base: ou=customers,dc=example,dc=com\n      user_attribute: departmentNumber\n      key_attribute: ou";
    let (r, emu) = run(
        &setup,
        Mode::Apply {
            allow_deletes: true,
        },
    )
    .await;
    let err = r.unwrap_err();
    assert!(err.to_string().contains("sizeLimitExceeded (4)"), "{err}");
    assert_eq!(emu.handle.stats().mutations, 0);
}

#[tokio::test]
async fn ldaps_and_starttls_work_with_the_test_ca() {
    let ldap = tls_server();
    let mut setup = Setup::new(&ldap);
    setup.url = ldap.ldaps_url();
    assert_eq!(
        run(&setup, Mode::Plan)
            .await
            .0
            .unwrap()
            .plan
            .scope
            .directory_users,
        5
    );
    setup.url = ldap.url(); // ldap:// + StartTLS
    assert_eq!(
        run(&setup, Mode::Plan)
            .await
            .0
            .unwrap()
            .plan
            .scope
            .directory_users,
        5
    );
}

#[tokio::test]
async fn a_wrong_ca_is_refused_before_any_bind() {
    let ldap = tls_server();
    let other = TestCa::new("another CA");
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("wrong-ca.pem");
    std::fs::write(&wrong, &other.cert_pem).unwrap();
    for url in [ldap.ldaps_url(), ldap.url()] {
        let mut setup = Setup::new(&ldap);
        setup.url = url;
        setup.ca_file = Some(&wrong);
        let err = run(&setup, Mode::Plan).await.0.unwrap_err().to_string();
        assert!(
            err.contains("cannot connect to") && !err.contains("bind as"),
            "{err}"
        );
    }
}

#[tokio::test]
async fn a_certificate_for_another_host_name_is_refused() {
    // The certificate names only "localhost"; we connect to 127.0.0.1.
    let ldap = Slapd::builder().tls_for(&["localhost"]).start();
    ldap.load_base();
    let mut setup = Setup::new(&ldap);
    setup.url = ldap.ldaps_url();
    let err = run(&setup, Mode::Plan).await.0.unwrap_err().to_string();
    assert!(
        err.contains("cannot connect to") && err.to_lowercase().contains("certificate"),
        "{err}"
    );
}

#[tokio::test]
async fn plain_ldap_is_refused_unless_allow_insecure_is_set() {
    let ldap = Slapd::start(); // no TLS at all
    ldap.load_base();
    let mut setup = Setup::new_without_tls(&ldap);
    let err = run(&setup, Mode::Plan).await.0.unwrap_err().to_string();
    assert!(
        err.contains("cannot connect to"),
        "StartTLS is required: {err}"
    );
    setup.allow_insecure = true;
    assert_eq!(
        run(&setup, Mode::Plan)
            .await
            .0
            .unwrap()
            .plan
            .scope
            .directory_users,
        5
    );
}

#[tokio::test]
async fn a_filter_injection_in_a_mapped_value_matches_nothing_extra() {
    let ldap = tls_server();
    ldap.load_ldif_str(
        "dn: uid=mallory,ou=people,dc=example,dc=com\nobjectClass: inetOrgPerson\nuid: mallory\ncn: Mallory\nsn: M\nmail: mallory@evil.example\ndepartmentNumber: *)(ou=*\n\ndn: uid=trudy,ou=people,dc=example,dc=com\nobjectClass: inetOrgPerson\nuid: trudy\ncn: Trudy\nsn: T\nmail: trudy@evil.example\ndepartmentNumber: *\n",
    );
    let mut setup = Setup::new(&ldap);
    setup.users_base = "ou=people,dc=example,dc=com";
    setup.customers = "strategy: attribute\n      base: ou=customers,dc=example,dc=com\n      user_attribute: departmentNumber\n      key_attribute: ou";
    let (r, _emu) = run(&setup, Mode::Plan).await;
    let r = r.unwrap();
    let got = placement(&r);
    assert!(
        !got.contains_key("mallory@evil.example") && !got.contains_key("trudy@evil.example"),
        "{got:?}"
    );
    let refused: Vec<String> = r.plan.refused.iter().map(ToString::to_string).collect();
    assert!(
        refused
            .iter()
            .any(|m| m.contains("uid=mallory") && m.contains("matches no customer entry")),
        "{refused:?}"
    );
    assert!(
        refused
            .iter()
            .any(|m| m.contains("uid=trudy") && m.contains("matches no customer entry")),
        "{refused:?}"
    );
}

#[tokio::test]
async fn a_sync_from_ldap_converges_and_then_reports_no_changes() {
    let ldap = tls_server();
    let setup = Setup::new(&ldap);
    let emu = start_emulator(None).await;
    sync_cleanly(&setup, &emu).await;
    assert_eq!(emu.handle.stats().mutations, 8, "3 customers, 5 users");
    let second = run_against(
        &setup,
        &emu,
        Mode::Apply {
            allow_deletes: false,
        },
    )
    .await
    .unwrap();
    assert!(second.plan.is_empty(), "{:?}", second.plan.operations);
    assert_eq!(emu.handle.stats().mutations, 8);
}

#[tokio::test]
async fn a_locked_account_is_deleted_as_disabled_and_a_removed_one_as_absent() {
    use dirsync::plan::DeleteReason;
    let ldap = tls_server();
    let setup = Setup::new(&ldap);
    let emu = start_emulator(None).await;
    sync_cleanly(&setup, &emu).await;

    // alice is locked (disabled.attribute_present: pwdAccountLockedTime);
    // bob's entry is removed.
    ldap.load_ldif_str(
        "dn: uid=alice.anders,ou=Acme,ou=customers,dc=example,dc=com\nchangetype: modify\nadd: pwdAccountLockedTime\npwdAccountLockedTime: 000001010000Z\n\ndn: uid=bob.baker,ou=Acme,ou=customers,dc=example,dc=com\nchangetype: delete\n",
    );
    let r = run_against(&setup, &emu, Mode::Plan).await.unwrap();
    let deletes: BTreeMap<&str, DeleteReason> = r
        .plan
        .operations
        .iter()
        .filter_map(|op| match op {
            Operation::DeleteUser { email, why, .. } => Some((email.as_str(), *why)),
            _ => None,
        })
        .collect();
    assert_eq!(
        deletes,
        BTreeMap::from([
            ("alice.anders@acme.example", DeleteReason::Disabled),
            ("bob.baker@acme.example", DeleteReason::Absent),
        ]),
        "{:?}",
        r.plan.operations
    );
    assert_eq!(r.plan.operations.len(), 2, "{:?}", r.plan.operations);
    let text = dirsync::plan::render::text(&r.plan);
    assert!(
        text.contains("alice.anders@acme.example in customer ")
            && text.contains("(disabled in the directory)")
            && text.contains("(absent from the directory)"),
        "{text}"
    );

    // Unlocked again, she is an enabled account: no delete at all.
    ldap.load_ldif_str(
        "dn: uid=alice.anders,ou=Acme,ou=customers,dc=example,dc=com\nchangetype: modify\ndelete: pwdAccountLockedTime\n",
    );
    let r = run_against(&setup, &emu, Mode::Plan).await.unwrap();
    let deleted: Vec<&str> = r
        .plan
        .operations
        .iter()
        .filter_map(|op| match op {
            Operation::DeleteUser { email, .. } => Some(email.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(deleted, ["bob.baker@acme.example"]);
}

#[tokio::test]
async fn a_preferred_suffix_picks_among_several_values_and_binary_values_do_not_panic() {
    let ldap = tls_server();
    // A JPEG-like binary value on a mapped attribute: never text, so absent.
    ldap.load_ldif_str(
        "dn: uid=pat,ou=Acme,ou=customers,dc=example,dc=com\nobjectClass: inetOrgPerson\nuid: pat\ncn: Pat\nsn: P\nmail: pat@acme.example\njpegPhoto:: /9j/4AAQSkZJRgABAQ==\n",
    );
    let mut setup = Setup::new(&ldap);
    setup.extra = "    prefer_suffix: { mail: \"alice@acme.example\" }\n";
    let (r, _emu) = run(&setup, Mode::Plan).await;
    let r = r.unwrap();
    let emails: Vec<&str> = r
        .plan
        .operations
        .iter()
        .filter_map(|op| match op {
            Operation::CreateUser(u) => Some(u.email.as_str()),
            _ => None,
        })
        .collect();
    assert!(
        emails.contains(&"alice@acme.example"),
        "the second value, by preference: {emails:?}"
    );
    assert!(emails.contains(&"pat@acme.example"));

    // The binary attribute mapped to a text field reads as absent, without a panic.
    let dir = tempfile::tempdir().unwrap();
    let emu = start_emulator(None).await;
    let config = Setup::new(&ldap).config(dir.path(), &emu.url());
    let text = std::fs::read_to_string(&config.path)
        .unwrap()
        .replace("phone: telephoneNumber", "phone: jpegPhoto");
    std::fs::write(&config.path, text).unwrap();
    let config = Config::load(&config.path).unwrap();
    let connection = Connection::open(&config.platform).await.unwrap();
    let r = reconcile(&config, &connection, Mode::Plan, &Quiet)
        .await
        .unwrap();
    let pat = r.plan.operations.iter().find_map(|op| match op {
        Operation::CreateUser(u) if u.email == "pat@acme.example" => Some(u.phone.clone()),
        _ => None,
    });
    assert_eq!(pat, Some(Some(String::new())));
}

#[tokio::test]
async fn a_referral_in_the_users_tree_fails_the_read_and_deletes_nothing() {
    let ldap = tls_server();
    let setup = Setup::new(&ldap);
    let emu = start_emulator(None).await;
    sync_cleanly(&setup, &emu).await;
    let before = emu.handle.stats().mutations;
    // Part of the tree now lives on another server: the search answers with a
    // continuation reference, which dirsync does not chase.
    ldap.load_ldif_str(
        "dn: ou=Elsewhere,ou=customers,dc=example,dc=com\nobjectClass: referral\nobjectClass: extensibleObject\nou: Elsewhere\nref: ldap://ldap.other.example/ou=Elsewhere,dc=other,dc=example\n",
    );
    let err = run_against(
        &setup,
        &emu,
        Mode::Apply {
            allow_deletes: true,
        },
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("referral"), "{err}");
    assert_eq!(
        emu.handle.stats().mutations,
        before,
        "a failed read sends nothing"
    );
}

// ---------------------------------------------------------------------------
// Issue 11: real directories, offboarding by group.

/// The group strategy over every user of dc=example,dc=com.
fn group_setup(ldap: &Slapd, use_member_of: bool) -> Setup<'_> {
    let mut setup = Setup::new(ldap);
    setup.users_base = "dc=example,dc=com";
    setup.customers = if use_member_of {
        "strategy: group\n      base: ou=groups,dc=example,dc=com\n      use_member_of: true"
    } else {
        "strategy: group\n      base: ou=groups,dc=example,dc=com"
    };
    setup.customer_name = "cn";
    setup
}

/// An inetOrgPerson in ou=people, in no group.
fn staff_ldif(uid: &str) -> String {
    format!(
        "dn: uid={uid},ou=people,dc=example,dc=com\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid}\nsn: Staff\nmail: {uid}@vendor.example\n\n"
    )
}

fn refused_messages(r: &Reconcile) -> Vec<String> {
    r.plan.refused.iter().map(ToString::to_string).collect()
}

#[tokio::test]
async fn the_group_strategy_through_member_of_places_users_and_refuses_users_in_two_groups() {
    // slapd's memberof overlay keeps memberOf as Active Directory does.
    let ldap = tls_server();
    let (by_members, _emu) = run(&group_setup(&ldap, false), Mode::Plan).await;
    let (by_member_of, _emu) = run(&group_setup(&ldap, true), Mode::Plan).await;
    let (by_members, by_member_of) = (by_members.unwrap(), by_member_of.unwrap());
    let got = placement(&by_member_of);
    assert_eq!(
        got,
        placement(&by_members),
        "both sides of the membership agree"
    );
    assert_eq!(got.len(), 10, "{got:?}");
    assert_eq!(
        got.get("frank.foster@acme.example").map(String::as_str),
        Some("Acme"),
        "listed as UID=Frank.Foster, OU=People: memberOf is the overlay's"
    );
    assert_eq!(
        got.get("jane.doe@globex.example").map(String::as_str),
        Some("Globex"),
        "an escaped comma in a DN"
    );
    assert!(!got.contains_key("erin.evans@initech.example"), "locked");
    let refused = refused_messages(&by_member_of);
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(
        refused[0].contains("uid=judy.jones,ou=people,dc=example,dc=com: matches 2 customer entries: cn=Acme,ou=groups,dc=example,dc=com; cn=Globex,ou=groups,dc=example,dc=com"),
        "{refused:?}"
    );
}

#[tokio::test]
async fn a_user_in_no_customer_is_absent_by_default_and_refused_with_unassigned_users_refuse() {
    let ldap = tls_server();
    ldap.load_ldif_str(&format!(
        "{}{}",
        staff_ldif("sam.staff"),
        staff_ldif("sue.staff")
    ));
    // Also with the ancestor strategy: users outside every customer OU.
    let mut ancestor = Setup::new(&ldap);
    ancestor.users_base = "dc=example,dc=com";
    for (name, mut setup) in [
        ("group, member", group_setup(&ldap, false)),
        ("group, memberOf", group_setup(&ldap, true)),
        ("ancestor", ancestor),
    ] {
        let (r, _emu) = run(&setup, Mode::Plan).await;
        let r = r.unwrap();
        let got = placement(&r);
        assert!(
            !got.contains_key("sam.staff@vendor.example"),
            "{name}: {got:?}"
        );
        let refused = refused_messages(&r);
        assert!(
            !refused.iter().any(|m| m.contains("staff")),
            "{name}: absent, not refused: {refused:?}"
        );
        let users_by_default = r.plan.scope.directory_users;

        setup.extra = "    unassigned_users: refuse\n";
        let (r, _emu) = run(&setup, Mode::Plan).await;
        let r = r.unwrap();
        let refused = refused_messages(&r);
        for uid in ["sam.staff", "sue.staff"] {
            assert!(
                refused.iter().any(|m| m.contains(&format!(
                    "entry uid={uid},ou=people,dc=example,dc=com: matches no customer entry"
                ))),
                "{name}: {refused:?}"
            );
        }
        assert_eq!(r.plan.scope.directory_users, users_by_default, "{name}");
    }
}

/// Issue 11, measured: taking 9 users out of their group refused the whole
/// source ("12 of 504 records were refused, more than the cap of 10").
#[tokio::test]
async fn taking_users_out_of_their_group_plans_their_deletes_within_the_budget() {
    let ldap = tls_server();
    ldap.add_users(498);
    // Each bulk user in the group of its departmentNumber.
    let mut members = String::new();
    for (g, customer) in CUSTOMERS.iter().enumerate() {
        members.push_str(&format!(
            "dn: cn={customer},ou=groups,dc=example,dc=com\nchangetype: modify\nadd: member\n"
        ));
        for i in (g..498).step_by(CUSTOMERS.len()) {
            members.push_str(&format!(
                "member: uid=user{i:06},ou=people,dc=example,dc=com\n"
            ));
        }
        members.push('\n');
    }
    ldap.load_ldif_str(&members);
    for use_member_of in [false, true] {
        let setup = group_setup(&ldap, use_member_of);
        let emu = start_emulator(None).await;
        sync_cleanly(&setup, &emu).await;
        let before = run_against(&setup, &emu, Mode::Plan).await.unwrap();
        assert!(before.plan.is_empty(), "{:?}", before.plan.operations);
        // 498 bulk users and 10 of base.ldif, judy.jones (in two groups) refused.
        assert_eq!(before.plan.scope.directory_users, 508);

        // Nine users leave Acme: offboarding by group removal.
        let leavers: Vec<usize> = (0..27).step_by(3).collect();
        let mut ldif = String::from(
            "dn: cn=Acme,ou=groups,dc=example,dc=com\nchangetype: modify\ndelete: member\n",
        );
        for i in &leavers {
            ldif.push_str(&format!(
                "member: uid=user{i:06},ou=people,dc=example,dc=com\n"
            ));
        }
        ldap.load_ldif_str(&ldif);

        let r = run_against(
            &setup,
            &emu,
            Mode::Apply {
                allow_deletes: true,
            },
        )
        .await
        .unwrap();
        assert!(r.blocked.is_empty(), "{:?}", r.blocked);
        assert_eq!(
            r.plan.refused.len(),
            1,
            "judy.jones only: {:?}",
            r.plan.refused
        );
        let deleted: Vec<&str> = r
            .plan
            .operations
            .iter()
            .filter_map(|op| match op {
                Operation::DeleteUser { email, .. } => Some(email.as_str()),
                _ => None,
            })
            .collect();
        let expected: Vec<String> = leavers
            .iter()
            .map(|i| format!("user{i:06}@acme.example"))
            .collect();
        assert_eq!(deleted, expected, "use_member_of: {use_member_of}");
        assert_eq!(r.plan.operations.len(), 9, "{:?}", r.plan.operations);
        assert_eq!(r.report.unwrap().failed(), 0);

        // Put them back for the next round.
        ldap.load_ldif_str(&ldif.replace("delete: member", "add: member"));
    }
}

#[tokio::test]
async fn dns_in_messages_appear_as_the_server_wrote_them() {
    let ldap = tls_server();
    // A customer group whose DN needs an escaped comma, written with a hex
    // escape; frank.foster is in it and in Acme.
    ldap.load_ldif_str(
        "dn: cn=Beta\\2C Inc.,ou=groups,dc=example,dc=com\nobjectClass: groupOfNames\ncn: Beta, Inc.\nmember: uid=frank.foster,ou=people,dc=example,dc=com\n",
    );
    let out = ldap.ldapsearch(
        &ldap.url(),
        (READER_DN, READER_PASSWORD),
        &[
            "-ZZ",
            "-b",
            "ou=groups,dc=example,dc=com",
            "(cn=Beta, Inc.)",
            "1.1",
        ],
    );
    let written = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("dn: ").map(str::to_owned))
        .unwrap_or_else(|| panic!("{out:?}"));
    assert!(written.starts_with("cn=Beta"), "{written}");
    for use_member_of in [false, true] {
        let (r, _emu) = run(&group_setup(&ldap, use_member_of), Mode::Plan).await;
        let refused = refused_messages(&r.unwrap());
        assert!(
            refused.iter().any(|m| m.contains(&format!(
                "entry uid=frank.foster,ou=people,dc=example,dc=com: matches 2 customer entries: cn=Acme,ou=groups,dc=example,dc=com; {written}"
            ))),
            "use_member_of: {use_member_of}: {refused:?}"
        );
    }
}

#[tokio::test]
async fn a_page_size_the_server_refuses_says_to_lower_page_size() {
    // slapd `limits ... size.pr=100`: a page of 500 is refused with
    // adminLimitExceeded "illegal pagedResults page size".
    let ldap = Slapd::builder().tls().max_page_size(100).start();
    ldap.load_base();
    let (r, emu) = run(&Setup::new(&ldap), Mode::Plan).await;
    let err = r.unwrap_err().to_string();
    assert!(
        err.contains("adminLimitExceeded (11): illegal pagedResults page size")
            && err.contains("the server refuses pages of 500 entries; lower source.ldap.page_size"),
        "{err}"
    );
    assert_eq!(emu.handle.stats().mutations, 0);
    let mut small = Setup::new(&ldap);
    small.page_size = 100;
    assert_eq!(
        run(&small, Mode::Plan)
            .await
            .0
            .unwrap()
            .plan
            .scope
            .directory_users,
        5
    );
}

#[tokio::test]
async fn a_certificate_without_a_subject_alt_name_is_accepted_by_its_pin_and_no_other() {
    // CN=localhost and no subjectAltName: no host name can match it.
    let ldap = Slapd::builder().tls_cn_only().start();
    ldap.load_base();
    let fingerprint = ldap.cert_sha256();

    // Through the CA, it is refused, and the message names the option and
    // the presented certificate's fingerprint.
    for url in [ldap.ldaps_url(), ldap.url()] {
        let mut setup = Setup::new(&ldap);
        setup.url = url.clone();
        let err = run(&setup, Mode::Plan).await.0.unwrap_err().to_string();
        assert!(
            err.contains("its certificate was refused")
                && err.contains("not valid for any names")
                && err.contains("NotValidForName")
                && err.contains(&format!("SHA-256 fingerprint {fingerprint}"))
                && err.contains("source.ldap.tls.pin_sha256"),
            "{url}: {err}"
        );
    }

    // Pinned (with colons, or bare lowercase hex): LDAPS and StartTLS read.
    let bare = fingerprint.replace(':', "").to_lowercase();
    for (url, pin) in [(ldap.ldaps_url(), &fingerprint), (ldap.url(), &bare)] {
        let mut setup = Setup::new(&ldap);
        setup.url = url.clone();
        setup.ca_file = None;
        let extra = format!("    tls: {{ pin_sha256: \"{pin}\" }}\n");
        setup.extra = &extra;
        let r = run(&setup, Mode::Plan).await.0;
        assert_eq!(r.unwrap().plan.scope.directory_users, 5, "{url}");
    }

    // Another pin: refused before any bind, naming the presented fingerprint.
    let mut wrong = fingerprint.clone().into_bytes();
    wrong[0] = if wrong[0] == b'0' { b'1' } else { b'0' };
    let wrong = String::from_utf8(wrong).unwrap();
    let mut setup = Setup::new(&ldap);
    setup.url = ldap.ldaps_url();
    setup.ca_file = None;
    let extra = format!("    tls: {{ pin_sha256: \"{wrong}\" }}\n");
    setup.extra = &extra;
    let err = run(&setup, Mode::Plan).await.0.unwrap_err().to_string();
    assert!(
        err.contains(&format!(
            "it is not the certificate source.ldap.tls.pin_sha256 names ({wrong})"
        )) && err.contains(&format!("SHA-256 fingerprint {fingerprint}"))
            && !err.contains("bind as"),
        "{err}"
    );
}

#[tokio::test]
async fn continuation_references_fail_the_read_or_are_left_out_with_references_ignore() {
    let ldap = tls_server();
    ldap.load_ldif_str(
        "dn: ou=Elsewhere,ou=customers,dc=example,dc=com\nobjectClass: referral\nobjectClass: extensibleObject\nou: Elsewhere\nref: ldap://ldap.other.example/ou=Elsewhere,dc=other,dc=example\n",
    );
    let mut setup = Setup::new(&ldap);
    let err = run(&setup, Mode::Plan).await.0.unwrap_err().to_string();
    assert!(
        err.contains("continuation references (referrals) to ldap://ldap.other.example/ou=Elsewhere,dc=other,dc=example")
            && err.contains("references: ignore"),
        "the default for openldap: {err}"
    );
    setup.extra = "    references: ignore\n";
    let r = run(&setup, Mode::Plan).await.0.unwrap();
    assert_eq!(r.plan.scope.directory_users, 5);
    assert_eq!(r.plan.scope.directory_customers, 3);
}

#[tokio::test]
async fn a_referral_result_fails_the_read_even_with_references_ignore() {
    // A base outside the server's suffix: slapd answers with its default
    // referral (result code 10), never entries.
    let ldap = Slapd::builder()
        .tls()
        .default_referral("ldap://ldap.other.example/")
        .start();
    ldap.load_base();
    let mut setup = Setup::new(&ldap);
    setup.users_base = "ou=people,dc=other,dc=example";
    setup.extra = "    references: ignore\n";
    let (r, emu) = run(&setup, Mode::Plan).await;
    let err = r.unwrap_err().to_string();
    assert!(
        err.contains("search of ou=people,dc=other,dc=example returned a referral (ldap://ldap.other.example/"),
        "{err}"
    );
    assert_eq!(emu.handle.stats().mutations, 0);
}

#[test]
fn the_ldap_example_configs_load() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for name in ["config/ldap.example.yaml", "config/ldap-ad.example.yaml"] {
        let config = Config::load(&root.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let dirsync::config::SourceSettings::Ldap(ldap) = &config.source else {
            panic!("{name}: an LDAP source");
        };
        if name.contains("-ad") {
            assert!(ldap.domain_scope && ldap.ignore_references && ldap.unassigned_absent);
            assert_eq!(
                ldap.users_base, "DC=corp,DC=example,DC=com",
                "the domain root"
            );
        }
    }
}

/// A server that presents the pinned certificate without holding its key
/// (it signs the handshake with another): the pin is no name-and-date
/// waiver for the signature, so the handshake fails.
#[tokio::test]
async fn a_pinned_certificate_presented_without_its_key_fails_the_handshake() {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use std::sync::Arc;

    #[derive(Debug)]
    struct Impostor(Arc<rustls::sign::CertifiedKey>);
    impl rustls::server::ResolvesServerCert for Impostor {
        fn resolve(
            &self,
            _: rustls::server::ClientHello<'_>,
        ) -> Option<Arc<rustls::sign::CertifiedKey>> {
            Some(self.0.clone())
        }
    }

    let ca = TestCa::new("dirsync impostor test CA");
    let (cert_pem, _key) = ca.server_cert_for(&[]);
    let (_other_cert, other_key) = ca.server_cert_for(&[]);
    let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
    let pin = dirsync::source::ldap::colon_hex(&dirsync::source::ldap::sha256(&cert).unwrap());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let signer = provider
        .key_provider
        .load_private_key(PrivateKeyDer::from_pem_slice(other_key.as_bytes()).unwrap())
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Impostor(Arc::new(
            rustls::sign::CertifiedKey::new(vec![cert], signer),
        ))));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut tcp, _) = listener.accept().unwrap();
        let mut tls = rustls::ServerConnection::new(Arc::new(config)).unwrap();
        // Until the client gives up on the handshake.
        while tls.complete_io(&mut tcp).is_ok() && tls.is_handshaking() {}
    });

    let ldap = Slapd::start(); // for Setup only: never contacted
    let mut setup = Setup::new_without_tls(&ldap);
    setup.url = format!("ldaps://127.0.0.1:{port}");
    let extra = format!("    tls: {{ pin_sha256: \"{pin}\" }}\n");
    setup.extra = &extra;
    let err = run(&setup, Mode::Plan).await.0.unwrap_err().to_string();
    server.join().unwrap();
    assert!(
        err.contains(&format!("cannot connect to ldaps://127.0.0.1:{port}"))
            && err.contains("BadSignature"),
        "{err}"
    );
}
