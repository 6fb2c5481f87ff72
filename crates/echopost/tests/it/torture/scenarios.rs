//! The scenarios: the daemon killed with SIGKILL at random moments for many cycles while
//! producers append and it replays to the main server, then drained
//! ([`kill_9_during_ingest_and_replay_for_many_cycles`]); and, smaller, several pipelined
//! `AppendStream`s in flight when the daemon (no upstream) is killed, read back over the
//! socket afterwards: every acknowledged record is there with its sequence and bytes, and
//! each stream's stored requests are a prefix of what it sent, in increasing sequence
//! order ([`pipelined_streams_keep_their_order_across_kills`]).
//!
//! What is held against what is in [`super::checker`].

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use echopost_log::sim::SimRng;
use echopost_proto::v1::ReadRequest;

use super::checker::{Kill, Life, check_producers, verify};
use super::producers::{Kind, ProducerLog, join_producers, spawn_producers};
use super::records::make_record;
use super::sink::{Mode, TortureServer};
use super::{CALL_TIMEOUT, LIFE_HEADER};
use crate::support::daemon::{self, Area, Daemon};

/// Seed used when `ECHOPOST_TORTURE_SEED` is not set.
pub const DEFAULT_SEED: u64 = 20_240_917;
/// Kill cycles when `ECHOPOST_TORTURE_CYCLES` is not set (about 25 s in a debug build
/// on 2 cores).
pub const DEFAULT_CYCLES: u64 = 64;
/// Longest the final run may take to drain everything and exit.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(240);
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
// What the seed decides for one daemon life
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

// ---------------------------------------------------------------------------------------
// The daemon
// ---------------------------------------------------------------------------------------

/// First sequences of the segment files in `dir`, ascending.
fn segments(dir: &Path) -> Vec<u64> {
    let mut v: Vec<u64> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| echopost_log::format::parse_segment_name(e.file_name().to_str()?))
                .collect()
        })
        .unwrap_or_default();
    v.sort_unstable();
    v
}

fn read_cursor(dir: &Path) -> u64 {
    echopost_log::format::read_cursor(&echopost_log::RealFs, dir)
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
// Killed for many cycles during ingest and replay
// ---------------------------------------------------------------------------------------

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
            cursor_before,
            cursor_after: read_cursor(&dir),
            kill: Some(Kill {
                at: killed_at,
                during_startup: plan.startup_kill,
                with_producers: !plan.producers.is_empty(),
            }),
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
        cursor_before,
        cursor_after: final_cursor,
        kill: None,
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
            ..ReadRequest::default()
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
