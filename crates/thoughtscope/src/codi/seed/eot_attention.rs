//! Attention to the continuous thoughts (CoT_Exploration `2_extract_attention.py`): at the EOT input position (whose
//! output predicts the first answer token), the post-softmax attention row of chosen decoder
//! blocks (upstream 4, 8, 14), averaged over heads, with no renormalisation.
//!
//! Key sets:
//! - [`KeySelection::Faithful`]: upstream's slice `[L+1, L+7)`. In the cotx loop that is z1..z5
//!   plus EOT's attention to itself (upstream "Token 5"), and attention token k sits one position
//!   after ablation token k.
//! - [`KeySelection::Corrected`]: the loop-step positions, so attention token k is the position
//!   ablation token k intervenes on.
//!
//! The full row (BOS and question mass included) can be kept alongside.

use std::path::Path;

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use super::summary::indexed::OrderedMap;
use crate::codi::latent::codi_model::CodiModel;
use crate::codi::latent::thought_loop::{run_to_eot, Layout, LoopOptions, Phase, PhaseHooks};
use crate::codi::problems::dataset::Problem;
use crate::codi::runner::files::{read_records, JsonStyle};
use crate::codi::runner::step::{run_step, ProblemRecord, Step, StepOutcome};
use crate::model::{HookPoint, Hooks};
use crate::{Error, Result};

/// Upstream's layers (`LAYER_CONFIG` early/middle/late).
pub(crate) const UPSTREAM_LAYERS: [usize; 3] = [4, 8, 14];

/// Which keys count as "the continuous tokens".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeySelection {
    /// `[L+1, L+7)` as upstream (includes EOT itself in the cotx loop).
    Faithful,
    /// The six loop-step positions, aligned with the ablation's tokens.
    Corrected,
}
crate::model::named_values!(KeySelection, "key selection", { Faithful => "faithful", Corrected => "corrected" });

impl KeySelection {
    pub fn keys(self, layout: &Layout) -> Vec<usize> {
        match self {
            KeySelection::Faithful => layout.faithful_attention_keys(),
            KeySelection::Corrected => layout.step_positions(),
        }
    }
}

/// Settings of an attention run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttentionOptions {
    pub loop_options: LoopOptions,
    /// 0-based decoder blocks, in output order.
    pub layers: Vec<usize>,
    pub keys: KeySelection,
    /// Also store the full head-mean row over every key position.
    pub full_row: bool,
}

/// Attention of one layer, upstream schema plus the optional full row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerAttention {
    pub continuous_token_attention: Vec<f64>,
    pub total_attention_to_continuous: f64,
    pub mean_attention_to_continuous: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_row: Option<Vec<f64>>,
}

/// One problem's record (`error` instead of the attention on failure).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttentionRecord {
    pub problem_id: String,
    pub difficulty: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_answer: Option<serde_json::Number>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention_by_layer: Option<OrderedMap<LayerAttention>>,
    /// Absolute query position and key positions used (not in upstream's files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_position: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_positions: Option<Vec<usize>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl AttentionRecord {
    /// Attention to continuous token `k` at `layer`, if present.
    pub fn token_attention(&self, layer: usize, k: usize) -> Option<f64> {
        self.attention_by_layer.as_ref()?.get(&format!("layer_{layer}"))?.continuous_token_attention.get(k).copied()
    }
}

/// Captures the head-mean attention row of the EOT query at the chosen layers.
struct EotAttentionHooks {
    layers: Vec<usize>,
    at_eot: bool,
    rows: Vec<Option<Vec<f32>>>,
}

impl PhaseHooks for EotAttentionHooks {
    fn enter(&mut self, phase: Phase) {
        self.at_eot = phase == Phase::Eot;
    }
}

impl Hooks for EotAttentionHooks {
    fn wants(&self, point: &HookPoint) -> bool {
        self.at_eot && matches!(point, HookPoint::AttnPattern(l) if self.layers.contains(l))
    }
    fn on(&mut self, point: &HookPoint, value: &Tensor) -> crate::model::Result<Option<Tensor>> {
        if let HookPoint::AttnPattern(layer) = point {
            // [1, H, 1, Lk] → mean over heads → [Lk].
            let rows = value.dim(2)?;
            let row = value.narrow(2, rows - 1, 1)?.mean(1)?.flatten_all()?.to_vec1::<f32>()?;
            for (slot, &l) in self.rows.iter_mut().zip(&self.layers) {
                if l == *layer {
                    *slot = Some(row.clone());
                }
            }
        }
        Ok(None)
    }
}

