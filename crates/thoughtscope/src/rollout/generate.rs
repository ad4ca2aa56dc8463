//! Rollout generation: from a problems file, sample N solutions per problem with any
//! model the runtime loads and write each as a rollout directory in the upstream layout
//! (via [`super::write`]), chunked with upstream's splitter (`split_solution_into_chunks`) and labelled by a
//! [`Labeller`].
//!
//! Layout: `<root>/<problem name>/<prefix><k>/` (default prefix `rollout_`, `k` zero-padded), so
//! `thoughtscope va --root <root>/<problem name> --prefix rollout_` discovers one problem's rollouts.
//!
//! Upstream behaviour reproduced (`generate_rollouts.py`, `utils.py`):
//! - the prompt `Solve this math problem step by step. You MUST put your final answer in
//!   \boxed{}. Problem: <problem> Solution: \n<think>\n`, `full_cot = prompt + solution`;
//! - `solution_text` = the part between the first `<think>` and the next one, cut at `</think>`,
//!   stripped; `\boxed{}` answers by brace counting (`extract_boxed_answers`), `is_correct` by
//!   upstream's `check_answer` (only when both answer and `gt_answer` are non-empty), both from
//!   [`super::answers`], which the resampling shares.
//!
//! Deliberate differences (documented in `rollouts/README.md`):
//! - [`PromptStyle::Chat`] wraps the prompt in the model's chat template: the user turn holds the
//!   upstream prompt up to `Solution: `, and the assistant turn is pre-filled with `<think>\n`;
//!   `prompt`/`full_cot` are exactly the string fed to the model (plus the generated text).
//! - [`FinalChunk::Keep`] (default): HEAD's splitter drops the text after the last boundary
//!   (an upstream bug), the published dataset keeps it. We append that remainder, unmerged, as
//!   the last chunk, so `len(chunks) == N + 1` exactly as in the dataset and chunk `k` is
//!   attention sentence `k` for every `k < N`.
//! - [`BoxedPick::Last`] (default): a small model restates answers; the last `\boxed{}` is its
//!   final one. Upstream takes the first ([`BoxedPick::First`]).
//! - Where upstream's `check_answer` falls back to SymPy, equal plain numbers count as equal
//!   (`0.5` = `1/2`, `7.0` = `7`; see [`super::answers`]), and nothing symbolic does.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::answers::{check_answer, extract_boxed_answers};
use super::labeller::Labeller;
use crate::attention::pystr::py_strip;
use crate::attention::split_solution_into_chunks;
use super::write::{rollout_dir_name, BaseSolution, ChunksFile, GenerationRecord, RolloutFiles};
use crate::model::{self, ChatMessage, GenerateOptions, Loaded, Tokenizer};
use crate::{Error, Result};

/// The upstream instruction before the problem text.
const PROMPT_HEAD: &str = "Solve this math problem step by step. You MUST put your final answer in \\boxed{}. Problem: ";
/// What follows the problem text up to the thinking tag.
const PROMPT_TAIL: &str = " Solution: ";
/// The thinking tag that opens the solution (upstream: `\n<think>\n`).
const THINK_OPEN: &str = "<think>\n";

/// Upstream's prompt for `problem`, verbatim.
pub fn upstream_prompt(problem: &str) -> String {
    format!("{PROMPT_HEAD}{problem}{PROMPT_TAIL}\n{THINK_OPEN}")
}

/// How the upstream prompt is fed to the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromptStyle {
    /// The upstream string as is (a system prompt, if any, goes first followed by a blank line).
    Raw,
    /// The model's chat template: `[system], user("…Problem: P Solution: ")`, generation prompt,
    /// then `<think>\n` pre-filled in the assistant turn.
    Chat,
    /// `Chat` when the tokenizer has a chat template, else `Raw`.
    Auto,
}

impl PromptStyle {
    pub fn name(self) -> &'static str {
        match self {
            PromptStyle::Raw => "raw",
            PromptStyle::Chat => "chat",
            PromptStyle::Auto => "auto",
        }
    }
}

