//! Quantile helpers against numpy 2.4 (`np.quantile`, `np.nanquantile`, method "linear"); the
//! expected values were printed by numpy for exactly these inputs (float64 reprs, float32 bits).

use thoughtscope::plot::{lower_triangle_quantile, quantile, tril_quantile};

const VALUES: [f64; 7] = [0.3, 1.7, -2.0, 5.25, 0.0, 3.1, 2.2];

#[test]
fn quantile_matches_numpy_f64_exactly() {
    let expected = [
        (0.0, -2.0),
        (0.25, 0.15),
        (0.5, 1.7),
        (0.9, 3.960000000000001),
        (0.99, 5.120999999999999),
        (1.0, 5.25),
        (0.123, -0.524),
    ];
    for (q, want) in expected {
        assert_eq!(quantile(&VALUES, q).unwrap(), want, "q = {q}");
    }
}

#[test]
fn quantile_matches_numpy_f32_bits() {
    let values: Vec<f32> = VALUES.iter().map(|&v| v as f32).collect();
    // np.quantile(v.astype(np.float32), q).view(np.uint32)
    for (q, bits) in [(0.5, 1071225242u32), (0.9, 1081962660), (0.99, 1084481339), (0.123, 3204850909)] {
        let got = quantile(&values, q).unwrap();
        assert_eq!((got as f32).to_bits(), bits, "q = {q}: {got}");
        assert_eq!(got, f64::from(got as f32), "f32 arithmetic gives an f32 value");
    }
}

/// 4 × 4 with a NaN below the diagonal and 9s above it (which the lower triangle must ignore).
const M: [f64; 16] = [
    0.5, 9.0, 9.0, 9.0, //
    0.25, 0.75, 9.0, 9.0, //
    0.1, 0.2, 0.7, 9.0, //
    0.05, f64::NAN, 0.3, 0.65,
];

#[test]
fn lower_triangle_quantile_matches_numpy() {
    // np.nanquantile(M[np.tril_indices(4)], q)
    assert_eq!(lower_triangle_quantile(&M, 4, 0.99).unwrap(), 0.746);
    assert_eq!(lower_triangle_quantile(&M, 4, 0.9).unwrap(), 0.71);
    assert_eq!(lower_triangle_quantile(&M, 4, 0.5).unwrap(), 0.3);
    let m32: Vec<f32> = M.iter().map(|&v| v as f32).collect();
    assert_eq!(lower_triangle_quantile(&m32, 4, 0.99).unwrap(), 0.7459999918937683);
    assert_eq!(lower_triangle_quantile(&m32, 4, 0.9).unwrap(), 0.7099999785423279);
}

#[test]
fn tril_quantile_reproduces_upstream_zeros() {
    // np.nanquantile(np.tril(M), q): the six upper-triangle zeros pull it down.
    assert_eq!(tril_quantile(&M, 4, 0.99).unwrap(), 0.743);
    assert_eq!(tril_quantile(&M, 4, 0.9).unwrap(), 0.6799999999999999);
    assert_eq!(tril_quantile(&M, 4, 0.5).unwrap(), 0.1);
}

#[test]
fn bad_inputs_are_errors_or_nan() {
    let err = lower_triangle_quantile(&M, 3, 0.5).unwrap_err().to_string();
    assert!(err.contains("16 values") && err.contains("3 × 3"), "{err}");
    let err = quantile(&VALUES, 1.5).unwrap_err().to_string();
    assert!(err.contains("1.5"), "{err}");
    assert!(quantile::<f64>(&[], 0.5).unwrap().is_nan());
    assert!(quantile(&[f64::NAN, f64::NAN], 0.5).unwrap().is_nan());
    assert_eq!(quantile(&[4.0], 0.99).unwrap(), 4.0);
}
