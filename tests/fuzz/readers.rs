//! Mutation fuzzing of every reader of untrusted files (so that what was fixed stays fixed): `.npy`, GGUF,
//! safetensors + HF model directories, rollout JSON, CODI JSON (problem sets, ablation and
//! attention results) and attention-cache entries. Each target starts from real seed files (the
//! repository's fixtures, or files our own writers produce here) and checks that the reader
//! returns `Ok` or `Err`, never panics or aborts, and that a cache entry whose data was changed
//! is never served.
//!
//! `cargo test --test fuzz` runs `PROPTEST_CASES` cases per target (default 64);
//! `scripts/fuzz.sh [seconds]` runs each target for a time budget and prints one line per target
//! (`fuzz <target>: executions N, crashes 0, wall S s, ...`). The `regression_*` tests hold the
//! exact inputs that once panicked.

use std::path::{Path, PathBuf};

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::Value;

use crate::fuzz_support;

use fuzz_support::{
    byte_mutations, case_dir, fuzz, json_case, mutate_bytes, mutate_json_text, ByteMutation, JsonCase, Stats,
};
use thoughtscope::attention::token_pairs::{HeadTokenPairs, TokenPair, TokenPairs};
use thoughtscope::attention::{
    read_entry_dir, read_entry_token_pairs, AttnCache, BoundaryMode, CacheKey, CacheLayout, EntryTokenPairs, Lookup, SentenceAttention,
    SentenceMode,
};
use thoughtscope::io::npy;
use thoughtscope::model::weights::{load_gguf, load_hf_dir};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn outcome<T, E: std::fmt::Display>(stats: &Stats, result: &Result<T, E>) {
    stats.outcome(result);
}

// =============================================================================================
// 1. npy

