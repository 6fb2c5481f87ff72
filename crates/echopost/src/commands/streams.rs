//! `echopost streams`: every stream with its version, backlog and dead letters (issue 14),
//! from the running daemon's `ListStreams`, or offline from the directory (the stream
//! state recovered as the daemon recovers it, without writing anything new, and the
//! backlog counted as `ListStreams` counts it). `status` uses [`top_by_backlog`] to list
//! the streams with the largest backlog.

use std::time::Duration;

use echopost_proto::v1::StreamInfo;
use serde_json::json;

use super::{
    CommandError, CommandResult, Offline, Target, client_error, connect_live, fmt_bytes, fmt_count,
    log_error, nothing_there, open_offline, print_stdout, resolve, runtime, utc_rfc3339,
};
use crate::cli::StreamsArgs;
use crate::daemon::exit::ExitCode;
use crate::escape::{json_string, terminal_safe};
use crate::streams::{backlog, recover};

/// Runs `echopost streams`.
pub fn run(args: &StreamsArgs) -> CommandResult {
    let target = resolve(&args.dirs)?;
    let (mode, infos) = list(&target, args.wait.timeout)?;
    let mut out = String::new();
    if args.json {
        for s in &infos {
            out.push_str(&json_string(&stream_json(s)).unwrap_or_default());
            out.push('\n');
        }
    } else {
        out.push_str(&table(&infos));
        out.push_str(&format!(
            "{} stream(s), {mode} ({})\n",
            fmt_count(infos.len() as u64),
            target.dir.display()
        ));
    }
    print_stdout(&out)?;
    Ok(ExitCode::Clean)
}

/// The streams, from the daemon when one answers (`"online"`), else from the directory
/// (`"offline"`).
pub fn list(
    target: &Target,
    timeout: Duration,
) -> Result<(&'static str, Vec<StreamInfo>), CommandError> {
    let rt = runtime()?;
    if let Some(client) = rt.block_on(connect_live(&target.socket, timeout))? {
        let infos = rt
            .block_on(client.list_streams())
            .map_err(|e| client_error(target, &e))?;
        return Ok(("online", infos));
    }
    let log = match open_offline(target)? {
        Offline::Missing => return Err(nothing_there(target, "does not exist")),
        Offline::Empty => return Ok(("offline", Vec::new())),
        Offline::NeedsRepair { repairs, .. } => {
            return Err(CommandError::fatal(format!(
                "{} was left by a crash with a repair pending ({}); start the daemon (`echopost run --dir {}` repairs it), then list the streams through it",
                target.dir.display(),
                repairs.join("; "),
                target.dir.display()
            )));
        }
        Offline::Log(log) => log,
    };
    let counted = (|| {
        let (mut tables, _) =
            recover(&log, usize::MAX, usize::MAX, false).map_err(|e| match e {
                crate::streams::StreamsError::Log(e) => log_error(target, e),
                other => CommandError::new(ExitCode::Corruption, other.to_string()),
            })?;
        let buffered = tables
            .backlog
            .snapshot(log.stats().first_unacked_seq)
            .complete(&log)
            .map_err(|e| log_error(target, e))?;
        let dead = backlog::dead_letters(&target.dir).map_err(|e| log_error(target, e))?;
        Ok(backlog::stream_infos(&tables, &buffered, &dead))
    })();
    let closed = log.close().map_err(|e| log_error(target, e));
    let infos = counted?;
    closed?;
    Ok(("offline", infos))
}

/// The `n` streams with the most buffered records (ties: by name), only those with any.
pub fn top_by_backlog(mut infos: Vec<StreamInfo>, n: usize) -> Vec<StreamInfo> {
    infos.retain(|s| s.backlog_records > 0);
    infos.sort_by(|a, b| {
        b.backlog_records
            .cmp(&a.backlog_records)
            .then_with(|| a.stream.cmp(&b.stream))
    });
    infos.truncate(n);
    infos
}

/// One stream as a JSON object (`null` for what a stream without backlog does not have).
pub fn stream_json(s: &StreamInfo) -> serde_json::Value {
    let buffered = s.backlog_records > 0;
    json!({
        "stream": s.stream,
        "version": s.version,
        "backlog_records": s.backlog_records,
        "backlog_bytes": s.backlog_bytes,
        "first_sequence": buffered.then_some(s.first_sequence),
        "last_sequence": buffered.then_some(s.last_sequence),
        "oldest_record_unix_nanos": (buffered && s.oldest_record_unix_nanos > 0).then_some(s.oldest_record_unix_nanos),
        "dead_lettered_records": s.dead_lettered_records,
    })
}

/// The text table: one line per stream.
pub fn table(infos: &[StreamInfo]) -> String {
    let mut out = format!(
        "{:<24} {:>10} {:>10} {:>10} {:>21} {:<30} {:>6}\n",
        "STREAM", "VERSION", "BACKLOG", "BYTES", "SEQUENCES", "OLDEST", "DEAD"
    );
    for s in infos {
        let (seqs, oldest) = if s.backlog_records > 0 {
            (
                format!("{}..{}", s.first_sequence, s.last_sequence),
                if s.oldest_record_unix_nanos > 0 {
                    utc_rfc3339(s.oldest_record_unix_nanos)
                } else {
                    "-".to_owned()
                },
            )
        } else {
            ("-".to_owned(), "-".to_owned())
        };
        out.push_str(&format!(
            "{:<24} {:>10} {:>10} {:>10} {:>21} {:<30} {:>6}\n",
            terminal_safe(&s.stream),
            s.version,
            s.backlog_records,
            fmt_bytes(s.backlog_bytes),
            seqs,
            oldest,
            s.dead_lettered_records
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &str, backlog: u64) -> StreamInfo {
        StreamInfo {
            stream: name.into(),
            version: backlog + 1,
            backlog_records: backlog,
            ..StreamInfo::default()
        }
    }

    #[test]
    fn top_streams_are_the_largest_backlogs_first() {
        let all = vec![info("a", 3), info("b", 0), info("c", 9), info("d", 3)];
        let top: Vec<String> = top_by_backlog(all, 2)
            .into_iter()
            .map(|s| s.stream)
            .collect();
        assert_eq!(top, ["c", "a"]);
    }

    #[test]
    fn names_with_control_characters_are_escaped_in_text() {
        let t = table(&[info("evil\n\u{1b}[2J", 1)]);
        assert_eq!(t.lines().count(), 2, "{t}");
        assert!(t.contains("evil\\n\\u{1b}[2J"), "{t}");
    }
}
