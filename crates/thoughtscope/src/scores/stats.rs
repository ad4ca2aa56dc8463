//! Statistics shared by the analyses: Pearson r with scipy's two-sided p, pandas-style mean /
//! std (ddof = 1) / SEM, and the least-squares line of `np.polyfit(x, y, 1)` (CoT_Exploration `3_analyze_and_visualize.py`;
//! also the split-half reliability of receiver heads, `eval_receiver_head_reliability.py`).

use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, StudentsT};

use crate::{Error, Result};

/// Pearson correlation with its two-sided p-value, as `scipy.stats.pearsonr`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Pearson {
    #[serde(with = "nan_as_null")]
    pub r: f64,
    #[serde(with = "nan_as_null")]
    pub p: f64,
}

/// Pearson r and two-sided p (Student t with n − 2 degrees of freedom).
///
/// Matches scipy: NaN for both when either side is constant (or n < 2, where scipy raises);
/// for n = 2, r = ±1 and p = 1; |r| = 1 gives p = 0.
pub fn pearson(x: &[f64], y: &[f64]) -> Result<Pearson> {
    if x.len() != y.len() {
        return Err(Error::invalid(format!(
            "pearson: the two samples differ in length ({} vs {})",
            x.len(),
            y.len()
        )));
    }
    let nan = Pearson { r: f64::NAN, p: f64::NAN };
    let n = x.len();
    if n < 2 || x.iter().chain(y).any(|v| !v.is_finite()) {
        return Ok(nan);
    }
    if x.iter().all(|&v| v == x[0]) || y.iter().all(|&v| v == y[0]) {
        return Ok(nan);
    }
    if n == 2 {
        // scipy: the sign of the slope, p = 1.
        let r = (x[1] - x[0]).signum() * (y[1] - y[0]).signum();
        return Ok(Pearson { r, p: 1.0 });
    }
    let (mx, my) = (mean(x), mean(y));
    // Centre, then scale by the largest deviation before normalising (as scipy does) so large
    // values cannot overflow the sums of squares.
    let dx: Vec<f64> = x.iter().map(|v| v - mx).collect();
    let dy: Vec<f64> = y.iter().map(|v| v - my).collect();
    let max_x = dx.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let max_y = dy.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let norm_x = dx.iter().map(|v| (v / max_x).powi(2)).sum::<f64>().sqrt();
    let norm_y = dy.iter().map(|v| (v / max_y).powi(2)).sum::<f64>().sqrt();
    let r: f64 = dx
        .iter()
        .zip(&dy)
        .map(|(a, b)| (a / max_x / norm_x) * (b / max_y / norm_y))
        .sum::<f64>()
        .clamp(-1.0, 1.0);
    let df = (n - 2) as f64;
    let one_minus_r2 = (1.0 - r) * (1.0 + r);
    let p = if one_minus_r2 == 0.0 {
        0.0
    } else {
        let t = r.abs() * (df / one_minus_r2).sqrt();
        let student = StudentsT::new(0.0, 1.0, df).map_err(|e| Error::Other(format!("student t: {e}")))?;
        (2.0 * student.sf(t)).min(1.0)
    };
    Ok(Pearson { r, p })
}

/// Arithmetic mean; NaN for an empty slice (pandas' `mean` of nothing).
pub fn mean(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    xs.iter().sum::<f64>() / xs.len() as f64
}

/// Sample standard deviation with ddof = 1 (pandas' default); NaN for fewer than 2 values.
pub fn std_ddof1(xs: &[f64]) -> f64 {
    if xs.len() < 2 {
        return f64::NAN;
    }
    let m = mean(xs);
    (xs.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (xs.len() - 1) as f64).sqrt()
}

/// Standard error of the mean: std (ddof = 1) / √n.
pub fn sem(xs: &[f64]) -> f64 {
    std_ddof1(xs) / (xs.len() as f64).sqrt()
}

/// A least-squares line `y = slope · x + intercept` (as `np.polyfit(x, y, 1)`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinearFit {
    pub slope: f64,
    pub intercept: f64,
}

/// Least squares over the pairs where both values are finite; `None` with fewer than two such
/// pairs or when x is constant.
pub fn least_squares(x: &[f64], y: &[f64]) -> Option<LinearFit> {
    let pairs: Vec<(f64, f64)> = x.iter().zip(y).map(|(&a, &b)| (a, b)).filter(|(a, b)| a.is_finite() && b.is_finite()).collect();
    if pairs.len() < 2 {
        return None;
    }
    let n = pairs.len() as f64;
    let mean_x = pairs.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = pairs.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = pairs.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
    if sxx == 0.0 {
        return None;
    }
    let sxy: f64 = pairs.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
    let slope = sxy / sxx;
    Some(LinearFit { slope, intercept: mean_y - slope * mean_x })
}

