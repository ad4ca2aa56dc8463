//! Token draws for batched decoding: the same tokens as candle-transformers' `LogitsProcessor`
//! for the same seed and logits (greedy, temperature alone, or temperature then top-p), found
//! with less work.
//!
//! `LogitsProcessor` sorts the whole vocabulary (49k tokens for SmolLM2) to find the nucleus of
//! every draw, then builds its weighted index over the whole vocabulary: 9 % of a batched
//! SmolLM2 decode step. The nucleus is the shortest run of the descending order whose running
//! sum reaches top-p; at temperature 0.6 it is a handful of tokens. [`TokenSampler`] selects the
//! largest candidates first (a partial selection, then a sort of those alone), widening the
//! selection until the running sum is reached, and draws among the nucleus alone. The result is
//! exactly `LogitsProcessor`'s:
//!
//! - the probabilities are computed by the same candle ops (`logits / temperature`, then
//!   `softmax_last_dim`), which work row by row, so a batch of rows gives each row's values;
//! - the order is the same total order (probability descending by `f32::total_cmp`, ties by
//!   ascending token id, which is what its stable sort of `0..vocab` gives), so the nucleus and
//!   its running sum (f32, in that order) are the same;
//! - the draw is the same `rand` `WeightedIndex` over the nucleus in token-id order: the tokens
//!   `LogitsProcessor` zeroes add nothing to its cumulative sums (`x + 0.0 == x`) and can never
//!   be chosen, so the cumulative weights, the total, the one uniform drawn from the same
//!   `StdRng` stream and the token chosen are all the same.

use candle_core::{DType, Tensor, D};
use candle_transformers::generation::Sampling;
use rand::distr::weighted::WeightedIndex;
use rand::distr::Distribution;
use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::{Error, Result};

/// How one token is drawn from a row of logits.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Rule {
    ArgMax,
    All { temperature: f64 },
    TopP { p: f32, temperature: f64 },
}

impl Rule {
    fn temperature(self) -> Option<f64> {
        match self {
            Rule::ArgMax => None,
            Rule::All { temperature } | Rule::TopP { temperature, .. } => Some(temperature),
        }
    }
}

/// One sequence's sampler: its own seeded stream, drawing as `LogitsProcessor::from_sampling`
/// with the same seed and rule would (see the module documentation).
#[derive(Debug, Clone)]
pub struct TokenSampler {
    rng: StdRng,
    rule: Rule,
    /// Token ids being selected (reused across draws).
    order: Vec<u32>,
    /// The nucleus in token-id order, and its probabilities.
    kept: Vec<u32>,
    weights: Vec<f32>,
}

/// Candidates selected first for a top-p draw; the selection widens fourfold until the nucleus
/// fits (at temperature 0.6 SmolLM2's nucleus is rarely more than a few dozen tokens).
const FIRST_CANDIDATES: usize = 64;

impl TokenSampler {
    /// `sampling` as `LogitsProcessor` takes it: `ArgMax`, `All` and `TopP` (top-k rules are not
    /// supported here: an error).
    pub fn new(seed: u64, sampling: &Sampling) -> Result<TokenSampler> {
        let rule = match *sampling {
            Sampling::ArgMax => Rule::ArgMax,
            Sampling::All { temperature } => Rule::All { temperature },
            // `LogitsProcessor` draws from the whole distribution outside (0, 1).
            Sampling::TopP { p, temperature } if p <= 0.0 || p >= 1.0 => Rule::All { temperature },
            Sampling::TopP { p, temperature } => Rule::TopP { p: p as f32, temperature },
            ref other => return Err(Error::invalid(format!("TokenSampler: sampling rule {other:?} is not supported"))),
        };
        Ok(TokenSampler { rng: StdRng::seed_from_u64(seed), rule, order: Vec::new(), kept: Vec::new(), weights: Vec::new() })
    }

