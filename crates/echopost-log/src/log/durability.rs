//! When records become durable: group commit (one waiting appender leads each
//! `fdatasync`, the others park until it covers them), waiting for durability with or
//! without syncing, and the background syncer of [`SyncPolicy::Interval`]. See the
//! concurrency notes in the module documentation of `log`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

use super::{Inner, Log, State};
#[cfg(doc)]
use super::{LogStats, SyncPolicy};

/// A parked appender. Woken individually, so that a sync wakes only the appenders it made
/// durable (plus one to lead the next sync), not every waiting thread: with many
/// concurrent appenders, waking all of them on every sync costs more CPU than the sync.
#[derive(Debug)]
pub(super) struct Waiter {
    woken: AtomicBool,
    thread: std::thread::Thread,
}

impl Waiter {
    fn wake(&self) {
        self.woken.store(true, Ordering::Release);
        self.thread.unpark();
    }
}

impl State {
    /// Wakes the waiters whose records are durable now and, if others remain, the first of
    /// them to lead the next sync. With `all`, wakes everyone (the log was poisoned).
    pub(super) fn wake_waiters(&mut self, all: bool) {
        let durable = self.durable_next;
        let mut leader_woken = false;
        self.waiters.retain(|(target, w)| {
            let covered = *target <= durable;
            if all || covered || !leader_woken {
                leader_woken |= !covered;
                w.wake();
                false
            } else {
                true
            }
        });
    }
}

impl Inner {
    /// Blocks until every sequence below `target` is durable, syncing as the group-commit
    /// leader when no sync is in flight.
    pub(crate) fn wait_durable<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
        target: u64,
    ) -> Result<()> {
        loop {
            if st.durable_next >= target {
                return Ok(());
            }
            if let Some(p) = &st.poisoned {
                return Err(Error::Poisoned(Arc::clone(p)));
            }
            if st.syncing {
                // Park until the sync in flight (or a later one) covers us, or we are
                // picked to lead the next one. The flag makes spurious unparks harmless.
                let me = Arc::new(Waiter {
                    woken: AtomicBool::new(false),
                    thread: std::thread::current(),
                });
                st.waiters.push((target, Arc::clone(&me)));
                drop(st);
                while !me.woken.load(Ordering::Acquire) {
                    std::thread::park();
                }
                st = self.lock_state();
                continue;
            }
            st.syncing = true;
            let file = Arc::clone(&st.active.file);
            let path = st.active.path.clone();
            let seg = st.active.first_seq;
            let upto_next = st.next_seq;
            let upto_len = st.active.len;
            drop(st);
            let res = file.sync_data();
            st = self.lock_state();
            st.syncing = false;
            match res {
                Ok(()) => {
                    if upto_next > st.durable_next {
                        st.durable_next = upto_next;
                    }
                    if st.active.first_seq == seg && upto_len > st.durable_len {
                        st.durable_len = upto_len;
                    }
                    st.wake_waiters(false);
                    self.changed.notify_all();
                }
                Err(e) => {
                    self.poison(
                        &mut st,
                        format!("fdatasync of {} failed: {e}", path.display()),
                    );
                    return Err(Error::io("fdatasync", path, e));
                }
            }
        }
    }

    pub(crate) fn sync_now(&self) -> Result<()> {
        let st = self.lock_state();
        let target = st.next_seq;
        self.wait_durable(st, target)
    }
}

impl Log {
    /// Blocks until every sequence up to and including `seq` is durable, syncing if
    /// needed (group-committed with concurrent appenders). A `seq` not handed out yet
    /// counts as the last one handed out: everything written so far becomes durable.
    ///
    /// # Errors
    /// [`Error::Io`] if the `fdatasync` this call led failed (the log is then poisoned);
    /// [`Error::Poisoned`] if the log stopped before `seq` was durable.
    pub fn wait_durable(&self, seq: u64) -> Result<()> {
        let st = self.inner.lock_state();
        // A poisoned log vouches only for what was durable before it stopped: a sequence
        // handed out but never written must not come back Ok (the clamp below would
        // otherwise make it look covered).
        if let Some(p) = &st.poisoned
            && seq >= st.durable_next
        {
            return Err(Error::Poisoned(Arc::clone(p)));
        }
        let target = seq.saturating_add(1).min(st.next_seq);
        self.inner.wait_durable(st, target)
    }

    /// Makes everything appended so far durable (a barrier for tests and shutdown).
    ///
    /// # Errors
    /// As [`Log::wait_durable`]: [`Error::Io`] (the sync failed; now poisoned) or
    /// [`Error::Poisoned`].
    pub fn sync_now(&self) -> Result<()> {
        self.inner.sync_now()
    }

    /// Blocks until the durable end ([`LogStats::durable_next`], the first sequence not
    /// yet durable) is past `seq`, i.e. until record `seq` is durable; or until the log is
    /// poisoned or `timeout` has passed, whichever comes first. Returns the durable end at
    /// that moment (`> seq` once record `seq` is durable). For a replayer idling on an
    /// empty backlog, with `seq` the next sequence it wants to read.
    ///
    /// Unlike [`Log::wait_durable`] it makes nothing durable: it never syncs, it only
    /// watches the syncs of others (appenders under [`SyncPolicy::Always`], the
    /// background thread under [`SyncPolicy::Interval`], [`Log::sync_now`], a
    /// [`Reader`](crate::Reader) catching up). Under [`SyncPolicy::Never`] a record
    /// written but not yet synced therefore keeps it waiting the whole `timeout`; a
    /// reader syncs it when it gets there. Never fails: a poisoned log just returns early.
    pub fn wait_for_durable_end_past(&self, seq: u64, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        let mut st = self.inner.lock_state();
        while st.durable_next <= seq && st.poisoned.is_none() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            st = self
                .inner
                .changed
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        st.durable_next
    }
}

pub(super) fn spawn_syncer(inner: Arc<Inner>, every: Duration) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("echopost-log-sync".into())
        .spawn(move || {
            loop {
                {
                    let st = inner.lock_state();
                    let (st, _) = inner
                        .changed
                        .wait_timeout_while(st, every, |_| !inner.stop.load(Ordering::SeqCst))
                        .unwrap_or_else(|p| p.into_inner());
                    if inner.stop.load(Ordering::SeqCst) || st.poisoned.is_some() {
                        return;
                    }
                }
                // Errors poison the log; appenders see them on their next call.
                let _ = inner.sync_now();
            }
        })
}
