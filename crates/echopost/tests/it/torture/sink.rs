//! The main server: Health + Sink on loopback, logging every accepted record with its
//! life.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use echopost_log::sim::SimRng;
use echopost_proto::v1::sink_server::{Sink, SinkServer};
use echopost_proto::v1::{DeliverRequest, DeliverResponse};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic_health::server::HealthReporter;

use super::LIFE_HEADER;
use super::records::make_record;

/// One record as the main server accepted it. The bytes are compared with what was
/// appended when it arrives (every field derives from the id, see [`make_record`]), so
/// that the log stays small however much is delivered.
pub struct Arrival {
    /// The `x-torture-life` tag of the request (u64::MAX when missing or malformed).
    pub life: u64,
    pub source: Arc<str>,
    pub seq: u64,
    /// `None` when the `StoredRecord` came without its record.
    pub id: Option<String>,
    /// The record is exactly `make_record(id)`, byte for byte.
    pub exact: bool,
    pub payload_len: u64,
    pub at: Instant,
}

#[derive(Default)]
pub struct SinkState {
    /// Accepted records, in arrival order (re-deliveries included).
    pub arrivals: Mutex<Vec<Arrival>>,
    /// `Deliver` calls, accepted or not.
    pub calls: AtomicU64,
    /// `Deliver` calls failed with UNAVAILABLE by the script.
    pub refused: AtomicU64,
    /// Percentage of `Deliver` calls to refuse.
    pub fail_percent: AtomicU64,
    /// Delay before answering a `Deliver`, in microseconds.
    pub delay_us: AtomicU64,
    /// Draws for the refusals (seeded per cycle).
    pub rng: Mutex<Option<SimRng>>,
}

pub struct TortureSink(Arc<SinkState>);

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
pub enum Mode {
    /// NOT_SERVING all cycle: the daemon only ingests.
    Down,
    /// SERVING, every delivery accepted.
    Up,
    /// SERVING, but some `Deliver` calls fail with UNAVAILABLE.
    Flaky,
    /// NOT_SERVING, SERVING from half-way to the kill.
    Late,
}

pub struct TortureServer {
    pub addr: SocketAddr,
    pub state: Arc<SinkState>,
    pub health: HealthReporter,
    pub stop: Option<oneshot::Sender<()>>,
    pub task: JoinHandle<()>,
}

impl TortureServer {
    pub async fn start() -> TortureServer {
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

    pub fn url(&self) -> String {
        format!("grpc://127.0.0.1:{}", self.addr.port())
    }

    pub async fn set_serving(&self, serving: bool) {
        let s = if serving {
            tonic_health::ServingStatus::Serving
        } else {
            tonic_health::ServingStatus::NotServing
        };
        self.health.set_service_status("", s).await;
    }

    /// Health, refusals and delay for the next daemon life.
    pub async fn configure(&self, mode: Mode, fail_percent: u64, delay_us: u64, rng_seed: u64) {
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
    pub fn take_arrivals(&self) -> Vec<Arrival> {
        std::mem::take(&mut *self.state.arrivals.lock().unwrap())
    }

    pub async fn stop(mut self) {
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
