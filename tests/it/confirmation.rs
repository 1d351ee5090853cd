//! `sync` on a terminal: the plan first, then the question, and only `yes`
//! applies. Driven through a real pseudo-terminal (the binary sees a TTY on
//! stdin, stdout and stderr), as an operator at a shell would.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustix::pty::{grantpt, openpt, ptsname, unlockpt, OpenptFlags};

use crate::support::quickstart;

const QUESTION: &str = "Enter a value: ";

/// The binary on the far side of a pseudo-terminal: what it wrote so far,
/// and a way to type.
struct OnTerminal {
    child: Child,
    master: std::fs::File,
    screen: Arc<Mutex<Vec<u8>>>,
}

impl OnTerminal {
    fn start(args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> OnTerminal {
        let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).expect("a pseudo-terminal");
        grantpt(&master).unwrap();
        unlockpt(&master).unwrap();
        let name = ptsname(&master, Vec::new()).unwrap();
        let slave: OwnedFd = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(name.to_str().unwrap())
            .unwrap()
            .into();
        let mut command = Command::new(env!("CARGO_BIN_EXE_dirsync"));
        command
            .args(args)
            .current_dir(cwd)
            .env("DIRSYNC_LOG", "warn")
            .env_remove("NO_COLOR")
            .env("TERM", "xterm")
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave));
        for (k, v) in env {
            command.env(k, v);
        }
        let child = command.spawn().expect("dirsync runs");
        // The parent's copies of the slave end are gone with `command`: once
        // the child exits, reading the master ends.
        drop(command);
        let master = std::fs::File::from(master);
        let screen = Arc::new(Mutex::new(Vec::new()));
        let mut reader = master.try_clone().unwrap();
        let seen = screen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // EIO once the last slave closes: the end of the output.
            while let Ok(n @ 1..) = reader.read(&mut buf) {
                seen.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        OnTerminal {
            child,
            master,
            screen,
        }
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.screen.lock().unwrap()).into_owned()
    }

    /// Waits (with a deadline) until the screen shows `text`.
    fn wait_for(&self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let screen = self.screen();
            if screen.contains(text) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "{text:?} never appeared; the screen:\n{screen}"
            );
            std::thread::park_timeout(Duration::from_millis(20));
        }
    }

    fn type_line(&mut self, line: &str) {
        self.master
            .write_all(format!("{line}\n").as_bytes())
            .unwrap();
    }

    /// The exit code, and the whole screen once the output has drained.
    fn finish(mut self) -> (i32, String) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "dirsync did not exit; the screen:\n{}",
                self.screen()
            );
            std::thread::park_timeout(Duration::from_millis(20));
        };
        // The reader thread drains what is left in the terminal's buffer.
        let drained = Instant::now() + Duration::from_secs(5);
        let mut last = self.screen().len();
        loop {
            std::thread::park_timeout(Duration::from_millis(50));
            let now = self.screen().len();
            if now == last || Instant::now() > drained {
                break;
            }
            last = now;
        }
        (status.code().unwrap_or(-1), self.screen())
    }
}

fn plan_exit_code(config: &str, cwd: &Path) -> i32 {
    Command::new(env!("CARGO_BIN_EXE_dirsync"))
        .args(["plan", "-c", config])
        .current_dir(cwd)
        .env("DIRSYNC_LOG", "warn")
        .output()
        .unwrap()
        .status
        .code()
        .unwrap()
}

#[test]
fn on_a_terminal_sync_shows_the_plan_then_asks_and_only_yes_applies() {
    let (dir, config) = quickstart();
    let c = config.to_str().unwrap();

    // Anything but "yes" cancels: nothing is sent, changes stay pending.
    let mut term = OnTerminal::start(&["sync", "-c", c], dir.path(), &[]);
    let asked = term.wait_for(QUESTION);
    let plan_at = asked.find("to create").expect("the plan is shown");
    let question_at = asked.find("Do you want to apply these changes?").unwrap();
    assert!(plan_at < question_at, "the plan comes before the question");
    assert!(asked.contains("Only 'yes' applies"), "{asked}");
    term.type_line("y");
    let (code, screen) = term.finish();
    assert_eq!(code, 2, "declined: changes pending\n{screen}");
    assert!(
        screen.contains("apply cancelled; nothing was changed"),
        "{screen}"
    );
    assert_eq!(
        plan_exit_code(c, dir.path()),
        2,
        "nothing was applied after 'y'"
    );

    // "yes" applies.
    let mut term = OnTerminal::start(&["sync", "-c", c], dir.path(), &[]);
    term.wait_for(QUESTION);
    term.type_line("yes");
    let (code, screen) = term.finish();
    assert_eq!(code, 0, "{screen}");
    assert!(screen.contains("Applied: 24 applied."), "{screen}");
    assert_eq!(plan_exit_code(c, dir.path()), 0, "in sync after 'yes'");
}

#[test]
fn yes_skips_the_question_on_a_terminal() {
    let (dir, config) = quickstart();
    let c = config.to_str().unwrap();
    let term = OnTerminal::start(&["sync", "--yes", "-c", c], dir.path(), &[]);
    let (code, screen) = term.finish();
    assert_eq!(code, 0, "{screen}");
    assert!(!screen.contains(QUESTION), "{screen}");
    assert_eq!(plan_exit_code(c, dir.path()), 0);
}

#[test]
fn the_end_of_input_at_the_question_applies_nothing() {
    let (dir, config) = quickstart();
    let c = config.to_str().unwrap();
    let mut term = OnTerminal::start(&["sync", "-c", c], dir.path(), &[]);
    term.wait_for(QUESTION);
    // Ctrl-D: the terminal's end of file.
    term.master.write_all(&[4]).unwrap();
    let (code, screen) = term.finish();
    assert_eq!(code, 2, "{screen}");
    assert_eq!(plan_exit_code(c, dir.path()), 2);
}

#[test]
fn a_terminal_gets_a_legend_colour_and_operations_grouped_by_customer() {
    let (dir, config) = quickstart();
    let c = config.to_str().unwrap();
    let term = OnTerminal::start(&["plan", "-c", c], dir.path(), &[]);
    let (code, screen) = term.finish();
    assert_eq!(code, 2, "{screen}");
    assert!(
        screen.contains("Legend: + create  ~ update  - delete"),
        "{screen}"
    );
    assert!(screen.contains("\x1b["), "colour on a terminal: {screen}");
    // One heading per customer, its own create and its users under it.
    let acme = screen.find("customer acme:").expect("a heading for acme");
    let globex = screen
        .find("customer globex:")
        .expect("a heading for globex");
    let alan = screen.find("alan.turing@acme.example").unwrap();
    assert!(acme < alan && (alan < globex || globex < acme), "{screen}");

    let term = OnTerminal::start(&["plan", "-c", c], dir.path(), &[("NO_COLOR", "1")]);
    let (_, screen) = term.finish();
    assert!(!screen.contains("\x1b["), "NO_COLOR: no colour: {screen}");
    assert!(screen.contains("Legend:"), "{screen}");
}
