//! `thoughtscope explore`: the explorer's data from a small synthetic problem directory (a
//! hand-made attention cache in thought-anchors' `<l>_<h>.npy` layout, a suppression folder,
//! `chunks_labeled.json` with resampling fields, resampled alternatives), what it says is missing,
//! its errors, and the page driven in headless Chromium by `scripts/explorer_browser_test.py`
//! (Selenium + chromium-driver; skipped loudly without them, a failure under CI).
//! With SmolLM2 (scripts/fetch-model.sh), the token view: its pass against a second one, and in
//! the browser. The 300-sentence measurement is `scripts/bench-explorer.sh`, not a test.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;
use thoughtscope::attention::{SentenceMode, Sentences};
use thoughtscope::io::npy;
use thoughtscope::plot::{Explorer, ExplorerOptions, WebsiteTrace};

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
        // The website's step_importance.json: every later target but (source 0, target 2).
        let records: Vec<serde_json::Value> = (0..n)
            .map(|source| {
                let impacts: Vec<serde_json::Value> = (source + 1..n)
                    .filter(|&target| (source, target) != (0, 2))
                    .map(|target| json!({"target_chunk_idx": target, "importance_score": random.next() - 0.4}))
                    .collect();
                json!({"source_chunk_idx": source, "source_chunk_text": chunks[source], "target_impacts": impacts})
            })
            .collect();
        write(&problem.join("step_importance.json"), &json!(records));
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
    // Everything but the token view, which needs a forward pass; the command says how.
    let parts: Vec<&str> = explorer.missing.iter().map(|m| m.part.as_str()).collect();
    assert_eq!(parts, ["token view"], "{:?}", explorer.missing);
    assert!(explorer.missing[0].command.contains("--token-view"), "{}", explorer.missing[0].command);
    assert!(explorer.token_view.is_none());
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
    // step_importance.json: importance_score of (source, target) at [target][source], 4 digits;
    // a target no record lists is undefined.
    let step = explorer.matrix("step_importance").unwrap();
    let records: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(f.problem.join("step_importance.json")).unwrap()).unwrap();
    for (source, target) in [(0, 1), (3, 7), (10, 11)] {
        let impacts = records[source]["target_impacts"].as_array().unwrap();
        let score = impacts.iter().find(|i| i["target_chunk_idx"] == target).unwrap()["importance_score"].as_f64().unwrap();
        assert!(close(step.get(target, source), score), "({target}, {source}): {} vs {score}", step.get(target, source));
    }
    assert!(step.get(2, 0).is_nan() && step.get(5, 5).is_nan());
}

