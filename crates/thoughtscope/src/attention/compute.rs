//! One forward pass → every layer × head's sentence-averaged attention, streamed: the model hands
//! each query block's probabilities to a [`SentenceAverager`], so nothing holds `L × H × T²`
//! (where upstream `attn_funcs.py` keeps every head's `T × T` matrix). Token boundaries are computed before the
//! forward pass, so a sentence that cannot be located costs nothing, and a text longer
//! than the model's context is an error before any work.

use std::path::PathBuf;

use super::{
    AttnCache, BoundaryMode, CacheKey, CacheLayout, EntryTokenPairs, SentenceAttention, SentenceAverager, Sentences,
    TokenBounds, TokenPairOptions,
};
use crate::model::{HookSet, Input, KvCache, Loaded, Logits};
use crate::progress::progress_detail;
use crate::{Context, Error, Result};

pub(crate) use super::pass::{encode_within_context, LayerProgress};

/// How a cached computation was satisfied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Read from the cache: no forward pass.
    Hit,
    /// Computed with one forward pass and stored.
    Computed,
    /// Read from a thought-anchors (Python) cache entry: `<l>_<h>.npy` files with no manifest.
    /// Nothing records which model revision, dtype, tokenizer or boundaries made it, so its
    /// provenance is **unverified**; the entry is never replaced.
    Upstream,
}

impl CacheOutcome {
    /// `hit`, `computed` or `thought-anchors (unverified)`: the word written to outputs.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheOutcome::Hit => "hit",
            CacheOutcome::Computed => "computed",
            CacheOutcome::Upstream => "thought-anchors (unverified)",
        }
    }
}

/// The cache key of `sentences` under `loaded` (f32 forward on this runtime).
pub fn cache_key(loaded: &Loaded, sentences: &Sentences, boundary_mode: BoundaryMode) -> CacheKey {
    CacheKey {
        model: loaded.name.clone(),
        weights_hash: loaded.weights_hash.clone(),
        dtype: "f32".into(),
        tokenizer: loaded.tokenizer.identity().to_string(),
        sentence_mode: sentences.mode,
        boundary_mode,
        text_id: sentences.text_id(),
        n: sentences.len(),
        layers: loaded.model.num_layers(),
        heads: loaded.model.num_heads(),
    }
}

/// Run the model once over `sentences.text` and return the `[L, H, N, N]` sentence averages and
/// the token boundaries used.
pub fn sentence_attention(
    loaded: &Loaded,
    sentences: &Sentences,
    boundary_mode: BoundaryMode,
) -> Result<(SentenceAttention, TokenBounds)> {
    // The length check comes first: the boundaries tokenise every sentence prefix, which takes
    // seconds on a text far beyond the context.
    let ids = encode_within_context(loaded, &sentences.text)?;
    // The result's size is known now: refuse before the forward pass, not after it.
    if loaded.settings.memory_check {
        check_sentence_attention_fits(loaded.model.num_layers(), loaded.model.num_heads(), sentences.len())?;
    }
    let bounds = TokenBounds::of_ids(&loaded.tokenizer, sentences, boundary_mode, &ids)?;
    let layers = loaded.model.num_layers();
    // The result and the block sums are allocated now, fallibly: before the forward pass.
    let mut averager =
        SentenceAverager::try_new(bounds.ranges.clone(), layers, loaded.model.num_heads())?.expect_tokens(ids.len());
    {
        let bar = progress_detail(layers as u64, &format!("attention {} tokens", ids.len()));
        let mut sink = LayerProgress::new(&mut averager, bar.clone());
        let mut hooks = HookSet::new().with_sink(&mut sink);
        loaded.model.forward_with(Input::Ids(&ids), &mut KvCache::discarding(&loaded.model), &mut hooks, Logits::None)?;
        bar.inc(1);
        bar.finish();
    }
    Ok((averager.finish()?, bounds))
}

/// The `layers × heads × N × N` float32 matrices of a text of `n` sentences must fit in the memory
/// available (`MemAvailable`; [`sentence_attention`] skips the check when the model's settings
/// turn off `memory_check`, as for the weights): an error with the numbers, before any forward
/// pass, instead of the kernel ending the process half-way.
pub fn check_sentence_attention_fits(layers: usize, heads: usize, n: usize) -> Result<()> {
    sentence_attention_fits(layers, heads, n, crate::model::memory::available_memory())
}

fn sentence_attention_fits(layers: usize, heads: usize, n: usize, available: Option<u64>) -> Result<()> {
    let bytes = layers as u128 * heads as u128 * n as u128 * n as u128 * 4;
    let gib = |b: f64| b / (1u64 << 30) as f64;
    match available {
        Some(available) if bytes > available as u128 => Err(Error::invalid(format!(
            "the sentence attention of {n} sentences is {layers} layers × {heads} heads × {n} × {n} float32 = {:.1} GiB, \
             and {:.1} GiB of memory is available (MemAvailable): split the text into fewer, longer sentences",
            gib(bytes as f64),
            gib(available as f64)
        ))),
        _ => Ok(()),
    }
}

