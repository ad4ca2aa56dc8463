//! The prompt each chunk's continuations start from: the text before chunk i, with chunk i
//! removed, after the problem's prompt (thought-anchors `generate_rollouts.py`, `process_problem`
//! and `generate_rollout`).
//!
//! Upstream builds the prefix from the chunk list: `full_prefix` joins chunks 0..=i with single
//! spaces, then `full_prefix.replace(chunk, "").strip()` removes chunk i. Two quirks follow, kept
//! in [`PrefixMode::Faithful`]: `replace` removes *every* occurrence of the chunk's text (a
//! repeated "Wait." vanishes from the whole prefix, and a chunk that occurs inside an earlier one
//! cuts it), and the trace's own separators (`\n\n`, no space) become single spaces.
//! [`PrefixMode::Corrected`] takes the trace's own text before chunk i instead.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::attention::pystr::py_strip;
use crate::attention::get_chunk_ranges;
use crate::rollout::generate::{solution_text, upstream_prompt};
use crate::rollout::Rollout;
use crate::{Error, Result};

/// What upstream's forced-answer rollouts append to the prompt (its spelling, "answers", kept).
pub const FORCED_ANSWER_SUFFIX: &str = "\n</think>\n\nTherefore, the final answers is \\boxed{";

/// How the prompt before chunk i is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrefixMode {
    /// Upstream exactly: its raw prompt with `problem.json`'s problem, then the chunks before i
    /// joined by single spaces with every occurrence of chunk i's text removed.
    Faithful,
    /// Upstream's raw prompt, then the trace's own text before chunk i (only that occurrence
    /// removed, the trace's spacing kept; trailing whitespace stripped as upstream strips).
    Corrected,
    /// The project's own rollouts (`thoughtscope generate`): the exact prompt the trace was
    /// generated from (`base_solution.json` `prompt`: chat template, system prompt), then the
    /// trace's own text before chunk i as in [`PrefixMode::Corrected`].
    OwnRollout,
}

impl PrefixMode {
    pub fn name(self) -> &'static str {
        match self {
            PrefixMode::Faithful => "faithful",
            PrefixMode::Corrected => "corrected",
            PrefixMode::OwnRollout => "own-rollout",
        }
    }
}

impl std::str::FromStr for PrefixMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "faithful" => Ok(PrefixMode::Faithful),
            "corrected" => Ok(PrefixMode::Corrected),
            "own-rollout" => Ok(PrefixMode::OwnRollout),
            other => Err(Error::invalid(format!("prefix mode `{other}`: expected faithful, corrected or own-rollout"))),
        }
    }
}

/// Upstream's `--rollout_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RolloutType {
    /// Free continuations; the answer is the first `\boxed{}` of the continuation.
    Default,
    /// [`FORCED_ANSWER_SUFFIX`] closes the thinking and opens the box; the answer is the first
    /// `\boxed{}` of prompt + continuation (upstream scans the whole `full_cot`).
    ForcedAnswer,
}

impl RolloutType {
    /// Upstream's name (`default`, `forced_answer`).
    pub fn name(self) -> &'static str {
        match self {
            RolloutType::Default => "default",
            RolloutType::ForcedAnswer => "forced_answer",
        }
    }
}

/// A problem directory read for resampling.
#[derive(Debug, Clone)]
pub struct ResampleSource {
    /// The directory's name: the output goes to `ROOT/<name>/`.
    pub name: String,
    pub dir: PathBuf,
    /// `problem.json` `problem` (faithful and corrected prompts).
    pub problem: Option<String>,
    /// `problem.json` `gt_answer` (a number is written as text).
    pub gt_answer: Option<String>,
    /// `base_solution.json` `prompt` (own-rollout prompts).
    pub base_prompt: Option<String>,
    /// `base_solution.json` `full_cot`.
    pub full_cot: String,
    /// `chunks.json` `chunks`, else the `chunk` fields of `chunks_labeled.json`.
    pub chunks: Vec<String>,
}

impl ResampleSource {
    /// Read a problem directory in the thought-anchors layout.
    pub fn open(dir: impl AsRef<Path>) -> Result<ResampleSource> {
        let rollout = Rollout::open(dir.as_ref())?;
        let chunks = rollout.chunk_texts()?;
        let problem_path = rollout.dir.join("problem.json");
        let field = |key: &str| -> Result<Option<String>> {
            match rollout.problem.as_ref().and_then(|p| p.get(key)) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(Value::Number(n)) if key == "gt_answer" => Ok(Some(n.to_string())),
                Some(_) => Err(Error::format(&problem_path, format!("field `{key}` should be a string"))),
            }
        };
        Ok(ResampleSource {
            name: rollout.name(),
            problem: field("problem")?,
            gt_answer: field("gt_answer")?,
            base_prompt: rollout.prompt.clone(),
            full_cot: rollout.full_cot.clone(),
            chunks,
            dir: rollout.dir,
        })
    }
}

