//! Summary statistics of timing samples.

use serde::Serialize;

/// Samples of one variant and their summary, in milliseconds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    /// Every measured sample, in run order.
    pub samples_ms: Vec<f64>,
    /// Median (mean of the middle two for an even count).
    pub median_ms: f64,
    /// Fastest sample.
    pub min_ms: f64,
    /// Slowest sample.
    pub max_ms: f64,
    /// 90th percentile, nearest-rank.
    pub p90_ms: f64,
}

impl Summary {
    /// Summarizes `samples`; `None` when there are none.
    pub fn of(samples: &[f64]) -> Option<Summary> {
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let (min, max) = (*sorted.first()?, *sorted.last()?);
        let median = if n % 2 == 1 { sorted[n / 2] } else { (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0 };
        let rank = ((0.9 * n as f64).ceil() as usize).clamp(1, n);
        Some(Summary {
            samples_ms: samples.to_vec(),
            median_ms: median,
            min_ms: min,
            max_ms: max,
            p90_ms: sorted[rank - 1],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_and_even_counts() {
        let s = Summary::of(&[5.0, 1.0, 3.0]).unwrap();
        assert_eq!((s.median_ms, s.min_ms, s.max_ms, s.p90_ms), (3.0, 1.0, 5.0, 5.0));
        let s = Summary::of(&[4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!(s.median_ms, 2.5);
        assert_eq!(s.samples_ms, [4.0, 1.0, 3.0, 2.0]);
    }

    #[test]
    fn p90_is_nearest_rank() {
        let samples: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(Summary::of(&samples).unwrap().p90_ms, 18.0);
        let samples: Vec<f64> = (1..=15).map(f64::from).collect();
        assert_eq!(Summary::of(&samples).unwrap().p90_ms, 14.0);
        assert_eq!(Summary::of(&[7.0]).unwrap().p90_ms, 7.0);
        assert!(Summary::of(&[]).is_none());
    }
}
