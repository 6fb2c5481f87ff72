//! The command line: clap definitions and the parsers for sizes, durations and the sync
//! policy.
//!
//! Every flag has an `ECHOPOST_*` environment twin because the daemon is usually started by
//! the application (or a service manager) rather than typed by hand, and environment
//! variables are the easiest thing to pass through those layers. The flags that name the
//! directory and socket live in [`DirArgs`], a reusable `#[derive(Args)]` struct, so that
//! later subcommands (`status`, `inspect`, `verify`, `send`, `bench`, `dead-letters`) share
//! exactly the same spelling, environment variables and defaults as `run`.
//!
//! This module only *parses*; defaults that depend on the environment (the state
//! directory) and cross-flag validation live in [`crate::config`].

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use echopost_log::SyncPolicy;

/// EchoPost: keeps an application's records safe on local disk while its main server is
/// unreachable, and replays them once it is back.
#[derive(Debug, Parser)]
#[command(name = "echopost", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands: the daemon itself (`run`) and the operator commands, which share its
/// `--dir` / `--socket` flags through [`DirArgs`] and are implemented in
/// [`crate::commands`].
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: accept records on the UNIX socket, store them durably, replay them
    /// to --upstream, and exit once everything is delivered.
    #[command(after_help = RUN_EXIT_CODES)]
    Run(RunArgs),

    /// Show the backlog, its age, disk use, upstream state, delivery rate and time to drain.
    ///
    /// Asks the running daemon; when none answers, reads the directory offline (and says
    /// so: the upstream state and the delivery rate are then unknown).
    #[command(after_help = crate::commands::EXIT_CODES)]
    Status(StatusArgs),

    /// Print stored records as JSON lines, without consuming them.
    ///
    /// One JSON object per record, oldest first. The payload is printed as UTF-8 text when
    /// it is valid UTF-8, as base64 otherwise (`payload_encoding` says which). Reads through
    /// the running daemon, or offline from the directory when none answers; a summary goes
    /// to stderr (not with --json).
    #[command(after_help = crate::commands::EXIT_CODES)]
    Inspect(InspectArgs),

    /// List the streams: version, backlog (records, bytes, sequences, oldest), dead letters.
    ///
    /// A stream's version is the number of records ever appended to it in this directory.
    /// Asks the running daemon; when none answers, reads the directory offline. Counting
    /// the backlog reads every buffered record once.
    #[command(after_help = crate::commands::EXIT_CODES)]
    Streams(StreamsArgs),

    /// Check every byte of the log: exit 0 when intact, 4 (with file, offset, reason) when not.
    ///
    /// Scans every segment (checksums, sequence continuity, seals, cursor) and the
    /// dead-letter log. On damage, prints the file, the byte offset, the reason and what to
    /// do next. Only reads and takes no lock: safe beside a running daemon.
    #[command(after_help = crate::commands::EXIT_CODES)]
    Verify(VerifyArgs),

    /// Keep every readable record of a damaged log; move the damaged files aside.
    ///
    /// Refuses while a daemon owns the directory (exit 3). Moves each damaged segment,
    /// every byte kept, into DIR/quarantine/, rewrites it with every record still
    /// readable before and after the damage (in order, under their own sequences), and
    /// prints the exact sequence ranges lost (also appended to
    /// DIR/quarantine/salvage.log). Then `echopost run` delivers the rest. `verify`
    /// recommends it when it finds damage.
    #[command(after_help = crate::commands::EXIT_CODES)]
    Salvage(SalvageArgs),

    /// Append records from stdin or a file, one per line; print the sequences they got.
    ///
    /// For scripts and tests. With --start-daemon, a daemon is started for --dir when none
    /// answers (exactly one, however many senders do this at once).
    #[command(after_help = SEND_AFTER_HELP)]
    Send(SendArgs),

    /// Load generator: ingest and drain throughput, append latency, daemon memory.
    ///
    /// Appends from concurrent producers to a daemon it starts (or to the one on
    /// --socket), prints records/s, MB/s and p50/p90/p99/p99.9 append latency, then drains
    /// the backlog into a built-in no-op sink and prints the drain rate, and the daemon's
    /// peak RSS in both phases.
    #[command(after_help = BENCH_AFTER_HELP)]
    Bench(BenchArgs),

    /// List or requeue dead letters: records the main server rejected permanently.
    #[command(subcommand)]
    DeadLetters(DeadLettersCommand),
}

