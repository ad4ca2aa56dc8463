//! A synthetic explorer of any size, every part filled, for measuring the page (`thoughtscope
//! bench explorer`): a trace of `sentences` sentences and about `tokens` tokens, random causal
//! sentence attention in `layers × heads`, a suppression matrix, `step_importance.json`'s matrix,
//! every resampling field of `chunks_labeled.json`, the most alternatives per chunk the page
//! keeps, and the token view. Nothing is read or run: only the page's size and speed are real.

use super::{Alternative, Explorer, ExplorerOptions, Matrix, RESAMPLING_FIELDS};
use crate::attention::token_pairs::{HeadTokenPairs, TokenPair, TokenPairs};
use crate::attention::SentenceAttention;
use crate::Result;

/// The size of a synthetic trace.
#[derive(Debug, Clone)]
pub struct SyntheticTrace {
    pub sentences: usize,
    /// Tokens of the whole trace, spread over the sentences (5 to about 2 × the mean each).
    pub tokens: usize,
    pub layers: usize,
    pub heads: usize,
    pub seed: u64,
}

impl Default for SyntheticTrace {
    /// 300 sentences, 16k tokens, SmolLM2-135M's 30 × 9 heads.
    fn default() -> Self {
        SyntheticTrace { sentences: 300, tokens: 16_000, layers: 30, heads: 9, seed: 1 }
    }
}

struct Random(u64);

impl Random {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
    fn below(&mut self, n: usize) -> usize {
        ((self.next() * n as f64) as usize).min(n.saturating_sub(1))
    }
}

const WORDS: &[&str] = &[
    " the", " boxes", " apples", " twelve", " each", " total", " so", " wait", " let", " me", " check", " maybe", " answer", " is", " 5",
    " times", " 12", " equals", " 60", ".", ",", " Hmm", " but", " per", " box",
];

/// The explorer of `trace` with `options`' budget (receiver heads, single-head matrices,
/// alternatives, token-view heads and tokens).
pub fn synthetic_explorer(trace: &SyntheticTrace, options: &ExplorerOptions) -> Result<Explorer> {
    let n = trace.sentences.max(1);
    let mut random = Random(trace.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    // Token counts: 5 .. ~2 × mean, summing to about `tokens`.
    let mean = (trace.tokens / n).max(5);
    let lengths: Vec<usize> = (0..n).map(|_| 5 + random.below(2 * mean - 9)).collect();
    let tokens: Vec<Vec<String>> =
        lengths.iter().map(|&len| (0..len).map(|_| WORDS[random.below(WORDS.len())].to_owned()).collect()).collect();
    let sentences: Vec<String> = tokens.iter().map(|t| t.concat().trim().to_owned()).collect();
    let mut explorer =
        Explorer::new(format!("synthetic trace, {n} sentences, {} tokens — trace explorer", lengths.iter().sum::<usize>()), sentences);
    explorer.source = "synthetic (thoughtscope bench explorer)".into();
    explorer.model = Some("synthetic".into());
    for (k, tags) in explorer.tags.iter_mut().enumerate() {
        tags.push(["problem_setup", "plan_generation", "active_computation", "uncertainty_management", "self_checking"][k % 5].into());
    }

    // Sentence attention: each row a causal distribution with a few heavy columns.
    let (layers, heads) = (trace.layers, trace.heads);
    let mut attention = SentenceAttention::zeros(layers, heads, n);
    for l in 0..layers {
        for h in 0..heads {
            let m = attention.matrix_mut(l, h);
            for i in 0..n {
                let mut sum = 0.0;
                for j in 0..=i {
                    let v = random.next().powi(4) + if (j * 7 + l + h) % 23 == 0 { 2.0 } else { 0.0 };
                    m[i * n + j] = v as f32;
                    sum += v;
                }
                for j in 0..=i {
                    m[i * n + j] /= sum as f32;
                }
            }
        }
    }
    explorer.add_attention(&attention, options)?;

    let square = |random: &mut Random, scale: f64, offset: f64| -> Vec<f64> {
        (0..n * n).map(|x| if x % n < x / n { offset + scale * random.next() } else { f64::NAN }).collect()
    };
    let suppression = square(&mut random, 18.0, -20.0);
    let mut matrix =
        Matrix::from_square("suppression", "attention suppression: mean log(KL + 1e-9)", "suppression", n, |i, j| suppression[i * n + j]);
    matrix.row_meaning = "target (later) sentence".into();
    matrix.column_meaning = "suppressed (earlier) sentence".into();
    explorer.push_matrix(matrix)?;
    let outgoing: Vec<f64> = (0..n).map(|s| (s + 1..n).map(|t| suppression[t * n + s]).sum::<f64>() / (n - s - 1).max(1) as f64).collect();
    explorer.push_metric("suppression_out", "suppression: outgoing importance", "suppression", "synthetic", &outgoing)?;
    let incoming: Vec<f64> = (0..n).map(|t| (0..t).map(|s| suppression[t * n + s]).sum::<f64>() / t.max(1) as f64).collect();
    explorer.push_metric("suppression_in", "suppression: incoming importance", "suppression", "synthetic", &incoming)?;
    let step = square(&mut random, 0.2, -0.1);
    explorer.push_matrix(Matrix::from_square("step_importance", "step importance (step_importance.json)", "importance", n, |i, j| {
        step[i * n + j]
    }))?;
    for &(field, label, description) in RESAMPLING_FIELDS {
        let values: Vec<f64> = (0..n).map(|_| random.next()).collect();
        explorer.push_metric(field, label, "resampling", description, &values)?;
    }
    for alternatives in explorer.alternatives.iter_mut() {
        *alternatives = (0..options.max_alternatives)
            .map(|a| Alternative {
                text: (0..40).map(|_| WORDS[random.below(WORDS.len())]).collect::<String>().trim().chars().take(240).collect(),
                answer: format!("{}", 55 + a),
                is_correct: Some(a % 2 == 0),
            })
            .collect();
    }

    // The token view of the top receiver heads: each sentence and a source, random values.
    let view_heads: Vec<(usize, usize)> = explorer.receiver_heads.iter().take(options.token_heads).map(|&[l, h]| (l, h)).collect();
    let mut starts = Vec::with_capacity(n);
    let mut at = 1;
    for &len in &lengths {
        starts.push((at, at + len));
        at += len;
    }
    let max_tokens = options.token_max;
    let pairs = TokenPairs {
        max_tokens,
        ranges: starts,
        heads: view_heads
            .iter()
            .map(|&(layer, head)| HeadTokenPairs {
                layer,
                head,
                pairs: (0..n)
                    .map(|i| {
                        (i > 0).then(|| {
                            let source = random.below(i);
                            let (rows, cols) = (lengths[i].min(max_tokens), lengths[source].min(max_tokens));
                            let values = (0..rows * cols).map(|_| (random.next().powi(3) * 0.2) as f32).collect();
                            TokenPair { source, mean: random.next() * 0.05, rows, cols, values }
                        })
                    })
                    .collect(),
            })
            .collect(),
        tokens: tokens.iter().map(|t| t.iter().take(max_tokens).cloned().collect()).collect(),
    };
    explorer.set_token_view(&pairs, &view_heads)?;
    Ok(explorer)
}