fn npy_with_header(major: u8, header: &str, payload: &[u8]) -> Vec<u8> {
    let mut bytes = b"\x93NUMPY".to_vec();
    bytes.extend_from_slice(&[major, 0]);
    if major == 1 {
        bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    } else {
        bytes.extend_from_slice(&(header.len() as u32).to_le_bytes());
    }
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

/// What `np.save` writes (our writer), plus the variants the reader accepts: big-endian, Fortran
/// order, versions 2 and 3, 0-d and empty arrays.
fn npy_seeds() -> Vec<Vec<u8>> {
    let values: Vec<f32> = (0..12).map(|k| k as f32 * 0.25 - 1.0).collect();
    let f64s: Vec<f64> = (0..6).map(|k| k as f64 / 3.0).collect();
    let be: Vec<u8> = f64s.iter().flat_map(|v| v.to_be_bytes()).collect();
    let le32: Vec<u8> = values[..6].iter().flat_map(|v| v.to_le_bytes()).collect();
    vec![
        npy::encode_f32(&[3, 4], &values).unwrap(),
        npy::encode_f64(&[2, 3], &f64s).unwrap(),
        npy::encode_f32(&[12], &values).unwrap(),
        npy::encode_f32(&[2, 2, 3], &values).unwrap(),
        npy::encode_f32(&[], &[7.5]).unwrap(),
        npy::encode_f32(&[0, 5], &[]).unwrap(),
        npy_with_header(2, "{'descr': '>f8', 'fortran_order': True, 'shape': (3, 2), }\n", &be),
        npy_with_header(3, "{\"descr\": \"<f4\", \"fortran_order\": False, \"shape\": (2, 3L)}\n", &le32),
    ]
}

const NPY_TOKENS: [&str; 22] = [
    "18446744073709551615",
    "18446744073709551616",
    "4294967296",
    "-1",
    "0",
    "()",
    "(",
    ")",
    ",",
    "'<f4'",
    "'>f8'",
    "'|u1'",
    "'<f2'",
    "True",
    "False",
    "'shape'",
    "'descr'",
    "'fortran_order'",
    "L",
    "\n",
    "\u{0}",
    "é",
];

#[derive(Debug, Clone)]
struct NpyCase {
    seed: Index,
    mutations: Vec<ByteMutation>,
}

#[test]
fn fuzz_npy() {
    let seeds = npy_seeds();
    let seed_refs: Vec<&[u8]> = seeds.iter().map(Vec::as_slice).collect();
    let mut dictionary: Vec<&[u8]> = NPY_TOKENS.iter().map(|t| t.as_bytes()).collect();
    dictionary.push(b"\xff\xfe");
    let mutate = |case: &NpyCase| {
        let seed = &seeds[case.seed.index(seeds.len())];
        mutate_bytes(seed, &case.mutations, &seed_refs, &dictionary, usize::MAX)
    };
    let tmp = tempfile::tempdir().unwrap();
    let strategy = (any::<Index>(), byte_mutations(1..6)).prop_map(|(seed, mutations)| NpyCase { seed, mutations });
    fuzz("npy", strategy, |case| Some(mutate(case)), |case, stats| {
        let bytes = mutate(case);
        let decoded = npy::decode(&bytes);
        outcome(stats, &decoded);
        if let Ok(array) = &decoded {
            let count: usize = array.shape.iter().product();
            let len = match &array.data {
                npy::NpyData::F32(v) => v.len(),
                npy::NpyData::F64(v) => v.len(),
            };
            if count != len {
                return Err(format!("decoded shape {:?} with {len} values", array.shape));
            }
        }
        // `read` is `decode` plus the file: the same answer, with the path in the error.
        let path = case_dir(tmp.path()).join("case.npy");
        std::fs::write(&path, &bytes).unwrap();
        match (npy::read(&path), &decoded) {
            // Compared as Debug text, where NaN equals NaN.
            (Ok(a), Ok(b)) if format!("{a:?}") == format!("{b:?}") => Ok(()),
            (Err(e), Err(_)) if e.to_string().contains("case.npy") => Ok(()),
            (read, _) => Err(format!("read and decode disagree: {read:?} vs {decoded:?}")),
        }
    });
}

// =============================================================================================
// 2. GGUF

/// A GGUF file as its parts, written by [`RawGguf::encode`] exactly as candle's writer lays it
/// out, so any field (a count, a dimension, a dtype id, an offset) can be set to anything.
#[derive(Debug, Clone)]
struct RawGguf {
    version: u32,
    metadata: Vec<(String, gguf_file::Value)>,
    tensors: Vec<RawTensor>,
    /// Tensor data (the section after the tensor infos, from its aligned start).
    data: Vec<u8>,
}

#[derive(Debug, Clone)]
struct RawTensor {
    name: String,
    /// Dimensions in file order (innermost first, as GGUF stores them).
    dims: Vec<u64>,
    dtype: u32,
    offset: u64,
}

fn value_type_id(value: &gguf_file::Value) -> u32 {
    use gguf_file::Value as V;
    match value {
        V::U8(_) => 0,
        V::I8(_) => 1,
        V::U16(_) => 2,
        V::I16(_) => 3,
        V::U32(_) => 4,
        V::I32(_) => 5,
        V::F32(_) => 6,
        V::Bool(_) => 7,
        V::String(_) => 8,
        V::Array(_) => 9,
        V::U64(_) => 10,
        V::I64(_) => 11,
        V::F64(_) => 12,
    }
}

impl RawGguf {
    fn length(&self, out: &mut Vec<u8>, n: u64) {
        if self.version == 1 {
            out.extend_from_slice(&(n as u32).to_le_bytes());
        } else {
            out.extend_from_slice(&n.to_le_bytes());
        }
    }

    fn string(&self, out: &mut Vec<u8>, s: &str) {
        self.length(out, s.len() as u64);
        out.extend_from_slice(s.as_bytes());
    }

    fn value(&self, out: &mut Vec<u8>, value: &gguf_file::Value) {
        use gguf_file::Value as V;
        match value {
            V::U8(v) => out.push(*v),
            V::I8(v) => out.push(*v as u8),
            V::U16(v) => out.extend_from_slice(&v.to_le_bytes()),
            V::I16(v) => out.extend_from_slice(&v.to_le_bytes()),
            V::U32(v) => out.extend_from_slice(&v.to_le_bytes()),
            V::I32(v) => out.extend_from_slice(&v.to_le_bytes()),
            V::U64(v) => out.extend_from_slice(&v.to_le_bytes()),
            V::I64(v) => out.extend_from_slice(&v.to_le_bytes()),
            V::F32(v) => out.extend_from_slice(&v.to_le_bytes()),
            V::F64(v) => out.extend_from_slice(&v.to_le_bytes()),
            V::Bool(v) => out.push(u8::from(*v)),
            V::String(s) => self.string(out, s),
            V::Array(items) => {
                // candle writes an empty array as u32 elements; mixed arrays take the first's type.
                let item_type = items.first().map_or(4, value_type_id);
                out.extend_from_slice(&item_type.to_le_bytes());
                self.length(out, items.len() as u64);
                for item in items {
                    self.value(out, item);
                }
            }
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = 0x4655_4747u32.to_le_bytes().to_vec();
        out.extend_from_slice(&self.version.to_le_bytes());
        self.length(&mut out, self.tensors.len() as u64);
        self.length(&mut out, self.metadata.len() as u64);
        for (key, value) in &self.metadata {
            self.string(&mut out, key);
            out.extend_from_slice(&value_type_id(value).to_le_bytes());
            self.value(&mut out, value);
        }
        for t in &self.tensors {
            self.string(&mut out, &t.name);
            out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for &d in &t.dims {
                if self.version == 1 {
                    out.extend_from_slice(&(d as u32).to_le_bytes());
                } else {
                    out.extend_from_slice(&d.to_le_bytes());
                }
            }
            out.extend_from_slice(&t.dtype.to_le_bytes());
            out.extend_from_slice(&t.offset.to_le_bytes());
        }
        out.resize(out.len().div_ceil(32) * 32, 0);
        out.extend_from_slice(&self.data);
        out
    }
}

const GGUF_VOCAB: [&str; 12] = ["<|im_start|>", "<|im_end|>", "a", "b", "c", "Ġ", "ab", "Ġa", "1", "2", "\n", "Ċ"];

/// Metadata of a tiny Llama (1 layer, hidden 32, 4 heads of 8, 2 KV heads) with a byte-level BPE
/// tokenizer, in the keys llama.cpp writes.
fn tiny_gguf_metadata() -> Vec<(String, gguf_file::Value)> {
    use gguf_file::Value as V;
    let tokens: Vec<V> = GGUF_VOCAB.iter().map(|t| V::String(t.to_string())).collect();
    let types: Vec<V> = (0..GGUF_VOCAB.len()).map(|i| V::I32(if i < 2 { 3 } else { 1 })).collect();
    vec![
        ("general.architecture".into(), V::String("llama".into())),
        ("general.alignment".into(), V::U32(32)),
        ("llama.block_count".into(), V::U32(1)),
        ("llama.context_length".into(), V::U32(64)),
        ("llama.embedding_length".into(), V::U32(32)),
        ("llama.feed_forward_length".into(), V::U32(256)),
        ("llama.attention.head_count".into(), V::U32(4)),
        ("llama.attention.head_count_kv".into(), V::U32(2)),
        ("llama.attention.key_length".into(), V::U32(8)),
        ("llama.attention.layer_norm_rms_epsilon".into(), V::F32(1e-5)),
        ("llama.rope.freq_base".into(), V::F32(10_000.0)),
        ("tokenizer.ggml.model".into(), V::String("gpt2".into())),
        ("tokenizer.ggml.pre".into(), V::String("smollm".into())),
        ("tokenizer.ggml.tokens".into(), V::Array(tokens)),
        ("tokenizer.ggml.token_type".into(), V::Array(types)),
        ("tokenizer.ggml.merges".into(), V::Array(vec![V::String("a b".into()), V::String("Ġ a".into())])),
        ("tokenizer.ggml.bos_token_id".into(), V::U32(0)),
        ("tokenizer.ggml.eos_token_id".into(), V::U32(1)),
        ("tokenizer.ggml.add_bos_token".into(), V::Bool(false)),
    ]
}

/// The tiny model's tensors (HF shape `[rows, cols]`) in several GGUF dtypes: F32, F16, Q4_0,
/// Q8_0, Q4_K, so each dequantiser reads mutated blocks.
fn tiny_gguf_tensors() -> Vec<(&'static str, QTensor)> {
    let specs: [(&str, &[usize], GgmlDType); 12] = [
        ("token_embd.weight", &[GGUF_VOCAB.len(), 32], GgmlDType::Q8_0),
        ("output_norm.weight", &[32], GgmlDType::F32),
        ("output.weight", &[GGUF_VOCAB.len(), 32], GgmlDType::F16),
        ("rope_freqs.weight", &[4], GgmlDType::F32),
        ("blk.0.attn_norm.weight", &[32], GgmlDType::F32),
        ("blk.0.attn_q.weight", &[32, 32], GgmlDType::Q4_0),
        ("blk.0.attn_k.weight", &[16, 32], GgmlDType::F16),
        ("blk.0.attn_v.weight", &[16, 32], GgmlDType::F32),
        ("blk.0.attn_output.weight", &[32, 32], GgmlDType::Q8_0),
        ("blk.0.ffn_norm.weight", &[32], GgmlDType::F32),
        ("blk.0.ffn_up.weight", &[256, 32], GgmlDType::Q8_0),
        ("blk.0.ffn_down.weight", &[32, 256], GgmlDType::Q4K),
    ];
    specs
        .iter()
        .enumerate()
        .map(|(k, (name, shape, dtype))| {
            let count: usize = shape.iter().product();
            let values: Vec<f32> = (0..count).map(|i| ((i * 7 + k * 13) % 23) as f32 * 0.05 + 0.5).collect();
            let tensor = Tensor::from_vec(values, *shape, &Device::Cpu).unwrap();
            (*name, QTensor::quantize(&tensor, *dtype).unwrap())
        })
        .collect()
}

fn ggml_dtype_id(dtype: GgmlDType) -> u32 {
    match dtype {
        GgmlDType::F32 => 0,
        GgmlDType::F16 => 1,
        GgmlDType::Q4_0 => 2,
        GgmlDType::Q8_0 => 8,
        GgmlDType::Q4K => 12,
        other => panic!("dtype {other:?} is not in the seed"),
    }
}

/// The tiny model written by candle's `gguf_file::write`, and the same file as a [`RawGguf`]
/// (checked to encode to identical bytes).
fn tiny_gguf() -> (Vec<u8>, RawGguf) {
    let metadata = tiny_gguf_metadata();
    let tensors = tiny_gguf_tensors();
    let mut written = std::io::Cursor::new(Vec::new());
    let meta_refs: Vec<(&str, &gguf_file::Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (*n, t)).collect();
    gguf_file::write(&mut written, &meta_refs, &tensor_refs).unwrap();
    let written = written.into_inner();

    let mut data = Vec::new();
    let mut raw_tensors = Vec::new();
    for (name, tensor) in &tensors {
        let bytes = tensor.data().unwrap();
        raw_tensors.push(RawTensor {
            name: name.to_string(),
            dims: tensor.shape().dims().iter().rev().map(|&d| d as u64).collect(),
            dtype: ggml_dtype_id(tensor.dtype()),
            offset: data.len() as u64,
        });
        data.extend_from_slice(&bytes);
        data.resize(data.len().div_ceil(32) * 32, 0);
    }
    let raw = RawGguf { version: 2, metadata, tensors: raw_tensors, data };
    assert_eq!(raw.encode(), written, "the fuzzer's GGUF layout differs from candle's writer");
    (written, raw)
}

/// Metadata keys the loader reads (and so worth setting to odd values).
const GGUF_KEYS: [&str; 20] = [
    "general.alignment",
    "general.architecture",
    "llama.block_count",
    "llama.context_length",
    "llama.embedding_length",
    "llama.feed_forward_length",
    "llama.attention.head_count",
    "llama.attention.head_count_kv",
    "llama.attention.key_length",
    "llama.attention.layer_norm_rms_epsilon",
    "llama.rope.freq_base",
    "tokenizer.ggml.model",
    "tokenizer.ggml.pre",
    "tokenizer.ggml.tokens",
    "tokenizer.ggml.token_type",
    "tokenizer.ggml.merges",
    "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.add_bos_token",
    "tokenizer.chat_template",
];

const GGUF_TENSOR_NAMES: [&str; 9] = [
    "token_embd.weight",
    "output.weight",
    "rope_freqs.weight",
    "blk.0.attn_q.weight",
    "blk.0.attn_k.weight",
    "blk.7.attn_q.weight",
    "blk.18446744073709551616.attn_q.weight",
    "blk.0.mystery.weight",
    "",
];

fn gguf_value() -> impl Strategy<Value = gguf_file::Value> {
    use gguf_file::Value as V;
    let strings = || proptest::sample::select(vec!["", "llama", "qwen2", "qwen3", "gpt2", "llama-bpe", "a", "a b c", "{{ x }}"]);
    prop_oneof![
        3 => proptest::sample::select(vec![0u32, 1, 2, 3, 7, 32, 4096, u32::MAX, 1 << 31]).prop_map(V::U32),
        2 => proptest::sample::select(vec![0u64, u64::MAX, 1 << 32, 4_000_000_000, 1 << 40]).prop_map(V::U64),
        1 => proptest::sample::select(vec![-1i32, 0, i32::MIN, i32::MAX]).prop_map(V::I32),
        1 => proptest::sample::select(vec![0u8, 1, 255]).prop_map(V::U8),
        1 => proptest::sample::select(vec![0i8, -1, i8::MAX]).prop_map(V::I8),
        1 => proptest::sample::select(vec![0u16, u16::MAX]).prop_map(V::U16),
        1 => proptest::sample::select(vec![-1i16, 0]).prop_map(V::I16),
        1 => proptest::sample::select(vec![-1i64, i64::MAX]).prop_map(V::I64),
        3 => proptest::sample::select(vec![f32::NAN, f32::INFINITY, -f32::INFINITY, 0.0, -1.0, 1e-30, 1e30, f32::MIN_POSITIVE])
            .prop_map(V::F32),
        1 => proptest::sample::select(vec![f64::NAN, 0.0, 1e308]).prop_map(V::F64),
        1 => any::<bool>().prop_map(V::Bool),
        2 => strings().prop_map(|s| V::String(s.to_string())),
        1 => Just(V::Array(Vec::new())),
        1 => proptest::collection::vec(strings().prop_map(|s| V::String(s.to_string())), 1..4).prop_map(V::Array),
        1 => proptest::collection::vec(proptest::sample::select(vec![0u32, 1, u32::MAX]).prop_map(V::U32), 1..4)
            .prop_map(V::Array),
        1 => Just(V::Array(vec![V::Array(vec![V::U8(1)])])),
    ]
}

#[derive(Debug, Clone)]
enum GgufMutation {
    /// A metadata value set (the key one the loader reads, or an existing one).
    SetMeta { key: Index, known: bool, value: gguf_file::Value },
    RemoveMeta { key: Index },
    SetDims { tensor: Index, dims: Vec<u64> },
    SetDtype { tensor: Index, dtype: u32 },
    SetOffset { tensor: Index, offset: u64 },
    Rename { tensor: Index, name: Index },
    DuplicateTensor { tensor: Index },
    RemoveTensor { tensor: Index },
    Version(u32),
    TruncateData { at: Index },
    /// A tensor's data offset moved off the alignment (by 1 to 31 bytes).
    Misalign { tensor: Index, by: u64 },
    /// A tensor's data offset set to another tensor's: the two overlap.
    OverlapWith { tensor: Index, other: Index },
}

fn gguf_mutation() -> impl Strategy<Value = GgufMutation> {
    let dim = prop_oneof![
        3 => proptest::sample::select(vec![0u64, 1, 2, 4, 8, 16, 32, 64, 256, 257]),
        1 => proptest::sample::select(vec![u64::MAX, 1 << 32, 1 << 62, (1 << 32) + 1, u32::MAX as u64]),
    ];
    prop_oneof![
        5 => (any::<Index>(), any::<bool>(), gguf_value()).prop_map(|(key, known, value)| GgufMutation::SetMeta { key, known, value }),
        1 => any::<Index>().prop_map(|key| GgufMutation::RemoveMeta { key }),
        3 => (any::<Index>(), proptest::collection::vec(dim, 0..6)).prop_map(|(tensor, dims)| GgufMutation::SetDims { tensor, dims }),
        2 => (any::<Index>(), prop_oneof![3 => 0u32..32, 1 => any::<u32>()]).prop_map(|(tensor, dtype)| GgufMutation::SetDtype { tensor, dtype }),
        2 => (any::<Index>(), prop_oneof![1 => proptest::sample::select(fuzz_support::INTERESTING_INTS.to_vec()), 1 => 0u64..40_000])
            .prop_map(|(tensor, offset)| GgufMutation::SetOffset { tensor, offset }),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(tensor, name)| GgufMutation::Rename { tensor, name }),
        1 => any::<Index>().prop_map(|tensor| GgufMutation::DuplicateTensor { tensor }),
        1 => any::<Index>().prop_map(|tensor| GgufMutation::RemoveTensor { tensor }),
        1 => (0u32..5).prop_map(GgufMutation::Version),
        1 => any::<Index>().prop_map(|at| GgufMutation::TruncateData { at }),
        1 => (any::<Index>(), 1u64..32).prop_map(|(tensor, by)| GgufMutation::Misalign { tensor, by }),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(tensor, other)| GgufMutation::OverlapWith { tensor, other }),
    ]
}

