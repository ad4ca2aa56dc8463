//! `anchors`: receiver heads over a folder of traces against the attention suppression of one
//! trace, with function tags (the third notebook's analysis).

use std::path::PathBuf;

use clap::Args;
use thoughtscope::analysis::anchors::{run_anchors, AnchorsConfig};
use thoughtscope::attention::{BoundaryMode, SentenceMode};
use thoughtscope::scores::{ReceiverOptions, VerticalOptions};
use thoughtscope::model::Settings;
use thoughtscope::Result;

use crate::DeviceArg;

/// `thoughtscope anchors`: receiver heads, suppression, their rank agreement, function tags.
#[derive(Debug, Args)]
pub struct AnchorsArgs {
    /// Folder searched (any depth) for trace directories holding base_solution.json.
    #[arg(long, default_value = "rollouts/apple_boxes")]
    pub traces: PathBuf,
    /// At most N of the traces, spread evenly through them in name order, plus --trace if the
    /// spread leaves it out (default: all).
    #[arg(long, value_name = "N")]
    pub max_traces: Option<usize>,
    /// GGUF file, HF model directory, cached hub id or registry name.
    #[arg(long, default_value = "smollm2-135m")]
    pub model: String,
    #[arg(long, value_parser = crate::named::<SentenceMode>(), default_value_t = SentenceMode::Chunks)]
    pub mode: SentenceMode,
    #[arg(long, value_parser = crate::named::<BoundaryMode>(), default_value_t = BoundaryMode::Prefix)]
    pub boundaries: BoundaryMode,
    #[arg(long, default_value = "attn_cache")]
    pub cache_dir: PathBuf,
    /// Receiver heads kept (largest mean kurtosis).
    #[arg(long, default_value_t = 20)]
    pub top_k: usize,
    #[arg(long, default_value_t = 4)]
    pub proximity_ignore: usize,
    /// Set the first N sentences' vertical scores to NaN before kurtosis and receiver scores (the
    /// paper version's drop_first; 0 = HEAD, where sentence 0, an attention sink, tops every trace).
    #[arg(long, default_value_t = 0)]
    pub drop_first: usize,
    /// The trace to run suppression on, a trace directory below --traces (analysed for receiver
    /// heads too; default: the fewest-token trace with --min-sentences).
    #[arg(long)]
    pub trace: Option<PathBuf>,
    #[arg(long, default_value_t = 12)]
    pub min_sentences: usize,
    /// Permutations of the rank-correlation test.
    #[arg(long, default_value_t = 1000)]
    pub permutations: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Sentences per trace counted as top by each measure.
    #[arg(long, default_value_t = 5)]
    pub top_sentences: usize,
    #[arg(long, default_value = "analysis/thought_anchors")]
    pub out: PathBuf,
    #[command(flatten)]
    pub token_view: crate::TokenViewArgs,
    #[command(flatten)]
    pub device: DeviceArg,
}

pub fn run(args: AnchorsArgs, settings: &Settings) -> Result<()> {
    let config = AnchorsConfig {
        traces: args.traces,
        max_traces: args.max_traces,
        model: args.model,
        sentence_mode: args.mode,
        boundary_mode: args.boundaries,
        cache_dir: args.cache_dir,
        receiver: ReceiverOptions {
            top_k: args.top_k,
            vertical: VerticalOptions { proximity_ignore: args.proximity_ignore, ..VerticalOptions::default() },
        },
        drop_first: args.drop_first,
        suppression_trace: args.trace,
        min_sentences: args.min_sentences,
        permutations: args.permutations,
        seed: args.seed,
        top_sentences: args.top_sentences,
        out: args.out,
        token_heads: args.token_view.token_heads,
        token_max: args.token_view.token_max,
        settings: args.device.settings(settings)?,
        ..AnchorsConfig::default()
    };
    let result = run_anchors(&config)?;
    outln!("{}", result.headline());
    for (trace, why) in result.receivers.heads.skipped.iter().chain(&result.receivers.too_long) {
        outln!("left out {trace}: {why}");
    }
    outln!(
        "{} forward passes, {} cache hits; suppression {}; {} files in {}",
        result.receivers.forward_passes,
        result.receivers.cache_hits,
        if result.suppression_computed { "computed" } else { "read back" },
        result.files.len(),
        config.out.display()
    );
    Ok(())
}
