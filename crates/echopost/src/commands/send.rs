//! `echopost send`: append records from stdin or a file, one per line.
//!
//! Meant for scripts and tests: every line (without its `\n` or `\r\n`) becomes one
//! record's payload, `--batch` lines are stored atomically by one append, and the
//! sequences they got are printed. Lines are read on a separate thread and handed over
//! through a bounded channel, so a slow producer (`tail -f`) is batched by time as well:
//! a partial batch is sent once input pauses for [`IDLE_FLUSH`].
//!
//! With `--start-daemon`, appends go through [`echopost_client::Fallback`], which starts
//! `echopost run` (this binary, or `$ECHOPOST_BIN`) when no daemon answers. Many senders
//! doing that at once still end with exactly one daemon: the directory lock decides, and
//! the losers' helpers wait for the winner's socket. This is the command-line face of the
//! fallback path an application uses, and how the tests exercise it across processes.
//!
//! `--timeout` bounds every wait: connecting, each append, and with `--start-daemon` the
//! wait for a daemon to answer (the helper's start timeout). A daemon that is stopped or
//! stuck ends the command with exit 3 after that long, saying which lines were stored,
//! which were not, and which may or may not have been (a batch whose append timed out).

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::time::Duration;

use clap::Parser;
use echopost_client::{Appended, Client, ClientError, DaemonSettings, Fallback, Record};
use serde::Serialize;
use tokio::sync::mpsc;

use super::{
    CommandError, CommandResult, Target, client_error, connect_live, fmt_count, fmt_ranges,
    merge_ranges, print_stdout, resolve, runtime,
};
use crate::cli::{Cli, Command, SendArgs};
use crate::config::Config;
use crate::daemon::exit::ExitCode;

/// A partial batch is sent when no line arrived for this long.
pub const IDLE_FLUSH: Duration = Duration::from_millis(100);
/// A batch also ends once its payloads reach this size (well below the 64 MiB message
/// limit, so a batch of long lines is not refused as a whole).
pub const MAX_BATCH_PAYLOAD: usize = 4 << 20;
/// Lines read ahead of the appends.
const READ_AHEAD: usize = 4096;

/// What `send` stored, in the shape of `--json`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SendReport {
    pub records: u64,
    pub appends: u64,
    /// Sequence ranges `[first, last]` the records were stored as, in input order
    /// (adjacent ranges merged; other producers' appends may interleave).
    pub ranges: Vec<[u64; 2]>,
}

/// Where the batches go.
enum Destination {
    Daemon(Box<Client>),
    Fallback(Box<Fallback>),
}

impl Destination {
    async fn append(&self, records: Vec<Record>) -> Result<Appended, ClientError> {
        match self {
            Destination::Daemon(c) => c.append(records).await,
            Destination::Fallback(f) => f.append(records).await,
        }
    }
}