/// Average ranks (1-based, ties share their mean rank), as `scipy.stats.rankdata(method="average")`.
/// Values must be comparable (no NaN).
pub(crate) fn average_ranks(xs: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..xs.len()).collect();
    order.sort_by(|&a, &b| xs[a].total_cmp(&xs[b]));
    let mut ranks = vec![0.0; xs.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && xs[order[end]] == xs[order[start]] {
            end += 1;
        }
        // Positions start..end (0-based) share the mean of ranks start+1 ..= end.
        let rank = (start + end + 1) as f64 / 2.0;
        for &i in &order[start..end] {
            ranks[i] = rank;
        }
        start = end;
    }
    ranks
}

/// Spearman's rank correlation with two p-values: scipy's asymptotic one and a permutation one.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RankCorrelation {
    /// Spearman's rho: Pearson r of the average ranks (`scipy.stats.spearmanr`).
    #[serde(with = "nan_as_null")]
    pub rho: f64,
    /// `scipy.stats.spearmanr`'s two-sided p (Student t, n − 2 degrees of freedom).
    #[serde(with = "nan_as_null")]
    pub p_asymptotic: f64,
    /// Two-sided permutation p: `(1 + #{b : |rho_b| ≥ |rho|}) / (1 + B)`, one side's ranks
    /// shuffled `B` times.
    #[serde(with = "nan_as_null")]
    pub p_permutation: f64,
    /// Pairs used: those where both values are finite.
    pub n: usize,
    pub permutations: usize,
    pub seed: u64,
}

/// [`RankCorrelation`] of the pairs of `x` and `y` where both are finite; rho and both p are NaN
/// with fewer than 3 such pairs or a constant side. The permutations shuffle `y`'s ranks with
/// ChaCha8 seeded by `seed`; a permuted |rho| within 1e-12 of the observed one counts as
/// reaching it (exact ties of rank patterns would otherwise depend on rounding).
pub fn spearman(x: &[f64], y: &[f64], permutations: usize, seed: u64) -> Result<RankCorrelation> {
    use rand::seq::SliceRandom;
    use rand::SeedableRng;
    if x.len() != y.len() {
        return Err(Error::invalid(format!("spearman: the two samples differ in length ({} vs {})", x.len(), y.len())));
    }
    let (xs, ys): (Vec<f64>, Vec<f64>) = x.iter().zip(y).filter(|(a, b)| a.is_finite() && b.is_finite()).map(|(a, b)| (*a, *b)).unzip();
    let n = xs.len();
    let undefined = RankCorrelation { rho: f64::NAN, p_asymptotic: f64::NAN, p_permutation: f64::NAN, n, permutations, seed };
    if n < 3 {
        return Ok(undefined);
    }
    let (rx, ry) = (average_ranks(&xs), average_ranks(&ys));
    let observed = pearson(&rx, &ry)?;
    if observed.r.is_nan() {
        return Ok(undefined);
    }
    // Ranks keep their mean and spread under a shuffle, so each permuted rho is one dot product.
    let centred = |r: &[f64]| {
        let m = mean(r);
        let d: Vec<f64> = r.iter().map(|v| v - m).collect();
        let norm = d.iter().map(|v| v * v).sum::<f64>().sqrt();
        d.into_iter().map(|v| v / norm).collect::<Vec<f64>>()
    };
    let (dx, mut dy) = (centred(&rx), centred(&ry));
    let threshold = observed.r.abs() - 1e-12;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut reached = 0usize;
    for _ in 0..permutations {
        dy.shuffle(&mut rng);
        let rho: f64 = dx.iter().zip(&dy).map(|(a, b)| a * b).sum();
        if rho.abs() >= threshold {
            reached += 1;
        }
    }
    let p_permutation = if permutations == 0 { f64::NAN } else { (1 + reached) as f64 / (1 + permutations) as f64 };
    Ok(RankCorrelation { rho: observed.r, p_asymptotic: observed.p, p_permutation, n, permutations, seed })
}

