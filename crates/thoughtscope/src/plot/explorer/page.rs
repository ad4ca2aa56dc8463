//! The explorer's HTML: one `<div>` holding its data (JSON), its style and its script, all
//! scoped to that div, so the same fragment makes the standalone page and a notebook output
//! (several per page).

use super::Explorer;
use crate::plot::{html_escape, script_safe_json};

/// The page's style (every rule under `.ts-explorer`).
pub(crate) const EXPLORER_CSS: &str = include_str!("explorer.css");
/// The page's script: `function init(root)`.
pub(crate) const EXPLORER_JS: &str = include_str!("explorer.js");

/// The explorer as a `<div id="{id}" class="ts-explorer">` with its data, style and script.
pub(crate) fn explorer_fragment(explorer: &Explorer, id: &str) -> String {
    let id_js = script_safe_json(&serde_json::Value::String(id.to_owned()).to_string());
    format!(
        "<div id=\"{id}\" class=\"ts-explorer\">\n<style>{css}</style>\n\
         <script type=\"application/json\" class=\"ts-data\">{json}</script>\n\
         <div class=\"ts-head\"><h1 class=\"ts-title\">{title}</h1><div class=\"ts-sub\"></div>\
         <ul class=\"ts-missing\"></ul><div class=\"ts-notes\"></div></div>\n\
         <div class=\"ts-controls\"><label>Colour sentences by <select class=\"ts-metric\"></select></label>\
         <span class=\"ts-legend\"></span><label>Matrix <select class=\"ts-matrix\"></select></label></div>\n\
         <div class=\"ts-main\"><div class=\"ts-text\"></div>\n\
         <div class=\"ts-detail\"><div class=\"ts-cell\"></div>\
         <div class=\"ts-panel\"><p class=\"ts-muted\">Click a sentence, or a cell of the heatmap.</p></div></div>\n\
         <div class=\"ts-side\"><div class=\"ts-heatwrap\"><canvas class=\"ts-heat\"></canvas>\
         <div class=\"ts-mark\"></div><div class=\"ts-hline\"></div><div class=\"ts-vline\"></div></div>\
         <div class=\"ts-heatinfo\"></div></div></div>\n\
         <noscript>This explorer needs JavaScript.</noscript>\n\
         <script>(function () {{\n{js}\ninit(document.getElementById({id_js}));\n}})();</script>\n</div>\n",
        id = html_escape(id),
        css = EXPLORER_CSS,
        json = script_safe_json(&explorer.to_json()),
        title = html_escape(&explorer.title),
        js = EXPLORER_JS,
    )
}

/// A complete page around [`explorer_fragment`] (full width, unlike the reports' column).
pub(super) fn explorer_document(explorer: &Explorer) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{title}</title>\n\
         <style>body{{margin:1em 1.5em}}</style>\n</head>\n<body>\n{body}</body>\n</html>\n",
        title = html_escape(&explorer.title),
        body = explorer_fragment(explorer, "thoughtscope-explorer"),
    )
}
