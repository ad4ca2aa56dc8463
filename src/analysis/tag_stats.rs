//! Per-head statistics of attention to and from tagged sentences (the VA analysis: "va" = the
//! sentences carrying the chosen tag, `verbalized_evaluation_awareness` by default).
//!
//! The VA seed notebook itself is not available; these are the definitions used here, on one
//! head's sentence-averaged matrix `M` (N×N) and a tag mask:
//!
//! 1. **Trim** ([`TagStatsOptions::trim`], the notebook's `[1:-1]`): when on, the first and last
//!    sentence are removed from `M` (rows and columns) and from the mask before anything else.
//! 2. **Valid cells**, as for vertical scores (spec §7): `(i, j)` with `j ≤ i`,
//!    `i − j ≥ proximity_ignore` and `M[i,j]` not NaN.
//! 3. `vert_va` / `vert_nonva`: mean of the vertical scores ([`vertical_scores`] with the given
//!    options, on the trimmed matrix) over tagged / untagged sentences, NaN scores skipped;
//!    `delta_va_vert = vert_va − vert_nonva`.
//! 4. `mean_in_va`: mean of `M[i,j]` over valid cells whose **column** j is tagged — attention
//!    tagged sentences *receive* from later sentences outside the proximity band;
//!    `mean_in_nonva`: the same for untagged columns; `lift = mean_in_va / mean_in_nonva`.
//! 5. `mean_out_va`: mean of `M[i,j]` over valid cells whose **row** i is tagged — attention
//!    tagged sentences *pay* to earlier sentences.
//! 6. `mean_va_to_va`: mean over valid cells whose row and column are both tagged.
//!
//! Raw attention values (not depth ranks) enter 4–6; means are in f64; an empty set gives NaN.

use rayon::prelude::*;
use serde::Serialize;

use crate::attention::SentenceAttention;
use crate::scores::{vertical_scores, VerticalOptions};
use crate::{Error, Result};

/// Options of [`tag_stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TagStatsOptions {
    /// Vertical-score parameters; `proximity_ignore` also defines the valid cells.
    pub vertical: VerticalOptions,
    /// Drop the first and last sentence (`M[1:-1, 1:-1]`) first.
    pub trim: bool,
}

impl Default for TagStatsOptions {
    /// The VA notebook's settings: `p = 4`, depth control on, mean, trim on.
    fn default() -> Self {
        TagStatsOptions {
            vertical: VerticalOptions { proximity_ignore: 4, control_depth: true, score_type: crate::scores::ScoreType::Mean },
            trim: true,
        }
    }
}

/// Statistics of one head (see the module doc for the definitions).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TagStats {
    /// Sentences analysed (after the trim).
    pub n_sentences: usize,
    /// Tagged sentences among them.
    pub n_va: usize,
    pub vert_va: f64,
    pub vert_nonva: f64,
    pub delta_va_vert: f64,
    pub mean_in_va: f64,
    pub mean_in_nonva: f64,
    pub lift: f64,
    pub mean_out_va: f64,
    pub mean_va_to_va: f64,
}

/// Running mean in f64 (NaN when empty).
#[derive(Default, Clone, Copy)]
struct Mean {
    sum: f64,
    count: usize,
}

impl Mean {
    fn add(&mut self, v: f64) {
        self.sum += v;
        self.count += 1;
    }
    fn get(self) -> f64 {
        if self.count == 0 {
            f64::NAN
        } else {
            self.sum / self.count as f64
        }
    }
}

/// Statistics of one row-major `n × n` matrix with tag mask `mask` (length n).
pub fn tag_stats(matrix: &[f32], n: usize, mask: &[bool], options: &TagStatsOptions) -> Result<TagStats> {
    if matrix.len() != n * n || mask.len() != n {
        return Err(Error::invalid(format!(
            "tag stats: {} values and a mask of {} for {n} sentences",
            matrix.len(),
            mask.len()
        )));
    }
    let (m, mask, n) = if options.trim {
        let k = n.saturating_sub(2);
        let mut trimmed = Vec::with_capacity(k * k);
        for i in 1..=k {
            trimmed.extend_from_slice(&matrix[i * n + 1..i * n + 1 + k]);
        }
        (trimmed, mask.get(1..1 + k).unwrap_or(&[]).to_vec(), k)
    } else {
        (matrix.to_vec(), mask.to_vec(), n)
    };
    let p = options.vertical.proximity_ignore;

    let scores = vertical_scores(&m, n, &options.vertical)?;
    let (mut vert_va, mut vert_nonva) = (Mean::default(), Mean::default());
    for (j, &v) in scores.values.iter().enumerate() {
        if !v.is_nan() {
            if mask[j] { vert_va.add(v) } else { vert_nonva.add(v) }
        }
    }

    let (mut in_va, mut in_nonva, mut out_va, mut va_to_va) = (Mean::default(), Mean::default(), Mean::default(), Mean::default());
    for i in 0..n {
        for j in 0..=i {
            let value = m[i * n + j];
            if i - j < p || value.is_nan() {
                continue;
            }
            let value = f64::from(value);
            if mask[j] { in_va.add(value) } else { in_nonva.add(value) }
            if mask[i] {
                out_va.add(value);
                if mask[j] {
                    va_to_va.add(value);
                }
            }
        }
    }
    let (vert_va, vert_nonva) = (vert_va.get(), vert_nonva.get());
    let (mean_in_va, mean_in_nonva) = (in_va.get(), in_nonva.get());
    Ok(TagStats {
        n_sentences: n,
        n_va: mask.iter().filter(|&&t| t).count(),
        vert_va,
        vert_nonva,
        delta_va_vert: vert_va - vert_nonva,
        mean_in_va,
        mean_in_nonva,
        lift: mean_in_va / mean_in_nonva,
        mean_out_va: out_va.get(),
        mean_va_to_va: va_to_va.get(),
    })
}

/// [`tag_stats`] of every head, `[layers × heads]` in flat order `l·H + h`.
pub fn head_tag_stats(attention: &SentenceAttention, mask: &[bool], options: &TagStatsOptions) -> Result<Vec<TagStats>> {
    let heads = attention.heads();
    (0..attention.layers() * heads)
        .into_par_iter()
        .map(|index| tag_stats(attention.matrix(index / heads, index % heads), attention.n(), mask, options))
        .collect()
}
