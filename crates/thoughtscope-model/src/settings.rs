//! The settings of a run, in one value: where models run, how their weights are held, which CPU
//! kernels their forward passes take, how progress is reported, and where model files and the
//! weight-hash memo live. The binary builds one (from the environment, then its flags) and so does
//! a notebook; it is passed down: [`Model::load`](crate::Model::load) takes it and the loaded
//! model keeps what its forward passes need ([`Kernels`]).
//!
//! Environment variables are read in this file and nowhere else in the libraries:
//! [`Settings::from_env`] for the settings (its table lists them), and a few lookups the analysis
//! library makes where it needs them (external programs, notebook display; see [`lookups`]).
//!
//! Two settings are process-wide, each for a reason given where it is kept: the progress mode
//! ([`crate::progress`]) and whether the kernels take AVX-512 ([`crate::cpu::avx512_enabled`]).
//! [`Settings::apply_process_wide`] sets them; until it is called they follow the environment.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use candle_core::Device;

use crate::cpu::Kernels;
use crate::progress::ProgressSettings;
use crate::stored::WeightPrecision;
use crate::{Error, Result};

/// The settings of a run (see the module doc). [`Settings::default`] reads nothing: the CPU,
/// weights as stored, the native kernels, progress by where stderr goes, the memory check on,
/// `models/` and no hash memo. Fields are public: change what a run needs after building it.
///
/// ```
/// use thoughtscope_model::{Settings, WeightPrecision};
/// let settings = Settings { weights: WeightPrecision::F32, ..Settings::default() };
/// assert!(settings.device.is_cpu() && settings.memory_check);
/// ```
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where models run (the CLI's `--device`).
    pub device: Device,
    /// How weight matrices are held (the CLI's `--weights`).
    pub weights: WeightPrecision,
    /// Which CPU kernels forward passes take, their band size, and whether they time their phases.
    pub kernels: Kernels,
    /// Whether the kernels may take their AVX-512 variants where the CPU has them (`false`: the
    /// AVX2 kernels, to measure them on an AVX-512 machine). Process-wide: see
    /// [`crate::cpu::avx512_enabled`].
    pub avx512: bool,
    /// How long loops report progress (the CLI's `--quiet`: [`ProgressSettings::quiet`]).
    /// Process-wide: see [`crate::progress`].
    pub progress: ProgressSettings,
    /// Refuse, before reading anything, weights (and sentence-attention matrices) larger than the
    /// memory available.
    pub memory_check: bool,
    /// An attention cache entry that fails verification is an error instead of a miss that is
    /// recomputed (read by the analysis library's attention cache).
    pub strict_cache: bool,
    /// The folder holding local model files (registry names resolve under it).
    pub models_dir: PathBuf,
    /// Where [`weights_hash`](crate::weights::weights_hash) remembers file hashes (`None`: every
    /// load hashes the whole files again).
    pub hash_memo: Option<PathBuf>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            device: Device::Cpu,
            weights: WeightPrecision::Stored,
            kernels: Kernels::default(),
            avx512: true,
            progress: ProgressSettings::default(),
            memory_check: true,
            strict_cache: false,
            models_dir: default_models_dir(),
            hash_memo: None,
        }
    }
}

impl Settings {
    /// The settings the environment asks for, on the CPU; a variable with a value it cannot take
    /// is an error naming it. Unset variables leave [`Settings::default`]'s values, except the
    /// hash memo, which then lives in the user's cache folder.
    ///
    /// | Variable | Field | Values |
    /// |---|---|---|
    /// | `THOUGHTSCOPE_WEIGHTS` | `weights` | `stored` (default) or `f32` |
    /// | `THOUGHTSCOPE_PORTABLE` | `kernels.portable` | set and not `0`: candle's ops and the scalar code instead of the SIMD kernels |
    /// | `THOUGHTSCOPE_ISA` | `avx512` | `avx2`: the AVX2 kernels even where the CPU has AVX-512F |
    /// | `THOUGHTSCOPE_PROGRESS` | `progress.mode` | `bar`, `lines` or `off` (`none`, `0`); other values: by where stderr goes |
    /// | `THOUGHTSCOPE_PROGRESS_STEP` | `progress.step_percent` | 1–100: percent between two notebook progress lines (default 10) |
    /// | `EVCXR_IS_RUNTIME` | `progress.notebook` | `1` (evcxr sets it): progress lines on stdout, every `step_percent` % |
    /// | `THOUGHTSCOPE_SKIP_MEMORY_CHECK` | `memory_check` | set and not `0`: no check (e.g. under a cgroup limit `/proc/meminfo` does not show) |
    /// | `THOUGHTSCOPE_STRICT_CACHE` | `strict_cache` | `1`: a cache entry that fails verification is an error |
    /// | `THOUGHTSCOPE_MODELS` | `models_dir` | the models folder (default: `models/` in the working directory, else in the source tree) |
    /// | `THOUGHTSCOPE_HASH_MEMO` | `hash_memo` | a file, or `off` (default: `thoughtscope/weights-hash.json` in `$XDG_CACHE_HOME`, else `~/.cache`) |
    /// | `XDG_CACHE_HOME`, `HOME` | `hash_memo` | where the default memo goes |
    ///
    /// The device has no variable: it is the CLI's `--device`, or the notebook's choice.
    pub fn from_env() -> Result<Settings> {
        Settings::from_vars(|name| std::env::var_os(name))
    }