fn mutate_gguf(seed: &RawGguf, mutations: &[GgufMutation]) -> RawGguf {
    let mut raw = seed.clone();
    for m in mutations {
        match m {
            GgufMutation::SetMeta { key, known, value } => {
                let name = if *known || raw.metadata.is_empty() {
                    GGUF_KEYS[key.index(GGUF_KEYS.len())].to_string()
                } else {
                    raw.metadata[key.index(raw.metadata.len())].0.clone()
                };
                match raw.metadata.iter_mut().find(|(k, _)| *k == name) {
                    Some(entry) => entry.1 = value.clone(),
                    None => raw.metadata.push((name, value.clone())),
                }
            }
            GgufMutation::RemoveMeta { key } if !raw.metadata.is_empty() => {
                let at = key.index(raw.metadata.len());
                raw.metadata.remove(at);
            }
            GgufMutation::SetDims { tensor, dims } if !raw.tensors.is_empty() => {
                let at = tensor.index(raw.tensors.len());
                raw.tensors[at].dims = dims.clone();
            }
            GgufMutation::SetDtype { tensor, dtype } if !raw.tensors.is_empty() => {
                let at = tensor.index(raw.tensors.len());
                raw.tensors[at].dtype = *dtype;
            }
            GgufMutation::SetOffset { tensor, offset } if !raw.tensors.is_empty() => {
                let at = tensor.index(raw.tensors.len());
                raw.tensors[at].offset = *offset;
            }
            GgufMutation::Rename { tensor, name } if !raw.tensors.is_empty() => {
                let at = tensor.index(raw.tensors.len());
                raw.tensors[at].name = GGUF_TENSOR_NAMES[name.index(GGUF_TENSOR_NAMES.len())].to_string();
            }
            GgufMutation::DuplicateTensor { tensor } if !raw.tensors.is_empty() => {
                let copy = raw.tensors[tensor.index(raw.tensors.len())].clone();
                raw.tensors.push(copy);
            }
            GgufMutation::RemoveTensor { tensor } if !raw.tensors.is_empty() => {
                let at = tensor.index(raw.tensors.len());
                raw.tensors.remove(at);
            }
            GgufMutation::Version(v) => raw.version = *v,
            GgufMutation::TruncateData { at } => {
                let at = at.index(raw.data.len() + 1);
                raw.data.truncate(at);
            }
            GgufMutation::Misalign { tensor, by } if !raw.tensors.is_empty() => {
                let at = tensor.index(raw.tensors.len());
                raw.tensors[at].offset = raw.tensors[at].offset.wrapping_add(*by);
            }
            GgufMutation::OverlapWith { tensor, other } if !raw.tensors.is_empty() => {
                let (at, from) = (tensor.index(raw.tensors.len()), other.index(raw.tensors.len()));
                raw.tensors[at].offset = raw.tensors[from].offset;
            }
            _ => {}
        }
    }
    raw
}

