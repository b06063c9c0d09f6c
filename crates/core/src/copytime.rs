//! How long moving shards will take, from the moves measured so far: a shard's move costs a
//! fixed part (preparing the target, verifying, the cutover) plus a part proportional to its
//! rows. Both are fitted by least squares on past shard moves (rows, seconds from the start
//! of the copy to the switch).

/// The fitted cost of one shard move: `seconds = fixed + rows / rows_per_sec`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CopyModel {
    pub fixed_secs: f64,
    pub rows_per_sec: f64,
    /// How many past shard moves it was fitted on (0: assumed).
    pub samples: usize,
}

/// Assumed when no move has been measured yet: conservative for a small machine.
pub const ASSUMED: CopyModel = CopyModel {
    fixed_secs: 0.5,
    rows_per_sec: 20_000.0,
    samples: 0,
};

impl CopyModel {
    /// Fits the model on past shard moves `(rows, seconds)`; [`ASSUMED`] when there are none.
    /// With one sample, or samples that all have about the same size, the time is taken as
    /// proportional to rows, with the assumed fixed part as a floor.
    pub fn fit(samples: &[(u64, f64)]) -> CopyModel {
        let pts: Vec<(f64, f64)> = samples
            .iter()
            .filter(|(_, s)| s.is_finite() && *s >= 0.0)
            .map(|&(r, s)| (r as f64, s))
            .collect();
        if pts.is_empty() {
            return ASSUMED;
        }
        let n = pts.len() as f64;
        let mean_r = pts.iter().map(|p| p.0).sum::<f64>() / n;
        let mean_s = pts.iter().map(|p| p.1).sum::<f64>() / n;
        let var_r = pts.iter().map(|p| (p.0 - mean_r).powi(2)).sum::<f64>();
        let cov = pts
            .iter()
            .map(|p| (p.0 - mean_r) * (p.1 - mean_s))
            .sum::<f64>();
        // slope = seconds per row
        let spread = var_r > 0.0 && var_r.sqrt() / n.sqrt() > 0.05 * mean_r.max(1.0);
        let (fixed, per_row) = if spread && cov > 0.0 {
            let per_row = cov / var_r;
            let fixed = mean_s - per_row * mean_r;
            if fixed >= 0.0 {
                (fixed, per_row)
            } else {
                (0.0, mean_s / mean_r.max(1.0))
            }
        } else if mean_r >= 1.0 {
            // Same-sized moves: the fixed part cannot be told apart; split as assumed.
            let fixed = ASSUMED.fixed_secs.min(mean_s);
            (fixed, (mean_s - fixed).max(0.0) / mean_r)
        } else {
            (mean_s, 0.0)
        };
        CopyModel {
            fixed_secs: fixed,
            rows_per_sec: if per_row > 0.0 {
                1.0 / per_row
            } else {
                f64::INFINITY
            },
            samples: pts.len(),
        }
    }

    /// Seconds to move shards of these row counts with `parallel` bulk copies at once.
    pub fn estimate(&self, shard_rows: &[u64], parallel: u32) -> f64 {
        let serial: f64 = shard_rows
            .iter()
            .map(|&r| self.fixed_secs + r as f64 / self.rows_per_sec)
            .sum();
        serial / f64::from(parallel.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_history_is_assumed() {
        assert_eq!(CopyModel::fit(&[]), ASSUMED);
        assert!((ASSUMED.estimate(&[20_000, 0], 1) - 2.0).abs() < 1e-9);
    }

    #[test]
    fn fits_a_fixed_part_and_a_rate() {
        // 0.2 s per shard plus 10 000 rows/s.
        let samples: Vec<(u64, f64)> = [0u64, 1_000, 10_000, 50_000, 100_000]
            .iter()
            .map(|&r| (r, 0.2 + r as f64 / 10_000.0))
            .collect();
        let m = CopyModel::fit(&samples);
        assert!((m.fixed_secs - 0.2).abs() < 1e-6, "{m:?}");
        assert!((m.rows_per_sec - 10_000.0).abs() < 1.0, "{m:?}");
        assert_eq!(m.samples, 5);
        assert!((m.estimate(&[10_000, 10_000], 2) - 1.2).abs() < 1e-6);
    }

    #[test]
    fn same_sized_history_still_gives_a_finite_estimate() {
        let m = CopyModel::fit(&[(1_000, 1.0), (1_000, 1.2), (1_000, 0.8)]);
        let e = m.estimate(&[1_000; 10], 1);
        assert!((e - 10.0).abs() < 1e-6, "{m:?} {e}");
    }

    #[test]
    fn empty_shards_cost_their_fixed_part() {
        let m = CopyModel::fit(&[(0, 0.3), (0, 0.3)]);
        assert!((m.estimate(&[0, 0, 0], 1) - 0.9).abs() < 1e-9);
    }
}
