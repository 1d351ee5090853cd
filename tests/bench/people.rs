//! Shared by the steady_state and throughput benches (included with
//! `#[path = "people.rs"] mod people;`): the people of their directory, the
//! users CSV written from them and the emulator seed records that match it.

#![allow(dead_code)]

use std::io::Write;

use dirsync::emulator::{SeedCustomer, SeedUser};

pub const TIERS: [&str; 3] = ["gold", "silver", "bronze"];

/// The header of the users CSV (the columns of `config/example-users.csv`).
pub const HEADER: &str =
    "employee_id,email,full_name,phone,role,customer_id,customer_name,customer_tier";

pub struct Person {
    pub employee_id: String,
    pub email: String,
    pub name: String,
    pub phone: String,
    /// The source value (`admin`, `staff`) and the platform role it maps to.
    pub role: (&'static str, &'static str),
    pub customer: usize,
}

/// The `i`-th person, in one of `customers` customers.
pub fn person(i: usize, customers: usize) -> Person {
    Person {
        employee_id: format!("E{i:07}"),
        email: format!("person{i}@cust{:05}.example", i % customers),
        name: format!("Person {i}"),
        phone: if i % 3 == 0 {
            String::new()
        } else {
            format!("+1 555 {i:07}")
        },
        role: if i % 10 == 0 {
            ("admin", "Admin")
        } else {
            ("staff", "Member")
        },
        customer: i % customers,
    }
}

pub fn customer_key(c: usize) -> String {
    format!("cust-{c:05}")
}

pub fn customer_name(c: usize) -> String {
    format!("Customer {c:05} Ltd")
}

pub fn customer_labels(c: usize) -> Vec<String> {
    vec!["dirsync".to_owned(), TIERS[c % 3].to_owned()]
}

/// `p`'s row of the users CSV, with `phone` for its phone.
pub fn write_row(out: &mut impl Write, p: &Person, phone: &str) -> std::io::Result<()> {
    writeln!(
        out,
        "{},{},{},{},{},{},{},{}",
        p.employee_id,
        p.email,
        p.name,
        phone,
        p.role.0,
        customer_key(p.customer),
        customer_name(p.customer),
        TIERS[p.customer % 3]
    )
}

/// The platform's customer `c`, as the CSV describes it.
pub fn seed_customer(c: usize) -> SeedCustomer {
    SeedCustomer {
        name: customer_name(c),
        external_id: Some(customer_key(c)),
        description: String::new(),
        labels: customer_labels(c),
        system: false,
        instances: Vec::new(),
    }
}

/// The platform's user for `p`, with `phone` for its phone.
pub fn seed_user(p: Person, phone: String) -> SeedUser {
    SeedUser {
        email: p.email,
        name: p.name,
        phone,
        external_id: Some(p.employee_id),
        customer: customer_key(p.customer),
        role: p.role.1.to_owned(),
        marketplace: false,
    }
}
