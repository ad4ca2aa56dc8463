//! Notebooks: evcxr display glue, line-mode progress, `thoughtscope notebook run` and what evcxr
//! refuses in a notebook's cells.
//!
//! One test binary per area, one module per topic: the suite links a few binaries, not one per file.

#[path = "../support/mod.rs"]
mod support;

mod display;
mod evcxr_rules;
mod progress;
mod run;
