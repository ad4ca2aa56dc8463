//! Files of an attention-suppression run ([`crate::attention::suppression`]), all written
//! atomically into one folder:
//! - `step_importance_supp.json`: thought-anchors' website shape, an array of
//!   `{source_chunk_idx, source_chunk_text, target_impacts: [{target_chunk_idx, importance_score}]}`
//!   with `importance_score` = `matrix[target][source]` (mean `log(KL + 1e-9)`) for every target
//!   after the source (earlier targets are unaffected by construction; an undefined score, a
//!   sentence without tokens, is left out);
//! - `suppression_matrix.npy`: the `N × N` float64 matrix, rows = target, columns = source;
//! - `suppression_kl.npy`: the `N × T` per-token KL (before the log), row = source;
//! - `suppression_heatmap.html`: the matrix on and below the diagonal;
//! - `suppression_manifest.json`: model, weights hash, tokenizer, sentence and boundary modes,
//!   text id, N, T, layers and every compression parameter. Its `key` (every input) lets a rerun
//!   with the same inputs read the folder back instead of running N + 1 passes
//!   ([`cached_suppression`]).

use std::path::{Path, PathBuf};


use crate::attention::suppression::checked_selection;
// The website's record types live with the suppression matrix (the explorer reads them too).
pub use crate::attention::suppression::{step_importance_records, StepImportance, TargetImpact};
use crate::attention::{suppression_matrix, Sentences, SuppressionMatrix, SuppressionOptions, TokenBounds};
use crate::io::{npy, read_json, write_json};
use crate::model::Loaded;
use crate::plot::{self, ColorLimits, HeatmapOptions};
use crate::{Error, Result};

/// The paths written by [`write_suppression`].
#[derive(Debug, Clone)]
pub struct SuppressionFiles {
    pub step_importance: PathBuf,
    pub matrix: PathBuf,
    pub kl: PathBuf,
    pub heatmap: PathBuf,
    pub manifest: PathBuf,
}

impl SuppressionFiles {
    /// The file names in `dir`.
    pub(crate) fn in_dir(dir: &Path) -> SuppressionFiles {
        SuppressionFiles {
            step_importance: dir.join("step_importance_supp.json"),
            matrix: dir.join("suppression_matrix.npy"),
            kl: dir.join("suppression_kl.npy"),
            heatmap: dir.join("suppression_heatmap.html"),
            manifest: dir.join("suppression_manifest.json"),
        }
    }
}

/// The website's `step_importance_supp.json` records of `result`.
pub fn step_importance(result: &SuppressionMatrix, sentences: &Sentences) -> Result<Vec<StepImportance>> {
    if sentences.len() != result.n {
        return Err(Error::invalid(format!(
            "suppression: {} sentences for a {}×{} matrix",
            sentences.len(),
            result.n,
            result.n
        )));
    }
    Ok(step_importance_records(&result.values, &sentences.sentences))
}

/// The heatmap: targets down, sources across, cells above the diagonal (a target before its
/// source, `log(1e-9)` by construction) left blank so the colours span the informative range.
pub fn suppression_heatmap(result: &SuppressionMatrix, title: &str) -> Result<plot::Figure> {
    let n = result.n;
    let shown: Vec<f64> =
        (0..n * n).map(|i| if i % n > i / n { f64::NAN } else { result.values[i] }).collect();
    plot::heatmap(
        &shown,
        n,
        &HeatmapOptions {
            title: title.to_owned(),
            x_title: "source sentence (suppressed)".into(),
            y_title: "target sentence".into(),
            colorbar_title: "mean log(KL + 1e-9)".into(),
            color_limits: ColorLimits::Auto,
            ..Default::default()
        },
    )
}

/// Write every file of a suppression run into `dir` (created if missing).
pub fn write_suppression(
    dir: &Path,
    loaded: &Loaded,
    sentences: &Sentences,
    options: &SuppressionOptions,
    result: &SuppressionMatrix,
) -> Result<SuppressionFiles> {
    let files = SuppressionFiles::in_dir(dir);
    write_json(&files.step_importance, &step_importance(result, sentences)?)?;
    npy::write_f64(&files.matrix, &[result.n, result.n], &result.values)?;
    let t = result.bounds.n_tokens;
    let kl: Vec<f64> = result.kl.iter().flatten().copied().collect();
    npy::write_f64(&files.kl, &[result.kl.len(), t], &kl)?;
    let title = format!("Attention suppression | {} | {} sentences, {t} tokens", loaded.name, result.n);
    suppression_heatmap(result, &title)?.write_html(&files.heatmap)?;
    let mut manifest = cache_key(loaded, sentences, options, &result.layers);
    let extra = serde_json::json!({
        "method": "attention suppression (thought-anchors get_suppression_KL_matrix)",
        "orientation": "matrix[target][source]",
        "n_tokens": t,
        "token_ranges": result.bounds.ranges,
        "positions_run": result.positions_run,
    });
    manifest = serde_json::json!({ "key": manifest, "result": extra });
    write_json(&files.manifest, &manifest)?;
    Ok(files)
}

/// Every input of a suppression run (the manifest's `key`); not `batch_sources`, which changes
/// how the passes are grouped, not the results.
fn cache_key(loaded: &Loaded, sentences: &Sentences, options: &SuppressionOptions, layers: &[usize]) -> serde_json::Value {
    serde_json::json!({
        "model": loaded.name,
        "weights_hash": loaded.weights_hash,
        "dtype": "f32",
        "tokenizer": loaded.tokenizer.identity(),
        "sentence_mode": sentences.mode.as_str(),
        "boundary_mode": options.boundary_mode.as_str(),
        "text_id": sentences.text_id(),
        "n": sentences.len(),
        "layers": layers,
        "heads": requested_heads(options),
        "top_p": options.top_p,
        "max_tokens": options.max_tokens,
        "temperature": options.temperature,
        "f16_logits": options.f16_logits,
        "log_epsilon": options.log_epsilon,
    })
}

