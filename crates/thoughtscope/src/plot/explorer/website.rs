//! The thought-anchors website's own files for one trace (thought-anchors.com keeps them under
//! `src/app/data/<model>/<correct|incorrect>_base_solution/problem_<n>/`; `chunk_<k>/solutions.json`
//! is the layout of thought-anchors `generate_rollouts.py`), read from a problem directory and
//! written back, every number at full precision, so that write-then-read gives the same numbers:
//! - `chunks_labeled.json`: one object per chunk (`chunk`, `chunk_idx`, `function_tags`, the
//!   resampling metrics of `analyze_rollouts.py`, ...), every field kept; made from the sentences
//!   (no tags) when the directory has none;
//! - `step_importance.json` and `step_importance_supp.json`: `[{source_chunk_idx,
//!   source_chunk_text, target_impacts: [{target_chunk_idx, importance_score}]}]`; the second is
//!   made from a `thoughtscope suppress` folder when the directory has none;
//! - `chunk_<k>/solutions.json`, every record as it is (API-error stubs too, as upstream keeps
//!   them), and the website's `chunks_resampled.json` (`{"<k>": [chunk_resampled, ...]}`), made
//!   from them when the directory has none;
//! - `problem.json`, `base_solution.json` and `chunks.json`, copied when present.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use super::build::{read_sentences, suppression_square};
pub(super) use super::website_read::{read_chunks_resampled, read_step_importance};
use super::ExplorerOptions;
use crate::attention::suppression::{step_importance_records, StepImportance};
use crate::io::read_json;
use crate::{Error, Result};

/// Files copied as they are.
const COPIED: &[&str] = &["problem.json", "base_solution.json", "chunks.json"];

/// One trace as the website's files (module doc).
#[derive(Debug, Clone, PartialEq)]
pub struct WebsiteTrace {
    /// `chunks_labeled.json`: one JSON object per chunk.
    pub chunks: Vec<Value>,
    pub step_importance: Option<Vec<StepImportance>>,
    pub step_importance_supp: Option<Vec<StepImportance>>,
    /// `chunk_<k>/solutions.json` by `k`: the array as it is.
    pub solutions: BTreeMap<usize, Vec<Value>>,
    /// `chunks_resampled.json`: the resampled chunk texts by `k`.
    pub chunks_resampled: BTreeMap<usize, Vec<String>>,
    /// `problem.json`, `base_solution.json`, `chunks.json` by file name, when present.
    pub copied: BTreeMap<String, Value>,
}

impl WebsiteTrace {
    /// Everything of the module doc that `dir` holds (sentences in `options.mode`; the
    /// suppression folder found as [`super::Explorer::from_problem_dir`] finds it).
    pub fn from_problem_dir(dir: impl AsRef<Path>, options: &ExplorerOptions) -> Result<WebsiteTrace> {
        let dir = dir.as_ref();
        let (sentences, _) = read_sentences(dir, options.mode)?;
        let n = sentences.len();
        let labels_path = dir.join("chunks_labeled.json");
        let chunks = if labels_path.is_file() {
            match read_json::<Value>(&labels_path)? {
                Value::Array(items) => {
                    if let Some(k) = items.iter().position(|item| !item.is_object()) {
                        return Err(Error::format(&labels_path, format!("entry {k} should be an object")));
                    }
                    items
                }
                _ => return Err(Error::format(&labels_path, "expected an array of chunk objects")),
            }
        } else {
            sentences
                .sentences
                .iter()
                .enumerate()
                .map(|(k, chunk)| serde_json::json!({"chunk": chunk, "chunk_idx": k, "function_tags": []}))
                .collect()
        };
        let step_importance = optional(&dir.join("step_importance.json"), read_step_importance)?;
        let supp_path = dir.join("step_importance_supp.json");
        let step_importance_supp = if supp_path.is_file() {
            Some(read_step_importance(&supp_path)?)
        } else {
            match super::build::suppression_folder(dir, options) {
                Some(folder) => {
                    let (values, _) = suppression_square(&folder, &sentences)?;
                    Some(step_importance_records(&values, &sentences.sentences))
                }
                None => None,
            }
        };
        let mut solutions = BTreeMap::new();
        for k in 0..n {
            let path = dir.join(format!("chunk_{k}")).join("solutions.json");
            if path.is_file() {
                match read_json::<Value>(&path)? {
                    Value::Array(items) => {
                        solutions.insert(k, items);
                    }
                    _ => return Err(Error::format(&path, "expected an array of solutions")),
                }
            }
        }
        let resampled_path = dir.join("chunks_resampled.json");
        let chunks_resampled = if resampled_path.is_file() { read_chunks_resampled(&resampled_path)? } else { resampled_from(&solutions) };
        let mut copied = BTreeMap::new();
        for name in COPIED {
            let path = dir.join(name);
            if path.is_file() {
                copied.insert(name.to_string(), read_json::<Value>(&path)?);
            }
        }
        Ok(WebsiteTrace { chunks, step_importance, step_importance_supp, solutions, chunks_resampled, copied })
    }

    /// Write every file into `out` (created when missing; each file atomically), in the
    /// website's layout. Returns the paths written.
    pub fn write(&self, out: impl AsRef<Path>) -> Result<Vec<std::path::PathBuf>> {
        let out = out.as_ref();
        std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
        let mut written = Vec::new();
        let mut put = |path: std::path::PathBuf, value: &dyn erased::Json| -> Result<()> {
            value.write(&path)?;
            written.push(path);
            Ok(())
        };
        for (name, value) in &self.copied {
            put(out.join(name), value)?;
        }
        put(out.join("chunks_labeled.json"), &self.chunks)?;
        if let Some(records) = &self.step_importance {
            put(out.join("step_importance.json"), records)?;
        }
        if let Some(records) = &self.step_importance_supp {
            put(out.join("step_importance_supp.json"), records)?;
        }
        for (k, items) in &self.solutions {
            let folder = out.join(format!("chunk_{k}"));
            std::fs::create_dir_all(&folder).map_err(|e| Error::io(&folder, e))?;
            put(folder.join("solutions.json"), items)?;
        }
        if !self.chunks_resampled.is_empty() {
            // Keys as the website writes them: strings, in string order.
            let by_key: BTreeMap<String, &Vec<String>> = self.chunks_resampled.iter().map(|(k, v)| (k.to_string(), v)).collect();
            put(out.join("chunks_resampled.json"), &by_key)?;
        }
        Ok(written)
    }
}

mod erased {
    //! `write_json` behind a trait object, so one closure writes every file type.
    pub trait Json {
        fn write(&self, path: &std::path::Path) -> crate::Result<()>;
    }
    impl<T: serde::Serialize> Json for T {
        fn write(&self, path: &std::path::Path) -> crate::Result<()> {
            crate::io::write_json(path, self)
        }
    }
}

fn optional<T>(path: &Path, read: impl Fn(&Path) -> Result<T>) -> Result<Option<T>> {
    if path.is_file() {
        read(path).map(Some)
    } else {
        Ok(None)
    }
}

/// The resampled chunk of every solution that has one, by chunk.
fn resampled_from(solutions: &BTreeMap<usize, Vec<Value>>) -> BTreeMap<usize, Vec<String>> {
    solutions
        .iter()
        .map(|(&k, items)| {
            (k, items.iter().filter_map(|s| s.get("chunk_resampled").and_then(Value::as_str).map(str::to_owned)).collect::<Vec<_>>())
        })
        .filter(|(_, texts)| !texts.is_empty())
        .collect()
}

