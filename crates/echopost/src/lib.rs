//! The EchoPost daemon as a library.
//!
//! `main.rs` only parses the command line and turns the outcome into an exit code; all the
//! logic lives here so that integration tests, and later a client crate and the operator
//! subcommands, can reuse the pieces (size and duration parsing, the peer-credential
//! decision, the record encoding rules) without going through a process.
//!
//! One module per concept:
//!
//! | module | concept |
//! |---|---|
//! | [`cli`] | the command line (clap), size / duration / sync-policy parsing |
//! | [`config`] | resolved, validated settings of `echopost run` |
//! | [`exit`] | exit codes and the mapping from errors to them |
//! | [`session_log`] | the per-session log file `DIR/logs/<UTC>-<pid>.log` plus stderr |
//! | [`source_id`] | the directory's stable id (`DIR/source-id`) |
//! | [`socket`] | the UNIX listener: permissions, stale sockets, peer credentials per connection |
//! | [`peer`] | who may talk to the daemon (the uid decision and the tower layer enforcing it) |
//! | [`platform`] | the only platform-specific code (`cfg`-gated): peer uid, default directory |
//! | [`committer`] | one thread that writes queued appends and group-commits them with one `fdatasync` |
//! | [`gate`] | the ingest gate that makes "acknowledged then lost" impossible at exit |
//! | [`limits`] | message and record size limits, and the status mapping of oversized requests |
//! | [`server`] | the `echopost.v1.EchoPost` gRPC service |
//! | [`lifecycle`] | startup order, signals, linger exit, shutdown |
//! | [`replay`] | replay to the main server (the replayer's seam) |
//! | [`commands`] | the operator subcommands: `status`, `inspect`, `verify`, `send`, `bench`, `dead-letters`; [`commands::bench::noop_sink`] is the main server that accepts everything, the upstream of `echopost bench` and of the drain benchmark |

pub mod cli;
pub mod commands;
pub mod committer;
pub mod config;
pub mod exit;
pub mod gate;
pub mod lifecycle;
pub mod limits;
pub mod peer;
pub mod platform;
pub mod replay;
pub mod server;
pub mod session_log;
pub mod socket;
pub mod source_id;

/// The daemon's version, reported by `--version`, `Status` and the session log.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
