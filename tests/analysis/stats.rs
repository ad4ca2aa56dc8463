//! Tagged-sentence statistics per head, tag masks and rollout reading, the averager's refusal to
//! return wrong means, and split-half reliability.

use thoughtscope::analysis::{compute_va_stats_for_head, safe_mean, trim_ends};
use thoughtscope::attention::{AttentionBlock, AttentionSink, SentenceAverager};
use thoughtscope::rollout::{discover_rollouts, tag_mask, Rollout};
use thoughtscope::scores::{split_half_reliability, Dtype, HeadValues, ScoreType, VerticalOptions};

/// `M[i][j] = (10 i + j) / 100` for `j ≤ i`.
fn matrix(n: usize) -> Vec<f32> {
    let mut m = vec![0f32; n * n];
    for i in 0..n {
        for j in 0..=i {
            m[i * n + j] = (10 * i + j) as f32 / 100.0;
        }
    }
    m
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-6
}

#[test]
fn va_stats_by_hand_as_the_seed_computes_them() {
    let vertical = VerticalOptions { proximity_ignore: 1, control_depth: false, score_type: ScoreType::Mean };
    let mask = [false, true, false, true, false];
    let s = compute_va_stats_for_head(&matrix(5), 5, &mask, &vertical).unwrap();
    // Vertical scores (p = 1): 0.25, 0.31, 0.37, 0.43, NaN.
    assert!(close(s.mean_va_vert, 0.37) && close(s.mean_nonva_vert, 0.31) && close(s.delta_va_vert, 0.06), "{s:?}");
    assert!(s.vert_scores[4].is_nan() && close(s.vert_scores[0], 0.25));
    // Whole blocks, upper-triangle zeros included: A[non][:, va] = 0 0 .21 0 .41 .43.
    assert!(close(s.mean_in_va, 1.05 / 6.0), "{s:?}");
    // A[non][:, non] = 0 0 0 .20 .22 0 .40 .42 .44.
    assert!(close(s.mean_in_nonva, 1.68 / 9.0), "{s:?}");
    assert!(close(s.lift_in_va, (1.05 / 6.0) / (1.68 / 9.0)));
    // A[va][:, non] = .10 0 0 .30 .32 0; A[va][:, va] = .11 0 .31 .33.
    assert!(close(s.mean_out_va, 0.12) && close(s.mean_va_to_va, 0.1875), "{s:?}");

    // The seed's [1:-1] trim: sentences 1..=3 remain, mask [T, F, T].
    let (m, n, trimmed_mask) = trim_ends(&matrix(5), 5, &mask).unwrap();
    assert_eq!((n, trimmed_mask.as_slice()), (3, [true, false, true].as_slice()));
    let trimmed = compute_va_stats_for_head(&m, n, &trimmed_mask, &vertical).unwrap();
    assert!(close(trimmed.mean_in_va, 0.105), "{trimmed:?}");
    // Below 3 sentences nothing is trimmed.
    assert_eq!(trim_ends(&matrix(2), 2, &[true, false]).unwrap().1, 2);

    // No tagged sentence: tagged means are NaN (safe_mean of nothing), lift too.
    let none = compute_va_stats_for_head(&matrix(5), 5, &[false; 5], &vertical).unwrap();
    assert!(none.mean_in_va.is_nan() && none.mean_va_vert.is_nan() && none.lift_in_va.is_nan() && none.delta_va_vert.is_nan());
    // A zero denominator gives NaN, not inf.
    let zero = compute_va_stats_for_head(&[0.0, 0.0, 1.0, 0.0], 2, &[true, false], &vertical).unwrap();
    assert!(zero.mean_in_nonva == 0.0 && zero.lift_in_va.is_nan(), "{zero:?}");
    assert!(compute_va_stats_for_head(&matrix(5), 5, &[true; 4], &vertical).is_err(), "mask length must be n");
    assert!(safe_mean(&[]).is_nan() && safe_mean(&[f64::NAN, 1.0, 3.0]) == 2.0);
}