/// Seeds: the tiny model as version 2 (candle's writer), 3 and 1 (32-bit lengths), and the first
/// 16 KiB of the real SmolLM2 GGUF when `models/` has it (header bytes only: magic, counts and the
/// first metadata entries, cut inside the vocabulary).
struct GgufSeeds {
    structured: Vec<RawGguf>,
    raw: Vec<Vec<u8>>,
}

fn gguf_seeds() -> GgufSeeds {
    let (written, v2) = tiny_gguf();
    let v3 = RawGguf { version: 3, ..v2.clone() };
    let v1 = RawGguf { version: 1, ..v2.clone() };
    let mut raw = vec![written];
    let smollm2 = repo().join("models/smollm2-135m");
    if let Some(gguf) = std::fs::read_dir(&smollm2)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "gguf"))
    {
        let mut header = vec![0u8; 16 << 10];
        use std::io::Read as _;
        if let Ok(n) = std::fs::File::open(&gguf).and_then(|mut f| f.read(&mut header)) {
            header.truncate(n);
            raw.push(header);
        }
    }
    GgufSeeds { structured: vec![v2, v3, v1], raw }
}

#[derive(Debug, Clone)]
struct GgufCase {
    /// Index over structured seeds then raw ones.
    seed: Index,
    structural: Vec<GgufMutation>,
    bytes: Vec<ByteMutation>,
}

const GGUF_TOKENS: [&[u8]; 6] = [b"GGUF", b"\x00\x00\x00\x00", b"\xff\xff\xff\xff", b"general.alignment", b"llama", b"\x09\x00\x00\x00"];

/// A case that only misaligns one tensor of a well-formed seed, or only moves one tensor onto
/// another: the file breaks the GGUF layout and must be refused.
fn breaks_layout(case: &GgufCase, structured: usize, seeds: usize) -> bool {
    if !case.bytes.is_empty() || case.seed.index(seeds) >= structured || case.structural.len() != 1 {
        return false;
    }
    match &case.structural[0] {
        GgufMutation::Misalign { .. } => true,
        GgufMutation::OverlapWith { tensor, other } => {
            let n = tiny_gguf_tensors().len();
            tensor.index(n) != other.index(n)
        }
        _ => false,
    }
}

#[test]
fn fuzz_gguf() {
    let seeds = gguf_seeds();
    let encoded: Vec<Vec<u8>> = seeds.structured.iter().map(RawGguf::encode).chain(seeds.raw.iter().cloned()).collect();
    let seed_refs: Vec<&[u8]> = encoded.iter().map(Vec::as_slice).collect();
    let mutate = |case: &GgufCase| -> Vec<u8> {
        let k = case.seed.index(encoded.len());
        let base = match seeds.structured.get(k) {
            Some(raw) => mutate_gguf(raw, &case.structural).encode(),
            None => encoded[k].clone(),
        };
        mutate_bytes(&base, &case.bytes, &seed_refs, &GGUF_TOKENS, usize::MAX)
    };
    let tmp = tempfile::tempdir().unwrap();
    let strategy = (
        any::<Index>(),
        proptest::collection::vec(gguf_mutation(), 0..4),
        prop_oneof![1 => Just(Vec::new()), 1 => byte_mutations(1..4)],
    )
        .prop_map(|(seed, structural, bytes)| GgufCase { seed, structural, bytes });
    fuzz("gguf", strategy, |case| Some(mutate(case)), |case, stats| {
        let path = case_dir(tmp.path()).join("model.gguf");
        std::fs::write(&path, mutate(case)).unwrap();
        let loaded = load_gguf(&path);
        outcome(stats, &loaded);
        match loaded {
            Err(e) if !e.to_string().contains("model.gguf") => Err(format!("the error does not name the file: {e}")),
            Ok(_) if breaks_layout(case, seeds.structured.len(), encoded.len()) => {
                Err("a tensor moved off the alignment or onto another one was loaded".to_owned())
            }
            _ => Ok(()),
        }
    });
}

// =============================================================================================
// 3. safetensors + HF model directory

/// A safetensors file as header JSON + data, for structural edits of the header.
fn split_safetensors(bytes: &[u8]) -> Option<(Value, &[u8])> {
    let n = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?) as usize;
    let header = serde_json::from_slice(bytes.get(8..8 + n)?).ok()?;
    Some((header, &bytes[8 + n..]))
}

fn join_safetensors(header: &[u8], data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header);
    out.extend_from_slice(data);
    out
}

const SAFETENSORS_TOKENS: [&str; 12] =
    ["\"F8_E4M3\"", "\"BOOL\"", "\"I64\"", "\"F4\"", "\"U8\"", "\"BF16\"", "\"F64\"", "\"dtype\"", "\"shape\"", "\"data_offsets\"", "\"__metadata__\"", "[0,0]"];

#[derive(Debug, Clone)]
enum HfMutation {
    /// Structural edits of the header JSON of one weights file (length rewritten to match).
    Header { file: Index, case: JsonCase },
    /// Byte edits of one weights file, within its header (+16 bytes) or anywhere.
    Bytes { file: Index, header_only: bool, bytes: Vec<ByteMutation> },
    Config(JsonCase),
    Index(JsonCase),
    /// A weights file removed.
    Remove { file: Index },
}

fn hf_mutation() -> impl Strategy<Value = HfMutation> {
    prop_oneof![
        4 => (any::<Index>(), json_case()).prop_map(|(file, case)| HfMutation::Header { file, case }),
        3 => (any::<Index>(), any::<bool>(), byte_mutations(1..4))
            .prop_map(|(file, header_only, bytes)| HfMutation::Bytes { file, header_only, bytes }),
        3 => json_case().prop_map(HfMutation::Config),
        1 => json_case().prop_map(HfMutation::Index),
        1 => any::<Index>().prop_map(|file| HfMutation::Remove { file }),
    ]
}

#[derive(Debug, Clone)]
struct HfCase {
    sharded: bool,
    mutations: Vec<HfMutation>,
}

/// The files of a fixture directory by name.
fn read_dir_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()))
        .collect();
    files.sort();
    files
}

fn mutate_hf(seed: &[(String, Vec<u8>)], case: &HfCase, seeds: &[&[u8]]) -> Vec<(String, Option<Vec<u8>>)> {
    let mut files: Vec<(String, Option<Vec<u8>>)> = seed.iter().map(|(n, b)| (n.clone(), Some(b.clone()))).collect();
    let weights: Vec<usize> = (0..files.len()).filter(|&i| files[i].0.ends_with(".safetensors")).collect();
    let tokens: Vec<&[u8]> = SAFETENSORS_TOKENS.iter().map(|t| t.as_bytes()).collect();
    let by_name = |files: &mut Vec<(String, Option<Vec<u8>>)>, name: &str| files.iter().position(|(n, _)| n == name);
    for m in &case.mutations {
        match m {
            HfMutation::Header { file, case } => {
                let slot = &mut files[weights[file.index(weights.len())]].1;
                if let Some(bytes) = slot.as_ref() {
                    if let Some((header, data)) = split_safetensors(bytes) {
                        let text = serde_json::to_vec(&header).unwrap();
                        let header = mutate_json_text(&text, case, seeds, &tokens);
                        *slot = Some(join_safetensors(&header, data));
                    }
                }
            }
            HfMutation::Bytes { file, header_only, bytes } => {
                let slot = &mut files[weights[file.index(weights.len())]].1;
                if let Some(content) = slot.as_mut() {
                    let limit = if *header_only {
                        content.get(..8).map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap()) as usize).saturating_add(24)
                    } else {
                        usize::MAX
                    };
                    *content = mutate_bytes(content, bytes, seeds, &tokens, limit);
                }
            }
            HfMutation::Config(case) | HfMutation::Index(case) => {
                let name = if matches!(m, HfMutation::Config(_)) { "config.json" } else { "model.safetensors.index.json" };
                if let Some(at) = by_name(&mut files, name) {
                    if let Some(bytes) = files[at].1.as_ref() {
                        files[at].1 = Some(mutate_json_text(bytes, case, seeds, &tokens));
                    }
                }
            }
            HfMutation::Remove { file } => files[weights[file.index(weights.len())]].1 = None,
        }
    }
    files
}

