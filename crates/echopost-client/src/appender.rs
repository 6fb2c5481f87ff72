//! A pipelined append stream.

use std::collections::VecDeque;

use echopost_proto::v1::{AppendRequest, AppendResponse, Record};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

use crate::client::{Appended, Client};
use crate::error::ClientError;

/// Sends batches over one `AppendStream` call without waiting for each acknowledgement.
///
/// The daemon stores the batches in the order they were sent and acknowledges each one,
/// in order, once it is durable. At most `window` batches are unacknowledged at any time:
/// [`Appender::send`] waits for the oldest acknowledgement when the window is full (and
/// keeps it for [`Appender::next_ack`]), so a producer that never reads acknowledgements
/// cannot deadlock the stream. Only acknowledged batches are stored for sure; if the
/// stream breaks, resend the rest (duplicates are safe: delivery is at-least-once).
///
/// Every acknowledgement is awaited for at most the client's deadline
/// ([`crate::ClientBuilder::timeout`]); past it the call fails with
/// [`ClientError::Timeout`] and the unacknowledged batches may or may not be stored.
///
/// ```no_run
/// # async fn demo(client: echopost_client::Client) -> Result<(), echopost_client::ClientError> {
/// use echopost_client::Record;
/// let mut appender = client.appender(16).await?;
/// for i in 0..1000 {
///     let batch = vec![Record { payload: format!("event {i}").into_bytes(), ..Record::default() }];
///     appender.send(batch).await?;
/// }
/// let acks = appender.finish().await?; // every remaining acknowledgement, in order
/// println!("last batch stored as sequence {}", acks.last().map_or(0, |a| a.last_sequence));
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Appender {
    client: Client,
    tx: Option<mpsc::Sender<AppendRequest>>,
    acks: Streaming<AppendResponse>,
    ready: VecDeque<Appended>,
    in_flight: usize,
    window: usize,
}

impl Appender {
    pub(crate) async fn open(client: Client, window: usize) -> Result<Self, ClientError> {
        let window = window.max(1);
        let (tx, rx) = mpsc::channel(window);
        let mut rpc = client.rpc();
        let opened =
            tokio::time::timeout(client.timeout(), rpc.append_stream(ReceiverStream::new(rx)))
                .await;
        let acks = match opened {
            Ok(Ok(r)) => r.into_inner(),
            Ok(Err(s)) => return Err(client.status_error(s, "AppendStream")),
            Err(_) => return Err(client.timed_out("AppendStream")),
        };
        Ok(Appender {
            client,
            tx: Some(tx),
            acks,
            ready: VecDeque::new(),
            in_flight: 0,
            window,
        })
    }

    /// Queues one atomic batch. Waits only if `window` batches are unacknowledged.
    pub async fn send(&mut self, records: Vec<Record>) -> Result<(), ClientError> {
        while self.in_flight >= self.window {
            let ack = self.receive().await?;
            self.ready.push_back(ack);
        }
        let tx = self.tx.as_ref().ok_or(ClientError::StreamClosed {
            unacknowledged: self.in_flight,
        })?;
        if tx
            .send(AppendRequest {
                records,
                ..AppendRequest::default()
            })
            .await
            .is_err()
        {
            // The request stream is gone: the call failed. Surface its status if any.
            return Err(self
                .receive()
                .await
                .err()
                .unwrap_or(ClientError::StreamClosed {
                    unacknowledged: self.in_flight + 1,
                }));
        }
        self.in_flight += 1;
        Ok(())
    }

    /// The next acknowledgement, in send order; `None` when every sent batch has been
    /// acknowledged.
    pub async fn next_ack(&mut self) -> Result<Option<Appended>, ClientError> {
        if let Some(a) = self.ready.pop_front() {
            return Ok(Some(a));
        }
        if self.in_flight == 0 {
            return Ok(None);
        }
        self.receive().await.map(Some)
    }

    /// Closes the stream and returns every acknowledgement not yet taken, in order.
    pub async fn finish(mut self) -> Result<Vec<Appended>, ClientError> {
        self.tx = None;
        let mut out: Vec<Appended> = self.ready.drain(..).collect();
        while self.in_flight > 0 {
            out.push(self.receive().await?);
        }
        Ok(out)
    }

    /// Batches sent and not yet acknowledged.
    pub fn unacknowledged(&self) -> usize {
        self.in_flight + self.ready.len()
    }

    async fn receive(&mut self) -> Result<Appended, ClientError> {
        let next = tokio::time::timeout(self.client.timeout(), self.acks.message()).await;
        let next = match next {
            Ok(Ok(m)) => m,
            Ok(Err(s)) => return Err(self.client.status_error(s, "an acknowledgement")),
            Err(_) => return Err(self.client.timed_out("an acknowledgement")),
        };
        match next {
            Some(r) => {
                self.in_flight = self.in_flight.saturating_sub(1);
                Ok(Appended {
                    first_sequence: r.first_sequence,
                    last_sequence: r.last_sequence,
                })
            }
            None => Err(ClientError::StreamClosed {
                unacknowledged: self.in_flight,
            }),
        }
    }
}
