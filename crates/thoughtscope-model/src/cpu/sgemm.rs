//! f32 matrix multiply for the CPU hot paths (linear layers and attention over long traces).
//!
//! candle's CPU matmul (the `gemm` crate) reaches about half of the FMA peak on the decoder's
//! shapes; this BLIS-style routine (packed panels, a 12 × 32 register tile with AVX-512, 12 × 16
//! with AVX2) matches OpenBLAS's own AVX-512 and AVX2 kernels on SmolLM2's linear shapes (`bench
//! forward` times both where OpenBLAS is installed). Decode steps (a few rows) take the one-pass
//! kernels of `few_rows` and [`dot`] instead. Everything here needs AVX-512F or AVX2 with FMA ([`available`]); callers fall back
//! to candle's matmul elsewhere, so the crate still runs on any x86-64 or ARM machine.

/// A read-only matrix view: element `(i, j)` is `data[i * row_stride + j * col_stride]`.
#[derive(Debug, Clone, Copy)]
pub struct MatRef<'a> {
    pub data: &'a [f32],
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a> MatRef<'a> {
    /// Row-major storage with `cols` elements per row.
    pub fn row_major(data: &'a [f32], cols: usize) -> Self {
        Self { data, row_stride: cols, col_stride: 1 }
    }

    /// The transpose of a row-major matrix with `cols` elements per row (`Wᵀ` for a weight `W`).
    pub fn transposed(data: &'a [f32], cols: usize) -> Self {
        Self { data, row_stride: 1, col_stride: cols }
    }

    fn fits(&self, rows: usize, cols: usize) -> bool {
        rows == 0 || cols == 0 || (rows - 1) * self.row_stride + (cols - 1) * self.col_stride < self.data.len()
    }
}

/// Whether the kernels run on this CPU: AVX2 and FMA, which the decode-step kernels
/// (`few_rows`, [`dot`]'s fallback) need. Every CPU with AVX-512F has both; the GEMM then
/// takes the wider AVX-512 kernels.
pub fn available() -> bool {
    has_avx2_fma() && kernels().is_some()
}

/// Whether the CPU has AVX2 and FMA.
fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the wider AVX-512 kernels run: the CPU has AVX-512F and the settings do not turn them
/// off ([`super::avx512_enabled`]).
fn has_avx512() -> bool {
    super::avx512_enabled()
}

/// One `MR × nr` tile kernel (see `avx512::kernel`; `nr` is the kernel set's panel width).
type KernelFn = unsafe fn(usize, *const f32, usize, *const f32, *mut f32, usize, usize, usize, bool);

/// The tile kernels for A read in place and for packed A.
#[derive(Clone, Copy)]
struct Kernels {
    in_place: KernelFn,
    packed: KernelFn,
    /// Width of B's packed panels (the tile's columns): 32 for AVX-512, 16 for AVX2. A panel
    /// row must be one contiguous run: AVX2's 16 of 32 columns, `kc` rows 128 bytes apart, land
    /// in half of L1's sets and overflow their eight ways at `kc` ≥ 256.
    nr: usize,
}

pub(super) const NO_KERNELS: &str = "sgemm needs AVX-512F, or AVX2 and FMA";

fn kernels() -> Option<Kernels> {
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx512() {
            return Some(Kernels { in_place: avx512::kernel::<false>, packed: avx512::kernel::<true>, nr: avx512::NR });
        }
        if has_avx2_fma() {
            return Some(Kernels { in_place: avx2::kernel::<false>, packed: avx2::kernel::<true>, nr: avx2::NR });
        }
    }
    None
}

/// `c = a · b` for `a` `m × k` and `b` `k × n`; `c` is row-major with `ldc` elements per row and
/// is overwritten. Bands of rows run on rayon's threads. Panics if [`available`] is false or a
/// view is too short for its shape (both are caller bugs).
pub fn matmul(a: MatRef, b: MatRef, c: &mut [f32], m: usize, n: usize, k: usize, ldc: usize) {
    assert!(b.fits(k, n), "sgemm::matmul: B shorter than its shape");
    run_bands(kernels().expect(NO_KERNELS), a, Rhs::Strided(b), c, m, n, k, ldc, true);
}

/// Below this many rows of `x`, the one-pass decode kernels beat the packed GEMM (short prompts;
/// decode steps take them for any batch).
pub const FEW_ROWS: usize = 16;

