//! Shared by the test binaries: the real SmolLM2 GGUF, the reference data beside the repository, Chromium, and the one
//! rule for tests that cannot run here.
//!
//! A test that returns early checks nothing, so a skip is loud: it writes one `SKIP` line straight
//! to the test log (past libtest's output capture), and under `THOUGHTSCOPE_NO_SKIP=1` (set by
//! `.ci/run`) it fails the test instead. Only a missing CPU feature or GPU ([`skip_hardware`]) is
//! never a failure: CI cannot choose its processor.
#![allow(dead_code)]

pub mod outputs;

use std::fmt::Display;
use std::io::Write;
use std::path::{Path, PathBuf};

use thoughtscope::model::{Loaded, Model};
use thoughtscope::model::Settings;

/// Set by `.ci/run`: every skip except [`skip_hardware`] fails the test.
pub const NO_SKIP_VAR: &str = "THOUGHTSCOPE_NO_SKIP";

fn log_line(line: &str) {
    // Straight to the process's stderr: libtest captures `eprintln!`, not the stream itself.
    let _ = writeln!(std::io::stderr(), "{line}");
}

fn current_test() -> String {
    std::thread::current().name().unwrap_or("?").to_owned()
}

/// This test cannot check what it is for here (`reason` says what is missing and how to get it).
/// Prints `SKIP <test>: <reason>`; panics instead when [`NO_SKIP_VAR`] is set.
pub fn skip(reason: impl Display) {
    let test = current_test();
    if std::env::var(NO_SKIP_VAR).is_ok_and(|v| !v.is_empty() && v != "0") {
        panic!("{test}: would skip ({reason}), and {NO_SKIP_VAR} forbids skips");
    }
    log_line(&format!("SKIP {test}: {reason}"));
}

/// Like [`skip`] for a missing CPU feature or GPU: printed, never a failure.
pub fn skip_hardware(reason: impl Display) {
    log_line(&format!("SKIP (hardware) {}: {reason}", current_test()));
}

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `<relative>` in the reference data folder beside the repository if it exists, else a [`skip`] and `None`.
pub fn shared_data(relative: &str) -> Option<PathBuf> {
    let path = repo().join("../shared/data").join(relative);
    if path.exists() {
        Some(path)
    } else {
        skip(format!("{} absent (the shared data set beside the clone)", path.display()));
        None
    }
}

/// SmolLM2-135M from `models/` (scripts/fetch-model.sh), else a [`skip`] and `None`.
pub fn smollm2() -> Option<Loaded> {
    match Model::load("smollm2-135m", &Settings::default()) {
        Ok(m) => Some(m),
        Err(e) => {
            skip(format!("SmolLM2 GGUF absent ({e}); run scripts/fetch-model.sh"));
            None
        }
    }
}

/// Whether headless Chromium can render figures; else a [`skip`].
pub fn chromium() -> bool {
    if thoughtscope::plot::static_export_available() {
        true
    } else {
        skip(thoughtscope::plot::export::CHROMIUM_MISSING);
        false
    }
}

/// A committed fixture: its absence is a broken checkout, never a skip.
pub fn fixture(relative: impl AsRef<Path>) -> PathBuf {
    let path = repo().join("tests/fixtures").join(relative);
    assert!(path.exists(), "committed fixture {} is missing", path.display());
    path
}

