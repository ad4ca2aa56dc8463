//! `thoughtscope codi …` arguments (clap) and their one-call handlers, so the binary only
//! forwards: `Command::Codi(cmd) => thoughtscope::codi::cli::run(cmd)`.

use std::path::PathBuf;

use candle_core::Device;
use clap::{Args, Subcommand};

use super::ablate::{run_ablation, AblationMode, AblationOptions};
use super::analyze::{analyze, write_comparison, AnalyzeOptions, ImportanceKind};
use super::answer::AnswerParser;
use super::attention::{run_attention, AttentionOptions, KeySelection};
use super::dataset::{load_problems, make_dataset, TEST_PER_LEVEL};
use super::latent::{LogitSlice, LoopMode, LoopOptions};
use super::make_model::{make_model, MakeModelOptions};
use super::model::{CodiModel, LoadOptions};
use super::pipeline::{run_all, RunAllOptions, Variant};
use crate::{Error, Result};

// The seed's next steps (issue 13): their arguments and handlers, in `cli/next_steps.rs`.
mod next_steps;
pub use next_steps::{ComposeArgs, DecomposeArgs, RoutingArgs};

/// Default location of the 1,000-problem file (read-only shared data, never copied into the repo).
pub const DEFAULT_INPUT: &str = "../shared/data/codi/llama_cot_original_stratified_1000.json";
/// Default directory of the CODI-shaped SmolLM2 checkpoint.
pub const DEFAULT_CHECKPOINT: &str = "models/codi-smollm2-135m";

#[derive(Debug, Subcommand)]
pub enum CodiCommand {
    /// Write a CODI-shaped checkpoint (seeded LoRA + projection, NOT a CODI model) from a base model.
    MakeModel(MakeModelArgs),
    /// Stratified sample of the problem file, reproducing CPython's random.seed + random.sample.
    Dataset(DatasetArgs),
    /// Baseline + one ablation per continuous-thought token for every problem (resumable).
    Ablate(AblateArgs),
    /// Attention from the EOT query to the continuous-thought positions (resumable).
    Attention(AttentionArgs),
    /// Join ablation and attention, write summary_statistics.json and the figures.
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
pub struct DatasetArgs {
    #[arg(long, default_value = DEFAULT_INPUT)]
    pub input: PathBuf,
    /// Problems per difficulty level: one number for all four, or four comma-separated (2,3,4,5+ steps).
    #[arg(long, default_value = "25")]
    pub per_level: String,
    /// The 10-problem test set (3/3/2/2).
    #[arg(long)]
    pub test_mode: bool,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    #[arg(long)]
    pub out: PathBuf,
}

/// Model and loop settings shared by `ablate` and `attention`.
#[derive(Debug, Args)]
pub struct LoopArgs {
    /// CODI checkpoint directory (model.safetensors or pytorch_model.bin, config.json, tokenizer.json).
    #[arg(long, default_value = DEFAULT_CHECKPOINT)]
    pub checkpoint: PathBuf,
    /// LoRA alpha when the checkpoint has no codi.json (CODI: 32).
    #[arg(long)]
    pub lora_alpha: Option<f64>,
    /// Base config.json when the checkpoint directory has none (e.g. Llama-3.2-1B-Instruct's).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// tokenizer.json when the checkpoint directory has none.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Problems (as written by `codi dataset`).
    #[arg(long)]
    pub dataset: PathBuf,
    /// Latent loop: cotx (CoT_Exploration, 5 latents, EOT at L+6) or official (6 latents, EOT at L+7).
    #[arg(long = "loop", value_enum, default_value = "cotx")]
    pub loop_mode: LoopMode,
    /// Default: 200 (cotx) / 256 (official).
    #[arg(long)]
    pub max_new_tokens: Option<usize>,
    /// Default: the loop's own parser.
    #[arg(long, value_enum)]
    pub parser: Option<AnswerParser>,
    #[arg(long, value_enum, default_value = "upstream")]
    pub logit_slice: LogitSlice,
}

impl LoopArgs {
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
    fn load(&self) -> Result<(CodiModel, Vec<super::dataset::Problem>)> {
        let options =
            LoadOptions { lora_alpha: self.lora_alpha, config: self.config.clone(), tokenizer: self.tokenizer.clone() };
        let codi = CodiModel::load(&self.checkpoint, &options, &device())?;
        if let Some(note) = codi.provenance_note() {
            eprintln!("warning: {note}");
        }
        Ok((codi, load_problems(&self.dataset)?))
    }
}

#[derive(Debug, Args)]
pub struct AblateArgs {
    #[command(flatten)]
    pub common: LoopArgs,
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, value_enum, default_value = "faithful")]
    pub mode: AblationMode,
    /// 0-based decoder block whose output is patched (upstream 'middle' = 8).
    #[arg(long, default_value_t = 8)]
    pub layer: usize,
    /// Faithful mode: take clean vectors from the block's output, fixing upstream's off-by-one.
    #[arg(long)]
    pub no_off_by_one: bool,
    /// Faithful mode: also patch the last question token (bug of 1_run_token_ablation.py).
    #[arg(long)]
    pub patch_prompt: bool,
    /// Skip the gold-answer log-prob (continuous importance).
    #[arg(long)]
    pub no_continuous: bool,
}

#[derive(Debug, Args)]
pub struct AttentionArgs {
    #[command(flatten)]
    pub common: LoopArgs,
    #[arg(long)]
    pub out: PathBuf,
    /// 0-based decoder blocks, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "4,8,14")]
    pub layers: Vec<usize>,
    #[arg(long, value_enum, default_value = "faithful")]
    pub keys: KeySelection,
    /// Do not store the full attention row.
    #[arg(long)]
    pub no_full_row: bool,
}

