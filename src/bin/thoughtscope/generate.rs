//! `generate`: sample rollouts of each problem with a model, in the thought-anchors layout.

use std::path::PathBuf;

use clap::Args;
use thoughtscope::model::{Model, Settings};
use thoughtscope::progress::progress;
use thoughtscope::rollout::generate::{generate_rollouts, read_problems, BoxedPick, FinalChunk, GenerateConfig};
use thoughtscope::rollout::labeller::{Labeller, LlmConfig, LlmLabeller};
use thoughtscope::rollout::tagger::{RuleTagger, VA_TAG};
use thoughtscope::{Error, Result};

use crate::{DeviceArg, ShardArg};

/// `thoughtscope generate`: sample rollouts of every problem in a problems file.
#[derive(Debug, Clone, Args)]
pub struct GenerateArgs {
    /// Problems file: a JSON array of objects with `problem` (and optionally `gt_answer`, `name`
    /// or `problem_idx`), as upstream's selected_problems.json, or one such object.
    #[arg(long)]
    pub problems: PathBuf,
    /// Model: GGUF file, HF model directory, cached hub id or registry name (e.g. smollm2-135m).
    #[arg(long)]
    pub model: String,
    /// Output root: rollouts go to `ROOT/<problem name>/<prefix><k>/`.
    #[arg(long)]
    pub out: PathBuf,
    /// Rollouts per problem.
    #[arg(long, default_value_t = 10)]
    pub samples: usize,
    /// Sampling temperature (0 = greedy).
    #[arg(long, default_value_t = 0.8)]
    pub temperature: f64,
    /// Nucleus (top-p) mass.
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f64,
    /// Sample only among the k most likely tokens (default: all).
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Repetition penalty over the last 64 tokens (1.0: off).
    #[arg(long, default_value_t = 1.0)]
    pub repeat_penalty: f32,
    /// No stop token before this many new tokens.
    #[arg(long, default_value_t = 0)]
    pub min_new_tokens: usize,
    /// Seed of sample 0; sample k uses seed + k.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value_t = 350)]
    pub max_new_tokens: usize,
    /// Rollout directory name prefix.
    #[arg(long, default_value = "rollout_")]
    pub prefix: String,
    /// raw: upstream's prompt string as is; chat: wrapped in the model's chat template; auto: chat
    /// when the tokenizer has a template.
    #[arg(long, default_value = "auto", value_parser = ["raw", "chat", "auto"])]
    pub prompt_style: String,
    /// System prompt text.
    #[arg(long, conflicts_with = "system_file")]
    pub system: Option<String>,
    /// File holding the system prompt (trailing whitespace removed).
    #[arg(long)]
    pub system_file: Option<PathBuf>,
    /// Drop the text after the last sentence boundary as HEAD's splitter does (default: keep it as
    /// the final chunk, as the published dataset does).
    #[arg(long)]
    pub drop_final_chunk: bool,
    /// Which \boxed{} is the answer: last (default) or first (upstream).
    #[arg(long, default_value = "last", value_parser = ["first", "last"])]
    pub boxed: String,
    /// Chunk labeller: rules (built-in tagger) or llm (OpenAI-compatible endpoint).
    #[arg(long, default_value = "rules", value_parser = ["rules", "llm"])]
    pub labeller: String,
    /// LLM labeller: base URL; requests go to {URL}/chat/completions.
    #[arg(long, default_value = "http://127.0.0.1:8000/v1")]
    pub llm_base_url: String,
    /// LLM labeller: model name.
    #[arg(long, default_value = "gpt-4o")]
    pub llm_model: String,
    /// LLM labeller: environment variable holding the API key.
    #[arg(long, default_value = "OPENAI_API_KEY")]
    pub llm_api_key_env: String,
    /// LLM labeller: request timeout in seconds.
    #[arg(long, default_value_t = 120)]
    pub llm_timeout_s: u64,
    /// LLM labeller: do not send response_format json_object.
    #[arg(long)]
    pub llm_no_json_mode: bool,
    #[command(flatten)]
    pub device: DeviceArg,
    /// Sharded: only the problems of this shard (by problem name); each problem's rollouts are
    /// its own folder, so the shards' outputs together are the unsharded run's.
    #[command(flatten)]
    pub shard: ShardArg,
}

/// Generate with a progress bar on stderr; print one line per rollout, then a total.
pub fn run(args: GenerateArgs, settings: &Settings) -> Result<()> {
    let settings = args.device.settings(settings)?;
    thoughtscope::io::check_folder_or_absent(&args.out)?;
    let all_problems = read_problems(&args.problems)?;
    let shard = args.shard.resolve()?;
    let total = all_problems.len();
    let problems = match shard {
        Some(shard) => shard.select(all_problems, |p| p.name.clone()),
        None => all_problems,
    };
    if let Some(shard) = shard {
        outln!("shard {shard}: {} of {total} problems", problems.len());
    }
    let system_prompt = match (&args.system, &args.system_file) {
        (Some(text), _) => Some(text.clone()),
        (None, Some(path)) => {
            Some(std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?.trim_end().to_string())
        }
        (None, None) => None,
    };
    let config = GenerateConfig {
        samples: args.samples,
        temperature: args.temperature,
        top_p: args.top_p,
        top_k: args.top_k,
        repeat_penalty: args.repeat_penalty,
        min_new_tokens: args.min_new_tokens,
        seed: args.seed,
        max_new_tokens: args.max_new_tokens,
        prefix: args.prefix.clone(),
        prompt_style: args.prompt_style.parse()?,
        system_prompt,
        final_chunk: if args.drop_final_chunk { FinalChunk::Drop } else { FinalChunk::Keep },
        boxed: if args.boxed == "first" { BoxedPick::First } else { BoxedPick::Last },
    };
    let labeller: Box<dyn Labeller> = match args.labeller.as_str() {
        "llm" => Box::new(LlmLabeller::new(LlmConfig {
            base_url: args.llm_base_url.clone(),
            model: args.llm_model.clone(),
            api_key_env: Some(args.llm_api_key_env.clone()),
            temperature: 0.0,
            timeout: std::time::Duration::from_secs(args.llm_timeout_s),
            json_mode: !args.llm_no_json_mode,
        })),
        _ => Box::new(RuleTagger::default()),
    };
    let loaded = Model::load(&args.model, &settings)?;
    let bar = progress((problems.len() * config.samples) as u64, "rollouts");
    let made = generate_rollouts(&loaded, &args.model, &problems, &config, labeller.as_ref(), &args.out, &mut |r| {
        bar.set_message(format!("{} {} chunks", r.dir.display(), r.chunks));
        bar.inc(1);
    });
    bar.finish();
    let made = made?;
    let mut summary = String::new();
    for r in &made {
        summary.push_str(&format!(
            "{}\t{} chunks\t{} tagged {}\t{} new tokens{}\tanswer {:?}\tcorrect {}\n",
            r.dir.display(),
            r.chunks,
            r.va_chunks,
            VA_TAG,
            r.new_tokens,
            if r.stopped { "" } else { " (max reached)" },
            r.answer,
            r.is_correct
        ));
    }
    let with_tags = made.iter().filter(|r| r.va_chunks > 0).count();
    summary.push_str(&format!(
        "{} rollouts of {} problem(s) under {} ({} with {} sentences)",
        made.len(),
        problems.len(),
        args.out.display(),
        with_tags,
        VA_TAG
    ));
    outln!("{summary}");
    Ok(())
}
