//! thoughtscope-model: decoder-only transformers for interpretability on candle. Configuration,
//! weights (safetensors, hf-hub cache, GGUF), tokenizers, a registry of known models, the decoder
//! with TransformerLens-named hook points and the attention sink it streams to, the CPU kernels,
//! and generation.
//!
//! It knows nothing of tables, plots or the command line: the analysis library `thoughtscope`
//! re-exports it as `thoughtscope::model`, and its attention analyses plug in through
//! [`AttentionSink`] and [`Hooks`]. It also owns what every layer above shares: the error type
//! ([`Error`], [`Context`]), atomic file writes ([`io`]) and progress reporting ([`progress`]).
//!
//! A run's settings (device, weight precision, kernels, progress, folders) are one value,
//! [`Settings`], built from the environment by [`Settings::from_env`] (the only place the crate
//! reads it) and passed to [`Model::load`]:
//!
//! ```no_run
//! use thoughtscope_model::{last_logits, Input, KvCache, Model, NoHooks, Settings};
//! let settings = Settings::from_env()?;
//! settings.apply_process_wide()?;
//! let loaded = Model::load("smollm2-135m", &settings)?;
//! let ids = loaded.tokenizer.encode("The answer is")?;
//! let out = loaded.model.forward(Input::Ids(&ids), &mut KvCache::new(&loaded.model), &mut NoHooks)?;
//! let next = last_logits(&out)?;
//! println!("{} logits for the next token", next.len());
//! # Ok::<(), thoughtscope_model::Error>(())
//! ```

mod allocation;
mod config;
mod decoder;
mod dequant;
mod generate;
mod hooks;
pub mod memory;
pub mod names;
pub mod random;
pub mod registry;
pub mod sampling;
pub mod cpu;
mod env;
mod isa;
mod safetensors_header;
pub mod settings;
mod stored;
mod sink;
mod tokenizer;
pub mod weights;

mod error;
pub mod io;
pub mod progress;

pub use error::{io_error_is_environmental, Context, Error, Result};

use std::path::Path;

use candle_core::Device;

pub use config::{Architecture, Config, RopeScaling};
pub use cpu::Kernels;
pub use progress::ProgressSettings;
pub use settings::Settings;
pub use decoder::{last_logits, ForwardOutput, Input, KvCache, Logits, Model, WeightMemory};
pub use stored::{StoredMatrix, WeightPrecision};
pub use generate::{generate, GenerateOptions, Generation};
pub use hooks::{HookPoint, HookSet, Hooks, Intervention, NoHooks, SinkHooks};
pub use registry::RegistryEntry;
pub use sink::{AttentionBlock, AttentionSink, FullAttentionCapture, HeadConsumer};
pub use tokenizer::{ChatMessage, Tokenizer};

/// A model with its tokenizer and identity.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// Its forward passes take the loading settings' [`Kernels`] ([`Model::set_kernels`] changes them).
    pub model: Model,
    pub tokenizer: Tokenizer,
    /// Short name used for cache directories (registry name, or the file/dir stem).
    pub name: String,
    /// Content hash of the weight files.
    pub weights_hash: String,
    /// Where the weights were read from.
    pub source: String,
    /// The settings it was loaded with: analyses of it follow them (the memory check, the cache's
    /// strictness).
    pub settings: Settings,
}

impl Model {
    /// Load a model from a GGUF file, an HF model directory, an HF hub id present in the local
    /// cache (`org/name`), or a registry name (`smollm2-135m`, `qwen-15b`, ...; under
    /// [`Settings::models_dir`]), on [`Settings::device`].
    ///
    /// Weights are held at [`Settings::weights`] (on the CPU; a GPU gets f32); unless
    /// [`Settings::memory_check`] is off, the weight memory this will take is checked against the
    /// memory available before anything is read. The model's forward passes take
    /// [`Settings::kernels`].
    pub fn load(spec: &str, settings: &Settings) -> Result<Loaded> {
        let (path, name, entry) = resolve(spec, settings)?;
        load_path(&path, &name, entry, settings)
    }

