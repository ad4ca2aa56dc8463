//! The next steps' analyses: each writes its tables into `results/` and its figures into
//! `figures/` of the experiment folder, and `*_step` runs a step (resumable) and then analyses it
//! — the calls the CLI and the pipeline make. Above the steps and [`super::figures`], so the steps
//! compute and summarise without knowing how they are drawn.

use std::path::PathBuf;

use super::compose::{
    included, run_compose, summarize, summary_table as compose_table, ComposeRecord, SetAblation, SetSummary, RESULTS_STEM as COMPOSE_STEM,
    TABLE_STEM,
};
use super::decompose::{
    dla_table, lens_table, run_decompose, summarize_decompose, DecomposeOptions, DecomposeRecord, DecomposeSummary, DLA_TABLE_STEM,
    RESULTS_STEM as DECOMPOSE_STEM,
};
use super::figures;
use super::routing::{
    run_routing, summarize_routing, summary_table as routing_table, RoutingOptions, RoutingRecord, RoutingSummary, RESULTS_STEM as ROUTING_STEM,
    SUMMARY_STEM,
};
use crate::codi::latent::codi_model::CodiModel;
use crate::codi::problems::dataset::Problem;
use crate::codi::runner::layout::{file_part, StepLayout};
use crate::codi::runner::output::{finite_mean, finite_sem, markdown_table, save_step_figures, write_table};
use crate::codi::runner::step::StepOutcome;
use crate::codi::seed::ablation::AblationOptions;
use crate::codi::seed::analyze::{ImportanceKind, ImportanceRule};
use crate::io::{write_atomic, write_json};
use crate::plot::Figure;
use crate::{Error, Result};

/// What an analysis wrote: the summary its tables and figures show, the files, and what was
/// skipped (static images without Chromium) or worth saying about the results.
#[derive(Debug, Clone)]
pub struct StepAnalysis<S> {
    pub summary: S,
    pub files: Vec<PathBuf>,
    pub notes: Vec<String>,
}

