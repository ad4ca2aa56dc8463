//! `report index`: an index page linking every report below a folder.

use std::path::PathBuf;

use clap::Subcommand;
use thoughtscope::Result;

#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// Write DIR/index.html linking each analysis folder's index.html and each notebook report.
    Index {
        #[arg(default_value = "analysis")]
        dir: PathBuf,
        #[arg(long, default_value = "thoughtscope outputs")]
        title: String,
    },
}

pub fn run(command: ReportCommand) -> Result<()> {
    match command {
        ReportCommand::Index { dir, title } => {
            let (path, entries) = thoughtscope::plot::write_index(&dir, &title)?;
            outln!("{}: {} reports", path.display(), entries.len());
            for entry in entries {
                outln!("  {}  {}", entry.path.display(), entry.title);
            }
            Ok(())
        }
    }
}
