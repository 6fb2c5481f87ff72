//! The socket's HTTP/2 layer (`echopost::daemon::h2::inbound`): it decodes and re-encodes
//! every header block a client sends, before the HTTP/2 server sees it. Arbitrary bytes,
//! delivered in arbitrary pieces, must never panic it; and what it writes must be a fixed
//! point: passed through a second, fresh layer, a stream the first one understood comes out
//! byte for byte the same, with no warning (so the server reads exactly the blocks the
//! first layer meant).
#![no_main]

use libfuzzer_sys::fuzz_target;

/// The daemon's layer, `echopost::daemon::h2::inbound`, compiled from its own source file:
/// it depends on nothing but `loona-hpack`, while depending on the daemon crate would build
/// all of it (clap, hyper, rustls, tonic's services, the replayer…) instrumented, and more
/// than double the fuzz build. Should the module ever need more of the crate, this stops
/// compiling and `scripts/fuzz` (so CI) fails, rather than fuzzing a stale copy.
#[path = "../../crates/echopost/src/daemon/h2/inbound.rs"]
#[allow(dead_code)]
mod inbound;

use inbound::{Inbound, PREFACE};

fn run(input: &[u8], step: usize) -> (Vec<u8>, Option<String>) {
    let mut inbound = Inbound::new();
    let mut out = Vec::new();
    for chunk in input.chunks(step.max(1)) {
        inbound.push(chunk, &mut out);
    }
    inbound.finish(&mut out);
    (out, inbound.take_warning())
}

/// What the daemon's stream wrapper does: prefixes that pass unchanged stay in place,
/// the rest goes through `push`.
fn run_as_the_stream(input: &[u8], step: usize) -> Vec<u8> {
    let mut inbound = Inbound::new();
    let mut out = Vec::new();
    for chunk in input.chunks(step.max(1)) {
        let kept = inbound.pass_through_prefix(chunk);
        out.extend_from_slice(&chunk[..kept]);
        inbound.push(&chunk[kept..], &mut out);
    }
    inbound.finish(&mut out);
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&step, body)) = data.split_first() else {
        return;
    };
    let mut input = PREFACE.to_vec();
    input.extend_from_slice(body);
    let (once, warning) = run(&input, usize::from(step));
    assert_eq!(
        run_as_the_stream(&input, usize::from(step)),
        once,
        "leaving unchanged prefixes in place must give the same bytes"
    );
    if warning.is_none() {
        let (twice, again) = run(&once, 4096);
        assert_eq!(again, None, "the layer's own output was not understood");
        assert_eq!(twice, once, "the layer's output is not a fixed point");
    }
});
