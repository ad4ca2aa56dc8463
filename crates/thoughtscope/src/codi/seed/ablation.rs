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
//! in the gold answer's log-probability ([`crate::codi::latent::thought_loop::gold_logprob`]).
//! Output: a JSON list in upstream's schema (`token_ablation_results_*.json`), rewritten atomically
//! after every problem, with a `.meta.json` sidecar; a rerun skips finished problems and refuses a
//! file written with other settings ([`crate::codi::runner::step`]).
//!
//! The hook (`AblationHooks`) takes a set of target steps, so the compositional ablation of the
//! next steps (`crate::codi::next::compose`) runs this very hook on pairs and triplets.

use std::path::Path;

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::codi::latent::codi_model::CodiModel;
use crate::codi::latent::thought_loop::{
    decode_greedy_batch, gold_logprob, run_from_prompt, run_from_prompts, run_prompt, Decoded, LoopOptions, LoopState, Phase, PhaseHooks,
    PromptState, LATENT_STEPS,
};
use crate::codi::problems::dataset::Problem;
use crate::codi::runner::files::{read_records, JsonStyle};
use crate::codi::runner::step::{run_step, ProblemRecord, Step, StepOutcome};
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

/// The ablation experiment's hook, for one target step (`codi ablate`) or a set of them
/// (`codi compose`): on the baseline it captures the clean vectors at block `layer`; on an
/// ablated run it patches that block's output as [`Patch`] says.
pub(crate) struct AblationHooks {
    layer: usize,
    phase: Phase,
    capture: bool,
    /// Per step: input of block `layer` (HF hidden_states[layer]) and its output.
    clean_input: Vec<Tensor>,
    clean_output: Vec<Tensor>,
    patch: Patch,
}

/// What an ablated run does to block `layer`'s output.
pub(crate) enum Patch {
    None,
    /// Overwrite block `layer`'s output at every loop step with `vectors[step]` (the target
    /// steps' vectors zeroed), and with bug 2 the last prompt position with `vectors[0]`.
    Faithful { vectors: Vec<Tensor>, patch_prompt: bool },
    /// Zero block `layer`'s output at these loop steps.
    ZeroSteps(Vec<usize>),
}

impl Patch {
    /// The patch that ablates the steps in `targets` under `options`' mode, from the clean run's
    /// vectors.
    pub(crate) fn ablating(options: &AblationOptions, clean: &[Tensor], targets: &[usize]) -> Result<Patch> {
        Ok(match options.mode {
            AblationMode::Faithful => {
                let mut vectors = clean.to_vec();
                for &k in targets {
                    vectors[k] = vectors[k].zeros_like()?;
                }
                Patch::Faithful { vectors, patch_prompt: options.patch_prompt }
            }
            AblationMode::Corrected => Patch::ZeroSteps(targets.to_vec()),
        })
    }
}

impl AblationHooks {
    pub(crate) fn new(layer: usize, capture: bool, patch: Patch) -> Self {
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
        let post = *point == HookPoint::ResidPost(self.layer);
        if !post && *point != HookPoint::ResidPre(self.layer) {
            return false;
        }
        match (self.phase, &self.patch) {
            (Phase::Step(_), _) if self.capture => true,
            (Phase::Step(_), Patch::Faithful { .. }) => post,
            (Phase::Step(k), Patch::ZeroSteps(targets)) => post && targets.contains(&k),
            (Phase::Prompt, Patch::Faithful { patch_prompt: true, .. }) => post,
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
            (Patch::ZeroSteps(targets), Phase::Step(k)) if targets.contains(&k) => Ok(Some(value.zeros_like()?)),
            _ => Ok(None),
        }
    }
}

/// The un-ablated run of one problem, before decoding: its question pass (ablated runs whose
/// hook leaves the question alone continue from it), its EOT state, the gold answer's log-prob
/// when asked, and the clean vectors at block `layer` that the faithful hook writes back.
pub(crate) struct CleanRun {
    pub prompt: PromptState,
    pub state: LoopState,
    pub gold_logprob: Option<f64>,
    pub clean: Vec<Tensor>,
}

