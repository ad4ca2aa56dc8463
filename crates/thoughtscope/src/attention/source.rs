//! [`AttentionSource`]: one head's sentence-averaged matrix on demand, as upstream's
//! `get_avg_attention_matrix(text, model_name, layer, head, sentences, cache_dir)` gives it
//! (thought-anchors `attn_funcs.py`): the first request for a text fills the cache for
//! every layer and head with one forward pass, later requests read the cache.
//!
//! Differences from upstream, on purpose:
//! - the model is loaded **once, on the first cache miss** (not at all when every text is
//!   cached), and kept for later misses;
//! - our own entries carry a manifest checked against the model (weights hash, tokenizer, modes);
//! - a thought-anchors entry (`<l>_<h>.npy`, no manifest) is read one head file at a time, as
//!   upstream does, without loading the model; it is never replaced, and its provenance is
//!   reported as unverified ([`CacheOutcome::Upstream`]);
//! - the last text's matrices stay in memory, so scanning all heads of one text reads its
//!   native entry once.

use std::path::{Path, PathBuf};

use super::cache::read_upstream_head;
use super::{cached_sentence_attention, AttnCache, BoundaryMode, CacheLayout, CacheOutcome, SentenceAttention, Sentences};
use crate::model::{registry, Loaded, Model, Settings};
use crate::{Error, Result};

/// Where the current text's matrices come from.
enum Matrices {
    /// Every layer × head in memory (our cache entry, or just computed).
    All(SentenceAttention),
    /// A thought-anchors entry directory, read per head.
    Upstream(PathBuf),
}

struct Current {
    text_id: String,
    n: usize,
    outcome: CacheOutcome,
    matrices: Matrices,
}

/// Sentence-averaged attention of (text, sentences, model, layer, head) through the cache; see
/// the module doc.
pub struct AttentionSource {
    model_spec: String,
    model_name: String,
    cache: AttnCache,
    boundary_mode: BoundaryMode,
    layout: CacheLayout,
    /// How the model is loaded on the first cache miss.
    settings: Settings,
    loaded: Option<Loaded>,
    current: Option<Current>,
    forward_passes: usize,
}

impl std::fmt::Debug for AttentionSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttentionSource")
            .field("model", &self.model_name)
            .field("cache", &self.cache.root())
            .field("boundary_mode", &self.boundary_mode)
            .field("loaded", &self.loaded.is_some())
            .field("forward_passes", &self.forward_passes)
            .finish()
    }
}

impl AttentionSource {
    /// A source for model `model` (registry name, GGUF file, HF directory or hub id; loaded on the
    /// first cache miss, with [`Settings::default`] unless [`with_settings`](Self::with_settings)
    /// gives others) over the cache root `cache_dir`.
    pub fn new(model: &str, cache_dir: impl Into<PathBuf>, boundary_mode: BoundaryMode) -> Self {
        AttentionSource {
            model_spec: model.to_string(),
            model_name: crate::model::cache_name(model),
            cache: AttnCache::new(cache_dir),
            boundary_mode,
            layout: CacheLayout::Native,
            settings: Settings::default(),
            loaded: None,
            current: None,
            forward_passes: 0,
        }
    }

    /// Write new entries in `layout` (default [`CacheLayout::Native`]).
    pub fn with_layout(mut self, layout: CacheLayout) -> Self {
        self.layout = layout;
        self
    }

    /// Also store these token pairs in every entry a cache miss fills (from the same pass; see
    /// [`AttnCache::with_token_pairs`]).
    pub fn with_token_pairs(mut self, token_pairs: Option<super::TokenPairsToStore>) -> Self {
        self.cache = self.cache.with_token_pairs(token_pairs);
        self
    }

    /// Load the model with `settings` on the first cache miss (device, weights, kernels), and read
    /// the cache as strictly as they say.
    pub fn with_settings(mut self, settings: Settings) -> Self {
        self.cache = self.cache.strict(settings.strict_cache);
        self.settings = settings;
        self
    }

    /// The model's name: the cache directory under the root.
    pub fn model_name(&self) -> &str {
        &self.model_name
    }

