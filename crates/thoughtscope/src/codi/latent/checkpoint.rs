//! Reading CODI checkpoints (as zhenyi4/codi `test.py` loads them): the whole CODI module's `state_dict`, as
//! `pytorch_model.bin` (PyTorch zip/pickle, read with candle's pickle reader, no Python) or
//! `model.safetensors`, with base weights, **un-merged** PEFT LoRA, the projection `prj` and the
//! three extra vocabulary rows (pad, bot, eot).
//!
//! Loading maps the PEFT key layout (`codi.base_model.model.model.layers.{i}.self_attn.q_proj.
//! base_layer.weight`, `…lora_A.default.weight`, `…lora_B.default.weight`) to plain HF names and
//! merges LoRA in f32 as `W + (alpha / r) · B·A`. The rank r is read from `lora_A`'s shape; alpha
//! is not stored in a state dict, so it comes from `codi.json` next to the checkpoint or the caller
//! (CODI's value is 32).

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use crate::{Error, Result};

/// Prefix of the PEFT-wrapped base model inside the CODI module.
pub(crate) const PEFT_PREFIX: &str = "codi.base_model.model.";
/// Prefix of an un-wrapped base model (a CODI module saved without PEFT, or already merged).
const PLAIN_PREFIX: &str = "codi.";
/// File names `test.py` tries, in order.
pub(crate) const CHECKPOINT_FILES: [&str; 2] = ["model.safetensors", "pytorch_model.bin"];

/// On-disk format of a checkpoint file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckpointFormat {
    Safetensors,
    Pytorch,
}

/// The checkpoint's tensors after LoRA merging, split into the base model (HF names) and `prj`.
#[derive(Debug)]
pub(crate) struct CodiTensors {
    /// Base-model tensors by HF name (`model.embed_tokens.weight`, …, `lm_head.weight` if present), f32.
    pub base: HashMap<String, Tensor>,
    /// Projection tensors by their checkpoint name without `prj.` (`1.weight`, `ln.bias`, …), f32.
    pub projection: HashMap<String, Tensor>,
    /// LoRA rank found (None when the checkpoint had no LoRA tensors).
    pub lora_rank: Option<usize>,
    pub file: PathBuf,
    pub format: CheckpointFormat,
}

/// Find the checkpoint file in `dir` (safetensors first, as `test.py`), or accept a file path.
pub fn find_checkpoint(path: &Path) -> Result<(PathBuf, CheckpointFormat)> {
    let format_of = |p: &Path| -> Result<CheckpointFormat> {
        match p.extension().and_then(|e| e.to_str()) {
            Some("safetensors") => Ok(CheckpointFormat::Safetensors),
            Some("bin") | Some("pt") | Some("pth") => Ok(CheckpointFormat::Pytorch),
            _ => Err(Error::format(p, "unknown checkpoint extension (expected .safetensors or .bin)")),
        }
    };
    if path.is_file() {
        return Ok((path.to_path_buf(), format_of(path)?));
    }
    if !path.is_dir() {
        return Err(Error::io(path, std::io::Error::new(std::io::ErrorKind::NotFound, "no such CODI checkpoint")));
    }
    for name in CHECKPOINT_FILES {
        let candidate = path.join(name);
        if candidate.is_file() {
            let format = format_of(&candidate)?;
            return Ok((candidate, format));
        }
    }
    Err(Error::format(path, format!("no CODI checkpoint file: expected one of {CHECKPOINT_FILES:?}")))
}

/// Read every tensor of a checkpoint file (CPU, dtype as stored).
pub(crate) fn read_tensors(file: &Path, format: CheckpointFormat) -> Result<HashMap<String, Tensor>> {
    let wrap = |e: candle_core::Error| Error::format(file, format!("reading checkpoint: {e}"));
    match format {
        CheckpointFormat::Safetensors => candle_core::safetensors::load(file, &Device::Cpu).map_err(wrap),
        CheckpointFormat::Pytorch => {
            let tensors = candle_core::pickle::read_all(file).map_err(wrap)?;
            if tensors.is_empty() {
                return Err(Error::format(file, "no tensors found: expected a torch.save'd state_dict"));
            }
            Ok(tensors.into_iter().collect())
        }
    }
}

/// Read a checkpoint and merge LoRA with scale `lora_alpha / r`.
pub(crate) fn load_codi_tensors(path: &Path, lora_alpha: f64) -> Result<CodiTensors> {
    let (file, format) = find_checkpoint(path)?;
    let raw = read_tensors(&file, format)?;
    split_and_merge(raw, lora_alpha, &file, format)
}

