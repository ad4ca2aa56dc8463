//! `thoughtscope notebook run`: headless execution of an evcxr notebook with an offline HTML report
//! (why each step: notebooks/README.md).
//!
//! The work is done by `scripts/run_notebook.py` (nbclient drives the `rust` kernel, nbconvert
//! writes the report), embedded here so the binary runs it from anywhere with the project's
//! Python. That script turns evcxr's quirks into a dependable run: a panic is reported as a
//! successful cell by evcxr unless `preserve_vars_on_panic` is off, so every cell's stderr is also
//! checked; `EVCXR_TMPDIR` is chosen per run: by default `<cargo target dir>/notebook-kernel`,
//! set up so that the kernel reuses the CLI's build of the dependency graph (same target dir,
//! profile, rustflags and Cargo.lock; notebooks/README.md); the toolchain's std directory is put
//! on `LD_LIBRARY_PATH` because the cells link it dynamically, with no rpath; nbconvert's require.js,
//! MathJax and mermaid CDN references are stripped and the report is checked to load nothing from
//! the network.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{Error, Result};

/// The runner script, run with `python -c`.
const RUNNER_SCRIPT: &str = include_str!("../../../../scripts/run_notebook.py");

/// Where reports go by default (relative to the working directory, the repository root).
pub(crate) const REPORTS_DIR: &str = "analysis/reports";

/// Settings of [`run_notebook`].
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub notebook: PathBuf,
    pub html: PathBuf,
    pub executed: Option<PathBuf>,
    pub timeout_s: u64,
    pub dep_timeout_s: u64,
    pub evcxr_tmpdir: Option<PathBuf>,
}

impl RunOptions {
    /// Defaults: report at `analysis/reports/<notebook stem>.html`, 900 s per cell, 3600 s for
    /// `:dep` cells.
    pub fn new(notebook: impl Into<PathBuf>) -> Self {
        let notebook = notebook.into();
        let html = default_report_path(&notebook);
        RunOptions { notebook, html, executed: None, timeout_s: 900, dep_timeout_s: 3600, evcxr_tmpdir: None }
    }
}

/// `analysis/reports/<stem>.html` for `notebooks/<stem>.ipynb`.
pub(crate) fn default_report_path(notebook: &Path) -> PathBuf {
    let stem = notebook.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "notebook".into());
    Path::new(REPORTS_DIR).join(format!("{stem}.html"))
}

/// The Python that has nbclient/nbconvert: `$THOUGHTSCOPE_PYTHON`, the active virtualenv, the
/// project's `.venv` (working directory, then the source tree this binary was built from), else
/// `python3` from PATH.
pub(crate) fn find_python() -> PathBuf {
    use crate::model::settings::lookups;
    if let Some(python) = lookups::python() {
        return python;
    }
    let mut candidates = Vec::new();
    if let Some(venv) = lookups::virtual_env() {
        candidates.push(venv.join("bin/python"));
    }
    candidates.push(PathBuf::from(".venv/bin/python"));
    candidates.push(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join(".venv/bin/python"));
    candidates.into_iter().find(|p| p.is_file()).unwrap_or_else(|| PathBuf::from("python3"))
}

/// Run the notebook; `Ok` only when every cell ran without error or panic and the report was
/// written with no network reference. The script's progress goes to this process's stdout.
pub fn run_notebook(options: &RunOptions) -> Result<()> {
    if !options.notebook.is_file() {
        return Err(Error::io(
            &options.notebook,
            std::io::Error::new(std::io::ErrorKind::NotFound, "notebook not found"),
        ));
    }
    let python = find_python();
    let mut command = Command::new(&python);
    command
        .arg("-c")
        .arg(RUNNER_SCRIPT)
        .arg(&options.notebook)
        .arg("--html")
        .arg(&options.html)
        .arg("--timeout")
        .arg(options.timeout_s.to_string())
        .arg("--dep-timeout")
        .arg(options.dep_timeout_s.to_string());
    if let Some(executed) = &options.executed {
        command.arg("--executed").arg(executed);
    }
    if let Some(dir) = &options.evcxr_tmpdir {
        command.arg("--evcxr-tmpdir").arg(dir);
    }
    let status = command.status().map_err(|e| {
        Error::Other(format!(
            "starting {} for the notebook runner: {e} (run scripts/setup-notebooks.sh, or set THOUGHTSCOPE_PYTHON)",
            python.display()
        ))
    })?;
    match status.code() {
        Some(0) => Ok(()),
        Some(2) => Err(Error::invalid(format!(
            "notebook runner set-up ({}): see the message above; scripts/setup-notebooks.sh installs what it needs",
            python.display()
        ))),
        _ => Err(Error::Other(format!(
            "notebook {} failed ({status}); the failing cell is named above, the executed notebook and report are written",
            options.notebook.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_path_follows_the_notebook_name() {
        assert_eq!(
            default_report_path(Path::new("notebooks/codi_attention_importance.ipynb")),
            Path::new("analysis/reports/codi_attention_importance.html")
        );
    }

    #[test]
    fn missing_notebook_is_an_io_error_naming_it() {
        let err = run_notebook(&RunOptions::new("no/such/notebook.ipynb")).unwrap_err();
        assert!(err.to_string().contains("no/such/notebook.ipynb"), "{err}");
    }
}