/// `Σ a[i]·b[i]` over the shorter length, with vector partial sums and FMA. Panics if
/// [`available`] is false.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx512() {
            // SAFETY: the CPU has AVX-512F.
            return unsafe { avx512::dot(a, b) };
        }
        assert!(available(), "{NO_KERNELS}");
        // SAFETY: the CPU has AVX2 and FMA.
        unsafe { avx2::dot(a, b) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (a, b);
        unreachable!("sgemm::dot needs x86-64")
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use super::MR;
    use std::arch::x86_64::*;

    /// Width of this kernel's B panels.
    pub(super) const NR: usize = 16;

    /// The `MR × nr` tile of `avx512::kernel` (same arguments; B panels [`NR`] wide) in passes of
    /// 6 × 16: 6 × 2 eight-lane accumulators, two B vectors and the broadcast fill 15 of AVX2's
    /// sixteen registers (3 × 32 passes need 17 and spilled: 34 GFLOP/s on two Zen 3 cores,
    /// against 150–165 now and a 200 peak).
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA; `a` and `b` must be readable for the `kc`-deep panels
    /// (B [`NR`] wide) and `c` writable for `mr` rows of `nr` columns at stride `ldc`.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn kernel<const PACKED: bool>(
        kc: usize,
        a: *const f32,
        lda: usize,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        mr: usize,
        nr: usize,
        first: bool,
    ) {
        for row0 in (0..mr).step_by(6) {
            // SAFETY: forwarded from the caller's guarantees for the whole tile.
            unsafe { pass::<PACKED>(kc, a, lda, b, c.add(row0 * ldc), ldc, row0, 6.min(mr - row0), nr, first) }
        }
    }

    /// Rows `row0..row0 + rows` (at most 6, `c` already offset to `row0`) × columns `0..cols`
    /// (at most 16) of the tile. Missing rows re-read the last valid row; their sums are not
    /// stored.
    ///
    /// # Safety
    /// As [`kernel`], for rows `row0..row0 + rows` and columns `0..cols` of the tile.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn pass<const PACKED: bool>(
        kc: usize,
        a: *const f32,
        lda: usize,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        row0: usize,
        rows: usize,
        cols: usize,
        first: bool,
    ) {
        let row = |i: usize| row0 + i.min(rows - 1);
        // Each row's A value at depth `p` is at `a_row[i] + p · a_step`. Pointers move with
        // `wrapping_add` and A is read through `_mm_load_ss`: with debug assertions on, `add` and
        // `*` on raw pointers carry checks that spill this loop's registers (half the speed).
        let a_row: [*const f32; 6] = std::array::from_fn(|i| if PACKED { a.wrapping_add(row(i)) } else { a.wrapping_add(row(i) * lda) });
        let a_step = if PACKED { MR } else { 1 };
        // The output rows are far apart in memory: fetch them while the products run.
        for i in 0..rows {
            let out = c.wrapping_add(i * ldc);
            _mm_prefetch::<_MM_HINT_T0>(out as *const i8);
            _mm_prefetch::<_MM_HINT_T0>(out.wrapping_add(cols - 1) as *const i8);
        }
        // Named accumulators (not an array), as in the AVX-512 kernel, so they stay in registers.
        macro_rules! tile {
            ($($lo:ident $hi:ident $i:literal),*) => {{
                $(let mut $lo = _mm256_setzero_ps(); let mut $hi = _mm256_setzero_ps();)*
                for p in 0..kc {
                    let bp = b.wrapping_add(p * NR);
                    // SAFETY: B's panel holds `kc` steps of `NR` values; A holds `kc` steps of `MR`
                    // packed values, or rows of at least `kc` values.
                    let (b0, b1) = unsafe { (_mm256_loadu_ps(bp), _mm256_loadu_ps(bp.wrapping_add(8))) };
                    $(
                        let ai = _mm256_broadcastss_ps(unsafe { _mm_load_ss(a_row[$i].wrapping_add(p * a_step)) });
                        $lo = _mm256_fmadd_ps(ai, b0, $lo);
                        $hi = _mm256_fmadd_ps(ai, b1, $hi);
                    )*
                }
                [$([$lo, $hi]),*]
            }};
        }
        let acc: [[__m256; 2]; 6] = tile!(c0 d0 0, c1 d1 1, c2 d2 2, c3 d3 3, c4 d4 4, c5 d5 5);
        let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let mask = |from: usize| _mm256_cmpgt_epi32(_mm256_set1_epi32(cols.saturating_sub(from).min(8) as i32), lanes);
        let (m0, m1) = (mask(0), mask(8));
        for (i, [lo, hi]) in acc.into_iter().enumerate().take(rows) {
            let out = c.wrapping_add(i * ldc);
            // SAFETY: masked-off lanes are neither read nor written (no fault either); the
            // enabled lanes lie inside the caller's tile.
            unsafe {
                if cols == 16 {
                    let (o0, o1) = (out, out.add(8));
                    let (lo, hi) = if first { (lo, hi) } else { (_mm256_add_ps(lo, _mm256_loadu_ps(o0)), _mm256_add_ps(hi, _mm256_loadu_ps(o1))) };
                    _mm256_storeu_ps(o0, lo);
                    _mm256_storeu_ps(o1, hi);
                } else {
                    let (o0, o1) = (out, out.wrapping_add(8));
                    let (lo, hi) = if first {
                        (lo, hi)
                    } else {
                        (_mm256_add_ps(lo, _mm256_maskload_ps(o0, m0)), _mm256_add_ps(hi, _mm256_maskload_ps(o1, m1)))
                    };
                    _mm256_maskstore_ps(o0, m0, lo);
                    _mm256_maskstore_ps(o1, m1, hi);
                }
            }
        }
    }

    /// Sum of the eight lanes.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn hsum(v: __m256) -> f32 {
        let v = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let v = _mm_add_ps(v, _mm_movehl_ps(v, v));
        _mm_cvtss_f32(_mm_add_ss(v, _mm_shuffle_ps(v, v, 1)))
    }

    /// `Σ a[i]·b[i]` with four eight-lane partial sums.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA; `a` and `b` must have the same length.
    #[target_feature(enable = "avx2,fma")]
    pub(crate) unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i + 32 <= n {
            for (j, acc) in acc.iter_mut().enumerate() {
                *acc = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i + 8 * j)), _mm256_loadu_ps(pb.add(i + 8 * j)), *acc);
            }
            i += 32;
        }
        while i + 8 <= n {
            acc[0] = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc[0]);
            i += 8;
        }
        let mut sum = hsum(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3])));
        while i < n {
            sum = a[i].mul_add(b[i], sum);
            i += 1;
        }
        sum
    }
}

