//! Exponential backoff with full jitter, and `Retry-After`.
//!
//! The n-th consecutive failure waits a uniformly random time in `[0, min(cap, base·2ⁿ)]`
//! ("full jitter"): many EchoPost instances that lost the same main server do not come
//! back in lock step and knock it over again. A server that says how long to wait
//! (`Retry-After: 120` or an HTTP date) is obeyed: the wait is never shorter than that,
//! up to [`MAX_RETRY_AFTER`] so that a bogus far-future date cannot park replay for days.
//! Delivery retries never give up (records are never dropped); only the wait grows.

use std::time::{Duration, SystemTime};

use rand::Rng;

/// First retry ceiling for deliveries.
pub const BASE: Duration = Duration::from_millis(100);
/// Largest ceiling for deliveries: a recovered main server is noticed within about this.
pub const CAP: Duration = Duration::from_secs(30);
/// First retry ceiling for health probes.
pub const PROBE_BASE: Duration = Duration::from_millis(100);
/// Largest ceiling for health probes (probes are cheap; come back quickly after an outage).
pub const PROBE_CAP: Duration = Duration::from_secs(10);
/// Longest `Retry-After` honoured.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// State of one retry sequence; [`Backoff::reset`] after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Self {
        Backoff {
            base,
            cap,
            attempt: 0,
        }
    }

    /// The delivery backoff ([`BASE`], [`CAP`]).
    pub fn delivery() -> Self {
        Backoff::new(BASE, CAP)
    }

    /// The health-probe backoff ([`PROBE_BASE`], [`PROBE_CAP`]).
    pub fn probe() -> Self {
        Backoff::new(PROBE_BASE, PROBE_CAP)
    }

    /// Failures since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// The current ceiling `min(cap, base·2^attempt)`.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.base
            .checked_mul(factor)
            .map_or(self.cap, |d| d.min(self.cap))
    }

    /// Wait before the next attempt, using the thread-local RNG.
    pub fn next_delay(&mut self) -> Duration {
        self.next_delay_with(&mut rand::rng())
    }

    /// Wait before the next attempt: uniform in `[0, ceiling]`, then the ceiling doubles.
    pub fn next_delay_with<R: Rng + ?Sized>(&mut self, rng: &mut R) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rng.random_range(0..=nanos))
    }
}

/// The wait after a failure: the jittered backoff, but never less than the server's
/// `Retry-After` (capped at [`MAX_RETRY_AFTER`]).
pub fn with_retry_after(jittered: Duration, retry_after: Option<Duration>) -> Duration {
    match retry_after {
        Some(ra) => jittered.max(ra.min(MAX_RETRY_AFTER)),
        None => jittered,
    }
}

/// Parses an HTTP `Retry-After` value: delay-seconds (`"120"`) or an HTTP date
/// (`"Wed, 21 Oct 2015 07:28:00 GMT"`, also the obsolete RFC 850 and asctime forms). A
/// date in the past means "now" (zero). `None` for anything unparseable.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if v.is_empty() {
        return None;
    }
    if v.bytes().all(|b| b.is_ascii_digit()) {
        // Absurdly long digit strings saturate (and are capped by `with_retry_after`).
        return Some(Duration::from_secs(v.parse::<u64>().unwrap_or(u64::MAX)));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn ceiling_doubles_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(30));
        let mut rng = StdRng::seed_from_u64(7);
        let mut ceilings = Vec::new();
        for _ in 0..12 {
            ceilings.push(b.ceiling());
            let d = b.next_delay_with(&mut rng);
            assert!(d <= *ceilings.last().unwrap());
        }
        assert_eq!(ceilings[0], Duration::from_millis(100));
        assert_eq!(ceilings[1], Duration::from_millis(200));
        assert_eq!(ceilings[4], Duration::from_millis(1600));
        assert_eq!(ceilings[9], Duration::from_secs(30));
        assert_eq!(ceilings[11], Duration::from_secs(30));
        assert_eq!(b.attempts(), 12);
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_millis(100));
    }

    #[test]
    fn huge_attempt_counts_do_not_overflow() {
        let mut b = Backoff::delivery();
        for _ in 0..10_000 {
            let _ = b.next_delay();
        }
        assert_eq!(b.ceiling(), CAP);
        assert!(b.next_delay() <= CAP);
    }

    #[test]
    fn jitter_spreads_over_the_whole_range() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut lows = 0;
        let mut highs = 0;
        for _ in 0..1000 {
            let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(1));
            let d = b.next_delay_with(&mut rng);
            assert!(d <= Duration::from_secs(1));
            if d < Duration::from_millis(250) {
                lows += 1;
            }
            if d > Duration::from_millis(750) {
                highs += 1;
            }
        }
        // Uniform: about 250 each; allow generous slack.
        assert!(lows > 150 && highs > 150, "lows {lows} highs {highs}");
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        // RFC 850 and asctime forms.
        assert_eq!(
            parse_retry_after("Wednesday, 21-Oct-15 07:29:00 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            parse_retry_after("Wed Oct 21 07:28:05 2015", now),
            Some(Duration::from_secs(5))
        );
        // In the past: retry now.
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(Duration::from_secs(u64::MAX))
        );
    }

    #[test]
    fn retry_after_is_a_floor_and_is_capped() {
        let j = Duration::from_millis(50);
        assert_eq!(with_retry_after(j, None), j);
        assert_eq!(
            with_retry_after(j, Some(Duration::from_secs(2))),
            Duration::from_secs(2)
        );
        assert_eq!(
            with_retry_after(Duration::from_secs(5), Some(Duration::from_secs(2))),
            Duration::from_secs(5)
        );
        assert_eq!(
            with_retry_after(j, Some(Duration::from_secs(86_400))),
            MAX_RETRY_AFTER
        );
    }
}
