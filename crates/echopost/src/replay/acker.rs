//! Batched acknowledgements of what was delivered or dead-lettered. Each `Log::ack`
//! costs two fsyncs, so acks run on the blocking pool while the next batch is sent, and
//! the driver flushes them before idling, backing off, stopping or returning an error.

use std::sync::Arc;
use std::time::Instant;

use echopost_log::Log;
use tokio::task::JoinHandle;

use super::driver::join_error;
use super::{ACK_BYTES, ACK_INTERVAL, ReplayError};

/// Acknowledges delivered records in the background, at most every [`ACK_INTERVAL`]
/// (or [`ACK_BYTES`]), so the cursor's fsyncs overlap with sending.
pub(super) struct Acker {
    log: Arc<Log>,
    /// Highest sequence delivered or dead-lettered.
    done: u64,
    /// Highest sequence whose ack completed.
    pub(super) acked: u64,
    inflight: Option<JoinHandle<echopost_log::Result<u64>>>,
    last: Instant,
    bytes: u64,
}

impl Acker {
    pub(super) fn new(log: Arc<Log>) -> Self {
        let acked = log.stats().acked;
        Acker {
            log,
            done: acked,
            acked,
            inflight: None,
            last: Instant::now(),
            bytes: 0,
        }
    }

    pub(super) fn mark(&mut self, seq: u64, bytes: u64) {
        self.done = self.done.max(seq);
        self.bytes += bytes;
    }

    pub(super) async fn maybe_ack(&mut self) -> Result<(), ReplayError> {
        if self.inflight.as_ref().is_some_and(|h| h.is_finished()) {
            self.join().await?;
        }
        if self.inflight.is_none()
            && self.done > self.acked
            && (self.last.elapsed() >= ACK_INTERVAL || self.bytes >= ACK_BYTES)
        {
            self.start();
        }
        Ok(())
    }

    fn start(&mut self) {
        let log = Arc::clone(&self.log);
        let seq = self.done;
        self.inflight = Some(tokio::task::spawn_blocking(move || {
            log.ack(seq).map(|()| seq)
        }));
        self.last = Instant::now();
        self.bytes = 0;
    }

    async fn join(&mut self) -> Result<(), ReplayError> {
        if let Some(h) = self.inflight.take() {
            let seq = h
                .await
                .map_err(join_error)?
                .map_err(ReplayError::from_log)?;
            self.acked = self.acked.max(seq);
        }
        Ok(())
    }

    /// Waits until everything done so far is acknowledged.
    pub(super) async fn flush(&mut self) -> Result<(), ReplayError> {
        self.join().await?;
        if self.done > self.acked {
            self.start();
            self.join().await?;
        }
        Ok(())
    }
}
