//! Output folders. A one-shot command's results are swapped in as a whole
//! ([`write_folder_atomically`]): a run killed half-way leaves the previous complete folder, and
//! of two concurrent runs one complete folder wins. A long, resumable run writes in place and
//! instead holds a lock on its folder and marks it incomplete until it is done ([`begin_run`]):
//! a second run on the same folder fails at once, naming the first.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use super::{check_folder_or_absent, write_atomic};
use crate::{Error, Result};

/// The hidden file every folder written by [`write_folder_atomically`] carries. A later run
/// replaces only a folder that has it (or an empty one): never a folder of other files that a
/// mistyped `--out` points at.
pub const OUTPUT_MARKER: &str = ".thoughtscope-output";

const OUTPUT_MARKER_TEXT: &str = "This folder was written as a whole by thoughtscope; the next run with this --out replaces it as a whole.\n";

/// The file a resumable run keeps in its folder until it has finished ([`begin_run`]); a
/// sharded run's is `INCOMPLETE.<shard>`.
pub const INCOMPLETE_MARKER: &str = "INCOMPLETE";

/// `out` may be replaced as a whole: it does not exist, or holds only what thoughtscope wrote (it
/// carries [`OUTPUT_MARKER`], or is empty, or holds only such folders, such as a `suppression/`
/// folder of suppression runs). A file there (an environmental error, see
/// [`Error::is_environmental`]) or a folder of other files is an error naming it; commands check
/// this before any work.
pub fn check_replaceable(out: &Path) -> Result<()> {
    check_folder_or_absent(out)?;
    match std::fs::metadata(out) {
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(out, e)),
        Ok(_) => {}
    }
    if written_by_thoughtscope(out, 3) {
        return Ok(());
    }
    Err(Error::format(
        out,
        format!(
            "holds files that thoughtscope did not write as an output folder (it has no {OUTPUT_MARKER}); an output folder \
             is replaced as a whole, so give a new or empty folder, or remove this one"
        ),
    ))
}

/// Whether the folder `dir` holds only what thoughtscope wrote: it carries [`OUTPUT_MARKER`], or
/// each entry is a temporary of an interrupted write or a folder of that kind (`depth` levels
/// down at most).
fn written_by_thoughtscope(dir: &Path, depth: usize) -> bool {
    if dir.join(OUTPUT_MARKER).is_file() {
        return true;
    }
    let Ok(mut entries) = std::fs::read_dir(dir) else { return false };
    entries.all(|entry| {
        let Ok(entry) = entry else { return false };
        let name = entry.file_name().to_string_lossy().into_owned();
        let temporary = name.starts_with('.') && [".tmp-", ".staging-", ".old-"].iter().any(|t| name.contains(t));
        temporary || (depth > 0 && entry.file_type().is_ok_and(|t| t.is_dir()) && written_by_thoughtscope(&entry.path(), depth - 1))
    })
}

/// Write a whole output folder at once: `write` fills a fresh hidden folder beside `out`
/// (`.<name>.staging-<pid>-<n>`), which then takes the place of `out` in one step (Linux
/// `renameat2(RENAME_EXCHANGE)`; elsewhere the old folder is first moved aside). A run killed
/// half-way leaves `out` as the last complete run left it (plus a hidden staging folder, removed
/// by the next run once its process is gone), never one run's tables beside another's pages;
/// files of earlier settings do not linger; of two concurrent runs, one run's complete folder
/// wins. `out` must pass [`check_replaceable`]; the new folder carries [`OUTPUT_MARKER`]. On
/// `write`'s failure the staging folder is removed and `out` is untouched.
pub fn write_folder_atomically<T>(out: &Path, write: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
    check_replaceable(out)?;
    let parent = out.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    let name = out
        .file_name()
        .ok_or_else(|| Error::invalid(format!("{}: not a folder path", out.display())))?
        .to_string_lossy()
        .into_owned();
    remove_abandoned_siblings(parent, &name);
    let staging = sibling(parent, &name, "staging");
    std::fs::create_dir_all(&staging).map_err(|e| Error::io(&staging, e))?;
    let written = write(&staging).and_then(|value| {
        write_atomic(staging.join(OUTPUT_MARKER), OUTPUT_MARKER_TEXT.as_bytes())?;
        Ok(value)
    });
    let swapped = written.and_then(|value| swap_in(&staging, out, parent, &name).map(|()| value));
    if swapped.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    swapped
}

