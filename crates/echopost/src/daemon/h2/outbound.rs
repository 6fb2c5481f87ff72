//! The daemon → client direction of an HTTP/2 connection, watched (never changed) for
//! the server's refusals: `RST_STREAM` and `GOAWAY` frames with an error code.
//!
//! The HTTP/2 server refuses a malformed request without calling any of our code, so the
//! only place to see it is the wire. Only frame headers are parsed; the payloads of the
//! two watched frame types are at most a few bytes (debug data of `GOAWAY` is cut at
//! [`MAX_DEBUG`]).

use super::inbound::{FRAME_HEADER_LEN, FrameHeader};

const TYPE_RST_STREAM: u8 = 0x3;
const TYPE_GOAWAY: u8 = 0x7;
/// Bytes of `GOAWAY` debug data kept for the log line.
pub const MAX_DEBUG: usize = 128;

/// A refusal the server sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// `RST_STREAM` on `stream` with `code`.
    Stream { stream: u32, code: u32 },
    /// `GOAWAY` with `code` and the start of its debug data.
    Connection { code: u32, debug: Vec<u8> },
}

/// Error codes that are no refusal: `NO_ERROR`, `REFUSED_STREAM` (sent while shutting
/// down: the client may retry) and `CANCEL` (a call the handler or the client ended).
fn is_refusal(code: u32) -> bool {
    !matches!(code, 0x0 | 0x7 | 0x8)
}

/// The RFC 9113 §7 name of an error code.
pub fn code_name(code: u32) -> &'static str {
    match code {
        0x0 => "NO_ERROR",
        0x1 => "PROTOCOL_ERROR",
        0x2 => "INTERNAL_ERROR",
        0x3 => "FLOW_CONTROL_ERROR",
        0x4 => "SETTINGS_TIMEOUT",
        0x5 => "STREAM_CLOSED",
        0x6 => "FRAME_SIZE_ERROR",
        0x7 => "REFUSED_STREAM",
        0x8 => "CANCEL",
        0x9 => "COMPRESSION_ERROR",
        0xa => "CONNECT_ERROR",
        0xb => "ENHANCE_YOUR_CALM",
        0xc => "INADEQUATE_SECURITY",
        0xd => "HTTP_1_1_REQUIRED",
        _ => "an unknown error code",
    }
}

/// Watches the server's bytes (sans I/O).
#[derive(Debug, Default)]
pub struct Outbound {
    /// A partial frame header, or the partial payload of a watched frame.
    pending: Vec<u8>,
    header: Option<FrameHeader>,
    /// Payload bytes of an unwatched frame still to come.
    skip: usize,
    /// Set when the stream stopped making sense (then nothing more is watched).
    lost: bool,
}

impl Outbound {
    /// Looks at `bytes` (the next bytes the server wrote) and returns the refusals in them.
    pub fn observe(&mut self, mut bytes: &[u8]) -> Vec<Refusal> {
        let mut found = Vec::new();
        while !bytes.is_empty() && !self.lost {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
                continue;
            }
            let Some(h) = self.header else {
                let n = (FRAME_HEADER_LEN - self.pending.len()).min(bytes.len());
                self.pending.extend_from_slice(&bytes[..n]);
                bytes = &bytes[n..];
                if self.pending.len() == FRAME_HEADER_LEN {
                    let mut hb = [0u8; FRAME_HEADER_LEN];
                    hb.copy_from_slice(&self.pending);
                    self.pending.clear();
                    let h = FrameHeader::parse(&hb);
                    if h.kind == TYPE_RST_STREAM || h.kind == TYPE_GOAWAY {
                        self.header = Some(h);
                    } else {
                        self.skip = h.len;
                    }
                }
                continue;
            };
            // A watched frame: keep up to what is needed, skip the rest.
            let keep = if h.kind == TYPE_RST_STREAM {
                4
            } else {
                8 + MAX_DEBUG
            }
            .min(h.len);
            let n = (keep - self.pending.len()).min(bytes.len());
            self.pending.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if self.pending.len() < keep {
                continue;
            }
            let p = std::mem::take(&mut self.pending);
            self.header = None;
            self.skip = h.len - keep;
            let word = |at: usize| {
                p.get(at..at + 4)
                    .map(|w| u32::from_be_bytes([w[0], w[1], w[2], w[3]]))
            };
            match h.kind {
                TYPE_RST_STREAM => match word(0) {
                    Some(code) if is_refusal(code) => found.push(Refusal::Stream {
                        stream: h.stream,
                        code,
                    }),
                    Some(_) => {}
                    None => self.lost = true,
                },
                _ => match word(4) {
                    Some(code) if is_refusal(code) => found.push(Refusal::Connection {
                        code,
                        debug: p[8..].to_vec(),
                    }),
                    Some(_) => {}
                    None => self.lost = true,
                },
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        out.push(kind);
        out.push(0);
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn refusals_are_found_across_any_split() {
        let mut wire = frame(0x4, 0, &[0, 3, 0, 0, 0, 100]); // SETTINGS
        wire.extend(frame(0x0, 1, &[7u8; 300])); // DATA
        wire.extend(frame(TYPE_RST_STREAM, 1, &8u32.to_be_bytes())); // CANCEL: no refusal
        wire.extend(frame(TYPE_RST_STREAM, 3, &1u32.to_be_bytes())); // PROTOCOL_ERROR
        let mut goaway = 3u32.to_be_bytes().to_vec();
        goaway.extend(9u32.to_be_bytes());
        goaway.extend(vec![b'x'; 500]);
        wire.extend(frame(TYPE_GOAWAY, 0, &goaway));
        wire.extend(frame(0x6, 0, &[0; 8])); // PING after
        for step in [1, 2, 7, 9, 64, wire.len()] {
            let mut o = Outbound::default();
            let mut found = Vec::new();
            for chunk in wire.chunks(step) {
                found.extend(o.observe(chunk));
            }
            assert_eq!(
                found,
                vec![
                    Refusal::Stream { stream: 3, code: 1 },
                    Refusal::Connection {
                        code: 9,
                        debug: vec![b'x'; MAX_DEBUG]
                    }
                ],
                "step {step}"
            );
        }
        assert_eq!(code_name(1), "PROTOCOL_ERROR");
    }
}
