//! `bench analysis` and `bench forward`: timings as JSON; `bench explorer`: a synthetic explorer page.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use thoughtscope::analysis::bench::{bench_analysis, BenchOptions};
use thoughtscope::analysis::bench_forward::{bench_forward, bench_forward_once, BenchForwardOptions, RandomWeights};
use thoughtscope::model::Settings;
use thoughtscope::plot::explorer::{synthetic_explorer, SyntheticTrace};
use thoughtscope::plot::ExplorerOptions;
use thoughtscope::{Error, Result};

use crate::DeviceArg;

/// `thoughtscope bench ...`
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Time sentence averaging and vertical scores on fixed random inputs.
    Analysis(BenchAnalysisArgs),
    /// Time one forward pass + all-heads sentence averaging on a real trace (peak RSS too).
    Forward(BenchForwardArgs),
    /// Write a synthetic trace explorer page of a given size, every part filled (for
    /// scripts/bench-explorer.sh, which measures it in headless Chromium).
    Explorer(BenchExplorerArgs),
}

#[derive(Debug, Args)]
pub struct BenchExplorerArgs {
    #[arg(long, default_value_t = 300)]
    pub sentences: usize,
    #[arg(long, default_value_t = 16_000)]
    pub tokens: usize,
    /// Attention grid (SmolLM2-135M's by default).
    #[arg(long, default_value_t = 30)]
    pub layers: usize,
    #[arg(long, default_value_t = 9)]
    pub heads: usize,
    /// Single-head matrices kept (as `explore --max-head-matrices`).
    #[arg(long, default_value_t = 4)]
    pub max_head_matrices: usize,
    #[command(flatten)]
    pub token_view: crate::TokenViewArgs,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Output HTML file.
    #[arg(long, default_value = "explorer_bench.html")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct BenchAnalysisArgs {
    #[arg(long, default_value_t = 3000)]
    pub tokens: usize,
    #[arg(long, default_value_t = 150)]
    pub sentences: usize,
    /// Heads timed (layers × heads).
    #[arg(long, default_value_t = 270)]
    pub heads: usize,
    /// Distinct attention matrices cycled through.
    #[arg(long, default_value_t = 6)]
    pub distinct: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Write inputs, results and timings here for `scripts/bench_analysis_numpy.py`.
    #[arg(long)]
    pub write_inputs: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BenchForwardArgs {
    /// Rollout/problem directory whose `base_solution.full_cot` is the text.
    #[arg(long, default_value = "../shared/data/thought-anchors-traces/deepseek-r1-distill-qwen-14b/incorrect_base_solution/problem_4682")]
    pub trace: PathBuf,
    #[arg(long, default_value = "smollm2-135m")]
    pub model: String,
    /// Target token counts (comma-separated); the text is cut at the last sentence that fits.
    #[arg(long, value_delimiter = ',', default_value = "3000")]
    pub tokens: Vec<usize>,
    /// Write the exact inputs (text and sentences per size) here for the Python reference.
    #[arg(long)]
    pub export_inputs: Option<PathBuf>,
    /// JSON printed by the Python reference on the same inputs; adds ratios.
    #[arg(long)]
    pub reference: Option<PathBuf>,
    /// Timed runs per size (each in a fresh process); the report gives the median and every run.
    #[arg(long, default_value_t = 1)]
    pub repeat: usize,
    /// Leave the per-phase timers off (to check that they cost nothing measurable).
    #[arg(long)]
    pub no_phases: bool,
    /// Random weights in the shapes of this configuration instead of `--model`'s weights: a
    /// registry name with an embedded config (qwen3-4b-thinking-2507, qwen3-4b, llama8, qwen-14b,
    /// llama-3.2-1b, qwen-15b, qwen3-0.6b) or a config.json. `--model` then only tokenises.
    #[arg(long, requires = "random_weights")]
    pub config: Option<String>,
    /// Make the weights at random, in memory (no download); needs `--config`.
    #[arg(long, requires = "config")]
    pub random_weights: bool,
    /// Stored type of the random weight matrices.
    #[arg(long, value_parser = crate::named::<thoughtscope::model::random::RandomDtype>(), default_value = "bf16")]
    pub weights_dtype: thoughtscope::model::random::RandomDtype,
    /// Seed of the random weights.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Internal: run one size in this process and print its JSON.
    #[arg(long, hide = true)]
    pub single: Option<usize>,
    #[command(flatten)]
    pub device: DeviceArg,
}

impl BenchForwardArgs {
    fn options(&self, settings: &Settings) -> Result<BenchForwardOptions> {
        let mut settings = self.device.settings(settings)?;
        settings.kernels.phase_timing = !self.no_phases;
        Ok(BenchForwardOptions {
            trace: self.trace.clone(),
            model: self.model.clone(),
            tokens: self.tokens.clone(),
            export_inputs: self.export_inputs.clone(),
            reference: self.reference.clone(),
            repeat: self.repeat,
            settings,
            random: self.config.as_ref().map(|config| RandomWeights { config: config.clone(), dtype: self.weights_dtype, seed: self.seed }),
        })
    }
}

pub fn run(command: BenchCommand, settings: &Settings) -> Result<()> {
    match command {
        BenchCommand::Forward(args) => {
            let options = args.options(settings)?;
            if let Some(tokens) = args.single {
                outln!("{}", bench_forward_once(&options, tokens)?);
                return Ok(());
            }
            let report = bench_forward(&options, &mut |tokens| run_child(&args, tokens))?;
            outln!("{}", serde_json::to_string_pretty(&report)?);
        }
        BenchCommand::Analysis(args) => {
            let report = bench_analysis(&BenchOptions {
                tokens: args.tokens,
                sentences: args.sentences,
                heads: args.heads,
                distinct: args.distinct,
                seed: args.seed,
                write_inputs: args.write_inputs,
            })?;
            outln!("{}", serde_json::to_string_pretty(&report)?);
        }
        BenchCommand::Explorer(args) => {
            let trace = SyntheticTrace { sentences: args.sentences, tokens: args.tokens, layers: args.layers, heads: args.heads, seed: args.seed };
            let options = ExplorerOptions {
                max_head_matrices: args.max_head_matrices,
                token_heads: args.token_view.token_heads,
                token_max: args.token_view.token_max,
                ..ExplorerOptions::default()
            };
            let explorer = synthetic_explorer(&trace, &options)?;
            explorer.write_html(&args.out)?;
            let size = std::fs::metadata(&args.out).map_err(|e| Error::io(&args.out, e))?.len();
            outln!("{} ({:.2} MB): {}", args.out.display(), size as f64 / 1e6, explorer.size_summary());
        }
    }
    Ok(())
}

/// One timed run in a child process of this binary (`--single`), so its peak RSS is its own.
fn run_child(args: &BenchForwardArgs, tokens: usize) -> Result<serde_json::Value> {
    let exe = std::env::current_exe().map_err(|e| Error::Other(format!("current executable: {e}")))?;
    let out = std::process::Command::new(&exe)
        .args(["bench", "forward", "--model", &args.model, "--device", &args.device.device])
        .args(["--single", &tokens.to_string()])
        .args(args.no_phases.then_some("--no-phases"))
        .args(args.device.weights.map(|w| format!("--weights={w}")))
        .args(args.config.iter().flat_map(|c| ["--config".to_string(), c.clone(), "--random-weights".into()]))
        .args(["--weights-dtype", &args.weights_dtype.to_string()])
        .args(["--seed".to_string(), args.seed.to_string()])
        .arg("--trace")
        .arg(&args.trace)
        .env("THOUGHTSCOPE_PROGRESS", "off")
        .envs(openblas_core().map(|core| ("OPENBLAS_CORETYPE", core)))
        .envs(openblas_thread_timeout().map(|t| ("OPENBLAS_THREAD_TIMEOUT", t)))
        .output()
        .map_err(|e| Error::Other(format!("running {}: {e}", exe.display())))?;
    if !out.status.success() {
        return Err(Error::Other(format!("bench run for {tokens} tokens failed: {}", String::from_utf8_lossy(&out.stderr))));
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// How long OpenBLAS's idle threads spin before they sleep, for the timed runs: the shortest
/// (2⁴ cycles) unless the caller chose. The calibration times our GEMM right after OpenBLAS's, and
/// by default (2²⁸ cycles) its workers were still spinning then, holding one of the two cores:
/// our kernels measured about half their rate in some runs (223 against 390 GFLOP/s).
fn openblas_thread_timeout() -> Option<&'static str> {
    (thoughtscope::model::cpu::blas::available().is_ok() && thoughtscope::model::settings::lookups::var("OPENBLAS_THREAD_TIMEOUT").is_none())
        .then_some("4")
}

/// OpenBLAS's kernels for the timed runs, where our choice must be made before it loads: its
/// AVX-512 ones (`SkylakeX`) when our kernels take AVX-512, its AVX2 ones (`Haswell`) when
/// `THOUGHTSCOPE_ISA=avx2` turns ours down to AVX2 on an AVX-512 CPU, so the reference runs the
/// same vector width. OpenBLAS 0.3.21 (Debian 12) does not know Zen 5 and some environments
/// set `OPENBLAS_CORETYPE=Haswell`: on two Zen 5 cores its AVX2 kernels reach about half the
/// rate of its AVX-512 ones. Elsewhere its own detection (or the caller's setting) stands.
fn openblas_core() -> Option<&'static str> {
    if thoughtscope::model::cpu::blas::available().is_err() {
        return None;
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        return Some(if thoughtscope::model::cpu::avx512_enabled() { "SkylakeX" } else { "Haswell" });
    }
    None
}
