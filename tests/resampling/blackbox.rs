//! White-box against black-box statistics (`thoughtscope::analysis::blackbox`) on hand-made
//! inputs. Expected numbers come from scipy / numpy (`.venv`), computed once and written here:
//! `scipy.stats.spearmanr`, `np.percentile` (linear), and exact permutation counts by hand.

use crate::support;

use std::path::PathBuf;

use thoughtscope::analysis::blackbox::{
    bootstrap_spearman, bootstrap_spearman_with, by_sentence, importance_by_tag, incoming_importance, matched_control, percentile,
    read_importance, sentences_csv, tagged_difference, BlackboxSentence, COUNTERFACTUAL,
};
use thoughtscope::attention::{SuppressionMatrix, TokenBounds};
use thoughtscope::model::Settings;

const X: [f64; 6] = [0.1, 0.4, -0.2, 0.3, 0.0, 0.25];
const Y: [f64; 6] = [1.0, 3.0, 0.5, 2.0, 2.0, 4.0];

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol
}

#[test]
fn percentile_is_numpys_linear_interpolation() {
    // np.percentile([3, 1, 2, 10], q) for q = 2.5, 97.5, 50.
    assert!(close(percentile(&[3.0, 1.0, 2.0, 10.0], 2.5), 1.075, 1e-12));
    assert!(close(percentile(&[3.0, 1.0, 2.0, 10.0], 97.5), 9.474999999999998, 1e-12));
    assert_eq!(percentile(&[3.0, 1.0, 2.0, 10.0], 50.0), 2.5);
    assert!(percentile(&[], 50.0).is_nan());
}

#[test]
fn bootstrap_over_given_resamples_matches_scipy() {
    // scipy: spearmanr(X, Y) = 0.6957252427829382, p 0.12478933744028692; the draws' rho
    // (the constant draw [1]*6 left out): [0.69573, 1.0, 0.69573, 0.69573];
    // np.percentile at 2.5 / 97.5: 0.6957252427829382, 0.9771793932087202.
    let resamples = vec![vec![0, 1, 2, 3, 4, 5], vec![0, 0, 1, 2, 3, 3], vec![5, 4, 3, 2, 1, 0], vec![1; 6], vec![0, 2, 4, 1, 3, 5]];
    let b = bootstrap_spearman_with(&X, &Y, &resamples, 0.95, 7).unwrap();
    assert!(close(b.rho, 0.6957252427829382, 1e-12), "{}", b.rho);
    assert!(close(b.p_asymptotic, 0.12478933744028692, 1e-9), "{}", b.p_asymptotic);
    assert_eq!((b.n, b.left_out, b.draws, b.valid_draws), (6, 0, 5, 4));
    assert!(close(b.ci_low, 0.6957252427829382, 1e-12), "{}", b.ci_low);
    assert!(close(b.ci_high, 0.9771793932087202, 1e-12), "{}", b.ci_high);
    assert!(b.note.is_empty());
}

#[test]
fn bootstrap_is_seeded_and_brackets_rho() {
    let nan = f64::NAN;
    // A NaN on either side leaves the pair out and is counted.
    let x = [0.1, 0.4, -0.2, 0.3, 0.0, 0.25, nan, 0.7];
    let y = [1.0, 3.0, 0.5, 2.0, 2.0, 4.0, 1.0, nan];
    let a = bootstrap_spearman(&x, &y, 1000, 0.95, 3).unwrap();
    let b = bootstrap_spearman(&x, &y, 1000, 0.95, 3).unwrap();
    assert_eq!(a.ci_low.to_bits(), b.ci_low.to_bits());
    assert_eq!(a.ci_high.to_bits(), b.ci_high.to_bits());
    assert_eq!((a.n, a.left_out, a.draws), (6, 2, 1000));
    assert!(close(a.rho, 0.6957252427829382, 1e-12));
    assert!(a.ci_low <= a.rho && a.rho <= a.ci_high, "{a:?}");
    assert!(a.valid_draws > 900 && a.valid_draws <= 1000, "{}", a.valid_draws);
    let other = bootstrap_spearman(&x, &y, 1000, 0.95, 4).unwrap();
    assert_ne!(other.ci_low.to_bits(), a.ci_low.to_bits(), "another seed, other draws");
}

