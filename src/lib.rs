//! thoughtscope: sentence-level attention ("thought anchors") and continuous-thought (CODI)
//! analyses of reasoning models, for Rust notebooks (evcxr) and the command line.
//!
//! Module map (see `../shared/design.md`):
//! - [`model`]: configs, weights (safetensors, hf-hub cache, GGUF), tokenizers, the decoder with
//!   TransformerLens-named hook points and the attention sink it streams to, generation.
//! - [`attention`]: sentence segmentation, token boundaries, sentence averaging, the cache.
//! - [`scores`]: vertical scores, kurtosis, receiver heads.
//! - [`rollout`]: the thought-anchors rollout directory layout, tag masks, taggers, generation.
//! - [`codi`]: CODI checkpoints, the latent loop, ablation, attention to latents.
//! - [`analysis`]: polars tables and statistics.
//! - [`plot`]: plotly figures, HTML reports and static export.
//! - [`notebook`]: evcxr display glue.
//! - [`io`]: atomic file writes, JSON, `.npy`.
//! - [`progress`]: the one progress reporter every long loop uses (bars, log lines, notebook lines).

pub mod analysis;
pub mod attention;
pub mod codi;
pub mod io;
pub mod model;
pub mod notebook;
pub mod plot;
pub mod progress;
pub mod rollout;
pub mod scores;

mod error;
pub use error::{Context, Error, Result};
