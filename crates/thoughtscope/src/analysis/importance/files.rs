//! Reading one problem's rollouts from upstream's layout, and `thoughtscope importance`: the
//! metrics written into a `chunks_labeled.json`-shaped file (as `analyze_problem` rewrites
//! `chunks_labeled.json`, but to a file of the caller's choosing).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use candle_core::Device;
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value};

use super::embedder::{cosine, default_embedder_dir, SentenceEmbedder};
use super::metrics::{chunk_importances, kept_chunks, kind, texts_to_embed, ChunkImportance, ImportanceOptions, ProblemSolutions, Solution};
use crate::model::Settings;
use crate::{Error, Result};

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::format(path, format!("invalid JSON: {e}")))
}

/// The entries of one `solutions.json`.
pub(crate) fn read_solutions(path: &Path) -> Result<Vec<Solution>> {
    let value = read_json(path)?;
    let items = value
        .as_array()
        .ok_or_else(|| Error::format(path, format!("expected an array of solutions, found {}", kind(&value))))?;
    items
        .iter()
        .enumerate()
        .map(|(n, item)| Solution::from_json(item).map_err(|what| Error::format(path, format!("entry {n}: {what}"))))
        .collect()
}

/// `chunk_<i>/solutions.json` under `dir` for each kept chunk whose file exists, and the kept
/// chunks whose folder exists.
fn read_chunk_solutions(dir: &Path, kept: &[usize]) -> Result<(BTreeMap<usize, Vec<Solution>>, BTreeSet<usize>)> {
    let (mut solutions, mut dirs) = (BTreeMap::new(), BTreeSet::new());
    for &i in kept {
        let chunk_dir = dir.join(format!("chunk_{i}"));
        if !chunk_dir.is_dir() {
            continue;
        }
        dirs.insert(i);
        let file = chunk_dir.join("solutions.json");
        if file.exists() {
            solutions.insert(i, read_solutions(&file)?);
        }
    }
    Ok((solutions, dirs))
}

