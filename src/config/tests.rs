//! The config file as a whole: defaults, keys, error positions.

use super::*;
use crate::platform::{AuthMethod, SecretSource};

pub(crate) const MINIMAL: &str = "\
platform:
  emulator:
    state: state.json
source:
  csv:
    users_file: users.csv
mapping:
  customer:
    external_id: customer_id
    name: customer_name
  user:
    external_id: id
    customer: customer_id
    email: email
";

pub(crate) fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("conf/dirsync.yaml"))
}

#[test]
fn a_minimal_config_gets_the_documented_defaults() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.policy, Policy::default());
    assert_eq!(
        c.policy.delete_users,
        Budget {
            max_count: 100,
            max_percent: 10.0
        }
    );
    assert_eq!(c.policy.delete_customers, None);
    assert_eq!(c.mapping.roles.default, "Member");
    assert_eq!(c.platform.requests_per_second.get(), 40);
    let SourceSettings::Csv(csv) = &c.source else {
        panic!("csv source expected")
    };
    assert_eq!(
        csv.users_file,
        Path::new("conf/users.csv"),
        "relative to the config file"
    );
    assert_eq!(csv.delimiter, b',');
}

#[test]
fn an_unknown_key_is_an_error_naming_key_line_and_column() {
    let text = MINIMAL.replace("    email: email\n", "    email: email\n    emial: mail\n");
    let err = parse(&text).unwrap_err();
    let shown = err.to_string();
    assert!(
        shown.starts_with("conf/dirsync.yaml:15:5: mapping.user.emial: unknown field `emial`"),
        "{shown}"
    );
}

#[test]
fn a_wrong_type_names_the_key_path() {
    let text = format!("{MINIMAL}policy:\n  delete_users:\n    max_count: lots\n");
    let err = parse(&text).unwrap_err();
    assert_eq!(err.key(), Some("policy.delete_users.max_count"));
    assert!(
        err.to_string()
            .starts_with("conf/dirsync.yaml:17:16: policy.delete_users.max_count: invalid type"),
        "{err}"
    );
}

#[test]
fn an_inline_token_is_refused() {
    let text = MINIMAL.replace(
        "platform:\n  emulator:\n    state: state.json\n",
        "platform:\n  url: https://app.prismatic.io\n  token: eyJhbGciOi\n",
    );
    let err = parse(&text).unwrap_err();
    assert_eq!(err.key(), Some("platform.token"), "{err}");
    assert!(
        !err.to_string().contains("eyJhbGciOi"),
        "the value is not echoed: {err}"
    );
}

#[test]
fn a_token_source_names_one_place_or_several() {
    let text = MINIMAL.replace(
        "platform:\n  emulator:\n    state: state.json\n",
        "platform:\n  url: https://app.prismatic.io\n  token: { env: A, file: b }\n",
    );
    assert!(matches!(
        parse(&text).unwrap().platform.auth,
        Some(AuthMethod::StaticToken(SecretSource::FirstOf(_)))
    ));
    let ok = MINIMAL.replace(
        "platform:\n  emulator:\n    state: state.json\n",
        "platform:\n  url: https://app.prismatic.io\n  token: { credential: prismatic-token }\n",
    );
    let c = parse(&ok).unwrap();
    assert!(
        matches!(c.platform.auth, Some(AuthMethod::StaticToken(SecretSource::Credential(ref n))) if n == "prismatic-token")
    );
}

#[test]
fn percentages_are_checked() {
    let text = format!("{MINIMAL}policy:\n  max_shrink_percent: 150\n");
    let err = parse(&text).unwrap_err();
    assert_eq!(err.key(), Some("policy.max_shrink_percent"));
}

#[test]
fn roles_match_case_insensitively_with_a_default() {
    let text = format!(
        "{MINIMAL}  roles:\n    map: {{ Admin: Admin, staff: Member }}\n    default: Member\n"
    );
    let c = parse(&text).unwrap();
    assert_eq!(c.mapping.roles.resolve(Some("ADMIN")), "Admin");
    assert_eq!(c.mapping.roles.resolve(Some("contractor")), "Member");
    assert_eq!(c.mapping.roles.resolve(None), "Member");
}

#[test]
fn scope_needs_an_external_id_and_the_prefix() {
    let mut p = Policy::default();
    assert!(p.in_scope(Some("x")));
    assert!(!p.in_scope(None));
    assert!(!p.in_scope(Some("")));
    p.external_id_prefix = Some("hr-".to_owned());
    assert!(p.in_scope(Some("hr-1")));
    assert!(!p.in_scope(Some("crm-1")));
}

#[test]
fn a_token_may_name_several_places_tried_credential_then_file_then_env() {
    let text = MINIMAL.replace(
        "platform:\n  emulator:\n    state: state.json\n",
        "platform:\n  url: https://app.prismatic.io\n  token: { env: PRISMATIC_API_KEY, file: token, credential: prismatic-token }\n",
    );
    let c = parse(&text).unwrap();
    let Some(AuthMethod::StaticToken(SecretSource::FirstOf(sources))) = &c.platform.auth else {
        panic!("several places expected: {:?}", c.platform.auth)
    };
    let order: Vec<String> = sources.iter().map(SecretSource::describe).collect();
    assert_eq!(
        order,
        [
            "systemd credential prismatic-token",
            "file conf/token",
            "environment variable PRISMATIC_API_KEY"
        ]
    );
    let empty = MINIMAL.replace(
        "platform:\n  emulator:\n    state: state.json\n",
        "platform:\n  url: https://app.prismatic.io\n  token: {}\n",
    );
    let err = parse(&empty).unwrap_err();
    assert_eq!(err.key(), Some("platform.token"));
    assert!(
        err.to_string()
            .contains("one or more of credential, file and env"),
        "{err}"
    );
}

