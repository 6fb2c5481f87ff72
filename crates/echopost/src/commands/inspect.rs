//! `echopost inspect`: stored records as JSON lines, without consuming them.
//!
//! One JSON object per line ([`super::record_json`]), so the output feeds `jq`, `grep` and
//! scripts directly, and binary payloads survive (base64, flagged by `payload_encoding`).
//! Records are fetched in pages of [`PAGE`] — through the daemon's `Read` RPC when one
//! answers, from the engine's reader offline — and written as they come, so memory stays
//! bounded however many records are printed. A short summary (how many, which sequences,
//! online or offline) goes to stderr unless `--json` asks for the bare lines.
//!
//! Printing starts at the oldest record *not yet delivered*, or at `--from` if that is
//! later: delivered records are gone as far as EchoPost is concerned (the engine's readers
//! never return them, even while their segment is still on disk).

use std::io::{self, BufWriter, Write};

use echopost_client::{Client, Record};
use echopost_log::Log;
use prost::Message;

use super::{
    CommandError, CommandResult, Offline, Target, client_error, connect_live, fmt_count, log_error,
    nothing_there, open_offline, record_json, resolve, runtime,
};
use crate::cli::InspectArgs;
use crate::daemon::exit::ExitCode;

/// Records fetched per `Read` call or engine read.
pub const PAGE: u64 = 1000;
/// Bytes per engine read offline (a single larger record is still returned alone).
const PAGE_BYTES: usize = 4 << 20;

/// Where the lines go, and what was printed.
struct Printer<W: Write> {
    out: W,
    printed: u64,
    first: Option<u64>,
    last: Option<u64>,
    /// The reader went away (`| head`): stop quietly.
    closed: bool,
}

impl<W: Write> Printer<W> {
    fn new(out: W) -> Self {
        Printer {
            out,
            printed: 0,
            first: None,
            last: None,
            closed: false,
        }
    }

    fn print(&mut self, seq: u64, record: &Record) -> Result<(), CommandError> {
        let mut line = record_json(seq, record);
        line.push('\n');
        match self.out.write_all(line.as_bytes()) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                self.closed = true;
                return Ok(());
            }
            Err(e) => return Err(CommandError::fatal(format!("cannot write to stdout: {e}"))),
        }
        self.printed += 1;
        self.first.get_or_insert(seq);
        self.last = Some(seq);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), CommandError> {
        match self.out.flush() {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
            Err(e) => Err(CommandError::fatal(format!("cannot write to stdout: {e}"))),
        }
    }
}

/// Runs `echopost inspect`.
pub fn run(args: &InspectArgs) -> CommandResult {
    let target = resolve(&args.dirs)?;
    let limit = if args.limit == 0 {
        u64::MAX
    } else {
        args.limit
    };
    let stdout = io::stdout();
    let mut printer = Printer::new(BufWriter::new(stdout.lock()));
    let rt = runtime()?;
    let client = rt.block_on(connect_live(&target.socket, args.wait.timeout))?;
    let (mode, outcome) = match client {
        Some(c) => (
            "read from the running daemon",
            rt.block_on(online(
                &target,
                &c,
                args.from,
                limit,
                args.stream.as_deref(),
                &mut printer,
            )),
        ),
        None => {
            let outcome = match open_offline(&target)? {
                Offline::Missing => return Err(nothing_there(&target, "does not exist")),
                Offline::Empty => Ok(()),
                Offline::NeedsRepair { repairs, .. } => {
                    return Err(CommandError::fatal(format!(
                        "{} was left by a crash with a repair pending ({}). Opening the log would make that repair, and inspect does not change the directory. Either start the daemon (`echopost run --dir {}` repairs it on start; inspect then reads through it), or inspect a copy: cp -a {} /tmp/echopost-copy && echopost inspect --dir /tmp/echopost-copy",
                        target.dir.display(),
                        repairs.join("; "),
                        target.dir.display(),
                        target.dir.display()
                    )));
                }
                Offline::Log(log) => {
                    let res = offline(
                        &target,
                        &log,
                        args.from,
                        limit,
                        args.stream.as_deref(),
                        &mut printer,
                    );
                    let closed = log.close().map_err(|e| log_error(&target, e));
                    res.and(closed)
                }
            };
            (
                "read offline from the directory; no daemon answers",
                outcome,
            )
        }
    };
    printer.flush()?;
    outcome?;
    if !args.json && !printer.closed {
        let summary = match (printer.first, printer.last) {
            (Some(a), Some(b)) => format!(
                "{} record(s), sequences {a} to {b}, {mode} ({})",
                fmt_count(printer.printed),
                target.dir.display()
            ),
            _ => format!(
                "no records{}, {mode} ({})",
                args.from
                    .map_or(String::new(), |f| format!(" from sequence {f} on")),
                target.dir.display()
            ),
        };
        eprintln!("echopost inspect: {summary}");
    }
    Ok(ExitCode::Clean)
}

