//! Where continuations come from: the [`RolloutProvider`] trait and its local implementation,
//! [`LocalProvider`], which runs a loaded model.
//!
//! The local engine runs a prompt through the model once (one KV cache per chunk), then decodes
//! the K continuations in groups of rows that share that cache ([`KvCache::stack`]), one forward
//! per step for the whole group, dropping finished rows ([`KvCache::select_rows`]). Upstream's
//! local path (thought-anchors `generate_rollouts.py`, `generate_with_local_model_batch`) pads K
//! copies of the prompt and runs `model.generate`, prefilling the prompt K times.
//!
//! Every row draws with its own seeded [`TokenSampler`] (temperature, then top-p: the tokens of
//! candle-transformers' `LogitsProcessor` for the same seed, found faster), and on the
//! CPU a decode step (one position per row) takes the row-independent one-pass kernels for any
//! number of rows, so a rollout's tokens depend only on its prompt and its seed: not on the
//! group size, on which rows share a step, on the thread count or on how the chunks are sharded.

use candle_core::{DType, Tensor};
use candle_transformers::generation::Sampling;

use crate::model::sampling::{Batch, TokenSampler};
use crate::model::{GenerateOptions, Input, KvCache, Loaded, Logits, NoHooks};
use crate::rollout::generate::{prompt_ids, stop_tokens};
use crate::{Error, Result};

/// Positions of key/value room reserved for the continuations of a prompt before decoding.
const DECODE_ROOM: usize = 512;

/// Sampling settings shared by every continuation of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeSettings {
    pub temperature: f64,
    pub top_p: f64,
    /// New tokens per continuation at most (also bounded by the model's context).
    pub max_tokens: usize,
}

impl DecodeSettings {
    /// The sampling rule, checked (temperature ≥ 0, top-p in (0, 1]).
    pub(crate) fn sampling(&self) -> Result<Sampling> {
        Ok(GenerateOptions { temperature: self.temperature, top_p: self.top_p, ..GenerateOptions::default() }.sampling()?)
    }
}

/// One continuation of a prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Continuation {
    /// The new text, special tokens skipped (upstream decodes with `skip_special_tokens=True`).
    pub text: String,
    /// New tokens drawn (the stop token included when one ended it).
    pub new_tokens: usize,
    /// Whether a stop token ended it (false: the token budget ran out).
    pub stopped: bool,
}

/// What produced the continuations: recorded in each chunk's manifest and checked on resume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderIdentity {
    /// `local`, or `openai:<base URL>` for an OpenAI-compatible server.
    pub provider: String,
    pub model: String,
    /// Content hash of the weights (empty where the provider cannot know it).
    pub weights_hash: String,
    pub tokenizer: String,
}

/// A source of continuations.
pub trait RolloutProvider {
    fn identity(&self) -> ProviderIdentity;

    /// One continuation of `prompt` per seed, in the order of `seeds`; continuation `r` must
    /// depend only on the prompt, `settings` and `seeds[r]`. `on_finished` is called with the
    /// new token count of each continuation as it ends (progress).
    fn continuations(
        &self,
        prompt: &str,
        seeds: &[u64],
        settings: &DecodeSettings,
        on_finished: &mut dyn FnMut(usize),
    ) -> Result<Vec<Continuation>>;
}

/// Continuations from a model loaded in this process.
pub struct LocalProvider<'a> {
    loaded: &'a Loaded,
    batch: usize,
    stop: Vec<u32>,
}

