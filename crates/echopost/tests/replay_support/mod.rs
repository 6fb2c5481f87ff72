//! Real servers on loopback for the replay tests, and helpers around the replayer.
//!
//! * [`GrpcServer`]: one tonic server with `grpc.health.v1.Health`, `echopost.v1.Sink`
//!   (the main server of `deliver` mode) and `shop.v1.Orders` (a plain application service
//!   that knows nothing about EchoPost, the target of `forward` mode), all with
//!   programmable failures. Optional TLS.
//! * [`HttpServer`]: a hyper HTTP/1.1 server with a `/healthz` endpoint and scripted
//!   answers (5xx, 429 + `Retry-After`, 422 for poison bodies). Optional TLS.
//! * [`Pki`]: a test CA and a server certificate for `localhost`/`127.0.0.1`, generated at
//!   test time with rcgen.
//!
//! Servers can be stopped and started again on the same port (the main server going
//! down and coming back). Every wait has a deadline so that no test can hang.

#![allow(dead_code)]

use std::collections::{HashSet, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use echopost::replay::{self, Progress, ReplayConfig, ReplayError, SinkKind};
use echopost_log::{Log, LogOptions};
use echopost_proto::v1::sink_server::{Sink, SinkServer};
use echopost_proto::v1::{DeliverRequest, DeliverResponse, Record};
use http_body_util::{BodyExt, Full};
use prost::Message;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};
use tonic::Code;
use tonic_health::server::HealthReporter;

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
pub fn config(upstream: &str, dir: &Path) -> ReplayConfig {
    let sink = SinkKind::default_for(upstream).unwrap();
    ReplayConfig {
        upstream: upstream.to_string(),
        sink,
        health_service: String::new(),
        health_url: None,
        healthy_after: 1,
        batch_records: 1000,
        batch_bytes: 4 << 20,
        upstream_ca: None,
        upstream_headers: Vec::new(),
        source_id: "test-source".into(),
        dir: dir.to_path_buf(),
        request_timeout: Duration::from_secs(3),
    }
}

/// A running replayer.
pub struct Replay {
    pub progress: Arc<Progress>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<Result<(), ReplayError>>,
}

pub fn spawn_replay(log: &Arc<Log>, cfg: ReplayConfig) -> Replay {
    let progress = Arc::new(Progress::default());
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(replay::run(Arc::clone(log), cfg, Arc::clone(&progress), rx));
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
    cfg: ReplayConfig,
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

// ---------------------------------------------------------------------------------------
// TLS material
// ---------------------------------------------------------------------------------------

/// A test CA (its PEM written to `ca_file`) and a server certificate it signed for
/// `localhost` and `127.0.0.1`.
pub struct Pki {
    pub ca_pem: String,
    pub ca_file: PathBuf,
    pub cert_pem: String,
    pub key_pem: String,
    cert_der: Vec<u8>,
    key_der: Vec<u8>,
    _dir: tempfile::TempDir,
}

impl Pki {
    pub fn new() -> Pki {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
            KeyUsagePurpose,
        };
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "EchoPost test CA");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        let cert = params.signed_by(&key, &ca).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.pem()).unwrap();
        Pki {
            ca_pem: ca.pem(),
            ca_file,
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().to_vec(),
            key_der: key.serialize_der(),
            _dir: dir,
        }
    }

    fn rustls_server_config(&self, alpn: &[&[u8]]) -> rustls::ServerConfig {
        use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(self.cert_der.clone())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone())),
            )
            .unwrap();
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        cfg
    }
}

// ---------------------------------------------------------------------------------------
// The gRPC main server: Health + Sink + a plain application service
// ---------------------------------------------------------------------------------------

/// An application request message of the plain service (`shop.v1.Orders/Create`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct CreateOrder {
    #[prost(string, tag = "1")]
    pub order_id: String,
    #[prost(uint32, tag = "2")]
    pub quantity: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CreateOrderReply {
    #[prost(string, tag = "1")]
    pub status: String,
}

/// A forwarded call as the plain service saw it.
#[derive(Debug, Clone)]
pub struct ForwardedCall {
    pub path: String,
    pub metadata: http::HeaderMap,
    pub order: CreateOrder,
}

