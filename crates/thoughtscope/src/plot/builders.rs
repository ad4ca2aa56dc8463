//! Figure builders shared by the VA and CODI pipelines: attention heatmaps with tagged rows and
//! columns outlined, vertical-score curves with tagged sentences marked, bars with SEM error
//! bars, scatter plots with a least-squares line, and grids of small subplots.
//!
//! Options are plain structs with `Default` (use `..Default::default()`); every builder checks
//! its input sizes and indices and returns `Error::Invalid` naming what does not fit.

use plotly::common::{ColorScale, ColorScalePalette, ErrorData, ErrorType, Line, Marker, Mode, Title};
use plotly::layout::{Axis, AxisRange, Layout};
use plotly::{Bar, HeatMap, Plot, Scatter};
use serde_json::{json, Map, Value};

use super::figure::{merge_json, Figure, RawTrace};
use super::quantile::{lower_triangle_quantile, quantile, tril_quantile, QuantileFloat};
use crate::scores::stats::least_squares;
use crate::{Error, Result};

/// How a heatmap's colour range is chosen.
#[derive(Debug, Clone, PartialEq)]
pub enum ColorLimits {
    /// plotly's automatic range (min to max).
    Auto,
    Fixed { min: f64, max: f64 },
    /// `max` = quantile `q` of the entries on and below the diagonal (numpy "linear", NaN
    /// skipped); square matrices only. The default, with `min = 0, q = 0.99`.
    LowerTriangleQuantile { min: f64, q: f64 },
    /// Upstream `plot_one_attn_matrix.py`: `max = np.quantile(np.tril(M), q)`, the upper-triangle
    /// zeros included (q = 0.99 for one head, 0.9 for a top-k mean); square matrices only.
    TrilQuantile { min: f64, q: f64 },
    /// `max` = quantile `q` of all values (NaN skipped).
    Quantile { min: f64, q: f64 },
}

impl Default for ColorLimits {
    fn default() -> Self {
        ColorLimits::LowerTriangleQuantile { min: 0.0, q: 0.99 }
    }
}

/// Options of [`heatmap`] and [`heatmap_matrix`].
#[derive(Debug, Clone)]
pub struct HeatmapOptions {
    pub title: String,
    pub x_title: String,
    pub y_title: String,
    pub colorbar_title: String,
    /// Matrix indices (0-based, before `index_offset`) to outline: tagged sentences.
    pub highlight: Vec<usize>,
    /// Outline the highlighted rows (query sentences) ...
    pub highlight_rows: bool,
    /// ... and/or columns (key sentences).
    pub highlight_cols: bool,
    pub highlight_color: String,
    /// Besides the marks outside the plot, outline highlighted rows/columns across the matrix.
    pub highlight_outline: bool,
    pub color_limits: ColorLimits,
    pub color_scale: ColorScale,
    /// Axis value of index 0 (e.g. 1 when the first sentence was trimmed off, as upstream's `[1:-1]`).
    pub index_offset: usize,
    /// Category labels instead of numeric axes ([`heatmap_matrix`] only; lengths must match).
    pub x_labels: Option<Vec<String>>,
    pub y_labels: Option<Vec<String>>,
    /// Square cells (y scaled to x); on by default for [`heatmap`].
    pub square_cells: bool,
}

impl Default for HeatmapOptions {
    fn default() -> Self {
        HeatmapOptions {
            title: String::new(),
            x_title: "key sentence".to_owned(),
            y_title: "query sentence".to_owned(),
            colorbar_title: String::new(),
            highlight: Vec::new(),
            highlight_rows: true,
            highlight_cols: true,
            highlight_color: "red".to_owned(),
            highlight_outline: true,
            color_limits: ColorLimits::default(),
            color_scale: ColorScale::Palette(ColorScalePalette::Viridis),
            index_offset: 0,
            x_labels: None,
            y_labels: None,
            square_cells: true,
        }
    }
}

