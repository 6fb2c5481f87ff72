//! `echopost status`: what is buffered, how old it is, and when it will be gone.
//!
//! Online, every figure comes from the daemon's `Status` RPC (one consistent snapshot,
//! including the live delivery rate). Offline — no daemon answers on the socket — the
//! figures the directory itself holds (sequences, backlog, disk use, the oldest record's
//! timestamp) are read with the engine, and those only a running daemon knows (upstream
//! state, delivery rate, time to drain) are reported as unknown. The output says which of
//! the two it is, because "nothing is being delivered" reads very differently in each.

use std::time::Duration;

use echopost_client::StatusResponse;
use echopost_client::proto::UpstreamState;
use echopost_log::Log;
use prost::Message;
use serde::Serialize;

use super::{
    CommandError, CommandResult, Offline, Target, connect_live, fmt_bytes, fmt_count, fmt_duration,
    fmt_mb_per_s, locked_error, log_error, nothing_there, now_unix_nanos, open_offline,
    print_stdout, resolve, runtime, utc_rfc3339,
};
use crate::cli::StatusArgs;
use crate::daemon::exit::ExitCode;
use crate::escape::{json_pretty, terminal_safe};

/// Everything `status` reports, in the shape of `--json`. Figures a mode cannot know are
/// `null` (e.g. the delivery rate offline).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StatusReport {
    /// `"online"` (asked the daemon) or `"offline"` (read the directory).
    pub mode: &'static str,
    pub dir: String,
    pub socket: String,
    pub pid: Option<u32>,
    pub version: Option<String>,
    pub session_id: Option<String>,
    pub uptime_seconds: Option<f64>,
    pub source_id: Option<String>,
    /// Oldest sequence not yet delivered.
    pub first_sequence: u64,
    /// Sequence the next record will get.
    pub next_sequence: u64,
    pub backlog_records: u64,
    /// Bytes of the segment files holding the backlog (an upper bound).
    pub backlog_bytes: u64,
    /// Bytes of all segment files.
    pub disk_bytes: u64,
    /// The `--max-disk` quota; `null` when none is set or offline.
    pub max_disk_bytes: Option<u64>,
    /// Timestamp of the oldest undelivered record; `null` with an empty backlog.
    pub oldest_record_unix_nanos: Option<i64>,
    pub oldest_record_age_seconds: Option<f64>,
    pub sync_policy: Option<String>,
    pub upstream: Option<String>,
    /// `none`, `probing`, `replaying`, `backing_off`, `stopped`, or `unknown` (offline).
    pub upstream_state: String,
    pub upstream_detail: Option<String>,
    /// Failed attempts since the last successful delivery; `null` when the last attempt
    /// succeeded (or offline). Tells a stuck replay from a slow one.
    pub failing: Option<FailingReport>,
    pub delivered_records: Option<u64>,
    /// Records moved to the dead-letter log by this session (online only).
    pub dead_lettered_records: Option<u64>,
    /// Dead letters held (not yet requeued or purged) and the bytes of their files, live
    /// and offline; `null` when the dead-letter log cannot be read.
    pub dead_letter_records: Option<u64>,
    pub dead_letter_bytes: Option<u64>,
    /// Bytes of the session logs in `DIR/logs`. `--max-disk` counts `disk_bytes`,
    /// `dead_letter_bytes` and this together.
    pub session_log_bytes: u64,
    /// Why replay is paused while it could deliver (the dead letters reached
    /// `--max-disk`); `null` when it is not (or offline).
    pub replay_paused: Option<String>,
    pub delivery_records_per_second: Option<f64>,
    pub delivery_bytes_per_second: Option<f64>,
    /// 0 with nothing to drain; `null` when unknown (offline, or no recent deliveries).
    pub estimated_drain_seconds: Option<f64>,
    /// Offline only: repairs a crash left for the daemon's next start (status does not
    /// make them).
    pub pending_repairs: Vec<String>,
}

