//! Token ablation (CoT_Exploration `1_run_token_ablation.py`): per problem a baseline plus one run per loop step
//! ("token") k = 0..5 with an intervention on the residual stream at decoder block `layer`.
//!
//! Modes:
//! - [`AblationMode::Faithful`] reproduces CoT_Exploration's hook: clean vectors are captured from
//!   the un-hooked baseline at every loop step, the target's is zeroed, and during every loop step
//!   of the ablated run the output of block `layer` at the step's position is overwritten with the
//!   step's vector. Its two bugs are switches:
//!   - `layer_off_by_one` (default on, as upstream): the clean vectors are HF `hidden_states[layer]`,
//!     the *input* of block `layer`, so the block's update is deleted at the five non-target steps;
//!   - `patch_prompt` (default on, as `1_run_token_ablation.py`, the seed's step 2; off in the
//!     `_FULL` script that produced the published numbers): the last prompt position's block output
//!     is overwritten with the step-0 vector during the question pass.
//! - [`AblationMode::Corrected`] zeroes the output of block `layer` at the target step only.
//!
//! Importance is binary (`baseline correct and ablated wrong`); the continuous variant is the drop
//! in the gold answer's log-probability ([`super::latent::gold_logprob`]).
//! Output: a JSON list in upstream's schema (`token_ablation_results_*.json`), rewritten atomically
//! after every problem, with a `.meta.json` sidecar; a rerun skips finished problems and refuses a
//! file written with other settings.

use std::path::{Path, PathBuf};

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use super::dataset::{write_json_atomic, Problem};
use super::latent::{decode_greedy_batch, gold_logprob, run_from_prompt, run_prompt, LoopOptions, LoopState, Phase, PhaseHooks, LATENT_STEPS};
use super::model::CodiModel;
use super::progress::RunMeta;
use crate::model::{HookPoint, Hooks};
use crate::{Error, Result};

/// How the ablation intervenes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AblationMode {
    /// CoT_Exploration's hook semantics (bugs selectable).
    Faithful,
    /// Zero the residual after block `layer` at the target position only.
    Corrected,
}
crate::model::named_values!(AblationMode, "ablation mode", { Faithful => "faithful", Corrected => "corrected" });

/// Settings of an ablation run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AblationOptions {
    pub loop_options: LoopOptions,
    pub mode: AblationMode,
    /// 0-based decoder block (upstream `'middle'` = 8).
    pub layer: usize,
    /// Faithful bug 1: clean vectors from the input of block `layer` (HF `hidden_states[layer]`).
    pub layer_off_by_one: bool,
    /// Faithful bug 2: also overwrite the last prompt position during the question pass.
    pub patch_prompt: bool,
    /// Also compute the gold answer's log-prob per run (continuous importance).
    pub continuous: bool,
}

impl AblationOptions {
    pub fn new(loop_options: LoopOptions, mode: AblationMode) -> Self {
        let patch_prompt = mode == AblationMode::Faithful;
        AblationOptions { loop_options, mode, layer: 8, layer_off_by_one: true, patch_prompt, continuous: true }
    }
}

/// The un-ablated run of one problem.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaselineResult {
    pub output: String,
    pub predicted_answer: serde_json::Value,
    pub correct: bool,
    /// log P(gold answer | run), when computed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gold_logprob: Option<f64>,
}

/// One ablated run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenAblation {
    pub token_pos: usize,
    pub ablated_output: String,
    pub predicted_answer: serde_json::Value,
    pub still_correct: bool,
    pub importance: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gold_logprob: Option<f64>,
    /// Baseline minus ablated gold log-prob (positive: the ablation hurt the gold answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprob_importance: Option<f64>,
}

/// One problem's record, upstream schema (`error` only on failure).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AblationRecord {
    pub problem_id: String,
    pub difficulty: String,
    pub expected_answer: serde_json::Number,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<BaselineResult>,
    #[serde(default)]
    pub token_ablations: Vec<TokenAblation>,
    #[serde(default)]
    pub importance_scores: Vec<u8>,
    #[serde(default)]
    pub num_critical_tokens: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Hooks of one ablation-experiment run: capture clean vectors (baseline) or patch (ablated).