/// Heatmap of a row-major `n × n` matrix (sentence × sentence attention), row 0 at the top as
/// matplotlib's `imshow`, colour limits per `opts.color_limits` (default `0 ..
/// lower_triangle_quantile(m, n, 0.99)`), highlighted rows/columns marked outside the plot and
/// outlined.
pub fn heatmap<T: QuantileFloat>(matrix: &[T], n: usize, opts: &HeatmapOptions) -> Result<Figure> {
    if matrix.len() != n * n {
        return Err(Error::invalid(format!(
            "heatmap: matrix has {} values, expected n × n = {n} × {n} = {}",
            matrix.len(),
            n * n
        )));
    }
    heatmap_matrix(matrix, n, n, opts)
}

/// Heatmap of a row-major `rows × cols` matrix (e.g. problems × tokens); row 0 at the top.
/// The triangle colour limits need a square matrix.
pub fn heatmap_matrix<T: QuantileFloat>(values: &[T], rows: usize, cols: usize, opts: &HeatmapOptions) -> Result<Figure> {
    if values.len() != rows * cols {
        return Err(Error::invalid(format!(
            "heatmap: {} values, expected rows × cols = {rows} × {cols} = {}",
            values.len(),
            rows * cols
        )));
    }
    for (name, labels, expected) in [("x_labels", &opts.x_labels, cols), ("y_labels", &opts.y_labels, rows)] {
        if let Some(labels) = labels {
            if labels.len() != expected {
                return Err(Error::invalid(format!("heatmap: {name} has {} labels, expected {expected}", labels.len())));
            }
        }
    }
    for &index in &opts.highlight {
        if (opts.highlight_rows && index >= rows) || (opts.highlight_cols && index >= cols) {
            return Err(Error::invalid(format!(
                "heatmap: highlighted index {index} is outside the {rows} × {cols} matrix"
            )));
        }
    }
    let (zmin, zmax) = color_range(values, rows, cols, &opts.color_limits)?;

    let z: Vec<Vec<f64>> = (0..rows).map(|i| (0..cols).map(|j| values[i * cols + j].to_f64()).collect()).collect();
    let offset = opts.index_offset as f64;
    let numeric = |count: usize| (0..count).map(|k| offset + k as f64).collect::<Vec<f64>>();
    let x: Vec<Value> = match &opts.x_labels {
        Some(labels) => labels.iter().map(|l| Value::from(l.as_str())).collect(),
        None => numeric(cols).into_iter().map(Value::from).collect(),
    };
    let y: Vec<Value> = match &opts.y_labels {
        Some(labels) => labels.iter().map(|l| Value::from(l.as_str())).collect(),
        None => numeric(rows).into_iter().map(Value::from).collect(),
    };
    let mut trace = HeatMap::new(x, y, z).color_scale(opts.color_scale.clone());
    if let (Some(lo), Some(hi)) = (zmin, zmax) {
        trace = trace.zmin(lo).zmax(hi);
    }
    if !opts.colorbar_title.is_empty() {
        trace = trace.color_bar(plotly::common::ColorBar::new().title(Title::with_text(&opts.colorbar_title)));
    }

    let mut plot = Plot::new();
    plot.add_trace(trace);
    plot.set_layout(
        Layout::new()
            .title(Title::with_text(&opts.title))
            .x_axis(Axis::new().title(Title::with_text(&opts.x_title)))
            .y_axis(Axis::new().title(Title::with_text(&opts.y_title))),
    );

    // Cell edges: numeric axes centre cell k on offset + k; category axes on k.
    let edge = |k: usize, labelled: bool| if labelled { k as f64 - 0.5 } else { offset + k as f64 - 0.5 };
    let x_labelled = opts.x_labels.is_some();
    let y_labelled = opts.y_labels.is_some();
    let mut shapes = Vec::new();
    // Each highlighted index gets a filled mark just outside the plot (right of its row, above its
    // column, away from the tick labels), which never hides data, and optionally a thin outline across the matrix.
    let outline = json!({"color": opts.highlight_color, "width": 1});
    let no_line = json!({"width": 0});
    for &index in &opts.highlight {
        if opts.highlight_rows {
            let (y0, y1) = (edge(index, y_labelled), edge(index + 1, y_labelled));
            shapes.push(json!({
                "type": "rect", "xref": "x domain", "yref": "y", "layer": "above",
                "x0": 1.005, "x1": 1.03, "y0": y0, "y1": y1,
                "line": no_line, "fillcolor": opts.highlight_color,
            }));
            if opts.highlight_outline {
                shapes.push(json!({
                    "type": "rect", "xref": "x", "yref": "y", "layer": "above", "opacity": 0.6,
                    "x0": edge(0, x_labelled), "x1": edge(cols, x_labelled), "y0": y0, "y1": y1,
                    "line": outline, "fillcolor": "rgba(0,0,0,0)",
                }));
            }
        }
        if opts.highlight_cols {
            let (x0, x1) = (edge(index, x_labelled), edge(index + 1, x_labelled));
            shapes.push(json!({
                "type": "rect", "xref": "x", "yref": "y domain", "layer": "above",
                "x0": x0, "x1": x1, "y0": 1.005, "y1": 1.03,
                "line": no_line, "fillcolor": opts.highlight_color,
            }));
            if opts.highlight_outline {
                shapes.push(json!({
                    "type": "rect", "xref": "x", "yref": "y", "layer": "above", "opacity": 0.6,
                    "x0": x0, "x1": x1, "y0": edge(0, y_labelled), "y1": edge(rows, y_labelled),
                    "line": outline, "fillcolor": "rgba(0,0,0,0)",
                }));
            }
        }
    }
    let mut y_axis = json!({"autorange": "reversed"});
    let mut x_axis = json!({});
    if opts.square_cells && rows == cols {
        y_axis["scaleanchor"] = json!("x");
        y_axis["constrain"] = json!("domain");
        x_axis["constrain"] = json!("domain");
    }
    let mut patch = json!({"xaxis": x_axis, "yaxis": y_axis});
    if !shapes.is_empty() {
        patch["shapes"] = Value::Array(shapes);
    }
    let (width, height) = if rows == cols && opts.square_cells { (760, 700) } else { (900, (260 + 14 * rows).min(1400)) };
    Ok(Figure::new(opts.title.clone(), plot).with_size(width, height).with_layout(patch))
}