impl std::str::FromStr for PromptStyle {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "raw" => Ok(PromptStyle::Raw),
            "chat" => Ok(PromptStyle::Chat),
            "auto" => Ok(PromptStyle::Auto),
            other => Err(Error::invalid(format!("prompt style `{other}`: expected raw, chat or auto"))),
        }
    }
}

/// Whether the chunk list keeps the text after the last sentence boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinalChunk {
    /// Published-dataset shape: HEAD chunks + the remainder (unmerged) as the last chunk.
    Keep,
    /// HEAD's `split_solution_into_chunks` as is (the remainder is lost).
    Drop,
}

impl FinalChunk {
    pub fn name(self) -> &'static str {
        match self {
            FinalChunk::Keep => "keep_final",
            FinalChunk::Drop => "drop_final",
        }
    }
}

/// Which `\boxed{}` is the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoxedPick {
    /// Upstream (`extract_boxed_answers(text)[0]`).
    First,
    /// The last one (what the model ended on).
    Last,
}

impl BoxedPick {
    pub fn name(self) -> &'static str {
        match self {
            BoxedPick::First => "first",
            BoxedPick::Last => "last",
        }
    }
}

/// One problem of a problems file.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// Directory name: the entry's `name`, else `problem_idx`/`id` (a number `n` gives
    /// `problem_<n>`), else `problem_<position in file>`.
    pub name: String,
    pub problem: String,
    /// Ground-truth answer (`gt_answer`; a number is written as text).
    pub gt_answer: Option<String>,
    /// The whole entry, written as `problem.json`.
    pub raw: Value,
}

/// Read a problems file: a JSON array of objects (as upstream's `selected_problems.json`) or
/// one object. Each needs a string `problem`.
pub fn read_problems(path: &Path) -> Result<Vec<Problem>> {
    let value: Value = super::write::read_json(path)?;
    let entries = match value {
        Value::Array(items) => items,
        object @ Value::Object(_) => vec![object],
        _ => return Err(Error::format(path, "expected a JSON array of problem objects or one object")),
    };
    if entries.is_empty() {
        return Err(Error::format(path, "no problems in the file"));
    }
    let mut problems: Vec<Problem> = Vec::with_capacity(entries.len());
    for (i, raw) in entries.into_iter().enumerate() {
        let problem = problem_from_value(raw, i).map_err(|what| Error::format(path, what))?;
        if problems.iter().any(|p| p.name == problem.name) {
            return Err(Error::format(path, format!("entry {i}: duplicate problem name `{}`", problem.name)));
        }
        problems.push(problem);
    }
    Ok(problems)
}

/// One problems-file entry; `Err` says which entry and field is wrong.
pub fn problem_from_value(raw: Value, position: usize) -> std::result::Result<Problem, String> {
    let object = raw.as_object().ok_or_else(|| format!("entry {position}: expected an object"))?;
    let problem = match object.get("problem") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        Some(_) => return Err(format!("entry {position}: field `problem` must be a non-empty string")),
        None => return Err(format!("entry {position}: missing field `problem`")),
    };
    let gt_answer = match object.get("gt_answer") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(_) => return Err(format!("entry {position}: field `gt_answer` must be a string or a number")),
    };
    let named = ["name", "problem_idx", "id"].iter().find_map(|key| match object.get(*key) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Value::Number(n)) => Some(format!("problem_{n}")),
        _ => None,
    });
    let name = named.unwrap_or_else(|| format!("problem_{position}"));
    if name == "." || name == ".." || !name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
        return Err(format!(
            "entry {position}: problem name `{name}` must use only ASCII letters, digits, `.`, `_` and `-` (it names a directory)"
        ));
    }
    Ok(Problem { name, problem, gt_answer, raw })
}