struct AblationHooks {
    layer: usize,
    phase: Phase,
    capture: bool,
    /// Per step: input of block `layer` (HF hidden_states[layer]) and its output.
    clean_input: Vec<Tensor>,
    clean_output: Vec<Tensor>,
    patch: Patch,
}

enum Patch {
    None,
    /// Overwrite block `layer`'s output at every loop step with `vectors[step]`.
    Faithful { vectors: Vec<Tensor>, patch_prompt: bool },
    /// Zero block `layer`'s output at one loop step.
    ZeroStep(usize),
}

impl AblationHooks {
    fn new(layer: usize, capture: bool, patch: Patch) -> Self {
        AblationHooks { layer, phase: Phase::Prompt, capture, clean_input: vec![], clean_output: vec![], patch }
    }
}

impl PhaseHooks for AblationHooks {
    fn enter(&mut self, phase: Phase) {
        self.phase = phase;
    }
}

impl Hooks for AblationHooks {
    fn wants(&self, point: &HookPoint) -> bool {
        let at_layer = *point == HookPoint::ResidPre(self.layer) || *point == HookPoint::ResidPost(self.layer);
        if !at_layer {
            return false;
        }
        match (self.phase, &self.patch) {
            (Phase::Step(_), _) if self.capture => true,
            (Phase::Step(_), Patch::Faithful { .. }) => *point == HookPoint::ResidPost(self.layer),
            (Phase::Step(k), Patch::ZeroStep(t)) => k == *t && *point == HookPoint::ResidPost(self.layer),
            (Phase::Prompt, Patch::Faithful { patch_prompt: true, .. }) => *point == HookPoint::ResidPost(self.layer),
            _ => false,
        }
    }

    fn on(&mut self, point: &HookPoint, value: &Tensor) -> crate::model::Result<Option<Tensor>> {
        if self.capture {
            if let Phase::Step(_) = self.phase {
                if *point == HookPoint::ResidPre(self.layer) {
                    self.clean_input.push(value.clone());
                } else {
                    self.clean_output.push(value.clone());
                }
            }
        }
        if *point != HookPoint::ResidPost(self.layer) {
            return Ok(None);
        }
        match (&self.patch, self.phase) {
            (Patch::Faithful { vectors, .. }, Phase::Step(k)) => Ok(Some(vectors[k].reshape(value.shape())?)),
            (Patch::Faithful { vectors, patch_prompt: true }, Phase::Prompt) => {
                // Overwrite only the last position of the question pass.
                let len = value.dim(1)?;
                let last = vectors[0].reshape((1, 1, value.dim(2)?))?;
                let replaced =
                    if len == 1 { last } else { Tensor::cat(&[&value.narrow(1, 0, len - 1)?, &last], 1)? };
                Ok(Some(replaced))
            }
            (Patch::ZeroStep(t), Phase::Step(k)) if k == *t => Ok(Some(value.zeros_like()?)),
            _ => Ok(None),
        }
    }
}

