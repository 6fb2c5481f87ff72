//! The seed corpus of the `h2_inbound` fuzz target (`fuzz/seeds/h2_inbound/`): what a gRPC
//! client sends on the socket after the HTTP/2 preface, header blocks encoded by an
//! independent HPACK encoder (`httlib-hpack`), checked against the committed files. Each
//! seed's first byte is the size of the pieces the target delivers the rest in.
//!
//! After a change, rewrite them with
//! `ECHOPOST_WRITE_FUZZ_SEEDS=1 cargo test -p echopost --test it -- fuzz_seeds::`.
//! Other files in that folder (inputs a fuzzer found, kept as regressions) are left alone.

use std::path::Path;

use echopost::daemon::h2::inbound::{Inbound, PREFACE};
use echopost_proto::v1::{AppendRequest, Record};
use httlib_hpack::Encoder;
use prost::Message;

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(payload.len()).expect("a small frame");
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
}

/// A client's opening: SETTINGS (header table 4096, no push, window 1 MiB) and a
/// connection WINDOW_UPDATE, as tonic's HTTP/2 client sends them.
fn opening(out: &mut Vec<u8>) {
    let mut settings = Vec::new();
    for (id, value) in [(0x1u16, 4096u32), (0x2, 0), (0x4, 1 << 20)] {
        settings.extend_from_slice(&id.to_be_bytes());
        settings.extend_from_slice(&value.to_be_bytes());
    }
    frame(SETTINGS, 0, 0, &settings, out);
    frame(WINDOW_UPDATE, 0, 0, &(1u32 << 20).to_be_bytes(), out);
}

/// The header block of an Append call with this `:authority` (none when `None`).
fn append_block(enc: &mut Encoder, authority: Option<&[u8]>, flags: u8) -> Vec<u8> {
    let mut fields: Vec<(&[u8], &[u8])> = vec![
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":path", b"/echopost.v1.EchoPost/Append"),
    ];
    if let Some(a) = authority {
        fields.push((b":authority", a));
    }
    fields.extend([
        (b"content-type".as_slice(), b"application/grpc".as_slice()),
        (b"te", b"trailers"),
        (b"grpc-timeout", b"5S"),
    ]);
    let mut block = Vec::new();
    for (n, v) in fields {
        enc.encode((n.to_vec(), v.to_vec(), flags), &mut block)
            .expect("encode a header field");
    }
    block
}

/// One length-prefixed gRPC message holding an AppendRequest of two records.
fn grpc_message() -> Vec<u8> {
    let request = AppendRequest {
        records: vec![
            Record {
                payload: b"{\"n\":1}".to_vec(),
                ..Record::default()
            },
            Record {
                stream: "orders".to_owned(),
                payload: b"second".to_vec(),
                ..Record::default()
            },
        ],
        producer_id: "producer-7".to_owned(),
        producer_sequence: 1,
        expected_stream_version: None,
    };
    let body = request.encode_to_vec();
    let mut out = vec![0];
    out.extend_from_slice(&u32::try_from(body.len()).expect("small").to_be_bytes());
    out.extend_from_slice(&body);
    out
}

fn seed(step: u8, frames: Vec<u8>) -> Vec<u8> {
    let mut s = vec![step];
    s.extend(frames);
    s
}

fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let huffman = Encoder::HUFFMAN_NAME | Encoder::HUFFMAN_VALUE;
    let indexed = Encoder::WITH_INDEXING | Encoder::BEST_FORMAT;
    let mut out = Vec::new();

    // A whole Append call with a usable :authority, delivered in large pieces.
    let mut enc = Encoder::default();
    let mut w = Vec::new();
    opening(&mut w);
    let block = append_block(&mut enc, Some(b"localhost"), indexed | huffman);
    frame(HEADERS, END_HEADERS, 1, &block, &mut w);
    frame(DATA, END_STREAM, 1, &grpc_message(), &mut w);
    out.push(("append_call", seed(255, w)));

    // The :authority values the layer replaces: a socket path (what some clients send
    // for a unix: target), a percent-encoded one, an empty one; small pieces.
    for (name, authority, step) in [
        (
            "socket_path_authority",
            b"/run/echopost/echopost.sock".as_slice(),
            7,
        ),
        (
            "percent_encoded_authority",
            b"run%2Fechopost%2Fechopost.sock",
            13,
        ),
        ("empty_authority", b"", 3),
    ] {
        let mut enc = Encoder::default();
        let mut w = Vec::new();
        opening(&mut w);
        let block = append_block(&mut enc, Some(authority), indexed | huffman);
        frame(HEADERS, END_HEADERS, 1, &block, &mut w);
        frame(DATA, END_STREAM, 1, &grpc_message(), &mut w);
        out.push((name, seed(step, w)));
    }

    // Two calls on one connection: the second header block refers to the first's
    // dynamic-table entries and starts with a table size update; no :authority at all.
    let mut enc = Encoder::default();
    let mut w = Vec::new();
    opening(&mut w);
    let block = append_block(&mut enc, Some(b"/tmp/ep.sock"), indexed);
    frame(HEADERS, END_HEADERS | END_STREAM, 1, &block, &mut w);
    let mut block = Vec::new();
    enc.update_max_dynamic_size(2048, &mut block)
        .expect("size update");
    block.extend(append_block(&mut enc, None, indexed));
    frame(HEADERS, END_HEADERS | END_STREAM, 3, &block, &mut w);
    frame(PING, 0, 0, b"12345678", &mut w);
    out.push(("two_calls_dynamic_table", seed(64, w)));

    // A padded, prioritised HEADERS continued in two CONTINUATIONs, never-indexed fields,
    // then GOAWAY.
    let mut enc = Encoder::default();
    let mut w = Vec::new();
    opening(&mut w);
    let block = append_block(
        &mut enc,
        Some(b"/run/echopost.sock"),
        Encoder::NEVER_INDEXED,
    );
    let (first, rest) = block.split_at(block.len() / 3);
    let (second, third) = rest.split_at(rest.len() / 2);
    let mut payload = vec![4];
    payload.extend_from_slice(&[0, 0, 0, 0, 15]);
    payload.extend_from_slice(first);
    payload.extend_from_slice(&[0; 4]);
    frame(HEADERS, PADDED | PRIORITY, 1, &payload, &mut w);
    frame(CONTINUATION, 0, 1, second, &mut w);
    frame(CONTINUATION, END_HEADERS, 1, third, &mut w);
    frame(DATA, END_STREAM, 1, &grpc_message(), &mut w);
    frame(GOAWAY, 0, 0, &[0, 0, 0, 1, 0, 0, 0, 0], &mut w);
    out.push(("continuation_padded_priority", seed(5, w)));

    out
}

/// What the fuzz target does with a seed, without its assertions: the warning, if any.
fn run(seed: &[u8]) -> Option<String> {
    let mut inbound = Inbound::new();
    let mut out = Vec::new();
    inbound.push(PREFACE, &mut out);
    for chunk in seed[1..].chunks(usize::from(seed[0]).max(1)) {
        inbound.push(chunk, &mut out);
    }
    inbound.finish(&mut out);
    inbound.take_warning()
}

#[test]
fn h2_inbound_seeds_are_current() {
    let seeds = seeds();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/h2_inbound");
    let write = std::env::var_os("ECHOPOST_WRITE_FUZZ_SEEDS").is_some_and(|v| v == "1");
    if write {
        std::fs::create_dir_all(&dir).expect("create the seed folder");
    }
    let mut stale = Vec::new();
    for (name, bytes) in &seeds {
        // Each is a conversation the layer understands (no warning).
        assert_eq!(run(bytes), None, "{name}");
        let path = dir.join(name);
        if write {
            std::fs::write(&path, bytes).expect("write a seed");
        } else if std::fs::read(&path).ok().as_ref() != Some(bytes) {
            stale.push(path.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "fuzz seeds missing or out of date: {stale:?}; rewrite them with \
         ECHOPOST_WRITE_FUZZ_SEEDS=1 cargo test -p echopost --test it -- fuzz_seeds::"
    );
    let bytes: usize = seeds.iter().map(|(_, b)| b.len()).sum();
    println!("h2_inbound: {} seeds, {bytes} bytes", seeds.len());
}
