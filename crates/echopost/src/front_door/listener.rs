//! The socket with `--accept-http`: each connection's first bytes tell HTTP/2 from
//! HTTP/1.1.
//!
//! An accept task reads, on a task of its own per connection, until the bytes either are
//! the whole HTTP/2 connection preface (RFC 9113 §3.4) or stop matching it. HTTP/2
//! connections go, with the bytes read given back ([`Rewind`]), to the gRPC server as
//! before (tonic, behind [`super::layer`]); every other connection is served by hyper's
//! HTTP/1.1 server, whose requests go to [`super::http`] (hyper handles chunked bodies,
//! `Expect: 100-continue` and keep-alive). A connection that sends too little to tell
//! within [`PREFACE_TIMEOUT`] is closed, as the HTTP/2 layer does.
//!
//! Without `--accept-http` none of this runs: every connection goes straight to the gRPC
//! server ([`crate::daemon::socket::incoming`]).

use std::convert::Infallible;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;

use super::capture::Capture;
use crate::daemon::h2::PREFACE_TIMEOUT;
use crate::daemon::h2::inbound::PREFACE;
use crate::daemon::peer::{PeerInfo, PeerPolicy};
use crate::daemon::rewind::Rewind;
use crate::daemon::socket::{PeerStream, peer_of};

/// How long an HTTP/1.1 connection may take to finish its requests once the daemon stops.
pub const HTTP1_GRACE: Duration = Duration::from_secs(5);

/// Accepts connections on `listener` until `shutdown` turns true or the gRPC server stops
/// reading: HTTP/2 ones come out of the returned stream (for tonic), HTTP/1.1 ones are
/// served here. Refused peers are logged once per connection; their requests are answered
/// by the peer check of each protocol.
pub fn incoming(
    listener: tokio::net::UnixListener,
    policy: Arc<PeerPolicy>,
    capture: Arc<Capture>,
    shutdown: watch::Receiver<bool>,
) -> impl Stream<Item = io::Result<PeerStream>> + Send + 'static {
    let (tx, rx) = mpsc::channel::<io::Result<PeerStream>>(64);
    let mut stop = shutdown.clone();
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                r = listener.accept() => r,
                _ = tx.closed() => break,
                _ = stopped(&mut stop) => break,
            };
            match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(classify(
                        stream,
                        tx.clone(),
                        Arc::clone(&policy),
                        Arc::clone(&capture),
                        shutdown.clone(),
                    ));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// Resolves once the daemon stops (the watch turns true or its sender is gone).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// What a connection's first bytes say.
#[derive(Debug, PartialEq, Eq)]
enum Protocol {
    Http2,
    Http1,
}

/// The protocol `seen` (the first bytes) shows, or `None` while it could still be either.
fn protocol_of(seen: &[u8]) -> Option<Protocol> {
    let n = seen.len().min(PREFACE.len());
    if seen[..n] != PREFACE[..n] {
        Some(Protocol::Http1)
    } else if n == PREFACE.len() {
        Some(Protocol::Http2)
    } else {
        None
    }
}

async fn classify(
    mut stream: tokio::net::UnixStream,
    h2: mpsc::Sender<io::Result<PeerStream>>,
    policy: Arc<PeerPolicy>,
    capture: Arc<Capture>,
    shutdown: watch::Receiver<bool>,
) {
    let (info, peer) = peer_of(&stream);
    if let Err(why) = policy.check(info.uid) {
        tracing::warn!(peer_uid = ?info.uid, "refusing a connection: {why}");
    }
    let mut seen = BytesMut::with_capacity(PREFACE.len());
    let sniffed = tokio::time::timeout(PREFACE_TIMEOUT, async {
        loop {
            if let Some(p) = protocol_of(&seen) {
                return Ok(Some(p));
            }
            if stream.read_buf(&mut seen).await? == 0 {
                return Ok::<_, io::Error>(None);
            }
        }
    })
    .await;
    let protocol = match sniffed {
        Ok(Ok(Some(p))) => p,
        Ok(Ok(None)) => return,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "a connection failed before it said anything");
            return;
        }
        Err(_) => {
            tracing::warn!(%peer, "closing a connection that sent no request within {} s", PREFACE_TIMEOUT.as_secs());
            return;
        }
    };
    match protocol {
        Protocol::Http2 => {
            let _ = h2
                .send(Ok(PeerStream::with_prefix(
                    stream,
                    seen.freeze(),
                    info,
                    peer,
                )))
                .await;
        }
        Protocol::Http1 => {
            serve_http1(Rewind::new(seen.freeze(), stream), info, capture, shutdown).await;
        }
    }
}

/// Serves one HTTP/1.1 connection with hyper until it closes, or, once the daemon stops,
/// lets it finish what it is doing within [`HTTP1_GRACE`].
async fn serve_http1(
    stream: Rewind<tokio::net::UnixStream>,
    info: PeerInfo,
    capture: Arc<Capture>,
    mut shutdown: watch::Receiver<bool>,
) {
    let svc = hyper::service::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(info);
        let capture = Arc::clone(&capture);
        async move { Ok::<_, Infallible>(super::http::capture_request(&capture, req).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(PREFACE_TIMEOUT)
        .serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    tokio::select! {
        res = conn.as_mut() => {
            if let Err(e) = res {
                tracing::debug!(error = %e, "an HTTP/1.1 connection ended with an error");
            }
        }
        _ = stopped(&mut shutdown) => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(HTTP1_GRACE, conn).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_bytes_tell_http2_from_http1() {
        assert_eq!(protocol_of(b""), None);
        assert_eq!(protocol_of(b"PRI * HTTP/2"), None);
        assert_eq!(protocol_of(PREFACE), Some(Protocol::Http2));
        let mut more = PREFACE.to_vec();
        more.extend_from_slice(b"\x00\x00\x12\x04");
        assert_eq!(protocol_of(&more), Some(Protocol::Http2));
        assert_eq!(
            protocol_of(b"POST /v1/x HTTP/1.1\r\n"),
            Some(Protocol::Http1)
        );
        assert_eq!(protocol_of(b"G"), Some(Protocol::Http1));
        assert_eq!(protocol_of(b"PRI * HTTP/1.1"), Some(Protocol::Http1));
    }
}
