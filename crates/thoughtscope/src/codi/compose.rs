//! Compositional ablation (the seed's next step "test token pairs/triplets"): knock out
//! every pair and every triplet of continuous-thought tokens — C(6,2) = 15 and C(6,3) = 20 sets
//! per problem — and measure how far the set's effect departs from the sum of its tokens' effects.
//!
//! **Same hook as the single-token ablation** ([`super::ablate`]), generalised
//! from one target step to a set `S` of steps, in both modes and with the same options
//! ([`AblationOptions`]):
//! - faithful: at every loop step, block `layer`'s output is overwritten with the clean run's
//!   vector (the block's *input* with upstream's off-by-one), and with zeros at every step in `S`;
//!   bug 2 (`patch_prompt`) also overwrites the last prompt position with step 0's vector (zeros
//!   when `0 ∈ S`);
//! - corrected: block `layer`'s output is zeroed at the steps in `S` only.
//!
//! The singles are recomputed in the same run (6 runs), so a set and its members always share one
//! baseline and one hook; for a singleton the result equals `codi ablate`'s. Per problem: 1
//! baseline + the empty set + 6 + 15 + 20 = 43 loop runs, decoded together in one batch
//! ([`decode_greedy_batch`]).
//!
//! **Definitions** (`I` = importance; `k ∈ S` the tokens of the set):
//! - binary importance, as upstream: `I(S) = 1` if the baseline is correct and the answer with `S`
//!   ablated is wrong, else 0 (always 0 when the baseline is wrong);
//! - continuous importance: `I_lp(S) = log P(gold | baseline) − log P(gold | S ablated)`, the drop
//!   in the gold answer's log-probability ([`super::latent::gold_logprob`]);
//! - interaction: `I(S) − Σ_{k∈S} I({k})`, for either importance. 0 means the tokens act
//!   additively; positive means the set matters more than its members together (redundancy: each
//!   token can stand in for the other, so only removing both hurts), negative means less
//!   (e.g. two tokens each sufficient to break the answer). The binary interaction of a pair lies
//!   in −2..1, of a triplet in −3..1;
//! - for triplets also the third-order (Möbius / Harsanyi) term
//!   `I(ijk) − I(ij) − I(ik) − I(jk) + I(i) + I(j) + I(k)`: what the triplet adds beyond its
//!   singles and its pairs (for a pair the same construction is its interaction).
//!
//! **Measured against the empty set.** Under the faithful hook (upstream's off-by-one writes the
//! block's *input* back as its output), ablating nothing already changes the run: `I(∅)` is not
//! 0, and `I(S) − Σ I({k})` carries `−(|S|−1)·I(∅)`. Every problem therefore also runs the empty
//! set (`empty_ablation`; under the corrected hook it equals the baseline), and each set gets its
//! values against it (`*_vs_empty`): `I(S) − I(∅)`, the interaction
//! `I(S) − Σ I({k}) + (|S|−1)·I(∅)` (the Möbius term of a pair with `v(∅) = I(∅)`), and for
//! triplets the third-order term minus `I(∅)`. The seed-style columns stay as they were; the
//! table adds `I(∅)`, these values and the standard errors of the interactions.
//!
//! Output: `results/compositional_ablation_results_<tag>.json`, one record per problem in the
//! style of `token_ablation_results_*.json` (baseline, then `single_ablations`, `pair_ablations`,
//! `triplet_ablations`, each with the set's `tokens`); a table of means over problems
//! (`compositional_table_<tag>.{csv,md}`) and two figures ([`super::next_figures`]).

use std::path::Path;

use candle_core::Tensor;
use polars::prelude::{Column, DataFrame};
use serde::{Deserialize, Serialize};

use super::ablate::{AblationMode, AblationOptions, BaselineResult};
use super::analyze::ImportanceKind;
use super::dataset::{write_json_atomic, Problem};
use super::latent::{decode_greedy_batch, gold_logprob, run_from_prompt, run_prompt, LoopState, Phase, PhaseHooks, PromptState, LATENT_STEPS};
use super::model::CodiModel;
use super::next_figures;
use super::next_steps::{self, count_column, finite_mean, finite_sem, float_column, text_column, ProblemRecord, StepLayout};
use crate::model::{HookPoint, Hooks};
use crate::{Error, Result};

/// Results file stem (`results/<stem>_<tag>.json`).
pub const RESULTS_STEM: &str = "compositional_ablation_results";
/// Table stem (`results/<stem>_<tag>.{csv,md}`).
pub const TABLE_STEM: &str = "compositional_table";

/// Every `size`-subset of the six tokens, in lexicographic order (15 pairs, 20 triplets).
pub fn token_sets(size: usize) -> Vec<Vec<usize>> {
    fn extend(start: usize, size: usize, current: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
        if current.len() == size {
            out.push(current.clone());
            return;
        }
        for k in start..LATENT_STEPS {
            current.push(k);
            extend(k + 1, size, current, out);
            current.pop();
        }
    }
    let mut out = Vec::new();
    extend(0, size, &mut Vec::new(), &mut out);
    out
}

/// `T0+T2+T5`.
pub fn set_label(tokens: &[usize]) -> String {
    tokens.iter().map(|k| format!("T{k}")).collect::<Vec<_>>().join("+")
}