// Compositional ablation.

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
pub type ComposeAnalysis = StepAnalysis<Vec<SetSummary>>;

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
    let mut files = write_table(&mut compose_table(&summary)?, layout, TABLE_STEM)?;
    let json_path = layout.result(TABLE_STEM, "json");
    write_json(&json_path, &summary)?;
    files.push(json_path);
    let note = &options.title_note;
    let pairs = figures::pair_interaction_heatmap(&summary, options.importance, note)?;
    let triplets = figures::triplet_importance_bars(&summary, options.importance, note)?;
    let (written, notes) = save_step_figures(
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

/// `codi compose` as one call: run (resumable, merging shard parts) into
/// `results/compositional_ablation_results_<tag>.json`, then [`analyze_compose`] with the
/// importance chosen by `rule` from the records' baselines (the rule of `codi analyze`); the note
/// says when `Auto` fell back to the log-prob importance.
pub fn compose_with_rule(
    codi: &CodiModel,
    problems: &[Problem],
    options: &AblationOptions,
    layout: &StepLayout,
    rule: ImportanceRule,
    static_images: bool,
    title_note: &str,
) -> Result<(StepOutcome<ComposeRecord>, ComposeAnalysis, ImportanceKind)> {
    let outcome = run_compose(codi, problems, options, &layout.result(COMPOSE_STEM, "json"))?;
    let records = &outcome.records;
    let correct = records.iter().filter(|r| r.error.is_none() && r.baseline.as_ref().is_some_and(|b| b.correct)).count();
    let (importance, all_baselines, note) = rule.resolve_counts(correct, records.len());
    let analysis_options = ComposeAnalysisOptions { importance, all_baselines, static_images, title_note: title_note.to_owned() };
    let mut analysis = analyze_compose(records, layout, &analysis_options)?;
    analysis.notes.extend(note);
    Ok((outcome, analysis, importance))
}

// Question → thought attention.

/// What [`analyze_routing`] wrote.
pub type RoutingAnalysis = StepAnalysis<RoutingSummary>;

/// Options of [`analyze_routing`].
#[derive(Debug, Clone)]
pub struct RoutingAnalysisOptions {
    /// Problems drawn as a question-token × thought heatmap (the first ones).
    pub heatmaps: usize,
    pub static_images: bool,
    pub title_note: String,
}

impl Default for RoutingAnalysisOptions {
    fn default() -> Self {
        RoutingAnalysisOptions { heatmaps: 3, static_images: true, title_note: String::new() }
    }
}

/// Summary (`results/attention_by_token_type_<tag>.{json,csv,md}`) and figures: per problem
/// `figures/question_to_thought_<problem>` (the first `heatmaps` problems),
/// `figures/attention_by_token_type`, `figures/attention_by_token_type_per_layer`,
/// `figures/attention_by_token_type_per_head`.
pub fn analyze_routing(records: &[RoutingRecord], layout: &StepLayout, options: &RoutingAnalysisOptions) -> Result<RoutingAnalysis> {
    let summary = summarize_routing(records)?;
    let mut files = Vec::new();
    write_summary_files(&summary, layout, &mut files)?;
    let note = &options.title_note;
    let mut figures: Vec<(String, Figure)> = Vec::new();
    for record in records.iter().filter(|r| r.error.is_none()).take(options.heatmaps) {
        let name = format!("question_to_thought_{}", file_part(&record.problem_id));
        figures.push((name, figures::question_thought_heatmap(record, note)?));
    }
    figures.push(("attention_by_token_type".into(), figures::class_thought_heatmap(&summary, note)?));
    figures.push(("attention_by_token_type_per_layer".into(), figures::class_by_layer(&summary, note)?));
    if !summary.head_layers.is_empty() {
        figures.push(("attention_by_token_type_per_head".into(), figures::class_by_head(&summary, note)?));
    }
    let named: Vec<(&str, &Figure)> = figures.iter().map(|(n, f)| (n.as_str(), f)).collect();
    let (written, notes) = save_step_figures(&layout.figures_dir(), &named, options.static_images)?;
    files.extend(written);
    Ok(RoutingAnalysis { summary, files, notes })
}

fn write_summary_files(summary: &RoutingSummary, layout: &StepLayout, files: &mut Vec<PathBuf>) -> Result<()> {
    let json = layout.result(SUMMARY_STEM, "json");
    write_json(&json, summary)?;
    files.push(json);
    files.extend(write_table(&mut routing_table(summary)?, layout, SUMMARY_STEM)?);
    Ok(())
}

/// `codi routing` as one call: run (resumable, merging shard parts) into
/// `results/question_to_thought_attention_<tag>.json`, then [`analyze_routing`].
pub fn routing_step(
    codi: &CodiModel,
    problems: &[Problem],
    options: &RoutingOptions,
    layout: &StepLayout,
    analysis: &RoutingAnalysisOptions,
) -> Result<(StepOutcome<RoutingRecord>, RoutingAnalysis)> {
    let outcome = run_routing(codi, problems, options, &layout.result(ROUTING_STEM, "json"))?;
    let analysis = analyze_routing(&outcome.records, layout, analysis)?;
    Ok((outcome, analysis))
}

// Residual decomposition.

/// What [`analyze_decompose`] wrote.
pub type DecomposeAnalysis = StepAnalysis<DecomposeSummary>;

/// Options of [`analyze_decompose`].
#[derive(Debug, Clone)]
pub struct DecomposeAnalysisOptions {
    /// Problems whose logit lens is drawn and tabled (the first ones).
    pub lens_problems: usize,
    pub static_images: bool,
    pub title_note: String,
}

impl Default for DecomposeAnalysisOptions {
    fn default() -> Self {
        DecomposeAnalysisOptions { lens_problems: 3, static_images: true, title_note: String::new() }
    }
}

/// Tables (`results/direct_logit_attribution_<tag>.{csv,md}` for the gold target,
/// `results/residual_decomposition_summary_<tag>.json`, `results/logit_lens_<problem>_<tag>.md`)
/// and figures (`figures/direct_logit_attribution`, `figures/direct_logit_attribution_eot`,
/// `figures/logit_lens_<problem>`).
pub fn analyze_decompose(records: &[DecomposeRecord], layout: &StepLayout, options: &DecomposeAnalysisOptions) -> Result<DecomposeAnalysis> {
    let summary = summarize_decompose(records)?;
    let mut files = Vec::new();
    let json = layout.result("residual_decomposition_summary", "json");
    write_json(&json, &summary)?;
    files.push(json);
    files.extend(write_table(&mut dla_table(&summary, 0)?, layout, DLA_TABLE_STEM)?);
    let note = &options.title_note;
    let mut figures: Vec<(String, Figure)> = vec![
        ("direct_logit_attribution".into(), figures::dla_heatmap(&summary, 0, note)?),
        ("direct_logit_attribution_eot".into(), figures::dla_layer_bars(&summary, 0, summary.position_labels.len() - 1, note)?),
    ];
    for record in records.iter().filter(|r| r.error.is_none()).take(options.lens_problems) {
        let id = file_part(&record.problem_id);
        let path = layout.result(&format!("logit_lens_{id}"), "md");
        write_atomic(&path, markdown_table(&lens_table(record)?).as_bytes())?;
        files.push(path);
        figures.push((format!("logit_lens_{id}"), figures::logit_lens_heatmap(record, note)?));
    }
    let named: Vec<(&str, &Figure)> = figures.iter().map(|(n, f)| (n.as_str(), f)).collect();
    let (written, notes) = save_step_figures(&layout.figures_dir(), &named, options.static_images)?;
    files.extend(written);
    Ok(DecomposeAnalysis { summary, files, notes })
}

/// `codi decompose` as one call: run (resumable, merging shard parts) into
/// `results/residual_decomposition_<tag>.json`, then [`analyze_decompose`].
pub fn decompose_step(
    codi: &CodiModel,
    problems: &[Problem],
    options: &DecomposeOptions,
    layout: &StepLayout,
    analysis: &DecomposeAnalysisOptions,
) -> Result<(StepOutcome<DecomposeRecord>, DecomposeAnalysis)> {
    let outcome = run_decompose(codi, problems, options, &layout.result(DECOMPOSE_STEM, "json"))?;
    let analysis = analyze_decompose(&outcome.records, layout, analysis)?;
    Ok((outcome, analysis))
}