/// A right-hand side packed once and reused by many products: the keys and values of one head
/// serve every query block and every query head that shares them. Any leading `k' × n'` corner
/// of it can be used ([`matmul_packed`]), which is what causal attention needs.
#[derive(Debug, Clone)]
pub(crate) struct PackedB {
    data: Vec<f32>,
    k: usize,
    n: usize,
    /// Depth of its blocks ([`KC`], or `k` split evenly for a one-off product).
    kc: usize,
    /// Panel width it was packed for (the kernel set's `nr`).
    nr: usize,
}

impl PackedB {
    /// Packs `b` (`k × n`) for this CPU's kernels. Panics if [`available`] is false or `b` is
    /// shorter than its shape.
    pub fn new(b: MatRef, k: usize, n: usize) -> Self {
        Self::with_width(b, k, n, kernels().expect(NO_KERNELS).nr)
    }

    fn with_width(b: MatRef, k: usize, n: usize, nr: usize) -> Self {
        assert!(b.fits(k, n), "sgemm::PackedB: B shorter than its shape");
        let block = n.div_ceil(nr) * KC * nr;
        let mut data = vec![0f32; k.div_ceil(KC) * block];
        for (i, pc) in (0..k).step_by(KC).enumerate() {
            let kc = KC.min(k - pc);
            pack_b(b, pc, 0, kc, n, &mut data[i * block..(i + 1) * block], KC * nr, nr);
        }
        Self { data, k, n, kc: KC, nr }
    }

    /// Packs `b` in depth blocks of `kc` into `data` (storage reused from an earlier product),
    /// one panel per rayon task: for a product whose row bands run on several threads, which
    /// then share one packed B instead of each packing all of it.
    fn pack_parallel(b: MatRef, k: usize, n: usize, nr: usize, kc: usize, mut data: Vec<f32>) -> Self {
        use rayon::prelude::*;
        assert!(b.fits(k, n), "sgemm::PackedB: B shorter than its shape");
        let panels = n.div_ceil(nr);
        data.resize(k.div_ceil(kc) * panels * kc * nr, 0.0);
        data.par_chunks_mut(kc * nr).enumerate().for_each(|(i, dst)| {
            let (pc, jc) = (i / panels * kc, i % panels * nr);
            pack_b(b, pc, jc, kc.min(k - pc), nr.min(n - jc), dst, kc * nr, nr);
        });
        Self { data, k, n, kc, nr }
    }
}

