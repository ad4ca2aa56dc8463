//! Quantiles with numpy's default `method="linear"` semantics, bit for bit: for `f64` input the
//! arithmetic is `f64`, for `f32` input it is `f32` as numpy does for float32 arrays (a Python
//! float `q` is a "weak" scalar). NaN entries are skipped (`np.nanquantile`).
//!
//! Colour limits of attention heatmaps (thought-anchors `plot_one_attn_matrix.py`): upstream
//! `plot_one_attn_matrix.py` takes `vmax = np.quantile(np.tril(M), q)`, a quantile over ALL N²
//! entries with the upper triangle zeroed ([`tril_quantile`], the faithful quirk). The corrected
//! default, [`lower_triangle_quantile`], uses only the N(N+1)/2 entries on and below the diagonal.

use crate::{Error, Result};

/// Element types the quantile helpers accept (`f32`, `f64`).
pub trait QuantileFloat: Copy + PartialOrd + sealed::Sealed {
    fn to_f64(self) -> f64;
    fn zero() -> Self;
    fn is_nan(self) -> bool;
    /// numpy's `_lerp(a, b, t)`, in `Self`'s precision.
    fn lerp(a: Self, b: Self, t: f64) -> Self;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

impl QuantileFloat for f64 {
    fn to_f64(self) -> f64 {
        self
    }
    fn zero() -> Self {
        0.0
    }
    fn is_nan(self) -> bool {
        f64::is_nan(self)
    }
    fn lerp(a: f64, b: f64, t: f64) -> f64 {
        let diff = b - a;
        if t >= 0.5 {
            b - diff * (1.0 - t)
        } else {
            a + diff * t
        }
    }
}

impl QuantileFloat for f32 {
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
    fn zero() -> Self {
        0.0
    }
    fn is_nan(self) -> bool {
        f32::is_nan(self)
    }
    fn lerp(a: f32, b: f32, t: f64) -> f32 {
        let diff = b - a;
        if t >= 0.5 {
            b - diff * ((1.0 - t) as f32)
        } else {
            a + diff * (t as f32)
        }
    }
}

fn check_q(q: f64) -> Result<()> {
    if (0.0..=1.0).contains(&q) {
        Ok(())
    } else {
        Err(Error::invalid(format!("quantile q = {q} is outside [0, 1]")))
    }
}

/// `np.nanquantile(values, q)` (method "linear"): NaN when there are no values or all are NaN
/// (as numpy). Errors when `q` is outside [0, 1].
pub fn quantile<T: QuantileFloat>(values: &[T], q: f64) -> Result<f64> {
    check_q(q)?;
    let mut kept: Vec<T> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    Ok(quantile_of_owned(&mut kept, q))
}

fn quantile_of_owned<T: QuantileFloat>(values: &mut [T], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(|a, b| a.partial_cmp(b).expect("NaN were filtered out"));
    let n = values.len();
    let virtual_index = (n - 1) as f64 * q;
    let previous = (virtual_index.floor() as usize).min(n - 1);
    let next = (previous + 1).min(n - 1);
    let gamma = virtual_index - previous as f64;
    T::lerp(values[previous], values[next], gamma).to_f64()
}

fn check_square<T>(matrix: &[T], n: usize) -> Result<()> {
    if matrix.len() != n * n {
        return Err(Error::invalid(format!(
            "matrix has {} values, expected n × n = {n} × {n} = {}",
            matrix.len(),
            n * n
        )));
    }
    Ok(())
}

/// Quantile `q` of the entries on and below the diagonal of the row-major `n × n` `matrix`
/// (numpy "linear", NaN skipped): the corrected colour limit for causal attention heatmaps.
pub fn lower_triangle_quantile<T: QuantileFloat>(matrix: &[T], n: usize, q: f64) -> Result<f64> {
    check_square(matrix, n)?;
    check_q(q)?;
    let mut kept: Vec<T> = (0..n)
        .flat_map(|i| (0..=i).map(move |j| i * n + j))
        .map(|k| matrix[k])
        .filter(|v| !v.is_nan())
        .collect();
    Ok(quantile_of_owned(&mut kept, q))
}

/// Upstream's `np.quantile(np.tril(M), q)`: all `n²` entries with the upper triangle replaced
/// by zeros (the faithful quirk; the zeros pull the quantile down). NaN entries on or below the
/// diagonal are skipped (where numpy would return NaN).
pub fn tril_quantile<T: QuantileFloat>(matrix: &[T], n: usize, q: f64) -> Result<f64> {
    check_square(matrix, n)?;
    check_q(q)?;
    let mut kept: Vec<T> = (0..n)
        .flat_map(|i| (0..n).map(move |j| (i, j)))
        .map(|(i, j)| if j <= i { matrix[i * n + j] } else { T::zero() })
        .filter(|v| !v.is_nan())
        .collect();
    Ok(quantile_of_owned(&mut kept, q))
}
