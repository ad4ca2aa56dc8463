//! A reference BLAS (feature `openblas`): `cblas_sgemm` from the system's OpenBLAS (Debian's
//! `libopenblas-dev`, installed by `scripts/install-openblas.sh`), declared here by hand so the
//! feature adds no crate and builds nothing but this one. The forward bench measures its GEMM
//! rate beside `sgemm`'s on the model's shapes: the roofline is the best GEMM on the host, not
//! our own.

use std::ffi::c_int;
use std::sync::Once;

use super::sgemm::MatRef;

const CBLAS_ROW_MAJOR: c_int = 101;
const CBLAS_NO_TRANS: c_int = 111;
const CBLAS_TRANS: c_int = 112;

#[link(name = "openblas")]
extern "C" {
    #[allow(clippy::too_many_arguments)]
    fn cblas_sgemm(
        layout: c_int,
        trans_a: c_int,
        trans_b: c_int,
        m: c_int,
        n: c_int,
        k: c_int,
        alpha: f32,
        a: *const f32,
        lda: c_int,
        b: *const f32,
        ldb: c_int,
        beta: f32,
        c: *mut f32,
        ldc: c_int,
    );
    fn openblas_set_num_threads(threads: c_int);
    fn openblas_get_corename() -> *const std::ffi::c_char;
}

static THREADS: Once = Once::new();

/// OpenBLAS on as many threads as rayon's pool (ours), so the two GEMMs are compared on the same
/// cores.
fn match_threads() {
    THREADS.call_once(|| {
        let threads = rayon::current_num_threads().max(1) as c_int;
        // SAFETY: a plain setter of OpenBLAS's thread count.
        unsafe { openblas_set_num_threads(threads) }
    });
}

/// The kernel family OpenBLAS picked for this CPU (e.g. `Haswell`, `SkylakeX`).
pub fn core_name() -> String {
    // SAFETY: OpenBLAS returns a static NUL-terminated string.
    unsafe { std::ffi::CStr::from_ptr(openblas_get_corename()) }.to_string_lossy().into_owned()
}

/// A view's cblas form: (transpose flag, leading dimension), or `None` for a view that is
/// neither row-major nor transposed row-major (cblas has no general strides).
fn cblas_view(m: MatRef, cols: usize) -> Option<(c_int, usize)> {
    if m.col_stride == 1 && m.row_stride >= cols.max(1) {
        Some((CBLAS_NO_TRANS, m.row_stride))
    } else if m.row_stride == 1 {
        Some((CBLAS_TRANS, m.col_stride))
    } else {
        None
    }
}

/// `c = a · b` as [`super::sgemm::matmul`] computes it (same views and output), through OpenBLAS.
/// Panics on a view cblas cannot describe or one shorter than its shape (caller bugs).
pub fn matmul(a: MatRef, b: MatRef, c: &mut [f32], m: usize, n: usize, k: usize, ldc: usize) {
    assert!(n <= ldc && (m == 0 || (m - 1) * ldc + n <= c.len()), "blas::matmul: output too short");
    if k == 0 {
        // An empty sum (and views whose strides cblas might refuse).
        c.chunks_mut(ldc).take(m).for_each(|row| row[..n].fill(0.0));
        return;
    }
    let (ta, lda) = cblas_view(a, k).expect("blas::matmul: A needs unit row or column stride");
    let (tb, ldb) = cblas_view(b, n).expect("blas::matmul: B needs unit row or column stride");
    let extent = |v: MatRef, rows: usize, cols: usize| if rows == 0 || cols == 0 { 0 } else { (rows - 1) * v.row_stride + (cols - 1) * v.col_stride + 1 };
    assert!(extent(a, m, k) <= a.data.len() && extent(b, k, n) <= b.data.len(), "blas::matmul: a view is shorter than its shape");
    if m == 0 || n == 0 {
        return;
    }
    let int = |x: usize| c_int::try_from(x).expect("blas::matmul: dimension beyond i32");
    match_threads();
    // SAFETY: every view was checked to hold its shape at its strides, `c` holds `m` rows of
    // `ldc`; cblas reads nothing else.
    unsafe {
        cblas_sgemm(
            CBLAS_ROW_MAJOR,
            ta,
            tb,
            int(m),
            int(n),
            int(k),
            1.0,
            a.data.as_ptr(),
            int(lda.max(1)),
            b.data.as_ptr(),
            int(ldb.max(1)),
            0.0,
            c.as_mut_ptr(),
            int(ldc.max(1)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::sgemm;
    use super::*;

    /// OpenBLAS and our kernels agree on random shapes and all three layouts the model uses.
    #[test]
    fn openblas_equals_sgemm_on_random_shapes() {
        if !sgemm::available() {
            super::super::skip_hardware("openblas_equals_sgemm_on_random_shapes", sgemm::NO_KERNELS);
            return;
        }
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(20);
        for _ in 0..24 {
            let (m, n, k) = (rng.random_range(1..300), rng.random_range(1..300), rng.random_range(0..700));
            let a: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1.0..1.0)).collect();
            let b: Vec<f32> = (0..k * n).map(|_| rng.random_range(-1.0..1.0)).collect();
            for (va, vb) in [
                (MatRef::row_major(&a, k), MatRef::row_major(&b, n)),
                (MatRef::row_major(&a, k), MatRef::transposed(&b, k)),
                (MatRef::transposed(&a, m), MatRef::row_major(&b, n)),
            ] {
                let ldc = n + 1;
                let (mut ours, mut theirs) = (vec![f32::NAN; m * ldc], vec![f32::NAN; m * ldc]);
                sgemm::matmul(va, vb, &mut ours, m, n, k, ldc);
                matmul(va, vb, &mut theirs, m, n, k, ldc);
                for i in 0..m {
                    for j in 0..n {
                        let (x, y) = (ours[i * ldc + j], theirs[i * ldc + j]);
                        // Sums of k products of |x| ≤ 1 in a different order: f32 rounding grows as √k.
                        let tol = 1e-6 * (k as f32).max(1.0).sqrt() * 8.0;
                        assert!((x - y).abs() <= tol, "({m},{n},{k}) [{i},{j}]: ours {x} vs OpenBLAS {y}");
                    }
                    assert!(theirs[i * ldc + n..(i + 1) * ldc].iter().all(|x| x.is_nan()), "OpenBLAS wrote past column n");
                }
            }
        }
    }
}
