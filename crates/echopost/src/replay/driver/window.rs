//! The delivery window (issue 16, `--in-flight N`): up to N requests awaiting the main
//! server's answer at once, so that a drain is not capped at one request per round trip.
//!
//! # What is sent, and when
//! A *unit* is what one request carries: one record replayed verbatim (HTTP or gRPC
//! forward), or one `Sink/Deliver` batch. Units are started in sequence order, each as
//! its own task (the HTTP client pools keep-alive connections, or multiplexes on one
//! HTTP/2 connection when an https:// server offers h2; a gRPC channel multiplexes calls
//! on its HTTP/2 connection). The window is counted from the oldest unit not yet answered:
//! a new unit starts only while fewer than N units from that one on are outstanding. So a
//! receiver can see a unit before an earlier one only if the two are less than N units
//! apart.
//!
//! # Acknowledging
//! Answers are taken in sequence order: a unit counts as delivered (and its records may be
//! acknowledged) only once every unit before it was, so the cursor only ever covers the
//! contiguous prefix of accepted records, however the answers arrive.
//!
//! # Failures
//! The first failure ends the window: nothing more is started, every request still in
//! flight is awaited, and the ones the server accepted are remembered in [`Ahead`] (not
//! acknowledged: they are behind the failed one). The failed unit then goes through
//! exactly the path it takes with `--in-flight 1` (`isolate.rs`): classified by the
//! policy, retried after backoff and a health probe, split, halved, isolated or
//! dead-lettered, one request at a time, as if its failure had come from that path, and
//! so does every unit after it until one succeeds. The units the server already accepted
//! are not sent again: when their turn comes they are marked delivered (the record tested
//! against a suspect during isolation is the exception: that test is a real send). After
//! the first success the window opens again. This keeps every rule of the replay policy
//! unchanged, at the cost of sending one request at a time while a failure is being
//! resolved.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use tokio::task::JoinHandle;

use super::{Replayer, Step, Work, decode, identity, wait_shutdown};
use crate::replay::ReplayError;
use crate::replay::classify::Failure;
use crate::replay::clients::Sink;
use crate::replay::deliver::DeliverBatch;
use crate::replay::feed::{Batch, Feed, Item};
use crate::replay::forward_http::HttpForwarder;

/// What one request carries.
pub(super) enum Unit {
    /// A `Sink/Deliver` batch.
    Batch(Arc<DeliverBatch>),
    /// One record, replayed verbatim (or, in `deliver` mode, as a batch of one).
    Record(Item),
}

impl Unit {
    /// First and last sequence.
    fn span(&self) -> (u64, u64) {
        let items = self.items();
        (
            items.first().map_or(0, |i| i.seq),
            items.last().map_or(0, |i| i.seq),
        )
    }

    fn items(&self) -> &[Item] {
        match self {
            Unit::Batch(b) => &b.items,
            Unit::Record(i) => std::slice::from_ref(i),
        }
    }
}

/// Units the main server accepted while an earlier one had failed, by their first and
/// last sequence. They are acknowledged once their turn comes, without being sent again.
/// At most `--in-flight` entries; lost on restart (then they are sent again).
#[derive(Debug, Default)]
pub(super) struct Ahead(HashSet<(u64, u64)>);

impl Ahead {
    /// True (once) if the unit spanning `first..=last` was already accepted.
    pub(super) fn take(&mut self, first: u64, last: u64) -> bool {
        !self.0.is_empty() && self.0.remove(&(first, last))
    }

    fn insert(&mut self, span: (u64, u64)) {
        self.0.insert(span);
    }
}

/// A unit in the window.
enum Slot {
    /// Sent; the task answers with the outcome.
    Sent(Unit, JoinHandle<Result<(), Failure>>),
    /// Accepted earlier (in [`Ahead`]); delivered when it reaches the front.
    Accepted(Unit),
}

impl Slot {
    fn abort(&self) {
        if let Slot::Sent(_, h) = self {
            h.abort();
        }
    }
}

/// The outcome of a send task (a task that panicked counts as a failed request).
fn outcome(r: Result<Result<(), Failure>, tokio::task::JoinError>) -> Result<(), Failure> {
    r.unwrap_or_else(|e| {
        Err(Failure::transport(format!(
            "the request's task ended abnormally: {e}"
        )))
    })
}

impl Replayer {
    /// Whether the window is open: `--in-flight` above 1 and no failure being resolved.
    pub(super) fn windowed(&self) -> bool {
        self.cfg.in_flight > 1 && !self.failing
    }

