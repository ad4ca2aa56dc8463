//! `thoughtscope codi …`: clap arguments, each mapped to one library call (`thoughtscope::codi`),
//! and what is printed.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use thoughtscope::codi::latent::answer::AnswerParser;
use thoughtscope::codi::latent::codi_model::CodiModel;
use thoughtscope::codi::latent::make_model::{make_model, MakeModelOptions};
use thoughtscope::codi::latent::thought_loop::{LogitSlice, LoopMode, LoopOptions};
use thoughtscope::codi::pipeline::{run_all, sample_problems, ModelSpec, RunAllOptions};
use thoughtscope::codi::problems::dataset::{load_problems, write_problems, Problem, TEST_PER_LEVEL};
use thoughtscope::codi::problems::synthetic::{synthetic_problems, DEFAULT_PER_LEVEL, DEFAULT_SEED};
use thoughtscope::codi::runner::layout::ExperimentLayout;
use thoughtscope::codi::runner::step::{for_shard, StepOutcome};
use thoughtscope::codi::seed::ablation::{run_ablation, AblationMode, AblationOptions};
use thoughtscope::codi::seed::analyze::{analyze, write_comparison, AnalyzeOptions, ImportanceRule};
use thoughtscope::codi::seed::eot_attention::{run_attention, scale_layers, AttentionOptions, KeySelection};
use thoughtscope::codi::seed::variant::Variant;
use thoughtscope::io::shard::Shard;
use thoughtscope::model::Settings;
use thoughtscope::{Error, Result};

// The experiment's next steps: their arguments and handlers, in `cli/next_steps.rs`.
mod next_steps;
pub use next_steps::{ComposeArgs, DecomposeArgs, RoutingArgs};

/// Default directory of the CODI-shaped SmolLM2 checkpoint.
pub const DEFAULT_CHECKPOINT: &str = "models/codi-smollm2-135m";
/// Default parent of the experiment folders (`<root>/faithful`, `<root>/corrected`).
pub const DEFAULT_ROOT: &str = "analysis/codi";

#[derive(Debug, Subcommand)]
pub enum CodiCommand {
    /// Write a CODI-shaped checkpoint (seeded LoRA + projection, NOT a CODI model) from a base model.
    MakeModel(MakeModelArgs),
    /// Write the embedded synthetic problem set (NOT GSM8K) in the seed's dataset schema.
    Problems(ProblemsArgs),
    /// Stratified sample of the problem file, reproducing CPython's random.seed + random.sample.
    Dataset(DatasetArgs),
    /// Baseline + one ablation per continuous-thought token for every problem (resumable).
    Ablate(AblateArgs),
    /// Attention from the EOT query to the continuous-thought positions (resumable).
    Attention(AttentionArgs),
    /// Join ablation and attention, write summary_statistics.json and the four figures.
    Analyze(AnalyzeArgs),
    /// dataset → ablate → attention → analyze, faithful and corrected, plus their comparison.
    RunAll(RunAllArgs),
    /// Next step: ablate every pair and triplet of continuous thoughts; interactions, table, figures.
    Compose(ComposeArgs),
    /// Next step: which question tokens each continuous thought attends to, by token type.
    Routing(RoutingArgs),
    /// Next step: per-layer attention/MLP direct logit attribution and the logit lens at each thought.
    Decompose(DecomposeArgs),
}

#[derive(Debug, Args)]
pub struct MakeModelArgs {
    /// Base model: registry name, GGUF file or HF directory.
    #[arg(long, default_value = "smollm2-135m")]
    pub base: String,
    #[arg(long, default_value = DEFAULT_CHECKPOINT)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value_t = 128)]
    pub lora_r: usize,
    #[arg(long, default_value_t = 32.0)]
    pub lora_alpha: f64,
    /// Store base weights in f32 instead of CODI's bf16.
    #[arg(long)]
    pub f32_base: bool,
}

#[derive(Debug, Args)]
pub struct ProblemsArgs {
    /// Problems per difficulty level.
    #[arg(long, default_value_t = DEFAULT_PER_LEVEL)]
    pub per_level: usize,
    #[arg(long, default_value_t = DEFAULT_SEED)]
    pub seed: u64,
    #[arg(long)]
    pub out: PathBuf,
}

