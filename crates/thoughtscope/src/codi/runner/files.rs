//! The files of a step's run: reading results JSON that Python may have written (bare `NaN`),
//! writing a results list atomically in the step's style, and the names of the files beside a
//! results file — its settings sidecar and the parts of a sharded run.

use std::path::{Path, PathBuf};

use serde::{de::DeserializeOwned, Serialize};

use crate::io::shard::Shard;
use crate::io::{write_atomic, write_json, INCOMPLETE_MARKER};
use crate::{Error, Result};

/// How a results file is written: indented like the seed's JSON, or compact (the attention and
/// decomposition records hold tens of thousands of numbers per problem; indented, one per line,
/// the 100-problem routing file would be ~60 MB and rewritten after every problem).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonStyle {
    Pretty,
    Compact,
}

/// Write `records` to `out` atomically in `style`.
pub(crate) fn write_records<R: Serialize>(out: &Path, records: &[R], style: JsonStyle) -> Result<()> {
    match style {
        JsonStyle::Pretty => write_json(out, records),
        JsonStyle::Compact => write_atomic(out, serde_json::to_string(records)?.as_bytes()),
    }
}

/// Read a results file of any step (ours or upstream's; Python `NaN` tolerated), naming the file
/// on error.
pub(crate) fn read_records<R: DeserializeOwned>(path: &Path) -> Result<Vec<R>> {
    read_json_relaxed(path)
}

/// Read JSON written by Python (bare `NaN`/`Infinity` become `null`), naming the file on error.
pub(crate) fn read_json_relaxed<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = crate::io::read_text_bounded(path, crate::io::INPUT_LIMIT)?;
    serde_json::from_str(&relaxed_json(&text)).map_err(|e| Error::format(path, format!("unexpected content: {e}")))
}

/// Replace Python's bare `NaN`, `Infinity` and `-Infinity` tokens (outside strings) by `null`, so
/// files written by upstream's `json.dump` parse.
pub fn relaxed_json(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_string = false;
    let mut escaped = false;
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            rest = &rest[c.len_utf8()..];
            continue;
        }
        if c == '"' {
            in_string = true;
        } else {
            let token = ["-Infinity", "Infinity", "NaN"].into_iter().find(|t| rest.starts_with(t));
            if let Some(token) = token {
                out.push_str("null");
                rest = &rest[token.len()..];
                continue;
            }
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

fn stem_of(out: &Path) -> String {
    out.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Path of the settings sidecar of an output file (`x.json` → `x.meta.json`).
pub fn meta_path(out: &Path) -> PathBuf {
    out.with_file_name(format!("{}.meta.json", stem_of(out)))
}

/// The marker a run keeps beside the results file `out` while it writes it (`x.json` →
/// `INCOMPLETE.x.json`; [`crate::io::begin_run`] with the file's name as the part, taken by
/// [`super::meta::lock_results`]): there, the file may lack problems.
pub fn incomplete_marker(out: &Path) -> PathBuf {
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    out.with_file_name(format!("{INCOMPLETE_MARKER}.{name}"))
}

/// Where a sharded run (a Slurm array task) of a step writes its share: `x.json` →
/// `x.shard-1-of-4.json` beside it, with its own settings sidecar. Tasks never write one file.
pub(crate) fn shard_part_path(out: &Path, shard: Shard) -> PathBuf {
    out.with_file_name(format!("{}.shard-{}-of-{}.json", stem_of(out), shard.index, shard.count))
}

/// The shard parts beside `out` (see [`shard_part_path`]), in name order.
pub(crate) fn shard_parts(out: &Path) -> Vec<PathBuf> {
    let prefix = format!("{}.shard-", stem_of(out));
    let dir = out.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut parts: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            name.starts_with(&prefix) && name.ends_with(".json") && !name.ends_with(".meta.json")
        })
        .collect();
    parts.sort();
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relaxed_json_reads_python_nan() {
        let text = r#"{"a": NaN, "b": "NaN", "c": -Infinity, "d": [Infinity, 1]}"#;
        let v: serde_json::Value = serde_json::from_str(&relaxed_json(text)).unwrap();
        assert!(v["a"].is_null() && v["b"] == "NaN" && v["c"].is_null() && v["d"][0].is_null());
    }

    #[test]
    fn sidecar_and_shard_names_sit_beside_the_output() {
        let out = Path::new("results/token_ablation_results_test.json");
        assert_eq!(meta_path(out), Path::new("results/token_ablation_results_test.meta.json"));
        let shard = Shard::new(1, 4).unwrap();
        assert_eq!(shard_part_path(out, shard), Path::new("results/token_ablation_results_test.shard-1-of-4.json"));
    }
}
