//! Statistics shared by the analyses: Pearson r with scipy's two-sided p, pandas-style mean /
//! std (ddof = 1) / SEM, and the least-squares line of `np.polyfit(x, y, 1)` (spec `codi.md` §5;
//! also the split-half reliability of receiver heads, spec §8).

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

/// NaN ⇄ JSON `null` for f64 fields (Python's `json.dump` writes a bare `NaN`, which is not JSON;
/// [`relaxed_json`] reads such files).
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
        // r → p as in the committed summary_statistics.json (spec §5): n = 600, r = 0.23547.
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
}
