//! Arguments and handlers of the analysis-core subcommands, so the binary only forwards:
//! `segment`, `vertical-scores`, `receiver-heads` (a stable interface other tools call) and
//! `bench analysis`. Each handler returns the text to print on stdout.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde::Serialize;

use super::bench::{bench_analysis, BenchOptions};
use crate::attention::SentenceMode;
use crate::io::npy;
use crate::rollout::Rollout;
use crate::scores::{
    receiver_heads_from_cache_dir, vertical_scores, vertical_scores_f64, ReceiverOptions, ScoreType, VerticalOptions,
};
use crate::{Error, Result};

/// `thoughtscope segment <problem_dir> --mode full-cot|chunks [--json]`
#[derive(Debug, Args)]
pub struct SegmentArgs {
    /// Rollout/problem directory (base_solution.json; chunks.json or chunks_labeled.json for `chunks`).
    pub problem_dir: PathBuf,
    #[arg(long, value_enum, default_value_t = SentenceMode::FullCot)]
    pub mode: SentenceMode,
    /// Print `{"text_id", "n", "ranges", "sentences"}` as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Shared vertical-score flags.
#[derive(Debug, Args)]
pub struct VerticalArgs {
    /// Ignore rows closer than P sentences to the column (must be ≥ 0).
    #[arg(long, default_value_t = 4, allow_negative_numbers = true)]
    pub proximity_ignore: i64,
    /// Rank-normalise each row before aggregating.
    #[arg(long)]
    pub control_depth: bool,
    #[arg(long, value_enum, default_value_t = ScoreType::Mean)]
    pub score_type: ScoreType,
}

impl VerticalArgs {
    fn options(&self) -> Result<VerticalOptions> {
        let proximity_ignore = usize::try_from(self.proximity_ignore).map_err(|_| {
            Error::invalid(format!("--proximity-ignore {}: must be ≥ 0", self.proximity_ignore))
        })?;
        Ok(VerticalOptions { proximity_ignore, control_depth: self.control_depth, score_type: self.score_type })
    }
}

/// `thoughtscope vertical-scores <matrix.npy> --proximity-ignore P [--control-depth] [--score-type] [--json]`
#[derive(Debug, Args)]
pub struct VerticalScoresArgs {
    /// A square N×N float32 or float64 `.npy` matrix.
    pub matrix: PathBuf,
    #[command(flatten)]
    pub vertical: VerticalArgs,
    /// Print a JSON array (`null` for NaN).
    #[arg(long)]
    pub json: bool,
}

/// `thoughtscope receiver-heads <cache_model_dir> --top-k K --proximity-ignore P [--control-depth] [--json]`
#[derive(Debug, Args)]
pub struct ReceiverHeadsArgs {
    /// `attn_cache/<model>/`: every `<text_id>/` below it is one response.
    pub cache_model_dir: PathBuf,
    #[arg(long, default_value_t = 20)]
    pub top_k: usize,
    #[command(flatten)]
    pub vertical: VerticalArgs,
    /// Print `{"mean_kurtosis": [[...] per layer], "top_k_heads": [[l, h], ...]}`.
    #[arg(long)]
    pub json: bool,
}

/// `thoughtscope bench ...`
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Time sentence averaging and vertical scores on fixed random inputs.
    Analysis(BenchAnalysisArgs),
    /// Time one forward pass + all-heads sentence averaging on a real trace (peak RSS too).
    Forward(crate::attention::bench::BenchForwardArgs),
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

/// `segment`: the sentences of a problem directory.
pub fn segment(args: &SegmentArgs) -> Result<String> {
    let rollout = Rollout::open(&args.problem_dir)?;
    let sentences = rollout.sentences(args.mode)?;
    let text_id = sentences.text_id();
    if args.json {
        #[derive(Serialize)]
        struct Output<'a> {
            text_id: &'a str,
            n: usize,
            ranges: Vec<[usize; 2]>,
            sentences: &'a [String],
        }
        let output = Output {
            text_id: &text_id,
            n: sentences.len(),
            ranges: sentences.ranges.iter().map(|&(a, b)| [a, b]).collect(),
            sentences: &sentences.sentences,
        };
        return Ok(serde_json::to_string(&output)?);
    }
    let mut out = format!("text_id {text_id}, {} sentences ({} mode)\n", sentences.len(), args.mode);
    for (k, (s, &(a, b))) in sentences.sentences.iter().zip(&sentences.ranges).enumerate() {
        out.push_str(&format!("{k:>4} [{a}, {b}) {s:?}\n"));
    }
    Ok(out)
}

/// `vertical-scores`: scores of one `.npy` matrix.
pub fn vertical_scores_command(args: &VerticalScoresArgs) -> Result<String> {
    let options = args.vertical.options()?;
    let array = npy::read(&args.matrix)?;
    let n = match array.shape.as_slice() {
        [a, b] if a == b => *a,
        shape => return Err(Error::format(&args.matrix, format!("shape {shape:?} is not a square matrix"))),
    };
    let scores = match &array.data {
        npy::NpyData::F32(values) => vertical_scores(values, n, &options)?,
        npy::NpyData::F64(values) => vertical_scores_f64(values, n, &options)?,
    };
    if args.json {
        return Ok(serde_json::to_string(&scores)?);
    }
    let mut out = String::new();
    for (j, value) in scores.numpy_values().iter().enumerate() {
        out.push_str(&format!("{j}\t{}\n", serde_json::to_string(value)?));
    }
    Ok(out)
}

/// `receiver-heads`: head selection over a cache model directory.
pub fn receiver_heads_command(args: &ReceiverHeadsArgs) -> Result<String> {
    let options = ReceiverOptions { top_k: args.top_k, vertical: args.vertical.options()? };
    let result = receiver_heads_from_cache_dir(&args.cache_model_dir, &options)?;
    if args.json {
        return Ok(result.to_json());
    }
    let m = &result.mean_kurtosis;
    let mut out = format!("{} responses, {} layers × {} heads\ntop {} heads (layer, head, mean kurtosis):\n", result.responses.len(), m.layers, m.heads, result.top_k_heads.len());
    for &(l, h) in &result.top_k_heads {
        out.push_str(&format!("  {l:>3} {h:>3} {:.6}\n", m.get(l, h)));
    }
    Ok(out)
}

/// `bench analysis`: timings as JSON.
pub fn bench(command: &BenchCommand) -> Result<String> {
    match command {
        BenchCommand::Forward(args) => {
            let report = crate::attention::bench::bench_forward(args)?;
            Ok(if args.single.is_some() { report.to_string() } else { serde_json::to_string_pretty(&report)? })
        }
        BenchCommand::Analysis(args) => {
            let report = bench_analysis(&BenchOptions {
                tokens: args.tokens,
                sentences: args.sentences,
                heads: args.heads,
                distinct: args.distinct,
                seed: args.seed,
                write_inputs: args.write_inputs.clone(),
            })?;
            Ok(serde_json::to_string_pretty(&report)?)
        }
    }
}
