//! Fault test: `va` and `attn` killed (SIGKILL) at random moments and run again leave exactly the
//! outputs of an uninterrupted run, byte for byte: every file of the output folder and of the
//! attention cache. The one exception is the run's own provenance, which says what the rerun did
//! (`forward_passes` and the headline, each rollout's `cache`: `hit` or `computed`); it is masked
//! before the comparison. Hidden temporaries a killed write leaves behind (`.name.tmp-…`) are
//! allowed and must be the only extra files; no reader takes them for results.
//!
//! Trials: `THOUGHTSCOPE_FAULT_TRIALS` (default 4, split between `va` and `attn`);
//! `scripts/fault-test.sh` runs 20.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

mod support;

/// Three sample rollouts, linked into `dir/root`.
fn make_root(dir: &Path) {
    let root = dir.join("root");
    std::fs::create_dir_all(&root).unwrap();
    let samples = support::repo().join("rollouts/apple_boxes");
    for name in ["rollout_00", "rollout_01", "rollout_02"] {
        std::os::unix::fs::symlink(samples.join(name), root.join(name)).unwrap();
    }
}

/// The command of one job, run in `dir` with relative paths (so outputs that record their paths
/// are the same in every trial folder).
fn job(kind: &str, dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_thoughtscope"));
    command.current_dir(dir).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    match kind {
        "va" => command.args(["va", "--quiet", "--root", "root", "--cache-dir", "cache", "--out", "out", "--html-only"]),
        _ => command.args(["attn", "root/rollout_01", "--quiet", "--cache-dir", "cache", "--layout", "thought-anchors"]),
    };
    command
}

/// `bytes` with the run's provenance masked (see the module comment).
fn without_provenance(path: &Path, bytes: &[u8]) -> Vec<u8> {
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

/// Every non-hidden file under `dir/out` and `dir/cache` by relative path, with its bytes; and
/// the hidden ones, which must be temporaries of interrupted writes.
fn outputs(dir: &Path) -> (BTreeMap<PathBuf, Vec<u8>>, Vec<PathBuf>) {
    let (mut files, mut hidden) = (BTreeMap::new(), Vec::new());
    let mut stack: Vec<PathBuf> = ["out", "cache"].iter().map(|d| dir.join(d)).filter(|p| p.exists()).collect();
    while let Some(path) = stack.pop() {
        for entry in std::fs::read_dir(&path).unwrap() {
            let path = entry.unwrap().path();
            let relative = path.strip_prefix(dir).unwrap().to_path_buf();
            if path.file_name().unwrap().to_string_lossy().starts_with('.') {
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

#[test]
fn killed_runs_rerun_to_the_uninterrupted_outputs() {
    if support::smollm2().is_none() {
        return;
    }
    let trials: usize = std::env::var("THOUGHTSCOPE_FAULT_TRIALS").ok().and_then(|v| v.parse().ok()).unwrap_or(4);
    let tmp = tempfile::tempdir().unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(19);
    for kind in ["va", "attn"] {
        let reference = tmp.path().join(format!("{kind}-reference"));
        make_root(&reference);
        let started = Instant::now();
        assert!(job(kind, &reference).status().unwrap().success(), "uninterrupted {kind} failed");
        let duration = started.elapsed();
        let (want, _) = outputs(&reference);
        assert!(!want.is_empty());
        for trial in 0..trials.div_ceil(2) {
            let dir = tmp.path().join(format!("{kind}-{trial}"));
            make_root(&dir);
            // Kill anywhere from the start to the end of an uninterrupted run.
            let at = Duration::from_secs_f64(rng.random_range(0.02..1.0) * duration.as_secs_f64());
            let mut child = job(kind, &dir).spawn().unwrap();
            std::thread::sleep(at);
            let _ = child.kill();
            let killed = child.wait().unwrap();
            assert!(job(kind, &dir).status().unwrap().success(), "{kind} trial {trial}: the rerun failed");
            let (got, hidden) = outputs(&dir);
            let missing: Vec<_> = want.keys().filter(|p| !got.contains_key(*p)).collect();
            let extra: Vec<_> = got.keys().filter(|p| !want.contains_key(*p)).collect();
            assert!(missing.is_empty() && extra.is_empty(), "{kind} trial {trial} (killed at {at:?}): missing {missing:?}, extra {extra:?}");
            for (path, bytes) in &want {
                assert!(got[path] == *bytes, "{kind} trial {trial} (killed at {at:?}, {killed}): {} differs", path.display());
            }
            for path in &hidden {
                let name = path.file_name().unwrap().to_string_lossy();
                assert!(name.contains(".tmp-") || name.contains(".old-"), "{kind} trial {trial}: unexpected hidden {}", path.display());
            }
        }
    }
}
