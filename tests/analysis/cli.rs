//! The stable CLI of the analysis core: `segment`, `vertical-scores`, `receiver-heads` (JSON
//! shapes, `null` for NaN) and their errors (non-zero exit, one line naming file and problem).

use std::process::{Command, Output};

use thoughtscope::io::npy;

use crate::support;

/// The binary with progress (and the model-load status line) off: stderr then holds only what
/// the command has to say, such as its one-line error.
fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_thoughtscope")).args(args).env("THOUGHTSCOPE_PROGRESS", "off").output().expect("binary runs")
}

fn stdout_json(output: &Output) -> serde_json::Value {
    assert!(output.status.success(), "failed: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("stdout is JSON")
}

/// Non-zero exit and exactly one stderr line containing every `needle`.
fn assert_fails(output: &Output, needles: &[&str]) {
    assert!(!output.status.success(), "expected failure, stdout: {}", String::from_utf8_lossy(&output.stdout));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    for needle in needles {
        assert!(stderr.contains(needle), "stderr {stderr:?} lacks {needle:?}");
    }
}

fn g1_matrix() -> Vec<f32> {
    let mut m = vec![0f32; 64];
    for i in 0..8 {
        for j in 0..=i {
            m[i * 8 + j] = ((((7 * i + 3 * j) % 11) + 1) as f64 / 100.0) as f32;
        }
    }
    m
}

#[test]
fn segment_json_on_a_real_trace() {
    let Some(dir) =
        support::shared_data("thought-anchors-traces/deepseek-r1-distill-qwen-14b/correct_base_solution/problem_4682")
    else {
        return;
    };
    let out = stdout_json(&run(&["segment", dir.to_str().unwrap(), "--mode", "full-cot", "--json"]));
    assert_eq!(out["text_id"], "65c133c9cf042207");
    assert_eq!(out["n"], 144);
    assert_eq!(out["ranges"][0], serde_json::json!([213, 343]));
    assert_eq!(out["sentences"].as_array().unwrap().len(), 144);
}

#[test]
fn segment_chunks_mode() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("base_solution.json"), r#"{"full_cot": "P <think>\nA b c d e f. G h i j k l.</think>"}"#).unwrap();
    std::fs::write(tmp.path().join("chunks.json"), r#"{"chunks": ["A b c d e f.", "G h i j k l."]}"#).unwrap();
    let out = stdout_json(&run(&["segment", tmp.path().to_str().unwrap(), "--mode", "chunks", "--json"]));
    assert_eq!(out["n"], 2);
    assert_eq!(out["ranges"], serde_json::json!([[0, 12], [13, 25]]));
    assert_eq!(out["text_id"], thoughtscope::attention::text_id("A b c d e f.\nG h i j k l.", &["A b c d e f.", "G h i j k l."]));
    // full-cot mode drops the text after the last boundary: one sentence.
    let out = stdout_json(&run(&["segment", tmp.path().to_str().unwrap(), "--json"]));
    assert_eq!(out["n"], 1);
}

#[test]
fn vertical_scores_json() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("m.npy");
    npy::write_f32(&path, &[8, 8], &g1_matrix()).unwrap();
    let p = path.to_str().unwrap();
    let out = run(&["vertical-scores", p, "--proximity-ignore", "4", "--json"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[0.065,0.05666667,0.030000001,0.04,null,null,null,null]");
    let depth = stdout_json(&run(&["vertical-scores", p, "--proximity-ignore", "4", "--control-depth", "--json"]));
    assert_eq!(depth[0], 0.8125);
    let median = stdout_json(&run(&["vertical-scores", p, "--proximity-ignore", "2", "--score-type", "median", "--json"]));
    assert_eq!(median[1].as_f64().unwrap() as f32, 0.06);
    assert!(median[6].is_null());
}

#[test]
fn receiver_heads_json_over_an_upstream_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let model_dir = tmp.path().join("qwen-14b");
    for (r, n) in [(0usize, 10usize), (1, 12)] {
        let dir = model_dir.join(format!("response{r}"));
        std::fs::create_dir_all(&dir).unwrap();
        for l in 0..3 {
            for h in 0..4 {
                let mut m = vec![0f32; n * n];
                for i in 0..n {
                    for j in 0..=i {
                        m[i * n + j] = (((((i + 1) * (j + 2) * (l + 3) * (h + 5) * (r + 7)) % 97) + 1) as f64 / 1000.0) as f32;
                    }
                }
                npy::write_f32(&dir.join(format!("{l}_{h}.npy")), &[n, n], &m).unwrap();
            }
        }
    }
    let out = stdout_json(&run(&["receiver-heads", model_dir.to_str().unwrap(), "--top-k", "3", "--proximity-ignore", "4", "--json"]));
    assert_eq!(out["top_k_heads"], serde_json::json!([[2, 3], [0, 0], [1, 2]]));
    let kurt = out["mean_kurtosis"].as_array().unwrap();
    assert_eq!((kurt.len(), kurt[0].as_array().unwrap().len()), (3, 4));
    assert!((kurt[2][3].as_f64().unwrap() - 0.171133).abs() < 1e-5);
}

#[test]
fn bad_inputs_fail_with_one_line_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();

    let missing = t.join("nope.npy");
    assert_fails(&run(&["vertical-scores", missing.to_str().unwrap(), "--json"]), &["nope.npy"]);

    let garbage = t.join("garbage.npy");
    std::fs::write(&garbage, b"hello").unwrap();
    assert_fails(&run(&["vertical-scores", garbage.to_str().unwrap(), "--json"]), &["garbage.npy", "not an .npy file"]);

    let rect = t.join("rect.npy");
    npy::write_f32(&rect, &[2, 3], &[0.0; 6]).unwrap();
    assert_fails(&run(&["vertical-scores", rect.to_str().unwrap(), "--json"]), &["rect.npy", "not a square matrix"]);

    let square = t.join("square.npy");
    npy::write_f32(&square, &[8, 8], &g1_matrix()).unwrap();
    assert_fails(&run(&["vertical-scores", square.to_str().unwrap(), "--proximity-ignore", "-1", "--json"]), &["--proximity-ignore -1", "≥ 0"]);

    let problem = t.join("problem");
    std::fs::create_dir(&problem).unwrap();
    assert_fails(&run(&["segment", problem.to_str().unwrap(), "--json"]), &["base_solution.json"]);
    std::fs::write(problem.join("base_solution.json"), "{\"full_cot\": ").unwrap();
    assert_fails(&run(&["segment", problem.to_str().unwrap(), "--json"]), &["base_solution.json", "invalid JSON"]);
    std::fs::write(problem.join("base_solution.json"), "{\"prompt\": \"p\"}").unwrap();
    assert_fails(&run(&["segment", problem.to_str().unwrap(), "--json"]), &["base_solution.json", "full_cot"]);
    std::fs::write(problem.join("base_solution.json"), "{\"prompt\": \"p\", \"solution\": \"Error: x\", \"error\": \"'text'\"}").unwrap();
    assert_fails(&run(&["segment", problem.to_str().unwrap(), "--json"]), &["base_solution.json", "failed generation"]);
    std::fs::write(problem.join("base_solution.json"), "{\"full_cot\": \"x\"}").unwrap();
    assert_fails(&run(&["segment", problem.to_str().unwrap(), "--mode", "chunks", "--json"]), &["chunks.json"]);

    let empty = t.join("empty_model");
    std::fs::create_dir(&empty).unwrap();
    assert_fails(&run(&["receiver-heads", empty.to_str().unwrap(), "--json"]), &["empty_model", "no cache entries"]);
}

