//! Comparing a run's output folders with another run's, byte for byte, except the run's own
//! provenance, which says what that run did rather than what it found: `forward_passes` and the
//! headline, each rollout's `cache` (`hit` or `computed`). A rerun after a kill (runs/fault_kill.rs)
//! or a merge over a cache filled by a Slurm array (runs/slurm_cluster.rs) must equal a single
//! uninterrupted process in everything else.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// `bytes` with the run's provenance masked (see the module doc).
pub fn without_provenance(path: &Path, bytes: &[u8]) -> Vec<u8> {
    fn strip(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(map) => {
                for key in ["forward_passes", "headline", "cache"] {
                    map.remove(key);
                }
                map.values_mut().for_each(strip);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    match path.extension().and_then(|e| e.to_str()) {
        Some("json") => {
            let mut value: serde_json::Value = serde_json::from_slice(bytes).expect("output JSON parses");
            strip(&mut value);
            serde_json::to_vec(&value).unwrap()
        }
        Some("html") => String::from_utf8_lossy(bytes)
            .lines()
            .filter(|line| !line.contains("forward pass"))
            .collect::<Vec<_>>()
            .join("\n")
            .replace("&quot;computed&quot;", "&quot;hit&quot;")
            .into_bytes(),
        Some(ext @ ("csv" | "parquet")) => {
            use polars::prelude::*;
            let cursor = std::io::Cursor::new(bytes.to_vec());
            let mut frame = if ext == "csv" {
                CsvReader::new(cursor).finish().expect("output CSV parses")
            } else {
                ParquetReader::new(cursor).finish().expect("output parquet parses")
            };
            if frame.get_column_names().iter().any(|c| c.as_str() == "cache") {
                frame = frame.drop("cache").unwrap();
            }
            let mut out = Vec::new();
            CsvWriter::new(&mut out).finish(&mut frame).unwrap();
            out
        }
        _ => bytes.to_vec(),
    }
}

/// Every non-hidden file under the `folders` of `dir` by relative path, with its bytes (and the
/// output folder's marker); and the other hidden ones, which must be temporaries of interrupted
/// writes.
pub fn outputs(dir: &Path, folders: &[&str]) -> (BTreeMap<PathBuf, Vec<u8>>, Vec<PathBuf>) {
    let (mut files, mut hidden) = (BTreeMap::new(), Vec::new());
    let mut stack: Vec<PathBuf> = folders.iter().map(|d| dir.join(d)).filter(|p| p.exists()).collect();
    while let Some(path) = stack.pop() {
        for entry in std::fs::read_dir(&path).unwrap() {
            let path = entry.unwrap().path();
            let relative = path.strip_prefix(dir).unwrap().to_path_buf();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            // The marker of a folder written as a whole is an output like the others.
            if name.starts_with('.') && name != thoughtscope::io::OUTPUT_MARKER {
                hidden.push(relative);
            } else if path.is_dir() {
                stack.push(path);
            } else {
                let bytes = without_provenance(&path, &std::fs::read(&path).unwrap());
                files.insert(relative, bytes);
            }
        }
    }
    (files, hidden)
}
