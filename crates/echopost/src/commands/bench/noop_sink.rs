//! A main server that accepts every replayed batch without looking at it.
//!
//! It is the upstream of `echopost bench` and of the drain benchmark: it implements
//! `echopost.v1.Sink` and the standard health service on loopback, counts the request
//! bytes without decoding them, and answers OK, so that a drain measurement measures
//! EchoPost rather than protobuf decoding on the receiving side. Its health starts as
//! NOT_SERVING, so a daemon pointed at it keeps its backlog until [`NoopSink::set_serving`].
//!
//! It lives with the bench because the daemon itself never uses it; it stays public so
//! that `benches/drain.rs` (and examples) can point a replayer at it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Buf;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic_health::ServingStatus;

/// Counts request bytes without decoding them; answers an empty `DeliverResponse`.
#[derive(Clone, Copy, Default)]
struct CountingCodec;

impl Codec for CountingCodec {
    type Encode = ();
    type Decode = usize;
    type Encoder = CountingCodec;
    type Decoder = CountingCodec;
    fn encoder(&mut self) -> Self::Encoder {
        CountingCodec
    }
    fn decoder(&mut self) -> Self::Decoder {
        CountingCodec
    }
}

impl Encoder for CountingCodec {
    type Item = ();
    type Error = tonic::Status;
    fn encode(&mut self, _: (), _: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        // An empty DeliverResponse encodes to zero bytes.
        Ok(())
    }
}

impl Decoder for CountingCodec {
    type Item = usize;
    type Error = tonic::Status;

    fn buffer_settings(&self) -> BufferSettings {
        // Room for a whole 4 MiB request from the start, rather than doubling up to it.
        BufferSettings::new((4 << 20) + (64 << 10), 32 << 10)
    }

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<usize>, Self::Error> {
        let n = src.remaining();
        src.advance(n);
        Ok(Some(n))
    }
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send + 'static>>;

#[derive(Debug, Default)]
struct Counters {
    calls: AtomicU64,
    bytes: AtomicU64,
    first_call: OnceLock<Instant>,
}

/// `echopost.v1.Sink` accepting every batch, after the latency.
#[derive(Clone)]
struct SinkService(Arc<Counters>, Duration);

impl tonic::server::NamedService for SinkService {
    const NAME: &'static str = "echopost.v1.Sink";
}

impl tower::Service<http::Request<tonic::body::Body>> for SinkService {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        struct Deliver(Arc<Counters>, Duration);
        impl tonic::server::UnaryService<usize> for Deliver {
            type Response = ();
            type Future = BoxFuture<Result<tonic::Response<()>, tonic::Status>>;
            fn call(&mut self, request: tonic::Request<usize>) -> Self::Future {
                let _ = self.0.first_call.set(Instant::now());
                self.0.calls.fetch_add(1, Ordering::Relaxed);
                self.0
                    .bytes
                    .fetch_add(*request.get_ref() as u64, Ordering::Relaxed);
                let latency = self.1;
                Box::pin(async move {
                    if !latency.is_zero() {
                        tokio::time::sleep(latency).await;
                    }
                    Ok(tonic::Response::new(()))
                })
            }
        }
        let counters = Arc::clone(&self.0);
        let latency = self.1;
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(CountingCodec);
            Ok(grpc.unary(Deliver(counters, latency), req).await)
        })
    }
}

/// A running no-op main server. Dropping it stops the server.
pub struct NoopSink {
    addr: SocketAddr,
    counters: Arc<Counters>,
    health: tonic_health::server::HealthReporter,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl NoopSink {
    /// Starts the sink on `127.0.0.1:0`, health NOT_SERVING. `stream_window` sets the
    /// HTTP/2 stream window (the connection window is twice it); `None` keeps hyper's.
    /// Each `Deliver` is answered `latency` after it was received (a main server that
    /// far away; `--sink-latency`).
    pub async fn start(stream_window: Option<u32>, latency: Duration) -> std::io::Result<NoopSink> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_service_status("", ServingStatus::NotServing)
            .await;
        let counters = Arc::new(Counters::default());
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tonic::transport::Server::builder()
            // Room for a whole window of delayed calls on the daemon's one connection.
            .max_concurrent_streams(Some(4096))
            .initial_stream_window_size(stream_window)
            .initial_connection_window_size(stream_window.map(|w| w.saturating_mul(2)))
            .add_service(health_service)
            .add_service(SinkService(Arc::clone(&counters), latency))
            .serve_with_incoming_shutdown(
                // Without TCP_NODELAY every answer waits for the delayed-ACK timer.
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                async {
                    let _ = stop_rx.await;
                },
            );
        tokio::spawn(async move {
            if let Err(e) = server.await {
                tracing::error!(error = %e, "the no-op sink failed");
            }
        });
        Ok(NoopSink {
            addr,
            counters,
            health,
            _stop: stop_tx,
        })
    }

    /// The `--upstream` URL of the sink.
    pub fn url(&self) -> String {
        format!("grpc://{}", self.addr)
    }

    /// Makes the health check answer SERVING (replay may start) or NOT_SERVING.
    pub async fn set_serving(&self, serving: bool) {
        let s = if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        self.health.set_service_status("", s).await;
    }

    /// When the first batch arrived.
    pub fn first_call(&self) -> Option<Instant> {
        self.counters.first_call.get().copied()
    }

    /// Batches received.
    pub fn calls(&self) -> u64 {
        self.counters.calls.load(Ordering::Relaxed)
    }

    /// Request bytes received (gRPC message bodies).
    pub fn wire_bytes(&self) -> u64 {
        self.counters.bytes.load(Ordering::Relaxed)
    }
}