    /// Load only the weights (for checkpoints without a tokenizer, e.g. test models fed ids), as
    /// [`Model::load`] does.
    pub fn load_without_tokenizer(spec: &str, settings: &Settings) -> Result<Model> {
        let (path, _, _) = resolve(spec, settings)?;
        let (checkpoint, precision) = read_checkpoint(&path, settings)?;
        let mut model = Model::from_weights(checkpoint.config, checkpoint.tensors, checkpoint.kept, precision, &settings.device)
            .map_err(|e| Error::format(&path, e.to_string()))?;
        model.set_kernels(settings.kernels);
        Ok(model)
    }
}

/// Only the tokenizer of a model spec (a GGUF's header, or `tokenizer.json`): no weights read.
pub fn load_tokenizer(spec: &str, settings: &Settings) -> Result<Tokenizer> {
    let (path, _, entry) = resolve(spec, settings)?;
    let mut tokenizer = if path.is_dir() {
        Tokenizer::from_file(&path.join("tokenizer.json"))?
    } else {
        let mut reader = std::io::BufReader::new(std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?);
        let content = candle_core::quantized::gguf_file::Content::read(&mut reader)
            .map_err(|e| Error::format(&path, format!("not a readable GGUF file: {e}")))?;
        Tokenizer::from_gguf(&content.metadata, &path)?
    };
    if let Some(e) = entry {
        tokenizer.set_bos(e.bos);
    }
    Ok(tokenizer)
}

/// Where a model spec points: (path of the GGUF file or HF dir, cache name, registry entry). A
/// registry name is looked for under [`Settings::models_dir`], then in the HF hub cache.
pub fn resolve(spec: &str, settings: &Settings) -> Result<(std::path::PathBuf, String, Option<&'static RegistryEntry>)> {
    let path = Path::new(spec);
    if path.is_file() || path.is_dir() {
        return Ok((path.to_path_buf(), stem(path), None));
    }
    if let Some(entry) = registry::lookup(spec) {
        let local = settings.models_dir.join(entry.name);
        if let Some(found) = find_local(&local) {
            return Ok((found, entry.name.to_string(), Some(entry)));
        }
        return match weights::hub_snapshot_dir(entry.hf_id) {
            Ok(dir) => Ok((dir, entry.name.to_string(), Some(entry))),
            Err(_) => Err(Error::invalid(format!(
                "model `{}` not found: no GGUF or model directory in {} and `{}` is not in the HF hub cache{}",
                entry.name,
                local.display(),
                entry.hf_id,
                if entry.name == "smollm2-135m" { " (run scripts/fetch-model.sh)" } else { "" }
            ))),
        };
    }
    if spec.contains('/') && !spec.starts_with('.') && !spec.starts_with('/') {
        let dir = weights::hub_snapshot_dir(spec)?;
        return Ok((dir, hub_name(spec), None));
    }
    Err(Error::invalid(format!(
        "`{spec}` is not a GGUF file, a model directory, a cached hub id or a registry name (known: {})",
        registry::entries().iter().map(|e| e.name).collect::<Vec<_>>().join(", ")
    )))
}

/// The name [`Model::load`] gives the model `spec` (its cache directory name) without loading
/// anything: a registry name, the stem of a file or directory, or the last part of a hub id.
/// Lets a cache be read without the weights (e.g. a thought-anchors cache of a 14B model).
/// Always one safe path component ([`crate::io::path_component`]): a file `...gguf` is `__`,
/// never `..`.
pub fn cache_name(spec: &str) -> String {
    let path = Path::new(spec);
    if path.is_file() || path.is_dir() {
        return stem(path);
    }
    if let Some(entry) = registry::lookup(spec) {
        return entry.name.to_string();
    }
    if spec.contains('/') && !spec.starts_with('.') && !spec.starts_with('/') {
        return hub_name(spec);
    }
    crate::io::path_component(spec)
}