/// `b` (`k × n`) packed once for several products of [`matmul_packed`] (row chunks of one
/// product), in the depth blocks [`matmul`] takes for depth `k`: each chunk's result is then
/// [`matmul`]'s to the bit. Panics if [`available`] is false or `b` is shorter than its shape.
pub(crate) fn pack_like_matmul(b: MatRef, k: usize, n: usize) -> PackedB {
    PackedB::pack_parallel(b, k, n, kernels().expect(NO_KERNELS).nr, depth_step(k), Vec::new())
}

/// `c = a · b[..k, ..n]` with a [`PackedB`] on the calling thread only, for callers that run
/// many small products in parallel themselves; otherwise as [`matmul`].
pub(crate) fn matmul_packed(a: MatRef, b: &PackedB, c: &mut [f32], m: usize, n: usize, k: usize, ldc: usize) {
    assert!(k <= b.k && n <= b.n, "sgemm::matmul_packed: {k} × {n} exceeds the packed {} × {}", b.k, b.n);
    let kernels = kernels().expect(NO_KERNELS);
    assert_eq!(b.nr, kernels.nr, "sgemm::matmul_packed: B packed for other kernels");
    run_bands(kernels, a, Rhs::Packed(b), c, m, n, k, ldc, false);
}

#[derive(Clone, Copy)]
enum Rhs<'a> {
    Strided(MatRef<'a>),
    Packed(&'a PackedB),
}

#[allow(clippy::too_many_arguments)]
fn run_bands(kernels: Kernels, a: MatRef, b: Rhs, c: &mut [f32], m: usize, n: usize, k: usize, ldc: usize, parallel: bool) {
    use rayon::prelude::*;
    assert!(a.fits(m, k), "sgemm: A shorter than its shape");
    assert!(n <= ldc && (m == 0 || (m - 1) * ldc + n <= c.len()), "sgemm: output too short");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        for row in c.chunks_mut(ldc).take(m) {
            row[..n].fill(0.0);
        }
        return;
    }
    let threads = if parallel { rayon::current_num_threads().max(1) } else { 1 };
    // Rows per band: only split when each band has real work.
    let band = if threads == 1 || m < 2 * MR || m * n * k < (1 << 20) {
        m
    } else {
        // One band per thread, a whole number of tiles each (rounding down left a few rows
        // over: a third band that packed all of B again for them).
        m.div_ceil(threads).div_ceil(MR) * MR
    };
    let c = &mut c[..(m - 1) * ldc + n];
    // Bands on several threads share one B packed in parallel (each packing all of it cost 7% of
    // the linear layers' time on two Zen 5 cores).
    if let (Rhs::Strided(bm), true) = (b, band < m) {
        let storage = SHARED_B.with_borrow_mut(std::mem::take);
        let packed = PackedB::pack_parallel(bm, k, n, kernels.nr, depth_step(k), storage);
        c.par_chunks_mut(band * ldc).enumerate().for_each(|(t, c_band)| {
            let row0 = t * band;
            let a_band = MatRef { data: &a.data[row0 * a.row_stride..], ..a };
            // SAFETY: as below.
            unsafe { gemm(kernels, a_band, Rhs::Packed(&packed), c_band, band.min(m - row0), n, k, ldc) }
        });
        SHARED_B.with_borrow_mut(|s| *s = packed.data);
        return;
    }
    c.par_chunks_mut(band * ldc).enumerate().for_each(|(t, c_band)| {
        let row0 = t * band;
        let rows = band.min(m - row0);
        let a_band = MatRef { data: &a.data[row0 * a.row_stride..], ..a };
        // SAFETY: the kernels exist on this CPU; the views were checked against their shapes.
        unsafe { gemm(kernels, a_band, b, c_band, rows, n, k, ldc) }
    });
}

