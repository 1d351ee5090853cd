//! The question `sync` asks on a terminal before it changes anything, as
//! `terraform apply` does: the plan is shown first, and only the answer
//! `yes` applies it. Off a terminal (systemd, cron, CI) nothing is asked;
//! `--yes` skips the question on a terminal too.

use std::io::{BufRead, IsTerminal, Write};

use tokio_util::sync::CancellationToken;

/// What the operator answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Exactly `yes`: apply.
    Yes,
    /// Anything else, or the end of input: nothing is sent.
    No,
    /// SIGINT or SIGTERM while waiting: nothing is sent.
    Interrupted,
}

/// Whether to ask: standard input is a terminal and `--yes` was not given.
pub fn should_ask(yes: bool) -> bool {
    !yes && std::io::stdin().is_terminal()
}

/// Asks on standard error (standard output holds the plan) and reads one
/// line from standard input. `what` says what would be sent.
pub async fn ask(what: &str, cancel: &CancellationToken) -> Answer {
    {
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\nDo you want to apply these changes?\n  dirsync will send {what}.\n  Only 'yes' applies; anything else cancels.\n\n  Enter a value: "
        );
        let _ = err.flush();
    }
    // A blocking read on its own thread: the signal handler must still be
    // able to cancel the wait.
    let read = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map(|n| (n, line))
    });
    tokio::select! {
        () = cancel.cancelled() => Answer::Interrupted,
        read = read => match read {
            Ok(Ok((n, line))) if n > 0 => judge(&line),
            _ => Answer::No,
        },
    }
}

/// Only `yes` (surrounding blanks and the line ending aside) applies.
pub fn judge(line: &str) -> Answer {
    if line.trim() == "yes" {
        Answer::Yes
    } else {
        Answer::No
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_yes_applies() {
        assert_eq!(judge("yes\n"), Answer::Yes);
        assert_eq!(judge("  yes \r\n"), Answer::Yes);
        for other in ["y\n", "YES\n", "Yes\n", "yes please\n", "\n", "no\n"] {
            assert_eq!(judge(other), Answer::No, "{other:?}");
        }
    }
}
