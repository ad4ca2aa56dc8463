//! The model crate: the decoder against HF transformers and candle-transformers, hook names,
//! weights at their stored precision, the portable path, non-finite weights, the settings a model
//! is loaded with, and the real SmolLM2 (the phase timers are in `serial`).
//!
//! One test binary per area, one module per topic: the suite links a few binaries, not one per file.

#[path = "../support/mod.rs"]
mod support;

mod candle_reference;
mod hook_names;
mod nan_attention;
mod parity;
mod portable_path;
mod runtime;
mod settings;
mod smollm2;
mod weights_precision;