/// Cache name of a file or directory: its lower-cased stem as a safe path component.
fn stem(path: &Path) -> String {
    crate::io::path_component(&path.file_stem().and_then(|s| s.to_str()).unwrap_or("model").to_ascii_lowercase())
}

/// Cache name of a hub id `org/name`: `name`, lower-cased, as a safe path component.
fn hub_name(spec: &str) -> String {
    crate::io::path_component(&spec.rsplit('/').next().unwrap_or(spec).to_ascii_lowercase())
}

/// A `.gguf` file or an HF directory inside a registry model's local folder.
fn find_local(dir: &Path) -> Option<std::path::PathBuf> {
    if dir.join("config.json").exists() {
        return Some(dir.to_path_buf());
    }
    let mut ggufs: Vec<_> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "gguf"))
        .collect();
    ggufs.sort();
    ggufs.into_iter().next()
}

/// The checkpoint at `path` read as `settings` ask, and the precision its matrices are held at.
fn read_checkpoint(path: &Path, settings: &Settings) -> Result<(weights::Checkpoint, WeightPrecision)> {
    if settings.memory_check {
        memory::check_weights_fit(path, settings.weights, &settings.device)?;
    }
    // Weights stay as stored only on the CPU; a GPU gets f32 at load.
    let precision = if settings.device.is_cpu() { settings.weights } else { WeightPrecision::F32 };
    let checkpoint = if path.is_dir() {
        weights::load_hf_dir_with(path, precision)?
    } else if path.extension().is_some_and(|x| x == "gguf") {
        weights::load_gguf_with(path, precision)?
    } else {
        return Err(Error::format(path, "expected a .gguf file or an HF model directory"));
    };
    Ok((checkpoint, precision))
}

fn load_path(path: &Path, name: &str, entry: Option<&RegistryEntry>, settings: &Settings) -> Result<Loaded> {
    let (checkpoint, precision) = read_checkpoint(path, settings)?;
    let mut tokenizer =
        checkpoint.tokenizer.ok_or_else(|| Error::format(path, "no tokenizer.json (needed to encode text)"))?;
    if let Some(e) = entry {
        let cfg = &checkpoint.config;
        if (cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_kv_heads()) != (e.layers, e.heads, e.kv_heads) {
            return Err(Error::format(
                path,
                format!(
                    "registry says `{}` has {} layers × {} heads ({} KV), the checkpoint has {} × {} ({})",
                    e.name,
                    e.layers,
                    e.heads,
                    e.kv_heads,
                    cfg.num_hidden_layers,
                    cfg.num_attention_heads,
                    cfg.num_kv_heads()
                ),
            ));
        }
        tokenizer.set_bos(e.bos);
    }
    let weights_hash = weights::weights_hash(&checkpoint.files, settings.hash_memo.as_deref())?;
    let mut model = Model::from_weights(checkpoint.config, checkpoint.tensors, checkpoint.kept, precision, &settings.device)
        .map_err(|e| Error::format(path, e.to_string()))?;
    model.set_kernels(settings.kernels);
    settings.progress.note(&format!("model {name}: weights {}", model.weight_memory()));
    Ok(Loaded {
        model,
        tokenizer,
        name: name.to_string(),
        weights_hash,
        source: path.display().to_string(),
        settings: settings.clone(),
    })
}

