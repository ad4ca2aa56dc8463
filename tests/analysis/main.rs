//! The analysis core: segmentation and token boundaries, the attention cache, vertical scores and
//! receiver heads, attention suppression, the anchors and VA analyses, and the CLI over them.
//!
//! One test binary per area, one module per topic: the suite links a few binaries, not one per file.

#[path = "../support/mod.rs"]
mod support;

mod anchors;
mod boundaries;
mod broken_pipe;
mod cache;
mod cli;
mod goldens;
mod numpy_parity;
mod portable_suppression_batch;
mod properties;
mod scores_suppression;
mod stats;
mod traces;
mod va_pipeline;
mod va_reference;
