//! CI integration test: `codi run-all --test-mode` on the CODI-shaped SmolLM2-135M checkpoint
//! (built by `make_model`; NOT a CODI model): the 10-problem set, faithful and corrected
//! variants, ablation + attention + analysis + comparison, with max_new_tokens capped at 16;
//! batched decoding equal to run-by-run decoding on that model.
//! Skips when the SmolLM2 GGUF (scripts/fetch-model.sh) or the CODI reference data is absent.

use std::time::Instant;

use crate::support;

use thoughtscope::codi::{
    decode_greedy, decode_greedy_batch, load_problems, run_all, run_from_prompt, run_prompt, CodiModel, LoadOptions,
    LoopMode, LoopOptions, MakeModelOptions, ModelSpec, PromptState, RunAllOptions,
};
use thoughtscope::model::NoHooks;
use thoughtscope::model::Settings;

#[test]
fn run_all_test_mode_on_smollm2_codi_shaped() {
    let Some(input) = support::shared_data("codi/llama_cot_original_stratified_1000.json") else { return };
    if support::smollm2().is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut model = ModelSpec::checkpoint(tmp.path().join("codi-smollm2"));
    model.make_from = Some(MakeModelOptions::default());
    let mut options = RunAllOptions::new(model, tmp.path().join("out"));
    options.input = Some(input);
    options.test_mode = true;
    // A quick cap (the seed's default is 200 new tokens; this synthetic model never emits EOS).
    options.max_new_tokens = Some(thoughtscope::codi::pipeline::QUICK_MAX_NEW_TOKENS);
    let start = Instant::now();
    let report = run_all(&options, &Settings::default()).unwrap();
    eprintln!("run-all --test-mode: {:.1} s; {:?}", start.elapsed().as_secs_f64(), report.steps);
    assert_eq!(report.problems, 10);
    assert!(report.notes.iter().any(|n| n.contains("NOT A CODI MODEL")));
    let out = tmp.path().join("out");
    for variant in ["faithful", "corrected"] {
        let ablation: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(out.join(variant).join("results/token_ablation_results_test.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(ablation.as_array().unwrap().len(), 10);
        assert!(ablation.as_array().unwrap().iter().all(|r| r.get("error").is_none()));
        assert!(out.join(variant).join("results/summary_statistics.json").is_file());
    }
    assert!(out.join("comparison.md").is_file());
    let readme = std::fs::read_to_string(out.join("README.md")).unwrap();
    assert!(readme.contains("NOT A CODI MODEL"));

    // The ablation decodes a problem's seven runs as one batch: the same tokens as decoding them
    // one by one, also when runs stop at different steps and leave the batch.
    let codi = CodiModel::load(&tmp.path().join("codi-smollm2"), &LoadOptions::default(), &Settings::default()).unwrap();
    let mut loop_options = LoopOptions::for_mode(LoopMode::Official);
    loop_options.max_new_tokens = 16;
    let problems = load_problems(&out.join("faithful/results/test_dataset_10.json")).unwrap();
    let mut lengths = std::collections::BTreeSet::new();
    for problem in &problems[..3] {
        let prompt = run_prompt(&codi, &problem.question, &loop_options, &mut NoHooks).unwrap();
        let states: Vec<_> = (0..7)
            .map(|i| {
                let next_input = (prompt.next_input.clone() * (1.0 - 0.25 * i as f64)).unwrap();
                run_from_prompt(&codi, PromptState { next_input, ..prompt.clone() }, &loop_options, &mut NoHooks)
                    .unwrap()
            })
            .collect();
        let batched = decode_greedy_batch(&codi, states.clone(), &loop_options).unwrap();
        for (state, b) in states.into_iter().zip(batched) {
            let one = decode_greedy(&codi, state, &loop_options, &mut NoHooks).unwrap();
            assert_eq!(b.tokens, one.tokens, "{}", problem.id);
            lengths.insert(one.tokens.len());
        }
    }
    assert!(lengths.len() > 1, "every run decoded {lengths:?} tokens: the early-stop path went untested");
}