#[test]
fn averager_refuses_incomplete_or_misordered_input() {
    let t = 6;
    let probs = vec![0.1f32; t * t];
    let block = |layer, q_start, rows| AttentionBlock { layer, q_start, heads: 1, rows, kv_len: t, total_keys: t, probs: &probs[..rows * t] };

    // Rows 2..4 are needed; a layer that starts at row 3 is incomplete.
    let mut sink = SentenceAverager::new(vec![(2, 4)], 1, 1);
    sink.consume(block(0, 3, 3)).unwrap();
    let err = sink.finish().unwrap_err().to_string();
    assert!(err.contains("covered query rows 3..6"), "{err}");

    // A gap between blocks.
    let mut sink = SentenceAverager::new(vec![(2, 4)], 1, 1);
    sink.consume(block(0, 0, 2)).unwrap();
    assert!(sink.consume(block(0, 3, 2)).unwrap_err().to_string().contains("expected 2"));

    // A missing layer.
    let mut sink = SentenceAverager::new(vec![(2, 4)], 2, 1);
    sink.consume(block(0, 0, t)).unwrap();
    assert!(sink.finish().unwrap_err().to_string().contains("layer 1"));

    // A sequence length other than the tokenisation's.
    let mut sink = SentenceAverager::new(vec![(2, 4)], 1, 1).expect_tokens(7);
    assert!(sink.consume(block(0, 0, t)).unwrap_err().to_string().contains("7"));

    // Complete input: block mean of rows 2..4, columns 2..4 = 0.1.
    let mut sink = SentenceAverager::new(vec![(2, 4)], 1, 1).expect_tokens(t);
    sink.consume(block(0, 0, 4)).unwrap();
    sink.consume(block(0, 4, 2)).unwrap();
    assert!((sink.finish().unwrap().matrix(0, 0)[0] - 0.1).abs() < 1e-7);
}

#[test]
fn split_half_ignores_layer_zero() {
    // Responses 0, 1 and 2, 3 are identical pairs in layers ≥ 1; layer 0 differs wildly.
    let response = |base: f64, layer0: f64| HeadValues {
        layers: 2,
        heads: 3,
        values: vec![layer0, -layer0, layer0 * 2.0, base, base + 1.0, base + 3.0],
        dtype: Dtype::Float64,
    };
    let responses = [response(1.0, 100.0), response(1.0, -50.0), response(2.0, 7.0), response(2.0, 0.0)];
    let r = split_half_reliability(&responses).unwrap();
    assert!((r.r - 1.0).abs() < 1e-12, "{r:?}");
    assert!(split_half_reliability(&responses[..1]).is_err());
}

#[test]
fn rollout_reading_accepts_upstream_forms() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    for name in ["rollout_10", "rollout_02", "other_1"] {
        std::fs::create_dir(root.join(name)).unwrap();
    }
    std::fs::write(root.join("rollout_99.txt"), "a file, not a rollout").unwrap();
    let found = discover_rollouts(root, "rollout_").unwrap();
    assert_eq!(found, [root.join("rollout_02"), root.join("rollout_10")]);

    let dir = root.join("rollout_02");
    std::fs::write(
        dir.join("base_solution.json"),
        r#"{"prompt": "P ", "solution": "s", "full_cot": "P <think>\nFirst sentence here. Second one here.\n\nThird one.</think> 4", "answer": 4, "is_correct": true}"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("chunks_labeled.json"),
        r#"[{"chunk": "First sentence here.", "chunk_idx": 0, "function_tags": ["problem_setup", "verbalized_evaluation_awareness"]},
            {"chunk": "Second one here.", "chunk_idx": 1, "categories": ["Unknown"], "explanation": "Error: timeout"},
            {"chunk": "Third one.", "chunk_idx": 2, "function_tags": "self_checking"}]"#,
    )
    .unwrap();
    std::fs::create_dir(dir.join("chunk_0")).unwrap();
    std::fs::write(
        dir.join("chunk_0/solutions.json"),
        r#"[{"answer": "4", "is_correct": true}, {"chunk_removed": "x", "prefix_without_chunk": "y", "error": "'text'"}, {"rollout": "no answer"}]"#,
    )
    .unwrap();
    let rollout = Rollout::open(&dir).unwrap();
    assert_eq!((rollout.answer.as_deref(), rollout.is_correct), (Some("4"), Some(true)));
    let labels = rollout.labels().unwrap();
    assert!(labels[1].labelling_error && labels[1].tags == ["Unknown"]);
    assert_eq!(labels[2].tags, ["self_checking"]);
    assert_eq!(rollout.resampled_solutions(0).unwrap().len(), 1, "error stubs filtered");

    let sentences = rollout.sentences(thoughtscope::attention::SentenceMode::FullCot).unwrap();
    assert_eq!(sentences.len(), 2, "final chunk dropped");
    let mask = tag_mask(labels, "verbalized_evaluation_awareness", sentences.len());
    assert_eq!((mask.mask.clone(), mask.truncated, mask.padded), (vec![true, false], 1, 0));
    let chunks_mode = rollout.sentences(thoughtscope::attention::SentenceMode::Chunks).unwrap();
    assert_eq!(chunks_mode.text, "First sentence here.\nSecond one here.\nThird one.");
    assert_eq!(tag_mask(labels, "self_checking", 5).mask, [false, false, true, false, false]);
    assert_eq!(tag_mask(labels, "self_checking", 5).padded, 2);

    std::fs::write(dir.join("chunks_labeled.json"), r#"[{"chunk": "a", "chunk_idx": 3, "function_tags": []}]"#).unwrap();
    let err = Rollout::open(&dir).unwrap_err().to_string();
    assert!(err.contains("chunks_labeled.json") && err.contains("chunk_idx"), "{err}");
}
