//! `dirsync test`: the habit of Bitwarden Directory Connector and Google
//! Cloud Directory Sync. Before trusting a config with a sync, check each
//! side on its own: the platform answers and takes the token, every role the
//! mapping names exists, and the source reads, with counts and a few sample
//! records as mapped. It sends no mutation.

use std::fmt::Write;

use crate::config::Config;
use crate::directory::Directory;
use crate::plan::check_roles;
use crate::run::{Connection, RunError};
use crate::source::read_directory;

/// How many sample customers and users are shown.
const SAMPLES: usize = 3;

/// The checks' report, and whether every check passed.
pub struct TestReport {
    pub text: String,
    pub ok: bool,
}

/// Runs every check; a failed check is reported and the others still run.
pub async fn test_config(config: &Config) -> TestReport {
    let mut text = String::new();
    let platform_ok = check_platform(config, &mut text).await;
    let source_ok = match read_directory(config).await {
        Ok(directory) => {
            describe_directory(&directory, &mut text);
            true
        }
        Err(e) => {
            let _ = writeln!(text, "x source: {e}");
            false
        }
    };
    let ok = platform_ok && source_ok;
    text.push_str(if ok {
        "\nOK: both sides answer. Nothing was changed.\n"
    } else {
        "\nFAILED: see the lines marked x above. Nothing was changed.\n"
    });
    TestReport { text, ok }
}

/// Connects, checks the token and resolves the role names.
async fn check_platform(config: &Config, out: &mut String) -> bool {
    let connection = match Connection::open(&config.platform).await {
        Ok(c) => c,
        Err(e) => {
            let _ = writeln!(out, "x platform: {e}");
            return false;
        }
    };
    let ok = match platform_checks(config, &connection, out).await {
        Ok(()) => true,
        Err(e) => {
            let _ = writeln!(out, "x platform: {e}");
            false
        }
    };
    if let Err(e) = connection.close().await {
        let _ = writeln!(out, "x platform: {e}");
    }
    ok
}

async fn platform_checks(
    config: &Config,
    connection: &Connection,
    out: &mut String,
) -> Result<(), RunError> {
    let who = connection.client.authenticated_user().await?;
    let _ = writeln!(
        out,
        "+ platform: the token works, signed in as {} ({})",
        who.email,
        if who.customer_id.is_some() {
            "a customer user: it cannot manage customers"
        } else {
            "an organization user"
        }
    );
    let roles = connection.client.customer_roles().await?;
    check_roles(&config.mapping.roles, &roles)?;
    let mut names: Vec<&str> = config.mapping.roles.role_names().collect();
    names.sort_unstable();
    names.dedup();
    let _ = writeln!(
        out,
        "+ platform: every role the mapping names exists: {}",
        names.join(", ")
    );
    Ok(())
}

/// Counts and a few sample records, as the mapping turned them out.
fn describe_directory(d: &Directory, out: &mut String) {
    let _ = writeln!(
        out,
        "+ source: {} customers, {} users, {} refused records{}",
        d.customers.len(),
        d.users.len(),
        d.refused.len(),
        if d.withholds_deletes() {
            " (this read cannot say who is absent: deletes would be withheld)"
        } else {
            ""
        }
    );
    for c in d.customers.values().take(SAMPLES) {
        let labels = c
            .labels
            .as_ref()
            .map(|l| l.iter().cloned().collect::<Vec<_>>().join(", "))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "    customer {}  name {:?}  labels [{labels}]  ({})",
            c.external_id, c.name, c.origin
        );
    }
    for u in d.users.values().take(SAMPLES) {
        let _ = writeln!(
            out,
            "    user {}  {}  in customer {}  name {:?}  role {}  ({})",
            u.external_id(),
            u.email(),
            u.customer_external_id(),
            u.name().unwrap_or(""),
            u.role().unwrap_or("(not mapped)"),
            u.origin()
        );
    }
    for r in d.refused.iter().take(SAMPLES) {
        let _ = writeln!(out, "  ! refused {}: {}", r.origin, r.message);
    }
}
