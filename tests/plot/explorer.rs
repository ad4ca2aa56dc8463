//! `thoughtscope explore`: the explorer's data from a small synthetic problem directory (a
//! hand-made attention cache in thought-anchors' `<l>_<h>.npy` layout, a suppression folder,
//! `chunks_labeled.json` with resampling fields, resampled alternatives), what it says is missing,
//! its errors, and the page driven in headless Chromium by `scripts/explorer_browser_test.py`
//! (Selenium + chromium-driver; skipped loudly without them, a failure under CI).
//!
//! `THOUGHTSCOPE_EXPLORER_MEASURE=<dir> cargo test --test plot explorer:: -- --ignored --nocapture`
//! writes a 300-sentence page into `<dir>` and prints its size, first paint and click latency.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;
use thoughtscope::attention::{SentenceMode, Sentences};
use thoughtscope::io::npy;
use thoughtscope::plot::{Explorer, ExplorerOptions};

const MODEL: &str = "smollm2-135m";
/// The small fixture's grid; the 300-sentence one has 8 × 4 (more heads than the top 20).
const LAYERS: usize = 2;
const HEADS: usize = 3;

/// Deterministic pseudo-random numbers in [0, 1).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

struct Fixture {
    _tmp: tempfile::TempDir,
    problem: PathBuf,
    cache: PathBuf,
    suppression: PathBuf,
    /// `[L][H]` row-major N × N matrices.
    attention: Vec<Vec<Vec<f32>>>,
    n: usize,
}

fn sentences_text(n: usize) -> Vec<String> {
    const WORDS: &[&str] = &["boxes", "apples", "twelve", "each", "total", "so", "wait", "check", "maybe", "answer"];
    (0..n)
        .map(|k| {
            let mut s = format!("Step {k}:");
            for w in 0..(4 + k % 9) {
                s.push(' ');
                s.push_str(WORDS[(k * 7 + w * 3) % WORDS.len()]);
            }
            if k % 5 == 2 {
                s.push_str(" — this might be a test <b>&amp;</b>");
            }
            s.push('.');
            s
        })
        .collect()
}

/// A problem directory of `n` chunks with everything the explorer reads.
fn fixture(n: usize, with_resampling: bool) -> Fixture {
    fixture_with_grid(n, with_resampling, LAYERS, HEADS)
}

