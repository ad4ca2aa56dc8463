//! The sentence-attention cache `<root>/<model>/<text_id>/` (spec §6).
//!
//! Upstream keys an entry by `text_id` and the model name only, so a cache made with another
//! dtype, tokenizer, boundary algorithm or checkpoint is silently reused (§12.2 item 7). Here each
//! entry has a `manifest.json` recording the format version, model name and weights hash, dtype,
//! tokenizer identity, sentence mode, boundary mode, N, layers and heads; [`AttnCache::load`]
//! compares it with the requested [`CacheKey`] and returns [`Error::CacheMismatch`] naming the
//! first field that differs.
//!
//! Layouts ([`CacheLayout`]):
//! - `native`: one `attention.npy`, float32 `[L, H, N, N]` (one file, one read);
//! - `upstream`: one `<l>_<h>.npy` per head, float32 `[N, N]`, byte-identical to `np.save`, so
//!   upstream's Python code loads it unchanged. Directories made by the Python pipeline (no
//!   manifest) are read with [`read_upstream_dir`] / [`read_entry_dir`] / [`read_upstream_head`].
//!
//! A thought-anchors (Python) cache holds the same `<model>/<text_id>/<l>_<h>.npy` paths with no
//! manifest. Such an entry is **read, never replaced or deleted** ([`AttnCache::upstream_entry`];
//! [`AttnCache::store`] refuses to replace any directory that has no manifest). Its provenance
//! (model revision, dtype, tokenizer, boundaries) cannot be checked: callers report it as
//! unverified ([`super::CacheOutcome::Upstream`]).
//!
//! Writes are atomic: the entry is built in a temporary directory beside it (files fsynced),
//! then renamed into place; an interrupted write leaves no entry, never a partial one.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::average::SentenceAttention;
use super::boundaries::BoundaryMode;
use crate::io::{self, npy};
use super::segment::SentenceMode;
use crate::{Error, Result};

/// Version of the cache entry format written by this crate.
pub const CACHE_FORMAT_VERSION: u32 = 1;
/// File name of an entry's manifest.
pub const MANIFEST_FILE: &str = "manifest.json";
/// File name of the native layout's data.
pub const NATIVE_FILE: &str = "attention.npy";

/// How an entry stores its matrices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum CacheLayout {
    /// One `attention.npy` `[L, H, N, N]`.
    #[default]
    Native,
    /// Upstream's `<l>_<h>.npy` files.
    #[value(name = "thought-anchors")]
    Upstream,
}

/// Everything that determines a cache entry's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheKey {
    /// Model name, also the directory under the cache root (`/` becomes `--`).
    pub model: String,
    /// Hash of the weights, as the caller computes it (e.g. `model::Loaded`'s).
    pub weights_hash: String,
    /// Attention dtype of the forward pass (`f32`, `f16`, `bf16`).
    pub dtype: String,
    /// Tokenizer identity (e.g. `model::Tokenizer::identity`).
    pub tokenizer: String,
    pub sentence_mode: SentenceMode,
    pub boundary_mode: BoundaryMode,
    /// `Sentences::text_id()`.
    pub text_id: String,
    /// Number of sentences N.
    pub n: usize,
    pub layers: usize,
    pub heads: usize,
}

/// `manifest.json` of an entry: the key plus how it is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    #[serde(flatten)]
    pub key: CacheKey,
    pub layout: CacheLayout,
    /// Sequence length T of the forward pass (informational).
    #[serde(default)]
    pub n_tokens: Option<usize>,
    /// `thoughtscope <version>`.
    #[serde(default)]
    pub created_by: String,
}