/// The `chunks_labeled.json` entries of `problem_dir`, when the file exists: objects with an
/// integer `chunk_idx`.
pub(crate) fn read_labelled_entries(problem_dir: &Path) -> Result<Option<Vec<Map<String, Value>>>> {
    let path = problem_dir.join("chunks_labeled.json");
    if !path.exists() {
        return Ok(None);
    }
    let value = read_json(&path)?;
    let Value::Array(items) = value else {
        return Err(Error::format(&path, format!("expected an array of chunk labels, found {}", kind(&value))));
    };
    items
        .into_iter()
        .enumerate()
        .map(|(n, item)| match item {
            Value::Object(map) if map.get("chunk_idx").is_some_and(|v| v.as_u64().is_some()) => Ok(map),
            Value::Object(_) => Err(Error::format(&path, format!("entry {n}: field `chunk_idx` should be a non-negative integer"))),
            other => Err(Error::format(&path, format!("entry {n}: expected an object, found {}", kind(&other)))),
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

/// One problem's inputs: `chunks.json` (and `chunks_labeled.json`, when present) from
/// `problem_dir`, the rollouts from `rollouts_dir` (usually the same folder) and, when given and
/// present, the forced-answer rollouts from `forced_dir` (a missing folder reads as no forced
/// rollouts, as upstream's). Returns the labelled entries too.
pub fn load_problem(
    problem_dir: &Path,
    rollouts_dir: &Path,
    forced_dir: Option<&Path>,
) -> Result<(ProblemSolutions, Option<Vec<Map<String, Value>>>)> {
    let chunks_path = problem_dir.join("chunks.json");
    let chunks = crate::rollout::read_chunks_file(&chunks_path)?
        .ok_or_else(|| Error::format(&chunks_path, "missing (the chunks the rollouts resampled)"))?;
    let kept: Vec<usize> = kept_chunks(&chunks).into_iter().map(|(i, _)| i).collect();
    let (rollouts, chunk_dirs) = read_chunk_solutions(rollouts_dir, &kept)?;
    let forced = match forced_dir {
        Some(dir) if dir.is_dir() => Some(read_chunk_solutions(dir, &kept)?.0),
        _ => None,
    };
    let labels = read_labelled_entries(problem_dir)?;
    let labelled = labels.as_ref().map(|entries| entries.iter().map(|e| e["chunk_idx"].as_u64().unwrap() as usize).collect());
    Ok((ProblemSolutions { chunks, chunk_dirs, rollouts, forced, labelled }, labels))
}

/// Upstream's output key order for a chunk entry; other keys follow.
pub(crate) const KEY_ORDER: [&str; 14] = [
    "chunk",
    "chunk_idx",
    "function_tags",
    "depends_on",
    "accuracy",
    "resampling_importance_accuracy",
    "resampling_importance_kl",
    "counterfactual_importance_accuracy",
    "counterfactual_importance_kl",
    "forced_importance_accuracy",
    "forced_importance_kl",
    "different_trajectories_fraction",
    "overdeterminedness",
    "summary",
];

/// A JSON object that keeps its keys in the given order.
struct Ordered(Vec<(String, Value)>);

impl Serialize for Ordered {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

fn number(x: f64) -> Value {
    serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)
}

/// The output entries: each labelled entry (or `{chunk, chunk_idx}` without labels) with the
/// metric fields set, in upstream's key order.
fn output_entries(
    problem: &ProblemSolutions,
    labels: Option<Vec<Map<String, Value>>>,
    importances: &[ChunkImportance],
) -> Vec<Ordered> {
    let mut by_index: HashMap<usize, Map<String, Value>> = HashMap::new();
    if let Some(labels) = labels {
        for entry in labels {
            let idx = entry["chunk_idx"].as_u64().unwrap() as usize;
            // Upstream updates the first entry with each index; later duplicates are dropped here.
            by_index.entry(idx).or_insert(entry);
        }
    }
    importances
        .iter()
        .map(|m| {
            let mut entry = by_index.remove(&m.chunk_idx).unwrap_or_else(|| {
                let mut fresh = Map::new();
                fresh.insert("chunk".into(), Value::String(problem.chunks[m.chunk_idx].clone()));
                fresh.insert("chunk_idx".into(), Value::from(m.chunk_idx));
                fresh
            });
            entry.remove("absolute_importance_accuracy");
            entry.remove("absolute_importance_kl");
            match m.accuracy {
                Some(a) => entry.insert("accuracy".into(), number(a)),
                None => entry.remove("accuracy"),
            };
            for (key, value) in [
                ("resampling_importance_accuracy", m.resampling_importance_accuracy),
                ("resampling_importance_kl", m.resampling_importance_kl),
                ("counterfactual_importance_accuracy", m.counterfactual_importance_accuracy),
                ("counterfactual_importance_kl", m.counterfactual_importance_kl),
                ("different_trajectories_fraction", m.different_trajectories_fraction),
                ("overdeterminedness", m.overdeterminedness),
            ] {
                entry.insert(key.into(), number(value));
            }
            if let (Some(a), Some(k)) = (m.forced_importance_accuracy, m.forced_importance_kl) {
                entry.insert("forced_importance_accuracy".into(), number(a));
                entry.insert("forced_importance_kl".into(), number(k));
            }
            let mut ordered = Vec::with_capacity(entry.len());
            for key in KEY_ORDER {
                if let Some(v) = entry.remove(key) {
                    ordered.push((key.to_owned(), v));
                }
            }
            ordered.extend(entry);
            Ordered(ordered)
        })
        .collect()
}

/// Writes the metrics into a `chunks_labeled.json`-shaped file at `path` (atomically).
pub fn write_chunks_labeled(
    path: &Path,
    problem: &ProblemSolutions,
    labels: Option<Vec<Map<String, Value>>>,
    importances: &[ChunkImportance],
) -> Result<()> {
    crate::io::write_json(path, &output_entries(problem, labels, importances))
}

/// What `thoughtscope importance` does.
#[derive(Debug, Clone)]
pub struct ImportanceConfig {
    /// Holds `chunks.json` and, optionally, `chunks_labeled.json`.
    pub problem_dir: PathBuf,
    /// Holds `chunk_<i>/solutions.json`; default `problem_dir` (upstream's layout).
    pub rollouts_dir: Option<PathBuf>,
    /// The problem's forced-answer rollouts (`<forced root>/<problem>`); must exist when given.
    pub forced_dir: Option<PathBuf>,
    pub out: PathBuf,
    pub options: ImportanceOptions,
    /// all-MiniLM-L6-v2's folder; default [`default_embedder_dir`] of [`ImportanceConfig::settings`].
    pub embedder_dir: Option<PathBuf>,
    /// Sentences per embedder forward pass.
    pub batch_size: usize,
    /// Where the embedder's default folder is (`models_dir`).
    pub settings: Settings,
}

impl ImportanceConfig {
    pub fn new(problem_dir: impl Into<PathBuf>, out: impl Into<PathBuf>) -> ImportanceConfig {
        ImportanceConfig {
            problem_dir: problem_dir.into(),
            rollouts_dir: None,
            forced_dir: None,
            out: out.into(),
            options: ImportanceOptions::default(),
            embedder_dir: None,
            batch_size: 64,
            settings: Settings::default(),
        }
    }
}

/// What [`run_importance`] computed and wrote.
#[derive(Debug, Clone)]
pub struct ImportanceReport {
    pub chunks: Vec<ChunkImportance>,
    /// Kept chunks without `solutions.json` (no `accuracy` written for them).
    pub missing_chunks: Vec<usize>,
    /// Distinct texts embedded.
    pub embedded: usize,
    pub forced: bool,
    pub out: PathBuf,
}

impl ImportanceReport {
    /// One line for the command line.
    pub fn headline(&self) -> String {
        let top = self
            .chunks
            .iter()
            .max_by(|a, b| a.counterfactual_importance_accuracy.abs().total_cmp(&b.counterfactual_importance_accuracy.abs()));
        format!(
            "{} chunks ({} without rollouts), {} texts embedded, forced metrics {}; largest |counterfactual_importance_accuracy|: {}; wrote {}",
            self.chunks.len(),
            self.missing_chunks.len(),
            self.embedded,
            if self.forced { "computed" } else { "not computed (no --forced)" },
            top.map_or("-".to_owned(), |c| format!("chunk {} ({:+.3})", c.chunk_idx, c.counterfactual_importance_accuracy)),
            self.out.display()
        )
    }
}

/// Reads one problem, embeds the chunk pairs with all-MiniLM-L6-v2, computes upstream's metrics
/// and writes them into `config.out`.
pub fn run_importance(config: &ImportanceConfig) -> Result<ImportanceReport> {
    if let Some(forced) = &config.forced_dir {
        if !forced.is_dir() {
            return Err(Error::invalid(format!("--forced {}: no such folder (the problem's forced-answer rollouts, <forced root>/<problem>)", forced.display())));
        }
    }
    let rollouts_dir = config.rollouts_dir.as_deref().unwrap_or(&config.problem_dir);
    let (problem, labels) = load_problem(&config.problem_dir, rollouts_dir, config.forced_dir.as_deref())?;
    let kept: Vec<usize> = kept_chunks(&problem.chunks).into_iter().map(|(i, _)| i).collect();
    if (problem.chunk_dirs.len() as f64) < 0.1 * kept.len() as f64 {
        return Err(Error::invalid(format!(
            "{}: only {} of {} chunks have a chunk_<i> folder (upstream analyses a problem from 10%)",
            rollouts_dir.display(),
            problem.chunk_dirs.len(),
            kept.len()
        )));
    }
    let texts = texts_to_embed(&problem);
    let embeddings = if texts.is_empty() {
        HashMap::new()
    } else {
        let dir = config.embedder_dir.clone().unwrap_or_else(|| default_embedder_dir(&config.settings));
        let embedder = SentenceEmbedder::load(&dir, &Device::Cpu)?;
        let bar = crate::progress::progress(texts.len() as u64, "embedding chunks");
        let mut embeddings = HashMap::with_capacity(texts.len());
        for group in texts.chunks(config.batch_size.max(1) * 8) {
            embeddings.extend(embedder.embed_unique(group, config.batch_size)?);
            bar.inc(group.len() as u64);
        }
        bar.finish();
        embeddings
    };
    let similarity = |a: &str, b: &str| Some(cosine(embeddings.get(a)?, embeddings.get(b)?));
    let chunks = chunk_importances(&problem, &similarity, &config.options);
    write_chunks_labeled(&config.out, &problem, labels, &chunks)?;
    let missing_chunks = kept.iter().copied().filter(|i| !problem.rollouts.contains_key(i)).collect();
    Ok(ImportanceReport { chunks, missing_chunks, embedded: texts.len(), forced: problem.forced.is_some(), out: config.out.clone() })
}
