//! Resampling: for every chunk i of a reasoning trace, K continuations of the trace with chunk i
//! removed, written in thought-anchors' layout so its `analyze_rollouts.py` (and
//! `thoughtscope importance`) reads them unchanged. Mirrors thought-anchors
//! `generate_rollouts.py` (`process_problem`, `generate_rollout`; answers by `utils.py`).
//!
//! - [`prompts`]: the prompt before chunk i ([`PrefixMode`]: upstream's faithful prefix, the
//!   corrected one, or the project's own rollouts), and the forced-answer suffix.
//! - [`engine`]: where continuations come from ([`RolloutProvider`]; [`LocalProvider`] runs a
//!   loaded model, one prefill per chunk shared by batched decoding).
//! - [`openai`]: [`OpenAiProvider`], upstream's API path against any OpenAI-compatible
//!   `/completions` server (vLLM, llama.cpp), concurrent requests with retries.
//! - here: the output records ([`ResampledSolution`]), the per-chunk manifest that makes a run
//!   resumable and refuses a resume with other settings, and the loop over chunks
//!   ([`resample_problem`]).
//!
//! Layout: `ROOT/<problem>/chunk_<i>/solutions.json` (an array of upstream's records) and
//! `chunk_<i>/resample_manifest.json`; `problem.json`, `base_solution.json`, `chunks.json` and
//! `chunks_labeled.json` are copied beside the chunk folders when absent, as upstream's problem
//! folder holds them.
//!
//! Seeds: rollout r of chunk i draws with `rollout_seed``(seed, i, r)`, its own stream, so
//! results do not depend on batch size, thread count or sharding (upstream seeds torch once and
//! its API path sends no seed at all).

pub mod engine;
pub mod openai;
pub mod prompts;

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

pub use engine::{Continuation, DecodeSettings, LocalProvider, ProviderIdentity, RolloutProvider};
pub use openai::{OpenAiConfig, OpenAiProvider};
pub use prompts::{chunk_prompts, ChunkPrompt, PrefixMode, ResampleSource, RolloutType, FORCED_ANSWER_SUFFIX};

use crate::attention::split_solution_into_chunks;
use crate::io::shard::{Shard, ShardRun};
use crate::progress::progress;
use crate::rollout::answers::{check_answer, extract_boxed_answers};
use crate::{Error, Result};

/// The manifest's format; a change that alters results bumps it.
pub(crate) const MANIFEST_FORMAT_VERSION: u32 = 1;
/// Each chunk folder's manifest.
pub(crate) const MANIFEST_FILE: &str = "resample_manifest.json";
/// Each chunk folder's rollouts (upstream's name).
pub(crate) const SOLUTIONS_FILE: &str = "solutions.json";
/// Files of the problem folder copied beside the chunk folders.
const PROBLEM_FILES: [&str; 4] = ["problem.json", "base_solution.json", "chunks.json", "chunks_labeled.json"];

/// One rollout, with upstream's field names (thought-anchors `generate_rollouts.py`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResampledSolution {
    pub chunk_removed: String,
    pub prefix_without_chunk: String,
    /// The first chunk of the continuation by upstream's splitter ("" when it has none).
    pub chunk_resampled: String,
    pub rollout: String,
    /// Prompt + continuation.
    pub full_cot: String,
    pub answer: String,
    pub is_correct: bool,
}

