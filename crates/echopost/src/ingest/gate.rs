//! The ingest gate: the one mechanism that makes "acknowledged, then lost at exit"
//! impossible.
//!
//! Every append holds a [`GatePass`] from before it touches the log until the log call has
//! returned. To exit, the daemon [`closes`](AppendGate::close) the gate (later appends are
//! refused with `UNAVAILABLE` before touching the log), [waits](AppendGate::drained) for
//! the passes in flight, and only then looks at the backlog. An append is therefore either
//! refused, or finished before the final backlog check, which sees it. If that check finds
//! an append slipped in, the daemon [`reopens`](AppendGate::reopen) the gate and keeps
//! running; otherwise it exits with the gate closed, so nothing can slip in afterwards.
//!
//! The gate also keeps the time of the last append (arrival or completion), which is what
//! `--linger` measures.
//!
//! The pass travels with the queued append into the commit thread
//! ([`crate::ingest::committer`]) and is dropped only after the engine has written (and,
//! under `--sync always`, synced) that append, so even a request whose client went away
//! (and whose handler future tonic dropped) is counted until the engine is done with it.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// See the module documentation.
#[derive(Debug)]
pub struct AppendGate {
    state: Mutex<GateState>,
    /// Woken when the last pass in flight is dropped.
    idle: Notify,
}

#[derive(Debug)]
struct GateState {
    open: bool,
    in_flight: usize,
    last_activity: Instant,
}

/// The gate was closed: the daemon is exiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("echopost is shutting down and accepts no more records; retry against a new instance")]
pub struct GateClosed;

/// Held by one append while it runs. Dropping it ends the append's turn.
#[derive(Debug)]
pub struct GatePass {
    gate: Arc<AppendGate>,
}

impl Default for AppendGate {
    fn default() -> Self {
        AppendGate {
            state: Mutex::new(GateState {
                open: true,
                in_flight: 0,
                last_activity: Instant::now(),
            }),
            idle: Notify::new(),
        }
    }
}

impl AppendGate {
    /// An open gate; the linger clock starts now.
    pub fn new() -> Arc<AppendGate> {
        Arc::new(AppendGate::default())
    }

    fn lock(&self) -> MutexGuard<'_, GateState> {
        // The state is a few plain fields updated atomically under the lock; a panic
        // elsewhere cannot leave it inconsistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Lets one append in, or refuses it if the gate is closed.
    pub fn enter(self: &Arc<Self>) -> Result<GatePass, GateClosed> {
        let mut st = self.lock();
        if !st.open {
            return Err(GateClosed);
        }
        st.in_flight += 1;
        st.last_activity = Instant::now();
        Ok(GatePass {
            gate: Arc::clone(self),
        })
    }

    /// Refuses appends from now on (until [`AppendGate::reopen`]).
    pub fn close(&self) {
        self.lock().open = false;
    }

    /// Accepts appends again (the exit was called off).
    pub fn reopen(&self) {
        let mut st = self.lock();
        st.open = true;
        st.last_activity = Instant::now();
    }

    /// Whether appends are accepted.
    pub fn is_open(&self) -> bool {
        self.lock().open
    }

    /// Appends currently holding a pass.
    pub fn in_flight(&self) -> usize {
        self.lock().in_flight
    }

    /// How long no append has been running or arriving; `None` while one is in flight.
    pub fn idle_for(&self) -> Option<Duration> {
        let st = self.lock();
        (st.in_flight == 0).then(|| st.last_activity.elapsed())
    }

    /// Waits until no append is in flight. Combined with [`AppendGate::close`], every
    /// append has then either been refused or has finished.
    pub async fn drained(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            // Register before checking, so a pass dropped in between still wakes us.
            notified.as_mut().enable();
            if self.lock().in_flight == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for GatePass {
    fn drop(&mut self) {
        let mut st = self.gate.lock();
        st.in_flight -= 1;
        st.last_activity = Instant::now();
        if st.in_flight == 0 {
            drop(st);
            self.gate.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn closed_gate_refuses_and_drain_waits_for_passes() {
        let gate = AppendGate::new();
        let pass = gate.enter().unwrap();
        assert_eq!(gate.in_flight(), 1);
        assert_eq!(gate.idle_for(), None);
        gate.close();
        assert_eq!(gate.enter().unwrap_err(), GateClosed);

        let g = Arc::clone(&gate);
        let waiter = tokio::spawn(async move { g.drained().await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "drained before the pass was dropped");
        // The pass is dropped on another thread, as the blocking append task does.
        std::thread::spawn(move || drop(pass)).join().unwrap();
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(gate.in_flight(), 0);

        gate.reopen();
        assert!(gate.enter().is_ok());
    }

    #[tokio::test]
    async fn drained_returns_at_once_when_idle() {
        let gate = AppendGate::new();
        gate.close();
        tokio::time::timeout(Duration::from_secs(1), gate.drained())
            .await
            .unwrap();
        assert!(gate.idle_for().is_some());
    }
}
