//! `codi analyze` against upstream's analysis logic: `tests/fixtures/codi-analysis/` holds random
//! results in CoT_Exploration's schema and the `summary_statistics.json` that pandas + scipy
//! compute from them (`make_fixture.py`); ours must have the same keys in the same order and the
//! same numbers. Also Pearson r/p against scipy (`tests/fixtures/pearson_scipy.json`) to 1e-9.

use std::path::{Path, PathBuf};

use serde_json::Value;
use thoughtscope::codi::runner::files::relaxed_json;
use thoughtscope::codi::{analyze, AnalyzeOptions};
use thoughtscope::scores::stats::pearson;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn read(path: &Path) -> Value {
    serde_json::from_str(&relaxed_json(&std::fs::read_to_string(path).unwrap())).unwrap()
}

/// Same keys in the same order, numbers equal to `tol` (relative or absolute).
fn assert_same(expected: &Value, got: &Value, path: &str, tol: f64) {
    match (expected, got) {
        (Value::Object(e), Value::Object(g)) => {
            let ek: Vec<&String> = e.keys().collect();
            let gk: Vec<&String> = g.keys().collect();
            assert_eq!(ek, gk, "keys of {path}");
            for k in ek {
                assert_same(&e[k], &g[k], &format!("{path}.{k}"), tol);
            }
        }
        (Value::Number(e), Value::Number(g)) => {
            let (e, g) = (e.as_f64().unwrap(), g.as_f64().unwrap());
            let diff = (e - g).abs();
            assert!(diff <= tol || diff <= tol * e.abs(), "{path}: expected {e}, got {g}");
        }
        _ => assert_eq!(expected, got, "{path}"),
    }
}

#[test]
fn summary_statistics_match_upstream_pandas_scipy() {
    let dir = fixtures().join("codi-analysis");
    let out = tempfile::tempdir().unwrap();
    let layout = thoughtscope::codi::ExperimentLayout::seed(out.path(), false);
    std::fs::create_dir_all(layout.results_dir()).unwrap();
    std::fs::copy(dir.join("ablation.json"), layout.ablation()).unwrap();
    std::fs::copy(dir.join("attention.json"), layout.attention()).unwrap();
    let analysis = analyze(&layout, &AnalyzeOptions { static_images: false, ..AnalyzeOptions::default() }).unwrap();
    // 100 problems − 1 failed ablation − wrong baselines − 1 failed attention, × 6 tokens.
    assert_eq!(analysis.joined.rows.len(), 546);
    assert_eq!(analysis.joined.skipped_errors, 1);
    assert_eq!(analysis.joined.skipped_no_attention, 1);
    let expected = read(&dir.join("summary_statistics_expected.json"));
    // The file is written with serde_json's own key order preserved by our ordered maps.
    let written: Value = read(&layout.summary());
    assert_same(&expected, &written, "summary", 1e-12);
    let text = std::fs::read_to_string(layout.summary()).unwrap();
    let order: Vec<usize> = ["\"layer_14\"", "\"layer_8\"", "\"layer_4\""].iter().map(|k| text.find(k).unwrap()).collect();
    assert!(order[0] < order[1] && order[1] < order[2], "upstream's layer order 14, 8, 4");
}

#[test]
fn pearson_matches_scipy_fixture() {
    let path = fixtures().join("pearson_scipy.json");
    assert!(path.is_file(), "committed fixture {} is missing", path.display());
    let value = read(&path);
    let cases = match &value {
        Value::Array(a) => a.clone(),
        Value::Object(o) => o.get("cases").and_then(|c| c.as_array()).cloned().expect("`cases` list"),
        _ => panic!("unexpected fixture layout"),
    };
    assert!(!cases.is_empty());
    let floats = |v: &Value| -> Vec<f64> { v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap_or(f64::NAN)).collect() };
    let num = |v: Option<&Value>| v.and_then(|x| x.as_f64()).unwrap_or(f64::NAN);
    for (i, case) in cases.iter().enumerate() {
        let got = pearson(&floats(&case["x"]), &floats(&case["y"])).unwrap();
        let (r, p) = (num(case.get("r")), num(case.get("p")));
        for (name, e, g) in [("r", r, got.r), ("p", p, got.p)] {
            if e.is_nan() {
                assert!(g.is_nan(), "case {i} {name}: expected NaN, got {g}");
            } else {
                assert!((e - g).abs() <= 1e-9, "case {i} {name}: expected {e}, got {g}");
            }
        }
    }
}

