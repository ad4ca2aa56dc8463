//! Golden values of thought-anchors' functions (`get_chunk_ranges`, `_compute_averaged_matrix`,
//! `generate_text_hash`, `get_vertical_scores`, receiver heads), computed with the original Python code.

#![allow(clippy::excessive_precision, clippy::needless_range_loop)]

use thoughtscope::attention::{average_matrix, get_chunk_ranges, text_id, SentenceAttention};
use thoughtscope::scores::{
    head_kurtosis, head_vertical_scores, mean_kurtosis, receiver_heads, receiver_scores, top_k_heads, vertical_scores,
    Dtype, ScoreType, VerticalOptions,
};

const NAN: f64 = f64::NAN;

/// Golden G1 input: `M[i,j] = ((7i + 3j) mod 11 + 1)/100` for `j ≤ i`, 0 above, float32.
fn g1_matrix() -> Vec<f32> {
    let mut m = vec![0f32; 64];
    for i in 0..8 {
        for j in 0..=i {
            m[i * 8 + j] = ((((7 * i + 3 * j) % 11) + 1) as f64 / 100.0) as f32;
        }
    }
    m
}

fn options(p: usize, control_depth: bool, score_type: ScoreType) -> VerticalOptions {
    VerticalOptions { proximity_ignore: p, control_depth, score_type }
}

/// Within one float32 ulp (f32 results) or 1e-9 (f64 results), or within the 8-decimal printing
/// of a numpy array (5e-9) that some goldens were copied from; NaN must match NaN. Exact
/// numpy parity is checked in `numpy_parity.rs`.
fn assert_scores(got: &[f64], dtype: Dtype, expected: &[f64], what: &str) {
    assert_eq!(got.len(), expected.len(), "{what}: length");
    for (k, (&g, &e)) in got.iter().zip(expected).enumerate() {
        if e.is_nan() {
            assert!(g.is_nan(), "{what}[{k}]: expected NaN, got {g}");
            continue;
        }
        match dtype {
            Dtype::Float32 => {
                let (g, e) = (g as f32, e as f32);
                let ulps = (g.to_bits() as i64 - e.to_bits() as i64).abs();
                assert!(ulps <= 1 || (g - e).abs() <= 5e-9, "{what}[{k}]: {g} vs {e} ({ulps} ulp)");
            }
            Dtype::Float64 => assert!((g - e).abs() <= 1e-9, "{what}[{k}]: {g} vs {e}"),
        }
    }
}

#[test]
fn vertical_scores_g1_table() {
    let m = g1_matrix();
    let table: [(usize, bool, ScoreType, Dtype, [f64; 8]); 7] = [
        (4, false, ScoreType::Mean, Dtype::Float32, [0.065, 0.05666667, 0.03, 0.04, NAN, NAN, NAN, NAN]),
        (4, true, ScoreType::Mean, Dtype::Float64, [0.8125, 0.7777777777777777, 0.4583333333333333, 0.5, NAN, NAN, NAN, NAN]),
        (2, false, ScoreType::Median, Dtype::Float32, [0.065, 0.06, 0.035, 0.04, 0.09, 0.1, NAN, NAN]),
        (
            2,
            true,
            ScoreType::Mean,
            Dtype::Float64,
            [0.7444444444444445, 0.6566666666666667, 0.475, 0.3944444444444444, 0.8333333333333333, 1.0, NAN, NAN],
        ),
        (
            2,
            true,
            ScoreType::Median,
            Dtype::Float64,
            [0.7333333333333334, 0.75, 0.3666666666666667, 0.3333333333333333, 0.8333333333333333, 1.0, NAN, NAN],
        ),
        (0, false, ScoreType::Mean, Dtype::Float32, [0.0625, 0.06857143, 0.054999996, 0.054, 0.074999996, 0.06666667, 0.04, 0.05]),
        (
            1,
            true,
            ScoreType::Mean,
            Dtype::Float64,
            [
                0.7221088435374149,
                0.6928571428571427,
                0.5119047619047619,
                0.4488095238095238,
                0.7714285714285715,
                0.6666666666666666,
                0.2857142857142857,
                NAN,
            ],
        ),
    ];
    for (p, depth, agg, dtype, expected) in table {
        let scores = vertical_scores(&m, 8, &options(p, depth, agg)).unwrap();
        let what = format!("p={p} depth={depth} {agg:?}");
        assert_eq!(scores.dtype, dtype, "{what}: dtype");
        assert_scores(&scores.values, dtype, &expected, &what);
    }
}

