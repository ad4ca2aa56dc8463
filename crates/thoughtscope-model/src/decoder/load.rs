//! Building a [`Model`] from a checkpoint's tensors under their HF names: the shapes are checked
//! against the configuration, and weight matrices are kept as stored where the precision and
//! device allow (see [`WeightPrecision`]).

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};

use super::rotary::Rotary;
use super::{Attention, DecoderLayer, Linear, Mlp, Model};
use crate::config::{Architecture, Config};
use crate::stored::{StoredMatrix, WeightPrecision};
use crate::{Error, Result};

impl Model {
    /// Build a model from tensors named as in HF checkpoints (`model.embed_tokens.weight`,
    /// `model.layers.{i}.self_attn.q_proj.weight`, ..., `model.norm.weight`, `lm_head.weight`
    /// unless tied). Weight matrices in bf16/f16 stay so on the CPU ([`WeightPrecision::Stored`]);
    /// everything else is converted to f32 on `device`.
    pub fn from_tensors(config: Config, tensors: HashMap<String, Tensor>, device: &Device) -> Result<Model> {
        Self::from_weights(config, tensors, HashMap::new(), WeightPrecision::Stored, device)
    }

    /// [`Model::from_tensors`] with matrices kept as stored (`kept`, by HF name: GGUF blocks,
    /// memory-mapped bf16/f16) and a choice of precision: [`WeightPrecision::F32`] converts every
    /// weight at load. The model takes the default [`Kernels`](crate::Kernels) until
    /// [`Model::set_kernels`].
    pub fn from_weights(
        config: Config,
        tensors: HashMap<String, Tensor>,
        kept: HashMap<String, StoredMatrix>,
        precision: WeightPrecision,
        device: &Device,
    ) -> Result<Model> {
        let architecture = config.architecture().map_err(Error::Invalid)?;
        config.validate().map_err(Error::Invalid)?;
        // The layer count must be the weights' own: a config with fewer layers would silently run
        // a truncated model, one with more would fail deep in the load.
        let weight_layers = tensors
            .keys()
            .chain(kept.keys())
            .filter_map(|name| name.strip_prefix("model.layers.")?.split('.').next()?.parse::<usize>().ok())
            .max()
            .map_or(0, |last| last + 1);
        let mut store = TensorStore { tensors, kept, precision, device: device.clone() };
        let (d, hd) = (config.hidden_size, config.head_dim());
        let (h, h_kv) = (config.num_attention_heads, config.num_kv_heads());
        let embed_tokens = store.matrix("model.embed_tokens.weight", &[config.vocab_size, d])?;
        if weight_layers != config.num_hidden_layers {
            return Err(Error::invalid(format!(
                "field `num_hidden_layers`: the config says {} layers, the weights hold {weight_layers}",
                config.num_hidden_layers
            )));
        }
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let p = format!("model.layers.{i}");
            let qk_norm = architecture == Architecture::Qwen3;
            let self_attn = Attention {
                q_proj: store.linear(&format!("{p}.self_attn.q_proj"), h * hd, d, config.qkv_bias())?,
                k_proj: store.linear(&format!("{p}.self_attn.k_proj"), h_kv * hd, d, config.qkv_bias())?,
                v_proj: store.linear(&format!("{p}.self_attn.v_proj"), h_kv * hd, d, config.qkv_bias())?,
                o_proj: store.linear(&format!("{p}.self_attn.o_proj"), d, h * hd, config.o_bias())?,
                q_norm: if qk_norm { Some(store.take(&format!("{p}.self_attn.q_norm.weight"), &[hd])?) } else { None },
                k_norm: if qk_norm { Some(store.take(&format!("{p}.self_attn.k_norm.weight"), &[hd])?) } else { None },
                num_heads: h,
                num_kv_heads: h_kv,
                head_dim: hd,
                rms_norm_eps: config.rms_norm_eps,
            };
            let i_size = config.intermediate_size;
            let mlp = Mlp {
                gate_proj: store.linear(&format!("{p}.mlp.gate_proj"), i_size, d, false)?,
                up_proj: store.linear(&format!("{p}.mlp.up_proj"), i_size, d, false)?,
                down_proj: store.linear(&format!("{p}.mlp.down_proj"), d, i_size, false)?,
            };
            layers.push(DecoderLayer {
                self_attn,
                mlp,
                input_layernorm: store.take(&format!("{p}.input_layernorm.weight"), &[d])?,
                post_attention_layernorm: store.take(&format!("{p}.post_attention_layernorm.weight"), &[d])?,
            });
        }
        let norm = store.take("model.norm.weight", &[d])?;
        let lm_head = match store.matrix_opt("lm_head.weight", &[config.vocab_size, d])? {
            Some(w) if !config.tie_word_embeddings => w,
            // HF would initialise a fresh random head here; reading the embedding instead would
            // silently be another model.
            None if !config.tie_word_embeddings => {
                return Err(Error::invalid(
                    "config `tie_word_embeddings` is false (or absent) but the weights have no `lm_head.weight`: \
                     set `tie_word_embeddings: true` in config.json if the model ties its output to the embedding",
                ))
            }
            _ => embed_tokens.clone(),
        };
        let rotary = Rotary::new(&config);
        Ok(Model {
            config,
            architecture,
            embed_tokens,
            layers,
            norm,
            lm_head,
            rotary,
            device: device.clone(),
            block_rows: None,
            kernels: crate::cpu::Kernels::default(),
        })
    }
}

