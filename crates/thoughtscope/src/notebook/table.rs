//! Tables in a notebook: a DataFrame as one `text/html` + `text/plain` output (`table_bundle`),
//! and [`TableView`] to show more rows without moving the frame. The HTML itself is
//! [`crate::plot::table`]'s, shared with the reports.

use polars::prelude::DataFrame;

use super::bundle::MimeBundle;
pub use crate::plot::table::{html_table, TableOptions};

/// `text/html` (the table) + `text/plain` (polars' own text table) for `df`.
pub(crate) fn table_bundle(df: &DataFrame, options: &TableOptions) -> MimeBundle {
    MimeBundle::new().with("text/html", html_table(df, options)).with("text/plain", format!("{df}"))
}

/// A borrowed frame with display options: `thoughtscope::notebook::table(&df).max_rows(50)` as a
/// cell's last expression shows 50 rows; the notebook keeps `df`.
#[derive(Debug, Clone)]
pub struct TableView<'a> {
    pub df: &'a DataFrame,
    pub options: TableOptions,
}

/// [`TableView`] of `df` with the default options.
pub fn table(df: &DataFrame) -> TableView<'_> {
    TableView { df, options: TableOptions::default() }
}

impl<'a> TableView<'a> {
    pub fn max_rows(mut self, rows: usize) -> Self {
        self.options.max_rows = rows;
        self
    }

    pub fn max_cols(mut self, cols: usize) -> Self {
        self.options.max_cols = cols;
        self
    }

    pub fn max_cell_chars(mut self, chars: usize) -> Self {
        self.options.max_cell_chars = chars;
        self
    }

    pub fn html(&self) -> String {
        html_table(self.df, &self.options)
    }

    pub fn mime_bundle(&self) -> MimeBundle {
        table_bundle(self.df, &self.options)
    }

    /// Print the bundle (evcxr calls this for a cell's last expression).
    pub fn evcxr_display(&self) {
        self.mime_bundle().print();
    }
}
