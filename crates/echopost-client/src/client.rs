//! The connection to one running daemon.

use std::path::{Path, PathBuf};
use std::time::Duration;

use echopost_proto::v1::echo_post_client::EchoPostClient;
use echopost_proto::v1::{
    AppendRequest, AppendResponse, ListStreamsRequest, PeekRequest, PeekResponse, ReadRequest,
    Record, StatusRequest, StatusResponse, StoredRecord, StreamInfo,
};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::appender::Appender;
use crate::error::{ClientError, io_error_in};

/// Largest message the client sends or accepts. Matches the daemon's limit, so that a
/// request the daemon would refuse is refused by the daemon, with its message.
const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// Sequences given to an appended batch (`first..=last`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub first_sequence: u64,
    pub last_sequence: u64,
}

/// How long a [`Client`] waits by default: to connect, for each unary call, and for each
/// message of a stream. See [`ClientBuilder::timeout`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection to a running EchoPost daemon. Cheap to clone; clones share the connection.
///
/// # Deadlines
/// Every wait is bounded: connecting, each unary call ([`Client::append`],
/// [`Client::status`], [`Client::is_serving`]), and each message of a stream (every page
/// of [`Client::read`], every acknowledgement an [`Appender`] waits for). A daemon that
/// accepts connections but never answers (stopped with `SIGSTOP`, stuck) makes the call
/// fail with [`ClientError::Timeout`] after [`DEFAULT_TIMEOUT`] (10 s), or after what
/// [`ClientBuilder::timeout`] set. Calls made on the raw stub from [`Client::rpc`] are
/// bounded the same way up to their response headers; bound a stream's messages yourself.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
    rpc: EchoPostClient<Channel>,
    health: HealthClient<Channel>,
    timeout: Duration,
}

/// How to connect: the socket, the connect deadline and the call deadline. Made by
/// [`Client::builder`].
///
/// ```no_run
/// # async fn demo() -> Result<(), echopost_client::ClientError> {
/// use std::time::Duration;
/// let client = echopost_client::Client::builder("/run/user/1000/echopost/echopost.sock")
///     .timeout(Duration::from_secs(2))
///     .connect()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    socket: PathBuf,
    timeout: Duration,
    connect_timeout: Option<Duration>,
}

impl ClientBuilder {
    /// The deadline of each call and of each stream message (default
    /// [`DEFAULT_TIMEOUT`]); also the connect deadline unless
    /// [`ClientBuilder::connect_timeout`] sets another. Zero is raised to one millisecond.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// The deadline for connecting (default: the call deadline).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout.max(Duration::from_millis(1)));
        self
    }

    /// Connects. [`ClientError::PermissionDenied`] when the socket (or a directory on the
    /// way to it) belongs to another user; [`ClientError::Timeout`] when connecting takes
    /// longer than the connect deadline; [`ClientError::Connect`] when nothing listens.
    pub async fn connect(self) -> Result<Client, ClientError> {
        let connect_timeout = self.connect_timeout.unwrap_or(self.timeout);
        let channel = unix_channel(&self.socket, connect_timeout, self.timeout).await?;
        Ok(Client::from_channel(self.socket, channel, self.timeout))
    }
}

/// Opens an HTTP/2 channel over the UNIX socket at `socket`. The whole of it (the socket's
/// `connect` and the HTTP/2 handshake) is bounded by `connect_timeout`; each request on the
/// channel by `call_timeout` up to its response headers (a backstop for the raw stub: the
/// client's own calls bound themselves, see [`Client`]).
pub(crate) async fn unix_channel(
    socket: &Path,
    connect_timeout: Duration,
    call_timeout: Duration,
) -> Result<Channel, ClientError> {
    let path = socket.to_path_buf();
    // tonic wants a URI; the connector below ignores it and dials the socket instead.
    let endpoint = Endpoint::from_static("http://echopost.local")
        .connect_timeout(connect_timeout)
        .timeout(call_timeout);
    let connecting = endpoint.connect_with_connector(tower::service_fn(move |_: Uri| {
        let path = path.clone();
        async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
    }));
    match tokio::time::timeout(connect_timeout, connecting).await {
        Ok(Ok(channel)) => Ok(channel),
        Ok(Err(e)) => Err(connect_error(socket, &e)),
        Err(_) => Err(ClientError::Timeout {
            socket: socket.to_path_buf(),
            what: "the connection",
            timeout: connect_timeout,
        }),
    }
}

