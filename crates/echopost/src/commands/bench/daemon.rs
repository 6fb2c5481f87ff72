//! The daemon the bench starts when no `--socket` is given.
//!
//! The bench runs `echopost run` from its own executable, so that it measures exactly the
//! binary the operator has, in `--dir` or a temporary directory (removed afterwards),
//! with the bench's sink ([`BenchSink`]) as its upstream. The child is put in its own process group, so
//! a Ctrl-C at the terminal reaches only the bench, which then stops the daemon cleanly
//! (SIGTERM, and SIGKILL only if it does not exit in time); and every `ECHOPOST_*`
//! variable is removed from its environment, so the figures do not depend on the
//! operator's shell. The tail of its stderr is kept to explain a failed start.

use std::collections::VecDeque;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::sink::BenchSink;
use crate::cli::BenchArgs;
use crate::commands::{CommandError, fmt_duration};
use crate::ingest::limits::MAX_MESSAGE_BYTES;

/// How long the started daemon gets to answer its socket.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the started daemon gets to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a started daemon keeps its data: `--dir`, or a temporary directory.
pub struct Area {
    dir: PathBuf,
    pub socket: PathBuf,
    temp: Option<tempfile::TempDir>,
}

impl Area {
    pub fn new(dir: Option<&Path>) -> Result<Area, CommandError> {
        match dir {
            Some(d) => {
                let dir = std::path::absolute(d).map_err(|e| {
                    CommandError::usage(format!("cannot resolve --dir {}: {e}", d.display()))
                })?;
                refuse_non_empty(&dir)?;
                Ok(Area {
                    socket: dir.join(crate::config::DEFAULT_SOCKET_NAME),
                    dir,
                    temp: None,
                })
            }
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("echopost-bench-")
                    .tempdir()
                    .map_err(|e| {
                        CommandError::fatal(format!(
                            "cannot create a temporary directory (set TMPDIR, or pass --dir): {e}"
                        ))
                    })?;
                let dir = temp.path().join("dir");
                Ok(Area {
                    socket: dir.join(crate::config::DEFAULT_SOCKET_NAME),
                    dir,
                    temp: Some(temp),
                })
            }
        }
    }
}

/// The bench drains everything its daemon holds into a sink that discards it, so it
/// must never run on a directory that holds someone's records: `--dir` (or
/// `ECHOPOST_DIR`, its environment twin, which an operator may have set for their real
/// daemon) must be new or empty.
fn refuse_non_empty(dir: &Path) -> Result<(), CommandError> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => match entries.next() {
            None => Ok(()),
            Some(_) => Err(CommandError::usage(format!(
                "bench refuses --dir {}: it is not empty (is ECHOPOST_DIR set?). The bench delivers everything in its directory to a sink that discards it; give it a new or empty directory, or leave --dir out for a temporary one",
                dir.display()
            ))),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(CommandError::usage(format!(
            "cannot read --dir {}: {e}",
            dir.display()
        ))),
    }
}

/// `echopost run` started by the bench.
pub struct SpawnedDaemon {
    child: Child,
    pub area: Area,
    stderr: Arc<Mutex<VecDeque<u8>>>,
}

/// Bytes of the daemon's stderr kept for error messages.
const STDERR_TAIL: usize = 8 << 10;

impl SpawnedDaemon {
    /// Starts the daemon in `area` with `sink` as its upstream (and `--in-flight`), and
    /// waits until it serves.
    pub async fn start(
        area: Area,
        sink: &BenchSink,
        args: &BenchArgs,
    ) -> Result<Self, CommandError> {
        use std::os::unix::process::CommandExt;
        let exe = std::env::current_exe().map_err(|e| {
            CommandError::fatal(format!(
                "cannot find this executable to start the daemon: {e}"
            ))
        })?;
        let max_record = (args.record_bytes + 1024).clamp(4 << 20, MAX_MESSAGE_BYTES as u64);
        let mut cmd = std::process::Command::new(&exe);
        cmd.arg("run")
            .arg("--dir")
            .arg(&area.dir)
            .arg("--socket")
            .arg(&area.socket)
            .arg("--upstream")
            .arg(sink.url())
            .arg("--sink")
            .arg(sink.run_sink())
            .arg("--in-flight")
            .arg(args.in_flight.to_string())
            .arg("--sync")
            .arg(args.sync.to_string())
            .arg("--linger")
            .arg("24h")
            .arg("--max-record-bytes")
            .arg(max_record.to_string())
            .arg("--log-level")
            .arg("warn");
        if args.front_door {
            cmd.arg("--accept-grpc")
                .arg(super::wire::FRONT_DOOR_SERVICE);
        }
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("ECHOPOST_") {
                cmd.env_remove(k);
            }
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = cmd
            .spawn()
            .map_err(|e| CommandError::fatal(format!("cannot start {} run: {e}", exe.display())))?;
        let stderr = Arc::new(Mutex::new(VecDeque::new()));
        if let Some(mut pipe) = child.stderr.take() {
            let tail = Arc::clone(&stderr);
            let _ = std::thread::Builder::new()
                .name("echopost-bench-stderr".into())
                .spawn(move || {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = pipe.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        if let Ok(mut t) = tail.lock() {
                            t.extend(&buf[..n]);
                            let excess = t.len().saturating_sub(STDERR_TAIL);
                            t.drain(..excess);
                        }
                    }
                });
        }
        let mut d = SpawnedDaemon {
            child,
            area,
            stderr,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = d.child.try_wait() {
                // Give the stderr thread a moment to collect the last words.
                tokio::time::sleep(Duration::from_millis(50)).await;
                return Err(CommandError::fatal(format!(
                    "the daemon exited with {status} while starting:\n{}",
                    d.stderr_tail()
                )));
            }
            if let Ok(Some(c)) =
                crate::commands::connect_live(&d.area.socket, Duration::from_secs(2)).await
                && c.is_serving().await
            {
                return Ok(d);
            }
            if Instant::now() >= deadline {
                let tail = d.stderr_tail();
                d.kill();
                return Err(CommandError::fatal(format!(
                    "the daemon did not answer on {} within {}:\n{tail}",
                    d.area.socket.display(),
                    fmt_duration(START_TIMEOUT)
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn stderr_tail(&self) -> String {
        self.stderr
            .lock()
            .map(|t| String::from_utf8_lossy(&t.iter().copied().collect::<Vec<u8>>()).into_owned())
            .unwrap_or_default()
    }

    /// SIGTERM, then waits (SIGKILL after [`STOP_TIMEOUT`]).
    pub async fn stop(&mut self) -> ExitStatus {
        if let Ok(Some(s)) = self.child.try_wait() {
            return s;
        }
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: kill(2) on our own child's pid, which has not been reaped yet.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match self.child.try_wait() {
                Ok(Some(s)) => return s,
                Ok(None) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                _ => {
                    eprintln!(
                        "echopost bench: the daemon did not stop within {}; killing it",
                        fmt_duration(STOP_TIMEOUT)
                    );
                    return self.kill();
                }
            }
        }
    }

    fn kill(&mut self) -> ExitStatus {
        let _ = self.child.kill();
        match self.child.wait() {
            Ok(s) => s,
            Err(_) => std::os::unix::process::ExitStatusExt::from_raw(9),
        }
    }

    /// Removes the temporary directory (a `--dir` is kept).
    pub fn cleanup(mut self) {
        if let Some(t) = self.area.temp.take()
            && let Err(e) = t.close()
        {
            eprintln!("echopost bench: cannot remove the temporary directory: {e}");
        }
    }
}

impl Drop for SpawnedDaemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill();
        }
    }
}
