//! Real-process torture: the `echopost` binary is killed with SIGKILL at random moments,
//! many times over, while several clients append over its UNIX socket and while it
//! replays to a real main server on loopback; then it is restarted on the same directory.
//! At the end one last run drains everything, and the main server's arrival log is held
//! against what the clients were told.
//!
//! # What is checked
//! Every `Deliver` the main server accepts is logged with the daemon *life* that sent it
//! (each life is started with `--upstream-header "x-torture-life: N"`, so the tag comes
//! from the daemon itself, not from the test's guess about timing), the acknowledgement
//! cursor is read from `DIR/cursor` before each life starts and after each kill, and:
//!
//! 1. every acknowledged record reached the main server at least once, under the sequence
//!    its append was acknowledged with, byte for byte, with `source` equal to
//!    `DIR/source-id`;
//! 2. first deliveries come in sequence order and cover `1..=max` with no gap (records that
//!    were in flight at a kill may or may not be stored, both are fine, but whatever was
//!    stored is delivered and nothing is skipped); the final cursor is `max`;
//! 3. re-deliveries are only of records not yet acknowledged: within one life deliveries
//!    are `cursor+1, cursor+2, ...` exactly (strictly increasing, contiguous, nothing sent
//!    twice), where `cursor` is what the previous life persisted; the cursor never moves
//!    back and never covers a record that was not delivered; and a record delivered but
//!    not covered by the cursor at a kill was delivered at most [`ACK_LAG_LIMIT`] before the
//!    kill. That last bound is what the replayer's ack cadence allows: it acknowledges
//!    every `ACK_INTERVAL` (50 ms) in the background (one cursor write: two fsyncs) and
//!    flushes before idling or backing off, so only records delivered during the last
//!    interval plus one ack's duration can be re-delivered. A count bound (N batches)
//!    would not be sound: the cadence is time-based, and a fast replay delivers many
//!    batches per interval. The largest re-delivery after one restart is reported;
//! 4. one append is one storage: a record id never appears under two sequences, a
//!    sequence always carries the same bytes, a batch is stored whole or not at all, and
//!    the batches of one producer (a sequence of unary calls, or one pipelined
//!    `AppendStream`) are stored as a prefix of what it sent, in order;
//! 5. no segment holding an unacknowledged record is ever deleted (after every kill the
//!    oldest segment file starts at or before `cursor+1`). Bulk producers (records of 64
//!    to 512 KiB) push the log through several 64 MiB segments, so rolls and deletions
//!    after acknowledgement happen under the kills too.
//!
//! Each kill is classified after the fact (the ids say in which cycle a record was
//! appended, the life tags who delivered what): during startup (before the socket
//! answered), ingest only (nothing delivered in that life), replay only or replay +
//! ingest (deliveries in that life and a backlog left at the kill), caught up, idle.
//! The test asserts that at least a tenth of the kills landed in the middle of a replay.
//!
//! A second, smaller test kills the daemon (no upstream) while several pipelined
//! `AppendStream`s are in flight and reads everything back over the socket: every
//! acknowledged record is there with its sequence and bytes, and each stream's stored
//! requests are a prefix of what it sent, in increasing sequence order.
//!
//! # Scale and replay
//! `ECHOPOST_TORTURE_CYCLES` (default [`DEFAULT_CYCLES`]) kills, `ECHOPOST_TORTURE_SEED`
//! (default [`DEFAULT_SEED`]) for every random choice: scenario, delays, batch shapes,
//! producers, the sink's scripted outages. Timing still varies between runs (real
//! processes), but a seed replays the same schedule. A failure prints the seed and the
//! command that replays it.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use echopost_log::sim::SimRng;
use echopost_proto::v1::echo_post_client::EchoPostClient;
use echopost_proto::v1::sink_server::{Sink, SinkServer};
use echopost_proto::v1::{AppendRequest, DeliverRequest, DeliverResponse, ReadRequest, Record};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic_health::server::HealthReporter;

use crate::support::daemon::{self, Area, Daemon, connect};

/// Seed used when `ECHOPOST_TORTURE_SEED` is not set.
const DEFAULT_SEED: u64 = 20_240_917;
/// Kill cycles when `ECHOPOST_TORTURE_CYCLES` is not set (about 25 s in a debug build
/// on 2 cores).
const DEFAULT_CYCLES: u64 = 64;
/// Metadata key of the life tag each daemon adds to its replayed requests.
const LIFE_HEADER: &str = "x-torture-life";
/// Longest a single append, connect or stream message may take before the test fails
/// (they normally take milliseconds; after a kill they fail at once).
const CALL_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest the final run may take to drain everything and exit.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(240);
/// A record delivered but not acknowledged when its daemon was killed must have been
/// delivered at most this long before the kill (see the module documentation, check 3).
/// The replayer's cadence gives 50 ms plus one cursor write; the rest is slack for a
/// loaded machine.
const ACK_LAG_LIMIT: Duration = Duration::from_secs(5);
/// Share of the cycles with a bulk producer: the daemon's segments are 64 MiB, and
/// only large records get the log through several of them (rolls, then deletions after
/// acknowledgement) within a CI run.
const BULK_PERCENT: u64 = 25;

// ---------------------------------------------------------------------------------------
// Seed, configuration, failure banner
// ---------------------------------------------------------------------------------------

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    let parsed = match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => v.parse(),
    };
    Some(parsed.unwrap_or_else(|e| panic!("{name}={v:?} is not a number: {e}")))
}

/// `name` as the test harness lists it: the path of `module` (a `module_path!()`)
/// without the crate, then `name`.
fn test_path(module: &str, name: &str) -> String {
    match module.split_once("::") {
        Some((_, m)) => format!("{m}::{name}"),
        None => name.to_owned(),
    }
}

/// Prints the seed and the replay command if the test panics.
struct SeedGuard {
    /// The test's full path (see [`test_path`]).
    test: String,
    seed: u64,
    cycles_env: Option<u64>,
}

impl SeedGuard {
    fn command(&self) -> String {
        let cycles = self
            .cycles_env
            .map(|c| format!("ECHOPOST_TORTURE_CYCLES={c} "))
            .unwrap_or_default();
        format!(
            "{cycles}ECHOPOST_TORTURE_SEED={} cargo test -p echopost --test it -- --nocapture --exact {}",
            self.seed, self.test
        )
    }
}

