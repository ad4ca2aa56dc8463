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
