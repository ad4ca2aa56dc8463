//! The key/value cache a forward pass continues from: per layer, the keys (after RoPE) and values
//! of the positions already run, for one sequence or a batch of them.
//!
//! Each layer keeps its keys and values in buffers with room for more positions, and a decode
//! step writes its one new position into that room in place. Growing by concatenation copied the
//! whole cache at every step of every layer: a 16-row SmolLM2 decode after a 1k-token prompt
//! copied about 0.7 GB per step that way.

use std::sync::Arc;

use candle_core::Tensor;

use super::Model;
use crate::{Error, Result};

/// Positions of room added when a layer's buffers must grow (and no [`KvCache::reserve`] said
/// how many): the whole cache is copied once per this many decode steps instead of at each.
const GROWTH_ROOM: usize = 256;

/// One layer's keys and values: buffers `[B, H_kv, capacity, d_head]` whose first `len`
/// positions are filled. Clones of a cache share the buffers; a pass appends in place only where
/// this cache is their one holder (and they have room), else it writes into new buffers, so a
/// shared prefix is never changed under another cache.
#[derive(Debug, Clone)]
pub(super) struct LayerKv {
    buffers: Arc<(Tensor, Tensor)>,
    len: usize,
}

impl LayerKv {
    /// The first positions of a layer, `[B, H_kv, T, d_head]` each: the buffers are these
    /// tensors themselves (no room, nothing copied).
    pub(super) fn new(k: Tensor, v: Tensor) -> Result<LayerKv> {
        let len = k.dim(2)?;
        Ok(LayerKv { buffers: Arc::new((k, v)), len })
    }

    fn capacity(&self) -> usize {
        self.buffers.0.dims()[2]
    }

    pub(super) fn rows(&self) -> usize {
        self.buffers.0.dims()[0]
    }

    /// The filled positions, `[B, H_kv, len, d_head]` each: views of the buffers (positions
    /// `len..` are not part of them, so later appends never change what a view shows).
    pub(super) fn keys_values(&self) -> Result<(Tensor, Tensor)> {
        let (k, v) = &*self.buffers;
        if self.len == self.capacity() {
            return Ok((k.clone(), v.clone()));
        }
        Ok((k.narrow(2, 0, self.len)?, v.narrow(2, 0, self.len)?))
    }

    /// Append `k`, `v` `[B, H_kv, L, d_head]` after the filled positions.
    pub(super) fn append(&mut self, k: &Tensor, v: &Tensor) -> Result<()> {
        let needed = self.len + k.dim(2)?;
        if needed > self.capacity() || Arc::get_mut(&mut self.buffers).is_none() {
            self.regrow(needed + GROWTH_ROOM.min(needed))?;
        }
        let (kb, vb) = &*self.buffers;
        kb.slice_set(&k.contiguous()?, 2, self.len)?;
        vb.slice_set(&v.contiguous()?, 2, self.len)?;
        self.len = needed;
        Ok(())
    }

    /// New buffers of `capacity` positions (at least `len`) holding this layer's filled positions,
    /// owned by this cache alone.
    fn regrow(&mut self, capacity: usize) -> Result<()> {
        let (k, v) = self.keys_values()?;
        let room = capacity.max(self.len) - self.len;
        let with_room = |t: &Tensor| -> Result<Tensor> {
            let (b, h, _, d) = t.dims4()?;
            let pad = Tensor::zeros((b, h, room, d), t.dtype(), t.device())?;
            Ok(Tensor::cat(&[t, &pad], 2)?)
        };
        self.buffers = Arc::new((with_room(&k)?, with_room(&v)?));
        Ok(())
    }
}