impl Drop for SeedGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "\n{} FAILED with seed={}\nreplay it exactly with:\n    {}\n",
                self.test,
                self.seed,
                self.command()
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// Records: every field derived from the id, so the expected bytes are known anywhere
// ---------------------------------------------------------------------------------------

fn fnv64(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The record with id `id`: a payload of seeded bytes (0 to ~20 KiB, mostly small; 64
/// to 512 KiB for the bulk producers' ids, `b...`), a header, and a fixed non-zero
/// timestamp (so the daemon stores it unchanged).
fn make_record(id: &str) -> Record {
    let h = fnv64(id);
    let mut rng = SimRng::new(h);
    let len = if id.starts_with('b') {
        (64 << 10) + rng.below(448 << 10)
    } else {
        match rng.below(100) {
            0..=79 => rng.below(128),
            80..=97 => 128 + rng.below(1024),
            _ => 4096 + rng.below(16 * 1024),
        }
    } as usize;
    let mut payload = Vec::with_capacity(id.len() + 1 + len);
    payload.extend_from_slice(id.as_bytes());
    payload.push(b'|');
    while payload.len() < id.len() + 1 + len {
        payload.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    payload.truncate(id.len() + 1 + len);
    let mut r = Record {
        id: id.to_owned(),
        stream: "torture".to_owned(),
        payload,
        headers: Default::default(),
        route: String::new(),
        timestamp_unix_nanos: 1_700_000_000_000_000_000 + (h % 1_000_000_000) as i64,
    };
    r.headers.insert("x-len".to_owned(), len.to_string());
    r
}

/// The cycle encoded in an id `p{producer}-c{cycle}-{n}` (or `b...` for bulk).
fn cycle_of(id: &str) -> u64 {
    id.split('-')
        .nth(1)
        .and_then(|c| c.strip_prefix('c'))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("unexpected record id {id:?}"))
}

// ---------------------------------------------------------------------------------------
// The main server: Health + Sink on loopback, logging every accepted record with its life
// ---------------------------------------------------------------------------------------

/// One record as the main server accepted it. The bytes are compared with what was
/// appended when it arrives (every field derives from the id, see [`make_record`]), so
/// that the log stays small however much is delivered.
struct Arrival {
    /// The `x-torture-life` tag of the request (u64::MAX when missing or malformed).
    life: u64,
    source: Arc<str>,
    seq: u64,
    /// `None` when the `StoredRecord` came without its record.
    id: Option<String>,
    /// The record is exactly `make_record(id)`, byte for byte.
    exact: bool,
    payload_len: u64,
    at: Instant,
}

#[derive(Default)]
struct SinkState {
    /// Accepted records, in arrival order (re-deliveries included).
    arrivals: Mutex<Vec<Arrival>>,
    /// `Deliver` calls, accepted or not.
    calls: AtomicU64,
    /// `Deliver` calls failed with UNAVAILABLE by the script.
    refused: AtomicU64,
    /// Percentage of `Deliver` calls to refuse.
    fail_percent: AtomicU64,
    /// Delay before answering a `Deliver`, in microseconds.
    delay_us: AtomicU64,
    /// Draws for the refusals (seeded per cycle).
    rng: Mutex<Option<SimRng>>,
}

struct TortureSink(Arc<SinkState>);

#[tonic::async_trait]
impl Sink for TortureSink {
    async fn deliver(
        &self,
        request: tonic::Request<DeliverRequest>,
    ) -> Result<tonic::Response<DeliverResponse>, tonic::Status> {
        let st = &self.0;
        st.calls.fetch_add(1, Ordering::SeqCst);
        let life = request
            .metadata()
            .get(LIFE_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(u64::MAX);
        let delay = Duration::from_micros(st.delay_us.load(Ordering::SeqCst));
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let p = st.fail_percent.load(Ordering::SeqCst);
        let refuse = p > 0 && st.rng.lock().unwrap().as_mut().is_some_and(|r| r.chance(p));
        if refuse {
            st.refused.fetch_add(1, Ordering::SeqCst);
            return Err(tonic::Status::unavailable("torture: scripted outage"));
        }
        let req = request.into_inner();
        let source: Arc<str> = Arc::from(req.source.as_str());
        let at = Instant::now();
        let batch: Vec<Arrival> = req
            .records
            .into_iter()
            .map(|r| {
                let (id, exact, payload_len) = match r.record {
                    Some(rec) => (
                        Some(rec.id.clone()),
                        rec == make_record(&rec.id),
                        rec.payload.len() as u64,
                    ),
                    None => (None, false, 0),
                };
                Arrival {
                    life,
                    source: Arc::clone(&source),
                    seq: r.sequence,
                    id,
                    exact,
                    payload_len,
                    at,
                }
            })
            .collect();
        st.arrivals.lock().unwrap().extend(batch);
        Ok(tonic::Response::new(DeliverResponse {}))
    }
}

/// What the sink does during one cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// NOT_SERVING all cycle: the daemon only ingests.
    Down,
    /// SERVING, every delivery accepted.
    Up,
    /// SERVING, but some `Deliver` calls fail with UNAVAILABLE.
    Flaky,
    /// NOT_SERVING, SERVING from half-way to the kill.
    Late,
}

struct TortureServer {
    addr: SocketAddr,
    state: Arc<SinkState>,
    health: HealthReporter,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl TortureServer {
    async fn start() -> TortureServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the loopback main server");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(SinkState::default());
        let (health, health_svc) = tonic_health::server::health_reporter();
        health
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
        let sink =
            SinkServer::new(TortureSink(Arc::clone(&state))).max_decoding_message_size(64 << 20);
        let router = tonic::transport::Server::builder()
            .add_service(health_svc)
            .add_service(sink);
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = router
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = rx.await;
                })
                .await;
        });
        TortureServer {
            addr,
            state,
            health,
            stop: Some(tx),
            task,
        }
    }

    fn url(&self) -> String {
        format!("grpc://127.0.0.1:{}", self.addr.port())
    }

    async fn set_serving(&self, serving: bool) {
        let s = if serving {
            tonic_health::ServingStatus::Serving
        } else {
            tonic_health::ServingStatus::NotServing
        };
        self.health.set_service_status("", s).await;
    }

    /// Health, refusals and delay for the next daemon life.
    async fn configure(&self, mode: Mode, fail_percent: u64, delay_us: u64, rng_seed: u64) {
        let st = &self.state;
        st.fail_percent.store(
            if mode == Mode::Flaky { fail_percent } else { 0 },
            Ordering::SeqCst,
        );
        st.delay_us.store(delay_us, Ordering::SeqCst);
        *st.rng.lock().unwrap() = Some(SimRng::new(rng_seed));
        self.set_serving(matches!(mode, Mode::Up | Mode::Flaky))
            .await;
    }

    /// The arrival log, taken out of the server (it can hold hundreds of MB).
    fn take_arrivals(&self) -> Vec<Arrival> {
        std::mem::take(&mut *self.state.arrivals.lock().unwrap())
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if tokio::time::timeout(Duration::from_secs(2), &mut self.task)
            .await
            .is_err()
        {
            self.task.abort();
        }
    }
}