    /// Runs the window until the backlog is caught up ([`Step::CaughtUp`]), shutdown, or
    /// the first failure, whose unit then takes the one-at-a-time path ([`Self::process`])
    /// and whose [`Step`] is returned. `pending` (work queued before the feed's next
    /// batch) is sent first; on a failure it receives every unit not yet delivered.
    pub(super) async fn run_window(
        &mut self,
        pending: &mut VecDeque<Work>,
        feed: &mut Feed,
    ) -> Result<Step, ReplayError> {
        let n = self.cfg.in_flight.max(1);
        // One shared HTTP forwarder for every task, rather than a copy of its settings each.
        let http = match &self.sink {
            Sink::Http(sink) => Some(Arc::new(sink.clone())),
            _ => None,
        };
        let mut slots: VecDeque<Slot> = VecDeque::with_capacity(n);
        let mut queue: VecDeque<Unit> = VecDeque::new();
        let mut dry = false;
        let mut sd = self.shutdown.clone();
        loop {
            if self.stopping() {
                slots.iter().for_each(Slot::abort);
                return Ok(Step::Shutdown);
            }
            // Fill the window, in sequence order.
            while slots.len() < n {
                let Some(unit) = queue.pop_front() else {
                    if let Some(w) = pending.pop_front() {
                        self.units_of(w, &mut queue);
                        continue;
                    }
                    if dry || self.deferred.is_some() {
                        break;
                    }
                    match feed.next_batch().await {
                        Ok(b) if b.is_empty() => dry = true,
                        Ok(Batch::Deliver(b)) => {
                            self.units_of(Work::Batch(Arc::new(b)), &mut queue)
                        }
                        Ok(Batch::Records(items)) => {
                            self.units_of(Work::Singles(items.into()), &mut queue)
                        }
                        // Everything before the damage was handed out first; it is
                        // delivered before the error stops replay.
                        Err(e) => self.deferred = Some(e),
                    }
                    continue;
                };
                let (first, last) = unit.span();
                if self.ahead.take(first, last) {
                    slots.push_back(Slot::Accepted(unit));
                    continue;
                }
                match self.spawn_send(&unit, http.as_ref()) {
                    Ok(h) => slots.push_back(Slot::Sent(unit, h)),
                    Err(fatal) => {
                        // A stored record that does not decode: nothing at or after it
                        // is sent (what is queued, then pending, comes after it); what
                        // precedes it is delivered first.
                        queue.clear();
                        pending.clear();
                        self.deferred = Some(fatal);
                    }
                }
            }
            // The oldest unit's answer.
            let Some(slot) = slots.pop_front() else {
                if let Some(e) = self.deferred.take() {
                    return Err(e);
                }
                return Ok(Step::CaughtUp);
            };
            let (unit, r) = match slot {
                Slot::Accepted(unit) => (unit, Ok(())),
                Slot::Sent(unit, mut h) => {
                    let r = tokio::select! {
                        r = &mut h => outcome(r),
                        _ = wait_shutdown(&mut sd) => {
                            h.abort();
                            slots.iter().for_each(Slot::abort);
                            return Ok(Step::Shutdown);
                        }
                    };
                    if r.is_ok() {
                        self.note_success();
                    }
                    (unit, r)
                }
            };
            match r {
                Ok(()) => {
                    self.done(unit.items());
                    if let Unit::Batch(b) = unit
                        && let Ok(b) = Arc::try_unwrap(b)
                    {
                        let (items, buffer) = b.into_parts();
                        feed.recycle(items, buffer);
                    }
                    self.acker.maybe_ack().await?;
                    self.report.maybe_log(&self.log, &self.progress);
                }
                Err(f) => {
                    return self
                        .window_failed(unit, f, slots, queue, pending, feed)
                        .await;
                }
            }
        }
    }

