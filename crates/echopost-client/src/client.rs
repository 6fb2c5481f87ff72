//! The connection to one running daemon.

use std::path::{Path, PathBuf};
use std::time::Duration;

use echopost_proto::v1::echo_post_client::EchoPostClient;
use echopost_proto::v1::{
    AppendRequest, ReadRequest, Record, StatusRequest, StatusResponse, StoredRecord,
};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::appender::Appender;
use crate::error::ClientError;

/// Largest message the client sends or accepts. Matches the daemon's limit, so that a
/// request the daemon would refuse is refused by the daemon, with its message.
const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// Sequences given to an appended batch (`first..=last`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub first_sequence: u64,
    pub last_sequence: u64,
}

/// A connection to a running EchoPost daemon. Cheap to clone; clones share the connection.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
    rpc: EchoPostClient<Channel>,
    health: HealthClient<Channel>,
}

/// Opens an HTTP/2 channel over the UNIX socket at `socket`.
pub(crate) async fn unix_channel(socket: &Path, timeout: Duration) -> Result<Channel, ClientError> {
    let path = socket.to_path_buf();
    // tonic wants a URI; the connector below ignores it and dials the socket instead.
    let endpoint = Endpoint::from_static("http://echopost.local")
        .connect_timeout(timeout)
        .timeout(Duration::from_secs(300));
    endpoint
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
        .map_err(|e| ClientError::Connect {
            socket: socket.to_path_buf(),
            reason: error_chain(&e),
        })
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

impl Client {
    /// Connects to the daemon listening on `socket`.
    pub async fn connect(socket: impl AsRef<Path>) -> Result<Client, ClientError> {
        let socket = socket.as_ref().to_path_buf();
        let channel = unix_channel(&socket, Duration::from_secs(5)).await?;
        Ok(Client::from_channel(socket, channel))
    }

    pub(crate) fn from_channel(socket: PathBuf, channel: Channel) -> Client {
        let rpc = EchoPostClient::new(channel.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        Client {
            socket,
            rpc,
            health: HealthClient::new(channel),
        }
    }

    /// The generated `echopost.v1.EchoPost` stub on this client's connection (message
    /// limits set), for calls this crate does not wrap, such as a raw `AppendStream`.
    pub fn rpc(&self) -> EchoPostClient<Channel> {
        self.rpc.clone()
    }

    /// The socket this client talks to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Stores `records` as one atomic batch. Returns once they are durable under the
    /// daemon's sync policy, with the sequences they were given.
    pub async fn append(&self, records: Vec<Record>) -> Result<Appended, ClientError> {
        let r = self
            .rpc
            .clone()
            .append(AppendRequest { records })
            .await?
            .into_inner();
        Ok(Appended {
            first_sequence: r.first_sequence,
            last_sequence: r.last_sequence,
        })
    }

    /// Opens a pipelined append stream keeping at most `window` batches unacknowledged.
    /// See [`Appender`].
    pub async fn appender(&self, window: usize) -> Result<Appender, ClientError> {
        Appender::open(self.rpc.clone(), window).await
    }

    /// The daemon's figures: backlog, disk use, upstream state, delivery rate, ...
    pub async fn status(&self) -> Result<StatusResponse, ClientError> {
        Ok(self
            .rpc
            .clone()
            .status(StatusRequest {})
            .await?
            .into_inner())
    }

    /// Up to `limit` stored records from `from_sequence` on (0: from the oldest
    /// undelivered one), without consuming them.
    pub async fn read(
        &self,
        from_sequence: u64,
        limit: u32,
    ) -> Result<Vec<StoredRecord>, ClientError> {
        let mut stream = self
            .rpc
            .clone()
            .read(ReadRequest {
                from_sequence,
                limit,
            })
            .await?
            .into_inner();
        let mut out = Vec::new();
        while let Some(resp) = stream.message().await? {
            out.extend(resp.records);
        }
        Ok(out)
    }

    /// True if the daemon answers the standard health check with `SERVING`.
    pub async fn is_serving(&self) -> bool {
        matches!(
            self.health
                .clone()
                .check(HealthCheckRequest {
                    service: String::new()
                })
                .await,
            Ok(r) if r.get_ref().status == ServingStatus::Serving as i32
        )
    }
}
