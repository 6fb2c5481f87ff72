//! Who may talk to the daemon.
//!
//! By default file permissions (socket `0600` in a `0700` directory) already keep other
//! users out on Linux, but macOS and the BSDs ignore permissions on socket files, a
//! directory given with `--socket` may be shared, and with `--allow-uid` naming another
//! user the socket is `0666` so that user can open it ([`crate::daemon::socket`]). So
//! this check is the gate: every connection carries the peer's user id, read from the
//! kernel when it is accepted, and every request on a connection from a user that is
//! neither the daemon's own nor named with `--allow-uid` is answered `PERMISSION_DENIED`
//! by [`PeerCheckLayer`], for every service on the socket (health and reflection
//! included).
//!
//! Refusing with a gRPC status rather than closing the connection tells the other user
//! *why*, instead of looking like a daemon that is down.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::Status;
use tower::{Layer, Service};

/// What is known about the other end of a connection; attached to each request by tonic
/// (as connection info) so the layer can check it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerInfo {
    /// The peer's user id, `None` if the kernel could not tell (refused).
    pub uid: Option<u32>,
}

/// The uid decision: our own uid and the `--allow-uid` list are accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerPolicy {
    own_uid: u32,
    allowed: Vec<u32>,
}

/// Why a peer is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerRefused {
    #[error(
        "permission denied: this echopost runs as uid {own} and does not accept uid {peer} (start it with --allow-uid {peer} to allow)"
    )]
    OtherUser { own: u32, peer: u32 },
    #[error("permission denied: the peer's user id could not be determined")]
    Unknown,
}

impl PeerPolicy {
    /// A policy accepting `own_uid` and `allowed`.
    pub fn new(own_uid: u32, allowed: impl IntoIterator<Item = u32>) -> PeerPolicy {
        let mut allowed: Vec<u32> = allowed.into_iter().collect();
        allowed.sort_unstable();
        allowed.dedup();
        PeerPolicy { own_uid, allowed }
    }

    /// The decision for a peer with user id `peer_uid` (`None`: unknown, refused).
    pub fn check(&self, peer_uid: Option<u32>) -> Result<(), PeerRefused> {
        match peer_uid {
            None => Err(PeerRefused::Unknown),
            Some(uid) if uid == self.own_uid || self.allowed.binary_search(&uid).is_ok() => Ok(()),
            Some(uid) => Err(PeerRefused::OtherUser {
                own: self.own_uid,
                peer: uid,
            }),
        }
    }
}

/// Tower layer answering requests from refused peers with `PERMISSION_DENIED`.
#[derive(Debug, Clone)]
pub struct PeerCheckLayer {
    policy: Arc<PeerPolicy>,
}

impl PeerCheckLayer {
    pub fn new(policy: Arc<PeerPolicy>) -> Self {
        PeerCheckLayer { policy }
    }
}

impl<S> Layer<S> for PeerCheckLayer {
    type Service = PeerCheck<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PeerCheck {
            inner,
            policy: Arc::clone(&self.policy),
        }
    }
}

/// The service of [`PeerCheckLayer`].
#[derive(Debug, Clone)]
pub struct PeerCheck<S> {
    inner: S,
    policy: Arc<PeerPolicy>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for PeerCheck<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        // A connection accepted by anything other than our listener has no PeerInfo and is
        // refused like an unknown peer.
        let uid = req.extensions().get::<PeerInfo>().and_then(|p| p.uid);
        match self.policy.check(uid) {
            Ok(()) => Box::pin(self.inner.call(req)),
            Err(why) => {
                let resp = Status::permission_denied(why.to_string()).into_http::<ResBody>();
                Box::pin(std::future::ready(Ok(resp)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_uid_and_allowed_uids_pass_others_are_refused() {
        let p = PeerPolicy::new(1000, [1001, 1001, 0]);
        assert_eq!(p.check(Some(1000)), Ok(()));
        assert_eq!(p.check(Some(1001)), Ok(()));
        assert_eq!(p.check(Some(0)), Ok(()));
        assert_eq!(
            p.check(Some(1002)),
            Err(PeerRefused::OtherUser {
                own: 1000,
                peer: 1002
            })
        );
        assert_eq!(p.check(None), Err(PeerRefused::Unknown));
        let msg = p.check(Some(1002)).unwrap_err().to_string();
        assert!(msg.contains("--allow-uid 1002"), "{msg}");
    }

    #[test]
    fn root_is_not_implicitly_allowed() {
        let p = PeerPolicy::new(1000, []);
        assert!(p.check(Some(0)).is_err());
    }

    #[tokio::test]
    async fn layer_answers_permission_denied_for_refused_peers() {
        use tower::ServiceExt;
        let inner = tower::service_fn(|_req: http::Request<()>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(String::from("served")))
        });
        let svc = PeerCheckLayer::new(Arc::new(PeerPolicy::new(1000, []))).layer(inner);

        let mut ok = http::Request::new(());
        ok.extensions_mut().insert(PeerInfo { uid: Some(1000) });
        let resp = svc.clone().oneshot(ok).await.unwrap();
        assert_eq!(resp.body(), "served");

        let mut other = http::Request::new(());
        other.extensions_mut().insert(PeerInfo { uid: Some(4242) });
        let resp = svc.clone().oneshot(other).await.unwrap();
        let status = Status::from_header_map(resp.headers()).unwrap();
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
        assert!(status.message().contains("4242"), "{}", status.message());

        let resp = svc.oneshot(http::Request::new(())).await.unwrap();
        let status = Status::from_header_map(resp.headers()).unwrap();
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
    }
}
