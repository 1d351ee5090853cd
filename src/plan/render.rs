//! Plans for people (text, like a Terraform plan: `+` create, `~` update,
//! `-` delete, a summary line) and for programs (JSON; schema in the README).

use std::fmt::Write;

use super::{CustomerCreate, DeleteReason, FieldChange, Operation, Plan, UserCreate};

fn quoted(s: &str) -> String {
    format!("{s:?}")
}

fn changes_text(out: &mut String, changes: &[FieldChange]) {
    for c in changes {
        let _ = writeln!(
            out,
            "      {}: {} -> {}",
            c.field,
            quoted(&c.before),
            quoted(&c.after)
        );
    }
}

fn customer_create_text(out: &mut String, c: &CustomerCreate) {
    let _ = writeln!(out, "  + customer {}  {}", c.external_id, quoted(&c.name));
    if let Some(d) = &c.description {
        let _ = writeln!(out, "      description: {}", quoted(d));
    }
    if let Some(l) = &c.labels {
        let _ = writeln!(out, "      labels: [{}]", l.join(", "));
    }
}

fn user_create_text(out: &mut String, u: &UserCreate) {
    let _ = writeln!(
        out,
        "  + user {}  {} in customer {}, role {}",
        u.external_id, u.email, u.customer_external_id, u.role
    );
    if let Some(n) = &u.name {
        let _ = writeln!(out, "      name: {}", quoted(n));
    }
    if let Some(p) = u.phone.as_ref().filter(|p| !p.is_empty()) {
        let _ = writeln!(out, "      phone: {}", quoted(p));
    }
}

fn user_delete_text(
    out: &mut String,
    external_id: &str,
    email: &str,
    customer: Option<&str>,
    why: DeleteReason,
) {
    let customer = customer.unwrap_or("(unmanaged customer)");
    let _ = writeln!(
        out,
        "  - user {external_id}  {email} in customer {customer}  ({})",
        why.describe()
    );
}

/// One operation as plan text (one or more lines, each ending in a newline).
pub fn operation_text(op: &Operation) -> String {
    let mut out = String::new();
    match op {
        Operation::CreateCustomer(c) => customer_create_text(&mut out, c),
        Operation::UpdateCustomer {
            external_id,
            changes,
            ..
        } => {
            let _ = writeln!(out, "  ~ customer {external_id}");
            changes_text(&mut out, changes);
        }
        Operation::AdoptCustomer {
            external_id,
            name,
            changes,
            ..
        } => {
            let _ = writeln!(
                out,
                "  ~ customer {external_id}  adopt existing {} (it has no externalId)",
                quoted(name)
            );
            changes_text(&mut out, changes);
        }
        Operation::CreateUser(u) => user_create_text(&mut out, u),
        Operation::UpdateUser {
            external_id,
            email,
            changes,
            ..
        } => {
            let _ = writeln!(out, "  ~ user {external_id}  {email}");
            changes_text(&mut out, changes);
        }
        Operation::AdoptUser {
            external_id,
            email,
            changes,
            ..
        } => {
            let _ = writeln!(
                out,
                "  ~ user {external_id}  adopt existing {email} (it has no externalId)"
            );
            changes_text(&mut out, changes);
        }
        Operation::RecreateUser { reason, create, .. } => {
            let _ = writeln!(
                out,
                "-/+ user {}  {reason}: delete, then create in customer {} (new id, new confirmation email)",
                create.external_id, create.customer_external_id
            );
        }
        Operation::DeleteUser {
            external_id,
            email,
            customer_external_id,
            why,
            ..
        } => user_delete_text(
            &mut out,
            external_id,
            email,
            customer_external_id.as_deref(),
            *why,
        ),
        Operation::DeleteCustomer {
            external_id,
            name,
            users,
            instances,
            why,
            ..
        } => {
            let _ = writeln!(
                out,
                "  - customer {external_id}  {}  ({})  PERMANENT: also deletes its {users} user(s) and {instances} instance(s)",
                quoted(name),
                why.describe()
            );
        }
    }
    out
}

