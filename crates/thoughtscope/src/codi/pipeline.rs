//! `codi run-all`: the seed README's four steps in one call — dataset → token ablation →
//! attention → analysis and figures — for the faithful variant (CoT_Exploration's hook and key
//! slice) and the corrected one, plus their comparison table.
//!
//! Output layout under `out`, one seed experiment folder per variant ([`ExperimentLayout`]):
//! ```text
//! faithful/results/{test_dataset_10.json | full_dataset_100.json, token_ablation_results_<tag>.json,
//!                   attention_weights_<tag>.json, summary_statistics.json, joined_rows_<tag>.csv}
//! faithful/figures/{1_importance_by_position, …, 4_correlation_by_position}.{pdf,png,svg,html}
//! faithful/index.html
//! corrected/…
//! comparison.md, comparison.json, README.md
//! ```
//! `<tag>` is `test` in test mode (3/3/2/2 problems) and `100` otherwise. Every step resumes:
//! rerunning skips finished problems.

use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;

use super::latent::checkpoint::find_checkpoint;
use super::latent::codi_model::{CodiModel, LoadOptions};
use super::latent::make_model::{make_model, MakeModelOptions};
use super::latent::thought_loop::{LoopMode, LoopOptions};
use super::next::analyze::{compose_with_rule, decompose_step, routing_step, ComposeAnalysis, DecomposeAnalysis, DecomposeAnalysisOptions, RoutingAnalysis, RoutingAnalysisOptions};
use super::next::compose::ComposeRecord;
use super::next::decompose::{DecomposeOptions, DecomposeRecord};
use super::next::routing::{RoutingOptions, RoutingRecord};
use super::problems::dataset::{load_problems, stratified_sample, write_problems, Problem, FULL_PER_LEVEL, TEST_PER_LEVEL};
use super::problems::synthetic::{synthetic_problems, DEFAULT_PER_LEVEL, DEFAULT_SEED};
use super::runner::layout::ExperimentLayout;
use super::seed::ablation::{run_ablation, AblationMode, AblationOptions, AblationSummary};
use super::seed::analyze::{analyze, write_comparison, Analysis, AnalyzeOptions, ImportanceKind, ImportanceRule};
use super::seed::eot_attention::{run_attention, scale_layers, AttentionOptions, AttentionRecord, UPSTREAM_LAYERS};
use super::seed::variant::Variant;
use crate::io::write_atomic;
use crate::model::Settings;
use crate::{Error, Result};

/// A cap on `max_new_tokens` for quick runs (tests, `--max-new-tokens 16`). Not a default: the
/// seed decodes up to 200 new tokens. CODI answers "The answer is: N" then EOS, 7–8 tokens with
/// Llama-3's tokenizer and 11 for a 5-digit N with SmolLM2's (one token per digit), so 16 keeps
/// every answer while a synthetic model (which never emits EOS) stays fast on CPU.
pub const QUICK_MAX_NEW_TOKENS: usize = 16;

/// How many problems compositional ablation takes in test mode: 42 decodes per problem make it the
/// costliest step of a test run (about a minute a problem on two cores), so it runs on an evenly
/// spaced subset of the sample (every difficulty level the sample's order spreads it over).
pub const TEST_COMPOSE_PROBLEMS: usize = 3;

/// The CODI model to run: the seed's arrangement (a base model + the CODI checkpoint) or a
/// self-contained checkpoint directory, built first with `make-model` when asked.
#[derive(Debug, Clone)]
pub struct ModelSpec {
    /// CODI checkpoint directory or file.
    pub checkpoint: PathBuf,
    /// Base model whose config and tokenizer are used ([`LoadOptions::base`]).
    pub base: Option<String>,
    /// Build a CODI-shaped checkpoint (NOT a CODI model) at `checkpoint` when it has none.
    pub make_from: Option<MakeModelOptions>,
    pub lora_alpha: Option<f64>,
    pub lora_rank: Option<usize>,
}

impl ModelSpec {
    /// A checkpoint directory as it is.
    pub fn checkpoint(path: impl Into<PathBuf>) -> Self {
        ModelSpec { checkpoint: path.into(), base: None, make_from: None, lora_alpha: None, lora_rank: None }
    }