/// Shown under `echopost send --help`.
pub const SEND_AFTER_HELP: &str = "\
Each line (without its line ending) is one record's payload; a batch of --batch lines is
stored atomically by one append. A partial batch is sent once input pauses for 100 ms, so
`tail -f app.log | echopost send` works.

Examples:
  printf 'a\\nb\\n' | echopost send --stream demo
  echopost send --file events.jsonl --id-prefix import-7- --header source=import
  echopost send --start-daemon -- --upstream grpc://main:9000 --linger 1m

Exit codes:
  0  every record was stored
  2  usage error, or no daemon answers (start one, or pass --start-daemon)
  3  a daemon is there but did not answer within --timeout (stopped or stuck); a batch
     whose append timed out may or may not be stored
  5  the daemon refused a batch (the message says which and why), or permission denied
     on the socket; earlier batches stay stored";

/// Shown under `echopost bench --help`.
pub const BENCH_AFTER_HELP: &str = "\
Without --socket the bench starts `echopost run` itself (this very binary) in --dir, or in a
temporary directory that is removed afterwards, with a built-in no-op sink on 127.0.0.1 as
its upstream. The sink reports NOT_SERVING while ingesting, so records pile up, then
SERVING: the drain phase times the replay of the whole backlog. The daemon's peak RSS is
read from /proc (Linux) separately for both phases. With --socket the bench appends to
that daemon and only times a drain if it has an upstream.

Examples: one client with batches of 1000, 64 clients with single records, and the
daemon's memory while ingesting and replaying a 2 GiB backlog:
  echopost bench --producers 1 --batch 1000 --record-bytes 256 --duration 30s
  echopost bench --producers 64 --batch 1 --record-bytes 256 --duration 30s
  echopost bench --total-bytes 2GiB --batch 1000 --window 4

Exit codes:
  0  done
  2  usage error
  5  the daemon failed to start, refused appends, or the drain stalled";

/// The exit codes of `echopost run`, shown under its `--help`.
pub const RUN_EXIT_CODES: &str = "\
Exit codes:
  0  clean: SIGTERM/SIGINT, or everything delivered and no append for --linger
  2  usage or configuration error
  3  the directory (or socket) belongs to a running echopost
  4  storage corruption: the message names the file; run `echopost verify`
  5  fatal I/O: fsync failure, or the device is full";

/// Where EchoPost keeps its state and where its socket is. Shared by every subcommand.
#[derive(Debug, Clone, Args)]
pub struct DirArgs {
    /// State directory (log segments, cursor, session logs, socket). Created with mode
    /// 0700. Default: $XDG_STATE_HOME/echopost, else ~/.local/state/echopost (Linux) or
    /// ~/Library/Application Support/echopost (macOS).
    #[arg(long, env = "ECHOPOST_DIR", value_name = "DIR")]
    pub dir: Option<PathBuf>,

    /// UNIX socket the daemon listens on. Default: DIR/echopost.sock.
    #[arg(long, env = "ECHOPOST_SOCKET", value_name = "PATH")]
    pub socket: Option<PathBuf>,
}

/// How long a command waits for the daemon. Shared by the commands that talk to it
/// (`status`, `inspect`, `send`).
#[derive(Debug, Clone, Args)]
pub struct TimeoutArgs {
    /// How long to wait for the daemon: to connect, for each answer, and with
    /// --start-daemon for a daemon to answer at all. A daemon that is stopped or stuck
    /// makes the command fail after this long (exit 3) instead of hanging. E.g. `2s`,
    /// `500ms`.
    #[arg(long, env = "ECHOPOST_TIMEOUT", value_name = "DURATION", default_value = "10s", value_parser = parse_timeout)]
    pub timeout: Duration,
}

/// Flags of `echopost status`.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub dirs: DirArgs,

    #[command(flatten)]
    pub wait: TimeoutArgs,

    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `echopost streams`.
#[derive(Debug, Clone, Args)]
pub struct StreamsArgs {
    #[command(flatten)]
    pub dirs: DirArgs,

    #[command(flatten)]
    pub wait: TimeoutArgs,

    /// Print one JSON object per stream instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `echopost inspect`.
#[derive(Debug, Clone, Args)]
pub struct InspectArgs {
    #[command(flatten)]
    pub dirs: DirArgs,

    #[command(flatten)]
    pub wait: TimeoutArgs,

    /// First sequence to print. Default (and at the earliest): the oldest record not yet
    /// delivered.
    #[arg(long, value_name = "SEQ")]
    pub from: Option<u64>,

