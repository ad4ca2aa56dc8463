//! evcxr (Rust Jupyter kernel) display glue: DataFrames as HTML
//! tables, figures as plotly JSON + offline HTML, several figures packed into one output, and
//! progress lines that notebooks can show.
//!
//! In a notebook:
//!
//! ```text
//! use thoughtscope::notebook::prelude::*;   // NotebookDisplay (for DataFrame), table, figures, progress
//! df                                        // HTML table + text table; `df` stays usable
//! table(&df).max_rows(50)                   // more rows
//! fig                                       // one figure (plotly.js embedded by the first one)
//! figures(&[&fig_a, &fig_b])                // two figures in ONE output
//! Panel::new("Layer 12").text("…").figure(&fig_a).table(&df)   // mixed content, one output
//! ```
//!
//! The traps this module is shaped by (all measured):
//! - evcxr keeps only the LAST output of each MIME type per cell, so two `evcxr_display` calls in
//!   one cell show one figure: pack them with [`figures`] / [`Panel`].
//! - A display expression that MOVES a notebook variable loses the rich output (and the
//!   variable): every display method here takes `&self`; wrappers borrow ([`TableView`]).
//! - A trait named like this one defined in a notebook cell breaks later cells: it lives here.
//! - nbconvert's HTML export drops `application/vnd.plotly.v1+json`, so figures also carry
//!   `text/html`; plotly.js is inlined once (first figure) so the export works offline.
//! - Panics report success unless `:preserve_vars_on_panic 0`; that is the runner's business.

pub mod bundle;
mod display;
mod explorer_display;
pub mod runner;
pub mod table;

pub use bundle::{parse_protocol, MimeBundle};
pub use display::{
    figure_bundle, figure_bundle_with, figures, init, panel_bundle, panel_bundle_with, plotly_js_preamble,
    reset_plotly_js, NotebookDisplay, Panel, MATHJAX_VAR,
};
pub use crate::progress::{progress, progress_detail, progress_mode, Progress, ProgressMode, ProgressSettings};
pub use table::{html_table, table, TableOptions, TableView};

/// `use thoughtscope::notebook::prelude::*;` in a notebook's first cell.
pub mod prelude {
    pub use super::display::{figures, NotebookDisplay, Panel};
    pub use crate::progress::progress;
    pub use super::table::{table, TableOptions};
    pub use crate::plot::{Explorer, Figure, Report};
    // Types that cells keep in variables: evcxr must be able to name a variable's type, and with
    // one `:dep thoughtscope` line these paths are how it can.
    pub use candle_core::Device;
    pub use polars::prelude::DataFrame;
}
