//! systemd's readiness protocol (sd_notify(3)), without libsystemd: a datagram of
//! `VARIABLE=value` lines to the Unix socket named by `$NOTIFY_SOCKET`.
//!
//! With `Type=notify`, systemd counts the service started at `READY=1` (so units ordered after
//! edgedns start once it answers), shows the last `STATUS=` in `systemctl status`, and, with
//! `WatchdogSec=`, restarts it when `WATCHDOG=1` stops coming. Without `$NOTIFY_SOCKET` (not
//! under systemd) every call does nothing.

use std::{
    os::unix::net::{SocketAddr, UnixDatagram},
    sync::Arc,
    time::Duration,
};

use tracing::{debug, warn};

/// Where to send notifications; cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Notifier {
    target: Option<Arc<(UnixDatagram, SocketAddr)>>,
}

impl Notifier {
    /// The socket `$NOTIFY_SOCKET` names (a path, or `@name` for the abstract namespace), or a
    /// notifier that sends nothing.
    pub fn from_env() -> Self {
        let Some(name) = std::env::var_os("NOTIFY_SOCKET") else {
            return Self::default();
        };
        let name = name.to_string_lossy().into_owned();
        let addr = match name.strip_prefix('@') {
            Some(abs) => {
                use std::os::linux::net::SocketAddrExt as _;
                SocketAddr::from_abstract_name(abs.as_bytes())
            }
            None => SocketAddr::from_pathname(&name),
        };
        // Non-blocking: the daemon sends from async tasks, and a notify socket whose queue is
        // full (systemd busy or gone) must cost a logged failure, not a stalled worker.
        let socket = UnixDatagram::unbound().and_then(|s| s.set_nonblocking(true).map(|()| s));
        match addr.and_then(|addr| Ok((socket?, addr))) {
            Ok(target) => Self {
                target: Some(Arc::new(target)),
            },
            Err(e) => {
                tracing::warn!(socket = %name, "NOTIFY_SOCKET unusable, not notifying systemd: {e}");
                Self::default()
            }
        }
    }

    /// Sends `msg` (newline-separated `VARIABLE=value` lines). A failure is logged and
    /// otherwise ignored: systemd's bookkeeping must not stop the server.
    pub fn send(&self, msg: &str) {
        if let Some(t) = &self.target {
            match t.0.send_to_addr(msg.as_bytes(), &t.1) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    warn!("sd_notify {msg:?} dropped: the notify socket's queue is full");
                }
                Err(e) => debug!("sd_notify {msg:?}: {e}"),
            }
        }
    }

    /// `STATUS=`: what the daemon is doing, for `systemctl status`.
    pub fn status(&self, status: &str) {
        self.send(&format!("STATUS={status}"));
    }

    /// Whether notifications go anywhere.
    pub fn is_enabled(&self) -> bool {
        self.target.is_some()
    }
}

/// How often systemd wants `WATCHDOG=1`: `$WATCHDOG_USEC`, if it is set and `$WATCHDOG_PID`
/// (when set) is this process.
pub fn watchdog_interval() -> Option<Duration> {
    if let Some(pid) = std::env::var_os("WATCHDOG_PID") {
        if pid.to_str()?.parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// `MONOTONIC_USEC=` for a `RELOADING=1` message: CLOCK_MONOTONIC now, in microseconds.
pub fn monotonic_usec() -> u64 {
    crate::clock_ns(libc::CLOCK_MONOTONIC) / 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_a_path_socket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify");
        let rx = UnixDatagram::bind(&path).expect("bind");
        let n = Notifier {
            target: Some(Arc::new((
                UnixDatagram::unbound().expect("socket"),
                SocketAddr::from_pathname(&path).expect("addr"),
            ))),
        };
        n.status("loading");
        n.send("READY=1");
        let mut buf = [0; 64];
        let len = rx.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..len], b"STATUS=loading");
        let len = rx.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..len], b"READY=1");
    }
}