/// The exact prompt string for `problem` (see [`PromptStyle`]).
pub fn build_prompt(tokenizer: &Tokenizer, problem: &str, system: Option<&str>, style: PromptStyle) -> Result<String> {
    let style = resolve_style(tokenizer, style);
    let prompt = match style {
        PromptStyle::Chat => {
            let mut messages = Vec::new();
            messages.extend(system.map(ChatMessage::system));
            messages.push(ChatMessage::user(format!("{PROMPT_HEAD}{problem}{PROMPT_TAIL}")));
            let mut text = crate::chat::apply_chat_template(tokenizer, &messages, true)?;
            text.push_str(THINK_OPEN);
            text
        }
        _ => match system {
            Some(system) => format!("{system}\n\n{}", upstream_prompt(problem)),
            None => upstream_prompt(problem),
        },
    };
    // The splitter takes what follows the FIRST `<think>`; one earlier would swallow the prompt.
    if prompt.matches("<think>").count() != 1 {
        return Err(Error::invalid(
            "the problem text, system prompt or chat template contains `<think>`: the solution could not be located",
        ));
    }
    Ok(prompt)
}

fn resolve_style(tokenizer: &Tokenizer, style: PromptStyle) -> PromptStyle {
    match style {
        PromptStyle::Auto if tokenizer.chat_template().is_some() => PromptStyle::Chat,
        PromptStyle::Auto => PromptStyle::Raw,
        other => other,
    }
}

/// `generate_rollouts.py`'s `solution_text`: between the first `<think>` and the next one, cut at
/// the first `</think>`, stripped; the whole text when there is no `<think>`.
pub fn solution_text(source_text: &str) -> String {
    match source_text.split("<think>").nth(1) {
        Some(after) => {
            let after = py_strip(after);
            py_strip(after.split("</think>").next().unwrap_or(after)).to_string()
        }
        None => source_text.to_string(),
    }
}

/// Chunks of `solution_text` by upstream's splitter, with or without the final remainder.
pub fn chunk_solution(solution_text: &str, final_chunk: FinalChunk) -> Vec<String> {
    let mut chunks = split_solution_into_chunks(solution_text);
    if final_chunk == FinalChunk::Keep {
        let remainder = remainder_after_last_boundary(solution_text);
        if !remainder.is_empty() {
            chunks.push(remainder.to_string());
        }
    }
    chunks
}

/// The stripped text after the splitter's last boundary (its step 3): what HEAD throws away.
/// Splitting after `<think>`/`</think>` extraction as the splitter does first.
fn remainder_after_last_boundary(text: &str) -> &str {
    let text = if text.contains("<think>") { text.split("<think>").nth(1).map(py_strip).unwrap_or("") } else { text };
    let text = match text.find("</think>") {
        Some(end) => py_strip(&text[..end]),
        None => text,
    };
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut after_last_boundary = 0;
    for (i, &(byte, c)) in chars.iter().enumerate() {
        let rest = &text[byte..];
        let paragraph_end = rest.starts_with("\n\n") || rest.starts_with("\r\n\r\n");
        let sentence_end = i + 1 < chars.len() && matches!(c, '.' | '?' | '!') && matches!(chars[i + 1].1, ' ' | '\n');
        if paragraph_end || sentence_end {
            after_last_boundary = byte + c.len_utf8();
        }
    }
    py_strip(&text[after_last_boundary..])
}

/// The answer of `solution` under `pick` ("" when there is no `\boxed{}`).
pub fn pick_answer(solution: &str, pick: BoxedPick) -> String {
    let answers = extract_boxed_answers(solution);
    let chosen = match pick {
        BoxedPick::First => answers.first(),
        BoxedPick::Last => answers.last(),
    };
    chosen.cloned().unwrap_or_default()
}