/// Why replay is not progressing, in `status --json` (from `StatusResponse`'s
/// `upstream_failure_class` … `next_attempt_unix_nanos`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FailingReport {
    /// `transient`, `server`, `too-large`, `record` (the replay policy's classes) or
    /// `unhealthy` (the health probe failed).
    pub class: String,
    /// Failed attempts (deliveries and health probes) since the last success.
    pub attempts: u32,
    /// The oldest undelivered sequence ("stuck at sequence N"); `null` when nothing is
    /// buffered.
    pub stuck_sequence: Option<u64>,
    pub since_unix_nanos: i64,
    /// `since_unix_nanos` as RFC 3339 UTC.
    pub since: String,
    /// When the next attempt is due; `null` while one is being made.
    pub next_attempt_unix_nanos: Option<i64>,
    /// Seconds until then (0 when due).
    pub next_attempt_in_seconds: Option<f64>,
}

impl FailingReport {
    /// From a daemon's answer; `None` when it reports no failure.
    fn from_status(st: &StatusResponse, now: i64) -> Option<FailingReport> {
        if st.upstream_failure_class.is_empty() {
            return None;
        }
        let next = (st.next_attempt_unix_nanos > 0).then_some(st.next_attempt_unix_nanos);
        Some(FailingReport {
            class: st.upstream_failure_class.clone(),
            attempts: st.upstream_failed_attempts,
            stuck_sequence: (st.stuck_sequence > 0).then_some(st.stuck_sequence),
            since_unix_nanos: st.failing_since_unix_nanos,
            since: utc_rfc3339(st.failing_since_unix_nanos),
            next_attempt_unix_nanos: next,
            next_attempt_in_seconds: next.map(|t| (t.saturating_sub(now)).max(0) as f64 / 1e9),
        })
    }

    /// "stuck at sequence 17 for 5m 3s (since …): 12 failed attempts, last a server
    /// failure; next attempt in 20s".
    fn human(&self, now: i64) -> String {
        let age = fmt_duration(Duration::from_secs_f64(age_seconds(
            self.since_unix_nanos,
            now,
        )));
        let mut s = match self.stuck_sequence {
            Some(seq) => format!("stuck at sequence {seq} for {age} (since {})", self.since),
            None => format!("failing for {age} (since {})", self.since),
        };
        s.push_str(&format!(
            ": {} failed attempt{}, the last {}",
            fmt_count(u64::from(self.attempts)),
            if self.attempts == 1 { "" } else { "s" },
            match self.class.as_str() {
                "unhealthy" => "a failed health probe".to_owned(),
                c => format!("a {c} failure"),
            }
        ));
        match self.next_attempt_in_seconds {
            Some(d) => s.push_str(&format!(
                "; next attempt in {}",
                fmt_duration(Duration::from_secs_f64(d))
            )),
            None => s.push_str("; attempting now"),
        }
        s
    }
}

/// Streams `status` lists, largest backlog first.
const TOP_STREAMS: usize = 5;

/// Runs `echopost status`.
pub fn run(args: &StatusArgs) -> CommandResult {
    let target = resolve(&args.dirs)?;
    let rt = runtime()?;
    let online = rt.block_on(fetch(&target, args.wait.timeout))?;
    let report = match online {
        Ok(st) => from_status(&target, &st, now_unix_nanos()),
        Err(rpc_error) => offline(&target, rpc_error)?,
    };
    // The streams with the largest backlog (issue 14); not fatal when they cannot be had.
    let top = (report.pending_repairs.is_empty() && report.backlog_records > 0)
        .then(|| super::streams::list(&target, args.wait.timeout))
        .map(|r| r.map(|(_, infos)| super::streams::top_by_backlog(infos, TOP_STREAMS)));
    let text = if args.json {
        let mut v = serde_json::to_value(&report)
            .map_err(|e| CommandError::fatal(format!("cannot encode the report: {e}")))?;
        v["top_streams"] = match &top {
            Some(Ok(t)) => t.iter().map(super::streams::stream_json).collect(),
            _ => serde_json::Value::Array(Vec::new()),
        };
        let mut s = json_pretty(&v)
            .map_err(|e| CommandError::fatal(format!("cannot encode the report: {e}")))?;
        s.push('\n');
        s
    } else {
        let mut s = human(&report);
        match &top {
            Some(Ok(t)) if !t.is_empty() => {
                s.push_str("Largest backlogs by stream:\n");
                s.push_str(&super::streams::table(t));
            }
            Some(Err(e)) => s.push_str(&format!("Streams: cannot be listed: {}\n", e.message)),
            _ => {}
        }
        s
    };
    print_stdout(&text)?;
    Ok(ExitCode::Clean)
}

