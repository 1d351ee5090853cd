//! The HTTP/JSON source against local HTTP servers on 127.0.0.1: every
//! pagination style, a SCIM 2.0 server, retries, and the failures that must
//! delete nothing (repeating cursor, malformed JSON, wrong content type,
//! oversized response, a server past the deadline).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use dirsync::apply::Quiet;
use dirsync::config::Config;
use dirsync::run::{reconcile, Connection, Mode, Reconcile, RunError};
use serde_json::{json, Value};

use crate::support::*;

/// What the test server does; changeable while it runs.
#[derive(Clone, Debug, PartialEq)]
enum Behaviour {
    Serve,
    RepeatCursor,
    MalformedJson,
    Html,
    Huge,
    Slow,
}

struct ServerState {
    users: Mutex<Vec<Value>>,
    groups: Vec<Value>,
    behaviour: Mutex<Behaviour>,
    /// The next requests are answered with these statuses, in order (429, 503...).
    fail_with: Mutex<Vec<u16>>,
    requests: AtomicU32,
}

fn user(i: usize, customers: usize) -> Value {
    let c = i % customers;
    json!({"id": format!("u{i}"), "email": format!("user{i}@x.example"), "name": {"formatted": format!("User {i}")}, "org": {"id": format!("c{c}"), "name": format!("Customer {c}")}})
}

fn params(q: &HashMap<String, String>, name: &str, default: usize) -> usize {
    q.get(name).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn json_response(body: Value, headers: &[(&str, String)]) -> Response {
    let mut r = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response();
    for (k, v) in headers {
        r.headers_mut().insert(
            axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    r
}

async fn users_handler(
    style: &'static str,
    State(s): State<Arc<ServerState>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    s.requests.fetch_add(1, Ordering::SeqCst);
    let failure = {
        let mut statuses = s.fail_with.lock().unwrap();
        (!statuses.is_empty()).then(|| statuses.remove(0))
    };
    if let Some(status) = failure {
        return (
            StatusCode::from_u16(status).unwrap(),
            [(header::RETRY_AFTER, "0")],
            "busy",
        )
            .into_response();
    }
    let behaviour = s.behaviour.lock().unwrap().clone();
    match behaviour {
        Behaviour::MalformedJson => {
            return (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                "{\"data\": [",
            )
                .into_response()
        }
        Behaviour::Html => {
            return (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "text/html")],
                "<html>login</html>",
            )
                .into_response()
        }
        Behaviour::Huge => {
            return json_response(json!({"data": [], "padding": "x".repeat(100_000)}), &[])
        }
        Behaviour::Slow => tokio::time::sleep(Duration::from_secs(5)).await,
        _ => {}
    }
    let users = s.users.lock().unwrap().clone();
    let n = users.len();
    match style {
        "none" => json_response(json!({"data": users}), &[]),
        "link" => {
            let page = params(&q, "page", 1);
            let size = 7;
            let chunk: Vec<Value> = users
                .iter()
                .skip((page - 1) * size)
                .take(size)
                .cloned()
                .collect();
            let mut headers = vec![];
            if page * size < n {
                headers.push((
                    "link",
                    format!(
                        "</users-link?page={}>; rel=\"next\", </users-link?page=1>; rel=\"first\"",
                        page + 1
                    ),
                ));
            }
            json_response(Value::Array(chunk), &headers)
        }
        "cursor" => {
            let at = params(&q, "cursor", 0);
            let chunk: Vec<Value> = users.iter().skip(at).take(6).cloned().collect();
            let next = if behaviour == Behaviour::RepeatCursor {
                json!("6")
            } else if at + 6 < n {
                json!((at + 6).to_string())
            } else {
                Value::Null
            };
            json_response(json!({"data": chunk, "meta": {"next": next}}), &[])
        }
        "page" => {
            let page = params(&q, "page", 1);
            let size = params(&q, "per_page", 10);
            json_response(
                json!({"data": users.iter().skip((page - 1) * size).take(size).collect::<Vec<_>>()}),
                &[],
            )
        }
        "offset" => {
            let offset = params(&q, "offset", 0);
            let limit = params(&q, "limit", 10);
            json_response(
                json!({"data": users.iter().skip(offset).take(limit).collect::<Vec<_>>()}),
                &[],
            )
        }
        _ => unreachable!(),
    }
}

/// SCIM 2.0 list responses (`startIndex` from 1, `count`).
fn scim_list(all: &[Value], q: &HashMap<String, String>) -> Response {
    let start = params(q, "startIndex", 1).max(1);
    let count = params(q, "count", 100);
    let page: Vec<Value> = all.iter().skip(start - 1).take(count).cloned().collect();
    let mut r = json_response(
        json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"], "totalResults": all.len(), "startIndex": start, "itemsPerPage": page.len(), "Resources": page}),
        &[],
    );
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        "application/scim+json".parse().unwrap(),
    );
    r
}

