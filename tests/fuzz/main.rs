//! Mutation fuzzing of every reader of untrusted files (`scripts/fuzz.sh` runs it for a time budget).
//!
//! One test binary per area, one module per topic: the suite links a few binaries, not one per file.

#[path = "../fuzz_support/mod.rs"]
mod fuzz_support;

mod readers;