/// Upstream's record of one continuation: `chunk_resampled` is the first chunk of
/// `split_solution_into_chunks(rollout)` (upstream raises an `IndexError` when the continuation
/// has no sentence boundary, e.g. a short one cut by the token budget; we write ""); the answer is
/// the first `\boxed{}` of the continuation (forced answers: of prompt + continuation);
/// `is_correct` needs a non-empty answer and gold answer.
pub(crate) fn solution_record(chunk: &ChunkPrompt, rollout: String, gold: Option<&str>, rollout_type: RolloutType) -> ResampledSolution {
    let chunk_resampled = split_solution_into_chunks(&rollout).into_iter().next().unwrap_or_default();
    let full_cot = format!("{}{rollout}", chunk.prompt);
    let scanned = match rollout_type {
        RolloutType::Default => &rollout,
        RolloutType::ForcedAnswer => &full_cot,
    };
    let answer = extract_boxed_answers(scanned).into_iter().next().unwrap_or_default();
    let is_correct = match gold {
        Some(gold) if !gold.is_empty() && !answer.is_empty() => check_answer(&answer, gold),
        _ => false,
    };
    ResampledSolution {
        chunk_removed: chunk.chunk_removed.clone(),
        prefix_without_chunk: chunk.prefix_without_chunk.clone(),
        chunk_resampled,
        rollout,
        full_cot,
        answer,
        is_correct,
    }
}

/// The seed of rollout `rollout` of chunk `chunk`: a hash of the three, so every rollout has its
/// own stream whatever runs beside it.
pub(crate) fn rollout_seed(seed: u64, chunk: usize, rollout: usize) -> u64 {
    let mut bytes = [0u8; 24];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    bytes[8..16].copy_from_slice(&(chunk as u64).to_le_bytes());
    bytes[16..].copy_from_slice(&(rollout as u64).to_le_bytes());
    xxhash_rust::xxh3::xxh3_64(&bytes)
}

/// Chunk indices from `--chunks`: a comma list of indices and inclusive ranges `a-b`
/// (`0,3,5`, `2-6`, `0,10-12`), sorted, without repeats.
pub fn parse_chunk_list(text: &str) -> Result<Vec<usize>> {
    let bad = |part: &str| Error::invalid(format!("--chunks {text:?}: `{part}` is not an index or a range a-b (e.g. 0,3,5 or 2-6)"));
    let mut chunks = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.trim().parse().map_err(|_| bad(part))?, b.trim().parse().map_err(|_| bad(part))?);
                if a > b {
                    return Err(bad(part));
                }
                chunks.extend(a..=b);
            }
            None => chunks.push(part.parse().map_err(|_| bad(part))?),
        }
    }
    if chunks.is_empty() {
        return Err(Error::invalid(format!("--chunks {text:?}: no chunk index given")));
    }
    chunks.sort_unstable();
    chunks.dedup();
    Ok(chunks)
}

/// Everything that decides a chunk's rollouts, recorded beside them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResampleManifest {
    pub format_version: u32,
    pub provider: String,
    pub model: String,
    pub weights_hash: String,
    pub tokenizer: String,
    pub mode: String,
    pub rollout_type: String,
    pub chunk_index: usize,
    /// xxh3 of the exact prompt continued (problem text, chunks and mode all enter it).
    pub prompt_hash: String,
    pub rollouts: usize,
    pub temperature: f64,
    pub top_p: f64,
    pub max_tokens: usize,
    pub seed: u64,
    /// Not compared: which version wrote it.
    pub thoughtscope_version: String,
}

impl ResampleManifest {
    /// The first field that differs from `other`, as (field, self's value, other's value); the
    /// version that wrote it is not compared.
    pub fn mismatch(&self, other: &ResampleManifest) -> Option<(&'static str, String, String)> {
        macro_rules! compare {
            ($($field:ident),*) => {
                $(if self.$field != other.$field {
                    return Some((stringify!($field), self.$field.to_string(), other.$field.to_string()));
                })*
            };
        }
        compare!(
            format_version, provider, model, weights_hash, tokenizer, mode, rollout_type, chunk_index, prompt_hash, rollouts,
            temperature, top_p, max_tokens, seed
        );
        None
    }
}

/// Settings of [`resample_problem`].
#[derive(Debug, Clone, PartialEq)]
pub struct ResampleConfig {
    pub mode: PrefixMode,
    pub rollout_type: RolloutType,
    /// Rollouts per chunk (K).
    pub rollouts: usize,
    pub seed: u64,
    pub decode: DecodeSettings,
    /// Chunk indices (`None`: all).
    pub chunks: Option<Vec<usize>>,
    /// Only the chunks of this shard (key `<problem>/chunk_<i>`).
    pub shard: Option<Shard>,
}

