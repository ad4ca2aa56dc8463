//! Residual stream decomposition (the seed's next step "understand how tokens build
//! computation"): on the clean run, at every loop-step position (thought k; in the cotx
//! loop step 0 is BOT) and at EOT (whose output predicts the first answer token):
//!
//! 1. **The decomposition.** The final residual (after the last block) is the sum of its
//!    components: the input (`embed`: the token embedding, or the projected latent fed as input
//!    embedding) plus every block's attention output and MLP output (TransformerLens
//!    `blocks.{l}.hook_attn_out` / `hook_mlp_out`; labels `embed`, `{l}_attn_out`, `{l}_mlp_out`
//!    as `ActivationCache.decompose_resid`). The record keeps the largest deviation of the sum
//!    from the captured residual (`reconstruction_error`, float round-off only).
//! 2. **Direct logit attribution** of each component to a target token `t`, as TransformerLens's
//!    `apply_ln_to_stack` does for an RMSNorm model: the final norm's scale is taken from the
//!    full residual `x` at that position, `s = sqrt(mean(x²) + eps)`, and applied to every
//!    component `c`: `DLA(c) = W_U[t] · (γ ⊙ c) / s`. With `s` frozen the norm is linear, so the
//!    attributions add up to the position's logit exactly, `Σ_c DLA(c) = W_U[t] · RMSNorm(x)`
//!    (stored as `logits`; tests check the identity). What is *not* exact is reading a
//!    component's DLA as the logit change if it were removed: `s` would change too.
//!    RMSNorm has no mean subtraction, so there is no centring step (TransformerLens centres
//!    components only for LayerNorm).
//! 3. **The logit lens** of each position: `log_softmax(W_U · RMSNorm(resid))` of the input and of
//!    the residual after every block, each with its own norm scale; the top tokens and the rank and
//!    log-prob of each target. The row after the last block is the model's own prediction there
//!    (the logit slice of the loop's options: upstream's `[: V0+2]`).
//!
//! Targets: `gold_answer_first`, the first token of the gold number in CODI's answer
//! `"The answer is: N"` that carries the number, not a space token before it
//! ([`crate::codi::latent::thought_loop::gold_number_token`]), and `decoded_first`, the token
//! the model decodes first (EOT's argmax). At a thought position the logit of a target is what
//! the model would give it if it read out there (a lens), not a prediction it makes.

use std::path::Path;

use candle_core::{DType, Tensor, D};
use polars::prelude::DataFrame;
use serde::{Deserialize, Serialize};

use crate::codi::latent::codi_model::CodiModel;
use crate::codi::latent::thought_loop::{argmax, gold_number_token, run_to_eot, LoopOptions, Phase, PhaseHooks, LATENT_STEPS};
use crate::codi::problems::dataset::Problem;
use crate::codi::runner::files::JsonStyle;
use crate::codi::runner::output::{finite_mean, float_column, text_column};
use crate::codi::runner::step::{run_step, ProblemRecord, Step, StepOutcome};
use crate::model::{HookPoint, Hooks};
use crate::{Error, Result};

/// Results file stem (`results/<stem>_<tag>.json`).
pub const RESULTS_STEM: &str = "residual_decomposition";
/// Mean-DLA table stem (`results/<stem>_<tag>.{csv,md}`).
pub(crate) const DLA_TABLE_STEM: &str = "direct_logit_attribution";
/// Names of the two targets, in record order.
pub(crate) const TARGETS: [&str; 2] = ["gold_answer_first", "decoded_first"];

/// Settings of a decomposition run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecomposeOptions {
    pub loop_options: LoopOptions,
    /// Tokens listed per logit-lens row.
    pub top_k: usize,
}

impl DecomposeOptions {
    pub fn new(loop_options: LoopOptions) -> Self {
        DecomposeOptions { loop_options, top_k: 5 }
    }
}

/// A token whose logit is attributed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogitTarget {
    pub name: String,
    pub token: u32,
    pub text: String,
}

/// One token of a logit-lens row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LensToken {
    pub token: u32,
    pub text: String,
    pub logprob: f64,
}

