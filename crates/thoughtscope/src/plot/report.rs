//! [`Report`]: headings, paragraphs, tables and figures in one HTML page with plotly.js embedded
//! once. The same value displays inline in a notebook as ONE `text/html` output (evcxr keeps only
//! the last output of each MIME type per cell, so several figures must travel together; it is
//! re-exported as `notebook::Panel`).

use std::path::Path;

use polars::prelude::DataFrame;

use super::figure::{html_document, html_escape, offline_js_with_mathjax, plotly_js_script, write_atomic, Figure};
use super::table::{html_table, TableOptions};
use crate::Result;

/// One part of a [`Report`].
#[derive(Debug, Clone)]
pub enum Block {
    /// `<h2>` (level 2) .. `<h6>`; level 1 is the report title.
    Heading { level: u8, text: String },
    /// A paragraph of plain text (escaped; blank lines start new paragraphs).
    Text(String),
    /// Raw HTML, inserted as is.
    Html(String),
    /// Boxed: a plotly layout is large.
    Figure(Box<Figure>),
    /// A rendered table (HTML and plain text), see [`super::table`].
    Table { html: String, plain: String },
}

/// Figures, tables and text in order; write it as a self-contained page ([`Report::write_html`])
/// or display it in a notebook (`report` as a cell's last expression).
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// `<h1>` and the page title; empty for none.
    pub title: String,
    pub blocks: Vec<Block>,
    /// Also embed MathJax (2.1 MB more) for LaTeX in plot titles or text.
    pub mathjax: bool,
}

impl Report {
    pub fn new(title: impl Into<String>) -> Self {
        Report { title: title.into(), blocks: Vec::new(), mathjax: false }
    }

    /// Append any block.
    pub fn push(&mut self, block: Block) -> &mut Self {
        self.blocks.push(block);
        self
    }

    /// A section heading (`<h2>`).
    pub fn heading(mut self, text: impl Into<String>) -> Self {
        self.blocks.push(Block::Heading { level: 2, text: text.into() });
        self
    }

    /// A subsection heading (`<h3>`).
    pub fn subheading(mut self, text: impl Into<String>) -> Self {
        self.blocks.push(Block::Heading { level: 3, text: text.into() });
        self
    }

    /// Plain text, escaped; blank lines separate paragraphs.
    pub fn text(mut self, text: impl Into<String>) -> Self {
        self.blocks.push(Block::Text(text.into()));
        self
    }

    /// Raw HTML.
    pub fn html(mut self, html: impl Into<String>) -> Self {
        self.blocks.push(Block::Html(html.into()));
        self
    }

    /// A copy of `figure` (the notebook variable stays usable).
    pub fn figure(mut self, figure: &Figure) -> Self {
        self.blocks.push(Block::Figure(Box::new(figure.clone())));
        self
    }

    /// Copies of several figures, in order.
    pub fn figures<'a>(mut self, figures: impl IntoIterator<Item = &'a Figure>) -> Self {
        self.blocks.extend(figures.into_iter().map(|f| Block::Figure(Box::new(f.clone()))));
        self
    }

    /// `df` as an HTML table with the default [`TableOptions`] (rendered now).
    pub fn table(self, df: &DataFrame) -> Self {
        self.table_with(df, &TableOptions::default())
    }

    pub(crate) fn table_with(mut self, df: &DataFrame, options: &TableOptions) -> Self {
        self.blocks.push(Block::Table { html: html_table(df, options), plain: format!("{df}") });
        self
    }

    pub fn figure_count(&self) -> usize {
        self.blocks.iter().filter(|b| matches!(b, Block::Figure(_))).count()
    }

    /// The body (title and blocks) without scripts; figure divs are `{id_prefix}-{k}`.
    pub(crate) fn body_html(&self, id_prefix: &str) -> String {
        let mut out = String::from("<div class=\"thoughtscope-report\">\n");
        if !self.title.is_empty() {
            out.push_str(&format!("<h1>{}</h1>\n", html_escape(&self.title)));
        }
        let mut figure_index = 0;
        for block in &self.blocks {
            match block {
                Block::Heading { level, text } => {
                    let level = (*level).clamp(2, 6);
                    out.push_str(&format!("<h{level}>{}</h{level}>\n", html_escape(text)));
                }
                Block::Text(text) => {
                    for paragraph in text.split("\n\n").map(str::trim).filter(|p| !p.is_empty()) {
                        out.push_str(&format!("<p>{}</p>\n", html_escape(paragraph).replace('\n', "<br>\n")));
                    }
                }
                Block::Html(html) => {
                    out.push_str(html);
                    out.push('\n');
                }
                Block::Figure(figure) => {
                    out.push_str(&figure.to_inline_html(&format!("{id_prefix}-{figure_index}")));
                    figure_index += 1;
                }
                Block::Table { html, .. } => {
                    out.push_str(html);
                    out.push('\n');
                }
            }
        }
        out.push_str("</div>\n");
        out
    }

    /// Plain-text outline: title, headings, texts, figure titles and tables.
    pub fn plain_text(&self) -> String {
        let mut out = String::new();
        if !self.title.is_empty() {
            out.push_str(&format!("# {}\n", self.title));
        }
        for block in &self.blocks {
            match block {
                Block::Heading { level, text } => out.push_str(&format!("{} {text}\n", "#".repeat((*level).clamp(2, 6) as usize))),
                Block::Text(text) => out.push_str(&format!("{text}\n")),
                Block::Html(_) => out.push_str("[html]\n"),
                Block::Figure(figure) => out.push_str(&format!("[figure: {}]\n", figure.title)),
                Block::Table { plain, .. } => out.push_str(&format!("{plain}\n")),
            }
        }
        out
    }

    /// A complete page, plotly.js inlined once (when there is a figure): opens offline.
    pub fn to_html(&self) -> String {
        let scripts = match (self.figure_count() > 0, self.mathjax) {
            (_, true) => offline_js_with_mathjax(),
            (true, false) => plotly_js_script(),
            (false, false) => "",
        };
        html_document(&self.title, scripts, &self.body_html("thoughtscope-figure"))
    }

    /// Write [`Report::to_html`] to `path` (atomically).
    pub fn write_html(&self, path: impl AsRef<Path>) -> Result<()> {
        write_atomic(path.as_ref(), self.to_html().as_bytes())
    }
}