#[test]
fn vertical_scores_ties_get_average_ranks() {
    let mut b = vec![0f32; 36];
    for i in 0..6 {
        for j in 0..=i {
            b[i * 6 + j] = 0.25;
        }
    }
    b[5 * 6] = 0.5;
    let scores = vertical_scores(&b, 6, &options(2, true, ScoreType::Mean)).unwrap();
    assert_eq!(scores.dtype, Dtype::Float64);
    // The golden is printed to 8 decimals.
    for (g, e) in scores.values.iter().zip([0.85416667, 0.63888889, 0.58333333, 0.5, NAN, NAN]) {
        assert!((g - e).abs() < 5e-9 || (g.is_nan() && e.is_nan()), "{g} vs {e}");
    }
    // Exact: row 5 ranks 0.5 first (1.0) and ties 0.25, 0.25 at 1.5/2 each.
    assert_eq!(scores.values[3], 0.5);
}

#[test]
fn vertical_scores_nan_rules() {
    // n ≤ p: everything NaN; input NaNs are missing values, not zeros.
    let m = g1_matrix();
    let all_nan = vertical_scores(&m, 8, &options(8, false, ScoreType::Mean)).unwrap();
    assert!(all_nan.values.iter().all(|v| v.is_nan()));
    let mut with_nan = m.clone();
    with_nan[5 * 8] = f32::NAN; // M[5,0]
    let a = vertical_scores(&with_nan, 8, &options(4, false, ScoreType::Mean)).unwrap();
    // Column 0 keeps rows 4, 6, 7.
    let expected = (m[4 * 8] + m[6 * 8] + m[7 * 8]) as f64 / 3.0;
    assert!((a.values[0] - expected).abs() < 1e-7, "{} vs {expected}", a.values[0]);
    assert_eq!(vertical_scores(&[], 0, &VerticalOptions::default()).unwrap().len(), 0);
    assert!(vertical_scores(&m, 7, &VerticalOptions::default()).is_err(), "64 values are not 7×7");
}

#[test]
fn json_prints_float32_shortest_and_null() {
    let scores = vertical_scores(&g1_matrix(), 8, &options(4, false, ScoreType::Mean)).unwrap();
    let json = serde_json::to_string(&scores).unwrap();
    assert!(json.starts_with("[0.065,0.05666667,"), "{json}");
    assert!(json.ends_with(",null,null,null,null]"), "{json}");
}

/// Averaging golden G2: T = 16, fp16-rounded attention rows, bounds with an empty and a clipped range.
#[test]
fn averaging_g2() {
    let t = 16;
    let mut a = vec![0f32; t * t];
    for q in 0..t {
        let weights: Vec<f64> = (0..=q).map(|k| ((((5 * q + 3 * k) % 7) + 1) * if k == 0 { 8 } else { 1 }) as f64).collect();
        let total: f64 = weights.iter().sum();
        for (k, w) in weights.iter().enumerate() {
            a[q * t + k] = half::f16::from_f64(w / total).to_f32();
        }
    }
    let bounds = [(2, 5), (5, 9), (9, 9), (9, 13), (13, 16)];
    let m = average_matrix(&a, t, &bounds).unwrap();
    #[rustfmt::skip]
    let expected: [f32; 25] = [
        0.049357098, 0.0, 0.0, 0.0, 0.0,
        0.080443062, 0.048484802, 0.0, 0.0, 0.0,
        0.0, 0.0, 0.0, 0.0, 0.0,
        0.055558521, 0.052901268, 0.0, 0.030640602, 0.0,
        0.058982849, 0.055904388, 0.0, 0.054636002, 0.046157837,
    ];
    for (k, (g, e)) in m.iter().zip(expected).enumerate() {
        assert!((g - e).abs() <= 1e-7, "M[{}][{}] = {g}, expected {e}", k / 5, k % 5);
    }
}

#[test]
fn hash_goldens() {
    assert_eq!(text_id("abc", &["a", "bc"]), "199c47ee0b6f7f64");
    assert_eq!(text_id::<&str>("abc", &[]), "ba7816bf8f01cfea");
}

/// `get_chunk_ranges`: the `last + k` stop test cuts the second chunk to "defghijkl".
#[test]
fn chunk_ranges_end_quirk() {
    let text = "abc. defghijklmnop. xy";
    let located = get_chunk_ranges(text, &["abc.", "defghijklmnop."]);
    assert_eq!(located.ranges, vec![(0, 5), (5, 14)]);
    assert_eq!(&text[5..14], "defghijkl");
}

