//! What the Debian package ships beside the binary, made by the real binary
//! (`dirsync generate-assets DIR`, hidden): a man page per command and
//! completions for bash, zsh and fish. tests/run.sh builds the package from
//! them with `cargo deb` and checks its contents and an install.

use std::path::Path;
use std::process::Command;

fn generate(dir: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_dirsync"))
        .arg("generate-assets")
        .arg(dir)
        .env("DIRSYNC_LOG", "warn")
        .output()
        .expect("dirsync runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn generate_assets_writes_man_pages_and_completions_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let listed = generate(dir.path());
    let man = dir.path().join("man/man1");
    let completions = dir.path().join("completions");

    let page = read(&man.join("dirsync.1"));
    assert!(page.contains(".TH dirsync 1"), "{page}");
    for section in [
        "NAME",
        "SYNOPSIS",
        "SUBCOMMANDS",
        "EXIT STATUS",
        "ENVIRONMENT",
        "FILES",
        "SEE ALSO",
    ] {
        assert!(
            page.contains(&format!(".SH \"{section}\""))
                || page.contains(&format!(".SH {section}")),
            "no {section} in\n{page}"
        );
    }
    assert!(
        page.contains(env!("CARGO_PKG_VERSION")),
        "the version: {page}"
    );
    assert!(page.contains("JOURNAL_STREAM"), "{page}");
    assert!(
        !page.contains("generate\\-assets"),
        "the hidden command stays hidden"
    );
    for sub in ["plan", "sync", "run", "check-config", "emulator"] {
        let file = man.join(format!("dirsync-{sub}.1"));
        let text = read(&file);
        assert!(text.contains(&format!(".TH dirsync-{sub} 1")), "{text}");
        assert!(listed.contains(&file.display().to_string()), "{listed}");
    }
    let sync = read(&man.join("dirsync-sync.1"));
    assert!(
        sync.contains("allow\\-deletes"),
        "the flags are there: {sync}"
    );
    assert!(!man.join("dirsync-generate-assets.1").exists());

    let bash = read(&completions.join("dirsync.bash"));
    assert!(bash.contains("complete -F _dirsync"), "{bash}");
    assert!(bash.contains("check-config"), "{bash}");
    let zsh = read(&completions.join("_dirsync"));
    assert!(zsh.starts_with("#compdef dirsync"), "{zsh}");
    let fish = read(&completions.join("dirsync.fish"));
    assert!(fish.contains("complete -c dirsync"), "{fish}");
    assert!(fish.contains("allow-deletes"), "{fish}");

    // The man page renders: man(1) reads it without a warning.
    let rendered = Command::new("man")
        .args(["--warnings", "-l", "-Tutf8"])
        .arg(man.join("dirsync.1"))
        .env("MANWIDTH", "80")
        .output()
        .expect("man runs (Debian package man-db)");
    assert!(
        rendered.status.success(),
        "{}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    assert!(
        String::from_utf8_lossy(&rendered.stderr).trim().is_empty(),
        "{}",
        String::from_utf8_lossy(&rendered.stderr)
    );
}
