//! A loaded CODI model (zhenyi4/codi `src/model.py`): the decoder with LoRA merged, the projection
//! `prj = Linear → GELU(erf) → Linear → LayerNorm(eps 1e-5)`, the special ids pad/bot/eot = V0,
//! V0+1, V0+2 (embedding rows only, never tokenizer tokens), and the tokenizer.
//!
//! Two arrangements load:
//! - the seed's: a **base model** (registry name, HF directory, cached hub id or GGUF file, e.g.
//!   `meta-llama/Llama-3.2-1B-Instruct`) whose `config.json` and tokenizer are used, plus the CODI
//!   **checkpoint** directory or file (`~/codi_ckpt/llama_gsm8k/pytorch_model.bin`) that holds
//!   every weight (base + un-merged LoRA + `prj` + the three extra rows) but no config;
//! - a self-contained directory (what `codi make-model` writes): checkpoint file, the base
//!   `config.json`, `tokenizer.json`, and optionally `codi.json` ([`CodiMeta`]: LoRA alpha, and
//!   whether the weights are a real CODI model or a synthetic one).
//!
//! A checkpoint that does not fit its base (vocabulary rows, hidden size, layer shapes, LoRA rank)
//! is an error naming both.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Module, Tensor};
use candle_nn::{LayerNorm, Linear};
use serde::{Deserialize, Serialize};

use super::checkpoint::{find_checkpoint, load_codi_tensors, CheckpointFormat};
use crate::model::{Config, Model, Settings, Tokenizer};
use crate::{Error, Result};

/// CODI's LoRA alpha (r = 128, alpha = 32, scale 0.25; zhenyi4/codi `test.py`).
pub(crate) const CODI_LORA_ALPHA: f64 = 32.0;
/// LayerNorm epsilon of `prj.ln`.
pub(crate) const PRJ_LN_EPS: f64 = 1e-5;
/// File name of the sidecar metadata.
pub(crate) const META_FILE: &str = "codi.json";

/// `codi.json`: what the state dict cannot say.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CodiMeta {
    /// LoRA alpha used at training (scale = alpha / r).
    pub lora_alpha: f64,
    /// False for checkpoints written by `codi make-model`: their results are not CODI results.
    pub real_codi: bool,
    /// Free-text provenance (base model, seed, …).
    #[serde(default)]
    pub note: String,
}

impl Default for CodiMeta {
    fn default() -> Self {
        CodiMeta { lora_alpha: CODI_LORA_ALPHA, real_codi: true, note: String::new() }
    }
}

/// The three extra vocabulary rows appended after the base vocabulary `V0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecialIds {
    /// Base vocabulary size `V0` (the embedding has `V0 + 3` rows).
    pub base_vocab: u32,
    pub pad: u32,
    pub bot: u32,
    pub eot: u32,
}

impl SpecialIds {
    pub fn for_base_vocab(v0: usize) -> Self {
        let v0 = v0 as u32;
        SpecialIds { base_vocab: v0, pad: v0, bot: v0 + 1, eot: v0 + 2 }
    }
}

/// `prj`: Linear(d → prj_dim) → GELU (erf) → Linear(prj_dim → d) → LayerNorm(d).
#[derive(Debug, Clone)]
pub struct Projection {
    first: Linear,
    second: Linear,
    norm: LayerNorm,
}

impl Projection {
    /// Build from tensors named as in the checkpoint without `prj.` (`1.weight`, `1.bias`,
    /// `3.weight`, `3.bias`, `ln.weight`, `ln.bias`).
    pub fn from_tensors(tensors: &HashMap<String, Tensor>, hidden: usize, device: &Device, file: &Path) -> Result<Self> {
        let get = |name: &str| -> Result<Tensor> {
            let t = tensors
                .get(name)
                .ok_or_else(|| Error::format(file, format!("missing projection tensor `prj.{name}`")))?;
            Ok(t.to_device(device)?)
        };
        let w1 = get("1.weight")?;
        let w3 = get("3.weight")?;
        let prj_dim = w1.dim(0)?;
        let expect = |name: &str, t: &Tensor, shape: &[usize]| -> Result<()> {
            if t.dims() != shape {
                return Err(Error::format(
                    file,
                    format!("projection tensor `prj.{name}` has shape {:?}, expected {shape:?}", t.dims()),
                ));
            }
            Ok(())
        };
        expect("1.weight", &w1, &[prj_dim, hidden])?;
        expect("3.weight", &w3, &[hidden, prj_dim])?;
        let b1 = get("1.bias")?;
        expect("1.bias", &b1, &[prj_dim])?;
        let b3 = get("3.bias")?;
        expect("3.bias", &b3, &[hidden])?;
        let ln_w = get("ln.weight")?;
        expect("ln.weight", &ln_w, &[hidden])?;
        let ln_b = get("ln.bias")?;
        expect("ln.bias", &ln_b, &[hidden])?;
        Ok(Projection {
            first: Linear::new(w1, Some(b1)),
            second: Linear::new(w3, Some(b3)),
            norm: LayerNorm::new(ln_w, ln_b, PRJ_LN_EPS),
        })
    }