impl Default for ResampleConfig {
    /// Upstream's defaults: 100 rollouts, temperature 0.6, top-p 0.95, 16384 tokens, seed 44.
    fn default() -> Self {
        Self {
            mode: PrefixMode::Faithful,
            rollout_type: RolloutType::Default,
            rollouts: 100,
            seed: 44,
            decode: DecodeSettings { temperature: 0.6, top_p: 0.95, max_tokens: 16384 },
            chunks: None,
            shard: None,
        }
    }
}

/// What happened to one chunk.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkOutcome {
    pub chunk_index: usize,
    /// False: its rollouts were already there.
    pub computed: bool,
    pub new_tokens: usize,
    pub seconds: f64,
    /// Correct rollouts over those with an answer (upstream's chunk accuracy).
    pub accuracy: f64,
}

/// What [`resample_problem`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct ResampleReport {
    /// `ROOT/<problem>`.
    pub out_dir: PathBuf,
    pub run: ShardRun,
    pub chunks: Vec<ChunkOutcome>,
}

impl ResampleReport {
    /// New tokens per second over the chunks computed (prefill included in the time).
    pub fn tokens_per_second(&self) -> f64 {
        let (tokens, seconds) = self
            .chunks
            .iter()
            .filter(|c| c.computed)
            .fold((0usize, 0f64), |(t, s), c| (t + c.new_tokens, s + c.seconds));
        if seconds > 0.0 {
            tokens as f64 / seconds
        } else {
            0.0
        }
    }
}

/// The folder of chunk `i` under a problem's output folder.
pub fn chunk_dir(out_dir: &Path, chunk: usize) -> PathBuf {
    out_dir.join(format!("chunk_{chunk}"))
}