impl<'a> LocalProvider<'a> {
    /// Decode up to `batch` continuations per forward step (at least 1).
    pub fn new(loaded: &'a Loaded, batch: usize) -> Result<LocalProvider<'a>> {
        if batch == 0 {
            return Err(Error::invalid("--batch must be at least 1"));
        }
        Ok(LocalProvider { loaded, batch, stop: stop_tokens(&loaded.tokenizer) })
    }

    /// Rows per decode step: `batch`. On the CPU, every decode step takes the row-independent
    /// one-pass kernels whatever its size, so the batch changes no rollout.
    pub fn rows_per_step(&self) -> usize {
        self.batch
    }

    /// Decode one group of rows from the prefilled `prefix` (its last logits `first`).
    #[allow(clippy::too_many_arguments)]
    fn decode_group(
        &self,
        prefix: &KvCache,
        first: &Tensor,
        seeds: &[u64],
        sampling: &Sampling,
        budget: usize,
        on_finished: &mut dyn FnMut(usize),
    ) -> Result<Vec<Continuation>> {
        struct Row {
            sampler: TokenSampler,
            ids: Vec<u32>,
            stopped: bool,
        }
        let model = &self.loaded.model;
        let stop = &self.stop;
        let mut rows: Vec<Row> = seeds
            .iter()
            .map(|&seed| Ok(Row { sampler: TokenSampler::new(seed, sampling)?, ids: Vec::new(), stopped: false }))
            .collect::<Result<_>>()?;
        let temperature = rows.first().and_then(|row| row.sampler.temperature());
        // Draw one token for a row from row `position` of `logits`; true while the row goes on.
        let take = |row: &mut Row, logits: &Batch, position: usize| -> Result<bool> {
            let next = row.sampler.sample_row(logits, position)?;
            row.ids.push(next);
            if stop.contains(&next) {
                row.stopped = true;
                return Ok(false);
            }
            Ok(row.ids.len() < budget)
        };
        let mut live = Vec::with_capacity(rows.len());
        let first = Batch::new(&first.unsqueeze(0)?, temperature)?;
        for (i, row) in rows.iter_mut().enumerate() {
            if budget > 0 && take(row, &first, 0)? {
                live.push(i);
            } else {
                on_finished(row.ids.len());
            }
        }
        if !live.is_empty() {
            let hidden = model.config().hidden_size;
            let mut cache = KvCache::stack(&vec![prefix; live.len()])?;
            while !live.is_empty() {
                let ids: Vec<u32> = live.iter().map(|&i| *rows[i].ids.last().expect("live rows have a token")).collect();
                let x = model.embed(&ids)?.reshape((ids.len(), 1, hidden))?;
                let out = model.forward_with(Input::Embeds(&x), &mut cache, &mut NoHooks, Logits::Last)?;
                // Every row's probabilities in one pass (the same values row by row).
                let logits = Batch::new(&out.logits()?.squeeze(1)?, temperature)?;
                let mut keep = Vec::with_capacity(live.len());
                for (position, &i) in live.iter().enumerate() {
                    if take(&mut rows[i], &logits, position)? {
                        keep.push(position);
                    } else {
                        on_finished(rows[i].ids.len());
                    }
                }
                if keep.len() != live.len() {
                    live = keep.iter().map(|&position| live[position]).collect();
                    if !live.is_empty() {
                        cache = cache.select_rows(&keep)?;
                    }
                }
            }
        }
        rows.into_iter()
            .map(|row| {
                let text_ids = if row.stopped { &row.ids[..row.ids.len() - 1] } else { &row.ids[..] };
                Ok(Continuation {
                    text: self.loaded.tokenizer.decode(text_ids, true)?,
                    new_tokens: row.ids.len(),
                    stopped: row.stopped,
                })
            })
            .collect()
    }
}

impl RolloutProvider for LocalProvider<'_> {
    fn identity(&self) -> ProviderIdentity {
        ProviderIdentity {
            provider: "local".into(),
            model: self.loaded.name.clone(),
            weights_hash: self.loaded.weights_hash.clone(),
            tokenizer: self.loaded.tokenizer.identity().to_string(),
        }
    }

    fn continuations(
        &self,
        prompt: &str,
        seeds: &[u64],
        settings: &DecodeSettings,
        on_finished: &mut dyn FnMut(usize),
    ) -> Result<Vec<Continuation>> {
        let sampling = settings.sampling()?;
        let model = &self.loaded.model;
        let ids = prompt_ids(&self.loaded.tokenizer, prompt)?;
        let context = model.config().max_position_embeddings;
        if ids.len() >= context {
            return Err(Error::invalid(format!(
                "the prompt has {} tokens, the model's context is {context}: no room for a continuation",
                ids.len()
            )));
        }
        // A continuation ends at the context's end as at its token budget.
        let budget = settings.max_tokens.min(context - ids.len());
        let mut prefix = KvCache::new(model);
        let out = model.forward_with(Input::Ids(&ids), &mut prefix, &mut NoHooks, Logits::Last)?;
        // Room for new tokens, carried into each group's stacked cache: the decode steps write
        // their keys and values in place. At most DECODE_ROOM positions: upstream's budget of
        // 16k tokens reserved for every row would be gigabytes most rollouts never fill; past
        // the room the cache grows a few hundred positions at a time.
        prefix.reserve(budget.min(DECODE_ROOM))?;
        let first = out.logits()?.flatten_all()?.to_dtype(DType::F32)?;
        let mut continuations = Vec::with_capacity(seeds.len());
        // Equal groups (17 rollouts at 16 rows a step: 9 and 8, not 16 and 1): the rows of a
        // step share its reading of the weights, and rows do not depend on their group.
        let groups = seeds.len().div_ceil(self.rows_per_step()).max(1);
        for group in seeds.chunks(seeds.len().div_ceil(groups).max(1)) {
            continuations.extend(self.decode_group(&prefix, &first, group, &sampling, budget, on_finished)?);
        }
        Ok(continuations)
    }
}
