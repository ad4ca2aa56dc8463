//! Fault test: `va` and `attn` killed (SIGKILL) at random moments and run again leave exactly the
//! outputs of an uninterrupted run, byte for byte: every file of the output folder and of the
//! attention cache. The one exception is the run's own provenance, which says what the rerun did
//! (`forward_passes` and the headline, each rollout's `cache`: `hit` or `computed`); it is masked
//! before the comparison (tests/support/outputs.rs, shared with the Slurm test). Hidden temporaries a killed write leaves behind (`.name.tmp-…`) are
//! allowed and must be the only extra files; no reader takes them for results.
//!
//! Trials: `THOUGHTSCOPE_FAULT_TRIALS` (default 4, split between `va` and `attn`);
//! `scripts/fault-test.sh` runs 20.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::support;

/// Three sample rollouts, linked into `dir/root`.
fn make_root(dir: &Path) {
    let root = dir.join("root");
    std::fs::create_dir_all(&root).unwrap();
    let samples = support::repo().join("rollouts/apple_boxes");
    for name in ["rollout_00", "rollout_01", "rollout_02"] {
        std::os::unix::fs::symlink(samples.join(name), root.join(name)).unwrap();
    }
}

/// The command of one job, run in `dir` with relative paths (so outputs that record their paths
/// are the same in every trial folder).
fn job(kind: &str, dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_thoughtscope"));
    command.current_dir(dir).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    match kind {
        "va" => command.args(["va", "--quiet", "--root", "root", "--cache-dir", "cache", "--out", "out", "--html-only"]),
        _ => command.args(["attn", "root/rollout_01", "--quiet", "--cache-dir", "cache", "--layout", "thought-anchors"]),
    };
    command
}

#[test]
fn killed_runs_rerun_to_the_uninterrupted_outputs() {
    if support::smollm2().is_none() {
        return;
    }
    let trials: usize = std::env::var("THOUGHTSCOPE_FAULT_TRIALS").ok().and_then(|v| v.parse().ok()).unwrap_or(4);
    let tmp = tempfile::tempdir().unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(19);
    for kind in ["va", "attn"] {
        let reference = tmp.path().join(format!("{kind}-reference"));
        make_root(&reference);
        let started = Instant::now();
        assert!(job(kind, &reference).status().unwrap().success(), "uninterrupted {kind} failed");
        let duration = started.elapsed();
        let (want, _) = support::outputs::outputs(&reference, &["out", "cache"]);
        assert!(!want.is_empty());
        for trial in 0..trials.div_ceil(2) {
            let dir = tmp.path().join(format!("{kind}-{trial}"));
            make_root(&dir);
            // Kill anywhere from the start to the end of an uninterrupted run.
            let at = Duration::from_secs_f64(rng.random_range(0.02..1.0) * duration.as_secs_f64());
            let mut child = job(kind, &dir).spawn().unwrap();
            std::thread::sleep(at);
            let _ = child.kill();
            let killed = child.wait().unwrap();
            assert!(job(kind, &dir).status().unwrap().success(), "{kind} trial {trial}: the rerun failed");
            let (got, hidden) = support::outputs::outputs(&dir, &["out", "cache"]);
            let missing: Vec<_> = want.keys().filter(|p| !got.contains_key(*p)).collect();
            let extra: Vec<_> = got.keys().filter(|p| !want.contains_key(*p)).collect();
            assert!(missing.is_empty() && extra.is_empty(), "{kind} trial {trial} (killed at {at:?}): missing {missing:?}, extra {extra:?}");
            for (path, bytes) in &want {
                assert!(got[path] == *bytes, "{kind} trial {trial} (killed at {at:?}, {killed}): {} differs", path.display());
            }
            for path in &hidden {
                let name = path.file_name().unwrap().to_string_lossy();
                assert!(name.contains(".tmp-") || name.contains(".old-"), "{kind} trial {trial}: unexpected hidden {}", path.display());
            }
        }
    }
}