#[test]
fn constant_side_gives_nan_with_a_note_not_a_panic() {
    let b = bootstrap_spearman(&X, &[2.0; 6], 200, 0.95, 0).unwrap();
    assert!(b.rho.is_nan() && b.ci_low.is_nan() && b.ci_high.is_nan());
    assert!(b.note.contains("constant"), "{}", b.note);
    let few = bootstrap_spearman(&[1.0, 2.0], &[2.0, 1.0], 200, 0.95, 0).unwrap();
    assert!(few.rho.is_nan() && few.note.contains("3 needed"), "{}", few.note);
    let none = bootstrap_spearman(&[f64::NAN; 4], &[1.0; 4], 200, 0.95, 0).unwrap();
    assert!(none.rho.is_nan() && none.n == 0);
}

#[test]
fn tagged_difference_matches_the_exact_permutation_p() {
    // Tagged {5, 4} vs rest {3, 2, 1, 0}: difference 4.5 − 1.5 = 3. Of the 15 ways to tag two of
    // six sentences, only {5, 4} reaches a difference ≥ 3: one-sided p = 1/15; two-sided: {5,4}
    // and {1,0} (−3): 2/15.
    let values = [5.0, 4.0, 3.0, 2.0, 1.0, 0.0, f64::NAN];
    let mask = [true, true, false, false, false, false, true];
    let t = tagged_difference("va", &values, &mask, 20000, 11).unwrap();
    assert_eq!((t.tagged, t.rest), (2, 4), "the NaN sentence is left out");
    assert_eq!((t.tagged_mean, t.rest_mean, t.difference), (4.5, 1.5, 3.0));
    assert!(close(t.p_greater, 1.0 / 15.0, 0.01), "{}", t.p_greater);
    assert!(close(t.p_two_sided, 2.0 / 15.0, 0.012), "{}", t.p_two_sided);
    let again = tagged_difference("va", &values, &mask, 20000, 11).unwrap();
    assert_eq!(again.p_greater.to_bits(), t.p_greater.to_bits(), "seeded");

    let untagged = tagged_difference("va", &values, &[false; 7], 100, 0).unwrap();
    assert!(untagged.difference.is_nan() && untagged.p_greater.is_nan() && untagged.note.contains("0 tagged"));
    assert!(tagged_difference("va", &values, &[true], 10, 0).is_err(), "length mismatch is an error");
}

#[test]
fn matched_control_draws_sentences_of_the_same_length() {
    // Twenty sentences alternating 10 and 50 characters; the importance is length / 10, so a
    // control matched on length has exactly the chosen set's mean. Chosen: sentences 1 and 3
    // (50 chars); in (length / 50, position / 20) every 10-character sentence is at least 0.8
    // away, and at least three unused 50-character ones are within 0.5.
    let lengths: Vec<usize> = (0..20).map(|i| if i % 2 == 0 { 10 } else { 50 }).collect();
    let values: Vec<f64> = lengths.iter().map(|&l| l as f64 / 10.0).collect();
    let c = matched_control(&values, &lengths, &[1, 3], 500, 3, 5).unwrap();
    assert_eq!(c.chosen_mean, 5.0);
    assert_eq!(c.control_mean, 5.0, "every control sentence is a 50-character one");
    assert_eq!(c.mean_length_gap, 0.0);
    assert!(c.mean_position_gap > 0.0);
    assert_eq!(c.p_greater, 1.0, "controls reach the chosen mean every time");
    assert_eq!(c.draws, 500);

    // The same sentences with importance on sentence 1 only: the control never reaches it.
    let mut spike = vec![0.0; 20];
    spike[1] = 1.0;
    let s = matched_control(&spike, &lengths, &[1], 200, 3, 5).unwrap();
    assert_eq!((s.chosen_mean, s.control_mean), (1.0, 0.0));
    assert!(close(s.p_greater, 1.0 / 201.0, 1e-15));

    let none = matched_control(&values, &lengths, &(0..20).collect::<Vec<_>>(), 10, 3, 5).unwrap();
    assert!(none.control_mean.is_nan() && none.note.contains("candidate"), "{}", none.note);
    assert!(matched_control(&values, &lengths, &[22], 10, 3, 5).is_err());
}

