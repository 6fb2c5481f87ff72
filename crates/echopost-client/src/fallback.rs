//! Make sure a daemon runs for a directory, then append to it.
//!
//! # Why exactly one daemon
//! Any number of application processes may call [`Fallback::append`] at the same moment
//! when the main server goes down. Each one that finds no daemon answering starts
//! `echopost run --dir DIR`; the daemon takes an exclusive lock on the directory *before*
//! it opens its socket, so one wins and the others exit with code 3 ("directory locked").
//! The helper treats exit code 3 as "someone else's daemon is starting" and keeps waiting
//! for the socket to answer. Nobody ever talks to a daemon that does not own the data.
//!
//! # Why it may start the daemon again
//! A daemon exits by itself once its backlog is delivered. The next append then finds no
//! daemon (or one that answers `UNAVAILABLE` while it shuts down, which means the append
//! was not stored) and starts a new one. Retrying in these cases cannot lose or duplicate
//! data: nothing was acknowledged.
//!
//! # Why it may start the daemon more than once
//! The daemon holding the lock when ours exited with code 3 is not necessarily one that is
//! starting: it may be one on its way out (its linger time passed, it closed its socket
//! and is syncing before it releases the lock). Waiting for *that* one to answer would
//! wait forever. So while nothing answers, the helper looks at the lock itself: once no
//! process holds it, nobody is starting a daemon, and it starts another one. The lock
//! still guarantees that at most one of them runs.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::client::{Appended, Client, unix_channel};
use crate::error::ClientError;
use echopost_proto::v1::Record;

/// Exit code of `echopost run` when another instance holds the directory.
const EXIT_LOCKED: i32 = 3;
/// How often the helper looks for a starting daemon.
const POLL: Duration = Duration::from_millis(25);
/// How many times one append starts or reconnects to a daemon before giving up.
const ATTEMPTS: usize = 4;
/// Least time between two starts by one helper while it waits for a daemon to answer.
const RESPAWN_PACE: Duration = Duration::from_millis(200);
/// Name of the daemon's lock file in its directory (`echopost_log::LOCK_FILE`).
const LOCK_FILE: &str = "LOCK";

/// How to start the daemon when none answers. Mirrors `echopost run`'s flags.
#[derive(Debug, Clone)]
pub struct DaemonSettings {
    /// The `echopost` executable. Default: `$ECHOPOST_BIN`, else `echopost` from `PATH`.
    pub binary: PathBuf,
    /// The daemon's directory (`--dir`).
    pub dir: PathBuf,
    /// The socket (`--socket`). Default: `DIR/echopost.sock`.
    pub socket: Option<PathBuf>,
    /// The main server (`--upstream`); without one the daemon keeps records until a
    /// daemon with an upstream replays them.
    pub upstream: Option<String>,
    /// More `echopost run` arguments, e.g. `["--sync", "interval:50"]`.
    pub extra_args: Vec<OsString>,
    /// How long to wait for a started daemon to answer. Default 10 s.
    pub start_timeout: Duration,
}

impl DaemonSettings {
    /// Settings for `dir`, everything else default.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        DaemonSettings {
            binary: std::env::var_os("ECHOPOST_BIN")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("echopost")),
            dir: dir.into(),
            socket: None,
            upstream: None,
            extra_args: Vec::new(),
            start_timeout: Duration::from_secs(10),
        }
    }

    /// The socket the daemon listens on.
    pub fn socket_path(&self) -> PathBuf {
        self.socket
            .clone()
            .unwrap_or_else(|| self.dir.join("echopost.sock"))
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.binary);
        // The socket is always passed explicitly: the helper waits on `socket_path()`, so
        // an `ECHOPOST_SOCKET` in the application's environment must not move the daemon
        // elsewhere.
        cmd.arg("run")
            .arg("--dir")
            .arg(&self.dir)
            .arg("--socket")
            .arg(self.socket_path());
        if let Some(u) = &self.upstream {
            cmd.arg("--upstream").arg(u);
        }
        cmd.args(&self.extra_args);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: setsid() is async-signal-safe and touches no memory of the parent; it
        // detaches the daemon from the application's session and terminal, so the daemon
        // outlives the application and is not hit by its Ctrl-C.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd
    }
}

/// Appends through a daemon for one directory, starting it when needed.
/// Share one `Fallback` per directory in an application (it is `Send + Sync`).
#[derive(Debug)]
pub struct Fallback {
    settings: DaemonSettings,
    client: tokio::sync::Mutex<Option<Client>>,
}

impl Fallback {
    /// A helper for the daemon described by `settings`.
    pub fn new(settings: DaemonSettings) -> Self {
        Fallback {
            settings,
            client: tokio::sync::Mutex::new(None),
        }
    }

    /// The settings this helper starts daemons with.
    pub fn settings(&self) -> &DaemonSettings {
        &self.settings
    }

