//! Memory a model's weights will take, known before a byte of them is read, so a model that
//! cannot fit says so with the numbers instead of being killed by the kernel half-way through a
//! load (issue 16).

use std::io::Read;
use std::path::Path;

use candle_core::quantized::{gguf_file, GgmlDType};
use candle_core::Device;

use super::stored::WeightPrecision;
use super::weights::safetensors_files;
use crate::{Error, Result};

/// Bytes the weights of the GGUF file or HF directory at `path` take once loaded at `precision`
/// (matrices as stored or in f32, vectors in f32), from the files' headers.
pub fn expected_weight_bytes(path: &Path, precision: WeightPrecision) -> Result<u64> {
    let mut total = 0u64;
    let mut add = |elements: u64, stored_bytes: u64, rank: usize| {
        total += if precision == WeightPrecision::Stored && rank == 2 { stored_bytes } else { elements * 4 };
    };
    if path.is_dir() {
        for file in safetensors_files(path)? {
            for (elements, element_bytes, rank) in safetensors_header(&file)? {
                add(elements, elements * element_bytes.min(4), rank);
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

/// `(elements, bytes per element, rank)` of every tensor in a safetensors file's header.
fn safetensors_header(file: &Path) -> Result<Vec<(u64, u64, usize)>> {
    let mut reader = std::fs::File::open(file).map_err(|e| Error::io(file, e))?;
    let mut length = [0u8; 8];
    reader.read_exact(&mut length).map_err(|e| Error::io(file, e))?;
    let length = u64::from_le_bytes(length);
    if length > 100 << 20 {
        return Err(Error::format(file, format!("safetensors header of {length} bytes")));
    }
    let mut header = vec![0u8; length as usize];
    reader.read_exact(&mut header).map_err(|e| Error::io(file, e))?;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&header).map_err(|e| Error::format(file, format!("safetensors header: {e}")))?;
    let mut tensors = Vec::new();
    for (name, entry) in header.iter().filter(|(name, _)| *name != "__metadata__") {
        let field = |f: &str| entry.get(f).ok_or_else(|| Error::format(file, format!("tensor `{name}`: no field `{f}`")));
        let dtype = field("dtype")?.as_str().unwrap_or_default();
        let element_bytes = match dtype {
            "F64" | "I64" | "U64" => 8,
            "F32" | "I32" | "U32" => 4,
            "F16" | "BF16" | "I16" | "U16" => 2,
            _ => 1,
        };
        let shape: Vec<u64> = field("shape")?.as_array().map(|dims| dims.iter().filter_map(|d| d.as_u64()).collect()).unwrap_or_default();
        tensors.push((shape.iter().product(), element_bytes, shape.len()));
    }
    Ok(tensors)
}

/// `MemAvailable` of `/proc/meminfo` in bytes (`None` where there is no such file).
pub fn available_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Refuse, before reading any weights, a model whose weights alone exceed the memory available.
/// `THOUGHTSCOPE_SKIP_MEMORY_CHECK=1` turns the check off (e.g. under a cgroup limit lower or
/// higher than what `/proc/meminfo` shows).
pub fn check_weights_fit(path: &Path, precision: WeightPrecision, device: &Device) -> Result<()> {
    if !device.is_cpu() || std::env::var_os("THOUGHTSCOPE_SKIP_MEMORY_CHECK").is_some_and(|v| v != "0") {
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
