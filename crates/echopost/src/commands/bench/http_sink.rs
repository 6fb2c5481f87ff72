//! A verbatim-HTTP main server that accepts every replayed request without looking at it:
//! the upstream of `echopost bench --sink http`, where the daemon replays each record as
//! the HTTP request it stands for (`--sink forward`).
//!
//! It is hyper's HTTP/1.1 server on loopback with keep-alive (the daemon's client pools
//! one connection per request in flight), `GET /healthz` answering 503 until
//! [`HttpSink::set_serving`] and 200 after, and every other request read to its end,
//! counted, held for `--sink-latency` (a main server that far away) and answered
//! `204 No Content`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

/// The route the bench's records carry in `--sink http` mode.
pub const ROUTE: &str = "POST /bench";

#[derive(Debug, Default)]
struct Counters {
    serving: AtomicBool,
    calls: AtomicU64,
    bytes: AtomicU64,
    first_call: OnceLock<Instant>,
}

/// A running HTTP sink. Dropping it stops accepting connections.
pub struct HttpSink {
    addr: SocketAddr,
    counters: Arc<Counters>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl HttpSink {
    /// Starts the sink on `127.0.0.1:0`, unhealthy, answering each request after
    /// `latency`.
    pub async fn start(latency: Duration) -> std::io::Result<HttpSink> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let counters = Arc::new(Counters::default());
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let shared = Arc::clone(&counters);
        tokio::spawn(async move {
            loop {
                let (tcp, _) = tokio::select! {
                    r = listener.accept() => match r {
                        Ok(c) => c,
                        Err(e) => {
                            tracing::warn!(error = %e, "the HTTP sink could not accept a connection");
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    },
                    _ = &mut stop_rx => return,
                };
                // Without TCP_NODELAY every answer waits for the delayed-ACK timer.
                let _ = tcp.set_nodelay(true);
                let counters = Arc::clone(&shared);
                tokio::spawn(async move {
                    let svc = service_fn(move |req| answer(Arc::clone(&counters), latency, req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        Ok(HttpSink {
            addr,
            counters,
            _stop: stop_tx,
        })
    }

    /// The `--upstream` URL of the sink.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Makes `/healthz` answer 200 (replay may start) or 503.
    pub fn set_serving(&self, serving: bool) {
        self.counters.serving.store(serving, Ordering::SeqCst);
    }

    /// When the first replayed request arrived.
    pub fn first_call(&self) -> Option<Instant> {
        self.counters.first_call.get().copied()
    }

    /// Replayed requests received.
    pub fn calls(&self) -> u64 {
        self.counters.calls.load(Ordering::Relaxed)
    }

    /// Request body bytes received.
    pub fn wire_bytes(&self) -> u64 {
        self.counters.bytes.load(Ordering::Relaxed)
    }
}

async fn answer(
    counters: Arc<Counters>,
    latency: Duration,
    req: http::Request<Incoming>,
) -> Result<http::Response<Empty<Bytes>>, Infallible> {
    let status = if req.uri().path() == "/healthz" {
        if counters.serving.load(Ordering::SeqCst) {
            http::StatusCode::OK
        } else {
            http::StatusCode::SERVICE_UNAVAILABLE
        }
    } else {
        let _ = counters.first_call.set(Instant::now());
        let n = match req.into_body().collect().await {
            Ok(b) => b.to_bytes().len() as u64,
            Err(_) => 0,
        };
        counters.calls.fetch_add(1, Ordering::Relaxed);
        counters.bytes.fetch_add(n, Ordering::Relaxed);
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        http::StatusCode::NO_CONTENT
    };
    let mut resp = http::Response::new(Empty::new());
    *resp.status_mut() = status;
    Ok(resp)
}
