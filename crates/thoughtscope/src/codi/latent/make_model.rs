//! `codi make-model`: a CODI-**shaped** checkpoint built from a base model (e.g. SmolLM2-135M),
//! so the real loader and every pipeline step run for real without CODI weights (none are
//! available offline). It is NOT a CODI model: its LoRA and projection are seeded random values,
//! not trained ones, and every output made with it says so.
//!
//! Written in the real layout (zhenyi4/codi's saved `CODI` module): one state dict with the base weights under
//! `codi.base_model.model.` (`…base_layer.weight` for LoRA targets, stored bf16 as CODI's), LoRA
//! factors `lora_A.default.weight` `[r, in]` / `lora_B.default.weight` `[out, r]` (f32) on
//! q/k/v/o/gate/up/down of every layer, `prj.{1,3,ln}.{weight,bias}` (f32), and an embedding with
//! three extra rows (pad/bot/eot). Saved as `model.safetensors` (tied `lm_head` omitted, as a
//! safetensors conversion of the real `.bin` must), with `config.json` (base vocabulary V0),
//! `tokenizer.json`, `tokenizer_config.json`, `codi.json` and a README.
//!
//! Initialisation (seeded ChaCha8): LoRA A ~ U(±1/√in) (PEFT's Kaiming-uniform bound); B ~ N(0, σ²)
//! with σ chosen so that the merged update `(α/r)·B·A` has 5 % of the base matrix's standard
//! deviation (PEFT would start B at 0, which would leave the merge untested); prj linears ~
//! U(±1/√in) like `nn.Linear`; `prj.ln` weight/bias = the per-dimension std/mean of the base
//! embedding rows, so latents fed back as input embeddings have the scale of real embeddings;
//! extra rows = mean embedding + N(0, (0.1·std)²).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::checkpoint::PEFT_PREFIX;
use super::codi_model::{CodiMeta, META_FILE};
use crate::io::write_atomic;
use crate::model::{registry, weights, Config, Settings, Tokenizer};
use crate::{Error, Result};

/// LoRA target modules of CODI's LLaMA config.
const LORA_TARGETS: [&str; 7] = [
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
];

/// Settings of [`make_model`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MakeModelOptions {
    /// Base model spec: registry name, GGUF file or HF directory.
    pub base: String,
    pub seed: u64,
    /// LoRA rank (CODI: 128).
    pub lora_r: usize,
    /// LoRA alpha (CODI: 32; scale alpha / r).
    pub lora_alpha: f64,
    /// Store base weights in bf16 as CODI's checkpoints do (f32 otherwise).
    pub base_bf16: bool,
}

impl Default for MakeModelOptions {
    fn default() -> Self {
        MakeModelOptions { base: "smollm2-135m".into(), seed: 0, lora_r: 128, lora_alpha: 32.0, base_bf16: true }
    }
}

/// Resolve a base model spec the way `Model::load` does and read its tensors under HF names.
fn read_base(spec: &str, settings: &Settings) -> Result<(weights::Checkpoint, Option<&'static registry::RegistryEntry>)> {
    let path = Path::new(spec);
    let read_path = |p: &Path| -> Result<weights::Checkpoint> {
        if p.is_dir() {
            Ok(weights::load_hf_dir(p)?)
        } else if p.extension().is_some_and(|x| x == "gguf") {
            Ok(weights::load_gguf(p)?)
        } else {
            Err(Error::format(p, "expected a .gguf file or an HF model directory"))
        }
    };
    if path.exists() {
        return Ok((read_path(path)?, None));
    }
    let entry = registry::lookup(spec)
        .ok_or_else(|| Error::invalid(format!("base `{spec}` is not a file, a directory or a registry name")))?;
    let local = settings.models_dir.join(entry.name);
    let found = if local.join("config.json").is_file() {
        Some(local.clone())
    } else {
        let mut ggufs: Vec<PathBuf> = std::fs::read_dir(&local)
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "gguf")).collect())
            .unwrap_or_default();
        ggufs.sort();
        ggufs.into_iter().next()
    };
    let checkpoint = match found {
        Some(p) => read_path(&p)?,
        None => weights::load_hf_dir(&weights::hub_snapshot_dir(entry.hf_id).map_err(|_| {
            Error::invalid(format!(
                "base model `{}` not found in {} nor in the HF hub cache (run scripts/fetch-model.sh)",
                entry.name,
                local.display()
            ))
        })?)?,
    };
    Ok((checkpoint, Some(entry)))
}

/// Seeded N(0, 1) / U(-1, 1) samples.
struct Sampler(ChaCha8Rng);

