//! Reading one rollout/problem directory in the thought-anchors layout, and finding
//! rollout directories under a root.
//!
//! Files: `base_solution.json` (required: `full_cot`), `problem.json`, `chunks.json`,
//! `chunks_labeled.json` (optional). Upstream forms accepted: chunk labels in `function_tags` or,
//! when labelling failed, in the error form `categories` (+ `explanation`); a failed generation
//! (`base_solution.json` with an `error` key) is reported as an error naming the file; resampled
//! solutions that are API-error stubs (`error` key, or no `answer`) are filtered out, as upstream
//! does (`valid = [s for s in solutions if 'answer' in s and 'error' not in s]`).

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::attention::{SentenceMode, Sentences};
use crate::{Error, Result};

/// One chunk's labels from `chunks_labeled.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkLabel {
    pub chunk: String,
    pub chunk_idx: usize,
    /// `function_tags`, or `categories` in the labelling-error form.
    pub tags: Vec<String>,
    /// True for upstream's labelling-error record (`categories` instead of `function_tags`).
    pub labelling_error: bool,
}

/// A rollout directory read into memory.
#[derive(Debug, Clone)]
pub struct Rollout {
    pub dir: PathBuf,
    /// `base_solution.full_cot`: the string fed to the model.
    pub full_cot: String,
    pub prompt: Option<String>,
    pub answer: Option<String>,
    pub is_correct: Option<bool>,
    /// `problem.json` as is, when present.
    pub problem: Option<Value>,
    /// `chunks.json` `chunks`, when present.
    pub chunks: Option<Vec<String>>,
    /// `chunks_labeled.json`, when present.
    pub labels: Option<Vec<ChunkLabel>>,
}

fn read_json(path: &Path) -> Result<Value> {
    let text = crate::io::read_text_bounded(path, crate::io::INPUT_LIMIT)?;
    serde_json::from_str(&text).map_err(|e| Error::format(path, format!("invalid JSON: {e}")))
}

fn read_optional_json(path: &Path) -> Result<Option<Value>> {
    if path.exists() {
        read_json(path).map(Some)
    } else {
        Ok(None)
    }
}

fn optional_string(object: &Value, path: &Path, field: &str) -> Result<Option<String>> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(Error::format(path, format!("field `{field}` should be a string, found {}", kind(other)))),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn string_list(value: &Value, path: &Path, what: &str) -> Result<Vec<String>> {
    match value {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                item.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| Error::format(path, format!("{what}[{i}] should be a string, found {}", kind(item))))
            })
            .collect(),
        other => Err(Error::format(path, format!("{what} should be a list of strings, found {}", kind(other)))),
    }
}

impl Rollout {
    /// Read `dir`. Only `base_solution.json` is required.
    pub fn open(dir: impl AsRef<Path>) -> Result<Rollout> {
        let dir = dir.as_ref().to_path_buf();
        let base_path = dir.join("base_solution.json");
        let base = read_json(&base_path)?;
        if !base.is_object() {
            return Err(Error::format(&base_path, format!("expected an object, found {}", kind(&base))));
        }
        if let Some(error) = base.get("error") {
            return Err(Error::format(&base_path, format!("failed generation (upstream error stub): {error}")));
        }
        let full_cot = optional_string(&base, &base_path, "full_cot")?
            .ok_or_else(|| Error::format(&base_path, "missing field `full_cot`"))?;
        let is_correct = match base.get("is_correct") {
            None | Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(other) => {
                return Err(Error::format(&base_path, format!("field `is_correct` should be a boolean, found {}", kind(other))))
            }
        };
        let answer = match base.get("answer") {
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => optional_string(&base, &base_path, "answer")?,
        };

        let chunks = read_chunks_file(&dir.join("chunks.json"))?;
        let labels = read_labels_file(&dir.join("chunks_labeled.json"))?;

        Ok(Rollout {
            prompt: optional_string(&base, &base_path, "prompt")?,
            problem: read_optional_json(&dir.join("problem.json"))?,
            dir,
            full_cot,
            answer,
            is_correct,
            chunks,
            labels,
        })
    }

    /// The directory's name (the rollout id).
    pub fn name(&self) -> String {
        self.dir.file_name().map_or_else(|| self.dir.display().to_string(), |n| n.to_string_lossy().into_owned())
    }

    /// The chunk texts: `chunks.json` when present, otherwise the `chunk` fields of
    /// `chunks_labeled.json` (the same strings in the published data).
    pub fn chunk_texts(&self) -> Result<Vec<String>> {
        if let Some(chunks) = &self.chunks {
            return Ok(chunks.clone());
        }
        if let Some(labels) = &self.labels {
            return Ok(labels.iter().map(|l| l.chunk.clone()).collect());
        }
        Err(Error::format(&self.dir, "neither chunks.json nor chunks_labeled.json is present (needed for chunks mode)"))
    }

    /// The analysed sentences in `mode` (`full-cot`: from `base_solution.full_cot`; `chunks`:
    /// [`Rollout::chunk_texts`] joined by `"\n"`).
    pub fn sentences(&self, mode: SentenceMode) -> Result<Sentences> {
        match mode {
            SentenceMode::FullCot => Sentences::from_full_cot(&self.full_cot).map_err(|e| match e {
                Error::Invalid(what) => Error::format(self.dir.join("base_solution.json"), what),
                other => other,
            }),
            SentenceMode::Chunks => Ok(Sentences::from_chunks(&self.chunk_texts()?)),
        }
    }

