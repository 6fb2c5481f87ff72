//! Replay settings: given as text ([`ReplaySettings`]), validated once into a
//! [`ReplayConfig`], the only form the replayer accepts.
//!
//! Every rule about the replay flags lives here, so `echopost run` refuses a bad
//! combination with exit code 2 before the directory is touched, and the replayer never
//! has to check a setting again (the model is Vector's disk-buffer config builder, which
//! validates once and hands on a type that cannot be wrong). What cannot be known from the
//! settings alone stays with the replayer: whether the system has trusted CA roots, and
//! whether the main server answers.

use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{HeaderName, HeaderValue, Uri};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use super::ConfigError;
use super::upstream::Upstream;
use crate::replay::classify::Policy;

/// Default of `--batch-records`.
pub const DEFAULT_BATCH_RECORDS: u64 = 16384;
/// Default of `--batch-bytes`: the default maximum received message of mainstream gRPC
/// servers.
pub const DEFAULT_BATCH_BYTES: u64 = 4 << 20;
/// Default of `--request-timeout`.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Default of `--isolate-after`.
pub const DEFAULT_ISOLATE_AFTER: Duration = Duration::from_secs(20);
/// Default of `--in-flight`: one request at a time, strict order (seed 000).
pub const DEFAULT_IN_FLIGHT: u32 = 1;
/// Largest `--in-flight` (issue 16): enough to fill a long, fast path with small records,
/// small enough that the window's memory stays bounded (at most this many requests, or
/// `Deliver` batches of `--batch-bytes` each, are held).
pub const MAX_IN_FLIGHT: u32 = 4096;

/// How replayed records are delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkKind {
    /// Batches to `echopost.v1.Sink/Deliver`.
    Deliver,
    /// Each record replayed verbatim as the request the application would have sent.
    Forward,
}

/// How the main server's health is probed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthCheck {
    /// `grpc.health.v1.Health/Check` for `service` (empty: the whole server) must answer
    /// `SERVING`. gRPC upstreams.
    Grpc { service: String },
    /// `GET url` must answer 2xx. HTTP upstreams (default `<upstream>/healthz`).
    Http { url: Uri },
}

/// The `--upstream-ca` file, read and parsed: at least one PEM certificate.
#[derive(Debug, Clone)]
pub struct UpstreamCa {
    /// The file, for messages.
    pub path: PathBuf,
    /// The file's bytes (tonic's TLS takes PEM).
    pub pem: Vec<u8>,
    /// Its certificates (the HTTP client's root store takes these).
    pub certs: Vec<CertificateDer<'static>>,
}

/// Replay settings as given on the command line (or by a test), not yet checked.
#[derive(Debug, Clone)]
pub struct ReplaySettings {
    /// `--upstream`: `grpc://`, `grpcs://`, `http://` or `https://` URL of the main server.
    pub upstream: String,
    /// `--sink`; `None`: `deliver` for gRPC upstreams, `forward` for HTTP ones.
    pub sink: Option<SinkKind>,
    /// `--health-service` (gRPC upstreams).
    pub health_service: String,
    /// `--health-url` (HTTP upstreams; ignored with a note for gRPC ones).
    pub health_url: Option<String>,
    /// `--healthy-after`: consecutive good probes needed before replay starts.
    pub healthy_after: u32,
    /// `--batch-records`.
    pub batch_records: u64,
    /// `--batch-bytes`.
    pub batch_bytes: u64,
    /// `--upstream-ca`.
    pub upstream_ca: Option<PathBuf>,
    /// `--upstream-header`, each `"Name: value"`; blank entries are ignored.
    pub upstream_headers: Vec<String>,
    /// `--request-timeout`.
    pub request_timeout: Duration,
    /// `--status-class`, each `http:STATUS=CLASS` or `grpc:CODE=CLASS`.
    pub status_class: Vec<String>,
    /// `--isolate-after`: how long a batch (then a record alone) must keep failing
    /// transiently, while the server passes its health checks, before it is split (then
    /// tested against the next record).
    pub isolate_after: Duration,
    /// `--in-flight`: most verbatim requests (or `Deliver` batches) awaiting an answer at
    /// once; 1 keeps strict order.
    pub in_flight: u32,
    /// The EchoPost directory (the dead-letter log lives below it).
    pub dir: PathBuf,
}

