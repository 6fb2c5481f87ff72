//! Make sure a daemon runs for a directory, then append to it.
//!
//! # Why exactly one daemon
//! Any number of application processes may call [`Fallback::append`] at the same moment
//! when the main server goes down. Each one that finds no daemon answering and the
//! directory's lock free starts `echopost run --dir DIR`; the daemon takes an exclusive
//! lock on the directory *before* it opens its socket, so one wins and the others exit
//! with code 3 ("directory locked"). The helper treats exit code 3 as "someone else's
//! daemon is starting" and keeps waiting for the socket to answer. Nobody ever talks to a
//! daemon that does not own the data.
//!
//! # Why it does not start one while the lock is held
//! A daemon that holds the lock but does not answer is starting, leaving, stopped
//! (`SIGSTOP`) or stuck. Another `echopost run` could not take the directory from it, so
//! the helper starts nothing and waits for the socket to answer; if the start timeout
//! passes first it gives up with [`ClientError::NotAnswering`].
//!
//! # Deadlines
//! [`DaemonSettings::start_timeout`] bounds everything [`Fallback::append`] does to find
//! or start a daemon: each health check is bounded by [`HEALTH_TIMEOUT`] (and by what is
//! left of the start timeout), so a daemon that accepts connections but never answers
//! cannot hold the helper past it. The append itself is one call bounded by
//! [`DaemonSettings::call_timeout`]; after a [`ClientError::Timeout`] there it is not
//! retried (the batch may have been stored). So an append returns within
//! `start_timeout + call_timeout`, or within `start_timeout` when no daemon answers at all.
//!
//! # Permission errors
//! A socket owned by another user ([`ClientError::PermissionDenied`]) is reported at
//! once: starting a daemon of our own would not make that one answer us, and would fight
//! it for the directory.
//!
//! # Why it may start the daemon again
//! A daemon exits by itself once its backlog is delivered. The next append then finds no
//! daemon (or one that answers `UNAVAILABLE` while it shuts down, which means the append
//! was not stored) and starts a new one. Retrying in these cases cannot lose or duplicate
//! data: nothing was acknowledged.
//!
//! # Why it never starts daemons in a loop
//! A daemon that starts but cannot store anything (a full disk: it answers the append
//! with `RESOURCE_EXHAUSTED` and exits 5) must not be replaced again and again. Each
//! start that is not followed by a successful append doubles the least time before the
//! helper's next start ([`RESPAWN_PACE`], then 400 ms, 800 ms, … up to
//! [`MAX_RESPAWN_BACKOFF`]); a successful append resets it. When the next start would
//! come after the start timeout, or after two starts that stored nothing, the helper
//! returns the daemon's error (or [`ClientError::StartBackoff`]) to the application at
//! once instead of waiting (issue 13).
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

use crate::client::{Appended, Client, DEFAULT_TIMEOUT, unix_channel};
use crate::error::ClientError;
use echopost_proto::v1::Record;

/// Exit code of `echopost run` when another instance holds the directory.
const EXIT_LOCKED: i32 = 3;
/// How often the helper looks for a starting daemon.
const POLL: Duration = Duration::from_millis(25);
/// Least time between two starts by one helper; doubled by each start that stores
/// nothing, up to [`MAX_RESPAWN_BACKOFF`].
pub const RESPAWN_PACE: Duration = Duration::from_millis(200);
/// The longest back-off between two starts by one helper.
pub const MAX_RESPAWN_BACKOFF: Duration = Duration::from_secs(30);
/// Name of the daemon's lock file in its directory (`echopost_log::LOCK_FILE`).
const LOCK_FILE: &str = "LOCK";
/// The longest one health check (connect included) may take while the helper looks for
/// a daemon. A live daemon answers in milliseconds; one that misses this is asked again
/// (never replaced: its lock keeps the helper from starting another).
const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
/// The shortest health check, even when the start timeout is nearly used up.
const MIN_HEALTH_TIMEOUT: Duration = Duration::from_millis(50);

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
    /// How long [`Fallback::append`] (and [`Fallback::ensure_running`]) may spend finding
    /// or starting a daemon that answers, in all: health checks, starts, waiting for a
    /// starting, stopped or stuck daemon. Default 10 s.
    pub start_timeout: Duration,
    /// The deadline of each call on the daemon (the append itself), as
    /// [`crate::ClientBuilder::timeout`]. Default [`DEFAULT_TIMEOUT`] (10 s).
    pub call_timeout: Duration,
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
            call_timeout: DEFAULT_TIMEOUT,
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
    pacer: Mutex<StartPacer>,
}

/// When the helper may start a daemon again (see the module documentation).
#[derive(Debug, Default)]
struct StartPacer {
    last: Option<Instant>,
    /// Starts since the last append that succeeded.
    unproductive: u32,
}

