//! `suppress`: the attention-suppression sentence × sentence matrix of one problem directory.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use thoughtscope::analysis::suppression::cached_suppression;
use thoughtscope::attention::{BoundaryMode, SentenceMode, SuppressionOptions};
use thoughtscope::model::{Model, Settings};
use thoughtscope::Result;

use crate::DeviceArg;

/// `thoughtscope suppress`: per source sentence, rerun with its keys suppressed in every layer.
#[derive(Debug, Args)]
pub struct SuppressArgs {
    /// Rollout/problem directory (base_solution.json, chunks.json / chunks_labeled.json).
    pub problem_dir: PathBuf,
    /// GGUF file, HF model directory, cached hub id or registry name.
    #[arg(long, default_value = "smollm2-135m")]
    pub model: String,
    /// Output folder: step_importance_supp.json, suppression_matrix.npy, heatmap, manifest. A folder
    /// holding the run of the same inputs (its manifest) is read back, not recomputed.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, value_parser = crate::named::<SentenceMode>(), default_value_t = SentenceMode::FullCot)]
    pub mode: SentenceMode,
    /// Token boundaries: `prefix` (upstream parity) or `offsets` (corrected).
    #[arg(long, value_parser = crate::named::<BoundaryMode>(), default_value_t = BoundaryMode::Prefix)]
    pub boundaries: BoundaryMode,
    /// Suppress in these layers only (comma-separated); every layer by default, as upstream.
    #[arg(long, value_delimiter = ',')]
    pub layers: Option<Vec<usize>>,
    /// Suppress in these query heads only (comma-separated, in every suppressed layer); every
    /// head by default, as upstream. Runs on the hook path (slower).
    #[arg(long, value_delimiter = ',')]
    pub heads: Option<Vec<usize>>,
    /// Nucleus mass kept per position before the KL (upstream 0.9999).
    #[arg(long, default_value_t = 0.9999)]
    pub top_p: f64,
    /// At most this many tokens kept per position (upstream 100).
    #[arg(long, default_value_t = 100)]
    pub max_tokens: usize,
    /// Temperature of the compression and the KL (upstream 0.6).
    #[arg(long, default_value_t = 0.6)]
    pub temperature: f64,
    /// Suppressed runs decoded together as one batch (consecutive sources, N at a time). The
    /// results are those of 1 up to f32 noise (so not part of the manifest's key); more positions
    /// are run, and peak memory grows to N × suffix × vocab f32 logits. Pays off on GPUs, whose
    /// passes are bound by kernel launches, not on CPU.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch_sources: u64,
    /// Print a JSON summary on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub device: DeviceArg,
}

pub fn run(args: SuppressArgs, settings: &Settings) -> Result<()> {
    let settings = args.device.settings(settings)?;
    let sentences = crate::attn::problem_sentences(&args.problem_dir, args.mode)?;
    let options = SuppressionOptions {
        layers: args.layers,
        heads: args.heads,
        boundary_mode: args.boundaries,
        top_p: args.top_p,
        max_tokens: args.max_tokens,
        temperature: args.temperature,
        batch_sources: args.batch_sources as usize,
        ..Default::default()
    };
    // Bad options or an --out that is a file fail now, not after the model loaded and ran.
    options.validate()?;
    thoughtscope::io::check_folder_or_absent(&args.out)?;
    let loaded = Model::load(&args.model, &settings)?;
    let started = Instant::now();
    let (result, files, computed) = cached_suppression(&args.out, &loaded, &sentences, &options)?;
    let outcome = if computed { "computed" } else { "read back (same inputs)" };
    let seconds = started.elapsed().as_secs_f64();
    if args.json {
        let summary = serde_json::json!({
            "model": loaded.name,
            "text_id": sentences.text_id(),
            "n": result.n,
            "n_tokens": result.bounds.n_tokens,
            "layers": result.layers.len(),
            "positions_run": result.positions_run,
            "step_importance": files.step_importance.display().to_string(),
            "matrix": files.matrix.display().to_string(),
            "heatmap": files.heatmap.display().to_string(),
            "outcome": if computed { "computed" } else { "cached" },
            "seconds": seconds,
        });
        outln!("{summary}");
        return Ok(());
    }
    outln!(
        "suppression {} {}: {} sentences, {} tokens, {} layers, {} positions run → {} ({seconds:.1} s)",
        outcome,
        sentences.text_id(),
        result.n,
        result.bounds.n_tokens,
        result.layers.len(),
        result.positions_run,
        args.out.display()
    );
    Ok(())
}