    /// Most records to print; 0 prints every stored record from --from on.
    #[arg(long, value_name = "N", default_value = "100")]
    pub limit: u64,

    /// Print only this stream's records (--limit counts those).
    #[arg(long, value_name = "STREAM")]
    pub stream: Option<String>,

    /// Print only the JSON lines, without the summary on stderr.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `echopost verify`.
#[derive(Debug, Clone, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub dirs: DirArgs,

    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `echopost salvage`.
#[derive(Debug, Clone, Args)]
pub struct SalvageArgs {
    #[command(flatten)]
    pub dirs: DirArgs,

    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `echopost send`.
#[derive(Debug, Clone, Args)]
pub struct SendArgs {
    #[command(flatten)]
    pub dirs: DirArgs,

    #[command(flatten)]
    pub wait: TimeoutArgs,

    /// Read the records from FILE instead of stdin (`-` is stdin).
    #[arg(long, value_name = "FILE")]
    pub file: Option<PathBuf>,

    /// Records per append (each append is stored atomically). A batch also ends at 4 MiB.
    #[arg(long, value_name = "N", default_value = "100",
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch: u32,

    /// The records' stream (a logical channel, opaque to EchoPost).
    #[arg(long, value_name = "NAME", default_value = "")]
    pub stream: String,

    /// The records' route, for a verbatim replay: "METHOD /path" (HTTP) or
    /// "/pkg.Service/Method" (gRPC).
    #[arg(long, value_name = "ROUTE", default_value = "")]
    pub route: String,

    /// Give each record the id PREFIX<line number> (1-based), e.g. `import-7-` gives
    /// `import-7-1`, `import-7-2`, ... Without it, ids are empty.
    #[arg(long, value_name = "PREFIX")]
    pub id_prefix: Option<String>,

    /// A header for every record, as NAME=VALUE (repeatable).
    #[arg(long = "header", value_name = "NAME=VALUE", value_parser = parse_key_value)]
    pub headers: Vec<(String, String)>,

    /// If no daemon answers, start `echopost run` for --dir (detached; it exits by itself
    /// once drained). Any number of senders may do this at once: exactly one daemon runs.
    #[arg(long)]
    pub start_daemon: bool,

    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,

    /// `echopost run` flags for a daemon started by --start-daemon, after `--`
    /// (e.g. `-- --upstream grpc://main:9000 --linger 1m`).
    #[arg(last = true, value_name = "RUN_FLAGS")]
    pub run_flags: Vec<String>,
}

/// Flags of `echopost bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// `--dir`: where the daemon started by the bench keeps its log (default: a temporary
    /// directory, removed afterwards). `--socket`: benchmark the daemon already running
    /// there instead of starting one.
    #[command(flatten)]
    pub dirs: DirArgs,

    /// Concurrent producers, each with its own connection.
    #[arg(long, value_name = "N", default_value = "1",
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub producers: u32,

    /// Records per append.
    #[arg(long, value_name = "N", default_value = "1000",
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub batch: u32,

    /// Payload bytes per record, e.g. `256` or `4KiB`.
    #[arg(long, value_name = "BYTES", default_value = "256", value_parser = parse_size)]
    pub record_bytes: u64,

    /// Appends each producer keeps in flight: 1 sends one `Append` and waits for its
    /// acknowledgement; more pipelines over one `AppendStream`.
    #[arg(long, value_name = "N", default_value = "1",
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub window: u32,

    /// Connections the producers share, round-robin (HTTP/2 multiplexes concurrent calls
    /// on one connection, as threads of one application sharing a channel do). 0 gives
    /// every producer its own connection.
    #[arg(long, value_name = "N", default_value = "0")]
    pub connections: u32,

    /// How long to append, e.g. `30s`. Default 10s unless --total-bytes is given.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Stop appending after this much payload, e.g. `2GiB` (with --duration, whichever
    /// comes first).
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    pub total_bytes: Option<u64>,

    /// Sync policy of the daemon the bench starts (see `echopost run --sync`).
    #[arg(long, value_name = "POLICY", default_value = "always", value_parser = parse_sync)]
    pub sync: SyncPolicy,

    /// Stop after the ingest phase: no drain.
    #[arg(long)]
    pub no_drain: bool,