/// The fixture's results in a fresh experiment folder, each list passed through `edit` first.
fn layout_with(out: &Path, edit: impl Fn(&mut Vec<Value>, &mut Vec<Value>)) -> thoughtscope::codi::ExperimentLayout {
    let dir = fixtures().join("codi-analysis");
    let layout = thoughtscope::codi::ExperimentLayout::seed(out, false);
    std::fs::create_dir_all(layout.results_dir()).unwrap();
    let (Value::Array(mut ablation), Value::Array(mut attention)) =
        (read(&dir.join("ablation.json")), read(&dir.join("attention.json")))
    else {
        panic!("fixture results are lists");
    };
    edit(&mut ablation, &mut attention);
    std::fs::write(layout.ablation(), serde_json::to_string(&ablation).unwrap()).unwrap();
    std::fs::write(layout.attention(), serde_json::to_string(&attention).unwrap()).unwrap();
    layout
}

#[test]
fn a_repeated_problem_id_is_an_error_naming_the_file() {
    let options = AnalyzeOptions { static_images: false, ..AnalyzeOptions::default() };
    let out = tempfile::tempdir().unwrap();
    let layout = layout_with(out.path(), |ablation, _| {
        let first = ablation[0].clone();
        ablation.push(first);
    });
    let err = analyze(&layout, &options).unwrap_err().to_string();
    assert!(err.contains("token_ablation_results") && err.contains("problem_id"), "{err}");
    let out = tempfile::tempdir().unwrap();
    let layout = layout_with(out.path(), |_, attention| {
        let first = attention[0].clone();
        attention.push(first);
    });
    let err = analyze(&layout, &options).unwrap_err().to_string();
    assert!(err.contains("attention_weights") && err.contains("problem_id"), "{err}");
}

#[test]
fn partly_matching_ids_are_counted_in_a_note() {
    let out = tempfile::tempdir().unwrap();
    let layout = layout_with(out.path(), |_, attention| attention.truncate(attention.len() - 10));
    let analysis = analyze(&layout, &AnalyzeOptions { static_images: false, ..AnalyzeOptions::default() }).unwrap();
    let note = analysis.notes.iter().find(|n| n.contains("match partly")).expect("a note on the ids");
    assert!(note.contains("90 in both files") && note.contains("10 only in"), "{note}");
}

#[test]
fn an_input_a_run_is_still_writing_is_warned_about_and_recorded() {
    let options = AnalyzeOptions { static_images: false, ..AnalyzeOptions::default() };
    let out = tempfile::tempdir().unwrap();
    let layout = layout_with(out.path(), |_, _| {});
    let analysis = analyze(&layout, &options).unwrap();
    assert!(analysis.joined.incomplete_inputs.is_empty());
    assert!(read(&layout.summary()).get("incomplete_inputs").is_none(), "complete inputs: upstream's keys only");

    // The attention step was killed: its lock is gone, its `INCOMPLETE.<file>` marker stays.
    let lock = thoughtscope::codi::runner::meta::lock_results(&layout.attention(), "attention").unwrap();
    drop(lock);
    let analysis = analyze(&layout, &options).unwrap();
    assert_eq!(analysis.joined.incomplete_inputs, [layout.attention()]);
    assert_eq!(read(&layout.summary())["incomplete_inputs"], serde_json::json!(["attention_weights_100.json"]));

    // The command says so on one line naming the file.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_thoughtscope"))
        .args(["codi", "analyze", "--dir", out.path().to_str().unwrap(), "--html-only"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.starts_with("warning:")).collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(warnings[0].contains(&layout.attention().display().to_string()) && warnings[0].contains("incomplete"), "{stderr}");
    assert!(!warnings[0].contains("token_ablation_results"), "{stderr}");
}
