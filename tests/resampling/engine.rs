//! `thoughtscope resample` (the library's `rollout::resample`): prompts (faithful, corrected,
//! own-rollout), rollouts independent of batch size and sharding on SmolLM2, upstream's layout
//! read by a re-statement of thought-anchors' loader, and resume refusal on changed settings.

use crate::support;

use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use thoughtscope::io::shard::Shard;
use thoughtscope::rollout::generate::upstream_prompt;
use thoughtscope::rollout::resample::{
    chunk_prompts, resample_problem, Continuation, DecodeSettings, LocalProvider, PrefixMode, ProviderIdentity,
    ResampleConfig, ResampleSource, RolloutProvider, RolloutType, FORCED_ANSWER_SUFFIX,
};
use thoughtscope::Error;

const PROBLEM: &str = "What is 2 plus 3?";
/// A trace where a whole sentence repeats, with a paragraph break.
const SOLUTION: &str = "I need 2 plus 3. Wait, let me check. The sum is 5.\n\nWait, let me check. So the answer is \\boxed{5}. Done here.";
const CHUNKS: [&str; 5] =
    ["I need 2 plus 3.", "Wait, let me check.", "The sum is 5.", "Wait, let me check.", "So the answer is \\boxed{5}."];

/// A problem folder in upstream's layout for [`SOLUTION`].
fn problem_dir(root: &Path) -> PathBuf {
    let dir = root.join("problem_7");
    std::fs::create_dir_all(&dir).unwrap();
    let prompt = upstream_prompt(PROBLEM);
    let write = |name: &str, value: Value| std::fs::write(dir.join(name), serde_json::to_string_pretty(&value).unwrap()).unwrap();
    write("problem.json", json!({"problem": PROBLEM, "gt_answer": "5", "level": "Level 1", "type": "Prealgebra"}));
    write(
        "base_solution.json",
        json!({"prompt": prompt, "solution": SOLUTION, "full_cot": format!("{prompt}{SOLUTION}"), "answer": "5", "is_correct": true}),
    );
    write("chunks.json", json!({"source_text": format!("{prompt}{SOLUTION}"), "solution_text": SOLUTION, "chunks": CHUNKS}));
    dir
}

#[test]
fn faithful_removes_every_repeat_and_corrected_keeps_the_trace() {
    let tmp = tempfile::tempdir().unwrap();
    let source = ResampleSource::open(problem_dir(tmp.path())).unwrap();
    let head = upstream_prompt(PROBLEM);
    let faithful = chunk_prompts(&source, PrefixMode::Faithful, RolloutType::Default, &[0, 3, 4]).unwrap();
    let corrected = chunk_prompts(&source, PrefixMode::Corrected, RolloutType::Default, &[0, 3, 4]).unwrap();
    // Chunk 0: nothing before it, the bare upstream prompt.
    assert_eq!(faithful[0].prompt, head);
    assert_eq!(corrected[0].prompt, head);
    // Chunk 3 is the second "Wait, let me check.": upstream's replace drops the first one too.
    assert_eq!(faithful[1].prefix_without_chunk, "I need 2 plus 3.  The sum is 5.");
    assert_eq!(corrected[1].prefix_without_chunk, "I need 2 plus 3. Wait, let me check. The sum is 5.");
    // Chunk 4: upstream joins with single spaces; the trace has a paragraph break.
    assert_eq!(faithful[2].prefix_without_chunk, "I need 2 plus 3. Wait, let me check. The sum is 5. Wait, let me check.");
    assert_eq!(corrected[2].prefix_without_chunk, "I need 2 plus 3. Wait, let me check. The sum is 5.\n\nWait, let me check.");
    for p in faithful.iter().chain(&corrected) {
        assert_eq!(p.prompt, format!("{head}{}", p.prefix_without_chunk));
        assert_eq!(p.chunk_removed, CHUNKS[p.chunk_index]);
    }
    // Forced answers: upstream's suffix, its spelling kept.
    let forced = chunk_prompts(&source, PrefixMode::Faithful, RolloutType::ForcedAnswer, &[2]).unwrap();
    assert!(forced[0].prompt.ends_with("\n</think>\n\nTherefore, the final answers is \\boxed{"));
    assert_eq!(forced[0].prompt, format!("{head}I need 2 plus 3. Wait, let me check.{FORCED_ANSWER_SUFFIX}"));
    // A chunk that does not exist is an error naming the folder.
    let error = chunk_prompts(&source, PrefixMode::Faithful, RolloutType::Default, &[5]).unwrap_err().to_string();
    assert!(error.contains("chunk 5") && error.contains("problem_7"), "{error}");
}