    /// Load (building it first when `make_from` is set and the checkpoint is missing); the
    /// seconds make-model took, if it ran.
    pub fn load(&self, settings: &Settings) -> Result<(CodiModel, Option<f64>)> {
        let mut made = None;
        if find_checkpoint(&self.checkpoint).is_err() {
            let make = self.make_from.as_ref().ok_or_else(|| {
                Error::invalid(format!(
                    "no CODI checkpoint in {} (a real one: --checkpoint DIR --base BASE; or build a CODI-shaped one, NOT a \
                     CODI model, with `thoughtscope codi make-model --out DIR`, which `codi run-all` does by itself)",
                    self.checkpoint.display()
                ))
            })?;
            let t = Instant::now();
            make_model(make, &self.checkpoint, settings)?;
            made = Some(t.elapsed().as_secs_f64());
        }
        let options = LoadOptions { base: self.base.clone(), lora_alpha: self.lora_alpha, lora_rank: self.lora_rank };
        Ok((CodiModel::load(&self.checkpoint, &options, settings)?, made))
    }
}

/// The problems of a run: the stratified sample of `input` (the seed's 1,000-problem file), or
/// of the embedded synthetic set when `input` is None (NOT GSM8K; see [`super::problems::synthetic`]).
pub fn sample_problems(input: Option<&std::path::Path>, per_level: [usize; 4], seed: u64) -> Result<Vec<Problem>> {
    let pool = match input {
        Some(path) => load_problems(path)?,
        None => synthetic_problems(DEFAULT_PER_LEVEL, DEFAULT_SEED)?,
    };
    stratified_sample(&pool, per_level, seed)
}

/// Settings of [`run_all`].
#[derive(Debug, Clone)]
pub struct RunAllOptions {
    pub model: ModelSpec,
    /// The 1,000-problem file; None: the embedded synthetic problems.
    pub input: Option<PathBuf>,
    pub out: PathBuf,
    pub test_mode: bool,
    pub seed: u64,
    /// Overrides 25/level (3/3/2/2 in test mode).
    pub per_level: Option<[usize; 4]>,
    pub loop_mode: LoopMode,
    /// Overrides the loop's upstream default (200 new tokens for cotx).
    pub max_new_tokens: Option<usize>,
    /// Ablation block (upstream 8); moved to the same relative depth on shallower models.
    pub layer: usize,
    /// Attention blocks (upstream 4, 8, 14); moved likewise.
    pub attention_layers: Vec<usize>,
    pub variants: Vec<Variant>,
    /// Faithful variant: also patch the last question token (`1_run_token_ablation.py` does).
    pub patch_prompt: bool,
    pub importance: ImportanceRule,
    pub static_images: bool,
}

impl RunAllOptions {
    pub fn new(model: ModelSpec, out: PathBuf) -> Self {
        RunAllOptions {
            model,
            input: None,
            out,
            test_mode: false,
            seed: 42,
            per_level: None,
            loop_mode: LoopMode::Cotx,
            max_new_tokens: None,
            layer: 8,
            attention_layers: UPSTREAM_LAYERS.to_vec(),
            variants: vec![Variant::Faithful, Variant::Corrected],
            patch_prompt: true,
            importance: ImportanceRule::Auto,
            static_images: true,
        }
    }

    /// The experiment folder of one variant.
    pub fn layout(&self, variant: Variant) -> ExperimentLayout {
        let problems: usize = self.per_level.map_or(100, |p| p.iter().sum());
        ExperimentLayout::new(self.out.join(variant.name()), self.test_mode, problems)
    }
}

/// Seconds per step, for the report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunAllReport {
    pub problems: usize,
    pub make_model_s: Option<f64>,
    pub load_s: f64,
    pub steps: Vec<(String, f64)>,
    pub total_s: f64,
    pub files: Vec<PathBuf>,
    pub notes: Vec<String>,
}

