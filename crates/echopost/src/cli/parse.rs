//! Value parsers of the command line: sizes, durations, timeouts, the sync policy.

use std::time::Duration;

use echopost_log::SyncPolicy;

/// Parses a byte size: a number with an optional unit. `KB`, `MB`, `GB`, `TB` are powers
/// of 1000; `KiB`, `MiB`, `GiB`, `TiB` and the short `K`, `M`, `G`, `T` are powers of
/// 1024; `B` or no unit means bytes. Units are case-insensitive; a decimal fraction is
/// allowed (`1.5GiB`).
///
/// The arithmetic is the `parse-size` crate's (exact, overflow-checked). Ours on top: a
/// lone prefix (`64k`, `2 M`) is binary, as in `dd` and most tools' flags, where the
/// crate would read it as decimal; `.5k` is still `0.5k`; and the error messages, which
/// name the unit that was not understood. Unlike before, a fraction of a byte rounds to the nearest
/// byte rather than down.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let lone_prefix = {
        let mut rev = t.chars().rev();
        matches!(
            rev.next(),
            Some('k' | 'K' | 'm' | 'M' | 'g' | 'G' | 't' | 'T' | 'p' | 'P' | 'e' | 'E')
        ) && !rev.next().is_some_and(char::is_alphabetic)
    };
    let binary;
    let t = if lone_prefix {
        binary = format!("{t}i");
        binary.as_str()
    } else {
        t
    };
    let parsed = parse_size::Config::new().parse_size(digits_around_points(t).as_ref());
    parsed.map_err(|e| {
        if e == parse_size::Error::PosOverflow {
            return format!("invalid size {s:?}: too large");
        }
        // The crate only says "invalid digit"; name the unit when the number is fine.
        let given = s.trim();
        let unit = given.trim_start_matches(|c: char| c.is_ascii_digit() || " ._".contains(c));
        let number = &given[..given.len() - unit.len()];
        if !unit.is_empty() && parse_size::parse_size(digits_around_points(number).as_ref()).is_ok() {
            format!(
                "invalid size {s:?}: unknown unit {unit:?} (use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB)"
            )
        } else {
            format!("invalid size {s:?}: expected a number with a unit, like 512MiB or 10GB")
        }
    })
}

/// Parses a duration: one or more number+unit pairs (`300ms`, `3s`, `1m30s`, `1.5h`).
/// Units: `ns`, `us`, `ms`, `s`, `m`, `h` (and humantime's longer spellings: `sec`,
/// `min`, `hours`, `d`, ...). A bare `0` is accepted.
///
/// The parsing is the `humantime` crate's. Ours on top: surrounding whitespace is
/// ignored; `.5s` and `1.s` are still read as `0.5s` and `1s`; and `M` (humantime's
/// month) is refused, because in a flag like `--linger 5M` it is far more likely a
/// mistyped minute than five months. Unlike before, a fraction the unit cannot hold
/// exactly (`1.5ns`; `0.001h`, which humantime counts in whole seconds) is refused rather
/// than rounded down.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("invalid duration \"\": expected e.g. 300ms, 3s or 1m".to_owned());
    }
    if t.contains('M') {
        return Err(format!(
            "invalid duration {s:?}: unknown unit \"M\" (use ns, us, ms, s, m or h; m is minutes)"
        ));
    }
    humantime::parse_duration(&digits_around_points(t)).map_err(|e| match e {
        humantime::DurationError::UnknownUnit { unit, .. } if unit.is_empty() => {
            format!("invalid duration {s:?}: a unit is required (ms, s, m or h), e.g. 300ms")
        }
        humantime::DurationError::UnknownUnit { unit, .. } => {
            format!("invalid duration {s:?}: unknown unit {unit:?} (use ns, us, ms, s, m or h)")
        }
        humantime::DurationError::NumberOverflow => {
            format!("invalid duration {s:?}: too large, or a fraction too fine for its unit (use a smaller unit)")
        }
        _ => format!("invalid duration {s:?}: expected e.g. 300ms, 3s or 1m30s"),
    })
}

/// Parses `--timeout`: a duration above zero.
pub fn parse_timeout(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err(format!("invalid timeout {s:?}: it must be above zero"));
    }
    Ok(d)
}

/// `.5s` → `0.5s` and `1.s` → `1s`: humantime (and parse-size, before a point) wants a
/// digit on both sides of a decimal point, and both spellings were accepted before the
/// crates parsed our flags. A point with no digit on either side is left alone (and
/// refused).
fn digits_around_points(t: &str) -> std::borrow::Cow<'_, str> {
    if !t.contains('.') {
        return std::borrow::Cow::Borrowed(t);
    }
    let chars: Vec<char> = t.chars().collect();
    let mut out = String::with_capacity(t.len() + 2);
    for (i, &c) in chars.iter().enumerate() {
        if c == '.' {
            let before = i > 0 && chars[i - 1].is_ascii_digit();
            let after = chars.get(i + 1).is_some_and(char::is_ascii_digit);
            if after && !before {
                out.push('0');
            } else if before && !after {
                continue;
            }
        }
        out.push(c);
    }
    std::borrow::Cow::Owned(out)
}

/// Parses the sync policy: `always`, `never`, or `interval:MS` (MS in milliseconds, or a
/// duration with a unit such as `interval:1s`).
pub fn parse_sync(s: &str) -> Result<SyncPolicy, String> {
    let t = s.trim();
    match t {
        "always" => return Ok(SyncPolicy::Always),
        "never" => return Ok(SyncPolicy::Never),
        _ => {}
    }
    let Some(spec) = t.strip_prefix("interval:") else {
        return Err(format!(
            "invalid sync policy {s:?}: use always, never or interval:MS (e.g. interval:100)"
        ));
    };
    let every = if !spec.is_empty() && spec.bytes().all(|b| b.is_ascii_digit()) {
        spec.parse::<u64>()
            .map(Duration::from_millis)
            .map_err(|_| format!("invalid sync policy {s:?}: interval too large"))?
    } else {
        parse_duration(spec).map_err(|e| format!("invalid sync policy {s:?}: {e}"))?
    };
    if every.is_zero() {
        return Err(format!(
            "invalid sync policy {s:?}: the interval must be above zero (use `always` to sync every append)"
        ));
    }
    Ok(SyncPolicy::Interval(every))
}
