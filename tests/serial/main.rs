//! Tests of what is process-wide on purpose: the progress settings and the kernels' instruction
//! set ([`thoughtscope::model::Settings::apply_process_wide`]), and the forward's phase sums
//! (`model::cpu::phases`). Each holds [`serial`] throughout, so they take turns and none runs on a
//! setting another test chose; the other binaries never change them.
//!
//! One test binary per area, one module per topic: the suite links a few binaries, not one per file.

#[path = "../support/mod.rs"]
mod support;

mod phases;
mod process_settings;

/// Held by each test here for its whole run: what it changes is process-wide.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
