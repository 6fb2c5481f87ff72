//! Resolved and validated settings of `echopost run`.
//!
//! The command line ([`crate::cli`]) only parses values. Here they are combined with the
//! environment (the default state directory), checked against each other, and turned into
//! the types the rest of the daemon uses ([`LogOptions`], [`ReplayConfig`]). Everything
//! that can be wrong with the settings is found here, before the directory is touched, so
//! a typo exits with code 2 and a message naming the flag instead of half-starting.

use std::path::{Path, PathBuf};
use std::time::Duration;

use echopost_log::{Compression, LogOptions, SyncPolicy};

use crate::cli::{RunArgs, SinkArg};
use crate::exit::DaemonError;
use crate::limits::{MAX_BATCH_BYTES, MAX_MESSAGE_BYTES};
use crate::platform;
use crate::replay::{ReplayConfig, SinkKind};

/// Name of the socket inside the directory when `--socket` is not given.
pub const DEFAULT_SOCKET_NAME: &str = "echopost.sock";

/// Smallest accepted `--max-disk`. The log needs room for a segment header and a few
/// frames; a smaller quota would refuse every append.
pub const MIN_MAX_DISK: u64 = 64 << 10;

/// The settings of one `echopost run`.
#[derive(Debug, Clone)]
pub struct Config {
    /// The state directory (absolute).
    pub dir: PathBuf,
    /// The UNIX socket path (absolute).
    pub socket: PathBuf,
    /// Options for the storage engine.
    pub log: LogOptions,
    /// Largest accepted encoded record.
    pub max_record_bytes: usize,
    /// Idle time with an empty backlog before exiting by itself.
    pub linger: Duration,
    /// Tracing filter directive for stderr and the session log.
    pub log_level: String,
    /// User ids accepted besides the daemon's own.
    pub allowed_uids: Vec<u32>,
    /// Replay settings, when `--upstream` is given. `source_id` is filled in at startup,
    /// once the directory is locked (it is read from or created in the directory).
    pub replay: Option<ReplayConfig>,
}

impl Config {
    /// Resolves `args` against the process environment.
    pub fn from_run_args(args: &RunArgs) -> Result<Config, DaemonError> {
        Config::from_run_args_with_env(args, |k| std::env::var(k).ok())
    }

    /// Resolves `args`, reading environment variables through `var` (for tests).
    pub fn from_run_args_with_env(
        args: &RunArgs,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, DaemonError> {
        let dir = match &args.dirs.dir {
            Some(d) if d.as_os_str().is_empty() => {
                return Err(cfg_err("--dir must not be empty"));
            }
            Some(d) => d.clone(),
            None => platform::default_state_dir(var).ok_or_else(|| {
                cfg_err("cannot find a default state directory: neither $XDG_STATE_HOME nor $HOME is set; pass --dir")
            })?,
        };
        let dir = absolute(&dir, "--dir")?;
        let socket = match &args.dirs.socket {
            Some(s) if s.as_os_str().is_empty() => {
                return Err(cfg_err("--socket must not be empty"));
            }
            Some(s) => absolute(s, "--socket")?,
            None => dir.join(DEFAULT_SOCKET_NAME),
        };
        let socket_len = socket.as_os_str().len();
        if socket_len > platform::MAX_SOCKET_PATH {
            return Err(cfg_err(format!(
                "socket path {} is {socket_len} bytes long; UNIX sockets allow at most {} on this system. Pass a shorter --socket",
                socket.display(),
                platform::MAX_SOCKET_PATH
            )));
        }

        if args.max_record_bytes == 0 || args.max_record_bytes > MAX_MESSAGE_BYTES as u64 {
            return Err(cfg_err(format!(
                "--max-record-bytes must be between 1 and {MAX_MESSAGE_BYTES} (the gRPC message limit), got {}",
                args.max_record_bytes
            )));
        }
        let max_record_bytes = args.max_record_bytes as usize;
        if let Some(q) = args.max_disk
            && q < MIN_MAX_DISK
        {
            return Err(cfg_err(format!(
                "--max-disk must be at least {MIN_MAX_DISK} bytes (64KiB), got {q}"
            )));
        }

        tracing_subscriber::EnvFilter::try_new(&args.log_level).map_err(|e| {
            cfg_err(format!(
                "invalid --log-level {:?}: {e} (use error, warn, info, debug or trace)",
                args.log_level
            ))
        })?;

        let log = LogOptions {
            sync: args.sync,
            compression: Compression::None,
            max_disk_bytes: args.max_disk,
            max_batch_bytes: MAX_BATCH_BYTES,
            ..LogOptions::default()
        };

        let replay = match &args.upstream {
            None => None,
            Some(u) => Some(replay_config(args, u, &dir)?),
        };

        let mut allowed_uids = args.allow_uid.clone();
        allowed_uids.sort_unstable();
        allowed_uids.dedup();

        Ok(Config {
            dir,
            socket,
            log,
            max_record_bytes,
            linger: args.linger,
            log_level: args.log_level.clone(),
            allowed_uids,
            replay,
        })
    }

    /// The sync policy as shown by `Status` ("always", "interval:MS", "never").
    pub fn sync_policy_name(&self) -> String {
        sync_name(self.log.sync)
    }
}

/// "always", "interval:MS" or "never".
pub fn sync_name(p: SyncPolicy) -> String {
    p.to_string()
}

fn cfg_err(msg: impl Into<String>) -> DaemonError {
    DaemonError::Config(msg.into())
}

fn absolute(p: &Path, flag: &str) -> Result<PathBuf, DaemonError> {
    std::path::absolute(p)
        .map_err(|e| cfg_err(format!("cannot resolve {flag} {}: {e}", p.display())))
}

/// The URL schemes `--upstream` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamScheme {
    Grpc,
    Grpcs,
    Http,
    Https,
}

