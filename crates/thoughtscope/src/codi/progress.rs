//! Shared plumbing of the CODI steps: the settings sidecar that makes resumed runs safe (a rerun
//! with other settings or other weights is refused, naming the field) and reading JSON that Python
//! wrote (bare `NaN`). Progress goes through the crate's one reporter ([`crate::progress`]).

use std::path::{Path, PathBuf};

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use super::model::CodiModel;
use super::stats::relaxed_json;
use crate::{Error, Result};

/// Version of the output layout; bump when a record's meaning changes.
pub const FORMAT_VERSION: u32 = 1;

/// What determined an output file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunMeta {
    pub step: String,
    pub model: String,
    pub weights_hash: String,
    pub real_codi: bool,
    pub format_version: u32,
    pub settings: serde_json::Value,
    /// "NOT A CODI MODEL …" for synthetic checkpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl RunMeta {
    pub fn new(codi: &CodiModel, step: &str, settings: serde_json::Value) -> Self {
        RunMeta {
            step: step.to_owned(),
            model: codi.name.clone(),
            weights_hash: codi.weights_hash.clone(),
            real_codi: codi.meta.real_codi,
            format_version: FORMAT_VERSION,
            settings,
            note: codi.provenance_note(),
        }
    }

    /// Before (re)starting a step writing `output`: if `output` exists, its sidecar must hold the
    /// same settings (else a [`Error::CacheMismatch`] naming the field); otherwise write the sidecar.
    pub fn check_or_write(&self, meta_path: &Path, output: &Path) -> Result<()> {
        if output.exists() {
            if !meta_path.is_file() {
                return Err(Error::format(
                    output,
                    format!(
                        "exists but has no settings file {}; remove it or choose another output to start afresh",
                        meta_path.display()
                    ),
                ));
            }
            let cached: RunMeta = read_json_relaxed(meta_path)?;
            let have = serde_json::to_value(&cached)?;
            let want = serde_json::to_value(self)?;
            if let Some((field, c, r)) = first_difference("", &have, &want) {
                return Err(Error::CacheMismatch { path: output.to_path_buf(), field, cached: c, requested: r });
            }
            return Ok(());
        }
        super::dataset::write_json_atomic(meta_path, self)
    }
}

/// Where a sharded run (a Slurm array task) of a step writes its share: `x.json` →
/// `x.shard-1-of-4.json` beside it, with its own settings sidecar. Tasks never write one file.
pub fn shard_part_path(out: &Path, shard: crate::io::shard::Shard) -> PathBuf {
    let stem = out.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    out.with_file_name(format!("{stem}.shard-{}-of-{}.json", shard.index, shard.count))
}

/// The records of every shard part beside `out` (see [`shard_part_path`]), parts in name order,
/// for the merge: the unsharded run takes them as done. A part made with other settings than
/// `meta` is an error naming the field, as a resumed output is.
pub fn read_shard_parts<R>(out: &Path, meta: &RunMeta, read: impl Fn(&Path) -> Result<Vec<R>>) -> Result<Vec<R>> {
    let stem = out.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let prefix = format!("{stem}.shard-");
    let dir = out.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(Vec::new()) };
    let mut parts: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            name.starts_with(&prefix) && name.ends_with(".json") && !name.ends_with(".meta.json")
        })
        .collect();
    parts.sort();
    let mut records = Vec::new();
    for part in parts {
        meta.check_or_write(&super::ablate::meta_path(&part), &part)?;
        records.extend(read(&part)?);
    }
    Ok(records)
}

/// Take the results file `out` of `step` for this run ([`crate::io::begin_run`] on its folder,
/// the file's name as the part): a second run writing the same file (another process, or the same
/// shard) fails at once naming this one, and `INCOMPLETE.<file>` beside it says the file is
/// partial until [`crate::io::RunLock::finish`].
pub fn lock_results(out: &Path, step: &str) -> Result<crate::io::RunLock> {
    let dir = out.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| Error::invalid(format!("{}: not a file path", out.display())))?;
    crate::io::begin_run(dir, &format!("codi {step}"), Some(&name))
}

/// The first differing leaf of two JSON values, as (dotted path, left, right); `note` is ignored.
fn first_difference(prefix: &str, a: &serde_json::Value, b: &serde_json::Value) -> Option<(String, String, String)> {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for key in keys {
                if prefix.is_empty() && key == "note" {
                    continue;
                }
                let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
                let null = Value::Null;
                if let Some(d) = first_difference(&path, x.get(key).unwrap_or(&null), y.get(key).unwrap_or(&null)) {
                    return Some(d);
                }
            }
            None
        }
        _ if a == b => None,
        _ => Some((prefix.to_owned(), a.to_string(), b.to_string())),
    }
}

/// Read JSON written by Python (bare `NaN`/`Infinity` become `null`), naming the file on error.
pub fn read_json_relaxed<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = crate::io::read_text_bounded(path, crate::io::INPUT_LIMIT)?;
    serde_json::from_str(&relaxed_json(&text)).map_err(|e| Error::format(path, format!("unexpected content: {e}")))
}
