//! Weights from an HF model directory (safetensors, sharded with an index), from the local HF hub
//! cache (offline), or from GGUF (renamed to HF names, and for `llama` GGUFs with llama.cpp's Q/K
//! row permutation undone so one RoPE path serves all). At
//! [`WeightPrecision::Stored`] the weight matrices stay as stored (GGUF blocks, memory-mapped
//! bf16/f16: [`Checkpoint::kept`]); at [`WeightPrecision::F32`] everything is converted at load.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use candle_core::quantized::{gguf_file, GgmlDType};
use candle_core::{Device, Tensor};

use super::config::Config;
use super::stored::{ggml_name, permute_quantized_rows, MappedHalf, StoredMatrix, WeightPrecision, KEPT_GGUF_TYPES};
use super::tokenizer::Tokenizer;
use crate::{Error, Result};

/// Everything read from a checkpoint.
pub struct Checkpoint {
    pub config: Config,
    /// Tensors by HF name, in the file's dtype (f32 after GGUF dequantisation).
    pub tensors: HashMap<String, Tensor>,
    /// Weight matrices kept as stored, by HF name, at [`WeightPrecision::Stored`]: GGUF blocks
    /// ([`load_gguf_with`]) and memory-mapped bf16/f16 safetensors ([`load_hf_dir_with`]); empty
    /// otherwise.
    pub kept: HashMap<String, StoredMatrix>,
    pub tokenizer: Option<Tokenizer>,
    /// The files the weights were read from, in order (what [`weights_hash`] hashes).
    pub files: Vec<PathBuf>,
}

/// Files holding the weights of an HF model directory: the index's shards, `model.safetensors`,
/// or every `*.safetensors` file.
pub(crate) fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    if index.exists() {
        let text = std::fs::read_to_string(&index).map_err(|e| Error::io(&index, e))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| Error::format(&index, format!("invalid JSON: {e}")))?;
        let map = json
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| Error::format(&index, "missing object field `weight_map`"))?;
        let mut files = BTreeSet::new();
        for (tensor, file) in map {
            // Shards are files beside the index: a name like `/dev/zero` or `../x` would read
            // (or endlessly allocate for) whatever it points at.
            match file.as_str() {
                Some(name) if crate::io::path_component(name) == name => files.insert(name),
                _ => {
                    return Err(Error::format(
                        &index,
                        format!("field `weight_map.{tensor}`: {file} is not the name of a file in this directory"),
                    ))
                }
            };
        }
        if files.is_empty() {
            return Err(Error::format(&index, "field `weight_map` names no files"));
        }
        return Ok(files.into_iter().map(|f| dir.join(f)).collect());
    }
    let single = dir.join("model.safetensors");
    if single.exists() {
        return Ok(vec![single]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(Error::format(dir, "no model.safetensors, index or *.safetensors file"));
    }
    Ok(files)
}

/// Load an HF model directory: `config.json`, safetensors weights (in their dtype),
/// `tokenizer.json` if present.
pub fn load_hf_dir(dir: &Path) -> Result<Checkpoint> {
    load_hf_dir_with(dir, WeightPrecision::F32)
}

