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
/// updates; a recreate counts as one delete and one create), then what
/// needs a look: `; 1 drift item, 2 refused records (see above).`
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
    let mut look = Vec::new();
    for (n, one, many) in [
        (plan.drift.len(), "drift item", "drift items"),
        (plan.conflicts.len(), "conflict", "conflicts"),
        (plan.refused.len(), "refused record", "refused records"),
    ] {
        match n {
            0 => {}
            1 => look.push(format!("1 {one}")),
            n => look.push(format!("{n} {many}")),
        }
    }
    if create + update + delete == 0 {
        if look.is_empty() {
            return "No changes. The platform matches the directory.".to_owned();
        }
        return format!(
            "No changes to send; {} to look at (see above).",
            look.join(", ")
        );
    }
    let changes = format!("Plan: {create} to create, {update} to update, {delete} to delete");
    if look.is_empty() {
        format!("{changes}.")
    } else {
        format!("{changes}; {} (see above).", look.join(", "))
    }
}

/// How plan text looks. Plain (the default) is for files, pipes and logs,
/// stable for scripts; a terminal gets a legend, the operations grouped by
/// customer and, unless `NO_COLOR` is set, colour.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TextStyle {
    pub colour: bool,
    pub grouped: bool,
}

impl TextStyle {
    /// For standard output: plain unless it is a terminal; colour unless
    /// `NO_COLOR` is set to anything non-empty (no-color.org) or `TERM=dumb`.
    pub fn for_stdout() -> TextStyle {
        use std::io::IsTerminal;
        if !std::io::stdout().is_terminal() {
            return TextStyle::default();
        }
        let no_colour = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
            || std::env::var_os("TERM").is_some_and(|t| t == "dumb");
        TextStyle {
            colour: !no_colour,
            grouped: true,
        }
    }
}

/// The one-line legend a terminal shows above the operations.
pub const LEGEND: &str =
    "Legend: + create  ~ update  - delete  -/+ delete, then create  ! to look at  = kept";

/// The customer an operation belongs to, for grouping.
fn customer_of(op: &Operation) -> Option<&str> {
    match op {
        Operation::CreateCustomer(c) => Some(&c.external_id),
        Operation::UpdateCustomer { external_id, .. }
        | Operation::AdoptCustomer { external_id, .. }
        | Operation::DeleteCustomer { external_id, .. } => Some(external_id),
        Operation::CreateUser(u) => Some(&u.customer_external_id),
        Operation::RecreateUser { create, .. } => Some(&create.customer_external_id),
        Operation::UpdateUser {
            customer_external_id,
            ..
        }
        | Operation::AdoptUser {
            customer_external_id,
            ..
        }
        | Operation::DeleteUser {
            customer_external_id,
            ..
        } => customer_external_id.as_deref(),
    }
}

/// The operations under one heading per customer (customers in externalId
/// order; within one, the plan's apply order).
fn grouped_operations_text(out: &mut String, operations: &[Operation]) {
    let mut groups: std::collections::BTreeMap<Option<&str>, Vec<&Operation>> =
        std::collections::BTreeMap::new();
    for op in operations {
        groups.entry(customer_of(op)).or_default().push(op);
    }
    for (customer, ops) in groups {
        out.push('\n');
        match customer {
            Some(x) => {
                let _ = writeln!(out, "customer {x}:");
            }
            None => out.push_str("(no managed customer):\n"),
        }
        for op in ops {
            out.push_str(&operation_text(op));
        }
    }
}

/// ANSI colour for plan text: the sign at the start of each line (`+`
/// green, `~` yellow, `-` and `x` red, `-/+` magenta, `!` yellow, `=`
/// dim), PERMANENT and the BLOCKED heading in bold red.
pub fn colourize(text: &str) -> String {
    use console::Style;
    let sign = |c: &str| -> Option<Style> {
        Some(match c {
            "+" => Style::new().green().bold(),
            "~" => Style::new().yellow().bold(),
            "-" | "x" => Style::new().red().bold(),
            "-/+" => Style::new().magenta().bold(),
            "!" => Style::new().yellow(),
            "=" => Style::new().dim(),
            _ => return None,
        })
    };
    let heading = Style::new().red().bold().force_styling(true);
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        let (first, rest) = trimmed.split_once(' ').unwrap_or((trimmed, ""));
        let styled = match sign(first) {
            Some(style) => format!(
                "{indent}{} {}",
                style.force_styling(true).apply_to(first),
                rest.replace("PERMANENT", &heading.apply_to("PERMANENT").to_string())
            ),
            None if trimmed.starts_with("BLOCKED") || trimmed.starts_with("DELETES WITHHELD") => {
                let body = line.trim_end_matches('\n');
                let nl = &line[body.len()..];
                format!("{}{nl}", heading.apply_to(body))
            }
            None => line.to_owned(),
        };
        out.push_str(&styled);
    }
    out
}

