//! What the driver does with one piece of work: send it, and on failure act on the
//! policy's class: retry, pause, halve, send record by record, isolate a record that keeps
//! failing alone (see `SPLIT_AFTER`, `SUSPECT_AFTER`), dead-letter.

use std::collections::VecDeque;
use std::sync::Arc;

use super::{Replayer, SPLIT_AFTER, SUSPECT_AFTER, Sink, Step, Work, unwrap_batch, wait_shutdown};
use crate::replay::ReplayError;
use crate::replay::classify::{Cause, Class, Failure};
use crate::replay::deliver::DeliverBatch;
use crate::replay::feed::{Batch, Feed, Item};

impl Replayer {
    /// `may_read`: nothing else is queued before the feed's next batch, so records may be
    /// taken from it (to test a suspect record against the next one). `failed`: the
    /// failure of the work's first request, already sent in the delivery window
    /// (`window.rs`); it is acted on as if it had just happened here.
    pub(super) async fn process(
        &mut self,
        work: Work,
        feed: &mut Feed,
        may_read: bool,
        failed: Option<Failure>,
    ) -> Result<Step, ReplayError> {
        match work {
            Work::Batch(batch) => {
                let mut sd = self.shutdown.clone();
                let r = match failed {
                    Some(f) => Err(f),
                    None => {
                        let Sink::Deliver(sink) = &mut self.sink else {
                            // Batches are only made for the deliver sink.
                            return self
                                .process_singles(unwrap_batch(batch), feed, may_read, None)
                                .await;
                        };
                        let first = batch.items.first().map_or(0, |i| i.seq);
                        let last = batch.items.last().map_or(0, |i| i.seq);
                        if self.ahead.take(first, last) {
                            // Accepted in the window behind a failed batch: its turn now.
                            self.done(&batch.items);
                            return Ok(Step::Done(
                                Arc::try_unwrap(batch).ok().map(|b| b.into_parts()),
                            ));
                        }
                        tokio::select! {
                            r = sink.send(&batch) => r,
                            _ = wait_shutdown(&mut sd) => return Ok(Step::Shutdown),
                        }
                    }
                };
                let f = match r {
                    Ok(()) => {
                        self.note_success();
                        self.done(&batch.items);
                        return Ok(Step::Done(
                            Arc::try_unwrap(batch).ok().map(|b| b.into_parts()),
                        ));
                    }
                    Err(f) => f,
                };
                let class = self.policy.class(&f);
                let first = batch.items.first().map_or(0, |i| i.seq);
                self.note_failure(&f, class, first);
                let last = batch.items.last().map_or(0, |i| i.seq);
                let n = batch.items.len();
                match class {
                    Class::Transient
                        if n > 1
                            && self
                                .bump_head(first)
                                .reached(SPLIT_AFTER, self.cfg.isolate_after) =>
                    {
                        tracing::warn!(
                            records = n, first, last, error = %f.reason,
                            "a batch keeps failing while the main server answers its health checks; sending its records one by one to find out whether one of them is the problem"
                        );
                        // Each record earns its own count when sent alone.
                        self.head = None;
                        Ok(Step::Retry(Work::Singles(unwrap_batch(batch)), f, class))
                    }
                    Class::Transient if n > 1 && f.cause == Cause::Timeout => {
                        // A long Deliver is not cut short again and again: the server
                        // answered nothing within --request-timeout, so it gets half.
                        tracing::warn!(
                            records = n, first, last, error = %f.reason,
                            "the main server did not answer a batch within --request-timeout; retrying it in halves of {} records (and later batches too)",
                            n / 2
                        );
                        let pieces = self.halves(batch);
                        Ok(Step::Split(pieces, n / 2))
                    }
                    Class::Transient | Class::Server => {
                        Ok(Step::Retry(Work::Batch(batch), f, class))
                    }
                    Class::TooLarge if n > 1 => {
                        tracing::warn!(
                            records = n, first, last, error = %f.reason,
                            "the main server refused the batch as too large; halving it to {} records (and later batches too)",
                            n / 2
                        );
                        let pieces = self.halves(batch);
                        Ok(Step::Split(pieces, n / 2))
                    }
                    Class::TooLarge | Class::Record => {
                        tracing::warn!(
                            records = n, first, last, error = %f.reason,
                            "batch rejected; sending its records one by one"
                        );
                        self.process_singles(unwrap_batch(batch), feed, may_read, None)
                            .await
                    }
                }
            }
            Work::Singles(items) => self.process_singles(items, feed, may_read, failed).await,
        }
    }

    /// A batch of two records or more as two batches, the first half first.
    fn halves(&self, batch: Arc<DeliverBatch>) -> Vec<Work> {
        let mut items = unwrap_batch(batch);
        let rest: Vec<Item> = items.split_off(items.len() / 2).into();
        let items: Vec<Item> = items.into();
        vec![
            Work::Batch(Arc::new(DeliverBatch::new(items, &self.source))),
            Work::Batch(Arc::new(DeliverBatch::new(rest, &self.source))),
        ]
    }

