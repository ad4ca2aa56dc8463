//! Vertical scores of a sentence-averaged matrix: how much attention each sentence receives from
//! later sentences (upstream `get_vertical_scores`, `attn_funcs.py`).
//!
//! With `p = proximity_ignore`, a cell `M[i,j]` is *valid* when `j ≤ i`, `i − j ≥ p` and the input
//! is not NaN (input NaNs count as missing everywhere). Then
//! `v_j = agg{ x[i,j] : i ≥ j + p, x[i,j] valid }` with `agg` = nanmean or nanmedian, where
//! `x = M` or, with `control_depth`, the within-row average rank of `M[i,j]` among row i's valid
//! cells divided by their count (ties get the mean rank, scipy `rankdata(method="average")`).
//!
//! Upstream behaviour reproduced: the last `min(p, n)` scores are NaN; an empty or all-NaN column
//! gives NaN; the result keeps numpy's dtype — float32 for float32 input without depth control,
//! float64 with it — and float32 means are computed as numpy does (see [`super::numpy`]), so they
//! match to the bit.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::numpy::{np_nanmean, np_nanmedian, NpFloat};
use crate::io::npy;
use crate::{Error, Result};

/// How a column of valid cells is aggregated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScoreType {
    /// `np.nanmean` (upstream `score_type="mean"`).
    #[default]
    Mean,
    /// `np.nanmedian` (upstream `score_type="median"`).
    Median,
}
crate::model::named_values!(ScoreType, "score type", { Mean => "mean", Median => "median" });

/// Parameters of [`vertical_scores`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerticalOptions {
    /// Rows closer than this to the column (`i − j < p`) are ignored.
    pub proximity_ignore: usize,
    /// Rank-normalise each row (`rankdata / valid count`) before aggregating.
    pub control_depth: bool,
    pub score_type: ScoreType,
}

impl Default for VerticalOptions {
    /// What every caller in the released pipeline passes: `p = 4`, no depth control, mean.
    fn default() -> Self {
        VerticalOptions { proximity_ignore: 4, control_depth: false, score_type: ScoreType::Mean }
    }
}

/// numpy dtype of a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    Float32,
    Float64,
}

impl Dtype {
    pub fn of<T: NpFloat>() -> Dtype {
        if T::DTYPE == "float32" {
            Dtype::Float32
        } else {
            Dtype::Float64
        }
    }
}

/// Vertical scores with the dtype numpy would give them. Values are stored as f64; when `dtype`
/// is `Float32` each value is exactly a float32 (widening is exact).
#[derive(Debug, Clone, PartialEq)]
pub struct VerticalScores {
    pub values: Vec<f64>,
    pub dtype: Dtype,
}

impl VerticalScores {
    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Each value with its dtype, for JSON output.
    pub fn numpy_values(&self) -> Vec<NumpyValue> {
        self.values.iter().map(|&value| NumpyValue { value, dtype: self.dtype }).collect()
    }
}

impl Serialize for VerticalScores {
    /// A JSON array as numpy would print it: `null` for NaN, float32 values in their shortest
    /// float32 form (`0.065`, not `0.06499999761581421`).
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_seq(self.numpy_values())
    }
}

/// One value with its numpy dtype; serialises as `null` (NaN), a float32 or a float64 number.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NumpyValue {
    pub value: f64,
    pub dtype: Dtype,
}

impl Serialize for NumpyValue {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        if self.value.is_nan() {
            serializer.serialize_none()
        } else if self.dtype == Dtype::Float32 {
            serializer.serialize_f32(self.value as f32)
        } else {
            serializer.serialize_f64(self.value)
        }
    }
}

/// Vertical scores of a row-major `n × n` float32 matrix (the cached dtype).
pub fn vertical_scores(matrix: &[f32], n: usize, options: &VerticalOptions) -> Result<VerticalScores> {
    check_square(matrix.len(), n)?;
    Ok(vertical_scores_generic(matrix, n, options))
}

