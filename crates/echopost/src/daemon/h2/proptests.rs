//! Property tests of the `:authority` layer against an independent HPACK implementation
//! (`httlib-hpack`): clients encode with it (every representation: indexed, incremental
//! indexing, without and never indexed, Huffman or not, dynamic table size updates),
//! frame the blocks every legal way (padding, priority, CONTINUATIONs), interleave other
//! frames, and deliver the bytes in arbitrary pieces; what the server reads must decode,
//! with the same reference decoder, to the same requests with only unusable
//! `:authority` values replaced, and every other frame must arrive byte for byte.

use httlib_hpack::{Decoder as RefDecoder, Encoder as RefEncoder};
use proptest::prelude::*;

use super::inbound::{
    FRAME_HEADER_LEN, FrameHeader, Inbound, LOCAL_AUTHORITY, PREFACE, is_usable_authority,
};

const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

type Fields = Vec<(Vec<u8>, Vec<u8>)>;

#[derive(Debug, Clone)]
struct Request {
    fields: Fields,
    /// Encoder flags per field.
    flags: Vec<u8>,
    /// A dynamic table size update at the start of the block.
    size_update: Option<u32>,
    /// Fragment lengths for HEADERS then CONTINUATIONs (the rest goes in the last).
    splits: Vec<usize>,
    pad: Option<u8>,
    priority: bool,
    end_stream: bool,
    /// Non-header frames sent before this request: (type, payload).
    before: Vec<(u8, Vec<u8>)>,
}

fn authority() -> impl Strategy<Value = Option<Vec<u8>>> {
    prop_oneof![
        Just(None),
        Just(Some(b"localhost".to_vec())),
        Just(Some(b"example.com:8443".to_vec())),
        Just(Some(b"/var/run/x/echopost.sock".to_vec())),
        Just(Some(b"tmp%2Fep%2Fechopost.sock".to_vec())),
        Just(Some(Vec::new())),
        Just(Some(vec![b'a'; 300])),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(Some),
    ]
}

fn field() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
    (
        "[a-z][a-z0-9-]{0,15}",
        proptest::collection::vec(0x20u8..0x7f, 0..60),
    )
        .prop_map(|(n, v)| (n.into_bytes(), v))
}

fn request() -> impl Strategy<Value = Request> {
    (
        authority(),
        proptest::collection::vec(field(), 0..6),
        proptest::collection::vec(
            prop_oneof![
                Just(0u8),
                Just(RefEncoder::WITH_INDEXING),
                Just(RefEncoder::NEVER_INDEXED),
                Just(RefEncoder::WITH_INDEXING | RefEncoder::BEST_FORMAT),
                Just(RefEncoder::BEST_FORMAT),
            ]
            .prop_flat_map(|f| (Just(f), any::<bool>(), any::<bool>()))
            .prop_map(|(f, hn, hv)| {
                f | if hn { RefEncoder::HUFFMAN_NAME } else { 0 }
                    | if hv { RefEncoder::HUFFMAN_VALUE } else { 0 }
            }),
            12,
        ),
        proptest::option::of(0u32..=4096),
        proptest::collection::vec(0usize..40, 0..4),
        proptest::option::of(0u8..30),
        any::<bool>(),
        any::<bool>(),
        proptest::collection::vec(
            (
                prop_oneof![Just(0x0u8), Just(0x6), Just(0x8), Just(0xfa)],
                proptest::collection::vec(any::<u8>(), 0..100),
            ),
            0..3,
        ),
    )
        .prop_map(
            |(auth, extra, flags, size_update, splits, pad, priority, end_stream, before)| {
                let mut fields: Fields = vec![
                    (b":method".to_vec(), b"POST".to_vec()),
                    (b":scheme".to_vec(), b"http".to_vec()),
                    (b":path".to_vec(), b"/echopost.v1.EchoPost/Append".to_vec()),
                ];
                if let Some(a) = auth {
                    fields.push((b":authority".to_vec(), a));
                }
                fields.push((b"content-type".to_vec(), b"application/grpc".to_vec()));
                fields.extend(extra);
                Request {
                    fields,
                    flags,
                    size_update,
                    splits,
                    pad,
                    priority,
                    end_stream,
                    before,
                }
            },
        )
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8], out: &mut Vec<u8>) {
    let len = payload.len() as u32;
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
}

