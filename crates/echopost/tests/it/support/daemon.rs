//! Shared helpers for the daemon's integration tests: start the real `echopost` binary on
//! a temporary directory, talk to it over its real UNIX socket, stop it, and collect its
//! exit status with timeouts so that no test can hang.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use echopost_proto::v1::echo_post_client::EchoPostClient;
use echopost_proto::v1::{
    AppendRequest, AppendResponse, ReadRequest, Record, StatusRequest, StatusResponse, StoredRecord,
};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tower::service_fn;

/// Every environment variable the daemon reads; cleared so the test environment cannot
/// change a test's outcome.
pub const ENV_VARS: &[&str] = &[
    "ECHOPOST_DIR",
    "ECHOPOST_SOCKET",
    "ECHOPOST_UPSTREAM",
    "ECHOPOST_SYNC",
    "ECHOPOST_MAX_DISK",
    "ECHOPOST_LINGER",
    "ECHOPOST_MAX_RECORD_BYTES",
    "ECHOPOST_LOG_LEVEL",
    "ECHOPOST_ALLOW_UID",
    "ECHOPOST_SINK",
    "ECHOPOST_HEALTH_SERVICE",
    "ECHOPOST_HEALTH_URL",
    "ECHOPOST_HEALTHY_AFTER",
    "ECHOPOST_BATCH_RECORDS",
    "ECHOPOST_BATCH_BYTES",
    "ECHOPOST_UPSTREAM_CA",
    "ECHOPOST_UPSTREAM_HEADER",
    "ECHOPOST_REQUEST_TIMEOUT",
    "ECHOPOST_TIMEOUT",
    "RUST_LOG",
];

/// How long a daemon gets to come up or to exit before the test fails.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(15);
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(15);

/// A temporary area: the daemon's directory is `root/dir`; stderr captures live beside it.
pub struct Area {
    pub root: tempfile::TempDir,
}

impl Area {
    pub fn new() -> Area {
        Area {
            root: tempfile::Builder::new()
                .prefix("ep")
                .tempdir()
                .expect("tempdir"),
        }
    }

    /// The daemon's state directory.
    pub fn dir(&self) -> PathBuf {
        self.root.path().join("dir")
    }

    /// The default socket path.
    pub fn socket(&self) -> PathBuf {
        self.dir().join("echopost.sock")
    }
}

/// A running (or exited) daemon process.
pub struct Daemon {
    child: Option<Child>,
    pub dir: PathBuf,
    pub socket: PathBuf,
    stderr_path: PathBuf,
    status: Option<ExitStatus>,
}

fn has_flag(args: &[&str], flag: &str) -> bool {
    args.iter()
        .any(|a| *a == flag || a.starts_with(&format!("{flag}=")))
}

/// The `echopost run` command for `dir` with `args`. Unless `args` says otherwise, the
/// linger time is an hour (so a test is never cut short by the linger exit) and the log
/// level is `info`.
pub fn run_command(dir: &Path, args: &[&str], stderr: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_echopost"));
    cmd.arg("run").arg("--dir").arg(dir);
    if !has_flag(args, "--linger") {
        cmd.args(["--linger", "1h"]);
    }
    if !has_flag(args, "--log-level") {
        cmd.args(["--log-level", "info"]);
    }
    cmd.args(args);
    for v in ENV_VARS {
        cmd.env_remove(v);
    }
    let err = std::fs::File::create(stderr).expect("stderr capture file");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(err));
    cmd
}

impl Daemon {
    /// Starts the daemon on `area`'s directory and waits until it answers a health check.
    pub async fn start(area: &Area, args: &[&str]) -> Daemon {
        let mut d = Daemon::spawn(area, args);
        d.wait_ready().await;
        d
    }

    /// Starts the daemon without waiting for it.
    pub fn spawn(area: &Area, args: &[&str]) -> Daemon {
        Daemon::spawn_as(area, args, None)
    }

