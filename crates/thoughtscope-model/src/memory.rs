//! Memory a model's weights will take, known before a byte of them is read, so a model that
//! cannot fit says so with the numbers instead of being killed by the kernel half-way through a
//! load.

use std::path::Path;

use candle_core::quantized::{gguf_file, GgmlDType};
use candle_core::Device;

use super::stored::WeightPrecision;
use super::safetensors_header::{read_safetensors_header, safetensors_element_bytes};
use super::weights::safetensors_files;
use crate::{Error, Result};

pub use crate::allocation::{check_allocatable, try_vec, try_with_capacity, LARGE_BUFFER};

/// Bytes the weights of the GGUF file or HF directory at `path` take once loaded at `precision`
/// (matrices as stored or in f32, vectors in f32), from the files' headers.
pub fn expected_weight_bytes(path: &Path, precision: WeightPrecision) -> Result<u64> {
    let mut total = 0u64;
    let mut add = |elements: u64, stored_bytes: u64, rank: usize| {
        total += if precision == WeightPrecision::Stored && rank == 2 { stored_bytes } else { elements * 4 };
    };
    if path.is_dir() {
        for file in safetensors_files(path)? {
            for tensor in read_safetensors_header(&file)?.1 {
                let elements: u64 = tensor.shape.iter().map(|&d| d as u64).product();
                let element_bytes = safetensors_element_bytes(&tensor.dtype) as u64;
                add(elements, elements * element_bytes.min(4), tensor.shape.len());
            }
        }
    } else {
        let mut reader = std::io::BufReader::new(std::fs::File::open(path).map_err(|e| Error::io(path, e))?);
        let content = gguf_file::Content::read(&mut reader)
            .map_err(|e| Error::format(path, format!("not a readable GGUF file: {e}")))?;
        for info in content.tensor_infos.values() {
            let elements: u64 = info.shape.dims().iter().map(|&d| d as u64).product();
            let dtype = info.ggml_dtype;
            let stored = if dtype == GgmlDType::F32 {
                elements * 4
            } else {
                elements / dtype.block_size() as u64 * dtype.type_size() as u64
            };
            add(elements, stored, info.shape.rank());
        }
    }
    Ok(total)
}

/// `MemAvailable` of `/proc/meminfo` in bytes (`None` where there is no such file).
pub fn available_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Refuse, before reading any weights, a model whose weights alone exceed the memory available.
/// [`Model::load`](crate::Model::load) skips it when [`Settings::memory_check`](crate::Settings::memory_check)
/// is off (e.g. under a cgroup limit lower or higher than what `/proc/meminfo` shows).
pub(crate) fn check_weights_fit(path: &Path, precision: WeightPrecision, device: &Device) -> Result<()> {
    if !device.is_cpu() {
        return Ok(());
    }
    let Some(available) = available_memory() else { return Ok(()) };
    let needed = expected_weight_bytes(path, precision)?;
    if needed > available {
        let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
        let hint = match precision {
            WeightPrecision::F32 => " (`--weights stored` keeps bf16/f16 and GGUF blocks as they are)",
            WeightPrecision::Stored => " (a quantised GGUF of the model takes less)",
        };
        return Err(Error::format(
            path,
            format!(
                "the weights need {:.1} GiB at {precision:?} precision and {:.1} GiB of memory is available (MemAvailable){hint}",
                gib(needed),
                gib(available)
            ),
        ));
    }
    Ok(())
}