/// The daemon's `Status` (every wait bounded by `timeout`), or why it could not be had
/// (`None`: nothing answers at all), for the offline report. A permission error is the
/// command's error: the daemon is there, and looking offline would not be the truth.
async fn fetch(
    target: &Target,
    timeout: Duration,
) -> Result<Result<StatusResponse, Option<String>>, CommandError> {
    let Some(client) = connect_live(&target.socket, timeout).await? else {
        return Ok(Err(None));
    };
    match client.status().await {
        Ok(st) => Ok(Ok(st)),
        Err(e) if e.is_permission_denied() => Err(CommandError::fatal(e.to_string())),
        Err(e) => Ok(Err(Some(e.to_string()))),
    }
}

fn upstream_state_name(v: i32) -> &'static str {
    match UpstreamState::try_from(v) {
        Ok(UpstreamState::None) => "none",
        Ok(UpstreamState::Probing) => "probing",
        Ok(UpstreamState::Replaying) => "replaying",
        Ok(UpstreamState::BackingOff) => "backing_off",
        Ok(UpstreamState::Stopped) => "stopped",
        Ok(UpstreamState::Unspecified) | Err(_) => "unknown",
    }
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

/// The report for a daemon's answer (`now` in UNIX nanoseconds, for the age).
pub fn from_status(target: &Target, st: &StatusResponse, now: i64) -> StatusReport {
    let oldest = (st.backlog_records > 0 && st.oldest_record_unix_nanos > 0)
        .then_some(st.oldest_record_unix_nanos);
    StatusReport {
        mode: "online",
        dir: if st.dir.is_empty() {
            target.dir.display().to_string()
        } else {
            st.dir.clone()
        },
        socket: target.socket.display().to_string(),
        pid: Some(st.pid),
        version: non_empty(&st.version),
        session_id: non_empty(&st.session_id),
        uptime_seconds: Some(st.uptime_seconds),
        source_id: non_empty(&st.source_id),
        first_sequence: st.first_sequence,
        next_sequence: st.next_sequence,
        backlog_records: st.backlog_records,
        backlog_bytes: st.backlog_bytes,
        disk_bytes: st.disk_bytes,
        max_disk_bytes: (st.max_disk_bytes > 0).then_some(st.max_disk_bytes),
        oldest_record_unix_nanos: oldest,
        oldest_record_age_seconds: oldest.map(|t| age_seconds(t, now)),
        sync_policy: non_empty(&st.sync_policy),
        upstream: non_empty(&st.upstream),
        upstream_state: upstream_state_name(st.upstream_state).to_owned(),
        upstream_detail: non_empty(&st.upstream_detail),
        failing: FailingReport::from_status(st, now),
        delivered_records: Some(st.delivered_records),
        dead_lettered_records: Some(st.dead_lettered_records),
        dead_letter_records: Some(st.dead_letter_records),
        dead_letter_bytes: Some(st.dead_letter_bytes),
        session_log_bytes: st.session_log_bytes,
        replay_paused: non_empty(&st.replay_paused),
        delivery_records_per_second: Some(st.delivery_records_per_second),
        delivery_bytes_per_second: Some(st.delivery_bytes_per_second),
        estimated_drain_seconds: if st.backlog_records == 0 {
            Some(0.0)
        } else {
            (st.estimated_drain_seconds >= 0.0).then_some(st.estimated_drain_seconds)
        },
        pending_repairs: Vec::new(),
    }
}

fn age_seconds(t: i64, now: i64) -> f64 {
    (now.saturating_sub(t)).max(0) as f64 / 1e9
}

/// The report read from the directory. `rpc_error` is why the daemon's answer is missing
/// (`None` when nothing listens at all).
fn offline(target: &Target, rpc_error: Option<String>) -> Result<StatusReport, CommandError> {
    let log = match open_offline(target) {
        Ok(Offline::Log(log)) => log,
        Ok(Offline::Missing) => return Err(nothing_there(target, "does not exist")),
        Ok(Offline::Empty) => {
            return Ok(empty_report(target));
        }
        Ok(Offline::NeedsRepair { layout, repairs }) => {
            return Ok(report_from_layout(target, &layout, repairs));
        }
        Err(mut e) => {
            if let Some(rpc) = rpc_error
                && e.code == ExitCode::Locked
            {
                e = locked_error(target);
                e.message.push_str(&format!(" (asking it: {rpc})"));
            }
            return Err(e);
        }
    };
    let report = report_from_log(target, &log, now_unix_nanos());
    log.close().map_err(|e| log_error(target, e))?;
    report
}