#[test]
fn incoming_importance_is_the_row_mean_over_earlier_sources() {
    let nan = f64::NAN;
    #[rustfmt::skip]
    let values = vec![
        -20.0, -20.0, -20.0,
        -2.0,  -20.0, -20.0,
        nan,   -4.0,  -20.0,
    ];
    let bounds = TokenBounds { ranges: vec![(0, 2), (2, 4), (4, 4)], n_tokens: 4, mode: Default::default() };
    let m = SuppressionMatrix { n: 3, values, kl: vec![], bounds, layers: vec![0], positions_run: 0 };
    let incoming = incoming_importance(&m);
    assert!(incoming[0].is_nan(), "no earlier source");
    assert_eq!(incoming[1], -2.0);
    assert_eq!(incoming[2], -4.0, "the NaN entry is left out");
}

fn write_temp(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("thoughtscope-blackbox-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("chunks_labeled.json");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn importance_file_is_read_by_chunk_idx_with_tags() {
    let path = write_temp(
        "good",
        r#"[{"chunk": "b", "chunk_idx": 1, "function_tags": ["x", "y"], "accuracy": 0.5, "counterfactual_importance_accuracy": -0.25},
            {"chunk": "a", "chunk_idx": 0, "function_tags": ["x"], "accuracy": 1.0, "counterfactual_importance_accuracy": 0.75},
            {"chunk": "d", "chunk_idx": 3, "function_tags": ["y"]}]"#,
    );
    let rows = read_importance(&path, COUNTERFACTUAL).unwrap();
    assert_eq!(rows.iter().map(|r| r.chunk_idx).collect::<Vec<_>>(), vec![0, 1, 3]);
    let v = by_sentence(&rows, 4);
    assert_eq!((v[0], v[1]), (0.75, -0.25));
    assert!(v[2].is_nan() && v[3].is_nan(), "no entry / no metric: NaN");
    // Upstream's 0.0 for the last chunk (no next one) is a filler: an importance leaves it out,
    // other fields keep it.
    let with_last = write_temp(
        "last",
        r#"[{"chunk": "a", "chunk_idx": 0, "accuracy": 0.5, "forced_importance_kl": 2.5},
            {"chunk": "b", "chunk_idx": 1, "accuracy": 0.25, "forced_importance_kl": 0.0}]"#,
    );
    let last = read_importance(&with_last, "forced_importance_kl").unwrap();
    let measured = thoughtscope::analysis::blackbox::measured_importance(&last, 3, "forced_importance_kl");
    assert!(measured[0] == 2.5 && measured[1].is_nan() && measured[2].is_nan(), "{measured:?}");
    let accuracy = read_importance(&with_last, "accuracy").unwrap();
    assert_eq!(thoughtscope::analysis::blackbox::measured_importance(&accuracy, 2, "accuracy"), vec![0.5, 0.25]);
    let tags = importance_by_tag(&rows);
    assert_eq!(tags.len(), 2);
    assert_eq!((tags[0].tag.as_str(), tags[0].sentences, tags[0].mean), ("x", 2, 0.25));
    assert_eq!((tags[1].tag.as_str(), tags[1].sentences, tags[1].mean), ("y", 1, -0.25));
}