impl ReplaySettings {
    /// Settings for `upstream` with every other flag at its default.
    pub fn new(upstream: impl Into<String>, dir: impl Into<PathBuf>) -> ReplaySettings {
        ReplaySettings {
            upstream: upstream.into(),
            sink: None,
            health_service: String::new(),
            health_url: None,
            healthy_after: 1,
            batch_records: DEFAULT_BATCH_RECORDS,
            batch_bytes: DEFAULT_BATCH_BYTES,
            upstream_ca: None,
            upstream_headers: Vec::new(),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            status_class: Vec::new(),
            isolate_after: DEFAULT_ISOLATE_AFTER,
            in_flight: DEFAULT_IN_FLIGHT,
            dir: dir.into(),
        }
    }

    /// Checks every setting and their combinations.
    ///
    /// # Errors
    /// [`ConfigError`] naming the flag: an unparsable or unsupported `--upstream`, `--sink
    /// deliver` with an HTTP upstream, a `--health-url` that is not http(s) with a host, an
    /// unreadable `--upstream-ca` or one without a certificate, a malformed
    /// `--upstream-header`, a zero `--batch-bytes`, `--batch-records` or
    /// `--request-timeout`, an `--in-flight` outside 1..=[`MAX_IN_FLIGHT`].
    pub fn validate(self) -> Result<ReplayConfig, ConfigError> {
        let upstream = Upstream::parse(&self.upstream)?;
        let sink = match self.sink {
            Some(SinkKind::Deliver) if !upstream.is_grpc() => {
                return Err(ConfigError::new(format!(
                    "--sink deliver needs a grpc:// or grpcs:// upstream (Sink/Deliver is a gRPC method), not {}; use --sink forward",
                    upstream.display
                )));
            }
            Some(s) => s,
            None if upstream.is_grpc() => SinkKind::Deliver,
            None => SinkKind::Forward,
        };
        let health = if upstream.is_grpc() {
            if self.health_url.is_some() {
                tracing::info!(
                    "--health-url is ignored for a gRPC upstream (the gRPC health service is probed)"
                );
            }
            HealthCheck::Grpc {
                service: self.health_service,
            }
        } else {
            let url = self
                .health_url
                .unwrap_or_else(|| upstream.default_health_url());
            HealthCheck::Http {
                url: parse_health_url(&url)?,
            }
        };
        let upstream_ca = self.upstream_ca.as_deref().map(load_ca).transpose()?;
        let upstream_headers = self
            .upstream_headers
            .iter()
            .filter(|h| !h.trim().is_empty())
            .map(|h| parse_header(h))
            .collect::<Result<Vec<_>, _>>()?;
        if self.batch_records == 0 {
            return Err(ConfigError::new("--batch-records must be above zero"));
        }
        if self.batch_bytes == 0 {
            return Err(ConfigError::new("--batch-bytes must be above zero"));
        }
        if self.request_timeout.is_zero() {
            return Err(ConfigError::new("--request-timeout must be above zero"));
        }
        if !(1..=MAX_IN_FLIGHT).contains(&self.in_flight) {
            return Err(ConfigError::new(format!(
                "--in-flight must be between 1 and {MAX_IN_FLIGHT}, not {}",
                self.in_flight
            )));
        }
        let policy = Policy::with_overrides(&self.status_class).map_err(ConfigError::new)?;
        Ok(ReplayConfig {
            upstream,
            sink,
            health,
            healthy_after: self.healthy_after.max(1),
            batch_records: usize::try_from(self.batch_records).unwrap_or(usize::MAX),
            batch_bytes: usize::try_from(self.batch_bytes).unwrap_or(usize::MAX),
            upstream_ca,
            upstream_headers,
            source_id: String::new(),
            dir: self.dir,
            request_timeout: self.request_timeout,
            policy,
            isolate_after: self.isolate_after,
            in_flight: self.in_flight as usize,
        })
    }
}

