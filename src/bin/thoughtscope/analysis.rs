//! `segment`, `vertical-scores` and `receiver-heads`: the analysis core's stable interface that
//! other tools call (JSON shapes, `null` for NaN).

use std::path::PathBuf;

use clap::Args;
use serde::Serialize;
use thoughtscope::attention::SentenceMode;
use thoughtscope::rollout::Rollout;
use thoughtscope::scores::{receiver_heads_from_cache_dir, vertical_scores_npy, ReceiverOptions, ScoreType, VerticalOptions};
use thoughtscope::{Error, Result};

/// `thoughtscope segment <problem_dir> --mode full-cot|chunks [--json]`
#[derive(Debug, Args)]
pub struct SegmentArgs {
    /// Rollout/problem directory (base_solution.json; chunks.json or chunks_labeled.json for `chunks`).
    pub problem_dir: PathBuf,
    #[arg(long, value_parser = crate::named::<SentenceMode>(), default_value_t = SentenceMode::FullCot)]
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
    #[arg(long, value_parser = crate::named::<ScoreType>(), default_value_t = ScoreType::Mean)]
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

/// The sentences of a problem directory, one per line or as JSON.
pub fn segment(args: SegmentArgs) -> Result<()> {
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
        outln!("{}", serde_json::to_string(&output)?);
        return Ok(());
    }
    let mut out = format!("text_id {text_id}, {} sentences ({} mode)\n", sentences.len(), args.mode);
    for (k, (s, &(a, b))) in sentences.sentences.iter().zip(&sentences.ranges).enumerate() {
        out.push_str(&format!("{k:>4} [{a}, {b}) {s:?}\n"));
    }
    outln!("{out}");
    Ok(())
}

/// Scores of one `.npy` matrix: `column<TAB>score` lines or a JSON array.
pub fn vertical_scores(args: VerticalScoresArgs) -> Result<()> {
    let scores = vertical_scores_npy(&args.matrix, &args.vertical.options()?)?;
    if args.json {
        outln!("{}", serde_json::to_string(&scores)?);
        return Ok(());
    }
    let mut out = String::new();
    for (j, value) in scores.numpy_values().iter().enumerate() {
        out.push_str(&format!("{j}\t{}\n", serde_json::to_string(value)?));
    }
    outln!("{out}");
    Ok(())
}

/// Head selection over a cache model directory: the top heads or JSON.
pub fn receiver_heads(args: ReceiverHeadsArgs) -> Result<()> {
    let options = ReceiverOptions { top_k: args.top_k, vertical: args.vertical.options()? };
    let result = receiver_heads_from_cache_dir(&args.cache_model_dir, &options)?;
    for (name, reason) in &result.skipped {
        eprintln!("note: skipped {name}: {reason}");
    }
    if args.json {
        outln!("{}", result.to_json());
        return Ok(());
    }
    let m = &result.mean_kurtosis;
    let mut out = format!("{} responses, {} layers × {} heads\ntop {} heads (layer, head, mean kurtosis):\n", result.responses.len(), m.layers, m.heads, result.top_k_heads.len());
    for &(l, h) in &result.top_k_heads {
        out.push_str(&format!("  {l:>3} {h:>3} {:.6}\n", m.get(l, h)));
    }
    outln!("{out}");
    Ok(())
}
