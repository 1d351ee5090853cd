//! Reading a `dirsync plan --output json` in the tests that check a first
//! plan against an empty platform (the Active Directory tests): its creates
//! by key, and its refused records.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

/// The plan's creates: customers by externalId, users by email.
pub struct Creates {
    pub customers: BTreeMap<String, Value>,
    pub users: BTreeMap<String, Value>,
}

/// The plan's creates; panics on any other operation, or on a key planned twice.
pub fn creates(json: &Value) -> Creates {
    let mut c = Creates {
        customers: BTreeMap::new(),
        users: BTreeMap::new(),
    };
    for op in json["plan"]["operations"].as_array().expect("operations") {
        match op["action"].as_str() {
            Some("createCustomer") => {
                let id = op["externalId"].as_str().expect("externalId").to_owned();
                assert!(c.customers.insert(id, op.clone()).is_none(), "{op}");
            }
            Some("createUser") => {
                let email = op["email"].as_str().expect("email").to_owned();
                assert!(c.users.insert(email, op.clone()).is_none(), "{op}");
            }
            _ => panic!("only creates against an empty platform: {op}"),
        }
    }
    c
}

impl Creates {
    /// Customer name -> its users' emails.
    pub fn placement(&self) -> BTreeMap<String, BTreeSet<String>> {
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (email, u) in &self.users {
            let customer = &self.customers[u["customerExternalId"].as_str().expect("customer")];
            out.entry(customer["name"].as_str().expect("name").to_owned())
                .or_default()
                .insert(email.clone());
        }
        out
    }
}

/// The refused records, each as its JSON text.
pub fn refused(json: &Value) -> Vec<String> {
    json["plan"]["refused"]
        .as_array()
        .expect("refused")
        .iter()
        .map(Value::to_string)
        .collect()
}