/// Where a step reads and writes: the seed's experiment folder.
#[derive(Debug, Args)]
pub struct ExperimentArgs {
    /// Experiment folder (results/ and figures/ inside, as the seed's). Default:
    /// `analysis/codi/<variant>` (faithful unless --mode corrected).
    #[arg(long, alias = "out")]
    pub dir: Option<PathBuf>,
    /// The seed's 10-problem test run: files tagged `_test` (else `_100`).
    #[arg(long)]
    pub test_mode: bool,
}

impl ExperimentArgs {
    fn layout(&self, variant: Variant, problems: usize) -> ExperimentLayout {
        let dir = self.dir.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_ROOT).join(variant.name()));
        ExperimentLayout::new(dir, self.test_mode, problems)
    }
}

#[derive(Debug, Args)]
pub struct DatasetArgs {
    /// The 1,000-problem file (the seed's llama_cot_original_stratified_1000.json). Default: the
    /// embedded synthetic problems (NOT GSM8K).
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// Problems per difficulty level: one number for all four, or four comma-separated (2,3,4,5+ steps).
    #[arg(long, default_value = "25")]
    pub per_level: String,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    #[command(flatten)]
    pub experiment: ExperimentArgs,
}

/// The CODI checkpoint and its base model.
#[derive(Debug, Args)]
pub struct CheckpointArgs {
    /// CODI checkpoint directory or file (model.safetensors or pytorch_model.bin), e.g.
    /// ~/codi_ckpt/llama_gsm8k/.
    #[arg(long, default_value = DEFAULT_CHECKPOINT)]
    pub checkpoint: PathBuf,
    /// The base model it was trained from (registry name, HF directory, cached hub id such as
    /// meta-llama/Llama-3.2-1B-Instruct, or GGUF): its config.json and tokenizer are used.
    /// Default: the checkpoint directory's own. (`run-all`: when --checkpoint holds no
    /// checkpoint, a CODI-shaped one, NOT a CODI model, is built from this base, default
    /// smollm2-135m, with make-model.)
    #[arg(long)]
    pub base: Option<String>,
    /// LoRA alpha when the checkpoint has no codi.json (CODI: 32).
    #[arg(long)]
    pub lora_alpha: Option<f64>,
    /// The LoRA rank the checkpoint must have (CODI: 128); default: whatever it holds.
    #[arg(long)]
    pub lora_rank: Option<usize>,
}

impl CheckpointArgs {
    fn spec(&self) -> ModelSpec {
        ModelSpec {
            checkpoint: self.checkpoint.clone(),
            base: self.base.clone(),
            make_from: None,
            lora_alpha: self.lora_alpha,
            lora_rank: self.lora_rank,
        }
    }
}

/// The CODI model and the latent loop, shared by every model step.
#[derive(Debug, Args)]
pub struct ModelArgs {
    #[command(flatten)]
    pub checkpoint: CheckpointArgs,
    /// Problems file; default: the experiment folder's results/{test_dataset_10,full_dataset_100}.json.
    #[arg(long)]
    pub dataset: Option<PathBuf>,
    /// Latent loop: cotx (CoT_Exploration, 5 latents, EOT at L+6) or official (6 latents, EOT at L+7).
    #[arg(long = "loop", value_parser = crate::named::<LoopMode>(), default_value = "cotx")]
    pub loop_mode: LoopMode,
    /// Default: 200 (cotx, as 1_run_token_ablation.py) / 256 (official). A smaller cap is quicker.
    #[arg(long)]
    pub max_new_tokens: Option<usize>,
    /// Default: the loop's own parser.
    #[arg(long, value_parser = crate::named::<AnswerParser>())]
    pub parser: Option<AnswerParser>,
    #[arg(long, value_parser = crate::named::<LogitSlice>(), default_value = "upstream")]
    pub logit_slice: LogitSlice,
    #[command(flatten)]
    pub device: crate::DeviceArg,
}

