//! Compositional ablation (the seed's next step "test token pairs/triplets"): knock out
//! every pair and every triplet of continuous-thought tokens — C(6,2) = 15 and C(6,3) = 20 sets
//! per problem — and measure how far the set's effect departs from the sum of its tokens' effects.
//!
//! **Same hook as the single-token ablation** ([`crate::codi::seed::ablation`]), generalised
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
//! baseline + the empty set + 6 + 15 + 20 = 43 loop runs; the 42 ablated ones go through the loop
//! together ([`crate::codi::latent::thought_loop::run_from_prompts`]), and all 43 are decoded
//! together ([`decode_greedy_batch`]).
//!
//! **Definitions** (`I` = importance; `k ∈ S` the tokens of the set):
//! - binary importance, as upstream: `I(S) = 1` if the baseline is correct and the answer with `S`
//!   ablated is wrong, else 0 (always 0 when the baseline is wrong);
//! - continuous importance: `I_lp(S) = log P(gold | baseline) − log P(gold | S ablated)`, the drop
//!   in the gold answer's log-probability ([`crate::codi::latent::thought_loop::gold_logprob`]);
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
//! (`compositional_table_<tag>.{csv,md}`) and two figures ([`super::figures`]), written by
//! [`super::analyze::analyze_compose`].

use std::path::Path;

use polars::prelude::{Column, DataFrame};
use serde::{Deserialize, Serialize};

use crate::codi::latent::codi_model::CodiModel;
use crate::codi::latent::thought_loop::{decode_greedy_batch, LATENT_STEPS};
use crate::codi::problems::dataset::Problem;
use crate::codi::runner::files::JsonStyle;
use crate::codi::runner::output::{count_column, finite_mean, finite_sem, float_column, text_column};
use crate::codi::runner::step::{run_step, ProblemRecord, Step, StepOutcome};
use crate::codi::seed::ablation::{
    ablated_runs, baseline_result, check_layer, AblatedRun, AblationOptions, BaselineResult, CleanRun,
};
use crate::codi::seed::analyze::ImportanceKind;
use crate::Result;

/// Results file stem (`results/<stem>_<tag>.json`).
pub const RESULTS_STEM: &str = "compositional_ablation_results";
/// Table stem (`results/<stem>_<tag>.{csv,md}`).
pub(crate) const TABLE_STEM: &str = "compositional_table";

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
pub(crate) fn set_label(tokens: &[usize]) -> String {
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

impl SetAblation {
    /// The set's own run, its interactions not yet filled in ([`fill_interactions`],
    /// [`fill_against_empty`]).
    pub(crate) fn of_run(tokens: Vec<usize>, run: AblatedRun) -> Self {
        SetAblation {
            tokens,
            ablated_output: run.output,
            predicted_answer: run.predicted_answer,
            still_correct: run.still_correct,
            importance: run.importance,
            gold_logprob: run.gold_logprob,
            logprob_importance: run.logprob_importance,
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

/// Baseline, the empty set, the six singles, the 15 pairs and the 20 triplets of one problem:
/// the 42 ablated runs through the loop together with the seed's ablation hook, one per row
/// ([`crate::codi::latent::thought_loop::run_from_prompts`]), then all 43 decoded in one batch.
pub fn compose_problem(codi: &CodiModel, problem: &Problem, options: &AblationOptions) -> Result<ComposeRecord> {
    let loop_options = &options.loop_options;
    // Baseline, capturing the clean vectors at block `layer`.
    let clean_run = CleanRun::of(codi, problem, options)?;
    let baseline_logprob = clean_run.gold_logprob;

    // The empty set first: the hook alone, what every other set is measured against.
    let sets: Vec<Vec<usize>> = std::iter::once(Vec::new()).chain((1..=3).flat_map(token_sets)).collect();
    let mut states = Vec::with_capacity(1 + sets.len());
    states.push(clean_run.state.clone());
    let (ablated, logprobs) = ablated_runs(codi, problem, options, &clean_run, &sets)?;
    states.extend(ablated);

    let mut decoded = decode_greedy_batch(codi, states, loop_options)?.into_iter();
    let baseline = baseline_result(decoded.next().expect("one decoding per run"), baseline_logprob, problem, loop_options);
    let mut ablations: Vec<SetAblation> = sets
        .into_iter()
        .zip(decoded.zip(logprobs))
        .map(|(tokens, (decoded, ablated_logprob))| {
            SetAblation::of_run(tokens, AblatedRun::of(decoded, ablated_logprob, &baseline, problem, loop_options))
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
pub(crate) fn fill_interactions(sets: &mut [SetAblation]) {
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
pub(crate) fn fill_against_empty(sets: &mut [SetAblation], empty: &SetAblation) {
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

/// `codi compose`: every problem not yet in `out`, `out` rewritten after each (resumable,
/// merging shard parts: [`crate::codi::runner::step`]).
pub fn run_compose(codi: &CodiModel, problems: &[Problem], options: &AblationOptions, out: &Path) -> Result<StepOutcome<ComposeRecord>> {
    check_layer(codi, options)?;
    let step = Step { name: "compose", settings: serde_json::to_value(options)?, style: JsonStyle::Pretty };
    run_step(codi, &step, problems, out, |problem| compose_problem(codi, problem, options))
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
pub(crate) fn summarize(records: &[ComposeRecord], all_baselines: bool) -> Vec<SetSummary> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn set(tokens: &[usize], importance: u8, lp: f64) -> SetAblation {
        let run = AblatedRun {
            output: String::new(),
            predicted_answer: serde_json::Value::Null,
            still_correct: importance == 0,
            importance,
            gold_logprob: None,
            logprob_importance: Some(lp),
        };
        SetAblation::of_run(tokens.to_vec(), run)
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
