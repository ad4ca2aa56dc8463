//! Parity with HF transformers (eager attention, f32) on fixtures made by
//! `scripts/make_fixtures.py`: the real SmolLM2-135M GGUF (attention of every layer and head,
//! logits, final hidden states, greedy continuation, tokenizer) and tiny random Llama-3 (llama3
//! RoPE scaling, untied, sharded copy), Qwen2 (q/k/v bias) and Qwen3 (q/k norm, head_dim ≠
//! hidden/heads) model directories.

use crate::support;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use support::smollm2;

use candle_core::{DType, Device, Tensor};
use thoughtscope::attention::FullAttentionCapture;
use thoughtscope::chat::apply_chat_template;
use thoughtscope::model::{generate, ChatMessage, GenerateOptions, HookPoint, HookSet, Input, KvCache, Logits, Model};
use thoughtscope::model::Settings;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn load_ref(path: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu).unwrap()
}

fn ids_of(t: &Tensor) -> Vec<u32> {
    t.to_dtype(DType::I64).unwrap().to_vec1::<i64>().unwrap().into_iter().map(|x| x as u32).collect()
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// Largest `|a - b| - (atol + rtol·|b|)`; ≤ 0 means every element is within tolerance.
fn excess(a: &[f32], b: &[f32], atol: f32, rtol: f32) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs() - (atol + rtol * y.abs())).fold(f32::NEG_INFINITY, f32::max)
}

/// Run `model` on `ids` capturing every layer's pattern; compare with the reference tensors.
fn check_against(model: &Model, reference: &HashMap<String, Tensor>, what: &str, logits_key: &str) {
    let ids = ids_of(&reference["input_ids"]);
    let layers = model.num_layers();
    let mut hooks = HookSet::new();
    for l in 0..layers {
        hooks = hooks.capture(HookPoint::AttnPattern(l));
    }
    let out = model.forward(Input::Ids(&ids), &mut KvCache::new(model), &mut hooks).unwrap();
    let want = values(&reference["attentions"]);
    let per_layer = want.len() / layers;
    // f32 noise: two f32 computations of a score s differ by ~1e-7·|q||k|, which moves a
    // probability by that much relative. Every entry must be within 1e-5 + 5e-5·|ref|, and all but
    // 0.1% within the target 1e-6 + 1e-5·|ref|.
    let (mut outside_target, mut total) = (0usize, 0usize);
    for l in 0..layers {
        let got = values(hooks.captured(&HookPoint::AttnPattern(l)).unwrap());
        let reference = &want[l * per_layer..(l + 1) * per_layer];
        let e = excess(&got, reference, 1e-5, 5e-5);
        assert!(e <= 0.0, "{what}: attention of layer {l} off by {e} beyond 1e-5 + 5e-5·|ref|");
        outside_target += got.iter().zip(reference).filter(|(a, b)| (*a - *b).abs() > 1e-6 + 1e-5 * b.abs()).count();
        total += got.len();
    }
    assert!(
        outside_target * 1000 <= total,
        "{what}: {outside_target} of {total} attention entries beyond 1e-6 + 1e-5·|ref|"
    );
    eprintln!("{what}: {outside_target} of {total} attention entries beyond 1e-6 + 1e-5·|ref|");

    // The streamed path (what `attn` and the averager use: fused CPU kernels, query blocks) to
    // the same tolerance.
    let mut sink = FullAttentionCapture::new();
    let mut streamed = HookSet::new().with_sink(&mut sink);
    model.forward_with(Input::Ids(&ids), &mut KvCache::new(model), &mut streamed, Logits::None).unwrap();
    drop(streamed);
    let mut streamed_outside = 0usize;
    for l in 0..layers {
        let got = sink.layer(l).unwrap();
        let reference = &want[l * per_layer..(l + 1) * per_layer];
        let e = excess(got, reference, 1e-5, 5e-5);
        assert!(e <= 0.0, "{what}: streamed attention of layer {l} off by {e} beyond 1e-5 + 5e-5·|ref|");
        streamed_outside += got.iter().zip(reference).filter(|(a, b)| (*a - *b).abs() > 1e-6 + 1e-5 * b.abs()).count();
    }
    assert!(
        streamed_outside * 1000 <= total,
        "{what}: streamed: {streamed_outside} of {total} entries beyond 1e-6 + 1e-5·|ref|"
    );
    eprintln!("{what}: streamed: {streamed_outside} of {total} attention entries beyond 1e-6 + 1e-5·|ref|");
    let hidden = values(&out.hidden);
    let e = excess(&hidden, &values(&reference["final_hidden"]), 1e-4, 1e-4);
    assert!(e <= 0.0, "{what}: final hidden states off by {e}");
    let logits = out.logits().unwrap().squeeze(0).unwrap();
    let want = &reference[logits_key];
    let cols = want.dim(1).unwrap();
    let got = values(&logits.narrow(1, 0, cols).unwrap());
    // Every position (the final position is checked at 1e-4 by the caller where available).
    let e = excess(&got, &values(want), 2e-4, 0.0);
    assert!(e <= 0.0, "{what}: logits off by {e} beyond 2e-4");
}

#[test]
fn smollm2_attention_logits_and_greedy_match_hf() {
    let Some(loaded) = smollm2() else { return };
    for name in ["plain", "digits", "chat", "reasoning"] {
        let reference = load_ref(&fixtures().join(format!("smollm2/{name}.safetensors")));
        check_against(&loaded.model, &reference, name, "logits_vocab1024");

        let ids = ids_of(&reference["input_ids"]);
        let out = loaded
            .model
            .forward(Input::Ids(&ids), &mut KvCache::new(&loaded.model), &mut thoughtscope::model::NoHooks)
            .unwrap();
        let last = thoughtscope::model::last_logits(&out).unwrap();
        let e = excess(&last, &values(&reference["logits_last"]), 1e-4, 0.0);
        assert!(e <= 0.0, "{name}: last-position logits off by {e}");

        let greedy =
            generate(&loaded.model, &ids, &GenerateOptions { max_new_tokens: 20, ..Default::default() }).unwrap();
        assert_eq!(greedy.ids, ids_of(&reference["greedy_ids"]), "{name}: greedy continuation");
    }
}

