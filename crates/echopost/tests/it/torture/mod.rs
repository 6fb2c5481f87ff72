//! Real-process torture: the `echopost` binary is killed with SIGKILL at random moments,
//! many times over, while several clients append over its UNIX socket and while it
//! replays to a real main server on loopback; then it is restarted on the same directory.
//! At the end one last run drains everything, and the main server's arrival log is held
//! against what the clients were told.
//!
//! * [`scenarios`]: the tests: what the seed decides for each daemon life, starting,
//!   killing and restarting the daemon, the final drain, and what is observed from the
//!   directory (the cursor, the segment files) after every kill.
//! * [`checker`]: the oracle: holds what the main server received and what every producer
//!   was told against each other, after the fact (its documentation lists the checks).
//! * [`sink`]: the main server (`grpc.health.v1.Health` and `echopost.v1.Sink` on
//!   loopback), which logs every accepted record with the daemon life that sent it.
//! * [`producers`]: the clients: unary and pipelined (`AppendStream`) appenders that log
//!   every request they sent and what it was acknowledged as.
//! * [`records`]: every field of a record derives from its id, so the expected bytes are
//!   known anywhere.
//!
//! # Scale and replay
//! `ECHOPOST_TORTURE_CYCLES` (default [`scenarios::DEFAULT_CYCLES`]) kills,
//! `ECHOPOST_TORTURE_SEED` (default [`scenarios::DEFAULT_SEED`]) for every random choice:
//! scenario, delays, batch shapes, producers, the sink's scripted outages. Timing still
//! varies between runs (real processes), but a seed replays the same schedule. A failure
//! prints the seed and the command that replays it.

mod checker;
mod producers;
mod records;
mod scenarios;
mod sink;

use std::time::Duration;

/// Metadata key of the life tag each daemon adds to its replayed requests.
pub const LIFE_HEADER: &str = "x-torture-life";
/// Longest a single append, connect or stream message may take before the test fails
/// (they normally take milliseconds; after a kill they fail at once).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(20);
