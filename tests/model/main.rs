//! The model crate: the decoder against HF transformers and candle-transformers, hook names,
//! weights at their stored precision, the kernels' phase timers and the real SmolLM2.
//!
//! One test binary per area, one module per topic: the suite links a few binaries, not one per file.

#[path = "../support/mod.rs"]
mod support;

mod candle_reference;
mod hook_names;
mod parity;
mod phases;
mod runtime;
mod smollm2;
mod weights_precision;