/// The client's bytes, and what the server must see: per request its fields (normalised)
/// and the other frames in order.
fn client_wire(requests: &[Request]) -> (Vec<u8>, Vec<Fields>, Vec<Vec<u8>>) {
    let mut enc = RefEncoder::default();
    let mut wire = PREFACE.to_vec();
    let mut expect_blocks = Vec::new();
    let mut expect_other = Vec::new();
    for (i, r) in requests.iter().enumerate() {
        let stream = 1 + 2 * i as u32;
        for (kind, payload) in &r.before {
            let mut f = Vec::new();
            frame(*kind, 0, 0, payload, &mut f);
            expect_other.push(f.clone());
            wire.extend(f);
        }
        let mut block = Vec::new();
        if let Some(size) = r.size_update {
            enc.update_max_dynamic_size(size, &mut block).unwrap();
        }
        for (k, (n, v)) in r.fields.iter().enumerate() {
            let flags = r.flags[k % r.flags.len()];
            enc.encode((n.clone(), v.clone(), flags), &mut block)
                .unwrap();
        }
        // HEADERS, then CONTINUATIONs at the split points.
        let mut pieces = Vec::new();
        let mut rest = &block[..];
        for &s in &r.splits {
            let s = s.min(rest.len());
            pieces.push(&rest[..s]);
            rest = &rest[s..];
        }
        pieces.push(rest);
        for (k, piece) in pieces.iter().enumerate() {
            let last = k + 1 == pieces.len();
            let end_headers = if last { END_HEADERS } else { 0 };
            if k == 0 {
                let mut flags = end_headers | if r.end_stream { 0x1 } else { 0 };
                let mut payload = Vec::new();
                if let Some(p) = r.pad {
                    flags |= PADDED;
                    payload.push(p);
                }
                if r.priority {
                    flags |= PRIORITY;
                    payload.extend_from_slice(&[0, 0, 0, 0, 15]);
                }
                payload.extend_from_slice(piece);
                payload.extend(std::iter::repeat_n(0u8, usize::from(r.pad.unwrap_or(0))));
                frame(HEADERS, flags, stream, &payload, &mut wire);
            } else {
                frame(CONTINUATION, end_headers, stream, piece, &mut wire);
            }
        }
        let fields = r
            .fields
            .iter()
            .map(|(n, v)| {
                if n == b":authority" && !is_usable_authority(v) {
                    (n.clone(), LOCAL_AUTHORITY.to_vec())
                } else {
                    (n.clone(), v.clone())
                }
            })
            .collect();
        expect_blocks.push(fields);
    }
    (wire, expect_blocks, expect_other)
}

/// Splits what the server reads into decoded header blocks and the other frames.
fn server_view(out: &[u8]) -> (Vec<Fields>, Vec<Vec<u8>>) {
    assert_eq!(&out[..PREFACE.len()], PREFACE);
    let mut dec = RefDecoder::default();
    let mut rest = &out[PREFACE.len()..];
    let mut blocks = Vec::new();
    let mut other = Vec::new();
    let mut fragment = Vec::new();
    while !rest.is_empty() {
        let mut hb = [0u8; FRAME_HEADER_LEN];
        hb.copy_from_slice(&rest[..FRAME_HEADER_LEN]);
        let h = FrameHeader::parse(&hb);
        let whole = &rest[..FRAME_HEADER_LEN + h.len];
        let payload = &whole[FRAME_HEADER_LEN..];
        assert!(h.len <= 16_384, "frame above the default maximum size");
        match h.kind {
            HEADERS => {
                assert_eq!(h.flags & PADDED, 0, "padding is dropped");
                let skip = if h.flags & PRIORITY != 0 { 5 } else { 0 };
                fragment.extend_from_slice(&payload[skip..]);
            }
            CONTINUATION => fragment.extend_from_slice(payload),
            _ => other.push(whole.to_vec()),
        }
        if (h.kind == HEADERS || h.kind == CONTINUATION) && h.flags & END_HEADERS != 0 {
            let mut buf = std::mem::take(&mut fragment);
            let mut fields = Vec::new();
            dec.decode(&mut buf, &mut fields)
                .expect("the server's view decodes");
            blocks.push(fields.into_iter().map(|(n, v, _)| (n, v)).collect());
        }
        rest = &rest[FRAME_HEADER_LEN + h.len..];
    }
    (blocks, other)
}