/// Run the baseline and the six ablations of one problem. The seven runs go through the loop one
/// by one (their interventions differ) and are then decoded together in one batch.
pub fn ablate_problem(codi: &CodiModel, problem: &Problem, options: &AblationOptions) -> Result<AblationRecord> {
    check_layer(codi, options)?;
    let loop_options = &options.loop_options;
    let gold = problem.answer_f64();
    let gold_text = problem.answer.to_string();
    let gold_logprob_of = |state: &LoopState, hooks: &mut AblationHooks| -> Result<Option<f64>> {
        if options.continuous {
            Ok(Some(gold_logprob(codi, state, &gold_text, hooks)?))
        } else {
            Ok(None)
        }
    };

    // Baseline: no intervention, clean vectors captured at block `layer` for every step.
    let mut hooks = AblationHooks::new(options.layer, true, Patch::None);
    let prompt = run_prompt(codi, &problem.question, loop_options, &mut hooks)?;
    let state = run_from_prompt(codi, prompt.clone(), loop_options, &mut hooks)?;
    let baseline_logprob = gold_logprob_of(&state, &mut hooks)?;
    if hooks.clean_input.len() != LATENT_STEPS || hooks.clean_output.len() != LATENT_STEPS {
        return Err(Error::Other(format!(
            "captured {} / {} clean vectors at block {}, expected {LATENT_STEPS}",
            hooks.clean_input.len(),
            hooks.clean_output.len(),
            options.layer
        )));
    }
    let clean = if options.layer_off_by_one { hooks.clean_input } else { hooks.clean_output };
    let mut states = Vec::with_capacity(1 + LATENT_STEPS);
    states.push(state);

    // The six ablated runs, up to EOT.
    let mut ablated_logprobs = Vec::with_capacity(LATENT_STEPS);
    for target in 0..LATENT_STEPS {
        let patch = match options.mode {
            AblationMode::Faithful => {
                let mut vectors = clean.clone();
                vectors[target] = vectors[target].zeros_like()?;
                Patch::Faithful { vectors, patch_prompt: options.patch_prompt }
            }
            AblationMode::Corrected => Patch::ZeroStep(target),
        };
        let mut hooks = AblationHooks::new(options.layer, false, patch);
        // The question pass is untouched unless bug 2 patches it, so it is computed once.
        let prompt = if options.mode == AblationMode::Faithful && options.patch_prompt {
            run_prompt(codi, &problem.question, loop_options, &mut hooks)?
        } else {
            prompt.clone()
        };
        let state = run_from_prompt(codi, prompt, loop_options, &mut hooks)?;
        ablated_logprobs.push(gold_logprob_of(&state, &mut hooks)?);
        states.push(state);
    }

    // Decoding has no intervention in either mode.
    let mut decoded = decode_greedy_batch(codi, states, loop_options)?.into_iter();
    let baseline_decoded = decoded.next().expect("one decoding per run");
    let baseline_correct = loop_options.parser.matches(baseline_decoded.predicted, gold);
    let baseline = BaselineResult {
        output: baseline_decoded.text,
        predicted_answer: baseline_decoded.predicted.map(|a| a.to_json()).unwrap_or(serde_json::Value::Null),
        correct: baseline_correct,
        gold_logprob: baseline_logprob.filter(|v| v.is_finite()),
    };
    let mut token_ablations = Vec::with_capacity(LATENT_STEPS);
    for (target, (decoded, ablated_logprob)) in decoded.zip(ablated_logprobs).enumerate() {
        let still_correct = loop_options.parser.matches(decoded.predicted, gold);
        let importance = u8::from(baseline_correct && !still_correct);
        let logprob_importance = match (baseline.gold_logprob, ablated_logprob) {
            (Some(b), Some(a)) if a.is_finite() => Some(b - a),
            _ => None,
        };
        token_ablations.push(TokenAblation {
            token_pos: target,
            ablated_output: decoded.text,
            predicted_answer: decoded.predicted.map(|a| a.to_json()).unwrap_or(serde_json::Value::Null),
            still_correct,
            importance,
            gold_logprob: ablated_logprob.filter(|v| v.is_finite()),
            logprob_importance,
        });
    }
    let importance_scores: Vec<u8> = token_ablations.iter().map(|t| t.importance).collect();
    Ok(AblationRecord {
        problem_id: problem.id.clone(),
        difficulty: problem.difficulty.clone(),
        expected_answer: problem.answer.clone(),
        num_critical_tokens: importance_scores.iter().map(|&i| i as usize).sum(),
        importance_scores,
        baseline: Some(baseline),
        token_ablations,
        error: None,
    })
}

fn check_layer(codi: &CodiModel, options: &AblationOptions) -> Result<()> {
    let layers = codi.model.num_layers();
    if options.layer >= layers {
        return Err(Error::invalid(format!("ablation layer {} out of range: the model has {layers} blocks", options.layer)));
    }
    Ok(())
}

