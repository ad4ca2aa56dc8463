//! `y = x · wᵀ` for a few rows of `x` (decode steps), reading each weight row once for every row.
//!
//! Each output is summed in f64 and rounded once: f64 keeps these products as close to
//! PyTorch's as its own rounding allows (f32 partial sums in a different order than MKL's
//! measurably were not, on a tiny CODI model with logits near 60), and the sum of one output
//! runs in one fixed order whatever the number of rows, the tiling or the thread count, so a
//! batch of sequences decodes exactly as each sequence alone. That order: eight partial sums
//! (element `i` into lane `i mod 8`) over the whole multiple of eight, the lanes added as
//! `((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7))`, then the remaining elements one by one
//! with fused multiply-adds. The AVX-512 kernel holds the eight lanes in one register, the AVX2
//! kernel in two; both give the same bits.
//!
//! A weight kept at its stored precision (GGUF blocks, bf16) is converted a task's rows at a time
//! into a small per-thread buffer that stays in cache while the kernel reads it ([`super::dequant`]
//! for Q4_1 and Q8_0), instead of bands of megabytes written to memory and read back.

use rayon::prelude::*;

use super::with_cpu_f32;
use crate::stored::StoredMatrix;
use crate::Result;

/// Weight rows per task: 16 rows of a 1536-wide weight are 96 KiB of f32, in L2 beside `x`.
const TASK_ROWS: usize = 16;

/// `out[r · out_dim + o] = Σ_i x[r · in_dim + i] · w[o, i]` for `rows` rows of `x` and the
/// `[out_dim, in_dim]` weight `weight`. Output rows are split across rayon's threads. Needs AVX2
/// and FMA ([`super::sgemm::available`]); a slice shorter than its shape panics.
pub(crate) fn linear_few_rows(x: &[f32], rows: usize, weight: &StoredMatrix, out: &mut [f32]) -> Result<()> {
    let (out_dim, in_dim) = weight.dims();
    assert!(super::sgemm::available(), "{}", super::sgemm::NO_KERNELS);
    assert!(x.len() >= rows * in_dim && out.len() >= rows * out_dim, "linear_few_rows: slices shorter than their shapes");
    if rows == 0 || out_dim == 0 {
        return Ok(());
    }
    // `x` widened once; every weight row reads it.
    let xw: Vec<f64> = x[..rows * in_dim].iter().map(|&v| f64::from(v)).collect();
    // Outputs column-major per task (`[o][r]`), so each task writes one contiguous slice.
    let mut yt = vec![0f32; out_dim * rows];
    let product = |w: &[f32], n_o: usize, yt: &mut [f32]| run_kernel(&xw, rows, in_dim, w, n_o, yt);
    match weight.as_f32() {
        Some(w) => with_cpu_f32(w, |ws| {
            yt.par_chunks_mut(TASK_ROWS * rows).enumerate().for_each(|(task, yt)| {
                let (o0, n_o) = (task * TASK_ROWS, yt.len() / rows);
                product(&ws[o0 * in_dim..(o0 + n_o) * in_dim], n_o, yt)
            })
        })?,
        None => yt.par_chunks_mut(TASK_ROWS * rows).enumerate().try_for_each(|(task, yt)| {
            let (o0, n_o) = (task * TASK_ROWS, yt.len() / rows);
            TASK_WEIGHTS.with_borrow_mut(|buffer| -> Result<()> {
                buffer.resize(n_o * in_dim, 0.0);
                weight.rows_f32(o0..o0 + n_o, buffer)?;
                product(buffer, n_o, yt);
                Ok(())
            })
        })?,
    }
    for (o, y_o) in yt.chunks(rows).enumerate() {
        for (r, &v) in y_o.iter().enumerate() {
            out[r * out_dim + o] = v;
        }
    }
    Ok(())
}

