//! Errors of the client, each saying what to do about it.

use std::path::PathBuf;

/// Everything the client can report.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing answers on the socket.
    #[error(
        "cannot connect to EchoPost at {socket}: {reason} (is `echopost run` running with this socket?)"
    )]
    Connect { socket: PathBuf, reason: String },

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
}

impl ClientError {
    /// True when the daemon is gone or going (connection failed, or `UNAVAILABLE`): nothing
    /// was acknowledged, and starting or reconnecting to a daemon and retrying is right.
    pub fn daemon_unavailable(&self) -> bool {
        match self {
            ClientError::Connect { .. } => true,
            ClientError::Status(s) => s.code() == tonic::Code::Unavailable,
            _ => false,
        }
    }
}