/// One ablated set of one problem.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetAblation {
    /// The ablated tokens (loop steps), ascending.
    pub tokens: Vec<usize>,
    pub ablated_output: String,
    pub predicted_answer: serde_json::Value,
    pub still_correct: bool,
    /// Binary importance (upstream rule).
    pub importance: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gold_logprob: Option<f64>,
    /// Baseline minus ablated gold log-prob.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprob_importance: Option<f64>,
    /// `importance − Σ singles` (pairs and triplets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interaction: Option<i32>,
    /// `logprob_importance − Σ singles` (pairs and triplets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprob_interaction: Option<f64>,
    /// Triplets: `I(ijk) − ΣI(pairs) + ΣI(singles)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub third_order_interaction: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprob_third_order_interaction: Option<f64>,
    /// `importance − I(∅)`: the set's effect beyond what ablating nothing does under the hook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub importance_vs_empty: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprob_importance_vs_empty: Option<f64>,
    /// `interaction + (|S|−1)·I(∅)`: the interaction of the effects measured against `I(∅)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interaction_vs_empty: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprob_interaction_vs_empty: Option<f64>,
    /// Triplets: `third_order_interaction − I(∅)` (the Möbius term with `v(∅) = I(∅)`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub third_order_vs_empty: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprob_third_order_vs_empty: Option<f64>,
}

/// One problem's record (`error` only on failure).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComposeRecord {
    pub problem_id: String,
    pub difficulty: String,
    pub expected_answer: serde_json::Number,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<BaselineResult>,
    #[serde(default)]
    pub single_ablations: Vec<SetAblation>,
    /// The run with no token ablated but the hook in place (`tokens` empty): `I(∅)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_ablation: Option<SetAblation>,
    #[serde(default)]
    pub pair_ablations: Vec<SetAblation>,
    #[serde(default)]
    pub triplet_ablations: Vec<SetAblation>,
    /// Binary importance per pair / triplet, in [`token_sets`] order.
    #[serde(default)]
    pub pair_importance_scores: Vec<u8>,
    #[serde(default)]
    pub triplet_importance_scores: Vec<u8>,
    #[serde(default)]
    pub num_critical_pairs: usize,
    #[serde(default)]
    pub num_critical_triplets: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ComposeRecord {
    /// Every ablated set: singles, pairs, triplets.
    pub fn sets(&self) -> impl Iterator<Item = &SetAblation> {
        self.single_ablations.iter().chain(&self.pair_ablations).chain(&self.triplet_ablations)
    }
    /// The ablation of exactly `tokens` (ascending).
    pub fn set(&self, tokens: &[usize]) -> Option<&SetAblation> {
        self.sets().find(|s| s.tokens == tokens)
    }
}

impl ProblemRecord for ComposeRecord {
    fn problem_id(&self) -> &str {
        &self.problem_id
    }
    fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }
    fn failed(problem: &Problem, error: String) -> Self {
        ComposeRecord {
            problem_id: problem.id.clone(),
            difficulty: problem.difficulty.clone(),
            expected_answer: problem.answer.clone(),
            baseline: None,
            single_ablations: vec![],
            empty_ablation: None,
            pair_ablations: vec![],
            triplet_ablations: vec![],
            pair_importance_scores: vec![],
            triplet_importance_scores: vec![],
            num_critical_pairs: 0,
            num_critical_triplets: 0,
            error: Some(error),
        }
    }
}

/// The single-token ablation hook of [`super::ablate`] for a set of target steps.
struct SetAblationHooks {
    layer: usize,
    phase: Phase,
    capture: bool,
    /// Per step: input of block `layer` (HF hidden_states[layer]) and its output.
    clean_input: Vec<Tensor>,
    clean_output: Vec<Tensor>,
    patch: SetPatch,
}

enum SetPatch {
    None,
    /// Overwrite block `layer`'s output at every loop step with `vectors[step]`.
    Faithful { vectors: Vec<Tensor>, patch_prompt: bool },
    /// Zero block `layer`'s output at these loop steps.
    ZeroSteps(Vec<usize>),
}

impl SetAblationHooks {
    fn new(layer: usize, capture: bool, patch: SetPatch) -> Self {
        SetAblationHooks { layer, phase: Phase::Prompt, capture, clean_input: vec![], clean_output: vec![], patch }
    }
}

impl PhaseHooks for SetAblationHooks {
    fn enter(&mut self, phase: Phase) {
        self.phase = phase;
    }
}

impl Hooks for SetAblationHooks {
    fn wants(&self, point: &HookPoint) -> bool {
        let post = *point == HookPoint::ResidPost(self.layer);
        if !post && *point != HookPoint::ResidPre(self.layer) {
            return false;
        }
        match (self.phase, &self.patch) {
            (Phase::Step(_), _) if self.capture => true,
            (Phase::Step(_), SetPatch::Faithful { .. }) => post,
            (Phase::Step(k), SetPatch::ZeroSteps(set)) => post && set.contains(&k),
            (Phase::Prompt, SetPatch::Faithful { patch_prompt: true, .. }) => post,
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
            (SetPatch::Faithful { vectors, .. }, Phase::Step(k)) => Ok(Some(vectors[k].reshape(value.shape())?)),
            (SetPatch::Faithful { vectors, patch_prompt: true }, Phase::Prompt) => {
                // Only the last position of the question pass.
                let len = value.dim(1)?;
                let last = vectors[0].reshape((1, 1, value.dim(2)?))?;
                let replaced =
                    if len == 1 { last } else { Tensor::cat(&[&value.narrow(1, 0, len - 1)?, &last], 1)? };
                Ok(Some(replaced))
            }
            (SetPatch::ZeroSteps(set), Phase::Step(k)) if set.contains(&k) => Ok(Some(value.zeros_like()?)),
            _ => Ok(None),
        }
    }
}

