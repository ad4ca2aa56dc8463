//! Figure builders (the plotly.js JSON they produce), offline HTML and reports. No browser needed.

use serde_json::{json, Value};
use thoughtscope::scores::stats::least_squares;
use thoughtscope::plot::{
    self, bar_with_error, grid, heatmap, heatmap_matrix, line_scores, scatter_with_fit, BarOptions,
    ColorLimits, Figure, GridOptions, HeatmapOptions, LineOptions, Report, ScatterOptions, Series,
};

/// A causal 5 × 5 "attention" matrix: row i spreads over 0..=i.
fn causal(n: usize) -> Vec<f32> {
    let mut m = vec![0.0f32; n * n];
    for i in 0..n {
        for j in 0..=i {
            m[i * n + j] = (1 + i + 2 * j) as f32 / 20.0;
        }
    }
    m
}

#[test]
fn heatmap_sets_quantile_limits_highlights_and_orientation() {
    let n = 5;
    let m = causal(n);
    let opts = HeatmapOptions { title: "head 3.1".into(), highlight: vec![1, 3], index_offset: 1, ..Default::default() };
    let figure = heatmap(&m, n, &opts).unwrap();
    let json = figure.to_json_value();
    let trace = &json["data"][0];
    assert_eq!(trace["type"], "heatmap");
    assert_eq!(trace["zmin"], 0.0);
    let expected_max = plot::lower_triangle_quantile(&m, n, 0.99).unwrap();
    assert_eq!(trace["zmax"].as_f64().unwrap(), expected_max);
    assert_eq!(trace["z"].as_array().unwrap().len(), n);
    assert_eq!(trace["x"][0], 1.0, "index_offset shifts the axis");
    // Row 0 at the top, as imshow.
    assert_eq!(json["layout"]["yaxis"]["autorange"], "reversed");
    assert_eq!(json["layout"]["yaxis"]["title"]["text"], "query sentence");
    // Per highlighted index: a row mark + outline and a column mark + outline, in axis units.
    let shapes = json["layout"]["shapes"].as_array().unwrap();
    assert_eq!(shapes.len(), 8);
    assert_eq!(shapes[0]["xref"], "x domain");
    assert_eq!(shapes[0]["y0"], 1.5);
    assert_eq!(shapes[0]["y1"], 2.5);
    assert_eq!(shapes[1]["x0"], 0.5);
    assert_eq!(shapes[1]["y0"], 1.5);
    assert_eq!(shapes[2]["yref"], "y domain");
    assert_eq!(shapes[2]["x0"], 1.5);
    let marks_only = HeatmapOptions { highlight_outline: false, highlight_cols: false, ..opts.clone() };
    assert_eq!(heatmap(&m, n, &marks_only).unwrap().to_json_value()["layout"]["shapes"].as_array().unwrap().len(), 2);
    assert_eq!(json["layout"]["title"]["text"], "head 3.1");
}

#[test]
fn heatmap_faithful_tril_limits_and_errors() {
    let n = 4;
    let m = causal(n);
    let opts = HeatmapOptions { color_limits: ColorLimits::TrilQuantile { min: 0.0, q: 0.9 }, ..Default::default() };
    let json = heatmap(&m, n, &opts).unwrap().to_json_value();
    assert_eq!(json["data"][0]["zmax"].as_f64().unwrap(), plot::tril_quantile(&m, n, 0.9).unwrap());

    let err = heatmap(&m, 3, &HeatmapOptions::default()).unwrap_err().to_string();
    assert!(err.contains("16 values"), "{err}");
    let err = heatmap(&m, n, &HeatmapOptions { highlight: vec![4], ..Default::default() }).unwrap_err().to_string();
    assert!(err.contains("highlighted index 4"), "{err}");
    let err = heatmap_matrix(&[1.0f64; 6], 2, 3, &HeatmapOptions::default()).unwrap_err().to_string();
    assert!(err.contains("square"), "{err}");
}

#[test]
fn rectangular_heatmap_with_labels() {
    let values = [0.0, 1.0, f64::NAN, 1.0, 0.0, 1.0];
    let opts = HeatmapOptions {
        color_limits: ColorLimits::Fixed { min: 0.0, max: 1.0 },
        x_labels: Some(vec!["T0".into(), "T1".into(), "T2".into()]),
        y_labels: Some(vec!["p1".into(), "p2".into()]),
        highlight: vec![],
        ..Default::default()
    };
    let json = heatmap_matrix(&values, 2, 3, &opts).unwrap().to_json_value();
    assert_eq!(json["data"][0]["x"], json!(["T0", "T1", "T2"]));
    assert_eq!(json["data"][0]["z"][0][2], Value::Null, "NaN becomes a gap");
    assert_eq!(json["data"][0]["zmax"], 1.0);
}

