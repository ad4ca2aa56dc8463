//! The header of a safetensors file (an 8-byte length, then JSON naming each tensor's dtype, shape
//! and byte range), read without the data: the loader checks it before mapping matrices, and the
//! memory estimate sums it before loading anything.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use crate::{Error, Result};

/// One tensor entry of a safetensors header.
#[derive(Debug, Clone)]
pub(crate) struct HeaderTensor {
    pub name: String,
    /// safetensors' dtype name (`BF16`, `F32`, ...).
    pub dtype: String,
    pub shape: Vec<usize>,
    /// `data_offsets`, relative to the data start (`None` when the field is not two offsets).
    pub offsets: Option<(usize, usize)>,
}

/// Bytes per element of a safetensors dtype name.
pub(crate) fn safetensors_element_bytes(dtype: &str) -> usize {
    match dtype {
        "F64" | "I64" | "U64" => 8,
        "F32" | "I32" | "U32" => 4,
        "F16" | "BF16" | "I16" | "U16" => 2,
        _ => 1,
    }
}

/// The header at the start of `bytes` (the 8-byte length, then the JSON; the data may follow or
/// not): the data's start offset and every tensor entry. Errors name `file`.
pub(crate) fn parse_safetensors_header(bytes: &[u8], file: &Path) -> Result<(usize, Vec<HeaderTensor>)> {
    let bad = |what: String| Error::format(file, what);
    let length: [u8; 8] = bytes.get(..8).and_then(|b| b.try_into().ok()).ok_or_else(|| bad("shorter than a safetensors header".into()))?;
    let length = u64::from_le_bytes(length);
    if length > 100 << 20 {
        return Err(bad(format!("safetensors header of {length} bytes")));
    }
    let data_start = 8 + length as usize;
    let json = bytes.get(8..data_start).ok_or_else(|| bad(format!("safetensors header of {length} bytes")))?;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(json).map_err(|e| bad(format!("safetensors header: {e}")))?;
    let numbers = |value: Option<&serde_json::Value>| -> Vec<usize> {
        value.and_then(|v| v.as_array()).map(|a| a.iter().filter_map(|x| x.as_u64().map(|x| x as usize)).collect()).unwrap_or_default()
    };
    let mut tensors = Vec::with_capacity(header.len());
    for (name, entry) in header.iter().filter(|(name, _)| *name != "__metadata__") {
        let dtype = entry
            .get("dtype")
            .and_then(|d| d.as_str())
            .ok_or_else(|| bad(format!("tensor `{name}`: no field `dtype`")))?
            .to_string();
        if entry.get("shape").is_none() {
            return Err(bad(format!("tensor `{name}`: no field `shape`")));
        }
        let offsets = match numbers(entry.get("data_offsets"))[..] {
            [begin, end] => Some((begin, end)),
            _ => None,
        };
        tensors.push(HeaderTensor { name: name.clone(), dtype, shape: numbers(entry.get("shape")), offsets });
    }
    Ok((data_start, tensors))
}

/// The header of the safetensors `file`, read without its data.
pub(crate) fn read_safetensors_header(file: &Path) -> Result<(usize, Vec<HeaderTensor>)> {
    let mut reader = File::open(file).map_err(|e| Error::io(file, e))?;
    let mut length = [0u8; 8];
    reader.read_exact(&mut length).map_err(|e| Error::io(file, e))?;
    let json_length = u64::from_le_bytes(length).min((100 << 20) + 1) as usize;
    let mut bytes = length.to_vec();
    bytes.resize(8 + json_length, 0);
    reader.read_exact(&mut bytes[8..]).map_err(|e| Error::io(file, e))?;
    parse_safetensors_header(&bytes, file)
}