impl StartPacer {
    /// The least time after the last start before the next one.
    fn wait(&self) -> Duration {
        let doublings = self.unproductive.saturating_sub(1).min(16);
        RESPAWN_PACE
            .saturating_mul(1 << doublings)
            .min(MAX_RESPAWN_BACKOFF)
    }

    fn next_allowed(&self) -> Option<Instant> {
        self.last.map(|t| t + self.wait())
    }
}

/// A daemon this helper started, and where its exit status will appear.
struct Started {
    exited: Arc<Mutex<Option<ExitStatus>>>,
}

impl Started {
    fn status(&self) -> Option<ExitStatus> {
        self.exited.lock().ok().and_then(|g| *g)
    }
}

impl Fallback {
    /// A helper for the daemon described by `settings`.
    pub fn new(settings: DaemonSettings) -> Self {
        Fallback {
            settings,
            client: tokio::sync::Mutex::new(None),
            pacer: Mutex::new(StartPacer::default()),
        }
    }

    /// The settings this helper starts daemons with.
    pub fn settings(&self) -> &DaemonSettings {
        &self.settings
    }

    /// A client connected to a healthy daemon for the directory, starting one if none
    /// answers and none holds the directory. Returns within the start timeout.
    pub async fn ensure_running(&self) -> Result<Client, ClientError> {
        self.ensure_running_until(Instant::now() + self.settings.start_timeout)
            .await
    }