impl ModelArgs {
    fn loop_options(&self) -> LoopOptions {
        let mut o = LoopOptions::for_mode(self.loop_mode);
        if let Some(n) = self.max_new_tokens {
            o.max_new_tokens = n;
        }
        if let Some(p) = self.parser {
            o.parser = p;
        }
        o.logit_slice = self.logit_slice;
        o
    }
    fn load_model(&self, settings: &Settings) -> Result<CodiModel> {
        let (codi, _) = self.checkpoint.spec().load(&self.device.settings(settings)?)?;
        if let Some(note) = codi.provenance_note() {
            eprintln!("warning: {note}");
        }
        Ok(codi)
    }
    /// The model and the problems: `--dataset`, else the experiment folder's dataset file.
    fn load_in(&self, experiment: &ExperimentArgs, variant: Variant, settings: &Settings) -> Result<(CodiModel, Vec<Problem>, ExperimentLayout)> {
        let seed_layout = experiment.layout(variant, 100);
        let dataset = self.dataset.clone().unwrap_or_else(|| seed_layout.dataset());
        let problems = load_problems(&dataset).map_err(|e| match e {
            Error::Io { .. } if self.dataset.is_none() => Error::invalid(format!(
                "{}: no dataset in the experiment folder; run `thoughtscope codi dataset{}` first, or give --dataset",
                dataset.display(),
                if experiment.test_mode { " --test-mode" } else { "" }
            )),
            other => other,
        })?;
        let layout = experiment.layout(variant, problems.len());
        Ok((self.load_model(settings)?, problems, layout))
    }
}

/// The ablation hook, shared by `ablate` and `compose`.
#[derive(Debug, Args)]
pub struct HookArgs {
    /// Hook semantics: faithful (CoT_Exploration's) or corrected.
    #[arg(long, value_parser = crate::named::<AblationMode>(), default_value = "faithful")]
    pub mode: AblationMode,
    /// 0-based decoder block whose output is patched (upstream 'middle' = 8; moved to the same
    /// relative depth on a shallower model).
    #[arg(long, default_value_t = 8)]
    pub layer: usize,
    /// Faithful mode: take clean vectors from the block's output, fixing upstream's off-by-one.
    #[arg(long)]
    pub no_off_by_one: bool,
    /// Faithful mode: do not patch the last question token (1_run_token_ablation.py does).
    #[arg(long)]
    pub no_patch_prompt: bool,
}

impl HookArgs {
    /// The ablation settings for `codi` (the block moved to its depth).
    pub fn options(&self, loop_options: LoopOptions, codi: &CodiModel) -> AblationOptions {
        let mut options = AblationOptions::new(loop_options, self.mode);
        options.layer = scale_layers(&[self.layer], codi.model.num_layers())[0];
        options.layer_off_by_one = !self.no_off_by_one;
        options.patch_prompt = self.mode == AblationMode::Faithful && !self.no_patch_prompt;
        options
    }
}

#[derive(Debug, Args)]
pub struct AblateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub experiment: ExperimentArgs,
    #[command(flatten)]
    pub hook: HookArgs,
    /// Skip the gold-answer log-prob (continuous importance).
    #[arg(long)]
    pub no_continuous: bool,
    /// Sharded (a Slurm array task): only this shard's problems (by problem id), written to
    /// `<results>.shard-I-of-N.json`; the same step without a shard merges the parts.
    #[command(flatten)]
    pub shard: crate::ShardArg,
}

#[derive(Debug, Args)]
pub struct AttentionArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub experiment: ExperimentArgs,
    /// 0-based decoder blocks, comma-separated (upstream 4,8,14; moved to the same relative depth).
    #[arg(long, value_delimiter = ',', default_value = "4,8,14")]
    pub layers: Vec<usize>,
    /// Key slice: faithful (2_extract_attention.py's, EOT's self-attention included) or corrected.
    #[arg(long, value_parser = crate::named::<KeySelection>(), default_value = "faithful")]
    pub keys: KeySelection,
    /// Do not store the full attention row.
    #[arg(long)]
    pub no_full_row: bool,
    /// Sharded (a Slurm array task): only this shard's problems (by problem id), written to
    /// `<results>.shard-I-of-N.json`; the same step without a shard merges the parts.
    #[command(flatten)]
    pub shard: crate::ShardArg,
}

#[derive(Debug, Args)]
pub struct AnalyzeArgs {
    #[command(flatten)]
    pub experiment: ExperimentArgs,
    /// Which importance is correlated with attention (auto: the seed's binary one unless no
    /// baseline is correct, then the log-prob drop, with a note).
    #[arg(long, value_parser = crate::named::<ImportanceRule>(), default_value = "auto")]
    pub importance: ImportanceRule,
    /// Another experiment folder (e.g. analysis/codi/corrected) to compare with, side by side.
    #[arg(long)]
    pub compare: Option<PathBuf>,
    /// HTML figures only (no PDF/PNG/SVG through Chromium).
    #[arg(long)]
    pub html_only: bool,
}

