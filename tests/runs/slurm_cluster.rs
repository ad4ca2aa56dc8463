//! Sharding on a real scheduler: Debian's Slurm (slurmctld + slurmd + munged on this machine,
//! `scripts/slurm/local-cluster.sh`) runs thoughtscope as 4-task array jobs through the sbatch
//! templates in `scripts/slurm/`, the cache folder being the only meeting point, then the
//! dependent merge job; the merged outputs must equal a single process's byte for byte (the
//! run's provenance aside: `tests/support/outputs.rs`).
//!
//! Inputs, kept small for CI's 2 cores: the 10 sample rollouts (`va`, chunks mode) and 4 of the
//! 40 thought-anchors website traces (`attn` over a folder, chunks mode):
//! the four with the fewest characters (DeepSeek-R1-Distill-Llama-8B, problems 2189, 330, 2236
//! incorrect and 6998 correct; 24–64 chunks).
//!
//! Run 1: both arrays and the merge, undisturbed. Run 2: task 1 of the `va` array is cancelled
//! (`scancel`) while it runs, then resubmitted alone (`--array=1` with
//! `THOUGHTSCOPE_SHARD_COUNT=4`, so it keeps shard 1/4), then the merge. The cluster is stopped
//! at the end whatever happened (a drop guard). Without Slurm installed the test prints a SKIP
//! line (a failure under `THOUGHTSCOPE_NO_SKIP=1`); `scripts/install-slurm.sh` installs it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::support;

const TRACES: [&str; 4] = [
    "deepseek-r1-distill-llama-8b/incorrect_base_solution/problem_2189",
    "deepseek-r1-distill-llama-8b/incorrect_base_solution/problem_330",
    "deepseek-r1-distill-llama-8b/incorrect_base_solution/problem_2236",
    "deepseek-r1-distill-llama-8b/correct_base_solution/problem_6998",
];

/// Every job waits at most this long.
const JOB_TIMEOUT: Duration = Duration::from_secs(900);

/// The local cluster; stopped when dropped, so a failing assertion still stops it.
struct Cluster {
    dir: PathBuf,
}

impl Cluster {
    fn start(dir: &Path) -> Cluster {
        // Ports of our own, so a developer's local cluster (default 16817) can keep running.
        let port = 17000 + (std::process::id() % 1000) * 2;
        let out = Command::new("bash")
            .arg(script("local-cluster.sh"))
            .arg("start")
            .arg(dir)
            .env("SLURM_LOCAL_PORT_BASE", port.to_string())
            .output()
            .unwrap();
        let cluster = Cluster { dir: dir.to_path_buf() };
        assert!(out.status.success(), "local slurm did not start: {}{}", text(&out.stdout), text(&out.stderr));
        cluster
    }

    /// A Slurm client command talking to this cluster.
    fn client(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        command.env("SLURM_CONF", self.dir.join("slurm.conf"));
        command
    }

    fn run(&self, program: &str, args: &[&str]) -> String {
        let out = self.client(program).args(args).output().unwrap();
        assert!(out.status.success(), "{program} {args:?}: {}", text(&out.stderr));
        text(&out.stdout)
    }

    /// Submit from `work` (jobs run there: relative paths, as the single process used); returns
    /// the job id.
    fn sbatch(&self, work: &Path, args: &[String]) -> String {
        let out = self
            .client("sbatch")
            .current_dir(work)
            .arg("--parsable")
            .args(args)
            .env("THOUGHTSCOPE", env!("CARGO_BIN_EXE_thoughtscope"))
            .env_remove("SLURM_ARRAY_TASK_ID")
            .output()
            .unwrap();
        assert!(out.status.success(), "sbatch {args:?}: {}", text(&out.stderr));
        text(&out.stdout).trim().split(';').next().unwrap().to_string()
    }

    /// The jobs' (array tasks included) states, from `squeue`; empty once all have ended.
    fn queued(&self, jobs: &[&str]) -> Vec<String> {
        let out = self.client("squeue").args(["-h", "-o", "%i %T", "-j", &jobs.join(",")]).output().unwrap();
        text(&out.stdout).lines().map(str::to_string).filter(|l| !l.trim().is_empty()).collect()
    }

