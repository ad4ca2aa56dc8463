//! Writing one rollout directory in the thought-anchors layout (`generate_rollouts.py`):
//! `problem.json`, `base_solution.json`, `chunks.json`, `chunks_labeled.json`, plus our own
//! `generation.json` (how the rollout was made; upstream has no such file and readers ignore it).
//!
//! Shapes follow the published dataset: `base_solution.json` is `{prompt, solution, full_cot,
//! answer, is_correct}` with `full_cot == prompt + solution`; `chunks.json` is `{source_text,
//! solution_text, chunks}`; `chunks_labeled.json` is an array of `{chunk, chunk_idx,
//! function_tags, depends_on, ...}` where `depends_on` holds chunk indices as strings.
//! Files are written pretty-printed (2-space indent, as upstream's `json.dump(indent=2)`, but
//! UTF-8 rather than `\u` escapes) and atomically (temporary file, then rename).

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{Error, Result};

pub const PROBLEM_FILE: &str = "problem.json";
pub const BASE_SOLUTION_FILE: &str = "base_solution.json";
pub const CHUNKS_FILE: &str = "chunks.json";
pub const CHUNKS_LABELED_FILE: &str = "chunks_labeled.json";
pub(crate) const GENERATION_FILE: &str = "generation.json";

/// `base_solution.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaseSolution {
    /// Exactly the text fed to the model (chat template included when one was used).
    pub prompt: String,
    /// The generated text, stop token excluded.
    pub solution: String,
    /// `prompt + solution`.
    pub full_cot: String,
    /// Extracted `\boxed{}` answer ("" when none).
    pub answer: String,
    pub is_correct: bool,
}

/// `chunks.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunksFile {
    /// `full_cot`.
    pub source_text: String,
    /// The text between `<think>` and `</think>`, stripped (upstream `generate_rollouts.py`).
    pub solution_text: String,
    pub chunks: Vec<String>,
}

/// One entry of `chunks_labeled.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabeledChunk {
    pub chunk: String,
    pub chunk_idx: usize,
    /// Omitted when empty: upstream's labelling-error entries carry `categories` instead.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub function_tags: Vec<String>,
    /// Earlier chunk indices, as strings (upstream's DAG-prompt format).
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// Any other fields (upstream's importance metrics, `summary`, or a labeller's
    /// `categories`/`explanation` error record), kept as they are.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `generation.json`: everything needed to make the rollout again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerationRecord {
    /// Model spec as given, its short name, where it was read from, and the weights hash.
    pub model: String,
    pub model_name: String,
    pub model_source: String,
    pub weights_hash: String,
    pub tokenizer: String,
    /// `raw` (upstream prompt as is) or `chat` (wrapped in the model's chat template).
    pub prompt_style: String,
    pub system_prompt: Option<String>,
    pub temperature: f64,
    pub top_p: f64,
    /// Top-k filter (`None`: all tokens); sampling is candle-transformers' `LogitsProcessor`.
    #[serde(default)]
    pub top_k: Option<usize>,
    /// Repetition penalty over the last 64 tokens (1.0: off).
    #[serde(default = "no_penalty")]
    pub repeat_penalty: f32,
    /// No stop token before this many new tokens.
    #[serde(default)]
    pub min_new_tokens: usize,
    /// The seed of this sample (`--seed` + sample index).
    pub seed: u64,
    pub sample: usize,
    pub max_new_tokens: usize,
    pub prompt_tokens: usize,
    pub new_tokens: usize,
    /// Whether a stop token ended generation (false: `max_new_tokens` reached).
    pub stopped: bool,
    /// `keep_final` (published-dataset compatible) or `drop_final` (HEAD splitter).
    pub final_chunk: String,
    /// `first` (upstream) or `last` `\boxed{}` answer.
    pub boxed_answer: String,
    /// `rules` or `llm:<model>`.
    pub labeller: String,
    pub thoughtscope_version: String,
}

/// Everything in one rollout directory.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutFiles {
    /// `problem.json`, as given in the problems file.
    pub problem: Value,
    pub base_solution: BaseSolution,
    pub chunks: ChunksFile,
    pub labeled: Vec<LabeledChunk>,
    pub generation: Option<GenerationRecord>,
}

impl RolloutFiles {
    /// Write every file into `dir` (created if needed); each file is replaced atomically.
    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        write_json(&dir.join(PROBLEM_FILE), &self.problem)?;
        write_json(&dir.join(BASE_SOLUTION_FILE), &self.base_solution)?;
        write_json(&dir.join(CHUNKS_FILE), &self.chunks)?;
        write_json(&dir.join(CHUNKS_LABELED_FILE), &self.labeled)?;
        if let Some(generation) = &self.generation {
            write_json(&dir.join(GENERATION_FILE), generation)?;
        }
        Ok(())
    }

    /// Read back what [`RolloutFiles::write`] wrote (`generation.json` optional), with errors
    /// naming the file and field. Analyses should use [`super::Rollout`]; this is the typed
    /// round trip of the writer.
    pub fn read(dir: &Path) -> Result<RolloutFiles> {
        let generation_path = dir.join(GENERATION_FILE);
        Ok(RolloutFiles {
            problem: read_json(&dir.join(PROBLEM_FILE))?,
            base_solution: read_json(&dir.join(BASE_SOLUTION_FILE))?,
            chunks: read_json(&dir.join(CHUNKS_FILE))?,
            labeled: read_json(&dir.join(CHUNKS_LABELED_FILE))?,
            generation: if generation_path.exists() { Some(read_json(&generation_path)?) } else { None },
        })
    }
}

pub(crate) use crate::io::{read_json, write_json};

/// Name of rollout `k` of `samples` with `prefix`: zero-padded (at least 2 digits) so that a
/// lexicographic sort of the directory names is the sample order.
pub fn rollout_dir_name(prefix: &str, k: usize, samples: usize) -> String {
    let width = samples.saturating_sub(1).max(1).to_string().len().max(2);
    format!("{prefix}{k:0width$}")
}

fn no_penalty() -> f32 {
    1.0
}