/// The seed's experiment on one loaded model: its four steps as methods, so that `run-all` and
/// the notebook run the same code (the notebook calls them one cell at a time). It owns the model
/// and the settings (an evcxr cell cannot keep a value that borrows).
pub struct Experiment {
    pub codi: CodiModel,
    pub options: RunAllOptions,
    /// Seconds `make-model` took when the checkpoint had to be built, and loading took.
    pub make_model_s: Option<f64>,
    pub load_s: f64,
    /// Ablation block after moving it to the model's depth.
    pub layer: usize,
    /// Attention blocks after moving them to the model's depth.
    pub attention_layers: Vec<usize>,
    pub loop_options: LoopOptions,
    /// What the set-up decided (layers moved, a synthetic model).
    pub notes: Vec<String>,
}

impl Experiment {
    /// Load the model of `options` (building it first when asked) and set the experiment up.
    pub fn load(options: RunAllOptions, settings: &Settings) -> Result<Self> {
        let t = Instant::now();
        let (codi, made) = options.model.load(settings)?;
        let mut experiment = Experiment::new(codi, options);
        experiment.make_model_s = made;
        experiment.load_s = t.elapsed().as_secs_f64() - made.unwrap_or(0.0);
        Ok(experiment)
    }

    pub fn new(codi: CodiModel, options: RunAllOptions) -> Self {
        let mut notes = Vec::new();
        if let Some(note) = codi.provenance_note() {
            notes.push(note);
        }
        let n_layers = codi.model.num_layers();
        let layer = scale_layers(&[options.layer], n_layers)[0];
        let attention_layers = scale_layers(&options.attention_layers, n_layers);
        if layer != options.layer || attention_layers != options.attention_layers {
            notes.push(format!(
                "the model has {n_layers} blocks: ablation layer {} → {layer}, attention layers {:?} → {attention_layers:?} (same relative depth as in LLaMA-3.2-1B's 16)",
                options.layer, options.attention_layers
            ));
        }
        let mut loop_options = LoopOptions::for_mode(options.loop_mode);
        if let Some(n) = options.max_new_tokens {
            loop_options.max_new_tokens = n;
        }
        Experiment { codi, options, make_model_s: None, load_s: 0.0, layer, attention_layers, loop_options, notes }
    }

    /// Step 1 (`create_test_dataset.py` / `create_full_dataset.py`): the stratified sample,
    /// written to every variant's `results/`.
    pub fn dataset(&self) -> Result<Vec<Problem>> {
        let o = &self.options;
        let per_level = o.per_level.unwrap_or(if o.test_mode { TEST_PER_LEVEL } else { FULL_PER_LEVEL });
        let problems = sample_problems(o.input.as_deref(), per_level, o.seed)?;
        for &variant in &o.variants {
            write_problems(&problems, self.options.layout(variant).dataset())?;
        }
        Ok(problems)
    }

    /// The ablation settings of a variant (hook, block, the question-token patch).
    pub fn ablation_options(&self, variant: Variant) -> AblationOptions {
        let (mode, _) = variant.modes();
        let mut options = AblationOptions::new(self.loop_options.clone(), mode);
        options.layer = self.layer;
        options.patch_prompt = self.options.patch_prompt && mode == AblationMode::Faithful;
        options
    }

    /// Step 2 (`1_run_token_ablation.py`): `results/token_ablation_results_<tag>.json`.
    pub fn ablate(&self, variant: Variant, problems: &[Problem]) -> Result<AblationSummary> {
        run_ablation(&self.codi, problems, &self.ablation_options(variant), &self.options.layout(variant).ablation())
    }

    /// Step 3 (`2_extract_attention.py`): `results/attention_weights_<tag>.json`.
    pub fn attention(&self, variant: Variant, problems: &[Problem]) -> Result<Vec<AttentionRecord>> {
        let options = AttentionOptions {
            loop_options: self.loop_options.clone(),
            layers: self.attention_layers.clone(),
            keys: variant.modes().1,
            full_row: true,
        };
        Ok(run_attention(&self.codi, problems, &options, &self.options.layout(variant).attention())?.records)
    }

    /// Step 4 (`3_analyze_and_visualize.py`): statistics, figures and `index.html`.
    pub fn analyze(&self, variant: Variant) -> Result<Analysis> {
        let options = AnalyzeOptions {
            importance: self.options.importance,
            static_images: self.options.static_images,
            title_note: self.title_note(),
        };
        analyze(&self.options.layout(variant), &options)
    }
}