#[derive(Debug, Args)]
pub struct RunAllArgs {
    /// The seed's 10-problem test run (3/3/2/2), files tagged `_test`.
    #[arg(long)]
    pub test_mode: bool,
    /// The 1,000-problem file (the seed's llama_cot_original_stratified_1000.json). Default: the
    /// embedded synthetic problems (NOT GSM8K).
    #[arg(long)]
    pub input: Option<PathBuf>,
    #[command(flatten)]
    pub checkpoint: CheckpointArgs,
    /// Parent of the experiment folders faithful/ and corrected/.
    #[arg(long, default_value = DEFAULT_ROOT)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    #[arg(long = "loop", value_parser = crate::named::<LoopMode>(), default_value = "cotx")]
    pub loop_mode: LoopMode,
    /// Default: 200 (as 1_run_token_ablation.py). E.g. 16 for a quick run.
    #[arg(long)]
    pub max_new_tokens: Option<usize>,
    #[arg(long, default_value_t = 8)]
    pub layer: usize,
    #[arg(long, value_delimiter = ',', default_value = "4,8,14")]
    pub attention_layers: Vec<usize>,
    /// Variants to run, comma-separated.
    #[arg(long, value_parser = crate::named::<Variant>(), value_delimiter = ',', default_value = "faithful,corrected")]
    pub variants: Vec<Variant>,
    /// Faithful variant: do not patch the last question token (1_run_token_ablation.py does).
    #[arg(long)]
    pub no_patch_prompt: bool,
    #[arg(long, value_parser = crate::named::<ImportanceRule>(), default_value = "auto")]
    pub importance: ImportanceRule,
    /// HTML figures only (no PDF/PNG/SVG through Chromium).
    #[arg(long)]
    pub html_only: bool,
    #[command(flatten)]
    pub device: crate::DeviceArg,
}

fn parse_per_level(text: &str) -> Result<[usize; 4]> {
    let parts: Vec<usize> = text
        .split(',')
        .map(|p| p.trim().parse::<usize>().map_err(|_| Error::invalid(format!("--per-level: `{p}` is not a number"))))
        .collect::<Result<_>>()?;
    match parts.as_slice() {
        [n] => Ok([*n; 4]),
        [a, b, c, d] => Ok([*a, *b, *c, *d]),
        _ => Err(Error::invalid("--per-level takes one number or four (2-step,3-step,4-step,5+step)")),
    }
}

fn variant_of(mode: AblationMode) -> Variant {
    match mode {
        AblationMode::Faithful => Variant::Faithful,
        AblationMode::Corrected => Variant::Corrected,
    }
}

/// A Slurm array task's share of a step (`--shard I/N`): its problems run into the part file
/// beside `out` ([`for_shard`]); the same step without a shard merges the parts.
fn run_shard<R>(
    shard: Shard,
    problems: &[Problem],
    out: &Path,
    run: impl FnOnce(&[Problem], &Path) -> Result<StepOutcome<R>>,
) -> Result<()> {
    let (mine, part) = for_shard(problems, out, shard);
    let outcome = run(&mine, &part)?;
    outln!(
        "shard {shard}: {} of {} problems ({} computed now, {} failed); wrote {}",
        mine.len(),
        problems.len(),
        outcome.computed,
        outcome.failed,
        part.display()
    );
    Ok(())
}