    async fn ensure_running_until(&self, deadline: Instant) -> Result<Client, ClientError> {
        let mut slot = self.client.lock().await;
        if let Some(c) = slot.as_ref() {
            match c.health_within(health_budget(deadline)).await {
                Ok(true) => return Ok(c.clone()),
                Err(e) if e.is_permission_denied() => return Err(e),
                _ => {}
            }
        }
        *slot = None;
        let socket = self.settings.socket_path();
        let c = self.find_or_start(&socket, deadline).await?;
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Stores `records` as one atomic batch through the directory's daemon, starting it if
    /// needed. Retries when the daemon is gone or shutting down (nothing was stored then)
    /// for up to the start timeout: a daemon in the middle of its linger exit refuses
    /// appends while still answering health checks for a moment, and a busy machine can
    /// stretch that moment.
    ///
    /// Bounded (see the module documentation): a stopped or stuck daemon makes it fail
    /// with [`ClientError::NotAnswering`] or [`ClientError::Timeout`], a socket of
    /// another user with [`ClientError::PermissionDenied`]; neither starts a daemon.
    pub async fn append(&self, records: Vec<Record>) -> Result<Appended, ClientError> {
        let deadline = Instant::now() + self.settings.start_timeout;
        loop {
            let client = self.ensure_running_until(deadline).await?;
            match client.append(records.clone()).await {
                Ok(a) => {
                    self.with_pacer(|p| p.unproductive = 0);
                    return Ok(a);
                }
                Err(e) if e.daemon_unavailable() => {
                    *self.client.lock().await = None;
                    let next_start = self.with_pacer(|p| p.next_allowed());
                    if Instant::now() >= deadline || next_start.is_some_and(|t| t >= deadline) {
                        // Hand the daemon's error to the application rather than wait
                        // for (or make) the next start (issue 13).
                        return Err(e);
                    }
                    tokio::time::sleep(POLL).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn with_pacer<T>(&self, f: impl FnOnce(&mut StartPacer) -> T) -> T {
        let mut g = self.pacer.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }

    fn spawn(&self) -> Result<Started, ClientError> {
        self.with_pacer(|p| {
            p.last = Some(Instant::now());
            p.unproductive = p.unproductive.saturating_add(1);
        });
        let s = &self.settings;
        let child = s.command().spawn().map_err(|e| ClientError::Spawn {
            binary: s.binary.clone(),
            source: e,
        })?;
        Ok(Started {
            exited: reap_in_background(child),
        })
    }

    /// Waits for a daemon to answer on `socket` until `deadline`, starting one whenever
    /// none of ours is starting and nobody holds the directory's lock.
    async fn find_or_start(&self, socket: &Path, deadline: Instant) -> Result<Client, ClientError> {
        let s = &self.settings;
        let mut ours: Option<Started> = None;
        loop {
            if let Some(c) = self.try_healthy(socket, deadline).await? {
                return Ok(c);
            }
            if let Some(st) = ours.as_ref().and_then(Started::status) {
                if st.code() != Some(EXIT_LOCKED) {
                    // Anything but exit 3 is a real failure to start.
                    return Err(ClientError::DaemonExited {
                        status: st.to_string(),
                        dir: s.dir.clone(),
                    });
                }
                // Exit 3: another process's daemon holds the directory.
                ours = None;
            }
            // While ours is starting, the lock is left alone: probing it could make our
            // own daemon's lock attempt fail. Otherwise a held lock means a daemon is
            // there (starting, leaving, stopped or stuck): wait for it, never start
            // another. A free lock with nothing answering means nobody is starting one
            // (a daemon that exited 3 was racing one on its way out): start one.
            let lock_held = ours.is_none() && lock_is_held(&s.dir);
            if ours.is_none() && !lock_held {
                let (next, starts) = self.with_pacer(|p| (p.next_allowed(), p.unproductive));
                match next {
                    // After two starts that stored nothing, or when the next start would
                    // come too late, the application gets the error now.
                    Some(t) if t >= deadline || (t > Instant::now() && starts >= 2) => {
                        return Err(ClientError::StartBackoff {
                            dir: s.dir.clone(),
                            starts,
                            wait_ms: t.saturating_duration_since(Instant::now()).as_millis(),
                        });
                    }
                    Some(t) if t > Instant::now() => {}
                    _ if Instant::now() < deadline => ours = Some(self.spawn()?),
                    _ => {}
                }
            }
            let now = Instant::now();
            if now >= deadline {
                let timeout_ms = s.start_timeout.as_millis();
                return Err(if lock_held {
                    ClientError::NotAnswering {
                        socket: socket.to_path_buf(),
                        dir: s.dir.clone(),
                        timeout_ms,
                    }
                } else {
                    ClientError::StartTimeout {
                        socket: socket.to_path_buf(),
                        dir: s.dir.clone(),
                        timeout_ms,
                    }
                });
            }
            tokio::time::sleep(POLL.min(deadline - now)).await;
        }
    }

    /// Connects to `socket` and checks health, within [`HEALTH_TIMEOUT`] and `deadline`.
    /// `Ok(None)` unless the daemon is serving; a permission error is returned as such.
    async fn try_healthy(
        &self,
        socket: &Path,
        deadline: Instant,
    ) -> Result<Option<Client>, ClientError> {
        let budget = health_budget(deadline);
        let started = Instant::now();
        let channel = match unix_channel(socket, budget, self.settings.call_timeout).await {
            Ok(ch) => ch,
            Err(e) if e.is_permission_denied() => return Err(e),
            Err(_) => return Ok(None),
        };
        let c = Client::from_channel(socket.to_path_buf(), channel, self.settings.call_timeout);
        let left = budget
            .saturating_sub(started.elapsed())
            .max(MIN_HEALTH_TIMEOUT);
        match c.health_within(left).await {
            Ok(true) => Ok(Some(c)),
            Err(e) if e.is_permission_denied() => Err(e),
            _ => Ok(None),
        }
    }
}

/// How long the next health check may take: [`HEALTH_TIMEOUT`], or what is left until
/// `deadline` if less (but at least [`MIN_HEALTH_TIMEOUT`]).
fn health_budget(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .min(HEALTH_TIMEOUT)
        .max(MIN_HEALTH_TIMEOUT)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory whose daemon is stopped: its lock is held and its socket accepts
    /// connections that nobody answers.
    #[tokio::test]
    async fn a_held_lock_and_a_silent_socket_start_nothing_and_give_up_in_time() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let lock = std::fs::File::create(dir.join(LOCK_FILE)).unwrap();
        lock.lock().unwrap();
        let _listener = std::os::unix::net::UnixListener::bind(dir.join("echopost.sock")).unwrap();
        let mut s = DaemonSettings::new(&dir);
        // Starting anything would fail loudly with `Spawn`.
        s.binary = dir.join("no-such-echopost");
        s.start_timeout = Duration::from_millis(1500);
        s.call_timeout = Duration::from_millis(500);
        let f = Fallback::new(s);

        let t = Instant::now();
        let e = f.append(vec![Record::default()]).await.unwrap_err();
        let took = t.elapsed();
        assert!(matches!(e, ClientError::NotAnswering { .. }), "{e:?}");
        assert!(
            took >= Duration::from_millis(1400) && took < Duration::from_millis(3000),
            "{took:?}"
        );
        let msg = e.to_string();
        assert!(msg.contains("No second daemon was started"), "{msg}");
        let t = Instant::now();
        assert!(matches!(
            f.ensure_running().await.unwrap_err(),
            ClientError::NotAnswering { .. }
        ));
        assert!(t.elapsed() < Duration::from_millis(3000));

        // Once the lock is free and still nothing answers, the helper does start one.
        lock.unlock().unwrap();
        let e = f.append(vec![Record::default()]).await.unwrap_err();
        assert!(matches!(e, ClientError::Spawn { .. }), "{e:?}");
    }
}