#[test]
fn line_scores_gaps_markers_and_bands() {
    let series = [
        Series::new("head 5.2", [0.1, f64::NAN, 0.3, 0.4]),
        Series::new("head 7.0", [0.2f32, 0.1, 0.0, 0.5]),
    ];
    let opts = LineOptions { title: "vertical scores".into(), highlight: vec![2, 1], ..Default::default() };
    let json = line_scores(&series, &opts).unwrap().to_json_value();
    let data = json["data"].as_array().unwrap();
    assert_eq!(data.len(), 3, "two series + the tagged markers");
    assert_eq!(data[0]["y"][1], Value::Null);
    assert_eq!(data[1]["name"], "head 7.0");
    // Markers only where the first series has a value (index 1 is a gap).
    assert_eq!(data[2]["name"], "tagged");
    assert_eq!(data[2]["x"], json!([2.0]));
    assert_eq!(data[2]["y"], json!([0.3]));
    assert_eq!(json["layout"]["shapes"].as_array().unwrap().len(), 2);
    assert_eq!(json["layout"]["shapes"][0]["x0"], 1.5);

    let err = line_scores(&series, &LineOptions { highlight: vec![9], ..Default::default() }).unwrap_err();
    assert!(err.to_string().contains("index 9"));
    assert!(line_scores(&[], &LineOptions::default()).is_err());
}

#[test]
fn bars_carry_sem_error_bars() {
    let json = bar_with_error(&["Token 0", "Token 1"], &[0.5, 0.25], &[0.1, f64::NAN], &BarOptions::default())
        .unwrap()
        .to_json_value();
    let bar = &json["data"][0];
    assert_eq!(bar["type"], "bar");
    assert_eq!(bar["error_y"]["type"], "data");
    assert_eq!(bar["error_y"]["array"], json!([0.1, null]));
    // Value labels above the error bars (mean + SEM; mean alone where SEM is NaN).
    let labels = json["layout"]["annotations"].as_array().unwrap();
    assert_eq!(labels[0]["text"], "0.50");
    assert_eq!(labels[0]["y"], 0.6);
    assert_eq!(labels[1]["y"], 0.25);
    assert!(bar_with_error(&["a"], &[1.0, 2.0], &[0.0, 0.0], &BarOptions::default()).is_err());
}

#[test]
fn least_squares_and_scatter_fit_line() {
    let x = [0.0, 1.0, 2.0, 3.0, f64::NAN];
    let y = [1.0, 3.0, 5.0, 7.0, 100.0];
    let fit = least_squares(&x, &y).unwrap();
    assert!((fit.slope - 2.0).abs() < 1e-12 && (fit.intercept - 1.0).abs() < 1e-12);
    assert!(least_squares(&[1.0, 1.0], &[0.0, 1.0]).is_none());

    let labels: Vec<String> = (0..5).map(|i| format!("p{i}")).collect();
    let json = scatter_with_fit(&x, &y, Some(&labels), &ScatterOptions::default()).unwrap().to_json_value();
    let line = &json["data"][1];
    assert_eq!(line["mode"], "lines");
    assert_eq!(line["x"], json!([0.0, 3.0]));
    assert_eq!(line["y"], json!([1.0, 7.0]));
    assert_eq!(json["data"][0]["hovertext"][4], "p4");
    let no_fit = scatter_with_fit(&x, &y, None, &ScatterOptions { fit: false, ..Default::default() }).unwrap();
    assert_eq!(no_fit.plot.data().len(), 1);
}

