//! Real main servers on loopback for the replay tests.
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

use std::collections::{HashSet, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use echopost_proto::v1::sink_server::{Sink, SinkServer};
use echopost_proto::v1::{DeliverRequest, DeliverResponse, Record};
use http_body_util::{BodyExt, Full};
use prost::Message;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};
use tonic::Code;
use tonic_health::server::HealthReporter;

use super::replay::WAIT;

// ---------------------------------------------------------------------------------------
// TLS material
// ---------------------------------------------------------------------------------------

/// A test CA (its PEM written to `ca_file`) and a server certificate it signed for
/// `localhost` and `127.0.0.1`.
pub struct Pki {
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