/// The whole plan as plain text.
pub fn text(plan: &Plan) -> String {
    text_styled(plan, TextStyle::default())
}

/// The whole plan, as `style` says (colour is left to [`colourize`], which
/// the caller applies to everything it prints).
pub fn text_styled(plan: &Plan, style: TextStyle) -> String {
    let mut out = String::new();
    let s = plan.scope;
    let _ = writeln!(
        out,
        "Directory: {} customers, {} users. Managed on the platform: {} customers, {} users.",
        s.directory_customers, s.directory_users, s.managed_customers, s.managed_users
    );
    if style.grouped {
        out.push_str(LEGEND);
        out.push('\n');
    }
    if !plan.operations.is_empty() {
        if style.grouped {
            grouped_operations_text(&mut out, &plan.operations);
        } else {
            out.push('\n');
            for op in &plan.operations {
                out.push_str(&operation_text(op));
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::{Origin, RefusedRecord};
    use crate::plan::{Drift, DriftKind};

    fn user_create(x: &str, customer: &str) -> Operation {
        Operation::CreateUser(UserCreate {
            external_id: x.into(),
            customer_external_id: customer.into(),
            email: format!("{x}@x.test"),
            name: None,
            phone: None,
            role: "Member".into(),
            role_id: "r".into(),
        })
    }

    fn refused() -> RefusedRecord {
        RefusedRecord {
            origin: Origin::Entry {
                dn: "uid=x,dc=test".into(),
            },
            field: None,
            message: "bad".into(),
        }
    }

    #[test]
    fn the_summary_counts_drift_conflicts_and_refused_records() {
        let mut plan = Plan {
            operations: vec![user_create("a", "c")],
            ..Plan::default()
        };
        assert_eq!(
            summary_line(&plan),
            "Plan: 1 to create, 0 to update, 0 to delete."
        );
        plan.refused = vec![refused(), refused()];
        plan.drift.push(Drift {
            external_id: "b".into(),
            what: DriftKind::EmailChanged,
            before: "b@x".into(),
            after: "b2@x".into(),
            resolution: crate::config::ChangePolicy::Report,
        });
        assert_eq!(
            summary_line(&plan),
            "Plan: 1 to create, 0 to update, 0 to delete; 1 drift item, 2 refused records (see above)."
        );
        plan.operations.clear();
        plan.drift.clear();
        assert_eq!(
            summary_line(&plan),
            "No changes to send; 2 refused records to look at (see above)."
        );
    }

    #[test]
    fn a_terminal_plan_groups_operations_under_their_customer() {
        let plan = Plan {
            operations: vec![
                user_create("u1", "beta"),
                user_create("u2", "alpha"),
                user_create("u3", "beta"),
            ],
            ..Plan::default()
        };
        let grouped = text_styled(
            &plan,
            TextStyle {
                colour: false,
                grouped: true,
            },
        );
        assert!(grouped.contains(LEGEND), "{grouped}");
        let alpha = grouped.find("customer alpha:").unwrap();
        let beta = grouped.find("customer beta:").unwrap();
        let (u1, u2, u3) = (
            grouped.find("u1@").unwrap(),
            grouped.find("u2@").unwrap(),
            grouped.find("u3@").unwrap(),
        );
        assert!(alpha < u2 && u2 < beta && beta < u1 && u1 < u3, "{grouped}");
        // Plain text (pipes, files) stays in apply order, without a legend.
        let plain = text(&plan);
        assert!(!plain.contains("Legend") && !plain.contains("customer beta:"));
    }

    #[test]
    fn colour_marks_the_sign_and_leaves_other_lines_alone() {
        let text = "Directory: 1 customers\n  + user a\n  - customer c  \"C\"  PERMANENT: x\n      name: \"n\"\n";
        let coloured = colourize(text);
        assert!(coloured.contains("\u{1b}["), "{coloured:?}");
        assert!(coloured.starts_with("Directory: 1 customers\n"));
        assert!(coloured.contains("      name: \"n\"\n"));
        assert_eq!(
            console::strip_ansi_codes(&coloured),
            text,
            "colour adds escapes only"
        );
    }
}
