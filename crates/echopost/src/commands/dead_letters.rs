//! `echopost dead-letters list|requeue|purge`: the records the main server rejected for
//! good.
//!
//! Both work on the dead-letter log in `DIR/dead-letters/` through
//! [`crate::replay::dead_letters`], which owns its format and its crash-safety rules.
//!
//! * `list` reads it. The replayer holds that log only while it is writing dead letters,
//!   so `list` works beside a running daemon; at the rare moment the replayer holds it,
//!   the command says so (exit 3) and a retry succeeds.
//! * `requeue` puts every dead letter's record back at the end of the backlog (new
//!   sequences, same content plus the `echopost-original-sequence` header that keeps its
//!   dedupe identity) and only then removes it from the dead-letter log. With a daemon
//!   running on the directory it goes through the daemon's `Append`; otherwise straight
//!   into the main log. Either way the replayer delivers the records with the rest.
//! * `purge` deletes dead letters, oldest first, all or `--through SEQ`, beside a running
//!   daemon too; their space counts under `--max-disk` no more.
//!
//! Text output escapes control characters in stored and server-provided text
//! ([`crate::escape`]); JSON output escapes them as JSON does.

use echopost_log::{Log, LogOptions};
use serde::Serialize;

use std::time::Duration;

use super::{
    CommandError, CommandResult, RecordJson, Target, connect_live, fmt_count, log_error,
    print_stdout, resolve, runtime, utc_rfc3339,
};
use crate::cli::{DeadLettersArgs, DeadLettersCommand, DeadLettersPurgeArgs};
use crate::daemon::exit::ExitCode;
use crate::escape::{json_string, terminal_safe};
use crate::replay::dead_letters::{self, DeadLetterError};

/// One dead letter in `list --json`: the record's fields, then why and when.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetterJson {
    #[serde(flatten)]
    pub record: RecordJson,
    pub reason: String,
    pub dead_lettered_unix_nanos: i64,
    pub dead_lettered_at: String,
}

/// Longest wait for the daemon to store one chunk of requeued records.
const REQUEUE_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `echopost dead-letters ...`.
pub fn run(cmd: &DeadLettersCommand) -> CommandResult {
    match cmd {
        DeadLettersCommand::List(a) => list(a),
        DeadLettersCommand::Requeue(a) => requeue(a),
        DeadLettersCommand::Purge(a) => purge(a),
    }
}

fn dl_error(target: &Target, e: DeadLetterError, locked_hint: &str) -> CommandError {
    match e {
        DeadLetterError::Log(echopost_log::Error::Locked { dir }) => CommandError::new(
            ExitCode::Locked,
            format!("{} is locked: {locked_hint}", dir.display()),
        ),
        DeadLetterError::Log(other) => log_error(target, other),
        DeadLetterError::Refused(why) => CommandError::new(
            ExitCode::Fatal,
            format!("the daemon refused the requeued records (they are still dead letters): {why}"),
        ),
        e @ DeadLetterError::NoSuchSequence { .. } => CommandError::usage(e.to_string()),
        other @ (DeadLetterError::Decode { .. } | DeadLetterError::Empty { .. }) => {
            CommandError::new(
                ExitCode::Corruption,
                format!(
                    "{other}. Run `echopost verify --dir {}` for the full report",
                    target.dir.display()
                ),
            )
        }
    }
}

fn list(args: &DeadLettersArgs) -> CommandResult {
    let target = resolve(&args.dirs)?;
    let letters = dead_letters::list(&target.dir).map_err(|e| {
        dl_error(
            &target,
            e,
            "the daemon's replayer is writing a dead letter right now; try again in a moment",
        )
    })?;
    let mut out = String::new();
    for l in &letters {
        let (seq, record) = match &l.record {
            Some(s) => (s.sequence, s.record.clone().unwrap_or_default()),
            None => (0, Default::default()),
        };
        if args.json {
            let line = DeadLetterJson {
                record: RecordJson::new(seq, &record),
                reason: l.reason.clone(),
                dead_lettered_unix_nanos: l.dead_lettered_unix_nanos,
                dead_lettered_at: utc_rfc3339(l.dead_lettered_unix_nanos),
            };
            out.push_str(
                &json_string(&line).map_err(|e| {
                    CommandError::fatal(format!("cannot encode a dead letter: {e}"))
                })?,
            );
            out.push('\n');
        } else {
            let (payload, encoding) = super::payload_text(&record.payload);
            let mut shown: String = payload.chars().take(80).collect();
            if shown.len() < payload.len() {
                shown.push('…');
            }
            // `{:?}` escapes control characters in the record's fields; the reason
            // (the main server's words) is escaped explicitly.
            out.push_str(&format!(
                "sequence {seq}  dead-lettered {}\n  reason   {}\n  record   id={:?} stream={:?} route={:?} payload({encoding})={shown:?}\n",
                utc_rfc3339(l.dead_lettered_unix_nanos),
                terminal_safe(&l.reason),
                record.id,
                record.stream,
                record.route,
            ));
        }
    }
    if !args.json {
        out.push_str(&if letters.is_empty() {
            format!("no dead letters in {}\n", target.dir.display())
        } else {
            format!(
                "{} dead letter(s); `echopost dead-letters requeue --dir {}` puts them back in the backlog\n",
                fmt_count(letters.len() as u64),
                target.dir.display()
            )
        });
    }
    print_stdout(&out)?;
    Ok(ExitCode::Clean)
}

