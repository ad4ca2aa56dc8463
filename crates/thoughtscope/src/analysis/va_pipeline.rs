//! The VA pipeline, `thoughtscope va`: every step of [`super::va`] over a folder of rollouts, the
//! permutation p-values, and the outputs of [`super::va_report`] written as one folder. Above
//! both, so the steps and the report know nothing of the run that composes them.

use std::path::Path;

use super::va::{
    best_per_layer, checked_indices, distinctiveness, head_rows, load_chunks_and_tag_mask, most_distinctive, permutation_test,
    representative_layers, summary_rows, PermutationTest, RolloutRun, SummaryRow, TaggedRollout, VaConfig, VaResult,
};
use super::va_report;
use crate::attention::{AttentionSource, CacheOutcome};
use crate::rollout::discover_rollouts;
use crate::{Error, Result};

/// Run the whole pipeline and write its outputs (see the module doc); the model is loaded only
/// on a cache miss.
pub fn run_va(config: &VaConfig) -> Result<VaResult> {
    run_va_with_source(config, config.attention_source())
}

/// The most permutations a run takes: p-values resolve 1e-7, and a bigger number (say
/// `u64::MAX`) would only run for ever.
pub const MAX_PERMUTATIONS: usize = 10_000_000;

/// [`run_va`] over a given attention source.
pub fn run_va_with_source(config: &VaConfig, mut source: AttentionSource) -> Result<VaResult> {
    if config.run_attention {
        crate::io::check_folder_or_absent(&config.cache_dir)?;
    }
    crate::io::check_output_folder(&config.out_dir(), &[&config.cache_dir])?;
    if config.permutations > MAX_PERMUTATIONS {
        return Err(Error::invalid(format!(
            "--permutations {} is more than {MAX_PERMUTATIONS} (the p-value's resolution is 1/(permutations + 1) already at 1e-7)",
            config.permutations
        )));
    }
    let dirs = discover_rollouts(&config.root, &config.prefix)?;
    if dirs.is_empty() {
        return Err(Error::invalid(format!(
            "no rollout directories starting with `{}` under {}",
            config.prefix,
            config.root.display()
        )));
    }
    let options = config.options();
    let mut runs: Vec<RolloutRun> = dirs
        .iter()
        .map(|dir| {
            let rollout_id = dir.file_name().map_or_else(|| dir.display().to_string(), |s| s.to_string_lossy().into_owned());
            let (rollout, error) = match load_chunks_and_tag_mask(dir, &config.tag, config.sentence_mode) {
                Ok(r) if r.n_sentences() == 0 => (None, Some("no sentences".to_string())),
                Ok(r) => (Some(r), None),
                Err(e) => (None, Some(e.to_string())),
            };
            RolloutRun { rollout_id, dir: dir.clone(), rollout, error, cache: None, permutation: None }
        })
        .collect();
    let mut result = VaResult {
        config: config.clone(),
        model: source.model_name().to_string(),
        layers: vec![],
        heads: vec![],
        rollouts: vec![],
        rows: vec![],
        best: vec![],
        scores: vec![],
        summary: vec![],
        chosen: None,
        forward_passes: 0,
        model_loaded: false,
        out_dir: config.out_dir(),
        notes: vec![],
    };
    if !config.run_attention {
        result.rollouts = runs;
        let out = result.out_dir.clone();
        write_out_dir(config, &out, |staging| va_report::write_dry_run(&mut result, staging))?;
        return Ok(result);
    }

    let (num_layers, num_heads) = source.shape()?;
    let layers = match &config.layers {
        Some(given) => checked_indices(given, num_layers, "layer", source.model_name())?,
        None => representative_layers(num_layers),
    };
    let heads = match &config.heads {
        Some(given) => checked_indices(given, num_heads, "head", source.model_name())?,
        None => (0..num_heads).collect(),
    };
    let mut rows = Vec::new();
    let bar = crate::progress::progress(runs.iter().filter(|r| r.rollout.is_some()).count() as u64, "rollouts");
    for run in &mut runs {
        let Some(rollout) = &run.rollout else { continue };
        bar.set_message(run.rollout_id.clone());
        let outcome = source.prepare(&rollout.sentences).and_then(|outcome| {
            head_rows(&mut source, rollout, &layers, &heads, &options).map(|rows| (outcome, rows))
        });
        bar.inc(1);
        match outcome {
            Ok((outcome, rollout_rows)) => {
                run.cache = Some(outcome);
                run.permutation = Some(permutation_test(
                    &rollout_rows,
                    &rollout.analysed_mask(options.trim),
                    &options,
                    config.permutations,
                    config.seed,
                ));
                rows.extend(rollout_rows);
            }
            Err(e) if e.is_environmental() => return Err(e.context(format!("rollout {}", run.rollout_id))),
            Err(e) => run.error = Some(e.to_string()),
        }
    }
    bar.finish();
    let best = best_per_layer(&rows, options.head_rule);
    let scores = distinctiveness(&best, &options);
    let chosen = most_distinctive(&scores);
    let analysed: Vec<&TaggedRollout> = runs.iter().filter(|r| r.error.is_none()).filter_map(|r| r.rollout.as_ref()).collect();
    let tests: Vec<(String, PermutationTest)> =
        runs.iter().filter_map(|r| r.permutation.clone().map(|t| (r.rollout_id.clone(), t))).collect();
    let mut summary = summary_rows(&analysed, &best, &options, &tests);
    for row in &mut summary {
        row.cache = runs.iter().find(|r| r.rollout_id == row.rollout_id).and_then(|r| r.cache).map(|c| c.as_str().to_string()).unwrap_or_default();
    }
    for run in runs.iter().filter(|r| r.error.is_some() || r.rollout.is_none()) {
        summary.push(SummaryRow {
            rollout_id: run.rollout_id.clone(),
            n_sentences: run.rollout.as_ref().map_or(0, |r| r.n_sentences()),
            n_va: run.rollout.as_ref().map_or(0, |r| r.n_tagged()),
            va_rate: f64::NAN,
            distinctiveness_score: f64::NAN,
            layers: String::new(),
            heads: String::new(),
            delta_va_vert_by_layer: String::new(),
            lift_in_va_by_layer: String::new(),
            status: format!("not analysed: {}", run.error.as_deref().unwrap_or("unknown error")),
            p_value: f64::NAN,
            p_value_by_layer: String::new(),
            most_distinctive: false,
            label_mismatches: run.rollout.as_ref().map_or(0, |r| r.label_mismatches.len()),
            cache: String::new(),
            text_id: run.rollout.as_ref().map(|r| r.sentences.text_id()).unwrap_or_default(),
        });
    }

    let upstream = runs.iter().filter(|r| r.cache == Some(CacheOutcome::Upstream)).count();
    if upstream > 0 {
        result.notes.push(format!(
            "{upstream} rollout(s) read from a thought-anchors cache under {} (no manifest.json): the model revision, dtype, \
             tokenizer and sentence boundaries that made those matrices are unverified (column `cache`)",
            source.cache_root().join(source.model_name()).display()
        ));
    }
    result.layers = layers;
    result.heads = heads;
    result.rollouts = runs;
    result.rows = rows;
    result.best = best;
    result.scores = scores;
    result.summary = summary;
    result.chosen = chosen;
    result.forward_passes = source.forward_passes();
    result.model_loaded = source.model_loaded();
    // The whole folder at once: a killed or concurrent run never leaves a mix of two runs.
    let out = result.out_dir.clone();
    write_out_dir(config, &out, |staging| va_report::write_outputs(&mut result, &mut source, staging))?;
    Ok(result)
}

/// The output folder written as a whole, unless the attention cache lies inside it
/// ([`crate::io::write_output_folder`]).
fn write_out_dir(config: &VaConfig, out: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    crate::io::write_output_folder(out, &[&config.cache_dir], write)
}