/// What the gRPC server received and how it behaves; shared across restarts.
#[derive(Default)]
pub struct GrpcState {
    /// Accepted `Deliver` batches: `(source, sequences, encoded request size)`.
    pub batches: Mutex<Vec<(String, Vec<u64>, usize)>>,
    /// Accepted records, in arrival order (re-deliveries included).
    pub delivered: Mutex<Vec<(u64, Record)>>,
    /// `Deliver` calls, accepted or not.
    pub deliver_calls: AtomicU64,
    /// Metadata of the last `Deliver` call.
    pub last_metadata: Mutex<http::HeaderMap>,
    /// A batch containing a record with one of these ids is rejected (INVALID_ARGUMENT).
    pub poison_ids: Mutex<HashSet<String>>,
    /// The next calls (Deliver and Create) fail with these codes, accepting nothing.
    pub script: Mutex<VecDeque<Code>>,
    /// When set, calls without `authorization: <this>` fail with UNAUTHENTICATED.
    pub require_auth: Mutex<Option<String>>,
    /// Time taken by each Deliver (to hold a batch in flight).
    pub deliver_delay: Mutex<Duration>,
    /// Accepted forwarded calls, in arrival order.
    pub forwarded: Mutex<Vec<ForwardedCall>>,
    /// Orders with these ids are rejected (INVALID_ARGUMENT).
    pub poison_orders: Mutex<HashSet<String>>,
}

impl GrpcState {
    pub fn delivered_seqs(&self) -> Vec<u64> {
        self.delivered
            .lock()
            .unwrap()
            .iter()
            .map(|(s, _)| *s)
            .collect()
    }

    fn check_common(&self, md: &tonic::metadata::MetadataMap) -> Result<(), tonic::Status> {
        if let Some(code) = self.script.lock().unwrap().pop_front() {
            return Err(tonic::Status::new(code, "scripted failure"));
        }
        if let Some(want) = self.require_auth.lock().unwrap().as_ref() {
            let got = md.get("authorization").and_then(|v| v.to_str().ok());
            if got != Some(want.as_str()) {
                return Err(tonic::Status::unauthenticated("bad credentials"));
            }
        }
        Ok(())
    }
}

struct SinkImpl(Arc<GrpcState>);

#[tonic::async_trait]
impl Sink for SinkImpl {
    async fn deliver(
        &self,
        request: tonic::Request<DeliverRequest>,
    ) -> Result<tonic::Response<DeliverResponse>, tonic::Status> {
        let st = &self.0;
        st.deliver_calls.fetch_add(1, Ordering::SeqCst);
        *st.last_metadata.lock().unwrap() = request.metadata().clone().into_headers();
        let delay = *st.deliver_delay.lock().unwrap();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        st.check_common(request.metadata())?;
        let req = request.into_inner();
        let size = req.encoded_len();
        {
            let poison = st.poison_ids.lock().unwrap();
            if let Some(bad) = req
                .records
                .iter()
                .find(|r| r.record.as_ref().is_some_and(|r| poison.contains(&r.id)))
            {
                return Err(tonic::Status::invalid_argument(format!(
                    "record {} is malformed",
                    bad.sequence
                )));
            }
        }
        let seqs: Vec<u64> = req.records.iter().map(|r| r.sequence).collect();
        {
            let mut d = st.delivered.lock().unwrap();
            for r in req.records {
                d.push((r.sequence, r.record.unwrap_or_default()));
            }
        }
        st.batches.lock().unwrap().push((req.source, seqs, size));
        Ok(tonic::Response::new(DeliverResponse {}))
    }
}

/// `shop.v1.Orders`, written the way tonic's generated code is, without any EchoPost type.
#[derive(Clone)]
struct OrdersService(Arc<GrpcState>);

impl tonic::server::NamedService for OrdersService {
    const NAME: &'static str = "shop.v1.Orders";
}

type BoxFut<T> = Pin<Box<dyn std::future::Future<Output = T> + Send + 'static>>;