/// The tiny random Llama with a word-level tokenizer (`tests/fixtures/tiny-codi-base`: 2 layers ×
/// 4 heads, needs nothing from outside) copied to `dir`, its context raised to `max_positions`:
/// every command that takes `--model` runs on it in well under a second.
pub fn tiny_model_with_tokenizer(dir: &Path, max_positions: usize) {
    std::fs::create_dir_all(dir).unwrap();
    for entry in std::fs::read_dir(fixture("tiny-codi-base")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    let path = dir.join("config.json");
    let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    config["max_position_embeddings"] = max_positions.into();
    std::fs::write(&path, config.to_string()).unwrap();
}

/// How far attention suppression with `batch_sources` B is from B = 1 (see
/// [`suppression_batch_differences`]).
#[derive(Debug)]
pub struct BatchDifference {
    pub batch: usize,
    /// Largest `|a − b| / max(|a|, |b|)` of the per-token KL over positions where either is
    /// above 1e-9 (below, both are f32 noise of an unchanged distribution).
    pub kl_relative: f64,
    /// Largest `|a − b|` of the per-token KL.
    pub kl_absolute: f64,
    /// Positions (from each source on) whose KL differs beyond 1e-3 relative plus 1e-7 absolute.
    pub kl_beyond: usize,
    pub positions: usize,
    /// Largest difference of the matrix of mean `log(KL + ε)` (NaN cells: both NaN).
    pub matrix: f64,
}

/// Attention suppression with `batch_sources` 1 and each of `batches` on `ids`/`ranges`, after
/// checking the layers, the positions run and the zeros before each source.
pub fn suppression_batch_differences(
    model: &Model,
    ids: &[u32],
    ranges: &[(usize, usize)],
    options: &thoughtscope::attention::SuppressionOptions,
    batches: &[usize],
) -> Vec<BatchDifference> {
    use thoughtscope::attention::suppression::{sentence_means, suppression_kl};
    use thoughtscope::attention::SuppressionOptions;
    let one = SuppressionOptions { batch_sources: 1, ..options.clone() };
    let (kl_one, layers_one, _) = suppression_kl(model, ids, ranges, &one).unwrap();
    let matrix_one = sentence_means(&kl_one, ranges, options.log_epsilon);
    let t = ids.len();
    batches
        .iter()
        .map(|&batch| {
            let batched = SuppressionOptions { batch_sources: batch, ..options.clone() };
            let (kl, layers, positions_run) = suppression_kl(model, ids, ranges, &batched).unwrap();
            assert_eq!(layers, layers_one);
            // Each group runs B rows of the suffix from its first source.
            let starts: Vec<usize> = ranges.iter().filter(|&&(a, e)| a < e.min(t)).map(|&(a, _)| a).collect();
            let expected: usize = t + starts.chunks(batch).map(|g| g.len() * (t - g[0])).sum::<usize>();
            assert_eq!(positions_run, expected, "batch {batch}: positions run");
            let mut d = BatchDifference { batch, kl_relative: 0.0, kl_absolute: 0.0, kl_beyond: 0, positions: 0, matrix: 0.0 };
            for (s, (per_token, &(start, _))) in kl.iter().zip(ranges).enumerate() {
                let start = start.min(t);
                assert!(per_token[..start].iter().all(|&k| k == 0.0), "batch {batch}: source {s} has KL before its start");
                for (&a, &b) in per_token[start..].iter().zip(&kl_one[s][start..]) {
                    d.positions += 1;
                    let (diff, size) = ((a - b).abs(), a.abs().max(b.abs()));
                    if size > 1e-9 {
                        d.kl_relative = d.kl_relative.max(diff / size);
                    }
                    d.kl_absolute = d.kl_absolute.max(diff);
                    if diff > 1e-7 + 1e-3 * size {
                        d.kl_beyond += 1;
                    }
                }
            }
            let matrix = sentence_means(&kl, ranges, options.log_epsilon);
            for (a, b) in matrix.iter().zip(&matrix_one) {
                assert_eq!(a.is_nan(), b.is_nan(), "batch {batch}: NaN cells differ");
                if !a.is_nan() {
                    d.matrix = d.matrix.max((a - b).abs());
                }
            }
            d
        })
        .collect()
}

/// The tolerance of `batch_sources` B against B = 1 (`label` names the path). A batch row runs the
/// same arithmetic on other shapes (B·L-row GEMMs, query blocks from the group's first source,
/// and the keys between the group's first source and the row's own recomputed rather than read
/// from the unsuppressed cache), so the logits may differ in their last bits; through 30 layers
/// that is ~1e-5 in a logit, as between ours and HF, and the same rule applies: the
/// full-vocabulary KL within 1e-3 relative + 1e-7 absolute (measured: ≤ 2.2e-4 relative on the
/// portable path; bit-identical on the kernels but for the 8-token last sentence, whose
/// one-source pass has too few rows for the blocked kernels and takes the few-row linear and the
/// hook's attention: 2.5e-5), hence the matrix within 1e-3 in log units; the faithful
/// KL, whose f16 rounding and nucleus cut-off can flip on such noise, beyond that at ≤ 1% of
/// positions with the matrix within 0.05 wherever no position flipped (measured: none flipped).
pub fn assert_batch_within_noise(label: &str, full_vocabulary: bool, differences: &[BatchDifference]) {
    for d in differences {
        eprintln!("{label}: {d:?}");
        if d.batch == 1 {
            assert_eq!((d.kl_absolute, d.matrix), (0.0, 0.0), "{label}: batch 1 twice must agree exactly");
        }
        if full_vocabulary {
            assert_eq!(d.kl_beyond, 0, "{label}: batch {}: {d:?}", d.batch);
            assert!(d.matrix <= 1e-3, "{label}: batch {}: {d:?}", d.batch);
        } else {
            assert!(d.kl_beyond * 100 <= d.positions, "{label}: batch {}: {d:?}", d.batch);
            if d.kl_beyond == 0 {
                assert!(d.matrix <= 0.05, "{label}: batch {}: {d:?}", d.batch);
            }
        }
    }
}

/// The data (JSON) embedded in the explorer page at `page` (`thoughtscope explore`, and the
/// `explorer.html` of `va` and `anchors`).
pub fn explorer_page_data(page: &Path) -> serde_json::Value {
    let html = std::fs::read_to_string(page).unwrap_or_else(|e| panic!("{}: {e}", page.display()));
    let start = html.find("class=\"ts-data\">").unwrap_or_else(|| panic!("{}: no explorer data", page.display())) + "class=\"ts-data\">".len();
    let end = start + html[start..].find("</script>").expect("the data's script ends");
    serde_json::from_str(&html[start..end]).unwrap_or_else(|e| panic!("{}: explorer data: {e}", page.display()))
}

/// `rollouts/apple_boxes/<name>` with only its first `keep` chunks and labels, under `root`: a
/// short real trace for tests that run the model on several traces.
pub fn cut_rollout(root: &Path, name: &str, keep: usize) -> PathBuf {
    use serde_json::Value;
    let source = repo().join("rollouts/apple_boxes").join(name);
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let read = |file: &str| -> Value { serde_json::from_str(&std::fs::read_to_string(source.join(file)).unwrap()).unwrap() };
    let mut chunks = read("chunks.json");
    let kept: Vec<Value> = chunks["chunks"].as_array().unwrap()[..keep].to_vec();
    let text = kept.iter().map(|c| c.as_str().unwrap()).collect::<Vec<_>>().join(" ");
    chunks["chunks"] = Value::Array(kept);
    let labels = Value::Array(read("chunks_labeled.json").as_array().unwrap()[..keep].to_vec());
    let mut base = read("base_solution.json");
    base["full_cot"] = Value::String(text);
    for (file, value) in [("chunks.json", chunks), ("chunks_labeled.json", labels), ("base_solution.json", base)] {
        std::fs::write(dir.join(file), serde_json::to_string(&value).unwrap()).unwrap();
    }
    dir
}
