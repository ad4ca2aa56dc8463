//! Rollouts: the directory layout, generation with SmolLM2, and chunk labels.
//!
//! One test binary per area, one module per topic: the suite links a few binaries, not one per file.

#[path = "../support/mod.rs"]
mod support;

mod generate;
mod labels;
mod layout;
