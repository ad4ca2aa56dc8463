//! Long, resumable runs (`resample`, `generate`, `codi run-all` and every CODI step's results file)
//! write their folder in place, so they hold a lock on it: a second run on the same folder (or the
//! same shard) fails at once naming the first, instead of both writing the same files; shards of
//! one folder still run side by side. Until a run has finished, its folder holds `INCOMPLETE`
//! (`INCOMPLETE.<part>` for a shard or a results file), which a failed or killed run leaves behind.
//! Before, two concurrent runs interleaved their writes and nothing marked a half-done folder.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Mutex;

use serde_json::json;
use thoughtscope::codi::{run_ablation, AblationMode, AblationOptions};
use thoughtscope::codi::runner::meta::lock_results;
use thoughtscope::codi::{CodiModel, LoadOptions, LoopMode, LoopOptions};
use thoughtscope::io::shard::Shard;
use thoughtscope::io::{begin_run, INCOMPLETE_MARKER};
use thoughtscope::model::Settings;
use thoughtscope::rollout::generate::upstream_prompt;
use thoughtscope::rollout::resample::{
    resample_problem, Continuation, DecodeSettings, ProviderIdentity, ResampleConfig, RolloutProvider,
};

use crate::codi_support;

/// A problem folder in thought-anchors' layout with three chunks.
fn problem_dir(root: &Path) -> PathBuf {
    let dir = root.join("problem_7");
    std::fs::create_dir_all(&dir).unwrap();
    let (problem, solution) = ("What is 2 plus 3?", "I need 2 plus 3. The sum is 5. So the answer is \\boxed{5}.");
    let prompt = upstream_prompt(problem);
    let write = |name: &str, value: serde_json::Value| std::fs::write(dir.join(name), value.to_string()).unwrap();
    write("problem.json", json!({"problem": problem, "gt_answer": "5", "level": "Level 1", "type": "Prealgebra"}));
    write("base_solution.json", json!({"prompt": prompt, "solution": solution, "full_cot": format!("{prompt}{solution}"), "answer": "5", "is_correct": true}));
    let chunks = ["I need 2 plus 3.", "The sum is 5.", "So the answer is \\boxed{5}."];
    write("chunks.json", json!({"source_text": format!("{prompt}{solution}"), "solution_text": solution, "chunks": chunks}));
    dir
}

fn config(shard: Option<Shard>) -> ResampleConfig {
    ResampleConfig { rollouts: 2, decode: DecodeSettings { temperature: 0.6, top_p: 0.95, max_tokens: 8 }, shard, ..ResampleConfig::default() }
}

/// Continuations without a model; `gate`, when set, is waited on before the first chunk (the run
/// is then in flight for as long as the test wants), and `fail_at` fails that call.
#[derive(Default)]
struct Provider {
    gate: Option<(mpsc::Sender<()>, Mutex<mpsc::Receiver<()>>)>,
    fail_at: Option<usize>,
    calls: Mutex<usize>,
}

impl RolloutProvider for Provider {
    fn identity(&self) -> ProviderIdentity {
        ProviderIdentity { provider: "scripted".into(), model: "none".into(), weights_hash: "0".into(), tokenizer: "none".into() }
    }
    fn continuations(
        &self,
        _prompt: &str,
        seeds: &[u64],
        _settings: &DecodeSettings,
        _on_finished: &mut dyn FnMut(usize),
    ) -> thoughtscope::Result<Vec<Continuation>> {
        let call = {
            let mut calls = self.calls.lock().unwrap();
            *calls += 1;
            *calls
        };
        if let Some((entered, release)) = &self.gate {
            if call == 1 {
                entered.send(()).unwrap();
                release.lock().unwrap().recv().unwrap();
            }
        }
        if self.fail_at == Some(call) {
            return Err(thoughtscope::Error::invalid("the provider failed"));
        }
        Ok(seeds.iter().map(|s| Continuation { text: format!(" The answer is \\boxed{{5}}. ({s})"), new_tokens: 4, stopped: true }).collect())
    }
}