    /// The first failure: await what is in flight, queue every unit not delivered (the
    /// failed one first) in `pending`, and hand the failed one to the one-at-a-time path.
    async fn window_failed(
        &mut self,
        failed: Unit,
        f: Failure,
        slots: VecDeque<Slot>,
        queue: VecDeque<Unit>,
        pending: &mut VecDeque<Work>,
        feed: &mut Feed,
    ) -> Result<Step, ReplayError> {
        let (first, last) = failed.span();
        tracing::debug!(first, last, error = %f.reason, in_flight = slots.len(),
            "a request in the window failed; awaiting the others, then retrying it alone");
        let mut sd = self.shutdown.clone();
        let mut units = vec![failed];
        let mut accepted = 0usize;
        let mut slots = slots;
        while let Some(slot) = slots.pop_front() {
            let unit = match slot {
                Slot::Accepted(unit) => {
                    self.ahead.insert(unit.span());
                    accepted += 1;
                    unit
                }
                Slot::Sent(unit, mut h) => {
                    let r = tokio::select! {
                        r = &mut h => outcome(r),
                        _ = wait_shutdown(&mut sd) => {
                            h.abort();
                            slots.iter().for_each(Slot::abort);
                            return Ok(Step::Shutdown);
                        }
                    };
                    if r.is_ok() {
                        self.ahead.insert(unit.span());
                        accepted += 1;
                    }
                    unit
                }
            };
            units.push(unit);
        }
        tracing::debug!(
            accepted,
            waiting = units.len(),
            "window drained after a failure"
        );
        units.extend(queue);
        let mut works = to_works(units);
        let Some(work) = works.pop_front() else {
            return Ok(Step::Done(None));
        };
        while let Some(w) = works.pop_back() {
            pending.push_front(w);
        }
        let may_read = pending.is_empty() && self.deferred.is_none();
        self.process(work, feed, may_read, Some(f)).await
    }

    /// Appends the units of `work` to `queue`: a batch is one unit in `deliver` mode (and
    /// its records otherwise, which cannot happen: only `deliver` mode makes batches).
    fn units_of(&self, work: Work, queue: &mut VecDeque<Unit>) {
        match work {
            Work::Batch(b) if matches!(self.sink, Sink::Deliver(_)) => {
                queue.push_back(Unit::Batch(b));
            }
            Work::Batch(b) => queue.extend(super::unwrap_batch(b).into_iter().map(Unit::Record)),
            Work::Singles(items) => queue.extend(items.into_iter().map(Unit::Record)),
        }
    }

    /// Starts one request as its own task. Err only for a stored record that does not
    /// decode (fatal, as on the one-at-a-time path).
    fn spawn_send(
        &self,
        unit: &Unit,
        http: Option<&Arc<HttpForwarder>>,
    ) -> Result<JoinHandle<Result<(), Failure>>, ReplayError> {
        Ok(match (&self.sink, unit) {
            (Sink::Deliver(sink), Unit::Batch(b)) => {
                let (mut sink, b) = (sink.clone(), Arc::clone(b));
                tokio::spawn(async move { sink.send(&b).await })
            }
            (Sink::Deliver(sink), Unit::Record(item)) => {
                let mut sink = sink.clone();
                let b = Arc::new(DeliverBatch::new(vec![item.clone()], &self.source));
                tokio::spawn(async move { sink.send(&b).await })
            }
            (Sink::Http(sink), Unit::Record(item)) => {
                let mut record = decode(&self.log, item)?;
                identity::add_idempotency_key(&mut record, &self.source, item.seq);
                let sink = http.map_or_else(|| Arc::new(sink.clone()), Arc::clone);
                tokio::spawn(async move { sink.send(&record).await })
            }
            (Sink::Grpc(sink), Unit::Record(item)) => {
                let mut record = decode(&self.log, item)?;
                identity::add_identity_metadata(&mut record, &self.source, item.seq);
                let mut sink = sink.clone();
                tokio::spawn(async move { sink.send(&record).await })
            }
            (Sink::Http(_) | Sink::Grpc(_), Unit::Batch(_)) => {
                // `units_of` never makes a batch unit for a forward sink.
                tokio::spawn(async {
                    Err(Failure::unsendable(
                        "internal: a Deliver batch for a forward sink",
                    ))
                })
            }
        })
    }
}

/// Units back into work, in order: consecutive records become one `Singles` (so that the
/// isolation of a failing record can test it against the next one), batches stay
/// batches.
fn to_works(units: Vec<Unit>) -> VecDeque<Work> {
    let mut works: VecDeque<Work> = VecDeque::new();
    for unit in units {
        match unit {
            Unit::Batch(b) => works.push_back(Work::Batch(b)),
            Unit::Record(item) => match works.back_mut() {
                Some(Work::Singles(items)) => items.push_back(item),
                _ => works.push_back(Work::Singles(VecDeque::from([item]))),
            },
        }
    }
    works
}
