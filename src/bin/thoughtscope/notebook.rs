//! `notebook run`: execute a notebook headlessly into an offline HTML report.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use thoughtscope::notebook::runner::{run_notebook, RunOptions};
use thoughtscope::Result;

/// `thoughtscope notebook ...`
#[derive(Debug, Subcommand)]
pub enum NotebookCommand {
    /// Execute a notebook headlessly with the `rust` (evcxr) kernel; write the executed notebook
    /// and an offline HTML report. Fails, naming the cell, when any cell errors or panics.
    Run(RunArgs),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The notebook (.ipynb).
    pub notebook: PathBuf,
    /// HTML report path. Default: `analysis/reports/<name>.html`.
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// Executed notebook path. Default: the report path with .ipynb.
    #[arg(long)]
    pub executed: Option<PathBuf>,
    /// Per-cell timeout in seconds.
    #[arg(long, default_value_t = 900)]
    pub timeout: u64,
    /// Timeout for cells with a `:dep` line, which build thoughtscope inside the kernel (about a
    /// minute after `cargo build`, whose dependency builds the kernel reuses; ~15 min with nothing
    /// built, on 2 cores).
    #[arg(long, default_value_t = 3600)]
    pub dep_timeout: u64,
    /// A private build dir for the kernel, outside any cargo workspace; its parent gets
    /// .cargo/config.toml (notebooks/evcxr-cargo-config.toml). Default: $EVCXR_TMPDIR, else
    /// `<cargo target dir>/notebook-kernel`, which shares the CLI's build.
    #[arg(long)]
    pub evcxr_tmpdir: Option<PathBuf>,
}

/// Run one `notebook` subcommand.
pub fn run(command: NotebookCommand) -> Result<()> {
    match command {
        NotebookCommand::Run(a) => {
            let mut options = RunOptions::new(&a.notebook);
            if let Some(html) = a.html {
                options.html = html;
            }
            options.executed = a.executed;
            options.timeout_s = a.timeout;
            options.dep_timeout_s = a.dep_timeout;
            options.evcxr_tmpdir = a.evcxr_tmpdir;
            run_notebook(&options)
        }
    }
}