#[test]
fn a_second_resample_on_the_same_folder_fails_naming_the_first_and_shards_run_side_by_side() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = problem_dir(tmp.path());
    let out = tmp.path().join("out");
    let folder = out.join("problem_7");
    let (entered, wait_entered) = mpsc::channel();
    let (release, wait_release) = mpsc::channel();
    let gated = Provider { gate: Some((entered, Mutex::new(wait_release))), ..Provider::default() };
    std::thread::scope(|scope| {
        let first = scope.spawn(|| resample_problem(&gated, &dir, &out, &config(None)));
        wait_entered.recv().unwrap();
        // The first run is in flight: its folder says so, and a second run is refused.
        let marker = std::fs::read_to_string(folder.join(INCOMPLETE_MARKER)).unwrap();
        assert!(marker.contains("thoughtscope resample") && marker.contains("incomplete"), "{marker}");
        let err = resample_problem(&Provider::default(), &dir, &out, &config(None)).unwrap_err().to_string();
        assert!(err.contains("problem_7") && err.contains("`thoughtscope resample`") && err.contains("is writing this folder now"), "{err}");
        let shard = Shard { index: 0, count: 2 };
        let err = resample_problem(&Provider::default(), &dir, &out, &config(Some(shard))).unwrap_err().to_string();
        assert!(err.contains("is writing this folder now"), "a shard beside a whole run: {err}");
        release.send(()).unwrap();
        first.join().unwrap().unwrap();
    });
    assert!(!folder.join(INCOMPLETE_MARKER).exists(), "a finished run removes its marker");

    // Shards of one folder run side by side; the same shard twice does not.
    let other = tmp.path().join("sharded");
    let held = begin_run(&other.join("problem_7"), "resample", Some("shard-0-of-2")).unwrap();
    let report = resample_problem(&Provider::default(), &dir, &other, &config(Some(Shard { index: 1, count: 2 }))).unwrap();
    assert_eq!(report.run.shard, Some(Shard { index: 1, count: 2 }));
    assert!(!other.join("problem_7/INCOMPLETE.shard-1-of-2").exists());
    let err = resample_problem(&Provider::default(), &dir, &other, &config(Some(Shard { index: 0, count: 2 }))).unwrap_err().to_string();
    assert!(err.contains("shard-0-of-2") && err.contains("is writing this folder now"), "{err}");
    let err = resample_problem(&Provider::default(), &dir, &other, &config(None)).unwrap_err().to_string();
    assert!(err.contains("sharded runs"), "a whole run beside a shard: {err}");
    drop(held);
    resample_problem(&Provider::default(), &dir, &other, &config(None)).unwrap();
}

#[test]
fn a_failed_resample_leaves_its_folder_marked_incomplete_until_a_rerun_finishes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = problem_dir(tmp.path());
    let out = tmp.path().join("out");
    let failing = Provider { fail_at: Some(2), ..Provider::default() };
    assert!(resample_problem(&failing, &dir, &out, &config(None)).is_err());
    let marker = out.join("problem_7").join(INCOMPLETE_MARKER);
    assert!(marker.is_file(), "the failed run's folder is marked incomplete");
    let report = resample_problem(&Provider::default(), &dir, &out, &config(None)).unwrap();
    assert_eq!((report.run.computed, report.run.cached), (2, 1), "the rerun resumes");
    assert!(!marker.exists());
}

#[test]
fn a_second_run_of_a_codi_step_or_of_run_all_on_the_same_files_fails_at_once() {
    let root = tempfile::tempdir().unwrap();
    let codi = CodiModel::load(&codi_support::tiny_codi(root.path()), &LoadOptions::default(), &Settings::default()).unwrap();
    let out = root.path().join("results/ablation_results_test.json");
    let mut loop_options = LoopOptions::for_mode(LoopMode::Cotx);
    loop_options.max_new_tokens = 2;
    let mut options = AblationOptions::new(loop_options, AblationMode::Faithful);
    options.layer = 2;
    // Another process is writing the same results file.
    let held = lock_results(&out, "ablate").unwrap();
    let err = run_ablation(&codi, &codi_support::problems()[..1], &options, &out).map(|_| ()).unwrap_err().to_string();
    assert!(err.contains("`thoughtscope codi ablate` (ablation_results_test.json)") && err.contains("is writing this folder now"), "{err}");
    assert!(!out.exists(), "nothing written");
    drop(held);
    run_ablation(&codi, &codi_support::problems()[..1], &options, &out).unwrap();
    assert!(out.is_file() && !root.path().join("results/INCOMPLETE.ablation_results_test.json").exists());

    // run-all takes its whole folder before any model work.
    let all = root.path().join("experiments");
    let _held = begin_run(&all, "codi run-all", None).unwrap();
    let spec = thoughtscope::codi::ModelSpec::checkpoint(root.path().join("codi"));
    let options = thoughtscope::codi::pipeline::RunAllOptions::new(spec, all.clone());
    let err = thoughtscope::codi::pipeline::run_all(&options, &Settings::default()).map(|_| ()).unwrap_err().to_string();
    assert!(err.contains("`thoughtscope codi run-all`") && err.contains("is writing this folder now"), "{err}");
}
