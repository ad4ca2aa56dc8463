//! An output folder is replaced as a whole: a run that fails (or is killed) half-way leaves the
//! previous complete folder, files of earlier settings do not linger beside new ones, and no
//! staging folder is left behind. A folder thoughtscope did not write is never replaced.
//!
//! `suppress`, `anchors`, `blackbox`, `codi make-model`, each `generate` rollout and `va` swap
//! their folder in; before, all but `va` rewrote it file by file, so a run killed (SIGTERM)
//! between two files left one run's matrix beside another run's manifest (which a rerun then
//! read back as its own), and an earlier trace's suppression stayed beside the new one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use thoughtscope::analysis::{run_va, VaConfig};
use thoughtscope::io::{write_folder_atomically, OUTPUT_MARKER};

use crate::support;

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

#[test]
fn a_failed_write_leaves_the_previous_folder_and_a_good_one_replaces_it_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    write_folder_atomically(&out, |dir| {
        std::fs::write(dir.join("tables.csv"), b"first").unwrap();
        std::fs::write(dir.join("old_figure.png"), b"png").unwrap();
        Ok(())
    })
    .unwrap();
    assert_eq!(names(&out), [OUTPUT_MARKER, "old_figure.png", "tables.csv"]);
    // A run that fails half-way: the first run's folder is untouched.
    let err = write_folder_atomically(&out, |dir| -> thoughtscope::Result<()> {
        std::fs::write(dir.join("tables.csv"), b"second, half done").unwrap();
        Err(thoughtscope::Error::invalid("killed half-way"))
    })
    .unwrap_err();
    assert!(err.to_string().contains("killed half-way"));
    assert_eq!(std::fs::read(out.join("tables.csv")).unwrap(), b"first");
    // A complete second run replaces everything: the old figure does not linger.
    write_folder_atomically(&out, |dir| {
        std::fs::write(dir.join("tables.csv"), b"second").unwrap();
        Ok(())
    })
    .unwrap();
    assert_eq!(names(&out), [OUTPUT_MARKER, "tables.csv"]);
    assert_eq!(names(tmp.path()), ["out"], "no staging or old folder left behind");
}

#[test]
fn va_replaces_its_output_folder_as_a_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("va");
    std::fs::create_dir_all(&out).unwrap();
    // An earlier run's folder (its marker says thoughtscope wrote it as a whole).
    std::fs::write(out.join(OUTPUT_MARKER), b"").unwrap();
    std::fs::write(out.join("figure_of_earlier_settings.html"), b"old").unwrap();
    let config = VaConfig {
        root: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("rollouts/apple_boxes"),
        cache_dir: tmp.path().join("cache"),
        out: Some(out.clone()),
        run_attention: false,
        figures: false,
        ..Default::default()
    };
    let result = run_va(&config).unwrap();
    assert_eq!(result.out_dir, out);
    assert_eq!(names(&out), [OUTPUT_MARKER, "index.html", "va_counts.csv"]);
    assert!(!std::fs::read_to_string(out.join("index.html")).unwrap().contains(".staging-"));
    assert_eq!(names(tmp.path()), ["va"]);
}

#[test]
fn a_folder_thoughtscope_did_not_write_is_never_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    // A mistyped --out: a folder of someone's files.
    let out = tmp.path().join("papers");
    std::fs::create_dir_all(out.join("drafts")).unwrap();
    std::fs::write(out.join("notes.txt"), b"mine").unwrap();
    let err = write_folder_atomically(&out, |dir| {
        std::fs::write(dir.join("tables.csv"), b"x").unwrap();
        Ok(())
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("papers") && err.contains(OUTPUT_MARKER) && err.contains("new or empty folder"), "{err}");
    assert_eq!(names(&out), ["drafts", "notes.txt"]);
    assert_eq!(names(tmp.path()), ["papers"], "no staging folder left behind");
    // The commands check it before any work.
    let config = VaConfig { root: sample_root(), cache_dir: tmp.path().join("cache"), out: Some(out.clone()), figures: false, ..Default::default() };
    let err = run_va(&config).map(|r| r.headline()).unwrap_err().to_string();
    assert!(err.contains(OUTPUT_MARKER), "{err}");
    assert!(!tmp.path().join("cache").exists(), "no attention computed");
    // An empty folder is fine, and so is one that holds only folders thoughtscope wrote (a
    // notebook's suppression run before the anchors analysis into the same folder).
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    write_folder_atomically(&empty, |dir| Ok(std::fs::write(dir.join("a.csv"), b"a").unwrap())).unwrap();
    assert_eq!(names(&empty), [OUTPUT_MARKER, "a.csv"]);
    let analysis = tmp.path().join("analysis");
    write_folder_atomically(&analysis.join("suppression/trace_1"), |dir| Ok(std::fs::write(dir.join("m.npy"), b"m").unwrap())).unwrap();
    write_folder_atomically(&analysis, |dir| Ok(std::fs::write(dir.join("index.html"), b"i").unwrap())).unwrap();
    assert_eq!(names(&analysis), [OUTPUT_MARKER, "index.html"]);
}