fn check_layer(codi: &CodiModel, options: &AblationOptions) -> Result<()> {
    let layers = codi.model.num_layers();
    if options.layer >= layers {
        return Err(Error::invalid(format!("ablation layer {} out of range: the model has {layers} blocks", options.layer)));
    }
    Ok(())
}

/// Baseline, the six singles, the 15 pairs and the 20 triplets of one problem: every run through
/// the loop with its hook, then all 42 decoded in one batch.
pub fn compose_problem(codi: &CodiModel, problem: &Problem, options: &AblationOptions) -> Result<ComposeRecord> {
    check_layer(codi, options)?;
    let loop_options = &options.loop_options;
    let gold = problem.answer_f64();
    let gold_text = problem.answer.to_string();
    let logprob_of = |state: &LoopState, hooks: &mut SetAblationHooks| -> Result<Option<f64>> {
        if options.continuous {
            Ok(Some(gold_logprob(codi, state, &gold_text, hooks)?))
        } else {
            Ok(None)
        }
    };

    // Baseline, capturing the clean vectors at block `layer`.
    let mut hooks = SetAblationHooks::new(options.layer, true, SetPatch::None);
    let prompt = run_prompt(codi, &problem.question, loop_options, &mut hooks)?;
    let state = run_from_prompt(codi, prompt.clone(), loop_options, &mut hooks)?;
    let baseline_logprob = logprob_of(&state, &mut hooks)?;
    if hooks.clean_input.len() != LATENT_STEPS || hooks.clean_output.len() != LATENT_STEPS {
        return Err(Error::Other(format!(
            "captured {} / {} clean vectors at block {}, expected {LATENT_STEPS}",
            hooks.clean_input.len(),
            hooks.clean_output.len(),
            options.layer
        )));
    }
    let clean = if options.layer_off_by_one { hooks.clean_input } else { hooks.clean_output };

    // The empty set first: the hook alone, what every other set is measured against.
    let sets: Vec<Vec<usize>> = std::iter::once(Vec::new()).chain((1..=3).flat_map(token_sets)).collect();
    let mut states = Vec::with_capacity(1 + sets.len());
    states.push(state);
    let mut logprobs = Vec::with_capacity(sets.len());
    // Faithful bug 2 changes the question pass, depending only on whether step 0 is ablated.
    let mut patched_prompts: [Option<PromptState>; 2] = [None, None];
    for set in &sets {
        let patch = match options.mode {
            AblationMode::Faithful => {
                let mut vectors = clean.clone();
                for &k in set {
                    vectors[k] = vectors[k].zeros_like()?;
                }
                SetPatch::Faithful { vectors, patch_prompt: options.patch_prompt }
            }
            AblationMode::Corrected => SetPatch::ZeroSteps(set.clone()),
        };
        let mut hooks = SetAblationHooks::new(options.layer, false, patch);
        let run_prompt_state = if options.mode == AblationMode::Faithful && options.patch_prompt {
            let slot = usize::from(set.contains(&0));
            if patched_prompts[slot].is_none() {
                patched_prompts[slot] = Some(run_prompt(codi, &problem.question, loop_options, &mut hooks)?);
            }
            patched_prompts[slot].clone().expect("filled above")
        } else {
            prompt.clone()
        };
        let state = run_from_prompt(codi, run_prompt_state, loop_options, &mut hooks)?;
        logprobs.push(logprob_of(&state, &mut hooks)?);
        states.push(state);
    }

    let mut decoded = decode_greedy_batch(codi, states, loop_options)?.into_iter();
    let baseline_decoded = decoded.next().expect("one decoding per run");
    let baseline_correct = loop_options.parser.matches(baseline_decoded.predicted, gold);
    let baseline = BaselineResult {
        output: baseline_decoded.text,
        predicted_answer: baseline_decoded.predicted.map(|a| a.to_json()).unwrap_or(serde_json::Value::Null),
        correct: baseline_correct,
        gold_logprob: baseline_logprob.filter(|v| v.is_finite()),
    };
    let mut ablations: Vec<SetAblation> = sets
        .into_iter()
        .zip(decoded.zip(logprobs))
        .map(|(tokens, (decoded, ablated_logprob))| {
            let still_correct = loop_options.parser.matches(decoded.predicted, gold);
            let logprob_importance = match (baseline.gold_logprob, ablated_logprob) {
                (Some(b), Some(a)) if a.is_finite() => Some(b - a),
                _ => None,
            };
            SetAblation {
                tokens,
                ablated_output: decoded.text,
                predicted_answer: decoded.predicted.map(|a| a.to_json()).unwrap_or(serde_json::Value::Null),
                still_correct,
                importance: u8::from(baseline_correct && !still_correct),
                gold_logprob: ablated_logprob.filter(|v| v.is_finite()),
                logprob_importance,
                interaction: None,
                logprob_interaction: None,
                third_order_interaction: None,
                logprob_third_order_interaction: None,
                importance_vs_empty: None,
                logprob_importance_vs_empty: None,
                interaction_vs_empty: None,
                logprob_interaction_vs_empty: None,
                third_order_vs_empty: None,
                logprob_third_order_vs_empty: None,
            }
        })
        .collect();
    let empty = ablations.remove(0);
    fill_interactions(&mut ablations);
    fill_against_empty(&mut ablations, &empty);
    let triplet_ablations = ablations.split_off(LATENT_STEPS + 15);
    let pair_ablations = ablations.split_off(LATENT_STEPS);
    let pair_importance_scores: Vec<u8> = pair_ablations.iter().map(|s| s.importance).collect();
    let triplet_importance_scores: Vec<u8> = triplet_ablations.iter().map(|s| s.importance).collect();
    Ok(ComposeRecord {
        problem_id: problem.id.clone(),
        difficulty: problem.difficulty.clone(),
        expected_answer: problem.answer.clone(),
        baseline: Some(baseline),
        single_ablations: ablations,
        empty_ablation: Some(empty),
        num_critical_pairs: pair_importance_scores.iter().map(|&i| i as usize).sum(),
        num_critical_triplets: triplet_importance_scores.iter().map(|&i| i as usize).sum(),
        pair_importance_scores,
        triplet_importance_scores,
        pair_ablations,
        triplet_ablations,
        error: None,
    })
}

