//! Records: every field derived from the id, so the expected bytes are known anywhere
//! (the main server checks each arrival against [`make_record`] as it comes in).

use echopost_log::sim::SimRng;
use echopost_proto::v1::Record;

pub fn fnv64(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The record with id `id`: a payload of seeded bytes (0 to ~20 KiB, mostly small; 64
/// to 512 KiB for the bulk producers' ids, `b...`), a header, and a fixed non-zero
/// timestamp (so the daemon stores it unchanged).
pub fn make_record(id: &str) -> Record {
    let h = fnv64(id);
    let mut rng = SimRng::new(h);
    let len = if id.starts_with('b') {
        (64 << 10) + rng.below(448 << 10)
    } else {
        match rng.below(100) {
            0..=79 => rng.below(128),
            80..=97 => 128 + rng.below(1024),
            _ => 4096 + rng.below(16 * 1024),
        }
    } as usize;
    let mut payload = Vec::with_capacity(id.len() + 1 + len);
    payload.extend_from_slice(id.as_bytes());
    payload.push(b'|');
    while payload.len() < id.len() + 1 + len {
        payload.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    payload.truncate(id.len() + 1 + len);
    let mut r = Record {
        id: id.to_owned(),
        stream: "torture".to_owned(),
        payload,
        headers: Default::default(),
        route: String::new(),
        timestamp_unix_nanos: 1_700_000_000_000_000_000 + (h % 1_000_000_000) as i64,
    };
    r.headers.insert("x-len".to_owned(), len.to_string());
    r
}

/// The cycle encoded in an id `p{producer}-c{cycle}-{n}` (or `b...` for bulk).
pub fn cycle_of(id: &str) -> u64 {
    id.split('-')
        .nth(1)
        .and_then(|c| c.strip_prefix('c'))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("unexpected record id {id:?}"))
}
