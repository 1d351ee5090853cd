//! What the Debian package ships beside the binary, made from the command
//! line's own definition (so they never drift from it): man pages
//! (`clap_mangen`: `dirsync(1)` and one per subcommand) and shell
//! completions (`clap_complete`: bash, zsh, fish). The hidden
//! `dirsync generate-assets DIR` writes them; `Cargo.toml`'s
//! `[package.metadata.deb]` takes them from there.
//!
//! ```text
//! DIR/man/man1/dirsync.1, dirsync-plan.1, dirsync-sync.1, ...
//! DIR/completions/dirsync.bash, _dirsync (zsh), dirsync.fish
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;
use clap_mangen::roff::{bold, roman, Roff};

use crate::cli::Cli;

/// Why the assets could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {}: {error}", path.display())]
pub struct AssetsError {
    path: PathBuf,
    error: std::io::Error,
}

fn at(path: &Path) -> impl FnOnce(std::io::Error) -> AssetsError + '_ {
    move |error| AssetsError {
        path: path.to_path_buf(),
        error,
    }
}

/// The files written, in order.
pub fn generate(dir: &Path) -> Result<Vec<PathBuf>, AssetsError> {
    let man = dir.join("man").join("man1");
    let completions = dir.join("completions");
    for d in [&man, &completions] {
        std::fs::create_dir_all(d).map_err(at(d))?;
    }
    let mut written = Vec::new();

    // dirsync(1), with the sections an operator looks for after the options.
    let cmd = Cli::command().disable_help_subcommand(true);
    let page = man.join("dirsync.1");
    let mut out = Vec::new();
    let m = clap_mangen::Man::new(cmd.clone());
    (|| -> std::io::Result<()> {
        m.render_title(&mut out)?;
        m.render_name_section(&mut out)?;
        m.render_synopsis_section(&mut out)?;
        m.render_description_section(&mut out)?;
        m.render_options_section(&mut out)?;
        m.render_subcommands_section(&mut out)?;
        operator_sections(&cmd).to_writer(&mut out)?;
        m.render_version_section(&mut out)
    })()
    .map_err(at(&page))?;
    std::fs::write(&page, out).map_err(at(&page))?;
    written.push(page);

    // One page per subcommand (dirsync-sync(1), ...), hidden ones left out.
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("dirsync-{}", sub.get_name());
        let sub = sub
            .clone()
            .name(name.clone())
            .version(env!("CARGO_PKG_VERSION"));
        let page = man.join(format!("{name}.1"));
        let mut out = Vec::new();
        clap_mangen::Man::new(sub)
            .render(&mut out)
            .map_err(at(&page))?;
        std::fs::write(&page, out).map_err(at(&page))?;
        written.push(page);
    }

    for (shell, file) in [
        (Shell::Bash, "dirsync.bash"),
        (Shell::Zsh, "_dirsync"),
        (Shell::Fish, "dirsync.fish"),
    ] {
        let path = completions.join(file);
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "dirsync", &mut out);
        let mut f = std::fs::File::create(&path).map_err(at(&path))?;
        f.write_all(&out).map_err(at(&path))?;
        written.push(path);
    }
    Ok(written)
}

/// EXIT STATUS, ENVIRONMENT, FILES and SEE ALSO for dirsync(1).
fn operator_sections(cmd: &clap::Command) -> Roff {
    let mut r = Roff::new();
    let mut section = |title: &str, items: &[(&str, &str)]| {
        r.control("SH", [title]);
        for (term, text) in items {
            r.control("TP", []);
            r.text([bold(*term)]);
            r.text([roman(*text)]);
        }
    };
    section(
        "EXIT STATUS",
        &[
            ("0", "In sync, or every change applied."),
            ("1", "An error: the config, the source, the platform or the lock."),
            ("2", "plan: changes are pending."),
            ("3", "A safety limit blocked the plan: nothing was sent."),
            ("4", "sync: some operations failed or conflict."),
            (
                "5",
                "Stopped by SIGTERM or SIGINT; the operations in flight finished and the next run converges.",
            ),
            (
                "6",
                "apply: the saved plan is stale (the config, or a record it would touch, changed since it was made): nothing was sent.",
            ),
        ],
    );
    section(
        "ENVIRONMENT",
        &[
            ("DIRSYNC_CONFIG", "The config file when -c is not given."),
            ("DIRSYNC_LOG", "The log level or filter (default info)."),
            (
                "PRISMATIC_API_KEY, PRISM_ACCESS_TOKEN, PRISM_REFRESH_TOKEN",
                "The platform's token when the config names no token.",
            ),
            (
                "CREDENTIALS_DIRECTORY",
                "systemd credentials (LoadCredential=), read before files and environment variables.",
            ),
            (
                "STATE_DIRECTORY",
                "The state directory when the config sets no state_dir (systemd's StateDirectory=).",
            ),
            (
                "JOURNAL_STREAM",
                "When it names standard error, logs go to the journal with their priorities.",
            ),
            (
                "NOTIFY_SOCKET, WATCHDOG_USEC",
                "dirsync run tells systemd READY=1, STATUS=, WATCHDOG=1 and STOPPING=1.",
            ),
        ],
    );
    section(
        "FILES",
        &[
            (
                "/etc/dirsync/config.yaml",
                "The config (owner root, group dirsync, mode 0640).",
            ),
            (
                "/etc/dirsync/prismatic-token",
                "The platform token, handed to the service as the credential prismatic-token.",
            ),
            (
                "/var/lib/dirsync",
                "The state directory: the lock that keeps two runs apart, and saved metrics.",
            ),
            (
                "/usr/share/doc/dirsync/examples/example.yaml",
                "Every config key, commented, with its default.",
            ),
            (
                "/usr/lib/systemd/system/dirsync.service",
                "The daemon (dirsync run).",
            ),
            (
                "/usr/lib/systemd/system/dirsync-sync.service, dirsync-sync.timer",
                "One dirsync sync every 15 minutes, instead of the daemon.",
            ),
        ],
    );
    let mut see_also: Vec<String> = cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .map(|s| format!("dirsync-{}(1)", s.get_name()))
        .collect();
    see_also.extend(["systemctl(1)", "journalctl(1)", "systemd.exec(5)"].map(String::from));
    r.control("SH", ["SEE ALSO"]);
    r.text([roman(see_also.join(", "))]);
    r
}
