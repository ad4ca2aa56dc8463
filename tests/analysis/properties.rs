//! Property tests: the streaming sentence averager against a naive block mean (`_compute_averaged_matrix`), and
//! vertical scores against a naive `get_vertical_scores` on random matrices with NaNs and ties.

#![allow(clippy::needless_range_loop)]

use proptest::prelude::*;
use thoughtscope::attention::{average_matrix, AttentionBlock, AttentionSink, SentenceAverager};
use thoughtscope::scores::{vertical_scores, ScoreType, VerticalOptions};

/// Upstream `_compute_averaged_matrix`, in f64.
fn naive_average(a: &[f32], t: usize, bounds: &[(usize, usize)]) -> Vec<f64> {
    let n = bounds.len();
    let last = t.saturating_sub(1);
    let mut m = vec![0.0; n * n];
    for i in 0..n {
        let (r0, r1) = (bounds[i].0.min(last), bounds[i].1.min(last));
        if r0 >= r1 {
            continue;
        }
        for j in 0..n {
            let (c0, c1) = (bounds[j].0.min(last), bounds[j].1.min(last));
            if c0 >= c1 {
                continue;
            }
            let sum: f64 = (r0..r1).flat_map(|q| (c0..c1).map(move |k| (q, k))).map(|(q, k)| f64::from(a[q * t + k])).sum();
            m[i * n + j] = sum / ((r1 - r0) * (c1 - c0)) as f64;
        }
    }
    m
}

/// Query rows `q_start..q_start + rows` of the causal `t × t` matrix `a` as a block of `heads`
/// heads (head h scaled by h + 1), keys up to the block's last row: `[heads, rows, kv_len]`.
fn block_probs(a: &[f32], t: usize, heads: usize, q_start: usize, rows: usize) -> Vec<f32> {
    let kv_len = q_start + rows;
    let mut probs = Vec::with_capacity(heads * rows * kv_len);
    for h in 0..heads {
        for q in q_start..q_start + rows {
            probs.extend(a[q * t..q * t + kv_len].iter().map(|&v| v * (h + 1) as f32));
        }
    }
    probs
}

fn close(got: f32, expected: f64) -> bool {
    (f64::from(got) - expected).abs() <= 1e-6 * expected.abs().max(1e-3)
}

/// A causal `t × t` matrix (zeros above the diagonal) and bounds that may be empty, overlap, or
/// reach past T.
fn causal_case() -> impl Strategy<Value = (usize, Vec<f32>, Vec<(usize, usize)>)> {
    (1usize..32).prop_flat_map(|t| {
        let values = proptest::collection::vec(0.0f32..1.0, t * t);
        let bounds = proptest::collection::vec((0usize..t + 3, 0usize..6), 0..7);
        (Just(t), values, bounds).prop_map(|(t, mut values, bounds)| {
            for q in 0..t {
                for k in q + 1..t {
                    values[q * t + k] = 0.0;
                }
            }
            let bounds = bounds.into_iter().map(|(s, len)| (s, s + len)).collect();
            (t, values, bounds)
        })
    })
}

