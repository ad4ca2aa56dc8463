//! `thoughtscope codi compose | routing | decompose`: the experiment's three next steps.
//! Each writes `<out>/results/<name>_<tag>.json` (resumable, with a `.meta.json` sidecar), its
//! tables beside it and its figures in `<out>/figures/`; `<tag>` is `test` with `--test-mode`,
//! else the number of problems. With `--shard I/N` (or in a Slurm array task) a step computes
//! only its share into `<name>_<tag>.shard-I-of-N.json` and writes no tables or figures; the
//! same step without a shard merges the parts and analyses them, as `codi ablate` does.

use std::path::{Path, PathBuf};

use clap::Args;

use super::{run_shard, ExperimentArgs, HookArgs, ModelArgs};
use thoughtscope::codi::next::analyze::{compose_with_rule, decompose_step, routing_step, DecomposeAnalysisOptions, RoutingAnalysisOptions};
use thoughtscope::codi::next::compose;
use thoughtscope::codi::next::decompose::{self, DecomposeOptions};
use thoughtscope::codi::next::routing::{self, RoutingOptions};
use thoughtscope::codi::pipeline::QUICK_MAX_NEW_TOKENS;
use thoughtscope::codi::runner::output::markdown_table;
use thoughtscope::codi::runner::step::StepOutcome;
use thoughtscope::codi::seed::analyze::ImportanceRule;
use thoughtscope::codi::seed::variant::Variant;
use thoughtscope::model::Settings;
use thoughtscope::Result;

/// Output settings shared by the three steps: the experiment folder (its dataset is the default
/// input; `--test-mode` tags files `_test` and, for compose, caps decoding at 16 tokens).
#[derive(Debug, Args)]
pub struct NextStepOutput {
    #[command(flatten)]
    pub experiment: ExperimentArgs,
    /// Write HTML figures only (no PNG/SVG through Chromium).
    #[arg(long)]
    pub html_only: bool,
}

fn print_outcome<R>(outcome: &StepOutcome<R>, out: &Path) {
    outln!("{} problems ({} computed now, {} failed) in {}", outcome.records.len(), outcome.computed, outcome.failed, out.display());
}

fn print_files(files: &[PathBuf], notes: &[String]) {
    for note in notes {
        eprintln!("note: {note}");
    }
    for file in files {
        outln!("wrote {}", file.display());
    }
}

#[derive(Debug, Args)]
pub struct ComposeArgs {
    #[command(flatten)]
    pub common: ModelArgs,
    #[command(flatten)]
    pub output: NextStepOutput,
    /// The hook, as `codi ablate`.
    #[command(flatten)]
    pub hook: HookArgs,
    /// Importance shown in the figures, by the rule of `codi analyze` (auto: binary unless no
    /// baseline is correct, then the log-prob drop over all problems).
    #[arg(long, value_parser = crate::named::<ImportanceRule>(), default_value = "auto")]
    pub importance: ImportanceRule,
    /// Sharded (a Slurm array task): only this shard's problems (by problem id), written to
    /// `<results>.shard-I-of-N.json`; the same step without a shard merges the parts.
    #[command(flatten)]
    pub shard: crate::ShardArg,
}

/// `codi compose`.
pub fn compose(a: ComposeArgs, settings: &Settings) -> Result<()> {
    // `--mode corrected` without `--dir` goes to the corrected experiment's folder.
    let (codi, problems, layout) = a.common.load_in(&a.output.experiment, super::variant_of(a.hook.mode), settings)?;
    let mut loop_options = a.common.loop_options();
    if a.output.experiment.test_mode && a.common.max_new_tokens.is_none() {
        loop_options.max_new_tokens = QUICK_MAX_NEW_TOKENS;
    }
    let options = a.hook.options(loop_options, &codi);
    if let Some(shard) = a.shard.resolve()? {
        let out = layout.result(compose::RESULTS_STEM, "json");
        return run_shard(shard, &problems, &out, |mine, part| compose::run_compose(&codi, mine, &options, part));
    }
    let (outcome, analysis, _) = compose_with_rule(
        &codi,
        &problems,
        &options,
        &layout,
        a.importance,
        !a.output.html_only,
        &codi.title_note(),
    )?;
    print_outcome(&outcome, &layout.result(compose::RESULTS_STEM, "json"));
    outln!("{}", markdown_table(&compose::summary_table(&analysis.summary)?));
    print_files(&analysis.files, &analysis.notes);
    Ok(())
}

