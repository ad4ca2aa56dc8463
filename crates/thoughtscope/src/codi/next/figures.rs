//! Figures of the experiment's three next steps: compositional ablation (pair heatmap,
//! triplet bars), question → thought attention (per-problem heatmaps, by token class, per layer,
//! per head) and the residual decomposition (mean direct logit attribution, per-layer bars at
//! EOT, the logit lens of a problem). Plain `plotly` figures wrapped in [`Figure`]; heatmaps
//! draw row 0 at the top, and panels side by side each get their own colour bar.

use plotly::common::{ColorBar, ColorScale, ColorScalePalette, ErrorData, ErrorType, Marker, Mode, ThicknessMode, Title};
use plotly::layout::{Axis, BarMode, Layout};
use plotly::{Bar, HeatMap, Plot, Scatter};
use serde_json::{json, Map, Value};

use super::compose::SetSummary;
use super::decompose::{DecomposeRecord, DecomposeSummary};
use super::routing::{RoutingRecord, RoutingSummary};
use crate::codi::latent::thought_loop::LATENT_STEPS;
use crate::codi::runner::output::finite_mean;
use crate::codi::seed::analyze::ImportanceKind;
use crate::plot::Figure;
use crate::{Error, Result};

/// One heatmap panel: `z[row][col]`, `None` drawn blank.
#[derive(Debug, Clone)]
pub struct Panel {
    pub title: String,
    pub x: Vec<String>,
    pub y: Vec<String>,
    pub z: Vec<Vec<Option<f64>>>,
    /// Colour range; `None`: plotly's (min to max).
    pub range: Option<(f64, f64)>,
    /// Red–white–blue around 0 (else viridis).
    pub diverging: bool,
    pub colorbar_title: String,
    /// Text written in each cell (e.g. the logit lens's top token).
    pub cell_text: Option<Vec<Vec<String>>>,
}

impl Panel {
    fn check(&self) -> Result<()> {
        if self.z.len() != self.y.len() || self.z.iter().any(|row| row.len() != self.x.len()) {
            return Err(Error::invalid(format!(
                "heatmap panel {:?}: z must be {} rows × {} columns",
                self.title,
                self.y.len(),
                self.x.len()
            )));
        }
        Ok(())
    }
}

/// Symmetric range `±max|v|` over the finite values (for diverging colours), `None` if all 0.
pub(crate) fn symmetric_range<'a>(values: impl IntoIterator<Item = &'a Option<f64>>) -> Option<(f64, f64)> {
    let m = values.into_iter().flatten().filter(|v| v.is_finite()).fold(0.0f64, |m, v| m.max(v.abs()));
    (m > 0.0).then_some((-m, m))
}