/// Interactions of every pair and triplet from the importances of the sets (singles, pairs and
/// triplets all present in `sets`).
pub fn fill_interactions(sets: &mut [SetAblation]) {
    let find = |sets: &[SetAblation], tokens: &[usize]| -> Option<(i32, Option<f64>)> {
        sets.iter().find(|s| s.tokens == tokens).map(|s| (s.importance as i32, s.logprob_importance))
    };
    // Σ over subsets of the given size: binary sum and log-prob sum (None if any is missing).
    let sum_over = |sets: &[SetAblation], subsets: Vec<Vec<usize>>| -> Option<(i32, Option<f64>)> {
        let mut binary = 0;
        let mut logprob = Some(0.0);
        for subset in subsets {
            let (b, l) = find(sets, &subset)?;
            binary += b;
            logprob = logprob.zip(l).map(|(a, b)| a + b);
        }
        Some((binary, logprob))
    };
    let subsets = |tokens: &[usize], size: usize| -> Vec<Vec<usize>> {
        token_sets(size).into_iter().filter(|s| s.iter().all(|k| tokens.contains(k))).collect()
    };
    let snapshot = sets.to_vec();
    for set in sets.iter_mut().filter(|s| s.tokens.len() >= 2) {
        let own = (set.importance as i32, set.logprob_importance);
        if let Some((singles, singles_lp)) = sum_over(&snapshot, subsets(&set.tokens, 1)) {
            set.interaction = Some(own.0 - singles);
            set.logprob_interaction = own.1.zip(singles_lp).map(|(a, b)| a - b);
            if set.tokens.len() == 3 {
                if let Some((pairs, pairs_lp)) = sum_over(&snapshot, subsets(&set.tokens, 2)) {
                    set.third_order_interaction = Some(own.0 - pairs + singles);
                    set.logprob_third_order_interaction =
                        own.1.zip(pairs_lp).zip(singles_lp).map(|((a, p), s)| a - p + s);
                }
            }
        }
    }
}

/// Each set's values against the empty set's (see the module doc), after [`fill_interactions`].
pub fn fill_against_empty(sets: &mut [SetAblation], empty: &SetAblation) {
    let (i0, lp0) = (empty.importance as i32, empty.logprob_importance);
    for set in sets.iter_mut() {
        let others = set.tokens.len() as i32 - 1;
        set.importance_vs_empty = Some(set.importance as i32 - i0);
        set.logprob_importance_vs_empty = set.logprob_importance.zip(lp0).map(|(a, e)| a - e);
        set.interaction_vs_empty = set.interaction.map(|v| v + others * i0);
        set.logprob_interaction_vs_empty = set.logprob_interaction.zip(lp0).map(|(v, e)| v + others as f64 * e);
        set.third_order_vs_empty = set.third_order_interaction.map(|v| v - i0);
        set.logprob_third_order_vs_empty = set.logprob_third_order_interaction.zip(lp0).map(|(v, e)| v - e);
    }
}

/// `codi compose`: every problem not yet in `out`, `out` rewritten after each (resumable).
pub fn run_compose(codi: &CodiModel, problems: &[Problem], options: &AblationOptions, out: &Path) -> Result<Vec<ComposeRecord>> {
    check_layer(codi, options)?;
    let settings = serde_json::to_value(options)?;
    next_steps::run_resumable(codi, "compose", settings, problems, out, next_steps::JsonStyle::Pretty, |problem| {
        compose_problem(codi, problem, options)
    })
}

/// Read a compositional results file.
pub fn read_compose(path: &Path) -> Result<Vec<ComposeRecord>> {
    next_steps::read_records(path)
}