/// Chunk i's prompt and the fields that describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkPrompt {
    pub chunk_index: usize,
    /// Chunk i's text (`chunk_removed`).
    pub chunk_removed: String,
    /// The trace before chunk i as the prompt holds it (`prefix_without_chunk`).
    pub prefix_without_chunk: String,
    /// The exact string continued.
    pub prompt: String,
}

/// Upstream's prefix for chunk `i`: chunks 0..=i each followed by a space, stripped, then every
/// occurrence of chunk i's text removed, stripped again.
pub(crate) fn faithful_prefix(chunks: &[String], i: usize) -> String {
    let mut full_prefix = String::new();
    for chunk in &chunks[..=i] {
        full_prefix.push_str(chunk);
        full_prefix.push(' ');
    }
    let full_prefix = py_strip(&full_prefix);
    py_strip(&full_prefix.replace(chunks[i].as_str(), "")).to_string()
}

/// The solution text before chunk `i` in the trace itself (chunks located as upstream's
/// `get_chunk_ranges` locates them), trailing whitespace stripped. An error when chunk i cannot
/// be located in the solution text.
pub(crate) fn corrected_prefix(solution: &str, chunks: &[String], i: usize) -> Result<String> {
    let found = get_chunk_ranges(solution, chunks);
    let mut ranges = found.ranges.iter();
    let mut start = None;
    for index in 0..=i {
        if found.skipped.contains(&index) {
            continue;
        }
        let range = ranges.next();
        if index == i {
            start = range.map(|r| r.0);
        }
    }
    let start = start.ok_or_else(|| {
        Error::invalid(format!("chunk {i} is not found in the trace's solution text: its prefix cannot be taken from the trace"))
    })?;
    let byte = solution.char_indices().nth(start).map_or(solution.len(), |(b, _)| b);
    Ok(py_strip(&solution[..byte]).to_string())
}

/// Every chunk's prompt (indices `which`, or all) under `mode` and `rollout_type`.
pub fn chunk_prompts(
    source: &ResampleSource,
    mode: PrefixMode,
    rollout_type: RolloutType,
    which: &[usize],
) -> Result<Vec<ChunkPrompt>> {
    let n = source.chunks.len();
    if let Some(&bad) = which.iter().find(|&&i| i >= n) {
        return Err(Error::invalid(format!("chunk {bad} does not exist: {} has {n} chunks (0..{n})", source.dir.display())));
    }
    let head = match mode {
        PrefixMode::Faithful | PrefixMode::Corrected => {
            let problem = source.problem.as_deref().ok_or_else(|| {
                Error::format(source.dir.join("problem.json"), "missing field `problem` (needed for the upstream prompt)")
            })?;
            upstream_prompt(problem)
        }
        PrefixMode::OwnRollout => {
            let base_path = source.dir.join("base_solution.json");
            let prompt = source.base_prompt.clone().ok_or_else(|| {
                Error::format(&base_path, "missing field `prompt` (own-rollout mode continues the trace's own prompt)")
            })?;
            if !source.full_cot.starts_with(&prompt) {
                return Err(Error::format(&base_path, "field `full_cot` does not start with field `prompt`"));
            }
            prompt
        }
    };
    let solution = solution_text(&source.full_cot);
    which
        .iter()
        .map(|&i| {
            let prefix_without_chunk = match mode {
                PrefixMode::Faithful => faithful_prefix(&source.chunks, i),
                PrefixMode::Corrected | PrefixMode::OwnRollout => corrected_prefix(&solution, &source.chunks, i)
                    .map_err(|e| Error::format(source.dir.join("chunks.json"), e.to_string()))?,
            };
            let mut prompt = format!("{head}{prefix_without_chunk}");
            if rollout_type == RolloutType::ForcedAnswer {
                prompt.push_str(FORCED_ANSWER_SUFFIX);
            }
            Ok(ChunkPrompt { chunk_index: i, chunk_removed: source.chunks[i].clone(), prefix_without_chunk, prompt })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn faithful_removes_every_occurrence_and_joins_with_spaces() {
        let chunks = strings(&["Let x be 2.", "Wait.", "Then y is 4.", "Wait.", "So z is 6."]);
        // Chunk 3 is the second "Wait.": upstream removes the first one too.
        assert_eq!(faithful_prefix(&chunks, 3), "Let x be 2.  Then y is 4.");
        assert_eq!(faithful_prefix(&chunks, 0), "");
        assert_eq!(faithful_prefix(&chunks, 2), "Let x be 2. Wait.");
    }

    #[test]
    fn corrected_keeps_the_trace_and_its_spacing() {
        let solution = "Let x be 2.\n\nWait. Then y is 4.\nWait. So z is 6.";
        let chunks = strings(&["Let x be 2.", "Wait.", "Then y is 4.", "Wait.", "So z is 6."]);
        assert_eq!(corrected_prefix(solution, &chunks, 3).unwrap(), "Let x be 2.\n\nWait. Then y is 4.");
        assert_eq!(corrected_prefix(solution, &chunks, 0).unwrap(), "");
        assert_eq!(corrected_prefix(solution, &chunks, 4).unwrap(), "Let x be 2.\n\nWait. Then y is 4.\nWait.");
    }
}
