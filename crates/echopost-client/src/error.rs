//! Errors of the client, each saying what to do about it.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Everything the client can report.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing answers on the socket.
    #[error(
        "cannot connect to EchoPost at {socket}: {reason} (is `echopost run` running with this socket?)"
    )]
    Connect { socket: PathBuf, reason: String },

    /// The socket, or a directory on the way to it, is not ours to open (`EACCES`), or the
    /// daemon refused this user (`PERMISSION_DENIED`; `detail` is its message, naming the
    /// uids). Starting another daemon cannot help, so [`crate::Fallback`] reports it at
    /// once.
    #[error(
        "permission denied on {}: the daemon runs as another user; it must allow your uid (--allow-uid) and the socket's directory must be searchable by you ({detail})",
        socket.display()
    )]
    PermissionDenied { socket: PathBuf, detail: String },

    /// The daemon did not answer within the client's deadline: connecting, one call, or
    /// one message of a stream. Something accepted the connection (or the kernel queued
    /// it) but did not answer: the daemon is stopped (`SIGSTOP`), stuck, or overloaded.
    /// An append that timed out may still be stored (for instance once a stopped daemon
    /// continues); resending it may store it twice, which at-least-once delivery allows.
    #[error(
        "EchoPost on {} did not answer {what} within {}: the daemon is stopped, stuck or overloaded (an append that timed out may still be stored). Check `echopost status` and its session log, or raise the timeout",
        socket.display(),
        fmt_timeout(*timeout)
    )]
    Timeout {
        socket: PathBuf,
        /// What was waited for: `"the connection"`, `"Append"`, `"a Read message"`, ...
        what: &'static str,
        timeout: Duration,
    },

    /// The daemon answered with an error status. `UNAVAILABLE` means nothing was stored
    /// (the daemon is shutting down or its storage failed); `RESOURCE_EXHAUSTED` means the
    /// buffer is full or the request too large; `INVALID_ARGUMENT` means the request is
    /// malformed. The message names the limit involved.
    #[error("EchoPost refused the request ({}): {}", .0.code(), .0.message())]
    Status(#[from] tonic::Status),

    /// An append stream ended before every batch was acknowledged.
    #[error(
        "the append stream closed with {unacknowledged} batch(es) unacknowledged; resend them (duplicates are safe: delivery is at-least-once)"
    )]
    StreamClosed { unacknowledged: usize },

    /// The daemon binary could not be started.
    #[error(
        "could not start `{binary}`: {source} (install echopost, or point ECHOPOST_BIN / DaemonSettings::binary at it)"
    )]
    Spawn {
        binary: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The daemon started by the fallback helper exited before answering.
    #[error(
        "echopost exited with {status} while starting; its session log in {}/logs says why",
        dir.display()
    )]
    DaemonExited { status: String, dir: PathBuf },

    /// The daemon started by the fallback helper did not become healthy in time.
    #[error(
        "echopost did not answer on {} within {timeout_ms} ms; see its session log in {}/logs",
        socket.display(),
        dir.display()
    )]
    StartTimeout {
        socket: PathBuf,
        dir: PathBuf,
        timeout_ms: u128,
    },

    /// The helper started daemons for the directory that did not store the append (they
    /// exited, or refused it as unavailable), and backs off: the next start would come
    /// after the start timeout. Handed to the application instead of starting daemons in
    /// a loop (issue 13).
    #[error(
        "{starts} echopost daemon(s) started for {} did not store the append; not starting another for {wait_ms} ms (back-off). Check `echopost status --dir {}` and its session log in {}/logs",
        dir.display(),
        dir.display(),
        dir.display()
    )]
    StartBackoff {
        dir: PathBuf,
        /// Daemons started since the last append that succeeded.
        starts: u32,
        /// How long until the next start is allowed, in milliseconds.
        wait_ms: u128,
    },

    /// A daemon holds the directory (its lock) but did not answer on the socket within the
    /// fallback helper's start timeout: it is stopped, stuck, or listens on another socket.
    /// No second daemon is started for a directory whose lock is held.
    #[error(
        "a daemon holds {} but did not answer on {} within {timeout_ms} ms: it is stopped (SIGSTOP), stuck, or listening on another socket. No second daemon was started; check `echopost status --dir {}` and its session log in {}/logs",
        dir.join("LOCK").display(),
        socket.display(),
        dir.display(),
        dir.display()
    )]
    NotAnswering {
        socket: PathBuf,
        dir: PathBuf,
        timeout_ms: u128,
    },
}

