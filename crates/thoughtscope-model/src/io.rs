//! Files: atomic writes (a temporary file beside the target, fsync, rename: a reader never sees
//! a half-written file, and a killed run leaves only a dot-file), and JSON in and out with errors
//! that name the file. The analysis library's `thoughtscope::io` re-exports these and adds `.npy`
//! arrays.

use std::io::Write;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{Error, Result};

mod output;
pub use output::{begin_run, check_replaceable, write_folder_atomically, RunLock, INCOMPLETE_MARKER, OUTPUT_MARKER};

/// Replace `path` by `bytes` atomically, creating its folder: write `.<name>.tmp-<pid>-<n>`
/// beside it, fsync, rename. On failure the temporary file is removed.
pub fn write_atomic(path: impl AsRef<Path>, bytes: &[u8]) -> Result<()> {
    let path = path.as_ref();
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let name = path
        .file_name()
        .ok_or_else(|| Error::invalid(format!("{}: not a file path", path.display())))?
        .to_string_lossy()
        .into_owned();
    static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let unique = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.tmp-{}-{unique}", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

/// `name` made safe as one path component under a root: `/` and `\\` become `--`, NUL and other
/// control characters `_`, leading dots `_` (so `..` cannot climb out of the root and a name
/// never collides with the hidden temporaries beside it), and an empty name `_`. Plain names
/// (`smollm2-135m`, `65c133c9cf042207`) come back unchanged, and so does any name this returned.
pub fn path_component(name: &str) -> String {
    let mut safe = String::with_capacity(name.len() + 1);
    let mut leading = true;
    for c in name.chars() {
        leading &= c == '.';
        match c {
            '/' | '\\' => safe.push_str("--"),
            '.' if leading => safe.push('_'),
            c if c.is_control() => safe.push('_'),
            c => safe.push(c),
        }
    }
    if safe.is_empty() {
        safe.push('_');
    }
    safe
}

/// `value` as pretty JSON (two-space indent, a final newline), written atomically.
pub fn write_json<T: Serialize + ?Sized>(path: impl AsRef<Path>, value: &T) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value).map_err(|e| Error::format(path.as_ref(), format!("JSON: {e}")))?;
    text.push('\n');
    write_atomic(path, text.as_bytes())
}

/// The most bytes an input file (JSON, `.npy`) is read to: far beyond any real rollout, result or
/// attention matrix, and a clear error instead of the memory running out.
pub const INPUT_LIMIT: u64 = 8 << 30;

/// The bytes of `path`, which must be a regular file (a symlink to one is fine) of at most
/// `limit` bytes: a device (`/dev/zero`), FIFO or folder would be read until memory runs out or
/// forever, so it is an error naming the file.
pub fn read_bounded(path: impl AsRef<Path>, limit: u64) -> Result<Vec<u8>> {
    use std::io::Read;
    let path = path.as_ref();
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let metadata = file.metadata().map_err(|e| Error::io(path, e))?;
    if !metadata.is_file() {
        return Err(Error::format(path, "not a regular file (a device, FIFO or folder): refusing to read it"));
    }
    if metadata.len() > limit {
        return Err(Error::format(path, format!("{} bytes, more than the {limit} bytes an input may have", metadata.len())));
    }
    let mut bytes = crate::allocation::try_with_capacity(metadata.len() as usize, &format!("reading {}", path.display()))?;
    // `take`: a file that grows while it is read still stops at the bound.
    file.take(limit + 1).read_to_end(&mut bytes).map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 > limit {
        return Err(Error::format(path, format!("grew past the {limit} bytes an input may have while being read")));
    }
    Ok(bytes)
}

/// [`read_bounded`] as UTF-8 text (an error naming the file otherwise).
pub fn read_text_bounded(path: impl AsRef<Path>, limit: u64) -> Result<String> {
    let path = path.as_ref();
    String::from_utf8(read_bounded(path, limit)?).map_err(|e| Error::format(path, format!("not UTF-8 text: {e}")))
}

/// `path` is a folder or does not exist yet (it is then created when first written): a file
/// there (a `--cache-dir` given a file) fails now, before any work, as an environmental error
/// ([`Error::is_environmental`]).
pub fn check_folder_or_absent(path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    match std::fs::metadata(path) {
        Ok(m) if !m.is_dir() => Err(Error::io(
            path,
            std::io::Error::new(
                std::io::ErrorKind::NotADirectory,
                if m.is_file() { "exists and is a file, not a folder" } else { "exists and is not a folder" },
            ),
        )),
        _ => Ok(()),
    }
}

/// Parse a JSON file into `T`; a shape error names the file and serde's line and column.
pub fn read_json<T: DeserializeOwned>(path: impl AsRef<Path>) -> Result<T> {
    let path = path.as_ref();
    let text = read_text_bounded(path, INPUT_LIMIT)?;
    serde_json::from_str(&text).map_err(|e| Error::format(path, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_creates_the_folder_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/c.json");
        write_json(&path, &serde_json::json!({"x": 1})).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\n  \"x\": 1\n}\n");
        write_atomic(&path, b"{}").unwrap();
        assert_eq!(read_json::<serde_json::Value>(&path).unwrap(), serde_json::json!({}));
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["c.json"]);
        let err = read_json::<Vec<u32>>(&path).unwrap_err().to_string();
        assert!(err.contains("c.json"), "{err}");
        assert!(write_atomic(dir.path().join(".."), b"").is_err());
    }

    #[test]
    fn path_components_stay_inside_their_root() {
        for (name, safe) in [
            ("smollm2-135m", "smollm2-135m"),
            ("org/name", "org--name"),
            ("a\\b", "a--b"),
            ("..", "__"),
            (".", "_"),
            ("...", "___"),
            (".hidden", "_hidden"),
            ("_.x", "_.x"),
            ("\0..", "_.."),
            ("a..b", "a..b"),
            ("", "_"),
            ("nul\0byte", "nul_byte"),
        ] {
            assert_eq!(path_component(name), safe, "{name:?}");
            assert_eq!(path_component(safe), safe, "idempotent on {safe:?}");
        }
    }
}