impl Experiment {
    /// Next step 1, compositional ablation, in the variant's folder (`results/compositional_*`,
    /// `figures/compositional_*`). In test mode decoding is capped at [`QUICK_MAX_NEW_TOKENS`]
    /// unless `max_new_tokens` is set, and only [`TEST_COMPOSE_PROBLEMS`] problems, evenly spaced
    /// through `problems`, are run ([`Experiment::compose_sample`]): 42 runs per problem.
    pub fn compose(&self, variant: Variant, problems: &[Problem]) -> Result<Composition> {
        let mut options = self.ablation_options(variant);
        if self.options.test_mode && self.options.max_new_tokens.is_none() {
            options.loop_options.max_new_tokens = QUICK_MAX_NEW_TOKENS;
        }
        let problems = &self.compose_sample(problems);
        let title = format!(" [{}]{}", variant.name(), self.title_note());
        let (outcome, analysis, importance) = compose_with_rule(
            &self.codi,
            problems,
            &options,
            &self.options.layout(variant),
            self.options.importance,
            self.options.static_images,
            &title,
        )?;
        Ok(Composition { records: outcome.records, analysis, importance })
    }

    /// The problems [`Experiment::compose`] runs: all of them, or in test mode
    /// [`TEST_COMPOSE_PROBLEMS`] evenly spaced ones ([`crate::io::shard::evenly_spaced`]).
    pub fn compose_sample(&self, problems: &[Problem]) -> Vec<Problem> {
        if self.options.test_mode {
            crate::io::shard::evenly_spaced(problems, TEST_COMPOSE_PROBLEMS)
        } else {
            problems.to_vec()
        }
    }

    /// Where the variant-independent next steps write: `<out>/next_steps/`.
    pub fn next_steps_layout(&self, problems: usize) -> ExperimentLayout {
        ExperimentLayout::new(self.options.out.join("next_steps"), self.options.test_mode, problems)
    }

    /// Next step 2, discrete → continuous attention, on clean runs.
    pub fn routing(&self, problems: &[Problem], heatmaps: usize) -> Result<(Vec<RoutingRecord>, RoutingAnalysis)> {
        let options = RoutingOptions::for_model(&self.codi, self.loop_options.clone());
        let analysis = RoutingAnalysisOptions {
            heatmaps,
            static_images: self.options.static_images,
            title_note: self.title_note(),
        };
        let (outcome, analysis) = routing_step(&self.codi, problems, &options, &self.next_steps_layout(problems.len()), &analysis)?;
        Ok((outcome.records, analysis))
    }

    /// Next step 3, residual stream decomposition and the logit lens, on clean runs.
    pub fn decompose(&self, problems: &[Problem], lens_problems: usize) -> Result<(Vec<DecomposeRecord>, DecomposeAnalysis)> {
        let options = DecomposeOptions::new(self.loop_options.clone());
        let analysis = DecomposeAnalysisOptions {
            lens_problems,
            static_images: self.options.static_images,
            title_note: self.title_note(),
        };
        let (outcome, analysis) = decompose_step(&self.codi, problems, &options, &self.next_steps_layout(problems.len()), &analysis)?;
        Ok((outcome.records, analysis))
    }

    /// " — NOT A CODI MODEL" on a synthetic checkpoint, else empty.
    pub fn title_note(&self) -> String {
        self.codi.title_note()
    }
}

/// What [`Experiment::compose`] computed.
pub struct Composition {
    pub records: Vec<ComposeRecord>,
    pub analysis: ComposeAnalysis,
    /// The measure the figures show (what the importance rule chose).
    pub importance: ImportanceKind,
}

