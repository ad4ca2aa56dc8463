//! Known models: registry name → HF id, shape and BOS rule. Fixes the errors of upstream's
//! `model2layers_heads` table (thought-anchors `attn_funcs.py`), with its errors fixed: Qwen3-0.6B
//! has 16 query heads, `llama-8b` is an alias of `llama8`, Qwen3 tokenizers add no BOS, and each
//! model uses its own tokenizer.

use std::path::PathBuf;

/// One known model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegistryEntry {
    /// Registry name (also the cache directory name, as upstream's `attn_cache/<model>/`).
    pub name: &'static str,
    pub hf_id: &'static str,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    /// BOS id the model input starts with (`None`: no BOS).
    pub bos: Option<u32>,
    /// dtype the upstream pipeline ran this model in (`f16` for 14B/8B, `f32` for 1.5B).
    pub upstream_dtype: &'static str,
}

const ENTRIES: &[RegistryEntry] = &[
    RegistryEntry { name: "smollm2-135m", hf_id: "HuggingFaceTB/SmolLM2-135M-Instruct", layers: 30, heads: 9, kv_heads: 3, bos: None, upstream_dtype: "f32" },
    RegistryEntry { name: "llama-3.2-1b", hf_id: "meta-llama/Llama-3.2-1B-Instruct", layers: 16, heads: 32, kv_heads: 8, bos: Some(128000), upstream_dtype: "f32" },
    RegistryEntry { name: "qwen3-0.6b", hf_id: "Qwen/Qwen3-0.6B", layers: 28, heads: 16, kv_heads: 8, bos: None, upstream_dtype: "f32" },
    RegistryEntry { name: "qwen3-4b", hf_id: "Qwen/Qwen3-4B", layers: 36, heads: 32, kv_heads: 8, bos: None, upstream_dtype: "f32" },
    // The VA seed's model.
    RegistryEntry { name: "qwen3-4b-thinking-2507", hf_id: "Qwen/Qwen3-4B-Thinking-2507", layers: 36, heads: 32, kv_heads: 8, bos: None, upstream_dtype: "bf16" },
    RegistryEntry { name: "qwen-15b", hf_id: "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", layers: 28, heads: 12, kv_heads: 2, bos: Some(151646), upstream_dtype: "f32" },
    RegistryEntry { name: "qwen-14b", hf_id: "deepseek-ai/DeepSeek-R1-Distill-Qwen-14B", layers: 48, heads: 40, kv_heads: 8, bos: Some(151646), upstream_dtype: "f16" },
    RegistryEntry { name: "llama8", hf_id: "deepseek-ai/DeepSeek-R1-Distill-Llama-8B", layers: 32, heads: 32, kv_heads: 8, bos: Some(128000), upstream_dtype: "f16" },
];

const ALIASES: &[(&str, &str)] = &[("qwen3-0p6b", "qwen3-0.6b"), ("llama-8b", "llama8"), ("smollm2", "smollm2-135m")];

/// The published `config.json` of each registered model (the architecture fields), embedded so
/// `bench forward --config <name> --random-weights` needs no download. SmolLM2's comes from its
/// GGUF instead.
const CONFIGS: &[(&str, &str)] = &[
    ("llama-3.2-1b", include_str!("configs/llama-3.2-1b.json")),
    ("qwen3-0.6b", include_str!("configs/qwen3-0.6b.json")),
    ("qwen3-4b", include_str!("configs/qwen3-4b.json")),
    ("qwen3-4b-thinking-2507", include_str!("configs/qwen3-4b-thinking-2507.json")),
    ("qwen-15b", include_str!("configs/qwen-15b.json")),
    ("qwen-14b", include_str!("configs/qwen-14b.json")),
    ("llama8", include_str!("configs/llama8.json")),
];

/// The real configuration of a registered model (`None` for names without an embedded config).
pub fn config(name: &str) -> Option<crate::Result<super::Config>> {
    let entry = lookup(name)?;
    let (_, text) = CONFIGS.iter().find(|(n, _)| *n == entry.name)?;
    let origin = PathBuf::from(format!("crates/thoughtscope-model/src/configs/{}.json", entry.name));
    Some(super::Config::from_json_str(text, &origin))
}

/// Look up a registry name (or alias), case-insensitively.
pub fn lookup(name: &str) -> Option<&'static RegistryEntry> {
    let lower = name.to_ascii_lowercase();
    let canonical = ALIASES.iter().find(|(a, _)| *a == lower).map(|(_, c)| *c).unwrap_or(&lower);
    ENTRIES.iter().find(|e| e.name == canonical)
}

/// Every registered model.
pub fn entries() -> &'static [RegistryEntry] {
    ENTRIES
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_table_errors_are_fixed() {
        assert_eq!(lookup("qwen3-0p6b").unwrap().heads, 16);
        assert_eq!(lookup("llama-8b").unwrap().name, "llama8");
        assert_eq!(lookup("qwen3-4b").unwrap().bos, None);
        assert_eq!(lookup("SmolLM2-135M").unwrap().layers, 30);
        assert!(lookup("gpt2_medium").is_none());
    }

    /// Every embedded config parses, and agrees with its entry's shape.
    #[test]
    fn embedded_configs_match_their_entries() {
        for (name, _) in CONFIGS {
            let entry = lookup(name).unwrap();
            let cfg = config(name).unwrap().unwrap();
            assert_eq!((cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_kv_heads()), (entry.layers, entry.heads, entry.kv_heads), "{name}");
            assert!(entry.hf_id.to_lowercase().ends_with(&entry.hf_id.rsplit('/').next().unwrap().to_lowercase()));
        }
        let cfg = config("qwen3-4b-thinking-2507").unwrap().unwrap();
        assert_eq!((cfg.hidden_size, cfg.intermediate_size, cfg.head_dim(), cfg.vocab_size), (2560, 9728, 128, 151936));
        let cfg = config("qwen-14b").unwrap().unwrap();
        assert_eq!((cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size), (5120, 13824, 152064));
        assert!(config("smollm2-135m").is_none());
    }
}