async fn scim_users(
    State(s): State<Arc<ServerState>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    s.requests.fetch_add(1, Ordering::SeqCst);
    if headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        != Some("Bearer scim-secret-3f9a")
    {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let users = s.users.lock().unwrap().clone();
    scim_list(&users, &q)
}

async fn basic_users(State(s): State<Arc<ServerState>>, headers: HeaderMap) -> Response {
    use base64::Engine;
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("svc:basic-pw-77")
    );
    let key_ok = headers.get("x-api-key").and_then(|v| v.to_str().ok()) == Some("key-5150");
    let basic_ok = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        == Some(expected.as_str());
    let version_ok = headers.get("x-api-version").and_then(|v| v.to_str().ok()) == Some("2");
    if !(key_ok || basic_ok) || !version_ok {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let users = s.users.lock().unwrap().clone();
    json_response(json!({"data": users}), &[])
}

async fn scim_groups(
    State(s): State<Arc<ServerState>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    s.requests.fetch_add(1, Ordering::SeqCst);
    scim_list(&s.groups, &q)
}

struct Server {
    url: String,
    state: Arc<ServerState>,
}

async fn server(users: Vec<Value>, groups: Vec<Value>) -> Server {
    let state = Arc::new(ServerState {
        users: Mutex::new(users),
        groups,
        behaviour: Mutex::new(Behaviour::Serve),
        fail_with: Mutex::new(Vec::new()),
        requests: AtomicU32::new(0),
    });
    let app = Router::new()
        .route("/users-none", get(|s, q| users_handler("none", s, q)))
        .route("/users-link", get(|s, q| users_handler("link", s, q)))
        .route("/users-cursor", get(|s, q| users_handler("cursor", s, q)))
        .route("/users-page", get(|s, q| users_handler("page", s, q)))
        .route("/users-offset", get(|s, q| users_handler("offset", s, q)))
        .route("/scim/v2/Users", get(scim_users))
        .route("/scim/v2/Groups", get(scim_groups))
        .route("/protected", get(basic_users))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Server { url, state }
}

const GENERIC_MAPPING: &str = r#"mapping:
  customer:
    external_id: $.org.id
    name: $.org.name
  user:
    external_id: $.id
    customer: $.org.id
    email: $.email
    name: $.name.formatted
"#;

/// Writes a config (source block as given) and runs it against `emu`.
async fn run_source(
    source: &str,
    mapping: &str,
    emu: &dirsync::emulator::RunningEmulator,
    mode: Mode,
) -> Result<Reconcile, RunError> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), TOKEN).unwrap();
    std::fs::write(dir.path().join("scim-token"), "scim-secret-3f9a").unwrap();
    let text = format!(
        "platform:\n  url: {}\n  token: {{ file: token }}\n  requests_per_second: 1000\nsource:\n{source}{mapping}policy:\n  max_shrink_percent: 100\n",
        emu.url()
    );
    let path = dir.path().join("dirsync.yaml");
    std::fs::write(&path, text).unwrap();
    let config = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let connection = Connection::open(&config.platform).await.unwrap();
    reconcile(&config, &connection, mode, &Quiet).await
}

fn generic(url: &str, path: &str, records: &str, pagination: &str) -> String {
    format!("  http:\n    users:\n      url: {url}{path}\n      records: \"{records}\"\n      pagination: {pagination}\n    max_attempts: 4\n")
}

