//! Helpers around the replayer, run in the test process: open and fill a log, start and
//! stop `echopost::replay::run` on it, wait for conditions with a deadline, and the
//! ordering checks the replay suites share. The main servers they replay to are in
//! [`super::upstream`].

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use echopost::config::ReplaySettings;
use echopost::replay::{self, Progress, ReplayError};
use echopost_log::{Log, LogOptions};
use echopost_proto::v1::Record;
use prost::Message;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Upper bound for any single wait in a test.
pub const WAIT: Duration = Duration::from_secs(20);

/// Logs to the test output when `RUST_LOG` is set (e.g. `RUST_LOG=echopost=debug`).
pub fn init_tracing() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

// ---------------------------------------------------------------------------------------
// The log and the replayer
// ---------------------------------------------------------------------------------------

/// Opens the main log in `dir`, retrying while a previous instance (being torn down
/// after a simulated crash) still holds the lock.
pub fn open_log(dir: &Path) -> Arc<Log> {
    open_log_with(dir, LogOptions::default())
}

pub fn open_log_with(dir: &Path, opts: LogOptions) -> Arc<Log> {
    let deadline = Instant::now() + WAIT;
    loop {
        match Log::open(dir, opts.clone()) {
            Ok(l) => return Arc::new(l),
            Err(echopost_log::Error::Locked { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("open log {}: {e}", dir.display()),
        }
    }
}

/// The test record number `i` (1-based, equal to its sequence in a fresh log).
pub fn record(i: u64) -> Record {
    Record {
        id: format!("rec-{i}"),
        stream: "orders".into(),
        payload: format!("payload-{i:08}").into_bytes(),
        headers: Default::default(),
        route: String::new(),
        timestamp_unix_nanos: 1_700_000_000_000_000_000 + i as i64,
    }
}

/// Appends records `make(from..=to)`, 500 per atomic batch.
pub fn fill(log: &Log, from: u64, to: u64, make: impl Fn(u64) -> Record) {
    let mut i = from;
    while i <= to {
        let end = (i + 499).min(to);
        let batch: Vec<Vec<u8>> = (i..=end).map(|j| make(j).encode_to_vec()).collect();
        log.append(&batch).unwrap();
        i = end + 1;
    }
}

/// A replayer configuration with test-friendly defaults.
pub fn config(upstream: &str, dir: &Path) -> ReplaySettings {
    ReplaySettings {
        batch_records: 1000,
        request_timeout: Duration::from_secs(3),
        ..ReplaySettings::new(upstream, dir)
    }
}

/// A running replayer.
pub struct Replay {
    pub progress: Arc<Progress>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<Result<(), ReplayError>>,
}

/// Validates `settings` (a test's settings are valid) and starts a replayer with them.
pub fn spawn_replay(log: &Arc<Log>, settings: ReplaySettings) -> Replay {
    let cfg = settings
        .validate()
        .expect("test replay settings are valid")
        .with_source_id("test-source");
    let progress = Arc::new(Progress::default());
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(replay::run(
        Arc::clone(log),
        cfg,
        Arc::clone(&progress),
        Arc::new(echopost::disk_quota::DiskQuota::unlimited()),
        rx,
    ));
    Replay {
        progress,
        shutdown: tx,
        task,
    }
}

impl Replay {
    /// Asks for shutdown and returns what `run` returned.
    pub async fn stop(self) -> Result<(), ReplayError> {
        let _ = self.shutdown.send(true);
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("replayer did not stop within the deadline")
            .expect("replayer panicked")
    }

    /// Waits for `run` to return on its own (an error).
    pub async fn finished(self) -> Result<(), ReplayError> {
        let r = tokio::time::timeout(WAIT, self.task)
            .await
            .expect("replayer did not finish within the deadline")
            .expect("replayer panicked");
        drop(self.shutdown);
        r
    }

    /// Simulates a crash: the task is dropped wherever it is (no final ack).
    pub fn kill(self) {
        self.task.abort();
    }

    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

/// Replays with `cfg`, whose upstream only a private CA vouches for, and checks that the
/// upstream is not trusted: the replayer either refuses to start (a machine with no system
/// roots at all) or keeps probing. Returns the probe's last error in the second case.
pub async fn not_trusted_without_the_ca(
    log: &Arc<Log>,
    cfg: ReplaySettings,
    wait: Duration,
) -> Option<String> {
    let untrusted = spawn_replay(log, cfg);
    tokio::time::sleep(wait).await;
    if untrusted.is_finished() {
        assert!(matches!(
            untrusted.finished().await,
            Err(ReplayError::Config(_))
        ));
        return None;
    }
    assert_eq!(
        untrusted.progress.state(),
        echopost::replay::UpstreamState::Probing
    );
    let e = untrusted.progress.last_error();
    untrusted.stop().await.unwrap();
    Some(e)
}

/// Polls `cond` every 10 ms until it holds; panics after [`WAIT`].
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until the log's backlog is empty.
pub async fn drained(log: &Log) {
    eventually("backlog drained", || log.stats().backlog_records == 0).await;
}

/// At-least-once and in order: every sequence in `seqs` (in arrival order) is at most one
/// more than the highest seen before it (re-deliveries may go back, nothing is skipped),
/// and together they cover exactly `1..=n` minus `missing`.
pub fn assert_in_order_none_skipped(seqs: &[u64], n: u64, missing: &[u64]) {
    let missing: HashSet<u64> = missing.iter().copied().collect();
    let mut max = 0u64;
    for (i, &s) in seqs.iter().enumerate() {
        let mut next = max + 1;
        while missing.contains(&next) {
            next += 1;
        }
        assert!(
            s <= next,
            "sequence {s} arrived (position {i}) before {next}: a record was skipped or reordered"
        );
        max = max.max(s);
    }
    let got: HashSet<u64> = seqs.iter().copied().collect();
    for s in 1..=n {
        if missing.contains(&s) {
            assert!(
                !got.contains(&s),
                "sequence {s} should not have been accepted"
            );
        } else {
            assert!(got.contains(&s), "sequence {s} never arrived");
        }
    }
    assert!(max <= n, "sequence {max} beyond {n}");
}

/// First-time deliveries, in order: `seqs` with re-deliveries removed.
pub fn first_deliveries(seqs: &[u64]) -> Vec<u64> {
    let mut seen = HashSet::new();
    seqs.iter().copied().filter(|s| seen.insert(*s)).collect()
}
