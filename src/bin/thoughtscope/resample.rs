//! `resample`: K continuations of each chunk's prefix of one trace, in thought-anchors' layout.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use thoughtscope::model::settings::lookups;
use thoughtscope::model::{Model, Settings};
use thoughtscope::rollout::resample::{
    parse_chunk_list, resample_problem, DecodeSettings, LocalProvider, OpenAiConfig, OpenAiProvider, ResampleConfig,
    RolloutType,
};
use thoughtscope::{Error, Result};

use crate::{DeviceArg, ShardArg};

/// `thoughtscope resample`: resample every chunk of a problem folder (thought-anchors layout:
/// problem.json, base_solution.json, chunks.json or chunks_labeled.json).
#[derive(Debug, Clone, Args)]
pub struct ResampleArgs {
    /// The problem folder.
    pub problem_dir: PathBuf,
    /// Local: GGUF file, HF model directory, cached hub id or registry name (e.g. smollm2-135m).
    /// openai: the server's model id (default: the server's only model).
    #[arg(long)]
    pub model: Option<String>,
    /// Where continuations come from: `local` runs the model here; `openai` sends upstream's
    /// raw-prompt completion requests to an OpenAI-compatible server (--base-url).
    #[arg(long, default_value = "local", value_parser = ["local", "openai"])]
    pub provider: String,
    /// openai: the API root, e.g. http://127.0.0.1:8000/v1 (requests go to /completions).
    #[arg(long)]
    pub base_url: Option<String>,
    /// openai: the environment variable holding the API key (sent as a bearer token).
    #[arg(long, value_name = "VAR")]
    pub api_key_env: Option<String>,
    /// openai: requests in flight at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// openai: choices asked per request (`n`, with the seed of its first rollout); rollouts a
    /// server leaves out are asked one by one. 1: every rollout its own request and seed.
    #[arg(long, default_value_t = 1)]
    pub choices_per_request: usize,
    /// openai: do not send `seed` (for servers that reject the field).
    #[arg(long)]
    pub no_server_seed: bool,
    /// openai: retries of a request after a connection error, HTTP 5xx or 429 (backoff from
    /// 0.5 s, doubling, at most 30 s).
    #[arg(long, default_value_t = 5)]
    pub retries: usize,
    /// openai: seconds one request may take.
    #[arg(long, default_value_t = 600)]
    pub request_timeout: u64,
    /// Output root: rollouts go to `ROOT/<problem>/chunk_<i>/solutions.json`. Give forced-answer
    /// runs their own root (upstream: <...>_forced_answer).
    #[arg(long)]
    pub out: PathBuf,
    /// Rollouts per chunk.
    #[arg(long, default_value_t = 100)]
    pub rollouts: usize,
    #[arg(long, default_value_t = 0.6)]
    pub temperature: f64,
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f64,
    /// New tokens per rollout at most (also bounded by the model's context).
    #[arg(long, default_value_t = 16384)]
    pub max_tokens: usize,
    /// Rollout r of chunk i draws with its own stream, a hash of (seed, i, r).
    #[arg(long, default_value_t = 44)]
    pub seed: u64,
    /// Chunks to resample: indices and inclusive ranges, e.g. 0,3,5 or 2-6 (default: all).
    #[arg(long)]
    pub chunks: Option<String>,
    /// faithful: upstream's prompt and prefix (every occurrence of the chunk removed, chunks
    /// joined by single spaces); corrected: the trace's own text before the chunk; own-rollout:
    /// the trace's own prompt (chat template) and text, for `thoughtscope generate`'s rollouts.
    #[arg(long, default_value = "faithful", value_parser = ["faithful", "corrected", "own-rollout"])]
    pub mode: String,
    /// Upstream's forced-answer rollouts: the prompt ends `</think> Therefore, the final answers
    /// is \boxed{` and the answer is read from prompt + continuation.
    #[arg(long)]
    pub forced_answer: bool,
    /// Rollouts decoded together per step (each holds its own copy of the prompt's key/value
    /// cache); the rollouts do not depend on it.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    #[command(flatten)]
    pub device: DeviceArg,
    /// Sharded: only the chunks of this shard (key `<problem>/chunk_<i>`); the shards' chunk
    /// folders together are the unsharded run's.
    #[command(flatten)]
    pub shard: ShardArg,
}

/// Resample with a progress bar on stderr; print one line per chunk, then the totals.
pub fn run(args: ResampleArgs, settings: &Settings) -> Result<()> {
    // An --out that is a file fails now, not after the model loaded.
    thoughtscope::io::check_folder_or_absent(&args.out)?;
    let settings = args.device.settings(settings)?;
    let config = ResampleConfig {
        mode: args.mode.parse()?,
        rollout_type: if args.forced_answer { RolloutType::ForcedAnswer } else { RolloutType::Default },
        rollouts: args.rollouts,
        seed: args.seed,
        decode: DecodeSettings { temperature: args.temperature, top_p: args.top_p, max_tokens: args.max_tokens },
        chunks: args.chunks.as_deref().map(parse_chunk_list).transpose()?,
        shard: args.shard.resolve()?,
    };
    let (report, how) = match args.provider.as_str() {
        "openai" => {
            let base_url = args.base_url.clone().ok_or_else(|| Error::invalid("--provider openai needs --base-url"))?;
            let api_key = match &args.api_key_env {
                Some(var) => Some(lookups::var(var).ok_or_else(|| Error::invalid(format!("--api-key-env {var}: ${var} is not set")))?),
                None => None,
            };
            let provider = OpenAiProvider::connect(OpenAiConfig {
                model: args.model.clone(),
                api_key,
                concurrency: args.concurrency,
                choices_per_request: args.choices_per_request,
                send_seed: !args.no_server_seed,
                retries: args.retries,
                request_timeout: Duration::from_secs(args.request_timeout),
                ..OpenAiConfig::new(base_url)
            })?;
            let report = resample_problem(&provider, &args.problem_dir, &args.out, &config)?;
            (report, format!("{} requests in flight, model {}", args.concurrency, provider.model()))
        }
        _ => {
            let model = args.model.as_deref().ok_or_else(|| Error::invalid("--provider local needs --model"))?;
            let loaded = Model::load(model, &settings)?;
            let provider = LocalProvider::new(&loaded, args.batch)?;
            let report = resample_problem(&provider, &args.problem_dir, &args.out, &config)?;
            (report, format!("{} rows per decode step", provider.rows_per_step()))
        }
    };
    for chunk in &report.chunks {
        let how = if chunk.computed {
            format!("{} new tokens in {:.1} s", chunk.new_tokens, chunk.seconds)
        } else {
            "already done".to_string()
        };
        outln!("chunk_{}\taccuracy {:.3}\t{how}", chunk.chunk_index, chunk.accuracy);
    }
    for line in report.run.lines("chunks") {
        outln!("{line}");
    }
    if report.run.computed > 0 {
        outln!(
            "{:.1} new tokens/s ({how}) under {}",
            report.tokens_per_second(),
            report.out_dir.display()
        );
    }
    Ok(())
}