#[test]
fn staging_folders_of_killed_runs_are_cleared_by_the_next_run() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    // What a run killed half-way leaves: a staging folder named after a process that is gone.
    let gone = Command::new("true").spawn().unwrap();
    let pid = gone.id();
    let mut gone = gone;
    gone.wait().unwrap();
    let abandoned = tmp.path().join(format!(".out.staging-{pid}-0"));
    std::fs::create_dir_all(&abandoned).unwrap();
    std::fs::write(abandoned.join("half.csv"), b"half").unwrap();
    write_folder_atomically(&out, |dir| Ok(std::fs::write(dir.join("a.csv"), b"a").unwrap())).unwrap();
    assert_eq!(names(tmp.path()), ["out"]);
}

#[test]
fn concurrent_swaps_leave_one_complete_folder_and_a_reader_never_sees_a_mix() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let writers: Vec<_> = (0..6)
        .map(|w| {
            let out = out.clone();
            std::thread::spawn(move || {
                for round in 0..10 {
                    write_folder_atomically(&out, |dir| {
                        for f in 0..4 {
                            std::fs::write(dir.join(format!("f{f}.txt")), format!("{w}-{round}")).unwrap();
                        }
                        Ok(())
                    })
                    .unwrap();
                }
            })
        })
        .collect();
    let mut seen = 0;
    while writers.iter().any(|w| !w.is_finished()) {
        if let Some(files) = consistent_snapshot(&out) {
            let values: std::collections::BTreeSet<_> = files.values().collect();
            assert_eq!(files.len(), 5, "{files:?}");
            assert_eq!(values.len(), 2, "one run's files only (and the marker): {files:?}");
            seen += 1;
        }
    }
    writers.into_iter().for_each(|w| w.join().unwrap());
    let files = consistent_snapshot(&out).unwrap();
    assert_eq!(files.values().collect::<std::collections::BTreeSet<_>>().len(), 2);
    assert_eq!(names(tmp.path()), ["out"]);
    eprintln!("{seen} consistent snapshots read during the swaps");
}

fn sample_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("rollouts/apple_boxes")
}

/// The plain files of the folder at `dir` as one state of it: read through a handle of the
/// folder (so a swap while reading cannot mix two folders), and `None` when the folder at `dir`
/// changed meanwhile (the handle's folder may then be half deleted) or is absent.
fn consistent_snapshot(dir: &Path) -> Option<BTreeMap<String, Vec<u8>>> {
    use std::os::unix::fs::MetadataExt;
    let handle = std::fs::File::open(dir).ok()?;
    let inode = handle.metadata().ok()?.ino();
    let through = PathBuf::from(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&handle)));
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(&through).ok()? {
        let entry = entry.ok()?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type().ok()?.is_file() && !name.contains(".tmp-") {
            files.insert(name, std::fs::read(entry.path()).ok()?);
        }
    }
    (std::fs::metadata(dir).ok()?.ino() == inode).then_some(files)
}

/// A problem folder of `n` chunks for the tiny model's word-level vocabulary.
fn tiny_problem(dir: &Path, n: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let chunks: Vec<String> = (0..n).map(|i| format!("Tom buys {} apples and eats {} more each day .", i % 50, (i * 7) % 50)).collect();
    std::fs::write(dir.join("chunks.json"), serde_json::json!({ "chunks": chunks }).to_string()).unwrap();
    std::fs::write(dir.join("base_solution.json"), serde_json::json!({ "full_cot": chunks.join("\n") }).to_string()).unwrap();
}

fn suppress(work: &Path, out: &str, temperature: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_thoughtscope"));
    command
        .current_dir(work)
        .args(["suppress", "problem", "--quiet", "--model", "model", "--mode", "chunks", "--temperature", temperature, "--out", out])
        .env("THOUGHTSCOPE_PROGRESS", "off")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    command
}

fn run_ok(mut command: Command) -> Duration {
    let started = Instant::now();
    let output = command.output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    started.elapsed()
}