/// Runs `echopost send`.
pub fn run(args: &SendArgs) -> CommandResult {
    let target = resolve(&args.dirs)?;
    if !args.run_flags.is_empty() && !args.start_daemon {
        return Err(CommandError::usage(
            "the `echopost run` flags after `--` only apply with --start-daemon",
        ));
    }
    let input: Box<dyn Read + Send> = match &args.file {
        None => Box::new(io::stdin()),
        Some(p) if p.as_os_str() == "-" => Box::new(io::stdin()),
        Some(p) => Box::new(File::open(p).map_err(|e| {
            CommandError::usage(format!("cannot open --file {}: {e}", p.display()))
        })?),
    };
    let timeout = args.wait.timeout;
    let fallback = if args.start_daemon {
        let mut settings = fallback_settings(&target, &args.run_flags)?;
        settings.start_timeout = timeout;
        settings.call_timeout = timeout;
        Some(settings)
    } else {
        None
    };
    let rt = runtime()?;
    let report = rt.block_on(async {
        let to = match fallback {
            Some(settings) => Destination::Fallback(Box::new(Fallback::new(settings))),
            None => match connect_live(&target.socket, timeout).await? {
                Some(c) => Destination::Daemon(Box::new(c)),
                None => {
                    return Err(CommandError::usage(format!(
                        "no echopost daemon answers on {}: start one with `echopost run --dir {}`, or pass --start-daemon",
                        target.socket.display(),
                        target.dir.display()
                    )));
                }
            },
        };
        pump(input, &to, &target, args).await
    })?;
    let text = if args.json {
        let mut s = serde_json::to_string(&report)
            .map_err(|e| CommandError::fatal(format!("cannot encode the report: {e}")))?;
        s.push('\n');
        s
    } else if report.records == 0 {
        "nothing sent: the input was empty\n".to_owned()
    } else {
        let ranges: Vec<(u64, u64)> = report.ranges.iter().map(|r| (r[0], r[1])).collect();
        format!(
            "stored {} record(s) in {} append(s) as sequences {}\n",
            fmt_count(report.records),
            report.appends,
            fmt_ranges(&ranges)
        )
    };
    print_stdout(&text)?;
    Ok(ExitCode::Clean)
}

/// How `--start-daemon` starts the daemon: this binary (unless `$ECHOPOST_BIN` names
/// another), the resolved directory and socket, and the extra `run` flags, which are
/// checked here so that a typo is a usage error now rather than a daemon that silently
/// fails to start later.
fn fallback_settings(
    target: &Target,
    run_flags: &[String],
) -> Result<DaemonSettings, CommandError> {
    let mut argv: Vec<String> = vec![
        "echopost".into(),
        "run".into(),
        "--dir".into(),
        target.dir.display().to_string(),
        "--socket".into(),
        target.socket.display().to_string(),
    ];
    argv.extend(run_flags.iter().cloned());
    let parsed = Cli::try_parse_from(&argv).map_err(|e| {
        CommandError::usage(format!(
            "invalid `echopost run` flags after `--`: {}",
            e.to_string().trim()
        ))
    })?;
    if let Command::Run(run) = parsed.command {
        Config::from_run_args(&run).map_err(|e| {
            CommandError::usage(format!("invalid `echopost run` flags after `--`: {e}"))
        })?;
    }
    let mut settings = DaemonSettings::new(&target.dir);
    if std::env::var_os("ECHOPOST_BIN").is_none() {
        settings.binary = std::env::current_exe().map_err(|e| {
            CommandError::fatal(format!(
                "cannot find this executable to start the daemon: {e}; set ECHOPOST_BIN"
            ))
        })?;
    }
    settings.socket = Some(target.socket.clone());
    settings.extra_args = run_flags.iter().map(Into::into).collect();
    Ok(settings)
}