    /// The temperature its draws divide the logits by (`None`: greedy), for [`Batch::new`].
    pub fn temperature(&self) -> Option<f64> {
        self.rule.temperature()
    }

    /// The next token for one row of logits `[vocab]`.
    pub fn sample(&mut self, logits: &Tensor) -> Result<u32> {
        let batch = Batch::new(&logits.unsqueeze(0)?, self.rule.temperature())?;
        self.sample_row(&batch, 0)
    }

    /// The next token for row `row` of a batch prepared by [`Batch::new`] with this sampler's
    /// temperature.
    pub fn sample_row(&mut self, batch: &Batch, row: usize) -> Result<u32> {
        if batch.temperature != self.rule.temperature() {
            return Err(Error::invalid("TokenSampler: the batch was prepared for another temperature"));
        }
        let values = batch.row(row)?;
        match self.rule {
            Rule::ArgMax => batch.argmax(row),
            Rule::All { .. } => self.draw(values, None),
            Rule::TopP { p, .. } => self.draw(values, Some(p)),
        }
    }

    /// A draw from probabilities `prs`, restricted to the top-`p` nucleus when `p` is given.
    fn draw(&mut self, prs: &[f32], p: Option<f32>) -> Result<u32> {
        let Some(p) = p else {
            let distribution = WeightedIndex::new(prs).map_err(|e| Error::invalid(format!("token draw: {e}")))?;
            return Ok(distribution.sample(&mut self.rng) as u32);
        };
        let n = prs.len();
        let descending = |&i: &u32, &j: &u32| prs[j as usize].total_cmp(&prs[i as usize]).then(i.cmp(&j));
        let mut candidates = FIRST_CANDIDATES.min(n);
        let kept = loop {
            self.order.clear();
            self.order.extend(0..n as u32);
            if candidates < n {
                self.order.select_nth_unstable_by(candidates - 1, descending);
            }
            let top = &mut self.order[..candidates];
            top.sort_unstable_by(descending);
            // `LogitsProcessor`'s loop: a token is kept while the sum before it is below p.
            let mut sum = 0f32;
            let mut kept = None;
            for (position, &token) in top.iter().enumerate() {
                if sum >= p {
                    kept = Some(position);
                    break;
                }
                sum += prs[token as usize];
            }
            match kept {
                Some(kept) => break kept,
                None if sum >= p || candidates == n => break candidates,
                None => candidates = (candidates * 4).min(n),
            }
        };
        self.kept.clear();
        self.kept.extend_from_slice(&self.order[..kept]);
        self.kept.sort_unstable();
        self.weights.clear();
        self.weights.extend(self.kept.iter().map(|&t| prs[t as usize]));
        let distribution = WeightedIndex::new(&self.weights).map_err(|e| Error::invalid(format!("token draw: {e}")))?;
        Ok(self.kept[distribution.sample(&mut self.rng)])
    }
}

/// The rows of a batch of logits made ready for drawing: probabilities at a temperature (the
/// same candle ops `LogitsProcessor` runs on one row, run on every row at once), or the logits
/// themselves for greedy draws.
pub struct Batch {
    temperature: Option<f64>,
    values: Vec<f32>,
    logits: Tensor,
    vocab: usize,
}

impl Batch {
    /// `logits` `[rows, vocab]`; `temperature` `None` for greedy draws.
    pub fn new(logits: &Tensor, temperature: Option<f64>) -> Result<Batch> {
        let logits = logits.to_dtype(DType::F32)?;
        let (_, vocab) = logits.dims2()?;
        let values = match temperature {
            Some(t) => candle_nn::ops::softmax_last_dim(&(&logits / t)?)?.flatten_all()?.to_vec1::<f32>()?,
            None => Vec::new(),
        };
        Ok(Batch { temperature, values, logits, vocab })
    }

    fn row(&self, row: usize) -> Result<&[f32]> {
        if self.temperature.is_none() {
            return Ok(&[]);
        }
        self.values.get(row * self.vocab..(row + 1) * self.vocab).ok_or_else(|| Error::invalid(format!("token draw: no row {row} in the batch")))
    }