impl tower::Service<http::Request<tonic::body::Body>> for OrdersService {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFut<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        struct Create(Arc<GrpcState>, String);
        impl tonic::server::UnaryService<CreateOrder> for Create {
            type Response = CreateOrderReply;
            type Future = BoxFut<Result<tonic::Response<CreateOrderReply>, tonic::Status>>;
            fn call(&mut self, request: tonic::Request<CreateOrder>) -> Self::Future {
                let st = Arc::clone(&self.0);
                let path = self.1.clone();
                Box::pin(async move {
                    st.check_common(request.metadata())?;
                    let metadata = request.metadata().clone().into_headers();
                    let order = request.into_inner();
                    if st.poison_orders.lock().unwrap().contains(&order.order_id) {
                        return Err(tonic::Status::invalid_argument("unknown product"));
                    }
                    st.forwarded.lock().unwrap().push(ForwardedCall {
                        path,
                        metadata,
                        order,
                    });
                    Ok(tonic::Response::new(CreateOrderReply {
                        status: "created".into(),
                    }))
                })
            }
        }
        let st = Arc::clone(&self.0);
        Box::pin(async move {
            let path = req.uri().path().to_string();
            if path != "/shop.v1.Orders/Create" {
                return Ok(tonic::Status::unimplemented(path).into_http());
            }
            let codec = tonic_prost::ProstCodec::<CreateOrderReply, CreateOrder>::default();
            let mut grpc = tonic::server::Grpc::new(codec);
            Ok(grpc.unary(Create(st, path), req).await)
        })
    }
}

/// A running gRPC server.
pub struct GrpcServer {
    pub addr: SocketAddr,
    pub state: Arc<GrpcState>,
    pub health: HealthReporter,
    tls: bool,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl GrpcServer {
    /// Starts on `addr` (or a free loopback port), with TLS if `pki` is given.
    pub async fn start(state: Arc<GrpcState>, addr: Option<SocketAddr>, pki: Option<&Pki>) -> Self {
        let listener = bind(addr).await;
        let addr = listener.local_addr().unwrap();
        let (health, health_svc) = tonic_health::server::health_reporter();
        let mut builder = tonic::transport::Server::builder();
        if let Some(p) = pki {
            let identity = tonic::transport::Identity::from_pem(&p.cert_pem, &p.key_pem);
            builder = builder
                .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
                .unwrap();
        }
        let router = builder
            .add_service(health_svc)
            .add_service(SinkServer::new(SinkImpl(Arc::clone(&state))))
            .add_service(OrdersService(Arc::clone(&state)));
        let (tx, rx) = oneshot::channel::<()>();
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        let task = tokio::spawn(async move {
            let _ = router
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = rx.await;
                })
                .await;
        });
        GrpcServer {
            addr,
            state,
            health,
            tls: pki.is_some(),
            stop: Some(tx),
            task,
        }
    }

    /// `grpc://127.0.0.1:PORT` (or `grpcs://localhost:PORT` with TLS).
    pub fn url(&self) -> String {
        if self.tls {
            format!("grpcs://localhost:{}", self.addr.port())
        } else {
            format!("grpc://127.0.0.1:{}", self.addr.port())
        }
    }

    /// Sets the overall health (service "").
    pub async fn set_serving(&self, serving: bool) {
        use tonic_health::ServingStatus;
        let s = if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        self.health.set_service_status("", s).await;
    }

    /// Stops accepting and closes connections (in-flight calls are cut after 2 s).
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

async fn bind(addr: Option<SocketAddr>) -> TcpListener {
    let addr = addr.unwrap_or_else(|| "127.0.0.1:0".parse().unwrap());
    // The port was just released by a previous server; give the kernel a moment.
    let deadline = Instant::now() + WAIT;
    loop {
        match TcpListener::bind(addr).await {
            Ok(l) => return l,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("bind {addr}: {e}"),
        }
    }
}

/// A loopback port that nothing listens on (yet).
pub fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

// ---------------------------------------------------------------------------------------
// The HTTP main server
// ---------------------------------------------------------------------------------------

/// A request as the HTTP server saw it.
#[derive(Debug, Clone)]
pub struct HttpRequest {
    pub method: String,
    pub target: String,
    pub headers: http::HeaderMap,
    pub body: Bytes,
    pub status: u16,
    pub at: Instant,
}

/// What the HTTP server received and how it behaves; shared across restarts.
pub struct HttpState {
    /// Every non-health request, in arrival order, with the status it got.
    pub requests: Mutex<Vec<HttpRequest>>,
    /// Answers for the next requests: `(status, Retry-After)`.
    pub script: Mutex<VecDeque<(u16, Option<String>)>>,
    /// A body containing this string is rejected with 422.
    pub poison: Mutex<Option<String>>,
    /// `/healthz` answers 200 when true, 503 otherwise.
    pub healthy: AtomicBool,
    pub health_probes: AtomicU64,
}