/// An existing directory without a log: nothing has ever been stored there. The dead
/// letters and session logs are read from the directory all the same.
fn empty_report(target: &Target) -> StatusReport {
    let dead_letters = crate::replay::dead_letters::figures(&target.dir).ok();
    StatusReport {
        mode: "offline",
        dir: target.dir.display().to_string(),
        socket: target.socket.display().to_string(),
        pid: None,
        version: None,
        session_id: None,
        uptime_seconds: None,
        source_id: read_source_id(target),
        first_sequence: 1,
        next_sequence: 1,
        backlog_records: 0,
        backlog_bytes: 0,
        disk_bytes: 0,
        max_disk_bytes: None,
        oldest_record_unix_nanos: None,
        oldest_record_age_seconds: None,
        sync_policy: None,
        upstream: None,
        upstream_state: "unknown".to_owned(),
        upstream_detail: None,
        failing: None,
        delivered_records: None,
        dead_lettered_records: None,
        dead_letter_records: dead_letters.map(|f| f.records),
        dead_letter_bytes: dead_letters.map(|f| f.bytes),
        session_log_bytes: crate::daemon::session_log::logs_bytes_in(&target.dir),
        replay_paused: None,
        delivery_records_per_second: None,
        delivery_bytes_per_second: None,
        estimated_drain_seconds: Some(0.0),
        pending_repairs: Vec::new(),
    }
}

/// The offline report from a layout with pending repairs (the log was not opened, so the
/// oldest record's timestamp is not read).
pub fn report_from_layout(
    target: &Target,
    layout: &echopost_log::Layout,
    repairs: Vec<String>,
) -> StatusReport {
    let first_unacked = layout.acked + 1;
    let ends = layout
        .segments
        .iter()
        .skip(1)
        .map(|s| s.first_seq)
        .chain(std::iter::once(layout.next_seq));
    let backlog_bytes = layout
        .segments
        .iter()
        .zip(ends)
        .filter(|(_, end)| *end > first_unacked)
        .map(|(s, _)| s.len)
        .sum();
    let backlog_records = layout.next_seq.saturating_sub(first_unacked);
    let mut report = empty_report(target);
    report.first_sequence = first_unacked;
    report.next_sequence = layout.next_seq;
    report.backlog_records = backlog_records;
    report.backlog_bytes = backlog_bytes;
    report.disk_bytes = layout.segments.iter().map(|s| s.len).sum();
    report.estimated_drain_seconds = (backlog_records == 0).then_some(0.0);
    report.pending_repairs = repairs;
    report
}

