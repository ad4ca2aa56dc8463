//! Black-box importance: answer handling against a re-statement of thought-anchors `utils.py`
//! (with and without its sympy fallback), the metrics against the independent numpy reference
//! (`scripts/importance_reference.py`) on the hand-made solution sets of
//! `tests/fixtures/importance/`, the output file, bad input, the all-MiniLM-L6-v2 embedder against
//! sentence-transformers, and the `importance` command end to end.

use crate::support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use thoughtscope::analysis::importance::{
    chunk_importances, load_problem, write_chunks_labeled, ChunkImportance, Corrections, ImportanceOptions, KlMode,
    SentenceEmbedder,
};
use thoughtscope::rollout::answers::{check_answer, extract_boxed_answers, normalize_answer};
use thoughtscope::model::Settings;

fn read(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Answers

#[test]
fn answers_match_upstreams_utils_and_never_overclaim_against_sympy() {
    let cases = read(&support::fixture("answers/cases.json"));
    for case in cases["pairs"].as_array().unwrap() {
        let (a, b) = (case["answer"].as_str().unwrap(), case["gold"].as_str().unwrap());
        let normalized = &case["normalized"];
        assert_eq!(normalize_answer(a), normalized[0].as_str().unwrap(), "normalize_answer({a:?})");
        assert_eq!(normalize_answer(b), normalized[1].as_str().unwrap(), "normalize_answer({b:?})");
        let ours = check_answer(a, b);
        if case["string_equal"].as_bool().unwrap() {
            assert!(ours, "{a:?} vs {b:?}: equal after normalisation, as upstream");
        }
        if ours {
            assert!(case["sympy_equal"].as_bool().unwrap(), "{a:?} vs {b:?}: we say equal, upstream with sympy does not");
        }
    }
    // Every pair of the number grid: never equal where sympy says unequal.
    let numbers: Vec<&str> = cases["numbers"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    let grid = &cases["numbers_sympy_equal"];
    let (mut agree, mut missed) = (0, 0);
    for (i, a) in numbers.iter().enumerate() {
        for (j, b) in numbers.iter().enumerate() {
            let (ours, sympy) = (check_answer(a, b), grid[i][j].as_bool().unwrap());
            assert!(!ours || sympy, "{a:?} vs {b:?}: we say equal, upstream with sympy does not");
            if ours == sympy {
                agree += 1;
            } else {
                missed += 1;
            }
        }
    }
    eprintln!("number grid: {agree} pairs agree with sympy, {missed} equal for sympy only");
    assert!(agree > 9 * missed, "the numeric comparison should find most of sympy's equalities among plain numbers");
    for case in cases["boxed"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let expected: Vec<String> = serde_json::from_value(case["answers"].clone()).unwrap();
        assert_eq!(extract_boxed_answers(text), expected, "extract_boxed_answers({text:?})");
    }
}

// ---------------------------------------------------------------------------------------------
// Metrics against the reference

fn variants() -> Vec<(&'static str, ImportanceOptions)> {
    let base = ImportanceOptions::default();
    vec![
        ("faithful", base),
        ("corrected", ImportanceOptions { corrections: Corrections::all(), ..base }),
        ("prob_true", ImportanceOptions { kl: KlMode::ProbTrue, ..base }),
        ("absolute", ImportanceOptions { absolute: true, ..base }),
    ]
}

fn case_dir(case: &str) -> PathBuf {
    support::fixture("importance").join(case)
}

fn similarity_table(case: &str) -> HashMap<(String, String), f64> {
    let value = read(&case_dir(case).join("similarities.json"));
    value["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| ((p[0].as_str().unwrap().to_owned(), p[1].as_str().unwrap().to_owned()), p[2].as_f64().unwrap()))
        .collect()
}

fn compute(case: &str, options: &ImportanceOptions) -> Vec<ChunkImportance> {
    let dir = case_dir(case);
    let problem_dir = dir.join("problem");
    let (problem, _) = load_problem(&problem_dir, &problem_dir, Some(&dir.join("forced"))).unwrap();
    let table = similarity_table(case);
    let similarity = |a: &str, b: &str| table.get(&(a.to_owned(), b.to_owned())).copied();
    chunk_importances(&problem, &similarity, options)
}

fn assert_matches_reference(case: &str, variant: &str, ours: &[ChunkImportance], expected: &Value) {
    let rows = expected.as_array().unwrap();
    assert_eq!(ours.len(), rows.len(), "{case}/{variant}: chunk count");
    for (m, row) in ours.iter().zip(rows) {
        let at = format!("{case}/{variant}/chunk {}", m.chunk_idx);
        assert_eq!(m.chunk_idx as u64, row["chunk_idx"].as_u64().unwrap(), "{at}");
        assert_eq!(m.accuracy, row["accuracy"].as_f64(), "{at}: accuracy");
        let fields = [
            ("resampling_importance_accuracy", Some(m.resampling_importance_accuracy)),
            ("resampling_importance_kl", Some(m.resampling_importance_kl)),
            ("counterfactual_importance_accuracy", Some(m.counterfactual_importance_accuracy)),
            ("counterfactual_importance_kl", Some(m.counterfactual_importance_kl)),
            ("forced_importance_accuracy", m.forced_importance_accuracy),
            ("forced_importance_kl", m.forced_importance_kl),
            ("different_trajectories_fraction", Some(m.different_trajectories_fraction)),
            ("overdeterminedness", Some(m.overdeterminedness)),
        ];
        for (name, value) in fields {
            match (value, row.get(name).and_then(Value::as_f64)) {
                (Some(a), Some(b)) => assert!((a - b).abs() <= 1e-12, "{at}: {name} = {a}, reference {b}"),
                (None, None) => {}
                (a, b) => panic!("{at}: {name}: ours {a:?}, reference {b:?}"),
            }
        }
    }
}

#[test]
fn metrics_equal_the_numpy_reference_to_1e_12() {
    let expected = read(&support::fixture("importance/expected.json"));
    let mut compared = 0;
    for case in ["labelled", "unlabelled"] {
        for (variant, options) in variants() {
            let ours = compute(case, &options);
            assert_matches_reference(case, variant, &ours, &expected[case][variant]);
            compared += ours.len();
        }
    }
    // Guards against a fixture that silently lost its chunks.
    assert_eq!(compared, 4 * (7 + 5));
    // The fixture's edge cases are where the variants differ.
    let faithful = compute("labelled", &ImportanceOptions::default());
    let corrected = compute("labelled", &ImportanceOptions { corrections: Corrections::all(), ..Default::default() });
    assert_eq!(faithful.last().unwrap().different_trajectories_fraction, 0.0);
    assert!(corrected.last().unwrap().different_trajectories_fraction > 0.0);
    assert!(faithful.iter().any(|m| m.counterfactual_importance_kl > 1.0), "alpha 1e-9 gives large KLs on disjoint answers");
}

#[test]
fn reference_script_reproduces_the_committed_expectations() {
    let python = support::repo().join(".venv/bin/python");
    if !python.exists() {
        support::skip(".venv/bin/python absent: run `bash scripts/python-env.sh analysis`");
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("expected.json");
    let status = Command::new(&python)
        .arg(support::repo().join("scripts/importance_reference.py"))
        .arg("--out")
        .arg(&file)
        .status()
        .expect("python runs");
    assert!(status.success(), "importance_reference.py failed");
    assert_eq!(read(&file), read(&support::fixture("importance/expected.json")), "rerun the reference and commit expected.json");
}

#[test]
fn output_keeps_labels_orders_keys_and_drops_what_upstream_drops() {
    let dir = case_dir("labelled");
    let problem_dir = dir.join("problem");
    let (problem, labels) = load_problem(&problem_dir, &problem_dir, None).unwrap();
    assert!(problem.forced.is_none());
    let table = similarity_table("labelled");
    let similarity = |a: &str, b: &str| table.get(&(a.to_owned(), b.to_owned())).copied();
    let metrics = chunk_importances(&problem, &similarity, &ImportanceOptions::default());
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("chunks_labeled.json");
    write_chunks_labeled(&path, &problem, labels, &metrics).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let written = read(&path);
    let entries = written.as_array().unwrap();
    let indices: Vec<u64> = entries.iter().map(|e| e["chunk_idx"].as_u64().unwrap()).collect();
    assert_eq!(indices, [0, 2, 3, 4, 5, 6, 7], "chunk 1 (3 characters) is dropped");
    for e in entries {
        assert!(e.get("absolute_importance_accuracy").is_none());
        assert_eq!(e["notes"], "kept as is");
        assert!(e["function_tags"].is_array() && e["summary"].is_string());
        assert!(e.get("forced_importance_accuracy").is_none(), "no forced rollouts: no forced fields");
    }
    assert!(entries[2].get("accuracy").is_none(), "chunk 3 has no rollouts: no accuracy");
    assert_eq!(entries[1]["accuracy"].as_f64().unwrap(), metrics[1].accuracy.unwrap());
    // Upstream's key order, then the rest.
    let first = &text[..text.find('}').unwrap()];
    let order = ["\"chunk\"", "\"chunk_idx\"", "\"function_tags\"", "\"depends_on\"", "\"accuracy\"", "\"resampling_importance_accuracy\"",
        "\"resampling_importance_kl\"", "\"counterfactual_importance_accuracy\"", "\"counterfactual_importance_kl\"",
        "\"different_trajectories_fraction\"", "\"overdeterminedness\"", "\"summary\"", "\"notes\""];
    let positions: Vec<usize> = order.iter().map(|k| first.find(k).unwrap_or_else(|| panic!("{k} missing"))).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "key order {positions:?}");
}

#[test]
fn bad_input_names_the_file_and_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let problem = dir.path();
    std::fs::write(problem.join("chunks.json"), r#"{"chunks": ["First sentence here.", "Second sentence here."]}"#).unwrap();
    std::fs::create_dir_all(problem.join("chunk_0")).unwrap();
    std::fs::write(problem.join("chunk_0/solutions.json"), r#"[{"answer": "3", "is_correct": true}, {"answer": 3, "is_correct": true}]"#).unwrap();
    let err = load_problem(problem, problem, None).unwrap_err().to_string();
    assert!(err.contains("chunk_0/solutions.json") && err.contains("entry 1") && err.contains("`answer`"), "{err}");
    std::fs::write(problem.join("chunk_0/solutions.json"), r#"[{"answer": "3", "is_correct": "yes"}]"#).unwrap();
    let err = load_problem(problem, problem, None).unwrap_err().to_string();
    assert!(err.contains("`is_correct`"), "{err}");
    std::fs::write(problem.join("chunk_0/solutions.json"), r#"{"answer": "3"}"#).unwrap();
    let err = load_problem(problem, problem, None).unwrap_err().to_string();
    assert!(err.contains("expected an array"), "{err}");
    std::fs::remove_file(problem.join("chunks.json")).unwrap();
    let err = load_problem(problem, problem, None).unwrap_err().to_string();
    assert!(err.contains("chunks.json"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// The embedder

fn embedder() -> Option<SentenceEmbedder> {
    match SentenceEmbedder::load_default(&Settings::default()) {
        Ok(e) => Some(e),
        Err(e) => {
            support::skip(format!("all-MiniLM-L6-v2 absent ({e}); run scripts/fetch-embedder.sh"));
            None
        }
    }
}

#[test]
fn embeddings_equal_sentence_transformers_to_1e_5() {
    let Some(embedder) = embedder() else { return };
    let meta = read(&support::fixture("embedder/sentences.json"));
    let sentences: Vec<&str> = meta["sentences"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    assert!(sentences.len() >= 50);
    let tensors = candle_core::safetensors::load(support::fixture("embedder/embeddings.safetensors"), &candle_core::Device::Cpu).unwrap();
    let reference = tensors["embeddings"].to_vec2::<f32>().unwrap();
    let mut worst = 0.0f32;
    for batch in [1, 16] {
        let ours = embedder.embed(&sentences, batch).unwrap();
        for (i, (a, b)) in ours.iter().zip(&reference).enumerate() {
            assert_eq!(a.len(), 384);
            let diff = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
            assert!(diff <= 1e-5, "batch {batch}, sentence {i} {:?}: max |diff| {diff}", sentences[i]);
            worst = worst.max(diff);
        }
    }
    eprintln!("all-MiniLM-L6-v2 vs sentence-transformers: {} sentences, max |diff| {worst:.2e}", sentences.len());
}

// ---------------------------------------------------------------------------------------------
// The command

#[test]
fn importance_command_writes_upstreams_fields() {
    if embedder().is_none() {
        return;
    }
    let dir = case_dir("labelled");
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("chunks_labeled.json");
    let output = Command::new(env!("CARGO_BIN_EXE_thoughtscope"))
        .arg("importance")
        .arg(dir.join("problem"))
        .arg("--forced")
        .arg(dir.join("forced"))
        .arg("--out")
        .arg(&file)
        .env("THOUGHTSCOPE_PROGRESS", "off")
        .output()
        .expect("binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("7 chunks (1 without rollouts)") && stdout.contains("[3]"), "{stdout}");
    // Accuracy, resampling and forced fields do not depend on the embedder: they equal the reference.
    let expected = read(&support::fixture("importance/expected.json"));
    let written = read(&file);
    for (entry, row) in written.as_array().unwrap().iter().zip(expected["labelled"]["faithful"].as_array().unwrap()) {
        assert_eq!(entry["chunk_idx"], row["chunk_idx"]);
        for name in ["accuracy", "resampling_importance_accuracy", "resampling_importance_kl", "forced_importance_accuracy", "forced_importance_kl"] {
            match (entry.get(name).and_then(Value::as_f64), row[name].as_f64()) {
                (Some(a), Some(b)) => assert!((a - b).abs() <= 1e-12, "{name}: {a} vs {b}"),
                (None, None) => {}
                (a, b) => panic!("chunk {}: {name}: {a:?} vs {b:?}", entry["chunk_idx"]),
            }
        }
        for name in ["counterfactual_importance_accuracy", "counterfactual_importance_kl", "different_trajectories_fraction", "overdeterminedness"] {
            assert!(entry[name].as_f64().is_some_and(f64::is_finite), "{name}");
        }
    }
    // A --forced folder that does not exist is an error naming it.
    let output = Command::new(env!("CARGO_BIN_EXE_thoughtscope"))
        .args(["importance"])
        .arg(dir.join("problem"))
        .args(["--forced", "/nonexistent/forced", "--out"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent/forced"));
}

// ---------------------------------------------------------------------------------------------
// Upstream's published numbers

/// The published `chunks_labeled.json` of the 40 real traces carry two of the quirks we keep:
/// `resampling_importance_accuracy` is exactly `accuracy[i+1] − accuracy[i]`, and the last chunk
/// has 0 in every counterfactual and resampling field, `different_trajectories_fraction` and
/// `overdeterminedness` included.
#[test]
fn published_numbers_show_the_kept_quirks() {
    let Some(root) = support::shared_data("thought-anchors-traces") else { return };
    let mut files = Vec::new();
    for model in std::fs::read_dir(&root).unwrap().flatten().filter(|e| e.path().is_dir()) {
        for split in std::fs::read_dir(model.path()).unwrap().flatten() {
            for problem in std::fs::read_dir(split.path()).unwrap().flatten() {
                let file = problem.path().join("chunks_labeled.json");
                if file.exists() {
                    files.push(file);
                }
            }
        }
    }
    assert_eq!(files.len(), 40, "{}", root.display());
    let mut pairs = 0;
    for file in &files {
        let entries = read(file);
        let by_index: HashMap<u64, &Value> = entries.as_array().unwrap().iter().map(|e| (e["chunk_idx"].as_u64().unwrap(), e)).collect();
        for (&i, e) in &by_index {
            if let Some(next) = by_index.get(&(i + 1)) {
                let expected = next["accuracy"].as_f64().unwrap() - e["accuracy"].as_f64().unwrap();
                assert!((e["resampling_importance_accuracy"].as_f64().unwrap() - expected).abs() <= 1e-12, "{}: chunk {i}", file.display());
                pairs += 1;
            }
        }
        let last = by_index[by_index.keys().max().unwrap()];
        for name in ["resampling_importance_accuracy", "resampling_importance_kl", "counterfactual_importance_accuracy", "counterfactual_importance_kl", "different_trajectories_fraction", "overdeterminedness"] {
            assert_eq!(last[name].as_f64(), Some(0.0), "{}: last chunk's {name}", file.display());
        }
    }
    assert!(pairs > 5000, "{pairs}");
}