/// The layers a run with `options` suppresses (as [`crate::attention::suppression::suppression_kl`]
/// lists them; an out-of-range layer is reported there).
fn requested_layers(loaded: &Loaded, options: &SuppressionOptions) -> Vec<usize> {
    let count = loaded.model.num_layers();
    checked_selection(options.layers.as_deref(), usize::MAX, "layer")
        .ok()
        .flatten()
        .unwrap_or_else(|| (0..count).collect())
}

/// The heads a run with `options` suppresses, sorted (`null`: every head).
fn requested_heads(options: &SuppressionOptions) -> Option<Vec<usize>> {
    checked_selection(options.heads.as_deref(), usize::MAX, "head").ok().flatten()
}

/// The result stored in `dir` when its manifest's key equals this run's inputs; `None` when the
/// folder holds no run, another run or an incomplete one (then it is computed again).
fn read_stored(dir: &Path, key: &serde_json::Value) -> Option<SuppressionMatrix> {
    let files = SuppressionFiles::in_dir(dir);
    let manifest: serde_json::Value = read_json(&files.manifest).ok()?;
    if manifest.get("key")? != key {
        return None;
    }
    let result = manifest.get("result")?;
    let ranges: Vec<(usize, usize)> = serde_json::from_value(result.get("token_ranges")?.clone()).ok()?;
    let n_tokens = result.get("n_tokens")?.as_u64()? as usize;
    let positions_run = result.get("positions_run")?.as_u64()? as usize;
    let layers: Vec<usize> = serde_json::from_value(key.get("layers")?.clone()).ok()?;
    let as_f64 = |a: npy::NpyArray| match a.data {
        npy::NpyData::F64(v) => Some((a.shape, v)),
        npy::NpyData::F32(_) => None,
    };
    let (shape, values) = as_f64(npy::read(&files.matrix).ok()?)?;
    let n = ranges.len();
    if shape != [n, n] || !files.heatmap.is_file() {
        return None;
    }
    let (kl_shape, kl) = as_f64(npy::read(&files.kl).ok()?)?;
    if kl_shape != [n, n_tokens] || !files.step_importance.is_file() {
        return None;
    }
    let kl = kl.chunks(n_tokens.max(1)).map(|c| c.to_vec()).take(n).collect();
    let bounds = TokenBounds { ranges, n_tokens, mode: crate::attention::BoundaryMode::default() };
    Some(SuppressionMatrix { n, values, kl, bounds, layers, positions_run })
}

/// [`suppression_matrix`] and [`write_suppression`] into `dir`, unless `dir` already holds the run
/// of these exact inputs (the manifest's key): then it is read back. Returns the result and
/// whether it was computed. The folder is written as a whole
/// ([`crate::io::write_folder_atomically`]): a run killed half-way leaves the previous run's
/// complete folder, never its manifest beside this run's matrix.
pub fn cached_suppression(
    dir: &Path,
    loaded: &Loaded,
    sentences: &Sentences,
    options: &SuppressionOptions,
) -> Result<(SuppressionMatrix, SuppressionFiles, bool)> {
    cached_suppression_from(dir, dir, loaded, sentences, options)
}

/// [`cached_suppression`] into `dir`, reading the run of these inputs back from `previous` (`dir`
/// itself, or the folder that `dir` is being built to replace; its files are then linked into
/// `dir`).
pub fn cached_suppression_from(
    dir: &Path,
    previous: &Path,
    loaded: &Loaded,
    sentences: &Sentences,
    options: &SuppressionOptions,
) -> Result<(SuppressionMatrix, SuppressionFiles, bool)> {
    let key = cache_key(loaded, sentences, options, &requested_layers(loaded, options));
    if let Some(mut stored) = read_stored(previous, &key) {
        stored.bounds.mode = options.boundary_mode;
        if previous != dir {
            link_files(previous, dir)?;
        }
        return Ok((stored, SuppressionFiles::in_dir(dir), false));
    }
    // A file or a folder of other files at `dir` fails now, not after the passes.
    crate::io::check_replaceable(dir)?;
    let result = suppression_matrix(loaded, sentences, options)?;
    crate::io::write_folder_atomically(dir, |staging| write_suppression(staging, loaded, sentences, options, &result).map(|_| ()))?;
    Ok((result, SuppressionFiles::in_dir(dir), true))
}

/// The plain files of `from` in `to` (created): hard links where possible (results files are only
/// ever replaced, never changed in place), else copies.
fn link_files(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(|e| Error::io(to, e))?;
    for entry in std::fs::read_dir(from).map_err(|e| Error::io(from, e))? {
        let entry = entry.map_err(|e| Error::io(from, e))?;
        // Not a folder, nor a temporary left by an interrupted write.
        if !entry.file_type().map_err(|e| Error::io(entry.path(), e))?.is_file() || entry.file_name().to_string_lossy().contains(".tmp-") {
            continue;
        }
        let target = to.join(entry.file_name());
        if std::fs::hard_link(entry.path(), &target).is_err() {
            std::fs::copy(entry.path(), &target).map_err(|e| Error::io(&target, e))?;
        }
    }
    Ok(())
}
