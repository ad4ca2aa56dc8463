//! Rich display of thoughtscope values in evcxr: the [`NotebookDisplay`] trait (defined here, in
//! the library: a trait defined in a notebook cell breaks the Debug fallback of later cells) and
//! the figure and panel bundles.
//!
//! Figures print `application/vnd.plotly.v1+json` (live JupyterLab with the plotly extension,
//! trust-independent) + `text/html` (a div and `Plotly.newPlot`: nbconvert's HTML export and the
//! classic notebook) + `text/plain`. plotly.js (with MathJax, from the plotly crate's
//! `offline_js_sources()`) is embedded ONCE per notebook process, inline in the first figure's
//! HTML, so exported notebooks open offline.
//!
//! Why the once-per-process state lives in environment variables: evcxr links the library
//! statically into every cell's dylib, so each cell has its own copy of any Rust `static`; the
//! process environment is shared by all of them. Values carry the process id, so a child process
//! that inherits the variables does not think plotly.js is on its page.

use polars::prelude::DataFrame;

use super::bundle::MimeBundle;
use super::table::{table_bundle, TableOptions, TableView};
use crate::plot::{offline_js_with_mathjax, plotly_js_script, Figure, Report};

/// Environment variable holding the pid of the process that already emitted plotly.js.
pub(crate) const PLOTLY_JS_EMITTED_VAR: &str = "THOUGHTSCOPE_NOTEBOOK_PLOTLY_JS";
/// Environment variable holding `pid:count` of figures displayed (unique div ids).
const FIGURE_COUNTER_VAR: &str = "THOUGHTSCOPE_NOTEBOOK_FIGURES";
/// Set to `0` to embed plotly.js without MathJax (2.1 MB less per notebook).
pub use crate::model::settings::lookups::NOTEBOOK_MATHJAX as MATHJAX_VAR;

/// Types that display in a notebook: `value` (or `value.evcxr_display()`) as a cell's last
/// expression prints [`NotebookDisplay::mime_bundle`]. Methods borrow, so the notebook variable
/// survives. Bring it into scope with `use thoughtscope::notebook::prelude::*;` (needed for
/// `DataFrame`; `Figure`, `Report`/`Panel` and `TableView` also have inherent methods).
pub trait NotebookDisplay {
    fn mime_bundle(&self) -> MimeBundle;

    fn evcxr_display(&self) {
        self.mime_bundle().print();
    }
}

impl NotebookDisplay for DataFrame {
    fn mime_bundle(&self) -> MimeBundle {
        table_bundle(self, &TableOptions::default())
    }
}

impl NotebookDisplay for TableView<'_> {
    fn mime_bundle(&self) -> MimeBundle {
        TableView::mime_bundle(self)
    }
}

impl NotebookDisplay for Figure {
    fn mime_bundle(&self) -> MimeBundle {
        figure_bundle(self)
    }
}

impl NotebookDisplay for Report {
    fn mime_bundle(&self) -> MimeBundle {
        panel_bundle(self)
    }
}

impl Figure {
    /// The notebook bundle (plotly JSON + HTML + text); embeds plotly.js if this is the first
    /// figure of the notebook process.
    pub fn mime_bundle(&self) -> MimeBundle {
        figure_bundle(self)
    }

    /// Print [`Figure::mime_bundle`]: evcxr calls this for a cell's last expression.
    pub fn evcxr_display(&self) {
        self.mime_bundle().print();
    }
}

impl Report {
    /// ONE `text/html` output with every block (figures included) + `text/plain`; no plotly
    /// JSON, since a renderer preferring it would show one figure and hide the rest.
    pub fn mime_bundle(&self) -> MimeBundle {
        panel_bundle(self)
    }

    /// Print [`Report::mime_bundle`]: evcxr calls this for a cell's last expression.
    pub fn evcxr_display(&self) {
        self.mime_bundle().print();
    }
}

/// Several figures (and, by its builder methods, headings, text and tables) in one output.
pub type Panel = Report;

/// A [`Panel`] of `figures`, in order: `figures(&[&a, &b])` as the last expression shows both.
pub fn figures(figures: &[&Figure]) -> Panel {
    Report::new("").figures(figures.iter().copied())
}

