//! The fallback path: applications that find no daemon start one, however many of them do
//! it at once, and start it again after it exited by itself.
//!
//! * Across processes: several `echopost send --start-daemon` at once → exactly one
//!   daemon got the directory, every record of every sender is stored, in each sender's
//!   order.
//! * Restart after exit: a daemon that drained its backlog to the main server and
//!   lingered out is started again by the next sender; sequences continue, nothing is
//!   lost, both runs delivered in order.
//! * In process, through `echopost_client::Fallback` itself: concurrent helpers, restart
//!   after exit, and a start that loses the lock to a daemon on its way out.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use echopost_client::{Client, DaemonSettings, Fallback, Record};
use echopost_proto::v1::sink_server::{Sink, SinkServer};
use echopost_proto::v1::{DeliverRequest, DeliverResponse};

use crate::support::daemon::{
    Area, ForeignDaemon, connect, daemons_that_ran, echopost_async, read_all, session_logs,
    wait_gone,
};

/// `(sequence, payload)` of a delivered record.
type Delivered = (u64, Vec<u8>);

/// A main server that records what it is delivered (and is always healthy).
#[derive(Clone, Default)]
struct Recorder {
    got: Arc<Mutex<Vec<Delivered>>>,
}

#[tonic::async_trait]
impl Sink for Recorder {
    async fn deliver(
        &self,
        request: tonic::Request<DeliverRequest>,
    ) -> Result<tonic::Response<DeliverResponse>, tonic::Status> {
        let mut got = self.got.lock().unwrap();
        for r in request.into_inner().records {
            got.push((r.sequence, r.record.unwrap_or_default().payload));
        }
        Ok(tonic::Response::new(DeliverResponse {}))
    }
}