#[test]
fn own_rollout_prompts_continue_the_trace_exactly() {
    let dir = support::repo().join("rollouts/apple_boxes/rollout_00");
    let source = ResampleSource::open(&dir).unwrap();
    let base: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("base_solution.json")).unwrap()).unwrap();
    let (prompt, full_cot) = (base["prompt"].as_str().unwrap(), base["full_cot"].as_str().unwrap());
    let all: Vec<usize> = (0..source.chunks.len()).collect();
    let prompts = chunk_prompts(&source, PrefixMode::OwnRollout, RolloutType::Default, &all).unwrap();
    assert_eq!(prompts[0].prompt, prompt, "chunk 0 continues the generation prompt itself");
    for p in &prompts {
        // The chat template is kept, and the prompt is the trace up to chunk i.
        assert!(p.prompt.starts_with(prompt));
        assert!(full_cot.starts_with(&p.prompt), "chunk {}: the prompt is not a prefix of the trace", p.chunk_index);
        // What follows is chunk i (whitespace aside: short chunks are merged with single spaces).
        let words = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(words(&full_cot[p.prompt.len()..]).starts_with(&words(&p.chunk_removed)), "chunk {}", p.chunk_index);
    }
    // The faithful mode needs the problem text and uses upstream's raw prompt.
    let faithful = chunk_prompts(&source, PrefixMode::Faithful, RolloutType::Default, &[0]).unwrap();
    assert!(faithful[0].prompt.starts_with("Solve this math problem step by step."));
}