#[test]
fn every_model_command_refuses_an_unknown_device_in_one_line() {
    let commands: [&[&str]; 4] = [
        &["attn", "no/such/problem"],
        &["va", "--root", "no/such/rollouts"],
        &["generate", "--problems", "no/such.json", "--model", "smollm2-135m", "--out", "no/such/out"],
        &["bench", "forward"],
    ];
    for command in commands {
        let mut args = command.to_vec();
        args.extend(["--device", "gpu"]);
        assert_fails(&run(&args), &["unknown device `gpu`", "cuda:N"]);
    }
}

#[test]
fn attn_refuses_a_cache_dir_that_is_a_file_and_an_overlong_text_before_any_forward_pass() {
    if support::smollm2().is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let problem = tmp.path().join("problem");
    std::fs::create_dir(&problem).unwrap();
    std::fs::write(problem.join("base_solution.json"), r#"{"full_cot": "One step. Then another step. Done."}"#).unwrap();
    let file = tmp.path().join("cache-file");
    std::fs::write(&file, "not a directory").unwrap();
    let args = ["attn", problem.to_str().unwrap(), "--quiet", "--cache-dir", file.to_str().unwrap()];
    assert_fails(&run(&args), &["cache-file", "is a file"]);

    // 300k characters: far past SmolLM2's 8,192 tokens; refused after one tokenisation.
    let long = "The apples are counted again and again. ".repeat(7_500);
    std::fs::write(problem.join("base_solution.json"), serde_json::json!({ "full_cot": long }).to_string()).unwrap();
    let started = std::time::Instant::now();
    let cache = tmp.path().join("cache");
    assert_fails(&run(&["attn", problem.to_str().unwrap(), "--quiet", "--cache-dir", cache.to_str().unwrap()]), &["longer than the context", "8192"]);
    assert!(started.elapsed().as_secs() < 20, "took {:?}", started.elapsed());
}

/// The binary builds its settings from the environment first thing: a value it cannot take fails
/// any command, naming the variable, before the command does anything (a model-free `segment`
/// here; before, the variable was read only when a model loaded).
#[test]
fn a_settings_variable_it_cannot_take_fails_the_command_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("base_solution.json"), r#"{"full_cot": "P <think>\nA b c. D e f.</think>"}"#).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_thoughtscope"))
        .args(["segment", tmp.path().to_str().unwrap(), "--json"])
        .env("THOUGHTSCOPE_PROGRESS", "off")
        .env("THOUGHTSCOPE_WEIGHTS", "f16")
        .output()
        .expect("binary runs");
    assert_fails(&output, &["THOUGHTSCOPE_WEIGHTS", "\"f16\"", "`stored` or `f32`"]);
}