impl ClientError {
    /// True when the daemon is gone or going (connection failed, or `UNAVAILABLE`): nothing
    /// was acknowledged, and starting or reconnecting to a daemon and retrying is right.
    ///
    /// False for a [`ClientError::Timeout`] (a daemon is there, and the request may have
    /// been stored) and for [`ClientError::PermissionDenied`] (another daemon would not
    /// help).
    pub fn daemon_unavailable(&self) -> bool {
        match self {
            ClientError::Connect { .. } => true,
            ClientError::Status(s) => s.code() == tonic::Code::Unavailable,
            _ => false,
        }
    }

    /// True for [`ClientError::Timeout`], [`ClientError::StartTimeout`] and
    /// [`ClientError::NotAnswering`]: something was there but did not answer in time.
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            ClientError::Timeout { .. }
                | ClientError::StartTimeout { .. }
                | ClientError::NotAnswering { .. }
        )
    }

    /// True for [`ClientError::PermissionDenied`].
    pub fn is_permission_denied(&self) -> bool {
        matches!(self, ClientError::PermissionDenied { .. })
    }

    /// The error for a status the daemon (or tonic) returned on a call to `socket`:
    /// `PERMISSION_DENIED` and tonic's own deadline become their variants.
    pub(crate) fn from_status(
        s: tonic::Status,
        socket: &Path,
        what: &'static str,
        timeout: Duration,
    ) -> ClientError {
        if s.code() == tonic::Code::PermissionDenied {
            return ClientError::PermissionDenied {
                socket: socket.to_path_buf(),
                detail: s.message().to_owned(),
            };
        }
        // tonic's own per-request deadline (the channel's backstop, see `client.rs`) comes
        // back as CANCELLED with this message and no source.
        if s.code() == tonic::Code::Cancelled
            && (s.message() == tonic::TimeoutExpired(()).to_string()
                || has_source::<tonic::TimeoutExpired>(&s))
        {
            return ClientError::Timeout {
                socket: socket.to_path_buf(),
                what,
                timeout,
            };
        }
        ClientError::Status(s)
    }
}

/// `2s`, `500ms`, `1.5s`.
fn fmt_timeout(d: Duration) -> String {
    format!("{d:?}")
}

/// True if `T` is somewhere in `e`'s source chain (itself included).
fn has_source<T: std::error::Error + 'static>(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(c) = cur {
        if c.is::<T>() {
            return true;
        }
        cur = c.source();
    }
    false
}

/// The first `io::Error` in `e`'s source chain (itself included), looking inside
/// `io::Error`s that wrap another error.
pub(crate) fn io_error_in<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a std::io::Error> {
    let mut cur = Some(e);
    while let Some(c) = cur {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            // An io::Error built around another error (`io::Error::other`) has the real
            // cause inside; prefer it if it is an io::Error as well.
            if let Some(inner) = io.get_ref().and_then(|i| io_error_in(i)) {
                return Some(inner);
            }
            return Some(io);
        }
        cur = c.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] Box<dyn std::error::Error + Send + Sync>);

    #[test]
    fn finds_permission_denied_down_the_chain() {
        let io = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let e = Outer(Box::new(Outer(Box::new(io))));
        let found = io_error_in(&e).map(std::io::Error::kind);
        assert_eq!(found, Some(std::io::ErrorKind::PermissionDenied));

        let wrapped = std::io::Error::other(Outer(Box::new(std::io::Error::from(
            std::io::ErrorKind::PermissionDenied,
        ))));
        let e = Outer(Box::new(wrapped));
        assert_eq!(
            io_error_in(&e).map(std::io::Error::kind),
            Some(std::io::ErrorKind::PermissionDenied)
        );
        assert!(io_error_in(&Outer("plain".into())).is_none());
    }

    #[test]
    fn permission_and_timeouts_never_start_a_daemon() {
        let socket = Path::new("/run/x/echopost.sock");
        let denied = ClientError::from_status(
            tonic::Status::permission_denied("uid 7 refused"),
            socket,
            "Append",
            Duration::from_secs(1),
        );
        assert!(denied.is_permission_denied(), "{denied:?}");
        assert!(!denied.daemon_unavailable());
        let msg = denied.to_string();
        assert!(
            msg.contains("permission denied on /run/x/echopost.sock"),
            "{msg}"
        );
        assert!(
            msg.contains("--allow-uid") && msg.contains("uid 7 refused"),
            "{msg}"
        );

        let t = ClientError::Timeout {
            socket: socket.into(),
            what: "Append",
            timeout: Duration::from_secs(2),
        };
        assert!(t.is_timeout() && !t.daemon_unavailable());
        assert!(t.to_string().contains("within 2s"), "{t}");
        assert!(
            ClientError::from_status(
                tonic::Status::unavailable("closing"),
                socket,
                "Append",
                Duration::from_secs(1)
            )
            .daemon_unavailable()
        );
    }
}
