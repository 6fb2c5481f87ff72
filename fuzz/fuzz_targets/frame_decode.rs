//! Frame decoding on arbitrary bytes: header checks, CRC, decompression, record splitting.
//! Must never panic, whatever the input.
#![no_main]

use echopost_log::format::{self, FORMAT_VERSION, FRAME_HEADER_LEN, FRAME_MAGIC};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // 1. As found on disk.
    let _ = format::decode_header(data);
    if let Ok((h, body)) = format::parse_frame(data) {
        let _ = format::decode_body(&h, &data[body]);
    }

    // 2. Behind a forged, *valid* checksum, so that everything the CRC normally guards
    //    (length fields, record count, zstd decompression, record splitting) is reached:
    //    the first 13 bytes pick the header fields, the rest is the body.
    if data.len() < 13 {
        return;
    }
    let (fields, body) = data.split_at(13);
    let mut h = [0u8; FRAME_HEADER_LEN];
    h[0..4].copy_from_slice(&FRAME_MAGIC);
    h[4] = FORMAT_VERSION;
    h[5] = 1 + fields[0] % 3; // batch, seal or gap
    h[6] = fields[1] & 3; // zstd and metadata flags
    h[8..12].copy_from_slice(&(body.len() as u32).to_le_bytes());
    h[12..16].copy_from_slice(&fields[2..6]); // count
    h[16..24].copy_from_slice(&u64::from(fields[6]).max(1).to_le_bytes()); // first_seq
    let raw_len = if fields[1] & 1 == 1 {
        // Claimed decompressed size (capped so a run stays fast).
        u32::from_le_bytes([fields[7], fields[8], fields[9] & 0x0f, 0])
    } else {
        body.len() as u32
    };
    h[24..28].copy_from_slice(&raw_len.to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(body), &h[..28]);
    h[28..32].copy_from_slice(&crc.to_le_bytes());
    let mut f = h.to_vec();
    f.extend_from_slice(body);
    if let Ok((hd, b)) = format::parse_frame(&f) {
        let _ = format::decode_body(&hd, &f[b]);
    }
    let count = u32::from_le_bytes([fields[10], fields[11], fields[12], 0]);
    let _ = format::split_records(body, count);
});