/// The line and column an error names, and its key.
fn placed(text: &str) -> (String, Option<(usize, usize)>) {
    let err = parse(text).unwrap_err();
    (err.key().unwrap_or_default().to_owned(), err.position())
}

fn with_platform(platform: &str) -> String {
    MINIMAL.replace("platform:\n  emulator:\n    state: state.json\n", platform)
}

#[test]
fn a_percentage_over_100_names_its_line_and_column() {
    let text = format!("{MINIMAL}policy:\n  max_shrink_percent: 150\n");
    let err = parse(&text).unwrap_err();
    assert_eq!(
        err.to_string(),
        "conf/dirsync.yaml:16:23: policy.max_shrink_percent: must be a percentage from 0 to 100, not 150"
    );
}

#[test]
fn url_together_with_emulator_names_the_second_one() {
    let text =
        with_platform("platform:\n  url: https://x.example\n  emulator:\n    state: state.json\n");
    assert_eq!(placed(&text), ("platform".to_owned(), Some((3, 3))));
}

#[test]
fn a_malformed_url_names_its_value() {
    let text = with_platform("platform:\n  url: 'not a url'\n");
    assert_eq!(placed(&text), ("platform.url".to_owned(), Some((2, 8))));
}

#[test]
fn a_bad_delimiter_names_its_value() {
    let text = MINIMAL.replace(
        "    users_file: users.csv\n",
        "    users_file: users.csv\n    delimiter: ';;'\n",
    );
    assert_eq!(
        placed(&text),
        ("source.csv.delimiter".to_owned(), Some((7, 16)))
    );
}

#[test]
fn an_invalid_cron_expression_names_its_value() {
    let text = format!("{MINIMAL}schedule:\n  cron: \"*/15 * * *\"\n");
    assert_eq!(placed(&text), ("schedule.cron".to_owned(), Some((16, 9))));
}

#[test]
fn a_duplicate_key_names_the_duplicates_own_line() {
    let nested = MINIMAL.replace("    email: email\n", "    email: email\n    email: mail\n");
    let err = parse(&nested).unwrap_err();
    assert_eq!(
        err.to_string(),
        "conf/dirsync.yaml:15:5: mapping.user.email: is given twice (first at line 14); keep one"
    );
    let top = format!("{MINIMAL}policy:\n  adopt: true\npolicy:\n  adopt: false\n");
    assert_eq!(placed(&top), ("policy".to_owned(), Some((17, 1))));
    let in_a_map =
        format!("{MINIMAL}  roles:\n    map:\n      Admin: Admin\n      Admin: Member\n");
    assert_eq!(
        placed(&in_a_map),
        ("mapping.roles.map.Admin".to_owned(), Some((18, 7)))
    );
}

#[test]
fn a_utf8_bom_is_accepted_and_shifts_nothing() {
    assert!(parse(&format!("\u{feff}{MINIMAL}")).is_ok());
    let text = format!("\u{feff}{MINIMAL}policy:\n  max_shrink_percent: 150\n");
    assert_eq!(
        placed(&text),
        ("policy.max_shrink_percent".to_owned(), Some((16, 23)))
    );
}

#[test]
fn every_semantic_error_names_a_line_and_column() {
    let cases = [
        with_platform("platform:\n  url: https://x.example\n  max_concurrency: 0\n"),
        with_platform("platform:\n  url: https://x.example\n  tenant_id: t\n"),
        with_platform("platform:\n  url: https://x.example\n  connect_timeout_secs: 0\n"),
        with_platform("platform: {}\n"),
        MINIMAL.replace("    name: customer_name\n", "    name: '  '\n"),
        format!("{MINIMAL}policy:\n  apply_concurrency: 0\n"),
        format!("{MINIMAL}policy:\n  delete_customers:\n    max_percent: -1\n"),
        format!("{MINIMAL}metrics:\n  listen: localhost\n"),
        format!("{MINIMAL}schedule:\n  cron: '@hourly'\n  time_zone: Mars/Olympus\n"),
        MINIMAL.replace(
            "  csv:\n    users_file: users.csv\n",
            "  ldap:\n    url: http://dc\n    users: { base: 'dc=x' }\n    customers: { strategy: ancestor, base: 'dc=x' }\n",
        ),
        MINIMAL.replace(
            "  csv:\n    users_file: users.csv\n",
            "  http:\n    preset: scim\n",
        ),
    ];
    for text in cases {
        let err = parse(&text).unwrap_err();
        let Some((line, column)) = err.position() else {
            panic!("no position: {err}")
        };
        assert!(line >= 1 && column >= 1, "{err}");
        assert!(
            err.to_string()
                .starts_with(&format!("conf/dirsync.yaml:{line}:{column}: ")),
            "{err}"
        );
    }
}

#[test]
fn a_url_platform_without_a_token_needs_no_secret_to_validate() {
    // The environment is read when the connection opens, not when the config
    // is checked: the default token and a named env var behave alike.
    for platform in [
        "platform:\n  url: https://x.example\n",
        "platform:\n  url: https://x.example\n  token: { env: DIRSYNC_TEST_SURELY_UNSET }\n",
    ] {
        let c = parse(&with_platform(platform)).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(c.platform.target, PlatformTarget::Url(_)));
    }
}