// ---------------------------------------------------------------------------------------
// Producers
// ---------------------------------------------------------------------------------------

/// One request a producer sent.
#[derive(Debug, Clone)]
struct Sent {
    ids: Vec<String>,
    /// `(first_sequence, last_sequence)` if the daemon acknowledged it.
    ack: Option<(u64, u64)>,
}

/// How a producer appends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Unary `Append`s of 1 to 20 records, one at a time.
    Unary,
    /// One `AppendStream`, pipelined.
    Stream,
    /// Unary `Append`s of 1 to 4 records of 64 to 512 KiB (so segments fill and roll).
    Bulk,
}

/// Everything one producer sent, in order.
#[derive(Debug)]
struct ProducerLog {
    cycle: u64,
    producer: u64,
    kind: Kind,
    requests: Vec<Sent>,
    /// The error that ended it, and when it was seen.
    ended_by: Option<(Instant, String)>,
    /// A response arrived that matched no outstanding request.
    protocol_error: Option<String>,
}

impl ProducerLog {
    fn new(cycle: u64, producer: u64, kind: Kind) -> Self {
        ProducerLog {
            cycle,
            producer,
            kind,
            requests: Vec::new(),
            ended_by: None,
            protocol_error: None,
        }
    }

    fn name(&self) -> String {
        format!(
            "producer {} of cycle {} ({:?})",
            self.producer, self.cycle, self.kind
        )
    }

    fn next_request(&mut self, n: &mut u64, k: u64) -> AppendRequest {
        let ids: Vec<String> = (0..k)
            .map(|_| {
                let prefix = if self.kind == Kind::Bulk { 'b' } else { 'p' };
                let id = format!("{prefix}{}-c{}-{}", self.producer, self.cycle, *n);
                *n += 1;
                id
            })
            .collect();
        let req = AppendRequest {
            records: ids.iter().map(|i| make_record(i)).collect(),
        };
        self.requests.push(Sent { ids, ack: None });
        req
    }

    fn ack(&mut self, idx: usize, first: u64, last: u64) {
        self.requests[idx].ack = Some((first, last));
    }
}

/// Pause between requests: none for 40% of the producers (as fast as the daemon
/// allows), 0.5 to 5 ms for the others, so that the backlog sometimes drains and the
/// replayer goes idle and wakes up again.
fn pace(rng: &mut SimRng) -> Duration {
    if rng.chance(40) {
        Duration::ZERO
    } else {
        Duration::from_micros(500 + rng.below(4501))
    }
}

async fn client(socket: &Path) -> Result<EchoPostClient<Channel>, String> {
    match tokio::time::timeout(CALL_TIMEOUT, connect(socket)).await {
        Ok(Ok(ch)) => Ok(EchoPostClient::new(ch)),
        Ok(Err(e)) => Err(format!("connect: {e}")),
        Err(_) => Err(format!("connect did not finish within {CALL_TIMEOUT:?}")),
    }
}

/// Unary `Append`s (1 to 20 records, or 1 to 4 bulk records), one after the other,
/// until one fails.
async fn unary_producer(
    socket: PathBuf,
    cycle: u64,
    producer: u64,
    kind: Kind,
    seed: u64,
) -> ProducerLog {
    let mut log = ProducerLog::new(cycle, producer, kind);
    let most = if kind == Kind::Bulk { 4 } else { 20 };
    let mut rng = SimRng::new(seed);
    let pause = pace(&mut rng);
    let mut c = match client(&socket).await {
        Ok(c) => c,
        Err(e) => {
            log.ended_by = Some((Instant::now(), e));
            return log;
        }
    };
    let mut n = 0;
    loop {
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
        let k = 1 + rng.below(most);
        let req = log.next_request(&mut n, k);
        let idx = log.requests.len() - 1;
        match tokio::time::timeout(CALL_TIMEOUT, c.append(req)).await {
            Ok(Ok(r)) => {
                let r = r.into_inner();
                log.ack(idx, r.first_sequence, r.last_sequence);
            }
            Ok(Err(s)) => {
                log.ended_by = Some((Instant::now(), format!("{:?}: {}", s.code(), s.message())));
                return log;
            }
            Err(_) => {
                log.ended_by = Some((
                    Instant::now(),
                    format!("Append did not return within {CALL_TIMEOUT:?}"),
                ));
                return log;
            }
        }
    }
}