#[tokio::test]
async fn every_pagination_style_reads_every_record() {
    let users: Vec<Value> = (0..23).map(|i| user(i, 3)).collect();
    let srv = server(users, vec![]).await;
    let emu = start_emulator(None).await;
    for (path, records, pagination, pages) in [
        ("/users-none", "$.data[*]", "{ style: none }", 1),
        ("/users-link", "$[*]", "{ style: link }", 4),
        (
            "/users-cursor",
            "$.data[*]",
            "{ style: cursor, cursor_path: \"$.meta.next\", param: cursor }",
            4,
        ),
        (
            "/users-page",
            "$.data[*]",
            "{ style: page, page_size: 10 }",
            3,
        ),
        (
            "/users-offset",
            "$.data[*]",
            "{ style: offset, page_size: 5 }",
            5,
        ),
    ] {
        srv.state.requests.store(0, Ordering::SeqCst);
        let r = run_source(
            &generic(&srv.url, path, records, pagination),
            GENERIC_MAPPING,
            &emu,
            Mode::Plan,
        )
        .await
        .unwrap();
        assert_eq!(
            (
                r.plan.scope.directory_users,
                r.plan.scope.directory_customers
            ),
            (23, 3),
            "{path}"
        );
        assert_eq!(
            srv.state.requests.load(Ordering::SeqCst),
            pages,
            "{path}: requests"
        );
    }
}

#[tokio::test]
async fn throttling_and_server_errors_are_retried_then_the_read_completes() {
    let srv = server((0..5).map(|i| user(i, 1)).collect(), vec![]).await;
    let emu = start_emulator(None).await;
    *srv.state.fail_with.lock().unwrap() = vec![429, 503, 500];
    let r = run_source(
        &generic(&srv.url, "/users-none", "$.data[*]", "{ style: none }"),
        GENERIC_MAPPING,
        &emu,
        Mode::Plan,
    )
    .await
    .unwrap();
    assert_eq!(r.plan.scope.directory_users, 5);
    assert_eq!(
        srv.state.requests.load(Ordering::SeqCst),
        4,
        "429, 503, 500, then the answer"
    );
}

/// Syncs once from a good server, switches it to `behaviour`, and checks the
/// next run fails with `expected` in its message and sends no mutation.
async fn failure_deletes_nothing(behaviour: Behaviour, source_extra: &str, expected: &str) {
    let srv = server((0..10).map(|i| user(i, 2)).collect(), vec![]).await;
    let emu = start_emulator(None).await;
    let source = format!(
        "{}{source_extra}",
        generic(
            &srv.url,
            "/users-cursor",
            "$.data[*]",
            "{ style: cursor, cursor_path: \"$.meta.next\", param: cursor }"
        )
    );
    let first = run_source(
        &source,
        GENERIC_MAPPING,
        &emu,
        Mode::Apply {
            allow_deletes: false,
        },
    )
    .await
    .unwrap();
    assert_eq!(first.report.unwrap().failed(), 0);
    let before = emu.handle.stats().mutations;
    *srv.state.behaviour.lock().unwrap() = behaviour;
    let err = run_source(
        &source,
        GENERIC_MAPPING,
        &emu,
        Mode::Apply {
            allow_deletes: true,
        },
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains(expected), "{err}");
    assert_eq!(
        emu.handle.stats().mutations,
        before,
        "a failed read sends nothing"
    );
}

#[tokio::test]
async fn a_repeating_cursor_ends_the_read_as_a_failure() {
    failure_deletes_nothing(
        Behaviour::RepeatCursor,
        "",
        "the next page repeats one already read",
    )
    .await;
}

#[tokio::test]
async fn malformed_json_is_a_failure() {
    failure_deletes_nothing(Behaviour::MalformedJson, "", "malformed JSON").await;
}

#[tokio::test]
async fn a_wrong_content_type_is_a_failure() {
    failure_deletes_nothing(
        Behaviour::Html,
        "",
        "expected JSON, got content type \"text/html\"",
    )
    .await;
}