/// Panels side by side (one row), each with its own colour bar right of it.
pub(crate) fn heatmap_panels(title: &str, panels: &[Panel], x_title: &str, y_title: &str, height: usize) -> Result<Figure> {
    if panels.is_empty() {
        return Err(Error::invalid("heatmap_panels: no panels"));
    }
    let n = panels.len();
    let cell = 1.0 / n as f64;
    let mut plot = Plot::new();
    let mut layout = Map::new();
    let mut annotations = Vec::new();
    for (i, panel) in panels.iter().enumerate() {
        panel.check()?;
        let suffix = if i == 0 { String::new() } else { (i + 1).to_string() };
        let domain = [i as f64 * cell + 0.02, (i + 1) as f64 * cell - 0.09];
        let mut trace = HeatMap::new(panel.x.clone(), panel.y.clone(), panel.z.clone())
            .x_axis(format!("x{suffix}"))
            .y_axis(format!("y{suffix}"))
            .color_bar(
                ColorBar::new()
                    .x(domain[1] + 0.01)
                    .len_mode(ThicknessMode::Pixels)
                    .len(height.saturating_sub(200).max(100))
                    .thickness(12)
                    .title(Title::with_text(&panel.colorbar_title)),
            )
            .color_scale(if panel.diverging {
                ColorScale::Palette(ColorScalePalette::RdBu)
            } else {
                ColorScale::Palette(ColorScalePalette::Viridis)
            }); // plotly.js's RdBu: blue for low, red for high
        if let Some((lo, hi)) = panel.range {
            trace = trace.zmin(lo).zmax(hi);
        }
        plot.add_trace(trace);
        let x_key = if i == 0 { "xaxis".to_owned() } else { format!("xaxis{}", i + 1) };
        let y_key = if i == 0 { "yaxis".to_owned() } else { format!("yaxis{}", i + 1) };
        layout.insert(
            x_key,
            json!({"domain": domain, "anchor": format!("y{suffix}"), "title": {"text": x_title}, "type": "category"}),
        );
        // Rows shared with the first panel are labelled once, at the left.
        let shared_rows = i > 0 && panel.y == panels[0].y;
        layout.insert(
            y_key,
            json!({"anchor": format!("x{suffix}"), "autorange": "reversed", "type": "category", "automargin": true,
                   "showticklabels": !shared_rows, "title": {"text": if i == 0 { y_title } else { "" }}}),
        );
        annotations.push(json!({
            "text": panel.title, "showarrow": false, "xref": "paper", "yref": "paper",
            "x": (domain[0] + domain[1]) / 2.0, "y": 1.0, "xanchor": "center", "yanchor": "bottom",
        }));
        if let Some(text) = &panel.cell_text {
            for (r, row) in text.iter().enumerate() {
                for (c, t) in row.iter().enumerate() {
                    annotations.push(json!({
                        "text": t, "showarrow": false, "xref": format!("x{suffix}"), "yref": format!("y{suffix}"),
                        "x": panel.x.get(c), "y": panel.y.get(r), "font": {"size": 9, "color": "black"},
                        "bgcolor": "rgba(255,255,255,0.65)", "borderpad": 1,
                    }));
                }
            }
        }
    }
    layout.insert("annotations".into(), Value::Array(annotations));
    plot.set_layout(Layout::new().title(Title::with_text(title)));
    let width = (520 * n).clamp(700, 1600);
    Ok(Figure::new(title, plot).with_size(width, height).with_layout(Value::Object(layout)))
}

fn token_labels() -> Vec<String> {
    (0..LATENT_STEPS).map(|k| format!("T{k}")).collect()
}

fn importance_word(kind: ImportanceKind) -> &'static str {
    match kind {
        ImportanceKind::Binary => "importance (fraction of answers broken)",
        ImportanceKind::Logprob => "importance (drop in gold log-prob)",
    }
}

/// Pair figure: 6 × 6 matrices of the pairs' mean importance and mean interaction
/// (importance − sum of the singles); the diagonal shows the single's importance on the left,
/// blank on the right.
pub fn pair_interaction_heatmap(summary: &[SetSummary], kind: ImportanceKind, title_note: &str) -> Result<Figure> {
    let find = |tokens: &[usize]| summary.iter().find(|s| s.tokens == tokens);
    let mut importance = vec![vec![None; LATENT_STEPS]; LATENT_STEPS];
    let mut interaction = vec![vec![None; LATENT_STEPS]; LATENT_STEPS];
    for i in 0..LATENT_STEPS {
        importance[i][i] = find(&[i]).and_then(|s| s.stats(kind).0);
        for j in i + 1..LATENT_STEPS {
            let (mean, _, _, inter) = find(&[i, j]).map(|s| s.stats(kind)).unwrap_or((None, None, None, None));
            importance[i][j] = mean;
            importance[j][i] = mean;
            interaction[i][j] = inter;
            interaction[j][i] = inter;
        }
    }
    let labels = token_labels();
    let importance_range = match kind {
        ImportanceKind::Binary => Some((0.0, 1.0)),
        ImportanceKind::Logprob => None,
    };
    let panels = [
        Panel {
            title: "pair importance (diagonal: single token)".into(),
            x: labels.clone(),
            y: labels.clone(),
            z: importance,
            range: importance_range,
            diverging: false,
            colorbar_title: "importance".into(),
            cell_text: None,
        },
        Panel {
            title: "interaction = I(pair) − I(i) − I(j)".into(),
            x: labels.clone(),
            y: labels,
            range: symmetric_range(interaction.iter().flatten()),
            z: interaction,
            diverging: true,
            colorbar_title: "interaction".into(),
            cell_text: None,
        },
    ];
    let problems = summary.iter().map(|s| s.problems).max().unwrap_or(0);
    let title = format!("Token pairs: {} over {problems} problems{title_note}", importance_word(kind));
    heatmap_panels(&title, &panels, "token", "token", 560)
}