/// `--weights` reaches the model a command loads, in the settings value passed down (the load's
/// status line names the matrices' types); without it, the environment's choice or `stored`.
#[test]
fn the_weights_flag_reaches_the_loaded_model() {
    if support::smollm2().is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let problem = tmp.path().join("problem");
    std::fs::create_dir(&problem).unwrap();
    std::fs::write(problem.join("base_solution.json"), r#"{"full_cot": "One step. Then another step. Done."}"#).unwrap();
    for (flag, env, kept) in [(None, None, true), (Some("--weights=f32"), None, false), (None, Some("f32"), false), (Some("--weights=stored"), Some("f32"), true)] {
        let cache = tmp.path().join(format!("cache-{flag:?}-{env:?}"));
        let mut command = Command::new(env!("CARGO_BIN_EXE_thoughtscope"));
        command.args(["attn", problem.to_str().unwrap(), "--json", "--cache-dir", cache.to_str().unwrap()]).args(flag);
        command.env("THOUGHTSCOPE_PROGRESS", "lines").env_remove("THOUGHTSCOPE_WEIGHTS");
        if let Some(value) = env {
            command.env("THOUGHTSCOPE_WEIGHTS", value);
        }
        let output = command.output().expect("binary runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{flag:?} {env:?}: {stderr}");
        let line = stderr.lines().find(|l| l.starts_with("model smollm2-135m: weights")).unwrap_or_else(|| panic!("no load line: {stderr}"));
        assert_eq!(line.contains("q4_1"), kept, "{flag:?}, THOUGHTSCOPE_WEIGHTS={env:?}: {line}");
    }
}
