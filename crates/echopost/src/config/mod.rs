//! Resolved and validated settings of `echopost run`: the one place settings are checked.
//!
//! The command line ([`crate::cli`]) only parses values. Here they are combined with the
//! environment (the default state directory), checked against each other, and turned into
//! the types the rest of the daemon uses ([`LogOptions`], [`ReplayConfig`], [`Upstream`]).
//! Everything that can be wrong with the settings is found here, before the directory is
//! touched, so a typo exits with code 2 and a message naming the flag instead of
//! half-starting; nothing downstream checks a setting again.
//!
//! | file | settings |
//! |---|---|
//! | `mod.rs` | [`Config`]: directory, socket, limits, log level, peers |
//! | [`upstream`] | the `--upstream` URL |
//! | [`replay`] | every replay flag: [`ReplaySettings`] → [`ReplayConfig`] |

pub mod replay;
pub mod upstream;

use std::path::{Path, PathBuf};
use std::time::Duration;

use echopost_log::{Compression, LogOptions, SyncPolicy};

use crate::cli::{RunArgs, SinkArg};
use crate::daemon::exit::DaemonError;
use crate::daemon::platform;
use crate::front_door::FrontDoor;
use crate::ingest::limits::{MAX_BATCH_BYTES, MAX_MESSAGE_BYTES};
pub use replay::{HealthCheck, MAX_IN_FLIGHT, ReplayConfig, ReplaySettings, SinkKind, UpstreamCa};
pub use upstream::Upstream;

/// A setting that cannot work, with a message naming the flag. Exit code 2.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

impl ConfigError {
    /// An error with `message`, which names the flag and says what is accepted.
    pub fn new(message: impl Into<String>) -> ConfigError {
        ConfigError(message.into())
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.0
    }
}

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
    /// Idempotent producers remembered (`--max-producers`).
    pub max_producers: usize,
    /// Streams at most (`--max-streams`).
    pub max_streams: usize,
    /// Idle time with an empty backlog before exiting by itself.
    pub linger: Duration,
    /// Tracing filter directive for stderr and the session log.
    pub log_level: String,
    /// Session logs kept, this run's included (`--keep-session-logs`).
    pub keep_session_logs: usize,
    /// User ids accepted besides the daemon's own.
    pub allowed_uids: Vec<u32>,
    /// What unmodified clients may store (`--accept-grpc`, `--accept-http`).
    pub front_door: FrontDoor,
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

        let front_door = FrontDoor::parse(&args.accept_grpc, args.accept_http).map_err(cfg_err)?;

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
            max_producers: args.max_producers,
            max_streams: args.max_streams,
            linger: args.linger,
            log_level: args.log_level.clone(),
            keep_session_logs: args.keep_session_logs,
            allowed_uids,
            front_door,
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

fn replay_config(args: &RunArgs, upstream: &str, dir: &Path) -> Result<ReplayConfig, DaemonError> {
    let settings = ReplaySettings {
        upstream: upstream.to_owned(),
        sink: match args.sink {
            Some(SinkArg::Deliver) => Some(SinkKind::Deliver),
            Some(SinkArg::Forward) => Some(SinkKind::Forward),
            // Captured requests are replayed as themselves (issue 15).
            None if args.accept_http || !args.accept_grpc.is_empty() => Some(SinkKind::Forward),
            None => None,
        },
        health_service: args.health_service.clone(),
        health_url: args.health_url.clone(),
        healthy_after: args.healthy_after,
        batch_records: args.batch_records,
        batch_bytes: args.batch_bytes,
        upstream_ca: args.upstream_ca.clone(),
        upstream_headers: args.upstream_header.clone(),
        request_timeout: args.request_timeout,
        status_class: args.status_class.clone(),
        isolate_after: args.isolate_after,
        in_flight: args.in_flight,
        dir: dir.to_path_buf(),
    };
    Ok(settings.validate()?)
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
        assert_eq!(c.max_record_bytes, 4095 << 10);
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
        assert!(matches!(r.health, HealthCheck::Grpc { .. }));
        let c = resolve(&["--upstream", "https://api.example.com/v1/"]).unwrap();
        let r = c.replay.unwrap();
        assert_eq!(r.sink, SinkKind::Forward);
        assert_eq!(
            r.health,
            HealthCheck::Http {
                url: "https://api.example.com/v1/healthz".parse().unwrap()
            }
        );
        assert_eq!(r.batch_records, 16384);
        assert_eq!(r.batch_bytes, 4 << 20);
        assert_eq!(r.in_flight, 1, "strict order by default");
        let c = resolve(&["--upstream", "http://h", "--in-flight", "256"]).unwrap();
        assert_eq!(c.replay.unwrap().in_flight, 256);
        let c = resolve(&["--upstream", "grpc://h:1", "--sink", "forward"]).unwrap();
        assert_eq!(c.replay.unwrap().sink, SinkKind::Forward);
        // Found here, before the directory is touched, not when the replayer starts.
        let e = resolve(&["--upstream", "http://h", "--sink", "deliver"]).unwrap_err();
        assert_eq!(e.exit_code(), crate::daemon::exit::ExitCode::Usage);
        assert!(e.to_string().contains("--sink deliver"), "{e}");
        for bad in ["ftp://h", "localhost:9000", "grpc://", "not a url"] {
            let e = resolve(&["--upstream", bad]).unwrap_err();
            assert_eq!(e.exit_code(), crate::daemon::exit::ExitCode::Usage, "{bad}");
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
        let headers = c.replay.unwrap().upstream_headers;
        assert_eq!(headers.len(), 1);
        assert_eq!(headers[0].0.as_str(), "authorization");
        assert_eq!(headers[0].1.to_str().unwrap(), "Bearer x");
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