    fn argmax(&self, row: usize) -> Result<u32> {
        Ok(self.logits.get(row)?.argmax(D::Minus1)?.to_scalar::<u32>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use candle_transformers::generation::LogitsProcessor;

    /// Rows of logits with what matters: a peaked row (small nucleus), a flat one (a nucleus of
    /// thousands, beyond the first candidates), ties at the cut, and a row of equal values.
    fn rows(vocab: usize) -> Vec<Vec<f32>> {
        let wave = |m: usize, scale: f32| (0..vocab).map(move |i| ((i * m % 1009) as f32 / 1009.0 - 0.5) * scale);
        let mut peaked: Vec<f32> = wave(7919, 4.0).collect();
        peaked[17] = 9.0;
        peaked[vocab - 1] = 8.5;
        let flat: Vec<f32> = wave(104729, 0.5).collect();
        // Ties: pairs of equal logits around the nucleus's edge.
        let tied: Vec<f32> = (0..vocab).map(|i| ((i / 2) % 97) as f32 / 16.0).collect();
        vec![peaked, flat, tied, vec![0.25; vocab]]
    }

    /// Token by token, 40 draws per seed from each row, the sampler equals `LogitsProcessor`
    /// for every rule the resampling engine uses, one row at a time and as a batch.
    #[test]
    fn draws_equal_logits_processor() {
        let vocab = 5000;
        let rows = rows(vocab);
        let flat: Vec<f32> = rows.concat();
        let batch_logits = Tensor::from_vec(flat, (rows.len(), vocab), &Device::Cpu).unwrap();
        let rules = [
            Sampling::ArgMax,
            Sampling::All { temperature: 0.6 },
            Sampling::TopP { p: 0.95, temperature: 0.6 },
            Sampling::TopP { p: 0.5, temperature: 1.3 },
            Sampling::TopP { p: 0.999, temperature: 2.0 },
            Sampling::TopP { p: 1.0, temperature: 0.7 },
        ];
        for rule in rules {
            let batch = Batch::new(&batch_logits, TokenSampler::new(0, &rule).unwrap().temperature()).unwrap();
            for seed in [0, 44, 1234567] {
                for (r, row) in rows.iter().enumerate() {
                    let logits = Tensor::new(row.as_slice(), &Device::Cpu).unwrap();
                    let mut reference = LogitsProcessor::from_sampling(seed, rule.clone());
                    let mut alone = TokenSampler::new(seed, &rule).unwrap();
                    let mut batched = TokenSampler::new(seed, &rule).unwrap();
                    for draw in 0..40 {
                        let want = reference.sample(&logits).unwrap();
                        assert_eq!(alone.sample(&logits).unwrap(), want, "{rule:?} seed {seed} row {r} draw {draw}");
                        assert_eq!(batched.sample_row(&batch, r).unwrap(), want, "{rule:?} seed {seed} row {r} draw {draw}, batched");
                    }
                }
            }
        }
    }

    #[test]
    fn top_k_rules_and_a_batch_of_another_temperature_are_errors() {
        assert!(TokenSampler::new(0, &Sampling::TopK { k: 3, temperature: 1.0 }).is_err());
        let logits = Tensor::zeros((2, 8), DType::F32, &Device::Cpu).unwrap();
        let batch = Batch::new(&logits, Some(1.0)).unwrap();
        let mut sampler = TokenSampler::new(0, &Sampling::TopP { p: 0.9, temperature: 0.6 }).unwrap();
        assert!(sampler.sample_row(&batch, 0).is_err());
        let mut sampler = TokenSampler::new(0, &Sampling::All { temperature: 1.0 }).unwrap();
        assert!(sampler.sample_row(&batch, 1).is_ok());
        assert!(sampler.sample_row(&batch, 2).is_err());
    }
}