/// Settings of [`generate_rollouts`].
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateConfig {
    /// Rollouts per problem.
    pub samples: usize,
    pub temperature: f64,
    pub top_p: f64,
    /// Sample among the `k` most likely tokens only (`None`: all).
    pub top_k: Option<usize>,
    /// Repetition penalty over the last 64 tokens (1.0: off).
    pub repeat_penalty: f32,
    /// No stop token before this many new tokens (longer traces from a small model).
    pub min_new_tokens: usize,
    /// Sample `k` uses seed `seed + k`.
    pub seed: u64,
    pub max_new_tokens: usize,
    /// Rollout directory name prefix (`<prefix><k>`).
    pub prefix: String,
    pub prompt_style: PromptStyle,
    pub system_prompt: Option<String>,
    pub final_chunk: FinalChunk,
    pub boxed: BoxedPick,
}

impl Default for GenerateConfig {
    fn default() -> Self {
        Self {
            samples: 10,
            temperature: 0.8,
            top_p: 0.95,
            top_k: None,
            repeat_penalty: 1.0,
            min_new_tokens: 0,
            seed: 0,
            max_new_tokens: 350,
            prefix: "rollout_".into(),
            prompt_style: PromptStyle::Auto,
            system_prompt: None,
            final_chunk: FinalChunk::Keep,
            boxed: BoxedPick::Last,
        }
    }
}

/// What [`generate_rollouts`] made of one sample.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratedRollout {
    pub dir: PathBuf,
    pub problem: String,
    pub sample: usize,
    pub chunks: usize,
    /// Chunks carrying the [`super::tagger::VA_TAG`] tag.
    pub va_chunks: usize,
    pub new_tokens: usize,
    pub stopped: bool,
    pub answer: String,
    pub is_correct: bool,
}

/// Build every file of a rollout from the prompt and generated text (no model involved):
/// answer and correctness, `chunks.json`, labels. `generation.json` is left to the caller.
pub fn assemble_rollout(
    problem: &Problem,
    prompt: String,
    solution: String,
    config: &GenerateConfig,
    labeller: &dyn Labeller,
) -> RolloutFiles {
    let answer = pick_answer(&solution, config.boxed);
    // As `generate_rollouts.py`: correctness only when there is an answer and a gold one.
    let is_correct = !answer.is_empty() && problem.gt_answer.as_deref().is_some_and(|gt| !gt.is_empty() && check_answer(&answer, gt));
    let full_cot = format!("{prompt}{solution}");
    let solution_text = solution_text(&full_cot);
    let chunks = chunk_solution(&solution_text, config.final_chunk);
    let labeled = labeller.label(&problem.problem, &chunks);
    RolloutFiles {
        problem: problem.raw.clone(),
        base_solution: BaseSolution { prompt, solution, full_cot: full_cot.clone(), answer, is_correct },
        chunks: ChunksFile { source_text: full_cot, solution_text, chunks },
        labeled,
        generation: None,
    }
}

/// Stop ids: the tokenizer's EOS plus the usual end-of-turn tokens present in its vocabulary.
pub(crate) fn stop_tokens(tokenizer: &Tokenizer) -> Vec<u32> {
    let mut stop = tokenizer.eos().to_vec();
    for token in ["<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<｜end▁of▁sentence｜>"] {
        if let Some(id) = tokenizer.token_to_id(token) {
            if !stop.contains(&id) {
                stop.push(id);
            }
        }
    }
    stop
}

