//! `codi run-all`: the seed README's four steps in one call — dataset → token ablation →
//! attention → analysis and figures — for the faithful variant (CoT_Exploration's hook and key
//! slice) and the corrected one, plus their comparison table.
//!
//! Output layout under `out`:
//! ```text
//! dataset_<tag>.json
//! faithful/{token_ablation_results_<tag>.json, attention_weights_<tag>.json, analysis/…}
//! corrected/{…}
//! comparison.md, comparison.json, README.md
//! ```
//! `<tag>` is `test` in test mode (3/3/2/2 problems) and the problem count otherwise (`100`).
//! Every step resumes: rerunning skips finished problems.

use std::path::PathBuf;
use std::time::Instant;

use candle_core::Device;
use serde::{Deserialize, Serialize};

use super::ablate::{run_ablation, AblationMode, AblationOptions};
use super::analyze::{analyze, write_comparison, AnalyzeOptions, ImportanceKind};
use super::attention::{run_attention, scale_layers, AttentionOptions, KeySelection, UPSTREAM_LAYERS};
use super::dataset::{load_problems, stratified_sample, write_atomic, write_problems, FULL_PER_LEVEL, TEST_PER_LEVEL};
use super::latent::{LoopMode, LoopOptions};
use super::make_model::{make_model, MakeModelOptions};
use super::model::{CodiModel, LoadOptions};
use crate::{Error, Result};

/// `max_new_tokens` in test mode. CODI answers "The answer is: N" then EOS: 7–8 tokens with
/// Llama-3's tokenizer, 11 for a 5-digit N with SmolLM2's (one token per digit), so 16 keeps every
/// answer of the 10 test problems while a synthetic model (which never emits EOS) stays fast on
/// CPU: decoding is ~45 ms/token for SmolLM2-135M in f32 on 2 cores, 140 decodes per test run.
pub const TEST_MODE_MAX_NEW_TOKENS: usize = 16;

/// Which variants `run-all` computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    Faithful,
    Corrected,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Faithful => "faithful",
            Variant::Corrected => "corrected",
        }
    }
}

/// Settings of [`run_all`].
#[derive(Debug, Clone)]
pub struct RunAllOptions {
    /// The 1,000-problem file.
    pub input: PathBuf,
    /// CODI checkpoint directory.
    pub checkpoint: PathBuf,
    /// Build the checkpoint from this base first when `checkpoint` has none.
    pub make_from: Option<MakeModelOptions>,
    pub out: PathBuf,
    pub test_mode: bool,
    pub seed: u64,
    /// Overrides 25/level (3/3/2/2 in test mode).
    pub per_level: Option<[usize; 4]>,
    pub loop_mode: LoopMode,
    /// Overrides the loop's upstream default (and the test-mode cap).
    pub max_new_tokens: Option<usize>,
    /// Ablation block (upstream 8); moved to the same relative depth on shallower models.
    pub layer: usize,
    /// Attention blocks (upstream 4, 8, 14); moved likewise.
    pub attention_layers: Vec<usize>,
    pub variants: Vec<Variant>,
    pub static_images: bool,
}