#[test]
fn bad_importance_files_name_the_file_and_field() {
    let path = write_temp("bad-field", r#"[{"chunk": "a", "chunk_idx": 0, "counterfactual_importance_accuracy": "high"}]"#);
    let e = read_importance(&path, COUNTERFACTUAL).unwrap_err().to_string();
    assert!(e.contains("chunks_labeled.json") && e.contains("counterfactual_importance_accuracy") && e.contains("entry 0"), "{e}");
    let path = write_temp("no-idx", r#"[{"chunk": "a"}]"#);
    let e = read_importance(&path, COUNTERFACTUAL).unwrap_err().to_string();
    assert!(e.contains("chunk_idx"), "{e}");
    let path = write_temp("dup", r#"[{"chunk_idx": 2}, {"chunk_idx": 2}]"#);
    let e = read_importance(&path, COUNTERFACTUAL).unwrap_err().to_string();
    assert!(e.contains("twice"), "{e}");
    let path = write_temp("not-json", "{");
    let e = read_importance(&path, COUNTERFACTUAL).unwrap_err().to_string();
    assert!(e.contains("not JSON"), "{e}");
}

#[test]
fn csv_leaves_undefined_cells_empty() {
    let s = BlackboxSentence {
        sentence: 0,
        importance: 0.5,
        accuracy: f64::NAN,
        receiver_score: 0.1,
        suppression_outgoing: f64::NAN,
        suppression_incoming: f64::NAN,
        length_chars: 12,
        tags: "a;b".into(),
    };
    let csv = sentences_csv(&[s]);
    assert_eq!(csv.lines().nth(1).unwrap(), "0,0.5,,0.1,,,12,\"a;b\"");
}

/// The calls of notebooks/resampling.ipynb, cell for cell, at test size: the small resampling
/// job (2 chunks, K = 2, 24 tokens; forced answers 4 tokens), `importance`, the figures, and white-box against black-box
/// with suppression on the same 6-sentence trace.
#[test]
fn notebook_pipeline_on_the_small_problem() {
    use thoughtscope::analysis::blackbox::{self, BlackboxConfig};
    use thoughtscope::analysis::importance::{run_importance, ImportanceConfig};
    use thoughtscope::rollout::resample::{resample_problem, DecodeSettings, LocalProvider, ResampleConfig, RolloutType};

    let Some(loaded) = support::smollm2() else { return };
    if !thoughtscope::analysis::importance::default_embedder_dir(&Settings::default()).join("model.safetensors").is_file()
        && !support::repo().join("models/all-minilm-l6-v2").is_dir()
    {
        support::skip("all-MiniLM-L6-v2 absent; run scripts/fetch-embedder.sh");
        return;
    }
    let work = std::env::temp_dir().join(format!("thoughtscope-blackbox-pipeline-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    // notebook: configuration
    let problem_dir = support::repo().join("rollouts/small_arithmetic/apples_sum");
    let out_root = work.join("rollouts");
    let importance_file = work.join("apples_sum_importance.json");
    // notebook: the small job through the library when the CLI's output is absent
    let config = ResampleConfig {
        rollouts: 2,
        chunks: Some(vec![3, 4]),
        decode: DecodeSettings { temperature: 0.6, top_p: 0.95, max_tokens: 24 },
        ..ResampleConfig::default()
    };
    let provider = LocalProvider::new(&loaded, 15).expect("local provider");
    let report = resample_problem(&provider, &problem_dir, &out_root, &config).expect("resampling");
    println!("{} chunks, {:.1} new tokens/s", report.chunks.len(), report.tokens_per_second());
    let forced = ResampleConfig { rollout_type: RolloutType::ForcedAnswer, decode: DecodeSettings { max_tokens: 4, ..config.decode.clone() }, ..config.clone() };
    let forced_report = resample_problem(&provider, &problem_dir, &work.join("rollouts_forced"), &forced).expect("forced-answer resampling");
    let mut importance = ImportanceConfig::new(&report.out_dir, &importance_file);
    importance.forced_dir = Some(forced_report.out_dir.clone());
    importance.embedder_dir = Some(support::repo().join("models/all-minilm-l6-v2"));
    let imp = run_importance(&importance).expect("importance");
    println!("{}", imp.headline());
    // notebook: accuracy and importances by chunk, importance by tag
    let _accuracy = blackbox::accuracy_figure(&importance_file, "active_computation", "accuracy by chunk").expect("accuracy figure");
    let rows = blackbox::read_importance(&importance_file, blackbox::COUNTERFACTUAL).expect("importance rows");
    let _tags = blackbox::tag_figure(&rows, "importance by tag").expect("tag figure");
    assert_eq!(rows.len(), 6, "every chunk of the trace has an entry");
    assert!(rows.iter().filter(|r| r.accuracy.is_finite()).count() == 2, "accuracy only where resampled");
    // notebook: white-box against black-box
    let mut bb = BlackboxConfig::new(&problem_dir, &importance_file, work.join("blackbox"));
    bb.cache_dir = work.join("attn_cache");
    bb.suppression_dir = Some(work.join("suppression"));
    bb.field = "forced_importance_accuracy".into();
    bb.tag = "active_computation".into();
    bb.bootstrap_draws = 200;
    bb.permutations = 200;
    bb.control_draws = 200;
    let result = blackbox::run_blackbox_with(&bb, &loaded).expect("blackbox");
    println!("{}", result.headline());
    let _table = blackbox::comparison_table(&result.comparisons).expect("table");
    assert_eq!(result.sentences.len(), 6);
    assert_eq!(result.comparisons.len(), 3);
    assert!(result.split_half.is_none(), "one trace: no split-half");
    assert!(result.json.is_file() && result.csv.is_file());
    let written: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&result.json).unwrap()).unwrap();
    assert_eq!(written["sentences"].as_array().unwrap().len(), 6);
    // Six sentences, the last four without a vertical score: two pairs, rho undefined, with a note.
    assert!(result.comparisons[0].correlation.n <= 2 && result.comparisons[0].correlation.rho.is_nan());
    assert!(!result.comparisons[0].correlation.note.is_empty());
    assert!(result.sentences.iter().skip(1).all(|s| s.suppression_incoming.is_finite()));
    let _ = std::fs::remove_dir_all(&work);
}

/// The code cells of notebooks/resampling.ipynb, verbatim (a display expression at the end of a
/// cell becomes `let _ = …;`), so the notebook's code is compiled with the tests. Ignored: it runs
/// the setup-sized job; `notebook_pipeline_on_the_small_problem` runs the same calls at test size.
#[test]
#[allow(unused_imports)]
#[ignore = "compile check of the notebook's cells; runs the full small job"]
fn notebook_cells_compile() {
    std::env::set_current_dir(support::repo().join("notebooks")).unwrap();
    {
        use std::path::PathBuf;
        use thoughtscope::analysis::blackbox::{self, BlackboxConfig};
        use thoughtscope::analysis::importance::{run_importance, ImportanceConfig};
        use thoughtscope::model::{Model, Settings};
        use thoughtscope::notebook::prelude::*;
        use thoughtscope::rollout::resample::{resample_problem, DecodeSettings, LocalProvider, PrefixMode, ResampleConfig, RolloutType};

        println!("working directory {}", std::env::current_dir().expect("working directory").display());
        let problem_dir = PathBuf::from("../rollouts/small_arithmetic/apples_sum");
        let out_root = PathBuf::from("../analysis/resampling/rollouts");
        let forced_root = PathBuf::from("../analysis/resampling/rollouts_forced");
        let importance_file = PathBuf::from("../analysis/resampling/apples_sum_importance.json");
        let mut config = BlackboxConfig::new(&problem_dir, &importance_file, "../analysis/resampling/blackbox");
        // The run's settings (device, weights, kernels, where models live): THOUGHTSCOPE_* variables.
        config.settings = Settings::from_env().expect("settings from the environment");
        let loaded = Model::load(&config.model, &config.settings).expect("loading the model");
        if !importance_file.is_file() {
            // README command 1's job, through the library (same settings as scripts/setup.sh).
            let config = ResampleConfig {
                rollouts: 8,
                chunks: Some((0..6).collect()),
                decode: DecodeSettings { temperature: 0.6, top_p: 0.95, max_tokens: 32 },
                ..ResampleConfig::default()
            };
            let forced = ResampleConfig { rollout_type: RolloutType::ForcedAnswer, decode: DecodeSettings { max_tokens: 8, ..config.decode.clone() }, ..config.clone() };
            let provider = LocalProvider::new(&loaded, 15).expect("local provider");
            let report = resample_problem(&provider, &problem_dir, &out_root, &config).expect("resampling");
            println!("{} chunks, {:.1} new tokens/s", report.chunks.len(), report.tokens_per_second());
            let forced_report = resample_problem(&provider, &problem_dir, &forced_root, &forced).expect("forced-answer resampling");
            let mut importance = ImportanceConfig::new(&report.out_dir, &importance_file);
            importance.settings = loaded.settings.clone();
            importance.forced_dir = Some(forced_report.out_dir.clone());
            println!("{}", run_importance(&importance).expect("importance").headline());
        } else {
            println!("reading {} (written by scripts/setup.sh)", importance_file.display());
        }
        let _ = blackbox::accuracy_figure(&importance_file, "active_computation", "Accuracy and importance by chunk | apples_sum | SmolLM2-135M").expect("accuracy figure");
        let rows = blackbox::read_importance(&importance_file, "forced_importance_accuracy").expect("importance rows");
        let _ = blackbox::tag_figure(&rows, "Forced-answer importance by function tag | apples_sum").expect("tag figure");
        let values = blackbox::measured_importance(&rows, rows.len(), "forced_importance_accuracy");
        let mask: Vec<bool> = rows.iter().map(|r| r.function_tags.iter().any(|t| t == "active_computation")).collect();
        let tagged = blackbox::tagged_difference("active_computation", &values, &mask, 1000, 0).expect("tagged vs rest");
        println!(
            "{}: {} tagged (mean {:.3}) vs {} others (mean {:.3}): difference {:+.3}, one-sided permutation p = {:.3}, two-sided {:.3} {}",
            tagged.tag, tagged.tagged, tagged.tagged_mean, tagged.rest, tagged.rest_mean, tagged.difference, tagged.p_greater, tagged.p_two_sided, tagged.note
        );
        let va_problem = PathBuf::from("../rollouts/apple_boxes/rollout_00");
        let va_importance_file = PathBuf::from("../analysis/resampling/va_rollout_00_importance.json");
        if !va_importance_file.is_file() {
            let ordinary = ResampleConfig {
                mode: PrefixMode::OwnRollout,
                rollouts: 8,
                decode: DecodeSettings { temperature: 0.6, top_p: 0.95, max_tokens: 16 },
                ..ResampleConfig::default()
            };
            let forced = ResampleConfig { rollout_type: RolloutType::ForcedAnswer, decode: DecodeSettings { max_tokens: 8, ..ordinary.decode.clone() }, ..ordinary.clone() };
            let provider = LocalProvider::new(&loaded, 15).expect("local provider");
            let report = resample_problem(&provider, &va_problem, &PathBuf::from("../analysis/resampling/va_rollouts"), &ordinary).expect("resampling");
            let forced_report = resample_problem(&provider, &va_problem, &PathBuf::from("../analysis/resampling/va_rollouts_forced"), &forced).expect("forced-answer resampling");
            println!("{} chunks, {:.1} + {:.1} new tokens/s (ordinary + forced)", report.chunks.len(), report.tokens_per_second(), forced_report.tokens_per_second());
            let mut importance = ImportanceConfig::new(&va_problem, &va_importance_file);
            importance.rollouts_dir = Some(report.out_dir.clone());
            importance.forced_dir = Some(forced_report.out_dir.clone());
            importance.settings = loaded.settings.clone();
            println!("{}", run_importance(&importance).expect("importance").headline());
        }
        let mut va = BlackboxConfig::new(&va_problem, &va_importance_file, "../analysis/resampling/va_blackbox");
        va.settings = config.settings.clone();
        va.cache_dir = PathBuf::from("../attn_cache");
        va.heads_from = Some(PathBuf::from("../rollouts/apple_boxes"));
        va.field = "forced_importance_kl".into();
        va.tag = "verbalized_evaluation_awareness".into();
        let va_result = blackbox::run_blackbox_with(&va, &loaded).expect("white-box against black-box on the VA rollout");
        {
            // A block: evcxr keeps a cell's top-level variables, and a reference cannot be kept.
            let t = &va_result.tagged;
            println!(
                "{}: {} tagged (mean {:.2}) vs {} others (mean {:.2}): difference {:+.2}, one-sided permutation p = {:.3}, two-sided {:.3} {}",
                t.tag, t.tagged, t.tagged_mean, t.rest, t.rest_mean, t.difference, t.p_greater, t.p_two_sided, t.note
            );
        }
        println!(
            "matched control: chosen mean {:.2} vs controls {:.2} [{:.2}, {:.2}], p = {:.3} {}",
            va_result.tag_control.chosen_mean, va_result.tag_control.control_mean,
            va_result.tag_control.control_low, va_result.tag_control.control_high, va_result.tag_control.p_greater, va_result.tag_control.note
        );
        let _ = blackbox::comparison_table(&va_result.comparisons).expect("comparison table");
        config.cache_dir = PathBuf::from("../attn_cache");
        config.heads_from = Some(PathBuf::from("../rollouts/apple_boxes"));
        config.suppression_dir = Some(PathBuf::from("../analysis/resampling/suppression/apples_sum"));
        config.field = "forced_importance_accuracy".into();
        config.tag = "active_computation".into();
        let result = blackbox::run_blackbox_with(&config, &loaded).expect("white-box against black-box");
        println!("{}", result.headline());
        match &result.split_half {
            Some(r) => println!("split-half reliability of the head kurtoses over {} traces: r = {:.3}", result.heads_from.len(), r.r),
            None => println!("split-half reliability: needs at least 2 traces"),
        }
        println!(
            "matched control ({}): chosen mean {:.3} vs controls {:.3} [{:.3}, {:.3}], p = {:.3} {}",
            result.tagged.tag, result.tag_control.chosen_mean, result.tag_control.control_mean,
            result.tag_control.control_low, result.tag_control.control_high, result.tag_control.p_greater, result.tag_control.note
        );
        let _ = blackbox::comparison_table(&result.comparisons).expect("comparison table");
    }
}
