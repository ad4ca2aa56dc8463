//! Shared set-up of the CODI tests: a tiny random Llama model as an HF directory (config.json,
//! model.safetensors, word-level tokenizer.json), from which `codi make-model` builds a
//! CODI-shaped checkpoint in the real key layout. Fast on CPU, needs no files from outside.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use thoughtscope::codi::problems::dataset::Problem;
use thoughtscope::model::Settings;

pub const HIDDEN: usize = 32;
pub const LAYERS: usize = 4;

/// Words of the tiny vocabulary: ids 0 = [UNK], 1 = <eos>, then these, then numbers 0..=60.
const WORDS: [&str; 18] = [
    "The", "answer", "is", ":", "How", "many", "apples", "does", "Tom", "have", "?", "He", "buys", "and", "eats",
    "more", "each", "day",
];

pub fn vocab() -> Vec<String> {
    let mut v: Vec<String> = vec!["[UNK]".into(), "<eos>".into()];
    v.extend(WORDS.iter().map(|w| w.to_string()));
    v.extend((0..=60).map(|n| n.to_string()));
    v
}

/// Deterministic pseudo-random values in [-scale, scale] (a small LCG; no RNG crate needed).
fn values(n: usize, seed: &mut u64, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| {
            *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (((*seed >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0) * scale
        })
        .collect()
}

/// Write a tiny Llama HF directory at `dir`.
pub fn write_tiny_base(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let vocab = vocab();
    let v = vocab.len();
    let (d, inter, heads, kv_heads) = (HIDDEN, 64, 4, 2);
    let head_dim = d / heads;
    let config = serde_json::json!({
        "model_type": "llama", "vocab_size": v, "hidden_size": d, "intermediate_size": inter,
        "num_hidden_layers": LAYERS, "num_attention_heads": heads, "num_key_value_heads": kv_heads,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": 512,
        "tie_word_embeddings": true, "eos_token_id": 1
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();

    let mut seed = 7u64;
    let mut t: HashMap<String, Tensor> = HashMap::new();
    let put = |t: &mut HashMap<String, Tensor>, name: String, shape: &[usize], scale: f32, seed: &mut u64| {
        let n = shape.iter().product();
        t.insert(name, Tensor::from_vec(values(n, seed, scale), shape, &Device::Cpu).unwrap());
    };
    put(&mut t, "model.embed_tokens.weight".into(), &[v, d], 1.0, &mut seed);
    for i in 0..LAYERS {
        let p = format!("model.layers.{i}");
        put(&mut t, format!("{p}.self_attn.q_proj.weight"), &[heads * head_dim, d], 0.3, &mut seed);
        put(&mut t, format!("{p}.self_attn.k_proj.weight"), &[kv_heads * head_dim, d], 0.3, &mut seed);
        put(&mut t, format!("{p}.self_attn.v_proj.weight"), &[kv_heads * head_dim, d], 0.3, &mut seed);
        put(&mut t, format!("{p}.self_attn.o_proj.weight"), &[d, heads * head_dim], 0.3, &mut seed);
        put(&mut t, format!("{p}.mlp.gate_proj.weight"), &[inter, d], 0.3, &mut seed);
        put(&mut t, format!("{p}.mlp.up_proj.weight"), &[inter, d], 0.3, &mut seed);
        put(&mut t, format!("{p}.mlp.down_proj.weight"), &[d, inter], 0.3, &mut seed);
        t.insert(format!("{p}.input_layernorm.weight"), Tensor::ones(d, candle_core::DType::F32, &Device::Cpu).unwrap());
        t.insert(format!("{p}.post_attention_layernorm.weight"), Tensor::ones(d, candle_core::DType::F32, &Device::Cpu).unwrap());
    }
    t.insert("model.norm.weight".into(), Tensor::ones(d, candle_core::DType::F32, &Device::Cpu).unwrap());
    candle_core::safetensors::save(&t, dir.join("model.safetensors")).unwrap();

    let vocab_map: serde_json::Map<String, serde_json::Value> =
        vocab.iter().enumerate().map(|(i, w)| (w.clone(), serde_json::Value::from(i))).collect();
    let tokenizer = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [{"id": 1, "content": "<eos>", "single_word": false, "lstrip": false,
                          "rstrip": false, "normalized": false, "special": true}],
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null,
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab_map, "unk_token": "[UNK]"}
    });
    std::fs::write(dir.join("tokenizer.json"), tokenizer.to_string()).unwrap();
    std::fs::write(dir.join("tokenizer_config.json"), r#"{"eos_token": "<eos>", "add_bos_token": false}"#).unwrap();
}

/// A tiny base in `root/base` and a CODI-shaped checkpoint made from it in `root/codi`.
pub fn tiny_codi(root: &Path) -> PathBuf {
    let base = root.join("base");
    write_tiny_base(&base);
    let codi = root.join("codi");
    let options = thoughtscope::codi::MakeModelOptions {
        base: base.display().to_string(),
        seed: 3,
        lora_r: 4,
        lora_alpha: 8.0,
        base_bf16: false,
    };
    thoughtscope::codi::make_model(&options, &codi, &Settings::default()).unwrap();
    codi
}

/// Problems in the sampler's format.
pub fn problems() -> Vec<Problem> {
    let items = serde_json::json!([
        {"gsm8k_id": "p1", "question": "Tom has 3 apples and buys 4 more . How many apples does Tom have ?", "answer": 7, "difficulty": "2-step"},
        {"gsm8k_id": "p2", "question": "He eats 2 apples each day . How many apples ?", "answer": 14, "difficulty": "3-step"},
        {"gsm8k_id": "p3", "question": "How many apples does Tom have ?", "answer": 5, "difficulty": "2-step"}
    ]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("problems.json");
    std::fs::write(&path, items.to_string()).unwrap();
    thoughtscope::codi::load_problems(&path).unwrap()
}