#[test]
fn fuzz_safetensors_hf_dir() {
    let single = read_dir_files(&repo().join("tests/fixtures/tiny-llama3"));
    let single: Vec<(String, Vec<u8>)> = single.into_iter().filter(|(n, _)| n != "reference.safetensors").collect();
    let sharded = read_dir_files(&repo().join("tests/fixtures/tiny-llama3-sharded"));
    let all: Vec<&[u8]> = single.iter().chain(&sharded).map(|(_, b)| b.as_slice()).collect();
    let tmp = tempfile::tempdir().unwrap();
    let strategy = (any::<bool>(), proptest::collection::vec(hf_mutation(), 1..4))
        .prop_map(|(sharded, mutations)| HfCase { sharded, mutations });
    let files_of = |case: &HfCase| mutate_hf(if case.sharded { &sharded } else { &single }, case, &all);
    fuzz(
        "safetensors-hf-dir",
        strategy,
        |case| {
            // The mutated files, each after a `== name (len) ==` line.
            let mut out = Vec::new();
            for (name, bytes) in files_of(case) {
                let bytes = bytes.unwrap_or_default();
                out.extend_from_slice(format!("\n== {name} ({}) ==\n", bytes.len()).as_bytes());
                out.extend_from_slice(&bytes);
            }
            Some(out)
        },
        |case, stats| {
            let dir = case_dir(tmp.path());
            for (name, bytes) in files_of(case) {
                if let Some(bytes) = bytes {
                    std::fs::write(dir.join(name), bytes).unwrap();
                }
            }
            let loaded = load_hf_dir(&dir);
            outcome(stats, &loaded);
            Ok(())
        },
    );
}

// =============================================================================================
// 4. Rollout JSON

const ROLLOUT_FILES: [&str; 4] = ["base_solution.json", "chunks.json", "chunks_labeled.json", "problem.json"];

#[derive(Debug, Clone)]
enum RolloutMutation {
    Json { file: Index, case: JsonCase },
    /// The whole file replaced by a short text (`""`, `null`, `[]`, a deep nesting, ...).
    Replace { file: Index, text: Index },
    Remove { file: Index },
}

fn deep_nesting(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

fn rollout_mutation() -> impl Strategy<Value = RolloutMutation> {
    prop_oneof![
        8 => (any::<Index>(), json_case()).prop_map(|(file, case)| RolloutMutation::Json { file, case }),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(file, text)| RolloutMutation::Replace { file, text }),
        1 => any::<Index>().prop_map(|file| RolloutMutation::Remove { file }),
    ]
}

fn whole_file_replacements() -> Vec<Vec<u8>> {
    ["", "null", "[]", "{}", "\"chunks\"", "{\"chunks\": \"one string\"}", "[{}]", "[null]", "\u{feff}{}", "{\"full_cot\": \"\"}"]
        .iter()
        .map(|t| t.as_bytes().to_vec())
        .chain([deep_nesting(10_000).into_bytes(), format!("{{\"a\":{}}}", deep_nesting(127)).into_bytes()])
        .collect()
}

fn mutate_files(
    seed: &[(String, Vec<u8>)],
    mutations: &[RolloutMutation],
    seeds: &[&[u8]],
    replacements: &[Vec<u8>],
) -> Vec<(String, Option<Vec<u8>>)> {
    let mut files: Vec<(String, Option<Vec<u8>>)> = seed.iter().map(|(n, b)| (n.clone(), Some(b.clone()))).collect();
    for m in mutations {
        match m {
            RolloutMutation::Json { file, case } => {
                let at = file.index(files.len());
                if let Some(bytes) = files[at].1.as_ref() {
                    files[at].1 = Some(mutate_json_text(bytes, case, seeds, &[]));
                }
            }
            RolloutMutation::Replace { file, text } => {
                let at = file.index(files.len());
                files[at].1 = Some(replacements[text.index(replacements.len())].clone());
            }
            RolloutMutation::Remove { file } => {
                let at = file.index(files.len());
                files[at].1 = None;
            }
        }
    }
    files
}

fn files_description(files: Vec<(String, Option<Vec<u8>>)>) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, bytes) in files {
        match bytes {
            Some(bytes) => {
                out.extend_from_slice(format!("\n== {name} ({} bytes) ==\n", bytes.len()).as_bytes());
                out.extend_from_slice(&bytes);
            }
            None => out.extend_from_slice(format!("\n== {name} removed ==\n").as_bytes()),
        }
    }
    out
}

