//! The model crate: the decoder against HF transformers and candle-transformers, hook names,
//! weights at their stored precision and the real SmolLM2 (the phase timers are in `serial`).
//!
//! One test binary per area, one module per topic: the suite links a few binaries, not one per file.

#[path = "../support/mod.rs"]
mod support;

mod candle_reference;
mod hook_names;
mod parity;
mod runtime;
mod smollm2;
mod weights_precision;