    /// Sends records one at a time: accepted → done; rejected (the record's fault) → dead
    /// letter; transient or server-level → stop here and retry from this record later,
    /// unless the record keeps failing alone while the next one goes through. `failed`:
    /// the first record's failure in the delivery window (see [`Self::process`]). With the
    /// window enabled, the records left after the first success go back to it
    /// ([`Step::Rest`]).
    async fn process_singles(
        &mut self,
        mut items: VecDeque<Item>,
        feed: &mut Feed,
        may_read: bool,
        mut failed: Option<Failure>,
    ) -> Result<Step, ReplayError> {
        let mut sd = self.shutdown.clone();
        while let Some(item) = items.front() {
            let r = match failed.take() {
                Some(f) => Err(f),
                None if self.ahead.take(item.seq, item.seq) => {
                    // Accepted in the window behind a failed record: its turn now.
                    if let Some(item) = items.pop_front() {
                        self.done(std::slice::from_ref(&item));
                    }
                    continue;
                }
                None => tokio::select! {
                    r = self.send_one(item) => r?,
                    _ = wait_shutdown(&mut sd) => return Ok(Step::Shutdown),
                },
            };
            let f = match r {
                Ok(()) => {
                    self.note_success();
                    if let Some(item) = items.pop_front() {
                        self.done(std::slice::from_ref(&item));
                    }
                    self.acker.maybe_ack().await?;
                    if self.windowed() && !items.is_empty() {
                        return Ok(Step::Rest(items));
                    }
                    continue;
                }
                Err(f) => f,
            };
            let class = self.policy.class(&f);
            self.note_failure(&f, class, item.seq);
            match class {
                Class::Transient => {
                    let seq = item.seq;
                    if !self
                        .bump_head(seq)
                        .reached(SUSPECT_AFTER, self.cfg.isolate_after)
                    {
                        return Ok(Step::Retry(Work::Singles(items), f, class));
                    }
                    if items.len() < 2 && may_read {
                        // The test record comes from the backlog after this batch.
                        match feed.next_batch().await? {
                            Batch::Deliver(b) => items.extend(b.into_parts().0),
                            Batch::Records(more) => items.extend(more),
                        }
                    }
                    let Some(next) = items.get(1) else {
                        // Nothing after it yet: it blocks nobody; keep retrying.
                        return Ok(Step::Retry(Work::Singles(items), f, class));
                    };
                    let next_seq = next.seq;
                    let proof = tokio::select! {
                        r = self.send_one(next) => r?,
                        _ = wait_shutdown(&mut sd) => return Ok(Step::Shutdown),
                    };
                    if let Err(g) = proof {
                        // The next record fails too: the outage is server-wide.
                        let g_class = self.policy.class(&g);
                        let head = items.front().map_or(next_seq, |i| i.seq);
                        self.note_failure(&g, g_class, head);
                        return Ok(Step::Retry(Work::Singles(items), f, class));
                    }
                    // The server works. One more try for the suspect, now that the
                    // server has just accepted a record.
                    let again = match items.front() {
                        Some(suspect) => tokio::select! {
                            r = self.send_one(suspect) => r?,
                            _ = wait_shutdown(&mut sd) => return Ok(Step::Shutdown),
                        },
                        None => continue,
                    };
                    let failures = self.head.map_or(0, |h| h.failures);
                    let (Some(suspect), Some(next)) = (items.pop_front(), items.pop_front()) else {
                        continue;
                    };
                    // The test was a real send, even if the window had it accepted before.
                    self.ahead.take(next.seq, next.seq);
                    match again {
                        Ok(()) => {
                            tracing::warn!(
                                seq = suspect.seq,
                                next = next_seq,
                                "a record that kept failing went through once the next one had; it was delivered after it (out of order)"
                            );
                            self.done(std::slice::from_ref(&suspect));
                        }
                        Err(last) => {
                            let reason = format!(
                                "failed {} times alone (last: {}) while the main server accepted the next record, sequence {next_seq}",
                                failures + 1,
                                last.reason
                            );
                            self.dead_letter(suspect, &reason).await?;
                        }
                    }
                    self.note_success();
                    self.done(std::slice::from_ref(&next));
                    self.acker.maybe_ack().await?;
                    if self.windowed() && !items.is_empty() {
                        return Ok(Step::Rest(items));
                    }
                }
                Class::Server => return Ok(Step::Retry(Work::Singles(items), f, class)),
                Class::TooLarge => {
                    if let Some(item) = items.pop_front() {
                        let reason = format!(
                            "the record ({} bytes stored) is too large for the main server alone: {}",
                            item.data.len(),
                            f.reason
                        );
                        self.dead_letter(item, &reason).await?;
                    }
                }
                Class::Record => {
                    if let Some(item) = items.pop_front() {
                        self.dead_letter(item, &f.reason).await?;
                    }
                }
            }
        }
        Ok(Step::Done(None))
    }
}