#[tokio::test]
async fn an_oversized_response_is_a_failure() {
    failure_deletes_nothing(
        Behaviour::Huge,
        "    max_response_bytes: 50000\n",
        "larger than the limit of 50000 bytes",
    )
    .await;
}

#[tokio::test]
async fn a_slow_server_past_the_deadline_is_a_failure() {
    failure_deletes_nothing(
        Behaviour::Slow,
        "    read_deadline_secs: 1\n",
        "longer than its deadline of 1s",
    )
    .await;
}

#[tokio::test]
async fn a_record_with_a_wrong_type_is_refused_with_its_index_and_pointer() {
    let mut users: Vec<Value> = (0..20).map(|i| user(i, 2)).collect();
    users[4]["email"] = json!({"work": "user4@x.example"});
    users[7].as_object_mut().unwrap().remove("email");
    let srv = server(users, vec![]).await;
    let emu = start_emulator(None).await;
    let r = run_source(
        &generic(&srv.url, "/users-none", "$.data[*]", "{ style: none }"),
        GENERIC_MAPPING,
        &emu,
        Mode::Plan,
    )
    .await
    .unwrap();
    let refused: Vec<String> = r.plan.refused.iter().map(ToString::to_string).collect();
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert!(
        refused[0].ends_with(
            "/users-none record 4: path $.email: expected text, found an object at /email"
        ),
        "{}",
        refused[0]
    );
    assert!(
        refused[1].ends_with("/users-none record 7: email (path $.email): missing required value"),
        "{}",
        refused[1]
    );
    assert_eq!(r.plan.scope.directory_users, 18);
}

fn scim_user(i: usize, org: &str, active: bool) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],
        "id": format!("scim-{i}"),
        "externalId": format!("hr-{i}"),
        "userName": format!("user{i}"),
        "name": {"formatted": format!("User {i}"), "givenName": "User"},
        "active": active,
        "emails": [{"value": format!("home{i}@mail.example"), "type": "home"}, {"value": format!("user{i}@{org}.example"), "type": "work", "primary": true}],
        "phoneNumbers": [{"value": format!("+1 555 01{i:02}"), "type": "work"}],
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"organization": org, "department": "Sales"}
    })
}

const SCIM_MAPPING: &str = r#"mapping:
  customer:
    external_id: $['urn:ietf:params:scim:schemas:extension:enterprise:2.0:User'].organization
    name: $['urn:ietf:params:scim:schemas:extension:enterprise:2.0:User'].organization
  user:
    external_id: $.externalId || $.id
    customer: $['urn:ietf:params:scim:schemas:extension:enterprise:2.0:User'].organization
    email: $.emails[?@.primary==true].value || $.emails[0].value
    name: $.name.formatted || $.userName
    phone: $.phoneNumbers[0].value
"#;

#[tokio::test]
async fn a_scim_server_with_several_pages_syncs_and_converges() {
    let mut users: Vec<Value> = (0..25)
        .map(|i| scim_user(i, if i % 2 == 0 { "acme" } else { "globex" }, true))
        .collect();
    users[3]["active"] = json!(false);
    let srv = server(users, vec![]).await;
    let emu = start_emulator(None).await;
    let source = format!(
        "  http:\n    preset: scim\n    base_url: {}/scim/v2\n    users:\n      pagination: {{ style: scim, count: 10 }}\n    auth:\n      bearer: {{ file: scim-token }}\n",
        srv.url
    );
    let r = run_source(
        &source,
        SCIM_MAPPING,
        &emu,
        Mode::Apply {
            allow_deletes: false,
        },
    )
    .await
    .unwrap();
    assert_eq!(r.report.as_ref().unwrap().failed(), 0);
    assert_eq!(
        (
            r.plan.scope.directory_users,
            r.plan.scope.directory_customers
        ),
        (24, 2),
        "user 3 is inactive: absent"
    );
    assert_eq!(
        srv.state.requests.load(Ordering::SeqCst),
        3,
        "pages of 10: 1, 11, 21"
    );
    let state = emu.handle.state();
    let u0 = state
        .users
        .values()
        .find(|u| u.external_id.as_deref() == Some("hr-0"))
        .unwrap();
    assert_eq!(
        (u0.email.as_str(), u0.name.as_str(), u0.phone.as_str()),
        ("user0@acme.example", "User 0", "+1 555 0100"),
        "the primary email"
    );

    let again = run_source(
        &source,
        SCIM_MAPPING,
        &emu,
        Mode::Apply {
            allow_deletes: false,
        },
    )
    .await
    .unwrap();
    assert!(again.plan.is_empty(), "{:?}", again.plan.operations);

    // Deactivating a user removes it on the next run.
    srv.state.users.lock().unwrap()[5]["active"] = json!(false);
    let third = run_source(
        &source,
        SCIM_MAPPING,
        &emu,
        Mode::Apply {
            allow_deletes: false,
        },
    )
    .await
    .unwrap();
    assert!(
        matches!(
            third.plan.operations[..],
            [dirsync::plan::Operation::DeleteUser { ref external_id, why: dirsync::plan::DeleteReason::Disabled, .. }]
                if external_id == "hr-5"
        ),
        "the deactivated SCIM user is deleted as disabled: {:?}",
        third.plan.operations
    );
}

