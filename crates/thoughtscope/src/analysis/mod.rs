//! Analyses over sentence attention: the VA analysis of the VA seed notebook
//! ([`va`] steps and pipeline, [`tag_stats`] per-head statistics, [`va_report`] tables, figures
//! and files), the averaging / vertical-score benchmark ([`bench`](mod@bench)) and the
//! forward-pass benchmark on a real trace ([`bench_forward`]), and the files of an attention-
//! suppression run ([`suppression`]); receiver heads against suppression, with function tags
//! ([`anchors`]).
pub mod anchors;
pub mod blackbox;
pub mod bench;
pub mod bench_forward;
pub mod importance;
pub mod suppression;
pub mod tag_stats;
pub mod va;
pub mod va_report;

pub use tag_stats::{compute_va_stats_for_head, safe_mean, trim_ends, VaHeadStats};
pub use va::{run_va, VaConfig, VaResult};