fn read_source_id(target: &Target) -> Option<String> {
    std::fs::read_to_string(target.dir.join(crate::daemon::source_id::SOURCE_ID_FILE))
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// The offline report from an open log.
pub fn report_from_log(target: &Target, log: &Log, now: i64) -> Result<StatusReport, CommandError> {
    let stats = log.stats();
    let oldest = if stats.backlog_records > 0 {
        let batch = log
            .reader(stats.first_unacked_seq)
            .next_batch(1, 1)
            .map_err(|e| log_error(target, e))?;
        batch
            .first()
            .and_then(|r| echopost_client::Record::decode(r.data).ok())
            .map(|r| r.timestamp_unix_nanos)
            .filter(|t| *t > 0)
    } else {
        None
    };
    let mut report = empty_report(target);
    report.first_sequence = stats.first_unacked_seq;
    report.next_sequence = stats.next_seq;
    report.backlog_records = stats.backlog_records;
    report.backlog_bytes = stats.backlog_bytes;
    report.disk_bytes = stats.disk_bytes;
    report.oldest_record_unix_nanos = oldest;
    report.oldest_record_age_seconds = oldest.map(|t| age_seconds(t, now));
    report.estimated_drain_seconds = (stats.backlog_records == 0).then_some(0.0);
    Ok(report)
}

/// The text form of the report.
pub fn human(r: &StatusReport) -> String {
    let mut out = String::new();
    // Values carry stored and server-provided text (a main server's error body):
    // control characters are escaped so that they cannot reach the terminal.
    let mut line = |label: &str, value: String| {
        out.push_str(&format!("  {label:<11}{}\n", terminal_safe(&value)));
    };
    let header = if r.mode == "online" {
        format!(
            "echopost {} is running (pid {}, session {}, up {})\n",
            r.version.as_deref().unwrap_or("?"),
            r.pid.unwrap_or(0),
            r.session_id.as_deref().unwrap_or("?"),
            fmt_duration(Duration::from_secs_f64(
                r.uptime_seconds.unwrap_or(0.0).max(0.0)
            ))
        )
    } else {
        format!(
            "offline: no echopost daemon answers on {}; figures read from the directory\n",
            r.socket
        )
    };
    line("directory", r.dir.clone());
    if r.mode == "online" {
        line("socket", r.socket.clone());
    }
    let backlog = if r.backlog_records == 0 {
        format!(
            "empty (next record gets sequence {})",
            fmt_count(r.next_sequence)
        )
    } else {
        format!(
            "{} records, {} on disk (sequences {} to {})",
            fmt_count(r.backlog_records),
            fmt_bytes(r.backlog_bytes),
            r.first_sequence,
            r.next_sequence.saturating_sub(1)
        )
    };
    line("backlog", backlog);
    if let (Some(t), Some(age)) = (r.oldest_record_unix_nanos, r.oldest_record_age_seconds) {
        line(
            "oldest",
            format!(
                "{} old (stored {})",
                fmt_duration(Duration::from_secs_f64(age)),
                utc_rfc3339(t)
            ),
        );
    }
    let disk = match r.max_disk_bytes {
        Some(q) => format!(
            "{} of {} quota ({:.1}%)",
            fmt_bytes(r.disk_bytes),
            fmt_bytes(q),
            r.disk_bytes as f64 * 100.0 / q as f64
        ),
        None if r.mode == "online" => format!("{} (no --max-disk quota)", fmt_bytes(r.disk_bytes)),
        None => fmt_bytes(r.disk_bytes),
    };
    line("disk", disk);
    line(
        "rejected",
        match (r.dead_letter_records, r.dead_letter_bytes) {
            (Some(0), _) => "no dead letters".to_owned(),
            (Some(n), Some(b)) => format!(
                "{} dead letters, {} (`echopost dead-letters list`, then `requeue` or `purge`)",
                fmt_count(n),
                fmt_bytes(b)
            ),
            _ => "the dead-letter log cannot be read (`echopost verify` tells why)".to_owned(),
        },
    );
    line(
        "logs",
        format!("{} of session logs", fmt_bytes(r.session_log_bytes)),
    );
    if let Some(p) = &r.replay_paused {
        line("replay", p.clone());
    }
    if r.mode == "online" {
        if let Some(s) = &r.sync_policy {
            line("sync", s.clone());
        }
        let upstream = match (&r.upstream, r.upstream_state.as_str()) {
            (None, _) => "none configured: records are kept until a run with --upstream".to_owned(),
            (Some(u), state) => {
                let mut s = format!("{u}: {}", state.replace('_', " "));
                if let Some(d) = &r.upstream_detail {
                    s.push_str(&format!(" (last error: {d})"));
                }
                s
            }
        };
        line("upstream", upstream);
        if let Some(f) = &r.failing {
            line("replay", f.human(now_unix_nanos()));
        }
        line(
            "delivered",
            format!(
                "{} records this session, {} dead-lettered",
                fmt_count(r.delivered_records.unwrap_or(0)),
                fmt_count(r.dead_lettered_records.unwrap_or(0))
            ),
        );
        line(
            "rate",
            format!(
                "{:.0} records/s, {}",
                r.delivery_records_per_second.unwrap_or(0.0),
                fmt_mb_per_s(r.delivery_bytes_per_second.unwrap_or(0.0))
            ),
        );
        let drain = match r.estimated_drain_seconds {
            Some(s) if s <= 0.0 => "nothing to drain".to_owned(),
            Some(s) => format!(
                "about {} at the current rate",
                fmt_duration(Duration::from_secs_f64(s))
            ),
            None if r.upstream.is_none() => "not draining (no upstream)".to_owned(),
            None => "unknown (no recent deliveries)".to_owned(),
        };
        line("drain", drain);
    } else {
        line(
            "upstream",
            "unknown offline; `echopost run --upstream URL` replays the backlog".to_owned(),
        );
        line("rate", "n/a (offline)".to_owned());
        let drain = if r.backlog_records == 0 {
            "nothing to drain".to_owned()
        } else {
            "n/a (offline)".to_owned()
        };
        line("drain", drain);
        for r in &r.pending_repairs {
            line(
                "repair",
                format!("pending, done by the next `echopost run`: {r}"),
            );
        }
    }
    format!("{header}{out}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn target() -> Target {
        Target {
            dir: PathBuf::from("/d"),
            socket: PathBuf::from("/d/echopost.sock"),
        }
    }

    #[test]
    fn online_report_maps_every_field() {
        let st = StatusResponse {
            first_sequence: 11,
            next_sequence: 111,
            backlog_records: 100,
            backlog_bytes: 4096,
            disk_bytes: 8192,
            max_disk_bytes: 1 << 20,
            sync_policy: "always".into(),
            upstream: "grpc://h:1".into(),
            upstream_state: UpstreamState::BackingOff as i32,
            upstream_detail: "connection refused".into(),
            delivered_records: 10,
            dead_lettered_records: 1,
            uptime_seconds: 65.0,
            session_id: "s".into(),
            source_id: "abc".into(),
            delivery_records_per_second: 50.0,
            delivery_bytes_per_second: 5000.0,
            estimated_drain_seconds: 2.0,
            oldest_record_unix_nanos: 1_000_000_000,
            dir: "/d".into(),
            pid: 42,
            version: "0.1.0".into(),
            upstream_failure_class: "transient".into(),
            upstream_failed_attempts: 3,
            stuck_sequence: 11,
            failing_since_unix_nanos: 1_000_000_000,
            dead_letter_records: 4,
            dead_letter_bytes: 5000,
            session_log_bytes: 700,
            replay_paused: String::new(),
            next_attempt_unix_nanos: 6_000_000_000,
        };
        let r = from_status(&target(), &st, 4_000_000_000);
        let f = r.failing.clone().expect("failing");
        assert_eq!(
            (f.class.as_str(), f.attempts, f.stuck_sequence),
            ("transient", 3, Some(11))
        );
        assert_eq!(f.next_attempt_in_seconds, Some(2.0));
        let line = f.human(4_000_000_000);
        assert!(
            line.starts_with("stuck at sequence 11 for 3.0 s (since 1970-01-01T00:00:01")
                && line.contains(
                    "3 failed attempts, the last a transient failure; next attempt in 2.0 s"
                ),
            "{line}"
        );
        assert_eq!(r.mode, "online");
        assert_eq!(r.upstream_state, "backing_off");
        assert_eq!(r.oldest_record_age_seconds, Some(3.0));
        assert_eq!(r.max_disk_bytes, Some(1 << 20));
        assert_eq!(r.estimated_drain_seconds, Some(2.0));
        let text = human(&r);
        assert!(text.contains("is running (pid 42"), "{text}");
        assert!(text.contains("100 records"), "{text}");
        assert!(
            text.contains("backing off (last error: connection refused)"),
            "{text}"
        );
        assert!(text.contains("about 2.0 s"), "{text}");

        let unknown = StatusResponse {
            estimated_drain_seconds: -1.0,
            upstream_failure_class: String::new(),
            ..st
        };
        assert_eq!(from_status(&target(), &unknown, 0).failing, None);
        assert_eq!(
            from_status(&target(), &unknown, 0).estimated_drain_seconds,
            None
        );
    }

    #[test]
    fn offline_report_reads_the_log() {
        let tmp = tempfile::tempdir().unwrap();
        let log = Log::open(tmp.path(), echopost_log::LogOptions::default()).unwrap();
        let rec = echopost_client::Record {
            payload: b"x".to_vec(),
            timestamp_unix_nanos: 2_000_000_000,
            ..Default::default()
        };
        log.append(&[rec.encode_to_vec(), rec.encode_to_vec()])
            .unwrap();
        log.ack(1).unwrap();
        let t = Target {
            dir: tmp.path().to_path_buf(),
            socket: tmp.path().join("s"),
        };
        let r = report_from_log(&t, &log, 5_000_000_000).unwrap();
        assert_eq!(r.mode, "offline");
        assert_eq!((r.first_sequence, r.next_sequence), (2, 3));
        assert_eq!(r.backlog_records, 1);
        assert_eq!(r.oldest_record_age_seconds, Some(3.0));
        assert_eq!(r.estimated_drain_seconds, None);
        let text = human(&r);
        assert!(text.starts_with("offline:"), "{text}");
        assert!(text.contains("n/a (offline)"), "{text}");
    }
}
