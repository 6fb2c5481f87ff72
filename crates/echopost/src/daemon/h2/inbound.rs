//! The client → daemon direction of an HTTP/2 connection, with every request's
//! `:authority` made acceptable to the HTTP/2 server.
//!
//! # Why
//! gRPC clients built on grpc-core (Python, C++, Ruby, PHP, C#) since 1.57, grpc-java's
//! netty transport, Swift and Bazel send the socket path as `:authority` when they dial
//! `unix:PATH`: raw (`/run/x/echopost.sock`) or percent-encoded (`run%2Fx%2Fechopost.sock`).
//! The `h2` crate parses `:authority` as a URI authority (RFC 3986 §3.2) and resets the
//! stream with `PROTOCOL_ERROR` when it is not one, before any of our code runs. On a
//! local, peer-checked socket the authority means nothing, so an unusable one is replaced
//! by `localhost` before the server sees it.
//!
//! # How
//! Frames pass through unchanged, without being buffered, except header blocks: a
//! `HEADERS` frame and its `CONTINUATION`s are gathered, decoded with the connection's
//! HPACK decoder (RFC 7541), and re-encoded with an HPACK encoder of our own, whose
//! dynamic table is the one the server's decoder then mirrors. Every block is re-encoded,
//! changed or not: the client's dynamic table and the server's can only stay consistent if
//! one encoder feeds the server. Padding is dropped (RFC 9113 §6.2 makes it optional),
//! priority fields are kept, and the block is re-framed in frames of at most 16,384 bytes
//! (the smallest `SETTINGS_MAX_FRAME_SIZE` a peer must accept).
//!
//! What this layer cannot make sense of (no preface, an undecodable header block, a
//! `CONTINUATION` out of place, a header block above [`MAX_HEADER_BLOCK`]) is passed on
//! unchanged from then on, so the server refuses it exactly as it would have; the reason
//! is reported once ([`Inbound::take_warning`]) for the session log.
//!
//! Memory is bounded: a frame header, one header block of at most [`MAX_HEADER_BLOCK`]
//! bytes, the HPACK tables ([`HPACK_TABLE_SIZE`] each) and [`RECENT_STREAMS`] summaries.

use std::collections::VecDeque;

use loona_hpack::{Decoder, Encoder};

/// The connection preface every HTTP/2 client sends first (RFC 9113 §3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Length of a frame header (RFC 9113 §4.1).
pub const FRAME_HEADER_LEN: usize = 9;
/// Largest frame this layer writes: the default `SETTINGS_MAX_FRAME_SIZE`, which every
/// peer must accept.
pub const MAX_OUT_FRAME: usize = 16_384;
/// Largest header block gathered; a larger one is passed on as received (the server's own
/// header-list limit then applies).
pub const MAX_HEADER_BLOCK: usize = 256 << 10;
/// Dynamic table size of both HPACK contexts: the HTTP/2 default, which the daemon's
/// server advertises (a client may not use more without being told).
pub const HPACK_TABLE_SIZE: usize = 4096;
/// Request summaries kept for naming refused requests in the session log.
pub const RECENT_STREAMS: usize = 16;
/// What an unusable `:authority` becomes.
pub const LOCAL_AUTHORITY: &[u8] = b"localhost";

const TYPE_HEADERS: u8 = 0x1;
const TYPE_CONTINUATION: u8 = 0x9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;

/// A frame header (RFC 9113 §4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Payload length in bytes.
    pub len: usize,
    pub kind: u8,
    pub flags: u8,
    /// Stream identifier (reserved bit cleared).
    pub stream: u32,
}

impl FrameHeader {
    /// Parses the first [`FRAME_HEADER_LEN`] bytes of `b`.
    pub fn parse(b: &[u8; FRAME_HEADER_LEN]) -> FrameHeader {
        FrameHeader {
            len: (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2]),
            kind: b[3],
            flags: b[4],
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        // `len` <= MAX_OUT_FRAME here, so it fits in 24 bits.
        let len = self.len as u32;
        out.extend_from_slice(&len.to_be_bytes()[1..]);
        out.push(self.kind);
        out.push(self.flags);
        out.extend_from_slice(&self.stream.to_be_bytes());
    }
}

/// A request's headers as the client sent them, for the log line of a refusal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestSummary {
    pub method: String,
    pub path: String,
    /// The `:authority` as received (`None`: absent).
    pub authority: Option<String>,
    pub content_type: String,
}

