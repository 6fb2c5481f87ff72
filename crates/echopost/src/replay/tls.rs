//! TLS for `https://` and `grpcs://` upstreams.
//!
//! The HTTP client (hyper-rustls) and the gRPC channel (tonic's rustls) are set up to
//! trust exactly the same roots: the system's store plus the PEM certificates of
//! `--upstream-ca` (either may be missing, not both). Both use the ring provider. Server
//! names are verified against the upstream's host (DNS name or IP address); there is no
//! way to turn verification off.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use super::ReplayError;

/// The client configuration. System roots are loaded only when `need_tls` (an unreadable
/// or empty system store must not stop a plain-text setup); the `--upstream-ca` file, if
/// given, is always read so that a typo is reported at start.
pub(crate) fn client_config(
    need_tls: bool,
    ca: Option<&Path>,
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
    if let Some(path) = ca {
        for cert in load_pem_certs(path)? {
            roots.add(cert).map_err(|e| {
                ReplayError::Config(format!(
                    "--upstream-ca {}: unusable certificate: {e}",
                    path.display()
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
    ca: Option<&Path>,
) -> Result<tonic::transport::ClientTlsConfig, ReplayError> {
    let mut tls = tonic::transport::ClientTlsConfig::new().domain_name(host);
    let system = !rustls_native_certs::load_native_certs().certs.is_empty();
    if system {
        tls = tls.with_native_roots();
    }
    if let Some(path) = ca {
        // Parsed here too, so that a bad file is reported at start with its name.
        load_pem_certs(path)?;
        let pem = std::fs::read(path).map_err(|e| {
            ReplayError::Config(format!("cannot read --upstream-ca {}: {e}", path.display()))
        })?;
        tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(pem));
    } else if !system {
        return Err(ReplayError::Config(
            "no trusted CA certificates: the system store is empty or unreadable; pass --upstream-ca FILE"
                .into(),
        ));
    }
    Ok(tls)
}

/// Every certificate of a PEM file; at least one.
fn load_pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, ReplayError> {
    let pem = std::fs::read(path).map_err(|e| {
        ReplayError::Config(format!("cannot read --upstream-ca {}: {e}", path.display()))
    })?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            ReplayError::Config(format!("--upstream-ca {}: bad PEM: {e}", path.display()))
        })?;
    if certs.is_empty() {
        return Err(ReplayError::Config(format!(
            "--upstream-ca {}: no CERTIFICATE in the file",
            path.display()
        )));
    }
    Ok(certs)
}

/// The HTTP/1.1 connector: TLS for `https` URIs, plain TCP for `http` ones.
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
        .enable_http1()
        .wrap_connector(http)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_file_errors_are_config_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let e = client_config(true, Some(&missing)).unwrap_err();
        assert!(
            matches!(e, ReplayError::Config(ref m) if m.contains("cannot read")),
            "{e}"
        );
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = client_config(false, Some(&empty)).unwrap_err();
        assert!(
            matches!(e, ReplayError::Config(ref m) if m.contains("no CERTIFICATE")),
            "{e}"
        );
    }

    #[test]
    fn plain_text_needs_no_roots() {
        assert!(client_config(false, None).is_ok());
    }
}