/// [`load_hf_dir`]; at [`WeightPrecision::Stored`] the bf16/f16 weight matrices are not read but
/// memory-mapped ([`Checkpoint::kept`]): the file's pages are their memory, shared by every
/// process that maps the file and never copied.
pub fn load_hf_dir_with(dir: &Path, precision: WeightPrecision) -> Result<Checkpoint> {
    let config = Config::from_json_file(&dir.join("config.json"))?;
    let files = safetensors_files(dir)?;
    let mut tensors = HashMap::new();
    let mut kept = HashMap::new();
    for file in &files {
        if precision == WeightPrecision::Stored {
            let mapped = MappedHalf::map_file(file)?;
            // SAFETY: a read-only map, as `candle_core::safetensors::load` makes internally.
            let loaded = unsafe { candle_core::safetensors::MmapedSafetensors::new(file) }
                .map_err(|e| Error::format(file, format!("reading safetensors: {e}")))?;
            for (name, _) in loaded.tensors() {
                match mapped.get(&name) {
                    Some(matrix) => {
                        kept.insert(name, StoredMatrix::Mapped(matrix.clone()));
                    }
                    None => {
                        let t = loaded
                            .load(&name, &Device::Cpu)
                            .map_err(|e| Error::format(file, format!("tensor `{name}`: {e}")))?;
                        tensors.insert(name, t);
                    }
                }
            }
            continue;
        }
        let loaded = candle_core::safetensors::load(file, &Device::Cpu)
            .map_err(|e| Error::format(file, format!("reading safetensors: {e}")))?;
        tensors.extend(loaded);
    }
    let tokenizer_path = dir.join("tokenizer.json");
    let tokenizer = if tokenizer_path.exists() { Some(Tokenizer::from_file(&tokenizer_path)?) } else { None };
    Ok(Checkpoint { config, tensors, kept, tokenizer, files })
}

/// Resolve an HF hub id (`org/name`) to its snapshot directory in the local hub cache
/// (`$HF_HOME/hub` or `~/.cache/huggingface/hub`), without any network access.
pub fn hub_snapshot_dir(model_id: &str) -> Result<PathBuf> {
    hub_snapshot_dir_in(&hf_hub::Cache::from_env(), model_id)
}

/// [`hub_snapshot_dir`] for an explicit hub cache root (`…/hub`).
pub fn hub_snapshot_dir_in(cache: &hf_hub::Cache, model_id: &str) -> Result<PathBuf> {
    let repo = cache.model(model_id.to_string());
    let config = repo.get("config.json").ok_or_else(|| {
        Error::invalid(format!(
            "model `{model_id}` is not in the local HF hub cache {} (no network access at run time: download it beforehand)",
            cache.path().display()
        ))
    })?;
    Ok(config.parent().map(Path::to_path_buf).unwrap_or_default())
}

