//! The decoder's guards against non-finite values: a NaN or infinity in the residual stream or in
//! the attention probabilities stops the forward pass with an error naming the hook point (or the
//! layer, head and query position) instead of flowing on into cached results.

use candle_core::{DType, Tensor, D};

use crate::cpu;
use crate::hooks::HookPoint;
use crate::{Error, Result};

/// A NaN or infinity in the residual stream (NaN weights, a NaN block scale in a quantised file,
/// an overflow) would otherwise flow into softmax as uniform or NaN attention and be cached as a
/// result: stop the forward pass with the layer's hook point instead. One pass over `[B, L, d]`
/// per layer, small beside the layer's products.
pub(super) fn ensure_finite(x: &Tensor, point: HookPoint) -> Result<()> {
    let finite = if x.device().is_cpu() && x.dtype() == DType::F32 {
        // The residual stream on the CPU: one branch-free pass over its values.
        cpu::with_cpu_f32(&x.contiguous()?, |v| v.iter().fold(true, |ok, x| ok & x.is_finite()))?
    } else {
        // Elsewhere one reduction: NaN and infinities propagate into the sum.
        x.to_dtype(DType::F32)?.sum_all()?.to_scalar::<f32>()?.is_finite()
    };
    if finite {
        Ok(())
    } else {
        Err(non_finite(point))
    }
}

/// Candle's softmax (the hooked path, GPUs) turns a NaN or infinite score into a row of NaN:
/// one reduction of the block's row sums `[B, H, rows]` finds it (on a GPU, a small reduction and
/// one scalar copied back per block, beside the block's two matrix products); only on failure are
/// the row sums read to name the head and the query position (rows start at `first`).
pub(super) fn ensure_finite_probabilities(probs: &Tensor, layer: usize, first: usize) -> Result<()> {
    let row_sums = probs.sum(D::Minus1)?;
    if row_sums.sum_all()?.to_scalar::<f32>()?.is_finite() {
        return Ok(());
    }
    let (_, heads, rows) = row_sums.dims3()?;
    let sums = row_sums.flatten_all()?.to_vec1::<f32>()?;
    let bad = sums.iter().position(|s| !s.is_finite()).unwrap_or(0);
    Err(cpu::non_finite_scores(layer, bad / rows % heads, first + bad % rows))
}

pub(super) fn non_finite(point: HookPoint) -> Error {
    Error::invalid(format!(
        "non-finite values (NaN or infinity) at {point}: the weights or config values (rms_norm_eps, rope_theta) are corrupt"
    ))
}