#[derive(Debug, Args)]
pub struct AnalyzeArgs {
    #[arg(long)]
    pub ablation: PathBuf,
    #[arg(long)]
    pub attention: PathBuf,
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, value_enum, default_value = "binary")]
    pub importance: ImportanceKind,
    /// Keep problems whose baseline is wrong (not upstream; meant for --importance logprob).
    #[arg(long)]
    pub all_baselines: bool,
    /// A corrected-mode ablation file to compare against (with --compare-attention).
    #[arg(long, requires = "compare_attention")]
    pub compare_ablation: Option<PathBuf>,
    #[arg(long, requires = "compare_ablation")]
    pub compare_attention: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RunAllArgs {
    /// The 10-problem test set (3/3/2/2) and max_new_tokens capped at 16.
    #[arg(long)]
    pub test_mode: bool,
    #[arg(long, default_value = DEFAULT_INPUT)]
    pub input: PathBuf,
    #[arg(long, default_value = DEFAULT_CHECKPOINT)]
    pub checkpoint: PathBuf,
    /// Build the checkpoint from this base with make-model when it is missing.
    #[arg(long, default_value = "smollm2-135m")]
    pub base: String,
    #[arg(long, default_value = "analysis/codi")]
    pub out: PathBuf,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    #[arg(long = "loop", value_enum, default_value = "cotx")]
    pub loop_mode: LoopMode,
    #[arg(long)]
    pub max_new_tokens: Option<usize>,
    #[arg(long, default_value_t = 8)]
    pub layer: usize,
    #[arg(long, value_delimiter = ',', default_value = "4,8,14")]
    pub attention_layers: Vec<usize>,
    /// Variants to run, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "faithful,corrected")]
    pub variants: Vec<Variant>,
}

fn device() -> Device {
    Device::cuda_if_available(0).unwrap_or(Device::Cpu)
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

/// Run one `codi` subcommand.
pub fn run(command: CodiCommand) -> Result<()> {
    match command {
        CodiCommand::MakeModel(a) => {
            let options = MakeModelOptions {
                base: a.base,
                seed: a.seed,
                lora_r: a.lora_r,
                lora_alpha: a.lora_alpha,
                base_bf16: !a.f32_base,
            };
            let file = make_model(&options, &a.out)?;
            println!("wrote {} (NOT A CODI MODEL: seeded random LoRA/projection on {})", file.display(), options.base);
        }
        CodiCommand::Dataset(a) => {
            let per_level = if a.test_mode { TEST_PER_LEVEL } else { parse_per_level(&a.per_level)? };
            let sample = make_dataset(&a.input, per_level, a.seed, &a.out)?;
            println!("wrote {} problems to {}", sample.len(), a.out.display());
        }
        CodiCommand::Ablate(a) => {
            let (codi, problems) = a.common.load()?;
            let mut options = AblationOptions::new(a.common.loop_options(), a.mode);
            options.layer = a.layer;
            options.layer_off_by_one = !a.no_off_by_one;
            options.patch_prompt = a.patch_prompt;
            options.continuous = !a.no_continuous;
            let summary = run_ablation(&codi, &problems, &options, &a.out)?;
            let (correct, counts) = summary.critical_counts();
            println!(
                "{} problems ({} computed now, {} failed); {correct} baselines correct; critical per token: {counts:?}",
                summary.records.len(),
                summary.computed,
                summary.failed
            );
        }
        CodiCommand::Attention(a) => {
            let (codi, problems) = a.common.load()?;
            let options = AttentionOptions {
                loop_options: a.common.loop_options(),
                layers: a.layers,
                keys: a.keys,
                full_row: !a.no_full_row,
            };
            let records = run_attention(&codi, &problems, &options, &a.out)?;
            let failed = records.iter().filter(|r| r.error.is_some()).count();
            println!("{} problems written to {} ({failed} failed)", records.len(), a.out.display());
        }
        CodiCommand::Analyze(a) => {
            let options = AnalyzeOptions {
                importance: a.importance,
                all_baselines: a.all_baselines,
                ..AnalyzeOptions::default()
            };
            let analysis = analyze(&a.ablation, &a.attention, &a.out, &options)?;
            for note in &analysis.notes {
                eprintln!("note: {note}");
            }
            println!("{}", serde_json::to_string_pretty(&analysis.summary.overall_correlation)?);
            if let (Some(ab), Some(at)) = (a.compare_ablation, a.compare_attention) {
                let other = analyze(&ab, &at, &a.out.join("compared"), &options)?;
                write_comparison(&analysis.summary, &other.summary, &a.out, "")?;
                println!("comparison: {}", a.out.join("comparison.md").display());
            }
        }
        CodiCommand::RunAll(a) => {
            let mut options = RunAllOptions::new(a.input, a.checkpoint, a.out.clone());
            options.make_from = Some(MakeModelOptions { base: a.base, ..MakeModelOptions::default() });
            options.test_mode = a.test_mode;
            options.seed = a.seed;
            options.loop_mode = a.loop_mode;
            options.max_new_tokens = a.max_new_tokens;
            options.layer = a.layer;
            options.attention_layers = a.attention_layers;
            options.variants = a.variants;
            let report = run_all(&options, &device())?;
            for note in &report.notes {
                println!("{note}");
            }
            for (step, s) in &report.steps {
                println!("{step:>20}: {s:7.1} s");
            }
            println!("total {:.1} s; see {}", report.total_s, a.out.join("README.md").display());
        }
        CodiCommand::Compose(a) => next_steps::compose(a)?,
        CodiCommand::Routing(a) => next_steps::routing(a)?,
        CodiCommand::Decompose(a) => next_steps::decompose(a)?,
    }
    Ok(())
}
