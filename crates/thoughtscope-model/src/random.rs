//! Models with random weights in the shapes of a real configuration, made in memory at a chosen
//! stored type: `bench forward --config qwen-14b --random-weights --weights-dtype q8_0`
//! measures time and memory of the seeds' model sizes without downloading them. The numbers the
//! model computes mean nothing; the work and the memory are the real model's.

use std::collections::HashMap;
use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QStorage, QTensor};
use candle_core::{Device, Tensor};
use half::{bf16, f16};
use rand::{Rng, SeedableRng};
use rayon::prelude::*;

use super::config::{Architecture, Config};
use super::decoder::Model;
use super::stored::{StoredMatrix, WeightPrecision};
use crate::{Error, Result};

/// The stored type of a random model's weight matrices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RandomDtype {
    F32,
    Bf16,
    F16,
    Q8_0,
    Q6K,
    Q5K,
    Q4K,
    Q4_1,
}
crate::named_values!(RandomDtype, "weights dtype", {
    F32 => "f32", Bf16 => "bf16", F16 => "f16", Q8_0 => "q8_0", Q6K => "q6_k", Q5K => "q5_k", Q4K => "q4_k", Q4_1 => "q4_1",
});

impl RandomDtype {
    /// Bytes per weight as stored.
    pub fn bytes_per_weight(self) -> f64 {
        match self.ggml() {
            Some(g) => g.type_size() as f64 / g.block_size() as f64,
            None if self == RandomDtype::F32 => 4.0,
            None => 2.0,
        }
    }

    fn ggml(self) -> Option<GgmlDType> {
        match self {
            RandomDtype::Q8_0 => Some(GgmlDType::Q8_0),
            RandomDtype::Q6K => Some(GgmlDType::Q6K),
            RandomDtype::Q5K => Some(GgmlDType::Q5K),
            RandomDtype::Q4K => Some(GgmlDType::Q4K),
            RandomDtype::Q4_1 => Some(GgmlDType::Q4_1),
            _ => None,
        }
    }
}

/// Rows generated (and converted) per task.
const ROWS_PER_TASK: usize = 64;

/// Values of rows `first..first + rows` of matrix `index`: uniform in ±`scale`, a stream of its
/// own per task so the result does not depend on the thread count.
fn random_rows(seed: u64, index: u64, first: usize, rows: usize, cols: usize, scale: f32) -> Vec<f32> {
    let stream = seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (first as u64).wrapping_mul(0xD1B5_4A32_D192_ED03);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(stream);
    (0..rows * cols).map(|_| rng.random_range(-scale..scale)).collect()
}