/// The logit lens of one residual (`embed` or after block `l`, labelled `{l}_post`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LensRow {
    pub label: String,
    pub top: Vec<LensToken>,
    /// Per target: log-prob and rank (0 = the top token).
    pub target_logprobs: Vec<f64>,
    pub target_ranks: Vec<usize>,
}

/// One problem's decomposition (`error` instead on failure).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecomposeRecord {
    pub problem_id: String,
    pub difficulty: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_answer: Option<serde_json::Number>,
    /// `T0`..`T5`, `EOT`.
    #[serde(default)]
    pub position_labels: Vec<String>,
    /// Absolute sequence positions.
    #[serde(default)]
    pub positions: Vec<usize>,
    /// `embed`, `0_attn_out`, `0_mlp_out`, `1_attn_out`, ….
    #[serde(default)]
    pub components: Vec<String>,
    #[serde(default)]
    pub targets: Vec<LogitTarget>,
    /// Per position: the final norm's scale `sqrt(mean(x²) + eps)` of the final residual.
    #[serde(default)]
    pub final_scale: Vec<f64>,
    /// `[target][position][component]`.
    #[serde(default)]
    pub dla: Vec<Vec<Vec<f64>>>,
    /// `[target][position]`: the logit the model computes there, `W_U[t] · RMSNorm(x)`.
    #[serde(default)]
    pub logits: Vec<Vec<f64>>,
    /// Per position: max |Σ components − final residual|.
    #[serde(default)]
    pub reconstruction_error: Vec<f64>,
    /// `[position][row]`: rows `embed`, `0_post`, …, `{n-1}_post`.
    #[serde(default)]
    pub logit_lens: Vec<Vec<LensRow>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ProblemRecord for DecomposeRecord {
    fn problem_id(&self) -> &str {
        &self.problem_id
    }
    fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }
    fn failed(problem: &Problem, error: String) -> Self {
        DecomposeRecord {
            problem_id: problem.id.clone(),
            difficulty: problem.difficulty.clone(),
            expected_answer: None,
            position_labels: vec![],
            positions: vec![],
            components: vec![],
            targets: vec![],
            final_scale: vec![],
            dla: vec![],
            logits: vec![],
            reconstruction_error: vec![],
            logit_lens: vec![],
            error: Some(error),
        }
    }
}

impl DecomposeRecord {
    /// The two identities the decomposition rests on, as the largest violations over positions
    /// and targets: (max |Σ components − final residual|, max |Σ DLA − logit|). Both are float
    /// round-off (≈1e-5 in f32) when the capture is complete.
    pub fn identity_errors(&self) -> (f64, f64) {
        let reconstruction = self.reconstruction_error.iter().copied().fold(0.0, f64::max);
        let mut dla: f64 = 0.0;
        for (per_position, logits) in self.dla.iter().zip(&self.logits) {
            for (components, logit) in per_position.iter().zip(logits) {
                dla = dla.max((components.iter().sum::<f64>() - logit).abs());
            }
        }
        (reconstruction, dla)
    }
}

/// Component labels of an `n`-block model (TransformerLens `decompose_resid` order).
pub(crate) fn component_labels(layers: usize) -> Vec<String> {
    let mut out = vec!["embed".to_owned()];
    for l in 0..layers {
        out.push(format!("{l}_attn_out"));
        out.push(format!("{l}_mlp_out"));
    }
    out
}

/// Residual-stream vectors of one position: input, per block attention and MLP outputs, and the
/// residual after each block.
#[derive(Debug, Clone, Default)]
pub(crate) struct PositionStream {
    pub embed: Vec<f32>,
    pub attn_out: Vec<Vec<f32>>,
    pub mlp_out: Vec<Vec<f32>>,
    pub resid_post: Vec<Vec<f32>>,
}

