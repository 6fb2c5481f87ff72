//! Every stock gRPC client on the socket: the HTTP/2 connection seen through a layer that
//! makes each request's `:authority` acceptable ([`inbound`]) and says why the server
//! refused anything it still refuses ([`outbound`]).
//!
//! [`H2Stream`] wraps an accepted connection below the HTTP/2 server. Its only effects:
//! * header blocks are re-encoded, with an `:authority` the server would reject (a socket
//!   path, a percent-encoded path, an empty value) replaced by `localhost`;
//! * a connection that has not sent the whole HTTP/2 preface within [`PREFACE_TIMEOUT`]
//!   is closed (a client that connects and says nothing would otherwise hold a descriptor
//!   forever);
//! * at most one warning per connection goes to the session log, naming what the client
//!   sent: no preface, an undecodable header block, or a request the server reset.
//!
//! Everything but header blocks is read straight into the server's buffer and left there
//! ([`Inbound::pass_through_prefix`]): data frames cost a frame-header parse, no copy.

pub mod inbound;
pub mod outbound;
#[cfg(test)]
mod proptests;

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use inbound::{Inbound, escape};
use outbound::{Outbound, Refusal, code_name};

/// Bytes read at a time until the preface is complete.
const PREFACE_READ: usize = 4096;
/// How long a new connection may take to send the HTTP/2 preface.
pub const PREFACE_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection seen through the `:authority` layer (see the module documentation).
pub struct H2Stream<S> {
    inner: S,
    inbound: Inbound,
    outbound: Outbound,
    /// What the server reads next, from `out_pos`.
    out: Vec<u8>,
    out_pos: usize,
    eof: bool,
    preface_deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    /// A warning was logged for this connection already.
    warned: bool,
    /// A replaced `:authority` was logged for this connection already.
    noted_rewrite: bool,
    /// Who is connected, for log lines.
    peer: String,
}

impl<S> std::fmt::Debug for H2Stream<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H2Stream")
            .field("inbound", &self.inbound)
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

impl<S> H2Stream<S> {
    /// Wraps a freshly accepted connection; `peer` names it in log lines.
    pub fn new(inner: S, peer: String) -> H2Stream<S> {
        H2Stream {
            inner,
            inbound: Inbound::new(),
            outbound: Outbound::default(),
            out: Vec::new(),
            out_pos: 0,
            eof: false,
            preface_deadline: Some(Box::pin(tokio::time::sleep(PREFACE_TIMEOUT))),
            warned: false,
            noted_rewrite: false,
            peer,
        }
    }

