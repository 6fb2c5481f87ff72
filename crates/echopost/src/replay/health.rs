//! Health probes: is the main server ready to take replayed records?
//!
//! * gRPC upstreams: `grpc.health.v1.Health/Check` with the configured service name
//!   (empty = the whole server) must answer `SERVING`. `NOT_SERVING`, `UNKNOWN`,
//!   `SERVICE_UNKNOWN`, any error status and any connection failure are "not healthy".
//! * HTTP upstreams: `GET <health-url>` must answer 2xx (a 307/308 to the same origin is
//!   followed). A 429 or 503 with `Retry-After` is obeyed: no probe before then (capped
//!   like every `Retry-After`, see `backoff`).
//!
//! Probes carry the `--upstream-header`s too (a health endpoint behind the same auth
//! proxy needs them) and time out after the request timeout.

use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{Method, Request, Uri};
use http_body_util::Full;
use tonic::metadata::MetadataMap;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use super::forward_http::{HttpClient, request_following};

/// Why a probe says "not healthy".
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unhealthy {
    pub reason: String,
    /// How long the server asked to be left alone (`Retry-After` on 429 or 503).
    pub retry_after: Option<Duration>,
}

impl From<String> for Unhealthy {
    fn from(reason: String) -> Self {
        Unhealthy {
            reason,
            retry_after: None,
        }
    }
}

/// Probes the main server.
#[derive(Clone)]
pub(crate) enum Prober {
    Grpc {
        client: HealthClient<Channel>,
        service: String,
        metadata: MetadataMap,
    },
    Http {
        client: HttpClient,
        url: Uri,
        extra: Vec<(HeaderName, HeaderValue)>,
    },
}

impl Prober {
    /// What is probed, for logs.
    pub(crate) fn describe(&self) -> String {
        match self {
            Prober::Grpc { service, .. } => {
                format!("grpc.health.v1.Health/Check(service={service:?})")
            }
            Prober::Http { url, .. } => format!("GET {url}"),
        }
    }

    /// One probe: Ok if healthy, else why not.
    pub(crate) async fn probe(&mut self, timeout: Duration) -> Result<(), Unhealthy> {
        match tokio::time::timeout(timeout, self.probe_inner()).await {
            Ok(r) => r,
            Err(_) => Err(format!("health probe: no answer within {timeout:?}").into()),
        }
    }

    async fn probe_inner(&mut self) -> Result<(), Unhealthy> {
        match self {
            Prober::Grpc {
                client,
                service,
                metadata,
            } => {
                let mut req = tonic::Request::new(HealthCheckRequest {
                    service: service.clone(),
                });
                *req.metadata_mut() = metadata.clone();
                let resp = client.check(req).await.map_err(|s| {
                    Unhealthy::from(format!(
                        "health check failed: {:?}: {}",
                        s.code(),
                        s.message()
                    ))
                })?;
                let status = resp.into_inner().status;
                if status == ServingStatus::Serving as i32 {
                    Ok(())
                } else {
                    let name = ServingStatus::try_from(status)
                        .map(|s| s.as_str_name().to_string())
                        .unwrap_or_else(|_| status.to_string());
                    Err(format!("health check answered {name}").into())
                }
            }
            Prober::Http { client, url, extra } => {
                let mut req = Request::builder()
                    .method(Method::GET)
                    .uri(url.clone())
                    .body(Full::new(Bytes::new()))
                    .map_err(|e| format!("health probe GET {url}: {e}"))?;
                for (n, v) in extra.iter() {
                    req.headers_mut().insert(n.clone(), v.clone());
                }
                let (answer, what) = request_following(client, req, Bytes::new())
                    .await
                    .map_err(|e| format!("health probe GET {url}: {e}"))?;
                if (200..300).contains(&answer.status) {
                    Ok(())
                } else {
                    Err(Unhealthy {
                        reason: format!("health probe {what}: HTTP {}", answer.status),
                        // 429 and 503 say when to come back (RFC 9110 §10.2.3); other
                        // statuses' Retry-After is ignored, as the RFC leaves it.
                        retry_after: answer
                            .retry_after
                            .filter(|_| matches!(answer.status, 429 | 503)),
                    })
                }
            }
        }
    }
}
