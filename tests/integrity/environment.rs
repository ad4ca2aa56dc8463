//! Failures of the machine fail the command; special files are refused, not read forever.
//!
//! - A `--cache-dir` that is a file, a full disk or a read-only cache fail `va` (non-zero),
//!   instead of becoming per-rollout statuses with exit 0 (`no rollout could be analysed`).
//! - A `va --shard` task with failed rollouts exits non-zero, so a Slurm `afterok` dependency
//!   does not fire.
//! - A symlink to `/dev/zero` as `base_solution.json` or as a thought-anchors head is an error
//!   naming the file, not a read until the OOM killer ends the process.

use std::path::{Path, PathBuf};

use thoughtscope::analysis::{run_va, VaConfig};
use thoughtscope::Error;

fn sample_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("rollouts/apple_boxes")
}

#[test]
fn environmental_errors_are_told_apart_from_data_problems() {
    use std::io::{Error as IoError, ErrorKind};
    for kind in [ErrorKind::StorageFull, ErrorKind::ReadOnlyFilesystem, ErrorKind::NotADirectory, ErrorKind::PermissionDenied] {
        let error = Error::io("/cache/x.npy", IoError::from(kind));
        assert!(error.is_environmental(), "{kind:?}");
        assert!(error.context("rollout r1").is_environmental(), "{kind:?} under a context");
    }
    assert!(!Error::io("/r/base_solution.json", IoError::from(ErrorKind::NotFound)).is_environmental());
    assert!(!Error::format("/r/chunks.json", "field `chunks`: expected a list").is_environmental());
}

#[test]
fn va_with_a_cache_dir_that_is_a_file_fails_before_any_work() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("cache");
    std::fs::write(&file, b"not a folder").unwrap();
    let config = VaConfig { root: sample_root(), cache_dir: file.clone(), out: Some(tmp.path().join("out")), figures: false, ..Default::default() };
    let error = match run_va(&config) {
        Ok(result) => panic!("va succeeded with a cache dir that is a file: {}", result.headline()),
        Err(e) => e,
    };
    assert!(error.is_environmental(), "{error}");
    assert!(error.to_string().contains(&file.display().to_string()), "{error}");
    assert!(!tmp.path().join("out").exists(), "nothing written");

    // The CLI exits non-zero.
    let exe = env!("CARGO_BIN_EXE_thoughtscope");
    let out = std::process::Command::new(exe)
        .args(["va", "--root"])
        .arg(sample_root())
        .arg("--cache-dir")
        .arg(&file)
        .arg("--out")
        .arg(tmp.path().join("out"))
        .output()
        .unwrap();
    assert!(!out.status.success(), "exit 0: {}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a folder"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_va_shard_with_failed_rollouts_exits_non_zero() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("rollouts");
    let broken = root.join("rollout_0");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("chunks.json"), b"{ not json").unwrap();
    let exe = env!("CARGO_BIN_EXE_thoughtscope");
    let out = std::process::Command::new(exe)
        .args(["va", "--shard", "0/1", "--root"])
        .arg(&root)
        .arg("--cache-dir")
        .arg(tmp.path().join("cache"))
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("1 failed"), "{stdout}\n{stderr}");
    assert!(!out.status.success(), "a shard with a failed rollout exited 0: {stdout}");
    assert!(stderr.contains("1 of 1 rollouts failed"), "{stderr}");
}

#[cfg(unix)]
#[test]
fn a_symlink_to_dev_zero_is_refused_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let rollout = tmp.path().join("rollout_0");
    std::fs::create_dir_all(&rollout).unwrap();
    std::os::unix::fs::symlink("/dev/zero", rollout.join("base_solution.json")).unwrap();
    let err = thoughtscope::rollout::Rollout::open(&rollout).unwrap_err().to_string();
    assert!(err.contains("base_solution.json") && err.contains("not a regular file"), "{err}");

    let entry = tmp.path().join("entry");
    std::fs::create_dir_all(&entry).unwrap();
    std::os::unix::fs::symlink("/dev/zero", entry.join("0_0.npy")).unwrap();
    let err = thoughtscope::attention::read_upstream_head(&entry, 0, 0, 3).unwrap_err().to_string();
    assert!(err.contains("0_0.npy") && err.contains("not a regular file"), "{err}");
    let err = thoughtscope::attention::read_upstream_dir(&entry).unwrap_err().to_string();
    assert!(err.contains("0_0.npy") && err.contains("not a regular file"), "{err}");
}