/// Resample every selected chunk of the problem folder `problem_dir` into
/// `out_root/<problem>/chunk_<i>/`, skipping chunks already done with the same settings and
/// refusing (naming the field) a chunk done with other ones.
pub fn resample_problem(
    provider: &dyn RolloutProvider,
    problem_dir: &Path,
    out_root: &Path,
    config: &ResampleConfig,
) -> Result<ResampleReport> {
    if config.rollouts == 0 {
        return Err(Error::invalid("--rollouts must be at least 1"));
    }
    config.decode.sampling()?;
    let source = ResampleSource::open(problem_dir)?;
    let all: Vec<usize> = match &config.chunks {
        Some(chunks) => chunks.clone(),
        None => (0..source.chunks.len()).collect(),
    };
    let prompts = chunk_prompts(&source, config.mode, config.rollout_type, &all)?;
    let total = prompts.len();
    let prompts = match config.shard {
        Some(shard) => shard.select(prompts, |p| format!("{}/chunk_{}", source.name, p.chunk_index)),
        None => prompts,
    };
    let out_dir = out_root.join(crate::io::path_component(&source.name));

    let identity = provider.identity();
    let manifest_for = |prompt: &ChunkPrompt| ResampleManifest {
        format_version: MANIFEST_FORMAT_VERSION,
        provider: identity.provider.clone(),
        model: identity.model.clone(),
        weights_hash: identity.weights_hash.clone(),
        tokenizer: identity.tokenizer.clone(),
        mode: config.mode.name().into(),
        rollout_type: config.rollout_type.name().into(),
        chunk_index: prompt.chunk_index,
        prompt_hash: format!("{:016x}", xxhash_rust::xxh3::xxh3_64(prompt.prompt.as_bytes())),
        rollouts: config.rollouts,
        temperature: config.decode.temperature,
        top_p: config.decode.top_p,
        max_tokens: config.decode.max_tokens,
        seed: config.seed,
        thoughtscope_version: env!("CARGO_PKG_VERSION").into(),
    };

    // Which chunks are done (checked before any work, so a mismatch stops the run at once).
    let mut todo = Vec::new();
    let mut outcomes = Vec::new();
    for prompt in &prompts {
        let dir = chunk_dir(&out_dir, prompt.chunk_index);
        let wanted = manifest_for(prompt);
        if let Some(accuracy) = finished_chunk(&dir, &wanted)? {
            outcomes.push(ChunkOutcome { chunk_index: prompt.chunk_index, computed: false, new_tokens: 0, seconds: 0.0, accuracy });
        } else {
            todo.push((prompt, wanted));
        }
    }

    // One run per folder (or per shard of it) at a time, and `INCOMPLETE` there until it is
    // done; taken after the checks, so a refused run leaves the folder as it was.
    let part = config.shard.map(|s| format!("shard-{}-of-{}", s.index, s.count));
    let lock = crate::io::begin_run(&out_dir, "resample", part.as_deref())?;
    copy_problem_files(&source.dir, &out_dir)?;
    let bar = progress((todo.len() * config.rollouts) as u64, "rollouts");
    let (mut tokens_so_far, started) = (0usize, Instant::now());
    for (prompt, manifest) in todo {
        let chunk_started = Instant::now();
        let seeds: Vec<u64> = (0..config.rollouts).map(|r| rollout_seed(config.seed, prompt.chunk_index, r)).collect();
        let mut chunk_tokens = 0usize;
        let continuations = provider.continuations(&prompt.prompt, &seeds, &config.decode, &mut |tokens| {
            chunk_tokens += tokens;
            let rate = (tokens_so_far + chunk_tokens) as f64 / started.elapsed().as_secs_f64().max(1e-9);
            bar.set_message(format!("chunk {} · {rate:.1} tok/s", prompt.chunk_index));
            bar.inc(1);
        });
        let continuations = continuations
            .map_err(|e| Error::invalid(format!("{}: chunk {}: {e}", source.dir.display(), prompt.chunk_index)))?;
        tokens_so_far += chunk_tokens;
        let records: Vec<ResampledSolution> = continuations
            .into_iter()
            .map(|c| solution_record(prompt, c.text, source.gt_answer.as_deref(), config.rollout_type))
            .collect();
        let dir = chunk_dir(&out_dir, prompt.chunk_index);
        // Manifest first: a crash before the rollouts leaves a manifest without rollouts, which
        // the next run redoes; rollouts without a manifest are never ours.
        crate::io::write_json(dir.join(MANIFEST_FILE), &manifest)?;
        crate::io::write_json(dir.join(SOLUTIONS_FILE), &records)?;
        outcomes.push(ChunkOutcome {
            chunk_index: prompt.chunk_index,
            computed: true,
            new_tokens: chunk_tokens,
            seconds: chunk_started.elapsed().as_secs_f64(),
            accuracy: accuracy(&records),
        });
    }
    bar.finish();
    lock.finish()?;
    outcomes.sort_by_key(|o| o.chunk_index);
    let computed = outcomes.iter().filter(|o| o.computed).count();
    Ok(ResampleReport {
        out_dir,
        run: ShardRun {
            shard: config.shard,
            total,
            taken: outcomes.len(),
            computed,
            cached: outcomes.len() - computed,
            failed: Vec::new(),
        },
        chunks: outcomes,
    })
}

/// Upstream's chunk accuracy (`analyze_rollouts.py`): correct over the rollouts with an answer,
/// 0 when none has one.
fn accuracy(records: &[ResampledSolution]) -> f64 {
    let answered = records.iter().filter(|r| !r.answer.is_empty()).count();
    if answered == 0 {
        return 0.0;
    }
    records.iter().filter(|r| r.is_correct && !r.answer.is_empty()).count() as f64 / answered as f64
}