impl std::fmt::Display for RequestSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            ":method={:?} :path={:?} :authority={} content-type={:?}",
            self.method,
            self.path,
            self.authority
                .as_ref()
                .map_or_else(|| "(absent)".to_owned(), |a| format!("{a:?}")),
            self.content_type
        )
    }
}

#[derive(Debug)]
enum State {
    /// `got` bytes of the preface matched so far.
    Preface { got: usize },
    /// At a frame boundary or inside a frame.
    Frames,
    /// Everything from here on is passed on unchanged.
    Passthrough,
}

/// A header block being gathered.
#[derive(Debug)]
struct Block {
    stream: u32,
    /// `END_STREAM` and `PRIORITY` of the `HEADERS` frame.
    flags: u8,
    priority: Option<[u8; 5]>,
    fragment: Vec<u8>,
    /// The frames as received, to pass on unchanged if the block cannot be used.
    original: Vec<u8>,
}

/// The client → daemon byte stream transformer (sans I/O). Feed it what was read with
/// [`Inbound::push`]; it appends what the server should read.
pub struct Inbound {
    state: State,
    /// A partial frame header, or a partial header-block frame.
    pending: Vec<u8>,
    /// Payload bytes of the current pass-through frame still to come.
    skip: usize,
    block: Option<Block>,
    decoder: Decoder<'static>,
    encoder: Encoder<'static>,
    recent: VecDeque<(u32, RequestSummary)>,
    warning: Option<String>,
    warned: bool,
    /// `:authority` values replaced so far on this connection.
    rewritten: u64,
}

impl Default for Inbound {
    fn default() -> Self {
        Inbound::new()
    }
}

impl std::fmt::Debug for Inbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbound")
            .field("state", &self.state)
            .field("pending", &self.pending.len())
            .field("skip", &self.skip)
            .field("rewritten", &self.rewritten)
            .finish_non_exhaustive()
    }
}

impl Inbound {
    /// A transformer at the start of a connection.
    pub fn new() -> Inbound {
        let mut decoder = Decoder::new();
        decoder.set_max_allowed_table_size(HPACK_TABLE_SIZE);
        let mut encoder = Encoder::new();
        encoder.set_max_table_size(HPACK_TABLE_SIZE);
        Inbound {
            state: State::Preface { got: 0 },
            pending: Vec::new(),
            skip: 0,
            block: None,
            decoder,
            encoder,
            recent: VecDeque::with_capacity(RECENT_STREAMS),
            warning: None,
            warned: false,
            rewritten: 0,
        }
    }

    /// True once the whole preface was received (false again never).
    pub fn preface_done(&self) -> bool {
        !matches!(self.state, State::Preface { .. })
    }

    /// True when everything is passed on unchanged from now on.
    pub fn is_passthrough(&self) -> bool {
        matches!(self.state, State::Passthrough)
    }

    /// How many `:authority` values were replaced on this connection.
    pub fn rewritten(&self) -> u64 {
        self.rewritten
    }

    /// The headers of request `stream`, if it is among the last [`RECENT_STREAMS`].
    pub fn summary(&self, stream: u32) -> Option<&RequestSummary> {
        self.recent
            .iter()
            .rev()
            .find(|(s, _)| *s == stream)
            .map(|(_, r)| r)
    }

    /// Why this layer gave up on the connection, once: for a warning in the session log.
    pub fn take_warning(&mut self) -> Option<String> {
        self.warning.take()
    }

    /// Transforms `input` (the next bytes read from the client), appending what the
    /// server should read to `out`. Bytes that do not yet form a whole unit are kept.
    pub fn push(&mut self, mut input: &[u8], out: &mut Vec<u8>) {
        while !input.is_empty() {
            match self.state {
                State::Passthrough => {
                    out.extend_from_slice(input);
                    return;
                }
                State::Preface { got } => {
                    let want = &PREFACE[got..];
                    let n = want.len().min(input.len());
                    if input[..n] != want[..n] {
                        let mut seen = PREFACE[..got].to_vec();
                        seen.extend_from_slice(&input[..input.len().min(32)]);
                        self.give_up(
                            format!(
                                "the connection does not start with the HTTP/2 preface (it began with {})",
                                escape(&seen)
                            ),
                            out,
                        );
                        continue;
                    }
                    out.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    self.state = if got + n == PREFACE.len() {
                        State::Frames
                    } else {
                        State::Preface { got: got + n }
                    };
                }
                State::Frames => input = self.frames(input, out),
            }
        }
    }