/// One row of the table: a set's statistics over the included problems.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetSummary {
    pub tokens: Vec<usize>,
    pub label: String,
    /// Problems included (no error; baseline correct unless `all_baselines`).
    pub problems: usize,
    pub importance_mean: Option<f64>,
    pub importance_sem: Option<f64>,
    /// Mean of `Σ_{k∈S} I({k})`.
    pub singles_sum_mean: Option<f64>,
    pub interaction_mean: Option<f64>,
    pub third_order_mean: Option<f64>,
    pub logprob_importance_mean: Option<f64>,
    pub logprob_importance_sem: Option<f64>,
    pub logprob_singles_sum_mean: Option<f64>,
    pub logprob_interaction_mean: Option<f64>,
    pub logprob_third_order_mean: Option<f64>,
    // Beyond the first columns: the empty set and uncertainty (module doc).
    /// Mean `I(∅)` over the problems of this row (0 under the corrected hook).
    #[serde(default)]
    pub empty_importance_mean: Option<f64>,
    #[serde(default)]
    pub empty_logprob_importance_mean: Option<f64>,
    /// Standard errors of the interaction means over problems.
    #[serde(default)]
    pub interaction_sem: Option<f64>,
    #[serde(default)]
    pub logprob_interaction_sem: Option<f64>,
    #[serde(default)]
    pub importance_vs_empty_mean: Option<f64>,
    #[serde(default)]
    pub logprob_importance_vs_empty_mean: Option<f64>,
    #[serde(default)]
    pub interaction_vs_empty_mean: Option<f64>,
    #[serde(default)]
    pub interaction_vs_empty_sem: Option<f64>,
    #[serde(default)]
    pub logprob_interaction_vs_empty_mean: Option<f64>,
    #[serde(default)]
    pub logprob_interaction_vs_empty_sem: Option<f64>,
    #[serde(default)]
    pub third_order_vs_empty_mean: Option<f64>,
    #[serde(default)]
    pub logprob_third_order_vs_empty_mean: Option<f64>,
}

impl SetSummary {
    /// Mean importance, its SEM, the singles' sum and the interaction for `kind`.
    pub fn stats(&self, kind: ImportanceKind) -> (Option<f64>, Option<f64>, Option<f64>, Option<f64>) {
        match kind {
            ImportanceKind::Binary => (self.importance_mean, self.importance_sem, self.singles_sum_mean, self.interaction_mean),
            ImportanceKind::Logprob => (
                self.logprob_importance_mean,
                self.logprob_importance_sem,
                self.logprob_singles_sum_mean,
                self.logprob_interaction_mean,
            ),
        }
    }
}

/// The records a summary includes: no error, and a correct baseline unless `all_baselines` (the
/// binary importance is 0 by definition when the baseline is wrong, as upstream's join).
pub fn included(records: &[ComposeRecord], all_baselines: bool) -> Vec<&ComposeRecord> {
    records
        .iter()
        .filter(|r| r.error.is_none())
        .filter(|r| r.baseline.as_ref().is_some_and(|b| all_baselines || b.correct))
        .collect()
}

/// Means over problems of every set (singles, pairs, triplets in [`token_sets`] order).
pub fn summarize(records: &[ComposeRecord], all_baselines: bool) -> Vec<SetSummary> {
    let records = included(records, all_baselines);
    let mut out = Vec::new();
    for tokens in (1..=3).flat_map(token_sets) {
        let sets: Vec<&SetAblation> = records.iter().filter_map(|r| r.set(&tokens)).collect();
        let singles = |r: &ComposeRecord, f: &dyn Fn(&SetAblation) -> Option<f64>| -> Option<f64> {
            tokens.iter().map(|&k| r.set(&[k]).and_then(f)).sum()
        };
        let values = |f: &dyn Fn(&SetAblation) -> Option<f64>| sets.iter().filter_map(|s| f(s)).collect::<Vec<f64>>();
        let binary = |s: &SetAblation| Some(s.importance as f64);
        let logprob = |s: &SetAblation| s.logprob_importance;
        let size = tokens.len();
        let with_set: Vec<&&ComposeRecord> = records.iter().filter(|r| r.set(&tokens).is_some()).collect();
        let empty = |f: &dyn Fn(&SetAblation) -> Option<f64>| with_set.iter().filter_map(|r| r.empty_ablation.as_ref().and_then(f)).collect::<Vec<f64>>();
        let interaction = |s: &SetAblation| s.interaction.map(f64::from);
        let interaction_vs_empty = |s: &SetAblation| s.interaction_vs_empty.map(f64::from);
        let several = |v: Option<f64>| if size > 1 { v } else { None };
        out.push(SetSummary {
            empty_importance_mean: finite_mean(empty(&binary)),
            empty_logprob_importance_mean: finite_mean(empty(&logprob)),
            interaction_sem: several(finite_sem(values(&interaction))),
            logprob_interaction_sem: several(finite_sem(values(&|s| s.logprob_interaction))),
            importance_vs_empty_mean: finite_mean(values(&|s| s.importance_vs_empty.map(f64::from))),
            logprob_importance_vs_empty_mean: finite_mean(values(&|s| s.logprob_importance_vs_empty)),
            interaction_vs_empty_mean: several(finite_mean(values(&interaction_vs_empty))),
            interaction_vs_empty_sem: several(finite_sem(values(&interaction_vs_empty))),
            logprob_interaction_vs_empty_mean: several(finite_mean(values(&|s| s.logprob_interaction_vs_empty))),
            logprob_interaction_vs_empty_sem: several(finite_sem(values(&|s| s.logprob_interaction_vs_empty))),
            third_order_vs_empty_mean: (size > 2).then(|| finite_mean(values(&|s| s.third_order_vs_empty.map(f64::from)))).flatten(),
            logprob_third_order_vs_empty_mean: (size > 2).then(|| finite_mean(values(&|s| s.logprob_third_order_vs_empty))).flatten(),
            label: set_label(&tokens),
            problems: sets.len(),
            importance_mean: finite_mean(values(&binary)),
            importance_sem: finite_sem(values(&binary)),
            singles_sum_mean: finite_mean(records.iter().filter_map(|r| singles(r, &binary))),
            interaction_mean: (size > 1).then(|| finite_mean(values(&|s| s.interaction.map(f64::from)))).flatten(),
            third_order_mean: (size > 2).then(|| finite_mean(values(&|s| s.third_order_interaction.map(f64::from)))).flatten(),
            logprob_importance_mean: finite_mean(values(&logprob)),
            logprob_importance_sem: finite_sem(values(&logprob)),
            logprob_singles_sum_mean: finite_mean(records.iter().filter_map(|r| singles(r, &logprob))),
            logprob_interaction_mean: (size > 1).then(|| finite_mean(values(&|s| s.logprob_interaction))).flatten(),
            logprob_third_order_mean: (size > 2).then(|| finite_mean(values(&|s| s.logprob_third_order_interaction))).flatten(),
            tokens,
        });
    }
    out
}

