//! Analyses over sentence attention and CODI results: statistics of tagged sentences per head
//! ([`tag_stats`], the VA analysis), CODI statistics ([`codi_stats`]), the analysis-core CLI
//! handlers ([`cli`]) and the averaging / vertical-score benchmark ([`bench`]).
pub mod bench;
pub mod cli;
pub mod codi_stats;
pub mod tag_stats;
pub mod va;

pub use tag_stats::{head_tag_stats, tag_stats, TagStats, TagStatsOptions};
pub use va::{run_va, run_va_with, VaConfig, VaResult};
