//! Text generation with the KV cache: greedy (temperature 0, ties to the lowest id as
//! `torch.argmax`) or sampled with temperature and nucleus (top-p) filtering from a seeded ChaCha8
//! stream, stopping at any stop token.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::decoder::{Input, KvCache, Logits, Model};
use super::hooks::NoHooks;
use crate::{Error, Result};

/// Generation settings.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    /// 0 means greedy.
    pub temperature: f64,
    /// Nucleus mass kept when sampling (1.0 keeps everything).
    pub top_p: f64,
    pub seed: u64,
    /// Generation ends after emitting any of these.
    pub stop: Vec<u32>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self { max_new_tokens: 256, temperature: 0.0, top_p: 1.0, seed: 0, stop: vec![] }
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

/// Generate a continuation of `prompt` (token ids, BOS included if the model wants it).
pub fn generate(model: &Model, prompt: &[u32], opts: &GenerateOptions) -> Result<Generation> {
    if !(opts.temperature >= 0.0) || !(opts.top_p > 0.0 && opts.top_p <= 1.0) {
        return Err(Error::invalid(format!(
            "temperature must be >= 0 and top_p in (0, 1] (got {} and {})",
            opts.temperature, opts.top_p
        )));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let mut cache = KvCache::new(model);
    let mut ids = Vec::new();
    let mut input: Vec<u32> = prompt.to_vec();
    for _ in 0..opts.max_new_tokens {
        let out = model.forward_with(Input::Ids(&input), &mut cache, &mut NoHooks, Logits::Last)?;
        let logits = out.logits()?.flatten_all()?.to_vec1::<f32>()?;
        let next = if opts.temperature == 0.0 { argmax(&logits) } else { sample(&logits, opts, &mut rng) };
        ids.push(next);
        if opts.stop.contains(&next) {
            return Ok(Generation { ids, stopped: true });
        }
        input = vec![next];
    }
    Ok(Generation { ids, stopped: false })
}

/// Index of the first maximum (NaN never wins).
pub fn argmax(values: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] || values[best].is_nan() {
            best = i;
        }
    }
    best as u32
}

fn sample(logits: &[f32], opts: &GenerateOptions, rng: &mut ChaCha8Rng) -> u32 {
    let t = opts.temperature as f32;
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut probs: Vec<(u32, f32)> =
        logits.iter().enumerate().map(|(i, &l)| (i as u32, ((l - max) / t).exp())).collect();
    let total: f32 = probs.iter().map(|p| p.1).sum();
    probs.iter_mut().for_each(|p| p.1 /= total);
    probs.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    // Keep the smallest prefix whose mass reaches top_p (at least one token).
    let mut cumulative = 0.0;
    let mut keep = probs.len();
    for (i, p) in probs.iter().enumerate() {
        cumulative += p.1 as f64;
        if cumulative >= opts.top_p {
            keep = i + 1;
            break;
        }
    }
    let kept = &probs[..keep];
    let mass: f32 = kept.iter().map(|p| p.1).sum();
    let mut u = rng.random::<f32>() * mass;
    for p in kept {
        if u < p.1 {
            return p.0;
        }
        u -= p.1;
    }
    kept[kept.len() - 1].0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_takes_first_maximum() {
        assert_eq!(argmax(&[0.1, 0.5, 0.5, -1.0]), 1);
    }

    #[test]
    fn top_p_small_keeps_only_the_best() {
        let opts = GenerateOptions { temperature: 1.0, top_p: 0.01, ..Default::default() };
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for _ in 0..20 {
            assert_eq!(sample(&[0.0, 3.0, 1.0], &opts, &mut rng), 1);
        }
    }
}
