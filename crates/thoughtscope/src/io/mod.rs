//! Files: atomic writes (a temporary file beside the target, fsync, rename: a reader never sees
//! a half-written file, and a killed run leaves only a dot-file), JSON in and out with errors that
//! name the file, `.npy` arrays ([`npy`]) and the `--shard i/n` split of a run's work ([`shard`]).
//! The writes are the model crate's ([`thoughtscope_model::io`], which writes its own memos with
//! them), returning this library's [`Error`](crate::Error).

pub mod npy;
pub mod shard;

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

pub use thoughtscope_model::io::path_component;

use crate::Result;

/// Replace `path` by `bytes` atomically, creating its folder (see the module doc).
pub fn write_atomic(path: impl AsRef<Path>, bytes: &[u8]) -> Result<()> {
    Ok(thoughtscope_model::io::write_atomic(path, bytes)?)
}

/// `value` as pretty JSON (two-space indent, a final newline), written atomically.
pub fn write_json<T: Serialize + ?Sized>(path: impl AsRef<Path>, value: &T) -> Result<()> {
    Ok(thoughtscope_model::io::write_json(path, value)?)
}

/// Parse a JSON file into `T`; a shape error names the file and serde's line and column.
pub fn read_json<T: DeserializeOwned>(path: impl AsRef<Path>) -> Result<T> {
    Ok(thoughtscope_model::io::read_json(path)?)
}
