//! The tower layer in front of tonic's router that routes captured requests away from it.
//!
//! For every HTTP/2 request on the socket: a gRPC call (`content-type: application/grpc…`)
//! to a service an `--accept-grpc` pattern matches goes to [`super::grpc`]; with
//! `--accept-http`, a request that is not gRPC goes to [`super::http`]; everything else
//! (EchoPost's own API, health, reflection, unknown methods) goes on to the router as
//! before. The layer is outermost, so it checks the peer's uid itself and refuses in the
//! request's own protocol.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::Status;
use tower::{Layer, Service};

use super::FrontDoor;
use super::capture::Capture;
use crate::daemon::peer::PeerInfo;

/// Routes captured requests to the front door (see the module documentation).
#[derive(Debug, Clone)]
pub struct FrontDoorLayer {
    door: Arc<FrontDoor>,
    /// `None` when the front door is closed (no `--accept-*` flag): everything passes.
    capture: Option<Arc<Capture>>,
}

impl FrontDoorLayer {
    /// A layer capturing what `door` names through `capture`.
    pub fn new(door: Arc<FrontDoor>, capture: Arc<Capture>) -> FrontDoorLayer {
        let capture = door.is_open().then_some(capture);
        FrontDoorLayer { door, capture }
    }
}

impl<S> Layer<S> for FrontDoorLayer {
    type Service = FrontDoorService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        FrontDoorService {
            inner,
            door: Arc::clone(&self.door),
            capture: self.capture.clone(),
        }
    }
}

/// The service of [`FrontDoorLayer`].
#[derive(Debug, Clone)]
pub struct FrontDoorService<S> {
    inner: S,
    door: Arc<FrontDoor>,
    capture: Option<Arc<Capture>>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;
type Req = http::Request<tonic::body::Body>;
type Resp = http::Response<tonic::body::Body>;

/// Where one request goes.
enum Route {
    Grpc,
    Http,
    Inner,
}

impl<S> FrontDoorService<S> {
    fn route(&self, req: &Req) -> Route {
        if self.capture.is_none() {
            return Route::Inner;
        }
        let is_grpc = req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("application/grpc"));
        if !is_grpc {
            return if self.door.http {
                Route::Http
            } else {
                Route::Inner
            };
        }
        match method_service(req.uri().path()) {
            Some(service) if self.door.captures_service(service) => Route::Grpc,
            _ => Route::Inner,
        }
    }
}

/// The service of a gRPC method path `/pkg.Service/Method`.
fn method_service(path: &str) -> Option<&str> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    (!service.is_empty() && !method.is_empty() && !method.contains('/')).then_some(service)
}

impl<S> Service<Req> for FrontDoorService<S>
where
    S: Service<Req, Response = Resp>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Resp;
    type Error = S::Error;
    type Future = BoxFuture<Result<Resp, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let route = self.route(&req);
        let capture = match (&route, &self.capture) {
            (Route::Inner, _) | (_, None) => return Box::pin(self.inner.call(req)),
            (_, Some(c)) => Arc::clone(c),
        };
        match route {
            Route::Grpc => Box::pin(async move {
                if let Err(why) = capture.check_peer(req.extensions().get::<PeerInfo>()) {
                    return Ok(Status::permission_denied(why.to_string()).into_http());
                }
                Ok(super::grpc::capture_call(capture, req).await)
            }),
            _ => Box::pin(async move {
                let resp = super::http::capture_request(&capture, req).await;
                Ok(resp.map(tonic::body::Body::new))
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::method_service;

    #[test]
    fn method_paths_name_their_service() {
        assert_eq!(method_service("/acme.A/Do"), Some("acme.A"));
        for bad in ["/acme.A", "/acme.A/", "//Do", "/a/b/c", "acme.A/Do", "/"] {
            assert_eq!(method_service(bad), None, "{bad}");
        }
    }
}