#[test]
fn a_malformed_step_importance_json_is_an_error_naming_the_record_and_field() {
    let f = fixture(12, true);
    let path = f.problem.join("step_importance.json");
    std::fs::write(&path, r#"[{"source_chunk_idx": 0, "target_impacts": [{"target_chunk_idx": 1, "importance_score": "high"}]}]"#).unwrap();
    let error = Explorer::from_problem_dir(&f.problem, &options(&f)).unwrap_err().to_string();
    assert!(error.contains("step_importance.json") && error.contains("target_impacts[0]") && error.contains("importance_score"), "{error}");
    std::fs::write(&path, r#"[{"source_chunk_idx": -1, "target_impacts": []}]"#).unwrap();
    let error = Explorer::from_problem_dir(&f.problem, &options(&f)).unwrap_err().to_string();
    assert!(error.contains("record 0") && error.contains("source_chunk_idx"), "{error}");
}

/// The numbers of an explorer, without where they were read from (notes, source, missing).
fn numbers(e: &Explorer) -> (Vec<String>, Vec<Vec<String>>, Vec<(String, Vec<f64>)>, Vec<(String, Vec<f64>)>, String) {
    let bits = |v: &[f64]| v.iter().map(|x| if x.is_nan() { f64::NAN } else { *x }).collect::<Vec<f64>>();
    (
        e.sentences.clone(),
        e.tags.clone(),
        e.metrics.iter().map(|m| (m.key.clone(), bits(&m.values))).collect(),
        e.matrices.iter().map(|m| (m.key.clone(), bits(&m.lower))).collect(),
        serde_json::to_string(&e.alternatives).unwrap(),
    )
}

fn same_numbers(a: &Explorer, b: &Explorer) {
    let (a, b) = (numbers(a), numbers(b));
    assert_eq!(a.0, b.0, "sentences");
    assert_eq!(a.1, b.1, "tags");
    assert_eq!(a.4, b.4, "alternatives");
    for (what, x, y) in [("metrics", &a.2, &b.2), ("matrices", &a.3, &b.3)] {
        assert_eq!(x.iter().map(|m| &m.0).collect::<Vec<_>>(), y.iter().map(|m| &m.0).collect::<Vec<_>>(), "{what}");
        for ((key, u), (_, v)) in x.iter().zip(y) {
            assert_eq!(u.len(), v.len(), "{key}");
            for (k, (p, q)) in u.iter().zip(v).enumerate() {
                assert!(p == q || (p.is_nan() && q.is_nan()), "{what} {key}[{k}]: {p} vs {q}");
            }
        }
    }
}

#[test]
fn website_files_written_then_read_give_the_same_numbers() {
    let f = fixture(12, true);
    let out = f.problem.parent().unwrap().join("website");
    let status = Command::new(env!("CARGO_BIN_EXE_thoughtscope"))
        .args(["--quiet", "explore"])
        .arg(&f.problem)
        .arg("--suppression")
        .arg(&f.suppression)
        .arg("--website")
        .arg(&out)
        .arg("--out")
        .arg(f.problem.parent().unwrap().join("trace.html"))
        .output()
        .unwrap();
    assert!(status.status.success(), "explore failed: {}", String::from_utf8_lossy(&status.stderr));
    for name in ["chunks_labeled.json", "step_importance.json", "step_importance_supp.json", "chunk_3/solutions.json", "chunks_resampled.json", "base_solution.json", "chunks.json"] {
        assert!(out.join(name).is_file(), "{name} written");
    }
    // Full precision: the files read back equal what was read from the problem directory (the
    // suppression folder's matrix now as step_importance_supp.json).
    let opts = ExplorerOptions { suppression_dir: Some(f.suppression.clone()), ..ExplorerOptions::default() };
    let original = WebsiteTrace::from_problem_dir(&f.problem, &opts).unwrap();
    let again = WebsiteTrace::from_problem_dir(&out, &ExplorerOptions::default()).unwrap();
    assert_eq!(again, original);
    let supp = original.step_importance_supp.as_ref().unwrap();
    let raw = npy::read(&f.suppression.join("suppression_matrix.npy")).unwrap();
    let npy::NpyData::F64(values) = raw.data else { panic!("f64") };
    assert_eq!(supp[3].target_impacts[2].target_chunk_idx, 6);
    assert_eq!(supp[3].target_impacts[2].importance_score, values[6 * f.n + 3], "not rounded");
    assert_eq!(original.chunks_resampled[&3], ["So each box has five apples.", "Maybe it is seven."]);
    assert_eq!(again.solutions[&3].len(), 3, "stubs kept, as upstream's files keep them");
    // And the explorer shows the same numbers from either folder (no attention asked for).
    let from_problem = Explorer::from_problem_dir(&f.problem, &opts).unwrap();
    let from_website = Explorer::from_problem_dir(&out, &ExplorerOptions::default()).unwrap();
    same_numbers(&from_problem, &from_website);
    assert!(from_website.matrix("suppression").is_some() && from_website.metric("suppression_out").is_some());
    // Written a second time from the written folder: byte-identical files.
    let out2 = f.problem.parent().unwrap().join("website2");
    again.write(&out2).unwrap();
    for name in ["chunks_labeled.json", "step_importance.json", "step_importance_supp.json", "chunk_3/solutions.json", "chunks_resampled.json"] {
        assert_eq!(std::fs::read(out.join(name)).unwrap(), std::fs::read(out2.join(name)).unwrap(), "{name}");
    }
}

#[test]
fn website_chunks_resampled_json_gives_alternatives_without_solutions() {
    let f = fixture(12, false);
    std::fs::write(f.problem.join("chunks_resampled.json"), r#"{"0": ["Let me think.", "First, the boxes."], "10": ["So 60."]}"#).unwrap();
    let explorer = Explorer::from_problem_dir(&f.problem, &options(&f)).unwrap();
    assert_eq!(explorer.alternatives[0].iter().map(|a| a.text.as_str()).collect::<Vec<_>>(), ["Let me think.", "First, the boxes."]);
    assert_eq!((explorer.alternatives[10][0].answer.as_str(), explorer.alternatives[10][0].is_correct), ("", None));
    std::fs::write(f.problem.join("chunks_resampled.json"), r#"{"one": ["x"]}"#).unwrap();
    let error = Explorer::from_problem_dir(&f.problem, &options(&f)).unwrap_err().to_string();
    assert!(error.contains("chunks_resampled.json") && error.contains("`one`"), "{error}");
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

/// The token view's pass over the fixture's text with SmolLM2: the sentence matrices shown are
/// that pass's (the hand-made cache is not read), each head's pair is its sentence's top source
/// with the matrix cell as block mean, and the values are the model's own probabilities (checked
/// against a full capture of a second pass) for the first tokens of both sentences.
#[test]
fn explorer_token_view_comes_from_the_same_pass_as_its_matrices() {
    use thoughtscope::attention::{sentence_attention, BoundaryMode, FullAttentionCapture, TokenBounds};
    use thoughtscope::model::{HookSet, Input, KvCache, Logits};
    let Some(loaded) = support::smollm2() else { return };
    let f = fixture(12, true);
    let opts = ExplorerOptions { token_heads: 3, token_max: 5, ..options(&f) };
    let explorer = Explorer::from_problem_dir_with_model(&f.problem, &opts, &loaded).unwrap();
    assert!(!explorer.missing.iter().any(|m| m.part == "token view" || m.part == "attention"), "{:?}", explorer.missing);
    let sentences = Sentences::from_chunks(&sentences_text(f.n));
    let (attention, _) = sentence_attention(&loaded, &sentences, BoundaryMode::Prefix).unwrap();
    let n = f.n;
    let average = explorer.matrix("receiver_average").unwrap();
    let mean_of = |i: usize, j: usize| {
        explorer.receiver_heads.iter().map(|&[l, h]| f64::from(attention.matrix(l, h)[i * n + j])).sum::<f64>() / explorer.receiver_heads.len() as f64
    };
    for (i, j) in [(5, 2), (11, 0), (11, 11)] {
        assert!(close(average.get(i, j), mean_of(i, j)), "the model's attention, not the hand-made cache: ({i}, {j})");
    }
    let view = explorer.token_view.as_ref().expect("token view");
    assert_eq!(view.heads.len(), 3);
    assert_eq!(view.heads.iter().map(|h| h.head).collect::<Vec<_>>(), explorer.receiver_heads[..3].to_vec(), "top receiver heads first");

    // A second pass, every probability kept.
    let ids = loaded.tokenizer.encode(&sentences.text).unwrap();
    let bounds = TokenBounds::compute(&loaded.tokenizer, &sentences, BoundaryMode::Prefix).unwrap();
    let mut full = FullAttentionCapture::new();
    loaded.model.forward_with(Input::Ids(&ids), &mut KvCache::discarding(&loaded.model), &mut HookSet::new().with_sink(&mut full), Logits::None).unwrap();
    let t = ids.len();
    let last = t - 1;
    for head in &view.heads {
        let [l, h] = head.head;
        let m = attention.matrix(l, h);
        assert!(head.sources[0].is_none());
        for i in 1..n {
            let source = head.sources[i].expect("every later sentence has tokens");
            // The sentence holding token 0 (the attention sink) is passed over when there is another.
            let sink = |j: usize| bounds.ranges[j].0 == 0;
            let best = (0..i).filter(|&j| i == 1 || !sink(j)).map(|j| m[i * n + j]).fold(f32::MIN, f32::max);
            assert!(m[i * n + source] >= best * (1.0 - 1e-5), "head {l}.{h}, #{i}: #{source} is its top source");
            assert!(close(head.means[i], f64::from(m[i * n + source])), "block mean = the matrix cell");
            let (r0, r1) = (bounds.ranges[i].0.min(last), bounds.ranges[i].1.min(last));
            let (c0, c1) = (bounds.ranges[source].0.min(last), bounds.ranges[source].1.min(last));
            assert_eq!(view.lengths[i], r1 - r0);
            let (rows, cols) = ((r1 - r0).min(5), (c1 - c0).min(5));
            assert_eq!(head.values[i].len(), rows * cols);
            let probs = full.layer(l).unwrap();
            let block: Vec<f64> = (0..rows * cols).map(|k| f64::from(probs[(h * t + r0 + k / cols) * t + c0 + k % cols])).collect();
            let largest = block.iter().copied().fold(0.0, f64::max);
            assert!(close(head.scales[i], largest), "{l}.{h} #{i}: largest value {} vs {largest}", head.scales[i]);
            for (k, p) in block.iter().enumerate() {
                // A code is 0.1 % of the largest value; the largest itself has 4 digits.
                assert!((head.value(i, k) - p).abs() <= 1e-3 * largest, "{l}.{h} #{i} cell {k}: {} vs {p}", head.value(i, k));
            }
            let decoded: Vec<String> = ids[r0..r0 + rows].iter().map(|&id| loaded.tokenizer.decode(&[id], false).unwrap()).collect();
            assert_eq!(view.tokens[i], decoded);
        }
    }
}

#[test]
fn explorer_token_view_in_headless_chromium_shows_the_json() {
    if support::smollm2().is_none() {
        return;
    }
    let f = fixture(12, true);
    let out = f.problem.parent().unwrap().join("trace.html");
    let output = Command::new(env!("CARGO_BIN_EXE_thoughtscope"))
        .args(["--quiet", "explore"])
        .arg(&f.problem)
        .args(["--model", MODEL, "--top-k", "3", "--max-head-matrices", "2", "--token-view", "--token-max", "6", "--json"])
        .arg("--suppression")
        .arg(&f.suppression)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(output.status.success(), "explore failed: {}", String::from_utf8_lossy(&output.stderr));
    let data: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(format!("{}.json", out.display())).unwrap()).unwrap();
    assert_eq!(data["token_view"]["heads"].as_array().unwrap().len(), 3);
    assert_eq!(data["token_view"]["max_tokens"], 6);
    if let Some(stdout) = browser(&out, &[]) {
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

/// `thoughtscope <args>` (quiet); its stdout, after asserting success.
fn thoughtscope(args: &[&std::ffi::OsStr]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_thoughtscope")).arg("--quiet").args(args).output().unwrap();
    assert!(output.status.success(), "thoughtscope {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `thoughtscope va` fills the cache with the token pairs of its explorer pages in the pass that
/// fills it; a second run, which hits the cache, writes a page whose token view is the one
/// `thoughtscope explore --token-view` computes with its own pass (same heads, sources, block
/// means, largest values, codes and tokens), and the browser script checks it on the page.
#[test]
fn a_va_page_made_from_a_cache_hit_has_the_token_view_of_explore_token_view() {
    if support::smollm2().is_none() {
        return;
    }
    let f = fixture(12, false);
    let work = f.problem.parent().unwrap();
    let cache = work.join("va_cache");
    let va = |out: &str| {
        let out = work.join(out);
        let args: Vec<&std::ffi::OsStr> = vec![
            "va".as_ref(),
            "--root".as_ref(),
            work.as_os_str(),
            "--prefix".as_ref(),
            "problem_".as_ref(),
            "--model".as_ref(),
            MODEL.as_ref(),
            "--cache-dir".as_ref(),
            cache.as_os_str(),
            "--permutations".as_ref(),
            "0".as_ref(),
            "--html-only".as_ref(),
            "--out".as_ref(),
            out.as_os_str(),
        ];
        thoughtscope(&args);
        let chosen: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("chosen_rollout.json")).unwrap()).unwrap();
        (chosen["forward_passes"].as_u64().unwrap(), support::explorer_page_data(&out.join("problem_7/explorer.html")))
    };
    let (passes, first) = va("va_miss");
    assert_eq!(passes, 1, "the first run fills the cache");
    let (passes, page) = va("va_hit");
    assert_eq!(passes, 0, "the second run reads it");
    assert_eq!(page["token_view"], first["token_view"]);
    let missing: Vec<&str> = page["missing"].as_array().unwrap().iter().map(|m| m["part"].as_str().unwrap()).collect();
    assert!(!missing.contains(&"token view"), "{missing:?}");

    let explored = work.join("explored.html");
    thoughtscope(&[
        "explore".as_ref(),
        f.problem.as_os_str(),
        "--model".as_ref(),
        MODEL.as_ref(),
        "--token-view".as_ref(),
        "--json".as_ref(),
        "--out".as_ref(),
        explored.as_os_str(),
    ]);
    let computed: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(format!("{}.json", explored.display())).unwrap()).unwrap();
    assert_eq!(page["receiver_heads"], computed["receiver_heads"], "the cached matrices are the pass's");
    let view = &page["token_view"];
    assert_eq!(view["heads"].as_array().unwrap().len(), 4, "--token-heads 4");
    assert_eq!(view["max_tokens"], 16);
    assert_eq!(view, &computed["token_view"], "the token view from the cache is the one of the pass");
    let heads: Vec<&serde_json::Value> = view["heads"].as_array().unwrap().iter().map(|h| &h["head"]).collect();
    assert_eq!(heads, page["receiver_heads"].as_array().unwrap()[..4].iter().collect::<Vec<_>>(), "the top receiver heads");
    assert!(page["notes"].as_array().unwrap().iter().any(|n| n.as_str().unwrap().contains("stored in the cache entry")));

    let entry = cache.join(MODEL).join(Sentences::from_chunks(&sentences_text(f.n)).text_id());
    let bytes: u64 = ["token_pairs.json", "token_pairs.npy"].iter().map(|name| std::fs::metadata(entry.join(name)).unwrap().len()).sum();
    eprintln!("token pairs stored for 12 sentences, 4 heads: {bytes} bytes");
    if let Some(stdout) = browser(&work.join("va_hit/problem_7/explorer.html"), &[]) {
        assert!(stdout.contains("explorer browser test: ok"), "{stdout}");
        eprintln!("{}", stdout.trim());
    }
}

/// An entry written without token pairs (as before they were stored) stays valid: the page made
/// from it has the sentence matrices and lists the token view as missing with a command; that
/// command adds the pairs to the entry (one pass), and the page made again has the token view of
/// the library's own pass ([`Explorer::from_problem_dir_with_model`]).
#[test]
fn an_entry_without_token_pairs_says_how_to_add_them_and_the_command_does() {
    let Some(loaded) = support::smollm2() else { return };
    let f = fixture(12, false);
    let cache = f.problem.parent().unwrap().join("old_cache");
    let attn = |extra: &str| {
        let mut args: Vec<&std::ffi::OsStr> =
            vec!["attn".as_ref(), f.problem.as_os_str(), "--model".as_ref(), MODEL.as_ref(), "--mode".as_ref(), "chunks".as_ref()];
        args.extend(["--cache-dir".as_ref(), cache.as_os_str(), extra.as_ref()]);
        thoughtscope(&args)
    };
    assert!(attn("--token-heads=0").starts_with("computed"));
    let opts = ExplorerOptions { cache_dir: cache.clone(), suppression_dir: None, ..options(&f) };
    let old = Explorer::from_problem_dir(&f.problem, &opts).unwrap();
    assert!(old.matrix("receiver_average").is_some() && old.token_view.is_none());
    let missing = old.missing.iter().find(|m| m.part == "token view").expect("the token view is listed as missing");
    assert!(missing.why.contains("has no token pairs") && missing.why.contains("--token-view"), "{}", missing.why);
    assert!(missing.command.ends_with("--add-token-pairs"), "{}", missing.command);
    assert!(attn("--token-heads=4").starts_with("cached"), "an entry without token pairs is still served");

    // The command, as the page gives it.
    let command = missing.command.strip_prefix("thoughtscope ").expect("a thoughtscope command");
    let output = Command::new("sh").arg("-c").arg(format!("'{}' --quiet {command}", env!("CARGO_BIN_EXE_thoughtscope"))).output().unwrap();
    assert!(output.status.success(), "{command}: {}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("computed"), "one pass");
    let again = Explorer::from_problem_dir(&f.problem, &opts).unwrap();
    assert!(!again.missing.iter().any(|m| m.part == "token view"), "{:?}", again.missing);
    let computed = Explorer::from_problem_dir_with_model(&f.problem, &opts, &loaded).unwrap();
    let json = |e: &Explorer| serde_json::to_string(&e.token_view).unwrap();
    assert_eq!(again.receiver_heads, computed.receiver_heads);
    assert_eq!(json(&again), json(&computed), "the same heads, sources, means, codes and tokens");
    assert_eq!(again.token_view.as_ref().unwrap().heads.len(), 3, "top_k 3 receiver heads");
    // A smaller token budget than stored is the stored blocks cut, as a pass with it would give.
    let small = ExplorerOptions { token_heads: 2, token_max: 3, ..opts.clone() };
    let cut = Explorer::from_problem_dir(&f.problem, &small).unwrap();
    let computed = Explorer::from_problem_dir_with_model(&f.problem, &small, &loaded).unwrap();
    assert_eq!(json(&cut), json(&computed));
    assert_eq!(cut.token_view.as_ref().unwrap().max_tokens, 3);
}