/// HF name of a GGUF tensor (`blk.3.attn_q.weight` → `model.layers.3.self_attn.q_proj.weight`).
fn hf_name(gguf: &str) -> Option<String> {
    let simple = match gguf {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(s) = simple {
        return Some(s.to_string());
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, rest) = rest.split_once('.')?;
    let (module, kind) = rest.rsplit_once('.')?;
    let hf = match module {
        "attn_norm" => "input_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "attn_q_norm" => "self_attn.q_norm",
        "attn_k_norm" => "self_attn.k_norm",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf}.{kind}"))
}

/// The source row of each row of [`unpermute_rows`]' result, for moving quantised rows.
fn unpermuted_row_order(rows: usize, n_head: usize) -> Result<Vec<usize>> {
    if n_head == 0 || rows % n_head != 0 || (rows / n_head) % 2 != 0 {
        return Err(Error::invalid(format!("{rows} rows do not split into {n_head} heads of an even size")));
    }
    let (head_dim, pairs) = (rows / n_head, rows / n_head / 2);
    let mut order = Vec::with_capacity(rows);
    for head in 0..n_head {
        for half in 0..2 {
            order.extend((0..pairs).map(|pair| head * head_dim + 2 * pair + half));
        }
    }
    Ok(order)
}

/// Undo llama.cpp's `permute(w, n_head)`: rows `(head, pair, 2)` back to `(head, 2, pair)`.
fn unpermute_rows(w: &Tensor, n_head: usize) -> Result<Tensor> {
    let rows = w.dim(0)?;
    if n_head == 0 || rows % n_head != 0 || (rows / n_head) % 2 != 0 {
        return Err(Error::invalid(format!("{rows} rows do not split into {n_head} heads of an even size")));
    }
    let rest: Vec<usize> = w.dims()[1..].to_vec();
    let head_dim = rows / n_head;
    let mut shape = vec![n_head, head_dim / 2, 2];
    shape.extend(&rest);
    Ok(w.reshape(shape)?.transpose(1, 2)?.contiguous()?.reshape(w.shape())?)
}

/// Load a GGUF file: config from metadata, tensors dequantised to f32 under HF names, and the
/// tokenizer from `tokenizer.ggml.*`.
pub fn load_gguf(path: &Path) -> Result<Checkpoint> {
    load_gguf_with(path, WeightPrecision::F32)
}

/// [`load_gguf`], keeping weight matrices quantised (in [`Checkpoint::kept`]) at
/// [`WeightPrecision::Stored`]. Norms and other vectors are always f32.
pub fn load_gguf_with(path: &Path, precision: WeightPrecision) -> Result<Checkpoint> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut reader = BufReader::new(file);
    let content = candle_gguf(path, "not a readable GGUF file", || gguf_file::Content::read(&mut reader))?;
    for (name, info) in &content.tensor_infos {
        check_tensor_info(path, name, info)?;
    }
    let embd = content
        .tensor_infos
        .get("token_embd.weight")
        .ok_or_else(|| Error::format(path, "missing tensor `token_embd.weight`"))?;
    let vocab_rows = *embd
        .shape
        .dims()
        .first()
        .ok_or_else(|| Error::format(path, "tensor `token_embd.weight` has no dimensions (expected [vocab, hidden])"))?;
    let file_len = reader.get_ref().metadata().map_err(|e| Error::io(path, e))?.len();
    check_gguf_layout(path, &content, file_len)?;
    let has_output = content.tensor_infos.contains_key("output.weight");
    let mut config = Config::from_gguf(&content.metadata, path, vocab_rows, has_output)?;
    let is_llama = config.model_type == "llama";
    let (n_head, n_kv) = (config.num_attention_heads, config.num_kv_heads());

    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    let mut tensors = HashMap::new();
    let mut kept = HashMap::new();
    for name in names {
        let what = format!("tensor `{name}`");
        let info = &content.tensor_infos[name];
        let hf = hf_name(name);
        let heads = match hf.as_deref() {
            _ if !is_llama => None,
            Some(h) if h.contains("self_attn.q_proj") => Some(n_head),
            Some(h) if h.contains("self_attn.k_proj") => Some(n_kv),
            _ => None,
        };
        let keep = precision == WeightPrecision::Stored && info.ggml_dtype != GgmlDType::F32 && info.shape.rank() == 2;
        if keep {
            if !KEPT_GGUF_TYPES.contains(&info.ggml_dtype) {
                let kept: Vec<String> = KEPT_GGUF_TYPES.iter().map(|t| ggml_name(*t)).collect();
                return Err(Error::format(
                    path,
                    format!(
                        "{what}: GGUF type {} is not supported for weights (supported: {}); use --weights f32 to convert at load",
                        ggml_name(info.ggml_dtype),
                        kept.join(", ")
                    ),
                ));
            }
            let Some(hf) = hf else {
                return Err(Error::format(path, format!("unexpected tensor `{name}` for architecture {}", config.model_type)));
            };
            let row = info.shape.dims()[1];
            if row % info.ggml_dtype.block_size() != 0 {
                return Err(Error::format(
                    path,
                    format!("{what}: rows of {row} values are not whole {}-value blocks", info.ggml_dtype.block_size()),
                ));
            }
            let q = candle_gguf(path, &what, || content.tensor(&mut reader, name, &Device::Cpu))?;
            let q = match heads {
                Some(heads) => {
                    let order = unpermuted_row_order(q.shape().dims()[0], heads)
                        .map_err(|e| Error::format(path, format!("{what}: {e}")))?;
                    permute_quantized_rows(&q, &order).map_err(|e| Error::format(path, format!("{what}: {e}")))?
                }
                None => q,
            };
            kept.insert(hf, StoredMatrix::Quantized(Arc::new(q)));
            continue;
        }
        let t = candle_gguf(path, &what, || content.tensor(&mut reader, name, &Device::Cpu)?.dequantize(&Device::Cpu))?;
        if name == "rope_freqs.weight" {
            // Llama-3 scaling as per-frequency divisors (llama.cpp); HF derives the same numbers.
            let divisors = t.flatten_all().and_then(|t| t.to_vec1::<f32>());
            config.rope_freq_divisors = Some(divisors.map_err(|e| Error::format(path, format!("{what}: {e}")))?);
            continue;
        }
        let Some(hf) = hf else {
            return Err(Error::format(path, format!("unexpected tensor `{name}` for architecture {}", config.model_type)));
        };
        let t = match heads {
            Some(heads) => unpermute_rows(&t, heads).map_err(|e| Error::format(path, format!("{what}: {e}")))?,
            None => t,
        };
        tensors.insert(hf, t);
    }
    // Again with the divisors of `rope_freqs.weight`, which must be finite and positive too.
    config.validate().map_err(|what| Error::format(path, what))?;
    let tokenizer = Tokenizer::from_gguf(&content.metadata, path)?;
    if let Some(bos) = content.metadata.get("tokenizer.ggml.bos_token_id").and_then(|v| v.to_u32().ok()) {
        config.bos_token_id = Some(bos.into());
    }
    if let Some(eos) = content.metadata.get("tokenizer.ggml.eos_token_id").and_then(|v| v.to_u32().ok()) {
        config.eos_token_id = Some(eos.into());
    }
    Ok(Checkpoint {
        config,
        tensors,
        kept,
        tokenizer: Some(tokenizer),
        files: vec![path.to_path_buf()],
    })
}