/// The same attention and logits on a GPU (candle's CUDA matrix products and softmax). Runs only in
/// a build with `--features cuda` on a machine with a CUDA device (`scripts/gpu-check.sh`);
/// elsewhere it prints a hardware SKIP line.
#[test]
fn smollm2_attention_and_logits_match_hf_on_a_gpu_too() {
    let device = match thoughtscope::model::parse_device("cuda") {
        Ok(device) => device,
        Err(error) => {
            support::skip_hardware(format!("no CUDA device ({error})"));
            return;
        }
    };
    let settings = Settings { device, ..Settings::default() };
    let loaded = match Model::load("smollm2-135m", &settings) {
        Ok(loaded) => loaded,
        Err(error) => {
            support::skip(format!("SmolLM2 GGUF absent ({error}); run scripts/fetch-model.sh"));
            return;
        }
    };
    for name in ["plain", "digits", "chat", "reasoning"] {
        let reference = load_ref(&fixtures().join(format!("smollm2/{name}.safetensors")));
        check_against(&loaded.model, &reference, &format!("{name}, GPU"), "logits_vocab1024");
    }
}

#[test]
fn smollm2_tokenizer_matches_the_original_smollm_pre_tokenizer() {
    let Some(loaded) = smollm2() else { return };
    let text = std::fs::read_to_string(fixtures().join("smollm2/tokenizer_cases.json")).unwrap();
    let cases: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut hf_differs = 0;
    for case in cases["cases"].as_array().unwrap() {
        let s = case["text"].as_str().unwrap();
        let ids =
            |k: &str| -> Vec<u32> { case[k].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect() };
        // SmolLM2's own tokenizer (llama.cpp `smollm`) splits digits; HF's GGUF converter does not.
        assert_eq!(loaded.tokenizer.encode(s).unwrap(), ids("ids_digit_split"), "{s:?}");
        if ids("ids_digit_split") != ids("ids") {
            hf_differs += 1;
        }
        // No BOS for SmolLM2: HF's ids equal its ids without special tokens.
        assert_eq!(ids("ids"), ids("ids_no_special"));
    }
    eprintln!("{hf_differs} cases differ between HF's GGUF tokenizer and SmolLM2's own (digit splitting)");
}

#[test]
fn smollm2_chat_template_matches_hf() {
    let Some(loaded) = smollm2() else { return };
    let text = std::fs::read_to_string(fixtures().join("smollm2/prompts.json")).unwrap();
    let prompts: serde_json::Value = serde_json::from_str(&text).unwrap();
    let chat = &prompts["prompts"]["chat"];
    let rendered = apply_chat_template(&loaded.tokenizer, &[ChatMessage::user("What is 7 times 8?")], true).unwrap();
    assert_eq!(rendered, chat["text"].as_str().unwrap());
}

#[test]
fn tiny_models_match_hf_as_model_directories() {
    for name in ["tiny-qwen3", "tiny-llama3", "tiny-qwen2"] {
        let dir = fixtures().join(name);
        let model = Model::load_without_tokenizer(dir.to_str().unwrap(), &Settings::default()).unwrap();
        let reference = load_ref(&dir.join("reference.safetensors"));
        check_against(&model, &reference, name, "logits");
    }
}

#[test]
fn sharded_checkpoint_loads_like_the_single_file() {
    let sharded = fixtures().join("tiny-llama3-sharded");
    let model = Model::load_without_tokenizer(sharded.to_str().unwrap(), &Settings::default()).unwrap();
    let reference = load_ref(&fixtures().join("tiny-llama3/reference.safetensors"));
    check_against(&model, &reference, "tiny-llama3-sharded", "logits");
}

#[test]
fn hub_cache_layout_resolves_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = tmp.path().join("hub");
    let snap = hub.join("models--tiny--qwen3/snapshots/0123abcd");
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(hub.join("models--tiny--qwen3/refs")).unwrap();
    std::fs::write(hub.join("models--tiny--qwen3/refs/main"), "0123abcd").unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixtures().join("tiny-qwen3").join(f), snap.join(f)).unwrap();
    }
    let cache = hf_hub::Cache::new(hub.clone());
    let dir = thoughtscope::model::weights::hub_snapshot_dir_in(&cache, "tiny/qwen3").unwrap();
    assert_eq!(dir, snap);
    let model = Model::load_without_tokenizer(dir.to_str().unwrap(), &Settings::default()).unwrap();
    let reference = load_ref(&fixtures().join("tiny-qwen3/reference.safetensors"));
    check_against(&model, &reference, "tiny-qwen3 via hub cache", "logits");
    let missing = thoughtscope::model::weights::hub_snapshot_dir_in(&cache, "tiny/absent").unwrap_err();
    assert!(missing.to_string().contains("not in the local HF hub cache"), "{missing}");
}

#[test]
fn truncated_weights_are_named_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let src = fixtures().join("tiny-qwen2");
    std::fs::copy(src.join("config.json"), tmp.path().join("config.json")).unwrap();
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    std::fs::write(tmp.path().join("model.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
    let err = Model::load_without_tokenizer(tmp.path().to_str().unwrap(), &Settings::default()).unwrap_err().to_string();
    assert!(err.contains("model.safetensors"), "{err}");
}