    /// Starts the daemon without waiting for it, as user `uid` (and group `uid`) if given
    /// (which needs root).
    pub fn spawn_as(area: &Area, args: &[&str], uid: Option<u32>) -> Daemon {
        let dir = area.dir();
        let socket = args
            .iter()
            .position(|a| *a == "--socket")
            .and_then(|i| args.get(i + 1))
            .map_or_else(|| area.socket(), PathBuf::from);
        let n = std::fs::read_dir(area.root.path())
            .map(|d| d.count())
            .unwrap_or(0);
        let stderr_path = area.root.path().join(format!("stderr-{n}.txt"));
        let mut cmd = run_command(&dir, args, &stderr_path);
        if let Some(uid) = uid {
            use std::os::unix::process::CommandExt;
            cmd.uid(uid).gid(uid);
        }
        let child = cmd.spawn().expect("spawn echopost");
        Daemon {
            child: Some(child),
            dir,
            socket,
            stderr_path,
            status: None,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    /// Waits until the socket answers `grpc.health.v1.Health/Check` with SERVING. Panics
    /// with the daemon's stderr if it exits or does not come up in time.
    pub async fn wait_ready(&mut self) {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(status) = self.try_status() {
                panic!(
                    "echopost exited during startup with {status}; stderr:\n{}",
                    self.stderr()
                );
            }
            if let Ok(ch) = connect(&self.socket).await {
                let mut h = HealthClient::new(ch);
                if let Ok(r) = h
                    .check(HealthCheckRequest {
                        service: String::new(),
                    })
                    .await
                    && r.into_inner().status == ServingStatus::Serving as i32
                {
                    return;
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "echopost did not become ready in {STARTUP_TIMEOUT:?}; stderr:\n{}",
                    self.stderr()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// A client of the EchoPost service over the socket.
    pub async fn client(&self) -> EchoPostClient<Channel> {
        EchoPostClient::new(connect(&self.socket).await.expect("connect to the socket"))
    }

    /// A health client over the socket.
    pub async fn health(&self) -> HealthClient<Channel> {
        HealthClient::new(connect(&self.socket).await.expect("connect to the socket"))
    }

    /// Sends a signal to the daemon.
    pub fn signal(&self, sig: i32) {
        let pid = self.pid();
        assert!(pid > 0);
        // SAFETY: plain kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0, "kill({pid}, {sig}) failed");
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        self.signal(libc::SIGTERM);
    }

    /// The exit status, if the process has exited.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none()
            && let Some(c) = self.child.as_mut()
            && let Ok(Some(s)) = c.try_wait()
        {
            self.status = Some(s);
        }
        self.status
    }

    /// Waits for the process to exit; panics (after killing it) on timeout.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_status() {
                return s;
            }
            if Instant::now() > deadline {
                self.kill();
                panic!(
                    "echopost did not exit within {timeout:?}; stderr:\n{}",
                    self.stderr()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// SIGTERM, then waits for the exit and asserts code 0.
    pub async fn stop(&mut self) {
        self.terminate();
        let s = self.wait_exit(EXIT_TIMEOUT).await;
        assert_eq!(
            s.code(),
            Some(0),
            "SIGTERM should exit 0, got {s}; stderr:\n{}",
            self.stderr()
        );
    }

    /// Kills the process (SIGKILL), e.g. to simulate a crash.
    pub fn kill(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            if let Ok(s) = c.wait() {
                self.status.get_or_insert(s);
            }
        }
    }

    /// Everything the daemon wrote to stderr so far.
    pub fn stderr(&self) -> String {
        read_lossy(&self.stderr_path)
    }

    /// Contents of the session log files in `DIR/logs`, concatenated in name order.
    pub fn session_logs(&self) -> String {
        session_logs(&self.dir)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.try_status().is_none() {
            self.kill();
        }
    }
}

pub fn read_lossy(p: &Path) -> String {
    let mut buf = Vec::new();
    if let Ok(mut f) = std::fs::File::open(p) {
        let _ = f.read_to_end(&mut buf);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// The session logs of `dir`, concatenated in name (start time) order.
pub fn session_logs(dir: &Path) -> String {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("logs"))
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    files.iter().map(|p| read_lossy(p)).collect()
}

/// Runs `echopost run` to completion (for runs expected to fail fast); returns the exit
/// status and stderr.
pub async fn run_to_exit(area: &Area, args: &[&str]) -> (ExitStatus, String) {
    let mut d = Daemon::spawn(area, args);
    let s = d.wait_exit(EXIT_TIMEOUT).await;
    let err = d.stderr();
    (s, err)
}

/// A channel to the daemon over the UNIX socket at `path`.
pub async fn connect(path: &Path) -> Result<Channel, tonic::transport::Error> {
    let path = path.to_path_buf();
    Endpoint::try_from("http://[::]:50051")?
        .connect_with_connector(service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
}

/// A record with `payload`, other fields set to recognisable values.
pub fn record(payload: impl Into<Vec<u8>>) -> Record {
    Record {
        id: String::new(),
        stream: "test".to_owned(),
        payload: payload.into(),
        headers: Default::default(),
        route: String::new(),
        timestamp_unix_nanos: 0,
    }
}

/// Appends one batch of the given payloads.
pub async fn append(
    c: &mut EchoPostClient<Channel>,
    payloads: &[&[u8]],
) -> Result<AppendResponse, tonic::Status> {
    c.append(AppendRequest {
        records: payloads.iter().map(|p| record(p.to_vec())).collect(),
        ..AppendRequest::default()
    })
    .await
    .map(|r| r.into_inner())
}

/// The daemon's `Status`.
pub async fn status(c: &mut EchoPostClient<Channel>) -> StatusResponse {
    c.status(StatusRequest {})
        .await
        .expect("Status")
        .into_inner()
}

/// All stored records from `from` (at most `limit`, 0 = server default), and the number
/// of `ReadResponse` messages they came in.
pub async fn read_all(
    c: &mut EchoPostClient<Channel>,
    from: u64,
    limit: u32,
) -> (Vec<StoredRecord>, usize) {
    let mut stream = c
        .read(ReadRequest {
            from_sequence: from,
            limit,
            ..ReadRequest::default()
        })
        .await
        .expect("Read")
        .into_inner();
    let mut out = Vec::new();
    let mut messages = 0;
    while let Some(msg) = stream.message().await.expect("Read stream") {
        messages += 1;
        out.extend(msg.records);
    }
    (out, messages)
}

/// Asserts that nothing is stored: `Status` shows no records and `Read` returns none.
pub async fn assert_nothing_stored(c: &mut EchoPostClient<Channel>) {
    let st = status(c).await;
    assert_eq!(st.next_sequence, 1, "a record was stored: {st:?}");
    assert_eq!(st.backlog_records, 0, "{st:?}");
    let (records, _) = read_all(c, 0, 0).await;
    assert!(
        records.is_empty(),
        "Read returned {} records",
        records.len()
    );
}

/// The exit code of `s`, with a readable failure otherwise.
pub fn code(s: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match s.code() {
        Some(c) => c,
        None => panic!("killed by signal {:?}", s.signal()),
    }
}

// ---------------------------------------------------------------------------------------
// Operator commands (`echopost status`, `inspect`, `verify`, `send`, `bench`, ...)

/// What a finished `echopost` command printed, and its exit code.
#[derive(Debug)]
pub struct CliOutput {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    /// Panics with everything the command printed unless it exited with `code`.
    pub fn expect_code(self, code: i32) -> CliOutput {
        assert_eq!(
            self.code, code,
            "expected exit code {code}; stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    /// stdout parsed as one JSON document.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }

    /// stdout parsed as JSON lines.
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}"))
            })
            .collect()
    }
}

/// How long one operator command may run in a test before it is killed.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(60);

/// `echopost ARGS...` with the `ECHOPOST_*` environment cleared.
pub fn cli_command(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_echopost"));
    cmd.args(args);
    for v in ENV_VARS {
        cmd.env_remove(v);
    }
    cmd.env_remove("ECHOPOST_BIN");
    cmd
}

/// Runs a prepared command to completion, feeding it `stdin`, with [`CLI_TIMEOUT`].
pub fn run_command_output(mut cmd: Command, stdin: Option<&[u8]>) -> CliOutput {
    use std::io::Write as _;
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn echopost");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin pipe");
        let input = input.to_vec();
        // A thread, so a command that stops reading cannot block the test.
        std::thread::spawn(move || {
            let _ = pipe.write_all(&input);
        });
    }
    let mut out_pipe = child.stdout.take().expect("stdout pipe");
    let mut err_pipe = child.stderr.take().expect("stderr pipe");
    let out = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out_pipe.read_to_end(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err_pipe.read_to_end(&mut s);
        s
    });
    let deadline = Instant::now() + CLI_TIMEOUT;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("echopost did not finish within {CLI_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    CliOutput {
        code: code(status),
        stdout: String::from_utf8_lossy(&out.join().unwrap_or_default()).into_owned(),
        stderr: String::from_utf8_lossy(&err.join().unwrap_or_default()).into_owned(),
    }
}

/// Runs `echopost ARGS...` (blocking) and collects its output.
pub fn echopost(args: &[&str], stdin: Option<&[u8]>) -> CliOutput {
    run_command_output(cli_command(args), stdin)
}

/// [`echopost`] on the blocking pool, for tests whose runtime must keep serving (an
/// in-process upstream, for instance).
pub async fn echopost_async(args: &[&str], stdin: Option<&[u8]>) -> CliOutput {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let stdin = stdin.map(<[u8]>::to_vec);
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        echopost(&refs, stdin.as_deref())
    })
    .await
    .expect("the command's task")
}