    fn wait(&self, jobs: &[&str]) {
        let started = Instant::now();
        while !self.queued(jobs).is_empty() {
            assert!(started.elapsed() < JOB_TIMEOUT, "jobs {jobs:?} still queued after {JOB_TIMEOUT:?}: {:?}", self.queued(jobs));
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// `JobState` of every record of a finished job (one per array task), from `scontrol`.
    fn states(&self, job: &str) -> Vec<(String, String)> {
        let shown = self.run("scontrol", &["-o", "show", "job", job]);
        shown
            .lines()
            .map(|line| {
                let field = |name: &str| {
                    line.split_whitespace().find_map(|w| w.strip_prefix(name)).unwrap_or("?").to_string()
                };
                (format!("{}_{}", field("ArrayJobId="), field("ArrayTaskId=")), format!("{} {}", field("JobState="), field("ExitCode=")))
            })
            .collect()
    }

    fn assert_completed(&self, job: &str, work: &Path) {
        for (task, state) in self.states(job) {
            assert!(state == "COMPLETED 0:0", "job {task}: {state}\n{}", logs(work));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("bash").arg(script("local-cluster.sh")).arg("stop").arg(&self.dir).status();
    }
}

fn script(name: &str) -> PathBuf {
    support::repo().join("scripts/slurm").join(name)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The jobs' output files in `work`, for failure messages and the log.
fn logs(work: &Path) -> String {
    let mut names: Vec<PathBuf> = std::fs::read_dir(work)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "out"))
        .collect();
    names.sort();
    names.iter().map(|p| format!("--- {}\n{}", p.display(), std::fs::read_to_string(p).unwrap_or_default())).collect()
}

fn slurm_installed() -> bool {
    ["slurmctld", "slurmd", "munged", "sbatch", "squeue", "scancel", "scontrol"]
        .iter()
        .all(|tool| Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().is_ok_and(|o| o.status.success()))
}

/// `work/root`: the 10 sample rollouts; `work/traces`: the 4 real traces (unique names).
fn make_inputs(work: &Path, traces: &Path) {
    let root = work.join("root");
    std::fs::create_dir_all(&root).unwrap();
    let samples = support::repo().join("rollouts/apple_boxes");
    for entry in std::fs::read_dir(&samples).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            std::os::unix::fs::symlink(&path, root.join(path.file_name().unwrap())).unwrap();
        }
    }
    let linked = work.join("traces");
    std::fs::create_dir_all(&linked).unwrap();
    for trace in TRACES {
        std::os::unix::fs::symlink(traces.join(trace), linked.join(trace.replace('/', "-"))).unwrap();
    }
}

fn va_args() -> Vec<String> {
    ["va", "--root", "root", "--cache-dir", "cache", "--out", "out", "--html-only"].map(String::from).to_vec()
}

fn attn_args() -> Vec<String> {
    ["attn", "traces", "--mode", "chunks", "--cache-dir", "cache"].map(String::from).to_vec()
}

fn single_process(work: &Path, args: &[String]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_thoughtscope"))
        .current_dir(work)
        .arg("--quiet")
        .args(args)
        .env_remove("SLURM_ARRAY_TASK_ID")
        .output()
        .unwrap();
    assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    out
}

fn array(template: &str, extra: &[&str], args: &[String]) -> Vec<String> {
    let mut all: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    all.push(script(template).display().to_string());
    all.extend(args.iter().cloned());
    all
}

/// The outputs of `work` equal the reference's, file for file and byte for byte (provenance
/// masked); hidden files may only be temporaries of killed writes.
fn assert_same_outputs(reference: &Path, work: &Path, what: &str) {
    let (want, _) = support::outputs::outputs(reference, &["out", "cache"]);
    let (got, hidden) = support::outputs::outputs(work, &["out", "cache"]);
    assert!(want.len() > 20, "reference has only {} files", want.len());
    let missing: Vec<_> = want.keys().filter(|p| !got.contains_key(*p)).collect();
    let extra: Vec<_> = got.keys().filter(|p| !want.contains_key(*p)).collect();
    assert!(missing.is_empty() && extra.is_empty(), "{what}: missing {missing:?}, extra {extra:?}\n{}", logs(work));
    for (path, bytes) in &want {
        assert!(got[path] == *bytes, "{what}: {} differs from the single process's\n{}", path.display(), logs(work));
    }
    for path in &hidden {
        let name = path.file_name().unwrap().to_string_lossy();
        assert!(name.contains(".tmp-") || name.contains(".old-"), "{what}: unexpected hidden {}", path.display());
    }
}