fn write_files(dir: &Path, files: Vec<(String, Option<Vec<u8>>)>) {
    for (name, bytes) in files {
        if let Some(bytes) = bytes {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
}

#[test]
fn fuzz_rollout_json() {
    use thoughtscope::analysis::va::load_chunks_and_tag_mask;
    use thoughtscope::rollout::{read_chunks_file, read_labels_file, Rollout};

    let source = repo().join("rollouts/apple_boxes/rollout_00");
    let seed: Vec<(String, Vec<u8>)> =
        ROLLOUT_FILES.iter().map(|n| (n.to_string(), std::fs::read(source.join(n)).unwrap())).collect();
    let seed_refs: Vec<&[u8]> = seed.iter().map(|(_, b)| b.as_slice()).collect();
    let replacements = whole_file_replacements();
    let tmp = tempfile::tempdir().unwrap();
    let strategy = proptest::collection::vec(rollout_mutation(), 1..3);
    let files_of = |mutations: &Vec<RolloutMutation>| mutate_files(&seed, mutations, &seed_refs, &replacements);
    fuzz("rollout-json", strategy, |m| Some(files_description(files_of(m))), |mutations, stats| {
        let dir = case_dir(tmp.path()).join("rollout_00");
        std::fs::create_dir_all(&dir).unwrap();
        write_files(&dir, files_of(mutations));
        let opened = Rollout::open(&dir);
        outcome(stats, &opened);
        if let Ok(rollout) = &opened {
            let _ = rollout.chunk_texts();
            let _ = rollout.labels();
            for mode in [SentenceMode::FullCot, SentenceMode::Chunks] {
                if let Ok(sentences) = rollout.sentences(mode) {
                    let _ = sentences.text_id();
                }
            }
        }
        let _ = read_chunks_file(&dir.join("chunks.json"));
        let _ = read_labels_file(&dir.join("chunks_labeled.json"));
        for mode in [SentenceMode::Chunks, SentenceMode::FullCot] {
            if let Ok(tagged) = load_chunks_and_tag_mask(&dir, "verbalized_evaluation_awareness", mode) {
                if tagged.mask.len() != tagged.sentences.len() || tagged.labels.len() > tagged.sentences.len() {
                    return Err(format!(
                        "{mode:?}: mask of {} and {} labels for {} sentences",
                        tagged.mask.len(),
                        tagged.labels.len(),
                        tagged.sentences.len()
                    ));
                }
            }
        }
        Ok(())
    });
}

// =============================================================================================
// 5. CODI JSON: the problem set and the ablation / attention results

#[derive(Debug, Clone)]
struct DatasetCase {
    json: JsonCase,
    per_level: [usize; 4],
    seed: u64,
}

#[test]
fn fuzz_codi_dataset() {
    use thoughtscope::codi::problems::dataset::{load_problems, stratified_sample, write_problems};

    let tmp = tempfile::tempdir().unwrap();
    let seed_path = tmp.path().join("seed.json");
    write_problems(&thoughtscope::codi::synthetic_problems(3, 11).unwrap(), &seed_path).unwrap();
    let seed = std::fs::read(&seed_path).unwrap();
    let count = prop_oneof![4 => 0usize..4, 1 => proptest::sample::select(vec![25usize, usize::MAX, usize::MAX / 2, 1 << 32])];
    let strategy = (json_case(), [count.clone(), count.clone(), count.clone(), count], any::<u64>())
        .prop_map(|(json, per_level, seed)| DatasetCase { json, per_level, seed });
    let tokens: [&[u8]; 3] = [b"\"gsm8k_id\"", b"\"problem_id\"", b"\"5+step\""];
    let mutate = |case: &DatasetCase| mutate_json_text(&seed, &case.json, &[&seed], &tokens);
    fuzz("codi-dataset", strategy, |case| Some(mutate(case)), |case, stats| {
        let path = case_dir(tmp.path()).join("problems.json");
        std::fs::write(&path, mutate(case)).unwrap();
        let problems = load_problems(&path);
        outcome(stats, &problems);
        if let Ok(problems) = problems {
            if let Ok(sample) = stratified_sample(&problems, case.per_level, case.seed) {
                let wanted: usize = case.per_level.iter().sum();
                if sample.len() != wanted {
                    return Err(format!("sampled {} problems for per-level {:?}", sample.len(), case.per_level));
                }
            }
        }
        Ok(())
    });
}

/// The first `keep` records of a JSON list.
fn first_records(bytes: &[u8], keep: usize) -> Vec<u8> {
    let text = thoughtscope::codi::runner::files::relaxed_json(std::str::from_utf8(bytes).unwrap());
    let Value::Array(items) = serde_json::from_str(&text).unwrap() else { panic!("a list") };
    serde_json::to_vec(&items.into_iter().take(keep).collect::<Vec<_>>()).unwrap()
}

/// `ablation` (a JSON list) with the continuous importance our ablation writes: a
/// `gold_logprob` per baseline and per token, and `logprob_importance` per token.
fn with_logprob_importance(ablation: &[u8]) -> Vec<u8> {
    let mut records: Vec<Value> = serde_json::from_slice(ablation).unwrap();
    for record in &mut records {
        if let Some(baseline) = record.get_mut("baseline").and_then(Value::as_object_mut) {
            baseline.insert("gold_logprob".into(), (-0.25).into());
        }
        for (k, token) in record["token_ablations"].as_array_mut().into_iter().flatten().enumerate() {
            let drop = 0.1 + k as f64 * 0.3 * token["importance"].as_f64().unwrap_or(0.0);
            token["gold_logprob"] = (-0.25 - drop).into();
            token["logprob_importance"] = drop.into();
        }
    }
    serde_json::to_vec(&records).unwrap()
}

#[derive(Debug, Clone)]
struct ResultsCase {
    /// The ablation seed with the continuous importance (else the fixture's binary-only one).
    logprob: bool,
    /// Which of the two files each mutation edits (false: ablation, true: attention).
    mutations: Vec<(bool, JsonCase)>,
    importance: Index,
}

#[test]
fn fuzz_codi_results() {
    use thoughtscope::codi::{analyze, AnalyzeOptions, ExperimentLayout, ImportanceRule};

    let fixtures = repo().join("tests/fixtures/codi-analysis");
    // The fixtures' first 12 problems (failed records and wrong baselines among them): the whole
    // analysis per case, figures included, stays a few milliseconds.
    let ablation = first_records(&std::fs::read(fixtures.join("ablation.json")).unwrap(), 12);
    let attention = first_records(&std::fs::read(fixtures.join("attention.json")).unwrap(), 12);
    let ablation_logprob = with_logprob_importance(&ablation);
    let seeds: [&[u8]; 3] = [&ablation, &ablation_logprob, &attention];
    let tokens: [&[u8]; 4] = [b"\"layer_4\"", b"\"layer_18446744073709551615\"", b"\"token_pos\"", b"\"error\""];
    let mutate = |case: &ResultsCase| {
        let a = if case.logprob { &ablation_logprob } else { &ablation };
        let (mut a, mut b) = (a.clone(), attention.clone());
        for (which, json) in &case.mutations {
            let slot = if *which { &mut b } else { &mut a };
            *slot = mutate_json_text(slot, json, &seeds, &tokens);
        }
        (a, b)
    };
    let rules = [ImportanceRule::Auto, ImportanceRule::Binary, ImportanceRule::Logprob];
    let tmp = tempfile::tempdir().unwrap();
    let strategy = (any::<bool>(), proptest::collection::vec((any::<bool>(), json_case()), 1..3), any::<Index>())
        .prop_map(|(logprob, mutations, importance)| ResultsCase { logprob, mutations, importance });
    let describe = |case: &ResultsCase| {
        let (a, b) = mutate(case);
        Some(files_description(vec![("ablation.json".into(), Some(a)), ("attention.json".into(), Some(b))]))
    };
    fuzz("codi-results", strategy, describe, |case, stats| {
        let layout = ExperimentLayout::seed(case_dir(tmp.path()), false);
        std::fs::create_dir_all(layout.results_dir()).unwrap();
        let (a, b) = mutate(case);
        std::fs::write(layout.ablation(), a).unwrap();
        std::fs::write(layout.attention(), b).unwrap();
        let _ = thoughtscope::codi::seed::ablation::read_ablation(&layout.ablation());
        let _ = thoughtscope::codi::seed::eot_attention::read_attention(&layout.attention());
        let options = AnalyzeOptions {
            importance: rules[case.importance.index(rules.len())],
            static_images: false,
            ..AnalyzeOptions::default()
        };
        let analysis = analyze(&layout, &options);
        outcome(stats, &analysis);
        Ok(())
    });
}

// =============================================================================================
// 6. Attention cache entries

fn cache_key() -> CacheKey {
    CacheKey {
        model: "tiny-model".into(),
        weights_hash: "0123456789abcdef0123456789abcdef".into(),
        dtype: "f32".into(),
        tokenizer: "gguf:smollm:0011".into(),
        sentence_mode: SentenceMode::FullCot,
        boundary_mode: BoundaryMode::Prefix,
        text_id: "65c133c9cf042207".into(),
        n: 3,
        layers: 2,
        heads: 2,
    }
}

fn cache_attention() -> SentenceAttention {
    let data = (0..2 * 2 * 3 * 3).map(|k| (k as f32 * 0.37).sin().abs()).collect();
    SentenceAttention::new(2, 2, 3, data).unwrap()
}

/// Token pairs of two heads for the 3 sentences of `cache_key()` (ranges of 2, 3 and 1 tokens,
/// 2 kept on each side).
fn cache_token_pairs() -> TokenPairs {
    let pair = |source, rows: usize, cols: usize, salt: f32| {
        Some(TokenPair { source, mean: 0.25 + f64::from(salt), rows, cols, values: (0..rows * cols).map(|k| salt + k as f32 / 9.0).collect() })
    };
    TokenPairs {
        max_tokens: 2,
        ranges: vec![(0, 2), (2, 5), (5, 6)],
        heads: vec![
            HeadTokenPairs { layer: 1, head: 0, pairs: vec![None, pair(0, 2, 2, 0.1), pair(1, 1, 2, 0.2)] },
            HeadTokenPairs { layer: 0, head: 1, pairs: vec![None, pair(0, 2, 2, 0.3), pair(0, 1, 2, 0.4)] },
        ],
        tokens: vec![vec!["a".into(), " b".into()], vec!["c".into(), " d".into()], vec!["\n".into()]],
    }
}

/// The files of an entry written by `AttnCache::store` in `layout` (with [`cache_token_pairs`]
/// when `pairs`).
fn cache_entry_files(layout: CacheLayout, pairs: bool) -> Vec<(String, Vec<u8>)> {
    let tmp = tempfile::tempdir().unwrap();
    let token_pairs = cache_token_pairs();
    let stored = pairs.then_some(EntryTokenPairs { pairs: &token_pairs, skip_sink: true, selection: "fuzz" });
    let dir = AttnCache::new(tmp.path()).store_with_token_pairs(&cache_key(), &cache_attention(), layout, Some(17), stored).unwrap();
    read_dir_files(&dir)
}

const CACHE_NAMES: [&str; 13] = [
    "4294967295_4294967295.npy",
    "99999999_0.npy",
    "18446744073709551616_0.npy",
    "0_0.npy",
    "1_1.npy",
    "2_0.npy",
    "0_5.npy",
    "attention.npy",
    "manifest.json",
    ".0_0.npy",
    "0_0.npy.tmp",
    "token_pairs.json",
    "token_pairs.npy",
];

#[derive(Debug, Clone)]
enum CacheMutation {
    Manifest(JsonCase),
    /// Byte edits of one data file.
    Data { file: Index, bytes: Vec<ByteMutation> },
    Remove { file: Index },
    Rename { file: Index, to: Index },
    /// A copy of one file under another name.
    Copy { file: Index, to: Index },
}

fn cache_mutation() -> impl Strategy<Value = CacheMutation> {
    prop_oneof![
        4 => json_case().prop_map(CacheMutation::Manifest),
        4 => (any::<Index>(), byte_mutations(1..4)).prop_map(|(file, bytes)| CacheMutation::Data { file, bytes }),
        1 => any::<Index>().prop_map(|file| CacheMutation::Remove { file }),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(file, to)| CacheMutation::Rename { file, to }),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(file, to)| CacheMutation::Copy { file, to }),
    ]
}