#[derive(Debug, Args)]
pub struct RoutingArgs {
    #[command(flatten)]
    pub common: ModelArgs,
    #[command(flatten)]
    pub output: NextStepOutput,
    /// Blocks kept head-averaged (comma-separated; default: all).
    #[arg(long, value_delimiter = ',')]
    pub layers: Option<Vec<usize>>,
    /// Blocks kept per head too (default: upstream's 4,8,14 at the model's relative depth).
    #[arg(long, value_delimiter = ',')]
    pub head_layers: Option<Vec<usize>>,
    /// Problems drawn as a question-token × thought heatmap.
    #[arg(long, default_value_t = 3)]
    pub heatmaps: usize,
    /// Sharded (a Slurm array task): only this shard's problems (by problem id), written to
    /// `<results>.shard-I-of-N.json`; the same step without a shard merges the parts.
    #[command(flatten)]
    pub shard: crate::ShardArg,
}

/// `codi routing`.
pub fn routing(a: RoutingArgs, settings: &Settings) -> Result<()> {
    let (codi, problems, layout) = a.common.load_in(&a.output.experiment, Variant::Faithful, settings)?;
    let mut options = RoutingOptions::for_model(&codi, a.common.loop_options());
    if let Some(layers) = a.layers {
        options.layers = layers;
    }
    if let Some(layers) = a.head_layers {
        options.head_layers = layers;
    }
    // Per-head layers are also drawn head-averaged.
    for &l in &options.head_layers {
        if !options.layers.contains(&l) {
            options.layers.push(l);
        }
    }
    if let Some(shard) = a.shard.resolve()? {
        let out = layout.result(routing::RESULTS_STEM, "json");
        return run_shard(shard, &problems, &out, |mine, part| routing::run_routing(&codi, mine, &options, part));
    }
    let analysis_options =
        RoutingAnalysisOptions { heatmaps: a.heatmaps, static_images: !a.output.html_only, title_note: codi.title_note() };
    let (outcome, analysis) = routing_step(&codi, &problems, &options, &layout, &analysis_options)?;
    print_outcome(&outcome, &layout.result(routing::RESULTS_STEM, "json"));
    print_files(&analysis.files, &analysis.notes);
    Ok(())
}

#[derive(Debug, Args)]
pub struct DecomposeArgs {
    #[command(flatten)]
    pub common: ModelArgs,
    #[command(flatten)]
    pub output: NextStepOutput,
    /// Tokens listed per logit-lens row.
    #[arg(long, default_value_t = 5)]
    pub top_k: usize,
    /// Problems whose logit lens is drawn and tabled.
    #[arg(long, default_value_t = 3)]
    pub lens_problems: usize,
    /// Sharded (a Slurm array task): only this shard's problems (by problem id), written to
    /// `<results>.shard-I-of-N.json`; the same step without a shard merges the parts.
    #[command(flatten)]
    pub shard: crate::ShardArg,
}

/// `codi decompose`.
pub fn decompose(a: DecomposeArgs, settings: &Settings) -> Result<()> {
    let (codi, problems, layout) = a.common.load_in(&a.output.experiment, Variant::Faithful, settings)?;
    let mut options = DecomposeOptions::new(a.common.loop_options());
    options.top_k = a.top_k;
    if let Some(shard) = a.shard.resolve()? {
        let out = layout.result(decompose::RESULTS_STEM, "json");
        return run_shard(shard, &problems, &out, |mine, part| decompose::run_decompose(&codi, mine, &options, part));
    }
    let analysis_options = DecomposeAnalysisOptions {
        lens_problems: a.lens_problems,
        static_images: !a.output.html_only,
        title_note: codi.title_note(),
    };
    let (outcome, analysis) = decompose_step(&codi, &problems, &options, &layout, &analysis_options)?;
    print_outcome(&outcome, &layout.result(decompose::RESULTS_STEM, "json"));
    print_files(&analysis.files, &analysis.notes);
    Ok(())
}