/// Session logs of `dir` whose daemon got the directory lock (it logged "log recovered");
/// daemons that lost a start race exit with code 3 before that line.
pub fn daemons_that_ran(dir: &Path) -> usize {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("logs"))
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    files
        .iter()
        .filter(|p| read_lossy(p).contains("log recovered"))
        .count()
}

/// Waits until `path` no longer exists (a daemon removes its socket when it exits).
pub async fn wait_gone(path: &Path, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} still exists after {timeout:?}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A daemon this test did not start as its child (e.g. started detached by the fallback
/// helper): stopped with SIGTERM (SIGKILL if it must) when dropped.
pub struct ForeignDaemon {
    pub pid: i32,
}

impl ForeignDaemon {
    /// True while the process runs (a zombie waiting for a parent that does not reap it
    /// counts as gone).
    pub fn alive(&self) -> bool {
        // SAFETY: kill with signal 0 only checks that the pid exists.
        let exists = unsafe { libc::kill(self.pid, 0) == 0 };
        let zombie = std::fs::read_to_string(format!("/proc/{}/stat", self.pid))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().next().map(|st| st == "Z"))
            })
            .unwrap_or(false);
        exists && !zombie
    }

    /// SIGTERM, then waits up to `timeout` for the process to be gone.
    pub async fn stop(&self, timeout: Duration) {
        // SAFETY: plain kill(2) on a pid this test obtained from the daemon itself.
        unsafe {
            libc::kill(self.pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + timeout;
        while self.alive() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for ForeignDaemon {
    fn drop(&mut self) {
        if self.alive() {
            // SAFETY: as above.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
            }
        }
    }
}
