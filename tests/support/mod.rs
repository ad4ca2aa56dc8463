//! Shared by the test binaries that need the real SmolLM2 GGUF.

use candle_core::Device;
use thoughtscope::model::{Loaded, Model};

/// SmolLM2-135M from `models/` (scripts/fetch-model.sh), or `None` with a skip message.
pub fn smollm2() -> Option<Loaded> {
    match Model::load("smollm2-135m", &Device::Cpu) {
        Ok(m) => Some(m),
        Err(e) => {
            eprintln!("skipped: SmolLM2 GGUF absent ({e}); run scripts/fetch-model.sh");
            None
        }
    }
}
