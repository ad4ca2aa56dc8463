//! The stream of attention probabilities out of a forward pass: [`AttentionBlock`]s handed to an
//! [`AttentionSink`] per layer and query block (so nothing has to hold `layers × heads × T²`),
//! and [`FullAttentionCapture`], a sink that reassembles the full matrices of a short input.
//! Analyses implement the trait (e.g. `attention::SentenceAverager`); `attention` re-exports
//! all three.

use crate::{Error, Result};

/// One block of attention probabilities handed from the model runtime to a sink.
///
/// `probs` is row-major `[heads, rows, kv_len]`: entry `(h, r, k)` is the probability that query
/// position `q_start + r` of head `h` puts on key position `k`. Masked (future) keys are exactly 0.
/// Because attention is causal, the runtime may cut a block's columns at the last key any of its
/// rows can see: `kv_len <= total_keys`, and every column `k >= kv_len` is 0 for all rows.
/// Positions are absolute (a KV-cached prefix counts).
#[derive(Debug, Clone, Copy)]
pub struct AttentionBlock<'a> {
    pub layer: usize,
    pub q_start: usize,
    pub heads: usize,
    pub rows: usize,
    pub kv_len: usize,
    /// Number of keys in the whole sequence (the full attention matrix is `total_keys` wide).
    pub total_keys: usize,
    pub probs: &'a [f32],
}

impl AttentionBlock<'_> {
    /// An error naming `sink` unless `probs` holds `heads × rows × kv_len` values.
    pub fn check_len(&self, sink: &str) -> Result<()> {
        if self.probs.len() == self.heads * self.rows * self.kv_len {
            return Ok(());
        }
        Err(crate::Error::invalid(format!(
            "{sink}: block of {} values for {} heads × {} rows × {} keys",
            self.probs.len(),
            self.heads,
            self.rows,
            self.kv_len
        )))
    }

    /// Probabilities of one query row of one head, length `kv_len`.
    pub fn row(&self, head: usize, row: usize) -> &[f32] {
        let start = (head * self.rows + row) * self.kv_len;
        &self.probs[start..start + self.kv_len]
    }
}

/// One head's share of a block, from [`AttentionSink::per_head`]: called once with that head's
/// rows `[rows, kv_len]`, row-major.
pub type HeadConsumer<'a> = Box<dyn FnMut(&[f32]) + Send + 'a>;

/// Consumer of attention probabilities, called by the model for every layer and query block, in
/// order of increasing layer and then increasing `q_start`. Lets an analysis reduce attention as it
/// is produced, so nothing holds `layers × heads × T²`.
///
/// A sink that wraps another (to count layers, say) must forward every method, not only
/// `consume`: the defaults would silently take the slow paths for the inner sink (its whole
/// block after the parallel section instead of per head, a GPU block copied to the host).
pub trait AttentionSink {
    /// Whether this sink wants the probabilities of `layer` at all (skipping saves the work).
    fn wants_layer(&self, layer: usize) -> bool {
        let _ = layer;
        true
    }
    /// Consume one block. Errors abort the forward pass.
    fn consume(&mut self, block: AttentionBlock<'_>) -> Result<()>;
    /// Per-head consumers for one block (its `probs` empty), when the sink's state splits by
    /// head: the runtime then hands each head its rows `[rows, kv_len]` on the thread that has
    /// just computed them, while they are in that core's cache, instead of one `consume` call
    /// after all heads. The consumers see, per head, the same rows in the same order as
    /// `consume` would. Default `None`: `consume` gets the whole block.
    fn per_head(&mut self, block: AttentionBlock<'_>) -> Result<Option<Vec<HeadConsumer<'_>>>> {
        let _ = block;
        Ok(None)
    }

    /// Consume a block that lives on a GPU, `probs` `[heads, rows, kv_len]` (query rows from
    /// `q_start`, of a `total_keys`-token sequence), without copying it to the host. `Ok(false)`
    /// (the default) means "not handled": the decoder then copies the block and calls
    /// [`AttentionSink::consume`].
    fn consume_on_device(
        &mut self,
        layer: usize,
        q_start: usize,
        total_keys: usize,
        probs: &candle_core::Tensor,
    ) -> Result<bool> {
        let _ = (layer, q_start, total_keys, probs);
        Ok(false)
    }
}

/// A sink that reassembles each layer's full `[heads, T, T]` probabilities from the streamed
/// blocks: for small inputs and for checking the streamed path (memory is `layers × heads × T²`).
/// Query rows are absolute positions, so with a KV-cached prefix only the new rows are filled.
#[derive(Debug, Default)]
pub struct FullAttentionCapture {
    layers: Vec<Vec<f32>>,
    heads: usize,
    keys: usize,
    blocks: usize,
}

impl FullAttentionCapture {
    pub fn new() -> Self {
        Self::default()
    }
    /// Layer `l` as row-major `[heads, T, T]`, if the forward pass reached it.
    pub fn layer(&self, l: usize) -> Option<&[f32]> {
        self.layers.get(l).filter(|v| !v.is_empty()).map(Vec::as_slice)
    }
    pub fn heads(&self) -> usize {
        self.heads
    }
    /// `T`, the number of keys.
    pub fn keys(&self) -> usize {
        self.keys
    }
    /// Number of blocks received so far.
    pub fn blocks(&self) -> usize {
        self.blocks
    }
}

impl AttentionSink for FullAttentionCapture {
    fn consume(&mut self, b: AttentionBlock<'_>) -> Result<()> {
        if self.blocks > 0 && (b.heads, b.total_keys) != (self.heads, self.keys) {
            return Err(Error::invalid(format!(
                "FullAttentionCapture: block of {} heads × {} keys after blocks of {} × {} (one capture per forward call)",
                b.heads, b.total_keys, self.heads, self.keys
            )));
        }
        (self.heads, self.keys) = (b.heads, b.total_keys);
        self.blocks += 1;
        if self.layers.len() <= b.layer {
            self.layers.resize(b.layer + 1, Vec::new());
        }
        let t = self.keys;
        let layer = &mut self.layers[b.layer];
        if layer.is_empty() {
            layer.resize(b.heads * t * t, 0.0);
        }
        for h in 0..b.heads {
            for r in 0..b.rows {
                let dst = (h * t + b.q_start + r) * t;
                layer[dst..dst + b.kv_len].copy_from_slice(b.row(h, r));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_shorter_than_its_shape_is_an_error_naming_the_sink() {
        let probs = [0.5f32; 12];
        let block = |rows| AttentionBlock { layer: 0, q_start: 0, heads: 2, rows, kv_len: 3, total_keys: 3, probs: &probs };
        assert!(block(2).check_len("token pairs").is_ok());
        let error = block(3).check_len("token pairs").unwrap_err().to_string();
        assert!(error.contains("token pairs: block of 12 values for 2 heads × 3 rows × 3 keys"), "{error}");
    }
}