impl PositionStream {
    /// The components in [`component_labels`] order.
    pub fn components(&self) -> Vec<&[f32]> {
        let mut out: Vec<&[f32]> = vec![&self.embed];
        for (a, m) in self.attn_out.iter().zip(&self.mlp_out) {
            out.push(a);
            out.push(m);
        }
        out
    }
    /// The residual after the last block.
    pub fn final_residual(&self) -> &[f32] {
        self.resid_post.last().map(Vec::as_slice).unwrap_or(&[])
    }
}

/// Captures the stream at each loop step and at EOT (7 single-position forwards).
struct StreamHooks {
    slot: Option<usize>,
    streams: Vec<PositionStream>,
}

impl PhaseHooks for StreamHooks {
    fn enter(&mut self, phase: Phase) {
        self.slot = match phase {
            Phase::Step(k) => Some(k),
            Phase::Eot => Some(LATENT_STEPS),
            _ => None,
        };
    }
}

impl Hooks for StreamHooks {
    fn wants(&self, point: &HookPoint) -> bool {
        self.slot.is_some()
            && matches!(point, HookPoint::Embed | HookPoint::AttnOut(_) | HookPoint::MlpOut(_) | HookPoint::ResidPost(_))
    }
    fn on(&mut self, point: &HookPoint, value: &Tensor) -> crate::model::Result<Option<Tensor>> {
        let Some(slot) = self.slot else { return Ok(None) };
        if value.dim(1)? != 1 {
            return Err(Error::Other(format!("{point}: expected one position per loop forward, got {}", value.dim(1)?)).into());
        }
        let v = value.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        let stream = &mut self.streams[slot];
        match point {
            HookPoint::Embed => stream.embed = v,
            HookPoint::AttnOut(_) => stream.attn_out.push(v),
            HookPoint::MlpOut(_) => stream.mlp_out.push(v),
            HookPoint::ResidPost(_) => stream.resid_post.push(v),
            _ => {}
        }
        Ok(None)
    }
}

/// The clean run's residual streams at the six loop steps and EOT, and the EOT logits.
pub(crate) fn capture_streams(codi: &CodiModel, question: &str, options: &LoopOptions) -> Result<(Vec<PositionStream>, Vec<usize>, Tensor)> {
    let mut hooks = StreamHooks { slot: None, streams: vec![PositionStream::default(); LATENT_STEPS + 1] };
    let state = run_to_eot(codi, question, options, &mut hooks)?;
    let n = codi.model.num_layers();
    for (i, s) in hooks.streams.iter().enumerate() {
        if s.embed.is_empty() || s.attn_out.len() != n || s.mlp_out.len() != n || s.resid_post.len() != n {
            return Err(Error::Other(format!("position {i}: incomplete residual stream capture")));
        }
    }
    let mut positions = state.layout.step_positions();
    positions.push(state.layout.eot_position());
    Ok((hooks.streams, positions, state.eot_logits))
}

/// `sqrt(mean(x²) + eps)`, in f64.
pub(crate) fn rms_scale(x: &[f32], eps: f64) -> f64 {
    let mean_sq = x.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / x.len() as f64;
    (mean_sq + eps).sqrt()
}

/// Direct logit attribution of `components` to a token whose unembedding row is `w_u`, through
/// an RMSNorm of weight `gamma` with its scale frozen at `scale`.
pub fn direct_logit_attribution(components: &[&[f32]], w_u: &[f32], gamma: &[f32], scale: f64) -> Vec<f64> {
    let direction: Vec<f64> = w_u.iter().zip(gamma).map(|(&w, &g)| w as f64 * g as f64 / scale).collect();
    components.iter().map(|c| c.iter().zip(&direction).map(|(&v, &d)| v as f64 * d).sum()).collect()
}

