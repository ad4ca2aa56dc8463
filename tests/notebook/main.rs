//! Notebooks: evcxr display glue, line-mode progress and `thoughtscope notebook run`.
//!
//! One test binary per area, one module per topic: the suite links a few binaries, not one per file.

#[path = "../support/mod.rs"]
mod support;

mod display;
mod progress;
mod run;
