//! Resampling (black-box thought anchors): the local engine and `thoughtscope resample`, upstream's
//! importance metrics and `thoughtscope importance`, and white-box against black-box statistics.
//!
//! One test binary per area, one module per topic: the suite links a few binaries, not one per file.

#[path = "../support/mod.rs"]
mod support;

mod blackbox;
mod engine;
mod importance;
mod openai;