/// Decompose one problem's clean run.
pub fn decompose_problem(codi: &CodiModel, problem: &Problem, options: &DecomposeOptions) -> Result<DecomposeRecord> {
    let model = &codi.model;
    let n = model.num_layers();
    let eps = model.config().rms_norm_eps;
    let (streams, positions, eot_logits) = capture_streams(codi, &problem.question, &options.loop_options)?;
    let width = eot_logits.dim(D::Minus1)?;

    // Targets: the gold number's first token and the first decoded token.
    // The first token of the number itself, not a space token before it.
    let (gold, _) = gold_number_token(&codi.tokenizer, &problem.answer.to_string())?;
    let decoded = argmax(&eot_logits.to_vec1::<f32>()?);
    let text = |t: u32| -> Result<String> { token_text(codi, t) };
    let targets = vec![
        LogitTarget { name: TARGETS[0].into(), token: gold, text: text(gold)? },
        LogitTarget { name: TARGETS[1].into(), token: decoded, text: text(decoded)? },
    ];

    let gamma = model.final_norm_weight().to_dtype(DType::F32)?.to_vec1::<f32>()?;
    let rows: Vec<Vec<f32>> = targets
        .iter()
        .map(|t| Ok(model.unembedding_rows(&[t.token])?.flatten_all()?.to_vec1::<f32>()?))
        .collect::<Result<_>>()?;

    let mut final_scale = Vec::with_capacity(streams.len());
    let mut reconstruction_error = Vec::with_capacity(streams.len());
    let mut dla = vec![Vec::with_capacity(streams.len()); targets.len()];
    for stream in &streams {
        let components = stream.components();
        let x = stream.final_residual();
        let scale = rms_scale(x, eps);
        final_scale.push(scale);
        let error = (0..x.len())
            .map(|i| (components.iter().map(|c| c[i] as f64).sum::<f64>() - x[i] as f64).abs())
            .fold(0.0, f64::max);
        reconstruction_error.push(error);
        for (t, row) in rows.iter().enumerate() {
            dla[t].push(direct_logit_attribution(&components, row, &gamma, scale));
        }
    }

    // Logit lens: the input and the residual after every block, every position, in one matmul.
    let d = model.config().hidden_size;
    let lens_per_position = n + 1;
    let lens_rows = streams.len() * lens_per_position;
    let mut flat = crate::model::memory::try_with_capacity(lens_rows * d, &format!("the logit lens' {lens_rows} residuals"))?;
    // Its logits (a tensor, then a copy of it) are allocated by candle: checked first.
    let vocab = model.config().vocab_size as u64;
    crate::model::memory::check_allocatable(
        (lens_rows as u64).saturating_mul(vocab).saturating_mul(8),
        &format!("the logit lens' logits ({lens_rows} positions × {vocab} tokens float32, twice)"),
    )?;
    for stream in &streams {
        flat.extend_from_slice(&stream.embed);
        for r in &stream.resid_post {
            flat.extend_from_slice(r);
        }
    }
    let residuals = Tensor::from_vec(flat, (streams.len() * lens_per_position, d), model.device())?;
    let lens_logits = model
        .lm_head(&model.final_norm(&residuals)?)?
        .narrow(D::Minus1, 0, width)?
        .to_dtype(DType::F32)?
        .to_vec2::<f32>()?;
    let labels: Vec<String> = std::iter::once("embed".to_owned()).chain((0..n).map(|l| format!("{l}_post"))).collect();
    let mut logit_lens = Vec::with_capacity(streams.len());
    let mut logits = vec![Vec::with_capacity(streams.len()); targets.len()];
    for p in 0..streams.len() {
        let mut rows_p = Vec::with_capacity(lens_per_position);
        for (r, label) in labels.iter().enumerate() {
            let values = &lens_logits[p * lens_per_position + r];
            if r == n {
                for (t, target) in targets.iter().enumerate() {
                    logits[t].push(values.get(target.token as usize).map_or(f64::NAN, |&v| v as f64));
                }
            }
            rows_p.push(lens_row(codi, label, values, &targets, options.top_k)?);
        }
        logit_lens.push(rows_p);
    }

    let mut position_labels: Vec<String> = (0..LATENT_STEPS).map(|k| format!("T{k}")).collect();
    position_labels.push("EOT".into());
    Ok(DecomposeRecord {
        problem_id: problem.id.clone(),
        difficulty: problem.difficulty.clone(),
        expected_answer: Some(problem.answer.clone()),
        position_labels,
        positions,
        components: component_labels(n),
        targets,
        final_scale,
        dla,
        logits,
        reconstruction_error,
        logit_lens,
        error: None,
    })
}