#[test]
fn suppress_killed_or_watched_shows_the_old_or_the_new_folder_never_a_mix() {
    let work = tempfile::tempdir().unwrap();
    let work = work.path();
    support::tiny_model_with_tokenizer(&work.join("model"), 4096);
    tiny_problem(&work.join("problem"), 24);
    // The two complete folders: temperature 0.6 and 0.7 (every file differs).
    let duration = run_ok(suppress(work, "ref-a", "0.6"));
    run_ok(suppress(work, "ref-b", "0.7"));
    let complete = |name: &str| consistent_snapshot(&work.join(name)).unwrap();
    let (a, b) = (complete("ref-a"), complete("ref-b"));
    assert!(a.contains_key(OUTPUT_MARKER) && a.len() == 6, "{:?}", a.keys());
    for (name, bytes) in &a {
        assert!(name == OUTPUT_MARKER || b[name] != *bytes, "{name} is the same for both settings");
    }
    let which = |files: &BTreeMap<String, Vec<u8>>| -> &'static str {
        if *files == a {
            "a"
        } else if *files == b {
            "b"
        } else {
            "a mix"
        }
    };

    // Watched: while `b` replaces `a`, every state of the folder is one of the two.
    run_ok(suppress(work, "out", "0.6"));
    let mut child = suppress(work, "out", "0.7").spawn().unwrap();
    let mut states = BTreeMap::new();
    while child.try_wait().unwrap().is_none() {
        if let Some(files) = consistent_snapshot(&work.join("out")) {
            let state = which(&files);
            assert_ne!(state, "a mix", "a reader saw {:?}", files.keys());
            *states.entry(state).or_insert(0) += 1;
        }
    }
    assert!(child.wait().unwrap().success());
    assert_eq!(which(&complete("out")), "b");
    eprintln!("states seen while replacing: {states:?}");

    // Killed (SIGTERM) anywhere in a run: the old folder or the new one, never a mix.
    let mut rng = ChaCha8Rng::seed_from_u64(29);
    for trial in 0..6 {
        let before = which(&complete("out"));
        let temperature = if before == "a" { "0.7" } else { "0.6" };
        let mut child = suppress(work, "out", temperature).spawn().unwrap();
        std::thread::sleep(duration.mul_f64(rng.random_range(0.05..1.1)));
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let status = child.wait().unwrap();
        let after = which(&complete("out"));
        assert_ne!(after, "a mix", "trial {trial} ({status}): {:?}", complete("out").keys());
    }
    // A rerun after the kills reads its own run back or computes it; never another's numbers.
    run_ok(suppress(work, "out", "0.6"));
    assert_eq!(which(&complete("out")), "a");
}

/// Every file under `dir` (relative path), hidden ones included.
fn tree(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        for entry in std::fs::read_dir(&path).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                found.push(path.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    found.sort();
    found
}

#[test]
fn anchors_replaces_its_folder_and_an_earlier_traces_suppression_does_not_linger() {
    use thoughtscope::analysis::anchors::{run_anchors, AnchorsConfig};
    use thoughtscope::scores::ReceiverOptions;
    let work = tempfile::tempdir().unwrap();
    let work = work.path();
    support::tiny_model_with_tokenizer(&work.join("model"), 4096);
    let traces = work.join("traces");
    for name in ["rollout_00", "rollout_04"] {
        support::cut_rollout(&traces, name, 6);
    }
    let config = |trace: &str| AnchorsConfig {
        traces: traces.clone(),
        model: work.join("model").display().to_string(),
        cache_dir: work.join("cache"),
        out: work.join("out"),
        receiver: ReceiverOptions { top_k: 4, ..ReceiverOptions::default() },
        suppression_trace: Some(traces.join(trace)),
        min_sentences: 4,
        permutations: 20,
        ..AnchorsConfig::default()
    };
    let first = run_anchors(&config("rollout_00")).unwrap();
    assert!(first.suppression_computed);
    let second = run_anchors(&config("rollout_04")).unwrap();
    assert!(second.suppression_computed);
    let files = tree(&work.join("out"));
    assert!(files.iter().any(|f| f.starts_with("suppression/rollout_04/")), "{files:?}");
    assert!(!files.iter().any(|f| f.contains("rollout_00")), "the earlier trace's suppression lingers: {files:?}");
    for file in &second.files {
        assert!(file.starts_with(work.join("out")) && file.is_file(), "{}", file.display());
        let text = String::from_utf8_lossy(&std::fs::read(file).unwrap()).into_owned();
        assert!(!text.contains(".staging-"), "{} names the staging folder", file.display());
    }
    assert!(second.suppression_files.matrix.starts_with(work.join("out/suppression/rollout_04")));
    // The same trace again: its suppression is read back from the folder being replaced.
    let third = run_anchors(&config("rollout_04")).unwrap();
    assert!(!third.suppression_computed, "read back, not recomputed");
    assert_eq!(third.suppression.values.len(), second.suppression.values.len());
    assert_eq!(tree(&work.join("out")), files);
    let siblings = names(work);
    assert_eq!(siblings, ["cache", "model", "out", "traces"], "no staging folder left");
}
