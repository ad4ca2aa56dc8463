//! [`Figure`]: a `plotly::Plot` with a title, a default size and JSON layout overrides, and the
//! HTML it renders to (a `<div>` + `Plotly.newPlot` fragment, or a self-contained document with
//! plotly.js inlined from the plotly crate's shipped copy, so files open offline).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotly::Plot;
use serde::Serialize;
use serde_json::{Map, Value};

pub(crate) use crate::io::write_atomic;
use crate::{Error, Result};

/// Default size of a figure in pixels (static export; HTML uses the height, the width follows the page).
pub(crate) const DEFAULT_WIDTH: usize = 900;
pub(crate) const DEFAULT_HEIGHT: usize = 600;

/// A plot ready to be saved or displayed: builders in [`crate::plot`] return it, pipelines save it
/// ([`Figure::write_html`], [`Figure::write_png`], [`super::save_figures`]),
/// notebooks display it (`fig` as a cell's last expression; see [`crate::notebook`]).
#[derive(Clone)]
pub struct Figure {
    /// Shown above the plot (set as the layout title unless the plot already has one) and in
    /// the plain-text display.
    pub title: String,
    pub plot: Plot,
    /// Static-export size in pixels; `height` is also the HTML height when the layout sets none.
    pub width: usize,
    pub height: usize,
    /// Deep-merged into the layout JSON at render time: for what the plotly crate cannot express
    /// (more than 8 axis pairs, `autorange: "reversed"`, ...).
    layout_overrides: Map<String, Value>,
}

impl fmt::Debug for Figure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Figure")
            .field("title", &self.title)
            .field("traces", &self.plot.data().len())
            .field("width", &self.width)
            .field("height", &self.height)
            .finish()
    }
}

impl From<Plot> for Figure {
    /// Title, width and height are taken from the plot's layout when it sets them.
    fn from(plot: Plot) -> Self {
        let layout = serde_json::to_value(plot.layout()).unwrap_or(Value::Null);
        let title = layout
            .pointer("/title/text")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let size = |key: &str, default: usize| {
            layout.get(key).and_then(Value::as_f64).map_or(default, |v| v.round().max(1.0) as usize)
        };
        let (width, height) = (size("width", DEFAULT_WIDTH), size("height", DEFAULT_HEIGHT));
        Figure { title, plot, width, height, layout_overrides: Map::new() }
    }
}

impl From<&Plot> for Figure {
    fn from(plot: &Plot) -> Self {
        Figure::from(plot.clone())
    }
}

impl Figure {
    /// A figure of `plot` titled `title`, at the default size.
    pub fn new(title: impl Into<String>, plot: Plot) -> Self {
        Figure {
            title: title.into(),
            plot,
            width: DEFAULT_WIDTH,
            height: DEFAULT_HEIGHT,
            layout_overrides: Map::new(),
        }
    }

    /// The same figure at another size (pixels).
    pub(crate) fn with_size(mut self, width: usize, height: usize) -> Self {
        self.width = width.max(1);
        self.height = height.max(1);
        self
    }

    /// Deep-merge `patch` (a JSON object, e.g. `json!({"yaxis": {"autorange": "reversed"}})`)
    /// into the layout when rendering. Objects merge key by key; anything else replaces.
    pub fn merge_layout(&mut self, patch: Value) {
        if let Value::Object(patch) = patch {
            for (key, value) in patch {
                match self.layout_overrides.get_mut(&key) {
                    Some(existing) => merge_json(existing, value),
                    None => {
                        self.layout_overrides.insert(key, value);
                    }
                }
            }
        }
    }

    /// Builder form of [`Figure::merge_layout`].
    pub fn with_layout(mut self, patch: Value) -> Self {
        self.merge_layout(patch);
        self
    }

    /// The plotly.js figure object: `{"data": [...], "layout": {...}, "config": {...}}`, with
    /// the layout overrides merged, the title and height filled in when the layout lacks them.
    /// NaN values are `null` (gaps in plotly.js).
    pub fn to_json_value(&self) -> Value {
        let mut value = serde_json::to_value(&self.plot).unwrap_or_else(|_| Value::Object(Map::new()));
        if let Value::Object(object) = &mut value {
            if object.get("frames").is_some_and(Value::is_null) {
                object.remove("frames");
            }
            let layout = object.entry("layout").or_insert_with(|| Value::Object(Map::new()));
            if !layout.is_object() {
                *layout = Value::Object(Map::new());
            }
            for (key, patch) in &self.layout_overrides {
                match layout.get_mut(key) {
                    Some(existing) => merge_json(existing, patch.clone()),
                    None => {
                        layout[key.as_str()] = patch.clone();
                    }
                }
            }
            let layout = layout.as_object_mut().expect("layout is an object");
            if !self.title.is_empty() && layout.get("title").is_none_or(|t| t.get("text").is_none()) {
                let mut title = layout.get("title").cloned().unwrap_or_else(|| Value::Object(Map::new()));
                if !title.is_object() {
                    title = Value::Object(Map::new());
                }
                title["text"] = Value::String(self.title.clone());
                layout.insert("title".to_owned(), title);
            }
            layout.entry("height").or_insert_with(|| Value::from(self.height));
        }
        value
    }

    /// [`Figure::to_json_value`] as a string.
    pub fn to_json(&self) -> String {
        self.to_json_value().to_string()
    }

    /// The layout height in pixels that the HTML uses.
    pub(crate) fn html_height(&self) -> usize {
        self.to_json_value()
            .pointer("/layout/height")
            .and_then(Value::as_f64)
            .map_or(self.height, |h| h.round().max(1.0) as usize)
    }