/// Pages through the daemon's `Read`; every call and message is bounded by the client's
/// deadline (`--timeout`).
async fn online<W: Write>(
    target: &Target,
    client: &Client,
    from: Option<u64>,
    limit: u64,
    stream: Option<&str>,
    printer: &mut Printer<W>,
) -> Result<(), CommandError> {
    let rpc_error = |e: echopost_client::ClientError| client_error(target, &e);
    let mut next = match from {
        Some(f) => f,
        None => client.status().await.map_err(rpc_error)?.first_sequence,
    };
    let mut remaining = limit;
    while remaining > 0 && !printer.closed {
        let want = remaining.min(PAGE);
        // `want` <= PAGE, which fits in u32.
        let page = match stream {
            Some(s) => client.read_stream(next, want as u32, s).await,
            None => client.read(next, want as u32).await,
        }
        .map_err(rpc_error)?;
        let got = page.len() as u64;
        for stored in &page {
            let record = stored.record.clone().unwrap_or_default();
            printer.print(stored.sequence, &record)?;
            next = stored.sequence + 1;
        }
        remaining -= got.min(remaining);
        if got < want {
            break;
        }
    }
    Ok(())
}

fn offline<W: Write>(
    target: &Target,
    log: &Log,
    from: Option<u64>,
    limit: u64,
    stream: Option<&str>,
    printer: &mut Printer<W>,
) -> Result<(), CommandError> {
    let start = from.unwrap_or_else(|| log.stats().first_unacked_seq);
    let mut reader = log.reader(start);
    let mut remaining = limit;
    while remaining > 0 && !printer.closed {
        let want = usize::try_from(remaining.min(PAGE)).unwrap_or(1);
        let batch = reader
            .next_batch(want, PAGE_BYTES)
            .map_err(|e| log_error(target, e))?;
        if batch.is_empty() {
            break;
        }
        for stored in &batch {
            if remaining == 0 {
                break;
            }
            let record = Record::decode(stored.data).map_err(|e| {
                CommandError::new(
                    ExitCode::Corruption,
                    format!(
                        "stored record {} is not a valid echopost.v1.Record: {e}. Run `echopost verify --dir {}`",
                        stored.seq,
                        target.dir.display()
                    ),
                )
            })?;
            if stream.is_some_and(|s| s != record.stream) {
                continue;
            }
            remaining -= 1;
            printer.print(stored.seq, &record)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offline_pages_through_the_log_from_the_first_undelivered_record() {
        let tmp = tempfile::tempdir().unwrap();
        let log = Log::open(tmp.path(), echopost_log::LogOptions::default()).unwrap();
        let recs: Vec<Vec<u8>> = (0..2500u32)
            .map(|i| {
                Record {
                    payload: i.to_string().into_bytes(),
                    ..Default::default()
                }
                .encode_to_vec()
            })
            .collect();
        log.append(&recs).unwrap();
        log.ack(10).unwrap();
        let t = Target {
            dir: tmp.path().to_path_buf(),
            socket: tmp.path().join("s"),
        };
        let mut p = Printer::new(Vec::new());
        offline(&t, &log, None, u64::MAX, None, &mut p).unwrap();
        assert_eq!(p.printed, 2490);
        assert_eq!((p.first, p.last), (Some(11), Some(2500)));
        let text = String::from_utf8(p.out).unwrap();
        let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(first["sequence"], 11);
        assert_eq!(first["payload"], "10");

        let mut p = Printer::new(Vec::new());
        offline(&t, &log, Some(30), 5, None, &mut p).unwrap();
        assert_eq!((p.printed, p.first, p.last), (5, Some(30), Some(34)));
        // Delivered records are not returned.
        let mut p = Printer::new(Vec::new());
        offline(&t, &log, Some(3), 2, None, &mut p).unwrap();
        assert_eq!((p.first, p.last), (Some(11), Some(12)));
    }
}