/// `dst[panel·panel_stride + p·nr + j] = B[pc + p][jc + panel·nr + j]`, zero columns past `nc`.
#[allow(clippy::too_many_arguments)]
fn pack_b(b: MatRef, pc: usize, jc: usize, kc: usize, nc: usize, dst: &mut [f32], panel_stride: usize, nr: usize) {
    for (panel, j0) in (0..nc).step_by(nr).enumerate() {
        let dst = &mut dst[panel * panel_stride..panel * panel_stride + nr * kc];
        let cols = nr.min(nc - j0);
        if b.col_stride == 1 {
            for p in 0..kc {
                let base = (pc + p) * b.row_stride + jc + j0;
                dst[p * nr..p * nr + cols].copy_from_slice(&b.data[base..base + cols]);
                dst[p * nr + cols..(p + 1) * nr].fill(0.0);
            }
        } else {
            for j in 0..nr {
                if j >= cols {
                    (0..kc).for_each(|p| dst[p * nr + j] = 0.0);
                    continue;
                }
                let base = pc * b.row_stride + (jc + j0 + j) * b.col_stride;
                if b.row_stride == 1 {
                    for (p, &x) in b.data[base..base + kc].iter().enumerate() {
                        dst[p * nr + j] = x;
                    }
                } else {
                    (0..kc).for_each(|p| dst[p * nr + j] = b.data[base + p * b.row_stride]);
                }
            }
        }
    }
}

/// Rows of C per micro-tile (broadcast from packed A).
const MR: usize = 12;
/// Depth of one block of a [`PackedB`] (keys and values, packed once per layer): a `KC × nr`
/// panel of B (at most 32 KiB) stays in L1.
const KC: usize = 256;
/// Largest depth of one block of a product's own B (the linear layers): the whole depth of
/// SmolLM2's `d = 576` in one block, `1536` in two. Deeper blocks than [`KC`] stream B's panel
/// from L2, but each block after the first reads the whole band of C back (out of L2 by then):
/// 768 against 256 took the linear shapes from about 370 to 470 GFLOP/s (per CPU-second, two
/// Zen 5 cores), AVX2's kernels from 236 to 243.
const KC_ONE_OFF: usize = 768;

/// Equal depth blocks of at most [`KC_ONE_OFF`] (1000 = 2 × 500, not 768 + 232): a short last
/// block costs a full pass over C for little work.
fn depth_step(k: usize) -> usize {
    k.div_ceil(k.div_ceil(KC_ONE_OFF))
}
/// Rows of one packed block of A (`MC × KC`, 144 KiB, stays in L2).
const MC: usize = 144;
/// Columns of one packed block of B (up to 3 MiB, L3).
const NC: usize = 3072;

std::thread_local! {
    /// Storage of the B that a product's threads share, reused by the next product on this thread.
    static SHARED_B: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    /// Packing buffers, reused across calls on each thread.
    static PACKS: std::cell::RefCell<(Vec<f32>, Vec<f32>)> = const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}


/// Serial GEMM over one band of rows.
///
/// # Safety
/// `kernels` must run on this CPU, and `a` (m × k), `b` (k × n) and `c` (m rows at stride
/// `ldc`, n columns) must be in bounds.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm(kernels: Kernels, a: MatRef, b: Rhs, c: &mut [f32], m: usize, n: usize, k: usize, ldc: usize) {
    let nr = kernels.nr;
    // Row-major A is read in place, twelve row streams at a time: measured faster than
    // packing it on every product here (and packing would cost as much as `P·V` itself).
    let in_place_a = a.col_stride == 1;
    // A packed B fixes its depth blocks; a strided one is packed here in `depth_step`s.
    let (kc_step, nc_step) = match b {
        Rhs::Strided(_) => (depth_step(k), NC),
        Rhs::Packed(pb) => (pb.kc, n),
    };
    PACKS.with_borrow_mut(|(a_pack, b_pack)| {
        if !in_place_a {
            a_pack.resize(MC * kc_step, 0.0);
        }
        if let Rhs::Strided(_) = b {
            b_pack.resize(kc_step * NC.div_ceil(nr) * nr, 0.0);
        }
        for jc in (0..n).step_by(nc_step) {
            let nc = nc_step.min(n - jc);
            for (block, pc) in (0..k).step_by(kc_step).enumerate() {
                let kc = kc_step.min(k - pc);
                let (panels, panel_stride) = match b {
                    Rhs::Strided(bm) => {
                        pack_b(bm, pc, jc, kc, nc, b_pack, kc * nr, nr);
                        (&b_pack[..], kc * nr)
                    }
                    Rhs::Packed(pb) => {
                        let size = pb.n.div_ceil(nr) * pb.kc * nr;
                        (&pb.data[block * size..(block + 1) * size], pb.kc * nr)
                    }
                };
                for ic in (0..m).step_by(MC) {
                    let mc = MC.min(m - ic);
                    if !in_place_a {
                        pack_a(a, ic, pc, mc, kc, a_pack);
                    }
                    for jr in (0..nc).step_by(nr) {
                        let b_panel = &panels[jr / nr * panel_stride..jr / nr * panel_stride + kc * nr];
                        for ir in (0..mc).step_by(MR) {
                            let (row, col) = (ic + ir, jc + jr);
                            let (mr, tile_cols) = (MR.min(mc - ir), nr.min(nc - jr));
                            let c_tile = c.as_mut_ptr().add(row * ldc + col);
                            // SAFETY: rows `row..row + mr`, columns `col..col + tile_cols` lie
                            // inside `c`, and A's rows `row..row + mr` at depth `pc..pc + kc`
                            // inside `a` (checked by the caller); panels hold `kc` steps.
                            unsafe {
                                if in_place_a {
                                    let a_tile = a.data.as_ptr().add(row * a.row_stride + pc);
                                    (kernels.in_place)(kc, a_tile, a.row_stride, b_panel.as_ptr(), c_tile, ldc, mr, tile_cols, pc == 0)
                                } else {
                                    let a_panel = a_pack[ir * kc..(ir + MR) * kc].as_ptr();
                                    (kernels.packed)(kc, a_panel, 1, b_panel.as_ptr(), c_tile, ldc, mr, tile_cols, pc == 0)
                                }
                            };
                        }
                    }
                }
            }
        }
    })
}