    /// The built-in main server the started daemon replays to: `deliver`, a gRPC
    /// `echopost.v1.Sink/Deliver` that accepts every batch (the daemon runs with `--sink
    /// deliver`), or `http`, an HTTP/1.1 server that accepts every request (the records
    /// carry the route `POST /bench` and the daemon replays each verbatim, `--sink
    /// forward`).
    #[arg(long, value_name = "SINK", default_value = "deliver")]
    pub sink: BenchSinkArg,

    /// How long the built-in sink holds each answer, e.g. `20ms`: a main server that far
    /// away (one round trip).
    #[arg(long, value_name = "DURATION", default_value = "0ms", value_parser = parse_duration)]
    pub sink_latency: Duration,

    /// `--in-flight` of the started daemon: replayed requests (or `Deliver` batches)
    /// awaiting an answer at once.
    #[arg(long, value_name = "N", default_value = "1",
          value_parser = clap::value_parser!(u32).range(1..=i64::from(crate::config::MAX_IN_FLIGHT)))]
    pub in_flight: u32,

    /// Ingest through the front door instead of `Append`: the daemon runs with
    /// `--accept-grpc bench.v1.Bench` and each producer makes unary calls to
    /// `/bench.v1.Bench/Send` whose request message is one record's payload, as an
    /// unmodified gRPC client would (issue 15). Each call is one record, so compare with
    /// `--batch 1` without this flag (the same load shape over `Append`). Needs `--batch 1`.
    #[arg(long)]
    pub front_door: bool,

    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// The built-in main server of `echopost bench` (see `--sink`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchSinkArg {
    /// gRPC `echopost.v1.Sink/Deliver`, batches.
    Deliver,
    /// HTTP/1.1, each record replayed verbatim.
    Http,
}

/// `echopost dead-letters` actions.
#[derive(Debug, Clone, Subcommand)]
pub enum DeadLettersCommand {
    /// Print every dead letter not yet requeued: the record, why it was rejected, and when.
    #[command(after_help = crate::commands::EXIT_CODES)]
    List(DeadLettersArgs),

    /// Put every dead letter back at the end of the backlog, to be replayed again.
    ///
    /// Works with the daemon running (the records go through its Append) or stopped
    /// (straight into the log). The records go after everything stored before them, in
    /// their own order, with new sequences; each keeps its content and carries the
    /// sequence it was first stored under in the `echopost-original-sequence` header, so
    /// its dedupe identity (Idempotency-Key, echopost-sequence metadata) stays the same.
    /// A dead letter is removed only once its record is durable in the backlog.
    #[command(after_help = crate::commands::EXIT_CODES)]
    Requeue(DeadLettersArgs),

    /// Delete dead letters for good, oldest first, after reviewing them with `list`.
    ///
    /// Without --through, every dead letter present when the purge starts is deleted;
    /// with --through SEQ, those up to and including the one of sequence SEQ (as `list`
    /// shows it), so that dead letters written after the review are kept. Works with the
    /// daemon running. Frees their space under --max-disk; a replay paused because the
    /// dead letters filled it goes on within a second.
    #[command(after_help = crate::commands::EXIT_CODES)]
    Purge(DeadLettersPurgeArgs),
}

/// Flags of `echopost dead-letters purge`.
#[derive(Debug, Clone, Args)]
pub struct DeadLettersPurgeArgs {
    #[command(flatten)]
    pub dirs: DirArgs,

    /// Delete the dead letters up to and including the one of this sequence (the
    /// `sequence` that `list` prints); it must exist.
    #[arg(long, value_name = "SEQ")]
    pub through: Option<u64>,

    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `echopost dead-letters list|requeue`.
#[derive(Debug, Clone, Args)]
pub struct DeadLettersArgs {
    #[command(flatten)]
    pub dirs: DirArgs,

    /// Print JSON (lines for `list`, one object for `requeue`) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Parses `NAME=VALUE` (the value may contain `=`; the name must not be empty).
pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
        _ => Err(format!("invalid header {s:?}: expected NAME=VALUE")),
    }
}

mod parse;
mod run;

