//! The process-wide parts of the settings, made current by `Settings::apply_process_wide`: the
//! progress settings of every reporter made afterwards, and the kernels' instruction set, which
//! is fixed once per process.

use thoughtscope::model::cpu::avx512_enabled;
use thoughtscope::model::{Settings, WeightPrecision};
use thoughtscope::progress::{progress, progress_mode, ProgressMode, ProgressSettings};

#[test]
fn applied_progress_settings_reach_every_new_reporter() {
    let _turn = crate::serial();
    Settings { progress: ProgressSettings::quiet(), ..Settings::default() }.apply_process_wide().unwrap();
    assert_eq!(progress_mode(), ProgressMode::Off);
    assert_eq!(progress(10, "x").mode(), ProgressMode::Off);
    let bar = ProgressSettings { mode: Some(ProgressMode::Bar), ..ProgressSettings::default() };
    Settings { progress: bar, ..Settings::default() }.apply_process_wide().unwrap();
    assert_eq!(progress_mode(), ProgressMode::Bar);
    // Only the process-wide parts: what a model load takes stays in the value passed to it.
    Settings { weights: WeightPrecision::F32, progress: ProgressSettings::quiet(), ..Settings::default() }.apply_process_wide().unwrap();
    assert_eq!(progress_mode(), ProgressMode::Off);
}

#[test]
fn the_instruction_set_cannot_change_once_the_kernels_chose_it() {
    let _turn = crate::serial();
    let enabled = avx512_enabled();
    Settings { avx512: enabled, progress: ProgressSettings::quiet(), ..Settings::default() }.apply_process_wide().unwrap();
    let other = Settings { avx512: !enabled, progress: ProgressSettings::quiet(), ..Settings::default() }.apply_process_wide();
    #[cfg(target_arch = "x86_64")]
    let has_avx512 = std::arch::is_x86_feature_detected!("avx512f");
    #[cfg(not(target_arch = "x86_64"))]
    let has_avx512 = false;
    if has_avx512 {
        let err = other.unwrap_err().to_string();
        assert!(err.contains("THOUGHTSCOPE_ISA") && err.contains("before the first forward pass"), "{err}");
    } else {
        // Without AVX-512F the kernels never take it: either choice is the same.
        other.unwrap();
    }
    assert_eq!(avx512_enabled(), enabled);
}