fn fixture_with_grid(n: usize, with_resampling: bool, layers: usize, heads: usize) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let problem = tmp.path().join("problem_7");
    std::fs::create_dir_all(&problem).unwrap();
    let chunks = sentences_text(n);
    let write = |path: &Path, value: &serde_json::Value| std::fs::write(path, serde_json::to_string_pretty(value).unwrap()).unwrap();
    write(&problem.join("base_solution.json"), &json!({"full_cot": chunks.join(" "), "answer": "60", "is_correct": true}));
    write(&problem.join("chunks.json"), &json!({"chunks": chunks}));
    let mut random = Lcg(7);
    let labels: Vec<serde_json::Value> = chunks
        .iter()
        .enumerate()
        .map(|(k, chunk)| {
            let mut tags = vec![["problem_setup", "plan_generation", "active_computation", "uncertainty_management"][k % 4]];
            if k % 5 == 2 {
                tags.push("verbalized_evaluation_awareness");
            }
            let mut entry = json!({"chunk": chunk, "chunk_idx": k, "function_tags": tags, "depends_on": []});
            if with_resampling {
                entry["accuracy"] = json!(random.next());
                entry["resampling_importance_accuracy"] = json!(random.next() - 0.5);
                entry["counterfactual_importance_kl"] = if k == 1 { json!(null) } else { json!(random.next() * 3.0) };
            }
            entry
        })
        .collect();
    write(&problem.join("chunks_labeled.json"), &json!(labels));
    if with_resampling {
        std::fs::create_dir_all(problem.join("chunk_3")).unwrap();
        write(
            &problem.join("chunk_3/solutions.json"),
            &json!([
                {"chunk_resampled": "So each box has five apples.", "answer": "60", "is_correct": true},
                {"error": "API stub"},
                {"chunk_resampled": "Maybe it is seven.", "answer": "84", "is_correct": false},
            ]),
        );
    }

    // Attention: each row a causal distribution, a few columns made heavy so receiver heads differ.
    let sentences = Sentences::from_chunks(&chunks);
    let cache = tmp.path().join("attn_cache");
    let entry = cache.join(thoughtscope::model::cache_name(MODEL)).join(sentences.text_id());
    std::fs::create_dir_all(&entry).unwrap();
    let mut attention = Vec::new();
    for l in 0..layers {
        let mut per_head = Vec::new();
        for h in 0..heads {
            let mut m = vec![0f32; n * n];
            for i in 0..n {
                let mut row: Vec<f64> = (0..=i).map(|j| random.next() + if (j + l + h) % 4 == 0 { 3.0 } else { 0.0 }).collect();
                let sum: f64 = row.iter().sum();
                row.iter_mut().for_each(|v| *v /= sum);
                for (j, v) in row.into_iter().enumerate() {
                    m[i * n + j] = v as f32;
                }
            }
            npy::write_f32(&entry.join(format!("{l}_{h}.npy")), &[n, n], &m).unwrap();
            per_head.push(m);
        }
        attention.push(per_head);
    }

    // Suppression: [target][source], finite below the diagonal.
    let suppression = tmp.path().join("suppression");
    std::fs::create_dir_all(&suppression).unwrap();
    let values: Vec<f64> = (0..n * n).map(|x| if x % n < x / n { -20.0 + 18.0 * random.next() } else { -20.7 }).collect();
    npy::write_f64(&suppression.join("suppression_matrix.npy"), &[n, n], &values).unwrap();
    write(&suppression.join("suppression_manifest.json"), &json!({"key": {"model": MODEL, "text_id": sentences.text_id(), "n": n}}));
    Fixture { _tmp: tmp, problem, cache, suppression, attention, n }
}

