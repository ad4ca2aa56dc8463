//! Element-wise kernels on f32 rows: `e^x` for softmax arguments, softmax rows and
//! `silu(g) · u`, as scalar code and as AVX-512F / AVX2 vectors doing the same per-element
//! arithmetic (the same fused multiply-adds, `mul_add` in the scalar code), so that a value does
//! not depend on the path that computed it.

use candle_core::{DType, Tensor};

use super::{with_cpu_f32, Kernels};
use crate::Result;

/// `silu(gate) · up`, on the CPU in one vectorised pass over f32 data ([`silu_mul_row`]). candle's
/// silu calls libm's `expf` one lane at a time and its multiply is a second pass: together 0.3 s
/// of a 3k-token SmolLM2 forward on 2 AVX2 cores, about twice this pass.
pub(crate) fn silu_mul(kernels: Kernels, gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    use rayon::prelude::*;
    if !(gate.device().is_cpu() && gate.dtype() == DType::F32 && up.dtype() == DType::F32 && gate.shape() == up.shape()) {
        return Ok((candle_nn::ops::silu(gate)? * up)?);
    }
    let (gate, up) = (gate.contiguous()?, up.contiguous()?);
    let mut out = vec![0f32; gate.elem_count()];
    with_cpu_f32(&gate, |g| {
        with_cpu_f32(&up, |u| {
            out.par_chunks_mut(1 << 14).enumerate().for_each(|(c, chunk)| {
                let start = c << 14;
                silu_mul_row(kernels, &g[start..start + chunk.len()], &u[start..start + chunk.len()], chunk);
            })
        })
    })??;
    Ok(Tensor::from_vec(out, gate.shape(), gate.device())?)
}