/// Triplet figure: the 20 triplets' mean importance (SEM error bars) beside the mean sum of their
/// singles, and the mean interaction as markers.
pub fn triplet_importance_bars(summary: &[SetSummary], kind: ImportanceKind, title_note: &str) -> Result<Figure> {
    let triplets: Vec<&SetSummary> = summary.iter().filter(|s| s.tokens.len() == 3).collect();
    if triplets.is_empty() {
        return Err(Error::invalid("triplet figure: the summary has no triplet"));
    }
    let labels: Vec<String> = triplets.iter().map(|s| s.label.clone()).collect();
    let value = |v: Option<f64>| v.unwrap_or(f64::NAN);
    let stats: Vec<_> = triplets.iter().map(|s| s.stats(kind)).collect();
    let mut plot = Plot::new();
    plot.add_trace(
        Bar::new(labels.clone(), stats.iter().map(|s| value(s.0)).collect())
            .error_y(ErrorData::new(ErrorType::Data).array(stats.iter().map(|s| s.1.unwrap_or(0.0)).collect()))
            .marker(Marker::new().color("#4682b4"))
            .name("triplet importance"),
    );
    plot.add_trace(
        Bar::new(labels.clone(), stats.iter().map(|s| value(s.2)).collect())
            .marker(Marker::new().color("#c0c0c0"))
            .name("sum of the three singles"),
    );
    plot.add_trace(
        Scatter::new(labels, stats.iter().map(|s| value(s.3)).collect())
            .mode(Mode::Markers)
            .marker(Marker::new().color("#d62728").size(9))
            .name("interaction"),
    );
    let problems = triplets.iter().map(|s| s.problems).max().unwrap_or(0);
    plot.set_layout(
        Layout::new()
            .title(Title::with_text(format!(
                "Token triplets: {} over {problems} problems{title_note}",
                importance_word(kind)
            )))
            .bar_mode(BarMode::Group)
            .x_axis(Axis::new().title(Title::with_text("ablated tokens")))
            .y_axis(Axis::new().title(Title::with_text(importance_word(kind)))),
    );
    Ok(Figure::from(plot).with_size(1200, 550))
}

/// Question-token × thought heatmap of one problem, one panel per head-layer (head mean), rows
/// labelled `position: text [class]`.
pub fn question_thought_heatmap(record: &RoutingRecord, title_note: &str) -> Result<Figure> {
    let layers = if record.head_layers.iter().all(|l| record.layers.contains(l)) && !record.head_layers.is_empty() {
        record.head_layers.clone()
    } else {
        record.layers.iter().rev().take(1).copied().collect()
    };
    let y: Vec<String> = record
        .question_tokens
        .iter()
        .map(|t| format!("{}: {} [{}]", t.position, t.text.trim(), t.class.name()))
        .collect();
    let mut panels = Vec::new();
    for layer in layers {
        let li = record.layer_index(layer).ok_or_else(|| Error::invalid(format!("routing record has no layer {layer}")))?;
        let rows = &record.head_mean[li];
        let z: Vec<Vec<Option<f64>>> =
            (0..y.len()).map(|q| rows.iter().map(|row| row.get(q).map(|&v| v as f64)).collect()).collect();
        // Attention sinks (the first token, some punctuation) take most of the mass; clip the
        // colours at the 98th percentile so the other tokens stay visible.
        let values: Vec<f64> = z.iter().flatten().flatten().copied().collect();
        let top = crate::plot::quantile(&values, 0.98)?;
        panels.push(Panel {
            title: format!("block {layer}"),
            x: token_labels(),
            y: y.clone(),
            z,
            range: (top > 0.0).then_some((0.0, top)),
            diverging: false,
            colorbar_title: "attention ≤ p98".into(),
            cell_text: None,
        });
    }
    let height = (220 + 16 * y.len()).min(1800);
    heatmap_panels(
        &format!("Question tokens attended by each continuous thought — {} (head mean){title_note}", record.problem_id),
        &panels,
        "thought (query)",
        "question token (key)",
        height,
    )
}