fn options(f: &Fixture) -> ExplorerOptions {
    ExplorerOptions {
        model: Some(MODEL.into()),
        cache_dir: f.cache.clone(),
        suppression_dir: Some(f.suppression.clone()),
        top_k: 3,
        max_head_matrices: 2,
        ..ExplorerOptions::default()
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 5e-4 * b.abs().max(1e-9)
}

#[test]
fn explorer_reads_every_part_of_a_problem_dir() {
    let f = fixture(12, true);
    let explorer = Explorer::from_problem_dir(&f.problem, &options(&f)).unwrap();
    assert_eq!(explorer.n(), 12);
    assert!(explorer.missing.is_empty(), "{:?}", explorer.missing);
    assert_eq!(explorer.grid, Some([LAYERS, HEADS]));
    assert_eq!(explorer.receiver_heads.len(), 3);
    // The receiver-head average is the mean of the receiver heads' matrices, 4 digits kept.
    let average = explorer.matrix("receiver_average").unwrap();
    for (i, j) in [(5, 2), (11, 0), (11, 11)] {
        let mean = explorer.receiver_heads.iter().map(|&[l, h]| f64::from(f.attention[l][h][i * f.n + j])).sum::<f64>() / 3.0;
        assert!(close(average.get(i, j), mean), "({i}, {j}): {} vs {mean}", average.get(i, j));
    }
    // Two single-head matrices (the budget), vertical scores of all three receiver heads.
    assert_eq!(explorer.matrices.iter().filter(|m| m.head.is_some()).count(), 2);
    assert_eq!(explorer.metrics.iter().filter(|m| m.key.starts_with("vertical_")).count(), 3);
    // Suppression: the matrix and its mean over later targets.
    let supp = explorer.matrix("suppression").unwrap();
    let raw = npy::read(&f.suppression.join("suppression_matrix.npy")).unwrap();
    let npy::NpyData::F64(values) = raw.data else { panic!("f64") };
    assert!(close(supp.get(7, 3), values[7 * f.n + 3]));
    assert!(supp.get(3, 3).is_nan(), "diagonal left out");
    let outgoing = explorer.metric("suppression_out").unwrap();
    let expected = (4..12).map(|t| values[t * f.n + 3]).sum::<f64>() / 8.0;
    assert!(close(outgoing.values[3], expected));
    // Resampling fields present are metrics; a null stays undefined; alternatives skip stubs.
    assert!(explorer.metric("accuracy").is_some() && explorer.metric("forced_importance_kl").is_none());
    assert!(explorer.metric("counterfactual_importance_kl").unwrap().values[1].is_nan());
    assert_eq!(explorer.alternatives[3].len(), 2);
    assert_eq!(explorer.alternatives[3][1].answer, "84");
    assert!(explorer.tags[2].iter().any(|t| t == "verbalized_evaluation_awareness"));
}

#[test]
fn explorer_lists_what_is_missing_with_the_command() {
    let f = fixture(12, false);
    let mut opts = options(&f);
    opts.suppression_dir = None;
    opts.cache_dir = f.cache.join("elsewhere");
    let explorer = Explorer::from_problem_dir(&f.problem, &opts).unwrap();
    let parts: Vec<&str> = explorer.missing.iter().map(|m| m.part.as_str()).collect();
    assert_eq!(parts, ["resampling", "attention", "suppression"], "{:?}", explorer.missing);
    assert!(explorer.missing[1].command.starts_with("thoughtscope attn "), "{}", explorer.missing[1].command);
    assert!(explorer.missing[2].command.contains("thoughtscope suppress "));
    assert!(explorer.matrices.is_empty() && explorer.metrics.is_empty());
    let html = explorer.to_html();
    assert!(html.contains("thoughtscope suppress"));
}

#[test]
fn explorer_refuses_a_suppression_run_of_another_trace() {
    let f = fixture(12, false);
    let manifest = f.suppression.join("suppression_manifest.json");
    std::fs::write(&manifest, r#"{"key": {"text_id": "0123456789abcdef"}}"#).unwrap();
    let error = Explorer::from_problem_dir(&f.problem, &options(&f)).unwrap_err().to_string();
    assert!(error.contains("suppression_manifest.json") && error.contains("key.text_id"), "{error}");
    // In full-cot mode the sentences differ from the cached chunks entry: reported as missing.
    let mut opts = options(&f);
    opts.mode = SentenceMode::FullCot;
    opts.suppression_dir = None;
    let explorer = Explorer::from_problem_dir(&f.problem, &opts).unwrap();
    assert!(explorer.missing.iter().any(|m| m.part == "attention" && m.command.contains("--mode full-cot")));
}

#[test]
fn explorer_reads_a_chunks_folder_without_base_solution() {
    // The VA layout: chunks.json and chunks_labeled.json suffice in chunks mode.
    let f = fixture(12, false);
    std::fs::remove_file(f.problem.join("base_solution.json")).unwrap();
    let explorer = Explorer::from_problem_dir(&f.problem, &options(&f)).unwrap();
    assert_eq!(explorer.n(), 12);
    assert!(explorer.matrix("receiver_average").is_some(), "the same cache entry (same chunks)");
    let mut opts = options(&f);
    opts.mode = SentenceMode::FullCot;
    let error = Explorer::from_problem_dir(&f.problem, &opts).unwrap_err().to_string();
    assert!(error.contains("base_solution.json"), "{error}");
}

fn run_explore(f: &Fixture, out: &Path) {
    let status = Command::new(env!("CARGO_BIN_EXE_thoughtscope"))
        .args(["--quiet", "explore"])
        .arg(&f.problem)
        .args(["--model", MODEL, "--top-k", "3", "--max-head-matrices", "2", "--json"])
        .arg("--cache-dir")
        .arg(&f.cache)
        .arg("--suppression")
        .arg(&f.suppression)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    assert!(status.status.success(), "explore failed: {}", String::from_utf8_lossy(&status.stderr));
}

fn python() -> PathBuf {
    let venv = support::repo().join(".venv/bin/python");
    if venv.exists() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

/// Run the browser script on `page`; `None` when its dependencies are missing (after a skip).
fn browser(page: &Path, extra: &[&str]) -> Option<String> {
    let mut command = Command::new(python());
    command.arg(support::repo().join("scripts/explorer_browser_test.py")).arg(page).args(extra);
    if let Some(chromium) = thoughtscope::plot::chromium_path() {
        command.env("CHROMIUM", chromium);
    }
    let output = command.output().expect("python runs");
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    match output.status.code() {
        Some(0) => Some(stdout.into_owned()),
        Some(3) => {
            support::skip(format!("explorer browser test: {}", stderr.trim()));
            None
        }
        _ => panic!("explorer browser test failed:\n{stdout}\n{stderr}"),
    }
}

#[test]
fn explorer_page_in_headless_chromium_shows_the_json() {
    let f = fixture(12, true);
    let out = f.problem.parent().unwrap().join("trace.html");
    run_explore(&f, &out);
    let html = std::fs::read_to_string(&out).unwrap();
    assert!(!html.contains("https://") && !html.contains("http://"), "no network references");
    // THOUGHTSCOPE_EXPLORER_SCREENSHOT=<png>: also save a screenshot of the page.
    let screenshot = std::env::var("THOUGHTSCOPE_EXPLORER_SCREENSHOT").ok();
    let extra: Vec<&str> = match &screenshot {
        Some(path) => vec!["--screenshot", path.as_str()],
        None => vec![],
    };
    if let Some(stdout) = browser(&out, &extra) {
        assert!(stdout.contains("explorer browser test: ok"), "{stdout}");
        eprintln!("{}", stdout.trim());
    }
}

#[test]
fn two_notebook_explorers_on_one_page_are_independent_in_chromium() {
    let f = fixture(12, true);
    let explorer = Explorer::from_problem_dir(&f.problem, &options(&f)).unwrap();
    // Two displays, as two notebook cells give them (distinct div ids), in one exported page.
    let outputs: Vec<String> = (0..2).map(|_| explorer.mime_bundle().get("text/html").unwrap().to_owned()).collect();
    let page = f.problem.parent().unwrap().join("notebook.html");
    std::fs::write(&page, format!("<!DOCTYPE html><html><head><meta charset=\"utf-8\"></head><body>{}</body></html>", outputs.join("<p>next cell</p>"))).unwrap();
    if let Some(stdout) = browser(&page, &["--explorers", "2"]) {
        assert!(stdout.contains("explorer browser test: ok"), "{stdout}");
    }
}

#[test]
#[ignore = "measurement: THOUGHTSCOPE_EXPLORER_MEASURE=<dir>"]
fn explorer_300_sentences_measure() {
    let Some(dir) = std::env::var_os("THOUGHTSCOPE_EXPLORER_MEASURE") else {
        panic!("set THOUGHTSCOPE_EXPLORER_MEASURE to the folder the 300-sentence page goes to");
    };
    let f = fixture_with_grid(300, true, 8, 4);
    let out = PathBuf::from(dir).join("trace_300.html");
    let status = Command::new(env!("CARGO_BIN_EXE_thoughtscope"))
        .args(["--quiet", "explore"])
        .arg(&f.problem)
        .args(["--model", MODEL, "--json"])
        .arg("--cache-dir")
        .arg(&f.cache)
        .arg("--suppression")
        .arg(&f.suppression)
        .arg("--out")
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    if let Some(stdout) = browser(&out, &["--measure"]) {
        println!("{stdout}");
    }
}
