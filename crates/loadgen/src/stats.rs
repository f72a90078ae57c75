//! Latency statistics: a log-bucketed histogram (about 2 % relative error) with exact max.

/// Microsecond latencies in buckets of ~2 % width.
#[derive(Debug, Clone)]
pub struct Histogram {
    buckets: Vec<u64>,
    count: u64,
    max_us: u64,
}

const BUCKETS_PER_DOUBLING: f64 = 35.0;
const BUCKET_COUNT: usize = 1200;

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: vec![0; BUCKET_COUNT],
            count: 0,
            max_us: 0,
        }
    }
}

impl Histogram {
    fn bucket(us: u64) -> usize {
        let b = ((us.max(1) as f64).log2() * BUCKETS_PER_DOUBLING) as usize;
        b.min(BUCKET_COUNT - 1)
    }

    fn bucket_value(b: usize) -> u64 {
        2f64.powf((b as f64 + 0.5) / BUCKETS_PER_DOUBLING) as u64
    }

    pub fn record(&mut self, us: u64) {
        self.buckets[Self::bucket(us)] += 1;
        self.count += 1;
        self.max_us = self.max_us.max(us);
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
        self.count += other.count;
        self.max_us = self.max_us.max(other.max_us);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn max_us(&self) -> u64 {
        self.max_us
    }

    /// The value at quantile `q` (0.0 to 1.0), or 0 when empty.
    pub fn quantile_us(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (b, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Self::bucket_value(b).min(self.max_us);
            }
        }
        self.max_us
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_a_few_percent() {
        let mut h = Histogram::default();
        for us in 1..=10_000u64 {
            h.record(us);
        }
        let p50 = h.quantile_us(0.5) as f64;
        let p99 = h.quantile_us(0.99) as f64;
        assert!((p50 - 5000.0).abs() / 5000.0 < 0.03, "{p50}");
        assert!((p99 - 9900.0).abs() / 9900.0 < 0.03, "{p99}");
        assert_eq!(h.max_us(), 10_000);
        assert_eq!(Histogram::default().quantile_us(0.5), 0);
    }

    #[test]
    fn merge_adds_counts() {
        let (mut a, mut b) = (Histogram::default(), Histogram::default());
        a.record(10);
        b.record(1000);
        a.merge(&b);
        assert_eq!(a.count(), 2);
        assert_eq!(a.max_us(), 1000);
    }
}