impl CleanRun {
    pub(crate) fn of(codi: &CodiModel, problem: &Problem, options: &AblationOptions) -> Result<CleanRun> {
        check_layer(codi, options)?;
        let loop_options = &options.loop_options;
        let mut hooks = AblationHooks::new(options.layer, true, Patch::None);
        let prompt = run_prompt(codi, &problem.question, loop_options, &mut hooks)?;
        let state = run_from_prompt(codi, prompt.clone(), loop_options, &mut hooks)?;
        let gold_logprob = gold_logprob_if(codi, problem, options, &state, &mut hooks)?;
        if hooks.clean_input.len() != LATENT_STEPS || hooks.clean_output.len() != LATENT_STEPS {
            return Err(Error::Other(format!(
                "captured {} / {} clean vectors at block {}, expected {LATENT_STEPS}",
                hooks.clean_input.len(),
                hooks.clean_output.len(),
                options.layer
            )));
        }
        let clean = if options.layer_off_by_one { hooks.clean_input } else { hooks.clean_output };
        Ok(CleanRun { prompt, state, gold_logprob, clean })
    }
}

/// The question passes that ablated runs continue from. The question pass is untouched unless
/// faithful bug 2 patches its last position with the step-0 vector, and then it depends only on
/// whether step 0 is ablated: at most two patched passes per problem, each computed once (the
/// same computation gives the same bits, so reusing it changes no number).
struct QuestionPasses {
    patched: [Option<PromptState>; 2],
}

impl QuestionPasses {
    fn new() -> Self {
        QuestionPasses { patched: [None, None] }
    }

    /// The question pass of the run ablating `targets`, whose hook is `hooks`.
    fn of_run(
        &mut self,
        codi: &CodiModel,
        problem: &Problem,
        options: &AblationOptions,
        clean: &CleanRun,
        targets: &[usize],
        hooks: &mut AblationHooks,
    ) -> Result<PromptState> {
        if options.mode != AblationMode::Faithful || !options.patch_prompt {
            return Ok(clean.prompt.clone());
        }
        let slot = &mut self.patched[usize::from(targets.contains(&0))];
        if slot.is_none() {
            *slot = Some(run_prompt(codi, &problem.question, &options.loop_options, hooks)?);
        }
        Ok(slot.clone().expect("filled above"))
    }
}

/// The runs ablating each of `target_sets`, up to EOT (one loop for all: [`run_from_prompts`]),
/// with their gold answer log-probs when the options ask for them.
pub(crate) fn ablated_runs(
    codi: &CodiModel,
    problem: &Problem,
    options: &AblationOptions,
    clean_run: &CleanRun,
    target_sets: &[Vec<usize>],
) -> Result<(Vec<LoopState>, Vec<Option<f64>>)> {
    let mut hooks: Vec<AblationHooks> = target_sets
        .iter()
        .map(|targets| Ok(AblationHooks::new(options.layer, false, Patch::ablating(options, &clean_run.clean, targets)?)))
        .collect::<Result<_>>()?;
    let mut question_passes = QuestionPasses::new();
    let prompts: Vec<PromptState> = target_sets
        .iter()
        .zip(hooks.iter_mut())
        .map(|(targets, hooks)| question_passes.of_run(codi, problem, options, clean_run, targets, hooks))
        .collect::<Result<_>>()?;
    let mut rows: Vec<&mut dyn PhaseHooks> = hooks.iter_mut().map(|h| h as &mut dyn PhaseHooks).collect();
    let states = run_from_prompts(codi, prompts, &options.loop_options, &mut rows)?;
    let logprobs = states
        .iter()
        .zip(hooks.iter_mut())
        .map(|(state, hooks)| gold_logprob_if(codi, problem, options, state, hooks))
        .collect::<Result<_>>()?;
    Ok((states, logprobs))
}

/// The gold answer's log-prob after a run, when the options ask for the continuous importance.
pub(crate) fn gold_logprob_if(
    codi: &CodiModel,
    problem: &Problem,
    options: &AblationOptions,
    state: &LoopState,
    hooks: &mut AblationHooks,
) -> Result<Option<f64>> {
    if options.continuous {
        Ok(Some(gold_logprob(codi, state, &problem.answer.to_string(), hooks)?))
    } else {
        Ok(None)
    }
}

/// The baseline's decoded answer and whether it is right.
pub(crate) fn baseline_result(decoded: Decoded, gold_logprob: Option<f64>, problem: &Problem, options: &LoopOptions) -> BaselineResult {
    BaselineResult {
        correct: options.parser.matches(decoded.predicted, problem.answer_f64()),
        output: decoded.text,
        predicted_answer: decoded.predicted.map(|a| a.to_json()).unwrap_or(serde_json::Value::Null),
        gold_logprob: gold_logprob.filter(|v| v.is_finite()),
    }
}

/// What one ablated run gave, against the baseline.
pub(crate) struct AblatedRun {
    pub output: String,
    pub predicted_answer: serde_json::Value,
    pub still_correct: bool,
    /// Binary importance (upstream's rule): the baseline is right and the ablated run is not.
    pub importance: u8,
    pub gold_logprob: Option<f64>,
    /// Baseline minus ablated gold log-prob.
    pub logprob_importance: Option<f64>,
}

