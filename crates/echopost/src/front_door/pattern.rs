//! `--accept-grpc PATTERN`: which gRPC services the front door captures.
//!
//! A pattern is a full service name (`acme.orders.v1.Orders`), a prefix ending in `*`
//! (`opentelemetry.proto.collector.*`), or `*` alone (every service). The services the
//! socket serves itself ([`OWN_SERVICES`]: EchoPost's own API, health, reflection) are never
//! captured: a prefix or `*` skips them, and naming one outright is a configuration error.

/// The gRPC services the daemon itself serves on the socket, never captured (issue 15).
pub const OWN_SERVICES: &[&str] = &[
    "echopost.v1.EchoPost",
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// One `--accept-grpc` value, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServicePattern {
    /// Exactly this service (`pkg.Service`).
    Exact(String),
    /// Every service whose name starts with this (the pattern without its `*`; empty for
    /// `*`).
    Prefix(String),
}

impl ServicePattern {
    /// Parses one `--accept-grpc` value. The error names what is wrong and what is
    /// accepted.
    pub fn parse(s: &str) -> Result<ServicePattern, String> {
        let shape = "use a full service name (acme.orders.v1.Orders), a prefix ending in * (opentelemetry.proto.collector.*) or *";
        let (name, prefix) = match s.strip_suffix('*') {
            Some(p) => (p, true),
            None => (s, false),
        };
        if name.is_empty() && !prefix {
            return Err(format!("--accept-grpc must not be empty; {shape}"));
        }
        if let Some(c) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '.'))
        {
            return Err(format!(
                "--accept-grpc {s:?}: {c:?} cannot appear in a service name (only letters, digits, '_' and '.', and one '*' at the end); {shape}"
            ));
        }
        if !prefix && OWN_SERVICES.contains(&name) {
            return Err(format!(
                "--accept-grpc {s:?}: echopost serves {name} itself on its socket; it cannot be captured"
            ));
        }
        Ok(if prefix {
            ServicePattern::Prefix(name.to_owned())
        } else {
            ServicePattern::Exact(name.to_owned())
        })
    }

    /// Whether calls to `service` (`pkg.Service`, no slashes) match this pattern. The
    /// socket's own services never do.
    pub fn matches(&self, service: &str) -> bool {
        if OWN_SERVICES.contains(&service) {
            return false;
        }
        match self {
            ServicePattern::Exact(name) => service == name,
            ServicePattern::Prefix(p) => !service.is_empty() && service.starts_with(p.as_str()),
        }
    }
}

impl std::fmt::Display for ServicePattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServicePattern::Exact(n) => f.write_str(n),
            ServicePattern::Prefix(p) => write!(f, "{p}*"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_prefix_and_star() {
        let exact = ServicePattern::parse("acme.orders.v1.Orders").unwrap();
        assert!(exact.matches("acme.orders.v1.Orders"));
        assert!(!exact.matches("acme.orders.v1.OrdersAdmin"));
        assert!(!exact.matches("acme.orders.v1"));

        let prefix = ServicePattern::parse("opentelemetry.proto.collector.*").unwrap();
        assert!(prefix.matches("opentelemetry.proto.collector.trace.v1.TraceService"));
        assert!(!prefix.matches("opentelemetry.proto.common.v1.X"));

        let star = ServicePattern::parse("*").unwrap();
        assert!(star.matches("acme.A"));
        assert!(!star.matches(""));
        assert_eq!(star.to_string(), "*");
        assert_eq!(prefix.to_string(), "opentelemetry.proto.collector.*");
    }

    #[test]
    fn own_services_are_never_captured() {
        let star = ServicePattern::parse("*").unwrap();
        let grpc = ServicePattern::parse("grpc.*").unwrap();
        for own in OWN_SERVICES {
            assert!(!star.matches(own), "{own}");
            assert!(!grpc.matches(own), "{own}");
            let e = ServicePattern::parse(own).unwrap_err();
            assert!(e.contains("itself"), "{e}");
        }
        // Another service under the same package is an application's.
        assert!(grpc.matches("grpc.testing.TestService"));
    }

    #[test]
    fn malformed_patterns_are_refused_with_the_accepted_shapes() {
        for bad in ["", "/acme.A/Do", "acme.*.A", "a b", "acme.A/Do", "**"] {
            let e = ServicePattern::parse(bad).unwrap_err();
            assert!(e.contains("--accept-grpc"), "{bad}: {e}");
        }
    }
}