impl Default for HttpState {
    fn default() -> Self {
        HttpState {
            requests: Mutex::new(Vec::new()),
            script: Mutex::new(VecDeque::new()),
            poison: Mutex::new(None),
            healthy: AtomicBool::new(true),
            health_probes: AtomicU64::new(0),
        }
    }
}

impl HttpState {
    /// Bodies of the requests answered 2xx, in arrival order.
    pub fn accepted_bodies(&self) -> Vec<String> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| (200..300).contains(&r.status))
            .map(|r| String::from_utf8_lossy(&r.body).into_owned())
            .collect()
    }

    fn answer(&self, req: HttpRequest) -> (u16, Option<String>) {
        let (status, retry_after) =
            match self.script.lock().unwrap().pop_front() {
                Some(s) => s,
                None => {
                    let poisoned =
                        self.poison.lock().unwrap().as_ref().is_some_and(|p| {
                            String::from_utf8_lossy(&req.body).contains(p.as_str())
                        });
                    if poisoned { (422, None) } else { (201, None) }
                }
            };
        self.requests
            .lock()
            .unwrap()
            .push(HttpRequest { status, ..req });
        (status, retry_after)
    }
}

pub struct HttpServer {
    pub addr: SocketAddr,
    pub state: Arc<HttpState>,
    tls: bool,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl HttpServer {
    pub async fn start(state: Arc<HttpState>, addr: Option<SocketAddr>, pki: Option<&Pki>) -> Self {
        let listener = bind(addr).await;
        let addr = listener.local_addr().unwrap();
        let acceptor = pki.map(|p| {
            tokio_rustls::TlsAcceptor::from(Arc::new(p.rustls_server_config(&[b"http/1.1"])))
        });
        let (tx, mut rx) = oneshot::channel::<()>();
        let st = Arc::clone(&state);
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let (tcp, _) = tokio::select! {
                    r = listener.accept() => match r { Ok(c) => c, Err(_) => continue },
                    _ = &mut rx => break,
                };
                let _ = tcp.set_nodelay(true);
                let st = Arc::clone(&st);
                let acceptor = acceptor.clone();
                conns.spawn(async move {
                    let svc = hyper::service::service_fn(move |req| handle(Arc::clone(&st), req));
                    let builder = hyper::server::conn::http1::Builder::new();
                    match acceptor {
                        Some(a) => {
                            if let Ok(tls) = a.accept(tcp).await {
                                let _ = builder
                                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                                    .await;
                            }
                        }
                        None => {
                            let _ = builder
                                .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                                .await;
                        }
                    }
                });
            }
            // Gone at once, like a crashed server: open connections are cut.
            conns.abort_all();
        });
        HttpServer {
            addr,
            state,
            tls: pki.is_some(),
            stop: Some(tx),
            task,
        }
    }

    pub fn url(&self) -> String {
        if self.tls {
            format!("https://localhost:{}", self.addr.port())
        } else {
            format!("http://127.0.0.1:{}", self.addr.port())
        }
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), &mut self.task).await;
        self.task.abort();
    }
}

async fn handle(
    st: Arc<HttpState>,
    req: http::Request<hyper::body::Incoming>,
) -> Result<http::Response<Full<Bytes>>, Infallible> {
    if req.uri().path() == "/healthz" {
        st.health_probes.fetch_add(1, Ordering::SeqCst);
        let status = if st.healthy.load(Ordering::SeqCst) {
            200
        } else {
            503
        };
        return Ok(http::Response::builder()
            .status(status)
            .body(Full::new(Bytes::from_static(b"ok")))
            .unwrap());
    }
    let method = req.method().to_string();
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let headers = req.headers().clone();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let (status, retry_after) = st.answer(HttpRequest {
        method,
        target,
        headers,
        body,
        status: 0,
        at: Instant::now(),
    });
    let mut resp = http::Response::builder().status(status);
    if let Some(ra) = retry_after {
        resp = resp.header("retry-after", ra);
    }
    let text = match status {
        422 => "unprocessable: poison",
        429 => "slow down",
        s if s >= 500 => "overloaded",
        _ => "created",
    };
    Ok(resp
        .body(Full::new(Bytes::from_static(text.as_bytes())))
        .unwrap())
}
