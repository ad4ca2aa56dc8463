//! `attn`: sentence attention of one problem directory, or of every problem directory below a
//! folder (optionally one shard of them), into the cache.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use thoughtscope::attention::{
    cached_sentence_attention, AttentionSource, AttnCache, BoundaryMode, CacheLayout, CacheOutcome, SentenceMode, Sentences,
    TokenPairsToStore,
};
use thoughtscope::plot::ExplorerOptions;
use thoughtscope::io::shard::ShardRun;
use thoughtscope::model::{Model, Settings};
use thoughtscope::progress::progress;
use thoughtscope::rollout::{find_problem_dirs, Rollout};
use thoughtscope::{Error, Result};

use crate::{DeviceArg, ShardArg};

/// `thoughtscope attn`: sentence attention of one problem directory (or of every problem
/// directory below a folder) into the cache.
#[derive(Debug, Args)]
pub struct AttnArgs {
    /// Rollout/problem directory (base_solution.json, chunks.json / chunks_labeled.json), or a
    /// folder: every problem directory below it, at any depth.
    pub problem_dir: PathBuf,
    /// GGUF file, HF model directory, cached hub id or registry name.
    #[arg(long, default_value = "smollm2-135m")]
    pub model: String,
    #[arg(long, value_parser = crate::named::<SentenceMode>(), default_value_t = SentenceMode::FullCot)]
    pub mode: SentenceMode,
    #[arg(long, default_value = "attn_cache")]
    pub cache_dir: PathBuf,
    /// `thought-anchors` writes `DIR/<model>/<text_id>/<l>_<h>.npy` (float32) exactly as upstream.
    #[arg(long, value_parser = crate::named::<CacheLayout>(), default_value_t = CacheLayout::Native)]
    pub layout: CacheLayout,
    /// Token boundaries: `prefix` (upstream parity) or `offsets` (corrected).
    #[arg(long, value_parser = crate::named::<BoundaryMode>(), default_value_t = BoundaryMode::Prefix)]
    pub boundaries: BoundaryMode,
    #[command(flatten)]
    pub token_view: crate::TokenViewArgs,
    /// Also compute again (one pass) an entry that holds no token pairs, and replace it with one
    /// that does (entries written before token pairs were stored).
    #[arg(long)]
    pub add_token_pairs: bool,
    /// Print a JSON summary on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub device: DeviceArg,
    #[command(flatten)]
    pub shard: ShardArg,
}

/// The sentences of a problem directory in `mode`; none is an error naming the directory.
pub fn problem_sentences(dir: &std::path::Path, mode: SentenceMode) -> Result<thoughtscope::attention::Sentences> {
    let sentences = Rollout::open(dir)?.sentences(mode)?;
    if sentences.is_empty() {
        return Err(Error::format(dir, "no sentences to analyse"));
    }
    Ok(sentences)
}

/// The token pairs a fill stores: those of the trace explorer's token view with these sizes.
fn token_pairs_to_store(args: &AttnArgs) -> Result<Option<TokenPairsToStore>> {
    let options = ExplorerOptions { token_heads: args.token_view.token_heads, token_max: args.token_view.token_max, ..ExplorerOptions::default() };
    match options.token_pairs_to_store() {
        Some(to_store) => Ok(Some(TokenPairsToStore { add_to_existing: args.add_token_pairs, ..to_store })),
        None if args.add_token_pairs => Err(Error::invalid("--add-token-pairs needs --token-heads and --token-max of at least 1")),
        None => Ok(None),
    }
}

/// Compute (or find in the cache) the sentence attention and print a line or a JSON summary.
pub fn run(args: AttnArgs, settings: &Settings) -> Result<()> {
    // A bad --device is named before anything is read.
    let settings = args.device.settings(settings)?;
    let to_store = token_pairs_to_store(&args)?;
    thoughtscope::io::check_folder_or_absent(&args.cache_dir)?;
    let shard = args.shard.resolve()?;
    if shard.is_some() || !args.problem_dir.join("base_solution.json").is_file() {
        return run_many(args, shard, settings, to_store);
    }
    let sentences = problem_sentences(&args.problem_dir, args.mode)?;
    let loaded = Model::load(&args.model, &settings)?;
    let started = Instant::now();
    let cache = AttnCache::new(&args.cache_dir).strict(settings.strict_cache).with_token_pairs(to_store);
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
        outln!("{summary}");
        return Ok(());
    }
    outln!(
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

/// Every problem directory below `args.problem_dir` (this shard's, when sharded) into the cache,
/// the model loaded on the first miss; one line per problem computed, then the shard's line.
fn run_many(
    args: AttnArgs,
    shard: Option<thoughtscope::io::shard::Shard>,
    settings: Settings,
    to_store: Option<TokenPairsToStore>,
) -> Result<()> {
    let dirs = find_problem_dirs(&args.problem_dir)?;
    if dirs.is_empty() {
        return Err(Error::format(&args.problem_dir, "no problem directory (one holding base_solution.json) at or below it"));
    }
    let problems: Vec<(PathBuf, Sentences)> =
        dirs.into_iter().map(|dir| problem_sentences(&dir, args.mode).map(|s| (dir, s))).collect::<Result<_>>()?;
    let total = problems.len();
    let mine = match shard {
        Some(shard) => shard.select(problems, |(_, sentences)| sentences.text_id()),
        None => problems,
    };
    let mut source = AttentionSource::new(&args.model, &args.cache_dir, args.boundaries)
        .with_layout(args.layout)
        .with_settings(settings)
        .with_token_pairs(to_store);
    let mut run = ShardRun { shard, total, taken: mine.len(), ..ShardRun::default() };
    let mut items = Vec::new();
    let bar = progress(mine.len() as u64, "problems");
    for (dir, sentences) in &mine {
        bar.set_message(dir.display().to_string());
        let outcome = source.prepare(sentences)?;
        bar.inc(1);
        match outcome {
            CacheOutcome::Computed => run.computed += 1,
            CacheOutcome::Hit | CacheOutcome::Upstream => run.cached += 1,
        }
        items.push(serde_json::json!({
            "dir": dir.display().to_string(),
            "text_id": sentences.text_id(),
            "n": sentences.len(),
            "cache": outcome.as_str(),
        }));
    }
    bar.finish();
    if args.json {
        let summary = serde_json::json!({
            "model": source.model_name(),
            "shard": shard.map(|s| s.to_string()),
            "total": run.total,
            "taken": run.taken,
            "computed": run.computed,
            "cached": run.cached,
            "problems": items,
        });
        outln!("{summary}");
    } else {
        outln!("{}", run.lines("problems").join("\n"));
    }
    Ok(())
}
