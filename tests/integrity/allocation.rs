//! Under a low `ulimit -v`, a buffer too large for the memory left is an error naming it and its
//! size, with exit status 1: before, Rust's allocation-failure handler aborted the process
//! (SIGABRT, status 134) with no error line of ours.

use std::path::Path;
use std::process::{Command, Output};

use crate::support;

/// The address space the child may use: room for the binary, its libraries and the tiny model,
/// far less than the attention of the large input below.
const LIMIT_KIB: u64 = 2 << 20;

/// A problem folder of `n` one-word chunks.
fn problem(dir: &Path, n: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let chunks = vec!["Tom"; n];
    std::fs::write(dir.join("chunks.json"), serde_json::json!({ "chunks": chunks }).to_string()).unwrap();
    std::fs::write(dir.join("base_solution.json"), serde_json::json!({ "full_cot": chunks.join("\n") }).to_string()).unwrap();
}

/// `attn` on `problem` under the address-space limit, the `MemAvailable` check off (so the
/// allocation itself is what fails) and two worker threads (thread stacks count against the limit).
fn attn_under_limit(work: &Path, problem: &Path) -> Output {
    let script = format!("ulimit -v {LIMIT_KIB} && exec \"$0\" \"$@\"");
    Command::new("bash")
        .arg("-c")
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_thoughtscope"))
        .args(["attn", "--quiet", "--mode", "chunks", "--boundaries", "offsets", "--model"])
        .arg(work.join("model"))
        .arg("--cache-dir")
        .arg(work.join("cache"))
        .arg(problem)
        .env("THOUGHTSCOPE_SKIP_MEMORY_CHECK", "1")
        .env("RAYON_NUM_THREADS", "2")
        .env("THOUGHTSCOPE_PROGRESS", "off")
        .output()
        .unwrap()
}

#[cfg(target_os = "linux")]
#[test]
fn attn_under_a_low_address_space_limit_fails_naming_the_buffer_not_aborting() {
    use std::os::unix::process::ExitStatusExt;
    let work = tempfile::tempdir().unwrap();
    support::tiny_model_with_tokenizer(&work.path().join("model"), 100_000);

    // A small input runs under the same limit: the limit leaves room for everything else.
    problem(&work.path().join("small"), 40);
    let small = attn_under_limit(work.path(), &work.path().join("small"));
    assert!(small.status.success(), "small input under the limit: {}", String::from_utf8_lossy(&small.stderr));

    // 12,000 chunks: 2 layers × 4 heads × 12,000² float32 = 4.6 GB, more than the 2 GiB limit.
    problem(&work.path().join("large"), 12_000);
    let large = attn_under_limit(work.path(), &work.path().join("large"));
    let stderr = String::from_utf8_lossy(&large.stderr);
    assert_eq!(large.status.signal(), None, "killed by a signal (abort): {stderr}");
    assert_eq!(large.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one error line: {stderr}");
    for needle in ["out of memory", "sentence attention", "2 layers × 4 heads × 12000 × 12000", "4608000000 bytes", "ulimit -v"] {
        assert!(stderr.contains(needle), "{needle:?} missing: {stderr}");
    }
}