/// Generate `config.samples` rollouts of every problem and write them under
/// `<root>/<problem.name>/<prefix><k>/`. `model_spec` is recorded in `generation.json`;
/// `on_rollout` is called after each rollout is written (progress reporting).
pub fn generate_rollouts(
    loaded: &Loaded,
    model_spec: &str,
    problems: &[Problem],
    config: &GenerateConfig,
    labeller: &dyn Labeller,
    root: &Path,
    on_rollout: &mut dyn FnMut(&GeneratedRollout),
) -> Result<Vec<GeneratedRollout>> {
    if config.samples == 0 {
        return Err(Error::invalid("--samples must be at least 1"));
    }
    if config.prefix.is_empty() || config.prefix.contains(['/', '\\']) {
        return Err(Error::invalid(format!("rollout prefix `{}` must be non-empty and contain no path separator", config.prefix)));
    }
    // One run per folder at a time; `INCOMPLETE` there until every rollout is written.
    let lock = crate::io::begin_run(root, "generate", None)?;
    let tokenizer = &loaded.tokenizer;
    let stop = stop_tokens(tokenizer);
    let style = resolve_style(tokenizer, config.prompt_style);
    let mut made = Vec::new();
    for problem in problems {
        let prompt = build_prompt(tokenizer, &problem.problem, config.system_prompt.as_deref(), style)
            .map_err(|e| Error::invalid(format!("problem `{}`: {e}", problem.name)))?;
        let prompt_ids = prompt_ids(tokenizer, &prompt)?;
        for sample in 0..config.samples {
            let seed = config.seed.wrapping_add(sample as u64);
            let options = GenerateOptions {
                max_new_tokens: config.max_new_tokens,
                temperature: config.temperature,
                top_p: config.top_p,
                top_k: config.top_k,
                repeat_penalty: config.repeat_penalty,
                min_new_tokens: config.min_new_tokens,
                seed,
                stop: stop.clone(),
                ..GenerateOptions::default()
            };
            let generation = model::generate(&loaded.model, &prompt_ids, &options)?;
            let text_ids = if generation.stopped { &generation.ids[..generation.ids.len() - 1] } else { &generation.ids[..] };
            let solution = tokenizer.decode(text_ids, false)?;
            let mut files = assemble_rollout(problem, prompt.clone(), solution, config, labeller);
            files.generation = Some(GenerationRecord {
                model: model_spec.to_string(),
                model_name: loaded.name.clone(),
                model_source: loaded.source.clone(),
                weights_hash: loaded.weights_hash.clone(),
                tokenizer: tokenizer.identity().to_string(),
                prompt_style: style.name().to_string(),
                system_prompt: config.system_prompt.clone(),
                temperature: config.temperature,
                top_p: config.top_p,
                top_k: config.top_k,
                repeat_penalty: config.repeat_penalty,
                min_new_tokens: config.min_new_tokens,
                seed,
                sample,
                max_new_tokens: config.max_new_tokens,
                prompt_tokens: prompt_ids.len(),
                new_tokens: generation.ids.len(),
                stopped: generation.stopped,
                final_chunk: config.final_chunk.name().to_string(),
                boxed_answer: config.boxed.name().to_string(),
                labeller: labeller.describe(),
                thoughtscope_version: env!("CARGO_PKG_VERSION").to_string(),
            });
            let dir = root.join(&problem.name).join(rollout_dir_name(&config.prefix, sample, config.samples));
            // Each rollout folder as a whole: never one sample's chunks beside another's solution.
            crate::io::write_folder_atomically(&dir, |staging| files.write(staging))?;
            let report = GeneratedRollout {
                dir,
                problem: problem.name.clone(),
                sample,
                chunks: files.chunks.chunks.len(),
                va_chunks: files.labeled.iter().filter(|c| c.function_tags.iter().any(|t| t == super::tagger::VA_TAG)).count(),
                new_tokens: generation.ids.len(),
                stopped: generation.stopped,
                answer: files.base_solution.answer.clone(),
                is_correct: files.base_solution.is_correct,
            };
            on_rollout(&report);
            made.push(report);
        }
    }
    lock.finish()?;
    Ok(made)
}

/// Token ids of a prompt string: no second BOS when the rendered template already starts with it.
pub(crate) fn prompt_ids(tokenizer: &Tokenizer, prompt: &str) -> Result<Vec<u32>> {
    let starts_with_bos = match tokenizer.bos() {
        Some(bos) => {
            let bos_text = tokenizer.decode(&[bos], false)?;
            !bos_text.is_empty() && prompt.starts_with(&bos_text)
        }
        None => false,
    };
    Ok(if starts_with_bos { tokenizer.encode_raw(prompt)? } else { tokenizer.encode(prompt)? })
}