/// Run every step; see the module docs for the layout.
pub fn run_all(options: &RunAllOptions, settings: &Settings) -> Result<RunAllReport> {
    let start = Instant::now();
    let mut report = RunAllReport::default();
    // An --out that is a file fails before the model is built or loaded.
    crate::io::check_folder_or_absent(&options.out)?;
    // One run-all per folder at a time; `INCOMPLETE` there until every step is done.
    let lock = crate::io::begin_run(&options.out, "codi run-all", None)?;

    let experiment = Experiment::load(options.clone(), settings)?;
    report.make_model_s = experiment.make_model_s;
    report.load_s = experiment.load_s;
    report.notes.extend(experiment.notes.iter().cloned());
    let codi = &experiment.codi;

    // 1. Dataset.
    let t = Instant::now();
    let problems = experiment.dataset()?;
    if options.input.is_none() {
        report.notes.push(
            "problems: the embedded synthetic arithmetic set (NOT GSM8K; --input takes the seed's 1,000-problem file)".into(),
        );
    }
    report.problems = problems.len();
    report.steps.push(("dataset".into(), t.elapsed().as_secs_f64()));

    // 2–4. Per variant: ablation, attention, analysis.
    let mut summaries = Vec::new();
    for &variant in &options.variants {
        let layout = options.layout(variant);
        report.files.push(layout.dataset());
        let t = Instant::now();
        let summary = experiment.ablate(variant, &problems)?;
        report.steps.push((format!("{}/ablate", variant.name()), t.elapsed().as_secs_f64()));
        let (correct, counts) = summary.critical_counts();
        report.notes.push(format!(
            "{}: {correct}/{} baselines correct; critical counts per token {counts:?}; {} failed",
            variant.name(),
            summary.records.len(),
            summary.failed
        ));

        let t = Instant::now();
        experiment.attention(variant, &problems)?;
        report.steps.push((format!("{}/attention", variant.name()), t.elapsed().as_secs_f64()));

        let t = Instant::now();
        let analysis = experiment.analyze(variant)?;
        for note in analysis.notes {
            let note = format!("{}: {note}", variant.name());
            if !report.notes.contains(&note) {
                report.notes.push(note);
            }
        }
        report.files.extend(analysis.files);
        summaries.push((variant, analysis.summary));
        report.steps.push((format!("{}/analyze", variant.name()), t.elapsed().as_secs_f64()));
        report.files.push(layout.ablation());
        report.files.push(layout.attention());
    }

    // 5. Faithful vs corrected.
    let faithful = summaries.iter().find(|(v, _)| *v == Variant::Faithful);
    let corrected = summaries.iter().find(|(v, _)| *v == Variant::Corrected);
    if let (Some((_, f)), Some((_, c))) = (faithful, corrected) {
        let preamble = match codi.provenance_note() {
            Some(note) => format!("**{note}**\n\n"),
            None => String::new(),
        };
        write_comparison(f, c, &options.out, &preamble)?;
        report.files.push(options.out.join("comparison.md"));
    }
    report.total_s = start.elapsed().as_secs_f64();
    write_readme(options, codi, &report, &experiment.loop_options)?;
    report.files.push(options.out.join("README.md"));
    lock.finish()?;
    Ok(report)
}

fn write_readme(options: &RunAllOptions, codi: &CodiModel, report: &RunAllReport, loop_options: &LoopOptions) -> Result<()> {
    let mut text = String::from("# thoughtscope codi run-all\n\n");
    if let Some(note) = codi.provenance_note() {
        text.push_str(&format!("**{note}.**\n\n"));
    }
    text.push_str(&format!(
        "- checkpoint: `{}` (weights hash {})\n- problems: {} (test mode: {})\n- loop: {:?}, max_new_tokens {}, parser {:?}\n\n",
        options.model.checkpoint.display(),
        &codi.weights_hash[..16.min(codi.weights_hash.len())],
        report.problems,
        options.test_mode,
        loop_options.mode,
        loop_options.max_new_tokens,
        loop_options.parser
    ));
    text.push_str("| step | seconds |\n|---|---:|\n");
    if let Some(s) = report.make_model_s {
        text.push_str(&format!("| make-model | {s:.1} |\n"));
    }
    text.push_str(&format!("| load | {:.1} |\n", report.load_s));
    for (step, s) in &report.steps {
        text.push_str(&format!("| {step} | {s:.1} |\n"));
    }
    text.push_str(&format!("| total | {:.1} |\n\n", report.total_s));
    for note in &report.notes {
        text.push_str(&format!("- {note}\n"));
    }
    write_atomic(&options.out.join("README.md"), text.as_bytes())
}
