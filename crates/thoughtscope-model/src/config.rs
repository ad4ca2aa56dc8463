//! Model configuration: one `Config` for the Llama family (Llama-3.x, SmolLM2, R1-Distill-Llama)
//! and Qwen2/Qwen3, read from an HF `config.json` (field names as there) or from GGUF metadata
//! (llama.cpp's GGUF metadata keys).

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Llama-3 style RoPE frequency scaling (`rope_scaling` with `rope_type: "llama3"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RopeScaling {
    #[serde(alias = "type")]
    pub rope_type: String,
    #[serde(default = "default_one")]
    pub factor: f64,
    #[serde(default = "default_one")]
    pub low_freq_factor: f64,
    #[serde(default = "default_four")]
    pub high_freq_factor: f64,
    #[serde(default = "default_orig_ctx")]
    pub original_max_position_embeddings: usize,
}

fn default_one() -> f64 {
    1.0
}
fn default_four() -> f64 {
    4.0
}
fn default_orig_ctx() -> usize {
    8192
}
fn default_rope_theta() -> f64 {
    10_000.0
}
fn default_rms_eps() -> f64 {
    1e-6
}
fn default_max_pos() -> usize {
    4096
}

/// Decoder configuration mirroring HF `config.json` (Llama / Qwen2 / Qwen3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// `llama`, `qwen2` or `qwen3`; decides q/k norm and bias defaults.
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// Explicit head dimension (Qwen3: not hidden/heads).
    #[serde(default)]
    pub head_dim: Option<usize>,
    #[serde(default = "default_rms_eps")]
    pub rms_norm_eps: f64,
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    #[serde(default)]
    pub rope_scaling: Option<RopeScaling>,
    /// transformers ≥ 5 writes `rope_parameters` (`rope_theta`, `rope_type`, scaling fields)
    /// instead of `rope_theta` / `rope_scaling`; folded into those two by `Config::normalize`.
    #[serde(default, skip_serializing)]
    pub rope_parameters: Option<serde_json::Value>,
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: usize,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// q/k/v (and for Llama/Qwen3 also o) projections carry a bias.
    #[serde(default)]
    pub attention_bias: Option<bool>,
    #[serde(default)]
    pub bos_token_id: Option<serde_json::Value>,
    #[serde(default)]
    pub eos_token_id: Option<serde_json::Value>,
    /// Llama-3 scaling given as per-frequency divisors (GGUF `rope_freqs.weight`), used instead
    /// of `rope_scaling` when present.
    #[serde(skip)]
    pub rope_freq_divisors: Option<Vec<f32>>,
}

/// What differs between the supported architectures inside the decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    Llama,
    Qwen2,
    Qwen3,
}

impl Config {
    pub fn from_json_file(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_json_str(&text, path)
    }

    /// Parse `config.json` text; errors name `path` (the file it came from).
    pub(crate) fn from_json_str(text: &str, path: &Path) -> Result<Config> {
        let mut cfg: Config = serde_json::from_str(text)
            .map_err(|e| Error::format(path, format!("not an HF config.json: {e}")))?;
        cfg.normalize().map_err(|what| Error::format(path, what))?;
        cfg.validate().map_err(|what| Error::format(path, what))?;
        Ok(cfg)
    }

    /// Lower-case `model_type` and fold transformers-5 `rope_parameters` into `rope_theta` and
    /// `rope_scaling`, so both config styles give the same model.
    pub(crate) fn normalize(&mut self) -> std::result::Result<(), String> {
        self.model_type = self.model_type.to_lowercase();
        let Some(params) = self.rope_parameters.take() else { return Ok(()) };
        if let Some(theta) = params.get("rope_theta").and_then(|v| v.as_f64()) {
            self.rope_theta = theta;
        }
        let rope_type = params.get("rope_type").or_else(|| params.get("type")).and_then(|v| v.as_str());
        match rope_type {
            None | Some("default") => {}
            Some("llama3") => {
                let scaling: RopeScaling = serde_json::from_value(params.clone())
                    .map_err(|e| format!("field `rope_parameters`: {e}"))?;
                self.rope_scaling = Some(scaling);
            }
            Some(other) => return Err(format!("field `rope_parameters.rope_type`: unsupported `{other}`")),
        }
        Ok(())
    }

    pub fn architecture(&self) -> std::result::Result<Architecture, String> {
        match self.model_type.as_str() {
            "llama" | "mistral" => Ok(Architecture::Llama),
            "qwen2" => Ok(Architecture::Qwen2),
            "qwen3" => Ok(Architecture::Qwen3),
            other => Err(format!(
                "field `model_type`: unsupported architecture `{other}` (supported: llama, qwen2, qwen3)"
            )),
        }
    }

    pub fn num_kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim.unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    /// Whether q/k/v projections have a bias (Qwen2 always does).
    pub(crate) fn qkv_bias(&self) -> bool {
        match self.architecture() {
            Ok(Architecture::Qwen2) => true,
            _ => self.attention_bias.unwrap_or(false),
        }
    }

    /// Whether the output projection has a bias (never for Qwen2, `attention_bias` otherwise).
    pub(crate) fn o_bias(&self) -> bool {
        match self.architecture() {
            Ok(Architecture::Qwen2) => false,
            _ => self.attention_bias.unwrap_or(false),
        }
    }

    /// Every value the decoder uses is in range: sizes positive and within what any real model
    /// has (so a corrupt file cannot drive an allocation), the head layout consistent, and the
    /// floating-point constants finite and positive (a NaN `rms_norm_eps` or a zero `rope_theta`
    /// would otherwise give NaN or uniform attention without an error). The message names the
    /// field.
    pub fn validate(&self) -> std::result::Result<(), String> {
        self.architecture()?;
        // Generous bounds: 10× the largest open models' values.
        let sizes: [(&str, usize, usize); 6] = [
            ("vocab_size", self.vocab_size, 1 << 24),
            ("hidden_size", self.hidden_size, 1 << 20),
            ("intermediate_size", self.intermediate_size, 1 << 22),
            ("num_hidden_layers", self.num_hidden_layers, 4096),
            ("num_attention_heads", self.num_attention_heads, 4096),
            ("max_position_embeddings", self.max_position_embeddings, 1 << 30),
        ];
        for (field, value, max) in sizes {
            if value == 0 || value > max {
                return Err(format!("field `{field}`: {value} is out of range (1..={max})"));
            }
        }
        let kv = self.num_kv_heads();
        if kv == 0 || kv > self.num_attention_heads || self.num_attention_heads % kv != 0 {
            return Err(format!(
                "field `num_key_value_heads`: {kv} must be between 1 and num_attention_heads {} and divide it",
                self.num_attention_heads
            ));
        }
        let head_dim = self.head_dim();
        if head_dim == 0 || head_dim > 4096 || head_dim % 2 != 0 {
            return Err(format!("field `head_dim`: head dimension {head_dim} must be even and in 2..=4096 (RoPE)"));
        }
        let positive = |field: &str, value: f64| {
            if value.is_finite() && value > 0.0 {
                Ok(())
            } else {
                Err(format!("field `{field}`: {value} must be a finite number > 0"))
            }
        };
        positive("rms_norm_eps", self.rms_norm_eps)?;
        positive("rope_theta", self.rope_theta)?;
        if let Some(rs) = &self.rope_scaling {
            if !matches!(rs.rope_type.as_str(), "llama3" | "default") {
                return Err(format!("field `rope_scaling.rope_type`: unsupported `{}`", rs.rope_type));
            }
            positive("rope_scaling.factor", rs.factor)?;
            positive("rope_scaling.low_freq_factor", rs.low_freq_factor)?;
            positive("rope_scaling.high_freq_factor", rs.high_freq_factor)?;
            if rs.original_max_position_embeddings == 0 {
                return Err("field `rope_scaling.original_max_position_embeddings`: must be > 0".into());
            }
        }
        if let Some(divisors) = &self.rope_freq_divisors {
            if let Some(bad) = divisors.iter().find(|d| !(d.is_finite() && **d > 0.0)) {
                return Err(format!("tensor `rope_freqs.weight`: divisor {bad} must be a finite number > 0"));
            }
        }
        Ok(())
    }

    /// Build a config from GGUF metadata (`<arch>.block_count`, `<arch>.attention.head_count`, ...).
    /// Llama-3 rope scaling is not in the metadata; the caller reads it from `rope_freqs.weight`.
    pub fn from_gguf(
        metadata: &HashMap<String, gguf_file::Value>,
        path: &Path,
        vocab_rows: usize,
        has_output_weight: bool,
    ) -> Result<Config> {
        let get = |key: &str| -> Result<&gguf_file::Value> {
            metadata
                .get(key)
                .ok_or_else(|| Error::format(path, format!("missing GGUF metadata key `{key}`")))
        };
        let arch = get("general.architecture")?
            .to_string()
            .map_err(|e| Error::format(path, format!("`general.architecture`: {e}")))?
            .clone();
        let u = |key: &str| -> Result<usize> {
            let v = get(&format!("{arch}.{key}"))?;
            v.to_u32()
                .map(|x| x as usize)
                .or_else(|_| v.to_u64().map(|x| x as usize))
                .map_err(|e| Error::format(path, format!("`{arch}.{key}`: {e}")))
        };
        let f = |key: &str| -> Option<f64> {
            metadata.get(&format!("{arch}.{key}")).and_then(|v| v.to_f32().ok()).map(|x| x as f64)
        };
        let model_type = match arch.as_str() {
            "llama" => "llama",
            "qwen2" => "qwen2",
            "qwen3" => "qwen3",
            other => {
                return Err(Error::format(
                    path,
                    format!("`general.architecture`: unsupported `{other}` (supported: llama, qwen2, qwen3)"),
                ))
            }
        };
        let heads = u("attention.head_count")?;
        let hidden = u("embedding_length")?;
        let cfg = Config {
            model_type: model_type.to_string(),
            vocab_size: vocab_rows,
            hidden_size: hidden,
            intermediate_size: u("feed_forward_length")?,
            num_hidden_layers: u("block_count")?,
            num_attention_heads: heads,
            num_key_value_heads: Some(u("attention.head_count_kv").unwrap_or(heads)),
            head_dim: u("attention.key_length").ok(),
            rms_norm_eps: f("attention.layer_norm_rms_epsilon").unwrap_or(1e-5),
            rope_theta: f("rope.freq_base").unwrap_or(10_000.0),
            rope_scaling: None,
            rope_parameters: None,
            max_position_embeddings: u("context_length").unwrap_or(4096),
            tie_word_embeddings: !has_output_weight,
            attention_bias: None,
            bos_token_id: None,
            eos_token_id: None,
            rope_freq_divisors: None,
        };
        cfg.validate().map_err(|what| Error::format(path, what))?;
        Ok(cfg)
    }

    /// Token ids listed as `eos_token_id` (single id or list).
    pub fn eos_ids(&self) -> Vec<u32> {
        json_ids(self.eos_token_id.as_ref())
    }
}

fn json_ids(v: Option<&serde_json::Value>) -> Vec<u32> {
    match v {
        Some(serde_json::Value::Number(n)) => n.as_u64().map(|x| vec![x as u32]).unwrap_or_default(),
        Some(serde_json::Value::Array(a)) => a.iter().filter_map(|x| x.as_u64()).map(|x| x as u32).collect(),
        _ => vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_llama3_config_with_rope_scaling() {
        let json = r#"{"model_type":"llama","vocab_size":128256,"hidden_size":2048,"intermediate_size":8192,
          "num_hidden_layers":16,"num_attention_heads":32,"num_key_value_heads":8,"rms_norm_eps":1e-5,
          "rope_theta":500000.0,"rope_scaling":{"factor":32.0,"high_freq_factor":4.0,"low_freq_factor":1.0,
          "original_max_position_embeddings":8192,"rope_type":"llama3"},"max_position_embeddings":131072,
          "tie_word_embeddings":true,"eos_token_id":[128001,128008,128009]}"#;
        let cfg: Config = serde_json::from_str(json).unwrap();
        assert_eq!(cfg.head_dim(), 64);
        assert_eq!(cfg.num_kv_heads(), 8);
        assert_eq!(cfg.eos_ids(), vec![128001, 128008, 128009]);
        assert!(cfg.validate().is_ok());
        assert_eq!(cfg.rope_scaling.unwrap().factor, 32.0);
    }

    #[test]
    fn rejects_unknown_architecture() {
        let json = r#"{"model_type":"gpt2","vocab_size":10,"hidden_size":8,"intermediate_size":8,
          "num_hidden_layers":1,"num_attention_heads":2}"#;
        let cfg: Config = serde_json::from_str(json).unwrap();
        assert!(cfg.validate().unwrap_err().contains("model_type"));
    }

    fn smollm2_like() -> Config {
        serde_json::from_str(
            r#"{"model_type":"llama","vocab_size":49152,"hidden_size":576,"intermediate_size":1536,
              "num_hidden_layers":30,"num_attention_heads":9,"num_key_value_heads":3}"#,
        )
        .unwrap()
    }

    #[test]
    fn out_of_range_values_are_errors_naming_the_field() {
        assert!(smollm2_like().validate().is_ok());
        let cases: [(&str, fn(&mut Config)); 8] = [
            ("num_key_value_heads", |c| c.num_key_value_heads = Some(0)),
            ("num_key_value_heads", |c| c.num_key_value_heads = Some(18)),
            ("rms_norm_eps", |c| c.rms_norm_eps = f64::NAN),
            ("rope_theta", |c| c.rope_theta = 0.0),
            ("rope_theta", |c| c.rope_theta = f64::INFINITY),
            ("num_hidden_layers", |c| c.num_hidden_layers = 4_000_000_000),
            ("head_dim", |c| c.head_dim = Some(0)),
            ("vocab_size", |c| c.vocab_size = 0),
        ];
        for (field, break_it) in cases {
            let mut cfg = smollm2_like();
            break_it(&mut cfg);
            let err = cfg.validate().unwrap_err();
            assert!(err.contains(field), "expected an error naming `{field}`, got: {err}");
        }
    }
}
