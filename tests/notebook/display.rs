//! evcxr display glue: the protocol blocks, HTML tables (escaping, dtypes, shape, truncation),
//! figure bundles (plotly JSON + HTML + text, plotly.js once per process), panels.

use polars::prelude::*;
use thoughtscope::notebook::{
    self, figure_bundle, figure_bundle_with, figures, html_table, panel_bundle, panel_bundle_with, parse_protocol,
    MimeBundle, NotebookDisplay, Panel, TableOptions,
};
use thoughtscope::plot::{self, BarOptions, Figure};

fn small_figure(title: &str) -> Figure {
    plot::bar_with_error(&["a", "b"], &[1.0, 2.0], &[0.1, 0.2], &BarOptions { title: title.into(), ..Default::default() })
        .unwrap()
}

#[test]
fn bundle_protocol_round_trips_and_guards_markers() {
    let bundle = MimeBundle::new()
        .with("text/html", "<b>x</b>\nEVCXR_END_CONTENT\nsay EVCXR_BEGIN_CONTENT text/plain here")
        .with("text/plain", "plain\nEVCXR_END_CONTENT")
        .with("text/html", "<i>replaced</i>");
    let mut out = Vec::new();
    bundle.write_to(&mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.starts_with("EVCXR_BEGIN_CONTENT text/html\n<i>replaced</i>\nEVCXR_END_CONTENT\n"), "{text}");
    let parts = parse_protocol(&text);
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[0], ("text/html".to_owned(), "<i>replaced</i>\n".to_owned()));
    // A content line equal to the end marker must not end the block.
    assert_eq!(parts[1].0, "text/plain");
    assert!(parts[1].1.starts_with("plain\nEVCXR\u{200b}_END_CONTENT"));

    let html = MimeBundle::new().with("text/html", "a\nEVCXR_END_CONTENT\nEVCXR_BEGIN_CONTENT x/y");
    let parts = parse_protocol(&html.to_protocol_string());
    assert_eq!(parts.len(), 1, "{parts:?}");
    assert!(parts[0].1.contains("EVCXR&#95;END_CONTENT"));
}

fn frame(rows: usize) -> DataFrame {
    let ids: Vec<i64> = (0..rows as i64).collect();
    let scores: Vec<f64> = (0..rows).map(|i| i as f64 / 4.0).collect();
    let text: Vec<String> = (0..rows).map(|i| format!("s{i} <b>&\"'")).collect();
    df!("rollout_id" => ids, "score" => scores, "sentence" => text).unwrap()
}

#[test]
fn html_table_escapes_and_shows_dtypes_and_shape() {
    let df = frame(3);
    let html = html_table(&df, &TableOptions { max_rows: 10, max_cols: 10, max_cell_chars: 200 });
    assert!(html.contains("<small>shape: (3, 3)</small>"));
    assert!(html.contains("<th>rollout_id</th><th>score</th><th>sentence</th>"));
    assert!(html.contains("<tr class=\"dtypes\"><td>i64</td><td>f64</td><td>str</td></tr>"));
    assert!(html.contains("<td>&quot;s1 &lt;b&gt;&amp;\\&quot;&#39;&quot;</td>") || html.contains("<td>&quot;s1 &lt;b&gt;&amp;&quot;&#39;&quot;</td>"), "{html}");
    assert!(!html.contains("<b>&"), "raw cell text leaked: {html}");
    assert!(!html.contains("<script"));
    assert!(!html.contains("…"));
}

#[test]
fn html_table_truncates_head_and_tail_rows_and_columns() {
    let df = frame(25);
    let html = html_table(&df, &TableOptions { max_rows: 5, max_cols: 2, max_cell_chars: 4 });
    let body = html.split("<tbody>").nth(1).unwrap();
    let rows: Vec<&str> = body.split("<tr").skip(1).collect();
    assert_eq!(rows.len(), 6, "3 head + ellipsis + 2 tail: {body}");
    assert!(rows[0].contains("<td>0</td>") && rows[2].contains("<td>2</td>"));
    assert!(rows[3].starts_with(" class=\"ellipsis\""));
    assert!(rows[4].contains("<td>23</td>") && rows[5].contains("<td>24</td>"));
    // Columns: first, "…", last.
    assert!(html.contains("<th>rollout_id</th><th>…</th><th>sentence</th>"), "{html}");
    // Cells cut to 4 characters plus an ellipsis.
    assert!(html.contains("<td>&quot;s24…</td>"), "{html}");
    assert!(html.contains("shape: (25, 3)"));
}