/// Run candle's GGUF code on data from `path`, a panic becoming [`Error::Format`] (`what:
/// malformed GGUF: <panic>`). candle 0.11.1 panics on some malformed files instead of returning
/// an error (`general.alignment = 0` divides by zero; dimension products overflow), and a
/// hostile file must not take the process down.
fn candle_gguf<T>(path: &Path, what: &str, read: impl FnOnce() -> candle_core::Result<T>) -> Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(read)) {
        Ok(result) => result.map_err(|e| Error::format(path, format!("{what}: {e}"))),
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "candle panicked".to_string());
            Err(Error::format(path, format!("{what}: malformed GGUF: {message}")))
        }
    }
}

/// The data section of a GGUF as the format lays it out: each tensor at an offset that is a
/// multiple of `general.alignment` (default 32), its bytes (elements / block size × block bytes
/// of its type) inside the file, no two tensors overlapping, and between one tensor's end and the
/// next one's start (or the end of the file) only padding, less than the alignment. A file that
/// breaks this (a wrong offset, a type whose byte size does not fit its slot) would otherwise be
/// read as other bytes than were written: garbage weights with no error. Errors name the tensor.
fn check_gguf_layout(path: &Path, content: &gguf_file::Content, file_len: u64) -> Result<()> {
    let alignment = match content.metadata.get("general.alignment") {
        Some(value) => value.to_u32().map_err(|e| Error::format(path, format!("metadata `general.alignment`: {e}")))? as u64,
        None => 32,
    };
    if alignment == 0 {
        return Err(Error::format(path, "metadata `general.alignment` is 0"));
    }
    let data_start = content.tensor_data_offset;
    let mut spans = Vec::with_capacity(content.tensor_infos.len());
    for (name, info) in &content.tensor_infos {
        let elements = info.shape.elem_count() as u64;
        let (block, block_bytes) = (info.ggml_dtype.block_size() as u64, info.ggml_dtype.type_size() as u64);
        if elements % block != 0 {
            return Err(Error::format(
                path,
                format!("tensor `{name}`: {elements} values are not whole {block}-value blocks of type {}", ggml_name(info.ggml_dtype)),
            ));
        }
        let bytes = elements / block * block_bytes;
        if info.offset % alignment != 0 {
            return Err(Error::format(
                path,
                format!("tensor `{name}`: data offset {} is not a multiple of the alignment {alignment}", info.offset),
            ));
        }
        let end = data_start.checked_add(info.offset).and_then(|start| start.checked_add(bytes));
        match end {
            Some(end) if end <= file_len => {}
            _ => {
                return Err(Error::format(
                    path,
                    format!(
                        "tensor `{name}`: {bytes} bytes of type {} at data offset {} run past the end of the file ({file_len} bytes)",
                        ggml_name(info.ggml_dtype),
                        info.offset
                    ),
                ))
            }
        }
        spans.push((info.offset, bytes, name.as_str(), info.ggml_dtype));
    }
    spans.sort_unstable_by_key(|&(offset, bytes, name, _)| (offset, bytes, name));
    for (i, &(offset, bytes, name, dtype)) in spans.iter().enumerate() {
        let (slot_end, next) = match spans.get(i + 1) {
            Some(&(next_offset, _, next_name, _)) => (next_offset, Some(next_name)),
            None => (file_len - data_start, None),
        };
        let end = offset + bytes;
        if let Some(next_name) = next.filter(|_| end > slot_end) {
            return Err(Error::format(
                path,
                format!("tensor `{name}` (data offset {offset}, {bytes} bytes) overlaps tensor `{next_name}` at data offset {slot_end}"),
            ));
        }
        if slot_end - end >= alignment {
            let before = match next {
                Some(next_name) => format!("tensor `{next_name}` starts at data offset {slot_end}"),
                None => format!("the file ends at data offset {slot_end}"),
            };
            return Err(Error::format(
                path,
                format!(
                    "tensor `{name}`: {bytes} bytes of type {} at data offset {offset}, but {before}: the type's size does not fit its slot",
                    ggml_name(dtype)
                ),
            ));
        }
    }
    Ok(())
}