/// Validated replay settings: what the replayer runs with. Only
/// [`ReplaySettings::validate`] makes one.
#[derive(Debug, Clone)]
pub struct ReplayConfig {
    pub(crate) upstream: Upstream,
    pub(crate) sink: SinkKind,
    pub(crate) health: HealthCheck,
    /// Consecutive good probes needed before replay starts (at least 1).
    pub(crate) healthy_after: u32,
    /// Most records per `Deliver` batch (and per read from the log in `forward` mode).
    pub(crate) batch_records: usize,
    /// Most bytes of an encoded `DeliverRequest`. Keep it at or below the main server's
    /// maximum received message size (4 MiB by default in every mainstream gRPC server);
    /// a single larger record is still sent alone.
    pub(crate) batch_bytes: usize,
    pub(crate) upstream_ca: Option<UpstreamCa>,
    /// Added to every replayed request and probe.
    pub(crate) upstream_headers: Vec<(HeaderName, HeaderValue)>,
    /// Stable id of this EchoPost directory (`DeliverRequest.source`); filled in once the
    /// directory is locked.
    pub(crate) source_id: String,
    pub(crate) dir: PathBuf,
    pub(crate) request_timeout: Duration,
    /// Which failures are transient, server-level, too large or the record's fault.
    pub(crate) policy: Policy,
    pub(crate) isolate_after: Duration,
    /// Most requests (verbatim) or `Deliver` batches awaiting an answer at once (1..=
    /// [`MAX_IN_FLIGHT`]); see `replay::driver::window`.
    pub(crate) in_flight: usize,
}

impl ReplayConfig {
    /// The main server's URL.
    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    /// The sink replayed records go through.
    pub fn sink(&self) -> SinkKind {
        self.sink
    }

    /// The same settings with the directory's source id (`DeliverRequest.source`).
    pub fn with_source_id(mut self, source_id: impl Into<String>) -> ReplayConfig {
        self.source_id = source_id.into();
        self
    }
}

fn parse_health_url(u: &str) -> Result<Uri, ConfigError> {
    let uri: Uri = u
        .parse()
        .map_err(|e| ConfigError::new(format!("--health-url {u:?} is not a valid URL: {e}")))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        return Err(ConfigError::new(format!(
            "--health-url {u:?} must be an http:// or https:// URL with a host"
        )));
    }
    Ok(uri)
}

/// Parses `"Name: value"` into a valid HTTP header name (lower-cased) and value, both
/// trimmed.
pub fn parse_header(h: &str) -> Result<(HeaderName, HeaderValue), ConfigError> {
    let Some((name, value)) = h.split_once(':') else {
        return Err(ConfigError::new(format!(
            "--upstream-header {h:?} must look like \"Name: value\""
        )));
    };
    let name = name.trim();
    let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
        ConfigError::new(format!(
            "--upstream-header {h:?}: {name:?} is not a valid header name"
        ))
    })?;
    let value = HeaderValue::from_str(value.trim()).map_err(|_| {
        ConfigError::new(format!(
            "--upstream-header {h:?}: the value is not a valid header value"
        ))
    })?;
    Ok((name, value))
}

