//! The drain phase: how fast the daemon replays its backlog to the main server.
//!
//! The daemon the bench starts has the bench's sink ([`BenchSink`]) as its upstream,
//! unhealthy while the backlog is built. Turning it healthy starts the replay; the drain
//! is timed from the first request the sink receives until `Status` shows an empty backlog (every
//! record delivered *and* acknowledged). The wait for the replayer's next health probe is
//! reported separately, because it is backoff, not throughput. Against a daemon on
//! `--socket` there is no sink to watch, so the clock starts when the phase does.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use echopost_client::Client;
use echopost_client::proto::UpstreamState;

use super::progress::{ProgressLine, eta};
use super::report::DrainReport;
use super::sink::BenchSink;
use super::status;
use crate::commands::{CommandError, fmt_count, fmt_duration};

/// How often the drain phase asks `Status` whether the backlog is empty.
const DRAIN_POLL: Duration = Duration::from_millis(50);
/// A drain with no delivery for this long has stalled.
const DRAIN_STALL: Duration = Duration::from_secs(60);

/// Lets the daemon replay `backlog` records of `record_bytes` payload and times it.
/// `None` when Ctrl-C cut the drain short.
pub async fn drain(
    client: &Client,
    sink: Option<&BenchSink>,
    backlog: u64,
    record_bytes: u64,
    progress: &mut ProgressLine,
    interrupted: &AtomicBool,
) -> Result<Option<DrainReport>, CommandError> {
    let turned_on = Instant::now();
    if let Some(s) = sink {
        s.set_serving(true).await;
    }
    let mut last_left = backlog;
    let mut last_change = Instant::now();
    let end = loop {
        tokio::time::sleep(DRAIN_POLL).await;
        let st = status(client).await?;
        let now = Instant::now();
        if st.backlog_records == 0 {
            break now;
        }
        if interrupted.load(Ordering::SeqCst) {
            return Ok(None);
        }
        if st.upstream_state == UpstreamState::Stopped as i32 {
            return Err(CommandError::fatal(format!(
                "replay stopped during the drain: {}",
                st.upstream_detail
            )));
        }
        if st.backlog_records != last_left {
            last_left = st.backlog_records;
            last_change = now;
        } else if now - last_change > DRAIN_STALL {
            return Err(CommandError::fatal(format!(
                "the drain stalled: {} records left and none delivered for {} (upstream state {}, {})",
                fmt_count(st.backlog_records),
                fmt_duration(DRAIN_STALL),
                st.upstream_state,
                st.upstream_detail
            )));
        }
        let done = backlog.saturating_sub(st.backlog_records);
        let since = sink.and_then(BenchSink::first_call).unwrap_or(turned_on);
        let elapsed = now.saturating_duration_since(since);
        let rate = done as f64 / elapsed.as_secs_f64().max(1e-9);
        let fraction = done as f64 / backlog.max(1) as f64;
        progress.show(
            fraction,
            &format!(
                "drain   {} of {} records  {:.0} records/s  {}",
                fmt_count(done),
                fmt_count(backlog),
                rate,
                eta(elapsed, fraction)
            ),
        );
    };
    progress.clear();
    let first = sink.and_then(BenchSink::first_call);
    let began = first.unwrap_or(turned_on);
    let secs = end.saturating_duration_since(began).as_secs_f64().max(1e-9);
    let rps = backlog as f64 / secs;
    Ok(Some(DrainReport {
        records: backlog,
        seconds: secs,
        records_per_second: rps,
        mb_per_second: rps * record_bytes as f64 / 1e6,
        wire_mb_per_second: sink.map(|s| s.wire_bytes() as f64 / secs / 1e6),
        wait_for_first_delivery_seconds: first
            .map(|f| f.saturating_duration_since(turned_on).as_secs_f64()),
        requests: sink.map(BenchSink::calls),
        peak_rss_bytes: None,
        sink: None,
    }))
}