/// [`sentence_attention`] through the cache: a matching entry is read (no forward pass), a
/// missing one computed and stored atomically; an entry made with other settings is an error
/// naming the field. A thought-anchors entry (no manifest) is read as it is
/// ([`CacheOutcome::Upstream`]) after checking its grid and size against the model and the
/// sentences; it is never replaced.
///
/// When the cache stores token pairs ([`AttnCache::with_token_pairs`]), a fill captures them in
/// the same pass ([`super::sentence_attention_with_token_pairs`]) and stores the heads chosen
/// from its sentence attention in the entry; with `add_to_existing`, an entry of ours without
/// token pairs is computed again and replaced (reported as [`CacheOutcome::Computed`]).
pub fn cached_sentence_attention(
    cache: &AttnCache,
    loaded: &Loaded,
    sentences: &Sentences,
    boundary_mode: BoundaryMode,
    layout: CacheLayout,
) -> Result<(SentenceAttention, CacheOutcome, PathBuf)> {
    // A cache root that is a file would only fail at the store, after the forward pass.
    crate::io::check_folder_or_absent(cache.root()).while_doing("the attention cache directory (--cache-dir)")?;
    let key = cache_key(loaded, sentences, boundary_mode);
    let dir = cache.entry_dir(&key.model, &key.text_id);
    let to_store = cache.token_pairs_to_store();
    if let Some(found) = cache.load(&key)? {
        let add_pairs = to_store.is_some_and(|s| s.add_to_existing) && !super::cache::entry_has_token_pairs(&dir);
        if !add_pairs {
            return Ok((found, CacheOutcome::Hit, dir));
        }
    } else if let Some(upstream) = cache.upstream_entry(&key.model, &key.text_id) {
        let found = super::read_upstream_dir(&upstream)?;
        let shape = (found.layers(), found.heads(), found.n());
        if shape != (key.layers, key.heads, key.n) {
            return Err(Error::format(
                &upstream,
                format!(
                    "thought-anchors cache entry holds {} layers × {} heads of {}×{} matrices; {} has {} × {} and the text {} sentences",
                    shape.0, shape.1, shape.2, shape.2, key.model, key.layers, key.heads, key.n
                ),
            ));
        }
        return Ok((found, CacheOutcome::Upstream, upstream));
    }
    let Some(to_store) = to_store else {
        let (attention, bounds) = sentence_attention(loaded, sentences, boundary_mode)?;
        let dir = cache.store(&key, &attention, layout, Some(bounds.n_tokens))?;
        return Ok((attention, CacheOutcome::Computed, dir));
    };
    let options = TokenPairOptions { max_tokens: to_store.max_tokens, ..TokenPairOptions::default() };
    let (attention, bounds, pairs) = super::sentence_attention_with_token_pairs(loaded, sentences, boundary_mode, &options)?;
    let kept = pairs.select(&(to_store.choose)(&attention));
    let stored = EntryTokenPairs { pairs: &kept, skip_sink: options.skip_sink, selection: &to_store.selection };
    let dir = cache.store_with_token_pairs(&key, &attention, layout, Some(bounds.n_tokens), Some(stored))?;
    Ok((attention, CacheOutcome::Computed, dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use super::super::{AttentionBlock, AttentionSink};
    use crate::progress::Progress;

    /// The progress wrapper hands the averager's per-head consumers through (so its reduction
    /// runs inside the kernels' parallel section) and its reduction where the block lives (here a
    /// CPU tensor standing in for a GPU one), ticks once per layer whichever way a block comes,
    /// and the sums equal those of whole blocks.
    #[test]
    fn layer_progress_forwards_every_path_of_the_averager_and_ticks_per_layer() {
        let (heads, rows) = (2, 4);
        let bounds = vec![(0, 2), (2, 4)];
        let probs: Vec<f32> = (0..heads * rows * rows).map(|i| ((i * 7) % 5) as f32 / 10.0).collect();
        let block = |layer| AttentionBlock { layer, q_start: 0, heads, rows, kv_len: rows, total_keys: rows, probs: &[] };

        let mut by_head = SentenceAverager::new(bounds.clone(), 2, heads);
        let progress = Progress::lines_to(Box::new(std::io::sink()), 2, "test", 100);
        {
            let mut sink = LayerProgress::new(&mut by_head, progress.clone());
            for layer in 0..2 {
                let consumers = sink.per_head(block(layer)).unwrap().expect("the averager splits by head");
                assert_eq!(consumers.len(), heads);
                for (mut consume, rows) in consumers.into_iter().zip(probs.chunks(rows * rows)) {
                    consume(rows);
                }
            }
        }
        assert_eq!(progress.position(), 1, "one tick when layer 1 began (the last comes after the pass)");

        let mut on_device = SentenceAverager::new(bounds.clone(), 2, heads);
        {
            let tensor = candle_core::Tensor::from_slice(&probs, (heads, rows, rows), &candle_core::Device::Cpu).unwrap();
            let mut sink = LayerProgress::new(&mut on_device, Progress::hidden());
            for layer in 0..2 {
                assert!(sink.consume_on_device(layer, 0, rows, &tensor).unwrap(), "the averager reduces the block where it is");
            }
        }

        let mut whole = SentenceAverager::new(bounds, 2, heads);
        for layer in 0..2 {
            whole.consume(AttentionBlock { probs: &probs, ..block(layer) }).unwrap();
        }
        let (by_head, on_device, whole) = (by_head.finish().unwrap(), on_device.finish().unwrap(), whole.finish().unwrap());
        for (layer, head) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
            assert_eq!(by_head.matrix(layer, head), whole.matrix(layer, head));
            for (a, b) in on_device.matrix(layer, head).iter().zip(whole.matrix(layer, head)) {
                assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0), "layer {layer} head {head}: {a} vs {b}");
            }
        }
    }
}