pub use parse::{parse_duration, parse_size, parse_sync, parse_timeout};
pub use run::{RunArgs, SinkArg};

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("10GB"), Ok(10_000_000_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert_eq!(parse_size("2 mib"), Ok(2 << 20));
        assert_eq!(parse_size("7B"), Ok(7));
        assert!(parse_size("").is_err());
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("99999999999TiB").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("300ms"), Ok(Duration::from_millis(300)));
        assert_eq!(parse_duration("3s"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(
            parse_duration("3")
                .unwrap_err()
                .contains("unit is required")
        );
        assert!(parse_duration("3 fortnights").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn sizes_and_durations_keep_our_spellings() {
        // A lone prefix is binary; spelled-out decimal units stay decimal.
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("2 M"), Ok(2 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size("3t"), Ok(3 << 40));
        assert_eq!(parse_size("1kb"), Ok(1000));
        assert_eq!(parse_size(" 20MiB "), Ok(20 << 20));
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size(".5k"), Ok(512));
        assert!(parse_size("1.2.3MiB").is_err());
        assert!(
            parse_size("12 parsecs")
                .unwrap_err()
                .contains("unknown unit \"parsecs\"")
        );
        assert!(parse_size("MiB").unwrap_err().contains("expected a number"));
        assert!(
            parse_size("1.2.3MiB")
                .unwrap_err()
                .contains("expected a number")
        );

        assert_eq!(parse_duration(" 3s "), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("1m 30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("250µs"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("10ns"), Ok(Duration::from_nanos(10)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(
            parse_duration("8760h"),
            Ok(Duration::from_secs(8760 * 3600))
        );
        assert_eq!(parse_duration(".5s"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.s"), Ok(Duration::from_secs(1)));
        assert!(parse_duration(".").is_err());
        assert!(parse_duration("5M").unwrap_err().contains("minutes"));
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("99999999999999999999h").is_err());
    }

    #[test]
    fn timeouts() {
        assert_eq!(parse_timeout("2s"), Ok(Duration::from_secs(2)));
        assert!(parse_timeout("0").unwrap_err().contains("above zero"));
        assert!(parse_timeout("2").is_err());
        let cli = Cli::try_parse_from(["echopost", "status", "--timeout", "500ms"]).unwrap();
        let Command::Status(a) = cli.command else {
            panic!("expected status")
        };
        assert_eq!(a.wait.timeout, Duration::from_millis(500));
    }

    #[test]
    fn sync_policies() {
        assert_eq!(parse_sync("always"), Ok(SyncPolicy::Always));
        assert_eq!(parse_sync("never"), Ok(SyncPolicy::Never));
        assert_eq!(
            parse_sync("interval:100"),
            Ok(SyncPolicy::Interval(Duration::from_millis(100)))
        );
        assert_eq!(
            parse_sync("interval:1s"),
            Ok(SyncPolicy::Interval(Duration::from_secs(1)))
        );
        assert!(parse_sync("interval:0").is_err());
        assert!(parse_sync("sometimes").is_err());
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_run_flag_has_an_env_twin_and_help() {
        let cmd = Cli::command();
        let run = cmd
            .get_subcommands()
            .find(|c| c.get_name() == "run")
            .unwrap();
        for arg in run.get_arguments() {
            let id = arg.get_id().as_str();
            if id == "help" || id == "version" {
                continue;
            }
            let env = arg
                .get_env()
                .unwrap_or_else(|| panic!("--{id} has no env twin"));
            let expected = format!("ECHOPOST_{}", id.to_ascii_uppercase());
            assert_eq!(env.to_str(), Some(expected.as_str()), "--{id}");
            assert!(arg.get_help().is_some(), "--{id} has no help");
        }
    }

    #[test]
    fn run_parses_flags() {
        let cli = Cli::try_parse_from([
            "echopost",
            "run",
            "--dir",
            "/tmp/x",
            "--sync",
            "interval:50",
            "--max-disk",
            "10GB",
            "--linger",
            "300ms",
            "--allow-uid",
            "1001",
            "--allow-uid",
            "1002",
            "--upstream-header",
            "A: b",
            "--upstream-header",
            "C: d, e",
        ])
        .unwrap();
        let Command::Run(a) = cli.command else {
            panic!("expected run")
        };
        assert_eq!(a.dirs.dir, Some(PathBuf::from("/tmp/x")));
        assert_eq!(a.sync, SyncPolicy::Interval(Duration::from_millis(50)));
        assert_eq!(a.max_disk, Some(10_000_000_000));
        assert_eq!(a.linger, Duration::from_millis(300));
        assert_eq!(a.allow_uid, vec![1001, 1002]);
        assert_eq!(a.upstream_header, vec!["A: b", "C: d, e"]);
        assert_eq!(a.max_record_bytes, 4095 << 10);
        assert_eq!(a.request_timeout, Duration::from_secs(10));
    }
}
