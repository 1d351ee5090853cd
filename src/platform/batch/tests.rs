use super::*;
use serde_json::json;

const CREATE: &str = "mutation CreateCustomerUser($input: CreateCustomerUserInput!) {
  createCustomerUser(input: $input) { user { id } errors { field messages } }
}";

const LIST: &str = "query ListCustomers($offset: Int, $first: Int!) {
  customers(first: $first, offset: $offset, sortBy: [{ field: CREATED_AT, direction: ASC }]) {
    nodes { ...CustomerFields }
    totalCount
  }
}
fragment CustomerFields on Customer { id name }";

fn part(query: &'static str, variables: Json) -> Part {
    let Json::Object(variables) = variables else {
        panic!("not an object")
    };
    Part { query, variables }
}

#[test]
fn mutations_are_aliased_with_their_variables_renamed() {
    let composed = compose(&[
        part(CREATE, json!({"input": {"email": "a@x"}})),
        part(CREATE, json!({"input": {"email": "b@x"}})),
    ])
    .unwrap();
    let q = &composed.query;
    assert!(q.starts_with("mutation Batch($input_0: CreateCustomerUserInput!, $input_1: CreateCustomerUserInput!)"), "{q}");
    assert!(
        q.contains("a0_0: createCustomerUser(input: $input_0)"),
        "{q}"
    );
    assert!(
        q.contains("a1_0: createCustomerUser(input: $input_1)"),
        "{q}"
    );
    assert_eq!(composed.variables["input_1"], json!({"email": "b@x"}));
    assert_eq!(
        composed.keys,
        vec![
            vec![("a0_0".to_owned(), "createCustomerUser".to_owned())],
            vec![("a1_0".to_owned(), "createCustomerUser".to_owned())]
        ]
    );
    // What the platform's parser reads.
    graphql_parser::query::parse_query::<String>(q).unwrap();
}

#[test]
fn pages_share_one_copy_of_their_fragments_and_rename_nested_variables() {
    let composed = compose(&[
        part(LIST, json!({"offset": 100, "first": 100})),
        part(LIST, json!({"offset": 200, "first": 100})),
    ])
    .unwrap();
    let q = &composed.query;
    assert_eq!(q.matches("fragment CustomerFields").count(), 1, "{q}");
    assert!(
        q.contains("a1_0: customers(first: $first_1, offset: $offset_1"),
        "{q}"
    );
    assert_eq!(composed.variables["offset_1"], json!(200));
    // A variable left out (None) stays out.
    let composed = compose(&[part(LIST, json!({"first": 100}))]).unwrap();
    assert!(!composed.variables.contains_key("offset_0"));
}

#[test]
fn queries_and_mutations_are_never_mixed() {
    let err = compose(&[part(CREATE, json!({})), part(LIST, json!({}))]).unwrap_err();
    assert!(err.contains("mixed"), "{err}");
}

#[test]
fn each_part_gets_its_own_answer_or_its_own_errors() {
    let composed = compose(&[
        part(CREATE, json!({"input": {}})),
        part(CREATE, json!({"input": {}})),
        part(CREATE, json!({"input": {}})),
    ])
    .unwrap();
    let answer: graphql_client::Response<Map<String, Json>> = serde_json::from_value(json!({
        "data": {
            "a0_0": {"user": {"id": "1"}, "errors": []},
            "a1_0": null,
            "a2_0": {"user": null, "errors": [{"field": "email", "messages": ["taken"]}]}
        },
        "errors": [{"message": "Role matching query does not exist.", "path": ["a1_0"]}]
    }))
    .unwrap();
    let parts = split(&composed, answer);
    assert_eq!(
        parts[0].as_ref().unwrap()["createCustomerUser"]["user"]["id"],
        json!("1")
    );
    assert_eq!(
        parts[1].as_ref().unwrap_err(),
        &vec!["Role matching query does not exist.".to_owned()]
    );
    // A payload error is the caller's to read, as unbatched.
    assert_eq!(
        parts[2].as_ref().unwrap()["createCustomerUser"]["errors"][0]["field"],
        json!("email")
    );
}

#[test]
fn a_missing_answer_is_an_error_never_an_empty_success() {
    let composed = compose(&[part(CREATE, json!({"input": {}}))]).unwrap();
    let answer: graphql_client::Response<Map<String, Json>> =
        serde_json::from_value(json!({"data": {}})).unwrap();
    let parts = split(&composed, answer);
    assert!(parts[0].is_err());
}
