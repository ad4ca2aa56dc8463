//! Which vector instructions the CPU kernels take: AVX-512F where the CPU has it and the settings
//! allow it, else AVX2. A leaf module, so the weight store's block conversion (`dequant`) and the
//! kernels (`cpu`) both ask it without asking each other.

use std::sync::OnceLock;

use crate::{Error, Result};

/// Whether the kernels take their AVX-512 variants: the CPU has AVX-512F and the settings allow
/// them ([`Settings::avx512`](crate::Settings::avx512)). The override measures the AVX2 kernels on
/// an AVX-512 machine; it is not the same as an AVX2-only CPU (clocks, caches and the `gemm` crate
/// under candle's own ops still see AVX-512).
///
/// Process-wide, unlike the rest of [`Kernels`](crate::Kernels): a weight packed for one vector width cannot be
/// read by the other's kernels, and the public [`sgemm`](crate::cpu::sgemm) entry points (the benches call them) have
/// no model to ask. Fixed at first use, from [`Settings::apply_process_wide`](crate::Settings::apply_process_wide)
/// or else from the environment ([`Settings::from_env`](crate::Settings::from_env)).
pub fn avx512_enabled() -> bool {
    *AVX512.get_or_init(|| cpu_has_avx512() && avx512_allowed(&crate::env::env_text))
}

static AVX512: OnceLock<bool> = OnceLock::new();

/// Fix [`avx512_enabled`] from the settings; an error if the kernels already run with the other
/// choice (it cannot change within a process).
pub(crate) fn fix_avx512(allowed: bool) -> Result<()> {
    let wanted = cpu_has_avx512() && allowed;
    let fixed = *AVX512.get_or_init(|| wanted);
    if fixed != wanted {
        return Err(Error::invalid(format!(
            "the kernels already run {} in this process: `avx512` (THOUGHTSCOPE_ISA) must be chosen before the first forward pass",
            if fixed { "with AVX-512" } else { "without AVX-512" }
        )));
    }
    Ok(())
}

fn cpu_has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether `THOUGHTSCOPE_ISA` (looked up by `text`) lets the kernels take AVX-512: unless it is
/// `avx2`. Read by [`crate::settings::Settings::from_env`], and here for kernels used before it.
pub(crate) fn avx512_allowed(text: &impl Fn(&str) -> Option<String>) -> bool {
    !text("THOUGHTSCOPE_ISA").is_some_and(|v| v.trim().eq_ignore_ascii_case("avx2"))
}

/// For the kernel tests: one `SKIP (hardware) <test>: <reason>` line straight to the test log
/// (libtest captures `eprintln!`, not the stream), for a kernel variant this CPU cannot run.
#[cfg(test)]
pub(crate) fn skip_hardware(test: &str, reason: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIP (hardware) {test}: {reason}");
}