    /// `z = LN(W3 · gelu_erf(W1·h + b1) + b3)` for hidden states `[.., d]`.
    pub fn forward(&self, hidden: &Tensor) -> Result<Tensor> {
        let h = self.first.forward(hidden)?.gelu_erf()?;
        Ok(self.norm.forward(&self.second.forward(&h)?)?)
    }
}

/// Everything needed to run CODI: decoder, projection, special ids, tokenizer, provenance.
pub struct CodiModel {
    pub model: Model,
    pub projection: Projection,
    pub tokenizer: Tokenizer,
    pub special: SpecialIds,
    pub meta: CodiMeta,
    /// Short label (the checkpoint directory's name).
    pub name: String,
    /// Content hash of the checkpoint file ([`crate::model::weights::weights_hash`]); keys
    /// resumable outputs.
    pub weights_hash: String,
    pub checkpoint: PathBuf,
    pub format: CheckpointFormat,
    pub lora_rank: Option<usize>,
}

impl std::fmt::Debug for CodiModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CodiModel")
            .field("name", &self.name)
            .field("checkpoint", &self.checkpoint)
            .field("special", &self.special)
            .field("lora_rank", &self.lora_rank)
            .field("real_codi", &self.meta.real_codi)
            .finish()
    }
}

/// Options for [`CodiModel::load`].
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// The model the checkpoint was trained from (registry name, HF directory, cached hub id or
    /// GGUF file): its config and tokenizer are used. None: the checkpoint directory's own
    /// `config.json` and `tokenizer.json`.
    pub base: Option<String>,
    /// LoRA alpha; overrides `codi.json` (default 32).
    pub lora_alpha: Option<f64>,
    /// The LoRA rank the checkpoint must have (CODI: 128); None accepts the stored one.
    pub lora_rank: Option<usize>,
}

/// The base model's config and tokenizer, and where they came from.
pub(crate) struct BaseModel {
    /// What the user named (for messages).
    pub spec: String,
    /// The HF directory or GGUF file it resolved to.
    pub path: PathBuf,
    pub config: Config,
    pub tokenizer: Option<Tokenizer>,
}

impl BaseModel {
    /// Resolve `spec` as [`crate::model::Model::load`] does; read only the config and tokenizer
    /// from a directory (a GGUF file has them in its metadata).
    pub fn resolve(spec: &str, settings: &Settings) -> Result<BaseModel> {
        let (path, _, _) = crate::model::resolve(spec, settings)?;
        let (config, tokenizer) = if path.is_dir() {
            let config = Config::from_json_file(&path.join("config.json"))?;
            let tokenizer_path = path.join("tokenizer.json");
            let tokenizer = tokenizer_path.is_file().then(|| Tokenizer::from_file(&tokenizer_path)).transpose()?;
            (config, tokenizer)
        } else {
            let checkpoint = crate::model::weights::load_gguf(&path)?;
            (checkpoint.config, checkpoint.tokenizer)
        };
        Ok(BaseModel { spec: spec.to_owned(), path, config, tokenizer })
    }
}