#[test]
fn grid_places_any_number_of_cells() {
    let cells: Vec<Figure> = (0..10)
        .map(|k| {
            let opts = ScatterOptions {
                title: format!("Token {k}"),
                y_range: Some((-0.1, 1.1)),
                x_title: "attention".into(),
                ..Default::default()
            };
            scatter_with_fit(&[0.0, 1.0, 2.0], &[0.0, 0.5, 1.0], None, &opts).unwrap()
        })
        .collect();
    let figure = grid(&cells, &GridOptions { title: "by position".into(), columns: 4, ..Default::default() }).unwrap();
    let json = figure.to_json_value();
    let data = json["data"].as_array().unwrap();
    assert_eq!(data[0]["marker"]["color"], data[18]["marker"]["color"], "same colours in every cell");
    assert_eq!(data[19]["line"]["color"], "red");
    assert_eq!(data.len(), 20, "points + fit per cell");
    assert_eq!(data[0]["xaxis"], "x");
    assert_eq!(data[19]["xaxis"], "x10");
    assert_eq!(data[19]["yaxis"], "y10");
    assert_eq!(data[19]["showlegend"], false);
    let layout = &json["layout"];
    assert_eq!(layout["yaxis10"]["range"], json!([-0.1, 1.1]));
    assert_eq!(layout["xaxis10"]["anchor"], "y10");
    assert_eq!(layout["xaxis10"]["title"]["text"], "attention");
    // 3 rows of 4: cell 9 (0-based) is row 2, column 1.
    let domain = layout["xaxis10"]["domain"].as_array().unwrap();
    assert!(domain[0].as_f64().unwrap() > 0.25 && domain[1].as_f64().unwrap() < 0.5);
    let titles: Vec<&str> = layout["annotations"].as_array().unwrap().iter().filter_map(|a| a["text"].as_str()).collect();
    assert!(titles.contains(&"Token 9"));
    assert_eq!(json["layout"]["title"]["text"], "by position");
    assert_eq!(figure.height, 3 * 320 + 120);
}

#[test]
fn figure_from_plot_and_layout_overrides() {
    let mut p = plotly::Plot::new();
    p.add_trace(plotly::Scatter::new(vec![1, 2], vec![3, 4]));
    p.set_layout(plotly::Layout::new().title("from codi").height(650));
    let mut figure = Figure::from(&p);
    assert_eq!(figure.title, "from codi");
    assert_eq!(figure.height, 650);
    figure.merge_layout(json!({"yaxis": {"range": [0, 1]}, "xaxis9": {"title": {"text": "x9"}}}));
    figure.merge_layout(json!({"yaxis": {"title": {"text": "y"}}}));
    let json = figure.to_json_value();
    assert_eq!(json["layout"]["yaxis"], json!({"range": [0, 1], "title": {"text": "y"}}));
    assert_eq!(json["layout"]["xaxis9"]["title"]["text"], "x9");
    assert_eq!(json["layout"]["height"], 650);
    assert!(json.get("frames").is_none());
}

#[test]
fn standalone_html_is_offline_and_script_safe() {
    let mut p = plotly::Plot::new();
    p.add_trace(plotly::Scatter::new(vec![1, 2], vec![3, 4]).name("</script><b>x</b>"));
    let figure = Figure::new("a <title> & more", p);
    let html = figure.to_html();
    assert!(html.contains("<title>a &lt;title&gt; &amp; more</title>"));
    assert_eq!(html.matches("Plotly.newPlot(figureDiv,").count(), 1);
    // plotly.js is inlined (not a CDN), and only once; MathJax is left out of figure files.
    assert!(html.len() > 3_000_000, "plotly.js inlined: {} bytes", html.len());
    let ours = html.replace(plot::plotly_js_script(), "");
    assert_eq!(html.len() - ours.len(), plot::plotly_js_script().len(), "one inlined copy");
    assert!(!ours.contains("https://") && !ours.contains("src="), "no network references: {ours}");
    assert!(html.len() < plot::plotly_js_script().len() + 50_000, "no MathJax in figure files");
    // The trace name cannot close the script early.
    assert!(!html.contains("</script><b>x"));
    assert!(html.contains("\\u003c/script\\u003e\\u003cb\\u003ex"));
    assert!(plot::plotly_js_script().len() < plot::offline_js_with_mathjax().len());

    let dir = std::env::temp_dir().join(format!("thoughtscope-plot-test-{}", std::process::id()));
    let path = dir.join("nested/fig.html");
    figure.write_html(&path).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), html);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn report_embeds_plotly_once_with_tables_and_text() {
    let a = bar_with_error(&["a"], &[1.0], &[0.1], &BarOptions { title: "A".into(), ..Default::default() }).unwrap();
    let b = scatter_with_fit(&[0.0, 1.0], &[1.0, 0.0], None, &ScatterOptions { title: "B".into(), ..Default::default() }).unwrap();
    let df = polars::df!("rollout_id" => [0i64, 1], "note" => ["<tag>", "ok"]).unwrap();
    let report = Report::new("VA summary").heading("Heads").text("Line one & two\n\nSecond paragraph").table(&df).figures([&a, &b]);
    let html = report.to_html();
    assert_eq!(report.figure_count(), 2);
    assert_eq!(html.matches("Plotly.newPlot(figureDiv,").count(), 2);
    assert!(html.contains("id=\"thoughtscope-figure-0\"") && html.contains("id=\"thoughtscope-figure-1\""));
    assert!(html.contains("<h1>VA summary</h1>") && html.contains("<h2>Heads</h2>"));
    assert!(html.contains("<p>Line one &amp; two</p>") && html.contains("<p>Second paragraph</p>"));
    assert!(html.contains("&quot;&lt;tag&gt;&quot;"), "table cells escaped");
    let one_copy = plot::plotly_js_script();
    assert_eq!(html.matches(&one_copy[..200]).count(), 1, "plotly.js embedded once");
    let text_only = Report::new("t").text("no figures").to_html();
    assert!(text_only.len() < 10_000, "no plotly.js without figures");
    let plain = report.plain_text();
    assert!(plain.contains("[figure: A]") && plain.contains("## Heads"));
}