/// Text of a token: the tokenizer's decoding, or `<pad>`/`<bot>`/`<eot>` for CODI's extra rows.
pub(crate) fn token_text(codi: &CodiModel, token: u32) -> Result<String> {
    let s = codi.special;
    Ok(match token {
        t if t == s.pad => "<pad>".to_owned(),
        t if t == s.bot => "<bot>".to_owned(),
        t if t == s.eot => "<eot>".to_owned(),
        t if t >= s.base_vocab => format!("<{t}>"),
        t => codi.tokenizer.decode(&[t], false)?,
    })
}

/// One lens row from its logits: log-softmax in f64, top `k` (ties: the lower id first), targets.
fn lens_row(codi: &CodiModel, label: &str, logits: &[f32], targets: &[LogitTarget], k: usize) -> Result<LensRow> {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
    let log_sum = logits.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln() + max;
    let mut order: Vec<usize> = (0..logits.len()).collect();
    let k = k.min(logits.len());
    if k > 0 {
        order.select_nth_unstable_by(k - 1, |&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
        order.truncate(k);
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    } else {
        order.clear();
    }
    let top = order
        .into_iter()
        .map(|i| Ok(LensToken { token: i as u32, text: token_text(codi, i as u32)?, logprob: logits[i] as f64 - log_sum }))
        .collect::<Result<_>>()?;
    let (mut target_logprobs, mut target_ranks) = (Vec::new(), Vec::new());
    for t in targets {
        let i = t.token as usize;
        match logits.get(i) {
            Some(&v) => {
                target_logprobs.push(v as f64 - log_sum);
                target_ranks.push(logits.iter().filter(|&&o| o > v).count());
            }
            None => {
                target_logprobs.push(f64::NEG_INFINITY);
                target_ranks.push(logits.len());
            }
        }
    }
    Ok(LensRow { label: label.to_owned(), top, target_logprobs, target_ranks })
}

/// `codi decompose`: every problem not yet in `out`, `out` rewritten after each (resumable,
/// merging shard parts: [`crate::codi::runner::step`]).
pub fn run_decompose(codi: &CodiModel, problems: &[Problem], options: &DecomposeOptions, out: &Path) -> Result<StepOutcome<DecomposeRecord>> {
    let step = Step { name: "decompose", settings: serde_json::to_value(options)?, style: JsonStyle::Compact };
    run_step(codi, &step, problems, out, |problem| decompose_problem(codi, problem, options))
}

/// Means over problems.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecomposeSummary {
    pub problems: usize,
    pub targets: Vec<String>,
    pub position_labels: Vec<String>,
    pub components: Vec<String>,
    /// `[target][position][component]` mean DLA.
    pub dla_mean: Vec<Vec<Vec<Option<f64>>>>,
    /// `[target][position]` mean logit.
    pub logit_mean: Vec<Vec<Option<f64>>>,
    /// `[target][position][lens row]` mean rank of the target in the logit lens.
    pub lens_rank_mean: Vec<Vec<Vec<Option<f64>>>>,
    pub lens_labels: Vec<String>,
}

