//! TLS for `https://` and `grpcs://` upstreams.
//!
//! The HTTP client (hyper-rustls) and the gRPC channel (tonic's rustls) are set up to
//! trust exactly the same roots: the system's store plus the PEM certificates of
//! `--upstream-ca` (either may be missing, not both). Both use the ring provider. Server
//! names are verified against the upstream's host (DNS name or IP address); there is no
//! way to turn verification off.

use std::sync::Arc;
use std::time::Duration;

use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::RootCertStore;

use super::ReplayError;
use crate::config::UpstreamCa;

/// The client configuration. System roots are loaded only when `need_tls` (an unreadable
/// or empty system store must not stop a plain-text setup); the `--upstream-ca`
/// certificates (read and parsed by `crate::config`) are always added.
pub(crate) fn client_config(
    need_tls: bool,
    ca: Option<&UpstreamCa>,
) -> Result<rustls::ClientConfig, ReplayError> {
    let mut roots = RootCertStore::empty();
    if need_tls {
        let native = rustls_native_certs::load_native_certs();
        if !native.errors.is_empty() {
            tracing::debug!(errors = ?native.errors, "some system CA certificates could not be loaded");
        }
        let (added, ignored) = roots.add_parsable_certificates(native.certs);
        tracing::debug!(added, ignored, "system CA certificates");
    }
    if let Some(ca) = ca {
        for cert in &ca.certs {
            roots.add(cert.clone()).map_err(|e| {
                ReplayError::Config(format!(
                    "--upstream-ca {}: unusable certificate: {e}",
                    ca.path.display()
                ))
            })?;
        }
    }
    if need_tls && roots.is_empty() {
        return Err(ReplayError::Config(
            "no trusted CA certificates: the system store is empty or unreadable; pass --upstream-ca FILE"
                .into(),
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ReplayError::Config(format!("TLS setup failed: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// TLS settings of the gRPC channel for a `grpcs://` upstream whose host is `host`.
pub(crate) fn grpc_config(
    host: &str,
    ca: Option<&UpstreamCa>,
) -> Result<tonic::transport::ClientTlsConfig, ReplayError> {
    let mut tls = tonic::transport::ClientTlsConfig::new().domain_name(host);
    let system = !rustls_native_certs::load_native_certs().certs.is_empty();
    if system {
        tls = tls.with_native_roots();
    }
    if let Some(ca) = ca {
        tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(&ca.pem));
    } else if !system {
        return Err(ReplayError::Config(
            "no trusted CA certificates: the system store is empty or unreadable; pass --upstream-ca FILE"
                .into(),
        ));
    }
    Ok(tls)
}

/// The HTTP connector: TLS for `https` URIs, offering HTTP/2 and HTTP/1.1 by ALPN (an
/// h2 server then multiplexes every request of the delivery window on one connection);
/// plain TCP and HTTP/1.1 for `http` ones.
pub(crate) fn http_connector(
    config: rustls::ClientConfig,
    connect_timeout: Duration,
) -> HttpsConnector<HttpConnector> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_or_http()
        .enable_all_versions()
        .wrap_connector(http)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_needs_no_roots() {
        assert!(client_config(false, None).is_ok());
    }
}
