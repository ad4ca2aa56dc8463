//! `attn`: sentence attention of one problem directory into the cache.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use thoughtscope::attention::{cached_sentence_attention, AttnCache, BoundaryMode, CacheLayout, CacheOutcome, SentenceMode};
use thoughtscope::model::Model;
use thoughtscope::rollout::Rollout;
use thoughtscope::{Error, Result};

use crate::DeviceArg;

/// `thoughtscope attn`: sentence attention of one problem directory into the cache.
#[derive(Debug, Args)]
pub struct AttnArgs {
    /// Rollout/problem directory (base_solution.json, chunks.json / chunks_labeled.json).
    pub problem_dir: PathBuf,
    /// GGUF file, HF model directory, cached hub id or registry name.
    #[arg(long, default_value = "smollm2-135m")]
    pub model: String,
    #[arg(long, value_enum, default_value_t = SentenceMode::FullCot)]
    pub mode: SentenceMode,
    #[arg(long, default_value = "attn_cache")]
    pub cache_dir: PathBuf,
    /// `thought-anchors` writes `DIR/<model>/<text_id>/<l>_<h>.npy` (float32) exactly as upstream.
    #[arg(long, value_enum, default_value_t = CacheLayout::Native)]
    pub layout: CacheLayout,
    /// Token boundaries: `prefix` (upstream parity) or `offsets` (corrected).
    #[arg(long, value_enum, default_value_t = BoundaryMode::Prefix)]
    pub boundaries: BoundaryMode,
    /// Print a JSON summary on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub device: DeviceArg,
}

/// The sentences of a problem directory in `mode`; none is an error naming the directory.
pub fn problem_sentences(dir: &std::path::Path, mode: SentenceMode) -> Result<thoughtscope::attention::Sentences> {
    let sentences = Rollout::open(dir)?.sentences(mode)?;
    if sentences.is_empty() {
        return Err(Error::format(dir, "no sentences to analyse"));
    }
    Ok(sentences)
}

/// Compute (or find in the cache) the sentence attention and print a line or a JSON summary.
pub fn run(args: AttnArgs) -> Result<()> {
    let device = args.device.device()?;
    let sentences = problem_sentences(&args.problem_dir, args.mode)?;
    let loaded = Model::load(&args.model, &device)?;
    let started = Instant::now();
    let cache = AttnCache::new(&args.cache_dir);
    let (attention, outcome, dir) = cached_sentence_attention(&cache, &loaded, &sentences, args.boundaries, args.layout)?;
    if args.json {
        let summary = serde_json::json!({
            "model": loaded.name,
            "text_id": sentences.text_id(),
            "n": attention.n(),
            "layers": attention.layers(),
            "heads": attention.heads(),
            "cache": outcome.as_str(),
            "dir": dir.display().to_string(),
            "seconds": started.elapsed().as_secs_f64(),
        });
        println!("{summary}");
        return Ok(());
    }
    println!(
        "{} {}: {} sentences × {} layers × {} heads → {} ({:.1} s)",
        match outcome {
            CacheOutcome::Hit => "cached",
            CacheOutcome::Computed => "computed",
            CacheOutcome::Upstream => "read from a thought-anchors cache (provenance unverified)",
        },
        sentences.text_id(),
        attention.n(),
        attention.layers(),
        attention.heads(),
        dir.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