/// Receiver-head golden: L = 3, H = 4, two responses (N = 10, 12), p = 4.
/// Sentence matrices whose entry `(i, j ≤ i)` of layer `l`, head `h` is `value(i, j, l, h)`.
fn lower_triangular(layers: usize, heads: usize, n: usize, value: impl Fn(usize, usize, usize, usize) -> f32) -> SentenceAttention {
    let mut att = SentenceAttention::zeros(layers, heads, n);
    for l in 0..layers {
        for h in 0..heads {
            let m = att.matrix_mut(l, h);
            for i in 0..n {
                for j in 0..=i {
                    m[i * n + j] = value(i, j, l, h);
                }
            }
        }
    }
    att
}

#[test]
fn receiver_head_golden() {
    let (layers, heads) = (3, 4);
    let response = |r: usize, n: usize| {
        lower_triangular(layers, heads, n, |i, j, l, h| {
            (((((i + 1) * (j + 2) * (l + 3) * (h + 5) * (r + 7)) % 97) + 1) as f64 / 1000.0) as f32
        })
    };
    let responses = [response(0, 10), response(1, 12)];
    let opts = VerticalOptions::default();
    let v0 = head_vertical_scores(&responses[0], &opts);
    assert_eq!(v0.dtype, Dtype::Float32);
    assert_scores(v0.head(1, 2), Dtype::Float32, &[0.031, 0.049, 0.069, 0.05866666, 0.018, 0.044, NAN, NAN, NAN, NAN], "V_0[1,2]");

    let kurt: Vec<_> = responses.iter().map(|a| head_kurtosis(&head_vertical_scores(a, &opts))).collect();
    let mean = mean_kurtosis(&kurt).unwrap();
    let expected = [
        [0.046222, -0.845323, -0.500916, -1.005012],
        [-0.372921, -1.005012, -0.110338, -1.07182],
        [-1.375153, -0.218646, -0.476594, 0.171133],
    ];
    for l in 0..layers {
        for h in 0..heads {
            let (g, e) = (mean.get(l, h), expected[l][h]);
            assert!((g - e).abs() <= 1e-6 + 1e-5 * e.abs(), "mean kurtosis [{l}, {h}] = {g}, expected {e}");
        }
    }
    let top = top_k_heads(&mean, 3);
    assert_eq!(top, vec![(2, 3), (0, 0), (1, 2)]);
    let scores = receiver_scores(&v0, &top).unwrap();
    assert_scores(
        &scores,
        Dtype::Float32,
        &[0.04988889, 0.05766666, 0.06241666, 0.05066666, 0.04666667, 0.04233333, NAN, NAN, NAN, NAN],
        "receiver score r0",
    );

    // The one-call corpus version agrees.
    let all = receiver_heads(
        responses.iter().enumerate().map(|(r, a)| Ok((format!("r{r}"), a.clone()))),
        &thoughtscope::scores::ReceiverOptions { top_k: 3, vertical: opts },
    )
    .unwrap();
    assert_eq!(all.top_k_heads, top);
    assert_eq!(all.mean_kurtosis, mean);
}

#[test]
fn a_response_too_short_for_the_proximity_band_is_skipped_with_a_note() {
    let response = |n: usize| {
        lower_triangular(2, 3, n, |i, j, l, h| ((((i + 1) * (j + 3) * (l + 2) * (h + 5)) % 89 + 1) as f64 / 1000.0) as f32)
    };
    let options = thoughtscope::scores::ReceiverOptions { top_k: 3, vertical: VerticalOptions::default() };
    // proximity_ignore 4: a 4-sentence response has no vertical score at all.
    let corpus = [("long", response(12)), ("short", response(4))];
    let all = receiver_heads(corpus.iter().map(|(name, a)| Ok((name.to_string(), a.clone()))), &options).unwrap();
    assert_eq!(all.responses, ["long"]);
    assert_eq!(all.top_k_heads.len(), 3);
    assert_eq!(all.skipped.len(), 1);
    assert!(all.skipped[0].0 == "short" && all.skipped[0].1.contains("proximity"), "{:?}", all.skipped);
    let only_short = receiver_heads([Ok(("short".to_string(), response(4)))], &options).unwrap_err().to_string();
    assert!(only_short.contains("no response") && only_short.contains("short"), "{only_short}");
}
