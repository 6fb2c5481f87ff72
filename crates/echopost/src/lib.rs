//! The EchoPost daemon as a library.
//!
//! `main.rs` only parses the command line and turns the outcome into an exit code; all the
//! logic lives here so that integration tests, the client crate and the operator
//! subcommands can reuse the pieces without going through a process.
//!
//! The folders follow a record's path (see `ARCHITECTURE.md`):
//!
//! | module | concept |
//! |---|---|
//! | [`cli`] | the command line (clap), size / duration / sync-policy parsing |
//! | [`config`] | the one place settings are validated: [`config::Config`], [`config::ReplayConfig`] |
//! | [`daemon`] | the process around the data path: lifecycle, socket, peers, session log, exit codes |
//! | [`service`] | the `echopost.v1.EchoPost` gRPC service, one file per RPC |
//! | [`front_door`] | unmodified gRPC and HTTP clients: captured calls and requests become records (`--accept-grpc`, `--accept-http`) |
//! | [`ingest`] | socket → disk: checks, the gate, the group-commit thread |
//! | [`streams`] | streams and idempotent producers: versions, deduplication, their crash-safe state, per-stream backlog |
//! | [`replay`] | disk → main server: health, sinks, retries, dead letters |
//! | [`escape`] | control characters escaped in human output, JSON and the session log |
//! | [`commands`] | the operator subcommands: `status`, `inspect`, `verify`, `send`, `bench`, `dead-letters`; [`commands::bench::noop_sink`] is the main server that accepts everything, the upstream of `echopost bench` and of the drain benchmark |

pub mod cli;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod disk_quota;
pub mod escape;
pub mod front_door;
pub mod ingest;
pub mod replay;
pub mod service;
pub mod streams;

/// The daemon's version, reported by `--version`, `Status` and the session log.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