fn class_labels(summary: &RoutingSummary) -> Vec<String> {
    summary.classes.iter().map(|c| c.name().to_owned()).collect()
}

/// Class × thought heatmaps of the mean attention per token, one panel per head-layer.
pub fn class_thought_heatmap(summary: &RoutingSummary, title_note: &str) -> Result<Figure> {
    let layers: Vec<usize> = if summary.head_layers.is_empty() { summary.layers.clone() } else { summary.head_layers.clone() };
    let mut panels = Vec::new();
    for layer in layers {
        let Some(li) = summary.layers.iter().position(|&l| l == layer) else { continue };
        let z: Vec<Vec<Option<f64>>> = (0..summary.classes.len())
            .map(|c| (0..LATENT_STEPS).map(|k| summary.per_token[li][k][c]).collect())
            .collect();
        panels.push(Panel {
            title: format!("block {layer}"),
            x: token_labels(),
            y: class_labels(summary),
            z,
            range: None,
            diverging: false,
            colorbar_title: "per token".into(),
            cell_text: None,
        });
    }
    heatmap_panels(
        &format!("Attention per question token, by token type ({} problems){title_note}", summary.problems),
        &panels,
        "thought (query)",
        "token type",
        420,
    )
}

/// Lines over blocks: mean attention per token of each class, averaged over the six thoughts.
pub fn class_by_layer(summary: &RoutingSummary, title_note: &str) -> Result<Figure> {
    let mut plot = Plot::new();
    for (c, class) in summary.classes.iter().enumerate() {
        let y: Vec<f64> = (0..summary.layers.len())
            .map(|li| finite_mean((0..LATENT_STEPS).filter_map(|k| summary.per_token[li][k][c])).unwrap_or(f64::NAN))
            .collect();
        plot.add_trace(Scatter::new(summary.layers.clone(), y).mode(Mode::LinesMarkers).name(class.name()));
    }
    plot.set_layout(
        Layout::new()
            .title(Title::with_text(format!(
                "Attention per question token by type, across blocks (mean over thoughts, {} problems){title_note}",
                summary.problems
            )))
            .x_axis(Axis::new().title(Title::with_text("block")))
            .y_axis(Axis::new().title(Title::with_text("mean attention per token"))),
    );
    Ok(Figure::from(plot).with_size(1000, 500))
}

/// Head × class heatmaps (mean per-token attention over thoughts and problems) at the per-head
/// layers.
pub fn class_by_head(summary: &RoutingSummary, title_note: &str) -> Result<Figure> {
    let panels: Vec<Panel> = summary
        .head_layers
        .iter()
        .zip(&summary.head_per_token)
        .map(|(layer, heads)| Panel {
            title: format!("block {layer}"),
            x: class_labels(summary),
            y: (0..heads.len()).map(|h| format!("head {h}")).collect(),
            z: heads.clone(),
            range: None,
            diverging: false,
            colorbar_title: "per token".into(),
            cell_text: None,
        })
        .collect();
    let heads = summary.head_per_token.first().map_or(0, Vec::len);
    heatmap_panels(
        &format!("Attention per question token by type, per head (mean over thoughts){title_note}"),
        &panels,
        "token type",
        "head",
        (220 + 24 * heads).min(1400),
    )
}

