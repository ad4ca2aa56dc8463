//! The key/value cache a forward pass continues from: per layer, the keys (after RoPE) and values
//! of the positions already run, for one sequence or a batch of them.

use candle_core::Tensor;

use super::Model;
use crate::{Error, Result};

/// Key/value cache: per layer `[B, H_kv, T, d_head]` keys (after RoPE) and values, `B = 1` for
/// one sequence. Cloning is cheap (tensors are shared), so a prefix can be reused by several
/// continuations.
#[derive(Debug, Clone)]
pub struct KvCache {
    pub(super) layers: Vec<Option<(Tensor, Tensor)>>,
    pub(super) len: usize,
    /// Keys and values are dropped after each layer ([`KvCache::discarding`]).
    pub(super) discard: bool,
}

impl KvCache {
    pub fn new(model: &Model) -> Self {
        Self { layers: vec![None; model.config.num_hidden_layers], len: 0, discard: false }
    }
    /// A cache for one forward pass that is never continued: each layer's keys and values are
    /// dropped once the layer is done, so the pass holds one layer's instead of all (30 layers ×
    /// 3k tokens of SmolLM2 are 138 MB; 48 layers of a 14B model 1.2 GB). Continuing after it
    /// is an error.
    pub fn discarding(model: &Model) -> Self {
        Self { discard: true, ..Self::new(model) }
    }
    /// Positions already cached; the next forward call continues after them.
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Keep only the first `len` positions.
    pub fn truncate(&mut self, len: usize) -> Result<()> {
        if len >= self.len {
            return Ok(());
        }
        for kv in self.layers.iter_mut().flatten() {
            *kv = (kv.0.narrow(2, 0, len)?, kv.1.narrow(2, 0, len)?);
        }
        self.len = len;
        Ok(())
    }

    /// One cache of batch `B` from `B` caches of equal length (rows in the order given), so
    /// continuations of several runs can be decoded in one forward per step: the weights are
    /// read once per step instead of once per run.
    pub fn stack(caches: &[&KvCache]) -> Result<KvCache> {
        let first = caches.first().ok_or_else(|| Error::invalid("KvCache::stack of no caches"))?;
        if let Some(other) = caches.iter().find(|c| c.len != first.len || c.layers.len() != first.layers.len()) {
            return Err(Error::invalid(format!(
                "KvCache::stack needs caches of one length and model, got {} and {} positions",
                first.len, other.len
            )));
        }
        // The stacked cache is a new buffer candle allocates: checked first on the CPU.
        let on_cpu = first.layers.iter().flatten().next().is_some_and(|(k, _)| k.device().is_cpu());
        if on_cpu {
            let bytes: u64 = first
                .layers
                .iter()
                .flatten()
                .map(|(k, v)| ((k.elem_count() * k.dtype().size_in_bytes()) + (v.elem_count() * v.dtype().size_in_bytes())) as u64)
                .sum::<u64>()
                .saturating_mul(caches.len() as u64);
            let what = format!("{} key/value caches of {} positions stacked into one batch", caches.len(), first.len);
            crate::allocation::check_allocatable(bytes, &what)?;
        }
        let mut layers = Vec::with_capacity(first.layers.len());
        for l in 0..first.layers.len() {
            let kvs: Option<Vec<&(Tensor, Tensor)>> = caches.iter().map(|c| c.layers[l].as_ref()).collect();
            layers.push(match kvs {
                Some(kvs) => {
                    let ks: Vec<&Tensor> = kvs.iter().map(|kv| &kv.0).collect();
                    let vs: Vec<&Tensor> = kvs.iter().map(|kv| &kv.1).collect();
                    Some((Tensor::cat(&ks, 0)?, Tensor::cat(&vs, 0)?))
                }
                None => None,
            });
        }
        Ok(KvCache { layers, len: first.len, discard: first.discard })
    }

    /// Keep only batch rows `rows` (in that order), e.g. to drop finished sequences.
    pub fn select_rows(&self, rows: &[usize]) -> Result<KvCache> {
        let mut layers = Vec::with_capacity(self.layers.len());
        for kv in &self.layers {
            layers.push(match kv {
                Some((k, v)) => {
                    let idx = Tensor::from_iter(rows.iter().map(|&r| r as u32), k.device())?;
                    Some((k.index_select(&idx, 0)?, v.index_select(&idx, 0)?))
                }
                None => None,
            });
        }
        Ok(KvCache { layers, len: self.len, discard: self.discard })
    }
}
