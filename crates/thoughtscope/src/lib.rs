//! thoughtscope: sentence-level attention ("thought anchors") and continuous-thought (CODI)
//! analyses of reasoning models, for Rust notebooks (evcxr) and the command line.
//!
//! Module map:
//! - [`model`]: the `thoughtscope-model` crate, re-exported: configs, weights (safetensors,
//!   hf-hub cache, GGUF), tokenizers, the decoder with TransformerLens-named hook points and the
//!   attention sink it streams to, the CPU kernels, generation.
//! - [`attention`]: sentence segmentation, token boundaries, sentence averaging, the cache.
//! - [`scores`]: vertical scores, kurtosis, receiver heads.
//! - [`rollout`]: the thought-anchors rollout directory layout, tag masks, taggers, generation.
//! - [`codi`]: CODI checkpoints, the latent loop, ablation, attention to latents.
//! - [`analysis`]: polars tables and statistics.
//! - [`plot`]: plotly figures, HTML reports and static export.
//! - [`notebook`]: evcxr display glue.
//! - [`io`]: atomic file writes, JSON, `.npy`.
//! - [`chat`]: chat templates (Jinja) rendered for a model's tokenizer.
//! - [`progress`]: the one progress reporter every long loop uses (bars, log lines, notebook
//!   lines); it lives in the model crate, which reports loading through it too.
//!
//! A run's settings (device, weight precision, CPU kernels, progress, model folder) are one
//! value, [`model::Settings`]: the binary and the notebooks build it from the environment
//! ([`model::Settings::from_env`], the one place the libraries read it; see its table) and pass it
//! down. Loading a model, then one analysis of one text:
//!
//! ```no_run
//! use thoughtscope::attention::{sentence_attention, BoundaryMode, Sentences};
//! use thoughtscope::model::{Model, Settings};
//! use thoughtscope::scores::{vertical_scores, VerticalOptions};
//!
//! let settings = Settings::from_env()?;
//! let loaded = Model::load("smollm2-135m", &settings)?;
//! let sentences = Sentences::from_full_cot("First, 3 + 4 = 7. Then 7 × 2 = 14. So the answer is 14.")?;
//! // [layers, heads, N, N] sentence-averaged attention from one forward pass.
//! let (attention, _bounds) = sentence_attention(&loaded, &sentences, BoundaryMode::Prefix)?;
//! // How much attention each sentence receives from later ones, under layer 0, head 0.
//! let scores = vertical_scores(attention.matrix(0, 0), attention.n(), &VerticalOptions::default())?;
//! println!("{:?}", scores.values);
//! # Ok::<(), thoughtscope::Error>(())
//! ```

pub mod analysis;
pub mod attention;
pub mod codi;
pub mod chat;
pub mod io;
pub mod notebook;
pub mod plot;
pub mod rollout;
pub mod scores;

mod error;
pub use error::{Context, Error, Result};
pub use thoughtscope_model as model;
pub use thoughtscope_model::progress;

// The versions of candle and polars this crate is built with, so that a notebook needs a single
// `:dep thoughtscope` line and names their types through it (`thoughtscope::polars::prelude::DataFrame`).
// A second `:dep` line would make the kernel resolve its dependency versions afresh and compile
// much of the graph a second time instead of reusing the command line's build.
pub use candle_core;
pub use polars;

// The README's example, compiled by `cargo test --doc`.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
