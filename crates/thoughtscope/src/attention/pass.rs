//! What every attention pass shares (the sentence averages of `compute`, the token pairs of
//! `token_pairs`): progress per layer, the text's tokens within the model's context, and the memory
//! check of a result before the pass.

use super::{AttentionBlock, AttentionSink};
use crate::model::Loaded;
use crate::progress::Progress;
use crate::{Error, Result};

/// Forwards blocks to a sink (the averager, or it and the token-pair capture) and ticks a
/// progress bar once per layer.
pub(crate) struct LayerProgress<'a, S: AttentionSink> {
    inner: &'a mut S,
    progress: Progress,
    last_layer: Option<usize>,
}

impl<'a, S: AttentionSink> LayerProgress<'a, S> {
    pub(crate) fn new(inner: &'a mut S, progress: Progress) -> Self {
        LayerProgress { inner, progress, last_layer: None }
    }

    /// One tick when a new layer's first block arrives (the last layer's tick comes after the pass).
    fn tick(&mut self, layer: usize) {
        if self.last_layer != Some(layer) {
            if self.last_layer.is_some() {
                self.progress.inc(1);
            }
            self.last_layer = Some(layer);
        }
    }
}

/// Every method is forwarded, so the averager's own choices stand: its per-head consumers run
/// inside the kernels' parallel section while each head's rows are in cache, and on a GPU the
/// blocks are reduced where they are (a wrapper with only `consume` sent every block through the
/// slow paths: the whole block after the section, or copied to the host).
impl<S: AttentionSink> AttentionSink for LayerProgress<'_, S> {
    fn wants_layer(&self, layer: usize) -> bool {
        self.inner.wants_layer(layer)
    }

    fn consume(&mut self, block: AttentionBlock<'_>) -> crate::model::Result<()> {
        self.tick(block.layer);
        self.inner.consume(block)
    }

    fn per_head(&mut self, block: AttentionBlock<'_>) -> crate::model::Result<Option<Vec<super::HeadConsumer<'_>>>> {
        self.tick(block.layer);
        self.inner.per_head(block)
    }

    fn consume_on_device(&mut self, layer: usize, q_start: usize, total_keys: usize, probs: &candle_core::Tensor) -> crate::model::Result<bool> {
        self.tick(layer);
        self.inner.consume_on_device(layer, q_start, total_keys, probs)
    }
}

/// The token ids of `text`, or an error when they do not fit the model's context
/// (`max_position_embeddings`).
pub(crate) fn encode_within_context(loaded: &Loaded, text: &str) -> Result<Vec<u32>> {
    let ids = loaded.tokenizer.encode(text)?;
    let context = loaded.model.config().max_position_embeddings;
    if ids.len() > context {
        return Err(Error::invalid(format!(
            "text of {} tokens is longer than the context of {} ({context} tokens max)",
            ids.len(),
            loaded.name
        )));
    }
    Ok(ids)
}

/// `bytes` (of `what`) must fit in `MemAvailable`, as [`check_sentence_attention_fits`]. Callers
/// check only when the run's `Settings::memory_check` is on.
pub(crate) fn check_bytes_fit(bytes: u128, what: &str) -> Result<()> {
    match crate::model::memory::available_memory() {
        Some(available) if bytes > available as u128 => Err(Error::invalid(format!(
            "{what} need {:.1} GiB, and {:.1} GiB of memory is available (MemAvailable)",
            bytes as f64 / (1u64 << 30) as f64,
            available as f64 / (1u64 << 30) as f64
        ))),
        _ => Ok(()),
    }
}