#[tokio::test]
async fn scim_groups_can_be_the_customers() {
    let users: Vec<Value> = (0..6).map(|i| scim_user(i, "ignored", true)).collect();
    let groups = vec![
        json!({"id": "g-acme", "displayName": "Acme", "members": [{"value": "scim-0"}, {"value": "scim-1"}, {"value": "scim-2"}]}),
        json!({"id": "g-globex", "displayName": "Globex", "members": [{"value": "scim-3"}, {"value": "scim-4"}, {"value": "scim-2"}]}),
    ];
    let srv = server(users, groups).await;
    let emu = start_emulator(None).await;
    let source = format!(
        "  http:\n    preset: scim\n    base_url: {}/scim/v2\n    customers: {{}}\n    auth:\n      bearer: {{ file: scim-token }}\n",
        srv.url
    );
    let mapping = r#"mapping:
  customer:
    external_id: $.id
    name: $.displayName
  user:
    external_id: $.externalId
    customer: customer
    email: $.emails[?@.primary==true].value
    name: $.name.formatted
"#;
    let r = run_source(&source, mapping, &emu, Mode::Plan)
        .await
        .unwrap();
    assert_eq!(r.plan.scope.directory_customers, 2);
    assert_eq!(
        r.plan.scope.directory_users, 4,
        "scim-2 is in two groups: refused; scim-5 is in none: absent"
    );
    let refused: Vec<String> = r.plan.refused.iter().map(ToString::to_string).collect();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(
        refused
            .iter()
            .any(|m| m.contains("record 2: is a member of 2 customer groups")),
        "{refused:?}"
    );

    // `unassigned_users: refuse`: a user in no group is a refused record.
    let refuse = source.replace(
        "    customers: {}\n",
        "    customers: {}\n    unassigned_users: refuse\n",
    );
    let r = run_source(&refuse, mapping, &emu, Mode::Plan)
        .await
        .unwrap();
    let refused: Vec<String> = r.plan.refused.iter().map(ToString::to_string).collect();
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert!(
        refused
            .iter()
            .any(|m| m.contains("record 5: is a member of no customer group")),
        "{refused:?}"
    );
}