/// What `H2Stream` hands the server when reads return `cuts`-sized pieces: the prefix
/// [`Inbound::pass_through_prefix`] accepts stays as read, whole header blocks are
/// rewritten where they stand ([`Inbound::take_header_block`]; on some reads as if the
/// buffer had no room, on others not taken at all), the rest goes through `push`.
fn as_the_stream_reads(wire: &[u8], cuts: &[usize]) -> Vec<u8> {
    let mut inbound = Inbound::new();
    let mut out = Vec::new();
    let mut rest = wire;
    let mut k = 0;
    while !rest.is_empty() {
        let n = cuts[k % cuts.len()].min(rest.len());
        let mut piece = &rest[..n];
        loop {
            let kept = inbound.pass_through_prefix(piece);
            out.extend_from_slice(&piece[..kept]);
            piece = &piece[kept..];
            if piece.is_empty() {
                break;
            }
            if k % 3 != 2
                && let Some((taken, rewritten)) = inbound.take_header_block(piece)
            {
                out.extend_from_slice(&rewritten);
                piece = &piece[taken..];
                if k % 3 == 1 {
                    // As when the buffer has no room: the rest goes through `push`.
                    inbound.push(piece, &mut out);
                    break;
                }
                continue;
            }
            inbound.push(piece, &mut out);
            break;
        }
        rest = &rest[n..];
        k += 1;
    }
    inbound.finish(&mut out);
    out
}

/// `bytes` through a fresh layer in one piece: its output and warning.
fn fresh_pass(bytes: &[u8]) -> (Vec<u8>, Option<String>) {
    let mut inbound = Inbound::new();
    let mut out = Vec::new();
    inbound.push(bytes, &mut out);
    inbound.finish(&mut out);
    (out, inbound.take_warning())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn the_server_reads_the_same_requests_with_a_usable_authority(
        requests in proptest::collection::vec(request(), 1..6),
        cuts in proptest::collection::vec(1usize..200, 1..50),
    ) {
        let (wire, expect_blocks, expect_other) = client_wire(&requests);
        let mut inbound = Inbound::new();
        let mut out = Vec::new();
        let mut rest = &wire[..];
        let mut k = 0;
        while !rest.is_empty() {
            let n = cuts[k % cuts.len()].min(rest.len());
            inbound.push(&rest[..n], &mut out);
            rest = &rest[n..];
            k += 1;
        }
        prop_assert_eq!(inbound.take_warning(), None);
        // The stream's way (unchanged prefixes left in place, the rest pushed) gives the
        // same bytes.
        prop_assert_eq!(&as_the_stream_reads(&wire, &cuts), &out);
        prop_assert_eq!(fresh_pass(&out), (out.clone(), None), "not a fixed point");
        let (blocks, other) = server_view(&out);
        prop_assert_eq!(blocks, expect_blocks);
        prop_assert_eq!(other, expect_other);
    }

    /// Arbitrary bytes after the preface: no panic, and what cannot be understood is
    /// passed on (the output is never shorter than the input's undisturbed prefix).
    #[test]
    fn arbitrary_bytes_never_panic(
        body in proptest::collection::vec(any::<u8>(), 0..2000),
        with_preface in any::<bool>(),
    ) {
        let mut input = if with_preface { PREFACE.to_vec() } else { Vec::new() };
        input.extend(body);
        let mut inbound = Inbound::new();
        let mut out = Vec::new();
        for chunk in input.chunks(37) {
            inbound.push(chunk, &mut out);
        }
        inbound.finish(&mut out);
        prop_assert_eq!(&as_the_stream_reads(&input, &[37]), &out);
        let warning = inbound.take_warning();
        if !with_preface {
            prop_assert_eq!(&out, &input);
        }
        if warning.is_none() {
            prop_assert_eq!(fresh_pass(&out), (out.clone(), None), "not a fixed point");
        }
    }
}