fn requeue(args: &DeadLettersArgs) -> CommandResult {
    let target = resolve(&args.dirs)?;
    let n = if dead_letters::dead_letter_dir(&target.dir).is_dir() {
        let rt = runtime()?;
        match rt.block_on(connect_live(&target.socket, REQUEUE_TIMEOUT))? {
            Some(client) => requeue_live(&target, &rt, &client)?,
            None => requeue_offline(&target)?,
        }
    } else {
        0
    };
    let text = if args.json {
        format!("{}\n", serde_json::json!({ "requeued": n }))
    } else if n == 0 {
        format!("no dead letters to requeue in {}\n", target.dir.display())
    } else {
        format!(
            "requeued {} record(s) at the end of the backlog of {} (after the records stored before them, in their own order, each with its original sequence in the echopost-original-sequence header); they are replayed with the rest\n",
            fmt_count(n as u64),
            target.dir.display()
        )
    };
    print_stdout(&text)?;
    Ok(ExitCode::Clean)
}

fn purge(args: &DeadLettersPurgeArgs) -> CommandResult {
    let target = resolve(&args.dirs)?;
    let purged = dead_letters::purge(&target.dir, args.through).map_err(|e| {
        dl_error(
            &target,
            e,
            "the daemon's replayer is holding the dead-letter log; try again in a moment",
        )
    })?;
    let text = if args.json {
        format!(
            "{}\n",
            serde_json::json!({
                "purged": purged.records,
                "dead_letter_records": purged.left.records,
                "dead_letter_bytes": purged.left.bytes,
            })
        )
    } else if purged.records == 0 {
        format!("no dead letters to purge in {}\n", target.dir.display())
    } else {
        format!(
            "purged {} dead letter(s) from {}; {} left ({})\n",
            fmt_count(purged.records),
            target.dir.display(),
            fmt_count(purged.left.records),
            super::fmt_bytes(purged.left.bytes)
        )
    };
    print_stdout(&text)?;
    Ok(ExitCode::Clean)
}

/// Requeue through the running daemon's `Append`: it stores each chunk durably, in order,
/// after what it stored before, under the same rules as any append.
fn requeue_live(
    target: &Target,
    rt: &tokio::runtime::Runtime,
    client: &echopost_client::Client,
) -> Result<usize, CommandError> {
    dead_letters::requeue_with(&target.dir, |records| {
        rt.block_on(client.append(records.to_vec()))
            .map(|_| ())
            .map_err(|e| DeadLetterError::Refused(e.to_string()))
    })
    .map_err(|e| {
        dl_error(
            target,
            e,
            "the daemon's replayer is holding the dead-letter log; try again in a moment",
        )
    })
}

/// Requeue straight into the main log (no daemon answers on the socket).
fn requeue_offline(target: &Target) -> Result<usize, CommandError> {
    let log = Log::open(&target.dir, LogOptions::default()).map_err(|e| match e {
        echopost_log::Error::Locked { .. } => CommandError::new(
            ExitCode::Locked,
            format!(
                "a daemon owns {} but does not answer on {}: run requeue again once it answers (or once it stopped)",
                target.dir.display(),
                target.socket.display()
            ),
        ),
        other => log_error(target, other),
    })?;
    let res = dead_letters::requeue(&target.dir, &log).map_err(|e| {
        dl_error(
            target,
            e,
            "another process is using the dead-letter log; try again in a moment",
        )
    });
    let closed = log.close().map_err(|e| log_error(target, e));
    let n = res?;
    closed?;
    Ok(n)
}