#[test]
fn dataframe_display_is_html_plus_polars_text_and_borrows() {
    let df = frame(2);
    let bundle = df.mime_bundle();
    assert_eq!(bundle.mime_types().collect::<Vec<_>>(), ["text/html", "text/plain"]);
    assert_eq!(bundle.get("text/plain").unwrap(), format!("{df}"));
    // The frame is still ours after displaying (methods take &self).
    let view = notebook::table(&df).max_rows(1);
    assert!(view.html().contains("<td>…</td>"));
    assert_eq!(df.height(), 2);
}

#[test]
fn figure_bundle_has_plotly_json_html_and_text() {
    let figure = small_figure("Importance <by> position");
    let bundle = figure_bundle_with(&figure, "fig-7", Some("<script>/*plotly*/</script>\n"));
    assert_eq!(
        bundle.mime_types().collect::<Vec<_>>(),
        ["application/vnd.plotly.v1+json", "text/html", "text/plain"]
    );
    let json: serde_json::Value = serde_json::from_str(bundle.get("application/vnd.plotly.v1+json").unwrap()).unwrap();
    assert_eq!(json["data"][0]["type"], "bar");
    assert_eq!(json["layout"]["title"]["text"], "Importance <by> position");
    let html = bundle.get("text/html").unwrap();
    assert!(html.starts_with("<script>/*plotly*/</script>"));
    assert!(html.contains("<div id=\"fig-7\""));
    assert!(html.contains("Plotly.newPlot(figureDiv,"));
    assert!(bundle.get("text/plain").unwrap().contains("Importance <by> position"));
    let without = figure_bundle_with(&figure, "fig-8", None);
    assert!(without.get("text/html").unwrap().starts_with("<div id=\"fig-8\""));
}

/// The once-per-process state lives in environment variables; keep every test touching it in
/// this one function (tests run on parallel threads).
#[test]
fn plotly_js_is_embedded_once_per_process() {
    notebook::reset_plotly_js();
    let figure = small_figure("f");
    let first = figure_bundle(&figure);
    let second = figure.mime_bundle();
    let first_html = first.get("text/html").unwrap();
    let second_html = second.get("text/html").unwrap();
    assert!(first_html.len() > 3_000_000, "first figure carries plotly.js");
    assert!(first_html.starts_with("<script type=\"text/javascript\">window.PlotlyConfig"));
    assert!(second_html.len() < 20_000, "second does not: {}", second_html.len());
    // Distinct div ids across displays.
    let id = |html: &str| html.split("<div id=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
    assert_ne!(id(first_html), id(&second_html[..]));

    // A panel after that carries no plotly.js either; after a reset it does.
    let panel = figures(&[&figure, &small_figure("g")]);
    assert!(panel_bundle(&panel).get("text/html").unwrap().len() < 40_000);
    notebook::reset_plotly_js();
    let again = panel_bundle(&panel);
    assert!(again.get("text/html").unwrap().len() > 3_000_000);
    // Tables never embed it and do not consume the flag.
    notebook::reset_plotly_js();
    let _ = panel_bundle(&Panel::new("tables only").text("x"));
    assert!(figure_bundle(&figure).get("text/html").unwrap().len() > 3_000_000);

    // Without MathJax on request.
    notebook::reset_plotly_js();
    std::env::set_var(notebook::MATHJAX_VAR, "0");
    let lean = notebook::plotly_js_preamble();
    std::env::remove_var(notebook::MATHJAX_VAR);
    let full = notebook::plotly_js_preamble();
    assert!(lean.len() + 1_000_000 < full.len());
}

#[test]
fn panel_packs_figures_and_tables_into_one_html_output() {
    let df = frame(3);
    let panel = Panel::new("Layer 12")
        .heading("Scores")
        .figure(&small_figure("a"))
        .figure(&small_figure("b"))
        .table(&df)
        .text("done");
    let bundle = panel_bundle_with(&panel, "p0", None);
    assert_eq!(bundle.mime_types().collect::<Vec<_>>(), ["text/html", "text/plain"], "no plotly JSON for panels");
    let html = bundle.get("text/html").unwrap();
    assert_eq!(html.matches("Plotly.newPlot(figureDiv,").count(), 2);
    assert!(html.contains("id=\"p0-0\"") && html.contains("id=\"p0-1\""));
    assert!(html.contains("<th>rollout_id</th>") && html.contains("<p>done</p>"));
    let mut printed = Vec::new();
    bundle.write_to(&mut printed).unwrap();
    let parts = parse_protocol(&String::from_utf8(printed).unwrap());
    assert_eq!(parts.iter().filter(|(m, _)| m == "text/html").count(), 1);
}
