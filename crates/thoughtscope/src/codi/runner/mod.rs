//! What every CODI step shares, so that each step is only its per-problem computation:
//! - [`step`]: the one resumable, sharded per-problem runner ([`step::run_step`]) — the seed's
//!   ablation and attention and the three next steps all go through it;
//! - [`meta`]: the settings sidecar (`x.meta.json`) that refuses to resume or merge an output made
//!   with other settings or other weights, naming the field;
//! - [`files`]: reading results JSON (Python's bare `NaN` included), writing it atomically, the
//!   names of sidecars and shard parts;
//! - [`layout`]: the seed's experiment folder (`results/`, `figures/`, the `_test` / `_100` tags);
//! - [`output`]: tables as CSV and Markdown, figures as HTML (PNG/SVG with Chromium), and the
//!   small statistics of the next steps' summaries.
//!
//! Inside: `files` uses nothing here, `meta` uses `files`, `step` uses both, `output` uses
//! `layout`.

pub mod files;
pub mod layout;
pub mod meta;
pub mod output;
pub mod step;