    /// The length of the longest prefix of `input` that passes through unchanged, taken
    /// as consumed (the caller keeps those bytes where they are: no copy). It stops before
    /// the first header-block frame, and at anything it cannot decide on yet (a partial
    /// frame header, a preface mismatch); the caller gives the rest to [`Inbound::push`].
    pub fn pass_through_prefix(&mut self, input: &[u8]) -> usize {
        if !self.pending.is_empty() || self.block.is_some() {
            return 0;
        }
        let mut at = 0;
        loop {
            match self.state {
                State::Passthrough => return input.len(),
                State::Preface { got } => {
                    let want = &PREFACE[got..];
                    let n = want.len().min(input.len() - at);
                    if input[at..at + n] != want[..n] {
                        return at;
                    }
                    at += n;
                    self.state = if got + n == PREFACE.len() {
                        State::Frames
                    } else {
                        State::Preface { got: got + n }
                    };
                    if at == input.len() {
                        return at;
                    }
                }
                State::Frames => {
                    if self.skip > 0 {
                        let n = self.skip.min(input.len() - at);
                        self.skip -= n;
                        at += n;
                    }
                    if at == input.len() || input.len() - at < FRAME_HEADER_LEN {
                        return at;
                    }
                    let mut hb = [0u8; FRAME_HEADER_LEN];
                    hb.copy_from_slice(&input[at..at + FRAME_HEADER_LEN]);
                    let h = FrameHeader::parse(&hb);
                    if h.kind == TYPE_HEADERS || h.kind == TYPE_CONTINUATION {
                        return at;
                    }
                    at += FRAME_HEADER_LEN;
                    self.skip = h.len;
                }
            }
        }
    }

    /// When `input` starts with a whole header block (a `HEADERS` frame and its
    /// `CONTINUATION`s, all present): transforms it as [`Inbound::push`] would and returns
    /// how many bytes of `input` it took and what replaces them. `None` when `input` does
    /// not start with a complete block, or this layer holds state of its own (then the
    /// caller uses `push`).
    pub fn take_header_block(&mut self, input: &[u8]) -> Option<(usize, Vec<u8>)> {
        if !matches!(self.state, State::Frames)
            || !self.pending.is_empty()
            || self.block.is_some()
            || self.skip > 0
        {
            return None;
        }
        let mut at = 0;
        let mut stream = None;
        loop {
            if input.len() - at < FRAME_HEADER_LEN {
                return None;
            }
            let mut hb = [0u8; FRAME_HEADER_LEN];
            hb.copy_from_slice(&input[at..at + FRAME_HEADER_LEN]);
            let h = FrameHeader::parse(&hb);
            let expected = match stream {
                None => h.kind == TYPE_HEADERS,
                Some(s) => h.kind == TYPE_CONTINUATION && h.stream == s,
            };
            let end = at + FRAME_HEADER_LEN + h.len;
            if !expected || end > input.len() || end > MAX_HEADER_BLOCK {
                return None;
            }
            stream = Some(h.stream);
            at = end;
            if h.flags & FLAG_END_HEADERS != 0 {
                break;
            }
        }
        let mut out = Vec::with_capacity(at + 16);
        self.push(&input[..at], &mut out);
        Some((at, out))
    }