/// The device named on a command line: `cpu`, `cuda` / `cuda:N` or `metal` / `metal:N` (`N`
/// the device number, 0 without one). A GPU needs candle's backend compiled in: thoughtscope's
/// `cuda` feature passes through to candle; Metal has no feature here yet, so it is always
/// refused. Unknown names and missing backends are errors naming the device.
pub fn parse_device(spec: &str) -> Result<Device> {
    let (kind, number) = match spec.split_once(':') {
        Some((kind, number)) => (kind, Some(number)),
        None => (spec, None),
    };
    let ordinal = match number {
        None => 0,
        Some(n) => n.parse::<usize>().map_err(|_| {
            Error::invalid(format!("device `{spec}`: `{n}` is not a device number (e.g. {kind}:0)"))
        })?,
    };
    let opened = match kind {
        "cpu" if number.is_none() => return Ok(Device::Cpu),
        "cuda" if !candle_core::utils::cuda_is_available() => {
            return Err(Error::invalid(format!("device `{spec}`: this thoughtscope is built without CUDA (rebuild with `--features cuda`)")))
        }
        "metal" if !candle_core::utils::metal_is_available() => {
            return Err(Error::invalid(format!("device `{spec}`: this thoughtscope is built without Metal (candle's `metal` backend)")))
        }
        "cuda" => Device::new_cuda(ordinal),
        "metal" => Device::new_metal(ordinal),
        _ => return Err(Error::invalid(format!("unknown device `{spec}` (cpu, cuda, cuda:N, metal or metal:N)"))),
    };
    opened.map_err(|e| Error::invalid(format!("device `{spec}`: {e}")))
}

/// Ask glibc's allocator to keep freed memory for reuse instead of returning it to the kernel.
///
/// A forward pass over a long trace allocates and frees tens of megabytes per layer and step;
/// with glibc's default (blocks above a moving threshold are `mmap`ed and unmapped on free) every
/// one of them comes back as fresh pages the kernel must fault in and zero, about a tenth of the
/// forward time at 3k tokens. Process-wide, so it is the binary's choice (the CLI calls it first
/// thing); a no-op on other platforms.
pub fn reuse_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before other threads allocate.
    unsafe {
        // 32 MiB is the largest threshold glibc accepts on 64-bit; bigger blocks are still mapped.
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

/// Make the calling thread worker 0 of rayon's global pool (one thread fewer is spawned).
///
/// A forward pass makes thousands of parallel calls (every product, every attention block);
/// from a thread outside the pool each one is queued for the workers and the caller sleeps until
/// they are done, two thread hand-offs per call. As a worker the caller runs its share itself.
/// Measured on two Zen 5 cores, SmolLM2 at 3k tokens, three interleaved pairs: 1–7% less wall
/// time. Process-wide and only possible before the pool is first used, so it is the binary's
/// choice (the CLI calls it first thing); `false` when the pool already exists.
pub fn main_thread_in_pool() -> bool {
    rayon::ThreadPoolBuilder::new().use_current_thread().build_global().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_names_are_safe_path_components() {
        let dir = tempfile::tempdir().unwrap();
        for (file, name) in [("...gguf", "__"), ("..gguf", "_"), (".hidden.gguf", "_hidden"), ("SmolLM.gguf", "smollm")] {
            let path = dir.path().join(file);
            std::fs::write(&path, b"").unwrap();
            assert_eq!(cache_name(path.to_str().unwrap()), name, "{file}");
        }
        assert_eq!(cache_name("org/.."), "__");
        assert_eq!(cache_name("no-such-model"), "no-such-model");
    }

    #[test]
    fn parse_device_names_cpu_and_refuses_unknown_names() {
        assert!(matches!(parse_device("cpu"), Ok(Device::Cpu)));
        for bad in ["gpu", "cpu:0", "", "CUDA"] {
            let err = parse_device(bad).unwrap_err().to_string();
            assert!(err.contains(&format!("`{bad}`")) && err.contains("cuda:N"), "{err}");
        }
        let err = parse_device("cuda:x").unwrap_err().to_string();
        assert!(err.contains("`x` is not a device number"), "{err}");
    }

    #[test]
    fn parse_device_refuses_backends_not_compiled_in() {
        if !cfg!(feature = "cuda") {
            let err = parse_device("cuda:1").unwrap_err().to_string();
            assert!(err.contains("`cuda:1`") && err.contains("--features cuda"), "{err}");
        }
        let err = parse_device("metal").unwrap_err().to_string();
        assert!(err.contains("`metal`") && err.contains("without Metal"), "{err}");
    }
}