    /// The wrapped connection.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    fn warn_once(&mut self, what: impl FnOnce() -> String) {
        if !self.warned {
            self.warned = true;
            tracing::warn!(peer = %self.peer, "{}", what());
        }
    }

    fn after_inbound(&mut self) {
        if let Some(why) = self.inbound.take_warning() {
            self.warn_once(|| format!("refusing a connection that does not speak gRPC over HTTP/2 as this socket requires: {why}"));
        }
        if !self.noted_rewrite && self.inbound.rewritten() > 0 {
            self.noted_rewrite = true;
            tracing::debug!(peer = %self.peer, "replaced an :authority the HTTP/2 server would refuse (a socket path or empty) by localhost");
        }
        if self.inbound.preface_done() {
            self.preface_deadline = None;
        }
    }

    /// The socket has nothing yet: `Pending`, unless the preface is overdue, which closes
    /// the connection.
    fn pending_or_timeout(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(deadline) = self.preface_deadline.as_mut()
            && deadline.as_mut().poll(cx).is_ready()
        {
            self.preface_deadline = None;
            self.warn_once(|| {
                format!(
                    "closing a connection that sent no HTTP/2 preface within {} s",
                    PREFACE_TIMEOUT.as_secs()
                )
            });
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no HTTP/2 preface in time",
            )));
        }
        Poll::Pending
    }

    fn after_outbound(&mut self, written: &[u8]) {
        for r in self.outbound.observe(written) {
            match r {
                Refusal::Stream { stream, code } => {
                    let sent = self
                        .inbound
                        .summary(stream)
                        .map_or_else(|| "headers not seen".to_owned(), |s| s.to_string());
                    self.warn_once(|| {
                        format!(
                            "the HTTP/2 server reset a request with {} (stream {stream}); the client sent {sent}",
                            code_name(code)
                        )
                    });
                }
                Refusal::Connection { code, debug } => self.warn_once(|| {
                    format!(
                        "the HTTP/2 server closed the connection with {} ({})",
                        code_name(code),
                        escape(&debug)
                    )
                }),
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for H2Stream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.out_pos < this.out.len() {
                let n = buf.remaining().min(this.out.len() - this.out_pos);
                buf.put_slice(&this.out[this.out_pos..this.out_pos + n]);
                this.out_pos += n;
                if this.out_pos == this.out.len() {
                    this.out.clear();
                    this.out_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            if this.inbound.is_passthrough() || buf.remaining() == 0 {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            if !this.inbound.preface_done() {
                // Until the preface is complete, read into a buffer of our own: the server
                // asks for the 24 preface bytes alone, and a refusal should show more of
                // what the client sent than that.
                let mut first = [0u8; PREFACE_READ];
                let mut rb = ReadBuf::new(&mut first);
                match Pin::new(&mut this.inner).poll_read(cx, &mut rb) {
                    Poll::Ready(Ok(())) => {
                        let n = rb.filled().len();
                        if n == 0 {
                            this.inbound.finish(&mut this.out);
                            this.eof = true;
                        } else {
                            this.inbound.push(&first[..n], &mut this.out);
                        }
                        this.after_inbound();
                        continue;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => return this.pending_or_timeout(cx),
                }
            }
            // Read straight into the server's buffer; only a header block (or what cannot
            // be decided yet) is taken back out and transformed.
            let before = buf.filled().len();
            match Pin::new(&mut this.inner).poll_read(cx, buf) {
                Poll::Ready(Ok(())) => {
                    let got = buf.filled().len() - before;
                    if got == 0 {
                        this.inbound.finish(&mut this.out);
                        this.eof = true;
                        this.after_inbound();
                        continue;
                    }
                    let mut pos = before;
                    loop {
                        let end = buf.filled().len();
                        pos += this.inbound.pass_through_prefix(&buf.filled()[pos..end]);
                        if pos == end {
                            break;
                        }
                        // A header block: rewritten where it stands when it is whole and
                        // the buffer has room, so what follows it is not copied.
                        let mut from = pos;
                        if let Some((taken, rewritten)) =
                            this.inbound.take_header_block(&buf.filled()[pos..end])
                        {
                            if splice(buf, pos, taken, &rewritten) {
                                pos += rewritten.len();
                                continue;
                            }
                            // No room: the rewritten block and everything after it are
                            // served from `out`, in order.
                            this.out.extend_from_slice(&rewritten);
                            from = pos + taken;
                        }
                        let tail = buf.filled()[from..].to_vec();
                        buf.set_filled(pos);
                        this.inbound.push(&tail, &mut this.out);
                        break;
                    }
                    this.after_inbound();
                    if pos > before {
                        return Poll::Ready(Ok(()));
                    }
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return this.pending_or_timeout(cx),
            }
        }
    }
}

/// Replaces the `old_len` bytes at `at` of `buf`'s filled part by `new`, moving what
/// follows. False (nothing changed) when `new` is longer and `buf` has no room for it.
fn splice(buf: &mut ReadBuf<'_>, at: usize, old_len: usize, new: &[u8]) -> bool {
    let end = buf.filled().len();
    if new.len() <= old_len {
        let f = buf.filled_mut();
        f[at..at + new.len()].copy_from_slice(new);
        f.copy_within(at + old_len..end, at + new.len());
        buf.set_filled(end - (old_len - new.len()));
        return true;
    }
    let grow = new.len() - old_len;
    if buf.remaining() < grow {
        return false;
    }
    buf.initialize_unfilled_to(grow);
    buf.advance(grow);
    let f = buf.filled_mut();
    f.copy_within(at + old_len..end, at + new.len());
    f[at..at + new.len()].copy_from_slice(new);
    true
}

impl<S: AsyncWrite + Unpin> AsyncWrite for H2Stream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let res = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = res {
            this.after_outbound(&buf[..n]);
        }
        res
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let res = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(mut n)) = res {
            for b in bufs {
                if n == 0 {
                    break;
                }
                let take = n.min(b.len());
                this.after_outbound(&b[..take]);
                n -= take;
            }
        }
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(buf: &ReadBuf<'_>) -> Vec<u8> {
        buf.filled().to_vec()
    }

    #[test]
    fn splice_shrinks_grows_and_refuses_without_room() {
        let mut mem = [0u8; 12];
        let mut buf = ReadBuf::new(&mut mem);
        buf.put_slice(b"abHHHHcd");
        assert!(splice(&mut buf, 2, 4, b"xy"));
        assert_eq!(filled(&buf), b"abxycd");
        assert!(splice(&mut buf, 2, 2, b"12345"));
        assert_eq!(filled(&buf), b"ab12345cd");
        // 9 of 12 used: growing by 4 does not fit, and nothing changes.
        assert!(!splice(&mut buf, 2, 1, b"zzzzz"));
        assert_eq!(filled(&buf), b"ab12345cd");
        assert!(splice(&mut buf, 7, 2, b""));
        assert_eq!(filled(&buf), b"ab12345");
    }
}