/// The table: one row per set (singles, pairs, triplets), means over the included problems.
pub fn summary_table(summary: &[SetSummary]) -> Result<DataFrame> {
    let f = |name: &str, get: &dyn Fn(&SetSummary) -> Option<f64>| float_column(name, summary.iter().map(get));
    Ok(DataFrame::new_infer_height(vec![
        text_column("set", summary.iter().map(|s| s.label.clone())),
        count_column("size", summary.iter().map(|s| s.tokens.len())),
        count_column("problems", summary.iter().map(|s| s.problems)),
        f("importance_mean", &|s| s.importance_mean),
        f("importance_sem", &|s| s.importance_sem),
        f("singles_sum_mean", &|s| s.singles_sum_mean),
        f("interaction_mean", &|s| s.interaction_mean),
        f("third_order_mean", &|s| s.third_order_mean),
        f("logprob_importance_mean", &|s| s.logprob_importance_mean),
        f("logprob_importance_sem", &|s| s.logprob_importance_sem),
        f("logprob_singles_sum_mean", &|s| s.logprob_singles_sum_mean),
        f("logprob_interaction_mean", &|s| s.logprob_interaction_mean),
        f("logprob_third_order_mean", &|s| s.logprob_third_order_mean),
        f("empty_importance_mean", &|s| s.empty_importance_mean),
        f("empty_logprob_importance_mean", &|s| s.empty_logprob_importance_mean),
        f("interaction_sem", &|s| s.interaction_sem),
        f("logprob_interaction_sem", &|s| s.logprob_interaction_sem),
        f("importance_vs_empty_mean", &|s| s.importance_vs_empty_mean),
        f("logprob_importance_vs_empty_mean", &|s| s.logprob_importance_vs_empty_mean),
        f("interaction_vs_empty_mean", &|s| s.interaction_vs_empty_mean),
        f("interaction_vs_empty_sem", &|s| s.interaction_vs_empty_sem),
        f("logprob_interaction_vs_empty_mean", &|s| s.logprob_interaction_vs_empty_mean),
        f("logprob_interaction_vs_empty_sem", &|s| s.logprob_interaction_vs_empty_sem),
        f("third_order_vs_empty_mean", &|s| s.third_order_vs_empty_mean),
        f("logprob_third_order_vs_empty_mean", &|s| s.logprob_third_order_vs_empty_mean),
    ])?)
}

/// One row per problem: baseline, critical pairs/triplets, the strongest pair interaction.
pub fn problems_table(records: &[ComposeRecord]) -> Result<DataFrame> {
    let ok: Vec<&ComposeRecord> = records.iter().filter(|r| r.error.is_none()).collect();
    let strongest = |r: &ComposeRecord| {
        r.pair_ablations
            .iter()
            .filter_map(|s| Some((s, s.logprob_interaction?)))
            .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
            .map(|(s, v)| (set_label(&s.tokens), v))
    };
    Ok(DataFrame::new_infer_height(vec![
        text_column("problem_id", ok.iter().map(|r| r.problem_id.clone())),
        text_column("difficulty", ok.iter().map(|r| r.difficulty.clone())),
        text_column("baseline answer", ok.iter().map(|r| r.baseline.as_ref().map_or(String::new(), |b| b.predicted_answer.to_string()))),
        Column::new("baseline correct".into(), ok.iter().map(|r| r.baseline.as_ref().is_some_and(|b| b.correct)).collect::<Vec<bool>>()),
        count_column("critical singles", ok.iter().map(|r| r.single_ablations.iter().map(|s| s.importance as usize).sum())),
        count_column("critical pairs", ok.iter().map(|r| r.num_critical_pairs)),
        count_column("critical triplets", ok.iter().map(|r| r.num_critical_triplets)),
        text_column("strongest pair (log-prob)", ok.iter().map(|r| strongest(r).map_or(String::new(), |s| s.0))),
        float_column("its interaction", ok.iter().map(|r| strongest(r).map(|s| s.1))),
    ])?)
}

