//! Attention suppression against `scripts/suppression_reference.py`: HF transformers
//! eager with the suppression as a 4-D additive mask in every layer, on SmolLM2 (a 7-sentence
//! text, 113 tokens) and the tiny Qwen3 fixture (`head_dim` 32 ≠ hidden 64 / 4 heads, the case
//! upstream's hook gets wrong; its first range holds position 0, so rows with every visible key
//! suppressed are covered).
//!
//! Tolerances. Our logits equal HF's to about 1e-5 (f32, different summation orders), so:
//! - the full-vocabulary KL (a smooth function of the logits) must agree to 1e-3 relative plus
//!   1e-7 absolute: a KL of `d` has an f32-noise floor of about `|Δlogit| · noise`, ~1e-8 here;
//! - the faithful KL (top-p 0.9999 / 100 tokens, logits rounded to f16, missing tokens at
//!   `-1e9`) is not smooth: a logit 1e-5 from an f16 rounding edge or a nucleus cut-off changes the
//!   kept set or a kept value, and a token kept on one side only adds `p · 1.7e9`. Such positions
//!   are counted and must stay rare (at most 3% of positions); the others agree to 1e-3 relative
//!   plus 1e-6 absolute;
//! - the matrix of mean `log(KL + 1e-9)` is compared with all positions counted, which dilutes a
//!   flip over a sentence's tokens: 0.5 in log units (a factor 1.65 in a geometric mean over a
//!   sentence), for most cells, and exactly `log(1e-9)` where the target precedes its source.

use crate::support;

use serde_json::Value;
use thoughtscope::attention::suppression::{sentence_means, suppression_kl, SuppressionOptions};
use thoughtscope::attention::{BoundaryMode, Sentences, TokenBounds};
use thoughtscope::model::Model;
use thoughtscope::model::Settings;