/// A model of `config`'s shapes with random weights stored as `dtype` (norms 1, biases small).
pub fn random_model(config: Config, dtype: RandomDtype, seed: u64) -> Result<Model> {
    let architecture = config.architecture().map_err(Error::Invalid)?;
    config.validate().map_err(Error::Invalid)?;
    let (d, hd) = (config.hidden_size, config.head_dim());
    let (h, h_kv, inter) = (config.num_attention_heads, config.num_kv_heads(), config.intermediate_size);
    let mut matrices: Vec<(String, usize, usize)> = vec![("model.embed_tokens.weight".into(), config.vocab_size, d)];
    if !config.tie_word_embeddings {
        matrices.push(("lm_head.weight".into(), config.vocab_size, d));
    }
    let mut vectors: Vec<(String, usize, f32)> = vec![("model.norm.weight".into(), d, 1.0)];
    for i in 0..config.num_hidden_layers {
        let p = format!("model.layers.{i}");
        for (name, out, inp) in [
            ("self_attn.q_proj", h * hd, d),
            ("self_attn.k_proj", h_kv * hd, d),
            ("self_attn.v_proj", h_kv * hd, d),
            ("self_attn.o_proj", d, h * hd),
            ("mlp.gate_proj", inter, d),
            ("mlp.up_proj", inter, d),
            ("mlp.down_proj", d, inter),
        ] {
            matrices.push((format!("{p}.{name}.weight"), out, inp));
        }
        if config.qkv_bias() {
            for (name, out) in [("q_proj", h * hd), ("k_proj", h_kv * hd), ("v_proj", h_kv * hd)] {
                vectors.push((format!("{p}.self_attn.{name}.bias"), out, 0.0));
            }
        }
        if architecture == Architecture::Qwen3 {
            vectors.push((format!("{p}.self_attn.q_norm.weight"), hd, 1.0));
            vectors.push((format!("{p}.self_attn.k_norm.weight"), hd, 1.0));
        }
        vectors.push((format!("{p}.input_layernorm.weight"), d, 1.0));
        vectors.push((format!("{p}.post_attention_layernorm.weight"), d, 1.0));
    }

    let mut tensors = HashMap::new();
    let mut kept = HashMap::new();
    for (index, (name, out, inp)) in matrices.into_iter().enumerate() {
        // nn.Linear's initialisation range; the embedding like a trained one (order 1/√d).
        let scale = 1.0 / (inp as f32).sqrt();
        let tasks: Vec<usize> = (0..out).step_by(ROWS_PER_TASK).collect();
        let rows = |first: usize| random_rows(seed, index as u64, first, ROWS_PER_TASK.min(out - first), inp, scale);
        match dtype.ggml() {
            Some(ggml) => {
                if inp % ggml.block_size() != 0 {
                    return Err(Error::invalid(format!("{name}: rows of {inp} are not whole {}-value blocks of {dtype:?}", ggml.block_size())));
                }
                let parts: Vec<Vec<u8>> = tasks
                    .par_iter()
                    .map(|&first| -> Result<Vec<u8>> {
                        let values = rows(first);
                        let n = values.len() / inp;
                        let q = QTensor::quantize(&Tensor::from_vec(values, (n, inp), &Device::Cpu)?, ggml)?;
                        Ok(q.data()?.into_owned())
                    })
                    .collect::<Result<_>>()?;
                let bytes = parts.concat();
                drop(parts);
                let storage = QStorage::from_data(std::borrow::Cow::Owned(bytes), &Device::Cpu, ggml)?;
                kept.insert(name, StoredMatrix::Quantized(Arc::new(QTensor::new(storage, (out, inp))?)));
            }
            None => {
                let tensor = match dtype {
                    RandomDtype::Bf16 => {
                        let parts: Vec<Vec<bf16>> =
                            tasks.par_iter().map(|&f| rows(f).into_iter().map(bf16::from_f32).collect()).collect();
                        Tensor::from_vec(parts.concat(), (out, inp), &Device::Cpu)?
                    }
                    RandomDtype::F16 => {
                        let parts: Vec<Vec<f16>> =
                            tasks.par_iter().map(|&f| rows(f).into_iter().map(f16::from_f32).collect()).collect();
                        Tensor::from_vec(parts.concat(), (out, inp), &Device::Cpu)?
                    }
                    _ => {
                        let parts: Vec<Vec<f32>> = tasks.par_iter().map(|&f| rows(f)).collect();
                        Tensor::from_vec(parts.concat(), (out, inp), &Device::Cpu)?
                    }
                };
                tensors.insert(name, tensor);
            }
        }
    }
    for (name, len, value) in vectors {
        tensors.insert(name, Tensor::full(value, len, &Device::Cpu)?);
    }
    Model::from_weights(config, tensors, kept, WeightPrecision::Stored, &Device::Cpu)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny_config() -> Config {
        serde_json::from_value(serde_json::json!({
            "model_type": "qwen3", "vocab_size": 300, "hidden_size": 256, "intermediate_size": 512,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 64,
            "rms_norm_eps": 1e-6, "rope_theta": 1e6, "max_position_embeddings": 128, "tie_word_embeddings": true
        }))
        .unwrap()
    }

    #[test]
    fn random_models_hold_the_chosen_type_and_run() {
        for (dtype, name, bytes_per_weight) in
            [(RandomDtype::Bf16, "bf16", 2.0), (RandomDtype::Q8_0, "q8_0", 34.0 / 32.0), (RandomDtype::Q4K, "q4_k", 144.0 / 256.0)]
        {
            let model = random_model(tiny_config(), dtype, 7).unwrap();
            let memory = model.weight_memory();
            let (count, bytes) = memory.by_dtype[name];
            let weights = 300 * 256 + 2 * (256 * 256 + 2 * 128 * 256 + 256 * 256 + 3 * 512 * 256);
            assert_eq!((count, bytes), (1 + 2 * 7, (weights as f64 * bytes_per_weight) as usize), "{name}");
            let ids = [1u32, 5, 9, 200];
            let out = model.forward(crate::Input::Ids(&ids), &mut crate::KvCache::new(&model), &mut crate::NoHooks).unwrap();
            assert_eq!(out.logits().unwrap().dims(), [1, 4, 300]);
        }
        // The same seed gives the same weights.
        let a = random_model(tiny_config(), RandomDtype::F32, 3).unwrap().embedding_matrix().unwrap();
        let b = random_model(tiny_config(), RandomDtype::F32, 3).unwrap().embedding_matrix().unwrap();
        assert_eq!(a.to_vec2::<f32>().unwrap(), b.to_vec2::<f32>().unwrap());
    }
}
