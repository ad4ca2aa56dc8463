//! analysis (work in progress)
pub mod codi_stats;