/// Vertical scores of a row-major `n × n` float64 matrix (results are float64, as in numpy).
pub fn vertical_scores_f64(matrix: &[f64], n: usize, options: &VerticalOptions) -> Result<VerticalScores> {
    check_square(matrix.len(), n)?;
    Ok(vertical_scores_generic(matrix, n, options))
}

/// Vertical scores of the square float32 or float64 matrix in the `.npy` file `path` (float32
/// and float64 results as [`vertical_scores`] and [`vertical_scores_f64`] give them).
pub fn vertical_scores_npy(path: &Path, options: &VerticalOptions) -> Result<VerticalScores> {
    let array = npy::read(path)?;
    let n = match array.shape.as_slice() {
        [a, b] if a == b => *a,
        shape => return Err(Error::format(path, format!("shape {shape:?} is not a square matrix"))),
    };
    match &array.data {
        npy::NpyData::F32(values) => vertical_scores(values, n, options),
        npy::NpyData::F64(values) => vertical_scores_f64(values, n, options),
    }
}

fn check_square(len: usize, n: usize) -> Result<()> {
    if len != n * n {
        return Err(Error::invalid(format!("vertical scores: {len} values for a {n}×{n} matrix")));
    }
    Ok(())
}

pub(crate) fn vertical_scores_generic<T: NpFloat>(m: &[T], n: usize, options: &VerticalOptions) -> VerticalScores {
    let p = options.proximity_ignore;
    let valid = |i: usize, j: usize| j <= i && i - j >= p && !m[i * n + j].is_nan();
    let column_rows = |j: usize| (j + p).min(n)..n;

    if options.control_depth {
        let ranked = depth_ranks(m, n, &valid);
        let values = (0..n)
            .map(|j| {
                let column: Vec<f64> = column_rows(j).map(|i| ranked[i * n + j]).collect();
                aggregate(&column, options.score_type)
            })
            .collect();
        VerticalScores { values, dtype: Dtype::Float64 }
    } else {
        let values = (0..n)
            .map(|j| {
                // Rows i ≥ j + p are exactly the valid ones, apart from input NaNs.
                let column: Vec<T> = column_rows(j).map(|i| m[i * n + j]).collect();
                aggregate(&column, options.score_type).to_f64()
            })
            .collect();
        VerticalScores { values, dtype: Dtype::of::<T>() }
    }
}

fn aggregate<T: NpFloat>(column: &[T], score_type: ScoreType) -> T {
    match score_type {
        ScoreType::Mean => np_nanmean(column),
        ScoreType::Median => np_nanmedian(column),
    }
}

/// `rankdata(masked, axis=1, method="average", nan_policy="omit") / valid_count_per_row`, as
/// float64 with NaN outside the valid cells.
fn depth_ranks<T: NpFloat>(m: &[T], n: usize, valid: &dyn Fn(usize, usize) -> bool) -> Vec<f64> {
    let mut ranked = vec![f64::NAN; n * n];
    let mut cells: Vec<usize> = Vec::with_capacity(n);
    for i in 0..n {
        cells.clear();
        cells.extend((0..n).filter(|&j| valid(i, j)));
        let count = cells.len();
        if count == 0 {
            continue;
        }
        let row = &m[i * n..(i + 1) * n];
        cells.sort_by(|&a, &b| row[a].partial_cmp(&row[b]).expect("valid cells are not NaN"));
        let mut start = 0;
        while start < count {
            let mut end = start + 1;
            while end < count && row[cells[end]] == row[cells[start]] {
                end += 1;
            }
            // Positions start+1 ..= end share their mean rank.
            let rank = 0.5 * ((start + 1 + end) as f64);
            for &j in &cells[start..end] {
                ranked[i * n + j] = rank / count as f64;
            }
            start = end;
        }
    }
    ranked
}
