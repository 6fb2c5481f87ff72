//! Replay milestones in the session log: upstream state changes, and the backlog becoming
//! empty. (Delivery rates for `Status` come from [`Progress::snapshot`].)

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use echopost_log::Log;

use crate::replay::Progress;

/// How often the monitor looks at replay progress.
const MONITOR_EVERY: Duration = Duration::from_millis(500);

/// Logs replay progress milestones: upstream state changes, and the backlog becoming
/// empty. (Delivery rates for `Status` come from [`Progress::snapshot`].)
pub async fn monitor(log: Arc<Log>, progress: Arc<Progress>, replaying: bool) {
    if !replaying {
        return;
    }
    let mut tick = tokio::time::interval(MONITOR_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_state = progress.state();
    let mut last_backlog: Option<u64> = None;
    let mut drain_started = Instant::now();
    loop {
        tick.tick().await;
        let delivered = progress.delivered_records.load(Ordering::Relaxed);
        let delivered_bytes = progress.delivered_bytes.load(Ordering::Relaxed);
        let state = progress.state();
        if state != last_state {
            tracing::info!(from = ?last_state, to = ?state, detail = %progress.last_error(), "upstream state changed");
            last_state = state;
        }
        let l = Arc::clone(&log);
        let Ok(stats) = tokio::task::spawn_blocking(move || l.stats()).await else {
            continue;
        };
        match last_backlog {
            Some(prev) if prev > 0 && stats.backlog_records == 0 => {
                tracing::info!(
                    delivered_records = delivered,
                    delivered_bytes,
                    dead_lettered = progress.dead_lettered.load(Ordering::Relaxed),
                    acked = stats.acked,
                    duration_ms = drain_started.elapsed().as_millis() as u64,
                    "replay complete: everything stored has been delivered"
                );
            }
            Some(0) | None if stats.backlog_records > 0 => drain_started = Instant::now(),
            _ => {}
        }
        last_backlog = Some(stats.backlog_records);
    }
}