impl Sampler {
    fn normal(&mut self, n: usize, std: f32) -> Vec<f32> {
        let mut out = Vec::with_capacity(n + 1);
        while out.len() < n {
            // Box–Muller: two uniforms → two normals.
            let u1: f32 = self.0.random::<f32>().max(f32::MIN_POSITIVE);
            let u2: f32 = self.0.random::<f32>();
            let radius = (-2.0 * u1.ln()).sqrt();
            let angle = 2.0 * std::f32::consts::PI * u2;
            out.push(radius * angle.cos() * std);
            out.push(radius * angle.sin() * std);
        }
        out.truncate(n);
        out
    }
    fn uniform(&mut self, n: usize, bound: f32) -> Vec<f32> {
        (0..n).map(|_| (self.0.random::<f32>() * 2.0 - 1.0) * bound).collect()
    }
}

fn tensor(values: Vec<f32>, shape: &[usize]) -> Result<Tensor> {
    Ok(Tensor::from_vec(values, shape, &Device::Cpu)?)
}

fn std_of(t: &Tensor) -> Result<f32> {
    let v = t.flatten_all()?.to_vec1::<f32>()?;
    let n = v.len() as f64;
    let m = v.iter().map(|&x| x as f64).sum::<f64>() / n;
    Ok((v.iter().map(|&x| (x as f64 - m).powi(2)).sum::<f64>() / n).sqrt() as f32)
}

/// Write a CODI-shaped checkpoint directory at `out`, as a whole ([`crate::io::write_folder_atomically`]:
/// an earlier checkpoint there is replaced, a folder of other files refused; a registry base is
/// found under the settings' models folder); returns the checkpoint file.
pub fn make_model(options: &MakeModelOptions, out: &Path, settings: &Settings) -> Result<PathBuf> {
    crate::io::check_replaceable(out)?;
    let (base, entry) = read_base(&options.base, settings)?;
    let config = base.config.clone();
    if config.rope_freq_divisors.is_some() && config.rope_scaling.is_none() {
        return Err(Error::invalid(
            "this GGUF base carries RoPE scaling only as rope_freqs, which config.json cannot hold; use an HF directory",
        ));
    }
    let mut tokenizer = base.tokenizer.clone().ok_or_else(|| Error::invalid("the base model has no tokenizer"))?;
    if let Some(e) = entry {
        tokenizer.set_bos(e.bos);
    }
    let mut tensors = base.tensors;
    let mut rng = Sampler(ChaCha8Rng::seed_from_u64(options.seed));
    let r = options.lora_r;
    let scale = (options.lora_alpha / r as f64) as f32;
    let base_dtype = if options.base_bf16 { DType::BF16 } else { DType::F32 };
    let mut state: HashMap<String, Tensor> = HashMap::new();

    // 1. Embedding with three extra rows (pad, bot, eot) = mean row + small noise.
    let embed = tensors.remove("model.embed_tokens.weight").ok_or_else(|| Error::invalid("base has no model.embed_tokens.weight"))?;
    let (v0, d) = embed.dims2()?;
    let row_mean = embed.mean(0)?; // [d]
    let row_std = embed.broadcast_sub(&row_mean)?.sqr()?.mean(0)?.sqrt()?; // [d]
    let noise_std = std_of(&embed)? * 0.1;
    let extra = row_mean.unsqueeze(0)?.broadcast_add(&tensor(rng.normal(3 * d, noise_std), &[3, d])?)?;
    let embed = Tensor::cat(&[&embed, &extra], 0)?;
    state.insert(format!("{PEFT_PREFIX}model.embed_tokens.weight"), embed.to_dtype(base_dtype)?);
    if !config.tie_word_embeddings {
        let head = tensors.remove("lm_head.weight").ok_or_else(|| Error::invalid("untied base has no lm_head.weight"))?;
        let head_extra = tensor(rng.normal(3 * d, std_of(&head)?), &[3, d])?;
        state.insert(format!("{PEFT_PREFIX}lm_head.weight"), Tensor::cat(&[&head, &head_extra], 0)?.to_dtype(base_dtype)?);
    }
    tensors.remove("lm_head.weight");

    // 2. Layers: LoRA targets become base_layer + lora_A/lora_B; the rest keeps its name.
    let mut names: Vec<String> = tensors.keys().cloned().collect();
    names.sort();
    for name in names {
        let t = tensors.remove(&name).expect("listed above");
        let is_target = LORA_TARGETS.iter().any(|m| name.ends_with(&format!("{m}.weight")));
        if !is_target {
            state.insert(format!("{PEFT_PREFIX}{name}"), t.to_dtype(base_dtype)?);
            continue;
        }
        let module = name.strip_suffix(".weight").expect("ends with .weight");
        let (fan_out, fan_in) = t.dims2()?;
        let a = rng.uniform(r * fan_in, 1.0 / (fan_in as f32).sqrt());
        // Var((B·A)_ij) = r σ_B² / (3 fan_in); aim the merged update at 5 % of W's std.
        let target = 0.05 * std_of(&t)?;
        let sigma_b = target / scale / (r as f32 / (3.0 * fan_in as f32)).sqrt();
        let b = rng.normal(fan_out * r, sigma_b);
        state.insert(format!("{PEFT_PREFIX}{module}.base_layer.weight"), t.to_dtype(base_dtype)?);
        state.insert(format!("{PEFT_PREFIX}{module}.lora_A.default.weight"), tensor(a, &[r, fan_in])?);
        state.insert(format!("{PEFT_PREFIX}{module}.lora_B.default.weight"), tensor(b, &[fan_out, r])?);
    }

    // 3. Projection prj: Linear(d, d) → GELU → Linear(d, d) → LayerNorm(d).
    let bound = 1.0 / (d as f32).sqrt();
    state.insert("prj.1.weight".into(), tensor(rng.uniform(d * d, bound), &[d, d])?);
    state.insert("prj.1.bias".into(), tensor(rng.uniform(d, bound), &[d])?);
    state.insert("prj.3.weight".into(), tensor(rng.uniform(d * d, bound), &[d, d])?);
    state.insert("prj.3.bias".into(), tensor(rng.uniform(d, bound), &[d])?);
    state.insert("prj.ln.weight".into(), row_std.contiguous()?);
    state.insert("prj.ln.bias".into(), row_mean.contiguous()?);

    // 4. Files: the checkpoint folder as a whole, so a killed run never leaves new weights beside
    // an old config.
    crate::io::write_folder_atomically(out, |out| write_checkpoint(out, &state, config, &tokenizer, v0, options))?;
    Ok(out.join("model.safetensors"))
}