impl Recorder {
    /// Serves on 127.0.0.1; returns the recorder and its `grpc://` URL.
    async fn start() -> (Recorder, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let rec = Recorder::default();
        let (_health, health_service) = tonic_health::server::health_reporter();
        let server = tonic::transport::Server::builder()
            .add_service(health_service)
            .add_service(SinkServer::new(rec.clone()))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener));
        tokio::spawn(server);
        (rec, format!("grpc://{addr}"))
    }

    fn payloads(&self) -> Vec<Delivered> {
        self.got.lock().unwrap().clone()
    }

    async fn wait_for(&self, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.got.lock().unwrap().len() < n {
            assert!(
                Instant::now() < deadline,
                "only {} of {n} records delivered",
                self.got.lock().unwrap().len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// The daemon answering on `socket`, as a handle that stops it when dropped.
async fn daemon_on(socket: &std::path::Path) -> (Client, ForeignDaemon) {
    let c = Client::connect(socket).await.expect("a daemon answers");
    let pid = c.status().await.unwrap().pid as i32;
    (c, ForeignDaemon { pid })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_senders_start_exactly_one_daemon_and_lose_nothing() {
    const SENDERS: usize = 6;
    const LINES: usize = 40;
    let area = Area::new();
    let dir = area.dir().display().to_string();
    let tasks: Vec<_> = (0..SENDERS)
        .map(|i| {
            let dir = dir.clone();
            let input: String = (0..LINES).map(|j| format!("p{i}-line-{j}\n")).collect();
            tokio::spawn(async move {
                let stream = format!("p{i}");
                echopost_async(
                    &[
                        "send",
                        "--start-daemon",
                        "--dir",
                        &dir,
                        "--stream",
                        &stream,
                        "--batch",
                        "5",
                        "--json",
                        "--",
                        "--linger",
                        "1h",
                    ],
                    Some(input.as_bytes()),
                )
                .await
            })
        })
        .collect();
    let mut stored = 0;
    for t in tasks {
        let out = t.await.unwrap().expect_code(0);
        let j = out.json();
        assert_eq!(j["records"], LINES as u64, "{}", out.stdout);
        assert_eq!(j["appends"], (LINES / 5) as u64);
        stored += LINES;
    }

    let (client, daemon) = daemon_on(&area.socket()).await;
    assert_eq!(
        daemons_that_ran(&area.dir()),
        1,
        "exactly one daemon may own the directory; session logs:\n{}",
        session_logs(&area.dir())
    );
    let st = client.status().await.unwrap();
    assert_eq!(st.next_sequence, stored as u64 + 1);
    assert_eq!(st.backlog_records, stored as u64);

    let mut raw = echopost_proto::v1::echo_post_client::EchoPostClient::new(
        connect(&area.socket()).await.unwrap(),
    );
    let (records, _) = read_all(&mut raw, 1, 0).await;
    assert_eq!(records.len(), stored);
    for i in 0..SENDERS {
        let stream = format!("p{i}");
        let mine: Vec<(u64, String)> = records
            .iter()
            .filter(|s| s.record.as_ref().unwrap().stream == stream)
            .map(|s| {
                (
                    s.sequence,
                    String::from_utf8(s.record.as_ref().unwrap().payload.clone()).unwrap(),
                )
            })
            .collect();
        let expected: Vec<String> = (0..LINES).map(|j| format!("p{i}-line-{j}")).collect();
        assert_eq!(
            mine.iter().map(|m| m.1.clone()).collect::<Vec<_>>(),
            expected,
            "sender {i}'s records, in its order"
        );
        assert!(mine.windows(2).all(|w| w[0].0 < w[1].0));
    }
    daemon.stop(Duration::from_secs(15)).await;
    wait_gone(&area.socket(), Duration::from_secs(15)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_that_exited_after_draining_is_started_again() {
    let area = Area::new();
    let (sink, url) = Recorder::start().await;
    let dir = area.dir().display().to_string();
    let send = |input: &'static [u8]| {
        let dir = dir.clone();
        let url = url.clone();
        async move {
            echopost_async(
                &[
                    "send",
                    "--start-daemon",
                    "--dir",
                    &dir,
                    "--json",
                    "--",
                    "--upstream",
                    &url,
                    "--linger",
                    "200ms",
                ],
                Some(input),
            )
            .await
            .expect_code(0)
            .json()
        }
    };

    let first = send(b"a\nb\n").await;
    assert_eq!(first["ranges"], serde_json::json!([[1, 2]]));
    sink.wait_for(2, Duration::from_secs(20)).await;
    // Delivered, acknowledged, lingered: the daemon exits by itself and removes its socket.
    wait_gone(&area.socket(), Duration::from_secs(20)).await;

    // Right away (the old daemon may still be releasing its lock), the next sender.
    let second = send(b"c\nd\n").await;
    assert_eq!(
        second["ranges"],
        serde_json::json!([[3, 4]]),
        "sequences continue in the same log"
    );
    sink.wait_for(4, Duration::from_secs(20)).await;
    wait_gone(&area.socket(), Duration::from_secs(20)).await;

    let got = sink.payloads();
    assert_eq!(
        got,
        vec![
            (1, b"a".to_vec()),
            (2, b"b".to_vec()),
            (3, b"c".to_vec()),
            (4, b"d".to_vec()),
        ]
    );
    assert_eq!(
        daemons_that_ran(&area.dir()),
        2,
        "{}",
        session_logs(&area.dir())
    );
    assert!(
        session_logs(&area.dir()).contains("linger"),
        "the first daemon exited by linger"
    );
}

fn settings(area: &Area, upstream: &str, linger: &str) -> DaemonSettings {
    let mut s = DaemonSettings::new(area.dir());
    s.binary = env!("CARGO_BIN_EXE_echopost").into();
    s.upstream = Some(upstream.to_owned());
    s.extra_args = vec!["--linger".into(), linger.into()];
    s
}

fn record(payload: String) -> Record {
    Record {
        payload: payload.into_bytes(),
        ..Record::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallback_helpers_share_one_daemon_and_restart_it_after_it_exited() {
    let area = Area::new();
    let (sink, url) = Recorder::start().await;
    // Eight independent helpers (as eight application instances would have), at once.
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let f = Fallback::new(settings(&area, &url, "300ms"));
            tokio::spawn(async move {
                let mut seqs = Vec::new();
                for j in 0..10 {
                    let a = f.append(vec![record(format!("{i}-{j}"))]).await.unwrap();
                    seqs.push(a.first_sequence);
                }
                seqs
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        let seqs = t.await.unwrap();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]));
        all.extend(seqs);
    }
    all.sort_unstable();
    assert_eq!(all, (1..=80).collect::<Vec<u64>>(), "gapless, none lost");
    assert_eq!(daemons_that_ran(&area.dir()), 1);

    sink.wait_for(80, Duration::from_secs(20)).await;
    wait_gone(&area.socket(), Duration::from_secs(20)).await;

    let f = Fallback::new(settings(&area, &url, "300ms"));
    let a = f.append(vec![record("after exit".into())]).await.unwrap();
    assert_eq!(a.first_sequence, 81);
    assert_eq!(daemons_that_ran(&area.dir()), 2);
    sink.wait_for(81, Duration::from_secs(20)).await;
    let got = sink.payloads();
    assert_eq!(
        got.iter().map(|g| g.0).collect::<Vec<_>>(),
        (1..=81).collect::<Vec<u64>>(),
        "delivered in sequence order"
    );
    wait_gone(&area.socket(), Duration::from_secs(20)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_that_loses_the_lock_to_a_leaving_daemon_starts_again() {
    // The lock is held by "a daemon on its way out" (here: the engine, opened by the
    // test) with no socket. The helper's daemon exits 3; once the lock is free the helper
    // must start another rather than wait for a socket nobody will open.
    let area = Area::new();
    std::fs::create_dir_all(area.dir()).unwrap();
    let held = echopost_log::Log::open(area.dir(), echopost_log::LogOptions::default()).unwrap();
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(800));
        drop(held);
    });
    let mut s = DaemonSettings::new(area.dir());
    s.binary = env!("CARGO_BIN_EXE_echopost").into();
    s.extra_args = vec!["--linger".into(), "1h".into()];
    let f = Fallback::new(s);
    let started = Instant::now();
    let a = f.append(vec![record("x".into())]).await.unwrap();
    assert_eq!(a.first_sequence, 1);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "took {:?}: the helper waited for the start timeout",
        started.elapsed()
    );
    release.join().unwrap();
    let (_c, daemon) = daemon_on(&area.socket()).await;
    daemon.stop(Duration::from_secs(15)).await;
    wait_gone(&area.socket(), Duration::from_secs(15)).await;
}
