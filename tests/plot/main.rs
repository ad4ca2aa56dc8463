//! Figures: plotly builders, quantiles, offline HTML and static export.
//!
//! One test binary per area, one module per topic: the suite links a few binaries, not one per file.

#[path = "../support/mod.rs"]
mod support;

mod explorer;
mod figures;
mod quantile;
mod static_export;
