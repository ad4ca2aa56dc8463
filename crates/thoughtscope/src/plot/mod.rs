//! Figures for the VA and CODI analyses, on the `plotly` crate (0.14): builders returning a
//! [`Figure`] (title, the `plotly::Plot`, a default size), offline HTML (plotly.js from the
//! crate's shipped copy, `Plot::offline_js_sources()`, nothing vendored: inlined in a single
//! figure or report, or written once per output folder as `plotly.min.js` and loaded by relative
//! URL from every figure page below it, [`save_figures_sharing`]), HTML reports of several figures and tables ([`Report`]), and static PNG/SVG export through headless
//! Chromium ([`export`]; no kaleido, no WebDriver downloads).
//!
//! Mirrors: offline HTML for notebooks and reports; thought-anchors `plot_one_attn_matrix.py`
//! (heatmap colour limits: upstream's `np.quantile(np.tril(M), q)` includes the upper-triangle
//! zeros; [`ColorLimits::TrilQuantile`] reproduces it, the default
//! [`ColorLimits::LowerTriangleQuantile`] does not), CoT_Exploration `3_analyze_and_visualize.py` (the four CODI figures).
//!
//! ```no_run
//! use thoughtscope::plot::{self, HeatmapOptions, SaveFormat};
//! # fn main() -> thoughtscope::Result<()> {
//! let n = 3;
//! let m = vec![1.0f32, 0.0, 0.0, 0.5, 0.5, 0.0, 0.2, 0.3, 0.5];
//! let fig = plot::heatmap(&m, n, &HeatmapOptions { title: "head 5.3".into(), highlight: vec![1], ..Default::default() })?;
//! let mut formats = vec![SaveFormat::Html];
//! if plot::static_export_available() {
//!     formats.extend([SaveFormat::Png, SaveFormat::Svg]);
//! } else {
//!     eprintln!("skipping PNG/SVG: {}", plot::export::CHROMIUM_MISSING);
//! }
//! plot::save_figures("out", &[("heatmap", &fig)], &formats)?;
//! # Ok(()) }
//! ```

mod builders;
pub mod explorer;
pub mod export;
mod figure;
mod index;
pub mod quantile;
mod report;
mod save;
pub mod table;

pub use builders::{
    bar_with_error, grid, heatmap, heatmap_matrix, line_scores, scatter_with_fit, BarOptions,
    ColorLimits, GridOptions, HeatmapOptions, LineOptions, ScatterOptions, Series,
};
pub use explorer::{Explorer, ExplorerOptions, TokenHead, TokenView, WebsiteTrace};
pub use export::{chromium_path, static_export_available};
pub use figure::{offline_js_with_mathjax, plotly_js_script, plotly_js_source, Figure, PLOTLY_JS_FILE};
pub(crate) use figure::{html_escape, script_safe_json};
pub use index::{find_reports, write_index, IndexEntry};
pub use quantile::{lower_triangle_quantile, quantile, tril_quantile};
pub use report::{Block, Report};
pub use save::{save_figures, save_figures_sharing, SaveFormat};
pub use table::{html_table, TableOptions};
