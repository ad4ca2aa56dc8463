//! Tests that flip a process-wide switch: the portable path (`model::set_portable`) and the
//! forward's phase timers (`model::cpu::phases`). Each holds [`serial`] throughout, so they take
//! turns and none runs on a switch another test chose; the other binaries never touch them.
//!
//! One test binary per area, one module per topic: the suite links a few binaries, not one per file.

#[path = "../support/mod.rs"]
mod support;

mod nan_attention;
mod phases;
mod portable_model_path;
mod portable_suppression_batch;

/// Held by each test here for its whole run: the switches it sets are process-wide. Dropping it
/// (at the end of the test, or as a failed test unwinds) puts the portable switch back as it was.
fn serial() -> Turn {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let lock = TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    Turn { portable: thoughtscope::model::portable(), _lock: lock }
}

struct Turn {
    portable: bool,
    _lock: std::sync::MutexGuard<'static, ()>,
}

impl Drop for Turn {
    fn drop(&mut self) {
        thoughtscope::model::set_portable(self.portable);
    }
}
