//! Text generation with the KV cache, stopping at any stop token. Each next token is chosen by
//! candle-transformers' [`LogitsProcessor`]: greedy at temperature 0 (argmax, ties to the lowest
//! id as `torch.argmax`), else a seeded draw after temperature, top-k and top-p (nucleus)
//! filtering, in that order. An optional repetition penalty (candle-transformers'
//! `apply_repeat_penalty`, as in its examples: positive logits of recent tokens divided by the
//! penalty, negative ones multiplied) comes first.

use candle_transformers::generation::{LogitsProcessor, Sampling};

use super::decoder::{Input, KvCache, Logits, Model};
use super::hooks::NoHooks;
use crate::{Error, Result};

/// Generation settings.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    /// Stop tokens cannot be drawn before this many new tokens (HF's `min_new_tokens`).
    pub min_new_tokens: usize,
    /// 0 means greedy.
    pub temperature: f64,
    /// Nucleus mass kept when sampling (1.0 keeps everything).
    pub top_p: f64,
    /// Sample only among the `k` most likely tokens (`None`: all).
    pub top_k: Option<usize>,
    /// Repetition penalty over the last [`GenerateOptions::repeat_last_n`] tokens (1.0: off).
    pub repeat_penalty: f32,
    /// How many of the latest tokens (prompt included) the penalty looks at.
    pub repeat_last_n: usize,
    pub seed: u64,
    /// Generation ends after emitting any of these.
    pub stop: Vec<u32>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            max_new_tokens: 256,
            min_new_tokens: 0,
            temperature: 0.0,
            top_p: 1.0,
            top_k: None,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            seed: 0,
            stop: vec![],
        }
    }
}

/// Result of [`generate`].
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// New token ids (including the stop token when one ended generation).
    pub ids: Vec<u32>,
    /// Whether a stop token ended generation (false: `max_new_tokens` reached).
    pub stopped: bool,
}

impl GenerateOptions {
    /// The sampling rule these options describe, checked.
    pub fn sampling(&self) -> Result<Sampling> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) || !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::invalid(format!(
                "temperature must be >= 0 and top_p in (0, 1] (got {} and {})",
                self.temperature, self.top_p
            )));
        }
        if self.top_k == Some(0) {
            return Err(Error::invalid("top_k must be at least 1"));
        }
        if !(self.repeat_penalty > 0.0 && self.repeat_penalty.is_finite()) {
            return Err(Error::invalid(format!("repeat_penalty must be positive (got {})", self.repeat_penalty)));
        }
        let temperature = self.temperature;
        Ok(match (temperature == 0.0, self.top_k, self.top_p < 1.0) {
            (true, _, _) => Sampling::ArgMax,
            (false, None, false) => Sampling::All { temperature },
            (false, None, true) => Sampling::TopP { p: self.top_p, temperature },
            (false, Some(k), false) => Sampling::TopK { k, temperature },
            (false, Some(k), true) => Sampling::TopKThenTopP { k, p: self.top_p, temperature },
        })
    }
}

/// Generate a continuation of `prompt` (token ids, BOS included if the model wants it).
pub fn generate(model: &Model, prompt: &[u32], opts: &GenerateOptions) -> Result<Generation> {
    let mut sampler = LogitsProcessor::from_sampling(opts.seed, opts.sampling()?);
    let mut cache = KvCache::new(model);
    let mut ids = Vec::new();
    let mut input: Vec<u32> = prompt.to_vec();
    let mut context: Vec<u32> = prompt.to_vec();
    for _ in 0..opts.max_new_tokens {
        let out = model.forward_with(Input::Ids(&input), &mut cache, &mut NoHooks, Logits::Last)?;
        let mut logits = out.logits()?.flatten_all()?;
        if ids.len() < opts.min_new_tokens && !opts.stop.is_empty() {
            logits = suppress(&logits, &opts.stop)?;
        }
        if opts.repeat_penalty != 1.0 {
            let recent = &context[context.len().saturating_sub(opts.repeat_last_n)..];
            logits = candle_transformers::utils::apply_repeat_penalty(&logits, opts.repeat_penalty, recent)?;
        }
        let next = sampler.sample(&logits)?;
        context.push(next);
        ids.push(next);
        if opts.stop.contains(&next) {
            return Ok(Generation { ids, stopped: true });
        }
        input = vec![next];
    }
    Ok(Generation { ids, stopped: false })
}

/// `logits` with the given ids at -inf (they cannot be drawn, greedy or sampled).
fn suppress(logits: &candle_core::Tensor, ids: &[u32]) -> Result<candle_core::Tensor> {
    let mut values = logits.to_vec1::<f32>()?;
    for &id in ids {
        if let Some(v) = values.get_mut(id as usize) {
            *v = f32::NEG_INFINITY;
        }
    }
    Ok(candle_core::Tensor::from_vec(values, logits.dims(), logits.device())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_first_maximum_as_torch_argmax() {
        assert_eq!(draw(&GenerateOptions::default(), &[0.1, 0.5, 0.5, -1.0], 0), 1);
    }

    fn draw(opts: &GenerateOptions, logits: &[f32], seed: u64) -> u32 {
        let logits = candle_core::Tensor::new(logits, &candle_core::Device::Cpu).unwrap();
        LogitsProcessor::from_sampling(seed, opts.sampling().unwrap()).sample(&logits).unwrap()
    }

    #[test]
    fn top_p_small_keeps_only_the_best() {
        let opts = GenerateOptions { temperature: 1.0, top_p: 0.01, ..Default::default() };
        for seed in 0..20 {
            assert_eq!(draw(&opts, &[0.0, 3.0, 1.0], seed), 1);
        }
    }

    #[test]
    fn top_k_one_is_greedy_and_temperature_zero_is_argmax() {
        let logits = [0.5, -1.0, 2.5, 2.4];
        let top1 = GenerateOptions { temperature: 0.8, top_k: Some(1), ..Default::default() };
        let greedy = GenerateOptions::default();
        for seed in 0..10 {
            assert_eq!(draw(&top1, &logits, seed), 2);
            assert_eq!(draw(&greedy, &logits, seed), 2);
        }
    }

    #[test]
    fn sampling_is_seeded_and_covers_the_kept_tokens() {
        let opts = GenerateOptions { temperature: 1.0, top_k: Some(2), ..Default::default() };
        let logits = [1.0, 1.0, -9.0];
        let draws: Vec<u32> = (0..200).map(|seed| draw(&opts, &logits, seed)).collect();
        assert_eq!(draws, (0..200).map(|seed| draw(&opts, &logits, seed)).collect::<Vec<_>>(), "same seed, same token");
        assert!(draws.contains(&0) && draws.contains(&1) && !draws.contains(&2));
    }

    #[test]
    fn bad_settings_are_errors() {
        for opts in [
            GenerateOptions { temperature: -1.0, ..Default::default() },
            GenerateOptions { temperature: f64::NAN, ..Default::default() },
            GenerateOptions { top_p: 0.0, ..Default::default() },
            GenerateOptions { top_k: Some(0), ..Default::default() },
            GenerateOptions { repeat_penalty: 0.0, ..Default::default() },
        ] {
            assert!(opts.sampling().is_err(), "{opts:?}");
        }
    }
}