/// Reads `--upstream-ca`: every certificate of a PEM file; at least one. The replayer
/// reads it again after a TLS handshake failure, so a rotated CA is picked up without a
/// restart.
pub(crate) fn load_ca(path: &Path) -> Result<UpstreamCa, ConfigError> {
    let pem = std::fs::read(path).map_err(|e| {
        ConfigError::new(format!(
            "--upstream-ca {}: cannot read the file: {e}",
            path.display()
        ))
    })?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ConfigError::new(format!("--upstream-ca {}: bad PEM: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(ConfigError::new(format!(
            "--upstream-ca {}: no CERTIFICATE in the file",
            path.display()
        )));
    }
    Ok(UpstreamCa {
        path: path.to_path_buf(),
        pem,
        certs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(upstream: &str) -> ReplaySettings {
        ReplaySettings::new(upstream, "/tmp/ep-test")
    }

    #[test]
    fn defaults_follow_the_upstream() {
        let c = settings("grpc://localhost:9000").validate().unwrap();
        assert_eq!(c.sink, SinkKind::Deliver);
        assert_eq!(
            c.health,
            HealthCheck::Grpc {
                service: String::new()
            }
        );
        let c = settings("https://api.example.com/v1/").validate().unwrap();
        assert_eq!(c.sink, SinkKind::Forward);
        assert_eq!(
            c.health,
            HealthCheck::Http {
                url: "https://api.example.com/v1/healthz".parse().unwrap()
            }
        );
        assert_eq!(c.batch_records, 16384);
        assert_eq!(c.batch_bytes, 4 << 20);
    }

    #[test]
    fn every_bad_setting_is_refused_naming_its_flag() {
        let cases: Vec<(ReplaySettings, &str)> = vec![
            (settings("ftp://x"), "--upstream"),
            (
                ReplaySettings {
                    sink: Some(SinkKind::Deliver),
                    ..settings("http://127.0.0.1:9")
                },
                "--sink",
            ),
            (
                ReplaySettings {
                    health_url: Some("ftp://x/h".into()),
                    ..settings("http://127.0.0.1:9")
                },
                "--health-url",
            ),
            (
                ReplaySettings {
                    upstream_ca: Some("/nonexistent/ca.pem".into()),
                    ..settings("grpcs://localhost:9")
                },
                "--upstream-ca",
            ),
            (
                ReplaySettings {
                    upstream_headers: vec!["bad name: v".into()],
                    ..settings("grpc://127.0.0.1:9")
                },
                "--upstream-header",
            ),
            (
                ReplaySettings {
                    upstream_headers: vec!["nocolon".into()],
                    ..settings("grpc://127.0.0.1:9")
                },
                "--upstream-header",
            ),
            (
                ReplaySettings {
                    batch_bytes: 0,
                    ..settings("grpc://127.0.0.1:9")
                },
                "--batch-bytes",
            ),
            (
                ReplaySettings {
                    batch_records: 0,
                    ..settings("grpc://127.0.0.1:9")
                },
                "--batch-records",
            ),
            (
                ReplaySettings {
                    request_timeout: Duration::ZERO,
                    ..settings("grpc://127.0.0.1:9")
                },
                "--request-timeout",
            ),
            (
                ReplaySettings {
                    in_flight: 0,
                    ..settings("grpc://127.0.0.1:9")
                },
                "--in-flight",
            ),
            (
                ReplaySettings {
                    in_flight: MAX_IN_FLIGHT + 1,
                    ..settings("http://127.0.0.1:9")
                },
                "--in-flight",
            ),
        ];
        for (s, flag) in cases {
            let what = format!("{s:?}");
            let e = s.validate().unwrap_err();
            assert!(e.to_string().contains(flag), "{what}: {e}");
        }
    }

    #[test]
    fn ca_file_must_hold_a_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = ReplaySettings {
            upstream_ca: Some(empty),
            ..settings("grpcs://localhost:9")
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("no CERTIFICATE"), "{e}");
    }

    #[test]
    fn headers_are_trimmed_and_lower_cased() {
        let (n, v) = parse_header(" Authorization :  Bearer x ").unwrap();
        assert_eq!(n.as_str(), "authorization");
        assert_eq!(v.to_str().unwrap(), "Bearer x");
    }
}
