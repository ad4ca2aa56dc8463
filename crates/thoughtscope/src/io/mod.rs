//! Files: atomic writes (a temporary file beside the target, fsync, rename: a reader never sees
//! a half-written file, and a killed run leaves only a dot-file), JSON in and out with errors that
//! name the file, `.npy` arrays ([`npy`]) and the `--shard i/n` split of a run's work ([`shard`]).
//! The writes are the model crate's ([`thoughtscope_model::io`], which writes its own memos with
//! them), returning this library's [`Error`].

pub mod npy;
pub mod shard;

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

pub use thoughtscope_model::io::{
    check_folder_or_absent, check_replaceable, path_component, read_bounded, read_text_bounded, RunLock, INCOMPLETE_MARKER,
    INPUT_LIMIT, OUTPUT_MARKER,
};

use crate::{Error, Result};

/// Replace `path` by `bytes` atomically, creating its folder (see the module doc).
pub fn write_atomic(path: impl AsRef<Path>, bytes: &[u8]) -> Result<()> {
    Ok(thoughtscope_model::io::write_atomic(path, bytes)?)
}

/// `value` as pretty JSON (two-space indent, a final newline), written atomically.
pub(crate) fn write_json<T: Serialize + ?Sized>(path: impl AsRef<Path>, value: &T) -> Result<()> {
    Ok(thoughtscope_model::io::write_json(path, value)?)
}

/// Parse a JSON file into `T`; a shape error names the file and serde's line and column.
pub(crate) fn read_json<T: DeserializeOwned>(path: impl AsRef<Path>) -> Result<T> {
    Ok(thoughtscope_model::io::read_json(path)?)
}

/// Write a whole output folder at once (the model crate's
/// [`write_folder_atomically`](thoughtscope_model::io::write_folder_atomically): a staging folder
/// swapped in when `write` succeeds, removed when it fails), for a `write` returning this
/// library's errors.
pub fn write_folder_atomically<T>(out: &Path, write: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
    let mut failure: Option<Error> = None;
    let outcome = thoughtscope_model::io::write_folder_atomically(out, |staging| match write(staging) {
        Ok(value) => Ok(value),
        Err(e) => {
            failure = Some(e);
            // Only makes the swap give up; the caller gets `failure` itself.
            Err(thoughtscope_model::Error::Other("writing the staging folder failed".into()))
        }
    });
    match (outcome, failure) {
        (_, Some(e)) => Err(e),
        (Ok(value), None) => Ok(value),
        (Err(e), None) => Err(e.into()),
    }
}

/// Whether `out` is written in place rather than swapped in: one of `inside` (a cache the run
/// reads and fills) lies in it, and replacing the folder would throw that away.
fn written_in_place(out: &Path, inside: &[&Path]) -> bool {
    let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    inside.iter().any(|p| absolute(p).starts_with(absolute(out)))
}

/// What [`write_output_folder`] will need of `out`, checked before any work: a folder it may
/// replace ([`check_replaceable`]), or, written in place, a folder or nothing.
pub fn check_output_folder(out: &Path, inside: &[&Path]) -> Result<()> {
    if written_in_place(out, inside) {
        Ok(check_folder_or_absent(out)?)
    } else {
        Ok(check_replaceable(out)?)
    }
}

/// [`write_folder_atomically`], unless one of `inside` (a cache the run reads and fills) lies in
/// `out`: then `write` gets `out` itself and the files are written in place, each atomically.
pub fn write_output_folder<T>(out: &Path, inside: &[&Path], write: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
    if written_in_place(out, inside) {
        std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
        return write(out);
    }
    write_folder_atomically(out, write)
}

/// Take `dir` for a long, resumable run (the model crate's
/// [`begin_run`](thoughtscope_model::io::begin_run)): a lock, so a second run on the same folder
/// (or the same `part`, a shard) fails at once naming the first, and an `INCOMPLETE` file until
/// [`RunLock::finish`].
pub fn begin_run(dir: &Path, command: &str, part: Option<&str>) -> Result<RunLock> {
    Ok(thoughtscope_model::io::begin_run(dir, command, part)?)
}
