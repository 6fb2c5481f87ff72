//! Producers: clients that append over the daemon's socket until it is killed, logging
//! every request they sent and what it was acknowledged as.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use echopost_log::sim::SimRng;
use echopost_proto::v1::AppendRequest;
use echopost_proto::v1::echo_post_client::EchoPostClient;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use super::CALL_TIMEOUT;
use super::records::make_record;
use crate::support::daemon::connect;

/// One request a producer sent.
#[derive(Debug, Clone)]
pub struct Sent {
    pub ids: Vec<String>,
    /// `(first_sequence, last_sequence)` if the daemon acknowledged it.
    pub ack: Option<(u64, u64)>,
}

/// How a producer appends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Unary `Append`s of 1 to 20 records, one at a time.
    Unary,
    /// One `AppendStream`, pipelined.
    Stream,
    /// Unary `Append`s of 1 to 4 records of 64 to 512 KiB (so segments fill and roll).
    Bulk,
}

/// Everything one producer sent, in order.
#[derive(Debug)]
pub struct ProducerLog {
    pub cycle: u64,
    pub producer: u64,
    pub kind: Kind,
    pub requests: Vec<Sent>,
    /// The error that ended it, and when it was seen.
    pub ended_by: Option<(Instant, String)>,
    /// A response arrived that matched no outstanding request.
    pub protocol_error: Option<String>,
}

impl ProducerLog {
    pub fn new(cycle: u64, producer: u64, kind: Kind) -> Self {
        ProducerLog {
            cycle,
            producer,
            kind,
            requests: Vec::new(),
            ended_by: None,
            protocol_error: None,
        }
    }

    pub fn name(&self) -> String {
        format!(
            "producer {} of cycle {} ({:?})",
            self.producer, self.cycle, self.kind
        )
    }

    pub fn next_request(&mut self, n: &mut u64, k: u64) -> AppendRequest {
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
            ..AppendRequest::default()
        };
        self.requests.push(Sent { ids, ack: None });
        req
    }

    pub fn ack(&mut self, idx: usize, first: u64, last: u64) {
        self.requests[idx].ack = Some((first, last));
    }
}

/// Pause between requests: none for 40% of the producers (as fast as the daemon
/// allows), 0.5 to 5 ms for the others, so that the backlog sometimes drains and the
/// replayer goes idle and wakes up again.
pub fn pace(rng: &mut SimRng) -> Duration {
    if rng.chance(40) {
        Duration::ZERO
    } else {
        Duration::from_micros(500 + rng.below(4501))
    }
}

pub async fn client(socket: &Path) -> Result<EchoPostClient<Channel>, String> {
    match tokio::time::timeout(CALL_TIMEOUT, connect(socket)).await {
        Ok(Ok(ch)) => Ok(EchoPostClient::new(ch)),
        Ok(Err(e)) => Err(format!("connect: {e}")),
        Err(_) => Err(format!("connect did not finish within {CALL_TIMEOUT:?}")),
    }
}

/// Unary `Append`s (1 to 20 records, or 1 to 4 bulk records), one after the other,
/// until one fails.
pub async fn unary_producer(
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
pub async fn stream_producer(socket: PathBuf, cycle: u64, producer: u64, seed: u64) -> ProducerLog {
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

pub fn spawn_producers(
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

pub async fn join_producers(handles: Vec<JoinHandle<ProducerLog>>) -> Vec<ProducerLog> {
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
