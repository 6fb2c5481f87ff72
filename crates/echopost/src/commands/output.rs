//! What the commands print: stdout that tolerates a closed pipe, records as JSON, and
//! the human formats of counts, bytes, durations, times and sequence ranges.

use std::io::{self, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use echopost_client::Record;

use super::CommandError;

/// Writes `text` to stdout. A closed pipe is not an error (the reader has seen enough).
pub fn print_stdout(text: &str) -> Result<(), CommandError> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(CommandError::fatal(format!("cannot write to stdout: {e}"))),
    }
}

/// A record as one JSON object, fields in a fixed, readable order: every field of the
/// record, the payload as UTF-8 text when it is valid UTF-8 and as base64 otherwise
/// (`payload_encoding` says which), the timestamp both as nanoseconds and as RFC 3339 UTC.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RecordJson {
    pub sequence: u64,
    pub id: String,
    pub stream: String,
    pub route: String,
    pub headers: std::collections::BTreeMap<String, String>,
    pub timestamp_unix_nanos: i64,
    pub timestamp: String,
    pub payload_encoding: &'static str,
    pub payload: String,
}

impl RecordJson {
    pub fn new(sequence: u64, r: &Record) -> Self {
        let (payload, payload_encoding) = payload_text(&r.payload);
        RecordJson {
            sequence,
            id: r.id.clone(),
            stream: r.stream.clone(),
            route: r.route.clone(),
            headers: r
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            timestamp_unix_nanos: r.timestamp_unix_nanos,
            timestamp: utc_rfc3339(r.timestamp_unix_nanos),
            payload_encoding,
            payload,
        }
    }
}

/// [`RecordJson`] as one line of JSON (without the newline), control characters escaped
/// (C1 and DEL too: [`crate::escape::json_string`]).
pub fn record_json(sequence: u64, r: &Record) -> String {
    crate::escape::json_string(&RecordJson::new(sequence, r))
        // A struct of strings and integers always serialises.
        .unwrap_or_default()
}

/// The payload as text: itself if valid UTF-8 (`"utf8"`), base64 otherwise (`"base64"`).
pub fn payload_text(payload: &[u8]) -> (String, &'static str) {
    match std::str::from_utf8(payload) {
        Ok(s) => (s.to_owned(), "utf8"),
        Err(_) => (
            base64::engine::general_purpose::STANDARD.encode(payload),
            "base64",
        ),
    }
}

/// Nanoseconds since the UNIX epoch now.
pub fn now_unix_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// `2026-01-02T03:04:05.123Z` for a time in nanoseconds since the UNIX epoch (before
/// 1970 too: a record's timestamp is whatever its client set). The calendar is the `time`
/// crate's; every `i64` of nanoseconds (1677 to 2262) is within its range.
pub fn utc_rfc3339(unix_nanos: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_nanos)) {
        Ok(utc) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            utc.year(),
            u8::from(utc.month()),
            utc.day(),
            utc.hour(),
            utc.minute(),
            utc.second(),
            utc.millisecond()
        ),
        Err(_) => format!("{unix_nanos} ns after 1970-01-01T00:00:00Z"),
    }
}

/// `12,345,678`.
pub fn fmt_count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Bytes in binary units: `512 B`, `3.1 KiB`, `45.6 MiB`, `1.20 GiB`.
pub fn fmt_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = UNITS[0];
    for u in &UNITS[1..] {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    if v < 10.0 {
        format!("{v:.2} {unit}")
    } else {
        format!("{v:.1} {unit}")
    }
}

/// A rate in decimal megabytes per second (10^6 bytes, as throughput is usually quoted).
pub fn fmt_mb_per_s(bytes_per_second: f64) -> String {
    format!("{:.1} MB/s", bytes_per_second / 1e6)
}

/// A duration for people: `850 ms`, `12.3 s`, `4m 05s`, `2h 03m`, `3d 04h`.
pub fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs();
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else if s < 60 {
        format!("{:.1} s", d.as_secs_f64())
    } else if s < 3600 {
        format!("{}m {:02}s", s / 60, s % 60)
    } else if s < 86_400 {
        format!("{}h {:02}m", s / 3600, s % 3600 / 60)
    } else {
        format!("{}d {:02}h", s / 86_400, s % 86_400 / 3600)
    }
}

/// Sequence ranges for people: `1 to 50`, `1 to 10, 21 to 30`. Adjacent ranges are merged.
pub fn fmt_ranges(ranges: &[(u64, u64)]) -> String {
    merge_ranges(ranges)
        .iter()
        .map(|(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a} to {b}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Merges ranges that touch (`(1,10),(11,20)` → `(1,20)`), keeping order.
pub fn merge_ranges(ranges: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for &(a, b) in ranges {
        match out.last_mut() {
            Some(last) if last.1.checked_add(1) == Some(a) => last.1 = b,
            _ => out.push((a, b)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339() {
        assert_eq!(utc_rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            utc_rfc3339(1_767_323_045_123_000_000),
            "2026-01-02T03:04:05.123Z"
        );
        assert_eq!(
            utc_rfc3339(951_782_400_000_000_000),
            "2000-02-29T00:00:00.000Z"
        );
        assert_eq!(utc_rfc3339(-1_000_000_000), "1969-12-31T23:59:59.000Z");
    }

    #[test]
    fn counts_bytes_durations() {
        assert_eq!(fmt_count(0), "0");
        assert_eq!(fmt_count(999), "999");
        assert_eq!(fmt_count(1000), "1,000");
        assert_eq!(fmt_count(12_345_678), "12,345,678");
        assert_eq!(fmt_bytes(512), "512 B");
        assert_eq!(fmt_bytes(3 << 10), "3.00 KiB");
        assert_eq!(fmt_bytes(45 << 20), "45.0 MiB");
        assert_eq!(fmt_bytes(2 << 30), "2.00 GiB");
        assert_eq!(fmt_duration(Duration::from_millis(850)), "850 ms");
        assert_eq!(fmt_duration(Duration::from_millis(12_340)), "12.3 s");
        assert_eq!(fmt_duration(Duration::from_secs(245)), "4m 05s");
        assert_eq!(fmt_duration(Duration::from_secs(7380)), "2h 03m");
        assert_eq!(fmt_mb_per_s(31_600_000.0), "31.6 MB/s");
    }

    #[test]
    fn ranges() {
        assert_eq!(fmt_ranges(&[(1, 10), (11, 20), (31, 31)]), "1 to 20, 31");
        assert_eq!(fmt_ranges(&[]), "");
    }

    #[test]
    fn payloads() {
        assert_eq!(payload_text(b"hello"), ("hello".to_owned(), "utf8"));
        assert_eq!(payload_text(&[0xff, 0x00]), ("/wA=".to_owned(), "base64"));
    }
}