/// Checks before candle reads a tensor, for what `catch_unwind` cannot turn into an error: a
/// tensor with no elements makes candle build a slice from a dangling, misaligned pointer (an
/// abort under debug assertions, undefined behaviour otherwise). Element counts must not
/// overflow either (real models have neither).
fn check_tensor_info(path: &Path, name: &str, info: &gguf_file::TensorInfo) -> Result<()> {
    let dims = info.shape.dims();
    match dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d)) {
        None => Err(Error::format(path, format!("tensor `{name}`: dimensions {dims:?} overflow the element count"))),
        Some(0) => Err(Error::format(path, format!("tensor `{name}`: dimensions {dims:?} hold no elements"))),
        Some(_) => Ok(()),
    }
}

/// Content hash of weight files: xxh3-128 over each file's size and every byte, combined in
/// order; 32 hex digits. It is part of every cache key, so it reads whole files: a hash of
/// sampled windows let two GGUFs differing elsewhere share cache entries. Each file's hash is
/// remembered in a small memo at `memo` ([`Settings::hash_memo`](crate::Settings::hash_memo);
/// `None`: no memo, every file read) keyed by canonical path, size, mtime, inode and ctime, so a
/// repeat run reads nothing again. The ctime is the one a user cannot set: a file edited in place
/// with its size and mtime restored still misses the memo.
pub fn weights_hash(files: &[PathBuf], memo: Option<&Path>) -> Result<String> {
    let mut remembered = memo.map(read_memo).unwrap_or_default();
    let mut learned = Vec::new();
    let mut combined = xxhash_rust::xxh3::Xxh3Default::new();
    for path in files {
        let identity = FileIdentity::of(path)?;
        let hash = match identity.as_ref().and_then(|id| remembered.files.get(&id.path).filter(|m| m.matches(id))) {
            Some(known) => known.hash.clone(),
            None => {
                let hash = file_hash(path)?;
                if let Some(id) = identity {
                    learned.push((id, hash.clone()));
                }
                hash
            }
        };
        let size = std::fs::metadata(path).map_err(|e| Error::io(path, e))?.len();
        combined.update(&size.to_le_bytes());
        combined.update(hash.as_bytes());
    }
    if let (Some(memo), false) = (memo, learned.is_empty()) {
        // Re-read so entries another process added meanwhile are kept; the memo only saves time,
        // so failing to write it is not an error.
        remembered = read_memo(memo);
        remembered.files.retain(|path, _| Path::new(path).exists());
        for (id, hash) in learned {
            let entry = MemoEntry { size: id.size, mtime_ns: id.mtime_ns, inode: id.inode, ctime_ns: id.ctime_ns, hash };
            remembered.files.insert(id.path.clone(), entry);
        }
        let _ = crate::io::write_json(memo, &remembered);
    }
    Ok(format!("{:032x}", combined.digest128()))
}