fn color_range<T: QuantileFloat>(values: &[T], rows: usize, cols: usize, limits: &ColorLimits) -> Result<(Option<f64>, Option<f64>)> {
    let square = |what: &str| -> Result<usize> {
        if rows == cols {
            Ok(rows)
        } else {
            Err(Error::invalid(format!("heatmap: {what} colour limits need a square matrix, got {rows} × {cols}")))
        }
    };
    let (min, max) = match *limits {
        ColorLimits::Auto => return Ok((None, None)),
        ColorLimits::Fixed { min, max } => (min, max),
        ColorLimits::LowerTriangleQuantile { min, q } => (min, lower_triangle_quantile(values, square("lower-triangle")?, q)?),
        ColorLimits::TrilQuantile { min, q } => (min, tril_quantile(values, square("np.tril")?, q)?),
        ColorLimits::Quantile { min, q } => (min, quantile(values, q)?),
    };
    if max.is_nan() {
        // No finite value to take a quantile of: let plotly choose rather than draw nothing.
        return Ok((None, None));
    }
    Ok((Some(min), Some(max)))
}

/// One named curve of [`line_scores`]; NaN values are gaps.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub values: Vec<f64>,
}

impl Series {
    pub fn new<V: Into<f64>>(name: impl Into<String>, values: impl IntoIterator<Item = V>) -> Self {
        Series { name: name.into(), values: values.into_iter().map(Into::into).collect() }
    }
}

/// Options of [`line_scores`].
#[derive(Debug, Clone)]
pub struct LineOptions {
    pub title: String,
    pub x_title: String,
    pub y_title: String,
    /// Indices (0-based, before `index_offset`) to mark: a shaded band and a marker on the first series.
    pub highlight: Vec<usize>,
    /// Legend name of the markers.
    pub highlight_name: String,
    pub highlight_color: String,
    /// x value of index 0.
    pub index_offset: usize,
    /// Draw a small marker at every point as well as the line.
    pub markers: bool,
}

