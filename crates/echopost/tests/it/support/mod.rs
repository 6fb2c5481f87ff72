//! Helpers shared by the suites.
//!
//! * [`daemon`]: the real `echopost` binary on a temporary directory (start, stop, kill,
//!   signal, exit status, stderr and session logs), clients over its UNIX socket, and the
//!   operator commands (`echopost status`, `send`, ...) run as processes.
//! * [`replay`]: the replayer run in the test process on a log the test filled, with the
//!   ordering checks the replay suites share.
//! * [`upstream`]: main servers on loopback (gRPC and HTTP, optionally TLS with a test CA)
//!   that the daemon or the replayer delivers to.
//!
//! Everything here is per test: each test gets its own temporary directory, its own
//! sockets and ports, and its own runtime, so that the suites can share one process.

pub mod daemon;
pub mod replay;
pub mod upstream;