/// Issue 11: offboarding by group removal. A user taken out of its only
/// group was refused (and so protected) instead of deleted.
#[tokio::test]
async fn a_user_taken_out_of_its_scim_group_is_deleted_within_the_budget() {
    let users: Vec<Value> = (0..30).map(|i| scim_user(i, "ignored", true)).collect();
    let members = |ids: std::ops::Range<usize>| -> Vec<Value> {
        ids.map(|i| json!({"value": format!("scim-{i}")})).collect()
    };
    let groups = |acme: Vec<Value>| {
        vec![
            json!({"id": "g-acme", "displayName": "Acme", "members": acme}),
            json!({"id": "g-globex", "displayName": "Globex", "members": members(15..30)}),
        ]
    };
    let before = server(users.clone(), groups(members(0..15))).await;
    // scim-3 leaves Acme.
    let after = server(
        users,
        groups(
            members(0..15)
                .into_iter()
                .filter(|m| m["value"] != "scim-3")
                .collect(),
        ),
    )
    .await;
    let emu = start_emulator(None).await;
    let source = |srv: &Server| {
        format!(
            "  http:\n    preset: scim\n    base_url: {}/scim/v2\n    customers: {{}}\n    auth:\n      bearer: {{ file: scim-token }}\n",
            srv.url
        )
    };
    let mapping = r#"mapping:
  customer:
    external_id: $.id
    name: $.displayName
  user:
    external_id: $.externalId
    customer: customer
    email: $.emails[?@.primary==true].value
    name: $.name.formatted
"#;
    let apply = Mode::Apply {
        allow_deletes: true,
    };
    let first = run_source(&source(&before), mapping, &emu, apply)
        .await
        .unwrap();
    assert_eq!(first.plan.scope.directory_users, 30);
    let second = run_source(&source(&after), mapping, &emu, apply)
        .await
        .unwrap();
    assert!(second.blocked.is_empty(), "{:?}", second.blocked);
    assert!(second.plan.refused.is_empty(), "{:?}", second.plan.refused);
    assert!(
        matches!(second.plan.operations[..], [dirsync::plan::Operation::DeleteUser { ref external_id, .. }] if external_id == "hr-3"),
        "{:?}",
        second.plan.operations
    );
}

#[tokio::test]
async fn basic_auth_api_keys_and_extra_headers_reach_the_server_and_secrets_stay_out_of_errors() {
    let srv = server((0..3).map(|i| user(i, 1)).collect(), vec![]).await;
    let emu = start_emulator(None).await;
    std::env::set_var("DIRSYNC_TEST_BASIC_PW", "basic-pw-77");
    std::env::set_var("DIRSYNC_TEST_API_KEY", "key-5150");
    let with_auth = |auth: &str| {
        format!(
            "  http:\n    users:\n      url: {}/protected\n      records: \"$.data[*]\"\n    headers: {{ X-Api-Version: \"2\" }}\n    auth:\n      {auth}\n",
            srv.url
        )
    };
    let basic = with_auth("basic: { username: svc, password: { env: DIRSYNC_TEST_BASIC_PW } }");
    assert_eq!(
        run_source(&basic, GENERIC_MAPPING, &emu, Mode::Plan)
            .await
            .unwrap()
            .plan
            .scope
            .directory_users,
        3
    );
    let key = with_auth("api_key: { header: X-Api-Key, value: { env: DIRSYNC_TEST_API_KEY } }");
    assert_eq!(
        run_source(&key, GENERIC_MAPPING, &emu, Mode::Plan)
            .await
            .unwrap()
            .plan
            .scope
            .directory_users,
        3
    );
    // A wrong secret: the 401 is reported without the secret.
    let wrong = with_auth("api_key: { header: X-Api-Key, value: { file: token } }");
    let err = run_source(&wrong, GENERIC_MAPPING, &emu, Mode::Plan)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("HTTP 401") && !err.contains(TOKEN), "{err}");
}

#[tokio::test]
async fn retries_are_bounded_and_a_server_that_stays_down_deletes_nothing() {
    let srv = server((0..5).map(|i| user(i, 1)).collect(), vec![]).await;
    let emu = start_emulator(None).await;
    let source = generic(&srv.url, "/users-none", "$.data[*]", "{ style: none }");
    run_source(
        &source,
        GENERIC_MAPPING,
        &emu,
        Mode::Apply {
            allow_deletes: false,
        },
    )
    .await
    .unwrap();
    let before = emu.handle.stats().mutations;
    srv.state.requests.store(0, Ordering::SeqCst);
    *srv.state.fail_with.lock().unwrap() = vec![503; 10];
    let err = run_source(
        &source,
        GENERIC_MAPPING,
        &emu,
        Mode::Apply {
            allow_deletes: true,
        },
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains("gave up after 4 attempts"),
        "{err}"
    );
    assert_eq!(srv.state.requests.load(Ordering::SeqCst), 4);
    assert_eq!(emu.handle.stats().mutations, before);
}
