//! `codi analyze` joins ablation and attention results only when they come from one run's
//! checkpoint and settings, and never joins a problem whose token ablations are incomplete
//! without saying so. Before, a mismatched pair gave one table with exit 0 and a problem with 3
//! of its 6 token ablations moved a layer's p-value.

use serde_json::{json, Value};
use thoughtscope::codi::{analyze, AnalyzeOptions, ExperimentLayout, RunMeta};

fn fixture(name: &str) -> Value {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/codi-analysis").join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn meta(step: &str, weights_hash: &str, settings: Value) -> RunMeta {
    RunMeta {
        step: step.to_owned(),
        model: "tiny-codi".to_owned(),
        weights_hash: weights_hash.to_owned(),
        real_codi: false,
        format_version: thoughtscope::codi::runner::meta::FORMAT_VERSION,
        settings,
        note: None,
    }
}

fn loop_options(max_new_tokens: usize) -> Value {
    json!({"mode": "upstream", "max_new_tokens": max_new_tokens, "parser": "seed", "logit_slice": "upstream"})
}

/// An experiment folder with the fixture's results (`ablation` edited by the caller) and, when
/// given, the two settings sidecars.
fn experiment(ablation: &Value, metas: Option<(RunMeta, RunMeta)>) -> (tempfile::TempDir, ExperimentLayout) {
    let dir = tempfile::tempdir().unwrap();
    let layout = ExperimentLayout::seed(dir.path(), false);
    std::fs::create_dir_all(layout.results_dir()).unwrap();
    std::fs::write(layout.ablation(), serde_json::to_vec(ablation).unwrap()).unwrap();
    let fixtures = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/codi-analysis");
    std::fs::copy(fixtures.join("attention.json"), layout.attention()).unwrap();
    if let Some((ab, at)) = metas {
        let sidecar = |p: &std::path::Path| thoughtscope::codi::runner::files::meta_path(p);
        std::fs::write(sidecar(&layout.ablation()), serde_json::to_vec(&ab).unwrap()).unwrap();
        std::fs::write(sidecar(&layout.attention()), serde_json::to_vec(&at).unwrap()).unwrap();
    }
    (dir, layout)
}

fn options() -> AnalyzeOptions {
    AnalyzeOptions { static_images: false, ..AnalyzeOptions::default() }
}

fn ablation_settings(layer: usize, max_new_tokens: usize) -> Value {
    json!({"loop_options": loop_options(max_new_tokens), "mode": "faithful", "layer": layer, "layer_off_by_one": true, "patch_prompt": true, "continuous": true})
}

fn attention_settings(layers: Value, max_new_tokens: usize) -> Value {
    json!({"loop_options": loop_options(max_new_tokens), "layers": layers, "keys": "continuous", "full_row": false})
}

#[test]
fn matching_sidecars_join_as_before() {
    let metas = (meta("ablate", "aaaa", ablation_settings(8, 128)), meta("attention", "aaaa", attention_settings(json!([14, 8, 4]), 128)));
    let (_dir, layout) = experiment(&fixture("ablation.json"), Some(metas));
    let analysis = analyze(&layout, &options()).unwrap();
    assert_eq!(analysis.joined.rows.len(), 546);
    assert!(analysis.notes.iter().all(|n| !n.contains("not checked")), "{:?}", analysis.notes);
}

#[test]
fn results_of_two_checkpoints_are_refused_naming_both_hashes() {
    let metas = (meta("ablate", "aaaa1111", ablation_settings(8, 128)), meta("attention", "bbbb2222", attention_settings(json!([14, 8, 4]), 128)));
    let (_dir, layout) = experiment(&fixture("ablation.json"), Some(metas));
    let err = analyze(&layout, &options()).unwrap_err().to_string();
    assert!(err.contains("weights_hash") && err.contains("aaaa1111") && err.contains("bbbb2222"), "{err}");
    assert!(!layout.summary().exists(), "nothing may be written");
}

#[test]
fn results_of_other_loop_settings_are_refused_naming_the_setting() {
    let metas = (meta("ablate", "aaaa", ablation_settings(8, 128)), meta("attention", "aaaa", attention_settings(json!([14, 8, 4]), 64)));
    let (_dir, layout) = experiment(&fixture("ablation.json"), Some(metas));
    let err = analyze(&layout, &options()).unwrap_err().to_string();
    assert!(err.contains("settings.loop_options") && err.contains("128") && err.contains("64"), "{err}");
}

#[test]
fn an_attention_file_whose_sidecar_names_other_layers_is_refused() {
    let metas = (meta("ablate", "aaaa", ablation_settings(8, 128)), meta("attention", "aaaa", attention_settings(json!([14, 9, 4]), 128)));
    let (_dir, layout) = experiment(&fixture("ablation.json"), Some(metas));
    let err = analyze(&layout, &options()).unwrap_err().to_string();
    assert!(err.contains("[4,8,14]") && err.contains("[14,9,4]") && err.contains("attention"), "{err}");
}

#[test]
fn upstream_results_without_sidecars_join_and_a_lone_sidecar_gives_a_note() {
    let (_dir, layout) = experiment(&fixture("ablation.json"), None);
    let analysis = analyze(&layout, &options()).unwrap();
    assert!(analysis.notes.is_empty(), "Python-made results: {:?}", analysis.notes);
    // Ablation from this project, attention from elsewhere: the join is unchecked, and says so.
    let sidecar = thoughtscope::codi::runner::files::meta_path(&layout.ablation());
    std::fs::write(&sidecar, serde_json::to_vec(&meta("ablate", "aaaa", ablation_settings(8, 128))).unwrap()).unwrap();
    let analysis = analyze(&layout, &options()).unwrap();
    assert!(analysis.notes.iter().any(|n| n.contains("not checked") && n.contains("attention_weights")), "{:?}", analysis.notes);
}

#[test]
fn a_problem_with_missing_token_ablations_is_left_out_with_a_note_and_a_count() {
    let mut ablation = fixture("ablation.json");
    // The first problem that joins (no error, baseline correct): keep 3 of its 6 tokens.
    let record = ablation
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|r| r["error"].is_null() && r["baseline"]["correct"] == json!(true))
        .unwrap();
    let id = record["problem_id"].as_str().unwrap().to_owned();
    record["token_ablations"].as_array_mut().unwrap().truncate(3);
    let (_dir, layout) = experiment(&ablation, None);
    let analysis = analyze(&layout, &options()).unwrap();
    assert_eq!(analysis.joined.skipped_incomplete_tokens, 1);
    assert_eq!(analysis.joined.rows.len(), 546 - 6);
    assert!(analysis.joined.rows.iter().all(|r| r.problem_id != id));
    let note = analysis.notes.iter().find(|n| n.contains("incomplete")).unwrap_or_else(|| panic!("no note: {:?}", analysis.notes));
    assert!(note.contains(&id) && note.contains("3 of 6") && note.starts_with("1 problem"), "{note}");
}

#[test]
fn a_problem_id_with_another_expected_answer_is_refused() {
    let mut ablation = fixture("ablation.json");
    let record = &mut ablation.as_array_mut().unwrap()[0];
    let id = record["problem_id"].as_str().unwrap().to_owned();
    record["expected_answer"] = json!(987654);
    let (_dir, layout) = experiment(&ablation, None);
    let err = analyze(&layout, &options()).unwrap_err().to_string();
    assert!(err.contains(&id) && err.contains("987654") && err.contains("expected_answer"), "{err}");
}
