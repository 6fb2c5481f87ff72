//! Rust client for the [EchoPost] daemon.
//!
//! EchoPost keeps an application's records safe on local disk while its main server is
//! unreachable, and replays them in order once it is back. This crate is how a Rust
//! application talks to it:
//!
//! * [`Client`]: connect to a running daemon over its UNIX socket; [`Client::append`]
//!   (atomic, answered once durable), [`Client::appender`] (pipelined stream of batches
//!   with in-order acknowledgements), [`Client::status`], [`Client::read`]. Every wait
//!   has a deadline ([`DEFAULT_TIMEOUT`], 10 s, or [`ClientBuilder::timeout`]): a daemon
//!   that accepts connections but never answers (stopped, stuck) is reported as
//!   [`ClientError::Timeout`] instead of blocking the caller.
//! * [`IdempotentAppender`]: appends numbered by the application (producer id and
//!   number) that it retries safely: a retry of a stored batch is answered with the
//!   original sequences, never stored twice. [`Client::list_streams`], [`Client::peek`]
//!   and [`Client::read_stream`] show streams.
//! * [`Fallback`]: the one call an application needs when its main server is down. It
//!   connects to the daemon for a directory, starting `echopost run` detached if none
//!   answers, and appends. Many processes calling it at once end up with exactly one
//!   daemon (the daemon's directory lock decides); if the daemon exited after draining,
//!   the next call starts it again. It never starts a second daemon for a directory
//!   whose daemon is stopped or stuck: it waits for up to its start timeout
//!   ([`DaemonSettings::start_timeout`]) and reports [`ClientError::NotAnswering`].
//!
//! # Errors worth telling apart
//! * [`ClientError::daemon_unavailable`]: nothing was stored; reconnecting or starting a
//!   daemon and retrying is right ([`Fallback`] does it).
//! * [`ClientError::Timeout`]: something is there but did not answer in time; an append
//!   may or may not be stored.
//! * [`ClientError::PermissionDenied`]: the daemon runs as another user that does not
//!   allow this one (`echopost run --allow-uid`), or the socket's directory is not
//!   searchable by this user.
//!
//! ```no_run
//! use echopost_client::{Client, Record};
//!
//! # async fn demo() -> Result<(), echopost_client::ClientError> {
//! let client = Client::connect("/run/user/1000/echopost/echopost.sock").await?;
//! let ack = client
//!     .append(vec![Record {
//!         id: "order-42".into(),
//!         payload: b"{\"total\": 12}".to_vec(),
//!         route: "POST /orders".into(),
//!         ..Record::default()
//!     }])
//!     .await?;
//! println!("stored as sequence {}", ack.first_sequence);
//! # Ok(()) }
//! ```
//!
//! Delivery is at-least-once: a record may reach the main server more than once, always
//! with the same `(source, sequence)` and the `id` you gave it, so the receiver can
//! deduplicate.
//!
//! [EchoPost]: https://github.com/echopost/echopost

mod appender;
mod client;
mod error;
mod fallback;
mod idempotent;

pub use appender::Appender;
pub use client::{Appended, Client, ClientBuilder, DEFAULT_TIMEOUT};
pub use error::ClientError;
pub use fallback::{DaemonSettings, Fallback};
pub use idempotent::{IdempotentAppender, IdempotentBatch};

/// The generated protocol types (`echopost.v1`), for fields this crate does not wrap.
pub use echopost_proto::v1 as proto;
pub use echopost_proto::v1::{Record, StatusResponse, StoredRecord};
