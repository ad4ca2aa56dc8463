//! Per-head statistics of attention to and from tagged sentences, exactly as the VA seed
//! notebook's `compute_va_stats_for_head` and `safe_mean` compute them ("VA" = the sentences
//! carrying the chosen tag, `verbalized_evaluation_awareness` by default; seed
//! notebook: Qwen3-4B-Thinking, problem 9; vertical scores as upstream `get_vertical_scores`).
//!
//! On one head's sentence-averaged matrix `A` (N×N, float32 as cached; already trimmed by the
//! caller when the seed trims, see [`trim_ends`]) and a tag mask `V`:
//!
//! - `vert` = [`vertical_scores`] of `A` (the seed: `proximity_ignore = 4`, `control_depth = True`,
//!   `score_type = 'mean'`, `seed_vertical_options`);
//! - `mean_va_vert` / `mean_nonva_vert` = [`safe_mean`] of `vert` over tagged / untagged
//!   sentences; `delta_va_vert` = their difference;
//! - `mean_in_va` = [`safe_mean`] of the block `A[non-VA rows][:, VA cols]` — **every** cell of the
//!   block, upper triangle (zeros) and proximity band included, as numpy's fancy indexing gives it;
//!   `mean_in_nonva` = `A[non][:, non]`, `mean_out_va` = `A[va][:, non]`, `mean_va_to_va` =
//!   `A[va][:, va]`;
//! - `lift_in_va` = `mean_in_va / mean_in_nonva` when both are finite and the denominator is not 0,
//!   else NaN.
//!
//! [`safe_mean`] is the seed's: NaN for an empty selection, otherwise `np.nanmean` of the values
//! as float64, summed in numpy's pairwise order (`np_nanmean`); every
//! statistic equals the numpy reference's bit for bit on the sample rollouts (tests: 1e-12).

use serde::Serialize;

use crate::scores::numpy::np_nanmean;
use crate::scores::{vertical_scores, ScoreType, VerticalOptions};
use crate::{Error, Result};

/// The seed's vertical-score settings: `proximity_ignore = 4`, `control_depth = True`, mean.
pub(crate) fn seed_vertical_options() -> VerticalOptions {
    VerticalOptions { proximity_ignore: 4, control_depth: true, score_type: ScoreType::Mean }
}

/// Statistics of one head (see the module doc for the definitions); field names are the seed's
/// column names.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VaHeadStats {
    pub mean_va_vert: f64,
    pub mean_nonva_vert: f64,
    pub delta_va_vert: f64,
    pub mean_in_va: f64,
    pub mean_in_nonva: f64,
    pub lift_in_va: f64,
    pub mean_out_va: f64,
    pub mean_va_to_va: f64,
    /// The vertical scores behind `delta_va_vert` (length N; the seed's `vert_scores`).
    pub vert_scores: Vec<f64>,
}

/// The seed's `safe_mean`: NaN for no values, else `np.nanmean` in float64 (NaN when all are NaN).
pub fn safe_mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    np_nanmean(values)
}

/// The seed's trim: `A[1:-1, 1:-1]` and `mask[1:-1]` when `n ≥ 3`, otherwise both unchanged.
/// Returns `(matrix, n, mask)`; index `k` of the result is sentence `k + 1` when trimmed.
pub fn trim_ends(matrix: &[f32], n: usize, mask: &[bool]) -> Result<(Vec<f32>, usize, Vec<bool>)> {
    check_sizes(matrix, n, mask)?;
    if n < 3 {
        return Ok((matrix.to_vec(), n, mask.to_vec()));
    }
    let k = n - 2;
    let mut trimmed = Vec::with_capacity(k * k);
    for i in 1..=k {
        trimmed.extend_from_slice(&matrix[i * n + 1..i * n + 1 + k]);
    }
    Ok((trimmed, k, mask[1..n - 1].to_vec()))
}

fn check_sizes(matrix: &[f32], n: usize, mask: &[bool]) -> Result<()> {
    if matrix.len() != n * n || mask.len() != n {
        return Err(Error::invalid(format!(
            "VA statistics: {} matrix values and a mask of {} for {n} sentences",
            matrix.len(),
            mask.len()
        )));
    }
    Ok(())
}

/// `safe_mean(A[rows][:, cols])`: the selected block in row-major order, as float64.
fn block_mean(matrix: &[f32], n: usize, rows: &[bool], cols: &[bool]) -> f64 {
    let mut values = Vec::new();
    for i in (0..n).filter(|&i| rows[i]) {
        values.extend((0..n).filter(|&j| cols[j]).map(|j| f64::from(matrix[i * n + j])));
    }
    safe_mean(&values)
}

/// `safe_mean(vert[mask])` minus `safe_mean(vert[~mask])`, and the two terms.
pub fn delta_from_scores(vert_scores: &[f64], mask: &[bool]) -> (f64, f64, f64) {
    let pick = |want: bool| -> Vec<f64> {
        vert_scores.iter().zip(mask).filter(|(_, &m)| m == want).map(|(&v, _)| v).collect()
    };
    let (va, non) = (safe_mean(&pick(true)), safe_mean(&pick(false)));
    (va - non, va, non)
}

/// The seed's `compute_va_stats_for_head(avg_mat, va_mask, proximity_ignore)` on a row-major
/// `n × n` matrix, with the vertical-score settings given (the seed's are
/// `seed_vertical_options`).
pub fn compute_va_stats_for_head(
    matrix: &[f32],
    n: usize,
    mask: &[bool],
    vertical: &VerticalOptions,
) -> Result<VaHeadStats> {
    check_sizes(matrix, n, mask)?;
    let non: Vec<bool> = mask.iter().map(|&m| !m).collect();
    let vert_scores = vertical_scores(matrix, n, vertical)?.values;
    let (delta_va_vert, mean_va_vert, mean_nonva_vert) = delta_from_scores(&vert_scores, mask);
    let mean_in_va = block_mean(matrix, n, &non, mask);
    let mean_in_nonva = block_mean(matrix, n, &non, &non);
    let mean_out_va = block_mean(matrix, n, mask, &non);
    let mean_va_to_va = block_mean(matrix, n, mask, mask);
    let lift_in_va = if mean_in_va.is_finite() && mean_in_nonva.is_finite() && mean_in_nonva != 0.0 {
        mean_in_va / mean_in_nonva
    } else {
        f64::NAN
    };
    Ok(VaHeadStats {
        mean_va_vert,
        mean_nonva_vert,
        delta_va_vert,
        mean_in_va,
        mean_in_nonva,
        lift_in_va,
        mean_out_va,
        mean_va_to_va,
        vert_scores,
    })
}