    /// Called at end of input: whatever is still held is passed on as received (the
    /// server sees the same truncated stream the client sent).
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if let Some(b) = self.block.take() {
            out.extend_from_slice(&b.original);
        }
        out.append(&mut self.pending);
        self.state = State::Passthrough;
    }

    /// Handles frames; returns the input not consumed (only when switching state).
    fn frames<'i>(&mut self, mut input: &'i [u8], out: &mut Vec<u8>) -> &'i [u8] {
        loop {
            if self.skip > 0 {
                let n = self.skip.min(input.len());
                out.extend_from_slice(&input[..n]);
                self.skip -= n;
                input = &input[n..];
            }
            if input.is_empty() || !matches!(self.state, State::Frames) {
                return input;
            }
            // A frame header, from `pending` and `input`.
            let need = FRAME_HEADER_LEN.saturating_sub(self.pending.len());
            if self.pending.len() < FRAME_HEADER_LEN {
                let n = need.min(input.len());
                self.pending.extend_from_slice(&input[..n]);
                input = &input[n..];
                if self.pending.len() < FRAME_HEADER_LEN {
                    return input;
                }
            }
            let mut hb = [0u8; FRAME_HEADER_LEN];
            hb.copy_from_slice(&self.pending[..FRAME_HEADER_LEN]);
            let h = FrameHeader::parse(&hb);
            let is_block_frame = h.kind == TYPE_HEADERS || h.kind == TYPE_CONTINUATION;
            if self.block.is_some() && h.kind != TYPE_CONTINUATION {
                let why = format!(
                    "a frame of type {} arrived in the middle of a header block (RFC 9113 §6.10 allows only CONTINUATION)",
                    h.kind
                );
                self.give_up(why, out);
                return input;
            }
            if !is_block_frame {
                out.extend_from_slice(&self.pending);
                self.pending.clear();
                self.skip = h.len;
                continue;
            }
            let held = self.block.as_ref().map_or(0, |b| b.original.len());
            if h.len + held > MAX_HEADER_BLOCK {
                let why = format!(
                    "a header block of more than {MAX_HEADER_BLOCK} bytes on stream {}",
                    h.stream
                );
                self.give_up(why, out);
                return input;
            }
            // Gather the whole frame.
            let total = FRAME_HEADER_LEN + h.len;
            let n = (total - self.pending.len()).min(input.len());
            self.pending.extend_from_slice(&input[..n]);
            input = &input[n..];
            if self.pending.len() < total {
                return input;
            }
            let frame = std::mem::take(&mut self.pending);
            if let Err(why) = self.block_frame(h, &frame, out) {
                self.give_up(why, out);
                return input;
            }
        }
    }

    /// One whole `HEADERS` or `CONTINUATION` frame.
    fn block_frame(
        &mut self,
        h: FrameHeader,
        frame: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), String> {
        let payload = &frame[FRAME_HEADER_LEN..];
        match (h.kind, self.block.as_mut()) {
            (TYPE_HEADERS, None) => {
                let mut p = payload;
                let mut pad = 0usize;
                if h.flags & FLAG_PADDED != 0 {
                    let (&n, rest) = p.split_first().ok_or_else(|| {
                        format!(
                            "a padded HEADERS frame without its pad length on stream {}",
                            h.stream
                        )
                    })?;
                    pad = usize::from(n);
                    p = rest;
                }
                let mut priority = None;
                if h.flags & FLAG_PRIORITY != 0 {
                    if p.len() < 5 {
                        return Err(format!(
                            "a HEADERS frame too short for its priority on stream {}",
                            h.stream
                        ));
                    }
                    let mut pr = [0u8; 5];
                    pr.copy_from_slice(&p[..5]);
                    priority = Some(pr);
                    p = &p[5..];
                }
                if pad > p.len() {
                    return Err(format!(
                        "a HEADERS frame whose padding exceeds it on stream {}",
                        h.stream
                    ));
                }
                let fragment = p[..p.len() - pad].to_vec();
                self.block = Some(Block {
                    stream: h.stream,
                    flags: h.flags & (FLAG_END_STREAM | FLAG_PRIORITY),
                    priority,
                    fragment,
                    original: frame.to_vec(),
                });
            }
            (TYPE_CONTINUATION, Some(b)) if b.stream == h.stream => {
                b.fragment.extend_from_slice(payload);
                b.original.extend_from_slice(frame);
            }
            (TYPE_CONTINUATION, _) => {
                return Err(format!(
                    "a CONTINUATION frame without a header block before it on stream {}",
                    h.stream
                ));
            }
            _ => {
                return Err(format!(
                    "a HEADERS frame inside a header block on stream {}",
                    h.stream
                ));
            }
        }
        if h.flags & FLAG_END_HEADERS != 0
            && let Some(b) = self.block.take()
            && let Err(why) = self.reencode(&b, out)
        {
            self.block = Some(b);
            return Err(why);
        }
        Ok(())
    }

    /// Decodes a complete block, fixes `:authority`, and writes it re-encoded.
    fn reencode(&mut self, b: &Block, out: &mut Vec<u8>) -> Result<(), String> {
        let mut fields: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        self.decoder
            .decode_with_cb(&b.fragment, |n, v| {
                fields.push((n.into_owned(), v.into_owned()))
            })
            .map_err(|e| {
                format!(
                    "the header block of stream {} cannot be decoded: {e:?}",
                    b.stream
                )
            })?;
        let mut summary = RequestSummary::default();
        for (name, value) in &mut fields {
            match name.as_slice() {
                b":method" => summary.method = String::from_utf8_lossy(value).into_owned(),
                b":path" => summary.path = String::from_utf8_lossy(value).into_owned(),
                b"content-type" => {
                    summary.content_type = String::from_utf8_lossy(value).into_owned()
                }
                b":authority" => {
                    summary.authority = Some(String::from_utf8_lossy(value).into_owned());
                    if !is_usable_authority(value) {
                        *value = LOCAL_AUTHORITY.to_vec();
                        self.rewritten += 1;
                    }
                }
                _ => {}
            }
        }
        if self.recent.len() == RECENT_STREAMS {
            self.recent.pop_front();
        }
        self.recent.push_back((b.stream, summary));

        let mut block = Vec::with_capacity(b.fragment.len() + 16);
        if let Some(p) = b.priority {
            block.extend_from_slice(&p);
        }
        self.encoder
            .encode_into(
                fields.iter().map(|(n, v)| (n.as_slice(), v.as_slice())),
                &mut block,
            )
            .map_err(|e| {
                format!(
                    "re-encoding the header block of stream {} failed: {e}",
                    b.stream
                )
            })?;
        // One HEADERS frame, then CONTINUATIONs; an empty block still gets its HEADERS.
        let mut off = 0;
        loop {
            let end = (off + MAX_OUT_FRAME).min(block.len());
            let first = off == 0;
            let last = end == block.len();
            let mut flags = if first { b.flags } else { 0 };
            if last {
                flags |= FLAG_END_HEADERS;
            }
            FrameHeader {
                len: end - off,
                kind: if first {
                    TYPE_HEADERS
                } else {
                    TYPE_CONTINUATION
                },
                flags,
                stream: b.stream,
            }
            .write(out);
            out.extend_from_slice(&block[off..end]);
            off = end;
            if last {
                break;
            }
        }
        Ok(())
    }

    /// Passes on everything held, and everything after, unchanged; keeps `why` for the
    /// session log (once per connection).
    fn give_up(&mut self, why: String, out: &mut Vec<u8>) {
        if let Some(b) = self.block.take() {
            out.extend_from_slice(&b.original);
        }
        out.append(&mut self.pending);
        self.skip = 0;
        self.state = State::Passthrough;
        if !self.warned {
            self.warned = true;
            self.warning = Some(why);
        }
    }
}