impl UpstreamScheme {
    /// gRPC upstreams are probed with grpc.health.v1 and default to the `deliver` sink.
    pub fn is_grpc(self) -> bool {
        matches!(self, UpstreamScheme::Grpc | UpstreamScheme::Grpcs)
    }
}

/// Checks that `url` is an absolute URL with a supported scheme and a host.
pub fn parse_upstream(url: &str) -> Result<UpstreamScheme, String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("--upstream {url:?} is not a valid URL: {e}"))?;
    let scheme = match uri.scheme_str().map(str::to_ascii_lowercase).as_deref() {
        Some("grpc") => UpstreamScheme::Grpc,
        Some("grpcs") => UpstreamScheme::Grpcs,
        Some("http") => UpstreamScheme::Http,
        Some("https") => UpstreamScheme::Https,
        Some(other) => {
            return Err(format!(
                "--upstream {url:?} has the unsupported scheme {other:?}: use grpc://, grpcs://, http:// or https://"
            ));
        }
        None => {
            return Err(format!(
                "--upstream {url:?} needs a scheme: use grpc://, grpcs://, http:// or https:// followed by host[:port]"
            ));
        }
    };
    match uri.host() {
        Some(h) if !h.is_empty() => Ok(scheme),
        _ => Err(format!("--upstream {url:?} has no host")),
    }
}

/// Parses `"Name: value"` into a valid HTTP header name and value.
pub fn parse_header(h: &str) -> Result<(String, String), String> {
    let Some((name, value)) = h.split_once(':') else {
        return Err(format!(
            "--upstream-header {h:?} must look like \"Name: value\""
        ));
    };
    let name = name.trim();
    let value = value.trim();
    http::HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("--upstream-header {h:?}: {name:?} is not a valid header name"))?;
    http::HeaderValue::from_str(value)
        .map_err(|_| format!("--upstream-header {h:?}: the value is not a valid header value"))?;
    Ok((name.to_ascii_lowercase(), value.to_owned()))
}