    /// A `<div id="div_id">` and the `<script>` that draws the figure into it. plotly.js must
    /// already be on the page (see [`plotly_js_script`]); if it is not, the div says so instead of
    /// staying blank.
    pub(crate) fn to_inline_html(&self, div_id: &str) -> String {
        let id = html_escape(div_id);
        let id_js = script_safe_json(&Value::String(div_id.to_owned()).to_string());
        format!(
            "<div id=\"{id}\" class=\"plotly-graph-div thoughtscope-figure tex2jax_ignore\" style=\"width:100%;height:{height}px;\"></div>\n\
             <script type=\"text/javascript\">(function () {{\n\
             var figureDiv = document.getElementById({id_js});\n\
             if (window.Plotly) {{ Plotly.newPlot(figureDiv, {json}); }}\n\
             else {{ figureDiv.textContent = \"plotly.js is not loaded on this page: re-run the notebook from the top (or call thoughtscope::notebook::init()).\"; }}\n\
             }})();</script>\n",
            height = self.html_height(),
            json = script_safe_json(&self.to_json()),
        )
    }

    /// A complete HTML document with plotly.js inlined once: opens offline.
    pub fn to_html(&self) -> String {
        html_document(&self.title, plotly_js_script(), &self.to_inline_html("thoughtscope-figure-0"))
    }

    /// A complete HTML document that loads plotly.js from `plotly_js_src`, a relative URL such as
    /// `../plotly.min.js` (see [`save_figures_sharing`]): a few kB instead of 4.6 MB per figure,
    /// and still offline as long as the file stays beside it.
    pub(crate) fn to_html_with_script_src(&self, plotly_js_src: &str) -> String {
        let script = format!("<script type=\"text/javascript\" src=\"{}\"></script>", html_escape(plotly_js_src));
        html_document(&self.title, &script, &self.to_inline_html("thoughtscope-figure-0"))
    }

    /// Write [`Figure::to_html`] to `path` (atomically: a temporary file renamed into place).
    pub fn write_html(&self, path: impl AsRef<Path>) -> Result<()> {
        write_atomic(path.as_ref(), self.to_html().as_bytes())
    }
}

/// Name of the plotly.js copy that the HTML pages written by [`super::save_figures`] load.
pub const PLOTLY_JS_FILE: &str = "plotly.min.js";

/// plotly.js itself (no `<script>` tags), from the plotly crate's shipped copy.
pub fn plotly_js_source() -> &'static str {
    let script = plotly_js_script();
    let start = script.find('>').map_or(0, |i| i + 1);
    let end = script.rfind("</script>").unwrap_or(script.len());
    &script[start..end]
}

/// Write `dir/plotly.min.js` unless an identical copy is already there; returns its path.
pub(crate) fn write_plotly_js(dir: impl AsRef<Path>) -> Result<PathBuf> {
    let path = dir.as_ref().join(PLOTLY_JS_FILE);
    let source = plotly_js_source().as_bytes();
    let current = std::fs::metadata(&path).ok().filter(|m| m.len() == source.len() as u64);
    if current.is_none() || std::fs::read(&path).map_err(|e| Error::io(&path, e))? != source {
        write_atomic(&path, source)?;
    }
    Ok(path)
}

/// `<script>` holding plotly.js alone (about 4.6 MB), cut from the plotly crate's
/// `Plot::offline_js_sources()` (which also carries MathJax; see [`offline_js_with_mathjax`]).
pub fn plotly_js_script() -> &'static str {
    static PLOTLY_ONLY: OnceLock<String> = OnceLock::new();
    PLOTLY_ONLY.get_or_init(|| {
        let all = offline_js_with_mathjax();
        match all.find("</script>") {
            Some(end) => all[..end + "</script>".len()].trim_start().to_owned(),
            None => all.to_owned(),
        }
    })
}

/// `Plot::offline_js_sources()`: plotly.js and MathJax 3 (tex-svg) as inline `<script>`s
/// (about 6.8 MB). The notebook glue embeds this once, so exported notebooks also typeset the
/// markdown formulas offline.
pub fn offline_js_with_mathjax() -> &'static str {
    static ALL: OnceLock<String> = OnceLock::new();
    ALL.get_or_init(Plot::offline_js_sources)
}

/// A raw plotly.js trace object, for composing traces taken from other figures (subplot grids).
#[derive(Clone, Serialize)]
#[serde(transparent)]
pub(crate) struct RawTrace(pub Value);

impl plotly::Trace for RawTrace {
    fn to_json(&self) -> String {
        self.0.to_string()
    }
}

/// Objects merge key by key (recursively); any other patch replaces the target.
pub(crate) fn merge_json(target: &mut Value, patch: Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                match target.get_mut(&key) {
                    Some(existing) => merge_json(existing, value),
                    None => {
                        target.insert(key, value);
                    }
                }
            }
        }
        (target, patch) => *target = patch,
    }
}

/// Escape text for HTML element content and attribute values.
pub(crate) fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// JSON text made safe inside a `<script>` element: `<`, `>`, `&` and the JS line separators can
/// only occur inside JSON strings, where their `\u` escapes mean the same, so `</script>` in a
/// title or label cannot end the script.
pub(crate) fn script_safe_json(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

/// A full HTML page: `scripts` (already `<script>` elements) in the head, `body` as is.
pub(crate) fn html_document(title: &str, scripts: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title}</title>\n<script>window.PlotlyConfig = {{MathJaxConfig: 'local'}};</script>\n{scripts}\n\
         <style>{css}</style>\n</head>\n<body>\n{body}</body>\n</html>\n",
        title = html_escape(title),
        css = PAGE_CSS,
    )
}

const PAGE_CSS: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:1.5em auto;max-width:1100px;padding:0 1em;color:#222}\
h1,h2,h3{font-weight:600}";