fn config(rollouts: usize, max_tokens: usize, chunks: &[usize]) -> ResampleConfig {
    ResampleConfig {
        rollouts,
        decode: DecodeSettings { temperature: 0.6, top_p: 0.95, max_tokens },
        chunks: Some(chunks.to_vec()),
        ..ResampleConfig::default()
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn rollouts_do_not_depend_on_batch_size_or_sharding() {
    let Some(loaded) = support::smollm2() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = problem_dir(tmp.path());
    // Tiny: 2 chunks, K = 3, 8 tokens; batch 2 splits K unevenly (2 + 1), batch 3 is K.
    let chunks = [1, 3];
    let cfg = config(3, 8, &chunks);
    let mut outputs = Vec::new();
    for batch in [1, 2, 3] {
        let root = tmp.path().join(format!("batch_{batch}"));
        let provider = LocalProvider::new(&loaded, batch).unwrap();
        let report = resample_problem(&provider, &dir, &root, &cfg).unwrap();
        assert_eq!(report.run.computed, chunks.len());
        let files: Vec<String> = chunks.iter().map(|i| read(&root.join(format!("problem_7/chunk_{i}/solutions.json")))).collect();
        outputs.push(files);
    }
    assert_eq!(outputs[0], outputs[1], "batch 1 and 2 differ");
    assert_eq!(outputs[0], outputs[2], "batch 1 and 3 differ");
    // The rollouts of one chunk are not all the same text (each has its own stream).
    let first: Vec<Value> = serde_json::from_str(&outputs[0][0]).unwrap();
    let texts: std::collections::BTreeSet<&str> = first.iter().map(|r| r["rollout"].as_str().unwrap()).collect();
    assert!(texts.len() > 1, "3 rollouts at T=0.6 gave one text: {texts:?}");

    // Two shards into one root: together the unsharded run's chunk folders, file for file.
    let sharded = tmp.path().join("sharded");
    let provider = LocalProvider::new(&loaded, 15).unwrap();
    let mut taken = 0;
    for index in 0..2 {
        let cfg = ResampleConfig { shard: Some(Shard::new(index, 2).unwrap()), ..cfg.clone() };
        taken += resample_problem(&provider, &dir, &sharded, &cfg).unwrap().run.taken;
    }
    assert_eq!(taken, chunks.len());
    for (i, expected) in chunks.iter().zip(&outputs[0]) {
        assert_eq!(&read(&sharded.join(format!("problem_7/chunk_{i}/solutions.json"))), expected, "chunk {i}");
    }
}

#[test]
fn rollouts_do_not_depend_on_the_thread_count() {
    if support::smollm2().is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = problem_dir(tmp.path());
    // The command in processes of 1, 2 and 3 threads (rayon's pool: the kernels split each
    // product and the decode groups differently), 2 chunks × 3 rollouts × 8 tokens each.
    let files: Vec<Vec<String>> = [1, 2, 3]
        .iter()
        .map(|threads| {
            let out = tmp.path().join(format!("threads_{threads}"));
            let done = std::process::Command::new(env!("CARGO_BIN_EXE_thoughtscope"))
                .env("RAYON_NUM_THREADS", threads.to_string())
                .args(["--quiet", "resample"])
                .arg(&dir)
                .args(["--model", "smollm2-135m", "--rollouts", "3", "--max-tokens", "8", "--chunks", "1,3", "--out"])
                .arg(&out)
                .output()
                .unwrap();
            assert!(done.status.success(), "{threads} threads: {}", String::from_utf8_lossy(&done.stderr));
            [1, 3].iter().map(|i| read(&out.join(format!("problem_7/chunk_{i}/solutions.json")))).collect()
        })
        .collect();
    assert_eq!(files[0], files[1], "1 and 2 threads differ");
    assert_eq!(files[0], files[2], "1 and 3 threads differ");
}

#[test]
fn a_rollout_depends_only_on_its_seed() {
    let Some(loaded) = support::smollm2() else { return };
    let provider = LocalProvider::new(&loaded, 15).unwrap();
    let settings = DecodeSettings { temperature: 0.6, top_p: 0.95, max_tokens: 6 };
    let prompt = upstream_prompt(PROBLEM);
    let together = provider.continuations(&prompt, &[11, 12, 13], &settings, &mut |_| {}).unwrap();
    let alone = provider.continuations(&prompt, &[13], &settings, &mut |_| {}).unwrap();
    let reversed = provider.continuations(&prompt, &[13, 12, 11], &settings, &mut |_| {}).unwrap();
    assert_eq!(together[2], alone[0]);
    assert_eq!(together, reversed.into_iter().rev().collect::<Vec<Continuation>>());
    assert!(together.iter().all(|c| c.new_tokens <= 6 && (c.stopped || c.new_tokens == 6)));
}

/// The re-statement of thought-anchors' loader (`analyze_rollouts.py`, `analyze_problem`):
/// every `chunk_<i>/solutions.json` read with `json`, accuracy as upstream counts it, fields and
/// their types as upstream's writer gives them.
const UPSTREAM_LOADER: &str = r#"
import json, sys
from pathlib import Path
problem_dir = Path(sys.argv[1])
chunks = json.load(open(problem_dir / "chunks.json"))["chunks"]
json.load(open(problem_dir / "problem.json")); json.load(open(problem_dir / "base_solution.json"))
fields = {"chunk_removed": str, "prefix_without_chunk": str, "chunk_resampled": str, "rollout": str,
          "full_cot": str, "answer": str, "is_correct": bool}
out = {}
for i, chunk in enumerate(chunks):
    f = problem_dir / f"chunk_{i}" / "solutions.json"
    if not f.exists():
        continue
    solutions = json.load(open(f, encoding="utf-8"))
    assert isinstance(solutions, list)
    for s in solutions:
        assert set(s) == set(fields), sorted(s)
        for k, t in fields.items():
            assert isinstance(s[k], t), (k, type(s[k]))
        assert s["chunk_removed"] == chunk
        assert s["full_cot"].endswith(s["rollout"])
    valid = [s for s in solutions if "answer" in s and "error" not in s]
    correct = sum(1 for s in solutions if s.get("is_correct", False) is True and s.get("answer", "") != "")
    total = sum(1 for s in solutions if s.get("is_correct", None) is not None and s.get("answer", "") != "")
    out[str(i)] = {"valid": len(valid), "correct": correct, "total": total}
print(json.dumps(out))
"#;

/// A provider that needs no model: texts from the seed, some with a boxed answer.
struct ScriptedProvider;

impl RolloutProvider for ScriptedProvider {
    fn identity(&self) -> ProviderIdentity {
        ProviderIdentity { provider: "scripted".into(), model: "none".into(), weights_hash: "0".into(), tokenizer: "none".into() }
    }
    fn continuations(
        &self,
        _prompt: &str,
        seeds: &[u64],
        settings: &DecodeSettings,
        on_finished: &mut dyn FnMut(usize),
    ) -> thoughtscope::Result<Vec<Continuation>> {
        Ok(seeds
            .iter()
            .map(|seed| {
                on_finished(settings.max_tokens);
                let text = match seed % 3 {
                    0 => format!(" So we add them. The answer is \\boxed{{5}}. ({seed})"),
                    1 => format!(" Hmm, maybe it is \\boxed{{6}}. ({seed})"),
                    _ => format!(" Let me think ({seed})"),
                };
                Continuation { text, new_tokens: settings.max_tokens, stopped: true }
            })
            .collect())
    }
}

#[test]
fn upstream_loader_reads_the_layout() {
    let python = support::repo().join(".venv/bin/python");
    if !python.is_file() {
        support::skip(".venv/bin/python absent: run `bash scripts/python-env.sh analysis`");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = problem_dir(tmp.path());
    let root = tmp.path().join("out");
    let report = resample_problem(&ScriptedProvider, &dir, &root, &config(12, 8, &[0, 2, 3])).unwrap();
    let problem_out = root.join("problem_7");
    let output = std::process::Command::new(&python).arg("-c").arg(UPSTREAM_LOADER).arg(&problem_out).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let loaded: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(loaded.as_object().unwrap().len(), 3, "{loaded}");
    for chunk in &report.chunks {
        let counts = &loaded[chunk.chunk_index.to_string()];
        assert_eq!(counts["valid"], 12);
        let (correct, total) = (counts["correct"].as_f64().unwrap(), counts["total"].as_f64().unwrap());
        assert!(total > 0.0 && total < 12.0, "some rollouts have no answer: {counts}");
        assert_eq!(chunk.accuracy, correct / total, "chunk {}: {counts}", chunk.chunk_index);
    }
}

#[test]
fn resume_skips_done_chunks_and_refuses_other_settings() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = problem_dir(tmp.path());
    let root = tmp.path().join("out");
    let cfg = config(3, 8, &[1, 2]);
    assert_eq!(resample_problem(&ScriptedProvider, &dir, &root, &cfg).unwrap().run.computed, 2);
    let solutions = root.join("problem_7/chunk_1/solutions.json");
    let before = read(&solutions);
    // Same settings: nothing to do. One more chunk: only that one.
    let again = resample_problem(&ScriptedProvider, &dir, &root, &cfg).unwrap();
    assert_eq!((again.run.computed, again.run.cached), (0, 2));
    let more = resample_problem(&ScriptedProvider, &dir, &root, &config(3, 8, &[1, 2, 4])).unwrap();
    assert_eq!((more.run.computed, more.run.cached), (1, 2));
    assert_eq!(read(&solutions), before);

    let changed = [
        ("temperature", ResampleConfig { decode: DecodeSettings { temperature: 0.7, ..cfg.decode.clone() }, ..cfg.clone() }),
        ("top_p", ResampleConfig { decode: DecodeSettings { top_p: 0.9, ..cfg.decode.clone() }, ..cfg.clone() }),
        ("max_tokens", ResampleConfig { decode: DecodeSettings { max_tokens: 9, ..cfg.decode.clone() }, ..cfg.clone() }),
        ("seed", ResampleConfig { seed: 1, ..cfg.clone() }),
        ("rollouts", ResampleConfig { rollouts: 4, ..cfg.clone() }),
        ("mode", ResampleConfig { mode: PrefixMode::Corrected, ..cfg.clone() }),
        ("rollout_type", ResampleConfig { rollout_type: RolloutType::ForcedAnswer, ..cfg.clone() }),
    ];
    for (field, changed) in changed {
        match resample_problem(&ScriptedProvider, &dir, &root, &changed) {
            Err(Error::CacheMismatch { field: named, path, .. }) => {
                assert_eq!(named, field);
                assert!(path.ends_with("chunk_1/resample_manifest.json"), "{}", path.display());
            }
            other => panic!("{field}: expected a refusal naming the field, got {other:?}"),
        }
    }
    assert_eq!(read(&solutions), before, "a refused run wrote nothing");

    // Rollouts nobody recorded settings for are refused too.
    std::fs::remove_file(root.join("problem_7/chunk_2/resample_manifest.json")).unwrap();
    let error = resample_problem(&ScriptedProvider, &dir, &root, &cfg).unwrap_err().to_string();
    assert!(error.contains("chunk_2") && error.contains("resample_manifest.json"), "{error}");
}

/// On upstream's published traces: every chunk is located in its trace (corrected prefixes grow
/// chunk by chunk), and where a chunk's text occurs once in the trace the faithful prefix is the
/// corrected one with the separators made single spaces.
#[test]
fn prefixes_of_published_traces() {
    let Some(root) = support::shared_data("thought-anchors-traces") else { return };
    let dirs = thoughtscope::rollout::find_problem_dirs(&root).unwrap();
    assert!(dirs.len() >= 10, "{} problem folders under {}", dirs.len(), root.display());
    let words = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let (mut compared, mut repeated) = (0, 0);
    for dir in dirs {
        let source = ResampleSource::open(&dir).unwrap();
        let all: Vec<usize> = (0..source.chunks.len()).collect();
        let faithful = chunk_prompts(&source, PrefixMode::Faithful, RolloutType::Default, &all).unwrap();
        let corrected = chunk_prompts(&source, PrefixMode::Corrected, RolloutType::Default, &all)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for pair in corrected.windows(2) {
            assert!(pair[1].prefix_without_chunk.starts_with(&pair[0].prefix_without_chunk), "{}", dir.display());
        }
        for (f, c) in faithful.iter().zip(&corrected) {
            if source.full_cot.matches(c.chunk_removed.as_str()).count() == 1 {
                assert_eq!(words(&f.prefix_without_chunk), words(&c.prefix_without_chunk), "{} chunk {}", dir.display(), f.chunk_index);
                compared += 1;
            } else {
                repeated += 1;
            }
        }
    }
    assert!(compared > 1000, "{compared} chunks compared ({repeated} repeated)");
}

#[test]
fn command_line_writes_the_layout_and_names_bad_input() {
    if support::smollm2().is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = problem_dir(tmp.path());
    let out = tmp.path().join("out");
    let run = |extra: &[&str]| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_thoughtscope"));
        command.args(["--quiet", "resample"]).arg(&dir).args(["--model", "smollm2-135m", "--out"]).arg(&out);
        command.args(["--rollouts", "2", "--max-tokens", "4"]).args(extra);
        command.output().unwrap()
    };
    let done = run(&["--chunks", "0"]);
    let stdout = String::from_utf8_lossy(&done.stdout);
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    assert!(stdout.contains("chunk_0\taccuracy") && stdout.contains("new tokens/s"), "{stdout}");
    let records: Vec<Value> = serde_json::from_str(&read(&out.join("problem_7/chunk_0/solutions.json"))).unwrap();
    assert_eq!(records.len(), 2);
    for name in ["problem.json", "base_solution.json", "chunks.json"] {
        assert!(out.join("problem_7").join(name).is_file(), "{name} not copied");
    }
    let missing = run(&["--chunks", "9"]);
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(!missing.status.success() && stderr.contains("chunk 9"), "{stderr}");
    let changed = run(&["--chunks", "0", "--seed", "5"]);
    let stderr = String::from_utf8_lossy(&changed.stderr);
    assert!(!changed.status.success() && stderr.contains("`seed`"), "{stderr}");
}
