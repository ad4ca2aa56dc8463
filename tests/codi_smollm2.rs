//! CI integration test: `codi run-all --test-mode` on the CODI-shaped SmolLM2-135M checkpoint
//! (built by `make_model`; NOT a CODI model): the 10-problem set, faithful and corrected
//! variants, ablation + attention + analysis + comparison, with max_new_tokens capped at 16.
//! Skips when the SmolLM2 GGUF (scripts/fetch-model.sh) or ../shared/data is absent.

use std::path::PathBuf;
use std::time::Instant;

use candle_core::Device;
use thoughtscope::codi::{run_all, MakeModelOptions, RunAllOptions};

#[test]
fn run_all_test_mode_on_smollm2_codi_shaped() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let input = root.join("../shared/data/codi/llama_cot_original_stratified_1000.json");
    if !input.is_file() {
        eprintln!("skipped: ../shared/data absent");
        return;
    }
    if thoughtscope::model::Model::load("smollm2-135m", &Device::Cpu).is_err() {
        eprintln!("skipped: smollm2-135m not found (run scripts/fetch-model.sh)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut options = RunAllOptions::new(input, tmp.path().join("codi-smollm2"), tmp.path().join("out"));
    options.make_from = Some(MakeModelOptions::default());
    options.test_mode = true;
    let start = Instant::now();
    let report = run_all(&options, &Device::Cpu).unwrap();
    eprintln!("run-all --test-mode: {:.1} s; {:?}", start.elapsed().as_secs_f64(), report.steps);
    assert_eq!(report.problems, 10);
    assert!(report.notes.iter().any(|n| n.contains("NOT A CODI MODEL")));
    let out = tmp.path().join("out");
    for variant in ["faithful", "corrected"] {
        let ablation: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(out.join(variant).join("token_ablation_results_test.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(ablation.as_array().unwrap().len(), 10);
        assert!(ablation.as_array().unwrap().iter().all(|r| r.get("error").is_none()));
        assert!(out.join(variant).join("analysis/summary_statistics.json").is_file());
    }
    assert!(out.join("comparison.md").is_file());
    let readme = std::fs::read_to_string(out.join("README.md")).unwrap();
    assert!(readme.contains("NOT A CODI MODEL"));
}
