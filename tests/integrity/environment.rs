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

#[cfg(unix)]
#[test]
fn a_fifo_as_an_input_is_refused_not_waited_on() {
    let tmp = tempfile::tempdir().unwrap();
    let rollout = tmp.path().join("rollout_0");
    std::fs::create_dir_all(&rollout).unwrap();
    let fifo = rollout.join("base_solution.json");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    // Opening a FIFO for reading blocks until a writer comes: a writer that never writes lets the
    // open return, and the read would then wait forever without the check.
    let writer = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            let _held = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
            std::thread::sleep(std::time::Duration::from_secs(3));
        })
    };
    let started = std::time::Instant::now();
    let err = thoughtscope::rollout::Rollout::open(&rollout).unwrap_err().to_string();
    assert!(err.contains("base_solution.json") && err.contains("not a regular file"), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(2), "waited on the FIFO");
    writer.join().unwrap();
}

/// A full disk or an exhausted quota while the attention cache is filled fails `va` (non-zero,
/// naming the file), instead of becoming one rollout's status under exit 0 (`no rollout could be
/// analysed`). The file-size limit (`ulimit -f`, with SIGXFSZ ignored so the write fails with
/// EFBIG) stands in for the full disk: both are errors of the machine, not of the rollout.
#[cfg(target_os = "linux")]
#[test]
fn va_fails_when_the_cache_cannot_be_written_instead_of_reporting_a_rollout_status() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("rollouts");
    std::fs::create_dir_all(&root).unwrap();
    std::os::unix::fs::symlink(sample_root().join("rollout_00"), root.join("rollout_00")).unwrap();
    crate::support::tiny_model_with_tokenizer(&tmp.path().join("model"), 16_384);
    let output = std::process::Command::new("bash")
        .arg("-c")
        .arg("trap '' XFSZ && ulimit -f 8 && exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_thoughtscope"))
        .args(["va", "--quiet", "--no-figures", "--permutations", "10", "--root"])
        .arg(&root)
        .arg("--model")
        .arg(tmp.path().join("model"))
        .arg("--cache-dir")
        .arg(tmp.path().join("cache"))
        .arg("--out")
        .arg(tmp.path().join("out"))
        .env("THOUGHTSCOPE_HASH_MEMO", "off")
        .env("THOUGHTSCOPE_PROGRESS", "off")
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(!output.status.success(), "exit 0 although the cache could not be written: {stdout}");
    assert!(stderr.contains("cache") && stderr.contains("File too large"), "{stderr}");
    assert!(!stdout.contains("no rollout could be analysed"), "{stdout}");
    assert!(!tmp.path().join("out").exists(), "no results written");
}