/// One `AppendStream` with up to `window` requests of 1 to 10 records outstanding, until
/// the stream fails.
async fn stream_producer(socket: PathBuf, cycle: u64, producer: u64, seed: u64) -> ProducerLog {
    let mut log = ProducerLog::new(cycle, producer, Kind::Stream);
    let mut rng = SimRng::new(seed);
    let window = 1 + rng.below(32) as usize;
    let pause = pace(&mut rng);
    let mut c = match client(&socket).await {
        Ok(c) => c,
        Err(e) => {
            log.ended_by = Some((Instant::now(), e));
            return log;
        }
    };
    // Room for the whole window: sending never blocks.
    let (tx, rx) = mpsc::channel::<AppendRequest>(64);
    let mut outstanding: VecDeque<usize> = VecDeque::new();
    let mut n = 0;
    let mut fill = |log: &mut ProducerLog, outstanding: &mut VecDeque<usize>| -> bool {
        while outstanding.len() < window {
            let k = 1 + rng.below(10);
            let req = log.next_request(&mut n, k);
            if tx.try_send(req).is_err() {
                // The call is over; this request never left.
                return false;
            }
            outstanding.push_back(log.requests.len() - 1);
        }
        true
    };
    let mut open = fill(&mut log, &mut outstanding);
    let mut responses =
        match tokio::time::timeout(CALL_TIMEOUT, c.append_stream(ReceiverStream::new(rx))).await {
            Ok(Ok(r)) => r.into_inner(),
            Ok(Err(s)) => {
                log.ended_by = Some((Instant::now(), format!("{:?}: {}", s.code(), s.message())));
                return log;
            }
            Err(_) => {
                log.ended_by = Some((
                    Instant::now(),
                    format!("AppendStream did not start within {CALL_TIMEOUT:?}"),
                ));
                return log;
            }
        };
    loop {
        match tokio::time::timeout(CALL_TIMEOUT, responses.message()).await {
            Ok(Ok(Some(r))) => match outstanding.pop_front() {
                Some(idx) => log.ack(idx, r.first_sequence, r.last_sequence),
                None => {
                    log.protocol_error = Some(format!(
                        "a response ({}..={}) with no request outstanding",
                        r.first_sequence, r.last_sequence
                    ));
                    return log;
                }
            },
            Ok(Ok(None)) => {
                log.ended_by = Some((Instant::now(), "the stream ended".to_owned()));
                return log;
            }
            Ok(Err(s)) => {
                log.ended_by = Some((Instant::now(), format!("{:?}: {}", s.code(), s.message())));
                return log;
            }
            Err(_) => {
                log.ended_by = Some((
                    Instant::now(),
                    format!("no AppendStream response within {CALL_TIMEOUT:?}"),
                ));
                return log;
            }
        }
        // Once the call is over, keep reading: responses may still come for what was sent.
        if open {
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
            open = fill(&mut log, &mut outstanding);
        }
    }
}

fn spawn_producers(
    socket: &Path,
    cycle: u64,
    kinds: &[(Kind, u64)],
) -> Vec<JoinHandle<ProducerLog>> {
    kinds
        .iter()
        .enumerate()
        .map(|(p, &(kind, seed))| {
            let socket = socket.to_path_buf();
            match kind {
                Kind::Stream => tokio::spawn(stream_producer(socket, cycle, p as u64, seed)),
                Kind::Unary | Kind::Bulk => {
                    tokio::spawn(unary_producer(socket, cycle, p as u64, kind, seed))
                }
            }
        })
        .collect()
}

async fn join_producers(handles: Vec<JoinHandle<ProducerLog>>) -> Vec<ProducerLog> {
    let mut out = Vec::new();
    for h in handles {
        let log = tokio::time::timeout(CALL_TIMEOUT + Duration::from_secs(5), h)
            .await
            .expect("a producer did not finish after its daemon was killed")
            .expect("a producer panicked");
        out.push(log);
    }
    out
}

// ---------------------------------------------------------------------------------------
// The daemon
// ---------------------------------------------------------------------------------------

/// First sequences of the segment files in `dir`, ascending.
fn segments(dir: &Path) -> Vec<u64> {
    let mut v: Vec<u64> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| echopost_log::segment::parse_segment_name(e.file_name().to_str()?))
                .collect()
        })
        .unwrap_or_default();
    v.sort_unstable();
    v
}

fn read_cursor(dir: &Path) -> u64 {
    echopost_log::cursor::read_cursor(&echopost_log::fs::RealFs, dir)
        .unwrap_or_else(|e| panic!("reading the cursor of {}: {e}", dir.display()))
        .unwrap_or(0)
}

fn daemon_args(
    socket: &Path,
    upstream: Option<&str>,
    linger: &str,
    batch_records: u64,
    life: u64,
) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "--socket".into(),
        socket.display().to_string(),
        "--linger".into(),
        linger.into(),
    ];
    if let Some(u) = upstream {
        a.extend([
            "--upstream".into(),
            u.into(),
            "--healthy-after".into(),
            "1".into(),
            "--batch-records".into(),
            batch_records.to_string(),
            // A timeout would re-send within one life (legitimately); keep it out of play.
            "--request-timeout".into(),
            "120s".into(),
            "--upstream-header".into(),
            format!("{LIFE_HEADER}: {life}"),
        ]);
    }
    a
}

fn spawn_daemon(area: &Area, args: &[String]) -> Daemon {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    Daemon::spawn(area, &refs)
}

/// SIGKILL, after checking the daemon did not die on its own; returns the kill instant.
fn kill_9(d: &mut Daemon, what: &str) -> Instant {
    use std::os::unix::process::ExitStatusExt;
    if let Some(s) = d.try_status() {
        panic!(
            "{what}: echopost exited on its own with {s} before the kill; stderr:\n{}",
            d.stderr()
        );
    }
    let at = Instant::now();
    d.kill();
    let s = d.try_status().expect("the killed daemon's status");
    assert_eq!(
        s.signal(),
        Some(libc::SIGKILL),
        "{what}: echopost ended with {s}, not by the SIGKILL; stderr:\n{}",
        d.stderr()
    );
    at
}

// ---------------------------------------------------------------------------------------
// Checks shared by both tests: what the producers were told against what was stored
// ---------------------------------------------------------------------------------------

#[derive(Debug, Default)]
struct RequestStats {
    requests: u64,
    acked_requests: u64,
    acked_records: u64,
    stored_unacked_records: u64,
    lost_unacked_records: u64,
}