impl Default for LineOptions {
    fn default() -> Self {
        LineOptions {
            title: String::new(),
            x_title: "sentence".to_owned(),
            y_title: "vertical score".to_owned(),
            highlight: Vec::new(),
            highlight_name: "tagged".to_owned(),
            highlight_color: "red".to_owned(),
            index_offset: 0,
            markers: true,
        }
    }
}

/// Curves over sentence index (vertical scores), NaN as gaps, highlighted indices shaded and
/// marked on the first series.
pub fn line_scores(series: &[Series], opts: &LineOptions) -> Result<Figure> {
    if series.is_empty() {
        return Err(Error::invalid("line_scores: no series given"));
    }
    let longest = series.iter().map(|s| s.values.len()).max().unwrap_or(0);
    if let Some(&bad) = opts.highlight.iter().find(|&&i| i >= longest) {
        return Err(Error::invalid(format!(
            "line_scores: highlighted index {bad} is past the longest series ({longest} values)"
        )));
    }
    let offset = opts.index_offset as f64;
    let mut plot = Plot::new();
    for s in series {
        let x: Vec<f64> = (0..s.values.len()).map(|k| offset + k as f64).collect();
        let mode = if opts.markers { Mode::LinesMarkers } else { Mode::Lines };
        plot.add_trace(Scatter::new(x, s.values.clone()).mode(mode).marker(Marker::new().size(4)).name(&s.name));
    }
    if !opts.highlight.is_empty() {
        let first = &series[0].values;
        let (hx, hy): (Vec<f64>, Vec<f64>) = opts
            .highlight
            .iter()
            .filter_map(|&i| first.get(i).filter(|v| v.is_finite()).map(|&v| (offset + i as f64, v)))
            .unzip();
        plot.add_trace(
            Scatter::new(hx, hy)
                .mode(Mode::Markers)
                .marker(Marker::new().size(10).color(opts.highlight_color.clone()))
                .name(&opts.highlight_name),
        );
    }
    plot.set_layout(
        Layout::new()
            .title(Title::with_text(&opts.title))
            .x_axis(Axis::new().title(Title::with_text(&opts.x_title)))
            .y_axis(Axis::new().title(Title::with_text(&opts.y_title))),
    );
    let bands: Vec<Value> = opts
        .highlight
        .iter()
        .map(|&i| {
            json!({
                "type": "rect", "xref": "x", "yref": "paper", "layer": "below",
                "x0": offset + i as f64 - 0.5, "x1": offset + i as f64 + 0.5, "y0": 0, "y1": 1,
                "fillcolor": opts.highlight_color, "opacity": 0.15, "line": {"width": 0},
            })
        })
        .collect();
    let mut figure = Figure::new(opts.title.clone(), plot).with_size(1000, 450);
    if !bands.is_empty() {
        figure.merge_layout(json!({ "shapes": bands }));
    }
    Ok(figure)
}

/// Options of [`bar_with_error`].
#[derive(Debug, Clone)]
pub struct BarOptions {
    pub title: String,
    pub x_title: String,
    pub y_title: String,
    pub y_range: Option<(f64, f64)>,
    /// Print each mean above its bar (`{:.2}`).
    pub value_labels: bool,
    pub color: Option<String>,
}

impl Default for BarOptions {
    fn default() -> Self {
        BarOptions {
            title: String::new(),
            x_title: String::new(),
            y_title: String::new(),
            y_range: None,
            value_labels: true,
            color: None,
        }
    }
}