/// `a_pack[panel][p][i] = A[ic + panel·MR + i][pc + p]`, zero rows past `mc`.
fn pack_a(a: MatRef, ic: usize, pc: usize, mc: usize, kc: usize, a_pack: &mut [f32]) {
    for (panel, i0) in (0..mc).step_by(MR).enumerate() {
        let dst = &mut a_pack[panel * MR * kc..(panel + 1) * MR * kc];
        let rows = MR.min(mc - i0);
        for i in 0..MR {
            if i >= rows {
                (0..kc).for_each(|p| dst[p * MR + i] = 0.0);
                continue;
            }
            let base = (ic + i0 + i) * a.row_stride + pc * a.col_stride;
            if a.col_stride == 1 {
                for (p, &x) in a.data[base..base + kc].iter().enumerate() {
                    dst[p * MR + i] = x;
                }
            } else {
                (0..kc).for_each(|p| dst[p * MR + i] = a.data[base + p * a.col_stride]);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512 {
    use super::MR;

    /// Width of this kernel's B panels (two sixteen-lane vectors).
    pub(super) const NR: usize = 32;
    use std::arch::x86_64::*;

    /// `Σ a[i]·b[i]` with sixteen-lane partial sums (fused multiply-add).
    ///
    /// # Safety
    /// The CPU must support AVX-512F; `a` and `b` must have the same length.
    #[target_feature(enable = "avx512f")]
    pub(crate) unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let mut acc0 = _mm512_setzero_ps();
        let mut acc1 = _mm512_setzero_ps();
        let mut i = 0;
        while i + 32 <= n {
            acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a.as_ptr().add(i)), _mm512_loadu_ps(b.as_ptr().add(i)), acc0);
            acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(a.as_ptr().add(i + 16)), _mm512_loadu_ps(b.as_ptr().add(i + 16)), acc1);
            i += 32;
        }
        if i + 16 <= n {
            acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a.as_ptr().add(i)), _mm512_loadu_ps(b.as_ptr().add(i)), acc0);
            i += 16;
        }
        let mut sum = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
        while i < n {
            sum = a[i].mul_add(b[i], sum);
            i += 1;
        }
        sum
    }

    /// One `MR × NR` tile: 24 accumulators, `C = A·B` on the first depth block, `C += A·B` after.
    /// Only the top-left `mr × nr` corner is written (masked stores at the right edge). A is a
    /// packed panel (`PACKED`: element `(i, p)` at `p·MR + i`) or rows in place (`i·lda + p`; rows
    /// past `mr` re-read row `mr - 1`, whose results are not stored).
    ///
    /// # Safety
    /// The CPU must support AVX-512F; `a` and `b` must be readable for the `kc`-deep panels
    /// described above (B [`NR`] wide) and `c` writable for `mr` rows of `nr` columns at stride `ldc`.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn kernel<const PACKED: bool>(
        kc: usize,
        a: *const f32,
        lda: usize,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        mr: usize,
        nr: usize,
        first: bool,
    ) {
        let row_start: [*const f32; MR] = std::array::from_fn(|i| a.wrapping_add(i.min(mr - 1) * lda));
        // The tile of C was last touched a whole band of products ago (out of L2): fetch it
        // while the products run (without this, loading it for the sum took a fifth of the time).
        for i in 0..mr {
            let out = c.wrapping_add(i * ldc);
            _mm_prefetch::<_MM_HINT_T0>(out as *const i8);
            _mm_prefetch::<_MM_HINT_T0>(out.wrapping_add(nr - 1) as *const i8);
        }
        // Named accumulators (not an array) so all 24 stay in registers at any optimisation level.
        macro_rules! tile {
            ($($lo:ident $hi:ident $i:literal),*) => {{
                $(let mut $lo = _mm512_setzero_ps(); let mut $hi = _mm512_setzero_ps();)*
                for p in 0..kc {
                    // SAFETY: the packed B panel holds `kc · NR` values; A holds `kc` steps of
                    // `MR` packed values, or rows of at least `kc` values from `row_start`.
                    let (b0, b1) = unsafe { (_mm512_loadu_ps(b.add(p * NR)), _mm512_loadu_ps(b.add(p * NR + 16))) };
                    $(
                        let ai = unsafe {
                            if PACKED { *a.add(p * MR + $i) } else { *row_start[$i].add(p) }
                        };
                        let ai = _mm512_set1_ps(ai);
                        $lo = _mm512_fmadd_ps(ai, b0, $lo);
                        $hi = _mm512_fmadd_ps(ai, b1, $hi);
                    )*
                }
                [$([$lo, $hi]),*]
            }};
        }
        let acc: [[__m512; 2]; MR] = tile!(
            c0 d0 0, c1 d1 1, c2 d2 2, c3 d3 3, c4 d4 4, c5 d5 5,
            c6 d6 6, c7 d7 7, c8 d8 8, c9 d9 9, c10 d10 10, c11 d11 11
        );
        let lane_mask = |cols: usize| -> __mmask16 {
            if cols >= 16 {
                0xffff
            } else {
                (1u16 << cols) - 1
            }
        };
        let (m0, m1) = (lane_mask(nr), lane_mask(nr.saturating_sub(16)));
        for (i, row) in acc.iter().enumerate().take(mr) {
            let out = c.wrapping_add(i * ldc);
            // SAFETY: masked-off lanes are neither read nor written (no fault either); the enabled
            // lanes lie inside the caller's tile.
            unsafe {
                let (lo, hi) = if first {
                    (row[0], row[1])
                } else {
                    (
                        _mm512_add_ps(row[0], _mm512_maskz_loadu_ps(m0, out)),
                        _mm512_add_ps(row[1], _mm512_maskz_loadu_ps(m1, out.wrapping_add(16))),
                    )
                };
                _mm512_mask_storeu_ps(out, m0, lo);
                _mm512_mask_storeu_ps(out.wrapping_add(16), m1, hi);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kernel set this CPU runs (an AVX-512 machine tests both).
    fn supported_kernels() -> Vec<(&'static str, Kernels)> {
        let mut sets = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if has_avx512() {
                sets.push(("avx512", Kernels { in_place: avx512::kernel::<false>, packed: avx512::kernel::<true>, nr: avx512::NR }));
            } else {
                super::super::skip_hardware("sgemm/avx512", "no AVX-512F on this CPU");
            }
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                sets.push(("avx2", Kernels { in_place: avx2::kernel::<false>, packed: avx2::kernel::<true>, nr: avx2::NR }));
            }
        }
        sets
    }

    fn naive(a: MatRef, b: MatRef, m: usize, n: usize, k: usize) -> Vec<f64> {
        let mut c = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k)
                    .map(|p| {
                        a.data[i * a.row_stride + p * a.col_stride] as f64
                            * b.data[p * b.row_stride + j * b.col_stride] as f64
                    })
                    .sum();
            }
        }
        c
    }

    #[test]
    fn matches_naive_on_edge_shapes_and_layouts() {
        if !available() {
            super::super::skip_hardware("matches_naive_on_edge_shapes_and_layouts", NO_KERNELS);
            return;
        }
        let mut seed = 1u64;
        let mut next = move || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((seed >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        };
        for &(m, n, k) in
            &[(1, 1, 1), (13, 33, 7), (23, 47, 19), (145, 70, 300), (300, 3100, 64), (40, 64, 520), (12, 32, 256), (2, 5, 0), (50, 70, 1600)]
        {
            let a_data: Vec<f32> = (0..m * k).map(|_| next()).collect();
            let b_data: Vec<f32> = (0..k * n).map(|_| next()).collect();
            for (a, b) in [
                (MatRef::row_major(&a_data, k), MatRef::row_major(&b_data, n)),
                (MatRef::row_major(&a_data, k), MatRef::transposed(&b_data, k)),
                (MatRef::transposed(&a_data, m), MatRef::transposed(&b_data, k)),
            ] {
                let ldc = n + 3;
                let want = naive(a, b, m, n, k);
                for (name, kernels) in supported_kernels() {
                    let mut c = vec![f32::NAN; m * ldc];
                    run_bands(kernels, a, Rhs::Strided(b), &mut c, m, n, k, ldc, true);
                    for i in 0..m {
                        for j in 0..n {
                            let (got, want) = (c[i * ldc + j] as f64, want[i * n + j]);
                            assert!(
                                (got - want).abs() <= 1e-5 * (1.0 + want.abs()),
                                "{name} ({m},{n},{k}) [{i},{j}]: {got} vs {want}"
                            );
                        }
                        assert!(c[i * ldc + n..(i + 1) * ldc].iter().all(|x| x.is_nan()), "{name} wrote past column n");
                    }
                }
            }
        }
    }

    #[test]
    fn packed_b_serves_any_leading_corner() {
        if !available() {
            super::super::skip_hardware("packed_b_serves_any_leading_corner", NO_KERNELS);
            return;
        }
        let (m, k, n) = (30, 600, 70);
        let a_data: Vec<f32> = (0..m * k).map(|i| ((i * 7919) % 13) as f32 - 6.0).collect();
        let b_data: Vec<f32> = (0..k * n).map(|i| ((i * 104729) % 11) as f32 - 5.0).collect();
        for b in [MatRef::row_major(&b_data, n), MatRef::transposed(&b_data, k)] {
            for (kk, nn) in [(k, n), (257, 33), (64, 70), (1, 1), (600, 31)] {
                let a = MatRef::row_major(&a_data, k);
                // Integer-valued data: the products are exact, so compare exactly.
                let want = naive(a, b, m, nn, kk);
                for (name, kernels) in supported_kernels() {
                    let packed = PackedB::with_width(b, k, n, kernels.nr);
                    let mut c = vec![f32::NAN; m * nn];
                    run_bands(kernels, a, Rhs::Packed(&packed), &mut c, m, nn, kk, nn, false);
                    let got: Vec<f64> = c.iter().map(|&x| x as f64).collect();
                    assert_eq!(got, want, "{name} corner {kk} × {nn}");
                }
            }
        }
    }

    #[test]
    fn every_dot_variant_matches_f64() {
        if !available() {
            super::super::skip_hardware("every_dot_variant_matches_f64", NO_KERNELS);
            return;
        }
        for n in [0, 1, 7, 8, 15, 16, 17, 31, 33, 64, 100, 1000] {
            let a: Vec<f32> = (0..n).map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0).collect();
            let b: Vec<f32> = (0..n).map(|i| ((i * 53 % 97) as f32 - 48.0) / 48.0).collect();
            let want: f64 = a.iter().zip(&b).map(|(&x, &y)| x as f64 * y as f64).sum();
            #[cfg(target_arch = "x86_64")]
            {
                // SAFETY: AVX2 and FMA are present (`available()` above).
                let got = unsafe { avx2::dot(&a, &b) } as f64;
                assert!((got - want).abs() <= 1e-5 * (1.0 + want.abs()), "avx2 n={n}: {got} vs {want}");
                if has_avx512() {
                    // SAFETY: AVX-512F checked just above.
                    let got = unsafe { avx512::dot(&a, &b) } as f64;
                    assert!((got - want).abs() <= 1e-5 * (1.0 + want.abs()), "avx512 n={n}: {got} vs {want}");
                } else {
                    super::super::skip_hardware("every_dot_variant_matches_f64/avx512", "no AVX-512F on this CPU");
                }
            }
        }
    }
}