/// A failed connect: `EACCES` anywhere in the chain is a permission error (the socket or
/// its directory is another user's), anything else "nothing answers".
fn connect_error(socket: &Path, e: &(dyn std::error::Error + 'static)) -> ClientError {
    match io_error_in(e) {
        Some(io) if io.kind() == std::io::ErrorKind::PermissionDenied => {
            ClientError::PermissionDenied {
                socket: socket.to_path_buf(),
                detail: io.to_string(),
            }
        }
        _ => ClientError::Connect {
            socket: socket.to_path_buf(),
            reason: error_chain(e),
        },
    }
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
    /// Connects to the daemon listening on `socket`, with the default deadlines
    /// ([`DEFAULT_TIMEOUT`]). See [`ClientBuilder::connect`] for the errors.
    pub async fn connect(socket: impl AsRef<Path>) -> Result<Client, ClientError> {
        Client::builder(socket).connect().await
    }

    /// A builder for a client of the daemon on `socket`, to set its deadlines.
    pub fn builder(socket: impl AsRef<Path>) -> ClientBuilder {
        ClientBuilder {
            socket: socket.as_ref().to_path_buf(),
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: None,
        }
    }

    /// The deadline of each call and stream message.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub(crate) fn from_channel(socket: PathBuf, channel: Channel, timeout: Duration) -> Client {
        let rpc = EchoPostClient::new(channel.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        Client {
            socket,
            rpc,
            health: HealthClient::new(channel),
            timeout,
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

    /// Runs one call with the client's deadline; maps its status.
    async fn call<T>(
        &self,
        what: &'static str,
        call: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, ClientError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(s)) => Err(self.status_error(s, what)),
            Err(_) => Err(self.timed_out(what)),
        }
    }

    pub(crate) fn timed_out(&self, what: &'static str) -> ClientError {
        ClientError::Timeout {
            socket: self.socket.clone(),
            what,
            timeout: self.timeout,
        }
    }

    pub(crate) fn status_error(&self, s: tonic::Status, what: &'static str) -> ClientError {
        ClientError::from_status(s, &self.socket, what, self.timeout)
    }

    /// Stores `records` as one atomic batch. Returns once they are durable under the
    /// daemon's sync policy, with the sequences they were given.
    ///
    /// [`ClientError::Timeout`] after the client's deadline: the batch may or may not
    /// be stored.
    pub async fn append(&self, records: Vec<Record>) -> Result<Appended, ClientError> {
        let r = self
            .append_request(AppendRequest {
                records,
                ..AppendRequest::default()
            })
            .await?;
        Ok(Appended {
            first_sequence: r.first_sequence,
            last_sequence: r.last_sequence,
        })
    }

    /// Sends one `AppendRequest` as it is (with a producer id, an expected stream
    /// version, ...) and returns the daemon's answer. See [`crate::IdempotentAppender`]
    /// for retries that cannot store a batch twice.
    pub async fn append_request(
        &self,
        request: AppendRequest,
    ) -> Result<AppendResponse, ClientError> {
        let mut rpc = self.rpc.clone();
        self.call("Append", rpc.append(request)).await
    }

    /// Every stream with its version and backlog, sorted by name (issue 14).
    pub async fn list_streams(&self) -> Result<Vec<StreamInfo>, ClientError> {
        let mut rpc = self.rpc.clone();
        let r = self
            .call("ListStreams", rpc.list_streams(ListStreamsRequest {}))
            .await?;
        Ok(r.streams)
    }

    /// The newest buffered record of `stream` (a `NOT_FOUND` status when it has none).
    pub async fn peek(&self, stream: &str) -> Result<PeekResponse, ClientError> {
        let mut rpc = self.rpc.clone();
        self.call(
            "Peek",
            rpc.peek(PeekRequest {
                stream: stream.to_owned(),
            }),
        )
        .await
    }

    /// Opens a pipelined append stream keeping at most `window` batches unacknowledged.
    /// Each acknowledgement it waits for is bounded by the client's deadline. See
    /// [`Appender`].
    pub async fn appender(&self, window: usize) -> Result<Appender, ClientError> {
        Appender::open(self.clone(), window).await
    }

    /// The daemon's figures: backlog, disk use, upstream state, delivery rate, ...
    pub async fn status(&self) -> Result<StatusResponse, ClientError> {
        let mut rpc = self.rpc.clone();
        self.call("Status", rpc.status(StatusRequest {})).await
    }

    /// Up to `limit` stored records from `from_sequence` on (0: from the oldest
    /// undelivered one), without consuming them. Each message of the stream is bounded by
    /// the client's deadline.
    pub async fn read(
        &self,
        from_sequence: u64,
        limit: u32,
    ) -> Result<Vec<StoredRecord>, ClientError> {
        self.read_request(ReadRequest {
            from_sequence,
            limit,
            ..ReadRequest::default()
        })
        .await
    }

    /// As [`Client::read`], only the records of `stream`; `limit` counts those.
    pub async fn read_stream(
        &self,
        from_sequence: u64,
        limit: u32,
        stream: &str,
    ) -> Result<Vec<StoredRecord>, ClientError> {
        self.read_request(ReadRequest {
            from_sequence,
            limit,
            stream: stream.to_owned(),
        })
        .await
    }

    async fn read_request(&self, request: ReadRequest) -> Result<Vec<StoredRecord>, ClientError> {
        let mut rpc = self.rpc.clone();
        let mut stream = self.call("Read", rpc.read(request)).await?;
        let mut out = Vec::new();
        loop {
            match tokio::time::timeout(self.timeout, stream.message()).await {
                Ok(Ok(Some(resp))) => out.extend(resp.records),
                Ok(Ok(None)) => return Ok(out),
                Ok(Err(s)) => return Err(self.status_error(s, "a Read message")),
                Err(_) => return Err(self.timed_out("a Read message")),
            }
        }
    }

    /// True if the daemon answers the standard health check with `SERVING` within the
    /// client's deadline.
    pub async fn is_serving(&self) -> bool {
        matches!(self.health_within(self.timeout).await, Ok(true))
    }

    /// The health check with its own deadline: `Ok(true)` when `SERVING`, `Ok(false)` for
    /// another answer, errors (a refused uid is [`ClientError::PermissionDenied`]) as such.
    pub(crate) async fn health_within(&self, within: Duration) -> Result<bool, ClientError> {
        let mut health = self.health.clone();
        let check = health.check(HealthCheckRequest {
            service: String::new(),
        });
        match tokio::time::timeout(within, check).await {
            Ok(Ok(r)) => Ok(r.get_ref().status == ServingStatus::Serving as i32),
            Ok(Err(s)) => Err(self.status_error(s, "the health check")),
            Err(_) => Err(ClientError::Timeout {
                socket: self.socket.clone(),
                what: "the health check",
                timeout: within,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    /// A socket that the kernel accepts connections on (into the listen backlog) and
    /// nobody answers: what a daemon stopped with SIGSTOP looks like.
    fn silent_socket(dir: &Path) -> (PathBuf, std::os::unix::net::UnixListener) {
        let path = dir.join("silent.sock");
        let l = std::os::unix::net::UnixListener::bind(&path).unwrap();
        (path, l)
    }

    #[tokio::test]
    async fn every_call_on_a_silent_daemon_ends_at_its_deadline() {
        let tmp = tempfile::tempdir().unwrap();
        let (path, _listener) = silent_socket(tmp.path());
        let deadline = Duration::from_millis(300);
        let margin = Duration::from_secs(2);
        let t = Instant::now();
        // Connecting needs no answer from the server: the kernel queues the connection
        // and the HTTP/2 preface fits in the socket buffer.
        let c = Client::builder(&path)
            .timeout(deadline)
            .connect()
            .await
            .unwrap();
        assert!(t.elapsed() < deadline + margin, "{:?}", t.elapsed());
        assert_eq!(c.timeout(), deadline);

        let t = Instant::now();
        let e = c.append(vec![Record::default()]).await.unwrap_err();
        assert!(
            matches!(e, ClientError::Timeout { what: "Append", .. }),
            "{e:?}"
        );
        assert!(e.is_timeout() && !e.daemon_unavailable());
        assert!(t.elapsed() < deadline + margin, "{:?}", t.elapsed());

        let t = Instant::now();
        assert!(c.status().await.unwrap_err().is_timeout());
        assert!(c.read(0, 10).await.unwrap_err().is_timeout());
        assert!(!c.is_serving().await);
        assert!(t.elapsed() < 3 * deadline + margin, "{:?}", t.elapsed());

        // A pipelined stream: opening it needs no answer; waiting for an
        // acknowledgement is bounded.
        let t = Instant::now();
        match c.appender(2).await {
            Ok(mut a) => {
                a.send(vec![Record::default()]).await.unwrap();
                let e = a.next_ack().await.unwrap_err();
                assert!(e.is_timeout(), "{e:?}");
            }
            Err(e) => assert!(e.is_timeout(), "{e:?}"),
        }
        assert!(t.elapsed() < 2 * deadline + margin, "{:?}", t.elapsed());
    }

    #[tokio::test]
    async fn nothing_listening_is_a_connect_error() {
        let tmp = tempfile::tempdir().unwrap();
        let e = Client::connect(tmp.path().join("none.sock"))
            .await
            .unwrap_err();
        assert!(matches!(e, ClientError::Connect { .. }), "{e:?}");
        assert!(e.daemon_unavailable());
    }
}
