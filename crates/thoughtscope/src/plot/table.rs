//! DataFrame → HTML table for reports and notebooks: escaped cells, a dtype row under the
//! header, the shape, and head/tail truncation with a "…" row (and column) like polars' text
//! table. No `<script>`: tables render in untrusted notebooks too (Jupyter strips scripts there).

use polars::prelude::{AnyValue, DataFrame};

use super::figure::html_escape;

/// How much of a frame [`html_table`] shows.
#[derive(Debug, Clone, PartialEq)]
pub struct TableOptions {
    /// Rows shown; more are cut to the first ⌈max_rows/2⌉ and last ⌊max_rows/2⌋ with a "…" row.
    pub max_rows: usize,
    /// Columns shown, cut the same way with a "…" column.
    pub max_cols: usize,
    /// Longer cell texts are cut to this many characters plus "…".
    pub max_cell_chars: usize,
}

impl Default for TableOptions {
    /// `max_rows` from `POLARS_FMT_MAX_ROWS` when set (-1: all), else 20; `max_cols` from
    /// `POLARS_FMT_MAX_COLS` likewise, else 40; cells cut at 200 characters.
    fn default() -> Self {
        use crate::model::settings::lookups::table_limit;
        TableOptions {
            max_rows: table_limit("POLARS_FMT_MAX_ROWS", 20),
            max_cols: table_limit("POLARS_FMT_MAX_COLS", 40),
            max_cell_chars: 200,
        }
    }
}

/// Indices to show out of `total` given a `max`: `(head, tail)` ranges; tail is empty when all fit.
fn head_tail(total: usize, max: usize) -> (std::ops::Range<usize>, std::ops::Range<usize>) {
    if total <= max {
        return (0..total, total..total);
    }
    let head = max.div_ceil(2);
    let tail = max / 2;
    (0..head, total - tail..total)
}

fn cell_text(value: &AnyValue<'_>, max_chars: usize) -> String {
    let text = value.to_string();
    if text.chars().count() > max_chars {
        let mut cut: String = text.chars().take(max_chars).collect();
        cut.push('…');
        cut
    } else {
        text
    }
}

const TABLE_CSS: &str = "<style>\
.thoughtscope-table table{border-collapse:collapse;font-size:12px;font-family:ui-monospace,SFMono-Regular,Menlo,monospace}\
.thoughtscope-table th,.thoughtscope-table td{border:1px solid #ddd;padding:2px 8px;text-align:right;white-space:pre-wrap;vertical-align:top}\
.thoughtscope-table thead th{background:#f4f4f4}\
.thoughtscope-table tr.dtypes td{color:#777;font-style:italic;background:#fafafa}\
.thoughtscope-table small{color:#555}\
</style>";

/// The frame as an HTML `<table>`: header, a row of dtypes, the (truncated) rows; the shape above.
pub fn html_table(df: &DataFrame, options: &TableOptions) -> String {
    let (height, width) = df.shape();
    let (head_rows, tail_rows) = head_tail(height, options.max_rows);
    let (head_cols, tail_cols) = head_tail(width, options.max_cols);
    let cols_cut = !tail_cols.is_empty() || head_cols.end < width;
    let rows_cut = !tail_rows.is_empty() || head_rows.end < height;
    let shown_cols: Vec<Option<usize>> = head_cols
        .clone()
        .map(Some)
        .chain(cols_cut.then_some(None))
        .chain(tail_cols.clone().map(Some))
        .collect();
    let columns = df.columns();

    // tex2jax_ignore: MathJax on the page (notebook exports) must not read `$` or `(…)` in cells.
    let mut out = String::from("<div class=\"thoughtscope-table tex2jax_ignore\">");
    out.push_str(TABLE_CSS);
    out.push_str(&format!("<small>shape: ({height}, {width})</small>\n<table>\n<thead>\n<tr>"));
    for col in &shown_cols {
        match col {
            Some(c) => out.push_str(&format!("<th>{}</th>", html_escape(columns[*c].name().as_str()))),
            None => out.push_str("<th>…</th>"),
        }
    }
    out.push_str("</tr>\n<tr class=\"dtypes\">");
    for col in &shown_cols {
        match col {
            Some(c) => out.push_str(&format!("<td>{}</td>", html_escape(&columns[*c].dtype().to_string()))),
            None => out.push_str("<td></td>"),
        }
    }
    out.push_str("</tr>\n</thead>\n<tbody>\n");
    let row_html = |row: usize| {
        let mut tr = String::from("<tr>");
        for col in &shown_cols {
            match col {
                Some(c) => {
                    let text = match columns[*c].get(row) {
                        Ok(value) => cell_text(&value, options.max_cell_chars),
                        Err(e) => format!("<error: {e}>"),
                    };
                    tr.push_str(&format!("<td>{}</td>", html_escape(&text)));
                }
                None => tr.push_str("<td>…</td>"),
            }
        }
        tr.push_str("</tr>\n");
        tr
    };
    for row in head_rows {
        out.push_str(&row_html(row));
    }
    if rows_cut {
        out.push_str("<tr class=\"ellipsis\">");
        for _ in &shown_cols {
            out.push_str("<td>…</td>");
        }
        out.push_str("</tr>\n");
    }
    for row in tail_rows {
        out.push_str(&row_html(row));
    }
    out.push_str("</tbody>\n</table>\n</div>");
    out
}
