//! The process around the data path: everything `echopost run` does that is not storing
//! or replaying a record.
//!
//! | module | concern |
//! |---|---|
//! | [`lifecycle`] | the order of it all: open the log, start, serve until a stop reason, shut down, close |
//! | [`services`] | what is started once the log is open, and the numbered shutdown steps |
//! | [`store`] | the state directory and the log as the daemon opens and closes them |
//! | [`linger`] | the linger exit: leave when the backlog is empty and no append came for `--linger` |
//! | [`monitor`] | replay milestones in the session log |
//! | [`exit`] | every error → exit code mapping, and nowhere else |
//! | [`h2`] | every stock gRPC client on the socket: `:authority` normalised, refusals logged |
//! | [`activation`] | socket activation: the listener a service manager (systemd, launchd) passed |
//! | [`socket`] | the UNIX listener: permissions, stale sockets, peer credentials per connection |
//! | [`rewind`] | a connection whose first bytes were read to tell its protocol, given back |
//! | [`peer`] | who may talk to the daemon (the uid decision and the tower layer enforcing it) |
//! | [`platform`] | the only platform-specific code (`cfg`-gated): peer uid, default directory |
//! | [`session_log`] | the per-session log file `DIR/logs/<UTC>-<pid>.log` plus stderr |
//! | [`source_id`] | the directory's stable id (`DIR/source-id`) |

pub mod activation;
pub mod exit;
pub mod h2;
pub mod lifecycle;
pub mod linger;
pub mod monitor;
pub mod peer;
pub mod platform;
pub mod rewind;
pub mod services;
pub mod session_log;
pub mod socket;
pub mod source_id;
pub mod store;