/// Check `layers` against the model: an error naming the bad layers and the model's depth.
pub(crate) fn validate_layers(layers: &[usize], num_layers: usize) -> Result<()> {
    let bad: Vec<usize> = layers.iter().copied().filter(|&l| l >= num_layers).collect();
    if layers.is_empty() {
        return Err(Error::invalid("no attention layers given"));
    }
    if !bad.is_empty() {
        return Err(Error::invalid(format!(
            "attention layers {bad:?} out of range: the model has {num_layers} blocks (0..{})",
            num_layers - 1
        )));
    }
    Ok(())
}

/// Upstream's layers 4/8/14 of a 16-block model, moved to the same relative depth of a model
/// with `num_layers` blocks (round(l · n / 16)), deduplicated; unchanged for 16 blocks or more
/// when they fit.
pub fn scale_layers(layers: &[usize], num_layers: usize) -> Vec<usize> {
    if layers.iter().all(|&l| l < num_layers) {
        return layers.to_vec();
    }
    let mut out: Vec<usize> = Vec::new();
    for &l in layers {
        let scaled = ((l as f64 * num_layers as f64 / 16.0).round() as usize).min(num_layers - 1);
        if !out.contains(&scaled) {
            out.push(scaled);
        }
    }
    out
}

/// An error naming `what` when a layer of `layers` is beyond the model's `num_layers` blocks.
pub(crate) fn check_layers(what: &str, layers: &[usize], num_layers: usize) -> Result<()> {
    if let Some(bad) = layers.iter().find(|&&l| l >= num_layers) {
        return Err(Error::invalid(format!(
            "{what}: layer {bad} out of range: the model has {num_layers} blocks (0..{})",
            num_layers - 1
        )));
    }
    Ok(())
}

/// Attention of one problem.
pub fn attention_for_problem(codi: &CodiModel, problem: &Problem, options: &AttentionOptions) -> Result<AttentionRecord> {
    validate_layers(&options.layers, codi.model.num_layers())?;
    let mut hooks = EotAttentionHooks { layers: options.layers.clone(), at_eot: false, rows: vec![None; options.layers.len()] };
    let state = run_to_eot(codi, &problem.question, &options.loop_options, &mut hooks)?;
    let layout = state.layout;
    let keys = options.keys.keys(&layout);
    let mut by_layer = OrderedMap::default();
    for (layer, row) in options.layers.iter().zip(hooks.rows) {
        let row = row.ok_or_else(|| Error::Other(format!("no attention pattern captured at layer {layer}")))?;
        let continuous: Vec<f64> = keys
            .iter()
            .map(|&k| row.get(k).map(|&v| v as f64).ok_or_else(|| Error::Other(format!("key position {k} beyond row of {}", row.len()))))
            .collect::<Result<_>>()?;
        let total: f64 = continuous.iter().sum();
        by_layer.push(
            format!("layer_{layer}"),
            LayerAttention {
                total_attention_to_continuous: total,
                mean_attention_to_continuous: total / continuous.len() as f64,
                continuous_token_attention: continuous,
                full_row: options.full_row.then(|| row.iter().map(|&v| v as f64).collect()),
            },
        );
    }
    Ok(AttentionRecord {
        problem_id: problem.id.clone(),
        difficulty: problem.difficulty.clone(),
        expected_answer: Some(problem.answer.clone()),
        attention_by_layer: Some(by_layer),
        query_position: Some(layout.eot_position()),
        key_positions: Some(keys),
        error: None,
    })
}

impl ProblemRecord for AttentionRecord {
    fn problem_id(&self) -> &str {
        &self.problem_id
    }
    fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }
    fn failed(problem: &Problem, error: String) -> Self {
        AttentionRecord {
            problem_id: problem.id.clone(),
            difficulty: problem.difficulty.clone(),
            expected_answer: None,
            attention_by_layer: None,
            query_position: None,
            key_positions: None,
            error: Some(error),
        }
    }
}

/// `codi attention`: every problem not yet in `out`, `out` rewritten after each (resumable,
/// merging shard parts: [`crate::codi::runner::step`]).
pub fn run_attention(codi: &CodiModel, problems: &[Problem], options: &AttentionOptions, out: &Path) -> Result<StepOutcome<AttentionRecord>> {
    validate_layers(&options.layers, codi.model.num_layers())?;
    let step = Step { name: "attention", settings: serde_json::to_value(options)?, style: JsonStyle::Pretty };
    run_step(codi, &step, problems, out, |problem| attention_for_problem(codi, problem, options))
}

/// Read an attention results file (ours or upstream's).
pub fn read_attention(path: &Path) -> Result<Vec<AttentionRecord>> {
    read_records(path)
}
