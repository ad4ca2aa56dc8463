//! `va`: the tagged-sentence (VA) attention analysis over a folder of rollouts.

use std::path::PathBuf;

use clap::Args;
use thoughtscope::analysis::va::{fill_cache_shard, HeadRule, LayerAggregate, VaConfig, VA_TAG};
use thoughtscope::analysis::va_pipeline::run_va_with_source;
use thoughtscope::attention::{BoundaryMode, SentenceMode};
use thoughtscope::scores::ScoreType;
use thoughtscope::model::Settings;
use thoughtscope::Result;

use crate::{DeviceArg, ShardArg};

/// `thoughtscope va`: the VA pipeline from the command line (defaults as the seed's config).
#[derive(Debug, Args)]
pub struct VaArgs {
    /// Folder holding the rollout directories.
    #[arg(long, default_value = "rollouts/apple_boxes")]
    pub root: PathBuf,
    /// Rollout directories are those whose names start with this.
    #[arg(long, default_value = "rollout_")]
    pub prefix: String,
    /// Registry name, GGUF file, HF directory or hub id (loaded only on a cache miss).
    #[arg(long, default_value = "smollm2-135m")]
    pub model: String,
    /// Output directory (default `analysis/va_attention/<root folder name>/`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[arg(long, default_value = VA_TAG)]
    pub tag: String,
    #[arg(long, value_parser = crate::named::<SentenceMode>(), default_value_t = SentenceMode::Chunks)]
    pub mode: SentenceMode,
    #[arg(long, value_parser = crate::named::<BoundaryMode>(), default_value_t = BoundaryMode::Prefix)]
    pub boundaries: BoundaryMode,
    /// Representative layers (comma-separated; default the seed's 10/50/90 % of L−1).
    #[arg(long, value_delimiter = ',')]
    pub layers: Option<Vec<usize>>,
    /// Heads scanned (comma-separated; default all).
    #[arg(long, value_delimiter = ',')]
    pub heads: Option<Vec<usize>>,
    #[arg(long, default_value_t = 4)]
    pub proximity_ignore: usize,
    /// Turn off depth control (rank normalisation per row; the seed has it on).
    #[arg(long)]
    pub no_control_depth: bool,
    #[arg(long, value_parser = crate::named::<ScoreType>(), default_value_t = ScoreType::Mean)]
    pub score_type: ScoreType,
    /// Keep the first and last sentence (the seed trims them: `[1:-1]`).
    #[arg(long)]
    pub no_trim: bool,
    /// Best head per layer: `abs` (largest |delta|, the seed) or `signed`.
    #[arg(long, value_parser = crate::named::<HeadRule>(), default_value_t = HeadRule::Abs)]
    pub best_head: HeadRule,
    /// Score over layers: `sum` (the seed) or `mean`.
    #[arg(long, value_parser = crate::named::<LayerAggregate>(), default_value_t = LayerAggregate::Sum)]
    pub layer_aggregate: LayerAggregate,
    /// Tag counts only, no model and no attention (the seed's `RUN_ATTENTION = False`).
    #[arg(long)]
    pub dry_run: bool,
    #[arg(long, default_value_t = 1000)]
    pub permutations: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value = "attn_cache")]
    pub cache_dir: PathBuf,
    /// Skip the figures.
    #[arg(long)]
    pub no_figures: bool,
    /// HTML figures only (no PNG through Chromium).
    #[arg(long)]
    pub html_only: bool,
    #[command(flatten)]
    pub token_view: crate::TokenViewArgs,
    /// Where the model runs on a cache miss.
    #[command(flatten)]
    pub device: DeviceArg,
    /// Sharded: fill the cache for this shard's rollouts only, no tables or figures (run `va`
    /// again without a shard to merge).
    #[command(flatten)]
    pub shard: ShardArg,
}

impl VaArgs {
    /// The pipeline settings these flags name, loading the model with `settings`.
    fn config(&self, settings: Settings) -> VaConfig {
        VaConfig {
            root: self.root.clone(),
            prefix: self.prefix.clone(),
            model: self.model.clone(),
            tag: self.tag.clone(),
            sentence_mode: self.mode,
            boundary_mode: self.boundaries,
            layers: self.layers.clone(),
            heads: self.heads.clone(),
            proximity_ignore: self.proximity_ignore,
            control_depth: !self.no_control_depth,
            score_type: self.score_type,
            trim: !self.no_trim,
            head_rule: self.best_head,
            layer_aggregate: self.layer_aggregate,
            run_attention: !self.dry_run,
            permutations: self.permutations,
            seed: self.seed,
            cache_dir: self.cache_dir.clone(),
            out: self.out.clone(),
            figures: !self.no_figures,
            static_images: !self.html_only,
            token_heads: self.token_view.token_heads,
            token_max: self.token_view.token_max,
            settings,
        }
    }
}

/// Run the pipeline; print the headline, every rollout not analysed and the notes.
pub fn run(args: VaArgs, settings: &Settings) -> Result<()> {
    let config = args.config(args.device.settings(settings)?);
    if let Some(shard) = args.shard.resolve()? {
        let mut source = config.attention_source();
        let run = fill_cache_shard(&config, &mut source, shard)?;
        outln!("{}", run.lines("rollouts").join("\n"));
        // A job dependency (Slurm `afterok`) must not fire on a shard that left work undone.
        return match run.failed.len() {
            0 => Ok(()),
            n => Err(thoughtscope::Error::invalid(format!("shard {shard}: {n} of {} rollouts failed (listed above)", run.taken))),
        };
    }
    let result = run_va_with_source(&config, config.attention_source())?;
    let mut lines = vec![result.headline()];
    for s in &result.summary {
        if s.status != "ok" {
            lines.push(format!("  {}: {}", s.rollout_id, s.status));
        }
    }
    lines.extend(result.notes.iter().map(|n| format!("  note: {n}")));
    outln!("{}", lines.join("\n"));
    Ok(())
}