    /// Chunk labels, or an error naming the missing file.
    pub fn labels(&self) -> Result<&[ChunkLabel]> {
        self.labels
            .as_deref()
            .ok_or_else(|| Error::format(self.dir.join("chunks_labeled.json"), "file missing (needed for tags)"))
    }

    /// Resampled solutions of `chunk_<k>/solutions.json` without upstream's API-error stubs.
    pub fn resampled_solutions(&self, chunk: usize) -> Result<Vec<Value>> {
        let path = self.dir.join(format!("chunk_{chunk}")).join("solutions.json");
        match read_json(&path)? {
            Value::Array(items) => Ok(items
                .into_iter()
                .filter(|s| s.get("answer").is_some() && s.get("error").is_none())
                .collect()),
            other => Err(Error::format(&path, format!("expected an array of solutions, found {}", kind(&other)))),
        }
    }
}

/// The `chunks` list of a `chunks.json` file; `Ok(None)` when the file does not exist.
pub fn read_chunks_file(path: &Path) -> Result<Option<Vec<String>>> {
    match read_optional_json(path)? {
        None => Ok(None),
        Some(value) => {
            let list = value.get("chunks").ok_or_else(|| Error::format(path, "missing field `chunks`"))?;
            // One string would silently become one chunk: the schema is a list.
            if !list.is_array() {
                return Err(Error::format(path, format!("field `chunks` should be a list of strings, found {}", kind(list))));
            }
            Ok(Some(string_list(list, path, "`chunks`")?))
        }
    }
}

/// The entries of a `chunks_labeled.json` file; `Ok(None)` when the file does not exist.
pub fn read_labels_file(path: &Path) -> Result<Option<Vec<ChunkLabel>>> {
    match read_optional_json(path)? {
        None => Ok(None),
        Some(value) => Ok(Some(parse_labels(&value, path)?)),
    }
}

fn parse_labels(value: &Value, path: &Path) -> Result<Vec<ChunkLabel>> {
    let items = value
        .as_array()
        .ok_or_else(|| Error::format(path, format!("expected an array of chunk labels, found {}", kind(value))))?;
    items
        .iter()
        .enumerate()
        .map(|(position, item)| {
            let at = |what: String| Error::format(path, format!("entry {position}: {what}"));
            if !item.is_object() {
                return Err(at(format!("expected an object, found {}", kind(item))));
            }
            let chunk = match item.get("chunk") {
                Some(Value::String(s)) => s.clone(),
                None | Some(Value::Null) => String::new(),
                Some(other) => return Err(at(format!("field `chunk` should be a string, found {}", kind(other)))),
            };
            let chunk_idx = match item.get("chunk_idx") {
                None | Some(Value::Null) => position,
                Some(v) => v
                    .as_u64()
                    .map(|i| i as usize)
                    .ok_or_else(|| at(format!("field `chunk_idx` should be a non-negative integer, found {v}")))?,
            };
            if chunk_idx != position {
                return Err(at(format!("`chunk_idx` is {chunk_idx}, expected its position {position}")));
            }
            let (tags, labelling_error) = match (item.get("function_tags"), item.get("categories")) {
                (Some(tags), _) => (string_list(tags, path, &format!("entry {position}: `function_tags`"))?, false),
                (None, Some(categories)) => (string_list(categories, path, &format!("entry {position}: `categories`"))?, true),
                (None, None) => (Vec::new(), false),
            };
            Ok(ChunkLabel { chunk, chunk_idx, tags, labelling_error })
        })
        .collect()
}

/// Rollout directories under `root` whose names start with `prefix`, sorted by name (the VA
/// notebook's discovery). Files and hidden entries are ignored.
pub fn discover_rollouts(root: impl AsRef<Path>, prefix: &str) -> Result<Vec<PathBuf>> {
    let root = root.as_ref();
    let entries = std::fs::read_dir(root).map_err(|e| Error::io(root, e))?;
    let mut dirs = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(root, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(prefix) && !name.starts_with('.') && entry.path().is_dir() {
            dirs.push(entry.path());
        }
    }
    dirs.sort();
    Ok(dirs)
}

/// Every directory under `root` (itself included, any depth) that holds a `base_solution.json`,
/// sorted by path: thought-anchors' `<model>/<correct|incorrect>_base_solution/problem_<id>/`
/// layout as well as a flat folder of rollouts. Hidden directories are not entered; symbolic
/// links to directories are followed, each directory visited once (a link cycle ends there).
pub fn find_problem_dirs(root: impl AsRef<Path>) -> Result<Vec<PathBuf>> {
    let root = root.as_ref();
    if !root.is_dir() {
        return Err(Error::format(root, "not a directory (expected a folder of problem or rollout directories)"));
    }
    let mut found = Vec::new();
    let mut visited = std::collections::HashSet::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let real = dir.canonicalize().map_err(|e| Error::io(&dir, e))?;
        if !visited.insert(real) {
            continue;
        }
        if dir.join("base_solution.json").is_file() {
            found.push(dir);
            continue;
        }
        for entry in std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
            let entry = entry.map_err(|e| Error::io(&dir, e))?;
            let hidden = entry.file_name().to_string_lossy().starts_with('.');
            if !hidden && entry.path().is_dir() {
                pending.push(entry.path());
            }
        }
    }
    found.sort();
    Ok(found)
}
