//! Where the logs go, and the one line per applied operation.
//!
//! Under systemd, standard error is a stream into the journal, and systemd
//! says so in `$JOURNAL_STREAM` (the device and inode of that stream). When
//! standard error is that stream, dirsync logs to the journal itself
//! (`tracing-journald`, the native protocol): each entry carries its real
//! priority (`ERROR` 3, `WARN` 4, `INFO` 6, `DEBUG` and `TRACE` 7), so
//! `journalctl -p warning` shows what needs a look, and each field of the
//! event as a journal field of its own, prefixed `DIRSYNC_`
//! (`journalctl -u dirsync DIRSYNC_EXTERNAL_ID=u-17`). When the journal's
//! socket cannot be reached, the logs go to standard error as they would
//! anywhere else, and a warning says so. `--log-json` always writes JSON
//! lines to standard error.
//!
//! [`log_operation`] is the line per operation that `dirsync run` (through
//! [`OperationLog`]) and `dirsync sync` off a terminal write, so that the
//! journal can answer "who deleted this user, and when".

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use crate::apply::{OperationReport, Outcome, Progress};
use crate::plan::Operation;

/// The `SYSLOG_IDENTIFIER` of dirsync's journal entries.
const IDENTIFIER: &str = "dirsync";

/// Where [`init`] sent the logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogTarget {
    /// The journal, over its native protocol.
    Journal,
    /// Standard error, as text or JSON lines.
    Stderr,
}

/// Sets up the global subscriber: the journal when standard error is the
/// journal's stream (and `json` is not asked for), else text or JSON lines
/// on standard error. The level comes from `$DIRSYNC_LOG` (default `info`).
pub fn init(json: bool) -> LogTarget {
    let filter =
        || EnvFilter::try_from_env("DIRSYNC_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let mut journal_error = None;
    if !json && stderr_is_journal() {
        match journal_layer() {
            Ok(layer) => {
                tracing_subscriber::registry()
                    .with(filter())
                    .with(layer)
                    .init();
                return LogTarget::Journal;
            }
            Err(e) => journal_error = Some(e),
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.with_ansi(std::io::stderr().is_terminal()).init();
    }
    if let Some(e) = journal_error {
        tracing::warn!(
            error = %e,
            "Standard error is the journal's stream (JOURNAL_STREAM), but the journal's socket cannot be reached ({e}): logging to standard error, without priorities."
        );
    }
    LogTarget::Stderr
}

fn journal_layer() -> std::io::Result<tracing_journald::Layer> {
    use tracing_journald::{Priority, PriorityMappings};
    Ok(tracing_journald::layer()?
        .with_syslog_identifier(IDENTIFIER.to_owned())
        .with_field_prefix(Some("DIRSYNC".to_owned()))
        .with_priority_mappings(PriorityMappings {
            error: Priority::Error,
            warn: Priority::Warning,
            info: Priority::Informational,
            debug: Priority::Debug,
            trace: Priority::Debug,
        }))
}

/// Whether standard error is the stream systemd connected to the journal:
/// `$JOURNAL_STREAM` (`DEVICE:INODE`) names it. A variable inherited by a
/// process whose standard error went elsewhere (a terminal, a file) does not
/// match, and the logs stay there.
fn stderr_is_journal() -> bool {
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(stat) = rustix::fs::fstat(std::io::stderr()) else {
        return false;
    };
    journal_stream_matches(&stream.to_string_lossy(), stat.st_dev, stat.st_ino)
}

fn journal_stream_matches(stream: &str, dev: u64, ino: u64) -> bool {
    let Some((d, i)) = stream.trim().split_once(':') else {
        return false;
    };
    d.parse::<u64>().ok() == Some(dev) && i.parse::<u64>().ok() == Some(ino)
}

/// Who an operation is about, beyond its externalId.
struct Subject<'a> {
    email: Option<&'a str>,
    name: Option<&'a str>,
    /// The user's customer (externalId).
    customer: Option<&'a str>,
}

fn subject(op: &Operation) -> Subject<'_> {
    let none = Subject {
        email: None,
        name: None,
        customer: None,
    };
    match op {
        Operation::CreateCustomer(c) => Subject {
            name: Some(&c.name),
            ..none
        },
        Operation::UpdateCustomer { changes, .. } => Subject {
            name: changes
                .iter()
                .find(|c| c.field == "name")
                .map(|c| c.after.as_str()),
            ..none
        },
        Operation::AdoptCustomer { name, .. } | Operation::DeleteCustomer { name, .. } => Subject {
            name: Some(name),
            ..none
        },
        Operation::CreateUser(u) | Operation::RecreateUser { create: u, .. } => Subject {
            email: Some(&u.email),
            customer: Some(&u.customer_external_id),
            ..none
        },
        Operation::UpdateUser { email, .. } | Operation::AdoptUser { email, .. } => Subject {
            email: Some(email),
            ..none
        },
        Operation::DeleteUser {
            email,
            customer_external_id,
            ..
        } => Subject {
            email: Some(email),
            customer: customer_external_id.as_deref(),
            ..none
        },
    }
}