/// `checkpoint` against the base `config`: the embedding's rows and width, every layer's weight
/// shapes, the number of layers and the LoRA rank. The error names both files.
fn check_fit(tensors: &super::checkpoint::CodiTensors, config: &Config, base: &str, expected_rank: Option<usize>) -> Result<()> {
    let misfit = |what: String| {
        Error::invalid(format!("CODI checkpoint {} does not fit the base model {base}: {what}", tensors.file.display()))
    };
    let embed = tensors.base.get("model.embed_tokens.weight").ok_or_else(|| {
        Error::format(&tensors.file, "missing `codi.base_model.model.model.embed_tokens.weight`")
    })?;
    let (rows, width) = embed.dims2()?;
    if width != config.hidden_size {
        return Err(misfit(format!("the embedding is {width} wide, the base's hidden_size is {}", config.hidden_size)));
    }
    if rows != config.vocab_size + 3 && rows != config.vocab_size {
        return Err(misfit(format!(
            "the embedding has {rows} rows, the base's vocab_size is {} (CODI adds 3 rows: expected {})",
            config.vocab_size,
            config.vocab_size + 3
        )));
    }
    let (d, ff) = (config.hidden_size, config.intermediate_size);
    let (q, kv) = (config.num_attention_heads * config.head_dim(), config.num_kv_heads() * config.head_dim());
    let expected = [
        ("self_attn.q_proj", [q, d]),
        ("self_attn.k_proj", [kv, d]),
        ("self_attn.v_proj", [kv, d]),
        ("self_attn.o_proj", [d, q]),
        ("mlp.gate_proj", [ff, d]),
        ("mlp.up_proj", [ff, d]),
        ("mlp.down_proj", [d, ff]),
    ];
    for layer in 0..config.num_hidden_layers {
        for (module, shape) in &expected {
            let name = format!("model.layers.{layer}.{module}.weight");
            let tensor = tensors.base.get(&name).ok_or_else(|| {
                misfit(format!("the base has {} layers, the checkpoint has no `{name}`", config.num_hidden_layers))
            })?;
            if tensor.dims() != shape {
                return Err(misfit(format!("`{name}` is {:?}, the base's config gives {shape:?}", tensor.dims())));
            }
        }
    }
    let extra = format!("model.layers.{}.self_attn.q_proj.weight", config.num_hidden_layers);
    if tensors.base.contains_key(&extra) {
        return Err(misfit(format!("the checkpoint has more than the base's {} layers", config.num_hidden_layers)));
    }
    if let (Some(expected), found) = (expected_rank, tensors.lora_rank) {
        if found != Some(expected) {
            let found = found.map_or("no LoRA".to_owned(), |r| format!("LoRA rank {r}"));
            return Err(misfit(format!("expected LoRA rank {expected}, the checkpoint has {found}")));
        }
    }
    Ok(())
}

/// The network part of a CODI checkpoint, without the tokenizer: what a forward pass needs.
#[derive(Debug, Clone)]
pub struct CodiWeights {
    pub model: Model,
    pub projection: Projection,
    pub special: SpecialIds,
    pub meta: CodiMeta,
    /// Directory holding the checkpoint.
    pub dir: PathBuf,
    pub checkpoint: PathBuf,
    pub format: CheckpointFormat,
    pub lora_rank: Option<usize>,
}

impl CodiWeights {
    /// Read `codi.json` (optional), `config.json` and the checkpoint; merge LoRA; build the decoder
    /// with the `V0 + 3` vocabulary and the projection, on the settings' device and kernels.
    pub fn load(path: &Path, options: &LoadOptions, settings: &Settings) -> Result<CodiWeights> {
        let base = options.base.as_deref().map(|spec| BaseModel::resolve(spec, settings)).transpose()?;
        Self::load_on(path, base.as_ref(), options, settings)
    }