/// Run one `codi` subcommand.
pub fn run(command: CodiCommand, settings: &Settings) -> Result<()> {
    match command {
        CodiCommand::MakeModel(a) => {
            let options = MakeModelOptions {
                base: a.base,
                seed: a.seed,
                lora_r: a.lora_r,
                lora_alpha: a.lora_alpha,
                base_bf16: !a.f32_base,
            };
            let file = make_model(&options, &a.out, settings)?;
            outln!("wrote {} (NOT A CODI MODEL: seeded random LoRA/projection on {})", file.display(), options.base);
        }
        CodiCommand::Problems(a) => {
            let problems = synthetic_problems(a.per_level, a.seed)?;
            write_problems(&problems, &a.out)?;
            outln!("wrote {} synthetic problems (NOT GSM8K) to {}", problems.len(), a.out.display());
        }
        CodiCommand::Dataset(a) => {
            let per_level = if a.experiment.test_mode { TEST_PER_LEVEL } else { parse_per_level(&a.per_level)? };
            let sample = sample_problems(a.input.as_deref(), per_level, a.seed)?;
            let variants: &[Variant] = if a.experiment.dir.is_some() { &[Variant::Faithful] } else { &[Variant::Faithful, Variant::Corrected] };
            for &variant in variants {
                let path = a.experiment.layout(variant, sample.len()).dataset();
                write_problems(&sample, &path)?;
                outln!("wrote {} problems to {}", sample.len(), path.display());
            }
        }
        CodiCommand::Ablate(a) => {
            let (codi, problems, layout) = a.model.load_in(&a.experiment, variant_of(a.hook.mode), settings)?;
            let mut options = a.hook.options(a.model.loop_options(), &codi);
            options.continuous = !a.no_continuous;
            if let Some(shard) = a.shard.resolve()? {
                return run_shard(shard, &problems, &layout.ablation(), |mine, part| run_ablation(&codi, mine, &options, part));
            }
            let summary = run_ablation(&codi, &problems, &options, &layout.ablation())?;
            let (correct, counts) = summary.critical_counts();
            outln!(
                "{} problems ({} computed now, {} failed); {correct} baselines correct; critical per token: {counts:?}; wrote {}",
                summary.records.len(),
                summary.computed,
                summary.failed,
                layout.ablation().display()
            );
        }
        CodiCommand::Attention(a) => {
            let variant = match a.keys {
                KeySelection::Faithful => Variant::Faithful,
                KeySelection::Corrected => Variant::Corrected,
            };
            let (codi, problems, layout) = a.model.load_in(&a.experiment, variant, settings)?;
            let options = AttentionOptions {
                loop_options: a.model.loop_options(),
                layers: scale_layers(&a.layers, codi.model.num_layers()),
                keys: a.keys,
                full_row: !a.no_full_row,
            };
            if let Some(shard) = a.shard.resolve()? {
                return run_shard(shard, &problems, &layout.attention(), |mine, part| run_attention(&codi, mine, &options, part));
            }
            let outcome = run_attention(&codi, &problems, &options, &layout.attention())?;
            outln!(
                "{} problems written to {} ({} computed now, {} failed)",
                outcome.records.len(),
                layout.attention().display(),
                outcome.computed,
                outcome.failed
            );
        }
        CodiCommand::Analyze(a) => {
            let options = AnalyzeOptions { importance: a.importance, static_images: !a.html_only, ..AnalyzeOptions::default() };
            let layout = a.experiment.layout(Variant::Faithful, 100);
            let analysis = analyze(&layout, &options)?;
            for note in &analysis.notes {
                eprintln!("note: {note}");
            }
            outln!("{}", serde_json::to_string_pretty(&analysis.summary.overall_correlation)?);
            outln!("wrote {} and {}", layout.summary().display(), layout.figures_dir().display());
            if let Some(other_dir) = a.compare {
                let other = ExperimentLayout { root: other_dir, tag: layout.tag.clone() };
                let compared = analyze(&other, &options)?;
                let parent = layout.root.parent().unwrap_or(std::path::Path::new("."));
                write_comparison(&analysis.summary, &compared.summary, parent, "")?;
                outln!("comparison: {}", parent.join("comparison.md").display());
            }
        }
        CodiCommand::RunAll(a) => {
            let mut model = a.checkpoint.spec();
            let make_base = a.checkpoint.base.clone().unwrap_or_else(|| "smollm2-135m".to_owned());
            model.make_from = Some(MakeModelOptions { base: make_base, ..MakeModelOptions::default() });
            let mut options = RunAllOptions::new(model, a.out.clone());
            options.input = a.input;
            options.test_mode = a.test_mode;
            options.seed = a.seed;
            options.loop_mode = a.loop_mode;
            options.max_new_tokens = a.max_new_tokens;
            options.layer = a.layer;
            options.attention_layers = a.attention_layers;
            options.variants = a.variants;
            options.patch_prompt = !a.no_patch_prompt;
            options.importance = a.importance;
            options.static_images = !a.html_only;
            let report = run_all(&options, &a.device.settings(settings)?)?;
            for note in &report.notes {
                outln!("{note}");
            }
            for (step, s) in &report.steps {
                outln!("{step:>20}: {s:7.1} s");
            }
            outln!("total {:.1} s; see {}", report.total_s, a.out.join("README.md").display());
        }
        CodiCommand::Compose(a) => next_steps::compose(a, settings)?,
        CodiCommand::Routing(a) => next_steps::routing(a, settings)?,
        CodiCommand::Decompose(a) => next_steps::decompose(a, settings)?,
    }
    Ok(())
}