/// `stored`: the id of every stored record by sequence, each already checked to hold
/// exactly the bytes appended under that id, and to be unique (`id_to_seq` is the
/// reverse map). Checks 1 and 4 of the module documentation for every producer.
fn check_producers(
    logs: &[ProducerLog],
    stored: &BTreeMap<u64, &str>,
    id_to_seq: &HashMap<String, u64>,
) -> RequestStats {
    let mut st = RequestStats::default();
    let mut known: HashSet<&str> = HashSet::new();
    for log in logs {
        let name = log.name();
        if let Some(e) = &log.protocol_error {
            panic!("{name}: {e}");
        }
        let mut prev_last = 0u64;
        let mut unstored_at: Option<usize> = None;
        let mut unacked_at: Option<usize> = None;
        for (i, req) in log.requests.iter().enumerate() {
            st.requests += 1;
            for id in &req.ids {
                assert!(known.insert(id), "{name}: id {id} sent twice by the test");
            }
            let seqs: Vec<Option<u64>> = req
                .ids
                .iter()
                .map(|id| id_to_seq.get(id).copied())
                .collect();
            let n_stored = seqs.iter().filter(|s| s.is_some()).count();
            assert!(
                n_stored == 0 || n_stored == seqs.len(),
                "{name}: request {i} ({} records, ids {}..) was stored in part: {seqs:?} (a batch must be all or nothing)",
                seqs.len(),
                req.ids[0]
            );
            match req.ack {
                Some(_) => assert!(
                    unacked_at.is_none(),
                    "{name}: request {i} acknowledged after request {} was not",
                    unacked_at.unwrap_or_default()
                ),
                None => {
                    unacked_at.get_or_insert(i);
                }
            }
            if n_stored == 0 {
                assert!(
                    req.ack.is_none(),
                    "{name}: request {i} was acknowledged as {:?} but its records {:?}.. were never stored/delivered",
                    req.ack,
                    req.ids.first()
                );
                unstored_at.get_or_insert(i);
                st.lost_unacked_records += req.ids.len() as u64;
                continue;
            }
            assert!(
                unstored_at.is_none(),
                "{name}: request {i} was stored but the earlier request {} was not: the order of a producer's requests did not survive",
                unstored_at.unwrap_or_default()
            );
            let first = seqs[0].unwrap_or_default();
            for (k, s) in seqs.iter().enumerate() {
                let s = s.unwrap_or_default();
                assert_eq!(
                    s,
                    first + k as u64,
                    "{name}: request {i}: record {k} ({}) stored as {s}, not contiguous with the batch starting at {first}",
                    req.ids[k]
                );
                assert_eq!(
                    stored.get(&s).copied(),
                    Some(req.ids[k].as_str()),
                    "{name}: sequence {s} does not hold the record that was appended"
                );
            }
            let last = first + seqs.len() as u64 - 1;
            assert!(
                first > prev_last,
                "{name}: request {i} stored at {first}..={last}, not after the previous request (..={prev_last})"
            );
            prev_last = last;
            match req.ack {
                Some((f, l)) => {
                    assert_eq!(
                        (f, l),
                        (first, last),
                        "{name}: request {i} was acknowledged as {f}..={l} but stored as {first}..={last}"
                    );
                    st.acked_requests += 1;
                    st.acked_records += req.ids.len() as u64;
                }
                None => st.stored_unacked_records += req.ids.len() as u64,
            }
        }
    }
    for (seq, id) in stored {
        assert!(
            known.contains(id),
            "sequence {seq} holds record {id:?}, which no producer sent"
        );
    }
    st
}

// ---------------------------------------------------------------------------------------
// The torture test
// ---------------------------------------------------------------------------------------

/// What the seed decided for one cycle.
#[derive(Debug, Clone)]
struct Plan {
    mode: Mode,
    /// Killed before it answered (during recovery or startup).
    startup_kill: bool,
    /// `(kind, seed)` per producer; empty for a replay-only cycle.
    producers: Vec<(Kind, u64)>,
    kill_delay: Duration,
    batch_records: u64,
    fail_percent: u64,
    delay_us: u64,
    sink_seed: u64,
}

impl Plan {
    /// Always the same number of draws, whatever is chosen.
    fn draw(rng: &mut SimRng) -> Plan {
        let mode = match rng.below(100) {
            0..=29 => Mode::Down,
            30..=64 => Mode::Up,
            65..=84 => Mode::Flaky,
            _ => Mode::Late,
        };
        let startup_kill = rng.chance(8);
        let n_producers = if rng.chance(12) { 0 } else { 2 + rng.below(3) };
        let mut producers = Vec::new();
        for p in 0..4 {
            let kind = if rng.chance(50) {
                Kind::Stream
            } else {
                Kind::Unary
            };
            let seed = rng.next_u64();
            if p < n_producers {
                producers.push((kind, seed));
            }
        }
        let bulk = rng.chance(BULK_PERCENT);
        let seed = rng.next_u64();
        if bulk && n_producers > 0 {
            producers.push((Kind::Bulk, seed));
        }
        let kill_ms = rng.below(401);
        let startup_ms = rng.below(80);
        let batch_records = [50, 100, 200][rng.below(3) as usize];
        let fail_percent = 10 + rng.below(30);
        let delay_us = rng.below(3001);
        let sink_seed = rng.next_u64();
        Plan {
            mode,
            startup_kill,
            producers,
            kill_delay: Duration::from_millis(if startup_kill { startup_ms } else { kill_ms }),
            batch_records,
            fail_percent,
            delay_us,
            sink_seed,
        }
    }
}

/// One daemon life.
#[derive(Debug, Clone)]
struct Life {
    plan: Option<Plan>,
    cursor_before: u64,
    /// After the kill (or the final exit).
    cursor_after: u64,
    /// `None` for the final, draining life.
    killed_at: Option<Instant>,
    /// First sequences of the segment files left after the kill (or the final exit).
    segments: Vec<u64>,
}

#[derive(Debug, Default)]
struct Kills {
    startup: u64,
    ingest_only: u64,
    replay_only: u64,
    replay_and_ingest: u64,
    caught_up: u64,
    idle: u64,
}

impl Kills {
    fn mid_replay(&self) -> u64 {
        self.replay_only + self.replay_and_ingest
    }
}