#[test]
fn array_jobs_and_merge_equal_one_process_even_with_a_task_cancelled() {
    if !slurm_installed() {
        support::skip("Debian's slurm-wlm and munge are not installed (bash scripts/install-slurm.sh)");
        return;
    }
    let Some(traces) = support::shared_data("thought-anchors-traces") else { return };
    if support::smollm2().is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();

    // The single process.
    let reference = tmp.path().join("single");
    make_inputs(&reference, &traces);
    let started = Instant::now();
    single_process(&reference, &va_args());
    single_process(&reference, &attn_args());
    let single = started.elapsed();

    let cluster = Cluster::start(&tmp.path().join("slurm"));

    // Run 1: two 4-task arrays, then the merge once both succeeded.
    let work = tmp.path().join("array");
    make_inputs(&work, &traces);
    let started = Instant::now();
    let va = cluster.sbatch(&work, &array("array-cpu.sbatch", &["--array=0-3", "--cpus-per-task=1", "--mem=2G"], &va_args()));
    let attn = cluster.sbatch(&work, &array("array-cpu.sbatch", &["--array=0-3", "--cpus-per-task=1", "--mem=2G"], &attn_args()));
    let merge_after = format!("--dependency=afterok:{va}:{attn}");
    let merge = cluster.sbatch(&work, &array("merge.sbatch", &[&merge_after, "--mem=2G"], &va_args()));
    cluster.wait(&[&va, &attn, &merge]);
    let parallel = started.elapsed();
    for job in [&va, &attn, &merge] {
        cluster.assert_completed(job, &work);
    }
    eprintln!("{}", logs(&work));
    assert_same_outputs(&reference, &work, "4-task arrays + merge");
    let merged = logs(&work);
    assert!(merged.contains("no forward pass (10 rollouts from the attention cache)"), "the merge ran a forward pass:\n{merged}");
    let shard_lines = merged.lines().filter(|l| l.starts_with("shard ")).count();
    assert_eq!(shard_lines, 8, "every task prints its shard line:\n{merged}");
    let status = single_process(&work, &["cache", "status", "cache", "--root", "traces", "--mode", "chunks", "--check"].map(String::from));
    assert!(text(&status.stdout).contains("4 problems, 4 cached, 0 missing"), "{}", text(&status.stdout));

    // Run 2: task 1 of the va array cancelled mid-run, resubmitted alone, then the merge.
    let work = tmp.path().join("cancelled");
    make_inputs(&work, &traces);
    let va = cluster.sbatch(&work, &array("array-cpu.sbatch", &["--array=0-3", "--cpus-per-task=1", "--mem=2G"], &va_args()));
    let attn = cluster.sbatch(&work, &array("array-cpu.sbatch", &["--array=0-3", "--cpus-per-task=1", "--mem=2G"], &attn_args()));
    let task = format!("{va}_1");
    let started = Instant::now();
    while !cluster.queued(&[&task]).iter().any(|l| l.ends_with("RUNNING")) {
        assert!(started.elapsed() < JOB_TIMEOUT, "task {task} never ran");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Into the model load or the forward passes of its shard (each takes seconds).
    std::thread::sleep(Duration::from_millis(2500));
    cluster.run("scancel", &[&task]);
    cluster.wait(&[&va, &attn]);
    let states = cluster.states(&va);
    let cancelled = states.iter().find(|(t, _)| *t == task).map(|(_, s)| s.clone()).unwrap_or_default();
    assert!(cancelled.starts_with("CANCELLED"), "task {task} was not cancelled mid-run: {states:?}\n{}", logs(&work));
    let rerun = cluster.sbatch(
        &work,
        &array("array-cpu.sbatch", &["--array=1", "--cpus-per-task=1", "--mem=2G", "--export=ALL,THOUGHTSCOPE_SHARD_COUNT=4"], &va_args()),
    );
    let merge_after = format!("--dependency=afterok:{rerun}");
    let merge = cluster.sbatch(&work, &array("merge.sbatch", &[&merge_after, "--mem=2G"], &va_args()));
    cluster.wait(&[&rerun, &merge]);
    for job in [&rerun, &merge] {
        cluster.assert_completed(job, &work);
    }
    eprintln!("{}", logs(&work));
    assert!(logs(&work).contains("shard 1/4:"), "the resubmitted task kept shard 1/4:\n{}", logs(&work));
    assert_same_outputs(&reference, &work, "cancelled task resubmitted + merge");

    eprintln!(
        "slurm timing: single process (va over 10 rollouts + attn over 4 traces) {:.1} s; two 4-task arrays + merge on the local Slurm {:.1} s",
        single.as_secs_f64(),
        parallel.as_secs_f64()
    );
    drop(cluster);
}
