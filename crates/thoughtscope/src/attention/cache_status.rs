//! What a cache root holds (`thoughtscope cache status`): per model, the complete entries and
//! their size (and which of them also store the trace explorer's token pairs), the entries that would not be served (a checksum fails, a file is missing, the
//! manifest is unreadable or from before checksums), thought-anchors (Python) entries, and the
//! temporaries of writes in progress or killed. With the text ids of a set of problems, which of
//! them have no usable entry yet: what a batch job still has to compute before its merge.
//!
//! Every data file is read and verified, as a lookup would: the report never calls complete an
//! entry that a later run would recompute.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::cache::{is_temporary_name, read_entry_dir, read_manifest, MANIFEST_FILE};
use crate::{Error, Result};

/// One model directory under the root.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ModelStatus {
    /// The directory name (the model's cache name).
    pub model: String,
    /// Verified entries made by thoughtscope, by text id: (sentences N, sentence mode).
    pub complete: BTreeMap<String, (usize, String)>,
    /// Of the complete entries, those that also store token pairs (the trace explorer's token
    /// view), by text id: (heads stored, tokens kept per sentence on each side).
    pub token_pairs: BTreeMap<String, (usize, usize)>,
    /// thought-anchors (Python) entries: readable, provenance unverified.
    pub upstream: Vec<String>,
    /// Entries that would not be served, with the reason (recomputed by the next run).
    pub broken: Vec<(String, String)>,
    /// Hidden temporaries (`.<text_id>.tmp-*`, `.old-*`) with their age in seconds: a write in
    /// progress, or one killed (removed once 15 minutes old by the next store).
    pub temporary: Vec<(String, u64)>,
    /// Bytes of every file below the model directory.
    pub bytes: u64,
}

/// Every model directory of a cache root.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CacheStatus {
    pub root: PathBuf,
    pub models: Vec<ModelStatus>,
}

impl CacheStatus {
    /// The status of the model directory named `model` (a cache name), if there is one.
    pub fn model(&self, model: &str) -> Option<&ModelStatus> {
        self.models.iter().find(|m| m.model == model)
    }

    /// Of `items` (label, text id), those with no complete or upstream entry for `model`.
    pub fn missing<'a>(&self, model: &str, items: &'a [(String, String)]) -> Vec<&'a (String, String)> {
        let status = self.model(model);
        items
            .iter()
            .filter(|(_, text_id)| {
                !status.is_some_and(|s| s.complete.contains_key(text_id) || s.upstream.iter().any(|u| u == text_id))
            })
            .collect()
    }

    /// The report's lines (no trailing newline).
    pub fn lines(&self) -> Vec<String> {
        let entries: usize = self.models.iter().map(|m| m.complete.len() + m.upstream.len()).sum();
        let bytes: u64 = self.models.iter().map(|m| m.bytes).sum();
        let mut lines = vec![format!(
            "cache {}: {} model{}, {entries} entries, {}",
            self.root.display(),
            self.models.len(),
            if self.models.len() == 1 { "" } else { "s" },
            human_bytes(bytes)
        )];
        for m in &self.models {
            lines.push(format!(
                "  {}: {} complete ({} with token pairs{}), {} thought-anchors (unverified), {} broken, {} temporary, {}",
                m.model,
                m.complete.len(),
                m.token_pairs.len(),
                token_pair_shapes(&m.token_pairs),
                m.upstream.len(),
                m.broken.len(),
                m.temporary.len(),
                human_bytes(m.bytes)
            ));
            lines.extend(m.broken.iter().map(|(id, why)| format!("    broken {id}: {why}")));
            lines.extend(m.temporary.iter().map(|(name, age)| format!("    temporary {name} ({age} s old)")));
        }
        lines
    }
}

/// `: 4 heads × 16 tokens` when every entry with token pairs stores the same shape, `: 3 shapes`
/// when they differ, nothing when there are none.
fn token_pair_shapes(pairs: &BTreeMap<String, (usize, usize)>) -> String {
    let shapes: std::collections::BTreeSet<&(usize, usize)> = pairs.values().collect();
    match shapes.len() {
        0 => String::new(),
        1 => {
            let (heads, tokens) = shapes.into_iter().next().expect("one shape");
            format!(": {heads} heads × {tokens} tokens")
        }
        n => format!(": {n} shapes"),
    }
}

/// `1.2 MiB`-style size.
fn human_bytes(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < units.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", units[unit])
    }
}

fn tree_bytes(path: &Path) -> u64 {
    let Ok(metadata) = std::fs::symlink_metadata(path) else { return 0 };
    if !metadata.is_dir() {
        return metadata.len();
    }
    std::fs::read_dir(path).map_or(0, |entries| entries.filter_map(|e| e.ok()).map(|e| tree_bytes(&e.path())).sum())
}

/// The status of every model directory under `root` (sorted by name). A missing root is an
/// error naming it.
pub fn cache_status(root: impl AsRef<Path>) -> Result<CacheStatus> {
    let root = root.as_ref();
    let mut status = CacheStatus { root: root.to_path_buf(), models: vec![] };
    let mut model_dirs: Vec<PathBuf> = std::fs::read_dir(root)
        .map_err(|e| Error::io(root, e))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir() && !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.path())
        .collect();
    model_dirs.sort();
    for dir in model_dirs {
        status.models.push(model_status(&dir)?);
    }
    Ok(status)
}

fn model_status(dir: &Path) -> Result<ModelStatus> {
    let mut status = ModelStatus {
        model: dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        bytes: tree_bytes(dir),
        ..ModelStatus::default()
    };
    let mut entries: Vec<_> = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?.filter_map(|e| e.ok()).collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if is_temporary_name(&name) {
            let age = entry.metadata().ok().and_then(|m| m.modified().ok()).and_then(|m| m.elapsed().ok());
            status.temporary.push((name, age.map_or(0, |a| a.as_secs())));
            continue;
        }
        if name.starts_with('.') || !path.is_dir() {
            continue;
        }
        let has_manifest = path.join(MANIFEST_FILE).exists();
        match read_entry_dir(&path) {
            Ok(_) if has_manifest => match read_manifest(&path.join(MANIFEST_FILE)) {
                Ok(manifest) => {
                    if let Some(pairs) = &manifest.token_pairs {
                        status.token_pairs.insert(name.clone(), (pairs.heads.len(), pairs.max_tokens));
                    }
                    status.complete.insert(name, (manifest.key.n, manifest.key.sentence_mode.to_string()));
                }
                Err(e) => status.broken.push((name, e.to_string())),
            },
            Ok(_) => status.upstream.push(name),
            Err(e) => status.broken.push((name, e.to_string())),
        }
    }
    Ok(status)
}
