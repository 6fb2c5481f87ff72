//! The clients for the main server, built once from the validated configuration: the
//! health prober and the [`Sink`] the records go through. Nothing is connected here
//! (channels connect lazily), so an unreachable server is a failed probe, not a startup
//! error.

use std::time::Duration;

use http::header::HeaderMap;
use tonic::metadata::MetadataMap;
use tonic_health::pb::health_client::HealthClient;

use crate::config::{HealthCheck, ReplayConfig, SinkKind};

use super::ReplayError;
use super::deliver::DeliverSink;
use super::forward_grpc::GrpcForwarder;
use super::forward_http::{HttpForwarder, build_client};
use super::health::Prober;
use super::tls;

/// Longest TCP/TLS connect; a slow connect is a transient failure like any other.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2 keepalive pings to a gRPC main server: no more often than stock gRPC servers
/// accept by default (grpc-core answers pings more frequent than every 5 minutes without
/// data with `GOAWAY ENHANCE_YOUR_CALM` "too_many_pings", which would cut long `Deliver`
/// calls).
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(300);

/// How records are sent: as `Sink/Deliver` batches, or each as its original request.
pub(super) enum Sink {
    Deliver(DeliverSink),
    Http(HttpForwarder),
    Grpc(GrpcForwarder),
}

fn config_err(what: impl std::fmt::Display) -> ReplayError {
    ReplayError::Config(what.to_string())
}

/// Sets up the prober and the sink for an already validated configuration (nothing is
/// connected yet). Fails only on what settings cannot tell: no trusted CA roots for TLS.
pub(super) fn build(cfg: &ReplayConfig) -> Result<(Prober, Sink), ReplayError> {
    let upstream = &cfg.upstream;
    let timeout = cfg.request_timeout;
    let connect_timeout = timeout.min(MAX_CONNECT_TIMEOUT);
    let extra = cfg.upstream_headers.clone();
    let (prober, sink) = match &cfg.health {
        HealthCheck::Grpc { service } => {
            let mut ep = tonic::transport::Endpoint::from_shared(upstream.origin_str())
                .map_err(|e| config_err(format!("bad --upstream {}: {e}", upstream.display)))?
                .connect_timeout(connect_timeout)
                .tcp_nodelay(true)
                .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
                .keep_alive_timeout(Duration::from_secs(10))
                .initial_stream_window_size(Some(4 << 20))
                .initial_connection_window_size(Some(8 << 20));
            if upstream.is_tls() {
                // `[::1]` in a URL, `::1` as a TLS server name.
                let host = upstream
                    .origin
                    .host()
                    .unwrap_or_default()
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_string();
                let tls = tls::grpc_config(&host, cfg.upstream_ca.as_ref())?;
                ep = ep
                    .tls_config(tls)
                    .map_err(|e| config_err(format!("TLS setup for {}: {e}", upstream.display)))?;
            }
            let channel = ep.connect_lazy();
            let mut hm = HeaderMap::new();
            for (n, v) in &extra {
                hm.insert(n.clone(), v.clone());
            }
            let metadata = MetadataMap::from_headers(hm.clone());
            let prober = Prober::Grpc {
                client: HealthClient::new(channel.clone()),
                service: service.clone(),
                metadata: metadata.clone(),
            };
            let sink = match cfg.sink {
                SinkKind::Deliver => Sink::Deliver(DeliverSink::new(channel, hm, timeout)),
                SinkKind::Forward => Sink::Grpc(GrpcForwarder::new(channel, extra, timeout)),
            };
            (prober, sink)
        }
        HealthCheck::Http { url } => {
            let need_tls = upstream.is_tls() || url.scheme_str() == Some("https");
            let config = tls::client_config(need_tls, cfg.upstream_ca.as_ref())?;
            let client = build_client(tls::http_connector(config, connect_timeout), cfg.in_flight);
            let prober = Prober::Http {
                client: client.clone(),
                url: url.clone(),
                extra: extra.clone(),
            };
            let prefix = format!("{}{}", upstream.origin_str(), upstream.base_path);
            (
                prober,
                Sink::Http(HttpForwarder::new(client, prefix, extra, timeout)),
            )
        }
    };
    Ok((prober, sink))
}
