//! What a loaded model's weights occupy in memory, by stored type: the line `Model::load` prints
//! and the figure `bench forward` reports.

use std::collections::BTreeMap;

use candle_core::Tensor;

use super::Model;
use crate::stored::StoredMatrix;

/// Weight memory of a loaded model by stored type: `dtype → (tensors, bytes)`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct WeightMemory {
    pub by_dtype: BTreeMap<String, (usize, usize)>,
}

impl WeightMemory {
    /// Bytes of all weights.
    pub fn total_bytes(&self) -> usize {
        self.by_dtype.values().map(|(_, bytes)| bytes).sum()
    }
    fn add(&mut self, dtype: String, bytes: usize) {
        let entry = self.by_dtype.entry(dtype).or_default();
        entry.0 += 1;
        entry.1 += bytes;
    }
}

impl std::fmt::Display for WeightMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .by_dtype
            .iter()
            .map(|(dtype, (count, bytes))| format!("{dtype} {count} tensors {:.1} MiB", *bytes as f64 / (1 << 20) as f64))
            .collect();
        write!(f, "{:.1} MiB resident ({})", self.total_bytes() as f64 / (1 << 20) as f64, parts.join(", "))
    }
}

impl Model {
    /// What the weights occupy in memory, by stored type (a tied LM head counted once).
    pub fn weight_memory(&self) -> WeightMemory {
        let mut memory = WeightMemory::default();
        let mut add_matrix = |m: &StoredMatrix| memory.add(m.dtype_name(), m.bytes());
        add_matrix(&self.embed_tokens);
        if !self.lm_head.shares_storage_with(&self.embed_tokens) {
            add_matrix(&self.lm_head);
        }
        for layer in &self.layers {
            let (a, m) = (&layer.self_attn, &layer.mlp);
            for lin in [&a.q_proj, &a.k_proj, &a.v_proj, &a.o_proj, &m.gate_proj, &m.up_proj, &m.down_proj] {
                add_matrix(&lin.weight);
            }
        }
        let mut vectors: Vec<&Tensor> = vec![&self.norm];
        for layer in &self.layers {
            let (a, m) = (&layer.self_attn, &layer.mlp);
            vectors.extend([&layer.input_layernorm, &layer.post_attention_layernorm]);
            vectors.extend(a.q_norm.iter().chain(a.k_norm.iter()));
            for lin in [&a.q_proj, &a.k_proj, &a.v_proj, &a.o_proj, &m.gate_proj, &m.up_proj, &m.down_proj] {
                vectors.extend(lin.bias.iter());
            }
        }
        for v in vectors {
            memory.add("f32".into(), v.elem_count() * 4);
        }
        memory
    }
}
