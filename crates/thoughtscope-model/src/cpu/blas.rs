//! A reference BLAS: `cblas_sgemm` from the system's OpenBLAS (Debian's `libopenblas-dev`,
//! installed by `scripts/install-openblas.sh`), loaded at run time. The forward bench measures its
//! GEMM rate beside `sgemm`'s on the model's shapes: the roofline is the best GEMM on the host, not
//! our own. Loading it when asked (rather than linking it behind a cargo feature) means one build
//! serves both: the tests and the bench use OpenBLAS wherever it is installed, and no second build
//! of the crates is needed to compare against it.

use std::ffi::{c_char, c_int};
use std::sync::{Once, OnceLock};

use super::sgemm::MatRef;

const CBLAS_ROW_MAJOR: c_int = 101;
const CBLAS_NO_TRANS: c_int = 111;
const CBLAS_TRANS: c_int = 112;

/// The names the dynamic loader is asked for, in order: Debian's runtime package installs the
/// first, the `-dev` package adds the second.
const LIBRARY_NAMES: [&str; 2] = ["libopenblas.so.0", "libopenblas.so"];

type Sgemm = unsafe extern "C" fn(
    c_int, c_int, c_int, c_int, c_int, c_int, f32, *const f32, c_int, *const f32, c_int, f32, *mut f32, c_int,
);

/// The three OpenBLAS entry points this module calls; the library stays loaded for the process.
struct OpenBlas {
    sgemm: Sgemm,
    set_num_threads: unsafe extern "C" fn(c_int),
    core_name: unsafe extern "C" fn() -> *const c_char,
    _library: libloading::Library,
}

fn load() -> Result<OpenBlas, String> {
    let mut errors = Vec::new();
    for name in LIBRARY_NAMES {
        // SAFETY: loading OpenBLAS runs its initialisers, which only detect the CPU and set up
        // its thread pool.
        let library = match unsafe { libloading::Library::new(name) } {
            Ok(library) => library,
            Err(e) => {
                errors.push(format!("{name}: {e}"));
                continue;
            }
        };
        // SAFETY: the types are cblas's and OpenBLAS's documented C signatures.
        let symbols = unsafe {
            (|| -> Result<_, libloading::Error> {
                Ok((
                    *library.get::<Sgemm>(b"cblas_sgemm\0")?,
                    *library.get::<unsafe extern "C" fn(c_int)>(b"openblas_set_num_threads\0")?,
                    *library.get::<unsafe extern "C" fn() -> *const c_char>(b"openblas_get_corename\0")?,
                ))
            })()
        };
        match symbols {
            Ok((sgemm, set_num_threads, core_name)) => return Ok(OpenBlas { sgemm, set_num_threads, core_name, _library: library }),
            Err(e) => errors.push(format!("{name}: {e}")),
        }
    }
    Err(format!("OpenBLAS not found ({}); bash scripts/install-openblas.sh installs it", errors.join("; ")))
}

fn openblas() -> Result<&'static OpenBlas, &'static str> {
    static OPENBLAS: OnceLock<Result<OpenBlas, String>> = OnceLock::new();
    OPENBLAS.get_or_init(load).as_ref().map_err(String::as_str)
}

/// Whether OpenBLAS could be loaded, and why not.
pub fn available() -> Result<(), &'static str> {
    openblas().map(|_| ())
}

static THREADS: Once = Once::new();

/// OpenBLAS on as many threads as rayon's pool (ours), so the two GEMMs are compared on the same
/// cores.
fn match_threads(blas: &OpenBlas) {
    THREADS.call_once(|| {
        let threads = rayon::current_num_threads().max(1) as c_int;
        // SAFETY: a plain setter of OpenBLAS's thread count.
        unsafe { (blas.set_num_threads)(threads) }
    });
}

/// The kernel family OpenBLAS picked for this CPU (e.g. `Haswell`, `SkylakeX`), when it is installed.
pub fn core_name() -> Option<String> {
    let blas = openblas().ok()?;
    // SAFETY: OpenBLAS returns a static NUL-terminated string.
    Some(unsafe { std::ffi::CStr::from_ptr((blas.core_name)()) }.to_string_lossy().into_owned())
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
/// Panics when OpenBLAS is not installed (check [`available`] first), on a view cblas cannot
/// describe or one shorter than its shape (caller bugs).
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
    let blas = match openblas() {
        Ok(blas) => blas,
        Err(why) => panic!("blas::matmul: {why}"),
    };
    match_threads(blas);
    // SAFETY: every view was checked to hold its shape at its strides, `c` holds `m` rows of
    // `ldc`; cblas reads nothing else.
    unsafe {
        (blas.sgemm)(
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
        if let Err(why) = available() {
            // Not a hardware limit: under THOUGHTSCOPE_NO_SKIP (CI) a missing OpenBLAS fails.
            let no_skip = std::env::var("THOUGHTSCOPE_NO_SKIP").is_ok_and(|v| !v.is_empty() && v != "0");
            assert!(!no_skip, "openblas_equals_sgemm_on_random_shapes: {why}");
            eprintln!("SKIP openblas_equals_sgemm_on_random_shapes: {why}");
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