#[test]
fn figure_pages_share_one_plotly_js_per_output_folder() {
    let root = tempfile::tempdir().unwrap();
    let sub = root.path().join("rollout_01");
    let figure = heatmap(&causal(4), 4, &HeatmapOptions::default()).unwrap();
    let written =
        plot::save_figures_sharing(&sub, &[("a", &figure), ("b", &figure)], &[plot::SaveFormat::Html], root.path())
            .unwrap();
    assert_eq!(written, vec![sub.join("a.html"), sub.join("b.html")]);
    let js = std::fs::read_to_string(root.path().join(plot::PLOTLY_JS_FILE)).unwrap();
    assert_eq!(js, plot::plotly_js_source());
    assert!(js.len() > 1_000_000 && !js.contains("<script"), "plotly.js itself, no tags");
    for page in &written {
        let html = std::fs::read_to_string(page).unwrap();
        assert!(html.contains(r#"<script type="text/javascript" src="../plotly.min.js"></script>"#));
        assert!(html.len() < 20_000, "{} is {} bytes: plotly.js is not inlined", page.display(), html.len());
    }
    assert!(!sub.join(plot::PLOTLY_JS_FILE).exists(), "one copy, at the root");

    // Same folder: `save_figures`; a second save leaves the identical copy alone.
    let flat = root.path().join("flat");
    plot::save_figures(&flat, &[("c", &figure)], &[plot::SaveFormat::Html]).unwrap();
    let before = std::fs::metadata(flat.join(plot::PLOTLY_JS_FILE)).unwrap().modified().unwrap();
    plot::save_figures(&flat, &[("c", &figure)], &[plot::SaveFormat::Html]).unwrap();
    assert_eq!(std::fs::metadata(flat.join(plot::PLOTLY_JS_FILE)).unwrap().modified().unwrap(), before);
    assert!(std::fs::read_to_string(flat.join("c.html")).unwrap().contains(r#"src="plotly.min.js""#));

    // The shared copy must be at or above the figures' folder.
    let err = plot::save_figures_sharing(root.path(), &[("d", &figure)], &[plot::SaveFormat::Html], &sub).unwrap_err();
    assert!(err.to_string().contains("is not"), "{err}");
}

#[test]
fn analysis_index_links_every_report_by_its_title() {
    let root = tempfile::tempdir().unwrap();
    let write = |rel: &str, title: &str| {
        let path = root.path().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, format!("<html><head><title>{title}</title></head></html>")).unwrap();
    };
    write("va_attention/apple_boxes/index.html", "VA &amp; friends");
    write("codi/index.html", "CODI");
    write("codi/faithful/index.html", "CODI faithful");
    write("reports/va_attention.html", "VA notebook");
    write("explorer/rollout_04.html", "rollout_04 — trace explorer");
    write("va_attention/apple_boxes/rollout_01/attn_layer02_head03.html", "a figure, not a report");
    let (path, entries) = plot::write_index(root.path(), "outputs").unwrap();
    let paths: Vec<String> = entries.iter().map(|e| e.path.display().to_string()).collect();
    assert_eq!(
        paths,
        ["codi/faithful/index.html", "codi/index.html", "explorer/rollout_04.html", "reports/va_attention.html", "va_attention/apple_boxes/index.html"]
    );
    assert_eq!(entries[2].title, "rollout_04 — trace explorer");
    assert_eq!(entries[4].title, "VA & friends");
    let html = std::fs::read_to_string(path).unwrap();
    assert!(html.contains(r#"<a href="codi/index.html">CODI</a>"#), "{html}");
    assert!(html.contains("VA &amp; friends") && html.len() < 10_000, "{html}");
    // Rewriting does not list itself.
    assert_eq!(plot::write_index(root.path(), "outputs").unwrap().1.len(), 5);
}