/// Key/value cache: per layer `[B, H_kv, T, d_head]` keys (after RoPE) and values, `B = 1` for
/// one sequence. Cloning is cheap (the buffers are shared), so a prefix can be reused by several
/// continuations; each clone's later positions are its own.
#[derive(Debug, Clone)]
pub struct KvCache {
    pub(super) layers: Vec<Option<LayerKv>>,
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
            kv.len = len;
        }
        self.len = len;
        Ok(())
    }

    /// Make room for `positions` more positions in every layer, so that the forward passes that
    /// add them write in place (decoding `n` tokens: `reserve(n)` once instead of a copy of the
    /// cache every few hundred steps). A cache shared with clones gets buffers of its own.
    pub fn reserve(&mut self, positions: usize) -> Result<()> {
        let capacity = self.len + positions;
        if let Some(bytes) = self.cpu_bytes_at(self.rows(), capacity) {
            crate::memory::check_allocatable(bytes, &format!("a key/value cache of {capacity} positions"))?;
        }
        for kv in self.layers.iter_mut().flatten() {
            if kv.capacity() < capacity || Arc::get_mut(&mut kv.buffers).is_none() {
                kv.regrow(capacity.max(kv.capacity()))?;
            }
        }
        Ok(())
    }

    /// Rows (sequences) held: 1 for an empty cache.
    fn rows(&self) -> usize {
        self.layers.iter().flatten().next().map_or(1, LayerKv::rows)
    }

    /// Bytes of every layer's buffers for `rows` rows of `capacity` positions, when they live on
    /// the CPU (where candle's allocations are checked first); `None` elsewhere or when empty.
    fn cpu_bytes_at(&self, rows: usize, capacity: usize) -> Option<u64> {
        let (k, _) = &*self.layers.iter().flatten().next()?.buffers;
        if !k.device().is_cpu() {
            return None;
        }
        let (_, h, _, d) = k.dims4().ok()?;
        let per_layer = [2, rows, h, capacity, d, k.dtype().size_in_bytes()].iter().fold(1u64, |b, &x| b.saturating_mul(x as u64));
        Some(per_layer.saturating_mul(self.layers.iter().flatten().count() as u64))
    }

    /// One cache of batch `B` from `B` caches of equal length (rows in the order given), so
    /// continuations of several runs can be decoded in one forward per step: the weights are
    /// read once per step instead of once per run. Each layer's buffers keep the largest room
    /// among the caches ([`KvCache::reserve`] on a prefix before stacking it carries over).
    pub fn stack(caches: &[&KvCache]) -> Result<KvCache> {
        let first = caches.first().ok_or_else(|| Error::invalid("KvCache::stack of no caches"))?;
        if let Some(other) = caches.iter().find(|c| c.len != first.len || c.layers.len() != first.layers.len()) {
            return Err(Error::invalid(format!(
                "KvCache::stack needs caches of one length and model, got {} and {} positions",
                first.len, other.len
            )));
        }
        let capacity = caches.iter().flat_map(|c| c.layers.iter().flatten().map(LayerKv::capacity)).max().unwrap_or(0);
        let rows: usize = caches.iter().map(|c| c.rows()).sum();
        // The stacked cache is a new buffer candle allocates: checked first on the CPU.
        if let Some(bytes) = first.cpu_bytes_at(rows, capacity) {
            let what = format!("{} key/value caches of {} positions stacked into one batch", caches.len(), first.len);
            crate::allocation::check_allocatable(bytes, &what)?;
        }
        let mut layers = Vec::with_capacity(first.layers.len());
        for l in 0..first.layers.len() {
            let kvs: Option<Vec<&LayerKv>> = caches.iter().map(|c| c.layers[l].as_ref()).collect();
            layers.push(match kvs {
                Some(kvs) => {
                    let (k0, v0) = &*kvs[0].buffers;
                    let buffer = |t: &Tensor| -> Result<Tensor> {
                        let (_, h, _, d) = t.dims4()?;
                        Ok(Tensor::zeros((rows, h, capacity, d), t.dtype(), t.device())?)
                    };
                    let (kb, vb) = (buffer(k0)?, buffer(v0)?);
                    let mut row = 0;
                    for kv in kvs {
                        let (k, v) = kv.keys_values()?;
                        let n = k.dim(0)?;
                        kb.narrow(0, row, n)?.slice_set(&k.contiguous()?, 2, 0)?;
                        vb.narrow(0, row, n)?.slice_set(&v.contiguous()?, 2, 0)?;
                        row += n;
                    }
                    Some(LayerKv { buffers: Arc::new((kb, vb)), len: first.len })
                }
                None => None,
            });
        }
        Ok(KvCache { layers, len: first.len, discard: first.discard })
    }

    /// Keep only batch rows `rows` (in that order), e.g. to drop finished sequences. The new
    /// buffers keep this cache's room.
    pub fn select_rows(&self, rows: &[usize]) -> Result<KvCache> {
        let mut layers = Vec::with_capacity(self.layers.len());
        for kv in &self.layers {
            layers.push(match kv {
                Some(kv) => {
                    let (k, v) = &*kv.buffers;
                    let idx = Tensor::from_iter(rows.iter().map(|&r| r as u32), k.device())?;
                    Some(LayerKv { buffers: Arc::new((k.index_select(&idx, 0)?, v.index_select(&idx, 0)?)), len: kv.len })
                }
                None => None,
            });
        }
        Ok(KvCache { layers, len: self.len, discard: self.discard })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn positions(b: usize, from: usize, n: usize) -> Tensor {
        let values: Vec<f32> = (0..b * 2 * n * 3).map(|i| (from * 1000 + i) as f32).collect();
        Tensor::from_vec(values, (b, 2, n, 3), &Device::Cpu).unwrap()
    }

    /// Where a CPU tensor's values live.
    fn data_address(t: &Tensor) -> usize {
        let (storage, _) = t.storage_and_layout();
        let candle_core::Storage::Cpu(cpu) = &*storage else { panic!("a CPU tensor") };
        cpu.as_slice::<f32>().unwrap().as_ptr() as usize
    }

    fn filled(layer: &LayerKv) -> Vec<f32> {
        layer.keys_values().unwrap().0.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    /// Appends land after the filled positions, in place when there is room; a clone keeps what
    /// it saw, and appends to the two clones do not see each other.
    #[test]
    fn appends_in_place_and_clones_stay_apart() {
        let mut layer = LayerKv::new(positions(1, 0, 4), positions(1, 0, 4)).unwrap();
        layer.append(&positions(1, 1, 1), &positions(1, 1, 1)).unwrap();
        assert_eq!(layer.len, 5);
        assert!(layer.capacity() > 5, "growth leaves room");
        let want = Tensor::cat(&[positions(1, 0, 4), positions(1, 1, 1)], 2).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(filled(&layer), want);
        let before = data_address(&layer.buffers.0);
        layer.append(&positions(1, 2, 1), &positions(1, 2, 1)).unwrap();
        assert_eq!(data_address(&layer.buffers.0), before, "the second append writes in place");
        let mut other = layer.clone();
        other.append(&positions(1, 3, 1), &positions(1, 3, 1)).unwrap();
        layer.append(&positions(1, 4, 1), &positions(1, 4, 1)).unwrap();
        let before = Tensor::cat(&[positions(1, 0, 4), positions(1, 1, 1), positions(1, 2, 1)], 2).unwrap();
        let with = |t: Tensor| Tensor::cat(&[&before, &t], 2).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(filled(&other), with(positions(1, 3, 1)));
        assert_eq!(filled(&layer), with(positions(1, 4, 1)));
    }
}