/// Options of [`analyze_compose`].
#[derive(Debug, Clone)]
pub struct ComposeAnalysisOptions {
    /// Importance the figures show.
    pub importance: ImportanceKind,
    /// Keep problems whose baseline is wrong (meant for the log-prob importance).
    pub all_baselines: bool,
    pub static_images: bool,
    /// Appended to figure titles (e.g. the not-CODI warning).
    pub title_note: String,
}

impl Default for ComposeAnalysisOptions {
    fn default() -> Self {
        ComposeAnalysisOptions {
            importance: ImportanceKind::Binary,
            all_baselines: false,
            static_images: true,
            title_note: String::new(),
        }
    }
}

/// What [`analyze_compose`] wrote.
#[derive(Debug, Clone)]
pub struct ComposeAnalysis {
    pub summary: Vec<SetSummary>,
    pub files: Vec<std::path::PathBuf>,
    pub notes: Vec<String>,
}

/// Table (`results/compositional_table_<tag>.{csv,md,json}`) and figures
/// (`figures/compositional_pair_interaction`, `figures/compositional_triplet_importance`).
pub fn analyze_compose(records: &[ComposeRecord], layout: &StepLayout, options: &ComposeAnalysisOptions) -> Result<ComposeAnalysis> {
    let summary = summarize(records, options.all_baselines);
    if summary.iter().all(|s| s.problems == 0) {
        return Err(Error::invalid(format!(
            "compositional analysis: no problem to summarise ({} records; {} without error; baselines correct: {}){}",
            records.len(),
            records.iter().filter(|r| r.error.is_none()).count(),
            records.iter().filter(|r| r.baseline.as_ref().is_some_and(|b| b.correct)).count(),
            if options.all_baselines { "" } else { " — use all_baselines with the log-prob importance" }
        )));
    }
    let mut files = next_steps::write_table(&mut summary_table(&summary)?, layout, TABLE_STEM)?;
    let json_path = layout.result(TABLE_STEM, "json");
    write_json_atomic(&json_path, &summary)?;
    files.push(json_path);
    let note = &options.title_note;
    let pairs = next_figures::pair_interaction_heatmap(&summary, options.importance, note)?;
    let triplets = next_figures::triplet_importance_bars(&summary, options.importance, note)?;
    let (written, notes) = next_steps::save_step_figures(
        &layout.figures_dir(),
        &[("compositional_pair_interaction", &pairs), ("compositional_triplet_importance", &triplets)],
        options.static_images,
    )?;
    files.extend(written);
    let mut notes = notes;
    notes.extend(empty_set_note(records, options.all_baselines));
    Ok(ComposeAnalysis { summary, files, notes })
}

/// What ablating nothing did: mean `I(∅)` ± SEM over the included problems, when it is not 0
/// (the faithful hook), so a reader knows the plain interactions carry `−(|S|−1)·I(∅)`.
fn empty_set_note(records: &[ComposeRecord], all_baselines: bool) -> Option<String> {
    let records = included(records, all_baselines);
    let empty: Vec<&SetAblation> = records.iter().filter_map(|r| r.empty_ablation.as_ref()).collect();
    if empty.is_empty() {
        return Some("no empty-set run in these results (made before it was added): the *_vs_empty columns are empty".into());
    }
    let binary: Vec<f64> = empty.iter().map(|s| s.importance as f64).collect();
    let logprob: Vec<f64> = empty.iter().filter_map(|s| s.logprob_importance).collect();
    let show = |mean: Option<f64>, sem: Option<f64>| match (mean, sem) {
        (Some(m), Some(s)) => format!("{m:.4} ± {s:.4}"),
        (Some(m), None) => format!("{m:.4}"),
        _ => "n/a".into(),
    };
    let (b, l) = (finite_mean(binary.iter().copied()), finite_mean(logprob.iter().copied()));
    if b.unwrap_or(0.0) == 0.0 && l.unwrap_or(0.0) == 0.0 {
        return None;
    }
    Some(format!(
        "ablating no token changes the answer under this hook: I(∅) = {} (binary), {} (log-prob) over {} problems; \
         the *_vs_empty columns measure every set against it",
        show(b, finite_sem(binary.iter().copied())),
        show(l, finite_sem(logprob.iter().copied())),
        empty.len()
    ))
}

/// `codi compose` as one call: run (resumable) into `results/compositional_ablation_results_<tag>.json`,
/// then [`analyze_compose`].
pub fn compose_step(
    codi: &CodiModel,
    problems: &[Problem],
    options: &AblationOptions,
    layout: &StepLayout,
    analysis: &ComposeAnalysisOptions,
) -> Result<(Vec<ComposeRecord>, ComposeAnalysis)> {
    let records = run_compose(codi, problems, options, &layout.result(RESULTS_STEM, "json"))?;
    let analysis = analyze_compose(&records, layout, analysis)?;
    Ok((records, analysis))
}