fn replay_config(args: &RunArgs, upstream: &str, dir: &Path) -> Result<ReplayConfig, DaemonError> {
    let scheme = parse_upstream(upstream).map_err(cfg_err)?;
    let sink = match args.sink {
        Some(SinkArg::Deliver) => SinkKind::Deliver,
        Some(SinkArg::Forward) => SinkKind::Forward,
        None if scheme.is_grpc() => SinkKind::Deliver,
        None => SinkKind::Forward,
    };
    let health_url = match &args.health_url {
        Some(u) => {
            let uri: http::Uri = u
                .parse()
                .map_err(|e| cfg_err(format!("--health-url {u:?} is not a valid URL: {e}")))?;
            if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
                return Err(cfg_err(format!(
                    "--health-url {u:?} must be an http:// or https:// URL with a host"
                )));
            }
            Some(u.clone())
        }
        None if scheme.is_grpc() => None,
        None => Some(format!("{}/healthz", upstream.trim_end_matches('/'))),
    };
    if let Some(ca) = &args.upstream_ca {
        std::fs::File::open(ca).map_err(|e| {
            cfg_err(format!(
                "--upstream-ca {}: cannot read the file: {e}",
                ca.display()
            ))
        })?;
    }
    let mut upstream_headers = Vec::new();
    for h in args.upstream_header.iter().filter(|h| !h.trim().is_empty()) {
        upstream_headers.push(parse_header(h).map_err(cfg_err)?);
    }
    if args.batch_bytes == 0 {
        return Err(cfg_err("--batch-bytes must be above zero"));
    }
    if args.request_timeout.is_zero() {
        return Err(cfg_err("--request-timeout must be above zero"));
    }
    Ok(ReplayConfig {
        upstream: upstream.to_owned(),
        sink,
        health_service: args.health_service.clone(),
        health_url,
        healthy_after: args.healthy_after,
        batch_records: usize::try_from(args.batch_records).unwrap_or(usize::MAX),
        batch_bytes: usize::try_from(args.batch_bytes).unwrap_or(usize::MAX),
        upstream_ca: args.upstream_ca.clone(),
        upstream_headers,
        source_id: String::new(),
        dir: dir.to_path_buf(),
        request_timeout: args.request_timeout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn args(extra: &[&str]) -> RunArgs {
        let mut v = vec!["echopost", "run", "--dir", "/tmp/ep-test"];
        v.extend_from_slice(extra);
        let Command::Run(a) = Cli::try_parse_from(v).unwrap().command else {
            panic!("expected run")
        };
        a
    }

    fn resolve(extra: &[&str]) -> Result<Config, DaemonError> {
        Config::from_run_args_with_env(&args(extra), |_| None)
    }

    #[test]
    fn defaults() {
        let c = resolve(&[]).unwrap();
        assert_eq!(c.dir, PathBuf::from("/tmp/ep-test"));
        assert_eq!(c.socket, PathBuf::from("/tmp/ep-test/echopost.sock"));
        assert_eq!(c.max_record_bytes, 4 << 20);
        assert_eq!(c.linger, Duration::from_secs(3));
        assert_eq!(c.sync_policy_name(), "always");
        assert!(c.replay.is_none());
    }

    #[test]
    fn default_dir_comes_from_the_environment() {
        let Command::Run(a) = Cli::try_parse_from(["echopost", "run"]).unwrap().command else {
            panic!("expected run")
        };
        // ECHOPOST_DIR may be set in the test environment; only check the fallback.
        if a.dirs.dir.is_none() {
            let c = Config::from_run_args_with_env(&a, |k| {
                (k == "HOME").then(|| "/home/someone".to_owned())
            })
            .unwrap();
            assert!(c.dir.starts_with("/home/someone"), "{}", c.dir.display());
            assert!(Config::from_run_args_with_env(&a, |_| None).is_err());
        }
    }

    #[test]
    fn upstream_schemes() {
        let c = resolve(&["--upstream", "grpc://localhost:9000"]).unwrap();
        let r = c.replay.unwrap();
        assert_eq!(r.sink, SinkKind::Deliver);
        assert_eq!(r.health_url, None);
        let c = resolve(&["--upstream", "https://api.example.com/v1/"]).unwrap();
        let r = c.replay.unwrap();
        assert_eq!(r.sink, SinkKind::Forward);
        assert_eq!(
            r.health_url.as_deref(),
            Some("https://api.example.com/v1/healthz")
        );
        assert_eq!(r.batch_records, 16384);
        assert_eq!(r.batch_bytes, 4 << 20);
        let c = resolve(&["--upstream", "http://h", "--sink", "deliver"]).unwrap();
        assert_eq!(c.replay.unwrap().sink, SinkKind::Deliver);
        for bad in ["ftp://h", "localhost:9000", "grpc://", "not a url"] {
            let e = resolve(&["--upstream", bad]).unwrap_err();
            assert_eq!(e.exit_code(), crate::exit::ExitCode::Usage, "{bad}");
            assert!(e.to_string().contains("--upstream"), "{e}");
        }
    }

    #[test]
    fn headers_and_ca() {
        let c = resolve(&[
            "--upstream",
            "grpc://h:1",
            "--upstream-header",
            "Authorization: Bearer x",
        ])
        .unwrap();
        assert_eq!(
            c.replay.unwrap().upstream_headers,
            vec![("authorization".to_owned(), "Bearer x".to_owned())]
        );
        assert!(resolve(&["--upstream", "grpc://h:1", "--upstream-header", "nocolon"]).is_err());
        assert!(
            resolve(&[
                "--upstream",
                "grpc://h:1",
                "--upstream-ca",
                "/nonexistent/ca.pem"
            ])
            .is_err()
        );
    }

    #[test]
    fn limits_are_checked() {
        assert!(resolve(&["--max-record-bytes", "0"]).is_err());
        assert!(resolve(&["--max-record-bytes", "1GiB"]).is_err());
        assert!(resolve(&["--max-disk", "1KiB"]).is_err());
        assert!(resolve(&["--log-level", "info,[[["]).is_err());
        let long = format!("/tmp/{}/s.sock", "x".repeat(200));
        let e = resolve(&["--socket", &long]).unwrap_err();
        assert!(e.to_string().contains("shorter --socket"), "{e}");
    }
}
