//! Smaller refusals that used to come late or not at all: each fails before any model work, with
//! the value and what to do.

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use thoughtscope::analysis::va_pipeline::MAX_PERMUTATIONS;
use thoughtscope::analysis::{run_va, VaConfig};
use thoughtscope::attention::{check_sentence_attention_fits, SuppressionOptions};
use thoughtscope::codi::ModelSpec;
use thoughtscope::model::Model;
use thoughtscope::model::Settings;

#[test]
fn an_untied_config_without_lm_head_is_an_error_not_a_silent_tie() {
    let fixture = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-llama3");
    let dir = tempfile::tempdir().unwrap();
    for file in ["config.json", "generation_config.json"] {
        std::fs::copy(fixture.join(file), dir.path().join(file)).unwrap();
    }
    let mut tensors: HashMap<String, Tensor> = candle_core::safetensors::load(fixture.join("model.safetensors"), &Device::Cpu).unwrap();
    assert!(tensors.remove("lm_head.weight").is_some());
    candle_core::safetensors::save(&tensors, dir.path().join("model.safetensors")).unwrap();
    let err = Model::load_without_tokenizer(dir.path().to_str().unwrap(), &Settings::default()).unwrap_err().to_string();
    assert!(err.contains("tie_word_embeddings") && err.contains("lm_head.weight"), "{err}");
}

#[test]
fn va_permutations_are_bounded() {
    let tmp = tempfile::tempdir().unwrap();
    let config = VaConfig {
        root: std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("rollouts/apple_boxes"),
        cache_dir: tmp.path().join("cache"),
        out: Some(tmp.path().join("out")),
        permutations: usize::MAX,
        figures: false,
        ..Default::default()
    };
    let err = run_va(&config).map(|r| r.headline()).unwrap_err().to_string();
    assert!(err.contains("--permutations") && err.contains(&MAX_PERMUTATIONS.to_string()), "{err}");
}

#[test]
fn va_out_that_is_a_file_fails_before_the_work() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    std::fs::write(&out, b"a file").unwrap();
    let config = VaConfig {
        root: std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("rollouts/apple_boxes"),
        cache_dir: tmp.path().join("cache"),
        out: Some(out.clone()),
        figures: false,
        ..Default::default()
    };
    let err = run_va(&config).map(|r| r.headline()).unwrap_err().to_string();
    assert!(err.contains(&out.display().to_string()) && err.contains("not a folder"), "{err}");
    assert!(!tmp.path().join("cache").exists(), "no attention computed");
}

#[test]
fn suppression_keeping_no_token_is_refused() {
    let err = SuppressionOptions { max_tokens: 0, ..Default::default() }.validate().unwrap_err().to_string();
    assert!(err.contains("max-tokens"), "{err}");
    assert!(SuppressionOptions::default().validate().is_ok());
}

#[test]
fn the_missing_checkpoint_error_names_a_command_that_exists() {
    let tmp = tempfile::tempdir().unwrap();
    let err = ModelSpec::checkpoint(tmp.path().join("none")).load(&Settings::default()).map(|_| ()).unwrap_err().to_string();
    assert!(!err.contains("--make-model"), "{err}");
    assert!(err.contains("codi make-model --out"), "{err}");
}

#[test]
fn sentence_attention_too_big_for_memory_is_refused_with_the_number() {
    // 30 layers × 9 heads × 200,000² float32: 40 TiB, beyond any machine's memory.
    let err = check_sentence_attention_fits(30, 9, 200_000).unwrap_err().to_string();
    assert!(err.contains("30 layers × 9 heads × 200000 × 200000") && err.contains("GiB"), "{err}");
    check_sentence_attention_fits(30, 9, 100).unwrap();
}

/// `--out <existing file>` used to fail only after the whole computation (or, for some commands,
/// half-way through writing): every command that writes a folder refuses it first, naming it.
#[test]
fn every_output_folder_that_is_a_file_is_refused_before_any_work() {
    let work = tempfile::tempdir().unwrap();
    let work = work.path();
    crate::support::tiny_model_with_tokenizer(&work.join("model"), 4096);
    let problem = work.join("traces/rollout_0");
    std::fs::create_dir_all(&problem).unwrap();
    let chunks = ["Tom buys 3 apples .", "He eats 2 .", "The answer is 1 ."];
    std::fs::write(problem.join("chunks.json"), serde_json::json!({ "chunks": chunks }).to_string()).unwrap();
    std::fs::write(problem.join("base_solution.json"), serde_json::json!({ "full_cot": chunks.join("\n") }).to_string()).unwrap();
    let file = work.join("a-file");
    std::fs::write(&file, b"not a folder").unwrap();
    let (f, m, p) = (file.to_str().unwrap(), work.join("model"), problem.to_str().unwrap());
    let m = m.to_str().unwrap();
    let commands: [&[&str]; 8] = [
        &["suppress", p, "--model", m, "--mode", "chunks", "--out", f],
        &["anchors", "--traces", p, "--model", m, "--cache-dir", "cache", "--out", f],
        &["blackbox", p, "--importance", "importance.json", "--model", m, "--cache-dir", "cache", "--out", f],
        &["generate", "--problems", "problems.json", "--model", m, "--out", f],
        &["resample", p, "--model", m, "--out", f],
        &["va", "--root", p, "--cache-dir", "cache", "--out", f],
        &["codi", "make-model", "--base", m, "--out", f],
        &["codi", "run-all", "--checkpoint", "none", "--out", f],
    ];
    for args in commands {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_thoughtscope"))
            .current_dir(work)
            .args(args)
            .arg("--quiet")
            .env("THOUGHTSCOPE_PROGRESS", "off")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(f) && (stderr.contains("is a file") || stderr.contains("not a folder")), "{args:?}: {stderr}");
        assert!(!work.join("cache").exists(), "{args:?} started work");
        assert_eq!(std::fs::read(&file).unwrap(), b"not a folder");
    }
}