/// [`compose_step`] with the importance chosen by `rule` from the records' baselines (the rule
/// of `codi analyze`); the note says when `Auto` fell back to the log-prob importance.
pub fn compose_with_rule(
    codi: &CodiModel,
    problems: &[Problem],
    options: &AblationOptions,
    layout: &StepLayout,
    rule: super::analyze::ImportanceRule,
    static_images: bool,
    title_note: &str,
) -> Result<(Vec<ComposeRecord>, ComposeAnalysis, ImportanceKind)> {
    let records = run_compose(codi, problems, options, &layout.result(RESULTS_STEM, "json"))?;
    let correct = records.iter().filter(|r| r.error.is_none() && r.baseline.as_ref().is_some_and(|b| b.correct)).count();
    let (importance, all_baselines, note) = rule.resolve_counts(correct, records.len());
    let analysis_options = ComposeAnalysisOptions { importance, all_baselines, static_images, title_note: title_note.to_owned() };
    let mut analysis = analyze_compose(&records, layout, &analysis_options)?;
    analysis.notes.extend(note);
    Ok((records, analysis, importance))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(tokens: &[usize], importance: u8, lp: f64) -> SetAblation {
        SetAblation {
            tokens: tokens.to_vec(),
            ablated_output: String::new(),
            predicted_answer: serde_json::Value::Null,
            still_correct: importance == 0,
            importance,
            gold_logprob: None,
            logprob_importance: Some(lp),
            interaction: None,
            logprob_interaction: None,
            third_order_interaction: None,
            logprob_third_order_interaction: None,
            importance_vs_empty: None,
            logprob_importance_vs_empty: None,
            interaction_vs_empty: None,
            logprob_interaction_vs_empty: None,
            third_order_vs_empty: None,
            logprob_third_order_vs_empty: None,
        }
    }

    #[test]
    fn sets_are_the_combinations_in_lexicographic_order() {
        assert_eq!(token_sets(1).len(), 6);
        let pairs = token_sets(2);
        assert_eq!(pairs.len(), 15);
        assert_eq!((pairs[0].clone(), pairs[14].clone()), (vec![0, 1], vec![4, 5]));
        let triplets = token_sets(3);
        assert_eq!(triplets.len(), 20);
        assert_eq!((triplets[0].clone(), triplets[19].clone()), (vec![0, 1, 2], vec![3, 4, 5]));
        assert_eq!(set_label(&[0, 2, 5]), "T0+T2+T5");
    }

    #[test]
    fn interactions_by_hand() {
        // Singles: I = 1,0,0,...; lp = 0.5, 1.0, 2.0, 0, 0, 0. Pair {0,1}: I = 1, lp 4.0.
        // Pairs {0,2}: 0, 1.0; {1,2}: 1, 2.5. Triplet {0,1,2}: I = 1, lp 6.0.
        let mut sets = vec![
            set(&[0], 1, 0.5),
            set(&[1], 0, 1.0),
            set(&[2], 0, 2.0),
            set(&[0, 1], 1, 4.0),
            set(&[0, 2], 0, 1.0),
            set(&[1, 2], 1, 2.5),
            set(&[0, 1, 2], 1, 6.0),
            set(&[3, 4], 0, 0.0), // members missing: no interaction
        ];
        fill_interactions(&mut sets);
        assert_eq!(sets[0].interaction, None);
        assert_eq!(sets[3].interaction, Some(0)); // 1 − (1 + 0)
        assert_eq!(sets[3].logprob_interaction, Some(2.5)); // 4 − 1.5
        assert_eq!(sets[4].interaction, Some(-1)); // 0 − 1
        assert_eq!(sets[4].logprob_interaction, Some(-1.5)); // 1 − 2.5
        assert_eq!(sets[5].interaction, Some(1));
        assert_eq!(sets[5].logprob_interaction, Some(-0.5));
        assert_eq!(sets[6].interaction, Some(0)); // 1 − 1
        assert_eq!(sets[6].logprob_interaction, Some(2.5)); // 6 − 3.5
        // 1 − (1 + 0 + 1) + 1 = 0; 6 − 7.5 + 3.5 = 2.0.
        assert_eq!(sets[6].third_order_interaction, Some(0));
        assert_eq!(sets[6].logprob_third_order_interaction, Some(2.0));
        assert_eq!(sets[7].interaction, None);

        // Against an empty set with I(∅) = 1 (binary) and 0.25 (log-prob):
        // pair {0,1}: 0 + 1·1 = 1 and 2.5 + 0.25 = 2.75; triplet: 0 + 2 = 2, 2.5 + 0.5 = 3.0;
        // third order 0 − 1 = −1, 2.0 − 0.25 = 1.75; single {0}: I − I(∅) = 0, 0.5 − 0.25.
        let empty = set(&[], 1, 0.25);
        fill_against_empty(&mut sets, &empty);
        assert_eq!((sets[0].importance_vs_empty, sets[0].logprob_importance_vs_empty), (Some(0), Some(0.25)));
        assert_eq!(sets[0].interaction_vs_empty, None);
        assert_eq!((sets[3].interaction_vs_empty, sets[3].logprob_interaction_vs_empty), (Some(1), Some(2.75)));
        assert_eq!((sets[6].interaction_vs_empty, sets[6].logprob_interaction_vs_empty), (Some(2), Some(3.0)));
        assert_eq!((sets[6].third_order_vs_empty, sets[6].logprob_third_order_vs_empty), (Some(-1), Some(1.75)));
        // The same interaction from the effects re-measured against ∅ by hand:
        // (4 − .25) − ((.5 − .25) + (1 − .25)) = 2.75.
        assert_eq!((4.0 - 0.25) - ((0.5 - 0.25) + (1.0 - 0.25)), 2.75);
    }
}
