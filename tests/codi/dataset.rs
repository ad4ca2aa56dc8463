//! The stratified sampler reproduces CPython's `random.seed(42)` + `random.sample` exactly: the
//! sampled ids equal upstream's 100- and 10-problem sets (reconstructed with CPython 3.11 in
//! the reference data's `codi/*_reconstructed.json`), in sample order.

use std::path::PathBuf;

use crate::support;

use thoughtscope::codi::problems::dataset::{load_problems, make_dataset, stratified_sample, FULL_PER_LEVEL, TEST_PER_LEVEL};

fn shared_codi() -> Option<PathBuf> {
    support::shared_data("codi/llama_cot_original_stratified_1000.json")?;
    support::shared_data("codi")
}

fn ids_of(path: &std::path::Path) -> Vec<String> {
    load_problems(path).unwrap().into_iter().map(|p| p.id).collect()
}

#[test]
fn full_sample_equals_upstream_100() {
    let Some(dir) = shared_codi() else { return };
    let problems = load_problems(dir.join("llama_cot_original_stratified_1000.json")).unwrap();
    assert_eq!(problems.len(), 1000);
    let sample = stratified_sample(&problems, FULL_PER_LEVEL, 42).unwrap();
    let got: Vec<String> = sample.iter().map(|p| p.id.clone()).collect();
    assert_eq!(got, ids_of(&dir.join("full_dataset_100_reconstructed.json")));
    assert_eq!(got[0], "train_4316");
    assert_eq!(got[99], "train_5933");
}

#[test]
fn test_sample_equals_upstream_10_and_is_written_in_order() {
    let Some(dir) = shared_codi() else { return };
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("test_dataset_10.json");
    let sample = make_dataset(&dir.join("llama_cot_original_stratified_1000.json"), TEST_PER_LEVEL, 42, &path).unwrap();
    let expected = ids_of(&dir.join("test_dataset_10_reconstructed.json"));
    assert_eq!(sample.iter().map(|p| p.id.clone()).collect::<Vec<_>>(), expected);
    // The written file keeps every upstream field and the sample order.
    assert_eq!(ids_of(&path), expected);
    let written: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("test_dataset_10_reconstructed.json")).unwrap()).unwrap();
    assert_eq!(written, reference);
}

#[test]
fn other_seed_differs_and_too_many_is_an_error() {
    let Some(dir) = shared_codi() else { return };
    let problems = load_problems(dir.join("llama_cot_original_stratified_1000.json")).unwrap();
    let a = stratified_sample(&problems, TEST_PER_LEVEL, 7).unwrap();
    let b = stratified_sample(&problems, TEST_PER_LEVEL, 42).unwrap();
    assert_ne!(a.iter().map(|p| &p.id).collect::<Vec<_>>(), b.iter().map(|p| &p.id).collect::<Vec<_>>());
    let err = stratified_sample(&problems, [251, 0, 0, 0], 42).unwrap_err().to_string();
    assert!(err.contains("2-step") && err.contains("250"), "{err}");
}

#[test]
fn malformed_problem_file_names_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.json");
    std::fs::write(&path, r#"[{"gsm8k_id": "x", "question": "q", "difficulty": "2-step"}]"#).unwrap();
    let err = load_problems(&path).unwrap_err().to_string();
    assert!(err.contains("bad.json") && err.contains("answer"), "{err}");
}

#[test]
fn a_per_level_count_near_usize_max_is_an_error_not_a_capacity_overflow() {
    let Some(dir) = shared_codi() else { return };
    let problems = load_problems(dir.join("llama_cot_original_stratified_1000.json")).unwrap();
    for per_level in [[usize::MAX; 4], [1, usize::MAX, usize::MAX, 1]] {
        let err = stratified_sample(&problems, per_level, 42).unwrap_err().to_string();
        assert!(err.contains("cannot sample") && err.contains(&usize::MAX.to_string()), "{err}");
    }
}
