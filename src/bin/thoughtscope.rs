//! The `thoughtscope` command line: argument parsing and error printing only; every subcommand
//! is one call into the library.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use thoughtscope::analysis::cli::{self as analysis_cli, BenchCommand, ReceiverHeadsArgs, SegmentArgs, VerticalScoresArgs};

#[derive(Debug, Parser)]
#[command(name = "thoughtscope", version, about = "Sentence-level attention and continuous-thought analysis of reasoning traces")]
struct Cli {
    /// No progress bars or progress lines (results and errors are still printed).
    #[arg(long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Split a rollout's trace into sentences (full-cot: upstream's segmentation; chunks: chunks joined by "\n").
    Segment(SegmentArgs),
    /// Vertical scores of one N×N sentence-averaged matrix (.npy).
    VerticalScores(VerticalScoresArgs),
    /// Receiver heads (top-k mean kurtosis) over every cache entry of one model.
    ReceiverHeads(ReceiverHeadsArgs),
    /// Sentence-averaged attention of every layer × head for one problem directory, into the cache.
    Attn(thoughtscope::attention::compute::AttnArgs),
    /// Tagged-sentence (VA) attention analysis over a folder of rollouts: tables, figures, permutation p-values.
    Va(thoughtscope::analysis::va::VaArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Sample rollouts of each problem with a model and write them in the thought-anchors layout.
    Generate(thoughtscope::rollout::generate::GenerateArgs),
    /// CODI continuous-thought experiments: make-model, dataset, ablate, attention, analyze, run-all.
    #[command(subcommand)]
    Codi(thoughtscope::codi::cli::CodiCommand),
    /// Notebooks: `notebook run <nb.ipynb>` executes one headlessly into an offline HTML report.
    #[command(subcommand)]
    Notebook(thoughtscope::notebook::runner::NotebookCommand),
    /// Reports: `report index <dir>` writes <dir>/index.html linking every report below it.
    #[command(subcommand)]
    Report(ReportCommand),
}

#[derive(Debug, Subcommand)]
enum ReportCommand {
    /// Write DIR/index.html linking each analysis folder's index.html and each notebook report.
    Index {
        #[arg(default_value = "analysis")]
        dir: std::path::PathBuf,
        #[arg(long, default_value = "thoughtscope outputs")]
        title: String,
    },
}

fn report(command: ReportCommand) -> thoughtscope::Result<()> {
    match command {
        ReportCommand::Index { dir, title } => {
            let (path, entries) = thoughtscope::plot::write_index(&dir, &title)?;
            println!("{}: {} reports", path.display(), entries.len());
            for entry in entries {
                println!("  {}  {}", entry.path.display(), entry.title);
            }
            Ok(())
        }
    }
}

fn attn(args: thoughtscope::attention::compute::AttnArgs) -> thoughtscope::Result<()> {
    println!("{}", thoughtscope::attention::compute::attn_command(&args)?);
    Ok(())
}

fn va(args: thoughtscope::analysis::va::VaArgs) -> thoughtscope::Result<()> {
    println!("{}", thoughtscope::analysis::va::va_command(&args)?);
    Ok(())
}

fn segment(args: SegmentArgs) -> thoughtscope::Result<()> {
    println!("{}", analysis_cli::segment(&args)?);
    Ok(())
}

fn vertical_scores(args: VerticalScoresArgs) -> thoughtscope::Result<()> {
    println!("{}", analysis_cli::vertical_scores_command(&args)?);
    Ok(())
}

fn receiver_heads(args: ReceiverHeadsArgs) -> thoughtscope::Result<()> {
    println!("{}", analysis_cli::receiver_heads_command(&args)?);
    Ok(())
}

fn bench(command: BenchCommand) -> thoughtscope::Result<()> {
    println!("{}", analysis_cli::bench(&command)?);
    Ok(())
}

fn generate(args: thoughtscope::rollout::generate::GenerateArgs) -> thoughtscope::Result<()> {
    println!("{}", thoughtscope::rollout::generate::generate_command(&args)?);
    Ok(())
}

fn main() -> ExitCode {
    thoughtscope::model::reuse_freed_memory();
    let cli = Cli::parse();
    thoughtscope::notebook::set_quiet(cli.quiet);
    let result = match cli.command {
        Command::Segment(args) => segment(args),
        Command::VerticalScores(args) => vertical_scores(args),
        Command::ReceiverHeads(args) => receiver_heads(args),
        Command::Attn(args) => attn(args),
        Command::Va(args) => va(args),
        Command::Bench(command) => bench(command),
        Command::Generate(args) => generate(args),
        Command::Codi(command) => thoughtscope::codi::cli::run(command),
        Command::Notebook(command) => thoughtscope::notebook::runner::run(command),
        Command::Report(command) => report(command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // One line: the error names the file and the problem.
            eprintln!("error: {}", error.to_string().replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}