/// `acc[i] += xs[i] as f64` (the sentence averager's column sums), with the widest vector unit
/// the CPU has: element-wise adds, so every path gives the same bits. Left to the baseline
/// target the loop runs two lanes wide.
pub fn add_widened(acc: &mut [f64], xs: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if super::avx512_enabled() {
            // SAFETY: the CPU has the feature the function is compiled for.
            return unsafe { add_widened_avx512(acc, xs) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: as above.
            return unsafe { add_widened_avx2(acc, xs) };
        }
    }
    add_widened_portable(acc, xs)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn add_widened_avx512(acc: &mut [f64], xs: &[f32]) {
    add_widened_portable(acc, xs)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn add_widened_avx2(acc: &mut [f64], xs: &[f32]) {
    add_widened_portable(acc, xs)
}

#[inline(always)]
fn add_widened_portable(acc: &mut [f64], xs: &[f32]) {
    for (acc, &x) in acc.iter_mut().zip(xs) {
        *acc += f64::from(x);
    }
}

/// `e^x` for `x <= 0` (softmax arguments after subtracting the row max), branch-free so the loop
/// vectorises: `x = n·ln2 + r` with a two-part ln2 (Cody–Waite), a degree-6 polynomial for `e^r` on
/// `|r| <= ln2/2` in fused multiply-adds, and `2^n` put into the exponent bits. Relative error
/// below 3e-7 (tested against `f32::exp`); arguments below -87 are clamped (`e^-87` ≈ 1.6e-38
/// instead of a subnormal). The vector versions do the same fused steps, so each lane gives these
/// bits; FMA took the softmax from 0.34 to 0.26 ns per probability on one Zen 5 core (0.21 with
/// its masked last vector). Without hardware FMA (the portable build) `mul_add` is libm's
/// `fmaf`: slow, the same bits.
#[inline(always)]
fn exp_nonpositive(x: f32) -> f32 {
    use exp_constants::*;
    // Not `f32::max`, which drops a NaN: a NaN argument must stay NaN so that a NaN score turns
    // the softmax row's sum NaN (the check [`softmax_row`]'s callers make) instead of a
    // probability of e^-87.
    let x = if x < -87.0 { -87.0 } else { x };
    // Adding and subtracting 1.5·2^23 rounds to the nearest integer with plain adds; `f32::round`
    // would be a libm call per element on baseline x86-64 and stop the loop from vectorising.
    let n = x.mul_add(std::f32::consts::LOG2_E, ROUND) - ROUND;
    let r = n.mul_add(-LN2_LO, n.mul_add(-LN2_HI, x));
    let p = POLY[1..].iter().fold(POLY[0], |p, &c| p.mul_add(r, c));
    // 1 + r + r²·p = 1 + r·(1 + r·p)
    let er = r.mul_add(r.mul_add(p, 1.0), 1.0);
    er * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// Constants of [`exp_nonpositive`], shared with its vector versions.
mod exp_constants {
    pub(super) const LN2_HI: f32 = 0.693_359_4;
    pub(super) const LN2_LO: f32 = -2.121_944_4e-4;
    pub(super) const ROUND: f32 = 12_582_912.0;
    /// Taylor-like coefficients of `(e^r - 1 - r) / r²` refined for the interval (minimax).
    pub(super) const POLY: [f32; 6] = [1.987_569_1e-4, 1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 0.166_666_65, 0.5];
}

/// `y = silu(g) · u = g / (1 + e^-g) · u`, candle's and PyTorch's expression, with `e^-g` from
/// [`exp_nonpositive`]'s polynomial (exact to a few ulp for arguments up to 88, where `-g` is
/// clamped: beyond it `y` is below 1e-36 either way). Vector and scalar lanes do the same
/// arithmetic: a value does not depend on where it sits in the slice. The scalar code only with
/// [`Kernels::portable`].
pub(super) fn silu_mul_row(kernels: Kernels, g: &[f32], u: &[f32], y: &mut [f32]) {
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    {
        if !kernels.portable && super::avx512_enabled() {
            // SAFETY: the CPU has the feature the function is compiled for.
            done = unsafe { simd::silu_mul_avx512(g, u, y) };
        } else if !kernels.portable && has_avx2_fma() {
            // SAFETY: as above.
            done = unsafe { simd::silu_mul_avx2(g, u, y) };
        }
    }
    for ((y, &g), &u) in y[done..].iter_mut().zip(&g[done..]).zip(&u[done..]) {
        *y = silu_mul_scalar(g, u);
    }
}

#[inline(always)]
fn silu_mul_scalar(g: f32, u: f32) -> f32 {
    g / (1.0 + exp_nonpositive((-g).min(88.0))) * u
}

/// `dst = softmax(scale · src)` with the widest vector unit the CPU has. Every path does the same
/// per-element arithmetic (`exp_nonpositive(x·scale - max·scale)`, the argument in one fused
/// multiply-subtract); only the order in which the row sum is accumulated differs (relative
/// differences of order 1e-7). Like PyTorch's CPU softmax, rows are normalised by multiplying
/// with `1 / sum` (a division per element cost measurably more).
///
/// Returns the row's sum of exponentials before the division: NaN or infinite exactly when a
/// score was NaN or `+inf` (NaN arguments propagate through the exponential; an infinite
/// maximum turns every argument NaN or `-inf`) or every score was `-inf`. Callers check it with
/// [`f32::is_finite`]: the guard costs nothing beyond the softmax's own passes, where a corrupt
/// weight would otherwise give a flat row of probabilities. The scalar code only with
/// [`Kernels::portable`].
pub(super) fn softmax_row(kernels: Kernels, row: &mut [f32], scale: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if !kernels.portable {
        if super::avx512_enabled() {
            // SAFETY: the CPU has the feature the function is compiled for.
            return unsafe { simd::softmax_row_avx512(row, scale) };
        }
        if has_avx2_fma() {
            // SAFETY: as above.
            return unsafe { simd::softmax_row_avx2(row, scale) };
        }
    }
    softmax_row_portable(row, scale)
}

/// AVX2 with FMA: what the eight-lane versions are compiled for.
#[cfg(target_arch = "x86_64")]
fn has_avx2_fma() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

/// Explicit vector versions of the softmax row: the compiler does not vectorise the saturating
/// float→int conversion of the scalar `exp`, so left to itself the loop runs one lane at a time.
#[cfg(target_arch = "x86_64")]
mod simd {
    use super::exp_constants::*;
    use super::exp_nonpositive;
    use std::arch::x86_64::*;

    /// [`exp_nonpositive`] on sixteen lanes. `2^n` is applied by `scalef`, which equals the scalar
    /// multiply by the exponent bits (`n >= -126` after the clamp: a normal power of two).
    #[target_feature(enable = "avx512f,fma")]
    pub(super) fn exp16(x: __m512) -> __m512 {
        // The clamp as the first operand: `max` returns its second operand when either is NaN,
        // so a NaN argument stays NaN (see `softmax_row`'s return value).
        let x = _mm512_max_ps(_mm512_set1_ps(-87.0), x);
        let round = _mm512_set1_ps(ROUND);
        let n = _mm512_sub_ps(_mm512_fmadd_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E), round), round);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), x));
        let mut p = _mm512_set1_ps(POLY[0]);
        for c in &POLY[1..] {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(*c));
        }
        let one = _mm512_set1_ps(1.0);
        let er = _mm512_fmadd_ps(r, _mm512_fmadd_ps(r, p, one), one);
        _mm512_scalef_ps(er, n)
    }

    /// [`super::softmax_row`] on sixteen lanes; the last partial vector is masked (a scalar tail
    /// of up to fifteen elements cost a tenth of the time on causal rows).
    #[target_feature(enable = "avx512f,fma")]
    pub(super) fn softmax_row_avx512(row: &mut [f32], scale: f32) -> f32 {
        const W: usize = 16;
        let n = row.len();
        let body = n - n % W;
        let tail: __mmask16 = ((1u32 << (n % W)) - 1) as u16;
        let d = row.as_mut_ptr();
        let mut vmax = _mm512_set1_ps(f32::NEG_INFINITY);
        for i in (0..body).step_by(W) {
            // SAFETY: i + W <= body <= row.len().
            vmax = _mm512_max_ps(vmax, unsafe { _mm512_loadu_ps(d.add(i)) });
        }
        // SAFETY (the tail's masked accesses here and below): masked-off lanes are neither read
        // nor written (no fault either); the others lie inside the row.
        vmax = _mm512_max_ps(vmax, unsafe { _mm512_mask_loadu_ps(vmax, tail, d.add(body)) });
        let max = _mm512_reduce_max_ps(vmax);
        let (vscale, vmax) = (_mm512_set1_ps(scale), _mm512_set1_ps(max * scale));
        let mut vsum = _mm512_setzero_ps();
        for i in (0..body).step_by(W) {
            // SAFETY: i + W <= body <= row.len().
            let x = unsafe { _mm512_loadu_ps(d.add(i)) };
            let e = exp16(_mm512_fmsub_ps(x, vscale, vmax));
            vsum = _mm512_add_ps(vsum, e);
            unsafe { _mm512_storeu_ps(d.add(i), e) };
        }
        let x = unsafe { _mm512_maskz_loadu_ps(tail, d.add(body)) };
        let e = exp16(_mm512_fmsub_ps(x, vscale, vmax));
        vsum = _mm512_mask_add_ps(vsum, tail, vsum, e);
        unsafe { _mm512_mask_storeu_ps(d.add(body), tail, e) };
        let sum = _mm512_reduce_add_ps(vsum);
        let vinv = _mm512_set1_ps(1.0 / sum);
        for i in (0..body).step_by(W) {
            // SAFETY: as above.
            unsafe { _mm512_storeu_ps(d.add(i), _mm512_mul_ps(_mm512_loadu_ps(d.add(i)), vinv)) };
        }
        unsafe { _mm512_mask_storeu_ps(d.add(body), tail, _mm512_mul_ps(_mm512_maskz_loadu_ps(tail, d.add(body)), vinv)) };
        sum
    }

    /// [`exp_nonpositive`] on eight lanes.
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn exp8(x: __m256) -> __m256 {
        // As in `exp16`: a NaN argument stays NaN.
        let x = _mm256_max_ps(_mm256_set1_ps(-87.0), x);
        let round = _mm256_set1_ps(ROUND);
        let n = _mm256_sub_ps(_mm256_fmadd_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E), round), round);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), x));
        let mut p = _mm256_set1_ps(POLY[0]);
        for c in &POLY[1..] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(*c));
        }
        let one = _mm256_set1_ps(1.0);
        let er = _mm256_fmadd_ps(r, _mm256_fmadd_ps(r, p, one), one);
        let bits = _mm256_slli_epi32::<23>(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)));
        _mm256_mul_ps(er, _mm256_castsi256_ps(bits))
    }

    /// [`super::silu_mul_row`] over the longest multiple of 16 elements; returns how many it did.
    #[target_feature(enable = "avx512f,fma")]
    pub(super) fn silu_mul_avx512(g: &[f32], u: &[f32], y: &mut [f32]) -> usize {
        let n = y.len().min(g.len()).min(u.len());
        let body = n - n % 16;
        let (one, max_arg) = (_mm512_set1_ps(1.0), _mm512_set1_ps(88.0));
        for i in (0..body).step_by(16) {
            // SAFETY: i + 16 <= body <= the length of each slice.
            let (gv, uv) = unsafe { (_mm512_loadu_ps(g.as_ptr().add(i)), _mm512_loadu_ps(u.as_ptr().add(i))) };
            let negated = _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(gv), _mm512_set1_epi32(i32::MIN)));
            let e = exp16(_mm512_min_ps(negated, max_arg));
            let out = _mm512_mul_ps(_mm512_div_ps(gv, _mm512_add_ps(one, e)), uv);
            unsafe { _mm512_storeu_ps(y.as_mut_ptr().add(i), out) };
        }
        body
    }

    /// [`super::silu_mul_row`] over the longest multiple of eight elements; returns how many it did.
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn silu_mul_avx2(g: &[f32], u: &[f32], y: &mut [f32]) -> usize {
        let n = y.len().min(g.len()).min(u.len());
        let body = n - n % 8;
        let (one, sign, max_arg) = (_mm256_set1_ps(1.0), _mm256_set1_ps(-0.0), _mm256_set1_ps(88.0));
        for i in (0..body).step_by(8) {
            // SAFETY: i + 8 <= body <= the length of each slice.
            let (gv, uv) = unsafe { (_mm256_loadu_ps(g.as_ptr().add(i)), _mm256_loadu_ps(u.as_ptr().add(i))) };
            let e = exp8(_mm256_min_ps(_mm256_xor_ps(gv, sign), max_arg));
            let out = _mm256_mul_ps(_mm256_div_ps(gv, _mm256_add_ps(one, e)), uv);
            unsafe { _mm256_storeu_ps(y.as_mut_ptr().add(i), out) };
        }
        body
    }

    #[target_feature(enable = "avx2")]
    fn hmax8(v: __m256) -> f32 {
        let mut lanes = [0f32; 8];
        // SAFETY: 8 floats into an 8-float array.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), v) };
        lanes.iter().fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m })
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn softmax_row_avx2(row: &mut [f32], scale: f32) -> f32 {
        const W: usize = 8;
        let n = row.len();
        let body = n - n % W;
        let d = row.as_mut_ptr();
        let mut vmax = _mm256_set1_ps(f32::NEG_INFINITY);
        for i in (0..body).step_by(W) {
            // SAFETY: i + W <= body <= row.len().
            vmax = _mm256_max_ps(vmax, unsafe { _mm256_loadu_ps(d.add(i)) });
        }
        let max = row[body..].iter().fold(hmax8(vmax), |m, &x| if x > m { x } else { m });
        let (vscale, vmax) = (_mm256_set1_ps(scale), _mm256_set1_ps(max * scale));
        let mut vsum = _mm256_setzero_ps();
        for i in (0..body).step_by(W) {
            // SAFETY: i + W <= body <= row.len().
            let x = unsafe { _mm256_loadu_ps(d.add(i)) };
            let e = exp8(_mm256_fmsub_ps(x, vscale, vmax));
            vsum = _mm256_add_ps(vsum, e);
            unsafe { _mm256_storeu_ps(d.add(i), e) };
        }
        let mut lanes = [0f32; W];
        // SAFETY: 8 floats into an 8-float array.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), vsum) };
        let mut sum: f32 = lanes.iter().sum();
        for x in &mut row[body..] {
            *x = exp_nonpositive(x.mul_add(scale, -(max * scale)));
            sum += *x;
        }
        let inv = 1.0 / sum;
        let vinv = _mm256_set1_ps(inv);
        for i in (0..body).step_by(W) {
            // SAFETY: as above.
            unsafe { _mm256_storeu_ps(d.add(i), _mm256_mul_ps(_mm256_loadu_ps(d.add(i)), vinv)) };
        }
        for x in &mut row[body..] {
            *x *= inv;
        }
        sum
    }
}