/// Mean direct logit attribution: components × positions (diverging around 0).
pub fn dla_heatmap(summary: &DecomposeSummary, target: usize, title_note: &str) -> Result<Figure> {
    let z: Vec<Vec<Option<f64>>> = (0..summary.components.len())
        .map(|c| (0..summary.position_labels.len()).map(|p| summary.dla_mean[target][p][c]).collect())
        .collect();
    let panel = Panel {
        title: format!("target: {}", summary.targets[target]),
        x: summary.position_labels.clone(),
        y: summary.components.clone(),
        range: symmetric_range(z.iter().flatten()),
        z,
        diverging: true,
        colorbar_title: "logit".into(),
        cell_text: None,
    };
    heatmap_panels(
        &format!("Direct logit attribution per component and position ({} problems){title_note}", summary.problems),
        &[panel],
        "position",
        "component",
        (200 + 14 * summary.components.len()).min(1800),
    )
}

/// Bars per block of the attention and MLP attribution at one position (e.g. EOT).
pub fn dla_layer_bars(summary: &DecomposeSummary, target: usize, position: usize, title_note: &str) -> Result<Figure> {
    let row = summary
        .dla_mean
        .get(target)
        .and_then(|t| t.get(position))
        .ok_or_else(|| Error::invalid(format!("no DLA for target {target} position {position}")))?;
    let layers = (summary.components.len() - 1) / 2;
    let blocks: Vec<usize> = (0..layers).collect();
    let value = |v: Option<f64>| v.unwrap_or(f64::NAN);
    let mut plot = Plot::new();
    plot.add_trace(Bar::new(blocks.clone(), (0..layers).map(|l| value(row[1 + 2 * l])).collect()).name("attention"));
    plot.add_trace(Bar::new(blocks, (0..layers).map(|l| value(row[2 + 2 * l])).collect()).name("MLP"));
    plot.set_layout(
        Layout::new()
            .title(Title::with_text(format!(
                "Direct logit attribution to {} at {}, per block (embed: {:.3}; {} problems){title_note}",
                summary.targets[target],
                summary.position_labels[position],
                value(row[0]),
                summary.problems
            )))
            .bar_mode(BarMode::Group)
            .x_axis(Axis::new().title(Title::with_text("block")))
            .y_axis(Axis::new().title(Title::with_text("mean logit contribution"))),
    );
    Ok(Figure::from(plot).with_size(1100, 500))
}

/// The logit lens of one problem: rows (input, after each block) × positions, coloured by the top
/// token's probability, with its text in the cell.
pub fn logit_lens_heatmap(record: &DecomposeRecord, title_note: &str) -> Result<Figure> {
    let rows = record.logit_lens.first().map_or(0, Vec::len);
    let y: Vec<String> = (0..rows).map(|r| record.logit_lens[0][r].label.clone()).collect();
    let top = |p: usize, r: usize| record.logit_lens[p][r].top.first();
    let z = (0..rows).map(|r| (0..record.logit_lens.len()).map(|p| top(p, r).map(|t| t.logprob.exp())).collect()).collect();
    let text = (0..rows)
        .map(|r| (0..record.logit_lens.len()).map(|p| top(p, r).map_or(String::new(), |t| lens_text(&t.text))).collect())
        .collect();
    let panel = Panel {
        title: String::new(),
        x: record.position_labels.clone(),
        y,
        z,
        range: Some((0.0, 1.0)),
        diverging: false,
        colorbar_title: "top-1 prob".into(),
        cell_text: Some(text),
    };
    heatmap_panels(
        &format!("Logit lens — {} (top token per residual){title_note}", record.problem_id),
        &[panel],
        "position",
        "residual",
        (200 + 18 * rows).min(1400),
    )
}

/// A token's text for a cell: whitespace made visible, at most 10 characters.
fn lens_text(text: &str) -> String {
    let visible: String = text.replace(' ', "·").replace('\n', "↵");
    visible.chars().take(10).collect()
}
