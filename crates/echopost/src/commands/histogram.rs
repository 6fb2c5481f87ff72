//! A small latency histogram with bounded relative error, for `echopost bench`.
//!
//! Percentiles of millions of samples must not need millions of stored samples, and the
//! tail (p99.9) matters as much as the median, so values are counted in log-linear
//! buckets the way HdrHistogram does: exact below 256, and above that 128 buckets per
//! power of two, so a reported value is never more than 1/128 (< 0.8 %) above the true
//! one. The whole `u64` range fits in 7,424 counters (58 KiB); each producer keeps its own
//! histogram and they are merged at the end, so recording is a plain increment.

/// Sub-buckets per power of two are `2^SUB_BITS`.
const SUB_BITS: u32 = 7;
const SUB: u64 = 1 << SUB_BITS;
/// Values below this are counted exactly.
const LINEAR: u64 = 2 * SUB;
/// Number of counters: the linear part plus `SUB` per exponent from 8 to 63.
const BUCKETS: usize = LINEAR as usize + (63 - SUB_BITS as usize) * SUB as usize;

/// Counts of values (nanoseconds, in the bench) with bounded relative error.
#[derive(Debug, Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    min: u64,
    max: u64,
    sum: u128,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::new()
    }
}

fn index(v: u64) -> usize {
    if v < LINEAR {
        return v as usize;
    }
    let exp = 63 - v.leading_zeros(); // >= 8
    let shift = exp - SUB_BITS;
    let mantissa = v >> shift; // in [SUB, 2*SUB)
    LINEAR as usize + (exp - SUB_BITS - 1) as usize * SUB as usize + (mantissa - SUB) as usize
}

/// The largest value counted in bucket `i`.
fn highest_in(i: usize) -> u64 {
    if i < LINEAR as usize {
        return i as u64;
    }
    let k = i - LINEAR as usize;
    let exp = (k / SUB as usize) as u32 + SUB_BITS + 1;
    let mantissa = (k % SUB as usize) as u64 + SUB;
    let shift = exp - SUB_BITS;
    let upper = (u128::from(mantissa + 1) << shift) - 1;
    u64::try_from(upper).unwrap_or(u64::MAX)
}

impl Histogram {
    pub fn new() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
            min: u64::MAX,
            max: 0,
            sum: 0,
        }
    }

    /// Counts one value.
    pub fn record(&mut self, v: u64) {
        self.counts[index(v)] += 1;
        self.total += 1;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        self.sum += u128::from(v);
    }

    /// Adds every count of `other`.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.sum += other.sum;
    }

    /// Values counted.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// Largest value counted (0 when empty).
    pub fn max(&self) -> u64 {
        self.max
    }

    /// Smallest value counted (0 when empty).
    pub fn min(&self) -> u64 {
        if self.total == 0 { 0 } else { self.min }
    }

    /// Arithmetic mean (0 when empty).
    pub fn mean(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.sum as f64 / self.total as f64
        }
    }

    /// The value at quantile `q` (0.5 = median, 0.999 = p99.9): the smallest bucket bound
    /// at or below which at least `q` of the values lie, capped at the maximum seen. 0 when
    /// empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0u64;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return highest_in(i).min(self.max);
            }
        }
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_u64_and_are_ordered() {
        assert_eq!(index(u64::MAX), BUCKETS - 1);
        let mut last = 0;
        for v in [
            0u64,
            1,
            255,
            256,
            257,
            511,
            512,
            1000,
            1 << 20,
            1 << 40,
            u64::MAX,
        ] {
            let i = index(v);
            assert!(i >= last);
            last = i;
            assert!(highest_in(i) >= v, "{v}");
            // Bounded relative error.
            let h = highest_in(i);
            assert!((h - v) as f64 <= v as f64 / 128.0 + 1.0, "{v} -> {h}");
        }
    }

    #[test]
    fn quantiles() {
        let mut h = Histogram::new();
        assert_eq!(h.quantile(0.5), 0);
        for v in 1..=1000u64 {
            h.record(v * 1000);
        }
        let p50 = h.quantile(0.5);
        assert!((500_000..=504_000).contains(&p50), "{p50}");
        let p99 = h.quantile(0.99);
        assert!((990_000..=998_000).contains(&p99), "{p99}");
        assert_eq!(h.quantile(1.0), 1_000_000);
        assert_eq!(h.min(), 1000);
        assert_eq!(h.count(), 1000);
        assert!((h.mean() - 500_500.0).abs() < 1.0);

        let mut other = Histogram::new();
        other.record(5_000_000);
        h.merge(&other);
        assert_eq!(h.max(), 5_000_000);
        assert_eq!(h.quantile(1.0), 5_000_000);
        assert_eq!(h.count(), 1001);
    }

    #[test]
    fn small_values_are_exact() {
        let mut h = Histogram::new();
        for v in [3u64, 3, 7, 200] {
            h.record(v);
        }
        assert_eq!(h.quantile(0.5), 3);
        assert_eq!(h.quantile(0.75), 7);
        assert_eq!(h.quantile(0.99), 200);
    }
}