    /// [`CodiWeights::load`] with the base model already resolved (read once, also for its tokenizer).
    fn load_on(path: &Path, base: Option<&BaseModel>, options: &LoadOptions, settings: &Settings) -> Result<CodiWeights> {
        let device = &settings.device;
        // First the cheap check, so a wrong path is reported as such.
        find_checkpoint(path)?;
        let dir = if path.is_file() { path.parent().unwrap_or(Path::new(".")).to_path_buf() } else { path.to_path_buf() };
        let meta_path = dir.join(META_FILE);
        let mut meta = if meta_path.is_file() {
            let text = std::fs::read_to_string(&meta_path).map_err(|e| Error::io(&meta_path, e))?;
            serde_json::from_str(&text).map_err(|e| Error::format(&meta_path, format!("invalid codi.json: {e}")))?
        } else {
            CodiMeta::default()
        };
        if let Some(alpha) = options.lora_alpha {
            meta.lora_alpha = alpha;
        }
        let (mut config, base_label) = match base {
            Some(base) => (base.config.clone(), format!("{} ({})", base.spec, base.path.display())),
            None => {
                let config_path = dir.join("config.json");
                if !config_path.is_file() {
                    return Err(Error::format(
                        &config_path,
                        "missing: a CODI checkpoint without config.json needs its base model (--base, e.g. meta-llama/Llama-3.2-1B-Instruct)",
                    ));
                }
                (Config::from_json_file(&config_path)?, config_path.display().to_string())
            }
        };

        let tensors = load_codi_tensors(path, meta.lora_alpha)?;
        check_fit(&tensors, &config, &base_label, options.lora_rank)?;
        let file = tensors.file.clone();
        let rows = tensors.base["model.embed_tokens.weight"].dim(0)?;
        if rows < 4 {
            return Err(Error::format(&file, format!("embedding has {rows} rows; CODI needs V0 + 3")));
        }
        let base_vocab = rows - 3;
        config.vocab_size = rows;
        let hidden = config.hidden_size;
        let projection = Projection::from_tensors(&tensors.projection, hidden, device, &file)?;
        let mut model = Model::from_tensors(config, tensors.base, device)?;
        model.set_kernels(settings.kernels);
        Ok(CodiWeights {
            model,
            projection,
            special: SpecialIds::for_base_vocab(base_vocab),
            meta,
            dir,
            checkpoint: file,
            format: tensors.format,
            lora_rank: tensors.lora_rank,
        })
    }
}

impl CodiModel {
    /// Load a CODI checkpoint directory (or a checkpoint file inside one) as `settings` say
    /// (device, kernels, where registry bases live, the hash memo).
    pub fn load(path: &Path, options: &LoadOptions, settings: &Settings) -> Result<CodiModel> {
        // The base is read once, and its tokenizer checked before the checkpoint is loaded.
        let mut base = options.base.as_deref().map(|spec| BaseModel::resolve(spec, settings)).transpose()?;
        let base_tokenizer = match &mut base {
            Some(b) => Some(b.tokenizer.take().ok_or_else(|| {
                Error::invalid(format!("base model {} has no tokenizer (tokenizer.json) to encode the questions", b.spec))
            })?),
            None => None,
        };
        let weights = CodiWeights::load_on(path, base.as_ref(), options, settings)?;
        let tokenizer = match base_tokenizer {
            Some(tokenizer) => tokenizer,
            None => Tokenizer::from_file(&weights.dir.join("tokenizer.json"))?,
        };
        let weights_hash = crate::model::weights::weights_hash(std::slice::from_ref(&weights.checkpoint), settings.hash_memo.as_deref())?;
        let name = weights.dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "codi".into());
        Ok(CodiModel::from_parts(weights, tokenizer, name, weights_hash))
    }

    /// Assemble from loaded weights and a tokenizer.
    pub fn from_parts(weights: CodiWeights, tokenizer: Tokenizer, name: String, weights_hash: String) -> CodiModel {
        CodiModel {
            model: weights.model,
            projection: weights.projection,
            tokenizer,
            special: weights.special,
            meta: weights.meta,
            name,
            weights_hash,
            checkpoint: weights.checkpoint,
            format: weights.format,
            lora_rank: weights.lora_rank,
        }
    }

    /// Token ids of the model's end-of-sequence: the tokenizer's EOS plus the config's, deduplicated
    /// (stopping on every EOS the model may have been trained with).
    pub fn stop_ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = self.tokenizer.eos().to_vec();
        for id in self.model.config().eos_ids() {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        ids
    }

    /// The warning every output of a synthetic checkpoint carries.
    pub fn provenance_note(&self) -> Option<String> {
        (!self.meta.real_codi).then(|| {
            format!("NOT A CODI MODEL: {}: {}; results on it are not CODI results", self.name, self.meta.note)
        })
    }

    /// What figure titles append: " — NOT A CODI MODEL" on a synthetic checkpoint, else empty.
    pub fn title_note(&self) -> String {
        if self.meta.real_codi { String::new() } else { " — NOT A CODI MODEL".to_owned() }
    }
}