/// NaN ⇄ JSON `null` for f64 fields (Python's `json.dump` writes a bare `NaN`, which is not JSON;
/// [`relaxed_json`](crate::codi::runner::files::relaxed_json) reads such files).
pub mod nan_as_null {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &f64, serializer: S) -> Result<S::Ok, S::Error> {
        if value.is_finite() {
            serializer.serialize_f64(*value)
        } else {
            serializer.serialize_none()
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(deserializer)?.unwrap_or(f64::NAN))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pearson_constant_side_is_nan() {
        let p = pearson(&[1.0, 2.0, 3.0], &[0.0, 0.0, 0.0]).unwrap();
        assert!(p.r.is_nan() && p.p.is_nan());
    }

    #[test]
    fn pearson_perfect_and_two_points() {
        let p = pearson(&[1.0, 2.0, 3.0, 4.0], &[2.0, 4.0, 6.0, 8.0]).unwrap();
        assert!((p.r - 1.0).abs() < 1e-15 && p.p == 0.0);
        let p = pearson(&[1.0, 2.0], &[3.0, 1.0]).unwrap();
        assert_eq!((p.r, p.p), (-1.0, 1.0));
    }

    #[test]
    fn spec_values_round_trip_to_p() {
        // r → p as in the committed summary_statistics.json (CoT_Exploration): n = 600, r = 0.23547.
        let p = p_from_r(0.23547, 600);
        assert!((p / 5.2807e-9 - 1.0).abs() < 2e-3, "{p}");
        let p = p_from_r(-0.22878, 100);
        assert!((p - 0.022051).abs() < 2e-5, "{p}");
    }

    fn p_from_r(r: f64, n: usize) -> f64 {
        let df = (n - 2) as f64;
        let t = r.abs() * (df / (1.0 - r * r)).sqrt();
        2.0 * StudentsT::new(0.0, 1.0, df).unwrap().sf(t)
    }

    #[test]
    fn std_and_sem_are_pandas_style() {
        let xs = [1.0, 2.0, 3.0, 4.0];
        assert!((std_ddof1(&xs) - 1.2909944487358056).abs() < 1e-15);
        assert!((sem(&xs) - 0.6454972243679028).abs() < 1e-15);
        assert!(std_ddof1(&[1.0]).is_nan());
    }

    #[test]
    fn least_squares_is_polyfit_on_the_finite_pairs() {
        let fit = least_squares(&[0.0, 1.0, 2.0, f64::NAN], &[1.0, 3.0, 5.0, 7.0]).unwrap();
        assert_eq!((fit.slope, fit.intercept), (2.0, 1.0));
        assert!(least_squares(&[1.0, 1.0], &[0.0, 1.0]).is_none());
    }

    #[test]
    fn average_ranks_share_ties() {
        assert_eq!(average_ranks(&[10.0, 20.0, 10.0, 30.0, 20.0]), vec![1.5, 3.5, 1.5, 5.0, 3.5]);
    }

    #[test]
    fn spearman_matches_scipy() {
        // scipy.stats.spearmanr(x, y) = (0.8, 0.10408803866182788).
        let x = [1.0, 2.0, 3.0, 4.0, 5.0];
        let y = [2.0, 1.0, 4.0, 3.0, 5.0];
        let r = spearman(&x, &y, 2000, 7).unwrap();
        assert!((r.rho - 0.8).abs() < 1e-12, "{}", r.rho);
        assert!((r.p_asymptotic - 0.10408803866182788).abs() < 1e-9, "{}", r.p_asymptotic);
        // Exact two-sided p over all 120 orders: 16 reach |rho| >= 0.8, p = 16/120 = 0.1333.
        assert!((r.p_permutation - 0.1333).abs() < 0.025, "{}", r.p_permutation);
        // A NaN pair is dropped; a perfect monotone relation of 4: 2 of the 24 orders reach |rho| = 1.
        let r = spearman(&[1.0, 2.0, f64::NAN, 3.0, 4.0], &[1.0, 4.0, 0.0, 9.0, 16.0], 100, 1).unwrap();
        assert_eq!((r.n, r.rho), (4, 1.0));
        assert!((r.p_permutation - 2.0 / 24.0).abs() < 0.04, "{}", r.p_permutation);
        assert!(spearman(&[1.0, 2.0], &[1.0, 2.0], 10, 0).unwrap().rho.is_nan());
        assert!(spearman(&[1.0, 1.0, 1.0], &[1.0, 2.0, 3.0], 10, 0).unwrap().rho.is_nan());
    }
}