impl AblatedRun {
    pub(crate) fn of(decoded: Decoded, gold_logprob: Option<f64>, baseline: &BaselineResult, problem: &Problem, options: &LoopOptions) -> Self {
        let still_correct = options.parser.matches(decoded.predicted, problem.answer_f64());
        let logprob_importance = match (baseline.gold_logprob, gold_logprob) {
            (Some(b), Some(a)) if a.is_finite() => Some(b - a),
            _ => None,
        };
        AblatedRun {
            output: decoded.text,
            predicted_answer: decoded.predicted.map(|a| a.to_json()).unwrap_or(serde_json::Value::Null),
            still_correct,
            importance: u8::from(baseline.correct && !still_correct),
            gold_logprob: gold_logprob.filter(|v| v.is_finite()),
            logprob_importance,
        }
    }
}

/// Run the baseline and the six ablations of one problem. The baseline goes through the loop
/// first (the faithful hook writes back its vectors), the six ablated runs then together, each row
/// with its own hook ([`run_from_prompts`]), and the seven are decoded together in one batch.
pub fn ablate_problem(codi: &CodiModel, problem: &Problem, options: &AblationOptions) -> Result<AblationRecord> {
    let loop_options = &options.loop_options;
    // Baseline: no intervention, clean vectors captured at block `layer` for every step.
    let clean_run = CleanRun::of(codi, problem, options)?;
    let baseline_logprob = clean_run.gold_logprob;
    let mut states = Vec::with_capacity(1 + LATENT_STEPS);
    states.push(clean_run.state.clone());

    // The six ablated runs, up to EOT, through the loop together.
    let targets: Vec<Vec<usize>> = (0..LATENT_STEPS).map(|target| vec![target]).collect();
    let (ablated, ablated_logprobs) = ablated_runs(codi, problem, options, &clean_run, &targets)?;
    states.extend(ablated);

    // Decoding has no intervention in either mode.
    let mut decoded = decode_greedy_batch(codi, states, loop_options)?.into_iter();
    let baseline = baseline_result(decoded.next().expect("one decoding per run"), baseline_logprob, problem, loop_options);
    let token_ablations: Vec<TokenAblation> = decoded
        .zip(ablated_logprobs)
        .enumerate()
        .map(|(target, (decoded, ablated_logprob))| {
            let run = AblatedRun::of(decoded, ablated_logprob, &baseline, problem, loop_options);
            TokenAblation {
                token_pos: target,
                ablated_output: run.output,
                predicted_answer: run.predicted_answer,
                still_correct: run.still_correct,
                importance: run.importance,
                gold_logprob: run.gold_logprob,
                logprob_importance: run.logprob_importance,
            }
        })
        .collect();
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

/// An error naming the ablation block when the model has no such block.
pub(crate) fn check_layer(codi: &CodiModel, options: &AblationOptions) -> Result<()> {
    let layers = codi.model.num_layers();
    if options.layer >= layers {
        return Err(Error::invalid(format!("ablation layer {} out of range: the model has {layers} blocks", options.layer)));
    }
    Ok(())
}

/// Summary of a finished [`run_ablation`]: the records, and how many were computed now and failed.
pub type AblationSummary = StepOutcome<AblationRecord>;

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

impl ProblemRecord for AblationRecord {
    fn problem_id(&self) -> &str {
        &self.problem_id
    }
    fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }
    fn failed(problem: &Problem, error: String) -> Self {
        AblationRecord {
            problem_id: problem.id.clone(),
            difficulty: problem.difficulty.clone(),
            expected_answer: problem.answer.clone(),
            baseline: None,
            token_ablations: vec![],
            importance_scores: vec![],
            num_critical_tokens: 0,
            error: Some(error),
        }
    }
}

/// `codi ablate`: run every problem not yet in `out`, writing `out` after each one (resumable,
/// merging shard parts: [`crate::codi::runner::step`]).
pub fn run_ablation(codi: &CodiModel, problems: &[Problem], options: &AblationOptions, out: &Path) -> Result<AblationSummary> {
    // Settings errors stop the run; only per-problem failures are recorded and skipped.
    check_layer(codi, options)?;
    let step = Step { name: "ablate", settings: serde_json::to_value(options)?, style: JsonStyle::Pretty };
    run_step(codi, &step, problems, out, |problem| ablate_problem(codi, problem, options))
}

/// Read an ablation results file (ours or upstream's; Python `NaN` tolerated).
pub fn read_ablation(path: &Path) -> Result<Vec<AblationRecord>> {
    read_records(path)
}