    /// [`Settings::from_env`] over any variable lookup (testable without touching the process's
    /// environment).
    pub fn from_vars(var: impl Fn(&str) -> Option<OsString>) -> Result<Settings> {
        let text = |name: &str| var(name).map(|v| v.to_string_lossy().into_owned());
        let weights = match text("THOUGHTSCOPE_WEIGHTS") {
            None => WeightPrecision::Stored,
            Some(value) => value.trim().to_ascii_lowercase().parse::<WeightPrecision>().map_err(|_| {
                Error::invalid(format!("environment variable THOUGHTSCOPE_WEIGHTS={value:?}: expected `stored` or `f32`"))
            })?,
        };
        let portable = text("THOUGHTSCOPE_PORTABLE").is_some_and(|v| !v.is_empty() && v != "0");
        let models_dir = match var("THOUGHTSCOPE_MODELS").filter(|v| !v.is_empty()) {
            Some(dir) => PathBuf::from(dir),
            None => default_models_dir(),
        };
        let hash_memo = match text("THOUGHTSCOPE_HASH_MEMO") {
            Some(path) => (!path.is_empty() && path != "off").then(|| PathBuf::from(path)),
            None => var("XDG_CACHE_HOME")
                .filter(|d| !d.is_empty())
                .map(PathBuf::from)
                .or_else(|| var("HOME").filter(|d| !d.is_empty()).map(|home| PathBuf::from(home).join(".cache")))
                .map(|cache| cache.join("thoughtscope").join("weights-hash.json")),
        };
        Ok(Settings {
            device: Device::Cpu,
            weights,
            kernels: Kernels { portable, ..Kernels::default() },
            avx512: crate::cpu::avx512_allowed(&text),
            progress: crate::progress::progress_from(&text),
            memory_check: !text("THOUGHTSCOPE_SKIP_MEMORY_CHECK").is_some_and(|v| v != "0"),
            strict_cache: text("THOUGHTSCOPE_STRICT_CACHE").is_some_and(|v| v.trim() == "1"),
            models_dir,
            hash_memo,
        })
    }

    /// Make the process-wide parts of these settings current: the progress settings of every
    /// reporter made from now on, and whether the kernels take AVX-512 (fixed at the first forward
    /// pass: an error if a pass already ran with the other choice). The binary calls it once,
    /// first thing; a notebook needs it only to change progress (each evcxr cell starts from the
    /// environment again).
    pub fn apply_process_wide(&self) -> Result<()> {
        crate::progress::configure(self.progress);
        crate::cpu::fix_avx512(self.avx512)
    }
}

/// `models/` in the working directory if there is one, else the source tree's (so tests and
/// notebooks find what set-up fetched).
fn default_models_dir() -> PathBuf {
    let cwd = PathBuf::from("models");
    if cwd.is_dir() {
        return cwd;
    }
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../models")).to_path_buf()
}

pub mod lookups {
    //! What the analysis library looks up in the environment where it needs it, at that moment: the
    //! external programs it starts and the notebook display, whose callers (a figure shown as a cell's
    //! value, a static export deep in a report) take no settings value.
    //!
    //! | Variable | Lookup | Use |
    //! |---|---|---|
    //! | `CHROMIUM` | [`chromium`] | the Chromium binary for static image export (else `chromium` on `PATH`) |
    //! | `PATH` | [`path`] | where programs are searched |
    //! | `THOUGHTSCOPE_PYTHON` | [`python`] | the Python that runs notebooks headlessly |
    //! | `VIRTUAL_ENV` | [`virtual_env`] | the active virtualenv, tried next |
    //! | `THOUGHTSCOPE_NOTEBOOK_MATHJAX` | [`notebook_mathjax`] | `0`: plotly.js embedded without MathJax |
    //! | `POLARS_FMT_MAX_ROWS`, `POLARS_FMT_MAX_COLS` | [`table_limit`] | rows and columns a notebook table shows (`-1`: all) |
    //! | `SLURM_ARRAY_TASK_ID`, `_COUNT`, `_MIN` | [`var`] | the shard of a Slurm array task |
    //! | a labeller's `api_key_env` | [`var`] | the API key it sends |
    //!
    //! Besides these, the notebook display keeps two pieces of state in the environment
    //! (`THOUGHTSCOPE_NOTEBOOK_PLOTLY_JS`, `THOUGHTSCOPE_NOTEBOOK_FIGURES`): not settings but memory
    //! shared by evcxr's cells, which each link their own copy of every static.

    use std::ffi::OsString;
    use std::path::PathBuf;

