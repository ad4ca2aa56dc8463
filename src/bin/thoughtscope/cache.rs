//! `cache status`: what a cache root holds and, for a folder of problems, what is still missing.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use thoughtscope::attention::cache_status::cache_status;
use thoughtscope::attention::SentenceMode;
use thoughtscope::rollout::find_problem_dirs;
use thoughtscope::{Error, Result};

use crate::attn::problem_sentences;

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// Entries per model (complete, thought-anchors, broken, temporary), sizes, and with --root
    /// the problems that have no entry yet.
    Status(StatusArgs),
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The cache root (e.g. attn_cache).
    pub dir: PathBuf,
    /// A folder of problem or rollout directories: list those with no usable entry.
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// The model whose entries --root is checked against.
    #[arg(long, default_value = "smollm2-135m")]
    pub model: String,
    /// Sentence mode of the entries --root needs (`va` uses chunks, `attn` full-cot by default).
    #[arg(long, value_parser = crate::named::<SentenceMode>(), default_value_t = SentenceMode::FullCot)]
    pub mode: SentenceMode,
    /// Exit 1 when an entry is broken or, with --root, one is missing.
    #[arg(long)]
    pub check: bool,
    /// Print JSON instead of lines.
    #[arg(long)]
    pub json: bool,
}

pub fn run(command: CacheCommand) -> Result<()> {
    let CacheCommand::Status(args) = command;
    let status = cache_status(&args.dir)?;
    let mut lines = status.lines();
    let mut missing_json = serde_json::Value::Null;
    let mut missing_count = 0;
    if let Some(root) = &args.root {
        let model = thoughtscope::model::cache_name(&args.model);
        let items: Vec<(String, String)> = find_problem_dirs(root)?
            .iter()
            .map(|dir| problem_sentences(dir, args.mode).map(|s| (dir.display().to_string(), s.text_id())))
            .collect::<Result<_>>()?;
        let missing = status.missing(&model, &items);
        missing_count = missing.len();
        lines.push(format!(
            "root {} ({}, model {model}): {} problems, {} cached, {} missing",
            root.display(),
            args.mode,
            items.len(),
            items.len() - missing.len(),
            missing.len()
        ));
        lines.extend(missing.iter().map(|(dir, id)| format!("    missing {dir} (text id {id})")));
        missing_json = serde_json::json!({
            "root": root.display().to_string(),
            "model": model,
            "mode": args.mode.to_string(),
            "problems": items.len(),
            "missing": missing.iter().map(|(dir, id)| serde_json::json!({"dir": dir, "text_id": id})).collect::<Vec<_>>(),
        });
    }
    if args.json {
        outln!("{}", serde_json::json!({"cache": status, "root": missing_json}));
    } else {
        outln!("{}", lines.join("\n"));
    }
    let broken: usize = status.models.iter().map(|m| m.broken.len()).sum();
    if args.check && (broken > 0 || missing_count > 0) {
        return Err(Error::invalid(format!("cache status --check: {broken} broken, {missing_count} missing")));
    }
    Ok(())
}