/// `Some(accuracy)` when `dir` holds this chunk's rollouts made with `wanted`'s settings; `None`
/// when they are to be made; an error when rollouts are there with other settings, or without a
/// manifest.
fn finished_chunk(dir: &Path, wanted: &ResampleManifest) -> Result<Option<f64>> {
    let (solutions, manifest) = (dir.join(SOLUTIONS_FILE), dir.join(MANIFEST_FILE));
    if !solutions.exists() {
        return Ok(None);
    }
    if !manifest.exists() {
        return Err(Error::format(
            &solutions,
            format!("rollouts without {MANIFEST_FILE}: not made by `thoughtscope resample` (their settings are unknown); remove them or choose another --out"),
        ));
    }
    let recorded: ResampleManifest = crate::io::read_json(&manifest)?;
    if let Some((field, cached, requested)) = recorded.mismatch(wanted) {
        return Err(Error::CacheMismatch { path: manifest, field: field.into(), cached, requested });
    }
    let records: Vec<ResampledSolution> = crate::io::read_json(&solutions)?;
    if records.len() != wanted.rollouts {
        return Err(Error::format(
            &solutions,
            format!("{} rollouts, the manifest records {}; remove the chunk folder to redo it", records.len(), wanted.rollouts),
        ));
    }
    Ok(Some(accuracy(&records)))
}

/// Copy the problem's input files beside the chunk folders (upstream's problem folder holds
/// them), unless the output folder is the problem folder itself. A copy already there must be
/// identical.
fn copy_problem_files(problem_dir: &Path, out_dir: &Path) -> Result<()> {
    let same = match (problem_dir.canonicalize(), out_dir.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same {
        return Ok(());
    }
    for name in PROBLEM_FILES {
        let from = problem_dir.join(name);
        if !from.exists() {
            continue;
        }
        let bytes = std::fs::read(&from).map_err(|e| Error::io(&from, e))?;
        let to = out_dir.join(name);
        if to.exists() {
            let there = std::fs::read(&to).map_err(|e| Error::io(&to, e))?;
            if there != bytes {
                return Err(Error::format(
                    &to,
                    format!("differs from {}: this output folder belongs to another trace; choose another --out", from.display()),
                ));
            }
            continue;
        }
        crate::io::write_atomic(&to, &bytes)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_lists_parse() {
        assert_eq!(parse_chunk_list("0,3,5").unwrap(), vec![0, 3, 5]);
        assert_eq!(parse_chunk_list("5, 2-4,3").unwrap(), vec![2, 3, 4, 5]);
        for bad in ["", "a", "4-2", "1-", "-1"] {
            assert!(parse_chunk_list(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn seeds_differ_by_chunk_and_rollout() {
        let seeds = [rollout_seed(44, 0, 0), rollout_seed(44, 0, 1), rollout_seed(44, 1, 0), rollout_seed(45, 0, 0)];
        for i in 0..seeds.len() {
            for j in 0..i {
                assert_ne!(seeds[i], seeds[j]);
            }
        }
    }

    #[test]
    fn records_follow_upstream() {
        let chunk = ChunkPrompt {
            chunk_index: 1,
            chunk_removed: "Wait.".into(),
            prefix_without_chunk: "So x = 2.".into(),
            prompt: "P: \\boxed{} <think>\nSo x = 2.".into(),
        };
        let r = solution_record(&chunk, " Then x is 2. So \\boxed{2}".into(), Some("2"), RolloutType::Default);
        assert_eq!((r.chunk_resampled.as_str(), r.answer.as_str(), r.is_correct), ("Then x is 2.", "2", true));
        assert_eq!(r.full_cot, format!("{}{}", chunk.prompt, r.rollout));
        // Forced: the answer is found in prompt + continuation.
        let forced = ChunkPrompt { prompt: format!("{}{FORCED_ANSWER_SUFFIX}", chunk.prompt), ..chunk.clone() };
        let r = solution_record(&forced, "3}.".into(), Some("2"), RolloutType::ForcedAnswer);
        assert_eq!((r.chunk_resampled.as_str(), r.answer.as_str(), r.is_correct), ("", "3", false));
        // No gold answer: never correct.
        assert!(!solution_record(&chunk, "\\boxed{2}".into(), None, RolloutType::Default).is_correct);
    }
}
