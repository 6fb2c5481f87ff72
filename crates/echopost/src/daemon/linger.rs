//! The linger exit: `echopost run` leaves by itself once everything is delivered.
//!
//! When the backlog is empty and no append arrived for `--linger`, the watch closes the
//! [ingest gate](crate::ingest::gate), waits for appends in flight, and checks the backlog
//! again. If an append slipped in, it reopens the gate and keeps running; otherwise it asks
//! to stop with the gate still closed. So an append racing with the exit is either refused
//! with `UNAVAILABLE` or stored and acknowledged before the final check (which then keeps
//! the daemon up); it is never acknowledged and lost.

use std::sync::Arc;
use std::time::Duration;

use echopost_log::Log;
use tokio::sync::mpsc;

use crate::ingest::gate::AppendGate;

/// The linger exit (see the module documentation). Sends the idle time once the daemon
/// should exit, leaving the gate closed.
pub async fn linger_watch(
    log: Arc<Log>,
    gate: Arc<AppendGate>,
    linger: Duration,
    exit: mpsc::Sender<Duration>,
) {
    let tick = (linger / 4).clamp(Duration::from_millis(10), Duration::from_millis(250));
    let backlog = |log: &Arc<Log>| {
        let l = Arc::clone(log);
        async move {
            tokio::task::spawn_blocking(move || l.stats().backlog_records)
                .await
                .unwrap_or(u64::MAX)
        }
    };
    loop {
        tokio::time::sleep(tick).await;
        let idle = match gate.idle_for() {
            Some(idle) if idle >= linger => idle,
            _ => continue,
        };
        if backlog(&log).await != 0 {
            continue;
        }
        tracing::info!(
            idle_ms = idle.as_millis() as u64,
            "linger time reached with an empty backlog; closing the ingest gate"
        );
        if try_linger_exit(&log, &gate).await {
            let _ = exit.send(idle).await;
            return;
        }
        tracing::info!("an append arrived as the linger exit began; staying up");
    }
}

/// The decisive step of the linger exit: closes the gate, waits for appends in flight,
/// and re-checks the backlog. Returns true (gate left closed) if the daemon may exit;
/// otherwise reopens the gate and returns false.
async fn try_linger_exit(log: &Arc<Log>, gate: &AppendGate) -> bool {
    gate.close();
    gate.drained().await;
    let l = Arc::clone(log);
    let backlog = tokio::task::spawn_blocking(move || l.stats().backlog_records)
        .await
        .unwrap_or(u64::MAX);
    if backlog == 0 {
        return true;
    }
    gate.reopen();
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use echopost_log::LogOptions;
    use std::time::Instant;

    fn open() -> (tempfile::TempDir, Arc<Log>) {
        let tmp = tempfile::tempdir().unwrap();
        let log = Log::open(tmp.path(), LogOptions::default()).unwrap();
        (tmp, Arc::new(log))
    }

    async fn wait_closed(gate: &AppendGate) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while gate.is_open() {
            assert!(Instant::now() < deadline, "the gate was never closed");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn linger_exit_is_called_off_when_an_append_slips_in() {
        let (_tmp, log) = open();
        let gate = AppendGate::new();
        // An append got its pass just before the exit began and is still running.
        let pass = gate.enter().unwrap();
        let check = tokio::spawn({
            let (log, gate) = (Arc::clone(&log), Arc::clone(&gate));
            async move { try_linger_exit(&log, &gate).await }
        });
        wait_closed(&gate).await;
        // Appends arriving now are refused...
        assert!(gate.enter().is_err());
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !check.is_finished(),
            "did not wait for the append in flight"
        );
        // ...while the one in flight is stored (and acknowledged) before the re-check.
        log.append(&[b"slipped in"]).unwrap();
        drop(pass);
        assert!(!check.await.unwrap(), "exited with an acknowledged record");
        assert!(
            gate.is_open(),
            "the gate must reopen when the exit is called off"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn linger_exit_proceeds_with_the_gate_closed_when_nothing_was_stored() {
        let (_tmp, log) = open();
        let gate = AppendGate::new();
        // An append in flight that fails (stores nothing) does not stop the exit.
        let pass = gate.enter().unwrap();
        let check = tokio::spawn({
            let (log, gate) = (Arc::clone(&log), Arc::clone(&gate));
            async move { try_linger_exit(&log, &gate).await }
        });
        wait_closed(&gate).await;
        drop(pass);
        assert!(check.await.unwrap());
        assert!(!gate.is_open());
        assert!(
            gate.enter().is_err(),
            "appends after the decision must be refused"
        );
    }
}
