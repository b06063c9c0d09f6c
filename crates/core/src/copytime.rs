//! How long moving shards will take, from the moves measured so far: a shard's move costs a
//! fixed part (preparing the target, verifying, the cutover) plus a part proportional to its
//! rows. Both are fitted by least squares on past shard moves (rows, seconds from the start
//! of the copy to the switch). Shard moves overlap (a shard catching up or cutting over no
//! longer holds a copy slot), so the time of many is their summed time divided by the larger
//! of the copies allowed at once and the overlap measured on those past moves.

/// The fitted cost of one shard move: `seconds = fixed + rows / rows_per_sec`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CopyModel {
    pub fixed_secs: f64,
    pub rows_per_sec: f64,
    /// How many past shard moves it was fitted on (0: assumed).
    pub samples: usize,
    /// Shard moves in flight at once on average over those (their summed time over the
    /// time from the first start to the last switch); 1 when assumed.
    pub overlap: f64,
}

/// Assumed when no move has been measured yet: conservative for a small machine.
pub const ASSUMED: CopyModel = CopyModel {
    fixed_secs: 0.5,
    rows_per_sec: 20_000.0,
    samples: 0,
    overlap: 1.0,
};

impl CopyModel {
    /// Fits the model on past shard moves `(rows, started, switched)` (seconds on one clock);
    /// [`ASSUMED`] when there are none. With samples that all have about the same size, the
    /// fixed part is taken as assumed (at most the mean time) and the rest as per row.
    pub fn fit(samples: &[(u64, f64, f64)]) -> CopyModel {
        let valid: Vec<&(u64, f64, f64)> = samples
            .iter()
            .filter(|(_, a, b)| a.is_finite() && b.is_finite() && b >= a)
            .collect();
        let pts: Vec<(f64, f64)> = valid.iter().map(|&&(r, a, b)| (r as f64, b - a)).collect();
        if pts.is_empty() {
            return ASSUMED;
        }
        let first = valid.iter().map(|v| v.1).fold(f64::INFINITY, f64::min);
        let last = valid.iter().map(|v| v.2).fold(f64::NEG_INFINITY, f64::max);
        let busy: f64 = pts.iter().map(|p| p.1).sum();
        let overlap = if last > first {
            (busy / (last - first)).max(1.0)
        } else {
            1.0
        };
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
            overlap,
        }
    }

    /// Seconds to move shards of these row counts with `parallel` bulk copies at once.
    pub fn estimate(&self, shard_rows: &[u64], parallel: u32) -> f64 {
        let serial: f64 = shard_rows
            .iter()
            .map(|&r| self.fixed_secs + r as f64 / self.rows_per_sec)
            .sum();
        serial / f64::from(parallel.max(1)).max(self.overlap)
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
        // One after the other: no overlap.
        let mut t = 0.0;
        let samples: Vec<(u64, f64, f64)> = [0u64, 1_000, 10_000, 50_000, 100_000]
            .iter()
            .map(|&r| {
                let d = 0.2 + r as f64 / 10_000.0;
                t += d;
                (r, t - d, t)
            })
            .collect();
        let m = CopyModel::fit(&samples);
        assert!((m.fixed_secs - 0.2).abs() < 1e-6, "{m:?}");
        assert!((m.rows_per_sec - 10_000.0).abs() < 1.0, "{m:?}");
        assert_eq!(m.samples, 5);
        assert!((m.overlap - 1.0).abs() < 1e-9);
        assert!((m.estimate(&[10_000, 10_000], 2) - 1.2).abs() < 1e-6);
    }

    #[test]
    fn same_sized_history_still_gives_a_finite_estimate() {
        let m = CopyModel::fit(&[(1_000, 0.0, 1.0), (1_000, 1.0, 2.2), (1_000, 2.2, 3.0)]);
        let e = m.estimate(&[1_000; 10], 1);
        assert!((e - 10.0).abs() < 1e-6, "{m:?} {e}");
    }

    #[test]
    fn empty_shards_cost_their_fixed_part() {
        let m = CopyModel::fit(&[(0, 0.0, 0.3), (0, 0.3, 0.6)]);
        assert!((m.estimate(&[0, 0, 0], 1) - 0.9).abs() < 1e-9);
    }

    #[test]
    fn overlapping_moves_divide_the_time_by_their_measured_overlap() {
        // Four moves of 1 s each, all within 1 s: four at a time.
        let m = CopyModel::fit(&[(0, 0.0, 1.0), (0, 0.0, 1.0), (0, 0.0, 1.0), (0, 0.0, 1.0)]);
        assert!((m.overlap - 4.0).abs() < 1e-9, "{m:?}");
        assert!((m.estimate(&[0; 8], 2) - 2.0).abs() < 1e-9, "{m:?}");
        assert!((m.estimate(&[0; 8], 8) - 1.0).abs() < 1e-9, "{m:?}");
    }
}
