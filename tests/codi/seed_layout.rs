//! The CODI seed's arrangement and file layout:
//! - a **base model directory** (`tests/fixtures/tiny-codi-base/`: config.json with V0 = 256,
//!   model.safetensors, tokenizer.json; written by transformers' `save_pretrained`) plus a **CODI
//!   checkpoint directory** that holds only `pytorch_model.bin` (PyTorch + PEFT, from
//!   `tests/fixtures/tiny-codi/`), as the seed loads `~/codi_ckpt/llama_gsm8k/` on top of
//!   `meta-llama/Llama-3.2-1B-Instruct`; the loaded model reproduces PyTorch's logits;
//! - checkpoints that do not fit the base are errors naming both;
//! - `codi run-all` and the single steps write the seed's `results/` and `figures/` names;
//! - the embedded synthetic problem set (NOT GSM8K) is the default input.

use crate::support;

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use thoughtscope::codi::{CodiModel, CodiWeights, LoadOptions};
use thoughtscope::model::{Input, KvCache, NoHooks};
use thoughtscope::model::Settings;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn base_dir() -> PathBuf {
    support::fixture("tiny-codi-base/config.json");
    fixtures().join("tiny-codi-base")
}

/// A checkpoint folder as the seed's: `pytorch_model.bin` alone (no config, no tokenizer, no codi.json).
fn checkpoint_only(root: &Path) -> PathBuf {
    let dir = root.join("llama_gsm8k");
    std::fs::create_dir_all(&dir).unwrap();
    let bin = support::fixture("tiny-codi/pytorch_model.bin");
    std::fs::copy(bin, dir.join("pytorch_model.bin")).unwrap();
    dir
}

/// The tiny checkpoint's LoRA alpha (2 with r 8: CODI's scale 0.25).
fn options(base: Option<&Path>) -> LoadOptions {
    LoadOptions { base: base.map(|p| p.to_string_lossy().into_owned()), lora_alpha: Some(2.0), lora_rank: None }
}

fn max_rel_diff(a: &Tensor, b: &Tensor) -> f32 {
    let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(a.len(), b.len());
    a.iter().zip(&b).map(|(x, y)| (x - y).abs() / (1.0 + y.abs())).fold(0.0, f32::max)
}

#[test]
fn base_plus_checkpoint_reproduces_pytorch() {
    let tmp = tempfile::tempdir().unwrap();
    let checkpoint = checkpoint_only(tmp.path());
    assert!(!checkpoint.join("config.json").exists());
    let weights = CodiWeights::load(&checkpoint, &options(Some(&base_dir())), &Settings::default()).unwrap();
    assert_eq!((weights.special.base_vocab, weights.special.bot, weights.special.eot), (256, 257, 258));
    assert_eq!(weights.lora_rank, Some(8));

    let reference = candle_core::safetensors::load(support::fixture("tiny-codi/reference.safetensors"), &Device::Cpu).unwrap();
    let ids: Vec<u32> = reference["input_ids"].to_vec1::<i64>().unwrap().iter().map(|&i| i as u32).collect();
    let mut cache = KvCache::new(&weights.model);
    let out = weights.model.forward(Input::Ids(&ids), &mut cache, &mut NoHooks).unwrap();
    let diff = max_rel_diff(out.logits().unwrap(), &reference["logits"]);
    assert!(diff < 1e-5, "logits differ from PyTorch by {diff}");

    // The tokenizer comes from the base directory.
    let codi = CodiModel::load(&checkpoint, &options(Some(&base_dir())), &Settings::default()).unwrap();
    let ids = codi.tokenizer.encode("Mia has 12 apples .").unwrap();
    assert!(ids.len() >= 5 && ids.iter().all(|&i| i < 256), "{ids:?}");
    assert!(!ids.contains(&0), "a word of the fixture vocabulary became <unk>: {ids:?}");
}

#[test]
fn checkpoints_that_do_not_fit_name_both() {
    let tmp = tempfile::tempdir().unwrap();
    let checkpoint = checkpoint_only(tmp.path());

    // No config anywhere: say what to give.
    let err = CodiWeights::load(&checkpoint, &options(None), &Settings::default()).unwrap_err().to_string();
    assert!(err.contains("config.json") && err.contains("--base"), "{err}");

    // A base with another vocabulary (512 rows; the checkpoint has 256 + 3).
    let other = support::fixture("tiny-llama3/config.json").parent().unwrap().to_path_buf();
    let err = CodiWeights::load(&checkpoint, &options(Some(&other)), &Settings::default()).unwrap_err().to_string();
    assert!(err.contains("pytorch_model.bin") && err.contains("tiny-llama3"), "{err}");
    assert!(err.contains("259 rows") && err.contains("vocab_size is 512"), "{err}");

    // The LoRA rank the user expects (CODI's 128) is not the checkpoint's 8.
    let mut wrong_rank = options(Some(&base_dir()));
    wrong_rank.lora_rank = Some(128);
    let err = CodiWeights::load(&checkpoint, &wrong_rank, &Settings::default()).unwrap_err().to_string();
    assert!(err.contains("expected LoRA rank 128") && err.contains("LoRA rank 8") && err.contains("tiny-codi-base"), "{err}");

    // Another hidden size: a base config edited to 32.
    let edited = tmp.path().join("narrow-base");
    std::fs::create_dir_all(&edited).unwrap();
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(base_dir().join("config.json")).unwrap()).unwrap();
    config["hidden_size"] = 32.into();
    std::fs::write(edited.join("config.json"), config.to_string()).unwrap();
    let err = CodiWeights::load(&checkpoint, &options(Some(&edited)), &Settings::default()).unwrap_err().to_string();
    assert!(err.contains("64 wide") && err.contains("hidden_size is 32") && err.contains("narrow-base"), "{err}");
}