/// `Plan: 3 to create, 1 to update, 2 to delete.` (adoptions count as
/// updates; a recreate counts as one delete and one create).
pub fn summary_line(plan: &Plan) -> String {
    let (mut create, mut update, mut delete) = (0, 0, 0);
    for op in &plan.operations {
        match op.action() {
            "create" => create += 1,
            "update" | "adopt" => update += 1,
            "recreate" => {
                create += 1;
                delete += 1;
            }
            _ => delete += 1,
        }
    }
    if create + update + delete == 0 {
        if plan.drift.is_empty() && plan.conflicts.is_empty() {
            return "No changes. The platform matches the directory.".to_owned();
        }
        let mut parts = Vec::new();
        match plan.drift.len() {
            0 => {}
            1 => parts.push("1 drift item".to_owned()),
            n => parts.push(format!("{n} drift items")),
        }
        match plan.conflicts.len() {
            0 => {}
            1 => parts.push("1 conflict".to_owned()),
            n => parts.push(format!("{n} conflicts")),
        }
        return format!(
            "No changes to send; {} to look at (see above).",
            parts.join(" and ")
        );
    }
    format!("Plan: {create} to create, {update} to update, {delete} to delete.")
}

/// The whole plan as text.
pub fn text(plan: &Plan) -> String {
    let mut out = String::new();
    let s = plan.scope;
    let _ = writeln!(
        out,
        "Directory: {} customers, {} users. Managed on the platform: {} customers, {} users.",
        s.directory_customers, s.directory_users, s.managed_customers, s.managed_users
    );
    if !plan.operations.is_empty() {
        out.push('\n');
        for op in &plan.operations {
            out.push_str(&operation_text(op));
        }
    }
    if !plan.drift.is_empty() {
        out.push_str("\nDrift the platform cannot update in place:\n");
        for d in &plan.drift {
            let what = match d.what {
                super::DriftKind::EmailChanged => "email changed",
                super::DriftKind::MovedCustomer => "moved to another customer",
            };
            let resolution = match d.resolution {
                crate::config::ChangePolicy::Report => {
                    "reported only; set policy.email_change: recreate to delete and re-create it"
                }
                crate::config::ChangePolicy::Recreate => "recreated (see -/+ above)",
            };
            let _ = writeln!(
                out,
                "  ! user {}: {what}: {} -> {} ({resolution})",
                d.external_id, d.before, d.after
            );
        }
    }
    if !plan.conflicts.is_empty() {
        out.push_str("\nConflicts (nothing is sent for these):\n");
        for c in &plan.conflicts {
            let _ = writeln!(out, "  ! {} {}: {}", c.kind, c.external_id, c.reason);
        }
    }
    if !plan.kept.is_empty() {
        out.push_str("\nKept (not deleted):\n");
        for k in &plan.kept {
            let _ = writeln!(out, "  = {} {}: {}", k.kind, k.external_id, k.reason);
        }
    }
    if !plan.refused.is_empty() {
        out.push_str("\nRefused records (what they name is neither updated nor deleted):\n");
        for r in &plan.refused {
            let _ = writeln!(out, "  ! {r}");
        }
    }
    out.push('\n');
    out.push_str(&summary_line(plan));
    out.push('\n');
    out
}

/// Counts per kind and action, for JSON and logs:
/// `{"customer": {"create": 1}, "user": {"delete": 2}}`.
pub fn counts_json(plan: &Plan) -> serde_json::Value {
    let mut root = serde_json::Map::new();
    for ((kind, action), n) in plan.counts() {
        let entry = root
            .entry(kind.to_owned())
            .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()));
        if let serde_json::Value::Object(m) = entry {
            m.insert(action.to_owned(), n.into());
        }
    }
    serde_json::Value::Object(root)
}