/// Map checkpoint keys to HF names and merge LoRA; any key that is neither base, LoRA nor `prj`
/// is an error naming it (a silently ignored tensor could mean a silently wrong model).
pub(crate) fn split_and_merge(
    raw: HashMap<String, Tensor>,
    lora_alpha: f64,
    file: &Path,
    format: CheckpointFormat,
) -> Result<CodiTensors> {
    if raw.keys().any(|k| k.contains(".transformer.wte.") || k.contains(".transformer.h.")) {
        return Err(Error::format(file, "GPT-2 CODI checkpoints are not supported yet (only the Llama family)"));
    }
    let to_f32 = |name: &str, t: Tensor| -> Result<Tensor> {
        t.to_dtype(DType::F32).map_err(|e| Error::format(file, format!("tensor `{name}`: {e}")))
    };

    let mut base: HashMap<String, Tensor> = HashMap::new();
    let mut projection = HashMap::new();
    // LoRA factors by the HF name of the weight they modify.
    let mut lora_a: HashMap<String, Tensor> = HashMap::new();
    let mut lora_b: HashMap<String, Tensor> = HashMap::new();
    let mut unknown = BTreeSet::new();

    for (key, tensor) in raw {
        if let Some(rest) = key.strip_prefix("prj.") {
            projection.insert(rest.to_owned(), to_f32(&key, tensor)?);
            continue;
        }
        let inner = match key.strip_prefix(PEFT_PREFIX).or_else(|| key.strip_prefix(PLAIN_PREFIX)) {
            Some(inner) => inner,
            None => {
                unknown.insert(key);
                continue;
            }
        };
        if inner.ends_with("rotary_emb.inv_freq") {
            continue; // a buffer some transformers versions save; recomputed from the config
        }
        if let Some((module, _)) = inner.split_once(".lora_A.") {
            lora_a.insert(format!("{module}.weight"), to_f32(&key, tensor)?);
        } else if let Some((module, _)) = inner.split_once(".lora_B.") {
            lora_b.insert(format!("{module}.weight"), to_f32(&key, tensor)?);
        } else if inner.contains(".lora_") {
            unknown.insert(key);
        } else {
            let name = inner.replace(".base_layer.", ".");
            base.insert(name, to_f32(&key, tensor)?);
        }
    }
    if !unknown.is_empty() {
        let list: Vec<_> = unknown.into_iter().take(5).collect();
        return Err(Error::format(file, format!("unexpected keys (not CODI's layout): {}", list.join(", "))));
    }
    if base.is_empty() {
        return Err(Error::format(file, format!("no base-model tensors under `{PEFT_PREFIX}`")));
    }

    let mut lora_rank = None;
    let mut names: Vec<String> = lora_a.keys().cloned().collect();
    names.sort();
    for name in names {
        let a = lora_a.remove(&name).expect("key listed above");
        let b = lora_b.remove(&name).ok_or_else(|| {
            Error::format(file, format!("LoRA for `{name}` has lora_A but no lora_B"))
        })?;
        let w = base.get(&name).ok_or_else(|| {
            Error::format(file, format!("LoRA targets `{name}`, which has no base_layer weight"))
        })?;
        let (r, fan_in) = a.dims2().map_err(|e| Error::format(file, format!("lora_A of `{name}`: {e}")))?;
        let (fan_out, rb) = b.dims2().map_err(|e| Error::format(file, format!("lora_B of `{name}`: {e}")))?;
        if rb != r || w.dims() != [fan_out, fan_in] {
            return Err(Error::format(
                file,
                format!(
                    "LoRA shapes of `{name}` disagree: W {:?}, A {:?}, B {:?}",
                    w.dims(),
                    a.dims(),
                    b.dims()
                ),
            ));
        }
        match lora_rank {
            None => lora_rank = Some(r),
            Some(r0) if r0 != r => {
                return Err(Error::format(file, format!("LoRA rank differs between modules ({r0} vs {r} at `{name}`)")))
            }
            _ => {}
        }
        let scale = lora_alpha / r as f64;
        let merged = (w + (b.matmul(&a)? * scale)?)?;
        base.insert(name, merged);
    }
    if let Some(name) = lora_b.keys().next() {
        return Err(Error::format(file, format!("LoRA for `{name}` has lora_B but no lora_A")));
    }
    Ok(CodiTensors { base, projection, lora_rank, file: file.to_path_buf(), format })
}
