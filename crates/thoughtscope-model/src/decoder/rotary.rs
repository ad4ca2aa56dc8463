//! Rotary position embedding (RoPE): the inverse frequencies, with Llama-3's frequency scaling
//! or a GGUF's frequency divisors, computed in f32 as HF `_compute_llama3_parameters` does, and
//! the cos/sin tables of the positions a forward call covers.

use candle_core::{Device, Tensor};

use crate::config::Config;
use crate::Result;

/// Rotary embedding: inverse frequencies (with llama3 scaling) computed in f32 as HF does; the
/// cos/sin tables are built per call for the positions it covers.
#[derive(Debug, Clone)]
pub(super) struct Rotary {
    inv_freq: Vec<f32>,
}

impl Rotary {
    pub(super) fn new(cfg: &Config) -> Self {
        let dim = cfg.head_dim();
        let base = cfg.rope_theta as f32;
        let mut inv_freq: Vec<f32> = (0..dim).step_by(2).map(|i| 1.0f32 / base.powf(i as f32 / dim as f32)).collect();
        let scaling = cfg.rope_scaling.as_ref().filter(|r| r.rope_type == "llama3");
        if let Some(rs) = scaling.filter(|_| cfg.rope_freq_divisors.is_none()) {
            let factor = rs.factor as f32;
            let low = rs.low_freq_factor as f32;
            let high = rs.high_freq_factor as f32;
            let orig = rs.original_max_position_embeddings as f32;
            let low_wavelen = orig / low;
            let high_wavelen = orig / high;
            for f in inv_freq.iter_mut() {
                let wavelen = 2.0 * std::f32::consts::PI / *f;
                // Same three bands as HF `_compute_llama3_parameters`.
                let scaled = if wavelen > low_wavelen { *f / factor } else { *f };
                let smooth = (orig / wavelen - low) / (high - low);
                let medium = !(wavelen < high_wavelen) && !(wavelen > low_wavelen);
                *f = if medium { (1.0 - smooth) * scaled / factor + smooth * scaled } else { scaled };
            }
        }
        if let Some(div) = &cfg.rope_freq_divisors {
            for (f, d) in inv_freq.iter_mut().zip(div) {
                *f /= d;
            }
        }
        Self { inv_freq }
    }

    /// cos and sin tables `[len, d_head/2]` for positions `offset..offset+len`.
    pub(super) fn tables(&self, offset: usize, len: usize, device: &Device) -> Result<(Tensor, Tensor)> {
        let half = self.inv_freq.len();
        let mut cos = Vec::with_capacity(len * half);
        let mut sin = Vec::with_capacity(len * half);
        for p in offset..offset + len {
            for &f in &self.inv_freq {
                let angle = p as f32 * f;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        Ok((Tensor::from_vec(cos, (len, half), device)?, Tensor::from_vec(sin, (len, half), device)?))
    }
}