/// `.<name>.<kind>-<pid>-<n>` in `parent`, unique within this process.
fn sibling(parent: &Path, name: &str, kind: &str) -> PathBuf {
    static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let unique = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    parent.join(format!(".{name}.{kind}-{}-{unique}", std::process::id()))
}

/// Staging and set-aside folders of `name` left by processes that no longer run (killed runs).
fn remove_abandoned_siblings(parent: &Path, name: &str) {
    let Ok(entries) = std::fs::read_dir(parent) else { return };
    let prefix = format!(".{name}.");
    for entry in entries.flatten() {
        let file = entry.file_name();
        let file = file.to_string_lossy();
        let Some(rest) = file.strip_prefix(&prefix) else { continue };
        let Some(rest) = rest.strip_prefix("staging-").or_else(|| rest.strip_prefix("old-")) else { continue };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else { continue };
        if pid != std::process::id() && !process_alive(pid) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

#[cfg(unix)]
fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else { return true };
    // SAFETY: signal 0 only checks whether the process exists; nothing is sent.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

#[cfg(not(unix))]
fn process_alive(_pid: u32) -> bool {
    true
}

/// Put the complete `staging` folder at `out`, whatever another run does at the same time.
fn swap_in(staging: &Path, out: &Path, parent: &Path, name: &str) -> Result<()> {
    let mut last_error = None;
    for _ in 0..8 {
        match exchange(staging, out) {
            // `staging` now holds the previous folder.
            Ok(true) => {
                let _ = std::fs::remove_dir_all(staging);
                return Ok(());
            }
            Ok(false) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => match rename_no_replace(staging, out) {
                Ok(()) => return Ok(()),
                // Another run's folder arrived first: exchange with it next time round.
                Err(e) if matches!(e.kind(), ErrorKind::AlreadyExists | ErrorKind::DirectoryNotEmpty) => {
                    last_error = Some(e);
                    continue;
                }
                Err(e) => return Err(Error::io(out, e)),
            },
            Err(e) => return Err(Error::io(out, e)),
        }
        // No atomic exchange here: the old folder aside, the new one in (`out` is briefly absent).
        let old = sibling(parent, name, "old");
        let moved_aside = match std::fs::rename(out, &old) {
            Ok(()) => true,
            Err(e) if e.kind() == ErrorKind::NotFound => false,
            Err(e) => return Err(Error::io(out, e)),
        };
        match std::fs::rename(staging, out) {
            Ok(()) => {
                if moved_aside {
                    let _ = std::fs::remove_dir_all(&old);
                }
                return Ok(());
            }
            Err(e) => {
                if moved_aside {
                    let _ = std::fs::rename(&old, out);
                }
                last_error = Some(e);
            }
        }
    }
    Err(Error::io(out, last_error.unwrap_or_else(|| std::io::Error::other("the output folder kept changing"))))
}

/// Exchange `a` and `b` in one step; `Ok(false)` where the system or file system cannot.
#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> std::io::Result<bool> {
    match renameat2(a, b, libc::RENAME_EXCHANGE) {
        Ok(()) => Ok(true),
        Err(e) if unsupported(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(not(target_os = "linux"))]
fn exchange(_a: &Path, b: &Path) -> std::io::Result<bool> {
    // The caller's portable path handles both cases; report a missing `b` as Linux would.
    std::fs::metadata(b).map(|_| false)
}

/// Rename `from` to `to` unless `to` exists.
#[cfg(target_os = "linux")]
fn rename_no_replace(from: &Path, to: &Path) -> std::io::Result<()> {
    match renameat2(from, to, libc::RENAME_NOREPLACE) {
        Err(e) if unsupported(&e) => std::fs::rename(from, to),
        other => other,
    }
}

#[cfg(not(target_os = "linux"))]
fn rename_no_replace(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::rename(from, to)
}

#[cfg(target_os = "linux")]
fn renameat2(from: &Path, to: &Path, flags: libc::c_uint) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let from = std::ffi::CString::new(from.as_os_str().as_bytes())?;
    let to = std::ffi::CString::new(to.as_os_str().as_bytes())?;
    // SAFETY: both are NUL-terminated paths that outlive the call.
    let rc = unsafe { libc::renameat2(libc::AT_FDCWD, from.as_ptr(), libc::AT_FDCWD, to.as_ptr(), flags) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(target_os = "linux")]
fn unsupported(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP))
}

/// A resumable run's hold on its folder ([`begin_run`]): while it lives, no other run can take
/// the folder (or the same shard of it), and the folder holds [`INCOMPLETE_MARKER`].
/// [`RunLock::finish`] removes the marker; dropped without it (the run failed or was killed),
/// the marker stays and tells the next reader the folder is incomplete. The lock itself ends
/// with the process in any case (an advisory `flock`, never left stale).
#[derive(Debug)]
pub struct RunLock {
    _folder: File,
    _part: Option<File>,
    marker: PathBuf,
}

impl RunLock {
    /// The run completed: its folder is no longer marked incomplete.
    pub fn finish(self) -> Result<()> {
        match std::fs::remove_file(&self.marker) {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(Error::io(&self.marker, e)),
            _ => Ok(()),
        }
    }

    /// The marker this run keeps in its folder until [`RunLock::finish`].
    pub fn marker(&self) -> &Path {
        &self.marker
    }
}

/// Take `dir` (created if missing) for a long, resumable run of `command` (as the user typed it,
/// e.g. `resample`): an exclusive lock on `dir/.thoughtscope.lock`, or, for one `part` of a
/// sharded run (`shard-0-of-4`, a results file's name), a shared lock on it and an exclusive one
/// on `dir/.thoughtscope.<part>.lock`, so shards run side by side but not beside a whole run.
/// Then writes `dir/INCOMPLETE` (or `INCOMPLETE.<part>`) saying what is running. A folder held by
/// another run is an error naming the folder and, where known, that run.
pub fn begin_run(dir: &Path, command: &str, part: Option<&str>) -> Result<RunLock> {
    check_folder_or_absent(dir)?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let holder = format!("`thoughtscope {command}`{} (pid {})", part.map(|p| format!(" ({p})")).unwrap_or_default(), std::process::id());
    let folder_path = dir.join(".thoughtscope.lock");
    let folder = open_lock_file(&folder_path)?;
    let taken = if part.is_some() { folder.try_lock_shared() } else { folder.try_lock() };
    match taken {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            // Held by one whole run (whose name the file holds) or by shards (which share it).
            let by_shards = part.is_none() && folder.try_lock_shared().is_ok();
            let other = if by_shards { "sharded runs (--shard)".to_owned() } else { holder_of(&folder_path) };
            return Err(busy(dir, &other));
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(&folder_path, e)),
    }
    if part.is_none() {
        name_holder(&folder, &folder_path, &holder)?;
    }
    let part_lock = match part {
        Some(part) => {
            let path = dir.join(format!(".thoughtscope.{part}.lock"));
            let file = open_lock_file(&path)?;
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => return Err(busy(dir, &holder_of(&path))),
                Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(&path, e)),
            }
            name_holder(&file, &path, &holder)?;
            Some(file)
        }
        None => None,
    };
    let marker = dir.join(match part {
        Some(part) => format!("{INCOMPLETE_MARKER}.{part}"),
        None => INCOMPLETE_MARKER.to_owned(),
    });
    let text = format!(
        "{holder} is writing this folder, or was stopped before it finished: its results here are incomplete.\n\
         Run the same command again to finish them; this file is removed when the run completes.\n"
    );
    write_atomic(&marker, text.as_bytes())?;
    Ok(RunLock { _folder: folder, _part: part_lock, marker })
}

fn open_lock_file(path: &Path) -> Result<File> {
    OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path).map_err(|e| Error::io(path, e))
}

/// Record who holds an exclusive lock, for the error of the run that finds it taken.
fn name_holder(mut file: &File, path: &Path, holder: &str) -> Result<()> {
    file.set_len(0).and_then(|()| file.write_all(holder.as_bytes())).map_err(|e| Error::io(path, e))
}

fn holder_of(path: &Path) -> String {
    std::fs::read_to_string(path).ok().filter(|s| !s.trim().is_empty()).unwrap_or_else(|| "another thoughtscope run".to_owned())
}

fn busy(dir: &Path, other: &str) -> Error {
    Error::format(dir, format!("{other} is writing this folder now; wait for it to finish, or write to another folder"))
}
