//! `echopost run`'s flags: the daemon's settings as typed (validated in `crate::config`).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use echopost_log::SyncPolicy;

use super::DirArgs;
use super::parse::{parse_duration, parse_size, parse_sync};

/// How replayed records are delivered (see `--sink`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SinkArg {
    /// Batches of records to the upstream's `echopost.v1.Sink/Deliver`.
    Deliver,
    /// Each record replayed verbatim as the HTTP or gRPC request it stands for.
    Forward,
}

/// Flags of `echopost run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub dirs: DirArgs,

    /// Store every unary call to a matching gRPC service as a record, answered OK with an
    /// empty response message once durable (repeatable): a full service name
    /// (`acme.orders.v1.Orders`), a prefix ending in `*` (`opentelemetry.proto.collector.*`)
    /// or `*` (any service but echopost's own, health and reflection). Streaming calls get
    /// UNIMPLEMENTED. Makes `forward` the default --sink. In ECHOPOST_ACCEPT_GRPC, separate
    /// patterns with commas.
    #[arg(
        long,
        env = "ECHOPOST_ACCEPT_GRPC",
        value_name = "PATTERN",
        value_delimiter = ','
    )]
    pub accept_grpc: Vec<String>,

    /// Store every HTTP/1.1 request on the socket (and every HTTP/2 request that is not
    /// gRPC) as a record: route "METHOD /path?query", the headers, the body. Answered 202
    /// Accepted with {"first_sequence":N,"last_sequence":N} once durable; 413 for a body
    /// over --max-record-bytes, 503 with Retry-After when the quota is full or the daemon is
    /// stopping, 400 for a request that cannot be stored. Makes `forward` the default
    /// --sink.
    #[arg(long, env = "ECHOPOST_ACCEPT_HTTP")]
    pub accept_http: bool,

    /// Main server to replay to: grpc://, grpcs://, http:// or https:// URL. Without it,
    /// records are kept until a later run names one.
    #[arg(long, env = "ECHOPOST_UPSTREAM", value_name = "URL")]
    pub upstream: Option<String>,

    /// When an append counts as durable: `always` (fdatasync before answering; nothing
    /// acknowledged is lost even on power loss), `interval:MS` (sync every MS
    /// milliseconds; power loss loses at most that window), or `never` (the OS decides).
    #[arg(long, env = "ECHOPOST_SYNC", value_name = "POLICY", default_value = "always", value_parser = parse_sync)]
    pub sync: SyncPolicy,

    /// Disk quota, e.g. `512MiB` or `10GB`, over the stored records, the dead letters and
    /// the session logs together. Appends beyond it are refused with RESOURCE_EXHAUSTED
    /// until replay frees space or dead letters are purged; when the dead letters fill it,
    /// replay pauses (see `status`) until `echopost dead-letters purge` or `requeue`.
    /// Default: no limit.
    #[arg(long, env = "ECHOPOST_MAX_DISK", value_name = "BYTES", value_parser = parse_size)]
    pub max_disk: Option<u64>,

    /// How long to stay up with an empty backlog and no appends before exiting, e.g.
    /// `3s`, `300ms`, `1m`.
    #[arg(long, env = "ECHOPOST_LINGER", value_name = "DURATION", default_value = "3s", value_parser = parse_duration)]
    pub linger: Duration,

    /// Largest accepted record (its encoded size), e.g. `4MiB`. The default, 4 MiB less
    /// 1 KiB, lets the largest record fit a stock gRPC server's default 4 MiB message limit
    /// inside a `Sink/Deliver` request, envelope included. Larger records are refused
    /// with INVALID_ARGUMENT.
    #[arg(long, env = "ECHOPOST_MAX_RECORD_BYTES", value_name = "BYTES", default_value = "4095KiB", value_parser = parse_size)]
    pub max_record_bytes: u64,

    /// Idempotent producers remembered (issue 14), least recently used evicted first. An
    /// evicted producer is unknown again: its next batch starts a new series, so a retry
    /// arriving after its producer was evicted is stored a second time.
    #[arg(long, env = "ECHOPOST_MAX_PRODUCERS", value_name = "N", default_value_t = crate::streams::DEFAULT_MAX_PRODUCERS, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_producers: usize,

    /// Streams this directory holds at most (a stream exists once a record named it);
    /// a batch that would create more is refused with RESOURCE_EXHAUSTED.
    #[arg(long, env = "ECHOPOST_MAX_STREAMS", value_name = "N", default_value_t = crate::streams::DEFAULT_MAX_STREAMS, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_streams: usize,

    /// Log verbosity for stderr and the session log: error, warn, info, debug, trace, or
    /// a tracing filter such as `info,echopost_log=debug`.
    #[arg(
        long,
        env = "ECHOPOST_LOG_LEVEL",
        value_name = "LEVEL",
        default_value = "info"
    )]
    pub log_level: String,

    /// Session logs (`DIR/logs/*.log`) to keep, this run's included: older ones are
    /// deleted when the daemon starts (never while it runs). A start that finds another
    /// daemon owning the directory writes no log at all.
    #[arg(long, env = "ECHOPOST_KEEP_SESSION_LOGS", value_name = "N", default_value_t = crate::daemon::session_log::DEFAULT_KEEP, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub keep_session_logs: usize,

    /// Also accept connections from this user id (repeatable; the daemon's own uid is
    /// always accepted). In ECHOPOST_ALLOW_UID, separate uids with commas.
    #[arg(
        long,
        env = "ECHOPOST_ALLOW_UID",
        value_name = "UID",
        value_delimiter = ','
    )]
    pub allow_uid: Vec<u32>,

    /// How replayed records are delivered. Default: `forward` with --accept-grpc or
    /// --accept-http; otherwise `deliver` for grpc:// and grpcs:// upstreams, `forward` for
    /// http:// and https://. With `forward`, each record is sent
    /// as the request its route names, and a record that could never be sent (no route, a
    /// route of the wrong form, a header the protocol cannot carry) is refused at append
    /// time with INVALID_ARGUMENT. HTTP: 307/308 to the same origin are followed (method
    /// and body kept, 5 hops at most); other redirects pause replay (server class).
    #[arg(long, env = "ECHOPOST_SINK", value_name = "SINK")]
    pub sink: Option<SinkArg>,

    /// Service name checked with grpc.health.v1.Health/Check on gRPC upstreams
    /// ("" = the whole server).
    #[arg(
        long,
        env = "ECHOPOST_HEALTH_SERVICE",
        value_name = "NAME",
        default_value = ""
    )]
    pub health_service: String,

    /// URL probed with GET on HTTP upstreams. Default: <upstream>/healthz.
    #[arg(long, env = "ECHOPOST_HEALTH_URL", value_name = "URL")]
    pub health_url: Option<String>,

    /// Consecutive successful health probes needed before replay starts.
    #[arg(long, env = "ECHOPOST_HEALTHY_AFTER", value_name = "N", default_value = "1",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub healthy_after: u32,

    /// Most records per replay batch (each batch is also bounded by --batch-bytes, which
    /// is what limits it for typical record sizes; large batches drain fastest).
    #[arg(long, env = "ECHOPOST_BATCH_RECORDS", value_name = "N", default_value = "16384",
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub batch_records: u64,

    /// Most bytes per replay batch, e.g. `4MiB` (a single larger record is still sent
    /// alone).
    #[arg(long, env = "ECHOPOST_BATCH_BYTES", value_name = "BYTES", default_value = "4MiB", value_parser = parse_size)]
    pub batch_bytes: u64,

    /// PEM file with the CA certificate(s) that sign a TLS upstream's certificate.
    #[arg(long, env = "ECHOPOST_UPSTREAM_CA", value_name = "FILE")]
    pub upstream_ca: Option<PathBuf>,

    /// Extra header for every replayed request, as "Name: value" (repeatable). In
    /// ECHOPOST_UPSTREAM_HEADER, separate headers with newlines.
    #[arg(
        long,
        env = "ECHOPOST_UPSTREAM_HEADER",
        value_name = "HEADER",
        value_delimiter = '\n'
    )]
    pub upstream_header: Vec<String>,

    /// Timeout of each replayed request, e.g. `10s`.
    #[arg(long, env = "ECHOPOST_REQUEST_TIMEOUT", value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub request_timeout: Duration,

    /// Move a status to another failure class (repeatable): `http:STATUS=CLASS` (a code
    /// such as 409, or a range such as 4xx) or `grpc:CODE=CLASS` (e.g. NOT_FOUND).
    /// Classes: `transient` (back off and retry the same records), `server` (the server
    /// or the configuration is wrong: pause, dead-letter nothing), `too-large` (halve the
    /// batch; dead-letter only a record too large alone), `record` (the record's fault:
    /// dead-letter it). Defaults: connection errors, timeouts, HTTP 408/429/5xx and gRPC
    /// UNAVAILABLE/DEADLINE_EXCEEDED/ABORTED/INTERNAL/UNKNOWN/RESOURCE_EXHAUSTED are
    /// transient; HTTP 3xx/401/403/404/405/407/411/426, gRPC
    /// UNAUTHENTICATED/PERMISSION_DENIED/UNIMPLEMENTED and TLS failures are server; HTTP
    /// 413 and gRPC message-size errors are too-large; other 4xx and gRPC codes are record.
    /// `echopost status` shows the class of the last failure, the failed attempts, the
    /// sequence replay is stuck at and since when, and the next attempt.
    #[arg(
        long,
        env = "ECHOPOST_STATUS_CLASS",
        value_name = "STATUS=CLASS",
        value_delimiter = ','
    )]
    pub status_class: Vec<String>,

    /// How long a batch must keep failing with transient errors while the main server
    /// passes its health checks before its records are sent one by one; a record that then
    /// keeps failing alone for as long (3 tries at least) is tested against the next record:
    /// if the server accepts that one and the record fails once more, the record is
    /// dead-lettered; if the next one fails too, the outage is server-wide and nothing is.
    /// One record holds up the rest for about twice this, plus backoff.
    #[arg(long, env = "ECHOPOST_ISOLATE_AFTER", value_name = "DURATION", default_value = "20s", value_parser = parse_duration)]
    pub isolate_after: Duration,

    /// Most replayed requests awaiting the main server's answer at once: verbatim requests
    /// with `--sink forward` (HTTP: over as many keep-alive connections, or multiplexed on
    /// one HTTP/2 connection when an https:// server offers h2; gRPC: multiplexed on the
    /// channel), `Deliver` batches with `--sink deliver`. 1 (the default) is strict order:
    /// each request starts after the one before it was answered. With N > 1, requests are
    /// still started in sequence order, but the main server may receive and process them
    /// in any order within a window of N (a record can overtake at most N-1 records or
    /// batches before it; one that fails is retried after later ones went through), and a
    /// crash re-delivers what was in flight, so up to N requests, plus what was delivered
    /// since the last acknowledgement (at most 50 ms or 64 MiB). The acknowledgement cursor
    /// only advances over the records before the oldest unanswered one; nothing is
    /// skipped.
    #[arg(long, env = "ECHOPOST_IN_FLIGHT", value_name = "N", default_value = "1",
          value_parser = clap::value_parser!(u32).range(1..=i64::from(crate::config::MAX_IN_FLIGHT)))]
    pub in_flight: u32,
}
