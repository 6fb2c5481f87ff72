//! The on-disk format, for tests and fuzzers that forge, inspect or damage a log's files
//! (feature `sim`). A log needs none of this: [`crate::Log`] writes and checks every byte.
//!
//! * Frames (the records of one append, or a segment's closing seal): layout, codec and
//!   limits, documented field by field in `src/frame.rs`.
//! * Segment files (`NNNNNNNNNNNNNNNNNNNN.seg`, named by their first sequence): the 32-byte
//!   file header and the naming, in `src/segment.rs`.
//! * The acknowledgement cursor file (`cursor`, two slots updated in place), in
//!   `src/cursor.rs`.
//!
//! Offsets and lengths are in bytes, sequences are record sequence numbers (from 1, below
//! [`MAX_SEQ`]). Decoders return the [`crate::CorruptionKind`] that a read of the same
//! bytes by the engine would report.

pub use crate::cursor::{
    CURSOR_FILE, CURSOR_FILE_LEN, CURSOR_RESERVE_LEN, CURSOR_SLOT_LEN, CURSOR_SLOT_OFFSETS,
    CURSOR_TMP_FILE, cursor_path, encode_slot as encode_cursor_slot, read_cursor, write_cursor,
    write_legacy_cursor,
};
pub use crate::frame::{
    DecodedBody, FORMAT_VERSION, FRAME_HEADER_LEN, FRAME_MAGIC, FrameHeader, FrameKind,
    MAX_BODY_LEN, MAX_SEQ, PreparedFrame, check_crc, decode_body, decode_header, encode_gap,
    encode_seal, parse_frame, split_records,
};
pub use crate::segment::{
    SEGMENT_HEADER_LEN, encode_presized_segment_header, encode_segment_header, parse_segment_name,
    segment_name,
};