struct Summary {
    seed: u64,
    cycles: u64,
    kills: Kills,
    req: RequestStats,
    stored: u64,
    stored_bytes: u64,
    deliveries: u64,
    redeliveries: u64,
    max_redelivered_after_restart: u64,
    max_unacked_window: u64,
    max_ack_lag: Duration,
    segments_seen: u64,
    segments_deleted: u64,
    max_segments_on_disk: u64,
    deliver_calls: u64,
    refused_calls: u64,
    wall: Duration,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let k = &self.kills;
        write!(
            f,
            "torture seed={} cycles={}: kills during startup {}, ingest only (upstream down or not yet healthy) {}, \
             replay only {}, replay + ingest {}, caught up {}, idle {} (mid-replay total {}); \
             requests {} (acknowledged {}), records acknowledged {}, stored but unacknowledged {}, \
             unacknowledged and not stored {}, records stored {} ({:.1} MiB of payload); deliveries {}, re-deliveries {}, \
             max re-deliveries after one restart {}, max unacked window at a kill {}, max ack lag at a kill {:?}; \
             segment files seen after kills {} ({} deleted after acknowledgement, at most {} on disk); \
             Deliver calls {} (scripted UNAVAILABLE {}); wall time {:.1?}",
            self.seed,
            self.cycles,
            k.startup,
            k.ingest_only,
            k.replay_only,
            k.replay_and_ingest,
            k.caught_up,
            k.idle,
            k.mid_replay(),
            self.req.requests,
            self.req.acked_requests,
            self.req.acked_records,
            self.req.stored_unacked_records,
            self.req.lost_unacked_records,
            self.stored,
            self.stored_bytes as f64 / f64::from(1 << 20),
            self.deliveries,
            self.redeliveries,
            self.max_redelivered_after_restart,
            self.max_unacked_window,
            self.max_ack_lag,
            self.segments_seen,
            self.segments_deleted,
            self.max_segments_on_disk,
            self.deliver_calls,
            self.refused_calls,
            self.wall,
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_ingest_and_replay_for_many_cycles() {
    let seed = env_u64("ECHOPOST_TORTURE_SEED").unwrap_or(DEFAULT_SEED);
    let cycles_env = env_u64("ECHOPOST_TORTURE_CYCLES");
    let cycles = cycles_env.unwrap_or(DEFAULT_CYCLES);
    let _guard = SeedGuard {
        test: test_path(
            module_path!(),
            "kill_9_during_ingest_and_replay_for_many_cycles",
        ),
        seed,
        cycles_env,
    };
    eprintln!("torture: seed={seed} cycles={cycles}");
    let started = Instant::now();

    let area = Area::new();
    let dir = area.dir();
    let socket = area.socket();
    let sink = TortureServer::start().await;
    let url = sink.url();
    let mut rng = SimRng::new(seed);
    let mut lives: Vec<Life> = Vec::new();
    let mut producer_logs: Vec<ProducerLog> = Vec::new();

    for cycle in 0..cycles {
        let plan = Plan::draw(&mut rng);
        let cursor_before = read_cursor(&dir);
        sink.configure(plan.mode, plan.fail_percent, plan.delay_us, plan.sink_seed)
            .await;
        let args = daemon_args(&socket, Some(&url), "60s", plan.batch_records, cycle);
        let mut d = spawn_daemon(&area, &args);
        let what = format!("cycle {cycle} ({plan:?})");
        let mut handles = Vec::new();
        if plan.startup_kill {
            tokio::time::sleep(plan.kill_delay).await;
        } else {
            d.wait_ready().await;
            handles = spawn_producers(&socket, cycle, &plan.producers);
            if plan.mode == Mode::Late {
                tokio::time::sleep(plan.kill_delay / 2).await;
                sink.set_serving(true).await;
                tokio::time::sleep(plan.kill_delay - plan.kill_delay / 2).await;
            } else {
                tokio::time::sleep(plan.kill_delay).await;
            }
        }
        let killed_at = kill_9(&mut d, &what);
        let logs = join_producers(handles).await;
        for l in &logs {
            if let Some((at, e)) = &l.ended_by {
                assert!(
                    *at >= killed_at,
                    "{what}: {} failed while the daemon was running: {e}; daemon stderr:\n{}",
                    l.name(),
                    d.stderr()
                );
            }
        }
        producer_logs.extend(logs);
        drop(d);
        lives.push(Life {
            plan: Some(plan),
            cursor_before,
            cursor_after: read_cursor(&dir),
            killed_at: Some(killed_at),
            segments: segments(&dir),
        });
    }

    // The last life: main server healthy, nothing refused; it must drain and exit 0.
    sink.configure(Mode::Up, 0, 0, 0).await;
    let cursor_before = read_cursor(&dir);
    let args = daemon_args(&socket, Some(&url), "300ms", 200, cycles);
    let cycles_done = started.elapsed();
    let mut d = spawn_daemon(&area, &args);
    let status = d.wait_exit(DRAIN_TIMEOUT).await;
    let drain_time = started.elapsed() - cycles_done;
    assert_eq!(
        status.code(),
        Some(0),
        "the final run should drain and exit 0; stderr:\n{}",
        d.stderr()
    );
    drop(d);
    let final_cursor = read_cursor(&dir);
    lives.push(Life {
        plan: None,
        cursor_before,
        cursor_after: final_cursor,
        killed_at: None,
        segments: segments(&dir),
    });
    let next_seq = {
        let log = echopost_log::Log::open(&dir, echopost_log::LogOptions::default())
            .expect("open the drained directory");
        let s = log.stats();
        assert_eq!(
            s.backlog_records, 0,
            "backlog left after the final run: {s:?}"
        );
        s.next_seq
    };
    let source_id = std::fs::read_to_string(dir.join("source-id"))
        .expect("DIR/source-id")
        .trim()
        .to_owned();
    assert!(!source_id.is_empty(), "DIR/source-id is empty");

    let arrivals = sink.take_arrivals();
    eprintln!(
        "torture: {cycles} cycles in {cycles_done:.1?}, final drain in {drain_time:.1?}, {} arrivals",
        arrivals.len()
    );
    let deliver_calls = sink.state.calls.load(Ordering::SeqCst);
    let refused_calls = sink.state.refused.load(Ordering::SeqCst);
    sink.stop().await;

    let mut summary = verify(
        &arrivals,
        &lives,
        &producer_logs,
        &source_id,
        next_seq,
        final_cursor,
    );
    summary.seed = seed;
    summary.cycles = cycles;
    summary.deliver_calls = deliver_calls;
    summary.refused_calls = refused_calls;
    summary.wall = started.elapsed();
    // Straight to the stderr handle: unlike `eprintln!`, it is not captured by the test
    // harness, so the counts show in CI logs.
    let _ = writeln!(std::io::stderr().lock(), "{summary}");

    assert_eq!(lives.len() as u64, cycles + 1, "{summary}");
    assert!(
        summary.req.acked_records > 0,
        "no record was checked: {summary}"
    );
    let min_mid_replay = (cycles / 10).max(1);
    assert!(
        summary.kills.mid_replay() >= min_mid_replay,
        "fewer than {min_mid_replay} kills landed in the middle of a replay: {summary}"
    );
}

/// All the checks of the module documentation, on the final state.
fn verify(
    arrivals: &[Arrival],
    lives: &[Life],
    producers: &[ProducerLog],
    source_id: &str,
    next_seq: u64,
    final_cursor: u64,
) -> Summary {
    let n_lives = lives.len() as u64;

    // Check 4 (part) and 1 (source): one sequence, one content; one id, one sequence.
    let mut stored: BTreeMap<u64, &str> = BTreeMap::new();
    let mut stored_bytes = 0u64;
    let mut id_to_seq: HashMap<String, u64> = HashMap::new();
    let mut first_life: HashMap<u64, u64> = HashMap::new();
    let mut expected_first = 1u64;
    let mut redeliveries = 0u64;
    let mut redelivered_in_life: Vec<u64> = vec![0; lives.len()];
    for (i, a) in arrivals.iter().enumerate() {
        assert_eq!(
            &*a.source, source_id,
            "arrival {i} (sequence {}) has source {:?}, not DIR/source-id {source_id:?}",
            a.seq, a.source
        );
        assert!(
            a.life < n_lives,
            "arrival {i} (sequence {}) has no valid {LIFE_HEADER} tag: the daemon dropped --upstream-header",
            a.seq
        );
        let Some(id) = a.id.as_deref() else {
            panic!("arrival {i}: sequence {} came without its record", a.seq);
        };
        assert!(
            a.exact,
            "arrival {i}: sequence {} (record {id}, life {}) does not hold the bytes that were appended as {id}",
            a.seq, a.life
        );
        match stored.get(&a.seq) {
            Some(prev) => {
                assert_eq!(
                    *prev, id,
                    "sequence {} was delivered again as a different record (life {})",
                    a.seq, a.life
                );
                let fl = first_life[&a.seq];
                assert!(
                    fl != a.life,
                    "sequence {} delivered twice within life {} (first in life {fl})",
                    a.seq,
                    a.life
                );
                redeliveries += 1;
                redelivered_in_life[a.life as usize] += 1;
            }
            None => {
                // Check 2: first deliveries are exactly 1, 2, 3, ... in arrival order.
                assert_eq!(
                    a.seq, expected_first,
                    "arrival {i}: sequence {} delivered for the first time while {expected_first} never was (skipped or out of order)",
                    a.seq
                );
                expected_first += 1;
                stored.insert(a.seq, id);
                stored_bytes += a.payload_len;
                first_life.insert(a.seq, a.life);
                if let Some(other) = id_to_seq.insert(id.to_owned(), a.seq) {
                    panic!(
                        "record {id} was stored twice, as sequences {other} and {}",
                        a.seq
                    );
                }
            }
        }
    }
    let max_seq = expected_first - 1;
    assert_eq!(
        next_seq,
        max_seq + 1,
        "the log holds sequences up to {} but only 1..={max_seq} were delivered",
        next_seq - 1
    );
    assert_eq!(
        final_cursor, max_seq,
        "after the final run the cursor is {final_cursor}, not the last sequence {max_seq}"
    );

    // Check 3: per life, deliveries are exactly cursor+1, cursor+2, ...; the cursor moves
    // forward only over delivered records; unacked deliveries at a kill are recent.
    let mut per_life: Vec<Vec<&Arrival>> = vec![Vec::new(); lives.len()];
    for a in arrivals {
        per_life[a.life as usize].push(a);
    }
    let mut max_delivered_before = 0u64;
    let mut max_unacked_window = 0u64;
    let mut max_ack_lag = Duration::ZERO;
    let mut max_delivered_by: Vec<u64> = Vec::new();
    for (l, life) in lives.iter().enumerate() {
        let got = &per_life[l];
        if l > 0 {
            assert_eq!(
                life.cursor_before,
                lives[l - 1].cursor_after,
                "life {l}: the cursor changed between two lives"
            );
        }
        assert!(
            life.cursor_after >= life.cursor_before,
            "life {l}: the cursor went back from {} to {}",
            life.cursor_before,
            life.cursor_after
        );
        max_unacked_window =
            max_unacked_window.max(max_delivered_before.saturating_sub(life.cursor_before));
        for (k, a) in got.iter().enumerate() {
            let want = life.cursor_before + 1 + k as u64;
            assert_eq!(
                a.seq, want,
                "life {l}: delivery {k} was sequence {}, expected {want} (the persisted cursor was {}; deliveries within one life must resume right after it and be contiguous)",
                a.seq, life.cursor_before
            );
        }
        let last = got.last().map_or(life.cursor_before, |a| a.seq);
        assert!(
            life.cursor_after <= last,
            "life {l}: the cursor ({}) covers records this life never delivered (last delivered {last})",
            life.cursor_after
        );
        if let Some(killed_at) = life.killed_at {
            for a in got.iter().filter(|a| a.seq > life.cursor_after) {
                let lag = killed_at.saturating_duration_since(a.at);
                max_ack_lag = max_ack_lag.max(lag);
                assert!(
                    lag <= ACK_LAG_LIMIT,
                    "life {l}: sequence {} was delivered {lag:?} before the kill and still not acknowledged (cursor {}): acks lag far behind delivery",
                    a.seq,
                    life.cursor_after
                );
            }
        }
        max_delivered_before = max_delivered_before.max(last);
        max_delivered_by.push(max_delivered_before);
    }
    let max_redelivered_after_restart = redelivered_in_life.iter().copied().max().unwrap_or(0);

    // Segments: nothing unacknowledged was ever deleted (the oldest segment left after a
    // kill starts at or before the first unacknowledged record), and segments did roll
    // and get deleted (reported).
    let mut seen: HashSet<u64> = HashSet::new();
    let mut max_segments_on_disk = 0u64;
    for (l, life) in lives.iter().enumerate() {
        if let Some(&oldest) = life.segments.first() {
            assert!(
                oldest <= life.cursor_after + 1,
                "life {l}: the oldest segment left starts at {oldest}, after the first unacknowledged record {} (segments {:?})",
                life.cursor_after + 1,
                life.segments
            );
        }
        seen.extend(life.segments.iter().copied());
        max_segments_on_disk = max_segments_on_disk.max(life.segments.len() as u64);
    }
    let remaining = lives.last().map_or(0, |l| l.segments.len() as u64);
    let segments_seen = seen.len() as u64;
    let segments_deleted = segments_seen - remaining;

    // Where each kill landed: backlog at the kill = stored by then - delivered by then.
    let mut max_stored_by = vec![0u64; lives.len()];
    for (seq, id) in &stored {
        let c = cycle_of(id) as usize;
        max_stored_by[c] = max_stored_by[c].max(*seq);
    }
    let mut running = 0;
    for m in &mut max_stored_by {
        running = running.max(*m);
        *m = running;
    }
    let mut kills = Kills::default();
    for (l, life) in lives.iter().enumerate() {
        let Some(plan) = &life.plan else { continue };
        let delivered = !per_life[l].is_empty();
        let backlog = max_stored_by[l] > max_delivered_by[l];
        let ingest = !plan.producers.is_empty();
        let k = if plan.startup_kill {
            &mut kills.startup
        } else if !delivered {
            if ingest {
                &mut kills.ingest_only
            } else {
                &mut kills.idle
            }
        } else if !backlog {
            &mut kills.caught_up
        } else if ingest {
            &mut kills.replay_and_ingest
        } else {
            &mut kills.replay_only
        };
        *k += 1;
    }

    // Checks 1 and 4 against what every producer was told.
    let req = check_producers(producers, &stored, &id_to_seq);

    Summary {
        seed: 0,
        cycles: 0,
        kills,
        req,
        stored: max_seq,
        stored_bytes,
        deliveries: arrivals.len() as u64,
        redeliveries,
        max_redelivered_after_restart,
        max_unacked_window,
        max_ack_lag,
        segments_seen,
        segments_deleted,
        max_segments_on_disk,
        deliver_calls: 0,
        refused_calls: 0,
        wall: Duration::ZERO,
    }
}

// ---------------------------------------------------------------------------------------
// Pipelined streams killed mid-flight
// ---------------------------------------------------------------------------------------

/// Several `AppendStream` producers pipeline their requests; the daemon (no upstream) is
/// killed, restarted, killed again. Afterwards every acknowledged record is stored with
/// the acknowledged sequence and the exact bytes, each stream's acknowledged sequences
/// increase, and what each stream got stored is a prefix of what it sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_streams_keep_their_order_across_kills() {
    let seed = env_u64("ECHOPOST_TORTURE_SEED").unwrap_or(DEFAULT_SEED);
    let _guard = SeedGuard {
        test: test_path(
            module_path!(),
            "pipelined_streams_keep_their_order_across_kills",
        ),
        seed,
        cycles_env: None,
    };
    let started = Instant::now();
    let mut rng = SimRng::new(seed ^ 0x5157_4EA4);
    let rounds = 4u64;
    let area = Area::new();
    let socket = area.socket();
    let mut logs: Vec<ProducerLog> = Vec::new();
    for round in 0..rounds {
        let args = daemon_args(&socket, None, "60s", 0, round);
        let mut d = spawn_daemon(&area, &args);
        d.wait_ready().await;
        let kinds: Vec<(Kind, u64)> = (0..3).map(|_| (Kind::Stream, rng.next_u64())).collect();
        let handles = spawn_producers(&socket, round, &kinds);
        tokio::time::sleep(Duration::from_millis(50 + rng.below(250))).await;
        let killed_at = kill_9(&mut d, &format!("round {round}"));
        for l in join_producers(handles).await {
            if let Some((at, e)) = &l.ended_by {
                assert!(
                    *at >= killed_at,
                    "round {round}: {} failed while the daemon was running: {e}",
                    l.name()
                );
            }
            logs.push(l);
        }
    }

    let args = daemon_args(&socket, None, "60s", 0, rounds);
    let mut d = spawn_daemon(&area, &args);
    d.wait_ready().await;
    let mut c = d.client().await;
    let mut stream = c
        .read(ReadRequest {
            from_sequence: 1,
            limit: u32::MAX,
        })
        .await
        .expect("Read")
        .into_inner();
    let mut stored: BTreeMap<u64, String> = BTreeMap::new();
    let mut id_to_seq: HashMap<String, u64> = HashMap::new();
    let mut expect = 1u64;
    while let Some(msg) = tokio::time::timeout(CALL_TIMEOUT, stream.message())
        .await
        .expect("Read stalled")
        .expect("Read stream")
    {
        for r in msg.records {
            assert_eq!(r.sequence, expect, "Read: sequences are not gapless");
            expect += 1;
            let rec = r.record.expect("a stored record");
            assert!(
                rec == make_record(&rec.id),
                "sequence {} (record {}) does not hold the bytes that were appended",
                r.sequence,
                rec.id
            );
            if let Some(other) = id_to_seq.insert(rec.id.clone(), r.sequence) {
                panic!(
                    "record {} stored twice, as {other} and {}",
                    rec.id, r.sequence
                );
            }
            stored.insert(r.sequence, rec.id);
        }
    }
    let status = daemon::status(&mut c).await;
    assert_eq!(
        status.next_sequence, expect,
        "Read returned fewer records than are stored"
    );
    drop(c);
    d.stop().await;

    let by_ref: BTreeMap<u64, &str> = stored.iter().map(|(s, id)| (*s, id.as_str())).collect();
    let st = check_producers(&logs, &by_ref, &id_to_seq);
    let summary = format!(
        "pipelined streams seed={seed}: {rounds} kills, {} streams, {} requests ({} acknowledged), \
         {} records acknowledged, {} stored but unacknowledged, {} unacknowledged and lost, {} stored; wall time {:.1?}",
        logs.len(),
        st.requests,
        st.acked_requests,
        st.acked_records,
        st.stored_unacked_records,
        st.lost_unacked_records,
        stored.len(),
        started.elapsed()
    );
    // Straight to the stderr handle: unlike `eprintln!`, it is not captured by the test
    // harness, so the counts show in CI logs.
    let _ = writeln!(std::io::stderr().lock(), "{summary}");
    assert!(st.acked_records > 0, "nothing was acknowledged: {summary}");
}