/// Summary of a finished [`run_ablation`].
#[derive(Debug, Clone, Default)]
pub struct AblationSummary {
    pub records: Vec<AblationRecord>,
    /// Problems computed in this call (the others were already in the output file).
    pub computed: usize,
    pub failed: usize,
}

impl AblationSummary {
    /// Upstream's console summary: per token, how often it was critical among baseline-correct
    /// problems.
    pub fn critical_counts(&self) -> (usize, [usize; LATENT_STEPS]) {
        let mut counts = [0usize; LATENT_STEPS];
        let mut correct = 0;
        for record in self.records.iter().filter(|r| r.error.is_none()) {
            if record.baseline.as_ref().is_some_and(|b| b.correct) {
                correct += 1;
                for t in &record.token_ablations {
                    counts[t.token_pos] += t.importance as usize;
                }
            }
        }
        (correct, counts)
    }
}

/// Path of the settings sidecar of an output file (`x.json` → `x.meta.json`).
pub fn meta_path(out: &Path) -> PathBuf {
    let stem = out.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    out.with_file_name(format!("{stem}.meta.json"))
}

/// `codi ablate`: run every problem not yet in `out`, writing `out` after each one.
pub fn run_ablation(codi: &CodiModel, problems: &[Problem], options: &AblationOptions, out: &Path) -> Result<AblationSummary> {
    // Settings errors stop the run; only per-problem failures are recorded and skipped.
    check_layer(codi, options)?;
    let meta = RunMeta::new(codi, "ablate", serde_json::to_value(options)?);
    meta.check_or_write(&meta_path(out), out)?;
    // Taken after the settings check, so a refused run leaves the folder as it was.
    let lock = super::progress::lock_results(out, "ablate")?;
    let mut done: Vec<AblationRecord> = if out.is_file() { read_ablation(out)? } else { Vec::new() };
    // Records with errors are redone; finished ones are kept.
    done.retain(|r| r.error.is_none());
    // The shares of a sharded run (Slurm array tasks) beside `out`: this run merges them.
    let parts = super::progress::read_shard_parts(out, &meta, read_ablation)?;
    for record in parts.into_iter().filter(|r| r.error.is_none()) {
        if !done.iter().any(|d| d.problem_id == record.problem_id) {
            done.push(record);
        }
    }

    let bar = crate::progress::progress(problems.len() as u64, "ablate");
    let mut computed = 0;
    let mut failed = 0;
    let mut records = Vec::with_capacity(problems.len());
    for problem in problems {
        if let Some(existing) = done.iter().position(|r| r.problem_id == problem.id) {
            records.push(done.swap_remove(existing));
            bar.inc(1);
            continue;
        }
        bar.set_message(problem.id.clone());
        let record = match ablate_problem(codi, problem, options) {
            Ok(record) => record,
            Err(e) => {
                failed += 1;
                bar.println(format!("warning: ablation of {} failed: {e}", problem.id));
                AblationRecord {
                    problem_id: problem.id.clone(),
                    difficulty: problem.difficulty.clone(),
                    expected_answer: problem.answer.clone(),
                    baseline: None,
                    token_ablations: vec![],
                    importance_scores: vec![],
                    num_critical_tokens: 0,
                    error: Some(e.to_string()),
                }
            }
        };
        records.push(record);
        computed += 1;
        // Keep also results of problems outside this sample that were in the file.
        let mut all = records.clone();
        all.extend(done.iter().cloned());
        write_json_atomic(out, &all)?;
        bar.inc(1);
    }
    bar.finish();
    records.extend(done);
    write_json_atomic(out, &records)?;
    lock.finish()?;
    Ok(AblationSummary { records, computed, failed })
}

/// Read an ablation results file (ours or upstream's; Python `NaN` tolerated).
pub fn read_ablation(path: &Path) -> Result<Vec<AblationRecord>> {
    super::progress::read_json_relaxed(path)
}
