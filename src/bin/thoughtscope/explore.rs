//! `explore`: one trace as a self-contained interactive HTML page.

use std::path::PathBuf;

use clap::Args;
use thoughtscope::attention::{BoundaryMode, SentenceMode};
use thoughtscope::model::{Model, Settings};
use thoughtscope::plot::{Explorer, ExplorerOptions, WebsiteTrace};
use thoughtscope::scores::VerticalOptions;
use thoughtscope::{Error, Result};

use crate::DeviceArg;

/// `thoughtscope explore`: the trace as text coloured by a chosen metric, attention, suppression
/// and resampling of each sentence, a linked sentence × sentence heatmap and, with
/// `--token-view`, the token-level attention of each sentence and its top source, in one HTML
/// file; `--website DIR` also writes the trace as the thought-anchors website's files.
#[derive(Debug, Args)]
pub struct ExploreArgs {
    /// Rollout/problem directory (base_solution.json, chunks.json / chunks_labeled.json).
    pub problem_dir: PathBuf,
    /// Model whose cached sentence attention is shown (no attention without it).
    #[arg(long)]
    pub model: Option<String>,
    #[arg(long, default_value = "attn_cache")]
    pub cache_dir: PathBuf,
    #[arg(long, value_parser = crate::named::<SentenceMode>(), default_value_t = SentenceMode::Chunks)]
    pub mode: SentenceMode,
    /// A `thoughtscope suppress --out` folder (default: <problem_dir>/suppression when present).
    #[arg(long)]
    pub suppression: Option<PathBuf>,
    /// Receiver heads selected by this trace's kurtosis.
    #[arg(long, default_value_t = 20)]
    pub top_k: usize,
    /// Receiver heads given instead, `L.H` comma-separated (e.g. from `thoughtscope receiver-heads`).
    #[arg(long, value_delimiter = ',', value_parser = parse_head)]
    pub receiver_heads: Option<Vec<(usize, usize)>>,
    /// Heads shown as well (matrix and vertical scores), `L.H` comma-separated.
    #[arg(long, value_delimiter = ',', value_parser = parse_head)]
    pub heads: Vec<(usize, usize)>,
    /// Single-head matrices kept in the page (each about 0.4 MB at 300 sentences).
    #[arg(long, default_value_t = 4)]
    pub max_head_matrices: usize,
    #[arg(long, default_value_t = 4)]
    pub proximity_ignore: usize,
    /// Resampled alternatives shown per chunk (`chunk_<k>/solutions.json`; 0: not read).
    #[arg(long, default_value_t = 5)]
    pub max_alternatives: usize,
    /// Output HTML file.
    #[arg(long, default_value = "trace.html")]
    pub out: PathBuf,
    /// Also write the page's data as JSON beside it (`<out>.json`).
    #[arg(long)]
    pub json: bool,
    /// Run the model once over the trace: the attention shown and the token view (each sentence
    /// and its top source, token by token) come from that pass instead of the cache. Needs
    /// --model. Without it the token view comes from the token pairs the cache entry stores.
    #[arg(long, requires = "model")]
    pub token_view: bool,
    #[command(flatten)]
    pub token_view_size: crate::TokenViewArgs,
    /// Token boundaries of that pass: `prefix` (upstream parity) or `offsets` (corrected).
    #[arg(long, value_parser = crate::named::<BoundaryMode>(), default_value_t = BoundaryMode::Prefix)]
    pub boundaries: BoundaryMode,
    /// Also write the trace as the thought-anchors website's files into this folder:
    /// chunks_labeled.json, step_importance.json, step_importance_supp.json,
    /// `chunk_<k>/solutions.json`, chunks_resampled.json (what exists).
    #[arg(long, value_name = "DIR")]
    pub website: Option<PathBuf>,
    #[command(flatten)]
    pub device: DeviceArg,
}

fn parse_head(text: &str) -> std::result::Result<(usize, usize), String> {
    let (layer, head) = text.split_once('.').ok_or_else(|| format!("`{text}`: expected LAYER.HEAD, e.g. 12.3"))?;
    let number = |s: &str| s.trim().parse::<usize>().map_err(|e| format!("`{text}`: {e}"));
    Ok((number(layer)?, number(head)?))
}

pub fn run(args: ExploreArgs, settings: &Settings) -> Result<()> {
    let options = ExplorerOptions {
        model: args.model,
        cache_dir: args.cache_dir,
        mode: args.mode,
        suppression_dir: args.suppression,
        top_k: args.top_k,
        receiver_heads: args.receiver_heads,
        heads: args.heads,
        max_head_matrices: args.max_head_matrices,
        vertical: VerticalOptions { proximity_ignore: args.proximity_ignore, ..VerticalOptions::default() },
        max_alternatives: args.max_alternatives,
        token_heads: args.token_view_size.token_heads,
        token_max: args.token_view_size.token_max,
        boundary_mode: args.boundaries,
        ..ExplorerOptions::default()
    };
    let explorer = match (&options.model, args.token_view) {
        (Some(model), true) => {
            let settings = args.device.settings(settings)?;
            let loaded = Model::load(model, &settings)?;
            Explorer::from_problem_dir_with_model(&args.problem_dir, &options, &loaded)?
        }
        _ => Explorer::from_problem_dir(&args.problem_dir, &options)?,
    };
    if let Some(website) = &args.website {
        let written = WebsiteTrace::from_problem_dir(&args.problem_dir, &options)?.write(website)?;
        outln!("{}: {} website files", website.display(), written.len());
    }
    explorer.write_html(&args.out)?;
    if args.json {
        let mut path = args.out.clone().into_os_string();
        path.push(".json");
        thoughtscope::io::write_atomic(&path, explorer.to_json().as_bytes()).map_err(|e| e.context("writing the explorer data"))?;
    }
    let size = std::fs::metadata(&args.out).map_err(|e| Error::io(&args.out, e))?.len();
    outln!("{} ({:.2} MB): {}", args.out.display(), size as f64 / 1e6, explorer.size_summary());
    for missing in &explorer.missing {
        outln!("  missing {}: {}; run `{}`", missing.part, missing.why, missing.command);
    }
    Ok(())
}