    pub(crate) fn cache_root(&self) -> &Path {
        self.cache.root()
    }

    /// Forward passes run so far.
    pub fn forward_passes(&self) -> usize {
        self.forward_passes
    }

    /// Whether the model has been loaded (a cache miss happened, or it was given).
    pub fn model_loaded(&self) -> bool {
        self.loaded.is_some()
    }

    /// The loaded model, loading it now if needed.
    pub fn loaded(&mut self) -> Result<&Loaded> {
        if self.loaded.is_none() {
            let loaded = Model::load(&self.model_spec, &self.settings)?;
            if loaded.name != self.model_name {
                return Err(Error::invalid(format!(
                    "model `{}` loaded as `{}` but its cache directory was taken to be `{}`",
                    self.model_spec, loaded.name, self.model_name
                )));
            }
            self.loaded = Some(loaded);
        }
        Ok(self.loaded.as_ref().expect("loaded above"))
    }

    /// `(layers, heads)`: from the model registry when the model is known there (no loading, as
    /// upstream's `model2layers_heads`), else from the loaded model.
    pub fn shape(&mut self) -> Result<(usize, usize)> {
        if let Some(loaded) = &self.loaded {
            return Ok((loaded.model.num_layers(), loaded.model.num_heads()));
        }
        if let Some(entry) = registry::lookup(&self.model_spec) {
            return Ok((entry.layers, entry.heads));
        }
        let loaded = self.loaded()?;
        Ok((loaded.model.num_layers(), loaded.model.num_heads()))
    }

    /// Make `sentences` the current text: read its cache entry, or run the forward pass that fills
    /// it for every layer and head. Returns where the matrices come from.
    pub fn prepare(&mut self, sentences: &Sentences) -> Result<CacheOutcome> {
        let text_id = sentences.text_id();
        if let Some(current) = &self.current {
            if current.text_id == text_id && current.n == sentences.len() {
                return Ok(current.outcome);
            }
        }
        if sentences.is_empty() {
            return Err(Error::invalid("no sentences: nothing to average attention over"));
        }
        self.current = None;
        let current = if let Some(dir) = self.cache.upstream_entry(&self.model_name, &text_id) {
            Current { text_id, n: sentences.len(), outcome: CacheOutcome::Upstream, matrices: Matrices::Upstream(dir) }
        } else {
            let (cache, boundary_mode, layout) = (self.cache.clone(), self.boundary_mode, self.layout);
            let loaded = self.loaded()?;
            let (attention, outcome, _) = cached_sentence_attention(&cache, loaded, sentences, boundary_mode, layout)?;
            if outcome == CacheOutcome::Computed {
                self.forward_passes += 1;
            }
            Current { text_id, n: sentences.len(), outcome, matrices: Matrices::All(attention) }
        };
        let outcome = current.outcome;
        self.current = Some(current);
        Ok(outcome)
    }

    /// Row-major `N × N` float32 matrix of `layer`, `head` for `sentences` (upstream
    /// `get_avg_attention_matrix`).
    pub fn matrix(&mut self, sentences: &Sentences, layer: usize, head: usize) -> Result<Vec<f32>> {
        self.prepare(sentences)?;
        let (layers, heads) = self.shape()?;
        if layer >= layers || head >= heads {
            return Err(Error::invalid(format!(
                "layer {layer}, head {head} out of range: {} has {layers} layers × {heads} heads",
                self.model_name
            )));
        }
        let current = self.current.as_ref().expect("prepared above");
        match &current.matrices {
            Matrices::All(attention) => {
                if (attention.layers(), attention.heads()) != (layers, heads) {
                    return Err(Error::invalid(format!(
                        "cached attention has {} layers × {} heads, {} has {layers} × {heads}",
                        attention.layers(),
                        attention.heads(),
                        self.model_name
                    )));
                }
                Ok(attention.matrix(layer, head).to_vec())
            }
            Matrices::Upstream(dir) => read_upstream_head(dir, layer, head, current.n),
        }
    }
}