proptest! {
    #[test]
    fn average_matrix_matches_naive_block_means((t, a, bounds) in causal_case()) {
        let got = average_matrix(&a, t, &bounds).unwrap();
        let expected = naive_average(&a, t, &bounds);
        for (k, (&g, &e)) in got.iter().zip(&expected).enumerate() {
            prop_assert!(close(g, e), "cell {k}: {g} vs {e}");
        }
    }

    /// Streaming: 2 heads (the matrix and its scaled copy), query blocks of random sizes, each cut
    /// at the last key its rows can see, as the model runtime sends them.
    /// GPU: the reduction a GPU block takes (`consume_on_device`, `R · P · C` there, f32)
    /// gives the naive means too; run here on CPU tensors, the same candle ops a CUDA device runs.
    /// Every other block goes the host way, so a layer mixing both is covered as well.
    #[test]
    fn device_reduced_blocks_match_naive((t, a, bounds) in causal_case(), block_rows in 1usize..9, mixed in any::<bool>()) {
        let heads = 2;
        let mut sink = SentenceAverager::new(bounds.clone(), 1, heads).expect_tokens(t);
        let (mut q_start, mut index) = (0, 0);
        while q_start < t {
            let rows = block_rows.min(t - q_start);
            let kv_len = q_start + rows;
            let probs = block_probs(&a, t, heads, q_start, rows);
            if mixed && index % 2 == 1 {
                sink.consume(AttentionBlock { layer: 0, q_start, heads, rows, kv_len, total_keys: t, probs: &probs }).unwrap();
            } else {
                let tensor = candle_core::Tensor::from_vec(probs, (heads, rows, kv_len), &candle_core::Device::Cpu).unwrap();
                prop_assert!(sink.consume_on_device(0, q_start, t, &tensor).unwrap());
            }
            q_start += rows;
            index += 1;
        }
        let att = sink.finish().unwrap();
        let expected = naive_average(&a, t, &bounds);
        for h in 0..heads {
            for (k, (&g, &e)) in att.matrix(0, h).iter().zip(&expected).enumerate() {
                let e = e * (h + 1) as f64;
                prop_assert!(close(g, e), "head {h} cell {k}: {g} vs {e}");
            }
        }
    }

    #[test]
    fn streamed_blocks_match_naive((t, a, bounds) in causal_case(), block_rows in 1usize..9, layers in 1usize..3) {
        let heads = 2;
        let mut sink = SentenceAverager::new(bounds.clone(), layers, heads).expect_tokens(t);
        for layer in 0..layers {
            let mut q_start = 0;
            while q_start < t {
                let rows = block_rows.min(t - q_start);
                let kv_len = q_start + rows;
                let probs = block_probs(&a, t, heads, q_start, rows);
                sink.consume(AttentionBlock { layer, q_start, heads, rows, kv_len, total_keys: t, probs: &probs }).unwrap();
                q_start += rows;
            }
        }
        let att = sink.finish().unwrap();
        let expected = naive_average(&a, t, &bounds);
        for layer in 0..layers {
            for h in 0..heads {
                for (k, (&g, &e)) in att.matrix(layer, h).iter().zip(&expected).enumerate() {
                    let e = e * (h + 1) as f64;
                    prop_assert!(close(g, e), "layer {layer} head {h} cell {k}: {g} vs {e}");
                }
            }
        }
    }
}

/// Upstream `get_vertical_scores` in f64, ranks by counting (ties → mean rank).
fn naive_vertical(m: &[f32], n: usize, p: usize, control_depth: bool, median: bool) -> Vec<f64> {
    let valid = |i: usize, j: usize| j <= i && i - j >= p && !m[i * n + j].is_nan();
    let mut x = vec![f64::NAN; n * n];
    for i in 0..n {
        let row: Vec<usize> = (0..n).filter(|&j| valid(i, j)).collect();
        for &j in &row {
            x[i * n + j] = if control_depth {
                let v = m[i * n + j];
                let less = row.iter().filter(|&&k| m[i * n + k] < v).count() as f64;
                let equal = row.iter().filter(|&&k| m[i * n + k] == v).count() as f64;
                (less + (equal + 1.0) / 2.0) / row.len() as f64
            } else {
                f64::from(m[i * n + j])
            };
        }
    }
    (0..n)
        .map(|j| {
            let mut column: Vec<f64> = ((j + p).min(n)..n).map(|i| x[i * n + j]).filter(|v| !v.is_nan()).collect();
            if column.is_empty() {
                return f64::NAN;
            }
            if median {
                column.sort_by(|a, b| a.partial_cmp(b).unwrap());
                let k = column.len();
                if k % 2 == 1 { column[k / 2] } else { (column[k / 2 - 1] + column[k / 2]) / 2.0 }
            } else {
                column.iter().sum::<f64>() / column.len() as f64
            }
        })
        .collect()
}

/// Matrices on a coarse grid (many ties), with NaNs.
fn tied_matrix() -> impl Strategy<Value = (usize, Vec<f32>)> {
    (0usize..14).prop_flat_map(|n| {
        let cell = prop_oneof![8 => (0u8..5).prop_map(|k| f32::from(k) * 0.25), 1 => Just(f32::NAN)];
        (Just(n), proptest::collection::vec(cell, n * n))
    })
}

proptest! {
    #[test]
    fn vertical_scores_match_naive((n, m) in tied_matrix(), p in 0usize..7, control_depth: bool, median: bool) {
        let options = VerticalOptions {
            proximity_ignore: p,
            control_depth,
            score_type: if median { ScoreType::Median } else { ScoreType::Mean },
        };
        let got = vertical_scores(&m, n, &options).unwrap();
        let expected = naive_vertical(&m, n, p, control_depth, median);
        prop_assert_eq!(got.len(), n);
        for j in 0..n {
            let (g, e) = (got.values[j], expected[j]);
            if e.is_nan() {
                prop_assert!(g.is_nan(), "v[{}] = {} expected NaN", j, g);
            } else {
                let tol = if control_depth { 1e-12 } else { 1e-6 * e.abs().max(1e-6) };
                prop_assert!((g - e).abs() <= tol, "v[{}] = {} vs {}", j, g, e);
            }
        }
        // The last min(p, n) entries are always NaN.
        for j in n.saturating_sub(p)..n {
            prop_assert!(got.values[j].is_nan());
        }
    }
}