/// Reads lines on a thread; each item is one line without its line ending.
fn spawn_reader(input: Box<dyn Read + Send>) -> mpsc::Receiver<io::Result<Vec<u8>>> {
    let (tx, rx) = mpsc::channel(READ_AHEAD);
    let spawned = std::thread::Builder::new()
        .name("echopost-send-reader".into())
        .spawn(move || {
            let mut r = BufReader::with_capacity(1 << 16, input);
            loop {
                let mut line = Vec::new();
                match r.read_until(b'\n', &mut line) {
                    Ok(0) => return,
                    Ok(_) => {
                        if line.last() == Some(&b'\n') {
                            line.pop();
                            if line.last() == Some(&b'\r') {
                                line.pop();
                            }
                        }
                        if tx.blocking_send(Ok(line)).is_err() {
                            return;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        return;
                    }
                }
            }
        });
    if let Err(e) = spawned {
        // The receiver then reports the failure as the first item.
        let (tx, rx) = mpsc::channel(1);
        let _ = tx.try_send(Err(e));
        return rx;
    }
    rx
}

async fn pump(
    input: Box<dyn Read + Send>,
    to: &Destination,
    target: &Target,
    args: &SendArgs,
) -> Result<SendReport, CommandError> {
    let mut lines = spawn_reader(input);
    let mut report = SendReport {
        records: 0,
        appends: 0,
        ranges: Vec::new(),
    };
    let mut batch: Vec<Record> = Vec::new();
    let mut batch_bytes = 0usize;
    let mut line_no = 0u64;
    let batch_max = args.batch as usize;
    loop {
        let next = if batch.is_empty() {
            lines.recv().await
        } else {
            match tokio::time::timeout(IDLE_FLUSH, lines.recv()).await {
                Ok(item) => item,
                Err(_) => {
                    flush(
                        to,
                        target,
                        &mut batch,
                        &mut batch_bytes,
                        &mut report,
                        line_no,
                    )
                    .await?;
                    continue;
                }
            }
        };
        match next {
            None => break,
            Some(Err(e)) => {
                flush(
                    to,
                    target,
                    &mut batch,
                    &mut batch_bytes,
                    &mut report,
                    line_no,
                )
                .await?;
                return Err(CommandError::fatal(format!(
                    "cannot read the input after line {line_no}: {e} (lines up to {line_no} were stored)"
                )));
            }
            Some(Ok(payload)) => {
                line_no += 1;
                batch_bytes += payload.len();
                batch.push(make_record(args, line_no, payload));
                if batch.len() >= batch_max || batch_bytes >= MAX_BATCH_PAYLOAD {
                    flush(
                        to,
                        target,
                        &mut batch,
                        &mut batch_bytes,
                        &mut report,
                        line_no,
                    )
                    .await?;
                }
            }
        }
    }
    flush(
        to,
        target,
        &mut batch,
        &mut batch_bytes,
        &mut report,
        line_no,
    )
    .await?;
    report.ranges = merge_ranges(
        &report
            .ranges
            .iter()
            .map(|r| (r[0], r[1]))
            .collect::<Vec<_>>(),
    )
    .into_iter()
    .map(|(a, b)| [a, b])
    .collect();
    Ok(report)
}

fn make_record(args: &SendArgs, line_no: u64, payload: Vec<u8>) -> Record {
    Record {
        id: args
            .id_prefix
            .as_ref()
            .map_or_else(String::new, |p| format!("{p}{line_no}")),
        stream: args.stream.clone(),
        payload,
        headers: args.headers.iter().cloned().collect(),
        route: args.route.clone(),
        timestamp_unix_nanos: 0,
    }
}

async fn flush(
    to: &Destination,
    target: &Target,
    batch: &mut Vec<Record>,
    batch_bytes: &mut usize,
    report: &mut SendReport,
    line_no: u64,
) -> Result<(), CommandError> {
    if batch.is_empty() {
        return Ok(());
    }
    let records = std::mem::take(batch);
    *batch_bytes = 0;
    let n = records.len() as u64;
    let first_line = line_no + 1 - n;
    match to.append(records).await {
        Ok(a) => {
            report.records += n;
            report.appends += 1;
            report.ranges.push([a.first_sequence, a.last_sequence]);
            Ok(())
        }
        Err(e) => {
            let stored = if report.records == 0 {
                "nothing was stored".to_owned()
            } else {
                let ranges: Vec<(u64, u64)> = report.ranges.iter().map(|r| (r[0], r[1])).collect();
                format!(
                    "lines 1 to {} were stored as sequences {}",
                    first_line - 1,
                    fmt_ranges(&ranges)
                )
            };
            // A batch whose append timed out reached a daemon that may still store it.
            let this_batch = if matches!(e, ClientError::Timeout { .. }) {
                format!(
                    "lines {first_line} to {line_no} may or may not have been stored (resending them may store them twice)"
                )
            } else {
                format!("lines {first_line} to {line_no} were not stored")
            };
            let mut err = client_error(target, &e);
            err.message = format!("{this_batch}: {}; {stored}", err.message);
            Err(err)
        }
    }
}
