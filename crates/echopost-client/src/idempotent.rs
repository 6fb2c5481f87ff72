//! [`IdempotentAppender`]: appends that are safe to retry (issue 14).
//!
//! An append that timed out, or whose connection broke, may or may not have been stored.
//! Retrying a plain append could store the batch twice under new sequences. This
//! appender numbers its batches itself (`producer_id`, `producer_sequence`: the number of
//! the batch's first record; the next batch starts after its last) and retries a batch
//! with the *same* number, so the daemon recognises a retry of a stored batch and
//! answers it with the original sequences instead of storing it again
//! ([`IdempotentBatch::duplicate`]).
//!
//! # Choosing the producer id and the first number
//! The daemon remembers a producer's next number and its last 8 batches (across
//! restarts and crashes), and at most `--max-producers` producers (10,000 by default;
//! the least recently used is forgotten first, and a forgotten producer's next batch
//! starts a new series, so a retry arriving after that is stored again). A producer that
//! restarts must either continue from the number it reached (persist
//! [`IdempotentAppender::next_sequence`]) or use a new id: an unknown id starts its
//! series at whatever number it sends.

use std::time::Duration;

use echopost_proto::v1::{AppendRequest, Record};

use crate::client::Client;
use crate::error::ClientError;

/// What an idempotent append stored (or had stored before).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdempotentBatch {
    /// The sequences the batch was stored under, the original ones for a duplicate.
    pub first_sequence: u64,
    pub last_sequence: u64,
    /// The producer number the batch was sent with.
    pub producer_sequence: u64,
    /// True when the daemon had already stored this batch (an earlier attempt's answer
    /// was lost): nothing new was stored.
    pub duplicate: bool,
    /// The stream's version after the batch, for a batch whose records share a stream.
    pub stream_version: u64,
}

/// Appends numbered batches of one producer, retrying each safely. See the module
/// documentation. One batch at a time (`&mut self`).
#[derive(Debug, Clone)]
pub struct IdempotentAppender {
    client: Client,
    producer_id: String,
    next: u64,
    attempts: u32,
    backoff: Duration,
}

impl IdempotentAppender {
    /// An appender for `producer_id` (at most 256 bytes) whose next batch starts at
    /// `next_sequence`. Retries 5 times by default, 200 ms apart.
    pub fn new(client: Client, producer_id: impl Into<String>, next_sequence: u64) -> Self {
        IdempotentAppender {
            client,
            producer_id: producer_id.into(),
            next: next_sequence,
            attempts: 6,
            backoff: Duration::from_millis(200),
        }
    }

    /// Retries a batch up to `retries` times after the first attempt, waiting `backoff`
    /// between attempts.
    pub fn retries(mut self, retries: u32, backoff: Duration) -> Self {
        self.attempts = retries.saturating_add(1);
        self.backoff = backoff;
        self
    }

    /// The number the next batch will be sent with.
    pub fn next_sequence(&self) -> u64 {
        self.next
    }

    /// The producer id.
    pub fn producer_id(&self) -> &str {
        &self.producer_id
    }

    /// Stores `records` as one atomic batch numbered [`Self::next_sequence`], retrying
    /// with the same number after a timeout or an unavailable daemon, and reconnecting
    /// (the client's channel does) in between. On success the next batch is numbered
    /// after this one.
    ///
    /// # Errors
    /// The last attempt's error when every attempt failed (the batch may or may not be
    /// stored: call again with the same records, and it is stored at most once), or at
    /// once an error a retry cannot fix: `FAILED_PRECONDITION` (the daemon expects
    /// another number, named in the message), `INVALID_ARGUMENT`, ...
    pub async fn append(&mut self, records: Vec<Record>) -> Result<IdempotentBatch, ClientError> {
        let count = records.len() as u64;
        let request = AppendRequest {
            records,
            producer_id: self.producer_id.clone(),
            producer_sequence: self.next,
            expected_stream_version: None,
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.client.append_request(request.clone()).await {
                Ok(r) => {
                    self.next = self.next.saturating_add(count);
                    return Ok(IdempotentBatch {
                        first_sequence: r.first_sequence,
                        last_sequence: r.last_sequence,
                        producer_sequence: request.producer_sequence,
                        duplicate: r.duplicate,
                        stream_version: r.stream_version,
                    });
                }
                Err(e) if attempt < self.attempts && retryable(&e) => {
                    tokio::time::sleep(self.backoff).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Whether the batch may be sent again as it is: the daemon did not answer, or is gone.
fn retryable(e: &ClientError) -> bool {
    e.is_timeout()
        || e.daemon_unavailable()
        || matches!(e, ClientError::Status(s) if matches!(s.code(), tonic::Code::DeadlineExceeded | tonic::Code::Unknown | tonic::Code::Cancelled))
}