#[derive(Debug, Clone)]
struct CacheCase {
    upstream: bool,
    /// A native entry with token pairs.
    pairs: bool,
    mutations: Vec<CacheMutation>,
}

fn mutate_cache(seed: &[(String, Vec<u8>)], mutations: &[CacheMutation], seeds: &[&[u8]]) -> Vec<(String, Vec<u8>)> {
    let mut files = seed.to_vec();
    let tokens: [&[u8]; 6] = [
        b"\"checksums\"",
        b"\"xxh3-128:00000000000000000000000000000000\"",
        b"\"upstream\"",
        b"\"native\"",
        b"\"token_pairs\"",
        b"\"max_tokens\"",
    ];
    let npy_tokens: Vec<&[u8]> = NPY_TOKENS.iter().map(|t| t.as_bytes()).collect();
    for m in mutations {
        match m {
            CacheMutation::Manifest(case) => {
                if let Some((_, bytes)) = files.iter_mut().find(|(n, _)| n == "manifest.json") {
                    *bytes = mutate_json_text(bytes, case, seeds, &tokens);
                }
            }
            CacheMutation::Data { file, bytes } => {
                let data: Vec<usize> = (0..files.len()).filter(|&i| files[i].0.ends_with(".npy") || files[i].0 == "token_pairs.json").collect();
                if !data.is_empty() {
                    let at = data[file.index(data.len())];
                    files[at].1 = mutate_bytes(&files[at].1, bytes, seeds, &npy_tokens, usize::MAX);
                }
            }
            CacheMutation::Remove { file } if !files.is_empty() => {
                let at = file.index(files.len());
                files.remove(at);
            }
            CacheMutation::Rename { file, to } | CacheMutation::Copy { file, to } if !files.is_empty() => {
                let at = file.index(files.len());
                let name = CACHE_NAMES[to.index(CACHE_NAMES.len())].to_string();
                let bytes = files[at].1.clone();
                if matches!(m, CacheMutation::Rename { .. }) {
                    files.remove(at);
                }
                files.retain(|(n, _)| *n != name);
                files.push((name, bytes));
            }
            _ => {}
        }
    }
    files
}

#[test]
fn fuzz_cache_entry() {
    let native = cache_entry_files(CacheLayout::Native, false);
    let with_pairs = cache_entry_files(CacheLayout::Native, true);
    let upstream = cache_entry_files(CacheLayout::Upstream, false);
    let all: Vec<&[u8]> = native.iter().chain(&with_pairs).chain(&upstream).map(|(_, b)| b.as_slice()).collect();
    let original = cache_attention();
    let original_pairs = cache_token_pairs();
    let key = cache_key();
    let tmp = tempfile::tempdir().unwrap();
    let strategy = (any::<bool>(), any::<bool>(), proptest::collection::vec(cache_mutation(), 1..4))
        .prop_map(|(upstream, pairs, mutations)| CacheCase { upstream, pairs, mutations });
    let seed_of = |case: &CacheCase| match (case.upstream, case.pairs) {
        (true, _) => &upstream,
        (false, true) => &with_pairs,
        (false, false) => &native,
    };
    let files_of = |case: &CacheCase| mutate_cache(seed_of(case), &case.mutations, &all);
    let describe = |case: &CacheCase| Some(files_description(files_of(case).into_iter().map(|(n, b)| (n, Some(b))).collect()));
    fuzz("cache-entry", strategy, describe, |case, stats| {
        let seed = seed_of(case);
        let files = files_of(case);
        // Whether any data file of the stored entry is missing or differs from what was stored.
        let data_changed = seed
            .iter()
            .filter(|(n, _)| n.ends_with(".npy"))
            .any(|(name, bytes)| files.iter().find(|(n, _)| n == name).is_none_or(|(_, b)| b != bytes));
        let has_manifest = files.iter().any(|(n, _)| n == "manifest.json");

        let root = case_dir(tmp.path());
        let dir = root.join(&key.model).join(&key.text_id);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in &files {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
        let served = |what: &str, attention: &SentenceAttention| -> Result<(), String> {
            if data_changed {
                return Err(format!("{what} served an entry whose data files were changed"));
            }
            if *attention != original {
                return Err(format!("{what} served matrices other than the stored ones"));
            }
            Ok(())
        };
        let cache = AttnCache::new(&root).strict(true);
        match cache.lookup(&key) {
            Ok(Lookup::Hit(attention)) => {
                stats.count("hit");
                served("lookup", &attention)?;
            }
            Ok(Lookup::Miss) => stats.count("miss"),
            Ok(Lookup::Untrusted(_)) => stats.count("untrusted"),
            Err(_) => stats.count("err"),
        }
        if let Ok(Some(attention)) = cache.load(&key) {
            served("load", &attention)?;
        }
        // Without a manifest the directory is read as a thought-anchors entry, which has nothing
        // to verify against: only "no panic" holds there.
        if let (Ok(attention), true) = (read_entry_dir(&dir), has_manifest) {
            served("read_entry_dir", &attention)?;
        }
        // Token pairs are served only as stored: the seed's, unchanged.
        let pairs_changed = seed
            .iter()
            .filter(|(n, _)| n.starts_with("token_pairs."))
            .any(|(name, bytes)| files.iter().find(|(n, _)| n == name).is_none_or(|(_, b)| b != bytes));
        if let Ok(Some((pairs, _))) = read_entry_token_pairs(&dir) {
            stats.count("token pairs read");
            if pairs_changed || pairs != original_pairs {
                return Err("read_entry_token_pairs served token pairs other than the stored ones".into());
            }
        }
        Ok(())
    });
}

// =============================================================================================
// Regressions: the exact inputs that once panicked, aborted or were accepted

/// The tiny GGUF after `edit`, written to `<tmp>/model.gguf`, and what loading it gives.
fn load_edited_gguf(edit: impl FnOnce(&mut RawGguf)) -> thoughtscope::model::Result<thoughtscope::model::weights::Checkpoint> {
    let (_, mut raw) = tiny_gguf();
    edit(&mut raw);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.gguf");
    std::fs::write(&path, raw.encode()).unwrap();
    load_gguf(&path)
}

fn tensor<'r>(raw: &'r mut RawGguf, name: &str) -> &'r mut RawTensor {
    raw.tensors.iter_mut().find(|t| t.name == name).unwrap()
}

fn set_metadata(raw: &mut RawGguf, key: &str, value: gguf_file::Value) {
    raw.metadata.iter_mut().find(|(k, _)| k == key).unwrap().1 = value;
}

fn expect_error<T, E: std::fmt::Display>(result: Result<T, E>, parts: &[&str]) -> String {
    let error = match result {
        Ok(_) => panic!("accepted; expected an error naming {parts:?}"),
        Err(e) => e.to_string(),
    };
    for part in parts {
        assert!(error.contains(part), "the error should name {part:?}: {error}");
    }
    error
}

#[test]
fn regression_gguf_seed_loads() {
    let checkpoint = load_edited_gguf(|_| {}).unwrap();
    assert_eq!(checkpoint.config.num_hidden_layers, 1);
    assert_eq!(checkpoint.tensors["model.layers.0.self_attn.q_proj.weight"].dims(), [32, 32]);
    assert_eq!(checkpoint.config.rope_freq_divisors.as_ref().map(Vec::len), Some(4));
}

#[test]
fn regression_gguf_alignment_zero_is_an_error() {
    // candle divides the tensor-data offset by `general.alignment`: a panic, now caught.
    let error = expect_error(
        load_edited_gguf(|raw| set_metadata(raw, "general.alignment", gguf_file::Value::U32(0))),
        &["model.gguf", "malformed GGUF"],
    );
    assert!(error.contains("divide by zero"), "{error}");
}