/// The checkpoint's files in `out`.
fn write_checkpoint(
    out: &Path,
    state: &HashMap<String, Tensor>,
    mut config: Config,
    tokenizer: &Tokenizer,
    v0: usize,
    options: &MakeModelOptions,
) -> Result<()> {
    let file = out.join("model.safetensors");
    let tmp = out.join(".model.safetensors.tmp");
    candle_core::safetensors::save(state, &tmp).map_err(|e| Error::format(&tmp, format!("writing safetensors: {e}")))?;
    std::fs::rename(&tmp, &file).map_err(|e| Error::io(&file, e))?;

    config.vocab_size = v0;
    write_atomic(&out.join("config.json"), serde_json::to_string_pretty(&config)?.as_bytes())?;
    let tok_path = out.join("tokenizer.json");
    tokenizer
        .inner()
        .save(&tok_path, false)
        .map_err(|e| Error::format(&tok_path, format!("writing tokenizer: {e}")))?;
    let id_to_token = |id: u32| tokenizer.inner().id_to_token(id);
    let tok_config = serde_json::json!({
        "add_bos_token": tokenizer.bos().is_some(),
        "bos_token": tokenizer.bos().and_then(id_to_token),
        "eos_token": tokenizer.eos().first().copied().or_else(|| config.eos_ids().first().copied()).and_then(id_to_token),
    });
    write_atomic(&out.join("tokenizer_config.json"), serde_json::to_string_pretty(&tok_config)?.as_bytes())?;
    let note = format!(
        "CODI-shaped checkpoint from base `{}` (seed {}, LoRA r={} alpha={}); random LoRA/projection, not trained",
        options.base, options.seed, options.lora_r, options.lora_alpha
    );
    let meta = CodiMeta { lora_alpha: options.lora_alpha, real_codi: false, note: note.clone() };
    write_atomic(&out.join(META_FILE), serde_json::to_string_pretty(&meta)?.as_bytes())?;
    let readme = format!(
        "# NOT A CODI MODEL\n\n{note}.\n\nThis directory has the key layout, dtypes and extra vocabulary rows of a real CODI \
         checkpoint so that `thoughtscope codi` runs end to end, but its weights were never \
         trained with CODI. Results computed with it are **not CODI results**; they test the pipeline only.\n\n\
         Made by `thoughtscope codi make-model` with {}.\n",
        serde_json::to_string(options)?
    );
    write_atomic(&out.join("README.md"), readme.as_bytes())?;
    Ok(())
}
