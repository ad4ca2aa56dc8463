//! `blackbox`: white-box (receiver scores, suppression) against black-box (counterfactual
//! importance from resampling) on the same sentences of one trace.

use std::path::PathBuf;

use clap::Args;
use thoughtscope::analysis::blackbox::{run_blackbox, BlackboxConfig, COUNTERFACTUAL};
use thoughtscope::model::Settings;
use thoughtscope::Result;

/// `thoughtscope blackbox <problem_dir>`.
#[derive(Debug, Args)]
pub struct BlackboxArgs {
    /// The trace: base_solution.json, chunks.json and chunks_labeled.json (function tags).
    pub problem_dir: PathBuf,
    /// chunks_labeled.json written by `thoughtscope importance` for this trace.
    #[arg(long)]
    pub importance: PathBuf,
    /// The importance field correlated.
    #[arg(long, default_value = COUNTERFACTUAL)]
    pub field: String,
    #[arg(long, default_value = "smollm2-135m")]
    pub model: String,
    /// Traces (any depth) over which the receiver heads are selected; default: this trace alone
    /// (no split-half reliability then).
    #[arg(long)]
    pub heads_from: Option<PathBuf>,
    #[arg(long, default_value_t = 20)]
    pub top_k: usize,
    /// Attention cache.
    #[arg(long, default_value = "attn_cache")]
    pub cache_dir: PathBuf,
    /// Folder of this trace's suppression run (computed there when absent: one pass per sentence).
    #[arg(long)]
    pub suppression: Option<PathBuf>,
    /// Tag of the tagged-vs-rest test and of the matched control.
    #[arg(long, default_value = "verbalized_evaluation_awareness")]
    pub tag: String,
    #[arg(long, default_value_t = 1000)]
    pub bootstrap: usize,
    #[arg(long, default_value_t = 1000)]
    pub permutations: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output folder (blackbox.json, blackbox_sentences.csv).
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(args: BlackboxArgs, settings: &Settings) -> Result<()> {
    let mut config = BlackboxConfig::new(args.problem_dir, args.importance, args.out);
    config.settings = settings.clone();
    config.field = args.field;
    config.model = args.model;
    config.heads_from = args.heads_from;
    config.receiver.top_k = args.top_k;
    config.cache_dir = args.cache_dir;
    config.suppression_dir = args.suppression;
    config.tag = args.tag;
    config.bootstrap_draws = args.bootstrap;
    config.control_draws = args.bootstrap;
    config.permutations = args.permutations;
    config.seed = args.seed;
    let result = run_blackbox(&config)?;
    outln!("{}", result.headline());
    Ok(())
}
