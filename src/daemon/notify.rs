//! Telling systemd how the service is doing (sd_notify(3)), through the
//! `sd-notify` crate: `READY=1`, `STATUS=`, `WATCHDOG=1` and `STOPPING=1`
//! datagrams to the socket named by `$NOTIFY_SOCKET`. Without the variable
//! (not started by systemd) every call does nothing, so the daemon works the
//! same anywhere.
//!
//! `sd-notify` connects to `$NOTIFY_SOCKET` as a path; systemd gives its
//! services one (`/run/systemd/notify`). An abstract socket (`@name`) cannot
//! be reached that way, which is said once, as a warning, at start.

#[cfg(test)]
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sd_notify::NotifyState;

/// Sends state changes to the service manager. Sending never fails the
/// daemon: a message that cannot be sent is logged at debug level.
#[derive(Debug)]
pub struct Notifier {
    target: Target,
}

#[derive(Debug)]
enum Target {
    Disabled,
    /// `$NOTIFY_SOCKET`, through `sd-notify`.
    Systemd,
    /// Keeps each message, as it would be sent (for the loop's tests).
    #[cfg(test)]
    Recorder(Arc<Mutex<Vec<String>>>),
}

impl Notifier {
    /// A notifier that sends nothing.
    pub fn disabled() -> Notifier {
        Notifier {
            target: Target::Disabled,
        }
    }

    /// To `$NOTIFY_SOCKET`; disabled when it is unset or empty.
    pub fn from_env() -> Notifier {
        match std::env::var_os("NOTIFY_SOCKET") {
            Some(name) if !name.is_empty() => {
                if name.to_string_lossy().starts_with('@') {
                    tracing::warn!(
                        socket = %name.to_string_lossy(),
                        "NOTIFY_SOCKET names an abstract socket, which dirsync cannot reach; systemd will not hear from it."
                    );
                }
                Notifier {
                    target: Target::Systemd,
                }
            }
            _ => Notifier::disabled(),
        }
    }

    /// A notifier that keeps what it would send, one string per datagram.
    #[cfg(test)]
    pub fn recorder() -> (Notifier, Arc<Mutex<Vec<String>>>) {
        let sent = Arc::new(Mutex::new(Vec::new()));
        (
            Notifier {
                target: Target::Recorder(Arc::clone(&sent)),
            },
            sent,
        )
    }

    pub fn is_enabled(&self) -> bool {
        !matches!(self.target, Target::Disabled)
    }

    fn send(&self, states: &[NotifyState<'_>]) {
        match &self.target {
            Target::Disabled => {}
            Target::Systemd => {
                if let Err(e) = sd_notify::notify(states) {
                    tracing::debug!(error = %e, "Cannot notify systemd.");
                }
            }
            #[cfg(test)]
            Target::Recorder(sent) => {
                let text: String = states.iter().map(|s| format!("{s}\n")).collect();
                sent.lock().unwrap_or_else(|p| p.into_inner()).push(text);
            }
        }
    }

    pub fn ready(&self, status: &str) {
        let status = one_line(status);
        self.send(&[NotifyState::Ready, NotifyState::Status(&status)]);
    }

    pub fn status(&self, status: &str) {
        self.send(&[NotifyState::Status(&one_line(status))]);
    }

    pub fn watchdog(&self) {
        self.send(&[NotifyState::Watchdog]);
    }

    pub fn stopping(&self, status: &str) {
        let status = one_line(status);
        self.send(&[NotifyState::Stopping, NotifyState::Status(&status)]);
    }
}

/// A STATUS value is one line.
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

/// How often to send `WATCHDOG=1`: half of `$WATCHDOG_USEC` when the
/// watchdog is on for this process (`$WATCHDOG_PID` unset or ours).
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled()
        .filter(|period| !period.is_zero())
        .map(|period| period / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_call_is_one_message_with_its_status_on_one_line() {
        let (n, sent) = Notifier::recorder();
        assert!(n.is_enabled());
        n.ready("Waiting;\nnext run soon");
        n.watchdog();
        n.stopping("Stopping.");
        assert_eq!(
            *sent.lock().unwrap(),
            [
                "READY=1\nSTATUS=Waiting; next run soon\n",
                "WATCHDOG=1\n",
                "STOPPING=1\nSTATUS=Stopping.\n"
            ]
        );
    }

    #[test]
    fn without_a_socket_nothing_is_sent_and_nothing_fails() {
        let n = Notifier::disabled();
        assert!(!n.is_enabled());
        n.ready("x");
        n.stopping("x");
    }
}
