//! The contract between `graphql/schema.graphql` (what the client is
//! generated from) and the emulator's schema: every type, field and argument
//! of ours exists in the emulator with the same type, so the two cannot
//! drift apart silently.

use std::collections::BTreeMap;

use async_graphql::parser::parse_schema;
use async_graphql::parser::types::{TypeKind, TypeSystemDefinition};

/// A schema flattened to comparable facts:
/// `type.field` -> type, `type.field(arg)` -> type, `enum.VALUE`, kinds.
#[derive(Debug, Default)]
struct Facts {
    kinds: BTreeMap<String, &'static str>,
    members: BTreeMap<String, String>,
    /// Input fields that are required (`!`), which a client must send.
    required_inputs: BTreeMap<String, String>,
    roots: BTreeMap<&'static str, String>,
}

fn facts(sdl: &str) -> Facts {
    let doc = parse_schema(sdl).expect("schema parses");
    let mut f = Facts::default();
    f.roots.insert("query", "Query".to_owned());
    f.roots.insert("mutation", "Mutation".to_owned());
    for def in doc.definitions {
        match def {
            TypeSystemDefinition::Schema(s) => {
                if let Some(q) = &s.node.query {
                    f.roots.insert("query", q.node.to_string());
                }
                if let Some(m) = &s.node.mutation {
                    f.roots.insert("mutation", m.node.to_string());
                }
            }
            TypeSystemDefinition::Type(t) => {
                let name = t.node.name.node.to_string();
                let kind = match &t.node.kind {
                    TypeKind::Scalar => "scalar",
                    TypeKind::Object(o) => {
                        for field in &o.fields {
                            let fname = format!("{name}.{}", field.node.name.node);
                            for arg in &field.node.arguments {
                                f.members.insert(
                                    format!("{fname}({})", arg.node.name.node),
                                    arg.node.ty.node.to_string(),
                                );
                            }
                            f.members.insert(fname, field.node.ty.node.to_string());
                        }
                        "object"
                    }
                    TypeKind::InputObject(i) => {
                        for field in &i.fields {
                            let key = format!("{name}.{}", field.node.name.node);
                            let ty = field.node.ty.node.to_string();
                            if !field.node.ty.node.nullable {
                                f.required_inputs.insert(key.clone(), ty.clone());
                            }
                            f.members.insert(key, ty);
                        }
                        "input"
                    }
                    TypeKind::Enum(e) => {
                        for v in &e.values {
                            f.members.insert(
                                format!("{name}.{}", v.node.value.node),
                                "value".to_owned(),
                            );
                        }
                        "enum"
                    }
                    TypeKind::Interface(_) => "interface",
                    TypeKind::Union(_) => "union",
                };
                f.kinds.insert(name, kind);
            }
            TypeSystemDefinition::Directive(_) => {}
        }
    }
    f
}

/// Every disagreement between the client's schema and the emulator's.
fn drift(ours: &str, emulator: &str) -> Vec<String> {
    let ours = facts(ours);
    let theirs = facts(emulator);
    let mut problems = Vec::new();
    for (root, name) in &ours.roots {
        if theirs.roots.get(root) != Some(name) {
            problems.push(format!(
                "{root} root is {name} in ours, {:?} in the emulator",
                theirs.roots.get(root)
            ));
        }
    }
    for (name, kind) in &ours.kinds {
        match theirs.kinds.get(name) {
            None => problems.push(format!("type {name} is missing from the emulator")),
            Some(k) if k != kind => problems.push(format!(
                "type {name} is {kind} in ours, {k} in the emulator"
            )),
            Some(_) => {}
        }
    }
    for (member, ty) in &ours.members {
        match theirs.members.get(member) {
            None => problems.push(format!("{member} is missing from the emulator")),
            Some(t) if t != ty => {
                problems.push(format!("{member} is {ty} in ours, {t} in the emulator"))
            }
            Some(_) => {}
        }
    }
    for (member, ty) in &theirs.required_inputs {
        if !ours.members.contains_key(member) {
            problems.push(format!(
                "the emulator requires input {member}: {ty}, which ours does not have"
            ));
        }
    }
    problems
}

fn our_schema() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/graphql/schema.graphql"
    ))
    .unwrap()
}

#[test]
fn the_emulator_serves_every_type_field_and_argument_of_our_schema() {
    let problems = drift(&our_schema(), &dirsync::emulator::sdl());
    assert!(
        problems.is_empty(),
        "schema drift:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_contract_check_catches_a_changed_type_a_missing_argument_and_a_missing_field() {
    let emulator = dirsync::emulator::sdl();
    let ours = our_schema()
        .replace(
            "  phone: String!\n  role: Role!",
            "  phone: String\n  role: Role!",
        )
        .replace(
            "    customer_Isnull: Boolean\n",
            "    customer_Isnull: Boolean\n    customer_Exact: ID\n",
        )
        .replace("  level: Int!\n", "  level: Int!\n  color: String\n");
    let problems = drift(&ours, &emulator);
    assert!(
        problems
            .iter()
            .any(|p| p.contains("User.phone is String in ours, String! in the emulator")),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.contains("Query.users(customer_Exact) is missing")),
        "{problems:?}"
    );
    assert!(
        problems.iter().any(|p| p.contains("Role.color is missing")),
        "{problems:?}"
    );
}

#[test]
fn every_operation_file_names_only_what_our_schema_has() {
    // graphql_client checks this at build time; this test keeps the list of
    // operation files and the schema in one place, and fails on an unused file.
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/graphql");
    let source = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/platform/operations.rs"
    ))
    .unwrap();
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name == "schema.graphql" || !name.ends_with(".graphql") {
            continue;
        }
        assert!(
            source.contains(&format!("\"graphql/{name}\"")),
            "graphql/{name} is not used by src/platform/operations.rs"
        );
    }
}
