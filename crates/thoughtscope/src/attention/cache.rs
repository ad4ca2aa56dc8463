//! The sentence-attention cache `<root>/<model>/<text_id>/` (upstream `get_avg_attention_matrix`'s cache).
//!
//! Upstream keys an entry by `text_id` and the model name only, so a cache made with another
//! dtype, tokenizer, boundary algorithm or checkpoint is silently reused. Here each
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
//! then renamed into place; an interrupted write leaves no entry, never a partial one. Such
//! leftovers (`.<text_id>.tmp-*`, `.<text_id>.old-*`) are hidden, never read as entries, and
//! removed by the next [`AttnCache::store`] into that model directory once they are
//! `STALE_TEMPORARY_AGE` old.
//!
//! Integrity: the manifest records a checksum (xxh3-128) of every data file, verified on every
//! read. An entry that fails it, that lacks a checksum, or that was written by an older format
//! without checksums is never served: [`AttnCache::load`] says why on stderr and treats it as a
//! miss (the caller recomputes and replaces it), or, with [`AttnCache::strict`] (the settings'
//! `strict_cache`, `THOUGHTSCOPE_STRICT_CACHE=1`), returns the error, which names the file and
//! both checksums.
//! Directories written by the Python tool have no manifest and so nothing to verify against;
//! they are read as they are (their provenance is already reported as unverified).
//!
//! Token pairs: an entry may also hold, for a few heads, each sentence's top-source token block
//! (`token_pairs.json` and `token_pairs.npy`, [`super::token_pairs`]), captured in the pass that
//! filled it, so the trace explorer has its token view on a later hit. The manifest's optional
//! `token_pairs` ([`TokenPairsRecord`]) says how they were made (tokens kept, the sink rule, the
//! heads and how they were chosen) and holds their checksums, verified with the rest of the entry
//! on every read: a token-pair file that fails makes the whole entry untrusted, as a data file
//! does. The field is additive, so the format version stays 2: an entry written before it (or
//! without token pairs) stays valid and simply has none ([`read_entry_token_pairs`] gives
//! `None`), and an older thoughtscope reads a new entry's sentence averages as before (it
//! ignores the field and the two files).
//!
//! Names become path components through [`crate::io::path_component`] (a model file `...gguf`
//! must not put its entries above the root); a `text_id` that is not a plain file name is refused.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::average::SentenceAttention;
use super::boundaries::BoundaryMode;
use super::token_pairs::{HeadTokenPairs, TokenPair, TokenPairs, TokenPairsToStore};
use crate::io::{self, npy};
use super::segment::SentenceMode;
use crate::{Error, Result};

/// Version of the cache entry format written by this crate. 2 added `checksums`; entries of
/// older versions cannot be verified and are recomputed.
pub(crate) const CACHE_FORMAT_VERSION: u32 = 2;
/// Age after which a temporary directory left by an interrupted [`AttnCache::store`] is removed.
pub(crate) const STALE_TEMPORARY_AGE: Duration = Duration::from_secs(15 * 60);
/// File name of an entry's manifest.
pub(crate) const MANIFEST_FILE: &str = "manifest.json";
/// File name of the native layout's data.
pub(crate) const NATIVE_FILE: &str = "attention.npy";
/// File names of an entry's token pairs: the blocks' description and tokens, and their values.
pub(crate) const TOKEN_PAIRS_FILE: &str = "token_pairs.json";
pub(crate) const TOKEN_PAIR_VALUES_FILE: &str = "token_pairs.npy";

/// How an entry stores its matrices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheLayout {
    /// One `attention.npy` `[L, H, N, N]`.
    #[default]
    Native,
    /// Upstream's `<l>_<h>.npy` files.
    Upstream,
}
crate::model::named_values!(CacheLayout, "cache layout", { Native => "native", Upstream => "thought-anchors" });

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
    /// Checksum of every data file by file name ([`checksum`]: `xxh3-128:<32 hex digits>`),
    /// verified on every read.
    #[serde(default)]
    pub checksums: BTreeMap<String, String>,
    /// The token pairs stored with the sentence averages, when any (see the module doc).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_pairs: Option<TokenPairsRecord>,
}

/// `manifest.json`'s `token_pairs`: what determines the stored pairs besides the entry's key, and
/// the checksums of their two files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenPairsRecord {
    /// Tokens kept per sentence on each side of a pair.
    pub max_tokens: usize,
    /// Whether the sentence holding token 0 (the attention sink) was passed over as a source.
    pub skip_sink: bool,
    /// The heads stored `[layer, head]`, in the order chosen.
    pub heads: Vec<[usize; 2]>,
    /// How they were chosen, in words.
    pub selection: String,
    /// Checksum of `token_pairs.json` and `token_pairs.npy` ([`checksum`]).
    pub checksums: BTreeMap<String, String>,
}

