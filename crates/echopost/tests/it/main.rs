//! The daemon's integration tests, as one test binary.
//!
//! Every suite is a module; each used to be a binary of its own, which linked tonic,
//! tokio and rustls once per suite. Run one suite with its module path as the filter:
//!
//! ```sh
//! cargo test -p echopost --test it -- torture::
//! cargo test -p echopost -- replay_deliver::
//! ```
//!
//! The suites share this process, so a test must not change what is process-wide:
//! no `std::env::set_var` (give a child process its environment through its `Command`),
//! no `set_current_dir`, no resource limits or signal dispositions of this process, and
//! no fixed paths or ports (each test has its own temporary directory; servers bind
//! port 0). Every `#[tokio::test]` builds its own runtime, so a suite keeps whatever
//! flavor it needs.
//!
//! `scripts/test` is the full test command: it prepares the Python environment that
//! [`python_example`] needs and runs `cargo test --workspace --locked`.

mod support;

mod cli_commands;
mod client_fallback;
mod daemon_bad_input;
mod daemon_ingest;
mod daemon_lifecycle;
mod front_door;
mod full_disk;
mod fuzz_seeds;
mod other_uid;
mod python_example;
mod real_clients;
mod replay_daemon;
mod replay_deliver;
mod replay_forward;
mod replay_policy;
mod replay_window;
mod side_stores;
mod stopped_daemon;
mod streams;
mod torture;
