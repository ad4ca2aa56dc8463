//! `importance`: upstream's per-chunk importance metrics of one problem's resampled rollouts,
//! into a `chunks_labeled.json`-shaped file.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use thoughtscope::analysis::importance::{run_importance, Corrections, ImportanceConfig, ImportanceOptions, KlMode};
use thoughtscope::model::Settings;
use thoughtscope::Result;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum KlArg {
    /// KL of the normalised-answer distributions (what upstream always computes).
    Answers,
    /// KL of P(correct) (what upstream's `--use_prob_true` was meant to switch on).
    ProbTrue,
}

/// `thoughtscope importance <problem_dir>`.
#[derive(Debug, Args)]
pub struct ImportanceArgs {
    /// The problem folder: chunks.json and, optionally, chunks_labeled.json (its labels are kept).
    pub problem_dir: PathBuf,
    /// The folder holding `chunk_<i>/solutions.json` (`ROOT/<problem>` of `resample`); default: the problem folder.
    #[arg(long)]
    pub rollouts: Option<PathBuf>,
    /// The problem's forced-answer rollouts (`FORCED_ROOT/<problem>`); without it the forced fields of the input are kept as they are.
    #[arg(long)]
    pub forced: Option<PathBuf>,
    /// The chunks_labeled.json-shaped output file.
    #[arg(long)]
    pub out: PathBuf,
    /// Cosine similarity below which a resampled chunk counts as different.
    #[arg(long, default_value_t = 0.8)]
    pub similarity_threshold: f64,
    /// Absolute values of the accuracy differences (upstream's --absolute).
    #[arg(long)]
    pub absolute: bool,
    #[arg(long, value_enum, default_value_t = KlArg::Answers)]
    pub kl: KlArg,
    /// Correct every upstream bug that changes numbers (see docs/importance.md); default: faithful.
    #[arg(long)]
    pub corrected: bool,
    /// all-MiniLM-L6-v2's folder (default: models/all-minilm-l6-v2, from scripts/fetch-embedder.sh).
    #[arg(long)]
    pub embedder: Option<PathBuf>,
    /// Sentences per embedder forward pass.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
}

pub fn run(args: ImportanceArgs, settings: &Settings) -> Result<()> {
    let config = ImportanceConfig {
        rollouts_dir: args.rollouts,
        forced_dir: args.forced,
        options: ImportanceOptions {
            similarity_threshold: args.similarity_threshold,
            absolute: args.absolute,
            kl: match args.kl {
                KlArg::Answers => KlMode::AnswerDistribution,
                KlArg::ProbTrue => KlMode::ProbTrue,
            },
            corrections: if args.corrected { Corrections::all() } else { Corrections::default() },
        },
        embedder_dir: args.embedder,
        batch_size: args.batch_size,
        settings: settings.clone(),
        ..ImportanceConfig::new(args.problem_dir, args.out)
    };
    let report = run_importance(&config)?;
    outln!("{}", report.headline());
    if !report.missing_chunks.is_empty() {
        outln!("chunks without solutions.json (no accuracy written): {:?}", report.missing_chunks);
    }
    Ok(())
}