/// Token pairs to store in an entry ([`AttnCache::store_with_token_pairs`]), with how they were made.
#[derive(Debug, Clone, Copy)]
pub struct EntryTokenPairs<'a> {
    pub pairs: &'a TokenPairs,
    pub skip_sink: bool,
    pub selection: &'a str,
}

/// `xxh3-128:<32 hex digits>` of `bytes`: the checksum recorded in [`Manifest::checksums`].
pub fn checksum(bytes: &[u8]) -> String {
    format!("xxh3-128:{:032x}", xxhash_rust::xxh3::xxh3_128(bytes))
}

impl Manifest {
    /// First field (in a fixed order) whose cached and requested values differ.
    fn mismatch(&self, key: &CacheKey) -> Option<(&'static str, String, String)> {
        let version = ("format_version", self.format_version.to_string(), CACHE_FORMAT_VERSION.to_string());
        std::iter::once(version)
            .chain(key_fields(&self.key).into_iter().zip(key_fields(key)).map(|((field, a), (_, b))| (field, a, b)))
            .find(|(_, a, b)| a != b)
    }

    /// First field saying how the matrices were made (model, weights, dtype, tokenizer, sentence
    /// and boundary modes, grid) that differs between two entries, as (field, self's, other's).
    /// Entries of different texts agree on all of them when they may be averaged together.
    pub(crate) fn provenance_difference(&self, other: &Manifest) -> Option<(&'static str, String, String)> {
        key_fields(&self.key)
            .into_iter()
            .zip(key_fields(&other.key))
            .filter(|((field, _), _)| !matches!(*field, "text_id" | "n"))
            .map(|((field, a), (_, b))| (field, a, b))
            .find(|(_, a, b)| a != b)
    }
}

