//! `generate` with the real SmolLM2-135M GGUF: two short samples of one problem, written in the
//! rollout layout and read back; skipped when models/smollm2-135m is absent.

use crate::support;
use support::smollm2;
use std::path::Path;

use serde_json::json;
use thoughtscope::rollout::generate::{
    build_prompt, generate_rollouts, problem_from_value, solution_text, GenerateConfig, PromptStyle,
};
use thoughtscope::rollout::tagger::RuleTagger;
use thoughtscope::rollout::write::RolloutFiles;


#[test]
fn generates_two_rollouts_with_smollm2() {
    let Some(loaded) = smollm2() else { return };
    let problem = problem_from_value(json!({"name": "add_small", "problem": "What is 2 + 3?", "gt_answer": "5"}), 0).unwrap();
    let config = GenerateConfig {
        samples: 2,
        max_new_tokens: 40,
        seed: 7,
        system_prompt: Some("You may be under evaluation.".into()),
        ..GenerateConfig::default()
    };
    let tmp = tempfile::tempdir().unwrap();
    let mut seen = Vec::new();
    let made = generate_rollouts(&loaded, "smollm2-135m", std::slice::from_ref(&problem), &config, &RuleTagger::default(), tmp.path(), &mut |r| {
        seen.push(r.sample)
    })
    .unwrap();
    assert_eq!(seen, [0, 1]);
    assert_eq!(made.len(), 2);

    let prompt = build_prompt(&loaded.tokenizer, &problem.problem, config.system_prompt.as_deref(), PromptStyle::Chat).unwrap();
    assert!(prompt.starts_with("<|im_start|>system\nYou may be under evaluation.<|im_end|>\n<|im_start|>user\nSolve this math problem"));
    assert!(prompt.ends_with("Problem: What is 2 + 3? Solution: <|im_end|>\n<|im_start|>assistant\n<think>\n"), "{prompt:?}");

    for (k, rollout) in made.iter().enumerate() {
        assert_eq!(rollout.dir, tmp.path().join("add_small").join(format!("rollout_0{k}")));
        let files = RolloutFiles::read(&rollout.dir).unwrap();
        let base = &files.base_solution;
        assert_eq!(base.prompt, prompt);
        assert_eq!(base.full_cot, format!("{}{}", base.prompt, base.solution));
        assert!(!base.solution.contains("<|im_end|>"), "the stop token is not part of the solution");
        assert_eq!(files.chunks.solution_text, solution_text(&base.full_cot));
        assert_eq!(files.labeled.len(), files.chunks.chunks.len());
        assert_eq!(files.problem["gt_answer"], "5");
        let generation = files.generation.as_ref().unwrap();
        assert_eq!((generation.seed, generation.sample, generation.prompt_style.as_str()), (7 + k as u64, k, "chat"));
        assert!(generation.new_tokens <= 40 && generation.new_tokens == rollout.new_tokens);
        assert_eq!((generation.final_chunk.as_str(), generation.labeller.as_str()), ("keep_final", "rules"));
        eprintln!("rollout {k}: {} chunks, {:?}", files.chunks.chunks.len(), base.solution);
    }

    // Same seed, same text: sample 0 again on its own.
    let again = tempfile::tempdir().unwrap();
    let one = GenerateConfig { samples: 1, ..config.clone() };
    let redo = generate_rollouts(&loaded, "smollm2-135m", &[problem], &one, &RuleTagger::default(), again.path(), &mut |_| {}).unwrap();
    let first = RolloutFiles::read(&made[0].dir).unwrap();
    let second = RolloutFiles::read(&redo[0].dir).unwrap();
    assert_eq!(first.base_solution, second.base_solution);
}

#[test]
fn rejects_bad_settings_before_generating() {
    let Some(loaded) = smollm2() else { return };
    let problem = problem_from_value(json!({"problem": "What is 1 + 1?"}), 0).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let run = |config: GenerateConfig| {
        generate_rollouts(&loaded, "smollm2-135m", std::slice::from_ref(&problem), &config, &RuleTagger::default(), tmp.path(), &mut |_| {})
            .unwrap_err()
            .to_string()
    };
    assert!(run(GenerateConfig { samples: 0, ..Default::default() }).contains("--samples"));
    assert!(run(GenerateConfig { prefix: "a/b".into(), ..Default::default() }).contains("path separator"));
    assert!(run(GenerateConfig { system_prompt: Some("<think>".into()), ..Default::default() }).contains("<think>"));
    assert!(run(GenerateConfig { top_p: 0.0, max_new_tokens: 1, ..Default::default() }).contains("top_p"));
    assert!(!Path::new(&tmp.path().join("problem_0")).join("rollout_00").exists());
}

#[test]
fn generate_command_line() {
    if smollm2().is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let problems = tmp.path().join("problems.json");
    std::fs::write(&problems, r#"[{"name": "one", "problem": "What is 1 + 1?", "gt_answer": "2"}]"#).unwrap();
    let out = tmp.path().join("out");
    let run = |extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_thoughtscope"))
            .args(["generate", "--model", "smollm2-135m", "--samples", "1", "--max-new-tokens", "8", "--seed", "3"])
            .arg("--out")
            .arg(&out)
            .args(extra)
            .output()
            .unwrap()
    };
    let ok = run(&["--problems", problems.to_str().unwrap(), "--system", "You may be tested.", "--prefix", "r"]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(stdout.contains("one/r00\t") && stdout.contains("1 rollouts of 1 problem(s)"), "{stdout}");
    let files = RolloutFiles::read(&out.join("one/r00")).unwrap();
    assert_eq!(files.generation.unwrap().system_prompt.as_deref(), Some("You may be tested."));

    let missing = run(&["--problems", "no/such/problems.json"]);
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.starts_with("error: no/such/problems.json") && stderr.trim_end().lines().count() == 1, "{stderr}");
}
