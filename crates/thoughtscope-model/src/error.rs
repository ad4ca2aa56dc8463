//! The error type of the model crate: every variant names the file, field or index it is about,
//! so a user can fix the input without reading the source. Errors from candle and serde_json get
//! what was being done attached ([`Context::while_doing`]), and print as one chain:
//! `reading models/x/config.json: JSON: …`. The analysis library's `thoughtscope::Error` has the
//! same variants plus polars', and converts from this one variant for variant.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io { path: PathBuf, #[source] source: std::io::Error },
    /// A file's content is malformed: `what` says which field and what was expected.
    #[error("{path}: {what}")]
    Format { path: PathBuf, what: String },
    /// An argument or input value is invalid.
    #[error("{0}")]
    Invalid(String),
    /// A cache entry exists but was made with different settings.
    #[error("cache entry {path}: field `{field}` differs (cached {cached}, requested {requested}); remove it or choose another cache or output folder to start afresh")]
    CacheMismatch { path: PathBuf, field: String, cached: String, requested: String },
    /// `source` happened while doing `what` (a file, a tensor, a column).
    #[error("{what}: {source}")]
    Context { what: String, #[source] source: Box<Error> },
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// Memory for a large buffer could not be had (the machine is out of memory, or a limit such
    /// as `ulimit -v` is lower): `what` names the buffer.
    #[error("out of memory: {what} needs {bytes} bytes ({gib:.2} GiB), which could not be allocated; free memory, raise the limit (ulimit -v) or give a smaller input", gib = *bytes as f64 / (1u64 << 30) as f64)]
    OutOfMemory { what: String, bytes: u64 },
    #[error("{0}")]
    Other(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
    pub fn format(path: impl Into<PathBuf>, what: impl Into<String>) -> Self {
        Error::Format { path: path.into(), what: what.into() }
    }
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::Invalid(msg.into())
    }
    /// This error, saying it happened while doing `what`.
    pub fn context(self, what: impl Into<String>) -> Self {
        Error::Context { what: what.into(), source: Box::new(self) }
    }

    /// The machine, not the input, is at fault: a full disk or quota, a read-only file system,
    /// no permission, a path component that is a file where a folder must be, no memory. Such an
    /// error fails a whole command (a later item would fail the same way, and a per-item status
    /// with exit 0 would let a job dependency fire); a malformed input stays that item's status.
    pub fn is_environmental(&self) -> bool {
        match self {
            Error::Io { source, .. } => io_error_is_environmental(source),
            Error::Context { source, .. } => source.is_environmental(),
            Error::Candle(candle_core::Error::Io(source)) => io_error_is_environmental(source),
            Error::OutOfMemory { .. } => true,
            _ => false,
        }
    }
}

/// Whether an I/O error is the machine's fault (see [`Error::is_environmental`]).
pub fn io_error_is_environmental(error: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        error.kind(),
        StorageFull | QuotaExceeded | ReadOnlyFilesystem | PermissionDenied | NotADirectory | FileTooLarge | OutOfMemory
    )
}

impl From<tokenizers::Error> for Error {
    fn from(e: tokenizers::Error) -> Self {
        Error::Other(format!("tokenizer: {e}"))
    }
}

/// `.while_doing("reading X")` on any result whose error converts into [`Error`], as anyhow's
/// `context` does: the message gains what was being done. (Not named `context`: polars' prelude
/// brings its own `context` into scope in the modules that build tables.)
pub trait Context<T> {
    fn while_doing(self, what: impl Into<String>) -> Result<T>;
    /// [`Context::while_doing`] with the message built only on failure.
    fn while_doing_with(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E: Into<Error>> Context<T> for std::result::Result<T, E> {
    fn while_doing(self, what: impl Into<String>) -> Result<T> {
        self.map_err(|e| e.into().context(what))
    }
    fn while_doing_with(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| e.into().context(what()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_chains_read_outermost_first() {
        let inner: Result<(), serde_json::Error> = serde_json::from_str::<u32>("x").map(|_| ());
        let err = inner.while_doing("parsing n").while_doing("reading run.json").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("reading run.json: parsing n: JSON: expected value"), "{text}");
        assert!(std::error::Error::source(&err).is_some());
    }
}
