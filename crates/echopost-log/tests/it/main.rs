//! The engine's integration tests, as one test binary: each suite is a module, so one
//! link serves them all and libtest runs them in parallel with each other.
//!
//! * `log`: behaviour through the public API, on the real and the simulated file system.
//! * `crash_simulation`: random workloads crashed at random points (power loss, torn
//!   writes, kill), checked against a model of what the API acknowledged.
//! * `io_faults`: every file operation of a workload failed in turn (EIO, ENOSPC).
//! * `corruption`: files damaged at random; recovery is exact or names the damage.
//! * `cursor_recovery`: an unreadable or old-format cursor, a full disk drained with zero
//!   free bytes, and a crash at every step of that drain.
//! * `never_panic`: property tests over arbitrary directory contents.
//! * `presized`: the pre-sized segment lifecycle (issue 17): zero tails after power loss,
//!   frames from an earlier life, logs written with growing segments.
//! * `borrowed_reads`: records lent by `Reader::read_each` are what `next_batch` returns.
//! * `checkpoint`: a caller's state rebuilt from its checkpoint and the frames after it
//!   agrees with what survived crashes and I/O faults.
//! * `fuzz_seeds`: the seed corpus of the fuzz targets in `fuzz/`, made by the real
//!   encoders and checked against the committed files.
//!
//! Run one suite by its module path: `cargo test -p echopost-log -- crash_simulation::`.
//! Shared helpers live in `support/` (`common`: small fixtures; `sim_model`: the model,
//! workload generators and seed runner of the simulation suites).

#[macro_use]
mod support;

mod borrowed_reads;
mod checkpoint;
mod corruption;
mod crash_simulation;
mod cursor_recovery;
mod fuzz_seeds;
mod io_faults;
mod log;
mod never_panic;
mod presized;
mod salvage;
mod seek;