/// `xxh3-128:<32 hex digits>` of a whole file, read in 8 MiB pieces.
fn file_hash(path: &Path) -> Result<String> {
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = xxhash_rust::xxh3::Xxh3Default::new();
    let mut buf = vec![0u8; 8 << 20];
    loop {
        let read = file.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if read == 0 {
            break;
        }
        hasher.update(&buf[..read]);
    }
    Ok(format!("xxh3-128:{:032x}", hasher.digest128()))
}

/// What identifies a file's content without reading it, for the memo.
struct FileIdentity {
    /// Canonical path, the memo's key.
    path: String,
    size: u64,
    mtime_ns: u64,
    inode: u64,
    /// Status-change time: set by the kernel on every write, rename or `utimes`, never by a user.
    ctime_ns: u64,
}

impl FileIdentity {
    /// `None` when the file cannot be identified well enough to trust a memo (a path that is not
    /// UTF-8, a modification time before 1970 or unknown).
    fn of(path: &Path) -> Result<Option<FileIdentity>> {
        let metadata = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        let canonical = std::fs::canonicalize(path).map_err(|e| Error::io(path, e))?;
        let mtime_ns = metadata
            .modified()
            .ok()
            .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
            .and_then(|d| u64::try_from(d.as_nanos()).ok());
        #[cfg(unix)]
        let (inode, ctime_ns) = {
            use std::os::unix::fs::MetadataExt;
            let ctime_ns = u64::try_from(metadata.ctime()).ok().map(|s| s * 1_000_000_000 + metadata.ctime_nsec().max(0) as u64);
            (metadata.ino(), ctime_ns)
        };
        #[cfg(not(unix))]
        let (inode, ctime_ns) = (0, mtime_ns);
        Ok(match (canonical.to_str(), mtime_ns, ctime_ns) {
            (Some(path), Some(mtime_ns), Some(ctime_ns)) => {
                Some(FileIdentity { path: path.to_string(), size: metadata.len(), mtime_ns, inode, ctime_ns })
            }
            _ => None,
        })
    }
}

/// `weights-hash.json`: file hashes by canonical path.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct HashMemo {
    files: std::collections::BTreeMap<String, MemoEntry>,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct MemoEntry {
    size: u64,
    mtime_ns: u64,
    inode: u64,
    /// 0 in memos written before it was recorded: such entries never match, so they are rehashed.
    #[serde(default)]
    ctime_ns: u64,
    hash: String,
}

impl MemoEntry {
    fn matches(&self, id: &FileIdentity) -> bool {
        (self.size, self.mtime_ns, self.inode, self.ctime_ns) == (id.size, id.mtime_ns, id.inode, id.ctime_ns)
    }
}