    /// `CHROMIUM`, when set and not empty.
    pub fn chromium() -> Option<PathBuf> {
        std::env::var_os("CHROMIUM").filter(|v| !v.is_empty()).map(PathBuf::from)
    }

    /// `PATH`.
    pub fn path() -> Option<OsString> {
        std::env::var_os("PATH")
    }

    /// `THOUGHTSCOPE_PYTHON`.
    pub fn python() -> Option<PathBuf> {
        std::env::var_os("THOUGHTSCOPE_PYTHON").map(PathBuf::from)
    }

    /// `VIRTUAL_ENV`.
    pub fn virtual_env() -> Option<PathBuf> {
        std::env::var_os("VIRTUAL_ENV").map(PathBuf::from)
    }

    /// The variable of [`notebook_mathjax`].
    pub const NOTEBOOK_MATHJAX: &str = "THOUGHTSCOPE_NOTEBOOK_MATHJAX";

    /// Whether plotly.js is embedded with MathJax: unless `THOUGHTSCOPE_NOTEBOOK_MATHJAX=0`.
    pub fn notebook_mathjax() -> bool {
        crate::env::env_text(NOTEBOOK_MATHJAX).map_or(true, |v| v.trim() != "0")
    }

    /// A polars-style display limit (`POLARS_FMT_MAX_ROWS`, `POLARS_FMT_MAX_COLS`): the number,
    /// `usize::MAX` for a negative one (all), `default` when unset or not a number.
    pub fn table_limit(name: &str, default: usize) -> usize {
        match crate::env::env_text(name).and_then(|v| v.trim().parse::<i64>().ok()) {
            Some(v) if v < 0 => usize::MAX,
            Some(v) => v as usize,
            None => default,
        }
    }

    /// Any other variable by name (the Slurm array task's, a labeller's API key).
    pub fn var(name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::ProgressMode;

    fn vars<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |name| pairs.iter().find(|(n, _)| *n == name).map(|(_, v)| OsString::from(v))
    }

    #[test]
    fn no_variables_give_the_defaults_with_the_memo_in_the_cache_folder() {
        let settings = Settings::from_vars(vars(&[("HOME", "/home/u")])).unwrap();
        let default = Settings::default();
        assert_eq!(settings.weights, default.weights);
        assert_eq!(settings.kernels, default.kernels);
        assert_eq!(settings.progress, default.progress);
        assert_eq!((settings.avx512, settings.memory_check, settings.strict_cache), (true, true, false));
        assert_eq!(settings.models_dir, default.models_dir);
        assert_eq!(settings.hash_memo, Some(PathBuf::from("/home/u/.cache/thoughtscope/weights-hash.json")));
        assert_eq!(Settings::from_vars(vars(&[])).unwrap().hash_memo, None);
    }

    #[test]
    fn every_variable_reaches_its_field() {
        let settings = Settings::from_vars(vars(&[
            ("THOUGHTSCOPE_WEIGHTS", "F32"),
            ("THOUGHTSCOPE_PORTABLE", "1"),
            ("THOUGHTSCOPE_ISA", "avx2"),
            ("THOUGHTSCOPE_PROGRESS", "off"),
            ("THOUGHTSCOPE_PROGRESS_STEP", "25"),
            ("EVCXR_IS_RUNTIME", "1"),
            ("THOUGHTSCOPE_SKIP_MEMORY_CHECK", "1"),
            ("THOUGHTSCOPE_STRICT_CACHE", "1"),
            ("THOUGHTSCOPE_MODELS", "/data/models"),
            ("THOUGHTSCOPE_HASH_MEMO", "off"),
            ("XDG_CACHE_HOME", "/cache"),
        ]))
        .unwrap();
        assert_eq!(settings.weights, WeightPrecision::F32);
        assert!(settings.kernels.portable && !settings.avx512);
        assert_eq!(settings.progress, ProgressSettings { mode: Some(ProgressMode::Off), notebook: true, step_percent: 25 });
        assert!(!settings.memory_check && settings.strict_cache);
        assert_eq!(settings.models_dir, PathBuf::from("/data/models"));
        assert_eq!(settings.hash_memo, None);
        let memo = Settings::from_vars(vars(&[("XDG_CACHE_HOME", "/cache"), ("HOME", "/home/u")])).unwrap().hash_memo;
        assert_eq!(memo, Some(PathBuf::from("/cache/thoughtscope/weights-hash.json")));
        let portable_zero = Settings::from_vars(vars(&[("THOUGHTSCOPE_PORTABLE", "0"), ("THOUGHTSCOPE_SKIP_MEMORY_CHECK", "0")])).unwrap();
        assert!(!portable_zero.kernels.portable && portable_zero.memory_check);
    }

    #[test]
    fn a_weights_value_it_cannot_take_is_an_error_naming_the_variable() {
        let err = Settings::from_vars(vars(&[("THOUGHTSCOPE_WEIGHTS", "f16")])).unwrap_err().to_string();
        assert!(err.contains("THOUGHTSCOPE_WEIGHTS") && err.contains("\"f16\"") && err.contains("`stored` or `f32`"), "{err}");
    }
}