    /// A client connected to a healthy daemon for the directory, starting one if none
    /// answers.
    pub async fn ensure_running(&self) -> Result<Client, ClientError> {
        let mut slot = self.client.lock().await;
        if let Some(c) = slot.as_ref()
            && c.is_serving().await
        {
            return Ok(c.clone());
        }
        *slot = None;
        let socket = self.settings.socket_path();
        if let Some(c) = try_healthy(&socket).await {
            *slot = Some(c.clone());
            return Ok(c);
        }
        let c = self.start_and_wait(&socket).await?;
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Stores `records` as one atomic batch through the directory's daemon, starting it if
    /// needed. Retries when the daemon is gone or shutting down (nothing was stored then),
    /// a few times and for up to the start timeout: a daemon in the middle of its linger
    /// exit refuses appends while still answering health checks for a moment, and a busy
    /// machine can stretch that moment past a fixed number of quick retries.
    pub async fn append(&self, records: Vec<Record>) -> Result<Appended, ClientError> {
        let mut last = None;
        let deadline = Instant::now() + self.settings.start_timeout;
        let mut attempt = 0;
        while attempt < ATTEMPTS || Instant::now() < deadline {
            attempt += 1;
            let client = self.ensure_running().await?;
            match client.append(records.clone()).await {
                Ok(a) => return Ok(a),
                Err(e) if e.daemon_unavailable() => {
                    *self.client.lock().await = None;
                    last = Some(e);
                    tokio::time::sleep(POLL).await;
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(ClientError::StreamClosed { unacknowledged: 1 }))
    }

    fn spawn(&self) -> Result<Arc<Mutex<Option<ExitStatus>>>, ClientError> {
        let s = &self.settings;
        let child = s.command().spawn().map_err(|e| ClientError::Spawn {
            binary: s.binary.clone(),
            source: e,
        })?;
        Ok(reap_in_background(child))
    }

    async fn start_and_wait(&self, socket: &Path) -> Result<Client, ClientError> {
        let s = &self.settings;
        let mut exited = self.spawn()?;
        let mut spawned_at = Instant::now();
        let deadline = spawned_at + s.start_timeout;
        loop {
            if let Some(c) = try_healthy(socket).await {
                return Ok(c);
            }
            let status = exited.lock().ok().and_then(|g| *g);
            if let Some(st) = status {
                if st.code() != Some(EXIT_LOCKED) {
                    // Anything but exit 3 is a real failure to start.
                    return Err(ClientError::DaemonExited {
                        status: st.to_string(),
                        dir: s.dir.clone(),
                    });
                }
                // Exit 3: another process's daemon held the directory. Keep waiting for it
                // while it holds the lock; once the lock is free and still nothing
                // answers, that daemon was leaving, not starting (see the module
                // documentation): start one again.
                if !lock_is_held(&s.dir) && spawned_at.elapsed() >= RESPAWN_PACE {
                    exited = self.spawn()?;
                    spawned_at = Instant::now();
                }
            }
            if Instant::now() >= deadline {
                return Err(ClientError::StartTimeout {
                    socket: socket.to_path_buf(),
                    dir: s.dir.clone(),
                    timeout_ms: s.start_timeout.as_millis(),
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// Connects to `socket` and checks health; `None` unless the daemon is serving.
async fn try_healthy(socket: &Path) -> Option<Client> {
    let channel = unix_channel(socket, Duration::from_millis(500))
        .await
        .ok()?;
    let c = Client::from_channel(socket.to_path_buf(), channel);
    c.is_serving().await.then_some(c)
}

/// True if some process holds the daemon's lock on `dir` (or it cannot be told). Probes
/// with a non-blocking `flock`, the lock the engine takes, released at once.
fn lock_is_held(dir: &Path) -> bool {
    let file = match std::fs::File::open(dir.join(LOCK_FILE)) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return false,
        Err(_) => return true,
    };
    match file.try_lock() {
        Ok(()) => false,
        Err(std::fs::TryLockError::WouldBlock) => true,
        Err(std::fs::TryLockError::Error(_)) => true,
    }
}

/// Waits for the child on a thread so it never lingers as a zombie while the application
/// runs; reports its exit status.
fn reap_in_background(mut child: std::process::Child) -> Arc<Mutex<Option<ExitStatus>>> {
    let status = Arc::new(Mutex::new(None));
    let out = Arc::clone(&status);
    let spawned = std::thread::Builder::new()
        .name("echopost-reaper".into())
        .spawn(move || {
            if let Ok(st) = child.wait()
                && let Ok(mut g) = out.lock()
            {
                *g = Some(st);
            }
        });
    // If no thread can be started, the child is reaped by init once we exit; the status
    // simply stays unknown and the start timeout applies.
    drop(spawned);
    status
}
