//! An independent reference decoder: candle-transformers' own `llama` and `qwen3` models, loaded
//! from the same tensors, against thoughtscope's hooked decoder. Both are f32 on the CPU but share
//! no model code (attention, RoPE, norms, GQA are each written twice), so agreement checks the
//! architecture, not just the arithmetic.
//!
//! - real SmolLM2-135M (GGUF Q4_1, dequantised by our loader; Llama architecture, tied
//!   embeddings): logits at every position (candle-transformers' `Llama` returns the last
//!   position only, so it is fed one token at a time through its KV cache);
//! - tiny random Qwen3 (PyTorch-written fixture; explicit `head_dim`, q/k norms): final-norm hidden
//!   states at every position, and the last position's logits.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, D};
use candle_nn::VarBuilder;
use candle_transformers::models::{llama, qwen3};
use thoughtscope::model::weights::{load_gguf, load_hf_dir, Checkpoint};
use thoughtscope::model::{Input, KvCache, Logits, Model, NoHooks};

use crate::support;

/// Largest |a − b| relative to the largest |b| (1 when b is all zero).
fn relative_max_diff(a: &Tensor, b: &Tensor) -> f32 {
    let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    let scale = b.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap().max(1.0);
    diff / scale
}

fn var_builder(tensors: &HashMap<String, Tensor>) -> VarBuilder<'static> {
    VarBuilder::from_tensors(tensors.clone(), DType::F32, &Device::Cpu)
}

fn our_model(checkpoint: &Checkpoint) -> Model {
    Model::from_tensors(checkpoint.config.clone(), checkpoint.tensors.clone(), &Device::Cpu).unwrap()
}

#[test]
fn smollm2_logits_match_candle_transformers_llama() {
    let Some(loaded) = support::smollm2() else { return };
    let checkpoint = load_gguf(std::path::Path::new(&loaded.source)).unwrap();
    let ours = our_model(&checkpoint);
    let c = &checkpoint.config;
    assert!(c.rope_scaling.is_none() && c.rope_freq_divisors.is_none(), "SmolLM2 uses plain RoPE");
    let config = llama::Config {
        hidden_size: c.hidden_size,
        intermediate_size: c.intermediate_size,
        vocab_size: c.vocab_size,
        num_hidden_layers: c.num_hidden_layers,
        num_attention_heads: c.num_attention_heads,
        num_key_value_heads: c.num_kv_heads(),
        use_flash_attn: false,
        rms_norm_eps: c.rms_norm_eps,
        rope_theta: c.rope_theta as f32,
        bos_token_id: None,
        eos_token_id: None,
        rope_scaling: None,
        max_position_embeddings: 64,
        tie_word_embeddings: c.tie_word_embeddings,
    };
    let reference = llama::Llama::load(var_builder(&checkpoint.tensors), &config).unwrap();

    let ids = loaded.tokenizer.encode("Janet has 3 apples. She buys 12 more, then gives away half. How many?").unwrap();
    let out = ours.forward_with(Input::Ids(&ids), &mut KvCache::new(&ours), &mut NoHooks, Logits::All).unwrap();
    let our_logits = out.logits().unwrap().squeeze(0).unwrap();

    let mut cache = llama::Cache::new(true, DType::F32, &config, &Device::Cpu).unwrap();
    for (position, &id) in ids.iter().enumerate() {
        let input = Tensor::new(&[id], &Device::Cpu).unwrap().unsqueeze(0).unwrap();
        let theirs = reference.forward(&input, position, &mut cache).unwrap().squeeze(0).unwrap();
        let mine = our_logits.get(position).unwrap();
        let diff = relative_max_diff(&mine, &theirs);
        assert!(diff < 1e-4, "position {position}: logits differ by {diff} (relative to the largest logit)");
        let top = |t: &Tensor| t.argmax(D::Minus1).unwrap().to_scalar::<u32>().unwrap();
        assert_eq!(top(&mine), top(&theirs), "position {position}: greedy token");
    }
}

#[test]
fn tiny_qwen3_hidden_states_and_logits_match_candle_transformers_qwen3() {
    let dir = support::fixture("tiny-qwen3");
    let checkpoint = load_hf_dir(&dir).unwrap();
    let ours = our_model(&checkpoint);
    let config: qwen3::Config =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let ids: Vec<u32> = (0..24).map(|i| (i * 37 + 5) % config.vocab_size as u32).collect();
    let out = ours.forward_with(Input::Ids(&ids), &mut KvCache::new(&ours), &mut NoHooks, Logits::Last).unwrap();
    let input = Tensor::new(ids.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap();

    let mut base = qwen3::Model::new(&config, var_builder(&checkpoint.tensors)).unwrap();
    let hidden = base.forward(&input, 0).unwrap();
    let diff = relative_max_diff(&out.hidden, &hidden);
    assert!(diff < 1e-5, "final-norm hidden states differ by {diff}");

    let mut causal_lm = qwen3::ModelForCausalLM::new(&config, var_builder(&checkpoint.tensors)).unwrap();
    let logits = causal_lm.forward(&input, 0).unwrap();
    let diff = relative_max_diff(out.logits().unwrap(), &logits);
    assert!(diff < 1e-5, "last-position logits differ by {diff}");
}