/// Whether the HTTP/2 server accepts `value` as `:authority`: the same parser `h2` uses.
pub fn is_usable_authority(value: &[u8]) -> bool {
    !value.is_empty() && http::uri::Authority::try_from(value).is_ok()
}

/// `bytes` for a log line: printable ASCII as is, the rest escaped.
pub fn escape(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        FrameHeader {
            len: payload.len(),
            kind,
            flags,
            stream,
        }
        .write(&mut out);
        out.extend_from_slice(payload);
        out
    }

    fn request(enc: &mut Encoder<'static>, authority: &[u8]) -> Vec<u8> {
        let block = enc.encode([
            (&b":method"[..], &b"POST"[..]),
            (b":scheme", b"http"),
            (b":path", b"/echopost.v1.EchoPost/Append"),
            (b":authority", authority),
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
        ]);
        frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &block)
    }

    /// Decodes every header block of `wire` (after the preface) with a fresh decoder.
    fn decode_all(wire: &[u8]) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
        assert_eq!(&wire[..24], PREFACE);
        let mut d = Decoder::new();
        let mut rest = &wire[24..];
        let mut blocks = Vec::new();
        let mut frag = Vec::new();
        while !rest.is_empty() {
            let mut hb = [0u8; FRAME_HEADER_LEN];
            hb.copy_from_slice(&rest[..FRAME_HEADER_LEN]);
            let h = FrameHeader::parse(&hb);
            let payload = &rest[FRAME_HEADER_LEN..FRAME_HEADER_LEN + h.len];
            if h.kind == TYPE_HEADERS || h.kind == TYPE_CONTINUATION {
                frag.extend_from_slice(payload);
                if h.flags & FLAG_END_HEADERS != 0 {
                    blocks.push(d.decode(&frag).unwrap());
                    frag.clear();
                }
            }
            rest = &rest[FRAME_HEADER_LEN + h.len..];
        }
        blocks
    }

    #[test]
    fn socket_path_authorities_become_localhost() {
        for auth in [&b"tmp%2Fep%2Fechopost.sock"[..], b"/var/run/x.sock", b""] {
            let mut enc = Encoder::new();
            let mut input = PREFACE.to_vec();
            input.extend(request(&mut enc, auth));
            let mut inb = Inbound::new();
            let mut out = Vec::new();
            inb.push(&input, &mut out);
            assert!(inb.take_warning().is_none());
            let blocks = decode_all(&out);
            assert_eq!(blocks.len(), 1);
            let a = blocks[0].iter().find(|(n, _)| n == b":authority").unwrap();
            assert_eq!(a.1, LOCAL_AUTHORITY, "{}", escape(auth));
            assert_eq!(inb.rewritten(), 1);
        }
    }
}
