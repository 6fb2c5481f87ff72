//! The `--upstream` URL: `grpc://`, `grpcs://`, `http://` or `https://`, parsed once here.
//!
//! gRPC upstreams name only a host and port (`grpcs://api.example.com:443`); the method
//! path comes from the sink (`/echopost.v1.Sink/Deliver`) or from each record's route.
//! HTTP upstreams may carry a base path (`https://example.com/api`): a forwarded route
//! `POST /v1/orders` then goes to `https://example.com/api/v1/orders`, and the default
//! health URL is `https://example.com/api/healthz`.

use http::Uri;

use super::ConfigError;

/// The upstream's protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Grpc,
    Grpcs,
    Http,
    Https,
}

/// A parsed, validated upstream URL.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub scheme: Scheme,
    /// `http://host:port` or `https://host:port` (what the HTTP/2 or HTTP/1 client dials).
    pub origin: Uri,
    /// Base path without a trailing slash (`""` for none). Always empty for gRPC.
    pub base_path: String,
    /// The URL as given (scheme lower-cased), without a trailing slash.
    pub display: String,
}

impl Upstream {
    /// Parses and checks `--upstream`.
    ///
    /// # Errors
    /// [`ConfigError`] naming `--upstream` and what is wrong: no scheme, an unsupported
    /// one, no host, credentials, a query, a path on a gRPC upstream, or a malformed URL.
    pub fn parse(url: &str) -> Result<Upstream, ConfigError> {
        let bad = |why: &str| ConfigError::new(format!("bad --upstream {url:?}: {why}"));
        let (scheme, rest) = url.split_once("://").ok_or_else(|| {
            bad("it needs a scheme: use grpc://, grpcs://, http:// or https:// followed by host[:port]")
        })?;
        let lower = scheme.to_ascii_lowercase();
        let (scheme, http_scheme) = match lower.as_str() {
            "grpc" => (Scheme::Grpc, "http"),
            "grpcs" => (Scheme::Grpcs, "https"),
            "http" => (Scheme::Http, "http"),
            "https" => (Scheme::Https, "https"),
            other => {
                return Err(bad(&format!(
                    "the unsupported scheme {other:?}: use grpc://, grpcs://, http:// or https://"
                )));
            }
        };
        let uri: Uri = format!("{http_scheme}://{rest}")
            .parse()
            .map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
        let authority = uri.authority().ok_or_else(|| bad("no host"))?.clone();
        if authority.host().is_empty() {
            return Err(bad("no host"));
        }
        if authority.as_str().contains('@') {
            return Err(bad(
                "credentials in the URL are not supported; use --upstream-header",
            ));
        }
        if uri.query().is_some() {
            return Err(bad("a query string is not allowed"));
        }
        let base_path = uri.path().trim_end_matches('/').to_string();
        let grpc = matches!(scheme, Scheme::Grpc | Scheme::Grpcs);
        if grpc && !base_path.is_empty() {
            return Err(bad(
                "a gRPC upstream is host:port only (the method path comes from the sink or the record's route)",
            ));
        }
        let origin = Uri::builder()
            .scheme(http_scheme)
            .authority(authority)
            .path_and_query("/")
            .build()
            .map_err(|e| bad(&e.to_string()))?;
        Ok(Upstream {
            scheme,
            origin,
            base_path,
            display: format!("{lower}://{}", rest.trim_end_matches('/')),
        })
    }

    pub fn is_grpc(&self) -> bool {
        matches!(self.scheme, Scheme::Grpc | Scheme::Grpcs)
    }

    pub fn is_tls(&self) -> bool {
        matches!(self.scheme, Scheme::Grpcs | Scheme::Https)
    }

    /// The default `--health-url` of an HTTP upstream: `<upstream>/healthz`.
    pub fn default_health_url(&self) -> String {
        format!("{}/healthz", self.display)
    }

    /// `origin` without the trailing slash, e.g. `https://host:8443`.
    pub fn origin_str(&self) -> String {
        self.origin.to_string().trim_end_matches('/').to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes() {
        let u = Upstream::parse("grpc://127.0.0.1:50051").unwrap();
        assert_eq!(u.scheme, Scheme::Grpc);
        assert!(u.is_grpc() && !u.is_tls());
        assert_eq!(u.origin_str(), "http://127.0.0.1:50051");
        let u = Upstream::parse("grpcs://api.example.com:443/").unwrap();
        assert!(u.is_grpc() && u.is_tls());
        assert_eq!(u.origin_str(), "https://api.example.com:443");
        let u = Upstream::parse("https://example.com/api/").unwrap();
        assert_eq!(u.scheme, Scheme::Https);
        assert_eq!(u.base_path, "/api");
        assert_eq!(u.default_health_url(), "https://example.com/api/healthz");
        let u = Upstream::parse("HTTP://localhost:8080").unwrap();
        assert_eq!(u.base_path, "");
        assert_eq!(u.default_health_url(), "http://localhost:8080/healthz");
    }

    #[test]
    fn rejects() {
        for bad in [
            "localhost:8080",
            "ftp://x",
            "grpc://",
            "grpc://host:1/pkg.Svc",
            "http://user:pw@host/",
            "http://host/?q=1",
            "http://ho st/",
        ] {
            assert!(Upstream::parse(bad).is_err(), "{bad}");
        }
    }
}
