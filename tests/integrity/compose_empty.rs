//! Compositional ablation measures every set against the empty set. Under the faithful hook
//! (upstream's off-by-one) ablating nothing already changes the run, so `I(S) − Σ I({k})`
//! carries `−(|S|−1)·I(∅)`: each problem now runs the empty set, reports `I(∅)`, and gives every
//! set's values against it; the table adds `I(∅)` and standard errors of the interactions.

use crate::codi_support;

use thoughtscope::codi::next::analyze::{analyze_compose, ComposeAnalysisOptions};
use thoughtscope::codi::next::compose::{compose_problem, token_sets};
use thoughtscope::codi::{AblationMode, AblationOptions, ImportanceKind, StepLayout};
use thoughtscope::codi::{CodiModel, LoadOptions, LoopMode, LoopOptions};
use thoughtscope::model::Settings;

fn options(mode: AblationMode) -> AblationOptions {
    let mut loop_options = LoopOptions::for_mode(LoopMode::Cotx);
    loop_options.max_new_tokens = 4;
    let mut options = AblationOptions::new(loop_options, mode);
    options.layer = 2;
    options
}

#[test]
fn every_set_is_measured_against_the_empty_set_and_the_table_has_its_uncertainty() {
    let root = tempfile::tempdir().unwrap();
    let codi = CodiModel::load(&codi_support::tiny_codi(root.path()), &LoadOptions::default(), &Settings::default()).unwrap();
    let problems = codi_support::problems();

    // Corrected hook: ablating nothing is the baseline, I(∅) = 0.
    let corrected = compose_problem(&codi, &problems[0], &options(AblationMode::Corrected)).unwrap();
    let empty = corrected.empty_ablation.as_ref().expect("the empty set is run");
    assert!(empty.tokens.is_empty());
    assert_eq!(empty.importance, 0);
    assert!(empty.logprob_importance.unwrap().abs() < 1e-4, "{:?}", empty.logprob_importance);

    // Faithful hook: every set against ∅, recomputed from the raw gold log-probs by hand:
    // effect(S) = log P(gold | ∅) − log P(gold | S), interaction = effect(S) − Σ effect({k}).
    let mut records = Vec::new();
    for problem in &problems[..2] {
        let record = compose_problem(&codi, problem, &options(AblationMode::Faithful)).unwrap();
        let empty = record.empty_ablation.clone().expect("the empty set is run");
        let g0 = empty.gold_logprob.unwrap();
        let effect = |tokens: &[usize]| g0 - record.set(tokens).unwrap().gold_logprob.unwrap();
        for tokens in (1..=3).flat_map(token_sets) {
            let set = record.set(&tokens).unwrap();
            assert!((set.logprob_importance_vs_empty.unwrap() - effect(&tokens)).abs() < 1e-9, "{tokens:?}");
            assert_eq!(set.importance_vs_empty, Some(set.importance as i32 - empty.importance as i32));
            if tokens.len() > 1 {
                let by_hand = effect(&tokens) - tokens.iter().map(|&k| effect(&[k])).sum::<f64>();
                let got = set.logprob_interaction_vs_empty.unwrap();
                assert!((got - by_hand).abs() < 1e-9, "{tokens:?}: {got} vs {by_hand}");
                let binary = set.importance as i32 - tokens.iter().map(|&k| record.set(&[k]).unwrap().importance as i32).sum::<i32>()
                    + (tokens.len() as i32 - 1) * empty.importance as i32;
                assert_eq!(set.interaction_vs_empty, Some(binary), "{tokens:?}");
            }
            if tokens.len() == 3 {
                let pairs: f64 = token_sets(2).into_iter().filter(|p| p.iter().all(|k| tokens.contains(k))).map(|p| effect(&p)).sum();
                let singles: f64 = tokens.iter().map(|&k| effect(&[k])).sum();
                let by_hand = effect(&tokens) - pairs + singles;
                assert!((set.logprob_third_order_vs_empty.unwrap() - by_hand).abs() < 1e-9, "{tokens:?}");
            }
        }
        records.push(record);
    }
    assert!(
        records.iter().any(|r| r.empty_ablation.as_ref().unwrap().logprob_importance.unwrap().abs() > 1e-6),
        "the faithful hook changes the run with nothing ablated (the case this test is for)"
    );

    let layout = StepLayout::new(root.path().join("out"), true, 2);
    let analysis_options =
        ComposeAnalysisOptions { importance: ImportanceKind::Logprob, all_baselines: true, static_images: false, title_note: String::new() };
    let analysis = analyze_compose(&records, &layout, &analysis_options).unwrap();
    let row = analysis.summary.iter().find(|s| s.tokens == [1, 3]).unwrap();
    let values: Vec<f64> = records.iter().map(|r| r.set(&[1, 3]).unwrap().logprob_interaction_vs_empty.unwrap()).collect();
    let mean = (values[0] + values[1]) / 2.0;
    assert!((row.logprob_interaction_vs_empty_mean.unwrap() - mean).abs() < 1e-12);
    // SEM of two values: |a − b| / 2.
    assert!((row.logprob_interaction_vs_empty_sem.unwrap() - (values[0] - values[1]).abs() / 2.0).abs() < 1e-12);
    let plain: Vec<f64> = records.iter().map(|r| r.set(&[1, 3]).unwrap().logprob_interaction.unwrap()).collect();
    assert!((row.logprob_interaction_sem.unwrap() - (plain[0] - plain[1]).abs() / 2.0).abs() < 1e-12);
    let empties: Vec<f64> = records.iter().map(|r| r.empty_ablation.as_ref().unwrap().logprob_importance.unwrap()).collect();
    assert!((row.empty_logprob_importance_mean.unwrap() - (empties[0] + empties[1]) / 2.0).abs() < 1e-12);
    assert!(analysis.notes.iter().any(|n| n.contains("I(∅)")), "{:?}", analysis.notes);
    let csv = std::fs::read_to_string(root.path().join("out/results/compositional_table_test.csv")).unwrap();
    let header = csv.lines().next().unwrap();
    assert!(header.starts_with("set,size,problems,importance_mean,"), "the first columns stay: {header}");
    for column in ["empty_logprob_importance_mean", "logprob_interaction_sem", "logprob_interaction_vs_empty_mean", "logprob_interaction_vs_empty_sem"] {
        assert!(header.contains(column), "{column} in {header}");
    }
}

/// `codi compose --mode corrected` without `--dir` belongs to the corrected experiment: before,
/// its results and figures went into `analysis/codi/faithful/`, beside the faithful hook's.
#[test]
fn compose_corrected_without_dir_writes_the_corrected_experiment_folder() {
    let work = tempfile::tempdir().unwrap();
    let checkpoint = codi_support::tiny_codi(work.path());
    let dataset = work.path().join("problems.json");
    thoughtscope::codi::problems::dataset::write_problems(&codi_support::problems()[..1], &dataset).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_thoughtscope"))
        .current_dir(work.path())
        .args(["codi", "compose", "--quiet", "--mode", "corrected", "--test-mode", "--max-new-tokens", "2", "--html-only", "--layer", "2"])
        .arg("--checkpoint")
        .arg(&checkpoint)
        .arg("--dataset")
        .arg(&dataset)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let experiments = work.path().join("analysis/codi");
    let results = experiments.join("corrected/results").join(format!("{}_test.json", thoughtscope::codi::next::compose::RESULTS_STEM));
    assert!(results.is_file(), "{} missing", results.display());
    assert!(!experiments.join("faithful").exists(), "corrected results went into the faithful experiment");
}