/// The message of an operation's line, whole in itself (the journal shows
/// the message; the fields are there to search by):
/// `delete user u-17 <alice@example.com> of c-1: applied`.
fn operation_message(report: &OperationReport) -> String {
    let op = &report.operation;
    let who = subject(op);
    let mut m = format!("{} {} {}", op.action(), op.kind(), op.external_id());
    if let Some(email) = who.email {
        m.push_str(&format!(" <{email}>"));
    }
    if let Some(name) = who.name {
        m.push_str(&format!(" {name:?}"));
    }
    if let Some(customer) = who.customer {
        m.push_str(&format!(" of {customer}"));
    }
    if let Operation::DeleteCustomer {
        users, instances, ..
    } = op
    {
        m.push_str(&format!(" with {users} users and {instances} instances"));
    }
    m.push_str(": ");
    m.push_str(report.outcome.label());
    match &report.outcome {
        Outcome::Applied => {}
        Outcome::AlreadyDone { detail } => m.push_str(&format!(" ({detail})")),
        Outcome::Failed { error } => m.push_str(&format!(": {error}")),
        Outcome::Skipped { reason } => m.push_str(&format!(": {reason}")),
    }
    m
}

/// One log line for one finished operation: the action, kind, externalId,
/// email or customer name, and outcome (with the error or the reason), as
/// the message and as fields. A failed operation is a warning; everything
/// else is information.
pub fn log_operation(report: &OperationReport) {
    let op = &report.operation;
    let who = subject(op);
    let message = operation_message(report);
    let (error, reason) = match &report.outcome {
        Outcome::Failed { error } => (Some(error.as_str()), None),
        Outcome::Skipped { reason } => (None, Some(reason.as_str())),
        Outcome::AlreadyDone { detail } => (None, Some(detail.as_str())),
        Outcome::Applied => (None, None),
    };
    let (users, instances) = match op {
        Operation::DeleteCustomer {
            users, instances, ..
        } => (Some(*users as u64), Some(*instances)),
        _ => (None, None),
    };
    let recreate_reason = match op {
        Operation::RecreateUser { reason, .. } => Some(reason.as_str()),
        _ => None,
    };
    macro_rules! line {
        ($level:ident) => {
            tracing::$level!(
                action = op.action(),
                kind = op.kind(),
                external_id = op.external_id(),
                email = who.email,
                name = who.name,
                customer = who.customer,
                users,
                instances,
                recreate_reason,
                outcome = report.outcome.label(),
                error,
                reason,
                "{message}"
            )
        };
    }
    match report.outcome {
        Outcome::Failed { .. } => line!(warn),
        _ => line!(info),
    }
}

/// Progress that logs each operation as it finishes ([`log_operation`]):
/// what `dirsync run` applies with.
pub struct OperationLog;

impl Progress for OperationLog {
    fn finished(&self, report: &OperationReport) {
        log_operation(report);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::PlatformId;

    #[test]
    fn journal_stream_is_device_colon_inode() {
        assert!(journal_stream_matches("8:1234", 8, 1234));
        assert!(journal_stream_matches(" 8:1234\n", 8, 1234));
        assert!(!journal_stream_matches("8:1235", 8, 1234));
        assert!(!journal_stream_matches("9:1234", 8, 1234));
        assert!(!journal_stream_matches("8", 8, 1234));
        assert!(!journal_stream_matches("", 8, 1234));
    }

    #[test]
    fn an_operation_line_names_who_and_what_came_of_it() {
        let delete = OperationReport {
            operation: Operation::DeleteUser {
                id: PlatformId::from("p1"),
                external_id: "u-17".to_owned(),
                email: "alice@example.com".to_owned(),
                customer_external_id: Some("c-1".to_owned()),
                why: crate::plan::DeleteReason::Absent,
            },
            outcome: Outcome::Applied,
        };
        assert_eq!(
            operation_message(&delete),
            "delete user u-17 <alice@example.com> of c-1: applied"
        );
        let customer = OperationReport {
            operation: Operation::DeleteCustomer {
                id: PlatformId::from("p2"),
                external_id: "c-9".to_owned(),
                name: "Old Co".to_owned(),
                users: 3,
                instances: 0,
                why: crate::plan::DeleteReason::Absent,
            },
            outcome: Outcome::Failed {
                error: "platform: deleteCustomer: HTTP 500".to_owned(),
            },
        };
        assert_eq!(
            operation_message(&customer),
            "delete customer c-9 \"Old Co\" with 3 users and 0 instances: failed: platform: deleteCustomer: HTTP 500"
        );
    }
}
