//! Shared by the test binaries: the real SmolLM2 GGUF, `../shared/data`, Chromium, and the one
//! rule for tests that cannot run here.
//!
//! A test that returns early checks nothing, so a skip is loud: it writes one `SKIP` line straight
//! to the test log (past libtest's output capture), and under `THOUGHTSCOPE_NO_SKIP=1` (set by
//! `.ci/run`) it fails the test instead. Only a missing CPU feature or GPU ([`skip_hardware`]) is
//! never a failure: CI cannot choose its processor.
#![allow(dead_code)]

pub mod outputs;

use std::fmt::Display;
use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::Device;
use thoughtscope::model::{Loaded, Model};

/// Set by `.ci/run`: every skip except [`skip_hardware`] fails the test.
pub const NO_SKIP_VAR: &str = "THOUGHTSCOPE_NO_SKIP";

fn log_line(line: &str) {
    // Straight to the process's stderr: libtest captures `eprintln!`, not the stream itself.
    let _ = writeln!(std::io::stderr(), "{line}");
}

fn current_test() -> String {
    std::thread::current().name().unwrap_or("?").to_owned()
}

/// This test cannot check what it is for here (`reason` says what is missing and how to get it).
/// Prints `SKIP <test>: <reason>`; panics instead when [`NO_SKIP_VAR`] is set.
pub fn skip(reason: impl Display) {
    let test = current_test();
    if std::env::var(NO_SKIP_VAR).is_ok_and(|v| !v.is_empty() && v != "0") {
        panic!("{test}: would skip ({reason}), and {NO_SKIP_VAR} forbids skips");
    }
    log_line(&format!("SKIP {test}: {reason}"));
}

/// Like [`skip`] for a missing CPU feature or GPU: printed, never a failure.
pub fn skip_hardware(reason: impl Display) {
    log_line(&format!("SKIP (hardware) {}: {reason}", current_test()));
}

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `../shared/data/<relative>` if it exists, else a [`skip`] and `None`.
pub fn shared_data(relative: &str) -> Option<PathBuf> {
    let path = repo().join("../shared/data").join(relative);
    if path.exists() {
        Some(path)
    } else {
        skip(format!("{} absent (the shared data set beside the clone)", path.display()));
        None
    }
}

/// SmolLM2-135M from `models/` (scripts/fetch-model.sh), else a [`skip`] and `None`.
pub fn smollm2() -> Option<Loaded> {
    match Model::load("smollm2-135m", &Device::Cpu) {
        Ok(m) => Some(m),
        Err(e) => {
            skip(format!("SmolLM2 GGUF absent ({e}); run scripts/fetch-model.sh"));
            None
        }
    }
}

/// Whether headless Chromium can render figures; else a [`skip`].
pub fn chromium() -> bool {
    if thoughtscope::plot::static_export_available() {
        true
    } else {
        skip(thoughtscope::plot::export::CHROMIUM_MISSING);
        false
    }
}

/// A committed fixture: its absence is a broken checkout, never a skip.
pub fn fixture(relative: impl AsRef<Path>) -> PathBuf {
    let path = repo().join("tests/fixtures").join(relative);
    assert!(path.exists(), "committed fixture {} is missing", path.display());
    path
}