impl Manifest {
    /// First field (in a fixed order) whose cached and requested values differ.
    fn mismatch(&self, key: &CacheKey) -> Option<(&'static str, String, String)> {
        let cached = &self.key;
        let fields: [(&'static str, String, String); 11] = [
            ("format_version", self.format_version.to_string(), CACHE_FORMAT_VERSION.to_string()),
            ("model", cached.model.clone(), key.model.clone()),
            ("weights_hash", cached.weights_hash.clone(), key.weights_hash.clone()),
            ("dtype", cached.dtype.clone(), key.dtype.clone()),
            ("tokenizer", cached.tokenizer.clone(), key.tokenizer.clone()),
            ("sentence_mode", cached.sentence_mode.to_string(), key.sentence_mode.to_string()),
            ("boundary_mode", cached.boundary_mode.to_string(), key.boundary_mode.to_string()),
            ("text_id", cached.text_id.clone(), key.text_id.clone()),
            ("n", cached.n.to_string(), key.n.to_string()),
            ("layers", cached.layers.to_string(), key.layers.to_string()),
            ("heads", cached.heads.to_string(), key.heads.to_string()),
        ];
        fields.into_iter().find(|(_, a, b)| a != b)
    }
}

/// A cache root (upstream's default is `attn_cache` in the working directory).
#[derive(Debug, Clone)]
pub struct AttnCache {
    root: PathBuf,
}

impl AttnCache {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        AttnCache { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/<model>/` (`/` in the model name becomes `--`).
    pub fn model_dir(&self, model: &str) -> PathBuf {
        self.root.join(model.replace(['/', '\\'], "--"))
    }

    /// `<root>/<model>/<text_id>/`.
    pub fn entry_dir(&self, model: &str, text_id: &str) -> PathBuf {
        self.model_dir(model).join(text_id)
    }

    /// The cached matrices for `key`: `Ok(None)` when there is no complete entry (no manifest),
    /// [`Error::CacheMismatch`] when the entry was made with other settings.
    pub fn load(&self, key: &CacheKey) -> Result<Option<SentenceAttention>> {
        let dir = self.entry_dir(&key.model, &key.text_id);
        let manifest_path = dir.join(MANIFEST_FILE);
        if !manifest_path.exists() {
            return Ok(None);
        }
        let manifest = read_manifest(&manifest_path)?;
        if let Some((field, cached, requested)) = manifest.mismatch(key) {
            return Err(Error::CacheMismatch { path: dir, field: field.into(), cached, requested });
        }
        read_with_manifest(&dir, &manifest).map(Some)
    }

    /// Store `attention` under `key` (replacing any entry there) and return the entry directory.
    pub fn store(
        &self,
        key: &CacheKey,
        attention: &SentenceAttention,
        layout: CacheLayout,
        n_tokens: Option<usize>,
    ) -> Result<PathBuf> {
        let shape = (attention.layers(), attention.heads(), attention.n());
        if shape != (key.layers, key.heads, key.n) {
            return Err(Error::invalid(format!(
                "cache store: attention is [{}, {}, {n}, {n}] but the key says layers {}, heads {}, n {}",
                shape.0,
                shape.1,
                key.layers,
                key.heads,
                key.n,
                n = shape.2
            )));
        }
        let dir = self.entry_dir(&key.model, &key.text_id);
        if dir.exists() && !dir.join(MANIFEST_FILE).exists() && !dir_is_empty(&dir)? {
            return Err(Error::format(
                &dir,
                "not replaced: the directory has no manifest.json, so it was not made by thoughtscope \
                 (a thought-anchors cache entry is read as it is, never overwritten); move it away or use another cache dir",
            ));
        }
        let parent = dir.parent().expect("entry dir has a parent").to_path_buf();
        std::fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
        let unique = format!("{}-{}", std::process::id(), unique_suffix());
        let tmp = parent.join(format!(".{}.tmp-{unique}", key.text_id));
        let built = (|| -> Result<()> {
            std::fs::create_dir(&tmp).map_err(|e| Error::io(&tmp, e))?;
            write_data(&tmp, attention, layout)?;
            let manifest = Manifest {
                format_version: CACHE_FORMAT_VERSION,
                key: key.clone(),
                layout,
                n_tokens,
                created_by: format!("thoughtscope {}", env!("CARGO_PKG_VERSION")),
            };
            let json = serde_json::to_vec_pretty(&manifest)?;
            io::write_atomic(&tmp.join(MANIFEST_FILE), &json)
        })();
        if let Err(e) = built {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        // Swap the finished directory into place.
        if dir.exists() {
            let old = parent.join(format!(".{}.old-{unique}", key.text_id));
            std::fs::rename(&dir, &old).map_err(|e| Error::io(&dir, e))?;
            std::fs::rename(&tmp, &dir).map_err(|e| Error::io(&dir, e))?;
            let _ = std::fs::remove_dir_all(&old);
        } else {
            std::fs::rename(&tmp, &dir).map_err(|e| Error::io(&dir, e))?;
        }
        // Make the rename itself durable (best effort: not every platform can fsync a directory).
        if let Ok(parent_dir) = std::fs::File::open(&parent) {
            let _ = parent_dir.sync_all();
        }
        Ok(dir)
    }
}

impl AttnCache {
    /// The entry directory of `text_id` when it is a thought-anchors (Python) entry: no
    /// `manifest.json` and at least one `<layer>_<head>.npy` file. `None` otherwise.
    pub fn upstream_entry(&self, model: &str, text_id: &str) -> Option<PathBuf> {
        let dir = self.entry_dir(model, text_id);
        if dir.join(MANIFEST_FILE).exists() {
            return None;
        }
        let entries = std::fs::read_dir(&dir).ok()?;
        let has_heads = entries
            .filter_map(|e| e.ok())
            .any(|e| parse_head_file_name(&e.file_name().to_string_lossy()).is_some());
        has_heads.then_some(dir)
    }
}

fn dir_is_empty(dir: &Path) -> Result<bool> {
    let mut entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    Ok(entries.next().is_none())
}

fn unique_suffix() -> usize {
    static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

fn write_data(dir: &Path, attention: &SentenceAttention, layout: CacheLayout) -> Result<()> {
    let (layers, heads, n) = (attention.layers(), attention.heads(), attention.n());
    match layout {
        CacheLayout::Native => npy::write_f32(&dir.join(NATIVE_FILE), &[layers, heads, n, n], attention.data()),
        CacheLayout::Upstream => {
            for l in 0..layers {
                for h in 0..heads {
                    npy::write_f32(&dir.join(format!("{l}_{h}.npy")), &[n, n], attention.matrix(l, h))?;
                }
            }
            Ok(())
        }
    }
}

/// Read and parse an entry's `manifest.json`.
pub fn read_manifest(path: &Path) -> Result<Manifest> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::format(path, format!("invalid cache manifest: {e}")))
}

fn read_with_manifest(dir: &Path, manifest: &Manifest) -> Result<SentenceAttention> {
    let key = &manifest.key;
    let attention = match manifest.layout {
        CacheLayout::Native => {
            let path = dir.join(NATIVE_FILE);
            let array = npy::read(&path)?;
            let expected = vec![key.layers, key.heads, key.n, key.n];
            if array.shape != expected {
                return Err(Error::format(&path, format!("shape {:?}, the manifest says {expected:?}", array.shape)));
            }
            SentenceAttention::new(key.layers, key.heads, key.n, array.to_f32())?
        }
        CacheLayout::Upstream => read_upstream_dir(dir)?,
    };
    if (attention.layers(), attention.heads(), attention.n()) != (key.layers, key.heads, key.n) {
        return Err(Error::format(
            dir,
            format!(
                "holds [{}, {}, {n}, {n}] matrices, the manifest says layers {}, heads {}, n {}",
                attention.layers(),
                attention.heads(),
                key.layers,
                key.heads,
                key.n,
                n = attention.n()
            ),
        ));
    }
    Ok(attention)
}

/// Read an entry directory: through its manifest when it has one, otherwise as an upstream
/// (Python-made) directory of `<l>_<h>.npy` files.
pub fn read_entry_dir(dir: &Path) -> Result<SentenceAttention> {
    let manifest_path = dir.join(MANIFEST_FILE);
    if manifest_path.exists() {
        let manifest = read_manifest(&manifest_path)?;
        read_with_manifest(dir, &manifest)
    } else {
        read_upstream_dir(dir)
    }
}

/// Read every `<l>_<h>.npy` in `dir` (no manifest needed). The files must form a complete
/// `layers × heads` grid of square matrices of one size.
pub fn read_upstream_dir(dir: &Path) -> Result<SentenceAttention> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some((l, h)) = parse_head_file_name(&name) {
            files.push((l, h, entry.path()));
        }
    }
    if files.is_empty() {
        return Err(Error::format(dir, "no `<layer>_<head>.npy` files"));
    }
    let layers = files.iter().map(|f| f.0).max().expect("non-empty") + 1;
    let heads = files.iter().map(|f| f.1).max().expect("non-empty") + 1;
    let mut grid: Vec<Option<PathBuf>> = vec![None; layers * heads];
    for (l, h, path) in files {
        grid[l * heads + h] = Some(path);
    }
    let mut n = None;
    let mut data = Vec::new();
    for (index, path) in grid.iter().enumerate() {
        let path = path.as_ref().ok_or_else(|| {
            Error::format(dir, format!("missing {}_{}.npy (grid is {layers} layers × {heads} heads)", index / heads, index % heads))
        })?;
        let array = npy::read(path)?;
        let size = match array.shape.as_slice() {
            [a, b] if a == b => *a,
            shape => return Err(Error::format(path, format!("shape {shape:?} is not a square matrix"))),
        };
        match n {
            None => {
                n = Some(size);
                data.reserve(layers * heads * size * size);
            }
            Some(n) if n != size => {
                return Err(Error::format(path, format!("{size}×{size} matrix, other heads are {n}×{n}")));
            }
            Some(_) => {}
        }
        data.extend(array.to_f32());
    }
    SentenceAttention::new(layers, heads, n.expect("at least one file"), data)
}

/// One head's matrix `<dir>/<layer>_<head>.npy` of a thought-anchors entry: float32 (`<f4`, as
/// upstream's `np.save` writes it) of shape `[n, n]`; anything else is an error naming the file.
pub fn read_upstream_head(dir: &Path, layer: usize, head: usize, n: usize) -> Result<Vec<f32>> {
    let path = dir.join(format!("{layer}_{head}.npy"));
    if !path.exists() {
        return Err(Error::format(
            &path,
            "missing: the thought-anchors cache entry has no matrix for this layer and head (it is read as it is, never completed)",
        ));
    }
    let array = npy::read(&path)?;
    if array.shape != [n, n] {
        return Err(Error::format(&path, format!("shape {:?}, expected [{n}, {n}] for {n} sentences", array.shape)));
    }
    match array.data {
        npy::NpyData::F32(values) => Ok(values),
        npy::NpyData::F64(_) => Err(Error::format(&path, "float64 matrix; thought-anchors caches are float32 (<f4)")),
    }
}

/// `"12_3.npy"` → `(12, 3)`.
fn parse_head_file_name(name: &str) -> Option<(usize, usize)> {
    let stem = name.strip_suffix(".npy")?;
    let (l, h) = stem.split_once('_')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(l) || !digits(h) {
        return None;
    }
    Some((l.parse().ok()?, h.parse().ok()?))
}