/// Aggregate records (errors skipped; all must share the model's components).
pub(crate) fn summarize_decompose(records: &[DecomposeRecord]) -> Result<DecomposeSummary> {
    let ok: Vec<&DecomposeRecord> = records.iter().filter(|r| r.error.is_none()).collect();
    let first = ok.first().ok_or_else(|| Error::invalid("decomposition summary: no successful record"))?;
    if let Some(bad) = ok.iter().find(|r| r.components != first.components || r.position_labels != first.position_labels) {
        return Err(Error::invalid(format!("decomposition summary: problem {} has other components", bad.problem_id)));
    }
    let targets: Vec<String> = first.targets.iter().map(|t| t.name.clone()).collect();
    let (np, nc) = (first.position_labels.len(), first.components.len());
    let lens_labels: Vec<String> = first.logit_lens.first().map(|rows| rows.iter().map(|r| r.label.clone()).collect()).unwrap_or_default();
    let mean_of = |f: &dyn Fn(&DecomposeRecord) -> Option<f64>| finite_mean(ok.iter().filter_map(|r| f(r)));
    let dla_mean = (0..targets.len())
        .map(|t| (0..np).map(|p| (0..nc).map(|c| mean_of(&|r| r.dla.get(t)?.get(p)?.get(c).copied())).collect()).collect())
        .collect();
    let logit_mean = (0..targets.len()).map(|t| (0..np).map(|p| mean_of(&|r| r.logits.get(t)?.get(p).copied())).collect()).collect();
    let lens_rank_mean = (0..targets.len())
        .map(|t| {
            (0..np)
                .map(|p| {
                    (0..lens_labels.len())
                        .map(|row| mean_of(&|r| r.logit_lens.get(p)?.get(row)?.target_ranks.get(t).map(|&v| v as f64)))
                        .collect()
                })
                .collect()
        })
        .collect();
    Ok(DecomposeSummary {
        problems: ok.len(),
        targets,
        position_labels: first.position_labels.clone(),
        components: first.components.clone(),
        dla_mean,
        logit_mean,
        lens_rank_mean,
        lens_labels,
    })
}

/// The mean-DLA table of one target: one row per component (then the mean logit, their sum),
/// one column per position.
pub fn dla_table(summary: &DecomposeSummary, target: usize) -> Result<DataFrame> {
    let names = summary.components.iter().cloned().chain(std::iter::once("logit (sum)".to_owned()));
    let mut columns = vec![text_column("component", names)];
    for (p, label) in summary.position_labels.iter().enumerate() {
        let values = (0..summary.components.len())
            .map(|c| summary.dla_mean[target][p][c])
            .chain(std::iter::once(summary.logit_mean[target][p]));
        columns.push(float_column(label, values));
    }
    Ok(DataFrame::new_infer_height(columns)?)
}

/// The logit lens of one problem: one row per residual (`embed`, `0_post`, …), one column per
/// position, each cell the top token (quoted) and its probability.
pub fn lens_table(record: &DecomposeRecord) -> Result<DataFrame> {
    let rows_n = record.logit_lens.first().map_or(0, Vec::len);
    let mut columns = vec![text_column("residual", (0..rows_n).map(|r| record.logit_lens[0][r].label.clone()))];
    for (p, label) in record.position_labels.iter().enumerate() {
        let cells = (0..rows_n).map(|r| {
            record.logit_lens[p][r].top.first().map_or("-".to_owned(), |t| format!("{:?} {:.2}", t.text, t.logprob.exp()))
        });
        columns.push(text_column(label, cells));
    }
    Ok(DataFrame::new_infer_height(columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dla_sums_to_the_normed_logit_by_hand() {
        // x = c1 + c2; logit = W_U · (γ ⊙ x / s).
        let c1 = [1.0f32, -2.0, 0.5];
        let c2 = [0.5f32, 1.0, -1.5];
        let x: Vec<f32> = c1.iter().zip(&c2).map(|(a, b)| a + b).collect();
        let (w, g) = ([0.3f32, -0.7, 2.0], [1.5f32, 0.5, -1.0]);
        let s = rms_scale(&x, 1e-5);
        assert!((s - ((1.5f64.powi(2) + 1.0 + 1.0) / 3.0 + 1e-5).sqrt()).abs() < 1e-12);
        let dla = direct_logit_attribution(&[&c1, &c2], &w, &g, s);
        let logit: f64 = (0..3).map(|i| w[i] as f64 * g[i] as f64 * x[i] as f64 / s).sum();
        assert!((dla[0] + dla[1] - logit).abs() < 1e-12);
        assert!((dla[0] - (0.3 * 1.5 * 1.0 + 0.7 * 0.5 * 2.0 - 2.0 * 0.5) / s).abs() < 1e-6);
        assert_eq!(component_labels(2), ["embed", "0_attn_out", "0_mlp_out", "1_attn_out", "1_mlp_out"]);
    }
}