/// Tensors by HF name, consumed as the model is built; errors name the missing key.
struct TensorStore {
    tensors: HashMap<String, Tensor>,
    kept: HashMap<String, StoredMatrix>,
    precision: WeightPrecision,
    device: Device,
}

impl TensorStore {
    fn check_shape(name: &str, dims: &[usize], shape: &[usize]) -> Result<()> {
        if dims != shape {
            return Err(Error::invalid(format!("tensor `{name}` has shape {dims:?}, config implies {shape:?}")));
        }
        Ok(())
    }
    fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name) || self.kept.contains_key(name)
    }
    /// An f32 tensor on the device (norms, biases; any matrix when converting at load).
    fn take(&mut self, name: &str, shape: &[usize]) -> Result<Tensor> {
        if let Some(m) = self.kept.remove(name) {
            let (out, inp) = m.dims();
            Self::check_shape(name, &[out, inp], shape)?;
            return m.to_f32(&self.device);
        }
        let t = self.tensors.remove(name).ok_or_else(|| Error::invalid(format!("missing tensor `{name}`")))?;
        Self::check_shape(name, t.dims(), shape)?;
        Ok(t.to_dtype(DType::F32)?.to_device(&self.device)?)
    }
    fn take_opt(&mut self, name: &str, shape: &[usize]) -> Result<Option<Tensor>> {
        if self.contains(name) {
            self.take(name, shape).map(Some)
        } else {
            Ok(None)
        }
    }
    /// A weight matrix, kept as stored where the precision and device allow.
    fn matrix(&mut self, name: &str, shape: &[usize]) -> Result<StoredMatrix> {
        let keep = self.precision == WeightPrecision::Stored && self.device.is_cpu();
        if keep {
            if let Some(m) = self.kept.remove(name) {
                let (out, inp) = m.dims();
                Self::check_shape(name, &[out, inp], shape)?;
                return Ok(m);
            }
            if let Some(t) = self.tensors.get(name).filter(|t| matches!(t.dtype(), DType::BF16 | DType::F16)) {
                Self::check_shape(name, t.dims(), shape)?;
                let t = self.tensors.remove(name).expect("present").contiguous()?;
                return Ok(StoredMatrix::Half(t.to_device(&Device::Cpu)?));
            }
        }
        Ok(StoredMatrix::F32(self.take(name, shape)?))
    }
    fn matrix_opt(&mut self, name: &str, shape: &[usize]) -> Result<Option<StoredMatrix>> {
        if self.contains(name) {
            self.matrix(name, shape).map(Some)
        } else {
            Ok(None)
        }
    }
    fn linear(&mut self, prefix: &str, out: usize, inp: usize, bias: bool) -> Result<Linear> {
        let weight = self.matrix(&format!("{prefix}.weight"), &[out, inp])?;
        let bias = if bias {
            Some(self.take(&format!("{prefix}.bias"), &[out])?)
        } else {
            self.take_opt(&format!("{prefix}.bias"), &[out])?
        };
        Ok(Linear { weight, bias })
    }
}