/// Bars of `means` with ±`sem` error bars (NaN SEM: no bar drawn).
pub fn bar_with_error<S: AsRef<str>>(labels: &[S], means: &[f64], sem: &[f64], opts: &BarOptions) -> Result<Figure> {
    if labels.len() != means.len() || sem.len() != means.len() {
        return Err(Error::invalid(format!(
            "bar_with_error: {} labels, {} means and {} SEM values; they must have one length",
            labels.len(),
            means.len(),
            sem.len()
        )));
    }
    let labels: Vec<String> = labels.iter().map(|l| l.as_ref().to_owned()).collect();
    let mut bar = Bar::new(labels.clone(), means.to_vec()).error_y(ErrorData::new(ErrorType::Data).array(sem.to_vec()));
    if let Some(color) = &opts.color {
        bar = bar.marker(Marker::new().color(color.clone()));
    }
    // Value labels sit above the error bar (as upstream's matplotlib text at mean + SEM), as
    // annotations: plotly's own bar text would sit on the error bar.
    let value_labels: Vec<Value> = if opts.value_labels {
        labels
            .iter()
            .zip(means.iter().zip(sem))
            .filter(|(_, (m, _))| m.is_finite())
            .map(|(label, (&m, &s))| {
                let top = if m >= 0.0 { m + if s.is_finite() { s } else { 0.0 } } else { m };
                json!({"x": label, "y": top, "text": format!("{m:.2}"), "showarrow": false,
                       "xref": "x", "yref": "y", "yanchor": "bottom", "yshift": 2})
            })
            .collect()
    } else {
        Vec::new()
    };
    let mut y_axis = Axis::new().title(Title::with_text(&opts.y_title));
    if let Some((lo, hi)) = opts.y_range {
        y_axis = y_axis.range(AxisRange::new(lo, hi));
    }
    let mut plot = Plot::new();
    plot.add_trace(bar);
    plot.set_layout(
        Layout::new()
            .title(Title::with_text(&opts.title))
            .x_axis(Axis::new().title(Title::with_text(&opts.x_title)))
            .y_axis(y_axis),
    );
    let mut figure = Figure::new(opts.title.clone(), plot).with_size(900, 500);
    if !value_labels.is_empty() {
        figure.merge_layout(json!({ "annotations": value_labels }));
    }
    Ok(figure)
}

/// Options of [`scatter_with_fit`].
#[derive(Debug, Clone)]
pub struct ScatterOptions {
    pub title: String,
    pub x_title: String,
    pub y_title: String,
    pub x_range: Option<(f64, f64)>,
    pub y_range: Option<(f64, f64)>,
    /// Draw the least-squares line.
    pub fit: bool,
    pub name: String,
    pub marker_size: usize,
    pub opacity: f64,
}

impl Default for ScatterOptions {
    fn default() -> Self {
        ScatterOptions {
            title: String::new(),
            x_title: String::new(),
            y_title: String::new(),
            x_range: None,
            y_range: None,
            fit: true,
            name: "points".to_owned(),
            marker_size: 7,
            opacity: 0.6,
        }
    }
}

/// Scatter of `(x, y)` with optional hover labels per point and a least-squares line (red,
/// from min to max x) when `opts.fit` and a fit exists.
pub fn scatter_with_fit(x: &[f64], y: &[f64], labels: Option<&[String]>, opts: &ScatterOptions) -> Result<Figure> {
    if x.len() != y.len() {
        return Err(Error::invalid(format!("scatter_with_fit: {} x values and {} y values", x.len(), y.len())));
    }
    if let Some(labels) = labels {
        if labels.len() != x.len() {
            return Err(Error::invalid(format!("scatter_with_fit: {} labels for {} points", labels.len(), x.len())));
        }
    }
    let mut points = Scatter::new(x.to_vec(), y.to_vec())
        .mode(Mode::Markers)
        .marker(Marker::new().size(opts.marker_size).opacity(opts.opacity))
        .name(&opts.name);
    if let Some(labels) = labels {
        points = points.hover_text_array(labels.to_vec());
    }
    let mut plot = Plot::new();
    plot.add_trace(points);
    if opts.fit {
        if let Some(fit) = least_squares(x, y) {
            let finite = x.iter().zip(y).filter(|(a, b)| a.is_finite() && b.is_finite()).map(|(a, _)| *a);
            let (lo, hi) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
            plot.add_trace(
                Scatter::new(vec![lo, hi], vec![fit.slope * lo + fit.intercept, fit.slope * hi + fit.intercept])
                    .mode(Mode::Lines)
                    .line(Line::new().color("red").width(2.0))
                    .name("least-squares fit")
                    .hover_text(format!(
                        "y = {:.4}x {} {:.4}",
                        fit.slope,
                        if fit.intercept < 0.0 { '-' } else { '+' },
                        fit.intercept.abs()
                    )),
            );
        }
    }
    let mut x_axis = Axis::new().title(Title::with_text(&opts.x_title));
    if let Some((lo, hi)) = opts.x_range {
        x_axis = x_axis.range(AxisRange::new(lo, hi));
    }
    let mut y_axis = Axis::new().title(Title::with_text(&opts.y_title));
    if let Some((lo, hi)) = opts.y_range {
        y_axis = y_axis.range(AxisRange::new(lo, hi));
    }
    plot.set_layout(Layout::new().title(Title::with_text(&opts.title)).x_axis(x_axis).y_axis(y_axis));
    Ok(Figure::new(opts.title.clone(), plot).with_size(800, 600))
}