fn key_fields(key: &CacheKey) -> [(&'static str, String); 10] {
    [
        ("model", key.model.clone()),
        ("weights_hash", key.weights_hash.clone()),
        ("dtype", key.dtype.clone()),
        ("tokenizer", key.tokenizer.clone()),
        ("sentence_mode", key.sentence_mode.to_string()),
        ("boundary_mode", key.boundary_mode.to_string()),
        ("text_id", key.text_id.clone()),
        ("n", key.n.to_string()),
        ("layers", key.layers.to_string()),
        ("heads", key.heads.to_string()),
    ]
}

/// What [`AttnCache::lookup`] found for a key.
#[derive(Debug)]
pub enum Lookup {
    /// A matching entry whose files passed their checksums.
    Hit(SentenceAttention),
    /// No entry (no `manifest.json`).
    Miss,
    /// An entry made for this key that cannot be trusted: a file failed its checksum, lacks one,
    /// is missing or malformed, the manifest is unreadable, or it predates checksums. The error
    /// names the file and what is wrong. Its matrices are never returned; storing replaces it.
    Untrusted(Error),
}

/// A cache root (upstream's default is `attn_cache` in the working directory).
#[derive(Debug, Clone)]
pub struct AttnCache {
    root: PathBuf,
    strict: bool,
    token_pairs: Option<TokenPairsToStore>,
}

impl AttnCache {
    /// A cache at `root`, not strict (see [`AttnCache::strict`]), storing no token pairs (see
    /// [`AttnCache::with_token_pairs`]).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        AttnCache { root: root.into(), strict: false, token_pairs: None }
    }

    /// Entries filled through this cache ([`super::cached_sentence_attention`]) also store these
    /// token pairs, from the same pass (`None`: none).
    pub fn with_token_pairs(mut self, token_pairs: Option<TokenPairsToStore>) -> Self {
        self.token_pairs = token_pairs;
        self
    }

    /// The token pairs a fill stores, if any.
    pub fn token_pairs_to_store(&self) -> Option<&TokenPairsToStore> {
        self.token_pairs.as_ref()
    }

    /// Strict: an entry that fails verification ([`Lookup::Untrusted`]) makes [`AttnCache::load`]
    /// an error instead of a miss that is recomputed.
    pub fn strict(mut self, strict: bool) -> Self {
        self.strict = strict;
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/<model>/`, the name made a safe path component (`/` becomes `--`, leading dots
    /// `_`; [`crate::io::path_component`]).
    pub fn model_dir(&self, model: &str) -> PathBuf {
        self.root.join(io::path_component(model))
    }

    /// `<root>/<model>/<text_id>/` (both made safe path components).
    pub fn entry_dir(&self, model: &str, text_id: &str) -> PathBuf {
        self.model_dir(model).join(io::path_component(text_id))
    }

    /// The cached matrices for `key`: `Ok(None)` when there is no complete entry (no manifest)
    /// or the entry fails verification (a note on stderr says which file and why; the caller
    /// recomputes it), [`Error::CacheMismatch`] when the entry was made with other settings.
    /// When [strict](AttnCache::strict), an entry failing verification is an error.
    pub fn load(&self, key: &CacheKey) -> Result<Option<SentenceAttention>> {
        match self.lookup(key)? {
            Lookup::Hit(attention) => Ok(Some(attention)),
            Lookup::Miss => Ok(None),
            Lookup::Untrusted(error) if self.strict => Err(error.context(format!(
                "strict cache (THOUGHTSCOPE_STRICT_CACHE=1): entry {} is not served",
                self.entry_dir(&key.model, &key.text_id).display()
            ))),
            Lookup::Untrusted(error) => {
                eprintln!("note: cache entry not used, recomputing it: {error}");
                Ok(None)
            }
        }
    }

    /// What the cache holds for `key` ([`Lookup`]), verifying every data file's checksum;
    /// [`Error::CacheMismatch`] when the entry was made with other settings.
    pub fn lookup(&self, key: &CacheKey) -> Result<Lookup> {
        check_text_id(&key.text_id)?;
        let dir = self.entry_dir(&key.model, &key.text_id);
        let manifest_path = dir.join(MANIFEST_FILE);
        if !manifest_path.exists() {
            return Ok(Lookup::Miss);
        }
        let manifest = match read_manifest(&manifest_path) {
            Ok(manifest) => manifest,
            Err(error) => return Ok(Lookup::Untrusted(error)),
        };
        if manifest.format_version < CACHE_FORMAT_VERSION {
            return Ok(Lookup::Untrusted(older_format(&manifest_path, &manifest)));
        }
        if let Some((field, cached, requested)) = manifest.mismatch(key) {
            return Err(Error::CacheMismatch { path: dir, field: field.into(), cached, requested });
        }
        Ok(match read_with_manifest(&dir, &manifest) {
            Ok(attention) => Lookup::Hit(attention),
            Err(error) => Lookup::Untrusted(error),
        })
    }

    /// Store `attention` under `key` (replacing any entry there) and return the entry directory.
    pub fn store(
        &self,
        key: &CacheKey,
        attention: &SentenceAttention,
        layout: CacheLayout,
        n_tokens: Option<usize>,
    ) -> Result<PathBuf> {
        self.store_with_token_pairs(key, attention, layout, n_tokens, None)
    }

    /// [`AttnCache::store`], with the token pairs of the same pass when given (written into the
    /// same temporary directory, so the entry appears whole or not at all).
    pub fn store_with_token_pairs(
        &self,
        key: &CacheKey,
        attention: &SentenceAttention,
        layout: CacheLayout,
        n_tokens: Option<usize>,
        token_pairs: Option<EntryTokenPairs<'_>>,
    ) -> Result<PathBuf> {
        if let Some(stored) = &token_pairs {
            check_pairs_fit_key(stored.pairs, key)?;
        }
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
        check_text_id(&key.text_id)?;
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
        remove_stale_temporaries(&parent, STALE_TEMPORARY_AGE);
        let unique = format!("{}-{}", std::process::id(), unique_suffix());
        let tmp = parent.join(format!(".{}.tmp-{unique}", key.text_id));
        let built = (|| -> Result<()> {
            std::fs::create_dir(&tmp).map_err(|e| Error::io(&tmp, e))?;
            let checksums = write_data(&tmp, attention, layout)?;
            let token_pairs = token_pairs.map(|stored| write_token_pairs(&tmp, stored)).transpose()?;
            let manifest = Manifest {
                format_version: CACHE_FORMAT_VERSION,
                key: key.clone(),
                layout,
                n_tokens,
                created_by: format!("thoughtscope {}", env!("CARGO_PKG_VERSION")),
                checksums,
                token_pairs,
            };
            let json = serde_json::to_vec_pretty(&manifest)?;
            io::write_atomic(&tmp.join(MANIFEST_FILE), &json)
        })();
        if let Err(e) = built {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        place_entry(&tmp, &dir, &parent, &key.text_id, &unique)?;
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
        check_text_id(text_id).ok()?;
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

/// A `text_id` must be a plain file name: it is the entry's directory under the model directory.
fn check_text_id(text_id: &str) -> Result<()> {
    if io::path_component(text_id) != text_id {
        return Err(Error::invalid(format!(
            "cache key field `text_id` = {text_id:?} is not a plain file name (no path separators, NUL, \
             control characters or leading dot)"
        )));
    }
    Ok(())
}

fn older_format(manifest_path: &Path, manifest: &Manifest) -> Error {
    Error::format(
        manifest_path,
        format!(
            "field `format_version` is {}: entries before version {CACHE_FORMAT_VERSION} have no checksums, so their data cannot be verified",
            manifest.format_version
        ),
    )
}

fn dir_is_empty(dir: &Path) -> Result<bool> {
    let mut entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    Ok(entries.next().is_none())
}

/// Move the finished directory `tmp` to `dir`, moving any entry already there out of the way.
///
/// Tasks of a batch job on one shared filesystem may store the same key at once; each step below
/// can then find `dir` placed or removed by another writer between two renames. Every such
/// collision means another writer made progress, so the swap is retried (a bounded number of
/// times, with a short jittered pause). The key fixes the content, so whichever complete entry is
/// in place at the end is the one this call would have written.
fn place_entry(tmp: &Path, dir: &Path, parent: &Path, text_id: &str, unique: &str) -> Result<()> {
    const ATTEMPTS: u32 = 200;
    let old = parent.join(format!(".{text_id}.old-{unique}"));
    let mut last_error = None;
    let mut failures_without_collision = 0;
    for attempt in 0..ATTEMPTS {
        match std::fs::rename(tmp, dir) {
            Ok(()) => return Ok(()),
            Err(error) if dir.exists() => {
                // An entry is there: move it aside (it may vanish first: another writer moved it).
                if std::fs::rename(dir, &old).is_ok() {
                    let _ = std::fs::remove_dir_all(&old);
                }
                failures_without_collision = 0;
                last_error = Some(error);
            }
            Err(error) => {
                // `dir` is absent and the rename still failed: a real error (permissions, full
                // disk) unless another writer's swap was in flight; that passes on a retry.
                failures_without_collision += 1;
                if !tmp.exists() || failures_without_collision > 3 {
                    let _ = std::fs::remove_dir_all(tmp);
                    return Err(Error::io(dir, error));
                }
                last_error = Some(error);
            }
        }
        std::thread::sleep(Duration::from_micros(200 + (unique_suffix() as u64 * 7919 + attempt as u64 * 104_729) % 2_000));
    }
    let _ = std::fs::remove_dir_all(tmp);
    if dir.join(MANIFEST_FILE).exists() {
        return Ok(());
    }
    Err(Error::io(dir, last_error.unwrap_or_else(|| std::io::Error::other("could not place the entry"))))
}

fn unique_suffix() -> usize {
    static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Whether `name` is one of [`AttnCache::store`]'s temporary directories
/// (`.<text_id>.tmp-<pid>-<n>` while building, `.<text_id>.old-<pid>-<n>` while swapping).
pub(crate) fn is_temporary_name(name: &str) -> bool {
    name.starts_with('.') && (name.contains(".tmp-") || name.contains(".old-"))
}

/// Remove the temporary directories in `model_dir` last modified more than `age` ago: left by
/// runs killed while storing (a live store finishes within seconds of creating one). Best
/// effort, with one line on stderr when something was removed.
pub(crate) fn remove_stale_temporaries(model_dir: &Path, age: Duration) -> usize {
    let Ok(entries) = std::fs::read_dir(model_dir) else { return 0 };
    let mut removed = 0;
    for entry in entries.filter_map(|e| e.ok()) {
        if !is_temporary_name(&entry.file_name().to_string_lossy()) {
            continue;
        }
        let Ok(metadata) = entry.metadata() else { continue };
        let old = metadata.modified().ok().and_then(|m| m.elapsed().ok()).is_some_and(|elapsed| elapsed >= age);
        if metadata.is_dir() && old && std::fs::remove_dir_all(entry.path()).is_ok() {
            removed += 1;
        }
    }
    if removed > 0 {
        eprintln!(
            "note: removed {removed} temporary director{} left by interrupted runs in {}",
            if removed == 1 { "y" } else { "ies" },
            model_dir.display()
        );
    }
    removed
}

/// Write the data files of `layout` into `dir`; returns their checksums by file name.
fn write_data(dir: &Path, attention: &SentenceAttention, layout: CacheLayout) -> Result<BTreeMap<String, String>> {
    let (layers, heads, n) = (attention.layers(), attention.heads(), attention.n());
    let mut checksums = BTreeMap::new();
    let mut write = |name: String, shape: &[usize], values: &[f32]| -> Result<()> {
        let bytes = npy::encode_f32(shape, values)?;
        io::write_atomic(dir.join(&name), &bytes)?;
        checksums.insert(name, checksum(&bytes));
        Ok(())
    };
    match layout {
        CacheLayout::Native => write(NATIVE_FILE.to_string(), &[layers, heads, n, n], attention.data())?,
        CacheLayout::Upstream => {
            for l in 0..layers {
                for h in 0..heads {
                    write(format!("{l}_{h}.npy"), &[n, n], attention.matrix(l, h))?;
                }
            }
        }
    }
    Ok(checksums)
}

/// Read and parse an entry's `manifest.json`.
pub(crate) fn read_manifest(path: &Path) -> Result<Manifest> {
    let text = io::read_text_bounded(path, io::INPUT_LIMIT)?;
    serde_json::from_str(&text).map_err(|e| Error::format(path, format!("invalid cache manifest: {e}")))
}

/// The data files of an entry, in reading order, as the manifest's layout and grid name them.
/// Their number must match the manifest's checksums before any name is made, so a manifest
/// claiming a huge grid costs nothing.
fn data_file_names(manifest_path: &Path, manifest: &Manifest) -> Result<Vec<String>> {
    let key = &manifest.key;
    // An entry always holds at least one matrix: a zero here would make an empty grid that needs
    // no file and no checksum, read as a valid (empty) result (found by the fuzzer).
    for (field, value) in [("layers", key.layers), ("heads", key.heads), ("n", key.n)] {
        if value == 0 {
            return Err(Error::format(manifest_path, format!("field `{field}` is 0: an entry holds at least one matrix")));
        }
    }
    let count = match manifest.layout {
        CacheLayout::Native => Some(1),
        CacheLayout::Upstream => key.layers.checked_mul(key.heads),
    };
    if count != Some(manifest.checksums.len()) {
        return Err(Error::format(
            manifest_path,
            format!(
                "field `checksums` lists {} files; the {} layout of {} layers × {} heads has {}",
                manifest.checksums.len(),
                match manifest.layout {
                    CacheLayout::Native => "native",
                    CacheLayout::Upstream => "upstream",
                },
                key.layers,
                key.heads,
                count.map_or_else(|| "more than can be counted".to_string(), |c| c.to_string())
            ),
        ));
    }
    Ok(match manifest.layout {
        CacheLayout::Native => vec![NATIVE_FILE.to_string()],
        CacheLayout::Upstream => {
            (0..key.layers).flat_map(|l| (0..key.heads).map(move |h| format!("{l}_{h}.npy"))).collect()
        }
    })
}

/// The bytes of `dir/name` after checking them against the manifest's checksum.
fn read_verified(dir: &Path, name: &str, manifest: &Manifest) -> Result<Vec<u8>> {
    read_verified_against(dir, name, &manifest.checksums, "checksums")
}

/// The bytes of `dir/name` after checking them against `checksums` (the manifest's field `field`).
fn read_verified_against(dir: &Path, name: &str, checksums: &BTreeMap<String, String>, field: &str) -> Result<Vec<u8>> {
    let path = dir.join(name);
    let expected = checksums.get(name).ok_or_else(|| {
        Error::format(&path, format!("no checksum for this file in the manifest's field `{field}` ({MANIFEST_FILE})"))
    })?;
    let bytes = io::read_bounded(&path, io::INPUT_LIMIT)?;
    let actual = checksum(&bytes);
    if &actual != expected {
        return Err(Error::format(
            &path,
            format!(
                "checksum mismatch: the manifest's field `{field}` records {expected}, the file hashes to {actual} \
                 (changed or damaged since it was written)"
            ),
        ));
    }
    Ok(bytes)
}

/// Float32 data of a verified `.npy` file of shape `expected`.
fn decode_f32(path: &Path, bytes: &[u8], expected: &[usize]) -> Result<Vec<f32>> {
    let array = npy::decode(bytes).map_err(|what| Error::format(path, what))?;
    if array.shape != expected {
        return Err(Error::format(path, format!("shape {:?}, the manifest says {expected:?}", array.shape)));
    }
    match array.data {
        npy::NpyData::F32(values) => Ok(values),
        npy::NpyData::F64(_) => Err(Error::format(path, "float64 data; cache entries are float32 (<f4)")),
    }
}

/// The matrices of an entry read through its manifest: exactly the files its layout and grid
/// name, each verified against its checksum before it is decoded.
fn read_with_manifest(dir: &Path, manifest: &Manifest) -> Result<SentenceAttention> {
    let key = &manifest.key;
    let names = data_file_names(&dir.join(MANIFEST_FILE), manifest)?;
    let shape = match manifest.layout {
        CacheLayout::Native => vec![key.layers, key.heads, key.n, key.n],
        CacheLayout::Upstream => vec![key.n, key.n],
    };
    // The token pairs are part of the entry: they are verified with it even when not read.
    if let Some(record) = &manifest.token_pairs {
        for name in token_pair_file_names(&dir.join(MANIFEST_FILE), record)? {
            read_verified_against(dir, name, &record.checksums, "token_pairs.checksums")?;
        }
    }
    let mut data = Vec::new();
    for name in &names {
        let bytes = read_verified(dir, name, manifest)?;
        let values = decode_f32(&dir.join(name), &bytes, &shape)?;
        if data.is_empty() {
            data = values;
        } else {
            data.extend_from_slice(&values);
        }
    }
    SentenceAttention::new(key.layers, key.heads, key.n, data).map_err(|e| e.context(format!("reading {}", dir.display())))
}

/// Read an entry directory: through its manifest when it has one (every data file verified
/// against its checksum; an entry from before checksums is refused), otherwise as an upstream
/// (Python-made) directory of `<l>_<h>.npy` files, which has nothing to verify against.
pub fn read_entry_dir(dir: &Path) -> Result<SentenceAttention> {
    let manifest_path = dir.join(MANIFEST_FILE);
    if manifest_path.exists() {
        let manifest = read_manifest(&manifest_path)?;
        if manifest.format_version < CACHE_FORMAT_VERSION {
            return Err(older_format(&manifest_path, &manifest).context("entry not read (recompute it with this version)"));
        }
        if manifest.format_version > CACHE_FORMAT_VERSION {
            return Err(Error::format(
                &manifest_path,
                format!(
                    "field `format_version` is {}, newer than this thoughtscope's {CACHE_FORMAT_VERSION}",
                    manifest.format_version
                ),
            ));
        }
        read_with_manifest(dir, &manifest)
    } else {
        read_upstream_dir(dir)
    }
}

/// Read every `<l>_<h>.npy` in `dir` (no manifest needed). The files must form a complete
/// `layers × heads` grid of square matrices of one size. The grid is sized by the files present,
/// never by the numbers in their names: an index not below the number of head files is an error
/// naming the file. There is no checksum to verify (the Python tool writes none).
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
    let count = files.len();
    if let Some((l, h, path)) = files.iter().find(|(l, h, _)| *l >= count || *h >= count) {
        return Err(Error::format(
            path,
            format!(
                "layer {l}, head {h}: the directory holds only {count} `<layer>_<head>.npy` files, so every index must be below {count}"
            ),
        ));
    }
    files.sort();
    if let Some(pair) = files.windows(2).find(|pair| (pair[0].0, pair[0].1) == (pair[1].0, pair[1].1)) {
        return Err(Error::format(
            &pair[1].2,
            format!("names layer {}, head {} again, as {} does", pair[0].0, pair[0].1, pair[0].2.display()),
        ));
    }
    // Indices are below `count`, so the grid has at most count² cells and the first gap in the
    // sorted files is found within `count` steps.
    let layers = files.iter().map(|f| f.0).max().expect("non-empty") + 1;
    let heads = files.iter().map(|f| f.1).max().expect("non-empty") + 1;
    if let Some(index) = (0..layers * heads).find(|&i| files.get(i).is_none_or(|f| (f.0, f.1) != (i / heads, i % heads))) {
        return Err(Error::format(
            dir,
            format!("missing {}_{}.npy (grid is {layers} layers × {heads} heads)", index / heads, index % heads),
        ));
    }
    let mut n = None;
    let mut data = Vec::new();
    for (_, _, path) in &files {
        let array = npy::read(path)?;
        let size = match array.shape.as_slice() {
            [a, b] if a == b => *a,
            shape => return Err(Error::format(path, format!("shape {shape:?} is not a square matrix"))),
        };
        match n {
            None => {
                n = Some(size);
                data.reserve(count * size * size);
            }
            Some(n) if n != size => {
                return Err(Error::format(path, format!("{size}×{size} matrix, other heads are {n}×{n}")));
            }
            Some(_) => {}
        }
        let start = data.len();
        data.extend(array.to_f32());
        check_upstream_values(path, &data[start..])?;
    }
    SentenceAttention::new(layers, heads, n.expect("at least one file"), data)
}

/// A head of a thought-anchors entry holds attention averages, which are finite: an infinity came
/// from a broken run. NaN is read as it is, as upstream reads it (a sentence without tokens, or a
/// head NaN everywhere, as upstream's own caches can hold): its vertical scores are NaN, and a
/// rollout whose used heads all give NaN says so in its status instead of scoring 0.
fn check_upstream_values(path: &Path, values: &[f32]) -> Result<()> {
    if let Some(bad) = values.iter().find(|v| v.is_infinite()) {
        return Err(Error::format(path, format!("holds {bad}: attention averages are finite; the cache entry is corrupt")));
    }
    Ok(())
}

/// One head's matrix `<dir>/<layer>_<head>.npy` of a thought-anchors entry: float32 (`<f4`, as
/// upstream's `np.save` writes it) of shape `[n, n]`; anything else is an error naming the file.
/// Such an entry has no manifest, so there is no checksum to verify the file against.
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
        npy::NpyData::F32(values) => {
            check_upstream_values(&path, &values)?;
            Ok(values)
        }
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

/// `token_pairs.json`: every block's place and size, the sentences' token ranges and first tokens;
/// the values are in `token_pairs.npy`, block after block (head by head, sentence by sentence,
/// each `rows × cols` row-major).
#[derive(Debug, Serialize, Deserialize)]
struct TokenPairsFile {
    max_tokens: usize,
    ranges: Vec<[usize; 2]>,
    tokens: Vec<Vec<String>>,
    heads: Vec<TokenPairsFileHead>,
}

#[derive(Debug, Serialize, Deserialize)]
struct TokenPairsFileHead {
    layer: usize,
    head: usize,
    /// Per sentence; `null`: no pair.
    pairs: Vec<Option<TokenPairsFilePair>>,
}

#[derive(Debug, Serialize, Deserialize)]
struct TokenPairsFilePair {
    source: usize,
    /// `null` when not finite (JSON has no NaN).
    mean: Option<f64>,
    rows: usize,
    cols: usize,
}

/// The token pairs must describe the key's sentences and grid.
fn check_pairs_fit_key(pairs: &TokenPairs, key: &CacheKey) -> Result<()> {
    if pairs.ranges.len() != key.n || pairs.tokens.len() != key.n {
        return Err(Error::invalid(format!(
            "cache store: token pairs of {} sentences ({} token lists) for an entry of {}",
            pairs.ranges.len(),
            pairs.tokens.len(),
            key.n
        )));
    }
    if let Some(head) = pairs.heads.iter().find(|h| h.layer >= key.layers || h.head >= key.heads || h.pairs.len() != key.n) {
        return Err(Error::invalid(format!(
            "cache store: token pairs of head {}.{} ({} sentences) outside the entry's {} layers × {} heads of {} sentences",
            head.layer,
            head.head,
            head.pairs.len(),
            key.layers,
            key.heads,
            key.n
        )));
    }
    Ok(())
}

/// Write the two token-pair files into `dir`; the manifest's record of them.
fn write_token_pairs(dir: &Path, stored: EntryTokenPairs<'_>) -> Result<TokenPairsRecord> {
    let pairs = stored.pairs;
    let file = TokenPairsFile {
        max_tokens: pairs.max_tokens,
        ranges: pairs.ranges.iter().map(|&(s, e)| [s, e]).collect(),
        tokens: pairs.tokens.clone(),
        heads: pairs
            .heads
            .iter()
            .map(|head| TokenPairsFileHead {
                layer: head.layer,
                head: head.head,
                pairs: head
                    .pairs
                    .iter()
                    .map(|p| {
                        p.as_ref().map(|p| TokenPairsFilePair { source: p.source, mean: p.mean.is_finite().then_some(p.mean), rows: p.rows, cols: p.cols })
                    })
                    .collect(),
            })
            .collect(),
    };
    let values: Vec<f32> = pairs.heads.iter().flat_map(|h| h.pairs.iter().flatten()).flat_map(|p| p.values.iter().copied()).collect();
    let json = serde_json::to_vec(&file)?;
    let npy_bytes = npy::encode_f32(&[values.len()], &values)?;
    io::write_atomic(dir.join(TOKEN_PAIRS_FILE), &json)?;
    io::write_atomic(dir.join(TOKEN_PAIR_VALUES_FILE), &npy_bytes)?;
    Ok(TokenPairsRecord {
        max_tokens: pairs.max_tokens,
        skip_sink: stored.skip_sink,
        heads: pairs.heads.iter().map(|h| [h.layer, h.head]).collect(),
        selection: stored.selection.to_string(),
        checksums: BTreeMap::from([
            (TOKEN_PAIRS_FILE.to_string(), checksum(&json)),
            (TOKEN_PAIR_VALUES_FILE.to_string(), checksum(&npy_bytes)),
        ]),
    })
}

/// The two file names a record must list checksums for (nothing else: a manifest names no other
/// path to read).
fn token_pair_file_names(manifest_path: &Path, record: &TokenPairsRecord) -> Result<[&'static str; 2]> {
    let names = [TOKEN_PAIRS_FILE, TOKEN_PAIR_VALUES_FILE];
    if record.checksums.len() != names.len() || names.iter().any(|n| !record.checksums.contains_key(*n)) {
        return Err(Error::format(
            manifest_path,
            format!(
                "field `token_pairs.checksums` lists {:?}; it must list exactly {TOKEN_PAIRS_FILE} and {TOKEN_PAIR_VALUES_FILE}",
                record.checksums.keys().collect::<Vec<_>>()
            ),
        ));
    }
    Ok(names)
}

/// The token pairs stored in the entry `dir` with their record: `None` for an entry without
/// them (written before they were stored, or by a fill that stored none) and for a
/// thought-anchors entry (no manifest). Every file of the entry is verified against its
/// checksum, and the pairs against the manifest (sentences, grid, heads, tokens kept) and the
/// ranges; anything that does not fit is an error naming the file and the field.
pub fn read_entry_token_pairs(dir: &Path) -> Result<Option<(TokenPairs, TokenPairsRecord)>> {
    let manifest_path = dir.join(MANIFEST_FILE);
    if !manifest_path.exists() {
        return Ok(None);
    }
    let manifest = read_manifest(&manifest_path)?;
    if manifest.format_version != CACHE_FORMAT_VERSION {
        return Err(Error::format(
            &manifest_path,
            format!("field `format_version` is {}, this thoughtscope reads {CACHE_FORMAT_VERSION}", manifest.format_version),
        ));
    }
    let Some(record) = manifest.token_pairs.clone() else { return Ok(None) };
    token_pair_file_names(&manifest_path, &record)?;
    let json = read_verified_against(dir, TOKEN_PAIRS_FILE, &record.checksums, "token_pairs.checksums")?;
    let npy_bytes = read_verified_against(dir, TOKEN_PAIR_VALUES_FILE, &record.checksums, "token_pairs.checksums")?;
    let json_path = dir.join(TOKEN_PAIRS_FILE);
    let file: TokenPairsFile = serde_json::from_slice(&json).map_err(|e| Error::format(&json_path, format!("invalid token pairs: {e}")))?;
    let values_path = dir.join(TOKEN_PAIR_VALUES_FILE);
    let array = npy::decode(&npy_bytes).map_err(|what| Error::format(&values_path, what))?;
    let values = match (array.shape.as_slice(), array.data) {
        ([_], npy::NpyData::F32(values)) => values,
        (shape, _) => return Err(Error::format(&values_path, format!("shape {shape:?} and dtype: expected one float32 (<f4) dimension"))),
    };
    let pairs = pairs_from_file(&json_path, &values_path, file, values, &record, &manifest.key)?;
    Ok(Some((pairs, record)))
}

/// Check a token-pair file against its record, the key and itself; the pairs it holds.
fn pairs_from_file(
    json_path: &Path,
    values_path: &Path,
    file: TokenPairsFile,
    values: Vec<f32>,
    record: &TokenPairsRecord,
    key: &CacheKey,
) -> Result<TokenPairs> {
    let bad = |field: &str, what: String| Error::format(json_path, format!("field `{field}`: {what}"));
    let max = file.max_tokens;
    if max == 0 || max != record.max_tokens {
        return Err(bad("max_tokens", format!("{max}, the manifest's `token_pairs.max_tokens` is {}", record.max_tokens)));
    }
    let n = key.n;
    if file.ranges.len() != n || file.tokens.len() != n {
        return Err(bad("ranges", format!("{} ranges and {} token lists for the entry's {n} sentences", file.ranges.len(), file.tokens.len())));
    }
    if let Some((i, r)) = file.ranges.iter().enumerate().find(|(_, r)| r[0] > r[1]) {
        return Err(bad("ranges", format!("sentence {i}: range {}..{} ends before it starts", r[0], r[1])));
    }
    let length = |i: usize| file.ranges[i][1] - file.ranges[i][0];
    if let Some(i) = (0..n).find(|&i| file.tokens[i].len() != length(i).min(max)) {
        return Err(bad("tokens", format!("sentence {i}: {} tokens, its range keeps {}", file.tokens[i].len(), length(i).min(max))));
    }
    let heads: Vec<[usize; 2]> = file.heads.iter().map(|h| [h.layer, h.head]).collect();
    if heads != record.heads {
        return Err(bad("heads", format!("{heads:?}, the manifest's `token_pairs.heads` is {:?}", record.heads)));
    }
    let mut at = 0usize;
    let mut out = Vec::with_capacity(file.heads.len());
    for (k, head) in file.heads.into_iter().enumerate() {
        if head.layer >= key.layers || head.head >= key.heads || head.pairs.len() != n {
            return Err(bad(
                &format!("heads[{k}]"),
                format!(
                    "head {}.{} with {} pairs; the entry has {} layers × {} heads and {n} sentences",
                    head.layer,
                    head.head,
                    head.pairs.len(),
                    key.layers,
                    key.heads
                ),
            ));
        }
        let mut pairs = Vec::with_capacity(n);
        for (i, pair) in head.pairs.into_iter().enumerate() {
            let Some(pair) = pair else {
                pairs.push(None);
                continue;
            };
            let field = format!("heads[{k}].pairs[{i}]");
            if pair.source >= i || pair.rows != length(i).min(max) || pair.cols != length(pair.source).min(max) {
                return Err(bad(
                    &field,
                    format!(
                        "source {} with {} × {} tokens; a source is an earlier sentence and the block its first {max} × {max} tokens",
                        pair.source, pair.rows, pair.cols
                    ),
                ));
            }
            let size = pair.rows.checked_mul(pair.cols).and_then(|size| size.checked_add(at));
            let Some(block) = size.and_then(|end| values.get(at..end)) else {
                return Err(Error::format(
                    values_path,
                    format!("{} values; the blocks of {} need more", values.len(), json_path.display()),
                ));
            };
            if let Some(v) = block.iter().find(|v| !v.is_finite() || **v < 0.0) {
                return Err(Error::format(values_path, format!("block {field} holds {v}: attention probabilities are finite and non-negative")));
            }
            at += block.len();
            pairs.push(Some(TokenPair { source: pair.source, mean: pair.mean.unwrap_or(f64::NAN), rows: pair.rows, cols: pair.cols, values: block.to_vec() }));
        }
        out.push(HeadTokenPairs { layer: head.layer, head: head.head, pairs });
    }
    if at != values.len() {
        return Err(Error::format(values_path, format!("{} values; the blocks of {} hold {at}", values.len(), json_path.display())));
    }
    Ok(TokenPairs {
        max_tokens: max,
        ranges: file.ranges.iter().map(|r| (r[0], r[1])).collect(),
        heads: out,
        tokens: file.tokens,
    })
}

/// Whether the entry `dir` of ours records token pairs (its manifest's `token_pairs`).
pub(crate) fn entry_has_token_pairs(dir: &Path) -> bool {
    read_manifest(&dir.join(MANIFEST_FILE)).is_ok_and(|m| m.token_pairs.is_some())
}