/// The memo at `path`; empty when it is missing or unreadable (it is rebuilt as files are hashed).
fn read_memo(path: &Path) -> HashMemo {
    crate::io::read_json(path).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_hash_reads_whole_files_and_remembers_them() {
        let dir = tempfile::tempdir().unwrap();
        let memo = dir.path().join("memo/weights-hash.json");
        // 20 MiB files differing in one byte between the old hash's sampled 1 MiB windows (the
        // first two started at 0 and 19/15 MiB).
        let size = 20 << 20;
        let mut bytes = vec![7u8; size];
        let (a, b) = (dir.path().join("a.gguf"), dir.path().join("b.gguf"));
        std::fs::write(&a, &bytes).unwrap();
        bytes[(1 << 20) + (100 << 10)] ^= 1;
        std::fs::write(&b, &bytes).unwrap();
        let hash_a = weights_hash(std::slice::from_ref(&a), Some(&memo)).unwrap();
        let hash_b = weights_hash(std::slice::from_ref(&b), Some(&memo)).unwrap();
        assert_ne!(hash_a, hash_b, "files differing in one byte share a hash");
        assert_eq!(hash_a, weights_hash(std::slice::from_ref(&a), None).unwrap(), "memo and no memo agree");
        assert_eq!(hash_a.len(), 32);

        // The memo records both files; a repeat run takes the hash from it (shown by editing it).
        let text = std::fs::read_to_string(&memo).unwrap();
        let canonical = std::fs::canonicalize(&a).unwrap().to_str().unwrap().to_string();
        let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["files"].as_object().unwrap().len(), 2, "{text}");
        assert_eq!(json["files"][&canonical]["size"], size);
        json["files"][&canonical]["hash"] = "xxh3-128:remembered".into();
        std::fs::write(&memo, json.to_string()).unwrap();
        let remembered = weights_hash(std::slice::from_ref(&a), Some(&memo)).unwrap();
        assert_ne!(remembered, hash_a, "the memo was not used");

        // A changed mtime (same size, same inode) is a new file: hashed again.
        let file = std::fs::File::options().write(true).open(&a).unwrap();
        file.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5)).unwrap();
        drop(file);
        assert_eq!(weights_hash(std::slice::from_ref(&a), Some(&memo)).unwrap(), hash_a);

        // A damaged memo is ignored and rewritten.
        std::fs::write(&memo, "{ not json").unwrap();
        assert_eq!(weights_hash(std::slice::from_ref(&b), Some(&memo)).unwrap(), hash_b);
        assert!(std::fs::read_to_string(&memo).unwrap().contains("xxh3-128:"));
    }

    #[test]
    fn gguf_names_map_to_hf() {
        assert_eq!(hf_name("blk.12.attn_q.weight").unwrap(), "model.layers.12.self_attn.q_proj.weight");
        assert_eq!(hf_name("blk.0.attn_k.bias").unwrap(), "model.layers.0.self_attn.k_proj.bias");
        assert_eq!(hf_name("blk.3.ffn_norm.weight").unwrap(), "model.layers.3.post_attention_layernorm.weight");
        assert_eq!(hf_name("output.weight").unwrap(), "lm_head.weight");
        assert!(hf_name("blk.1.mystery.weight").is_none());
    }

    #[test]
    fn unpermuted_row_order_is_unpermute_rows() {
        let w = Tensor::arange(0f32, 24.0, &Device::Cpu).unwrap().reshape((12, 2)).unwrap();
        let unpermuted = unpermute_rows(&w, 3).unwrap().to_vec2::<f32>().unwrap();
        let rows = w.to_vec2::<f32>().unwrap();
        for (row, source) in unpermuted.iter().zip(unpermuted_row_order(12, 3).unwrap()) {
            assert_eq!(row, &rows[source]);
        }
    }

    #[test]
    fn unpermute_inverts_llama_cpp_permute() {
        // llama.cpp: reshape(n_head, 2, hd/2, in).swapaxes(1, 2); rows of head 0 with hd = 4:
        // original order [a0 a1 b0 b1] (halves a, b) becomes [a0 b0 a1 b1].
        let permuted = Tensor::new(&[[0f32], [2.], [1.], [3.], [4.], [6.], [5.], [7.]], &Device::Cpu).unwrap();
        let w = unpermute_rows(&permuted, 2).unwrap();
        assert_eq!(w.flatten_all().unwrap().to_vec1::<f32>().unwrap(), vec![0., 1., 2., 3., 4., 5., 6., 7.]);
    }
}