/// Scalar fallback; independent lanes let the max and the sum vectorise where the compiler can.
fn softmax_row_portable(row: &mut [f32], scale: f32) -> f32 {
    const LANES: usize = 16;
    let mut lane_max = [f32::NEG_INFINITY; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for (m, &x) in lane_max.iter_mut().zip(c) {
            *m = if x > *m { x } else { *m };
        }
    }
    let mut max = tail.iter().fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m });
    for m in lane_max {
        max = if m > max { m } else { max };
    }
    // scale > 0, so the max of the scaled row is the scaled max.
    let max = max * scale;
    for x in row.iter_mut() {
        *x = exp_nonpositive(x.mul_add(scale, -max));
    }
    let mut lane_sum = [0f32; LANES];
    let chunks = row.chunks_exact(LANES);
    let mut sum: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for (s, &x) in lane_sum.iter_mut().zip(c) {
            *s += x;
        }
    }
    sum += lane_sum.iter().sum::<f32>();
    let inv = 1.0 / sum;
    for x in row.iter_mut() {
        *x *= inv;
    }
    sum
}


#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn fused_silu_mul_matches_f64_reference_everywhere_in_the_slice() {
        let n = 3 * (1 << 14) + 5;
        let mut gate: Vec<f32> = (0..n).map(|i| ((i * 7919 % 2003) as f32 - 1001.0) / 37.0).collect();
        gate[..6].copy_from_slice(&[0.0, -0.0, 100.0, -100.0, 1e-30, -1e-30]);
        let up: Vec<f32> = (0..n).map(|i| ((i * 104729 % 997) as f32 - 498.0) / 91.0).collect();
        let (g, u) = (Tensor::from_vec(gate.clone(), (1, n), &Device::Cpu).unwrap(), Tensor::from_vec(up.clone(), (1, n), &Device::Cpu).unwrap());
        let fused = silu_mul(Kernels::default(), &g, &u).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for ((&y, &g), &u) in fused.iter().zip(&gate).zip(&up) {
            let want = g as f64 / (1.0 + (-(g as f64)).exp()) * u as f64;
            assert!((y as f64 - want).abs() <= 1e-6 * want.abs() + 1e-35, "silu({g}) · {u}: {y} vs {want}");
        }
        // The same value gives the same result in a vector lane and in the scalar tail.
        let mut tail = [0f32; 9];
        silu_mul_row(Kernels::default(), &[gate[7]; 9], &[up[7]; 9], &mut tail);
        assert!(tail.iter().all(|y| y.to_bits() == tail[0].to_bits()));
    }

    #[test]
    fn fast_exp_matches_libm() {
        let mut worst = 0f32;
        for i in 0..200_000 {
            let x = -(i as f32) * 87.0 / 200_000.0;
            let (a, b) = (exp_nonpositive(x), x.exp());
            worst = worst.max(((a - b) / b).abs());
        }
        assert!(worst < 3e-7, "max relative error {worst}");
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert!(exp_nonpositive(-1e4) < 2e-38);
    }

    /// A row of softmax arguments with the cases that matter: ties, a large spread (underflow to
    /// the clamp), negative and positive values, and a length that leaves a scalar tail.
    fn test_row(n: usize) -> Vec<f32> {
        let mut row: Vec<f32> = (0..n).map(|i| ((i * 7919 % 2003) as f32 - 1001.0) / 13.0).collect();
        if n > 4 {
            row[1] = row[0];
            row[3] = -1e4;
        }
        row
    }

    /// Softmax in f64, the reference every path is held to.
    fn softmax_f64(row: &[f32], scale: f32) -> Vec<f64> {
        let max = row.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x as f64 * scale as f64));
        let e: Vec<f64> = row.iter().map(|&x| (x as f64 * scale as f64 - max).exp()).collect();
        let sum: f64 = e.iter().sum();
        e.iter().map(|x| x / sum).collect()
    }

    type SoftmaxFn = fn(&mut [f32], f32) -> f32;

    /// Every softmax variant this CPU runs, the portable one first. A variant the CPU lacks prints
    /// one `SKIP (hardware)` line.
    fn softmax_variants(test: &str) -> Vec<(&'static str, SoftmaxFn)> {
        let mut variants: Vec<(&'static str, SoftmaxFn)> = vec![("portable", softmax_row_portable)];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: only called on a CPU with AVX-512F (checked just above).
                variants.push(("avx512", |row, scale| unsafe { simd::softmax_row_avx512(row, scale) }));
            } else {
                super::super::skip_hardware(&format!("{test}/avx512"), "no AVX-512F on this CPU");
            }
            if has_avx2_fma() {
                // SAFETY: only called on a CPU with AVX2 (checked just above).
                variants.push(("avx2", |row, scale| unsafe { simd::softmax_row_avx2(row, scale) }));
            } else {
                super::super::skip_hardware(&format!("{test}/avx2"), "no AVX2 with FMA on this CPU");
            }
        }
        variants
    }

    #[test]
    fn every_softmax_variant_matches_f64_and_the_portable_path() {
        let scale = 0.125;
        for n in [1, 2, 7, 8, 15, 16, 17, 33, 100, 3001] {
            let row = test_row(n);
            let want = softmax_f64(&row, scale);
            let mut portable = row.clone();
            softmax_row_portable(&mut portable, scale);
            for (name, softmax) in softmax_variants("every_softmax_variant_matches_f64_and_the_portable_path") {
                let mut got = row.clone();
                softmax(&mut got, scale);
                let sum: f64 = got.iter().map(|&x| x as f64).sum();
                assert!((sum - 1.0).abs() < 1e-5, "{name} n={n}: sum {sum}");
                for (i, ((&g, &w), &p)) in got.iter().zip(&want).zip(&portable).enumerate() {
                    assert!((g as f64 - w).abs() <= 2e-6 * w + 1e-30, "{name} n={n} [{i}]: {g} vs f64 {w}");
                    // Same per-element arithmetic; only the order of the row sum differs.
                    assert!((g - p).abs() <= 1e-6 * p.max(1e-30), "{name} n={n} [{i}]: {g} vs portable {p}");
                }
            }
        }
    }

    /// A NaN or `+inf` score anywhere in the row (body or masked tail, first or last) makes every
    /// variant's returned sum non-finite, where the old clamp turned it into a flat row; `-inf`
    /// scores (keys nobody may see) and a row of `f32::MIN` (every key suppressed) stay finite.
    #[test]
    fn every_softmax_variant_reports_a_non_finite_score() {
        let scale = 0.125;
        for name_and_softmax in softmax_variants("every_softmax_variant_reports_a_non_finite_score") {
            let (name, softmax) = name_and_softmax;
            for n in [1, 2, 7, 8, 9, 16, 17, 33, 100] {
                for at in [0, n / 2, n - 1] {
                    for bad in [f32::NAN, f32::INFINITY] {
                        let mut row = test_row(n);
                        row[at] = bad;
                        let sum = softmax(&mut row, scale);
                        assert!(!sum.is_finite(), "{name} n={n}: {bad} at {at} gave a finite sum {sum}");
                    }
                    let mut row = test_row(n);
                    if n > 1 {
                        row[at] = f32::NEG_INFINITY;
                        assert!(softmax(&mut row, scale).is_finite(), "{name} n={n}: -inf at {at}");
                    }
                }
                let mut row = vec![f32::MIN; n];
                assert!(softmax(&mut row, scale).is_finite(), "{name} n={n}: every key suppressed");
            }
        }
    }

    #[test]
    fn vector_exp_equals_scalar_exp_bit_for_bit() {
        let xs: Vec<f32> = (0..4096).map(|i| -(i as f32) * 100.0 / 4096.0).chain([0.0, -0.0, -87.0, -1e30]).collect();
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::*;
            let want: Vec<u32> = xs.iter().map(|&x| exp_nonpositive(x).to_bits()).collect();
            if std::arch::is_x86_feature_detected!("avx512f") {
                for (chunk, want) in xs.chunks_exact(16).zip(want.chunks_exact(16)) {
                    let mut got = [0f32; 16];
                    // SAFETY: AVX-512F checked above; 16 floats in and out.
                    unsafe { _mm512_storeu_ps(got.as_mut_ptr(), simd::exp16(_mm512_loadu_ps(chunk.as_ptr()))) };
                    assert_eq!(got.map(f32::to_bits), want, "avx512 exp of {chunk:?}");
                }
            } else {
                super::super::skip_hardware("vector_exp_equals_scalar_exp_bit_for_bit/avx512", "no AVX-512F on this CPU");
            }
            if has_avx2_fma() {
                for (chunk, want) in xs.chunks_exact(8).zip(want.chunks_exact(8)) {
                    let mut got = [0f32; 8];
                    // SAFETY: AVX2 checked above; 8 floats in and out.
                    unsafe { _mm256_storeu_ps(got.as_mut_ptr(), simd::exp8(_mm256_loadu_ps(chunk.as_ptr()))) };
                    assert_eq!(got.map(f32::to_bits), want, "avx2 exp of {chunk:?}");
                }
            } else {
                super::super::skip_hardware("vector_exp_equals_scalar_exp_bit_for_bit/avx2", "no AVX2 with FMA on this CPU");
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        super::super::skip_hardware("vector_exp_equals_scalar_exp_bit_for_bit", "no x86-64 vector variants here");
    }

    #[test]
    fn vector_silu_equals_scalar_silu_bit_for_bit() {
        let n = 1003;
        let g: Vec<f32> = (0..n).map(|i| ((i * 7919 % 2003) as f32 - 1001.0) / 7.0).collect();
        let u: Vec<f32> = (0..n).map(|i| ((i * 104729 % 997) as f32 - 498.0) / 91.0).collect();
        let scalar: Vec<u32> = g.iter().zip(&u).map(|(&g, &u)| silu_mul_scalar(g, u).to_bits()).collect();
        // One vector variant over the slice: equal to the scalar lanes on what it did.
        #[cfg(target_arch = "x86_64")]
        let check = |variant: unsafe fn(&[f32], &[f32], &mut [f32]) -> usize, width: usize| {
            let mut y = vec![f32::NAN; n];
            // SAFETY: the caller checked the variant's CPU feature.
            let done = unsafe { variant(&g, &u, &mut y) };
            assert_eq!(done, n - n % width);
            let got: Vec<u32> = y[..done].iter().map(|y| y.to_bits()).collect();
            assert_eq!(got, scalar[..done]);
        };
        #[cfg(target_arch = "x86_64")]
        if has_avx2_fma() {
            check(simd::silu_mul_avx2, 8);
            if std::arch::is_x86_feature_detected!("avx512f") {
                check(simd::silu_mul_avx512, 16);
            } else {
                super::super::skip_hardware("vector_silu_equals_scalar_silu_bit_for_bit/avx512", "no AVX-512F on this CPU");
            }
            return;
        }
        super::super::skip_hardware("vector_silu_equals_scalar_silu_bit_for_bit/avx2", "no AVX2 with FMA on this CPU");
    }
}