thread_local! {
    /// One task's weight rows converted to f32 (reused across tasks and calls).
    static TASK_WEIGHTS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The widest kernel this CPU runs, over `n_o` weight rows `w` into `yt` (`[o][r]`).
fn run_kernel(xw: &[f64], rows: usize, in_dim: usize, w: &[f32], n_o: usize, yt: &mut [f32]) {
    assert!(xw.len() >= rows * in_dim && w.len() >= n_o * in_dim && yt.len() >= n_o * rows);
    #[cfg(target_arch = "x86_64")]
    {
        if super::avx512_enabled() {
            // SAFETY: the CPU has AVX-512F; the slices hold their shapes (asserted above).
            return unsafe { avx512::rows(xw, rows, in_dim, w, n_o, yt) };
        }
        // SAFETY: `linear_few_rows` asserted AVX2 and FMA; the slices hold their shapes.
        unsafe { avx2::rows(xw, rows, in_dim, w, n_o, yt) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("{}", super::sgemm::NO_KERNELS)
}

/// The last elements of a sum (`in_dim mod 8` of them) after its vector part `s`, one fused
/// multiply-add each, in order.
///
/// # Safety
/// `x` and `w` must be readable from `from` to `to`.
#[inline(always)]
unsafe fn tail(mut s: f64, x: *const f64, w: *const f32, from: usize, to: usize) -> f64 {
    for t in from..to {
        // SAFETY: forwarded from the caller.
        s = unsafe { (*x.add(t)).mul_add(f64::from(*w.add(t)), s) };
    }
    s
}

/// Calls `tile::<R>` for the `R` (1 to 6) that is `$n` (the AVX2 kernel).
macro_rules! dispatch_rows {
    ($n:expr, $tile:ident ( $($arg:expr),* )) => {
        match $n {
            1 => widen::<1>($tile::<1>($($arg),*)),
            2 => widen::<2>($tile::<2>($($arg),*)),
            3 => widen::<3>($tile::<3>($($arg),*)),
            4 => widen::<4>($tile::<4>($($arg),*)),
            5 => widen::<5>($tile::<5>($($arg),*)),
            _ => $tile::<6>($($arg),*),
        }
    };
}

/// Rows of `x` per tile.
const TILE_ROWS: usize = 6;

/// A tile's sums, padded to [`TILE_ROWS`] rows.
fn widen<const R: usize>(sums: [[f64; 4]; R]) -> [[f64; 4]; TILE_ROWS] {
    std::array::from_fn(|j| if j < R { sums[j] } else { [0.0; 4] })
}

/// Store a tile's sums: row `r0 + j` of weight row `o0 + i`, for the `n_o - o0` weight rows
/// (at most four) and `n` rows of `x` that exist.
fn store(sums: &[[f64; 4]; TILE_ROWS], yt: &mut [f32], rows: usize, (o0, n_o): (usize, usize), (r0, n): (usize, usize)) {
    for (j, row) in sums.iter().enumerate().take(n) {
        for (i, &s) in row.iter().enumerate().take(n_o - o0) {
            yt[(o0 + i) * rows + r0 + j] = s as f32;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{store, tail, widen, TILE_ROWS};
    use std::arch::x86_64::*;

    /// Tiles of four weight rows × up to six rows of `x`: 24 accumulators of eight f64 lanes,
    /// the four weight vectors and one `x` vector in AVX-512's 32 registers. A partial tile
    /// repeats its last weight row; its sums are not stored.
    ///
    /// # Safety
    /// The CPU must support AVX-512F; `xw` must hold `rows × in_dim` values, `w` `n_o × in_dim`
    /// and `yt` `n_o × rows`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn rows(xw: &[f64], rows: usize, in_dim: usize, w: &[f32], n_o: usize, yt: &mut [f32]) {
        for o0 in (0..n_o).step_by(4) {
            // SAFETY: every index is below `n_o`, so each row lies inside `w`.
            let wp: [*const f32; 4] = std::array::from_fn(|i| unsafe { w.as_ptr().add((o0 + i).min(n_o - 1) * in_dim) });
            for r0 in (0..rows).step_by(TILE_ROWS) {
                let n = TILE_ROWS.min(rows - r0);
                // SAFETY: rows r0..r0 + n lie inside `xw`.
                let xp = unsafe { xw.as_ptr().add(r0 * in_dim) };
                // SAFETY: forwarded from the caller's guarantees.
                let sums = unsafe {
                    match n {
                        1 => widen::<1>(tile1(xp, in_dim, wp)),
                        2 => widen::<2>(tile2(xp, in_dim, wp)),
                        3 => widen::<3>(tile3(xp, in_dim, wp)),
                        4 => widen::<4>(tile4(xp, in_dim, wp)),
                        5 => widen::<5>(tile5(xp, in_dim, wp)),
                        _ => tile6(xp, in_dim, wp),
                    }
                };
                store(&sums, yt, rows, (o0, n_o), (r0, n));
            }
        }
    }

    /// `tileR`: `R` rows of `x` (from `xp`, `in_dim` apart) against the four weight rows
    /// `wp`. The accumulators are named variables, one per (row, weight row): held in an array,
    /// they were written back to the stack after every multiply-add.
    ///
    /// # Safety (every `tileR`)
    /// The CPU must support AVX-512F; `xp` must be readable for `R` rows of `in_dim` values and
    /// each of `wp` for `in_dim` values.
    macro_rules! tile {
        ($name:ident, $r:literal: $($j:literal => [$a0:ident $a1:ident $a2:ident $a3:ident]),+) => {
            #[target_feature(enable = "avx512f")]
            #[inline(never)]
            unsafe fn $name(xp: *const f64, in_dim: usize, wp: [*const f32; 4]) -> [[f64; 4]; $r] {
                let body = in_dim - in_dim % 8;
                $(let (mut $a0, mut $a1, mut $a2, mut $a3) = (_mm512_setzero_pd(), _mm512_setzero_pd(), _mm512_setzero_pd(), _mm512_setzero_pd());)+
                let mut i = 0;
                while i < body {
                    // SAFETY: i + 8 <= body <= in_dim, in each weight row and each row of x.
                    unsafe {
                        let (w0, w1) = (_mm512_cvtps_pd(_mm256_loadu_ps(wp[0].add(i))), _mm512_cvtps_pd(_mm256_loadu_ps(wp[1].add(i))));
                        let (w2, w3) = (_mm512_cvtps_pd(_mm256_loadu_ps(wp[2].add(i))), _mm512_cvtps_pd(_mm256_loadu_ps(wp[3].add(i))));
                        $(
                            let xv = _mm512_loadu_pd(xp.add($j * in_dim + i));
                            $a0 = _mm512_fmadd_pd(xv, w0, $a0);
                            $a1 = _mm512_fmadd_pd(xv, w1, $a1);
                            $a2 = _mm512_fmadd_pd(xv, w2, $a2);
                            $a3 = _mm512_fmadd_pd(xv, w3, $a3);
                        )+
                    }
                    i += 8;
                }
                // SAFETY: the tails lie inside the rows (from `body` to `in_dim`).
                unsafe {
                    [$([
                        tail(reduce($a0), xp.add($j * in_dim), wp[0], body, in_dim),
                        tail(reduce($a1), xp.add($j * in_dim), wp[1], body, in_dim),
                        tail(reduce($a2), xp.add($j * in_dim), wp[2], body, in_dim),
                        tail(reduce($a3), xp.add($j * in_dim), wp[3], body, in_dim),
                    ]),+]
                }
            }
        };
    }

    tile!(tile1, 1: 0 => [a00 a01 a02 a03]);
    tile!(tile2, 2: 0 => [a00 a01 a02 a03], 1 => [a10 a11 a12 a13]);
    tile!(tile3, 3: 0 => [a00 a01 a02 a03], 1 => [a10 a11 a12 a13], 2 => [a20 a21 a22 a23]);
    tile!(tile4, 4: 0 => [a00 a01 a02 a03], 1 => [a10 a11 a12 a13], 2 => [a20 a21 a22 a23], 3 => [a30 a31 a32 a33]);
    tile!(tile5, 5: 0 => [a00 a01 a02 a03], 1 => [a10 a11 a12 a13], 2 => [a20 a21 a22 a23], 3 => [a30 a31 a32 a33], 4 => [a40 a41 a42 a43]);
    tile!(
        tile6, 6: 0 => [a00 a01 a02 a03], 1 => [a10 a11 a12 a13], 2 => [a20 a21 a22 a23], 3 => [a30 a31 a32 a33], 4 => [a40 a41 a42 a43],
        5 => [a50 a51 a52 a53]
    );

    /// The eight lanes in the module's order: `((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7))`,
    /// in 512-bit operations only: 256- and 128-bit ones would need AVX-512VL to reach registers
    /// 16–31, and without it the accumulators were squeezed into 0–15 and spilled.
    #[target_feature(enable = "avx512f")]
    fn reduce(v: __m512d) -> f64 {
        // 128-bit blocks (l0 l1)(l2 l3)(l4 l5)(l6 l7): add blocks 2–3 to blocks 0–1, then block 1
        // to block 0, then the two lanes of block 0.
        let s = _mm512_add_pd(v, _mm512_shuffle_f64x2::<0b01_00_11_10>(v, v));
        let t = _mm512_add_pd(s, _mm512_shuffle_f64x2::<0b00_00_00_01>(s, s));
        _mm512_cvtsd_f64(_mm512_add_pd(t, _mm512_permute_pd::<0b01>(t)))
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{store, tail, widen, TILE_ROWS};
    use std::arch::x86_64::*;

    /// Tiles of four weight rows × up to six rows of `x`, computed two weight rows × three rows
    /// of `x` at a time (AVX2 has 16 registers): each sum's eight lanes in two four-lane
    /// accumulators, added as the AVX-512 kernel adds its halves.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA; `xw` must hold `rows × in_dim` values, `w` `n_o × in_dim`
    /// and `yt` `n_o × rows`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn rows(xw: &[f64], rows: usize, in_dim: usize, w: &[f32], n_o: usize, yt: &mut [f32]) {
        for o0 in (0..n_o).step_by(4) {
            // SAFETY: every index is below `n_o`, so each row lies inside `w`.
            let wp: [*const f32; 4] = std::array::from_fn(|i| unsafe { w.as_ptr().add((o0 + i).min(n_o - 1) * in_dim) });
            for r0 in (0..rows).step_by(TILE_ROWS) {
                let n = TILE_ROWS.min(rows - r0);
                // SAFETY: rows r0..r0 + n lie inside `xw`.
                let xp = unsafe { xw.as_ptr().add(r0 * in_dim) };
                // SAFETY: forwarded from the caller's guarantees.
                let sums = unsafe { dispatch_rows!(n, tile(xp, in_dim, wp)) };
                store(&sums, yt, rows, (o0, n_o), (r0, n));
            }
        }
    }

    /// `R` rows of `x` against four weight rows, in passes of two rows × two weight rows.
    ///
    /// # Safety
    /// As [`rows`], for `R` rows from `xp` and the four rows `wp`.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile<const R: usize>(xp: *const f64, in_dim: usize, wp: [*const f32; 4]) -> [[f64; 4]; R] {
        let mut sums = [[0.0; 4]; R];
        for o in [0, 2] {
            for j0 in (0..R).step_by(2) {
                // SAFETY: forwarded; rows j0.. of the tile.
                let part = unsafe { pass(xp.add(j0 * in_dim), in_dim, (wp[o], wp[o + 1]), (R - j0).min(2)) };
                for (j, pair) in part.iter().enumerate().take((R - j0).min(2)) {
                    sums[j0 + j][o] = pair[0];
                    sums[j0 + j][o + 1] = pair[1];
                }
            }
        }
        sums
    }

    /// Up to two rows of `x` (`n` of them; a missing one repeats the first) against two weight
    /// rows: 8 accumulators, 4 weight and 2 `x` vectors in AVX2's 16 registers.
    ///
    /// # Safety
    /// As [`tile`].
    #[target_feature(enable = "avx2,fma")]
    unsafe fn pass(xp: *const f64, in_dim: usize, (w0, w1): (*const f32, *const f32), n: usize) -> [[f64; 2]; 2] {
        let body = in_dim - in_dim % 8;
        let (x0, x1) = (xp, xp.wrapping_add((n - 1).min(1) * in_dim));
        // Per row of x and weight row: the low and high four lanes (named, to stay in registers).
        let z = _mm256_setzero_pd();
        let (mut a00l, mut a00h, mut a01l, mut a01h) = (z, z, z, z);
        let (mut a10l, mut a10h, mut a11l, mut a11h) = (z, z, z, z);
        let mut i = 0;
        while i < body {
            // SAFETY: i + 8 <= body <= in_dim, in both weight rows and both rows of x.
            unsafe {
                let (w0l, w0h) = (_mm256_cvtps_pd(_mm_loadu_ps(w0.add(i))), _mm256_cvtps_pd(_mm_loadu_ps(w0.add(i + 4))));
                let (w1l, w1h) = (_mm256_cvtps_pd(_mm_loadu_ps(w1.add(i))), _mm256_cvtps_pd(_mm_loadu_ps(w1.add(i + 4))));
                let (xl, xh) = (_mm256_loadu_pd(x0.add(i)), _mm256_loadu_pd(x0.add(i + 4)));
                a00l = _mm256_fmadd_pd(xl, w0l, a00l);
                a00h = _mm256_fmadd_pd(xh, w0h, a00h);
                a01l = _mm256_fmadd_pd(xl, w1l, a01l);
                a01h = _mm256_fmadd_pd(xh, w1h, a01h);
                let (xl, xh) = (_mm256_loadu_pd(x1.add(i)), _mm256_loadu_pd(x1.add(i + 4)));
                a10l = _mm256_fmadd_pd(xl, w0l, a10l);
                a10h = _mm256_fmadd_pd(xh, w0h, a10h);
                a11l = _mm256_fmadd_pd(xl, w1l, a11l);
                a11h = _mm256_fmadd_pd(xh, w1h, a11h);
            }
            i += 8;
        }
        // SAFETY: the tails lie inside the rows.
        unsafe {
            [
                [tail(reduce([a00l, a00h]), x0, w0, body, in_dim), tail(reduce([a01l, a01h]), x0, w1, body, in_dim)],
                [tail(reduce([a10l, a10h]), x1, w0, body, in_dim), tail(reduce([a11l, a11h]), x1, w1, body, in_dim)],
            ]
        }
    }

    /// Lanes 0–3 in `v[0]`, 4–7 in `v[1]`, added in the module's order.
    #[target_feature(enable = "avx2,fma")]
    fn reduce(v: [__m256d; 2]) -> f64 {
        let s = _mm256_add_pd(v[0], v[1]);
        let t = _mm_add_pd(_mm256_castpd256_pd128(s), _mm256_extractf128_pd::<1>(s));
        _mm_cvtsd_f64(_mm_add_sd(t, _mm_unpackhi_pd(t, t)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Tensor};
    use std::sync::Arc;

    fn values(n: usize, m: usize, d: usize) -> Vec<f32> {
        (0..n).map(|i| ((i * m % 1009) as f32 - 504.0) / d as f32).collect()
    }

    /// f64 sums of the products, for the tolerance check.
    fn naive(x: &[f32], w: &[f32], rows: usize, out_dim: usize, in_dim: usize) -> Vec<f64> {
        let mut y = vec![0f64; rows * out_dim];
        for r in 0..rows {
            for o in 0..out_dim {
                y[r * out_dim + o] = (0..in_dim).map(|i| f64::from(x[r * in_dim + i]) * f64::from(w[o * in_dim + i])).sum();
            }
        }
        y
    }

    /// The module's summation order, in scalar code.
    fn ordered(x: &[f32], w: &[f32]) -> f32 {
        let body = x.len() - x.len() % 8;
        let mut lanes = [0f64; 8];
        for i in 0..body {
            lanes[i % 8] = f64::from(x[i]).mul_add(f64::from(w[i]), lanes[i % 8]);
        }
        let l = lanes;
        let mut s = ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]));
        for i in body..x.len() {
            s = f64::from(x[i]).mul_add(f64::from(w[i]), s);
        }
        s as f32
    }

    /// Every kernel this CPU runs gives, for every row count and shape (tails, partial tiles,
    /// partial tasks), the bits of the documented order; so each row's result is the same
    /// whatever rows share the call, on AVX-512 and AVX2 alike.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn every_kernel_sums_in_the_documented_order_for_any_row_count() {
        if !super::super::sgemm::available() {
            super::super::skip_hardware("every_kernel_sums_in_the_documented_order_for_any_row_count", super::super::sgemm::NO_KERNELS);
            return;
        }
        for (out_dim, in_dim) in [(1, 1), (7, 13), (37, 64), (70, 576), (18, 1539)] {
            let w = values(out_dim * in_dim, 53, 300);
            let x_all = values(20 * in_dim, 37, 200);
            for rows in [1, 2, 3, 5, 6, 7, 9, 13, 16, 20] {
                let x = &x_all[..rows * in_dim];
                let want: Vec<u32> = (0..rows)
                    .flat_map(|r| (0..out_dim).map(move |o| (r, o)))
                    .map(|(r, o)| ordered(&x[r * in_dim..(r + 1) * in_dim], &w[o * in_dim..(o + 1) * in_dim]).to_bits())
                    .collect();
                let xw: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
                let mut kernels: Vec<(&str, unsafe fn(&[f64], usize, usize, &[f32], usize, &mut [f32]))> = vec![("avx2", avx2::rows)];
                if std::arch::is_x86_feature_detected!("avx512f") {
                    kernels.push(("avx512", avx512::rows));
                } else {
                    super::super::skip_hardware("every_kernel_sums_in_the_documented_order_for_any_row_count/avx512", "no AVX-512F on this CPU");
                }
                for (name, kernel) in kernels {
                    let mut yt = vec![f32::NAN; out_dim * rows];
                    // SAFETY: the CPU features were checked; the slices hold their shapes.
                    unsafe { kernel(&xw, rows, in_dim, &w, out_dim, &mut yt) };
                    let got: Vec<u32> = (0..rows).flat_map(|r| (0..out_dim).map(move |o| (r, o))).map(|(r, o)| yt[o * rows + r].to_bits()).collect();
                    assert_eq!(got, want, "{name}: {rows} rows × {out_dim} × {in_dim}");
                }
                let naive = naive(x, &w, rows, out_dim, in_dim);
                let mut y = vec![f32::NAN; rows * out_dim];
                let weight = StoredMatrix::F32(Tensor::from_vec(w.clone(), (out_dim, in_dim), &Device::Cpu).unwrap());
                linear_few_rows(x, rows, &weight, &mut y).unwrap();
                for (got, want) in y.iter().zip(&naive) {
                    assert!((f64::from(*got) - want).abs() <= 1e-6 * (1.0 + want.abs()), "{rows}×{out_dim}×{in_dim}: {got} vs {want}");
                }
                assert_eq!(y.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), want, "linear_few_rows {rows}×{out_dim}×{in_dim}");
            }
        }
    }

    /// A quantised weight gives the product of its f32 conversion, bit for bit.
    #[test]
    fn stored_weights_equal_their_conversion() {
        if !super::super::sgemm::available() {
            super::super::skip_hardware("stored_weights_equal_their_conversion", super::super::sgemm::NO_KERNELS);
            return;
        }
        let (out_dim, rows) = (70, 9);
        for (dtype, in_dim) in [(GgmlDType::Q4_1, 96), (GgmlDType::Q8_0, 96), (GgmlDType::Q4K, 256)] {
            let dense = Tensor::from_vec(values(out_dim * in_dim, 53, 300), (out_dim, in_dim), &Device::Cpu).unwrap();
            let x = values(rows * in_dim, 37, 200);
            let q = QTensor::quantize(&dense, dtype).unwrap();
            let converted = StoredMatrix::F32(q.dequantize(&Device::Cpu).unwrap());
            let (mut want, mut got) = (vec![0f32; rows * out_dim], vec![0f32; rows * out_dim]);
            linear_few_rows(&x, rows, &converted, &mut want).unwrap();
            linear_few_rows(&x, rows, &StoredMatrix::Quantized(Arc::new(q)), &mut got).unwrap();
            assert_eq!(got, want, "{dtype:?}");
        }
    }
}