impl RunAllOptions {
    pub fn new(input: PathBuf, checkpoint: PathBuf, out: PathBuf) -> Self {
        RunAllOptions {
            input,
            checkpoint,
            make_from: None,
            out,
            test_mode: false,
            seed: 42,
            per_level: None,
            loop_mode: LoopMode::Cotx,
            max_new_tokens: None,
            layer: 8,
            attention_layers: UPSTREAM_LAYERS.to_vec(),
            variants: vec![Variant::Faithful, Variant::Corrected],
            static_images: true,
        }
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

/// Run every step; see the module docs for the layout.
pub fn run_all(options: &RunAllOptions, device: &Device) -> Result<RunAllReport> {
    let start = Instant::now();
    let mut report = RunAllReport::default();
    let tag_of = |n: usize| if options.test_mode { "test".to_owned() } else { n.to_string() };

    // 1. Dataset.
    let per_level = options.per_level.unwrap_or(if options.test_mode { TEST_PER_LEVEL } else { FULL_PER_LEVEL });
    let t = Instant::now();
    let problems = stratified_sample(&load_problems(&options.input)?, per_level, options.seed)?;
    let tag = tag_of(problems.len());
    let dataset_path = options.out.join(format!("dataset_{tag}.json"));
    write_problems(&problems, &dataset_path)?;
    report.problems = problems.len();
    report.steps.push(("dataset".into(), t.elapsed().as_secs_f64()));
    report.files.push(dataset_path);

    // 2. Model (built first if asked and absent).
    let has_checkpoint = super::checkpoint::find_checkpoint(&options.checkpoint).is_ok();
    if !has_checkpoint {
        let make = options.make_from.as_ref().ok_or_else(|| {
            Error::invalid(format!(
                "no CODI checkpoint in {} (give --base to build a CODI-shaped one with make-model)",
                options.checkpoint.display()
            ))
        })?;
        let t = Instant::now();
        make_model(make, &options.checkpoint)?;
        report.make_model_s = Some(t.elapsed().as_secs_f64());
    }
    let t = Instant::now();
    let codi = CodiModel::load(&options.checkpoint, &LoadOptions::default(), device)?;
    report.load_s = t.elapsed().as_secs_f64();
    if let Some(note) = codi.provenance_note() {
        report.notes.push(note);
    }

    let n_layers = codi.model.num_layers();
    let layer = scale_layers(&[options.layer], n_layers)[0];
    let attention_layers = scale_layers(&options.attention_layers, n_layers);
    if layer != options.layer || attention_layers != options.attention_layers {
        report.notes.push(format!(
            "the model has {n_layers} blocks: ablation layer {} → {layer}, attention layers {:?} → {attention_layers:?} (same relative depth as in LLaMA-3.2-1B's 16)",
            options.layer, options.attention_layers
        ));
    }
    let mut loop_options = LoopOptions::for_mode(options.loop_mode);
    loop_options.max_new_tokens = options
        .max_new_tokens
        .unwrap_or(if options.test_mode { TEST_MODE_MAX_NEW_TOKENS } else { loop_options.max_new_tokens });

    // 3–5. Per variant: ablation, attention, analysis.
    let title_note = if codi.meta.real_codi { String::new() } else { " — NOT A CODI MODEL".to_owned() };
    let mut summaries = Vec::new();
    for &variant in &options.variants {
        let dir = options.out.join(variant.name());
        let (mode, keys) = match variant {
            Variant::Faithful => (AblationMode::Faithful, KeySelection::Faithful),
            Variant::Corrected => (AblationMode::Corrected, KeySelection::Corrected),
        };
        let mut ablation_options = AblationOptions::new(loop_options.clone(), mode);
        ablation_options.layer = layer;
        let ablation_path = dir.join(format!("token_ablation_results_{tag}.json"));
        let t = Instant::now();
        let summary = run_ablation(&codi, &problems, &ablation_options, &ablation_path)?;
        report.steps.push((format!("{}/ablate", variant.name()), t.elapsed().as_secs_f64()));
        let (correct, counts) = summary.critical_counts();
        report.notes.push(format!(
            "{}: {correct}/{} baselines correct; critical counts per token {counts:?}; {} failed",
            variant.name(),
            summary.records.len(),
            summary.failed
        ));

        let attention_options = AttentionOptions {
            loop_options: loop_options.clone(),
            layers: attention_layers.clone(),
            keys,
            full_row: true,
        };
        let attention_path = dir.join(format!("attention_weights_{tag}.json"));
        let t = Instant::now();
        run_attention(&codi, &problems, &attention_options, &attention_path)?;
        report.steps.push((format!("{}/attention", variant.name()), t.elapsed().as_secs_f64()));

        let t = Instant::now();
        let analyze_options = AnalyzeOptions {
            importance: ImportanceKind::Binary,
            static_images: options.static_images,
            title_note: title_note.clone(),
            all_baselines: false,
        };
        match analyze(&ablation_path, &attention_path, &dir.join("analysis"), &analyze_options) {
            Ok(analysis) => {
                for note in analysis.notes {
                    if !report.notes.contains(&note) {
                        report.notes.push(note);
                    }
                }
                report.files.extend(analysis.files);
                summaries.push((variant, analysis.summary));
            }
            // With no correct baseline (a synthetic model rarely answers right) binary importance
            // has nothing to join; fall back to the continuous variant so the step still runs.
            Err(Error::Invalid(msg)) if msg.starts_with("nothing to analyse") => {
                report.notes.push(format!("{}: {msg}; analysed the log-prob importance instead", variant.name()));
                let options =
                    AnalyzeOptions { importance: ImportanceKind::Logprob, all_baselines: true, ..analyze_options };
                let analysis = analyze(&ablation_path, &attention_path, &dir.join("analysis"), &options)?;
                for note in analysis.notes {
                    if !report.notes.contains(&note) {
                        report.notes.push(note);
                    }
                }
                report.files.extend(analysis.files);
                summaries.push((variant, analysis.summary));
            }
            Err(e) => return Err(e),
        }
        report.steps.push((format!("{}/analyze", variant.name()), t.elapsed().as_secs_f64()));
        report.files.push(ablation_path);
        report.files.push(attention_path);
    }

    // 6. Faithful vs corrected.
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
    write_readme(options, &codi, &report, &loop_options)?;
    report.files.push(options.out.join("README.md"));
    Ok(report)
}

fn write_readme(options: &RunAllOptions, codi: &CodiModel, report: &RunAllReport, loop_options: &LoopOptions) -> Result<()> {
    let mut text = String::from("# thoughtscope codi run-all\n\n");
    if let Some(note) = codi.provenance_note() {
        text.push_str(&format!("**{note}.**\n\n"));
    }
    text.push_str(&format!(
        "- checkpoint: `{}` (weights hash {})\n- problems: {} (test mode: {})\n- loop: {:?}, max_new_tokens {}, parser {:?}\n\n",
        options.checkpoint.display(),
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