fn fixture(name: &str) -> Value {
    let path = support::fixture(format!("suppression/{name}.json"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn ids_ranges(f: &Value) -> (Vec<u32>, Vec<(usize, usize)>) {
    let ids = f["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
    let ranges = f["ranges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r[0].as_u64().unwrap() as usize, r[1].as_u64().unwrap() as usize))
        .collect();
    (ids, ranges)
}

fn rows(v: &Value) -> Vec<Vec<f64>> {
    v.as_array().unwrap().iter().map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap_or(f64::NAN)).collect()).collect()
}

fn close(a: f64, b: f64, rel: f64, abs: f64) -> bool {
    (a - b).abs() <= abs + rel * a.abs().max(b.abs())
}

fn full_vocab() -> SuppressionOptions {
    SuppressionOptions { top_p: 1.0, max_tokens: usize::MAX, f16_logits: false, ..Default::default() }
}

/// Compares both KLs and the matrix with the reference; returns (flipped, positions) of the
/// faithful KL.
fn check(model: &Model, f: &Value) -> (usize, usize) {
    let (ids, ranges) = ids_ranges(f);
    let (full, _, _) = suppression_kl(model, &ids, &ranges, &full_vocab()).unwrap();
    let want_full = rows(&f["kl_full_vocab"]);
    for (s, (ours, theirs)) in full.iter().zip(&want_full).enumerate() {
        for (p, (&a, &b)) in ours.iter().zip(theirs).enumerate() {
            assert!(close(a, b, 1e-3, 1e-7), "full-vocabulary KL, source {s} position {p}: ours {a:e}, HF {b:e}");
        }
    }

    let options = SuppressionOptions::default();
    let (kl, layers, positions_run) = suppression_kl(model, &ids, &ranges, &options).unwrap();
    assert_eq!(layers, (0..model.num_layers()).collect::<Vec<_>>());
    let t = ids.len();
    let expected_run = t + ranges.iter().map(|&(a, b)| if a < b.min(t) { t - a } else { 0 }).sum::<usize>();
    assert_eq!(positions_run, expected_run, "each suppressed pass starts at its source");
    let want = rows(&f["kl"]);
    let (mut flipped, mut positions) = (0, 0);
    for (s, (ours, theirs)) in kl.iter().zip(&want).enumerate() {
        let start = ranges[s].0;
        for (p, (&a, &b)) in ours.iter().zip(theirs).enumerate() {
            if p < start {
                assert_eq!((a, b), (0.0, 0.0), "source {s}: position {p} precedes it, KL must be 0");
                continue;
            }
            positions += 1;
            if !close(a, b, 1e-3, 1e-6) {
                flipped += 1;
            }
        }
    }
    assert!(flipped * 100 <= positions * 3, "faithful KL differs at {flipped} of {positions} positions");

    let n = ranges.len();
    let matrix = sentence_means(&kl, &ranges, 1e-9);
    let want_matrix = rows(&f["matrix"]);
    let mut far = 0;
    for target in 0..n {
        for source in 0..n {
            let (a, b) = (matrix[target * n + source], want_matrix[target][source]);
            if ranges[target].1 <= ranges[source].0 {
                // A mean of equal values: log(1e-9) up to its last bits.
                assert!((a - (1e-9f64).ln()).abs() < 1e-12, "target {target} before source {source}: {a}");
                assert!((b - (1e-9f64).ln()).abs() < 1e-12, "reference: target {target} before source {source}: {b}");
            } else if (a - b).abs() > 0.5 {
                far += 1;
            }
        }
    }
    assert!(far * 10 <= n * n, "{far} of {n}×{n} matrix cells differ by more than 0.5 in log units");
    eprintln!("faithful KL: {flipped} of {positions} positions differ beyond 1e-3; {far} matrix cells beyond 0.5");
    (flipped, positions)
}

#[test]
fn smollm2_matches_the_hf_reference() {
    let Some(loaded) = support::smollm2() else { return };
    let f = fixture("smollm2");
    let (ids, ranges) = ids_ranges(&f);
    // The same input and the same (prefix) boundaries as upstream's tokenisation.
    let chunks: Vec<String> = f["chunks"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_owned()).collect();
    let sentences = Sentences::from_chunks(&chunks);
    assert_eq!(loaded.tokenizer.encode(&sentences.text).unwrap(), ids);
    let bounds = TokenBounds::compute(&loaded.tokenizer, &sentences, BoundaryMode::Prefix).unwrap();
    assert_eq!(bounds.ranges, ranges);
    check(&loaded.model, &f);
}

#[test]
fn tiny_qwen3_matches_the_hf_reference() {
    let model = Model::load_without_tokenizer(support::fixture("tiny-qwen3").to_str().unwrap(), &Settings::default()).unwrap();
    assert_ne!(model.config().head_dim(), model.config().hidden_size / model.num_heads());
    check(&model, &fixture("tiny_qwen3"));
}

#[test]
fn suppressing_chosen_layers_only_and_bad_layers() {
    let model = Model::load_without_tokenizer(support::fixture("tiny-qwen3").to_str().unwrap(), &Settings::default()).unwrap();
    let (ids, ranges) = ids_ranges(&fixture("tiny_qwen3"));
    let none = SuppressionOptions { layers: Some(vec![]), ..full_vocab() };
    let (kl, layers, _) = suppression_kl(&model, &ids, &ranges, &none).unwrap();
    assert!(layers.is_empty());
    // Nothing is suppressed: what is left is the noise of running the suffix on the cached prefix
    // through other kernels (block shapes, summation orders) than the unsuppressed pass.
    let noise = kl.iter().flatten().fold(0f64, |m, &k| m.max(k));
    eprintln!("no layer suppressed: max KL {noise:e}");
    assert!(noise < 1e-9, "suppressing no layer changes nothing, up to f32 noise: KL {noise:e}");
    let last = SuppressionOptions { layers: Some(vec![1, 1]), ..full_vocab() };
    let (kl_last, layers, _) = suppression_kl(&model, &ids, &ranges, &last).unwrap();
    assert_eq!(layers, vec![1]);
    assert!(kl_last.iter().flatten().any(|&k| k > 0.0));
    let bad = SuppressionOptions { layers: Some(vec![2]), ..Default::default() };
    let err = suppression_kl(&model, &ids, &ranges, &bad).unwrap_err().to_string();
    assert!(err.contains("layer 2"), "{err}");
}

#[test]
fn files_in_the_website_shape() {
    use thoughtscope::analysis::suppression::write_suppression;
    use thoughtscope::attention::suppression_matrix;
    let Some(loaded) = support::smollm2() else { return };
    let chunks: Vec<String> = ["First, 2 + 2 = 4.", "Then 4 times 3 is 12.", "So the answer is 12."].map(String::from).to_vec();
    let sentences = Sentences::from_chunks(&chunks);
    let options = SuppressionOptions::default();
    let result = suppression_matrix(&loaded, &sentences, &options).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let files = write_suppression(dir.path(), &loaded, &sentences, &options, &result).unwrap();

    let steps: Value = serde_json::from_str(&std::fs::read_to_string(&files.step_importance).unwrap()).unwrap();
    let steps = steps.as_array().unwrap();
    assert_eq!(steps.len(), 3);
    for (source, step) in steps.iter().enumerate() {
        assert_eq!(step["source_chunk_idx"], source);
        assert_eq!(step["source_chunk_text"], chunks[source]);
        let impacts = step["target_impacts"].as_array().unwrap();
        let targets: Vec<u64> = impacts.iter().map(|t| t["target_chunk_idx"].as_u64().unwrap()).collect();
        assert_eq!(targets, (source as u64 + 1..3).collect::<Vec<_>>(), "targets after the source");
        for t in impacts {
            let target = t["target_chunk_idx"].as_u64().unwrap() as usize;
            // serde_json's default float parsing is not bit-exact on the way back.
            let score = t["importance_score"].as_f64().unwrap();
            assert!((score - result.get(target, source)).abs() < 1e-12, "{score} vs {}", result.get(target, source));
        }
    }
    let matrix = thoughtscope::io::npy::read(&files.matrix).unwrap();
    assert_eq!(matrix.shape, vec![3, 3]);
    let kl = thoughtscope::io::npy::read(&files.kl).unwrap();
    assert_eq!(kl.shape, vec![3, result.bounds.n_tokens]);
    let manifest: Value = serde_json::from_str(&std::fs::read_to_string(&files.manifest).unwrap()).unwrap();
    assert_eq!(manifest["key"]["top_p"], 0.9999);
    assert_eq!(manifest["result"]["orientation"], "matrix[target][source]");
    assert!(std::fs::read_to_string(&files.heatmap).unwrap().contains("source sentence (suppressed)"));
}

/// The CPU kernels' in-softmax suppression and the hook path (scores materialised, set to
/// `f32::MIN`, candle softmax) give the same logits, rows with every visible key suppressed
/// included (range 0..6).
#[test]
fn kernel_suppression_equals_the_hook_path() {
    use thoughtscope::model::{HookPoint, HookSet, Input, Intervention, KvCache, Logits};
    let model = Model::load_without_tokenizer(support::fixture("tiny-qwen3").to_str().unwrap(), &Settings::default()).unwrap();
    let (ids, _) = ids_ranges(&fixture("tiny_qwen3"));
    for (start, end) in [(0, 6), (13, 21)] {
        let run = |force_hook: bool| {
            let mut cache = KvCache::new(&model);
            if start > 0 {
                model.forward_with(Input::Ids(&ids[..start]), &mut cache, &mut thoughtscope::model::NoHooks, Logits::None).unwrap();
            }
            let mut hooks = HookSet::new();
            for l in 0..model.num_layers() {
                hooks = hooks.intervene(HookPoint::AttnScores(l), Intervention::SuppressKeys { ranges: vec![(start, end)] });
                if force_hook {
                    // A capture at the scores makes the decoder materialise them for the hook.
                    hooks = hooks.capture(HookPoint::AttnScores(l));
                }
            }
            let out = model.forward_with(Input::Ids(&ids[start..]), &mut cache, &mut hooks, Logits::All).unwrap();
            out.logits().unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()
        };
        let (kernel, hooked) = (run(false), run(true));
        let diff = kernel.iter().zip(&hooked).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        let scale = hooked.iter().fold(0f32, |m, x| m.max(x.abs()));
        assert!(kernel.iter().all(|x| x.is_finite()));
        assert!(diff <= 1e-5 * scale.max(1.0), "range {start}..{end}: logits differ by {diff} (scale {scale})");
    }
}

/// The CLI end to end on a small problem folder (chunks mode), and a bad `--layers` as a one-line
/// error naming the layer.
#[test]
fn cli_writes_the_files_and_refuses_a_missing_layer() {
    use std::process::Command;
    if support::smollm2().is_none() {
        return;
    }
    let problem = tempfile::tempdir().unwrap();
    let chunks = ["First, 2 + 2 = 4.", "Then 4 times 3 is 12.", "So the answer is 12."];
    std::fs::write(problem.path().join("base_solution.json"), serde_json::json!({ "full_cot": chunks.join(" ") }).to_string()).unwrap();
    std::fs::write(problem.path().join("chunks.json"), serde_json::json!({ "chunks": chunks }).to_string()).unwrap();
    let out = tempfile::tempdir().unwrap();
    let run = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_thoughtscope"))
            .args(["--quiet", "suppress", problem.path().to_str().unwrap(), "--model", "smollm2-135m", "--mode", "chunks", "--json", "--out"])
            .arg(out.path())
            .args(extra)
            .output()
            .unwrap()
    };
    let ok = run(&["--layers", "0,29"]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let summary: Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!((summary["n"].as_u64(), summary["layers"].as_u64()), (Some(3), Some(2)));
    for file in ["step_importance_supp.json", "suppression_matrix.npy", "suppression_kl.npy", "suppression_heatmap.html", "suppression_manifest.json"] {
        assert!(out.path().join(file).is_file(), "{file} missing");
    }
    let manifest: Value = serde_json::from_str(&std::fs::read_to_string(out.path().join("suppression_manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["key"]["layers"], serde_json::json!([0, 29]));
    assert_eq!(manifest["key"]["sentence_mode"], "chunks");
    assert_eq!(summary["outcome"], "computed");
    let matrix_bytes = std::fs::read(out.path().join("suppression_matrix.npy")).unwrap();

    // The same inputs again: read back; other layers: computed again.
    let again = run(&["--layers", "29,0"]);
    let again: Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!((again["outcome"].as_str(), again["positions_run"].clone()), (Some("cached"), summary["positions_run"].clone()));
    assert_eq!(std::fs::read(out.path().join("suppression_matrix.npy")).unwrap(), matrix_bytes);
    // Batching the sources changes no result, so it is no part of the key.
    let batched = run(&["--layers", "0,29", "--batch-sources", "2"]);
    let batched: Value = serde_json::from_slice(&batched.stdout).unwrap();
    assert_eq!(batched["outcome"], "cached");
    let zero = run(&["--batch-sources", "0"]);
    assert!(!zero.status.success(), "--batch-sources 0 is refused");
    let other = run(&["--layers", "0"]);
    let other: Value = serde_json::from_slice(&other.stdout).unwrap();
    assert_eq!(other["outcome"], "computed");

    let bad = run(&["--layers", "30"]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("layer 30") && err.lines().count() == 1, "{err}");
}

/// `batch_sources` 3 and 4 (groups that do not divide the 7 sentences) against one source per
/// pass on the kernel path: each batch row runs the batch-1 attention blocks with its own ranges.
#[test]
fn batched_sources_equal_one_at_a_time_on_the_kernels() {
    let Some(loaded) = support::smollm2() else { return };
    let (ids, ranges) = ids_ranges(&fixture("smollm2"));
    for (name, options) in [("faithful", SuppressionOptions::default()), ("full vocabulary", full_vocab())] {
        let differences = support::suppression_batch_differences(&loaded.model, &ids, &ranges, &options, &[1, 3, 4]);
        support::assert_batch_within_noise(&format!("kernels, {name}"), name == "full vocabulary", &differences);
    }
}

/// Per-batch-row suppression: two rows with their own ranges give each row's logits of the
/// one-row run, on the kernels and on the hook path (a capture at the scores materialises them
/// for the per-row mask); a batch whose size differs from the ranges' rows is an error naming
/// both, on either path.
#[test]
fn per_row_suppression_equals_each_row_alone() {
    use candle_core::Tensor;
    use thoughtscope::model::{HookPoint, HookSet, Input, Intervention, KvCache, Logits};
    let model = Model::load_without_tokenizer(support::fixture("tiny-qwen3").to_str().unwrap(), &Settings::default()).unwrap();
    let (ids, _) = ids_ranges(&fixture("tiny_qwen3"));
    let rows = vec![vec![(0, 6)], vec![(13, 21)]];
    let hooks = |iv: &Intervention, force_hook: bool| {
        let mut hooks = HookSet::new();
        for l in 0..model.num_layers() {
            hooks = hooks.intervene(HookPoint::AttnScores(l), iv.clone());
            if force_hook {
                hooks = hooks.capture(HookPoint::AttnScores(l));
            }
        }
        hooks
    };
    let logits = |batch: usize, iv: &Intervention, force_hook: bool| {
        let embeds = model.embed(&ids).unwrap();
        let embeds = Tensor::cat(&vec![&embeds; batch], 0).unwrap();
        let mut cache = KvCache::new(&model);
        model.forward_with(Input::Embeds(&embeds), &mut cache, &mut hooks(iv, force_hook), Logits::All).map(|out| out.logits().unwrap().clone())
    };
    let values = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    for force_hook in [false, true] {
        let batched = logits(2, &Intervention::SuppressKeysPerRow { ranges: rows.clone() }, force_hook).unwrap();
        for (row, ranges) in rows.iter().enumerate() {
            let alone = values(&logits(1, &Intervention::SuppressKeys { ranges: ranges.clone() }, force_hook).unwrap());
            let got = values(&batched.narrow(0, row, 1).unwrap());
            let diff = got.iter().zip(&alone).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            let scale = alone.iter().fold(0f32, |m, x| m.max(x.abs()));
            assert!(diff <= 1e-5 * scale.max(1.0), "hook path {force_hook}, row {row}: logits differ by {diff} (scale {scale})");
        }
        let err = logits(3, &Intervention::SuppressKeysPerRow { ranges: rows.clone() }, force_hook).unwrap_err().to_string();
        assert!(err.contains("2 rows of ranges for a batch of 3"), "hook path {force_hook}: {err}");
    }
}

/// Chosen heads (an option upstream lacks): every head listed equals the default on the hook path
/// (tiny Qwen3: 4 query heads over 2 KV heads, its own head_dim), no head listed changes nothing,
/// one head suppresses less than all of them in total, batched rows keep their own ranges, and a
/// head past the model is an error naming it.
#[test]
fn suppressing_chosen_heads_only() {
    let model = Model::load_without_tokenizer(support::fixture("tiny-qwen3").to_str().unwrap(), &Settings::default()).unwrap();
    let (ids, ranges) = ids_ranges(&fixture("tiny_qwen3"));
    let heads = model.num_heads();
    let (all, _, _) = suppression_kl(&model, &ids, &ranges, &full_vocab()).unwrap();
    let listed = SuppressionOptions { heads: Some((0..heads).rev().collect()), ..full_vocab() };
    let (every, _, _) = suppression_kl(&model, &ids, &ranges, &listed).unwrap();
    for (a, b) in all.iter().flatten().zip(every.iter().flatten()) {
        assert!(close(*a, *b, 1e-3, 1e-7), "every head listed: {a} vs {b}");
    }
    let none = SuppressionOptions { heads: Some(vec![]), ..full_vocab() };
    let (kl, _, _) = suppression_kl(&model, &ids, &ranges, &none).unwrap();
    let noise = kl.iter().flatten().fold(0f64, |m, &k| m.max(k));
    assert!(noise < 1e-9, "no head suppressed changes nothing, up to f32 noise: KL {noise:e}");
    let one = SuppressionOptions { heads: Some(vec![1]), ..full_vocab() };
    let (kl_one, _, _) = suppression_kl(&model, &ids, &ranges, &one).unwrap();
    let total = |kl: &Vec<Vec<f64>>| kl.iter().flatten().sum::<f64>();
    assert!(total(&kl_one) > 0.0 && total(&kl_one) < total(&all), "{} vs {}", total(&kl_one), total(&all));
    let batched = SuppressionOptions { batch_sources: 2, ..one.clone() };
    let (kl_batched, _, _) = suppression_kl(&model, &ids, &ranges, &batched).unwrap();
    for (a, b) in kl_one.iter().flatten().zip(kl_batched.iter().flatten()) {
        assert!(close(*a, *b, 1e-3, 1e-7), "one head, batched: {a} vs {b}");
    }
    let bad = SuppressionOptions { heads: Some(vec![heads]), ..Default::default() };
    let err = suppression_kl(&model, &ids, &ranges, &bad).unwrap_err().to_string();
    assert!(err.contains(&format!("head {heads}")), "{err}");
}
