//! Bit-level parity with numpy/scipy on seeded random inputs: vertical scores (float32 results
//! must be identical, float64 within 1e-12), scipy kurtosis (float32 computed in float32), and
//! upstream block averaging (atol 1e-7). The reference values come from
//! `scripts/make_analysis_fixture.py` (numpy 2.4.6, scipy 1.17.1), committed in
//! `tests/fixtures/analysis/numpy_reference.json`.

use serde_json::Value;
use thoughtscope::attention::average_matrix;
use thoughtscope::scores::{kurtosis, vertical_scores, vertical_scores_f64, Dtype, ScoreType, VerticalOptions};

fn fixture() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/analysis/numpy_reference.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture present")).expect("fixture is JSON")
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap_or(f64::NAN)).collect()
}

fn dtype(name: &str) -> Dtype {
    match name {
        "float32" => Dtype::Float32,
        "float64" => Dtype::Float64,
        other => panic!("dtype {other}"),
    }
}

/// Equal as numpy values: identical float32 bits, float64 within `tol`, NaN where NaN.
fn same(got: f64, expected: f64, dtype: Dtype, tol: f64) -> bool {
    if expected.is_nan() || got.is_nan() {
        return expected.is_nan() && got.is_nan();
    }
    match dtype {
        Dtype::Float32 => (got as f32).to_bits() == (expected as f32).to_bits(),
        Dtype::Float64 => (got - expected).abs() <= tol,
    }
}

#[test]
fn vertical_scores_match_numpy() {
    let fixture = fixture();
    let mut checked = 0;
    for case in fixture["vertical"].as_array().unwrap() {
        let n = case["n"].as_u64().unwrap() as usize;
        let matrix = floats(&case["matrix"]);
        let input_dtype = dtype(case["dtype"].as_str().unwrap());
        for result in case["results"].as_array().unwrap() {
            let options = VerticalOptions {
                proximity_ignore: result["p"].as_u64().unwrap() as usize,
                control_depth: result["control_depth"].as_bool().unwrap(),
                score_type: if result["score_type"] == "median" { ScoreType::Median } else { ScoreType::Mean },
            };
            let scores = match input_dtype {
                Dtype::Float32 => {
                    vertical_scores(&matrix.iter().map(|&v| v as f32).collect::<Vec<_>>(), n, &options).unwrap()
                }
                Dtype::Float64 => vertical_scores_f64(&matrix, n, &options).unwrap(),
            };
            let out_dtype = dtype(result["out_dtype"].as_str().unwrap());
            assert_eq!(scores.dtype, out_dtype, "n={n} {options:?}");
            for (j, (&g, &e)) in scores.values.iter().zip(&floats(&result["expected"])).enumerate() {
                assert!(same(g, e, out_dtype, 1e-12), "n={n} {input_dtype:?} {options:?} v[{j}]: {g} vs numpy {e}");
            }
            checked += 1;
        }
    }
    assert!(checked >= 500, "only {checked} cases");
}

#[test]
fn kurtosis_matches_scipy() {
    let fixture = fixture();
    for (k, case) in fixture["kurtosis"].as_array().unwrap().iter().enumerate() {
        let values = floats(&case["values"]);
        let input_dtype = dtype(case["dtype"].as_str().unwrap());
        let expected = case["expected"].as_f64().unwrap_or(f64::NAN);
        let got = kurtosis(&values, input_dtype);
        // float32: same bits as scipy; float64: within 1e-12 relative.
        let ok = match input_dtype {
            Dtype::Float32 => same(got, expected, Dtype::Float32, 0.0),
            Dtype::Float64 => same(got, expected, Dtype::Float64, 1e-12 * expected.abs().max(1.0)),
        };
        assert!(ok, "case {k} ({input_dtype:?}, {} values): {got} vs scipy {expected}", values.len());
    }
}

#[test]
fn averaging_matches_numpy() {
    let fixture = fixture();
    for case in fixture["averaging"].as_array().unwrap() {
        let t = case["t"].as_u64().unwrap() as usize;
        let bounds: Vec<(usize, usize)> = serde_json::from_value(case["bounds"].clone()).unwrap();
        let matrix: Vec<f32> = floats(&case["matrix"]).iter().map(|&v| v as f32).collect();
        let got = average_matrix(&matrix, t, &bounds).unwrap();
        for (k, (&g, e)) in got.iter().zip(floats(&case["expected"])).enumerate() {
            assert!((f64::from(g) - e).abs() <= 1e-7, "t={t} M[{k}]: {g} vs numpy {e}");
        }
    }
}