fn thoughtscope(args: &[&str]) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_thoughtscope")).args(args).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "thoughtscope {args:?}: {text}");
    text
}

/// `run-all --test-mode` with the seed's arrangement writes the seed's names in each variant's
/// folder; the single steps (`dataset`, `ablate`, `attention`, `analyze`, all with `--test-mode`)
/// write the same files.
#[test]
fn run_all_and_steps_write_the_seed_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let checkpoint = checkpoint_only(tmp.path());
    let (checkpoint, base) = (checkpoint.to_str().unwrap(), base_dir());
    let base = base.to_str().unwrap();
    let out = tmp.path().join("codi");
    let text = thoughtscope(&[
        "codi", "run-all", "--test-mode", "--checkpoint", checkpoint, "--base", base, "--lora-alpha", "2",
        "--max-new-tokens", "3", "--html-only", "--out", out.to_str().unwrap(),
    ]);
    assert!(text.contains("synthetic"), "the default problems are said to be synthetic: {text}");
    for variant in ["faithful", "corrected"] {
        for file in [
            "results/test_dataset_10.json",
            "results/token_ablation_results_test.json",
            "results/attention_weights_test.json",
            "results/summary_statistics.json",
            "figures/1_importance_by_position.html",
            "figures/2_importance_heatmap.html",
            "figures/3_attention_vs_importance.html",
            "figures/4_correlation_by_position.html",
            "index.html",
            "plotly.min.js",
        ] {
            assert!(out.join(variant).join(file).is_file(), "{variant}/{file}");
        }
    }
    assert!(out.join("comparison.md").is_file());
    let dataset: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("faithful/results/test_dataset_10.json")).unwrap()).unwrap();
    let ids: Vec<&str> = dataset.as_array().unwrap().iter().map(|p| p["gsm8k_id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 10);
    assert!(ids.iter().all(|id| id.starts_with("synthetic_")), "{ids:?}");
    // The seed's 1_run_token_ablation.py patches the question token by default (faithful only).
    let meta = std::fs::read_to_string(out.join("faithful/results/token_ablation_results_test.meta.json")).unwrap();
    assert!(meta.contains("\"patch_prompt\": true"), "{meta}");
    let meta = std::fs::read_to_string(out.join("corrected/results/token_ablation_results_test.meta.json")).unwrap();
    assert!(meta.contains("\"patch_prompt\": false"), "{meta}");

    // Step by step into another folder, as the seed's four scripts.
    let dir = tmp.path().join("steps");
    let dir = dir.to_str().unwrap();
    thoughtscope(&["codi", "dataset", "--test-mode", "--dir", dir]);
    let model = ["--checkpoint", checkpoint, "--base", base, "--lora-alpha", "2", "--max-new-tokens", "3"];
    let step = |name: &str| {
        let mut args = vec!["codi", name, "--test-mode", "--dir", dir];
        args.extend(model);
        thoughtscope(&args)
    };
    step("ablate");
    step("attention");
    thoughtscope(&["codi", "analyze", "--test-mode", "--dir", dir, "--html-only"]);
    let steps = Path::new(dir);
    for file in ["results/test_dataset_10.json", "results/summary_statistics.json", "figures/3_attention_vs_importance.html"] {
        assert!(steps.join(file).is_file(), "{file}");
    }
    // Same problems, same model, same settings: the same ablation results as run-all's faithful run.
    let read = |p: PathBuf| -> serde_json::Value { serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap() };
    assert_eq!(
        read(steps.join("results/token_ablation_results_test.json")),
        read(out.join("faithful/results/token_ablation_results_test.json"))
    );
}

/// The four figures as the seed writes them: PDF and PNG (and SVG, HTML) through Chromium.
#[test]
fn analyze_writes_pdf_and_png() {
    if !support::chromium() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let layout = thoughtscope::codi::ExperimentLayout::seed(tmp.path().join("exp"), false);
    std::fs::create_dir_all(layout.results_dir()).unwrap();
    std::fs::copy(fixtures().join("codi-analysis/ablation.json"), layout.ablation()).unwrap();
    std::fs::copy(fixtures().join("codi-analysis/attention.json"), layout.attention()).unwrap();
    let analysis = thoughtscope::codi::analyze(&layout, &thoughtscope::codi::AnalyzeOptions::default()).unwrap();
    assert!(analysis.notes.is_empty(), "{:?}", analysis.notes);
    for stem in thoughtscope::codi::SEED_FIGURES {
        let pdf = std::fs::read(layout.figures_dir().join(format!("{stem}.pdf"))).unwrap();
        assert!(pdf.starts_with(b"%PDF") && pdf.len() > 1000, "{stem}.pdf");
        let png = std::fs::read(layout.figures_dir().join(format!("{stem}.png"))).unwrap();
        assert!(png.starts_with(b"\x89PNG"), "{stem}.png");
    }
}