#[test]
fn regression_gguf_tensor_without_elements_is_an_error_not_an_abort() {
    // A 0 dimension made candle build an f32 slice from a dangling pointer: a non-unwinding
    // panic (abort) under debug assertions, which no catch_unwind can stop.
    expect_error(
        load_edited_gguf(|raw| tensor(raw, "output_norm.weight").dims = vec![0]),
        &["model.gguf", "output_norm.weight", "no elements"],
    );
}

#[test]
fn regression_gguf_dimension_product_overflow_is_an_error() {
    // 2^32 · 2^32 overflows candle's element count (a panic with overflow checks on).
    expect_error(
        load_edited_gguf(|raw| tensor(raw, "blk.0.attn_v.weight").dims = vec![1 << 32, 1 << 32]),
        &["model.gguf", "blk.0.attn_v.weight", "overflow"],
    );
}

#[test]
fn regression_gguf_token_embd_without_dimensions_is_an_error() {
    // `shape.dims()[0]` of a 0-d `token_embd.weight` was an index panic.
    expect_error(
        load_edited_gguf(|raw| tensor(raw, "token_embd.weight").dims = Vec::new()),
        &["model.gguf", "token_embd.weight", "no dimensions"],
    );
}

#[test]
fn regression_gguf_head_rows_that_do_not_split_name_file_and_tensor() {
    // Found by fuzz_gguf: a K projection of 2 rows for 2 KV heads (head size 1) failed in a
    // reshape whose error named neither the file nor the tensor. Its 128 bytes no longer fill
    // the tensor's slot, so the layout check now refuses it first (either names both).
    let error = expect_error(
        load_edited_gguf(|raw| tensor(raw, "blk.0.attn_k.weight").dims = vec![32, 2]),
        &["model.gguf", "blk.0.attn_k.weight"],
    );
    assert!(error.contains("2 rows do not split into 2 heads") || error.contains("does not fit its slot"), "{error}");
}

#[test]
fn regression_gguf_nan_rope_divisor_is_an_error_naming_the_file() {
    // The config was validated before `rope_freqs.weight` set its divisors.
    expect_error(
        load_edited_gguf(|raw| {
            let offset = tensor(raw, "rope_freqs.weight").offset as usize;
            raw.data[offset..offset + 4].copy_from_slice(&f32::NAN.to_le_bytes());
        }),
        &["model.gguf", "rope_freqs.weight", "NaN"],
    );
}

#[test]
fn regression_gguf_nan_block_scale_stops_the_forward_naming_layer_and_head() {
    // One NaN block scale in `blk.2.attn_q` of the SmolLM2 GGUF gave flat attention (0.0046 per
    // cell) with exit 0: the softmax turned the head's NaN scores into something finite. Here the
    // first Q4_0 block of `blk.0.attn_q` (row 0, query head 0) gets an f16 NaN scale.
    // The fuzz seed plus the gate projection it leaves out: a model that runs.
    let metadata = tiny_gguf_metadata();
    let mut tensors = tiny_gguf_tensors();
    let gate = Tensor::from_vec(vec![0.01f32; 256 * 32], (256, 32), &Device::Cpu).unwrap();
    tensors.push(("blk.0.ffn_gate.weight", QTensor::quantize(&gate, GgmlDType::F32).unwrap()));
    let meta_refs: Vec<(&str, &gguf_file::Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (*n, t)).collect();
    let mut bytes = std::io::Cursor::new(Vec::new());
    gguf_file::write(&mut bytes, &meta_refs, &tensor_refs).unwrap();
    let mut bytes = bytes.into_inner();
    let content = gguf_file::Content::read(&mut std::io::Cursor::new(&bytes)).unwrap();
    let info = &content.tensor_infos["blk.0.attn_q.weight"];
    assert_eq!(info.ggml_dtype, GgmlDType::Q4_0);
    // A Q4_0 block starts with its f16 scale.
    let at = (content.tensor_data_offset + info.offset) as usize;
    bytes[at..at + 2].copy_from_slice(&[0x00, 0x7e]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.gguf");
    std::fs::write(&path, &bytes).unwrap();
    // Default settings: no weights-hash memo learns the mutated file.
    let settings = thoughtscope::model::Settings::default();
    let model = thoughtscope::model::Model::load_without_tokenizer(path.to_str().unwrap(), &settings).unwrap();
    let mut cache = thoughtscope::model::KvCache::new(&model);
    let result = model.forward(thoughtscope::model::Input::Ids(&[2, 3, 4, 5, 6]), &mut cache, &mut thoughtscope::model::NoHooks);
    expect_error(result, &["non-finite attention scores", "layer 0, head 0"]);
}

#[test]
fn regression_gguf_misaligned_tensor_offset_is_an_error_naming_the_tensor() {
    // Read one byte off, the Q4_0 blocks gave garbage weights with no error.
    expect_error(
        load_edited_gguf(|raw| tensor(raw, "blk.0.attn_q.weight").offset += 1),
        &["model.gguf", "blk.0.attn_q.weight", "alignment"],
    );
}

#[test]
fn regression_gguf_overlapping_tensors_are_an_error_naming_both() {
    expect_error(
        load_edited_gguf(|raw| {
            let offset = tensor(raw, "blk.0.attn_q.weight").offset;
            tensor(raw, "blk.0.attn_k.weight").offset = offset;
        }),
        &["model.gguf", "blk.0.attn_q.weight", "blk.0.attn_k.weight", "overlaps"],
    );
}

#[test]
fn regression_gguf_type_whose_size_does_not_fit_its_slot_is_an_error() {
    // An F32 tensor relabelled F16 read half its bytes as other numbers.
    expect_error(
        load_edited_gguf(|raw| tensor(raw, "blk.0.attn_v.weight").dtype = 1),
        &["model.gguf", "blk.0.attn_v.weight", "f16", "slot"],
    );
}

#[test]
fn regression_gguf_tensor_data_beyond_the_file_is_an_error_naming_the_tensor() {
    expect_error(
        load_edited_gguf(|raw| {
            let end = (raw.data.len() as u64).div_ceil(32) * 32;
            tensor(raw, "output_norm.weight").offset = end;
        }),
        &["model.gguf", "output_norm.weight", "past the end of the file"],
    );
}

#[test]
fn regression_safetensors_index_naming_a_device_is_an_error() {
    // `"weight_map": {"x": "/dev/zero"}` made load_hf_dir read /dev/zero until memory ran out.
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in read_dir_files(&repo().join("tests/fixtures/tiny-llama3-sharded")) {
        std::fs::write(dir.path().join(name), bytes).unwrap();
    }
    let index = dir.path().join("model.safetensors.index.json");
    let mut json: Value = serde_json::from_str(&std::fs::read_to_string(&index).unwrap()).unwrap();
    json["weight_map"]["model.norm.weight"] = "/dev/zero".into();
    std::fs::write(&index, json.to_string()).unwrap();
    expect_error(load_hf_dir(dir.path()), &["model.safetensors.index.json", "weight_map.model.norm.weight", "/dev/zero"]);
    json["weight_map"] = serde_json::json!({});
    std::fs::write(&index, json.to_string()).unwrap();
    expect_error(load_hf_dir(dir.path()), &["model.safetensors.index.json", "weight_map", "no files"]);
}

#[test]
fn regression_codi_join_error_names_both_files() {
    // Found by fuzz_codi_results: join errors named the problem and field but not the files.
    use thoughtscope::codi::{analyze, AnalyzeOptions, ExperimentLayout, ImportanceRule};
    let fixtures = repo().join("tests/fixtures/codi-analysis");
    let tmp = tempfile::tempdir().unwrap();
    let layout = ExperimentLayout::seed(tmp.path(), false);
    std::fs::create_dir_all(layout.results_dir()).unwrap();
    std::fs::copy(fixtures.join("ablation.json"), layout.ablation()).unwrap();
    std::fs::copy(fixtures.join("attention.json"), layout.attention()).unwrap();
    // The fixture's ablation has the binary importance only.
    let options = AnalyzeOptions { importance: ImportanceRule::Logprob, static_images: false, ..AnalyzeOptions::default() };
    expect_error(
        analyze(&layout, &options),
        &["token_ablation_results_100.json", "attention_weights_100.json", "logprob_importance"],
    );
}
