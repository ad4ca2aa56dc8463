//! The portable path (`model::set_portable`): process-wide, so these tests have a binary of their
//! own and take turns through [`portable_switch`].
//!
//! One test binary per area, one module per topic: the suite links a few binaries, not one per file.

#[path = "../support/mod.rs"]
mod support;

mod model_path;
mod suppression_batch;

/// Holds the process-wide kernel switch for one test: each test sets it as it needs while holding
/// this, so no other test here runs on a switch it did not choose.
fn portable_switch() -> std::sync::MutexGuard<'static, ()> {
    static SWITCH: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SWITCH.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