/// The `<script>`s put before the first figure: plotly.js (+ MathJax unless
/// `THOUGHTSCOPE_NOTEBOOK_MATHJAX=0`), configured as Python plotly's notebook renderer does.
pub fn plotly_js_preamble() -> String {
    let with_mathjax = crate::model::settings::lookups::notebook_mathjax();
    let scripts = if with_mathjax { offline_js_with_mathjax() } else { plotly_js_script() };
    format!("<script type=\"text/javascript\">window.PlotlyConfig = {{MathJaxConfig: 'local'}};</script>\n{scripts}\n")
}

/// Emit plotly.js now as its own output (for a first cell), whether or not a figure already did;
/// later figures then do not embed it. Use after clearing outputs or re-running cells out of
/// order, when the cell that carried plotly.js is gone.
pub fn init() {
    mark_plotly_js_emitted();
    MimeBundle::new()
        .with("text/html", plotly_js_preamble())
        .with("text/plain", "plotly.js loaded (offline copy from the plotly crate)")
        .print();
}

/// Forget that plotly.js was emitted: the next figure embeds it again.
pub fn reset_plotly_js() {
    std::env::remove_var(PLOTLY_JS_EMITTED_VAR);
}

fn plotly_js_already_emitted() -> bool {
    std::env::var(PLOTLY_JS_EMITTED_VAR).is_ok_and(|v| v == std::process::id().to_string())
}

fn mark_plotly_js_emitted() {
    std::env::set_var(PLOTLY_JS_EMITTED_VAR, std::process::id().to_string());
}

/// The preamble if plotly.js has not been emitted in this process yet (and mark it emitted).
fn take_plotly_js() -> Option<String> {
    if plotly_js_already_emitted() {
        None
    } else {
        mark_plotly_js_emitted();
        Some(plotly_js_preamble())
    }
}

/// Next number of a display in this process (div ids unique across cells, deterministic in a run).
pub(crate) fn next_display_number() -> u64 {
    let pid = std::process::id().to_string();
    let current = std::env::var(FIGURE_COUNTER_VAR)
        .ok()
        .and_then(|v| v.split_once(':').filter(|(p, _)| *p == pid).and_then(|(_, n)| n.parse::<u64>().ok()))
        .unwrap_or(0);
    std::env::set_var(FIGURE_COUNTER_VAR, format!("{pid}:{}", current + 1));
    current
}

/// The figure bundle with plotly.js embedded if it is the first of the process.
pub fn figure_bundle(figure: &Figure) -> MimeBundle {
    let id = format!("thoughtscope-fig-{}", next_display_number());
    let preamble = take_plotly_js();
    figure_bundle_with(figure, &id, preamble.as_deref())
}

/// The figure bundle for a given div id, with `preamble` (plotly.js scripts) put first in the HTML.
pub fn figure_bundle_with(figure: &Figure, div_id: &str, preamble: Option<&str>) -> MimeBundle {
    let mut html = String::new();
    if let Some(preamble) = preamble {
        html.push_str(preamble);
    }
    html.push_str(&figure.to_inline_html(div_id));
    MimeBundle::new()
        .with("application/vnd.plotly.v1+json", figure.to_json())
        .with("text/html", html)
        .with("text/plain", figure_plain_text(figure))
}

fn figure_plain_text(figure: &Figure) -> String {
    format!(
        "Figure {:?}: {} trace(s), {}×{} px",
        figure.title,
        figure.plot.data().len(),
        figure.width,
        figure.height
    )
}

/// The panel bundle, with plotly.js embedded if the panel has a figure and it is the first.
pub fn panel_bundle(report: &Report) -> MimeBundle {
    let prefix = format!("thoughtscope-panel-{}", next_display_number());
    let preamble = if report.figure_count() > 0 { take_plotly_js() } else { None };
    panel_bundle_with(report, &prefix, preamble.as_deref())
}

/// The panel bundle for a given div-id prefix and preamble.
pub fn panel_bundle_with(report: &Report, id_prefix: &str, preamble: Option<&str>) -> MimeBundle {
    let mut html = String::new();
    if let Some(preamble) = preamble {
        html.push_str(preamble);
    }
    html.push_str(&report.body_html(id_prefix));
    MimeBundle::new().with("text/html", html).with("text/plain", report.plain_text())
}
