//! numpy's floating-point reductions, reproduced operation for operation so that float32 results
//! match numpy bit for bit (vertical scores must match upstream to 1 ulp).
//!
//! - `np.sum` of a contiguous 1-D array: pairwise summation (`pairwise_sum`: below 8 elements a
//!   plain loop, up to 128 elements eight interleaved accumulators, above that split in halves at
//!   a multiple of 8) in the array's own dtype (float32 sums in float32). Checked against numpy
//!   2.4 up to 70,000 elements (no buffer-sized blocks for an unbuffered reduction).
//! - `np.mean` / `np.nanmean` of a 1-D float array: that sum divided by an `np.intp` count, which
//!   promotes to float64 and is cast back: `f32(f64(sum) / count)`.
//! - `np.nanmean` replaces NaN by 0 **in place** before summing (the zeros keep their positions in
//!   the pairwise tree) and divides by the non-NaN count.
//! - `np.median` of an even count: the float32 sum of the two middle values, halved.

/// A float type numpy reduces in its own precision (`float32` or `float64`).
pub trait NpFloat: Copy + PartialOrd + PartialEq + std::fmt::Debug + Send + Sync + 'static {
    const NAN: Self;
    const ZERO: Self;
    /// `np.finfo(dtype).eps`.
    const EPS: Self;
    /// numpy's name of the dtype.
    const DTYPE: &'static str;
    fn add(self, other: Self) -> Self;
    fn sub(self, other: Self) -> Self;
    fn mul(self, other: Self) -> Self;
    fn div(self, other: Self) -> Self;
    fn is_nan(self) -> bool;
    fn to_f64(self) -> f64;
    /// Round an f64 to this type (numpy `dtype.type(x)`).
    fn from_f64(value: f64) -> Self;
}

/// The two implementations differ only in the type and its numpy name.
macro_rules! np_float {
    ($t:ident, $dtype:literal) => {
        impl NpFloat for $t {
            const NAN: Self = $t::NAN;
            const ZERO: Self = 0.0;
            const EPS: Self = $t::EPSILON;
            const DTYPE: &'static str = $dtype;
            fn add(self, other: Self) -> Self {
                self + other
            }
            fn sub(self, other: Self) -> Self {
                self - other
            }
            fn mul(self, other: Self) -> Self {
                self * other
            }
            fn div(self, other: Self) -> Self {
                self / other
            }
            fn is_nan(self) -> bool {
                $t::is_nan(self)
            }
            // Exact for both types (f32 → f64 widens).
            fn to_f64(self) -> f64 {
                self as f64
            }
            fn from_f64(value: f64) -> Self {
                value as $t
            }
        }
    };
}

np_float!(f32, "float32");
np_float!(f64, "float64");

/// numpy `PW_BLOCKSIZE`.
const PAIRWISE_BLOCK: usize = 128;

/// numpy `@TYPE@_pairwise_sum`.
fn pairwise_sum<T: NpFloat>(a: &[T]) -> T {
    let n = a.len();
    if n < 8 {
        let mut res = T::ZERO;
        for &x in a {
            res = res.add(x);
        }
        res
    } else if n <= PAIRWISE_BLOCK {
        let mut r = [T::ZERO; 8];
        r.copy_from_slice(&a[..8]);
        let full = n - n % 8;
        let mut i = 8;
        while i < full {
            for (j, acc) in r.iter_mut().enumerate() {
                *acc = acc.add(a[i + j]);
            }
            i += 8;
        }
        let mut res = r[0].add(r[1]).add(r[2].add(r[3])).add(r[4].add(r[5]).add(r[6].add(r[7])));
        for &x in &a[i..] {
            res = res.add(x);
        }
        res
    } else {
        let mut n2 = n / 2;
        n2 -= n2 % 8;
        pairwise_sum(&a[..n2]).add(pairwise_sum(&a[n2..]))
    }
}

/// `np.sum` of a contiguous 1-D array (the reduction identity 0 plus the pairwise sum).
pub(crate) fn np_sum<T: NpFloat>(a: &[T]) -> T {
    T::ZERO.add(pairwise_sum(a))
}

/// `sum / count` as numpy divides a reduction by an `np.intp` count.
pub(crate) fn divide_by_count<T: NpFloat>(sum: T, count: usize) -> T {
    T::from_f64(sum.to_f64() / count as f64)
}

/// `np.mean` of a 1-D array (NaN for an empty one).
pub(crate) fn np_mean<T: NpFloat>(a: &[T]) -> T {
    divide_by_count(np_sum(a), a.len())
}

/// `np.nanmean` of a 1-D array (NaN when nothing is left).
pub(crate) fn np_nanmean<T: NpFloat>(a: &[T]) -> T {
    let mut count = 0;
    let zeroed: Vec<T> = a
        .iter()
        .map(|&x| {
            if x.is_nan() {
                T::ZERO
            } else {
                count += 1;
                x
            }
        })
        .collect();
    divide_by_count(np_sum(&zeroed), count)
}

/// `np.nanmedian` of a 1-D array (NaN when nothing is left).
pub(crate) fn np_nanmedian<T: NpFloat>(a: &[T]) -> T {
    let mut values: Vec<T> = a.iter().copied().filter(|x| !x.is_nan()).collect();
    let n = values.len();
    if n == 0 {
        return T::NAN;
    }
    values.sort_by(|x, y| x.partial_cmp(y).expect("no NaN left"));
    if n % 2 == 1 {
        values[n / 2]
    } else {
        // `np.mean(part[n/2-1 : n/2+1])`: a two-element sum in the dtype, then divided.
        divide_by_count(T::ZERO.add(values[n / 2 - 1]).add(values[n / 2]), 2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairwise_tree_shape() {
        // 9 values: eight accumulators, then the ninth added last.
        let a: Vec<f32> = (0..9).map(|i| 1.0 + i as f32 * 1e-7).collect();
        let r: f32 = a[0] + a[1] + (a[2] + a[3]) + (a[4] + a[5] + (a[6] + a[7])) + a[8];
        assert_eq!(np_sum(&a), r);
    }

    #[test]
    fn nanmean_and_median() {
        assert_eq!(np_nanmean(&[1.0f32, f32::NAN, 2.0]), 1.5);
        assert!(np_nanmean::<f32>(&[f32::NAN]).is_nan());
        assert!(np_nanmean::<f32>(&[]).is_nan());
        assert_eq!(np_nanmedian(&[3.0f64, f64::NAN, 1.0, 2.0, 10.0]), 2.5);
        assert_eq!(np_nanmedian(&[3.0f64, 1.0, 2.0]), 2.0);
    }
}