/// plotly.js's default colourway.
const DEFAULT_COLOURS: [&str; 10] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
];

/// Options of [`grid`].
#[derive(Debug, Clone)]
pub struct GridOptions {
    pub title: String,
    pub columns: usize,
    /// Height of one row of subplots in pixels.
    pub row_height: usize,
    pub width: usize,
    /// Gaps between cells, as fractions of the figure.
    pub horizontal_gap: f64,
    pub vertical_gap: f64,
    /// Legend entries only from the first subplot (traces grouped by name across subplots).
    pub shared_legend: bool,
}

impl Default for GridOptions {
    fn default() -> Self {
        GridOptions {
            title: String::new(),
            columns: 3,
            row_height: 320,
            width: 1100,
            horizontal_gap: 0.07,
            vertical_gap: 0.14,
            shared_legend: true,
        }
    }
}

/// Subplots in a grid, row by row: each input figure (single x/y axes, e.g. from
/// [`scatter_with_fit`]) becomes one cell with its traces, axis titles and ranges, shapes, and
/// its title above the cell. Any number of cells (axes beyond the plotly crate's eight are
/// written as layout JSON).
pub fn grid(subplots: &[Figure], opts: &GridOptions) -> Result<Figure> {
    if subplots.is_empty() {
        return Err(Error::invalid("grid: no subplots given"));
    }
    if opts.columns == 0 {
        return Err(Error::invalid("grid: columns must be at least 1"));
    }
    let columns = opts.columns.min(subplots.len());
    let rows = subplots.len().div_ceil(columns);
    let mut plot = Plot::new();
    let mut layout = Map::new();
    let mut annotations = Vec::new();
    let mut shapes = Vec::new();
    for (k, subplot) in subplots.iter().enumerate() {
        let (row, col) = (k / columns, k % columns);
        let suffix = if k == 0 { String::new() } else { (k + 1).to_string() };
        let (x_name, y_name) = (format!("x{suffix}"), format!("y{suffix}"));
        let cell_w = 1.0 / columns as f64;
        let cell_h = 1.0 / rows as f64;
        let x_domain = [col as f64 * cell_w + opts.horizontal_gap / 2.0, (col + 1) as f64 * cell_w - opts.horizontal_gap / 2.0];
        let y_top = 1.0 - row as f64 * cell_h;
        let y_domain = [y_top - cell_h + opts.vertical_gap / 2.0, y_top - opts.vertical_gap / 2.0];
        let x_domain = [x_domain[0].max(0.0), x_domain[1].min(1.0).max(x_domain[0].max(0.0))];
        let y_domain = [y_domain[0].max(0.0), y_domain[1].min(1.0).max(y_domain[0].max(0.0))];

        let figure = subplot.to_json_value();
        let rename = |reference: &str| -> Result<String> {
            match reference {
                "x" => Ok(x_name.clone()),
                "y" => Ok(y_name.clone()),
                "paper" => Ok(String::new()),
                "x domain" => Ok(format!("{x_name} domain")),
                "y domain" => Ok(format!("{y_name} domain")),
                other => Err(Error::invalid(format!(
                    "grid: subplot {k} ({:?}) refers to axis {other:?}; only single-axis figures can be gridded",
                    subplot.title
                ))),
            }
        };
        for (trace_index, trace) in figure.get("data").and_then(Value::as_array).into_iter().flatten().enumerate() {
            let mut trace = trace.clone();
            for (key, default) in [("xaxis", "x"), ("yaxis", "y")] {
                let current = trace.get(key).and_then(Value::as_str).unwrap_or(default).to_owned();
                trace[key] = Value::String(rename(&current)?);
            }
            // plotly colours traces by their index in the whole figure; keep each cell's colours
            // those of its own figure instead (trace t of every cell alike).
            let colour = DEFAULT_COLOURS[trace_index % DEFAULT_COLOURS.len()];
            for part in ["marker", "line"] {
                let has_colour = trace.get(part).and_then(|p| p.get("color")).is_some();
                if !has_colour {
                    if !trace.get(part).is_some_and(Value::is_object) {
                        trace[part] = json!({});
                    }
                    trace[part]["color"] = json!(colour);
                }
            }
            if opts.shared_legend {
                if let Some(name) = trace.get("name").cloned() {
                    trace["legendgroup"] = name;
                }
                if k > 0 {
                    trace["showlegend"] = Value::Bool(false);
                }
            }
            plot.add_trace(Box::new(RawTrace(trace)));
        }
        let sub_layout = figure.get("layout").cloned().unwrap_or(Value::Null);
        for (axis, name, domain, anchor) in [("xaxis", &x_name, x_domain, &y_name), ("yaxis", &y_name, y_domain, &x_name)] {
            let mut settings = sub_layout.get(axis).cloned().filter(Value::is_object).unwrap_or_else(|| json!({}));
            let object = settings.as_object_mut().expect("checked object");
            for drop in ["domain", "anchor", "overlaying", "position", "side"] {
                object.remove(drop);
            }
            for remap in ["scaleanchor", "matches"] {
                if let Some(target) = object.get(remap).and_then(Value::as_str).map(str::to_owned) {
                    object.insert(remap.to_owned(), Value::String(rename(&target)?));
                }
            }
            object.insert("domain".to_owned(), json!(domain));
            object.insert("anchor".to_owned(), Value::String(anchor.clone()));
            let key = if name.len() == 1 { axis.to_owned() } else { format!("{axis}{}", &name[1..]) };
            layout.insert(key, settings);
        }
        for (list, out) in [("shapes", &mut shapes), ("annotations", &mut annotations)] {
            for item in sub_layout.get(list).and_then(Value::as_array).into_iter().flatten() {
                let mut item = item.clone();
                for (key, default, paper_axis) in [("xref", "x", &x_name), ("yref", "y", &y_name)] {
                    let current = item.get(key).and_then(Value::as_str).unwrap_or(default).to_owned();
                    let renamed = rename(&current)?;
                    // Paper coordinates of a subplot mean its own cell: its axis's domain.
                    item[key] = Value::String(if renamed.is_empty() { format!("{paper_axis} domain") } else { renamed });
                }
                out.push(item);
            }
        }
        if let Some(title) = sub_layout.pointer("/title/text").and_then(Value::as_str).filter(|t| !t.is_empty()) {
            annotations.push(json!({
                "text": title, "showarrow": false, "xref": "paper", "yref": "paper",
                "x": (x_domain[0] + x_domain[1]) / 2.0, "y": y_domain[1],
                "xanchor": "center", "yanchor": "bottom", "font": {"size": 13},
            }));
        }
    }
    if !annotations.is_empty() {
        layout.insert("annotations".to_owned(), Value::Array(annotations));
    }
    if !shapes.is_empty() {
        layout.insert("shapes".to_owned(), Value::Array(shapes));
    }
    let height = rows * opts.row_height + 120;
    layout.insert("height".to_owned(), json!(height));
    let mut patch = Value::Object(Map::new());
    merge_json(&mut patch, Value::Object(layout));
    Ok(Figure::new(opts.title.clone(), plot).with_size(opts.width, height).with_layout(patch))
}
